//! Signing and verifying JWTs. HS256 signs with `security.jwt_secret`; EdDSA and ES256 sign with a
//! private key whose public half is published at `/.well-known/jwks.json`, so a gateway can verify
//! tokens without holding any signing secret.
//!
//! Rotation: `security.previous_jwt_secrets` (HS256) and `security.previous_jwt_public_key_files`
//! (EdDSA/ES256) are keys that only verify; every new token is signed with the active key. A token
//! picks its key by `kid`, and only a key of the token's own algorithm can verify it. Previous public
//! keys are published in the JWKS too, so a gateway can keep verifying old tokens during the overlap.
//!
//! Access tokens carry `iss`, `aud`, `sub`, `exp`, `iat`, `nbf`, `jti` and `scope` (RFC 9068 shape).
//! Refresh tokens are JWTs too (as the seed shows), but for a different audience, so no verifier
//! of access tokens accepts one; the database decides whether one is still live.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, decode_header, encode,
};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{Caller, Scope};
use crate::config::{JwtAlgorithm, SecuritySettings};

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the signing key cannot be used: {0}")]
    Key(String),
    #[error("the token is invalid: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    pub scope: String,
    pub client_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefreshClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
}

/// A freshly minted token and its id.
#[derive(Debug, Clone)]
pub struct Minted {
    pub token: String,
    pub id: Uuid,
}

/// A key that verifies tokens of exactly one algorithm, named by its `kid`.
struct VerifyingKey {
    kid: String,
    alg: Algorithm,
    decoding: DecodingKey,
}

/// A public key as a JWK (with `kid`, `use` and `alg`) and its decoding key.
struct PublicJwk {
    alg: Algorithm,
    kid: String,
    jwk: Value,
    decoding: DecodingKey,
}

pub struct TokenService {
    alg: Algorithm,
    kid: String,
    encoding: EncodingKey,
    /// The active key first, then the previous ones; `kid`s are unique.
    keys: Vec<VerifyingKey>,
    jwks: Value,
    issuer: String,
    audience: String,
    refresh_audience: String,
    access_ttl: Duration,
    refresh_ttl: Duration,
    leeway: u64,
}

impl TokenService {
    /// # Errors
    /// When the configured private key, or a previous key, cannot be parsed.
    pub fn new(s: &SecuritySettings) -> Result<Self, TokenError> {
        let mut published = Vec::new();
        let (alg, kid, encoding, decoding) = match s.jwt_algorithm {
            JwtAlgorithm::Hs256 => {
                let secret = s.jwt_secret.expose_secret().as_bytes();
                (
                    Algorithm::HS256,
                    hs256_kid(secret),
                    EncodingKey::from_secret(secret),
                    DecodingKey::from_secret(secret),
                )
            }
            JwtAlgorithm::EdDsa | JwtAlgorithm::Es256 => {
                let pem = s
                    .jwt_private_key_pem
                    .as_ref()
                    .ok_or_else(|| TokenError::Key("no private key configured".into()))?;
                let (encoding, public) = Self::asymmetric(s.jwt_algorithm, pem.expose_secret())?;
                let active = (public.alg, public.kid.clone(), encoding, public.decoding);
                published.push(public.jwk);
                active
            }
        };
        let mut keys = vec![VerifyingKey {
            kid: kid.clone(),
            alg,
            decoding,
        }];
        for secret in &s.previous_jwt_secrets {
            let secret = secret.expose_secret().as_bytes();
            let kid = hs256_kid(secret);
            if !keys.iter().any(|k| k.kid == kid) {
                keys.push(VerifyingKey {
                    kid,
                    alg: Algorithm::HS256,
                    decoding: DecodingKey::from_secret(secret),
                });
            }
        }
        for (i, pem) in s.previous_jwt_public_keys_pem.iter().enumerate() {
            let public = previous_public_key(pem.expose_secret()).map_err(|e| {
                TokenError::Key(format!("security.previous_jwt_public_key_files[{i}]: {e}"))
            })?;
            if !keys.iter().any(|k| k.kid == public.kid) {
                keys.push(VerifyingKey {
                    kid: public.kid,
                    alg: public.alg,
                    decoding: public.decoding,
                });
                published.push(public.jwk);
            }
        }
        Ok(Self {
            alg,
            kid,
            encoding,
            keys,
            jwks: json!({ "keys": published }),
            issuer: s.jwt_issuer.clone(),
            audience: s.jwt_audience.clone(),
            refresh_audience: format!("{}/token", s.jwt_issuer),
            access_ttl: s.jwt_expiration,
            refresh_ttl: s.refresh_expiration,
            leeway: s.jwt_leeway.as_secs(),
        })
    }

    fn asymmetric(alg: JwtAlgorithm, pem: &str) -> Result<(EncodingKey, PublicJwk), TokenError> {
        use ed25519_dalek::pkcs8::DecodePrivateKey as _;
        let key_err = |e: &dyn std::fmt::Display| TokenError::Key(e.to_string());
        match alg {
            JwtAlgorithm::EdDsa => {
                let sk = ed25519_dalek::SigningKey::from_pkcs8_pem(pem).map_err(|e| key_err(&e))?;
                Ok((
                    EncodingKey::from_ed_pem(pem.as_bytes()).map_err(|e| key_err(&e))?,
                    ed25519_jwk(&sk.verifying_key())?,
                ))
            }
            _ => {
                let sk = p256::SecretKey::from_pkcs8_pem(pem).map_err(|e| key_err(&e))?;
                Ok((
                    EncodingKey::from_ec_pem(pem.as_bytes()).map_err(|e| key_err(&e))?,
                    p256_jwk(&sk.public_key())?,
                ))
            }
        }
    }

    /// The public keys, active then previous, as a JWK Set. A shared secret is never published, so
    /// for HS256 it holds only previous public keys (usually none).
    #[must_use]
    pub fn jwks(&self) -> &Value {
        &self.jwks
    }

    #[must_use]
    pub fn access_ttl(&self) -> Duration {
        self.access_ttl
    }

    #[must_use]
    pub fn refresh_ttl(&self) -> Duration {
        self.refresh_ttl
    }

    fn header(&self, typ: &str) -> Header {
        let mut h = Header::new(self.alg);
        h.kid = Some(self.kid.clone());
        h.typ = Some(typ.to_owned());
        h
    }

    /// # Errors
    /// Only if signing itself fails (a broken key).
    pub fn mint_access(&self, client_id: &str, scopes: &[Scope]) -> Result<Minted, TokenError> {
        let now = chrono::Utc::now().timestamp();
        let id = Uuid::now_v7();
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            sub: client_id.to_owned(),
            aud: self.audience.clone(),
            exp: now + secs(self.access_ttl),
            iat: now,
            nbf: now,
            jti: id.to_string(),
            scope: Scope::join(scopes),
            client_id: client_id.to_owned(),
        };
        let token = encode(&self.header("at+jwt"), &claims, &self.encoding)
            .map_err(|e| TokenError::Key(e.to_string()))?;
        Ok(Minted { token, id })
    }

    /// # Errors
    /// Only if signing itself fails (a broken key).
    pub fn mint_refresh(&self, client_id: &str) -> Result<Minted, TokenError> {
        let now = chrono::Utc::now().timestamp();
        let id = Uuid::new_v4();
        let claims = RefreshClaims {
            iss: self.issuer.clone(),
            sub: client_id.to_owned(),
            aud: self.refresh_audience.clone(),
            exp: now + secs(self.refresh_ttl),
            iat: now,
            nbf: now,
            jti: id.to_string(),
        };
        let token = encode(&self.header("JWT"), &claims, &self.encoding)
            .map_err(|e| TokenError::Key(e.to_string()))?;
        Ok(Minted { token, id })
    }

    /// The key a token names by `kid`; a token without one may only use the active key.
    fn key_for(&self, token: &str) -> Result<&VerifyingKey, TokenError> {
        let header = decode_header(token).map_err(|e| TokenError::Invalid(e.to_string()))?;
        let key = match header.kid.as_deref() {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid == kid)
                .ok_or_else(|| TokenError::Invalid("no configured key has this kid".into()))?,
            None => &self.keys[0],
        };
        // The key fixes the algorithm: a token cannot ask for a key of another algorithm.
        if header.alg != key.alg {
            return Err(TokenError::Invalid(
                "the algorithm does not match the key".into(),
            ));
        }
        Ok(key)
    }

    fn validation(&self, alg: Algorithm, audience: &str) -> Validation {
        // Only the key's own algorithm: `alg: none` and HS/RS confusion fail here.
        let mut v = Validation::new(alg);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[audience]);
        v.set_required_spec_claims(&["exp", "iat", "nbf", "iss", "aud", "sub"]);
        v.validate_nbf = true;
        v.leeway = self.leeway;
        v
    }

    /// Verifies an access token and returns its caller.
    ///
    /// # Errors
    /// [`TokenError::Invalid`] for a bad signature, algorithm, key id, audience, issuer, time or
    /// scope.
    pub fn verify_access(&self, token: &str) -> Result<Caller, TokenError> {
        let key = self.key_for(token)?;
        let data = decode::<AccessClaims>(
            token,
            &key.decoding,
            &self.validation(key.alg, &self.audience),
        )
        .map_err(|e| TokenError::Invalid(e.to_string()))?;
        let c = data.claims;
        if c.iat > chrono::Utc::now().timestamp() + i64::try_from(self.leeway).unwrap_or(0) {
            return Err(TokenError::Invalid("issued in the future".into()));
        }
        let scopes = Scope::parse_list(&c.scope)
            .map_err(|s| TokenError::Invalid(format!("unknown scope {s}")))?;
        Ok(Caller {
            client_id: c.sub,
            scopes,
            token_id: c.jti,
        })
    }

    /// Checks a refresh token's signature, audience and time; the database decides the rest.
    ///
    /// # Errors
    /// [`TokenError::Invalid`] when it is not a refresh token of ours or has expired.
    pub fn verify_refresh(&self, token: &str) -> Result<RefreshClaims, TokenError> {
        let key = self.key_for(token)?;
        decode::<RefreshClaims>(
            token,
            &key.decoding,
            &self.validation(key.alg, &self.refresh_audience),
        )
        .map(|d| d.claims)
        .map_err(|e| TokenError::Invalid(e.to_string()))
    }
}

/// The HS256 kid names the key without revealing anything about it.
fn hs256_kid(secret: &[u8]) -> String {
    format!(
        "hs256-{}",
        &hex::encode(Sha256::digest([b"kid:".as_slice(), secret].concat()))[..16]
    )
}

/// A previous key's PEM: an SPKI public key (`BEGIN PUBLIC KEY`) or a PKCS#8 private key, Ed25519
/// or P-256; only the public half is kept.
fn previous_public_key(pem: &str) -> Result<PublicJwk, TokenError> {
    use ed25519_dalek::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _};
    if let Ok(vk) = ed25519_dalek::VerifyingKey::from_public_key_pem(pem) {
        return ed25519_jwk(&vk);
    }
    if let Ok(pk) = p256::PublicKey::from_public_key_pem(pem) {
        return p256_jwk(&pk);
    }
    if let Ok(sk) = ed25519_dalek::SigningKey::from_pkcs8_pem(pem) {
        return ed25519_jwk(&sk.verifying_key());
    }
    if let Ok(sk) = p256::SecretKey::from_pkcs8_pem(pem) {
        return p256_jwk(&sk.public_key());
    }
    Err(TokenError::Key(
        "not a PEM Ed25519 or P-256 key (public key, or PKCS#8 private key)".into(),
    ))
}

fn ed25519_jwk(vk: &ed25519_dalek::VerifyingKey) -> Result<PublicJwk, TokenError> {
    let x = URL_SAFE_NO_PAD.encode(vk.as_bytes());
    public_jwk(
        Algorithm::EdDSA,
        json!({ "crv": "Ed25519", "kty": "OKP", "x": x }),
    )
}

fn p256_jwk(pk: &p256::PublicKey) -> Result<PublicJwk, TokenError> {
    let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(pk, false);
    let (Some(x), Some(y)) = (point.x(), point.y()) else {
        return Err(TokenError::Key(
            "P-256 public key has no coordinates".into(),
        ));
    };
    public_jwk(
        Algorithm::ES256,
        json!({ "crv": "P-256", "kty": "EC", "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y) }),
    )
}

fn public_jwk(alg: Algorithm, mut jwk: Value) -> Result<PublicJwk, TokenError> {
    let key_err = |e: &dyn std::fmt::Display| TokenError::Key(e.to_string());
    // RFC 7638 thumbprint: SHA-256 over the required members in lexicographic order, which is
    // how serde_json (without preserve_order) prints an object.
    let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(jwk.to_string().as_bytes()));
    let obj = jwk.as_object_mut().expect("jwk is an object");
    obj.insert("kid".into(), json!(kid));
    obj.insert("use".into(), json!("sig"));
    obj.insert(
        "alg".into(),
        json!(if alg == Algorithm::EdDSA {
            "EdDSA"
        } else {
            "ES256"
        }),
    );
    let parsed: jsonwebtoken::jwk::Jwk =
        serde_json::from_value(jwk.clone()).map_err(|e| key_err(&e))?;
    let decoding = DecodingKey::from_jwk(&parsed).map_err(|e| key_err(&e))?;
    Ok(PublicJwk {
        alg,
        kid,
        jwk,
        decoding,
    })
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn settings(alg: JwtAlgorithm, pem: Option<&str>) -> SecuritySettings {
        SecuritySettings {
            jwt_secret: SecretString::from("your-secret-key-here-must-be-32-bytes-long"),
            jwt_expiration: Duration::from_secs(3600),
            refresh_expiration: Duration::from_secs(7200),
            jwt_issuer: "kyc-service".into(),
            jwt_audience: "kyc-api".into(),
            jwt_algorithm: alg,
            jwt_private_key_pem: pem.map(|p| SecretString::from(p.to_owned())),
            previous_jwt_secrets: vec![],
            previous_jwt_public_keys_pem: vec![],
            jwt_leeway: Duration::from_secs(60),
            encryption_key: SecretString::from("your-encryption-key-here-32-bytes"),
            previous_encryption_keys: vec![],
            blind_index_key: None,
            rate_limit_per_second: 100,
            rate_limit_burst: 200,
            rate_limit_fail_open: true,
        }
    }

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn an_access_token_round_trips_with_its_scopes() {
        let svc = TokenService::new(&settings(JwtAlgorithm::Hs256, None)).expect("hs256");
        let t = svc
            .mint_access("kyc-client", &[Scope::KycRead, Scope::KycWrite])
            .expect("mint");
        let caller = svc.verify_access(&t.token).expect("verifies");
        assert_eq!(caller.client_id, "kyc-client");
        assert_eq!(caller.scopes, vec![Scope::KycRead, Scope::KycWrite]);
        assert_eq!(caller.token_id, t.id.to_string());
    }

    #[test]
    fn a_refresh_token_is_not_an_access_token() {
        let svc = TokenService::new(&settings(JwtAlgorithm::Hs256, None)).expect("hs256");
        let r = svc.mint_refresh("kyc-client").expect("mint");
        assert!(svc.verify_access(&r.token).is_err());
        assert!(svc.verify_refresh(&r.token).is_ok());
        let a = svc
            .mint_access("kyc-client", &[Scope::KycRead])
            .expect("mint");
        assert!(svc.verify_refresh(&a.token).is_err());
    }

    #[test]
    fn alg_none_is_refused() {
        let svc = TokenService::new(&settings(JwtAlgorithm::Hs256, None)).expect("hs256");
        let now = chrono::Utc::now().timestamp();
        let claims = json!({"iss":"kyc-service","sub":"kyc-client","aud":"kyc-api","exp":now+60,"iat":now,"nbf":now,"jti":"x","scope":"kyc:read","client_id":"kyc-client"});
        let token = format!(
            "{}.{}.",
            b64(&json!({"alg":"none","typ":"JWT"})),
            b64(&claims)
        );
        assert!(svc.verify_access(&token).is_err());
    }

    #[test]
    fn an_hs256_token_cannot_pass_as_eddsa() {
        let pem = include_str!("../../tests/fixtures/ed25519.pem");
        let ed = TokenService::new(&settings(JwtAlgorithm::EdDsa, Some(pem))).expect("eddsa");
        let hs = TokenService::new(&settings(JwtAlgorithm::Hs256, None)).expect("hs256");
        let t = hs
            .mint_access("kyc-client", &[Scope::KycRead])
            .expect("mint");
        assert!(ed.verify_access(&t.token).is_err());
    }

    #[test]
    fn eddsa_and_es256_publish_a_usable_jwks() {
        for (alg, pem, kty) in [
            (
                JwtAlgorithm::EdDsa,
                include_str!("../../tests/fixtures/ed25519.pem"),
                "OKP",
            ),
            (
                JwtAlgorithm::Es256,
                include_str!("../../tests/fixtures/p256.pem"),
                "EC",
            ),
        ] {
            let svc = TokenService::new(&settings(alg, Some(pem))).expect("asymmetric key loads");
            let key = &svc.jwks()["keys"][0];
            assert_eq!(key["kty"], kty);
            assert!(
                key.get("d").is_none(),
                "the private part is never published"
            );
            // A verifier holding only the JWKS accepts our token.
            let jwk: jsonwebtoken::jwk::Jwk =
                serde_json::from_value(key.clone()).expect("valid jwk");
            let t = svc
                .mint_access("kyc-client", &[Scope::KycRead])
                .expect("mint");
            let header = jsonwebtoken::decode_header(&t.token).expect("header");
            assert_eq!(header.kid.as_deref(), key["kid"].as_str());
            let mut v = Validation::new(header.alg);
            v.set_audience(&["kyc-api"]);
            decode::<AccessClaims>(&t.token, &DecodingKey::from_jwk(&jwk).expect("key"), &v)
                .expect("verifies with jwks");
        }
    }

    const OLD_SECRET: &str = "an-old-jwt-secret-of-at-least-32-bytes!!";
    const NEW_SECRET: &str = "the-new-jwt-secret-of-at-least-32-bytes!";

    fn hs(secret: &str, previous: &[&str]) -> TokenService {
        let mut s = settings(JwtAlgorithm::Hs256, None);
        s.jwt_secret = SecretString::from(secret.to_owned());
        s.previous_jwt_secrets = previous
            .iter()
            .map(|p| SecretString::from((*p).to_owned()))
            .collect();
        TokenService::new(&s).expect("hs256")
    }

    fn asym(alg: JwtAlgorithm, pem: &str, previous: &[String]) -> Result<TokenService, TokenError> {
        let mut s = settings(alg, Some(pem));
        s.previous_jwt_public_keys_pem = previous.iter().cloned().map(SecretString::from).collect();
        TokenService::new(&s)
    }

    fn kid(token: &str) -> String {
        decode_header(token).expect("header").kid.expect("kid")
    }

    /// A second Ed25519 key, the "new" one, and the fixture's public half as an SPKI PEM.
    fn rotated_ed25519() -> (String, String) {
        use ed25519_dalek::pkcs8::{
            DecodePrivateKey as _, EncodePrivateKey as _, EncodePublicKey as _,
            spki::der::pem::LineEnding,
        };
        let new = ed25519_dalek::SigningKey::from_bytes(&[7; 32])
            .to_pkcs8_pem(LineEnding::LF)
            .expect("pem")
            .to_string();
        let old_public = ed25519_dalek::SigningKey::from_pkcs8_pem(include_str!(
            "../../tests/fixtures/ed25519.pem"
        ))
        .expect("fixture")
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("pem");
        (new, old_public)
    }

    #[test]
    fn an_old_hs256_token_verifies_only_while_its_secret_is_listed_as_previous() {
        let old = hs(OLD_SECRET, &[]);
        let access = old
            .mint_access("kyc-client", &[Scope::KycRead])
            .expect("mint");
        let refresh = old.mint_refresh("kyc-client").expect("mint");

        let rotated = hs(NEW_SECRET, &[OLD_SECRET]);
        assert_eq!(
            rotated
                .verify_access(&access.token)
                .expect("old access token verifies")
                .token_id,
            access.id.to_string()
        );
        rotated
            .verify_refresh(&refresh.token)
            .expect("old refresh token verifies");

        let forgotten = hs(NEW_SECRET, &[]);
        assert!(forgotten.verify_access(&access.token).is_err());
        assert!(forgotten.verify_refresh(&refresh.token).is_err());
    }

    #[test]
    fn new_tokens_are_signed_with_the_active_key_only() {
        let old = hs(OLD_SECRET, &[]);
        let rotated = hs(NEW_SECRET, &[OLD_SECRET]);
        let before = old
            .mint_access("kyc-client", &[Scope::KycRead])
            .expect("mint");
        let after = rotated
            .mint_access("kyc-client", &[Scope::KycRead])
            .expect("mint");
        assert_ne!(kid(&after.token), kid(&before.token));
        assert_eq!(kid(&after.token), hs256_kid(NEW_SECRET.as_bytes()));
        assert_eq!(
            kid(&rotated.mint_refresh("kyc-client").expect("mint").token),
            kid(&after.token)
        );
        // Signed with the new secret: a verifier holding only the old one refuses it.
        assert!(old.verify_access(&after.token).is_err());
        assert!(hs(NEW_SECRET, &[]).verify_access(&after.token).is_ok());
    }

    #[test]
    fn a_token_whose_kid_names_no_known_key_is_refused() {
        let svc = hs(NEW_SECRET, &[OLD_SECRET]);
        let good = svc
            .mint_access("kyc-client", &[Scope::KycRead])
            .expect("mint");
        let claims: AccessClaims = decode(
            &good.token,
            &DecodingKey::from_secret(NEW_SECRET.as_bytes()),
            &svc.validation(Algorithm::HS256, "kyc-api"),
        )
        .expect("decodes")
        .claims;
        // Correctly signed with the active secret, but naming a key nobody configured.
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("hs256-0000000000000000".into());
        let unknown = encode(
            &header,
            &claims,
            &EncodingKey::from_secret(NEW_SECRET.as_bytes()),
        )
        .expect("sign");
        let e = svc
            .verify_access(&unknown)
            .expect_err("unknown kid is refused");
        assert!(e.to_string().contains("kid"), "{e}");
        // The old key's kid with the new key's signature: the kid picks the key, and it fails.
        header.kid = Some(hs256_kid(OLD_SECRET.as_bytes()));
        let mismatched = encode(
            &header,
            &claims,
            &EncodingKey::from_secret(NEW_SECRET.as_bytes()),
        )
        .expect("sign");
        assert!(svc.verify_access(&mismatched).is_err());
    }

    #[test]
    fn eddsa_rotation_publishes_both_keys_and_verifies_old_tokens() {
        let old_pem = include_str!("../../tests/fixtures/ed25519.pem");
        let (new_pem, old_public) = rotated_ed25519();
        let old = asym(JwtAlgorithm::EdDsa, old_pem, &[]).expect("old key");
        let old_token = old
            .mint_access("kyc-client", &[Scope::KycRead])
            .expect("mint");
        let old_kid = old.jwks()["keys"][0]["kid"].clone();

        let rotated = asym(JwtAlgorithm::EdDsa, &new_pem, &[old_public]).expect("rotated");
        let keys = rotated.jwks()["keys"].as_array().expect("keys");
        assert_eq!(keys.len(), 2, "{}", rotated.jwks());
        let new_token = rotated
            .mint_access("kyc-client", &[Scope::KycRead])
            .expect("mint")
            .token;
        assert_eq!(
            keys[0]["kid"],
            json!(kid(&new_token)),
            "the active key comes first"
        );
        assert_eq!(keys[1]["kid"], old_kid);
        assert_ne!(kid(&new_token), kid(&old_token.token));
        assert!(
            keys.iter()
                .all(|k| k.get("d").is_none() && k["alg"] == "EdDSA")
        );
        // A gateway holding only the published JWKS verifies tokens of either key.
        for token in [&old_token.token, &new_token] {
            let jwk = keys
                .iter()
                .find(|k| k["kid"] == json!(kid(token)))
                .expect("kid published");
            let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk.clone()).expect("jwk");
            decode::<AccessClaims>(
                token,
                &DecodingKey::from_jwk(&jwk).expect("key"),
                &rotated.validation(Algorithm::EdDSA, "kyc-api"),
            )
            .expect("verifies with the JWKS");
        }
        assert!(rotated.verify_access(&old_token.token).is_ok());
        let forgotten = asym(JwtAlgorithm::EdDsa, &new_pem, &[]).expect("new key only");
        assert!(forgotten.verify_access(&old_token.token).is_err());
        assert_eq!(forgotten.jwks()["keys"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn a_previous_key_never_verifies_a_token_of_another_algorithm() {
        // An old ES256 key, given as its private key file, kept while EdDSA is active.
        let p256_pem = include_str!("../../tests/fixtures/p256.pem");
        let es = asym(JwtAlgorithm::Es256, p256_pem, &[]).expect("es256");
        let es_token = es
            .mint_access("kyc-client", &[Scope::KycRead])
            .expect("mint");
        let (new_pem, _) = rotated_ed25519();
        let ed = asym(JwtAlgorithm::EdDsa, &new_pem, &[p256_pem.to_owned()]).expect("eddsa");
        assert!(
            ed.verify_access(&es_token.token).is_ok(),
            "its own algorithm verifies"
        );

        // HS256 tokens keyed with the public key's material and naming its kid are refused.
        let es_jwk = &ed.jwks()["keys"][1];
        let now = chrono::Utc::now().timestamp();
        let claims = json!({"iss":"kyc-service","sub":"kyc-client","aud":"kyc-api","exp":now+60,"iat":now,"nbf":now,"jti":"x","scope":"kyc:read","client_id":"kyc-client"});
        for material in [es_jwk["x"].as_str().expect("x"), p256_pem] {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = es_jwk["kid"].as_str().map(str::to_owned);
            let forged = encode(
                &header,
                &claims,
                &EncodingKey::from_secret(material.as_bytes()),
            )
            .expect("sign");
            assert!(ed.verify_access(&forged).is_err());
        }
        // An EdDSA header on the ES256 token's kid is refused before any signature check.
        let mut parts: Vec<&str> = es_token.token.split('.').collect();
        let header = b64(&json!({"alg":"EdDSA","typ":"at+jwt","kid":es_jwk["kid"]}));
        parts[0] = &header;
        assert!(ed.verify_access(&parts.join(".")).is_err());
    }

    #[test]
    fn an_unreadable_previous_key_is_named_in_the_error() {
        let pem = include_str!("../../tests/fixtures/ed25519.pem");
        let e = asym(JwtAlgorithm::EdDsa, pem, &["not a key".into()])
            .err()
            .expect("refused");
        assert!(
            e.to_string()
                .contains("security.previous_jwt_public_key_files[0]"),
            "{e}"
        );
    }

    #[test]
    fn hs256_publishes_no_key() {
        let svc = TokenService::new(&settings(JwtAlgorithm::Hs256, None)).expect("hs256");
        assert_eq!(svc.jwks(), &json!({"keys": []}));
    }
}
