//! The API's OpenAPI 3.1 document, served at `GET /api/v1/openapi.json`: built from the
//! handlers' `#[utoipa::path]` annotations and the types they answer with, so that it describes
//! what the code does. Public, like `health`: it carries the API's shape and no park data.
//!
//! The refusals every operation shares (401/403 for a missing token or role, 400/413/415 for
//! a bad body, 400 for bad parameters) are added here by one rule rather than on each handler,
//! so that no operation forgets one. `tests/openapi.rs` runs schemathesis against the real hub
//! with this document; the test below fails when a route of the router is not in it.
//!
//! Answers the handlers build with `json!` are described by the schema-only types below; they
//! name the fields the handlers write, and schemathesis checks every answer against them.

use std::collections::BTreeMap;

use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder, Schema};
use utoipa::{Modify, OpenApi, ToSchema};

use super::error::ErrorBody;

/// The times the `from` and `to` parameters take, for the document (`parse_time` decides): RFC 3339, unix
/// seconds or a local date, in 1971..2099 so that every match is inside the range it allows
/// in any time zone (the document cannot say "not after 2100-01-01").
pub const TIME: &str = "^((197[1-9]|19[89][0-9]|20[0-9]{2})-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])\
                    (T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?\
                    (Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9]))?|[0-9]{1,9}|[1-3][0-9]{9}|40[0-9]{8})$";

/// The document's path, under the API's prefix.
pub const PATH: &str = "/openapi.json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "parkhub API",
        description = "The JSON API of a parkhub edge hub: devices and their latest values, \
            history and energy use, alarms to acknowledge and shelve, chargers, the live event \
            stream and console users. Every operation but `health`, `login`, `logout` and this \
            document needs a bearer token of `[[api.token]]` (or a console session cookie) with \
            the role it names: viewer < operator < admin. Errors are `{\"error\":\"…\"}`."
    ),
    paths(
        super::health,
        openapi_json,
        super::session::login,
        super::session::logout,
        super::session::me,
        super::session::list_users,
        super::session::add_user,
        super::session::remove_user,
        super::devices::overview,
        super::devices::list,
        super::devices::one,
        super::devices::latest,
        super::maintenance,
        super::history::history,
        super::history::energy,
        super::stream::stream,
        super::chargers::list,
        super::chargers::one,
        super::chargers::command,
        super::chargers::sessions,
        super::list_alarms,
        super::alarm,
        super::ack,
        super::shelve,
        super::metrics::metrics,
    ),
    components(schemas(ErrorBody)),
    modifiers(&Security, &Refusals, &Times, &OptionalBodies, &ClosedVariants),
    security(("bearer" = []), ("session" = [])),
    tags(
        (name = "hub", description = "The hub itself and console sign-in"),
        (name = "devices", description = "Devices, latest values, history and energy"),
        (name = "alarms", description = "Alarms and what was done about them"),
        (name = "chargers", description = "EV chargers (OCPP) and e-bike stations"),
    )
)]
pub struct ApiDoc;

/// The document as served.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// `GET /api/v1/openapi.json`: the document itself; see the module's comment on why it is
/// public.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "hub",
    security(()),
    responses((status = 200, description = "This OpenAPI 3.1 document", content_type = "application/json", body = Object))
)]
pub(super) async fn openapi_json() -> axum::response::Response {
    use axum::response::IntoResponse;
    static DOC: std::sync::OnceLock<axum::body::Bytes> = std::sync::OnceLock::new();
    let body = DOC.get_or_init(|| match serde_json::to_vec(&document()) {
        Ok(v) => v.into(),
        // Serializing a tree of maps and strings cannot fail; an empty object keeps the
        // handler total all the same.
        Err(_) => axum::body::Bytes::from_static(b"{}"),
    });
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.clone(),
    )
        .into_response()
}

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token of `[[api.token]]`; the config holds its SHA-256.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                super::auth::SESSION_COOKIE,
                "The console's session, set by `POST /api/v1/login`.",
            ))),
        );
    }
}

/// Adds the refusals every operation of a kind can answer with.
struct Refusals;

fn refusal(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build(),
    )
}

fn add(op: &mut Operation, status: &str, description: &str) {
    op.responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| refusal(description));
}

impl Modify for Refusals {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        for item in doc.paths.paths.values_mut() {
            for op in [&mut item.get, &mut item.post, &mut item.delete]
                .into_iter()
                .flatten()
            {
                // `security(())` on an operation marks it public; the rest inherit the
                // document's bearer-or-session requirement.
                if op.security.is_none() {
                    add(
                        op,
                        "401",
                        "No token or session, or one this hub does not know",
                    );
                    add(
                        op,
                        "403",
                        "The caller's role is below what this operation needs",
                    );
                }
                if op.request_body.is_some() {
                    add(
                        op,
                        "400",
                        "The body is not valid JSON or not of the right shape",
                    );
                    add(op, "413", "The body is larger than 64 KiB");
                    add(op, "415", "The body is not sent as `application/json`");
                }
                if op.parameters.as_ref().is_some_and(|p| !p.is_empty()) {
                    add(op, "400", "A parameter is malformed or out of range");
                }
            }
        }
    }
}

/// Gives every `from` and `to` parameter the form of [`TIME`] (one pattern, written once).
struct Times;

impl Modify for Times {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        for item in doc.paths.paths.values_mut() {
            let Some(op) = item.get.as_mut() else {
                continue;
            };
            for p in op.parameters.iter_mut().flatten() {
                if p.name != "from" && p.name != "to" {
                    continue;
                }
                if let Some(RefOr::T(Schema::Object(o))) = p.schema.as_mut() {
                    o.pattern = Some(TIME.to_string());
                }
            }
        }
    }
}

/// Operations whose body may be left out. utoipa marks a body optional only by making its
/// schema nullable too, and `null` is not an empty body: the handler refuses it.
const OPTIONAL_BODIES: &[&str] = &["/api/v1/alarms/{id}/ack"];

struct OptionalBodies;

impl Modify for OptionalBodies {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        for path in OPTIONAL_BODIES {
            if let Some(body) = doc
                .paths
                .paths
                .get_mut(*path)
                .and_then(|item| item.post.as_mut())
                .and_then(|op| op.request_body.as_mut())
            {
                body.required = Some(utoipa::openapi::Required::False);
            }
        }
    }
}

/// Tagged enums whose variants take no other fields (`deny_unknown_fields`): utoipa closes
/// structs so but not an enum's variants.
const CLOSED_ENUMS: &[&str] = &["ChargerCommand"];

struct ClosedVariants;

impl Modify for ClosedVariants {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::AdditionalProperties;
        let Some(components) = doc.components.as_mut() else {
            return;
        };
        for name in CLOSED_ENUMS {
            let Some(RefOr::T(Schema::OneOf(one))) = components.schemas.get_mut(*name) else {
                continue;
            };
            for item in &mut one.items {
                if let RefOr::T(Schema::Object(o)) = item {
                    o.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
                }
            }
        }
    }
}

// ---- schema-only types: answers the handlers build with `json!` ----

/// `GET /health`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Health {
    /// Always `ok`.
    status: String,
    version: String,
    uptime_s: u64,
}

/// A role: viewer < operator < admin.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum RoleName {
    Viewer,
    Operator,
    Admin,
}

/// Who signed in.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SignedIn {
    user: String,
    role: RoleName,
}

/// The hub as `GET /me` names it.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct HubInfo {
    id: String,
    name: String,
    /// The console's language, e.g. `zh-CN`.
    language: String,
    /// The park's IANA time zone, e.g. `Asia/Shanghai`.
    timezone: String,
}

/// A console user just added.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct UserAdded {
    name: String,
    role: RoleName,
}

/// `GET /me`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Me {
    user: String,
    role: RoleName,
    hub: HubInfo,
}

/// A console user.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct User {
    name: String,
    role: RoleName,
    /// RFC 3339.
    created: String,
}

/// Where a device is (every part may be left out).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Location {
    #[schema(nullable = false)]
    building: Option<String>,
    #[schema(nullable = false)]
    floor: Option<String>,
    #[schema(nullable = false)]
    zone: Option<String>,
    #[schema(nullable = false)]
    room: Option<String>,
    /// The tenant a meter bills.
    #[schema(nullable = false)]
    tenant: Option<String>,
}

/// How a device's polls and messages went since the hub started.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DeviceStats {
    polls: u64,
    requests: u64,
    errors: u64,
    timeouts: u64,
    exceptions: u64,
    rtt_last_ms: f64,
    rtt_avg_ms: f64,
    counter_resets: u64,
    /// MQTT messages taken in.
    messages: u64,
    /// MQTT messages (or parts) refused.
    rejected: u64,
    /// DL/T 645 and CJ/T 188 lines: what was passed over, by reason (left out when none).
    #[schema(nullable = false)]
    line_rejects: Option<BTreeMap<String, u64>>,
}

/// A point's value: a number, a boolean or a text (a number that is not finite is `null`).
#[derive(ToSchema, serde::Serialize)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum ReadingValue {
    Number(f64),
    Bool(bool),
    Text(String),
}

/// A point's latest value.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Latest {
    value: Option<ReadingValue>,
    #[schema(nullable = false)]
    unit: Option<String>,
    /// RFC 3339, UTC.
    ts: String,
}

/// A device; `GET /devices/{id}` adds its points.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Device {
    id: String,
    name: String,
    profile: String,
    category: String,
    /// `null` until the first poll or message has settled it.
    #[schema(required)]
    online: Option<bool>,
    #[schema(required)]
    last_seen: Option<String>,
    location: Location,
    #[schema(required)]
    last_error: Option<String>,
    stats: DeviceStats,
    /// Only in `GET /devices/{id}`.
    #[schema(nullable = false)]
    points: Option<BTreeMap<String, Latest>>,
}

/// `POST /devices/{id}/maintenance`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct MaintenanceSet {
    device: String,
    on: bool,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct OverviewHub {
    id: String,
    name: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DeviceCounts {
    total: u64,
    online: u64,
    offline: u64,
    unknown: u64,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AlarmCounts {
    active: u64,
    unacked: u64,
    by_category: BTreeMap<String, u64>,
    by_severity: BTreeMap<String, u64>,
}

/// Today's (local) use of the park; `null` where it has no such meters or no history.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Today {
    #[schema(required)]
    electricity_kwh: Option<f64>,
    #[schema(required)]
    water_m3: Option<f64>,
    /// Local midnight, RFC 3339.
    since: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Tile {
    id: String,
    name: String,
    category: String,
    #[schema(required)]
    online: Option<bool>,
    /// The most urgent severity of its open alarms.
    #[schema(required)]
    alarm: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Floor {
    floor: String,
    devices: Vec<Tile>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Building {
    building: String,
    floors: Vec<Floor>,
}

/// `GET /overview`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Overview {
    hub: OverviewHub,
    devices: DeviceCounts,
    alarms: AlarmCounts,
    today: Today,
    layout: Vec<Building>,
}

/// One reading of `GET /history`: a number, or for a text point its changes.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct HistoryRow {
    /// RFC 3339, UTC.
    ts: String,
    #[schema(required)]
    value: Option<ReadingValue>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct EnergySeries {
    group: String,
    label: String,
    /// Use per bucket; `null` where no meter of the group has data.
    values: Vec<Option<f64>>,
    total: f64,
}

/// `GET /energy`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Energy {
    by: String,
    period: String,
    kind: String,
    unit: String,
    /// The buckets' starts, unix seconds.
    ts: Vec<i64>,
    series: Vec<EnergySeries>,
}

/// A session running on a connector.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Running {
    transaction_id: i32,
    id_tag: String,
    started_at: String,
    meter_start_wh: i64,
    energy_kwh: f64,
}

/// What a charger said of itself at boot.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BootInfo {
    vendor: String,
    model: String,
    serial: Option<String>,
    firmware: Option<String>,
    booted_at: String,
}

/// One charging session of the log.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ChargingSession {
    transaction_id: i32,
    device_id: String,
    connector: u32,
    id_tag: String,
    started_at: String,
    meter_start_wh: i64,
    #[schema(required)]
    stopped_at: Option<String>,
    #[schema(required)]
    meter_stop_wh: Option<i64>,
    #[schema(required)]
    stop_reason: Option<String>,
    #[schema(required)]
    energy_kwh: Option<f64>,
}

/// OCPP's reset kinds.
#[derive(ToSchema)]
#[allow(dead_code)]
pub enum ResetKind {
    Hard,
    Soft,
}

/// OCPP's availability kinds.
#[derive(ToSchema)]
#[allow(dead_code)]
pub enum Availability {
    Inoperative,
    Operative,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every (method, path) the router serves, read from its `Debug` form: axum has no other
    /// way to list a router's routes. The test below checks it finds a plausible number, so
    /// a change of that form fails loudly rather than passing empty.
    fn served() -> BTreeSet<(String, String)> {
        let whole = format!("{:?}", super::super::routes());
        // The routes proper; the fallback router that follows holds only axum's catch-alls.
        let shown = whole
            .split(", fallback_router:")
            .next()
            .expect("the router's Debug form has its path router first");
        let mut paths = BTreeMap::new();
        // `RouteId(3): "/api/v1/alarms"` in the node; the method routers come before it.
        let node = shown
            .split("node: Node { paths: {")
            .nth(1)
            .expect("the router's Debug form names its paths")
            .split("\"}")
            .next()
            .unwrap();
        for entry in node.split(", RouteId(") {
            let entry = entry.trim_start_matches("RouteId(");
            let (id, rest) = entry.split_once("): \"").expect("RouteId(N): \"path\"");
            let path = rest.trim_end_matches('"').to_string();
            paths.insert(id.to_string(), path);
        }
        let mut out = BTreeSet::new();
        for entry in shown.split("RouteId(").skip(1) {
            let Some((id, rest)) = entry.split_once("): MethodRouter(") else {
                continue;
            };
            let allow = rest
                .split("allow_header: Bytes(b\"")
                .nth(1)
                .and_then(|a| a.split('"').next())
                .expect("a method router names the methods it allows");
            let path = &paths[id];
            if path.contains("__private__axum") || path == "/api/v1" || path == "/api/v1/" {
                // Where axum sends what matches no route of the nested router to its fallback.
                continue;
            }
            for method in allow.split(',').filter(|m| *m != "HEAD") {
                out.insert((method.to_string(), path.clone()));
            }
        }
        out
    }

    fn documented() -> BTreeSet<(String, String)> {
        let doc = serde_json::to_value(document()).unwrap();
        let mut out = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
        out
    }

    #[test]
    fn every_route_of_the_router_is_in_the_document_and_nothing_else() {
        let served = served();
        assert!(served.len() >= 25, "found only {served:?}");
        let documented = documented();
        let undocumented: Vec<_> = served.difference(&documented).collect();
        assert!(
            undocumented.is_empty(),
            "routes without #[utoipa::path] in ApiDoc: {undocumented:?}"
        );
        let stale: Vec<_> = documented.difference(&served).collect();
        assert!(stale.is_empty(), "documented but not routed: {stale:?}");
    }

    #[test]
    fn request_bodies_are_closed_like_the_handlers_that_refuse_unknown_fields() {
        let doc = serde_json::to_value(document()).unwrap();
        let schemas = &doc["components"]["schemas"];
        for v in schemas["ChargerCommand"]["oneOf"].as_array().unwrap() {
            assert_eq!(v["additionalProperties"], false, "{v}");
        }
        for name in [
            "AckBody",
            "ShelveBody",
            "MaintenanceBody",
            "Login",
            "NewUser",
        ] {
            assert_eq!(schemas[name]["additionalProperties"], false, "{name}");
        }
        let ack = &doc["paths"]["/api/v1/alarms/{id}/ack"]["post"]["requestBody"];
        assert_eq!(
            ack["required"], false,
            "an acknowledgement may come without a body"
        );
        let from = &doc["paths"]["/api/v1/history"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "from")
            .unwrap()["schema"];
        assert_eq!(from["pattern"], TIME);
    }

    #[test]
    fn operations_need_a_token_except_the_open_ones() {
        let doc = serde_json::to_value(document()).unwrap();
        let mut open = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let public = op.get("security").is_some();
                if public {
                    open.push(format!("{} {path}", method.to_uppercase()));
                } else {
                    assert!(op["responses"].get("401").is_some(), "{method} {path}");
                }
            }
        }
        open.sort();
        assert_eq!(
            open,
            [
                "GET /api/v1/health",
                "GET /api/v1/openapi.json",
                "POST /api/v1/login",
                "POST /api/v1/logout"
            ]
        );
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
    }
}
