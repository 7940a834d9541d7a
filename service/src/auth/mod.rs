//! Who is calling: scopes, access and refresh tokens (JWT), and the OAuth 2.0 token endpoint's
//! grants (`client_credentials`, `refresh_token`).

pub mod oauth;
pub mod tokens;

use std::fmt;

/// A permission an access token can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Read KYC statuses.
    KycRead,
    /// Submit KYC requests.
    KycWrite,
    /// See PII unmasked at the gateway.
    KycPii,
}

impl Scope {
    pub const ALL: [Self; 3] = [Self::KycRead, Self::KycWrite, Self::KycPii];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::KycRead => "kyc:read",
            Self::KycWrite => "kyc:write",
            Self::KycPii => "kyc:pii",
        }
    }

    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Parses a space-separated scope string (RFC 6749 section 3.3). `Err` carries the unknown one.
    ///
    /// # Errors
    /// The first token that is not a known scope.
    pub fn parse_list(s: &str) -> Result<Vec<Self>, String> {
        let mut out: Vec<Self> = Vec::new();
        for token in s.split_ascii_whitespace() {
            let scope = Self::parse(token).ok_or_else(|| token.to_owned())?;
            if !out.contains(&scope) {
                out.push(scope);
            }
        }
        Ok(out)
    }

    #[must_use]
    pub fn join(scopes: &[Self]) -> String {
        scopes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The verified caller of a request: set by the auth middleware, read by handlers.
#[derive(Debug, Clone)]
pub struct Caller {
    pub client_id: String,
    pub scopes: Vec<Scope>,
    pub token_id: String,
}

impl Caller {
    #[must_use]
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}
