//! One connection from its challenge to its verdict: the deadlines (action, session, shutdown),
//! the vendor call per action, the messages sent, and the outcome recorded in the session and its
//! `liveness` request.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::protocol::{Input, Protocol, Step, Violation, parse_text};
use super::{Action, ActiveSession, Limits, to_std};
use crate::kyc::model::{ReasonCode, Status};
use crate::kyc::ports::{LivenessCheck, LivenessSessions, RequestStore, VendorError, Vendors};

/// A message from the client, as the transport delivers it.
#[derive(Debug)]
pub enum Incoming {
    Text(String),
    Binary(Vec<u8>),
    /// A message over the transport's own size limit (never read into memory).
    TooLarge,
    /// The client closed, or the connection broke.
    Closed,
}

/// A message channel to one client (the WebSocket, in the service).
#[async_trait]
pub trait Channel: Send {
    /// The next data message. Cancel-safe: it may be dropped when a deadline passes.
    async fn recv(&mut self) -> Incoming;
    /// Sends one JSON text message; false when the client is gone or does not read in time.
    async fn send(&mut self, message: Value) -> bool;
    /// Closes with `code`, waiting briefly for the client's close.
    async fn close(&mut self, code: u16, reason: &str);
}

/// What the connection needs from the outside world.
pub struct Deps<'a> {
    pub requests: &'a dyn RequestStore,
    pub sessions: &'a dyn LivenessSessions,
    pub vendors: &'a dyn Vendors,
}

/// How a connection ended, for the log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Ending {
    Verdict {
        passed: bool,
        score: f64,
    },
    Violation(Violation),
    /// The client left before the verdict.
    ClientGone,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The opening message.
#[must_use]
pub fn challenge_message(s: &ActiveSession, limits: &Limits) -> Value {
    json!({
        "type": "challenge",
        "success": true,
        "error": null,
        "liveness_session_id": s.id,
        "nonce": s.nonce,
        "actions": s.actions,
        "action_timeout_ms": millis(limits.action_timeout),
        "session_expires_at": rfc3339(s.expires_at),
        "limits": {
            "max_frame_bytes": limits.max_frame_bytes,
            "max_fps": limits.max_fps,
            "min_frames": limits.min_frames,
            "max_frames": limits.max_frames,
        },
    })
}

#[must_use]
pub fn error_message(v: Violation) -> Value {
    json!({
        "type": "error",
        "success": false,
        "error": { "code": v.code(), "message": v.message() },
    })
}

/// A vendor's reason, kept only when it is a plain code.
fn reason_code(reason: Option<String>) -> Option<String> {
    reason.filter(|r| {
        !r.is_empty() && r.len() <= 64 && r.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
    })
}

fn failed_error(reason: Option<&str>) -> Value {
    json!({
        "code": "LIVENESS_FAILED",
        "message": "liveness was not confirmed",
        "reason": reason,
    })
}

/// One action's outcome.
struct Judged {
    passed: bool,
    score: f64,
    reason: Option<String>,
}

/// Runs one connection from its challenge to its verdict, an error, or the client leaving, and
/// records the outcome: the session `passed` or `failed`, its request `success`, `failed` or
/// `error`. Never panics on input; every wait has a deadline.
pub async fn run(
    deps: &Deps<'_>,
    ch: &mut dyn Channel,
    session: &ActiveSession,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> Ending {
    let session_deadline = Instant::now() + to_std(session.expires_at - Utc::now());
    let mut conn = Connection {
        deps,
        session,
        judged: Vec::new(),
    };
    if !ch.send(challenge_message(session, &limits)).await {
        return conn.gone().await;
    }
    let mut proto = Protocol::new(session.actions.clone(), limits);
    let mut phase_deadline = Instant::now() + limits.action_timeout;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let deadline = phase_deadline.min(session_deadline);
        let incoming = tokio::select! {
            biased;
            () = &mut shutdown => return conn.refuse(ch, Violation::ShuttingDown).await,
            () = tokio::time::sleep_until(deadline) => {
                let v = if session_deadline <= phase_deadline {
                    Violation::SessionExpired
                } else {
                    Violation::ActionTimeout
                };
                return conn.refuse(ch, v).await;
            }
            m = ch.recv() => m,
        };
        let input = match incoming {
            Incoming::Closed => return conn.gone().await,
            Incoming::TooLarge => Err(Violation::FrameTooLarge),
            Incoming::Binary(data) => Ok(Input::Frame { data, ts: None }),
            Incoming::Text(text) => parse_text(&text, &limits),
        };
        let step = match input.and_then(|i| proto.accept(i, Instant::now())) {
            Ok(step) => step,
            Err(v) => return conn.refuse(ch, v).await,
        };
        match step {
            Step::FrameTaken => {}
            Step::Started(action) => {
                phase_deadline = Instant::now() + limits.action_timeout;
                let started = json!({
                    "type": "action_started",
                    "action": action,
                    "success": true,
                    "error": null,
                    "deadline_ms": millis(limits.action_timeout),
                });
                if !ch.send(started).await {
                    return conn.gone().await;
                }
            }
            Step::Ended { action, frames } => {
                let check = tokio::time::timeout_at(
                    session_deadline,
                    deps.vendors.check_liveness(
                        session.request_id,
                        action,
                        &frames,
                        session_deadline,
                    ),
                )
                .await
                .unwrap_or(Err(VendorError::Timeout));
                drop(frames);
                let judged = match check {
                    Ok(LivenessCheck {
                        passed,
                        score,
                        reason,
                    }) => Judged {
                        passed,
                        score,
                        reason: if passed { None } else { reason_code(reason) },
                    },
                    // The vendor refused the frames themselves (undecodable): not live.
                    Err(VendorError::Rejected(code)) => Judged {
                        passed: false,
                        score: 0.0,
                        reason: Some(code),
                    },
                    Err(_) if Instant::now() >= session_deadline => {
                        return conn.refuse(ch, Violation::SessionExpired).await;
                    }
                    Err(_) => return conn.refuse(ch, Violation::VendorUnavailable).await,
                };
                let result = json!({
                    "type": "action_result",
                    "action": action,
                    "success": judged.passed,
                    "error": if judged.passed { Value::Null } else { failed_error(judged.reason.as_deref()) },
                    "score": judged.score,
                });
                let passed = judged.passed;
                conn.judged.push((action, judged));
                if !ch.send(result).await {
                    return conn.gone().await;
                }
                if !passed || proto.is_complete() {
                    return conn.verdict(ch).await;
                }
                phase_deadline = Instant::now() + limits.action_timeout;
            }
        }
    }
}

/// Records a session whose connection never started (the upgrade failed) as the client leaving.
pub async fn abandon(deps: &Deps<'_>, session: &ActiveSession) {
    let conn = Connection {
        deps,
        session,
        judged: Vec::new(),
    };
    conn.gone().await;
}

/// The outcome-recording half of [`run`].
struct Connection<'a, 'd> {
    deps: &'a Deps<'d>,
    session: &'a ActiveSession,
    judged: Vec<(Action, Judged)>,
}

impl Connection<'_, '_> {
    fn lowest_score(&self) -> Option<f64> {
        self.judged.iter().map(|(_, j)| j.score).reduce(f64::min)
    }

    fn result(&self, ended: Option<&str>) -> Value {
        json!({
            "actions": self.session.actions,
            "judged": self.judged.iter().map(|(a, j)| json!({
                "action": a, "passed": j.passed, "score": j.score, "reason": j.reason,
            })).collect::<Vec<_>>(),
            "score": self.lowest_score(),
            "ended": ended,
        })
    }

    /// Records the session and its request; false when the session's record failed.
    async fn record(
        &self,
        passed: bool,
        status: Status,
        reasons: &[ReasonCode],
        ended: Option<&str>,
    ) -> bool {
        let s = self.session;
        let concluded = self
            .deps
            .sessions
            .conclude(s.id, passed, self.lowest_score())
            .await;
        if let Err(e) = &concluded {
            tracing::error!(session_id = %s.id, error = %e, "liveness session not concluded");
        }
        let (status, reasons) = if concluded.is_ok() {
            (status, reasons)
        } else {
            (Status::Error, &[ReasonCode::Interrupted][..])
        };
        match self
            .deps
            .requests
            .finish(s.request_id, status, reasons, &self.result(ended))
            .await
        {
            Ok(true) => {}
            // The abandoned-request sweep finished it first: its verdict stands.
            Ok(false) => {
                tracing::warn!(request_id = %s.request_id, "liveness request already finished")
            }
            Err(e) => {
                tracing::error!(request_id = %s.request_id, error = %e, "liveness request not finished");
            }
        }
        concluded.is_ok()
    }

    async fn gone(&self) -> Ending {
        self.record(
            false,
            Status::Failed,
            &[ReasonCode::LivenessFailed],
            Some("CLIENT_CLOSED"),
        )
        .await;
        Ending::ClientGone
    }

    async fn refuse(&self, ch: &mut dyn Channel, v: Violation) -> Ending {
        let (status, reason) = v.outcome();
        self.record(false, status, &[reason], Some(v.code())).await;
        ch.send(error_message(v)).await;
        ch.close(v.close_code(), v.code()).await;
        Ending::Violation(v)
    }

    async fn verdict(&self, ch: &mut dyn Channel) -> Ending {
        let passed = self.judged.iter().all(|(_, j)| j.passed);
        let score = self.lowest_score().unwrap_or(0.0);
        let recorded = if passed {
            self.record(true, Status::Success, &[], None).await
        } else {
            self.record(false, Status::Failed, &[ReasonCode::LivenessFailed], None)
                .await
        };
        if !recorded {
            ch.send(error_message(Violation::Internal)).await;
            ch.close(Violation::Internal.close_code(), Violation::Internal.code())
                .await;
            return Ending::Violation(Violation::Internal);
        }
        let reason = self.judged.iter().find_map(|(_, j)| j.reason.clone());
        let verdict = json!({
            "type": "verdict",
            "success": passed,
            "error": if passed { Value::Null } else { failed_error(reason.as_deref()) },
            "liveness_session_id": self.session.id,
            "passed": passed,
            "score": score,
        });
        ch.send(verdict).await;
        ch.close(1000, "verdict").await;
        Ending::Verdict { passed, score }
    }
}
