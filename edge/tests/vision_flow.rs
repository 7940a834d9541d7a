//! The seed's section 3.5 (`POST /api/v1/kyc/verify`) through the gateway with a real vendor:
//! kyc-edge running the built filters in front of the real kyc-service (PostgreSQL, Redis), whose
//! OCR and face comparison are kyc-vision reading the rendered card (PP-OCRv4) and comparing the
//! faces (dlib), as `scripts/run.sh` runs them. The files are the ones `kyc-vision fixtures --name
//! 张三 --id 11010519491231002X` writes.

mod support;
#[path = "support/vision.rs"]
mod vision;

use kyc_edge::conf::KongConf;
use serde_json::{Value, json};
use support::{CLIENT, Stack, filters_dir};
use vision::{ID_NUMBER, NAME, Vision};

fn part(bytes: Vec<u8>, file: &str) -> reqwest::multipart::Part {
    reqwest::multipart::Part::bytes(bytes)
        .file_name(file.to_owned())
        .mime_str("image/jpeg")
        .expect("mime")
}

/// The seed's 3.5 call with these files and name, then 3.6 for its id: the answer's and the
/// status query's `status` and `reasons` (the verdict is in the answer; the status query must
/// agree with it).
async fn verify(
    s: &Stack,
    v: &Vision,
    token: &str,
    key: &str,
    face: &str,
    name: &str,
) -> (String, Value) {
    let form = reqwest::multipart::Form::new()
        .part("idcard_image", part(v.fixture("idcard.jpg"), "idcard.jpg"))
        .part("face_image", part(v.fixture(face), face))
        .text("name", name.to_owned())
        .text("idcard", ID_NUMBER)
        .text("phone", "13800138000");
    let r = s
        .http
        .post(s.url("/api/v1/kyc/verify"))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .multipart(form)
        .send()
        .await
        .expect("verify");
    let code = r.status();
    let body: Value = r.json().await.expect("json");
    assert_eq!(code, 200, "{face}, {name}: {body}");
    let id = body["request_id"].as_str().expect("request_id").to_owned();
    let r = s
        .get(&format!("/api/v1/kyc/status/{id}"), Some(token))
        .await;
    assert_eq!(r.status(), 200);
    let status: Value = r.json().await.expect("json");
    assert_eq!(status["id"], id.as_str(), "{status}");
    assert_eq!(status["request_type"], "complete", "{status}");
    assert_eq!(
        (&status["status"], &status["reasons"]),
        (&body["status"], &body["reasons"]),
        "the status query agrees with the answer: {status} vs {body}"
    );
    (
        body["status"].as_str().unwrap_or_default().to_owned(),
        body["reasons"].clone(),
    )
}

#[tokio::test]
async fn verify_through_the_edge_with_kyc_vision_reads_the_card_and_compares_the_faces() {
    let v = Vision::start().await;
    let conf =
        KongConf::load(&support::common::repo_root().join("kong/kong.conf")).expect("kong.conf");
    let s = Stack::start_with_vendors(conf, filters_dir(), &v.vendor_overrides()).await;
    let token = s.token(CLIENT.0, CLIENT.1).await;

    // the card and a selfie of the same person, the name and number the card prints: success
    let (status, reasons) = verify(&s, &v, &token, "kyc-vision-1", "face.jpg", NAME).await;
    assert_eq!((status.as_str(), &reasons), ("success", &json!([])));

    // the same card with another person's selfie
    let (status, reasons) = verify(&s, &v, &token, "kyc-vision-2", "face_other.jpg", NAME).await;
    assert_eq!(
        (status.as_str(), &reasons),
        ("failed", &json!(["FACE_MISMATCH"]))
    );

    // the card's own selfie, but a name the card does not print
    let (status, reasons) = verify(&s, &v, &token, "kyc-vision-3", "face.jpg", "李四").await;
    assert_eq!(
        (status.as_str(), &reasons),
        ("failed", &json!(["NAME_MISMATCH"]))
    );

    // the verdicts came from kyc-vision: the sandbox, still running beside it, saw no call
    assert_eq!(s.sandbox.total_calls().await, 0);
}
