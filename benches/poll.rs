//! Poll efficiency: 200 simulated meters polled every second on 4 buses.
//!
//! Prints the requests sent per poll cycle against the fewest the register maps allow (target
//! ratio 1.00) and the hub's CPU use in % of one core (target ≤ 10 %). The meters run in a child
//! process so that only the hub's own work is measured; the hub runs whole, history included.
//!
//!     cargo bench --bench poll [-- SECONDS]
//!
//! Under `cargo test` (no `--bench` argument) it runs a two-second smoke version.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use parkhub::app::App;
use parkhub::config::load_str;
use parkhub::modbus::plan::min_requests_of;
use parkhub::modbus::sim::Simulator;
use parkhub::profile::ProfileRegistry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod support;

const BUSES: usize = 4;
const PROFILES: &[&str] = &[
    "chint-dtsu666",
    "eastron-sdm630",
    "eastron-sdm120",
    "chint-ddsu666",
    "acrel-adw300",
    "tuf-2000m",
    "xintai-water",
];

fn profile_of(i: usize) -> &'static str {
    PROFILES[i % PROFILES.len()]
}

/// `cargo bench` passes `--bench`; `cargo test` does not.
fn benchmarking() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn meters_per_bus() -> usize {
    std::env::var("PARKHUB_BENCH_METERS")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(if benchmarking() { 50 } else { 3 })
}

fn main() {
    if std::env::var("PARKHUB_BENCH_ROLE").as_deref() == Ok("meters") {
        return meters();
    }
    let seconds: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(if benchmarking() { 30 } else { 2 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(hub(seconds, meters_per_bus()));
}

/// The child: 4 Modbus TCP servers with 50 meters each; prints their ports, runs until stdin closes.
fn meters() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let reg = ProfileRegistry::bundled().unwrap();
        let stop = CancellationToken::new();
        let mut ports = Vec::new();
        for _ in 0..BUSES {
            let sim = Simulator::new();
            for m in 0..meters_per_bus() {
                sim.add(m as u8 + 1, reg.get(profile_of(m)).unwrap().clone());
            }
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            ports.push(listener.local_addr().unwrap().port().to_string());
            tokio::spawn(sim.serve_tcp(listener, stop.clone()));
        }
        println!("{}", ports.join(" "));
        std::io::stdout().flush().unwrap();
        tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        })
        .await
        .unwrap();
        stop.cancel();
    });
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

async fn hub(seconds: u64, per_bus: usize) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("PARKHUB_BENCH_ROLE", "meters")
        .env("PARKHUB_BENCH_METERS", per_bus.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ports = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut ports)
        .unwrap();
    let ports: Vec<&str> = ports.split_whitespace().collect();

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = format!(
        "[hub]\nid = \"bench\"\ndata_dir = \"{}\"\n[api]\nlisten = \"127.0.0.1:0\"\n",
        dir.path().display()
    );
    for (b, port) in ports.iter().enumerate() {
        cfg += &format!("[[bus]]\nid = \"bus{b}\"\nkind = \"tcp\"\naddress = \"127.0.0.1:{port}\"\ntimeout_ms = 1000\n");
        for m in 0..per_bus {
            cfg += &format!(
                "[[device]]\nid = \"m{b}-{m}\"\nprofile = \"{}\"\nbus = \"bus{b}\"\nunit = {}\npoll_interval_s = 1\n",
                profile_of(m),
                m + 1
            );
        }
    }
    let loaded = load_str("bench.toml", &cfg, dir.path(), &|_| None).unwrap();
    let minimum: usize = loaded
        .device_profiles
        .values()
        .map(|p| min_requests_of(p))
        .sum();
    let points: usize = loaded
        .device_profiles
        .values()
        .map(|p| p.visible_points().count())
        .sum();

    let app = App::start(&loaded).await.unwrap();
    // Warm up: connections open, the first cycles settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let totals = |app: &App| {
        app.hub
            .devices()
            .iter()
            .fold((0u64, 0u64, 0u64), |(r, p, e), d| {
                (r + d.stats.requests, p + d.stats.polls, e + d.stats.errors)
            })
    };
    let (r0, p0, e0) = totals(&app);
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let (r1, p1, e1) = totals(&app);
    let stored = app
        .writer
        .stats()
        .written
        .load(std::sync::atomic::Ordering::Relaxed);
    app.stop(Duration::from_secs(5)).await.unwrap();
    drop(child.stdin.take());
    let _ = child.wait();

    let polls = (p1 - p0) as f64;
    let requests = (r1 - r0) as f64;
    let devices = (BUSES * per_bus) as f64;
    let cycles = polls / devices;
    let per_cycle = requests / cycles;
    println!(
        "poll efficiency: {} meters ({} points) on {BUSES} buses, every 1 s, {wall:.1} s measured",
        devices as usize, points
    );
    println!(
        "  poll cycles completed          {cycles:.1} (of {:.1} due)",
        wall
    );
    println!("  requests per poll cycle        {per_cycle:.1} (minimum {minimum})");
    println!(
        "  ratio to the minimum           {:.2} (target 1.00)",
        per_cycle / minimum as f64
    );
    println!("  errors                         {}", e1 - e0);
    assert_eq!(e1 - e0, 0, "no poll may fail");
    println!(
        "  hub CPU                        {:.1} % of one core (target <= 10 %)",
        100.0 * cpu / wall
    );
    println!("  readings stored                {stored}");
    use support::{figure, Target};
    figure(
        "poll: requests per cycle / minimum",
        per_cycle / minimum as f64,
        2,
        "ratio",
        Target::AtMost(1.0),
    );
    figure(
        "poll: errors",
        (e1 - e0) as f64,
        0,
        "requests",
        Target::AtMost(0.0),
    );
    figure(
        "poll: hub CPU, 200 meters at 1 s",
        100.0 * cpu / wall,
        1,
        "% of a core",
        Target::AtMost(10.0),
    );
}
