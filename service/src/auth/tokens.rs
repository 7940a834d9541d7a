//! Signing and verifying JWTs. HS256 signs with `security.jwt_secret`; EdDSA and ES256 sign with a
//! private key whose public half is published at `/.well-known/jwks.json`, so a gateway can verify
//! tokens without holding any signing secret.
//!
//! Access tokens carry `iss`, `aud`, `sub`, `exp`, `iat`, `nbf`, `jti` and `scope` (RFC 9068 shape).
//! Refresh tokens are JWTs too (as the seed shows), but for a different audience, so no verifier
//! of access tokens accepts one; the database decides whether one is still live.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
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

pub struct TokenService {
    alg: Algorithm,
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
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
    /// When the configured private key cannot be parsed.
    pub fn new(s: &SecuritySettings) -> Result<Self, TokenError> {
        let (alg, kid, encoding, decoding, jwks) = match s.jwt_algorithm {
            JwtAlgorithm::Hs256 => {
                let secret = s.jwt_secret.expose_secret().as_bytes();
                // The kid names the key without revealing anything about it.
                let kid = format!(
                    "hs256-{}",
                    &hex::encode(Sha256::digest([b"kid:".as_slice(), secret].concat()))[..16]
                );
                (
                    Algorithm::HS256,
                    kid,
                    EncodingKey::from_secret(secret),
                    DecodingKey::from_secret(secret),
                    json!({ "keys": [] }),
                )
            }
            JwtAlgorithm::EdDsa | JwtAlgorithm::Es256 => {
                let pem = s
                    .jwt_private_key_pem
                    .as_ref()
                    .ok_or_else(|| TokenError::Key("no private key configured".into()))?;
                Self::asymmetric(s.jwt_algorithm, pem.expose_secret())?
            }
        };
        Ok(Self {
            alg,
            kid,
            encoding,
            decoding,
            jwks,
            issuer: s.jwt_issuer.clone(),
            audience: s.jwt_audience.clone(),
            refresh_audience: format!("{}/token", s.jwt_issuer),
            access_ttl: s.jwt_expiration,
            refresh_ttl: s.refresh_expiration,
            leeway: s.jwt_leeway.as_secs(),
        })
    }

    fn asymmetric(
        alg: JwtAlgorithm,
        pem: &str,
    ) -> Result<(Algorithm, String, EncodingKey, DecodingKey, Value), TokenError> {
        use ed25519_dalek::pkcs8::DecodePrivateKey as _;
        let key_err = |e: &dyn std::fmt::Display| TokenError::Key(e.to_string());
        let (alg, mut jwk, encoding) = match alg {
            JwtAlgorithm::EdDsa => {
                let sk = ed25519_dalek::SigningKey::from_pkcs8_pem(pem).map_err(|e| key_err(&e))?;
                let x = URL_SAFE_NO_PAD.encode(sk.verifying_key().as_bytes());
                let jwk = json!({ "crv": "Ed25519", "kty": "OKP", "x": x });
                (
                    Algorithm::EdDSA,
                    jwk,
                    EncodingKey::from_ed_pem(pem.as_bytes()).map_err(|e| key_err(&e))?,
                )
            }
            _ => {
                let sk = p256::SecretKey::from_pkcs8_pem(pem).map_err(|e| key_err(&e))?;
                let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(
                    &sk.public_key(),
                    false,
                );
                let (Some(x), Some(y)) = (point.x(), point.y()) else {
                    return Err(TokenError::Key(
                        "P-256 public key has no coordinates".into(),
                    ));
                };
                let jwk = json!({ "crv": "P-256", "kty": "EC", "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y) });
                (
                    Algorithm::ES256,
                    jwk,
                    EncodingKey::from_ec_pem(pem.as_bytes()).map_err(|e| key_err(&e))?,
                )
            }
        };
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
        Ok((alg, kid, encoding, decoding, json!({ "keys": [jwk] })))
    }

    /// The public keys, as a JWK Set. Empty for HS256: a shared secret is never published.
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

    fn validation(&self, audience: &str) -> Validation {
        // Only the configured algorithm: `alg: none` and HS/RS confusion fail here.
        let mut v = Validation::new(self.alg);
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
    /// [`TokenError::Invalid`] for a bad signature, algorithm, audience, issuer, time or scope.
    pub fn verify_access(&self, token: &str) -> Result<Caller, TokenError> {
        let data = decode::<AccessClaims>(token, &self.decoding, &self.validation(&self.audience))
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
        decode::<RefreshClaims>(
            token,
            &self.decoding,
            &self.validation(&self.refresh_audience),
        )
        .map(|d| d.claims)
        .map_err(|e| TokenError::Invalid(e.to_string()))
    }
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

    #[test]
    fn hs256_publishes_no_key() {
        let svc = TokenService::new(&settings(JwtAlgorithm::Hs256, None)).expect("hs256");
        assert_eq!(svc.jwks(), &json!({"keys": []}));
    }
}
