//! `kyc-edge`: runs the gateway filters the way Kong 3.9 does, on Kong's ports.
//!
//!     kyc-edge --conf kong/kong.conf --declarative declarative/kong.yaml --filters target/filters

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use kyc_edge::conf::KongConf;
use kyc_edge::{DEFAULT_MAX_BODY_BYTES, Options};

#[derive(Parser, Debug)]
#[command(
    name = "kyc-edge",
    version,
    about = "A local proxy-wasm host that runs the Kong filters"
)]
struct Args {
    /// kong.conf: its shm_kv zones (and listen addresses and file paths, unless given here).
    #[arg(long, default_value = "kong/kong.conf")]
    conf: PathBuf,
    /// The decK declarative file (services, routes, filter_chains).
    #[arg(long)]
    declarative: Option<PathBuf>,
    /// The directory of <name>.wasm filters (Kong's wasm_filters_path).
    #[arg(long)]
    filters: Option<PathBuf>,
    /// Proxy listener (Kong's proxy_listen).
    #[arg(long)]
    proxy_listen: Option<SocketAddr>,
    /// Admin API listener (Kong's admin_listen).
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Workers, like nginx workers: one filter VM set and one runtime thread each (default: one
    /// per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Connect to an upstream host at another address: `--resolve kyc-service=127.0.0.1`.
    #[arg(long, value_name = "HOST=ADDR")]
    resolve: Vec<String>,
    /// The access log (Kong's proxy_access_log); `off` for none.
    #[arg(long, default_value = "logs/kyc-edge-access.log")]
    access_log: String,
    /// Largest request body, in bytes (the edge buffers bodies, as nginx does).
    #[arg(long, default_value_t = DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// Largest WebSocket frame a client may send, in bytes (larger: closed with 1009).
    #[arg(long, default_value_t = 1 << 20)]
    ws_max_frame_bytes: u64,
    /// Largest WebSocket message (all its fragments) a client may send, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    ws_max_message_bytes: u64,
}

fn listen(
    given: Option<SocketAddr>,
    conf: Option<&String>,
    default: &str,
) -> anyhow::Result<SocketAddr> {
    if let Some(addr) = given {
        return Ok(addr);
    }
    let text = conf.map_or(default, String::as_str);
    text.parse()
        .with_context(|| format!("listen address {text:?} is not host:port"))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // One runtime thread per worker, as nginx runs one process per worker: `--workers 1` is a
    // one-core gateway, comparable with nginx's `worker_processes 1`.
    let threads = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
        .max(1);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?
        .block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KYC_EDGE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let mut kong_conf = if args.conf.exists() {
        KongConf::load(&args.conf)?
    } else {
        tracing::warn!("{} not found: no shm_kv zones", args.conf.display());
        KongConf::default()
    };
    kong_conf.limits.ws_max_frame = args.ws_max_frame_bytes;
    kong_conf.limits.ws_max_message = args.ws_max_message_bytes;
    let mut resolve = HashMap::new();
    for r in &args.resolve {
        let (host, addr) = r
            .split_once('=')
            .with_context(|| format!("--resolve {r:?}: expected HOST=ADDR"))?;
        resolve.insert(host.to_owned(), addr.to_owned());
    }
    let options = Options {
        declarative: args
            .declarative
            .or_else(|| kong_conf.declarative_config.clone())
            .unwrap_or_else(|| "declarative/kong.yaml".into()),
        filters: args.filters.unwrap_or_else(|| "target/filters".into()),
        proxy_listen: listen(
            args.proxy_listen,
            kong_conf.proxy_listen.as_ref(),
            "0.0.0.0:8000",
        )?,
        admin_listen: listen(args.admin_listen, None, "127.0.0.1:8001")?,
        workers: args
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from)),
        resolve,
        max_body_bytes: args.max_body_bytes,
        access_log: (args.access_log != "off").then(|| args.access_log.into()),
        // From the environment only, so it is not in a file or the process list.
        admin_token: std::env::var("KYC_EDGE_ADMIN_TOKEN").ok(),
        kong_conf,
    };
    let running = kyc_edge::start(options).await?;
    tokio::select! {
        () = running.wait() => {}
        _ = tokio::signal::ctrl_c() => tracing::info!("stopping"),
    }
    Ok(())
}
