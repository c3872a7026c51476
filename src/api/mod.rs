//! The operators' HTTP API (`/api/v1`, DESIGN.md "HTTP API"): alarms to list and inspect,
//! acknowledge and shelve, and devices to take out of service.
//!
//! Reads go straight to the alarm store (on the blocking pool: SQLite calls block); commands
//! go to the alarm engine, which alone changes alarms, so an operator's click and a sensor's
//! message can never race on one alarm. Every route but `health` needs a bearer token of
//! `[[api.token]]`; the token's `name` is who did it in the alarm's history.

mod auth;
mod error;
mod view;

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use auth::{Caller, Keys};
pub use error::ApiError;
pub use view::{AlarmDetail, AlarmView, DeliveryView, EventView};

use crate::alarm::engine::EngineHandle;
use crate::alarm::store::{AlarmStore, Listing};
use crate::config::{ApiToken, Role};
use crate::hub::Hub;

/// Request bodies are a comment or a reason: anything bigger is a mistake or an attack.
pub const BODY_LIMIT: usize = 64 * 1024;

/// How many alarms `?state=all` answers with, newest first.
pub const ALL_LIMIT: usize = 500;

pub use crate::alarm::engine::MAX_MAINTENANCE_MINUTES;

/// How long `serve` waits for open requests once shut down: a client that keeps a request
/// open must not keep the hub from stopping.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What the API works on.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub hub: Arc<Hub>,
    pub store: Arc<AlarmStore>,
    pub engine: EngineHandle,
    pub tokens: Vec<ApiToken>,
    /// When the hub started, for `uptime_s`.
    pub started: Instant,
}

struct Shared {
    state: ApiState,
    keys: Keys,
}

type Ctx = Arc<Shared>;

/// The API's routes, all under `/api/v1`; merge or nest it with the hub's other routes.
pub fn router(state: ApiState) -> Router {
    let keys = Keys::new(&state.tokens);
    let shared = Arc::new(Shared { state, keys });
    let v1 = Router::new()
        .route("/health", get(health))
        .route("/alarms", get(list_alarms))
        .route("/alarms/{id}", get(alarm))
        .route("/alarms/{id}/ack", post(ack))
        .route("/alarms/{id}/shelve", post(shelve))
        .route("/devices/{id}/maintenance", post(maintenance))
        // On the nested router, not the outer one, so the hub can still merge this router
        // with others that bring their own fallback.
        .fallback(no_route)
        .method_not_allowed_fallback(no_method)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(shared);
    Router::new().nest("/api/v1", v1)
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
    let server = axum::serve(listener, router)
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

// ---- extractors ----

/// A caller with at least the viewer role (reads record no one, so who it is is not kept).
struct Viewer;

/// A caller with at least the operator role.
struct Operator(Caller);

impl FromRequestParts<Ctx> for Viewer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &Ctx) -> Result<Self, ApiError> {
        s.keys
            .authorize(&parts.headers, Role::Viewer)
            .map(|_| Viewer)
    }
}

impl FromRequestParts<Ctx> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &Ctx) -> Result<Self, ApiError> {
        s.keys
            .authorize(&parts.headers, Role::Operator)
            .map(Operator)
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

async fn health(State(s): State<Ctx>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": s.state.started.elapsed().as_secs(),
    }))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    state: Option<String>,
}

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
    let rows = read(&s, move |store| store.list(which, limit)).await?;
    Ok(Json(rows.iter().map(AlarmView::from).collect()))
}

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
        Ok(Some((row, store.events(id)?, store.deliveries(id)?)))
    })
    .await?;
    let (row, events, deliveries) = found.ok_or(ApiError::NotFound(format!("no alarm {id}")))?;
    Ok(Json(AlarmDetail {
        alarm: AlarmView::from(&row),
        events: events.iter().map(EventView::from).collect(),
        deliveries: deliveries.iter().map(DeliveryView::from).collect(),
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    comment: Option<String>,
}

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShelveBody {
    minutes: u64,
    reason: String,
}

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MaintenanceBody {
    on: bool,
    #[serde(default)]
    reason: String,
    minutes: Option<u64>,
}

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
