//! The append-only audit log. Details carry ids and codes, never PII.

use serde_json::Value;
use sqlx::{PgExecutor, PgPool};

use super::store_error;
use crate::kyc::ports::StoreError;

/// Appends one event. `actor` is a client id or `system`/`operator`.
///
/// # Errors
/// When the database refuses the write.
pub async fn record<'e, E: PgExecutor<'e>>(
    db: E,
    actor: &str,
    action: &str,
    subject: Option<&str>,
    request_id: Option<&str>,
    details: Value,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO audit_events (actor, action, subject, request_id, details) VALUES ($1, $2, $3, $4, $5)")
        .bind(actor)
        .bind(action)
        .bind(subject)
        .bind(request_id)
        .bind(details)
        .execute(db)
        .await
        .map(|_| ())
        .map_err(|e| store_error(&e))
}

/// The newest `limit` actions recorded about `subject`, newest first.
///
/// # Errors
/// When the database cannot be read.
pub async fn actions_for(
    db: &PgPool,
    subject: &str,
    limit: i64,
) -> Result<Vec<String>, StoreError> {
    sqlx::query_scalar(
        "SELECT action FROM audit_events WHERE subject = $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(subject)
    .bind(limit)
    .fetch_all(db)
    .await
    .map_err(|e| store_error(&e))
}
