//! ID-card OCR over HTTP: the sandbox reads back exactly what its fixtures were made with, flags
//! photocopies and edits, and refuses what is not an image or not a card.

mod common;

use common::{Sandbox, b64, error, png};
use image::{DynamicImage, Rgb, RgbImage};
use kyc_sandbox::{Person, card, imaging};
use serde_json::{Value, json};

async fn ocr(sandbox: &Sandbox, image: &[u8]) -> reqwest::Response {
    sandbox
        .post(
            "/v1/idcard/ocr",
            &json!({"image": b64(image), "side": "front"}),
        )
        .await
}

fn jpeg(img: RgbImage) -> Vec<u8> {
    imaging::encode_jpeg(&DynamicImage::ImageRgb8(img), 85)
}

#[tokio::test]
async fn ocr_reads_back_exactly_the_name_id_and_address_given_to_fixtures() {
    let sandbox = Sandbox::start().await;
    let person =
        Person::new("张三", "11010519491231002X", Some("北京市朝阳区建国路1号")).expect("valid");
    let resp = ocr(&sandbox, &jpeg(person.card_image())).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(body["name"], "张三");
    assert_eq!(body["id_number"], "11010519491231002X");
    assert_eq!(body["sex"], "女");
    assert_eq!(body["ethnicity"], "汉");
    assert_eq!(body["birth_date"], "1949-12-31");
    assert_eq!(body["address"], "北京市朝阳区建国路1号");
    assert_eq!(body["confidence"], 0.98);
    assert_eq!(
        body["warnings"],
        json!({"photocopy": false, "screen_reshoot": false, "edited": false, "low_quality": false})
    );
    assert!(uuid::Uuid::parse_str(body["request_id"].as_str().expect("request_id")).is_ok());
}

#[tokio::test]
async fn ocr_reads_a_second_person_with_a_long_address_and_another_ethnicity() {
    let sandbox = Sandbox::start().await;
    let address = "新疆维吾尔自治区乌鲁木齐市天山区解放南路第三百六十八号幸福花园小区十二栋三单元七百零一室（靠近人民公园东门）";
    let person = Person::new("阿卜杜热合曼·买买提", "650102198807150030", Some(address))
        .and_then(|p| p.with_ethnicity("维吾尔"))
        .expect("valid");
    let body: Value = ocr(&sandbox, &jpeg(person.card_image()))
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(body["name"], "阿卜杜热合曼·买买提");
    assert_eq!(body["id_number"], "650102198807150030");
    assert_eq!(body["sex"], "男");
    assert_eq!(body["ethnicity"], "维吾尔");
    assert_eq!(body["birth_date"], "1988-07-15");
    assert_eq!(body["address"], address);
    assert_eq!(body["warnings"]["edited"], false);
}

#[tokio::test]
async fn a_grayscale_photocopy_reads_but_is_flagged() {
    let sandbox = Sandbox::start().await;
    let person = Person::new("张三", "11010519491231002X", None).expect("valid");
    let gray = imaging::to_gray(&person.card_image());
    let copy = imaging::encode_jpeg(&DynamicImage::ImageLuma8(gray), 85);
    let body: Value = ocr(&sandbox, &copy).await.json().await.expect("JSON");
    assert_eq!(body["id_number"], "11010519491231002X");
    assert_eq!(body["warnings"]["photocopy"], true);
    assert_eq!(body["warnings"]["edited"], false);
}

#[tokio::test]
async fn the_card_still_reads_as_png_and_when_rescaled() {
    let sandbox = Sandbox::start().await;
    let person = Person::new("李四", "44030519900101123X", None).expect("valid");
    let decoded = imaging::decode(&jpeg(person.card_image())).expect("decodes");
    let as_png = png(decoded.clone());
    let smaller = png(image::imageops::resize(
        &decoded,
        642,
        405,
        image::imageops::FilterType::Triangle,
    ));
    for bytes in [as_png, smaller] {
        let body: Value = ocr(&sandbox, &bytes).await.json().await.expect("JSON");
        assert_eq!(body["name"], "李四");
        assert_eq!(body["id_number"], "44030519900101123X");
        assert_eq!(body["sex"], "男");
    }
}

#[tokio::test]
async fn a_card_whose_id_number_was_altered_in_the_band_reads_as_edited() {
    let sandbox = Sandbox::start().await;
    let person = Person::new("张三", "11010519491231002X", None).expect("valid");
    let mut img = person.card_image();
    // The ID's 15th character sits after KS1 (3), the length (2), the name (1 + 6 bytes) and the
    // ethnicity (1 + 3 bytes); flipping its lowest bit turns '0' into '1'.
    let byte = 3 + 2 + 1 + "张三".len() + 1 + "汉".len() + 14;
    let (x, y, w, h) = card::cell_rect(byte * 8 + 7);
    let was_dark = img.get_pixel(x + w / 2, y + h / 2)[0] < 128;
    let flipped = if was_dark {
        Rgb([240, 244, 250])
    } else {
        Rgb([24, 40, 88])
    };
    imaging::fill_rect(
        &mut img,
        x as f32,
        y as f32,
        (x + w) as f32,
        (y + h) as f32,
        flipped,
    );
    let resp = ocr(&sandbox, &jpeg(img)).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(body["id_number"], "11010519491231102X");
    assert_eq!(body["warnings"]["edited"], true);
    assert!(body["confidence"].as_f64().expect("number") <= 0.5);
}

#[tokio::test]
async fn a_card_with_its_band_painted_over_has_no_card() {
    let sandbox = Sandbox::start().await;
    let mut img = Person::new("张三", "11010519491231002X", None)
        .expect("valid")
        .card_image();
    imaging::fill_rect(&mut img, 30.0, 66.0, 602.0, 446.0, Rgb([235, 235, 235]));
    assert_eq!(
        error(ocr(&sandbox, &jpeg(img)).await).await,
        (422, "NO_CARD_FOUND".into())
    );
}

#[tokio::test]
async fn a_photo_without_a_card_has_no_card() {
    let sandbox = Sandbox::start().await;
    let img = RgbImage::from_fn(400, 300, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 90]));
    assert_eq!(
        error(ocr(&sandbox, &png(img)).await).await,
        (422, "NO_CARD_FOUND".into())
    );
}

#[tokio::test]
async fn bytes_that_are_not_a_decodable_jpeg_or_png_are_invalid_image() {
    let sandbox = Sandbox::start().await;
    let truncated_jpeg = {
        let mut j = jpeg(RgbImage::from_pixel(64, 64, Rgb([1, 2, 3])));
        j.truncate(40);
        j
    };
    let gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".to_vec();
    for bytes in [b"hello, not an image".to_vec(), truncated_jpeg, gif] {
        assert_eq!(
            error(ocr(&sandbox, &bytes).await).await,
            (400, "INVALID_IMAGE".into())
        );
    }
    let not_base64 = sandbox
        .post("/v1/idcard/ocr", &json!({"image": "@@@ not base64 @@@"}))
        .await;
    assert_eq!(error(not_base64).await, (400, "INVALID_IMAGE".into()));
}

#[tokio::test]
async fn a_body_that_is_not_json_or_lacks_the_image_is_bad_request() {
    let sandbox = Sandbox::start().await;
    let not_json = sandbox
        .client
        .post(sandbox.url("/v1/idcard/ocr"))
        .header("X-Api-Key", common::KEY)
        .body("image=abc")
        .send()
        .await
        .expect("answers");
    assert_eq!(error(not_json).await, (400, "BAD_REQUEST".into()));
    let missing = sandbox
        .post("/v1/idcard/ocr", &json!({"side": "front"}))
        .await;
    assert_eq!(error(missing).await, (400, "BAD_REQUEST".into()));
    let bad_side = sandbox
        .post("/v1/idcard/ocr", &json!({"image": "", "side": "top"}))
        .await;
    assert_eq!(error(bad_side).await, (400, "BAD_REQUEST".into()));
}
