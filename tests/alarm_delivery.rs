//! Alarms all the way to real HTTP receivers: an alarm storm behind a dead bus that must not
//! bury a fire alarm, and a push that survives `kill -9` of the hub.

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::{webhook_signature_ok, MqttDevice, Receiver};
use parkhub::alarm::engine::{AlarmFeed, Engine, EngineConfig};
use parkhub::alarm::store::{AlarmStore, Listing, DB_FILE};
use parkhub::reading::{Reading, Value};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

const DEVICES: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_devices_behind_a_dead_bus_make_a_handful_of_messages_and_a_fire_still_goes_out_at_once(
) {
    let hooks = Receiver::start().await;
    let ding = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
[hub]
id = "hz-storm"
data_dir = "{data}"

[mqtt]
broker = "embedded"
listen = "127.0.0.1:1883"

[alarms]
group_window_s = 2

[[bus]]
id = "gw-1"
kind = "tcp"
address = "127.0.0.1:1"

[[device]]
id = "em-0000"
profile = "chint-dtsu666"
bus = "gw-1"
unit = 1

[[device]]
id = "smoke-1"
profile = "mqtt-smoke-detector"
topic = "park/smoke-1"
location = {{ building = "3号楼", floor = "2F" }}

[[channel]]
id = "ops-hook"
kind = "webhook"
url = "{ops}"
secret = "ops-secret"

[[channel]]
id = "fire-hook"
kind = "webhook"
url = "{fire}"
secret = "fire-secret"

[[channel]]
id = "ding"
kind = "dingtalk"
url = "{ding}"

[[department]]
id = "ops"
name = "物业工程"
channels = ["ops-hook", "ding"]

[[department]]
id = "fire-control"
name = "消防控制室"
channels = ["fire-hook", "ding"]

[[route]]
match = {{ category = "fire" }}
departments = ["fire-control"]

[[route]]
departments = ["ops"]
"#,
        data = dir.path().display(),
        ops = hooks.url("/ops"),
        fire = hooks.url("/fire"),
        ding = ding.url("/robot/send?access_token=t"),
    );
    let loaded = common::load(&text, dir.path());
    let mut cfg = EngineConfig::from_loaded(&loaded);
    // A thousand meters behind the gateway: more than Modbus unit ids allow on one line, so
    // they are added to the engine's view directly (the engine does not care about units).
    let template = cfg.devices.get("em-0000").unwrap().clone();
    for i in 1..DEVICES {
        cfg.devices
            .insert(Arc::from(format!("em-{i:04}").as_str()), template.clone());
    }
    let store = Arc::new(AlarmStore::open(&dir.path().join(DB_FILE)).unwrap());
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let notifier = parkhub::notify::start(
        &loaded.config,
        store.clone(),
        None,
        &parkhub::gpio::for_config(&loaded, None),
        &mut tasks,
        stop.clone(),
    )
    .unwrap();
    let (feed, events) = AlarmFeed::new(&cfg);
    let (_engine, task) = Engine::new(cfg, store.clone(), notifier).start(events, stop.clone());
    tasks.spawn(task);

    // Half the meters report offline before the gateway's own verdict, the fire in the middle.
    for i in 0..DEVICES / 2 {
        feed.device(Arc::from(format!("em-{i:04}").as_str()), false, None);
    }
    let fire_at = Instant::now();
    feed.readings(&[Reading {
        device: "smoke-1".into(),
        point: "smoke".into(),
        ts: Utc::now(),
        value: Value::Bool(true),
        unit: None,
    }]);
    feed.bus("gw-1".into(), false);
    for i in DEVICES / 2..DEVICES {
        feed.device(Arc::from(format!("em-{i:04}").as_str()), false, None);
    }

    let fire_path = |r: &common::Received| r.path == "/fire";
    common::wait_until(Duration::from_secs(5), "the fire alarm arrives", || {
        hooks.received().iter().any(fire_path)
    })
    .await;
    let fire = hooks.received().into_iter().find(fire_path).unwrap();
    let latency = fire.at - fire_at;
    assert!(
        latency < Duration::from_millis(1000),
        "the fire alarm waited {latency:?} behind the storm"
    );
    assert!(webhook_signature_ok("fire-secret", &fire));
    assert_eq!(fire.json()["category"], "fire");
    assert!(
        hooks
            .received()
            .iter()
            .all(|r| r.path != "/ops" || r.at > fire.at),
        "nothing of the storm went out before the fire alarm"
    );

    // Let every group window pass, then count.
    common::wait_until(Duration::from_secs(10), "the bus alarm arrives", || {
        hooks.received().iter().any(|r| r.path == "/ops")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ops: Vec<_> = hooks
        .received()
        .into_iter()
        .filter(|r| r.path == "/ops")
        .collect();
    assert!(
        ops.len() <= 2,
        "{} messages to the ops webhook for one dead gateway",
        ops.len()
    );
    let told: Vec<String> = ops
        .iter()
        .flat_map(|r| {
            let v = r.json();
            let alarms = v.get("alarms").cloned();
            match alarms {
                Some(serde_json::Value::Array(a)) => a,
                _ => vec![v],
            }
        })
        .map(|a| a["rule"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(told.contains(&"bus_offline".to_string()), "{told:?}");
    assert!(ops.iter().all(|r| webhook_signature_ok("ops-secret", r)));
    let ding_msgs = ding.received();
    assert!(
        ding_msgs.len() <= 3,
        "{} DingTalk messages (fire + gateway expected)",
        ding_msgs.len()
    );
    println!(
        "storm: fire alarm after {latency:?}; {} webhook and {} DingTalk messages for {DEVICES} meters",
        ops.len(),
        ding_msgs.len()
    );
    let texts: Vec<String> = ding_msgs
        .iter()
        .map(|r| r.json()["text"]["content"].as_str().unwrap().to_string())
        .collect();
    assert!(texts.iter().any(|t| t.contains("火警")), "{texts:?}");

    // Every alarm is on record; the meters' are explained by the gateway, none lost.
    let open = store.list(Listing::Open, 5000).unwrap();
    assert_eq!(open.len(), DEVICES + 2);
    assert_eq!(open.iter().filter(|a| a.suppressed).count(), DEVICES);
    assert!(
        store.pending().unwrap().is_empty(),
        "nothing left undelivered"
    );
    stop.cancel();
    while tasks.join_next().await.is_some() {}
}

/// Runs `parkhub run` on `config`.
fn hub(config: &std::path::Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_parkhub"))
        .args(["run", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_that_could_not_be_delivered_is_delivered_after_the_hub_is_killed_and_restarted() {
    let receiver = Receiver::start().await;
    receiver.answer(503, "down for maintenance");
    let dir = tempfile::tempdir().unwrap();
    let mqtt_port = common::free_port();
    let config = dir.path().join("parkhub.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[hub]
id = "hz-kill"
data_dir = "{data}"

[api]
listen = "127.0.0.1:0"

[mqtt]
broker = "embedded"
listen = "127.0.0.1:{mqtt_port}"

[[device]]
id = "smoke-1"
profile = "mqtt-smoke-detector"
topic = "park/smoke-1"

[[channel]]
id = "hook"
kind = "webhook"
url = "{url}"
secret = "kill-secret"

[[department]]
id = "fire-control"
name = "消防控制室"
channels = ["hook"]

[[route]]
departments = ["fire-control"]
"#,
            data = dir.path().join("data").display(),
            url = receiver.url("/alarm"),
        ),
    )
    .unwrap();

    let mut first = hub(&config);
    let mut sensor = None;
    let deadline = Instant::now() + Duration::from_secs(15);
    while sensor.is_none() {
        match MqttDevice::connect(mqtt_port, "smoke-1", None, None).await {
            Ok(s) => sensor = Some(s),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the hub's broker did not come up: {e}"),
        }
    }
    let mut sensor = sensor.unwrap();
    // Until the hub has subscribed a message is lost: repeat it (the same alarm) until the
    // push is attempted.
    let deadline = Instant::now() + Duration::from_secs(15);
    while receiver.count() == 0 {
        assert!(Instant::now() < deadline, "no push was attempted");
        sensor
            .publish("park/smoke-1", r#"{"smoke":true,"battery":90}"#)
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let attempts = receiver.count();
    assert!(attempts >= 1);

    let db = AlarmStore::open(&dir.path().join("data").join(DB_FILE)).unwrap();
    let pending = db.pending().unwrap();
    assert_eq!(pending.len(), 1, "the undelivered push waits in the outbox");
    let alarm = pending[0].alarm;

    receiver.answer(200, "ok");
    let mut second = hub(&config);
    common::wait_until(Duration::from_secs(15), "delivered after restart", || {
        db.pending().map(|p| p.is_empty()).unwrap_or(false)
    })
    .await;
    let _ = second.kill();
    let _ = second.wait();

    let got = receiver.received();
    let last = got.last().unwrap();
    assert!(webhook_signature_ok("kill-secret", last));
    let body = last.json();
    assert_eq!(body["alarm_id"], alarm.to_string());
    assert_eq!(body["event"], "raised");
    assert_eq!(body["device_id"], "smoke-1");
    let d = db.deliveries(alarm).unwrap();
    assert_eq!(d[0].state, "delivered");
    assert!(d[0].attempts as usize > attempts.min(1), "{d:?}");
    // The alarm itself was carried over, not raised a second time.
    let all = db.list(Listing::All, 10).unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(db.events(alarm).unwrap().len(), 1);
}
