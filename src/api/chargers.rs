//! The charging area: EV chargers (OCPP) and e-bike stations with their ports' live state,
//! the charging log, and operators' commands to EV chargers with the charger's own answer.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::view::rfc3339;
use super::{ApiError, Ctx, JsonBody, Operator, Viewer};
use crate::config::Location;
use crate::hub::DeviceState;
use crate::ocpp::central::{ChargerView, CommandError};
use crate::ocpp::charger::Running;
use crate::ocpp::messages::{
    AvailabilityType, ChangeAvailability, Command, CommandConf, Message as _,
    RemoteStopTransaction, Reset, ResetType, UnlockConnector,
};
use crate::ocpp::sessions::{Session, MAX_LIST};

/// One port of a charger: a connector of an EV charger, a socket of an e-bike station.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
#[schema(as = Port)]
pub struct PortView {
    pub port: u32,
    /// OCPP's status (`Available`, `Charging`, `Faulted`, …) or the station's state (`idle`,
    /// `charging`, `full`, `fault`).
    pub status: Option<String>,
    /// OCPP's error code (`NoError`, …) or the station's fault label.
    pub error_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub info: Option<String>,
    pub power_w: Option<f64>,
    pub energy_kwh: Option<f64>,
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub soc: Option<f64>,
    #[schema(value_type = Option<super::openapi::Running>)]
    pub session: Option<Running>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Charger)]
pub struct ChargerOut {
    #[schema(value_type = String)]
    pub id: Arc<str>,
    pub name: String,
    pub profile: String,
    /// `ev` (OCPP) or `ebike`.
    #[schema(value_type = String)]
    pub kind: &'static str,
    #[schema(required)]
    pub online: Option<bool>,
    #[schema(required)]
    pub last_seen: Option<String>,
    #[schema(value_type = super::openapi::Location)]
    pub location: Location,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub charge_point_id: Option<String>,
    /// Whether its WebSocket is open now (EV chargers).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub connected: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, value_type = Option<super::openapi::BootInfo>)]
    pub boot: Option<crate::ocpp::central::BootInfo>,
    /// The charger as a whole (connector 0) for EV chargers; smoke for e-bike stations.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub error_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub smoke: Option<bool>,
    pub power_w: Option<f64>,
    pub ports: Vec<PortView>,
}

fn number(d: &DeviceState, point: &str) -> Option<f64> {
    d.points.get(point).and_then(|l| l.value.as_f64())
}

fn text(d: &DeviceState, point: &str) -> Option<String> {
    d.points.get(point).map(|l| l.value.to_string())
}

fn base(d: &DeviceState, kind: &'static str) -> ChargerOut {
    ChargerOut {
        id: d.info.id.clone(),
        name: d.info.name.clone(),
        profile: d.info.profile.clone(),
        kind,
        online: d.online,
        last_seen: d.last_seen.map(rfc3339),
        location: d.info.location.clone(),
        charge_point_id: None,
        connected: None,
        boot: None,
        status: None,
        error_code: None,
        smoke: None,
        power_w: None,
        ports: Vec::new(),
    }
}

fn ev(d: &DeviceState, c: ChargerView) -> ChargerOut {
    let mut out = base(d, "ev");
    for conn in c.connectors {
        if conn.connector == 0 {
            out.status = conn.status;
            out.error_code = conn.error_code;
            continue;
        }
        out.ports.push(PortView {
            port: conn.connector,
            status: conn.status,
            error_code: conn.error_code,
            info: conn.info,
            power_w: conn.power_w,
            energy_kwh: conn.energy_kwh,
            temperature: conn.temperature,
            soc: conn.soc,
            session: conn.session,
        });
    }
    out.power_w = number(d, "power");
    out.charge_point_id = Some(c.charge_point_id);
    out.connected = Some(c.connected);
    out.boot = c.boot;
    out
}

/// An e-bike station, from its latest readings: `port{N}.state`, `.power_w`, `.temperature`,
/// `.fault`, `.energy`, and `smoke`.
fn ebike(d: &DeviceState) -> ChargerOut {
    let mut out = base(d, "ebike");
    let mut ports: BTreeMap<u32, PortView> = BTreeMap::new();
    for name in d.points.keys() {
        let Some((n, point)) = name
            .strip_prefix("port")
            .and_then(|rest| rest.split_once('.'))
            .and_then(|(n, p)| Some((n.parse::<u32>().ok()?, p)))
        else {
            continue;
        };
        let port = ports.entry(n).or_insert_with(|| PortView {
            port: n,
            ..PortView::default()
        });
        let full = format!("port{n}.{point}");
        match point {
            "state" => port.status = text(d, &full),
            "fault" => {
                port.error_code =
                    text(d, &full).filter(|f| !f.is_empty() && f != "none" && f != "null")
            }
            "power_w" => port.power_w = number(d, &full),
            "temperature" => port.temperature = number(d, &full),
            "energy" => port.energy_kwh = number(d, &full),
            _ => {}
        }
    }
    out.smoke = d.points.get("smoke").and_then(|l| match l.value {
        crate::reading::Value::Bool(b) => Some(b),
        _ => None,
    });
    out.power_w = Some(ports.values().filter_map(|p| p.power_w).sum());
    out.ports = ports.into_values().collect();
    out
}

fn all(s: &Ctx) -> Vec<ChargerOut> {
    let ocpp: BTreeMap<Arc<str>, ChargerView> = s
        .state
        .ocpp
        .as_ref()
        .map(|c| {
            c.chargers()
                .into_iter()
                .map(|v| (v.device_id.clone(), v))
                .collect()
        })
        .unwrap_or_default();
    let mut ocpp = ocpp;
    s.state
        .hub
        .devices()
        .into_iter()
        .filter(|d| d.info.category == "charger")
        .map(|d| match ocpp.remove(&d.info.id) {
            Some(c) => ev(&d, c),
            None => ebike(&d),
        })
        .collect()
}

/// `GET /chargers`: every charger of the park with its ports.
#[utoipa::path(
    get,
    path = "/api/v1/chargers",
    tag = "chargers",
    responses((status = 200, description = "The chargers", body = Vec<ChargerOut>))
)]
pub(super) async fn list(_: Viewer, State(s): State<Ctx>) -> Json<Vec<ChargerOut>> {
    Json(all(&s))
}

/// `GET /chargers/{id}`.
#[utoipa::path(
    get,
    path = "/api/v1/chargers/{id}",
    tag = "chargers",
    params(("id" = String, Path, description = "The charger's device id")),
    responses(
        (status = 200, description = "The charger", body = ChargerOut),
        (status = 404, description = "No such charger", body = super::error::ErrorBody),
    )
)]
pub(super) async fn one(
    _: Viewer,
    State(s): State<Ctx>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<ChargerOut>, ApiError> {
    let Path(id) = id?;
    all(&s)
        .into_iter()
        .find(|c| *c.id == *id)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no charger `{id}`")))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct SessionsQuery {
    /// Only this EV charger's sessions.
    device: Option<String>,
    /// How many, 1 to 1000; default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// `GET /sessions[?device=&limit=]`: the charging log, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/sessions",
    tag = "chargers",
    params(SessionsQuery),
    responses(
        (status = 200, description = "The sessions, newest first", body = Vec<super::openapi::ChargingSession>),
        (status = 404, description = "No such EV charger", body = super::error::ErrorBody),
        (status = 500, description = "Reading the charging log failed", body = super::error::ErrorBody),
    )
)]
pub(super) async fn sessions(
    _: Viewer,
    State(s): State<Ctx>,
    q: Result<Query<SessionsQuery>, QueryRejection>,
) -> Result<Json<Vec<Session>>, ApiError> {
    let Query(q) = q?;
    let central = s.state.ocpp.clone();
    if let Some(d) = &q.device {
        if central.as_ref().and_then(|c| c.charger(d)).is_none() {
            return Err(ApiError::NotFound(format!("no EV charger `{d}`")));
        }
    }
    let Some(central) = central else {
        return Ok(Json(Vec::new()));
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_LIST).contains(&limit) {
        return Err(ApiError::BadRequest(format!("limit is 1..={MAX_LIST}")));
    }
    central
        .sessions(q.device, limit)
        .await
        .map(Json)
        .map_err(|e| ApiError::Internal(format!("reading the charging log: {e:#}")))
}

/// An operator's command, as posted.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(tag = "action", deny_unknown_fields)]
#[schema(as = ChargerCommand)]
pub(super) enum CommandBody {
    RemoteStopTransaction {
        #[serde(deserialize_with = "super::whole::de")]
        transaction_id: i32,
    },
    Reset {
        /// `Soft` when left out.
        #[serde(rename = "type", default = "soft")]
        #[schema(value_type = super::openapi::ResetKind)]
        kind: ResetType,
    },
    UnlockConnector {
        /// 1 or more.
        #[serde(deserialize_with = "super::whole::de")]
        #[schema(minimum = 1)]
        connector: u32,
    },
    ChangeAvailability {
        /// 0 (the default) is the whole charger.
        #[serde(default, deserialize_with = "super::whole::de")]
        connector: u32,
        #[serde(rename = "type")]
        #[schema(value_type = super::openapi::Availability)]
        kind: AvailabilityType,
    },
}

fn soft() -> ResetType {
    ResetType::Soft
}

impl CommandBody {
    fn into_command(self) -> Result<Command, ApiError> {
        Ok(match self {
            CommandBody::RemoteStopTransaction { transaction_id } => {
                Command::RemoteStopTransaction(RemoteStopTransaction { transaction_id })
            }
            CommandBody::Reset { kind } => Command::Reset(Reset { kind }),
            CommandBody::UnlockConnector { connector } => {
                if connector == 0 {
                    return Err(ApiError::BadRequest(
                        "UnlockConnector needs a connector of 1 or more".into(),
                    ));
                }
                Command::UnlockConnector(UnlockConnector {
                    connector_id: connector,
                })
            }
            CommandBody::ChangeAvailability { connector, kind } => {
                Command::ChangeAvailability(ChangeAvailability {
                    connector_id: connector,
                    kind,
                })
            }
        })
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct CommandAnswer {
    #[schema(value_type = String)]
    action: &'static str,
    /// The charger's answer: `Accepted`, `Rejected`, `Unlocked`, `Scheduled`, ….
    status: String,
    /// The charger's whole answer, as OCPP has it.
    #[schema(value_type = Object)]
    answer: Value,
}

fn answer(conf: CommandConf) -> CommandAnswer {
    let (action, answer) = match &conf {
        CommandConf::RemoteStopTransaction(c) => ("RemoteStopTransaction", c.to_payload()),
        CommandConf::Reset(c) => ("Reset", c.to_payload()),
        CommandConf::UnlockConnector(c) => ("UnlockConnector", c.to_payload()),
        CommandConf::ChangeAvailability(c) => ("ChangeAvailability", c.to_payload()),
    };
    CommandAnswer {
        action,
        status: answer
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        answer,
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        let msg = e.to_string();
        match e {
            CommandError::UnknownCharger(_) => ApiError::NotFound(msg),
            CommandError::NotConnected(_) | CommandError::Busy(_) => ApiError::Conflict(msg),
            CommandError::Timeout { .. } => ApiError::GatewayTimeout(msg),
            CommandError::ConnectionLost(_)
            | CommandError::Refused { .. }
            | CommandError::BadAnswer { .. } => ApiError::BadGateway(msg),
        }
    }
}

/// `POST /chargers/{id}/commands` (operator): sends the command and returns the charger's answer.
#[utoipa::path(
    post,
    path = "/api/v1/chargers/{id}/commands",
    tag = "chargers",
    params(("id" = String, Path, description = "The EV charger's device id")),
    request_body(content = CommandBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The charger's answer", body = CommandAnswer),
        (status = 404, description = "No such EV charger", body = super::error::ErrorBody),
        (status = 409, description = "The charger is not connected, or busy with another command", body = super::error::ErrorBody),
        (status = 502, description = "The charger refused the call, answered wrongly or hung up", body = super::error::ErrorBody),
        (status = 504, description = "The charger did not answer in time", body = super::error::ErrorBody),
    )
)]
pub(super) async fn command(
    Operator(who): Operator,
    State(s): State<Ctx>,
    id: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody<CommandBody>,
) -> Result<Json<CommandAnswer>, ApiError> {
    let Path(id) = id?;
    let central = s
        .state
        .ocpp
        .clone()
        .ok_or_else(|| ApiError::NotFound(format!("no EV charger `{id}`")))?;
    let body = body.ok_or_else(|| {
        ApiError::BadRequest(
            "send {\"action\": \"RemoteStopTransaction\" | \"Reset\" | \"UnlockConnector\" | \"ChangeAvailability\", …}".into(),
        )
    })?;
    let command = body.into_command()?;
    let action = command.action();
    tracing::info!(device = %id, action, by = %who.name, "operator command to charger");
    let conf = central.command(&id, command).await?;
    let out = answer(conf);
    tracing::info!(device = %id, action, status = %out.status, "charger answered");
    Ok(Json(out))
}
