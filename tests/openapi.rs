//! The API against its own OpenAPI document: the real hub binary with a Modbus meter and an
//! e-bike station on the in-process simulator, MQTT sensors on the embedded broker and an EV
//! charger that has not connected, and schemathesis (tests/peers/requirements.txt pins it;
//! scripts/test installs it) generating requests from `/api/v1/openapi.json` with an admin
//! token: no 5xx, and every answer's status, content type, headers and body as documented.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, MqttDevice, SimServer};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The version tests/peers/requirements.txt pins: the CLI's options and checks are its.
const SCHEMATHESIS: &str = "4.32.5";

/// Test cases per operation and phase: enough to reach every status an operation has in a few
/// minutes on two cores. `PARKHUB_SCHEMATHESIS_EXAMPLES` and `PARKHUB_SCHEMATHESIS_SEED` set
/// another number and seed, for a longer hunt by hand.
const EXAMPLES: &str = "40";
const SEED: &str = "20261127";

struct Hub {
    child: Child,
    base: String,
    token: String,
    _dir: tempfile::TempDir,
    _sim: SimServer,
    _sensors: Vec<MqttDevice>,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn random_token() -> String {
    let mut b = [0u8; 24];
    getrandom::fill(&mut b).unwrap();
    hex::encode(b)
}

fn config(dir: &Path, api: u16, mqtt: u16, modbus: std::net::SocketAddr, token: &str) -> String {
    format!(
        r#"
[hub]
id = "openapi-park"
name = "OpenAPI 测试园区"
data_dir = "{data}"

[api]
listen = "127.0.0.1:{api}"

[[api.token]]
name = "schemathesis"
role = "admin"
sha256 = "{sha}"

[mqtt]
broker = "embedded"
listen = "127.0.0.1:{mqtt}"

# The document's bound (the config's own may be lower; a hub answers 400 beyond it).
[alarms]
max_shelve_minutes = 10080

[[bus]]
id = "gw-1"
kind = "tcp"
address = "{modbus}"
timeout_ms = 500

[[device]]
id = "em-1"
name = "3号楼总表"
profile = "chint-dtsu666"
bus = "gw-1"
unit = 1
poll_interval_s = 1
location = {{ building = "3号楼", floor = "1F" }}

[[device]]
id = "eb-1"
profile = "modbus-ebike-station"
bus = "gw-1"
unit = 2
location = {{ building = "3号楼", zone = "车棚" }}

[[device]]
id = "smoke-1"
profile = "mqtt-smoke-detector"
topic = "park/b3/smoke-1"
location = {{ building = "3号楼", floor = "2F" }}

[[device]]
id = "env-1"
profile = "mqtt-env-sensor"
topic = "park/b3/env-1"

[[device]]
id = "ev-1"
profile = "ocpp16-charger"
connectors = 2
"#,
        data = dir.join("data").display(),
        sha = hex::encode(Sha256::digest(token.as_bytes())),
    )
}

async fn get(client: &reqwest::Client, hub: &Hub, path: &str) -> Option<Value> {
    let res = client
        .get(format!("{}{path}", hub.base))
        .bearer_auth(&hub.token)
        .send()
        .await
        .ok()?;
    if !res.status().is_success() {
        return None;
    }
    res.json().await.ok()
}

/// The hub, up, with meter readings and a raised smoke alarm to answer with.
async fn park() -> Hub {
    let sim = SimServer::start(&[(1, "chint-dtsu666"), (2, "modbus-ebike-station")], false).await;
    let dir = tempfile::tempdir().unwrap();
    let (api, mqtt) = (free_port(), free_port());
    let token = random_token();
    let path = dir.path().join("parkhub.toml");
    std::fs::write(&path, config(dir.path(), api, mqtt, sim.addr, &token)).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_parkhub"))
        .env("RUST_LOG", "warn")
        .args(["run", "--config", path.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the hub starts");
    let mut hub = Hub {
        child,
        base: format!("http://127.0.0.1:{api}"),
        token,
        _dir: dir,
        _sim: sim,
        _sensors: Vec::new(),
    };
    let client = common::http_client();
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&client, &hub, "/api/v1/health").await.is_none() {
        assert!(Instant::now() < deadline, "the hub's API did not come up");
        assert!(hub.child.try_wait().unwrap().is_none(), "the hub exited");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut smoke = MqttDevice::connect(mqtt, "smoke-1", None, None)
        .await
        .expect("the embedded broker takes sensors");
    let mut env = MqttDevice::connect(mqtt, "env-1", None, None)
        .await
        .expect("the embedded broker takes sensors");
    // Until the hub has subscribed a message is lost: repeat until it shows.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        smoke
            .publish("park/b3/smoke-1", r#"{"smoke":true,"battery":87}"#)
            .await;
        env.publish(
            "park/b3/env-1",
            r#"{"temperature":24.5,"humidity":51,"co2":640}"#,
        )
        .await;
        let alarms = get(&client, &hub, "/api/v1/alarms").await;
        let meter = get(&client, &hub, "/api/v1/devices/em-1/latest").await;
        let ready = alarms.is_some_and(|a| a.as_array().is_some_and(|a| !a.is_empty()))
            && meter.is_some_and(|m| m.as_object().is_some_and(|m| !m.is_empty()));
        if ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no alarm or no meter reading reached the API"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    hub._sensors = vec![smoke, env];
    hub
}

fn schemathesis_installed() -> Result<(), String> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('schemathesis'))",
        ])
        .output()
        .map_err(|e| format!("python3 does not run: {e}"))?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || version != SCHEMATHESIS {
        return Err(format!(
            "schemathesis {SCHEMATHESIS} is not installed (found {version:?}): run scripts/test, \
             or python3 -m pip install -r tests/peers/requirements.txt"
        ));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_that_differs_from_the_document() {
    if let Err(e) = schemathesis_installed() {
        panic!("{e}");
    }
    let hub = park().await;
    let report = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = tokio::task::spawn_blocking({
        let (base, token) = (hub.base.clone(), hub.token.clone());
        let examples =
            std::env::var("PARKHUB_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| EXAMPLES.into());
        let seed = std::env::var("PARKHUB_SCHEMATHESIS_SEED").unwrap_or_else(|_| SEED.into());
        let report = report.path().to_path_buf();
        move || {
            Command::new("python3")
                // Its crash cache (.schemathesis/) goes to the report's temporary directory,
                // not into the repository, and no earlier run's crashes are replayed.
                .current_dir(&report)
                .env("NO_COLOR", "1")
                .env("SCHEMATHESIS_HOOKS", "")
                .args(["-m", "schemathesis.cli"])
                .arg("--config-file")
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/peers/schemathesis.toml"
                ))
                .arg("run")
                .arg(format!("{base}/api/v1/openapi.json"))
                .args(["--url", &base])
                .args(["-H", &format!("Authorization: Bearer {token}")])
                .args(["--checks", "all"])
                .args(["--max-examples", &examples])
                .args(["--seed", &seed])
                // One worker: CPython 3.11 (Debian 12's) can fail parsing source in two threads
                // at once ("AST constructor recursion depth mismatch"), which hypothesis does.
                .args(["--workers", "1"])
                .args(["--request-timeout", "10"])
                // An endless stream: no response ever ends to be checked. tests below and
                // tests/api.rs check it.
                .args(["--exclude-path", "/api/v1/stream"])
                .args(["--report", "junit"])
                .arg("--report-dir")
                .arg(&report)
                .output()
                .expect("python3 runs")
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "schemathesis ran {:.0} s\n{stdout}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        out.status.success(),
        "schemathesis failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // It tested every operation but the stream, not a schema it could not read.
    let figure = |label: &str| -> String {
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .unwrap_or_else(|| panic!("no `{label}` in\n{stdout}"))
            .trim()
            .to_string()
    };
    let selected = figure("Selected:");
    let (selected, total) = selected.split_once('/').unwrap();
    let total: usize = total.parse().unwrap();
    assert!(total >= 24, "{stdout}");
    assert_eq!(selected.parse::<usize>().unwrap(), total - 1, "{stdout}");
    assert_eq!(figure("Tested:"), selected, "{stdout}");
    drop(hub);
}

/// POSTs `body` in 4 KiB chunks without a length (what reqwest cannot do without its
/// `stream` feature), and returns the status and the whole answer.
async fn chunked_post(base: &str, path: &str, body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.chunks(4096) {
        let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat();
        // The hub may answer and close before the whole body is sent.
        if s.write_all(&framed).await.is_err() {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer).to_string();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_open_and_the_stream_and_an_oversized_body_are_answered_as_it_says() {
    let hub = park().await;
    let client = common::http_client();
    // No token: the document carries the API's shape, no park data.
    let res = client
        .get(format!("{}/api/v1/openapi.json", hub.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    let doc: Value = res.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/v1/health",
        "/api/v1/alarms/{id}/ack",
        "/api/v1/history",
        "/api/v1/stream",
        "/metrics",
    ] {
        assert!(paths.contains_key(p), "{p} missing");
    }
    let stream = &paths["/api/v1/stream"]["get"]["responses"]["200"]["content"];
    assert!(stream.get("text/event-stream").is_some(), "{stream}");
    let history = &paths["/api/v1/history"]["get"]["responses"]["200"]["content"];
    assert!(history.get("text/csv").is_some(), "{history}");

    // The stream answers as documented, before its first event.
    let res = client
        .get(format!("{}/api/v1/stream", hub.base))
        .bearer_auth(&hub.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let refused = client
        .get(format!("{}/api/v1/stream", hub.base))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let body: Value = refused.json().await.unwrap();
    assert!(body["error"].is_string(), "{body}");

    // A body over the limit is refused as documented (413, the API's error form), with its
    // length declared or streamed in chunks without one.
    let big = serde_json::json!({ "user": "x".repeat(65 * 1024), "password": "p" }).to_string();
    let res = client
        .post(format!("{}/api/v1/login", hub.base))
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "the request body is larger than 64 KiB");
    let (status, answer) = chunked_post(&hub.base, "/api/v1/login", big.as_bytes()).await;
    assert_eq!(status, 413, "{answer}");
    assert!(
        answer.contains(r#"{"error":"the request body is larger than 64 KiB"}"#),
        "{answer}"
    );
    let documented = &paths["/api/v1/login"]["post"]["responses"]["413"]["content"];
    assert!(documented.get("application/json").is_some(), "{documented}");
}
