//! Alarm pushes delivered through the real path — a SQLite outbox, `notify::start` with a loaded
//! config, its lanes and its HTTP client — to real HTTP receivers (axum on 127.0.0.1:0) that
//! answer like the services they stand for (DESIGN.md "Alarm push (webhook channel)",
//! reference/alarms-and-push.md). Every signature is checked here, independently of the hub,
//! over the bytes the receiver got.
//!
//! Time. The hub waits a minute after a "too many" answer, backs off for seconds after a
//! failure and spreads a robot's 20 messages over a minute. The tests do not sleep through
//! that, nor run under a paused clock all along (a paused runtime moves its clock on by itself
//! whenever it waits on a socket, firing the HTTP client's timeouts in the middle of a real
//! exchange). Instead [`skip`] jumps the runtime's clock ahead by hand, and only at moments
//! the test has made sure of (by polling what the receiver got and what the outbox says)
//! that the hub is idle, waiting on one of its own timers: nothing is in flight, so the jump
//! can only fire that timer. Jumps in the flood test are 1 s, far below the 5 s connect and
//! 10 s attempt timeouts, so even a request just starting is never cut short. The receivers
//! read the same clock, so the quota a robot enforces moves with it. Wall-clock time (what
//! the signatures carry) is not moved: the timestamps stay fresh, as real services want.

mod common;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use chrono::{DateTime, FixedOffset, Utc};
use hmac::{Hmac, KeyInit, Mac};
use parkhub::alarm::store::{AlarmStore, Delivery, OutboxRow};
use parkhub::config::Location;
use parkhub::notify::{self, Notifier, Push};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const HUB_ID: &str = "hz-test-01";
/// How long a test waits (real time) for something the hub should do at once.
const SOON: Duration = Duration::from_secs(5);
const MINUTE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Receivers

/// One request as a receiver got it.
#[derive(Debug, Clone)]
struct Received {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    /// When it came, on the runtime's clock (which [`skip`] moves).
    at: Instant,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }

    /// A query parameter, decoded.
    fn query(&self, key: &str) -> Option<String> {
        url::form_urlencoded::parse(self.uri.query().unwrap_or("").as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }

    /// A query parameter as it was on the wire.
    fn raw_query(&self, key: &str) -> Option<&str> {
        self.uri
            .query()
            .unwrap_or("")
            .split('&')
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
    }

    /// The text a person reads.
    fn text(&self) -> String {
        let v = self.json();
        let t = v["text"]["content"]
            .as_str()
            .or(v["content"]["text"].as_str())
            .or(v["message"].as_str());
        t.unwrap_or_else(|| panic!("no text in {v}")).to_string()
    }

    /// The alarms this request carries: `alarm_id` in a webhook body, else the `#NNN#` that
    /// the tests put in each device's name.
    fn alarms(&self) -> Vec<i64> {
        let v = self.json();
        if let Some(id) = v["alarm_id"].as_str() {
            return vec![id.parse().unwrap()];
        }
        if let Some(all) = v["alarms"].as_array() {
            return all
                .iter()
                .map(|a| a["alarm_id"].as_str().unwrap().parse().unwrap())
                .collect();
        }
        alarm_ids(&self.text())
    }
}

/// The numbers between `#`s: the alarm ids of the device names in a text.
fn alarm_ids(text: &str) -> Vec<i64> {
    text.split('#')
        .skip(1)
        .step_by(2)
        .map(|s| {
            s.parse()
                .unwrap_or_else(|_| panic!("bad id {s:?} in {text}"))
        })
        .collect()
}

/// What a receiver answers.
struct Reply {
    status: u16,
    body: String,
    /// Answer only once this is cancelled (a slow service).
    gate: Option<CancellationToken>,
}

impl Reply {
    fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            body: body.to_string(),
            gate: None,
        }
    }
    fn after(mut self, gate: &CancellationToken) -> Self {
        self.gate = Some(gate.clone());
        self
    }
}

fn robot_ok() -> Reply {
    Reply::json(200, json!({"errcode": 0, "errmsg": "ok"}))
}

fn dingtalk_too_fast() -> Reply {
    Reply::json(
        200,
        json!({"errcode": 130101, "errmsg": "send too fast, exceed 20 times per minute"}),
    )
}

fn feishu_ok() -> Reply {
    Reply::json(200, json!({"code": 0, "msg": "success", "data": {}}))
}

/// Decides the answer to request number `n` (from 0).
type Answer = Box<dyn FnMut(&Received, usize) -> Reply + Send>;

#[derive(Clone)]
struct Shared {
    /// Each request, with the status and body it was answered with.
    log: Arc<Mutex<Vec<(Received, u16, String)>>>,
    answered: Arc<AtomicUsize>,
    answer: Arc<Mutex<Answer>>,
}

/// An HTTP receiver on a free loopback port, recording every request; stopped on drop.
struct Receiver {
    base: String,
    shared: Shared,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(answer: impl FnMut(&Received, usize) -> Reply + Send + 'static) -> Self {
        let shared = Shared {
            log: Arc::default(),
            answered: Arc::default(),
            answer: Arc::new(Mutex::new(Box::new(answer))),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            base,
            shared,
            server,
        }
    }

    fn url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.base)
    }

    fn requests(&self) -> Vec<Received> {
        self.exchanges().into_iter().map(|(r, _)| r).collect()
    }

    /// Every request with the status it was answered with.
    fn exchanges(&self) -> Vec<(Received, u16)> {
        let log = self.shared.log.lock().unwrap();
        log.iter().map(|(r, s, _)| (r.clone(), *s)).collect()
    }

    fn count(&self) -> usize {
        self.shared.log.lock().unwrap().len()
    }

    fn answered(&self) -> usize {
        self.shared.answered.load(Ordering::SeqCst)
    }

    /// How often each alarm came in a request answered 2xx (and, for the robots, code 0).
    fn accepted_alarms(&self) -> BTreeMap<i64, usize> {
        let mut seen = BTreeMap::new();
        for (r, status, reply) in self.shared.log.lock().unwrap().clone() {
            if !accepted(status, &reply) {
                continue;
            }
            for id in r.alarms() {
                *seen.entry(id).or_insert(0) += 1;
            }
        }
        seen
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn handle(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = Received {
        method,
        uri,
        headers,
        body,
        at: Instant::now(),
    };
    let reply = {
        let mut log = s.log.lock().unwrap();
        let n = log.len();
        let reply = (s.answer.lock().unwrap())(&req, n);
        log.push((req, reply.status, reply.body.clone()));
        reply
    };
    if let Some(gate) = reply.gate {
        gate.cancelled().await;
    }
    s.answered.fetch_add(1, Ordering::SeqCst);
    (
        StatusCode::from_u16(reply.status).unwrap(),
        [("content-type", "application/json")],
        reply.body,
    )
        .into_response()
}

/// A DingTalk robot's quota as the reference gives it: 20 messages in any minute; the 21st
/// is refused (130101) and the robot then refuses everything for 10 minutes. Counts refusals.
fn dingtalk_quota(refusals: Arc<AtomicUsize>) -> impl FnMut(&Received, usize) -> Reply + Send {
    let mut accepted: VecDeque<Instant> = VecDeque::new();
    let mut blocked_until: Option<Instant> = None;
    move |r, _| {
        let now = r.at;
        if blocked_until.is_some_and(|t| now < t) {
            refusals.fetch_add(1, Ordering::SeqCst);
            return dingtalk_too_fast();
        }
        while accepted.front().is_some_and(|&t| t + MINUTE <= now) {
            accepted.pop_front();
        }
        if accepted.len() >= 20 {
            blocked_until = Some(now + 10 * MINUTE);
            refusals.fetch_add(1, Ordering::SeqCst);
            return dingtalk_too_fast();
        }
        accepted.push_back(now);
        robot_ok()
    }
}

/// Taken, as each service means it: a 2xx, with no error code inside.
fn accepted(status: u16, body: &str) -> bool {
    let v: Value = serde_json::from_str(body).unwrap_or_default();
    let code = v.get("errcode").or(v.get("code")).and_then(Value::as_i64);
    status / 100 == 2 && code.unwrap_or(0) == 0
}

// ---------------------------------------------------------------------------------------------
// Signatures, worked out here from the service's documentation

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// DESIGN.md: `X-Parkhub-Timestamp` (unix seconds, fresh) and `X-Parkhub-Signature:
/// sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>` over the bytes received.
fn assert_webhook_signed(r: &Received, secret: &str) {
    let ts = r.header("x-parkhub-timestamp");
    let secs: i64 = ts.parse().expect("the timestamp is unix seconds");
    assert!(
        (Utc::now().timestamp() - secs).abs() <= 30,
        "stale timestamp {secs}"
    );
    let mut msg = format!("{ts}.").into_bytes();
    msg.extend_from_slice(&r.body);
    let want = format!(
        "sha256={}",
        hex::encode(hmac_sha256(secret.as_bytes(), &msg))
    );
    assert_eq!(r.header("x-parkhub-signature"), want, "webhook signature");
}

/// DingTalk 加签: `&timestamp=<ms>&sign=<urlencode(base64(HMAC-SHA256(secret, ts + "\n" +
/// secret)))>`, the timestamp within an hour of the server's time.
fn assert_dingtalk_signed(r: &Received, token: &str, secret: &str) {
    assert_eq!(r.query("access_token").as_deref(), Some(token));
    let ts = r.query("timestamp").expect("a timestamp in the URL");
    let ms: i64 = ts.parse().expect("the timestamp is in milliseconds");
    assert!(
        (Utc::now().timestamp_millis() - ms).abs() <= 30_000,
        "stale timestamp {ms}"
    );
    let want = b64(&hmac_sha256(
        secret.as_bytes(),
        format!("{ts}\n{secret}").as_bytes(),
    ));
    assert_eq!(r.query("sign").as_deref(), Some(want.as_str()), "sign");
    // Sent URL-encoded: a bare `+` would reach DingTalk as a space. 32 bytes of HMAC always
    // end in one `=` of padding.
    let raw = r.raw_query("sign").unwrap();
    assert!(
        raw.ends_with("%3D") && !raw.contains(['+', '/', '=']),
        "sign not URL-encoded: {raw}"
    );
}

/// Feishu: `timestamp` (seconds, a string) and `sign` = base64(HMAC-SHA256 keyed with
/// timestamp + "\n" + secret over an empty message), in the body, not URL-encoded.
fn assert_feishu_signed(r: &Received, secret: &str) {
    let v = r.json();
    let ts = v["timestamp"].as_str().expect("timestamp is a string");
    let secs: i64 = ts.parse().expect("the timestamp is in seconds");
    assert!(
        (Utc::now().timestamp() - secs).abs() <= 30,
        "stale timestamp {secs}"
    );
    let want = b64(&hmac_sha256(format!("{ts}\n{secret}").as_bytes(), b""));
    assert_eq!(v["sign"].as_str(), Some(want.as_str()), "sign");
}

// ---------------------------------------------------------------------------------------------
// The hub's side

/// Alarm pushes as the engine writes them in the outbox.
fn fire(alarm: i64) -> Push {
    let now = now_local();
    Push {
        hub_id: HUB_ID.into(),
        alarm_id: alarm.to_string(),
        event: "raised".into(),
        severity: "critical".into(),
        category: "fire".into(),
        device_id: format!("smoke-b3-2f-{alarm:03}"),
        device_name: format!("烟感#{alarm:03}#"),
        point: Some("smoke".into()),
        value: json!(true),
        location: Location {
            building: Some("3号楼".into()),
            floor: Some("2F".into()),
            zone: Some("东走廊".into()),
            room: None,
            tenant: None,
        },
        department: "fire-control".into(),
        message: format!("【火警】3号楼 2F 烟感 smoke-b3-2f-{alarm:03} 报警"),
        raised_at: now.clone(),
        ts: now,
        rule: "smoke".into(),
        summary: "烟雾报警".into(),
        summary_en: "Smoke detected".into(),
        who: None,
        comment: None,
    }
}

fn energy(alarm: i64) -> Push {
    let now = now_local();
    Push {
        hub_id: HUB_ID.into(),
        alarm_id: alarm.to_string(),
        event: "raised".into(),
        severity: "minor".into(),
        category: "energy".into(),
        device_id: format!("em-b3-{alarm:03}"),
        device_name: format!("电表#{alarm:03}#"),
        point: Some("voltage_a".into()),
        value: json!(253.1),
        location: Location {
            building: Some("3号楼".into()),
            floor: Some("B1".into()),
            zone: Some("配电房".into()),
            room: None,
            tenant: None,
        },
        department: "engineering".into(),
        message: format!("【能耗·次要】3号楼 B1 配电房 电表 em-b3-{alarm:03} 电压越限"),
        raised_at: now.clone(),
        ts: now,
        rule: "overvoltage".into(),
        summary: "电压越限".into(),
        summary_en: "Over-voltage".into(),
        who: None,
        comment: None,
    }
}

fn now_local() -> String {
    Utc::now()
        .with_timezone(&FixedOffset::east_opt(8 * 3600).unwrap())
        .to_rfc3339()
}

/// The outbox row of `push` for `channel`; group 0 is a group of its own.
fn row(channel: &str, push: &Push, group: i64) -> OutboxRow {
    let now = Utc::now();
    OutboxRow {
        id: 0,
        channel: channel.into(),
        department: push.department.clone(),
        alarm: push.alarm_id.parse().unwrap(),
        event: push.event.clone(),
        urgent: push.category == "fire" || push.severity == "critical",
        group,
        created: now,
        not_before: now,
        payload: serde_json::to_string(push).unwrap(),
        attempts: 0,
    }
}

/// The notifying part of a hub: a config loaded as `parkhub run` loads it, a real alarm
/// store in a temporary directory and the lanes of `notify::start`.
struct Hub {
    store: Arc<AlarmStore>,
    config: parkhub::config::Config,
    notifier: Option<Notifier>,
    stop: CancellationToken,
    tasks: JoinSet<()>,
    _dir: tempfile::TempDir,
}

impl Hub {
    /// A hub with `channels` (TOML `[[channel]]`s) and two departments with people's mobiles,
    /// not started yet.
    fn new(channels: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let loaded = common::load(&config_text(dir.path(), channels), dir.path());
        let store = Arc::new(AlarmStore::open(&dir.path().join("alarms.sqlite")).unwrap());
        Self {
            store,
            config: loaded.config,
            notifier: None,
            stop: CancellationToken::new(),
            tasks: JoinSet::new(),
            _dir: dir,
        }
    }

    fn start(channels: &str) -> Self {
        let mut hub = Self::new(channels);
        hub.run();
        hub
    }

    /// Starts the channels' lanes, which take what the outbox holds.
    fn run(&mut self) {
        let notifier = notify::start(
            &self.config,
            self.store.clone(),
            None,
            &(Arc::new(parkhub::gpio::sim::SimPins::new()) as Arc<dyn parkhub::gpio::Pins>),
            &mut self.tasks,
            self.stop.clone(),
        )
        .expect("notify starts");
        self.notifier = Some(notifier);
    }

    /// Puts rows in the outbox and hands them to the lanes, as the engine does.
    fn send(&self, rows: Vec<OutboxRow>) -> Vec<OutboxRow> {
        let rows = self.store.enqueue(rows).unwrap();
        self.notifier.as_ref().unwrap().send(rows.clone());
        rows
    }

    fn delivery(&self, alarm: i64) -> Delivery {
        let mut d = self.store.deliveries(alarm).unwrap();
        assert_eq!(d.len(), 1, "one push of alarm {alarm}: {d:?}");
        d.remove(0)
    }

    fn delivered(&self, alarm: i64) -> bool {
        self.delivery(alarm).state == "delivered"
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn config_text(dir: &Path, channels: &str) -> String {
    format!(
        r#"
[hub]
id = "{HUB_ID}"
data_dir = "{data}"
language = "zh-CN"
timezone = "Asia/Shanghai"

[[department]]
id = "fire-control"
name = "消防控制室"
people = [{{ name = "王师傅", mobile = "13800000001" }}, {{ name = "李工", mobile = "13800000002" }}]

[[department]]
id = "engineering"
name = "物业工程"
people = [{{ name = "赵师傅", mobile = "13800000003" }}]

{channels}
"#,
        data = dir.display()
    )
}

/// Moves the runtime's clock ahead by `by` — only ever called while the hub waits on a timer
/// of its own (see the module's comment). Needs the current-thread runtime of `#[tokio::test]`.
async fn skip(by: Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}

async fn eventually(what: &str, f: impl FnMut() -> bool) {
    common::wait_until(SOON, what, f).await;
}

/// For checks that something does NOT happen: lets the hub run a moment (real time).
async fn let_run() {
    tokio::time::sleep(Duration::from_millis(150)).await;
}

// ---------------------------------------------------------------------------------------------
// The signed webhook of DESIGN.md

const WEBHOOK_SECRET: &str = "s3cret-webhook-key";

fn webhook_channel(rx: &Receiver) -> String {
    format!(
        r#"
[[channel]]
id = "ops-webhook"
kind = "webhook"
url = "{}"
secret = "{WEBHOOK_SECRET}"
"#,
        rx.url("/alarm")
    )
}

#[tokio::test]
async fn a_webhook_push_is_the_signed_json_body_of_the_design() {
    let rx = Receiver::start(|_, _| Reply::json(200, json!({"ok": true}))).await;
    let hub = Hub::start(&webhook_channel(&rx));
    let push = fire(17);
    hub.send(vec![row("ops-webhook", &push, 0)]);
    eventually("the push is delivered", || hub.delivered(17)).await;

    let reqs = rx.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, Method::POST);
    assert_eq!(r.uri.path(), "/alarm");
    assert!(r.header("content-type").starts_with("application/json"));
    assert_webhook_signed(r, WEBHOOK_SECRET);

    let body = r.json();
    for key in [
        "hub_id",
        "alarm_id",
        "event",
        "severity",
        "category",
        "device_id",
        "device_name",
        "point",
        "value",
        "location",
        "department",
        "message",
        "raised_at",
        "ts",
    ] {
        assert!(body.get(key).is_some(), "no {key} in {body}");
    }
    assert_eq!(body["hub_id"], HUB_ID);
    assert_eq!(body["alarm_id"], "17");
    assert_eq!(body["event"], "raised");
    assert_eq!(body["severity"], "critical");
    assert_eq!(body["category"], "fire");
    assert_eq!(body["device_id"], "smoke-b3-2f-017");
    assert_eq!(body["point"], "smoke");
    assert_eq!(body["value"], true);
    assert_eq!(
        body["location"],
        json!({"building": "3号楼", "floor": "2F", "zone": "东走廊"})
    );
    assert_eq!(body["department"], "fire-control");
    assert_eq!(
        body["message"],
        "【火警】3号楼 2F 烟感 smoke-b3-2f-017 报警"
    );
    for t in ["raised_at", "ts"] {
        DateTime::parse_from_rfc3339(body[t].as_str().unwrap())
            .unwrap_or_else(|e| panic!("{t} is not RFC 3339: {e}"));
    }
    // Exactly the push the engine stored, extra keys included.
    assert_eq!(body, serde_json::to_value(&push).unwrap());

    let d = hub.delivery(17);
    assert_eq!((d.state.as_str(), d.attempts), ("delivered", 1));
}

#[tokio::test]
async fn pushes_of_one_group_reach_a_webhook_as_one_signed_digest_listing_each() {
    let rx = Receiver::start(|_, _| Reply::json(204, json!(null))).await;
    let hub = Hub::start(&webhook_channel(&rx));
    let pushes = [energy(21), energy(22), energy(23)];
    hub.send(pushes.iter().map(|p| row("ops-webhook", p, 4242)).collect());
    eventually("the group is delivered", || {
        (21..=23).all(|a| hub.delivered(a))
    })
    .await;

    let reqs = rx.requests();
    assert_eq!(reqs.len(), 1, "one message for the group");
    let r = &reqs[0];
    assert_webhook_signed(r, WEBHOOK_SECRET);
    let body = r.json();
    // A digest: the hub, "digest", how many, the text a person reads, when, and every push
    // in full.
    assert_eq!(body["hub_id"], HUB_ID);
    assert_eq!(body["event"], "digest");
    assert_eq!(body["count"], 3);
    let message = body["message"].as_str().unwrap();
    assert!(message.starts_with("【告警汇总】共 3 条"), "{message}");
    assert_eq!(alarm_ids(message), vec![21, 22, 23]);
    DateTime::parse_from_rfc3339(body["ts"].as_str().unwrap()).unwrap();
    let alarms: Vec<Push> = serde_json::from_value(body["alarms"].clone()).unwrap();
    assert_eq!(alarms, pushes);
    let keys: BTreeSet<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["hub_id", "event", "count", "message", "ts", "alarms"])
    );
}

#[tokio::test]
async fn a_webhook_answering_503_is_retried_with_back_off_until_it_takes_the_push_once() {
    let rx = Receiver::start(|_, n| {
        if n < 3 {
            Reply::json(503, json!({"error": "upstream down"}))
        } else {
            Reply::json(200, json!({"ok": true}))
        }
    })
    .await;
    let hub = Hub::start(&webhook_channel(&rx));
    hub.send(vec![row("ops-webhook", &fire(5), 0)]);
    for failed in 1..=3 {
        eventually("a failed attempt is recorded", || {
            hub.delivery(5).attempts == failed
        })
        .await;
        let d = hub.delivery(5);
        assert_eq!(d.state, "pending", "kept in the outbox after a 503");
        assert!(
            d.last_error.as_deref().unwrap_or("").contains("503"),
            "{d:?}"
        );
        assert_eq!(rx.count(), failed as usize);
        // Back-off after attempt n is at most 2^n s (jitter included): the lane now sleeps.
        skip(Duration::from_secs(10)).await;
    }
    eventually("the push is delivered", || hub.delivered(5)).await;
    let d = hub.delivery(5);
    assert_eq!((d.state.as_str(), d.attempts), ("delivered", 4));
    assert!(d.delivered_at.is_some());

    // Never again, whatever the time.
    skip(Duration::from_secs(400)).await;
    let_run().await;
    let exchanges = rx.exchanges();
    assert_eq!(
        exchanges.iter().map(|(_, s)| *s).collect::<Vec<_>>(),
        [503, 503, 503, 200]
    );
    for (r, _) in &exchanges {
        assert_webhook_signed(r, WEBHOOK_SECRET);
        assert_eq!(r.body, exchanges[0].0.body, "the same push each time");
    }
}

#[tokio::test]
async fn pushes_left_in_the_outbox_are_delivered_when_the_notifier_starts() {
    let rx = Receiver::start(|_, _| Reply::json(200, json!({"ok": true}))).await;
    let mut hub = Hub::new(&webhook_channel(&rx));
    // Stored while the hub was down (or before it crashed).
    hub.store
        .enqueue(vec![
            row("ops-webhook", &fire(1), 0),
            row("ops-webhook", &energy(2), 0),
        ])
        .unwrap();
    hub.run();
    eventually("both are delivered", || {
        hub.delivered(1) && hub.delivered(2)
    })
    .await;
    assert_eq!(
        rx.accepted_alarms(),
        BTreeMap::from([(1, 1), (2, 1)]),
        "each once"
    );
}

// ---------------------------------------------------------------------------------------------
// DingTalk custom robot (加签)

const DING_TOKEN: &str = "T0KEN-abc";
const DING_SECRET: &str = "SEC4f9b2c7e0a1d";

fn dingtalk_channel(rx: &Receiver) -> String {
    format!(
        r#"
[[channel]]
id = "robot"
kind = "dingtalk"
url = "{}"
secret = "{DING_SECRET}"
mobiles = ["13900000009"]
"#,
        rx.url(&format!("/robot/send?access_token={DING_TOKEN}"))
    )
}

#[tokio::test]
async fn a_dingtalk_robot_gets_a_signed_text_mentioning_the_department_on_urgent_pushes() {
    let rx = Receiver::start(|_, _| robot_ok()).await;
    let hub = Hub::start(&dingtalk_channel(&rx));
    hub.send(vec![
        row("robot", &fire(31), 0),
        row("robot", &energy(32), 0),
    ]);
    eventually("both are delivered", || {
        hub.delivered(31) && hub.delivered(32)
    })
    .await;

    let reqs = rx.requests();
    assert_eq!(reqs.len(), 2);
    for r in &reqs {
        assert_eq!(r.method, Method::POST);
        assert_eq!(r.uri.path(), "/robot/send");
        assert!(r.header("content-type").starts_with("application/json"));
        assert_dingtalk_signed(r, DING_TOKEN, DING_SECRET);
        let v = r.json();
        assert_eq!(v["msgtype"], "text");
        assert!(v["text"]["content"].is_string());
        assert_eq!(v["at"]["isAtAll"], false);
    }
    let by_alarm = |a: i64| reqs.iter().find(|r| r.alarms() == [a]).unwrap().json();

    let urgent = by_alarm(31);
    let content = urgent["text"]["content"].as_str().unwrap();
    assert!(
        content.starts_with("【火警】3号楼 2F 东走廊 烟感#031#：烟雾报警"),
        "{content}"
    );
    let mentioned: BTreeSet<&str> = urgent["at"]["atMobiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    // The channel's own mobiles and the people of the alarm's department.
    assert_eq!(
        mentioned,
        BTreeSet::from(["13900000009", "13800000001", "13800000002"])
    );
    for m in mentioned {
        // DingTalk shows the mention only when the text names the mobile too.
        assert!(content.contains(&format!("@{m}")), "{content}");
    }

    let lesser = by_alarm(32);
    assert_eq!(
        lesser["at"]["atMobiles"],
        json!([]),
        "no one woken for a minor alarm"
    );
    assert!(!lesser["text"]["content"].as_str().unwrap().contains('@'));
}

#[tokio::test]
async fn a_dingtalk_too_fast_answer_holds_the_robot_then_the_push_goes_out() {
    let rx = Receiver::start(|_, n| {
        if n == 0 {
            dingtalk_too_fast()
        } else {
            robot_ok()
        }
    })
    .await;
    let hub = Hub::start(&dingtalk_channel(&rx));
    hub.send(vec![row("robot", &fire(41), 0)]);
    eventually("the refused attempt is recorded", || {
        hub.delivery(41).attempts == 1
    })
    .await;
    let d = hub.delivery(41);
    assert_eq!(d.state, "pending", "a refused push stays in the outbox");
    assert!(
        d.last_error.as_deref().unwrap_or("").contains("130101"),
        "{d:?}"
    );

    // The robot is held: neither the push nor a new one is sent while it is.
    skip(Duration::from_secs(30)).await;
    hub.send(vec![row("robot", &fire(42), 0)]);
    let_run().await;
    assert_eq!(
        rx.count(),
        1,
        "nothing sent to a robot that said 'too fast'"
    );
    assert_eq!(hub.delivery(42).state, "pending");

    skip(Duration::from_secs(31)).await;
    eventually("both are delivered after the hold", || {
        hub.delivered(41) && hub.delivered(42)
    })
    .await;
    assert_eq!(hub.delivery(41).attempts, 2);
    assert_eq!(rx.accepted_alarms(), BTreeMap::from([(41, 1), (42, 1)]));
    for r in rx.requests() {
        assert_dingtalk_signed(&r, DING_TOKEN, DING_SECRET);
    }
}

#[tokio::test]
async fn more_pushes_than_a_robot_quota_at_once_are_merged_into_a_digest_none_dropped() {
    let refusals = Arc::new(AtomicUsize::new(0));
    let rx = Receiver::start(dingtalk_quota(refusals.clone())).await;
    let hub = Hub::start(&dingtalk_channel(&rx));
    let ids: Vec<i64> = (101..=125).collect();
    hub.send(ids.iter().map(|&a| row("robot", &energy(a), 0)).collect());
    eventually("all are delivered", || {
        ids.iter().all(|&a| hub.delivered(a))
    })
    .await;

    let reqs = rx.requests();
    assert!(
        reqs.len() <= 20,
        "{} messages for 25 pushes: past the quota",
        reqs.len()
    );
    assert!(reqs.len() < ids.len(), "merged, not one message each");
    assert_eq!(refusals.load(Ordering::SeqCst), 0);
    let seen = rx.accepted_alarms();
    assert_eq!(
        seen,
        ids.iter().map(|&a| (a, 1)).collect::<BTreeMap<_, _>>(),
        "every alarm exactly once"
    );
    let digest = reqs.iter().find(|r| r.alarms().len() > 1).unwrap().text();
    assert!(digest.starts_with("【告警汇总】共 "), "{digest}");
}

/// The hub has finished with every request the robot got: each answered, and the pushes of
/// those it accepted recorded as delivered. Then a moment without a new request.
async fn settle(hub: &Hub, rx: &Receiver) {
    let deadline = std::time::Instant::now() + SOON;
    let mut quiet = 0;
    loop {
        let n = rx.count();
        let done = rx.answered() == n && rx.accepted_alarms().keys().all(|&a| hub.delivered(a));
        tokio::time::sleep(Duration::from_millis(3)).await;
        quiet = if done && rx.count() == n {
            quiet + 1
        } else {
            0
        };
        if quiet >= 2 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the hub did not settle"
        );
    }
}

#[tokio::test]
async fn a_steady_stream_of_pushes_never_makes_dingtalk_refuse_and_none_is_lost() {
    // One lesser alarm every 2 s for 80 s: 40 pushes, twice what the robot takes in a minute.
    // A robot that got more than 20 in any minute would hold every push, fire alarms too,
    // for 10 minutes.
    let refusals = Arc::new(AtomicUsize::new(0));
    let rx = Receiver::start(dingtalk_quota(refusals.clone())).await;
    let hub = Hub::start(&dingtalk_channel(&rx));
    let mut sent_at: BTreeMap<i64, Instant> = BTreeMap::new();
    let mut second = 0;
    loop {
        if second % 2 == 0 && second < 80 {
            let a = 200 + second / 2;
            hub.send(vec![row("robot", &energy(a), 0)]);
            sent_at.insert(a, Instant::now());
        }
        settle(&hub, &rx).await;
        if second >= 80 && sent_at.keys().all(|&a| hub.delivered(a)) {
            break;
        }
        assert!(second < 400, "pushes still waiting after {second} s");
        assert_eq!(
            refusals.load(Ordering::SeqCst),
            0,
            "the robot refused at {second} s: more than 20 messages in a minute"
        );
        skip(Duration::from_secs(1)).await;
        second += 1;
    }

    assert_eq!(refusals.load(Ordering::SeqCst), 0);
    let seen = rx.accepted_alarms();
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        sent_at.keys().copied().collect::<Vec<_>>(),
        "every alarm reached the robot"
    );
    assert!(seen.values().all(|&n| n == 1), "none twice: {seen:?}");
    assert!(rx.count() < sent_at.len(), "merged, not one message each");
    // And none waited much more than the minute the quota imposes.
    for (r, _) in rx.exchanges() {
        for a in r.alarms() {
            let waited = r.at - sent_at[&a];
            assert!(
                waited <= Duration::from_secs(63),
                "alarm {a} waited {waited:?}"
            );
        }
    }
}

#[tokio::test]
async fn an_urgent_push_goes_out_at_once_when_lesser_ones_used_up_the_quota() {
    let refusals = Arc::new(AtomicUsize::new(0));
    let rx = Receiver::start(dingtalk_quota(refusals.clone())).await;
    let hub = Hub::start(&dingtalk_channel(&rx));
    // Lesser alarms one after the other use up their share of the robot's quota (a quarter
    // of the 20 a minute is kept for urgent pushes)...
    let lesser: Vec<i64> = (301..=320).collect();
    for &a in &lesser[..15] {
        hub.send(vec![row("robot", &energy(a), 0)]);
        eventually("a lesser push within the quota is delivered", || {
            hub.delivered(a)
        })
        .await;
    }
    hub.send(
        lesser[15..]
            .iter()
            .map(|&a| row("robot", &energy(a), 0))
            .collect(),
    );
    settle(&hub, &rx).await;
    let backlog = hub.store.pending().unwrap().len();
    assert_eq!(backlog, 5, "past their share, lesser pushes wait");
    // ...a fire alarm still goes out at once, mentioning the people who must act.
    let started = std::time::Instant::now();
    hub.send(vec![row("robot", &fire(399), 0)]);
    eventually("the fire alarm is delivered", || hub.delivered(399)).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the fire alarm took {:?}",
        started.elapsed()
    );
    assert_eq!(
        hub.store.pending().unwrap().len(),
        backlog,
        "the backlog waits"
    );
    let fire_req = rx
        .requests()
        .into_iter()
        .find(|r| r.alarms() == [399])
        .unwrap();
    assert!(!fire_req.json()["at"]["atMobiles"]
        .as_array()
        .unwrap()
        .is_empty());

    // The backlog follows within the minute, merged.
    skip(Duration::from_secs(61)).await;
    eventually("the backlog is delivered", || {
        lesser.iter().all(|&a| hub.delivered(a))
    })
    .await;
    assert_eq!(refusals.load(Ordering::SeqCst), 0);
    assert!(rx.accepted_alarms().values().all(|&n| n == 1));
}

#[tokio::test]
async fn an_urgent_push_overtakes_lesser_ones_stuck_on_a_slow_robot() {
    // The robot takes its time over lesser alarms (a slow network, a busy service): the lane
    // of lesser pushes is stuck on one of them.
    let slow = CancellationToken::new();
    let gate = slow.clone();
    let rx = Receiver::start(move |r, _| {
        if r.text().contains("火警") {
            robot_ok()
        } else {
            robot_ok().after(&gate)
        }
    })
    .await;
    let hub = Hub::start(&dingtalk_channel(&rx));
    hub.send((501..=505).map(|a| row("robot", &energy(a), 0)).collect());
    eventually("a lesser push is in flight", || rx.count() == 1).await;

    let started = std::time::Instant::now();
    hub.send(vec![row("robot", &fire(599), 0)]);
    eventually("the fire alarm is delivered", || hub.delivered(599)).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the fire alarm took {:?}",
        started.elapsed()
    );
    assert!(
        (501..=505).all(|a| !hub.delivered(a)),
        "the lesser still wait"
    );

    slow.cancel();
    eventually("the lesser pushes follow", || {
        (501..=505).all(|a| hub.delivered(a))
    })
    .await;
    assert_eq!(rx.accepted_alarms().len(), 6);
}

// ---------------------------------------------------------------------------------------------
// Feishu custom bot (signed)

const FEISHU_SECRET: &str = "fs-secret-9kq";

fn feishu_channel(rx: &Receiver, language: &str) -> String {
    format!(
        r#"
[[channel]]
id = "lark"
kind = "feishu"
url = "{}"
secret = "{FEISHU_SECRET}"
language = "{language}"
"#,
        rx.url("/open-apis/bot/v2/hook/6f1e-hook-id")
    )
}

#[tokio::test]
async fn a_feishu_bot_gets_a_signed_text_in_the_channel_language() {
    let rx = Receiver::start(|_, _| feishu_ok()).await;
    let hub = Hub::start(&feishu_channel(&rx, "en"));
    hub.send(vec![row("lark", &fire(61), 0)]);
    eventually("the push is delivered", || hub.delivered(61)).await;

    let reqs = rx.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, Method::POST);
    assert_eq!(r.uri.path(), "/open-apis/bot/v2/hook/6f1e-hook-id");
    assert_feishu_signed(r, FEISHU_SECRET);
    let v = r.json();
    assert_eq!(v["msg_type"], "text");
    let text = v["content"]["text"].as_str().unwrap();
    assert!(
        text.starts_with("[FIRE] 3号楼 2F 东走廊 烟感#061#: Smoke detected"),
        "{text}"
    );
    let keys: BTreeSet<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["timestamp", "sign", "msg_type", "content"])
    );
}

#[tokio::test]
async fn feishu_rate_limit_answers_hold_the_bot_and_the_push_is_retried() {
    let rx = Receiver::start(|_, n| match n {
        0 => Reply::json(
            200,
            json!({"code": 9499, "msg": "Too Many Request", "data": {}}),
        ),
        // The Open API says 11232 with HTTP 400: the code counts, not the status.
        1 => Reply::json(
            400,
            json!({"code": 11232, "msg": "frequency limited", "data": {}}),
        ),
        _ => feishu_ok(),
    })
    .await;
    let hub = Hub::start(&feishu_channel(&rx, "zh-CN"));
    hub.send(vec![row("lark", &fire(62), 0)]);
    for (refused, code) in [(1, "9499"), (2, "11232")] {
        eventually("the refused attempt is recorded", || {
            hub.delivery(62).attempts == refused
        })
        .await;
        let d = hub.delivery(62);
        assert_eq!(d.state, "pending");
        assert!(
            d.last_error.as_deref().unwrap_or("").contains(code),
            "{d:?}"
        );
        skip(Duration::from_secs(30)).await;
        let_run().await;
        assert_eq!(
            rx.count(),
            refused as usize,
            "the bot is left alone a while"
        );
        skip(Duration::from_secs(31)).await;
    }
    eventually("the push is delivered", || hub.delivered(62)).await;
    assert_eq!(hub.delivery(62).attempts, 3);
    assert_eq!(rx.accepted_alarms(), BTreeMap::from([(62, 1)]));
    for r in rx.requests() {
        assert_feishu_signed(&r, FEISHU_SECRET);
    }
}

// ---------------------------------------------------------------------------------------------
// WeCom group robot

const WECOM_KEY: &str = "693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa";

fn wecom_channel(rx: &Receiver) -> String {
    format!(
        r#"
[[channel]]
id = "wecom"
kind = "wecom"
url = "{}"
mobiles = ["13900000009"]
"#,
        rx.url(&format!("/cgi-bin/webhook/send?key={WECOM_KEY}"))
    )
}

#[tokio::test]
async fn a_wecom_robot_gets_a_text_mentioning_the_department_on_urgent_pushes() {
    let rx = Receiver::start(|_, _| robot_ok()).await;
    let hub = Hub::start(&wecom_channel(&rx));
    hub.send(vec![
        row("wecom", &fire(71), 0),
        row("wecom", &energy(72), 0),
    ]);
    eventually("both are delivered", || {
        hub.delivered(71) && hub.delivered(72)
    })
    .await;
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 2);
    for r in &reqs {
        assert_eq!(r.method, Method::POST);
        assert_eq!(r.uri.path(), "/cgi-bin/webhook/send");
        assert_eq!(r.query("key").as_deref(), Some(WECOM_KEY));
        let v = r.json();
        assert_eq!(v["msgtype"], "text");
        assert!(v["text"]["content"].as_str().unwrap().len() <= 2048);
    }
    let by_alarm = |a: i64| reqs.iter().find(|r| r.alarms() == [a]).unwrap().json();
    let urgent = by_alarm(71);
    let mut mentioned: Vec<&str> = urgent["text"]["mentioned_mobile_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    mentioned.sort();
    assert_eq!(mentioned, ["13800000001", "13800000002", "13900000009"]);
    assert!(urgent["text"]["content"]
        .as_str()
        .unwrap()
        .starts_with("【火警】"));
    assert_eq!(by_alarm(72)["text"]["mentioned_mobile_list"], json!([]));
}

#[tokio::test]
async fn a_wecom_freq_limit_answer_is_retried_after_the_pause() {
    let rx = Receiver::start(|_, n| {
        if n == 0 {
            Reply::json(
                200,
                json!({"errcode": 45009, "errmsg": "api freq out of limit"}),
            )
        } else {
            robot_ok()
        }
    })
    .await;
    let hub = Hub::start(&wecom_channel(&rx));
    hub.send(vec![row("wecom", &energy(73), 0)]);
    eventually("the refused attempt is recorded", || {
        hub.delivery(73).attempts == 1
    })
    .await;
    let d = hub.delivery(73);
    assert_eq!(d.state, "pending");
    assert!(
        d.last_error.as_deref().unwrap_or("").contains("45009"),
        "{d:?}"
    );
    skip(Duration::from_secs(30)).await;
    let_run().await;
    assert_eq!(rx.count(), 1, "the robot is left alone a while");
    skip(Duration::from_secs(31)).await;
    eventually("the push is delivered", || hub.delivered(73)).await;
    assert_eq!(rx.accepted_alarms(), BTreeMap::from([(73, 1)]));
}

#[tokio::test]
async fn a_wecom_digest_too_long_for_2048_bytes_counts_what_it_cannot_list() {
    let rx = Receiver::start(|_, _| robot_ok()).await;
    let hub = Hub::start(&wecom_channel(&rx));
    let ids: Vec<i64> = (801..=840).collect();
    hub.send(ids.iter().map(|&a| row("wecom", &energy(a), 77)).collect());
    eventually("the group is delivered", || {
        ids.iter().all(|&a| hub.delivered(a))
    })
    .await;
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 1);
    let content = reqs[0].text();
    assert!(content.len() <= 2048, "{} bytes", content.len());
    let lines: Vec<&str> = content.lines().collect();
    assert_eq!(lines[0], "【告警汇总】共 40 条");
    // Whole lines only, then how many more there are: no alarm silently cut off.
    let listed = &lines[1..lines.len() - 1];
    for l in listed {
        assert!(l.starts_with("【能耗·次要】") && !l.ends_with('…'), "{l}");
    }
    let last = lines[lines.len() - 1];
    let more: usize = last
        .strip_prefix("……另有 ")
        .and_then(|s| s.strip_suffix(" 条，请在控制台查看"))
        .unwrap_or_else(|| panic!("no count of the rest: {last:?}"))
        .parse()
        .unwrap();
    assert_eq!(listed.len() + more, 40, "{content}");
    assert_eq!(alarm_ids(&content).len(), listed.len());
}
