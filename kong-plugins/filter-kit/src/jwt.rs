//! Bearer-token authentication: finds the access token (RFC 6750), verifies it as a compact JWS
//! (HS256, EdDSA, ES256; RFC 7515/7518/8037) and its claims (RFC 7519, RFC 9068's `at+jwt`),
//! checks the required scopes, and maps every failure to the RFC 6750 reply the filter sends.
//! Keys come from the config only: a token's own `jwk`/`jku`/`x5u` headers are never used, and no
//! key is fetched. Revocation stays with kyc-service.
//!
//! [`TokenCache`] spares a worker verifying the same asymmetric token on every request.
//!
//! Only what the config allows verifies: `alg` must be on the allow-list (`none` never is), an
//! HS256 token is checked against exactly one configured secret (never against a public key): the
//! one, current or previous, whose derived `kid` the token names, else the current one; and an
//! EdDSA or ES256 token only against JWKS keys of its own type, chosen by `kid` when it has one.

use std::borrow::Cow;
use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use p256_nostd::ecdsa::signature::Verifier;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{Algorithm, JwtConfig, PublicKey};
use crate::reply::error_body;

/// Tokens longer than this are refused before any parsing (kyc-service's are under 1 KiB).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Who a verified token speaks for. Serialisable, so the JWT filter can hand it to the filters
/// after it through `kong.ctx.shared`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The `client_id` claim, else `sub`.
    pub client_id: String,
    /// The `scope` claim, split on spaces, without duplicates, in token order.
    pub scopes: Vec<String>,
    /// The `sub` claim.
    pub subject: Option<String>,
    /// The `jti` claim.
    pub token_id: Option<String>,
}

impl Identity {
    /// Whether the token carries `scope`.
    #[must_use]
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// Why a request was not authenticated. `Display` is a message safe for the client and the log:
/// it never contains the token or any part of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// No bearer token in the request (or only one in the query while that is not allowed).
    #[error("an Authorization: Bearer access token is required")]
    Missing,
    /// Longer than [`MAX_TOKEN_BYTES`].
    #[error("the access token is too large")]
    TooLarge,
    /// Not three base64url parts, or a header or claims that are not the JSON expected.
    #[error("the access token is malformed")]
    Malformed,
    /// `none`, an unknown algorithm, or one the config does not allow.
    #[error("the access token's signing algorithm is not accepted")]
    AlgorithmNotAllowed,
    /// The header has `crit`: it asks for extensions this verifier does not implement.
    #[error("the access token requires unsupported header extensions")]
    UnsupportedCritical,
    /// The header's `typ` is not the configured token type (a refresh or ID token, say).
    #[error("the token is not an access token")]
    WrongType,
    /// No configured key fits the token's algorithm and `kid`.
    #[error("the access token was signed with an unknown key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the access token signature is invalid")]
    BadSignature,
    /// No `exp` claim: the gateway accepts no token that never expires.
    #[error("the access token has no expiry")]
    MissingExpiry,
    /// `exp` is past (beyond the leeway).
    #[error("the access token has expired")]
    Expired,
    /// `nbf` is ahead (beyond the leeway).
    #[error("the access token is not valid yet")]
    NotYetValid,
    /// `iat` is ahead (beyond the leeway).
    #[error("the access token was issued in the future")]
    IssuedInFuture,
    /// `iss` is missing or not the configured issuer.
    #[error("the access token was not issued by a trusted issuer")]
    WrongIssuer,
    /// `aud` is missing or does not contain the configured audience.
    #[error("the access token is meant for another audience")]
    WrongAudience,
    /// Neither `client_id` nor `sub`.
    #[error("the access token names no client")]
    NoClient,
    /// The token is valid but lacks required scopes (listed here).
    #[error("the access token lacks the {} scope", .missing.join(" "))]
    InsufficientScope {
        /// The required scopes the token does not carry.
        missing: Vec<String>,
    },
}

impl JwtError {
    /// A stable snake_case name for logs and metric labels (`expired`, `bad_signature`, …).
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::TooLarge => "too_large",
            Self::Malformed => "malformed",
            Self::AlgorithmNotAllowed => "algorithm_not_allowed",
            Self::UnsupportedCritical => "unsupported_critical",
            Self::WrongType => "wrong_type",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::MissingExpiry => "missing_expiry",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::IssuedInFuture => "issued_in_future",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::NoClient => "no_client",
            Self::InsufficientScope { .. } => "insufficient_scope",
        }
    }

    /// The reply for this failure (RFC 6750 section 3): 401 `TOKEN_MISSING` with a bare challenge,
    /// 401 `TOKEN_INVALID` with `error="invalid_token"`, or 403 `INSUFFICIENT_SCOPE` with
    /// `error="insufficient_scope"` and the scopes the resource requires.
    #[must_use]
    pub fn rejection(&self, cfg: &JwtConfig) -> Rejection {
        let realm = &cfg.realm;
        match self {
            Self::Missing => Rejection {
                status: 401,
                www_authenticate: format!("Bearer realm=\"{realm}\""),
                code: "TOKEN_MISSING",
                message: self.to_string(),
            },
            Self::InsufficientScope { missing } => {
                let required = if cfg.required_scopes.is_empty() {
                    missing.join(" ")
                } else {
                    cfg.required_scopes.join(" ")
                };
                Rejection {
                    status: 403,
                    www_authenticate: format!(
                        "Bearer realm=\"{realm}\", error=\"insufficient_scope\", scope=\"{required}\""
                    ),
                    code: "INSUFFICIENT_SCOPE",
                    message: self.to_string(),
                }
            }
            // Every message is a fixed ASCII sentence without quotes, so it is a valid
            // error_description as it stands.
            _ => Rejection {
                status: 401,
                www_authenticate: format!(
                    "Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"{self}\""
                ),
                code: "TOKEN_INVALID",
                message: self.to_string(),
            },
        }
    }
}

/// The reply the JWT filter sends instead of forwarding: status, `WWW-Authenticate` value, and the
/// project's error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// 401 or 403.
    pub status: u16,
    /// The `WWW-Authenticate` header's value.
    pub www_authenticate: String,
    /// `TOKEN_MISSING`, `TOKEN_INVALID` or `INSUFFICIENT_SCOPE`.
    pub code: &'static str,
    /// A message safe to show; never the token.
    pub message: String,
}

impl Rejection {
    /// `{"success":false,"error":{"code":"TOKEN_INVALID","message":"…"},"request_id":"…"}`.
    #[must_use]
    pub fn json_body(&self, request_id: &str) -> Vec<u8> {
        error_body(self.code, &self.message, request_id)
    }
}

/// The token of an `Authorization: Bearer <token>` value. The scheme is case-insensitive and
/// spaces or tabs around the parts are ignored; any other scheme (or an empty token) is `None`.
#[must_use]
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let value = authorization.trim_matches([' ', '\t']);
    let (scheme, rest) = value.split_once([' ', '\t'])?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim_matches([' ', '\t']);
    (!token.is_empty()).then_some(token)
}

/// The first `access_token` query parameter of a `:path` (`/x?access_token=…`), percent-decoded
/// (RFC 6750 section 2.3). `None` when the path has no query or no such non-empty parameter.
#[must_use]
pub fn query_token(path: &str) -> Option<Cow<'_, str>> {
    let without_fragment = path.split('#').next().unwrap_or_default();
    let (_, query) = without_fragment.split_once('?')?;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("access_token="))
        .filter(|v| !v.is_empty())
        .map(percent_decode)
}

/// Whether a request with no token may pass without an identity: the config names an
/// `anonymous_query_param` and the path's query carries it with a non-empty value.
#[must_use]
pub fn passes_anonymously(
    cfg: &JwtConfig,
    authorization: Option<&str>,
    path: Option<&str>,
) -> bool {
    let Some(param) = cfg.anonymous_query_param.as_deref() else {
        return false;
    };
    if extract_token(cfg, authorization, path).is_some()
        || authorization.is_some_and(|a| !a.trim().is_empty())
    {
        return false;
    }
    let Some((_, query)) = path
        .and_then(|p| p.split('#').next())
        .and_then(|p| p.split_once('?'))
    else {
        return false;
    };
    query.split('&').any(|pair| {
        pair.split_once('=')
            .is_some_and(|(k, v)| k == param && !v.is_empty())
    })
}

fn percent_decode(value: &str) -> Cow<'_, str> {
    if !value.contains('%') {
        return Cow::Borrowed(value);
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    // A token that does not decode to UTF-8 cannot verify; pass it on as it came.
    String::from_utf8(out).map_or(Cow::Borrowed(value), Cow::Owned)
}

/// The request's token: the `Authorization` bearer token, else (only if the config allows it)
/// the `access_token` query parameter of `path`.
#[must_use]
pub fn extract_token<'a>(
    cfg: &JwtConfig,
    authorization: Option<&'a str>,
    path: Option<&'a str>,
) -> Option<Cow<'a, str>> {
    if let Some(token) = authorization.and_then(bearer_token) {
        return Some(Cow::Borrowed(token));
    }
    if cfg.allow_query_token {
        path.and_then(query_token)
    } else {
        None
    }
}

/// Authenticates a request: finds the token, verifies it at `now_s` (seconds since the epoch) and
/// checks the required scopes. The one call the JWT filter needs.
///
/// # Errors
/// A [`JwtError`]; turn it into the reply with [`JwtError::rejection`].
pub fn authenticate(
    cfg: &JwtConfig,
    authorization: Option<&str>,
    path: Option<&str>,
    now_s: u64,
) -> Result<Identity, JwtError> {
    let token = extract_token(cfg, authorization, path).ok_or(JwtError::Missing)?;
    let identity = verify(cfg, &token, now_s)?;
    check_scopes(cfg, &identity)?;
    Ok(identity)
}

/// Checks that the identity carries every required scope.
///
/// # Errors
/// [`JwtError::InsufficientScope`] listing the ones it lacks.
pub fn check_scopes(cfg: &JwtConfig, identity: &Identity) -> Result<(), JwtError> {
    let missing: Vec<String> = cfg
        .required_scopes
        .iter()
        .filter(|s| !identity.has_scope(s))
        .cloned()
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(JwtError::InsufficientScope { missing })
    }
}

/// Verifies a compact JWS access token at `now_s` (seconds since the epoch): signature, type,
/// `exp` (required), `nbf`, `iat`, `iss` and `aud`. Scopes are not checked here (see
/// [`check_scopes`]).
///
/// # Errors
/// The first check that fails, as a [`JwtError`].
pub fn verify(cfg: &JwtConfig, token: &str, now_s: u64) -> Result<Identity, JwtError> {
    verify_until(cfg, token, now_s).map(|(identity, _)| identity)
}

/// [`verify`], also returning until when (`exp` + leeway) the token stays valid.
fn verify_until(cfg: &JwtConfig, token: &str, now_s: u64) -> Result<(Identity, f64), JwtError> {
    let payload = verified_payload(cfg, token)?;
    if payload.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(JwtError::Malformed);
    }
    let claims: Claims = serde_json::from_slice(&payload).map_err(|_| JwtError::Malformed)?;
    claims.check(cfg, now_s)?;
    let client_id = claims
        .client_id
        .clone()
        .or_else(|| claims.sub.clone())
        .filter(|c| !c.is_empty())
        .ok_or(JwtError::NoClient)?;
    let mut scopes: Vec<String> = Vec::new();
    for scope in claims
        .scope
        .as_deref()
        .unwrap_or_default()
        .split_ascii_whitespace()
    {
        if !scopes.iter().any(|s| s == scope) {
            scopes.push(scope.to_owned());
        }
    }
    #[allow(clippy::cast_precision_loss)] // seconds since the epoch are far below 2^53
    let valid_until = claims.exp.unwrap_or_default() + cfg.leeway_secs as f64;
    let identity = Identity {
        client_id,
        scopes,
        subject: claims.sub,
        token_id: claims.jti,
    };
    Ok((identity, valid_until))
}

/// A worker's memo of tokens it has already verified, so an EdDSA or ES256 token (tens to hundreds
/// of µs to verify) costs a SHA-256 and a look-up on every later request until it expires.
///
/// Keep one per root context next to its [`JwtConfig`] and build a new one whenever the config
/// changes: entries were verified against the old keys. Only successes are kept, keyed by the
/// token's SHA-256 (never the token itself), each until its `exp` plus the leeway; scopes are checked
/// on every call. When full, expired entries go first, then everything (a bounded, rare reset).
#[derive(Debug, Clone, Default)]
pub struct TokenCache {
    entries: BTreeMap<[u8; 32], (Identity, f64)>,
    capacity: usize,
}

impl TokenCache {
    /// A cache holding at most `capacity` tokens (0 disables it).
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: BTreeMap::new(),
            capacity,
        }
    }

    /// How many verified tokens it holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// [`authenticate`], answered from the memo when this token was verified before and has not
    /// expired since.
    ///
    /// # Errors
    /// As [`authenticate`].
    #[allow(clippy::cast_precision_loss)] // seconds since the epoch are far below 2^53
    pub fn authenticate(
        &mut self,
        cfg: &JwtConfig,
        authorization: Option<&str>,
        path: Option<&str>,
        now_s: u64,
    ) -> Result<Identity, JwtError> {
        let token = extract_token(cfg, authorization, path).ok_or(JwtError::Missing)?;
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwtError::TooLarge);
        }
        let now = now_s as f64;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let identity = match self.entries.get(&digest) {
            Some((identity, valid_until)) if now < *valid_until => identity.clone(),
            _ => {
                self.entries.remove(&digest);
                let (identity, valid_until) = verify_until(cfg, &token, now_s)?;
                self.remember(digest, &identity, valid_until, now);
                identity
            }
        };
        check_scopes(cfg, &identity)?;
        Ok(identity)
    }

    fn remember(&mut self, digest: [u8; 32], identity: &Identity, valid_until: f64, now: f64) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.len() >= self.capacity {
            self.entries.retain(|_, (_, until)| now < *until);
        }
        if self.entries.len() >= self.capacity {
            self.entries.clear();
        }
        self.entries.insert(digest, (identity.clone(), valid_until));
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    // Any value, `null` included, counts as present.
    #[serde(default, deserialize_with = "present")]
    crit: Option<()>,
}

fn present<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<()>, D::Error> {
    IgnoredAny::deserialize(de).map(|_| Some(()))
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    aud: Option<Audience>,
    #[serde(default)]
    exp: Option<f64>,
    #[serde(default)]
    nbf: Option<f64>,
    #[serde(default)]
    iat: Option<f64>,
    #[serde(default)]
    jti: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Claims {
    #[allow(clippy::cast_precision_loss)] // seconds since the epoch are far below 2^53
    fn check(&self, cfg: &JwtConfig, now_s: u64) -> Result<(), JwtError> {
        let now = now_s as f64;
        let leeway = cfg.leeway_secs as f64;
        // RFC 7519 section 4.1.4: valid only while now is before exp.
        let exp = self.exp.ok_or(JwtError::MissingExpiry)?;
        if now >= exp + leeway {
            return Err(JwtError::Expired);
        }
        if self.nbf.is_some_and(|nbf| now + leeway < nbf) {
            return Err(JwtError::NotYetValid);
        }
        if self.iat.is_some_and(|iat| iat > now + leeway) {
            return Err(JwtError::IssuedInFuture);
        }
        if let Some(issuer) = &cfg.issuer
            && self.iss.as_ref() != Some(issuer)
        {
            return Err(JwtError::WrongIssuer);
        }
        if let Some(audience) = &cfg.audience {
            let ok = match &self.aud {
                Some(Audience::One(a)) => a == audience,
                Some(Audience::Many(all)) => all.contains(audience),
                None => false,
            };
            if !ok {
                return Err(JwtError::WrongAudience);
            }
        }
        Ok(())
    }
}

fn b64(part: &str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtError::Malformed)
}

/// Checks everything about the token but its claims, and returns the decoded payload.
fn verified_payload(cfg: &JwtConfig, token: &str) -> Result<Vec<u8>, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::TooLarge);
    }
    let (signing_input, signature) = token.rsplit_once('.').ok_or(JwtError::Malformed)?;
    let (header, payload) = signing_input.split_once('.').ok_or(JwtError::Malformed)?;
    if header.is_empty() || payload.contains('.') {
        return Err(JwtError::Malformed);
    }
    let header_json = b64(header)?;
    if header_json.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(JwtError::Malformed);
    }
    let header: Header = serde_json::from_slice(&header_json).map_err(|_| JwtError::Malformed)?;
    let alg = Algorithm::parse(&header.alg)
        .filter(|alg| cfg.allows(*alg))
        .ok_or(JwtError::AlgorithmNotAllowed)?;
    if header.crit.is_some() {
        return Err(JwtError::UnsupportedCritical);
    }
    if let Some(wanted) = &cfg.token_type
        && !header
            .typ
            .as_deref()
            .is_some_and(|typ| same_media_type(typ, wanted))
    {
        return Err(JwtError::WrongType);
    }
    let signature = b64(signature)?;
    verify_signature(
        cfg,
        alg,
        header.kid.as_deref(),
        signing_input.as_bytes(),
        &signature,
    )?;
    b64(payload)
}

/// `typ` values compare case-insensitively, with `application/` optional (RFC 7515 section 4.1.9).
fn same_media_type(a: &str, b: &str) -> bool {
    fn short(s: &str) -> &str {
        match s.get(..12) {
            Some(prefix) if prefix.eq_ignore_ascii_case("application/") => &s[12..],
            _ => s,
        }
    }
    short(a).eq_ignore_ascii_case(short(b))
}

fn verify_signature(
    cfg: &JwtConfig,
    alg: Algorithm,
    kid: Option<&str>,
    signing_input: &[u8],
    signature: &[u8],
) -> Result<(), JwtError> {
    match alg {
        Algorithm::HS256 => {
            // One secret, chosen by kid (falling back to the current one), never a trial of all.
            let secret = cfg.hs256_secret(kid).ok_or(JwtError::UnknownKey)?;
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose())
                .map_err(|_| JwtError::UnknownKey)?;
            mac.update(signing_input);
            // Constant-time comparison (subtle), and the tag must be the full 32 bytes.
            mac.verify_slice(signature)
                .map_err(|_| JwtError::BadSignature)
        }
        Algorithm::EdDSA => {
            let signature = ed25519_dalek_nostd::Signature::from_slice(signature)
                .map_err(|_| JwtError::BadSignature)?;
            with_candidate_keys(cfg, alg, kid, |key| match key {
                // verify_strict also refuses small-order keys and malleable signatures.
                PublicKey::Ed25519(vk) => vk.verify_strict(signing_input, &signature).is_ok(),
                PublicKey::P256(_) => false,
            })
        }
        Algorithm::ES256 => {
            // JWS carries r||s (64 bytes), not DER.
            let signature = p256_nostd::ecdsa::Signature::from_slice(signature)
                .map_err(|_| JwtError::BadSignature)?;
            with_candidate_keys(cfg, alg, kid, |key| match key {
                PublicKey::P256(vk) => vk.verify(signing_input, &signature).is_ok(),
                PublicKey::Ed25519(_) => false,
            })
        }
    }
}

/// Tries the keys of the token's algorithm (only the one with its `kid`, when it names one).
fn with_candidate_keys(
    cfg: &JwtConfig,
    alg: Algorithm,
    kid: Option<&str>,
    verifies: impl Fn(&PublicKey) -> bool,
) -> Result<(), JwtError> {
    let mut candidates = cfg
        .keys
        .iter()
        .filter(|k| k.key.algorithm() == alg)
        .filter(|k| kid.is_none_or(|kid| k.kid.as_deref() == Some(kid)))
        .peekable();
    if candidates.peek().is_none() {
        return Err(JwtError::UnknownKey);
    }
    if candidates.any(|k| verifies(&k.key)) {
        Ok(())
    } else {
        Err(JwtError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use ed25519_dalek_nostd as ed25519_dalek;
    use ed25519_dalek_nostd::Signer as _;
    use ed25519_dalek_nostd::pkcs8::DecodePrivateKey as _;
    use p256_nostd as p256;

    const SECRET: &str = "your-secret-key-here-must-be-32-bytes-long";
    const NOW: u64 = 1_764_000_000;
    const ED_PEM: &str = include_str!("../../../service/tests/fixtures/ed25519.pem");
    const EC_PEM: &str = include_str!("../../../service/tests/fixtures/p256.pem");

    // RFC 7515 appendix A.1 (HS256) and A.3 (ES256), RFC 8037 appendix A.4 (Ed25519).
    const A1_KEY: &str =
        "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
    const A1_TOKEN: &str = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const A1_PAYLOAD: &str =
        "{\"iss\":\"joe\",\r\n \"exp\":1300819380,\r\n \"http://example.com/is_root\":true}";
    const A3_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
    const A3_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
    const A3_TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
    const RFC8037_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
    const RFC8037_TOKEN: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";

    fn enc(bytes: impl AsRef<[u8]>) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn ed_key() -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_pkcs8_pem(ED_PEM).expect("fixture Ed25519 key")
    }

    fn ec_key() -> p256::ecdsa::SigningKey {
        use p256::pkcs8::DecodePrivateKey as _;
        p256::ecdsa::SigningKey::from_pkcs8_pem(EC_PEM).expect("fixture P-256 key")
    }

    fn ed_jwk(sk: &ed25519_dalek::SigningKey, kid: &str) -> String {
        format!(
            r#"{{"kty":"OKP","crv":"Ed25519","x":"{}","kid":"{kid}","use":"sig","alg":"EdDSA"}}"#,
            enc(sk.verifying_key().as_bytes())
        )
    }

    fn ec_jwk(sk: &p256::ecdsa::SigningKey, kid: &str) -> String {
        let point = sk.verifying_key().to_encoded_point(false);
        format!(
            r#"{{"kty":"EC","crv":"P-256","x":"{}","y":"{}","kid":"{kid}"}}"#,
            enc(point.x().expect("x")),
            enc(point.y().expect("y"))
        )
    }

    /// kyc-service's settings: HS256, EdDSA and ES256 all allowed, iss/aud checked.
    fn service_cfg(extra: &str) -> JwtConfig {
        let json = format!(
            r#"{{"algorithms":["HS256","EdDSA","ES256"],"secret":"{SECRET}",
                "jwks":{{"keys":[{},{}]}},
                "issuer":"kyc-service","audience":"kyc-api"{extra}}}"#,
            ed_jwk(&ed_key(), "ed-1"),
            ec_jwk(&ec_key(), "ec-1"),
        );
        JwtConfig::from_json(json.as_bytes()).expect("valid test config")
    }

    fn cfg() -> JwtConfig {
        service_cfg("")
    }

    #[test]
    fn a_ticket_passes_anonymously_only_without_any_token_and_only_when_configured() {
        let ticketed = service_cfg(r#","allow_query_token":true,"anonymous_query_param":"ticket""#);
        let p = Some("/ws?ticket=abc");
        assert!(passes_anonymously(&ticketed, None, p));
        assert!(!passes_anonymously(&cfg(), None, p), "not configured");
        assert!(
            !passes_anonymously(&ticketed, None, Some("/ws?ticket=")),
            "empty value"
        );
        assert!(!passes_anonymously(
            &ticketed,
            None,
            Some("/ws?tickets=abc")
        ));
        assert!(!passes_anonymously(&ticketed, None, Some("/ws")));
        // Any token present, good or bad, must be verified instead.
        assert!(!passes_anonymously(&ticketed, Some("Bearer x.y.z"), p));
        assert!(!passes_anonymously(&ticketed, Some("Basic abc"), p));
        assert!(!passes_anonymously(
            &ticketed,
            None,
            Some("/ws?ticket=abc&access_token=x.y.z")
        ));
        for bad in [r#""""#, r#""access_token""#, r#""a b""#] {
            let json = format!(r#"{{"secret":"{SECRET}","anonymous_query_param":{bad}}}"#);
            let err = JwtConfig::from_json(json.as_bytes()).expect_err("refused");
            assert_eq!(err.field, "anonymous_query_param");
        }
    }

    fn claims_at(now: u64) -> String {
        format!(
            r#"{{"iss":"kyc-service","sub":"kyc-client","aud":"kyc-api","exp":{},"iat":{now},"nbf":{now},"jti":"0193a5b2","scope":"kyc:read kyc:write","client_id":"kyc-client"}}"#,
            now + 86_400
        )
    }

    fn hs(secret: &[u8], header: &str, claims: &str) -> String {
        let input = format!("{}.{}", enc(header), enc(claims));
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
        mac.update(input.as_bytes());
        format!("{input}.{}", enc(mac.finalize().into_bytes()))
    }

    fn ed(sk: &ed25519_dalek::SigningKey, header: &str, claims: &str) -> String {
        let input = format!("{}.{}", enc(header), enc(claims));
        format!("{input}.{}", enc(sk.sign(input.as_bytes()).to_bytes()))
    }

    fn es(sk: &p256::ecdsa::SigningKey, header: &str, claims: &str) -> String {
        use p256::ecdsa::signature::Signer as _;
        let input = format!("{}.{}", enc(header), enc(claims));
        let sig: p256::ecdsa::Signature = sk.sign(input.as_bytes());
        format!("{input}.{}", enc(sig.to_bytes()))
    }

    fn hs_token(claims: &str) -> String {
        hs(
            SECRET.as_bytes(),
            r#"{"typ":"at+jwt","alg":"HS256","kid":"hs256-1"}"#,
            claims,
        )
    }

    fn err(cfg: &JwtConfig, token: &str) -> JwtError {
        verify(cfg, token, NOW).expect_err("the token must be refused")
    }

    /// Flips one character of the part `index` (0 header, 1 payload, 2 signature), keeping it base64url.
    fn tamper(token: &str, index: usize) -> String {
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let part = &mut parts[index];
        let c = part.remove(2);
        part.insert(2, if c == 'A' { 'B' } else { 'A' });
        parts.join(".")
    }

    #[derive(Serialize)]
    struct ServiceClaims<'a> {
        iss: &'a str,
        sub: &'a str,
        aud: &'a str,
        exp: i64,
        iat: i64,
        nbf: i64,
        jti: &'a str,
        scope: &'a str,
        client_id: &'a str,
    }

    /// A token exactly as kyc-service's `mint_access` builds it (jsonwebtoken, `typ: at+jwt`).
    fn minted_by_service(
        alg: jsonwebtoken::Algorithm,
        key: &jsonwebtoken::EncodingKey,
        kid: &str,
    ) -> String {
        let now = i64::try_from(NOW).expect("fits");
        let mut header = jsonwebtoken::Header::new(alg);
        header.kid = Some(kid.to_owned());
        header.typ = Some("at+jwt".to_owned());
        let claims = ServiceClaims {
            iss: "kyc-service",
            sub: "kyc-client",
            aud: "kyc-api",
            exp: now + 86_400,
            iat: now,
            nbf: now,
            jti: "0193a5b2-7c1d-7000-8000-000000000001",
            scope: "kyc:read kyc:write",
            client_id: "kyc-client",
        };
        jsonwebtoken::encode(&header, &claims, key).expect("minting works")
    }

    #[test]
    fn rfc7515_a1_hs256_example_verifies() {
        let cfg = JwtConfig::from_json(
            format!(r#"{{"secret_base64url":"{A1_KEY}","token_type":"JWT"}}"#).as_bytes(),
        )
        .expect("valid");
        let payload = verified_payload(&cfg, A1_TOKEN).expect("the RFC's signature verifies");
        assert_eq!(payload, A1_PAYLOAD.as_bytes());
        // The claims check then runs: valid before exp, but the example names no client…
        assert_eq!(
            verify(&cfg, A1_TOKEN, 1_300_819_379),
            Err(JwtError::NoClient)
        );
        // …and expires, leeway included, at 1300819380 + 60.
        assert_eq!(
            verify(&cfg, A1_TOKEN, 1_300_819_440),
            Err(JwtError::Expired)
        );
        assert_eq!(err(&cfg, &tamper(A1_TOKEN, 1)), JwtError::BadSignature);
        assert_eq!(err(&cfg, &tamper(A1_TOKEN, 2)), JwtError::BadSignature);
    }

    #[test]
    fn rfc7515_a3_es256_example_verifies() {
        let cfg = JwtConfig::from_json(
            format!(
                r#"{{"algorithms":["ES256"],"token_type":null,
                    "jwks":{{"keys":[{{"kty":"EC","crv":"P-256","x":"{A3_X}","y":"{A3_Y}"}}]}}}}"#
            )
            .as_bytes(),
        )
        .expect("valid");
        let payload = verified_payload(&cfg, A3_TOKEN).expect("the RFC's signature verifies");
        assert_eq!(payload, A1_PAYLOAD.as_bytes());
        assert_eq!(err(&cfg, &tamper(A3_TOKEN, 1)), JwtError::BadSignature);
        assert_eq!(err(&cfg, &tamper(A3_TOKEN, 2)), JwtError::BadSignature);
    }

    #[test]
    fn rfc8037_a4_ed25519_example_verifies() {
        let cfg = JwtConfig::from_json(
            format!(
                r#"{{"algorithms":["EdDSA"],"token_type":null,
                    "jwks":{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{RFC8037_X}"}}]}}}}"#
            )
            .as_bytes(),
        )
        .expect("valid");
        let payload = verified_payload(&cfg, RFC8037_TOKEN).expect("the RFC's signature verifies");
        assert_eq!(payload, b"Example of Ed25519 signing");
        // Its payload is not a claims set, so as an access token it is malformed.
        assert_eq!(err(&cfg, RFC8037_TOKEN), JwtError::Malformed);
        assert_eq!(err(&cfg, &tamper(RFC8037_TOKEN, 1)), JwtError::BadSignature);
        assert_eq!(err(&cfg, &tamper(RFC8037_TOKEN, 2)), JwtError::BadSignature);
    }

    #[test]
    fn tokens_minted_by_kyc_service_are_accepted_with_every_algorithm() {
        let cfg = cfg();
        let tokens = [
            minted_by_service(
                jsonwebtoken::Algorithm::HS256,
                &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
                "hs256-0123456789abcdef",
            ),
            minted_by_service(
                jsonwebtoken::Algorithm::EdDSA,
                &jsonwebtoken::EncodingKey::from_ed_pem(ED_PEM.as_bytes()).expect("pem"),
                "ed-1",
            ),
            minted_by_service(
                jsonwebtoken::Algorithm::ES256,
                &jsonwebtoken::EncodingKey::from_ec_pem(EC_PEM.as_bytes()).expect("pem"),
                "ec-1",
            ),
        ];
        for token in tokens {
            let header = jsonwebtoken::decode_header(&token).expect("header");
            assert_eq!(header.typ.as_deref(), Some("at+jwt"));
            let id = authenticate(&cfg, Some(&format!("Bearer {token}")), None, NOW)
                .unwrap_or_else(|e| panic!("{:?} token refused: {e}", header.alg));
            assert_eq!(
                id,
                Identity {
                    client_id: "kyc-client".into(),
                    scopes: vec!["kyc:read".into(), "kyc:write".into()],
                    subject: Some("kyc-client".into()),
                    token_id: Some("0193a5b2-7c1d-7000-8000-000000000001".into()),
                }
            );
        }
    }

    #[test]
    fn the_key_is_chosen_by_kid_and_without_one_every_key_of_the_type_is_tried() {
        let other = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let json = format!(
            r#"{{"algorithms":["EdDSA"],"jwks":{{"keys":[{},{}]}}}}"#,
            ed_jwk(&other, "old"),
            ed_jwk(&ed_key(), "new")
        );
        let cfg = JwtConfig::from_json(json.as_bytes()).expect("valid");
        let claims = claims_at(NOW);
        let with_kid = |kid: &str| format!(r#"{{"alg":"EdDSA","typ":"at+jwt","kid":"{kid}"}}"#);
        assert!(verify(&cfg, &ed(&ed_key(), &with_kid("new"), &claims), NOW).is_ok());
        assert!(verify(&cfg, &ed(&other, &with_kid("old"), &claims), NOW).is_ok());
        assert_eq!(
            err(&cfg, &ed(&ed_key(), &with_kid("old"), &claims)),
            JwtError::BadSignature
        );
        assert_eq!(
            err(&cfg, &ed(&ed_key(), &with_kid("gone"), &claims)),
            JwtError::UnknownKey
        );
        let no_kid = r#"{"alg":"EdDSA","typ":"at+jwt"}"#;
        assert!(verify(&cfg, &ed(&ed_key(), no_kid, &claims), NOW).is_ok());
        assert!(verify(&cfg, &ed(&other, no_kid, &claims), NOW).is_ok());
    }

    /// The secret kyc-service signed with before the rotation (the current one is [`SECRET`]).
    const OLD_SECRET: &str = "the-previous-jwt-secret-of-at-least-32-bytes";

    /// The gateway mid-rotation: `secret` is the new key, `previous_secrets` the old one.
    fn rotating_cfg(previous: &[&str]) -> JwtConfig {
        let json = serde_json::json!({
            "secret": SECRET, "previous_secrets": previous,
            "issuer": "kyc-service", "audience": "kyc-api",
        });
        JwtConfig::from_json(json.to_string().as_bytes()).expect("valid test config")
    }

    fn hs_with_kid(secret: &str, kid: Option<&str>) -> String {
        let header = match kid {
            Some(kid) => format!(r#"{{"alg":"HS256","typ":"at+jwt","kid":"{kid}"}}"#),
            None => r#"{"alg":"HS256","typ":"at+jwt"}"#.to_owned(),
        };
        hs(secret.as_bytes(), &header, &claims_at(NOW))
    }

    fn kid_of(secret: &str) -> String {
        let cfg =
            JwtConfig::from_json(format!(r#"{{"secret":"{secret}"}}"#).as_bytes()).expect("valid");
        cfg.secret.expect("a secret").kid().to_owned()
    }

    #[test]
    fn a_token_signed_with_a_previous_secret_verifies_while_it_is_listed() {
        let cfg = rotating_cfg(&[OLD_SECRET]);
        let (old_kid, new_kid) = (kid_of(OLD_SECRET), kid_of(SECRET));
        let old = hs_with_kid(OLD_SECRET, Some(&old_kid));
        let new = hs_with_kid(SECRET, Some(&new_kid));
        assert_eq!(
            verify(&cfg, &old, NOW).map(|id| id.client_id).as_deref(),
            Ok("kyc-client")
        );
        assert!(verify(&cfg, &new, NOW).is_ok());
        // As kyc-service mints them (jsonwebtoken), with the kid it derives.
        let minted = minted_by_service(
            jsonwebtoken::Algorithm::HS256,
            &jsonwebtoken::EncodingKey::from_secret(OLD_SECRET.as_bytes()),
            &old_kid,
        );
        assert!(authenticate(&cfg, Some(&format!("Bearer {minted}")), None, NOW).is_ok());
    }

    #[test]
    fn a_token_of_a_removed_secret_is_refused() {
        let old = hs_with_kid(OLD_SECRET, Some(&kid_of(OLD_SECRET)));
        assert!(verify(&rotating_cfg(&[OLD_SECRET]), &old, NOW).is_ok());
        assert_eq!(err(&rotating_cfg(&[]), &old), JwtError::BadSignature);
        let another = "yet-another-secret-that-is-at-least-32-bytes";
        assert_eq!(err(&rotating_cfg(&[another]), &old), JwtError::BadSignature);
    }

    #[test]
    fn the_kid_selects_the_one_secret_that_may_verify() {
        let cfg = rotating_cfg(&[OLD_SECRET]);
        let (old_kid, new_kid) = (kid_of(OLD_SECRET), kid_of(SECRET));
        // Correctly signed, but with the other configured secret than the kid names: no second try.
        assert_eq!(
            err(&cfg, &hs_with_kid(SECRET, Some(&old_kid))),
            JwtError::BadSignature
        );
        assert_eq!(
            err(&cfg, &hs_with_kid(OLD_SECRET, Some(&new_kid))),
            JwtError::BadSignature
        );
        assert_eq!(
            cfg.hs256_secret(Some(&old_kid))
                .map(crate::config::HmacSecret::expose),
            Some(OLD_SECRET.as_bytes())
        );
        assert_eq!(
            cfg.hs256_secret(Some(&new_kid))
                .map(crate::config::HmacSecret::expose),
            Some(SECRET.as_bytes())
        );
    }

    #[test]
    fn a_token_without_a_kid_or_naming_no_secret_is_checked_with_the_current_secret_only() {
        let cfg = rotating_cfg(&[OLD_SECRET]);
        for kid in [None, Some("hs256-0123456789abcdef"), Some("ed-1"), Some("")] {
            assert!(
                verify(&cfg, &hs_with_kid(SECRET, kid), NOW).is_ok(),
                "{kid:?}"
            );
            assert_eq!(
                err(&cfg, &hs_with_kid(OLD_SECRET, kid)),
                JwtError::BadSignature,
                "{kid:?}: a previous secret verifies only the tokens whose kid names it"
            );
        }
    }

    #[test]
    fn alg_none_is_never_accepted() {
        let cfg = cfg();
        let claims = enc(claims_at(NOW));
        for alg in ["none", "None", "NONE", "nOnE"] {
            let header = enc(format!(r#"{{"alg":"{alg}","typ":"at+jwt"}}"#));
            for signature in ["", "e30"] {
                let token = format!("{header}.{claims}.{signature}");
                assert_eq!(
                    err(&cfg, &token),
                    JwtError::AlgorithmNotAllowed,
                    "{alg} {signature:?}"
                );
            }
        }
    }

    #[test]
    fn algorithms_off_the_allow_list_are_refused_before_any_key_is_tried() {
        let hs_only =
            JwtConfig::from_json(format!(r#"{{"secret":"{SECRET}"}}"#).as_bytes()).expect("valid");
        let claims = claims_at(NOW);
        for alg in ["HS384", "HS512", "RS256", "PS256", "ES384", "hs256", ""] {
            let token = hs(
                SECRET.as_bytes(),
                &format!(r#"{{"alg":"{alg}","typ":"at+jwt"}}"#),
                &claims,
            );
            assert_eq!(
                err(&hs_only, &token),
                JwtError::AlgorithmNotAllowed,
                "{alg}"
            );
        }
        let ed_token = ed(&ed_key(), r#"{"alg":"EdDSA","typ":"at+jwt"}"#, &claims);
        assert_eq!(err(&hs_only, &ed_token), JwtError::AlgorithmNotAllowed);
    }

    #[test]
    fn an_hs256_token_is_refused_where_only_public_keys_are_configured() {
        let json = format!(
            r#"{{"algorithms":["EdDSA","ES256"],"jwks":{{"keys":[{},{}]}}}}"#,
            ed_jwk(&ed_key(), "ed-1"),
            ec_jwk(&ec_key(), "ec-1")
        );
        let cfg = JwtConfig::from_json(json.as_bytes()).expect("valid");
        let vk = ed_key().verifying_key();
        let point = ec_key().verifying_key().to_encoded_point(false);
        let public_material: Vec<Vec<u8>> = vec![
            enc(vk.as_bytes()).into_bytes(),
            vk.as_bytes().to_vec(),
            point.as_bytes().to_vec(),
            enc(point.x().expect("x")).into_bytes(),
            ed_jwk(&ed_key(), "ed-1").into_bytes(),
        ];
        for secret in &public_material {
            let token = hs(
                secret,
                r#"{"alg":"HS256","typ":"at+jwt","kid":"ed-1"}"#,
                &claims_at(NOW),
            );
            assert_eq!(err(&cfg, &token), JwtError::AlgorithmNotAllowed);
        }
    }

    #[test]
    fn an_hs256_token_keyed_with_a_public_key_never_verifies() {
        // HS256 allowed too: the MAC is checked against the configured secret only.
        let cfg = cfg();
        let vk = ed_key().verifying_key();
        let point = ec_key().verifying_key().to_encoded_point(false);
        let public_material: Vec<Vec<u8>> = vec![
            enc(vk.as_bytes()).into_bytes(),
            vk.as_bytes().to_vec(),
            point.as_bytes().to_vec(),
            point.x().expect("x").to_vec(),
            enc(point.y().expect("y")).into_bytes(),
            ED_PEM.as_bytes().to_vec(),
        ];
        for secret in &public_material {
            for kid in ["ed-1", "ec-1"] {
                let header = format!(r#"{{"alg":"HS256","typ":"at+jwt","kid":"{kid}"}}"#);
                let token = hs(secret, &header, &claims_at(NOW));
                assert_eq!(err(&cfg, &token), JwtError::BadSignature);
            }
        }
    }

    #[test]
    fn a_token_cannot_bring_its_own_key() {
        let cfg = cfg();
        let attacker = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let header = format!(
            r#"{{"alg":"EdDSA","typ":"at+jwt","jwk":{},"jku":"https://evil.example/jwks","x5u":"https://evil.example/x"}}"#,
            ed_jwk(&attacker, "evil")
        );
        assert_eq!(
            err(&cfg, &ed(&attacker, &header, &claims_at(NOW))),
            JwtError::BadSignature
        );
        let named = r#"{"alg":"EdDSA","typ":"at+jwt","kid":"evil"}"#;
        assert_eq!(
            err(&cfg, &ed(&attacker, named, &claims_at(NOW))),
            JwtError::UnknownKey
        );
    }

    #[test]
    fn a_kid_of_another_key_type_finds_no_key() {
        let cfg = cfg();
        let token = es(
            &ec_key(),
            r#"{"alg":"ES256","typ":"at+jwt","kid":"ed-1"}"#,
            &claims_at(NOW),
        );
        assert_eq!(err(&cfg, &token), JwtError::UnknownKey);
        let token = ed(
            &ed_key(),
            r#"{"alg":"EdDSA","typ":"at+jwt","kid":"ec-1"}"#,
            &claims_at(NOW),
        );
        assert_eq!(err(&cfg, &token), JwtError::UnknownKey);
    }

    #[test]
    fn a_der_encoded_ecdsa_signature_is_refused() {
        let cfg = cfg();
        let header = r#"{"alg":"ES256","typ":"at+jwt","kid":"ec-1"}"#;
        let input = format!("{}.{}", enc(header), enc(claims_at(NOW)));
        let sig: p256::ecdsa::Signature =
            p256::ecdsa::signature::Signer::sign(&ec_key(), input.as_bytes());
        let der = enc(sig.to_der().as_bytes());
        assert_eq!(err(&cfg, &format!("{input}.{der}")), JwtError::BadSignature);
        let ok = enc(sig.to_bytes());
        assert!(verify(&cfg, &format!("{input}.{ok}"), NOW).is_ok());
    }

    #[test]
    fn critical_header_extensions_are_refused() {
        let cfg = cfg();
        for crit in [r#"["b64"]"#, "[]", "null"] {
            let header = format!(r#"{{"alg":"HS256","typ":"at+jwt","crit":{crit},"b64":false}}"#);
            let token = hs(SECRET.as_bytes(), &header, &claims_at(NOW));
            assert_eq!(err(&cfg, &token), JwtError::UnsupportedCritical, "{crit}");
        }
    }

    #[test]
    fn only_access_tokens_pass_the_type_check() {
        let cfg = cfg();
        let claims = claims_at(NOW);
        let with_typ = |typ: &str| {
            hs(
                SECRET.as_bytes(),
                &format!(r#"{{"alg":"HS256","typ":"{typ}"}}"#),
                &claims,
            )
        };
        for ok in [
            "at+jwt",
            "AT+JWT",
            "application/at+jwt",
            "Application/At+JWT",
        ] {
            assert!(verify(&cfg, &with_typ(ok), NOW).is_ok(), "{ok}");
        }
        // kyc-service's refresh tokens say "JWT".
        for bad in ["JWT", "jwt", "application/jwt", "at+jwt2", "ü"] {
            assert_eq!(err(&cfg, &with_typ(bad)), JwtError::WrongType, "{bad}");
        }
        let untyped = hs(SECRET.as_bytes(), r#"{"alg":"HS256"}"#, &claims);
        assert_eq!(err(&cfg, &untyped), JwtError::WrongType);
        let lax = service_cfg(r#","token_type":null"#);
        assert!(verify(&lax, &untyped, NOW).is_ok());
        assert!(verify(&lax, &with_typ("JWT"), NOW).is_ok());
    }

    #[test]
    fn expiry_not_before_and_issued_at_honour_the_leeway() {
        let cfg = cfg(); // leeway 60 s
        let at = |exp: u64, nbf: u64, iat: u64| {
            hs_token(&format!(
                r#"{{"iss":"kyc-service","aud":"kyc-api","sub":"c","exp":{exp},"nbf":{nbf},"iat":{iat}}}"#
            ))
        };
        assert!(verify(&cfg, &at(NOW - 59, NOW, NOW), NOW).is_ok());
        assert_eq!(err(&cfg, &at(NOW - 60, NOW, NOW)), JwtError::Expired);
        assert!(verify(&cfg, &at(NOW + 600, NOW + 60, NOW), NOW).is_ok());
        assert_eq!(
            err(&cfg, &at(NOW + 600, NOW + 61, NOW)),
            JwtError::NotYetValid
        );
        assert!(verify(&cfg, &at(NOW + 600, NOW, NOW + 60), NOW).is_ok());
        assert_eq!(
            err(&cfg, &at(NOW + 600, NOW, NOW + 61)),
            JwtError::IssuedInFuture
        );
        let strict = service_cfg(r#","leeway_secs":0"#);
        assert_eq!(err(&strict, &at(NOW, NOW, NOW)), JwtError::Expired);
        assert!(verify(&strict, &at(NOW + 1, NOW, NOW), NOW).is_ok());
        let fractional =
            hs_token(r#"{"iss":"kyc-service","aud":"kyc-api","sub":"c","exp":1764000000.5}"#);
        assert!(verify(&strict, &fractional, NOW).is_ok());
    }

    #[test]
    fn a_token_without_expiry_is_refused() {
        let token = hs_token(r#"{"iss":"kyc-service","aud":"kyc-api","sub":"c"}"#);
        assert_eq!(err(&cfg(), &token), JwtError::MissingExpiry);
        let null_exp = hs_token(r#"{"iss":"kyc-service","aud":"kyc-api","sub":"c","exp":null}"#);
        assert_eq!(err(&cfg(), &null_exp), JwtError::MissingExpiry);
    }

    #[test]
    fn issuer_and_audience_are_checked_when_configured() {
        let cfg = cfg();
        let exp = NOW + 600;
        let with = |rest: &str| hs_token(&format!(r#"{{"sub":"c","exp":{exp}{rest}}}"#));
        assert!(
            verify(
                &cfg,
                &with(r#","iss":"kyc-service","aud":["other","kyc-api"]"#),
                NOW
            )
            .is_ok()
        );
        assert_eq!(
            err(&cfg, &with(r#","iss":"evil","aud":"kyc-api""#)),
            JwtError::WrongIssuer
        );
        assert_eq!(
            err(&cfg, &with(r#","aud":"kyc-api""#)),
            JwtError::WrongIssuer
        );
        assert_eq!(
            err(
                &cfg,
                &with(r#","iss":"kyc-service","aud":"kyc-service/token""#)
            ),
            JwtError::WrongAudience
        );
        assert_eq!(
            err(&cfg, &with(r#","iss":"kyc-service","aud":["a","b"]"#)),
            JwtError::WrongAudience
        );
        assert_eq!(
            err(&cfg, &with(r#","iss":"kyc-service""#)),
            JwtError::WrongAudience
        );
        assert_eq!(
            err(&cfg, &with(r#","iss":"kyc-service","aud":7"#)),
            JwtError::Malformed
        );
        let open =
            JwtConfig::from_json(format!(r#"{{"secret":"{SECRET}"}}"#).as_bytes()).expect("valid");
        assert!(verify(&open, &with(r#","iss":"anyone","aud":"anything""#), NOW).is_ok());
        assert!(verify(&open, &with(""), NOW).is_ok());
    }

    #[test]
    fn the_client_is_client_id_else_sub() {
        let cfg =
            JwtConfig::from_json(format!(r#"{{"secret":"{SECRET}"}}"#).as_bytes()).expect("valid");
        let exp = NOW + 600;
        let id = verify(
            &cfg,
            &hs_token(&format!(
                r#"{{"exp":{exp},"sub":"user-7","client_id":"app-1"}}"#
            )),
            NOW,
        )
        .expect("valid");
        assert_eq!(
            (id.client_id.as_str(), id.subject.as_deref()),
            ("app-1", Some("user-7"))
        );
        let id = verify(
            &cfg,
            &hs_token(&format!(r#"{{"exp":{exp},"sub":"user-7"}}"#)),
            NOW,
        )
        .expect("valid");
        assert_eq!(id.client_id, "user-7");
        assert!(id.scopes.is_empty() && id.token_id.is_none());
        assert_eq!(
            err(&cfg, &hs_token(&format!(r#"{{"exp":{exp}}}"#))),
            JwtError::NoClient
        );
        assert_eq!(
            err(
                &cfg,
                &hs_token(&format!(r#"{{"exp":{exp},"client_id":""}}"#))
            ),
            JwtError::NoClient
        );
    }

    #[test]
    fn scopes_are_split_on_spaces_and_every_required_one_must_be_there() {
        let cfg = service_cfg(r#","required_scopes":["kyc:read"]"#);
        let token = |scope: &str| {
            hs_token(&format!(
                r#"{{"iss":"kyc-service","aud":"kyc-api","sub":"c","exp":{},"scope":"{scope}"}}"#,
                NOW + 600
            ))
        };
        let bearer = |scope: &str| format!("Bearer {}", token(scope));
        let id = authenticate(
            &cfg,
            Some(&bearer("kyc:write  kyc:read kyc:write")),
            None,
            NOW,
        )
        .expect("ok");
        assert_eq!(id.scopes, vec!["kyc:write", "kyc:read"]);
        let e = authenticate(&cfg, Some(&bearer("kyc:write")), None, NOW).expect_err("403");
        assert_eq!(
            e,
            JwtError::InsufficientScope {
                missing: vec!["kyc:read".into()]
            }
        );
        let r = e.rejection(&cfg);
        assert_eq!(r.status, 403);
        assert_eq!(r.code, "INSUFFICIENT_SCOPE");
        assert_eq!(
            r.www_authenticate,
            r#"Bearer realm="kyc", error="insufficient_scope", scope="kyc:read""#
        );
        assert_eq!(r.message, "the access token lacks the kyc:read scope");
        // "kyc:readx" is not "kyc:read".
        assert!(authenticate(&cfg, Some(&bearer("kyc:readx")), None, NOW).is_err());
    }

    #[test]
    fn malformed_tokens_are_refused_without_panicking() {
        let cfg = cfg();
        let good = hs_token(&claims_at(NOW));
        let (header, rest) = good.split_once('.').expect("three parts");
        let (payload, signature) = rest.split_once('.').expect("three parts");
        let cases = [
            String::new(),
            "a".into(),
            "a.b".into(),
            "..".into(),
            format!("{header}.{payload}"),
            format!("{header}.{payload}.{signature}.x.y"),
            format!("{header}=.{payload}.{signature}"),
            format!("{header}.{payload}.{signature}="),
            format!("{}.{payload}.{signature}", header.replace('e', "+")),
            format!("{}.{payload}.{signature}", enc("not json")),
            format!("{}.{payload}.{signature}", enc(r#"["HS256"]"#)),
            format!(
                "{}.{payload}.{signature}",
                enc(r#"{"alg":"HS256","alg":"HS256"}"#)
            ),
            format!("{}.{payload}.{signature}", enc(r#"{"typ":"at+jwt"}"#)),
            format!("{}.{payload}.{signature}", enc(r#"{"alg":5}"#)),
            "\u{1F600}.\u{1F600}.\u{1F600}".into(),
        ];
        for token in &cases {
            let e = err(&cfg, token);
            assert!(
                matches!(e, JwtError::Malformed | JwtError::AlgorithmNotAllowed),
                "{token:?} gave {e:?}"
            );
        }
        let array_claims = hs_token(r#"["kyc-service","kyc-client"]"#);
        assert_eq!(err(&cfg, &array_claims), JwtError::Malformed);
        let duplicate = hs_token(&format!(r#"{{"sub":"c","exp":{},"exp":1}}"#, NOW + 600));
        assert_eq!(err(&cfg, &duplicate), JwtError::Malformed);
        let huge = format!("{header}.{}.{signature}", "A".repeat(MAX_TOKEN_BYTES));
        assert_eq!(err(&cfg, &huge), JwtError::TooLarge);
        let short_mac = format!("{header}.{payload}.{}", &signature[..20]);
        assert_eq!(err(&cfg, &short_mac), JwtError::BadSignature);
    }

    #[test]
    fn base64_with_stray_trailing_bits_is_refused() {
        // A 32-byte MAC is 43 characters whose last one carries 2 unused bits; set one of them.
        let token = hs_token(&claims_at(NOW));
        let (input, signature) = token.rsplit_once('.').expect("parts");
        let last = signature.chars().last().expect("non-empty");
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let index = alphabet.find(last).expect("base64url");
        let sibling = alphabet.chars().nth(index ^ 1).expect("in range");
        let forged = format!("{input}.{}{sibling}", &signature[..signature.len() - 1]);
        assert_eq!(err(&cfg(), &forged), JwtError::Malformed);
    }

    #[test]
    fn rejections_follow_rfc_6750_and_the_projects_error_body() {
        let cfg = cfg();
        let missing = authenticate(&cfg, None, None, NOW).expect_err("no token");
        let r = missing.rejection(&cfg);
        assert_eq!((r.status, r.code), (401, "TOKEN_MISSING"));
        assert_eq!(r.www_authenticate, r#"Bearer realm="kyc""#);
        let expired = JwtError::Expired.rejection(&cfg);
        assert_eq!((expired.status, expired.code), (401, "TOKEN_INVALID"));
        assert_eq!(
            expired.www_authenticate,
            r#"Bearer realm="kyc", error="invalid_token", error_description="the access token has expired""#
        );
        assert_eq!(
            String::from_utf8(expired.json_body("req-42")).expect("utf-8"),
            r#"{"success":false,"error":{"code":"TOKEN_INVALID","message":"the access token has expired"},"request_id":"req-42"}"#
        );
    }

    #[test]
    fn every_invalid_token_message_is_a_safe_error_description() {
        let cfg = cfg();
        let errors = [
            JwtError::TooLarge,
            JwtError::Malformed,
            JwtError::AlgorithmNotAllowed,
            JwtError::UnsupportedCritical,
            JwtError::WrongType,
            JwtError::UnknownKey,
            JwtError::BadSignature,
            JwtError::MissingExpiry,
            JwtError::Expired,
            JwtError::NotYetValid,
            JwtError::IssuedInFuture,
            JwtError::WrongIssuer,
            JwtError::WrongAudience,
            JwtError::NoClient,
        ];
        let mut reasons = std::collections::HashSet::new();
        for e in errors {
            let r = e.rejection(&cfg);
            assert_eq!((r.status, r.code), (401, "TOKEN_INVALID"));
            // RFC 6750 section 3: error_description is %x20-21 / %x23-5B / %x5D-7E.
            assert!(
                r.message
                    .bytes()
                    .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5B | 0x5D..=0x7E)),
                "{r:?}"
            );
            assert!(
                reasons.insert(e.reason()),
                "reason {} is reused",
                e.reason()
            );
        }
    }

    #[test]
    fn no_message_ever_echoes_the_token() {
        let cfg = cfg();
        let good = hs_token(&claims_at(NOW));
        let tokens = [
            tamper(&good, 2),
            tamper(&good, 1),
            hs_token(&claims_at(NOW - 100_000)),
            "secret-looking-garbage".to_owned(),
        ];
        for token in tokens {
            let e = authenticate(&cfg, Some(&format!("Bearer {token}")), None, NOW)
                .expect_err("refused");
            let r = e.rejection(&cfg);
            let body = String::from_utf8(r.json_body("r")).expect("utf-8");
            for part in token.split('.').filter(|p| p.len() > 8) {
                for shown in [&e.to_string(), &r.www_authenticate, &body] {
                    assert!(!shown.contains(part), "{shown} leaks {part}");
                }
            }
        }
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_others_are_ignored() {
        assert_eq!(bearer_token("Bearer abc.def.ghi"), Some("abc.def.ghi"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER \t abc  "), Some("abc"));
        assert_eq!(bearer_token("  Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("Basic a2V5OnNlY3JldA=="), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer    "), None);
        assert_eq!(bearer_token("Bearerabc"), None);
        assert_eq!(bearer_token(""), None);
    }

    #[test]
    fn the_query_token_is_read_only_when_the_config_allows_it() {
        let token = hs_token(&claims_at(NOW));
        let path =
            format!("/api/v1/kyc/status/1?x=1&access_token={token}&access_token=second#frag");
        let closed = cfg();
        assert_eq!(extract_token(&closed, None, Some(&path)), None);
        assert_eq!(
            authenticate(&closed, None, Some(&path), NOW),
            Err(JwtError::Missing)
        );
        let open = service_cfg(r#","allow_query_token":true"#);
        assert_eq!(
            extract_token(&open, None, Some(&path)).as_deref(),
            Some(token.as_str())
        );
        assert!(authenticate(&open, None, Some(&path), NOW).is_ok());
        // The header wins over the query.
        assert_eq!(
            extract_token(&open, Some("Bearer from-header"), Some(&path)).as_deref(),
            Some("from-header")
        );
    }

    #[test]
    fn query_tokens_are_percent_decoded_and_found_only_in_the_query() {
        assert_eq!(
            query_token("/p?access_token=a%2Eb%2ec").as_deref(),
            Some("a.b.c")
        );
        assert_eq!(query_token("/p?access_token=a%zz").as_deref(), Some("a%zz"));
        assert_eq!(query_token("/p?access_token=a%ff").as_deref(), Some("a%ff"));
        assert_eq!(query_token("/p?access_token=").as_deref(), None);
        assert_eq!(query_token("/p?my_access_token=x").as_deref(), None);
        assert_eq!(query_token("/p#?access_token=x").as_deref(), None);
        assert_eq!(query_token("/access_token=x").as_deref(), None);
        assert_eq!(query_token("/p?a=1&access_token=x#y").as_deref(), Some("x"));
    }

    #[test]
    fn the_cache_answers_a_known_token_until_it_expires() {
        let cfg = cfg(); // leeway 60 s
        let mut cache = TokenCache::new(16);
        let claims = format!(
            r#"{{"iss":"kyc-service","aud":"kyc-api","sub":"kyc-client","exp":{},"scope":"kyc:read"}}"#,
            NOW + 10
        );
        let token = ed(
            &ed_key(),
            r#"{"alg":"EdDSA","typ":"at+jwt","kid":"ed-1"}"#,
            &claims,
        );
        let header = format!("Bearer {token}");
        let first = cache
            .authenticate(&cfg, Some(&header), None, NOW)
            .expect("valid");
        assert_eq!(cache.len(), 1);
        assert_eq!(
            cache.authenticate(&cfg, Some(&header), None, NOW + 69),
            Ok(first)
        );
        assert_eq!(cache.len(), 1);
        assert_eq!(
            cache.authenticate(&cfg, Some(&header), None, NOW + 70),
            Err(JwtError::Expired)
        );
        assert!(cache.is_empty(), "an expired token is dropped, not kept");
    }

    #[test]
    fn the_cache_still_checks_scopes_and_never_keeps_failures() {
        let cfg = service_cfg(r#","required_scopes":["kyc:pii"]"#);
        let mut cache = TokenCache::new(16);
        let header = format!("Bearer {}", hs_token(&claims_at(NOW)));
        for _ in 0..2 {
            let e = cache
                .authenticate(&cfg, Some(&header), None, NOW)
                .expect_err("403");
            assert_eq!(e.reason(), "insufficient_scope");
        }
        let forged = format!("Bearer {}", tamper(&hs_token(&claims_at(NOW)), 2));
        assert_eq!(
            cache.authenticate(&cfg, Some(&forged), None, NOW),
            Err(JwtError::BadSignature)
        );
        assert_eq!(cache.len(), 1, "only the verified token is remembered");
        assert_eq!(
            cache.authenticate(&cfg, None, None, NOW),
            Err(JwtError::Missing)
        );
    }

    #[test]
    fn the_cache_stays_within_its_capacity() {
        let cfg = cfg();
        let mut cache = TokenCache::new(3);
        for i in 0..10_u64 {
            let claims = format!(
                r#"{{"iss":"kyc-service","aud":"kyc-api","sub":"c{i}","exp":{}}}"#,
                NOW + 600
            );
            let header = format!("Bearer {}", hs_token(&claims));
            let id = cache
                .authenticate(&cfg, Some(&header), None, NOW)
                .expect("valid");
            assert_eq!(id.client_id, format!("c{i}"));
            assert!(cache.len() <= 3);
        }
        let mut off = TokenCache::new(0);
        let header = format!("Bearer {}", hs_token(&claims_at(NOW)));
        assert!(off.authenticate(&cfg, Some(&header), None, NOW).is_ok());
        assert!(off.is_empty());
    }

    #[test]
    fn an_identity_survives_the_trip_through_kong_ctx_shared() {
        let id = Identity {
            client_id: "kyc-client".into(),
            scopes: vec!["kyc:read".into()],
            subject: Some("kyc-client".into()),
            token_id: None,
        };
        let json = serde_json::to_string(&id).expect("serialises");
        assert_eq!(serde_json::from_str::<Identity>(&json).expect("parses"), id);
        assert!(id.has_scope("kyc:read") && !id.has_scope("kyc:pii"));
    }
}
