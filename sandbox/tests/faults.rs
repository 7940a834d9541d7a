//! Fault injection, each fault both per call (X-Sandbox-* headers) and through the admin API.

mod common;

use std::time::{Duration, Instant};

use common::{Sandbox, error};
use serde_json::{Value, json};

async fn timed(sandbox: &Sandbox, headers: &[(&str, &str)]) -> (u16, Duration) {
    let started = Instant::now();
    let status = sandbox.liveness_with(headers).await.status().as_u16();
    (status, started.elapsed())
}

#[tokio::test]
async fn latency_is_added_by_header_and_by_the_admin_api() {
    let sandbox = Sandbox::start().await;
    let (status, baseline) = timed(&sandbox, &[]).await;
    assert_eq!(status, 200);
    let (status, slow) = timed(&sandbox, &[("X-Sandbox-Latency-Ms", "400")]).await;
    assert_eq!(status, 200);
    assert!(slow >= Duration::from_millis(400), "{slow:?}");
    assert!(
        slow >= baseline + Duration::from_millis(300),
        "{slow:?} vs {baseline:?}"
    );

    sandbox
        .put_faults(json!({"liveness": {"latency_ms": 400}}))
        .await;
    let (status, slow) = timed(&sandbox, &[]).await;
    assert_eq!(status, 200);
    assert!(slow >= Duration::from_millis(400), "{slow:?}");
}

#[tokio::test]
async fn a_forced_status_answers_with_that_status_and_a_json_error() {
    let sandbox = Sandbox::start().await;
    let resp = sandbox.liveness_with(&[("X-Sandbox-Status", "502")]).await;
    assert_eq!(error(resp).await, (502, "BAD_GATEWAY".into()));

    sandbox
        .put_faults(json!({"liveness": {"status": 500}}))
        .await;
    assert_eq!(
        error(sandbox.liveness_with(&[]).await).await,
        (500, "INTERNAL_ERROR".into())
    );
    // Only the configured endpoint is affected.
    let ocr = sandbox.post("/v1/idcard/ocr", &json!({"image": "x"})).await;
    assert_eq!(error(ocr).await, (400, "INVALID_IMAGE".into()));
}

#[tokio::test]
async fn fail_first_fails_the_next_n_calls_then_calls_succeed() {
    let sandbox = Sandbox::start().await;
    let set = sandbox
        .put_faults(json!({"liveness": {"fail_first": 2}}))
        .await;
    assert_eq!(set.status(), 200);
    for _ in 0..2 {
        let resp = sandbox.liveness_with(&[]).await;
        assert_eq!(error(resp).await, (503, "SERVICE_UNAVAILABLE".into()));
    }
    for _ in 0..2 {
        assert_eq!(sandbox.liveness_with(&[]).await.status(), 200);
    }
    let faults = sandbox.get_json("/sandbox/faults").await;
    assert_eq!(faults["liveness"]["fail_first"], 0);
    let stats = sandbox.stats().await;
    assert_eq!(
        stats["calls"]["liveness"],
        json!({"total": 4, "ok": 2, "failed": 2})
    );
}

#[tokio::test]
async fn a_malformed_answer_is_a_200_whose_body_is_not_json() {
    let sandbox = Sandbox::start().await;
    for by_admin in [false, true] {
        let resp = if by_admin {
            sandbox
                .put_faults(json!({"liveness": {"malformed": true}}))
                .await;
            sandbox.liveness_with(&[]).await
        } else {
            sandbox
                .liveness_with(&[("X-Sandbox-Malformed", "true")])
                .await
        };
        assert_eq!(resp.status(), 200);
        let text = resp.text().await.expect("a body");
        assert!(!text.is_empty());
        assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
    }
}

#[tokio::test]
async fn a_rate_limit_answers_429_with_retry_after() {
    let sandbox = Sandbox::start().await;
    let resp = sandbox
        .liveness_with(&[("X-Sandbox-Rate-Limit", "7")])
        .await;
    assert_eq!(resp.headers()["retry-after"], "7");
    assert_eq!(error(resp).await, (429, "RATE_LIMITED".into()));

    sandbox
        .put_faults(json!({"liveness": {"rate_limit_retry_after": 30}}))
        .await;
    let resp = sandbox.liveness_with(&[]).await;
    assert_eq!(resp.headers()["retry-after"], "30");
    assert_eq!(error(resp).await, (429, "RATE_LIMITED".into()));
}

#[tokio::test]
async fn an_error_rate_of_one_answers_every_call_503_and_zero_none() {
    let sandbox = Sandbox::start().await;
    for _ in 0..5 {
        let resp = sandbox
            .liveness_with(&[("X-Sandbox-Error-Rate", "1.0")])
            .await;
        assert_eq!(error(resp).await, (503, "SERVICE_UNAVAILABLE".into()));
    }
    sandbox
        .put_faults(json!({"liveness": {"error_rate": 1.0}}))
        .await;
    for _ in 0..5 {
        assert_eq!(
            error(sandbox.liveness_with(&[]).await).await,
            (503, "SERVICE_UNAVAILABLE".into())
        );
    }
    // A header overrides the configured value for its call.
    let resp = sandbox
        .liveness_with(&[("X-Sandbox-Error-Rate", "0")])
        .await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_timeout_holds_the_call_until_the_client_gives_up() {
    let sandbox = Sandbox::start().await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    let body = common::moving_frames_body();
    let call = |headers: &[(&'static str, &'static str)]| {
        let mut req = impatient
            .post(sandbox.url("/v1/liveness/check"))
            .header("X-Api-Key", common::KEY)
            .json(&body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send()
    };
    let err = call(&[("X-Sandbox-Timeout", "true")])
        .await
        .expect_err("no answer");
    assert!(err.is_timeout(), "{err}");

    sandbox
        .put_faults(json!({"liveness": {"timeout": true}}))
        .await;
    let err = call(&[]).await.expect_err("no answer");
    assert!(err.is_timeout(), "{err}");

    let stats = sandbox.stats().await;
    assert_eq!(stats["calls"]["liveness"]["failed"], 2);
    // The sandbox lets go of a held call once its client has gone away.
    let mut holding = stats["holding"].as_u64();
    for _ in 0..20 {
        if holding == Some(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        holding = sandbox.stats().await["holding"].as_u64();
    }
    assert_eq!(holding, Some(0));
}

#[tokio::test]
async fn faults_can_be_read_cleared_and_are_validated() {
    let sandbox = Sandbox::start().await;
    let set = sandbox
        .put_faults(json!({"ocr": {"latency_ms": 5, "status": 504}, "face": {"error_rate": 0.5}}))
        .await;
    assert_eq!(set.status(), 200);
    let faults = sandbox.get_json("/sandbox/faults").await;
    assert_eq!(faults["ocr"]["latency_ms"], 5);
    assert_eq!(faults["ocr"]["status"], 504);
    assert_eq!(faults["face"]["error_rate"], 0.5);
    assert_eq!(faults["liveness"]["timeout"], false);

    let cleared = sandbox
        .client
        .delete(sandbox.url("/sandbox/faults"))
        .send()
        .await
        .expect("answers");
    assert_eq!(cleared.status(), 200);
    assert_eq!(
        sandbox.get_json("/sandbox/faults").await,
        sandbox.get_json("/sandbox/faults").await
    );
    assert_eq!(
        sandbox.get_json("/sandbox/faults").await["ocr"]["status"],
        Value::Null
    );

    for bad in [
        json!({"ocr": {"error_rate": 1.5}}),
        json!({"ocr": {"status": 200}}),
        json!({"ocr": {"latncy_ms": 5}}),
        json!({"search": {}}),
    ] {
        assert_eq!(
            error(sandbox.put_faults(bad).await).await,
            (400, "BAD_REQUEST".into())
        );
    }
    let bad_header = sandbox
        .liveness_with(&[("X-Sandbox-Error-Rate", "lots")])
        .await;
    assert_eq!(error(bad_header).await, (400, "BAD_REQUEST".into()));
}
