//! 500 EV chargers on one hub: every charger connected at once, each charging on its
//! connector and sending MeterValues every 10 s (50 messages a second in all, each with six
//! measurands). Targets: the hub's CPU ≤ 10 % of one core, its RSS ≤ 80 MB.
//!
//! The hub runs as its own process (`parkhub run`, the release build), so its CPU time and
//! memory are its own; the simulated chargers (`parkhub::ocpp::sim`) run in this process.
//! CPU is read from `/proc/<pid>/stat` over a measured minute after a warm-up.
//!
//!     cargo bench --bench ocpp
//!
//! Under `cargo test` (no `--bench` argument) it runs a small smoke version.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use parkhub::ocpp::sim::{SimCharger, SimConfig, SimControl};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

mod support;
use support::{figure, Target};

const TOKEN: &str = "bench-token-7e2a";

struct Size {
    chargers: usize,
    meter_interval: Duration,
    warm_up: Duration,
    measure: Duration,
}

fn size() -> Size {
    if std::env::args().any(|a| a == "--bench") {
        Size {
            chargers: 500,
            meter_interval: Duration::from_secs(10),
            warm_up: Duration::from_secs(20),
            measure: Duration::from_secs(60),
        }
    } else {
        Size {
            chargers: 5,
            meter_interval: Duration::from_secs(1),
            warm_up: Duration::from_secs(1),
            measure: Duration::from_secs(3),
        }
    }
}

fn config(dir: &std::path::Path, port: u16, chargers: usize) -> String {
    let mut text = format!(
        r#"[hub]
id = "bench"
data_dir = "{}"
[api]
listen = "127.0.0.1:{port}"
[[api.token]]
name = "bench"
role = "viewer"
sha256 = "{}"
[ocpp]
heartbeat_interval_s = 60
"#,
        dir.join("data").display(),
        hex::encode(Sha256::digest(TOKEN.as_bytes()))
    );
    for i in 0..chargers {
        text += &format!(
            "[[device]]\nid = \"cp-{i:03}\"\nprofile = \"ocpp16-charger\"\ncharge_point_id = \"CP{i:03}\"\n"
        );
    }
    text
}

/// Seconds of CPU the process has used (user + system).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which sits in parentheses and may hold spaces.
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / clock_ticks()
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`); 100 on every Linux this runs on.
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Resident and peak memory of the process, in MB.
fn memory_mb(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0)
}

struct Hub(Child);

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn get(client: &reqwest::Client, url: &str) -> serde_json::Value {
    match client.get(url).bearer_auth(TOKEN).send().await {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => serde_json::Value::Null,
    }
}

/// Chargers connected, and their ports charging.
async fn charging(client: &reqwest::Client, base: &str) -> (usize, usize) {
    let list = get(client, &format!("{base}/api/v1/chargers")).await;
    let list = list.as_array().cloned().unwrap_or_default();
    let connected = list.iter().filter(|c| c["connected"] == true).count();
    let ports = list
        .iter()
        .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
        .filter(|p| p["status"] == "Charging")
        .count();
    (connected, ports)
}

/// Messages the hub has taken from all chargers.
async fn messages(client: &reqwest::Client, base: &str) -> u64 {
    let all = get(client, &format!("{base}/api/v1/devices")).await;
    all.as_array()
        .map(|list| {
            list.iter()
                .filter_map(|d| d["stats"]["messages"].as_u64())
                .sum()
        })
        .unwrap_or(0)
}

fn main() {
    let size = size();
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let path = dir.path().join("bench.toml");
    std::fs::write(&path, config(dir.path(), port, size.chargers)).unwrap();
    let hub = Hub(Command::new(env!("CARGO_BIN_EXE_parkhub"))
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the hub starts"));
    let pid = hub.0.id();
    let base = format!("http://127.0.0.1:{port}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = support::plain_client(4);
        let up = Instant::now();
        while get(&client, &format!("{base}/api/v1/health")).await["status"] != "ok" {
            assert!(up.elapsed() < Duration::from_secs(30), "the hub did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let stop = CancellationToken::new();
        let mut controls: Vec<SimControl> = Vec::new();
        for i in 0..size.chargers {
            let (charger, control) = SimCharger::new(SimConfig {
                url: format!("ws://127.0.0.1:{port}/ocpp"),
                charge_point_id: format!("CP{i:03}"),
                password: None,
                connectors: 1,
                meter_interval: size.meter_interval,
                max_power_w: 7000.0,
                vendor: "bench".into(),
                model: "AC 7kW".into(),
                seed: i as u64,
                autoplay: false,
            });
            tokio::spawn(charger.run(stop.clone()));
            controls.push(control);
        }
        let connecting = Instant::now();
        loop {
            let (connected, _) = charging(&client, &base).await;
            if connected == size.chargers {
                break;
            }
            assert!(
                connecting.elapsed() < Duration::from_secs(120),
                "only {connected} of {} chargers connected",
                size.chargers
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let connect_time = connecting.elapsed();
        for (i, c) in controls.iter().enumerate() {
            c.start(1, &format!("TAG{i:05}")).await;
        }
        let starting = Instant::now();
        loop {
            let (_, ports) = charging(&client, &base).await;
            if ports == size.chargers {
                break;
            }
            assert!(
                starting.elapsed() < Duration::from_secs(120),
                "only {ports} of {} connectors charging",
                size.chargers
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        tokio::time::sleep(size.warm_up).await;
        let (cpu0, msgs0, t0) = (cpu_seconds(pid), messages(&client, &base).await, Instant::now());
        tokio::time::sleep(size.measure).await;
        let (cpu1, msgs1, elapsed) = (cpu_seconds(pid), messages(&client, &base).await, t0.elapsed());
        let (rss, peak) = memory_mb(pid);
        let (connected, ports) = charging(&client, &base).await;
        stop.cancel();

        let cpu = (cpu1 - cpu0) / elapsed.as_secs_f64() * 100.0;
        let rate = (msgs1 - msgs0) as f64 / elapsed.as_secs_f64();
        println!(
            "ocpp: {} chargers connected in {:.1} s, {} charging; MeterValues every {} s",
            size.chargers,
            connect_time.as_secs_f64(),
            ports,
            size.meter_interval.as_secs_f64()
        );
        println!(
            "  hub CPU {cpu:.1} % of one core over {:.0} s (target ≤ 10 %), RSS {rss:.1} MB (peak {peak:.1} MB, target ≤ 80 MB)",
            elapsed.as_secs_f64()
        );
        println!("  messages taken from the chargers: {rate:.1}/s");
        let n = size.chargers;
        figure(&format!("ocpp: hub CPU, {n} chargers"), cpu, 1, "% of a core", Target::AtMost(10.0));
        figure(&format!("ocpp: hub RSS, {n} chargers"), rss, 1, "MB", Target::AtMost(80.0));
        figure(&format!("ocpp: hub peak RSS, {n} chargers"), peak, 1, "MB", Target::None);
        assert_eq!(connected, size.chargers, "every charger still connected");
        assert!(msgs1 > msgs0, "the hub took no messages while measured");
    });
    drop(hub);
}
