//! Simulated MQTT sensors for the demo and the benchmark: each publishes the JSON of its
//! profile over its own connection (with a last will on its availability topic), and now and
//! then something happens — smoke, a trapped passenger, a charging port heating up.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// What a simulated sensor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SensorKind {
    Smoke,
    FirePanel,
    Door,
    Lift,
    Leak,
    Env,
    EbikeStation,
}

impl SensorKind {
    /// The sensor kind of a bundled MQTT profile.
    pub fn of_profile(id: &str) -> Option<Self> {
        Some(match id {
            "mqtt-smoke-detector" => Self::Smoke,
            "mqtt-fire-panel" => Self::FirePanel,
            "mqtt-door-contact" => Self::Door,
            "mqtt-lift-monitor" => Self::Lift,
            "mqtt-water-leak" => Self::Leak,
            "mqtt-env-sensor" => Self::Env,
            "mqtt-ebike-station" => Self::EbikeStation,
            _ => return None,
        })
    }

    /// Seconds between messages.
    pub fn every(self) -> Duration {
        Duration::from_secs(match self {
            Self::Smoke | Self::Env => 10,
            Self::FirePanel | Self::Leak => 15,
            Self::Door | Self::Lift | Self::EbikeStation => 5,
        })
    }
}

/// The payload a sensor sends at `t` seconds into the demo. Things happen on a schedule:
/// smoke for half a minute every five, a trapped passenger every four, a charging port that
/// heats past 60 °C and cools again every four.
pub fn payload(kind: SensorKind, t: u64) -> String {
    let wave = |period: u64| ((t % period) as f64 / period as f64 * std::f64::consts::TAU).sin();
    match kind {
        SensorKind::Smoke => {
            let smoke = (60..90).contains(&(t % 300));
            let temperature = 24.0 + 2.0 * wave(600) + if smoke { 18.0 } else { 0.0 };
            format!(
                r#"{{"smoke":{smoke},"temperature":{temperature:.1},"battery":{},"tamper":false}}"#,
                87 - (t / 3600) % 80
            )
        }
        SensorKind::FirePanel => {
            let event = if (120..150).contains(&(t % 600)) {
                "fault"
            } else {
                "normal"
            };
            format!(r#"{{"event":"{event}","zone":"B3-2F","loop":1,"address":17}}"#)
        }
        SensorKind::Door => {
            let open = (t / 20) % 3 == 0;
            let forced = (150..155).contains(&(t % 300));
            format!(r#"{{"open":{},"forced":{forced}}}"#, open || forced)
        }
        SensorKind::Lift => {
            let phase = t % 240;
            let trapped = (100..130).contains(&phase);
            let floor = 1 + (t / 10) % 12;
            let (status, moving) = if trapped {
                ("trapped", false)
            } else {
                ("normal", t % 20 < 12)
            };
            format!(
                r#"{{"status":"{status}","floor":{floor},"moving":{moving},"door_open":false}}"#
            )
        }
        SensorKind::Leak => {
            let leak = (200..230).contains(&(t % 600));
            format!(r#"{{"leak":{leak}}}"#)
        }
        SensorKind::Env => format!(
            r#"{{"temperature":{:.1},"humidity":{:.0},"pm25":{:.0},"noise_db":{:.0}}}"#,
            23.0 + 3.0 * wave(900),
            55.0 + 10.0 * wave(1200),
            35.0 + 25.0 * wave(700),
            58.0 + 6.0 * wave(300)
        ),
        SensorKind::EbikeStation => {
            // Port 2 heats from 35 °C to 70 °C over two minutes, faults, then cools down.
            let phase = (t % 240) as f64;
            let hot = if phase < 120.0 {
                35.0 + 35.0 * phase / 120.0
            } else {
                70.0 - 35.0 * (phase - 120.0) / 120.0
            };
            let port2_state = if hot > 65.0 { "fault" } else { "charging" };
            let port2_power = if hot > 65.0 { 0 } else { 190 };
            format!(
                r#"{{"smoke":false,"ports":[{{"port":1,"state":"charging","power_w":175,"temperature":{:.1},"fault":null}},{{"port":2,"state":"{port2_state}","power_w":{port2_power},"temperature":{hot:.1},"fault":null}},{{"port":3,"state":"idle","power_w":0,"temperature":26.0,"fault":null}},{{"port":4,"state":"full","power_w":5,"temperature":31.5,"fault":null}}]}}"#,
                38.0 + 2.0 * wave(300)
            )
        }
    }
}

/// One simulated sensor: where it publishes.
#[derive(Debug, Clone)]
pub struct Sensor {
    pub id: String,
    pub kind: SensorKind,
    pub topic: String,
    pub availability: Option<String>,
}

/// Runs `sensor` against the broker on `port` until `shutdown`, reconnecting as a device would.
pub async fn run(
    sensor: Sensor,
    port: u16,
    login: Option<(String, String)>,
    shutdown: CancellationToken,
) {
    let mut o = MqttOptions::new(format!("sim-{}", sensor.id), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    if let Some((u, p)) = login {
        o.set_credentials(u, p);
    }
    if let Some(a) = &sensor.availability {
        o.set_last_will(LastWill::new(a.clone(), "offline", QoS::AtLeastOnce, true));
    }
    let (client, mut eventloop) = AsyncClient::new(o, 16);
    // The event loop runs on its own: a `poll` cut short (by a `select!`) would drop a
    // connection half made, and the broker would publish our last will.
    let availability = sensor.availability.clone();
    let announcer = client.clone();
    let id = sensor.id.clone();
    let connection = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    if let Some(a) = &availability {
                        let _ = announcer.try_publish(a.clone(), QoS::AtLeastOnce, true, "online");
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    debug!(sensor = %id, "simulated sensor: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
    let started = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(sensor.kind.every());
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {
                let body = payload(sensor.kind, started.elapsed().as_secs());
                let _ = client.publish(sensor.topic.clone(), QoS::AtLeastOnce, false, body).await;
            }
        }
    }
    let _ = client.disconnect().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    connection.abort();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::decode::decode;
    use crate::profile::ProfileRegistry;
    use crate::reading::Value;

    #[test]
    fn every_simulated_payload_decodes_cleanly_all_day() {
        let reg = ProfileRegistry::bundled().unwrap();
        for id in [
            "mqtt-smoke-detector",
            "mqtt-fire-panel",
            "mqtt-door-contact",
            "mqtt-lift-monitor",
            "mqtt-water-leak",
            "mqtt-env-sensor",
            "mqtt-ebike-station",
        ] {
            let kind = SensorKind::of_profile(id).unwrap();
            let profile = reg.get(id).unwrap();
            for t in (0..86_400).step_by(7) {
                let d = decode(profile, payload(kind, t).as_bytes(), 65_536).unwrap();
                assert!(d.problems.is_empty(), "{id} at {t}: {:?}", d.problems);
                assert!(!d.values.is_empty());
            }
        }
    }

    #[test]
    fn the_demo_has_something_to_show() {
        let has = |kind, t: u64, needle: &str| payload(kind, t).contains(needle);
        assert!(has(SensorKind::Smoke, 70, r#""smoke":true"#));
        assert!(has(SensorKind::Smoke, 10, r#""smoke":false"#));
        assert!(has(SensorKind::Lift, 110, "trapped"));
        assert!(has(SensorKind::EbikeStation, 118, r#""state":"fault""#));
        let reg = ProfileRegistry::bundled().unwrap();
        let d = decode(
            reg.get("mqtt-ebike-station").unwrap(),
            payload(SensorKind::EbikeStation, 118).as_bytes(),
            65_536,
        )
        .unwrap();
        let t = d
            .values
            .iter()
            .find(|(n, _, _)| &**n == "port2.temperature")
            .unwrap();
        assert!(matches!(t.1, Value::Number(x) if x > 60.0));
    }
}
