//! Face comparison over HTTP: the card's portrait matches the same person's selfie, not someone
//! else's, deterministically; images without a face are refused.

mod common;

use common::{Sandbox, b64, error, png};
use image::{Rgb, RgbImage};
use kyc_sandbox::{Person, fixtures};
use serde_json::{Value, json};

async fn score(sandbox: &Sandbox, a: &[u8], b: &[u8]) -> f64 {
    let resp = sandbox
        .post(
            "/v1/face/compare",
            &json!({"image_a": b64(a), "image_b": b64(b)}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("JSON");
    assert!(body["request_id"].is_string());
    body["score"].as_f64().expect("score")
}

#[tokio::test]
async fn the_selfie_matches_the_card_portrait_and_another_person_does_not() {
    let sandbox = Sandbox::start().await;
    let f = fixtures(&Person::new("张三", "11010519491231002X", None).expect("valid"));
    let same = score(&sandbox, &f.idcard, &f.face).await;
    let other = score(&sandbox, &f.idcard, &f.face_other).await;
    assert!(same >= 0.90, "same person scored {same}");
    assert!(other <= 0.50, "another person scored {other}");
    assert_eq!(
        (same, other),
        (f.score_face, f.score_other),
        "README.txt states these"
    );
}

#[tokio::test]
async fn a_second_persons_selfie_matches_their_card_in_either_order_and_repeatably() {
    let sandbox = Sandbox::start().await;
    let f = fixtures(&Person::new("李四", "44030519900101123X", None).expect("valid"));
    let forward = score(&sandbox, &f.idcard, &f.face).await;
    let backward = score(&sandbox, &f.face, &f.idcard).await;
    assert!(forward >= 0.90, "{forward}");
    assert_eq!(forward, backward);
    assert_eq!(forward, score(&sandbox, &f.idcard, &f.face).await);
}

#[tokio::test]
async fn an_image_without_a_face_is_no_face_found() {
    let sandbox = Sandbox::start().await;
    let f = fixtures(&Person::new("张三", "11010519491231002X", None).expect("valid"));
    let sky = png(RgbImage::from_pixel(300, 200, Rgb([120, 170, 230])));
    let resp = sandbox
        .post(
            "/v1/face/compare",
            &json!({"image_a": b64(&f.face), "image_b": b64(&sky)}),
        )
        .await;
    assert_eq!(error(resp).await, (422, "NO_FACE_FOUND".into()));
    let resp = sandbox
        .post(
            "/v1/face/compare",
            &json!({"image_a": b64(&f.idcard_photocopy), "image_b": b64(&f.face)}),
        )
        .await;
    assert_eq!(error(resp).await, (422, "NO_FACE_FOUND".into()));
}

#[tokio::test]
async fn a_face_compare_with_a_non_image_is_invalid_image() {
    let sandbox = Sandbox::start().await;
    let resp = sandbox
        .post(
            "/v1/face/compare",
            &json!({"image_a": b64(b"%PDF-1.7"), "image_b": b64(b"x")}),
        )
        .await;
    assert_eq!(error(resp).await, (400, "INVALID_IMAGE".into()));
    let resp = sandbox
        .post("/v1/face/compare", &json!({"image_a": "abc"}))
        .await;
    assert_eq!(error(resp).await, (400, "BAD_REQUEST".into()));
}
