//! The uplink to the park brain against a real HTTP receiver: axum on 127.0.0.1 in a child
//! process, so that this process hosts the uplink alone and its CPU is the uplink's.
//!
//! 1. Backlog drain: READINGS readings of 2 000 meter points (200 meters × 10 points, values
//!    varying as meters' do) are queued through `UplinkFeed::readings`, one poll (10 readings)
//!    a call, while the receiver answers 503. Then the receiver accepts and the uplink is
//!    restarted on the same queue (as after an outage the hub was restarted through: the batch
//!    in flight goes again at once, with no back-off wait to sit out). Prints records/s from
//!    the first accepted batch until the queue is empty (target ≥ 50 000/s).
//! 2. Bytes on the wire: HTTP body bytes the receiver accepted per reading (target ≤ 20).
//! 3. Steady uplink CPU: 500 points every 10 s for SECONDS (`interval_s = 10`, the default);
//!    this process's CPU (getrusage) as % of one core (target ≤ 2 %).
//!
//! The receiver checks every batch (bearer token, signature, gzip, seqs exactly
//! `first_seq..=last_seq`) and that it got every seq from 1 once; the bench fails on any loss,
//! gap or duplicate.
//!
//!     cargo bench --bench uplink [-- READINGS SECONDS]   (default 1000000 readings, 60 s steady)
//!
//! Under `cargo test` (no `--bench` argument) it runs a small smoke version.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, Lines, Read as _, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use parkhub::config::{load_str, Loaded};
use parkhub::reading::{Reading, Value};
use parkhub::uplink::queue::{UplinkQueue, DB_FILE};
use parkhub::uplink::UplinkFeed;
use serde::Deserialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

mod support;
use support::{figure, Target};

const TOKEN: &str = "bench-token";
const SECRET: &str = "bench-secret";
const BATCH_MAX: usize = 5000;
const METERS: usize = 200;
/// A meter's points, as an energy-meter profile names them.
const POINTS: [(&str, Option<&str>); 10] = [
    ("voltage_a", Some("V")),
    ("voltage_b", Some("V")),
    ("voltage_c", Some("V")),
    ("current_a", Some("A")),
    ("current_b", Some("A")),
    ("current_c", Some("A")),
    ("active_power", Some("kW")),
    ("power_factor", None),
    ("frequency", Some("Hz")),
    ("energy_import", Some("kWh")),
];
/// Steady phase: 500 points (50 meters) every `period` seconds.
const STEADY_METERS: usize = 50;

/// (readings in the backlog, seconds of steady phase, seconds between steady polls).
fn args() -> (usize, u64, u64) {
    let bench = std::env::args().any(|a| a == "--bench");
    let nums: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    if bench {
        (
            nums.first().map_or(1_000_000, |n| *n as usize),
            nums.get(1).copied().unwrap_or(60),
            10,
        )
    } else {
        (20_000, 2, 1)
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if std::env::var("PARKHUB_BENCH_ROLE").as_deref() == Ok("cloud") {
        rt.block_on(cloud());
    } else {
        rt.block_on(hub());
    }
}

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

// ---------------------------------------------------------------------------------------------
// The child: the park brain's ingest.

#[derive(Deserialize)]
struct Up {
    hub_id: String,
    batch_id: String,
    first_seq: i64,
    last_seq: i64,
    readings: Vec<Seq>,
    alarms: Vec<Seq>,
    device_status: Vec<Seq>,
}

#[derive(Deserialize)]
struct Seq {
    seq: i64,
}

#[derive(Default)]
struct Ingest {
    accept: bool,
    refused: u64,
    accepted: u64,
    /// Bodies of accepted requests as they came over the wire, and as JSON.
    wire_bytes: u64,
    json_bytes: u64,
    gzipped: u64,
    /// Exact repeats of an accepted batch (allowed by DESIGN.md; none expected here).
    repeats: u64,
    batches: HashMap<String, u64>,
    /// How often each seq came, in distinct batches.
    seen: Vec<u8>,
    distinct: u64,
    problems: Vec<String>,
    first_accept_ns: u128,
}

impl Ingest {
    fn take(&mut self, headers: &HeaderMap, body: &[u8]) {
        self.accepted += 1;
        self.wire_bytes += body.len() as u64;
        let h = |k: &str| {
            headers
                .get(k)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
        };
        if h("authorization") != format!("Bearer {TOKEN}") {
            self.problems.push("wrong bearer token".into());
        }
        let ts: i64 = h("x-parkhub-timestamp").parse().unwrap_or_default();
        if h("x-parkhub-signature") != parkhub::notify::channel::webhook_signature(SECRET, ts, body)
        {
            self.problems.push("bad signature".into());
        }
        let json = if h("content-encoding") == "gzip" {
            self.gzipped += 1;
            let mut out = Vec::with_capacity(body.len() * 8);
            if let Err(e) = flate2::read::GzDecoder::new(body).read_to_end(&mut out) {
                self.problems.push(format!("bad gzip: {e}"));
                return;
            }
            out
        } else {
            body.to_vec()
        };
        self.json_bytes += json.len() as u64;
        let up: Up = match serde_json::from_slice(&json) {
            Ok(u) => u,
            Err(e) => return self.problems.push(format!("not the batch JSON: {e}")),
        };
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        json.hash(&mut hasher);
        let digest = hasher.finish();
        if let Some(before) = self.batches.get(&up.batch_id) {
            self.repeats += 1;
            if *before != digest {
                self.problems
                    .push(format!("batch {} repeated with other content", up.batch_id));
            }
            return;
        }
        self.batches.insert(up.batch_id.clone(), digest);
        if up.hub_id != "bench" || up.batch_id != format!("bench-{}", up.first_seq) {
            self.problems
                .push(format!("batch {}: wrong hub or batch id", up.batch_id));
        }
        let mut seqs: Vec<i64> = [&up.readings, &up.alarms, &up.device_status]
            .into_iter()
            .flatten()
            .map(|s| s.seq)
            .collect();
        seqs.sort_unstable();
        if !seqs.iter().copied().eq(up.first_seq..=up.last_seq) {
            self.problems.push(format!(
                "batch {}: its seqs are not {}..={}",
                up.batch_id, up.first_seq, up.last_seq
            ));
        }
        for s in seqs {
            let Some(i) = usize::try_from(s).ok().filter(|&i| i > 0) else {
                self.problems.push(format!("seq {s}"));
                continue;
            };
            if i >= self.seen.len() {
                self.seen.resize((i + 1).max(self.seen.len() * 2), 0);
            }
            if self.seen[i] == 0 {
                self.distinct += 1;
            }
            self.seen[i] = self.seen[i].saturating_add(1);
        }
    }

    fn report(&self) -> String {
        let max = self.seen.iter().rposition(|&c| c > 0).unwrap_or(0);
        let missing = self
            .seen
            .get(1..=max)
            .map_or(0, |s| s.iter().filter(|&&c| c == 0).count());
        let dups = self.seen.iter().filter(|&&c| c > 1).count();
        if let Some(p) = self.problems.first() {
            eprintln!("receiver: {} problems, the first: {p}", self.problems.len());
        }
        format!(
            "REPORT accepted={} refused={} wire={} json={} gzipped={} repeats={} distinct={} max={max} missing={missing} dups={dups} problems={} first_ns={}",
            self.accepted,
            self.refused,
            self.wire_bytes,
            self.json_bytes,
            self.gzipped,
            self.repeats,
            self.distinct,
            self.problems.len(),
            self.first_accept_ns,
        )
    }
}

/// The child: answers 503 until told `ACCEPT`; `WAIT n` answers once seqs 1..=n came,
/// `REPORT` with what came; ends on `QUIT` or when its stdin closes.
async fn cloud() {
    let state: Arc<Mutex<Ingest>> = Arc::default();
    let s = state.clone();
    let app = axum::Router::new()
        .route(
            "/ingest",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let s = s.clone();
                async move {
                    let mut st = s.lock().unwrap();
                    if !st.accept {
                        st.refused += 1;
                        return (StatusCode::SERVICE_UNAVAILABLE, "not yet");
                    }
                    if st.first_accept_ns == 0 {
                        st.first_accept_ns = unix_ns();
                    }
                    st.take(&headers, &body);
                    (StatusCode::OK, "ok")
                }
            }),
        )
        .layer(axum::extract::DefaultBodyLimit::disable());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("PORT {}", listener.local_addr().unwrap().port());
    std::io::stdout().flush().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let s = state;
    tokio::task::spawn_blocking(move || {
        let mut out = std::io::stdout();
        for line in std::io::stdin().lines() {
            let line = line.unwrap_or_default();
            let mut words = line.split_whitespace();
            match words.next() {
                Some("ACCEPT") => {
                    s.lock().unwrap().accept = true;
                    writeln!(out, "OK").unwrap();
                }
                Some("WAIT") => {
                    let n: u64 = words.next().and_then(|n| n.parse().ok()).unwrap_or(0);
                    let deadline = Instant::now() + Duration::from_secs(300);
                    loop {
                        if s.lock().unwrap().distinct >= n {
                            writeln!(out, "DONE").unwrap();
                            break;
                        }
                        if Instant::now() > deadline {
                            writeln!(out, "TIMEOUT").unwrap();
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
                Some("REPORT") => writeln!(out, "{}", s.lock().unwrap().report()).unwrap(),
                _ => break,
            }
            out.flush().unwrap();
        }
        std::process::exit(0);
    })
    .await
    .unwrap();
}

// ---------------------------------------------------------------------------------------------
// This process: the hub's uplink, fed as the hub feeds it.

/// The child receiver and the pipe to it.
struct Receiver {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    port: u16,
}

impl Receiver {
    fn spawn() -> Receiver {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(std::env::args().skip(1))
            .env("PARKHUB_BENCH_ROLE", "cloud")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().unwrap().unwrap();
        let port = first.strip_prefix("PORT ").unwrap().parse().unwrap();
        Receiver {
            child,
            stdin,
            lines,
            port,
        }
    }

    /// One command and its one line of answer (the worker thread is lent out meanwhile).
    fn ask(&mut self, cmd: &str) -> String {
        tokio::task::block_in_place(|| {
            writeln!(self.stdin, "{cmd}").unwrap();
            self.stdin.flush().unwrap();
            self.lines.next().unwrap().unwrap()
        })
    }

    fn report(&mut self) -> Report {
        let line = self.ask("REPORT");
        Report(
            line.split_whitespace()
                .skip(1)
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
                .collect(),
        )
    }

    fn wait(&mut self, n: usize) {
        assert_eq!(
            self.ask(&format!("WAIT {n}")),
            "DONE",
            "the receiver got seqs 1..={n} in time"
        );
    }

    fn quit(mut self) {
        let _ = writeln!(self.stdin, "QUIT");
        drop(self.stdin);
        let _ = self.child.wait();
    }
}

struct Report(HashMap<String, u128>);

impl Report {
    fn get(&self, k: &str) -> u64 {
        self.0[k] as u64
    }
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// 200 three-phase energy meters: what one poll of one reads.
struct Park {
    meters: Vec<Arc<str>>,
    points: Vec<(Arc<str>, Option<Arc<str>>)>,
    energy: Vec<f64>,
    rng: u64,
}

impl Park {
    fn new() -> Park {
        Park {
            meters: (1..=METERS).map(|i| format!("em-{i:04}").into()).collect(),
            points: POINTS
                .iter()
                .map(|(p, u)| (Arc::from(*p), u.map(Arc::from)))
                .collect(),
            energy: (0..METERS)
                .map(|i| 1000.0 + (i * 7919 % 90_000) as f64)
                .collect(),
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }

    fn next(&mut self, n: u64) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng % n
    }

    /// One poll of meter `m` at `ts` (10 s after its last): ten readings.
    fn poll(&mut self, m: usize, ts: DateTime<Utc>) -> Vec<Reading> {
        let round = |x: f64, d: i32| (x * 10f64.powi(d)).round() / 10f64.powi(d);
        let base_amps = 5.0 + (m * 37 % 95) as f64;
        let volts: [f64; 3] = std::array::from_fn(|_| (2250 + self.next(100)) as f64 / 10.0);
        let amps: [f64; 3] =
            std::array::from_fn(|_| round(base_amps * (0.9 + self.next(200) as f64 / 1000.0), 2));
        let pf = (850 + self.next(150)) as f64 / 1000.0;
        let kw = round(
            (0..3).map(|i| volts[i] * amps[i]).sum::<f64>() * pf / 1000.0,
            3,
        );
        let hz = (4995 + self.next(10)) as f64 / 100.0;
        self.energy[m] = round(self.energy[m] + kw * 10.0 / 3600.0, 2);
        let values = [
            volts[0],
            volts[1],
            volts[2],
            amps[0],
            amps[1],
            amps[2],
            kw,
            pf,
            hz,
            self.energy[m],
        ];
        // Each meter answers a few milliseconds into the poll cycle.
        let ts = ts + chrono::Duration::milliseconds((m * 7 % 1000) as i64);
        self.points
            .iter()
            .zip(values)
            .map(|((point, unit), v)| Reading {
                device: self.meters[m].clone(),
                point: point.clone(),
                ts,
                value: Value::Number(v),
                unit: unit.clone(),
            })
            .collect()
    }
}

fn config(dir: &std::path::Path, port: u16, interval_s: u64) -> Loaded {
    let text = format!(
        r#"
[hub]
id = "bench"
data_dir = "{}"

[api]
listen = "127.0.0.1:0"

[uplink]
kind = "http"
url = "http://127.0.0.1:{port}/ingest"
token = "{TOKEN}"
secret = "{SECRET}"
interval_s = {interval_s}
batch_max = {BATCH_MAX}
"#,
        dir.display()
    );
    load_str("bench.toml", &text, dir, &|_| None).unwrap()
}

/// A running uplink: its feed, its queue and how to stop it.
struct Running {
    feed: UplinkFeed,
    queue: Arc<UplinkQueue>,
    stop: CancellationToken,
    tasks: JoinSet<()>,
}

fn start(loaded: &Loaded) -> Running {
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let (feed, queue) = parkhub::uplink::start(loaded, None, &mut tasks, stop.clone())
        .unwrap()
        .expect("[uplink] is configured");
    Running {
        feed,
        queue,
        stop,
        tasks,
    }
}

impl Running {
    async fn stop(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

async fn until(what: &str, limit: Duration, every: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        tokio::time::sleep(every).await;
    }
}

async fn hub() {
    let (n, seconds, period) = args();
    let mut rx = Receiver::spawn();
    let dir = tempfile::tempdir().unwrap();
    let mut park = Park::new();

    // 1. The backlog, queued while the receiver refuses.
    let uplink = start(&config(dir.path(), rx.port, 1));
    let rounds = n.div_ceil(METERS * POINTS.len());
    let outage_start = Utc::now() - chrono::Duration::seconds(10 * rounds as i64);
    let (t0, cpu0) = (Instant::now(), cpu_seconds());
    let mut queued = 0;
    'fill: for r in 0..rounds {
        let ts = outage_start + chrono::Duration::seconds(10 * r as i64);
        for m in 0..METERS {
            let mut batch = park.poll(m, ts);
            batch.truncate(n - queued);
            queued += batch.len();
            uplink.feed.readings(&batch).await;
            if queued == n {
                break 'fill;
            }
        }
    }
    let q = uplink.queue.clone();
    until(
        "the backlog queued",
        Duration::from_secs(120),
        Duration::from_millis(20),
        || q.backlog().unwrap() as usize >= n,
    )
    .await;
    let (fill_s, fill_cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - cpu0);
    assert_eq!(uplink.queue.backlog().unwrap() as usize, n);
    assert_eq!(uplink.queue.shed_total().unwrap(), 0, "nothing shed");
    let size = |s: &str| {
        std::fs::metadata(dir.path().join(format!("{DB_FILE}{s}"))).map_or(0, |m| m.len())
    };
    let (disk, wal) = (size(""), size("-wal"));
    // The uplink has formed its batch and been refused at least once before it stops.
    let deadline = Instant::now() + Duration::from_secs(10);
    while rx.report().get("refused") == 0 {
        assert!(
            Instant::now() < deadline,
            "the uplink tried the refusing receiver"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    uplink.stop().await;
    drop(q);

    // 2. The receiver accepts; the uplink (restarted) drains the backlog.
    assert_eq!(rx.ask("ACCEPT"), "OK");
    let (start_ns, cpu0) = (unix_ns(), cpu_seconds());
    let uplink = start(&config(dir.path(), rx.port, 1));
    rx.wait(n);
    let q = uplink.queue.clone();
    until(
        "the queue empty",
        Duration::from_secs(30),
        Duration::from_millis(1),
        || q.backlog().unwrap() == 0,
    )
    .await;
    let (end_ns, drain_cpu) = (unix_ns(), cpu_seconds() - cpu0);
    let drained = rx.report();
    uplink.stop().await;
    drop(q);
    let first_ns = drained.0["first_ns"];
    let drain_s = (end_ns - first_ns) as f64 / 1e9;

    // 3. Steady: 500 points every `period` s, sent every `period` s.
    let uplink = start(&config(dir.path(), rx.port, period));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let polls = seconds / period;
    let (t0, cpu0) = (tokio::time::Instant::now(), cpu_seconds());
    for k in 0..polls {
        tokio::time::sleep_until(t0 + Duration::from_secs(k * period)).await;
        let ts = Utc::now();
        for m in 0..STEADY_METERS {
            uplink.feed.readings(&park.poll(m, ts)).await;
        }
    }
    tokio::time::sleep_until(t0 + Duration::from_secs(seconds)).await;
    let (steady_s, steady_cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - cpu0);
    let steady_n = polls as usize * STEADY_METERS * POINTS.len();
    let total = n + steady_n;
    rx.wait(total);
    let q = uplink.queue.clone();
    until(
        "the queue empty",
        Duration::from_secs(30),
        Duration::from_millis(5),
        || q.backlog().unwrap() == 0,
    )
    .await;
    drop(q);
    uplink.stop().await;
    let end = rx.report();
    rx.quit();

    let (acc1, acc_all) = (drained.get("accepted"), end.get("accepted"));
    let wire1 = drained.get("wire");
    let json1 = drained.get("json");
    let wire3 = end.get("wire") - wire1;
    println!(
        "Uplink over HTTP to a local receiver (child process): batch_max {BATCH_MAX}, gzip, signed"
    );
    println!(
        "  backlog queued                 {n} readings in {fill_s:.1} s ({:.0} /s through UplinkFeed::readings, 10 a call; hub CPU {:.0} %; refused {} times)",
        n as f64 / fill_s,
        100.0 * fill_cpu / fill_s,
        drained.get("refused")
    );
    println!(
        "  queue on disk                  {:.1} MB ({:.0} bytes a reading) + WAL {:.1} MB",
        disk as f64 / 1e6,
        disk as f64 / n as f64,
        wal as f64 / 1e6
    );
    println!(
        "  drain rate                     {:.0} records/s (target >= 50000): {acc1} batches in {drain_s:.2} s, first {:.0} ms after restart",
        n as f64 / drain_s,
        (first_ns - start_ns) as f64 / 1e6
    );
    println!(
        "  hub CPU during drain           {:.0} % of one core",
        100.0 * drain_cpu / drain_s
    );
    println!(
        "  bytes on the wire              {:.1} per reading (target <= 20); JSON {:.1} per reading, gzip {:.1}x",
        wire1 as f64 / n as f64,
        json1 as f64 / n as f64,
        json1 as f64 / wire1 as f64
    );
    println!(
        "  steady CPU                     {:.2} % of one core (target <= 2 %): {} points every {period} s for {steady_s:.0} s",
        100.0 * steady_cpu / steady_s,
        STEADY_METERS * POINTS.len()
    );
    println!(
        "  steady bytes on the wire       {:.1} per reading ({} batches of up to {})",
        wire3 as f64 / steady_n.max(1) as f64,
        acc_all - acc1,
        STEADY_METERS * POINTS.len()
    );
    println!(
        "  seqs received                  {} of {total}: missing {}, duplicated {}, exact repeats {}, problems {}",
        end.get("distinct"),
        end.get("missing"),
        end.get("dups"),
        end.get("repeats"),
        end.get("problems")
    );
    figure(
        "uplink: backlog drain",
        n as f64 / drain_s,
        0,
        "records/s",
        Target::AtLeast(50_000.0),
    );
    figure(
        "uplink: bytes on the wire per reading",
        wire1 as f64 / n as f64,
        1,
        "bytes",
        Target::AtMost(20.0),
    );
    figure(
        "uplink: steady CPU, 500 points every 10 s",
        100.0 * steady_cpu / steady_s,
        2,
        "% of a core",
        Target::AtMost(2.0),
    );
    let lost = end.get("missing") + end.get("dups") + end.get("problems");
    figure(
        "uplink: seqs missing, duplicated or malformed",
        lost as f64,
        0,
        "records",
        Target::AtMost(0.0),
    );
    assert_eq!(end.get("problems"), 0, "every batch as DESIGN.md says");
    assert_eq!(end.get("max"), total as u64, "no seq beyond what was sent");
    assert_eq!(end.get("distinct"), total as u64, "no record lost");
    assert_eq!(end.get("missing"), 0, "no gap");
    assert_eq!(end.get("dups"), 0, "every seq once");
}
