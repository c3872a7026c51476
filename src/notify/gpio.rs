//! A siren or strobe on a relay at a GPIO pin, driven by its [`RelayPlan`] from what the alarm
//! engine asks. The relay is driven inactive first thing and last thing, so neither a start
//! nor a stop leaves it sounding. Without GPIO the channel only logs (the app says once why).

use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::relay::{RelayConfig, RelayPlan, Siren};
use crate::gpio::{Active, GpioError, OutputLine, Pins};

pub struct SirenRelay {
    pub id: String,
    pub pin: u8,
    pub active: Active,
    pub plan: RelayConfig,
}

impl SirenRelay {
    pub async fn run(
        self,
        pins: Arc<dyn Pins>,
        mut wish: watch::Receiver<Siren>,
        shutdown: CancellationToken,
    ) {
        let id = self.id;
        let mut relay: Option<Box<dyn OutputLine>> = match pins
            .output(self.pin, self.active.level(false))
        {
            Ok(line) => {
                info!(channel = %id, pin = self.pin, "siren relay ready");
                Some(line)
            }
            Err(GpioError::Unavailable(_)) => None,
            Err(e) => {
                warn!(channel = %id, error = %e, "siren relay cannot be driven: the channel only logs");
                None
            }
        };
        let mut plan = RelayPlan::new(self.plan);
        let mut current = false;
        let mut last = Siren::default();
        loop {
            let w = *wish.borrow_and_update();
            if w != last {
                plan.command(w, Instant::now());
                if w.on != last.on {
                    info!(channel = %id, siren = if w.on { "on" } else { "off" }, "siren");
                }
                last = w;
            }
            let (want, next) = plan.step(Instant::now());
            if want != current {
                if let Some(r) = relay.as_mut() {
                    r.set(self.active.level(want));
                }
                current = want;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = wish.changed() => if changed.is_err() { break },
                _ = sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {}
            }
        }
        if let Some(r) = relay.as_mut() {
            r.set(self.active.level(false));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::gpio::sim::SimPins;
    use crate::notify::relay::Pattern;

    const S: Duration = Duration::from_secs(1);
    const MS: Duration = Duration::from_millis(1);

    fn start(
        active: Active,
        plan: RelayConfig,
    ) -> (SimPins, watch::Sender<Siren>, CancellationToken) {
        let pins = SimPins::new();
        let (tx, rx) = watch::channel(Siren::default());
        let stop = CancellationToken::new();
        let relay = SirenRelay {
            id: "siren".into(),
            pin: 17,
            active,
            plan,
        };
        tokio::spawn(relay.run(Arc::new(pins.clone()), rx, stop.clone()));
        (pins, tx, stop)
    }

    /// The relay's levels relative to `t0`.
    fn levels(pins: &SimPins, t0: Instant) -> Vec<(Duration, bool)> {
        pins.writes(17)
            .into_iter()
            .map(|(t, high)| (t.saturating_duration_since(t0), high))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn an_active_low_relay_is_held_off_from_start_to_stop_and_on_only_while_asked() {
        let t0 = Instant::now();
        let (pins, tx, stop) = start(
            Active::Low,
            RelayConfig {
                pattern: Pattern::Steady,
                max_on: None,
            },
        );
        tokio::time::sleep(S).await;
        tx.send_replace(Siren { on: true, epoch: 1 });
        tokio::time::sleep(10 * S).await;
        tx.send_replace(Siren {
            on: false,
            epoch: 1,
        });
        tokio::time::sleep(S).await;
        tx.send_replace(Siren { on: true, epoch: 2 });
        tokio::time::sleep(S).await;
        stop.cancel();
        tokio::time::sleep(MS).await;
        assert_eq!(
            levels(&pins, t0),
            vec![
                (Duration::ZERO, true),
                (S, false),
                (11 * S, true),
                (12 * S, false),
                (13 * S, true),
            ],
            "high = off for an active-low relay, first and last"
        );
        assert!(!pins.is_held(17));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pulsed_relay_pulses_then_switches_itself_off_until_a_new_alarm() {
        let t0 = Instant::now();
        let (pins, tx, stop) = start(
            Active::High,
            RelayConfig {
                pattern: Pattern::Pulse {
                    on: 200 * MS,
                    off: 300 * MS,
                    pulses: 0,
                },
                max_on: Some(S + 100 * MS),
            },
        );
        tx.send_replace(Siren { on: true, epoch: 1 });
        tokio::time::sleep(5 * S).await;
        // The same alarms, still waiting: nothing new.
        tx.send_replace(Siren { on: true, epoch: 1 });
        tokio::time::sleep(S).await;
        tx.send_replace(Siren { on: true, epoch: 2 });
        tokio::time::sleep(100 * MS).await;
        stop.cancel();
        tokio::time::sleep(MS).await;
        assert_eq!(
            levels(&pins, t0),
            vec![
                (Duration::ZERO, false),
                (Duration::ZERO, true),
                (200 * MS, false),
                (500 * MS, true),
                (700 * MS, false),
                (1000 * MS, true),
                (1100 * MS, false),
                (6000 * MS, true),
                (6100 * MS, false),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_gpio_the_siren_still_follows_its_alarms_and_ends_cleanly() {
        let (tx, rx) = watch::channel(Siren::default());
        let stop = CancellationToken::new();
        let relay = SirenRelay {
            id: "siren".into(),
            pin: 17,
            active: Active::High,
            plan: RelayConfig {
                pattern: Pattern::Steady,
                max_on: None,
            },
        };
        let pins: Arc<dyn Pins> = Arc::new(crate::gpio::NoPins("test".into()));
        let task = tokio::spawn(relay.run(pins, rx, stop.clone()));
        tx.send_replace(Siren { on: true, epoch: 1 });
        tokio::time::sleep(S).await;
        stop.cancel();
        assert!(task.await.is_ok());
    }
}
