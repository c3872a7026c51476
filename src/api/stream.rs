//! `GET /api/v1/stream`: the hub's live events as server-sent events (`reading`, `alarm`,
//! `device`), for the console to update without reloading.
//!
//! A client that falls behind the hub's live channel gets a `resync` event and reloads what
//! it shows; the stream ends when the hub shuts down, so that no open stream delays a stop.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::broadcast::Receiver;
use tokio_util::sync::CancellationToken;

use super::view::{rfc3339, AlarmView};
use super::{Ctx, Viewer};
use crate::live::LiveEvent;

/// Proxies and browsers drop a silent connection; a comment this often keeps it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub(super) async fn stream(
    _: Viewer,
    State(s): State<Ctx>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = s.state.hub.live().subscribe();
    Sse::new(events(rx, s.state.stop.clone())).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

/// The SSE events of one live event (a batch of readings is one event per reading).
pub fn encode(ev: &LiveEvent) -> Vec<Event> {
    let event =
        |name: &str, data: serde_json::Value| Event::default().event(name).data(data.to_string());
    match ev {
        LiveEvent::Readings(batch) => batch
            .iter()
            .map(|r| {
                event(
                    "reading",
                    json!({
                        "device_id": &*r.device,
                        "point": &*r.point,
                        "value": r.value,
                        "unit": r.unit.as_deref(),
                        "ts": rfc3339(r.ts),
                    }),
                )
            })
            .collect(),
        LiveEvent::Device {
            device,
            online,
            reason,
            ts,
        } => vec![event(
            "device",
            json!({
                "device_id": &**device,
                "online": online,
                "ts": rfc3339(*ts),
                "last_error": reason,
            }),
        )],
        LiveEvent::Alarm { alarm, event: what } => {
            let mut data = json!(AlarmView::from(&**alarm));
            data["event"] = json!(what);
            vec![event("alarm", data)]
        }
    }
}

fn events(
    rx: Receiver<LiveEvent>,
    stop: CancellationToken,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let state = (rx, VecDeque::<Event>::new(), stop);
    futures_util::stream::unfold(state, |(mut rx, mut queued, stop)| async move {
        loop {
            if let Some(e) = queued.pop_front() {
                return Some((Ok(e), (rx, queued, stop)));
            }
            let next = tokio::select! {
                () = stop.cancelled() => return None,
                next = rx.recv() => next,
            };
            match next {
                Ok(ev) => queued.extend(encode(&ev)),
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "a live stream client fell behind; told to resync");
                    queued.push_back(Event::default().event("resync").data("{}"));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    })
}
