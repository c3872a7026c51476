//! Dry contacts as devices: a fire panel's alarm relay, a door contact, a flood sensor's relay.
//! Each contact is read on its edges, resampled every second (an edge the backend lost is
//! caught), debounced, and published as the bool point `active` when its settled state changes.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::debounce::Debouncer;
use super::{Active, GpioError, InputLine, Pins, Pull};
use crate::config::Loaded;
use crate::hub::Hub;
use crate::reading::{Reading, Value};

/// The point every dry contact publishes.
pub const POINT: &str = "active";

pub const DEFAULT_DEBOUNCE_MS: u64 = 50;

/// How often a contact's level is read besides its edges.
const RESAMPLE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactConfig {
    pub device: Arc<str>,
    pub pin: u8,
    pub pull: Pull,
    pub active: Active,
    pub debounce: Duration,
}

/// Every enabled dry contact of the config.
pub fn contacts(loaded: &Loaded) -> Vec<ContactConfig> {
    loaded
        .enabled_devices(crate::profile::Protocol::Gpio)
        .filter_map(|d| {
            Some(ContactConfig {
                device: Arc::from(d.id.as_str()),
                pin: d.pin?,
                pull: d.pull.unwrap_or_default(),
                active: d.active.unwrap_or_default(),
                debounce: Duration::from_millis(d.debounce_ms.unwrap_or(DEFAULT_DEBOUNCE_MS)),
            })
        })
        .collect()
}

pub struct GpioSource {
    pub contacts: Vec<ContactConfig>,
    pub pins: Arc<dyn Pins>,
}

impl GpioSource {
    /// Watches every contact until `shutdown`. A contact whose pin cannot be opened is offline
    /// with the reason and the others carry on.
    pub async fn run(self, hub: Arc<Hub>, shutdown: CancellationToken) {
        let mut tasks = JoinSet::new();
        for c in self.contacts {
            match open(self.pins.as_ref(), &c) {
                Ok((line, edges)) => {
                    hub.set_online(&c.device, true, None);
                    tasks.spawn(watch(c, line, edges, hub.clone(), shutdown.clone()));
                }
                Err(e) => {
                    // No GPIO at all is said once for everything by the app; a single pin's
                    // trouble is this device's own news.
                    if !matches!(e, GpioError::Unavailable(_)) {
                        warn!(device = %c.device, pin = c.pin, error = %e, "dry contact cannot be read");
                    }
                    hub.set_online(&c.device, false, Some(e.to_string()));
                }
            }
        }
        while tasks.join_next().await.is_some() {}
        // A source that ends is a failure to the app; contacts that could not be opened are
        // offline, said, and the hub runs on until it stops.
        shutdown.cancelled().await;
    }
}

type Edges = tokio::sync::mpsc::Receiver<bool>;

fn open(pins: &dyn Pins, c: &ContactConfig) -> Result<(Box<dyn InputLine>, Edges), GpioError> {
    let mut line = pins.input(c.pin, c.pull)?;
    let edges = line.edges()?;
    Ok((line, edges))
}

async fn watch(
    c: ContactConfig,
    line: Box<dyn InputLine>,
    mut edges: Edges,
    hub: Arc<Hub>,
    shutdown: CancellationToken,
) {
    let mut debouncer = Debouncer::new(c.debounce);
    debouncer.observe(line.level(), Instant::now());
    let mut resample = tokio::time::interval_at(Instant::now() + RESAMPLE, RESAMPLE);
    resample.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut edges_open = true;
    loop {
        if let Some(level) = debouncer.settle(Instant::now()) {
            let active = c.active.is_active(level);
            debug!(device = %c.device, pin = c.pin, active, "dry contact");
            hub.record_messages(&c.device, 1, 0, None);
            hub.ingest(vec![Reading {
                device: c.device.clone(),
                point: Arc::from(POINT),
                ts: Utc::now(),
                value: Value::Bool(active),
                unit: None,
            }])
            .await;
        }
        let deadline = debouncer.deadline();
        tokio::select! {
            _ = shutdown.cancelled() => break,
            // An edge wakes the reader, which reads the level itself: the edge's own level may
            // be stale when edges were dropped from a full channel.
            edge = edges.recv(), if edges_open => match edge {
                Some(_) => debouncer.observe(line.level(), Instant::now()),
                None => {
                    // The backend's interrupt thread is gone: the contact is unwatched, which
                    // for a fire input is news (the offline alarm), not something to hide.
                    edges_open = false;
                    warn!(device = %c.device, pin = c.pin, "dry contact: its interrupts stopped");
                    hub.set_online(&c.device, false, Some(format!("GPIO {} interrupts stopped", c.pin)));
                }
            },
            _ = resample.tick(), if edges_open => debouncer.observe(line.level(), Instant::now()),
            _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpio::sim::SimPins;
    use crate::hub::DeviceInfo;

    const MS: Duration = Duration::from_millis(1);

    fn contact(id: &str, pin: u8, active: Active, debounce_ms: u64) -> ContactConfig {
        ContactConfig {
            device: Arc::from(id),
            pin,
            pull: if active == Active::Low {
                Pull::Up
            } else {
                Pull::Down
            },
            active,
            debounce: Duration::from_millis(debounce_ms),
        }
    }

    struct Rig {
        hub: Arc<Hub>,
        pins: SimPins,
        stop: CancellationToken,
    }

    impl Rig {
        fn start(contacts: Vec<ContactConfig>) -> Self {
            let devices = contacts
                .iter()
                .map(|c| DeviceInfo {
                    id: c.device.clone(),
                    name: c.device.to_string(),
                    profile: "gpio-dry-contact".into(),
                    category: "security".into(),
                    location: Default::default(),
                })
                .collect();
            let hub = Hub::new(devices, None);
            let pins = SimPins::new();
            let stop = CancellationToken::new();
            let source = GpioSource {
                contacts,
                pins: Arc::new(pins.clone()),
            };
            tokio::spawn(source.run(hub.clone(), stop.clone()));
            Self { hub, pins, stop }
        }

        fn active(&self, id: &str) -> Option<bool> {
            match self.hub.latest(id, POINT)?.value {
                Value::Bool(b) => Some(b),
                other => panic!("not a bool: {other:?}"),
            }
        }

        fn published(&self, id: &str) -> u64 {
            self.hub.device(id).map_or(0, |d| d.stats.messages)
        }
    }

    impl Drop for Rig {
        fn drop(&mut self) {
            self.stop.cancel();
        }
    }

    async fn after(d: Duration) {
        tokio::time::sleep(d).await;
    }

    #[tokio::test(start_paused = true)]
    async fn closing_a_pulled_up_active_low_contact_makes_it_active_after_exactly_the_debounce() {
        let rig = Rig::start(vec![contact("door-1", 4, Active::Low, 50)]);
        after(49 * MS).await;
        assert_eq!(
            rig.active("door-1"),
            None,
            "nothing before one quiet period"
        );
        after(2 * MS).await;
        assert_eq!(
            rig.active("door-1"),
            Some(false),
            "open: the pull-up holds it high"
        );
        assert_eq!(rig.hub.device("door-1").and_then(|d| d.online), Some(true));

        rig.pins.drive(4, false);
        after(49 * MS).await;
        assert_eq!(rig.active("door-1"), Some(false));
        after(2 * MS).await;
        assert_eq!(rig.active("door-1"), Some(true));
        assert_eq!(rig.published("door-1"), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_active_high_input_with_the_pull_down_reads_the_other_way() {
        let rig = Rig::start(vec![contact("panel", 5, Active::High, 20)]);
        after(30 * MS).await;
        assert_eq!(rig.active("panel"), Some(false));
        rig.pins.drive(5, true);
        after(30 * MS).await;
        assert_eq!(rig.active("panel"), Some(true));
    }

    #[tokio::test(start_paused = true)]
    async fn a_chattering_contact_publishes_once_when_it_settles() {
        let rig = Rig::start(vec![contact("door-1", 4, Active::Low, 50)]);
        after(60 * MS).await;
        assert_eq!(rig.published("door-1"), 1);
        for i in 0..30 {
            rig.pins.drive(4, i % 2 == 1);
            after(3 * MS).await;
        }
        rig.pins.drive(4, false);
        after(200 * MS).await;
        assert_eq!(rig.active("door-1"), Some(true));
        assert_eq!(rig.published("door-1"), 2, "one change, not thirty");
    }

    #[tokio::test(start_paused = true)]
    async fn an_edge_the_backend_lost_is_caught_by_the_resample() {
        let rig = Rig::start(vec![contact("door-1", 4, Active::Low, 50)]);
        after(60 * MS).await;
        rig.pins.drive_without_edge(4, false);
        after(500 * MS).await;
        assert_eq!(rig.active("door-1"), Some(false), "no edge yet seen");
        after(RESAMPLE).await;
        assert_eq!(rig.active("door-1"), Some(true));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pin_that_cannot_be_opened_takes_only_its_own_device_offline() {
        let pins = SimPins::new();
        pins.break_pin(6, "not exported");
        let devices = ["broken", "door-1"]
            .iter()
            .map(|id| DeviceInfo {
                id: Arc::from(*id),
                name: id.to_string(),
                profile: "gpio-dry-contact".into(),
                category: "security".into(),
                location: Default::default(),
            })
            .collect();
        let hub = Hub::new(devices, None);
        let stop = CancellationToken::new();
        let source = GpioSource {
            contacts: vec![
                contact("broken", 6, Active::Low, 50),
                contact("door-1", 4, Active::Low, 50),
            ],
            pins: Arc::new(pins.clone()),
        };
        tokio::spawn(source.run(hub.clone(), stop.clone()));
        after(60 * MS).await;
        let broken = hub.device("broken").unwrap_or_else(|| panic!("no device"));
        assert_eq!(broken.online, Some(false));
        assert_eq!(broken.last_error.as_deref(), Some("GPIO 6: not exported"));
        assert!(hub.latest("door-1", POINT).is_some());
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_contact_whose_interrupts_stop_goes_offline_and_releases_its_pin_at_stop() {
        let rig = Rig::start(vec![contact("fire", 17, Active::High, 50)]);
        after(60 * MS).await;
        rig.pins.stop_edges(17);
        after(MS).await;
        let d = rig
            .hub
            .device("fire")
            .unwrap_or_else(|| panic!("no device"));
        assert_eq!(d.online, Some(false));
        assert_eq!(d.last_error.as_deref(), Some("GPIO 17 interrupts stopped"));
        assert!(rig.pins.is_held(17));
        rig.stop.cancel();
        after(MS).await;
        assert!(!rig.pins.is_held(17), "the pin is given back");
    }
}
