//! Wiring: builds every long-lived part once (pools, keys, token service, metrics) into an
//! `AppState`, prepares the database, and serves with graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::net::TcpListener;

use crate::auth::tokens::TokenService;
use crate::config::Settings;
use crate::crypto::{self, KeyRing};
use crate::kyc::ports::{LivenessSessions, LivenessTickets, RequestStore};
use crate::metrics::Metrics;
use crate::store::clients::ActiveClients;
use crate::store::liveness::PgLivenessSessions;
use crate::store::redis::RedisStore;
use crate::store::requests::PgRequestStore;
use crate::store::{self, clients};
use crate::vendors::VendorSet;

/// The demo client of the seed's section 3.1, created in dev mode only.
pub const DEV_CLIENT_ID: &str = "kyc-client";
pub const DEV_CLIENT_SECRET: &str = "kyc-client-secret";

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot reach PostgreSQL at {0}: {1}")]
    Database(String, String),
    #[error("migrations failed: {0}")]
    Migrations(String),
    #[error("{0}")]
    Setup(String),
}

/// Everything a handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub db: PgPool,
    pub redis: Arc<RedisStore>,
    pub tokens: Arc<TokenService>,
    pub keys: Arc<KeyRing>,
    pub metrics: Arc<Metrics>,
    pub requests: Arc<dyn RequestStore>,
    pub liveness: Arc<dyn LivenessSessions>,
    pub tickets: Arc<dyn LivenessTickets>,
    pub vendors: Arc<VendorSet>,
    pub active_clients: Arc<ActiveClients>,
    /// Accepted KYC work, running on its own tasks: drained on shutdown.
    pub tasks: tokio_util::task::TaskTracker,
    /// How many uploads may be in progress at once.
    pub upload_slots: Arc<tokio::sync::Semaphore>,
    /// Cancelled when the server starts shutting down: long-lived connections (liveness
    /// WebSockets) end then instead of holding the process.
    pub shutdown: tokio_util::sync::CancellationToken,
    pub started: Instant,
}

impl AppState {
    /// Builds the state without touching the network: pools connect lazily.
    ///
    /// # Errors
    /// When the signing key or Redis settings cannot be used.
    pub fn new(settings: Settings) -> Result<Self, StartError> {
        let db = store::pool(&settings.database, settings.http.request_timeout);
        let redis =
            RedisStore::new(&settings.redis).map_err(|e| StartError::Setup(e.to_string()))?;
        let tokens =
            TokenService::new(&settings.security).map_err(|e| StartError::Setup(e.to_string()))?;
        let sec = &settings.security;
        let keys = Arc::new(KeyRing::new(
            &sec.encryption_key,
            &sec.previous_encryption_keys,
            sec.blind_index_key.as_ref(),
        ));
        let metrics = Arc::new(Metrics::new());
        let pg_store = Arc::new(PgRequestStore::new(
            db.clone(),
            keys.clone(),
            metrics.clone(),
            settings.kyc.status_cache_entries,
        ));
        let vendors = VendorSet::new(&settings.third_party, &db, &metrics)
            .map_err(|e| StartError::Setup(e.to_string()))?;
        let redis = Arc::new(redis);
        let liveness = Arc::new(PgLivenessSessions::new(db.clone()));
        Ok(Self {
            settings: Arc::new(settings),
            db,
            tickets: redis.clone(),
            redis,
            tokens: Arc::new(tokens),
            keys,
            metrics,
            requests: pg_store,
            liveness,
            vendors: Arc::new(vendors),
            active_clients: Arc::new(ActiveClients::new(Duration::from_secs(10))),
            tasks: tokio_util::task::TaskTracker::new(),
            upload_slots: Arc::new(tokio::sync::Semaphore::new(UPLOAD_SLOTS)),
            shutdown: tokio_util::sync::CancellationToken::new(),
            started: Instant::now(),
        })
    }

    /// Applies migrations, seeds the dev client in dev mode, and warms the Redis pool.
    ///
    /// # Errors
    /// When PostgreSQL cannot be reached or a migration fails.
    pub async fn prepare(&self) -> Result<(), StartError> {
        let db = &self.settings.database;
        let target = format!("{}:{}/{}", db.host, db.port, db.dbname);
        sqlx::query("SELECT 1")
            .execute(&self.db)
            .await
            .map_err(|e| StartError::Database(target, e.to_string()))?;
        store::migrate(&self.db)
            .await
            .map_err(|e| StartError::Migrations(e.to_string()))?;
        if self.settings.dev_mode {
            let hash = tokio::task::spawn_blocking(|| crypto::hash_secret(DEV_CLIENT_SECRET))
                .await
                .map_err(|e| StartError::Setup(e.to_string()))?
                .map_err(|e| StartError::Setup(e.to_string()))?;
            let scopes = ["kyc:read".to_owned(), "kyc:write".to_owned()];
            if clients::create_if_absent(
                &self.db,
                DEV_CLIENT_ID,
                "seed demo client (dev mode)",
                &hash,
                &scopes,
            )
            .await
            .map_err(|e| StartError::Setup(e.to_string()))?
            {
                tracing::warn!(
                    client_id = DEV_CLIENT_ID,
                    "dev mode: created the demo client with the seed's secret"
                );
            }
        }
        if !self.settings.dev_mode {
            self.retire_dev_client().await?;
        }
        self.redis.warm_up().await;
        let finished = store::requests::finish_abandoned(&self.db, self.abandon_after())
            .await
            .map_err(|e| StartError::Setup(e.to_string()))?;
        if finished > 0 {
            tracing::warn!(
                finished,
                "requests left processing by a stopped process finished as error/INTERRUPTED"
            );
        }
        Ok(())
    }

    /// Outside dev mode, the demo client with its published secret must not work: if a database
    /// used in dev mode is reused, the client is disabled.
    async fn retire_dev_client(&self) -> Result<(), StartError> {
        let Some(c) = clients::find(&self.db, DEV_CLIENT_ID)
            .await
            .map_err(|e| StartError::Setup(e.to_string()))?
        else {
            return Ok(());
        };
        if c.disabled_at.is_some() {
            return Ok(());
        }
        let hash = c.secret_hash.clone();
        let published =
            tokio::task::spawn_blocking(move || crypto::verify_secret(DEV_CLIENT_SECRET, &hash))
                .await
                .map_err(|e| StartError::Setup(e.to_string()))?;
        if published {
            clients::disable(&self.db, DEV_CLIENT_ID)
                .await
                .map_err(|e| StartError::Setup(e.to_string()))?;
            tracing::warn!(
                client_id = DEV_CLIENT_ID,
                "not in dev mode: disabled the demo client, whose secret is published"
            );
        }
        Ok(())
    }

    /// No handler runs longer than the request timeout, so a row `processing` for longer than
    /// this lost its process.
    fn abandon_after(&self) -> Duration {
        self.settings.http.request_timeout + Duration::from_secs(5)
    }

    /// One maintenance pass: finish abandoned requests, purge expired idempotency records, and
    /// refresh the circuit gauges.
    pub async fn maintain(&self) {
        match store::requests::finish_abandoned(&self.db, self.abandon_after()).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                finished = n,
                "abandoned requests finished as error/INTERRUPTED"
            ),
            Err(e) => tracing::warn!(error = %e, "abandoned-request sweep failed"),
        }
        match store::idempotency::purge_expired(&self.db).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "expired idempotency records purged"),
            Err(e) => tracing::warn!(error = %e, "idempotency purge failed"),
        }
        if let Err(e) = store::refresh::purge_expired(&self.db).await {
            tracing::warn!(error = %e, "refresh-token purge failed");
        }
        if let Err(e) = store::liveness::expire_stale(&self.db, self.abandon_after()).await {
            tracing::warn!(error = %e, "liveness session expiry failed");
        }
        self.refresh_circuit_gauges();
    }

    /// Sets `vendor_circuit_state` from the breakers (at every scrape, so a breaker's opening
    /// and closing show at once).
    pub fn refresh_circuit_gauges(&self) {
        let v = &self.vendors;
        for (name, vendor) in [
            ("ocr", &v.ocr),
            ("face", &v.face),
            ("liveness", &v.liveness),
        ] {
            self.metrics
                .vendor_circuit_state
                .with_label_values(&[name])
                .set(vendor.circuit_state());
        }
    }
}

/// Serves the API on `listener` until `shutdown` resolves, then drains in-flight requests for at
/// most `http.shutdown_timeout`.
///
/// # Errors
/// When the listener fails.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = state.settings.http.shutdown_timeout;
    let maintenance_state = state.clone();
    let maintenance = tokio::spawn(async move {
        // Abandoned rows are found about one request timeout after they were orphaned.
        let every = maintenance_state
            .settings
            .http
            .request_timeout
            .clamp(Duration::from_secs(1), MAINTENANCE_EVERY);
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            maintenance_state.maintain().await;
        }
    });
    let _stop_maintenance = AbortOnDrop(maintenance);
    let tasks = state.tasks.clone();
    let request_timeout = state.settings.http.request_timeout;
    let state_shutdown = state.shutdown.clone();
    let app = crate::http::router(state);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let stopping = state_shutdown;
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: draining in-flight requests");
        // Upgraded connections are not the server's to drain: they are told to end.
        stopping.cancel();
        let _ = tx.send(());
    });
    let mut server = std::pin::pin!(server.into_future());
    let served = tokio::select! {
        r = &mut server => r,
        () = async { let _ = rx.await; tokio::time::sleep(grace).await; } => {
            tracing::warn!(?grace, "shutdown grace period over: closing remaining connections");
            Ok(())
        }
    };
    // Accepted KYC work finishes (within its own budget) before the process goes.
    tasks.close();
    if tokio::time::timeout(request_timeout, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            left = tasks.len(),
            "shutdown: accepted requests still running were cut off"
        );
    }
    served
}

const MAINTENANCE_EVERY: Duration = Duration::from_secs(15);

/// Uploads in progress at once (each holds up to a few images in memory).
const UPLOAD_SLOTS: usize = 64;

/// Stops an owned background task when the server stops.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}
