//! Health, readiness (including Redis outages), metrics, request ids and the HTTP basics.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::TestApp;
use serde_json::Value;

#[tokio::test]
async fn health_and_ready_report_every_dependency() {
    let app = TestApp::spawn().await;
    let health: Value = app.get("/health", None).await.json().await.expect("json");
    assert_eq!(health["status"], "ok");
    let r = app.get("/ready", None).await;
    assert_eq!(r.status(), 200);
    let ready: Value = r.json().await.expect("json");
    assert_eq!(ready["status"], "ready");
    for check in ["postgres", "migrations", "redis"] {
        assert_eq!(ready["checks"][check]["status"], "up", "{ready}");
    }
    assert_eq!(
        ready["checks"]["migrations"]["applied"],
        ready["checks"]["migrations"]["expected"]
    );
}

/// A private Redis server for one test, so stopping it disturbs nobody else.
struct OwnRedis {
    port: u16,
    child: Child,
}

impl OwnRedis {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/setup.sh)");
        for _ in 0..50 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { port, child }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn with_redis_stopped_the_service_keeps_serving_and_ready_says_so() {
    let mut redis = OwnRedis::start();
    let app = TestApp::spawn_with(&[("KYC__REDIS__PORT", redis.port.to_string())]).await;
    let token = app.access_token("kyc-client", "kyc-client-secret").await;
    assert_eq!(app.get("/ready", None).await.status(), 200);
    assert!(
        app.get("/api/v1/kyc/status/test", Some(&token))
            .await
            .headers()
            .contains_key("ratelimit")
    );

    redis.stop();
    let r = app.get("/ready", None).await;
    assert_eq!(
        r.status(),
        200,
        "fail-open: still serving, so still in rotation"
    );
    let ready: Value = r.json().await.expect("json");
    assert_eq!(ready["status"], "degraded");
    assert_eq!(ready["checks"]["redis"]["status"], "down");
    assert_eq!(ready["checks"]["postgres"]["status"], "up");

    let started = std::time::Instant::now();
    let r = app.get("/api/v1/kyc/status/test", Some(&token)).await;
    assert_eq!(r.status(), 404, "requests are still served");
    assert!(
        !r.headers().contains_key("ratelimit"),
        "no limit was applied"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "an outage costs no dial timeout"
    );
    let metrics = app
        .get("/metrics", None)
        .await
        .text()
        .await
        .expect("metrics");
    assert!(
        metrics.contains(r#"redis_unavailable_total{operation="rate_limit"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"redis_unavailable_total{operation="ready"}"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn fail_closed_refuses_requests_while_redis_is_down() {
    let mut redis = OwnRedis::start();
    let app = TestApp::spawn_with(&[
        ("KYC__REDIS__PORT", redis.port.to_string()),
        ("KYC__SECURITY__RATE_LIMIT_FAIL_OPEN", "false".into()),
    ])
    .await;
    let token = app.access_token("kyc-client", "kyc-client-secret").await;
    redis.stop();
    let r = app.get("/ready", None).await;
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.json::<Value>().await.expect("json")["status"],
        "not_ready"
    );
    let r = app.get("/api/v1/kyc/status/test", Some(&token)).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"]["code"],
        "SERVICE_UNAVAILABLE"
    );
}

#[tokio::test]
async fn ready_reports_an_unreachable_database() {
    let app = TestApp::spawn_with(&[("KYC__DATABASE__ACQUIRE_TIMEOUT", "300ms".into())]).await;
    app.state.db.close().await;
    let r = app.get("/ready", None).await;
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.json::<Value>().await.expect("json")["checks"]["postgres"]["status"],
        "down"
    );
}

#[tokio::test]
async fn metrics_use_the_seed_names_and_route_templates() {
    let app = TestApp::spawn().await;
    let token = app.access_token("kyc-client", "kyc-client-secret").await;
    for id in ["a", "b", "c"] {
        app.get(&format!("/api/v1/kyc/status/{id}"), Some(&token))
            .await;
    }
    app.get("/no/such/route/12345", None).await;
    let r = app.get("/metrics", None).await;
    assert!(
        r.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text().await.expect("text");
    assert!(
        text.contains(
            r#"http_requests_total{endpoint="/api/v1/kyc/status/{id}",method="GET",status="404"} 3"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"http_requests_total{endpoint="/api/v1/auth/token",method="POST",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"http_requests_total{endpoint="unmatched",method="GET",status="404"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"http_request_duration_seconds_bucket{endpoint="/api/v1/kyc/status/{id}",method="GET",le="0.005"}"#));
    assert!(text.contains(
        r#"http_request_duration_seconds_count{endpoint="/api/v1/kyc/status/{id}",method="GET"} 3"#
    ));
    assert!(text.contains(r#"kyc_requests_total{status="success",type="complete"} 0"#));
    assert!(text.contains(r#"db_pool_connections{state="max"} 25"#));
    assert!(!text.contains("/status/a"), "raw paths never become labels");
    assert!(text.contains("# TYPE http_request_duration_seconds histogram"));
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_errors_echo_it() {
    let app = TestApp::spawn().await;
    let r = app
        .http
        .get(app.url("/api/v1/kyc/status/test"))
        .header("x-request-id", "client-chosen-42")
        .send()
        .await
        .expect("req");
    assert_eq!(r.headers()["x-request-id"], "client-chosen-42");
    assert_eq!(
        r.json::<Value>().await.expect("json")["request_id"],
        "client-chosen-42"
    );
    let r = app
        .http
        .get(app.url("/health"))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .expect("req");
    let generated = r.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_ne!(generated, "bad id with spaces");
    assert_eq!(
        uuid::Uuid::parse_str(&generated)
            .expect("a uuid")
            .get_version_num(),
        7
    );
}

#[tokio::test]
async fn unknown_routes_methods_and_oversized_bodies_get_json_errors() {
    let app = TestApp::spawn().await;
    let r = app.get("/api/v1/nothing", None).await;
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"]["code"],
        "ROUTE_NOT_FOUND"
    );
    let r = app
        .http
        .delete(app.url("/api/v1/auth/token"))
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), 405);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "METHOD_NOT_ALLOWED");
    let huge = format!(
        r#"{{"grant_type":"client_credentials","client_id":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    let r = app
        .http
        .post(app.url("/api/v1/auth/token"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "PAYLOAD_TOO_LARGE");
    assert_eq!(body["success"], false);
    let keys: Vec<&str> = body
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["success", "error", "request_id"],
        "the documented order"
    );
}
