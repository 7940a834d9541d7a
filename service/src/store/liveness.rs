//! `liveness_sessions` on PostgreSQL: creation within the per-client cap, the one-time move to
//! `active` (with its `liveness` request), the verdict, and `/kyc/verify`'s consumption. Each
//! transition is one atomic statement or transaction, so any number of instances share the table.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::store_error;
use crate::kyc::ports::{Activation, LivenessSessions, NewLivenessSession, StoreError};

pub struct PgLivenessSessions {
    db: PgPool,
}

impl PgLivenessSessions {
    #[must_use]
    pub fn new(db: PgPool) -> Self {
        Self { db }
    }
}

#[async_trait]
impl LivenessSessions for PgLivenessSessions {
    async fn create(&self, s: &NewLivenessSession, max_open: u32) -> Result<bool, StoreError> {
        let mut tx = self.db.begin().await.map_err(|e| store_error(&e))?;
        // One client's creations queue behind each other (on every instance), so the count
        // and the insert see the same sessions.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('liveness_sessions'), hashtext($1))")
            .bind(&s.client_id)
            .execute(&mut *tx)
            .await
            .map_err(|e| store_error(&e))?;
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM liveness_sessions
             WHERE client_id = $1 AND status IN ('created', 'active') AND expires_at > now()",
        )
        .bind(&s.client_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| store_error(&e))?;
        if open >= i64::from(max_open) {
            return Ok(false);
        }
        let actions: Vec<&str> = s.actions.iter().map(|a| a.as_str()).collect();
        sqlx::query(
            "INSERT INTO liveness_sessions (id, client_id, status, actions, nonce, expires_at)
             VALUES ($1, $2, 'created', $3, $4, $5)",
        )
        .bind(s.id)
        .bind(&s.client_id)
        .bind(&actions)
        .bind(&s.nonce)
        .bind(s.expires_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| store_error(&e))?;
        tx.commit().await.map_err(|e| store_error(&e))?;
        Ok(true)
    }

    async fn activate(
        &self,
        client_id: &str,
        session_id: Uuid,
        request_id: Uuid,
    ) -> Result<Activation, StoreError> {
        let mut tx = self.db.begin().await.map_err(|e| store_error(&e))?;
        sqlx::query(
            "INSERT INTO kyc_requests (id, client_id, user_id, request_type, status)
             VALUES ($1, $2, $2, 'liveness', 'processing')",
        )
        .bind(request_id)
        .bind(client_id)
        .execute(&mut *tx)
        .await
        .map_err(|e| store_error(&e))?;
        // A concurrent connection to the same session waits on the row lock and then finds it
        // no longer `created`.
        let row: Option<(Vec<String>, String, DateTime<Utc>)> = sqlx::query_as(
            "UPDATE liveness_sessions SET status = 'active', request_id = $3, updated_at = now()
             WHERE id = $1 AND client_id = $2 AND status = 'created' AND expires_at > now()
             RETURNING actions, nonce, expires_at",
        )
        .bind(session_id)
        .bind(client_id)
        .bind(request_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| store_error(&e))?;
        let Some((actions, nonce, expires_at)) = row else {
            tx.rollback().await.map_err(|e| store_error(&e))?;
            return self.why_not(client_id, session_id).await;
        };
        tx.commit().await.map_err(|e| store_error(&e))?;
        let details = serde_json::json!({ "type": "liveness", "status": "processing", "liveness_session_id": session_id });
        super::audit::record(
            &self.db,
            client_id,
            "kyc_request.processing",
            Some(&request_id.to_string()),
            None,
            details,
        )
        .await?;
        Ok(Activation::Active {
            actions,
            nonce,
            expires_at,
        })
    }

    async fn conclude(
        &self,
        session_id: Uuid,
        passed: bool,
        score: Option<f64>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE liveness_sessions
             SET status = CASE WHEN $2 THEN 'passed' ELSE 'failed' END, score = $3, updated_at = now()
             WHERE id = $1 AND status IN ('created', 'active')",
        )
        .bind(session_id)
        .bind(passed)
        .bind(score)
        .execute(&self.db)
        .await
        .map(|_| ())
        .map_err(|e| store_error(&e))
    }

    async fn consume_passed(
        &self,
        client_id: &str,
        session_id: Uuid,
        request_id: Uuid,
    ) -> Result<bool, StoreError> {
        sqlx::query(
            "UPDATE liveness_sessions SET consumed_at = now(), consumed_by = $3, updated_at = now()
             WHERE id = $1 AND client_id = $2 AND status = 'passed' AND expires_at > now() AND consumed_at IS NULL",
        )
        .bind(session_id)
        .bind(client_id)
        .bind(request_id)
        .execute(&self.db)
        .await
        .map(|r| r.rows_affected() == 1)
        .map_err(|e| store_error(&e))
    }

    async fn release(&self, session_id: Uuid, request_id: Uuid) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE liveness_sessions SET consumed_at = NULL, consumed_by = NULL, updated_at = now()
             WHERE id = $1 AND consumed_by = $2",
        )
        .bind(session_id)
        .bind(request_id)
        .execute(&self.db)
        .await
        .map(|_| ())
        .map_err(|e| store_error(&e))
    }
}

impl PgLivenessSessions {
    /// Why a session could not be activated. Another client's session says only that, not its state.
    async fn why_not(&self, client_id: &str, session_id: Uuid) -> Result<Activation, StoreError> {
        let row: Option<(String, String, bool)> = sqlx::query_as(
            "SELECT client_id, status, expires_at <= now() FROM liveness_sessions WHERE id = $1",
        )
        .bind(session_id)
        .fetch_optional(&self.db)
        .await
        .map_err(|e| store_error(&e))?;
        Ok(match row {
            None => Activation::NotFound,
            Some((owner, _, _)) if owner != client_id => Activation::Foreign,
            Some((_, status, _)) if status == "expired" => Activation::Expired,
            Some((_, status, _)) if status != "created" => Activation::Used,
            Some(_) => Activation::Expired,
        })
    }
}

/// Marks sessions past their expiry `expired`: never-connected ones at once, connected ones
/// (whose process must have died, since a connection ends by its session's expiry) after `grace`.
/// Returns how many.
///
/// # Errors
/// A database failure.
pub async fn expire_stale(db: &PgPool, grace: Duration) -> Result<u64, StoreError> {
    sqlx::query(
        "UPDATE liveness_sessions SET status = 'expired', updated_at = now()
         WHERE (status = 'created' AND expires_at <= now())
            OR (status = 'active' AND expires_at <= now() - make_interval(secs => $1))",
    )
    .bind(grace.as_secs_f64())
    .execute(db)
    .await
    .map(|r| r.rows_affected())
    .map_err(|e| store_error(&e))
}
