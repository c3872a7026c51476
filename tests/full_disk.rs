//! A full disk, for real: the hub's data directory on a small tmpfs that the test fills to the
//! last byte while sensors keep publishing. History must give up its oldest readings, the
//! storage alarm must stand, alarms and the push outbox must still be written, and everything
//! must return to normal once the space is back.
//!
//! Needs root (to mount the tmpfs), as CI has; without it the test fails and says so.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{MqttDevice, Receiver};
use parkhub::alarm::store::{AlarmStore, Listing, DB_FILE as ALARMS_DB};

/// A tmpfs mounted for the test and unmounted when it ends.
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size_mb: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        std::fs::create_dir(&path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mb}m,mode=0700")])
            .arg("tmpfs")
            .arg(&path)
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs and needs root (CI runs as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { path, _dir: dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Fills the filesystem of `dir` with a file `name` until at most `leave` bytes are free (0: to
/// the last byte); returns its path.
fn fill(dir: &Path, name: &str, leave: u64) -> PathBuf {
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0x5au8; 64 * 1024];
    let mut n = block.len();
    // Halving the block at each refusal fills the last partial block too.
    while n > 0 {
        let free = free_bytes(dir);
        if leave > 0 && free <= leave {
            break;
        }
        let want = if leave > 0 {
            n.min((free - leave) as usize)
        } else {
            n
        };
        match f.write_all(&block[..want]) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => n /= 2,
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    let _ = f.sync_all();
    path
}

fn free_bytes(dir: &Path) -> u64 {
    parkhub::store::space::free_bytes(dir).unwrap()
}

/// (count, smallest, largest) of one point's stored numbers, through the history file.
fn stored(data: &Path, device: &str, point: &str) -> (i64, f64, f64) {
    let c = rusqlite::Connection::open_with_flags(
        data.join("history.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c.query_row(
        "SELECT count(*), coalesce(min(value), -1), coalesce(max(value), -1) FROM sample_v
          WHERE series = (SELECT id FROM series WHERE device = ?1 AND point = ?2)",
        [device, point],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .unwrap_or((0, -1.0, -1.0))
}

/// The rules of the pushes received, with their events ("storage_low:raised").
fn pushed(hook: &Receiver) -> Vec<String> {
    hook.received()
        .iter()
        .filter(|r| r.path == "/alarm")
        .flat_map(|r| {
            // One push, or several as a digest.
            let v = r.json();
            match v.get("alarms") {
                Some(serde_json::Value::Array(a)) => a.clone(),
                _ => vec![v],
            }
        })
        .map(|v| {
            format!(
                "{}:{}:{}",
                v["device_id"].as_str().unwrap_or_default(),
                v["rule"].as_str().unwrap_or_default(),
                v["event"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_sheds_the_oldest_readings_raises_the_storage_alarm_and_keeps_alarms_and_pushes(
) {
    let disk = Tmpfs::mount(24);
    let data = disk.path.clone();
    let outside = tempfile::tempdir().unwrap();
    let hook = Receiver::start().await;
    let mqtt_port = common::free_port();
    let config = outside.path().join("parkhub.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[hub]
id = "hz-full"
data_dir = "{data}"

[api]
listen = "127.0.0.1:0"

[mqtt]
broker = "embedded"
listen = "127.0.0.1:{mqtt_port}"

[history]
min_free_mb = 2

[alarms]
group_window_s = 0

[[device]]
id = "env-1"
profile = "mqtt-env-sensor"
topic = "park/env-1"

[[device]]
id = "smoke-1"
profile = "mqtt-smoke-detector"
topic = "park/smoke-1"

[[channel]]
id = "hook"
kind = "webhook"
url = "{url}"
secret = "full-secret"

[[department]]
id = "ops"
name = "运维"
channels = ["hook"]

[[route]]
departments = ["ops"]
"#,
            data = data.display(),
            url = hook.url("/alarm"),
        ),
    )
    .unwrap();
    let log = outside.path().join("hub.log");
    let mut hub = common::spawn_hub(&config, &[("RUST_LOG", "info,parkhub::store=debug")], &log);
    let show_log = || std::fs::read_to_string(&log).unwrap_or_default();

    let deadline = Instant::now() + Duration::from_secs(15);
    let mut env = loop {
        match MqttDevice::connect(mqtt_port, "env-1", None, None).await {
            Ok(s) => break s,
            Err(e) => {
                assert!(Instant::now() < deadline, "no broker: {e}\n{}", show_log());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let mut smoke = MqttDevice::connect(mqtt_port, "smoke-1", None, None)
        .await
        .unwrap();
    // Readings numbered in the order they are sent: `temperature` is the message's number.
    let mut n = 0u64;
    async fn send(env: &mut MqttDevice, n: &mut u64, count: u64) {
        for i in *n..*n + count {
            env.publish(
                "park/env-1",
                format!(r#"{{"temperature":{i},"humidity":{i},"pm25":{i},"noise_db":{i}}}"#),
            )
            .await;
        }
        *n += count;
    }

    // Some history first: until the hub has subscribed, messages are lost, so wait for them.
    send(&mut env, &mut n, 2000).await;
    common::wait_until(
        Duration::from_secs(30),
        "the first readings are stored",
        || stored(&data, "env-1", "temperature").0 > 1500,
    )
    .await;
    let (_, first_min, _) = stored(&data, "env-1", "temperature");
    // The reserve is made on the writer's first maintenance tick, not before the hub is ready.
    common::wait_until(Duration::from_secs(30), "the disk reserve is made", || {
        data.join("history.reserve").exists()
    })
    .await;

    // Something else takes the disk but for 3 MB; the hub's own writing takes the rest down to
    // its 2 MB minimum, and history starts to rotate.
    let ballast = fill(&data, "ballast", 5 << 19);
    let deadline = Instant::now() + Duration::from_secs(90);
    while !pushed(&hook)
        .iter()
        .any(|e| e == "hz-full:storage_low:raised")
    {
        assert!(
            Instant::now() < deadline,
            "the storage alarm is pushed ({n} messages sent, {} bytes free)\n{}",
            free_bytes(&data),
            show_log()
        );
        send(&mut env, &mut n, 1000).await;
    }
    send(&mut env, &mut n, 4000).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while stored(&data, "env-1", "temperature").2 < (n - 1) as f64 {
        assert!(
            Instant::now() < deadline,
            "readings sent while short of room are stored: {:?} of {n}\n{}",
            stored(&data, "env-1", "temperature"),
            show_log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (count, min, max) = stored(&data, "env-1", "temperature");
    assert!(
        min > first_min,
        "the oldest readings were shed (oldest now {min}, first {first_min})"
    );
    assert_eq!(max, (n - 1) as f64, "the newest reading is kept");
    assert_eq!(
        count as f64,
        max - min + 1.0,
        "what is left is every reading from the oldest kept to the newest"
    );
    assert!(
        count > 4000,
        "history rotates rather than emptying: {count} readings kept\n{}",
        show_log()
    );

    // Now to the very last byte: the fire alarm that comes in is still stored and pushed.
    let last_byte = fill(&data, "last-byte", 0);
    assert!(free_bytes(&data) < 64 * 1024, "the disk is full");
    send(&mut env, &mut n, 500).await;
    common::wait_until(
        Duration::from_secs(30),
        "the hub gives up its reserve",
        || show_log().contains("released the reserve"),
    )
    .await;
    smoke
        .publish("park/smoke-1", r#"{"smoke":true,"battery":90}"#)
        .await;
    common::wait_until(Duration::from_secs(60), "the fire alarm is pushed", || {
        pushed(&hook)
            .iter()
            .any(|e| e.starts_with("smoke-1:") && e.ends_with(":raised"))
    })
    .await;
    let alarms = AlarmStore::open(&data.join(ALARMS_DB)).unwrap();
    let open = alarms.list(Listing::Open, 10).unwrap();
    for (what, found) in [
        (
            "storage",
            open.iter().any(|a| a.key.rule.as_ref() == "storage_low"),
        ),
        (
            "fire",
            open.iter().any(|a| a.key.scope.id().as_ref() == "smoke-1"),
        ),
    ] {
        assert!(
            found,
            "the {what} alarm is on record: {open:?}\n{}",
            show_log()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !alarms.pending().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "every push is marked delivered in the outbox: {:?}\n{}",
            alarms.pending(),
            show_log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Space returns: the alarm clears and history keeps everything again.
    std::fs::remove_file(&ballast).unwrap();
    std::fs::remove_file(&last_byte).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pushed(&hook)
        .iter()
        .any(|e| e == "hz-full:storage_low:cleared")
    {
        assert!(
            Instant::now() < deadline,
            "the storage alarm clears: {:?}\n{}",
            pushed(&hook),
            show_log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, min_before, _) = stored(&data, "env-1", "temperature");
    send(&mut env, &mut n, 2000).await;
    common::wait_until(
        Duration::from_secs(30),
        "every reading after the space returned is stored",
        || stored(&data, "env-1", "temperature").2 >= (n - 1) as f64,
    )
    .await;
    let (count, min_after, max) = stored(&data, "env-1", "temperature");
    assert_eq!(
        min_after, min_before,
        "nothing more was shed once there was room"
    );
    assert_eq!(count as f64, max - min_after + 1.0, "no reading is missing");
    // On the writer's next maintenance tick (every ten seconds).
    common::wait_until(Duration::from_secs(30), "the reserve is made again", || {
        data.join("history.reserve").exists()
    })
    .await;

    let _ = Command::new("kill")
        .args(["-TERM", &hub.id().to_string()])
        .status();
    let status = hub.wait().unwrap();
    assert!(status.success(), "{status:?}\n{}", show_log());
    for db in ["history.sqlite", ALARMS_DB] {
        let c = rusqlite::Connection::open(data.join(db)).unwrap();
        let ok: String = c
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok", "{db}");
    }
}
