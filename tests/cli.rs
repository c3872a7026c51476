//! The `parkhub` binary as installers use it: check, probe, scan, profiles, history, run
//! (including kill -9), demo.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use parkhub::modbus::sim::Behaviour;
use parkhub::reading::Value;

fn parkhub() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_parkhub"));
    c.env_remove("RUST_LOG");
    c
}

fn run(args: &[&str]) -> Output {
    parkhub().args(args).output().expect("parkhub runs")
}

/// Runs the binary without blocking the runtime that serves its simulated meters.
async fn run_async(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || parkhub().args(&args).output().expect("parkhub runs"))
        .await
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

#[test]
fn version_prints_the_crate_version() {
    let out = run(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout).trim(),
        format!("parkhub {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_lists_every_error_and_exits_non_zero() {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config/every-error.toml");
    let out = run(&["check", "--config", fixture.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("every-error.toml:22:1: device[0].unit: unit 300 is outside 1..247"),
        "{err}"
    );
    assert!(
        err.contains("every-error.toml:21:1: device[0].bus: no bus `meters-9`"),
        "{err}"
    );
    let n = err
        .lines()
        .filter(|l| l.contains("every-error.toml:"))
        .count();
    assert!(n >= 20, "{err}");
    assert!(
        err.trim_end()
            .ends_with(&format!("{n} errors in the configuration")),
        "{err}"
    );
}

#[test]
fn check_summarises_a_good_config() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/parkhub.example.toml");
    let out = parkhub()
        .args(["check", "--config", example.to_str().unwrap()])
        .env("PARKHUB_WEBHOOK_SECRET", "s3cret")
        .env("PARKHUB_DING_TOKEN", "t0ken")
        .env("PARKHUB_DING_SECRET", "d1ng")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains(": OK"), "{s}");
    assert!(
        s.contains(
            "bus b3-gateway (tcp, tcp://192.168.10.20:502): 1 device, 2 requests per poll cycle"
        ),
        "{s}"
    );
    assert!(
        s.contains("channel fire-ding (dingtalk) for fire-control"),
        "{s}"
    );
    for secret in ["s3cret", "t0ken", "d1ng"] {
        assert!(!s.contains(secret), "{s}");
    }
}

#[test]
fn check_lists_every_gpio_pin_and_warns_of_a_driver_enable_on_a_fast_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gpio.toml");
    std::fs::write(
        &config,
        r#"
[hub]
id = "pi"
[[bus]]
id = "hat"
kind = "rtu"
serial = "/dev/ttyAMA0"
baud = 19200
de_pin = 18
[[device]]
id = "fire-panel"
profile = "gpio-dry-contact"
category = "fire"
pin = 27
active = "high"
[[channel]]
id = "siren"
kind = "gpio"
pin = 17
mode = "pulse"
pulse_on_ms = 300
pulse_off_ms = 700
pulses = 5
[[department]]
id = "fire-control"
name = "消防控制室"
channels = ["siren"]
"#,
    )
    .unwrap();
    let out = run(&["check", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    for line in [
        "1 dry contact, 1 siren relay, 1 RS-485 driver enable",
        "  fire-panel on pin 27 (fire): active high, pull up, debounce 50 ms",
        "  siren siren on pin 17: pulses of 300 ms every 1000 ms, 5 per alarm, off by itself after 300 s until a new alarm",
        "  bus hat drives its transceiver's DE on pin 18 (active high); at 19200 baud a fast meter's first byte can be lost",
    ] {
        assert!(s.contains(line), "{line:?} missing from:\n{s}");
    }
}

/// The demo's config is the template `parkhub demo` fills in; with the same variables set by
/// hand, `parkhub check` passes it as it is shipped.
#[test]
fn check_passes_the_demo_config_as_shipped() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo.toml");
    let dir = tempfile::tempdir().unwrap();
    let out = parkhub()
        .args(["check", "--config", demo.to_str().unwrap()])
        .env("PARKHUB_DEMO_DATA", dir.path())
        .env("PARKHUB_DEMO_TCP_PORT", "1502")
        .env("PARKHUB_DEMO_RTU_PORT", "1503")
        .env("PARKHUB_DEMO_DLT645_PORT", "1504")
        .env("PARKHUB_DEMO_MQTT_PORT", "1883")
        .env("PARKHUB_DEMO_WEBHOOK_URL", "http://127.0.0.1:9000/alarm")
        .env("PARKHUB_DEMO_UPLINK_URL", "http://127.0.0.1:9000/ingest")
        .env("PARKHUB_DEMO_WEBHOOK_SECRET", "s")
        .env("PARKHUB_DEMO_TOKEN_SHA256", "ab".repeat(32))
        .env("PARKHUB_DEMO_CHARGER_PASSWORD_SHA256", "cd".repeat(32))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains("demo.toml: OK"), "{s}");
    assert!(s.contains("door-b3-server on pin 22 (security)"), "{s}");
}

#[test]
fn check_of_a_missing_file_says_so() {
    let out = run(&["check", "--config", "/nonexistent/parkhub.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("cannot read config file"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn profiles_list_and_show_describe_the_bundled_models() {
    let out = run(&["profiles", "list"]);
    assert!(out.status.success());
    let list = text(&out.stdout);
    for id in ["chint-dtsu666", "eastron-sdm120", "xintai-water"] {
        assert!(list.lines().any(|l| l.starts_with(id)), "{list}");
    }
    let out = run(&["profiles", "show", "chint-dtsu666"]);
    assert!(out.status.success());
    let show = text(&out.stdout);
    assert!(show.contains("9600 baud 8N1, unit 1"), "{show}");
    assert!(
        show.lines().any(|l| l.starts_with("voltage_a")
            && l.contains("0x2006")
            && l.contains("holding")
            && l.contains("f32")),
        "{show}"
    );
    let out = run(&["profiles", "show", "no-such-meter"]);
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_prints_one_json_object_per_point() {
    let server = SimServer::start(&[(3, "chint-dtsu666")], false).await;
    server.sim.pin(3, "voltage_a", Value::Number(229.8));
    let addr = server.addr.to_string();
    let out = run_async(&[
        "probe",
        "--profile",
        "chint-dtsu666",
        "--tcp",
        &addr,
        "--unit",
        "3",
        "--json",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 24);
    let va = lines.iter().find(|o| o["point"] == "voltage_a").unwrap();
    assert_eq!(
        va,
        &serde_json::json!({"point": "voltage_a", "value": 229.8, "unit": "V"})
    );
    assert!(lines
        .iter()
        .all(|o| o.get("point").is_some() && o.get("value").is_some()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_of_a_silent_unit_fails_with_advice() {
    let server = SimServer::start(&[(1, "eastron-sdm120")], false).await;
    server.sim.set_behaviour(1, Behaviour::Silent);
    let addr = server.addr.to_string();
    let out = run_async(&[
        "probe",
        "--profile",
        "eastron-sdm120",
        "--tcp",
        &addr,
        "--unit",
        "1",
        "--timeout-ms",
        "200",
    ])
    .await;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("no answer from unit 1"), "{err}");
    assert!(err.contains("check wiring"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_lists_the_units_that_answer() {
    let server = SimServer::start(
        &[
            (2, "eastron-sdm120"),
            (5, "chint-dtsu666"),
            (7, "xintai-water"),
            (8, "xintai-water"),
        ],
        true,
    )
    .await;
    server.sim.set_behaviour(7, Behaviour::Silent);
    // A gateway answering "no device there" for unit 8 does not make it a device.
    server.sim.set_behaviour(
        8,
        Behaviour::Exception(tokio_modbus::ExceptionCode::GatewayTargetDevice),
    );
    let addr = server.addr.to_string();
    let out = run_async(&[
        "scan",
        "--rtu-over-tcp",
        &addr,
        "--units",
        "1-8",
        "--timeout-ms",
        "150",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let found: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(
        found,
        vec!["unit 2: answers".to_string(), "unit 5: answers".to_string()]
    );
    assert!(text(&out.stderr).contains("2 unit(s) answer: 2, 5"));
}

/// `parkhub history --config CONFIG --device DEVICE --point POINT EXTRA…`
async fn history(config: &Path, device: &str, point: &str, extra: &[&str]) -> Output {
    let config = config.display().to_string();
    let mut args = vec![
        "history", "--config", &config, "--device", device, "--point", point,
    ];
    args.extend_from_slice(extra);
    run_async(&args).await
}

fn run_config(dir: &Path, addr: &str) -> std::path::PathBuf {
    let cfg = format!(
        r#"
[hub]
id = "kill-test"
data_dir = "{}"
[api]
listen = "127.0.0.1:0"
[[bus]]
id = "gw"
kind = "tcp"
address = "{addr}"
timeout_ms = 500
[[device]]
id = "em"
profile = "chint-dtsu666"
bus = "gw"
unit = 1
poll_interval_s = 1
[[device]]
id = "water"
profile = "xintai-water"
bus = "gw"
unit = 2
poll_interval_s = 1
"#,
        dir.join("data").display()
    );
    let path = dir.join("parkhub.toml");
    std::fs::write(&path, cfg).unwrap();
    path
}

fn stored(db: &Path) -> i64 {
    let Ok(conn) = rusqlite::Connection::open(db) else {
        return 0;
    };
    conn.query_row(
        "SELECT (SELECT count(*) FROM sample) + (SELECT count(*) FROM sample_hot)",
        [],
        |r| r.get(0),
    )
    .unwrap_or(0)
}

async fn wait_stored(db: &Path, more_than: i64, hub: &mut Child) -> i64 {
    let start = Instant::now();
    loop {
        let n = stored(db);
        if n > more_than {
            return n;
        }
        if let Ok(Some(status)) = hub.try_wait() {
            panic!("parkhub exited early: {status}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no new readings stored (have {n})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_killed_with_sigkill_leaves_sound_history_and_carries_on() {
    let server = SimServer::start(&[(1, "chint-dtsu666"), (2, "xintai-water")], false).await;
    let dir = tempfile::tempdir().unwrap();
    let config = run_config(dir.path(), &server.addr.to_string());
    let db = dir.path().join("data/history.sqlite");

    for round in 0..3 {
        let mut hub = parkhub()
            .args(["run", "--config", config.to_str().unwrap()])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let before = stored(&db);
        wait_stored(&db, before + 50, &mut hub).await;
        // In the middle of polling and writing.
        tokio::time::sleep(Duration::from_millis(137 * (round + 1))).await;
        hub.kill().unwrap(); // SIGKILL
        hub.wait().unwrap();
        let conn = rusqlite::Connection::open(&db).unwrap();
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok", "round {round}");
        assert!(stored(&db) > before, "round {round}: readings survived");
    }

    // A clean stop (SIGTERM) flushes and exits 0.
    let mut hub = parkhub()
        .args(["run", "--config", config.to_str().unwrap()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let before = stored(&db);
    wait_stored(&db, before, &mut hub).await;
    let status = Command::new("kill")
        .args(["-TERM", &hub.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || hub.wait().unwrap())
        .await
        .unwrap();
    assert!(exit.success(), "{exit}");

    // Everything stored can be exported.
    let out = history(&config, "em", "voltage_a", &["--csv"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let csv = text(&out.stdout);
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("ts,value"));
    let rows: Vec<&str> = lines.collect();
    assert!(rows.len() >= 4, "{csv}");
    for row in rows {
        let (ts, v) = row.split_once(',').unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc3339(ts)
                .is_ok_and(|t| t.offset().local_minus_utc() == 8 * 3600),
            "{row}"
        );
        let v: f64 = v.parse().unwrap();
        assert!((200.0..240.0).contains(&v), "{row}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_reports_an_unknown_point_plainly() {
    let server = SimServer::start(&[(1, "chint-dtsu666")], false).await;
    let dir = tempfile::tempdir().unwrap();
    let config = run_config(dir.path(), &server.addr.to_string());
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    let out = history(&config, "em", "voltage_a", &["--csv"]).await;
    assert!(
        text(&out.stderr).contains("no history at"),
        "{}",
        text(&out.stderr)
    );
    // An empty history database, as a hub leaves it before its first poll.
    parkhub::store::open(&dir.path().join("data/history.sqlite")).unwrap();
    let out = history(&config, "em", "volume", &["--csv"]).await;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("no history for em.volume"), "{err}");
    let out = history(&config, "pump", "volume", &[]).await;
    assert!(
        text(&out.stderr).contains("no device `pump`"),
        "{}",
        text(&out.stderr)
    );
    let out = history(&config, "em", "voltage_a", &["--from", "yesterday"]).await;
    assert!(
        text(&out.stderr).contains("is not a time"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_demo_runs_without_set_up_and_reads_every_meter() {
    let out = parkhub()
        .args(["demo", "--seconds", "7", "--every", "6"])
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("parkhub demo"));
    for device in [
        "em-b3-main",
        "em-b3-2f",
        "em-b3-ac",
        "em-b5-shop",
        "em-b5-office",
        "wm-main",
        "wm-b3",
        "wm-b5",
        "smoke-b3-2f-07",
        "lift-b3-1",
        "ebike-b5",
        "fire-panel",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(device))
            .unwrap_or_else(|| panic!("{device} in\n{stdout}"));
        assert!(line.contains("online"), "{line}");
    }
    assert!(stdout.contains("power_total"), "{stdout}");
    assert!(stdout.contains("readings stored so far"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_prints_a_console_login_of_its_own_that_works() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_parkhub"))
        .args(["demo", "--seconds", "30", "--every", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            if l.trim_start().starts_with("console") {
                return l;
            }
        }
        panic!("the demo ended without printing its console");
    })
    .await
    .expect("the console line within 20 s");
    // `console  http://127.0.0.1:PORT/  (user demo, password for this run: HEX)`
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    let password = line
        .rsplit("password for this run: ")
        .next()
        .unwrap()
        .trim_end_matches(')')
        .to_string();
    assert!(password.len() >= 16, "{line}");

    let c = cookie_client();
    let wrong = c
        .post(format!("{url}/api/v1/login"))
        .json(&serde_json::json!({ "user": "demo", "password": "demo" }))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401, "no default password");
    let res = c
        .post(format!("{url}/api/v1/login"))
        .json(&serde_json::json!({ "user": "demo", "password": password }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let me: serde_json::Value = c
        .get(format!("{url}/api/v1/me"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["user"], "demo");
    let page = c.get(format!("{url}/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let _ = child.kill().await;
}
