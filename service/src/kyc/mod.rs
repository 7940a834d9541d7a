//! The domain: KYC rules and workflow. It declares in `ports` the traits it needs from the outside
//! world and imports nothing from `http`, `store` or `vendors`.

pub mod liveness;
pub mod model;
pub mod pii;
pub mod ports;
pub mod workflow;

use uuid::Uuid;

use self::model::KycRequestView;
use self::ports::{RequestStore, StoreError};

/// What the domain can answer instead of a result.
#[derive(Debug, thiserror::Error)]
pub enum KycError {
    /// Unknown, malformed, or another client's: all look the same from outside.
    #[error("KYC request not found")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The status of one request, as its own client sees it. A malformed id, an unknown id and another
/// client's id are the same `NotFound`, so ids cannot be probed across tenants.
///
/// # Errors
/// [`KycError::NotFound`], or the store's failure.
pub async fn request_status(
    store: &dyn RequestStore,
    client_id: &str,
    raw_id: &str,
) -> Result<KycRequestView, KycError> {
    let id = Uuid::try_parse(raw_id).map_err(|_| KycError::NotFound)?;
    store
        .find_for_client(client_id, id)
        .await?
        .ok_or(KycError::NotFound)
}
