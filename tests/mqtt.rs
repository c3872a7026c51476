//! MQTT sensors against real brokers: the embedded one (rumqttd in the hub) and mosquitto
//! started on a free port.

mod common;

use std::time::Duration;

use common::*;
use parkhub::reading::Value;
use sha2::{Digest, Sha256};

const LIMIT: Duration = Duration::from_secs(15);

/// One device of every MQTT profile, on `park/…` topics.
/// A hub config with `mqtt` as its `[mqtt]` section, and the devices of every profile.
fn config(mqtt: &str) -> String {
    format!("[hub]\nid = \"t\"\n[mqtt]\n{mqtt}\n{}", devices())
}

fn devices() -> String {
    [
        ("smoke", "mqtt-smoke-detector"),
        ("panel", "mqtt-fire-panel"),
        ("door", "mqtt-door-contact"),
        ("lift", "mqtt-lift-monitor"),
        ("leak", "mqtt-water-leak"),
        ("env", "mqtt-env-sensor"),
        ("ebike", "mqtt-ebike-station"),
    ]
    .iter()
    .map(|(id, profile)| {
        format!("[[device]]\nid = \"{id}\"\nprofile = \"{profile}\"\ntopic = \"park/b3/{id}\"\nlocation = {{ building = \"3号楼\" }}\n")
    })
    .collect()
}

/// A device, the payload it publishes and the values the hub must make of it.
type Case = (&'static str, &'static str, Vec<(&'static str, Value)>);

/// The payloads of DESIGN.md, one per profile, and what the hub must make of them.
fn payloads() -> Vec<Case> {
    let n = Value::Number;
    let b = Value::Bool;
    let t = |s: &str| Value::Text(s.into());
    vec![
        (
            "smoke",
            r#"{"smoke":true,"temperature":24.1,"battery":87,"tamper":false}"#,
            vec![
                ("smoke", b(true)),
                ("temperature", n(24.1)),
                ("battery", n(87.0)),
                ("tamper", b(false)),
            ],
        ),
        (
            "panel",
            r#"{"event":"fire","zone":"B3-2F","loop":1,"address":17}"#,
            vec![
                ("event", t("fire")),
                ("zone", t("B3-2F")),
                ("loop", n(1.0)),
                ("address", n(17.0)),
            ],
        ),
        (
            "door",
            r#"{"open":true,"forced":false}"#,
            vec![("open", b(true)), ("forced", b(false))],
        ),
        (
            "lift",
            r#"{"status":"trapped","floor":5,"moving":false,"door_open":false}"#,
            vec![
                ("status", t("trapped")),
                ("floor", n(5.0)),
                ("moving", b(false)),
                ("door_open", b(false)),
            ],
        ),
        ("leak", r#"{"leak":true}"#, vec![("leak", b(true))]),
        (
            "env",
            r#"{"temperature":24.1,"humidity":55,"pm25":35,"noise_db":62}"#,
            vec![
                ("temperature", n(24.1)),
                ("humidity", n(55.0)),
                ("pm25", n(35.0)),
                ("noise_db", n(62.0)),
            ],
        ),
        (
            "ebike",
            r#"{"smoke":false,"ports":[{"port":1,"state":"charging","power_w":180,"temperature":41.5,"fault":null},{"port":2,"state":"idle","power_w":0,"temperature":25,"fault":null}]}"#,
            vec![
                ("smoke", b(false)),
                ("port1.state", t("charging")),
                ("port1.power_w", n(180.0)),
                ("port1.temperature", n(41.5)),
                ("port2.state", t("idle")),
                ("port2.temperature", n(25.0)),
            ],
        ),
    ]
}

async fn every_payload_arrives(hub: &MqttHub, port: u16) {
    let mut dev = MqttDevice::connect(port, "publisher", None, None)
        .await
        .unwrap();
    for (id, payload, _) in payloads() {
        dev.publish(&format!("park/b3/{id}"), payload).await;
    }
    for (id, _, want) in payloads() {
        for (point, value) in want {
            let h = hub.hub.clone();
            wait_until(LIMIT, &format!("{id}.{point}"), || {
                h.latest(id, point).is_some()
            })
            .await;
            assert_eq!(
                hub.hub.latest(id, point).unwrap().value,
                value,
                "{id}.{point}"
            );
        }
        let d = hub.hub.device(id).unwrap();
        assert_eq!(d.online, Some(true), "{id}");
        assert_eq!((d.stats.messages, d.stats.rejected), (1, 0), "{id}");
    }
    // The e-bike station's port 2 fault is null: no reading, and no error.
    assert!(hub.hub.latest("ebike", "port2.fault").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_profile_payload_arrives_through_the_embedded_broker() {
    let port = free_port();
    let hub = MqttHub::start(&config(&format!(
        "broker = \"embedded\"\nlisten = \"127.0.0.1:{port}\""
    )))
    .await;
    every_payload_arrives(&hub, port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_profile_payload_arrives_through_mosquitto() {
    let broker = Mosquitto::start("allow_anonymous true");
    let hub = MqttHub::start(&config(&format!("broker = \"{}\"", broker.url()))).await;
    every_payload_arrives(&hub, broker.port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_counted_on_its_device_and_never_becomes_a_reading() {
    let broker = Mosquitto::start("allow_anonymous true");
    let hub = MqttHub::start(&config(&format!(
        "broker = \"{}\"\nmax_payload_bytes = 1024",
        broker.url()
    )))
    .await;
    let mut dev = MqttDevice::connect(broker.port, "noisy", None, None)
        .await
        .unwrap();
    let huge = format!(r#"{{"smoke":true,"pad":"{}"}}"#, "x".repeat(5000));
    for bad in [
        "",
        "smoke!",
        "[1,2,3]",
        r#"{"smoke":"yes","temperature":"warm"}"#,
        r#"{"colour":"red"}"#,
        huge.as_str(),
    ] {
        dev.publish("park/b3/smoke", bad).await;
    }
    dev.publish("park/b3/lift", r#"{"status":"flying","floor":3}"#)
        .await;
    dev.publish("park/nobody/here", "{}").await;
    dev.publish("park/b3/smoke", r#"{"smoke":false,"battery":64}"#)
        .await;
    let h = hub.hub.clone();
    wait_until(LIMIT, "the good message after the garbage", || {
        h.latest("smoke", "battery").is_some()
    })
    .await;
    let smoke = hub.hub.device("smoke").unwrap();
    assert_eq!((smoke.stats.messages, smoke.stats.rejected), (7, 6));
    assert_eq!(
        hub.hub.latest("smoke", "smoke").unwrap().value,
        Value::Bool(false),
        "no reading from the refused ones"
    );
    assert!(hub.hub.latest("smoke", "temperature").is_none());
    let lift = hub.hub.device("lift").unwrap();
    assert_eq!(lift.stats.rejected, 1);
    assert!(
        lift.last_error
            .as_deref()
            .unwrap_or("")
            .contains("unknown state \"flying\""),
        "{:?}",
        lift.last_error
    );
    assert!(hub.hub.latest("lift", "status").is_none());
    assert_eq!(
        hub.hub.latest("lift", "floor").unwrap().value,
        Value::Number(3.0)
    );
    assert_eq!(hub.hub.unrouted_total(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_reconnects_and_subscribes_again_after_the_broker_restarts() {
    let mut broker = Mosquitto::start("allow_anonymous true");
    let hub = MqttHub::start(&config(&format!("broker = \"{}\"", broker.url()))).await;
    let mut dev = MqttDevice::connect(broker.port, "door-device", None, None)
        .await
        .unwrap();
    dev.publish("park/b3/door", r#"{"open":false}"#).await;
    let h = hub.hub.clone();
    wait_until(LIMIT, "the first reading", || {
        h.latest("door", "open").is_some()
    })
    .await;

    // The broker restarts with no memory of anyone's session.
    broker.restart();
    let h = hub.hub.clone();
    let mut after = None;
    // The device reconnects too; until the hub has subscribed again its messages may be lost
    // (the broker keeps none for a session it no longer knows), so it repeats until heard.
    let deadline = std::time::Instant::now() + LIMIT;
    while after.is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "no reading after the broker restarted"
        );
        if let Ok(mut dev) = MqttDevice::connect(broker.port, "door-device", None, None).await {
            dev.publish("park/b3/door", r#"{"open":true}"#).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        after = h
            .latest("door", "open")
            .filter(|l| l.value == Value::Bool(true));
    }
}

/// A hub away for a moment misses nothing: the broker keeps its session and queues QoS 1.
/// `again` is the config the hub comes back with.
async fn nothing_is_missed_while_the_hub_is_away(text: &str, again: &str, port: u16) {
    let mut hub = MqttHub::start(text).await;
    let mut dev = MqttDevice::connect(port, "env-device", None, None)
        .await
        .unwrap();
    dev.publish("park/b3/env", r#"{"pm25":10}"#).await;
    let h = hub.hub.clone();
    wait_until(LIMIT, "the first reading", || {
        h.latest("env", "pm25").is_some()
    })
    .await;
    hub.stop().await;

    // While the hub is away.
    for pm in [11, 12, 13] {
        dev.publish("park/b3/env", format!(r#"{{"pm25":{pm}}}"#))
            .await;
    }
    let hub = MqttHub::start(again).await;
    let h = hub.hub.clone();
    wait_until(
        LIMIT,
        "the messages published while the hub was away",
        || h.device("env").is_some_and(|d| d.stats.messages == 3),
    )
    .await;
    assert_eq!(
        hub.hub.latest("env", "pm25").unwrap().value,
        Value::Number(13.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_session_on_mosquitto_keeps_messages_for_the_hub() {
    let broker = Mosquitto::start("allow_anonymous true");
    let text = config(&format!("broker = \"{}\"", broker.url()));
    nothing_is_missed_while_the_hub_is_away(&text, &text, broker.port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_session_on_the_embedded_broker_keeps_messages_for_the_hub() {
    let port = free_port();
    let text = config(&format!(
        "broker = \"embedded\"\nlisten = \"127.0.0.1:{port}\""
    ));
    // The first hub's broker outlives it (rumqttd cannot be stopped): the hub comes back as a
    // client of that broker, with the same client id, and finds its session there.
    let again = config(&format!("broker = \"mqtt://127.0.0.1:{port}\""));
    nothing_is_missed_while_the_hub_is_away(&text, &again, port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_vanishes_is_marked_offline_by_its_last_will() {
    for embedded in [true, false] {
        let mosquitto = (!embedded).then(|| Mosquitto::start("allow_anonymous true"));
        let port = mosquitto.as_ref().map_or_else(free_port, |m| m.port);
        let mqtt = if embedded {
            format!("broker = \"embedded\"\nlisten = \"127.0.0.1:{port}\"")
        } else {
            format!("broker = \"mqtt://127.0.0.1:{port}\"")
        };
        let hub = MqttHub::start(&config(&mqtt)).await;
        let mut dev = MqttDevice::connect(
            port,
            "lift-device",
            None,
            Some(("park/b3/lift/status", "offline")),
        )
        .await
        .unwrap();
        dev.publish("park/b3/lift/status", "online").await;
        dev.publish("park/b3/lift", r#"{"status":"normal","floor":1}"#)
            .await;
        let h = hub.hub.clone();
        wait_until(LIMIT, "the lift online", || {
            h.device("lift").and_then(|d| d.online) == Some(true)
        })
        .await;
        dev.vanish();
        let h = hub.hub.clone();
        wait_until(LIMIT, "the last will", || {
            h.device("lift").and_then(|d| d.online) == Some(false)
        })
        .await;
        let d = hub.hub.device("lift").unwrap();
        assert!(
            d.last_error
                .as_deref()
                .unwrap_or("")
                .contains("says offline"),
            "embedded={embedded}: {:?}",
            d.last_error
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_broker_lets_in_only_its_accounts_when_it_has_them() {
    let port = free_port();
    let hash = hex::encode(Sha256::digest(b"door-secret"));
    let hub = MqttHub::start(&config(&format!(
        "broker = \"embedded\"\nlisten = \"127.0.0.1:{port}\"\n\
         [[mqtt.user]]\nname = \"door\"\npassword_sha256 = \"{hash}\""
    )))
    .await;
    assert!(
        MqttDevice::connect(port, "anon", None, None).await.is_err(),
        "anonymous refused"
    );
    assert!(
        MqttDevice::connect(port, "wrong", Some(("door", "guess")), None)
            .await
            .is_err(),
        "wrong password refused"
    );
    assert!(
        MqttDevice::connect(port, "hub-imposter", Some(("parkhub", "")), None)
            .await
            .is_err(),
        "the hub's account is not guessable"
    );
    let mut dev = MqttDevice::connect(port, "door-1", Some(("door", "door-secret")), None)
        .await
        .unwrap();
    dev.publish("park/b3/door", r#"{"open":true,"forced":true}"#)
        .await;
    // The hub's own client got in with its own secret: the reading arrives.
    let h = hub.hub.clone();
    wait_until(LIMIT, "the forced door", || {
        h.latest("door", "forced").is_some()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_broker_survives_garbage_clients() {
    use tokio::io::AsyncWriteExt;
    let port = free_port();
    let hub = MqttHub::start(&config(&format!(
        "broker = \"embedded\"\nlisten = \"127.0.0.1:{port}\"\nmax_payload_bytes = 1024"
    )))
    .await;
    let garbage: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        vec![0xFF; 64],
        // CONNECT claiming a 268 MB packet
        vec![0x10, 0xFF, 0xFF, 0xFF, 0x7F],
        // CONNECT with a nonsense protocol name
        vec![
            0x10, 0x0C, 0x00, 0x04, b'X', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x00,
        ],
        // a PUBLISH before any CONNECT
        vec![0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'],
        Vec::new(),
    ];
    for bytes in &garbage {
        if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            let _ = s.write_all(bytes).await;
            let _ = s.shutdown().await;
        }
    }
    // A payload over the broker's limit from a connected client.
    let big = MqttDevice::connect(port, "big", None, None).await.unwrap();
    let _ = big
        .client
        .publish(
            "park/b3/leak",
            rumqttc::QoS::AtMostOnce,
            false,
            vec![b'x'; 100_000],
        )
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Through all that, the broker and the hub still work.
    let mut dev = MqttDevice::connect(port, "leak-1", None, None)
        .await
        .unwrap();
    dev.publish("park/b3/leak", r#"{"leak":true}"#).await;
    let h = hub.hub.clone();
    wait_until(LIMIT, "a reading after the garbage", || {
        h.latest("leak", "leak").is_some()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtts_with_a_private_ca_and_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f);
    // A park's own CA, its broker's certificate, and the hub's client certificate.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "park CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let client_key = rcgen::KeyPair::generate().unwrap();
    let mut client_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    client_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "parkhub");
    let client = client_params.signed_by(&client_key, &issuer).unwrap();
    std::fs::write(p("ca.pem"), ca.pem()).unwrap();
    std::fs::write(p("server.pem"), server.pem()).unwrap();
    std::fs::write(p("server.key"), server_key.serialize_pem()).unwrap();
    std::fs::write(p("client.pem"), client.pem()).unwrap();
    std::fs::write(p("client.key"), client_key.serialize_pem()).unwrap();

    let tls_port = free_port();
    let broker = Mosquitto::start(&format!(
        "allow_anonymous true\nlistener {tls_port} 127.0.0.1\nallow_anonymous true\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true",
        p("ca.pem").display(),
        p("server.pem").display(),
        p("server.key").display()
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "TLS listener up");
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = config(&format!(
        "broker = \"mqtts://localhost:{tls_port}\"\nca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"",
        p("ca.pem").display(),
        p("client.pem").display(),
        p("client.key").display()
    ));
    let hub = MqttHub::start(&text).await;
    // Devices publish on the plain listener; the hub reads over TLS.
    let mut dev = MqttDevice::connect(broker.port, "smoke-1", None, None)
        .await
        .unwrap();
    let h = hub.hub.clone();
    let deadline = std::time::Instant::now() + LIMIT;
    while h.latest("smoke", "smoke").is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "no reading over mqtts"
        );
        dev.publish("park/b3/smoke", r#"{"smoke":true}"#).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
