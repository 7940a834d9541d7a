//! The one error type of the HTTP contract and its one mapping to a response:
//! `{"error":{"code":"…","message":"…"}}` with a stable code.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Stable error codes of the vendor contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Timeout,
    Conflict,
    PayloadTooLarge,
    InvalidImage,
    NoCardFound,
    NoFaceFound,
    /// kyc-vision: more than one face where one is expected.
    MultipleFaces,
    Unprocessable,
    RateLimited,
    ClientError,
    InternalError,
    BadGateway,
    ServiceUnavailable,
    GatewayTimeout,
    ServerError,
}

impl ErrorCode {
    /// The code a forced status answers with.
    #[must_use]
    pub fn for_status(status: StatusCode) -> Self {
        match status.as_u16() {
            400 => Self::BadRequest,
            401 => Self::Unauthorized,
            403 => Self::Forbidden,
            404 => Self::NotFound,
            405 => Self::MethodNotAllowed,
            408 => Self::Timeout,
            409 => Self::Conflict,
            413 => Self::PayloadTooLarge,
            422 => Self::Unprocessable,
            429 => Self::RateLimited,
            500 => Self::InternalError,
            502 => Self::BadGateway,
            503 => Self::ServiceUnavailable,
            504 => Self::GatewayTimeout,
            s if s < 500 => Self::ClientError,
            _ => Self::ServerError,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("missing or wrong X-Api-Key")]
    Unauthorized,
    #[error("{0}")]
    BadRequest(String),
    #[error("the request body is larger than 16 MiB")]
    PayloadTooLarge,
    #[error("{0}")]
    InvalidImage(String),
    #[error("{0}")]
    NoCardFound(String),
    #[error("{0}")]
    NoFaceFound(String),
    #[error("no such route")]
    NotFound,
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("sandbox: injected failure ({0})")]
    Injected(&'static str),
    #[error("sandbox: injected rate limit, retry after {0} s")]
    RateLimited(u64),
    #[error("sandbox: forced status {}", .0.as_u16())]
    Forced(StatusCode),
    #[error("sandbox: held the connection until the sandbox stopped or the hold ended")]
    HoldOver,
    #[error("internal error")]
    Internal,
}

impl SandboxError {
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::BadRequest(_) | Self::InvalidImage(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NoCardFound(_) | Self::NoFaceFound(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Injected(_) | Self::HoldOver => StatusCode::SERVICE_UNAVAILABLE,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Forced(s) => *s,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    #[must_use]
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::BadRequest(_) => ErrorCode::BadRequest,
            Self::InvalidImage(_) => ErrorCode::InvalidImage,
            Self::NoCardFound(_) => ErrorCode::NoCardFound,
            Self::NoFaceFound(_) => ErrorCode::NoFaceFound,
            other => ErrorCode::for_status(other.status()),
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: ErrorCode,
    message: &'a str,
}

impl IntoResponse for SandboxError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        let body = Body {
            error: Inner {
                code: self.code(),
                message: &message,
            },
        };
        let mut response = (self.status(), axum::Json(body)).into_response();
        if let Self::RateLimited(secs) = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
