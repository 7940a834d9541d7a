//! The records the domain works with. Statuses and reasons are enums, serialised as the API shows them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::pii::{ChineseName, IdNumber, Phone};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestType {
    Ocr,
    Face,
    Complete,
    Liveness,
}

impl RequestType {
    pub const ALL: [Self; 4] = [Self::Ocr, Self::Face, Self::Complete, Self::Liveness];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ocr => "ocr",
            Self::Face => "face",
            Self::Complete => "complete",
            Self::Liveness => "liveness",
        }
    }

    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Processing,
    Success,
    Failed,
    Error,
}

impl Status {
    pub const TERMINAL: [Self; 3] = [Self::Success, Self::Failed, Self::Error];
    const ALL: [Self; 5] = [
        Self::Pending,
        Self::Processing,
        Self::Success,
        Self::Failed,
        Self::Error,
    ];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Success => "success",
            Self::Failed => "failed",
            Self::Error => "error",
        }
    }

    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    #[must_use]
    pub fn is_terminal(self) -> bool {
        Self::TERMINAL.contains(&self)
    }
}

/// Why a request ended `failed` or `error`. Stable codes: clients branch on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReasonCode {
    IdNumberInvalid,
    NameMismatch,
    IdNumberMismatch,
    FaceMismatch,
    LivenessRequired,
    LivenessFailed,
    DocumentSuspicious,
    DocumentUnreadable,
    FaceNotFound,
    VendorUnavailable,
    Timeout,
    Interrupted,
}

impl ReasonCode {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IdNumberInvalid => "ID_NUMBER_INVALID",
            Self::NameMismatch => "NAME_MISMATCH",
            Self::IdNumberMismatch => "ID_NUMBER_MISMATCH",
            Self::FaceMismatch => "FACE_MISMATCH",
            Self::LivenessRequired => "LIVENESS_REQUIRED",
            Self::LivenessFailed => "LIVENESS_FAILED",
            Self::DocumentSuspicious => "DOCUMENT_SUSPICIOUS",
            Self::DocumentUnreadable => "DOCUMENT_UNREADABLE",
            Self::FaceNotFound => "FACE_NOT_FOUND",
            Self::VendorUnavailable => "VENDOR_UNAVAILABLE",
            Self::Timeout => "TIMEOUT",
            Self::Interrupted => "INTERRUPTED",
        }
    }
}

/// A request about to be recorded. PII arrives as validated types and leaves only encrypted.
#[derive(Debug, Clone)]
pub struct NewKycRequest {
    pub id: Uuid,
    pub client_id: String,
    pub user_id: String,
    pub request_type: RequestType,
    pub name: Option<ChineseName>,
    pub id_number: Option<IdNumber>,
    pub phone: Option<Phone>,
    pub idempotency_key: Option<String>,
}

/// The status a client sees (the seed's section 3.6 shape, plus `reasons`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KycRequestView {
    pub id: Uuid,
    pub user_id: String,
    pub request_type: RequestType,
    pub status: Status,
    pub reasons: Vec<String>,
    #[serde(serialize_with = "rfc3339_seconds")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339_seconds")]
    pub updated_at: DateTime<Utc>,
}

/// `2024-01-15T10:30:00Z`, as the seed prints timestamps.
fn rfc3339_seconds<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}
