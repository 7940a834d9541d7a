//! Liveness over WebSocket (`docs/liveness-protocol.md`) end to end: the real service, the
//! sandbox's liveness vendor in-process, PostgreSQL and Redis, and a WebSocket client.

mod common;

use std::time::Duration;

use common::TestApp;
use common::sandbox::Sandbox;
use futures::{SinkExt, StreamExt};
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const NAME: &str = "张三";
const ID: &str = "11010519491231002X";
const PHONE: &str = "13800138000";
/// Frames sent per action, and the pause between them (under the default 15 fps).
const FRAMES: usize = 6;
const FRAME_GAP: Duration = Duration::from_millis(80);

struct Stack {
    app: TestApp,
    sandbox: Sandbox,
    token: String,
}

impl Stack {
    async fn start() -> Self {
        Self::start_with(&[]).await
    }

    async fn start_with(extra: &[(&str, String)]) -> Self {
        let sandbox = Sandbox::start().await;
        let mut overrides = sandbox.vendor_overrides();
        overrides.extend(extra.iter().cloned());
        let app = TestApp::spawn_with(&overrides).await;
        let token = app.access_token("kyc-client", "kyc-client-secret").await;
        Self {
            app,
            sandbox,
            token,
        }
    }

    /// Another client with `kyc:read kyc:write`, and its token.
    async fn other_client(&self) -> String {
        let secret = self
            .app
            .create_client("other-client", &["kyc:read", "kyc:write"])
            .await;
        self.app.access_token("other-client", &secret).await
    }

    async fn create_session_as(&self, token: &str) -> (u16, Value) {
        let r = self
            .app
            .http
            .post(self.app.url("/api/v1/kyc/liveness/sessions"))
            .bearer_auth(token)
            .json(&json!({}))
            .send()
            .await
            .expect("sessions request");
        let status = r.status().as_u16();
        (status, r.json().await.expect("json body"))
    }

    async fn create_session(&self) -> Value {
        let (status, body) = self.create_session_as(&self.token).await;
        assert_eq!(status, 201, "{body}");
        body
    }

    async fn verify(&self, session_id: &str) -> Value {
        let form = Form::new()
            .part(
                "idcard_image",
                Part::bytes(self.sandbox.fixture("idcard.jpg")).file_name("idcard.jpg"),
            )
            .part(
                "face_image",
                Part::bytes(self.sandbox.fixture("face.jpg")).file_name("face.jpg"),
            )
            .text("name", NAME)
            .text("idcard", ID)
            .text("phone", PHONE)
            .text("liveness_session_id", session_id.to_owned());
        let r = self
            .app
            .http
            .post(self.app.url("/api/v1/kyc/verify"))
            .bearer_auth(&self.token)
            .multipart(form)
            .send()
            .await
            .expect("verify");
        assert_eq!(r.status(), 200);
        r.json().await.expect("json")
    }

    async fn session_row(&self, id: &str) -> (String, Option<f64>, Option<uuid::Uuid>) {
        sqlx::query_as(
            "SELECT status, score, request_id FROM liveness_sessions WHERE id = $1::uuid",
        )
        .bind(id)
        .fetch_one(self.app.pool())
        .await
        .expect("session row")
    }

    async fn request_row(&self, id: uuid::Uuid) -> (String, String, Vec<String>) {
        sqlx::query_as("SELECT request_type, status, reasons FROM kyc_requests WHERE id = $1")
            .bind(id)
            .fetch_one(self.app.pool())
            .await
            .expect("request row")
    }
}

/// A WebSocket to the service.
struct Ws(WebSocketStream<MaybeTlsStream<TcpStream>>);

/// Connects to `app` with `query`, and an Authorization header when `token` is given; an HTTP
/// refusal comes back as its status and JSON body.
async fn connect(app: &TestApp, query: &str, token: Option<&str>) -> Result<Ws, (u16, Value)> {
    let url = format!("ws://{}/api/v1/kyc/liveness/ws{query}", app.addr);
    let mut req = url.into_client_request().expect("request");
    if let Some(t) = token {
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("header"),
        );
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(Ws(ws)),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let status = resp.status().as_u16();
            let body = resp.body().clone().unwrap_or_default();
            Err((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
        }
        Err(e) => panic!("websocket connect failed: {e}"),
    }
}

async fn connect_ok(app: &TestApp, query: &str, token: Option<&str>) -> Ws {
    match connect(app, query, token).await {
        Ok(ws) => ws,
        Err((status, body)) => panic!("connect refused: {status} {body}"),
    }
}

fn refused(r: Result<Ws, (u16, Value)>) -> (u16, String) {
    match r {
        Ok(_) => panic!("the connection was accepted"),
        Err((status, body)) => (
            status,
            body["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        ),
    }
}

/// What the server sent next: a JSON message, or its close code.
#[derive(Debug)]
enum Got {
    Json(Value),
    Close(u16),
}

impl Ws {
    async fn next(&mut self) -> Got {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(30), self.0.next())
                .await
                .expect("the server answers within 30 s");
            match m {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("server sends JSON");
                    for key in ["type", "success", "error"] {
                        assert!(v.get(key).is_some(), "every message has {key}: {v}");
                    }
                    return Got::Json(v);
                }
                Some(Ok(Message::Close(frame))) => {
                    return Got::Close(frame.map_or(1005, |f| u16::from(f.code)));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("websocket error: {e}"),
                None => panic!("the connection ended without a close frame"),
            }
        }
    }

    async fn json(&mut self, kind: &str) -> Value {
        match self.next().await {
            Got::Json(v) if v["type"] == kind => v,
            other => panic!("expected a {kind} message, got {other:?}"),
        }
    }

    /// The close code; the close handshake is then completed (the client's close is sent).
    async fn close_code(&mut self) -> u16 {
        let code = match self.next().await {
            Got::Close(code) => code,
            other => panic!("expected a close, got {other:?}"),
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), self.0.next()).await;
        code
    }

    /// The next message is the error `code`, then a close with `close`.
    async fn refused_with(&mut self, code: &str, close: u16) {
        let v = self.json("error").await;
        assert_eq!(v["success"], false, "{v}");
        assert_eq!(v["error"]["code"], code, "{v}");
        assert_eq!(self.close_code().await, close);
    }

    /// Sends without caring whether the server still reads (it may have closed).
    async fn send(&mut self, m: Message) {
        let _ = self.0.send(m).await;
    }

    async fn send_json(&mut self, v: Value) {
        self.send(Message::text(v.to_string())).await;
    }

    async fn announce(&mut self, action: &str) -> Value {
        self.send_json(json!({ "action": action })).await;
        self.json("action_started").await
    }

    async fn end(&mut self, action: &str) {
        self.send_json(json!({ "action": action, "end": true }))
            .await;
    }

    /// Sends `frames` as binary messages, paced under the frame rate.
    async fn stream(&mut self, frames: &[Vec<u8>]) {
        for f in frames {
            self.send(Message::binary(f.clone())).await;
            tokio::time::sleep(FRAME_GAP).await;
        }
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|a| a.as_str().expect("string").to_owned())
        .collect()
}

/// Performs every action of `challenge` with frames that act it out; returns the verdict.
async fn act_out(ws: &mut Ws, challenge: &Value, sandbox: &Sandbox) -> Value {
    for (i, action) in strings(&challenge["actions"]).iter().enumerate() {
        let started = ws.announce(action).await;
        assert_eq!(started["action"], action.as_str());
        let frames = sandbox.liveness_frames(action, FRAMES);
        if i == 0 {
            // The first action as JSON frames with timestamps, the others as binary.
            let t0 = chrono::Utc::now().timestamp_millis();
            for (k, f) in frames.iter().enumerate() {
                use base64::Engine;
                let b64 = base64::engine::general_purpose::STANDARD.encode(f);
                ws.send_json(json!({ "frame": b64, "ts": t0 + 80 * k as i64 }))
                    .await;
                tokio::time::sleep(FRAME_GAP).await;
            }
        } else {
            ws.stream(&frames).await;
        }
        ws.end(action).await;
        let result = ws.json("action_result").await;
        assert_eq!(result["action"], action.as_str());
        assert_eq!(result["success"], true, "{result}");
    }
    ws.json("verdict").await
}

/// Opens a connection by ticket and reads the challenge.
async fn open(s: &Stack) -> (Ws, Value) {
    let session = s.create_session().await;
    let mut ws = connect_ok(
        &s.app,
        &format!("?ticket={}", session["ticket"].as_str().expect("ticket")),
        None,
    )
    .await;
    let challenge = ws.json("challenge").await;
    assert_eq!(
        challenge["liveness_session_id"],
        session["liveness_session_id"]
    );
    (ws, challenge)
}

/// Runs a whole passing session; returns its id.
async fn passed_session(s: &Stack) -> String {
    let (mut ws, challenge) = open(s).await;
    let verdict = act_out(&mut ws, &challenge, &s.sandbox).await;
    assert_eq!(verdict["passed"], true, "{verdict}");
    assert_eq!(ws.close_code().await, 1000);
    challenge["liveness_session_id"]
        .as_str()
        .expect("id")
        .to_owned()
}

/// Runs a session whose first action shows a still image; returns its id.
async fn failed_session(s: &Stack) -> String {
    let (mut ws, challenge) = open(s).await;
    let first = strings(&challenge["actions"])[0].clone();
    ws.announce(&first).await;
    ws.stream(&vec![s.sandbox.fixture("face.jpg"); FRAMES])
        .await;
    ws.end(&first).await;
    let result = ws.json("action_result").await;
    assert_eq!(result["success"], false, "{result}");
    let verdict = ws.json("verdict").await;
    assert_eq!(verdict["passed"], false, "{verdict}");
    assert_eq!(ws.close_code().await, 1000);
    challenge["liveness_session_id"]
        .as_str()
        .expect("id")
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// Sessions and verdicts.

#[tokio::test]
async fn a_session_acted_out_in_front_of_the_camera_passes_and_is_recorded() {
    let s = Stack::start().await;
    let session = s.create_session().await;
    let ticket = session["ticket"].as_str().expect("ticket");
    assert_eq!(ticket.len(), 43);
    assert_eq!(session["ticket_expires_in"], 60);
    assert_eq!(
        session["ws_url"],
        format!("/api/v1/kyc/liveness/ws?ticket={ticket}")
    );
    let actions = strings(&session["challenge"]["actions"]);
    assert!((2..=4).contains(&actions.len()), "{actions:?}");
    assert_eq!(session["challenge"]["action_timeout_ms"], 10_000);

    let mut ws = connect_ok(&s.app, &format!("?ticket={ticket}"), None).await;
    let challenge = ws.json("challenge").await;
    assert_eq!(strings(&challenge["actions"]), actions);
    assert_eq!(challenge["nonce"], session["challenge"]["nonce"]);
    assert_eq!(
        challenge["limits"],
        json!({"max_frame_bytes": 262_144, "max_fps": 15, "min_frames": 3, "max_frames": 30})
    );
    assert_eq!(s.app.metrics().liveness_sessions_active.get(), 1);

    let verdict = act_out(&mut ws, &challenge, &s.sandbox).await;
    assert_eq!(verdict["success"], true, "{verdict}");
    assert_eq!(verdict["passed"], true);
    assert_eq!(
        verdict["liveness_session_id"],
        session["liveness_session_id"]
    );
    let score = verdict["score"].as_f64().expect("score");
    assert!(score > 0.5 && score <= 1.0, "{score}");
    assert_eq!(ws.close_code().await, 1000);

    let id = session["liveness_session_id"].as_str().expect("id");
    let (status, stored_score, request_id) = s.session_row(id).await;
    assert_eq!(status, "passed");
    assert_eq!(stored_score, Some(score));
    let request_id = request_id.expect("the session names its request");
    assert_eq!(
        s.request_row(request_id).await,
        ("liveness".into(), "success".into(), vec![])
    );
    let calls: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM vendor_calls WHERE request_id = $1 AND vendor = 'liveness'",
    )
    .bind(request_id)
    .fetch_one(s.app.pool())
    .await
    .expect("vendor calls");
    assert_eq!(calls, actions.len() as i64, "one vendor call per action");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(s.app.metrics().liveness_sessions_active.get(), 0);
}

#[tokio::test]
async fn a_still_image_fails_liveness_and_the_session_is_failed() {
    let s = Stack::start().await;
    let id = failed_session(&s).await;
    let (status, score, request_id) = s.session_row(&id).await;
    assert_eq!(status, "failed");
    assert!(score.is_some_and(|v| v < 0.5), "{score:?}");
    let (kind, status, reasons) = s.request_row(request_id.expect("request")).await;
    assert_eq!(
        (kind.as_str(), status.as_str(), reasons),
        ("liveness", "failed", vec!["LIVENESS_FAILED".to_owned()])
    );
}

#[tokio::test]
async fn a_failed_action_ends_the_session_with_the_vendors_reason() {
    let s = Stack::start().await;
    let (mut ws, challenge) = open(&s).await;
    let first = strings(&challenge["actions"])[0].clone();
    ws.announce(&first).await;
    ws.stream(&vec![s.sandbox.fixture("face.jpg"); FRAMES])
        .await;
    ws.end(&first).await;
    let result = ws.json("action_result").await;
    assert_eq!(result["error"]["code"], "LIVENESS_FAILED", "{result}");
    assert!(result["error"]["reason"].is_string(), "{result}");
    let verdict = ws.json("verdict").await;
    assert_eq!(verdict["success"], false);
    assert_eq!(verdict["error"]["code"], "LIVENESS_FAILED");
    assert_eq!(verdict["score"], result["score"]);
}

#[tokio::test]
async fn a_token_on_the_upgrade_opens_a_new_session_or_a_named_one() {
    let s = Stack::start().await;
    // Authorization header, no session: a new one.
    let mut ws = connect_ok(&s.app, "", Some(&s.token)).await;
    let challenge = ws.json("challenge").await;
    let verdict = act_out(&mut ws, &challenge, &s.sandbox).await;
    assert_eq!(verdict["passed"], true);
    // access_token in the query, with a session made beforehand.
    let session = s.create_session().await;
    let id = session["liveness_session_id"].as_str().expect("id");
    let mut ws = connect_ok(
        &s.app,
        &format!("?access_token={}&session_id={id}", s.token),
        None,
    )
    .await;
    assert_eq!(ws.json("challenge").await["liveness_session_id"], id);
}

#[tokio::test]
async fn the_seeds_snippet_gets_a_well_formed_reply_to_blink() {
    let s = Stack::start().await;
    let session = s.create_session().await;
    let url = session["ws_url"].as_str().expect("ws_url");
    let mut ws = connect_ok(
        &s.app,
        url.trim_start_matches("/api/v1/kyc/liveness/ws"),
        None,
    )
    .await;
    // As the seed does: {"action":"blink"} as soon as the socket opens.
    ws.send_json(json!({ "action": "blink" })).await;
    let challenge = ws.json("challenge").await;
    let reply = match ws.next().await {
        Got::Json(v) => v,
        other => panic!("expected a reply, got {other:?}"),
    };
    if challenge["actions"][0] == "blink" {
        assert_eq!(reply["type"], "action_started", "{reply}");
        assert_eq!(reply["success"], true);
        assert_eq!(reply["error"], Value::Null);
    } else {
        assert_eq!(reply["type"], "error", "{reply}");
        assert_eq!(reply["success"], false);
        assert_eq!(reply["error"]["code"], "UNEXPECTED_ACTION");
        assert_eq!(ws.close_code().await, 1008);
    }
}

// ---------------------------------------------------------------------------------------------
// Misbehaviour.

#[tokio::test]
async fn text_that_is_not_json_is_a_bad_message() {
    let s = Stack::start().await;
    let (mut ws, _) = open(&s).await;
    ws.send(Message::text("blink please")).await;
    ws.refused_with("BAD_MESSAGE", 1007).await;
}

#[tokio::test]
async fn json_of_no_known_shape_is_a_bad_message() {
    let s = Stack::start().await;
    let (mut ws, _) = open(&s).await;
    ws.send_json(json!({ "hello": "world" })).await;
    ws.refused_with("BAD_MESSAGE", 1007).await;
}

#[tokio::test]
async fn an_unknown_action_is_refused() {
    let s = Stack::start().await;
    let (mut ws, _) = open(&s).await;
    ws.send_json(json!({ "action": "smile" })).await;
    ws.refused_with("UNKNOWN_ACTION", 1008).await;
}

#[tokio::test]
async fn an_action_other_than_the_next_one_is_refused() {
    let s = Stack::start().await;
    let (mut ws, challenge) = open(&s).await;
    let actions = strings(&challenge["actions"]);
    ws.send_json(json!({ "action": actions[1] })).await;
    ws.refused_with("UNEXPECTED_ACTION", 1008).await;
    let id = challenge["liveness_session_id"].as_str().expect("id");
    assert_eq!(
        s.session_row(id).await.0,
        "failed",
        "a misbehaving session is over"
    );
}

#[tokio::test]
async fn a_frame_before_any_action_is_refused() {
    let s = Stack::start().await;
    let (mut ws, _) = open(&s).await;
    ws.send(Message::binary(s.sandbox.fixture("face.jpg")))
        .await;
    ws.refused_with("FRAME_OUTSIDE_ACTION", 1008).await;
}

#[tokio::test]
async fn a_frame_over_the_size_limit_is_refused() {
    let s = Stack::start().await;
    let (mut ws, challenge) = open(&s).await;
    ws.announce(&strings(&challenge["actions"])[0]).await;
    let mut big = s.sandbox.fixture("face.jpg");
    big.resize(262_145, 0);
    ws.send(Message::binary(big)).await;
    ws.refused_with("FRAME_TOO_LARGE", 1009).await;
}

#[tokio::test]
async fn a_message_far_over_the_size_limit_is_refused_without_being_read() {
    let s = Stack::start().await;
    let (mut ws, challenge) = open(&s).await;
    ws.announce(&strings(&challenge["actions"])[0]).await;
    ws.send(Message::binary(vec![0xFF; 1024 * 1024])).await;
    ws.refused_with("FRAME_TOO_LARGE", 1009).await;
}

#[tokio::test]
async fn frames_faster_than_max_fps_are_refused() {
    let s = Stack::start().await;
    let (mut ws, challenge) = open(&s).await;
    let action = strings(&challenge["actions"])[0].clone();
    ws.announce(&action).await;
    for f in s.sandbox.liveness_frames(&action, 16) {
        ws.send(Message::binary(f)).await;
    }
    ws.refused_with("FRAME_RATE_EXCEEDED", 1008).await;
}

#[tokio::test]
async fn a_json_frame_whose_ts_does_not_increase_is_refused() {
    use base64::Engine;
    let s = Stack::start().await;
    let (mut ws, challenge) = open(&s).await;
    ws.announce(&strings(&challenge["actions"])[0]).await;
    let b64 = base64::engine::general_purpose::STANDARD.encode(s.sandbox.fixture("face.jpg"));
    ws.send_json(json!({ "frame": b64, "ts": 1_000 })).await;
    tokio::time::sleep(FRAME_GAP).await;
    ws.send_json(json!({ "frame": b64, "ts": 1_000 })).await;
    ws.refused_with("TIMESTAMP_NOT_INCREASING", 1008).await;
}

#[tokio::test]
async fn more_than_max_frames_in_an_action_are_refused() {
    let s = Stack::start_with(&[("KYC__KYC__LIVENESS_MAX_FRAMES", "5".into())]).await;
    let (mut ws, challenge) = open(&s).await;
    assert_eq!(challenge["limits"]["max_frames"], 5);
    let action = strings(&challenge["actions"])[0].clone();
    ws.announce(&action).await;
    ws.stream(&s.sandbox.liveness_frames(&action, 6)).await;
    ws.refused_with("TOO_MANY_FRAMES", 1008).await;
}

#[tokio::test]
async fn an_action_ended_with_too_few_frames_is_refused() {
    let s = Stack::start().await;
    let (mut ws, challenge) = open(&s).await;
    let action = strings(&challenge["actions"])[0].clone();
    ws.announce(&action).await;
    ws.stream(&s.sandbox.liveness_frames(&action, 2)).await;
    ws.end(&action).await;
    ws.refused_with("NOT_ENOUGH_FRAMES", 1008).await;
}

#[tokio::test]
async fn silence_past_the_action_timeout_closes_the_session() {
    let s = Stack::start_with(&[("KYC__KYC__LIVENESS_ACTION_TIMEOUT", "1s".into())]).await;
    // Never announcing the first action.
    let (mut ws, challenge) = open(&s).await;
    assert_eq!(challenge["action_timeout_ms"], 1000);
    ws.refused_with("ACTION_TIMEOUT", 1008).await;
    // Announcing it, then never ending it.
    let (mut ws, challenge) = open(&s).await;
    let action = strings(&challenge["actions"])[0].clone();
    assert_eq!(ws.announce(&action).await["deadline_ms"], 1000);
    ws.stream(&s.sandbox.liveness_frames(&action, 3)).await;
    ws.refused_with("ACTION_TIMEOUT", 1008).await;
    let id = challenge["liveness_session_id"].as_str().expect("id");
    let (status, _, request_id) = s.session_row(id).await;
    assert_eq!(status, "failed");
    assert_eq!(
        s.request_row(request_id.expect("request")).await.1,
        "failed"
    );
}

#[tokio::test]
async fn a_session_past_its_ttl_is_closed() {
    let s = Stack::start_with(&[("KYC__KYC__LIVENESS_SESSION_TTL", "2s".into())]).await;
    let (mut ws, challenge) = open(&s).await;
    let action = strings(&challenge["actions"])[0].clone();
    ws.announce(&action).await;
    // Slowly: each frame within the action timeout, the whole past the session's end.
    for f in s.sandbox.liveness_frames(&action, 4) {
        ws.send(Message::binary(f)).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    ws.refused_with("SESSION_EXPIRED", 1008).await;
}

#[tokio::test]
async fn a_session_not_connected_before_its_ttl_is_gone() {
    let s = Stack::start_with(&[("KYC__KYC__LIVENESS_SESSION_TTL", "1s".into())]).await;
    let session = s.create_session().await;
    assert_eq!(
        session["ticket_expires_in"], 1,
        "a ticket never outlives its session"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let id = session["liveness_session_id"].as_str().expect("id");
    let r = connect(&s.app, &format!("?session_id={id}"), Some(&s.token)).await;
    assert_eq!(refused(r), (410, "SESSION_EXPIRED".into()));
}

// ---------------------------------------------------------------------------------------------
// Tickets, single use, ownership, limits.

#[tokio::test]
async fn a_ticket_works_once() {
    let s = Stack::start().await;
    let session = s.create_session().await;
    let query = format!("?ticket={}", session["ticket"].as_str().expect("ticket"));
    let mut ws = connect_ok(&s.app, &query, None).await;
    ws.json("challenge").await;
    assert_eq!(
        refused(connect(&s.app, &query, None).await),
        (401, "TICKET_INVALID".into())
    );
    let forged = format!("?ticket={}", "A".repeat(43));
    assert_eq!(
        refused(connect(&s.app, &forged, None).await),
        (401, "TICKET_INVALID".into())
    );
}

#[tokio::test]
async fn an_expired_ticket_is_refused() {
    let s = Stack::start_with(&[("KYC__KYC__LIVENESS_TICKET_TTL", "1s".into())]).await;
    let session = s.create_session().await;
    assert_eq!(session["ticket_expires_in"], 1);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let query = format!("?ticket={}", session["ticket"].as_str().expect("ticket"));
    assert_eq!(
        refused(connect(&s.app, &query, None).await),
        (401, "TICKET_INVALID".into())
    );
}

#[tokio::test]
async fn a_plain_get_is_refused_without_spending_the_ticket() {
    let s = Stack::start().await;
    let session = s.create_session().await;
    let query = format!("?ticket={}", session["ticket"].as_str().expect("ticket"));
    let r = s
        .app
        .get(&format!("/api/v1/kyc/liveness/ws{query}"), None)
        .await;
    assert_eq!(r.status(), 426);
    assert_eq!(r.headers()["upgrade"], "websocket");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "UPGRADE_REQUIRED");
    let mut ws = connect_ok(&s.app, &query, None).await;
    ws.json("challenge").await;
}

#[tokio::test]
async fn connecting_without_credentials_or_to_an_unknown_session_is_refused() {
    let s = Stack::start().await;
    assert_eq!(
        refused(connect(&s.app, "", None).await),
        (401, "TOKEN_MISSING".into())
    );
    assert_eq!(
        refused(connect(&s.app, "?access_token=not-a-token", None).await),
        (401, "TOKEN_INVALID".into())
    );
    let unknown = format!("?session_id={}", uuid::Uuid::new_v4());
    assert_eq!(
        refused(connect(&s.app, &unknown, Some(&s.token)).await),
        (404, "SESSION_NOT_FOUND".into())
    );
    let secret = s.app.create_client("reader", &["kyc:read"]).await;
    let reader = s.app.access_token("reader", &secret).await;
    assert_eq!(
        refused(connect(&s.app, "", Some(&reader)).await),
        (403, "INSUFFICIENT_SCOPE".into())
    );
}

#[tokio::test]
async fn a_finished_session_cannot_be_replayed() {
    let s = Stack::start().await;
    let id = passed_session(&s).await;
    let r = connect(&s.app, &format!("?session_id={id}"), Some(&s.token)).await;
    assert_eq!(refused(r), (409, "SESSION_USED".into()));
    // Nor a session connected once and still running.
    let session = s.create_session().await;
    let id = session["liveness_session_id"].as_str().expect("id");
    let mut ws = connect_ok(&s.app, &format!("?session_id={id}"), Some(&s.token)).await;
    ws.json("challenge").await;
    let r = connect(&s.app, &format!("?session_id={id}"), Some(&s.token)).await;
    assert_eq!(refused(r), (409, "SESSION_USED".into()));
}

#[tokio::test]
async fn another_clients_session_is_refused() {
    let s = Stack::start().await;
    let other = s.other_client().await;
    let session = s.create_session().await;
    let id = session["liveness_session_id"].as_str().expect("id");
    let r = connect(&s.app, &format!("?session_id={id}"), Some(&other)).await;
    assert_eq!(refused(r), (403, "SESSION_FOREIGN".into()));
    // A ticket presented with another client's token.
    let query = format!("?ticket={}", session["ticket"].as_str().expect("ticket"));
    let r = connect(&s.app, &query, Some(&other)).await;
    assert_eq!(refused(r), (403, "SESSION_FOREIGN".into()));
    // Refusals did not spend the session for its owner.
    let mut ws = connect_ok(&s.app, &format!("?session_id={id}"), Some(&s.token)).await;
    ws.json("challenge").await;
}

#[tokio::test]
async fn a_client_holds_at_most_three_open_sessions() {
    let s = Stack::start().await;
    for _ in 0..3 {
        s.create_session().await;
    }
    let (status, body) = s.create_session_as(&s.token).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "LIVENESS_SESSION_LIMIT");
    let r = connect(&s.app, "", Some(&s.token)).await;
    assert_eq!(refused(r), (429, "LIVENESS_SESSION_LIMIT".into()));
    // Another client is not affected; a finished session frees a slot.
    let other = s.other_client().await;
    assert_eq!(s.create_session_as(&other).await.0, 201);
    let pending: String = sqlx::query_scalar(
        "SELECT id::text FROM liveness_sessions WHERE client_id = 'kyc-client' LIMIT 1",
    )
    .fetch_one(s.app.pool())
    .await
    .expect("a session");
    let mut ws = connect_ok(&s.app, &format!("?session_id={pending}"), Some(&s.token)).await;
    ws.json("challenge").await;
    ws.send_json(json!({ "action": "smile" })).await;
    ws.refused_with("UNKNOWN_ACTION", 1008).await;
    assert_eq!(s.create_session_as(&s.token).await.0, 201);
}

#[tokio::test]
async fn concurrent_creations_respect_the_cap() {
    let s = Stack::start().await;
    let statuses = futures::future::join_all((0..8).map(|_| s.create_session_as(&s.token))).await;
    let created = statuses.iter().filter(|(code, _)| *code == 201).count();
    assert_eq!(created, 3, "{statuses:?}");
}

// ---------------------------------------------------------------------------------------------
// Two instances, and /kyc/verify.

#[tokio::test]
async fn two_instances_on_one_database_and_redis_serve_one_client() {
    let s = Stack::start().await;
    let b = TestApp::spawn_sharing(&s.app, &s.sandbox.vendor_overrides()).await;
    // The session and ticket from instance A, the connection to instance B.
    let session = s.create_session().await;
    let query = format!("?ticket={}", session["ticket"].as_str().expect("ticket"));
    let mut ws = connect_ok(&b, &query, None).await;
    let challenge = ws.json("challenge").await;
    assert_eq!(b.metrics().liveness_sessions_active.get(), 1);
    assert_eq!(s.app.metrics().liveness_sessions_active.get(), 0);
    let verdict = act_out(&mut ws, &challenge, &s.sandbox).await;
    assert_eq!(verdict["passed"], true, "{verdict}");
    // A's view of the session: used, by the connection B served.
    assert_eq!(
        refused(connect(&s.app, &query, None).await),
        (401, "TICKET_INVALID".into())
    );
    let id = session["liveness_session_id"].as_str().expect("id");
    let r = connect(&s.app, &format!("?session_id={id}"), Some(&s.token)).await;
    assert_eq!(refused(r), (409, "SESSION_USED".into()));
    // And A's /kyc/verify accepts it.
    let body = s.verify(id).await;
    assert_eq!(body["status"], "success", "{body}");
}

#[tokio::test]
async fn verify_accepts_a_passed_session_once() {
    let s = Stack::start_with(&[("KYC__KYC__REQUIRE_LIVENESS", "true".into())]).await;
    let id = passed_session(&s).await;
    let body = s.verify(&id).await;
    assert_eq!(body["status"], "success", "{body}");
    let body = s.verify(&id).await;
    assert_eq!(body["status"], "failed", "{body}");
    assert_eq!(body["reasons"], json!(["LIVENESS_FAILED"]));
}

#[tokio::test]
async fn verify_refuses_a_failed_session() {
    let s = Stack::start().await;
    let id = failed_session(&s).await;
    let body = s.verify(&id).await;
    assert_eq!(body["status"], "failed", "{body}");
    assert_eq!(body["reasons"], json!(["LIVENESS_FAILED"]));
}

#[tokio::test]
async fn verify_refuses_another_clients_passed_session() {
    let s = Stack::start().await;
    let other_token = s.other_client().await;
    let other = Stack {
        app: TestApp::spawn_sharing(&s.app, &s.sandbox.vendor_overrides()).await,
        sandbox: Sandbox::start().await,
        token: other_token,
    };
    let id = passed_session(&other).await;
    let body = s.verify(&id).await;
    assert_eq!(body["status"], "failed", "{body}");
    assert_eq!(body["reasons"], json!(["LIVENESS_FAILED"]));
    // Still usable by its own client.
    let body = other.verify(&id).await;
    assert_eq!(body["status"], "success", "{body}");
}

#[tokio::test]
async fn verify_refuses_a_session_still_in_progress() {
    let s = Stack::start().await;
    let (mut ws, challenge) = open(&s).await;
    let id = challenge["liveness_session_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let body = s.verify(&id).await;
    assert_eq!(body["reasons"], json!(["LIVENESS_FAILED"]), "{body}");
    ws.send_json(json!({ "action": "smile" })).await;
    ws.refused_with("UNKNOWN_ACTION", 1008).await;
}

#[tokio::test]
async fn verify_refuses_a_passed_session_after_it_expired() {
    let s = Stack::start().await;
    let id = passed_session(&s).await;
    sqlx::query(
        "UPDATE liveness_sessions SET expires_at = now() - interval '1 second' WHERE id = $1::uuid",
    )
    .bind(&id)
    .execute(s.app.pool())
    .await
    .expect("expired");
    let body = s.verify(&id).await;
    assert_eq!(body["reasons"], json!(["LIVENESS_FAILED"]), "{body}");
}

// ---------------------------------------------------------------------------------------------
// The service's side of things going wrong.

#[tokio::test]
async fn a_vendor_outage_ends_the_session_with_1011() {
    let s = Stack::start().await;
    s.sandbox
        .faults(json!({ "liveness": { "status": 503 } }))
        .await;
    let (mut ws, challenge) = open(&s).await;
    let action = strings(&challenge["actions"])[0].clone();
    ws.announce(&action).await;
    ws.stream(&s.sandbox.liveness_frames(&action, FRAMES)).await;
    ws.end(&action).await;
    ws.refused_with("VENDOR_UNAVAILABLE", 1011).await;
    let id = challenge["liveness_session_id"].as_str().expect("id");
    let (status, _, request_id) = s.session_row(id).await;
    assert_eq!(status, "failed");
    let request_id = request_id.expect("request");
    assert_eq!(
        s.request_row(request_id).await,
        (
            "liveness".into(),
            "error".into(),
            vec!["VENDOR_UNAVAILABLE".to_owned()]
        )
    );
    let attempts: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM vendor_calls WHERE request_id = $1 AND vendor = 'liveness'",
    )
    .bind(request_id)
    .fetch_one(s.app.pool())
    .await
    .expect("vendor calls");
    assert_eq!(attempts, 4, "the first call and three retries");
}

#[tokio::test]
async fn a_client_that_leaves_fails_its_session() {
    let s = Stack::start().await;
    let (mut ws, challenge) = open(&s).await;
    ws.announce(&strings(&challenge["actions"])[0]).await;
    ws.0.close(None).await.expect("close");
    drop(ws);
    let id = challenge["liveness_session_id"].as_str().expect("id");
    for _ in 0..50 {
        if s.session_row(id).await.0 != "active" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _, request_id) = s.session_row(id).await;
    assert_eq!(status, "failed");
    assert_eq!(
        s.request_row(request_id.expect("request")).await.1,
        "failed"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(s.app.metrics().liveness_sessions_active.get(), 0);
}

#[tokio::test]
async fn a_stopping_service_ends_its_connections_with_1001() {
    let s = Stack::start().await;
    let (mut ws, _) = open(&s).await;
    s.app.state.shutdown.cancel();
    ws.refused_with("SHUTTING_DOWN", 1001).await;
}
