//! Dry contacts and a siren relay in a whole running hub: the real config loader, the alarm
//! engine on SQLite, history, the API and a webhook receiver on 127.0.0.1, with the machine's
//! pins replaced by the in-memory `SimPins` (the one part that needs a Raspberry Pi).

mod common;

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use parkhub::alarm::store::{AlarmRow, Listing};
use parkhub::alarm::AlarmState;
use parkhub::app::App;
use parkhub::gpio::sim::SimPins;
use parkhub::gpio::{NoPins, Pins};
use parkhub::reading::Value;
use parkhub::store::History;

const LIMIT: Duration = Duration::from_secs(20);
const FIRE_PIN: u8 = 17;
const DOOR_PIN: u8 = 5;
const SIREN_PIN: u8 = 22;

fn config(dir: &Path, hook: &str) -> String {
    format!(
        r#"
[hub]
id = "gpio-test"
data_dir = "{dir}"
[api]
listen = "127.0.0.1:0"

# The fire panel's alarm relay, wired normally closed: closed (low) is normal, open or cut is fire.
[[device]]
id = "fire-relay"
profile = "gpio-dry-contact"
category = "fire"
pin = {FIRE_PIN}
active = "high"
location = {{ building = "3号楼", room = "消防控制室" }}

# A door contact to ground, closed while the door is shut: open reads high, and is active.
[[device]]
id = "door-b3"
profile = "gpio-dry-contact"
category = "security"
pin = {DOOR_PIN}
active = "high"
debounce_ms = 100

[[channel]]
id = "hook"
kind = "webhook"
url = "{hook}"
secret = "s"

[[channel]]
id = "siren"
kind = "gpio"
pin = {SIREN_PIN}
active_high = true

[[department]]
id = "fire-control"
name = "消防控制室"
channels = ["hook", "siren"]

[[department]]
id = "security"
name = "安保"
channels = ["hook"]

[[route]]
match = {{ category = "fire" }}
departments = ["fire-control"]

[[route]]
departments = ["security"]
"#,
        dir = dir.display()
    )
}

struct Park {
    app: Option<App>,
    pins: SimPins,
    hook: Receiver,
    _dir: tempfile::TempDir,
}

impl Park {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let hook = Receiver::start().await;
        let pins = SimPins::new();
        // The fire relay's contact is closed; the door is shut (its contact to ground closed).
        pins.drive(FIRE_PIN, false);
        pins.drive(DOOR_PIN, false);
        let loaded = load(&config(dir.path(), &hook.url("/alarm")), dir.path());
        let app = App::start_with(&loaded, Some(Arc::new(pins.clone())))
            .await
            .expect("the hub starts");
        let park = Self {
            app: Some(app),
            pins,
            hook,
            _dir: dir,
        };
        park.wait_active("fire-relay", false).await;
        park.wait_active("door-b3", false).await;
        park
    }

    fn app(&self) -> &App {
        self.app.as_ref().unwrap()
    }

    async fn wait_active(&self, device: &str, want: bool) {
        wait_until(LIMIT, &format!("{device} active = {want}"), || {
            self.app().hub.latest(device, "active").map(|l| l.value) == Some(Value::Bool(want))
        })
        .await;
    }

    fn alarms(&self, device: &str) -> Vec<AlarmRow> {
        self.app()
            .alarms
            .list(Listing::All, 100)
            .unwrap()
            .into_iter()
            .filter(|a| a.key.scope.id().as_ref() == device)
            .collect()
    }

    fn siren(&self) -> Option<bool> {
        self.pins.output_level(SIREN_PIN)
    }

    async fn history(&self, device: &str) -> Vec<f64> {
        self.app().writer.flush().await.unwrap();
        let h = History::open(&self.app().db_path, chrono_tz::Asia::Shanghai).unwrap();
        let s = h.series(device, "active").unwrap().expect("a series");
        h.raw(&s, 0, i64::MAX / 2)
            .unwrap()
            .into_iter()
            .map(|(_, v)| v)
            .collect()
    }

    async fn stop(mut self) {
        if let Some(app) = self.app.take() {
            app.stop(Duration::from_secs(10)).await.unwrap();
        }
    }
}

#[tokio::test]
async fn a_fire_relay_opening_raises_a_critical_fire_alarm_pushes_it_and_sounds_the_siren_until_acknowledged(
) {
    let park = Park::start().await;
    assert_eq!(park.siren(), Some(false), "the siren relay starts off");
    assert!(park.alarms("fire-relay").is_empty());

    // History keeps one value per second: each change in its own second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    park.pins.drive(FIRE_PIN, true);
    wait_until(LIMIT, "the fire alarm", || {
        !park.alarms("fire-relay").is_empty()
    })
    .await;
    let alarm = park.alarms("fire-relay").remove(0);
    assert_eq!(
        (alarm.severity.as_str(), alarm.category.as_str()),
        ("critical", "fire")
    );
    wait_until(LIMIT, "the push", || park.hook.count() >= 1).await;
    let push = park.hook.received()[0].json();
    assert_eq!(push["event"], "raised");
    assert_eq!(push["device_id"], "fire-relay");
    assert_eq!(push["category"], "fire");
    assert_eq!(push["severity"], "critical");
    assert_eq!(push["location"]["building"], "3号楼");
    wait_until(LIMIT, "the siren on", || park.siren() == Some(true)).await;

    // The panel resets; the alarm is latched, so it waits for someone, and so does the siren.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    park.pins.drive(FIRE_PIN, false);
    park.wait_active("fire-relay", false).await;
    assert_eq!(park.siren(), Some(true), "latched: still sounding");

    park.app()
        .engine
        .ack(alarm.id, "值班员", Some("已到现场，误报".into()))
        .await
        .unwrap();
    wait_until(LIMIT, "the siren off", || park.siren() == Some(false)).await;
    let acked = park.alarms("fire-relay").remove(0);
    assert_ne!(acked.state, AlarmState::Unacked);

    assert_eq!(park.history("fire-relay").await, vec![0.0, 1.0, 0.0]);
    park.stop().await;
}

#[tokio::test]
async fn a_door_contact_that_chatters_raises_one_alarm_and_the_siren_stays_silent() {
    let park = Park::start().await;
    assert!(
        park.alarms("door-b3").is_empty(),
        "a shut door raises nothing"
    );
    let published = || park.app().hub.device("door-b3").unwrap().stats.messages;
    assert_eq!(published(), 1, "the shut door, once");
    // The door opens with a rattle: its contact bounces for 60 ms, then stays open.
    for i in 0..12 {
        park.pins.drive(DOOR_PIN, i % 2 == 0);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    park.pins.drive(DOOR_PIN, true);
    park.wait_active("door-b3", true).await;
    wait_until(LIMIT, "the door alarm", || {
        !park.alarms("door-b3").is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(published(), 2, "one change after the rattle, not twelve");
    let alarms = park.alarms("door-b3");
    assert_eq!(alarms.len(), 1, "{alarms:#?}");
    assert_eq!(
        (alarms[0].category.as_str(), alarms[0].state),
        ("security", AlarmState::Unacked)
    );
    assert_eq!(
        park.siren(),
        Some(false),
        "a door is not the fire siren's business"
    );
    park.stop().await;
}

/// Log lines written while the test runs, for the one-warning promise.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn without_gpio_the_hub_says_so_once_naming_what_goes_without_and_runs_on() {
    let logs = Captured::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let dir = tempfile::tempdir().unwrap();
    let hook = Receiver::start().await;
    let loaded = load(&config(dir.path(), &hook.url("/alarm")), dir.path());
    let pins: Arc<dyn Pins> = Arc::new(NoPins("Unknown Raspberry Pi model".into()));
    let mut app = App::start_with(&loaded, Some(pins))
        .await
        .expect("the hub starts");
    wait_until(LIMIT, "the contacts offline", || {
        ["fire-relay", "door-b3"]
            .iter()
            .all(|d| app.hub.device(d).and_then(|s| s.online) == Some(false))
    })
    .await;
    let fire = app.hub.device("fire-relay").unwrap();
    assert_eq!(
        fire.last_error.as_deref(),
        Some("no GPIO on this machine (Unknown Raspberry Pi model)")
    );
    let health = http_client()
        .get(format!("http://{}/api/v1/health", app.api_addr))
        .send()
        .await
        .unwrap();
    assert!(health.status().is_success(), "the API answers");
    // It runs on: no source ends for want of pins (the app takes one that ends for a failure).
    app.run_until(tokio::time::sleep(Duration::from_millis(500)))
        .await
        .expect("the hub runs on without GPIO");
    app.stop(Duration::from_secs(10)).await.unwrap();

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let said: Vec<&str> = text.lines().filter(|l| l.contains("GPIO")).collect();
    assert_eq!(said.len(), 1, "{text}");
    for part in [
        "no GPIO on this machine (Unknown Raspberry Pi model)",
        "dry contact fire-relay",
        "dry contact door-b3",
        "siren channel siren",
    ] {
        assert!(said[0].contains(part), "{part:?} missing from {}", said[0]);
    }
}
