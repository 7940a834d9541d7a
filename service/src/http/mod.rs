//! HTTP: routes, extractors and middleware. Handlers parse, call one domain or auth function, and
//! shape the response; they hold no SQL.

mod demo;
mod idempotency;
mod json;
mod kyc;
mod liveness;
mod middleware;
mod ops;
mod token;
pub mod upload;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{get, post};

use crate::app::AppState;

/// The whole public API, with its middleware, ready to serve.
pub fn router(state: AppState) -> Router {
    let uploads = Router::new()
        .route("/ocr", post(kyc::ocr))
        .route("/face/verify", post(kyc::face_verify))
        .route("/verify", post(kyc::verify))
        .route_layer(axum::middleware::from_fn_with_state(
            state.settings.http.upload_body_limit,
            upload::infer_boundary,
        ))
        .layer(DefaultBodyLimit::max(state.settings.http.upload_body_limit));
    let kyc = Router::new()
        .route("/status/{id}", get(kyc::status))
        .route("/liveness/sessions", post(liveness::create_session))
        .merge(uploads)
        .route_layer(from_fn_with_state(state.clone(), middleware::authenticate));
    Router::new()
        .route("/api/v1/auth/token", post(token::issue))
        .nest("/api/v1/kyc", kyc)
        // Authenticated by the handler: a browser's ticket travels in the query, not a header.
        .route(liveness::WS_PATH, get(liveness::connect))
        .route("/.well-known/jwks.json", get(ops::jwks))
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .nest("/demo", demo::router())
        .route_layer(from_fn(middleware::tag_endpoint))
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(DefaultBodyLimit::max(state.settings.http.json_body_limit))
        .layer(from_fn_with_state(state.clone(), middleware::observe))
        .with_state(state)
}
