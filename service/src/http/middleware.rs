//! Request middleware: the request id, the timeout, metrics and the one log line per request
//! (`observe`); bearer-token verification and the per-client limit (`authenticate`).

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::auth::Caller;
use crate::error::{AppError, REQUEST_DEADLINE, REQUEST_ID};
use crate::store::redis::RateDecision;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The route template that served a response, for metrics labels.
#[derive(Clone)]
struct Endpoint(String);

/// The client a response was served to, for the request log line.
#[derive(Clone)]
struct ClientTag(String);

/// Copies the matched route template into the response (routing has run by now).
pub async fn tag_endpoint(path: MatchedPath, req: Request, next: Next) -> Response {
    let endpoint = Endpoint(path.as_str().to_owned());
    let mut resp = next.run(req).await;
    resp.extensions_mut().insert(endpoint);
    resp
}

/// A client-supplied id is kept when it is short and plain; otherwise a new one is made.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned)
}

pub async fn observe(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id(req.headers());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let timeout = st.settings.http.request_timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    let run = async move {
        match tokio::time::timeout_at(deadline, next.run(req)).await {
            Ok(resp) => resp,
            Err(_) => AppError::Timeout.into_response(),
        }
    };
    let mut resp = REQUEST_ID
        .scope(id.clone(), REQUEST_DEADLINE.scope(deadline, run))
        .await;
    let elapsed = started.elapsed();
    let endpoint = resp
        .extensions()
        .get::<Endpoint>()
        .map_or("unmatched", |e| e.0.as_str())
        .to_owned();
    let status = resp.status();
    st.metrics
        .http_requests_total
        .with_label_values(&[method.as_str(), &endpoint, status.as_str()])
        .inc();
    st.metrics
        .http_request_duration_seconds
        .with_label_values(&[method.as_str(), &endpoint])
        .observe(elapsed.as_secs_f64());
    let client_id = resp
        .extensions()
        .get::<ClientTag>()
        .map_or("-", |c| c.0.as_str());
    // The path is logged (masked by the log writer); the query string never is: it may hold a token.
    tracing::info!(
        target: "http",
        request_id = %id,
        client_id,
        method = %method,
        path = %path,
        endpoint = %endpoint,
        status = status.as_u16(),
        latency_ms = format_args!("{:.2}", elapsed.as_secs_f64() * 1000.0),
        "request"
    );
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(X_REQUEST_ID.clone(), v);
    }
    resp
}

/// The bearer token: 401 when there is no Authorization header, 400 when it is not `Bearer <token>`.
pub(crate) fn bearer(headers: &HeaderMap) -> Result<&str, AppError> {
    let v = headers
        .get(header::AUTHORIZATION)
        .ok_or(AppError::TokenMissing)?;
    let v = v.to_str().map_err(|_| AppError::TokenMalformed)?;
    let (scheme, token) = v.split_once(' ').ok_or(AppError::TokenMalformed)?;
    let token = token.trim();
    if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() {
        Ok(token)
    } else {
        Err(AppError::TokenMalformed)
    }
}

/// Verifies the bearer token (defence in depth behind the gateway), refuses disabled clients,
/// and applies the cluster-wide per-client limit kept in Redis.
pub async fn authenticate(
    State(st): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, AppError> {
    let token = bearer(req.headers())?;
    let (caller, headers) = admit(&st, token).await?;
    let client = ClientTag(caller.client_id.clone());
    req.extensions_mut().insert(caller);
    let mut resp = next.run(req).await;
    if let Some(h) = headers {
        resp.headers_mut().extend(h);
    }
    resp.extensions_mut().insert(client);
    Ok(resp)
}

/// The caller behind `token`, admitted by its client's state and rate limit; with the rate-limit
/// headers for the response (none when Redis was skipped).
///
/// # Errors
/// 401 for a bad token or a disabled client, 429 over the limit, 503 when the limit fails closed.
pub(crate) async fn admit(
    st: &AppState,
    token: &str,
) -> Result<(Caller, Option<HeaderMap>), AppError> {
    let caller: Caller = st
        .tokens
        .verify_access(token)
        .map_err(|_| AppError::TokenInvalid)?;
    if !st.active_clients.is_active(&st.db, &caller.client_id).await {
        return Err(AppError::TokenInvalid);
    }
    let sec = &st.settings.security;
    let decision = match st
        .redis
        .rate_limit(
            &caller.client_id,
            sec.rate_limit_per_second,
            sec.rate_limit_burst,
        )
        .await
    {
        Ok(d) => Some(d),
        Err(e) => {
            st.metrics
                .redis_unavailable_total
                .with_label_values(&["rate_limit"])
                .inc();
            tracing::warn!(error = %e, fail_open = sec.rate_limit_fail_open, "rate limit skipped: redis unavailable");
            if !sec.rate_limit_fail_open {
                return Err(AppError::Unavailable("rate limiting"));
            }
            None
        }
    };
    let headers = decision.map(|d| rate_headers(&d, sec.rate_limit_per_second));
    if let Some(d) = decision.filter(|d| !d.allowed) {
        st.metrics.rate_limit_rejections_total.inc();
        return Err(AppError::RateLimited {
            retry_after_secs: d.retry_after.as_secs_f64().ceil().max(1.0) as u64,
            headers: headers.unwrap_or_default(),
        });
    }
    Ok((caller, headers))
}

/// Marks a response with the client it served, for the request log line.
pub(crate) fn tag_client(resp: &mut Response, client_id: &str) {
    resp.extensions_mut()
        .insert(ClientTag(client_id.to_owned()));
}

/// The IETF draft's `RateLimit-Policy` / `RateLimit` fields and the `X-RateLimit-*` pair.
fn rate_headers(d: &RateDecision, rate: u32) -> HeaderMap {
    let reset = d.reset_after.as_secs_f64().ceil() as u64;
    let mut h = HeaderMap::new();
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(HeaderName::from_static(name), v);
        }
    };
    // The sustained quota is `rate` per second; bursts up to `burst` come on top, and `r`
    // (remaining) reflects them.
    put("ratelimit-policy", format!("\"client\";q={rate};w=1"));
    put(
        "ratelimit",
        format!("\"client\";r={};t={reset}", d.remaining),
    );
    put("x-ratelimit-limit", rate.to_string());
    put("x-ratelimit-remaining", d.remaining.to_string());
    h
}
