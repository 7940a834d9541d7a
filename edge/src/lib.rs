//! kyc-edge: a small proxy-wasm host on wasmtime that stands in for Kong 3.9 in development and
//! tests. It loads the same `.wasm` filters from the same directory, reads the same
//! `declarative/kong.yaml` and `kong/kong.conf`, and answers on Kong's ports with Kong's error
//! bodies, forwarding headers, Admin API shapes and metric names. It is a development host, not a
//! product: see `edge/README.md` for what it does not do.

pub mod access_log;
pub mod admin;
pub mod conf;
pub mod declarative;
pub mod guard;
pub mod metrics;
pub mod path;
pub mod proxy;
pub mod router;
pub mod shm;
pub mod wasm;
pub mod websocket;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::conf::{ClientAddress, KongConf, Limits};
use crate::declarative::Declarative;
use crate::metrics::Metrics;
use crate::router::Plan;
use crate::shm::Shm;
use crate::wasm::{Host, Workers};

/// Kong's default request body limit is unlimited; the edge keeps one, since it buffers bodies.
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Options {
    pub declarative: PathBuf,
    pub filters: PathBuf,
    pub kong_conf: KongConf,
    pub proxy_listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub workers: usize,
    /// Upstream host name → address to connect to (the compose names, e.g. `kyc-service`).
    pub resolve: HashMap<String, String>,
    pub max_body_bytes: usize,
    /// Kong's `proxy_access_log`; `None` writes none.
    pub access_log: Option<PathBuf>,
    /// The Admin API token (`Kong-Admin-Token` header). Required when `admin_listen` is not a
    /// loopback address; when set, every Admin API request must carry it.
    pub admin_token: Option<String>,
}

pub struct Edge {
    plan: RwLock<Arc<Plan>>,
    generation: AtomicU64,
    pub workers: Workers,
    pub metrics: Arc<Metrics>,
    pub shm: Arc<Shm>,
    pub client: Client<HttpConnector, Full<Bytes>>,
    resolve: HashMap<String, String>,
    pub max_body_bytes: usize,
    pub limits: Limits,
    pub client_address: ClientAddress,
    pub declarative_path: PathBuf,
    pub(crate) access_log: Option<access_log::AccessLog>,
    pub(crate) next_worker: AtomicUsize,
    /// Serialises configuration changes from the Admin API.
    pub(crate) config_lock: tokio::sync::Mutex<()>,
}

impl Edge {
    pub fn plan(&self) -> Arc<Plan> {
        Arc::clone(
            &self
                .plan
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    pub fn resolve<'a>(&'a self, host: &'a str) -> &'a str {
        self.resolve.get(host).map_or(host, String::as_str)
    }

    pub fn host(&self) -> &Arc<Host> {
        self.workers.host()
    }

    /// Parses a declarative file's text against the loaded filters.
    pub fn parse(&self, text: &str) -> anyhow::Result<Declarative> {
        Declarative::parse(text, &self.host().filter_names())
    }

    /// Runs every enabled filter's `on_configure` on its config; the first refusal, located.
    pub fn check_configs(&self, decl: &Declarative) -> Result<(), String> {
        for c in decl.filter_chains.iter().filter(|c| c.enabled) {
            for (i, f) in c.filters.iter().enumerate().filter(|(_, f)| f.enabled) {
                if let Err(why) = self.host().validate(&f.name, &f.config_bytes()) {
                    let chain = c.name.clone().unwrap_or_else(|| c.id.to_string());
                    return Err(format!(
                        "filter chain {chain:?}, filters[{i}] ({}): {why}",
                        f.name
                    ));
                }
            }
        }
        Ok(())
    }

    /// Makes `decl` the running configuration; the next request of every worker uses it.
    pub fn install(&self, decl: Declarative) -> anyhow::Result<()> {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let plan = Arc::new(Plan::new(decl, generation)?);
        *self
            .plan
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = plan;
        Ok(())
    }
}

/// A running edge. Dropping it stops its listeners.
pub struct Running {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub edge: Arc<Edge>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Waits until a listener stops (it does not, unless its task panics).
    pub async fn wait(mut self) {
        if let Some(task) = self.tasks.pop() {
            let _ = task.await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

pub async fn start(options: Options) -> anyhow::Result<Running> {
    let admin_token = options.admin_token.clone().filter(|t| !t.is_empty());
    if !options.admin_listen.ip().is_loopback() && admin_token.is_none() {
        anyhow::bail!(
            "the Admin API listens on {}, beyond loopback: set an admin token \
             (KYC_EDGE_ADMIN_TOKEN) or listen on 127.0.0.1",
            options.admin_listen
        );
    }
    let shm = Arc::new(Shm::new(&options.kong_conf.shm_zones));
    let metrics = Arc::new(Metrics::new()?);
    let host = Arc::new(Host::load(
        &options.filters,
        Arc::clone(&shm),
        Arc::clone(&metrics),
    )?);
    let text = std::fs::read_to_string(&options.declarative)
        .with_context(|| format!("reading {}", options.declarative.display()))?;
    let decl = Declarative::parse(&text, &host.filter_names())
        .with_context(|| format!("in {}", options.declarative.display()))?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(60)));
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector);
    let edge = Arc::new(Edge {
        plan: RwLock::new(Arc::new(Plan::new(Declarative::default(), 0)?)),
        generation: AtomicU64::new(0),
        workers: Workers::new(Arc::clone(&host), options.workers),
        metrics,
        shm,
        client,
        resolve: options.resolve.clone(),
        max_body_bytes: options.max_body_bytes,
        limits: options.kong_conf.limits.clone(),
        client_address: options.kong_conf.client_address.clone(),
        declarative_path: options.declarative.clone(),
        access_log: options
            .access_log
            .as_deref()
            .map(access_log::AccessLog::open)
            .transpose()?,
        next_worker: AtomicUsize::new(0),
        config_lock: tokio::sync::Mutex::new(()),
    });
    for kind in &decl.ignored {
        tracing::warn!("{kind}: the edge does not run these entities; they are ignored");
    }
    if let Err(why) = edge.check_configs(&decl) {
        tracing::error!(
            "{why}; requests through that chain get 500 until the configuration is fixed"
        );
    }
    edge.install(decl)?;

    let proxy = TcpListener::bind(options.proxy_listen)
        .await
        .with_context(|| format!("binding the proxy listener {}", options.proxy_listen))?;
    let admin = TcpListener::bind(options.admin_listen)
        .await
        .with_context(|| format!("binding the admin listener {}", options.admin_listen))?;
    let (proxy_addr, admin_addr) = (proxy.local_addr()?, admin.local_addr()?);
    let admin_task = {
        let router = admin::router(Arc::clone(&edge), admin_token);
        tokio::spawn(async move {
            if let Err(e) = axum::serve(admin, router).await {
                tracing::error!("admin listener stopped: {e}");
            }
        })
    };
    let proxy_task = tokio::spawn(proxy::serve(Arc::clone(&edge), proxy));
    tracing::info!(
        %proxy_addr, %admin_addr, workers = edge.workers.count(),
        filters = ?{ let mut f: Vec<_> = host.filter_names().into_iter().collect(); f.sort(); f },
        shm_zones = ?edge.shm.zone_names(),
        "kyc-edge listening"
    );
    Ok(Running {
        proxy_addr,
        admin_addr,
        edge,
        tasks: vec![admin_task, proxy_task],
    })
}
