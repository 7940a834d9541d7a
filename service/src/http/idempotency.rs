//! The service's `Idempotency-Key` handling on its POST endpoints, backed by PostgreSQL: a replay
//! returns the stored answer with `Idempotent-Replayed: true`; the same key in flight is 409; with
//! another payload 422; a malformed key 400. 5xx answers are never stored, so a retry goes through.

use std::future::Future;

use axum::body::{Body, to_bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use crate::app::AppState;
use crate::error::AppError;
use crate::store::idempotency::{self, Begin, StoredResponse};

/// Stored answers are bounded; larger ones (none today) would not be kept.
const MAX_STORED_BODY: usize = 1024 * 1024;

/// The key from the headers: `None` when absent; 400 when malformed (1-255 visible ASCII characters).
///
/// # Errors
/// [`AppError::Idempotency`] 400 for a malformed key.
pub fn key(headers: &HeaderMap) -> Result<Option<String>, AppError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bad = || AppError::Idempotency {
        status: StatusCode::BAD_REQUEST,
        code: "IDEMPOTENCY_KEY_INVALID",
        message: "the Idempotency-Key must be 1 to 255 visible ASCII characters",
    };
    let s = v.to_str().map_err(|_| bad())?.trim_matches('"');
    if s.is_empty() || s.len() > 255 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad());
    }
    Ok(Some(s.to_owned()))
}

/// Runs `work` at most once per client and key. `work` yields the response and, for accepted
/// requests, the KYC request id to link the record to.
///
/// # Errors
/// The idempotency refusals, or a store failure.
pub async fn guard<F, Fut>(
    st: &AppState,
    client_id: &str,
    key: Option<String>,
    fingerprint: Vec<u8>,
    work: F,
) -> Result<Response, AppError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = (Response, Option<Uuid>)>,
{
    let Some(key) = key else {
        return Ok(work().await.0);
    };
    let ttl = std::time::Duration::from_secs(24 * 3600);
    let lock = st.settings.http.request_timeout + std::time::Duration::from_secs(5);
    let m = &st.metrics.idempotency_total;
    match idempotency::begin(&st.db, &st.keys, client_id, &key, &fingerprint, ttl, lock).await? {
        Begin::Replay(stored) => {
            m.with_label_values(&["replayed"]).inc();
            let mut resp = (
                StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK),
                stored.body,
            )
                .into_response();
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_str(&stored.content_type)
                    .unwrap_or(HeaderValue::from_static("application/json")),
            );
            h.insert("idempotent-replayed", HeaderValue::from_static("true"));
            Ok(resp)
        }
        Begin::InFlight => {
            m.with_label_values(&["conflict"]).inc();
            Err(AppError::Idempotency {
                status: StatusCode::CONFLICT,
                code: "IDEMPOTENCY_IN_FLIGHT",
                message: "a request with this Idempotency-Key is still being processed; retry later",
            })
        }
        Begin::Mismatch => {
            m.with_label_values(&["mismatch"]).inc();
            Err(AppError::Idempotency {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: "IDEMPOTENCY_KEY_REUSED",
                message: "this Idempotency-Key was used with a different request payload",
            })
        }
        Begin::Proceed(owner) => {
            let (resp, request_id) = work().await;
            let (parts, body) = resp.into_parts();
            let bytes = match to_bytes(body, MAX_STORED_BODY).await {
                Ok(b) => b,
                Err(_) => {
                    idempotency::release(&st.db, client_id, &key, owner).await?;
                    return Err(AppError::Internal("response too large to store".into()));
                }
            };
            if parts.status.is_server_error() {
                idempotency::release(&st.db, client_id, &key, owner).await?;
            } else {
                let content_type = parts
                    .headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("application/json")
                    .to_owned();
                let stored = StoredResponse {
                    status: parts.status.as_u16(),
                    content_type,
                    body: bytes.to_vec(),
                };
                // The work is done: its answer goes to the client even if it cannot be stored
                // (a retry then finds the key in flight until the lock times out).
                match idempotency::complete(
                    &st.db, &st.keys, client_id, &key, owner, request_id, &stored,
                )
                .await
                {
                    Ok(()) => m.with_label_values(&["stored"]).inc(),
                    Err(e) => tracing::warn!(error = %e, "idempotent answer not stored"),
                }
            }
            Ok(Response::from_parts(parts, Body::from(bytes)))
        }
    }
}
