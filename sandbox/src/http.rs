//! Routes: the three vendor endpoints (API key, counting, fault injection, then the operation on a
//! blocking thread), the `/sandbox/*` admin API, and `/health`. Handlers hold no image logic.

use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::app::SandboxState;
use crate::error::SandboxError;
use crate::faults::{self, Endpoint, Faults, HeaderFaults, Outcome};
use crate::vendor;

/// Request bodies larger than this answer 413 `PAYLOAD_TOO_LARGE`.
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// The whole sandbox app.
pub fn router(state: SandboxState) -> Router {
    Router::new()
        .route("/v1/idcard/ocr", post(ocr))
        .route("/v1/face/compare", post(face))
        .route("/v1/liveness/check", post(liveness))
        .route(
            "/sandbox/faults",
            get(get_faults).put(put_faults).delete(clear_faults),
        )
        .route("/sandbox/stats", get(stats))
        .route("/sandbox/stats/reset", post(reset_stats))
        .route("/health", get(health))
        .fallback(|| async { SandboxError::NotFound })
        .method_not_allowed_fallback(|| async { SandboxError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

type Body = Result<Bytes, BytesRejection>;

async fn ocr(State(s): State<SandboxState>, headers: HeaderMap, body: Body) -> Response {
    call(s, Endpoint::Ocr, headers, body, |b| vendor::ocr(&json(&b)?)).await
}

async fn face(State(s): State<SandboxState>, headers: HeaderMap, body: Body) -> Response {
    call(s, Endpoint::Face, headers, body, |b| {
        vendor::compare(&json(&b)?)
    })
    .await
}

async fn liveness(State(s): State<SandboxState>, headers: HeaderMap, body: Body) -> Response {
    call(s, Endpoint::Liveness, headers, body, |b| {
        vendor::liveness(&json(&b)?)
    })
    .await
}

fn json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, SandboxError> {
    serde_json::from_slice(bytes)
        .map_err(|e| SandboxError::BadRequest(format!("invalid JSON body: {e}")))
}

fn bytes(body: Body) -> Result<Bytes, SandboxError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            SandboxError::PayloadTooLarge
        } else {
            SandboxError::BadRequest(rejection.body_text())
        }
    })
}

/// One vendor call: API key, counting, faults, then `work` on a blocking thread.
async fn call<R, W>(
    state: SandboxState,
    endpoint: Endpoint,
    headers: HeaderMap,
    body: Body,
    work: W,
) -> Response
where
    R: Serialize + Send + 'static,
    W: FnOnce(Bytes) -> Result<R, SandboxError> + Send + 'static,
{
    if !state.accepts(headers.get("x-api-key")) {
        return SandboxError::Unauthorized.into_response();
    }
    let started = Instant::now();
    state.stats().begin(endpoint);
    let (response, ok, fault) = match answer(&state, endpoint, &headers, body, work).await {
        Ok(Reply::Json(value)) => (Json(value).into_response(), true, None),
        Ok(Reply::Malformed) => (malformed(), false, Some("malformed")),
        Err(e) => {
            let fault = match &e {
                SandboxError::Injected(f) => Some(*f),
                SandboxError::RateLimited(_) => Some("rate_limit"),
                SandboxError::Forced(_) => Some("status"),
                SandboxError::HoldOver => Some("timeout"),
                _ => None,
            };
            (e.into_response(), false, fault)
        }
    };
    // A held call was counted as failed when its hold began.
    if fault != Some("timeout") {
        state.stats().finish(endpoint, ok);
    }
    tracing::info!(
        endpoint = endpoint.as_str(),
        status = response.status().as_u16(),
        ms = started.elapsed().as_millis() as u64,
        fault = fault.unwrap_or("none"),
        "vendor call"
    );
    response
}

enum Reply<R> {
    Json(R),
    Malformed,
}

async fn answer<R, W>(
    state: &SandboxState,
    endpoint: Endpoint,
    headers: &HeaderMap,
    body: Body,
    work: W,
) -> Result<Reply<R>, SandboxError>
where
    R: Serialize + Send + 'static,
    W: FnOnce(Bytes) -> Result<R, SandboxError> + Send + 'static,
{
    let body = bytes(body)?;
    let overrides = HeaderFaults::from_headers(headers).map_err(SandboxError::BadRequest)?;
    let (latency, outcome) = state.decide(endpoint, &overrides, rand::random::<f64>());
    if latency > 0 {
        // Like a held call, injected latency ends early when the sandbox is stopping.
        state.hold(Duration::from_millis(latency)).await;
    }
    match outcome {
        Outcome::Proceed => {}
        Outcome::Hold => {
            state.stats().finish(endpoint, false);
            let _held = state.stats().hold();
            state.hold(Duration::from_millis(faults::MAX_HOLD_MS)).await;
            return Err(SandboxError::HoldOver);
        }
        Outcome::RateLimited(secs) => return Err(SandboxError::RateLimited(secs)),
        Outcome::Status(code) => {
            let status = StatusCode::from_u16(code).map_err(|_| SandboxError::Internal)?;
            return Err(SandboxError::Forced(status));
        }
        Outcome::FailFirst => return Err(SandboxError::Injected("fail_first")),
        Outcome::ErrorRate => return Err(SandboxError::Injected("error_rate")),
        Outcome::Malformed => return Ok(Reply::Malformed),
    }
    tokio::task::spawn_blocking(move || work(body))
        .await
        .map_err(|_| SandboxError::Internal)?
        .map(Reply::Json)
}

/// A 200 whose body starts like the real answer and stops mid-way: not JSON.
fn malformed() -> Response {
    let body = format!(
        "{{\"request_id\":\"{}\",\"sandbox\":\"malformed resp",
        uuid::Uuid::new_v4()
    );
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

async fn get_faults(State(s): State<SandboxState>) -> Json<Faults> {
    Json(s.faults())
}

async fn put_faults(
    State(s): State<SandboxState>,
    body: Body,
) -> Result<Json<Faults>, SandboxError> {
    let faults =
        Faults::from_json(&bytes(body)?).map_err(|e| SandboxError::BadRequest(e.to_string()))?;
    s.set_faults(faults.clone());
    tracing::info!(?faults, "faults set");
    Ok(Json(faults))
}

async fn clear_faults(State(s): State<SandboxState>) -> Json<Faults> {
    s.set_faults(Faults::default());
    tracing::info!("faults cleared");
    Json(Faults::default())
}

async fn stats(State(s): State<SandboxState>) -> impl IntoResponse {
    Json(s.stats().snapshot())
}

async fn reset_stats(State(s): State<SandboxState>) -> impl IntoResponse {
    s.stats().reset();
    Json(s.stats().snapshot())
}

async fn health() -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok", "sandbox": true}))
}
