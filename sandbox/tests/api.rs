//! The contract's plumbing: API keys, call counters, health, body limits and unknown routes.

mod common;

use common::{Sandbox, error};
use kyc_sandbox::Config;
use serde_json::json;

#[tokio::test]
async fn a_missing_or_wrong_api_key_is_401_and_makes_no_vendor_call() {
    let sandbox = Sandbox::start().await;
    let body = common::moving_frames_body();
    let url = sandbox.url("/v1/liveness/check");
    let missing = sandbox
        .client
        .post(&url)
        .json(&body)
        .send()
        .await
        .expect("answers");
    assert_eq!(error(missing).await, (401, "UNAUTHORIZED".into()));
    let wrong = sandbox
        .client
        .post(&url)
        .header("X-Api-Key", "guess")
        .json(&body)
        .send()
        .await
        .expect("answers");
    assert_eq!(error(wrong).await, (401, "UNAUTHORIZED".into()));
    assert_eq!(sandbox.stats().await["total"], 0);
}

#[tokio::test]
async fn every_seed_key_is_accepted_and_api_key_flags_replace_them() {
    let sandbox = Sandbox::start().await;
    let body = common::moving_frames_body();
    for key in ["ocr-api-key", "face-api-key", "liveness-api-key"] {
        let resp = sandbox
            .client
            .post(sandbox.url("/v1/liveness/check"))
            .header("X-Api-Key", key)
            .json(&body)
            .send()
            .await
            .expect("answers");
        assert_eq!(resp.status(), 200, "{key}");
    }
    let custom = Sandbox::start_with(Config {
        api_keys: vec!["k1".into()],
        ..Config::default()
    })
    .await;
    let seed = custom.liveness_with(&[]).await;
    assert_eq!(seed.status(), 401);
    let resp = custom
        .client
        .post(custom.url("/v1/liveness/check"))
        .header("X-Api-Key", "k1")
        .json(&body)
        .send()
        .await
        .expect("answers");
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn stats_count_every_vendor_call_including_failures_and_reset_to_zero() {
    let sandbox = Sandbox::start().await;
    assert_eq!(sandbox.liveness_with(&[]).await.status(), 200);
    assert_eq!(
        sandbox
            .liveness_with(&[("X-Sandbox-Status", "500")])
            .await
            .status(),
        500
    );
    let ocr = sandbox
        .post("/v1/idcard/ocr", &json!({"image": "bm90IGFuIGltYWdl"}))
        .await;
    assert_eq!(ocr.status(), 400);
    let stats = sandbox.stats().await;
    assert_eq!(stats["total"], 3);
    assert_eq!(
        stats["calls"]["liveness"],
        json!({"total": 2, "ok": 1, "failed": 1})
    );
    assert_eq!(
        stats["calls"]["ocr"],
        json!({"total": 1, "ok": 0, "failed": 1})
    );
    assert_eq!(
        stats["calls"]["face"],
        json!({"total": 0, "ok": 0, "failed": 0})
    );

    let reset = sandbox
        .client
        .post(sandbox.url("/sandbox/stats/reset"))
        .send()
        .await
        .expect("answers");
    assert_eq!(reset.status(), 200);
    let stats = sandbox.stats().await;
    assert_eq!(stats["total"], 0);
    assert_eq!(
        stats["calls"]["liveness"],
        json!({"total": 0, "ok": 0, "failed": 0})
    );
}

#[tokio::test]
async fn health_says_this_is_a_sandbox() {
    let sandbox = Sandbox::start().await;
    assert_eq!(
        sandbox.get_json("/health").await,
        json!({"status": "ok", "sandbox": true})
    );
}

#[tokio::test]
async fn a_body_over_16_mib_is_payload_too_large() {
    let sandbox = Sandbox::start().await;
    let big = format!("{{\"image\":\"{}\"}}", "A".repeat(16 * 1024 * 1024 + 16));
    let resp = sandbox
        .client
        .post(sandbox.url("/v1/idcard/ocr"))
        .header("X-Api-Key", common::KEY)
        .header("Content-Type", "application/json")
        .body(big)
        .send()
        .await
        .expect("answers");
    assert_eq!(error(resp).await, (413, "PAYLOAD_TOO_LARGE".into()));
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json_errors() {
    let sandbox = Sandbox::start().await;
    let resp = sandbox
        .client
        .get(sandbox.url("/v2/nothing"))
        .send()
        .await
        .expect("answers");
    assert_eq!(error(resp).await, (404, "NOT_FOUND".into()));
    let resp = sandbox
        .client
        .get(sandbox.url("/v1/idcard/ocr"))
        .send()
        .await
        .expect("answers");
    assert_eq!(error(resp).await, (405, "METHOD_NOT_ALLOWED".into()));
}
