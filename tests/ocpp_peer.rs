//! The OCPP 1.6J central system against an independent charge point: mobilityhouse's `ocpp`
//! package on `websockets` (tests/peers/ocpp_cp.py, pinned in tests/peers/requirements.txt).
//! Each test starts a whole hub (`App::start`, API and chargers on one loopback port), runs the
//! peer as a child process with a scenario, and checks both sides: what the charger heard (one
//! JSON line per step on the peer's stdout) and what the hub made of it (latest values, the
//! charging log, alarms, the API).
//!
//! The peer is not optional: without Python 3 and its packages these tests fail, saying how to
//! install them (`./scripts/test` does).

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{http_client, load, wait_until};
use parkhub::app::App;
use parkhub::reading::Value;
use reqwest::StatusCode;
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

const LIMIT: Duration = Duration::from_secs(20);

const VIEWER: &str = "viewer-token-0c1d";
const OPERATOR: &str = "operator-token-77ab";
/// The Basic-auth password of charger `cp-002` (charge point `CP002`).
const CP2_PASSWORD: &str = "pile 2: s3cret";

const INSTALL: &str = "the OCPP tests need python3 with ocpp==2.1.0 and websockets==17.4: \
                       run ./scripts/test, or pip install -r tests/peers/requirements.txt";

fn sha256(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Two chargers: `cp-001` (CP001, two connectors, no password) and `cp-002` (CP002, one
/// connector, password). `ocpp` goes into the `[ocpp]` section.
fn config(data: &Path, ocpp: &str) -> String {
    format!(
        r#"[hub]
id = "hz-ocpp-test"
name = "充电测试园"
data_dir = "{data}"
timezone = "Asia/Shanghai"
[api]
listen = "127.0.0.1:0"
[[api.token]]
name = "guard-room"
role = "viewer"
sha256 = "{viewer}"
[[api.token]]
name = "duty"
role = "operator"
sha256 = "{operator}"
[ocpp]
heartbeat_interval_s = 10
{ocpp}
[[device]]
id = "cp-001"
name = "地库1号快充桩"
profile = "ocpp16-charger"
charge_point_id = "CP001"
connectors = 2
location = {{ building = "地下车库", zone = "B1" }}
[[device]]
id = "cp-002"
name = "地库2号桩"
profile = "ocpp16-charger"
charge_point_id = "CP002"
connectors = 1
password_sha256 = "{cp2}"
"#,
        data = data.display(),
        viewer = sha256(VIEWER),
        operator = sha256(OPERATOR),
        cp2 = sha256(CP2_PASSWORD),
    )
}

/// A whole hub with its chargers' endpoint.
struct Park {
    app: Option<App>,
    api: String,
    ws: String,
    _dir: Option<tempfile::TempDir>,
}

impl Park {
    async fn start(ocpp: &str) -> Park {
        let dir = tempfile::tempdir().unwrap();
        let mut park = Park::start_in(dir.path(), ocpp).await;
        park._dir = Some(dir);
        park
    }

    /// A hub on `data` (which outlives it: a restart on the same data_dir).
    async fn start_in(data: &Path, ocpp: &str) -> Park {
        let loaded = load(&config(data, ocpp), data);
        let app = tokio::time::timeout(LIMIT, App::start(&loaded))
            .await
            .expect("the hub starts in time")
            .expect("the hub starts");
        let ocpp_addr = app.ocpp_addr.expect("the hub serves OCPP");
        assert_eq!(
            ocpp_addr, app.api_addr,
            "without [ocpp] listen, chargers connect to the API's port"
        );
        Park {
            api: format!("http://{}", app.api_addr),
            ws: format!("ws://{ocpp_addr}/ocpp"),
            app: Some(app),
            _dir: None,
        }
    }

    fn app(&self) -> &App {
        self.app.as_ref().unwrap()
    }

    async fn stop(mut self) {
        let app = self.app.take().unwrap();
        tokio::time::timeout(Duration::from_secs(30), app.stop(Duration::from_secs(5)))
            .await
            .expect("the hub stops within 30 s (does a task still hold the hub?)")
            .expect("the hub stops cleanly");
    }

    /// The peer running `args` against this hub.
    fn peer(&self, args: &[&str]) -> Peer {
        Peer::spawn(&self.ws, args)
    }

    async fn get(&self, path: &str) -> Json {
        let res = http_client()
            .get(format!("{}{path}", self.api))
            .bearer_auth(VIEWER)
            .timeout(LIMIT)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "GET {path}");
        res.json().await.unwrap()
    }

    /// `POST /api/v1/chargers/{device}/commands` with `token`: the status and the JSON body.
    async fn command(&self, device: &str, token: &str, body: Json) -> (StatusCode, Json) {
        let res = http_client()
            .post(format!("{}/api/v1/chargers/{device}/commands", self.api))
            .bearer_auth(token)
            .json(&body)
            .timeout(LIMIT)
            .send()
            .await
            .unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Json::String(text)),
        )
    }

    async fn charger(&self, device: &str) -> Json {
        let all = self.get("/api/v1/chargers").await;
        all.as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == device)
            .unwrap_or_else(|| panic!("no charger {device} in /api/v1/chargers: {all:#}"))
            .clone()
    }

    async fn sessions(&self, device: &str) -> Vec<Json> {
        self.get(&format!("/api/v1/sessions?device={device}"))
            .await
            .as_array()
            .unwrap()
            .clone()
    }

    async fn session(&self, device: &str, transaction_id: i64) -> Json {
        let all = self.sessions(device).await;
        all.iter()
            .find(|s| s["transaction_id"] == transaction_id)
            .unwrap_or_else(|| panic!("no session {transaction_id} in /api/v1/sessions: {all:#?}"))
            .clone()
    }

    /// Polls `GET /api/v1/alarms?state=…` until `done` holds for its list.
    async fn alarms_until(
        &self,
        state: &str,
        what: &str,
        done: impl Fn(&[Json]) -> bool,
    ) -> Vec<Json> {
        let start = Instant::now();
        loop {
            let list = self.get(&format!("/api/v1/alarms?state={state}")).await;
            let list = list.as_array().unwrap().clone();
            if done(&list) {
                return list;
            }
            assert!(
                start.elapsed() < LIMIT,
                "timed out after {LIMIT:?} waiting for {what}; alarms ({state}): {list:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn number(&self, point: &str) -> f64 {
        match self.app().hub.latest("cp-001", point).map(|l| l.value) {
            Some(Value::Number(n)) => n,
            other => panic!("cp-001 {point}: {other:?}, not a number"),
        }
    }

    fn text(&self, point: &str) -> String {
        match self.app().hub.latest("cp-001", point).map(|l| l.value) {
            Some(Value::Text(t)) => t,
            other => panic!("cp-001 {point}: {other:?}, not text"),
        }
    }

    fn unit(&self, point: &str) -> String {
        self.app()
            .hub
            .latest("cp-001", point)
            .and_then(|l| l.unit)
            .map(|u| u.to_string())
            .unwrap_or_default()
    }

    fn online(&self, device: &str) -> Option<bool> {
        self.app().hub.device(device).and_then(|d| d.online)
    }

    fn connected(&self, device: &str) -> bool {
        let central = self.app().ocpp.as_ref().unwrap();
        central.charger(device).is_some_and(|c| c.connected)
    }
}

impl Drop for Park {
    fn drop(&mut self) {
        if let Some(app) = self.app.take() {
            // A test that failed half-way: stop in the background, the runtime may be going.
            tokio::spawn(async move {
                let _ = app.stop(Duration::from_secs(5)).await;
            });
        }
    }
}

/// The newest alarm of `device` by rule (and point, for a connector's).
fn alarm<'a>(list: &'a [Json], device: &str, rule: &str, point: Option<&str>) -> Option<&'a Json> {
    list.iter().find(|a| {
        a["device_id"] == device && a["rule"] == rule && point.is_none_or(|p| a["point"] == p)
    })
}

fn active(a: Option<&Json>) -> bool {
    a.is_some_and(|a| a["condition"] == true)
}

fn assert_close(what: &str, got: f64, want: f64) {
    assert!((got - want).abs() < 1e-6, "{what}: got {got}, want {want}");
}

fn num(v: &Json) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("{v} is not a number"))
}

/// The independent charge point, one scenario of tests/peers/ocpp_cp.py, killed on drop.
struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    /// Every line it printed so far.
    log: Vec<Json>,
    what: String,
}

impl Peer {
    fn spawn(url: &str, args: &[&str]) -> Peer {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/ocpp_cp.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .args(args)
            .args(["--url", url])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3 {}: {e}; {INSTALL}", script.display()));
        let stdout = child.stdout.take().unwrap();
        Peer {
            stdin: child.stdin.take(),
            child,
            lines: BufReader::new(stdout).lines(),
            log: Vec::new(),
            what: format!("ocpp_cp.py {}", args.join(" ")),
        }
    }

    /// Its next line; `None` once it has closed its stdout.
    async fn next(&mut self) -> Option<Json> {
        let line = match tokio::time::timeout(LIMIT, self.lines.next_line()).await {
            Ok(line) => line.unwrap(),
            Err(_) => panic!(
                "{}: no line within {LIMIT:?}; so far: {:#?}",
                self.what, self.log
            ),
        }?;
        let v: Json = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("{}: a line that is not JSON ({e}): {line}", self.what));
        if v["step"] == "error" {
            let status = self.child.wait().await.ok();
            let hint = if status.and_then(|s| s.code()) == Some(3) {
                INSTALL
            } else {
                ""
            };
            panic!(
                "{}: {} (exit {status:?}) {hint}\nso far: {:#?}",
                self.what, v["message"], self.log
            );
        }
        self.log.push(v.clone());
        Some(v)
    }

    /// Reads up to its next line of `step`.
    async fn step(&mut self, step: &str) -> Json {
        loop {
            match self.next().await {
                Some(v) if v["step"] == step => return v,
                Some(_) => {}
                None => {
                    let status = self.child.wait().await.ok();
                    panic!(
                        "{}: ended (exit {status:?}) before step {step}; it said: {:#?}",
                        self.what, self.log
                    )
                }
            }
        }
    }

    /// Waits for it to pause at `at`.
    async fn paused(&mut self, at: &str) {
        let p = self.step("paused").await;
        assert_eq!(p["at"], at, "{}: paused at the wrong place", self.what);
    }

    /// Lets it go on from a pause (or, in `serve`, tells it to quit).
    async fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
    }

    async fn resume(&mut self) {
        self.say("go").await;
    }

    /// Reads the rest, waits for it to exit and checks that it ended well; its whole log.
    async fn finish(mut self) -> Vec<Json> {
        while self.next().await.is_some() {}
        drop(self.stdin.take());
        let status = tokio::time::timeout(LIMIT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{}: did not exit", self.what))
            .unwrap();
        assert!(
            status.success(),
            "{}: exit {status}; it said: {:#?}",
            self.what,
            self.log
        );
        assert_eq!(
            self.log.last().map(|v| &v["step"]),
            Some(&json!("done")),
            "{}: did not finish its scenario: {:#?}",
            self.what,
            self.log
        );
        std::mem::take(&mut self.log)
    }

    /// Kills it (SIGKILL): its TCP connection ends without a WebSocket goodbye.
    async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }
}

fn steps<'a>(log: &'a [Json], step: &str) -> Vec<&'a Json> {
    log.iter().filter(|v| v["step"] == step).collect()
}

// ---- a whole session ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_session_is_recorded_from_boot_to_stop() {
    let dir = tempfile::tempdir().unwrap();
    let park = Park::start_in(dir.path(), "").await;
    let mut cp = park.peer(&[
        "session",
        "--interactive",
        "--id-tag",
        "CARD-0001",
        "--meter-start",
        "10000",
    ]);

    let boot = cp.step("boot").await;
    assert_eq!(boot["status"], "Accepted");
    assert_eq!(boot["interval"], 10, "the heartbeat interval of [ocpp]");
    cp.paused("booted").await;
    assert_eq!(park.online("cp-001"), Some(true));
    assert_eq!(park.text("status"), "Available");
    assert_eq!(park.text("error_code"), "NoError");
    assert_eq!(park.text("connector1.status"), "Available");
    assert_eq!(park.text("connector2.error_code"), "NoError");
    assert_close("connector2.energy", park.number("connector2.energy"), 5.0);
    let c = park.charger("cp-001").await;
    assert_eq!(c["kind"], "ev");
    assert_eq!(c["charge_point_id"], "CP001");
    assert_eq!(c["connected"], true);
    assert_eq!(c["online"], true);
    assert_eq!(c["boot"]["vendor"], "ParkhubTest");
    assert_eq!(c["boot"]["model"], "PH-AC7-2");
    assert_eq!(c["boot"]["serial"], "SN-0001");
    assert_eq!(c["boot"]["firmware"], "1.2.3");
    assert_eq!(c["status"], "Available");
    assert_eq!(c["ports"].as_array().unwrap().len(), 2, "{c:#}");
    cp.resume().await;

    assert_eq!(cp.step("authorize").await["status"], "Accepted");
    let start = cp.step("start").await;
    assert_eq!(start["id_tag_status"], "Accepted");
    let tx = start["transaction_id"].as_i64().unwrap();
    assert!(tx > 0, "{start}");
    cp.paused("started").await;
    assert_eq!(park.text("connector1.status"), "Charging");
    assert_close(
        "connector1.session_energy",
        park.number("connector1.session_energy"),
        0.0,
    );
    let s = park.session("cp-001", tx).await;
    assert_eq!(s["connector"], 1);
    assert_eq!(s["id_tag"], "CARD-0001");
    assert_eq!(s["meter_start_wh"], 10000);
    assert_eq!(s["stopped_at"], Json::Null, "running: {s}");
    cp.resume().await;

    // Wh, W, A, V, Celsius, percent.
    cp.paused("metered-celsius").await;
    for (point, want, unit) in [
        ("connector1.energy", 12.5, "kWh"),
        ("connector1.session_energy", 2.5, "kWh"),
        ("connector1.power", 7200.0, "W"),
        ("connector1.current", 31.3, "A"),
        ("connector1.voltage", 230.1, "V"),
        ("connector1.temperature", 35.5, "°C"),
        ("connector1.soc", 40.0, "%"),
        ("power", 7200.0, "W"),
        ("energy", 17.5, "kWh"), // both connectors' registers: 12.5 + 5.0
    ] {
        assert_close(point, park.number(point), want);
        assert_eq!(park.unit(point), unit, "{point}");
    }
    cp.resume().await;

    // kWh, kW and the misspelled "Celcius".
    cp.paused("metered-celcius").await;
    for (point, want) in [
        ("connector1.energy", 15.0),
        ("connector1.session_energy", 5.0),
        ("connector1.power", 7000.0),
        ("connector1.temperature", 36.5),
        ("connector1.soc", 55.0),
        ("power", 7000.0),
        ("energy", 20.0),
    ] {
        assert_close(point, park.number(point), want);
    }
    let c = park.charger("cp-001").await;
    let port = &c["ports"][0];
    assert_eq!(port["port"], 1, "{c:#}");
    assert_eq!(port["status"], "Charging");
    assert_eq!(port["error_code"], "NoError");
    assert_close("port power_w", num(&port["power_w"]), 7000.0);
    assert_close("port energy_kwh", num(&port["energy_kwh"]), 15.0);
    assert_close("port temperature", num(&port["temperature"]), 36.5);
    assert_eq!(port["session"]["transaction_id"], tx);
    assert_eq!(port["session"]["id_tag"], "CARD-0001");
    assert_close(
        "port session energy",
        num(&port["session"]["energy_kwh"]),
        5.0,
    );
    assert_eq!(c["ports"][1]["session"], Json::Null);
    assert_close("charger power_w", num(&c["power_w"]), 7000.0);
    let s = park.session("cp-001", tx).await;
    assert_close("running session energy", num(&s["energy_kwh"]), 5.0);
    cp.resume().await;

    assert_eq!(cp.step("data_transfer").await["status"], "UnknownVendorId");
    assert_eq!(cp.step("stop").await["id_tag_status"], "Accepted");
    cp.paused("stopped").await;
    let s = park.session("cp-001", tx).await;
    assert!(s["stopped_at"].is_string(), "closed: {s}");
    assert_eq!(s["meter_stop_wh"], 15250);
    assert_eq!(s["stop_reason"], "EVDisconnected");
    assert_close("session energy", num(&s["energy_kwh"]), 5.25);
    for (point, want) in [
        ("connector1.session_energy", 5.25),
        ("connector1.energy", 15.25),
        ("connector1.power", 0.0),
        ("power", 0.0),
        ("energy", 20.25),
    ] {
        assert_close(point, park.number(point), want);
    }
    assert_eq!(park.text("connector1.status"), "Available");
    let c = park.charger("cp-001").await;
    assert_eq!(c["ports"][0]["session"], Json::Null, "{c:#}");
    cp.resume().await;
    cp.finish().await;
    let d = park.app().hub.device("cp-001").unwrap();
    assert_eq!(d.stats.rejected, 0, "nothing refused: {:?}", d.last_error);
    assert!(d.stats.messages >= 15, "{:?}", d.stats);
    park.stop().await;

    // The transaction id was stored before the charger heard it: a restarted hub goes on
    // from it, and the log still has the session.
    assert!(dir.path().join("charging.sqlite").exists());
    let park = Park::start_in(dir.path(), "").await;
    let s = park.session("cp-001", tx).await;
    assert_close(
        "session energy after a restart",
        num(&s["energy_kwh"]),
        5.25,
    );
    let mut cp = park.peer(&["start", "--id-tag", "CARD-0002", "--meter-start", "15250"]);
    let next = cp.step("start").await["transaction_id"].as_i64().unwrap();
    assert!(next > tx, "the next transaction id {next} after {tx}");
    cp.finish().await;
    let all = park.sessions("cp-001").await;
    let ids: Vec<&Json> = all.iter().map(|s| &s["transaction_id"]).collect();
    assert_eq!(ids, [&json!(next), &json!(tx)], "newest first");
    assert_eq!(all[0]["stopped_at"], Json::Null);
    park.stop().await;

    // A session running when the hub stopped is picked up again, and ends normally.
    let park = Park::start_in(dir.path(), "").await;
    let c = park.charger("cp-001").await;
    assert_eq!(c["ports"][0]["session"]["transaction_id"], next, "{c:#}");
    let back = park.peer(&[
        "resume",
        "--transaction-id",
        &next.to_string(),
        "--meter",
        "16250",
        "--meter-stop",
        "17250",
    ]);
    back.finish().await;
    let s = park.session("cp-001", next).await;
    assert!(s["stopped_at"].is_string(), "{s}");
    assert_close("resumed session energy", num(&s["energy_kwh"]), 2.0);
    assert_close(
        "connector1.session_energy",
        park.number("connector1.session_energy"),
        2.0,
    );
    park.stop().await;
}

// ---- faults ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_raises_the_right_alarms() {
    let park = Park::start("").await;
    let mut cp = park.peer(&["fault", "--interactive"]);
    cp.paused("booted").await;
    cp.resume().await;

    // Connector 1 faulted and too hot: a major "faulted" and a critical "hazard".
    cp.paused("hazard").await;
    let list = park
        .alarms_until("active", "connector 1's faulted and hazard alarms", |l| {
            active(alarm(l, "cp-001", "faulted", Some("connector1.status")))
                && active(alarm(l, "cp-001", "hazard", Some("connector1.error_code")))
        })
        .await;
    let faulted = alarm(&list, "cp-001", "faulted", Some("connector1.status")).unwrap();
    assert_eq!(faulted["severity"], "major", "{faulted:#}");
    assert_eq!(faulted["category"], "charger");
    let hazard = alarm(&list, "cp-001", "hazard", Some("connector1.error_code")).unwrap();
    assert_eq!(hazard["severity"], "critical", "{hazard:#}");
    assert_eq!(hazard["category"], "charger");
    assert_eq!(park.text("connector1.error_code"), "HighTemperature");
    let c = park.charger("cp-001").await;
    assert_eq!(c["ports"][0]["status"], "Faulted");
    assert_eq!(c["ports"][0]["error_code"], "HighTemperature");
    assert_eq!(c["ports"][0]["info"], "gun at 92 C (E-OT-01)");
    cp.resume().await;

    // OtherError on connector 2: major; the charger as a whole faulted with a ground fault.
    cp.paused("errors").await;
    let list = park
        .alarms_until("active", "the error and charger-level alarms", |l| {
            active(alarm(l, "cp-001", "error", Some("connector2.error_code")))
                && active(alarm(l, "cp-001", "charger_faulted", None))
                && active(alarm(l, "cp-001", "charger_hazard", None))
        })
        .await;
    let error = alarm(&list, "cp-001", "error", Some("connector2.error_code")).unwrap();
    assert_eq!(error["severity"], "major", "{error:#}");
    assert_eq!(error["category"], "charger");
    let whole = alarm(&list, "cp-001", "charger_faulted", None).unwrap();
    assert_eq!(whole["severity"], "major", "{whole:#}");
    assert_eq!(whole["point"], "status");
    let ground = alarm(&list, "cp-001", "charger_hazard", None).unwrap();
    assert_eq!(ground["severity"], "critical", "{ground:#}");
    assert_eq!(ground["point"], "error_code");
    // A hazard is not also an "error", and an available connector is not "faulted".
    assert!(
        alarm(&list, "cp-001", "error", Some("connector1.error_code")).is_none(),
        "{list:#?}"
    );
    assert!(
        alarm(&list, "cp-001", "charger_error", None).is_none(),
        "{list:#?}"
    );
    assert!(
        alarm(&list, "cp-001", "faulted", Some("connector2.status")).is_none(),
        "{list:#?}"
    );
    let c = park.charger("cp-001").await;
    assert_eq!(c["status"], "Faulted");
    assert_eq!(c["error_code"], "GroundFailure");
    assert_eq!(c["ports"][1]["error_code"], "OtherError");
    cp.resume().await;

    // Back to NoError: every one of them clears (none of these is latched).
    cp.paused("cleared").await;
    let raised = [
        ("faulted", Some("connector1.status")),
        ("hazard", Some("connector1.error_code")),
        ("error", Some("connector2.error_code")),
        ("charger_faulted", None),
        ("charger_hazard", None),
    ];
    let list = park
        .alarms_until("all", "every charger alarm cleared", |l| {
            raised.iter().all(|&(rule, point)| {
                alarm(l, "cp-001", rule, point).is_some_and(|a| a["condition"] == false)
            })
        })
        .await;
    for (rule, point) in raised {
        let a = alarm(&list, "cp-001", rule, point).unwrap();
        assert!(a["cleared_at"].is_string(), "{rule} cleared: {a:#}");
    }
    let active_now = park.get("/api/v1/alarms?state=active").await;
    assert!(
        active_now
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["device_id"] != "cp-001" || a["condition"] == false),
        "no condition of cp-001 holds: {active_now:#}"
    );
    assert_eq!(park.text("connector1.status"), "Available");
    assert_eq!(park.text("error_code"), "NoError");
    cp.resume().await;
    cp.finish().await;
    park.stop().await;
}

// ---- what a charger may get wrong ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_callerrors_and_the_connection_survives() {
    let park = Park::start("").await;
    let log = park.peer(&["malformed"]).finish().await;
    let answers = steps(&log, "answer");
    let by_case = |case: &str| {
        *answers
            .iter()
            .find(|a| a["case"] == case)
            .unwrap_or_else(|| panic!("no case {case}: {log:#?}"))
    };
    for (case, code) in [
        ("unknown action", Some("NotImplemented")),
        ("central system's action", Some("NotSupported")),
        ("missing field", Some("OccurenceConstraintViolation")),
        ("null field", Some("OccurenceConstraintViolation")),
        ("wrong type", Some("TypeConstraintViolation")),
        ("fraction for an integer", Some("TypeConstraintViolation")),
        (
            "value outside the enumeration",
            Some("PropertyConstraintViolation"),
        ),
        ("id tag too long", Some("PropertyConstraintViolation")),
        ("no date-time", Some("PropertyConstraintViolation")),
        ("five elements", Some("FormationViolation")),
        ("payload not an object", Some("FormationViolation")),
        ("message id too long", Some("FormationViolation")),
        ("three elements", Some("ProtocolError")),
        ("not JSON", None),
        ("an object", None),
        ("unknown message type", None),
        ("reply to no call", None),
        ("binary frame", None),
    ] {
        let a = by_case(case);
        assert_eq!(a["code"], json!(code), "{case}: {a}");
    }
    assert_eq!(
        by_case("data transfer")["result"],
        json!({"status": "UnknownVendorId"})
    );
    assert_eq!(by_case("boot")["result"]["status"], "Accepted");
    let open = steps(&log, "connection");
    assert_eq!(open[0]["open"], true);

    // The hub's side: every bad frame counted, on the one connection it kept open throughout.
    let central = park.app().ocpp.as_ref().unwrap();
    let bad = answers.iter().filter(|a| a.get("result").is_none()).count() as u64;
    assert_eq!(central.stats.bad_frames.load(Ordering::Relaxed), bad);
    assert_eq!(central.stats.connections.load(Ordering::Relaxed), 1);
    let d = park.app().hub.device("cp-001").unwrap();
    assert_eq!(d.online, Some(true));
    assert_eq!(d.stats.rejected, bad);
    assert!(d.last_error.is_some());
    assert!(
        park.sessions("cp-001").await.is_empty(),
        "a refused StartTransaction starts nothing"
    );
    park.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_charger_is_refused_at_the_handshake() {
    let park = Park::start("").await;
    let log = park
        .peer(&["connect-only", "--cp", "CP404", "--expect-status", "404"])
        .finish()
        .await;
    assert_eq!(steps(&log, "handshake")[0]["status"], 404);
    // The id is the whole last segment: a known id inside a longer one is still unknown.
    park.peer(&["connect-only", "--cp", "CP0011", "--expect-status", "404"])
        .finish()
        .await;
    let central = park.app().ocpp.as_ref().unwrap();
    assert_eq!(central.stats.unknown_chargers.load(Ordering::Relaxed), 2);
    assert_eq!(central.stats.connections.load(Ordering::Relaxed), 0);
    park.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_refused() {
    let park = Park::start("").await;
    for args in [
        ["--password", "wrong"].as_slice(),
        &[],
        // CP002's password under another user: the user must be the charger's own id.
        &["--user", "CP001", "--password", CP2_PASSWORD],
    ] {
        let mut all = vec!["connect-only", "--cp", "CP002", "--expect-status", "401"];
        all.extend_from_slice(args);
        let log = park.peer(&all).finish().await;
        assert_eq!(steps(&log, "handshake")[0]["status"], 401, "{args:?}");
    }
    assert_eq!(
        park.online("cp-002"),
        None,
        "a refused charger is not heard"
    );
    let log = park
        .peer(&["connect-only", "--cp", "CP002", "--password", CP2_PASSWORD])
        .finish()
        .await;
    assert_eq!(steps(&log, "handshake")[0]["status"], 101);
    assert_eq!(steps(&log, "heartbeat").len(), 1);
    assert_eq!(park.online("cp-002"), Some(true));
    let central = park.app().ocpp.as_ref().unwrap();
    assert_eq!(central.stats.bad_auth.load(Ordering::Relaxed), 3);
    assert_eq!(central.stats.connections.load(Ordering::Relaxed), 1);
    park.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_subprotocol_is_refused() {
    let park = Park::start("").await;
    let log = park
        .peer(&["connect-only", "--no-subprotocol", "--expect-status", "400"])
        .finish()
        .await;
    assert_eq!(steps(&log, "handshake")[0]["status"], 400);
    let central = park.app().ocpp.as_ref().unwrap();
    assert_eq!(central.stats.bad_subprotocol.load(Ordering::Relaxed), 1);
    assert_eq!(central.stats.connections.load(Ordering::Relaxed), 0);
    // The same charger offering ocpp1.6 gets it.
    let log = park.peer(&["connect-only"]).finish().await;
    assert_eq!(steps(&log, "handshake")[0]["subprotocol"], "ocpp1.6");
    park.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_list_refuses_unknown_id_tags() {
    let park =
        Park::start("authorize = \"local-list\"\nid_tags = [\"CARD-0001\", \"CARD-0002\"]").await;
    let log = park
        .peer(&[
            "authorize",
            "--id-tag",
            "CARD-0001",
            "--id-tag",
            "CARD-9999",
            "--start-with",
            "CARD-9999",
        ])
        .finish()
        .await;
    let auth = steps(&log, "authorize");
    assert_eq!(auth[0]["id_tag"], "CARD-0001");
    assert_eq!(auth[0]["status"], "Accepted");
    assert_eq!(auth[1]["id_tag"], "CARD-9999");
    assert_eq!(auth[1]["status"], "Invalid");
    let start = steps(&log, "start")[0];
    assert_eq!(start["id_tag_status"], "Invalid", "{start}");
    assert_eq!(steps(&log, "stop")[0]["id_tag_status"], "Invalid");
    // The charger stopped at once; the log has it, with its reason.
    let s = park
        .session("cp-001", start["transaction_id"].as_i64().unwrap())
        .await;
    assert_eq!(s["stop_reason"], "DeAuthorized", "{s}");
    assert_close("energy", num(&s["energy_kwh"]), 0.0);
    park.stop().await;
}

// ---- lost connections ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_is_picked_up_on_reconnect() {
    let park = Park::start("").await;
    let mut first = park.peer(&["start", "--hold", "--meter-start", "20000"]);
    let tx = first.step("start").await["transaction_id"]
        .as_i64()
        .unwrap();
    first.step("holding").await;
    assert_close("energy", park.number("connector1.session_energy"), 1.0);

    // The charger's process dies mid-session: the hub sees the socket close.
    first.kill().await;
    wait_until(LIMIT, "the hub to see the connection gone", || {
        !park.connected("cp-001")
    })
    .await;
    assert_eq!(
        park.online("cp-001"),
        Some(true),
        "not offline before offline_after_s of silence"
    );
    let (status, body) = park
        .command(
            "cp-001",
            OPERATOR,
            json!({"action": "Reset", "type": "Soft"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // It comes back (no new boot), loses its socket once more without a goodbye and reconnects
    // at once (before or after the hub has noticed), then connects anew while that connection
    // is still open (the new one wins, the old one is closed), and finishes the session.
    let mut back = park.peer(&[
        "resume",
        "--interactive",
        "--transaction-id",
        &tx.to_string(),
        "--meter",
        "22000",
        "--meter-stop",
        "23000",
        "--drop",
        "--overlap",
    ]);
    back.step("dropped").await;
    back.step("reconnected").await;
    back.step("overlapped").await;
    back.step("replaced").await;
    back.paused("resumed").await;
    assert!(park.connected("cp-001"));
    assert_eq!(park.online("cp-001"), Some(true));
    let central = park.app().ocpp.as_ref().unwrap();
    assert_eq!(central.stats.connections.load(Ordering::Relaxed), 4);
    let c = park.charger("cp-001").await;
    assert_eq!(c["connected"], true);
    assert_eq!(c["ports"][0]["status"], "Charging");
    assert_eq!(c["ports"][0]["session"]["transaction_id"], tx, "{c:#}");
    let s = park.session("cp-001", tx).await;
    assert_eq!(s["stopped_at"], Json::Null);
    assert_close("energy after reconnecting", num(&s["energy_kwh"]), 2.5);
    back.resume().await;
    back.finish().await;

    let s = park.session("cp-001", tx).await;
    assert!(s["stopped_at"].is_string(), "{s}");
    assert_eq!(s["meter_stop_wh"], 23000);
    assert_close("session energy", num(&s["energy_kwh"]), 3.0);
    assert_close(
        "connector1.session_energy",
        park.number("connector1.session_energy"),
        3.0,
    );
    assert_eq!(
        park.sessions("cp-001").await.len(),
        1,
        "one session, not two"
    );
    park.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_charger_goes_offline_until_it_talks_again() {
    let park = Park::start("offline_after_s = 11").await;
    let mut cp = park.peer(&["heartbeat", "--boot", "--hold", "--max-silence", "20"]);
    cp.step("holding").await;
    let silent_since = Instant::now();
    assert_eq!(park.online("cp-001"), Some(true));

    let list = park
        .alarms_until("active", "cp-001's offline alarm", |l| {
            active(alarm(l, "cp-001", "offline", None))
        })
        .await;
    let waited = silent_since.elapsed();
    assert!(
        waited >= Duration::from_secs(10),
        "offline after only {waited:?}"
    );
    let a = alarm(&list, "cp-001", "offline", None).unwrap();
    assert_eq!(a["severity"], "major", "{a:#}");
    assert_eq!(a["category"], "comm");
    assert_eq!(park.online("cp-001"), Some(false));
    // The silent socket is taken for dead and closed, so a reconnection is never refused.
    let closed = cp.step("closed").await;
    assert_eq!(closed["by"], "hub");
    cp.finish().await;
    assert!(!park.connected("cp-001"));
    let c = park.charger("cp-001").await;
    assert_eq!(c["online"], false);
    assert_eq!(c["connected"], false);

    park.peer(&["heartbeat"]).finish().await;
    assert_eq!(park.online("cp-001"), Some(true));
    park.alarms_until("all", "the offline alarm cleared", |l| {
        alarm(l, "cp-001", "offline", None).is_some_and(|a| a["condition"] == false)
    })
    .await;
    park.stop().await;
}

// ---- operators' commands ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_reach_the_charger_and_return_its_answer() {
    let park = Park::start("command_timeout_s = 1").await;
    let reset = json!({"action": "Reset", "type": "Soft"});
    let (status, body) = park.command("cp-001", OPERATOR, reset.clone()).await;
    assert_eq!(status, StatusCode::CONFLICT, "not connected: {body}");
    let (status, body) = park.command("cp-404", OPERATOR, reset.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    let mut cp = park.peer(&[
        "serve",
        "--answer",
        "RemoteStopTransaction=Accepted",
        "--answer",
        "Reset=Accepted,callerror:GenericError",
        "--answer",
        "UnlockConnector=Unlocked,silent",
        "--answer",
        "ChangeAvailability=Scheduled",
        "--silent-for",
        "3",
    ]);
    cp.step("ready").await;

    let (status, body) = park.command("cp-001", VIEWER, reset.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a viewer: {body}");

    for (body, heard, answer) in [
        (
            json!({"action": "RemoteStopTransaction", "transaction_id": 42}),
            json!({"transactionId": 42}),
            "Accepted",
        ),
        (reset.clone(), json!({"type": "Soft"}), "Accepted"),
        (
            json!({"action": "UnlockConnector", "connector": 1}),
            json!({"connectorId": 1}),
            "Unlocked",
        ),
        (
            json!({"action": "ChangeAvailability", "connector": 0, "type": "Inoperative"}),
            json!({"connectorId": 0, "type": "Inoperative"}),
            "Scheduled",
        ),
    ] {
        let action = body["action"].clone();
        let (status, got) = park.command("cp-001", OPERATOR, body).await;
        assert_eq!(status, StatusCode::OK, "{action}: {got}");
        assert_eq!(got["action"], action);
        assert_eq!(got["status"], answer, "{got}");
        assert_eq!(got["answer"], json!({ "status": answer }));
        let received = cp.step("received").await;
        assert_eq!(
            received["action"], action,
            "the viewer's command never went out"
        );
        assert_eq!(received["payload"], heard, "{action}");
    }

    // The charger refuses with a CALLERROR: 502, with its error.
    let (status, got) = park
        .command(
            "cp-001",
            OPERATOR,
            json!({"action": "Reset", "type": "Hard"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{got}");
    assert!(got.to_string().contains("GenericError"), "{got}");
    let received = cp.step("received").await;
    assert_eq!(received["payload"], json!({"type": "Hard"}));

    // The charger answers after command_timeout_s: 504.
    let asked = Instant::now();
    let (status, got) = park
        .command(
            "cp-001",
            OPERATOR,
            json!({"action": "UnlockConnector", "connector": 2}),
        )
        .await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{got}");
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(cp.step("received").await["answer"], "silent");

    cp.say("quit").await;
    cp.finish().await;
    wait_until(LIMIT, "the charger gone", || !park.connected("cp-001")).await;
    let (status, body) = park.command("cp-001", OPERATOR, reset).await;
    assert_eq!(status, StatusCode::CONFLICT, "gone again: {body}");
    park.stop().await;
}
