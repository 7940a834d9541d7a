//! Operational endpoints: `/health` (alive), `/ready` (PostgreSQL, migrations, Redis), `/metrics`,
//! the JWKS, and the JSON answers for unknown routes and methods.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::app::AppState;
use crate::error::AppError;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn health(State(st): State<AppState>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "service": "kyc-service",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": st.started.elapsed().as_secs(),
    }))
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

/// 200 `ready` when everything is up; 200 `degraded` when only Redis is down and rate limiting
/// fails open (the service still serves correctly); 503 `not_ready` otherwise.
pub async fn ready(State(st): State<AppState>) -> Response {
    let (db, redis) = tokio::join!(
        tokio::time::timeout(CHECK_TIMEOUT, crate::store::health(&st.db)),
        tokio::time::timeout(CHECK_TIMEOUT, st.redis.ping()),
    );
    let (pg_check, migrations_check, db_ok) = match db {
        Ok(Ok(h)) => {
            let migrated = h.applied_version == Some(h.expected_version);
            (
                json!({ "status": "up", "latency_ms": ms(h.latency) }),
                json!({ "status": if migrated { "up" } else { "pending" }, "applied": h.applied_version, "expected": h.expected_version }),
                migrated,
            )
        }
        Ok(Err(e)) => (
            {
                tracing::warn!(error = %e, "readiness check failed");
                json!({ "status": "down", "error": "unreachable" })
            },
            json!({ "status": "unknown" }),
            false,
        ),
        Err(_) => (
            json!({ "status": "down", "error": "timed out" }),
            json!({ "status": "unknown" }),
            false,
        ),
    };
    let (redis_check, redis_ok) = match redis {
        Ok(Ok(latency)) => (json!({ "status": "up", "latency_ms": ms(latency) }), true),
        Ok(Err(e)) => (
            {
                tracing::warn!(error = %e, "readiness check failed");
                json!({ "status": "down", "error": "unreachable" })
            },
            false,
        ),
        Err(_) => (json!({ "status": "down", "error": "timed out" }), false),
    };
    if !redis_ok {
        st.metrics
            .redis_unavailable_total
            .with_label_values(&["ready"])
            .inc();
    }
    let fail_open = st.settings.security.rate_limit_fail_open;
    let (code, status) = match (db_ok, redis_ok) {
        (true, true) => (StatusCode::OK, "ready"),
        (true, false) if fail_open => (StatusCode::OK, "degraded"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
    };
    let body = json!({
        "status": status,
        "checks": { "postgres": pg_check, "migrations": migrations_check, "redis": redis_check },
    });
    let mut resp = (code, Json(body)).into_response();
    if code != StatusCode::OK {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
    }
    resp
}

pub async fn metrics(State(st): State<AppState>) -> Response {
    let m = &st.metrics;
    let idle = i64::try_from(st.db.num_idle()).unwrap_or(i64::MAX);
    let size = i64::from(st.db.size());
    m.db_pool_connections.with_label_values(&["idle"]).set(idle);
    m.db_pool_connections
        .with_label_values(&["in_use"])
        .set(size - idle);
    m.db_pool_connections
        .with_label_values(&["max"])
        .set(i64::from(st.settings.database.max_connections));
    let (in_use, available, max) = st.redis.pool_status();
    m.redis_pool_connections
        .with_label_values(&["in_use"])
        .set(i64::try_from(in_use).unwrap_or(0));
    m.redis_pool_connections
        .with_label_values(&["idle"])
        .set(i64::try_from(available).unwrap_or(0));
    m.redis_pool_connections
        .with_label_values(&["max"])
        .set(i64::try_from(max).unwrap_or(0));
    st.refresh_circuit_gauges();
    let log_errors =
        crate::telemetry::logfile::WRITE_ERRORS.load(std::sync::atomic::Ordering::Relaxed);
    m.log_write_errors_total
        .inc_by(log_errors.saturating_sub(m.log_write_errors_total.get()));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        m.render(),
    )
        .into_response()
}

pub async fn jwks(State(st): State<AppState>) -> Response {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(st.tokens.jwks().clone()),
    )
        .into_response()
}

pub async fn not_found() -> AppError {
    AppError::RouteNotFound
}

pub async fn method_not_allowed() -> AppError {
    AppError::MethodNotAllowed
}

/// The public API's OpenAPI 3.0 document (`docs/openapi.json`, embedded at build time).
pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("../../../docs/openapi.json"),
    )
        .into_response()
}
