//! The public API against its document, `docs/openapi.json`: the served copy is the committed one,
//! every route of the router is documented and every documented operation reaches a handler, and
//! the defects `scripts/conformance.sh` (schemathesis) found stay fixed.

mod common;

use std::collections::BTreeSet;

use common::TestApp;
use serde_json::{Value, json};

fn document() -> Value {
    let text = std::fs::read_to_string(common::repo_root().join("docs/openapi.json"))
        .expect("docs/openapi.json");
    serde_json::from_str(&text).expect("docs/openapi.json is JSON")
}

/// Every route `http::router` serves, as `METHOD path` in the document's path syntax. A route
/// added there goes here and into docs/openapi.json.
const ROUTES: &[&str] = &[
    "POST /api/v1/auth/token",
    "POST /api/v1/kyc/ocr",
    "POST /api/v1/kyc/face/verify",
    "POST /api/v1/kyc/verify",
    "POST /api/v1/kyc/liveness/sessions",
    "GET /api/v1/kyc/liveness/ws",
    "GET /api/v1/kyc/status/{id}",
    "GET /demo/liveness",
    "GET /demo/{file}",
    "GET /.well-known/jwks.json",
    "GET /health",
    "GET /ready",
    "GET /metrics",
    "GET /openapi.json",
];

fn operations(doc: &Value) -> BTreeSet<String> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            ops.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    ops
}

#[test]
fn the_document_lists_exactly_the_routes_of_the_router() {
    let routes: BTreeSet<String> = ROUTES.iter().map(|r| (*r).to_owned()).collect();
    assert_eq!(operations(&document()), routes);
}

#[test]
fn every_error_is_described_and_every_bearer_route_documents_its_refusals() {
    let doc = document();
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearerAuth"]["type"], "http");
    assert_eq!(schemes["bearerAuth"]["scheme"], "bearer");
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let responses = op["responses"].as_object().expect("responses");
            for (status, response) in responses {
                if status.starts_with(['4', '5']) {
                    assert!(
                        response["content"]["application/json"]["schema"].is_object(),
                        "{method} {path} {status} has no JSON body schema"
                    );
                }
            }
            let bearer = op["security"]
                .as_array()
                .expect("every operation states its security")
                .iter()
                .any(|s| s.get("bearerAuth").is_some());
            if bearer {
                for status in ["401", "403", "429", "503"] {
                    assert!(
                        responses.contains_key(status),
                        "{method} {path} lacks {status}"
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn the_served_document_is_the_committed_one_and_each_operation_reaches_a_handler() {
    let app = TestApp::spawn().await;
    let served = app.get("/openapi.json", None).await;
    assert_eq!(served.status(), 200);
    let doc: Value = served.json().await.expect("JSON");
    assert_eq!(doc, document());
    for op in operations(&doc) {
        let (method, path) = op.split_once(' ').expect("METHOD path");
        let url = app.url(
            &path
                .replace("{id}", "0193a5b0-7c1e-7000-8000-000000000001")
                .replace("{file}", "liveness.js"),
        );
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let resp = app.http.request(method, url).send().await.expect("request");
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let code = body["error"]["code"].as_str().unwrap_or_default();
        assert!(
            !matches!(code, "ROUTE_NOT_FOUND" | "METHOD_NOT_ALLOWED") && status < 500,
            "{op}: {status} {body}"
        );
    }
}

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
