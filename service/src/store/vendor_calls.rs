//! `vendor_calls`: one row per attempt at a vendor. Codes and timings only, never payloads.

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use super::store_error;
use crate::kyc::ports::StoreError;

/// # Errors
/// A database failure.
#[allow(clippy::too_many_arguments)]
pub async fn record(
    db: &PgPool,
    request_id: Uuid,
    vendor: &str,
    attempt: u32,
    outcome: &str,
    http_status: Option<u16>,
    error_code: Option<&str>,
    latency: Duration,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO vendor_calls (request_id, vendor, attempt, outcome, http_status, error_code, latency_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(request_id)
    .bind(vendor)
    .bind(i32::try_from(attempt).unwrap_or(i32::MAX))
    .bind(outcome)
    .bind(http_status.map(i32::from))
    .bind(error_code)
    .bind(i32::try_from(latency.as_millis()).unwrap_or(i32::MAX))
    .execute(db)
    .await
    .map(|_| ())
    .map_err(|e| store_error(&e))
}

/// (attempt, outcome) of every call made for `request_id`, in order.
///
/// # Errors
/// A database failure.
pub async fn for_request(
    db: &PgPool,
    request_id: Uuid,
) -> Result<Vec<(String, i32, String)>, StoreError> {
    sqlx::query_as(
        "SELECT vendor, attempt, outcome FROM vendor_calls WHERE request_id = $1 ORDER BY id",
    )
    .bind(request_id)
    .fetch_all(db)
    .await
    .map_err(|e| store_error(&e))
}
