//! The KYC flows end to end: the real service, the real sandbox vendor (in-process, over HTTP),
//! PostgreSQL and Redis. Faults are set on the sandbox through its admin API.

mod common;

use std::time::{Duration, Instant};

use common::TestApp;
use common::sandbox::Sandbox;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

const NAME: &str = "张三";
const ID: &str = "11010519491231002X";
const PHONE: &str = "13800138000";

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

    fn image(&self, file: &str) -> Vec<u8> {
        self.sandbox.fixture(file)
    }

    fn verify_form(&self, name: &str, id: &str, face: &str) -> Form {
        Form::new()
            .part(
                "idcard_image",
                Part::bytes(self.image("idcard.jpg")).file_name("idcard.jpg"),
            )
            .part(
                "face_image",
                Part::bytes(self.image(face)).file_name("face.jpg"),
            )
            .text("name", name.to_owned())
            .text("idcard", id.to_owned())
            .text("phone", PHONE)
    }

    async fn post(&self, path: &str, form: Form, key: Option<&str>) -> reqwest::Response {
        let mut r = self
            .app
            .http
            .post(self.app.url(path))
            .bearer_auth(&self.token)
            .multipart(form);
        if let Some(k) = key {
            r = r.header("Idempotency-Key", k);
        }
        r.send().await.expect("request")
    }

    /// Posts a hand-built body with the given Content-Type.
    async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        let r = self
            .app
            .http
            .post(self.app.url(path))
            .bearer_auth(&self.token)
            .header("content-type", content_type);
        r.body(body).send().await.expect("request")
    }

    async fn verify(&self, name: &str, id: &str, face: &str) -> (u16, Value) {
        let r = self
            .post("/api/v1/kyc/verify", self.verify_form(name, id, face), None)
            .await;
        (r.status().as_u16(), r.json().await.expect("json"))
    }

    async fn status_of(&self, body: &Value) -> Value {
        let id = body["request_id"].as_str().expect("request_id");
        self.app
            .get(&format!("/api/v1/kyc/status/{id}"), Some(&self.token))
            .await
            .json()
            .await
            .expect("json")
    }

    async fn vendor_calls(&self, body: &Value) -> Vec<(String, i32, String)> {
        let id =
            uuid::Uuid::parse_str(body["request_id"].as_str().expect("request_id")).expect("uuid");
        kyc_service::store::vendor_calls::for_request(self.app.pool(), id)
            .await
            .expect("calls")
    }
}

#[tokio::test]
async fn a_matching_person_is_verified_and_status_agrees() {
    let s = Stack::start().await;
    let (code, body) = s.verify(NAME, ID, "face.jpg").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["message"], "KYC认证成功");
    assert_eq!(body["reasons"], json!([]));
    let status = s.status_of(&body).await;
    assert_eq!(status["status"], "success");
    assert_eq!(status["request_type"], "complete");
    assert_eq!(
        status["user_id"], "kyc-client",
        "user_id defaults to the token's subject"
    );
    let mut vendors: Vec<String> = s
        .vendor_calls(&body)
        .await
        .into_iter()
        .map(|(v, _, _)| v)
        .collect();
    vendors.sort();
    assert_eq!(vendors, ["face", "ocr"]);
}

#[tokio::test]
async fn each_failure_reason_is_reported_and_recorded() {
    let s = Stack::start().await;
    let cases = [
        ("李四", ID, "face.jpg", "NAME_MISMATCH"),
        (NAME, "440524188001010014", "face.jpg", "ID_NUMBER_MISMATCH"),
        (NAME, ID, "face_other.jpg", "FACE_MISMATCH"),
    ];
    for (name, id, face, reason) in cases {
        let (code, body) = s.verify(name, id, face).await;
        assert_eq!(code, 200);
        assert_eq!(body["status"], "failed", "{reason}: {body}");
        assert!(
            body["reasons"]
                .as_array()
                .expect("reasons")
                .contains(&json!(reason)),
            "{reason}: {body}"
        );
        assert_eq!(s.status_of(&body).await["reasons"], body["reasons"]);
    }
    // A photocopied card is suspicious.
    let form = Form::new()
        .part(
            "idcard_image",
            Part::bytes(s.image("idcard_photocopy.jpg")).file_name("c.jpg"),
        )
        .part(
            "face_image",
            Part::bytes(s.image("face.jpg")).file_name("f.jpg"),
        )
        .text("name", NAME)
        .text("idcard", ID)
        .text("phone", PHONE);
    let body: Value = s
        .post("/api/v1/kyc/verify", form, None)
        .await
        .json()
        .await
        .expect("json");
    assert!(
        body["reasons"]
            .as_array()
            .expect("reasons")
            .contains(&json!("DOCUMENT_SUSPICIOUS")),
        "{body}"
    );
}

#[tokio::test]
async fn an_invalid_id_number_fails_without_any_vendor_call() {
    let s = Stack::start().await;
    let before = s.sandbox.total_calls().await;
    // The seed's own placeholder number fails GB 11643.
    let (code, body) = s.verify(NAME, "123456789012345678", "face.jpg").await;
    assert_eq!(code, 200);
    assert_eq!(body["status"], "failed");
    assert_eq!(body["reasons"], json!(["ID_NUMBER_INVALID"]));
    assert_eq!(
        s.sandbox.total_calls().await,
        before,
        "no vendor call was spent"
    );
}

#[tokio::test]
async fn liveness_is_required_when_configured_and_a_bogus_session_fails() {
    let s = Stack::start_with(&[("KYC__KYC__REQUIRE_LIVENESS", "true".into())]).await;
    let (_, body) = s.verify(NAME, ID, "face.jpg").await;
    assert_eq!(body["reasons"], json!(["LIVENESS_REQUIRED"]));
    let form = s
        .verify_form(NAME, ID, "face.jpg")
        .text("liveness_session_id", uuid::Uuid::new_v4().to_string());
    let body: Value = s
        .post("/api/v1/kyc/verify", form, None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(body["reasons"], json!(["LIVENESS_FAILED"]));
}

#[tokio::test]
async fn a_vendor_that_fails_twice_then_succeeds_is_retried() {
    let s = Stack::start().await;
    s.sandbox.faults(json!({"ocr": {"fail_first": 2}})).await;
    let (code, body) = s.verify(NAME, ID, "face.jpg").await;
    assert_eq!(
        (code, body["status"].as_str()),
        (200, Some("success")),
        "{body}"
    );
    let ocr: Vec<(i32, String)> = s
        .vendor_calls(&body)
        .await
        .into_iter()
        .filter(|(v, _, _)| v == "ocr")
        .map(|(_, a, o)| (a, o))
        .collect();
    assert_eq!(
        ocr,
        [
            (1, "server_error".into()),
            (2, "server_error".into()),
            (3, "ok".into())
        ]
    );
}

#[tokio::test]
async fn client_errors_from_a_vendor_are_not_retried() {
    let s = Stack::start().await;
    s.sandbox.faults(json!({"ocr": {"status": 400}})).await;
    let (_, body) = s.verify(NAME, ID, "face.jpg").await;
    assert_eq!(body["status"], "failed", "{body}");
    let ocr = s
        .vendor_calls(&body)
        .await
        .into_iter()
        .filter(|(v, _, _)| v == "ocr")
        .count();
    assert_eq!(ocr, 1, "a 4xx is final");
}

#[tokio::test]
async fn a_down_vendor_opens_the_circuit_and_requests_then_fail_fast_as_error() {
    let s = Stack::start_with(&[
        ("KYC__THIRD_PARTY__FACE_SERVICE__RETRY_COUNT", "0".into()),
        (
            "KYC__THIRD_PARTY__FACE_SERVICE__CIRCUIT_FAILURE_THRESHOLD",
            "2".into(),
        ),
        (
            "KYC__THIRD_PARTY__FACE_SERVICE__CIRCUIT_OPEN_SECONDS",
            "60".into(),
        ),
    ])
    .await;
    s.sandbox.faults(json!({"face": {"status": 503}})).await;
    for _ in 0..2 {
        let (code, body) = s.verify(NAME, ID, "face.jpg").await;
        assert_eq!(
            (code, body["status"].as_str()),
            (503, Some("error")),
            "{body}"
        );
        assert_eq!(body["reasons"], json!(["VENDOR_UNAVAILABLE"]));
    }
    let face_calls = s.sandbox.calls("face").await;
    let started = Instant::now();
    let r = s
        .post(
            "/api/v1/kyc/verify",
            s.verify_form(NAME, ID, "face.jpg"),
            None,
        )
        .await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: Value = r.json().await.expect("json");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the open circuit answers quickly"
    );
    assert_eq!(
        s.sandbox.calls("face").await,
        face_calls,
        "no call reaches a vendor whose circuit is open"
    );
    assert_eq!(s.status_of(&body).await["status"], "error");
    let metrics = s
        .app
        .get("/metrics", None)
        .await
        .text()
        .await
        .expect("metrics");
    assert!(
        metrics.contains(r#"vendor_calls_total{outcome="circuit_open",vendor="face"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"vendor_circuit_state{vendor="face"} 1"#)
            && metrics.contains(r#"vendor_circuit_state{vendor="ocr"} 0"#),
        "the scrape shows the open circuit at once, not after the next maintenance pass: {metrics}"
    );
}

#[tokio::test]
async fn a_vendor_that_times_out_gives_error_timeout() {
    let s = Stack::start_with(&[
        ("KYC__THIRD_PARTY__OCR_SERVICE__TIMEOUT", "1".into()),
        ("KYC__THIRD_PARTY__OCR_SERVICE__RETRY_COUNT", "0".into()),
    ])
    .await;
    s.sandbox.faults(json!({"ocr": {"timeout": true}})).await;
    let (code, body) = s.verify(NAME, ID, "face.jpg").await;
    assert_eq!(code, 503);
    assert_eq!(body["status"], "error");
    assert_eq!(body["reasons"], json!(["TIMEOUT"]));
    assert_eq!(s.status_of(&body).await["status"], "error");
}

#[tokio::test]
async fn slow_vendors_are_called_concurrently() {
    let s = Stack::start().await;
    s.sandbox
        .faults(json!({"ocr": {"latency_ms": 700}, "face": {"latency_ms": 700}}))
        .await;
    let started = Instant::now();
    let (code, body) = s.verify(NAME, ID, "face.jpg").await;
    let wall = started.elapsed();
    assert_eq!(
        (code, body["status"].as_str()),
        (200, Some("success")),
        "{body}"
    );
    assert!(wall >= Duration::from_millis(700), "{wall:?}");
    assert!(
        wall < Duration::from_millis(1300),
        "about the slower call, not the sum (1.4 s): {wall:?}"
    );
}

#[tokio::test]
async fn an_idempotent_replay_returns_the_first_answer_without_a_vendor_call() {
    let s = Stack::start().await;
    let first = s
        .post(
            "/api/v1/kyc/verify",
            s.verify_form(NAME, ID, "face.jpg"),
            Some("kyc-123456"),
        )
        .await;
    assert_eq!(first.status(), 200);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.expect("json");
    let calls = s.sandbox.total_calls().await;
    for _ in 0..4 {
        let again = s
            .post(
                "/api/v1/kyc/verify",
                s.verify_form(NAME, ID, "face.jpg"),
                Some("kyc-123456"),
            )
            .await;
        assert_eq!(again.status(), 200);
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        assert_eq!(again.json::<Value>().await.expect("json"), first);
    }
    assert_eq!(
        s.sandbox.total_calls().await,
        calls,
        "replays made no vendor call"
    );
    // The same key with another payload is refused.
    let other = s
        .post(
            "/api/v1/kyc/verify",
            s.verify_form("李四", ID, "face.jpg"),
            Some("kyc-123456"),
        )
        .await;
    assert_eq!(other.status(), 422);
    assert_eq!(
        other.json::<Value>().await.expect("json")["error"]["code"],
        "IDEMPOTENCY_KEY_REUSED"
    );
    // A malformed key is refused.
    let bad = s
        .post(
            "/api/v1/kyc/verify",
            s.verify_form(NAME, ID, "face.jpg"),
            Some(&"k".repeat(300)),
        )
        .await;
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn the_same_key_in_flight_is_409() {
    let s = Stack::start().await;
    s.sandbox.faults(json!({"ocr": {"latency_ms": 1500}})).await;
    let first = s.post(
        "/api/v1/kyc/verify",
        s.verify_form(NAME, ID, "face.jpg"),
        Some("slow-key"),
    );
    let second = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        s.post(
            "/api/v1/kyc/verify",
            s.verify_form(NAME, ID, "face.jpg"),
            Some("slow-key"),
        )
        .await
    };
    let (first, second) = tokio::join!(first, second);
    assert_eq!(first.status(), 200);
    assert_eq!(second.status(), 409);
    assert_eq!(
        second.json::<Value>().await.expect("json")["error"]["code"],
        "IDEMPOTENCY_IN_FLIGHT"
    );
}

#[tokio::test]
async fn the_seed_ocr_and_face_calls_return_the_seed_shapes() {
    let s = Stack::start().await;
    let form = Form::new()
        .part(
            "image",
            Part::bytes(s.image("idcard.jpg")).file_name("idcard.jpg"),
        )
        .text("language", "auto");
    let r = s.post("/api/v1/kyc/ocr", form, Some("ocr-123456")).await;
    assert_eq!(r.status(), 200);
    let ocr: Value = r.json().await.expect("json");
    assert_eq!(ocr["success"], true);
    assert_eq!(ocr["id_card"], ID);
    assert_eq!(ocr["name"], NAME);
    assert_eq!(ocr["sex"], "女");
    assert_eq!(ocr["birth_date"], "1949-12-31");
    assert!(ocr["request_id"].is_string() && ocr["address"].is_string());
    assert_eq!(s.status_of(&ocr).await["request_type"], "ocr");

    let form = Form::new()
        .part(
            "image1",
            Part::bytes(s.image("idcard.jpg")).file_name("idcard.jpg"),
        )
        .part(
            "image2",
            Part::bytes(s.image("face.jpg")).file_name("face.jpg"),
        );
    let face: Value = s
        .post("/api/v1/kyc/face/verify", form, Some("face-123456"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(face["success"], true, "{face}");
    assert_eq!(face["threshold"], 0.8);
    assert!(face["score"].as_f64().expect("score") >= 0.8);
    assert_eq!(s.status_of(&face).await["request_type"], "face");
}

#[tokio::test]
async fn bad_uploads_get_clear_errors_and_spend_nothing() {
    let s = Stack::start_with(&[(
        "KYC__HTTP__UPLOAD_BODY_LIMIT",
        (2 * 1024 * 1024).to_string(),
    )])
    .await;
    let before = s.sandbox.total_calls().await;
    let not_image = Form::new().part(
        "image",
        Part::bytes(b"%PDF-1.7 not an image".to_vec()).file_name("x.pdf"),
    );
    let r = s.post("/api/v1/kyc/ocr", not_image, None).await;
    assert_eq!(r.status(), 415);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["field"], "image");

    let missing = Form::new().text("language", "auto");
    let r = s.post("/api/v1/kyc/ocr", missing, None).await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"]["code"],
        "FIELD_MISSING"
    );

    let huge = Form::new().part(
        "image",
        Part::bytes(vec![0xFF; 3 * 1024 * 1024]).file_name("big.jpg"),
    );
    assert_eq!(s.post("/api/v1/kyc/ocr", huge, None).await.status(), 413);

    let bad_phone = s
        .verify_form(NAME, ID, "face.jpg")
        .text("phone", "12345678901");
    let r = s.post("/api/v1/kyc/verify", bad_phone, None).await;
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.expect("json");
    assert_eq!(
        (
            body["error"]["code"].as_str(),
            body["error"]["field"].as_str()
        ),
        (Some("PHONE_INVALID"), Some("phone"))
    );
    assert!(
        !body.to_string().contains("12345678901"),
        "the submitted value is not echoed"
    );

    let truncated = "--XyZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n\r\n\u{FF}\u{D8}";
    let r = s
        .post_raw(
            "/api/v1/kyc/ocr",
            "multipart/form-data; boundary=XyZ",
            truncated,
        )
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"]["code"],
        "MULTIPART_INVALID"
    );
    assert_eq!(
        s.sandbox.total_calls().await,
        before,
        "no vendor call for rejected input"
    );
}

#[tokio::test]
async fn writing_needs_the_write_scope() {
    let s = Stack::start().await;
    let secret = s.app.create_client("reader", &["kyc:read"]).await;
    let token = s.app.access_token("reader", &secret).await;
    let r = s
        .app
        .http
        .post(s.app.url("/api/v1/kyc/verify"))
        .bearer_auth(token)
        .multipart(s.verify_form(NAME, ID, "face.jpg"))
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn after_the_flows_no_table_holds_plaintext_pii() {
    let s = Stack::start().await;
    let _ = s.verify(NAME, ID, "face.jpg").await;
    let form = Form::new().part(
        "image",
        Part::bytes(s.image("idcard.jpg")).file_name("idcard.jpg"),
    );
    let _ = s.post("/api/v1/kyc/ocr", form, Some("ocr-pii")).await;
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'")
            .fetch_all(s.app.pool())
            .await
            .expect("tables");
    for table in tables {
        let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT t::text FROM {table} t"))
            .fetch_all(s.app.pool())
            .await
            .expect("select");
        for row in rows {
            for needle in [
                NAME.to_owned(),
                ID.to_owned(),
                PHONE.to_owned(),
                hex::encode(NAME),
                hex::encode(ID),
                hex::encode(PHONE),
            ] {
                assert!(!row.contains(&needle), "{table}: {row}");
            }
        }
    }
}

#[tokio::test]
async fn the_seed_ab_upload_without_a_boundary_parameter_works() {
    // `ab -T 'multipart/form-data' -p ocr_request.txt` sends the body with no boundary parameter.
    let s = Stack::start().await;
    let mut body = b"--kycboundary\r\nContent-Disposition: form-data; name=\"image\"; filename=\"idcard.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n".to_vec();
    body.extend_from_slice(&s.image("idcard.jpg"));
    body.extend_from_slice(b"\r\n--kycboundary--\r\n");
    let r = s
        .post_raw("/api/v1/kyc/ocr", "multipart/form-data", body)
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.expect("json")["id_card"], ID);
}

#[tokio::test]
async fn a_misconfigured_vendor_key_is_an_error_not_a_verdict_on_the_person() {
    let s = Stack::start_with(&[(
        "KYC__THIRD_PARTY__OCR_SERVICE__API_KEY",
        "not-the-sandbox-key".into(),
    )])
    .await;
    let (code, body) = s.verify(NAME, ID, "face.jpg").await;
    assert_eq!(
        (code, body["status"].as_str()),
        (503, Some("error")),
        "{body}"
    );
    assert_eq!(body["reasons"], json!(["VENDOR_UNAVAILABLE"]));
    let ocr: Vec<String> = s
        .vendor_calls(&body)
        .await
        .into_iter()
        .filter(|(v, _, _)| v == "ocr")
        .map(|(_, _, o)| o)
        .collect();
    assert_eq!(ocr, ["client_error"], "a 401 is not retried");
}
