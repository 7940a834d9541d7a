//! `kyc-chaos`: faults under load against the real stack (scripts/chaos.sh runs it). It starts
//! its own PostgreSQL and Redis, kyc-sandbox, kyc-service and kyc-edge with the built filters,
//! runs each scenario of tests/chaos/README.md under a steady load, audits the database and the
//! client's view after each, and prints one row per scenario. Lost and stuck must be 0 and every
//! check must pass, or it exits 1.

mod audit;
mod load;
mod scenarios;
mod stack;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;

use crate::audit::Row;
use crate::load::{Client, Payload};
use crate::scenarios::{Plan, Scenario};
use crate::stack::Stack;

#[derive(Parser)]
#[command(
    name = "kyc-chaos",
    about = "Faults under load, then an audit: nothing lost, nothing stuck"
)]
struct Args {
    /// A short run (CI): a few seconds of load around each fault.
    #[arg(long)]
    smoke: bool,
    /// Only these scenarios (default: all, in the README's order).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Scenario>,
    /// Where kyc-service, kyc-edge and kyc-sandbox are.
    #[arg(long, default_value = "target/debug")]
    bin_dir: PathBuf,
    /// The built filters (scripts/build-filters.sh).
    #[arg(long, default_value = "target/filters")]
    filters: PathBuf,
    /// The run's directory: its database cluster, fixtures and every process's output.
    #[arg(long, default_value = ".tmp/chaos")]
    work: PathBuf,
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "| {:<30} | {:>5} | {:>8} | {:>8} | {:>4} | {:>5} | {:>4} | {:>9} | {:>8} |",
        "scenario", "sent", "accepted", "terminal", "lost", "stuck", "5xx", "no answer", "recover"
    );
    println!(
        "|{:-<32}|{:->7}|{:->10}|{:->10}|{:->6}|{:->7}|{:->6}|{:->11}|{:->10}|",
        "", "", "", "", "", "", "", "", ""
    );
    for r in rows {
        let recover = r
            .recover
            .map_or("-".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()));
        println!(
            "| {:<30} | {:>5} | {:>8} | {:>8} | {:>4} | {:>5} | {:>4} | {:>9} | {:>8} |",
            r.name,
            r.sent,
            r.accepted,
            r.terminal,
            r.lost,
            r.stuck,
            r.http_5xx,
            r.no_answer,
            recover
        );
    }
    println!();
    for r in rows {
        println!("{}:", r.name);
        for c in &r.checks {
            let mark = if c.ok { "ok  " } else { "FAIL" };
            if c.detail.is_empty() {
                println!("  {mark} {}", c.what);
            } else {
                println!("  {mark} {} ({})", c.what, c.detail);
            }
        }
    }
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let plan = if args.smoke {
        Plan {
            warm: Duration::from_secs(3),
            hold: Duration::from_secs(4),
            after: Duration::from_secs(4),
            verifiers: 4,
            per_client: 5.0,
        }
    } else {
        Plan {
            warm: Duration::from_secs(10),
            hold: Duration::from_secs(10),
            after: Duration::from_secs(15),
            verifiers: 8,
            per_client: 5.0,
        }
    };
    let scenarios = if args.only.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        args.only.clone()
    };
    let secret = kyc_bench::seed::jwt_secret()?;
    let mut stack = Stack::start(&args.work, &args.bin_dir, &args.filters, secret).await?;
    let client = Client::new(
        &stack.base,
        kyc_bench::seed::token(&stack.base).await?,
        &Payload::from_fixtures(&stack.fixtures)?,
    )?;
    let mut rows = Vec::new();
    for s in scenarios {
        println!("[chaos] {}", s.title());
        let row = scenarios::run(&mut stack, &client, &plan, s)
            .await
            .with_context(|| format!("scenario {}", s.title()))?;
        println!(
            "[chaos]   sent {}, accepted {}, lost {}, stuck {}, checks {}",
            row.sent,
            row.accepted,
            row.lost,
            row.stuck,
            if row.checks.iter().all(|c| c.ok) {
                "ok"
            } else {
                "FAILED"
            }
        );
        rows.push(row);
    }
    print_table(&rows);
    println!("\nprocess output: {}", args.work.join("out").display());
    Ok(rows.iter().all(Row::passed))
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("kyc-chaos: a scenario lost or left a request, or failed a check (above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("kyc-chaos: {e:#}");
            ExitCode::from(2)
        }
    }
}
