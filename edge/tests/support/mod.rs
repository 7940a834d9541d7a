//! The gateway test harness, shared by `gateway.rs` and `browser.rs`: the edge with the built
//! `.wasm` filters (`scripts/build-filters.sh` → `target/filters`) and the shipped
//! `declarative/kong.yaml`, in front of the real kyc-service (its own PostgreSQL database and Redis
//! prefix) and the vendor sandbox (or, for some vendors, another vendor: `vision.rs` starts
//! kyc-vision). A small echo upstream stands beside the service where a test must see what the
//! upstream received (identity headers, WebSocket frames).

#![allow(dead_code)]

#[path = "../../../service/tests/common/mod.rs"]
pub mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::response::IntoResponse;
use common::sandbox::Sandbox;
use common::{SEED_SECRET, TestApp};
use futures::{SinkExt, StreamExt};
use kyc_edge::conf::KongConf;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// The seed's client; its default scopes are `kyc:read kyc:write`.
pub const CLIENT: (&str, &str) = ("kyc-client", "kyc-client-secret");

pub fn filters_dir() -> PathBuf {
    let dir = common::repo_root().join("target/filters");
    assert!(
        dir.join("kyc_jwt.wasm").exists(),
        "{} has no built filters: run `bash scripts/build-filters.sh` first",
        dir.display()
    );
    dir
}

/// An upstream that answers every request with what it received, and `/pii` with personal data.
pub async fn echo_upstream() -> SocketAddr {
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
pub async fn ws_upstream() -> SocketAddr {
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

pub fn jwt(scopes: &[&str], allow_query_token: bool) -> Value {
    json!({"name": "kyc_jwt", "config": {
        "algorithms": ["HS256"], "secret": SEED_SECRET, "issuer": "kyc-service",
        "audience": "kyc-api", "required_scopes": scopes, "allow_query_token": allow_query_token,
    }})
}

/// The shipped declarative file, pointed at the test's service, plus the echo services.
pub fn declarative(service: SocketAddr, echo: SocketAddr, ws: SocketAddr) -> Value {
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

pub struct Stack {
    pub app: TestApp,
    pub sandbox: Sandbox,
    pub edge: kyc_edge::Running,
    pub http: reqwest::Client,
    pub decl: Value,
    pub access_log: TempFile,
    _decl_file: TempFile,
}

pub struct TempFile(pub PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Stack {
    /// The stack with kong.conf's zones.
    pub async fn start() -> Self {
        let conf = KongConf::load(&common::repo_root().join("kong/kong.conf")).expect("kong.conf");
        Self::start_with(conf).await
    }

    pub async fn start_with(kong_conf: KongConf) -> Self {
        Self::start_with_filters(kong_conf, filters_dir()).await
    }

    pub async fn start_with_filters(kong_conf: KongConf, filters: PathBuf) -> Self {
        Self::start_with_vendors(kong_conf, filters, &[]).await
    }

    /// The stack with some of the service's vendors elsewhere: each `KYC__THIRD_PARTY__…__URL`
    /// in `vendors` replaces the sandbox's (which still runs, as `scripts/run.sh` keeps it).
    pub async fn start_with_vendors(
        kong_conf: KongConf,
        filters: PathBuf,
        vendors: &[(&'static str, String)],
    ) -> Self {
        let sandbox = Sandbox::start().await;
        let mut overrides = sandbox.vendor_overrides();
        overrides.retain(|(key, _)| vendors.iter().all(|(k, _)| k != key));
        overrides.extend(vendors.iter().cloned());
        let app = TestApp::spawn_with(&overrides).await;
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
            admin_token: None,
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

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.edge.proxy_addr)
    }

    pub fn admin(&self, path: &str) -> String {
        format!("http://{}{path}", self.edge.admin_addr)
    }

    /// A token from the service's token endpoint, fetched through the edge.
    pub async fn token(&self, client: &str, secret: &str) -> String {
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

    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut r = self.http.get(self.url(path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().await.expect("request")
    }

    pub fn ocr_form(&self) -> reqwest::multipart::Form {
        let part = reqwest::multipart::Part::bytes(self.sandbox.fixture("idcard.jpg"))
            .file_name("idcard.jpg")
            .mime_str("image/jpeg")
            .expect("mime");
        reqwest::multipart::Form::new()
            .part("image", part)
            .text("language", "auto")
    }

    pub async fn ocr(&self, token: &str, key: Option<&str>) -> reqwest::Response {
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

    pub async fn patch_chain(&self, chain: &str, body: Value) -> (u16, Value) {
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
    pub async fn chain_filters(&self, chain: &str) -> Vec<Value> {
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

    pub async fn metrics(&self) -> String {
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

pub fn header<'r>(r: &'r reqwest::Response, name: &str) -> Option<&'r str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}
