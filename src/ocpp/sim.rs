//! A simulated OCPP 1.6J charge point: the WebSocket client side, for `parkhub demo`, the
//! benchmarks (hundreds at once) and tests of the hub's central system.
//!
//! It behaves as chargers in parks do: it boots, reports every connector, sends heartbeats and,
//! while charging, meter values; it keeps one call in flight at a time (OCPP-J 4.1.1) and
//! reconnects with back-off when the connection is lost. What it sends is built with the same
//! typed messages the hub decodes with, so it proves the wiring, not the encoding.
//!
//! Sessions, faults and connection drops are driven through [`SimControl`], or by the charger
//! itself when [`SimConfig::autoplay`] is set. Controls are taken up in order while the charger is
//! connected and booted; one given while it is offline waits for the next boot.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use chrono::Utc;
use futures_util::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::frame::{ErrorCode, Frame, FrameError};
use super::messages::{
    AuthorizationStatus, Authorize, AuthorizeConf, AvailabilityStatus, AvailabilityType,
    BootNotification, BootNotificationConf, ChangeAvailability, ChangeAvailabilityConf,
    ChargePointErrorCode, ChargePointStatus, Heartbeat, Location, Measurand, Message, MeterValue,
    MeterValues, ReadingContext, Reason, RegistrationStatus, RemoteStartStopStatus,
    RemoteStopTransaction, RemoteStopTransactionConf, Reset, ResetConf, ResetStatus, ResetType,
    SampledValue, StartTransaction, StartTransactionConf, StatusNotification, StopTransaction,
    UnitOfMeasure, UnlockConnector, UnlockConnectorConf, UnlockStatus,
};
use crate::text::clip;

/// The firmware version a simulated charger reports at boot.
pub const FIRMWARE_VERSION: &str = "sim-1.0";
/// How long a call waits for its answer before the connection is taken as lost.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the WebSocket handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Heartbeat period when the central system accepts with an interval of 0 ("charger's choice").
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(300);
/// The wait before booting again after a BootNotification answer that cannot be read.
const UNREADABLE_BOOT_RETRY: Duration = Duration::from_secs(10);
/// A tokio interval panics on a zero period, and an instant past the clock's range panics too.
const MIN_METER_INTERVAL: Duration = Duration::from_millis(10);
const MAX_METER_INTERVAL: Duration = Duration::from_secs(86_400);

/// One simulated charge point.
#[derive(Clone)]
pub struct SimConfig {
    /// Base URL of the central system, e.g. "ws://127.0.0.1:8080/ocpp"; the charger connects to
    /// "{url}/{charge_point_id}".
    pub url: String,
    pub charge_point_id: String,
    /// Sent as HTTP Basic authentication (OCPP 1.6 security profile 1) when set.
    pub password: Option<String>,
    /// Connectors 1..=N.
    pub connectors: u32,
    /// MeterValues period while charging; an idle connector sends none.
    pub meter_interval: Duration,
    /// e.g. 7000.0 for an AC 7 kW pile; above 7.4 kW the pile is taken as three-phase.
    pub max_power_w: f64,
    pub vendor: String,
    pub model: String,
    /// Varies chargers from each other (registers, power, id tags, the Celsius spelling).
    pub seed: u64,
    /// When true the charger plays a plausible day by itself (demo): connectors start sessions
    /// with made-up id tags, charge for a few minutes, stop, idle; nothing faults by itself.
    pub autoplay: bool,
}

impl std::fmt::Debug for SimConfig {
    // By hand so that the password stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimConfig")
            .field("url", &self.url)
            .field("charge_point_id", &self.charge_point_id)
            .field("password", &self.password.as_ref().map(|_| "…"))
            .field("connectors", &self.connectors)
            .field("meter_interval", &self.meter_interval)
            .field("max_power_w", &self.max_power_w)
            .field("vendor", &self.vendor)
            .field("model", &self.model)
            .field("seed", &self.seed)
            .field("autoplay", &self.autoplay)
            .finish()
    }
}

/// What a charger has done so far, for tests, benchmarks and the demo's printout.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SimStats {
    pub connected: bool,
    pub boots_accepted: u64,
    /// WebSocket handshakes that succeeded.
    pub connects: u64,
    /// CALLs the charger sent (repeats after a reconnect included).
    pub calls_sent: u64,
    pub call_errors_received: u64,
    /// CALLs the central system sent, whatever their action.
    pub commands_received: u64,
    /// Every transaction id the central system gave, in order.
    pub transaction_ids: Vec<i32>,
}

/// A control of a running [`SimCharger`]. The async methods hand the control to the charger
/// and return at once; the charger carries it out in order once connected and booted.
#[derive(Clone)]
pub struct SimControl {
    tx: mpsc::UnboundedSender<Control>,
    stats: Arc<Mutex<SimStats>>,
}

#[derive(Debug)]
enum Control {
    Start {
        connector: u32,
        id_tag: String,
    },
    Stop {
        connector: u32,
    },
    Fault {
        connector: u32,
        code: ChargePointErrorCode,
    },
    Clear {
        connector: u32,
    },
    Drop,
}

impl SimControl {
    /// Plugs in and starts a session: Authorize, StartTransaction (meterStart is the register in
    /// Wh), StatusNotification Charging. Ignored on a connector that is busy, faulted or
    /// inoperative.
    pub async fn start(&self, connector: u32, id_tag: &str) {
        self.send(Control::Start {
            connector,
            id_tag: id_tag.to_string(),
        });
    }

    /// Stops the connector's session locally: StopTransaction (reason Local), then
    /// StatusNotification Finishing and Available.
    pub async fn stop(&self, connector: u32) {
        self.send(Control::Stop { connector });
    }

    /// Reports the connector (0: the charge point itself) Faulted with `error_code`. A session
    /// on it is kept, but delivers no energy until [`SimControl::clear`].
    pub async fn fault(&self, connector: u32, error_code: ChargePointErrorCode) {
        self.send(Control::Fault {
            connector,
            code: error_code,
        });
    }

    /// Clears a fault: the connector reports what it is again (Available, Charging, …) with
    /// NoError.
    pub async fn clear(&self, connector: u32) {
        self.send(Control::Clear { connector });
    }

    /// Drops the connection without a close frame, as a power cut or a lost 4G link does; the
    /// charger reconnects with back-off.
    pub async fn drop_connection(&self) {
        self.send(Control::Drop);
    }

    pub fn stats(&self) -> SimStats {
        lock(&self.stats).clone()
    }

    fn send(&self, control: Control) {
        // Fails only once the charger has ended, when there is nothing left to control.
        let _ = self.tx.send(control);
    }
}

fn lock(stats: &Mutex<SimStats>) -> std::sync::MutexGuard<'_, SimStats> {
    stats.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A simulated charge point; [`SimCharger::run`] drives it.
pub struct SimCharger {
    cfg: SimConfig,
    stats: Arc<Mutex<SimStats>>,
    controls: mpsc::UnboundedReceiver<Control>,
}

impl SimCharger {
    pub fn new(cfg: SimConfig) -> (SimCharger, SimControl) {
        let (tx, controls) = mpsc::unbounded_channel();
        let stats = Arc::new(Mutex::new(SimStats::default()));
        let control = SimControl {
            tx,
            stats: stats.clone(),
        };
        (
            SimCharger {
                cfg,
                stats,
                controls,
            },
            control,
        )
    }

    /// Connects, boots, reports, reconnects with back-off (1 s doubling to 30 s) when the
    /// connection is lost or refused, until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        let SimCharger {
            cfg,
            stats,
            mut controls,
        } = self;
        let id = cfg.charge_point_id.clone();
        let mut machine = Machine::new(cfg, stats.clone());
        let mut backoff = MIN_BACKOFF;
        let mut failures = 0u32;
        while !shutdown.is_cancelled() {
            let connected = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = machine.connect() => r,
            };
            let mut wait = true;
            match connected {
                Ok(mut ws) => {
                    failures = 0;
                    {
                        let mut s = lock(&stats);
                        s.connects += 1;
                        s.connected = true;
                    }
                    debug!(cp = %id, "connected");
                    let end = machine.session(&mut ws, &shutdown, &mut controls).await;
                    // Dropped without a close frame unless the session closed it already.
                    drop(ws);
                    lock(&stats).connected = false;
                    machine.end_session();
                    if machine.accepted_this_session {
                        backoff = MIN_BACKOFF;
                    }
                    match end {
                        End::Shutdown => break,
                        End::Reboot => {
                            debug!(cp = %id, "rebooting");
                            backoff = MIN_BACKOFF;
                            wait = false;
                        }
                        End::Lost(why) => warn!(cp = %id, "connection lost: {why}"),
                    }
                }
                Err(e) => {
                    failures += 1;
                    // Hundreds of simulated chargers retrying would flood the log.
                    if failures == 1 {
                        warn!(cp = %id, "cannot connect: {e}");
                    } else {
                        debug!(cp = %id, "cannot connect (attempt {failures}): {e}");
                    }
                }
            }
            if wait {
                // A little jitter so that many chargers do not come back in lockstep.
                let delay = backoff
                    .mul_f64(1.0 + 0.2 * machine.rng.unit())
                    .min(MAX_BACKOFF);
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        lock(&stats).connected = false;
        debug!(cp = %id, "stopped");
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a connection ended.
enum End {
    Shutdown,
    /// After a Reset: reconnect at once and boot again.
    Reboot,
    Lost(String),
}

/// What an outgoing call is for: how its answer is handled, and whether it survives a
/// reconnect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Boot,
    Heartbeat,
    Status,
    Meter { connector: usize },
    Authorize { connector: usize },
    StartTransaction { connector: usize },
    StopTransaction,
}

impl Purpose {
    /// Calls whose effect the charger (or the central system's bookkeeping) still depends on
    /// are sent again after a reconnect. Statuses are not: the boot's status round reports the
    /// present state. Meter values and heartbeats are not either: later ones replace them.
    fn survives_reconnect(self) -> bool {
        matches!(
            self,
            Purpose::Authorize { .. } | Purpose::StartTransaction { .. } | Purpose::StopTransaction
        )
    }
}

struct Call {
    action: &'static str,
    payload: Value,
    purpose: Purpose,
}

impl Call {
    fn of<M: Message>(message: &M, purpose: Purpose) -> Call {
        Call {
            action: M::ACTION,
            payload: message.to_payload(),
            purpose,
        }
    }
}

struct InFlight {
    id: String,
    call: Call,
    deadline: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Authorize sent, no answer yet.
    Authorizing,
    /// StartTransaction sent, no transaction id yet.
    Starting,
    Running {
        transaction_id: i32,
    },
}

struct Session {
    id_tag: String,
    phase: Phase,
    /// A stop asked for before the transaction had its id: carried out once it has.
    stop: Option<Reason>,
    soc: f64,
    battery_wh: f64,
}

struct Connector {
    session: Option<Session>,
    fault: ChargePointErrorCode,
    operative: bool,
    /// ChangeAvailability Inoperative answered Scheduled: applied when the session ends.
    inoperative_pending: bool,
    energy_wh: f64,
    power_w: f64,
    last_sample: Instant,
    /// Autoplay: when this connector next starts or stops a session.
    next_play: Instant,
}

impl Connector {
    fn status(&self) -> ChargePointStatus {
        if self.fault != ChargePointErrorCode::NoError {
            return ChargePointStatus::Faulted;
        }
        match &self.session {
            Some(s) if matches!(s.phase, Phase::Running { .. }) => ChargePointStatus::Charging,
            Some(_) => ChargePointStatus::Preparing,
            None if self.operative => ChargePointStatus::Available,
            None => ChargePointStatus::Unavailable,
        }
    }

    fn transaction_id(&self) -> Option<i32> {
        match self.session.as_ref()?.phase {
            Phase::Running { transaction_id } => Some(transaction_id),
            _ => None,
        }
    }

    /// Adds the energy delivered since the last sample to the register.
    fn integrate(&mut self, now: Instant) {
        let delivering =
            self.transaction_id().is_some() && self.fault == ChargePointErrorCode::NoError;
        if delivering {
            let hours = now
                .saturating_duration_since(self.last_sample)
                .as_secs_f64()
                / 3600.0;
            let wh = self.power_w * hours;
            self.energy_wh += wh;
            if let Some(s) = self.session.as_mut() {
                s.soc = (s.soc + 100.0 * wh / s.battery_wh).min(100.0);
            }
        }
        self.last_sample = now;
    }
}

/// Tiny xorshift64* generator: deterministic per seed, no dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // splitmix64 first, so that seeds 0, 1, 2 … start far apart (and never at 0, which
        // xorshift cannot leave).
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(if z == 0 { 0x9E37_79B9_7F4A_7C15 } else { z })
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// In [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn between(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    fn secs(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_secs_f64(self.between(lo as f64, hi as f64))
    }
}

/// The charger's state, kept across connections.
struct Machine {
    cfg: SimConfig,
    stats: Arc<Mutex<SimStats>>,
    rng: Rng,
    /// Index 0 is the charge point itself (never has a session).
    connectors: Vec<Connector>,
    queue: VecDeque<Call>,
    in_flight: Option<InFlight>,
    next_message_id: u64,
    booted: bool,
    boot_due: bool,
    boot_retry_at: Option<Instant>,
    accepted_this_session: bool,
    heartbeat_period: Duration,
    reboot: Option<ResetType>,
    controls_open: bool,
    /// Made-up cards of the park's regular drivers, for autoplay.
    id_tags: Vec<String>,
}

impl Machine {
    fn new(cfg: SimConfig, stats: Arc<Mutex<SimStats>>) -> Machine {
        let mut rng = Rng::new(cfg.seed);
        let now = Instant::now();
        let connectors = (0..=cfg.connectors as usize)
            .map(|_| Connector {
                session: None,
                fault: ChargePointErrorCode::NoError,
                operative: true,
                inoperative_pending: false,
                energy_wh: rng.between(50_000.0, 5_000_000.0).round(),
                power_w: 0.0,
                last_sample: now,
                next_play: now + rng.secs(3, 40),
            })
            .collect();
        let id_tags = (0..8)
            .map(|_| format!("{:08X}", rng.next_u64() as u32))
            .collect();
        Machine {
            cfg,
            stats,
            rng,
            connectors,
            queue: VecDeque::new(),
            in_flight: None,
            next_message_id: 1,
            booted: false,
            boot_due: true,
            boot_retry_at: None,
            accepted_this_session: false,
            heartbeat_period: DEFAULT_HEARTBEAT,
            reboot: None,
            controls_open: true,
            id_tags,
        }
    }

    fn url(&self) -> String {
        format!(
            "{}/{}",
            self.cfg.url.trim_end_matches('/'),
            self.cfg.charge_point_id
        )
    }

    async fn connect(&self) -> Result<Ws, String> {
        let url = self.url();
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| format!("{url} is no WebSocket URL: {e}"))?;
        let headers = request.headers_mut();
        headers.insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static("ocpp1.6"),
        );
        if let Some(password) = &self.cfg.password {
            let credentials = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{password}", self.cfg.charge_point_id));
            let value = HeaderValue::from_str(&format!("Basic {credentials}"))
                .map_err(|e| format!("authorization header: {e}"))?;
            headers.insert("Authorization", value);
        }
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(request)).await
        {
            Ok(Ok((ws, _response))) => Ok(ws),
            Ok(Err(e)) => Err(format!("{url}: {e}")),
            Err(_) => Err(format!("{url}: no handshake in {CONNECT_TIMEOUT:?}")),
        }
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, SimStats> {
        lock(&self.stats)
    }

    /// One connection, from the boot until it ends.
    async fn session(
        &mut self,
        ws: &mut Ws,
        shutdown: &CancellationToken,
        controls: &mut mpsc::UnboundedReceiver<Control>,
    ) -> End {
        self.booted = false;
        self.boot_due = true;
        self.boot_retry_at = None;
        self.accepted_this_session = false;
        self.reboot = None;
        let meter_period = self
            .cfg
            .meter_interval
            .clamp(MIN_METER_INTERVAL, MAX_METER_INTERVAL);
        let mut meter = periodic(meter_period);
        let mut autoplay = periodic(Duration::from_secs(1));
        let mut heartbeat: Option<Interval> = None;
        loop {
            if self.reboot == Some(ResetType::Hard) {
                close(ws).await;
                return End::Reboot;
            }
            if let Err(e) = self.pump(ws).await {
                return End::Lost(e);
            }
            if self.reboot == Some(ResetType::Soft)
                && self.in_flight.is_none()
                && self.queue.is_empty()
            {
                close(ws).await;
                return End::Reboot;
            }
            if self.booted && heartbeat.is_none() {
                heartbeat = Some(periodic(self.heartbeat_period));
            }
            // No new work once a reboot is under way: a soft reset waits only for what is queued.
            let operating = self.booted && self.reboot.is_none();
            let deadline = self.in_flight.as_ref().map(|f| f.deadline);
            let boot_retry_at = self.boot_retry_at;
            tokio::select! {
                _ = shutdown.cancelled() => {
                    close(ws).await;
                    return End::Shutdown;
                }
                message = ws.next() => match message {
                    None => return End::Lost("the central system closed the connection".into()),
                    Some(Err(e)) => return End::Lost(e.to_string()),
                    Some(Ok(WsMessage::Text(text))) => {
                        if let Err(e) = self.on_text(ws, text.as_str()).await {
                            return End::Lost(e);
                        }
                    }
                    Some(Ok(WsMessage::Close(_))) => {
                        return End::Lost("the central system closed the connection".into())
                    }
                    // Pings are answered by tungstenite; OCPP-J has no binary frames.
                    Some(Ok(_)) => {}
                },
                control = controls.recv(), if operating && self.controls_open => match control {
                    Some(Control::Drop) => return End::Lost("dropped on request".into()),
                    Some(c) => self.on_control(c),
                    None => self.controls_open = false,
                },
                _ = tick(&mut heartbeat), if operating => self.queue_heartbeat(),
                _ = meter.tick(), if operating => self.sample_all(),
                _ = autoplay.tick(), if operating && self.cfg.autoplay => self.play(),
                _ = sleep_until(deadline) => {
                    let action = self.in_flight.as_ref().map_or("", |f| f.call.action);
                    return End::Lost(format!("no answer to {action} in {CALL_TIMEOUT:?}"));
                }
                _ = sleep_until(boot_retry_at) => {
                    self.boot_retry_at = None;
                    self.boot_due = true;
                }
            }
        }
    }

    /// Keeps what must survive the reconnect, in order, with the call that was in flight first.
    fn end_session(&mut self) {
        if let Some(f) = self.in_flight.take() {
            self.queue.push_front(f.call);
        }
        self.queue.retain(|c| c.purpose.survives_reconnect());
        self.booted = false;
    }

    /// Sends the next call when none is in flight.
    async fn pump(&mut self, ws: &mut Ws) -> Result<(), String> {
        if self.in_flight.is_some() {
            return Ok(());
        }
        let call = if self.booted {
            match self.queue.pop_front() {
                Some(c) => c,
                None => return Ok(()),
            }
        } else if self.boot_due {
            self.boot_due = false;
            Call::of(
                &BootNotification {
                    charge_point_vendor: self.cfg.vendor.clone(),
                    charge_point_model: self.cfg.model.clone(),
                    charge_point_serial_number: None,
                    charge_box_serial_number: None,
                    firmware_version: Some(FIRMWARE_VERSION.to_string()),
                    iccid: None,
                    imsi: None,
                    meter_type: None,
                    meter_serial_number: None,
                },
                Purpose::Boot,
            )
        } else {
            return Ok(());
        };
        let id = self.next_message_id.to_string();
        self.next_message_id += 1;
        let text = Frame::Call {
            id: id.clone(),
            action: call.action.to_string(),
            payload: call.payload.clone(),
        }
        .to_text();
        // In flight before the send, so that a call lost in a failed send is kept.
        self.in_flight = Some(InFlight {
            id,
            call,
            deadline: Instant::now() + CALL_TIMEOUT,
        });
        self.stats().calls_sent += 1;
        ws.send(WsMessage::text(text))
            .await
            .map_err(|e| format!("sending: {e}"))
    }

    async fn on_text(&mut self, ws: &mut Ws, text: &str) -> Result<(), String> {
        match Frame::parse(text) {
            Ok(Frame::Call {
                id,
                action,
                payload,
            }) => {
                self.stats().commands_received += 1;
                let answer = self.on_command(&id, &action, &payload);
                send(ws, &answer).await?;
            }
            Ok(Frame::CallResult { id, payload }) => {
                if self.is_in_flight(&id) {
                    self.on_reply(Ok(payload));
                } else {
                    debug!(cp = %self.cfg.charge_point_id, "ignored an answer to no call in flight: {}", clip(&id));
                }
            }
            Ok(Frame::CallError {
                id,
                code,
                description,
                ..
            }) => {
                self.stats().call_errors_received += 1;
                if self.is_in_flight(&id) {
                    self.on_reply(Err((code, description)));
                }
            }
            Err(e) => {
                debug!(cp = %self.cfg.charge_point_id, "unreadable frame: {e}");
                if let Some(answer) = e.answer() {
                    self.stats().commands_received += 1;
                    send(ws, &answer).await?;
                } else if let FrameError::BadReply { id, reason, .. } = &e {
                    if self.is_in_flight(id) {
                        self.on_reply(Err((ErrorCode::FormationViolation, reason.clone())));
                    }
                }
            }
        }
        Ok(())
    }

    fn is_in_flight(&self, id: &str) -> bool {
        self.in_flight.as_ref().is_some_and(|f| f.id == id)
    }

    /// Handles the answer to the call in flight.
    fn on_reply(&mut self, reply: Result<Value, (ErrorCode, String)>) {
        let Some(f) = self.in_flight.take() else {
            return;
        };
        let cp = self.cfg.charge_point_id.clone();
        if let Err((code, description)) = &reply {
            warn!(cp = %cp, "{} refused: {code} {}", f.call.action, clip(description));
        }
        match f.call.purpose {
            Purpose::Boot => match decode::<BootNotificationConf>(reply) {
                Some(conf) if conf.status == RegistrationStatus::Accepted => {
                    self.booted = true;
                    self.accepted_this_session = true;
                    self.stats().boots_accepted += 1;
                    self.heartbeat_period = match u64::try_from(conf.interval) {
                        Ok(s) if s > 0 => Duration::from_secs(s),
                        _ => DEFAULT_HEARTBEAT,
                    };
                    // Before anything kept from the last connection: the state comes first.
                    for c in (0..self.connectors.len()).rev() {
                        let status = self.status_call(c);
                        self.queue.push_front(status);
                    }
                    debug!(cp = %cp, "boot accepted");
                }
                Some(conf) => {
                    let wait = u64::try_from(conf.interval).unwrap_or(0).max(1);
                    debug!(cp = %cp, "boot {}; again in {wait} s", conf.status);
                    self.boot_retry_at = Some(Instant::now() + Duration::from_secs(wait));
                }
                None => {
                    self.boot_retry_at = Some(Instant::now() + UNREADABLE_BOOT_RETRY);
                }
            },
            Purpose::Authorize { connector } => {
                let accepted = decode::<AuthorizeConf>(reply)
                    .is_some_and(|c| c.id_tag_info.status == AuthorizationStatus::Accepted);
                self.on_authorized(connector, accepted);
            }
            Purpose::StartTransaction { connector } => {
                let conf = decode::<StartTransactionConf>(reply);
                self.on_started(connector, conf);
            }
            Purpose::Heartbeat
            | Purpose::Status
            | Purpose::Meter { .. }
            | Purpose::StopTransaction => {}
        }
    }

    fn on_authorized(&mut self, c: usize, accepted: bool) {
        let Some(conn) = self.connectors.get_mut(c) else {
            return;
        };
        let Some(s) = conn.session.as_mut() else {
            return;
        };
        if s.phase != Phase::Authorizing {
            return;
        }
        if !accepted || s.stop.is_some() {
            // Nothing was started with the central system: the connector is simply free again.
            if !accepted {
                debug!(cp = %self.cfg.charge_point_id, "id tag {} not accepted on connector {c}", s.id_tag);
            }
            self.end_without_transaction(c);
            return;
        }
        s.phase = Phase::Starting;
        let start = StartTransaction {
            connector_id: c as u32,
            id_tag: s.id_tag.clone(),
            meter_start: conn.energy_wh.round() as i64,
            reservation_id: None,
            timestamp: Utc::now(),
        };
        self.queue
            .push_back(Call::of(&start, Purpose::StartTransaction { connector: c }));
    }

    fn on_started(&mut self, c: usize, conf: Option<StartTransactionConf>) {
        let Some(conn) = self.connectors.get_mut(c) else {
            return;
        };
        match conn.session.as_ref().map(|s| s.phase) {
            Some(Phase::Starting) => {}
            _ => return,
        }
        let Some(conf) = conf else {
            self.end_without_transaction(c);
            return;
        };
        self.stats().transaction_ids.push(conf.transaction_id);
        let power = self.next_power(0.0);
        let conn = &mut self.connectors[c];
        conn.power_w = power;
        conn.last_sample = Instant::now();
        let Some(s) = conn.session.as_mut() else {
            return;
        };
        s.phase = Phase::Running {
            transaction_id: conf.transaction_id,
        };
        let stop = if conf.id_tag_info.status != AuthorizationStatus::Accepted {
            Some(Reason::DeAuthorized)
        } else {
            s.stop
        };
        match stop {
            Some(reason) => self.finish(c, reason),
            None => self.queue_status(c),
        }
    }

    fn end_without_transaction(&mut self, c: usize) {
        if let Some(conn) = self.connectors.get_mut(c) {
            conn.session = None;
            if conn.inoperative_pending {
                conn.inoperative_pending = false;
                conn.operative = false;
            }
        }
        self.queue_status(c);
    }

    /// Ends a running transaction: StopTransaction, Finishing, then the connector's new state.
    /// A session without its transaction id yet is stopped once it has one.
    fn stop(&mut self, c: usize, reason: Reason) {
        let Some(conn) = self.connectors.get_mut(c) else {
            return;
        };
        match conn.session.as_mut() {
            None => {}
            Some(s) if matches!(s.phase, Phase::Running { .. }) => self.finish(c, reason),
            Some(s) => s.stop = Some(reason),
        }
    }

    fn finish(&mut self, c: usize, reason: Reason) {
        let now = Instant::now();
        let Some(conn) = self.connectors.get_mut(c) else {
            return;
        };
        conn.integrate(now);
        let Some(session) = conn.session.take() else {
            return;
        };
        let Phase::Running { transaction_id } = session.phase else {
            self.end_without_transaction(c);
            return;
        };
        let stop = StopTransaction {
            id_tag: Some(session.id_tag),
            meter_stop: conn.energy_wh.round() as i64,
            timestamp: Utc::now(),
            transaction_id,
            reason: Some(reason),
            transaction_data: None,
        };
        let faulted = conn.fault != ChargePointErrorCode::NoError;
        if conn.inoperative_pending {
            conn.inoperative_pending = false;
            conn.operative = false;
        }
        conn.power_w = 0.0;
        self.queue
            .push_back(Call::of(&stop, Purpose::StopTransaction));
        if !faulted {
            self.queue.push_back(Call::of(
                &status(
                    c,
                    ChargePointStatus::Finishing,
                    ChargePointErrorCode::NoError,
                ),
                Purpose::Status,
            ));
        }
        self.queue_status(c);
    }

    fn status_call(&self, c: usize) -> Call {
        let conn = &self.connectors[c];
        Call::of(&status(c, conn.status(), conn.fault), Purpose::Status)
    }

    fn queue_status(&mut self, c: usize) {
        if c < self.connectors.len() {
            let call = self.status_call(c);
            self.queue.push_back(call);
        }
    }

    fn queue_heartbeat(&mut self) {
        // A slow central system would otherwise see heartbeats pile up behind one another.
        if !self.queue.iter().any(|c| c.purpose == Purpose::Heartbeat) {
            self.queue
                .push_back(Call::of(&Heartbeat {}, Purpose::Heartbeat));
        }
    }

    /// Connector `c` by its number on the wire, when the charger has it (1..=N; 0 when
    /// `with_zero`).
    fn index(&self, connector: u32, with_zero: bool) -> Option<usize> {
        let c = usize::try_from(connector).ok()?;
        (c < self.connectors.len() && (with_zero || c > 0)).then_some(c)
    }

    fn on_control(&mut self, control: Control) {
        let cp = self.cfg.charge_point_id.clone();
        match control {
            Control::Start { connector, id_tag } => match self.index(connector, false) {
                Some(c) => self.start(c, id_tag),
                None => warn!(cp = %cp, "no connector {connector} to start"),
            },
            Control::Stop { connector } => match self.index(connector, false) {
                Some(c) => self.stop(c, Reason::Local),
                None => warn!(cp = %cp, "no connector {connector} to stop"),
            },
            Control::Fault { connector, code } => match self.index(connector, true) {
                Some(c) => {
                    let now = Instant::now();
                    let conn = &mut self.connectors[c];
                    // Energy up to the fault counts; none while it lasts.
                    conn.integrate(now);
                    conn.fault = code;
                    self.queue_status(c);
                }
                None => warn!(cp = %cp, "no connector {connector} to fault"),
            },
            Control::Clear { connector } => match self.index(connector, true) {
                Some(c) => {
                    let conn = &mut self.connectors[c];
                    conn.fault = ChargePointErrorCode::NoError;
                    conn.last_sample = Instant::now();
                    self.queue_status(c);
                }
                None => warn!(cp = %cp, "no connector {connector} to clear"),
            },
            // Handled by the session loop, which owns the socket.
            Control::Drop => {}
        }
    }

    fn start(&mut self, c: usize, id_tag: String) {
        let conn = &self.connectors[c];
        if conn.session.is_some() || !conn.operative || conn.fault != ChargePointErrorCode::NoError
        {
            debug!(cp = %self.cfg.charge_point_id, "connector {c} cannot start now ({})", conn.status());
            return;
        }
        let soc = self.rng.between(15.0, 60.0);
        let battery_wh = self.rng.between(40_000.0, 80_000.0);
        self.connectors[c].session = Some(Session {
            id_tag: id_tag.clone(),
            phase: Phase::Authorizing,
            stop: None,
            soc,
            battery_wh,
        });
        // Plugged in: Preparing while the card is checked.
        self.queue_status(c);
        self.queue.push_back(Call::of(
            &Authorize { id_tag },
            Purpose::Authorize { connector: c },
        ));
    }

    /// The power drawn at the next sample: a little below the pile's rating, varying, and
    /// tapering as the battery fills.
    fn next_power(&mut self, soc: f64) -> f64 {
        let taper = if soc > 90.0 {
            ((100.0 - soc) / 10.0).max(0.1)
        } else {
            1.0
        };
        self.cfg.max_power_w.max(0.0) * self.rng.between(0.92, 0.99) * taper
    }

    fn sample_all(&mut self) {
        let now = Instant::now();
        for c in 1..self.connectors.len() {
            let conn = &mut self.connectors[c];
            let Some(transaction_id) = conn.transaction_id() else {
                continue;
            };
            conn.integrate(now);
            if conn.fault != ChargePointErrorCode::NoError {
                continue;
            }
            let soc = conn.session.as_ref().map_or(0.0, |s| s.soc);
            let power = self.next_power(soc);
            self.connectors[c].power_w = power;
            let already = self
                .queue
                .iter()
                .any(|q| q.purpose == Purpose::Meter { connector: c });
            if already {
                // The register keeps counting; only the message waits for the next period.
                continue;
            }
            let values = MeterValues {
                connector_id: c as u32,
                transaction_id: Some(transaction_id),
                meter_value: vec![self.meter_value(c)],
            };
            self.queue
                .push_back(Call::of(&values, Purpose::Meter { connector: c }));
        }
    }

    fn meter_value(&mut self, c: usize) -> MeterValue {
        let three_phase = self.cfg.max_power_w > 7_400.0;
        let voltage = 230.0 + self.rng.between(-4.0, 4.0);
        let conn = &self.connectors[c];
        let power = conn.power_w;
        let current = power / (voltage * if three_phase { 3.0 } else { 1.0 });
        let load = if self.cfg.max_power_w > 0.0 {
            power / self.cfg.max_power_w
        } else {
            0.0
        };
        let temperature = 24.0 + 14.0 * load + self.rng.between(-0.5, 0.5);
        // Chargers in the field write both; the 1.6 schema itself misspells it.
        let celsius = if self.cfg.seed % 2 == 1 {
            UnitOfMeasure::Celcius
        } else {
            UnitOfMeasure::Celsius
        };
        let conn = &self.connectors[c];
        let soc = conn.session.as_ref().map_or(0.0, |s| s.soc);
        let sv = |value: String, measurand, unit, location| SampledValue {
            value,
            context: Some(ReadingContext::SamplePeriodic),
            format: None,
            measurand: Some(measurand),
            phase: None,
            location: Some(location),
            unit: Some(unit),
        };
        MeterValue {
            timestamp: Utc::now(),
            sampled_value: vec![
                sv(
                    format!("{:.1}", conn.energy_wh),
                    Measurand::EnergyActiveImportRegister,
                    UnitOfMeasure::Wh,
                    Location::Outlet,
                ),
                sv(
                    format!("{power:.0}"),
                    Measurand::PowerActiveImport,
                    UnitOfMeasure::W,
                    Location::Outlet,
                ),
                sv(
                    format!("{current:.2}"),
                    Measurand::CurrentImport,
                    UnitOfMeasure::A,
                    Location::Outlet,
                ),
                sv(
                    format!("{voltage:.1}"),
                    Measurand::Voltage,
                    UnitOfMeasure::V,
                    Location::Outlet,
                ),
                sv(
                    format!("{temperature:.1}"),
                    Measurand::Temperature,
                    celsius,
                    Location::Body,
                ),
                sv(
                    format!("{soc:.0}"),
                    Measurand::Soc,
                    UnitOfMeasure::Percent,
                    Location::Ev,
                ),
            ],
        }
    }

    /// Autoplay: connectors due start a session with one of the regulars' cards, or stop the
    /// one they have.
    fn play(&mut self) {
        let now = Instant::now();
        for c in 1..self.connectors.len() {
            if now < self.connectors[c].next_play {
                continue;
            }
            let conn = &self.connectors[c];
            let next = if conn.session.is_none() {
                if conn.operative && conn.fault == ChargePointErrorCode::NoError {
                    let pick = (self.rng.next_u64() % self.id_tags.len() as u64) as usize;
                    let tag = self.id_tags[pick].clone();
                    self.start(c, tag);
                    self.rng.secs(120, 360)
                } else {
                    Duration::from_secs(30)
                }
            } else if conn.transaction_id().is_some() {
                self.stop(c, Reason::Local);
                self.rng.secs(30, 180)
            } else {
                // Still starting: look again shortly.
                Duration::from_secs(10)
            };
            self.connectors[c].next_play = now + next;
        }
    }

    /// Answers a CALL of the central system.
    fn on_command(&mut self, id: &str, action: &str, payload: &Value) -> Frame {
        let result = match action {
            "RemoteStopTransaction" => {
                read::<RemoteStopTransaction>(payload).map(|m| self.remote_stop(m).to_payload())
            }
            "Reset" => read::<Reset>(payload).map(|m| self.reset(m).to_payload()),
            "UnlockConnector" => {
                read::<UnlockConnector>(payload).map(|m| self.unlock(m).to_payload())
            }
            "ChangeAvailability" => read::<ChangeAvailability>(payload)
                .map(|m| self.change_availability(m).to_payload()),
            other => Err((
                ErrorCode::NotImplemented,
                format!("{} is not implemented by this charger", clip(other)),
            )),
        };
        match result {
            Ok(payload) => Frame::CallResult {
                id: id.to_string(),
                payload,
            },
            Err((code, description)) => {
                debug!(cp = %self.cfg.charge_point_id, "refused {}: {code} {description}", clip(action));
                Frame::call_error(id, code, &description)
            }
        }
    }

    fn remote_stop(&mut self, m: RemoteStopTransaction) -> RemoteStopTransactionConf {
        let found = (1..self.connectors.len())
            .find(|&c| self.connectors[c].transaction_id() == Some(m.transaction_id));
        let status = match found {
            Some(c) => {
                self.stop(c, Reason::Remote);
                RemoteStartStopStatus::Accepted
            }
            None => RemoteStartStopStatus::Rejected,
        };
        RemoteStopTransactionConf { status }
    }

    fn reset(&mut self, m: Reset) -> ResetConf {
        let reason = match m.kind {
            ResetType::Hard => Reason::HardReset,
            ResetType::Soft => Reason::SoftReset,
        };
        for c in 1..self.connectors.len() {
            self.stop(c, reason);
        }
        self.reboot = Some(m.kind);
        ResetConf {
            status: ResetStatus::Accepted,
        }
    }

    fn unlock(&mut self, m: UnlockConnector) -> UnlockConnectorConf {
        let Some(c) = self.index(m.connector_id, false) else {
            return UnlockConnectorConf {
                status: UnlockStatus::NotSupported,
            };
        };
        // OCPP 1.6 5.18: a transaction on the connector ends before it unlocks.
        self.stop(c, Reason::UnlockCommand);
        UnlockConnectorConf {
            status: UnlockStatus::Unlocked,
        }
    }

    fn change_availability(&mut self, m: ChangeAvailability) -> ChangeAvailabilityConf {
        let Some(target) = self.index(m.connector_id, true) else {
            return ChangeAvailabilityConf {
                status: AvailabilityStatus::Rejected,
            };
        };
        // Connector 0 is the charge point as a whole: every connector follows it.
        let affected: Vec<usize> = if target == 0 {
            (0..self.connectors.len()).collect()
        } else {
            vec![target]
        };
        let mut scheduled = false;
        for c in affected {
            let conn = &mut self.connectors[c];
            let operative = m.kind == AvailabilityType::Operative;
            if !operative && conn.session.is_some() {
                conn.inoperative_pending = true;
                scheduled = true;
                continue;
            }
            conn.inoperative_pending = false;
            if conn.operative != operative {
                conn.operative = operative;
                self.queue_status(c);
            }
        }
        ChangeAvailabilityConf {
            status: if scheduled {
                AvailabilityStatus::Scheduled
            } else {
                AvailabilityStatus::Accepted
            },
        }
    }
}

fn status(
    c: usize,
    status: ChargePointStatus,
    error_code: ChargePointErrorCode,
) -> StatusNotification {
    StatusNotification {
        connector_id: c as u32,
        error_code,
        info: None,
        status,
        timestamp: Some(Utc::now()),
        vendor_id: None,
        vendor_error_code: None,
    }
}

/// A confirmation from the central system, or None (logged) when it refused or wrote nonsense.
fn decode<T: DeserializeOwned>(reply: Result<Value, (ErrorCode, String)>) -> Option<T> {
    let payload = reply.ok()?;
    match serde_json::from_value(payload) {
        Ok(t) => Some(t),
        Err(e) => {
            warn!("unreadable answer of the central system: {e}");
            None
        }
    }
}

/// A command's payload; the error is the CALLERROR that answers it, with the codes
/// [`super::messages`] uses for charge points' payloads.
fn read<T: DeserializeOwned>(payload: &Value) -> Result<T, (ErrorCode, String)> {
    if !payload.is_object() {
        return Err((
            ErrorCode::FormationViolation,
            "the payload is not an object".into(),
        ));
    }
    serde_json::from_value(payload.clone()).map_err(|e| {
        let text = e.to_string();
        let code = if text.starts_with("missing field") || text.starts_with("invalid type: null") {
            ErrorCode::OccurenceConstraintViolation
        } else if text.starts_with("invalid type") {
            ErrorCode::TypeConstraintViolation
        } else {
            // Unknown enumeration values and integers out of range.
            ErrorCode::PropertyConstraintViolation
        };
        (code, text)
    })
}

async fn send(ws: &mut Ws, frame: &Frame) -> Result<(), String> {
    ws.send(WsMessage::text(frame.to_text()))
        .await
        .map_err(|e| format!("sending: {e}"))
}

/// A polite close; a central system that does not answer it is not waited for long.
async fn close(ws: &mut Ws) {
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
}

/// An interval whose first tick is one period away, and which does not burst after a stall.
fn periodic(period: Duration) -> Interval {
    let mut i = tokio::time::interval_at(Instant::now() + period, period);
    i.set_missed_tick_behavior(MissedTickBehavior::Delay);
    i
}

async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ocpp::messages::decode_request;
    use serde_json::json;
    use std::sync::atomic::{AtomicU32, Ordering};
    use tokio::net::TcpListener;
    use tokio::task::JoinHandle;
    use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
    use tokio_tungstenite::tungstenite::http::StatusCode;

    /// The longest any single expected step may take; the tests never measure durations.
    const WAIT: Duration = Duration::from_secs(5);
    const PASSWORD: &str = "s3cret";

    /// A central system in miniature, as the hub plays it: checks the handshake, answers every
    /// charger call, sends commands.
    struct Central {
        url: String,
        connections: mpsc::UnboundedReceiver<Cs>,
        refused: Arc<AtomicU32>,
    }

    impl Central {
        /// Listens on a free port; refuses the first `refuse` handshakes with 401.
        async fn start(refuse: u32) -> Central {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("ws://{}/ocpp", listener.local_addr().unwrap());
            let (tx, connections) = mpsc::unbounded_channel();
            let refused = Arc::new(AtomicU32::new(0));
            let counter = refused.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let mut seen = (String::new(), None);
                    let refuse_this = counter.load(Ordering::SeqCst) < refuse;
                    // The callback's error type is tungstenite's, not ours to shrink.
                    #[allow(clippy::result_large_err)]
                    let callback = |req: &Request, mut resp: Response| {
                        let offered = req
                            .headers()
                            .get("Sec-WebSocket-Protocol")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("");
                        if !offered.split(',').any(|p| p.trim() == "ocpp1.6") {
                            return Err(refusal(StatusCode::BAD_REQUEST));
                        }
                        if refuse_this {
                            return Err(refusal(StatusCode::UNAUTHORIZED));
                        }
                        seen = (
                            req.uri().path().to_string(),
                            req.headers()
                                .get("Authorization")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_string),
                        );
                        resp.headers_mut().insert(
                            "Sec-WebSocket-Protocol",
                            HeaderValue::from_static("ocpp1.6"),
                        );
                        Ok(resp)
                    };
                    match tokio_tungstenite::accept_hdr_async(stream, callback).await {
                        Ok(ws) => {
                            let _ = tx.send(Cs {
                                ws,
                                path: seen.0,
                                authorization: seen.1,
                                seen: VecDeque::new(),
                                boot_answers: VecDeque::new(),
                                commands_sent: 0,
                            });
                        }
                        Err(_) => {
                            counter.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            });
            Central {
                url,
                connections,
                refused,
            }
        }

        async fn next(&mut self) -> Cs {
            tokio::time::timeout(WAIT, self.connections.recv())
                .await
                .expect("the charger connects")
                .expect("the central system runs")
        }
    }

    fn refusal(status: StatusCode) -> ErrorResponse {
        let mut r = ErrorResponse::new(None);
        *r.status_mut() = status;
        r
    }

    /// How a connection ended, seen from the central system.
    #[derive(Debug, PartialEq)]
    enum Ending {
        CloseFrame,
        /// The TCP connection went without a WebSocket close.
        Abrupt,
    }

    /// One charger's connection, seen from the central system.
    struct Cs {
        ws: WebSocketStream<TcpStream>,
        path: String,
        authorization: Option<String>,
        /// Calls the charger made (and got answers to) while a command waited for its reply.
        seen: VecDeque<(String, Value)>,
        /// What the next BootNotifications are answered; Accepted when none are left.
        boot_answers: VecDeque<&'static str>,
        commands_sent: u32,
    }

    impl Cs {
        async fn read(&mut self) -> Option<Result<Frame, Ending>> {
            let message = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("the charger says something");
            match message {
                None | Some(Err(_)) => Some(Err(Ending::Abrupt)),
                Some(Ok(WsMessage::Close(_))) => Some(Err(Ending::CloseFrame)),
                Some(Ok(WsMessage::Text(t))) => Some(Ok(Frame::parse(t.as_str()).unwrap())),
                Some(Ok(_)) => None,
            }
        }

        /// Answers a charger's call as the hub would, after checking that the hub's own
        /// decoder takes its payload.
        async fn answer(&mut self, id: &str, action: &str, payload: &Value) {
            if let Err(refusal) = decode_request(action, payload) {
                panic!("the hub refuses {action} {payload}: {refusal:?}");
            }
            let now = format_now();
            let reply = match action {
                "BootNotification" => {
                    let status = self.boot_answers.pop_front().unwrap_or("Accepted");
                    json!({"status": status, "currentTime": now, "interval": 1})
                }
                "Heartbeat" => json!({"currentTime": now}),
                "Authorize" => json!({"idTagInfo": {"status": "Accepted"}}),
                "StartTransaction" => {
                    json!({"idTagInfo": {"status": "Accepted"}, "transactionId": 7})
                }
                _ => json!({}),
            };
            let frame = Frame::CallResult {
                id: id.to_string(),
                payload: reply,
            };
            self.ws
                .send(WsMessage::text(frame.to_text()))
                .await
                .unwrap();
        }

        /// The charger's next call, answered.
        async fn call(&mut self) -> (String, Value) {
            if let Some(c) = self.seen.pop_front() {
                return c;
            }
            loop {
                match self.read().await {
                    Some(Ok(Frame::Call {
                        id,
                        action,
                        payload,
                    })) => {
                        self.answer(&id, &action, &payload).await;
                        return (action, payload);
                    }
                    Some(other) => panic!("expected a call, got {other:?}"),
                    None => {}
                }
            }
        }

        /// The next call that is not a heartbeat.
        async fn event(&mut self) -> (String, Value) {
            loop {
                let (action, payload) = self.call().await;
                if action != "Heartbeat" {
                    return (action, payload);
                }
            }
        }

        /// Answers calls until one of `action`, and gives its payload.
        async fn until(&mut self, action: &str) -> Value {
            loop {
                let (a, payload) = self.call().await;
                if a == action {
                    return payload;
                }
            }
        }

        /// Answers calls until a StatusNotification of `connector` with `status`.
        async fn until_status(&mut self, connector: u32, status: &str) -> Value {
            loop {
                let p = self.until("StatusNotification").await;
                if p["connectorId"] == json!(connector) && p["status"] == json!(status) {
                    return p;
                }
            }
        }

        /// Sends a command and gives the charger's reply, answering its calls meanwhile.
        async fn command(&mut self, action: &str, payload: Value) -> Frame {
            self.commands_sent += 1;
            let id = format!("cs-{}", self.commands_sent);
            let call = Frame::Call {
                id: id.clone(),
                action: action.to_string(),
                payload,
            };
            self.ws.send(WsMessage::text(call.to_text())).await.unwrap();
            loop {
                match self.read().await {
                    Some(Ok(Frame::Call {
                        id,
                        action,
                        payload,
                    })) => {
                        self.answer(&id, &action, &payload).await;
                        self.seen.push_back((action, payload));
                    }
                    Some(Ok(reply)) if reply.id() == id => return reply,
                    Some(other) => panic!("expected the reply to {action}, got {other:?}"),
                    None => {}
                }
            }
        }

        /// Answers calls until the connection ends, and says how it ended.
        async fn closed(&mut self) -> Ending {
            loop {
                match self.read().await {
                    Some(Ok(Frame::Call {
                        id,
                        action,
                        payload,
                    })) => {
                        self.answer(&id, &action, &payload).await;
                        self.seen.push_back((action, payload));
                    }
                    Some(Err(ending)) => return ending,
                    _ => {}
                }
            }
        }

        /// The boot and the status round that follows it: (connector, status, error code).
        async fn boot(&mut self, connectors: u32) -> (Value, Vec<(u64, String, String)>) {
            let (action, boot) = self.call().await;
            assert_eq!(action, "BootNotification");
            let mut statuses = Vec::new();
            for _ in 0..=connectors {
                let (action, p) = self.call().await;
                assert_eq!(action, "StatusNotification", "{p}");
                statuses.push((
                    p["connectorId"].as_u64().unwrap(),
                    p["status"].as_str().unwrap().to_string(),
                    p["errorCode"].as_str().unwrap().to_string(),
                ));
            }
            (boot, statuses)
        }
    }

    fn format_now() -> String {
        super::super::messages::format_timestamp(Utc::now())
    }

    fn result_status(reply: &Frame) -> &str {
        match reply {
            Frame::CallResult { payload, .. } => payload["status"].as_str().unwrap(),
            other => panic!("expected a CALLRESULT, got {other:?}"),
        }
    }

    fn error_code(reply: &Frame) -> ErrorCode {
        match reply {
            Frame::CallError { code, .. } => *code,
            other => panic!("expected a CALLERROR, got {other:?}"),
        }
    }

    struct Charger {
        control: SimControl,
        shutdown: CancellationToken,
        task: JoinHandle<()>,
    }

    impl Charger {
        fn spawn(url: &str, seed: u64) -> Charger {
            let (sim, control) = SimCharger::new(SimConfig {
                url: url.to_string(),
                charge_point_id: "CP-1".into(),
                password: Some(PASSWORD.into()),
                connectors: 2,
                meter_interval: Duration::from_millis(100),
                max_power_w: 7000.0,
                vendor: "ParkSim".into(),
                model: "AC7".into(),
                seed,
                autoplay: false,
            });
            let shutdown = CancellationToken::new();
            let task = tokio::spawn(sim.run(shutdown.clone()));
            Charger {
                control,
                shutdown,
                task,
            }
        }

        /// Shuts the charger down and checks that `run` returns.
        async fn stop(self) -> SimStats {
            self.shutdown.cancel();
            tokio::time::timeout(WAIT, self.task)
                .await
                .expect("run ends on shutdown")
                .expect("run does not panic");
            let stats = self.control.stats();
            assert!(!stats.connected);
            stats
        }
    }

    fn all_available(connectors: u64) -> Vec<(u64, String, String)> {
        (0..=connectors)
            .map(|c| (c, "Available".to_string(), "NoError".to_string()))
            .collect()
    }

    /// Boots a charger and starts a session on connector 1, up to its Charging status.
    async fn charging(seed: u64) -> (Central, Cs, Charger) {
        let mut central = Central::start(0).await;
        let charger = Charger::spawn(&central.url, seed);
        let mut cs = central.next().await;
        cs.boot(2).await;
        charger.control.start(1, "TAG-1").await;
        cs.until_status(1, "Charging").await;
        (central, cs, charger)
    }

    #[tokio::test]
    async fn a_charger_boots_with_its_credentials_reports_every_connector_and_sends_heartbeats() {
        let mut central = Central::start(0).await;
        let charger = Charger::spawn(&central.url, 1);
        let mut cs = central.next().await;
        assert_eq!(cs.path, "/ocpp/CP-1");
        let expected = base64::engine::general_purpose::STANDARD.encode("CP-1:s3cret");
        assert_eq!(cs.authorization, Some(format!("Basic {expected}")));

        let (boot, statuses) = cs.boot(2).await;
        assert_eq!(boot["chargePointVendor"], "ParkSim");
        assert_eq!(boot["chargePointModel"], "AC7");
        assert_eq!(boot["firmwareVersion"], FIRMWARE_VERSION);
        assert_eq!(statuses, all_available(2));
        // The accepted interval is 1 s: heartbeats follow, and nothing else while idle.
        for _ in 0..2 {
            assert_eq!(cs.call().await.0, "Heartbeat");
        }
        let stats = charger.control.stats();
        assert!(stats.connected);
        assert_eq!((stats.connects, stats.boots_accepted), (1, 1));
        assert_eq!(stats.calls_sent, 6);
        assert_eq!(stats.call_errors_received, 0);
        charger.stop().await;
    }

    #[tokio::test]
    async fn a_session_starts_a_transaction_and_meters_rising_energy_in_either_celsius_spelling() {
        for (seed, celsius) in [(1, "Celcius"), (2, "Celsius")] {
            let mut central = Central::start(0).await;
            let charger = Charger::spawn(&central.url, seed);
            let mut cs = central.next().await;
            cs.boot(2).await;
            charger.control.start(1, "TAG-1").await;

            let (action, p) = cs.event().await;
            assert_eq!(
                (action.as_str(), &p["status"]),
                ("StatusNotification", &json!("Preparing"))
            );
            let (action, p) = cs.event().await;
            assert_eq!(
                (action.as_str(), &p["idTag"]),
                ("Authorize", &json!("TAG-1"))
            );
            let (action, start) = cs.event().await;
            assert_eq!(action, "StartTransaction");
            assert_eq!(
                (&start["connectorId"], &start["idTag"]),
                (&json!(1), &json!("TAG-1"))
            );
            let meter_start = start["meterStart"].as_i64().unwrap() as f64;
            let (action, p) = cs.event().await;
            assert_eq!(
                (action.as_str(), &p["status"]),
                ("StatusNotification", &json!("Charging"))
            );

            let mut energies = Vec::new();
            for _ in 0..3 {
                let (action, p) = cs.event().await;
                assert_eq!(action, "MeterValues");
                assert_eq!(
                    (&p["connectorId"], &p["transactionId"]),
                    (&json!(1), &json!(7))
                );
                let values = p["meterValue"][0]["sampledValue"].as_array().unwrap();
                let get = |measurand: &str| {
                    values
                        .iter()
                        .find(|v| v["measurand"] == measurand)
                        .unwrap_or_else(|| panic!("no {measurand} in {p}"))
                };
                let energy = get("Energy.Active.Import.Register");
                assert_eq!(
                    (&energy["unit"], &energy["context"]),
                    (&json!("Wh"), &json!("Sample.Periodic"))
                );
                energies.push(energy["value"].as_str().unwrap().parse::<f64>().unwrap());
                let power: f64 = get("Power.Active.Import")["value"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((6000.0..=7000.0).contains(&power), "{power}");
                assert_eq!(get("Power.Active.Import")["unit"], "W");
                assert_eq!(get("Current.Import")["unit"], "A");
                assert_eq!(get("Voltage")["unit"], "V");
                assert_eq!(get("Temperature")["unit"], celsius);
                assert_eq!(get("SoC")["unit"], "Percent");
            }
            assert!(
                energies[0] >= meter_start - 0.5,
                "{meter_start} {energies:?}"
            );
            assert!(energies.windows(2).all(|w| w[1] > w[0]), "{energies:?}");

            charger.control.stop(1).await;
            let stop = cs.until("StopTransaction").await;
            assert_eq!(
                (&stop["transactionId"], &stop["reason"]),
                (&json!(7), &json!("Local"))
            );
            assert!(stop["meterStop"].as_i64().unwrap() as f64 >= energies[2] - 0.5);
            let (_, p) = cs.event().await;
            assert_eq!(
                (&p["connectorId"], &p["status"]),
                (&json!(1), &json!("Finishing"))
            );
            let (_, p) = cs.event().await;
            assert_eq!(
                (&p["connectorId"], &p["status"]),
                (&json!(1), &json!("Available"))
            );

            let stats = charger.stop().await;
            assert_eq!(stats.transaction_ids, vec![7]);
        }
    }

    #[tokio::test]
    async fn a_remote_stop_of_the_running_transaction_is_accepted_and_followed_by_stop_transaction()
    {
        let (_central, mut cs, charger) = charging(3).await;
        let reply = cs
            .command("RemoteStopTransaction", json!({"transactionId": 99}))
            .await;
        assert_eq!(result_status(&reply), "Rejected");
        let reply = cs
            .command("RemoteStopTransaction", json!({"transactionId": 7}))
            .await;
        assert_eq!(result_status(&reply), "Accepted");
        let stop = cs.until("StopTransaction").await;
        assert_eq!(
            (&stop["transactionId"], &stop["reason"]),
            (&json!(7), &json!("Remote"))
        );
        cs.until_status(1, "Available").await;
        let stats = charger.stop().await;
        assert_eq!(stats.commands_received, 2);
    }

    #[tokio::test]
    async fn a_hard_reset_reconnects_boots_again_and_then_reports_the_stopped_transaction() {
        let (mut central, mut cs, charger) = charging(4).await;
        let reply = cs.command("Reset", json!({"type": "Hard"})).await;
        assert_eq!(result_status(&reply), "Accepted");
        assert_eq!(cs.closed().await, Ending::CloseFrame);

        let mut cs = central.next().await;
        let (_, statuses) = cs.boot(2).await;
        assert_eq!(statuses, all_available(2));
        let stop = cs.event().await;
        assert_eq!(stop.0, "StopTransaction");
        assert_eq!(
            (&stop.1["transactionId"], &stop.1["reason"]),
            (&json!(7), &json!("HardReset"))
        );
        let stats = charger.stop().await;
        assert_eq!((stats.connects, stats.boots_accepted), (2, 2));
    }

    #[tokio::test]
    async fn a_soft_reset_stops_the_session_before_it_reconnects_and_boots_again() {
        let (mut central, mut cs, charger) = charging(5).await;
        let reply = cs.command("Reset", json!({"type": "Soft"})).await;
        assert_eq!(result_status(&reply), "Accepted");
        let stop = cs.until("StopTransaction").await;
        assert_eq!(stop["reason"], "SoftReset");
        assert_eq!(cs.closed().await, Ending::CloseFrame);

        let mut cs = central.next().await;
        let (_, statuses) = cs.boot(2).await;
        assert_eq!(statuses, all_available(2));
        let stats = charger.stop().await;
        assert_eq!((stats.connects, stats.boots_accepted), (2, 2));
    }

    #[tokio::test]
    async fn a_dropped_connection_is_reconnected_and_a_charging_connector_reports_charging_again() {
        let (mut central, mut cs, charger) = charging(6).await;
        cs.until("MeterValues").await;
        charger.control.drop_connection().await;
        assert_eq!(cs.closed().await, Ending::Abrupt);

        let mut cs = central.next().await;
        let (_, statuses) = cs.boot(2).await;
        assert_eq!(
            statuses[1],
            (1, "Charging".to_string(), "NoError".to_string())
        );
        assert_eq!(
            statuses[2],
            (2, "Available".to_string(), "NoError".to_string())
        );
        let meter = cs.until("MeterValues").await;
        assert_eq!(meter["transactionId"], 7);
        let stats = charger.stop().await;
        assert_eq!(stats.connects, 2);
        assert_eq!(
            stats.transaction_ids,
            vec![7],
            "the transaction is kept, not restarted"
        );
    }

    #[tokio::test]
    async fn unknown_actions_and_bad_payloads_from_the_central_system_get_the_call_error_they_earn()
    {
        let mut central = Central::start(0).await;
        let charger = Charger::spawn(&central.url, 7);
        let mut cs = central.next().await;
        cs.boot(2).await;
        for (action, payload, code) in [
            ("FooBar", json!({}), ErrorCode::NotImplemented),
            (
                "RemoteStopTransaction",
                json!({"transactionId": "x"}),
                ErrorCode::TypeConstraintViolation,
            ),
            ("Reset", json!({}), ErrorCode::OccurenceConstraintViolation),
            (
                "Reset",
                json!({"type": "Warm"}),
                ErrorCode::PropertyConstraintViolation,
            ),
            (
                "UnlockConnector",
                json!({"connectorId": -1}),
                ErrorCode::PropertyConstraintViolation,
            ),
        ] {
            let reply = cs.command(action, payload).await;
            assert_eq!(error_code(&reply), code, "{action}");
        }
        // Still talking afterwards.
        assert_eq!(cs.call().await.0, "Heartbeat");
        let stats = charger.stop().await;
        assert_eq!(stats.commands_received, 5);
        assert_eq!(stats.connects, 1);
    }

    #[tokio::test]
    async fn unlock_and_change_availability_are_answered_as_a_charger_answers_them() {
        let (_central, mut cs, charger) = charging(8).await;
        for (connector, status) in [(0, "NotSupported"), (9, "NotSupported")] {
            let reply = cs
                .command("UnlockConnector", json!({"connectorId": connector}))
                .await;
            assert_eq!(result_status(&reply), status);
        }

        let reply = cs
            .command(
                "ChangeAvailability",
                json!({"connectorId": 2, "type": "Inoperative"}),
            )
            .await;
        assert_eq!(result_status(&reply), "Accepted");
        cs.until_status(2, "Unavailable").await;
        let reply = cs
            .command(
                "ChangeAvailability",
                json!({"connectorId": 2, "type": "Operative"}),
            )
            .await;
        assert_eq!(result_status(&reply), "Accepted");
        cs.until_status(2, "Available").await;

        // Connector 1 charges: it becomes unavailable once its session is over.
        let reply = cs
            .command(
                "ChangeAvailability",
                json!({"connectorId": 1, "type": "Inoperative"}),
            )
            .await;
        assert_eq!(result_status(&reply), "Scheduled");
        let reply = cs
            .command(
                "ChangeAvailability",
                json!({"connectorId": 5, "type": "Inoperative"}),
            )
            .await;
        assert_eq!(result_status(&reply), "Rejected");
        charger.control.stop(1).await;
        cs.until("StopTransaction").await;
        cs.until_status(1, "Finishing").await;
        cs.until_status(1, "Unavailable").await;

        // Unlocking a charging connector ends its transaction first.
        charger.control.start(2, "TAG-2").await;
        cs.until_status(2, "Charging").await;
        let reply = cs
            .command("UnlockConnector", json!({"connectorId": 2}))
            .await;
        assert_eq!(result_status(&reply), "Unlocked");
        let stop = cs.until("StopTransaction").await;
        assert_eq!(stop["reason"], "UnlockCommand");
        charger.stop().await;
    }

    #[tokio::test]
    async fn a_fault_is_reported_with_its_code_and_clearing_it_reports_the_state_before() {
        let (_central, mut cs, charger) = charging(9).await;
        charger
            .control
            .fault(1, ChargePointErrorCode::HighTemperature)
            .await;
        let p = cs.until_status(1, "Faulted").await;
        assert_eq!(p["errorCode"], "HighTemperature");
        charger
            .control
            .fault(2, ChargePointErrorCode::GroundFailure)
            .await;
        let p = cs.until_status(2, "Faulted").await;
        assert_eq!(p["errorCode"], "GroundFailure");

        charger.control.clear(1).await;
        let p = cs.until_status(1, "Charging").await;
        assert_eq!(p["errorCode"], "NoError");
        charger.control.clear(2).await;
        let p = cs.until_status(2, "Available").await;
        assert_eq!(p["errorCode"], "NoError");
        // The session went on through the fault.
        assert_eq!(cs.until("MeterValues").await["transactionId"], 7);
        charger.stop().await;
    }

    #[tokio::test]
    async fn a_pending_boot_is_sent_again_after_the_interval_and_nothing_else_before() {
        let mut central = Central::start(0).await;
        let charger = Charger::spawn(&central.url, 10);
        let mut cs = central.next().await;
        cs.boot_answers.push_back("Pending");
        assert_eq!(cs.call().await.0, "BootNotification");
        assert_eq!(charger.control.stats().boots_accepted, 0);
        let (_, statuses) = cs.boot(2).await;
        assert_eq!(statuses, all_available(2));
        let stats = charger.stop().await;
        assert_eq!((stats.connects, stats.boots_accepted), (1, 1));
    }

    #[tokio::test]
    async fn a_refused_handshake_is_tried_again_after_a_back_off() {
        let mut central = Central::start(1).await;
        let charger = Charger::spawn(&central.url, 11);
        let mut cs = central.next().await;
        assert_eq!(central.refused.load(Ordering::SeqCst), 1);
        cs.boot(2).await;
        let stats = charger.stop().await;
        assert_eq!(stats.connects, 1);
    }

    #[tokio::test]
    async fn shutdown_ends_a_charger_that_cannot_connect() {
        // Nothing listens on port 1.
        let charger = Charger::spawn("ws://127.0.0.1:1/ocpp", 12);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let stats = charger.stop().await;
        assert_eq!(stats.connects, 0);
    }

    /// Sends the machine's next queued call and answers it with `reply`.
    fn exchange(m: &mut Machine, reply: Value) -> (&'static str, Value) {
        let call = m.queue.pop_front().expect("a call is queued");
        let sent = (call.action, call.payload.clone());
        m.in_flight = Some(InFlight {
            id: "1".into(),
            call,
            deadline: Instant::now() + CALL_TIMEOUT,
        });
        m.on_reply(Ok(reply));
        sent
    }

    #[tokio::test]
    async fn autoplay_starts_a_session_with_a_regulars_card_and_stops_it_when_due_again() {
        let (sim, control) = SimCharger::new(SimConfig {
            url: "ws://127.0.0.1:1/ocpp".into(),
            charge_point_id: "CP-9".into(),
            password: None,
            connectors: 1,
            meter_interval: Duration::from_secs(60),
            max_power_w: 22_000.0,
            vendor: "ParkSim".into(),
            model: "AC22".into(),
            seed: 99,
            autoplay: true,
        });
        let mut m = Machine::new(sim.cfg, sim.stats);
        m.booted = true;
        m.connectors[1].next_play = Instant::now();
        m.play();
        let (action, p) = exchange(&mut m, json!({}));
        assert_eq!(
            (action, &p["status"]),
            ("StatusNotification", &json!("Preparing"))
        );
        let (action, p) = exchange(&mut m, json!({"idTagInfo": {"status": "Accepted"}}));
        assert_eq!(action, "Authorize");
        let tag = p["idTag"].as_str().unwrap().to_string();
        assert!(m.id_tags.contains(&tag), "{tag}");
        let (action, _) = exchange(
            &mut m,
            json!({"idTagInfo": {"status": "Accepted"}, "transactionId": 41}),
        );
        assert_eq!(action, "StartTransaction");
        let (_, p) = exchange(&mut m, json!({}));
        assert_eq!(p["status"], "Charging");
        // A few minutes of charging are planned; not yet due.
        assert!(m.connectors[1].next_play > Instant::now() + Duration::from_secs(100));
        m.play();
        assert!(m.queue.is_empty());

        m.connectors[1].next_play = Instant::now();
        m.play();
        let (action, p) = exchange(&mut m, json!({}));
        assert_eq!(
            (action, &p["transactionId"], &p["idTag"]),
            ("StopTransaction", &json!(41), &json!(tag))
        );
        let (_, p) = exchange(&mut m, json!({}));
        assert_eq!(p["status"], "Finishing");
        let (_, p) = exchange(&mut m, json!({}));
        assert_eq!(p["status"], "Available");
        assert_eq!(control.stats().transaction_ids, vec![41]);
    }

    #[test]
    fn a_three_phase_pile_reports_the_current_of_one_phase() {
        let (sim, _control) = SimCharger::new(SimConfig {
            url: String::new(),
            charge_point_id: "CP-3".into(),
            password: None,
            connectors: 1,
            meter_interval: Duration::from_secs(60),
            max_power_w: 22_000.0,
            vendor: "ParkSim".into(),
            model: "AC22".into(),
            seed: 3,
            autoplay: false,
        });
        let mut m = Machine::new(sim.cfg, sim.stats);
        m.connectors[1].power_w = 21_000.0;
        let v = m.meter_value(1);
        let current: f64 = v.sampled_value[2].value.parse().unwrap();
        assert_eq!(v.sampled_value[2].measurand, Some(Measurand::CurrentImport));
        assert!((28.0..32.0).contains(&current), "{current}");
    }

    #[test]
    fn chargers_with_other_seeds_draw_other_numbers_and_each_seed_draws_the_same() {
        let draw = |seed| {
            let mut r = Rng::new(seed);
            (0..4).map(|_| r.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(draw(0), draw(0));
        assert_ne!(draw(0), draw(1));
        assert_ne!(draw(1), draw(2));
        let mut r = Rng::new(42);
        assert!((0..1000).map(|_| r.unit()).all(|u| (0.0..1.0).contains(&u)));
    }
}
