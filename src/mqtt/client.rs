//! The hub's MQTT client (rumqttc): to the park's broker (`mqtt://`, `mqtts://` with rustls) or
//! the embedded one. A persistent session, and QoS 1 from the park's broker, so that what devices
//! publish while the hub is briefly away waits for it; reconnects with back-off and subscribes
//! again on every connection; acknowledges a message only once the hub has taken it in.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use backon::{BackoffBuilder, ExponentialBuilder};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS, TlsConfiguration, Transport};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::broker::EmbeddedBroker;
use crate::config::MqttConfig;

/// One message from the broker, and what acknowledges it once handled.
pub struct Incoming {
    pub publish: Publish,
    pub acker: AsyncClient,
}

impl Incoming {
    /// Tells the broker the message is taken care of (QoS 1 PUBACK); `false` when the client's
    /// request queue has no room for it yet. Never waits for room: the task that empties that
    /// queue (`run`) may itself be waiting for the taker of messages to take the next one.
    pub fn try_ack(&self) -> bool {
        self.acker.try_ack(&self.publish).is_ok()
    }
}

/// Where and how the client connects.
pub struct ClientSettings {
    pub options: MqttOptions,
    /// What it subscribes to after every (re)connection.
    pub filters: Vec<String>,
    /// The QoS it subscribes with: 1 from the park's broker, 0 from the embedded one (see
    /// `subscription_qos`).
    pub qos: QoS,
    /// Shown in logs: the broker's address, never credentials.
    pub broker: String,
    /// Counts the broker's acknowledgements of our subscriptions (tests and the demo wait for
    /// the first before they publish).
    pub subscribed: tokio::sync::watch::Sender<u64>,
}

/// Builds the connection options of the config's broker (or of the embedded one).
pub fn settings(
    cfg: &MqttConfig,
    hub_id: &str,
    embedded: Option<&EmbeddedBroker>,
    filters: Vec<String>,
) -> anyhow::Result<ClientSettings> {
    let client_id = cfg
        .client_id
        .clone()
        .unwrap_or_else(|| format!("parkhub-{hub_id}"));
    let (mut options, broker) = match embedded {
        Some(b) => {
            let mut o = MqttOptions::new(client_id, b.local.ip().to_string(), b.local.port());
            if let Some((user, password)) = &b.login {
                o.set_credentials(user.clone(), password.clone());
            }
            (o, format!("embedded broker on {}", b.listen))
        }
        None => {
            let url = url::Url::parse(&cfg.broker)
                .with_context(|| format!("mqtt.broker `{}`", cfg.broker))?;
            let tls = match url.scheme() {
                "mqtt" => false,
                "mqtts" => true,
                other => anyhow::bail!("mqtt.broker: scheme `{other}` is not mqtt or mqtts"),
            };
            let host = url
                .host_str()
                .context("mqtt.broker has no host")?
                .to_string();
            let port = url.port().unwrap_or(if tls { 8883 } else { 1883 });
            let mut o = MqttOptions::new(client_id, host.clone(), port);
            if let Some(user) = &cfg.username {
                o.set_credentials(
                    user.clone(),
                    cfg.password
                        .as_ref()
                        .map(|p| p.expose().to_string())
                        .unwrap_or_default(),
                );
            }
            if tls {
                o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                    Arc::new(crate::tls::client_config(
                        cfg.ca_file.as_deref(),
                        cfg.client_cert.as_deref().zip(cfg.client_key.as_deref()),
                        "mqtt",
                    )?),
                )));
            }
            (o, format!("{}://{host}:{port}", url.scheme()))
        }
    };
    options
        .set_keep_alive(Duration::from_secs(cfg.keep_alive_s.unwrap_or(30)))
        // The broker keeps our subscriptions and queues QoS 1 messages while we are away.
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_request_channel_capacity(4096)
        // Room for any payload the broker passes on: one bigger than the hub's own limit is
        // refused after it arrives rather than breaking the connection (which would bring the
        // same message back forever).
        .set_max_packet_size(16 << 20, 1 << 20);
    Ok(ClientSettings {
        options,
        filters,
        qos: subscription_qos(embedded.is_some()),
        broker,
        subscribed: tokio::sync::watch::Sender::new(0),
    })
}

/// QoS 1 from the park's broker: it outlives the hub, keeps what arrives while the hub restarts
/// and sends again what the hub had not acknowledged.
///
/// QoS 0 from the embedded broker. It lives and dies with the hub's process, so a crash takes
/// its messages either way; an acknowledgement would only have them sent again after the hub's
/// own connection to it dropped while the process lived (the client stalled past 1.5 × its
/// keep-alive), and it costs what the hub can take in: rumqttd lets at most 100 QoS 1 messages
/// to a client wait for their PUBACK (a constant in its router), and rumqttc writes each PUBACK
/// on its own, so the hub could take in no more than 100 messages a round trip between the two,
/// about 50 000 messages/s on the 2-core benchmark machine, and less whenever it was busy. At QoS 0
/// rumqttd still waits for the hub: it stops reading its log for a client whose outgoing buffer
/// is full. The devices' own publishes stay QoS 1 to the broker.
pub fn subscription_qos(embedded: bool) -> QoS {
    if embedded {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    }
}

/// The fewest subscriptions that cover `topics`: one `first/#` per first level (an MQTT broker
/// checks a few filters faster than thousands), exact topics at the top level.
pub fn filters<'a>(topics: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = topics
        .into_iter()
        .map(|t| match t.split_once('/') {
            Some((first, _)) if !first.is_empty() => format!("{first}/#"),
            _ => t.to_string(),
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Runs the client until `shutdown`, handing every message to `out`.
pub async fn run(
    settings: ClientSettings,
    out: mpsc::Sender<Incoming>,
    shutdown: CancellationToken,
) {
    let ClientSettings {
        options,
        filters,
        qos,
        broker,
        subscribed,
    } = settings;
    let (client, mut eventloop) = AsyncClient::new(options, 4096);
    let mut backoff = new_backoff();
    let mut down: Option<String> = None;
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => break,
            e = eventloop.poll() => e,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                match down.take() {
                    Some(_) => {
                        info!(%broker, session_present = ack.session_present, "MQTT reconnected")
                    }
                    None => info!(%broker, session_present = ack.session_present, "MQTT connected"),
                }
                backoff = new_backoff();
                let subs = filters
                    .iter()
                    .map(|f| rumqttc::SubscribeFilter::new(f.clone(), qos));
                if let Err(e) = client.try_subscribe_many(subs) {
                    warn!(%broker, "MQTT subscribe failed: {e}");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                subscribed.send_modify(|n| *n += 1);
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let incoming = Incoming {
                    publish,
                    acker: client.clone(),
                };
                if out.send(incoming).await.is_err() {
                    break;
                }
            }
            Ok(_) => {}
            Err(e) => {
                let msg = e.to_string();
                if down.as_deref() != Some(msg.as_str()) {
                    warn!(%broker, error = %msg, "MQTT connection lost; retrying with back-off");
                }
                down = Some(msg);
                let wait = backoff.next().unwrap_or(Duration::from_secs(30));
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
    // A clean goodbye keeps the session (and our last will) as the broker should.
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while let Ok(ev) = eventloop.poll().await {
            if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                break;
            }
        }
    })
    .await;
}

fn new_backoff() -> backon::ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hub_reads_its_embedded_broker_at_qos_0_and_a_park_broker_at_qos_1() {
        let embedded: MqttConfig = toml::from_str("broker = \"embedded\"").unwrap();
        let local = "127.0.0.1:1883".parse().unwrap();
        let broker = EmbeddedBroker {
            listen: local,
            local,
            login: None,
        };
        let s = settings(&embedded, "h", Some(&broker), vec![]).unwrap();
        assert_eq!(s.qos, QoS::AtMostOnce);
        assert!(
            !s.options.clean_session(),
            "a persistent session all the same"
        );

        let park: MqttConfig = toml::from_str("broker = \"mqtt://10.0.0.5:1883\"").unwrap();
        let s = settings(&park, "h", None, vec![]).unwrap();
        assert_eq!(s.qos, QoS::AtLeastOnce);
        assert!(!s.options.clean_session());
    }

    #[test]
    fn few_wildcard_filters_cover_many_device_topics() {
        let topics = [
            "park/b3/2f/smoke-07",
            "park/b3/lift-1",
            "park/b5/leak",
            "alone",
            "site/x/status",
        ];
        assert_eq!(filters(topics), vec!["alone", "park/#", "site/#"]);
    }
}
