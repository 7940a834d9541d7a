//! The token endpoint's logic (RFC 6749): client authentication, the `client_credentials` and
//! `refresh_token` grants, scope narrowing, and refresh-token rotation with reuse detection.

use chrono::Utc;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use super::Scope;
use super::tokens::TokenService;
use crate::crypto;
use crate::kyc::ports::StoreError;
use crate::store::{clients, refresh};

/// The parameters of a token request, from a JSON or form body.
#[derive(Debug, Default, Deserialize)]
pub struct TokenRequest {
    pub grant_type: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub scope: Option<String>,
    pub refresh_token: Option<String>,
}

/// Client credentials from an `Authorization: Basic` header.
#[derive(Debug)]
pub struct BasicCredentials {
    pub client_id: String,
    pub client_secret: String,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub refresh_token: String,
    pub scope: String,
}

/// RFC 6749 section 5.2 error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnsupportedGrantType,
    InvalidScope,
}

impl OAuthErrorCode {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error("{}: {description}", code.as_str())]
    OAuth {
        code: OAuthErrorCode,
        description: &'static str,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("token signing failed: {0}")]
    Signing(String),
    #[error("too many token requests at once")]
    Busy,
}

fn oauth(code: OAuthErrorCode, description: &'static str) -> GrantError {
    GrantError::OAuth { code, description }
}

/// Authenticates the client and runs the requested grant.
///
/// # Errors
/// An RFC 6749 error for the client, or a store failure.
pub async fn token(
    db: &PgPool,
    tokens: &TokenService,
    req: TokenRequest,
    basic: Option<BasicCredentials>,
) -> Result<(TokenResponse, &'static str), GrantError> {
    use OAuthErrorCode::{
        InvalidClient, InvalidGrant, InvalidRequest, InvalidScope, UnsupportedGrantType,
    };

    let (client_id, secret) = match (basic, req.client_secret) {
        (Some(_), Some(_)) => {
            return Err(oauth(
                InvalidRequest,
                "use one client authentication method, not two",
            ));
        }
        (Some(b), None) => {
            if req.client_id.as_deref().is_some_and(|id| id != b.client_id) {
                return Err(oauth(
                    InvalidRequest,
                    "client_id does not match the Authorization header",
                ));
            }
            (b.client_id, b.client_secret)
        }
        (None, Some(secret)) => match req.client_id {
            Some(id) => (id, secret),
            None => return Err(oauth(InvalidClient, "client authentication failed")),
        },
        (None, None) => return Err(oauth(InvalidClient, "client authentication failed")),
    };
    let client = authenticate(db, &client_id, secret).await?;
    let allowed: Vec<Scope> = client
        .scopes
        .iter()
        .filter_map(|s| Scope::parse(s))
        .collect();
    let requested = match req
        .scope
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        None => None,
        Some(s) => Some(
            Scope::parse_list(s)
                .map_err(|_| oauth(InvalidScope, "the requested scope is unknown"))?,
        ),
    };

    let grant = req
        .grant_type
        .as_deref()
        .ok_or_else(|| oauth(InvalidRequest, "grant_type is required"))?;
    let (scopes, refresh_token, grant) = match grant {
        "client_credentials" => {
            let scopes = match requested {
                Some(r) if !r.iter().all(|s| allowed.contains(s)) => {
                    return Err(oauth(
                        InvalidScope,
                        "the requested scope exceeds what the client may have",
                    ));
                }
                Some(r) => r,
                None => allowed,
            };
            let minted = tokens
                .mint_refresh(&client.client_id)
                .map_err(|e| GrantError::Signing(e.to_string()))?;
            refresh::insert(
                db,
                &new_refresh(
                    tokens,
                    &client.client_id,
                    &minted.token,
                    minted.id,
                    Uuid::new_v4(),
                    &scopes,
                ),
            )
            .await?;
            (scopes, minted.token, "client_credentials")
        }
        "refresh_token" => {
            let presented = req
                .refresh_token
                .ok_or_else(|| oauth(InvalidRequest, "refresh_token is required"))?;
            let claims = tokens
                .verify_refresh(&presented)
                .map_err(|_| oauth(InvalidGrant, "the refresh token is invalid"))?;
            if claims.sub != client.client_id {
                return Err(oauth(InvalidGrant, "the refresh token is invalid"));
            }
            let minted = tokens
                .mint_refresh(&client.client_id)
                .map_err(|e| GrantError::Signing(e.to_string()))?;
            let next = new_refresh(
                tokens,
                &client.client_id,
                &minted.token,
                minted.id,
                Uuid::nil(),
                &[],
            );
            let req_strings: Option<Vec<String>> =
                requested.map(|r| r.iter().map(|s| s.as_str().to_owned()).collect());
            match refresh::rotate(
                db,
                &crypto::sha256(presented.as_bytes()),
                &client.client_id,
                req_strings.as_deref(),
                next,
            )
            .await?
            {
                refresh::Rotation::Rotated { scopes } => {
                    // A client whose scopes were cut since keeps only what it still may have.
                    let scopes: Vec<Scope> = scopes
                        .iter()
                        .filter_map(|s| Scope::parse(s))
                        .filter(|s| allowed.contains(s))
                        .collect();
                    (scopes, minted.token, "refresh_token")
                }
                refresh::Rotation::ReuseDetected { family_id } => {
                    tracing::warn!(client_id = %client.client_id, %family_id, "refresh token reused: family revoked");
                    return Err(oauth(InvalidGrant, "the refresh token is invalid"));
                }
                refresh::Rotation::Invalid => {
                    return Err(oauth(InvalidGrant, "the refresh token is invalid"));
                }
                refresh::Rotation::ScopeExceeded => {
                    return Err(oauth(
                        InvalidScope,
                        "the requested scope exceeds the original grant",
                    ));
                }
            }
        }
        _ => {
            return Err(oauth(
                UnsupportedGrantType,
                "grant_type must be client_credentials or refresh_token",
            ));
        }
    };

    let access = tokens
        .mint_access(&client.client_id, &scopes)
        .map_err(|e| GrantError::Signing(e.to_string()))?;
    Ok((
        TokenResponse {
            access_token: access.token,
            token_type: "Bearer",
            expires_in: tokens.access_ttl().as_secs(),
            refresh_token,
            scope: Scope::join(&scopes),
        },
        grant,
    ))
}

fn new_refresh(
    tokens: &TokenService,
    client_id: &str,
    token: &str,
    id: Uuid,
    family_id: Uuid,
    scopes: &[Scope],
) -> refresh::NewRefreshToken {
    refresh::NewRefreshToken {
        id,
        family_id,
        client_id: client_id.to_owned(),
        token_hash: crypto::sha256(token.as_bytes()),
        scopes: scopes.iter().map(|s| s.as_str().to_owned()).collect(),
        expires_at: Utc::now() + tokens.refresh_ttl(),
    }
}

/// At most this many argon2 checks run at once (a few per core).
static SECRET_CHECKS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// Checks the client's secret with argon2 off the async threads. An unknown client costs the same
/// as a wrong secret, so timing does not tell which ids exist.
async fn authenticate(
    db: &PgPool,
    client_id: &str,
    secret: String,
) -> Result<clients::ClientRecord, GrantError> {
    let record = if client_id.len() <= 64 {
        clients::find(db, client_id).await?
    } else {
        None
    };
    let hash = record.as_ref().map_or_else(
        || crypto::DUMMY_SECRET_HASH.clone(),
        |c| c.secret_hash.clone(),
    );
    // Each check costs ~19 MiB and a core for tens of ms: a flood waits here briefly and is then
    // refused (503), instead of filling the blocking pool.
    let permit = tokio::time::timeout(std::time::Duration::from_secs(2), SECRET_CHECKS.acquire())
        .await
        .map_err(|_| GrantError::Busy)?
        .map_err(|_| GrantError::Busy)?;
    let ok = tokio::task::spawn_blocking(move || crypto::verify_secret(&secret, &hash))
        .await
        .map_err(|e| GrantError::Signing(format!("secret check failed: {e}")))?;
    drop(permit);
    match record {
        Some(c) if ok && c.disabled_at.is_none() => Ok(c),
        _ => Err(oauth(
            OAuthErrorCode::InvalidClient,
            "client authentication failed",
        )),
    }
}
