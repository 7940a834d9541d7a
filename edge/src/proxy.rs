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
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Body as _, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

use crate::Edge;
use crate::guard::{Guarded, HeadLimits};
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
    let limits = edge.limits.clone();
    let head_limits = HeadLimits::from(&limits);
    let slots = Arc::new(tokio::sync::Semaphore::new(
        limits
            .worker_connections
            .saturating_mul(edge.workers.count())
            .min(tokio::sync::Semaphore::MAX_PERMITS),
    ));
    loop {
        let (stream, client) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            // nginx closes connections beyond worker_connections; the edge says why first.
            tokio::spawn(refuse_connection(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().ok();
        let edge = Arc::clone(&edge);
        let worker = edge.next_worker.fetch_add(1, Ordering::Relaxed) % edge.workers.count();
        edge.metrics
            .connections_accepted
            .fetch_add(1, Ordering::Relaxed);
        edge.metrics.connections_active.inc();
        let header_timeout = limits.header_timeout;
        tokio::spawn(async move {
            let service = service_fn(|req: Request<Incoming>| {
                let edge = Arc::clone(&edge);
                // A refused upgrade closes the connection: the head guard stopped reading the
                // stream when it saw the upgrade asked for.
                let upgrade = req.headers().contains_key(header::UPGRADE)
                    || *req.method() == http::Method::CONNECT;
                async move {
                    let mut resp = handle(&edge, worker, client, local, req).await;
                    if upgrade && resp.status() != StatusCode::SWITCHING_PROTOCOLS {
                        resp.headers_mut()
                            .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    }
                    Ok::<_, Infallible>(resp)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                // nginx's client_header_timeout.
                .header_read_timeout(header_timeout)
                // The guard enforces the head limits first, with a JSON error; these are hyper's
                // own, kept above them (its read buffer also carries bodies: never below its
                // default, 8 KiB + 100 × 4 KiB).
                .max_buf_size(
                    head_limits
                        .max_head
                        .saturating_mul(2)
                        .max(8192 + 4096 * 100),
                )
                .max_headers(head_limits.max_headers + 1)
                .keep_alive(true)
                .serve_connection(TokioIo::new(Guarded::new(stream, head_limits)), service)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!("connection from {client}: {e}");
            }
            edge.metrics.connections_active.dec();
            drop(slot);
        });
    }
}

/// A connection over the limit: a 503 and close.
async fn refuse_connection(mut stream: TcpStream) {
    use tokio::io::AsyncWriteExt as _;
    let body = json!({
        "message": "The gateway is at its connection limit",
        "code": "TOO_MANY_CONNECTIONS",
    })
    .to_string();
    let resp = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json; charset=utf-8\r\n\
         content-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(resp.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Kong's own error replies: JSON with a message and the request id.
pub fn kong_error(status: StatusCode, message: &str, request_id: &str) -> Response<Body> {
    let body = json!({ "message": message, "request_id": request_id }).to_string();
    error_response(status, body, request_id)
}

/// The edge's refusals of bad input: Kong's shape plus a stable `code`. The message names the
/// rule broken, never the value sent.
pub fn edge_error(
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: &str,
) -> Response<Body> {
    let body = json!({ "message": message, "code": code, "request_id": request_id }).to_string();
    error_response(status, body, request_id)
}

fn error_response(status: StatusCode, body: String, request_id: &str) -> Response<Body> {
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

/// Responses up to this size, with a `Content-Length`, are read whole and passed to the body
/// callbacks in one call with end of stream, as nginx does when the whole body is in one buffer;
/// the client then gets it in one write. Longer or unsized bodies stream chunk by chunk.
const WHOLE_BODY_LIMIT: u64 = 64 * 1024;

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
    // The path as the client wrote it (the access log, X-Forwarded-Path, as Kong) and the one
    // normalised form everything else uses: the router, the filters' :path, the upstream.
    let raw_path = req.uri().path().to_owned();
    let raw_path_and_query = req
        .uri()
        .path_and_query()
        .map_or_else(|| raw_path.clone(), |pq| pq.as_str().to_owned());
    // The client address: the peer, or from real_ip_header when the peer is a trusted proxy.
    let peer = client;
    let peer_trusted = edge.client_address.is_trusted(client.ip());
    let client = if peer_trusted {
        SocketAddr::new(
            real_ip(&edge.client_address, client.ip(), req.headers()),
            client.port(),
        )
    } else {
        client
    };
    let mut labels = Labels {
        service: String::new(),
        route: String::new(),
        client,
        method: req.method().clone(),
        agent: req.headers().get(header::USER_AGENT).cloned(),
        referer: req.headers().get(header::REFERER).cloned(),
        path_and_query: &raw_path_and_query,
        request_id: &request_id,
    };
    // An already normal path (the usual case) is used as it is, without a copy.
    let normalized = match crate::path::normalize(&raw_path) {
        Ok(std::borrow::Cow::Borrowed(_)) => None,
        Ok(std::borrow::Cow::Owned(p)) => {
            let pq = match req.uri().query() {
                Some(q) => format!("{p}?{q}"),
                None => p.clone(),
            };
            Some((p, pq))
        }
        Err(e) => {
            edge.record(&labels, 400, false, started, None);
            return edge_error(StatusCode::BAD_REQUEST, e.code(), e.message(), &request_id);
        }
    };
    let (path, path_and_query) = normalized.as_ref().map_or(
        (raw_path.as_str(), raw_path_and_query.as_str()),
        |(p, pq)| (p.as_str(), pq.as_str()),
    );
    // Identity comes only from the filters: whatever a client sent under those names goes,
    // on every route, before any filter runs.
    for name in IDENTITY_HEADERS {
        if req.headers().contains_key(name) {
            req.headers_mut().remove(name);
        }
    }
    let Some(m) = plan.route(req.method().as_str(), &host, path) else {
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
    let filtered = !m.steps.is_empty();
    let has_body = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() != "0")
        || req.headers().contains_key(header::TRANSFER_ENCODING);
    let (parts, incoming) = req.into_parts();

    // The request as the filters see it: pseudo-headers first, then what the client sent. A
    // route without filters skips this copy and forwards the parsed headers as they are.
    let mut headers: Vec<Header> = Vec::new();
    if filtered {
        headers.reserve(parts.headers.len() + 5);
        headers.push((":method".into(), parts.method.as_str().as_bytes().to_vec()));
        headers.push((":path".into(), path_and_query.as_bytes().to_vec()));
        headers.push((":authority".into(), host.clone().into_bytes()));
        headers.push((":scheme".into(), b"http".to_vec()));
        for (name, value) in &parts.headers {
            headers.push((name.as_str().to_owned(), value.as_bytes().to_vec()));
        }
        // As Kong with the correlation-id plugin (declarative/kong.yaml configures it): a
        // client's X-Request-Id is kept, and one is added when there is none, for the filters
        // and the service.
        if !parts.headers.contains_key("x-request-id") {
            headers.push(("x-request-id".into(), request_id.clone().into_bytes()));
        }
    }
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
    let mut body = Bytes::new();
    if has_body {
        match read_body(incoming, edge.max_body_bytes, edge.limits.body_timeout).await {
            Ok(bytes) => body = bytes,
            Err(BodyError::TooLarge) => {
                edge.record(&labels, 413, false, started, None);
                return kong_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "Request size limit exceeded",
                    &request_id,
                );
            }
            Err(BodyError::Timeout) => {
                edge.record(&labels, 408, false, started, None);
                let mut resp = edge_error(
                    StatusCode::REQUEST_TIMEOUT,
                    "BODY_TIMEOUT",
                    "The request body was not received in time",
                    &request_id,
                );
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                return resp;
            }
            Err(BodyError::Broken) => {
                edge.record(&labels, 400, false, started, None);
                return kong_error(StatusCode::BAD_REQUEST, "Bad request", &request_id);
            }
        }
        if filtered {
            match flow.request_body(body.to_vec()) {
                Err(f) => fail!(f),
                Ok(Outcome::Respond) => local_reply!(true),
                Ok(Outcome::Continue) => body = Bytes::from(flow.take_body()),
            }
        }
    }

    let forwarded = Forwarded {
        client,
        peer,
        peer_trusted,
        local,
        original_host: &host,
        original_path: &raw_path,
        websocket,
    };
    let built = if filtered {
        upstream_from_filters(edge, &m, &mut flow, &forwarded, body)
    } else {
        let target = UpstreamTarget {
            method: parts.method.as_str(),
            path_and_query,
            authority: &host,
        };
        let mut headers = parts.headers;
        if !headers.contains_key("x-request-id")
            && let Ok(v) = HeaderValue::from_str(&request_id)
        {
            headers.insert("x-request-id", v);
        }
        let pairs = headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes()));
        build_upstream(edge, &m, &target, pairs, &forwarded, body)
    };
    let upstream_req = match built {
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
            return bad_gateway(&request_id);
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
    let (mut parts, upstream_body) = upstream_resp.into_parts();
    let mut upstream_body = Some(upstream_body);
    let upgrade = upstream_upgrade.is_some();
    let mut status = parts.status.as_u16();
    let mut builder = Response::builder();
    // A small sized body, read whole for the filters (see WHOLE_BODY_LIMIT).
    let mut whole: Option<Vec<u8>> = None;
    if filtered {
        let mut resp_headers: Vec<Header> = Vec::with_capacity(parts.headers.len());
        for (name, value) in &parts.headers {
            if forwarded_response_header(name.as_str(), upgrade) {
                resp_headers.push((name.as_str().to_owned(), value.as_bytes().to_vec()));
            }
        }
        match flow.response_headers(status, resp_headers) {
            Err(f) => fail!(f),
            // A local response made here replaces the upstream's status and body.
            Ok(Outcome::Respond) => local_reply!(false),
            Ok(Outcome::Continue) => {}
        }
        let resp_headers = flow.response_header_map();
        if let Some(s) = resp_headers
            .iter()
            .find(|(k, _)| k == ":status")
            .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse().ok())
        {
            status = s;
        }
        let sized = upstream_body
            .as_ref()
            .and_then(|b| b.size_hint().exact())
            .filter(|n| (1..=WHOLE_BODY_LIMIT).contains(n) && labels.method != http::Method::HEAD);
        for (name, value) in &resp_headers {
            // The body callbacks may change the body: a whole body gets its new length below.
            if name.starts_with(':') || (sized.is_some() && name == "content-length") {
                continue;
            }
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(value),
            ) {
                builder = builder.header(n, v);
            }
        }
        if upgrade {
            // The tunnel below: no body.
        } else if sized.is_some()
            && let Some(b) = upstream_body.take()
        {
            let read = tokio::time::timeout(read_timeout, b.collect()).await;
            let Ok(Ok(collected)) = read else {
                tracing::warn!(service = %m.service.name, "reading the upstream body failed");
                edge.record(&labels, 502, false, started, None);
                return bad_gateway(&request_id);
            };
            match flow.response_body(collected.to_bytes().to_vec(), true) {
                Ok(out) => whole = Some(out),
                Err(f) => fail!(f),
            }
            flow.finish();
        } else if let Some(b) = upstream_body.take() {
            let body = pump(flow, b, read_timeout);
            return finish_response(
                edge,
                &labels,
                builder,
                status,
                body,
                started,
                upstream_time,
                &request_id,
            );
        }
    } else {
        for name in HOP_BY_HOP {
            if !forwarded_response_header(name, upgrade) {
                parts.headers.remove(*name);
            }
        }
        if let Some(h) = builder.headers_mut() {
            *h = parts.headers;
        }
    }

    if let (Some(client_up), Some(upstream_up)) = (client_upgrade, upstream_upgrade) {
        // After the upgrade, frames are tunnelled raw: no body callbacks (as in nginx), and the
        // filters' on_log runs when the tunnel closes.
        let limits = crate::websocket::FrameLimits {
            max_frame: edge.limits.ws_max_frame,
            max_message: edge.limits.ws_max_message,
        };
        tokio::spawn(async move {
            if let (Ok(c), Ok(u)) = (client_up.await, upstream_up.await) {
                crate::websocket::tunnel(TokioIo::new(c), TokioIo::new(u), limits).await;
            }
            drop(flow);
        });
        return finish_response(
            edge,
            &labels,
            builder,
            status,
            full(Vec::new()),
            started,
            upstream_time,
            &request_id,
        );
    }
    let body = match whole {
        Some(bytes) => full(bytes),
        None => {
            drop(flow);
            upstream_body.map_or_else(|| full(Vec::new()), |b| b.map_err(io::Error::other).boxed())
        }
    };
    finish_response(
        edge,
        &labels,
        builder,
        status,
        body,
        started,
        upstream_time,
        &request_id,
    )
}

fn bad_gateway(request_id: &str) -> Response<Body> {
    kong_error(
        StatusCode::BAD_GATEWAY,
        "An invalid response was received from the upstream server",
        request_id,
    )
}

/// Kong's latency and request-id headers on a proxied response, and its metrics.
#[allow(clippy::too_many_arguments)]
fn finish_response(
    edge: &Edge,
    labels: &Labels<'_>,
    builder: http::response::Builder,
    status: u16,
    body: Body,
    started: Instant,
    upstream_time: Duration,
    request_id: &str,
) -> Response<Body> {
    let proxy_ms = started.elapsed().saturating_sub(upstream_time).as_millis();
    let builder = builder
        .status(status)
        .header(header::VIA, "1.1 kyc-edge")
        .header(
            "x-kong-upstream-latency",
            upstream_time.as_millis().to_string(),
        )
        .header("x-kong-proxy-latency", proxy_ms.to_string())
        .header("x-kong-request-id", request_id);
    edge.record(labels, status, true, started, Some(upstream_time));
    builder
        .body(body)
        .unwrap_or_else(|_| failure_reply(Failure::Stalled, request_id))
}

/// Whether a response header goes on to the client: not a hop-by-hop one, except the upgrade
/// pair of a 101.
fn forwarded_response_header(name: &str, upgrade: bool) -> bool {
    !HOP_BY_HOP.contains(&name) || (upgrade && (name == "upgrade" || name == "connection"))
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

/// Where a request goes upstream, as the filters left it (or as the client sent it).
struct UpstreamTarget<'a> {
    method: &'a str,
    path_and_query: &'a str,
    authority: &'a str,
}

/// What the forwarding headers say about the client's request.
struct Forwarded<'a> {
    /// The client address (the peer's, or the real IP a trusted proxy gave).
    client: SocketAddr,
    /// The connection's peer.
    peer: SocketAddr,
    /// The peer is in `trusted_ips`: its X-Forwarded-{Proto,Host,Port,Path} are kept (as Kong).
    peer_trusted: bool,
    local: Option<SocketAddr>,
    original_host: &'a str,
    original_path: &'a str,
    websocket: bool,
}

/// The upstream request from the exchange the filters worked on (pseudo-headers included).
fn upstream_from_filters(
    edge: &Edge,
    m: &Match<'_>,
    flow: &mut Flow,
    fwd: &Forwarded<'_>,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, String> {
    let ex = flow.exchange_mut();
    let pseudo = |name: &str| {
        ex.request_header(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_owned)
    };
    let method = pseudo(":method").unwrap_or_else(|| "GET".into());
    let path_and_query = pseudo(":path").unwrap_or_else(|| "/".into());
    let authority = pseudo(":authority").unwrap_or_else(|| fwd.original_host.to_owned());
    let target = UpstreamTarget {
        method: &method,
        path_and_query: &path_and_query,
        authority: &authority,
    };
    let pairs = ex
        .request_headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()));
    build_upstream(edge, m, &target, pairs, fwd, body)
}

fn build_upstream<'h>(
    edge: &Edge,
    m: &Match<'_>,
    target: &UpstreamTarget<'_>,
    headers: impl Iterator<Item = (&'h str, &'h [u8])>,
    fwd: &Forwarded<'_>,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, String> {
    let service = m.service;
    let uri = format!(
        "http://{}:{}{}",
        edge.resolve(&service.host),
        service.port,
        m.upstream_path(target.path_and_query)
    );
    let mut builder = Request::builder().method(target.method).uri(uri);
    let mut forwarded_for = None;
    // From a trusted proxy: its X-Forwarded-Proto, -Host, -Port and -Path, in that order.
    let mut from_proxy: [Option<&'h [u8]>; 4] = [None; 4];
    for (n, value) in headers {
        if n.starts_with(':') || n == "host" || n == "content-length" {
            continue;
        }
        if HOP_BY_HOP.contains(&n) && !(fwd.websocket && (n == "upgrade" || n == "connection")) {
            continue;
        }
        if n == "x-forwarded-for" {
            forwarded_for = Some(String::from_utf8_lossy(value).into_owned());
            continue;
        }
        if n.starts_with("x-forwarded-") || n == "x-real-ip" {
            if fwd.peer_trusted {
                let slot = match n {
                    "x-forwarded-proto" => Some(0),
                    "x-forwarded-host" => Some(1),
                    "x-forwarded-port" => Some(2),
                    "x-forwarded-path" => Some(3),
                    _ => None,
                };
                if let Some(i) = slot {
                    from_proxy[i] = Some(value);
                }
            }
            continue;
        }
        let n = HeaderName::from_bytes(n.as_bytes()).map_err(|e| format!("header {n}: {e}"))?;
        let v = HeaderValue::from_bytes(value).map_err(|e| format!("header {n}: {e}"))?;
        builder = builder.header(n, v);
    }
    let host_header = if m.route.preserve_host {
        target.authority.to_owned()
    } else if service.port == 80 {
        service.host.clone()
    } else {
        format!("{}:{}", service.host, service.port)
    };
    // As Kong: a client's X-Forwarded-For gets the connection's peer appended; without one it is
    // the client address. X-Real-IP is the client address (nginx's $remote_addr after realip).
    let ip = fwd.client.ip().to_string();
    let xff = match forwarded_for {
        Some(prior) => format!("{prior}, {}", fwd.peer.ip()),
        None => ip.clone(),
    };
    let port = fwd.local.map_or(0, |a| a.port()).to_string();
    let own: [&[u8]; 4] = [
        b"http",
        fwd.original_host.split(':').next().unwrap_or("").as_bytes(),
        port.as_bytes(),
        fwd.original_path.as_bytes(),
    ];
    let pick = |i: usize| from_proxy[i].unwrap_or(own[i]);
    builder = builder
        .header(header::HOST, host_header)
        .header("x-forwarded-for", xff)
        .header("x-forwarded-proto", pick(0))
        .header("x-forwarded-host", pick(1))
        .header("x-forwarded-port", pick(2))
        .header("x-forwarded-path", pick(3))
        .header("x-real-ip", ip);
    if fwd.websocket {
        builder = builder
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket");
    }
    builder.body(Full::new(body)).map_err(|e| e.to_string())
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

/// Client-sent headers that would claim an identity or scopes: the names `kyc_jwt` removes and
/// sets (`kong-plugins/kyc_jwt`'s `IDENTITY_HEADERS`). The edge removes them on every route,
/// with or without that filter, so only a filter can put them on a request.
pub const IDENTITY_HEADERS: [&str; 7] = [
    "x-client-id",
    "x-consumer-id",
    "x-consumer-username",
    "x-authenticated-scope",
    "x-credential-identifier",
    "x-kyc-client-id",
    "x-kyc-scopes",
];

/// nginx's realip: the address in `real_ip_header` sent by a trusted peer. Not recursive, the
/// last address in the header; recursive, the last one that is not itself trusted (the first
/// when all are). A missing or unreadable header leaves the peer.
fn real_ip(
    ca: &crate::conf::ClientAddress,
    peer: std::net::IpAddr,
    headers: &http::HeaderMap,
) -> std::net::IpAddr {
    let mut addresses = headers
        .get_all(ca.real_ip_header.as_str())
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .rev();
    let parse = |a: &str| a.parse::<std::net::IpAddr>().ok();
    if !ca.real_ip_recursive {
        return addresses.next().and_then(parse).unwrap_or(peer);
    }
    let mut last = peer;
    for a in addresses {
        let Some(ip) = parse(a) else {
            return last;
        };
        last = ip;
        if !ca.is_trusted(ip) {
            return ip;
        }
    }
    last
}

enum BodyError {
    TooLarge,
    Timeout,
    Broken,
}

/// The whole request body, at most `limit` bytes, with at most `timeout` between two reads
/// (nginx's client_body_timeout).
async fn read_body(
    mut body: Incoming,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, BodyError> {
    let mut out: Option<Bytes> = None;
    let mut more: Vec<u8> = Vec::new();
    loop {
        let frame = match tokio::time::timeout(timeout, body.frame()).await {
            Err(_) => return Err(BodyError::Timeout),
            Ok(None) => break,
            Ok(Some(Err(_))) => return Err(BodyError::Broken),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let len = out.as_ref().map_or(0, Bytes::len) + more.len() + data.len();
        if len > limit {
            return Err(BodyError::TooLarge);
        }
        // One chunk (the usual case) is kept as it is; more are joined.
        match &out {
            None if more.is_empty() => out = Some(data),
            _ => {
                if let Some(first) = out.take() {
                    more.extend_from_slice(&first);
                }
                more.extend_from_slice(&data);
            }
        }
    }
    Ok(out.unwrap_or_else(|| Bytes::from(more)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stripped_identity_headers_are_the_ones_kyc_jwt_sets() {
        let jwt = include_str!("../../kong-plugins/kyc_jwt/src/lib.rs");
        assert!(
            jwt.contains(&format!(
                "IDENTITY_HEADERS: [&str; {}]",
                IDENTITY_HEADERS.len()
            )),
            "kyc_jwt's list changed size: update IDENTITY_HEADERS"
        );
        for name in IDENTITY_HEADERS {
            assert!(jwt.contains(&format!("\"{name}\"")), "{name}");
        }
    }

    #[test]
    fn the_real_ip_follows_nginx_realip() {
        use crate::conf::{ClientAddress, IpNet};
        let mut ca = ClientAddress {
            trusted_ips: vec![
                IpNet::parse("10.0.0.0/8").expect("net"),
                IpNet::parse("192.168.0.1").expect("ip"),
            ],
            real_ip_header: "x-forwarded-for".into(),
            real_ip_recursive: false,
        };
        let peer: std::net::IpAddr = "10.0.0.1".parse().expect("ip");
        let mut h = http::HeaderMap::new();
        h.append(
            "x-forwarded-for",
            HeaderValue::from_static("1.1.1.1, 2.2.2.2"),
        );
        h.append("x-forwarded-for", HeaderValue::from_static("192.168.0.1"));
        let ip = |ca: &ClientAddress, h: &http::HeaderMap| real_ip(ca, peer, h).to_string();
        // Not recursive: the last address, whoever it is.
        assert_eq!(ip(&ca, &h), "192.168.0.1");
        // Recursive: the last one that is not a trusted proxy.
        ca.real_ip_recursive = true;
        assert_eq!(ip(&ca, &h), "2.2.2.2");
        // All trusted: the first; no header or garbage: the peer.
        let mut all = http::HeaderMap::new();
        all.insert(
            "x-forwarded-for",
            HeaderValue::from_static("10.1.1.1, 10.2.2.2"),
        );
        assert_eq!(ip(&ca, &all), "10.1.1.1");
        assert_eq!(ip(&ca, &http::HeaderMap::new()), "10.0.0.1");
        let mut junk = http::HeaderMap::new();
        junk.insert("x-forwarded-for", HeaderValue::from_static("not-an-ip"));
        ca.real_ip_recursive = false;
        assert_eq!(ip(&ca, &junk), "10.0.0.1");
    }
}
