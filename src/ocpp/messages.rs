//! The typed payloads of OCPP 1.6J: what a charge point sends in the core profile, what the
//! central system (the hub) answers, and the few commands an operator may send a charger with
//! their confirmations. Fields are named and bounded as the OCPP 1.6 JSON schemas have them.
//!
//! [`decode_request`] checks a charge point's payload field by field and says what is wrong as
//! the CALLERROR code that answers it:
//!
//! | what is wrong | code |
//! |---|---|
//! | the action is no OCPP 1.6 action | `NotImplemented` ("not known by receiver") |
//! | an OCPP 1.6 action the hub does not take from a charge point | `NotSupported` ("recognized but not supported") |
//! | the payload is not a JSON object | `FormationViolation` (not the PDU structure) |
//! | a required field is missing or `null`; a list with fewer elements than required | `OccurenceConstraintViolation` (the cardinality, "Card." in the spec's tables) |
//! | a field of the wrong JSON type: text for a number, `1.5` for an integer, a number for text | `TypeConstraintViolation` |
//! | text over its length, a value outside the field's enumeration, an integer out of range, a timestamp that is no date-time | `PropertyConstraintViolation` |
//!
//! Checks run in the schema's field order and the first fault is the one answered. Where the
//! schemas are stricter than chargers are, the decoder bends, and only there: fields it does not
//! know are ignored (the schemas forbid them, but refusing a status over a vendor's extra field
//! would lose the status), an optional field that is `null` is absent, an integer written
//! `12.0` is 12, and a timestamp without a zone is UTC. `ProtocolError` is left for a CALL with
//! too few elements ([`super::frame::Frame::parse`]).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use thiserror::Error;

use super::frame::ErrorCode;
use crate::text::clip;

/// Why a payload is refused: the CALLERROR code and its description.
pub type Refusal = (ErrorCode, String);

/// A text that is no value of an OCPP enumeration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("not a value OCPP 1.6 allows here")]
pub struct UnknownValue;

/// An OCPP enumeration: its values spelled as on the wire, with serde, `FromStr` and `Display`
/// agreeing on the spelling.
macro_rules! ocpp_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;

            fn from_str(s: &str) -> Result<Self, UnknownValue> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownValue),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

ocpp_enum! {
    /// A connector's state (StatusNotification.status).
    ChargePointStatus {
        Available = "Available",
        Preparing = "Preparing",
        Charging = "Charging",
        SuspendedEvse = "SuspendedEVSE",
        SuspendedEv = "SuspendedEV",
        Finishing = "Finishing",
        Reserved = "Reserved",
        Unavailable = "Unavailable",
        Faulted = "Faulted",
    }
}

ocpp_enum! {
    /// What is wrong with a connector (StatusNotification.errorCode); `NoError` when nothing is.
    ChargePointErrorCode {
        ConnectorLockFailure = "ConnectorLockFailure",
        EvCommunicationError = "EVCommunicationError",
        GroundFailure = "GroundFailure",
        HighTemperature = "HighTemperature",
        InternalError = "InternalError",
        LocalListConflict = "LocalListConflict",
        NoError = "NoError",
        OtherError = "OtherError",
        OverCurrentFailure = "OverCurrentFailure",
        PowerMeterFailure = "PowerMeterFailure",
        PowerSwitchFailure = "PowerSwitchFailure",
        ReaderFailure = "ReaderFailure",
        ResetFailure = "ResetFailure",
        UnderVoltage = "UnderVoltage",
        OverVoltage = "OverVoltage",
        WeakSignal = "WeakSignal",
    }
}

ocpp_enum! {
    /// The central system's answer to a BootNotification.
    RegistrationStatus { Accepted = "Accepted", Pending = "Pending", Rejected = "Rejected" }
}

ocpp_enum! {
    AuthorizationStatus {
        Accepted = "Accepted",
        Blocked = "Blocked",
        Expired = "Expired",
        Invalid = "Invalid",
        ConcurrentTx = "ConcurrentTx",
    }
}

ocpp_enum! {
    DataTransferStatus {
        Accepted = "Accepted",
        Rejected = "Rejected",
        UnknownMessageId = "UnknownMessageId",
        UnknownVendorId = "UnknownVendorId",
    }
}

ocpp_enum! {
    /// Why a transaction stopped (StopTransaction.reason; `Local` when absent, says the spec).
    Reason {
        EmergencyStop = "EmergencyStop",
        EvDisconnected = "EVDisconnected",
        HardReset = "HardReset",
        Local = "Local",
        Other = "Other",
        PowerLoss = "PowerLoss",
        Reboot = "Reboot",
        Remote = "Remote",
        SoftReset = "SoftReset",
        UnlockCommand = "UnlockCommand",
        DeAuthorized = "DeAuthorized",
    }
}

ocpp_enum! {
    ReadingContext {
        InterruptionBegin = "Interruption.Begin",
        InterruptionEnd = "Interruption.End",
        SampleClock = "Sample.Clock",
        SamplePeriodic = "Sample.Periodic",
        TransactionBegin = "Transaction.Begin",
        TransactionEnd = "Transaction.End",
        Trigger = "Trigger",
        Other = "Other",
    }
}

ocpp_enum! {
    ValueFormat { Raw = "Raw", SignedData = "SignedData" }
}

ocpp_enum! {
    Measurand {
        EnergyActiveExportRegister = "Energy.Active.Export.Register",
        EnergyActiveImportRegister = "Energy.Active.Import.Register",
        EnergyReactiveExportRegister = "Energy.Reactive.Export.Register",
        EnergyReactiveImportRegister = "Energy.Reactive.Import.Register",
        EnergyActiveExportInterval = "Energy.Active.Export.Interval",
        EnergyActiveImportInterval = "Energy.Active.Import.Interval",
        EnergyReactiveExportInterval = "Energy.Reactive.Export.Interval",
        EnergyReactiveImportInterval = "Energy.Reactive.Import.Interval",
        PowerActiveExport = "Power.Active.Export",
        PowerActiveImport = "Power.Active.Import",
        PowerOffered = "Power.Offered",
        PowerReactiveExport = "Power.Reactive.Export",
        PowerReactiveImport = "Power.Reactive.Import",
        PowerFactor = "Power.Factor",
        CurrentImport = "Current.Import",
        CurrentExport = "Current.Export",
        CurrentOffered = "Current.Offered",
        Voltage = "Voltage",
        Frequency = "Frequency",
        Temperature = "Temperature",
        Soc = "SoC",
        Rpm = "RPM",
    }
}

ocpp_enum! {
    Phase {
        L1 = "L1",
        L2 = "L2",
        L3 = "L3",
        N = "N",
        L1N = "L1-N",
        L2N = "L2-N",
        L3N = "L3-N",
        L1L2 = "L1-L2",
        L2L3 = "L2-L3",
        L3L1 = "L3-L1",
    }
}

ocpp_enum! {
    Location { Cable = "Cable", Ev = "EV", Inlet = "Inlet", Outlet = "Outlet", Body = "Body" }
}

ocpp_enum! {
    /// Units of a sampled value. Both `Celsius` and the schema's misspelled `Celcius` are taken,
    /// and `Hertz` (for Frequency, which the 1.6 list forgot) as the mobilityhouse schemas do.
    UnitOfMeasure {
        Wh = "Wh",
        KWh = "kWh",
        Varh = "varh",
        Kvarh = "kvarh",
        W = "W",
        KW = "kW",
        Va = "VA",
        KVa = "kVA",
        Var = "var",
        Kvar = "kvar",
        A = "A",
        V = "V",
        K = "K",
        Celcius = "Celcius",
        Celsius = "Celsius",
        Fahrenheit = "Fahrenheit",
        Percent = "Percent",
        Hertz = "Hertz",
    }
}

ocpp_enum! {
    /// The answer to RemoteStartTransaction and RemoteStopTransaction.
    RemoteStartStopStatus { Accepted = "Accepted", Rejected = "Rejected" }
}

ocpp_enum! {
    ResetType { Hard = "Hard", Soft = "Soft" }
}

ocpp_enum! {
    ResetStatus { Accepted = "Accepted", Rejected = "Rejected" }
}

ocpp_enum! {
    UnlockStatus { Unlocked = "Unlocked", UnlockFailed = "UnlockFailed", NotSupported = "NotSupported" }
}

ocpp_enum! {
    AvailabilityType { Inoperative = "Inoperative", Operative = "Operative" }
}

ocpp_enum! {
    AvailabilityStatus { Accepted = "Accepted", Rejected = "Rejected", Scheduled = "Scheduled" }
}

/// A timestamp as chargers send them: RFC 3339 (`2024-05-01T08:00:00Z`, `…T16:00:00+08:00`,
/// with or without fractional seconds), an offset without its colon (`+0800`), or no zone at all,
/// which is taken as UTC because OCPP asks for UTC everywhere.
pub fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc())
}

/// A timestamp as the hub writes it: UTC, `Z`, milliseconds (`2024-05-01T08:00:00.000Z`). Some
/// charger firmwares refuse the nine fractional digits chrono would otherwise write.
pub fn format_timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Serde for timestamp fields: written by [`format_timestamp`], read by [`parse_timestamp`].
mod timestamp {
    use chrono::{DateTime, Utc};
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_timestamp(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_timestamp(&s).ok_or_else(|| D::Error::custom("not a date-time"))
    }

    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(
            t: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => super::serialize(t, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            match Option::<String>::deserialize(d)? {
                None => Ok(None),
                Some(s) => super::super::parse_timestamp(&s)
                    .map(Some)
                    .ok_or_else(|| D::Error::custom("not a date-time")),
            }
        }
    }
}

// ---- Charge point → central system (core profile) ----

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Authorize {
    pub id_tag: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BootNotification {
    pub charge_point_vendor: String,
    pub charge_point_model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charge_point_serial_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charge_box_serial_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iccid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imsi: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter_serial_number: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataTransfer {
    pub vendor_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeterValues {
    /// 0 is the charge point as a whole.
    pub connector_id: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<i32>,
    /// At least one.
    pub meter_value: Vec<MeterValue>,
}

/// The values sampled at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeterValue {
    #[serde(with = "timestamp")]
    pub timestamp: DateTime<Utc>,
    /// At least one.
    pub sampled_value: Vec<SampledValue>,
}

/// One sampled value. The spec's defaults when a field is absent: context `Sample.Periodic`,
/// format `Raw`, measurand `Energy.Active.Import.Register`, location `Outlet`, unit `Wh` (for
/// energy; [`super::meter`] takes each measurand's own unit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SampledValue {
    /// A decimal number as text, or signed data when `format` says so.
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<ReadingContext>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ValueFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measurand: Option<Measurand>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<UnitOfMeasure>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartTransaction {
    /// 1 or more: a transaction is on a connector.
    pub connector_id: u32,
    pub id_tag: String,
    /// Wh.
    pub meter_start: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation_id: Option<i32>,
    #[serde(with = "timestamp")]
    pub timestamp: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusNotification {
    /// 0 is the charge point as a whole.
    pub connector_id: u32,
    pub error_code: ChargePointErrorCode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<String>,
    pub status: ChargePointStatus,
    #[serde(
        default,
        with = "timestamp::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub timestamp: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor_error_code: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StopTransaction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_tag: Option<String>,
    /// Wh.
    pub meter_stop: i64,
    #[serde(with = "timestamp")]
    pub timestamp: DateTime<Utc>,
    pub transaction_id: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_data: Option<Vec<MeterValue>>,
}

// ---- Central system → charge point: the confirmations of the above ----

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BootNotificationConf {
    pub status: RegistrationStatus,
    #[serde(with = "timestamp")]
    pub current_time: DateTime<Utc>,
    /// Seconds: the heartbeat interval when accepted, the wait before the next boot
    /// notification otherwise.
    pub interval: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatConf {
    #[serde(with = "timestamp")]
    pub current_time: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusNotificationConf {}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeterValuesConf {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdTagInfo {
    #[serde(
        default,
        with = "timestamp::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub expiry_date: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id_tag: Option<String>,
    pub status: AuthorizationStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizeConf {
    pub id_tag_info: IdTagInfo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartTransactionConf {
    pub id_tag_info: IdTagInfo,
    pub transaction_id: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StopTransactionConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_tag_info: Option<IdTagInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataTransferConf {
    pub status: DataTransferStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

// ---- Central system → charge point: operator commands, and the charge point's answers ----

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteStopTransaction {
    pub transaction_id: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reset {
    #[serde(rename = "type")]
    pub kind: ResetType,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnlockConnector {
    /// 1 or more.
    pub connector_id: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeAvailability {
    /// 0 is the charge point as a whole.
    pub connector_id: u32,
    #[serde(rename = "type")]
    pub kind: AvailabilityType,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteStopTransactionConf {
    pub status: RemoteStartStopStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetConf {
    pub status: ResetStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnlockConnectorConf {
    pub status: UnlockStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeAvailabilityConf {
    pub status: AvailabilityStatus,
}

/// A payload of one action: a request, or the confirmation that answers it.
pub trait Message: Serialize {
    const ACTION: &'static str;

    /// The payload as the JSON object of a CALL or CALLRESULT.
    fn to_payload(&self) -> Value {
        // Serialising these derived types cannot fail (string keys, plain data); should it
        // ever, an empty object still keeps the frame well-formed.
        serde_json::to_value(self).unwrap_or_else(|_| Value::Object(Map::new()))
    }
}

macro_rules! messages {
    ($($ty:ty => $action:literal),+ $(,)?) => {
        $(impl Message for $ty {
            const ACTION: &'static str = $action;
        })+
    };
}

messages! {
    Authorize => "Authorize",
    AuthorizeConf => "Authorize",
    BootNotification => "BootNotification",
    BootNotificationConf => "BootNotification",
    DataTransfer => "DataTransfer",
    DataTransferConf => "DataTransfer",
    Heartbeat => "Heartbeat",
    HeartbeatConf => "Heartbeat",
    MeterValues => "MeterValues",
    MeterValuesConf => "MeterValues",
    StartTransaction => "StartTransaction",
    StartTransactionConf => "StartTransaction",
    StatusNotification => "StatusNotification",
    StatusNotificationConf => "StatusNotification",
    StopTransaction => "StopTransaction",
    StopTransactionConf => "StopTransaction",
    RemoteStopTransaction => "RemoteStopTransaction",
    RemoteStopTransactionConf => "RemoteStopTransaction",
    Reset => "Reset",
    ResetConf => "Reset",
    UnlockConnector => "UnlockConnector",
    UnlockConnectorConf => "UnlockConnector",
    ChangeAvailability => "ChangeAvailability",
    ChangeAvailabilityConf => "ChangeAvailability",
}

/// A request of the core profile, as a charge point sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Authorize(Authorize),
    BootNotification(BootNotification),
    DataTransfer(DataTransfer),
    Heartbeat(Heartbeat),
    MeterValues(MeterValues),
    StartTransaction(StartTransaction),
    StatusNotification(StatusNotification),
    StopTransaction(StopTransaction),
}

impl Request {
    pub fn action(&self) -> &'static str {
        match self {
            Request::Authorize(_) => Authorize::ACTION,
            Request::BootNotification(_) => BootNotification::ACTION,
            Request::DataTransfer(_) => DataTransfer::ACTION,
            Request::Heartbeat(_) => Heartbeat::ACTION,
            Request::MeterValues(_) => MeterValues::ACTION,
            Request::StartTransaction(_) => StartTransaction::ACTION,
            Request::StatusNotification(_) => StatusNotification::ACTION,
            Request::StopTransaction(_) => StopTransaction::ACTION,
        }
    }

    pub fn to_payload(&self) -> Value {
        match self {
            Request::Authorize(m) => m.to_payload(),
            Request::BootNotification(m) => m.to_payload(),
            Request::DataTransfer(m) => m.to_payload(),
            Request::Heartbeat(m) => m.to_payload(),
            Request::MeterValues(m) => m.to_payload(),
            Request::StartTransaction(m) => m.to_payload(),
            Request::StatusNotification(m) => m.to_payload(),
            Request::StopTransaction(m) => m.to_payload(),
        }
    }
}

/// A command the central system sends a charge point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    RemoteStopTransaction(RemoteStopTransaction),
    Reset(Reset),
    UnlockConnector(UnlockConnector),
    ChangeAvailability(ChangeAvailability),
}

impl Command {
    pub fn action(&self) -> &'static str {
        match self {
            Command::RemoteStopTransaction(_) => RemoteStopTransaction::ACTION,
            Command::Reset(_) => Reset::ACTION,
            Command::UnlockConnector(_) => UnlockConnector::ACTION,
            Command::ChangeAvailability(_) => ChangeAvailability::ACTION,
        }
    }

    pub fn to_payload(&self) -> Value {
        match self {
            Command::RemoteStopTransaction(m) => m.to_payload(),
            Command::Reset(m) => m.to_payload(),
            Command::UnlockConnector(m) => m.to_payload(),
            Command::ChangeAvailability(m) => m.to_payload(),
        }
    }
}

/// A charge point's confirmation of a [`Command`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandConf {
    RemoteStopTransaction(RemoteStopTransactionConf),
    Reset(ResetConf),
    UnlockConnector(UnlockConnectorConf),
    ChangeAvailability(ChangeAvailabilityConf),
}

/// Every action of OCPP 1.6 and of its security extension that a central system can be sent
/// but the hub does not take: recognised, so `NotSupported` rather than `NotImplemented`.
const NOT_TAKEN: &[&str] = &[
    "CancelReservation",
    "CertificateSigned",
    "ChangeAvailability",
    "ChangeConfiguration",
    "ClearCache",
    "ClearChargingProfile",
    "DeleteCertificate",
    "DiagnosticsStatusNotification",
    "ExtendedTriggerMessage",
    "FirmwareStatusNotification",
    "GetCompositeSchedule",
    "GetConfiguration",
    "GetDiagnostics",
    "GetInstalledCertificateIds",
    "GetLocalListVersion",
    "GetLog",
    "InstallCertificate",
    "LogStatusNotification",
    "RemoteStartTransaction",
    "RemoteStopTransaction",
    "ReserveNow",
    "Reset",
    "SecurityEventNotification",
    "SendLocalList",
    "SetChargingProfile",
    "SignCertificate",
    "SignedFirmwareStatusNotification",
    "SignedUpdateFirmware",
    "TriggerMessage",
    "UnlockConnector",
    "UpdateFirmware",
];

/// Reads the payload of a charge point's CALL of `action`; the error is the CALLERROR to answer
/// (the module documentation says which code for which fault).
pub fn decode_request(action: &str, payload: &Value) -> Result<Request, Refusal> {
    let decode: fn(&Obj) -> Checked<Request> = match action {
        "Authorize" => |p| authorize(p).map(Request::Authorize),
        "BootNotification" => |p| boot_notification(p).map(Request::BootNotification),
        "DataTransfer" => |p| data_transfer(p).map(Request::DataTransfer),
        "Heartbeat" => |_| Ok(Request::Heartbeat(Heartbeat {})),
        "MeterValues" => |p| meter_values(p).map(Request::MeterValues),
        "StartTransaction" => |p| start_transaction(p).map(Request::StartTransaction),
        "StatusNotification" => |p| status_notification(p).map(Request::StatusNotification),
        "StopTransaction" => |p| stop_transaction(p).map(Request::StopTransaction),
        _ => return Err(unknown_action(action)),
    };
    decode(&Obj::root(payload)?)
}

/// Reads a charge point's CALLRESULT to a [`Command`] of `action`. The error is what is wrong,
/// for the log: a CALLRESULT is never answered.
pub fn decode_command_conf(action: &str, payload: &Value) -> Result<CommandConf, Refusal> {
    let decode: fn(&Obj) -> Checked<CommandConf> = match action {
        "RemoteStopTransaction" => |p| {
            Ok(CommandConf::RemoteStopTransaction(
                RemoteStopTransactionConf {
                    status: p.req("status", one_of)?,
                },
            ))
        },
        "Reset" => |p| {
            Ok(CommandConf::Reset(ResetConf {
                status: p.req("status", one_of)?,
            }))
        },
        "UnlockConnector" => |p| {
            Ok(CommandConf::UnlockConnector(UnlockConnectorConf {
                status: p.req("status", one_of)?,
            }))
        },
        "ChangeAvailability" => |p| {
            Ok(CommandConf::ChangeAvailability(ChangeAvailabilityConf {
                status: p.req("status", one_of)?,
            }))
        },
        _ => {
            return Err((
                ErrorCode::NotImplemented,
                format!("{} is no command the hub sends", clip(action)),
            ))
        }
    };
    decode(&Obj::root(payload)?)
}

fn unknown_action(action: &str) -> Refusal {
    if NOT_TAKEN.contains(&action) {
        (
            ErrorCode::NotSupported,
            format!("{action} is not taken from a charge point here"),
        )
    } else {
        (
            ErrorCode::NotImplemented,
            format!("{} is no OCPP 1.6 action", clip(action)),
        )
    }
}

// ---- The field-by-field reader ----

type Checked<T> = Result<T, Refusal>;

/// A JSON object being read, and where it sits in the payload (for messages).
struct Obj<'a> {
    fields: &'a Map<String, Value>,
    at: String,
}

impl<'a> Obj<'a> {
    fn root(payload: &'a Value) -> Checked<Obj<'a>> {
        match payload {
            Value::Object(fields) => Ok(Obj {
                fields,
                at: String::new(),
            }),
            other => Err((
                ErrorCode::FormationViolation,
                format!("the payload is {}, not an object", describe(other)),
            )),
        }
    }

    fn nested(v: &'a Value, at: &str) -> Checked<Obj<'a>> {
        match v {
            Value::Object(fields) => Ok(Obj {
                fields,
                at: at.to_string(),
            }),
            other => Err(wrong_type(at, "an object", other)),
        }
    }

    fn path(&self, name: &str) -> String {
        if self.at.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.at)
        }
    }

    fn opt<T>(
        &self,
        name: &str,
        read: impl FnOnce(&'a Value, &str) -> Checked<T>,
    ) -> Checked<Option<T>> {
        match self.fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => read(v, &self.path(name)).map(Some),
        }
    }

    fn req<T>(&self, name: &str, read: impl FnOnce(&'a Value, &str) -> Checked<T>) -> Checked<T> {
        self.opt(name, read)?.ok_or_else(|| {
            (
                ErrorCode::OccurenceConstraintViolation,
                format!("{} is required", self.path(name)),
            )
        })
    }
}

fn wrong_type(at: &str, expected: &str, got: &Value) -> Refusal {
    (
        ErrorCode::TypeConstraintViolation,
        format!("{at}: expected {expected}, got {}", describe(got)),
    )
}

fn text(max: usize) -> impl Fn(&Value, &str) -> Checked<String> {
    move |v, at| match v {
        Value::String(s) => {
            let n = s.chars().count();
            if n > max {
                Err((
                    ErrorCode::PropertyConstraintViolation,
                    format!("{at}: {n} characters, at most {max}"),
                ))
            } else {
                Ok(s.clone())
            }
        }
        other => Err(wrong_type(at, "a string", other)),
    }
}

fn any_text(v: &Value, at: &str) -> Checked<String> {
    text(usize::MAX)(v, at)
}

/// An integer of at least `min` that fits `T`.
fn integer<T: TryFrom<i64>>(min: i64) -> impl Fn(&Value, &str) -> Checked<T> {
    move |v, at| {
        let Value::Number(n) = v else {
            return Err(wrong_type(at, "an integer", v));
        };
        let whole = match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i128::from(i),
            (None, Some(u)) => i128::from(u),
            // A float cast saturates, so a huge one is out of range below rather than wrapped.
            _ => match n.as_f64().filter(|f| f.fract() == 0.0) {
                Some(f) => f as i128,
                None => return Err(wrong_type(at, "an integer", v)),
            },
        };
        if whole < i128::from(min) {
            return Err((
                ErrorCode::PropertyConstraintViolation,
                format!("{at}: {n} is less than {min}"),
            ));
        }
        i64::try_from(whole)
            .ok()
            .and_then(|i| T::try_from(i).ok())
            .ok_or_else(|| {
                (
                    ErrorCode::PropertyConstraintViolation,
                    format!("{at}: {n} is out of range"),
                )
            })
    }
}

fn time(v: &Value, at: &str) -> Checked<DateTime<Utc>> {
    match v {
        Value::String(s) => parse_timestamp(s).ok_or_else(|| {
            (
                ErrorCode::PropertyConstraintViolation,
                format!("{at}: {} is not a date-time", clip(s)),
            )
        }),
        other => Err(wrong_type(at, "a date-time string", other)),
    }
}

fn one_of<T: FromStr>(v: &Value, at: &str) -> Checked<T> {
    match v {
        Value::String(s) => s.parse().map_err(|_| {
            (
                ErrorCode::PropertyConstraintViolation,
                format!("{at}: {} is not a value OCPP 1.6 allows", clip(s)),
            )
        }),
        other => Err(wrong_type(at, "a string", other)),
    }
}

fn list<T>(
    min_items: usize,
    item: impl Fn(&Value, &str) -> Checked<T>,
) -> impl Fn(&Value, &str) -> Checked<Vec<T>> {
    move |v, at| {
        let Value::Array(items) = v else {
            return Err(wrong_type(at, "an array", v));
        };
        if items.len() < min_items {
            return Err((
                ErrorCode::OccurenceConstraintViolation,
                format!("{at} needs at least {min_items} element(s)"),
            ));
        }
        items
            .iter()
            .enumerate()
            .map(|(i, x)| item(x, &format!("{at}[{i}]")))
            .collect()
    }
}

// ---- The payloads ----

fn authorize(p: &Obj) -> Checked<Authorize> {
    Ok(Authorize {
        id_tag: p.req("idTag", text(20))?,
    })
}

fn boot_notification(p: &Obj) -> Checked<BootNotification> {
    Ok(BootNotification {
        charge_point_vendor: p.req("chargePointVendor", text(20))?,
        charge_point_model: p.req("chargePointModel", text(20))?,
        charge_point_serial_number: p.opt("chargePointSerialNumber", text(25))?,
        charge_box_serial_number: p.opt("chargeBoxSerialNumber", text(25))?,
        firmware_version: p.opt("firmwareVersion", text(50))?,
        iccid: p.opt("iccid", text(20))?,
        imsi: p.opt("imsi", text(20))?,
        meter_type: p.opt("meterType", text(25))?,
        meter_serial_number: p.opt("meterSerialNumber", text(25))?,
    })
}

fn data_transfer(p: &Obj) -> Checked<DataTransfer> {
    Ok(DataTransfer {
        vendor_id: p.req("vendorId", text(255))?,
        message_id: p.opt("messageId", text(50))?,
        data: p.opt("data", any_text)?,
    })
}

fn meter_values(p: &Obj) -> Checked<MeterValues> {
    Ok(MeterValues {
        connector_id: p.req("connectorId", integer(0))?,
        transaction_id: p.opt("transactionId", integer(i64::MIN))?,
        meter_value: p.req("meterValue", list(1, meter_value))?,
    })
}

fn meter_value(v: &Value, at: &str) -> Checked<MeterValue> {
    let o = Obj::nested(v, at)?;
    Ok(MeterValue {
        timestamp: o.req("timestamp", time)?,
        sampled_value: o.req("sampledValue", list(1, sampled_value))?,
    })
}

fn sampled_value(v: &Value, at: &str) -> Checked<SampledValue> {
    let o = Obj::nested(v, at)?;
    Ok(SampledValue {
        value: o.req("value", any_text)?,
        context: o.opt("context", one_of)?,
        format: o.opt("format", one_of)?,
        measurand: o.opt("measurand", one_of)?,
        phase: o.opt("phase", one_of)?,
        location: o.opt("location", one_of)?,
        unit: o.opt("unit", one_of)?,
    })
}

fn start_transaction(p: &Obj) -> Checked<StartTransaction> {
    Ok(StartTransaction {
        connector_id: p.req("connectorId", integer(1))?,
        id_tag: p.req("idTag", text(20))?,
        meter_start: p.req("meterStart", integer(i64::MIN))?,
        reservation_id: p.opt("reservationId", integer(i64::MIN))?,
        timestamp: p.req("timestamp", time)?,
    })
}

fn status_notification(p: &Obj) -> Checked<StatusNotification> {
    Ok(StatusNotification {
        connector_id: p.req("connectorId", integer(0))?,
        error_code: p.req("errorCode", one_of)?,
        info: p.opt("info", text(50))?,
        status: p.req("status", one_of)?,
        timestamp: p.opt("timestamp", time)?,
        vendor_id: p.opt("vendorId", text(255))?,
        vendor_error_code: p.opt("vendorErrorCode", text(50))?,
    })
}

fn stop_transaction(p: &Obj) -> Checked<StopTransaction> {
    Ok(StopTransaction {
        id_tag: p.opt("idTag", text(20))?,
        meter_stop: p.req("meterStop", integer(i64::MIN))?,
        timestamp: p.req("timestamp", time)?,
        transaction_id: p.req("transactionId", integer(i64::MIN))?,
        reason: p.opt("reason", one_of)?,
        transaction_data: p.opt("transactionData", list(0, meter_value))?,
    })
}

/// A value for a message: numbers as they are, anything else by its kind.
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("the text {}", clip(s)),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ocpp::frame::Frame;
    use chrono::TimeZone;
    use proptest::prelude::*;
    use serde_json::json;

    fn at(s: &str) -> DateTime<Utc> {
        parse_timestamp(s).unwrap()
    }

    /// The request of a whole frame, as the WebSocket side will read it.
    fn request_of(text: &str) -> Result<Request, Refusal> {
        let Frame::Call {
            action, payload, ..
        } = Frame::parse(text).unwrap()
        else {
            panic!("{text} is no CALL")
        };
        decode_request(&action, &payload)
    }

    fn refusal(action: &str, payload: Value) -> (ErrorCode, String) {
        match decode_request(action, &payload) {
            Err(r) => r,
            Ok(r) => panic!("{action} {payload} was taken: {r:?}"),
        }
    }

    #[test]
    fn a_boot_notification_of_a_real_charger_is_read_with_its_optional_fields() {
        let r = request_of(
            r#"[2,"dabbadd0-3b86-48a0-9c11-8de787bab0ac","BootNotification",{"chargePointVendor":"SimpleCharge","chargePointModel":"MultiSocketCharger","chargePointSerialNumber":"24250139","firmwareVersion":"1.24.0819.WL","iccid":"","imsi":""}]"#,
        );
        assert_eq!(
            r,
            Ok(Request::BootNotification(BootNotification {
                charge_point_vendor: "SimpleCharge".into(),
                charge_point_model: "MultiSocketCharger".into(),
                charge_point_serial_number: Some("24250139".into()),
                charge_box_serial_number: None,
                firmware_version: Some("1.24.0819.WL".into()),
                iccid: Some(String::new()),
                imsi: Some(String::new()),
                meter_type: None,
                meter_serial_number: None,
            }))
        );
    }

    #[test]
    fn status_notifications_carry_the_connector_state_and_fault() {
        assert_eq!(
            request_of(
                r#"[2,"4","StatusNotification",{"connectorId":1,"errorCode":"NoError","status":"Charging","timestamp":"2024-09-05T21:41:59.333Z"}]"#
            ),
            Ok(Request::StatusNotification(StatusNotification {
                connector_id: 1,
                error_code: ChargePointErrorCode::NoError,
                info: None,
                status: ChargePointStatus::Charging,
                timestamp: Some(
                    Utc.with_ymd_and_hms(2024, 9, 5, 21, 41, 59).unwrap()
                        + chrono::Duration::milliseconds(333)
                ),
                vendor_id: None,
                vendor_error_code: None,
            }))
        );
        let Ok(Request::StatusNotification(s)) = request_of(
            r#"[2,"5","StatusNotification",{"connectorId":2,"errorCode":"EVCommunicationError","info":"CP state E","status":"SuspendedEVSE","vendorId":"com.example","vendorErrorCode":"E-0042"}]"#,
        ) else {
            panic!()
        };
        assert_eq!(s.error_code, ChargePointErrorCode::EvCommunicationError);
        assert_eq!(s.status, ChargePointStatus::SuspendedEvse);
        assert_eq!(s.status.as_str(), "SuspendedEVSE");
        assert_eq!(s.info.as_deref(), Some("CP state E"));
        assert_eq!(s.vendor_error_code.as_deref(), Some("E-0042"));
        assert_eq!(s.timestamp, None);
    }

    #[test]
    fn transactions_start_and_stop_with_their_meter_readings() {
        assert_eq!(
            request_of(
                r#"[2,"213","StartTransaction",{"connectorId":2,"idTag":"336699","meterStart":33259490,"timestamp":"2022-07-28T09:41:15Z"}]"#
            ),
            Ok(Request::StartTransaction(StartTransaction {
                connector_id: 2,
                id_tag: "336699".into(),
                meter_start: 33_259_490,
                reservation_id: None,
                timestamp: Utc.with_ymd_and_hms(2022, 7, 28, 9, 41, 15).unwrap(),
            }))
        );
        let Ok(Request::StopTransaction(stop)) = request_of(
            r#"[2,"214","StopTransaction",{"idTag":"336699","meterStop":33270112,"timestamp":"2022-07-28T11:02:40Z","transactionId":1659001275,"reason":"EVDisconnected","transactionData":[{"timestamp":"2022-07-28T11:02:40Z","sampledValue":[{"value":"33270112","context":"Transaction.End","measurand":"Energy.Active.Import.Register","unit":"Wh"}]}]}]"#,
        ) else {
            panic!()
        };
        assert_eq!(stop.meter_stop, 33_270_112);
        assert_eq!(stop.transaction_id, 1_659_001_275);
        assert_eq!(stop.reason, Some(Reason::EvDisconnected));
        let data = stop.transaction_data.unwrap();
        assert_eq!(
            data[0].sampled_value[0].context,
            Some(ReadingContext::TransactionEnd)
        );
    }

    #[test]
    fn meter_values_of_a_real_charger_are_read_whole() {
        let Ok(Request::MeterValues(m)) = request_of(
            r#"[2,"121416101","MeterValues",{"connectorId":1,"transactionId":1725564597,"meterValue":[{"timestamp":"2024-09-05T21:41:59.333Z","sampledValue":[{"measurand":"Energy.Active.Import.Register","unit":"Wh","value":"254780"},{"measurand":"Power.Active.Import","unit":"kW","value":"3.5"},{"measurand":"Temperature","unit":"Celsius","value":"35"},{"measurand":"Voltage","phase":"L1-N","unit":"V","value":"231.1"},{"measurand":"Current.Import","phase":"N","unit":"A","value":"15.6"}]}]}]"#,
        ) else {
            panic!()
        };
        assert_eq!((m.connector_id, m.transaction_id), (1, Some(1_725_564_597)));
        let sv = &m.meter_value[0].sampled_value;
        assert_eq!(sv.len(), 5);
        assert_eq!(
            sv[1],
            SampledValue {
                value: "3.5".into(),
                context: None,
                format: None,
                measurand: Some(Measurand::PowerActiveImport),
                phase: None,
                location: None,
                unit: Some(UnitOfMeasure::KW),
            }
        );
        assert_eq!(sv[3].phase, Some(Phase::L1N));
        assert_eq!(sv[4].phase, Some(Phase::N));
    }

    #[test]
    fn authorize_heartbeat_and_data_transfer_are_read() {
        assert_eq!(
            request_of(r#"[2,"a","Authorize",{"idTag":"04A2B3C4D5E6F7"}]"#),
            Ok(Request::Authorize(Authorize {
                id_tag: "04A2B3C4D5E6F7".into()
            }))
        );
        assert_eq!(
            request_of(r#"[2,"h","Heartbeat",{}]"#),
            Ok(Request::Heartbeat(Heartbeat {}))
        );
        assert_eq!(
            request_of(
                r#"[2,"d","DataTransfer",{"vendorId":"com.example.charger","messageId":"GetTariff","data":"{\"connector\":1}"}]"#
            ),
            Ok(Request::DataTransfer(DataTransfer {
                vendor_id: "com.example.charger".into(),
                message_id: Some("GetTariff".into()),
                data: Some(r#"{"connector":1}"#.into()),
            }))
        );
    }

    #[test]
    fn an_unknown_action_is_not_implemented_and_a_known_one_the_hub_does_not_take_is_not_supported()
    {
        assert_eq!(refusal("Foo", json!({})).0, ErrorCode::NotImplemented);
        // Case matters: OCPP actions are case-sensitive.
        assert_eq!(refusal("heartbeat", json!({})).0, ErrorCode::NotImplemented);
        for action in [
            "FirmwareStatusNotification",
            "DiagnosticsStatusNotification",
            "Reset",
        ] {
            let (code, text) = refusal(action, json!({}));
            assert_eq!(code, ErrorCode::NotSupported, "{action}");
            assert!(text.contains(action), "{text}");
        }
        // The action is judged before the payload.
        assert_eq!(refusal("Foo", json!([])).0, ErrorCode::NotImplemented);
    }

    #[test]
    fn a_payload_that_is_not_an_object_is_a_formation_violation() {
        for payload in [json!([]), json!("x"), json!(null), json!(7)] {
            for action in ["Heartbeat", "BootNotification", "MeterValues"] {
                assert_eq!(
                    refusal(action, payload.clone()).0,
                    ErrorCode::FormationViolation,
                    "{action} {payload}"
                );
            }
        }
    }

    #[test]
    fn a_missing_required_field_or_an_empty_required_list_is_an_occurence_violation() {
        let boot = json!({"chargePointVendor": "VendorX"});
        assert_eq!(
            refusal("BootNotification", boot),
            (
                ErrorCode::OccurenceConstraintViolation,
                "chargePointModel is required".into()
            )
        );
        assert_eq!(
            refusal(
                "BootNotification",
                json!({"chargePointVendor": "VendorX", "chargePointModel": null})
            )
            .0,
            ErrorCode::OccurenceConstraintViolation
        );
        assert_eq!(
            refusal(
                "StatusNotification",
                json!({"connectorId": 1, "errorCode": "NoError"})
            )
            .0,
            ErrorCode::OccurenceConstraintViolation
        );
        assert_eq!(
            refusal("MeterValues", json!({"connectorId": 1, "meterValue": []})),
            (
                ErrorCode::OccurenceConstraintViolation,
                "meterValue needs at least 1 element(s)".into()
            )
        );
        let (code, text) = refusal(
            "MeterValues",
            json!({"connectorId": 1, "meterValue": [{"timestamp": "2024-01-01T00:00:00Z", "sampledValue": [{"unit": "Wh"}]}]}),
        );
        assert_eq!(code, ErrorCode::OccurenceConstraintViolation);
        assert_eq!(text, "meterValue[0].sampledValue[0].value is required");
        assert_eq!(
            refusal(
                "StopTransaction",
                json!({"meterStop": 1, "timestamp": "2024-01-01T00:00:00Z"})
            )
            .0,
            ErrorCode::OccurenceConstraintViolation
        );
    }

    #[test]
    fn a_field_of_the_wrong_json_type_is_a_type_violation() {
        let t = "2024-01-01T00:00:00Z";
        for (action, payload, path) in [
            ("Authorize", json!({"idTag": 5}), "idTag"),
            (
                "StatusNotification",
                json!({"connectorId": "1", "errorCode": "NoError", "status": "Available"}),
                "connectorId",
            ),
            (
                "StatusNotification",
                json!({"connectorId": 1.5, "errorCode": "NoError", "status": "Available"}),
                "connectorId",
            ),
            (
                "StatusNotification",
                json!({"connectorId": 1, "errorCode": true, "status": "Available"}),
                "errorCode",
            ),
            (
                "StartTransaction",
                json!({"connectorId": 1, "idTag": "A", "meterStart": "0", "timestamp": t}),
                "meterStart",
            ),
            (
                "StartTransaction",
                json!({"connectorId": 1, "idTag": "A", "meterStart": 0, "timestamp": 1700000000}),
                "timestamp",
            ),
            (
                "MeterValues",
                json!({"connectorId": 1, "meterValue": {}}),
                "meterValue",
            ),
            (
                "MeterValues",
                json!({"connectorId": 1, "meterValue": ["x"]}),
                "meterValue[0]",
            ),
            (
                "MeterValues",
                json!({"connectorId": 1, "meterValue": [{"timestamp": t, "sampledValue": [{"value": 12.3}]}]}),
                "meterValue[0].sampledValue[0].value",
            ),
            (
                "StopTransaction",
                json!({"meterStop": 1, "timestamp": t, "transactionId": 1, "transactionData": {}}),
                "transactionData",
            ),
            (
                "DataTransfer",
                json!({"vendorId": "v", "data": {"a": 1}}),
                "data",
            ),
        ] {
            let (code, text) = refusal(action, payload.clone());
            assert_eq!(
                code,
                ErrorCode::TypeConstraintViolation,
                "{action} {payload}: {text}"
            );
            assert!(text.starts_with(&format!("{path}: expected")), "{text}");
        }
    }

    #[test]
    fn text_over_its_schema_length_is_a_property_violation() {
        let s = |n: usize| "x".repeat(n);
        let t = "2024-01-01T00:00:00Z";
        for (action, field, max, base) in [
            (
                "BootNotification",
                "chargePointVendor",
                20,
                json!({"chargePointVendor": "V", "chargePointModel": "M"}),
            ),
            (
                "BootNotification",
                "chargePointModel",
                20,
                json!({"chargePointVendor": "V", "chargePointModel": "M"}),
            ),
            (
                "BootNotification",
                "chargePointSerialNumber",
                25,
                json!({"chargePointVendor": "V", "chargePointModel": "M"}),
            ),
            (
                "BootNotification",
                "firmwareVersion",
                50,
                json!({"chargePointVendor": "V", "chargePointModel": "M"}),
            ),
            (
                "BootNotification",
                "iccid",
                20,
                json!({"chargePointVendor": "V", "chargePointModel": "M"}),
            ),
            ("Authorize", "idTag", 20, json!({"idTag": "A"})),
            (
                "StartTransaction",
                "idTag",
                20,
                json!({"connectorId": 1, "idTag": "A", "meterStart": 0, "timestamp": t}),
            ),
            (
                "StatusNotification",
                "info",
                50,
                json!({"connectorId": 1, "errorCode": "NoError", "status": "Available"}),
            ),
            (
                "StatusNotification",
                "vendorErrorCode",
                50,
                json!({"connectorId": 1, "errorCode": "NoError", "status": "Available"}),
            ),
            (
                "StatusNotification",
                "vendorId",
                255,
                json!({"connectorId": 1, "errorCode": "NoError", "status": "Available"}),
            ),
            ("DataTransfer", "vendorId", 255, json!({"vendorId": "v"})),
            ("DataTransfer", "messageId", 50, json!({"vendorId": "v"})),
        ] {
            let mut at_limit = base.clone();
            at_limit[field] = json!(s(max));
            assert!(
                decode_request(action, &at_limit).is_ok(),
                "{action}.{field} of {max}"
            );
            let mut over = base;
            over[field] = json!(s(max + 1));
            assert_eq!(
                refusal(action, over),
                (
                    ErrorCode::PropertyConstraintViolation,
                    format!("{field}: {} characters, at most {max}", max + 1)
                )
            );
        }
        // Characters, not bytes: twenty Chinese characters are twenty.
        assert!(decode_request("Authorize", &json!({"idTag": "充".repeat(20)})).is_ok());
    }

    #[test]
    fn values_outside_an_enumeration_or_a_range_are_property_violations() {
        let t = "2024-01-01T00:00:00Z";
        for (action, payload, path) in [
            (
                "StatusNotification",
                json!({"connectorId": 1, "errorCode": "NoError", "status": "Foo"}),
                "status",
            ),
            (
                "StatusNotification",
                json!({"connectorId": 1, "errorCode": "Broken", "status": "Available"}),
                "errorCode",
            ),
            // Case matters in enumerations too.
            (
                "StatusNotification",
                json!({"connectorId": 1, "errorCode": "NoError", "status": "available"}),
                "status",
            ),
            (
                "StatusNotification",
                json!({"connectorId": -1, "errorCode": "NoError", "status": "Available"}),
                "connectorId",
            ),
            (
                "StatusNotification",
                json!({"connectorId": 1u64 << 40, "errorCode": "NoError", "status": "Available"}),
                "connectorId",
            ),
            (
                "StartTransaction",
                json!({"connectorId": 0, "idTag": "A", "meterStart": 0, "timestamp": t}),
                "connectorId",
            ),
            (
                "StartTransaction",
                json!({"connectorId": 1, "idTag": "A", "meterStart": 0, "timestamp": "yesterday"}),
                "timestamp",
            ),
            (
                "StopTransaction",
                json!({"meterStop": 1, "timestamp": t, "transactionId": 1u64 << 40}),
                "transactionId",
            ),
            (
                "StopTransaction",
                json!({"meterStop": 1, "timestamp": t, "transactionId": 1, "reason": "Bored"}),
                "reason",
            ),
            (
                "MeterValues",
                json!({"connectorId": 1, "meterValue": [{"timestamp": t, "sampledValue": [{"value": "1", "unit": "kelvin"}]}]}),
                "meterValue[0].sampledValue[0].unit",
            ),
            (
                "MeterValues",
                json!({"connectorId": 1, "meterValue": [{"timestamp": t, "sampledValue": [{"value": "1", "measurand": "Energy"}]}]}),
                "meterValue[0].sampledValue[0].measurand",
            ),
        ] {
            let (code, text) = refusal(action, payload.clone());
            assert_eq!(
                code,
                ErrorCode::PropertyConstraintViolation,
                "{action} {payload}: {text}"
            );
            assert!(text.starts_with(&format!("{path}: ")), "{text}");
        }
    }

    #[test]
    fn chargers_are_forgiven_unknown_fields_null_options_and_whole_floats() {
        let r = decode_request(
            "StatusNotification",
            &json!({"connectorId": 1.0, "errorCode": "NoError", "status": "Available", "info": null, "vendorSpecific": {"x": 1}}),
        );
        let Ok(Request::StatusNotification(s)) = r else {
            panic!("{r:?}")
        };
        assert_eq!((s.connector_id, s.info), (1, None));
        assert!(decode_request("Heartbeat", &json!({"uptime": 5})).is_ok());
    }

    #[test]
    fn timestamps_are_read_with_or_without_zone_and_fraction() {
        let whole = Utc.with_ymd_and_hms(2022, 7, 28, 9, 41, 15).unwrap();
        for s in [
            "2022-07-28T09:41:15Z",
            "2022-07-28T09:41:15.000Z",
            "2022-07-28T17:41:15+08:00",
            "2022-07-28T17:41:15+0800",
            "2022-07-28T09:41:15",
            "2022-07-28T09:41:15.000",
            " 2022-07-28T09:41:15Z ",
            "2022-07-28t09:41:15z",
        ] {
            assert_eq!(parse_timestamp(s), Some(whole), "{s}");
        }
        assert_eq!(
            parse_timestamp("2022-07-28T09:41:15.123456Z"),
            Some(whole + chrono::Duration::microseconds(123_456))
        );
        assert_eq!(
            parse_timestamp("2022-07-28T09:41:15.5"),
            Some(whole + chrono::Duration::milliseconds(500))
        );
        for s in [
            "",
            "yesterday",
            "2022-07-28",
            "09:41:15",
            "2022-13-01T00:00:00Z",
            "1659001275",
        ] {
            assert_eq!(parse_timestamp(s), None, "{s}");
        }
        assert_eq!(format_timestamp(whole), "2022-07-28T09:41:15.000Z");
    }

    #[test]
    fn confirmations_are_written_as_the_schemas_name_them() {
        let now = at("2013-02-01T20:53:32.486Z");
        assert_eq!(
            BootNotificationConf {
                status: RegistrationStatus::Accepted,
                current_time: now,
                interval: 300
            }
            .to_payload(),
            json!({"status": "Accepted", "currentTime": "2013-02-01T20:53:32.486Z", "interval": 300})
        );
        assert_eq!(
            HeartbeatConf { current_time: now }.to_payload(),
            json!({"currentTime": "2013-02-01T20:53:32.486Z"})
        );
        assert_eq!(StatusNotificationConf {}.to_payload(), json!({}));
        assert_eq!(MeterValuesConf {}.to_payload(), json!({}));
        let accepted = IdTagInfo {
            expiry_date: None,
            parent_id_tag: None,
            status: AuthorizationStatus::Accepted,
        };
        assert_eq!(
            AuthorizeConf {
                id_tag_info: accepted.clone()
            }
            .to_payload(),
            json!({"idTagInfo": {"status": "Accepted"}})
        );
        assert_eq!(
            StartTransactionConf {
                id_tag_info: IdTagInfo {
                    expiry_date: Some(now),
                    parent_id_tag: Some("PARENT".into()),
                    status: AuthorizationStatus::ConcurrentTx,
                },
                transaction_id: 42
            }
            .to_payload(),
            json!({"idTagInfo": {"expiryDate": "2013-02-01T20:53:32.486Z", "parentIdTag": "PARENT", "status": "ConcurrentTx"}, "transactionId": 42})
        );
        assert_eq!(
            StopTransactionConf { id_tag_info: None }.to_payload(),
            json!({})
        );
        assert_eq!(
            DataTransferConf {
                status: DataTransferStatus::UnknownVendorId,
                data: None
            }
            .to_payload(),
            json!({"status": "UnknownVendorId"})
        );
        assert_eq!(BootNotificationConf::ACTION, "BootNotification");
    }

    #[test]
    fn operator_commands_are_written_as_the_schemas_name_them_and_their_answers_read() {
        for (command, action, payload) in [
            (
                Command::RemoteStopTransaction(RemoteStopTransaction { transaction_id: 42 }),
                "RemoteStopTransaction",
                json!({"transactionId": 42}),
            ),
            (
                Command::Reset(Reset {
                    kind: ResetType::Soft,
                }),
                "Reset",
                json!({"type": "Soft"}),
            ),
            (
                Command::UnlockConnector(UnlockConnector { connector_id: 2 }),
                "UnlockConnector",
                json!({"connectorId": 2}),
            ),
            (
                Command::ChangeAvailability(ChangeAvailability {
                    connector_id: 0,
                    kind: AvailabilityType::Inoperative,
                }),
                "ChangeAvailability",
                json!({"connectorId": 0, "type": "Inoperative"}),
            ),
        ] {
            assert_eq!(command.action(), action);
            assert_eq!(command.to_payload(), payload);
        }
        assert_eq!(
            decode_command_conf("UnlockConnector", &json!({"status": "UnlockFailed"})),
            Ok(CommandConf::UnlockConnector(UnlockConnectorConf {
                status: UnlockStatus::UnlockFailed
            }))
        );
        assert_eq!(
            decode_command_conf("ChangeAvailability", &json!({"status": "Scheduled"})),
            Ok(CommandConf::ChangeAvailability(ChangeAvailabilityConf {
                status: AvailabilityStatus::Scheduled
            }))
        );
        assert_eq!(
            decode_command_conf("Reset", &json!({"status": "Accepted"})),
            Ok(CommandConf::Reset(ResetConf {
                status: ResetStatus::Accepted
            }))
        );
        assert_eq!(
            decode_command_conf("RemoteStopTransaction", &json!({"status": "Rejected"})),
            Ok(CommandConf::RemoteStopTransaction(
                RemoteStopTransactionConf {
                    status: RemoteStartStopStatus::Rejected
                }
            ))
        );
        assert_eq!(
            decode_command_conf("Reset", &json!({"status": "Maybe"}))
                .unwrap_err()
                .0,
            ErrorCode::PropertyConstraintViolation
        );
        assert_eq!(
            decode_command_conf("Reset", &json!({})).unwrap_err().0,
            ErrorCode::OccurenceConstraintViolation
        );
        assert_eq!(
            decode_command_conf("Heartbeat", &json!({})).unwrap_err().0,
            ErrorCode::NotImplemented
        );
    }

    #[test]
    fn every_enumeration_is_spelled_alike_by_serde_display_and_from_str() {
        fn check<T>(all: &[T])
        where
            T: Copy + PartialEq + fmt::Debug + fmt::Display + FromStr + Serialize,
            T: for<'de> Deserialize<'de>,
        {
            for &v in all {
                let text = v.to_string();
                assert_eq!(serde_json::to_value(v).unwrap(), json!(text));
                assert_eq!(serde_json::from_value::<T>(json!(text)).unwrap(), v);
                assert!(text.parse::<T>().ok() == Some(v), "{text}");
            }
        }
        check(ChargePointStatus::ALL);
        check(ChargePointErrorCode::ALL);
        check(RegistrationStatus::ALL);
        check(AuthorizationStatus::ALL);
        check(DataTransferStatus::ALL);
        check(Reason::ALL);
        check(ReadingContext::ALL);
        check(ValueFormat::ALL);
        check(Measurand::ALL);
        check(Phase::ALL);
        check(Location::ALL);
        check(UnitOfMeasure::ALL);
        check(RemoteStartStopStatus::ALL);
        check(ResetType::ALL);
        check(ResetStatus::ALL);
        check(UnlockStatus::ALL);
        check(AvailabilityType::ALL);
        check(AvailabilityStatus::ALL);
        assert_eq!(ChargePointStatus::ALL.len(), 9);
        assert_eq!(ChargePointErrorCode::ALL.len(), 16);
        assert_eq!(Measurand::ALL.len(), 22);
        let spelled: Vec<&str> = ChargePointErrorCode::ALL
            .iter()
            .map(|c| c.as_str())
            .collect();
        assert!(spelled.contains(&"EVCommunicationError"));
        assert_eq!(Measurand::Soc.as_str(), "SoC");
    }

    // ---- Properties ----

    const ACTIONS: [&str; 8] = [
        "Authorize",
        "BootNotification",
        "DataTransfer",
        "Heartbeat",
        "MeterValues",
        "StartTransaction",
        "StatusNotification",
        "StopTransaction",
    ];

    /// Every field name of the core requests, so that arbitrary payloads reach the checks.
    const FIELDS: [&str; 30] = [
        "idTag",
        "chargePointVendor",
        "chargePointModel",
        "chargePointSerialNumber",
        "chargeBoxSerialNumber",
        "firmwareVersion",
        "iccid",
        "imsi",
        "meterType",
        "meterSerialNumber",
        "vendorId",
        "messageId",
        "data",
        "connectorId",
        "transactionId",
        "meterValue",
        "timestamp",
        "sampledValue",
        "value",
        "context",
        "format",
        "measurand",
        "phase",
        "location",
        "unit",
        "meterStart",
        "reservationId",
        "errorCode",
        "status",
        "transactionData",
    ];

    fn chars(max: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(any::<char>(), 0..=max).prop_map(String::from_iter)
    }

    fn time_ms() -> impl Strategy<Value = DateTime<Utc>> {
        (0i64..4_102_444_800_000).prop_map(|ms| DateTime::from_timestamp_millis(ms).unwrap())
    }

    fn pick<T: Copy + fmt::Debug + 'static>(all: &'static [T]) -> impl Strategy<Value = T> {
        proptest::sample::select(all)
    }

    fn sampled() -> impl Strategy<Value = SampledValue> {
        (
            prop_oneof![chars(12), (-1e9f64..1e9).prop_map(|x| x.to_string())],
            proptest::option::of(pick(ReadingContext::ALL)),
            proptest::option::of(pick(ValueFormat::ALL)),
            proptest::option::of(pick(Measurand::ALL)),
            proptest::option::of(pick(Phase::ALL)),
            proptest::option::of(pick(Location::ALL)),
            proptest::option::of(pick(UnitOfMeasure::ALL)),
        )
            .prop_map(
                |(value, context, format, measurand, phase, location, unit)| SampledValue {
                    value,
                    context,
                    format,
                    measurand,
                    phase,
                    location,
                    unit,
                },
            )
    }

    fn meter_value() -> impl Strategy<Value = MeterValue> {
        (time_ms(), proptest::collection::vec(sampled(), 1..5)).prop_map(
            |(timestamp, sampled_value)| MeterValue {
                timestamp,
                sampled_value,
            },
        )
    }

    fn connector(min: u32) -> impl Strategy<Value = u32> {
        prop_oneof![min..4u32, min..=u32::MAX]
    }

    pub(crate) fn any_request() -> impl Strategy<Value = Request> {
        use proptest::option::of as opt;
        prop_oneof![
            chars(20).prop_map(|id_tag| Request::Authorize(Authorize { id_tag })),
            (
                chars(20),
                chars(20),
                opt(chars(25)),
                opt(chars(25)),
                opt(chars(50)),
                opt(chars(20)),
                opt(chars(20)),
                opt(chars(25)),
                opt(chars(25)),
            )
                .prop_map(|(v, m, cps, cbs, fw, iccid, imsi, mt, msn)| {
                    Request::BootNotification(BootNotification {
                        charge_point_vendor: v,
                        charge_point_model: m,
                        charge_point_serial_number: cps,
                        charge_box_serial_number: cbs,
                        firmware_version: fw,
                        iccid,
                        imsi,
                        meter_type: mt,
                        meter_serial_number: msn,
                    })
                }),
            (chars(255), opt(chars(50)), opt(chars(40))).prop_map(
                |(vendor_id, message_id, data)| {
                    Request::DataTransfer(DataTransfer {
                        vendor_id,
                        message_id,
                        data,
                    })
                }
            ),
            Just(Request::Heartbeat(Heartbeat {})),
            (
                connector(0),
                opt(any::<i32>()),
                proptest::collection::vec(meter_value(), 1..4)
            )
                .prop_map(|(connector_id, transaction_id, meter_value)| {
                    Request::MeterValues(MeterValues {
                        connector_id,
                        transaction_id,
                        meter_value,
                    })
                }),
            (
                connector(1),
                chars(20),
                any::<i64>(),
                opt(any::<i32>()),
                time_ms()
            )
                .prop_map(
                    |(connector_id, id_tag, meter_start, reservation_id, timestamp)| {
                        Request::StartTransaction(StartTransaction {
                            connector_id,
                            id_tag,
                            meter_start,
                            reservation_id,
                            timestamp,
                        })
                    }
                ),
            (
                connector(0),
                pick(ChargePointErrorCode::ALL),
                opt(chars(50)),
                pick(ChargePointStatus::ALL),
                opt(time_ms()),
                opt(chars(255)),
                opt(chars(50)),
            )
                .prop_map(
                    |(
                        connector_id,
                        error_code,
                        info,
                        status,
                        timestamp,
                        vendor_id,
                        vendor_error_code,
                    )| {
                        Request::StatusNotification(StatusNotification {
                            connector_id,
                            error_code,
                            info,
                            status,
                            timestamp,
                            vendor_id,
                            vendor_error_code,
                        })
                    }
                ),
            (
                opt(chars(20)),
                any::<i64>(),
                time_ms(),
                any::<i32>(),
                opt(pick(Reason::ALL)),
                opt(proptest::collection::vec(meter_value(), 0..3)),
            )
                .prop_map(
                    |(id_tag, meter_stop, timestamp, transaction_id, reason, transaction_data)| {
                        Request::StopTransaction(StopTransaction {
                            id_tag,
                            meter_stop,
                            timestamp,
                            transaction_id,
                            reason,
                            transaction_data,
                        })
                    }
                ),
        ]
    }

    /// The same request read by serde's derived `Deserialize`, for comparison.
    fn by_serde(action: &str, payload: Value) -> Option<Request> {
        Some(match action {
            "Authorize" => Request::Authorize(serde_json::from_value(payload).ok()?),
            "BootNotification" => Request::BootNotification(serde_json::from_value(payload).ok()?),
            "DataTransfer" => Request::DataTransfer(serde_json::from_value(payload).ok()?),
            "Heartbeat" => Request::Heartbeat(serde_json::from_value(payload).ok()?),
            "MeterValues" => Request::MeterValues(serde_json::from_value(payload).ok()?),
            "StartTransaction" => Request::StartTransaction(serde_json::from_value(payload).ok()?),
            "StatusNotification" => {
                Request::StatusNotification(serde_json::from_value(payload).ok()?)
            }
            "StopTransaction" => Request::StopTransaction(serde_json::from_value(payload).ok()?),
            _ => return None,
        })
    }

    fn payload_like() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            crate::ocpp::frame::tests::any_json(),
            Just(json!("2024-01-01T00:00:00Z")),
            Just(json!("Available")),
            Just(json!("NoError")),
            Just(json!("12.5")),
            Just(json!(1)),
        ];
        leaf.prop_recursive(4, 48, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![pick(&FIELDS).prop_map(String::from), ".{0,6}"],
                    inner,
                    0..8
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn any_command_conf() -> impl Strategy<Value = (CommandConf, Value)> {
        prop_oneof![
            pick(RemoteStartStopStatus::ALL).prop_map(|status| {
                let c = RemoteStopTransactionConf { status };
                let p = c.to_payload();
                (CommandConf::RemoteStopTransaction(c), p)
            }),
            pick(ResetStatus::ALL).prop_map(|status| {
                let c = ResetConf { status };
                let p = c.to_payload();
                (CommandConf::Reset(c), p)
            }),
            pick(UnlockStatus::ALL).prop_map(|status| {
                let c = UnlockConnectorConf { status };
                let p = c.to_payload();
                (CommandConf::UnlockConnector(c), p)
            }),
            pick(AvailabilityStatus::ALL).prop_map(|status| {
                let c = ChangeAvailabilityConf { status };
                let p = c.to_payload();
                (CommandConf::ChangeAvailability(c), p)
            }),
        ]
    }

    fn action_of(c: &CommandConf) -> &'static str {
        match c {
            CommandConf::RemoteStopTransaction(_) => RemoteStopTransaction::ACTION,
            CommandConf::Reset(_) => Reset::ACTION,
            CommandConf::UnlockConnector(_) => UnlockConnector::ACTION,
            CommandConf::ChangeAvailability(_) => ChangeAvailability::ACTION,
        }
    }

    proptest! {
        #[test]
        fn every_command_confirmation_reads_back_as_itself((conf, payload) in any_command_conf()) {
            prop_assert_eq!(decode_command_conf(action_of(&conf), &payload), Ok(conf));
        }

        #[test]
        fn no_payload_makes_a_command_confirmation_panic(
            payload in payload_like(),
            action in pick(&["RemoteStopTransaction", "Reset", "UnlockConnector", "ChangeAvailability"]),
        ) {
            if let Ok(conf) = decode_command_conf(action, &payload) {
                prop_assert_eq!(action_of(&conf), action);
            }
        }

        #[test]
        fn every_request_reads_back_as_itself(request in any_request()) {
            let payload = request.to_payload();
            prop_assert_eq!(decode_request(request.action(), &payload), Ok(request.clone()));
            prop_assert_eq!(by_serde(request.action(), payload), Some(request));
        }

        #[test]
        fn no_payload_makes_any_action_panic(payload in payload_like(), action in pick(&ACTIONS)) {
            match decode_request(action, &payload) {
                Ok(r) => prop_assert_eq!(r.action(), action),
                Err((code, text)) => {
                    prop_assert!(!matches!(code, ErrorCode::NotImplemented | ErrorCode::NotSupported));
                    prop_assert!(!text.is_empty());
                }
            }
        }

        #[test]
        fn a_request_with_one_field_spoiled_is_refused_or_read_but_never_panics(
            request in any_request(),
            field in pick(&FIELDS),
            junk in payload_like(),
        ) {
            let mut payload = request.to_payload();
            payload[field] = junk.clone();
            let _ = decode_request(request.action(), &payload);
            if let Some(sv) = payload.pointer_mut("/meterValue/0/sampledValue/0") {
                sv[field] = junk;
                let _ = decode_request(request.action(), &payload);
            }
        }
    }
}
