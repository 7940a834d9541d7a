//! The service's input limits, against the real app: multipart part count, text-field size and
//! file-name length; images refused by their header (dimensions, decompression bombs, unreadable
//! headers) before any vendor call; JSON body size and depth. Each rejection is a 4xx with a
//! stable code, records nothing, and echoes nothing of what was sent.

mod common;

use std::io::Cursor;

use common::TestApp;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

const PHONE: &str = "13800138000";
const ID: &str = "11010519491231002X";

async fn app_and_token(extra: &[(&str, String)]) -> (TestApp, String) {
    let app = TestApp::spawn_with(extra).await;
    let token = app.access_token("kyc-client", "kyc-client-secret").await;
    (app, token)
}

async fn post_form(app: &TestApp, token: &str, path: &str, form: Form) -> (u16, Value) {
    let r = app
        .http
        .post(app.url(path))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .expect("request");
    (r.status().as_u16(), r.json().await.expect("json body"))
}

async fn kyc_rows(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM kyc_requests")
        .fetch_one(app.pool())
        .await
        .expect("count")
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

/// A real `w`×`h` image in `format`, encoded by the `image` crate.
fn encode(format: image::ImageFormat, w: u32, h: u32) -> Vec<u8> {
    let img = image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(
        w,
        h,
        image::Rgb([200, 180, 160]),
    ));
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).expect("encode");
    out.into_inner()
}

/// CRC-32 (ISO 3309, as PNG chunks use).
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFF_u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A small PNG whose IHDR declares `w`×`h` (CRC fixed up): a decompression bomb's header.
fn png_declaring(w: u32, h: u32) -> Vec<u8> {
    let mut png = encode(image::ImageFormat::Png, 16, 16);
    assert_eq!(&png[12..16], b"IHDR");
    png[16..20].copy_from_slice(&w.to_be_bytes());
    png[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

/// A small JPEG whose SOF0 declares `w`×`h`.
fn jpeg_declaring(w: u16, h: u16) -> Vec<u8> {
    let mut jpg = encode(image::ImageFormat::Jpeg, 16, 16);
    let sof = jpg
        .windows(2)
        .position(|m| m == [0xFF, 0xC0])
        .expect("a baseline JPEG has SOF0");
    // marker(2) length(2) precision(1) height(2) width(2)
    jpg[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
    jpg[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    jpg
}

fn ocr_form(image: Vec<u8>) -> Form {
    Form::new().part("image", Part::bytes(image).file_name("card.img"))
}

#[tokio::test]
async fn too_many_parts_are_refused_with_413_before_anything_is_recorded() {
    let (app, token) = app_and_token(&[]).await;
    let mut form = ocr_form(encode(image::ImageFormat::Jpeg, 32, 32));
    for i in 0..16 {
        form = form.text(format!("extra{i}"), "x");
    }
    let (status, body) = post_form(&app, &token, "/api/v1/kyc/ocr", form).await;
    assert_eq!((status, code(&body)), (413, "MULTIPART_TOO_MANY_PARTS"));
    assert_eq!(body["success"], false);
    assert!(body["request_id"].is_string(), "the project's error body");

    // The limit is configured: 3 parts are too many under a limit of 2.
    let (app2, token2) = app_and_token(&[("KYC__HTTP__MULTIPART_MAX_PARTS", "2".into())]).await;
    let form = ocr_form(encode(image::ImageFormat::Jpeg, 32, 32))
        .text("language", "auto")
        .text("user_id", "u1");
    let (status, body) = post_form(&app2, &token2, "/api/v1/kyc/ocr", form).await;
    assert_eq!((status, code(&body)), (413, "MULTIPART_TOO_MANY_PARTS"));
    assert_eq!(kyc_rows(&app).await + kyc_rows(&app2).await, 0);
}

#[tokio::test]
async fn an_oversized_text_field_is_refused_without_echoing_it() {
    let (app, token) = app_and_token(&[]).await;
    let long_id = ID.repeat(300); // 5400 bytes, over the 4 KiB default
    let form = Form::new()
        .part(
            "idcard_image",
            Part::bytes(encode(image::ImageFormat::Jpeg, 32, 32)).file_name("id.jpg"),
        )
        .part(
            "face_image",
            Part::bytes(encode(image::ImageFormat::Jpeg, 32, 32)).file_name("face.jpg"),
        )
        .text("name", "张三")
        .text("idcard", long_id)
        .text("phone", PHONE);
    let (status, body) = post_form(&app, &token, "/api/v1/kyc/verify", form).await;
    assert_eq!((status, code(&body)), (413, "FIELD_TOO_LARGE"), "{body}");
    let text = body.to_string();
    assert!(!text.contains(ID) && !text.contains(PHONE), "{text}");
    assert_eq!(kyc_rows(&app).await, 0);
}

#[tokio::test]
async fn a_long_file_name_is_refused_without_echoing_it() {
    let (app, token) = app_and_token(&[]).await;
    let name = format!("{}.jpg", PHONE.repeat(30)); // 334 bytes, over the 255 default
    let form = Form::new().part(
        "image",
        Part::bytes(encode(image::ImageFormat::Jpeg, 32, 32)).file_name(name),
    );
    let (status, body) = post_form(&app, &token, "/api/v1/kyc/ocr", form).await;
    assert_eq!((status, code(&body)), (400, "FILE_NAME_TOO_LONG"), "{body}");
    assert!(!body.to_string().contains(PHONE));
    assert_eq!(kyc_rows(&app).await, 0);
}

#[tokio::test]
async fn decompression_bombs_are_refused_by_their_header() {
    let (app, token) = app_and_token(&[]).await;
    let bombs = [
        ("png", png_declaring(60_000, 60_000)),
        ("jpeg", jpeg_declaring(60_000, 60_000)),
        // Each side within 10 000, but 81 megapixels in all (the default is 40).
        ("png-pixels", png_declaring(9_000, 9_000)),
    ];
    for (what, bomb) in bombs {
        assert!(bomb.len() < 4096, "{what}: a bomb is a small file");
        let (status, body) = post_form(&app, &token, "/api/v1/kyc/ocr", ocr_form(bomb)).await;
        assert_eq!(
            (status, code(&body), body["error"]["field"].as_str()),
            (422, "IMAGE_DIMENSIONS_TOO_LARGE", Some("image")),
            "{what}: {body}"
        );
    }
    assert_eq!(kyc_rows(&app).await, 0, "refused before any vendor call");
}

#[tokio::test]
async fn image_dimension_limits_are_configurable() {
    let (app, token) = app_and_token(&[
        ("KYC__KYC__MAX_IMAGE_WIDTH", "64".into()),
        ("KYC__KYC__MAX_IMAGE_HEIGHT", "48".into()),
        ("KYC__KYC__MAX_IMAGE_PIXELS", "2000".into()),
    ])
    .await;
    for (w, h) in [(65, 10), (10, 49), (50, 41)] {
        for format in [image::ImageFormat::Png, image::ImageFormat::Jpeg] {
            let form = Form::new()
                .part(
                    "image1",
                    Part::bytes(encode(format, 8, 8)).file_name("a.img"),
                )
                .part(
                    "image2",
                    Part::bytes(encode(format, w, h)).file_name("b.img"),
                );
            let (status, body) = post_form(&app, &token, "/api/v1/kyc/face/verify", form).await;
            assert_eq!(
                (status, code(&body), body["error"]["field"].as_str()),
                (422, "IMAGE_DIMENSIONS_TOO_LARGE", Some("image2")),
                "{w}x{h} {format:?}: {body}"
            );
        }
    }
    assert_eq!(kyc_rows(&app).await, 0);
}

#[tokio::test]
async fn an_image_with_an_unreadable_header_is_refused() {
    let (app, token) = app_and_token(&[]).await;
    let mut truncated = encode(image::ImageFormat::Png, 16, 16);
    truncated.truncate(20);
    let cases = [
        (
            "png magic, garbage",
            b"\x89PNG\r\n\x1a\nnot really a png at all".to_vec(),
        ),
        ("png cut in its header", truncated),
        (
            "jpeg magic, garbage",
            b"\xFF\xD8\xFF\xE0 not a jpeg either".to_vec(),
        ),
        ("png declaring 0x0", png_declaring(0, 0)),
    ];
    for (what, data) in cases {
        let (status, body) = post_form(&app, &token, "/api/v1/kyc/ocr", ocr_form(data)).await;
        assert_eq!(
            (status, code(&body)),
            (422, "IMAGE_INVALID"),
            "{what}: {body}"
        );
    }
    assert_eq!(kyc_rows(&app).await, 0);
}

/// `[[[…{"grant_type":…}…]]]` nested `depth` deep inside an object.
fn deep_json(depth: usize) -> String {
    format!(
        "{{\"grant_type\":\"client_credentials\",\"x\":{}1{}}}",
        "[".repeat(depth - 1),
        "]".repeat(depth - 1)
    )
}

#[tokio::test]
async fn deeply_nested_json_is_refused_with_its_own_code() {
    let (app, token) = app_and_token(&[]).await;
    let r = app
        .http
        .post(app.url("/api/v1/auth/token"))
        .header("content-type", "application/json")
        .body(deep_json(40))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.expect("json");
    assert_eq!(code(&body), "JSON_TOO_DEEP", "{body}");

    // At the limit (32 levels) the body is judged on its content instead.
    let r = app
        .http
        .post(app.url("/api/v1/auth/token"))
        .header("content-type", "application/json")
        .body(deep_json(32))
        .send()
        .await
        .expect("request");
    let body: Value = r.json().await.expect("json");
    assert_ne!(code(&body), "JSON_TOO_DEEP", "{body}");

    let r = app
        .http
        .post(app.url("/api/v1/kyc/liveness/sessions"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(format!("{{\"a\":{}{}}}", "[".repeat(40), "]".repeat(40)))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 400);
    assert_eq!(code(&r.json().await.expect("json")), "JSON_TOO_DEEP");
}

#[tokio::test]
async fn json_bodies_over_the_configured_size_are_413() {
    let (app, token) = app_and_token(&[("KYC__HTTP__JSON_BODY_LIMIT", "1024".into())]).await;
    let request = |pad: usize| {
        json!({
            "grant_type": "client_credentials",
            "client_id": "kyc-client",
            "client_secret": "kyc-client-secret",
            "pad": "x".repeat(pad),
        })
    };
    let (status, _) = app.token_json(request(10)).await;
    assert_eq!(status, 200, "a small body passes");
    let (status, body) = app.token_json(request(2048)).await;
    assert_eq!((status, code(&body)), (413, "PAYLOAD_TOO_LARGE"), "{body}");

    let r = app
        .http
        .post(app.url("/api/v1/kyc/liveness/sessions"))
        .bearer_auth(&token)
        .json(&json!({ "pad": "x".repeat(2048) }))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 413);
    assert_eq!(code(&r.json().await.expect("json")), "PAYLOAD_TOO_LARGE");
}
