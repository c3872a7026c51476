//! Polling against an independent Modbus implementation: pymodbus (tests/peers/modbus_peer.py)
//! encodes the values itself, from the register maps of meters.md, so a wrong byte order, scale
//! or address in our decoder or in a bundled profile shows up here.

mod common;

use std::time::Duration;

use common::*;
use parkhub::hub::Hub;
use parkhub::modbus::bus::Line;
use parkhub::modbus::{Endpoint, ModbusBus, Poller};
use parkhub::profile::ProfileRegistry;
use parkhub::reading::Value;
use serde_json::{json, Value as J};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// DTSU666 (unit 1), SDM120 (unit 2), Xintai water (unit 3) and TUF-2000M (unit 4), with the
/// raw values meters.md's maps describe, and what the hub must make of them.
fn meters() -> (Vec<J>, Vec<(&'static str, &'static str, Value)>) {
    let n = Value::Number;
    let units = vec![
        json!({"unit": 1, "points": [
            reg("holding", 0x2006, "f32", "ABCD", json!(2298.0)),
            reg("holding", 0x2008, "f32", "ABCD", json!(2301.0)),
            reg("holding", 0x200A, "f32", "ABCD", json!(2295.0)),
            reg("holding", 0x200C, "f32", "ABCD", json!(12345.0)),
            reg("holding", 0x2012, "f32", "ABCD", json!(85000.0)),
            reg("holding", 0x202A, "f32", "ABCD", json!(950.0)),
            reg("holding", 0x2044, "f32", "ABCD", json!(5001.0)),
            reg("holding", 0x101E, "f32", "ABCD", json!(12345.6)),
            reg("holding", 0x1028, "f32", "ABCD", json!(78.5)),
        ]}),
        json!({"unit": 2, "points": [
            reg("input", 0x0000, "f32", "ABCD", json!(231.2)),
            reg("input", 0x0006, "f32", "ABCD", json!(4.5)),
            reg("input", 0x000C, "f32", "ABCD", json!(1000.5)),
            reg("input", 0x001E, "f32", "ABCD", json!(0.98)),
            reg("input", 0x0046, "f32", "ABCD", json!(49.98)),
            reg("input", 0x0048, "f32", "ABCD", json!(321.75)),
            reg("input", 0x004A, "f32", "ABCD", json!(1.25)),
        ]}),
        json!({"unit": 3, "points": [
            reg("holding", 0x0001, "f32", "DCBA", json!(1234.5)),
            reg("holding", 0x0005, "f32", "DCBA", json!(0.545)),
            reg("holding", 0x0007, "u16", "ABCD", json!(0xAA)),
        ]}),
        json!({"unit": 4, "points": [
            reg("holding", 0x0000, "f32", "CDAB", json!(36.625)),
            reg("holding", 0x0008, "i32", "CDAB", json!(5678)),
            reg("holding", 0x000A, "f32", "CDAB", json!(0.25)),
        ]}),
        json!({"unit": 5, "points": [
            reg("input", 0x0000, "f32", "ABCD", json!(230.1)),
            reg("input", 0x0002, "f32", "ABCD", json!(229.4)),
            reg("input", 0x0004, "f32", "ABCD", json!(231.0)),
            reg("input", 0x0006, "f32", "ABCD", json!(10.5)),
            reg("input", 0x0034, "f32", "ABCD", json!(7250.5)),
            reg("input", 0x003E, "f32", "ABCD", json!(0.97)),
            reg("input", 0x0046, "f32", "ABCD", json!(50.02)),
            reg("input", 0x0048, "f32", "ABCD", json!(4567.25)),
            reg("input", 0x004A, "f32", "ABCD", json!(12.5)),
        ]}),
        json!({"unit": 6, "points": [
            reg("input", 0x2000, "f32", "ABCD", json!(221.5)),
            reg("input", 0x2002, "f32", "ABCD", json!(3.25)),
            reg("input", 0x2004, "f32", "ABCD", json!(0.715)),
            reg("input", 0x200A, "f32", "ABCD", json!(0.99)),
            reg("input", 0x200E, "f32", "ABCD", json!(49.99)),
            reg("input", 0x4000, "f32", "ABCD", json!(88.25)),
            reg("input", 0x400A, "f32", "ABCD", json!(0.5)),
        ]}),
        json!({"unit": 7, "points": [
            reg("holding", 20, "u16", "ABCD", json!(2205)),
            reg("holding", 26, "u16", "ABCD", json!(1234)),
            reg("holding", 36, "i32", "ABCD", json!(-1500)),
            reg("holding", 62, "i32", "ABCD", json!(1234567)),
            reg("holding", 64, "i32", "ABCD", json!(250)),
        ]}),
    ];
    let want = vec![
        ("em", "voltage_a", n(229.8)),
        ("em", "voltage_b", n(230.1)),
        ("em", "voltage_c", n(229.5)),
        ("em", "current_a", n(12.345)),
        ("em", "power_total", n(8500.0)),
        ("em", "pf_total", n(0.95)),
        ("em", "frequency", n(50.01)),
        ("em", "energy_import", n(12345.6)),
        ("em", "energy_export", n(78.5)),
        ("sdm", "voltage", n(231.2)),
        ("sdm", "current", n(4.5)),
        ("sdm", "power_total", n(1000.5)),
        ("sdm", "pf_total", n(0.98)),
        ("sdm", "frequency", n(49.98)),
        ("sdm", "energy_import", n(321.75)),
        ("sdm", "energy_export", n(1.25)),
        ("water", "volume_total", n(1234.5)),
        ("water", "flow_rate", n(0.545)),
        ("water", "pipe_status", Value::Text("full".into())),
        ("flow", "flow_rate", n(36.625)),
        ("flow", "volume_total", n(5678.25)),
        ("sdm630", "voltage_a", n(230.1)),
        ("sdm630", "voltage_b", n(229.4)),
        ("sdm630", "voltage_c", n(231.0)),
        ("sdm630", "current_a", n(10.5)),
        ("sdm630", "power_total", n(7250.5)),
        ("sdm630", "pf_total", n(0.97)),
        ("sdm630", "frequency", n(50.02)),
        ("sdm630", "energy_import", n(4567.25)),
        ("sdm630", "energy_export", n(12.5)),
        ("ddsu", "voltage", n(221.5)),
        ("ddsu", "current", n(3.25)),
        ("ddsu", "power_total", n(715.0)), // the meter sends kW
        ("ddsu", "pf_total", n(0.99)),
        ("ddsu", "frequency", n(49.99)),
        ("ddsu", "energy_import", n(88.25)),
        ("ddsu", "energy_export", n(0.5)),
        ("adw", "voltage_a", n(220.5)),
        ("adw", "current_a", n(12.34)),
        ("adw", "power_total", n(-1500.0)),
        ("adw", "energy_import", n(12345.67)),
        ("adw", "energy_export", n(2.5)),
    ];
    (units, want)
}

fn config(bus: &str, extra_devices: &str) -> String {
    format!(
        r#"
[hub]
id = "peer-test"
{bus}
timeout_ms = 300
offline_after = 2
max_backoff_s = 2
baud = 9600
parity = "N"
[[device]]
id = "em"
profile = "chint-dtsu666"
bus = "line"
unit = 1
poll_interval_s = 1
[[device]]
id = "sdm"
profile = "eastron-sdm120"
bus = "line"
unit = 2
poll_interval_s = 1
[[device]]
id = "water"
profile = "xintai-water"
bus = "line"
unit = 3
poll_interval_s = 1
[[device]]
id = "flow"
profile = "tuf-2000m"
bus = "line"
unit = 4
poll_interval_s = 1
[[device]]
id = "sdm630"
profile = "eastron-sdm630"
bus = "line"
unit = 5
poll_interval_s = 1
[[device]]
id = "ddsu"
profile = "chint-ddsu666"
bus = "line"
unit = 6
poll_interval_s = 1
[[device]]
id = "adw"
profile = "acrel-adw300"
bus = "line"
unit = 7
poll_interval_s = 1
{extra_devices}
"#
    )
}

fn assert_readings(hub: &Hub, want: &[(&str, &str, Value)]) {
    for (device, point, v) in want {
        let got = hub
            .latest(device, point)
            .unwrap_or_else(|| panic!("no {device}.{point}"))
            .value;
        match (&got, v) {
            (Value::Number(g), Value::Number(w)) => {
                assert_close(&format!("{device}.{point}"), *g, *w)
            }
            _ => assert_eq!(&got, v, "{device}.{point}"),
        }
    }
}

async fn poll_until_complete(
    text: &str,
    want: &[(&str, &str, Value)],
) -> (
    Arc<Hub>,
    CancellationToken,
    Vec<tokio::task::JoinHandle<()>>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let loaded = load(text, dir.path());
    let hub = hub_for(&loaded);
    let stop = CancellationToken::new();
    let tasks = run_buses(&loaded, &hub, &stop);
    let h = hub.clone();
    wait_until(Duration::from_secs(15), "every expected reading", || {
        want.iter().all(|(d, p, _)| h.latest(d, p).is_some())
    })
    .await;
    assert_readings(&hub, want);
    (hub, stop, tasks, dir)
}

#[tokio::test]
async fn meters_read_what_pymodbus_serves_over_modbus_tcp() {
    let (units, want) = meters();
    let peer = PyPeer::start(&json!({"units": units}), &["--tcp-port", "0"]);
    let text = config(
        &format!(
            "[[bus]]\nid = \"line\"\nkind = \"tcp\"\naddress = \"{}\"",
            peer.addr()
        ),
        "",
    );
    let text = text.replace("baud = 9600\nparity = \"N\"\n", "");
    let (_hub, stop, tasks, _dir) = poll_until_complete(&text, &want).await;
    stop.cancel();
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn meters_read_what_pymodbus_serves_as_rtu_over_tcp() {
    let (units, want) = meters();
    let peer = PyPeer::start(
        &json!({"units": units}),
        &["--tcp-port", "0", "--framer", "rtu"],
    );
    let text = config(
        &format!(
            "[[bus]]\nid = \"line\"\nkind = \"rtu-over-tcp\"\naddress = \"{}\"",
            peer.addr()
        ),
        "",
    );
    let (_hub, stop, tasks, _dir) = poll_until_complete(&text, &want).await;
    stop.cancel();
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn a_dead_unit_and_a_refusing_unit_share_the_line_with_healthy_meters() {
    let (mut units, want) = meters();
    units.push(json!({"unit": 8, "behaviour": "silent"}));
    units.push(json!({"unit": 9, "behaviour": "exception", "exception": 4}));
    // 0x0B: a gateway saying the device behind it did not answer.
    units.push(json!({"unit": 10, "behaviour": "exception", "exception": 11}));
    let peer = PyPeer::start(
        &json!({"units": units}),
        &["--tcp-port", "0", "--framer", "rtu"],
    );
    let extra = "[[device]]\nid = \"dead\"\nprofile = \"eastron-sdm630\"\nbus = \"line\"\nunit = 8\npoll_interval_s = 1\n\
                 [[device]]\nid = \"refusing\"\nprofile = \"eastron-sdm120\"\nbus = \"line\"\nunit = 9\npoll_interval_s = 1\n\
                 [[device]]\nid = \"unreached\"\nprofile = \"eastron-sdm120\"\nbus = \"line\"\nunit = 10\npoll_interval_s = 1\n";
    let text = config(
        &format!(
            "[[bus]]\nid = \"line\"\nkind = \"rtu-over-tcp\"\naddress = \"{}\"",
            peer.addr()
        ),
        extra,
    );
    let (hub, stop, tasks, _dir) = poll_until_complete(&text, &want).await;
    wait_until(Duration::from_secs(10), "the dead units offline", || {
        hub.device("dead").and_then(|d| d.online) == Some(false)
            && hub.device("unreached").and_then(|d| d.online) == Some(false)
    })
    .await;
    // (The exact schedule around a dead unit is proven on a paused clock in tests/modbus.rs.)
    let em_polls = hub.device("em").unwrap().stats.polls;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let em = hub.device("em").unwrap();
    let refusing = hub.device("refusing").unwrap();
    let unreached = hub.device("unreached").unwrap();
    stop.cancel();
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        em.stats.polls - em_polls >= 2,
        "healthy meter kept its rhythm: {} polls in 3 s",
        em.stats.polls - em_polls
    );
    assert_eq!(em.stats.errors, 0);
    assert_eq!(
        refusing.online,
        Some(true),
        "a unit that answers, even with exceptions, is there"
    );
    assert!(refusing.stats.exceptions > 0);
    assert!(refusing.points.is_empty());
    assert!(
        unreached
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("gateway reached no device"),
        "{:?}",
        unreached.last_error
    );
    assert!(
        refusing
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("refused"),
        "{:?}",
        refusing.last_error
    );
}

#[tokio::test]
async fn the_bus_recovers_when_pymodbus_restarts() {
    let (units, want) = meters();
    let mut peer = PyPeer::start(&json!({"units": units}), &["--tcp-port", "0"]);
    let text = config(
        &format!(
            "[[bus]]\nid = \"line\"\nkind = \"tcp\"\naddress = \"{}\"",
            peer.addr()
        ),
        "",
    );
    let text = text.replace("baud = 9600\nparity = \"N\"\n", "");
    let (hub, stop, tasks, _dir) = poll_until_complete(&text, &want).await;
    peer.kill();
    wait_until(Duration::from_secs(10), "the meter offline", || {
        hub.device("em").and_then(|d| d.online) == Some(false)
    })
    .await;
    let before = hub.latest("em", "voltage_a").unwrap().ts;
    peer.restart();
    wait_until(
        Duration::from_secs(15),
        "readings after the restart",
        || {
            hub.device("em").and_then(|d| d.online) == Some(true)
                && hub.latest("em", "voltage_a").is_some_and(|l| l.ts > before)
        },
    )
    .await;
    assert_readings(&hub, &want);
    stop.cancel();
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn rtu_over_a_serial_line_reads_pymodbus_and_survives_a_dead_unit() {
    let (mut units, want) = meters();
    units.push(json!({"unit": 8, "behaviour": "silent"}));
    let pty = PtyPair::new();
    let _peer = PyPeer::start(
        &json!({"units": units}),
        &[
            "--serial",
            pty.a.to_str().unwrap(),
            "--baud",
            "9600",
            "--parity",
            "N",
            "--stopbits",
            "1",
        ],
    );
    let extra = "[[device]]\nid = \"dead\"\nprofile = \"eastron-sdm120\"\nbus = \"line\"\nunit = 8\npoll_interval_s = 1\n";
    let bus = format!("[[bus]]\nid = \"line\"\nkind = \"rtu\"\nserial = \"{}\"\nstop_bits = 1\ndata_bits = 8\npause_ms = 5", pty.b.display());
    let text = config(&bus, extra);
    let (hub, stop, tasks, _dir) = poll_until_complete(&text, &want).await;
    wait_until(Duration::from_secs(10), "the dead unit offline", || {
        hub.device("dead").and_then(|d| d.online) == Some(false)
    })
    .await;
    // After the dead unit's timeouts (which reopen the port), the line still reads correctly.
    let before = hub.latest("em", "voltage_a").unwrap().ts;
    wait_until(Duration::from_secs(10), "fresh readings", || {
        hub.latest("em", "voltage_a").is_some_and(|l| l.ts > before)
    })
    .await;
    assert_readings(&hub, &want);
    stop.cancel();
    for t in tasks {
        t.await.unwrap();
    }
}

/// An RS-485 HAT whose transceiver needs a GPIO for driver enable, over the real tokio-serial
/// path: every request is bracketed by the pin (on, then off), the silent unit's timeouts leave
/// it released, and the readings are pymodbus's. (A pty drains at once, so this proves the
/// path and the order, not the electrical timing: that needs a Pi and a scope.)
#[tokio::test]
async fn rtu_with_a_gpio_driver_enable_brackets_every_request_and_never_leaves_it_on() {
    const DE: u8 = 18;
    let (mut units, want) = meters();
    units.push(json!({"unit": 8, "behaviour": "silent"}));
    let pty = PtyPair::new();
    let _peer = PyPeer::start(
        &json!({"units": units}),
        &[
            "--serial",
            pty.a.to_str().unwrap(),
            "--baud",
            "9600",
            "--parity",
            "N",
            "--stopbits",
            "1",
        ],
    );
    let extra = "[[device]]\nid = \"dead\"\nprofile = \"eastron-sdm120\"\nbus = \"line\"\nunit = 8\npoll_interval_s = 1\n";
    let bus = format!(
        "[[bus]]\nid = \"line\"\nkind = \"rtu\"\nserial = \"{}\"\nstop_bits = 1\ndata_bits = 8\npause_ms = 5\nde_pin = {DE}\n",
        pty.b.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let loaded = load(&config(&bus, extra), dir.path());
    let hub = hub_for(&loaded);
    let pins = parkhub::gpio::sim::SimPins::new();
    let stop = CancellationToken::new();
    let line = ModbusBus::from_config(&loaded, &loaded.config.buses[0], &pins).unwrap();
    let task = tokio::spawn(line.run(hub.clone(), stop.clone()));
    let h = hub.clone();
    wait_until(Duration::from_secs(15), "every expected reading", || {
        want.iter().all(|(d, p, _)| h.latest(d, p).is_some())
            && h.device("dead").and_then(|d| d.online) == Some(false)
    })
    .await;
    assert_readings(&hub, &want);
    stop.cancel();
    task.await.unwrap();

    // Writing the level it already has changes nothing on the wire: compare the changes.
    let mut levels: Vec<bool> = pins.writes(DE).into_iter().map(|(_, high)| high).collect();
    levels.dedup();
    assert_eq!(levels.first(), Some(&false), "released from the start");
    assert_eq!(levels.last(), Some(&false), "released at the end");
    let activations = levels.iter().filter(|on| **on).count();
    let requests: u64 = hub.devices().iter().map(|d| d.stats.requests).sum();
    assert!(
        (requests..=requests + 1).contains(&(activations as u64)),
        "{activations} activations for {requests} requests"
    );
    assert!(!pins.is_held(DE), "the pin is given back with the bus");
}

/// One point per type and byte order, in a profile of our own.
const ORDERS_PROFILE: &str = r#"
id = "test-orders"
vendor = "test"
model = "orders"
category = "electricity_meter"
protocol = "modbus"
[defaults]
function = "holding"
"#;

#[tokio::test]
async fn every_type_in_every_byte_order_decodes_to_the_value_pymodbus_encoded() {
    let cases: &[(&str, J, Option<u16>)] = &[
        ("f32", json!(-1234.5), None),
        ("f64", json!(-98765.4321), None),
        ("i16", json!(-1234), None),
        ("u16", json!(54321), None),
        ("i32", json!(-123456789), None),
        ("u32", json!(3000000000u32), None),
        ("i64", json!(-1234567890123i64), None),
        ("u64", json!(1234567890123u64), None),
        ("bcd", json!(12345678), Some(2)),
        ("string", json!("PK01"), Some(4)),
    ];
    let mut profile = ORDERS_PROFILE.to_string();
    let mut points = Vec::new();
    let mut want = Vec::new();
    let mut addr: u16 = 0;
    for order in ["ABCD", "CDAB", "BADC", "DCBA"] {
        for (ty, value, length) in cases {
            let name = format!("{ty}_{}", order.to_lowercase());
            profile += &format!("[[point]]\nname = \"{name}\"\nregister = {addr}\ntype = \"{ty}\"\norder = \"{order}\"\n");
            let mut p = reg("holding", addr, ty, order, value.clone());
            if let Some(l) = length {
                profile += &format!("length = {l}\n");
                p["length"] = json!(l);
            }
            points.push(p);
            let expected = match value {
                J::String(s) => Value::Text(s.clone()),
                v => Value::Number(v.as_f64().unwrap()),
            };
            want.push((name, expected));
            addr += 8;
        }
    }
    // Bits: coils, discrete inputs and a flag inside a register.
    profile += "[[point]]\nname = \"coil_on\"\nregister = 3\nfunction = \"coil\"\n";
    profile += "[[point]]\nname = \"input_off\"\nregister = 4\nfunction = \"discrete\"\n";
    profile += "[[point]]\nname = \"flag\"\nregister = 1000\ntype = \"bool\"\nbit = 5\n";
    points.push(json!({"function": "coil", "address": 3, "type": "bool", "value": true}));
    points.push(json!({"function": "discrete", "address": 4, "type": "bool", "value": false}));
    points.push(
        json!({"function": "holding", "address": 1000, "type": "bool", "bit": 5, "value": true}),
    );
    want.push(("coil_on".into(), Value::Bool(true)));
    want.push(("input_off".into(), Value::Bool(false)));
    want.push(("flag".into(), Value::Bool(true)));

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("test-orders.toml"), &profile).unwrap();
    let mut reg = ProfileRegistry::bundled().unwrap();
    let errs = reg.load_dir(dir.path());
    assert!(errs.is_empty(), "{errs:?}");
    let p = reg.get("test-orders").unwrap().clone();

    let peer = PyPeer::start(
        &json!({"units": [{"unit": 9, "points": points}]}),
        &["--tcp-port", "0"],
    );
    let mut line = Line::new(
        Endpoint::Tcp(peer.addr()),
        Duration::from_secs(2),
        Duration::ZERO,
        Duration::from_secs(1),
    );
    let mut poller = Poller::new("orders".into(), 9, p, Duration::from_secs(2));
    let res = poller.poll(&mut line).await;
    assert!(res.errors.is_empty(), "{:?}", res.errors);
    assert_eq!(res.readings.len(), want.len());
    for (name, v) in want {
        let got = &res
            .readings
            .iter()
            .find(|r| *r.point == *name)
            .unwrap_or_else(|| panic!("no {name}"))
            .value;
        match (got, &v) {
            (Value::Number(g), Value::Number(w)) => assert_close(&name, *g, *w),
            _ => assert_eq!(got, &v, "{name}"),
        }
    }
}
