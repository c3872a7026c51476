//! The alarm engine with the real alarm database, on tokio's paused clock: on- and off-delays,
//! escalation, repeats, shelving, grouping, inhibition, maintenance and restarts. The engine's
//! push lanes are channels the test reads, so what it reads is exactly what would be
//! delivered: rows already committed to the outbox.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use parkhub::alarm::engine::{
    AlarmFeed, CommandError, Engine, EngineConfig, EngineHandle, RELEASE_GRACE,
};
use parkhub::alarm::store::{AlarmRow, AlarmStore, Listing, OutboxRow, DB_FILE};
use parkhub::alarm::AlarmState;
use parkhub::notify::lane::LaneMsg;
use parkhub::notify::{Notifier, Push, Siren};
use parkhub::reading::{Reading, Value};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

const BASE: &str = r#"
[hub]
id = "hz-test-01"
data_dir = "DIR"

[mqtt]
broker = "embedded"
listen = "127.0.0.1:1883"

[[bus]]
id = "line-1"
kind = "tcp"
address = "127.0.0.1:1"

[[device]]
id = "em-1"
profile = "chint-dtsu666"
bus = "line-1"
unit = 1

[[device]]
id = "em-2"
profile = "chint-dtsu666"
bus = "line-1"
unit = 2

[[device]]
id = "smoke-1"
name = "3号楼2层烟感01"
profile = "mqtt-smoke-detector"
topic = "park/b3/2f/smoke-01"
location = { building = "3号楼", floor = "2F", zone = "东走廊" }

[[device]]
id = "env-1"
profile = "mqtt-env-sensor"
topic = "park/env-1"

[[channel]]
id = "fire-hook"
kind = "webhook"
url = "http://127.0.0.1:9/fire"
secret = "s1"

[[channel]]
id = "ops-hook"
kind = "webhook"
url = "http://127.0.0.1:9/ops"
secret = "s2"

[[channel]]
id = "boss-hook"
kind = "webhook"
url = "http://127.0.0.1:9/boss"
secret = "s3"

[[channel]]
id = "siren"
kind = "gpio"
pin = 17

[[department]]
id = "fire-control"
name = "消防控制室"
channels = ["fire-hook", "siren"]

[[department]]
id = "ops"
name = "物业工程"
channels = ["ops-hook"]

[[department]]
id = "boss"
name = "园区主任"
channels = ["boss-hook"]

EXTRA

[[route]]
match = { category = "fire" }
departments = ["fire-control"]
escalate_after_s = 120
escalate_to = ["boss"]

[[route]]
departments = ["ops"]
"#;

/// The engine on a real alarm database, with the lanes' and sirens' receiving ends.
struct Rig {
    engine: EngineHandle,
    feed: AlarmFeed,
    store: Arc<AlarmStore>,
    lanes: HashMap<(String, bool), mpsc::UnboundedReceiver<LaneMsg>>,
    siren: watch::Receiver<Siren>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    dir: Arc<tempfile::TempDir>,
    extra: String,
}

impl Rig {
    async fn start(extra: &str) -> Rig {
        Self::start_in(Arc::new(tempfile::tempdir().unwrap()), extra).await
    }

    async fn start_in(dir: Arc<tempfile::TempDir>, extra: &str) -> Rig {
        // The test's own sections go before the routes, so its routes are matched first.
        let text = BASE
            .replace("EXTRA", extra)
            .replace("DIR", &dir.path().display().to_string());
        let loaded = common::load(&text, dir.path());
        let cfg = EngineConfig::from_loaded(&loaded);
        let (feed, events) = AlarmFeed::new(&cfg);
        let store = Arc::new(AlarmStore::open(&dir.path().join(DB_FILE)).unwrap());
        let mut senders = HashMap::new();
        let mut lanes = HashMap::new();
        for c in ["fire-hook", "ops-hook", "boss-hook"] {
            for urgent in [true, false] {
                let (tx, rx) = mpsc::unbounded_channel();
                senders.insert((c.to_string(), urgent), tx);
                lanes.insert((c.to_string(), urgent), rx);
            }
        }
        let (siren_tx, siren) = watch::channel(Siren::default());
        let sirens = HashMap::from([("siren".to_string(), Arc::new(siren_tx))]);
        let notifier = Notifier::with_lanes(senders, sirens);
        let stop = CancellationToken::new();
        let (engine, task) = Engine::new(cfg, store.clone(), notifier).start(events, stop.clone());
        let task = tokio::spawn(task);
        let rig = Rig {
            engine,
            feed,
            store,
            lanes,
            siren,
            stop,
            task,
            dir,
            extra: extra.to_string(),
        };
        rig.settle().await;
        rig
    }

    /// Lets the engine take everything sent so far (the paused clock moves 1 ms).
    async fn settle(&self) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    async fn advance(&self, d: Duration) {
        tokio::time::sleep(d).await;
        self.settle().await;
    }

    async fn read(&self, device: &str, point: &str, value: Value) {
        self.feed.readings(&[Reading {
            device: device.into(),
            point: point.into(),
            ts: Utc::now(),
            value,
            unit: None,
        }]);
        self.settle().await;
    }

    async fn device_online(&self, device: &str, online: bool) {
        self.feed.device(device.into(), online, None);
        self.settle().await;
    }

    /// Pushes handed to a channel's lanes since the last look: (urgent, row).
    fn pushes(&mut self, channel: &str) -> Vec<(bool, OutboxRow)> {
        let mut out = Vec::new();
        for urgent in [true, false] {
            let rx = self.lanes.get_mut(&(channel.to_string(), urgent)).unwrap();
            while let Ok(msg) = rx.try_recv() {
                if let LaneMsg::Push(row) = msg {
                    out.push((urgent, row));
                }
            }
        }
        out
    }

    fn events(&mut self, channel: &str) -> Vec<String> {
        self.pushes(channel)
            .into_iter()
            .map(|(_, r)| r.event)
            .collect()
    }

    fn open(&self) -> Vec<AlarmRow> {
        self.store.list(Listing::Open, 1000).unwrap()
    }

    fn only_open(&self) -> AlarmRow {
        let open = self.open();
        assert_eq!(open.len(), 1, "{open:#?}");
        open.into_iter().next().unwrap()
    }

    fn stored_events(&self, id: i64) -> Vec<String> {
        self.store
            .events(id)
            .unwrap()
            .into_iter()
            .map(|e| e.event)
            .collect()
    }

    async fn restart(self) -> Rig {
        self.stop.cancel();
        self.task.await.unwrap();
        Rig::start_in(self.dir.clone(), &self.extra).await
    }
}

fn b(v: bool) -> Value {
    Value::Bool(v)
}

fn n(v: f64) -> Value {
    Value::Number(v)
}

fn push(row: &OutboxRow) -> Push {
    serde_json::from_str(&row.payload).unwrap()
}

/// A relay that silenced itself after `max_on_s` must sound again for news, not for the alarm
/// it already sounded for: the engine tells the two apart with the siren's epoch.
#[tokio::test(start_paused = true)]
async fn only_an_alarm_new_to_a_siren_moves_its_epoch() {
    let rig = Rig::start(
        r#"
[[device]]
id = "smoke-2"
profile = "mqtt-smoke-detector"
topic = "park/b3/3f/smoke-02"
"#,
    )
    .await;
    assert_eq!(*rig.siren.borrow(), Siren::default());
    rig.read("smoke-1", "smoke", b(true)).await;
    let first = *rig.siren.borrow();
    assert!(first.on);
    rig.read("smoke-1", "smoke", b(true)).await;
    rig.advance(Duration::from_secs(121)).await;
    assert_eq!(
        *rig.siren.borrow(),
        first,
        "the same alarm again, or escalated elsewhere, is no news to the siren"
    );
    rig.read("smoke-2", "smoke", b(true)).await;
    let second = *rig.siren.borrow();
    assert!(second.on && second.epoch > first.epoch, "{second:?}");
}

/// A flapping input must not re-arm a siren that silenced itself: the same alarm back before
/// anyone acknowledged it is no news. Acknowledged and raised again, it is.
#[tokio::test(start_paused = true)]
async fn an_alarm_flapping_unacknowledged_keeps_its_epoch_and_one_raised_after_an_ack_moves_it() {
    let rig = Rig::start(
        r#"
[[rule]]
id = "hot"
device = "env-1"
point = "temperature"
above = 40.0
category = "fire"
"#,
    )
    .await;
    rig.read("env-1", "temperature", n(45.0)).await;
    let first = *rig.siren.borrow();
    assert!(first.on, "{first:?}");
    rig.read("env-1", "temperature", n(20.0)).await;
    assert!(!rig.siren.borrow().on, "back to normal: quiet");
    rig.read("env-1", "temperature", n(46.0)).await;
    assert_eq!(
        *rig.siren.borrow(),
        first,
        "the same alarm, still unacknowledged"
    );

    let id = rig.only_open().id;
    rig.engine.ack(id, "张三", None).await.unwrap();
    rig.read("env-1", "temperature", n(20.0)).await;
    rig.settle().await;
    rig.read("env-1", "temperature", n(47.0)).await;
    let again = *rig.siren.borrow();
    assert!(again.on && again.epoch > first.epoch, "{again:?}");
}

#[tokio::test(start_paused = true)]
async fn smoke_goes_out_at_once_to_fire_control_and_the_siren_sounds_until_acknowledged() {
    let mut rig = Rig::start("").await;
    rig.read("smoke-1", "smoke", b(true)).await;

    let pushes = rig.pushes("fire-hook");
    assert_eq!(pushes.len(), 1, "{pushes:#?}");
    let (urgent, row) = &pushes[0];
    assert!(urgent, "a fire alarm takes the urgent lane");
    assert!(
        row.not_before <= Utc::now(),
        "never held for a group window"
    );
    let p = push(row);
    assert_eq!(
        (p.event.as_str(), p.severity.as_str(), p.category.as_str()),
        ("raised", "critical", "fire")
    );
    assert_eq!(p.device_id, "smoke-1");
    assert_eq!(p.department, "fire-control");
    assert_eq!(p.point.as_deref(), Some("smoke"));
    assert_eq!(p.value, serde_json::json!(true));
    assert_eq!(p.location.building.as_deref(), Some("3号楼"));
    assert!(
        p.message
            .starts_with("【火警】3号楼 2F 东走廊 3号楼2层烟感01：烟感报警"),
        "{}",
        p.message
    );
    assert!(
        rig.pushes("ops-hook").is_empty(),
        "the first matching route wins"
    );
    assert!(rig.siren.borrow().on, "the siren sounds");

    let id = rig.only_open().id;
    let acked = rig
        .engine
        .ack(id, "张三", Some("已到现场".into()))
        .await
        .unwrap();
    rig.settle().await;
    assert_eq!(acked.state, AlarmState::Acked);
    assert!(!rig.siren.borrow().on, "acknowledged: the siren stops");
    let ack = rig.pushes("fire-hook");
    assert_eq!(ack.len(), 1);
    let p = push(&ack[0].1);
    assert_eq!(
        (p.event.as_str(), p.who.as_deref(), p.comment.as_deref()),
        ("acknowledged", Some("张三"), Some("已到现场"))
    );
    let events = rig.store.events(id).unwrap();
    assert_eq!(events[1].who.as_deref(), Some("张三"));
    assert_eq!(events[1].comment.as_deref(), Some("已到现场"));
}

#[tokio::test(start_paused = true)]
async fn a_latched_fire_alarm_stays_after_the_smoke_clears_until_someone_acknowledges_it() {
    let mut rig = Rig::start("").await;
    rig.read("smoke-1", "smoke", b(true)).await;
    rig.read("smoke-1", "smoke", b(false)).await;
    let a = rig.only_open();
    assert_eq!((a.state, a.condition), (AlarmState::Unacked, false));
    assert_eq!(rig.events("fire-hook"), vec!["raised"], "no 'cleared' yet");
    rig.engine.ack(a.id, "李四", None).await.unwrap();
    rig.settle().await;
    assert!(rig.open().is_empty(), "acknowledged after clearing: closed");
    assert_eq!(
        rig.stored_events(a.id),
        vec!["raised", "acknowledged"],
        "every transition is stored"
    );
}

#[tokio::test(start_paused = true)]
async fn a_chattering_input_keeps_one_alarm_record() {
    let rig = Rig::start("").await;
    for i in 0..10 {
        rig.read("smoke-1", "tamper", b(i % 2 == 0)).await;
    }
    let all = rig.store.list(Listing::All, 100).unwrap();
    assert_eq!(all.len(), 1, "one record for one (device, rule): {all:#?}");
    assert_eq!(all[0].state, AlarmState::RtnUnacked);
    assert_eq!(
        rig.stored_events(all[0].id)
            .iter()
            .filter(|e| *e == "raised")
            .count(),
        5
    );
}

#[tokio::test(start_paused = true)]
async fn the_on_delay_holds_an_alarm_back_until_the_condition_has_lasted() {
    // The profile's temperature_high: above 40 °C for 300 s, deadband 2.
    let mut rig = Rig::start("").await;
    rig.read("env-1", "temperature", n(45.0)).await;
    rig.advance(Duration::from_secs(200)).await;
    rig.read("env-1", "temperature", n(30.0)).await;
    rig.advance(Duration::from_secs(200)).await;
    assert!(rig.open().is_empty(), "it dropped before the delay ran out");

    rig.read("env-1", "temperature", n(45.0)).await;
    rig.advance(Duration::from_secs(299)).await;
    assert!(rig.open().is_empty(), "299 s is not 300 s");
    rig.advance(Duration::from_secs(2)).await;
    let a = rig.only_open();
    assert_eq!(a.key.rule.as_ref(), "temperature_high");
    assert_eq!(a.value.as_deref(), Some("45.0"));
    let pushes = rig.pushes("ops-hook");
    assert_eq!(pushes.len(), 1);
    assert!(!pushes[0].0, "a warning takes the normal lane");

    // Inside the deadband (above 38) it is still hot.
    rig.read("env-1", "temperature", n(39.0)).await;
    assert!(rig.only_open().condition);
}

#[tokio::test(start_paused = true)]
async fn the_off_delay_keeps_an_alarm_until_the_condition_has_been_gone_long_enough() {
    let rig = Rig::start(
        r#"
[[rule]]
id = "tamper"
profile = "mqtt-smoke-detector"
off_delay_s = 60
"#,
    )
    .await;
    rig.read("smoke-1", "tamper", b(true)).await;
    assert!(rig.only_open().condition);
    rig.read("smoke-1", "tamper", b(false)).await;
    rig.advance(Duration::from_secs(30)).await;
    rig.read("smoke-1", "tamper", b(true)).await;
    rig.read("smoke-1", "tamper", b(false)).await;
    rig.advance(Duration::from_secs(59)).await;
    assert!(rig.only_open().condition, "gone 59 s of 60");
    rig.advance(Duration::from_secs(2)).await;
    let a = rig.only_open();
    assert_eq!((a.state, a.condition), (AlarmState::RtnUnacked, false));
    assert_eq!(rig.stored_events(a.id), vec!["raised", "cleared"]);
}

#[tokio::test(start_paused = true)]
async fn an_unacknowledged_fire_alarm_escalates_after_its_route_s_delay() {
    let mut rig = Rig::start("").await;
    rig.read("smoke-1", "smoke", b(true)).await;
    rig.pushes("fire-hook");
    rig.advance(Duration::from_secs(119)).await;
    assert!(rig.pushes("boss-hook").is_empty());
    rig.advance(Duration::from_secs(2)).await;
    let esc = rig.pushes("boss-hook");
    assert_eq!(esc.len(), 1, "{esc:#?}");
    assert!(esc[0].0, "still urgent");
    let p = push(&esc[0].1);
    assert_eq!(
        (p.event.as_str(), p.department.as_str()),
        ("escalated", "boss")
    );
    let a = rig.only_open();
    assert!(a.escalated);
    assert!(rig.stored_events(a.id).contains(&"escalated".to_string()));
}

#[tokio::test(start_paused = true)]
async fn an_alarm_acknowledged_in_time_does_not_escalate() {
    let mut rig = Rig::start("").await;
    rig.read("smoke-1", "smoke", b(true)).await;
    rig.advance(Duration::from_secs(60)).await;
    rig.engine
        .ack(rig.only_open().id, "王五", None)
        .await
        .unwrap();
    rig.advance(Duration::from_secs(600)).await;
    assert!(rig.pushes("boss-hook").is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_unacknowledged_urgent_alarm_is_repeated_until_acknowledged() {
    // [alarms] repeat_urgent_s defaults to 300.
    let mut rig = Rig::start("").await;
    rig.read("smoke-1", "smoke", b(true)).await;
    assert_eq!(rig.events("fire-hook"), vec!["raised"]);
    rig.advance(Duration::from_secs(299)).await;
    assert!(rig.events("fire-hook").is_empty());
    rig.advance(Duration::from_secs(2)).await;
    assert_eq!(rig.events("fire-hook"), vec!["repeated"]);
    rig.advance(Duration::from_secs(300)).await;
    assert_eq!(rig.events("fire-hook"), vec!["repeated"]);
    rig.engine
        .ack(rig.only_open().id, "张三", None)
        .await
        .unwrap();
    rig.settle().await;
    assert_eq!(rig.events("fire-hook"), vec!["acknowledged"]);
    rig.advance(Duration::from_secs(900)).await;
    assert!(
        rig.events("fire-hook").is_empty(),
        "acknowledged: no more repeats"
    );
}

#[tokio::test(start_paused = true)]
async fn a_route_s_repeat_interval_applies_to_lesser_alarms_too() {
    let mut rig = Rig::start(
        r#"
[alarms]
group_window_s = 0

[[route]]
match = { category = "security" }
departments = ["ops"]
repeat_after_s = 600
"#,
    )
    .await;
    rig.read("smoke-1", "tamper", b(true)).await;
    assert_eq!(rig.events("ops-hook"), vec!["raised"]);
    rig.advance(Duration::from_secs(599)).await;
    assert!(rig.events("ops-hook").is_empty());
    rig.advance(Duration::from_secs(2)).await;
    assert_eq!(rig.events("ops-hook"), vec!["repeated"]);
}

#[tokio::test(start_paused = true)]
async fn a_shelved_alarm_is_silent_until_its_shelf_expires() {
    let mut rig = Rig::start("").await;
    rig.read("smoke-1", "smoke", b(true)).await;
    rig.pushes("fire-hook");
    let id = rig.only_open().id;
    let over = rig.engine.shelve(id, "张三", 481, "检修".into()).await;
    assert!(matches!(over, Err(CommandError::Invalid(_))), "{over:?}");
    rig.engine
        .shelve(id, "张三", 30, "误报，厂家检修中".into())
        .await
        .unwrap();
    rig.settle().await;
    assert!(!rig.siren.borrow().on, "a shelved alarm does not sound");
    rig.advance(Duration::from_secs(29 * 60)).await;
    assert!(
        rig.pushes("fire-hook").is_empty(),
        "no repeats while shelved"
    );
    assert!(
        rig.pushes("boss-hook").is_empty(),
        "no escalation while shelved"
    );
    rig.advance(Duration::from_secs(61)).await;
    assert_eq!(
        rig.events("fire-hook"),
        vec!["repeated"],
        "back: told again"
    );
    assert!(rig.siren.borrow().on);
    let events = rig.stored_events(id);
    assert!(events.ends_with(&["shelved".to_string(), "unshelved".to_string()]));
    let shelved = rig.store.events(id).unwrap();
    let s = shelved.iter().find(|e| e.event == "shelved").unwrap();
    assert_eq!(s.comment.as_deref(), Some("误报，厂家检修中"));
}

#[tokio::test(start_paused = true)]
async fn lesser_alarms_within_a_window_are_grouped_but_an_urgent_one_is_not() {
    let mut rig = Rig::start("").await;
    rig.read("smoke-1", "tamper", b(true)).await;
    rig.advance(Duration::from_secs(5)).await;
    rig.read("smoke-1", "smoke", b(true)).await;
    rig.advance(Duration::from_secs(5)).await;
    rig.device_online("em-1", false).await;

    let ops = rig.pushes("ops-hook");
    assert_eq!(ops.len(), 2, "tamper and em-1 offline: {ops:#?}");
    assert!(ops.iter().all(|(urgent, _)| !urgent));
    assert_eq!(ops[0].1.group, ops[1].1.group, "one group, one message");
    assert_eq!(ops[0].1.not_before, ops[1].1.not_before);
    let window = ops[0].1.not_before - ops[0].1.created;
    assert!(
        (29..=30).contains(&window.num_seconds()),
        "held for the 30 s window: {window}"
    );
    let fire = rig.pushes("fire-hook");
    assert_eq!(fire.len(), 1);
    let (urgent, smoke) = &fire[0];
    assert!(urgent);
    assert_ne!(smoke.group, ops[0].1.group);
    assert!(smoke.not_before <= Utc::now(), "not held for the window");

    // After the window a new group starts.
    rig.advance(Duration::from_secs(31)).await;
    rig.device_online("em-2", false).await;
    let later = rig.pushes("ops-hook");
    assert_eq!(later.len(), 1);
    assert_ne!(later[0].1.group, ops[0].1.group);
}

#[tokio::test(start_paused = true)]
async fn a_dead_bus_explains_its_devices_comm_alarms_and_they_are_not_pushed() {
    let mut rig = Rig::start("").await;
    // A device went first (its pushes wait in the group window), then the bus.
    rig.device_online("em-1", false).await;
    let early = rig.pushes("ops-hook");
    assert_eq!(early.len(), 1);
    rig.feed.bus("line-1".into(), false);
    rig.settle().await;
    rig.device_online("em-2", false).await;

    let mut withdrawn = Vec::new();
    let rx = rig.lanes.get_mut(&("ops-hook".to_string(), false)).unwrap();
    let mut pushed = Vec::new();
    while let Ok(msg) = rx.try_recv() {
        match msg {
            LaneMsg::Withdraw(ids) => withdrawn.extend(ids),
            LaneMsg::Push(r) => pushed.push(r),
        }
    }
    assert_eq!(
        withdrawn,
        vec![early[0].1.id],
        "em-1's waiting push is taken back"
    );
    assert_eq!(pushed.len(), 1, "only the bus alarm: {pushed:#?}");
    assert_eq!(push(&pushed[0]).rule, "bus_offline");
    let open = rig.open();
    assert_eq!(open.len(), 3);
    assert_eq!(open.iter().filter(|a| a.suppressed).count(), 2);
    let deliveries = rig.store.deliveries(early[0].1.alarm).unwrap();
    assert_eq!(deliveries[0].state, "withdrawn");

    // The bus comes back; em-1 answers again within the grace, em-2 does not: only em-2 is
    // news, and only once the grace is over.
    rig.feed.bus("line-1".into(), true);
    rig.settle().await;
    let told = rig.pushes("ops-hook");
    assert_eq!(told.len(), 1, "{told:#?}");
    assert_eq!(
        (
            push(&told[0].1).device_id.as_str(),
            told[0].1.event.as_str()
        ),
        ("line-1", "cleared")
    );
    rig.advance(Duration::from_secs(60)).await;
    rig.device_online("em-1", true).await;
    assert!(rig.pushes("ops-hook").is_empty(), "em-1 was never news");
    rig.advance(RELEASE_GRACE).await;
    let told: Vec<(String, String)> = rig
        .pushes("ops-hook")
        .iter()
        .map(|(_, r)| (push(r).device_id, r.event.clone()))
        .collect();
    assert_eq!(told, vec![("em-2".to_string(), "raised".to_string())]);
    let open: Vec<AlarmRow> = rig
        .open()
        .into_iter()
        .filter(|a| a.key.scope.kind() == "device")
        .collect();
    assert_eq!(
        open.len(),
        1,
        "em-1's suppressed alarm closed quietly: {open:#?}"
    );
    assert_eq!(&*open[0].key.scope.id().clone(), "em-2");
    assert!(!open[0].suppressed);
}

#[tokio::test(start_paused = true)]
async fn a_device_in_maintenance_raises_nothing_and_its_open_alarms_close() {
    let mut rig = Rig::start("").await;
    rig.read("smoke-1", "tamper", b(true)).await;
    let id = rig.only_open().id;
    rig.pushes("ops-hook");
    rig.engine
        .maintenance("smoke-1", true, "维保", "更换烟感".into(), Some(60))
        .await
        .unwrap();
    rig.settle().await;
    assert!(rig.open().is_empty());
    assert_eq!(rig.stored_events(id).last().unwrap(), "out_of_service");
    rig.read("smoke-1", "smoke", b(true)).await;
    assert!(
        rig.open().is_empty(),
        "no alarm from a device being worked on"
    );
    assert!(rig.pushes("fire-hook").is_empty());
    assert!(matches!(
        rig.engine
            .maintenance("ghost", true, "x", "y".into(), None)
            .await,
        Err(CommandError::NoDevice(_))
    ));

    // The window ends with smoke still reported: now it is an alarm.
    rig.advance(Duration::from_secs(3601)).await;
    let open = rig.open();
    assert_eq!(open.len(), 2, "smoke and tamper, both still on: {open:#?}");
    assert_eq!(rig.events("fire-hook"), vec!["raised"]);
}

#[tokio::test(start_paused = true)]
async fn an_open_alarm_survives_a_restart_and_is_not_raised_again() {
    let mut rig = Rig::start("").await;
    rig.read("smoke-1", "smoke", b(true)).await;
    rig.pushes("fire-hook");
    let id = rig.only_open().id;

    let mut rig = rig.restart().await;
    rig.read("smoke-1", "smoke", b(true)).await;
    assert_eq!(rig.only_open().id, id, "the same alarm");
    assert!(rig.pushes("fire-hook").is_empty(), "not raised again");
    assert_eq!(rig.stored_events(id), vec!["raised"]);
    assert!(rig.siren.borrow().on, "still waiting for someone");
    // Its escalation carries on from when it was raised.
    rig.advance(Duration::from_secs(121)).await;
    assert_eq!(rig.events("boss-hook"), vec!["escalated"]);
    rig.engine.ack(id, "张三", None).await.unwrap();
    assert!(matches!(
        rig.engine.ack(id, "张三", None).await,
        Err(CommandError::AlreadyAcked(_))
    ));
    assert!(matches!(
        rig.engine.ack(9999, "张三", None).await,
        Err(CommandError::NotFound(9999))
    ));
}

#[tokio::test(start_paused = true)]
async fn a_shelf_silences_one_alarm_not_the_next_of_its_kind() {
    let mut rig = Rig::start("").await;
    rig.read("smoke-1", "smoke", b(true)).await;
    let id = rig.only_open().id;
    rig.engine
        .shelve(id, "张三", 60, "烟感误报，待更换".into())
        .await
        .unwrap();
    rig.engine.ack(id, "张三", None).await.unwrap();
    rig.read("smoke-1", "smoke", b(false)).await;
    assert!(rig.open().is_empty());
    rig.pushes("fire-hook");

    rig.advance(Duration::from_secs(60)).await;
    rig.read("smoke-1", "smoke", b(true)).await;
    assert_eq!(
        rig.events("fire-hook"),
        vec!["raised"],
        "a new fire is news"
    );
    assert!(rig.siren.borrow().on);
}

#[tokio::test(start_paused = true)]
async fn an_alarm_told_before_its_bus_died_is_still_told_when_it_clears() {
    let mut rig = Rig::start(
        r#"
[alarms]
group_window_s = 0
"#,
    )
    .await;
    rig.device_online("em-1", false).await;
    let raised = rig.pushes("ops-hook");
    assert_eq!(raised.len(), 1);
    // Delivered, as the lane would have.
    rig.store.delivered(&[raised[0].1.id], Utc::now()).unwrap();
    rig.feed.bus("line-1".into(), false);
    rig.settle().await;
    assert_eq!(rig.events("ops-hook"), vec!["raised"], "the bus alarm");
    rig.device_online("em-1", true).await;
    assert_eq!(
        rig.events("ops-hook"),
        vec!["cleared"],
        "em-1 was told, so its end is too"
    );
}

#[tokio::test(start_paused = true)]
async fn an_alarm_explained_when_the_hub_stopped_is_told_after_a_restart_if_it_still_holds() {
    let mut rig = Rig::start("").await;
    rig.feed.bus("line-1".into(), false);
    rig.settle().await;
    rig.device_online("em-2", false).await;
    rig.feed.bus("line-1".into(), true);
    rig.settle().await;
    rig.pushes("ops-hook");

    // Stopped within the grace: the release must not be forgotten.
    let mut rig = rig.restart().await;
    rig.advance(RELEASE_GRACE + Duration::from_secs(1)).await;
    let told: Vec<(String, String)> = rig
        .pushes("ops-hook")
        .iter()
        .map(|(_, r)| (push(r).device_id, r.event.clone()))
        .collect();
    assert_eq!(told, vec![("em-2".to_string(), "raised".to_string())]);
}
