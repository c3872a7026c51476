//! The uplink to the park's cloud platform (园区大脑): readings, alarm transitions and device
//! status are queued in `uplink.sqlite` as they happen and sent in batches, oldest first,
//! over HTTP (signed, gzip when it pays) or MQTT (QoS 1, the PUBACK is delivery), until the
//! receiver has each one. The queue is the store-and-forward: links down for hours, power cuts
//! and restarts lose nothing; past `max_backlog_mb` the oldest readings are shed (never alarms
//! or status), counted and logged.

pub mod queue;
pub mod record;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{Offset as _, TimeZone as _, Utc};
use chrono_tz::Tz;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::alarm::engine::AlarmFeed;
use crate::alarm::rules::UPLINK_BACKLOG;
use crate::config::{Loaded, UplinkConfig, UplinkKind};
use crate::mqtt::publisher::Publisher;
use crate::reading::Reading;
use queue::{Batch, UplinkQueue};
use record::Record;

/// How long one attempt may take: a receiver that neither answers nor fails is a failure.
/// Records held in memory while the queue cannot be written (a full disk).
const HELD_MAX: usize = 100_000;
/// How long an alarm or a status change waits for others to join its batch.
const GATHER: Duration = Duration::from_millis(250);
/// Batches of readings waiting for the queue's writer; beyond this the hub's sources wait.
const FEED_QUEUE: usize = 64;

/// `[[uplink.point]]`, resolved: which readings go up and how often.
#[derive(Debug, Clone)]
struct Choice {
    devices: Option<Vec<String>>,
    profiles: Option<Vec<String>>,
    categories: Option<Vec<String>>,
    points: Option<Vec<String>>,
    every_s: i64,
    enabled: bool,
}

fn list(v: &Option<crate::config::OneOrMany>) -> Option<Vec<String>> {
    v.as_ref()
        .map(|v| v.values().into_iter().map(str::to_owned).collect())
}

fn named(list: &Option<Vec<String>>, x: &str) -> bool {
    list.as_ref().is_none_or(|l| l.iter().any(|v| v == x))
}

/// (device, point).
type PointKey = (Arc<str>, Arc<str>);

/// Decides, reading by reading, what goes up.
#[derive(Debug, Default)]
struct Selection {
    choices: Vec<Choice>,
    /// Each device's profile and its category.
    devices: HashMap<String, (String, String)>,
    /// Slots are of the park's clock: a day is a local day.
    tz: Tz,
    /// The clock slot of the last reading sent, per point with an interval.
    sent: Mutex<HashMap<PointKey, i64>>,
}

impl Selection {
    fn choice(&self, device: &str, point: &str) -> Option<&Choice> {
        let (profile, category) = self.devices.get(device)?;
        self.choices.iter().find(|c| {
            named(&c.devices, device)
                && named(&c.profiles, profile)
                && named(&c.categories, category)
                && named(&c.points, point)
        })
    }

    fn wants(&self, r: &Reading) -> bool {
        match self.choice(&r.device, &r.point) {
            None => true,
            Some(c) if !c.enabled => false,
            Some(c) if c.every_s <= 0 => true,
            Some(c) => {
                // The first reading of each slot of the clock: energy counters every 15 min
                // arrive at :00, :15, :30 and :45, whatever the poll interval.
                let offset = self
                    .tz
                    .offset_from_utc_datetime(&r.ts.naive_utc())
                    .fix()
                    .local_minus_utc();
                let slot = (r.ts.timestamp() + i64::from(offset)).div_euclid(c.every_s);
                let mut sent = self.sent.lock().unwrap_or_else(PoisonError::into_inner);
                let last = sent
                    .entry((r.device.clone(), r.point.clone()))
                    .or_insert(i64::MIN);
                if slot > *last {
                    *last = slot;
                    true
                } else {
                    false
                }
            }
        }
    }
}

/// The hub's side of the uplink: what goes up is handed over here, in order.
#[derive(Debug, Clone)]
pub struct UplinkFeed {
    readings: Option<mpsc::Sender<Vec<Reading>>>,
    events: mpsc::UnboundedSender<Record>,
    selection: Arc<Selection>,
    alarms: bool,
    status: bool,
    tz: Tz,
}

impl UplinkFeed {
    /// Readings: waits when the queue's writer is behind (back-pressure, as for history).
    /// Only chosen and handed over here; the writer encodes them, off the sources' tasks.
    pub async fn readings(&self, batch: &[Reading]) {
        if let Some(tx) = &self.readings {
            let chosen: Vec<Reading> = batch
                .iter()
                .filter(|r| self.selection.wants(r))
                .cloned()
                .collect();
            if chosen.is_empty() {
                return;
            }
            // Closed only at shutdown; what was not queued then is in history.
            let _ = tx.send(chosen).await;
        }
    }

    pub fn status(&self, device: &str, online: bool) {
        if self.status {
            let _ = self
                .events
                .send(record::status(device, online, Utc::now(), self.tz));
        }
    }

    pub fn alarm(&self, a: &record::AlarmOut) {
        if self.alarms {
            let _ = self.events.send(record::alarm(a));
        }
    }

    pub fn tz(&self) -> Tz {
        self.tz
    }
}

/// Where batches go.
enum Sender {
    Http {
        client: reqwest::Client,
        url: String,
        token: Option<String>,
        secret: Option<String>,
    },
    Mqtt {
        publisher: Publisher,
        topic: String,
    },
}

impl Sender {
    /// Sends a batch's body once; `Ok` when the receiver has it.
    async fn send(&self, body: &[u8], timeout: Duration) -> Result<(), String> {
        match self {
            Sender::Http {
                client,
                url,
                token,
                secret,
            } => {
                let owned = body.to_vec();
                let (bytes, gzipped) = tokio::task::spawn_blocking(move || record::encode(&owned))
                    .await
                    .map_err(|e| format!("gzip: {e}"))?;
                let ts = Utc::now().timestamp();
                let mut rb = client
                    .post(url)
                    .timeout(timeout)
                    .header("Content-Type", "application/json")
                    .header("X-Parkhub-Timestamp", ts.to_string());
                if gzipped {
                    rb = rb.header("Content-Encoding", "gzip");
                }
                if let Some(t) = token {
                    rb = rb.header("Authorization", format!("Bearer {t}"));
                }
                if let Some(s) = secret {
                    rb = rb.header(
                        "X-Parkhub-Signature",
                        crate::notify::channel::webhook_signature(s, ts, &bytes),
                    );
                }
                match rb.body(bytes).send().await {
                    Ok(resp) if resp.status().is_success() => Ok(()),
                    Ok(resp) => {
                        let status = resp.status();
                        let answer = crate::notify::answer_of(resp).await;
                        let text = String::from_utf8_lossy(&answer);
                        Err(format!(
                            "HTTP {status}: {}",
                            crate::notify::message::fit(text.trim(), 200)
                        ))
                    }
                    Err(e) => Err(crate::notify::describe(e)),
                }
            }
            Sender::Mqtt { publisher, topic } => {
                match tokio::time::timeout(timeout, publisher.publish(topic, body.to_vec())).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("no PUBACK within {} s", timeout.as_secs())),
                }
            }
        }
    }
}

/// What the uplink task runs on.
pub struct Uplink {
    cfg: UplinkConfig,
    hub_id: String,
    queue: Arc<UplinkQueue>,
    sender: Sender,
    wake: Arc<Notify>,
}

/// Opens the queue and starts the uplink's writer and sender; `None` without `[uplink]`.
/// `alarms` hears of the backlog outgrowing its disk cap.
pub fn start(
    loaded: &Loaded,
    alarms: Option<AlarmFeed>,
    tasks: &mut JoinSet<()>,
    shutdown: CancellationToken,
) -> anyhow::Result<Option<(UplinkFeed, Arc<UplinkQueue>)>> {
    let cfg = &loaded.config;
    let Some(u) = &cfg.uplink else {
        return Ok(None);
    };
    let selection = Selection {
        choices: u
            .point
            .iter()
            .map(|p| Choice {
                devices: list(&p.device),
                profiles: list(&p.profile),
                categories: list(&p.category),
                points: list(&p.name),
                every_s: i64::try_from(p.every_s).unwrap_or(i64::MAX),
                enabled: p.enabled,
            })
            .collect(),
        devices: loaded
            .device_profiles
            .iter()
            .map(|(d, p)| (d.clone(), (p.id.clone(), p.category.clone())))
            .collect(),
        tz: cfg.hub.timezone.0,
        sent: Mutex::default(),
    };
    let path = cfg.hub.data_dir.join(queue::DB_FILE);
    let queue =
        Arc::new(UplinkQueue::open(&path).with_context(|| format!("opening {}", path.display()))?);
    let sender = sender(u, &cfg.hub.id, "uplink", &shutdown)?;
    let (readings_tx, readings_rx) = mpsc::channel(FEED_QUEUE);
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let wake = Arc::new(Notify::new());
    tasks.spawn(write(
        queue.clone(),
        (readings_rx, events_rx),
        cfg.hub.timezone.0,
        wake.clone(),
        (u.batch_max, u.max_backlog_mb),
        alarms,
        shutdown.clone(),
    ));
    let uplink = Uplink {
        cfg: u.clone(),
        hub_id: cfg.hub.id.clone(),
        queue: queue.clone(),
        sender,
        wake,
    };
    tasks.spawn(uplink.run(shutdown));
    Ok(Some((
        UplinkFeed {
            readings: u.readings.then_some(readings_tx),
            events: events_tx,
            selection: Arc::new(selection),
            alarms: u.alarms,
            status: u.status,
            tz: cfg.hub.timezone.0,
        },
        queue,
    )))
}

/// Sends one test batch (no records, `"test": true`) the way the uplink sends: for
/// `parkhub uplink-test`. Returns how long the receiver took to take it, or why it did not.
pub async fn test(loaded: &Loaded) -> anyhow::Result<Result<Duration, String>> {
    let cfg = &loaded.config;
    let u = cfg.uplink.as_ref().context("the config has no [uplink]")?;
    let shutdown = CancellationToken::new();
    let sender = sender(u, &cfg.hub.id, "uplink-test", &shutdown)?;
    let now = Utc::now();
    let body = serde_json::to_vec(&serde_json::json!({
        "hub_id": cfg.hub.id,
        "batch_id": format!("{}-test-{}", cfg.hub.id, now.timestamp()),
        "test": true,
        "sent_at": now.with_timezone(&cfg.hub.timezone.0).to_rfc3339(),
        "readings": [],
        "alarms": [],
        "device_status": [],
    }))?;
    let started = std::time::Instant::now();
    let result = sender
        .send(&body, Duration::from_secs(u.timeout_s))
        .await
        .map(|()| started.elapsed());
    shutdown.cancel();
    Ok(result)
}

/// `client` names the MQTT client after its use, so that a test never takes the running
/// hub's session.
fn sender(
    u: &UplinkConfig,
    hub_id: &str,
    client: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<Sender> {
    let token = u.token.as_ref().map(|t| t.expose().to_string());
    Ok(match u.kind {
        UplinkKind::Http => Sender::Http {
            client: crate::notify::http_client()?,
            url: u.url.clone(),
            token,
            secret: u.secret.as_ref().map(|s| s.expose().to_string()),
        },
        UplinkKind::Mqtt => {
            let url = url::Url::parse(&u.url).with_context(|| format!("uplink.url `{}`", u.url))?;
            let tls = url.scheme() == "mqtts";
            let host = url
                .host_str()
                .context("uplink.url has no host")?
                .to_string();
            let port = url.port().unwrap_or(if tls { 8883 } else { 1883 });
            let mut o = rumqttc::MqttOptions::new(format!("parkhub-{hub_id}-{client}"), host, port);
            o.set_keep_alive(Duration::from_secs(30));
            o.set_max_packet_size(16 << 20, 1 << 20);
            if let Some(t) = token {
                o.set_credentials(hub_id, t);
            }
            if tls {
                o.set_transport(rumqttc::Transport::tls_with_config(
                    rumqttc::TlsConfiguration::Rustls(Arc::new(crate::tls::client_config(
                        None, None, "uplink",
                    )?)),
                ));
            }
            Sender::Mqtt {
                publisher: Publisher::start(o, shutdown.clone()),
                topic: format!("parkhub/{hub_id}/up"),
            }
        }
    })
}

/// The queue's writer: takes what the hub hands over, in order, and wakes the sender when
/// something should not wait for the next interval (an alarm, a status change, a full batch).
async fn write(
    queue: Arc<UplinkQueue>,
    (mut readings, mut events): (
        mpsc::Receiver<Vec<Reading>>,
        mpsc::UnboundedReceiver<Record>,
    ),
    tz: Tz,
    wake: Arc<Notify>,
    (batch_max, max_backlog_mb): (usize, u64),
    alarms: Option<AlarmFeed>,
    shutdown: CancellationToken,
) {
    let cap = i64::try_from(max_backlog_mb.saturating_mul(1 << 20)).unwrap_or(i64::MAX);
    let mut waiting = queue.backlog().unwrap_or(0) as usize;
    let mut since_check = 0usize;
    let mut held: Vec<Record> = Vec::new();
    let mut failing = false;
    let mut readings_open = true;
    let mut check = tokio::time::interval(Duration::from_secs(60));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Not yet told: the alarm of the last run may still be open, so the first check tells
    // the engine either way.
    let mut shedding: Option<bool> = None;
    loop {
        let (events_now, readings_now, urgent) = tokio::select! {
            biased;
            // The sources have stopped by now: queue what they handed over, then end. The
            // alarm engine stops on the same signal, finishing the event in hand (it does not
            // wait on anything): a moment's grace lets its last transitions in.
            _ = shutdown.cancelled() => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let mut rest: Vec<Record> = Vec::new();
                while let Ok(e) = events.try_recv() {
                    rest.push(e);
                }
                while let Ok(r) = readings.try_recv() {
                    rest.extend(r.iter().map(|r| record::reading(r, tz)));
                }
                held.extend(rest);
                let rest = held;
                if let Err(e) = queue.push(&rest) {
                    warn!(error = %e, records = rest.len(), "uplink: cannot queue records at shutdown");
                }
                break;
            }
            Some(e) = events.recv() => {
                let mut v = vec![e];
                while let Ok(e) = events.try_recv() {
                    v.push(e);
                }
                (v, Vec::new(), true)
            }
            // Closed from the start when readings do not go up: alarms and status still do.
            r = readings.recv(), if readings_open => match r {
                Some(r) => (Vec::new(), r, false),
                None => {
                    readings_open = false;
                    continue;
                }
            },
            // The backlog alarm also clears while few records come in.
            _ = check.tick() => {
                shed_state(&queue, cap, &mut shedding, alarms.as_ref());
                continue;
            }
        };
        // Encoding and SQLite (and a checkpoint's fsync) off the async workers: the sources
        // share them. Records a failed write left behind go first, keeping the order.
        let q = queue.clone();
        let mut records = std::mem::take(&mut held);
        let (records, pushed) = match tokio::task::spawn_blocking(move || {
            records.extend(events_now);
            records.extend(readings_now.iter().map(|r| record::reading(r, tz)));
            let r = q.push(&records);
            (records, r)
        })
        .await
        {
            Ok(done) => done,
            Err(e) => {
                warn!(error = %e, "uplink: the queue's writer thread failed");
                continue;
            }
        };
        let n = records.len();
        if let Err(e) = pushed {
            // A full disk: held in memory and tried again with the next records. Past a bound
            // readings go (history has them); alarm events and status changes are kept.
            if !failing {
                warn!(error = %e, records = n, "uplink: cannot queue records; holding them");
                failing = true;
            }
            held = records;
            if held.len() > HELD_MAX {
                let over = held.len() - HELD_MAX;
                let mut dropped = 0;
                held.retain(|r| {
                    let drop = dropped < over && r.kind == record::Kind::Reading;
                    dropped += usize::from(drop);
                    !drop
                });
            }
            continue;
        }
        if failing {
            info!("uplink: records are queued again");
            failing = false;
        }
        waiting += n;
        since_check += n;
        if urgent || waiting >= batch_max {
            waiting = 0;
            wake.notify_one();
        }
        if since_check >= 10_000 {
            since_check = 0;
            shed_state(&queue, cap, &mut shedding, alarms.as_ref());
        }
    }
}

/// Sheds what is over the cap and tells the alarm engine when that state changes (or was
/// never told).
fn shed_state(queue: &UplinkQueue, cap: i64, told: &mut Option<bool>, alarms: Option<&AlarmFeed>) {
    let now = shed(queue, cap, told.unwrap_or(true));
    if *told != Some(now) {
        if let Some(a) = alarms {
            a.hub(UPLINK_BACKLOG, now);
        }
        *told = Some(now);
    }
}

/// Keeps the queue under its cap by dropping the oldest readings. Returns whether the backlog
/// is (still) a problem: it shed now, or it did and the backlog has not yet drained to half
/// the cap (so that the alarm does not flap at the cap).
fn shed(queue: &UplinkQueue, cap: i64, was: bool) -> bool {
    let mut shed_now = 0;
    while queue.used_bytes().is_ok_and(|b| b > cap) {
        match queue.shed_readings(10_000) {
            Ok(0) | Err(_) => break,
            Ok(n) => shed_now += n,
        }
    }
    if shed_now > 0 {
        let total = queue.shed_total().unwrap_or_default();
        warn!(
            shed = shed_now,
            total, "uplink backlog over its disk cap: the oldest readings were dropped"
        );
        true
    } else if was && queue.used_bytes().is_ok_and(|b| b > cap / 2) {
        true
    } else {
        if was {
            info!("uplink backlog drained below half its disk cap");
        }
        false
    }
}

fn backoff(attempt: u32, max: Duration) -> Duration {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1).min(max))
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
        .nth(attempt.saturating_sub(1) as usize)
        .unwrap_or(max)
        // Jitter is added after the cap: keep the promise of `max_retry_s`.
        .min(max)
}

impl Uplink {
    /// Sends batches until `shutdown`: every `interval_s`, at once for alarms and status, and
    /// back to back while a backlog drains.
    pub async fn run(self, shutdown: CancellationToken) {
        let interval = Duration::from_secs(self.cfg.interval_s);
        let mut failures = 0u32;
        loop {
            let sent_at = Utc::now().to_rfc3339();
            let (q, hub, max) = (self.queue.clone(), self.hub_id.clone(), self.cfg.batch_max);
            let formed =
                tokio::task::spawn_blocking(move || q.next_batch(&hub, max, &sent_at)).await;
            let batch = match formed {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => {
                    warn!(error = %e, "uplink: cannot read the queue");
                    None
                }
                Err(e) => {
                    warn!(error = %e, "uplink: the queue's reader thread failed");
                    None
                }
            };
            let Some(batch) = batch else {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = self.wake.notified() => self.gather(&shutdown).await,
                    _ = tokio::time::sleep(interval) => {}
                }
                continue;
            };
            let result = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.sender.send(&batch.body, Duration::from_secs(self.cfg.timeout_s)) => r,
            };
            match result {
                Ok(()) => {
                    if failures > 0 {
                        info!(after = failures, "uplink delivers again");
                    }
                    failures = 0;
                    if let Err(e) = self.queue.delivered(&batch) {
                        warn!(error = %e, "uplink: cannot record a delivered batch; it will be sent again");
                    }
                    if !self.more_waiting(&batch) {
                        // A partly filled batch: the rest gathers for an interval.
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = self.wake.notified() => self.gather(&shutdown).await,
                            _ = tokio::time::sleep(interval) => {}
                        }
                    }
                }
                Err(e) => {
                    failures += 1;
                    let wait = backoff(failures, Duration::from_secs(self.cfg.max_retry_s));
                    if failures == 1 || failures.is_power_of_two() {
                        warn!(
                            error = %e,
                            first_seq = batch.first_seq,
                            attempts = failures,
                            retry_in_s = wait.as_secs(),
                            "uplink batch not delivered; it will be sent again"
                        );
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    /// Woken for an alarm or a status change: what comes with it (a bus's devices going
    /// offline together, the hub's start) joins the same batch.
    async fn gather(&self, shutdown: &CancellationToken) {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(GATHER) => {}
        }
    }

    /// Whether a full batch waits: a backlog drains back to back.
    fn more_waiting(&self, sent: &Batch) -> bool {
        sent.len() >= self.cfg.batch_max
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::Value;

    fn at(device: &str, point: &str, secs: i64) -> Reading {
        Reading {
            device: device.into(),
            point: point.into(),
            ts: chrono::DateTime::from_timestamp(secs, 0).unwrap(),
            value: Value::Number(1.0),
            unit: None,
        }
    }

    fn selection(choices: Vec<Choice>) -> Selection {
        Selection {
            choices,
            devices: HashMap::from([
                (
                    "em-1".into(),
                    ("chint-dtsu666".into(), "electricity_meter".into()),
                ),
                (
                    "env-1".into(),
                    ("mqtt-env-sensor".into(), "environment".into()),
                ),
            ]),
            tz: chrono_tz::Asia::Shanghai,
            sent: Mutex::default(),
        }
    }

    fn choice(
        points: Option<&[&str]>,
        categories: Option<&[&str]>,
        every_s: i64,
        enabled: bool,
    ) -> Choice {
        let v = |l: Option<&[&str]>| l.map(|l| l.iter().map(|s| s.to_string()).collect());
        Choice {
            devices: None,
            profiles: None,
            categories: v(categories),
            points: v(points),
            every_s,
            enabled,
        }
    }

    #[test]
    fn an_energy_counter_goes_up_once_per_slot_of_the_clock() {
        let s = selection(vec![choice(Some(&["energy_import"]), None, 900, true)]);
        // Read every 10 s for 2 000 s from 20 s before a quarter hour: the first reading, then
        // the first of each quarter hour.
        let sent: Vec<i64> = (0..200)
            .map(|i| 1_764_123_280 + i * 10)
            .filter(|&t| s.wants(&at("em-1", "energy_import", t)))
            .collect();
        assert_eq!(sent.len(), 4, "{sent:?}");
        assert!(sent[1..].iter().all(|t| t % 900 == 0), "{sent:?}");
        // Other points are not limited.
        assert!((0..5).all(|i| s.wants(&at("em-1", "voltage_a", 1_764_123_280 + i))));
    }

    #[test]
    fn a_daily_slot_is_a_day_of_the_park_s_clock() {
        let s = selection(vec![choice(Some(&["energy_import"]), None, 86_400, true)]);
        let day = 1_764_115_200; // 2025-11-26 00:00 UTC = 08:00 in Shanghai
        let wants = |t: i64| s.wants(&at("em-1", "energy_import", t));
        assert!(wants(day));
        assert!(!wants(day + 3600), "09:00, the same local day");
        assert!(!wants(day + 15 * 3600 + 59 * 60), "23:59 local");
        assert!(wants(day + 16 * 3600 + 60), "00:01 local: a new day");
    }

    #[test]
    fn the_first_matching_choice_decides_and_unmatched_readings_go_up() {
        let s = selection(vec![
            choice(Some(&["noise_db"]), None, 0, true),
            choice(None, Some(&["environment"]), 0, false),
        ]);
        assert!(s.wants(&at("env-1", "noise_db", 1)));
        assert!(!s.wants(&at("env-1", "pm25", 1)));
        assert!(s.wants(&at("em-1", "pm25", 1)));
        assert!(
            s.wants(&at("unknown", "x", 1)),
            "unknown devices are not filtered"
        );
    }
}
