//! `POST /api/v1/auth/token`: JSON (as the seed sends) or form-encoded (as RFC 6749 says), with
//! client credentials in the body or in HTTP Basic.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::app::AppState;
use crate::auth::oauth::{self, BasicCredentials, OAuthErrorCode, TokenRequest};
use crate::error::AppError;

fn invalid_request(description: &'static str) -> AppError {
    AppError::OAuth {
        code: OAuthErrorCode::InvalidRequest,
        description,
    }
}

/// RFC 6749 section 2.3.1: `client_id:client_secret`, each form-urlencoded, in Basic.
fn basic_credentials(headers: &HeaderMap) -> Result<Option<BasicCredentials>, AppError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let bad = || invalid_request("the Authorization header is not valid HTTP Basic");
    let value = value.to_str().map_err(|_| bad())?;
    let Some((scheme, b64)) = value.split_once(' ') else {
        return Err(bad());
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(bad());
    }
    let decoded =
        String::from_utf8(STANDARD.decode(b64.trim()).map_err(|_| bad())?).map_err(|_| bad())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(bad)?;
    let unescape = |s: &str| -> Result<String, AppError> {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(&format!("v={s}")).map_err(|_| bad())?;
        Ok(pairs.into_iter().next().map(|(_, v)| v).unwrap_or_default())
    };
    Ok(Some(BasicCredentials {
        client_id: unescape(id)?,
        client_secret: unescape(secret)?,
    }))
}

fn parse_body(
    headers: &HeaderMap,
    body: &[u8],
    max_depth: usize,
) -> Result<TokenRequest, AppError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/json" => {
            super::json::check_depth(body, max_depth)?;
            serde_json::from_slice(body)
                .map_err(|_| invalid_request("the body is not a valid JSON token request"))
        }
        "application/x-www-form-urlencoded" => serde_urlencoded::from_bytes(body)
            .map_err(|_| invalid_request("the body is not a valid form token request")),
        _ => Err(AppError::UnsupportedMediaType {
            expected: "application/json or application/x-www-form-urlencoded",
        }),
    }
}

pub async fn issue(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AppError::PayloadTooLarge {
                limit: st.settings.http.json_body_limit,
            }
        } else {
            invalid_request("the request body could not be read")
        }
    })?;
    let request = parse_body(&headers, &body, st.settings.http.json_max_depth)?;
    let basic = basic_credentials(&headers)?;
    // PostgreSQL text cannot hold a NUL, so such an id names no client: it fails like an unknown
    // one here, instead of as a database error (500) at the look-up.
    let mut ids = request
        .client_id
        .iter()
        .chain(basic.iter().map(|b| &b.client_id));
    if ids.any(|id| id.contains('\0')) {
        let code = OAuthErrorCode::InvalidClient;
        st.metrics
            .token_errors_total
            .with_label_values(&[code.as_str()])
            .inc();
        return Err(AppError::OAuth {
            code,
            description: "client authentication failed",
        });
    }
    let result = oauth::token(&st.db, &st.tokens, request, basic).await;
    let (response, grant) = match result {
        Ok(ok) => ok,
        Err(e) => {
            if let oauth::GrantError::OAuth { code, .. } = &e {
                st.metrics
                    .token_errors_total
                    .with_label_values(&[code.as_str()])
                    .inc();
            }
            return Err(e.into());
        }
    };
    st.metrics
        .tokens_issued_total
        .with_label_values(&[grant])
        .inc();
    let mut resp = Json(response).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(resp)
}
