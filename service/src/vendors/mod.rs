//! Vendor clients over the vendor HTTP contract (`docs/vendor-api.yaml`): ID-card OCR, face
//! comparison and liveness. Each vendor has its timeout, bounded retries with jittered
//! exponential backoff on transient failures only (connect errors, timeouts, 502/503/504), a
//! circuit breaker, and a concurrency and rate quota. Every attempt is a `vendor_calls` row and a
//! metric. The API key travels only in the `X-Api-Key` header and is never logged.

pub mod breaker;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::Semaphore;
use uuid::Uuid;

use self::breaker::Breaker;
use crate::config::{ThirdPartySettings, VendorSettings};
use crate::kyc::liveness::Action;
use crate::kyc::ports::{LivenessCheck, OcrReading, VendorError, Vendors};
use crate::metrics::Metrics;

/// Which vendor: also the `vendor` label and the `vendor_calls.vendor` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VendorKind {
    Ocr,
    Face,
    Liveness,
}

impl VendorKind {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ocr => "ocr",
            Self::Face => "face",
            Self::Liveness => "liveness",
        }
    }
}

/// How one attempt ended.
enum Attempt {
    Ok(Value),
    /// Worth retrying: the vendor may answer next time.
    Transient {
        outcome: &'static str,
        status: Option<u16>,
        timeout: bool,
    },
    /// The vendor refused the input.
    Rejected {
        status: u16,
        code: String,
    },
    /// Not worth retrying and not the input's fault (garbage body, 429, other 5xx).
    Failed {
        outcome: &'static str,
        status: Option<u16>,
    },
}

pub struct HttpVendor {
    kind: VendorKind,
    http: reqwest::Client,
    base: String,
    api_key: SecretString,
    timeout: Duration,
    retries: u32,
    breaker: Breaker,
    slots: Semaphore,
    quota: DefaultDirectRateLimiter,
    db: PgPool,
    metrics: Arc<Metrics>,
}

impl HttpVendor {
    #[must_use]
    pub fn new(
        kind: VendorKind,
        s: &VendorSettings,
        http: reqwest::Client,
        db: PgPool,
        metrics: Arc<Metrics>,
    ) -> Self {
        let rate = NonZeroU32::new(s.rate_limit_per_second).unwrap_or(NonZeroU32::MIN);
        Self {
            kind,
            http,
            base: s.url.clone(),
            api_key: s.api_key.clone(),
            timeout: s.timeout,
            retries: s.retry_count,
            breaker: Breaker::new(s.circuit_failure_threshold, s.circuit_open),
            slots: Semaphore::new(s.max_concurrency),
            quota: RateLimiter::direct(Quota::per_second(rate)),
            db,
            metrics,
        }
    }

    /// 0 closed, 1 open, 2 half-open.
    #[must_use]
    pub fn circuit_state(&self) -> i64 {
        self.breaker.gauge()
    }

    /// One HTTP attempt, bounded by `timeout`. The status decides before the body is read, so a
    /// 4xx is never retried even if its body fails to arrive.
    async fn attempt(&self, path: &str, body: &[u8], timeout: Duration) -> Attempt {
        let mut key = reqwest::header::HeaderValue::from_str(self.api_key.expose_secret())
            .unwrap_or_else(|_| reqwest::header::HeaderValue::from_static("invalid"));
        key.set_sensitive(true);
        let sent = self
            .http
            .post(format!("{}{path}", self.base))
            .header("X-Api-Key", key)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .timeout(timeout)
            .body(body.to_vec())
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return Attempt::Transient {
                    outcome: "timeout",
                    status: None,
                    timeout: true,
                };
            }
            Err(e) if e.is_connect() => {
                return Attempt::Transient {
                    outcome: "connect_error",
                    status: None,
                    timeout: false,
                };
            }
            Err(_) => {
                return Attempt::Failed {
                    outcome: "transport_error",
                    status: None,
                };
            }
        };
        let status = resp.status().as_u16();
        match status {
            200..=299 => {}
            502..=504 => {
                return Attempt::Transient {
                    outcome: "server_error",
                    status: Some(status),
                    timeout: false,
                };
            }
            429 => {
                return Attempt::Failed {
                    outcome: "rate_limited",
                    status: Some(status),
                };
            }
            // The vendor judged the input: a verdict on the document or face, not an outage.
            400 | 422 => {
                let code = read_limited(resp)
                    .await
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                    .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
                    .filter(|c| {
                        c.len() <= 64 && c.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
                    })
                    .unwrap_or_else(|| format!("HTTP_{status}"));
                return Attempt::Rejected { status, code };
            }
            // A wrong key, URL or size is our misconfiguration: an error outcome, not a verdict.
            400..=499 => {
                return Attempt::Failed {
                    outcome: "client_error",
                    status: Some(status),
                };
            }
            _ => {
                return Attempt::Failed {
                    outcome: "server_error",
                    status: Some(status),
                };
            }
        }
        match read_limited(resp).await {
            None => Attempt::Failed {
                outcome: "malformed",
                status: Some(status),
            },
            Some(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                Ok(v) => Attempt::Ok(v),
                Err(_) => Attempt::Failed {
                    outcome: "malformed",
                    status: Some(status),
                },
            },
        }
    }

    /// "Equal jitter" backoff: half the exponential step fixed, half random.
    fn backoff(attempt: u32) -> Duration {
        let step = Duration::from_millis(100)
            .saturating_mul(1 << attempt.min(5))
            .min(Duration::from_secs(2));
        let half = step / 2;
        half + half.mul_f64(rand::thread_rng().gen_range(0.0..=1.0))
    }

    /// Posts the body `make_body` builds to `path`, within `deadline`, with the quota, breaker and
    /// retry policy, recording each attempt. The body (base64 images) is built only once a slot is
    /// held, so queued calls hold no copies of the images.
    async fn call<T: DeserializeOwned>(
        &self,
        request_id: Uuid,
        path: &str,
        deadline: tokio::time::Instant,
        make_body: impl FnOnce() -> Value,
    ) -> Result<T, VendorError> {
        let vendor = self.kind.as_str();
        let refused = |outcome: &str| {
            self.metrics
                .vendor_calls_total
                .with_label_values(&[vendor, outcome])
                .inc();
        };
        let Ok(Ok(_permit)) = tokio::time::timeout_at(deadline, self.slots.acquire()).await else {
            refused("quota_exhausted");
            return Err(VendorError::Timeout);
        };
        if tokio::time::timeout_at(deadline, self.quota.until_ready())
            .await
            .is_err()
        {
            refused("quota_exhausted");
            return Err(VendorError::Timeout);
        }
        // Asked last, so a half-open probe is claimed only by a call that goes out; the guard
        // reports a failure if the call is abandoned (cancelled) before its verdict.
        let Some(verdict) = self.breaker.claim() else {
            refused("circuit_open");
            return Err(VendorError::Unavailable);
        };
        let body = serde_json::to_vec(&make_body()).map_err(|_| VendorError::Unavailable)?;
        let mut attempt_no = 1;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                verdict.failure();
                return Err(VendorError::Timeout);
            }
            let started = Instant::now();
            let mut result = self.attempt(path, &body, self.timeout.min(remaining)).await;
            // Success is decided only once the answer matches the contract.
            let mut parsed = None;
            if let Attempt::Ok(v) = &result {
                match serde_json::from_value::<T>(v.clone()) {
                    Ok(t) => parsed = Some(t),
                    Err(_) => {
                        result = Attempt::Failed {
                            outcome: "malformed",
                            status: Some(200),
                        }
                    }
                }
            }
            let elapsed = started.elapsed();
            let (outcome, status, code) = match &result {
                Attempt::Ok(_) => ("ok", Some(200), None),
                Attempt::Transient {
                    outcome, status, ..
                }
                | Attempt::Failed { outcome, status } => (*outcome, *status, None),
                Attempt::Rejected { status, code } => {
                    ("rejected", Some(*status), Some(code.clone()))
                }
            };
            self.metrics
                .vendor_calls_total
                .with_label_values(&[vendor, outcome])
                .inc();
            self.metrics
                .vendor_call_duration_seconds
                .with_label_values(&[vendor])
                .observe(elapsed.as_secs_f64());
            self.record(
                request_id,
                attempt_no,
                outcome,
                status,
                code.as_deref(),
                elapsed,
            )
            .await;
            match result {
                Attempt::Ok(_) => {
                    verdict.success();
                    return parsed.ok_or(VendorError::Unavailable);
                }
                Attempt::Rejected { code, .. } => {
                    verdict.success();
                    return Err(VendorError::Rejected(code));
                }
                Attempt::Transient { .. }
                    if attempt_no <= self.retries
                        && tokio::time::Instant::now() + Self::backoff(attempt_no - 1)
                            < deadline =>
                {
                    tokio::time::sleep(Self::backoff(attempt_no - 1)).await;
                    // A retry is a call like any other: it waits for the rate quota too.
                    if tokio::time::timeout_at(deadline, self.quota.until_ready())
                        .await
                        .is_err()
                    {
                        verdict.failure();
                        return Err(VendorError::Timeout);
                    }
                    attempt_no += 1;
                }
                Attempt::Transient { timeout, .. } => {
                    verdict.failure();
                    return Err(if timeout {
                        VendorError::Timeout
                    } else {
                        VendorError::Unavailable
                    });
                }
                Attempt::Failed { .. } => {
                    verdict.failure();
                    return Err(VendorError::Unavailable);
                }
            }
        }
    }

    async fn record(
        &self,
        request_id: Uuid,
        attempt: u32,
        outcome: &str,
        status: Option<u16>,
        code: Option<&str>,
        elapsed: Duration,
    ) {
        let saved = crate::store::vendor_calls::record(
            &self.db,
            request_id,
            self.kind.as_str(),
            attempt,
            outcome,
            status,
            code,
            elapsed,
        )
        .await;
        if let Err(e) = saved {
            tracing::warn!(vendor = self.kind.as_str(), %request_id, error = %e, "vendor call not recorded");
        }
    }
}

/// The largest vendor answer read; anything bigger is treated as malformed.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

async fn read_limited(mut resp: reqwest::Response) -> Option<Vec<u8>> {
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
    {
        return None;
    }
    let mut out = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        if out.len() + chunk.len() > MAX_ANSWER_BYTES {
            return None;
        }
        out.extend_from_slice(&chunk);
    }
    Some(out)
}

/// The three vendors the workflow calls.
pub struct VendorSet {
    pub ocr: HttpVendor,
    pub face: HttpVendor,
    pub liveness: HttpVendor,
}

impl VendorSet {
    /// # Errors
    /// When the HTTP client cannot be built (TLS setup).
    pub fn new(
        s: &ThirdPartySettings,
        db: &PgPool,
        metrics: &Arc<Metrics>,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("kyc-service/", env!("CARGO_PKG_VERSION")))
            // A redirect would carry the API key and the images elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let make = |kind, v: &VendorSettings| {
            HttpVendor::new(kind, v, http.clone(), db.clone(), metrics.clone())
        };
        Ok(Self {
            ocr: make(VendorKind::Ocr, &s.ocr_service),
            face: make(VendorKind::Face, &s.face_service),
            liveness: make(VendorKind::Liveness, &s.liveness_service),
        })
    }
}

#[derive(serde::Deserialize)]
struct FaceScore {
    score: f64,
}

#[async_trait]
impl Vendors for VendorSet {
    async fn read_id_card(
        &self,
        request_id: Uuid,
        image: &[u8],
        deadline: tokio::time::Instant,
    ) -> Result<OcrReading, VendorError> {
        self.ocr
            .call(
                request_id,
                "/v1/idcard/ocr",
                deadline,
                || json!({ "image": STANDARD.encode(image), "side": "front" }),
            )
            .await
    }

    async fn compare_faces(
        &self,
        request_id: Uuid,
        a: &[u8],
        b: &[u8],
        deadline: tokio::time::Instant,
    ) -> Result<f64, VendorError> {
        let r: FaceScore = self
            .face
            .call(
                request_id,
                "/v1/face/compare",
                deadline,
                || json!({ "image_a": STANDARD.encode(a), "image_b": STANDARD.encode(b) }),
            )
            .await?;
        if (0.0..=1.0).contains(&r.score) {
            Ok(r.score)
        } else {
            Err(VendorError::Unavailable)
        }
    }

    async fn check_liveness(
        &self,
        request_id: Uuid,
        action: Action,
        frames: &[Vec<u8>],
        deadline: tokio::time::Instant,
    ) -> Result<LivenessCheck, VendorError> {
        let r: LivenessCheck = self
            .liveness
            .call(request_id, "/v1/liveness/check", deadline, || {
                let frames: Vec<String> = frames.iter().map(|f| STANDARD.encode(f)).collect();
                json!({ "action": action.as_str(), "frames": frames })
            })
            .await?;
        if (0.0..=1.0).contains(&r.score) {
            Ok(r)
        } else {
            Err(VendorError::Unavailable)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::HttpVendor;

    #[test]
    fn backoff_grows_and_stays_bounded() {
        for attempt in 0..10 {
            let d = HttpVendor::backoff(attempt);
            let step = std::time::Duration::from_millis(100 * (1 << attempt.min(5)))
                .min(std::time::Duration::from_secs(2));
            assert!(d >= step / 2 && d <= step, "attempt {attempt}: {d:?}");
        }
    }
}
