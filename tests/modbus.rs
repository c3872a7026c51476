//! Polling against a real Modbus server: the in-process tokio-modbus simulator on 127.0.0.1:0.

mod common;

use std::time::Duration;

use common::*;
use parkhub::alarm::engine::{AlarmFeed, EngineConfig, HubEvent};
use parkhub::hub::Hub;
use parkhub::modbus::bus::Line;
use parkhub::modbus::plan::min_requests_of;
use parkhub::modbus::sim::Behaviour;
use parkhub::modbus::{Endpoint, Poller};
use parkhub::profile::{DataType, Function, Kind, PointSource, ProfileRegistry, Protocol};
use parkhub::reading::Value;
use tokio_modbus::ExceptionCode;
use tokio_util::sync::CancellationToken;

fn poller(unit: u8, profile: &str, timeout_ms: u64) -> Poller {
    Poller::new(
        "m".into(),
        unit,
        bundled(profile),
        Duration::from_millis(timeout_ms),
    )
}

fn line(server: &SimServer, timeout_ms: u64) -> Line {
    let endpoint = if server.rtu {
        Endpoint::RtuOverTcp(server.addr.to_string())
    } else {
        Endpoint::Tcp(server.addr.to_string())
    };
    Line::new(
        endpoint,
        Duration::from_millis(timeout_ms),
        Duration::ZERO,
        Duration::from_secs(1),
    )
}

/// A value each point can hold exactly in its type and scale.
fn pinned_value(i: usize, dtype: Option<DataType>, kind: Kind, scale: f64) -> Value {
    if dtype == Some(DataType::Bool) {
        return Value::Bool(i % 2 == 0);
    }
    if kind == Kind::State {
        return Value::Number(1.0);
    }
    // Whole multiples of the scale, so integer registers hold them exactly.
    let steps = 1000.0 + 37.0 * i as f64;
    Value::Number(steps * scale)
}

#[tokio::test]
async fn every_bundled_profile_reads_back_exactly_what_the_meter_serves() {
    let reg = ProfileRegistry::bundled().unwrap();
    assert!(reg.len() >= 7, "bundled profiles: {}", reg.len());
    for entry in reg
        .entries()
        .filter(|e| e.profile.protocol == Protocol::Modbus)
    {
        let profile = entry.profile.clone();
        let server = SimServer::start(&[], false).await;
        server.sim.add(7, profile.clone());
        let mut expected = Vec::new();
        for (i, p) in profile.points.iter().enumerate() {
            if p.hidden {
                continue;
            }
            let (dtype, scale) = match &p.source {
                PointSource::Register(r) => (Some(r.dtype), r.scale),
                PointSource::Sum(_) | PointSource::Json(_) | PointSource::Reported(_) => {
                    (None, 0.5)
                }
            };
            let v = match (&p.source, p.kind) {
                (PointSource::Register(r), Kind::State) if r.values.is_some() => {
                    Value::Text(r.values.as_ref().unwrap().values().next().unwrap().clone())
                }
                _ => pinned_value(i, dtype, p.kind, scale),
            };
            server.sim.pin(7, &p.name, v.clone());
            expected.push((p.name.clone(), v));
        }
        let mut poller = Poller::new("m".into(), 7, profile.clone(), Duration::from_secs(2));
        let mut line = line(&server, 2000);
        let res = poller.poll(&mut line).await;
        assert!(res.errors.is_empty(), "{}: {:?}", profile.id, res.errors);
        assert_eq!(
            res.readings.len(),
            expected.len(),
            "{}: every visible point is read",
            profile.id
        );
        for (name, want) in expected {
            let got = res
                .readings
                .iter()
                .find(|r| r.point == name)
                .unwrap_or_else(|| panic!("{}: no {name}", profile.id));
            match (&got.value, &want) {
                (Value::Number(g), Value::Number(w)) => {
                    assert_close(&format!("{}.{name}", profile.id), *g, *w)
                }
                (g, w) => assert_eq!(g, w, "{}.{name}", profile.id),
            }
        }
    }
}

#[tokio::test]
async fn a_poll_costs_the_fewest_requests_the_register_map_allows() {
    let reg = ProfileRegistry::bundled().unwrap();
    let server = SimServer::start(&[], false).await;
    let mut pollers = Vec::new();
    let mut minimum = 0;
    for (unit, entry) in (1..).zip(
        reg.entries()
            .filter(|e| e.profile.protocol == Protocol::Modbus),
    ) {
        let p = entry.profile.clone();
        server.sim.add(unit, p.clone());
        minimum += min_requests_of(&p);
        pollers.push(Poller::new(
            p.id.as_str().into(),
            unit,
            p,
            Duration::from_secs(2),
        ));
    }
    let mut line = line(&server, 2000);
    let before = server.sim.requests();
    for p in &mut pollers {
        let res = p.poll(&mut line).await;
        assert!(res.errors.is_empty(), "{}: {:?}", p.profile.id, res.errors);
    }
    let sent = server.sim.requests() - before;
    assert_eq!(
        sent as usize, minimum,
        "requests the meters saw vs the minimum"
    );
    // DTSU666 spans two register areas (0x2000.. and 0x101E..): two requests, not 24.
    let dtsu = pollers
        .iter()
        .find(|p| p.profile.id == "chint-dtsu666")
        .unwrap();
    assert_eq!(dtsu.requests_per_poll(), 2);
}

#[tokio::test]
async fn a_meter_that_refuses_coalesced_reads_is_read_point_by_point() {
    let server = SimServer::start(&[(1, "chint-dtsu666")], false).await;
    server.sim.set_strict(1, true);
    server.sim.pin(1, "frequency", Value::Number(50.02));
    let mut poller = poller(1, "chint-dtsu666", 2000);
    let mut line = line(&server, 2000);
    let res = poller.poll(&mut line).await;
    assert!(res.errors.is_empty(), "{:?}", res.errors);
    let f = res
        .readings
        .iter()
        .find(|r| &*r.point == "frequency")
        .unwrap();
    assert_close("frequency", f.value.as_f64().unwrap(), 50.02);
    // From now on the gap-spanning block is read one point per request.
    assert_eq!(poller.requests_per_poll(), 24);
    let before = server.sim.requests();
    let res = poller.poll(&mut line).await;
    assert!(res.errors.is_empty());
    assert_eq!(server.sim.requests() - before, 24);
}

#[tokio::test]
async fn a_device_answering_exceptions_is_online_with_its_error_and_no_readings() {
    let server = SimServer::start(&[(4, "eastron-sdm120")], false).await;
    server
        .sim
        .set_behaviour(4, Behaviour::Exception(ExceptionCode::ServerDeviceFailure));
    let mut poller = poller(4, "eastron-sdm120", 2000);
    let mut line = line(&server, 2000);
    let res = poller.poll(&mut line).await;
    assert!(res.answered);
    assert!(res.readings.is_empty());
    assert!(
        res.errors.iter().any(|e| e.contains("device refused")),
        "{:?}",
        res.errors
    );
    // The link stays up: the next request goes out on the same connection and succeeds.
    server.sim.set_behaviour(4, Behaviour::Normal);
    let res = poller.poll(&mut line).await;
    assert!(res.errors.is_empty(), "{:?}", res.errors);
    assert_eq!(res.readings.len(), 10);
}

fn shared_line_config(addr: &str, kind: &str) -> String {
    format!(
        r#"
[hub]
id = "t"
[[bus]]
id = "line"
kind = "{kind}"
address = "{addr}"
baud = 9600
parity = "N"
timeout_ms = 200
offline_after = 2
max_backoff_s = 4
[[device]]
id = "alive"
profile = "eastron-sdm120"
bus = "line"
unit = 1
poll_interval_s = 1
[[device]]
id = "dead"
profile = "eastron-sdm630"
bus = "line"
unit = 2
poll_interval_s = 1
"#
    )
}

/// On tokio's paused clock: the schedule is exact, so the counts are too.
#[tokio::test(start_paused = true)]
async fn a_dead_unit_on_a_shared_line_never_starves_its_neighbour() {
    let server = SimServer::start(&[(1, "eastron-sdm120"), (2, "eastron-sdm630")], true).await;
    server.sim.set_behaviour(2, Behaviour::Silent);
    let dir = tempfile::tempdir().unwrap();
    let loaded = load(
        &shared_line_config(&server.addr.to_string(), "rtu-over-tcp"),
        dir.path(),
    );
    let hub = hub_for(&loaded);
    let stop = CancellationToken::new();
    let tasks = run_buses(&loaded, &hub, &stop);
    tokio::time::sleep(Duration::from_millis(10_050)).await;
    let alive = hub.device("alive").unwrap();
    let dead = hub.device("dead").unwrap();
    stop.cancel();
    for t in tasks {
        t.await.unwrap();
    }
    // The neighbour was polled on every second from 0 to 10: no cycle lost to the dead unit.
    assert_eq!(alive.stats.polls, 11);
    assert_eq!(alive.stats.errors, 0);
    assert_eq!(alive.online, Some(true));
    // The dead unit costs one request (its 200 ms timeout) per poll, not one per block: at
    // 0 s and 1 s (two misses make it offline), then with back-off at 3.2 s (+2 s) and 7.4 s
    // (+4 s, the ceiling).
    assert_eq!(dead.online, Some(false));
    assert_eq!(dead.stats.requests, 4);
    assert_eq!(dead.stats.timeouts, 4);
    assert!(
        dead.last_error
            .as_deref()
            .unwrap_or("")
            .contains("no answer within 200 ms"),
        "{:?}",
        dead.last_error
    );
}

#[tokio::test(start_paused = true)]
async fn the_bus_reconnects_after_the_server_restarts() {
    let server = SimServer::start(&[(1, "eastron-sdm120")], false).await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[hub]\nid = \"t\"\n[[bus]]\nid = \"gw\"\nkind = \"tcp\"\naddress = \"{}\"\ntimeout_ms = 300\noffline_after = 1\nmax_backoff_s = 1\n[[device]]\nid = \"m\"\nprofile = \"eastron-sdm120\"\nbus = \"gw\"\nunit = 1\npoll_interval_s = 1\n",
        server.addr
    );
    let loaded = load(&text, dir.path());
    let hub = hub_for(&loaded);
    let stop = CancellationToken::new();
    let tasks = run_buses(&loaded, &hub, &stop);
    wait_until(Duration::from_secs(5), "first readings", || {
        hub.latest("m", "voltage").is_some()
    })
    .await;

    server.stop();
    wait_until(Duration::from_secs(10), "the meter to go offline", || {
        hub.device("m").and_then(|d| d.online) == Some(false)
    })
    .await;
    let seen = hub.latest("m", "voltage").unwrap().ts;

    let _again = server.restart().await;
    wait_until(Duration::from_secs(10), "the meter to come back", || {
        hub.device("m").and_then(|d| d.online) == Some(true)
            && hub.latest("m", "voltage").is_some_and(|l| l.ts > seen)
    })
    .await;
    stop.cancel();
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn a_counter_going_backwards_is_recorded_and_flagged() {
    let server = SimServer::start(&[(1, "eastron-sdm120")], false).await;
    let mut poller = poller(1, "eastron-sdm120", 2000);
    let mut line = line(&server, 2000);
    server.sim.pin(1, "energy_import", Value::Number(1500.0));
    assert!(poller.poll(&mut line).await.counter_resets.is_empty());
    // The meter is replaced by a new one reading 3 kWh.
    server.sim.pin(1, "energy_import", Value::Number(3.0));
    let res = poller.poll(&mut line).await;
    assert_eq!(
        res.counter_resets
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>(),
        vec!["energy_import"]
    );
    let e = res
        .readings
        .iter()
        .find(|r| &*r.point == "energy_import")
        .unwrap();
    assert_eq!(
        e.value,
        Value::Number(3.0),
        "the reading is recorded as read"
    );
}

#[tokio::test]
async fn a_meter_that_refuses_a_whole_area_is_not_split_into_one_request_per_point() {
    // A DTSU666 firmware that answers only function 04 refuses every holding read.
    let server = SimServer::start(&[(1, "chint-dtsu666")], false).await;
    server
        .sim
        .set_behaviour(1, Behaviour::Exception(ExceptionCode::IllegalDataAddress));
    let mut poller = poller(1, "chint-dtsu666", 2000);
    let mut line = line(&server, 2000);
    let res = poller.poll(&mut line).await;
    assert!(res.readings.is_empty());
    assert_eq!(
        res.errors.len(),
        2,
        "one error per refused area: {:?}",
        res.errors
    );
    // Trying the points one by one proved nothing: later polls cost two requests, not 24.
    assert_eq!(poller.requests_per_poll(), 2);
    let before = server.sim.requests();
    poller.poll(&mut line).await;
    assert_eq!(server.sim.requests() - before, 2);
}

#[tokio::test(start_paused = true)]
async fn an_area_the_meter_ignores_does_not_hide_the_others() {
    // A meter without the 0x101E energy registers that stays silent instead of refusing.
    let server = SimServer::start(&[(1, "chint-dtsu666")], false).await;
    server.sim.ignore(1, Function::Holding, 0x1000..0x1100);
    let mut poller = poller(1, "chint-dtsu666", 200);
    let mut line = line(&server, 200);
    let mut read = std::collections::BTreeSet::new();
    for _ in 0..2 {
        let res = poller.poll(&mut line).await;
        read.extend(res.readings.iter().map(|r| r.point.to_string()));
    }
    // Polls start at a different area each time: the instantaneous values come through.
    assert!(
        read.contains("voltage_a") && read.contains("frequency"),
        "{read:?}"
    );
    assert!(!read.contains("energy_import"));
}

#[tokio::test(start_paused = true)]
async fn a_gateway_reporting_no_answer_makes_the_device_offline() {
    let server = SimServer::start(&[(1, "eastron-sdm120"), (2, "eastron-sdm630")], false).await;
    server
        .sim
        .set_behaviour(2, Behaviour::Exception(ExceptionCode::GatewayTargetDevice));
    let dir = tempfile::tempdir().unwrap();
    let loaded = load(
        &shared_line_config(&server.addr.to_string(), "tcp")
            .replace("baud = 9600\nparity = \"N\"\n", ""),
        dir.path(),
    );
    let hub = hub_for(&loaded);
    let stop = CancellationToken::new();
    let tasks = run_buses(&loaded, &hub, &stop);
    tokio::time::sleep(Duration::from_millis(10_050)).await;
    stop.cancel();
    for t in tasks {
        t.await.unwrap();
    }
    let dead = hub.device("dead").unwrap();
    assert_eq!(dead.online, Some(false));
    // Like a silent unit: one request per poll, on the back-off schedule.
    assert_eq!(dead.stats.requests, 4);
    assert!(
        dead.last_error
            .as_deref()
            .unwrap_or("")
            .contains("gateway reached no device"),
        "{:?}",
        dead.last_error
    );
    assert_eq!(hub.device("alive").unwrap().stats.polls, 11);
}

#[tokio::test(start_paused = true)]
async fn a_server_that_accepts_and_drops_connections_is_retried_with_back_off() {
    // A busy serial server: accepts, then closes at once.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(sock);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[hub]\nid = \"t\"\n[[bus]]\nid = \"dtu\"\nkind = \"rtu-over-tcp\"\naddress = \"{addr}\"\ntimeout_ms = 500\nmax_backoff_s = 8\n[[device]]\nid = \"m\"\nprofile = \"eastron-sdm120\"\nbus = \"dtu\"\nunit = 1\npoll_interval_s = 1\n"
    );
    let loaded = load(&text, dir.path());
    let hub = hub_for(&loaded);
    let stop = CancellationToken::new();
    let tasks = run_buses(&loaded, &hub, &stop);
    tokio::time::sleep(Duration::from_secs(60)).await;
    stop.cancel();
    for t in tasks {
        t.await.unwrap();
    }
    let n = accepted.load(std::sync::atomic::Ordering::SeqCst);
    // Sixty polls, but connections only as the back-off allows (0.5 s doubling to 8 s).
    assert!((3..=14).contains(&n), "connections in 60 s: {n}");
    assert_eq!(hub.device("m").unwrap().online, Some(false));
}

/// The hub's alarm events of a run of `loaded`'s buses for `secs` seconds (paused clock).
async fn alarm_events(loaded: &parkhub::config::Loaded, secs: u64) -> Vec<HubEvent> {
    let cfg = EngineConfig::from_loaded(loaded);
    let (feed, mut rx) = AlarmFeed::new(&cfg);
    let plain = hub_for(loaded);
    let devices = plain.devices().into_iter().map(|d| d.info).collect();
    let hub = Hub::with_feeds(devices, None, Some(feed), None);
    let stop = CancellationToken::new();
    let tasks = run_buses(loaded, &hub, &stop);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.cancel();
    for t in tasks {
        t.await.unwrap();
    }
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    events
}

fn status(events: &[HubEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            HubEvent::Bus { id, online } => Some(format!("bus {id} {online}")),
            HubEvent::Device { id, online, .. } => Some(format!("device {id} {online}")),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_silent_line_is_offline_before_its_devices_so_that_it_explains_them() {
    let server = SimServer::start(&[(1, "eastron-sdm120"), (2, "eastron-sdm630")], true).await;
    server.sim.set_behaviour(1, Behaviour::Silent);
    server.sim.set_behaviour(2, Behaviour::Silent);
    let dir = tempfile::tempdir().unwrap();
    let loaded = load(
        &shared_line_config(&server.addr.to_string(), "rtu-over-tcp"),
        dir.path(),
    );
    let got = status(&alarm_events(&loaded, 10).await);
    assert_eq!(
        got,
        vec!["bus line false", "device alive false", "device dead false"],
        "the line's verdict comes first"
    );
}

#[tokio::test(start_paused = true)]
async fn one_dead_unit_does_not_make_its_line_offline() {
    let server = SimServer::start(&[(1, "eastron-sdm120"), (2, "eastron-sdm630")], true).await;
    server.sim.set_behaviour(2, Behaviour::Silent);
    let dir = tempfile::tempdir().unwrap();
    let loaded = load(
        &shared_line_config(&server.addr.to_string(), "rtu-over-tcp"),
        dir.path(),
    );
    let got = status(&alarm_events(&loaded, 10).await);
    assert_eq!(
        got,
        vec!["bus line true", "device alive true", "device dead false"]
    );
}

#[tokio::test(start_paused = true)]
async fn dead_meters_on_a_live_line_never_make_the_line_flap() {
    let server = SimServer::start(
        &[
            (1, "eastron-sdm120"),
            (2, "eastron-sdm120"),
            (3, "eastron-sdm120"),
            (4, "eastron-sdm120"),
        ],
        true,
    )
    .await;
    server.sim.set_behaviour(1, Behaviour::Silent);
    server.sim.set_behaviour(2, Behaviour::Silent);
    let dir = tempfile::tempdir().unwrap();
    let mut text = format!(
        "[hub]\nid = \"t\"\n[[bus]]\nid = \"line\"\nkind = \"rtu-over-tcp\"\naddress = \"{}\"\ntimeout_ms = 200\noffline_after = 2\nmax_backoff_s = 60\n",
        server.addr
    );
    for unit in 1..=4 {
        text += &format!(
            "[[device]]\nid = \"m{unit}\"\nprofile = \"eastron-sdm120\"\nbus = \"line\"\nunit = {unit}\npoll_interval_s = 1\n"
        );
    }
    let loaded = load(&text, dir.path());
    let got = status(&alarm_events(&loaded, 600).await);
    let bus: Vec<&String> = got.iter().filter(|e| e.starts_with("bus")).collect();
    assert_eq!(bus, vec!["bus line true"], "{got:?}");
    assert!(got.contains(&"device m1 false".to_string()));
    assert!(got.contains(&"device m2 false".to_string()));
}
