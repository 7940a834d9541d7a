//! `POST /api/v1/auth/token` and the service's own verification of what it issued.

mod common;

use base64::Engine;
use common::{SEED_SECRET, TestApp, claims, sign_hs256};
use serde_json::{Value, json};

fn decode_claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("payload");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("b64"),
    )
    .expect("json")
}

#[tokio::test]
async fn the_seed_token_request_returns_the_seed_shape() {
    let app = TestApp::spawn().await;
    let r = app
        .http
        .post(app.url("/api/v1/auth/token"))
        .json(&json!({
            "client_id": "kyc-client", "client_secret": "kyc-client-secret",
            "grant_type": "client_credentials", "scope": "kyc:read kyc:write"
        }))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 86_400);
    assert_eq!(body["scope"], "kyc:read kyc:write");
    let access = body["access_token"].as_str().expect("access_token");
    assert!(
        access.starts_with("eyJ")
            && body["refresh_token"]
                .as_str()
                .expect("refresh")
                .starts_with("eyJ")
    );
    let c = decode_claims(access);
    for claim in ["iss", "aud", "sub", "exp", "iat", "nbf", "jti", "scope"] {
        assert!(c.get(claim).is_some(), "claim {claim} missing: {c}");
    }
    assert_eq!(c["sub"], "kyc-client");
    assert_eq!(c["aud"], "kyc-api");
    // The token it issued opens the KYC API.
    assert_eq!(
        app.get("/api/v1/kyc/status/test", Some(access))
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn form_encoding_and_http_basic_are_accepted() {
    let app = TestApp::spawn().await;
    let secret = app.create_client("form-client", &["kyc:read"]).await;
    let r = app
        .http
        .post(app.url("/api/v1/auth/token"))
        .basic_auth("form-client", Some(&secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&scope=kyc%3Aread")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["scope"], "kyc:read");
    // Two authentication methods at once are refused.
    let r = app
        .http
        .post(app.url("/api/v1/auth/token"))
        .basic_auth("form-client", Some(&secret))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_secret", secret.as_str()),
        ])
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"],
        "invalid_request"
    );
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_reused_one_revokes_the_family() {
    let app = TestApp::spawn().await;
    let secret = app
        .create_client("rotating", &["kyc:read", "kyc:write"])
        .await;
    let (_, first) = app.token_json(json!({"grant_type":"client_credentials","client_id":"rotating","client_secret":secret})).await;
    let r1 = first["refresh_token"].as_str().expect("refresh").to_owned();

    let refresh = |token: String, scope: Option<&'static str>| {
        let mut body = json!({"grant_type":"refresh_token","client_id":"rotating","client_secret":secret,"refresh_token":token});
        if let Some(s) = scope {
            body["scope"] = json!(s);
        }
        app.token_json(body)
    };
    let (status, second) = refresh(r1.clone(), Some("kyc:read")).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["scope"], "kyc:read", "scope may narrow on refresh");
    let r2 = second["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    assert_ne!(r1, r2, "the refresh token rotated");

    // Widening past the original grant is refused without spending the token.
    let (status, body) = refresh(r2.clone(), Some("kyc:pii")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_scope"))
    );

    // Reusing the spent r1 fails and revokes the family, so the live r2 dies with it.
    let (status, body) = refresh(r1, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, body) = refresh(r2, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "family revoked"
    );
    let actions = kyc_service::store::audit::actions_for(app.pool(), "rotating", 10)
        .await
        .expect("audit");
    assert!(
        actions.contains(&"refresh_token.reuse_detected".to_owned()),
        "{actions:?}"
    );
}

#[tokio::test]
async fn a_refresh_token_of_another_client_is_refused() {
    let app = TestApp::spawn().await;
    let a = app.create_client("client-a", &["kyc:read"]).await;
    let b = app.create_client("client-b", &["kyc:read"]).await;
    let (_, issued) = app
        .token_json(
            json!({"grant_type":"client_credentials","client_id":"client-a","client_secret":a}),
        )
        .await;
    let (status, body) = app
        .token_json(
            json!({"grant_type":"refresh_token","client_id":"client-b","client_secret":b,
            "refresh_token": issued["refresh_token"]}),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
}

#[tokio::test]
async fn bad_clients_and_grants_get_rfc_6749_errors() {
    let app = TestApp::spawn().await;
    let cases = [
        (
            json!({"grant_type":"client_credentials","client_id":"kyc-client","client_secret":"wrong"}),
            401,
            "invalid_client",
        ),
        (
            json!({"grant_type":"client_credentials","client_id":"nobody","client_secret":"x"}),
            401,
            "invalid_client",
        ),
        (
            json!({"grant_type":"client_credentials"}),
            401,
            "invalid_client",
        ),
        (
            json!({"grant_type":"password","client_id":"kyc-client","client_secret":"kyc-client-secret"}),
            400,
            "unsupported_grant_type",
        ),
        (
            json!({"client_id":"kyc-client","client_secret":"kyc-client-secret"}),
            400,
            "invalid_request",
        ),
        (
            json!({"grant_type":"client_credentials","client_id":"kyc-client","client_secret":"kyc-client-secret","scope":"kyc:pii"}),
            400,
            "invalid_scope",
        ),
        (
            json!({"grant_type":"client_credentials","client_id":"kyc-client","client_secret":"kyc-client-secret","scope":"admin"}),
            400,
            "invalid_scope",
        ),
        (
            json!({"grant_type":"refresh_token","client_id":"kyc-client","client_secret":"kyc-client-secret","refresh_token":"eyJnope"}),
            400,
            "invalid_grant",
        ),
    ];
    for (body, status, error) in cases {
        let r = app
            .http
            .post(app.url("/api/v1/auth/token"))
            .json(&body)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status().as_u16(), status, "{body}");
        if status == 401 {
            assert!(
                r.headers()["www-authenticate"]
                    .to_str()
                    .expect("ascii")
                    .starts_with("Basic"),
                "{body}"
            );
        }
        let got: Value = r.json().await.expect("json");
        assert_eq!(got["error"], error, "{body} -> {got}");
        assert!(got["error_description"].is_string());
        assert!(
            !got.to_string().contains("kyc-client-secret"),
            "no secret echoed"
        );
    }
    let r = app
        .http
        .post(app.url("/api/v1/auth/token"))
        .body("x")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 415);
}

#[tokio::test]
async fn forged_expired_and_unsigned_tokens_are_refused() {
    let app = TestApp::spawn().await;
    let path = "/api/v1/kyc/status/test";
    let good = sign_hs256(&claims("kyc-client", "kyc:read", 0), SEED_SECRET);
    assert_eq!(
        app.get(path, Some(&good)).await.status(),
        404,
        "a correctly signed token passes"
    );

    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let mut expired = claims("kyc-client", "kyc:read", -3600);
    expired["exp"] = json!(chrono::Utc::now().timestamp() - 600);
    let mut wrong_audience = claims("kyc-client", "kyc:read", 0);
    wrong_audience["aud"] = json!("someone-else");
    let cases = [
        ("expired", sign_hs256(&expired, SEED_SECRET)),
        (
            "wrong signature",
            sign_hs256(
                &claims("kyc-client", "kyc:read", 0),
                "another-secret-that-is-32-bytes-long!!",
            ),
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(json!({"alg":"none","typ":"JWT"})),
                b64(claims("kyc-client", "kyc:read", 0))
            ),
        ),
        ("wrong audience", sign_hs256(&wrong_audience, SEED_SECRET)),
        (
            "not yet valid",
            sign_hs256(&claims("kyc-client", "kyc:read", 3600), SEED_SECRET),
        ),
        ("garbage", "not.a.jwt".to_owned()),
    ];
    for (what, token) in cases {
        let r = app.get(path, Some(&token)).await;
        assert_eq!(r.status(), 401, "{what}");
        let www = r.headers()["www-authenticate"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(www.contains(r#"error="invalid_token""#), "{what}: {www}");
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["error"]["code"], "TOKEN_INVALID", "{what}");
        assert_eq!(body["success"], false);
    }
    let r = app.get(path, None).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], r#"Bearer realm="kyc""#);
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"]["code"],
        "TOKEN_MISSING"
    );
}

#[tokio::test]
async fn a_disabled_client_gets_no_tokens_and_its_tokens_stop_working() {
    let app = TestApp::spawn().await;
    let secret = app.create_client("leaving", &["kyc:read"]).await;
    let token = app.access_token("leaving", &secret).await;
    assert!(
        kyc_service::store::clients::disable(app.pool(), "leaving")
            .await
            .expect("disable")
    );
    let (status, body) = app
        .token_json(
            json!({"grant_type":"client_credentials","client_id":"leaving","client_secret":secret}),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    // The status cache was never filled for this client, so the refusal is immediate.
    assert_eq!(
        app.get("/api/v1/kyc/status/test", Some(&token))
            .await
            .status(),
        401
    );
}

#[tokio::test]
async fn eddsa_tokens_verify_with_the_published_jwks_only() {
    let key = common::repo_root().join("service/tests/fixtures/ed25519.pem");
    let app = TestApp::spawn_with(&[
        ("KYC__SECURITY__JWT_ALGORITHM", "EdDSA".into()),
        (
            "KYC__SECURITY__JWT_PRIVATE_KEY_FILE",
            key.display().to_string(),
        ),
    ])
    .await;
    let jwks: Value = app
        .get("/.well-known/jwks.json", None)
        .await
        .json()
        .await
        .expect("jwks");
    let jwk: jsonwebtoken::jwk::Jwk =
        serde_json::from_value(jwks["keys"][0].clone()).expect("one public key");
    let token = app.access_token("kyc-client", "kyc-client-secret").await;
    let header = jsonwebtoken::decode_header(&token).expect("header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    v.set_audience(&["kyc-api"]);
    jsonwebtoken::decode::<Value>(
        &token,
        &jsonwebtoken::DecodingKey::from_jwk(&jwk).expect("key"),
        &v,
    )
    .expect("verifies with the JWKS");
    assert_eq!(
        app.get("/api/v1/kyc/status/test", Some(&token))
            .await
            .status(),
        404
    );
    // An HS256 token signed with the (now unused) shared secret is refused: no algorithm confusion.
    let hs = sign_hs256(&claims("kyc-client", "kyc:read", 0), SEED_SECRET);
    assert_eq!(
        app.get("/api/v1/kyc/status/test", Some(&hs)).await.status(),
        401
    );
}

#[tokio::test]
async fn the_demo_client_is_disabled_when_the_database_is_started_outside_dev_mode() {
    let app = TestApp::spawn().await;
    let _ = app.access_token("kyc-client", "kyc-client-secret").await;
    let release = common::settings_with(&[
        ("KYC__DATABASE__DBNAME", app.dbname.clone()),
        ("KYC__GIN_MODE", "release".into()),
        (
            "KYC__SECURITY__JWT_SECRET",
            "a-production-secret-of-at-least-32-bytes".into(),
        ),
        (
            "KYC__SECURITY__ENCRYPTION_KEY",
            "a-production-field-key-of-at-least-32-bytes".into(),
        ),
    ]);
    let state = kyc_service::AppState::new(release).expect("state");
    state.prepare().await.expect("prepared");
    let (status, body) = app
        .token_json(json!({"grant_type":"client_credentials","client_id":"kyc-client","client_secret":"kyc-client-secret"}))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client")),
        "the published secret no longer works"
    );
}

#[tokio::test]
async fn a_malformed_authorization_header_is_a_bad_request() {
    let app = TestApp::spawn().await;
    for value in ["Basic abc", "Bearer", "Bearer    ", "token-without-scheme"] {
        let r = app
            .http
            .get(app.url("/api/v1/kyc/status/test"))
            .header("authorization", value)
            .send()
            .await
            .expect("req");
        assert_eq!(r.status(), 400, "{value}");
        assert!(
            r.headers()["www-authenticate"]
                .to_str()
                .expect("ascii")
                .contains(r#"error="invalid_request""#)
        );
        assert_eq!(
            r.json::<Value>().await.expect("json")["error"]["code"],
            "TOKEN_MALFORMED"
        );
    }
}

/// Writes `pem` to a file of its own for a `*_KEY_FILE` setting; removed when dropped.
struct KeyFile(std::path::PathBuf);

impl KeyFile {
    fn new(pem: &str) -> Self {
        let path = std::env::temp_dir().join(format!("kyc-jwt-{}.pem", uuid::Uuid::new_v4()));
        std::fs::write(&path, pem).expect("write key file");
        Self(path)
    }

    fn path(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn kid_of(jwt: &str) -> String {
    jsonwebtoken::decode_header(jwt)
        .expect("header")
        .kid
        .expect("kid")
}

const NEW_JWT_SECRET: &str = "the-rotated-jwt-secret-of-at-least-32-bytes";

#[tokio::test]
async fn an_old_hs256_token_works_while_its_secret_is_listed_as_previous() {
    let old = TestApp::spawn().await;
    let (_, issued) = old
        .token_json(json!({"grant_type":"client_credentials","client_id":"kyc-client","client_secret":"kyc-client-secret"}))
        .await;
    let old_access = issued["access_token"].as_str().expect("access").to_owned();
    let old_refresh = issued["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    let path = "/api/v1/kyc/status/test";

    let rotated = TestApp::spawn_sharing(
        &old,
        &[
            ("KYC__SECURITY__JWT_SECRET", NEW_JWT_SECRET.into()),
            ("KYC__SECURITY__PREVIOUS_JWT_SECRETS", SEED_SECRET.into()),
        ],
    )
    .await;
    assert_eq!(
        rotated.get(path, Some(&old_access)).await.status(),
        404,
        "the old token still opens the API"
    );
    // New tokens, refreshed from an old refresh token too, carry the new key.
    let (status, refreshed) = rotated
        .token_json(
            json!({"grant_type":"refresh_token","client_id":"kyc-client",
            "client_secret":"kyc-client-secret","refresh_token":old_refresh}),
        )
        .await;
    assert_eq!(status, 200, "{refreshed}");
    let new_access = refreshed["access_token"]
        .as_str()
        .expect("access")
        .to_owned();
    assert_ne!(kid_of(&new_access), kid_of(&old_access));
    assert_eq!(rotated.get(path, Some(&new_access)).await.status(), 404);
    assert_eq!(
        old.get(path, Some(&new_access)).await.status(),
        401,
        "signed with the new secret, which the old instance does not know"
    );

    let forgotten = TestApp::spawn_sharing(
        &old,
        &[("KYC__SECURITY__JWT_SECRET", NEW_JWT_SECRET.into())],
    )
    .await;
    assert_eq!(forgotten.get(path, Some(&old_access)).await.status(), 401);
    assert_eq!(forgotten.get(path, Some(&new_access)).await.status(), 404);
}

#[tokio::test]
async fn a_token_naming_an_unknown_kid_is_refused() {
    let app =
        TestApp::spawn_with(&[("KYC__SECURITY__PREVIOUS_JWT_SECRETS", NEW_JWT_SECRET.into())])
            .await;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("hs256-0123456789abcdef".into());
    let token = jsonwebtoken::encode(
        &header,
        &claims("kyc-client", "kyc:read", 0),
        &jsonwebtoken::EncodingKey::from_secret(SEED_SECRET.as_bytes()),
    )
    .expect("sign");
    let r = app.get("/api/v1/kyc/status/test", Some(&token)).await;
    assert_eq!(
        r.status(),
        401,
        "correctly signed, but the kid names no key"
    );
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"]["code"],
        "TOKEN_INVALID"
    );
}

#[tokio::test]
async fn eddsa_rotation_publishes_both_keys_and_keeps_old_tokens_working() {
    use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
    use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
    let old_pem_path = common::repo_root().join("service/tests/fixtures/ed25519.pem");
    let old_pem = std::fs::read_to_string(&old_pem_path).expect("fixture");
    let old_public = KeyFile::new(
        &ed25519_dalek::SigningKey::from_pkcs8_pem(&old_pem)
            .expect("fixture key")
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("pem"),
    );
    let new_private = KeyFile::new(
        &ed25519_dalek::SigningKey::from_bytes(&[42; 32])
            .to_pkcs8_pem(LineEnding::LF)
            .expect("pem"),
    );
    let path = "/api/v1/kyc/status/test";

    let old = TestApp::spawn_with(&[
        ("KYC__SECURITY__JWT_ALGORITHM", "EdDSA".into()),
        (
            "KYC__SECURITY__JWT_PRIVATE_KEY_FILE",
            old_pem_path.display().to_string(),
        ),
    ])
    .await;
    let old_token = old.access_token("kyc-client", "kyc-client-secret").await;

    let rotated = TestApp::spawn_sharing(
        &old,
        &[
            ("KYC__SECURITY__JWT_ALGORITHM", "EdDSA".into()),
            ("KYC__SECURITY__JWT_PRIVATE_KEY_FILE", new_private.path()),
            (
                "KYC__SECURITY__PREVIOUS_JWT_PUBLIC_KEY_FILES",
                old_public.path(),
            ),
        ],
    )
    .await;
    let jwks: Value = rotated
        .get("/.well-known/jwks.json", None)
        .await
        .json()
        .await
        .expect("jwks");
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid"))
        .collect();
    let new_token = rotated
        .access_token("kyc-client", "kyc-client-secret")
        .await;
    assert_ne!(kid_of(&new_token), kid_of(&old_token));
    assert_eq!(
        kids,
        [kid_of(&new_token), kid_of(&old_token)],
        "the active key, then the previous one"
    );
    assert_eq!(rotated.get(path, Some(&old_token)).await.status(), 404);
    assert_eq!(rotated.get(path, Some(&new_token)).await.status(), 404);

    let forgotten = TestApp::spawn_sharing(
        &old,
        &[
            ("KYC__SECURITY__JWT_ALGORITHM", "EdDSA".into()),
            ("KYC__SECURITY__JWT_PRIVATE_KEY_FILE", new_private.path()),
        ],
    )
    .await;
    assert_eq!(forgotten.get(path, Some(&old_token)).await.status(), 401);
}
