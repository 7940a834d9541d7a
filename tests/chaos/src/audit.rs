//! The end of every scenario: the database and the client's view of what the load was told.
//!
//! - **accepted**: answers that named a KYC request (a verdict, or an error carrying
//!   `kyc_request_id`).
//! - **terminal**: accepted requests whose row is `success`, `failed` or `error`.
//! - **lost**: accepted requests with no row, or that the status query does not find.
//! - **stuck**: accepted requests not terminal when the audit gives up, plus any other row still
//!   `pending`/`processing` then. The audit waits long enough for the abandoned-request sweep.
//! - **5xx**: 5xx answers to verifications and status queries (outages produce them: 502 while
//!   a process is down, 503 with `Retry-After` while a dependency is).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::load::{Answer, Attempt, Client, Ledger};
use crate::stack::{REQUEST_TIMEOUT, Stack, sql};

pub struct Check {
    pub what: String,
    pub ok: bool,
    pub detail: String,
}

impl Check {
    pub fn new(what: impl Into<String>, ok: bool, detail: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            ok,
            detail: detail.into(),
        }
    }
}

pub struct Row {
    pub name: &'static str,
    pub sent: usize,
    pub accepted: usize,
    pub terminal: usize,
    pub lost: usize,
    pub stuck: usize,
    pub http_5xx: usize,
    pub no_answer: usize,
    pub recover: Option<Duration>,
    pub checks: Vec<Check>,
}

impl Row {
    pub fn passed(&self) -> bool {
        self.lost == 0 && self.stuck == 0 && self.checks.iter().all(|c| c.ok)
    }
}

const TERMINAL: [&str; 3] = ["success", "failed", "error"];

/// Every row's status, by id.
fn rows() -> anyhow::Result<BTreeMap<Uuid, String>> {
    Ok(sql("SELECT id, status FROM kyc_requests")?
        .lines()
        .filter_map(|l| {
            let (id, status) = l.split_once('|')?;
            Some((Uuid::try_parse(id).ok()?, status.to_owned()))
        })
        .collect())
}

/// Evenly spaced, at most `n`.
fn sample<T: Clone>(all: &[T], n: usize) -> Vec<T> {
    if all.len() <= n {
        return all.to_vec();
    }
    (0..n).map(|i| all[i * all.len() / n].clone()).collect()
}

/// Audits one scenario's ledger. `fault_at`: when the fault began (replays favour the requests
/// around it); `recovered_at`: when the recovery action was taken (the row's recovery time runs
/// from it to the first verification answered 200 after it).
pub async fn audit(
    stack: &Stack,
    client: &Client,
    name: &'static str,
    ledger: &Ledger,
    fault_at: Duration,
    recovered_at: Option<Duration>,
    mut checks: Vec<Check>,
) -> anyhow::Result<Row> {
    let accepted: BTreeSet<Uuid> = ledger
        .verifies
        .iter()
        .filter_map(Attempt::accepted)
        .collect();

    // Wait for every accepted request, and every row at all, to be terminal: an orphaned row is
    // finished by the sweep one request timeout (plus 5 s) after it was left, found within one
    // more request timeout.
    let deadline = Instant::now() + REQUEST_TIMEOUT * 2 + Duration::from_secs(15);
    let mut db = rows()?;
    loop {
        let open = db.values().any(|s| !TERMINAL.contains(&s.as_str()));
        let missing = accepted.iter().any(|id| !db.contains_key(id));
        if (!open && !missing) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        db = rows()?;
    }
    let mut lost = accepted.iter().filter(|id| !db.contains_key(id)).count();
    let terminal = accepted
        .iter()
        .filter(|id| db.get(id).is_some_and(|s| TERMINAL.contains(&s.as_str())))
        .count();
    let stuck = db
        .values()
        .filter(|s| !TERMINAL.contains(&s.as_str()))
        .count();

    // The client's view: the status query finds each request with the database's status.
    let ids: Vec<Uuid> = accepted.iter().copied().collect();
    let mut mismatched = Vec::new();
    for id in sample(&ids, 100) {
        match client.status(id).await {
            Ok((200, Some(s))) if db.get(&id) == Some(&s) => {}
            Ok((404, _)) => lost += 1,
            other => mismatched.push(format!("{id}: {other:?} vs {:?}", db.get(&id))),
        }
    }
    checks.push(Check::new(
        "the status query agrees with the database",
        mismatched.is_empty(),
        if mismatched.is_empty() {
            format!(
                "{} of {} accepted requests queried",
                ids.len().min(100),
                ids.len()
            )
        } else {
            mismatched.join("; ")
        },
    ));

    checks.push(replays(stack, client, ledger, fault_at).await?);

    let hung = ledger
        .verifies
        .iter()
        .filter(|a| matches!(a.answer, Answer::Transport { timed_out: true }))
        .count();
    checks.push(Check::new(
        "no request hangs",
        hung == 0,
        format!("{hung} without an answer within the client's timeout"),
    ));

    let http_5xx = ledger
        .verifies
        .iter()
        .filter(|a| a.code().is_some_and(|c| c >= 500))
        .count()
        + ledger
            .probes
            .iter()
            .filter(|p| p.code.is_some_and(|c| c >= 500))
            .count();
    let no_answer = ledger
        .verifies
        .iter()
        .filter(|a| a.code().is_none())
        .count()
        + ledger.probes.iter().filter(|p| p.code.is_none()).count();
    let recover = recovered_at.and_then(|at| {
        ledger
            .verifies
            .iter()
            .filter(|a| a.sent >= at && a.code() == Some(200))
            .map(|a| a.done.saturating_sub(at))
            .min()
    });
    if recovered_at.is_some() {
        checks.push(Check::new(
            "verifications succeed again after the recovery",
            recover.is_some(),
            "",
        ));
    }
    Ok(Row {
        name,
        sent: ledger.verifies.len(),
        accepted: accepted.len(),
        terminal,
        lost,
        stuck,
        http_5xx,
        no_answer,
        recover,
        checks,
    })
}

/// A retry with the same key returns the recorded outcome and makes no vendor call: replays of
/// stored answers (5xx answers are not stored: their retry runs anew, by design), the requests
/// sent around the fault first.
async fn replays(
    stack: &Stack,
    client: &Client,
    ledger: &Ledger,
    fault_at: Duration,
) -> anyhow::Result<Check> {
    let stored: Vec<&Attempt> = ledger
        .verifies
        .iter()
        .filter(|a| a.accepted().is_some() && a.code().is_some_and(|c| c < 500))
        .collect();
    let near = |a: &&Attempt| a.sent.abs_diff(fault_at) < Duration::from_secs(2);
    let mut chosen: Vec<&Attempt> = stored.iter().copied().filter(near).take(40).collect();
    chosen.extend(sample(&stored, 40));
    let before = stack.vendor_calls().await?;
    let mut wrong = Vec::new();
    let t0 = Instant::now();
    for a in &chosen {
        let again = client.verify(&a.key, t0).await;
        let same = match (&a.answer, &again.answer) {
            (
                Answer::Http {
                    code,
                    kyc_request,
                    kyc_status,
                    ..
                },
                Answer::Http {
                    code: c2,
                    kyc_request: r2,
                    kyc_status: s2,
                    replayed: true,
                    ..
                },
            ) => code == c2 && kyc_request == r2 && kyc_status == s2,
            _ => false,
        };
        if !same {
            wrong.push(format!("{}: {:?} then {:?}", a.key, a.answer, again.answer));
        }
    }
    let calls = stack.vendor_calls().await? - before;
    Ok(Check::new(
        "a retry with the same key returns the same outcome, with no vendor call",
        wrong.is_empty() && calls == 0 && !chosen.is_empty(),
        if wrong.is_empty() {
            format!("{} replays, {calls} vendor calls", chosen.len())
        } else {
            wrong.truncate(3);
            wrong.join("; ")
        },
    ))
}
