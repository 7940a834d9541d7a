//! The service's one error type and its one mapping to HTTP: a status, a stable `code`, a safe
//! message, and the request id. Detail that could hold PII or internals goes to the (masked) log only.
//!
//! Body: `{"success":false,"error":{"code":"…","message":"…"},"request_id":"…"}`. The token
//! endpoint answers in RFC 6749's shape instead (`{"error":"invalid_grant",…}`), as OAuth clients expect.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::auth::Scope;
use crate::auth::oauth::{GrantError, OAuthErrorCode};
use crate::kyc::KycError;
use crate::kyc::liveness::{LivenessError, Refusal};
use crate::kyc::ports::StoreError;

tokio::task_local! {
    /// The current request's id, set by the request middleware for everything that runs inside it.
    pub static REQUEST_ID: String;
    /// When the current request's time is up (its arrival plus `http.request_timeout`).
    pub static REQUEST_DEADLINE: tokio::time::Instant;
}

/// The current request id, or an empty string outside a request.
#[must_use]
pub fn current_request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("not found")]
    NotFound,
    #[error("no such route")]
    RouteNotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("missing bearer token")]
    TokenMissing,
    #[error("invalid token")]
    TokenInvalid,
    #[error("malformed Authorization header")]
    TokenMalformed,
    #[error("insufficient scope, needs {0}")]
    InsufficientScope(Scope),
    #[error("rate limited")]
    RateLimited {
        retry_after_secs: u64,
        headers: HeaderMap,
    },
    #[error("bad request: {code}")]
    BadRequest { code: &'static str, message: String },
    /// Input refused by one of the input limits (400 or 413): too many parts, too long a field
    /// or file name, too deep a JSON body. The message names the limit, never the value.
    #[error("input refused: {code}")]
    InputLimit {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
    /// An input field is missing or invalid (400 or 422), or of the wrong media type (415).
    #[error("invalid field {field}: {code}")]
    Field {
        status: StatusCode,
        code: &'static str,
        message: String,
        field: &'static str,
    },
    /// An Idempotency-Key problem: 400 malformed, 409 in flight, 422 reused with another payload.
    #[error("idempotency: {code}")]
    Idempotency {
        status: StatusCode,
        code: &'static str,
        message: &'static str,
    },
    #[error("payload too large")]
    PayloadTooLarge { limit: usize },
    #[error("unsupported media type")]
    UnsupportedMediaType { expected: &'static str },
    #[error("dependency unavailable: {0}")]
    Unavailable(&'static str),
    #[error("request timed out")]
    Timeout,
    #[error("oauth error {}", code.as_str())]
    OAuth {
        code: OAuthErrorCode,
        description: &'static str,
    },
    /// A plain request to an endpoint that takes only a WebSocket upgrade.
    #[error("websocket upgrade required")]
    UpgradeRequired,
    /// A liveness connection or session refused (`docs/liveness-protocol.md`).
    #[error("liveness: {}", .0.code())]
    Liveness(Refusal),
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            Self::RouteNotFound => (StatusCode::NOT_FOUND, "ROUTE_NOT_FOUND"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED"),
            Self::TokenMissing => (StatusCode::UNAUTHORIZED, "TOKEN_MISSING"),
            Self::TokenInvalid => (StatusCode::UNAUTHORIZED, "TOKEN_INVALID"),
            Self::TokenMalformed => (StatusCode::BAD_REQUEST, "TOKEN_MALFORMED"),
            Self::InsufficientScope(_) => (StatusCode::FORBIDDEN, "INSUFFICIENT_SCOPE"),
            Self::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED"),
            Self::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            Self::Field { status, code, .. }
            | Self::Idempotency { status, code, .. }
            | Self::InputLimit { status, code, .. } => (*status, code),
            Self::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
            Self::UnsupportedMediaType { .. } => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE")
            }
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE"),
            Self::Timeout => (StatusCode::SERVICE_UNAVAILABLE, "TIMEOUT"),
            Self::OAuth { code, .. } => (
                if *code == OAuthErrorCode::InvalidClient {
                    StatusCode::UNAUTHORIZED
                } else {
                    StatusCode::BAD_REQUEST
                },
                code.as_str(),
            ),
            Self::UpgradeRequired => (StatusCode::UPGRADE_REQUIRED, "UPGRADE_REQUIRED"),
            Self::Liveness(r) => (
                match r {
                    Refusal::TicketInvalid => StatusCode::UNAUTHORIZED,
                    Refusal::SessionForeign => StatusCode::FORBIDDEN,
                    Refusal::SessionNotFound => StatusCode::NOT_FOUND,
                    Refusal::SessionUsed => StatusCode::CONFLICT,
                    Refusal::SessionExpired => StatusCode::GONE,
                    Refusal::SessionLimit => StatusCode::TOO_MANY_REQUESTS,
                },
                r.code(),
            ),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"),
        }
    }

    fn message(&self) -> String {
        match self {
            Self::NotFound => "the KYC request does not exist or belongs to another client".into(),
            Self::RouteNotFound => "no such endpoint".into(),
            Self::MethodNotAllowed => "this endpoint does not accept that method".into(),
            Self::TokenMissing => "an Authorization: Bearer access token is required".into(),
            Self::TokenInvalid => "the access token is invalid or expired".into(),
            Self::TokenMalformed => "the Authorization header must be: Bearer <token>".into(),
            Self::InsufficientScope(s) => format!("the access token lacks the {s} scope"),
            Self::RateLimited {
                retry_after_secs, ..
            } => format!("too many requests; retry after {retry_after_secs} s"),
            Self::BadRequest { message, .. }
            | Self::Field { message, .. }
            | Self::InputLimit { message, .. } => message.clone(),
            Self::Idempotency { message, .. } => (*message).to_owned(),
            Self::PayloadTooLarge { limit } => {
                format!("the request body exceeds the {limit}-byte limit")
            }
            Self::UnsupportedMediaType { expected } => {
                format!("the Content-Type must be {expected}")
            }
            Self::Unavailable(what) => format!("{what} is temporarily unavailable; retry shortly"),
            Self::Timeout => "the request took too long; retry shortly".into(),
            Self::OAuth { description, .. } => (*description).to_owned(),
            Self::UpgradeRequired => "this endpoint takes a WebSocket upgrade".into(),
            Self::Liveness(r) => r.message().into(),
            Self::Internal(_) => "an internal error occurred".into(),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let request_id = current_request_id();
        if let Self::Internal(detail) = &self {
            tracing::error!(%request_id, detail, "internal error");
        }
        let body = match &self {
            Self::OAuth { description, .. } => {
                json!({ "error": code, "error_description": description, "request_id": request_id })
            }
            Self::Field { field, .. } => json!({
                "success": false,
                "error": { "code": code, "message": self.message(), "field": field },
                "request_id": request_id,
            }),
            _ => {
                json!({ "success": false, "error": { "code": code, "message": self.message() }, "request_id": request_id })
            }
        };
        let mut resp = (status, Json(body)).into_response();
        let h = resp.headers_mut();
        match self {
            Self::TokenMissing => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer realm="kyc""#),
                );
            }
            Self::TokenInvalid => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer realm="kyc", error="invalid_token", error_description="the access token is invalid or expired""#),
                );
            }
            Self::TokenMalformed => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer realm="kyc", error="invalid_request""#),
                );
            }
            Self::InsufficientScope(scope) => {
                let v =
                    format!(r#"Bearer realm="kyc", error="insufficient_scope", scope="{scope}""#);
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_str(&v).expect("scope names are ASCII"),
                );
            }
            Self::RateLimited {
                retry_after_secs,
                headers,
            } => {
                h.extend(headers);
                h.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            Self::Unavailable(_) | Self::Timeout => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Self::UpgradeRequired => {
                h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            }
            Self::OAuth { code, .. } => {
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
                if code == OAuthErrorCode::InvalidClient {
                    h.insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static(r#"Basic realm="kyc""#),
                    );
                }
            }
            _ => {}
        }
        resp
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable => Self::Unavailable("the database"),
            StoreError::Conflict => Self::Internal("unexpected conflict".into()),
            StoreError::Other(detail) => Self::Internal(detail),
        }
    }
}

impl From<KycError> for AppError {
    fn from(e: KycError) -> Self {
        match e {
            KycError::NotFound => Self::NotFound,
            KycError::Store(s) => s.into(),
        }
    }
}

impl From<LivenessError> for AppError {
    fn from(e: LivenessError) -> Self {
        match e {
            LivenessError::Refused(r) => Self::Liveness(r),
            LivenessError::Store(s) => s.into(),
        }
    }
}

impl From<GrantError> for AppError {
    fn from(e: GrantError) -> Self {
        match e {
            GrantError::OAuth { code, description } => Self::OAuth { code, description },
            GrantError::Store(s) => s.into(),
            GrantError::Signing(detail) => Self::Internal(detail),
            GrantError::Busy => Self::Unavailable("the token endpoint"),
        }
    }
}
