//! The API's answers that `scripts/conformance.sh` (schemathesis) found outside the document,
//! kept fixed.

mod common;

use common::TestApp;
use serde_json::{Value, json};

#[tokio::test]
async fn a_client_id_holding_a_nul_is_an_unknown_client_not_a_server_error() {
    let app = TestApp::spawn().await;
    let (status, body) = app
        .token_json(json!({
            "grant_type": "client_credentials", "client_id": "kyc\u{0}client",
            "client_secret": "kyc-client-secret",
        }))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );

    let form = app
        .http
        .post(app.url("/api/v1/auth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&client_id=kyc%00client&client_secret=x")
        .send()
        .await
        .expect("request");
    assert_eq!(form.status(), 401);

    let basic = app
        .http
        .post(app.url("/api/v1/auth/token"))
        .basic_auth("kyc%00client", Some("kyc-client-secret"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials")
        .send()
        .await
        .expect("request");
    assert_eq!(basic.status(), 401);
    let body: Value = basic.json().await.expect("JSON");
    assert_eq!(body["error"], "invalid_client");
}
