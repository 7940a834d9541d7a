//! The Admin API (Kong's :8001), in Kong's shapes: `GET /status`, the `services`, `routes` and
//! `filter-chains` collections and entities, `PATCH /filter-chains/{name|id}` (as in Kong with a
//! database: `enabled`, or a whole new `filters` array), `POST /config` (as in DB-less Kong: a new
//! declarative configuration, or, with an empty body, the file again) and `GET /metrics`.
//! Configuration changes are checked by running each changed filter's `on_configure` first, so a
//! config a filter refuses is a 400 naming the field, and the running configuration stays.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::Edge;
use crate::declarative::{Filter, RawFilter, filter_from_raw};

type Shared = State<Arc<Edge>>;

pub fn router(edge: Arc<Edge>, token: Option<String>) -> Router {
    let router = Router::new()
        .route("/", get(root))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/services", get(services))
        .route("/services/{key}", get(service))
        .route("/routes", get(routes))
        .route("/routes/{key}", get(route))
        .route("/filter-chains", get(chains))
        .route("/filter-chains/{key}", get(chain).patch(patch_chain))
        .route("/config", axum::routing::post(post_config))
        .fallback(|| async { error(StatusCode::NOT_FOUND, 0, "not found", "Not found") })
        .with_state(edge);
    match token {
        Some(token) => {
            let token: Arc<[u8]> = token.into_bytes().into();
            router.layer(axum::middleware::from_fn(move |req, next| {
                let token = Arc::clone(&token);
                require_token(token, req, next)
            }))
        }
        None => router,
    }
}

/// The header Kong Enterprise's RBAC reads the Admin API token from.
pub const TOKEN_HEADER: &str = "kong-admin-token";

/// Every request carries the token, or gets 401 (the body never repeats what was sent).
async fn require_token(
    token: Arc<[u8]>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let sent = req.headers().get(TOKEN_HEADER).map(|v| v.as_bytes());
    if sent.is_some_and(|s| constant_time_eq(s, &token)) {
        return next.run(req).await;
    }
    error(
        StatusCode::UNAUTHORIZED,
        0,
        "unauthorized",
        "Invalid credentials. Token or User credentials required",
    )
}

/// serde's messages quote the value they could not use (`invalid type: string "…", expected
/// …`); a misplaced secret would come back in the error. The value is left out, the rest kept.
fn redact_values(message: &str) -> String {
    const MARK: &str = "string \"";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(MARK) {
        out.push_str(&rest[..at + MARK.len()]);
        let value = &rest[at + MARK.len()..];
        let mut escaped = false;
        let end = value
            .char_indices()
            .find(|&(_, c)| {
                let end = c == '"' && !escaped;
                escaped = c == '\\' && !escaped;
                end
            })
            .map_or(value.len(), |(i, _)| i);
        out.push('…');
        rest = &value[end..];
    }
    out.push_str(rest);
    out
}

/// Compares without stopping at the first difference, so timing does not reveal a prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Kong's error bodies: `{"message"}` for a 404, with `code` and `name` for the others.
fn error(status: StatusCode, code: u32, name: &str, message: &str) -> Response {
    let mut body = json!({ "message": message });
    if code > 0 {
        body["code"] = json!(code);
        body["name"] = json!(name);
    }
    (status, Json(body)).into_response()
}

fn collection(data: Vec<Value>) -> Response {
    Json(json!({ "data": data, "next": Value::Null })).into_response()
}

async fn root(State(edge): Shared) -> Response {
    let mut filters: Vec<_> = edge.host().filter_names().into_iter().collect();
    filters.sort();
    Json(json!({
        "tagline": "Welcome to kyc-edge",
        "version": env!("CARGO_PKG_VERSION"),
        "lua_version": Value::Null,
        "configuration": {
            "database": "off",
            "wasm": true,
            "wasm_filters": filters,
            "proxy_wasm_shm_kv_zones": edge.shm.zone_names(),
            "workers": edge.workers.count(),
        },
    }))
    .into_response()
}

async fn status(State(edge): Shared) -> Response {
    let m = &edge.metrics;
    let accepted = m.connections_accepted.load(Ordering::Relaxed);
    let active = m.connections_active.get();
    Json(json!({
        "database": { "reachable": true },
        "server": {
            "connections_accepted": accepted,
            "connections_handled": accepted,
            "connections_active": active,
            "connections_reading": 0,
            "connections_writing": active,
            "connections_waiting": 0,
            "total_requests": m.total_requests.load(Ordering::Relaxed),
        },
        "configuration_hash": edge.plan().decl.hash,
    }))
    .into_response()
}

async fn metrics(State(edge): Shared) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        edge.metrics.render(),
    )
        .into_response()
}

async fn services(State(edge): Shared) -> Response {
    let plan = edge.plan();
    collection(
        plan.decl
            .services
            .iter()
            .map(|s| plan.decl.service_json(s))
            .collect(),
    )
}

async fn service(State(edge): Shared, Path(key): Path<String>) -> Response {
    let plan = edge.plan();
    match plan
        .decl
        .services
        .iter()
        .find(|s| s.name == key || s.id.to_string() == key)
    {
        Some(s) => Json(plan.decl.service_json(s)).into_response(),
        None => error(StatusCode::NOT_FOUND, 0, "not found", "Not found"),
    }
}

async fn routes(State(edge): Shared) -> Response {
    let plan = edge.plan();
    collection(
        plan.decl
            .routes
            .iter()
            .map(|r| plan.decl.route_json(r))
            .collect(),
    )
}

async fn route(State(edge): Shared, Path(key): Path<String>) -> Response {
    let plan = edge.plan();
    let found = plan
        .decl
        .routes
        .iter()
        .find(|r| r.name.as_deref() == Some(key.as_str()) || r.id.to_string() == key);
    match found {
        Some(r) => Json(plan.decl.route_json(r)).into_response(),
        None => error(StatusCode::NOT_FOUND, 0, "not found", "Not found"),
    }
}

async fn chains(State(edge): Shared) -> Response {
    let plan = edge.plan();
    collection(
        plan.decl
            .filter_chains
            .iter()
            .map(|c| plan.decl.chain_json(c))
            .collect(),
    )
}

async fn chain(State(edge): Shared, Path(key): Path<String>) -> Response {
    let plan = edge.plan();
    match plan.decl.chain_index(&key) {
        Some(i) => Json(plan.decl.chain_json(&plan.decl.filter_chains[i])).into_response(),
        None => error(StatusCode::NOT_FOUND, 0, "not found", "Not found"),
    }
}

/// Kong's schema-violation reply.
fn violation(message: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        2,
        "schema violation",
        &format!("schema violation ({message})"),
    )
}

async fn patch_chain(State(edge): Shared, Path(key): Path<String>, body: Bytes) -> Response {
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            5,
            "invalid body",
            "Cannot parse JSON body",
        );
    };
    let _guard = edge.config_lock.lock().await;
    let plan = edge.plan();
    let Some(index) = plan.decl.chain_index(&key) else {
        return error(StatusCode::NOT_FOUND, 0, "not found", "Not found");
    };
    let mut decl = plan.decl.clone();
    let chain = &mut decl.filter_chains[index];
    for (field, value) in fields {
        match field.as_str() {
            "enabled" => match value.as_bool() {
                Some(b) => chain.enabled = b,
                None => return violation("enabled: expected a boolean"),
            },
            "filters" => {
                let raw: Vec<RawFilter> = match serde_json::from_value(value) {
                    Ok(r) => r,
                    Err(e) => return violation(&redact_values(&format!("filters: {e}"))),
                };
                if raw.is_empty() {
                    return violation("filters: length must be at least 1");
                }
                let loaded = edge.host().filter_names();
                let filters: Result<Vec<Filter>, _> = raw
                    .into_iter()
                    .map(|f| filter_from_raw(f, &loaded))
                    .collect();
                match filters {
                    Ok(f) => chain.filters = f,
                    Err(e) => return violation(&redact_values(&format!("{e:#}"))),
                }
            }
            "tags" => chain.tags = serde_json::from_value(value).unwrap_or_default(),
            "name" | "id" | "route" | "service" => {
                return violation(&format!("{field}: cannot be changed by the edge"));
            }
            other => return violation(&format!("{other}: unknown field")),
        }
    }
    let changed = decl.filter_chains[index].clone();
    for (i, f) in changed
        .filters
        .iter()
        .enumerate()
        .filter(|(_, f)| f.enabled)
    {
        if let Err(why) = edge.host().validate(&f.name, &f.config_bytes()) {
            return violation(&format!("filters.{}.config: {why}", i + 1));
        }
    }
    if let Err(e) = edge.install(decl) {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            0,
            "internal",
            &format!("{e:#}"),
        );
    }
    tracing::info!(chain = %key, enabled = changed.enabled, "filter chain updated through the Admin API");
    Json(edge.plan().decl.chain_json(&changed)).into_response()
}

/// Kong's DB-less `POST /config`: the body is the declarative configuration (YAML or JSON), or
/// `{"config": "<text>"}`; an empty body reloads the file the edge started with. Shared data is
/// wiped, as a reload wipes Kong's `shm_kv` zones.
async fn post_config(State(edge): Shared, headers: HeaderMap, body: Bytes) -> Response {
    let _guard = edge.config_lock.lock().await;
    let _ = headers;
    let text = if body.iter().all(u8::is_ascii_whitespace) {
        match std::fs::read_to_string(&edge.declarative_path) {
            Ok(t) => t,
            Err(e) => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    0,
                    "internal",
                    &format!("reading {}: {e}", edge.declarative_path.display()),
                );
            }
        }
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(o)) if o.get("config").is_some_and(Value::is_string) => {
                o["config"].as_str().unwrap_or_default().to_owned()
            }
            _ => String::from_utf8_lossy(&body).into_owned(),
        }
    };
    let invalid = |message: String| {
        error(
            StatusCode::BAD_REQUEST,
            14,
            "invalid declarative configuration",
            &message,
        )
    };
    let decl = match edge.parse(&text) {
        Ok(d) => d,
        Err(e) => return invalid(redact_values(&format!("{e:#}"))),
    };
    if let Err(why) = edge.check_configs(&decl) {
        return invalid(why);
    }
    let summary = json!({
        "configuration_hash": decl.hash,
        "services": decl.services.len(),
        "routes": decl.routes.len(),
        "filter_chains": decl.filter_chains.len(),
    });
    // Wiped first, so no request of the new configuration sees state of the old one.
    edge.shm.clear();
    if let Err(e) = edge.install(decl) {
        return invalid(format!("{e:#}"));
    }
    tracing::info!("configuration reloaded through the Admin API");
    (StatusCode::CREATED, Json(summary)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_values_are_left_out_of_error_messages() {
        assert_eq!(
            redact_values(
                r#"filters: invalid type: string "s3cr\"et", expected a boolean at line 1"#
            ),
            r#"filters: invalid type: string "…", expected a boolean at line 1"#
        );
        assert_eq!(redact_values("no string here"), "no string here");
        assert_eq!(
            redact_values(r#"a string "x" and string "y"#),
            r#"a string "…" and string "…"#
        );
    }
}
