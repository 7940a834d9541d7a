//! The liveness demo page (`web/`, built into `web/dist` by `scripts/build-web.sh`): `/demo/liveness`
//! and its few static files, served as they are. It owns no API; the page talks to the liveness
//! endpoints like any client.
//!
//! The directory is `KYC_WEB_DIR`, else `web/dist` under the working directory, else the source
//! tree's `web/dist` (so the tests, which run from a crate's folder, find it).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::Path as UrlPath;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::app::AppState;
use crate::error::{AppError, current_request_id};

/// The files the page is made of, and their media types. Nothing else is served.
const FILES: &[(&str, &str)] = &[
    ("liveness.html", "text/html; charset=utf-8"),
    ("liveness.js", "text/javascript; charset=utf-8"),
    ("liveness.css", "text/css; charset=utf-8"),
    ("quality.js", "text/javascript; charset=utf-8"),
    ("quality_bg.wasm", "application/wasm"),
];

/// `/liveness` (the page) and `/{file}` (its assets), to be nested at `/demo`.
pub fn router() -> Router<AppState> {
    let dir = Arc::new(web_dir());
    let page_dir = dir.clone();
    Router::new()
        .route(
            "/liveness",
            get(move || async move { serve(&page_dir, "liveness.html").await }),
        )
        .route(
            "/{file}",
            get(move |UrlPath(file): UrlPath<String>| async move { serve(&dir, &file).await }),
        )
}

fn web_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KYC_WEB_DIR") {
        return PathBuf::from(dir);
    }
    let here = PathBuf::from("web/dist");
    if here.join("liveness.html").is_file() {
        return here;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/dist")
}

async fn serve(dir: &Path, name: &str) -> Response {
    let Some((name, media_type)) = FILES.iter().find(|(f, _)| *f == name) else {
        return AppError::RouteNotFound.into_response();
    };
    match tokio::fs::read(dir.join(name)).await {
        Ok(bytes) => {
            let mut resp = bytes.into_response();
            let h = resp.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(media_type));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            h.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            resp
        }
        Err(e) => {
            tracing::warn!(dir = %dir.display(), file = name, error = %e, "demo page not built");
            not_built()
        }
    }
}

/// The project's error body, with a code of its own: the page exists in the source, not in this
/// deployment.
fn not_built() -> Response {
    let body = json!({
        "success": false,
        "error": {
            "code": "DEMO_NOT_BUILT",
            "message": "the liveness demo page is not built: run scripts/build-web.sh, \
                        or point KYC_WEB_DIR at the built web/dist",
        },
        "request_id": current_request_id(),
    });
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}
