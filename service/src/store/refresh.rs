//! Refresh tokens: stored as SHA-256 hashes, rotated on every use, with reuse detection that
//! revokes the whole family.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::store_error;
use crate::kyc::ports::StoreError;

#[derive(Debug, Clone)]
pub struct NewRefreshToken {
    pub id: Uuid,
    pub family_id: Uuid,
    pub client_id: String,
    pub token_hash: Vec<u8>,
    pub scopes: Vec<String>,
    pub expires_at: DateTime<Utc>,
}

/// What presenting a refresh token led to.
#[derive(Debug, PartialEq, Eq)]
pub enum Rotation {
    /// The token was live: it is now spent and `next` replaces it, with these scopes.
    Rotated { scopes: Vec<String> },
    /// The token was already spent: its whole family is now revoked.
    ReuseDetected { family_id: Uuid },
    /// Unknown, expired, revoked, or another client's.
    Invalid,
    /// The scopes asked for exceed the ones originally granted; nothing was changed.
    ScopeExceeded,
}

/// # Errors
/// A database failure.
pub async fn insert(db: &PgPool, t: &NewRefreshToken) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO refresh_tokens (id, family_id, client_id, token_hash, scopes, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(t.id)
    .bind(t.family_id)
    .bind(&t.client_id)
    .bind(&t.token_hash)
    .bind(&t.scopes)
    .bind(t.expires_at)
    .execute(db)
    .await
    .map(|_| ())
    .map_err(|e| store_error(&e))
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    family_id: Uuid,
    client_id: String,
    scopes: Vec<String>,
    expires_at: DateTime<Utc>,
    used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

/// Spends the token with hash `presented` for `client_id` and stores `next` in its family, in one
/// transaction. `requested` narrows the scopes; `None` keeps the original ones. `next.family_id`
/// and `next.scopes` are filled in from the spent token.
///
/// # Errors
/// A database failure.
pub async fn rotate(
    db: &PgPool,
    presented: &[u8],
    client_id: &str,
    requested: Option<&[String]>,
    mut next: NewRefreshToken,
) -> Result<Rotation, StoreError> {
    let mut tx = db.begin().await.map_err(|e| store_error(&e))?;
    let row: Option<Row> = sqlx::query_as(
        "SELECT id, family_id, client_id, scopes, expires_at, used_at, revoked_at
         FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE",
    )
    .bind(presented)
    .fetch_optional(&mut *tx)
    .await
    .map_err(|e| store_error(&e))?;
    let Some(row) = row else {
        return Ok(Rotation::Invalid);
    };
    if row.client_id != client_id || row.revoked_at.is_some() {
        return Ok(Rotation::Invalid);
    }
    if row.used_at.is_some() {
        sqlx::query("UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL")
            .bind(row.family_id)
            .execute(&mut *tx)
            .await
            .map_err(|e| store_error(&e))?;
        super::audit::record(
            &mut *tx,
            client_id,
            "refresh_token.reuse_detected",
            Some(client_id),
            None,
            serde_json::json!({ "family_id": row.family_id, "token_id": row.id }),
        )
        .await?;
        tx.commit().await.map_err(|e| store_error(&e))?;
        return Ok(Rotation::ReuseDetected {
            family_id: row.family_id,
        });
    }
    if row.expires_at <= Utc::now() {
        return Ok(Rotation::Invalid);
    }
    let scopes = match requested {
        Some(req) if !req.iter().all(|s| row.scopes.contains(s)) => {
            return Ok(Rotation::ScopeExceeded);
        }
        Some(req) => req.to_vec(),
        None => row.scopes.clone(),
    };
    sqlx::query("UPDATE refresh_tokens SET used_at = now(), replaced_by = $2 WHERE id = $1")
        .bind(row.id)
        .bind(next.id)
        .execute(&mut *tx)
        .await
        .map_err(|e| store_error(&e))?;
    next.family_id = row.family_id;
    // RFC 6749 section 6: the new refresh token keeps the original scope; only the access
    // token is narrowed.
    next.scopes.clone_from(&row.scopes);
    sqlx::query(
        "INSERT INTO refresh_tokens (id, family_id, client_id, token_hash, scopes, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(next.id)
    .bind(next.family_id)
    .bind(&next.client_id)
    .bind(&next.token_hash)
    .bind(&next.scopes)
    .bind(next.expires_at)
    .execute(&mut *tx)
    .await
    .map_err(|e| store_error(&e))?;
    tx.commit().await.map_err(|e| store_error(&e))?;
    Ok(Rotation::Rotated { scopes })
}

/// Deletes refresh tokens expired for more than a day. Returns how many.
///
/// # Errors
/// A database failure.
pub async fn purge_expired(db: &PgPool) -> Result<u64, StoreError> {
    sqlx::query("DELETE FROM refresh_tokens WHERE expires_at < now() - interval '1 day'")
        .execute(db)
        .await
        .map(|r| r.rows_affected())
        .map_err(|e| store_error(&e))
}
