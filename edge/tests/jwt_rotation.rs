//! Zero-downtime HS256 signing-key rotation through the gateway, step by step as
//! `docs/key-rotation.md` gives it: kyc-service instances (on one database) mint the tokens,
//! kyc-edge runs the built `kyc_jwt.wasm`, and each gateway step is a new declarative
//! configuration loaded with `POST /config`, as `deck gateway sync` loads it into Kong.
//! Needs `bash scripts/build-filters.sh` first.

mod support;

use std::net::SocketAddr;

use serde_json::{Value, json};
use support::common::{SEED_SECRET, TestApp};
use support::{CLIENT, Stack, header};

/// The new signing key; the seed's `jwt_secret` is the old one.
const NEW_SECRET: &str = "the-rotated-jwt-secret-of-at-least-32-bytes";

/// A route with `kyc_jwt` in front of the echo upstream, which never answers 401 itself.
const ECHO: &str = "/echo/jwt/rotation";
/// A shipped route (kyc_jwt requiring `kyc:read`) to kyc-service; an unknown id is its 404.
const STATUS: &str = "/api/v1/kyc/status/rotation";

/// `decl` with every `kyc_jwt` filter holding `secret` and `previous` (none: the field is
/// dropped), and the `kyc-service` service pointing at `service`.
fn gateway(decl: &Value, service: SocketAddr, secret: &str, previous: &[&str]) -> Value {
    let mut decl = decl.clone();
    let mut configs = 0;
    for svc in decl["services"].as_array_mut().expect("services") {
        if svc["name"] == "kyc-service" {
            svc["url"] = json!(format!("http://{service}"));
        }
        // get_mut, not IndexMut: indexing would add `null` for a route without a chain.
        let routes = svc.get_mut("routes").and_then(Value::as_array_mut);
        for route in routes.into_iter().flatten() {
            let chains = route.get_mut("filter_chains").and_then(Value::as_array_mut);
            for chain in chains.into_iter().flatten() {
                for filter in chain["filters"].as_array_mut().expect("filters") {
                    if filter["name"] != "kyc_jwt" {
                        continue;
                    }
                    let config = filter["config"].as_object_mut().expect("kyc_jwt config");
                    config.insert("secret".into(), json!(secret));
                    if previous.is_empty() {
                        config.remove("previous_secrets");
                    } else {
                        config.insert("previous_secrets".into(), json!(previous));
                    }
                    configs += 1;
                }
            }
        }
    }
    assert!(
        configs >= 6,
        "every kyc_jwt config changes ({configs} found)"
    );
    decl
}

async fn sync(s: &Stack, decl: &Value) {
    let r = s
        .http
        .post(s.admin("/config"))
        .body(decl.to_string())
        .send()
        .await
        .expect("post /config");
    let status = r.status();
    assert_eq!(status, 201, "{}", r.text().await.unwrap_or_default());
}

fn kid(token: &str) -> String {
    jsonwebtoken::decode_header(token)
        .expect("header")
        .kid
        .expect("kyc-service sets a kid")
}

/// An access token like kyc-service's, but without a `kid`.
fn kidless(secret: &str) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.typ = Some("at+jwt".into());
    jsonwebtoken::encode(
        &header,
        &support::common::claims(CLIENT.0, "kyc:read", 0),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

/// The gateway's own refusal: 401 with the signature named in `WWW-Authenticate` (kyc-service's
/// 401 would not carry the filter's `error_description`).
async fn refused_by_the_gateway(s: &Stack, path: &str, token: &str) {
    let r = s.get(path, Some(token)).await;
    assert_eq!(r.status(), 401, "{path}");
    assert_eq!(
        header(&r, "www-authenticate"),
        Some(
            r#"Bearer realm="kyc", error="invalid_token", error_description="the access token signature is invalid""#
        ),
        "{path}"
    );
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "TOKEN_INVALID");
}

/// Passes the gateway: the echo upstream sees the verified client, the service answers 404.
async fn passes(s: &Stack, token: &str, what: &str) {
    let r = s.get(ECHO, Some(token)).await;
    assert_eq!(r.status(), 200, "{what} at {ECHO}");
    let seen: Value = r.json().await.expect("json");
    assert_eq!(seen["headers"]["x-kyc-client-id"], CLIENT.0, "{what}");
    assert_eq!(
        s.get(STATUS, Some(token)).await.status(),
        404,
        "{what} at {STATUS}"
    );
}

#[tokio::test]
async fn hs256_rotation_keeps_both_secrets_working_at_the_gateway_until_the_old_one_is_removed() {
    // Before: service and gateway hold the old secret (the seed's).
    let s = Stack::start().await;
    let old = s.token(CLIENT.0, CLIENT.1).await;
    passes(&s, &old, "an old token before the rotation").await;

    // 1. Service instances that already verify the new secret, still signing with the old one.
    let published = TestApp::spawn_sharing(
        &s.app,
        &[("KYC__SECURITY__PREVIOUS_JWT_SECRETS", NEW_SECRET.into())],
    )
    .await;

    // 2. The gateway: the new secret current, the old one previous; every kyc_jwt, one sync.
    sync(
        &s,
        &gateway(&s.decl, published.addr, NEW_SECRET, &[SEED_SECRET]),
    )
    .await;
    passes(&s, &old, "an old token once the gateway holds both secrets").await;

    // 3. The service signs with the new secret and verifies the old one.
    let switched = TestApp::spawn_sharing(
        &s.app,
        &[
            ("KYC__SECURITY__JWT_SECRET", NEW_SECRET.into()),
            ("KYC__SECURITY__PREVIOUS_JWT_SECRETS", SEED_SECRET.into()),
        ],
    )
    .await;
    let new = switched.access_token(CLIENT.0, CLIENT.1).await;
    assert_ne!(kid(&new), kid(&old));
    // An instance still on step 1 takes the new token too: why step 1 comes first.
    assert_eq!(published.get(STATUS, Some(&new)).await.status(), 404);
    sync(
        &s,
        &gateway(&s.decl, switched.addr, NEW_SECRET, &[SEED_SECRET]),
    )
    .await;
    // The overlap: both tokens pass, each checked with the secret its kid names.
    passes(&s, &old, "an old token during the overlap").await;
    passes(&s, &new, "a new token during the overlap").await;
    // A token without a kid is checked with the current secret only, never the previous one.
    passes(
        &s,
        &kidless(NEW_SECRET),
        "a kid-less token of the new secret",
    )
    .await;
    refused_by_the_gateway(&s, ECHO, &kidless(SEED_SECRET)).await;

    // 4. (Every old token has expired.) 5. The old secret leaves the service and the gateway.
    let retired =
        TestApp::spawn_sharing(&s.app, &[("KYC__SECURITY__JWT_SECRET", NEW_SECRET.into())]).await;
    sync(&s, &gateway(&s.decl, retired.addr, NEW_SECRET, &[])).await;
    passes(&s, &new, "a new token after the removal").await;
    refused_by_the_gateway(&s, ECHO, &old).await;
    refused_by_the_gateway(&s, STATUS, &old).await;
}
