//! The uplink to the park's cloud platform (园区大脑): readings, alarm transitions and device
//! status are queued in `uplink.sqlite` as they happen and sent in batches, oldest first,
//! over HTTP (signed, gzip when it pays) or MQTT (QoS 1, the PUBACK is delivery), until the
//! receiver has each one. The queue is the store-and-forward: links down for hours, power cuts
//! and restarts lose nothing; past `max_backlog_mb` the oldest readings are shed (never alarms
//! or status), counted and logged.

pub mod queue;
pub mod record;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::Utc;
use chrono_tz::Tz;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{Config, UplinkConfig, UplinkKind};
use crate::mqtt::publisher::Publisher;
use crate::reading::Reading;
use queue::{Batch, UplinkQueue};
use record::Record;

/// How long one attempt may take: a receiver that neither answers nor fails is a failure.
/// Batches of readings waiting for the queue's writer; beyond this the hub's sources wait.
const FEED_QUEUE: usize = 64;

/// The hub's side of the uplink: what goes up is handed over here, in order.
#[derive(Debug, Clone)]
pub struct UplinkFeed {
    readings: Option<mpsc::Sender<Vec<Record>>>,
    events: mpsc::UnboundedSender<Record>,
    alarms: bool,
    status: bool,
    tz: Tz,
}

impl UplinkFeed {
    /// Readings: waits when the queue's writer is behind (back-pressure, as for history).
    pub async fn readings(&self, batch: &[Reading]) {
        if let Some(tx) = &self.readings {
            let records = batch.iter().map(|r| record::reading(r, self.tz)).collect();
            // Closed only at shutdown; what was not queued then is in history.
            let _ = tx.send(records).await;
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
                let (bytes, gzipped) = record::encode(body);
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
                        let text = resp.text().await.unwrap_or_default();
                        Err(format!(
                            "HTTP {status}: {}",
                            crate::notify::message::fit(text.trim(), 200)
                        ))
                    }
                    Err(e) => Err(e.without_url().to_string()),
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
pub fn start(
    cfg: &Config,
    tasks: &mut JoinSet<()>,
    shutdown: CancellationToken,
) -> anyhow::Result<Option<(UplinkFeed, Arc<UplinkQueue>)>> {
    let Some(u) = &cfg.uplink else {
        return Ok(None);
    };
    let path = cfg.hub.data_dir.join(queue::DB_FILE);
    let queue =
        Arc::new(UplinkQueue::open(&path).with_context(|| format!("opening {}", path.display()))?);
    let sender = sender(u, &cfg.hub.id, &shutdown)?;
    let (readings_tx, readings_rx) = mpsc::channel(FEED_QUEUE);
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let wake = Arc::new(Notify::new());
    tasks.spawn(write(
        queue.clone(),
        (readings_rx, events_rx),
        wake.clone(),
        (u.batch_max, u.max_backlog_mb),
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
            alarms: u.alarms,
            status: u.status,
            tz: cfg.hub.timezone.0,
        },
        queue,
    )))
}

fn sender(u: &UplinkConfig, hub_id: &str, shutdown: &CancellationToken) -> anyhow::Result<Sender> {
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
            let mut o = rumqttc::MqttOptions::new(format!("parkhub-{hub_id}-uplink"), host, port);
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
    (mut readings, mut events): (mpsc::Receiver<Vec<Record>>, mpsc::UnboundedReceiver<Record>),
    wake: Arc<Notify>,
    (batch_max, max_backlog_mb): (usize, u64),
    shutdown: CancellationToken,
) {
    let cap = i64::try_from(max_backlog_mb.saturating_mul(1 << 20)).unwrap_or(i64::MAX);
    let mut waiting = queue.backlog().unwrap_or(0) as usize;
    let mut since_check = 0usize;
    let mut shedding = false;
    loop {
        let (records, urgent) = tokio::select! {
            biased;
            // The sources have stopped by now: queue what they handed over, then end.
            _ = shutdown.cancelled() => {
                let mut rest: Vec<Record> = Vec::new();
                while let Ok(e) = events.try_recv() {
                    rest.push(e);
                }
                while let Ok(r) = readings.try_recv() {
                    rest.extend(r);
                }
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
                (v, true)
            }
            r = readings.recv() => match r {
                Some(r) => (r, false),
                None => break,
            },
        };
        let n = records.len();
        if let Err(e) = queue.push(&records) {
            // A full disk: what cannot be queued is lost to the cloud (history keeps it).
            warn!(error = %e, records = n, "uplink: cannot queue records");
            continue;
        }
        waiting += n;
        since_check += n;
        if urgent || waiting >= batch_max {
            waiting = 0;
            wake.notify_one();
        }
        if since_check >= 10_000 {
            since_check = 0;
            shedding = shed(&queue, cap, shedding);
        }
    }
}

/// Keeps the queue under its cap by dropping the oldest readings; returns whether it sheds.
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
    } else {
        if was {
            info!("uplink backlog back under its disk cap");
        }
        false
    }
}

fn backoff(attempt: u32) -> Duration {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(300))
        .with_jitter()
        .without_max_times()
        .build()
        .nth(attempt.saturating_sub(1) as usize)
        .unwrap_or(Duration::from_secs(300))
}

impl Uplink {
    /// Sends batches until `shutdown`: every `interval_s`, at once for alarms and status, and
    /// back to back while a backlog drains.
    pub async fn run(self, shutdown: CancellationToken) {
        let interval = Duration::from_secs(self.cfg.interval_s);
        let mut failures = 0u32;
        loop {
            let sent_at = Utc::now().to_rfc3339();
            let batch = match self
                .queue
                .next_batch(&self.hub_id, self.cfg.batch_max, &sent_at)
            {
                Ok(b) => b,
                Err(e) => {
                    warn!(error = %e, "uplink: cannot read the queue");
                    None
                }
            };
            let Some(batch) = batch else {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = self.wake.notified() => {}
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
                            _ = self.wake.notified() => {}
                            _ = tokio::time::sleep(interval) => {}
                        }
                    }
                }
                Err(e) => {
                    failures += 1;
                    let wait = backoff(failures);
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

    /// Whether a full batch waits: a backlog drains back to back.
    fn more_waiting(&self, sent: &Batch) -> bool {
        sent.len() >= self.cfg.batch_max
    }
}
