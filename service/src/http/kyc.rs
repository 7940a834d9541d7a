//! `/api/v1/kyc/*` handlers.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::{Extension, Json};

use crate::app::AppState;
use crate::auth::{Caller, Scope};
use crate::error::AppError;
use crate::kyc::model::KycRequestView;

/// `GET /api/v1/kyc/status/{id}`: the seed's section 3.6 shape, for the caller's own requests only.
pub async fn status(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<KycRequestView>, AppError> {
    if !caller.has(Scope::KycRead) {
        return Err(AppError::InsufficientScope(Scope::KycRead));
    }
    let Ok(Path(id)) = id else {
        return Err(AppError::NotFound);
    };
    Ok(Json(
        crate::kyc::request_status(st.requests.as_ref(), &caller.client_id, &id).await?,
    ))
}

use axum::extract::multipart::Multipart;
use axum::extract::multipart::MultipartRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use uuid::Uuid;

use super::idempotency;
use super::upload::{Upload, UploadLimits, invalid, missing};
use crate::kyc::model::Status;
use crate::kyc::pii::{ChineseName, Phone};
use crate::kyc::ports::VendorError;
use crate::kyc::workflow::{self, Origin, Policy, Submission};

fn multipart(m: Result<Multipart, MultipartRejection>) -> Result<Multipart, AppError> {
    m.map_err(|_| AppError::UnsupportedMediaType {
        expected: "multipart/form-data",
    })
}

fn require(caller: &Caller, scope: Scope) -> Result<(), AppError> {
    if caller.has(scope) {
        Ok(())
    } else {
        Err(AppError::InsufficientScope(scope))
    }
}

/// `user_id` if given (bounded, plain), else the token's subject.
fn user_id(up: &Upload, caller: &Caller) -> Result<String, AppError> {
    match up.text("user_id") {
        None => Ok(caller.client_id.clone()),
        Some(u) if crate::telemetry::mask::mask_text(u) != u => Err(invalid(
            "user_id",
            "USER_ID_INVALID",
            "user_id must be an opaque id, not a phone or ID number",
        )),
        Some(u)
            if u.len() <= 64
                && u.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b)) =>
        {
            Ok(u.to_owned())
        }
        Some(_) => Err(invalid(
            "user_id",
            "USER_ID_INVALID",
            "user_id must be 1-64 of A-Z a-z 0-9 . _ : -",
        )),
    }
}

/// The decision's knobs, with the time left to this request (from its arrival) less a margin to
/// record the verdict and answer.
fn policy(st: &AppState) -> Policy {
    let timeout = st.settings.http.request_timeout;
    let deadline = crate::error::REQUEST_DEADLINE
        .try_with(|d| *d)
        .unwrap_or_else(|_| tokio::time::Instant::now() + timeout);
    let margin = std::time::Duration::from_millis(500).min(timeout / 4);
    Policy {
        face_threshold: st.settings.kyc.face_threshold,
        require_liveness: st.settings.kyc.require_liveness,
        budget: deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .saturating_sub(margin),
    }
}

/// A vendor failure on an accepted request: the answer names the KYC request so its status can be read.
fn vendor_failure(e: &VendorError, request_id: Uuid) -> Response {
    let (status, code, message) = match e {
        VendorError::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "VENDOR_UNAVAILABLE",
            "the verification vendor is unavailable; retry shortly",
        ),
        VendorError::Timeout => (
            StatusCode::SERVICE_UNAVAILABLE,
            "TIMEOUT",
            "the verification vendor did not answer in time; retry shortly",
        ),
        VendorError::Rejected(_) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "DOCUMENT_UNREADABLE",
            "the image could not be read; send a clearer photo",
        ),
    };
    let body = json!({
        "success": false,
        "error": { "code": code, "message": message },
        "request_id": crate::error::current_request_id(),
        "kyc_request_id": request_id,
    });
    let mut resp = (status, Json(body)).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

/// What every upload endpoint does first: the scope, the Idempotency-Key, the multipart body
/// (with its limits) and the payload fingerprint.
struct Intake {
    up: Upload,
    key: Option<String>,
    fingerprint: Vec<u8>,
}

impl Intake {
    async fn read(
        st: &AppState,
        caller: &Caller,
        headers: &HeaderMap,
        mp: Result<Multipart, MultipartRejection>,
        path: &str,
        files: &[&str],
    ) -> Result<Self, AppError> {
        require(caller, Scope::KycWrite)?;
        let key = idempotency::key(headers)?;
        let limits = UploadLimits::from_settings(&st.settings);
        let up = Upload::read(multipart(mp)?, files, &limits).await?;
        let fingerprint = up.fingerprint("POST", path);
        Ok(Self {
            up,
            key,
            fingerprint,
        })
    }

    fn origin(&self, caller: &Caller) -> Result<Origin, AppError> {
        Ok(Origin {
            client_id: caller.client_id.clone(),
            user_id: user_id(&self.up, caller)?,
            idempotency_key: self.key.clone(),
        })
    }
}

/// Runs `work` at most once per Idempotency-Key, on its own task: a client that hangs up does
/// not cancel a request the service has accepted, so its row always reaches a terminal status.
async fn run_once<F, Fut>(
    st: AppState,
    client_id: String,
    intake_key: Option<String>,
    fingerprint: Vec<u8>,
    work: F,
) -> Result<Response, AppError>
where
    F: FnOnce(AppState, Policy) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = (Response, Option<Uuid>)> + Send,
{
    // Accepted work is bounded: beyond this many at once, new uploads are turned away.
    let slot = st
        .upload_slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| AppError::Unavailable("the KYC service (busy)"))?;
    let request_id = crate::error::current_request_id();
    let pol = policy(&st);
    let tasks = st.tasks.clone();
    let task = async move {
        let for_work = st.clone();
        let answer = idempotency::guard(&st, &client_id, intake_key, fingerprint, move || {
            work(for_work, pol)
        })
        .await;
        drop(slot);
        answer
    };
    tasks
        .spawn(crate::error::REQUEST_ID.scope(request_id, task))
        .await
        .map_err(|e| AppError::Internal(format!("request task failed: {e}")))?
}

/// `POST /api/v1/kyc/ocr`: multipart `image` (and `language`); the seed's shape plus the other fields.
pub async fn ocr(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    mp: Result<Multipart, MultipartRejection>,
) -> Result<Response, AppError> {
    let mut intake =
        Intake::read(&st, &caller, &headers, mp, "/api/v1/kyc/ocr", &["image"]).await?;
    let image = intake.up.image("image")?;
    let origin = intake.origin(&caller)?;
    run_once(
        st,
        caller.client_id,
        intake.key,
        intake.fingerprint,
        move |st, pol| async move {
            match workflow::read_id_card(
                st.requests.as_ref(),
                st.vendors.as_ref(),
                pol.budget,
                &origin,
                &image,
            )
            .await
            {
                Err(e) => (AppError::from(e).into_response(), None),
                Ok((v, Err(e))) => (vendor_failure(&e, v.request_id), Some(v.request_id)),
                Ok((v, Ok(r))) => {
                    let body = json!({
                        "success": true,
                        "id_card": r.id_number,
                        "name": r.name,
                        "sex": r.sex,
                        "ethnicity": r.ethnicity,
                        "birth_date": r.birth_date,
                        "address": r.address,
                        "confidence": r.confidence,
                        "warnings": r.warnings,
                        "request_id": v.request_id,
                    });
                    (Json(body).into_response(), Some(v.request_id))
                }
            }
        },
    )
    .await
}

/// `POST /api/v1/kyc/face/verify`: multipart `image1`, `image2`; `{success, score, threshold, request_id}`.
pub async fn face_verify(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    mp: Result<Multipart, MultipartRejection>,
) -> Result<Response, AppError> {
    let mut intake = Intake::read(
        &st,
        &caller,
        &headers,
        mp,
        "/api/v1/kyc/face/verify",
        &["image1", "image2"],
    )
    .await?;
    let (a, b) = (intake.up.image("image1")?, intake.up.image("image2")?);
    let origin = intake.origin(&caller)?;
    run_once(
        st,
        caller.client_id,
        intake.key,
        intake.fingerprint,
        move |st, pol| async move {
            match workflow::compare_faces(
                st.requests.as_ref(),
                st.vendors.as_ref(),
                pol,
                &origin,
                &a,
                &b,
            )
            .await
            {
                Err(e) => (AppError::from(e).into_response(), None),
                Ok((v, Err(e @ (VendorError::Unavailable | VendorError::Timeout)))) => {
                    (vendor_failure(&e, v.request_id), Some(v.request_id))
                }
                Ok((v, score)) => {
                    let body = json!({
                        "success": v.status == Status::Success,
                        "score": score.as_ref().ok(),
                        "threshold": pol.face_threshold,
                        "request_id": v.request_id,
                        "reasons": v.reasons,
                    });
                    (Json(body).into_response(), Some(v.request_id))
                }
            }
        },
    )
    .await
}

/// `POST /api/v1/kyc/verify`: the complete verification, in the seed's shape plus `reasons`.
pub async fn verify(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    mp: Result<Multipart, MultipartRejection>,
) -> Result<Response, AppError> {
    let mut intake = Intake::read(
        &st,
        &caller,
        &headers,
        mp,
        "/api/v1/kyc/verify",
        &["idcard_image", "face_image"],
    )
    .await?;
    let up = &mut intake.up;
    let name = ChineseName::parse(up.text("name").ok_or_else(|| missing("name"))?)
        .map_err(|e| invalid("name", "NAME_INVALID", e.to_string()))?;
    let id_number = up
        .text("idcard")
        .ok_or_else(|| missing("idcard"))?
        .to_owned();
    let phone = Phone::parse(up.text("phone").ok_or_else(|| missing("phone"))?)
        .map_err(|e| invalid("phone", "PHONE_INVALID", e.to_string()))?;
    let liveness_session_id = up
        .text("liveness_session_id")
        .map(|s| {
            Uuid::try_parse(s.trim()).map_err(|_| {
                invalid(
                    "liveness_session_id",
                    "LIVENESS_SESSION_INVALID",
                    "not a session id",
                )
            })
        })
        .transpose()?;
    let submission = Submission {
        name,
        id_number,
        phone,
        idcard_image: up.image("idcard_image")?,
        face_image: up.image("face_image")?,
        liveness_session_id,
    };
    let origin = intake.origin(&caller)?;
    run_once(
        st,
        caller.client_id,
        intake.key,
        intake.fingerprint,
        move |st, pol| async move {
            match workflow::verify(
                st.requests.as_ref(),
                st.liveness.as_ref(),
                st.vendors.as_ref(),
                pol,
                &origin,
                submission,
            )
            .await
            {
                Err(e) => (AppError::from(e).into_response(), None),
                Ok(v) => {
                    let (code, message) = match v.status {
                        Status::Success => (StatusCode::OK, "KYC认证成功"),
                        Status::Failed => (StatusCode::OK, "KYC认证失败"),
                        _ => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "KYC认证暂时无法完成，请稍后重试",
                        ),
                    };
                    let body: Value = json!({
                        "request_id": v.request_id,
                        "status": v.status,
                        "message": message,
                        "reasons": v.reasons,
                        "success": v.status == Status::Success,
                    });
                    let mut resp = (code, Json(body)).into_response();
                    if code == StatusCode::SERVICE_UNAVAILABLE {
                        resp.headers_mut()
                            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                    }
                    (resp, Some(v.request_id))
                }
            }
        },
    )
    .await
}
