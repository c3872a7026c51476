//! The API under load and the console's weight.
//!
//! A hub with 200 environment sensors and 30 days of history (one point read every minute,
//! the others every 15 minutes) serves 50 concurrent clients, each asking in turn:
//! - `GET /api/v1/devices/{id}/latest` (target p99 ≤ 10 ms),
//! - `GET /api/v1/history` of one point over 30 days with `step=3600` (target p99 ≤ 50 ms);
//!
//! and the console's first load is fetched as a browser does, gzip-compressed (target
//! ≤ 300 KB transferred). Clients run on their own runtime thread, in this process: on this
//! 2-core machine they share the CPU with the hub, which makes the figures pessimistic.
//!
//!     cargo bench --bench api
//!
//! Under `cargo test` (no `--bench` argument) it runs a small smoke version.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use parkhub::app::App;
use parkhub::config::load_str;
use parkhub::reading::{Reading, Value};
use sha2::{Digest, Sha256};

mod support;
use support::{figure, Target};

const TOKEN: &str = "bench-token-0c1d";
const CLIENTS: usize = 50;

struct Size {
    sensors: usize,
    days: i64,
    latest_rounds: usize,
    history_rounds: usize,
}

fn size() -> Size {
    if std::env::args().any(|a| a == "--bench") {
        Size {
            sensors: 200,
            days: 30,
            latest_rounds: 40,
            history_rounds: 10,
        }
    } else {
        Size {
            sensors: 10,
            days: 2,
            latest_rounds: 2,
            history_rounds: 1,
        }
    }
}

fn main() {
    let size = size();
    let hub_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (app, addr) = hub_rt.block_on(start(&size, dir.path()));
    let base = format!("http://{addr}");

    // The clients' own runtime, on one thread of their own.
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let now = Utc::now().timestamp();
    let from = now - size.days * 86_400;
    client_rt.block_on(async {
        let latest = load(&base, size.latest_rounds, |i| {
            format!("/api/v1/devices/env-{:03}/latest", i % size.sensors)
        })
        .await;
        let p99 = report("latest", &latest, 10.0);
        figure(
            &format!("api: GET latest, {CLIENTS} clients, p99"),
            p99,
            2,
            "ms",
            Target::AtMost(10.0),
        );
        let history = load(&base, size.history_rounds, |_| {
            format!(
                "/api/v1/history?device=env-000&point=temperature&from={from}&to={now}&step=3600"
            )
        })
        .await;
        let p99 = report(
            &format!("{}-day history (step 3600)", size.days),
            &history,
            50.0,
        );
        figure(
            &format!(
                "api: GET {}-day history hourly, {CLIENTS} clients, p99",
                size.days
            ),
            p99,
            2,
            "ms",
            Target::AtMost(50.0),
        );
        let one = load_with(&base, 1, size.history_rounds * 10, |_| {
            format!(
                "/api/v1/history?device=env-000&point=temperature&from={from}&to={now}&step=3600"
            )
        })
        .await;
        report_with("  the same, one client alone", 1, &one, 50.0);
        page_weight(&base).await;
    });
    // The query alone, without HTTP: what the API adds is the rest.
    let h = parkhub::store::History::open(&app.db_path, chrono_tz::Asia::Shanghai).unwrap();
    let series = h.series("env-000", "temperature").unwrap().unwrap();
    let mut ms: Vec<f64> = (0..100)
        .map(|_| {
            let t = Instant::now();
            let rows = h.values(&series, from, now, Some(3600)).unwrap();
            assert!(!rows.is_empty());
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    println!(
        "  the query alone, in process    median {:.2} ms",
        ms[ms.len() / 2]
    );
    hub_rt.block_on(async {
        app.stop(Duration::from_secs(5)).await.unwrap();
    });
}

async fn start(size: &Size, dir: &std::path::Path) -> (App, std::net::SocketAddr) {
    let mut cfg = format!(
        "[hub]\nid = \"bench\"\ndata_dir = \"{}\"\n[history]\nraw_days = 60\n[api]\nlisten = \"127.0.0.1:0\"\n\
         [[api.token]]\nname = \"bench\"\nrole = \"viewer\"\nsha256 = \"{}\"\n\
         [mqtt]\nbroker = \"embedded\"\nlisten = \"127.0.0.1:{}\"\n",
        dir.display(),
        hex::encode(Sha256::digest(TOKEN.as_bytes())),
        support::free_port()
    );
    for i in 0..size.sensors {
        cfg += &format!(
            "[[device]]\nid = \"env-{i:03}\"\nprofile = \"mqtt-env-sensor\"\ntopic = \"bench/env-{i:03}\"\n\
             location = {{ building = \"{}号楼\", floor = \"{}F\" }}\n",
            1 + i % 9,
            1 + i % 6
        );
    }
    let loaded = load_str("bench.toml", &cfg, dir, &|_| None).unwrap();
    let app = App::start(&loaded).await.unwrap();

    // History: env-000.temperature every minute, every other point every 15 minutes.
    let started = Instant::now();
    let now = Utc::now().timestamp();
    let first = now - size.days * 86_400;
    let mut stored = 0u64;
    let points = ["temperature", "humidity", "pm25", "noise_db"];
    let mut t = first;
    while t <= now {
        let mut batch = Vec::new();
        for s in 0..size.sensors {
            for (p, point) in points.iter().enumerate() {
                let every = if s == 0 && p == 0 { 60 } else { 900 };
                if (t - first) % every == 0 {
                    batch.push(reading(
                        s,
                        point,
                        t,
                        20.0 + ((t / 60 + p as i64) % 100) as f64 / 10.0,
                    ));
                }
            }
        }
        stored += batch.len() as u64;
        if !batch.is_empty() {
            app.hub.ingest(batch).await;
        }
        t += 60;
    }
    app.writer.flush().await.unwrap();
    println!(
        "seeded {stored} readings ({} sensors, {} days) in {:.1} s",
        size.sensors,
        size.days,
        started.elapsed().as_secs_f64()
    );
    let addr = app.api_addr;
    (app, addr)
}

fn reading(sensor: usize, point: &str, ts: i64, value: f64) -> Reading {
    Reading {
        device: Arc::from(format!("env-{sensor:03}").as_str()),
        point: Arc::from(point),
        value: Value::Number(value),
        unit: None,
        ts: DateTime::from_timestamp(ts, 0).unwrap(),
    }
}

fn client() -> reqwest::Client {
    support::plain_client(CLIENTS)
}

/// `CLIENTS` clients, each with its own connection (opened by an untimed first request),
/// asking `rounds` times in turn; returns every request's latency and the wall time of the
/// whole run.
async fn load(
    base: &str,
    rounds: usize,
    path: impl Fn(usize) -> String,
) -> (Vec<Duration>, Duration) {
    load_with(base, CLIENTS, rounds, path).await
}

async fn load_with(
    base: &str,
    clients: usize,
    rounds: usize,
    path: impl Fn(usize) -> String,
) -> (Vec<Duration>, Duration) {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let http = client();
        let urls: Vec<String> = (0..rounds)
            .map(|r| format!("{base}{}", path(c * rounds + r)))
            .collect();
        tasks.spawn(async move {
            // The connection is opened before the clock starts, as a console's is: what is
            // measured is a request, not fifty TCP handshakes at once.
            if let Some(first) = urls.first() {
                let res = http.get(first).bearer_auth(TOKEN).send().await.unwrap();
                assert!(res.status().is_success(), "{first}: {}", res.status());
                res.bytes().await.unwrap();
            }
            let mut took = Vec::with_capacity(urls.len());
            for url in urls {
                let t = Instant::now();
                let res = http.get(&url).bearer_auth(TOKEN).send().await.unwrap();
                assert!(res.status().is_success(), "{url}: {}", res.status());
                let body = res.bytes().await.unwrap();
                assert!(!body.is_empty());
                took.push(t.elapsed());
            }
            took
        });
    }
    let mut all = Vec::new();
    while let Some(t) = tasks.join_next().await {
        all.extend(t.unwrap());
    }
    (all, started.elapsed())
}

/// Prints a run's latencies; returns its p99 in ms.
fn report(what: &str, run: &(Vec<Duration>, Duration), target_ms: f64) -> f64 {
    report_with(what, CLIENTS, run, target_ms)
}

fn report_with(
    what: &str,
    clients: usize,
    (lat, wall): &(Vec<Duration>, Duration),
    target_ms: f64,
) -> f64 {
    let mut ms: Vec<f64> = lat.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let q = |p: f64| ms[((ms.len() as f64 * p).ceil() as usize).clamp(1, ms.len()) - 1];
    println!(
        "{what:<32} {clients} clients, {} requests: p50 {:.2} ms, p99 {:.2} ms (target ≤ {target_ms} ms), max {:.2} ms, {:.0} req/s",
        ms.len(),
        q(0.50),
        q(0.99),
        ms[ms.len() - 1],
        ms.len() as f64 / wall.as_secs_f64()
    );
    q(0.99)
}

/// The console's first load as a browser makes it: the page, then every file of the console
/// (the page loads its scripts, styles, views and chart library at once), gzip-compressed.
async fn page_weight(base: &str) {
    let http = client();
    let mut paths = vec!["/".to_string()];
    paths.extend(
        parkhub::api::console_files()
            .into_iter()
            .map(|(p, _)| p)
            .filter(|p| p != "index.html")
            .map(|p| format!("/assets/{p}")),
    );
    let (mut sent, mut raw) = (0usize, 0usize);
    for p in &paths {
        let res = http
            .get(format!("{base}{p}"))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{p}: {}", res.status());
        let body = res.bytes().await.unwrap();
        sent += body.len();
        let plain: usize = parkhub::api::console_files()
            .iter()
            .find(|(f, _)| format!("/assets/{f}") == *p || (p == "/" && f == "index.html"))
            .map_or(0, |(_, b)| b.len());
        raw += plain;
    }
    println!(
        "console first load               {} files: {:.1} KB transferred gzip-compressed (target ≤ 300 KB), {:.1} KB uncompressed",
        paths.len(),
        sent as f64 / 1024.0,
        raw as f64 / 1024.0
    );
    figure(
        "api: console first load, gzip",
        sent as f64 / 1024.0,
        1,
        "KB",
        Target::AtMost(300.0),
    );
}
