//! The hub's configuration: TOML as in DESIGN.md, loaded with every error located
//! (`load`), then checked as a whole (`validate`).

mod doc;
mod load;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

pub use doc::{expand_str, Diagnostic, Diagnostics, Document, KeyPath, Seg};
pub(crate) use load::read_text;
pub use load::{load, load_str, Loaded, MAX_FILE_BYTES};
pub use validate::MqttTopics;

use crate::profile::{DataType, Function, Kind, WordOrder};

/// The whole configuration file.
#[derive(Debug, Clone)]
pub struct Config {
    pub hub: HubConfig,
    pub api: ApiConfig,
    pub history: HistoryConfig,
    pub mqtt: Option<MqttConfig>,
    pub buses: Vec<BusConfig>,
    pub devices: Vec<DeviceConfig>,
    pub departments: Vec<DepartmentConfig>,
    pub channels: Vec<ChannelConfig>,
    pub routes: Vec<RouteConfig>,
    pub alarms: AlarmsConfig,
    pub rules: Vec<RuleConfig>,
    pub inhibits: Vec<InhibitConfig>,
    pub uplink: Option<UplinkConfig>,
    pub ocpp: OcppConfig,
}

impl Config {
    pub fn bus(&self, id: &str) -> Option<&BusConfig> {
        self.buses.iter().find(|b| b.id == id)
    }

    pub fn device(&self, id: &str) -> Option<&DeviceConfig> {
        self.devices.iter().find(|d| d.id == id)
    }
}

/// A secret from the config (usually `${VAR}`): never printed by `Debug` or logs.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// An IANA time zone name, checked when read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timezone(pub chrono_tz::Tz);

impl Default for Timezone {
    fn default() -> Self {
        Self(chrono_tz::Asia::Shanghai)
    }
}

impl<'de> Deserialize<'de> for Timezone {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        chrono_tz::Tz::from_str(&s).map(Timezone).map_err(|_| {
            serde::de::Error::custom(format!(
                "unknown time zone `{s}` (use an IANA name such as \"Asia/Shanghai\")"
            ))
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum Language {
    #[default]
    #[serde(rename = "zh-CN")]
    ZhCn,
    #[serde(rename = "en")]
    En,
}

impl Language {
    pub fn as_str(self) -> &'static str {
        match self {
            Language::ZhCn => "zh-CN",
            Language::En => "en",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct HubConfig {
    /// Unique per hub; pushes and the uplink carry it.
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default)]
    pub language: Language,
    #[serde(default)]
    pub timezone: Timezone,
    /// Extra or overriding firmware profiles (`*.toml`), beside the bundled ones.
    #[serde(default)]
    pub profiles_dir: Option<PathBuf>,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/parkhub")
}

#[derive(Debug, Clone, Deserialize)]
pub struct ApiConfig {
    #[serde(default = "default_api_listen")]
    pub listen: SocketAddr,
    #[serde(default)]
    pub token: Vec<ApiToken>,
    /// Web origins (`https://brain.example.com`) whose pages may call the API from a browser.
    /// Empty, the default: no cross-origin access at all.
    #[serde(default)]
    pub cors_origins: Vec<String>,
    /// Serve HTTPS on `listen` (for installs without a reverse proxy in front).
    #[serde(default)]
    pub tls: Option<ApiTls>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: default_api_listen(),
            token: Vec::new(),
            cors_origins: Vec::new(),
            tls: None,
        }
    }
}

/// The listener's certificate chain and private key, PEM files.
#[derive(Debug, Clone, Deserialize)]
pub struct ApiTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn default_api_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ApiToken {
    pub name: String,
    pub role: Role,
    /// Hex SHA-256 of the token; the token itself never sits in the config.
    pub sha256: String,
}

/// Retention of local history, in days, and the room it must leave on the disk.
#[derive(Debug, Clone, Deserialize)]
pub struct HistoryConfig {
    #[serde(default = "default_raw_days")]
    pub raw_days: u32,
    #[serde(default = "default_5m_days")]
    pub rollup_5m_days: u32,
    #[serde(default = "default_hourly_days")]
    pub hourly_days: u32,
    #[serde(default = "default_daily_days")]
    pub daily_days: u32,
    /// Free space the data directory's disk must keep, MB: below it history sheds its oldest
    /// readings (alarms, the push outbox and the uplink queue share that disk) and the storage
    /// alarm stands.
    #[serde(default = "default_min_free_mb")]
    pub min_free_mb: u64,
    /// The most history may take, MB (0: as much as the disk leaves); past it the oldest
    /// readings are shed.
    #[serde(default)]
    pub max_db_mb: u64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            raw_days: default_raw_days(),
            rollup_5m_days: default_5m_days(),
            hourly_days: default_hourly_days(),
            daily_days: default_daily_days(),
            min_free_mb: default_min_free_mb(),
            max_db_mb: 0,
        }
    }
}

fn default_raw_days() -> u32 {
    7
}
fn default_5m_days() -> u32 {
    35
}
fn default_hourly_days() -> u32 {
    730
}
fn default_daily_days() -> u32 {
    3650
}
fn default_min_free_mb() -> u64 {
    64
}

/// The OCPP 1.6J central system the hub runs for the park's EV chargers.
#[derive(Debug, Clone, Deserialize)]
pub struct OcppConfig {
    /// A listener of its own (`0.0.0.0:8887`); without it, chargers connect to the API's.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// The heartbeat interval chargers are given at boot.
    #[serde(default = "default_heartbeat_interval_s")]
    pub heartbeat_interval_s: u64,
    /// Silent this long, a charger is offline; default twice the heartbeat interval plus 30 s.
    #[serde(default)]
    pub offline_after_s: Option<u64>,
    /// Who may charge: every id tag (`accept-all`), or those in `id_tags` (`local-list`).
    #[serde(default)]
    pub authorize: Authorize,
    #[serde(default)]
    pub id_tags: Vec<String>,
    /// Seconds to wait for a charger's answer to an operator's command.
    #[serde(default = "default_command_timeout_s")]
    pub command_timeout_s: u64,
}

impl Default for OcppConfig {
    fn default() -> Self {
        Self {
            listen: None,
            heartbeat_interval_s: default_heartbeat_interval_s(),
            offline_after_s: None,
            authorize: Authorize::default(),
            id_tags: Vec::new(),
            command_timeout_s: default_command_timeout_s(),
        }
    }
}

impl OcppConfig {
    pub fn offline_after_s(&self) -> u64 {
        self.offline_after_s.unwrap_or(
            self.heartbeat_interval_s
                .saturating_mul(2)
                .saturating_add(30),
        )
    }
}

fn default_heartbeat_interval_s() -> u64 {
    60
}

fn default_command_timeout_s() -> u64 {
    30
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Authorize {
    /// The hub watches, it does not bill: every id tag may charge.
    #[default]
    AcceptAll,
    LocalList,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MqttConfig {
    /// `"embedded"`, or `mqtt://host:1883` / `mqtts://host:8883` for the park's broker.
    pub broker: String,
    /// Where the embedded broker listens.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    #[serde(default)]
    pub keep_alive_s: Option<u64>,
    /// Largest payload taken from a device (default 64 KiB); larger ones are refused.
    #[serde(default)]
    pub max_payload_bytes: Option<usize>,
    /// Accounts of the embedded broker.
    #[serde(default)]
    pub user: Vec<MqttUser>,
}

impl MqttConfig {
    pub fn is_embedded(&self) -> bool {
        self.broker == "embedded"
    }

    /// Where the embedded broker listens.
    pub fn listen(&self) -> SocketAddr {
        self.listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 1883)))
    }

    pub fn max_payload_bytes(&self) -> usize {
        self.max_payload_bytes.unwrap_or(65_536)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct MqttUser {
    pub name: String,
    pub password_sha256: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BusKind {
    Tcp,
    Rtu,
    RtuOverTcp,
    Dlt645,
    Cjt188,
}

impl fmt::Display for BusKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BusKind::Tcp => "tcp",
            BusKind::Rtu => "rtu",
            BusKind::RtuOverTcp => "rtu-over-tcp",
            BusKind::Dlt645 => "dlt645",
            BusKind::Cjt188 => "cjt188",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Parity {
    #[serde(rename = "N", alias = "none")]
    None,
    #[serde(rename = "E", alias = "even")]
    Even,
    #[serde(rename = "O", alias = "odd")]
    Odd,
}

impl fmt::Display for Parity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Parity::None => "N",
            Parity::Even => "E",
            Parity::Odd => "O",
        })
    }
}

impl FromStr for Parity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_uppercase().as_str() {
            "N" | "NONE" => Ok(Parity::None),
            "E" | "EVEN" => Ok(Parity::Even),
            "O" | "ODD" => Ok(Parity::Odd),
            _ => Err(format!("parity `{s}` is not N, E or O")),
        }
    }
}

/// Serial line settings; `None` fields come from the devices' profiles, then 9600 8N1.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct SerialSettings {
    #[serde(default)]
    pub baud: Option<u32>,
    #[serde(default)]
    pub parity: Option<Parity>,
    #[serde(default)]
    pub data_bits: Option<u8>,
    #[serde(default)]
    pub stop_bits: Option<u8>,
}

/// One physical line: a serial port, or the host:port of a Modbus TCP device or serial server.
#[derive(Debug, Clone, Deserialize)]
pub struct BusConfig {
    pub id: String,
    pub kind: BusKind,
    /// `host:port` for tcp and rtu-over-tcp.
    #[serde(default)]
    pub address: Option<String>,
    /// Serial device for rtu, e.g. `/dev/ttyUSB0`.
    #[serde(default)]
    pub serial: Option<PathBuf>,
    #[serde(default)]
    pub baud: Option<u32>,
    #[serde(default)]
    pub parity: Option<Parity>,
    #[serde(default)]
    pub data_bits: Option<u8>,
    #[serde(default)]
    pub stop_bits: Option<u8>,
    /// Answer timeout of one request.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Silence between frames on the line; default 0 for tcp, 20 ms for serial lines.
    #[serde(default)]
    pub pause_ms: Option<u64>,
    /// Failed polls in a row before a device is marked offline.
    #[serde(default = "default_offline_after")]
    pub offline_after: u32,
    /// Ceiling of the back-off of reconnects and of polling offline devices.
    #[serde(default = "default_max_backoff_s")]
    pub max_backoff_s: u64,
    /// rtu: the BCM GPIO pin driving the RS-485 transceiver's driver enable (DE, with RE tied to
    /// it), for HATs without automatic direction control.
    #[serde(default)]
    pub de_pin: Option<u8>,
    /// rtu: the level of `de_pin` that enables the driver (default high, as on a MAX485).
    #[serde(default)]
    pub de_active: Option<crate::gpio::Active>,
}

impl BusConfig {
    /// Whether the bus speaks DL/T 645 or CJ/T 188 (raw frames) rather than Modbus.
    pub fn is_meter_protocol(&self) -> bool {
        matches!(self.kind, BusKind::Dlt645 | BusKind::Cjt188)
    }

    /// The profile protocol its devices must speak.
    pub fn protocol(&self) -> crate::profile::Protocol {
        match self.kind {
            BusKind::Dlt645 => crate::profile::Protocol::Dlt645,
            BusKind::Cjt188 => crate::profile::Protocol::Cjt188,
            _ => crate::profile::Protocol::Modbus,
        }
    }

    pub fn is_serial_line(&self) -> bool {
        matches!(
            self.kind,
            BusKind::Rtu | BusKind::RtuOverTcp | BusKind::Dlt645 | BusKind::Cjt188
        )
    }

    pub fn pause_ms(&self) -> u64 {
        self.pause_ms
            .unwrap_or(if self.kind == BusKind::Tcp { 0 } else { 20 })
    }

    pub fn serial_settings(&self) -> SerialSettings {
        SerialSettings {
            baud: self.baud,
            parity: self.parity,
            data_bits: self.data_bits,
            stop_bits: self.stop_bits,
        }
    }
}

fn default_timeout_ms() -> u64 {
    1000
}
fn default_offline_after() -> u32 {
    3
}
fn default_max_backoff_s() -> u64 {
    60
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Location {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub building: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// The tenant (企业) a meter bills, for energy per tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DeviceConfig {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    pub profile: String,
    #[serde(default)]
    pub bus: Option<String>,
    /// Modbus unit id, 1..247; defaults to the profile's factory unit.
    #[serde(default)]
    pub unit: Option<i64>,
    #[serde(default)]
    pub poll_interval_s: Option<i64>,
    /// Overrides the bus's answer timeout for this device.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub location: Location,
    /// MQTT devices: the topic they publish on.
    #[serde(default)]
    pub topic: Option<String>,
    /// OCPP chargers: the charge point id in the WebSocket path (default: the device id).
    #[serde(default)]
    pub charge_point_id: Option<String>,
    /// OCPP chargers: hex SHA-256 of the password the charger sends with HTTP Basic auth
    /// (OCPP security profile 1). Without it the charger's id alone lets it in.
    #[serde(default)]
    pub password_sha256: Option<String>,
    /// OCPP chargers: how many connectors, so the console shows them before they report.
    #[serde(default)]
    pub connectors: Option<u32>,
    /// DL/T 645 and CJ/T 188 meters: the meter address.
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub expire_after_s: Option<u64>,
    /// MQTT devices: where they (or their last will) say `online` / `offline`.
    #[serde(default)]
    pub availability_topic: Option<String>,
    /// Dry contacts: the BCM GPIO pin.
    #[serde(default)]
    pub pin: Option<u8>,
    /// Dry contacts: the input's bias (default up: a contact to ground).
    #[serde(default)]
    pub pull: Option<crate::gpio::Pull>,
    /// Dry contacts: the level that means active (default low, with the pull-up).
    #[serde(default)]
    pub active: Option<crate::gpio::Active>,
    /// Dry contacts: how long a new level must hold before it counts.
    #[serde(default)]
    pub debounce_ms: Option<u64>,
    /// Dry contacts: what the contact is (fire, security, ...), which its alarm's category follows.
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Per-device changes to profile points, or extra points: `[device.point.energy_import]`.
    #[serde(default)]
    pub point: BTreeMap<String, PointOverride>,
}

pub const DEFAULT_POLL_INTERVAL_S: u64 = 10;

impl DeviceConfig {
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }

    /// An OCPP charger's id in its WebSocket path.
    pub fn charge_point_id(&self) -> &str {
        self.charge_point_id.as_deref().unwrap_or(&self.id)
    }

    pub fn poll_interval_s(&self) -> u64 {
        self.poll_interval_s
            .and_then(|s| u64::try_from(s).ok())
            .filter(|s| *s > 0)
            .unwrap_or(DEFAULT_POLL_INTERVAL_S)
    }
}

/// What a device may change of a profile point (or give for a point the profile lacks).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct PointOverride {
    #[serde(default)]
    pub register: Option<i64>,
    #[serde(default)]
    pub function: Option<Function>,
    #[serde(default, rename = "type")]
    pub dtype: Option<DataType>,
    #[serde(default)]
    pub order: Option<WordOrder>,
    #[serde(default)]
    pub scale: Option<f64>,
    #[serde(default)]
    pub offset: Option<f64>,
    #[serde(default)]
    pub unit: Option<String>,
    #[serde(default)]
    pub kind: Option<Kind>,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub length: Option<u16>,
    #[serde(default)]
    pub bit: Option<u8>,
    #[serde(default)]
    pub enabled: Option<bool>,
    /// MQTT: a different place in the payload.
    #[serde(default)]
    pub pointer: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DepartmentConfig {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub channels: Vec<String>,
    #[serde(default)]
    pub people: Vec<Person>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Person {
    pub name: String,
    #[serde(default)]
    pub mobile: Option<String>,
    #[serde(default)]
    pub role: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    Webhook,
    Dingtalk,
    Wecom,
    Feishu,
    Mqtt,
    Gpio,
}

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Webhook => "webhook",
            ChannelKind::Dingtalk => "dingtalk",
            ChannelKind::Wecom => "wecom",
            ChannelKind::Feishu => "feishu",
            ChannelKind::Mqtt => "mqtt",
            ChannelKind::Gpio => "gpio",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChannelConfig {
    pub id: String,
    pub kind: ChannelKind,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub secret: Option<Secret>,
    /// mqtt: topic to publish alarms on.
    #[serde(default)]
    pub topic: Option<String>,
    /// gpio: BCM pin of the siren/strobe relay.
    #[serde(default)]
    pub pin: Option<u8>,
    #[serde(default)]
    pub active_high: Option<bool>,
    /// gpio: the relay stays on (steady) or goes on and off (pulse).
    #[serde(default)]
    pub mode: Option<RelayMode>,
    /// gpio, pulse mode: on time of a pulse.
    #[serde(default)]
    pub pulse_on_ms: Option<u64>,
    /// gpio, pulse mode: off time between pulses.
    #[serde(default)]
    pub pulse_off_ms: Option<u64>,
    /// gpio, pulse mode: pulses per alarm; 0 repeats until acknowledged (or `max_on_s`).
    #[serde(default)]
    pub pulses: Option<u32>,
    /// gpio: the relay switches itself off after this long, though the alarm still waits for
    /// acknowledgement (a new alarm sounds it again); 0 = never.
    #[serde(default)]
    pub max_on_s: Option<u64>,
    #[serde(default)]
    pub rate_limit_per_min: Option<u32>,
    /// Mobiles to @-mention (DingTalk, WeCom).
    #[serde(default)]
    pub mobiles: Vec<String>,
    #[serde(default)]
    pub language: Option<Language>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayMode {
    #[default]
    Steady,
    Pulse,
}

/// A string or a list of strings (`category = "fire"` or `category = ["fire", "security"]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn values(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(s) => vec![s.as_str()],
            OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// Labels an alarm is matched on (routes, inhibitions).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RouteMatch {
    #[serde(default)]
    pub category: Option<OneOrMany>,
    #[serde(default)]
    pub severity: Option<OneOrMany>,
    #[serde(default)]
    pub building: Option<OneOrMany>,
    #[serde(default)]
    pub floor: Option<OneOrMany>,
    #[serde(default)]
    pub zone: Option<OneOrMany>,
    #[serde(default)]
    pub device: Option<OneOrMany>,
    #[serde(default)]
    pub bus: Option<OneOrMany>,
    #[serde(default)]
    pub rule: Option<OneOrMany>,
}

impl RouteMatch {
    /// (label, accepted values) for each label given.
    pub fn pairs(&self) -> Vec<(&'static str, Vec<String>)> {
        [
            ("category", &self.category),
            ("severity", &self.severity),
            ("building", &self.building),
            ("floor", &self.floor),
            ("zone", &self.zone),
            ("device", &self.device),
            ("bus", &self.bus),
            ("rule", &self.rule),
        ]
        .into_iter()
        .filter_map(|(k, v)| {
            v.as_ref()
                .map(|v| (k, v.values().into_iter().map(str::to_owned).collect()))
        })
        .collect()
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct RouteConfig {
    #[serde(default, rename = "match")]
    pub matcher: RouteMatch,
    /// Empty in a child route: its parent's.
    #[serde(default)]
    pub departments: Vec<String>,
    #[serde(default, rename = "continue")]
    pub continue_matching: bool,
    #[serde(default)]
    pub escalate_after_s: Option<u64>,
    #[serde(default)]
    pub escalate_to: Vec<String>,
    /// Push an unacknowledged alarm again this often.
    #[serde(default)]
    pub repeat_after_s: Option<u64>,
    /// Child routes, tried before this one's own departments.
    #[serde(default)]
    pub route: Vec<RouteConfig>,
}

/// How alarms are handled as a whole.
#[derive(Debug, Clone, Deserialize)]
pub struct AlarmsConfig {
    /// Non-urgent pushes within this window go out as one message.
    #[serde(default = "default_group_window")]
    pub group_window_s: u64,
    /// Urgent (critical or fire) alarms nobody acknowledges are pushed again this often;
    /// 0 never. Routes may set their own.
    #[serde(default = "default_repeat_urgent")]
    pub repeat_urgent_s: u64,
    /// The longest an operator may shelve an alarm.
    #[serde(default = "default_max_shelve")]
    pub max_shelve_minutes: u64,
    /// Alarm transitions and deliveries are kept this long.
    #[serde(default = "default_alarm_days")]
    pub keep_days: u32,
}

impl Default for AlarmsConfig {
    fn default() -> Self {
        Self {
            group_window_s: default_group_window(),
            repeat_urgent_s: default_repeat_urgent(),
            max_shelve_minutes: default_max_shelve(),
            keep_days: default_alarm_days(),
        }
    }
}

fn default_group_window() -> u64 {
    30
}
fn default_repeat_urgent() -> u64 {
    300
}
fn default_max_shelve() -> u64 {
    480
}
fn default_alarm_days() -> u32 {
    365
}

/// An alarm rule of the config: adds a rule, or changes or disables one a profile (or the hub)
/// gives, for some devices, the devices of some profiles, or every device with the point.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RuleConfig {
    pub id: String,
    #[serde(default)]
    pub device: Option<OneOrMany>,
    #[serde(default)]
    pub profile: Option<OneOrMany>,
    /// Rules of a bus (only its `bus_offline`).
    #[serde(default)]
    pub bus: Option<OneOrMany>,
    #[serde(default)]
    pub point: Option<String>,
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub equals: Option<serde_json::Value>,
    #[serde(default, rename = "in")]
    pub in_set: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    pub not_in: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    pub above: Option<f64>,
    #[serde(default)]
    pub below: Option<f64>,
    #[serde(default)]
    pub high_high: Option<f64>,
    #[serde(default)]
    pub high: Option<f64>,
    #[serde(default)]
    pub low: Option<f64>,
    #[serde(default)]
    pub low_low: Option<f64>,
    #[serde(default)]
    pub deadband: Option<f64>,
    #[serde(default)]
    pub offline: Option<bool>,
    #[serde(default)]
    pub consumption_above: Option<f64>,
    #[serde(default)]
    pub window_s: Option<u64>,
    #[serde(default)]
    pub night_flow_above: Option<f64>,
    /// Local night window of `night_flow_above`, e.g. "01:00-05:00".
    #[serde(default)]
    pub night: Option<String>,
    #[serde(default)]
    pub backwards: Option<bool>,
    #[serde(default)]
    pub on_delay_s: Option<u64>,
    #[serde(default)]
    pub off_delay_s: Option<u64>,
    #[serde(default)]
    pub severity: Option<String>,
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default)]
    pub latched: Option<bool>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub message_en: Option<String>,
}

/// While an alarm matching `source` is active, alarms matching `target` with the same values
/// of the `equal` labels are not pushed.
#[derive(Debug, Clone, Deserialize)]
pub struct InhibitConfig {
    pub source: RouteMatch,
    pub target: RouteMatch,
    #[serde(default)]
    pub equal: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UplinkKind {
    Http,
    Mqtt,
}

#[derive(Debug, Clone, Deserialize)]
pub struct UplinkConfig {
    pub kind: UplinkKind,
    pub url: String,
    #[serde(default)]
    pub token: Option<Secret>,
    #[serde(default)]
    pub secret: Option<Secret>,
    #[serde(default = "default_uplink_interval")]
    pub interval_s: u64,
    /// How long one attempt may take: a receiver that neither answers nor fails has failed.
    #[serde(default = "default_uplink_timeout")]
    pub timeout_s: u64,
    /// The longest wait between two attempts of a batch the cloud did not take.
    #[serde(default = "default_max_retry")]
    pub max_retry_s: u64,
    /// Records in one batch at most.
    #[serde(default = "default_batch_max")]
    pub batch_max: usize,
    /// Disk the waiting records may take; past it the oldest readings are shed.
    #[serde(default = "default_backlog_mb")]
    pub max_backlog_mb: u64,
    /// Whether readings, alarm transitions and device status changes go up.
    #[serde(default = "yes")]
    pub readings: bool,
    #[serde(default = "yes")]
    pub alarms: bool,
    #[serde(default = "yes")]
    pub status: bool,
    /// Which readings go up and how often; the first entry that matches a reading decides.
    #[serde(default)]
    pub point: Vec<UplinkPoint>,
}

/// A choice of readings for the uplink: those of these devices, profiles, profile categories
/// and points (each left out: any), at most one per point per `every_s`, or none.
#[derive(Debug, Clone, Deserialize)]
pub struct UplinkPoint {
    #[serde(default)]
    pub device: Option<OneOrMany>,
    #[serde(default)]
    pub profile: Option<OneOrMany>,
    #[serde(default)]
    pub category: Option<OneOrMany>,
    #[serde(default, rename = "point")]
    pub name: Option<OneOrMany>,
    /// The first reading of each `every_s` slot of the clock (0: every reading).
    #[serde(default)]
    pub every_s: u64,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn default_uplink_interval() -> u64 {
    10
}

fn default_uplink_timeout() -> u64 {
    30
}

fn default_max_retry() -> u64 {
    300
}

fn default_batch_max() -> usize {
    5000
}

fn default_backlog_mb() -> u64 {
    256
}

fn yes() -> bool {
    true
}

pub const CATEGORIES: &[&str] = &[
    "fire",
    "security",
    "lift",
    "energy",
    "charger",
    "environment",
    "comm",
];
pub const SEVERITIES: &[&str] = &["critical", "major", "minor", "warning"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug_output() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(s.expose(), "hunter2");
    }
}
