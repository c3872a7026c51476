//! The Modbus e-bike charging station (`modbus-ebike-station`): its ten port blocks as the
//! loader expands them, and a whole running hub polling a simulated station behind a serial
//! server (RTU over TCP) — per-port readings, fire and charger alarms, history, comm loss.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use parkhub::alarm::store::{AlarmRow, Listing};
use parkhub::alarm::AlarmState;
use parkhub::app::App;
use parkhub::config::{Diagnostic, Document};
use parkhub::modbus::bus::Line;
use parkhub::modbus::plan::min_requests_of;
use parkhub::modbus::sim::Behaviour;
use parkhub::modbus::{Endpoint, Poller};
use parkhub::profile::{parse_profile, Kind, Profile};
use parkhub::reading::Value;
use parkhub::store::History;

const PROFILE: &str = "modbus-ebike-station";
const STATION: &str = "ebike-b3";
const STATION_UNIT: u8 = 1;
const LIMIT: Duration = Duration::from_secs(20);

fn station_profile() -> Arc<Profile> {
    bundled(PROFILE)
}

fn register_of(p: &Profile, point: &str) -> u16 {
    p.point(point)
        .unwrap_or_else(|| panic!("no point {point}"))
        .register()
        .unwrap_or_else(|| panic!("{point} is not a register"))
        .address
}

// --- the profile ---

#[test]
fn the_bundled_station_has_ten_ports_sixteen_registers_apart() {
    let p = station_profile();
    assert_eq!(p.category, "charger");
    assert_eq!(
        (p.serial.baud, p.serial.data_bits, p.serial.stop_bits),
        (9600, 8, 1)
    );
    for n in 1..=10u16 {
        let base = 0x0100 + (n - 1) * 16;
        for (inner, offset) in [
            ("state", 0),
            ("power_w", 1),
            ("temperature", 2),
            ("fault", 3),
            ("energy", 4),
            ("remaining_min", 6),
        ] {
            assert_eq!(
                register_of(&p, &format!("port{n}.{inner}")),
                base + offset,
                "port{n}.{inner}"
            );
        }
    }
    assert!(p.point("port11.state").is_none(), "ten ports, not eleven");
    assert!(p.point("port0.state").is_none(), "ports count from 1");
    assert_eq!(p.points.len(), 4 + 10 * 6);
    assert_eq!(p.point("port7.energy").unwrap().kind, Kind::Counter);
    assert_eq!(p.point("total_energy").unwrap().kind, Kind::Counter);
    assert_eq!(p.point("port7.state").unwrap().kind, Kind::State);
    assert_eq!(
        p.point("port7.temperature").unwrap().unit.as_deref(),
        Some("°C")
    );
    // The station block, then the ten port blocks in two reads of at most 125 registers.
    assert_eq!(min_requests_of(&p), 3);
}

#[test]
fn the_station_names_the_same_points_as_its_mqtt_sibling() {
    let modbus = station_profile();
    let mqtt = bundled("mqtt-ebike-station");
    for name in ["smoke", "port*.state", "port*.temperature"] {
        assert!(modbus.alarm_point(name).is_some(), "modbus lacks {name}");
        assert!(mqtt.alarm_point(name).is_some(), "mqtt lacks {name}");
    }
    for inner in ["state", "power_w", "temperature", "fault"] {
        assert!(
            modbus.point(&format!("port10.{inner}")).is_some(),
            "{inner}"
        );
    }
    for id in ["smoke", "port_overheat", "port_fault", "offline"] {
        assert!(
            modbus.alarms.iter().any(|a| a.id == id),
            "modbus lacks alarm {id}"
        );
        assert!(
            mqtt.alarms.iter().any(|a| a.id == id),
            "mqtt lacks alarm {id}"
        );
    }
    for id in ["smoke", "overheat", "port_overheat"] {
        let a = modbus.alarms.iter().find(|a| a.id == id).unwrap();
        assert_eq!(
            (a.severity.as_str(), a.category.as_str(), a.latched),
            ("critical", "fire", true),
            "{id}"
        );
    }
}

#[test]
fn profiles_show_lists_the_tenth_ports_temperature_at_its_register() {
    let out = Command::new(env!("CARGO_BIN_EXE_parkhub"))
        .env_remove("RUST_LOG")
        .args(["profiles", "show", PROFILE])
        .output()
        .expect("parkhub runs");
    let show = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{show}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(show.contains("9600 baud 8N1, unit 1"), "{show}");
    assert!(
        show.lines().any(|l| l.starts_with("port10.temperature")
            && l.contains("0x0192")
            && l.contains("i16")
            && l.contains("°C")),
        "{show}"
    );
    assert!(
        show.lines()
            .any(|l| l.contains("port_overheat") && l.contains("port*.temperature")),
        "{show}"
    );
}

#[tokio::test]
async fn every_station_point_reads_back_exactly_what_the_station_serves_in_three_requests() {
    let p = station_profile();
    let server = SimServer::start(&[(STATION_UNIT, PROFILE)], true).await;
    let mut served = Vec::new();
    for (i, pt) in p.points.iter().enumerate() {
        // Values each register holds exactly, different for every point.
        let x = i as f64;
        let v = match pt.name.rsplit('.').next().unwrap() {
            "smoke" => Value::Bool(true),
            "state" => Value::Text(["idle", "charging", "full", "fault"][i % 4].into()),
            "fault" => {
                Value::Text(["overload", "short_circuit", "leakage", "relay_stuck"][i % 4].into())
            }
            "temperature" => Value::Number(-5.0 + 0.7 * x),
            "energy" | "total_energy" => Value::Number(1000.0 + 0.13 * x),
            _ => Value::Number(10.0 + x),
        };
        server.sim.pin(STATION_UNIT, &pt.name, v.clone());
        served.push((pt.name.clone(), v));
    }
    let mut poller = Poller::new(
        STATION.into(),
        STATION_UNIT,
        p.clone(),
        Duration::from_secs(2),
    );
    let mut line = Line::new(
        Endpoint::RtuOverTcp(server.addr.to_string()),
        Duration::from_secs(2),
        Duration::ZERO,
        Duration::from_secs(1),
    );
    let before = server.sim.requests();
    let res = poller.poll(&mut line).await;
    assert!(res.errors.is_empty(), "{:?}", res.errors);
    assert_eq!(server.sim.requests() - before, 3);
    assert_eq!(res.readings.len(), served.len());
    for (name, want) in served {
        let got = &res.readings.iter().find(|r| r.point == name).unwrap().value;
        match (got, &want) {
            (Value::Number(g), Value::Number(w)) => assert_close(&name, *g, *w),
            (g, w) => assert_eq!(g, w, "{name}"),
        }
    }
}

/// The errors of a profile text, as `parkhub check` would print them.
fn profile_errors(text: &str) -> Vec<Diagnostic> {
    let (doc, syntax) = Document::parse("bad-station.toml", text);
    assert!(syntax.is_empty(), "{syntax:?}");
    match parse_profile(&doc) {
        Ok(p) => panic!("profile {} loaded, but it is wrong", p.id),
        Err(d) => d,
    }
}

const BAD_STATION: &str = r#"id = "bad-station"
vendor = "generic"
model = "test"
category = "charger"
protocol = "modbus"

[[ports]]
prefix = "port"
COUNT
stride = STRIDE

[[ports.point]]
name = "state"
register = 0xFF00
values = { "0" = "idle", "3" = "fault" }

[[ports.point]]
name = "energy"
register = 0xFF04
type = "u32"
kind = "counter"
"#;

fn bad_station(count: &str, stride: &str) -> String {
    BAD_STATION
        .replace("COUNT", count)
        .replace("STRIDE", stride)
}

#[test]
fn ports_that_would_run_past_register_65535_are_an_error_at_the_stride() {
    // Port 1 at 0xFF00; a stride of 0x80 puts port 3 at 0x10000.
    let errs = profile_errors(&bad_station("count = 10", "0x80"));
    let e = errs
        .iter()
        .find(|d| d.key == "ports[0].stride")
        .unwrap_or_else(|| panic!("no error at the stride: {errs:?}"));
    assert_eq!(e.file, "bad-station.toml");
    assert_eq!(e.line, 10, "{e}");
    assert!(
        e.message.contains("port 3 of 10") && e.message.contains("65535"),
        "{e}"
    );
}

#[test]
fn a_last_port_whose_counter_straddles_register_65535_is_an_error_too() {
    // Port 2 at 0xFFFB: its state fits, its two-register energy at 0xFFFF does not.
    let errs = profile_errors(&bad_station("count = 2", "0xFB"));
    assert!(
        errs.iter()
            .any(|d| d.key == "ports[0].stride" && d.message.contains("port 2 of 2")),
        "{errs:?}"
    );
}

#[test]
fn modbus_ports_without_a_count_are_an_error_located_at_their_block() {
    let errs = profile_errors(&bad_station("", "16"));
    let e = errs
        .iter()
        .find(|d| d.key == "ports[0].count")
        .unwrap_or_else(|| panic!("no error about the count: {errs:?}"));
    assert!(e.message.contains("count"), "{e}");
    assert!(
        (7..=10).contains(&e.line),
        "located in the [[ports]] block: {e}"
    );
}

/// A stride shorter than a port's block (here 4, where a block spans 0xFF00..0xFF06) makes
/// port 1's energy and port 2's state the same register: both would read garbage.
#[test]
fn ports_whose_blocks_overlap_are_an_error_at_the_stride() {
    let errs = profile_errors(
        &bad_station("count = 3", "4")
            .replace("0xFF00", "0x0100")
            .replace("0xFF04", "0x0104"),
    );
    assert!(errs.iter().any(|d| d.key == "ports[0].stride"), "{errs:?}");
}

#[test]
fn modbus_ports_need_a_stride_and_a_count_in_range() {
    let errs = profile_errors(&bad_station("count = 0", "0"));
    let keys: Vec<&str> = errs.iter().map(|d| d.key.as_str()).collect();
    assert!(keys.contains(&"ports[0].count"), "{errs:?}");
    assert!(keys.contains(&"ports[0].stride"), "{errs:?}");
}

// --- a whole hub polling a simulated station ---

/// The value that raised an alarm, as stored with it.
fn raised_by(a: &AlarmRow) -> serde_json::Value {
    serde_json::from_str(a.value.as_deref().expect("the alarm keeps its value")).unwrap()
}

fn config(dir: &Path, line: std::net::SocketAddr) -> String {
    format!(
        r#"[hub]
id = "hz-test"
data_dir = "{data}"
timezone = "Asia/Shanghai"
[api]
listen = "127.0.0.1:0"
[[bus]]
id = "b3-serial-server"
kind = "rtu-over-tcp"
address = "{line}"
timeout_ms = 300
offline_after = 2
[[device]]
id = "{STATION}"
name = "3号楼北侧车棚充电站"
profile = "{PROFILE}"
bus = "b3-serial-server"
unit = {STATION_UNIT}
poll_interval_s = 1
location = {{ building = "3号楼", zone = "北侧车棚" }}
[[device]]
id = "em-b3"
name = "3号楼总表"
profile = "chint-dtsu666"
bus = "b3-serial-server"
unit = 2
poll_interval_s = 1
"#,
        data = dir.display(),
    )
}

/// A station (unit 1) and the building's meter (unit 2) behind one serial server, and a hub
/// polling them with history, alarms and the API.
struct Park {
    app: Option<App>,
    sim: SimServer,
    _dir: tempfile::TempDir,
}

impl Park {
    async fn start() -> Self {
        let sim = SimServer::start(&[(STATION_UNIT, PROFILE), (2, "chint-dtsu666")], true).await;
        // A quiet evening: every port idle and cool, no fault, no smoke.
        for n in 1..=10 {
            sim.sim.pin(
                STATION_UNIT,
                &format!("port{n}.state"),
                Value::Text("idle".into()),
            );
            sim.sim.pin(
                STATION_UNIT,
                &format!("port{n}.power_w"),
                Value::Number(0.0),
            );
            sim.sim.pin(
                STATION_UNIT,
                &format!("port{n}.temperature"),
                Value::Number(26.0),
            );
        }
        sim.sim.pin(STATION_UNIT, "smoke", Value::Bool(false));
        sim.sim
            .pin(STATION_UNIT, "temperature", Value::Number(27.5));
        let dir = tempfile::tempdir().unwrap();
        let loaded = load(&config(dir.path(), sim.addr), dir.path());
        let app = App::start(&loaded).await.expect("the hub starts");
        Self {
            app: Some(app),
            sim,
            _dir: dir,
        }
    }

    fn app(&self) -> &App {
        self.app.as_ref().unwrap()
    }

    fn pin(&self, point: &str, value: Value) {
        self.sim.sim.pin(STATION_UNIT, point, value);
    }

    fn latest(&self, point: &str) -> Option<Value> {
        self.app().hub.latest(STATION, point).map(|l| l.value)
    }

    /// Waits until the hub's latest reading of `point` is `want`.
    async fn wait_reading(&self, point: &str, want: Value) {
        wait_until(LIMIT, &format!("{point} = {want:?}"), || {
            self.latest(point).as_ref() == Some(&want)
        })
        .await;
    }

    /// The station's alarms of `rule` (on `point`, for rules on a point), newest first.
    fn alarms(&self, rule: &str, point: Option<&str>) -> Vec<AlarmRow> {
        self.app()
            .alarms
            .list(Listing::All, 1000)
            .unwrap()
            .into_iter()
            .filter(|a| {
                a.key.scope.id().as_ref() == STATION
                    && &*a.key.rule == rule
                    && a.key.point.as_deref() == point
            })
            .collect()
    }

    async fn wait_alarm(&self, rule: &str, point: Option<&str>) -> AlarmRow {
        let what = format!("alarm {rule} on {point:?}");
        wait_until(LIMIT, &what, || !self.alarms(rule, point).is_empty()).await;
        self.alarms(rule, point).remove(0)
    }

    /// The stored history of one of the station's points, oldest first.
    async fn history(&self, point: &str) -> Vec<f64> {
        self.app().writer.flush().await.unwrap();
        let h = History::open(&self.app().db_path, chrono_tz::Asia::Shanghai).unwrap();
        let Some(s) = h.series(STATION, point).unwrap() else {
            return Vec::new();
        };
        h.raw(&s, 0, i64::MAX / 2)
            .unwrap()
            .into_iter()
            .map(|(_, v)| v)
            .collect()
    }

    /// The stored changes of a text point's state, oldest first.
    async fn states(&self, point: &str) -> Vec<String> {
        self.app().writer.flush().await.unwrap();
        let h = History::open(&self.app().db_path, chrono_tz::Asia::Shanghai).unwrap();
        let Some(s) = h.series(STATION, point).unwrap() else {
            return Vec::new();
        };
        h.states(&s, 0, i64::MAX / 2)
            .unwrap()
            .into_iter()
            .map(|(_, v)| v)
            .collect()
    }

    async fn stop(mut self) {
        if let Some(app) = self.app.take() {
            app.stop(Duration::from_secs(5)).await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_reads_each_ports_state_power_temperature_and_fault_label() {
    let park = Park::start().await;
    park.pin("port1.state", Value::Text("charging".into()));
    park.pin("port1.power_w", Value::Number(185.0));
    park.pin("port1.temperature", Value::Number(38.5));
    park.pin("port1.fault", Value::Text("none".into()));
    park.pin("port1.energy", Value::Number(123.45));
    park.pin("port1.remaining_min", Value::Number(95.0));
    park.pin("port2.state", Value::Text("full".into()));
    park.pin("port2.power_w", Value::Number(2.0));
    park.pin("port4.state", Value::Text("idle".into()));
    park.pin("port4.fault", Value::Text("no_load".into()));
    park.pin("port10.temperature", Value::Number(-3.5));
    park.pin("total_energy", Value::Number(5321.07));

    park.wait_reading("port1.state", Value::Text("charging".into()))
        .await;
    park.wait_reading("port1.power_w", Value::Number(185.0))
        .await;
    park.wait_reading("port1.temperature", Value::Number(38.5))
        .await;
    park.wait_reading("port1.fault", Value::Text("none".into()))
        .await;
    park.wait_reading("port1.remaining_min", Value::Number(95.0))
        .await;
    park.wait_reading("port2.state", Value::Text("full".into()))
        .await;
    park.wait_reading("port2.power_w", Value::Number(2.0)).await;
    park.wait_reading("port4.fault", Value::Text("no_load".into()))
        .await;
    park.wait_reading("port10.temperature", Value::Number(-3.5))
        .await;
    park.wait_reading("smoke", Value::Bool(false)).await;
    for (point, want) in [("port1.energy", 123.45), ("total_energy", 5321.07)] {
        let got = park.latest(point).and_then(|v| v.as_f64());
        assert_close(point, got.unwrap_or(f64::NAN), want);
    }
    let latest = park.app().hub.latest(STATION, "port1.power_w").unwrap();
    assert_eq!(latest.unit.as_deref(), Some("W"));

    // Every point of every port arrives, and nothing else.
    let device = park.app().hub.device(STATION).unwrap();
    assert_eq!(device.online, Some(true));
    assert_eq!(
        device.points.len(),
        4 + 10 * 6,
        "{:?}",
        device.points.keys()
    );
    // Idle ports, a full one and a no-load cut-off are not faults.
    assert!(
        park.app()
            .alarms
            .list(Listing::All, 100)
            .unwrap()
            .iter()
            .all(|a| a.key.scope.id().as_ref() != STATION),
        "a quiet station raises nothing"
    );
    park.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overheating_port_raises_a_latched_critical_fire_alarm_naming_that_port() {
    let park = Park::start().await;
    park.wait_reading("port3.temperature", Value::Number(26.0))
        .await;
    park.pin("port3.state", Value::Text("charging".into()));
    park.pin("port3.temperature", Value::Number(72.4));

    let a = park
        .wait_alarm("port_overheat", Some("port3.temperature"))
        .await;
    assert_eq!(a.severity, "critical");
    assert_eq!(a.category, "fire");
    assert!(a.latched);
    assert_eq!(a.state, AlarmState::Unacked);
    assert_eq!(a.message, "充电口温度过高");
    assert_eq!(raised_by(&a), serde_json::json!(72.4));
    // Only port 3 is named; the other ports stay quiet.
    let overheats: Vec<_> = park
        .app()
        .alarms
        .list(Listing::All, 100)
        .unwrap()
        .into_iter()
        .filter(|a| &*a.key.rule == "port_overheat")
        .map(|a| a.key.point)
        .collect();
    assert_eq!(overheats, vec![Some("port3.temperature".into())]);

    // The port cools below the deadband: the alarm's condition goes, the alarm does not.
    park.pin("port3.temperature", Value::Number(31.0));
    park.wait_reading("port3.temperature", Value::Number(31.0))
        .await;
    wait_until(LIMIT, "the condition to clear", || {
        !park.alarms("port_overheat", Some("port3.temperature"))[0].condition
    })
    .await;
    let a = park.alarms("port_overheat", Some("port3.temperature"))[0].clone();
    assert_eq!(a.state, AlarmState::Unacked, "latched until acknowledged");

    // Someone acknowledges it: only now is it over.
    let acked = park
        .app()
        .engine
        .ack(a.id, "duty", Some("已断电检查，电池鼓包，已移除".into()))
        .await
        .unwrap();
    assert_eq!(acked.state, AlarmState::Normal);
    assert_eq!(acked.acked_by.as_deref(), Some("duty"));
    park.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_at_the_station_raises_a_latched_critical_fire_alarm() {
    let park = Park::start().await;
    park.wait_reading("smoke", Value::Bool(false)).await;
    park.pin("smoke", Value::Bool(true));
    let a = park.wait_alarm("smoke", Some("smoke")).await;
    assert_eq!(
        (a.severity.as_str(), a.category.as_str()),
        ("critical", "fire")
    );
    assert!(a.latched);
    assert_eq!(a.message, "充电站烟雾报警");

    // Smoke gone before anyone came: still there for the guard to see.
    park.pin("smoke", Value::Bool(false));
    park.wait_reading("smoke", Value::Bool(false)).await;
    wait_until(LIMIT, "the condition to clear", || {
        !park.alarms("smoke", Some("smoke"))[0].condition
    })
    .await;
    assert_eq!(
        park.alarms("smoke", Some("smoke"))[0].state,
        AlarmState::Unacked
    );
    // Smoke is a 0/1 in history, so the fire's time line is there too.
    let stored = park.history("smoke").await;
    assert!(stored.contains(&1.0) && stored.contains(&0.0), "{stored:?}");
    park.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overheating_cabinet_raises_a_critical_fire_alarm() {
    let park = Park::start().await;
    park.wait_reading("temperature", Value::Number(27.5)).await;
    park.pin("temperature", Value::Number(68.0));
    let a = park.wait_alarm("overheat", Some("temperature")).await;
    assert_eq!(
        (a.severity.as_str(), a.category.as_str()),
        ("critical", "fire")
    );
    assert!(a.latched);
    park.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_fault_code_raises_a_major_charger_alarm_that_keeps_the_fault_label() {
    let park = Park::start().await;
    park.wait_reading("port5.fault", Value::Text("none".into()))
        .await;
    // A no-load cut-off (charger unplugged) is recorded, not alarmed.
    park.pin("port6.fault", Value::Text("no_load".into()));
    park.pin("port5.state", Value::Text("fault".into()));
    park.pin("port5.fault", Value::Text("overload".into()));

    let a = park.wait_alarm("port_fault", Some("port5.fault")).await;
    assert_eq!(
        (a.severity.as_str(), a.category.as_str()),
        ("major", "charger")
    );
    assert!(!a.latched);
    assert_eq!(a.message, "充电口故障");
    assert_eq!(raised_by(&a), "overload", "the label is kept");
    park.wait_reading("port5.state", Value::Text("fault".into()))
        .await;
    park.wait_reading("port6.fault", Value::Text("no_load".into()))
        .await;
    assert!(park.alarms("port_fault", Some("port6.fault")).is_empty());

    // A code the map does not know is a fault too, kept as its number.
    park.pin("port8.fault", Value::Number(12.0));
    let a = park.wait_alarm("port_fault", Some("port8.fault")).await;
    assert_eq!(raised_by(&a).as_f64(), Some(12.0));

    // The fault cleared (a guard reset the port): the alarm returns, unacknowledged.
    park.pin("port5.fault", Value::Text("none".into()));
    wait_until(LIMIT, "port 5's fault to clear", || {
        park.alarms("port_fault", Some("port5.fault"))[0].state == AlarmState::RtnUnacked
    })
    .await;
    park.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stations_own_over_temperature_trip_is_a_latched_critical_fire_alarm() {
    let park = Park::start().await;
    park.wait_reading("port4.fault", Value::Text("none".into()))
        .await;
    // Tripped at 55 °C: below the temperature alarm's limit, still a fire alarm.
    park.pin("port4.temperature", Value::Number(55.0));
    park.pin("port4.fault", Value::Text("over_temperature".into()));
    let a = park
        .wait_alarm("port_overheat_trip", Some("port4.fault"))
        .await;
    assert_eq!(
        (a.severity.as_str(), a.category.as_str()),
        ("critical", "fire")
    );
    assert!(a.latched);
    assert!(
        park.alarms("port_fault", Some("port4.fault")).is_empty(),
        "not also a plain port fault"
    );
    assert!(park
        .alarms("port_overheat", Some("port4.temperature"))
        .is_empty());
    park.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ports_readings_are_kept_in_history() {
    let park = Park::start().await;
    park.pin("port2.state", Value::Text("charging".into()));
    park.pin("port2.power_w", Value::Number(210.0));
    park.pin("port2.energy", Value::Number(40.5));
    park.wait_reading("port2.power_w", Value::Number(210.0))
        .await;
    park.wait_reading("port2.state", Value::Text("charging".into()))
        .await;
    // History keeps one reading per second and point: let a second pass before the change, or
    // the next poll's reading could replace this one.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Full-charge cut-off: the power drops to a trickle.
    park.pin("port2.state", Value::Text("full".into()));
    park.pin("port2.power_w", Value::Number(0.0));
    park.pin("port2.energy", Value::Number(41.2));
    park.wait_reading("port2.state", Value::Text("full".into()))
        .await;
    park.wait_reading("port2.power_w", Value::Number(0.0)).await;

    let power = park.history("port2.power_w").await;
    let cut = power.iter().position(|w| *w == 0.0);
    assert!(
        power.contains(&210.0) && cut.is_some_and(|i| power[..i].contains(&210.0)),
        "{power:?}"
    );
    let energy = park.history("port2.energy").await;
    assert!(
        energy.contains(&40.5) && energy.contains(&41.2),
        "{energy:?}"
    );
    let temperature = park.history("port9.temperature").await;
    assert!(temperature.contains(&26.0), "{temperature:?}");
    park.stop().await;
}

/// An enumeration's label — `full` (the full-charge cut-off), `short_circuit` — is kept in
/// history as the state's changes, with the time each began.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_port_and_a_fault_label_are_stored_in_history() {
    let park = Park::start().await;
    park.pin("port2.state", Value::Text("full".into()));
    park.pin("port5.fault", Value::Text("short_circuit".into()));
    park.wait_reading("port2.state", Value::Text("full".into()))
        .await;
    park.wait_reading("port5.fault", Value::Text("short_circuit".into()))
        .await;
    assert_eq!(
        park.states("port2.state").await.last().map(String::as_str),
        Some("full")
    );
    let faults = park.states("port5.fault").await;
    assert_eq!(
        faults.last().map(String::as_str),
        Some("short_circuit"),
        "{faults:?}"
    );
    // Polled again and again, a state is stored once.
    let before = faults.len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(park.states("port5.fault").await.len(), before);
    park.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_station_that_stops_answering_raises_the_offline_comm_alarm() {
    let park = Park::start().await;
    park.wait_reading("smoke", Value::Bool(false)).await;
    assert_eq!(park.app().hub.device(STATION).unwrap().online, Some(true));
    park.sim.sim.set_behaviour(STATION_UNIT, Behaviour::Silent);

    let a = park.wait_alarm("offline", None).await;
    assert_eq!(
        (a.severity.as_str(), a.category.as_str()),
        ("major", "comm")
    );
    assert_eq!(a.message, "充电站离线");
    // The serial server and the meter beside the station still answer: the line is fine, so
    // nothing explains the station's silence away.
    assert!(!a.suppressed, "{a:?}");
    assert_eq!(park.app().hub.device(STATION).unwrap().online, Some(false));
    assert_eq!(park.app().hub.device("em-b3").unwrap().online, Some(true));

    // It answers again: the alarm's condition goes.
    park.sim.sim.set_behaviour(STATION_UNIT, Behaviour::Normal);
    wait_until(LIMIT, "the station back online", || {
        park.alarms("offline", None)[0].state == AlarmState::RtnUnacked
    })
    .await;
    park.stop().await;
}
