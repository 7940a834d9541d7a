//! The typed configuration of each filter, parsed once from the JSON bytes Kong hands to
//! `on_configure` (an empty config counts as `{}`), with defaults and validation. Every error names
//! the field it is about (`jwks.keys[0].x`), so the filter can log it and refuse to start.
//! Owns parsing and validation only; what a value means for a request belongs to its policy module.
//!
//! Unknown fields are errors: a misspelt `required_scope` must not silently disable a check.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use sha2::{Digest, Sha256};

use crate::mask::{self, MaskRule};

/// The field named in errors about the document as a whole (not JSON, not an object).
pub const WHOLE_CONFIG: &str = "config";

/// Why a filter configuration was refused: the field (a path like `jwks.keys[0].x`) and what is
/// wrong with it. Never contains a secret's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    /// The path of the offending field, or [`WHOLE_CONFIG`].
    pub field: String,
    /// What is wrong, in words an operator can act on.
    pub message: String,
}

impl ConfigError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    // serde's derive would also read a JSON array positionally into a struct; a config is an object.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ConfigError::new(WHOLE_CONFIG, "must be a JSON object"));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| serde_error(&e.path().to_string(), &e.into_inner()))?;
    de.end().map_err(|e| serde_error(".", &e))?;
    Ok(value)
}

fn serde_error(path: &str, e: &serde_json::Error) -> ConfigError {
    let full = e.to_string();
    if !e.is_data() {
        return ConfigError::new(WHOLE_CONFIG, full);
    }
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = full.strip_suffix(&suffix).unwrap_or(&full);
    let parent = match path {
        "." | "?" => "",
        p => p,
    };
    // serde reports a missing field at its parent; name the field itself.
    if let Some(name) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        return ConfigError::new(join(parent, name), "is required");
    }
    ConfigError::new(
        if parent.is_empty() {
            WHOLE_CONFIG
        } else {
            parent
        },
        message,
    )
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}.{name}")
    }
}

/// RFC 6749 `scope-token`: `%x21 / %x23-5B / %x5D-7E`, so it is also safe inside a quoted header value.
pub(crate) fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E))
}

/// Printable ASCII without `"` and `\`: safe inside a quoted-string or a structured-field string.
fn is_quotable(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| (0x20..=0x7E).contains(&b) && b != b'"' && b != b'\\')
}

// ---------------------------------------------------------------------------------------------
// kyc_jwt
// ---------------------------------------------------------------------------------------------

/// A JWS algorithm the gateway can verify. `none` is not one of them, and never will be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// HMAC with SHA-256, keyed with the configured shared secret.
    HS256,
    /// Ed25519 (RFC 8037), with an `OKP` key from the JWKS.
    EdDSA,
    /// ECDSA on P-256 with SHA-256, with an `EC` key from the JWKS.
    ES256,
}

impl Algorithm {
    /// The JOSE name, as in a token's `alg` header.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HS256 => "HS256",
            Self::EdDSA => "EdDSA",
            Self::ES256 => "ES256",
        }
    }

    /// The algorithm named exactly `name` (JOSE names are case-sensitive), if supported.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "HS256" => Some(Self::HS256),
            "EdDSA" => Some(Self::EdDSA),
            "ES256" => Some(Self::ES256),
            _ => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A decoded public key from the configured JWKS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// `{"kty":"OKP","crv":"Ed25519","x":…}`.
    Ed25519(ed25519_dalek_nostd::VerifyingKey),
    /// `{"kty":"EC","crv":"P-256","x":…,"y":…}`.
    P256(p256_nostd::ecdsa::VerifyingKey),
}

impl PublicKey {
    /// The one algorithm this key verifies.
    #[must_use]
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Self::Ed25519(_) => Algorithm::EdDSA,
            Self::P256(_) => Algorithm::ES256,
        }
    }
}

/// One verification key of the JWKS, with its `kid` when it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwk {
    /// The key id tokens select it by.
    pub kid: Option<String>,
    /// The decoded key; its type fixes the algorithm.
    pub key: PublicKey,
}

/// An HS256 shared secret and the `kid` kyc-service gives the tokens it signs with it. Its `Debug`
/// never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct HmacSecret {
    bytes: Vec<u8>,
    kid: String,
}

impl HmacSecret {
    /// At least 32 bytes, as RFC 7518 section 3.2 requires for HS256.
    pub const MIN_LEN: usize = 32;

    /// Wraps the secret's bytes and derives its `kid` (once, here, not per request).
    fn new(bytes: Vec<u8>) -> Self {
        let kid = hs256_kid(&bytes);
        Self { bytes, kid }
    }

    /// The secret's bytes, for keying the MAC.
    #[must_use]
    pub fn expose(&self) -> &[u8] {
        &self.bytes
    }

    /// The `kid` of tokens signed with this secret: `hs256-` and the first 16 hex digits of
    /// SHA-256 over `kid:` and the secret, as kyc-service derives it. It reveals nothing usable
    /// about the secret (every token carries it anyway).
    #[must_use]
    pub fn kid(&self) -> &str {
        &self.kid
    }
}

impl fmt::Debug for HmacSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "HmacSecret({}, {} bytes, redacted)",
            self.kid,
            self.bytes.len()
        )
    }
}

/// kyc-service's `hs256_kid` (`service/src/auth/tokens.rs`): the two must agree byte for byte, or
/// a rotated token would find no key at the gateway.
fn hs256_kid(secret: &[u8]) -> String {
    use std::fmt::Write as _;
    let digest = Sha256::new()
        .chain_update(b"kid:")
        .chain_update(secret)
        .finalize();
    let mut kid = String::with_capacity(22);
    kid.push_str("hs256-");
    for byte in &digest[..8] {
        let _ = write!(kid, "{byte:02x}");
    }
    kid
}

/// Configuration of `kyc_jwt`. See the README for the JSON form.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// The algorithms a token may use; anything else (and `none`) is refused. Default `["HS256"]`.
    pub algorithms: Vec<Algorithm>,
    /// The current HS256 secret (`secret` as UTF-8 text, or `secret_base64url` for binary
    /// secrets): the one kyc-service signs with.
    pub secret: Option<HmacSecret>,
    /// Earlier HS256 secrets kept through a rotation (`previous_secrets` as text, then
    /// `previous_secrets_base64url`). They only verify tokens whose `kid` names them; see
    /// [`JwtConfig::hs256_secret`]. Never set without `secret`. Default none.
    pub previous_secrets: Vec<HmacSecret>,
    /// The public keys for EdDSA and ES256, from the inline `jwks`.
    pub keys: Vec<Jwk>,
    /// When set, a token's `iss` must equal it.
    pub issuer: Option<String>,
    /// When set, a token's `aud` (a string or an array) must contain it.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`, in seconds. Default 60, at most 3600.
    pub leeway_secs: u64,
    /// Scopes a token must all carry (403 otherwise). Default none.
    pub required_scopes: Vec<String>,
    /// Also look for the token in the query's `access_token` parameter. Default false.
    pub allow_query_token: bool,
    /// A query parameter (e.g. `ticket`) whose presence, on a request with no token at all, lets
    /// the request through without an identity, for the upstream to check (a single-use
    /// WebSocket ticket that browsers send instead of a header). Default none.
    pub anonymous_query_param: Option<String>,
    /// When set, the header's `typ` must be this (compared case-insensitively, with or without
    /// `application/`). Default `at+jwt` (RFC 9068), which keeps refresh tokens out.
    pub token_type: Option<String>,
    /// The `realm` of `WWW-Authenticate`. Default `kyc`.
    pub realm: String,
}

impl JwtConfig {
    /// Parses and validates the filter's JSON configuration.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first offending field.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        parse::<RawJwtConfig>(bytes)?.validate()
    }

    /// Whether tokens may use `alg`.
    #[must_use]
    pub fn allows(&self, alg: Algorithm) -> bool {
        self.algorithms.contains(&alg)
    }

    /// The one HS256 secret that may verify a token with this `kid`: the configured secret,
    /// current or previous, whose derived kid it is; otherwise (no `kid`, or one naming none of
    /// them) the current secret. `None` when no secret is configured. Only this secret is tried.
    #[must_use]
    pub fn hs256_secret(&self, kid: Option<&str>) -> Option<&HmacSecret> {
        let current = self.secret.as_ref()?;
        let named = kid.and_then(|kid| {
            std::iter::once(current)
                .chain(&self.previous_secrets)
                .find(|s| s.kid() == kid)
        });
        Some(named.unwrap_or(current))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJwtConfig {
    #[serde(default = "default_algorithms")]
    algorithms: Vec<String>,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    secret_base64url: Option<String>,
    #[serde(default)]
    previous_secrets: Option<SecretList>,
    #[serde(default)]
    previous_secrets_base64url: Option<SecretList>,
    #[serde(default)]
    jwks: Option<RawJwks>,
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    audience: Option<String>,
    #[serde(default = "default_leeway")]
    leeway_secs: u64,
    #[serde(default)]
    required_scopes: Vec<String>,
    #[serde(default)]
    allow_query_token: bool,
    #[serde(default)]
    anonymous_query_param: Option<String>,
    #[serde(default = "default_token_type")]
    token_type: Option<String>,
    #[serde(default = "default_realm")]
    realm: String,
}

fn default_algorithms() -> Vec<String> {
    vec!["HS256".to_owned()]
}

fn default_leeway() -> u64 {
    60
}

#[allow(clippy::unnecessary_wraps)] // serde's `default` needs the field's type
fn default_token_type() -> Option<String> {
    Some("at+jwt".to_owned())
}

fn default_realm() -> String {
    "kyc".to_owned()
}

/// A list of secrets. serde's own message for a single string where the list belongs (an easy slip
/// in YAML) would repeat the string, that is the secret; this one does not.
struct SecretList(Vec<String>);

impl<'de> Deserialize<'de> for SecretList {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = SecretList;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of strings")
            }

            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<SecretList, E> {
                Err(E::invalid_type(
                    serde::de::Unexpected::Other("a single string (not shown)"),
                    &self,
                ))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<SecretList, A::Error> {
                let mut secrets = Vec::new();
                while let Some(secret) = seq.next_element::<String>()? {
                    secrets.push(secret);
                }
                Ok(SecretList(secrets))
            }
        }

        // deserialize_any: serde_json's deserialize_seq reports a string itself, quoting it.
        de.deserialize_any(Visitor)
    }
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<RawJwk>,
}

#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    d: Option<IgnoredAny>,
}

/// The longest leeway accepted: beyond an hour, `exp` stops meaning much.
const MAX_LEEWAY_SECS: u64 = 3600;

impl RawJwtConfig {
    fn validate(self) -> Result<JwtConfig, ConfigError> {
        let algorithms = parse_algorithms(&self.algorithms)?;
        let keys = match &self.jwks {
            Some(jwks) => jwks
                .keys
                .iter()
                .enumerate()
                .map(|(i, k)| k.validate(i))
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        let secret = self.secret()?;
        let previous = self.previous_secrets()?;
        if let Some(jwks) = &self.jwks {
            // An operator who pastes a public key as an HS256 secret lets anyone mint tokens.
            let current = secret.iter().map(|s| ("secret", s));
            for (field, hmac) in current.chain(previous.iter().map(|(f, s)| (f.as_str(), s))) {
                if jwks
                    .keys
                    .iter()
                    .any(|k| k.public_material_equals(hmac.expose()))
                {
                    return Err(ConfigError::new(
                        field,
                        "is one of the public keys in jwks; an HS256 secret must be secret",
                    ));
                }
            }
        }
        if algorithms.contains(&Algorithm::HS256) && secret.is_none() {
            return Err(ConfigError::new(
                "secret",
                "is required when algorithms include HS256",
            ));
        }
        if secret.is_none() && !previous.is_empty() {
            let list = if self
                .previous_secrets
                .as_ref()
                .is_some_and(|l| !l.0.is_empty())
            {
                "previous_secrets"
            } else {
                "previous_secrets_base64url"
            };
            return Err(ConfigError::new(
                list,
                "needs secret or secret_base64url: previous secrets only verify beside a current one",
            ));
        }
        for (alg, kind) in [
            (Algorithm::EdDSA, "an Ed25519 (OKP) key"),
            (Algorithm::ES256, "a P-256 (EC) key"),
        ] {
            if algorithms.contains(&alg) && !keys.iter().any(|k| k.key.algorithm() == alg) {
                return Err(ConfigError::new(
                    "jwks",
                    format!("needs {kind} when algorithms include {alg}"),
                ));
            }
        }
        if self.leeway_secs > MAX_LEEWAY_SECS {
            return Err(ConfigError::new(
                "leeway_secs",
                format!("must be at most {MAX_LEEWAY_SECS}"),
            ));
        }
        for (field, value) in [
            ("issuer", &self.issuer),
            ("audience", &self.audience),
            ("token_type", &self.token_type),
        ] {
            if value.as_deref().is_some_and(str::is_empty) {
                return Err(ConfigError::new(
                    field,
                    "must not be empty (use null to skip the check)",
                ));
            }
        }
        for (i, scope) in self.required_scopes.iter().enumerate() {
            if !is_scope_token(scope) {
                return Err(ConfigError::new(
                    format!("required_scopes[{i}]"),
                    "must be a scope token: visible ASCII without spaces, quotes or backslashes",
                ));
            }
        }
        if !is_quotable(&self.realm) {
            return Err(ConfigError::new(
                "realm",
                "must be printable ASCII without quotes or backslashes",
            ));
        }
        if let Some(p) = &self.anonymous_query_param
            && (p.is_empty()
                || p.len() > 64
                || p == "access_token"
                || !p
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
        {
            return Err(ConfigError::new(
                "anonymous_query_param",
                "must be 1-64 letters, digits, '_' or '-', and not access_token",
            ));
        }
        Ok(JwtConfig {
            algorithms,
            secret,
            previous_secrets: previous.into_iter().map(|(_, s)| s).collect(),
            keys,
            issuer: self.issuer,
            audience: self.audience,
            leeway_secs: self.leeway_secs,
            required_scopes: self.required_scopes,
            allow_query_token: self.allow_query_token,
            anonymous_query_param: self.anonymous_query_param,
            token_type: self.token_type,
            realm: self.realm,
        })
    }

    fn secret(&self) -> Result<Option<HmacSecret>, ConfigError> {
        match (&self.secret, &self.secret_base64url) {
            (Some(_), Some(_)) => Err(ConfigError::new(
                "secret_base64url",
                "set either secret or secret_base64url, not both",
            )),
            (Some(text), None) => hmac_secret("secret", text, false).map(Some),
            (None, Some(b64)) => hmac_secret("secret_base64url", b64, true).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// The previous secrets, text ones first, each with the field it came from.
    fn previous_secrets(&self) -> Result<Vec<(String, HmacSecret)>, ConfigError> {
        let mut out = Vec::new();
        for (list, values, is_base64url) in [
            ("previous_secrets", &self.previous_secrets, false),
            (
                "previous_secrets_base64url",
                &self.previous_secrets_base64url,
                true,
            ),
        ] {
            for (i, value) in values.iter().flat_map(|l| &l.0).enumerate() {
                let field = format!("{list}[{i}]");
                let secret = hmac_secret(&field, value, is_base64url)?;
                out.push((field, secret));
            }
        }
        Ok(out)
    }
}

/// Decodes one HS256 secret (UTF-8 text, or base64url bytes with optional padding) and checks its
/// length. Errors name `field` and never contain the value.
fn hmac_secret(field: &str, value: &str, base64url: bool) -> Result<HmacSecret, ConfigError> {
    let bytes = if base64url {
        URL_SAFE_NO_PAD
            .decode(value.trim_end_matches('='))
            .map_err(|_| ConfigError::new(field, "is not base64url"))?
    } else {
        value.as_bytes().to_vec()
    };
    if bytes.len() < HmacSecret::MIN_LEN {
        return Err(ConfigError::new(
            field,
            format!(
                "must be at least {} bytes long (got {})",
                HmacSecret::MIN_LEN,
                bytes.len()
            ),
        ));
    }
    Ok(HmacSecret::new(bytes))
}

fn parse_algorithms(names: &[String]) -> Result<Vec<Algorithm>, ConfigError> {
    if names.is_empty() {
        return Err(ConfigError::new(
            "algorithms",
            "must list at least one algorithm",
        ));
    }
    let mut out = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let field = format!("algorithms[{i}]");
        if name.eq_ignore_ascii_case("none") {
            return Err(ConfigError::new(
                field,
                "`none` (unsigned tokens) is never accepted",
            ));
        }
        let alg = Algorithm::parse(name).ok_or_else(|| {
            ConfigError::new(
                field,
                format!("`{name}` is not supported; use HS256, EdDSA or ES256"),
            )
        })?;
        if !out.contains(&alg) {
            out.push(alg);
        }
    }
    Ok(out)
}

impl RawJwk {
    fn validate(&self, i: usize) -> Result<Jwk, ConfigError> {
        let at = |name: &str| format!("jwks.keys[{i}].{name}");
        if self.d.is_some() {
            return Err(ConfigError::new(
                at("d"),
                "is private key material; give the gateway public keys only",
            ));
        }
        if let Some(u) = &self.use_
            && u != "sig"
        {
            return Err(ConfigError::new(
                at("use"),
                "must be \"sig\" for a verification key",
            ));
        }
        let key = match self.kty.as_str() {
            "OKP" => {
                self.expect_curve(i, "Ed25519")?;
                let x: [u8; 32] = decode_coordinate(self.x.as_deref(), &at("x"))?;
                let vk = ed25519_dalek_nostd::VerifyingKey::from_bytes(&x)
                    .map_err(|_| ConfigError::new(at("x"), "is not an Ed25519 public key"))?;
                if vk.is_weak() {
                    return Err(ConfigError::new(
                        at("x"),
                        "is a weak (small-order) Ed25519 key",
                    ));
                }
                PublicKey::Ed25519(vk)
            }
            "EC" => {
                self.expect_curve(i, "P-256")?;
                let x: [u8; 32] = decode_coordinate(self.x.as_deref(), &at("x"))?;
                let y: [u8; 32] = decode_coordinate(self.y.as_deref(), &at("y"))?;
                let point =
                    p256_nostd::EncodedPoint::from_affine_coordinates(&x.into(), &y.into(), false);
                let vk = p256_nostd::ecdsa::VerifyingKey::from_encoded_point(&point)
                    .map_err(|_| ConfigError::new(at("y"), "x and y are not a point on P-256"))?;
                PublicKey::P256(vk)
            }
            "oct" => {
                return Err(ConfigError::new(
                    at("kty"),
                    "symmetric keys do not belong in jwks; put the HS256 secret in `secret`",
                ));
            }
            other => {
                return Err(ConfigError::new(
                    at("kty"),
                    format!("`{other}` is not supported; use OKP (Ed25519) or EC (P-256)"),
                ));
            }
        };
        if let Some(alg) = &self.alg
            && Algorithm::parse(alg) != Some(key.algorithm())
        {
            return Err(ConfigError::new(
                at("alg"),
                format!("must be {} for this key type", key.algorithm()),
            ));
        }
        Ok(Jwk {
            kid: self.kid.clone(),
            key,
        })
    }

    fn expect_curve(&self, i: usize, curve: &str) -> Result<(), ConfigError> {
        if self.crv.as_deref() == Some(curve) {
            Ok(())
        } else {
            Err(ConfigError::new(
                format!("jwks.keys[{i}].crv"),
                format!("must be {curve} for kty {}", self.kty),
            ))
        }
    }

    fn public_material_equals(&self, secret: &[u8]) -> bool {
        [&self.x, &self.y].into_iter().flatten().any(|coordinate| {
            secret == coordinate.as_bytes()
                || URL_SAFE_NO_PAD
                    .decode(coordinate)
                    .is_ok_and(|raw| raw == secret)
        })
    }
}

fn decode_coordinate(value: Option<&str>, field: &str) -> Result<[u8; 32], ConfigError> {
    let value = value.ok_or_else(|| ConfigError::new(field, "is required"))?;
    let raw = URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| ConfigError::new(field, "is not unpadded base64url"))?;
    raw.try_into()
        .map_err(|_| ConfigError::new(field, "must decode to 32 bytes"))
}

// ---------------------------------------------------------------------------------------------
// kyc_rate_limit
// ---------------------------------------------------------------------------------------------

/// Configuration of `kyc_rate_limit`: a GCRA limit per client (or per source address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Sustained requests per second. Default 100 (the seed's `rate_limit_per_second`).
    pub rate_per_sec: u32,
    /// Requests admitted at once from a fresh state. Default 200 (the seed's `rate_limit_burst`).
    pub burst: u32,
    /// The policy's name in the `RateLimit-Policy` and `RateLimit` fields. Default `edge`.
    pub policy_name: String,
    /// Add the rate-limit headers to admitted responses too (refusals always carry them).
    /// Default true.
    pub emit_headers: bool,
    /// When shared data cannot be read or settled, refuse the request (503) instead of letting it
    /// through. Default false: availability wins, and the filter counts the failure.
    pub fail_closed: bool,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            rate_per_sec: 100,
            burst: 200,
            policy_name: "edge".to_owned(),
            emit_headers: true,
            fail_closed: false,
        }
    }
}

/// The largest rate or burst accepted: beyond a million per second the limiter limits nothing.
const MAX_RATE: u32 = 1_000_000;

impl RateLimitConfig {
    /// Parses and validates the filter's JSON configuration.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first offending field.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let raw: RawRateLimitConfig = parse(bytes)?;
        let defaults = Self::default();
        let cfg = Self {
            rate_per_sec: raw.rate_per_sec.unwrap_or(defaults.rate_per_sec),
            burst: raw.burst.unwrap_or(defaults.burst),
            policy_name: raw.policy_name.unwrap_or(defaults.policy_name),
            emit_headers: raw.emit_headers.unwrap_or(defaults.emit_headers),
            fail_closed: raw.fail_closed.unwrap_or(defaults.fail_closed),
        };
        for (field, value) in [("rate_per_sec", cfg.rate_per_sec), ("burst", cfg.burst)] {
            if !(1..=MAX_RATE).contains(&value) {
                return Err(ConfigError::new(
                    field,
                    format!("must be between 1 and {MAX_RATE}"),
                ));
            }
        }
        if !is_quotable(&cfg.policy_name) || cfg.policy_name.len() > 64 {
            return Err(ConfigError::new(
                "policy_name",
                "must be 1 to 64 printable ASCII characters without quotes or backslashes",
            ));
        }
        Ok(cfg)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimitConfig {
    #[serde(default)]
    rate_per_sec: Option<u32>,
    #[serde(default)]
    burst: Option<u32>,
    #[serde(default)]
    policy_name: Option<String>,
    #[serde(default)]
    emit_headers: Option<bool>,
    #[serde(default)]
    fail_closed: Option<bool>,
}

// ---------------------------------------------------------------------------------------------
// kyc_idempotency
// ---------------------------------------------------------------------------------------------

/// Configuration of `kyc_idempotency`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyConfig {
    /// How long a completed response is replayed, in seconds. Default 86400 (a day).
    pub ttl_secs: u64,
    /// How long an in-flight record holds its key before it counts as abandoned. Default 60.
    pub lock_timeout_secs: u64,
    /// Responses with a larger body are not cached. Default 65536 (64 KiB).
    pub max_body_bytes: usize,
    /// The methods the filter applies to (others pass untouched). Default `["POST", "PATCH"]`.
    pub methods: Vec<String>,
    /// Refuse (400) a request of those methods that has no `Idempotency-Key`. Default false:
    /// such a request passes without idempotency.
    pub required: bool,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        Self {
            ttl_secs: 86_400,
            lock_timeout_secs: 60,
            max_body_bytes: 64 * 1024,
            methods: vec!["POST".to_owned(), "PATCH".to_owned()],
            required: false,
        }
    }
}

/// Thirty days: longer promises than that belong in the service's database, not a shared-memory zone.
const MAX_TTL_SECS: u64 = 30 * 86_400;
/// Each cached body lives in the nginx shared-memory zone; keep a single entry well below its size.
const MAX_CACHED_BODY: u64 = 16 * 1024 * 1024;

impl IdempotencyConfig {
    /// Parses and validates the filter's JSON configuration.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first offending field.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let raw: RawIdempotencyConfig = parse(bytes)?;
        let defaults = Self::default();
        let ttl_secs = raw.ttl_secs.unwrap_or(defaults.ttl_secs);
        if !(1..=MAX_TTL_SECS).contains(&ttl_secs) {
            return Err(ConfigError::new(
                "ttl_secs",
                format!("must be between 1 and {MAX_TTL_SECS}"),
            ));
        }
        let lock_timeout_secs = raw.lock_timeout_secs.unwrap_or(defaults.lock_timeout_secs);
        if !(1..=ttl_secs).contains(&lock_timeout_secs) {
            return Err(ConfigError::new(
                "lock_timeout_secs",
                "must be between 1 and ttl_secs",
            ));
        }
        let max_body_bytes = match raw.max_body_bytes {
            None => defaults.max_body_bytes,
            Some(n) if n <= MAX_CACHED_BODY => usize::try_from(n)
                .map_err(|_| ConfigError::new("max_body_bytes", "does not fit this platform"))?,
            Some(_) => {
                return Err(ConfigError::new(
                    "max_body_bytes",
                    format!("must be at most {MAX_CACHED_BODY}"),
                ));
            }
        };
        let methods = raw.methods.unwrap_or(defaults.methods);
        if methods.is_empty() {
            return Err(ConfigError::new("methods", "must list at least one method"));
        }
        for (i, m) in methods.iter().enumerate() {
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(ConfigError::new(
                    format!("methods[{i}]"),
                    "must be an upper-case HTTP method such as POST",
                ));
            }
        }
        Ok(Self {
            ttl_secs,
            lock_timeout_secs,
            max_body_bytes,
            methods,
            required: raw.required.unwrap_or(defaults.required),
        })
    }

    /// Whether requests with this method go through the filter.
    #[must_use]
    pub fn applies_to(&self, method: &str) -> bool {
        self.methods.iter().any(|m| m == method)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdempotencyConfig {
    #[serde(default)]
    ttl_secs: Option<u64>,
    #[serde(default)]
    lock_timeout_secs: Option<u64>,
    #[serde(default)]
    max_body_bytes: Option<u64>,
    #[serde(default)]
    methods: Option<Vec<String>>,
    #[serde(default)]
    required: Option<bool>,
}

// ---------------------------------------------------------------------------------------------
// kyc_pii_mask
// ---------------------------------------------------------------------------------------------

/// The fields masked when the config names none.
pub const DEFAULT_MASKED_FIELDS: [&str; 7] = [
    "name",
    "id_card",
    "idcard",
    "id_number",
    "phone",
    "mobile",
    "address",
];

/// One masked field: its name as configured, the form keys are compared in, and its rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskField {
    /// As configured.
    pub name: String,
    /// Lower-case ASCII without `_` and `-`: `idCard`, `ID_CARD` and `id-card` all match `idcard`.
    pub normalized: String,
    /// How values of this field are masked, chosen from its name (see [`MaskRule::for_field`]).
    pub rule: MaskRule,
}

/// Configuration of `kyc_pii_mask`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskConfig {
    /// The fields whose values are masked, at any depth. Default [`DEFAULT_MASKED_FIELDS`].
    pub fields: Vec<MaskField>,
    /// A caller whose token carries this scope sees the body unmasked. Default `kyc:pii`;
    /// null masks for everyone.
    pub unmasked_scope: Option<String>,
}

impl Default for MaskConfig {
    fn default() -> Self {
        Self {
            fields: DEFAULT_MASKED_FIELDS
                .iter()
                .map(|name| mask_field(name))
                .collect(),
            unmasked_scope: Some("kyc:pii".to_owned()),
        }
    }
}

fn mask_field(name: &str) -> MaskField {
    let normalized = mask::normalize_field(name);
    MaskField {
        name: name.to_owned(),
        rule: MaskRule::for_field(&normalized),
        normalized,
    }
}

impl MaskConfig {
    /// Parses and validates the filter's JSON configuration.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first offending field.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let raw: RawMaskConfig = parse(bytes)?;
        let defaults = Self::default();
        let fields = match raw.fields {
            None => defaults.fields,
            Some(names) => {
                if names.is_empty() {
                    return Err(ConfigError::new(
                        "fields",
                        "must list at least one field (or disable the filter)",
                    ));
                }
                let mut fields = Vec::with_capacity(names.len());
                for (i, name) in names.iter().enumerate() {
                    let field = mask_field(name);
                    if field.normalized.is_empty() {
                        return Err(ConfigError::new(
                            format!("fields[{i}]"),
                            "must contain a letter or digit",
                        ));
                    }
                    fields.push(field);
                }
                fields
            }
        };
        let unmasked_scope = match raw.unmasked_scope {
            None => defaults.unmasked_scope,
            Some(None) => None,
            Some(Some(scope)) if is_scope_token(&scope) => Some(scope),
            Some(Some(_)) => {
                return Err(ConfigError::new(
                    "unmasked_scope",
                    "must be a scope token (or null to mask for everyone)",
                ));
            }
        };
        Ok(Self {
            fields,
            unmasked_scope,
        })
    }

    /// The rule for an object key already in normalized form, if the field is masked.
    #[must_use]
    pub fn rule_for(&self, normalized_key: &str) -> Option<MaskRule> {
        self.fields
            .iter()
            .find(|f| f.normalized == normalized_key)
            .map(|f| f.rule)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMaskConfig {
    #[serde(default)]
    fields: Option<Vec<String>>,
    // Absent → default scope; explicit null → no bypass.
    #[serde(default, deserialize_with = "present")]
    unmasked_scope: Option<Option<String>>,
}

/// Distinguishes an explicit `null` (Some(None)) from an absent field (None, via `default`).
fn present<'de, D, T>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "your-secret-key-here-must-be-32-bytes-long";
    // RFC 8037 appendix A.2 and RFC 7515 appendix A.3 public keys.
    const ED_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
    const EC_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
    const EC_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
    /// RFC 7515 appendix A.1's HS256 key: 64 bytes, unpadded base64url.
    const B64_SECRET: &str =
        "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";

    fn jwt(json: &str) -> Result<JwtConfig, ConfigError> {
        JwtConfig::from_json(json.as_bytes())
    }

    fn err_field(r: Result<JwtConfig, ConfigError>) -> String {
        match r {
            Ok(_) => panic!("expected the config to be refused"),
            Err(e) => e.field,
        }
    }

    #[test]
    fn a_minimal_hs256_config_gets_the_defaults() {
        let cfg = jwt(&format!(r#"{{"secret":"{SECRET}"}}"#)).expect("valid");
        assert_eq!(cfg.algorithms, vec![Algorithm::HS256]);
        assert_eq!(cfg.leeway_secs, 60);
        assert_eq!(cfg.token_type.as_deref(), Some("at+jwt"));
        assert_eq!(cfg.realm, "kyc");
        assert!(!cfg.allow_query_token);
        assert!(cfg.issuer.is_none() && cfg.audience.is_none());
        assert!(cfg.required_scopes.is_empty());
    }

    #[test]
    fn a_full_asymmetric_config_decodes_its_keys() {
        let cfg = jwt(&format!(
            r#"{{"algorithms":["EdDSA","ES256"],"issuer":"kyc-service","audience":"kyc-api",
                "required_scopes":["kyc:read"],"token_type":null,"leeway_secs":5,
                "jwks":{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{ED_X}","kid":"ed"}},
                                 {{"kty":"EC","crv":"P-256","x":"{EC_X}","y":"{EC_Y}","kid":"ec","use":"sig","alg":"ES256"}}]}}}}"#
        ))
        .expect("valid");
        assert_eq!(cfg.keys.len(), 2);
        assert_eq!(cfg.keys[0].key.algorithm(), Algorithm::EdDSA);
        assert_eq!(cfg.keys[1].kid.as_deref(), Some("ec"));
        assert!(cfg.token_type.is_none());
        assert!(cfg.secret.is_none());
    }

    #[test]
    fn an_empty_config_counts_as_an_empty_object() {
        assert_eq!(
            RateLimitConfig::from_json(b"").expect("valid"),
            RateLimitConfig::default()
        );
        assert_eq!(
            IdempotencyConfig::from_json(b"  \n").expect("valid"),
            IdempotencyConfig::default()
        );
        assert_eq!(
            MaskConfig::from_json(b"").expect("valid"),
            MaskConfig::default()
        );
        // The JWT filter cannot work without a key, and says which one it needs.
        assert_eq!(err_field(jwt("")), "secret");
    }

    #[test]
    fn a_bad_key_coordinate_is_named_by_its_path() {
        let e = jwt(r#"{"algorithms":["EdDSA"],"jwks":{"keys":[{"kty":"OKP","crv":"Ed25519","x":"not base64!"}]}}"#)
            .expect_err("refused");
        assert_eq!(e.field, "jwks.keys[0].x");
        assert_eq!(e.to_string(), "jwks.keys[0].x: is not unpadded base64url");
        let short = jwt(
            r#"{"algorithms":["EdDSA"],"jwks":{"keys":[{"kty":"OKP","crv":"Ed25519","x":"AAAA"}]}}"#,
        );
        assert_eq!(err_field(short), "jwks.keys[0].x");
    }

    #[test]
    fn type_errors_missing_and_unknown_fields_name_the_field() {
        assert_eq!(err_field(jwt(r#"{"secret":5}"#)), "secret");
        assert_eq!(
            err_field(jwt(r#"{"jwks":{"keys":[{"x":"a"}]}}"#)),
            "jwks.keys[0].kty"
        );
        assert_eq!(err_field(jwt(r#"{"jwks":{}}"#)), "jwks.keys");
        assert_eq!(
            err_field(jwt(&format!(
                r#"{{"secret":"{SECRET}","required_scope":["x"]}}"#
            ))),
            "required_scope"
        );
        let e = RateLimitConfig::from_json(br#"{"burst":-1}"#).expect_err("refused");
        assert_eq!(e.field, "burst");
        assert!(!e.message.contains("line"), "{e}");
    }

    #[test]
    fn documents_that_are_not_json_objects_are_refused_as_a_whole() {
        for bad in [&b"[1]"[..], b"5", b"{\"burst\":1", b"{} {}", b"\"x\""] {
            let e = RateLimitConfig::from_json(bad).expect_err("refused");
            assert_eq!(e.field, WHOLE_CONFIG, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn none_and_unknown_algorithms_are_refused() {
        let e = jwt(r#"{"algorithms":["HS256","none"]}"#).expect_err("refused");
        assert_eq!(e.field, "algorithms[1]");
        assert!(e.message.contains("never"), "{e}");
        assert_eq!(
            err_field(jwt(r#"{"algorithms":["RS256"]}"#)),
            "algorithms[0]"
        );
        assert_eq!(
            err_field(jwt(r#"{"algorithms":["hs256"]}"#)),
            "algorithms[0]"
        );
        assert_eq!(err_field(jwt(r#"{"algorithms":[]}"#)), "algorithms");
    }

    #[test]
    fn each_allowed_algorithm_needs_its_key() {
        assert_eq!(err_field(jwt(r#"{"algorithms":["HS256"]}"#)), "secret");
        assert_eq!(err_field(jwt(r#"{"algorithms":["EdDSA"]}"#)), "jwks");
        let only_ed = format!(
            r#"{{"algorithms":["ES256"],"jwks":{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{ED_X}"}}]}}}}"#
        );
        assert_eq!(err_field(jwt(&only_ed)), "jwks");
    }

    #[test]
    fn short_or_doubled_secrets_are_refused() {
        let e = jwt(r#"{"secret":"too-short"}"#).expect_err("refused");
        assert_eq!(e.field, "secret");
        assert!(!e.message.contains("too-short"), "never echo a secret: {e}");
        let both = format!(r#"{{"secret":"{SECRET}","secret_base64url":"AAAA"}}"#);
        assert_eq!(err_field(jwt(&both)), "secret_base64url");
        assert_eq!(
            err_field(jwt(r#"{"secret_base64url":"%%%"}"#)),
            "secret_base64url"
        );
    }

    #[test]
    fn each_secret_gets_the_kid_kyc_service_gives_its_tokens() {
        // hs256- and 16 hex digits of SHA-256("kid:" || secret), computed independently:
        // python3 -c 'import hashlib; print(hashlib.sha256(b"kid:" + SECRET).hexdigest()[:16])'
        let cfg = jwt(&format!(
            r#"{{"secret":"{SECRET}","previous_secrets":["the-rotated-jwt-secret-of-at-least-32-bytes"]}}"#
        ))
        .expect("valid");
        assert_eq!(
            cfg.secret.as_ref().map(HmacSecret::kid),
            Some("hs256-0dc52c4ece8f8482")
        );
        assert_eq!(cfg.previous_secrets.len(), 1);
        assert_eq!(cfg.previous_secrets[0].kid(), "hs256-a8ef0fa17668fb68");
    }

    #[test]
    fn previous_secrets_are_checked_like_the_secret_and_never_echoed() {
        const OLD: &str = "the-previous-jwt-secret-of-at-least-32-bytes";
        let with = |extra: &str| jwt(&format!(r#"{{"secret":"{SECRET}",{extra}}}"#));
        let cfg = with(&format!(
            r#""previous_secrets":["{OLD}"],"previous_secrets_base64url":["{B64_SECRET}"]"#
        ))
        .expect("valid");
        assert_eq!(cfg.previous_secrets.len(), 2);
        assert_eq!(cfg.previous_secrets[0].expose(), OLD.as_bytes());
        assert_eq!(cfg.previous_secrets[1].expose().len(), 64);
        let debug = format!("{cfg:?}");
        for secret in [SECRET, OLD, "AyM1"] {
            assert!(
                !debug.contains(secret),
                "Debug must not print a secret: {debug}"
            );
        }
        for empty in [r#""previous_secrets":[]"#, r#""previous_secrets":null"#] {
            assert!(with(empty).expect("valid").previous_secrets.is_empty());
        }

        let leaked = "too-short-a-previous-secret";
        let refusals = [
            (
                format!(r#""previous_secrets":["{OLD}","{leaked}"]"#),
                "previous_secrets[1]",
            ),
            (
                format!(r#""previous_secrets":"{leaked}-{OLD}""#),
                "previous_secrets",
            ),
            (
                format!(r#""previous_secrets":["{OLD}",5]"#),
                "previous_secrets[1]",
            ),
            (
                format!(r#""previous_secrets_base64url":["{leaked}%%"]"#),
                "previous_secrets_base64url[0]",
            ),
            (
                r#""previous_secrets_base64url":["AAAA"]"#.to_owned(),
                "previous_secrets_base64url[0]",
            ),
            (format!(r#""previous_secret":["{OLD}"]"#), "previous_secret"),
        ];
        for (extra, field) in refusals {
            let e = with(&extra).expect_err("refused");
            assert_eq!(e.field, field, "{extra}");
            for secret in [leaked, OLD, SECRET] {
                assert!(!e.to_string().contains(secret), "never echo a secret: {e}");
            }
        }

        // Previous secrets only verify beside a current one.
        let ed_only = format!(
            r#"{{"algorithms":["EdDSA"],"jwks":{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{ED_X}"}}]}},"#
        );
        let e = jwt(&format!(r#"{ed_only}"previous_secrets":["{OLD}"]}}"#)).expect_err("refused");
        assert_eq!(e.field, "previous_secrets");
        assert!(!e.to_string().contains(OLD), "{e}");
        assert_eq!(
            err_field(jwt(&format!(
                r#"{ed_only}"previous_secrets_base64url":["{B64_SECRET}"]}}"#
            ))),
            "previous_secrets_base64url"
        );
        assert!(jwt(&format!(r#"{ed_only}"previous_secrets":[]}}"#)).is_ok());
    }

    #[test]
    fn a_binary_secret_can_be_given_in_base64url() {
        let cfg = jwt(r#"{"secret_base64url":"AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"}"#)
            .expect("valid");
        assert_eq!(cfg.secret.as_ref().map(|s| s.expose().len()), Some(64));
        assert!(
            !format!("{cfg:?}").contains("AyM1"),
            "Debug must not print the secret"
        );
    }

    #[test]
    fn a_public_key_pasted_as_the_secret_is_refused() {
        let x_as_text = format!(
            r#"{{"algorithms":["HS256","ES256"],"secret":"{EC_X}",
                "jwks":{{"keys":[{{"kty":"EC","crv":"P-256","x":"{EC_X}","y":"{EC_Y}"}}]}}}}"#
        );
        assert_eq!(err_field(jwt(&x_as_text)), "secret");
        let x_as_bytes = format!(
            r#"{{"algorithms":["HS256","ES256"],"secret_base64url":"{EC_Y}",
                "jwks":{{"keys":[{{"kty":"EC","crv":"P-256","x":"{EC_X}","y":"{EC_Y}"}}]}}}}"#
        );
        assert_eq!(err_field(jwt(&x_as_bytes)), "secret");
        let x_as_previous = format!(
            r#"{{"algorithms":["HS256","ES256"],"secret":"{SECRET}","previous_secrets_base64url":["{EC_X}"],
                "jwks":{{"keys":[{{"kty":"EC","crv":"P-256","x":"{EC_X}","y":"{EC_Y}"}}]}}}}"#
        );
        assert_eq!(
            err_field(jwt(&x_as_previous)),
            "previous_secrets_base64url[0]"
        );
        let y_as_previous = format!(
            r#"{{"algorithms":["HS256","ES256"],"secret":"{SECRET}","previous_secrets":["{SECRET}x","{EC_Y}"],
                "jwks":{{"keys":[{{"kty":"EC","crv":"P-256","x":"{EC_X}","y":"{EC_Y}"}}]}}}}"#
        );
        assert_eq!(err_field(jwt(&y_as_previous)), "previous_secrets[1]");
    }

    #[test]
    fn jwks_entries_must_be_public_signature_keys_we_support() {
        let cases = [
            (r#"{"kty":"oct","k":"AAAA"}"#.to_owned(), "jwks.keys[0].kty"),
            (
                r#"{"kty":"RSA","n":"AQAB","e":"AQAB"}"#.to_owned(),
                "jwks.keys[0].kty",
            ),
            (
                format!(r#"{{"kty":"OKP","crv":"X25519","x":"{ED_X}"}}"#),
                "jwks.keys[0].crv",
            ),
            (
                format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{ED_X}","d":"secret"}}"#),
                "jwks.keys[0].d",
            ),
            (
                format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{ED_X}","use":"enc"}}"#),
                "jwks.keys[0].use",
            ),
            (
                format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{ED_X}","alg":"ES256"}}"#),
                "jwks.keys[0].alg",
            ),
            (
                format!(r#"{{"kty":"EC","crv":"P-256","x":"{EC_X}"}}"#),
                "jwks.keys[0].y",
            ),
            (
                format!(r#"{{"kty":"EC","crv":"P-256","x":"{EC_X}","y":"{EC_X}"}}"#),
                "jwks.keys[0].y",
            ),
        ];
        for (key, field) in cases {
            let json = format!(r#"{{"secret":"{SECRET}","jwks":{{"keys":[{key}]}}}}"#);
            assert_eq!(err_field(jwt(&json)), field, "{key}");
        }
    }

    #[test]
    fn a_small_order_ed25519_key_is_refused() {
        // The identity point: every signature "verifies" against it under lax rules.
        let identity = URL_SAFE_NO_PAD.encode({
            let mut b = [0u8; 32];
            b[0] = 1;
            b
        });
        let json = format!(
            r#"{{"algorithms":["EdDSA"],"jwks":{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{identity}"}}]}}}}"#
        );
        assert_eq!(err_field(jwt(&json)), "jwks.keys[0].x");
    }

    #[test]
    fn scopes_realm_issuer_and_leeway_are_checked() {
        let with = |extra: &str| jwt(&format!(r#"{{"secret":"{SECRET}",{extra}}}"#));
        assert_eq!(
            err_field(with(r#""required_scopes":["kyc:read","a b"]"#)),
            "required_scopes[1]"
        );
        assert_eq!(
            err_field(with(r#""required_scopes":["say\"hi"]"#)),
            "required_scopes[0]"
        );
        assert_eq!(err_field(with(r#""realm":"k\"yc""#)), "realm");
        assert_eq!(err_field(with(r#""issuer":"""#)), "issuer");
        assert_eq!(err_field(with(r#""leeway_secs":86400"#)), "leeway_secs");
        assert!(with(r#""required_scopes":["kyc:read","kyc:write"]"#).is_ok());
    }

    #[test]
    fn rate_limit_bounds_are_enforced() {
        let cfg = RateLimitConfig::from_json(
            br#"{"rate_per_sec":5,"burst":10,"policy_name":"per-client"}"#,
        )
        .expect("valid");
        assert_eq!((cfg.rate_per_sec, cfg.burst), (5, 10));
        assert!(cfg.emit_headers);
        assert!(!cfg.fail_closed);
        assert_eq!(
            RateLimitConfig::from_json(br#"{"rate_per_sec":0}"#)
                .expect_err("0")
                .field,
            "rate_per_sec"
        );
        assert_eq!(
            RateLimitConfig::from_json(br#"{"burst":0}"#)
                .expect_err("0")
                .field,
            "burst"
        );
        assert_eq!(
            RateLimitConfig::from_json(br#"{"policy_name":"a\"b"}"#)
                .expect_err("quote")
                .field,
            "policy_name"
        );
    }

    #[test]
    fn rate_limit_fails_open_unless_told_to_fail_closed() {
        let parse = |json: &str| RateLimitConfig::from_json(json.as_bytes());
        assert!(!RateLimitConfig::default().fail_closed);
        assert!(!parse("{}").expect("valid").fail_closed);
        assert!(!parse(r#"{"fail_closed":null}"#).expect("valid").fail_closed);
        assert!(
            !parse(r#"{"fail_closed":false}"#)
                .expect("valid")
                .fail_closed
        );
        assert!(parse(r#"{"fail_closed":true}"#).expect("valid").fail_closed);
        for bad in [r#"{"fail_closed":"true"}"#, r#"{"fail_closed":1}"#] {
            assert_eq!(parse(bad).expect_err(bad).field, "fail_closed");
        }
        // A misspelling must not silently leave the limiter failing open.
        assert_eq!(
            parse(r#"{"fail_close":true}"#).expect_err("unknown").field,
            "fail_close"
        );
    }

    #[test]
    fn idempotency_limits_are_enforced() {
        let cfg = IdempotencyConfig::from_json(
            br#"{"ttl_secs":3600,"lock_timeout_secs":30,"methods":["POST"],"required":true}"#,
        )
        .expect("valid");
        assert!(cfg.required && cfg.applies_to("POST") && !cfg.applies_to("PATCH"));
        assert_eq!(cfg.max_body_bytes, 65_536);
        let field = |json: &str| {
            IdempotencyConfig::from_json(json.as_bytes())
                .expect_err("refused")
                .field
        };
        assert_eq!(field(r#"{"ttl_secs":0}"#), "ttl_secs");
        assert_eq!(
            field(r#"{"ttl_secs":10,"lock_timeout_secs":20}"#),
            "lock_timeout_secs"
        );
        assert_eq!(field(r#"{"max_body_bytes":1000000000}"#), "max_body_bytes");
        assert_eq!(field(r#"{"methods":["post"]}"#), "methods[0]");
        assert_eq!(field(r#"{"methods":[]}"#), "methods");
    }

    #[test]
    fn mask_fields_choose_their_rule_by_name() {
        let cfg = MaskConfig::from_json(br#"{"fields":["realName","ID-Card","contact_phone","home_address","email"],"unmasked_scope":null}"#)
            .expect("valid");
        let rules: Vec<MaskRule> = cfg.fields.iter().map(|f| f.rule).collect();
        assert_eq!(
            rules,
            vec![
                MaskRule::Name,
                MaskRule::IdNumber,
                MaskRule::Phone,
                MaskRule::Address,
                MaskRule::Ends
            ]
        );
        assert!(cfg.unmasked_scope.is_none());
        assert_eq!(cfg.rule_for("idcard"), Some(MaskRule::IdNumber));
        assert_eq!(
            MaskConfig::default().unmasked_scope.as_deref(),
            Some("kyc:pii")
        );
        assert_eq!(
            MaskConfig::default().fields.len(),
            DEFAULT_MASKED_FIELDS.len()
        );
        assert_eq!(
            MaskConfig::from_json(br#"{"fields":["__"]}"#)
                .expect_err("empty")
                .field,
            "fields[0]"
        );
        assert_eq!(
            MaskConfig::from_json(br#"{"fields":[]}"#)
                .expect_err("empty")
                .field,
            "fields"
        );
        assert_eq!(
            MaskConfig::from_json(br#"{"unmasked_scope":"a b"}"#)
                .expect_err("space")
                .field,
            "unmasked_scope"
        );
    }
}
