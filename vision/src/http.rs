//! Routes of the vendor contract that kyc-vision serves: `POST /v1/idcard/ocr` (front and back),
//! `POST /v1/face/compare`, `POST /v1/liveness/check`, `GET /health`, `GET /ready`. The API key, body limit and error body are the contract's, as
//! `kyc-sandbox` serves them; the work runs on the [`Pool`].

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kyc_sandbox::error::ErrorCode;
use kyc_sandbox::vendor::{FaceRequest, OcrRequest, Side};
use serde::Serialize;

use crate::face::FaceError;
use crate::imaging::{self, DecodeLimits, ImageError};
use crate::liveness::{self, Action};
use crate::pool::{Pool, PoolError};
use crate::reader::{self, ReadError};

/// Request bodies larger than this answer 413, as the sandbox does.
pub const MAX_BODY: usize = 16 * 1024 * 1024;
/// `Retry-After` seconds on a full pool.
pub const RETRY_AFTER_SECS: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum VisionError {
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
    #[error("{0}: no face found")]
    NoFaceFound(&'static str),
    #[error("{0}: {1} faces found where one is expected")]
    MultipleFaces(&'static str, usize),
    #[error("every inference worker is busy; retry after {RETRY_AFTER_SECS} s")]
    Busy,
    #[error("no such route")]
    NotFound,
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("internal error")]
    Internal,
}

impl VisionError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::BadRequest(_) | Self::InvalidImage(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NoCardFound(_) | Self::NoFaceFound(_) | Self::MultipleFaces(..) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::Busy => StatusCode::TOO_MANY_REQUESTS,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidImage(_) => ErrorCode::InvalidImage,
            Self::NoCardFound(_) => ErrorCode::NoCardFound,
            Self::NoFaceFound(_) => ErrorCode::NoFaceFound,
            Self::MultipleFaces(..) => ErrorCode::MultipleFaces,
            other => ErrorCode::for_status(other.status()),
        }
    }
}

impl IntoResponse for VisionError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Inner<'a> {
            code: ErrorCode,
            message: &'a str,
        }
        #[derive(Serialize)]
        struct Body<'a> {
            error: Inner<'a>,
        }
        let message = self.to_string();
        let body = Body {
            error: Inner {
                code: self.code(),
                message: &message,
            },
        };
        let mut response = (self.status(), Json(body)).into_response();
        if matches!(self, Self::Busy) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        response
    }
}

/// What the routes share.
#[derive(Clone)]
pub struct AppState {
    pub pool: Pool,
    pub api_keys: Arc<Vec<String>>,
    pub limits: DecodeLimits,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/idcard/ocr", post(ocr))
        .route("/v1/face/compare", post(face))
        .route("/v1/liveness/check", post(liveness))
        .route(
            "/health",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/ready", get(ready))
        .fallback(|| async { VisionError::NotFound })
        .method_not_allowed_fallback(|| async { VisionError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

async fn ready(State(s): State<AppState>) -> impl IntoResponse {
    let c = s.pool.config();
    Json(serde_json::json!({
        "status": "ready",
        "workers": c.workers, "threads": c.threads, "queue": c.queue,
        "in_flight": s.pool.in_flight(),
    }))
}

fn authorised(s: &AppState, headers: &HeaderMap) -> bool {
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|k| s.api_keys.iter().any(|a| a == k))
}

fn image_error(field: &str, e: ImageError) -> VisionError {
    VisionError::InvalidImage(match e {
        ImageError::Base64 => format!("{field}: not valid base64"),
        other => format!("{field}: {other}"),
    })
}

/// The JSON body of a vendor call, after the API key and the body limit.
fn parse<T: serde::de::DeserializeOwned>(
    s: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, VisionError> {
    if !authorised(s, headers) {
        return Err(VisionError::Unauthorized);
    }
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            VisionError::PayloadTooLarge
        } else {
            VisionError::BadRequest(r.body_text())
        }
    })?;
    serde_json::from_slice(&body)
        .map_err(|e| VisionError::BadRequest(format!("invalid JSON body: {e}")))
}

/// One call on the pool, logged with its endpoint, status and time (no image, no field).
async fn answer(
    endpoint: &'static str,
    work: impl Future<Output = Result<serde_json::Value, VisionError>>,
) -> Response {
    let started = Instant::now();
    let result = work.await;
    let status = match &result {
        Ok(_) => StatusCode::OK,
        Err(e) => e.status(),
    };
    tracing::info!(
        endpoint,
        status = status.as_u16(),
        ms = started.elapsed().as_millis() as u64,
        "vendor call"
    );
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

fn pool_error(e: PoolError) -> VisionError {
    match e {
        PoolError::Busy => VisionError::Busy,
        PoolError::Gone => VisionError::Internal,
    }
}

async fn face(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    answer("face", async move {
        let req: FaceRequest = parse(&s, &headers, body)?;
        let limits = s.limits;
        s.pool
            .run(move |m| -> Result<serde_json::Value, VisionError> {
                let a = imaging::decode_base64(&req.image_a, limits)
                    .map_err(|e| image_error("image_a", e))?;
                let b = imaging::decode_base64(&req.image_b, limits)
                    .map_err(|e| image_error("image_b", e))?;
                let (ea, eb) = m.face.embeddings(&a, &b);
                let ea = ea.map_err(|e| face_error("image_a", e))?;
                let eb = eb.map_err(|e| face_error("image_b", e))?;
                let distance = crate::face::distance(&ea, &eb);
                Ok(serde_json::json!({
                    "request_id": uuid::Uuid::new_v4(),
                    "score": (crate::face::score(distance) * 10_000.0).round() / 10_000.0,
                    "distance": (distance * 10_000.0).round() / 10_000.0,
                }))
            })
            .await
            .map_err(pool_error)?
    })
    .await
}

/// `POST /v1/liveness/check`: the contract's body, plus kyc-vision's optional `reference` (the ID
/// card's portrait, or the card itself) that the frames' person must match.
#[derive(serde::Deserialize)]
struct LivenessBody {
    action: Action,
    frames: Vec<String>,
    #[serde(default)]
    reference: Option<String>,
}

fn face_error(field: &'static str, e: FaceError) -> VisionError {
    match e {
        FaceError::NoFace => VisionError::NoFaceFound(field),
        FaceError::MultipleFaces(n) => VisionError::MultipleFaces(field, n),
        FaceError::Model { .. } => VisionError::Internal,
    }
}

async fn liveness(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    answer("liveness", async move {
        let req: LivenessBody = parse(&s, &headers, body)?;
        if !(liveness::MIN_FRAMES..=liveness::MAX_FRAMES).contains(&req.frames.len()) {
            return Err(VisionError::BadRequest(format!(
                "frames: {} given, {} to {} expected",
                req.frames.len(),
                liveness::MIN_FRAMES,
                liveness::MAX_FRAMES
            )));
        }
        let limits = s.limits;
        s.pool
            .run(move |m| -> Result<serde_json::Value, VisionError> {
                let frames = req
                    .frames
                    .iter()
                    .enumerate()
                    .map(|(i, f)| {
                        imaging::decode_base64(f, limits)
                            .map_err(|e| image_error(&format!("frames[{i}]"), e))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let reference = match &req.reference {
                    Some(r) => {
                        let img = imaging::decode_base64(r, limits)
                            .map_err(|e| image_error("reference", e))?;
                        Some(
                            m.face
                                .embedding(&img)
                                .map_err(|e| face_error("reference", e))?,
                        )
                    }
                    None => None,
                };
                let o = liveness::check(&m.face, &frames, req.action, reference.as_deref())
                    .map_err(|_| VisionError::Internal)?;
                Ok(serde_json::json!({
                    "request_id": uuid::Uuid::new_v4(),
                    "passed": o.passed,
                    "score": o.score,
                    "reason": o.reason,
                    "signals": o.signals,
                }))
            })
            .await
            .map_err(pool_error)?
    })
    .await
}

async fn ocr(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    answer("ocr", async move {
        let req: OcrRequest = parse(&s, &headers, body)?;
        let side = req.side.unwrap_or_default();
        let limits = s.limits;
        let today = today();
        s.pool
            .run(move |m| -> Result<serde_json::Value, VisionError> {
                let img = imaging::decode_base64(&req.image, limits)
                    .map_err(|e| image_error("image", e))?;
                let value = match side {
                    Side::Front => {
                        serde_json::to_value(reader::front(&mut m.ocr, &img).map_err(read_error)?)
                    }
                    Side::Back => serde_json::to_value(
                        reader::back(&mut m.ocr, &img, &today).map_err(read_error)?,
                    ),
                };
                value.map_err(|_| VisionError::Internal)
            })
            .await
            .map_err(pool_error)?
    })
    .await
}

fn read_error(e: ReadError) -> VisionError {
    match e {
        ReadError::NoCard(m) => VisionError::NoCardFound(m.to_owned()),
        ReadError::Engine => VisionError::Internal,
    }
}

/// Today in UTC as `YYYY-MM-DD` (for the back's expiry).
fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}
