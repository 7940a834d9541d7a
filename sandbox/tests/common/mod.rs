//! The test harness: each test gets its own sandbox, in process on 127.0.0.1:0, and a client.

#![allow(dead_code)]

use std::time::Duration;

use base64::Engine as _;
use image::{DynamicImage, Rgb, RgbImage};
use kyc_sandbox::{Config, RunningSandbox};
use serde_json::{Value, json};

pub const KEY: &str = "ocr-api-key";

pub struct Sandbox {
    pub running: RunningSandbox,
    pub client: reqwest::Client,
}

impl Sandbox {
    pub async fn start() -> Self {
        Self::start_with(Config::default()).await
    }

    pub async fn start_with(config: Config) -> Self {
        let running = kyc_sandbox::spawn(config).await.expect("bind 127.0.0.1:0");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        Self { running, client }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.running.url())
    }

    /// POSTs `body` with the seed's OCR key and `headers`.
    pub async fn post_with(
        &self,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = self
            .client
            .post(self.url(path))
            .header("X-Api-Key", KEY)
            .json(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.expect("the sandbox answers")
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.post_with(path, body, &[]).await
    }

    pub async fn put_faults(&self, faults: Value) -> reqwest::Response {
        self.client
            .put(self.url("/sandbox/faults"))
            .json(&faults)
            .send()
            .await
            .expect("the sandbox answers")
    }

    pub async fn get_json(&self, path: &str) -> Value {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("the sandbox answers")
            .json()
            .await
            .expect("JSON")
    }

    pub async fn stats(&self) -> Value {
        self.get_json("/sandbox/stats").await
    }

    /// A liveness check that succeeds unless a fault intervenes: two small, different frames.
    pub async fn liveness_with(&self, headers: &[(&str, &str)]) -> reqwest::Response {
        self.post_with("/v1/liveness/check", &moving_frames_body(), headers)
            .await
    }
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn png(img: RgbImage) -> Vec<u8> {
    kyc_sandbox::imaging::encode_png(&DynamicImage::ImageRgb8(img))
}

pub fn moving_frames_body() -> Value {
    let a = png(RgbImage::from_pixel(32, 32, Rgb([40, 40, 40])));
    let b = png(RgbImage::from_pixel(32, 32, Rgb([200, 200, 200])));
    json!({"action": "blink", "frames": [b64(&a), b64(&b)]})
}

/// Status and the error body's code.
pub async fn error(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.expect("a JSON error body");
    let code = body["error"]["code"]
        .as_str()
        .expect("error.code")
        .to_owned();
    assert!(body["error"]["message"].is_string(), "{body}");
    (status, code)
}
