//! `GET /api/v1/kyc/status/{id}`: the seed's shape, tenancy, scopes and the per-client limit.

mod common;

use common::TestApp;
use kyc_service::kyc::model::{ReasonCode, Status};
use serde_json::Value;

/// A request of `kyc-client` for the seed's person, as the workflow stores it before any verdict.
async fn insert_zhang_san(app: &TestApp) -> uuid::Uuid {
    app.insert_request("kyc-client", "张三", "11010519491231002X", "13800138000")
        .await
}

/// Records a verdict the way the workflow does; whether a row moved.
async fn finish(app: &TestApp, id: uuid::Uuid, status: Status, reasons: &[ReasonCode]) -> bool {
    app.state
        .requests
        .finish(id, status, reasons, &serde_json::json!({}))
        .await
        .expect("finish")
}

#[tokio::test]
async fn a_client_sees_its_request_in_the_seed_shape() {
    let app = TestApp::spawn().await;
    let id = insert_zhang_san(&app).await;
    assert!(finish(&app, id, Status::Success, &[]).await);
    let token = app.access_token("kyc-client", "kyc-client-secret").await;
    let r = app
        .get(&format!("/api/v1/kyc/status/{id}"), Some(&token))
        .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["id"], id.to_string());
    assert_eq!(body["user_id"], "user_123");
    assert_eq!(body["request_type"], "complete");
    assert_eq!(body["status"], "success");
    for t in ["created_at", "updated_at"] {
        let s = body[t].as_str().expect("timestamp");
        assert!(
            s.ends_with('Z') && s.len() == 20,
            "RFC 3339 to the second like the seed: {s}"
        );
    }
    assert!(!body.to_string().contains("张三") && !body.to_string().contains("13800138000"));
}

#[tokio::test]
async fn a_terminal_status_is_final() {
    let app = TestApp::spawn().await;
    let id = insert_zhang_san(&app).await;
    assert!(finish(&app, id, Status::Failed, &[ReasonCode::FaceMismatch]).await);
    assert!(
        !app.state
            .requests
            .finish(id, Status::Success, &[], &serde_json::json!({}))
            .await
            .expect("second finish"),
        "no second verdict"
    );
    let token = app.access_token("kyc-client", "kyc-client-secret").await;
    let body: Value = app
        .get(&format!("/api/v1/kyc/status/{id}"), Some(&token))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(body["status"], "failed");
    assert_eq!(body["reasons"], serde_json::json!(["FACE_MISMATCH"]));
    let metrics = app
        .get("/metrics", None)
        .await
        .text()
        .await
        .expect("metrics");
    assert!(
        metrics.contains(r#"kyc_requests_total{status="failed",type="complete"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn another_clients_unknown_and_malformed_ids_are_the_same_404() {
    let app = TestApp::spawn().await;
    let other_secret = app
        .create_client("other-client", &["kyc:read", "kyc:write"])
        .await;
    let mine = insert_zhang_san(&app).await;
    let theirs = app
        .insert_request("other-client", "李四", "440524188001010014", "13900139000")
        .await;
    let token = app.access_token("kyc-client", "kyc-client-secret").await;
    assert_eq!(
        app.get(&format!("/api/v1/kyc/status/{mine}"), Some(&token))
            .await
            .status(),
        200
    );
    let mut bodies = Vec::new();
    for id in [
        theirs.to_string(),
        uuid::Uuid::new_v4().to_string(),
        "test".into(),
        "%FF%FE".into(),
    ] {
        let r = app
            .get(&format!("/api/v1/kyc/status/{id}"), Some(&token))
            .await;
        assert_eq!(r.status(), 404, "{id}");
        assert_eq!(r.headers()["content-type"], "application/json");
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["error"]["code"], "NOT_FOUND", "{id}");
        bodies.push(body["error"].clone());
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "indistinguishable: {bodies:?}"
    );
    // And the owner does see it.
    let theirs_token = app.access_token("other-client", &other_secret).await;
    assert_eq!(
        app.get(&format!("/api/v1/kyc/status/{theirs}"), Some(&theirs_token))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn a_status_still_in_processing_is_never_served_stale() {
    let app = TestApp::spawn().await;
    let id = insert_zhang_san(&app).await;
    let token = app.access_token("kyc-client", "kyc-client-secret").await;
    let status = || async {
        let body: Value = app
            .get(&format!("/api/v1/kyc/status/{id}"), Some(&token))
            .await
            .json()
            .await
            .expect("json");
        body["status"].clone()
    };
    assert_eq!(status().await, "processing");
    assert_eq!(status().await, "processing");
    assert!(finish(&app, id, Status::Success, &[]).await);
    assert_eq!(status().await, "success", "the verdict shows at once");
    assert_eq!(status().await, "success", "and again, from the cache");
}

#[tokio::test]
async fn a_cached_terminal_status_is_still_refused_to_another_client() {
    let app = TestApp::spawn().await;
    let other_secret = app.create_client("other-client", &["kyc:read"]).await;
    let id = insert_zhang_san(&app).await;
    assert!(finish(&app, id, Status::Failed, &[ReasonCode::FaceMismatch]).await);
    let mine = app.access_token("kyc-client", "kyc-client-secret").await;
    let theirs = app.access_token("other-client", &other_secret).await;
    let path = format!("/api/v1/kyc/status/{id}");
    for _ in 0..2 {
        let r = app.get(&path, Some(&mine)).await;
        assert_eq!(r.status(), 200);
        let body = r.text().await.expect("body");
        assert!(!body.contains("张三") && !body.contains("13800138000") && !body.contains("002X"));
        let r = app.get(&path, Some(&theirs)).await;
        assert_eq!(r.status(), 404);
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["error"]["code"], "NOT_FOUND");
    }
}

#[tokio::test]
async fn reading_a_status_needs_the_read_scope() {
    let app = TestApp::spawn().await;
    let secret = app.create_client("writer-only", &["kyc:write"]).await;
    let token = app.access_token("writer-only", &secret).await;
    let r = app.get("/api/v1/kyc/status/test", Some(&token)).await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.headers()["www-authenticate"],
        r#"Bearer realm="kyc", error="insufficient_scope", scope="kyc:read""#
    );
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "INSUFFICIENT_SCOPE");
}

#[tokio::test]
async fn the_per_client_limit_answers_429_with_retry_after_and_ratelimit_fields() {
    let app = TestApp::spawn_with(&[
        ("KYC__SECURITY__RATE_LIMIT_PER_SECOND", "1".into()),
        ("KYC__SECURITY__RATE_LIMIT_BURST", "3".into()),
    ])
    .await;
    let token = app.access_token("kyc-client", "kyc-client-secret").await;
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..5 {
        let r = app.get("/api/v1/kyc/status/test", Some(&token)).await;
        statuses.push(r.status().as_u16());
        last = Some(r);
    }
    assert_eq!(
        statuses,
        [404, 404, 404, 429, 429],
        "burst of 3 admitted, then refused"
    );
    let r = last.expect("a response");
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(r.headers()["ratelimit-policy"], r#""client";q=1;w=1"#);
    assert!(
        r.headers()["ratelimit"]
            .to_str()
            .expect("ascii")
            .starts_with(r#""client";r=0;t="#)
    );
    assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "RATE_LIMITED");
    // The limit is per client: another client is unaffected.
    let secret = app.create_client("second-client", &["kyc:read"]).await;
    let other = app.access_token("second-client", &secret).await;
    assert_eq!(
        app.get("/api/v1/kyc/status/test", Some(&other))
            .await
            .status(),
        404
    );
    // After one emission interval, one more request is admitted.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        app.get("/api/v1/kyc/status/test", Some(&token))
            .await
            .status(),
        404
    );
    let metrics = app
        .get("/metrics", None)
        .await
        .text()
        .await
        .expect("metrics");
    assert!(
        metrics.contains("rate_limit_rejections_total 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_limit_is_shared_by_every_instance() {
    // Two instances on the same database and Redis prefix: one budget between them.
    let app = TestApp::spawn_with(&[
        ("KYC__SECURITY__RATE_LIMIT_PER_SECOND", "1".into()),
        ("KYC__SECURITY__RATE_LIMIT_BURST", "2".into()),
    ])
    .await;
    let token = app.access_token("kyc-client", "kyc-client-secret").await;
    let prefix = app.state.settings.redis.key_prefix.clone();
    let twin_state = kyc_service::AppState::new(common::settings_with(&[
        ("KYC__DATABASE__DBNAME", app.dbname.clone()),
        ("KYC__REDIS__KEY_PREFIX", prefix),
        ("KYC__SECURITY__RATE_LIMIT_PER_SECOND", "1".into()),
        ("KYC__SECURITY__RATE_LIMIT_BURST", "2".into()),
    ]))
    .expect("twin");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let twin = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(kyc_service::serve(
        listener,
        twin_state,
        std::future::pending(),
    ));
    assert_eq!(
        app.get("/api/v1/kyc/status/test", Some(&token))
            .await
            .status(),
        404
    );
    let r = app
        .http
        .get(format!("{twin}/api/v1/kyc/status/test"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("twin");
    assert_eq!(r.status(), 404);
    let r = app
        .http
        .get(format!("{twin}/api/v1/kyc/status/test"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("twin");
    assert_eq!(
        r.status(),
        429,
        "the first instance spent part of the shared budget"
    );
}
