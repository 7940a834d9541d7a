//! The faults. Each runs under the load from its start to its end, injects one fault, takes the
//! recovery action, lets the load run on, and hands the ledger with its own checks to the audit.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::audit::{Check, Row, audit};
use crate::load::{Answer, Client, Ledger, Load};
use crate::stack::{
    ACQUIRE_TIMEOUT, BREAKER_OPEN, EDGE_PORT, LIVENESS_ACTION_TIMEOUT, REQUEST_TIMEOUT, Stack,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    ServiceKill,
    PostgresRestart,
    RedisStop,
    VendorFaults,
    EdgeKillReload,
    LogUnwritable,
}

impl Scenario {
    pub const ALL: [Scenario; 6] = [
        Scenario::ServiceKill,
        Scenario::PostgresRestart,
        Scenario::RedisStop,
        Scenario::VendorFaults,
        Scenario::EdgeKillReload,
        Scenario::LogUnwritable,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Scenario::ServiceKill => "kill -9 kyc-service, restart",
            Scenario::PostgresRestart => "PostgreSQL restart",
            Scenario::RedisStop => "Redis stopped, started",
            Scenario::VendorFaults => "vendors: 30% errors, spikes",
            Scenario::EdgeKillReload => "kill -9 kyc-edge; reloads",
            Scenario::LogUnwritable => "log file unwritable",
        }
    }
}

/// How long each phase lasts and how hard the load pushes.
pub struct Plan {
    /// Load before the fault.
    pub warm: Duration,
    /// The fault's length, where the scenario holds one.
    pub hold: Duration,
    /// Load after the recovery.
    pub after: Duration,
    pub verifiers: usize,
    pub per_client: f64,
}

/// A scenario in progress: the load, and the moments the audit needs.
struct Run {
    t0: Instant,
    load: Load,
    fault_at: Duration,
    recovered_at: Option<Duration>,
    /// When each configuration reload was asked for.
    reloads: Vec<Duration>,
    checks: Vec<Check>,
}

impl Run {
    fn now(&self) -> Duration {
        self.t0.elapsed()
    }
}

pub async fn run(
    stack: &mut Stack,
    client: &Client,
    plan: &Plan,
    s: Scenario,
) -> anyhow::Result<Row> {
    let t0 = Instant::now();
    let load = Load::start(client.clone(), t0, plan.verifiers, plan.per_client);
    tokio::time::sleep(plan.warm).await;
    let mut r = Run {
        t0,
        load,
        fault_at: t0.elapsed(),
        recovered_at: None,
        reloads: Vec::new(),
        checks: Vec::new(),
    };
    match s {
        Scenario::ServiceKill => service_kill(stack, &mut r).await?,
        Scenario::PostgresRestart => postgres_restart(stack, plan, &mut r).await?,
        Scenario::RedisStop => redis_stop(stack, client, plan, &mut r).await?,
        Scenario::VendorFaults => vendor_faults(stack, plan, &mut r).await?,
        Scenario::EdgeKillReload => edge_kill(stack, &mut r).await?,
        Scenario::LogUnwritable => log_unwritable(stack, plan, &mut r).await?,
    }
    tokio::time::sleep(plan.after).await;
    if s == Scenario::EdgeKillReload {
        reloads(stack, &mut r).await?;
    }
    let (load, fault_at, recovered_at, reload_times) =
        (r.load, r.fault_at, r.recovered_at, r.reloads);
    let mut checks = r.checks;
    let ledger = load.stop().await;
    match s {
        Scenario::PostgresRestart => outage_answers(&ledger, fault_at, recovered_at, &mut checks),
        Scenario::EdgeKillReload => {
            retries_after_kill(client, &ledger, fault_at, &mut checks).await;
            reload_drops_nothing(&ledger, &reload_times, &mut checks);
        }
        _ => {}
    }
    stack.check()?;
    audit(
        stack,
        client,
        s.title(),
        &ledger,
        fault_at,
        recovered_at,
        checks,
    )
    .await
}

async fn service_kill(stack: &mut Stack, r: &mut Run) -> anyhow::Result<()> {
    stack.kill_service()?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    r.recovered_at = Some(r.now());
    stack.start_service().await
}

async fn ready_code(stack: &Stack) -> Option<u16> {
    reqwest::Client::new()
        .get(format!("{}/ready", stack.service_url))
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

async fn postgres_restart(stack: &mut Stack, plan: &Plan, r: &mut Run) -> anyhow::Result<()> {
    let pid = stack.service()?.pid();
    stack.pg.stop()?;
    r.fault_at = r.now();
    let down = Instant::now();
    let mut seen = Vec::new();
    while down.elapsed() < plan.hold {
        seen.push(ready_code(stack).await);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    r.checks.push(Check::new(
        "/ready reports the outage",
        seen.contains(&Some(503)),
        format!("{} probes: {seen:?}", seen.len()),
    ));
    r.recovered_at = Some(r.now());
    stack.pg.start()?;
    let up = Instant::now();
    let mut ready = None;
    while up.elapsed() < Duration::from_secs(30) {
        if ready_code(stack).await == Some(200) {
            ready = Some(up.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    r.checks.push(Check::new(
        "the pool recovers without restarting the service",
        ready.is_some() && stack.service()?.pid() == pid,
        format!("/ready 200 {ready:?} after the start, same process"),
    ));
    Ok(())
}

/// While the database is down, verifications get a quick 503 with Retry-After: every request in
/// flight during the outage is answered within the request timeout, either with what it finished
/// before the database went or with a 503 and `Retry-After`; never a 500, a 502 or a hang.
fn outage_answers(
    ledger: &Ledger,
    fault_at: Duration,
    recovered_at: Option<Duration>,
    checks: &mut Vec<Check>,
) {
    let Some(end) = recovered_at else { return };
    let during: Vec<_> = ledger
        .verifies
        .iter()
        .filter(|a| a.sent < end && a.done > fault_at)
        .collect();
    let mut latencies: Vec<Duration> = during
        .iter()
        .map(|a| a.done.saturating_sub(a.sent))
        .collect();
    latencies.sort();
    let slowest = latencies.last().copied().unwrap_or_default();
    let median = latencies
        .get(latencies.len() / 2)
        .copied()
        .unwrap_or_default();
    let refused = during
        .iter()
        .filter(|a| {
            matches!(
                a.answer,
                Answer::Http {
                    code: 503,
                    retry_after: true,
                    ..
                }
            )
        })
        .count();
    let bad: Vec<String> = during
        .iter()
        .filter(|a| match a.answer {
            Answer::Http {
                code, retry_after, ..
            } => code >= 500 && !(code == 503 && retry_after),
            Answer::Transport { .. } => true,
        })
        .map(|a| format!("{:?}", a.answer))
        .take(3)
        .collect();
    checks.push(Check::new(
        "during the outage: 503 with Retry-After, within the request timeout",
        refused > 0 && bad.is_empty() && slowest <= REQUEST_TIMEOUT + ANSWER_MARGIN,
        format!(
            "{} requests in flight, {refused} answered 503 with Retry-After; median {} ms \
             (acquire timeout {} ms), slowest {} ms (request timeout {} ms)",
            during.len(),
            median.as_millis(),
            ACQUIRE_TIMEOUT.as_millis(),
            slowest.as_millis(),
            REQUEST_TIMEOUT.as_millis(),
        ) + &if bad.is_empty() {
            String::new()
        } else {
            format!("; other answers: {}", bad.join(", "))
        },
    ));
}

/// A request cut off by the request timeout is answered then, plus the time its answer takes to
/// cross the edge on a loaded machine.
const ANSWER_MARGIN: Duration = Duration::from_millis(500);

/// A liveness session through the edge, opened and left waiting for its first action; the close
/// code it ends with (`None`: the connection ended without a close frame).
async fn liveness_session(token: &str) -> anyhow::Result<tokio::task::JoinHandle<Option<u16>>> {
    let mut req =
        format!("ws://127.0.0.1:{EDGE_PORT}/api/v1/kyc/liveness/ws").into_client_request()?;
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .context("opening a liveness session")?;
    let first = ws.next().await.context("no challenge")??;
    anyhow::ensure!(
        first.to_text().unwrap_or_default().contains("challenge"),
        "the session did not start with its challenge: {first:?}"
    );
    Ok(tokio::spawn(async move {
        let wait = LIVENESS_ACTION_TIMEOUT + Duration::from_secs(15);
        tokio::time::timeout(wait, async {
            while let Some(Ok(m)) = ws.next().await {
                if let Message::Close(frame) = m {
                    return frame.map(|f| u16::from(f.code));
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
    }))
}

async fn redis_stop(
    stack: &mut Stack,
    client: &Client,
    plan: &Plan,
    r: &mut Run,
) -> anyhow::Result<()> {
    let session = liveness_session(&client.token).await?;
    let before = stack.service_metric("redis_unavailable_total").await?;
    stack.stop_redis()?;
    r.fault_at = r.now();
    // Long enough for the session's action timeout to fall inside the outage.
    tokio::time::sleep(
        plan.hold
            .max(LIVENESS_ACTION_TIMEOUT + Duration::from_secs(2)),
    )
    .await;
    let during = stack.service_metric("redis_unavailable_total").await?;
    let served = r.load.count_since(r.fault_at + Duration::from_secs(1), 200);
    r.checks.push(Check::new(
        "rate limiting fails open (the configured mode) and the metric counts it",
        served > 0 && during > before,
        format!(
            "{served} verifications served; redis_unavailable_total +{}",
            during - before
        ),
    ));
    let code = session.await?;
    r.checks.push(Check::new(
        "a liveness session in flight ends with a close code",
        matches!(code, Some(1000 | 1001 | 1008 | 1011)),
        format!("closed with {code:?}"),
    ));
    r.recovered_at = Some(r.now());
    stack.start_redis().await?;
    // The limiter's back-off lets a request or two through without Redis after it returns.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let back = stack.service_metric("redis_unavailable_total").await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = stack.service_metric("redis_unavailable_total").await?;
    r.checks.push(Check::new(
        "with Redis back, the limiter uses it again",
        later == back,
        format!("redis_unavailable_total {back} then {later}"),
    ));
    Ok(())
}

async fn vendor_faults(stack: &mut Stack, plan: &Plan, r: &mut Run) -> anyhow::Result<()> {
    let rss_before = stack.service()?.rss_kib()?;
    let faults = |latency_ms: u64| {
        let spec = json!({ "error_rate": 0.3, "latency_ms": latency_ms });
        json!({ "ocr": spec, "face": spec, "liveness": spec })
    };
    stack.sandbox_faults(faults(0)).await?;
    let start = Instant::now();
    let (mut open_seen, mut rss_peak, mut tick) = (0.0f64, rss_before, 0u32);
    // Long enough for the breakers to open: at 30% errors and a threshold of 2, about five runs
    // of two failures in a row are expected in 8 s of this load.
    while start.elapsed() < plan.hold.max(Duration::from_secs(8)) {
        // A latency spike of 1.5 s for one second in every four.
        if tick % 20 == 10 {
            stack.sandbox_faults(faults(1500)).await?;
        } else if tick % 20 == 15 {
            stack.sandbox_faults(faults(0)).await?;
        }
        tick += 1;
        open_seen = open_seen.max(stack.service_metric("vendor_circuit_state").await?);
        rss_peak = rss_peak.max(stack.service()?.rss_kib()?);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stack.clear_faults().await?;
    r.recovered_at = Some(r.now());
    r.checks.push(Check::new(
        "breakers open under the errors",
        open_seen >= 1.0,
        format!("vendor_circuit_state reached {open_seen}"),
    ));
    let closing = Instant::now();
    let mut closed = None;
    while closing.elapsed() < BREAKER_OPEN * 3 + Duration::from_secs(10) {
        if stack.service_metric("vendor_circuit_state").await? == 0.0 {
            closed = Some(closing.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    r.checks.push(Check::new(
        "breakers close once the vendors recover",
        closed.is_some(),
        format!("all closed {closed:?} after the faults ended (open for {BREAKER_OPEN:?})"),
    ));
    // Memory: the service's resident set may grow with the load's history, not without bound.
    let limit = rss_before * 2 + 64 * 1024;
    r.checks.push(Check::new(
        "memory stays bounded",
        rss_peak <= limit,
        format!(
            "RSS {} MiB before, peak {} MiB",
            rss_before / 1024,
            rss_peak / 1024
        ),
    ));
    Ok(())
}

async fn edge_kill(stack: &mut Stack, r: &mut Run) -> anyhow::Result<()> {
    stack.kill_edge()?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    r.recovered_at = Some(r.now());
    stack.start_edge().await
}

/// Three reloads of the declarative configuration under the load; when each was asked for.
async fn reloads(stack: &Stack, r: &mut Run) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let at = r.now();
        let code = http
            .post(format!("{}/config", stack.admin))
            .send()
            .await?
            .status()
            .as_u16();
        statuses.push((at, code));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    r.checks.push(Check::new(
        "reloads are applied",
        statuses.iter().all(|(_, c)| (200..300).contains(c)),
        format!(
            "POST /config: {:?}",
            statuses.iter().map(|s| s.1).collect::<Vec<_>>()
        ),
    ));
    r.reloads = statuses.iter().map(|s| s.0).collect();
    Ok(())
}

/// Requests sent from just before each reload to a second after it were all answered, none 5xx.
fn reload_drops_nothing(ledger: &Ledger, times: &[Duration], checks: &mut Vec<Check>) {
    let near = |sent: Duration| {
        times
            .iter()
            .any(|&t| sent + Duration::from_millis(200) >= t && sent <= t + Duration::from_secs(1))
    };
    let (mut n, mut dropped) = (0, 0);
    for a in ledger.verifies.iter().filter(|a| near(a.sent)) {
        n += 1;
        if a.code().is_none_or(|c| c >= 500) {
            dropped += 1;
        }
    }
    for p in ledger.probes.iter().filter(|p| near(p.sent)) {
        n += 1;
        if p.code.is_none_or(|c| c >= 500) {
            dropped += 1;
        }
    }
    checks.push(Check::new(
        "a reload drops no request",
        n > 0 && dropped == 0,
        format!("{n} requests around the reloads, {dropped} without a proper answer"),
    ));
}

/// The requests the kill cut off (no answer) are retried with their key: each gets the outcome
/// the service recorded (a replay) or, if the service never saw it, a first run.
async fn retries_after_kill(
    client: &Client,
    ledger: &Ledger,
    fault_at: Duration,
    checks: &mut Vec<Check>,
) {
    let cut: Vec<_> = ledger
        .verifies
        .iter()
        .filter(|a| a.code().is_none() && a.sent <= fault_at)
        .collect();
    let (mut replayed, mut fresh, mut other) = (0, 0, Vec::new());
    let t0 = Instant::now();
    for a in &cut {
        match client.verify(&a.key, t0).await.answer {
            Answer::Http {
                kyc_request: Some(_),
                replayed: true,
                ..
            } => replayed += 1,
            Answer::Http {
                kyc_request: Some(_),
                replayed: false,
                ..
            } => fresh += 1,
            x => other.push(format!("{x:?}")),
        }
    }
    checks.push(Check::new(
        "requests cut off by the kill, retried with their key, get an outcome",
        other.is_empty(),
        format!(
            "{} cut off: {replayed} replayed the recorded outcome, {fresh} ran for the first time{}",
            cut.len(),
            if other.is_empty() {
                String::new()
            } else {
                format!("; other: {}", other.join(", "))
            }
        ),
    ));
}

async fn log_unwritable(stack: &mut Stack, plan: &Plan, r: &mut Run) -> anyhow::Result<()> {
    // A full disk: the live log file becomes /dev/full, where every write fails with ENOSPC
    // (root can write to a read-only directory, so that variant proves nothing under root).
    stack.stop_service()?;
    let live = stack.dir.join("logs/kyc-service.log");
    let _ = std::fs::remove_file(&live);
    std::os::unix::fs::symlink("/dev/full", &live)?;
    r.recovered_at = Some(r.now());
    stack.start_service().await?;
    let stdout = stack.service_stdout()?;
    let size = || std::fs::metadata(&stdout).map(|m| m.len()).unwrap_or(0);
    let before = size();
    tokio::time::sleep(plan.hold).await;
    let after = size();
    let errors = stack.service_metric("log_write_errors_total").await?;
    let served = r.load.count_since(r.recovered_at.unwrap_or_default(), 200);
    r.checks.push(Check::new(
        "the service serves and logs to stdout; the metric counts the failed writes",
        served > 0 && after > before && errors > 0.0,
        format!(
            "{served} verifications served, stdout +{} bytes, log_write_errors_total {errors}",
            after - before
        ),
    ));
    Ok(())
}
