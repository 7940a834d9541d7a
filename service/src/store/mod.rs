//! The outside world's records: PostgreSQL (clients, tokens, KYC requests, audit) and Redis
//! (cluster-wide limits, liveness tickets). Implements the domain's ports; holds all of the service's SQL.

pub mod audit;
pub mod clients;
pub mod idempotency;
pub mod liveness;
pub mod redis;
pub mod refresh;
pub mod requests;
pub mod terminal_cache;
pub mod vendor_calls;

use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};

use crate::config::{DatabaseSettings, SslMode};
use crate::kyc::ports::StoreError;

/// The migrations in `migrations/`, embedded at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Connection options for the configured database (or another database on the same server).
#[must_use]
pub fn connect_options(db: &DatabaseSettings, dbname: &str) -> PgConnectOptions {
    PgConnectOptions::new()
        .host(&db.host)
        .port(db.port)
        .username(&db.user)
        .password(db.password.expose_secret())
        .database(dbname)
        .application_name("kyc-service")
        .ssl_mode(match db.sslmode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require => PgSslMode::Require,
            SslMode::VerifyCa => PgSslMode::VerifyCa,
            SslMode::VerifyFull => PgSslMode::VerifyFull,
        })
}

/// A pool sized from `max_open_conns` / `max_idle_conns`. It connects lazily, so the service can
/// start and report "not ready" while the database is down; every statement is bounded.
#[must_use]
pub fn pool(db: &DatabaseSettings, statement_timeout: Duration) -> PgPool {
    let ms = statement_timeout.as_millis().to_string();
    PgPoolOptions::new()
        .max_connections(db.max_connections)
        .min_connections(db.min_connections)
        .acquire_timeout(db.acquire_timeout)
        .idle_timeout(Some(Duration::from_secs(300)))
        .connect_lazy_with(
            connect_options(db, &db.dbname).options([("statement_timeout", ms.as_str())]),
        )
}

/// Applies every pending migration.
///
/// # Errors
/// When the database cannot be reached or a migration fails.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// The database's answer to "are you there, and fully migrated?".
#[derive(Debug, Clone)]
pub struct DbHealth {
    pub latency: Duration,
    pub applied_version: Option<i64>,
    pub expected_version: i64,
}

/// # Errors
/// When the database cannot be reached.
pub async fn health(pool: &PgPool) -> Result<DbHealth, sqlx::Error> {
    let started = Instant::now();
    let applied: Option<i64> =
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await
            .or_else(|e| match &e {
                // A fresh database with no migration table yet is reachable but unmigrated.
                sqlx::Error::Database(d) if d.code().as_deref() == Some("42P01") => Ok(None),
                _ => Err(e),
            })?;
    Ok(DbHealth {
        latency: started.elapsed(),
        applied_version: applied,
        expected_version: MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0),
    })
}

/// Maps a database error to the domain's, keeping driver detail (which may quote values) out.
pub(crate) fn store_error(e: &sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolClosed => StoreError::Unavailable,
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict,
        // Class 08 (connection exception) and 57P (the server is shutting down, crashed or not
        // yet accepting connections): an outage, as a refused connection is.
        sqlx::Error::Database(d)
            if d.code()
                .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")) =>
        {
            StoreError::Unavailable
        }
        sqlx::Error::Database(d) => {
            StoreError::Other(format!("database error {}", d.code().unwrap_or_default()))
        }
        other => StoreError::Other(other.to_string()),
    }
}
