//! The hub under systemd's `Type=notify`, without systemd: the binary is given a
//! `NOTIFY_SOCKET` of the test's own (a Unix datagram socket, as systemd's is) and
//! `WATCHDOG_USEC`, and the test reads what it says there.

use std::process::Stdio;
use std::time::Duration;

use tokio::net::UnixDatagram;

async fn next(sock: &UnixDatagram, within: Duration) -> String {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(within, sock.recv(&mut buf))
        .await
        .expect("a notification in time")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// A hub config with nothing but the hub, plus `extra`.
fn hub_config(dir: &std::path::Path, extra: &str) -> String {
    format!(
        "[hub]\nid = \"svc\"\ndata_dir = \"{}\"\n[api]\nlisten = \"127.0.0.1:0\"\n{extra}",
        dir.join("data").display()
    )
}

/// `parkhub run` as systemd starts it: its notification socket, a watchdog of 1 s (pings every
/// 0.5 s, half the interval, as systemd expects).
fn run_as_service(config: &std::path::Path, socket: &std::path::Path) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_parkhub"))
        .args(["run", "--config"])
        .arg(config)
        .env("NOTIFY_SOCKET", socket)
        .env("WATCHDOG_USEC", "1000000")
        .env_remove("WATCHDOG_PID")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_says_ready_once_up_pings_the_watchdog_and_says_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&socket).unwrap();
    let config = dir.path().join("hub.toml");
    std::fs::write(&config, hub_config(dir.path(), "")).unwrap();
    let mut child = run_as_service(&config, &socket);

    let first = next(&sock, Duration::from_secs(20)).await;
    assert!(first.contains("READY=1"), "{first:?}");
    assert!(
        first.contains("STATUS=0 devices; API on 127.0.0.1:"),
        "{first:?}"
    );
    // Three pings within two seconds: the alarm engine answers each time.
    for _ in 0..3 {
        let ping = next(&sock, Duration::from_secs(2)).await;
        assert_eq!(ping.trim(), "WATCHDOG=1");
    }

    let pid = child.id().unwrap() as i32;
    // SIGTERM, as `systemctl stop` sends.
    assert_eq!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .code(),
        Some(0)
    );
    let mut said = String::new();
    while !said.contains("STOPPING=1") {
        said = next(&sock, Duration::from_secs(5)).await;
    }
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the hub stops within 10 s")
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn the_unit_file_is_notify_with_a_watchdog_and_hardened_to_an_exposure_of_at_most_2_5() {
    let unit = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/parkhub.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    for line in [
        "Type=notify",
        "WatchdogSec=30",
        "Restart=on-failure",
        "User=parkhub",
        "StateDirectory=parkhub",
        "SupplementaryGroups=dialout gpio",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in the unit");
    }
    // systemd's own scoring, offline (no running systemd needed).
    let out = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze (Debian's systemd package; ./scripts/test installs it)");
    let report = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = report
        .lines()
        .find_map(|l| l.split("exposure level for parkhub.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    assert!(exposure <= 2.5, "exposure {exposure}:\n{report}");
}

fn sighup(child: &tokio::process::Child) {
    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_refuses_a_bad_config_and_keeps_running_and_restarts_for_a_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&socket).unwrap();
    let config = dir.path().join("hub.toml");
    let good = |extra: &str| hub_config(dir.path(), extra);
    std::fs::write(&config, good("")).unwrap();
    let spawn = || run_as_service(&config, &socket);
    let mut child = spawn();
    let ready = next(&sock, Duration::from_secs(20)).await;
    assert!(ready.contains("STATUS=0 devices"), "{ready:?}");

    // A mistake in the new config: refused, said, and the hub runs on (it still pings).
    std::fs::write(
        &config,
        good("[[device]]\nid = \"em-1\"\nprofile = \"no-such-meter\"\n"),
    )
    .unwrap();
    sighup(&child);
    let mut said = String::new();
    while !said.contains("STATUS=config reload refused") {
        said = next(&sock, Duration::from_secs(5)).await;
    }
    assert!(said.contains("unknown profile `no-such-meter`"), "{said:?}");
    assert_eq!(
        next(&sock, Duration::from_secs(2)).await.trim(),
        "WATCHDOG=1"
    );
    assert!(child.try_wait().unwrap().is_none(), "still running");

    // A good one: a clean stop, and the exit status that has systemd start it again.
    std::fs::write(
        &config,
        good("[[bus]]\nid = \"gw\"\nkind = \"tcp\"\naddress = \"127.0.0.1:1\"\n[[device]]\nid = \"em-1\"\nprofile = \"chint-dtsu666\"\nbus = \"gw\"\n"),
    )
    .unwrap();
    sighup(&child);
    while !said.contains("STOPPING=1") {
        said = next(&sock, Duration::from_secs(5)).await;
    }
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the hub stops within 10 s")
        .unwrap();
    assert_eq!(status.code(), Some(75));

    // What systemd does next: the same command, now with the device.
    let _child = spawn();
    let mut ready = String::new();
    while !ready.contains("READY=1") {
        ready = next(&sock, Duration::from_secs(20)).await;
    }
    assert!(ready.contains("STATUS=1 devices"), "{ready:?}");
}
