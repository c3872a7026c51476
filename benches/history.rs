//! History: ingest speed and size on disk through the real writer, and a 30-day hourly query.
//!
//! Prints readings/s through the writer into SQLite (target ≥ 200 000/s), on-disk bytes per
//! stored reading (target ≤ 24) and the time of a 30-day hourly query of one point (target
//! ≤ 20 ms).
//!
//!     cargo bench --bench history
//!
//! Under `cargo test` (no `--bench` argument) it runs a small smoke version.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::DateTime;
use parkhub::config::HistoryConfig;
use parkhub::profile::Kind;
use parkhub::reading::{Reading, Value};
use parkhub::store::{spawn_writer, History, SeriesDef, WriterOptions};

mod support;
use support::{figure, Target};
use tokio::sync::mpsc;

const TZ: chrono_tz::Tz = chrono_tz::Asia::Shanghai;

fn series(n: usize) -> Vec<SeriesDef> {
    (0..n)
        .map(|i| SeriesDef {
            device: format!("m{}", i / 10),
            point: format!("p{}", i % 10),
            unit: Some("V".into()),
            kind: if i % 10 == 9 {
                Kind::Counter
            } else {
                Kind::Gauge
            },
        })
        .collect()
}

/// `n` series read every `every` seconds for `span` seconds from `start`, sent as the hub sends
/// them (one batch per poll of ten points); returns readings sent and the wall time until stored.
async fn ingest(
    path: &std::path::Path,
    n: usize,
    start: i64,
    span: i64,
    every: i64,
    maintain: Duration,
    settle: bool,
) -> (u64, f64) {
    let defs = series(n);
    let clock = Arc::new(AtomicI64::new(start));
    let mut opts = WriterOptions::new(
        path.to_path_buf(),
        TZ,
        HistoryConfig {
            raw_days: 60,
            ..HistoryConfig::default()
        },
        defs.clone(),
    );
    let c = clock.clone();
    opts.clock = Arc::new(move || c.load(Ordering::Relaxed));
    opts.maintain_every = maintain;
    let (tx, rx) = mpsc::channel(1024);
    let writer = spawn_writer(opts, rx).unwrap();
    let devices: Vec<Arc<str>> = (0..n / 10)
        .map(|d| Arc::from(format!("m{d}").as_str()))
        .collect();
    let points: Vec<Arc<str>> = (0..10)
        .map(|p| Arc::from(format!("p{p}").as_str()))
        .collect();
    let unit: Arc<str> = Arc::from("V");
    let mut sent = 0u64;
    let t0 = Instant::now();
    let mut t = start;
    while t < start + span {
        let ts = DateTime::from_timestamp(t, 0).unwrap();
        for (d, dev) in devices.iter().enumerate() {
            let batch: Vec<Reading> = points
                .iter()
                .enumerate()
                .map(|(p, point)| {
                    // Meter-like values: a tenth-of-a-unit resolution, counters rising.
                    let v = if p == 9 {
                        1000.0 + (t - start) as f64 * 0.01
                    } else {
                        220.0 + ((t + d as i64 * 7 + p as i64) % 97) as f64 * 0.1
                    };
                    Reading {
                        device: dev.clone(),
                        point: point.clone(),
                        ts,
                        value: Value::Number(v),
                        unit: Some(unit.clone()),
                    }
                })
                .collect();
            sent += batch.len() as u64;
            tx.send(batch).await.unwrap();
        }
        clock.store(t, Ordering::Relaxed);
        t += every;
    }
    // Everything closed, moved and rolled up (or, unsettled, the newest minutes left in the
    // arrival table as in a running hub).
    if settle {
        clock.store(start + span + 3600, Ordering::Relaxed);
    }
    writer.flush().await.unwrap();
    let elapsed = t0.elapsed().as_secs_f64();
    drop(tx);
    writer.join().await.unwrap();
    (sent, elapsed)
}

/// Bytes this process has written (files, WAL and checkpoints included).
fn bytes_written() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|io| {
            io.lines().find_map(|l| {
                l.strip_prefix("wchar: ")
                    .and_then(|v| v.trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

fn size_on_disk(path: &std::path::Path) -> u64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    let q = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    let (pages, free, size) = (
        q("PRAGMA page_count"),
        q("PRAGMA freelist_count"),
        q("PRAGMA page_size"),
    );
    ((pages - free) * size) as u64
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    // (points, seconds at 1 s) for ingest; days of 5-minute readings of 200 points for the query.
    let (points, ingest_s, days) = if full { (2000, 900, 30) } else { (100, 60, 2) };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let start = DateTime::parse_from_rfc3339("2026-10-01T00:00:00+08:00").unwrap().timestamp();

        // 1. Ingest: 2 000 points read every second for 15 minutes (1.8 million readings).
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("history.sqlite");
        let written0 = bytes_written();
        let (sent, secs) = ingest(&db, points, start, ingest_s, 1, Duration::from_millis(200), true).await;
        let written = bytes_written() - written0;
        let bytes = size_on_disk(&db);
        println!("history ingest: {sent} readings of {points} points through the writer");
        println!("  readings/s stored              {:.0} (target >= 200000)", sent as f64 / secs);
        println!("  on-disk bytes per reading      {:.1} (target <= 24; file {:.1} MB with rollups)", bytes as f64 / sent as f64, bytes as f64 / 1e6);
        println!("  bytes written per reading      {:.1} (WAL and checkpoints: what an SD card sees)", written as f64 / sent as f64);
        figure("history: ingest through the writer", sent as f64 / secs, 0, "readings/s", Target::AtLeast(200_000.0));
        figure("history: on-disk bytes per reading", bytes as f64 / sent as f64, 1, "bytes", Target::AtMost(24.0));
        figure("history: bytes written per reading", written as f64 / sent as f64, 1, "bytes", Target::None);

        // 2. Query: 200 points read every 5 minutes for 30 days, then one point's 30 days hourly.
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("history.sqlite");
        let span = days * 86_400;
        let (sent, _) = ingest(&db, 200, start, span, 300, Duration::from_secs(3600), true).await;
        let hist = History::open(&db, TZ).unwrap();
        let s = hist.series("m7", "p3").unwrap().unwrap();
        let mut times = Vec::new();
        let mut rows = 0;
        for _ in 0..200 {
            let t0 = Instant::now();
            rows = hist.values(&s, start, start + span - 1, Some(3600)).unwrap().len();
            times.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(|a, b| a.total_cmp(b));
        assert_eq!(rows as i64, days * 24, "one row per hour");
        println!("history query: one point, {days} days, hourly ({rows} rows) in a history of {sent} readings of 200 points");
        println!("  median                         {:.2} ms (target <= 20 ms)", times[times.len() / 2]);
        println!("  p99                            {:.2} ms", times[times.len() * 99 / 100]);
        figure("history: one point, 30 days hourly, median", times[times.len() / 2], 2, "ms", Target::AtMost(20.0));

        // 3. The cost of the arrival table: one point's last 10 minutes while the newest minutes
        //    of all 2 000 points (read every second) have not been moved yet.
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("history.sqlite");
        let (_, _) = ingest(&db, points, start, ingest_s, 1, Duration::from_millis(200), false).await;
        let hot: i64 = rusqlite::Connection::open(&db).unwrap().query_row("SELECT count(*) FROM sample_hot", [], |r| r.get(0)).unwrap();
        let hist = History::open(&db, TZ).unwrap();
        let s = hist.series("m7", "p3").unwrap().unwrap();
        let end = start + ingest_s - 1;
        let mut times = Vec::new();
        for _ in 0..50 {
            let t0 = Instant::now();
            let n = hist.raw(&s, end - 599, end).unwrap().len();
            assert_eq!(n as i64, ingest_s.min(600));
            times.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(|a, b| a.total_cmp(b));
        println!("history query: one point, last 10 minutes raw, {hot} readings not yet moved");
        println!("  median                         {:.2} ms", times[times.len() / 2]);
        figure("history: one point, last 10 min raw, median", times[times.len() / 2], 2, "ms", Target::None);
    });
}
