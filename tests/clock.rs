//! The wall clock stepping back and forward by hours under a running hub, as on a Raspberry Pi
//! that boots with a stale clock until NTP sets it. libfaketime steps the hub's CLOCK_REALTIME
//! (only: the monotonic clock runs on) by rewriting the offset file it reads on every call.
//! Polls, escalation timers and the uplink run on the monotonic clock and must not notice;
//! history and the uplink keep what was stamped on either side of a step.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{
    sha256_hex, spawn_hub, sqlite_damage, stop_hub, tail, wait_until, Cloud, MqttDevice, Receiver,
    SimServer,
};

/// Debian's libfaketime, for this machine's architecture.
fn faketime() -> PathBuf {
    std::fs::read_dir("/usr/lib")
        .unwrap()
        .map(|e| e.unwrap().path().join("faketime/libfaketime.so.1"))
        .find(|p| p.exists())
        .expect("libfaketime is needed for the clock tests (./scripts/test installs it)")
}
const TOKEN: &str = "clock-operator-token";
/// Polls of a 1 s device stored over a 10 s window: a scheduler on the wall clock stores none
/// for hours after a step back, or a burst catching up after a step forward; the slack is for a
/// loaded CI machine.
const RHYTHM: std::ops::RangeInclusive<usize> = 4..=13;
/// A route's escalation delay, seconds.
const ESCALATE_S: u64 = 10;

fn set_offset(file: &Path, offset: &str) {
    // Written whole and renamed, so that the hub never reads half a line.
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, format!("{offset}\n")).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

/// Stored readings of m1's energy counter.
fn readings(db: &Path) -> Vec<i64> {
    // Empty until the hub has made its schema.
    let Ok(c) =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return Vec::new();
    };
    let Ok(mut q) = c.prepare(
        "SELECT v.ts FROM sample_v v JOIN series s ON s.id = v.series
         WHERE s.device = 'm1' AND s.point = 'energy_import' ORDER BY v.ts",
    ) else {
        return Vec::new();
    };
    let rows = q
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows
}

/// How many readings of m1 the hub stores over `window` of real (monotonic) time.
async fn polls_over(db: &Path, window: Duration) -> usize {
    let before: std::collections::BTreeSet<i64> = readings(db).into_iter().collect();
    tokio::time::sleep(window).await;
    let new: Vec<i64> = readings(db)
        .into_iter()
        .filter(|t| !before.contains(t))
        .collect();
    eprintln!("stored over {window:?}: {new:?}");
    new.len()
}

/// When (test's monotonic clock) the webhook first got `event` of alarm `id`.
fn pushed_at(hook: &Receiver, id: &str, event: &str) -> Option<Instant> {
    hook.received().into_iter().find_map(|r| {
        let v = r.json();
        let items = match v["alarms"].as_array() {
            Some(all) => all.clone(),
            None => vec![v],
        };
        items
            .iter()
            .any(|p| p["alarm_id"] == id && p["event"] == event)
            .then_some(r.at)
    })
}

/// The id of the first push of `event` from `device`.
fn pushed_id(hook: &Receiver, device: &str, event: &str) -> Option<(String, Instant)> {
    hook.received().into_iter().find_map(|r| {
        let v = r.json();
        (v["device_id"] == device && v["event"] == event)
            .then(|| (v["alarm_id"].as_str().unwrap().to_string(), r.at))
    })
}

async fn connect(port: u16) -> MqttDevice {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match MqttDevice::connect(port, "clock-sensors", None, None).await {
            Ok(d) => return d,
            Err(e) => {
                assert!(Instant::now() < deadline, "the hub's broker: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Raises an alarm of `device` by publishing until the hub pushes it (the hub may not have
/// subscribed yet); its id and when it was pushed.
async fn raise(
    sensor: &mut MqttDevice,
    hook: &Receiver,
    device: &str,
    payload: &str,
) -> (String, Instant) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        sensor.publish(&format!("park/{device}"), payload).await;
        for _ in 0..5 {
            if let Some(got) = pushed_id(hook, device, "raised") {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(Instant::now() < deadline, "no alarm raised for {device}");
    }
}

/// Checks that `id` escalated ESCALATE_S after it was raised, by the monotonic clock.
async fn assert_escalates_on_time(hook: &Receiver, id: &str, raised: Instant, step: &str) {
    let limit = Duration::from_secs(ESCALATE_S + 20);
    wait_until(limit, &format!("alarm {id} escalated ({step})"), || {
        pushed_at(hook, id, "escalated").is_some()
    })
    .await;
    let after = pushed_at(hook, id, "escalated").unwrap() - raised;
    let want = Duration::from_secs(ESCALATE_S);
    assert!(
        after + Duration::from_millis(1500) >= want && after <= want + Duration::from_secs(8),
        "alarm {id} escalated {after:?} after it was raised, not {want:?}, with the clock stepped {step}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wall_clock_stepping_back_and_forward_by_hours_leaves_polls_timers_uplink_and_history_whole(
) {
    let meters = SimServer::start(&[(1, "eastron-sdm120"), (2, "chint-dtsu666")], false).await;
    let hook = Receiver::start().await;
    let cloud = Cloud::start(|n| n % 7 == 3).await;
    let dir = tempfile::tempdir().unwrap();
    let data: PathBuf = dir.path().join("data");
    let (api, mqtt) = (common::free_port(), common::free_port());
    let config = dir.path().join("parkhub.toml");
    let mut text = format!(
        r#"
[hub]
id = "hz-clock"
data_dir = "{data}"
[api]
listen = "127.0.0.1:{api}"
[[api.token]]
name = "ops"
role = "operator"
sha256 = "{token}"
[mqtt]
broker = "embedded"
listen = "127.0.0.1:{mqtt}"
[alarms]
group_window_s = 0
repeat_urgent_s = 0
[[bus]]
id = "gw"
kind = "tcp"
address = "{meters}"
[[channel]]
id = "hook"
kind = "webhook"
url = "{hook}"
secret = "clock-secret"
[[department]]
id = "ops"
name = "值班室"
channels = ["hook"]
[[department]]
id = "chief"
name = "主管"
channels = ["hook"]
[[route]]
departments = ["ops"]
escalate_after_s = {ESCALATE_S}
escalate_to = ["chief"]
[uplink]
kind = "http"
url = "{cloud}"
token = "t"
secret = "s"
interval_s = 1
timeout_s = 2
max_retry_s = 2
[[device]]
id = "smoke-1"
profile = "mqtt-smoke-detector"
topic = "park/smoke-1"
[[device]]
id = "smoke-2"
profile = "mqtt-smoke-detector"
topic = "park/smoke-2"
[[device]]
id = "smoke-3"
profile = "mqtt-smoke-detector"
topic = "park/smoke-3"
[[device]]
id = "door-1"
profile = "mqtt-door-contact"
topic = "park/door-1"
"#,
        data = data.display(),
        token = sha256_hex(TOKEN),
        meters = meters.addr,
        hook = hook.url("/alarm"),
        cloud = cloud.url(),
    );
    for (unit, profile) in [(1, "eastron-sdm120"), (2, "chint-dtsu666")] {
        text += &format!("[[device]]\nid = \"m{unit}\"\nprofile = \"{profile}\"\nbus = \"gw\"\nunit = {unit}\npoll_interval_s = 1\n");
    }
    std::fs::write(&config, text).unwrap();
    let offset = dir.path().join("faketime");
    set_offset(&offset, "+0");
    let log = dir.path().join("hub.log");
    let faketime = faketime();
    let env = [
        ("LD_PRELOAD", faketime.to_str().unwrap()),
        ("FAKETIME_TIMESTAMP_FILE", offset.to_str().unwrap()),
        ("FAKETIME_NO_CACHE", "1"),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ];
    let mut hub = spawn_hub(&config, &env, &log);
    let db = data.join("history.sqlite");
    let minute = Duration::from_secs(60);
    wait_until(minute, "the first readings", || {
        db.exists() && readings(&db).len() >= 3
    })
    .await;
    let mut sensor = connect(mqtt).await;
    let start_real = chrono::Utc::now().timestamp();

    // Before any step: the rhythm to compare with.
    let window = Duration::from_secs(10);
    let steady = polls_over(&db, window).await;
    assert!(
        RHYTHM.contains(&steady),
        "{steady} polls in {window:?} at 1 s before any step; log:\n{}",
        tail(&log, 20)
    );

    // Back by three hours, two seconds into an alarm's escalation delay.
    let (smoke, raised) = raise(
        &mut sensor,
        &hook,
        "smoke-1",
        r#"{"smoke":true,"battery":90}"#,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    set_offset(&offset, "-3h");
    let back_real = chrono::Utc::now().timestamp();
    let polls = polls_over(&db, window).await;
    assert!(
        RHYTHM.contains(&polls),
        "{polls} polls in {window:?} after the clock stepped back 3 h (1 s interval)"
    );
    assert_escalates_on_time(&hook, &smoke, raised, "back 3 h").await;

    // Forward by five hours (two hours ahead of real time), two seconds into the next delay.
    let (door, raised) = raise(
        &mut sensor,
        &hook,
        "door-1",
        r#"{"open":true,"forced":true}"#,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    set_offset(&offset, "+2h");
    let forward_real = chrono::Utc::now().timestamp();
    let polls = polls_over(&db, window).await;
    assert!(
        RHYTHM.contains(&polls),
        "{polls} polls in {window:?} after the clock stepped forward 5 h (1 s interval)"
    );
    assert_escalates_on_time(&hook, &door, raised, "forward 5 h").await;

    let end_real = chrono::Utc::now().timestamp();

    // A fire alarm the webhook cannot take yet when the hub stops: its push waits in the outbox.
    hook.answer(503, "down");
    let (undelivered, _) = raise(
        &mut sensor,
        &hook,
        "smoke-2",
        r#"{"smoke":true,"battery":90}"#,
    )
    .await;
    stop_hub(&mut hub);
    hook.answer(200, "ok");

    // The Pi reboots with a stale clock (5 h behind what it stored last), then NTP sets it.
    set_offset(&offset, "-3h");
    let stale_real = chrono::Utc::now().timestamp();
    let mut hub = spawn_hub(&config, &env, &log);
    let rebooted = Instant::now();
    // The push left over goes out at once, not when the stale clock reaches its stamp.
    let outbox = data.join("alarms.sqlite");
    let delivered = || {
        rusqlite::Connection::open_with_flags(&outbox, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|c| {
                c.query_row(
                    "SELECT count(*) FROM outbox WHERE alarm = ?1 AND event = 'raised' AND state = 'delivered'",
                    [undelivered.parse::<i64>().unwrap()],
                    |r| r.get::<_, i64>(0),
                )
            })
            .is_ok_and(|n| n > 0)
    };
    wait_until(
        Duration::from_secs(30),
        "the push left in the outbox delivered after a boot with a stale clock",
        delivered,
    )
    .await;
    eprintln!(
        "left-over push delivered {:?} after the reboot",
        rebooted.elapsed()
    );
    let stored = readings(&db).len();
    wait_until(minute, "readings after a boot with a stale clock", || {
        readings(&db).len() >= stored + 3
    })
    .await;
    let mut sensor = connect(mqtt).await;
    let (smoke2, raised) = raise(
        &mut sensor,
        &hook,
        "smoke-3",
        r#"{"smoke":true,"battery":90}"#,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    set_offset(&offset, "+0");
    let ntp_real = chrono::Utc::now().timestamp();
    let polls = polls_over(&db, window).await;
    assert!(
        RHYTHM.contains(&polls),
        "{polls} polls in {window:?} after NTP set a stale clock forward 3 h (1 s interval)"
    );
    assert_escalates_on_time(&hook, &smoke2, raised, "forward 3 h after a stale boot").await;
    let last_real = chrono::Utc::now().timestamp();

    // The uplink sent on through every step: every seq, oldest first.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_hub(&mut hub);
    let up = rusqlite::Connection::open(data.join("uplink.sqlite")).unwrap();
    let next: i64 = up
        .query_row("SELECT next_seq FROM meta", [], |r| r.get(0))
        .unwrap();
    let inflight: Option<i64> = up
        .query_row("SELECT first_seq FROM inflight", [], |r| r.get(0))
        .ok();
    drop(up);
    {
        let log = cloud.log.lock().unwrap();
        assert!(log.problems.is_empty(), "{:?}", log.problems);
        let top = log
            .complete()
            .unwrap_or_else(|| panic!("seqs missing across the steps: {:?}", log.gaps(20)));
        let sent_to = inflight.map_or(next - 1, |f| f - 1);
        assert!(
            top >= sent_to,
            "the cloud has seqs up to {top}, the hub handed out up to {}",
            next - 1
        );
        let late = log.out_of_order();
        assert!(late.is_empty(), "seqs sent out of order: {late:?}");
    }

    // History kept what was stamped before, during and after each step.
    let ts = readings(&db);
    let within = |from: i64, to: i64| ts.iter().filter(|t| (from..to).contains(*t)).count();
    let h = 3600;
    let before = within(start_real - 30, back_real);
    let stepped_back = within(back_real - 3 * h, back_real - 3 * h + 60);
    let stepped_forward = within(forward_real + 2 * h, end_real + 2 * h + 60);
    assert!(before >= 10, "{before} readings kept from before the steps");
    assert!(
        stepped_back >= 6,
        "{stepped_back} readings stamped 3 h back kept"
    );
    assert!(
        stepped_forward >= 6,
        "{stepped_forward} readings stamped 2 h ahead kept"
    );
    let stale_boot = within(stale_real - 3 * h, ntp_real - 3 * h + 2);
    let after_ntp = within(ntp_real, last_real + 2);
    assert!(
        stale_boot >= 3,
        "{stale_boot} readings stamped by the stale clock kept"
    );
    assert!(after_ntp >= 6, "{after_ntp} readings after NTP kept");
    let bad = sqlite_damage(&data);
    assert!(bad.is_empty(), "{bad:?}");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!text.contains("panicked"), "{}", tail(&log, 40));
}
