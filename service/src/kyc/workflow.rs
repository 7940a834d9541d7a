//! The KYC workflows: read an ID card, compare two faces, and the complete verification. Each
//! records a `kyc_requests` row first and always brings it to a terminal status, whatever the
//! vendors do. Decisions are made here, from what the vendors report; no HTTP, no SQL.

use serde_json::json;
use uuid::Uuid;

use super::model::{NewKycRequest, ReasonCode, RequestType, Status};
use super::pii::{ChineseName, IdNumber, Phone};
use super::ports::{LivenessSessions, OcrReading, RequestStore, StoreError, VendorError, Vendors};

/// The decision's knobs, from `kyc.*` in the config.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub face_threshold: f64,
    pub require_liveness: bool,
    /// The whole workflow's time budget, retries and waits included: a vendor still busy when it
    /// runs out counts as timed out, so every request reaches its verdict within the budget.
    pub budget: std::time::Duration,
}

/// Runs a vendor call within what is left of the budget.
async fn within<T>(
    deadline: tokio::time::Instant,
    call: impl std::future::Future<Output = Result<T, VendorError>>,
) -> Result<T, VendorError> {
    tokio::time::timeout_at(deadline, call)
        .await
        .unwrap_or(Err(VendorError::Timeout))
}

/// Who asks, on behalf of which end user, under which Idempotency-Key.
#[derive(Debug, Clone)]
pub struct Origin {
    pub client_id: String,
    pub user_id: String,
    pub idempotency_key: Option<String>,
}

/// A terminal verdict on one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub request_id: Uuid,
    pub status: Status,
    pub reasons: Vec<ReasonCode>,
}

fn vendor_failure(e: &VendorError, unreadable: ReasonCode) -> (Status, ReasonCode) {
    match e {
        VendorError::Unavailable => (Status::Error, ReasonCode::VendorUnavailable),
        VendorError::Timeout => (Status::Error, ReasonCode::Timeout),
        VendorError::Rejected(_) => (Status::Failed, unreadable),
    }
}

/// Records the verdict. If the row was already finished (the abandoned-request sweep got there
/// first), the stored verdict is the truth and is what the caller answers with.
async fn settle(
    store: &dyn RequestStore,
    id: Uuid,
    status: Status,
    reasons: Vec<ReasonCode>,
    result: &serde_json::Value,
) -> Result<Verdict, StoreError> {
    if store.finish(id, status, &reasons, result).await? {
        return Ok(Verdict {
            request_id: id,
            status,
            reasons,
        });
    }
    let (status, reasons) = store
        .verdict_of(id)
        .await?
        .unwrap_or((Status::Error, vec![ReasonCode::Interrupted]));
    Ok(Verdict {
        request_id: id,
        status,
        reasons,
    })
}

async fn open(
    store: &dyn RequestStore,
    origin: &Origin,
    kind: RequestType,
) -> Result<Uuid, StoreError> {
    open_with(store, origin, kind, None, None, None).await
}

async fn open_with(
    store: &dyn RequestStore,
    origin: &Origin,
    kind: RequestType,
    name: Option<ChineseName>,
    id_number: Option<IdNumber>,
    phone: Option<Phone>,
) -> Result<Uuid, StoreError> {
    let id = Uuid::now_v7();
    store
        .create(&NewKycRequest {
            id,
            client_id: origin.client_id.clone(),
            user_id: origin.user_id.clone(),
            request_type: kind,
            name,
            id_number,
            phone,
            idempotency_key: origin.idempotency_key.clone(),
        })
        .await?;
    Ok(id)
}

/// Reads an ID card. The reading is returned to the caller and not stored.
///
/// # Errors
/// Only a store failure; vendor failures are part of the returned result.
pub async fn read_id_card(
    store: &dyn RequestStore,
    vendors: &dyn Vendors,
    budget: std::time::Duration,
    origin: &Origin,
    image: &[u8],
) -> Result<(Verdict, Result<OcrReading, VendorError>), StoreError> {
    let deadline = tokio::time::Instant::now() + budget;
    let id = open(store, origin, RequestType::Ocr).await?;
    let reading = within(deadline, vendors.read_id_card(id, image, deadline)).await;
    let (status, reasons, result) = match &reading {
        Ok(r) => (
            Status::Success,
            vec![],
            json!({ "confidence": r.confidence, "warnings": r.warnings }),
        ),
        Err(e) => {
            let (s, reason) = vendor_failure(e, ReasonCode::DocumentUnreadable);
            (s, vec![reason], json!({ "vendor_error": e.to_string() }))
        }
    };
    let verdict = settle(store, id, status, reasons, &result).await?;
    let reading = if verdict.status == status {
        reading
    } else {
        Err(VendorError::Timeout)
    };
    Ok((verdict, reading))
}

/// Compares two face images against the configured threshold.
///
/// # Errors
/// Only a store failure; vendor failures are part of the returned result.
pub async fn compare_faces(
    store: &dyn RequestStore,
    vendors: &dyn Vendors,
    policy: Policy,
    origin: &Origin,
    a: &[u8],
    b: &[u8],
) -> Result<(Verdict, Result<f64, VendorError>), StoreError> {
    let deadline = tokio::time::Instant::now() + policy.budget;
    let id = open(store, origin, RequestType::Face).await?;
    let score = within(deadline, vendors.compare_faces(id, a, b, deadline)).await;
    let (status, reasons) = match &score {
        Ok(s) if *s >= policy.face_threshold => (Status::Success, vec![]),
        Ok(_) => (Status::Failed, vec![ReasonCode::FaceMismatch]),
        Err(e) => {
            let (s, r) = vendor_failure(e, ReasonCode::FaceNotFound);
            (s, vec![r])
        }
    };
    let result = json!({ "score": score.as_ref().ok(), "threshold": policy.face_threshold });
    let verdict = settle(store, id, status, reasons, &result).await?;
    let score = if verdict.status == status {
        score
    } else {
        Err(VendorError::Timeout)
    };
    Ok((verdict, score))
}

/// What `/kyc/verify` submits, already parsed except the ID number (whose invalidity is a
/// recorded `failed` outcome, not an input error).
pub struct Submission {
    pub name: ChineseName,
    pub id_number: String,
    pub phone: Phone,
    pub idcard_image: Vec<u8>,
    pub face_image: Vec<u8>,
    pub liveness_session_id: Option<Uuid>,
}

/// The complete verification: checks that cost nothing first, then OCR and face comparison
/// concurrently, then the decision. Once its row exists, the request ends with a verdict even
/// when the store fails midway (best effort: `error`, and the liveness session is given back).
///
/// # Errors
/// Only a store failure; every other outcome is a verdict.
pub async fn verify(
    store: &dyn RequestStore,
    liveness: &dyn LivenessSessions,
    vendors: &dyn Vendors,
    policy: Policy,
    origin: &Origin,
    sub: Submission,
) -> Result<Verdict, StoreError> {
    let deadline = tokio::time::Instant::now() + policy.budget;
    let parsed = IdNumber::parse(&sub.id_number);
    let id = open_with(
        store,
        origin,
        RequestType::Complete,
        Some(sub.name.clone()),
        parsed.clone().ok(),
        Some(sub.phone.clone()),
    )
    .await?;
    let session = sub.liveness_session_id;
    let decided = decide(
        store,
        liveness,
        vendors,
        policy,
        origin,
        id,
        parsed.ok(),
        &sub,
        deadline,
    )
    .await;
    match decided {
        Ok((verdict, release_session)) => {
            if let (Some(s), true) = (session, release_session)
                && let Err(e) = liveness.release(s, id).await
            {
                tracing::warn!(request_id = %id, error = %e, "liveness session not released");
            }
            Ok(verdict)
        }
        Err(e) => {
            if let Some(s) = session {
                let _ = liveness.release(s, id).await;
            }
            let _ = store
                .finish(id, Status::Error, &[ReasonCode::Interrupted], &json!({}))
                .await;
            Err(e)
        }
    }
}

/// The decision for one recorded request; the flag says whether the liveness session it used
/// must be given back (no verdict on the person was reached).
#[allow(clippy::too_many_arguments)]
async fn decide(
    store: &dyn RequestStore,
    liveness: &dyn LivenessSessions,
    vendors: &dyn Vendors,
    policy: Policy,
    origin: &Origin,
    id: Uuid,
    id_number: Option<IdNumber>,
    sub: &Submission,
    deadline: tokio::time::Instant,
) -> Result<(Verdict, bool), StoreError> {
    let Some(id_number) = id_number else {
        return Ok((
            settle(
                store,
                id,
                Status::Failed,
                vec![ReasonCode::IdNumberInvalid],
                &json!({}),
            )
            .await?,
            false,
        ));
    };
    match sub.liveness_session_id {
        Some(session)
            if !liveness
                .consume_passed(&origin.client_id, session, id)
                .await? =>
        {
            return Ok((
                settle(
                    store,
                    id,
                    Status::Failed,
                    vec![ReasonCode::LivenessFailed],
                    &json!({}),
                )
                .await?,
                false,
            ));
        }
        None if policy.require_liveness => {
            return Ok((
                settle(
                    store,
                    id,
                    Status::Failed,
                    vec![ReasonCode::LivenessRequired],
                    &json!({}),
                )
                .await?,
                false,
            ));
        }
        _ => {}
    }

    let (reading, score) = tokio::join!(
        within(
            deadline,
            vendors.read_id_card(id, &sub.idcard_image, deadline)
        ),
        within(
            deadline,
            vendors.compare_faces(id, &sub.idcard_image, &sub.face_image, deadline)
        ),
    );
    let mut result = json!({ "threshold": policy.face_threshold });
    let mut reasons = Vec::new();
    let mut error = None;
    match &reading {
        Ok(r) => {
            result["ocr_confidence"] = json!(r.confidence);
            result["warnings"] = json!(r.warnings);
            if !r.name.trim().eq(sub.name.expose()) {
                reasons.push(ReasonCode::NameMismatch);
            }
            if !r.id_number.trim().eq_ignore_ascii_case(id_number.expose()) {
                reasons.push(ReasonCode::IdNumberMismatch);
            }
            if r.warnings.suspicious() {
                reasons.push(ReasonCode::DocumentSuspicious);
            }
        }
        Err(e) => match vendor_failure(e, ReasonCode::DocumentUnreadable) {
            (Status::Error, r) => error = Some(r),
            (_, r) => reasons.push(r),
        },
    }
    match &score {
        Ok(s) => {
            result["face_score"] = json!(s);
            if *s < policy.face_threshold {
                reasons.push(ReasonCode::FaceMismatch);
            }
        }
        Err(e) => match vendor_failure(e, ReasonCode::FaceNotFound) {
            (Status::Error, r) => error = error.or(Some(r)),
            (_, r) => reasons.push(r),
        },
    }
    if let Some(r) = error {
        // No verdict on the person: the session goes back for the retry we ask for.
        return Ok((
            settle(store, id, Status::Error, vec![r], &result).await?,
            true,
        ));
    }
    let status = if reasons.is_empty() {
        Status::Success
    } else {
        Status::Failed
    };
    let verdict = settle(store, id, status, reasons, &result).await?;
    let interrupted = verdict.status == Status::Error;
    Ok((verdict, interrupted))
}
