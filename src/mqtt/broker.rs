//! The broker embedded in the hub (rumqttd), for parks without one of their own.
//!
//! rumqttd panics on configs it cannot use and reports a listener it cannot bind only in its
//! log, so everything it is given is built and checked here first, the port is tried before it
//! starts, and the hub's own client connecting to it is what proves it up.
//!
//! Devices log in with the `[[mqtt.user]]` accounts (the config holds SHA-256 of each
//! password). A loopback-only broker without accounts takes anonymous clients. The hub's own
//! client uses a password made up at start, known only to this process.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::{error, info};

use crate::config::MqttConfig;

/// The hub's own account on the embedded broker.
pub const HUB_USER: &str = "parkhub";

/// A running embedded broker and how the hub's client reaches it.
#[derive(Clone)]
pub struct EmbeddedBroker {
    /// Where it listens.
    pub listen: SocketAddr,
    /// Where the hub's own client connects (loopback, even when it listens on all interfaces).
    pub local: SocketAddr,
    /// The hub client's login, when the broker asks for one.
    pub login: Option<(String, String)>,
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker")
            .field("listen", &self.listen)
            .field("login", &self.login.as_ref().map(|(u, _)| (u, "***")))
            .finish()
    }
}

/// Who may connect: password hashes by user name, plus the hub's own account.
#[derive(Clone)]
struct Accounts {
    users: HashMap<String, [u8; 32]>,
    hub_password: Arc<str>,
}

impl Accounts {
    fn allows(&self, user: &str, password: &str) -> bool {
        if user == HUB_USER {
            return bool::from(password.as_bytes().ct_eq(self.hub_password.as_bytes()));
        }
        match self.users.get(user) {
            Some(hash) => {
                let given: [u8; 32] = Sha256::digest(password.as_bytes()).into();
                bool::from(given.ct_eq(hash))
            }
            None => false,
        }
    }
}

/// Starts the embedded broker of `cfg` and waits until it accepts connections.
pub async fn start(cfg: &MqttConfig) -> anyhow::Result<EmbeddedBroker> {
    let listen = cfg.listen();
    // rumqttd would only log a port it cannot bind: try it first, to fail with a clear error.
    drop(
        TcpListener::bind(listen)
            .with_context(|| format!("the embedded MQTT broker cannot listen on {listen}"))?,
    );
    let local = if listen.ip().is_unspecified() {
        SocketAddr::new(
            if listen.is_ipv4() {
                [127, 0, 0, 1].into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            },
            listen.port(),
        )
    } else {
        listen
    };

    let mut users = HashMap::new();
    for u in &cfg.user {
        let mut hash = [0u8; 32];
        hex::decode_to_slice(&u.password_sha256, &mut hash).with_context(|| {
            format!("mqtt.user {}: password_sha256 is not 64 hex digits", u.name)
        })?;
        users.insert(u.name.clone(), hash);
    }
    // Anonymous clients only on a loopback listener without accounts (config checks refuse a
    // wider listener without accounts).
    let anonymous = users.is_empty() && listen.ip().is_loopback();
    let login = if anonymous {
        None
    } else {
        Some((
            HUB_USER.to_string(),
            crate::random::hex(24).context("the broker's own password")?,
        ))
    };

    let mut connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: cfg.max_payload_bytes() + 1024,
        max_inflight_count: 256,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    if let Some((_, hub_password)) = &login {
        let accounts = Accounts {
            users,
            hub_password: Arc::from(hub_password.as_str()),
        };
        connections.set_auth_handler(move |_client: String, user: String, password: String| {
            let ok = accounts.allows(&user, &password);
            async move { ok }
        });
    }
    let server = rumqttd::ServerSettings {
        name: "parkhub".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 0,
        connections: connections.clone(),
    };
    let config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 10_010,
            max_outgoing_packet_count: 200,
            // Messages wait here for the hub when it falls behind; rumqttd drops the oldest
            // segment when they are all full (it has no back-pressure). The log is kept after
            // delivery too, so its whole size is resident once traffic has filled it, at about
            // three times the payload bytes it counts (heaptrack of a ten-park demo: about
            // 740 KB a 256 KiB segment). 1 MiB is a minute of a park's normal traffic and about
            // 0.1 s of a 50 000 messages/s burst.
            max_segment_size: 128 << 10,
            max_segment_count: 8,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("parkhub".to_string(), server)])),
        v5: None,
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    };

    // `Broker::start` serves until the process ends; give it a thread of its own.
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                error!("embedded MQTT broker stopped: {e}");
            }
        })
        .context("starting the embedded MQTT broker")?;

    // Up when it lets the hub in: a whole MQTT handshake, so the check also proves the hub's
    // own login (a bare TCP connect would only make rumqttd log a broken client).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match handshake(local, login.as_ref()).await {
            Ok(()) => break,
            Err(e) if tokio::time::Instant::now() > deadline => {
                anyhow::bail!("the embedded MQTT broker on {listen} is not up: {e:#}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    info!(%listen, anonymous, "embedded MQTT broker up");
    Ok(EmbeddedBroker {
        listen,
        local,
        login,
    })
}

/// CONNECT, CONNACK accepted, DISCONNECT.
async fn handshake(addr: SocketAddr, login: Option<&(String, String)>) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let mut connect = rumqttc::Connect::new("parkhub-ready");
    if let Some((user, password)) = login {
        connect.set_login(user.clone(), password.clone());
    }
    let mut buf = bytes::BytesMut::new();
    connect
        .write(&mut buf)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    stream.write_all(&buf).await?;
    let mut ack = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut ack)).await??;
    if ack[0] != 0x20 || ack[3] != 0 {
        anyhow::bail!("it refused the hub's own login (CONNACK code {})", ack[3]);
    }
    stream.write_all(&[0xE0, 0x00]).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_check_password_hashes_and_the_hub_secret() {
        let hash: [u8; 32] = Sha256::digest(b"s3cret").into();
        let a = Accounts {
            users: HashMap::from([("door-1".to_string(), hash)]),
            hub_password: Arc::from("hub-pass"),
        };
        assert!(a.allows("door-1", "s3cret"));
        assert!(!a.allows("door-1", "s3cret "));
        assert!(!a.allows("nobody", "s3cret"));
        assert!(a.allows(HUB_USER, "hub-pass"));
        assert!(!a.allows(HUB_USER, ""));
    }
}
