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

/// The hub's live events as server-sent events: `reading`, `alarm`, `device`, and `resync`
/// for a client that fell behind; a comment every 15 s keeps the connection open.
#[utoipa::path(
    get,
    path = "/api/v1/stream",
    tag = "devices",
    responses((status = 200, description = "An endless event stream", content_type = "text/event-stream", body = String))
)]
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

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use std::sync::Arc;

    fn device_event(online: bool) -> LiveEvent {
        LiveEvent::Device {
            device: Arc::from("em-1"),
            online,
            reason: None,
            ts: chrono::Utc::now(),
        }
    }

    #[tokio::test]
    async fn a_client_that_fell_behind_is_told_to_resync_and_then_gets_what_is_new() {
        let tx = crate::live::channel();
        let rx = tx.subscribe();
        for _ in 0..crate::live::CAPACITY + 10 {
            tx.send(device_event(true)).unwrap();
        }
        let stream = events(rx, CancellationToken::new());
        futures_util::pin_mut!(stream);
        let first = format!("{:?}", stream.next().await.unwrap().unwrap());
        assert!(first.contains("resync"), "{first}");
        let next = format!("{:?}", stream.next().await.unwrap().unwrap());
        assert!(next.contains("device") && next.contains("em-1"), "{next}");
    }

    #[tokio::test]
    async fn the_stream_ends_when_the_hub_stops() {
        let tx = crate::live::channel();
        let stop = CancellationToken::new();
        let stream = events(tx.subscribe(), stop.clone());
        futures_util::pin_mut!(stream);
        stop.cancel();
        assert!(stream.next().await.is_none());
    }

    #[test]
    fn a_batch_of_readings_is_one_event_per_reading() {
        let r = |p: &str| crate::reading::Reading {
            device: Arc::from("em-1"),
            point: Arc::from(p),
            value: crate::reading::Value::Number(1.0),
            unit: None,
            ts: chrono::Utc::now(),
        };
        let batch: Arc<[crate::reading::Reading]> = Arc::from(vec![r("a"), r("b")]);
        assert_eq!(encode(&LiveEvent::Readings(batch)).len(), 2);
    }
}
