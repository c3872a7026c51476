//! The hub's live state: the latest value of every point, each device's online state and poll
//! statistics, and the hand-off of readings to the history writer and the alarm engine. Sources
//! write here; the API and the demo read here.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::alarm::engine::AlarmFeed;
use crate::config::Location;
use crate::live::{self, LiveEvent, LiveSender};
use crate::reading::{Reading, Value};
use crate::uplink::UplinkFeed;

/// What the rest of the hub knows of a configured device.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceInfo {
    pub id: Arc<str>,
    pub name: String,
    pub profile: String,
    pub category: String,
    pub location: Location,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latest {
    pub value: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<Arc<str>>,
    pub ts: DateTime<Utc>,
}

/// Per-device statistics: polls of Modbus devices (Neuron's round-trip time, read errors and
/// link state), messages of MQTT devices.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DeviceStats {
    pub polls: u64,
    pub requests: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub exceptions: u64,
    pub rtt_last_ms: f64,
    pub rtt_avg_ms: f64,
    pub counter_resets: u64,
    /// MQTT messages taken in.
    pub messages: u64,
    /// MQTT messages (or parts of them) refused: not JSON, wrong types, unknown values, too big.
    pub rejected: u64,
    /// DL/T 645 and CJ/T 188 lines: what was passed over while waiting for this device's
    /// answers, by reason.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub line_rejects: std::collections::BTreeMap<String, u64>,
}

/// How one request went, as the poller saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    Ok(Duration),
    /// The device answered with a Modbus exception: it is there, the link is fine.
    Exception,
    Timeout,
    /// The link failed (connect, I/O, garbled frame).
    LinkError,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeviceState {
    #[serde(flatten)]
    pub info: DeviceInfo,
    /// `None` until the first poll has settled it.
    pub online: Option<bool>,
    pub last_seen: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub stats: DeviceStats,
    pub points: BTreeMap<Arc<str>, Latest>,
}

/// The hub's shared state. Cheap to share (`Arc<Hub>`); every lock is held for a map update only.
#[derive(Debug)]
pub struct Hub {
    devices: RwLock<HashMap<Arc<str>, DeviceState>>,
    store: Option<mpsc::Sender<Vec<Reading>>>,
    alarms: Option<AlarmFeed>,
    uplink: Option<UplinkFeed>,
    live: LiveSender,
    readings: AtomicU64,
    dropped: AtomicU64,
    unrouted: AtomicU64,
}

impl Hub {
    pub fn new(devices: Vec<DeviceInfo>, store: Option<mpsc::Sender<Vec<Reading>>>) -> Arc<Self> {
        Self::with_feeds(devices, store, None, None)
    }

    /// A hub that also tells the alarm engine of watched readings and status changes, and
    /// hands readings and status changes to the uplink.
    pub fn with_feeds(
        devices: Vec<DeviceInfo>,
        store: Option<mpsc::Sender<Vec<Reading>>>,
        alarms: Option<AlarmFeed>,
        uplink: Option<UplinkFeed>,
    ) -> Arc<Self> {
        let devices = devices
            .into_iter()
            .map(|info| {
                (
                    info.id.clone(),
                    DeviceState {
                        info,
                        online: None,
                        last_seen: None,
                        last_error: None,
                        stats: DeviceStats::default(),
                        points: BTreeMap::new(),
                    },
                )
            })
            .collect();
        Arc::new(Self {
            devices: RwLock::new(devices),
            store,
            alarms,
            uplink,
            live: live::channel(),
            readings: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            unrouted: AtomicU64::new(0),
        })
    }

    /// Takes a batch of readings: updates the latest values and hands the batch to history.
    /// Waits when the writer is behind (back-pressure), never drops while it runs.
    pub async fn ingest(&self, batch: Vec<Reading>) {
        if batch.is_empty() {
            return;
        }
        {
            let mut devices = self.devices.write().unwrap_or_else(PoisonError::into_inner);
            for r in &batch {
                if let Some(d) = devices.get_mut(&r.device) {
                    d.last_seen = Some(d.last_seen.map_or(r.ts, |t| t.max(r.ts)));
                    d.points.insert(
                        r.point.clone(),
                        Latest {
                            value: r.value.clone(),
                            unit: r.unit.clone(),
                            ts: r.ts,
                        },
                    );
                }
            }
        }
        self.readings
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        if let Some(a) = &self.alarms {
            a.readings(&batch);
        }
        if let Some(u) = &self.uplink {
            u.readings(&batch).await;
        }
        if self.live.receiver_count() > 0 {
            // Nobody watching is an error of `send`, and no news.
            let _ = self
                .live
                .send(LiveEvent::Readings(Arc::from(batch.as_slice())));
        }
        if let Some(tx) = &self.store {
            let n = batch.len() as u64;
            if tx.send(batch).await.is_err() {
                // Only after shutdown has closed the writer; count rather than lose silently.
                self.dropped.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// Records one request's outcome in the device's statistics.
    pub fn record_request(&self, device: &str, outcome: RequestOutcome) {
        self.with_device(device, |d| {
            let s = &mut d.stats;
            s.requests += 1;
            match outcome {
                RequestOutcome::Ok(rtt) => {
                    let ms = rtt.as_secs_f64() * 1000.0;
                    s.rtt_last_ms = ms;
                    // An exponential average: recent enough to show a degrading line.
                    s.rtt_avg_ms = if s.rtt_avg_ms == 0.0 {
                        ms
                    } else {
                        s.rtt_avg_ms * 0.9 + ms * 0.1
                    };
                }
                RequestOutcome::Exception => {
                    s.errors += 1;
                    s.exceptions += 1;
                }
                RequestOutcome::Timeout => {
                    s.errors += 1;
                    s.timeouts += 1;
                }
                RequestOutcome::LinkError => s.errors += 1,
            }
        });
    }

    /// Records the end of one poll cycle of a device and its online verdict (`None`: no verdict
    /// yet); returns `Some(online)` when the device's online state changed.
    pub fn record_poll(
        &self,
        device: &str,
        online: Option<bool>,
        error: Option<String>,
    ) -> Option<bool> {
        let mut changed = None;
        self.with_device(device, |d| {
            d.stats.polls += 1;
            if let Some(e) = error {
                d.last_error = Some(e);
            }
            if online.is_some() && d.online != online {
                d.online = online;
                changed = online;
            }
        });
        if let Some(online) = changed {
            self.tell_status(device, online, None);
        }
        changed
    }

    fn tell_status(&self, device: &str, online: bool, reason: Option<String>) {
        if let Some(u) = &self.uplink {
            u.status(device, online);
        }
        let id = self
            .devices
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get_key_value(device)
            .map(|(k, _)| k.clone());
        let Some(id) = id else {
            return;
        };
        let _ = self.live.send(LiveEvent::Device {
            device: id.clone(),
            online,
            reason: reason.clone(),
            ts: Utc::now(),
        });
        if let Some(a) = &self.alarms {
            a.device(id, online, reason);
        }
    }

    /// Where the hub's live events go: subscribe to watch, or hand it to the alarm engine so
    /// that alarm transitions go there too.
    pub fn live(&self) -> &LiveSender {
        &self.live
    }

    /// A bus (line or gateway) went down or came back: its bus-offline alarm follows.
    pub fn set_bus_online(&self, bus: &str, online: bool) {
        if let Some(a) = &self.alarms {
            a.bus(Arc::from(bus), online);
        }
    }

    /// Records MQTT messages of a device: how many, how many were (partly) refused, and the
    /// last problem.
    pub fn record_messages(
        &self,
        device: &str,
        messages: u64,
        rejected: u64,
        problem: Option<String>,
    ) {
        self.with_device(device, |d| {
            d.stats.messages += messages;
            d.stats.rejected += rejected;
            if problem.is_some() {
                d.last_error = problem;
            }
        });
    }

    /// Adds to a device's count of what its line passed over.
    pub fn record_line_rejects(
        &self,
        device: &str,
        rejects: &std::collections::BTreeMap<&'static str, u64>,
    ) {
        self.with_device(device, |d| {
            for (reason, n) in rejects {
                *d.stats
                    .line_rejects
                    .entry((*reason).to_string())
                    .or_default() += n;
            }
        });
    }

    /// Sets a device online or offline (a message, an expiry, a last will); returns
    /// `Some(online)` when that changed its state.
    pub fn set_online(&self, device: &str, online: bool, reason: Option<String>) -> Option<bool> {
        let mut changed = None;
        self.with_device(device, |d| {
            if d.online != Some(online) {
                d.online = Some(online);
                changed = Some(online);
                if reason.is_some() {
                    d.last_error = reason.clone();
                }
            }
        });
        if changed.is_some() {
            self.tell_status(device, online, reason);
        }
        changed
    }

    pub fn record_counter_reset(&self, device: &str) {
        self.with_device(device, |d| d.stats.counter_resets += 1);
    }

    fn with_device(&self, device: &str, f: impl FnOnce(&mut DeviceState)) {
        let mut devices = self.devices.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(d) = devices.get_mut(device) {
            f(d);
        }
    }

    pub fn device(&self, id: &str) -> Option<DeviceState> {
        self.devices
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    /// Every device, sorted by id.
    pub fn devices(&self) -> Vec<DeviceState> {
        let mut v: Vec<DeviceState> = self
            .devices
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.info.id.cmp(&b.info.id));
        v
    }

    pub fn latest(&self, device: &str, point: &str) -> Option<Latest> {
        self.devices
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(device)
            .and_then(|d| d.points.get(point).cloned())
    }

    /// Readings taken in since start.
    pub fn readings_total(&self) -> u64 {
        self.readings.load(Ordering::Relaxed)
    }

    /// Counts a message on a topic no device is configured for.
    pub fn record_unrouted(&self) {
        self.unrouted.fetch_add(1, Ordering::Relaxed);
    }

    /// Messages on topics no device is configured for.
    pub fn unrouted_total(&self) -> u64 {
        self.unrouted.load(Ordering::Relaxed)
    }

    /// Readings that could not reach history because the writer had stopped.
    pub fn readings_dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str) -> DeviceInfo {
        DeviceInfo {
            id: id.into(),
            name: id.to_string(),
            profile: "p".into(),
            category: "electricity_meter".into(),
            location: Location::default(),
        }
    }

    fn reading(device: &str, point: &str, v: f64, secs: i64) -> Reading {
        Reading {
            device: device.into(),
            point: point.into(),
            ts: DateTime::from_timestamp(secs, 0).unwrap(),
            value: Value::Number(v),
            unit: Some("V".into()),
        }
    }

    #[tokio::test]
    async fn ingest_keeps_the_latest_value_and_forwards_the_batch() {
        let (tx, mut rx) = mpsc::channel(4);
        let hub = Hub::new(vec![info("m1")], Some(tx));
        hub.ingest(vec![
            reading("m1", "voltage", 229.8, 100),
            reading("m1", "voltage", 230.1, 101),
        ])
        .await;
        assert_eq!(
            hub.latest("m1", "voltage").unwrap().value,
            Value::Number(230.1)
        );
        assert_eq!(rx.recv().await.unwrap().len(), 2);
        assert_eq!(
            hub.device("m1").unwrap().last_seen.unwrap().timestamp(),
            101
        );
        assert_eq!(hub.readings_total(), 2);
    }

    #[tokio::test]
    async fn readings_of_unknown_devices_are_not_cached() {
        let hub = Hub::new(vec![info("m1")], None);
        hub.ingest(vec![reading("ghost", "voltage", 1.0, 1)]).await;
        assert!(hub.latest("ghost", "voltage").is_none());
        assert!(hub.device("ghost").is_none());
    }

    #[test]
    fn online_changes_are_reported_once() {
        let hub = Hub::new(vec![info("m1")], None);
        assert_eq!(hub.record_poll("m1", None, Some("timeout".into())), None);
        assert_eq!(hub.device("m1").unwrap().online, None, "no verdict yet");
        assert_eq!(hub.record_poll("m1", Some(true), None), Some(true));
        assert_eq!(hub.record_poll("m1", Some(true), None), None);
        assert_eq!(
            hub.record_poll("m1", Some(false), Some("timeout".into())),
            Some(false)
        );
        let d = hub.device("m1").unwrap();
        assert_eq!(d.stats.polls, 4);
        assert_eq!(d.last_error.as_deref(), Some("timeout"));
    }

    #[test]
    fn request_outcomes_feed_the_statistics() {
        let hub = Hub::new(vec![info("m1")], None);
        hub.record_request("m1", RequestOutcome::Ok(Duration::from_millis(10)));
        hub.record_request("m1", RequestOutcome::Timeout);
        hub.record_request("m1", RequestOutcome::Exception);
        let s = hub.device("m1").unwrap().stats;
        assert_eq!(
            (s.requests, s.errors, s.timeouts, s.exceptions),
            (3, 2, 1, 1)
        );
        assert!((s.rtt_last_ms - 10.0).abs() < 1e-9);
    }
}
