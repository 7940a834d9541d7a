//! The service's multipart reader and image check (`kyc_service::http::upload`), as an upload
//! endpoint runs them: the first byte picks the endpoint's file fields, the rest is the body of a
//! `multipart/form-data; boundary=fuzz` request. Never panics; every refusal is a 4xx.

#![no_main]

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Request};
use axum::response::IntoResponse;
use kyc_service::error::AppError;
use kyc_service::http::upload::{ImageLimits, Upload, UploadLimits};
use libfuzzer_sys::fuzz_target;

const LIMITS: UploadLimits = UploadLimits {
    max_parts: 16,
    max_field_bytes: 4096,
    max_file_name_bytes: 255,
    max_file_bytes: 256 * 1024,
    body_limit: 1024 * 1024,
    image: ImageLimits {
        max_width: 4096,
        max_height: 4096,
        max_pixels: 8_000_000,
    },
};

const ENDPOINTS: [&[&str]; 3] = [
    &["image"],
    &["image1", "image2"],
    &["idcard_image", "face_image"],
];

fn assert_client_error(e: AppError) {
    let status = e.into_response().status();
    assert!(status.is_client_error(), "a refusal answered {status}");
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let files = ENDPOINTS[usize::from(pick) % ENDPOINTS.len()];
    let req = Request::builder()
        .method("POST")
        .uri("/api/v1/kyc/verify")
        .header("content-type", "multipart/form-data; boundary=fuzz")
        .body(Body::from(body.to_vec()))
        .expect("a valid request");
    futures::executor::block_on(async {
        let Ok(mp) = Multipart::from_request(req, &()).await else {
            return;
        };
        match Upload::read(mp, files, &LIMITS).await {
            Ok(mut up) => {
                let _ = up.fingerprint("POST", "/api/v1/kyc/verify");
                for t in ["name", "idcard", "phone", "user_id", "language"] {
                    if let Some(v) = up.text(t) {
                        assert!(v.len() <= LIMITS.max_field_bytes);
                    }
                }
                for f in files {
                    match up.image(f) {
                        Ok(img) => assert!(!img.is_empty() && img.len() <= LIMITS.max_file_bytes),
                        Err(e) => assert_client_error(e),
                    }
                }
            }
            Err(e) => assert_client_error(e),
        }
    });
});
