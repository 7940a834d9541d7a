//! The proxy listener (Kong's :8000): HTTP/1.1 with keep-alive and WebSocket upgrades. Each
//! connection belongs to one worker; each request is routed, walked through its filter chain
//! (request headers, then the whole request body, as nginx buffers it), proxied with Kong's
//! forwarding headers, and its response walked back through the chain chunk by chunk.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

use crate::Edge;
use crate::router::Match;
use crate::wasm::{Exchange, Failure, Flow, Header, Outcome, RequestInfo};

pub type Body = BoxBody<Bytes, io::Error>;

/// Headers that belong to one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub async fn serve(edge: Arc<Edge>, listener: TcpListener) {
    loop {
        let (stream, client) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().ok();
        let edge = Arc::clone(&edge);
        let worker = edge.next_worker.fetch_add(1, Ordering::Relaxed) % edge.workers.count();
        edge.metrics
            .connections_accepted
            .fetch_add(1, Ordering::Relaxed);
        edge.metrics.connections_active.inc();
        tokio::spawn(async move {
            let service = service_fn(|req| {
                let edge = Arc::clone(&edge);
                async move { Ok::<_, Infallible>(handle(&edge, worker, client, local, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                // nginx's client_header_timeout.
                .header_read_timeout(Duration::from_secs(60))
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!("connection from {client}: {e}");
            }
            edge.metrics.connections_active.dec();
        });
    }
}

/// Kong's own error replies: JSON with a message and the request id.
pub fn kong_error(status: StatusCode, message: &str, request_id: &str) -> Response<Body> {
    let body = json!({ "message": message, "request_id": request_id }).to_string();
    let mut resp = Response::new(full(body.into_bytes()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert("x-kong-request-id", v);
    }
    resp
}

fn full(bytes: Vec<u8>) -> Body {
    Full::new(Bytes::from(bytes))
        .map_err(|never| match never {})
        .boxed()
}

fn failure_reply(f: Failure, request_id: &str) -> Response<Body> {
    let _ = f;
    kong_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "An unexpected error occurred",
        request_id,
    )
}

fn is_websocket(req: &Request<Incoming>) -> bool {
    let has = |name: HeaderName, token: &str| {
        req.headers().get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has(header::CONNECTION, "upgrade") && has(header::UPGRADE, "websocket")
}

/// What a request's metrics and access-log line say about it.
struct Labels<'r> {
    service: String,
    route: String,
    client: SocketAddr,
    method: http::Method,
    agent: Option<HeaderValue>,
    referer: Option<HeaderValue>,
    path_and_query: &'r str,
    request_id: &'r str,
}

impl Edge {
    fn record(
        &self,
        labels: &Labels<'_>,
        status: u16,
        from_upstream: bool,
        started: Instant,
        upstream: Option<Duration>,
    ) {
        if let Some(log) = &self.access_log {
            let text = |v: &Option<HeaderValue>| {
                v.as_ref()
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned()
            };
            log.write(crate::access_log::line(
                &labels.client.ip().to_string(),
                labels.method.as_str(),
                labels.path_and_query,
                status,
                &text(&labels.referer),
                &text(&labels.agent),
                labels.request_id,
            ));
        }
        let m = &self.metrics;
        let code = status.to_string();
        let source = if from_upstream { "service" } else { "kong" };
        m.requests
            .with_label_values(&[&labels.service, &labels.route, &code, source, "default", ""])
            .inc();
        let total = started.elapsed();
        let route = [&labels.service, &labels.route, "default"];
        m.request_latency
            .with_label_values(&route)
            .observe(total.as_secs_f64() * 1000.0);
        if let Some(up) = upstream {
            m.upstream_latency
                .with_label_values(&route)
                .observe(up.as_secs_f64() * 1000.0);
            m.kong_latency
                .with_label_values(&route)
                .observe(total.saturating_sub(up).as_secs_f64() * 1000.0);
        }
    }
}

async fn handle(
    edge: &Arc<Edge>,
    worker: usize,
    client: SocketAddr,
    local: Option<SocketAddr>,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    edge.metrics.total_requests.fetch_add(1, Ordering::Relaxed);
    // Kong's own request id: made here, never taken from the client.
    let request_id = uuid::Uuid::new_v4().simple().to_string();
    let plan = edge.plan();
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(http::uri::Authority::as_str))
        .unwrap_or("")
        .to_owned();
    let path = req.uri().path().to_owned();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map_or_else(|| path.clone(), |pq| pq.as_str().to_owned());
    let mut labels = Labels {
        service: String::new(),
        route: String::new(),
        client,
        method: req.method().clone(),
        agent: req.headers().get(header::USER_AGENT).cloned(),
        referer: req.headers().get(header::REFERER).cloned(),
        path_and_query: &path_and_query,
        request_id: &request_id,
    };
    let Some(m) = plan.route(req.method().as_str(), &host, &path) else {
        edge.record(&labels, 404, false, started, None);
        return kong_error(
            StatusCode::NOT_FOUND,
            "no Route matched with those values",
            &request_id,
        );
    };
    labels.service = m.service.name.clone();
    labels.route = m
        .route
        .name
        .clone()
        .unwrap_or_else(|| m.route.id.to_string());
    let websocket = is_websocket(&req);
    let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));

    // The request as the filters see it: pseudo-headers first, then what the client sent.
    let mut headers: Vec<Header> = Vec::with_capacity(req.headers().len() + 5);
    headers.push((":method".into(), req.method().as_str().as_bytes().to_vec()));
    headers.push((":path".into(), path_and_query.clone().into_bytes()));
    headers.push((":authority".into(), host.clone().into_bytes()));
    headers.push((":scheme".into(), b"http".to_vec()));
    for (name, value) in req.headers() {
        headers.push((name.as_str().to_owned(), value.as_bytes().to_vec()));
    }
    // As Kong with the correlation-id plugin (declarative/kong.yaml configures it): a client's
    // X-Request-Id is kept, and one is added when there is none, for the filters and the service.
    if req.headers().get("x-request-id").is_none() {
        headers.push(("x-request-id".into(), request_id.clone().into_bytes()));
    }
    let has_body = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() != "0")
        || req.headers().contains_key(header::TRANSFER_ENCODING);
    let ex = Exchange {
        request_headers: headers,
        info: RequestInfo {
            route_id: m.route.id.to_string(),
            route_name: m.route.name.clone().unwrap_or_default(),
            service_id: m.service.id.to_string(),
            service_name: m.service.name.clone(),
            client: Some(client),
            local,
            request_id: request_id.clone(),
        },
        ..Exchange::default()
    };
    let filtered = !m.steps.is_empty();
    let mut flow = edge.workers.flow(worker, &plan, Arc::clone(&m.steps), ex);

    macro_rules! fail {
        ($f:expr) => {{
            let resp = failure_reply($f, &request_id);
            edge.record(&labels, 500, false, started, None);
            return resp;
        }};
    }
    macro_rules! local_reply {
        ($run_headers:expr) => {{
            let resp = reply_local(&mut flow, &request_id, $run_headers);
            let status = resp.status().as_u16();
            edge.record(&labels, status, false, started, None);
            return resp;
        }};
    }

    if filtered {
        if let Err(f) = flow.start() {
            fail!(f);
        }
        match flow.request_headers() {
            Err(f) => fail!(f),
            Ok(Outcome::Respond) => local_reply!(true),
            Ok(Outcome::Continue) => {}
        }
    }

    // nginx buffers the whole request body before the body phase and the upstream.
    let mut body = Vec::new();
    if has_body {
        match Limited::new(req.into_body(), edge.max_body_bytes)
            .collect()
            .await
        {
            Ok(collected) => body = collected.to_bytes().to_vec(),
            Err(e) => {
                let (status, message) = if e.is::<http_body_util::LengthLimitError>() {
                    (StatusCode::PAYLOAD_TOO_LARGE, "Request size limit exceeded")
                } else {
                    (StatusCode::BAD_REQUEST, "Bad request")
                };
                edge.record(&labels, status.as_u16(), false, started, None);
                return kong_error(status, message, &request_id);
            }
        }
        if filtered {
            match flow.request_body(body) {
                Err(f) => fail!(f),
                Ok(Outcome::Respond) => local_reply!(true),
                Ok(Outcome::Continue) => body = flow.take_body(),
            }
        }
    }

    let upstream_req = match build_upstream(
        edge, &m, &mut flow, client, local, &host, &path, body, websocket,
    ) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("building the upstream request failed: {e}");
            fail!(Failure::Stalled);
        }
    };
    let upstream_started = Instant::now();
    let read_timeout = Duration::from_millis(m.service.read_timeout_ms);
    let sent = if websocket {
        tokio::time::timeout(read_timeout, send_upgrade(edge, &m, upstream_req)).await
    } else {
        tokio::time::timeout(read_timeout, async {
            edge.client
                .request(upstream_req)
                .await
                .map_err(|e| e.to_string())
        })
        .await
    };
    let mut upstream_resp = match sent {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => {
            tracing::warn!(service = %m.service.name, "upstream failed: {e}");
            edge.record(&labels, 502, false, started, None);
            return kong_error(
                StatusCode::BAD_GATEWAY,
                "An invalid response was received from the upstream server",
                &request_id,
            );
        }
        Err(_) => {
            edge.record(&labels, 504, false, started, None);
            return kong_error(
                StatusCode::GATEWAY_TIMEOUT,
                "The upstream server is timed out",
                &request_id,
            );
        }
    };
    let upstream_time = upstream_started.elapsed();
    let upstream_upgrade = (upstream_resp.status() == StatusCode::SWITCHING_PROTOCOLS)
        .then(|| hyper::upgrade::on(&mut upstream_resp));
    let (parts, upstream_body) = upstream_resp.into_parts();
    let upgrade = upstream_upgrade.is_some();
    let mut resp_headers: Vec<Header> = Vec::with_capacity(parts.headers.len());
    for (name, value) in &parts.headers {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n) && !(upgrade && (n == "upgrade" || n == "connection")) {
            continue;
        }
        resp_headers.push((n.to_owned(), value.as_bytes().to_vec()));
    }
    let mut status = parts.status.as_u16();
    if filtered {
        match flow.response_headers(status, resp_headers) {
            Err(f) => fail!(f),
            // A local response made here replaces the upstream's status and body.
            Ok(Outcome::Respond) => local_reply!(false),
            Ok(Outcome::Continue) => {}
        }
        resp_headers = flow.response_header_map();
        if let Some(s) = resp_headers
            .iter()
            .find(|(k, _)| k == ":status")
            .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse().ok())
        {
            status = s;
        }
    }

    let mut builder = Response::builder().status(status);
    for (name, value) in &resp_headers {
        if name.starts_with(':') {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            builder = builder.header(n, v);
        }
    }
    let proxy_ms = started.elapsed().saturating_sub(upstream_time).as_millis();
    builder = builder
        .header(header::VIA, "1.1 kyc-edge")
        .header(
            "x-kong-upstream-latency",
            upstream_time.as_millis().to_string(),
        )
        .header("x-kong-proxy-latency", proxy_ms.to_string())
        .header("x-kong-request-id", request_id.as_str());

    edge.record(&labels, status, true, started, Some(upstream_time));

    if let (Some(client_up), Some(upstream_up)) = (client_upgrade, upstream_upgrade) {
        // After the upgrade, frames are tunnelled raw: no body callbacks (as in nginx), and the
        // filters' on_log runs when the tunnel closes.
        tokio::spawn(async move {
            if let (Ok(c), Ok(u)) = (client_up.await, upstream_up.await) {
                let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
                let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
            }
            drop(flow);
        });
        return builder
            .body(full(Vec::new()))
            .unwrap_or_else(|_| failure_reply(Failure::Stalled, &request_id));
    }
    let body = if filtered {
        pump(flow, upstream_body, read_timeout)
    } else {
        drop(flow);
        upstream_body.map_err(io::Error::other).boxed()
    };
    builder
        .body(body)
        .unwrap_or_else(|_| failure_reply(Failure::Stalled, &request_id))
}

/// The response a filter made. Made before the response (`before_response`), it still passes the
/// chain's response-header callbacks; made during them, those already ran on it. Its body passes
/// the body callbacks either way.
fn reply_local(flow: &mut Flow, request_id: &str, before_response: bool) -> Response<Body> {
    let body = if before_response {
        let Some(local) = flow.take_local() else {
            return failure_reply(Failure::Stalled, request_id);
        };
        if let Err(f) = flow.response_headers(local.status, local.headers) {
            return failure_reply(f, request_id);
        }
        local.body
    } else {
        flow.take_replacement_body()
    };
    let headers = flow.response_header_map();
    let body = match flow.response_body(body, true) {
        Ok(b) => b,
        Err(f) => return failure_reply(f, request_id),
    };
    flow.finish();
    let status = headers
        .iter()
        .find(|(k, _)| k == ":status")
        .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse::<u16>().ok())
        .unwrap_or(500);
    let mut builder = Response::builder().status(status);
    for (name, value) in &headers {
        if name.starts_with(':') || name.eq_ignore_ascii_case("content-length") {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            builder = builder.header(n, v);
        }
    }
    builder
        .header("x-kong-request-id", request_id)
        .body(full(body))
        .unwrap_or_else(|_| failure_reply(Failure::Stalled, request_id))
}

#[allow(clippy::too_many_arguments)]
fn build_upstream(
    edge: &Edge,
    m: &Match<'_>,
    flow: &mut Flow,
    client: SocketAddr,
    local: Option<SocketAddr>,
    original_host: &str,
    original_path: &str,
    body: Vec<u8>,
    websocket: bool,
) -> Result<Request<Full<Bytes>>, String> {
    let ex = flow.exchange_mut();
    let pseudo = |name: &str| {
        ex.request_header(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_owned)
    };
    let method = pseudo(":method").unwrap_or_else(|| "GET".into());
    let path_and_query = pseudo(":path").unwrap_or_else(|| "/".into());
    let authority = pseudo(":authority").unwrap_or_else(|| original_host.to_owned());
    let service = m.service;
    let target = edge.resolve(&service.host);
    let uri = format!(
        "http://{target}:{}{}",
        service.port,
        m.upstream_path(&path_and_query)
    );
    let mut builder = Request::builder().method(method.as_str()).uri(uri);
    let mut forwarded_for = None;
    for (name, value) in &ex.request_headers {
        let n = name.as_str();
        if n.starts_with(':') || n == "host" || n == "content-length" {
            continue;
        }
        if HOP_BY_HOP.contains(&n) && !(websocket && (n == "upgrade" || n == "connection")) {
            continue;
        }
        if n == "x-forwarded-for" {
            forwarded_for = Some(String::from_utf8_lossy(value).into_owned());
            continue;
        }
        if n.starts_with("x-forwarded-") || n == "x-real-ip" {
            continue;
        }
        let n = HeaderName::from_bytes(n.as_bytes()).map_err(|e| format!("header {n}: {e}"))?;
        let v = HeaderValue::from_bytes(value).map_err(|e| format!("header {n}: {e}"))?;
        builder = builder.header(n, v);
    }
    let host_header = if m.route.preserve_host {
        authority
    } else if service.port == 80 {
        service.host.clone()
    } else {
        format!("{}:{}", service.host, service.port)
    };
    let ip = client.ip().to_string();
    let xff = match forwarded_for {
        Some(prior) => format!("{prior}, {ip}"),
        None => ip.clone(),
    };
    let port = local.map_or(0, |a| a.port());
    builder = builder
        .header(header::HOST, host_header)
        .header("x-forwarded-for", xff)
        .header("x-forwarded-proto", "http")
        .header(
            "x-forwarded-host",
            original_host.split(':').next().unwrap_or(""),
        )
        .header("x-forwarded-port", port.to_string())
        .header("x-forwarded-path", original_path)
        .header("x-real-ip", ip);
    if websocket {
        builder = builder
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket");
    }
    builder
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())
}

/// A WebSocket handshake on a connection of its own (it is never returned to the pool).
async fn send_upgrade(
    edge: &Edge,
    m: &Match<'_>,
    req: Request<Full<Bytes>>,
) -> Result<Response<Incoming>, String> {
    let target = format!("{}:{}", edge.resolve(&m.service.host), m.service.port);
    let connect = Duration::from_millis(m.service.connect_timeout_ms);
    let stream = tokio::time::timeout(connect, TcpStream::connect(&target))
        .await
        .map_err(|_| format!("connecting to {target} timed out"))?
        .map_err(|e| format!("connecting to {target}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    sender.send_request(req).await.map_err(|e| e.to_string())
}

/// Streams the upstream body through the chain's body callbacks, chunk by chunk, then the end of
/// stream; the filters' on_log runs when it ends or the client goes away.
fn pump(mut flow: Flow, mut upstream: Incoming, read_timeout: Duration) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, io::Error>>(4);
    tokio::spawn(async move {
        loop {
            // Like nginx's proxy_read_timeout: an upstream silent this long ends the response.
            let Ok(next) = tokio::time::timeout(read_timeout, upstream.frame()).await else {
                let _ = tx
                    .send(Err(io::Error::other("upstream read timed out")))
                    .await;
                break;
            };
            let (chunk, eos) = match next {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => (data.to_vec(), false),
                    Err(_) => continue, // trailers are not passed on
                },
                Some(Err(e)) => {
                    let _ = tx.send(Err(io::Error::other(e))).await;
                    break;
                }
                None => (Vec::new(), true),
            };
            match flow.response_body(chunk, eos) {
                Ok(out) if !out.is_empty() => {
                    if tx.send(Ok(Frame::data(Bytes::from(out)))).await.is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(_) => {
                    // The headers are gone already: all that is left is to cut the response.
                    let _ = tx.send(Err(io::Error::other("a filter trapped"))).await;
                    break;
                }
            }
            if eos {
                break;
            }
        }
        flow.finish();
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    StreamBody::new(stream).boxed()
}
