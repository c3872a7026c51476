//! Sensors over MQTT: fire, security, lift, environment and charging devices, from the park's
//! broker or one embedded in the hub.
//!
//! One task owns the routing (topic → device), decoding and each device's availability: a
//! device is online from its first message (or its `online` availability payload) until it is
//! silent past its `expire_after_s` or its last will says `offline`.

pub mod broker;
pub mod client;
pub mod decode;
pub mod publisher;
pub mod sim;

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::time::{delay_queue, DelayQueue};
use tracing::{info, warn};

use crate::config::{Loaded, MqttConfig};
use crate::hub::Hub;
use crate::profile::{Profile, Protocol};
use crate::reading::Reading;
use crate::throttle::Throttle;
use broker::EmbeddedBroker;
use client::{ClientSettings, Incoming};

/// An MQTT device as the source knows it.
struct Device {
    id: Arc<str>,
    profile: Arc<Profile>,
    expire: Option<Duration>,
    online_payload: String,
    offline_payload: String,
}

/// Where a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Data(usize),
    Availability(usize),
}

/// The MQTT side of the hub, ready to run.
pub struct MqttSource {
    settings: ClientSettings,
    devices: Vec<Device>,
    routes: HashMap<String, Route>,
    max_payload: usize,
    /// Kept so that its accounts stay known while the hub runs.
    pub embedded: Option<EmbeddedBroker>,
}

impl MqttSource {
    /// Starts the embedded broker if configured and prepares the client; `None` without `[mqtt]`.
    pub async fn start(loaded: &Loaded) -> anyhow::Result<Option<Self>> {
        let Some(cfg) = &loaded.config.mqtt else {
            return Ok(None);
        };
        let embedded = if cfg.is_embedded() {
            Some(broker::start(cfg).await?)
        } else {
            None
        };
        let mut devices = Vec::new();
        let mut routes = HashMap::new();
        for d in loaded.config.devices.iter().filter(|d| d.enabled) {
            let (Some(profile), Some(topics)) = (
                loaded.device_profiles.get(&d.id),
                loaded.mqtt_topics.get(&d.id),
            ) else {
                continue;
            };
            if profile.protocol != Protocol::Mqtt {
                continue;
            }
            let settings = profile.mqtt.clone();
            let index = devices.len();
            routes.insert(topics.data.clone(), Route::Data(index));
            if let Some(a) = &topics.availability {
                routes.insert(a.clone(), Route::Availability(index));
            }
            devices.push(Device {
                id: Arc::from(d.id.as_str()),
                profile: profile.clone(),
                expire: d
                    .expire_after_s
                    .or(settings.as_ref().and_then(|m| m.expire_after_s))
                    .map(Duration::from_secs),
                online_payload: settings
                    .as_ref()
                    .map_or("online".into(), |m| m.payload_online.clone()),
                offline_payload: settings
                    .as_ref()
                    .map_or("offline".into(), |m| m.payload_offline.clone()),
            });
        }
        let filters = client::filters(routes.keys().map(String::as_str));
        let settings = client::settings(cfg, &loaded.config.hub.id, embedded.as_ref(), filters)?;
        Ok(Some(Self {
            settings,
            devices,
            routes,
            max_payload: cfg.max_payload_bytes(),
            embedded,
        }))
    }

    pub fn device_count(&self) -> usize {
        self.devices.len()
    }

    /// How to reach the broker the hub uses (the alarm MQTT channel publishes there too).
    pub fn options(&self) -> rumqttc::MqttOptions {
        self.settings.options.clone()
    }

    /// Watches the number of times the broker has confirmed the hub's subscriptions.
    pub fn subscriptions(&self) -> tokio::sync::watch::Receiver<u64> {
        self.settings.subscribed.subscribe()
    }

    /// Takes in messages until `shutdown`.
    pub async fn run(self, hub: Arc<Hub>, shutdown: CancellationToken) {
        let MqttSource {
            settings,
            devices,
            routes,
            max_payload,
            embedded: _keep,
        } = self;
        info!(broker = %settings.broker, devices = devices.len(), "MQTT source started");
        // Two batches of slack between the client and the hub: more would only hold memory.
        let (tx, mut rx) = mpsc::channel::<Incoming>(2 * MAX_BATCH);
        let client = tokio::spawn(client::run(settings, tx, shutdown.clone()));
        let mut state = State::new(devices, routes, max_payload);
        // Messages taken in whose acknowledgement found the client's request queue full. They
        // are retried, never awaited: the client task empties that queue only between handing
        // messages over, so waiting here for room while it waits to hand over the next message
        // would stall both until the broker dropped the connection. At most the broker's
        // in-flight window of them, as it sends no more unacknowledged.
        let mut unacked: VecDeque<Incoming> = VecDeque::new();
        let mut retry = tokio::time::interval(ACK_RETRY);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = retry.tick(), if !unacked.is_empty() => ack(&mut unacked),
                msg = rx.recv() => match msg {
                    Some(first) => {
                        // Whatever else has arrived goes into the same batch: one hand-over to
                        // history and one update of the live state per batch, not per message.
                        let mut batch = Batch::default();
                        state.handle(&first.publish.topic, &first.publish.payload, &hub, &mut batch);
                        let mut taken = vec![first];
                        while taken.len() < MAX_BATCH {
                            let Ok(next) = rx.try_recv() else { break };
                            state.handle(&next.publish.topic, &next.publish.payload, &hub, &mut batch);
                            taken.push(next);
                        }
                        state.commit(batch, &hub).await;
                        // Acknowledged only once the hub has them.
                        unacked.extend(taken);
                        ack(&mut unacked);
                    }
                    None => break,
                },
                Some(i) = state.next_silent() => state.silent(i, &hub),
            }
        }
        let _ = client.await;
        info!("MQTT source stopped");
    }
}

/// Messages taken in one go.
const MAX_BATCH: usize = 512;

/// How soon an acknowledgement the client had no room for is tried again.
const ACK_RETRY: Duration = Duration::from_millis(20);

/// Acknowledges what it can, oldest first; the rest waits for the next try.
fn ack(unacked: &mut VecDeque<Incoming>) {
    while let Some(msg) = unacked.front() {
        if !msg.try_ack() {
            break;
        }
        unacked.pop_front();
    }
}

/// What a batch of messages did, before it is handed over.
#[derive(Default)]
struct Batch {
    readings: Vec<Reading>,
    /// Per device index: messages, refused ones, and the last problem.
    counts: HashMap<usize, (u64, u64, Option<String>)>,
}

struct State {
    devices: Vec<Device>,
    /// Each device's online state as last told to the hub: the hub is told only of changes.
    online: Vec<bool>,
    routes: HashMap<String, Route>,
    max_payload: usize,
    expiry: DelayQueue<usize>,
    keys: Vec<Option<delay_queue::Key>>,
    log: Throttle<Arc<str>>,
}

impl State {
    fn new(devices: Vec<Device>, routes: HashMap<String, Route>, max_payload: usize) -> Self {
        let mut expiry = DelayQueue::new();
        // A device that never speaks is offline once its expiry has passed.
        let keys = devices
            .iter()
            .enumerate()
            .map(|(i, d)| d.expire.map(|e| expiry.insert(i, e)))
            .collect();
        Self {
            online: vec![false; devices.len()],
            devices,
            routes,
            max_payload,
            expiry,
            keys,
            log: Throttle::new(Duration::from_secs(60)),
        }
    }

    /// The next device whose silence has lasted past its expiry; pending while none has.
    async fn next_silent(&mut self) -> Option<usize> {
        let expired = poll_fn(|cx| self.expiry.poll_expired(cx)).await?;
        let i = expired.into_inner();
        self.keys[i] = None;
        Some(i)
    }

    fn silent(&mut self, i: usize, hub: &Hub) {
        self.online[i] = false;
        let d = &self.devices[i];
        let secs = d.expire.map_or(0, |e| e.as_secs());
        if hub.set_online(&d.id, false, Some(format!("silent for {secs} s"))) == Some(false) {
            warn!(device = %d.id, "MQTT device offline: silent for {secs} s");
        }
    }

    fn handle(&mut self, topic: &str, payload: &[u8], hub: &Hub, batch: &mut Batch) {
        match self.routes.get(topic).copied() {
            Some(Route::Data(i)) => self.data(i, payload, hub, batch),
            Some(Route::Availability(i)) => self.availability(i, payload, hub),
            None => {
                hub.record_unrouted();
                let key: Arc<str> = Arc::from("(unknown topic)");
                if let Some(held) = self.log.allow(key) {
                    warn!(%topic, held_back = held, "MQTT message on a topic no device has; ignored");
                }
            }
        }
    }

    /// Hands a batch's readings to the hub and its counts to the devices' statistics.
    async fn commit(&mut self, batch: Batch, hub: &Hub) {
        for (i, (messages, rejected, problem)) in batch.counts {
            hub.record_messages(&self.devices[i].id, messages, rejected, problem);
        }
        hub.ingest(batch.readings).await;
    }

    fn data(&mut self, i: usize, payload: &[u8], hub: &Hub, batch: &mut Batch) {
        let d = &self.devices[i];
        let id = d.id.clone();
        let count = batch.counts.entry(i).or_default();
        count.0 += 1;
        match decode::decode(&d.profile, payload, self.max_payload) {
            Ok(decoded) => {
                if !decoded.problems.is_empty() {
                    let p = decoded.problems.join("; ");
                    if let Some(held) = self.log.allow(id.clone()) {
                        warn!(device = %id, held_back = held, "MQTT payload partly refused: {p}");
                    }
                    count.1 += 1;
                    count.2 = Some(p);
                }
                let ts = Utc::now();
                batch
                    .readings
                    .extend(
                        decoded
                            .values
                            .into_iter()
                            .map(|(point, value, unit)| Reading {
                                device: id.clone(),
                                point,
                                ts,
                                value,
                                unit,
                            }),
                    );
                self.seen(i, hub);
            }
            Err(e) => {
                if let Some(held) = self.log.allow(id.clone()) {
                    warn!(device = %id, held_back = held, "MQTT payload refused: {e}");
                }
                count.1 += 1;
                count.2 = Some(e.to_string());
            }
        }
    }

    fn availability(&mut self, i: usize, payload: &[u8], hub: &Hub) {
        let d = &self.devices[i];
        let said = String::from_utf8_lossy(payload);
        let said = said.trim();
        if said == d.online_payload {
            self.seen(i, hub);
        } else if said == d.offline_payload {
            self.online[i] = false;
            if hub.set_online(
                &d.id,
                false,
                Some("the device (or its last will) says offline".into()),
            ) == Some(false)
            {
                warn!(device = %d.id, "MQTT device offline: its availability topic says so");
            }
        } else {
            let problem = format!(
                "availability payload is neither `{}` nor `{}`",
                d.online_payload, d.offline_payload
            );
            hub.record_messages(&d.id, 1, 1, Some(problem));
        }
    }

    /// The device is there: online, and its silence timer starts again.
    fn seen(&mut self, i: usize, hub: &Hub) {
        let d = &self.devices[i];
        if !self.online[i] {
            self.online[i] = true;
            if hub.set_online(&d.id, true, None) == Some(true) {
                info!(device = %d.id, "MQTT device online");
            }
        }
        if let Some(expire) = d.expire {
            match self.keys[i] {
                Some(ref key) => self.expiry.reset(key, expire),
                None => self.keys[i] = Some(self.expiry.insert(i, expire)),
            }
        }
    }
}

/// What the MQTT config means for the hub's own client (for `check` summaries and logs).
pub fn describe(cfg: &MqttConfig) -> String {
    if cfg.is_embedded() {
        format!("embedded broker on {}", cfg.listen())
    } else {
        cfg.broker.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Location;
    use crate::hub::DeviceInfo;
    use crate::profile::ProfileRegistry;
    use crate::reading::Value;

    async fn feed(state: &mut State, topic: &str, payload: &[u8], hub: &Hub) {
        let mut batch = Batch::default();
        state.handle(topic, payload, hub, &mut batch);
        state.commit(batch, hub).await;
    }

    /// One smoke detector on `park/smoke-1` (availability on `park/smoke-1/status`), silent
    /// after 120 s, and the hub state it reports to.
    fn setup() -> (State, Arc<Hub>) {
        let profile = ProfileRegistry::bundled()
            .unwrap()
            .get("mqtt-smoke-detector")
            .unwrap()
            .clone();
        let device = Device {
            id: Arc::from("smoke-1"),
            profile,
            expire: Some(Duration::from_secs(120)),
            online_payload: "online".into(),
            offline_payload: "offline".into(),
        };
        let routes = HashMap::from([
            ("park/smoke-1".to_string(), Route::Data(0)),
            ("park/smoke-1/status".to_string(), Route::Availability(0)),
        ]);
        let hub = Hub::new(
            vec![DeviceInfo {
                id: Arc::from("smoke-1"),
                name: "smoke".into(),
                profile: "mqtt-smoke-detector".into(),
                category: "fire".into(),
                location: Location::default(),
            }],
            None,
        );
        (State::new(vec![device], routes, 1024), hub)
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_sensor_goes_offline_after_its_expiry_and_back_with_its_next_message() {
        let (mut state, hub) = setup();
        let t0 = tokio::time::Instant::now();
        feed(&mut state, "park/smoke-1", br#"{"smoke":false}"#, &hub).await;
        assert_eq!(hub.device("smoke-1").unwrap().online, Some(true));
        // Messages keep it alive: 100 s, another message, 100 s more.
        tokio::time::advance(Duration::from_secs(100)).await;
        feed(&mut state, "park/smoke-1", br#"{"smoke":false}"#, &hub).await;
        tokio::time::advance(Duration::from_secs(100)).await;
        let quiet = tokio::time::timeout(Duration::from_millis(1), state.next_silent()).await;
        assert!(quiet.is_err(), "not yet silent for 120 s");
        // Then silence: 120 s after the last message it is offline.
        let i = state.next_silent().await.unwrap();
        assert_eq!(t0.elapsed(), Duration::from_secs(100 + 120));
        state.silent(i, &hub);
        let d = hub.device("smoke-1").unwrap();
        assert_eq!(d.online, Some(false));
        assert_eq!(d.last_error.as_deref(), Some("silent for 120 s"));
        feed(&mut state, "park/smoke-1", br#"{"smoke":false}"#, &hub).await;
        assert_eq!(hub.device("smoke-1").unwrap().online, Some(true));
    }

    #[tokio::test(start_paused = true)]
    async fn a_sensor_that_never_speaks_is_offline_after_its_expiry() {
        let (mut state, hub) = setup();
        let start = tokio::time::Instant::now();
        let i = state.next_silent().await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(120));
        state.silent(i, &hub);
        assert_eq!(hub.device("smoke-1").unwrap().online, Some(false));
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_will_and_availability_topic_are_honoured() {
        let (mut state, hub) = setup();
        feed(&mut state, "park/smoke-1/status", b"online", &hub).await;
        assert_eq!(hub.device("smoke-1").unwrap().online, Some(true));
        feed(&mut state, "park/smoke-1/status", b"offline", &hub).await;
        assert_eq!(hub.device("smoke-1").unwrap().online, Some(false));
        feed(&mut state, "park/smoke-1/status", b"maybe", &hub).await;
        let d = hub.device("smoke-1").unwrap();
        assert_eq!(d.online, Some(false));
        assert_eq!(d.stats.rejected, 1);
    }

    #[tokio::test]
    async fn bad_payloads_are_counted_on_their_device_and_never_become_readings() {
        let (mut state, hub) = setup();
        for bad in [
            &b"not json"[..],
            b"[]",
            br#"{"smoke":"yes"}"#,
            &[b'{'; 2000],
        ] {
            feed(&mut state, "park/smoke-1", bad, &hub).await;
        }
        feed(&mut state, "park/elsewhere", b"{}", &hub).await;
        let d = hub.device("smoke-1").unwrap();
        assert_eq!((d.stats.messages, d.stats.rejected), (4, 4));
        assert!(d.points.is_empty(), "{:?}", d.points);
        assert_eq!(hub.unrouted_total(), 1);
        // A good one after all that is taken as it is.
        feed(
            &mut state,
            "park/smoke-1",
            br#"{"smoke":true,"battery":50}"#,
            &hub,
        )
        .await;
        assert_eq!(
            hub.latest("smoke-1", "smoke").unwrap().value,
            Value::Bool(true)
        );
        assert_eq!(
            hub.latest("smoke-1", "battery").unwrap().value,
            Value::Number(50.0)
        );
    }
}
