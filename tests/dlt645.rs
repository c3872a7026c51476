//! DL/T 645-2007 meters polled by the hub's bus scheduler: behind a serial server (TCP) and on a
//! serial line (a socat pty pair), each with the in-repo meter simulator at the other end, a
//! silent meter on the same line, the echo of our own requests, and config mistakes.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use parkhub::config::load_str;
use parkhub::dlt645::frame::{Address, Quantity};
use parkhub::dlt645::sim::{Behaviour, Simulator};
use parkhub::reading::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(20);
const METER: &str = "000000001234";
const SILENT: &str = "000000009999";

fn address(a: &str) -> Address {
    a.parse().unwrap()
}

/// A line with two meters: one answering with pinned values, one that never answers.
fn line() -> Arc<Simulator> {
    let sim = Simulator::new();
    sim.add(address(METER));
    sim.add(address(SILENT));
    sim.set_behaviour(address(SILENT), Behaviour::Silent);
    sim.pin(address(METER), Quantity::EnergyImport, 1234.56)
        .unwrap();
    sim.pin(address(METER), Quantity::PowerTotal, -1500.0)
        .unwrap();
    sim.pin(address(METER), Quantity::VoltageA, 229.8).unwrap();
    sim
}

fn config(bus: &str) -> String {
    format!(
        r#"
[hub]
id = "dlt"
{bus}
timeout_ms = 300
pause_ms = 5

[[device]]
id = "em-1"
profile = "dlt645-meter"
bus = "meters"
address = "{METER}"
poll_interval_s = 1

[[device]]
id = "em-dead"
profile = "dlt645-meter"
bus = "meters"
address = "{SILENT}"
poll_interval_s = 1
"#
    )
}

fn number(hub: &parkhub::hub::Hub, point: &str) -> Option<f64> {
    match hub.latest("em-1", point)?.value {
        Value::Number(v) => Some(v),
        _ => None,
    }
}

async fn polls_the_meter_and_not_the_dead_one(text: &str) -> Arc<parkhub::hub::Hub> {
    let dir = tempfile::tempdir().unwrap();
    let loaded = load(text, dir.path());
    let hub = hub_for(&loaded);
    let stop = CancellationToken::new();
    let tasks = run_buses(&loaded, &hub, &stop);
    wait_until(
        LIMIT,
        "the meter's readings and the dead one offline",
        || {
            number(&hub, "voltage_a").is_some()
                && hub.device("em-dead").and_then(|d| d.online) == Some(false)
        },
    )
    .await;
    assert_close("energy", number(&hub, "energy_import").unwrap(), 1234.56);
    assert_close("power", number(&hub, "power_total").unwrap(), -1500.0);
    assert_close("voltage", number(&hub, "voltage_a").unwrap(), 229.8);
    assert_eq!(hub.device("em-1").and_then(|d| d.online), Some(true));
    // The dead meter costs its neighbour a timeout per cycle, not the line: readings go on.
    let before = hub.latest("em-1", "voltage_a").unwrap().ts;
    wait_until(LIMIT, "fresh readings", || {
        hub.latest("em-1", "voltage_a")
            .is_some_and(|l| l.ts > before)
    })
    .await;
    stop.cancel();
    for t in tasks {
        t.await.unwrap();
    }
    hub
}

#[tokio::test]
async fn meters_behind_a_serial_server_are_read_and_a_silent_one_blocks_nobody() {
    let sim = line();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(sim.clone().serve_tcp(listener, stop.clone()));
    let bus = format!("[[bus]]\nid = \"meters\"\nkind = \"dlt645\"\naddress = \"{addr}\"");
    polls_the_meter_and_not_the_dead_one(&config(&bus)).await;
    assert!(sim.requests() > 0);
    stop.cancel();
}

#[tokio::test]
async fn the_echo_of_our_own_request_on_a_half_duplex_adapter_is_passed_over() {
    let sim = line();
    sim.set_echo(true);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(sim.clone().serve_tcp(listener, stop.clone()));
    let bus = format!("[[bus]]\nid = \"meters\"\nkind = \"dlt645\"\naddress = \"{addr}\"");
    let hub = polls_the_meter_and_not_the_dead_one(&config(&bus)).await;
    let stats = hub.device("em-1").unwrap().stats;
    assert!(stats.line_rejects["echo"] > 0, "{stats:?}");
    assert_eq!(stats.line_rejects.len(), 1, "echoes only: {stats:?}");
    stop.cancel();
}

#[tokio::test]
async fn meters_on_a_serial_line_are_read_at_2400_8e1() {
    let sim = line();
    let pty = PtyPair::new();
    let port = tokio_serial::SerialPortBuilderExt::open_native_async(tokio_serial::new(
        pty.a.to_string_lossy(),
        2400,
    ))
    .unwrap();
    let stop = CancellationToken::new();
    let s = sim.clone();
    let st = stop.clone();
    tokio::spawn(async move { s.serve_stream(port, st).await });
    let bus = format!(
        "[[bus]]\nid = \"meters\"\nkind = \"dlt645\"\nserial = \"{}\"",
        pty.b.display()
    );
    let text = config(&bus);
    let loaded = load(&text, Path::new("/"));
    let line = loaded.bus_lines["meters"];
    assert_eq!(
        (
            line.baud,
            line.parity.to_string(),
            line.data_bits,
            line.stop_bits
        ),
        (2400, "E".to_string(), 8, 1),
        "the profile's line"
    );
    polls_the_meter_and_not_the_dead_one(&text).await;
    stop.cancel();
}

#[test]
fn dlt645_mistakes_are_reported_with_their_keys() {
    let text = r#"
[hub]
id = "h"
[[bus]]
id = "meters"
kind = "dlt645"
[[bus]]
id = "modbus"
kind = "tcp"
address = "127.0.0.1:502"
[[device]]
id = "em-1"
profile = "dlt645-meter"
bus = "meters"
address = "1234"
unit = 3
[[device]]
id = "em-2"
profile = "dlt645-meter"
bus = "modbus"
address = "000000000001"
[[device]]
id = "em-3"
profile = "dlt645-meter"
bus = "meters"
[[device]]
id = "em-4"
profile = "chint-dtsu666"
bus = "meters"
"#;
    let errs = load_str("t.toml", text, Path::new("/"), &|_| None)
        .unwrap_err()
        .0;
    let has = |line: usize, key: &str, says: &str| {
        assert!(
            errs.iter()
                .any(|d| d.line == line && d.key == key && d.message.contains(says)),
            "no {key} at line {line} saying {says:?}:\n{}",
            errs.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    };
    has(6, "bus[0].kind", "needs `serial");
    has(15, "device[0].address", "is 12 digits");
    has(16, "device[0].unit", "does not apply to DL/T 645 device");
    has(
        20,
        "device[1].bus",
        "speaks tcp, profile dlt645-meter speaks dlt645",
    );
    has(24, "device[2].profile", "needs its meter `address`");
    has(
        29,
        "device[3].bus",
        "speaks dlt645, profile chint-dtsu666 speaks Modbus",
    );
}

async fn serve(sim: Arc<Simulator>) -> (std::net::SocketAddr, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(sim.serve_tcp(listener, stop.clone()));
    (addr, stop)
}

async fn parkhub(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_parkhub"))
        .args(args)
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn probe_reads_every_point_of_a_dlt645_meter_as_json() {
    let (addr, stop) = serve(line()).await;
    let addr = addr.to_string();
    let out = parkhub(&[
        "probe",
        "--profile",
        "dlt645-meter",
        "--tcp",
        &addr,
        "--address",
        METER,
        "--json",
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let points: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(points.len(), 11, "{stdout}");
    let energy = points
        .iter()
        .find(|p| p["point"] == "energy_import")
        .unwrap();
    assert_eq!(energy["value"], 1234.56);
    assert_eq!(energy["unit"], "kWh");
    let power = points.iter().find(|p| p["point"] == "power_total").unwrap();
    assert_eq!(power["value"], -1500.0);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let silent = parkhub(&[
        "probe",
        "--profile",
        "dlt645-meter",
        "--tcp",
        &addr,
        "--address",
        SILENT,
        "--timeout-ms",
        "300",
    ])
    .await;
    assert!(!silent.status.success());
    let err = String::from_utf8_lossy(&silent.stderr);
    assert!(err.contains("no answer from meter 000000009999"), "{err}");
    stop.cancel();
}

#[tokio::test]
async fn scan_prints_the_address_a_lone_meter_gives_to_the_broadcast() {
    let sim = Simulator::new();
    sim.add(address("000012345678"));
    let (addr, stop) = serve(sim).await;
    let out = parkhub(&["scan", "--protocol", "dlt645", "--tcp", &addr.to_string()]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "000012345678");
    stop.cancel();
}

/// A dirty line between request and answer: noise, another meter's answer, a frame whose
/// checksum a flipped bit broke. Each is passed over and counted by reason; the answer is read.
#[tokio::test]
async fn noise_a_broken_checksum_and_another_meters_answer_are_counted_and_passed_over() {
    use parkhub::dlt645::frame::{Control, Frame};
    use parkhub::dlt645::poller::Dlt645Poller;
    use parkhub::modbus::bus::Line;
    use parkhub::modbus::Endpoint;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let reply = |from: &str, kwh: f64| {
        let q = Quantity::EnergyImport;
        let mut data = q.di().to_le_bytes().to_vec();
        data.extend(q.encode(kwh).unwrap());
        Frame {
            address: address(from),
            control: Control::READ_REPLY,
            data,
        }
        .to_wire()
        .unwrap()
    };
    let mut broken = reply(METER, 1.0);
    let cs = broken.len() - 2;
    broken[cs] ^= 0x01;
    let mut dirty = vec![0x00, 0x13, 0x37];
    dirty.extend(reply("000000005678", 2.0));
    dirty.extend(broken);
    dirty.extend(reply(METER, 1234.56));

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut request = [0u8; 20];
        s.read_exact(&mut request).await.unwrap();
        s.write_all(&dirty).await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
    });
    let text = "id = \"p\"\nvendor = \"t\"\nmodel = \"t\"\ncategory = \"electricity_meter\"\nprotocol = \"dlt645\"\n[[point]]\nname = \"energy_import\"\nunit = \"kWh\"\n";
    let (doc, _) = parkhub::config::Document::parse("p.toml", text);
    let profile = parkhub::profile::parse_profile(&doc).unwrap();
    let mut line = Line::new(
        Endpoint::SerialServer(addr),
        Duration::from_secs(2),
        Duration::ZERO,
        Duration::from_secs(1),
    );
    let mut poller = Dlt645Poller::new(
        "em-1".into(),
        address(METER),
        &profile,
        Duration::from_secs(2),
    );
    let res = poller.poll(&mut line).await;
    assert!(res.errors.is_empty(), "{:?}", res.errors);
    assert_eq!(res.readings.len(), 1);
    assert_eq!(res.readings[0].value, Value::Number(1234.56));
    assert_eq!(
        res.rejects.get("other_meter"),
        Some(&1),
        "{:?}",
        res.rejects
    );
    assert_eq!(
        res.rejects.get("bad_checksum"),
        Some(&1),
        "{:?}",
        res.rejects
    );
    assert!(
        res.rejects.get("noise").is_some_and(|n| *n >= 1),
        "{:?}",
        res.rejects
    );
}
