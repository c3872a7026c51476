//! End-to-end MQTT: publishers → the hub's embedded broker → the hub → stored readings.
//!
//! 2 000 devices publish QoS 1 environment payloads (four points) for 60 s at a fixed offered
//! rate, from a child process, through 40 connections (gateways, 50 devices each) by default.
//! Prints the rate at which messages became stored readings, whether any was lost, and the
//! hub's peak RSS (the hub process holds the broker, the client, decoding and the writer).
//!
//!     cargo bench --bench mqtt [-- RATE SECONDS]        (default 50000 msg/s for 60 s)
//!     PARKHUB_BENCH_CONNECTIONS=2000 cargo bench …      (every device on its own connection)
//!
//! Under `cargo test` (no `--bench` argument) it runs a small smoke version.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parkhub::app::App;
use parkhub::config::load_str;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

mod support;
use support::{figure, Target};

fn connections(devices: usize) -> usize {
    std::env::var("PARKHUB_BENCH_CONNECTIONS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(40)
        .clamp(1, devices)
}

fn args() -> (usize, u64, u64) {
    let bench = std::env::args().any(|a| a == "--bench");
    let nums: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let devices = std::env::var("PARKHUB_BENCH_DEVICES")
        .ok()
        .and_then(|d| d.parse().ok());
    if bench {
        (
            devices.unwrap_or(2000),
            nums.first().copied().unwrap_or(50_000),
            nums.get(1).copied().unwrap_or(60),
        )
    } else {
        (devices.unwrap_or(50), 1000, 3)
    }
}

fn main() {
    // As the hub's binary does: the peak RSS measured here is the hub's.
    parkhub::memory::limit_malloc_arenas();
    // Warnings to stderr: when messages are lost, rumqttd says why ("Read cursor start jumped":
    // the hub fell more than the broker's log behind).
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn,rumqttd::segments=off")
        .with_writer(std::io::stderr)
        .try_init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if std::env::var("PARKHUB_BENCH_ROLE").as_deref() == Ok("publishers") {
        rt.block_on(publishers());
    } else {
        rt.block_on(hub());
    }
}

/// The child: every connection connects, then publishes for its devices in turn at its share
/// of the rate; prints the number of messages the broker acknowledged.
async fn publishers() {
    let port: u16 = std::env::var("PARKHUB_BENCH_PORT")
        .unwrap()
        .parse()
        .unwrap();
    let (devices, rate, seconds) = args();
    let conns = connections(devices);
    let acked = Arc::new(AtomicU64::new(0));
    let period = Duration::from_secs_f64(conns as f64 / rate as f64);
    let mut clients = Vec::new();
    for c in 0..conns {
        let mut o = MqttOptions::new(format!("gw-{c}"), "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(60));
        o.set_inflight(200);
        let (client, mut eventloop) = AsyncClient::new(o, 256);
        let acked = acked.clone();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("publisher gw-{c}: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        clients.push(client);
    }
    // Everyone connected before the clock starts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!("GO");
    std::io::stdout().flush().unwrap();
    let start = tokio::time::Instant::now();
    let end = start + Duration::from_secs(seconds);
    let sent = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (c, client) in clients.into_iter().enumerate() {
        let sent = sent.clone();
        let mine: Vec<String> = (0..devices)
            .filter(|i| i % conns == c)
            .map(|i| format!("bench/dev-{i}"))
            .collect();
        tasks.push(tokio::spawn(async move {
            // Spread the connections over one period so the broker sees a steady stream.
            let offset = period.mul_f64(c as f64 / conns as f64);
            let mut tick = tokio::time::interval_at(start + offset, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut n = 0u64;
            while tick.tick().await < end {
                let topic = &mine[(n as usize) % mine.len()];
                n += 1;
                let body = format!(
                    r#"{{"temperature":{}.5,"humidity":{},"pm25":{},"noise_db":{}}}"#,
                    20 + n % 10,
                    40 + n % 30,
                    n % 90,
                    50 + n % 20
                );
                if client
                    .publish(topic.clone(), QoS::AtLeastOnce, false, body)
                    .await
                    .is_ok()
                {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let publishing = start.elapsed().as_secs_f64();
    // The last acknowledgements.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while acked.load(Ordering::Relaxed) < sent.load(Ordering::Relaxed)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "SENT {} ACKED {} IN {publishing:.2}",
        sent.load(Ordering::Relaxed),
        acked.load(Ordering::Relaxed)
    );
    std::io::stdout().flush().unwrap();
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| {
                    l.strip_prefix("VmHWM:")
                        .map(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
                })
                .flatten()
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn hub() {
    let (devices, rate, seconds) = args();
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let mut cfg = format!(
        "[hub]\nid = \"bench\"\ndata_dir = \"{}\"\n[api]\nlisten = \"127.0.0.1:0\"\n[mqtt]\nbroker = \"embedded\"\nlisten = \"127.0.0.1:{port}\"\n",
        dir.path().display()
    );
    for i in 0..devices {
        cfg += &format!("[[device]]\nid = \"dev-{i}\"\nprofile = \"mqtt-env-sensor\"\ntopic = \"bench/dev-{i}\"\n");
    }
    let loaded = load_str("bench.toml", &cfg, dir.path(), &|_| None).unwrap();
    let app = App::start(&loaded).await.unwrap();
    // Give the hub's client time to subscribe.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(std::env::args().skip(1))
        .env("PARKHUB_BENCH_ROLE", "publishers")
        .env("PARKHUB_BENCH_PORT", port.to_string())
        .env("PARKHUB_BENCH_DEVICES", devices.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Every message carries four points. Counted from the hub's readings total, an atomic:
    // summing the devices' statistics would copy all 2 000 devices under the lock that
    // ingest takes, fifty times a second, and slow the very drain being measured.
    let messages = |app: &App| app.hub.readings_total() / 4;
    assert_eq!(lines.next().unwrap().unwrap(), "GO");
    let before = messages(&app);
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let summary = tokio::task::spawn_blocking(move || lines.next().unwrap().unwrap())
        .await
        .unwrap();
    let _ = child.wait();
    let parts: Vec<&str> = summary.split_whitespace().collect();
    let sent: u64 = parts[1].parse().unwrap();
    let acked: u64 = parts[3].parse().unwrap();
    // Everything acknowledged by the broker must reach the hub.
    let deadline = Instant::now() + Duration::from_secs(60);
    while messages(&app) - before < acked && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let taken = messages(&app) - before;
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    app.writer.flush().await.unwrap();
    let stored = app.writer.stats().written.load(Ordering::Relaxed);
    let rejected: u64 = app.hub.devices().iter().map(|d| d.stats.rejected).sum();
    let rss = peak_rss_mb();
    app.stop(Duration::from_secs(5)).await.unwrap();

    println!(
        "MQTT end to end: {devices} devices on {} connections, QoS 1, offered {rate} msg/s for {seconds} s through the embedded broker",
        connections(devices)
    );
    println!("  messages published / acked     {sent} / {acked}");
    println!(
        "  messages taken in by the hub   {taken} (lost: {})",
        acked.saturating_sub(taken)
    );
    println!(
        "  rate, publish to taken in      {:.0} msg/s (target >= 50000 sustained)",
        taken as f64 / elapsed
    );
    println!(
        "  readings stored                {stored} ({} points a message, {rejected} refused)",
        if taken > 0 { stored / taken.max(1) } else { 0 }
    );
    println!(
        "  hub CPU                        {:.0} % of one core (broker, client, decoding, history)",
        100.0 * cpu / elapsed
    );
    println!("  hub peak RSS                   {rss:.1} MB (target <= 60 MB)");
    figure(
        "mqtt: publish to taken in, sustained",
        taken as f64 / elapsed,
        0,
        "msg/s",
        Target::AtLeast(50_000.0),
    );
    figure(
        "mqtt: messages lost",
        acked.saturating_sub(taken) as f64,
        0,
        "messages",
        Target::AtMost(0.0),
    );
    figure(
        "mqtt: hub CPU",
        100.0 * cpu / elapsed,
        0,
        "% of a core",
        Target::None,
    );
    figure("mqtt: hub peak RSS", rss, 1, "MB", Target::AtMost(60.0));
    assert_eq!(acked, sent, "every publish acknowledged");
    assert_eq!(taken, acked, "nothing lost");
}
