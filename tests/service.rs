//! The hub under systemd's `Type=notify`, without systemd: the binary is given a
//! `NOTIFY_SOCKET` of the test's own (a Unix datagram socket, as systemd's is) and
//! `WATCHDOG_USEC`, and the test reads what it says there.

use std::process::Stdio;
use std::time::Duration;

use tokio::net::UnixDatagram;

mod common;

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
async fn sighup_refuses_a_bad_config_and_reloads_a_good_one_in_place_keeping_alarms_and_history() {
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

    // A good one, adding a smoke detector on the embedded broker: the hub stops cleanly and
    // starts again in place, as the same process (RELOADING=1, then READY=1), with it.
    let pid = child.id();
    let mqtt_port = common::free_port();
    let with_smoke = |extra: &str| {
        good(&format!(
            "[mqtt]\nbroker = \"embedded\"\nlisten = \"127.0.0.1:{mqtt_port}\"\n\
             [[device]]\nid = \"smoke-1\"\nprofile = \"mqtt-smoke-detector\"\ntopic = \"park/smoke-1\"\n{extra}"
        ))
    };
    std::fs::write(&config, with_smoke("")).unwrap();
    sighup(&child);
    let said = reload_said(&sock).await;
    assert!(
        said.last().unwrap().contains("STATUS=1 devices"),
        "{said:?}"
    );
    assert!(child.try_wait().unwrap().is_none(), "still running");
    assert_eq!(child.id(), pid, "the same process");

    // Smoke: a fire alarm, and the reading in history.
    let mut smoke = common::MqttDevice::connect(mqtt_port, "smoke-1", None, None)
        .await
        .expect("the new config's broker takes the sensor");
    smoke
        .publish("park/smoke-1", r#"{"smoke":true,"battery":90}"#)
        .await;
    let alarms_db = dir.path().join("data").join(parkhub::alarm::store::DB_FILE);
    let history = dir.path().join("data").join(parkhub::store::DB_FILE);
    let smoke_history = || {
        let h = parkhub::store::History::open(&history, chrono_tz::Asia::Shanghai).unwrap();
        h.series("smoke-1", "battery")
            .unwrap()
            .map(|s| h.raw(&s, 0, i64::MAX / 2).unwrap())
            .unwrap_or_default()
    };
    let open_alarms = || {
        parkhub::alarm::store::AlarmStore::open(&alarms_db)
            .unwrap()
            .list(parkhub::alarm::store::Listing::Open, 10)
            .unwrap()
    };
    common::wait_until(Duration::from_secs(10), "the smoke alarm", || {
        !open_alarms().is_empty()
    })
    .await;
    let raised = open_alarms();
    smoke.vanish();
    common::wait_until(Duration::from_secs(10), "the reading in history", || {
        smoke_history().len() == 1
    })
    .await;

    // Another device, another reload: the alarm, still waiting for someone, is as it was, and
    // the broker of the new image takes the sensor again.
    std::fs::write(
        &config,
        with_smoke("[[bus]]\nid = \"gw\"\nkind = \"tcp\"\naddress = \"127.0.0.1:1\"\n[[device]]\nid = \"em-1\"\nprofile = \"chint-dtsu666\"\nbus = \"gw\"\n"),
    )
    .unwrap();
    sighup(&child);
    let said = reload_said(&sock).await;
    assert!(
        said.last().unwrap().contains("STATUS=2 devices"),
        "{said:?}"
    );
    assert_eq!(child.id(), pid, "the same process");
    let kept = open_alarms();
    assert_eq!(kept.len(), 1, "{kept:#?}");
    assert_eq!(
        (kept[0].id, kept[0].state, kept[0].raised_at),
        (raised[0].id, raised[0].state, raised[0].raised_at)
    );
    let mut again = common::MqttDevice::connect(mqtt_port, "smoke-1", None, None)
        .await
        .expect("the broker is back after the reload");
    again
        .publish("park/smoke-1", r#"{"smoke":false,"battery":90}"#)
        .await;
    common::wait_until(Duration::from_secs(10), "both readings in history", || {
        smoke_history().len() == 2
    })
    .await;

    // SIGTERM after all that: an ordinary stop.
    let term = std::process::Command::new("kill")
        .arg(child.id().unwrap().to_string())
        .status()
        .unwrap();
    assert!(term.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the hub stops within 10 s")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// What the hub tells systemd across a reload, up to its next READY=1: it must say RELOADING=1
/// first and never STOPPING=1 (which would have systemd count the service as going away).
async fn reload_said(sock: &UnixDatagram) -> Vec<String> {
    let mut said: Vec<String> = Vec::new();
    while !said.last().is_some_and(|m| m.contains("READY=1")) {
        said.push(next(sock, Duration::from_secs(20)).await);
    }
    let reloading = said.iter().position(|m| m.contains("RELOADING=1"));
    assert!(reloading.is_some(), "{said:?}");
    assert!(said.iter().all(|m| !m.contains("STOPPING=1")), "{said:?}");
    assert!(
        said[reloading.unwrap_or_default()].contains("MONOTONIC_USEC="),
        "{said:?}"
    );
    said
}
