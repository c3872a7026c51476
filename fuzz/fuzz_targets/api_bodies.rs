//! Request bodies and query strings of the operators' API, sent through the real router (the
//! alarm store in a SQLite file, the alarm engine's task) as an operator with a valid token.
//!
//! Input: a route selector, a content-type selector, then the body (for POST routes) or the
//! query string (for GET routes). Properties: no request ends in a server error (503 only
//! where the hub lacks the part, history or console users); every refusal is a JSON object
//! with an `error` text; a body over the limit is 413; a non-JSON body is 415.

#![no_main]

use std::sync::{Arc, LazyLock};

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use parkhub::alarm::engine::{AlarmFeed, Engine, EngineConfig};
use parkhub::alarm::store::{AlarmStore, DB_FILE};
use parkhub::api::{self, ApiState, BODY_LIMIT};
use parkhub::config::load_str;
use parkhub::hub::{DeviceInfo, Hub};
use parkhub::notify::Notifier;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

const TOKEN: &str = "fuzz-admin-token-0b7e";

struct Api {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
    _feed: AlarmFeed,
}

static API: LazyLock<Api> = LazyLock::new(|| {
    let dir = tempfile::tempdir().expect("a temporary directory").keep();
    let text = format!(
        r#"[hub]
id = "fuzz"
[mqtt]
broker = "embedded"
[alarms]
max_shelve_minutes = 120
[[api.token]]
name = "fuzz"
role = "admin"
sha256 = "{}"
[[device]]
id = "smoke-1"
profile = "mqtt-smoke-detector"
topic = "park/b3/smoke-1"
"#,
        hex::encode(Sha256::digest(TOKEN.as_bytes()))
    );
    let loaded = load_str("fuzz.toml", &text, &dir, &|_| None).expect("the fuzz config loads");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let store = Arc::new(AlarmStore::open(&dir.join(DB_FILE)).expect("the alarm store opens"));
    let cfg = EngineConfig::from_loaded(&loaded);
    let (feed, events) = AlarmFeed::new(&cfg);
    let stop = CancellationToken::new();
    let router = rt.block_on(async {
        let (engine, task) =
            Engine::new(cfg, store.clone(), Notifier::default()).start(events, stop.clone());
        tokio::spawn(task);
        let devices = loaded
            .config
            .devices
            .iter()
            .map(|d| DeviceInfo {
                id: d.id.as_str().into(),
                name: d.display_name().to_string(),
                profile: d.profile.clone(),
                category: String::new(),
                location: d.location.clone(),
            })
            .collect();
        let state = ApiState::new(
            Hub::new(devices, None),
            store,
            engine,
            loaded.config.api.token.clone(),
        );
        api::router(state)
    });
    Api {
        rt,
        router,
        _feed: feed,
    }
});

/// (method, path, takes a JSON body, may answer 503 because the hub lacks a part)
const ROUTES: [(Method, &str, bool, bool); 12] = [
    (Method::POST, "/api/v1/alarms/1/ack", true, false),
    (Method::POST, "/api/v1/alarms/1/shelve", true, false),
    (
        Method::POST,
        "/api/v1/devices/smoke-1/maintenance",
        true,
        false,
    ),
    (Method::POST, "/api/v1/chargers/cp-1/commands", true, true),
    (Method::POST, "/api/v1/login", true, true),
    (Method::POST, "/api/v1/users", true, true),
    (Method::GET, "/api/v1/history", false, true),
    (Method::GET, "/api/v1/energy", false, true),
    (Method::GET, "/api/v1/sessions", false, false),
    (Method::GET, "/api/v1/alarms", false, false),
    (Method::GET, "/api/v1/devices", false, false),
    (Method::GET, "/api/v1/overview", false, false),
];

const TYPES: [Option<&str>; 4] = [
    Some("application/json"),
    None,
    Some("text/plain"),
    Some("application/problem+json; charset=utf-8"),
];

fuzz_target!(|data: &[u8]| {
    let [route, kind, rest @ ..] = data else {
        return;
    };
    let (method, path, json_body, may_be_unavailable) = &ROUTES[usize::from(*route) % ROUTES.len()];
    let content_type = TYPES[usize::from(*kind) % TYPES.len()];
    let mut req = Request::builder()
        .method(method.clone())
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
    let body = if *json_body {
        req = req.uri(*path);
        if let Some(t) = content_type {
            req = req.header(header::CONTENT_TYPE, t);
        }
        // A large body, repeated from the input, for the limit.
        if kind & 0x80 != 0 {
            rest.iter()
                .copied()
                .cycle()
                .take(BODY_LIMIT + 1 + usize::from(*kind))
                .collect()
        } else {
            rest.to_vec()
        }
    } else {
        let Ok(query) = std::str::from_utf8(rest) else {
            return;
        };
        req = req.uri(format!("{path}?{query}"));
        Vec::new()
    };
    // A query the URI parser refuses never reaches the hub: hyper refuses it first.
    let Ok(req) = req.body(Body::from(body.clone())) else {
        return;
    };
    let api = &*API;
    let (status, bytes) = api.rt.block_on(async {
        let res = api
            .router
            .clone()
            .oneshot(req)
            .await
            .expect("the router is infallible");
        let status = res.status();
        let bytes = res
            .into_body()
            .collect()
            .await
            .expect("the response body")
            .to_bytes();
        (status, bytes)
    });
    let unavailable_ok = status == StatusCode::SERVICE_UNAVAILABLE && *may_be_unavailable;
    assert!(
        !status.is_server_error() || unavailable_ok,
        "{method} {path}: {status} {}",
        String::from_utf8_lossy(&bytes)
    );
    if !status.is_success() {
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {bytes:?}"));
        assert!(
            v["error"].as_str().is_some_and(|s| !s.is_empty()),
            "{status}: {v}"
        );
    }
    if *json_body {
        if body.len() > BODY_LIMIT {
            assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        } else if !body.trim_ascii().is_empty()
            && !matches!(content_type, Some(t) if t.contains("json"))
        {
            assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        }
    }
});
