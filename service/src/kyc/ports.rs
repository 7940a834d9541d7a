//! The traits the domain needs from the outside world. `store/` implements them on PostgreSQL;
//! tests may implement them in memory.

use async_trait::async_trait;
use uuid::Uuid;

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

    /// Moves a request to a terminal status. Returns false if it was not `pending`/`processing`.
    async fn finish(
        &self,
        id: Uuid,
        status: Status,
        reasons: &[ReasonCode],
    ) -> Result<bool, StoreError>;

    /// The request if it exists and belongs to `client_id`.
    async fn find_for_client(
        &self,
        client_id: &str,
        id: Uuid,
    ) -> Result<Option<KycRequestView>, StoreError>;
}
