//! Faults against the whole hub process under full load: meters polled over Modbus TCP,
//! sensors publishing through mosquitto, alarms pushed to a webhook, readings going up to a
//! cloud that sometimes refuses. The hub is killed with -9 at random moments, its broker,
//! webhook, cloud and meters go away and come back, a serial line vanishes; every time what it
//! stored, raised, was told and sent must survive whole.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    sha256_hex, spawn_hub, sqlite_damage, stop_hub, tail, wait_until, Cloud, Mosquitto, Receiver,
    SimServer,
};
use serde_json::Value;

const OPERATOR_TOKEN: &str = "fault-operator-token";
const HOOK_SECRET: &str = "fault-hook-secret";
const METERS: [(u8, &str); 4] = [
    (1, "eastron-sdm120"),
    (2, "chint-dtsu666"),
    (3, "acrel-adw300"),
    (4, "tuf-2000m"),
];
const SMOKES: usize = 4;
const DOORS: usize = 2;

/// Stored readings: (device, point, ts in ms) → the values stored at that key.
type History = BTreeMap<(String, String, i64), BTreeSet<String>>;

/// A small seeded generator (xorshift64*), so a failing run can be repeated from its seed.
struct Rng(u64);

impl Rng {
    fn seeded() -> Self {
        let seed = std::env::var("FAULTS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("fault seed: {seed} (FAULTS_SEED={seed} repeats this run)");
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Everything the hub's config names, in one temporary directory.
struct Site {
    dir: tempfile::TempDir,
    api: u16,
}

impl Site {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            api: common::free_port(),
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("parkhub.toml")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("hub.log")
    }

    fn db(&self, file: &str) -> PathBuf {
        self.data().join(file)
    }

    fn api_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/api/v1{path}", self.api)
    }

    /// The park: four meters polled every second on one Modbus TCP bus, smoke detectors and
    /// door contacts on `broker`, every alarm routed to the webhook, the uplink to `cloud`.
    fn write_config(&self, broker: &str, meters: &str, hook: &str, cloud: &str) {
        let mut text = format!(
            r#"
[hub]
id = "hz-faults"
data_dir = "{data}"

[api]
listen = "127.0.0.1:{api}"
[[api.token]]
name = "ops"
role = "operator"
sha256 = "{token}"

[mqtt]
broker = "{broker}"

[alarms]
group_window_s = 1
repeat_urgent_s = 0

[[bus]]
id = "gw"
kind = "tcp"
address = "{meters}"
timeout_ms = 300
offline_after = 2
max_backoff_s = 2

[[channel]]
id = "hook"
kind = "webhook"
url = "{hook}"
secret = "{HOOK_SECRET}"

[[department]]
id = "ops"
name = "值班室"
channels = ["hook"]

[[route]]
departments = ["ops"]

[uplink]
kind = "http"
url = "{cloud}"
token = "cloud-token"
secret = "cloud-secret"
interval_s = 1
timeout_s = 2
max_retry_s = 2
"#,
            data = self.data().display(),
            api = self.api,
            token = sha256_hex(OPERATOR_TOKEN),
        );
        for (unit, profile) in METERS {
            text += &format!(
                "[[device]]\nid = \"m{unit}\"\nprofile = \"{profile}\"\nbus = \"gw\"\nunit = {unit}\npoll_interval_s = 1\n"
            );
        }
        for i in 1..=SMOKES {
            text += &format!("[[device]]\nid = \"smoke-{i}\"\nprofile = \"mqtt-smoke-detector\"\ntopic = \"park/smoke-{i}\"\n");
        }
        for i in 1..=DOORS {
            text += &format!("[[device]]\nid = \"door-{i}\"\nprofile = \"mqtt-door-contact\"\ntopic = \"park/door-{i}\"\n");
        }
        std::fs::write(self.config(), text).unwrap();
    }

    fn spawn(&self) -> std::process::Child {
        spawn_hub(&self.config(), &[], &self.log())
    }

    /// Waits until the hub answers on its API.
    async fn wait_up(&self, hub: &mut std::process::Child, limit: Duration) {
        let client = common::http_client();
        let start = Instant::now();
        loop {
            if let Some(status) = hub.try_wait().unwrap() {
                panic!(
                    "the hub exited ({status}); its log ends:\n{}",
                    tail(&self.log(), 30)
                );
            }
            if let Ok(r) = client.get(self.api_url("/health")).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                start.elapsed() < limit,
                "the hub did not come up within {limit:?}; its log ends:\n{}",
                tail(&self.log(), 30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn get(&self, path: &str) -> Option<Value> {
        let r = common::http_client()
            .get(self.api_url(path))
            .bearer_auth(OPERATOR_TOKEN)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.json().await.ok()
    }

    /// Acknowledges alarm `id` as the operator; whether the hub said it did.
    async fn ack(&self, id: i64) -> bool {
        common::http_client()
            .post(self.api_url(&format!("/alarms/{id}/ack")))
            .bearer_auth(OPERATOR_TOKEN)
            .json(&serde_json::json!({"comment": "fault test"}))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    /// Open alarms the operator may acknowledge.
    async fn unacked(&self) -> Vec<i64> {
        let Some(Value::Array(all)) = self.get("/alarms?state=active").await else {
            return Vec::new();
        };
        all.iter()
            .filter(|a| matches!(a["state"].as_str(), Some("unacked" | "rtn_unacked")))
            .filter_map(|a| a["id"].as_i64())
            .collect()
    }

    fn read(&self, file: &str) -> rusqlite::Connection {
        rusqlite::Connection::open_with_flags(
            self.db(file),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap()
    }

    /// Every stored reading: (device, point, ts in ms) → the values stored at that key.
    fn history(&self) -> History {
        let c = self.read("history.sqlite");
        let mut out: BTreeMap<_, BTreeSet<String>> = BTreeMap::new();
        let mut q = c
            .prepare(
                "SELECT s.device, s.point, v.ts * 1000, CAST(v.value AS TEXT) FROM sample_v v JOIN series s ON s.id = v.series
                 UNION ALL
                 SELECT s.device, s.point, l.ts_ms, l.value FROM state_log l JOIN series s ON s.id = l.series",
            )
            .unwrap();
        let rows = q
            .query_map([], |r| {
                Ok((
                    (r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?),
                    r.get::<_, String>(3)?,
                ))
            })
            .unwrap();
        for row in rows {
            let (k, v) = row.unwrap();
            out.entry(k).or_default().insert(v);
        }
        out
    }

    /// The newest stored reading of a device, ms.
    fn newest(&self, device: &str) -> Option<i64> {
        let c = self.read("history.sqlite");
        c.query_row(
            "SELECT max(t) FROM (
                SELECT max(v.ts) * 1000 AS t FROM sample_v v JOIN series s ON s.id = v.series WHERE s.device = ?1
                UNION ALL
                SELECT max(l.ts_ms) FROM state_log l JOIN series s ON s.id = l.series WHERE s.device = ?1)",
            [device],
            |r| r.get::<_, Option<i64>>(0),
        )
        .ok()
        .flatten()
    }

    /// (alarm id, event) of every transition stored that a department is told of, for alarms
    /// not suppressed.
    fn told_events(&self) -> BTreeSet<(i64, String)> {
        let c = self.read("alarms.sqlite");
        let mut q = c
            .prepare(
                "SELECT e.alarm, e.event FROM alarm_event e JOIN alarm a ON a.id = e.alarm
                 WHERE a.suppressed = 0 AND e.event IN ('raised', 'acknowledged', 'cleared')",
            )
            .unwrap();
        let rows = q
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        rows
    }

    fn count(&self, file: &str, sql: &str) -> i64 {
        self.read(file)
            .query_row(sql, [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Seqs the uplink has handed out: (next seq, the batch in flight if any).
    fn uplink_state(&self) -> (i64, Option<(i64, i64)>) {
        let c = self.read("uplink.sqlite");
        let next = c
            .query_row("SELECT next_seq FROM meta", [], |r| r.get(0))
            .unwrap();
        let inflight = c
            .query_row("SELECT first_seq, last_seq FROM inflight", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .ok();
        (next, inflight)
    }

    fn assert_no_damage(&self, when: &str) {
        let bad = sqlite_damage(&self.data());
        assert!(bad.is_empty(), "{when}: damaged databases {bad:?}");
        let log = std::fs::read_to_string(self.log()).unwrap_or_default();
        assert!(
            !log.contains("panicked"),
            "{when}: the hub panicked:\n{}",
            tail(&self.log(), 40)
        );
    }
}

/// (alarm id, event) of every push a webhook took, digests opened up.
fn pushes(receivers: &[&Receiver]) -> BTreeSet<(i64, String)> {
    let mut out = BTreeSet::new();
    for r in receivers {
        for got in r.received() {
            assert!(
                common::webhook_signature_ok(HOOK_SECRET, &got),
                "a push without a good signature: {:?}",
                String::from_utf8_lossy(&got.body)
            );
            let v = got.json();
            let items = match v["alarms"].as_array() {
                Some(all) => all.clone(),
                None => vec![v],
            };
            for p in items {
                if let (Some(id), Some(ev)) = (p["alarm_id"].as_str(), p["event"].as_str()) {
                    out.insert((id.parse().unwrap(), ev.to_string()));
                }
            }
        }
    }
    out
}

/// Smoke detectors and door contacts publishing through `port` (QoS 1) as long as `run` holds,
/// riding out the broker going away; each change of state raises or clears an alarm.
fn sensors(port: u16, run: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    use rumqttc::{AsyncClient, MqttOptions, QoS};
    let mut o = MqttOptions::new("fault-sensors", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = AsyncClient::new(o, 256);
    let looping = tokio::spawn(async move {
        loop {
            if events.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    tokio::spawn(async move {
        let mut k: u64 = 0;
        while run.load(Ordering::SeqCst) {
            for i in 1..=SMOKES as u64 {
                let c = k + i;
                let payload = serde_json::json!({
                    "smoke": c % 8 < 3,
                    "temperature": 20.0 + (c % 10) as f64,
                    "battery": 90,
                    "tamper": c % 6 < 2,
                });
                let _ = client.try_publish(
                    format!("park/smoke-{i}"),
                    QoS::AtLeastOnce,
                    false,
                    payload.to_string(),
                );
            }
            for i in 1..=DOORS as u64 {
                let c = k + i;
                let payload = serde_json::json!({"open": c % 2 == 0, "forced": c % 10 < 3});
                let _ = client.try_publish(
                    format!("park/door-{i}"),
                    QoS::AtLeastOnce,
                    false,
                    payload.to_string(),
                );
            }
            k += 1;
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        let _ = client.disconnect().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        looping.abort();
    })
}

/// The cloud's seqs, checked whole: every seq the hub handed out, except a batch still in
/// flight when it stopped (sent again at its next start), reached the cloud, in order.
fn assert_cloud_has_every_seq(site: &Site, cloud: &Cloud) {
    let (next, inflight) = site.uplink_state();
    let log = cloud.log.lock().unwrap();
    assert!(
        log.problems.is_empty(),
        "malformed batches: {:?}",
        log.problems
    );
    let got: HashSet<i64> = log.seqs.iter().copied().collect();
    let missing: Vec<i64> = (1..next)
        .filter(|s| !got.contains(s))
        .filter(|s| !inflight.is_some_and(|(f, l)| (f..=l).contains(s)))
        .collect();
    assert!(
        missing.is_empty(),
        "the cloud never got {} of {} seqs (in flight at stop: {inflight:?}), first {:?}",
        missing.len(),
        next - 1,
        &missing[..missing.len().min(20)]
    );
    let beyond: Vec<&i64> = got.iter().filter(|s| **s >= next).take(5).collect();
    assert!(
        beyond.is_empty(),
        "the cloud got seqs never handed out: {beyond:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_killed_with_minus_9_twenty_times_under_full_load_loses_nothing_it_stored_or_was_told(
) {
    let started = Instant::now();
    let mut rng = Rng::seeded();
    let seed = rng.0;
    let meters = SimServer::start(&METERS, false).await;
    let broker = Mosquitto::start("allow_anonymous true");
    let hook = Receiver::start().await;
    // The cloud refuses about one request in five, as the seed says.
    let cloud = Cloud::start(move |n| {
        let mut r = Rng(seed ^ (n as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        r.below(5) == 0
    })
    .await;
    let site = Site::new();
    site.write_config(
        &broker.url(),
        &meters.addr.to_string(),
        &hook.url("/alarm"),
        &cloud.url(),
    );
    let run = Arc::new(AtomicBool::new(true));
    let publisher = sensors(broker.port, run.clone());

    // What each killed run left on disk, and when it was killed (ms).
    let mut stored: Vec<(i64, History)> = Vec::new();
    let acked: Arc<Mutex<BTreeSet<i64>>> = Default::default();
    const KILLS: usize = 20;
    for round in 0..KILLS {
        let mut hub = site.spawn();
        site.wait_up(&mut hub, Duration::from_secs(30)).await;
        // The operator acknowledges some of what is open while the hub runs, maybe right up
        // to the kill.
        let ack_task = {
            let (api, acked) = (site.api, acked.clone());
            let pick = rng.next();
            tokio::spawn(async move {
                let site = Site {
                    dir: tempfile::tempdir().unwrap(),
                    api,
                };
                for (n, id) in site.unacked().await.into_iter().enumerate() {
                    if (pick >> (n % 64)) & 1 == 1 && site.ack(id).await {
                        acked.lock().unwrap().insert(id);
                    }
                }
            })
        };
        let delay = 1000 + rng.below(3500);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        hub.kill().unwrap(); // SIGKILL: polling, storing, pushing and sending all at once
        hub.wait().unwrap();
        let killed = chrono::Utc::now().timestamp_millis();
        let _ = ack_task.await;
        site.assert_no_damage(&format!("after kill {}", round + 1));
        stored.push((killed, site.history()));
        eprintln!("kill {} after {delay} ms", round + 1);
    }

    // A last clean run: the sensors fall quiet, so that every push can be delivered.
    let mut hub = site.spawn();
    site.wait_up(&mut hub, Duration::from_secs(30)).await;
    for id in site.unacked().await {
        if site.ack(id).await {
            acked.lock().unwrap().insert(id);
        }
    }
    run.store(false, Ordering::SeqCst);
    publisher.await.unwrap();
    let settled = || {
        site.count(
            "alarms.sqlite",
            "SELECT count(*) FROM outbox WHERE state = 'pending'",
        ) == 0
            && site.told_events().is_subset(&pushes(&[&hook]))
            && site.count("uplink.sqlite", "SELECT count(*) FROM queue") < 50
    };
    wait_until(
        Duration::from_secs(90),
        "every push delivered and the uplink drained",
        settled,
    )
    .await;
    stop_hub(&mut hub);
    site.assert_no_damage("after the last run");

    // Nothing stored before a kill is lost or changed.
    let last = site.history();
    let mut checked = 0;
    for (killed, before) in &stored {
        for (key, values) in before {
            let now = last.get(key).unwrap_or_else(|| {
                panic!("the reading {key:?} stored before a kill is gone (seed {seed})")
            });
            // A later run cannot write a second it had not lived to see.
            if key.2 < killed / 1000 * 1000 {
                assert_eq!(now, values, "the reading {key:?} changed (seed {seed})");
            }
            checked += 1;
        }
    }
    let meter_keys = last.keys().filter(|k| k.0.starts_with('m')).count();
    let sensor_keys = last.keys().filter(|k| !k.0.starts_with('m')).count();
    assert!(meter_keys > 500, "only {meter_keys} meter readings stored");
    assert!(
        sensor_keys > 100,
        "only {sensor_keys} sensor readings stored"
    );

    // Every alarm raised, acknowledged or cleared was pushed at least once.
    let told = site.told_events();
    let got = pushes(&[&hook]);
    let untold: Vec<_> = told.difference(&got).collect();
    assert!(untold.is_empty(), "never pushed: {untold:?} (seed {seed})");
    let raised = told.iter().filter(|(_, e)| e == "raised").count();
    assert!(raised >= 20, "only {raised} alarms raised under load");

    // Every acknowledgement the API confirmed is kept, and its push went out.
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 5,
        "only {} acknowledgements made",
        acked.len()
    );
    for id in &acked {
        assert!(
            told.contains(&(*id, "acknowledged".to_string())),
            "the acknowledgement of alarm {id} was lost (seed {seed})"
        );
        assert!(
            got.contains(&(*id, "acknowledged".to_string())),
            "the acknowledgement of alarm {id} was never pushed (seed {seed})"
        );
    }

    // The cloud saw every seq.
    assert_cloud_has_every_seq(&site, &cloud);
    let log = cloud.log.lock().unwrap();
    assert!(log.refused > 0, "the cloud refused nothing");
    eprintln!(
        "{KILLS} kills in {:?}: {checked} stored readings checked, {} pushes, {raised} raised, {} acked, {} seqs ({} requests, {} refused)",
        started.elapsed(),
        got.len(),
        acked.len(),
        log.complete().unwrap_or(0),
        log.requests,
        log.refused
    );
}

/// Alarms of `rule` (and its device when given) raised at or after `since` (ms).
fn raised_since(site: &Site, rule: &str, since: i64) -> i64 {
    site.count(
        "alarms.sqlite",
        &format!(
            "SELECT count(*) FROM alarm_event e JOIN alarm a ON a.id = e.alarm
             WHERE a.rule = '{rule}' AND e.event = 'raised' AND e.ts >= {since}"
        ),
    )
}

/// Waits for the line's comm alarm (`bus_offline`: nothing on it answers) raised since `since`
/// (ms); its id.
async fn wait_for_line_alarm(site: &Site, since: i64) -> i64 {
    // An alarm cleared but not yet acknowledged is raised again, keeping its id and first
    // raised_at: look for the raising.
    let sql = format!(
        "SELECT coalesce(max(a.id), 0) FROM alarm a JOIN alarm_event e ON e.alarm = a.id
         WHERE a.rule = 'bus_offline' AND a.category = 'comm' AND e.event = 'raised' AND e.ts >= {since}"
    );
    wait_until(Duration::from_secs(60), "the line's comm alarm", || {
        site.count("alarms.sqlite", &sql) > 0
    })
    .await;
    site.count("alarms.sqlite", &sql)
}

/// Waits until alarm `id` has cleared since `since` (ms).
async fn wait_for_cleared(site: &Site, id: i64, since: i64) {
    let sql = format!(
        "SELECT count(*) FROM alarm_event WHERE alarm = {id} AND event = 'cleared' AND ts >= {since}"
    );
    wait_until(
        Duration::from_secs(60),
        &format!("the line's comm alarm {id} cleared"),
        || site.count("alarms.sqlite", &sql) > 0,
    )
    .await;
}

async fn online(site: &Site, device: &str) -> Option<bool> {
    let all = site.get("/devices").await?;
    all.as_array()?.iter().find(|d| d["id"] == device)?["online"].as_bool()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_the_webhook_the_cloud_and_the_meters_go_away_and_come_back_and_nothing_is_lost()
{
    let mut meters = SimServer::start(&METERS, false).await;
    let mut broker = Mosquitto::start("allow_anonymous true");
    let hook = Receiver::start().await;
    let cloud = Cloud::start(|_| false).await;
    let site = Site::new();
    site.write_config(
        &broker.url(),
        &meters.addr.to_string(),
        &hook.url("/alarm"),
        &cloud.url(),
    );
    let run = Arc::new(AtomicBool::new(true));
    let publisher = sensors(broker.port, run.clone());
    let mut hub = site.spawn();
    site.wait_up(&mut hub, Duration::from_secs(30)).await;
    let minute = Duration::from_secs(60);
    wait_until(minute, "the first pushes and batches", || {
        hook.count() > 0 && cloud.complete().unwrap_or(0) > 50
    })
    .await;

    // 1. The broker goes away and comes back: the hub subscribes again, stores what the
    // sensors say and raises their alarms.
    broker.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    broker.restart();
    let back = now_ms();
    // Latched alarms stay raised until acknowledged: clear the slate so they can rise again.
    for id in site.unacked().await {
        site.ack(id).await;
    }
    wait_until(
        minute,
        "sensor readings stored after the broker came back",
        || site.newest("smoke-1").is_some_and(|t| t >= back),
    )
    .await;
    wait_until(
        minute,
        "a smoke alarm raised after the broker came back",
        || raised_since(&site, "smoke", back) > 0,
    )
    .await;

    // 2. The webhook goes away: pushes wait in the outbox; back, each is delivered.
    hook.stop();
    let down = now_ms();
    for id in site.unacked().await {
        site.ack(id).await;
    }
    wait_until(minute, "pushes queued while the webhook is down", || {
        site.count(
            "alarms.sqlite",
            &format!("SELECT count(*) FROM outbox WHERE state = 'pending' AND created >= {down}"),
        ) >= 3
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let hook2 = Receiver::start_on(hook.addr).await;
    wait_until(
        Duration::from_secs(120),
        "every push queued while the webhook was down delivered",
        || {
            site.count(
                "alarms.sqlite",
                &format!(
                    "SELECT count(*) FROM outbox WHERE created >= {down} AND state != 'delivered'"
                ),
            ) == 0
        },
    )
    .await;
    let queued: BTreeSet<(i64, String)> = {
        let c = site.read("alarms.sqlite");
        let mut q = c
            .prepare(&format!(
                "SELECT alarm, event FROM outbox WHERE created >= {down}"
            ))
            .unwrap();
        let rows = q
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        rows
    };
    let after = pushes(&[&hook2]);
    let lost: Vec<_> = queued.difference(&after).collect();
    assert!(
        lost.is_empty(),
        "pushes queued while the webhook was down never reached it: {lost:?}"
    );

    // 3. The cloud goes away: a backlog builds; back, every seq arrives, oldest first.
    cloud.stop();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let backlog = site.count("uplink.sqlite", "SELECT count(*) FROM queue");
    assert!(
        backlog > 50,
        "only {backlog} records queued while the cloud was away"
    );
    cloud.restart().await;
    let (next, _) = site.uplink_state();
    wait_until(
        Duration::from_secs(60),
        "the backlog reaches the cloud",
        || cloud.complete().is_some_and(|m| m >= next - 1 + backlog),
    )
    .await;
    {
        let log = cloud.log.lock().unwrap();
        let late = log.out_of_order();
        assert!(late.is_empty(), "records sent out of seq order: {late:?}");
    }

    // 4. The meters' gateway goes away: its meters go offline and the line's comm alarm is
    // raised; back, they are online and their readings resume.
    meters.stop();
    let gone = now_ms();
    wait_until(minute, "the meters offline", || {
        futures_block(online(&site, "m1")) == Some(false)
    })
    .await;
    let line_alarm = wait_for_line_alarm(&site, gone).await;
    meters = meters.restart().await;
    let restarted = now_ms();
    wait_until(minute, "the meters online again", || {
        futures_block(online(&site, "m1")) == Some(true)
            && futures_block(online(&site, "m4")) == Some(true)
    })
    .await;
    wait_until(minute, "meter readings resume", || {
        (1..=4).all(|u| {
            site.newest(&format!("m{u}"))
                .is_some_and(|t| t >= restarted)
        })
    })
    .await;
    wait_for_cleared(&site, line_alarm, restarted).await;

    // Everything was told, and the cloud has every seq.
    run.store(false, Ordering::SeqCst);
    publisher.await.unwrap();
    wait_until(Duration::from_secs(90), "every push delivered", || {
        site.count(
            "alarms.sqlite",
            "SELECT count(*) FROM outbox WHERE state = 'pending'",
        ) == 0
            && site.told_events().is_subset(&pushes(&[&hook, &hook2]))
    })
    .await;
    stop_hub(&mut hub);
    site.assert_no_damage("after the faults");
    assert_cloud_has_every_seq(&site, &cloud);
    let told = site.told_events();
    let got = pushes(&[&hook, &hook2]);
    let untold: Vec<_> = told.difference(&got).collect();
    assert!(untold.is_empty(), "never pushed: {untold:?}");
    drop(meters);
}

/// Runs a future to completion from a synchronous `wait_until` closure (on a worker of the
/// multi-threaded runtime, which may block in place).
fn futures_block<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

/// Copies bytes between the serial line's far end and the meters' RTU-over-TCP server: the
/// meters hang on the line. Reopens the line whenever it vanishes and comes back.
fn meters_on_the_line(line: PathBuf, meters: std::net::SocketAddr) -> tokio::task::JoinHandle<()> {
    use tokio_serial::SerialPortBuilderExt;
    tokio::spawn(async move {
        loop {
            let serial = match tokio_serial::new(line.to_string_lossy(), 9600).open_native_async() {
                Ok(s) => s,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(tcp) = tokio::net::TcpStream::connect(meters).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let (mut serial, mut tcp) = (serial, tcp);
            let _ = tokio::io::copy_bidirectional(&mut serial, &mut tcp).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serial_line_that_vanishes_and_comes_back_at_the_same_path_is_read_again() {
    let meters = SimServer::start(&[(1, "eastron-sdm120"), (2, "chint-dtsu666")], true).await;
    let site = Site::new();
    let (far, near) = (
        site.dir.path().join("ttyMeters"),
        site.dir.path().join("ttyHub"),
    );
    let mut line = common::PtyPair::linked(&far, &near);
    let bridge = meters_on_the_line(far.clone(), meters.addr);
    std::fs::create_dir_all(site.data()).unwrap();
    std::fs::write(
        site.config(),
        format!(
            r#"
[hub]
id = "hz-serial"
data_dir = "{data}"
[api]
listen = "127.0.0.1:{api}"
[[api.token]]
name = "ops"
role = "operator"
sha256 = "{token}"
[[bus]]
id = "rs485"
kind = "rtu"
serial = "{near}"
baud = 9600
timeout_ms = 300
offline_after = 2
max_backoff_s = 2
[[device]]
id = "m1"
profile = "eastron-sdm120"
bus = "rs485"
unit = 1
poll_interval_s = 1
[[device]]
id = "m2"
profile = "chint-dtsu666"
bus = "rs485"
unit = 2
poll_interval_s = 1
"#,
            data = site.data().display(),
            api = site.api,
            token = sha256_hex(OPERATOR_TOKEN),
            near = near.display(),
        ),
    )
    .unwrap();
    let mut hub = site.spawn();
    site.wait_up(&mut hub, Duration::from_secs(30)).await;
    let minute = Duration::from_secs(60);
    let t0 = now_ms();
    wait_until(minute, "readings over the serial line", || {
        site.newest("m1").is_some_and(|t| t >= t0) && site.newest("m2").is_some_and(|t| t >= t0)
    })
    .await;
    assert_eq!(online(&site, "m1").await, Some(true));

    line.kill();
    let gone = now_ms();
    assert!(!near.exists(), "the device node is gone with socat");
    wait_until(minute, "the meters offline while the line is gone", || {
        futures_block(online(&site, "m1")) == Some(false)
            && futures_block(online(&site, "m2")) == Some(false)
    })
    .await;
    let line_alarm = wait_for_line_alarm(&site, gone).await;
    // Nothing read while the line is gone.
    let quiet = now_ms();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        site.newest("m1").is_none_or(|t| t < quiet),
        "a reading stored with no line"
    );

    let _line = common::PtyPair::linked(&far, &near);
    let back = now_ms();
    wait_until(minute, "the meters online again on the same path", || {
        futures_block(online(&site, "m1")) == Some(true)
            && futures_block(online(&site, "m2")) == Some(true)
    })
    .await;
    wait_until(minute, "readings resume", || {
        site.newest("m1").is_some_and(|t| t >= back) && site.newest("m2").is_some_and(|t| t >= back)
    })
    .await;
    wait_for_cleared(&site, line_alarm, back).await;
    stop_hub(&mut hub);
    bridge.abort();
    site.assert_no_damage("after the line came back");
}
