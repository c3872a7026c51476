//! Running under systemd (`Type=notify`): `READY=1` once config, stores and sources are up,
//! `WATCHDOG=1` only while the hub's parts answer, `RELOADING=1` for a reload, `STOPPING=1`
//! when it stops. Off systemd
//! (no `NOTIFY_SOCKET`) every call does nothing.
//!
//! The watchdog is not a timer that pings whatever happens: each ping follows a round trip
//! through the alarm engine's loop, and is withheld while the history writer holds readings
//! without making progress. A hub that is alive but stuck is then restarted by systemd.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::alarm::engine::EngineHandle;
use crate::reading::Reading;
use crate::store::WriterStats;

/// Readings waiting this long for a writer that makes no progress at all mean it is stuck.
pub const WRITER_STUCK: Duration = Duration::from_secs(60);

/// Tells systemd the hub is up, with a status line `systemctl status` shows.
pub fn ready(status: &str) {
    // With a ping: the watchdog's own first ping is a period away, and after a reload the last
    // one was before the stop.
    notify(&[
        NotifyState::Ready,
        NotifyState::Status(status),
        NotifyState::Watchdog,
    ]);
}

/// Sets the status line `systemctl status` shows.
pub fn status(status: &str) {
    notify(&[NotifyState::Status(status)]);
}

/// Tells systemd the hub is reloading its config; the next `READY=1` (from the same pid, the
/// program executed again) ends the reload.
pub fn reloading() {
    // A ping too: the stop and the new start must not run into the watchdog's limit.
    let mut states = vec![
        NotifyState::Reloading,
        NotifyState::Status("reloading the config"),
        NotifyState::Watchdog,
    ];
    // Type=notify-reload needs the time of the reload; Type=notify takes it too.
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    notify(&states);
}

/// Tells systemd the hub is stopping (the stop may take a few seconds: history is flushed).
pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

fn notify(state: &[NotifyState<'_>]) {
    // Not under systemd: NOTIFY_SOCKET is unset and this does nothing.
    if let Err(e) = sd_notify::notify(state) {
        warn!(error = %e, "cannot notify systemd");
    }
}

/// The interval systemd expects pings at (`WatchdogSec=`), if it watches this process.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}

/// Whether the history writer is stuck: readings wait in its queue while none of its counters
/// has moved for [`WRITER_STUCK`]. Pure: the caller samples.
#[derive(Debug)]
pub struct WriterWatch {
    last: u64,
    since: Instant,
}

impl WriterWatch {
    pub fn new(now: Instant) -> Self {
        Self {
            last: 0,
            since: now,
        }
    }

    /// `progress` rises with every batch the writer finishes (written, refused or dropped);
    /// `queued` is the number of batches waiting for it.
    pub fn stuck(&mut self, progress: u64, queued: usize, now: Instant) -> bool {
        if progress != self.last || queued == 0 {
            self.last = progress;
            self.since = now;
            return false;
        }
        now.duration_since(self.since) >= WRITER_STUCK
    }
}

/// What the watchdog asks.
pub struct Health {
    pub engine: EngineHandle,
    pub writer: Arc<WriterStats>,
    /// The writer's queue (weak: it must not keep the writer running at shutdown).
    pub store_queue: mpsc::WeakSender<Vec<Reading>>,
}

impl Health {
    fn writer_progress(&self) -> u64 {
        let w = &self.writer;
        w.written.load(Ordering::Relaxed)
            + w.skipped.load(Ordering::Relaxed)
            + w.dropped.load(Ordering::Relaxed)
            + w.write_errors.load(Ordering::Relaxed)
    }

    fn queued(&self) -> usize {
        self.store_queue
            .upgrade()
            .map_or(0, |tx| tx.max_capacity() - tx.capacity())
    }
}

/// Pings systemd's watchdog every half `interval` while the hub's parts answer.
pub async fn watchdog(health: Health, interval: Duration, shutdown: CancellationToken) {
    let every = interval / 2;
    // The first ping one period in: after READY=1, which follows the start at once.
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut writer = WriterWatch::new(Instant::now());
    let mut failing = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let engine = tokio::time::timeout(every, health.engine.ping()).await;
        let problem = match engine {
            Err(_) => Some("the alarm engine did not answer"),
            Ok(Err(_)) => Some("the alarm engine has stopped"),
            Ok(Ok(()))
                if writer.stuck(health.writer_progress(), health.queued(), Instant::now()) =>
            {
                Some("the history writer makes no progress")
            }
            Ok(Ok(())) => None,
        };
        match problem {
            None => {
                if failing {
                    warn!("the hub answers again; watchdog pings resume");
                }
                failing = false;
                debug!("watchdog ping");
                notify(&[NotifyState::Watchdog]);
            }
            Some(why) => {
                if !failing {
                    warn!(%why, "watchdog pings withheld: systemd will restart the hub if this lasts");
                }
                failing = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_writer_is_stuck_only_when_readings_wait_and_nothing_moves_for_a_minute() {
        let t0 = Instant::now();
        let mut w = WriterWatch::new(t0);
        assert!(!w.stuck(5, 3, t0));
        assert!(!w.stuck(5, 3, t0 + Duration::from_secs(59)));
        assert!(w.stuck(5, 3, t0 + Duration::from_secs(60)));
        // It moved: not stuck, and the minute starts again.
        assert!(!w.stuck(6, 3, t0 + Duration::from_secs(61)));
        assert!(!w.stuck(6, 3, t0 + Duration::from_secs(120)));
        assert!(w.stuck(6, 3, t0 + Duration::from_secs(121)));
        // Idle with nothing to write is not stuck, however long.
        assert!(!w.stuck(6, 0, t0 + Duration::from_secs(1000)));
        assert!(!w.stuck(6, 0, t0 + Duration::from_secs(5000)));
    }
}
