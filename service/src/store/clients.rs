//! API clients: who may ask for tokens, with which scopes. Secrets are argon2id hashes.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::store_error;
use crate::kyc::ports::StoreError;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClientRecord {
    pub client_id: String,
    pub display_name: String,
    pub secret_hash: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
}

/// # Errors
/// [`StoreError::Conflict`] when the id exists; otherwise a database failure.
pub async fn create(
    db: &PgPool,
    client_id: &str,
    name: &str,
    secret_hash: &str,
    scopes: &[String],
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO api_clients (client_id, display_name, secret_hash, scopes) VALUES ($1, $2, $3, $4)")
        .bind(client_id)
        .bind(name)
        .bind(secret_hash)
        .bind(scopes)
        .execute(db)
        .await
        .map(|_| ())
        .map_err(|e| store_error(&e))
}

/// Creates the client unless one with this id exists. Returns whether it was created.
///
/// # Errors
/// A database failure.
pub async fn create_if_absent(
    db: &PgPool,
    client_id: &str,
    name: &str,
    secret_hash: &str,
    scopes: &[String],
) -> Result<bool, StoreError> {
    sqlx::query(
        "INSERT INTO api_clients (client_id, display_name, secret_hash, scopes) VALUES ($1, $2, $3, $4)
         ON CONFLICT (client_id) DO NOTHING",
    )
    .bind(client_id)
    .bind(name)
    .bind(secret_hash)
    .bind(scopes)
    .execute(db)
    .await
    .map(|r| r.rows_affected() == 1)
    .map_err(|e| store_error(&e))
}

/// # Errors
/// A database failure.
pub async fn find(db: &PgPool, client_id: &str) -> Result<Option<ClientRecord>, StoreError> {
    sqlx::query_as("SELECT * FROM api_clients WHERE client_id = $1")
        .bind(client_id)
        .fetch_optional(db)
        .await
        .map_err(|e| store_error(&e))
}

/// # Errors
/// A database failure.
pub async fn list(db: &PgPool) -> Result<Vec<ClientRecord>, StoreError> {
    sqlx::query_as("SELECT * FROM api_clients ORDER BY created_at, client_id")
        .fetch_all(db)
        .await
        .map_err(|e| store_error(&e))
}

/// Disables a client and revokes every refresh token it holds. Returns false if no such client.
///
/// # Errors
/// A database failure.
pub async fn disable(db: &PgPool, client_id: &str) -> Result<bool, StoreError> {
    let mut tx = db.begin().await.map_err(|e| store_error(&e))?;
    let found = sqlx::query(
        "UPDATE api_clients SET disabled_at = coalesce(disabled_at, now()) WHERE client_id = $1",
    )
    .bind(client_id)
    .execute(&mut *tx)
    .await
    .map_err(|e| store_error(&e))?
    .rows_affected()
        == 1;
    if found {
        sqlx::query("UPDATE refresh_tokens SET revoked_at = now() WHERE client_id = $1 AND revoked_at IS NULL")
            .bind(client_id)
            .execute(&mut *tx)
            .await
            .map_err(|e| store_error(&e))?;
        super::audit::record(
            &mut *tx,
            "operator",
            "client.disabled",
            Some(client_id),
            None,
            serde_json::json!({}),
        )
        .await?;
    }
    tx.commit().await.map_err(|e| store_error(&e))?;
    Ok(found)
}

/// Whether a client may still use its access tokens, cached briefly so the hot path pays one
/// database look-up per client per `ttl`, not one per request. A disabled client's tokens stop
/// working within `ttl`.
pub struct ActiveClients {
    ttl: std::time::Duration,
    cache: std::sync::RwLock<std::collections::HashMap<String, (bool, std::time::Instant)>>,
}

impl ActiveClients {
    #[must_use]
    pub fn new(ttl: std::time::Duration) -> Self {
        Self {
            ttl,
            cache: std::sync::RwLock::default(),
        }
    }

    /// True for an existing, enabled client. When the database cannot answer, the last known
    /// answer stands (or true): the request then fails on its own database work if it has any.
    pub async fn is_active(&self, db: &PgPool, client_id: &str) -> bool {
        let cached = self
            .cache
            .read()
            .ok()
            .and_then(|c| c.get(client_id).copied());
        if let Some((active, at)) = cached
            && at.elapsed() < self.ttl
        {
            return active;
        }
        let fresh: Result<Option<bool>, sqlx::Error> =
            sqlx::query_scalar("SELECT disabled_at IS NULL FROM api_clients WHERE client_id = $1")
                .bind(client_id)
                .fetch_optional(db)
                .await;
        let active = match fresh {
            Ok(found) => found.unwrap_or(false),
            Err(_) => return cached.is_none_or(|(a, _)| a),
        };
        if let Ok(mut c) = self.cache.write() {
            if c.len() > 10_000 {
                c.clear();
            }
            c.insert(client_id.to_owned(), (active, std::time::Instant::now()));
        }
        active
    }
}
