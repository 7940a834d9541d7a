//! The gateway's behaviour as Kong 3.9 has it, through the built filters in kyc-edge in front of the
//! real kyc-service and the vendor sandbox (the harness is `support`).

mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use kyc_edge::conf::KongConf;
use serde_json::{Value, json};
use support::common::{self, SEED_SECRET, claims, sign_hs256};
use support::{CLIENT, Stack, filters_dir, header, jwt, metric};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn jwt_rejections_carry_rfc6750_headers_and_the_project_error_body() {
    let s = Stack::start().await;
    let token = s.token(CLIENT.0, CLIENT.1).await;

    // No token: 401, a bare challenge, the project's JSON body with the edge's request id.
    let r = s.ocr_missing_token().await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        header(&r, "www-authenticate"),
        Some(r#"Bearer realm="kyc""#)
    );
    let request_id = header(&r, "x-kong-request-id")
        .expect("request id")
        .to_owned();
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["success"], false);
    assert_eq!(body["error"]["code"], "TOKEN_MISSING");
    assert_eq!(body["request_id"], request_id.as_str());

    // A forged signature, `alg: none`, an expired token: 401 invalid_token, never the upstream.
    let forged = sign_hs256(
        &claims("kyc-client", "kyc:read kyc:write", 0),
        "not-the-secret-not-the-secret-00",
    );
    let none = {
        use base64::Engine as _;
        let b64 =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "at+jwt"})),
            b64(&claims("kyc-client", "kyc:read", 0))
        )
    };
    let expired = sign_hs256(&claims("kyc-client", "kyc:read", -3600), SEED_SECRET);
    for bad in [forged, none, expired] {
        let r = s.get("/api/v1/kyc/status/test", Some(&bad)).await;
        assert_eq!(r.status(), 401, "token {bad}");
        let challenge = header(&r, "www-authenticate").expect("challenge");
        assert!(
            challenge.contains(r#"error="invalid_token""#),
            "{challenge}"
        );
    }

    // A valid token without the route's scope: 403 insufficient_scope naming the scope.
    let secret = s.app.create_client("reader", &["kyc:read"]).await;
    let reader = s.token("reader", &secret).await;
    let r = s.ocr(&reader, None).await;
    assert_eq!(r.status(), 403);
    let challenge = header(&r, "www-authenticate").expect("challenge");
    assert!(
        challenge.contains(r#"error="insufficient_scope""#) && challenge.contains("kyc:write"),
        "{challenge}"
    );

    // A good token passes to the service (which answers 404 for an unknown request).
    let r = s.get("/api/v1/kyc/status/test", Some(&token)).await;
    assert_eq!(r.status(), 404);
    assert_eq!(header(&r, "via"), Some("1.1 kyc-edge"));

    let m = s.metrics().await;
    assert!(metric(&m, "pw_kyc_jwt_rejected_total") >= 5.0, "{m}");
    assert!(
        m.contains(r#"kong_http_requests_total{code="401",consumer="",route="kyc-ocr""#),
        "{m}"
    );
}

impl Stack {
    async fn ocr_missing_token(&self) -> reqwest::Response {
        self.http
            .post(self.url("/api/v1/kyc/ocr"))
            .multipart(self.ocr_form())
            .send()
            .await
            .expect("ocr request")
    }
}

#[tokio::test]
async fn identity_headers_come_only_from_the_jwt_filter() {
    let s = Stack::start().await;
    let token = s.token(CLIENT.0, CLIENT.1).await;
    let r = s
        .http
        .get(s.url("/echo/jwt/whoami"))
        .bearer_auth(&token)
        .header("x-kyc-client-id", "someone-else")
        .header("x-kyc-scopes", "kyc:pii kyc:admin")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let seen: Value = r.json().await.expect("json");
    let h = &seen["headers"];
    assert_eq!(h["x-kyc-client-id"], "kyc-client");
    assert_eq!(h["x-kyc-scopes"], "kyc:read kyc:write");
    // Kong's forwarding headers, the path unchanged (strip_path: false), an upstream Host.
    assert_eq!(seen["path"], "/echo/jwt/whoami");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-path"], "/echo/jwt/whoami");
    assert!(h["x-request-id"].as_str().is_some_and(|v| v.len() >= 16));
    assert!(
        h.get("authorization").is_some(),
        "the token itself is passed on"
    );

    // No route, Kong's 404; a route without filters is a plain proxy.
    let r = s.get("/nowhere", None).await;
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.expect("json")["message"],
        "no Route matched with those values"
    );
    let r = s.get("/echo/open/x?y=1", None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.expect("json")["path"],
        "/echo/open/x?y=1"
    );
}

#[tokio::test]
async fn a_concurrent_burst_admits_exactly_burst_requests_across_workers() {
    let s = Stack::start().await;
    let token = s.token(CLIENT.0, CLIENT.1).await;
    // Slow refill (1/s) so the burst alone decides; the chain otherwise as shipped.
    let mut filters = s.chain_filters("kyc-status-chain").await;
    let rl = filters
        .iter_mut()
        .find(|f| f["name"] == "kyc_rate_limit")
        .expect("rate limit");
    rl["config"] = json!({"rate_per_sec": 1, "burst": 10});
    let (status, body) = s
        .patch_chain("kyc-status-chain", json!({"filters": filters}))
        .await;
    assert_eq!(status, 200, "{body}");

    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let (http, url, token) = (
                s.http.clone(),
                s.url("/api/v1/kyc/status/test"),
                token.clone(),
            );
            tokio::spawn(async move {
                http.get(url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .expect("request")
            })
        })
        .collect();
    let mut admitted = 0;
    let mut refused = Vec::new();
    for t in tasks {
        let r = t.await.expect("task");
        match r.status().as_u16() {
            429 => refused.push(r),
            404 => admitted += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(admitted, 10, "exactly burst requests admitted");
    let r = &refused[0];
    assert!(
        header(r, "retry-after")
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|s| s >= 1)
    );
    assert_eq!(header(r, "x-ratelimit-limit"), Some("10"));
    assert_eq!(header(r, "x-ratelimit-remaining"), Some("0"));
    assert!(header(r, "ratelimit-policy").is_some_and(|p| p.contains("q=10")));
    assert!(header(r, "ratelimit").is_some());
    let m = s.metrics().await;
    assert_eq!(metric(&m, "pw_kyc_rate_limit_limited_total"), 30.0, "{m}");
}

#[tokio::test]
async fn idempotency_replays_at_the_edge_and_refuses_a_duplicate_in_flight() {
    let s = Stack::start().await;
    let token = s.token(CLIENT.0, CLIENT.1).await;

    let first = s.ocr(&token, Some("ocr-replay-1")).await;
    assert_eq!(first.status(), 200);
    assert!(header(&first, "idempotent-replayed").is_none());
    let first_body = first.text().await.expect("body");
    let calls = s.sandbox.calls("ocr").await;

    let again = s.ocr(&token, Some("ocr-replay-1")).await;
    assert_eq!(again.status(), 200);
    assert_eq!(header(&again, "idempotent-replayed"), Some("true"));
    // ngx_wasm_module (and so the edge) ends a local response's body with a newline.
    assert_eq!(again.text().await.expect("body").trim_end(), first_body);
    assert_eq!(
        s.sandbox.calls("ocr").await,
        calls,
        "a replay makes no vendor call"
    );

    // A malformed key: 400 before the service.
    let r = s.ocr(&token, Some("bad key with spaces")).await;
    assert_eq!(r.status(), 400);

    // A duplicate while the first is still at the vendor: 409.
    s.sandbox.faults(json!({"ocr": {"latency_ms": 1500}})).await;
    let slow = {
        let (http, url, token, form) = (
            s.http.clone(),
            s.url("/api/v1/kyc/ocr"),
            token.clone(),
            s.ocr_form(),
        );
        tokio::spawn(async move {
            http.post(url)
                .bearer_auth(token)
                .header("Idempotency-Key", "ocr-inflight")
                .multipart(form)
                .send()
                .await
                .expect("slow")
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let dup = s.ocr(&token, Some("ocr-inflight")).await;
    assert_eq!(dup.status(), 409);
    assert_eq!(slow.await.expect("task").status(), 200);
    let m = s.metrics().await;
    assert!(
        metric(&m, "pw_kyc_idempotency_replayed_total") >= 1.0,
        "{m}"
    );
    assert!(
        metric(&m, "pw_kyc_idempotency_conflicts_total") >= 1.0,
        "{m}"
    );
}

#[tokio::test]
async fn pii_is_masked_unless_the_client_holds_kyc_pii() {
    let s = Stack::start().await;
    let token = s.token(CLIENT.0, CLIENT.1).await;
    let r = s.ocr(&token, None).await;
    assert_eq!(r.status(), 200);
    // A small sized body is rewritten whole: the client gets the rewritten body's own length,
    // never the upstream's.
    let length: usize = header(&r, "content-length")
        .expect("a small body is sent with its length")
        .parse()
        .expect("a number");
    let text = r.text().await.expect("body");
    assert_eq!(length, text.len(), "the length of the rewritten body");
    let body: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(body["id_card"], "110105********002X");
    assert_eq!(body["name"], "张*");

    let secret = s
        .app
        .create_client("auditor", &["kyc:read", "kyc:write", "kyc:pii"])
        .await;
    let auditor = s.token("auditor", &secret).await;
    let body: Value = s.ocr(&auditor, None).await.json().await.expect("json");
    assert_eq!(body["id_card"], "11010519491231002X");
    assert_eq!(body["name"], "张三");

    // Any depth, and the echo route's chain too.
    let body: Value = s
        .get("/echo/jwt/pii", Some(&token))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(body["phone"], "138****8000");
    assert_eq!(body["nested"][0]["mobile"], "139****5678");
}

#[tokio::test]
async fn a_filter_toggled_through_the_admin_api_changes_the_next_request() {
    let s = Stack::start().await;
    assert_eq!(s.get("/echo/jwt/x", None).await.status(), 401);

    // Switch one filter off by replacing the filters array (Kong's way), then the whole chain.
    let mut filters = s.chain_filters("echo-jwt-chain").await;
    filters[0]["enabled"] = json!(false);
    let (status, body) = s
        .patch_chain("echo-jwt-chain", json!({"filters": filters}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["filters"][0]["enabled"], false);
    let body: Value = s
        .get("/echo/jwt/pii", None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        body["name"], "张*",
        "the mask still runs without the jwt filter"
    );

    let (status, _) = s
        .patch_chain("echo-jwt-chain", json!({"enabled": false}))
        .await;
    assert_eq!(status, 200);
    let body: Value = s
        .get("/echo/jwt/pii", None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(body["name"], "张三", "a disabled chain runs no filter");

    filters[0]["enabled"] = json!(true);
    let (status, _) = s
        .patch_chain(
            "echo-jwt-chain",
            json!({"enabled": true, "filters": filters}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(s.get("/echo/jwt/x", None).await.status(), 401);

    // A config the filter refuses: 400 with the filter's own message; the chain keeps running.
    let mut bad = filters.clone();
    bad[1]["config"] = json!({"rate_per_sec": 0});
    let (status, body) = s
        .patch_chain("echo-jwt-chain", json!({"filters": bad}))
        .await;
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("rate_per_sec")),
        "{body}"
    );
    assert_eq!(s.get("/echo/jwt/x", None).await.status(), 401);
    let (status, _) = s
        .patch_chain("no-such-chain", json!({"enabled": false}))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_config_reload_replaces_routes_and_refuses_a_bad_file() {
    let s = Stack::start().await;
    let token = s.token(CLIENT.0, CLIENT.1).await;
    assert_eq!(s.get("/echo/open/a", None).await.status(), 200);

    // Reload with the open route moved: the old path is gone, the new one answers.
    let mut decl = s.decl.clone();
    for svc in decl["services"].as_array_mut().expect("services") {
        for r in svc["routes"].as_array_mut().expect("routes") {
            if r["name"] == "echo-open" {
                r["paths"] = json!(["/echo/moved"]);
            }
        }
    }
    let r = s
        .http
        .post(s.admin("/config"))
        .body(decl.to_string())
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 201);
    assert_eq!(s.get("/echo/open/a", None).await.status(), 404);
    assert_eq!(s.get("/echo/moved/a", None).await.status(), 200);
    // Filters still run after the reload.
    assert_eq!(s.get("/echo/jwt/a", None).await.status(), 401);
    assert_eq!(s.get("/echo/jwt/a", Some(&token)).await.status(), 200);

    // A file a filter refuses: 400 naming the field; the running configuration stays.
    let mut bad = decl.clone();
    bad["services"][1]["routes"][1]["filter_chains"][0]["filters"][1]["config"] =
        json!({"burst": 0});
    let r = s
        .http
        .post(s.admin("/config"))
        .body(bad.to_string())
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.expect("json");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("burst")),
        "{body}"
    );
    assert_eq!(s.get("/echo/moved/a", None).await.status(), 200);

    // An empty body reloads the file the edge started with.
    let r = s.http.post(s.admin("/config")).send().await.expect("post");
    assert_eq!(r.status(), 201);
    assert_eq!(s.get("/echo/open/a", None).await.status(), 200);
    assert_eq!(s.get("/echo/moved/a", None).await.status(), 404);
}

#[tokio::test]
async fn a_trapping_filter_fails_only_its_own_request() {
    // No `idem` zone: kyc_idempotency's first shared-data call for a keyed POST traps.
    let mut conf = KongConf::load(&common::repo_root().join("kong/kong.conf")).expect("kong.conf");
    conf.shm_zones.remove("idem");
    let s = Stack::start_with(conf).await;
    let token = s.token(CLIENT.0, CLIENT.1).await;
    let post = |key: &'static str| {
        s.http
            .post(s.url("/echo/idem/x"))
            .bearer_auth(&token)
            .header("Idempotency-Key", key)
            .body("{}")
            .send()
    };
    for key in ["k-1", "k-2"] {
        let r = post(key).await.expect("post");
        assert_eq!(r.status(), 500);
        let body: Value = r.json().await.expect("json");
        assert_eq!(
            body["message"], "An unexpected error occurred",
            "a plain 500 no filter touched"
        );
        // The same chain without a key, and other routes, keep working.
        let r = s
            .http
            .post(s.url("/echo/idem/x"))
            .bearer_auth(&token)
            .body("{}")
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 200);
        assert_eq!(s.get("/echo/jwt/x", Some(&token)).await.status(), 200);
        assert_eq!(
            s.get("/api/v1/kyc/status/test", Some(&token))
                .await
                .status(),
            404
        );
    }
}

#[tokio::test]
async fn a_websocket_upgrade_passes_the_chain_then_tunnels_frames() {
    let s = Stack::start().await;
    let token = s.token(CLIENT.0, CLIENT.1).await;
    let base = format!("ws://{}/echo/ws", s.edge.proxy_addr);

    // Without a token the upgrade is refused by the jwt filter.
    match tokio_tungstenite::connect_async(base.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("expected a 401, got {other:?}"),
    }

    // With `access_token` in the query (what browsers can send): frames both ways.
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("{base}?access_token={token}"))
        .await
        .expect("upgrade through the edge");
    assert_eq!(resp.status(), 101);
    assert!(
        resp.headers().get("x-ratelimit-remaining").is_some(),
        "response-header phase ran on the 101"
    );
    for msg in ["{\"action\":\"blink\"}", "second"] {
        ws.send(Message::text(msg)).await.expect("send");
        let reply = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("reply in time");
        assert_eq!(
            reply
                .expect("frame")
                .expect("ok")
                .into_text()
                .expect("text")
                .as_str(),
            format!("echo:{msg}")
        );
    }
    ws.close(None).await.expect("close");

    // The access log has the upgrade, with the token in the query redacted.
    let mut log = String::new();
    for _ in 0..40 {
        log = std::fs::read_to_string(&s.access_log.0).unwrap_or_default();
        if log.contains(" 101 ") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let line = log
        .lines()
        .find(|l| l.contains(" 101 "))
        .expect("a 101 line");
    assert!(
        line.contains("\"GET /echo/ws?access_token=REDACTED HTTP/1.1\" 101"),
        "{line}"
    );
    assert!(
        line.starts_with("127.0.0.1 - - [") && line.contains("kong_request_id: \""),
        "{line}"
    );
    assert!(!log.contains(&token), "no token in the access log");
}

#[tokio::test]
async fn the_seed_sections_3_and_5_through_the_edge() {
    let s = Stack::start().await;
    // 3.1 token (through the token route's rate limit)
    let token = s.token(CLIENT.0, CLIENT.1).await;
    // 3.2 OCR, 3.3 face, 3.5 verify — masked; 3.6 status.
    let r = s.ocr(&token, Some("ocr-123456")).await;
    assert_eq!(r.status(), 200);
    let face = reqwest::multipart::Form::new()
        .part(
            "image1",
            reqwest::multipart::Part::bytes(s.sandbox.fixture("idcard.jpg"))
                .file_name("idcard.jpg"),
        )
        .part(
            "image2",
            reqwest::multipart::Part::bytes(s.sandbox.fixture("face.jpg")).file_name("face.jpg"),
        );
    let r = s
        .http
        .post(s.url("/api/v1/kyc/face/verify"))
        .bearer_auth(&token)
        .header("Idempotency-Key", "face-123456")
        .multipart(face)
        .send()
        .await
        .expect("face");
    assert_eq!(r.status(), 200);
    let verify = reqwest::multipart::Form::new()
        .part(
            "idcard_image",
            reqwest::multipart::Part::bytes(s.sandbox.fixture("idcard.jpg"))
                .file_name("idcard.jpg"),
        )
        .part(
            "face_image",
            reqwest::multipart::Part::bytes(s.sandbox.fixture("face.jpg")).file_name("face.jpg"),
        )
        .text("name", "张三")
        .text("idcard", "11010519491231002X")
        .text("phone", "13800138000");
    let r = s
        .http
        .post(s.url("/api/v1/kyc/verify"))
        .bearer_auth(&token)
        .header("Idempotency-Key", "kyc-123456")
        .multipart(verify)
        .send()
        .await
        .expect("verify");
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("json");
    let id = body["request_id"].as_str().expect("request_id").to_owned();
    let r = s
        .get(&format!("/api/v1/kyc/status/{id}"), Some(&token))
        .await;
    assert_eq!(r.status(), 200);
    let status: Value = r.json().await.expect("json");
    assert_eq!(status["id"], id.as_str());
    let text = status.to_string();
    assert!(
        !text.contains("11010519491231002X") && !text.contains("13800138000"),
        "{text}"
    );

    // 5.1: 200 quick status queries in a row: the shipped limit refuses some of them.
    let mut codes = HashMap::new();
    for _ in 0..200 {
        *codes
            .entry(
                s.get("/api/v1/kyc/status/test", Some(&token))
                    .await
                    .status()
                    .as_u16(),
            )
            .or_insert(0) += 1;
    }
    assert!(codes.get(&429).copied().unwrap_or(0) > 0, "{codes:?}");
    assert!(codes.get(&404).copied().unwrap_or(0) >= 40, "{codes:?}");

    // 5.2: five OCR requests with one key, each a new multipart body (curl -F picks a new
    // boundary each time): the first reaches the service, the rest are replayed.
    let mut replayed = 0;
    for i in 0..5 {
        let r = s.ocr(&token, Some("test-123")).await;
        assert_eq!(r.status(), 200, "request {i}");
        replayed += usize::from(header(&r, "idempotent-replayed") == Some("true"));
    }
    assert_eq!(replayed, 4);
}

#[tokio::test]
async fn keys_required_5xx_never_stored_and_non_json_untouched() {
    let s = Stack::start().await;
    let token = s.token(CLIENT.0, CLIENT.1).await;
    let post = |path: &str, key: Option<&'static str>| {
        let mut r = s.http.post(s.url(path)).bearer_auth(&token).body("{}");
        if let Some(k) = key {
            r = r.header("Idempotency-Key", k);
        }
        r.send()
    };
    // A 5xx is never kept: the retry reaches the upstream again.
    for _ in 0..2 {
        let r = post("/echo/idem/status/500", Some("k-500"))
            .await
            .expect("post");
        assert_eq!(r.status(), 500);
        assert!(header(&r, "idempotent-replayed").is_none());
        assert_eq!(r.text().await.expect("body"), "boom");
    }
    // Where the config requires a key, a request without one is refused before the upstream.
    assert_eq!(
        post("/echo/idem/x", None).await.expect("post").status(),
        200
    );
    let mut filters = s.chain_filters("echo-idem-chain").await;
    filters[1]["config"] = json!({"methods": ["POST"], "required": true});
    let (status, body) = s
        .patch_chain("echo-idem-chain", json!({"filters": filters}))
        .await;
    assert_eq!(status, 200, "{body}");
    let r = post("/echo/idem/x", None).await.expect("post");
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.expect("json")["success"], false);

    // Non-JSON and invalid JSON pass the mask untouched; invalid JSON is counted.
    let r = s.get("/echo/jwt/text", Some(&token)).await;
    assert_eq!(r.text().await.expect("body"), "phone 13800138000");
    let r = s.get("/echo/jwt/badjson", Some(&token)).await;
    assert_eq!(r.text().await.expect("body"), r#"{"phone": "13800138000""#);
    let m = s.metrics().await;
    assert_eq!(metric(&m, "pw_kyc_pii_mask_not_json_total"), 1.0, "{m}");
}

/// The built filters plus the hand-written test filters of `tests/filters/*.wat`, in a fresh directory.
fn filters_with_test_filters() -> (PathBuf, TempDir) {
    let dir = std::env::temp_dir().join(format!("kyc-edge-filters-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for entry in std::fs::read_dir(filters_dir()).expect("filters") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "wasm") {
            std::fs::copy(&path, dir.join(path.file_name().expect("name"))).expect("copy");
        }
    }
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/filters");
    for name in ["buffer_test", "spin_test"] {
        let wasm = wat::parse_file(here.join(format!("{name}.wat"))).expect("valid wat");
        std::fs::write(dir.join(format!("{name}.wasm")), wasm).expect("write wasm");
    }
    (dir.clone(), TempDir(dir))
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn pause_buffers_the_response_body_and_a_runaway_filter_is_stopped() {
    let (dir, _keep) = filters_with_test_filters();
    let conf = KongConf::load(&common::repo_root().join("kong/kong.conf")).expect("kong.conf");
    let s = Stack::start_with_filters(conf, dir).await;
    let token = s.token(CLIENT.0, CLIENT.1).await;
    let mut decl = s.decl.clone();
    let echo_url = decl["services"][1]["url"].clone();
    decl["services"].as_array_mut().expect("services").push(json!({
        "name": "echo-test-filters", "url": echo_url,
        "routes": [
            {"name": "buffered", "paths": ["/echo/buffered"], "strip_path": false,
             "filter_chains": [{"filters": [jwt(&["kyc:read"], false), {"name": "buffer_test"}]}]},
            {"name": "spin", "paths": ["/echo/spin"], "strip_path": false,
             "filter_chains": [{"filters": [{"name": "spin_test"}]}]},
        ],
    }));
    let r = s
        .http
        .post(s.admin("/config"))
        .body(decl.to_string())
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());

    // The body arrives in three chunks; the filter saw it whole, so "<" comes first.
    let r = s.get("/echo/buffered/stream", Some(&token)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-buffer-test"), Some("seen"));
    assert_eq!(r.text().await.expect("body"), "<abc");

    // A local response from an earlier filter still passes the later filters' header callbacks.
    let r = s.get("/echo/buffered/stream", None).await;
    assert_eq!(r.status(), 401);
    assert_eq!(header(&r, "x-buffer-test"), Some("seen"));

    // A filter that never returns: its request fails with 500, and the edge keeps serving.
    let spin = s.get("/echo/spin/x", None).await;
    assert_eq!(spin.status(), 500);
    assert_eq!(s.get("/echo/open/x", None).await.status(), 200);
    assert_eq!(
        s.get("/echo/buffered/stream", Some(&token))
            .await
            .text()
            .await
            .expect("body"),
        "<abc"
    );
}

#[tokio::test]
async fn the_liveness_socket_through_the_shipped_route_takes_a_query_token_or_a_ticket() {
    let s = Stack::start().await;
    let token = s.token(CLIENT.0, CLIENT.1).await;
    let ws = |query: String| format!("ws://{}/api/v1/kyc/liveness/ws?{query}", s.edge.proxy_addr);
    let first_message = |url: String| async move {
        let (mut socket, resp) = tokio_tungstenite::connect_async(url)
            .await
            .expect("upgrade");
        assert_eq!(resp.status(), 101);
        let msg = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a message in time")
            .expect("a frame")
            .expect("ok");
        serde_json::from_str::<Value>(msg.into_text().expect("text").as_str()).expect("json")
    };

    // A browser's `?access_token=`: the filter verifies it and hands it on as a header (it no
    // longer travels in the URL), so the service authenticates the socket and sends a challenge.
    let challenge = first_message(ws(format!("access_token={token}"))).await;
    assert_eq!(challenge["type"], "challenge", "{challenge}");

    // A ticket from the sessions route, with no token at all.
    let r = s
        .http
        .post(s.url("/api/v1/kyc/liveness/sessions"))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .expect("session");
    assert_eq!(r.status(), 201);
    let session: Value = r.json().await.expect("json");
    let ticket = session["ticket"].as_str().expect("ticket");
    let challenge = first_message(ws(format!("ticket={ticket}"))).await;
    assert_eq!(
        challenge["liveness_session_id"],
        session["liveness_session_id"]
    );

    // A bad token next to a ticket is verified, not waved through.
    match tokio_tungstenite::connect_async(ws("ticket=x&access_token=not.a.jwt".into())).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("expected a 401, got {other:?}"),
    }
    // The access log keeps neither credential.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let log = std::fs::read_to_string(&s.access_log.0).unwrap_or_default();
    assert!(
        !log.contains(&token) && !log.contains(ticket),
        "credentials in the access log"
    );
}
