//! What happens in the hub as it happens, for whoever watches live (the console's event
//! stream): readings, device status changes and alarm transitions.
//!
//! A broadcast channel: a watcher that falls behind loses the oldest events and is told so
//! (it then reloads what it shows), and nobody watching costs the sources nothing but a
//! check.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::broadcast;

use crate::alarm::store::AlarmRow;
use crate::reading::Reading;

/// Events a slow watcher may fall behind by before it loses some. A poll or an MQTT batch is
/// one event, so this is seconds of a busy park.
pub const CAPACITY: usize = 1024;

#[derive(Debug, Clone)]
pub enum LiveEvent {
    /// One batch of readings, as a source handed it in.
    Readings(Arc<[Reading]>),
    /// A device went online or offline.
    Device {
        device: Arc<str>,
        online: bool,
        reason: Option<String>,
        ts: DateTime<Utc>,
    },
    /// An alarm changed: `event` is what happened (raised, acknowledged, cleared, …).
    Alarm { alarm: Arc<AlarmRow>, event: String },
}

pub type LiveSender = broadcast::Sender<LiveEvent>;

pub fn channel() -> LiveSender {
    broadcast::channel(CAPACITY).0
}
