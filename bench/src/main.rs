//! `kyc-bench`: the benchmark driver behind `scripts/bench.sh`. `kyc-bench run` starts the stack
//! (kyc-sandbox, kyc-service, kyc-edge) and the references (nginx, pgbench), runs every figure of
//! bench/README.md, prints one row per figure and writes bench/results/latest.{md,json} and the
//! latency plot. The other subcommands are the loads no registry tool makes, runnable alone; each
//! row names the command that produced it.

mod loads;
mod report;
mod run;
mod tools;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "kyc-bench",
    about = "Benchmarks: the gateway and the service against their references"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every figure: starts what it needs, prints the table, writes the results.
    Run(run::RunArgs),
    /// Complete verifications (the seed's section 3.5) from N clients, a fresh Idempotency-Key
    /// each; the token comes from $TOKEN.
    Verify {
        #[arg(long, default_value = "http://127.0.0.1:8000")]
        base: String,
        #[arg(long, short = 'c', default_value_t = 50)]
        concurrency: usize,
        #[arg(long, short = 'd', default_value = "20", value_name = "SECONDS")]
        seconds: u64,
        /// A directory written by `kyc-sandbox fixtures` (idcard.jpg, face.jpg).
        #[arg(long)]
        fixtures: PathBuf,
        #[arg(long, default_value = "张三")]
        name: String,
        #[arg(long, default_value = "11010519491231002X")]
        idcard: String,
    },
    /// Idle authenticated liveness WebSockets, held, then each pinged; the token comes from $TOKEN.
    WsIdle {
        #[arg(long, default_value = "ws://127.0.0.1:8000/api/v1/kyc/liveness/ws")]
        url: String,
        #[arg(long, short = 'n', default_value_t = 10_000)]
        connections: usize,
        #[arg(long, default_value = "30", value_name = "SECONDS")]
        hold: u64,
    },
    /// A paced GET load from N keep-alive connections, counting admissions and 429s with
    /// Retry-After; the token comes from $TOKEN.
    RateAccuracy {
        url: String,
        #[arg(long)]
        rate: f64,
        #[arg(long, short = 'c', default_value_t = 8)]
        connections: usize,
        #[arg(long, short = 'd', default_value = "20", value_name = "SECONDS")]
        seconds: u64,
    },
}

fn token_from_env() -> anyhow::Result<String> {
    std::env::var("TOKEN").context("set TOKEN to an access token with kyc:read kyc:write")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(args) => run::run(args).await,
        Command::Verify {
            base,
            concurrency,
            seconds,
            fixtures,
            name,
            idcard,
        } => {
            let person = Arc::new(loads::Person::load(&fixtures, &name, &idcard)?);
            let r = loads::verify_load(
                &base,
                &token_from_env()?,
                person,
                concurrency,
                Duration::from_secs(seconds),
            )
            .await?;
            println!("{}", serde_json::to_string_pretty(&r)?);
            Ok(())
        }
        Command::WsIdle {
            url,
            connections,
            hold,
        } => {
            let r = loads::ws_idle(
                &url,
                &token_from_env()?,
                connections,
                Duration::from_secs(hold),
                async || Ok(()),
            )
            .await?;
            println!("{}", serde_json::to_string_pretty(&r)?);
            Ok(())
        }
        Command::RateAccuracy {
            url,
            rate,
            connections,
            seconds,
        } => {
            let r = loads::rate_load(
                &url,
                &token_from_env()?,
                rate,
                connections,
                Duration::from_secs(seconds),
            )
            .await?;
            println!("{}", serde_json::to_string_pretty(&r)?);
            Ok(())
        }
    }
}
