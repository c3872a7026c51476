//! The uplink against real receivers: an HTTP server on 127.0.0.1 that fails, stalls and
//! recovers, the hub killed with -9 in the middle of its work, and mosquitto as the cloud's
//! broker. In every case the receiver must see every `seq` from 1 with no gap, and any repeat
//! must be an exact repeat.

mod common;

use std::collections::BTreeMap;
use std::io::Read as _;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use chrono::Utc;
use common::{wait_until, Mosquitto, SimServer};
use parkhub::alarm::engine::AlarmFeed;
use parkhub::reading::{Reading, Value};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "cloud-secret";
const TOKEN: &str = "cloud-token";

/// What the cloud got: each batch's body by `batch_id` (checking repeats are exact), and
/// every `seq` seen.
#[derive(Default)]
struct Cloud {
    batches: BTreeMap<String, Vec<u8>>,
    seqs: Vec<i64>,
    requests: usize,
    repeats: usize,
    problems: Vec<String>,
}

impl Cloud {
    fn take(&mut self, body: Vec<u8>) {
        let v: serde_json::Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return self.problems.push(format!("not JSON: {e}")),
        };
        let id = v["batch_id"].as_str().unwrap_or_default().to_string();
        if let Some(before) = self.batches.get(&id) {
            self.repeats += 1;
            if *before != body {
                self.problems
                    .push(format!("batch {id} repeated with other content"));
            }
            return;
        }
        let (first, last) = (v["first_seq"].as_i64(), v["last_seq"].as_i64());
        let mut seqs: Vec<i64> = ["readings", "alarms", "device_status"]
            .iter()
            .flat_map(|k| v[*k].as_array().cloned().unwrap_or_default())
            .filter_map(|r| r["seq"].as_i64())
            .collect();
        seqs.sort_unstable();
        let expected: Vec<i64> = match (first, last) {
            (Some(f), Some(l)) => (f..=l).collect(),
            _ => Vec::new(),
        };
        if seqs != expected {
            self.problems.push(format!(
                "batch {id}: seqs {seqs:?} are not {first:?}..={last:?}"
            ));
        }
        self.seqs.extend(seqs);
        self.batches.insert(id, body);
    }

    /// Every seq from 1 to the highest, once each.
    fn complete(&self) -> Option<i64> {
        let mut s = self.seqs.clone();
        s.sort_unstable();
        let n = s.len() as i64;
        (s.iter().copied().eq(1..=n)).then_some(n)
    }
}

/// A cloud receiver answering as `answer(n)` says for its n-th request (from 0): a status, or
/// a stall longer than the hub's timeout.
async fn receiver(
    answer: impl Fn(usize) -> Option<StatusCode> + Send + Sync + 'static,
) -> (String, Arc<Mutex<Cloud>>) {
    let cloud = Arc::new(Mutex::new(Cloud::default()));
    let count = Arc::new(AtomicUsize::new(0));
    let answer = Arc::new(answer);
    let c = cloud.clone();
    let take = move |headers: HeaderMap, body: axum::body::Bytes| {
        let (cloud, count, answer) = (c.clone(), count.clone(), answer.clone());
        async move {
            let n = count.fetch_add(1, Ordering::SeqCst);
            let h = |k: &str| {
                headers
                    .get(k)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string()
            };
            let ts: i64 = h("x-parkhub-timestamp").parse().unwrap_or_default();
            let mut problems = Vec::new();
            if h("authorization") != format!("Bearer {TOKEN}") {
                problems.push("wrong bearer token".to_string());
            }
            if h("x-parkhub-signature")
                != parkhub::notify::channel::webhook_signature(SECRET, ts, &body)
            {
                problems.push("bad signature".into());
            }
            if (Utc::now().timestamp() - ts).abs() > 300 {
                problems.push("stale timestamp".into());
            }
            let json = if h("content-encoding") == "gzip" {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(&body[..])
                    .read_to_end(&mut out)
                    .map(|_| out)
                    .unwrap_or_default()
            } else {
                body.to_vec()
            };
            let verdict = answer(n);
            {
                let mut cloud = cloud.lock().unwrap();
                cloud.requests += 1;
                cloud.problems.extend(problems);
                // A stalled answer still reaches the cloud: the hub, having timed out, must
                // send the very same batch again.
                if verdict != Some(StatusCode::SERVICE_UNAVAILABLE) {
                    cloud.take(json);
                }
            }
            match verdict {
                Some(status) => status,
                None => {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    StatusCode::OK
                }
            }
        }
    };
    let app = axum::Router::new().route("/ingest", axum::routing::post(take));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/ingest", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, cloud)
}

fn config(dir: &std::path::Path, uplink: &str) -> String {
    format!(
        r#"
[hub]
id = "hz-up"
data_dir = "{}"

[api]
listen = "127.0.0.1:0"

[uplink]
{uplink}
token = "{TOKEN}"
secret = "{SECRET}"
interval_s = 1
timeout_s = 1
max_retry_s = 2
batch_max = 200
"#,
        dir.display()
    )
}

/// An uplink running on a config made by `text` (given its data directory).
struct Running {
    feed: parkhub::uplink::UplinkFeed,
    queue: Arc<parkhub::uplink::queue::UplinkQueue>,
    stop: CancellationToken,
    tasks: JoinSet<()>,
    _dir: tempfile::TempDir,
}

impl Running {
    fn start(text: impl FnOnce(&std::path::Path) -> String, alarms: Option<AlarmFeed>) -> Self {
        Self::start_with(text, |_| alarms)
    }

    /// `alarms` may be made from the loaded config (the alarm engine's view of it).
    fn start_with(
        text: impl FnOnce(&std::path::Path) -> String,
        alarms: impl FnOnce(&parkhub::config::Loaded) -> Option<AlarmFeed>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let loaded = common::load(&text(dir.path()), dir.path());
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let (feed, queue) =
            parkhub::uplink::start(&loaded, alarms(&loaded), &mut tasks, stop.clone())
                .unwrap()
                .unwrap();
        Self {
            feed,
            queue,
            stop,
            tasks,
            _dir: dir,
        }
    }

    async fn stop(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

fn reading(i: usize) -> Reading {
    Reading {
        device: "em-1".into(),
        point: "energy_import".into(),
        ts: Utc::now(),
        value: Value::Number(1000.0 + i as f64 / 10.0),
        unit: Some("kWh".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_reaches_a_flaky_receiver_once_in_order_and_repeats_are_exact() {
    // Every third request refused, every seventh stalled past the hub's timeout.
    let (url, cloud) = receiver(|n| match n % 7 {
        3 => None,
        _ if n % 3 == 1 => Some(StatusCode::SERVICE_UNAVAILABLE),
        _ => Some(StatusCode::OK),
    })
    .await;
    let up = Running::start(
        |d| config(d, &format!("kind = \"http\"\nurl = \"{url}\"")),
        None,
    );
    let (feed, queue) = (&up.feed, &up.queue);
    let total = 1000;
    for chunk in (0..total).collect::<Vec<_>>().chunks(100) {
        let batch: Vec<Reading> = chunk.iter().map(|&i| reading(i)).collect();
        feed.readings(&batch).await;
        feed.status("em-2", chunk[0] % 200 != 0);
    }
    let expected = (total + 10) as i64;
    wait_until(Duration::from_secs(60), "every record delivered", || {
        cloud.lock().unwrap().complete() == Some(expected)
    })
    .await;
    {
        let c = cloud.lock().unwrap();
        assert!(c.problems.is_empty(), "{:#?}", c.problems);
        assert!(c.repeats >= 1, "the stalled batches came again");
        assert!(c.requests > c.batches.len(), "failures were retried");
    }
    // The last batch may have reached the cloud on a stalled answer: the hub sends it again
    // before it counts it delivered.
    wait_until(Duration::from_secs(30), "the queue empties", || {
        queue.backlog().unwrap() == 0
    })
    .await;
    assert!(cloud.lock().unwrap().problems.is_empty());
    up.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_killed_with_minus_9_again_and_again_leaves_no_gap_in_seq() {
    let (url, cloud) = receiver(|n| {
        if n % 4 == 2 {
            Some(StatusCode::SERVICE_UNAVAILABLE)
        } else {
            Some(StatusCode::OK)
        }
    })
    .await;
    let server = SimServer::start(&[(1, "eastron-sdm120"), (2, "chint-dtsu666")], false).await;
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("parkhub.toml");
    let text = config(
        &dir.path().join("data"),
        &format!("kind = \"http\"\nurl = \"{url}\""),
    ) + &format!(
        r#"
[[bus]]
id = "gw"
kind = "tcp"
address = "{}"
[[device]]
id = "m1"
profile = "eastron-sdm120"
bus = "gw"
unit = 1
poll_interval_s = 1
[[device]]
id = "m2"
profile = "chint-dtsu666"
bus = "gw"
unit = 2
poll_interval_s = 1
"#,
        server.addr
    );
    std::fs::write(&config_path, text).unwrap();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_parkhub"))
            .args(["run", "--config", config_path.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    for round in 0..3 {
        let mut hub = run();
        let before = cloud.lock().unwrap().seqs.len();
        wait_until(Duration::from_secs(20), "batches arrive", || {
            cloud.lock().unwrap().seqs.len() > before + 40
        })
        .await;
        tokio::time::sleep(Duration::from_millis(173 * (round + 1))).await;
        hub.kill().unwrap(); // SIGKILL, in the middle of polling, queueing and sending
        hub.wait().unwrap();
    }
    // A last run drains what the killed ones queued.
    let mut hub = run();
    let db = dir
        .path()
        .join("data")
        .join(parkhub::uplink::queue::DB_FILE);
    let drained = || {
        rusqlite::Connection::open(&db)
            .and_then(|c| c.query_row("SELECT count(*) FROM queue", [], |r| r.get::<_, i64>(0)))
            .is_ok_and(|n| n < 60)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !drained() {
        assert!(Instant::now() < deadline, "the backlog did not drain");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &hub.id().to_string()])
        .status();
    let _ = hub.wait();

    let c = cloud.lock().unwrap();
    assert!(c.problems.is_empty(), "{:#?}", c.problems);
    let n = c.complete().unwrap_or_else(|| {
        let mut s = c.seqs.clone();
        s.sort_unstable();
        panic!(
            "a gap or a duplicate in {} seqs: {:?}…",
            s.len(),
            &s[..s.len().min(50)]
        )
    });
    assert!(n > 150, "only {n} records");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mqtt_uplink_publishes_batches_to_the_cloud_broker_with_qos_1() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let broker = Mosquitto::start("allow_anonymous true");
    let mut o = MqttOptions::new("cloud", "127.0.0.1", broker.port);
    o.set_max_packet_size(16 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(o, 64);
    client
        .subscribe("parkhub/hz-up/up", QoS::AtLeastOnce)
        .await
        .unwrap();
    let cloud = Arc::new(Mutex::new(Cloud::default()));
    let subscribed = Arc::new(tokio::sync::Notify::new());
    let (c, s) = (cloud.clone(), subscribed.clone());
    tokio::spawn(async move {
        while let Ok(ev) = events.poll().await {
            match ev {
                Event::Incoming(Packet::SubAck(_)) => s.notify_one(),
                Event::Incoming(Packet::Publish(p)) => c.lock().unwrap().take(p.payload.to_vec()),
                _ => {}
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), subscribed.notified())
        .await
        .unwrap();

    let up = Running::start(
        |d| {
            config(
                d,
                &format!(
                    "kind = \"mqtt\"\nurl = \"mqtt://127.0.0.1:{}\"",
                    broker.port
                ),
            )
        },
        None,
    );
    let feed = &up.feed;
    let batch: Vec<Reading> = (0..500).map(reading).collect();
    feed.readings(&batch).await;
    feed.status("em-1", false);
    wait_until(Duration::from_secs(20), "every record published", || {
        cloud.lock().unwrap().complete() == Some(501)
    })
    .await;
    assert!(cloud.lock().unwrap().problems.is_empty());
    up.stop().await;
}

/// A receiver that refuses everything until `open` is set.
async fn gated() -> (
    String,
    Arc<Mutex<Cloud>>,
    Arc<std::sync::atomic::AtomicBool>,
) {
    let open = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let o = open.clone();
    let (url, cloud) = receiver(move |_| {
        Some(if o.load(Ordering::SeqCst) {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        })
    })
    .await;
    (url, cloud, open)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_long_outage_the_backlog_drains_oldest_first_while_live_records_keep_coming() {
    let (url, cloud, open) = gated().await;
    let up = Running::start(
        |d| {
            config(
                d,
                &format!("kind = \"http\"\nurl = \"{url}\"\nbatch_max = 5000"),
            )
            .replace("batch_max = 200\n", "")
        },
        None,
    );
    let (feed, queue) = (&up.feed, &up.queue);
    // Hours of a park's readings while the link is down.
    let outage = 60_000;
    for chunk in (0..outage).collect::<Vec<_>>().chunks(1000) {
        let batch: Vec<Reading> = chunk.iter().map(|&i| reading(i)).collect();
        feed.readings(&batch).await;
    }
    wait_until(Duration::from_secs(10), "all queued", || {
        queue.backlog().unwrap() == outage as i64
    })
    .await;
    assert_eq!(cloud.lock().unwrap().seqs.len(), 0);

    open.store(true, Ordering::SeqCst);
    // Live data while it drains: a status change goes in behind the backlog.
    feed.status("em-9", false);
    let total = outage as i64 + 1;
    wait_until(Duration::from_secs(60), "the backlog drained", || {
        cloud.lock().unwrap().complete() == Some(total)
    })
    .await;
    {
        let c = cloud.lock().unwrap();
        assert!(c.problems.is_empty(), "{:#?}", c.problems);
        // Oldest first: batches arrived in seq order.
        let firsts: Vec<i64> = c
            .batches
            .values()
            .map(|b| {
                serde_json::from_slice::<serde_json::Value>(b).unwrap()["first_seq"]
                    .as_i64()
                    .unwrap()
            })
            .collect();
        let mut sorted = firsts.clone();
        sorted.sort_unstable();
        assert_eq!(sorted.len(), firsts.len());
        assert!(
            c.batches.len() <= 14,
            "{} batches for {total} records",
            c.batches.len()
        );
    }
    up.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_disk_cap_the_queue_sheds_the_oldest_readings_never_status_and_raises_an_alarm() {
    use parkhub::alarm::engine::{EngineConfig, HubEvent};
    let (url, cloud, open) = gated().await;
    let mut alarm_events = None;
    let up = Running::start_with(
        |d| {
            config(
                d,
                &format!("kind = \"http\"\nurl = \"{url}\"\nmax_backlog_mb = 1"),
            )
        },
        |loaded| {
            let (alarms, events) = AlarmFeed::new(&EngineConfig::from_loaded(loaded));
            alarm_events = Some(events);
            Some(alarms)
        },
    );
    let mut alarm_events = alarm_events.unwrap();
    let (feed, queue) = (&up.feed, &up.queue);
    let total = 40_000;
    for chunk in (0..total).collect::<Vec<_>>().chunks(1000) {
        let batch: Vec<Reading> = chunk.iter().map(|&i| reading(i)).collect();
        feed.readings(&batch).await;
        feed.status("em-2", chunk[0] % 2000 == 0);
    }
    wait_until(Duration::from_secs(10), "readings shed", || {
        queue.shed_total().unwrap() > 0
    })
    .await;
    // At start the uplink settles the alarm a last run may have left open, then raises it.
    let raised = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match alarm_events.recv().await {
                Some(HubEvent::Hub { rule, active }) if &*rule == "uplink_backlog" && active => {
                    return true;
                }
                Some(HubEvent::Hub { active: false, .. }) => continue,
                other => panic!("{other:?}"),
            }
        }
    })
    .await;
    assert_eq!(raised, Ok(true));

    open.store(true, Ordering::SeqCst);
    // The writer may still be shedding what it queues last: count what was shed when done.
    wait_until(Duration::from_secs(60), "what was kept arrives", || {
        let expected = total as i64 + 40 - queue.shed_total().unwrap();
        cloud.lock().unwrap().complete() == Some(expected) && queue.backlog().unwrap() == 0
    })
    .await;
    {
        let c = cloud.lock().unwrap();
        assert!(c.problems.is_empty(), "{:#?}", c.problems);
        let statuses: usize = c
            .batches
            .values()
            .map(|b| {
                serde_json::from_slice::<serde_json::Value>(b).unwrap()["device_status"]
                    .as_array()
                    .map_or(0, Vec::len)
            })
            .sum();
        assert_eq!(statuses, 40, "no status change was shed");
    }
    up.stop().await;
}

/// `parkhub uplink-test` on a config whose uplink goes to `url` (blocking: the receivers run
/// on the test's other worker thread).
fn uplink_test(url: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("parkhub.toml");
    std::fs::write(
        &path,
        config(
            &dir.path().join("data"),
            &format!("kind = \"http\"\nurl = \"{url}\""),
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_parkhub"))
        .args(["uplink-test", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uplink_test_tells_the_installer_plainly_whether_the_cloud_took_a_batch() {
    let (good, cloud) = receiver(|_| Some(StatusCode::OK)).await;
    let (code, text) = uplink_test(&good);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.starts_with("uplink OK: POST http://"), "{text}");
    assert!(text.contains("token and signature accepted"), "{text}");
    {
        let c = cloud.lock().unwrap();
        assert!(
            c.problems.is_empty(),
            "signed and with the token: {:?}",
            c.problems
        );
        assert!(c.seqs.is_empty(), "a test batch uses no seq");
    }

    let (refusing, _) = receiver(|_| Some(StatusCode::UNAUTHORIZED)).await;
    let (code, text) = uplink_test(&refusing);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("uplink FAILED") && text.contains("HTTP 401"),
        "{text}"
    );
    assert!(text.contains("check uplink.token"), "{text}");
    assert!(!text.contains(TOKEN) && !text.contains(SECRET), "{text}");

    let nobody = format!("http://127.0.0.1:{}/ingest", common::free_port());
    let (code, text) = uplink_test(&nobody);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("check the host and port"), "{text}");
}

/// A bare HTTP/1.1 receiver that takes one request per connection and, as `reset(n)` says for
/// its n-th connection, answers 200 or drops the connection with a TCP reset — before the
/// request is read whole, or after it was read and taken in (the answer is lost: the hub must
/// send the batch again, and the cloud sees an exact repeat).
async fn resetting(reset: fn(usize) -> Option<bool>) -> (String, Arc<Mutex<Cloud>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cloud = Arc::new(Mutex::new(Cloud::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/ingest", listener.local_addr().unwrap());
    let c = cloud.clone();
    tokio::spawn(async move {
        for n in 0.. {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let cloud = c.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 65536];
                let (head_end, length) = loop {
                    let Ok(k) = sock.read(&mut chunk).await else {
                        return;
                    };
                    if k == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..k]);
                    if reset(n) == Some(false) {
                        // Reset in the middle of the request.
                        let _ = sock.set_zero_linger();
                        return;
                    }
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (i + 4, length);
                    }
                };
                while buf.len() < head_end + length {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => buf.extend_from_slice(&chunk[..k]),
                    }
                }
                let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                let body = &buf[head_end..head_end + length];
                let json = if head.contains("content-encoding: gzip") {
                    let mut out = Vec::new();
                    let _ = flate2::read::GzDecoder::new(body).read_to_end(&mut out);
                    out
                } else {
                    body.to_vec()
                };
                {
                    let mut cloud = cloud.lock().unwrap();
                    cloud.requests += 1;
                    cloud.take(json);
                }
                if reset(n) == Some(true) {
                    // Taken in, but the answer never comes.
                    let _ = sock.set_zero_linger();
                    return;
                }
                let _ = sock
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (url, cloud)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_reset_mid_request_or_before_the_answer_lose_nothing_and_repeat_exactly() {
    let (url, cloud) = resetting(|n| match n % 5 {
        1 => Some(false),
        3 => Some(true),
        _ => None,
    })
    .await;
    let up = Running::start(
        |d| config(d, &format!("kind = \"http\"\nurl = \"{url}\"")),
        None,
    );
    let (feed, queue) = (&up.feed, &up.queue);
    for chunk in (0..2000).collect::<Vec<_>>().chunks(250) {
        let batch: Vec<Reading> = chunk.iter().map(|&i| reading(i)).collect();
        feed.readings(&batch).await;
    }
    wait_until(Duration::from_secs(60), "every record delivered", || {
        cloud.lock().unwrap().complete() == Some(2000) && queue.backlog().unwrap() == 0
    })
    .await;
    {
        let c = cloud.lock().unwrap();
        assert!(c.problems.is_empty(), "{:#?}", c.problems);
        assert!(c.repeats >= 1, "batches whose answer was lost came again");
    }
    up.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_readings_off_status_changes_still_go_up_and_the_uplink_keeps_running() {
    let (url, cloud) = receiver(|_| Some(StatusCode::OK)).await;
    let mut up = Running::start(
        |d| {
            config(
                d,
                &format!("kind = \"http\"\nurl = \"{url}\"\nreadings = false"),
            )
        },
        None,
    );
    up.feed.readings(&[reading(1), reading(2)]).await;
    up.feed.status("em-1", false);
    wait_until(Duration::from_secs(10), "the status change", || {
        cloud.lock().unwrap().complete() == Some(1)
    })
    .await;
    assert!(
        up.tasks.try_join_next().is_none(),
        "no uplink task ended by itself"
    );
    up.feed.status("em-1", true);
    wait_until(Duration::from_secs(10), "the next one", || {
        cloud.lock().unwrap().complete() == Some(2)
    })
    .await;
    up.stop().await;
}
