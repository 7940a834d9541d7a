//! `kyc_requests` on PostgreSQL. Name, ID number and phone are written only as AES-256-GCM
//! ciphertext plus HMAC blind indexes; nothing here ever binds a plaintext PII value.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::store_error;
use super::terminal_cache::{Lookup, TerminalCache};
use crate::crypto::KeyRing;
use crate::kyc::model::{KycRequestView, NewKycRequest, ReasonCode, RequestType, Status};
use crate::kyc::ports::{RequestStore, StoreError};
use crate::metrics::Metrics;

pub const NAME_FIELD: &str = "kyc_requests.name_enc";
pub const ID_NUMBER_FIELD: &str = "kyc_requests.id_number_enc";
pub const PHONE_FIELD: &str = "kyc_requests.phone_enc";

/// The associated data of an encrypted column of one row: column name and row id.
#[must_use]
pub fn aad(field: &str, id: Uuid) -> String {
    format!("{field}:{id}")
}

pub struct PgRequestStore {
    db: PgPool,
    keys: Arc<KeyRing>,
    metrics: Arc<Metrics>,
    /// Terminal rows never change: the status query reads them once.
    terminal: TerminalCache,
}

impl PgRequestStore {
    /// `status_cache_entries`: terminal statuses kept in memory per generation (0: none).
    #[must_use]
    pub fn new(
        db: PgPool,
        keys: Arc<KeyRing>,
        metrics: Arc<Metrics>,
        status_cache_entries: usize,
    ) -> Self {
        Self {
            db,
            keys,
            metrics,
            terminal: TerminalCache::new(status_cache_entries),
        }
    }
}

#[derive(sqlx::FromRow)]
struct ViewRow {
    id: Uuid,
    user_id: String,
    request_type: String,
    status: String,
    reasons: Vec<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[async_trait]
impl RequestStore for PgRequestStore {
    async fn create(&self, r: &NewKycRequest) -> Result<(), StoreError> {
        let k = &self.keys;
        sqlx::query(
            "INSERT INTO kyc_requests (id, client_id, user_id, request_type, status, name_enc, id_number_enc,
                 phone_enc, id_number_bidx, phone_bidx, idempotency_key)
             VALUES ($1, $2, $3, $4, 'processing', $5, $6, $7, $8, $9, $10)",
        )
        .bind(r.id)
        .bind(&r.client_id)
        .bind(&r.user_id)
        .bind(r.request_type.as_str())
        .bind(r.name.as_ref().map(|n| k.encrypt(&aad(NAME_FIELD, r.id), n.expose().as_bytes())))
        .bind(r.id_number.as_ref().map(|n| k.encrypt(&aad(ID_NUMBER_FIELD, r.id), n.expose().as_bytes())))
        .bind(r.phone.as_ref().map(|p| k.encrypt(&aad(PHONE_FIELD, r.id), p.expose().as_bytes())))
        .bind(r.id_number.as_ref().map(|n| k.blind_index(ID_NUMBER_FIELD, n.expose())))
        .bind(r.phone.as_ref().map(|p| k.blind_index(PHONE_FIELD, p.expose())))
        .bind(r.idempotency_key.as_deref().map(|k| hex::encode(crate::crypto::sha256(k.as_bytes()))))
        .execute(&self.db)
        .await
        .map_err(|e| store_error(&e))?;
        let details =
            serde_json::json!({ "type": r.request_type.as_str(), "status": "processing" });
        super::audit::record(
            &self.db,
            &r.client_id,
            "kyc_request.processing",
            Some(&r.id.to_string()),
            None,
            details,
        )
        .await
    }

    async fn finish(
        &self,
        id: Uuid,
        status: Status,
        reasons: &[ReasonCode],
        result: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        debug_assert!(status.is_terminal(), "finish takes a terminal status");
        let reasons: Vec<&str> = reasons.iter().map(|r| r.as_str()).collect();
        let kind: Option<String> = sqlx::query_scalar(
            "UPDATE kyc_requests SET status = $2, reasons = $3, result = $4, updated_at = now(), completed_at = now()
             WHERE id = $1 AND status IN ('pending', 'processing') RETURNING request_type",
        )
        .bind(id)
        .bind(status.as_str())
        .bind(&reasons)
        .bind(result)
        .fetch_optional(&self.db)
        .await
        .map_err(|e| store_error(&e))?;
        if let Some(kind) = &kind {
            self.metrics
                .kyc_requests_total
                .with_label_values(&[kind.as_str(), status.as_str()])
                .inc();
        }
        Ok(kind.is_some())
    }

    async fn verdict_of(&self, id: Uuid) -> Result<Option<(Status, Vec<ReasonCode>)>, StoreError> {
        let row: Option<(String, Vec<String>)> =
            sqlx::query_as("SELECT status, reasons FROM kyc_requests WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.db)
                .await
                .map_err(|e| store_error(&e))?;
        Ok(row.and_then(|(status, reasons)| {
            let reasons = reasons
                .iter()
                .filter_map(|r| serde_json::from_value(serde_json::json!(r)).ok())
                .collect();
            Status::parse(&status).map(|s| (s, reasons))
        }))
    }

    async fn find_for_client(
        &self,
        client_id: &str,
        id: Uuid,
    ) -> Result<Option<KycRequestView>, StoreError> {
        match self.terminal.get(client_id, id) {
            Lookup::Hit(view) => return Ok(Some(view)),
            Lookup::Foreign => return Ok(None),
            Lookup::Miss => {}
        }
        let row: Option<ViewRow> = sqlx::query_as(
            "SELECT id, user_id, request_type, status, reasons, created_at, updated_at
             FROM kyc_requests WHERE id = $1 AND client_id = $2",
        )
        .bind(id)
        .bind(client_id)
        .fetch_optional(&self.db)
        .await
        .map_err(|e| store_error(&e))?;
        row.map(|r| {
            Ok(KycRequestView {
                id: r.id,
                user_id: r.user_id,
                request_type: RequestType::parse(&r.request_type).ok_or_else(|| {
                    StoreError::Other(format!("unknown request_type {}", r.request_type))
                })?,
                status: Status::parse(&r.status)
                    .ok_or_else(|| StoreError::Other(format!("unknown status {}", r.status)))?,
                reasons: r.reasons,
                created_at: r.created_at,
                updated_at: r.updated_at,
            })
        })
        .transpose()
        .inspect(|view| {
            if let Some(v) = view {
                self.terminal.put(client_id, v);
            }
        })
    }
}

/// Finishes requests left `processing` for longer than any handler can run: their process died
/// or was killed. They end as `error` with `INTERRUPTED`. Returns how many. A `liveness` request
/// lives as long as its connection, which ends by its session's expiry: it is left alone until then.
///
/// # Errors
/// A database failure.
pub async fn finish_abandoned(
    db: &PgPool,
    older_than: std::time::Duration,
) -> Result<u64, StoreError> {
    // The liveness sessions they had taken are given back: no verdict on the person was reached.
    sqlx::query_scalar::<_, i64>(
        "WITH done AS (
             UPDATE kyc_requests SET status = 'error', reasons = ARRAY['INTERRUPTED'], updated_at = now(), completed_at = now()
             WHERE status IN ('pending', 'processing') AND updated_at < now() - make_interval(secs => $1)
               AND NOT EXISTS (
                   SELECT 1 FROM liveness_sessions s
                   WHERE s.request_id = kyc_requests.id AND s.status = 'active'
                     AND s.expires_at > now() - make_interval(secs => $1))
             RETURNING id),
         freed AS (
             UPDATE liveness_sessions SET consumed_at = NULL, consumed_by = NULL, updated_at = now()
             WHERE consumed_by IN (SELECT id FROM done) RETURNING id)
         SELECT count(*) FROM done",
    )
    .bind(older_than.as_secs_f64())
    .fetch_one(db)
    .await
    .map(|n| u64::try_from(n).unwrap_or(0))
    .map_err(|e| store_error(&e))
}
