//! The OCPP 1.6J central system: chargers connect over WebSocket to `/ocpp/{charge_point_id}`,
//! one task per connection answers their requests and carries operators' commands to them, and
//! a watchdog marks a charger offline when it falls silent.
//!
//! Who gets in: only configured charge point ids (anything else is a 404 at the handshake),
//! only with subprotocol `ocpp1.6` (400 otherwise), and, for a charger with a password, only
//! with HTTP Basic auth whose user is its id (OCPP security profile 1; 401 otherwise). A second
//! connection of one charger replaces the first: a charger reconnects before the hub has seen
//! its old socket die.
//!
//! A malformed frame or payload is answered with the CALLERROR OCPP-J asks for, and the
//! connection carries on; nothing a charger sends can end another charger's connection.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::extract::ws::{
    rejection::WebSocketUpgradeRejection, Message, WebSocket, WebSocketUpgrade,
};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use chrono::Utc;
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::charger::{self, Charger, Connector, Outcome, Running};
use super::frame::{ErrorCode, Frame, FrameError, MAX_FRAME_BYTES};
use super::messages::{
    self, AuthorizationStatus, BootNotification, Command, CommandConf, IdTagInfo, Message as _,
    RegistrationStatus, Request,
};
use super::sessions::{Sessions, Stopped};
use crate::config::{Authorize, Loaded};
use crate::hub::Hub;
use crate::profile::Protocol;
use crate::text::clip;
use crate::throttle::Throttle;

/// The subprotocol of OCPP 1.6J.
pub const SUBPROTOCOL: &str = "ocpp1.6";

/// How often the watchdog looks for silent chargers.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// The stop reason the log gives a session whose connector began another without stopping it.
pub const SUPERSEDED: &str = "Superseded";

/// Connectors taken from a charger whose `connectors` the config leaves out.
pub const UNCONFIGURED_CONNECTORS: u32 = 8;

/// A charger that takes no data for this long is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Read and write buffer of a charger's WebSocket.
const SOCKET_BUFFER: usize = 4096;

/// Operators' commands waiting for one charger; more are refused as busy.
const COMMAND_QUEUE: usize = 8;

/// One configured charger.
#[derive(Clone)]
pub struct ChargerConfig {
    pub device: Arc<str>,
    pub charge_point_id: String,
    /// SHA-256 of its Basic-auth password.
    pub password_sha256: Option<[u8; 32]>,
    /// Connectors shown before they report (`connectors`, else 1).
    pub connectors: u32,
    /// The highest connector id taken from it: `connectors` when configured, else
    /// [`UNCONFIGURED_CONNECTORS`]. Each connector is points and series of its own: a charger
    /// must not make up thousands.
    pub max_connector: u32,
}

impl std::fmt::Debug for ChargerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChargerConfig")
            .field("device", &self.device)
            .field("charge_point_id", &self.charge_point_id)
            .field("password", &self.password_sha256.map(|_| "<hash>"))
            .field("connectors", &self.connectors)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct CentralConfig {
    pub heartbeat_interval: Duration,
    pub offline_after: Duration,
    pub authorize: Authorize,
    pub id_tags: HashSet<String>,
    pub command_timeout: Duration,
    pub chargers: Vec<ChargerConfig>,
}

impl CentralConfig {
    /// The central system a config asks for; `None` without OCPP devices.
    pub fn from_loaded(loaded: &Loaded) -> Option<CentralConfig> {
        let cfg = &loaded.config;
        let chargers: Vec<ChargerConfig> = loaded
            .enabled_devices(Protocol::Ocpp)
            .map(|d| ChargerConfig {
                device: Arc::from(d.id.as_str()),
                charge_point_id: d.charge_point_id().to_string(),
                password_sha256: d.password_sha256.as_deref().and_then(|h| {
                    let mut out = [0u8; 32];
                    hex::decode_to_slice(h, &mut out).ok().map(|()| out)
                }),
                connectors: d.connectors.unwrap_or(1),
                max_connector: d.connectors.unwrap_or(UNCONFIGURED_CONNECTORS),
            })
            .collect();
        if chargers.is_empty() {
            return None;
        }
        let o = &cfg.ocpp;
        Some(CentralConfig {
            heartbeat_interval: Duration::from_secs(o.heartbeat_interval_s),
            offline_after: Duration::from_secs(o.offline_after_s()),
            authorize: o.authorize,
            // OCPP's IdToken is a CiString: compared without regard to case.
            id_tags: o.id_tags.iter().map(|t| t.to_ascii_uppercase()).collect(),
            command_timeout: Duration::from_secs(o.command_timeout_s),
            chargers,
        })
    }
}

/// Why an operator's command got no answer from the charger.
#[derive(Debug, Error)]
pub enum CommandError {
    #[error("no charger `{0}`")]
    UnknownCharger(String),
    #[error("charger `{0}` is not connected")]
    NotConnected(String),
    #[error("charger `{0}` has too many commands waiting")]
    Busy(String),
    #[error("charger `{device}` did not answer within {secs} s")]
    Timeout { device: String, secs: u64 },
    #[error("the connection to charger `{0}` was lost before it answered")]
    ConnectionLost(String),
    /// The charger answered with a CALLERROR.
    #[error("charger `{device}` refused: {code} {description}")]
    Refused {
        device: String,
        code: ErrorCode,
        description: String,
    },
    #[error("charger `{device}` answered with something that is no answer: {reason}")]
    BadAnswer { device: String, reason: String },
}

/// What a charger said of itself at boot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BootInfo {
    pub vendor: String,
    pub model: String,
    pub serial: Option<String>,
    pub firmware: Option<String>,
    pub booted_at: chrono::DateTime<Utc>,
}

/// A charger as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ChargerView {
    pub device_id: Arc<str>,
    pub charge_point_id: String,
    pub connected: bool,
    pub connected_since: Option<chrono::DateTime<Utc>>,
    pub boot: Option<BootInfo>,
    /// Connector 0 (the charger as a whole) first.
    pub connectors: Vec<Connector>,
}

struct CommandRequest {
    command: Command,
    reply: oneshot::Sender<Result<CommandConf, CommandError>>,
}

/// The live connection of a charger.
struct Link {
    generation: u64,
    commands: mpsc::Sender<CommandRequest>,
    /// Cancelled to close it (replaced by a newer one, or silent too long).
    close: CancellationToken,
    since: chrono::DateTime<Utc>,
}

struct Slot {
    cfg: ChargerConfig,
    state: Mutex<Charger>,
    link: Mutex<Option<Link>>,
    last_heard: Mutex<Instant>,
    boot: Mutex<Option<BootInfo>>,
}

/// Counters of what the central system refused.
#[derive(Debug, Default)]
pub struct CentralStats {
    pub unknown_chargers: AtomicU64,
    pub bad_auth: AtomicU64,
    pub bad_subprotocol: AtomicU64,
    pub bad_frames: AtomicU64,
    pub connections: AtomicU64,
}

pub struct Central {
    cfg: CentralConfig,
    slots: Vec<Slot>,
    by_cp: HashMap<String, usize>,
    by_device: HashMap<Arc<str>, usize>,
    hub: Arc<Hub>,
    sessions: Arc<Sessions>,
    generation: AtomicU64,
    /// Cancelled when the hub stops: connections end, new ones are refused.
    stopping: CancellationToken,
    /// Refused handshakes are logged once a minute per reason: a misconfigured charger retries
    /// every few seconds, a scanner far more often.
    refusals: Mutex<Throttle<Refusal>>,
    pub stats: CentralStats,
}

impl std::fmt::Debug for Central {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Central")
            .field("chargers", &self.slots.len())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Central {
    /// The central system of `cfg`'s chargers; sessions left running when the hub stopped are
    /// picked up again from the charging log.
    pub fn new(
        cfg: CentralConfig,
        hub: Arc<Hub>,
        sessions: Arc<Sessions>,
    ) -> anyhow::Result<Arc<Central>> {
        let now = Instant::now();
        let slots: Vec<Slot> = cfg
            .chargers
            .iter()
            .map(|c| Slot {
                cfg: c.clone(),
                state: Mutex::new(Charger::new(c.device.clone(), c.connectors)),
                link: Mutex::new(None),
                last_heard: Mutex::new(now),
                boot: Mutex::new(None),
            })
            .collect();
        let by_cp = slots
            .iter()
            .enumerate()
            .map(|(i, s)| (s.cfg.charge_point_id.clone(), i))
            .collect();
        let by_device: HashMap<Arc<str>, usize> = slots
            .iter()
            .enumerate()
            .map(|(i, s)| (s.cfg.device.clone(), i))
            .collect();
        for s in sessions.running()? {
            if let Some(&i) = by_device.get(s.device_id.as_str()) {
                lock(&slots[i].state).resume(
                    s.connector,
                    Running {
                        transaction_id: s.transaction_id,
                        id_tag: s.id_tag,
                        started_at: s.started_at,
                        meter_start_wh: s.meter_start_wh,
                        energy_kwh: 0.0,
                    },
                );
            }
        }
        Ok(Arc::new(Central {
            cfg,
            slots,
            by_cp,
            by_device,
            hub,
            sessions,
            generation: AtomicU64::new(0),
            stopping: CancellationToken::new(),
            refusals: Mutex::new(Throttle::new(Duration::from_secs(60))),
            stats: CentralStats::default(),
        }))
    }

    /// The WebSocket endpoint, to merge into a router (outside the API's auth and compression).
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/ocpp/{charge_point_id}", get(connect))
            .with_state(self.clone())
    }

    /// Marks chargers offline when they fall silent, until `shutdown`.
    pub async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(WATCH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => self.check_silence(Instant::now()),
            }
        }
        // Closes every connection, and refuses new ones: chargers reconnect to the next hub.
        // (Connection tasks hold the central system, and with it the hub and its history
        // writer, which must stop.)
        self.stopping.cancel();
    }

    fn check_silence(&self, now: Instant) {
        for s in &self.slots {
            // Under the link's lock, where a new connection also sets `last_heard`: a charger
            // reconnecting just now is not taken for a silent one.
            let mut link = lock(&s.link);
            let silent = now.saturating_duration_since(*lock(&s.last_heard));
            if silent < self.cfg.offline_after {
                continue;
            }
            // A silent socket is a dead one (a half-open TCP connection): close it, so that
            // nothing waits on it.
            if let Some(link) = link.take() {
                link.close.cancel();
            }
            drop(link);
            let device = &s.cfg.device;
            let was = self.hub.device(device).and_then(|d| d.online);
            if was != Some(false) {
                let reason = format!("no message for {} s", silent.as_secs());
                if self.hub.set_online(device, false, Some(reason)) == Some(false) {
                    warn!(%device, charge_point = %s.cfg.charge_point_id, "charger offline: heartbeats stopped");
                }
            }
        }
    }

    /// Every charger, with its connectors and running sessions.
    pub fn chargers(&self) -> Vec<ChargerView> {
        self.slots
            .iter()
            .map(|s| {
                let link = lock(&s.link);
                ChargerView {
                    device_id: s.cfg.device.clone(),
                    charge_point_id: s.cfg.charge_point_id.clone(),
                    connected: link.is_some(),
                    connected_since: link.as_ref().map(|l| l.since),
                    boot: lock(&s.boot).clone(),
                    connectors: lock(&s.state).view(),
                }
            })
            .collect()
    }

    pub fn charger(&self, device: &str) -> Option<ChargerView> {
        let &i = self.by_device.get(device)?;
        self.chargers().into_iter().nth(i)
    }

    /// The latest charging sessions (of one charger, or of all), newest first; a running
    /// session's energy is as of its connector's latest meter reading.
    pub async fn sessions(
        &self,
        device: Option<String>,
        limit: usize,
    ) -> anyhow::Result<Vec<super::sessions::Session>> {
        let mut list = self
            .log("be read", move |log| log.list(device.as_deref(), limit))
            .await
            .map_err(|(_, e)| anyhow::anyhow!(e))?;
        for s in list.iter_mut().filter(|s| s.stopped_at.is_none()) {
            if let Some(&i) = self.by_device.get(s.device_id.as_str()) {
                let state = lock(&self.slots[i].state);
                s.energy_kwh = state
                    .view()
                    .iter()
                    .find_map(|c| {
                        c.session
                            .as_ref()
                            .filter(|r| r.transaction_id == s.transaction_id)
                    })
                    .map(|r| r.energy_kwh);
            }
        }
        Ok(list)
    }

    /// Sends `command` to the charger of `device` and returns its answer.
    pub async fn command(
        &self,
        device: &str,
        command: Command,
    ) -> Result<CommandConf, CommandError> {
        let &i = self
            .by_device
            .get(device)
            .ok_or_else(|| CommandError::UnknownCharger(device.to_string()))?;
        let tx = lock(&self.slots[i].link)
            .as_ref()
            .map(|l| l.commands.clone())
            .ok_or_else(|| CommandError::NotConnected(device.to_string()))?;
        let (reply, answer) = oneshot::channel();
        tx.try_send(CommandRequest { command, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => CommandError::Busy(device.to_string()),
                mpsc::error::TrySendError::Closed(_) => {
                    CommandError::NotConnected(device.to_string())
                }
            })?;
        // The connection answers within the command timeout; waiting for the queue ahead as
        // well is bounded by the queue's length.
        let wait = self.cfg.command_timeout * (COMMAND_QUEUE as u32 + 1);
        match tokio::time::timeout(wait, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(CommandError::ConnectionLost(device.to_string())),
            Err(_) => Err(CommandError::Timeout {
                device: device.to_string(),
                secs: wait.as_secs(),
            }),
        }
    }

    fn heard(&self, i: usize) {
        *lock(&self.slots[i].last_heard) = Instant::now();
        let device = &self.slots[i].cfg.device;
        if self.hub.set_online(device, true, None) == Some(true) {
            info!(%device, "charger online");
        }
    }

    /// Serves one connection until it closes, is replaced, or the hub stops.
    async fn serve(self: Arc<Self>, i: usize, mut socket: WebSocket) {
        let slot = &self.slots[i];
        let device = slot.cfg.device.clone();
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let close = CancellationToken::new();
        let (tx, mut commands) = mpsc::channel(COMMAND_QUEUE);
        let replaced = {
            let mut link = lock(&slot.link);
            *lock(&slot.last_heard) = Instant::now();
            link.replace(Link {
                generation,
                commands: tx,
                close: close.clone(),
                since: Utc::now(),
            })
        };
        if let Some(old) = replaced {
            info!(%device, "charger reconnected; closing its previous connection");
            old.close.cancel();
        }
        self.stats.connections.fetch_add(1, Ordering::Relaxed);
        info!(%device, charge_point = %slot.cfg.charge_point_id, "charger connected");
        self.heard(i);

        // One call of ours in flight at a time, as OCPP-J asks.
        let mut pending: Option<Pending> = None;
        let mut next_id: u64 = 0;
        loop {
            let deadline = pending.as_ref().map(|p| p.deadline);
            tokio::select! {
                _ = close.cancelled() => break,
                _ = self.stopping.cancelled() => break,
                _ = sleep_until(deadline), if deadline.is_some() => {
                    if let Some(p) = pending.take() {
                        let _ = p.reply.send(Err(CommandError::Timeout {
                            device: device.to_string(),
                            secs: self.cfg.command_timeout.as_secs(),
                        }));
                    }
                }
                Some(req) = commands.recv(), if pending.is_none() => {
                    // Its caller has given up (timed out, hung up): a Reset or an unlock
                    // minutes later, unseen, would be worse than none.
                    if req.reply.is_closed() {
                        continue;
                    }
                    next_id += 1;
                    let id = format!("ph-{generation}-{next_id}");
                    let frame = Frame::Call {
                        id: id.clone(),
                        action: req.command.action().to_string(),
                        payload: req.command.to_payload(),
                    };
                    if !self.send(&mut socket, frame, &close).await {
                        let _ = req.reply.send(Err(CommandError::ConnectionLost(device.to_string())));
                        break;
                    }
                    pending = Some(Pending {
                        id,
                        action: req.command.action(),
                        reply: req.reply,
                        deadline: Instant::now() + self.cfg.command_timeout,
                    });
                }
                msg = socket.recv() => {
                    let text = match msg {
                        None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Binary(_))) => {
                            self.heard(i);
                            self.refused(&device, "a binary frame (OCPP-J sends text)".into());
                            continue;
                        }
                        // Pings are answered by the WebSocket layer; either way the charger lives.
                        Some(Ok(_)) => {
                            self.heard(i);
                            continue;
                        }
                    };
                    self.heard(i);
                    if let Some(answer) = self.on_text(i, text.as_str(), &mut pending).await {
                        if !self.send(&mut socket, answer, &close).await {
                            break;
                        }
                    }
                }
            }
        }
        if let Some(p) = pending.take() {
            let _ = p
                .reply
                .send(Err(CommandError::ConnectionLost(device.to_string())));
        }
        let mut link = lock(&slot.link);
        if link.as_ref().is_some_and(|l| l.generation == generation) {
            *link = None;
        }
        drop(link);
        info!(%device, "charger disconnected");
    }

    /// Sends a frame; false when the connection is gone, is to close, or has taken no data
    /// for [`SEND_TIMEOUT`] (a charger that stops reading must not hold its task, and with
    /// it the hub's shutdown, for ever).
    async fn send(&self, socket: &mut WebSocket, frame: Frame, close: &CancellationToken) -> bool {
        tokio::select! {
            sent = tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::text(frame.to_text()))) => {
                matches!(sent, Ok(Ok(())))
            }
            _ = close.cancelled() => false,
            _ = self.stopping.cancelled() => false,
        }
    }

    fn refused(&self, device: &str, problem: String) {
        self.stats.bad_frames.fetch_add(1, Ordering::Relaxed);
        debug!(%device, %problem, "refused from charger");
        self.hub.record_messages(device, 0, 1, Some(problem));
    }

    /// One text frame: a CALL is answered; a reply settles our pending call.
    async fn on_text(&self, i: usize, text: &str, pending: &mut Option<Pending>) -> Option<Frame> {
        let device = self.slots[i].cfg.device.clone();
        let frame = match Frame::parse(text) {
            Ok(f) => f,
            Err(e) => {
                self.refused(&device, e.to_string());
                if let FrameError::BadReply { id, .. } = &e {
                    self.settle(pending, id, Err(format!("{e}")), &device);
                }
                return e.answer();
            }
        };
        match frame {
            Frame::Call {
                id,
                action,
                payload,
            } => {
                let answer = match messages::decode_request(&action, &payload) {
                    Ok(req) => self.on_request(i, req).await,
                    Err((code, why)) => Err((code, why)),
                };
                Some(match answer {
                    Ok(payload) => {
                        self.hub.record_messages(&device, 1, 0, None);
                        Frame::CallResult { id, payload }
                    }
                    Err((code, why)) => {
                        self.refused(&device, format!("{}: {why}", clip(&action)));
                        Frame::call_error(id, code, &why)
                    }
                })
            }
            Frame::CallResult { id, payload } => {
                self.settle(pending, &id, Ok(payload), &device);
                None
            }
            Frame::CallError {
                id,
                code,
                description,
                ..
            } => {
                let p = pending.take_if(|p| p.id == id);
                match p {
                    Some(p) => {
                        let _ = p.reply.send(Err(CommandError::Refused {
                            device: device.to_string(),
                            code,
                            description,
                        }));
                    }
                    None => self.refused(
                        &device,
                        format!("a CALLERROR for no call of ours ({})", clip(&id)),
                    ),
                }
                None
            }
        }
    }

    /// Settles our pending call `id` with the charger's answer.
    fn settle(
        &self,
        pending: &mut Option<Pending>,
        id: &str,
        answer: Result<Value, String>,
        device: &str,
    ) {
        let Some(p) = pending.take_if(|p| p.id == id) else {
            if answer.is_ok() {
                self.refused(
                    device,
                    format!("a CALLRESULT for no call of ours ({})", clip(id)),
                );
            }
            return;
        };
        let result = answer
            .map_err(|reason| CommandError::BadAnswer {
                device: device.to_string(),
                reason,
            })
            .and_then(|payload| {
                messages::decode_command_conf(p.action, &payload).map_err(|(_, reason)| {
                    CommandError::BadAnswer {
                        device: device.to_string(),
                        reason,
                    }
                })
            });
        let _ = p.reply.send(result);
    }

    /// The payload answering a charger's request, or the CALLERROR refusing it.
    async fn on_request(&self, i: usize, req: Request) -> Result<Value, messages::Refusal> {
        let slot = &self.slots[i];
        let device = slot.cfg.device.clone();
        let now = Utc::now();
        let connector = match &req {
            Request::StatusNotification(n) => Some(n.connector_id),
            Request::MeterValues(m) => Some(m.connector_id),
            Request::StartTransaction(s) => Some(s.connector_id),
            _ => None,
        };
        if let Some(n) = connector.filter(|n| *n > slot.cfg.max_connector) {
            return Err((
                ErrorCode::PropertyConstraintViolation,
                format!(
                    "connector {n} is not one of this charger's {} (set `connectors` in the hub's config)",
                    slot.cfg.max_connector
                ),
            ));
        }
        match req {
            Request::BootNotification(b) => {
                self.on_boot(i, b, now);
                Ok(messages::BootNotificationConf {
                    status: RegistrationStatus::Accepted,
                    current_time: now,
                    interval: i32::try_from(self.cfg.heartbeat_interval.as_secs())
                        .unwrap_or(i32::MAX),
                }
                .to_payload())
            }
            Request::Heartbeat(_) => Ok(messages::HeartbeatConf { current_time: now }.to_payload()),
            Request::StatusNotification(n) => {
                let out = lock(&slot.state).status(&n, now);
                if n.error_code != messages::ChargePointErrorCode::NoError {
                    warn!(%device, connector = n.connector_id, status = %n.status, error = %n.error_code, "charger reports a fault");
                }
                self.ingest(&device, out).await;
                Ok(messages::StatusNotificationConf {}.to_payload())
            }
            Request::MeterValues(m) => {
                let out = lock(&slot.state).meter_values(&m, now);
                self.ingest(&device, out).await;
                Ok(messages::MeterValuesConf {}.to_payload())
            }
            Request::Authorize(a) => Ok(messages::AuthorizeConf {
                id_tag_info: self.authorize(&a.id_tag),
            }
            .to_payload()),
            Request::StartTransaction(s) => {
                let info = self.authorize(&s.id_tag);
                let started_at = charger::stamp(Some(s.timestamp), now);
                let (dev, tag) = (device.to_string(), s.id_tag.clone());
                let (connector, meter) = (s.connector_id, s.meter_start);
                // Without a stored id there is no answer: the charger will ask again.
                let id = self
                    .log("store the session", move |log| {
                        log.start(&dev, connector, &tag, started_at, meter)
                    })
                    .await?;
                info!(%device, connector, transaction = id, "charging session started");
                let (out, superseded) = lock(&slot.state).started(
                    connector,
                    Running {
                        transaction_id: id,
                        id_tag: s.id_tag,
                        started_at,
                        meter_start_wh: meter,
                        energy_kwh: 0.0,
                    },
                );
                self.ingest(&device, out).await;
                if let Some(old) = superseded {
                    self.close_superseded(&device, old, started_at).await;
                }
                Ok(messages::StartTransactionConf {
                    id_tag_info: info,
                    transaction_id: id,
                }
                .to_payload())
            }
            Request::StopTransaction(s) => {
                let stopped_at = charger::stamp(Some(s.timestamp), now);
                let reason = s.reason.map_or("Local", |r| r.as_str()).to_string();
                let dev = device.to_string();
                let (tx, meter, tag) = (s.transaction_id, s.meter_stop, s.id_tag.clone());
                let stopped = self
                    .log("store the stop", move |log| {
                        log.stop(&dev, tx, stopped_at, meter, &reason, tag.as_deref())
                    })
                    .await?;
                match stopped {
                    Stopped::Closed(done) => {
                        info!(%device, connector = done.connector, transaction = tx, energy_kwh = done.energy_kwh, "charging session stopped");
                        let out = lock(&slot.state).stopped(done.connector, tx, meter, stopped_at);
                        self.ingest(&device, out).await;
                    }
                    Stopped::Again(_) => debug!(%device, transaction = tx, "StopTransaction again"),
                    // Still accepted: refusing would make the charger send it for ever.
                    Stopped::Unknown => {
                        warn!(%device, transaction = tx, "StopTransaction of a transaction the hub never started")
                    }
                }
                Ok(messages::StopTransactionConf {
                    id_tag_info: s.id_tag.as_deref().map(|t| self.authorize(t)),
                }
                .to_payload())
            }
            Request::DataTransfer(d) => {
                debug!(%device, vendor = %clip(&d.vendor_id), "DataTransfer from charger");
                // The hub knows no vendor's extensions; this is the answer the spec gives then.
                Ok(json!({ "status": "UnknownVendorId" }))
            }
        }
    }

    /// Closes in the log a session whose StopTransaction never came, at the start of the one
    /// that took its connector, with the energy last read.
    async fn close_superseded(&self, device: &str, old: Running, at: chrono::DateTime<Utc>) {
        let meter = old.meter_start_wh + (old.energy_kwh * 1000.0).round() as i64;
        let (dev, id) = (device.to_string(), old.transaction_id);
        let done = self
            .log("close a superseded session", move |log| {
                log.stop(&dev, id, at, meter, SUPERSEDED, None)
            })
            .await;
        match done {
            Ok(_) => {
                warn!(%device, transaction = id, "session closed: its connector began another without stopping it")
            }
            Err((_, e)) => {
                warn!(%device, transaction = id, error = %e, "cannot close a superseded session")
            }
        }
    }

    /// Runs `f` on the charging log, on the blocking pool (a commit waits for the disk); a
    /// failure is the CALLERROR that answers the charger.
    async fn log<T: Send + 'static>(
        &self,
        what: &str,
        f: impl FnOnce(&Sessions) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, messages::Refusal> {
        let store = self.sessions.clone();
        let failed = |e: &dyn std::fmt::Display| {
            (
                ErrorCode::InternalError,
                format!("the charging log cannot {what}: {e}"),
            )
        };
        match tokio::task::spawn_blocking(move || f(&store)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(failed(&e)),
            Err(e) => Err(failed(&e)),
        }
    }

    fn on_boot(&self, i: usize, b: BootNotification, now: chrono::DateTime<Utc>) {
        let slot = &self.slots[i];
        info!(device = %slot.cfg.device, vendor = %b.charge_point_vendor, model = %b.charge_point_model, "charger booted");
        *lock(&slot.boot) = Some(BootInfo {
            vendor: b.charge_point_vendor,
            model: b.charge_point_model,
            serial: b.charge_point_serial_number.or(b.charge_box_serial_number),
            firmware: b.firmware_version,
            booted_at: now,
        });
    }

    fn authorize(&self, id_tag: &str) -> IdTagInfo {
        let status = match self.cfg.authorize {
            Authorize::AcceptAll => AuthorizationStatus::Accepted,
            Authorize::LocalList if self.cfg.id_tags.contains(&id_tag.to_ascii_uppercase()) => {
                AuthorizationStatus::Accepted
            }
            Authorize::LocalList => AuthorizationStatus::Invalid,
        };
        IdTagInfo {
            expiry_date: None,
            parent_id_tag: None,
            status,
        }
    }

    async fn ingest(&self, device: &str, out: Outcome) {
        if out.rejected > 0 {
            self.hub.record_messages(
                device,
                0,
                out.rejected as u64,
                Some(out.problems.join("; ")),
            );
        }
        self.hub.ingest(out.readings).await;
    }

    /// Who may open a connection as `cp`: the charger's index, or why not (counted, and
    /// logged at most once a minute per reason).
    fn admit(&self, cp: &str, headers: &HeaderMap) -> Result<usize, Refusal> {
        let refused = |r: Refusal| {
            let counter = match r {
                Refusal::UnknownCharger => &self.stats.unknown_chargers,
                Refusal::Subprotocol => &self.stats.bad_subprotocol,
                Refusal::Password | Refusal::Browser => &self.stats.bad_auth,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            if let Some(held) = lock(&self.refusals).allow(r) {
                warn!(charge_point = %clip(cp), more_since_last = held, "charger connection refused: {}", r.why());
            }
            Err(r)
        };
        let Some(&i) = self.by_cp.get(cp) else {
            return refused(Refusal::UnknownCharger);
        };
        let offered = headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim() == SUBPROTOCOL);
        if !offered {
            return refused(Refusal::Subprotocol);
        }
        match &self.slots[i].cfg.password_sha256 {
            Some(want) if !basic_auth_ok(headers, cp, want) => refused(Refusal::Password),
            // WebSockets know no CORS: any page in a browser on the park's network could
            // play a charger that has no password. Browsers always send `Origin`; chargers do
            // not (one whose firmware does needs a password).
            None if headers.contains_key(header::ORIGIN) => refused(Refusal::Browser),
            _ => Ok(i),
        }
    }
}

/// Why a charger's connection is refused at the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Refusal {
    UnknownCharger,
    Subprotocol,
    Password,
    /// A browser page (it sent `Origin`) for a charger without a password.
    Browser,
}

impl Refusal {
    fn why(self) -> &'static str {
        match self {
            Refusal::UnknownCharger => "unknown charge point id",
            Refusal::Subprotocol => "no subprotocol ocpp1.6",
            Refusal::Password => "wrong or missing password",
            Refusal::Browser => {
                "a browser page (Origin header) for a charger without a password; give the charger a password_sha256 if its firmware sends Origin"
            }
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::UnknownCharger => {
                (StatusCode::NOT_FOUND, "unknown charge point").into_response()
            }
            Refusal::Subprotocol => {
                (StatusCode::BAD_REQUEST, "subprotocol ocpp1.6 required").into_response()
            }
            Refusal::Browser => (
                StatusCode::FORBIDDEN,
                "browsers may not connect as chargers",
            )
                .into_response(),
            Refusal::Password => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Basic realm=\"parkhub-ocpp\"")],
                "charger password required",
            )
                .into_response(),
        }
    }
}

struct Pending {
    id: String,
    action: &'static str,
    reply: oneshot::Sender<Result<CommandConf, CommandError>>,
    deadline: Instant,
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// HTTP Basic auth of OCPP security profile 1: the user is the charge point id, the password's
/// SHA-256 is the configured one (compared in constant time).
fn basic_auth_ok(headers: &HeaderMap, cp: &str, want: &[u8; 32]) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, b)| b)
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
    else {
        return false;
    };
    // The password may hold any byte; the user part ends at the first colon (RFC 7617).
    let Some(colon) = given.iter().position(|&b| b == b':') else {
        return false;
    };
    let (user, password) = (&given[..colon], &given[colon + 1..]);
    let digest: [u8; 32] = Sha256::digest(password).into();
    bool::from(digest.ct_eq(want)) & (user == cp.as_bytes())
}

async fn connect(
    State(central): State<Arc<Central>>,
    Path(cp): Path<String>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if central.stopping.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "the hub is stopping").into_response();
    }
    let i = match central.admit(&cp, &headers) {
        Ok(i) => i,
        Err(refusal) => return refusal.into_response(),
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => return e.into_response(),
    };
    // OCPP frames are small: tungstenite's default 128 KiB read and write buffers would make
    // 500 chargers cost 128 MB; 4 KiB ones grow for the rare larger frame.
    ws.protocols([SUBPROTOCOL])
        .read_buffer_size(SOCKET_BUFFER)
        .write_buffer_size(SOCKET_BUFFER)
        // A charger that stops reading cannot make the hub hold its unsent frames for ever.
        .max_write_buffer_size(MAX_FRAME_BYTES * 4)
        // A frame somewhat over the limit is read, refused and counted, and the connection
        // carries on; one of more than four times the limit ends it.
        .max_frame_size(MAX_FRAME_BYTES * 4)
        .max_message_size(MAX_FRAME_BYTES * 4)
        .on_upgrade(move |socket| central.serve(i, socket))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    fn basic(user_pass: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        )
    }

    fn central(dir: &std::path::Path) -> (Arc<Central>, Arc<Hub>) {
        let hub = Hub::new(
            vec![crate::hub::DeviceInfo {
                id: Arc::from("cp-1"),
                name: "1号桩".into(),
                profile: "ocpp16-charger".into(),
                category: "charger".into(),
                location: crate::config::Location::default(),
            }],
            None,
        );
        let cfg = CentralConfig {
            heartbeat_interval: Duration::from_secs(60),
            offline_after: Duration::from_secs(150),
            authorize: Authorize::LocalList,
            id_tags: ["CARD-1".to_string()].into(),
            command_timeout: Duration::from_secs(30),
            chargers: vec![ChargerConfig {
                device: Arc::from("cp-1"),
                charge_point_id: "CP1".into(),
                password_sha256: None,
                connectors: 2,
                max_connector: 2,
            }],
        };
        let sessions = Arc::new(Sessions::open(&dir.join("charging.sqlite")).unwrap());
        (Central::new(cfg, hub.clone(), sessions).unwrap(), hub)
    }

    #[tokio::test(start_paused = true)]
    async fn a_charger_silent_past_offline_after_is_offline_and_a_message_brings_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let (c, hub) = central(dir.path());
        c.heard(0);
        assert_eq!(hub.device("cp-1").unwrap().online, Some(true));
        tokio::time::advance(Duration::from_secs(149)).await;
        c.check_silence(Instant::now());
        assert_eq!(
            hub.device("cp-1").unwrap().online,
            Some(true),
            "a heartbeat may still come"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        c.check_silence(Instant::now());
        let d = hub.device("cp-1").unwrap();
        assert_eq!(d.online, Some(false));
        assert!(d
            .last_error
            .unwrap_or_default()
            .contains("no message for 151 s"));
        c.heard(0);
        assert_eq!(hub.device("cp-1").unwrap().online, Some(true));
    }

    #[tokio::test(start_paused = true)]
    async fn a_charger_that_never_connects_goes_offline_after_the_same_wait() {
        let dir = tempfile::tempdir().unwrap();
        let (c, hub) = central(dir.path());
        let watch = tokio::spawn(c.clone().watch(CancellationToken::new()));
        tokio::time::sleep(Duration::from_secs(149)).await;
        assert_eq!(hub.device("cp-1").unwrap().online, None, "no verdict yet");
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(hub.device("cp-1").unwrap().online, Some(false));
        watch.abort();
    }

    #[tokio::test]
    async fn a_charger_cannot_make_up_connectors_beyond_its_configured_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (c, hub) = central(dir.path());
        let status = |connector_id| {
            Request::StatusNotification(messages::StatusNotification {
                connector_id,
                error_code: messages::ChargePointErrorCode::NoError,
                info: None,
                status: messages::ChargePointStatus::Available,
                timestamp: None,
                vendor_id: None,
                vendor_error_code: None,
            })
        };
        assert!(c.on_request(0, status(2)).await.is_ok());
        let (code, why) = c.on_request(0, status(3)).await.unwrap_err();
        assert_eq!(code, ErrorCode::PropertyConstraintViolation);
        assert!(why.contains("connector 3"), "{why}");
        let points = hub.device("cp-1").unwrap().points;
        assert!(points.contains_key("connector2.status"));
        assert!(!points.contains_key("connector3.status"));
    }

    /// The central system served on a loopback port; its address.
    async fn serve(c: &Arc<Central>) -> std::net::SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(std::future::IntoFuture::into_future(axum::serve(
            l,
            c.router(),
        )));
        addr
    }

    fn request(
        addr: std::net::SocketAddr,
        origin: Option<&str>,
    ) -> tokio_tungstenite::tungstenite::handshake::client::Request {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut r = format!("ws://{addr}/ocpp/CP1")
            .into_client_request()
            .unwrap();
        r.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(SUBPROTOCOL),
        );
        if let Some(o) = origin {
            r.headers_mut()
                .insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        r
    }

    #[tokio::test]
    async fn a_browser_page_cannot_play_a_charger_without_a_password() {
        let dir = tempfile::tempdir().unwrap();
        let (c, _) = central(dir.path());
        let addr = serve(&c).await;
        let refused = tokio_tungstenite::connect_async(request(addr, Some("http://evil.example")))
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, tokio_tungstenite::tungstenite::Error::Http(r) if r.status() == 403),
            "{refused:?}"
        );
        assert_eq!(c.stats.bad_auth.load(Ordering::Relaxed), 1);
        assert!(tokio_tungstenite::connect_async(request(addr, None))
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn a_charger_that_stops_reading_cannot_hold_up_the_hubs_stop() {
        use futures_util::SinkExt as _;
        use tokio_tungstenite::tungstenite::Message as WsMessage;
        let dir = tempfile::tempdir().unwrap();
        let (c, _) = central(dir.path());
        let addr = serve(&c).await;
        let (mut ws, _) = tokio_tungstenite::connect_async(request(addr, None))
            .await
            .unwrap();
        // Heartbeats, and never a read: the hub's answers fill the socket until its sends
        // wait; then its reads stop too, and ours wait.
        let mut sent = 0u64;
        loop {
            let frame = format!("[2,\"hb-{sent}\",\"Heartbeat\",{{}}]");
            let send = ws.send(WsMessage::text(frame));
            match tokio::time::timeout(Duration::from_millis(500), send).await {
                Ok(Ok(())) => sent += 1,
                Ok(Err(e)) => panic!("the hub dropped the connection early: {e}"),
                Err(_) => break,
            }
            assert!(sent < 5_000_000, "the hub never stopped reading");
        }
        assert!(
            lock(&c.slots[0].link).is_some(),
            "still connected, stuck in a send"
        );
        let stop = CancellationToken::new();
        let watch = tokio::spawn(c.clone().watch(stop.clone()));
        stop.cancel();
        watch.await.unwrap();
        let ended = async {
            while lock(&c.slots[0].link).is_some() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(3), ended)
            .await
            .expect("the connection's task ended when the hub stopped");
        drop(ws);
    }

    #[tokio::test]
    async fn the_local_list_accepts_its_cards_only() {
        let dir = tempfile::tempdir().unwrap();
        let (c, _) = central(dir.path());
        assert_eq!(c.authorize("CARD-1").status, AuthorizationStatus::Accepted);
        assert_eq!(
            c.authorize("card-1").status,
            AuthorizationStatus::Accepted,
            "id tags are case-insensitive (CiString20)"
        );
        assert_eq!(c.authorize("CARD-2").status, AuthorizationStatus::Invalid);
    }

    #[tokio::test]
    async fn a_command_to_a_charger_that_is_not_connected_fails_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (c, _) = central(dir.path());
        let reset = Command::Reset(messages::Reset {
            kind: messages::ResetType::Soft,
        });
        assert!(matches!(
            c.command("cp-1", reset.clone()).await,
            Err(CommandError::NotConnected(_))
        ));
        assert!(matches!(
            c.command("cp-9", reset).await,
            Err(CommandError::UnknownCharger(_))
        ));
    }

    #[test]
    fn basic_auth_takes_the_right_password_for_the_right_charger_only() {
        let want: [u8; 32] = Sha256::digest(b"s3cret:with:colons").into();
        assert!(basic_auth_ok(
            &headers(&basic("CP001:s3cret:with:colons")),
            "CP001",
            &want
        ));
        assert!(!basic_auth_ok(
            &headers(&basic("CP001:wrong")),
            "CP001",
            &want
        ));
        assert!(!basic_auth_ok(
            &headers(&basic("CP002:s3cret:with:colons")),
            "CP001",
            &want
        ));
        assert!(!basic_auth_ok(
            &headers("Basic !!!not-base64"),
            "CP001",
            &want
        ));
        assert!(!basic_auth_ok(&headers(&basic("no-colon")), "CP001", &want));
        assert!(!basic_auth_ok(&HeaderMap::new(), "CP001", &want));
    }
}
