//! Firmware profiles: what a device model's registers mean. One TOML file per model in
//! `firmware-profiles/` (bundled into the binary) or in `hub.profiles_dir`.

mod load;
mod registry;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::Parity;

pub(crate) use load::{apply_overrides, check_serial_settings, check_topic_template};
pub use load::{parse_profile, render_topic, PointSpec};
pub use registry::{ProfileRegistry, ProfileSource};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Function {
    Holding,
    Input,
    Coil,
    Discrete,
}

impl Function {
    /// Coils and discrete inputs are bits; holding and input registers are 16-bit words.
    pub fn is_bits(self) -> bool {
        matches!(self, Function::Coil | Function::Discrete)
    }

    /// The most a single read may ask for (Modbus application protocol §6.1–6.4).
    pub fn max_quantity(self) -> u16 {
        if self.is_bits() {
            2000
        } else {
            125
        }
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Function::Holding => "holding",
            Function::Input => "input",
            Function::Coil => "coil",
            Function::Discrete => "discrete",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    Bcd,
    Bool,
    String,
    /// A JSON number (MQTT points); Modbus points need a sized type.
    Number,
}

impl DataType {
    /// Registers a value of this type spans when it has no explicit `length`.
    pub fn default_registers(self) -> u16 {
        match self {
            DataType::U16
            | DataType::I16
            | DataType::Bcd
            | DataType::Bool
            | DataType::String
            | DataType::Number => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        f.write_str(&s)
    }
}

/// Byte order of a multi-register value, named by where the bytes of the big-endian value
/// `A B C D` arrive on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WordOrder {
    /// High word first, big-endian bytes (the Modbus default).
    ABCD,
    /// Low word first ("word swapped"), big-endian bytes.
    CDAB,
    /// High word first, bytes swapped in each word.
    BADC,
    /// Fully little-endian.
    DCBA,
}

impl WordOrder {
    pub fn swaps_words(self) -> bool {
        matches!(self, WordOrder::CDAB | WordOrder::DCBA)
    }

    pub fn swaps_bytes(self) -> bool {
        matches!(self, WordOrder::BADC | WordOrder::DCBA)
    }
}

impl fmt::Display for WordOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// An instantaneous value (voltage, flow rate).
    #[default]
    Gauge,
    /// A running total that only rises (energy, volume); consumption is its positive steps.
    Counter,
    /// An enumeration or flag (pipe empty/full, door open).
    State,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::State => "state",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Modbus,
    Dlt645,
    Cjt188,
    Mqtt,
    Ocpp,
    Gpio,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Modbus => "modbus",
            Protocol::Dlt645 => "dlt645",
            Protocol::Cjt188 => "cjt188",
            Protocol::Mqtt => "mqtt",
            Protocol::Ocpp => "ocpp",
            Protocol::Gpio => "gpio",
        })
    }
}

pub const PROFILE_CATEGORIES: &[&str] = &[
    "electricity_meter",
    "water_meter",
    "fire",
    "security",
    "lift",
    "energy",
    "environment",
    "charger",
];

/// Factory serial settings of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SerialDefaults {
    pub baud: u32,
    pub parity: Parity,
    pub data_bits: u8,
    pub stop_bits: u8,
    pub unit: u8,
}

impl Default for SerialDefaults {
    fn default() -> Self {
        Self {
            baud: 9600,
            parity: Parity::None,
            data_bits: 8,
            stop_bits: 1,
            unit: 1,
        }
    }
}

impl Serialize for Parity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Where a point's value comes from and how its raw bits become a number.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisterSpec {
    pub function: Function,
    /// 0-based wire address.
    pub address: u16,
    pub dtype: DataType,
    pub order: WordOrder,
    /// Registers (or bits, for coils and discrete inputs) the value spans.
    pub length: u16,
    /// For `bool` from a register: the bit (0 = least significant); `None` means "non-zero".
    pub bit: Option<u8>,
    pub scale: f64,
    pub offset: f64,
    /// Enumeration labels by raw integer value.
    pub values: Option<BTreeMap<i64, String>>,
}

impl RegisterSpec {
    /// One past the last register (or bit) of the value.
    pub fn end(&self) -> u32 {
        u32::from(self.address) + u32::from(self.length)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum PointSource {
    Register(RegisterSpec),
    /// A value in an MQTT device's JSON payload.
    Json(JsonSpec),
    /// The sum of other points' values (e.g. a totaliser's integer and fraction parts).
    Sum(Vec<Arc<str>>),
    /// A value the protocol itself names (OCPP's connector status, its meter values): the
    /// driver gives it by the point's name.
    Reported(ReportedSpec),
}

/// What an OCPP point holds.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportedSpec {
    pub json: JsonType,
    /// An enumeration's states, as the protocol spells them, to their labels.
    pub values: Option<BTreeMap<String, String>>,
}

/// The JSON type an MQTT point must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonType {
    Number,
    Bool,
    String,
}

impl JsonType {
    /// The `type` a profile writes for it.
    pub fn data_type(self) -> DataType {
        match self {
            JsonType::Number => DataType::Number,
            JsonType::Bool => DataType::Bool,
            JsonType::String => DataType::String,
        }
    }
}

/// Where a point sits in a JSON payload and how it becomes a value.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonSpec {
    /// RFC 6901 pointer, e.g. `/smoke` or `/data/temp`.
    pub pointer: String,
    pub json: JsonType,
    pub scale: f64,
    pub offset: f64,
    /// Enumeration: the payload's value (as text) to the state it stands for. A value not in
    /// the map is an error, never passed through.
    pub values: Option<BTreeMap<String, String>>,
}

/// Numbered things of one device (the ports of an e-bike charging station, the connectors of an
/// EV charger): port N's points are `{prefix}{N}.{point}`. In an MQTT payload they are the
/// elements of an array; a Modbus profile lays them out `stride` registers apart (and the
/// loader has made plain points of them); OCPP numbers its connectors itself.
#[derive(Debug, Clone, PartialEq)]
pub struct PortGroup {
    /// MQTT: pointer to the array (empty for other protocols).
    pub pointer: String,
    /// Pointer, inside an element, to its number; without it the position counts from 1.
    pub number: Option<String>,
    pub prefix: String,
    /// Points of one element, their pointers relative to the element.
    pub points: Vec<Point>,
}

/// How an MQTT device is found and judged alive.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttSettings {
    /// Topic of a device that gives none: `{id}`, `{building}`, `{floor}`, `{zone}` are filled in.
    pub topic: Option<String>,
    /// Silent this long, the device is offline.
    pub expire_after_s: Option<u64>,
    /// Where the device (or its last will) says whether it is there; `{topic}` is its topic.
    pub availability_topic: Option<String>,
    pub payload_online: String,
    pub payload_offline: String,
}

/// When a default alarm of a model is active.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Equals(serde_json::Value),
    In(Vec<serde_json::Value>),
    /// The value is none of these (an OCPP error code other than the ones named elsewhere).
    NotIn(Vec<serde_json::Value>),
    Above {
        limit: f64,
        deadband: f64,
    },
    Below {
        limit: f64,
        deadband: f64,
    },
    /// The device is offline (no answer, silent past its expiry, or its last will).
    Offline,
}

/// A default alarm a profile carries; the alarm engine acts on it.
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmSpec {
    pub id: String,
    /// A point name, or `port*.name` for that point of every port.
    pub point: Option<String>,
    pub condition: Condition,
    pub on_delay_s: u64,
    pub off_delay_s: u64,
    pub severity: String,
    pub category: String,
    /// Stays active until acknowledged, even after the condition clears (fire).
    pub latched: bool,
    pub message: String,
    pub message_en: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub name: Arc<str>,
    pub label: Option<String>,
    pub unit: Option<Arc<str>>,
    pub kind: Kind,
    /// Read (for a `sum_of`) but not published.
    pub hidden: bool,
    pub source: PointSource,
}

impl Point {
    pub fn register(&self) -> Option<&RegisterSpec> {
        match &self.source {
            PointSource::Register(r) => Some(r),
            _ => None,
        }
    }

    pub fn json(&self) -> Option<&JsonSpec> {
        match &self.source {
            PointSource::Json(j) => Some(j),
            _ => None,
        }
    }

    /// The kind of value the point gives.
    pub fn value_kind(&self) -> ValueKind {
        match &self.source {
            PointSource::Json(j) => match (&j.values, j.json) {
                (Some(v), _) => ValueKind::Text(v.values().cloned().collect()),
                (None, JsonType::Bool) => ValueKind::Bool,
                (None, JsonType::Number) => ValueKind::Number,
                (None, JsonType::String) => ValueKind::Text(Vec::new()),
            },
            PointSource::Register(r) => match (&r.values, r.dtype) {
                (Some(v), _) => ValueKind::Text(v.values().cloned().collect()),
                (None, DataType::Bool) => ValueKind::Bool,
                (None, DataType::String) => ValueKind::Text(Vec::new()),
                _ => ValueKind::Number,
            },
            PointSource::Reported(r) => match (&r.values, r.json) {
                (Some(v), _) => ValueKind::Text(v.keys().cloned().collect()),
                (None, JsonType::Bool) => ValueKind::Bool,
                (None, JsonType::Number) => ValueKind::Number,
                (None, JsonType::String) => ValueKind::Text(Vec::new()),
            },
            PointSource::Sum(_) => ValueKind::Number,
        }
    }
}

/// The kind of value a point gives, for checking what an alarm compares it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueKind {
    Bool,
    Number,
    /// Text; for an enumeration, the states it may take.
    Text(Vec<String>),
}

impl ValueKind {
    /// Whether a value in a rule (`equals = …`) is one the point can take.
    pub fn accepts(&self, v: &serde_json::Value) -> bool {
        match self {
            ValueKind::Bool => v.is_boolean(),
            ValueKind::Number => v.is_number(),
            ValueKind::Text(labels) => v
                .as_str()
                .is_some_and(|s| labels.is_empty() || labels.iter().any(|l| l == s)),
        }
    }
}

/// A point by the name an alarm gives it: `name`, or `prefix*.name` for that point of every port.
pub fn find_point<'a>(
    points: &'a [Point],
    ports: &'a [PortGroup],
    name: &str,
) -> Option<&'a Point> {
    match name.split_once("*.") {
        Some((prefix, inner)) => ports
            .iter()
            .filter(|g| g.prefix == prefix)
            .find_map(|g| g.points.iter().find(|p| &*p.name == inner)),
        None => points.iter().find(|p| &*p.name == name),
    }
}

/// Request limits of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModbusLimits {
    /// Most registers one read may ask for (≤ 125).
    pub max_registers: u16,
    /// Most unused registers a read may span to save a request.
    pub max_gap: u16,
}

impl Default for ModbusLimits {
    fn default() -> Self {
        Self {
            max_registers: 125,
            max_gap: 50,
        }
    }
}

/// A loaded, checked profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub id: String,
    pub vendor: String,
    pub model: String,
    pub category: String,
    pub protocol: Protocol,
    pub description: Option<String>,
    pub serial: SerialDefaults,
    pub limits: ModbusLimits,
    pub points: Vec<Point>,
    pub ports: Vec<PortGroup>,
    pub mqtt: Option<MqttSettings>,
    pub alarms: Vec<AlarmSpec>,
}

impl Profile {
    pub fn point(&self, name: &str) -> Option<&Point> {
        self.points.iter().find(|p| &*p.name == name)
    }

    /// A point as an alarm names it (`name` or `port*.name`).
    pub fn alarm_point(&self, name: &str) -> Option<&Point> {
        find_point(&self.points, &self.ports, name)
    }

    /// The points read from registers, with their index in `points`.
    pub fn register_points(&self) -> Vec<(usize, &RegisterSpec)> {
        self.points
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.register().map(|r| (i, r)))
            .collect()
    }

    /// Points a reader of the device sees (everything but hidden parts).
    pub fn visible_points(&self) -> impl Iterator<Item = &Point> {
        self.points.iter().filter(|p| !p.hidden)
    }
}
