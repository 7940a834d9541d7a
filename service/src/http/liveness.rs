//! `/api/v1/kyc/liveness/*`: `POST sessions` (a session and its single-use ticket) and `GET ws`,
//! the WebSocket that runs it (`docs/liveness-protocol.md`). This module authenticates, refuses
//! before the upgrade, and carries the protocol of `kyc::liveness` over axum's WebSocket.

use std::time::Duration;

use async_trait::async_trait;
use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::ws::{
    CloseFrame, Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::idempotency;
use super::middleware::{admit, bearer, tag_client};
use crate::app::AppState;
use crate::auth::{Caller, Scope};
use crate::error::AppError;
use crate::kyc::liveness::{
    self, ActiveSession, Channel, Deps, Incoming, Limits, Refusal, SessionPolicy,
};

pub const SESSIONS_PATH: &str = "/api/v1/kyc/liveness/sessions";
pub const WS_PATH: &str = "/api/v1/kyc/liveness/ws";

/// A client that does not take a server message within this long is disconnected.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a close waits for the client's close in return.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// Bytes the server buffers for a client that is not reading; its messages are small and few.
const MAX_WRITE_BUFFER: usize = 64 * 1024;
/// tungstenite's read buffer, allocated and zero-filled on the first read of every connection
/// (128 KiB by default, which was the bulk of an idle socket's memory). A frame larger than
/// this still arrives whole: the buffer grows to the frame's declared length, bounded by
/// `max_frame_size`, and the bytes come in reads of this size.
const READ_BUFFER: usize = 8 * 1024;

fn policy(st: &AppState) -> SessionPolicy {
    let l = &st.settings.kyc.liveness;
    SessionPolicy {
        session_ttl: l.session_ttl,
        ticket_ttl: l.ticket_ttl,
        max_sessions: l.max_sessions,
        limits: Limits {
            max_frame_bytes: l.max_frame_bytes,
            max_fps: l.max_fps,
            min_frames: l.min_frames,
            max_frames: l.max_frames,
            action_timeout: l.action_timeout,
        },
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn body_invalid() -> AppError {
    AppError::BadRequest {
        code: "BODY_INVALID",
        message: "the body must be empty or a JSON object".into(),
    }
}

/// `POST /api/v1/kyc/liveness/sessions`: body `{}` or empty; 201 with the session, its challenge
/// and its ticket. `Idempotency-Key` works as on the other POST endpoints.
pub async fn create_session(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    if !caller.has(Scope::KycWrite) {
        return Err(AppError::InsufficientScope(Scope::KycWrite));
    }
    let key = idempotency::key(&headers)?;
    let body = body.map_err(|_| AppError::PayloadTooLarge {
        limit: st.settings.http.json_body_limit,
    })?;
    if !body.iter().all(u8::is_ascii_whitespace) {
        super::json::check_depth(&body, st.settings.http.json_max_depth)?;
        let v: Value = serde_json::from_slice(&body).map_err(|_| body_invalid())?;
        if !v.is_object() {
            return Err(body_invalid());
        }
    }
    let mut d = Sha256::new();
    d.update(b"POST\0");
    d.update(SESSIONS_PATH.as_bytes());
    d.update([0]);
    d.update(&body);
    let fingerprint = d.finalize().to_vec();
    let pol = policy(&st);
    let mut resp = idempotency::guard(&st, &caller.client_id, key, fingerprint, || async {
        let opened = liveness::open_session(
            st.liveness.as_ref(),
            st.tickets.as_ref(),
            &caller.client_id,
            &pol,
        )
        .await;
        let o = match opened {
            Ok(o) => o,
            Err(e) => return (AppError::from(e).into_response(), None),
        };
        let body = json!({
            "liveness_session_id": o.id,
            "ticket": o.ticket,
            "ticket_expires_in": o.ticket_ttl.as_secs_f64().ceil() as u64,
            "expires_at": o.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "challenge": {
                "nonce": o.nonce,
                "actions": o.actions,
                "action_timeout_ms": millis(pol.limits.action_timeout),
            },
            "ws_url": format!("{WS_PATH}?ticket={}", o.ticket),
        });
        ((StatusCode::CREATED, Json(body)).into_response(), None)
    })
    .await?;
    // The answer holds a credential, first time and on an idempotent replay alike.
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

#[derive(Debug, Default, Deserialize)]
pub struct ConnectParams {
    ticket: Option<String>,
    access_token: Option<String>,
    session_id: Option<String>,
}

/// `GET /api/v1/kyc/liveness/ws`: authenticated by `?ticket=`, or by a token (Authorization or
/// `?access_token=`) with `?session_id=` or a new session. Every refusal is an HTTP error before
/// the upgrade; the session is `active` (taken, once) before the upgrade is answered.
pub async fn connect(
    State(st): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<ConnectParams>, QueryRejection>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, AppError> {
    // Checked first, so that a plain GET cannot burn a ticket.
    let ws = ws.map_err(|_| AppError::UpgradeRequired)?;
    let Query(p) = params.map_err(|_| AppError::BadRequest {
        code: "QUERY_INVALID",
        message: "the query string is malformed".into(),
    })?;
    let token = if headers.contains_key(header::AUTHORIZATION) {
        Some(bearer(&headers)?)
    } else {
        p.access_token.as_deref().filter(|t| !t.is_empty())
    };
    let admitted = |caller: &Caller| {
        if caller.has(Scope::KycWrite) {
            Ok(())
        } else {
            Err(AppError::InsufficientScope(Scope::KycWrite))
        }
    };
    let pol = policy(&st);
    let mut rate_headers = None;
    let (client_id, session_id) = if let Some(ticket) = p.ticket.as_deref() {
        let (session_id, client_id) = liveness::redeem_ticket(st.tickets.as_ref(), ticket).await?;
        if let Some(token) = token {
            let (caller, h) = admit(&st, token).await?;
            admitted(&caller)?;
            if caller.client_id != client_id {
                return Err(AppError::Liveness(Refusal::SessionForeign));
            }
            rate_headers = h;
        } else if !st.active_clients.is_active(&st.db, &client_id).await {
            return Err(AppError::Liveness(Refusal::TicketInvalid));
        }
        (client_id, session_id)
    } else {
        let token = token.ok_or(AppError::TokenMissing)?;
        let (caller, h) = admit(&st, token).await?;
        admitted(&caller)?;
        rate_headers = h;
        let session_id = match p.session_id.as_deref() {
            Some(s) => Uuid::try_parse(s.trim())
                .map_err(|_| AppError::Liveness(Refusal::SessionNotFound))?,
            None => {
                liveness::create_session(st.liveness.as_ref(), &caller.client_id, &pol)
                    .await?
                    .id
            }
        };
        (caller.client_id, session_id)
    };
    let session = liveness::activate(st.liveness.as_ref(), &client_id, session_id).await?;

    let limits = pol.limits;
    let max = limits.max_message_bytes();
    let (failed_st, failed_session) = (st.clone(), session.clone());
    let mut resp = ws
        .max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .on_failed_upgrade(move |e| {
            tracing::warn!(session_id = %failed_session.id, error = %e, "liveness upgrade failed");
            let tasks = failed_st.tasks.clone();
            tasks.spawn(async move {
                let deps = deps(&failed_st);
                liveness::abandon(&deps, &failed_session).await;
            });
        })
        .on_upgrade(move |socket| async move {
            let tasks = st.tasks.clone();
            tasks
                .track_future(serve_socket(st, socket, session, limits))
                .await;
        });
    tag_client(&mut resp, &client_id);
    if let Some(h) = rate_headers {
        resp.headers_mut().extend(h);
    }
    Ok(resp)
}

fn deps(st: &AppState) -> Deps<'_> {
    Deps {
        requests: st.requests.as_ref(),
        sessions: st.liveness.as_ref(),
        vendors: st.vendors.as_ref(),
    }
}

/// Counts a connection in `liveness_sessions_active` for as long as it lives.
struct ActiveGauge(prometheus::IntGauge);

impl ActiveGauge {
    fn new(g: &prometheus::IntGauge) -> Self {
        g.inc();
        Self(g.clone())
    }
}

impl Drop for ActiveGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn serve_socket(st: AppState, socket: WebSocket, session: ActiveSession, limits: Limits) {
    let _active = ActiveGauge::new(&st.metrics.liveness_sessions_active);
    let mut ch = Socket { ws: socket };
    let ending = liveness::run(
        &deps(&st),
        &mut ch,
        &session,
        limits,
        st.shutdown.cancelled(),
    )
    .await;
    tracing::info!(
        target: "liveness",
        session_id = %session.id,
        client_id = %session.client_id,
        request_id = %session.request_id,
        ?ending,
        "liveness session ended"
    );
}

/// axum's WebSocket as the protocol's [`Channel`].
struct Socket {
    ws: WebSocket,
}

/// tungstenite reports a message over `max_message_size` as a capacity error; axum's error
/// does not expose its type, only its text.
fn is_too_large(e: &axum::Error) -> bool {
    let text = e.to_string();
    text.contains("Space limit exceeded") || text.contains("too long")
}

#[async_trait]
impl Channel for Socket {
    async fn recv(&mut self) -> Incoming {
        loop {
            return match self.ws.recv().await {
                Some(Ok(Message::Text(t))) => Incoming::Text(t.as_str().to_owned()),
                Some(Ok(Message::Binary(b))) => Incoming::Binary(b.into()),
                // Pings are answered by the WebSocket layer; neither resets a deadline.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Close(_))) | None => Incoming::Closed,
                Some(Err(e)) if is_too_large(&e) => Incoming::TooLarge,
                Some(Err(_)) => Incoming::Closed,
            };
        }
    }

    async fn send(&mut self, message: Value) -> bool {
        let text = Message::text(message.to_string());
        matches!(
            tokio::time::timeout(SEND_TIMEOUT, self.ws.send(text)).await,
            Ok(Ok(()))
        )
    }

    async fn close(&mut self, code: u16, reason: &str) {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let sent = tokio::time::timeout(SEND_TIMEOUT, self.ws.send(Message::Close(Some(frame))))
            .await
            .is_ok_and(|r| r.is_ok());
        if sent {
            // Whatever the client still had in flight is read and dropped until its close.
            let _ = tokio::time::timeout(CLOSE_WAIT, async {
                loop {
                    match self.ws.recv().await {
                        Some(Ok(Message::Close(_))) => break,
                        Some(Ok(_)) => {}
                        // Nothing more can be read (a message over the limit was left unread):
                        // the connection lingers, since closing a socket with unread data
                        // resets it, and the client would lose the close it has not read yet.
                        None | Some(Err(_)) => std::future::pending::<()>().await,
                    }
                }
            })
            .await;
        }
    }
}
