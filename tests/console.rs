//! The web console in a real browser: a whole hub (meters and an e-bike charging station on the
//! in-process Modbus server, a smoke detector on the embedded MQTT broker, an EV charger played
//! by the simulated OCPP charge point, history with a few days of energy use), and headless
//! Chromium driven by Playwright (`tests/browser/console.mjs`): log in, see an alarm appear live
//! without reloading, acknowledge it, see the energy chart, on a phone screen and in English;
//! on the charging page see a port start charging live, its session logged, a fault alarm on
//! the charger, and stop a session with the charger's answer shown. The screenshots are kept in
//! `target/artifacts/console/` for CI.
//!
//! Needs Debian's `chromium` and Node.js (`./scripts/test` installs them); `npm ci` of
//! `tests/browser` runs here when its modules are missing.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Path;
use axum::routing::post;
use chrono::Utc;
use common::*;
use parkhub::app::App;
use parkhub::config::Role;
use parkhub::ocpp::messages::ChargePointErrorCode;
use parkhub::ocpp::sim::{SimCharger, SimConfig, SimControl};
use parkhub::reading::{Reading, Value};
use parkhub::users::Users;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

const PASSWORD: &str = "night shift 2026";
const VIEWER_PASSWORD: &str = "just looking 2026";
const ALARM_DEVICE: &str = "smoke-browser-01";
const CHARGER: &str = "cp-browser-01";
const CHARGE_POINT_ID: &str = "CP-BROWSER-01";
const EBIKE: &str = "ebike-b5";
const EBIKE_UNIT: u8 = 3;

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
[ocpp]
heartbeat_interval_s = 10
[[device]]
id = "{CHARGER}"
name = "地库1号充电桩"
profile = "ocpp16-charger"
charge_point_id = "{CHARGE_POINT_ID}"
connectors = 2
location = {{ building = "3号楼", floor = "B1", zone = "充电区" }}
[[device]]
id = "{EBIKE}"
name = "5号楼电动自行车充电站"
profile = "modbus-ebike-station"
bus = "meters"
unit = {EBIKE_UNIT}
poll_interval_s = 2
location = {{ building = "5号楼", floor = "1F", zone = "车棚" }}
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

/// The EV charger of the park: the simulated OCPP 1.6J charge point, connected to the hub's
/// central system and played by the browser test through [`charger_control`].
fn spawn_charger(app: &App, stop: &CancellationToken) -> SimControl {
    let addr = app.ocpp_addr.expect("the hub serves OCPP");
    let (sim, control) = SimCharger::new(SimConfig {
        url: format!("ws://{addr}/ocpp"),
        charge_point_id: CHARGE_POINT_ID.into(),
        password: None,
        connectors: 2,
        meter_interval: Duration::from_secs(1),
        max_power_w: 7000.0,
        vendor: "ParkSim".into(),
        model: "AC7-2".into(),
        seed: 7,
        autoplay: false,
    });
    tokio::spawn(sim.run(stop.clone()));
    control
}

/// `POST /charger/start/{connector}/{id_tag}`, `/charger/stop/{connector}`,
/// `/charger/fault/{connector}` (HighTemperature): what a driver and the charger itself do.
fn charger_control(control: SimControl) -> axum::Router {
    let (start, stop, fault) = (control.clone(), control.clone(), control);
    axum::Router::new()
        .route(
            "/charger/start/{connector}/{tag}",
            post(move |Path((connector, tag)): Path<(u32, String)>| {
                let c = start.clone();
                async move {
                    c.start(connector, &tag).await;
                    "started"
                }
            }),
        )
        .route(
            "/charger/stop/{connector}",
            post(move |Path(connector): Path<u32>| {
                let c = stop.clone();
                async move {
                    c.stop(connector).await;
                    "stopped"
                }
            }),
        )
        .route(
            "/charger/fault/{connector}",
            post(move |Path(connector): Path<u32>| {
                let c = fault.clone();
                async move {
                    c.fault(connector, ChargePointErrorCode::HighTemperature)
                        .await;
                    "faulted"
                }
            }),
        )
}

/// The e-bike station's ports as the screenshot shows them: the simulator's mix of charging,
/// full and idle ports, one in fault, the cabinet calm.
fn pin_station(sim: &SimServer) {
    let pin = |point: &str, value: Value| sim.sim.pin(EBIKE_UNIT, point, value);
    pin("smoke", Value::Bool(false));
    pin("temperature", Value::Number(28.5));
    pin("port3.state", Value::Text("fault".into()));
    pin("port3.fault", Value::Text("overload".into()));
    pin("port3.power_w", Value::Number(0.0));
    pin("port3.temperature", Value::Number(41.0));
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
    let sim = SimServer::start(
        &[
            (1, "chint-dtsu666"),
            (2, "chint-dtsu666"),
            (EBIKE_UNIT, "modbus-ebike-station"),
        ],
        false,
    )
    .await;
    pin_station(&sim);
    let dir = tempfile::tempdir().unwrap();
    let mqtt = free_port();
    let loaded = load(&config(dir.path(), sim.addr, mqtt), dir.path());
    let users = Users::open(&dir.path().join(parkhub::users::DB_FILE)).unwrap();
    users.add("duty", Role::Operator, PASSWORD).unwrap();
    users.add("guest", Role::Viewer, VIEWER_PASSWORD).unwrap();
    drop(users);
    let app = App::start(&loaded).await.expect("the hub starts");
    let chargers_stop = CancellationToken::new();
    let charger = spawn_charger(&app, &chargers_stop);
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
    let trigger = charger_control(charger).route(
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
        .env(
            "PARKHUB_CHARGER_CONTROL",
            format!("http://{trigger_addr}/charger"),
        )
        .env("PARKHUB_CHARGER_DEVICE", CHARGER)
        .env("PARKHUB_EBIKE_DEVICE", EBIKE)
        .env("PARKHUB_VIEWER_USER", "guest")
        .env("PARKHUB_VIEWER_PASSWORD", VIEWER_PASSWORD)
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
    assert!(stdout.contains("8 passed, 0 failed"), "{stdout}");
    for shot in [
        "01-login.png",
        "03-alarm-live.png",
        "04-acked.png",
        "05-energy.png",
        "06-phone.png",
        "08-chargers.png",
        "09-chargers-phone.png",
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

    // The charging log has both sessions: the one the driver ended at the charger, and the one
    // the operator stopped from the console, which the charger took as a remote stop.
    let log = app
        .ocpp
        .as_ref()
        .expect("the central system runs")
        .sessions(Some(CHARGER.into()), 10)
        .await
        .unwrap();
    let reason_of = |tag: &str| {
        log.iter()
            .find(|s| s.id_tag == tag)
            .unwrap_or_else(|| panic!("no session of {tag} in {log:?}"))
            .stop_reason
            .clone()
    };
    assert_eq!(reason_of("BROWSER-TAG-1").as_deref(), Some("Local"));
    assert_eq!(reason_of("BROWSER-TAG-2").as_deref(), Some("Remote"));

    chargers_stop.cancel();
    app.stop(Duration::from_secs(5)).await.unwrap();
    drop(sim);
}
