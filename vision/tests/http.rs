//! The vendor contract as kyc-vision serves it, over real HTTP: a rendered card read through
//! `POST /v1/idcard/ocr` (front and back), and every refusal with its status and stable code:
//! the API key, bad base64, a decompression bomb refused from its header, an image without a
//! card, a body over 16 MiB, and a full pool answering 429 with `Retry-After`.

use std::sync::Arc;

use base64::Engine as _;
use image::{DynamicImage, RgbImage};
use kyc_vision::fixtures::{self, CardFont, Identity, render};
use kyc_vision::http::{AppState, router};
use kyc_vision::imaging::DecodeLimits;
use kyc_vision::models;
use kyc_vision::pool::{Pool, PoolConfig};
use serde_json::{Value, json};

async fn serve(config: PoolConfig) -> String {
    let dir = models::dir(None);
    models::verify(&dir, &models::OCR_FILES).unwrap_or_else(|e| panic!("{e}"));
    let pool = Pool::start(&dir, config).expect("models load");
    let state = AppState {
        pool,
        api_keys: Arc::new(kyc_sandbox::app::SEED_API_KEYS.map(str::to_owned).to_vec()),
        limits: DecodeLimits::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router(state)).await });
    format!("http://{addr}")
}

fn b64_jpeg(img: &RgbImage) -> String {
    let bytes = kyc_sandbox::imaging::encode_jpeg(&DynamicImage::ImageRgb8(img.clone()), 92);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn card(n: u64) -> (Identity, RgbImage, RgbImage) {
    let dir = models::dir(None);
    let font = CardFont::open(std::path::Path::new(render::DEFAULT_FONT)).expect("font");
    let photos = fixtures::photographs(&dir).expect("photographs");
    let id = Identity::generate(99, n);
    let front = render::front(&font, &id, &photos[0], n);
    let back = render::back(&font, &id, n);
    (id, front, back)
}

async fn post(base: &str, key: Option<&str>, body: Value) -> (u16, Option<String>, Value) {
    call(&format!("{base}/v1/idcard/ocr"), key, body).await
}

async fn call(url: &str, key: Option<&str>, body: Value) -> (u16, Option<String>, Value) {
    let mut req = reqwest::Client::new().post(url).json(&body);
    if let Some(k) = key {
        req = req.header("X-Api-Key", k);
    }
    let resp = req.send().await.expect("send");
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap_or_default().to_owned());
    (status, retry, resp.json().await.unwrap_or(Value::Null))
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or_default()
}

/// A PNG whose header announces `w` × `h` (CRC-correct) with no pixel data behind it: what a
/// decompression bomb shows before its first pixel.
fn bomb_header(w: u32, h: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in bytes {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13];
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    // an empty IDAT: the header is complete, no pixel follows
    png.extend_from_slice(&[0, 0, 0, 0]);
    png.extend_from_slice(b"IDAT");
    png.extend_from_slice(&crc32(b"IDAT").to_be_bytes());
    png
}

#[tokio::test]
async fn a_card_is_read_and_every_refusal_has_its_code() {
    let base = serve(PoolConfig::default()).await;
    let (id, front, back) = card(1);

    let (status, _, v) = post(
        &base,
        Some("ocr-api-key"),
        json!({"image": b64_jpeg(&front)}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["side"], "front");
    assert_eq!(v["name"], id.name.as_str());
    assert_eq!(v["id_number"], id.id_number.as_str());
    assert_eq!(v["sex"], id.sex.as_str());
    assert_eq!(v["birth_date"], id.birth_date.as_str());
    assert_eq!(v["address"], id.address.as_str());
    assert_eq!(v["ethnicity"], id.ethnicity.as_str());
    assert_eq!(v["reasons"], json!([]));
    assert_eq!(v["warnings"]["edited"], false);
    assert!(
        v["fields"]["name"]["confidence"].as_f64().unwrap_or(0.0) > 0.5,
        "{v}"
    );

    let (status, _, v) = post(
        &base,
        Some("ocr-api-key"),
        json!({"image": b64_jpeg(&back), "side": "back"}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["issuing_authority"], id.issuing_authority.as_str());
    assert_eq!(v["valid_until"], id.valid_until.as_str());

    let body = json!({"image": b64_jpeg(&front)});
    let (status, _, v) = post(&base, None, body.clone()).await;
    assert_eq!((status, code(&v)), (401, "UNAUTHORIZED"));
    let (status, _, v) = post(&base, Some("not-a-key"), body).await;
    assert_eq!((status, code(&v)), (401, "UNAUTHORIZED"));

    let (status, _, v) = post(&base, Some("ocr-api-key"), json!({"image": "%%%"})).await;
    assert_eq!((status, code(&v)), (400, "INVALID_IMAGE"), "{v}");

    let bomb = base64::engine::general_purpose::STANDARD.encode(bomb_header(100_000, 100_000));
    let (status, _, v) = post(&base, Some("ocr-api-key"), json!({"image": bomb})).await;
    assert_eq!((status, code(&v)), (400, "INVALID_IMAGE"), "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("refused before decoding"), "{msg}");

    let blank = RgbImage::from_pixel(856, 540, image::Rgb([235, 235, 235]));
    let (status, _, v) = post(
        &base,
        Some("ocr-api-key"),
        json!({"image": b64_jpeg(&blank)}),
    )
    .await;
    assert_eq!((status, code(&v)), (422, "NO_CARD_FOUND"), "{v}");

    let (status, _, v) = post(&base, Some("ocr-api-key"), json!({"side": "front"})).await;
    assert_eq!((status, code(&v)), (400, "BAD_REQUEST"), "{v}");

    let huge = "A".repeat(17 * 1024 * 1024);
    let (status, _, v) = post(&base, Some("ocr-api-key"), json!({"image": huge})).await;
    assert_eq!((status, code(&v)), (413, "PAYLOAD_TOO_LARGE"), "{v}");

    let (status, _, v) = post(
        &format!("{base}/v1/nothing"),
        Some("ocr-api-key"),
        json!({}),
    )
    .await;
    assert_eq!(status, 404, "{v}");
}

#[tokio::test]
async fn a_full_pool_answers_429_with_retry_after_and_recovers() {
    // one worker and no queue: a second request while the first is read is refused at once
    let base = serve(PoolConfig {
        workers: 1,
        threads: 1,
        queue: 0,
    })
    .await;
    let (id, front, _) = card(2);
    let body = json!({"image": b64_jpeg(&front)});
    let first = tokio::spawn({
        let (base, body) = (base.clone(), body.clone());
        async move { post(&base, Some("ocr-api-key"), body).await }
    });
    // the first is in the worker once /ready counts it (up to 60 s on a loaded machine)
    let mut counted = false;
    for _ in 0..12_000 {
        let ready: Value = reqwest::get(format!("{base}/ready"))
            .await
            .expect("ready")
            .json()
            .await
            .expect("json");
        if ready["in_flight"] == 1 {
            counted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(counted, "the first request never reached the pool");
    let (status, retry, v) = post(&base, Some("ocr-api-key"), body.clone()).await;
    assert_eq!((status, code(&v)), (429, "RATE_LIMITED"), "{v}");
    assert_eq!(retry.as_deref(), Some("1"));
    let (status, _, v) = first.await.expect("first");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["id_number"], id.id_number.as_str());
    // and the pool takes work again
    let (status, _, _) = post(&base, Some("ocr-api-key"), body).await;
    assert_eq!(status, 200);
}

#[test]
fn a_missing_model_stops_start_up_with_one_line_naming_it_and_the_installer() {
    let empty = std::env::temp_dir().join(format!("kyc-vision-empty-{}", std::process::id()));
    std::fs::create_dir_all(&empty).expect("mkdir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kyc-vision"))
        .args([
            "--models",
            empty.to_str().expect("utf-8"),
            "serve",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .expect("runs");
    std::fs::remove_dir_all(&empty).ok();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(models::ORT_LIB) && stderr.contains(models::INSTALL),
        "{stderr}"
    );
}

fn b64_photo(rel: &str) -> (RgbImage, String) {
    let bytes = std::fs::read(models::dir(None).join(rel)).expect("photograph");
    let img = kyc_vision::imaging::decode(&bytes, DecodeLimits::default()).expect("decodes");
    let b64 = b64_jpeg(&img);
    (img, b64)
}

#[tokio::test]
async fn faces_compare_the_card_portrait_with_selfies_and_refuse_no_face_or_several() {
    let base = serve(PoolConfig::default()).await;
    let url = format!("{base}/v1/face/compare");
    let (astronaut, astronaut_b64) = b64_photo(models::FACE_ASTRONAUT);
    let (hopper, hopper_b64) = b64_photo(models::FACE_HOPPER);
    // the card prints the astronaut's photograph as its portrait (identity 0 of card())
    let (_, front, _) = card(0);
    let card_b64 = b64_jpeg(&front);
    // a selfie: the same photograph mirrored and cropped
    let selfie = image::imageops::crop_imm(
        &image::imageops::flip_horizontal(&astronaut),
        60,
        20,
        400,
        440,
    )
    .to_image();

    let key = Some("face-api-key");
    let (status, _, same) = call(
        &url,
        key,
        json!({"image_a": card_b64, "image_b": b64_jpeg(&selfie)}),
    )
    .await;
    assert_eq!(status, 200, "{same}");
    let (status, _, other) = call(
        &url,
        key,
        json!({"image_a": card_b64, "image_b": hopper_b64}),
    )
    .await;
    assert_eq!(status, 200, "{other}");
    let same_score = same["score"].as_f64().unwrap_or(0.0);
    let other_score = other["score"].as_f64().unwrap_or(1.0);
    eprintln!("card vs selfie {same}, card vs another person {other}");
    assert!(same_score >= kyc_vision::face::THRESHOLD, "{same}");
    assert!(other_score < kyc_vision::face::THRESHOLD, "{other}");

    let blank = b64_jpeg(&RgbImage::from_pixel(400, 400, image::Rgb([200, 200, 200])));
    let (status, _, v) = call(
        &url,
        key,
        json!({"image_a": astronaut_b64, "image_b": blank}),
    )
    .await;
    assert_eq!((status, code(&v)), (422, "NO_FACE_FOUND"), "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("image_b"),
        "{v}"
    );

    let mut both = RgbImage::from_pixel(
        astronaut.width() + hopper.width(),
        600,
        image::Rgb([255, 255, 255]),
    );
    image::imageops::overlay(&mut both, &astronaut, 0, 0);
    image::imageops::overlay(&mut both, &hopper, i64::from(astronaut.width()), 0);
    let (status, _, v) = call(
        &url,
        key,
        json!({"image_a": b64_jpeg(&both), "image_b": hopper_b64}),
    )
    .await;
    assert_eq!((status, code(&v)), (422, "MULTIPLE_FACES"), "{v}");

    let (status, _, v) = call(&url, Some("ocr-api-key-wrong"), json!({})).await;
    assert_eq!((status, code(&v)), (401, "UNAUTHORIZED"), "{v}");
}

#[tokio::test]
async fn liveness_judges_the_action_the_person_and_replays_over_http() {
    let base = serve(PoolConfig::default()).await;
    let url = format!("{base}/v1/liveness/check");
    let dir = models::dir(None);
    let photos = fixtures::photographs(&dir).expect("photographs");
    let engine = kyc_vision::face::FaceEngine::load(&dir).expect("face models");
    let rest = engine.frame(&photos[0], false).expect("one face");
    let blink: Vec<String> = fixtures::acting::sequence(
        &photos[0],
        &rest.landmarks,
        kyc_vision::liveness::Action::Blink,
    )
    .iter()
    .map(b64_jpeg)
    .collect();
    let key = Some("liveness-api-key");

    let (status, _, v) = call(&url, key, json!({"action": "blink", "frames": blink})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["passed"], true, "{v}");
    assert!(v["score"].as_f64().is_some_and(|s| s >= 0.5), "{v}");
    assert!(v["reason"].is_null(), "{v}");
    assert!(v["request_id"].is_string(), "{v}");

    // The card's portrait as the reference: the same person passes, another fails.
    let (_, _, v) = call(
        &url,
        key,
        json!({"action": "blink", "frames": blink, "reference": b64_jpeg(&photos[0])}),
    )
    .await;
    assert_eq!(v["passed"], true, "{v}");
    let (_, _, v) = call(
        &url,
        key,
        json!({"action": "blink", "frames": blink, "reference": b64_jpeg(&photos[1])}),
    )
    .await;
    assert_eq!(
        (v["passed"].as_bool(), v["reason"].as_str()),
        (Some(false), Some("FACE_MISMATCH")),
        "{v}"
    );

    // The asked action is not what the frames show; the same frame four times is a replay.
    let (_, _, v) = call(&url, key, json!({"action": "turn_left", "frames": blink})).await;
    assert_eq!(v["reason"], "ACTION_NOT_DETECTED", "{v}");
    let still = vec![blink[0].clone(); 4];
    let (_, _, v) = call(&url, key, json!({"action": "blink", "frames": still})).await;
    assert_eq!(
        (v["passed"].as_bool(), v["reason"].as_str()),
        (Some(false), Some("STATIC_FRAMES")),
        "{v}"
    );

    // Refusals: one frame, an unknown action, a reference without a face, a frame that is not an image.
    let (status, _, v) = call(&url, key, json!({"action": "blink", "frames": [blink[0]]})).await;
    assert_eq!((status, code(&v)), (400, "BAD_REQUEST"), "{v}");
    let (status, _, v) = call(&url, key, json!({"action": "wink", "frames": blink})).await;
    assert_eq!((status, code(&v)), (400, "BAD_REQUEST"), "{v}");
    let grey = b64_jpeg(&RgbImage::from_pixel(64, 64, image::Rgb([128, 128, 128])));
    let (status, _, v) = call(
        &url,
        key,
        json!({"action": "blink", "frames": blink, "reference": grey}),
    )
    .await;
    assert_eq!((status, code(&v)), (422, "NO_FACE_FOUND"), "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("reference")),
        "{v}"
    );
    let (status, _, v) = call(
        &url,
        key,
        json!({"action": "blink", "frames": [blink[0], "not base64!"]}),
    )
    .await;
    assert_eq!((status, code(&v)), (400, "INVALID_IMAGE"), "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("frames[1]")),
        "{v}"
    );
    let (status, _, _) = call(&url, None, json!({"action": "blink", "frames": blink})).await;
    assert_eq!(status, 401);
}
