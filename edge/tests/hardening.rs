//! The gateway hardened (issue #10, section 2), through kyc-edge with the built filters in front
//! of the real service: one normalised path, identity only from the filters, the client address
//! only from trusted proxies, smuggling shapes and oversized or slow requests refused, the Admin
//! API closed beyond loopback, and error bodies that never repeat a secret.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kyc_edge::conf::{IpNet, KongConf};
use serde_json::{Value, json};
use support::common::{self, claims, sign_hs256};
use support::{CLIENT, Stack, filters_dir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ID_NUMBER: &str = "11010519491231002X";

fn kong_conf() -> KongConf {
    KongConf::load(&common::repo_root().join("kong/kong.conf")).expect("kong.conf")
}

/// A response read off a raw connection.
#[derive(Debug)]
struct Raw {
    status: u16,
    head: String,
    body: String,
}

impl Raw {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", self.head, self.body))
    }

    fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_owned()
    }
}

/// Sends `bytes` as they are (a client library would fix them) and reads one response; the
/// request should ask for `Connection: close` or be one the edge closes on.
async fn raw(addr: SocketAddr, bytes: &[u8]) -> Raw {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    read_response(&mut stream).await
}

async fn read_response(stream: &mut TcpStream) -> Raw {
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
            if complete(&out) {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no response in 10 s");
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Raw {
        status,
        head: head.to_owned(),
        body,
    }
}

/// Whether `out` holds a whole response with a Content-Length body.
fn complete(out: &[u8]) -> bool {
    let text = String::from_utf8_lossy(out);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    head.lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .is_some_and(|len| body.len() >= len)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn get(path: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}Connection: close\r\n\r\n")
        .into_bytes()
}

#[tokio::test]
async fn every_spelling_of_a_path_gets_its_routes_filter_chain() {
    let s = Stack::start().await;
    let addr = s.edge.proxy_addr;
    // Each spelling of the status endpoint meets kyc_jwt: 401 without a token.
    for path in [
        "/api/v1/kyc/status/x",
        "/api/v1/./kyc/status/x",
        "/api/v1/kyc/../kyc/status/x",
        "/api/v1/%6Byc/status/x",
        "/api/v1/%6byc/%73tatus/x",
        "/api/v1/kyc/%2e%2E/kyc/status/x",
        "/api//v1///kyc/status/x",
        "/api/v1/x/../../v1/kyc/./status/x",
    ] {
        let r = raw(addr, &get(path, "")).await;
        assert_eq!(r.status, 401, "{path}: {}", r.body);
        assert_eq!(r.json()["error"]["code"], "TOKEN_MISSING", "{path}");
    }
    // With a token the request goes on, and the service routes the normalised path (its JSON 404
    // for an unknown request, not its ROUTE_NOT_FOUND).
    let token = s.token(CLIENT.0, CLIENT.1).await;
    let auth = format!("Authorization: Bearer {token}\r\n");
    let r = raw(addr, &get("/api/v1/%6Byc/./status/x", &auth)).await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "NOT_FOUND");

    // The upstream receives the path the router matched; the query is kept as sent.
    let r = raw(addr, &get("/echo/open/a/.././%62//c?q=%2F..", "")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = r.json();
    assert_eq!(seen["path"], "/echo/open/b/c?q=%2F..");
    // X-Forwarded-Path is the path as the client wrote it, as Kong sends it.
    assert_eq!(
        seen["headers"]["x-forwarded-path"],
        "/echo/open/a/.././%62//c"
    );
    // A spelling of the JWT-protected echo route meets its filter too.
    let r = raw(addr, &get("/echo/%6Awt/../jwt/whoami", "")).await;
    assert_eq!(r.status, 401, "{}", r.body);

    // Ambiguous encodings are refused before routing, with a stable code.
    for path in [
        "/api/v1/kyc/status/a%2Fb",
        "/api/v1/kyc/status/a%2fb",
        "/api/v1/kyc/status/a%5Cb",
        "/api/v1/kyc/status/a%00",
        "/api/v1/kyc\\status/x",
        "/echo/open/a%2F..%2F..%2Fb",
    ] {
        let r = raw(addr, &get(path, &auth)).await;
        assert_eq!(r.status, 400, "{path}: {}", r.body);
        assert_eq!(r.code(), "PATH_AMBIGUOUS", "{path}");
    }
    let r = raw(addr, &get("/api/v1/kyc/status/%zz", &auth)).await;
    assert_eq!((r.status, r.code().as_str()), (400, "PATH_MALFORMED"));
}

#[tokio::test]
async fn identity_headers_a_client_sends_are_stripped_on_every_route() {
    let s = Stack::start().await;
    let forged = [
        ("x-kyc-client-id", "someone-else"),
        ("x-kyc-scopes", "kyc:pii"),
        ("x-client-id", "admin"),
        ("x-consumer-id", "c1"),
        ("x-consumer-username", "root"),
        ("x-authenticated-scope", "kyc:pii"),
        ("x-credential-identifier", "k1"),
    ];
    // A route without any filter: none of them reaches the upstream.
    let mut r = s.http.get(s.url("/echo/open/who"));
    for (n, v) in forged {
        r = r.header(n, v);
    }
    let seen: Value = r.send().await.expect("request").json().await.expect("json");
    for (n, _) in forged {
        assert!(seen["headers"].get(n).is_none(), "{n} reached the upstream");
    }
    // The same through kyc_jwt: only what the filter set.
    let token = s.token(CLIENT.0, CLIENT.1).await;
    let mut r = s.http.get(s.url("/echo/jwt/who")).bearer_auth(&token);
    for (n, v) in forged {
        r = r.header(n, v);
    }
    let seen: Value = r.send().await.expect("request").json().await.expect("json");
    let h = &seen["headers"];
    assert_eq!(h["x-kyc-client-id"], "kyc-client");
    assert_eq!(h["x-kyc-scopes"], "kyc:read kyc:write");
    for n in [
        "x-client-id",
        "x-consumer-id",
        "x-consumer-username",
        "x-credential-identifier",
    ] {
        assert!(h.get(n).is_none(), "{n} reached the upstream");
    }
}

/// POSTs to the token endpoint (limited per source address: burst 20, 5/s) all at once, each with
/// its own X-Forwarded-For and X-Real-IP; how many were refused with 429.
async fn rotate_addresses(s: &Stack, n: usize) -> usize {
    let requests = (0..n).map(|i| {
        let fake = format!("10.9.{}.{}", i / 250, i % 250 + 1);
        s.http
            .post(s.url("/api/v1/auth/token"))
            .header("x-forwarded-for", &fake)
            .header("x-real-ip", &fake)
            .json(&json!({"grant_type": "client_credentials", "client_id": "nobody", "client_secret": "x"}))
            .send()
    });
    futures::future::join_all(requests)
        .await
        .into_iter()
        .filter(|r| r.as_ref().expect("request").status() == 429)
        .count()
}

#[tokio::test]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    // Kong's defaults trust nobody: rotating X-Forwarded-For / X-Real-IP does not escape the
    // per-address limit, and the upstream's X-Real-IP is the peer.
    let s = Stack::start().await;
    let limited = rotate_addresses(&s, 40).await;
    assert!(limited >= 10, "only {limited} of 40 refused");
    let seen: Value = s
        .http
        .get(s.url("/echo/open/ip"))
        .header("x-forwarded-for", "1.2.3.4")
        .header("x-real-ip", "1.2.3.4")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(seen["headers"]["x-real-ip"], "127.0.0.1");
    // As Kong: the client's list with the peer appended, and our own scheme.
    assert_eq!(seen["headers"]["x-forwarded-for"], "1.2.3.4, 127.0.0.1");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "http");
    drop(s);

    // Behind a trusted proxy (here loopback), the header names the client: each address has its
    // own limit, and the upstream sees it.
    let mut conf = kong_conf();
    conf.client_address.trusted_ips = vec![IpNet::parse("127.0.0.0/8").expect("net")];
    conf.client_address.real_ip_header = "x-forwarded-for".into();
    let s = Stack::start_with(conf).await;
    assert_eq!(rotate_addresses(&s, 40).await, 0);
    let seen: Value = s
        .http
        .get(s.url("/echo/open/ip"))
        .header("x-forwarded-for", "1.2.3.4")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(seen["headers"]["x-real-ip"], "1.2.3.4");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https");
}

#[tokio::test]
async fn request_smuggling_shapes_are_refused_with_400() {
    let s = Stack::start().await;
    let addr = s.edge.proxy_addr;
    let cases: [(&str, &str); 8] = [
        (
            "POST /echo/open/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "AMBIGUOUS_LENGTH",
        ),
        (
            "POST /echo/open/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
            "AMBIGUOUS_LENGTH",
        ),
        (
            "POST /echo/open/x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
            "AMBIGUOUS_LENGTH",
        ),
        (
            "POST /echo/open/x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\nabc",
            "AMBIGUOUS_LENGTH",
        ),
        (
            "POST /echo/open/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            "BAD_TRANSFER_ENCODING",
        ),
        (
            "GET /echo/open/x HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n b\r\n\r\n",
            "OBS_FOLD",
        ),
        ("GET /echo/open/x HTTP/1.1\nHost: a\n\n", "BARE_LINE_ENDING"),
        (
            "GET /echo/open/x HTTP/1.1\r\nHost: a\nX: y\r\n\r\n",
            "BARE_LINE_ENDING",
        ),
    ];
    for (request, code) in cases {
        let r = raw(addr, request.as_bytes()).await;
        assert_eq!((r.status, r.code().as_str()), (400, code), "{request:?}");
        assert!(r.head.to_ascii_lowercase().contains("connection: close"));
    }
    // A request smuggled behind a valid one on the same connection is checked too: the first is
    // answered, the second refused.
    let pipelined = "POST /echo/open/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
                     0\r\n\r\nGET /echo/open/y HTTP/1.1\r\nHost: a\nX: y\r\n\r\n";
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(pipelined.as_bytes()).await.expect("write");
    let mut all = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut all)).await;
    let text = String::from_utf8_lossy(&all);
    assert!(!text.contains("/echo/open/y"), "{text}");
    // The guard stops reading at an upgrade; a refused upgrade closes the connection, so
    // nothing sent behind it is served unchecked.
    for upgrade in [
        "GET /echo/ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        "GET /echo/open/x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
    ] {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let behind = "GET /echo/open/smuggled HTTP/1.1\r\nHost: a\nX: y\r\n\r\n";
        stream
            .write_all(format!("{upgrade}{behind}").as_bytes())
            .await
            .expect("write");
        let mut all = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut all)).await;
        assert!(
            read.is_ok(),
            "the connection stayed open after a refused upgrade"
        );
        let text = String::from_utf8_lossy(&all);
        assert!(!text.starts_with("HTTP/1.1 101"), "{text}");
        assert!(!text.contains("/echo/open/smuggled"), "{text}");
    }
    // A well-formed chunked body still goes through.
    let ok = "POST /echo/open/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
              3\r\nabc\r\n0\r\n\r\n";
    let r = raw(addr, ok.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["body_len"], 3);
}

#[tokio::test]
async fn oversized_and_slow_requests_are_cut_off() {
    let mut conf = kong_conf();
    conf.limits.header_buffers = (4, 1024);
    conf.limits.max_headers = 10;
    conf.limits.header_timeout = Duration::from_secs(1);
    conf.limits.body_timeout = Duration::from_secs(1);
    // Two workers in the harness: four connections in all.
    conf.limits.worker_connections = 2;
    let s = Stack::start_with(conf).await;
    let addr = s.edge.proxy_addr;

    let long_line = get(&format!("/echo/open/{}", "a".repeat(1100)), "");
    let r = raw(addr, &long_line).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (414, "REQUEST_LINE_TOO_LONG")
    );
    let long_header = get("/echo/open/x", &format!("X-Big: {}\r\n", "b".repeat(1100)));
    let r = raw(addr, &long_header).await;
    assert_eq!((r.status, r.code().as_str()), (431, "HEADER_TOO_LARGE"));
    let big_head = get(
        "/echo/open/x",
        &format!("X-Big: {}\r\n", "b".repeat(900)).repeat(5),
    );
    let r = raw(addr, &big_head).await;
    assert_eq!((r.status, r.code().as_str()), (431, "HEADER_TOO_LARGE"));
    let many = get("/echo/open/x", &"X-Many: 1\r\n".repeat(10));
    let r = raw(addr, &many).await;
    assert_eq!((r.status, r.code().as_str()), (431, "TOO_MANY_HEADERS"));
    let fine = get("/echo/open/x", &"X-Many: 1\r\n".repeat(7));
    assert_eq!(raw(addr, &fine).await.status, 200);

    // A head sent slowly: the connection is closed at the header timeout.
    let mut slow = TcpStream::connect(addr).await.expect("connect");
    let started = Instant::now();
    slow.write_all(b"GET /echo/open/x HTTP/1.1\r\nHost: a\r\n")
        .await
        .expect("write");
    let mut cut = false;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut buf = [0u8; 512];
        let dripped = slow.write_all(b"X-Drip: 1\r\n").await;
        let closed =
            match tokio::time::timeout(Duration::from_millis(10), slow.read(&mut buf)).await {
                Ok(Ok(_) | Err(_)) => true,
                Err(_) => dripped.is_err(),
            };
        if closed {
            cut = true;
            break;
        }
    }
    assert!(
        cut,
        "a slow head was still open after {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(3));

    // A body sent slowly: 408 with a stable code.
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"POST /echo/open/x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
        .await
        .expect("write");
    let r = read_response(&mut stream).await;
    assert_eq!((r.status, r.code().as_str()), (408, "BODY_TIMEOUT"));

    // Four connections held open: a fifth is refused with 503, and a slot frees when one closes.
    drop(stream);
    drop(slow);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut c = TcpStream::connect(addr).await.expect("connect");
        c.write_all(b"GET /echo/open/x HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .expect("write");
        let r = read_response(&mut c).await;
        assert_eq!(r.status, 200);
        held.push(c);
    }
    let r = raw(addr, &get("/echo/open/x", "")).await;
    assert_eq!((r.status, r.code().as_str()), (503, "TOO_MANY_CONNECTIONS"));
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(raw(addr, &get("/echo/open/x", "")).await.status, 200);
}

async fn admin_only_edge(
    admin_listen: &str,
    token: Option<&str>,
) -> anyhow::Result<kyc_edge::Running> {
    let path = std::env::temp_dir().join(format!("kyc-edge-admin-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(
        &path,
        json!({"_format_version": "3.0", "services": [{"name": "s", "url": "http://127.0.0.1:9",
               "routes": [{"name": "r", "paths": ["/"]}]}]})
        .to_string(),
    )
    .expect("write");
    let running = kyc_edge::start(kyc_edge::Options {
        declarative: path.clone(),
        filters: filters_dir(),
        kong_conf: KongConf::default(),
        proxy_listen: "127.0.0.1:0".parse().expect("addr"),
        admin_listen: admin_listen.parse().expect("addr"),
        workers: 1,
        resolve: std::collections::HashMap::new(),
        max_body_bytes: kyc_edge::DEFAULT_MAX_BODY_BYTES,
        access_log: None,
        admin_token: token.map(str::to_owned),
    })
    .await;
    let _ = std::fs::remove_file(&path);
    running
}

#[tokio::test]
async fn the_admin_api_beyond_loopback_requires_a_token() {
    // Beyond loopback without a token: the edge refuses to start.
    let Err(e) = admin_only_edge("0.0.0.0:0", None).await else {
        panic!("started without an admin token");
    };
    assert!(format!("{e:#}").contains("admin token"), "{e:#}");
    // On loopback without one: open, as Kong's default admin_listen.
    let open = admin_only_edge("127.0.0.1:0", None).await.expect("starts");
    let http = reqwest::Client::new();
    let r = http
        .get(format!("http://{}/status", open.admin_addr))
        .send()
        .await
        .expect("status");
    assert_eq!(r.status(), 200);

    // With a token: every request must carry it in Kong-Admin-Token.
    let secret = "admin-token-0123456789-abcdef";
    let edge = admin_only_edge("0.0.0.0:0", Some(secret))
        .await
        .expect("starts");
    let url = format!("http://127.0.0.1:{}/status", edge.admin_addr.port());
    let r = http.get(&url).send().await.expect("request");
    assert_eq!(r.status(), 401);
    let wrong = "admin-token-0123456789-abcdeX";
    let r = http
        .get(&url)
        .header("kong-admin-token", wrong)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 401);
    let body = r.text().await.expect("body");
    assert!(!body.contains(wrong), "{body}");
    let r = http
        .patch(format!(
            "http://127.0.0.1:{}/filter-chains/x",
            edge.admin_addr.port()
        ))
        .json(&json!({"enabled": false}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 401, "changes need the token too");
    let r = http
        .get(&url)
        .header("kong-admin-token", secret)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn error_bodies_never_repeat_a_token_or_an_id_number() {
    let mut conf = kong_conf();
    conf.limits.header_buffers = (4, 2048);
    conf.limits.body_timeout = Duration::from_secs(1);
    let s = Stack::start_with(conf).await;
    let addr = s.edge.proxy_addr;
    let token = s.token(CLIENT.0, CLIENT.1).await;
    let forged = sign_hs256(
        &claims(ID_NUMBER, "kyc:read", 0),
        "not-the-secret-not-the-secret-00",
    );
    let auth = format!("Authorization: Bearer {token}\r\nX-Id-Number: {ID_NUMBER}\r\n");
    let requests = [
        // An ambiguous path holding the ID number, with a good token.
        get(&format!("/api/v1/kyc/status/{ID_NUMBER}%2F.."), &auth),
        // A malformed path.
        get(&format!("/api/v1/kyc/status/{ID_NUMBER}%zz"), &auth),
        // No route.
        get(&format!("/nowhere/{ID_NUMBER}"), &auth),
        // A forged token whose subject is the ID number.
        get("/api/v1/kyc/status/x", &format!("Authorization: Bearer {forged}\r\n")),
        // A header too large, holding both.
        get("/echo/open/x", &format!("X-Pad: {}{ID_NUMBER}{token}\r\n", "p".repeat(2048))),
        // A smuggling shape.
        format!(
            "POST /api/v1/kyc/verify HTTP/1.1\r\nHost: a\r\n{auth}Content-Length: 5\r\nContent-Length: 6\r\n\r\n"
        )
        .into_bytes(),
    ];
    for request in &requests {
        let r = raw(addr, request).await;
        assert!((400..500).contains(&r.status), "{} {}", r.status, r.body);
        for secret in [token.as_str(), forged.as_str(), ID_NUMBER] {
            assert!(!r.body.contains(secret), "{}: {}", r.status, r.body);
            assert!(!r.head.contains(secret), "{}: {}", r.status, r.head);
        }
    }
    // The Admin API's refusals leave out a misplaced secret too.
    let secret = "admin-api-misplaced-secret-0123456789";
    for (method, path, body) in [
        ("PATCH", "/filter-chains/kyc-status-chain", json!({"filters": [{"name": "kyc_jwt", "enabled": secret}]}).to_string()),
        ("PATCH", "/filter-chains/kyc-status-chain", json!({"filters": [{"name": "kyc_jwt", "config": {"secret": "short", "issuer": 1, "audience": secret}}]}).to_string()),
        ("POST", "/config", format!("_format_version: \"3.0\"\nservices: {secret}\n")),
    ] {
        let r = s
            .http
            .request(method.parse().expect("method"), s.admin(path))
            .body(body)
            .header("content-type", "application/json")
            .send()
            .await
            .expect("admin request");
        assert_eq!(r.status(), 400, "{method} {path}");
        let text = r.text().await.expect("body");
        assert!(!text.contains(secret), "{method} {path}: {text}");
    }
    // A body that never arrives: 408 without the part that did.
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let partial = format!(
        "POST /echo/open/x HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n{{\"idcard\":\"{ID_NUMBER}\""
    );
    stream.write_all(partial.as_bytes()).await.expect("write");
    let r = read_response(&mut stream).await;
    assert_eq!(r.status, 408);
    assert!(!r.body.contains(ID_NUMBER), "{}", r.body);
}

#[tokio::test]
async fn websocket_frames_over_the_limit_close_the_tunnel_with_1009() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let mut conf = kong_conf();
    conf.limits.ws_max_frame = 1000;
    conf.limits.ws_max_message = 1000;
    let s = Stack::start_with(conf).await;
    let token = s.token(CLIENT.0, CLIENT.1).await;
    let url = format!("ws://{}/echo/ws?access_token={token}", s.edge.proxy_addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrade");
    let small = "a".repeat(900);
    ws.send(Message::text(small.clone())).await.expect("send");
    let reply = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("reply in time")
        .expect("frame")
        .expect("ok");
    assert_eq!(
        reply.into_text().expect("text").as_str(),
        format!("echo:{small}")
    );

    // One frame over the limit: the edge closes with 1009 and the upstream never echoes it.
    ws.send(Message::text("b".repeat(1001)))
        .await
        .expect("send");
    let mut closed_with = None;
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        match msg {
            Ok(Message::Close(frame)) => {
                closed_with = frame.map(|f| u16::from(f.code));
                break;
            }
            Ok(Message::Text(t)) => panic!("the upstream got the large frame: {}", t.len()),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    assert_eq!(closed_with, Some(1009));
}
