//! Pushes to people: the channels of DESIGN.md (signed webhook, DingTalk, WeCom, Feishu, MQTT,
//! a GPIO siren), each fed from the durable outbox by its lanes.

pub mod channel;
pub mod gpio;
pub mod lane;
pub mod message;
pub mod rate;
pub mod relay;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::alarm::store::{AlarmStore, OutboxRow};
use crate::config::{ChannelConfig, ChannelKind, Config, Language, Location};
use crate::gpio::{Active, Pins};
use crate::mqtt::publisher::Publisher;
use lane::{Channel, LaneMsg, Transport};
use rate::Bucket;
use relay::RelayConfig;
pub use relay::Siren;

/// One push: the webhook body of DESIGN.md, plus a few keys it allows itself to add.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Push {
    pub hub_id: String,
    pub alarm_id: String,
    /// raised | acknowledged | cleared | escalated | repeated
    pub event: String,
    pub severity: String,
    pub category: String,
    pub device_id: String,
    pub device_name: String,
    pub point: Option<String>,
    pub value: serde_json::Value,
    pub location: Location,
    pub department: String,
    /// The line a person reads (the hub's language).
    pub message: String,
    pub raised_at: String,
    pub ts: String,
    /// The rule that raised it, and what it says, in both languages.
    pub rule: String,
    pub summary: String,
    pub summary_en: String,
    /// Who acknowledged it, and what they said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub who: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// Default rate limits (messages a minute, burst) of the chat robots
/// (`alarms-and-push.md`); webhooks and MQTT have none unless configured.
fn default_rate(kind: ChannelKind) -> Option<(u32, u32)> {
    match kind {
        ChannelKind::Dingtalk | ChannelKind::Wecom => Some((20, 20)),
        ChannelKind::Feishu => Some((100, 5)),
        _ => None,
    }
}

/// Hands pushes to the channels' lanes; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    lanes: HashMap<(String, bool), mpsc::UnboundedSender<LaneMsg>>,
    sirens: HashMap<String, Arc<watch::Sender<Siren>>>,
}

impl Notifier {
    /// A notifier whose lanes are the given senders (the tests read what the engine sends).
    pub fn with_lanes(
        lanes: HashMap<(String, bool), mpsc::UnboundedSender<LaneMsg>>,
        sirens: HashMap<String, Arc<watch::Sender<Siren>>>,
    ) -> Self {
        Self { lanes, sirens }
    }

    /// Channels that take pushes through the outbox (all but sirens).
    pub fn has_lane(&self, channel: &str) -> bool {
        self.lanes.contains_key(&(channel.to_string(), true))
    }

    pub fn is_siren(&self, channel: &str) -> bool {
        self.sirens.contains_key(channel)
    }

    /// Pushes stored in the outbox, to their lanes.
    pub fn send(&self, rows: Vec<OutboxRow>) {
        for row in rows {
            if let Some(lane) = self.lanes.get(&(row.channel.clone(), row.urgent)) {
                // A lane gone means the hub is stopping; the row stays in the outbox.
                let _ = lane.send(LaneMsg::Push(row));
            }
        }
    }

    pub fn withdraw(&self, channel: &str, ids: Vec<i64>) {
        if let Some(lane) = self.lanes.get(&(channel.to_string(), false)) {
            let _ = lane.send(LaneMsg::Withdraw(ids));
        }
    }

    /// Sounds or silences a siren; `fresh` when an alarm starts sounding it that did not before.
    pub fn siren(&self, channel: &str, on: bool, fresh: bool) {
        if let Some(s) = self.sirens.get(channel) {
            s.send_if_modified(|v| {
                let next = Siren {
                    on,
                    epoch: v.epoch + u64::from(on && fresh),
                };
                std::mem::replace(v, next) != next
            });
        }
    }
}

/// Where the MQTT channels publish: the park's broker or the embedded one.
pub type MqttTarget = Option<rumqttc::MqttOptions>;

/// Starts every channel's lanes (and sirens), handing them what the outbox still holds.
pub fn start(
    cfg: &Config,
    store: Arc<AlarmStore>,
    mqtt: MqttTarget,
    pins: &Arc<dyn Pins>,
    tasks: &mut JoinSet<()>,
    shutdown: CancellationToken,
) -> anyhow::Result<Notifier> {
    let http = http_client()?;
    let mut department_mobiles: HashMap<String, Vec<String>> = HashMap::new();
    for d in &cfg.departments {
        department_mobiles.insert(
            d.id.clone(),
            d.people.iter().filter_map(|p| p.mobile.clone()).collect(),
        );
    }
    let language = cfg.hub.language;
    let mut notifier = Notifier::default();
    for c in &cfg.channels {
        if c.kind == ChannelKind::Gpio {
            let (tx, rx) = watch::channel(Siren::default());
            notifier.sirens.insert(c.id.clone(), Arc::new(tx));
            let relay = gpio::SirenRelay {
                id: c.id.clone(),
                pin: c.pin.unwrap_or_default(),
                active: if c.active_high.unwrap_or(true) {
                    Active::High
                } else {
                    Active::Low
                },
                plan: RelayConfig::from_channel(c),
            };
            tasks.spawn(relay.run(pins.clone(), rx, shutdown.clone()));
            continue;
        }
        let ch = Arc::new(Channel {
            id: c.id.clone(),
            kind: c.kind,
            transport: transport(c, mqtt.as_ref(), &cfg.hub.id, &shutdown)?,
            language: c.language.unwrap_or(language),
            hub_id: cfg.hub.id.clone(),
            tz: cfg.hub.timezone.0,
            mobiles: c.mobiles.clone(),
            department_mobiles: department_mobiles.clone(),
            http: http.clone(),
            // A configured limit keeps the service's own burst cap (Feishu: 5 a second).
            bucket: c
                .rate_limit_per_min
                .map(|n| (n, default_rate(c.kind).map_or(n.min(20), |(_, b)| b.min(n))))
                .or(default_rate(c.kind))
                .map(|(per_min, burst)| Mutex::new(Bucket::new(per_min, burst, Instant::now()))),
        });
        for urgent in [true, false] {
            let (tx, rx) = mpsc::unbounded_channel();
            notifier.lanes.insert((c.id.clone(), urgent), tx);
            tasks.spawn(lane::run(
                ch.clone(),
                urgent,
                store.clone(),
                rx,
                shutdown.clone(),
            ));
        }
    }
    let pending = store.pending().context("reading the outbox")?;
    if !pending.is_empty() {
        tracing::info!(
            pushes = pending.len(),
            "outbox: delivering what was not delivered before"
        );
    }
    notifier.send(pending);
    Ok(notifier)
}

fn transport(
    c: &ChannelConfig,
    mqtt: Option<&rumqttc::MqttOptions>,
    hub_id: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<Transport> {
    let url = || c.url.clone().unwrap_or_default();
    Ok(match c.kind {
        ChannelKind::Webhook => Transport::Webhook {
            url: url(),
            secret: c
                .secret
                .clone()
                .with_context(|| format!("channel {}: a webhook needs `secret`", c.id))?,
        },
        ChannelKind::Dingtalk => Transport::Dingtalk {
            url: url(),
            secret: c.secret.clone(),
        },
        ChannelKind::Wecom => Transport::Wecom { url: url() },
        ChannelKind::Feishu => Transport::Feishu {
            url: url(),
            secret: c.secret.clone(),
        },
        ChannelKind::Mqtt => {
            let mut options = mqtt.cloned().with_context(|| {
                format!("channel {}: an mqtt channel needs an [mqtt] broker", c.id)
            })?;
            options.set_client_id(format!("parkhub-{hub_id}-alarms-{}", c.id));
            Transport::Mqtt {
                publisher: Publisher::start(options, shutdown.clone()),
                topic: c.topic.clone().unwrap_or_default(),
            }
        }
        ChannelKind::Gpio => anyhow::bail!("channel {}: a siren has no transport", c.id),
    })
}

pub(crate) fn http_client() -> anyhow::Result<reqwest::Client> {
    let tls = match crate::tls::client_config(None, None, "push channels") {
        Ok(t) => t,
        Err(e) => {
            // Plain-HTTP receivers still work; https ones will say why they fail.
            tracing::warn!(error = %e, "no CA certificates: https push channels cannot verify their servers");
            tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
                tokio_rustls::rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(tokio_rustls::rustls::RootCertStore::empty())
            .with_no_client_auth()
        }
    };
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(std::time::Duration::from_secs(5))
        // A redirect turns a POST into a GET without its body: a push would count as
        // delivered without ever being read. A moved receiver is an error to fix.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("building the HTTP client")
}

/// The most of a receiver's answer the hub reads: a chat service's verdict or an error's first
/// lines fit in far less, and a hostile or broken receiver must not fill the memory.
pub const MAX_ANSWER: usize = 64 * 1024;

/// The start of a response's body, at most [`MAX_ANSWER`] bytes; the rest is not read.
pub(crate) async fn answer_of(mut resp: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = MAX_ANSWER - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_ANSWER {
            break;
        }
    }
    body
}

/// A failed request in words: reqwest's message and its causes ("connection refused",
/// "certificate not valid"…), without the URL, which for a chat robot carries its token.
pub fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

impl Language {
    pub fn code(self) -> &'static str {
        match self {
            Language::ZhCn => "zh-CN",
            Language::En => "en",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_the_start_of_a_huge_answer_is_read() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // 32 MB of answer, sent as it is read: a receiver that never stops talking.
        let app = axum::Router::new().fallback(|| async {
            let chunks = (0..512).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 64 * 1024]));
            axum::body::Body::from_stream(futures_util::stream::iter(chunks))
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        let resp = http_client()
            .unwrap()
            .post(format!("http://{addr}/hook"))
            .send()
            .await
            .unwrap();
        let body = answer_of(resp).await;
        assert_eq!(body.len(), MAX_ANSWER);
    }
}
