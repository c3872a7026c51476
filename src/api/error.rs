//! Every refusal of the API as one type, answered as `{"error":"…"}` with its status, so
//! clients (and the console) only ever parse one shape of error.

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::auth::role_name;
use crate::alarm::engine::CommandError;
use crate::config::Role;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("log in, or send a bearer token (Authorization: Bearer <token>)")]
    NoToken,
    #[error("the bearer token is not one of this hub's tokens")]
    UnknownToken,
    #[error("the session has ended: log in again")]
    NoSession,
    #[error("wrong user name or password")]
    BadLogin,
    #[error("too many failed logins: try again in {retry_after_s} s")]
    TooManyAttempts { retry_after_s: u64 },
    #[error("`{name}` has the {} role; this needs {}", role_name(*.role), role_name(*.need))]
    Forbidden {
        name: String,
        role: Role,
        need: Role,
    },
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// What axum refused before a handler ran (body too large, wrong content type, bad JSON).
    #[error("{message}")]
    Rejected { status: StatusCode, message: String },
    #[error("{0}")]
    Unavailable(String),
    /// A device the hub asked refused or gave no proper answer.
    #[error("{0}")]
    BadGateway(String),
    /// A device the hub asked did not answer in time.
    #[error("{0}")]
    GatewayTimeout(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NoToken
            | ApiError::UnknownToken
            | ApiError::NoSession
            | ApiError::BadLogin => StatusCode::UNAUTHORIZED,
            ApiError::TooManyAttempts { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Rejected { status, .. } => *status,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The body of every refusal.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a person to read.
    pub error: String,
    /// With 429: seconds until a login may be tried again (also in `Retry-After`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 1)]
    pub retry_after_s: Option<u64>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self, "api request failed");
        }
        let body = ErrorBody {
            error: self.to_string(),
            retry_after_s: match self {
                ApiError::TooManyAttempts { retry_after_s } => Some(retry_after_s),
                _ => None,
            },
        };
        let mut res = (status, Json(body)).into_response();
        match self {
            // RFC 6750: a client without a token is told the scheme; one with a bad token
            // is also told why.
            ApiError::NoToken => {
                res.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::UnknownToken => {
                res.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"invalid_token\""),
                );
            }
            ApiError::TooManyAttempts { retry_after_s } => {
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
            }
            _ => {}
        }
        res
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        let message = e.to_string();
        match e {
            CommandError::NotFound(_) | CommandError::NoDevice(_) => ApiError::NotFound(message),
            CommandError::Closed(_) | CommandError::AlreadyAcked(_) => ApiError::Conflict(message),
            CommandError::Invalid(_) => ApiError::BadRequest(message),
            CommandError::Stopped => ApiError::Unavailable(message),
            CommandError::Store(_) => ApiError::Internal(message),
        }
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> Self {
        ApiError::Internal(format!("a database read failed: {e}"))
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::Internal(format!("a database read did not finish: {e}"))
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        // axum answers a body of the wrong shape with 422; to the operator both it and broken
        // syntax are a bad request, and one status keeps clients simple.
        let status = match r.status() {
            StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
            s => s,
        };
        ApiError::Rejected {
            status,
            message: r.body_text(),
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        let status = r.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!(
                "the request body is larger than {} KiB",
                super::BODY_LIMIT / 1024
            )
        } else {
            r.body_text()
        };
        ApiError::Rejected { status, message }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::Rejected {
            status: r.status(),
            message: r.body_text(),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::Rejected {
            status: r.status(),
            message: r.body_text(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_refusals_map_to_the_statuses_clients_expect() {
        let cases = [
            (CommandError::NotFound(1), StatusCode::NOT_FOUND),
            (CommandError::NoDevice("x".into()), StatusCode::NOT_FOUND),
            (CommandError::Closed(1), StatusCode::CONFLICT),
            (CommandError::AlreadyAcked(1), StatusCode::CONFLICT),
            (CommandError::Invalid("no".into()), StatusCode::BAD_REQUEST),
            (CommandError::Stopped, StatusCode::SERVICE_UNAVAILABLE),
            (
                CommandError::Store("disk".into()),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
        ];
        for (e, status) in cases {
            assert_eq!(ApiError::from(e.clone()).status(), status, "{e:?}");
        }
    }

    #[test]
    fn a_refused_role_names_what_it_has_and_what_it_needs() {
        let e = ApiError::Forbidden {
            name: "guard".into(),
            role: Role::Viewer,
            need: Role::Operator,
        };
        assert_eq!(
            e.to_string(),
            "`guard` has the viewer role; this needs operator"
        );
    }
}
