//! The traits the domain needs from the outside world. `store/` implements them on PostgreSQL;
//! tests may implement them in memory.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::liveness::Action;
use super::model::{KycRequestView, NewKycRequest, ReasonCode, Status};

/// A failure of the record store, with no detail that could hold PII.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database is unavailable")]
    Unavailable,
    #[error("the record conflicts with an existing one")]
    Conflict,
    #[error("store error: {0}")]
    Other(String),
}

#[async_trait]
pub trait RequestStore: Send + Sync {
    /// Records a new request in `processing`.
    async fn create(&self, request: &NewKycRequest) -> Result<(), StoreError>;

    /// The status and reasons a request ended with (to answer truthfully when `finish` finds the
    /// row already finished by the abandoned-request sweep).
    async fn verdict_of(&self, id: Uuid) -> Result<Option<(Status, Vec<ReasonCode>)>, StoreError>;

    /// Moves a request to a terminal status. Returns false if it was not `pending`/`processing`.
    async fn finish(
        &self,
        id: Uuid,
        status: Status,
        reasons: &[ReasonCode],
        result: &serde_json::Value,
    ) -> Result<bool, StoreError>;

    /// The request if it exists and belongs to `client_id`.
    async fn find_for_client(
        &self,
        client_id: &str,
        id: Uuid,
    ) -> Result<Option<KycRequestView>, StoreError>;
}

/// What an ID-card OCR vendor read. Holds PII in plaintext, so `Debug` masks it.
#[derive(Clone, PartialEq, serde::Deserialize)]
pub struct OcrReading {
    pub name: String,
    pub id_number: String,
    #[serde(default)]
    pub sex: Option<String>,
    #[serde(default)]
    pub ethnicity: Option<String>,
    #[serde(default)]
    pub birth_date: Option<String>,
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub confidence: f64,
    #[serde(default)]
    pub warnings: DocumentWarnings,
}

impl std::fmt::Debug for OcrReading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OcrReading")
            .field("name", &super::pii::mask_name(&self.name))
            .field("id_number", &super::pii::mask_id_number(&self.id_number))
            .field("confidence", &self.confidence)
            .field("warnings", &self.warnings)
            .finish_non_exhaustive()
    }
}

/// The vendor's doubts about the document itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DocumentWarnings {
    #[serde(default)]
    pub photocopy: bool,
    #[serde(default)]
    pub screen_reshoot: bool,
    #[serde(default)]
    pub edited: bool,
    #[serde(default)]
    pub low_quality: bool,
}

impl DocumentWarnings {
    /// Signs that the document is not an original card photographed directly.
    #[must_use]
    pub fn suspicious(&self) -> bool {
        self.photocopy || self.screen_reshoot || self.edited
    }
}

/// How a vendor call failed, as the workflow needs to know it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VendorError {
    /// Down, overloaded, circuit open, or answering garbage: an `error` outcome.
    #[error("the vendor is unavailable")]
    Unavailable,
    /// No answer within the configured timeout (after retries).
    #[error("the vendor timed out")]
    Timeout,
    /// The vendor refused the input (4xx), with its code: a `failed` outcome.
    #[error("the vendor refused the input: {0}")]
    Rejected(String),
}

/// A liveness session about to be recorded, in `created`.
#[derive(Debug, Clone)]
pub struct NewLivenessSession {
    pub id: Uuid,
    pub client_id: String,
    pub actions: Vec<Action>,
    pub nonce: String,
    pub expires_at: DateTime<Utc>,
}

/// What connecting to a session found.
#[derive(Debug, Clone, PartialEq)]
pub enum Activation {
    /// The session was `created` and is now `active`, linked to its new `liveness` request.
    Active {
        actions: Vec<String>,
        nonce: String,
        expires_at: DateTime<Utc>,
    },
    NotFound,
    /// Another client's session.
    Foreign,
    /// Connected before, or finished.
    Used,
    Expired,
}

/// Liveness sessions: created with a challenge, connected once, concluded with a verdict, and
/// consumed by `/kyc/verify`. Correct across instances: every transition is one atomic statement.
#[async_trait]
pub trait LivenessSessions: Send + Sync {
    /// Records `session` unless its client already holds `max_open` sessions neither finished nor
    /// expired. Returns whether it did.
    async fn create(&self, session: &NewLivenessSession, max_open: u32)
    -> Result<bool, StoreError>;

    /// Moves a `created`, unexpired session of `client_id` to `active` and records its `liveness`
    /// request (`request_id`, in `processing`), both or neither.
    async fn activate(
        &self,
        client_id: &str,
        session_id: Uuid,
        request_id: Uuid,
    ) -> Result<Activation, StoreError>;

    /// Ends a session that is not yet finished: `passed` or `failed`, with the lowest score.
    async fn conclude(
        &self,
        session_id: Uuid,
        passed: bool,
        score: Option<f64>,
    ) -> Result<(), StoreError>;

    /// Marks the session used by `request_id` if it passed, has not expired, is unused and belongs
    /// to `client_id`. Returns whether it did.
    async fn consume_passed(
        &self,
        client_id: &str,
        session_id: Uuid,
        request_id: Uuid,
    ) -> Result<bool, StoreError>;

    /// Undoes `consume_passed` by `request_id` when that request ended without a verdict.
    async fn release(&self, session_id: Uuid, request_id: Uuid) -> Result<(), StoreError>;
}

/// Single-use liveness tickets, kept by the SHA-256 of the ticket only, shared by every instance.
#[async_trait]
pub trait LivenessTickets: Send + Sync {
    /// Keeps `digest` → (session, client) for `ttl`.
    async fn put_ticket(
        &self,
        digest: &str,
        session_id: Uuid,
        client_id: &str,
        ttl: Duration,
    ) -> Result<(), StoreError>;

    /// Reads and deletes, in one step, the ticket with `digest`: a second take finds nothing.
    async fn take_ticket(&self, digest: &str) -> Result<Option<(Uuid, String)>, StoreError>;
}

/// A liveness vendor's judgement of one action's frames.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct LivenessCheck {
    pub passed: bool,
    pub score: f64,
    #[serde(default)]
    pub reason: Option<String>,
}

#[async_trait]
pub trait Vendors: Send + Sync {
    /// Reads an ID card; the vendor gives up (as `Timeout`) by `deadline`.
    async fn read_id_card(
        &self,
        request_id: Uuid,
        image: &[u8],
        deadline: tokio::time::Instant,
    ) -> Result<OcrReading, VendorError>;
    /// Compares two faces; the vendor gives up (as `Timeout`) by `deadline`.
    async fn compare_faces(
        &self,
        request_id: Uuid,
        a: &[u8],
        b: &[u8],
        deadline: tokio::time::Instant,
    ) -> Result<f64, VendorError>;
    /// Judges whether `frames`, captured while the user was asked for `action`, show a live
    /// person; the vendor gives up (as `Timeout`) by `deadline`.
    async fn check_liveness(
        &self,
        request_id: Uuid,
        action: Action,
        frames: &[Vec<u8>],
        deadline: tokio::time::Instant,
    ) -> Result<LivenessCheck, VendorError>;
}
