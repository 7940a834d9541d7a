//! The edge with the built `.wasm` filters (`scripts/build-filters.sh` → `target/filters`) and the
//! shipped `declarative/kong.yaml`, in front of the real kyc-service (its own PostgreSQL database and
//! Redis prefix) and the vendor sandbox. A small echo upstream stands beside the service where a test
//! must see what the upstream received (identity headers, WebSocket frames).

#[path = "../../service/tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::response::IntoResponse;
use common::sandbox::Sandbox;
use common::{SEED_SECRET, TestApp, claims, sign_hs256};
use futures::{SinkExt, StreamExt};
use kyc_edge::conf::KongConf;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// The seed's client; its default scopes are `kyc:read kyc:write`.
const CLIENT: (&str, &str) = ("kyc-client", "kyc-client-secret");

fn filters_dir() -> PathBuf {
    let dir = common::repo_root().join("target/filters");
    assert!(
        dir.join("kyc_jwt.wasm").exists(),
        "{} has no built filters: run `bash scripts/build-filters.sh` first",
        dir.display()
    );
    dir
}

/// An upstream that answers every request with what it received, and `/pii` with personal data.
async fn echo_upstream() -> SocketAddr {
    async fn echo(req: Request) -> axum::response::Response {
        let headers: HashMap<String, String> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("?").to_owned()))
            .collect();
        let path = req.uri().to_string();
        let method = req.method().to_string();
        let body = axum::body::to_bytes(req.into_body(), 1 << 20)
            .await
            .unwrap_or_default();
        if path.ends_with("/pii") {
            return axum::Json(json!({
                "name": "张三", "id_card": "11010519491231002X", "phone": "13800138000",
                "nested": [{"mobile": "13912345678"}],
            }))
            .into_response();
        }
        if path.ends_with("/stream") {
            // Three chunks, apart in time, so the edge sees them one by one.
            let chunks = futures::stream::unfold(0u8, |i| async move {
                if i == 3 {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
                Some((
                    Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![b'a' + i])),
                    i + 1,
                ))
            });
            return axum::body::Body::from_stream(chunks).into_response();
        }
        if path.ends_with("/text") {
            return ([("content-type", "text/plain")], "phone 13800138000").into_response();
        }
        if path.ends_with("/badjson") {
            return (
                [("content-type", "application/json")],
                r#"{"phone": "13800138000""#,
            )
                .into_response();
        }
        if path.contains("/status/500") {
            return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response();
        }
        axum::Json(json!({
            "method": method, "path": path, "headers": headers,
            "body_len": body.len(),
        }))
        .into_response()
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, Router::new().fallback(echo)).await;
    });
    addr
}

/// A WebSocket upstream that echoes each text message prefixed with `echo:`.
async fn ws_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if let Message::Text(t) = msg {
                        let _ = ws.send(Message::text(format!("echo:{t}"))).await;
                    }
                }
            });
        }
    });
    addr
}

fn jwt(scopes: &[&str], allow_query_token: bool) -> Value {
    json!({"name": "kyc_jwt", "config": {
        "algorithms": ["HS256"], "secret": SEED_SECRET, "issuer": "kyc-service",
        "audience": "kyc-api", "required_scopes": scopes, "allow_query_token": allow_query_token,
    }})
}

/// The shipped declarative file, pointed at the test's service, plus the echo services.
fn declarative(service: SocketAddr, echo: SocketAddr, ws: SocketAddr) -> Value {
    let text = std::fs::read_to_string(common::repo_root().join("declarative/kong.yaml"))
        .expect("declarative/kong.yaml")
        .replace(r#"${{ env "DECK_KYC_JWT_SECRET" }}"#, SEED_SECRET);
    let mut decl: Value = serde_yaml_ng::from_str(&text).expect("kong.yaml parses");
    let services = decl["services"].as_array_mut().expect("services");
    for s in services.iter_mut() {
        if s["url"] == "http://kyc-service:8080" {
            s["url"] = json!(format!("http://{service}"));
        }
    }
    services.push(json!({
        "name": "echo", "url": format!("http://{echo}"),
        "routes": [
            {"name": "echo-open", "paths": ["/echo/open"], "strip_path": false},
            {"name": "echo-jwt", "paths": ["/echo/jwt"], "strip_path": false,
             "filter_chains": [{"name": "echo-jwt-chain", "filters": [
                jwt(&["kyc:read"], false),
                {"name": "kyc_rate_limit", "config": {"rate_per_sec": 1000, "burst": 1000}},
                {"name": "kyc_pii_mask"},
             ]}]},
            {"name": "echo-idem", "paths": ["/echo/idem"], "strip_path": false,
             "filter_chains": [{"name": "echo-idem-chain", "filters": [
                jwt(&["kyc:read"], false),
                {"name": "kyc_idempotency", "config": {"methods": ["POST"]}},
             ]}]},
        ],
    }));
    services.push(json!({
        "name": "echo-ws", "url": format!("http://{ws}"),
        "routes": [{"name": "echo-ws", "paths": ["/echo/ws"], "strip_path": false,
            "filter_chains": [{"name": "echo-ws-chain", "filters": [
                jwt(&["kyc:read"], true),
                {"name": "kyc_rate_limit", "config": {"rate_per_sec": 100, "burst": 100}},
            ]}]}],
    }));
    decl
}

struct Stack {
    app: TestApp,
    sandbox: Sandbox,
    edge: kyc_edge::Running,
    http: reqwest::Client,
    decl: Value,
    access_log: TempFile,
    _decl_file: TempFile,
}

struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Stack {
    /// The stack with kong.conf's zones.
    async fn start() -> Self {
        let conf = KongConf::load(&common::repo_root().join("kong/kong.conf")).expect("kong.conf");
        Self::start_with(conf).await
    }

    async fn start_with(kong_conf: KongConf) -> Self {
        Self::start_with_filters(kong_conf, filters_dir()).await
    }

    async fn start_with_filters(kong_conf: KongConf, filters: PathBuf) -> Self {
        let sandbox = Sandbox::start().await;
        let app = TestApp::spawn_with(&[
            ("KYC__THIRD_PARTY__OCR_SERVICE__URL", sandbox.url.clone()),
            ("KYC__THIRD_PARTY__FACE_SERVICE__URL", sandbox.url.clone()),
            (
                "KYC__THIRD_PARTY__LIVENESS_SERVICE__URL",
                sandbox.url.clone(),
            ),
        ])
        .await;
        let decl = declarative(app.addr, echo_upstream().await, ws_upstream().await);
        let path = std::env::temp_dir().join(format!("kyc-edge-{}.json", uuid::Uuid::new_v4()));
        let access_log = path.with_extension("access.log");
        std::fs::write(&path, decl.to_string()).expect("write declarative file");
        let edge = kyc_edge::start(kyc_edge::Options {
            declarative: path.clone(),
            filters,
            kong_conf,
            proxy_listen: "127.0.0.1:0".parse().expect("addr"),
            admin_listen: "127.0.0.1:0".parse().expect("addr"),
            workers: 2,
            resolve: HashMap::new(),
            max_body_bytes: kyc_edge::DEFAULT_MAX_BODY_BYTES,
            access_log: Some(access_log.clone()),
        })
        .await
        .expect("edge starts");
        Self {
            app,
            sandbox,
            edge,
            http: reqwest::Client::new(),
            decl,
            access_log: TempFile(access_log),
            _decl_file: TempFile(path),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.edge.proxy_addr)
    }

    fn admin(&self, path: &str) -> String {
        format!("http://{}{path}", self.edge.admin_addr)
    }

    /// A token from the service's token endpoint, fetched through the edge.
    async fn token(&self, client: &str, secret: &str) -> String {
        let r = self
            .http
            .post(self.url("/api/v1/auth/token"))
            .json(&json!({"grant_type": "client_credentials", "client_id": client, "client_secret": secret}))
            .send()
            .await
            .expect("token request");
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.expect("json")["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut r = self.http.get(self.url(path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().await.expect("request")
    }

    fn ocr_form(&self) -> reqwest::multipart::Form {
        let part = reqwest::multipart::Part::bytes(self.sandbox.fixture("idcard.jpg"))
            .file_name("idcard.jpg")
            .mime_str("image/jpeg")
            .expect("mime");
        reqwest::multipart::Form::new()
            .part("image", part)
            .text("language", "auto")
    }

    async fn ocr(&self, token: &str, key: Option<&str>) -> reqwest::Response {
        let mut r = self
            .http
            .post(self.url("/api/v1/kyc/ocr"))
            .bearer_auth(token)
            .multipart(self.ocr_form());
        if let Some(k) = key {
            r = r.header("Idempotency-Key", k);
        }
        r.send().await.expect("ocr request")
    }

    async fn patch_chain(&self, chain: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .patch(self.admin(&format!("/filter-chains/{chain}")))
            .json(&body)
            .send()
            .await
            .expect("patch");
        (r.status().as_u16(), r.json().await.expect("json"))
    }

    /// The filters of `chain` in the running configuration.
    async fn chain_filters(&self, chain: &str) -> Vec<Value> {
        let r = self
            .http
            .get(self.admin(&format!("/filter-chains/{chain}")))
            .send()
            .await
            .expect("get chain");
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.expect("json")["filters"]
            .as_array()
            .expect("filters")
            .clone()
    }

    async fn metrics(&self) -> String {
        self.http
            .get(self.admin("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }
}

fn header<'r>(r: &'r reqwest::Response, name: &str) -> Option<&'r str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

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
    assert!(
        header(&r, "content-length").is_none(),
        "the length of a rewritten body is not kept"
    );
    let body: Value = r.json().await.expect("json");
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
