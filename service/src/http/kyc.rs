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
