//! The hub on a box: cold start to READY (target ≤ 300 ms), resident memory idle and polling
//! 200 meters (targets ≤ 15 MB and ≤ 40 MB), and the size of the binaries that ship.
//!
//! The hub runs as its own process (`parkhub run`: the shipped build, `target/dist/parkhub`,
//! when `./scripts/package` has made it, else the release build) and tells the benchmark
//! it is ready the way it tells systemd: `READY=1` on a `NOTIFY_SOCKET` the benchmark binds.
//! The 200 meters (4 Modbus TCP servers of 50) are simulated in this process. Binary sizes are
//! those `./scripts/cross` and `./scripts/package` leave in `target/*/dist/`.
//!
//!     cargo bench --bench startup
//!
//! Under `cargo test` (no `--bench` argument) it runs a small smoke version.

use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use parkhub::modbus::sim::Simulator;
use parkhub::profile::ProfileRegistry;
use tokio_util::sync::CancellationToken;

mod support;
use support::{figure, Target};

struct Size {
    starts: usize,
    meters_per_bus: usize,
    settle: Duration,
}

fn size() -> Size {
    if std::env::args().any(|a| a == "--bench") {
        Size {
            starts: 10,
            meters_per_bus: 50,
            settle: Duration::from_secs(30),
        }
    } else {
        Size {
            starts: 1,
            meters_per_bus: 2,
            settle: Duration::from_secs(2),
        }
    }
}

struct Hub(Child);

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the hub on `config`; returns it and how long it took to say READY=1.
fn start(config: &std::path::Path, dir: &std::path::Path) -> (Hub, Duration) {
    let socket = dir.join(format!("notify-{}.sock", support::free_port()));
    let sock = UnixDatagram::bind(&socket).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let t0 = Instant::now();
    let hub = Hub(Command::new(binary())
        .args(["run", "--config"])
        .arg(config)
        .env("NOTIFY_SOCKET", &socket)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the hub starts"));
    let mut buf = [0u8; 512];
    loop {
        let n = sock.recv(&mut buf).expect("READY=1 within 30 s");
        if String::from_utf8_lossy(&buf[..n]).contains("READY=1") {
            return (hub, t0.elapsed());
        }
    }
}

/// The binary measured: the one that ships when it is built (a stripped binary maps fewer
/// pages, and mapped pages count in RSS), else the benchmark's own release build.
fn binary() -> std::path::PathBuf {
    let dist = target_dir().join("dist/parkhub");
    if dist.exists() {
        dist
    } else {
        env!("CARGO_BIN_EXE_parkhub").into()
    }
}

/// Where cargo builds: `CARGO_TARGET_DIR` when set (a shared target directory), else `target/`.
fn target_dir() -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => root.join(d),
        None => root.join("target"),
    }
}

fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let size = size();
    let dir = tempfile::tempdir().unwrap();
    let base = |extra: &str| {
        format!(
            "[hub]\nid = \"bench\"\ndata_dir = \"{}\"\n[api]\nlisten = \"127.0.0.1:{}\"\n{extra}",
            dir.path().join("data").display(),
            support::free_port()
        )
    };

    // Cold start, nothing configured but the hub itself: the stores are opened (and made, the
    // first time), the API listens.
    let idle = dir.path().join("idle.toml");
    std::fs::write(&idle, base("")).unwrap();
    let mut starts = Vec::new();
    let mut idle_rss = 0.0;
    for i in 0..size.starts {
        let (hub, ready) = start(&idle, dir.path());
        starts.push(ready);
        if i == 0 {
            std::thread::sleep(size.settle.min(Duration::from_secs(5)));
            idle_rss = rss_mb(hub.0.id());
        }
    }
    starts.sort();

    // 200 meters on 4 simulated gateways, polled every 5 s.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let reg = ProfileRegistry::bundled().unwrap();
    let mut buses = String::new();
    let meters = [
        "chint-dtsu666",
        "eastron-sdm630",
        "acrel-adw300",
        "tuf-2000m",
    ];
    for b in 0..4 {
        let sim = Simulator::new();
        for m in 0..size.meters_per_bus {
            sim.add(
                m as u8 + 1,
                reg.get(meters[m % meters.len()]).unwrap().clone(),
            );
        }
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        rt.spawn(sim.serve_tcp(listener, stop.clone()));
        buses += &format!(
            "[[bus]]\nid = \"gw-{b}\"\nkind = \"tcp\"\naddress = \"{addr}\"\ntimeout_ms = 500\n"
        );
        for m in 0..size.meters_per_bus {
            buses += &format!(
                "[[device]]\nid = \"m-{b}-{m:02}\"\nprofile = \"{}\"\nbus = \"gw-{b}\"\nunit = {}\npoll_interval_s = 5\n",
                meters[m % meters.len()],
                m + 1
            );
        }
    }
    let polled = dir.path().join("polled.toml");
    std::fs::write(&polled, base(&buses)).unwrap();
    let (hub, polled_ready) = start(&polled, dir.path());
    std::thread::sleep(size.settle);
    let polled_rss = rss_mb(hub.0.id());
    drop(hub);
    stop.cancel();

    println!("measured: {}", binary().display());
    println!(
        "start to READY=1 ({} starts): median {:.0} ms, worst {:.0} ms (target ≤ 300 ms); with {} meters {:.0} ms",
        starts.len(),
        percentile(&starts, 0.5).as_secs_f64() * 1000.0,
        percentile(&starts, 1.0).as_secs_f64() * 1000.0,
        4 * size.meters_per_bus,
        polled_ready.as_secs_f64() * 1000.0
    );
    println!("RSS idle {idle_rss:.1} MB (target ≤ 15 MB)");
    let median_ms = percentile(&starts, 0.5).as_secs_f64() * 1000.0;
    figure(
        "startup: start to READY=1, median",
        median_ms,
        0,
        "ms",
        Target::AtMost(300.0),
    );
    figure("startup: RSS idle", idle_rss, 1, "MB", Target::AtMost(15.0));
    figure(
        &format!("startup: RSS polling {} meters", 4 * size.meters_per_bus),
        polled_rss,
        1,
        "MB",
        Target::AtMost(40.0),
    );
    println!(
        "RSS polling {} meters every 5 s, after {} s: {polled_rss:.1} MB (target ≤ 40 MB)",
        4 * size.meters_per_bus,
        size.settle.as_secs()
    );
    for target in [
        "x86_64-unknown-linux-gnu",
        "aarch64-unknown-linux-gnu",
        "armv7-unknown-linux-gnueabihf",
    ] {
        let path = if target.starts_with("x86_64") {
            target_dir().join("dist/parkhub")
        } else {
            target_dir().join(format!("{target}/dist/parkhub"))
        };
        match std::fs::metadata(&path) {
            Ok(m) => {
                println!(
                    "binary {target}: {:.1} MB ({})",
                    m.len() as f64 / 1_048_576.0,
                    path.display()
                );
                figure(
                    &format!("startup: binary size {target}"),
                    m.len() as f64 / 1_048_576.0,
                    1,
                    "MB",
                    Target::AtMost(15.0),
                );
            }
            Err(_) => println!("binary {target}: not built (./scripts/package builds it)"),
        }
    }
    assert!(
        idle_rss > 0.0 && polled_rss > 0.0,
        "the hub's memory was read"
    );
}
