//! The authoritative Idempotency-Key store (IETF httpapi draft), unique per client and key, in
//! PostgreSQL so it is correct across instances and survives Redis outages. Stored response
//! bodies may hold PII (an OCR result), so they are encrypted.

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use super::store_error;
use crate::crypto::KeyRing;
use crate::kyc::ports::StoreError;

const BODY_FIELD: &str = "idempotency_records.response_body_enc";

/// A stored answer, replayed as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Begin {
    /// This request holds the key now (under this owner token): run it, then `complete` or `release`.
    Proceed(Uuid),
    /// A finished request with the same key and payload: replay its answer.
    Replay(StoredResponse),
    /// The first request with this key is still running.
    InFlight,
    /// The key was used with a different payload.
    Mismatch,
}

#[derive(sqlx::FromRow)]
struct Existing {
    fingerprint: Vec<u8>,
    state: String,
    response_status: Option<i32>,
    response_headers: Option<serde_json::Value>,
    response_body_enc: Option<Vec<u8>>,
}

/// Claims `key` for `client_id`, or says why not. An expired record, or an in-flight one older
/// than `lock_timeout` (its process died), is taken over.
///
/// # Errors
/// A database failure, or a stored body that no configured key opens.
pub async fn begin(
    db: &PgPool,
    keys: &KeyRing,
    client_id: &str,
    key: &str,
    fingerprint: &[u8],
    ttl: Duration,
    lock_timeout: Duration,
) -> Result<Begin, StoreError> {
    let owner = Uuid::new_v4();
    for _ in 0..3 {
        let claimed: Option<bool> = sqlx::query_scalar(
            "INSERT INTO idempotency_records (client_id, idempotency_key, fingerprint, state, expires_at, owner)
             VALUES ($1, $2, $3, 'in_flight', now() + make_interval(secs => $4), $6)
             ON CONFLICT (client_id, idempotency_key) DO UPDATE
               SET fingerprint = EXCLUDED.fingerprint, state = 'in_flight', created_at = now(), owner = EXCLUDED.owner,
                   expires_at = EXCLUDED.expires_at, request_id = NULL, response_status = NULL,
                   response_headers = NULL, response_body_enc = NULL, completed_at = NULL
               WHERE idempotency_records.expires_at < now()
                  OR (idempotency_records.state = 'in_flight'
                      AND idempotency_records.fingerprint = EXCLUDED.fingerprint
                      AND idempotency_records.created_at < now() - make_interval(secs => $5))
             RETURNING true",
        )
        .bind(client_id)
        .bind(key)
        .bind(fingerprint)
        .bind(ttl.as_secs_f64())
        .bind(lock_timeout.as_secs_f64())
        .bind(owner)
        .fetch_optional(db)
        .await
        .map_err(|e| store_error(&e))?;
        if claimed.is_some() {
            return Ok(Begin::Proceed(owner));
        }
        let existing: Option<Existing> = sqlx::query_as(
            "SELECT fingerprint, state, response_status, response_headers, response_body_enc
             FROM idempotency_records WHERE client_id = $1 AND idempotency_key = $2",
        )
        .bind(client_id)
        .bind(key)
        .fetch_optional(db)
        .await
        .map_err(|e| store_error(&e))?;
        // Released between the two statements: try to claim it again.
        let Some(e) = existing else { continue };
        if e.fingerprint != fingerprint {
            return Ok(Begin::Mismatch);
        }
        if e.state == "in_flight" {
            return Ok(Begin::InFlight);
        }
        let body = match e.response_body_enc {
            Some(blob) => keys
                .decrypt(BODY_FIELD, &blob)
                .map_err(|err| StoreError::Other(err.to_string()))?,
            None => Vec::new(),
        };
        let content_type = e
            .response_headers
            .as_ref()
            .and_then(|h| h["content-type"].as_str())
            .unwrap_or("application/json")
            .to_owned();
        return Ok(Begin::Replay(StoredResponse {
            status: e
                .response_status
                .and_then(|s| u16::try_from(s).ok())
                .unwrap_or(200),
            content_type,
            body,
        }));
    }
    Ok(Begin::InFlight)
}

/// Stores the answer for replays.
///
/// # Errors
/// A database failure.
pub async fn complete(
    db: &PgPool,
    keys: &KeyRing,
    client_id: &str,
    key: &str,
    owner: Uuid,
    request_id: Option<Uuid>,
    response: &StoredResponse,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE idempotency_records SET state = 'completed', completed_at = now(), request_id = $3,
             response_status = $4, response_headers = $5, response_body_enc = $6
         WHERE client_id = $1 AND idempotency_key = $2 AND state = 'in_flight' AND owner = $7",
    )
    .bind(client_id)
    .bind(key)
    .bind(request_id)
    .bind(i32::from(response.status))
    .bind(serde_json::json!({ "content-type": response.content_type }))
    .bind(keys.encrypt(BODY_FIELD, &response.body))
    .bind(owner)
    .execute(db)
    .await
    .map(|_| ())
    .map_err(|e| store_error(&e))
}

/// Forgets the key so a retry can go through (after a 5xx, which is never stored).
///
/// # Errors
/// A database failure.
pub async fn release(
    db: &PgPool,
    client_id: &str,
    key: &str,
    owner: Uuid,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM idempotency_records WHERE client_id = $1 AND idempotency_key = $2 AND state = 'in_flight' AND owner = $3")
        .bind(client_id)
        .bind(key)
        .bind(owner)
        .execute(db)
        .await
        .map(|_| ())
        .map_err(|e| store_error(&e))
}

/// Deletes expired records. Returns how many.
///
/// # Errors
/// A database failure.
pub async fn purge_expired(db: &PgPool) -> Result<u64, StoreError> {
    sqlx::query("DELETE FROM idempotency_records WHERE expires_at < now()")
        .execute(db)
        .await
        .map(|r| r.rows_affected())
        .map_err(|e| store_error(&e))
}
