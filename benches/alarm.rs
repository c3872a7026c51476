//! Alarm latency end to end: a smoke detector publishes `smoke=true` over MQTT → the hub's
//! embedded broker → decoding → the alarm engine (rule, lifecycle, stored alarm, outbox row) →
//! the webhook lane → an HTTP request arriving at a local receiver.
//!
//! 1 000 smoke detectors raise one alarm each, 20 ms apart, while 200 environment sensors
//! publish 10 000 background messages/s (QoS 1, 10 connections; their temperature, PM2.5 and
//! noise rules are evaluated on every one). The publishers and the receiver run in a child
//! process, so one clock times each alarm from publish to arrival; the hub is this process.
//! Prints p50, p99 and the worst, and how many alarms never arrived.
//!
//!     cargo bench --bench alarm [-- ALARMS BACKGROUND_RATE]   (default 1000 alarms, 10000 msg/s)
//!
//! Under `cargo test` (no `--bench` argument) it runs a small smoke version.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use parkhub::app::App;
use parkhub::config::load_str;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::time::Instant;

const ENV_SENSORS: usize = 200;
const BACKGROUND_CONNECTIONS: usize = 10;
const ALARM_SPACING: Duration = Duration::from_millis(20);

mod support;
use support::{figure, Target};

fn args() -> (usize, u64) {
    let bench = std::env::args().any(|a| a == "--bench");
    let nums: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    if bench {
        (
            nums.first().map_or(1000, |n| *n as usize),
            nums.get(1).copied().unwrap_or(10_000),
        )
    } else {
        (50, 1000)
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if std::env::var("PARKHUB_BENCH_ROLE").as_deref() == Ok("field") {
        rt.block_on(field());
    } else {
        rt.block_on(hub());
    }
}

fn env_port(name: &str) -> u16 {
    std::env::var(name).unwrap().parse().unwrap()
}

/// A QoS 1 client whose acknowledgements are counted.
fn client(id: String, port: u16, acked: Arc<AtomicU64>) -> AsyncClient {
    let mut o = MqttOptions::new(id.clone(), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(60));
    o.set_inflight(200);
    let (client, mut eventloop) = AsyncClient::new(o, 1024);
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("{id}: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    client
}

/// The child: the park's sensors and the alarm receiver. Prints one line of results.
async fn field() {
    let mqtt = env_port("PARKHUB_BENCH_PORT");
    let hook = env_port("PARKHUB_BENCH_HOOK");
    let (alarms, rate) = args();

    // The receiver: arrival time of each smoke detector's first push.
    let arrivals: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let a = arrivals.clone();
    let app = axum::Router::new().route(
        "/alarm",
        axum::routing::post(move |body: axum::body::Bytes| {
            let a = a.clone();
            async move {
                let at = Instant::now();
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
                    if v["event"] == "raised" {
                        if let Some(d) = v["device_id"].as_str() {
                            a.lock().unwrap().entry(d.to_string()).or_insert(at);
                        }
                    }
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", hook))
        .await
        .unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let acked = Arc::new(AtomicU64::new(0));
    let background: Vec<AsyncClient> = (0..BACKGROUND_CONNECTIONS)
        .map(|c| client(format!("bg-{c}"), mqtt, acked.clone()))
        .collect();
    let smoke = client("smoke-gw".into(), mqtt, acked.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!("GO");
    std::io::stdout().flush().unwrap();

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent_bg = Arc::new(AtomicU64::new(0));
    let period = Duration::from_secs_f64(BACKGROUND_CONNECTIONS as f64 / rate as f64);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (c, client) in background.into_iter().enumerate() {
        let (stop, sent) = (stop.clone(), sent_bg.clone());
        tasks.push(tokio::spawn(async move {
            let offset = period.mul_f64(c as f64 / BACKGROUND_CONNECTIONS as f64);
            let mut tick = tokio::time::interval_at(start + offset, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut n = c;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let topic = format!("bench/env-{}", n % ENV_SENSORS);
                n += BACKGROUND_CONNECTIONS;
                let body = format!(
                    r#"{{"temperature":{}.5,"humidity":{},"pm25":{},"noise_db":{}}}"#,
                    20 + n % 10,
                    40 + n % 30,
                    n % 70,
                    50 + n % 10
                );
                if client
                    .publish(topic, QoS::AtLeastOnce, false, body)
                    .await
                    .is_ok()
                {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // Background first, then the alarms into it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut published = HashMap::new();
    let mut tick = tokio::time::interval(ALARM_SPACING);
    for i in 0..alarms {
        tick.tick().await;
        let id = format!("smoke-{i:04}");
        published.insert(id.clone(), Instant::now());
        smoke
            .publish(
                format!("bench/{id}"),
                QoS::AtLeastOnce,
                false,
                r#"{"smoke":true,"temperature":31.5,"battery":90,"tamper":false}"#,
            )
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while arrivals.lock().unwrap().len() < alarms && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let background_s = start.elapsed().as_secs_f64();
    for t in tasks {
        let _ = t.await;
    }
    let got = arrivals.lock().unwrap().clone();
    let mut lat: Vec<f64> = published
        .iter()
        .filter_map(|(id, t0)| got.get(id).map(|t| (*t - *t0).as_secs_f64() * 1000.0))
        .collect();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!(
        "RESULT {} {} {:.3} {:.3} {:.3} {} {:.0}",
        alarms,
        lat.len(),
        pct(0.50),
        pct(0.99),
        lat.last().copied().unwrap_or(f64::NAN),
        sent_bg.load(Ordering::Relaxed),
        sent_bg.load(Ordering::Relaxed) as f64 / background_s
    );
    std::io::stdout().flush().unwrap();
}

async fn hub() {
    let (alarms, rate) = args();
    let dir = tempfile::tempdir().unwrap();
    let (mqtt, hook) = (support::free_port(), support::free_port());
    let mut cfg = format!(
        r#"
[hub]
id = "bench"
data_dir = "{}"

[api]
listen = "127.0.0.1:0"

[mqtt]
broker = "embedded"
listen = "127.0.0.1:{mqtt}"

[[channel]]
id = "hook"
kind = "webhook"
url = "http://127.0.0.1:{hook}/alarm"
secret = "bench-secret"

[[department]]
id = "fire-control"
name = "消防控制室"
channels = ["hook"]

[[route]]
match = {{ category = "fire" }}
departments = ["fire-control"]
"#,
        dir.path().display()
    );
    for i in 0..alarms {
        cfg += &format!(
            "[[device]]\nid = \"smoke-{i:04}\"\nprofile = \"mqtt-smoke-detector\"\ntopic = \"bench/smoke-{i:04}\"\nlocation = {{ building = \"{}号楼\", floor = \"{}F\" }}\n",
            1 + i % 9,
            1 + i % 12
        );
    }
    for i in 0..ENV_SENSORS {
        cfg += &format!(
            "[[device]]\nid = \"env-{i}\"\nprofile = \"mqtt-env-sensor\"\ntopic = \"bench/env-{i}\"\n"
        );
    }
    let loaded = load_str("bench.toml", &cfg, dir.path(), &|_| None).unwrap();
    let app = App::start(&loaded).await.unwrap();
    if let Some(mut s) = app.mqtt_subscribed.clone() {
        tokio::time::timeout(Duration::from_secs(10), s.wait_for(|n| *n > 0))
            .await
            .unwrap()
            .unwrap();
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(std::env::args().skip(1))
        .env("PARKHUB_BENCH_ROLE", "field")
        .env("PARKHUB_BENCH_PORT", mqtt.to_string())
        .env("PARKHUB_BENCH_HOOK", hook.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "GO");
    let result = tokio::task::spawn_blocking(move || lines.next().unwrap().unwrap())
        .await
        .unwrap();
    let _ = child.wait();
    let open = app
        .alarms
        .list(parkhub::alarm::store::Listing::Open, usize::MAX)
        .unwrap()
        .len();
    app.stop(Duration::from_secs(5)).await.unwrap();

    let f: Vec<&str> = result.split_whitespace().collect();
    let (sent, arrived): (usize, usize) = (f[1].parse().unwrap(), f[2].parse().unwrap());
    println!(
        "Alarm latency: MQTT publish of smoke=true → webhook request at a local receiver, {sent} alarms {} ms apart",
        ALARM_SPACING.as_millis()
    );
    println!(
        "  background                     {} messages at {} msg/s ({ENV_SENSORS} environment sensors, QoS 1; offered {rate})",
        f[6], f[7]
    );
    println!(
        "  p50                            {} ms (target <= 10 ms)",
        f[3]
    );
    println!(
        "  p99                            {} ms (target <= 50 ms)",
        f[4]
    );
    println!("  worst                          {} ms", f[5]);
    let ms = |s: &str| s.parse::<f64>().unwrap();
    figure(
        "alarm: publish to webhook under load, p50",
        ms(f[3]),
        2,
        "ms",
        Target::AtMost(10.0),
    );
    figure(
        "alarm: publish to webhook under load, p99",
        ms(f[4]),
        2,
        "ms",
        Target::AtMost(50.0),
    );
    figure(
        "alarm: publish to webhook under load, worst",
        ms(f[5]),
        2,
        "ms",
        Target::None,
    );
    figure(
        "alarm: alarms lost",
        (sent - arrived) as f64,
        0,
        "alarms",
        Target::AtMost(0.0),
    );
    println!(
        "  alarms arrived / raised        {arrived} / {sent} (lost: {}); stored open: {open}",
        sent - arrived
    );
    assert_eq!(arrived, sent, "every alarm arrived");
}
