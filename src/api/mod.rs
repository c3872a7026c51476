//! The hub's HTTP side (DESIGN.md "HTTP API"): the JSON API under `/api/v1` (devices, latest
//! values, history and energy use, alarms to acknowledge and shelve, the live event stream,
//! console sign-in), `/metrics` for Prometheus, and the web console at `/`.
//!
//! Reads go to the hub's live state, or to SQLite on the blocking pool; commands go to the
//! alarm engine, which alone changes alarms, so an operator's click and a sensor's message can
//! never race on one alarm. Every route but `health`, `openapi.json` (the API's OpenAPI
//! document), `login`, `logout` and the console's files needs a bearer token of
//! `[[api.token]]` or a console session, and the role the route asks for; the token's or
//! user's name is who did it in the alarm's history.

mod auth;
mod chargers;
mod console;
mod devices;
mod energy;
mod error;
mod history;
mod metrics;
pub mod openapi;
mod session;
mod stream;
mod view;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use chrono_tz::Tz;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use auth::{Caller, Keys};
pub use console::files as console_files;
pub use error::ApiError;
pub use view::{AlarmDetail, AlarmView, DeliveryView, EventView};

use crate::alarm::engine::EngineHandle;
use crate::alarm::store::{AlarmStore, Listing};
use crate::config::{ApiToken, Role};
use crate::hub::Hub;
use crate::users::{LoginLimiter, Users};

/// Request bodies are a comment or a reason: anything bigger is a mistake or an attack.
pub const BODY_LIMIT: usize = 64 * 1024;

/// How many alarms `?state=all` answers with, newest first.
pub const ALL_LIMIT: usize = 500;

pub use crate::alarm::engine::MAX_MAINTENANCE_MINUTES;

/// How long `serve` waits for open requests once shut down: a client that keeps a request
/// open must not keep the hub from stopping.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The hub as the console names it.
#[derive(Debug, Clone)]
pub struct Site {
    pub id: String,
    pub name: String,
    pub language: String,
    pub tz: Tz,
}

/// What `/metrics` reads besides the hub's live state.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    pub writer: Option<Arc<crate::store::WriterStats>>,
    /// The history writer's queue; weak, so the API never keeps the writer from stopping.
    pub store_queue: Option<tokio::sync::mpsc::WeakSender<Vec<crate::reading::Reading>>>,
    pub uplink: Option<Arc<crate::uplink::queue::UplinkQueue>>,
}

/// What the API works on.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub hub: Arc<Hub>,
    pub store: Arc<AlarmStore>,
    pub engine: EngineHandle,
    pub tokens: Vec<ApiToken>,
    /// When the hub started, for `uptime_s`.
    pub started: Instant,
    pub site: Site,
    /// The history database (none: history and energy answer 503).
    pub history: Option<PathBuf>,
    /// The console's users (none: only bearer tokens get in).
    pub users: Option<Arc<Users>>,
    pub gauges: Gauges,
    /// Browser origins allowed to call the API (CORS); empty: none.
    pub cors_origins: Vec<String>,
    /// Whether the listener serves HTTPS (session cookies are then `Secure`).
    pub tls: bool,
    /// Cancelled when the hub stops: open event streams end then.
    pub stop: CancellationToken,
    /// The OCPP central system, when the park has EV chargers.
    pub ocpp: Option<Arc<crate::ocpp::central::Central>>,
}

impl ApiState {
    /// The API of `hub` with bearer tokens only, no history and no console users; the fields
    /// are public to add those.
    pub fn new(
        hub: Arc<Hub>,
        store: Arc<AlarmStore>,
        engine: EngineHandle,
        tokens: Vec<ApiToken>,
    ) -> Self {
        Self {
            hub,
            store,
            engine,
            tokens,
            started: Instant::now(),
            site: Site {
                id: String::new(),
                name: String::new(),
                language: "zh-CN".into(),
                tz: chrono_tz::Asia::Shanghai,
            },
            history: None,
            users: None,
            gauges: Gauges::default(),
            cors_origins: Vec::new(),
            tls: false,
            stop: CancellationToken::new(),
            ocpp: None,
        }
    }
}

struct Shared {
    state: ApiState,
    keys: Keys,
    history: Option<history::Readers>,
    limiter: Mutex<LoginLimiter>,
}

type Ctx = Arc<Shared>;

/// The hub's HTTP routes: the API under `/api/v1`, `/metrics`, and the console at `/`.
pub fn router(state: ApiState) -> Router {
    let keys = Keys::new(&state.tokens);
    let history = state
        .history
        .clone()
        .map(|path| history::Readers::new(path, state.site.tz));
    let cors = cors(&state.cors_origins);
    let shared = Arc::new(Shared {
        state,
        keys,
        history,
        limiter: Mutex::new(LoginLimiter::new()),
    });
    let mut app = routes().with_state(shared).merge(console::router());
    if let Some(cors) = cors {
        app = app.layer(cors);
    }
    // Compresses JSON, CSV and the console; the event stream is left alone (by the layer's
    // default predicate), since compressing it would hold events back.
    app.layer(tower_http::compression::CompressionLayer::new())
}

/// The API's routes and `/metrics`; every one of them is in the OpenAPI document (a test of
/// `openapi` walks them).
fn routes() -> Router<Ctx> {
    let v1 = Router::new()
        .route("/health", get(health))
        .route(openapi::PATH, get(openapi::openapi_json))
        .route("/login", post(session::login))
        .route("/logout", post(session::logout))
        .route("/me", get(session::me))
        .route("/users", get(session::list_users).post(session::add_user))
        .route("/users/{name}", delete(session::remove_user))
        .route("/overview", get(devices::overview))
        .route("/devices", get(devices::list))
        .route("/devices/{id}", get(devices::one))
        .route("/devices/{id}/latest", get(devices::latest))
        .route("/devices/{id}/maintenance", post(maintenance))
        .route("/history", get(history::history))
        .route("/energy", get(history::energy))
        .route("/stream", get(stream::stream))
        .route("/chargers", get(chargers::list))
        .route("/chargers/{id}", get(chargers::one))
        .route("/chargers/{id}/commands", post(chargers::command))
        .route("/sessions", get(chargers::sessions))
        .route("/alarms", get(list_alarms))
        .route("/alarms/{id}", get(alarm))
        .route("/alarms/{id}/ack", post(ack))
        .route("/alarms/{id}/shelve", post(shelve))
        // On the nested router, not the outer one, so the hub can still merge this router
        // with others that bring their own fallback.
        .fallback(no_route)
        .method_not_allowed_fallback(no_method)
        .layer(DefaultBodyLimit::max(BODY_LIMIT));
    Router::new()
        .nest("/api/v1", v1)
        .route("/metrics", get(metrics::metrics))
}

/// CORS: none at all unless origins are configured; then only those, only to read and to
/// send commands with a bearer token (cookies stay same-site).
fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    let allowed: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    if allowed.is_empty() {
        return None;
    }
    Some(
        tower_http::cors::CorsLayer::new()
            .allow_origin(allowed)
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .max_age(Duration::from_secs(600)),
    )
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then lets open requests finish
/// for a few seconds.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "HTTP API listening");
    }
    let server = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.clone().cancelled_owned())
    .into_future();
    let grace = async {
        shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        r = server => r,
        () = grace => {
            tracing::warn!("HTTP API: requests still open after shutdown; dropped");
            Ok(())
        }
    }
}

/// Like [`serve`], over TLS: `cert` and `key` are PEM files.
pub async fn serve_tls(
    listener: std::net::TcpListener,
    router: Router,
    cert: &std::path::Path,
    key: &std::path::Path,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let config = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(
        crate::tls::server_config(cert, key)?,
    ));
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "HTTPS API listening");
    }
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        stopper.graceful_shutdown(Some(SHUTDOWN_GRACE));
    });
    axum_server::from_tcp_rustls(listener, config)?
        .handle(handle)
        .serve(router.into_make_service_with_connect_info::<SocketAddr>())
        .await
        .context("serving HTTPS")
}

// ---- extractors ----

/// Who is calling: a bearer token, or else the console's session cookie.
async fn caller(parts: &Parts, s: &Shared) -> Result<Caller, ApiError> {
    if let Some(token) = auth::bearer(&parts.headers) {
        return s.keys.identify(token).ok_or(ApiError::UnknownToken);
    }
    let (Some(users), Some(cookie)) = (&s.state.users, auth::session_cookie(&parts.headers)) else {
        return Err(ApiError::NoToken);
    };
    let users = users.clone();
    let user = tokio::task::spawn_blocking(move || users.session(&cookie))
        .await?
        .ok_or(ApiError::NoSession)?;
    Ok(Caller {
        name: user.name,
        role: user.role,
    })
}

/// A caller with at least the viewer role.
struct Viewer(Caller);

/// A caller with at least the operator role.
struct Operator(Caller);

/// A caller with the admin role.
struct Admin(Caller);

impl FromRequestParts<Ctx> for Viewer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &Ctx) -> Result<Self, ApiError> {
        auth::permit(caller(parts, s).await?, Role::Viewer).map(Viewer)
    }
}

impl FromRequestParts<Ctx> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &Ctx) -> Result<Self, ApiError> {
        auth::permit(caller(parts, s).await?, Role::Operator).map(Operator)
    }
}

impl FromRequestParts<Ctx> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &Ctx) -> Result<Self, ApiError> {
        auth::permit(caller(parts, s).await?, Role::Admin).map(Admin)
    }
}

/// A JSON body that may be left out (`None`). Axum's `Json` refuses an empty body; an
/// acknowledgement without a comment is still an acknowledgement.
struct JsonBody<T>(Option<T>);

fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json"))
}

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json = is_json(req.headers());
        let bytes = Bytes::from_request(req, state).await?;
        if bytes.trim_ascii().is_empty() {
            return Ok(JsonBody(None));
        }
        // Like axum's `Json`: a form post from a browser page must not pass for a command.
        if !json {
            return Err(ApiError::Rejected {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                message: "the body must be JSON, sent with `Content-Type: application/json`".into(),
            });
        }
        let Json(v) = Json::<T>::from_bytes(&bytes)?;
        Ok(JsonBody(Some(v)))
    }
}

/// Whole numbers in request bodies. JSON has one number type: `30.0` is thirty to a Python or
/// JavaScript client (and to JSON Schema's `integer`), so a whole float is taken like `30`;
/// `30.5` and out-of-range values are still refused.
mod whole {
    use serde::de::{Deserializer, Error};
    use serde::Deserialize;

    fn number<'de, D: Deserializer<'de>, T>(n: serde_json::Number) -> Result<T, D::Error>
    where
        T: TryFrom<i64> + TryFrom<u64>,
    {
        let fits = || D::Error::custom(format!("{n} is not a whole number in range"));
        if let Some(u) = n.as_u64() {
            return T::try_from(u).map_err(|_| fits());
        }
        if let Some(i) = n.as_i64() {
            return T::try_from(i).map_err(|_| fits());
        }
        match n.as_f64() {
            // Beyond ±2^53 a float no longer tells whole numbers apart.
            Some(f) if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 => {
                T::try_from(f as i64).map_err(|_| fits())
            }
            _ => Err(fits()),
        }
    }

    pub fn de<'de, D: Deserializer<'de>, T>(d: D) -> Result<T, D::Error>
    where
        T: TryFrom<i64> + TryFrom<u64>,
    {
        number::<D, T>(serde_json::Number::deserialize(d)?)
    }

    pub fn opt<'de, D: Deserializer<'de>, T>(d: D) -> Result<Option<T>, D::Error>
    where
        T: TryFrom<i64> + TryFrom<u64>,
    {
        Option::<serde_json::Number>::deserialize(d)?
            .map(number::<D, T>)
            .transpose()
    }
}

/// Runs a store read on the blocking pool.
async fn read<T, F>(s: &Shared, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&AlarmStore) -> rusqlite::Result<T> + Send + 'static,
{
    let store = s.state.store.clone();
    Ok(tokio::task::spawn_blocking(move || f(&store)).await??)
}

// ---- handlers ----

/// The alarms on a shelf now.
fn shelved(
    store: &AlarmStore,
) -> rusqlite::Result<std::collections::HashSet<crate::alarm::AlarmKey>> {
    let now = chrono::Utc::now();
    Ok(store
        .shelves()?
        .into_iter()
        .filter(|s| s.until > now)
        .map(|s| s.key)
        .collect())
}

/// The hub answers: for load balancers and watchdogs, without a token.
#[utoipa::path(
    get,
    path = "/api/v1/health",
    tag = "hub",
    security(()),
    responses((status = 200, description = "The hub is up", body = openapi::Health))
)]
async fn health(State(s): State<Ctx>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": s.state.started.elapsed().as_secs(),
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// `active` (the default): open alarms; `all`: the newest 500 of any state.
    #[param(pattern = "^(active|all)$")]
    state: Option<String>,
}

/// Alarms, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/alarms",
    tag = "alarms",
    params(ListQuery),
    responses((status = 200, description = "The alarms", body = Vec<AlarmView>))
)]
async fn list_alarms(
    _: Viewer,
    State(s): State<Ctx>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Vec<AlarmView>>, ApiError> {
    let Query(q) = query?;
    let (which, limit) = match q.state.as_deref() {
        None | Some("active") => (Listing::Open, usize::MAX),
        Some("all") => (Listing::All, ALL_LIMIT),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "state must be `active` or `all`, not `{other}`"
            )))
        }
    };
    let (rows, shelved) = read(&s, move |store| {
        Ok((store.list(which, limit)?, shelved(store)?))
    })
    .await?;
    Ok(Json(
        rows.iter()
            .map(|a| AlarmView::from(a).shelved(shelved.contains(&a.key)))
            .collect(),
    ))
}

/// One alarm with its events and push deliveries.
#[utoipa::path(
    get,
    path = "/api/v1/alarms/{id}",
    tag = "alarms",
    params(("id" = i64, Path, description = "The alarm's id")),
    responses(
        (status = 200, description = "The alarm", body = AlarmDetail),
        (status = 404, description = "No such alarm", body = error::ErrorBody),
    )
)]
async fn alarm(
    _: Viewer,
    State(s): State<Ctx>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<AlarmDetail>, ApiError> {
    let Path(id) = id?;
    let found = read(&s, move |store| {
        let Some(row) = store.alarm(id)? else {
            return Ok(None);
        };
        let shelved = shelved(store)?.contains(&row.key);
        Ok(Some((
            row,
            shelved,
            store.events(id)?,
            store.deliveries(id)?,
        )))
    })
    .await?;
    let (row, shelved, events, deliveries) =
        found.ok_or(ApiError::NotFound(format!("no alarm {id}")))?;
    Ok(Json(AlarmDetail {
        alarm: AlarmView::from(&row).shelved(shelved),
        events: events.iter().map(EventView::from).collect(),
        deliveries: deliveries.iter().map(DeliveryView::from).collect(),
    }))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AckBody {
    /// What was done; blank is none.
    comment: Option<String>,
}

/// Acknowledges an alarm (operator); the body may be left out.
#[utoipa::path(
    post,
    path = "/api/v1/alarms/{id}/ack",
    tag = "alarms",
    params(("id" = i64, Path, description = "The alarm's id")),
    request_body(content = AckBody, content_type = "application/json",
        description = "May be left out (an empty body)"),
    responses(
        (status = 200, description = "The acknowledged alarm", body = AlarmView),
        (status = 404, description = "No such alarm", body = error::ErrorBody),
        (status = 409, description = "Already acknowledged, or closed", body = error::ErrorBody),
        (status = 503, description = "The hub is stopping", body = error::ErrorBody),
    )
)]
async fn ack(
    Operator(who): Operator,
    State(s): State<Ctx>,
    id: Result<Path<i64>, PathRejection>,
    JsonBody(body): JsonBody<AckBody>,
) -> Result<Json<AlarmView>, ApiError> {
    let Path(id) = id?;
    let comment = body
        .unwrap_or_default()
        .comment
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty());
    let row = s.state.engine.ack(id, &who.name, comment).await?;
    Ok(Json(AlarmView::from(&row)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ShelveBody {
    /// How long: 1 to `[alarms] max_shelve_minutes` (480 unless configured; at most 10 080).
    #[serde(deserialize_with = "whole::de")]
    #[schema(minimum = 1, maximum = 10_080)]
    minutes: u64,
    /// Why nobody needs to be told for a while; not blank.
    #[schema(pattern = "\\S")]
    reason: String,
}

/// Shelves an alarm (operator): nobody is told of it until the time is up.
#[utoipa::path(
    post,
    path = "/api/v1/alarms/{id}/shelve",
    tag = "alarms",
    params(("id" = i64, Path, description = "The alarm's id")),
    request_body(content = ShelveBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The shelved alarm", body = AlarmView),
        (status = 404, description = "No such alarm", body = error::ErrorBody),
        (status = 409, description = "The alarm is closed", body = error::ErrorBody),
        (status = 503, description = "The hub is stopping", body = error::ErrorBody),
    )
)]
async fn shelve(
    Operator(who): Operator,
    State(s): State<Ctx>,
    id: Result<Path<i64>, PathRejection>,
    JsonBody(body): JsonBody<ShelveBody>,
) -> Result<Json<AlarmView>, ApiError> {
    let Path(id) = id?;
    let body = body.ok_or_else(|| {
        ApiError::BadRequest(r#"a body {"minutes":…,"reason":"…"} is required"#.into())
    })?;
    let row = s
        .state
        .engine
        .shelve(id, &who.name, body.minutes, body.reason.trim().to_string())
        .await?;
    Ok(Json(AlarmView::from(&row)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct MaintenanceBody {
    /// Out of service (`true`) or back (`false`).
    on: bool,
    /// Why; required to take a device out of service.
    #[serde(default)]
    reason: String,
    /// For how long, 1 to 43 200 minutes (30 days); left out: until put back.
    #[serde(default, deserialize_with = "whole::opt")]
    #[schema(minimum = 1, maximum = 43_200)]
    minutes: Option<u64>,
}

/// Takes a device out of service or puts it back (operator): its alarms close quietly.
#[utoipa::path(
    post,
    path = "/api/v1/devices/{id}/maintenance",
    tag = "devices",
    params(("id" = String, Path, description = "The device's id")),
    request_body(content = MaintenanceBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Done", body = openapi::MaintenanceSet),
        (status = 404, description = "No such device", body = error::ErrorBody),
        (status = 503, description = "The hub is stopping", body = error::ErrorBody),
    )
)]
async fn maintenance(
    Operator(who): Operator,
    State(s): State<Ctx>,
    device: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody<MaintenanceBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Path(device) = device?;
    let body = body.ok_or_else(|| {
        ApiError::BadRequest(
            r#"a body {"on":true|false,"reason":"…","minutes":…} is required"#.into(),
        )
    })?;
    let reason = body.reason.trim().to_string();
    let minutes = if body.on {
        check_maintenance(body.minutes, &reason)?
    } else {
        // Nothing to time when putting a device back; a window out of range is still a
        // mistake of the client's, and is refused rather than silently dropped.
        check_minutes(body.minutes)?;
        None
    };
    s.state
        .engine
        .maintenance(&device, body.on, &who.name, reason, minutes)
        .await?;
    Ok(Json(serde_json::json!({ "device": device, "on": body.on })))
}

/// Taking a device out of service closes its alarms without telling anyone, so it must say
/// why, and must end.
fn check_maintenance(minutes: Option<u64>, reason: &str) -> Result<Option<u64>, ApiError> {
    if reason.is_empty() {
        return Err(ApiError::BadRequest(
            "taking a device out of service needs a reason".into(),
        ));
    }
    check_minutes(minutes)
}

fn check_minutes(minutes: Option<u64>) -> Result<Option<u64>, ApiError> {
    match minutes {
        Some(m) if m == 0 || m > MAX_MAINTENANCE_MINUTES => Err(ApiError::BadRequest(format!(
            "minutes must be between 1 and {MAX_MAINTENANCE_MINUTES}, or left out for \
             until put back"
        ))),
        m => Ok(m),
    }
}

async fn no_route() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}

async fn no_method() -> ApiError {
    ApiError::Rejected {
        status: StatusCode::METHOD_NOT_ALLOWED,
        message: "method not allowed on this endpoint".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn content_type(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn json_and_its_suffixed_types_count_as_json_and_forms_do_not() {
        assert!(is_json(&content_type("application/json")));
        assert!(is_json(&content_type("Application/JSON; charset=utf-8")));
        assert!(is_json(&content_type("application/merge-patch+json")));
        assert!(!is_json(&content_type("application/x-www-form-urlencoded")));
        assert!(!is_json(&content_type("text/plain")));
        assert!(!is_json(&HeaderMap::new()));
    }

    #[derive(Debug, Deserialize)]
    struct Whole {
        #[serde(deserialize_with = "whole::de")]
        n: u32,
        #[serde(default, deserialize_with = "whole::opt")]
        m: Option<i32>,
    }

    #[test]
    fn a_whole_number_sent_as_a_float_is_taken_and_fractions_and_overflow_are_not() {
        let w: Whole = serde_json::from_str(r#"{"n": 30.0, "m": -2.0}"#).unwrap();
        assert_eq!((w.n, w.m), (30, Some(-2)));
        let w: Whole = serde_json::from_str(r#"{"n": 7}"#).unwrap();
        assert_eq!((w.n, w.m), (7, None));
        let w: Whole = serde_json::from_str(r#"{"n": 7, "m": null}"#).unwrap();
        assert_eq!(w.m, None);
        for bad in [
            r#"{"n": 30.5}"#,
            r#"{"n": -1}"#,
            r#"{"n": 4294967296}"#,
            r#"{"n": 1e300}"#,
            r#"{"n": "30"}"#,
            r#"{"n": 1, "m": 2147483648.0}"#,
        ] {
            assert!(serde_json::from_str::<Whole>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_maintenance_window_out_of_range_is_refused_even_when_putting_a_device_back() {
        assert!(check_minutes(Some(0)).is_err());
        assert!(check_minutes(Some(MAX_MAINTENANCE_MINUTES + 1)).is_err());
        assert_eq!(check_minutes(None).unwrap(), None);
    }

    #[test]
    fn maintenance_needs_a_reason_and_a_window_that_ends() {
        assert!(check_maintenance(Some(60), "").is_err());
        assert!(check_maintenance(Some(0), "lift service").is_err());
        assert!(check_maintenance(Some(MAX_MAINTENANCE_MINUTES + 1), "lift service").is_err());
        assert_eq!(
            check_maintenance(Some(MAX_MAINTENANCE_MINUTES), "lift service").unwrap(),
            Some(MAX_MAINTENANCE_MINUTES)
        );
        assert_eq!(check_maintenance(None, "lift service").unwrap(), None);
    }
}
