//! Console sign-in: `login` trades a user name and password for a session cookie, `logout`
//! ends it, `me` says who the browser is; and the admin's list of console users.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;

use super::auth::{self, role_name};
use super::{Admin, ApiError, Ctx, JsonBody, Viewer};
use crate::config::Role;
use crate::users::{UserError, Users, PASSWORD_MAX, SESSION_MAX};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Login {
    user: String,
    password: String,
}

// Hand-written: the password must never reach a log line.
impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

fn users(s: &Ctx) -> Result<std::sync::Arc<Users>, ApiError> {
    s.state.users.clone().ok_or_else(|| {
        ApiError::Unavailable("this hub has no console users; use a bearer token".into())
    })
}

/// Trades a console user's name and password for a session cookie.
#[utoipa::path(
    post,
    path = "/api/v1/login",
    tag = "hub",
    security(()),
    request_body(content = Login, content_type = "application/json"),
    responses(
        (status = 200, description = "Signed in; `Set-Cookie` carries the session",
            body = super::openapi::SignedIn,
            headers(("Set-Cookie" = String, description = "The session cookie, HttpOnly, SameSite=Strict"))),
        (status = 401, description = "Wrong user name or password", body = super::error::ErrorBody),
        (status = 429, description = "Too many failed logins from this address or for this user",
            body = super::error::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "This hub has no console users", body = super::error::ErrorBody),
    )
)]
pub(super) async fn login(
    State(s): State<Ctx>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    JsonBody(body): JsonBody<Login>,
) -> Result<Response, ApiError> {
    let Login { user, password } = body.ok_or_else(|| {
        ApiError::BadRequest(r#"a body {"user":"…","password":"…"} is required"#.into())
    })?;
    let users = users(&s)?;
    let user = user.trim().to_string();
    let ip = peer.map_or(
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        |Extension(ConnectInfo(a))| a.ip(),
    );
    if let Err(wait) = s.limiter.lock().await.check(ip, &user) {
        return Err(ApiError::TooManyAttempts {
            retry_after_s: wait.as_secs_f64().ceil().max(1.0) as u64,
        });
    }
    if password.chars().count() > PASSWORD_MAX || user.is_empty() {
        s.limiter.lock().await.failed(ip, &user);
        return Err(ApiError::BadLogin);
    }
    let found = {
        let users = users.clone();
        let user = user.clone();
        tokio::task::spawn_blocking(move || users.verify(&user, &password)).await?
    };
    let Some(info) = found else {
        s.limiter.lock().await.failed(ip, &user);
        // Not the name: a password typed into the name field must not reach the log.
        tracing::warn!(%ip, "console login refused");
        return Err(ApiError::BadLogin);
    };
    s.limiter.lock().await.succeeded(ip, &user);
    let name = info.name.clone();
    let cookie = tokio::task::spawn_blocking(move || users.start_session(&name))
        .await?
        .map_err(|e| ApiError::Internal(format!("cannot start a session: {e}")))?;
    tracing::info!(user = %info.name, %ip, "console login");
    let set = auth::set_session_cookie(Some(&cookie), s.state.tls, SESSION_MAX.as_secs() as i64);
    Ok((
        [
            (header::SET_COOKIE, set),
            (header::CACHE_CONTROL, "no-store".into()),
        ],
        Json(json!({ "user": info.name, "role": role_name(info.role) })),
    )
        .into_response())
}

/// Ends the console session of the cookie sent, if any; always clears the cookie.
#[utoipa::path(
    post,
    path = "/api/v1/logout",
    tag = "hub",
    security(()),
    responses(
        (status = 204, description = "Signed out; `Set-Cookie` clears the session cookie",
            headers(("Set-Cookie" = String, description = "The session cookie, expired"))),
    )
)]
pub(super) async fn logout(State(s): State<Ctx>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let (Some(users), Some(cookie)) = (s.state.users.clone(), auth::session_cookie(&headers)) {
        tokio::task::spawn_blocking(move || users.end_session(&cookie))
            .await?
            .map_err(user_error)?;
    }
    let set = auth::set_session_cookie(None, s.state.tls, 0);
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, set)]).into_response())
}

/// Who the caller is, and the hub's name, language and time zone.
#[utoipa::path(
    get,
    path = "/api/v1/me",
    tag = "hub",
    responses((status = 200, description = "The caller", body = super::openapi::Me))
)]
pub(super) async fn me(Viewer(who): Viewer, State(s): State<Ctx>) -> Json<serde_json::Value> {
    let site = &s.state.site;
    Json(json!({
        "user": who.name,
        "role": role_name(who.role),
        "hub": {
            "id": site.id,
            "name": site.name,
            "language": site.language,
            "timezone": site.tz.name(),
        },
    }))
}

/// The console's users (admin).
#[utoipa::path(
    get,
    path = "/api/v1/users",
    tag = "hub",
    responses(
        (status = 200, description = "The users", body = Vec<super::openapi::User>),
        (status = 503, description = "This hub has no console users", body = super::error::ErrorBody),
    )
)]
pub(super) async fn list_users(
    _: Admin,
    State(s): State<Ctx>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let users = users(&s)?;
    let list = tokio::task::spawn_blocking(move || users.list())
        .await?
        .map_err(user_error)?;
    Ok(Json(
        list.into_iter()
            .map(|u| {
                json!({
                    "name": u.name,
                    "role": role_name(u.role),
                    "created": super::view::rfc3339(u.created),
                })
            })
            .collect(),
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewUser {
    /// Letters of any script, digits and `-_.@`.
    #[schema(min_length = 1, max_length = 64)]
    name: String,
    #[schema(value_type = super::openapi::RoleName)]
    role: Role,
    #[schema(min_length = 8, max_length = 1024)]
    password: String,
}

/// Adds a console user (admin).
#[utoipa::path(
    post,
    path = "/api/v1/users",
    tag = "hub",
    request_body(content = NewUser, content_type = "application/json"),
    responses(
        (status = 201, description = "Added", body = super::openapi::UserAdded),
        (status = 409, description = "A user of that name exists", body = super::error::ErrorBody),
        (status = 503, description = "This hub has no console users", body = super::error::ErrorBody),
    )
)]
pub(super) async fn add_user(
    Admin(who): Admin,
    State(s): State<Ctx>,
    JsonBody(body): JsonBody<NewUser>,
) -> Result<Response, ApiError> {
    let NewUser {
        name,
        role,
        password,
    } = body.ok_or_else(|| {
        ApiError::BadRequest(
            r#"a body {"name":"…","role":"viewer|operator|admin","password":"…"} is required"#
                .into(),
        )
    })?;
    if password.chars().count() > PASSWORD_MAX {
        return Err(ApiError::BadRequest(format!(
            "a password is at most {PASSWORD_MAX} characters"
        )));
    }
    let users = users(&s)?;
    let added = name.clone();
    tokio::task::spawn_blocking(move || users.add(&added, role, &password))
        .await?
        .map_err(user_error)?;
    tracing::info!(user = %name, role = role_name(role), by = %who.name, "console user added");
    Ok((
        StatusCode::CREATED,
        Json(json!({ "name": name, "role": role_name(role) })),
    )
        .into_response())
}

/// Removes a console user and ends their sessions (admin).
#[utoipa::path(
    delete,
    path = "/api/v1/users/{name}",
    tag = "hub",
    params(("name" = String, Path, description = "The user's name")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such user", body = super::error::ErrorBody),
        (status = 503, description = "This hub has no console users", body = super::error::ErrorBody),
    )
)]
pub(super) async fn remove_user(
    Admin(who): Admin,
    State(s): State<Ctx>,
    name: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(name) = name?;
    let users = users(&s)?;
    let gone = name.clone();
    let removed = tokio::task::spawn_blocking(move || users.remove(&gone))
        .await?
        .map_err(user_error)?;
    if !removed {
        return Err(ApiError::NotFound(format!("no console user `{name}`")));
    }
    tracing::info!(user = %name, by = %who.name, "console user removed");
    Ok(StatusCode::NO_CONTENT)
}

fn user_error(e: UserError) -> ApiError {
    match e {
        UserError::Exists => ApiError::Conflict(e.to_string()),
        UserError::NotFound => ApiError::NotFound(e.to_string()),
        UserError::BadName(_) | UserError::WeakPassword(_) => ApiError::BadRequest(e.to_string()),
        _ => ApiError::Internal(e.to_string()),
    }
}
