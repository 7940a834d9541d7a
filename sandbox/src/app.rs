//! Wiring: the sandbox's configuration, its shared state, and serving it on a listener the caller
//! binds (tests bind port 0), with graceful shutdown that also releases held calls.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::http::HeaderValue;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::faults::{self, Endpoint, Faults, HeaderFaults, Outcome};
use crate::stats::Stats;

/// The API keys the seed's `config.yaml` gives the three vendors.
pub const SEED_API_KEYS: [&str; 3] = ["ocr-api-key", "face-api-key", "liveness-api-key"];

/// How the sandbox starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Accepted `X-Api-Key` values, any of them on any endpoint.
    pub api_keys: Vec<String>,
    /// Faults in force from the start.
    pub faults: Faults,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            api_keys: SEED_API_KEYS.iter().map(|k| (*k).to_owned()).collect(),
            faults: Faults::default(),
        }
    }
}

/// Everything a handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct SandboxState {
    inner: Arc<Inner>,
}

struct Inner {
    api_keys: Vec<String>,
    faults: Mutex<Faults>,
    stats: Stats,
    stopping: watch::Sender<bool>,
}

impl SandboxState {
    #[must_use]
    pub fn new(config: Config) -> Self {
        Self {
            inner: Arc::new(Inner {
                api_keys: config.api_keys,
                faults: Mutex::new(config.faults),
                stats: Stats::default(),
                stopping: watch::Sender::new(false),
            }),
        }
    }

    pub(crate) fn accepts(&self, key: Option<&HeaderValue>) -> bool {
        key.and_then(|k| k.to_str().ok())
            .is_some_and(|k| self.inner.api_keys.iter().any(|a| a == k))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Faults> {
        // The faults are plain data, valid even if a holder panicked.
        self.inner
            .faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    #[must_use]
    pub fn faults(&self) -> Faults {
        self.lock().clone()
    }

    pub fn set_faults(&self, faults: Faults) {
        *self.lock() = faults;
    }

    pub(crate) fn decide(
        &self,
        endpoint: Endpoint,
        headers: &HeaderFaults,
        draw: f64,
    ) -> (u64, Outcome) {
        faults::decide(self.lock().get_mut(endpoint), headers, draw)
    }

    #[must_use]
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// Waits `max`, or until the sandbox shuts down.
    pub(crate) async fn hold(&self, max: Duration) {
        let mut stopping = self.inner.stopping.subscribe();
        tokio::select! {
            () = tokio::time::sleep(max) => {}
            _ = stopping.wait_for(|s| *s) => {}
        }
    }

    /// Releases every held call (at shutdown).
    pub fn stop_holding(&self) {
        self.inner.stopping.send_replace(true);
    }
}

/// Serves the sandbox on `listener` until `shutdown` resolves, then drains in-flight calls
/// (held calls are answered 503 at once).
///
/// # Errors
/// When the listener fails.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_state(listener, SandboxState::new(config), shutdown).await
}

async fn serve_state(
    listener: TcpListener,
    state: SandboxState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = crate::http::router(state.clone());
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            state.stop_holding();
        })
        .await
}

/// A sandbox running in this process on 127.0.0.1 and an ephemeral port, for tests (of this crate
/// and others). Dropping it stops the server.
pub struct RunningSandbox {
    addr: SocketAddr,
    state: SandboxState,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// Starts a sandbox on 127.0.0.1:0.
///
/// # Errors
/// When no port can be bound.
pub async fn spawn(config: Config) -> std::io::Result<RunningSandbox> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let state = SandboxState::new(config);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_state(listener, state.clone(), async move {
        let _ = stopped.await;
    }));
    Ok(RunningSandbox {
        addr,
        state,
        stop: Some(stop),
        task: Some(task),
    })
}

impl RunningSandbox {
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, the base URL of all three vendors.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The live state: faults and stats without going through HTTP.
    #[must_use]
    pub fn state(&self) -> &SandboxState {
        &self.state
    }

    /// Stops the server and waits until it has drained.
    ///
    /// # Errors
    /// When the server had failed.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningSandbox {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
