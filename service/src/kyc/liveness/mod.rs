//! Liveness sessions (`docs/liveness-protocol.md`): the server-drawn challenge, the single-use
//! ticket, the refusals before a connection, and the protocol itself as a state machine
//! ([`protocol`]: order and limits, no I/O) driven by [`run`] over any message [`Channel`]
//! ([`connection`]: deadlines, the vendor, the verdict). The WebSocket lives in
//! `http::liveness`; the records in `store/`; the vendor in `vendors/`.
//!
//! Nothing about a session lives in this process between messages except the frames of the action
//! in progress: the session's record is in PostgreSQL and its ticket in Redis, so any instance can
//! serve any connection.

mod connection;
mod protocol;

use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub use self::connection::{Channel, Deps, Ending, Incoming, abandon, run};
pub use self::protocol::{Input, Protocol, Step, Violation, parse_text};
use super::ports::{Activation, LivenessSessions, LivenessTickets, NewLivenessSession, StoreError};

/// One thing the user is asked to do in front of the camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Blink,
    OpenMouth,
    TurnLeft,
    TurnRight,
    Nod,
}

impl Action {
    pub const ALL: [Self; 5] = [
        Self::Blink,
        Self::OpenMouth,
        Self::TurnLeft,
        Self::TurnRight,
        Self::Nod,
    ];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Blink => "blink",
            Self::OpenMouth => "open_mouth",
            Self::TurnLeft => "turn_left",
            Self::TurnRight => "turn_right",
            Self::Nod => "nod",
        }
    }

    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// The session rules, from `kyc.liveness_*` in the config.
#[derive(Debug, Clone, Copy)]
pub struct SessionPolicy {
    pub session_ttl: Duration,
    pub ticket_ttl: Duration,
    pub max_sessions: u32,
    pub limits: Limits,
}

/// What one connection may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_frame_bytes: usize,
    pub max_fps: u32,
    pub min_frames: usize,
    pub max_frames: usize,
    pub action_timeout: Duration,
}

impl Limits {
    /// The largest WebSocket message worth reading: a frame as base64 in JSON, with room to spare
    /// so that a frame just over the limit is answered with `FRAME_TOO_LARGE`, not cut off.
    #[must_use]
    pub fn max_message_bytes(&self) -> usize {
        (self.max_frame_bytes / 3 + 1) * 4 * 2 + 4096
    }
}

/// Why a connection is refused before it is upgraded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    TicketInvalid,
    SessionNotFound,
    SessionForeign,
    SessionUsed,
    SessionExpired,
    SessionLimit,
}

impl Refusal {
    #[must_use]
    pub fn code(self) -> &'static str {
        match self {
            Self::TicketInvalid => "TICKET_INVALID",
            Self::SessionNotFound => "SESSION_NOT_FOUND",
            Self::SessionForeign => "SESSION_FOREIGN",
            Self::SessionUsed => "SESSION_USED",
            Self::SessionExpired => "SESSION_EXPIRED",
            Self::SessionLimit => "LIVENESS_SESSION_LIMIT",
        }
    }

    #[must_use]
    pub fn message(self) -> &'static str {
        match self {
            Self::TicketInvalid => "the ticket is unknown, already used or expired",
            Self::SessionNotFound => "no such liveness session",
            Self::SessionForeign => "the liveness session belongs to another client",
            Self::SessionUsed => "the liveness session was already used",
            Self::SessionExpired => "the liveness session has expired",
            Self::SessionLimit => {
                "too many open liveness sessions; finish one or wait for it to expire"
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LivenessError {
    #[error("liveness connection refused: {}", .0.code())]
    Refused(Refusal),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A session just created, with its ticket.
#[derive(Debug, Clone)]
pub struct OpenedSession {
    pub id: Uuid,
    pub actions: Vec<Action>,
    pub nonce: String,
    pub expires_at: DateTime<Utc>,
    /// The ticket itself: returned once, never stored.
    pub ticket: String,
    pub ticket_ttl: Duration,
}

/// A session this connection now owns.
#[derive(Debug, Clone)]
pub struct ActiveSession {
    pub id: Uuid,
    pub client_id: String,
    /// Its `kyc_requests` row of type `liveness`.
    pub request_id: Uuid,
    pub actions: Vec<Action>,
    pub nonce: String,
    pub expires_at: DateTime<Utc>,
}

/// 2 to 4 distinct actions in random order, and a 128-bit nonce.
#[must_use]
pub fn draw_challenge() -> (Vec<Action>, String) {
    let mut rng = rand::thread_rng();
    let mut actions = Action::ALL.to_vec();
    actions.shuffle(&mut rng);
    let n = 2 + (rng.next_u32() % 3) as usize;
    actions.truncate(n);
    let mut nonce = [0u8; 16];
    rng.fill_bytes(&mut nonce);
    (actions, hex::encode(nonce))
}

/// The SHA-256 of a ticket, hex: the only form in which a ticket is stored.
#[must_use]
pub fn ticket_digest(ticket: &str) -> String {
    hex::encode(Sha256::digest(ticket.as_bytes()))
}

/// A ticket's shape: 32 random bytes as unpadded base64url.
const TICKET_LEN: usize = 43;

fn new_ticket() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn to_std(d: chrono::TimeDelta) -> Duration {
    d.to_std().unwrap_or(Duration::ZERO)
}

/// Records a new session for `client_id`, within its cap of open sessions.
///
/// # Errors
/// [`Refusal::SessionLimit`], or a store failure.
pub async fn create_session(
    sessions: &dyn LivenessSessions,
    client_id: &str,
    policy: &SessionPolicy,
) -> Result<NewLivenessSession, LivenessError> {
    let (actions, nonce) = draw_challenge();
    let ttl = chrono::TimeDelta::from_std(policy.session_ttl)
        .map_err(|_| StoreError::Other("session ttl out of range".into()))?;
    let session = NewLivenessSession {
        id: Uuid::now_v7(),
        client_id: client_id.to_owned(),
        actions,
        nonce,
        expires_at: Utc::now() + ttl,
    };
    if sessions.create(&session, policy.max_sessions).await? {
        Ok(session)
    } else {
        Err(LivenessError::Refused(Refusal::SessionLimit))
    }
}

/// Records a new session and issues its ticket.
///
/// # Errors
/// [`Refusal::SessionLimit`], or a store failure (the session is then given up).
pub async fn open_session(
    sessions: &dyn LivenessSessions,
    tickets: &dyn LivenessTickets,
    client_id: &str,
    policy: &SessionPolicy,
) -> Result<OpenedSession, LivenessError> {
    let s = create_session(sessions, client_id, policy).await?;
    let ticket = new_ticket();
    let ticket_ttl = policy.ticket_ttl.min(policy.session_ttl);
    if let Err(e) = tickets
        .put_ticket(&ticket_digest(&ticket), s.id, client_id, ticket_ttl)
        .await
    {
        // A session nobody can connect to must not hold one of the client's slots.
        if let Err(e) = sessions.conclude(s.id, false, None).await {
            tracing::warn!(session_id = %s.id, error = %e, "ticketless liveness session not given up");
        }
        return Err(e.into());
    }
    Ok(OpenedSession {
        id: s.id,
        actions: s.actions,
        nonce: s.nonce,
        expires_at: s.expires_at,
        ticket,
        ticket_ttl,
    })
}

/// Exchanges a ticket, once, for its session and client.
///
/// # Errors
/// [`Refusal::TicketInvalid`] for a malformed, unknown, used or expired ticket; a store failure.
pub async fn redeem_ticket(
    tickets: &dyn LivenessTickets,
    ticket: &str,
) -> Result<(Uuid, String), LivenessError> {
    let well_formed = ticket.len() == TICKET_LEN
        && ticket
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !well_formed {
        return Err(LivenessError::Refused(Refusal::TicketInvalid));
    }
    tickets
        .take_ticket(&ticket_digest(ticket))
        .await?
        .ok_or(LivenessError::Refused(Refusal::TicketInvalid))
}

/// Takes `session_id` for this connection: it must be `client_id`'s, unused and unexpired.
///
/// # Errors
/// The matching [`Refusal`], or a store failure.
pub async fn activate(
    sessions: &dyn LivenessSessions,
    client_id: &str,
    session_id: Uuid,
) -> Result<ActiveSession, LivenessError> {
    let request_id = Uuid::now_v7();
    let refused = |r| Err(LivenessError::Refused(r));
    match sessions.activate(client_id, session_id, request_id).await? {
        Activation::Active {
            actions,
            nonce,
            expires_at,
        } => {
            let actions = actions
                .iter()
                .map(|a| Action::parse(a))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| StoreError::Other("unknown action in a stored session".into()))?;
            Ok(ActiveSession {
                id: session_id,
                client_id: client_id.to_owned(),
                request_id,
                actions,
                nonce,
                expires_at,
            })
        }
        Activation::NotFound => refused(Refusal::SessionNotFound),
        Activation::Foreign => refused(Refusal::SessionForeign),
        Activation::Used => refused(Refusal::SessionUsed),
        Activation::Expired => refused(Refusal::SessionExpired),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_hold_two_to_four_distinct_actions() {
        for _ in 0..200 {
            let (actions, nonce) = draw_challenge();
            assert!((2..=4).contains(&actions.len()), "{actions:?}");
            let mut unique = actions.clone();
            unique.sort_by_key(|a| a.as_str());
            unique.dedup();
            assert_eq!(unique.len(), actions.len(), "{actions:?}");
            assert_eq!(nonce.len(), 32);
        }
    }

    #[test]
    fn tickets_are_43_base64url_characters_stored_as_their_digest() {
        let t = new_ticket();
        assert_eq!(t.len(), TICKET_LEN);
        assert_ne!(ticket_digest(&t), t);
        assert_eq!(ticket_digest(&t).len(), 64);
    }
}
