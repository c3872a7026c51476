//! `GET /metrics`: the hub's health in the Prometheus (OpenMetrics) text format, for the
//! park's monitoring. Polls, errors and round-trip times per device, MQTT messages in, queue
//! depths, push outbox backlogs, open alarms, and how long history writes take.
//!
//! The figures live where the work happens (the hub's device statistics, the writer's
//! counters, the queues' tables); each scrape copies them into a fresh registry, so nothing
//! is counted twice and the hot paths carry no metrics code.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{ApiError, Ctx, Viewer};
use crate::alarm::store::Listing;

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeviceLabel {
    device: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabel {
    device: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlarmLabels {
    severity: String,
    category: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabel {
    channel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

type Counters = Family<DeviceLabel, Counter>;
type Gauges = Family<DeviceLabel, Gauge<f64, AtomicU64>>;

fn counter(reg: &mut Registry, name: &str, help: &str, value: u64) {
    let c: Counter = Counter::default();
    c.inc_by(value);
    reg.register(name, help, c);
}

fn gauge(reg: &mut Registry, name: &str, help: &str, value: i64) {
    let g: Gauge = Gauge::default();
    g.set(value);
    reg.register(name, help, g);
}

/// The hub's health for Prometheus (viewer), outside `/api/v1`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "hub",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text", body = String))
)]
pub(super) async fn metrics(_: Viewer, State(s): State<Ctx>) -> Result<Response, ApiError> {
    let mut reg = Registry::with_prefix("parkhub");
    gauge(
        &mut reg,
        "uptime_seconds",
        "Seconds since the hub started",
        s.state.started.elapsed().as_secs() as i64,
    );

    // Per device.
    let polls = Counters::default();
    let requests = Counters::default();
    let errors = Counters::default();
    let timeouts = Counters::default();
    let exceptions = Counters::default();
    let messages = Counters::default();
    let rejected = Counters::default();
    let online = Gauges::default();
    let rtt = Gauges::default();
    let line_rejects: Family<RejectLabel, Counter> = Family::default();
    let mut mqtt_in = 0;
    for d in s.state.hub.devices() {
        for (reason, n) in &d.stats.line_rejects {
            line_rejects
                .get_or_create(&RejectLabel {
                    device: d.info.id.to_string(),
                    reason: reason.clone(),
                })
                .inc_by(*n);
        }
        let l = DeviceLabel {
            device: d.info.id.to_string(),
        };
        let st = &d.stats;
        polls.get_or_create(&l).inc_by(st.polls);
        requests.get_or_create(&l).inc_by(st.requests);
        errors.get_or_create(&l).inc_by(st.errors);
        timeouts.get_or_create(&l).inc_by(st.timeouts);
        exceptions.get_or_create(&l).inc_by(st.exceptions);
        if st.messages > 0 || st.rejected > 0 {
            messages.get_or_create(&l).inc_by(st.messages);
            rejected.get_or_create(&l).inc_by(st.rejected);
        }
        mqtt_in += st.messages;
        if let Some(on) = d.online {
            online.get_or_create(&l).set(if on { 1.0 } else { 0.0 });
        }
        if st.requests > 0 {
            rtt.get_or_create(&l).set(st.rtt_avg_ms / 1000.0);
        }
    }
    reg.register("device_polls", "Poll cycles of a device", polls);
    reg.register("device_requests", "Requests sent to a device", requests);
    reg.register("device_errors", "Failed requests of a device", errors);
    reg.register(
        "device_timeouts",
        "Requests a device did not answer in time",
        timeouts,
    );
    reg.register(
        "device_exceptions",
        "Modbus exceptions a device answered with",
        exceptions,
    );
    reg.register(
        "device_mqtt_messages",
        "MQTT messages taken in from a device",
        messages,
    );
    reg.register(
        "device_mqtt_rejected",
        "MQTT messages of a device refused (malformed)",
        rejected,
    );
    reg.register(
        "device_line_rejected",
        "What a DL/T 645 or CJ/T 188 line passed over waiting for a device's answer, by reason",
        line_rejects,
    );
    reg.register(
        "device_online",
        "1 when the device answers, 0 when it is offline",
        online,
    );
    reg.register(
        "device_rtt_seconds",
        "Average request round-trip time of a device",
        rtt,
    );
    counter(
        &mut reg,
        "mqtt_messages",
        "MQTT messages taken in from configured devices",
        mqtt_in,
    );
    counter(
        &mut reg,
        "mqtt_unrouted",
        "MQTT messages on topics no device is configured for",
        s.state.hub.unrouted_total(),
    );
    counter(
        &mut reg,
        "readings",
        "Readings taken in",
        s.state.hub.readings_total(),
    );

    // History.
    let g = &s.state.gauges;
    if let Some(queue) = g.store_queue.as_ref().and_then(|w| w.upgrade()) {
        gauge(
            &mut reg,
            "store_queue_batches",
            "Batches of readings waiting for the history writer",
            (queue.max_capacity() - queue.capacity()) as i64,
        );
    }
    if let Some(w) = &g.writer {
        counter(
            &mut reg,
            "store_written",
            "Readings written to history",
            w.written.load(Ordering::Relaxed),
        );
        counter(
            &mut reg,
            "store_write_errors",
            "Failed history writes",
            w.write_errors.load(Ordering::Relaxed),
        );
        counter(
            &mut reg,
            "store_dropped",
            "Readings given up after history kept refusing them",
            w.dropped.load(Ordering::Relaxed),
        );
        counter(
            &mut reg,
            "store_shed",
            "Readings deleted, oldest first, to keep the disk's minimum free",
            w.shed.load(Ordering::Relaxed),
        );
        gauge(
            &mut reg,
            "storage_low",
            "1 while the data directory's disk is short of room (the storage alarm)",
            i64::from(*w.storage_low.borrow()),
        );
        reg.register(
            "store_write_seconds",
            "Time to commit one batch of readings to history",
            w.write_seconds.clone(),
        );
    }

    gauge(
        &mut reg,
        "sqlite_memory_bytes",
        "Memory SQLite holds across every database (page caches, statements)",
        crate::store::sqlite_memory_used(),
    );

    // Alarms, pushes and the uplink, from their databases.
    let uplink = g.uplink.clone();
    let (open, backlog, up) = super::read(&s, move |store| {
        let open = store.list(Listing::Open, usize::MAX)?;
        let backlog = store.backlog()?;
        let up = match &uplink {
            Some(q) => Some((q.backlog()?, q.shed_total()?)),
            None => None,
        };
        Ok((open, backlog, up))
    })
    .await?;
    let alarms = Family::<AlarmLabels, Gauge>::default();
    for a in &open {
        alarms
            .get_or_create(&AlarmLabels {
                severity: a.severity.clone(),
                category: a.category.clone(),
            })
            .inc();
    }
    reg.register(
        "alarms_active",
        "Open alarms (raised, not yet closed)",
        alarms,
    );
    let outbox = Family::<ChannelLabel, Gauge>::default();
    for (channel, n) in backlog {
        outbox.get_or_create(&ChannelLabel { channel }).set(n);
    }
    reg.register(
        "push_outbox",
        "Pushes waiting for delivery, per channel",
        outbox,
    );
    if let Some((backlog, shed)) = up {
        gauge(
            &mut reg,
            "uplink_backlog_records",
            "Records waiting for the cloud",
            backlog,
        );
        counter(
            &mut reg,
            "uplink_shed_records",
            "Readings dropped oldest-first because the uplink queue was full",
            shed.max(0) as u64,
        );
    }
    if let Some(c) = &s.state.ocpp {
        let connected = c.chargers().iter().filter(|v| v.connected).count();
        gauge(
            &mut reg,
            "ocpp_chargers_connected",
            "EV chargers with an open OCPP connection",
            i64::try_from(connected).unwrap_or(i64::MAX),
        );
        let st = &c.stats;
        counter(
            &mut reg,
            "ocpp_connections",
            "OCPP connections accepted",
            st.connections.load(Ordering::Relaxed),
        );
        let refused = Family::<ReasonLabel, Counter>::default();
        for (reason, n) in [
            ("unknown_charger", &st.unknown_chargers),
            ("bad_password", &st.bad_auth),
            ("bad_subprotocol", &st.bad_subprotocol),
        ] {
            refused
                .get_or_create(&ReasonLabel {
                    reason: reason.into(),
                })
                .inc_by(n.load(Ordering::Relaxed));
        }
        reg.register(
            "ocpp_refused_connections",
            "OCPP connections refused at the handshake, by reason",
            refused,
        );
        counter(
            &mut reg,
            "ocpp_refused_frames",
            "OCPP frames refused (malformed, unknown action, bad payload)",
            st.bad_frames.load(Ordering::Relaxed),
        );
    }

    let mut body = String::new();
    encode(&mut body, &reg).map_err(|e| ApiError::Internal(format!("encoding metrics: {e}")))?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response())
}
