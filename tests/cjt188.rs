//! CJ/T 188 water meters polled by the hub's bus scheduler behind a serial server, with the
//! in-repo meter simulator at the other end and a silent meter on the same line; `probe`,
//! `scan` and config mistakes.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use parkhub::cjt188::frame::{Address, Valve};
use parkhub::cjt188::sim::{Behaviour, Simulator};
use parkhub::config::load_str;
use parkhub::reading::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(20);
const METER: &str = "11223344556677";
const SILENT: &str = "00000000000099";

fn address(a: &str) -> Address {
    a.parse().unwrap()
}

async fn serve(sim: Arc<Simulator>) -> (String, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let stop = CancellationToken::new();
    tokio::spawn(sim.serve_tcp(listener, stop.clone()));
    (addr, stop)
}

fn meters() -> Arc<Simulator> {
    let sim = Simulator::new();
    sim.add(address(METER));
    sim.add(address(SILENT));
    sim.set_behaviour(address(SILENT), Behaviour::Silent);
    sim.pin_volume(address(METER), 1234.56);
    sim.set_valve(address(METER), Valve::Closed);
    sim.set_battery_low(address(METER), true);
    sim
}

#[tokio::test]
async fn water_meters_behind_a_serial_server_report_volume_valve_and_battery() {
    let sim = meters();
    sim.set_echo(true);
    let (addr, stop) = serve(sim).await;
    let text = format!(
        r#"
[hub]
id = "w"
[[bus]]
id = "water"
kind = "cjt188"
address = "{addr}"
timeout_ms = 300
[[device]]
id = "wm-1"
profile = "cjt188-water"
bus = "water"
address = "{METER}"
poll_interval_s = 1
[[device]]
id = "wm-dead"
profile = "cjt188-water"
bus = "water"
address = "{SILENT}"
poll_interval_s = 1
"#
    );
    let dir = tempfile::tempdir().unwrap();
    let loaded = load(&text, dir.path());
    let hub = hub_for(&loaded);
    let stopping = CancellationToken::new();
    let tasks = run_buses(&loaded, &hub, &stopping);
    wait_until(LIMIT, "the meter read and the dead one offline", || {
        hub.latest("wm-1", "volume_total").is_some()
            && hub.device("wm-dead").and_then(|d| d.online) == Some(false)
    })
    .await;
    let value = |p: &str| hub.latest("wm-1", p).map(|l| l.value);
    match value("volume_total") {
        Some(Value::Number(v)) => assert_close("volume", v, 1234.56),
        other => panic!("volume {other:?}"),
    }
    assert_eq!(value("valve"), Some(Value::Text("closed".into())));
    assert_eq!(value("battery_low"), Some(Value::Bool(true)));
    let stats = hub.device("wm-1").unwrap().stats;
    assert!(stats.line_rejects["echo"] > 0, "{stats:?}");
    assert!(
        stats
            .line_rejects
            .keys()
            .all(|r| r == "echo" || r == "other_meter"),
        "only echoes and the silent meter's requests passed over: {stats:?}"
    );
    stopping.cancel();
    for t in tasks {
        t.await.unwrap();
    }
    stop.cancel();
}

async fn parkhub(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_parkhub"))
        .args(args)
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn probe_reads_a_water_meter_and_scan_finds_a_lone_one() {
    let (addr, stop) = serve(meters()).await;
    let out = parkhub(&[
        "probe",
        "--profile",
        "cjt188-water",
        "--tcp",
        &addr,
        "--address",
        METER,
        "--json",
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(r#"{"point":"volume_total","value":1234.56,"unit":"m³"}"#),
        "{stdout}"
    );
    stop.cancel();

    let lone = Simulator::new();
    lone.add(address(METER));
    let (addr, stop) = serve(lone).await;
    let out = parkhub(&["scan", "--protocol", "cjt188", "--tcp", &addr]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), METER);
    stop.cancel();
}

#[test]
fn a_water_meter_needs_its_fourteen_digit_address_on_a_cjt188_bus() {
    let text = r#"
[hub]
id = "h"
[[bus]]
id = "water"
kind = "cjt188"
serial = "/dev/ttyUSB1"
[[device]]
id = "wm-1"
profile = "cjt188-water"
bus = "water"
address = "000000001234"
"#;
    let errs = load_str("t.toml", text, Path::new("/"), &|_| None)
        .unwrap_err()
        .0;
    assert!(
        errs.iter().any(|d| d.line == 12
            && d.key == "device[0].address"
            && d.message.contains("a cjt188 meter address is 14 digits")),
        "{errs:?}"
    );
}
