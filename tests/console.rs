//! The web console in a real browser: a whole hub (meters on the in-process Modbus server, a
//! smoke detector on the embedded MQTT broker, history with a few days of energy use), and
//! headless Chromium driven by Playwright (`tests/browser/console.mjs`): log in, see an alarm
//! appear live without reloading, acknowledge it, see the energy chart, on a phone screen and
//! in English. The screenshots are kept in `target/artifacts/console/` for CI.
//!
//! Needs Debian's `chromium` and Node.js (`./scripts/test` installs them); `npm ci` of
//! `tests/browser` runs here when its modules are missing.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::post;
use chrono::Utc;
use common::*;
use parkhub::app::App;
use parkhub::config::Role;
use parkhub::reading::{Reading, Value};
use parkhub::users::Users;
use tokio::sync::Mutex;

const PASSWORD: &str = "night shift 2026";
const ALARM_DEVICE: &str = "smoke-browser-01";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn config(dir: &std::path::Path, meters: std::net::SocketAddr, mqtt: u16) -> String {
    format!(
        r#"[hub]
id = "hz-browser"
name = "浏览器测试园区"
data_dir = "{data}"
[api]
listen = "127.0.0.1:0"
[mqtt]
broker = "embedded"
listen = "127.0.0.1:{mqtt}"
[[bus]]
id = "meters"
kind = "tcp"
address = "{meters}"
[[device]]
id = "em-b3-main"
name = "3号楼总表"
profile = "chint-dtsu666"
bus = "meters"
unit = 1
poll_interval_s = 2
location = {{ building = "3号楼", floor = "1F" }}
[[device]]
id = "em-b5-main"
name = "5号楼总表"
profile = "chint-dtsu666"
bus = "meters"
unit = 2
poll_interval_s = 2
location = {{ building = "5号楼", floor = "1F" }}
[[device]]
id = "{ALARM_DEVICE}"
name = "3号楼2层烟感"
profile = "mqtt-smoke-detector"
topic = "park/b3/2f/smoke-01"
location = {{ building = "3号楼", floor = "2F" }}
"#,
        data = dir.display(),
    )
}

/// Ten days of both main meters' energy counters before their first live reading, one reading
/// an hour: the chart has days to draw from the first load.
async fn seed_energy(app: &App) {
    let hub = app.hub.clone();
    wait_until(
        Duration::from_secs(20),
        "the meters' first energy readings",
        || {
            ["em-b3-main", "em-b5-main"]
                .iter()
                .all(|d| hub.latest(d, "energy_import").is_some())
        },
    )
    .await;
    let start = Utc::now().timestamp() - 10 * 86_400;
    for (i, device) in ["em-b3-main", "em-b5-main"].into_iter().enumerate() {
        let now = match hub.latest(device, "energy_import").map(|l| l.value) {
            Some(Value::Number(v)) => v,
            other => panic!("{device} energy_import: {other:?}"),
        };
        let per_hour = 10.0 + 5.0 * i as f64;
        let batch: Vec<Reading> = (0..240)
            .map(|h| Reading {
                device: device.into(),
                point: "energy_import".into(),
                value: Value::Number(now - (240 - h) as f64 * per_hour),
                unit: Some("kWh".into()),
                ts: chrono::DateTime::from_timestamp(start + h * 3600, 0).unwrap(),
            })
            .collect();
        app.hub.ingest(batch).await;
    }
    app.writer.flush().await.unwrap();
}

/// The browser's modules: `npm ci` from the lock file when they are not there yet.
fn browser_modules() {
    let dir = repo().join("tests/browser");
    if dir
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--prefix"])
        .arg(&dir)
        .status()
        .expect("npm runs (./scripts/test installs Node.js)");
    assert!(status.success(), "npm ci --prefix tests/browser failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_logs_in_sees_a_fire_alarm_arrive_live_acknowledges_it_and_reads_the_energy_chart()
{
    browser_modules();
    let sim = SimServer::start(&[(1, "chint-dtsu666"), (2, "chint-dtsu666")], false).await;
    let dir = tempfile::tempdir().unwrap();
    let mqtt = free_port();
    let loaded = load(&config(dir.path(), sim.addr, mqtt), dir.path());
    Users::open(&dir.path().join(parkhub::users::DB_FILE))
        .unwrap()
        .add("duty", Role::Operator, PASSWORD)
        .unwrap();
    let app = App::start(&loaded).await.expect("the hub starts");
    if let Some(mut s) = app.mqtt_subscribed.clone() {
        tokio::time::timeout(Duration::from_secs(15), s.wait_for(|n| *n > 0))
            .await
            .expect("the hub subscribed in time")
            .unwrap();
    }
    seed_energy(&app).await;

    // The trigger: a POST makes the detector report smoke, as a real one would over MQTT.
    let detector = Arc::new(Mutex::new(
        MqttDevice::connect(mqtt, "smoke-browser-01", None, None)
            .await
            .expect("the embedded broker takes the detector"),
    ));
    let trigger = axum::Router::new().route(
        "/smoke",
        post(move || {
            let detector = detector.clone();
            async move {
                detector
                    .lock()
                    .await
                    .publish(
                        "park/b3/2f/smoke-01",
                        r#"{"smoke":true,"temperature":31.5,"battery":90,"tamper":false}"#,
                    )
                    .await;
                "published"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trigger_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, trigger).await });

    let shots = repo().join("target/artifacts/console");
    std::fs::create_dir_all(&shots).unwrap();
    let mut node = tokio::process::Command::new("node");
    node.arg(repo().join("tests/browser/console.mjs"))
        .current_dir(repo())
        .env("PARKHUB_URL", format!("http://{}", app.api_addr))
        .env("PARKHUB_USER", "duty")
        .env("PARKHUB_PASSWORD", PASSWORD)
        .env("PARKHUB_TRIGGER", format!("http://{trigger_addr}/smoke"))
        .env("PARKHUB_ALARM_DEVICE", ALARM_DEVICE)
        .env("SCREENSHOT_DIR", &shots)
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(240), node.output())
        .await
        .expect("the browser test ends within 4 minutes")
        .expect("node runs (./scripts/test installs Node.js)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "the browser test failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("7 passed, 0 failed"), "{stdout}");
    for shot in [
        "01-login.png",
        "03-alarm-live.png",
        "04-acked.png",
        "05-energy.png",
        "06-phone.png",
    ] {
        let len = std::fs::metadata(shots.join(shot))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(len > 1000, "screenshot {shot} was not taken");
    }

    // What the browser did reached the hub: the alarm is acknowledged by the console's user.
    let open = app
        .alarms
        .list(parkhub::alarm::store::Listing::All, 10)
        .unwrap();
    let fire = open
        .iter()
        .find(|a| a.key.scope.id().as_ref() == ALARM_DEVICE)
        .expect("the fire alarm is stored");
    assert_eq!(fire.acked_by.as_deref(), Some("duty"));
    app.stop(Duration::from_secs(5)).await.unwrap();
    drop(sim);
}
