//! The operators' HTTP API against real parts: the alarm store in a SQLite file, the alarm
//! engine's task, the router served on a loopback port, and reqwest as the client.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use parkhub::alarm::engine::{AlarmFeed, Engine, EngineConfig};
use parkhub::alarm::store::{AlarmStore, EventRow, Listing, DB_FILE};
use parkhub::alarm::AlarmState;
use parkhub::api::{self, ApiState};
use parkhub::notify::Notifier;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(10);

const VIEWER: &str = "viewer-token-3f9a";
const OPERATOR: &str = "operator-token-77c1";

fn sha256(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn config() -> String {
    let devices: String = ["smoke-1", "smoke-2"]
        .iter()
        .map(|id| {
            format!(
                "[[device]]\nid = \"{id}\"\nprofile = \"mqtt-smoke-detector\"\ntopic = \"park/b3/{id}\"\n"
            )
        })
        .collect();
    format!(
        r#"[hub]
id = "t"
[mqtt]
broker = "embedded"
[alarms]
max_shelve_minutes = 120
[[api.token]]
name = "guard-room"
role = "viewer"
sha256 = "{}"
[[api.token]]
name = "duty-operator"
role = "operator"
sha256 = "{}"
{devices}"#,
        sha256(VIEWER),
        sha256(OPERATOR),
    )
}

/// A hub's alarm side and its API, running until dropped.
struct Park {
    base: String,
    http: reqwest::Client,
    store: Arc<AlarmStore>,
    feed: AlarmFeed,
    stop: CancellationToken,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl Park {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let loaded = load(&config(), dir.path());
        let store = Arc::new(AlarmStore::open(&dir.path().join(DB_FILE)).unwrap());
        let cfg = EngineConfig::from_loaded(&loaded);
        let (feed, events) = AlarmFeed::new(&cfg);
        let stop = CancellationToken::new();
        let (engine, task) =
            Engine::new(cfg, store.clone(), Notifier::default()).start(events, stop.clone());
        tokio::spawn(task);
        let state = ApiState::new(
            hub_for(&loaded),
            store.clone(),
            engine,
            loaded.config.api.token.clone(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/api/v1", listener.local_addr().unwrap());
        let server = tokio::spawn(api::serve(listener, api::router(state), stop.clone()));
        Self {
            base,
            http: http_client(),
            store,
            feed,
            stop,
            server: Some(server),
            _dir: dir,
        }
    }

    fn get(&self, path: &str, token: Option<&str>) -> reqwest::RequestBuilder {
        let r = self.http.get(format!("{}{path}", self.base));
        match token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    fn post(&self, path: &str, token: &str, body: Value) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
    }

    /// Takes a device offline and waits for the engine to store its alarm; returns the id.
    async fn offline(&self, device: &str) -> i64 {
        self.feed.device(Arc::from(device), false, None);
        self.open_alarm_of(device).await
    }

    async fn open_alarm_of(&self, device: &str) -> i64 {
        let mut id = None;
        wait_until(LIMIT, &format!("an open alarm of {device}"), || {
            id = self
                .store
                .list(Listing::Open, 100)
                .unwrap()
                .into_iter()
                .find(|a| a.key.scope.id().as_ref() == device)
                .map(|a| a.id);
            id.is_some()
        })
        .await;
        id.unwrap()
    }

    fn events(&self, id: i64) -> Vec<EventRow> {
        self.store.events(id).unwrap()
    }
}

impl Drop for Park {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn json(res: reqwest::Response) -> Value {
    res.json().await.expect("a JSON body")
}

/// Asserts the status and that the body is `{"error":"…"}`; returns the message.
async fn refused(res: reqwest::Response, status: StatusCode) -> String {
    assert_eq!(res.status(), status);
    let body = json(res).await;
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message in {body}"))
        .to_string()
}

#[tokio::test]
async fn health_is_open_to_anyone() {
    let park = Park::start().await;
    let res = park.get("/health", None).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = json(res).await;
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(body["uptime_s"].is_u64(), "{body}");
}

#[tokio::test]
async fn a_request_without_a_token_is_refused_with_401_and_told_to_use_bearer() {
    let park = Park::start().await;
    let res = park.get("/alarms", None).send().await.unwrap();
    assert_eq!(
        res.headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    let msg = refused(res, StatusCode::UNAUTHORIZED).await;
    assert!(msg.contains("Bearer"), "{msg}");
}

#[tokio::test]
async fn a_wrong_token_is_refused_with_401_and_not_echoed() {
    let park = Park::start().await;
    let res = park
        .get("/alarms", Some("guessed-token"))
        .send()
        .await
        .unwrap();
    let challenge = res
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    let msg = refused(res, StatusCode::UNAUTHORIZED).await;
    assert!(!msg.contains("guessed-token"), "{msg}");
    // Nor is the hash of a real token a token.
    let res = park
        .get("/alarms", Some(&sha256(OPERATOR)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_viewer_can_list_alarms_but_is_forbidden_to_acknowledge_them() {
    let park = Park::start().await;
    let id = park.offline("smoke-1").await;

    let res = park.get("/alarms", Some(VIEWER)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let list = json(res).await;
    let alarm = &list.as_array().unwrap()[0];
    assert_eq!(alarm["id"], id);
    assert_eq!(alarm["state"], "unacked");
    assert_eq!(alarm["severity"], "major");
    assert_eq!(alarm["category"], "comm");
    assert_eq!(alarm["device_id"], "smoke-1");
    assert_eq!(alarm["point"], Value::Null);
    assert_eq!(alarm["rule"], "offline");
    assert_eq!(alarm["acked_by"], Value::Null);
    assert!(
        chrono::DateTime::parse_from_rfc3339(alarm["raised_at"].as_str().unwrap()).is_ok(),
        "{alarm}"
    );

    let res = park
        .post(&format!("/alarms/{id}/ack"), VIEWER, json!({}))
        .send()
        .await
        .unwrap();
    let msg = refused(res, StatusCode::FORBIDDEN).await;
    assert!(msg.contains("operator"), "{msg}");
    assert_eq!(park.store.alarm(id).unwrap().unwrap().acked_by, None);
}

#[tokio::test]
async fn an_operator_acknowledges_an_alarm_and_the_store_keeps_who_and_the_comment() {
    let park = Park::start().await;
    let id = park.offline("smoke-1").await;

    let res = park
        .post(
            &format!("/alarms/{id}/ack"),
            OPERATOR,
            json!({"comment": "已到现场 checking the cable"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let alarm = json(res).await;
    assert_eq!(alarm["id"], id);
    assert_eq!(alarm["state"], "acked");
    assert_eq!(alarm["acked_by"], "duty-operator");

    let listed = json(park.get("/alarms", Some(VIEWER)).send().await.unwrap()).await;
    assert_eq!(listed[0]["acked_by"], "duty-operator");

    let ack = park
        .events(id)
        .into_iter()
        .find(|e| e.event == "acknowledged")
        .expect("the acknowledgement is stored");
    assert_eq!(ack.who.as_deref(), Some("duty-operator"));
    assert_eq!(ack.comment.as_deref(), Some("已到现场 checking the cable"));
}

#[tokio::test]
async fn an_acknowledgement_needs_no_body_at_all() {
    let park = Park::start().await;
    let id = park.offline("smoke-1").await;
    let res = park
        .http
        .post(format!("{}/alarms/{id}/ack", park.base))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(json(res).await["acked_by"], "duty-operator");
}

#[tokio::test]
async fn acknowledging_an_unknown_alarm_is_404() {
    let park = Park::start().await;
    let res = park
        .post("/alarms/987654/ack", OPERATOR, json!({}))
        .send()
        .await
        .unwrap();
    let msg = refused(res, StatusCode::NOT_FOUND).await;
    assert!(msg.contains("987654"), "{msg}");
}

#[tokio::test]
async fn acknowledging_an_alarm_twice_is_a_conflict() {
    let park = Park::start().await;
    let id = park.offline("smoke-1").await;
    let ack = || park.post(&format!("/alarms/{id}/ack"), OPERATOR, json!({}));
    assert_eq!(ack().send().await.unwrap().status(), StatusCode::OK);
    let msg = refused(ack().send().await.unwrap(), StatusCode::CONFLICT).await;
    assert!(msg.contains("already acknowledged"), "{msg}");
}

#[tokio::test]
async fn acknowledging_a_closed_alarm_is_a_conflict() {
    let park = Park::start().await;
    let id = park.offline("smoke-1").await;
    let ack = || park.post(&format!("/alarms/{id}/ack"), OPERATOR, json!({}));
    assert_eq!(ack().send().await.unwrap().status(), StatusCode::OK);
    park.feed.device(Arc::from("smoke-1"), true, None);
    wait_until(LIMIT, "the alarm to close", || {
        park.store.alarm(id).unwrap().unwrap().state == AlarmState::Normal
    })
    .await;
    let msg = refused(ack().send().await.unwrap(), StatusCode::CONFLICT).await;
    assert!(msg.contains("closed"), "{msg}");
}

#[tokio::test]
async fn shelving_beyond_the_configured_maximum_is_refused_and_a_valid_shelf_is_stored() {
    let park = Park::start().await;
    let id = park.offline("smoke-1").await;
    let path = format!("/alarms/{id}/shelve");

    let too_long = park
        .post(
            &path,
            OPERATOR,
            json!({"minutes": 121, "reason": "cable work"}),
        )
        .send()
        .await
        .unwrap();
    let msg = refused(too_long, StatusCode::BAD_REQUEST).await;
    assert!(msg.contains("120"), "{msg}");
    let no_reason = park
        .post(&path, OPERATOR, json!({"minutes": 30, "reason": " "}))
        .send()
        .await
        .unwrap();
    refused(no_reason, StatusCode::BAD_REQUEST).await;
    assert!(park.events(id).iter().all(|e| e.event != "shelved"));

    let res = park
        .post(
            &path,
            OPERATOR,
            json!({"minutes": 30, "reason": "cable work on 2F"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(json(res).await["id"], id);
    let shelved = park
        .events(id)
        .into_iter()
        .find(|e| e.event == "shelved")
        .expect("the shelf is stored");
    assert_eq!(shelved.who.as_deref(), Some("duty-operator"));
    assert_eq!(shelved.comment.as_deref(), Some("cable work on 2F"));
    // A shelved alarm reads as suppressed, in the list and on its own: the console keeps no
    // banner or sound for it.
    let list = json(park.get("/alarms", Some(VIEWER)).send().await.unwrap()).await;
    let listed = list
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == id)
        .unwrap();
    assert_eq!(listed["suppressed"], true, "{listed}");
    let one = json(
        park.get(&format!("/alarms/{id}"), Some(VIEWER))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(one["suppressed"], true);
}

#[tokio::test]
async fn state_all_lists_closed_alarms_too_and_an_unknown_state_is_400() {
    let park = Park::start().await;
    let closed = park.offline("smoke-1").await;
    let ack = park
        .post(&format!("/alarms/{closed}/ack"), OPERATOR, json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(ack.status(), StatusCode::OK);
    park.feed.device(Arc::from("smoke-1"), true, None);
    wait_until(LIMIT, "the acknowledged alarm to close", || {
        park.store.alarm(closed).unwrap().unwrap().state == AlarmState::Normal
    })
    .await;
    let open = park.offline("smoke-2").await;

    let ids = |list: &Value| -> Vec<i64> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_i64().unwrap())
            .collect()
    };
    let active = json(park.get("/alarms", Some(VIEWER)).send().await.unwrap()).await;
    assert_eq!(ids(&active), vec![open]);
    let explicit = json(
        park.get("/alarms?state=active", Some(VIEWER))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(explicit, active);

    let all = json(
        park.get("/alarms?state=all", Some(VIEWER))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(ids(&all), vec![open, closed]);
    let closed_view = &all[1];
    assert_eq!(closed_view["state"], "normal");
    assert!(closed_view["cleared_at"].is_string(), "{closed_view}");

    let res = park
        .get("/alarms?state=open", Some(VIEWER))
        .send()
        .await
        .unwrap();
    let msg = refused(res, StatusCode::BAD_REQUEST).await;
    assert!(msg.contains("active") && msg.contains("all"), "{msg}");
}

#[tokio::test]
async fn one_alarm_shows_its_events_and_an_unknown_one_is_404() {
    let park = Park::start().await;
    let id = park.offline("smoke-1").await;
    let ack = park
        .post(
            &format!("/alarms/{id}/ack"),
            OPERATOR,
            json!({"comment": "seen"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(ack.status(), StatusCode::OK);

    let res = park
        .get(&format!("/alarms/{id}"), Some(VIEWER))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let detail = json(res).await;
    assert_eq!(detail["id"], id);
    assert_eq!(detail["device_id"], "smoke-1");
    let events: Vec<(&str, &Value, &Value)> = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["event"].as_str().unwrap(), &e["who"], &e["comment"]))
        .collect();
    assert_eq!(
        events,
        vec![
            ("raised", &Value::Null, &Value::Null),
            ("acknowledged", &json!("duty-operator"), &json!("seen")),
        ]
    );
    // No channel is configured, so nothing was pushed.
    assert_eq!(detail["deliveries"], json!([]));

    let res = park
        .get("/alarms/424242", Some(VIEWER))
        .send()
        .await
        .unwrap();
    refused(res, StatusCode::NOT_FOUND).await;
    let res = park
        .get("/alarms/not-a-number", Some(VIEWER))
        .send()
        .await
        .unwrap();
    refused(res, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn maintenance_closes_the_devices_open_alarm_and_an_unknown_device_is_404() {
    let park = Park::start().await;
    let id = park.offline("smoke-1").await;

    let res = park
        .post(
            "/devices/smoke-1/maintenance",
            OPERATOR,
            json!({"on": true, "reason": "replacing the detector", "minutes": 60}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(json(res).await, json!({"device": "smoke-1", "on": true}));

    let alarm = park.store.alarm(id).unwrap().unwrap();
    assert_eq!(alarm.state, AlarmState::Normal);
    let out = park
        .events(id)
        .into_iter()
        .find(|e| e.event == "out_of_service")
        .expect("the closing is stored");
    assert_eq!(out.who.as_deref(), Some("duty-operator"));
    assert_eq!(out.comment.as_deref(), Some("replacing the detector"));
    let active = json(park.get("/alarms", Some(VIEWER)).send().await.unwrap()).await;
    assert_eq!(active, json!([]));

    let res = park
        .post(
            "/devices/no-such-device/maintenance",
            OPERATOR,
            json!({"on": true, "reason": "x", "minutes": 60}),
        )
        .send()
        .await
        .unwrap();
    let msg = refused(res, StatusCode::NOT_FOUND).await;
    assert!(msg.contains("no-such-device"), "{msg}");

    let res = park
        .post(
            "/devices/smoke-1/maintenance",
            OPERATOR,
            json!({"on": true, "reason": "forever", "minutes": 100_000_000}),
        )
        .send()
        .await
        .unwrap();
    refused(res, StatusCode::BAD_REQUEST).await;

    let res = park
        .post(
            "/devices/smoke-1/maintenance",
            OPERATOR,
            json!({"on": false}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(json(res).await, json!({"device": "smoke-1", "on": false}));
}

#[tokio::test]
async fn a_malformed_json_body_is_400_with_a_message() {
    let park = Park::start().await;
    let id = park.offline("smoke-1").await;
    let res = park
        .http
        .post(format!("{}/alarms/{id}/shelve", park.base))
        .bearer_auth(OPERATOR)
        .header("content-type", "application/json")
        .body(r#"{"minutes": 30, "reason": "#)
        .send()
        .await
        .unwrap();
    let msg = refused(res, StatusCode::BAD_REQUEST).await;
    assert!(msg.to_lowercase().contains("json"), "{msg}");

    let wrong_type = park
        .post(
            &format!("/alarms/{id}/shelve"),
            OPERATOR,
            json!({"minutes": "half an hour", "reason": "x"}),
        )
        .send()
        .await
        .unwrap();
    let msg = refused(wrong_type, StatusCode::BAD_REQUEST).await;
    assert!(msg.contains("minutes"), "{msg}");

    let form = park
        .http
        .post(format!("{}/alarms/{id}/ack", park.base))
        .bearer_auth(OPERATOR)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("comment=hi")
        .send()
        .await
        .unwrap();
    refused(form, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    assert!(park.events(id).iter().all(|e| e.event == "raised"));
}

#[tokio::test]
async fn a_body_over_64_kib_is_refused() {
    let park = Park::start().await;
    let id = park.offline("smoke-1").await;
    let res = park
        .post(
            &format!("/alarms/{id}/ack"),
            OPERATOR,
            json!({"comment": "x".repeat(65 * 1024)}),
        )
        .send()
        .await
        .unwrap();
    refused(res, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(park.store.alarm(id).unwrap().unwrap().acked_by, None);
}

#[tokio::test]
async fn an_unknown_endpoint_is_404_in_json() {
    let park = Park::start().await;
    let res = park
        .get("/nothing-here", Some(VIEWER))
        .send()
        .await
        .unwrap();
    refused(res, StatusCode::NOT_FOUND).await;
    let res = park
        .http
        .delete(format!("{}/alarms", park.base))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap();
    refused(res, StatusCode::METHOD_NOT_ALLOWED).await;
}

#[tokio::test]
async fn the_server_stops_when_shutdown_is_cancelled() {
    let mut park = Park::start().await;
    park.stop.cancel();
    let server = park.server.take().unwrap();
    let result = tokio::time::timeout(LIMIT, server)
        .await
        .expect("the server stopped in time")
        .expect("the server task did not panic");
    assert!(result.is_ok(), "{result:?}");
    assert!(park.get("/health", None).send().await.is_err());
}
