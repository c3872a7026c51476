//! Delivering a channel's pushes from the outbox: retried with back-off until the channel takes
//! them, held back for a group's window, merged into one message when the channel's rate limit
//! would otherwise be exceeded. Each channel has two lanes, urgent and not, each its own task:
//! a slow or failing lesser push never holds up a fire alarm.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::Utc;
use chrono_tz::Tz;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::channel::{self, HttpRequest, Verdict};
use super::rate::Bucket;
use super::{message, Push};
use crate::alarm::store::{AlarmStore, OutboxRow};
use crate::config::{ChannelKind, Language, Secret};
use crate::mqtt::publisher::Publisher;

/// How long one delivery attempt may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// A service that says "too many" is left alone this long.
const THROTTLE_PAUSE: Duration = Duration::from_secs(60);

/// What a lane is told.
#[derive(Debug)]
pub enum LaneMsg {
    /// A push stored in the outbox, to deliver.
    Push(OutboxRow),
    /// Pushes taken back before they went out.
    Withdraw(Vec<i64>),
}

/// Where a channel's pushes go.
pub enum Transport {
    Webhook { url: String, secret: Secret },
    Dingtalk { url: String, secret: Option<Secret> },
    Wecom { url: String },
    Feishu { url: String, secret: Option<Secret> },
    Mqtt { publisher: Publisher, topic: String },
}

/// A push channel, shared by its two lanes.
pub struct Channel {
    pub id: String,
    pub kind: ChannelKind,
    pub transport: Transport,
    pub language: Language,
    pub hub_id: String,
    pub tz: Tz,
    /// Mobiles to @-mention on urgent pushes: the channel's own and each department's people.
    pub mobiles: Vec<String>,
    pub department_mobiles: HashMap<String, Vec<String>>,
    pub http: reqwest::Client,
    pub bucket: Option<Mutex<Bucket>>,
}

impl Channel {
    fn bucket<T>(&self, f: impl FnOnce(&mut Bucket) -> T) -> Option<T> {
        self.bucket
            .as_ref()
            .map(|b| f(&mut b.lock().unwrap_or_else(PoisonError::into_inner)))
    }

    /// Sends the pushes of `rows` as one message.
    pub async fn deliver(&self, rows: &[OutboxRow], urgent: bool) -> Verdict {
        let pushes: Vec<Push> = rows
            .iter()
            .filter_map(|r| serde_json::from_str(&r.payload).ok())
            .collect();
        if pushes.len() != rows.len() {
            return Verdict::Failed("a stored push is not readable".into());
        }
        let now = Utc::now();
        let mut mobiles = Vec::new();
        if urgent {
            mobiles.extend(self.mobiles.iter().cloned());
            for p in &pushes {
                for m in self
                    .department_mobiles
                    .get(&p.department)
                    .into_iter()
                    .flatten()
                {
                    if !mobiles.contains(m) {
                        mobiles.push(m.clone());
                    }
                }
            }
        }
        // Sized for what the service takes: a digest lists whole lines and counts the rest
        // rather than being cut at the limit.
        let text = message::digest_within(
            &pushes,
            self.language,
            channel::text_budget(self.kind, &mobiles),
        );
        let request = match &self.transport {
            Transport::Webhook { url, secret } => {
                let ts = now.with_timezone(&self.tz).to_rfc3339();
                let body = channel::webhook_body(&pushes, &self.hub_id, &text, &ts);
                channel::webhook(url, secret.expose(), body, now.timestamp())
            }
            Transport::Dingtalk { url, secret } => channel::dingtalk(
                url,
                secret.as_ref().map(Secret::expose),
                &text,
                &mobiles,
                now.timestamp_millis(),
            ),
            Transport::Wecom { url } => channel::wecom(url, &text, &mobiles),
            Transport::Feishu { url, secret } => channel::feishu(
                url,
                secret.as_ref().map(Secret::expose),
                &text,
                now.timestamp(),
            ),
            Transport::Mqtt { publisher, topic } => {
                let ts = now.with_timezone(&self.tz).to_rfc3339();
                let body = channel::webhook_body(&pushes, &self.hub_id, &text, &ts);
                return match tokio::time::timeout(ATTEMPT_TIMEOUT, publisher.publish(topic, body))
                    .await
                {
                    Ok(Ok(())) => Verdict::Delivered,
                    Ok(Err(e)) => Verdict::Failed(e),
                    Err(_) => Verdict::Failed("no PUBACK within 10 s".into()),
                };
            }
        };
        self.post(request).await
    }

    async fn post(&self, req: HttpRequest) -> Verdict {
        let mut rb = self.http.post(&req.url).timeout(ATTEMPT_TIMEOUT);
        for (k, v) in req.headers {
            rb = rb.header(k, v);
        }
        match rb.body(req.body).send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let body = super::answer_of(resp).await;
                channel::judge(self.kind, status, &body)
            }
            // Without the URL: robot URLs carry their access token.
            Err(e) => Verdict::Failed(super::describe(e)),
        }
    }
}

struct Item {
    row: OutboxRow,
    due: Instant,
}

/// Delivers the pushes of one lane of `ch` until `shutdown`.
pub async fn run(
    ch: Arc<Channel>,
    urgent: bool,
    store: Arc<AlarmStore>,
    mut rx: mpsc::UnboundedReceiver<LaneMsg>,
    shutdown: CancellationToken,
) {
    let mut items: BTreeMap<i64, Item> = BTreeMap::new();
    let mut failing = false;
    loop {
        let next = items.values().map(|i| i.due).min();
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            msg = rx.recv() => match msg {
                None => break,
                Some(LaneMsg::Push(row)) => {
                    let wait = hold(&row, Utc::now());
                    items.insert(row.id, Item { due: Instant::now() + wait, row });
                }
                Some(LaneMsg::Withdraw(ids)) => {
                    for id in ids {
                        items.remove(&id);
                    }
                }
            },
            _ = sleep_until(next) => {
                send_due(&ch, urgent, &store, &mut items, &mut failing).await;
            }
        }
    }
}

/// How long a push still waits for its group's window to close: never longer than the window
/// it was given. Its stamps are wall-clock time; a clock stepped back since they were made (a
/// Pi booting with a stale clock, a push left in the outbox) held it for as many hours.
fn hold(row: &OutboxRow, now: chrono::DateTime<Utc>) -> Duration {
    let window = (row.not_before - row.created).to_std().unwrap_or_default();
    (row.not_before - now)
        .to_std()
        .unwrap_or_default()
        .min(window)
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn backoff(attempts: u32) -> Duration {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(300))
        .with_jitter()
        .without_max_times()
        .build()
        .nth(attempts.saturating_sub(1) as usize)
        .unwrap_or(Duration::from_secs(300))
}

async fn send_due(
    ch: &Channel,
    urgent: bool,
    store: &AlarmStore,
    items: &mut BTreeMap<i64, Item>,
    failing: &mut bool,
) {
    let now = Instant::now();
    let due: Vec<i64> = items
        .iter()
        .filter(|(_, i)| i.due <= now)
        .map(|(id, _)| *id)
        .collect();
    if due.is_empty() {
        return;
    }
    // Urgent pushes go one by one; the others one message per group.
    let mut batches: Vec<Vec<i64>> = Vec::new();
    let mut by_group: HashMap<i64, usize> = HashMap::new();
    for id in &due {
        let group = items[id].row.group;
        match by_group.get(&group) {
            Some(&b) if !urgent => batches[b].push(*id),
            _ => {
                by_group.insert(group, batches.len());
                batches.push(vec![*id]);
            }
        }
    }
    let allowed = ch
        .bucket(|b| b.available(urgent, now))
        .unwrap_or(usize::MAX);
    if allowed == 0 {
        let wait = ch.bucket(|b| b.wait(urgent, now)).unwrap_or_default();
        for id in &due {
            if let Some(i) = items.get_mut(id) {
                i.due = now + wait;
            }
        }
        return;
    }
    if batches.len() > allowed {
        // More messages than the quota allows: one digest of them all, never one dropped.
        debug!(channel = %ch.id, pushes = due.len(), "rate limit: merging into one message");
        batches = vec![due];
    }
    for batch in batches {
        let taken = Instant::now();
        if ch.bucket(|b| b.try_take(urgent, taken)) == Some(false) {
            break;
        }
        let rows: Vec<OutboxRow> = batch.iter().map(|id| items[id].row.clone()).collect();
        let verdict = ch.deliver(&rows, urgent).await;
        let at = Utc::now();
        let after = Instant::now();
        // The service counted the message somewhere during the attempt: for the quota it
        // counts from the end of it, so a minute later is a minute later for the service too.
        ch.bucket(|b| b.sent(taken, after));
        match verdict {
            Verdict::Delivered => {
                if *failing {
                    info!(channel = %ch.id, "channel delivers again");
                    *failing = false;
                }
                if let Err(e) = store.delivered(&batch, at) {
                    warn!(channel = %ch.id, error = %e, "could not record a delivery");
                }
                for id in &batch {
                    items.remove(id);
                }
            }
            Verdict::Throttled(e) => {
                // The service holds the channel for a while: so do we, for every lane.
                ch.bucket(|b| b.hold(after, THROTTLE_PAUSE));
                postpone(ch, store, items, &batch, &e, THROTTLE_PAUSE, failing);
            }
            Verdict::Failed(e) => {
                postpone(ch, store, items, &batch, &e, Duration::ZERO, failing);
            }
        }
    }
}

/// Records a failed attempt and schedules the next, after back-off (and at least `pause`).
fn postpone(
    ch: &Channel,
    store: &AlarmStore,
    items: &mut BTreeMap<i64, Item>,
    batch: &[i64],
    error: &str,
    pause: Duration,
    failing: &mut bool,
) {
    if !*failing {
        warn!(channel = %ch.id, error, "push not delivered; retrying with back-off");
        *failing = true;
    }
    if let Err(db) = store.failed(batch, Utc::now(), error) {
        warn!(channel = %ch.id, error = %db, "could not record a failed delivery");
    }
    let now = Instant::now();
    for id in batch {
        if let Some(i) = items.get_mut(id) {
            i.row.attempts += 1;
            i.due = now + backoff(i.row.attempts).max(pause);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(created: i64, window_s: i64) -> OutboxRow {
        let created = chrono::DateTime::from_timestamp(created, 0).unwrap();
        OutboxRow {
            id: 1,
            channel: "hook".into(),
            department: "ops".into(),
            alarm: 1,
            event: "raised".into(),
            urgent: window_s == 0,
            group: 0,
            created,
            not_before: created + chrono::Duration::seconds(window_s),
            payload: String::new(),
            attempts: 0,
        }
    }

    fn at(t: i64) -> chrono::DateTime<Utc> {
        chrono::DateTime::from_timestamp(t, 0).unwrap()
    }

    #[test]
    fn a_push_waits_out_what_is_left_of_its_window() {
        assert_eq!(hold(&row(1000, 30), at(1010)), Duration::from_secs(20));
        assert_eq!(hold(&row(1000, 30), at(1100)), Duration::ZERO);
        assert_eq!(hold(&row(1000, 0), at(1000)), Duration::ZERO);
    }

    #[test]
    fn a_clock_stepped_back_since_the_push_was_stamped_holds_it_no_longer_than_its_window() {
        // Stamped at 1000, the clock now three hours earlier.
        assert_eq!(
            hold(&row(1000, 30), at(1000 - 3 * 3600)),
            Duration::from_secs(30)
        );
        assert_eq!(hold(&row(1000, 0), at(1000 - 3 * 3600)), Duration::ZERO);
    }
}
