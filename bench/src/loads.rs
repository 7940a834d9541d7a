//! The loads no registry tool makes: complete verifications with a fresh Idempotency-Key each,
//! idle authenticated liveness WebSockets, and a paced load that reads every refusal's headers.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::{SinkExt as _, StreamExt as _};
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::tools::Percentiles;

fn percentile(sorted_ms: &[f64], p: f64) -> f64 {
    if sorted_ms.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted_ms.len() as f64).ceil() as usize;
    sorted_ms[rank.clamp(1, sorted_ms.len()) - 1]
}

fn percentiles(mut ms: Vec<f64>) -> Percentiles {
    ms.sort_by(f64::total_cmp);
    Percentiles {
        p50: percentile(&ms, 50.0),
        p75: percentile(&ms, 75.0),
        p90: percentile(&ms, 90.0),
        p99: percentile(&ms, 99.0),
        p95: Some(percentile(&ms, 95.0)),
        p999: None,
        p9999: None,
    }
}

/// A synthetic person's card and selfie, as `kyc-sandbox fixtures` writes them.
pub struct Person {
    pub name: String,
    pub id_number: String,
    pub idcard: Vec<u8>,
    pub face: Vec<u8>,
}

impl Person {
    pub fn load(dir: &Path, name: &str, id_number: &str) -> anyhow::Result<Self> {
        Ok(Self {
            name: name.to_owned(),
            id_number: id_number.to_owned(),
            idcard: std::fs::read(dir.join("idcard.jpg")).context("reading idcard.jpg")?,
            face: std::fs::read(dir.join("face.jpg")).context("reading face.jpg")?,
        })
    }
}

/// One `POST /api/v1/kyc/verify` as the seed's section 3.5 sends it, with a fresh key.
pub async fn verify_once(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    person: &Person,
) -> anyhow::Result<serde_json::Value> {
    let part = |bytes: &[u8], file: &str| {
        reqwest::multipart::Part::bytes(bytes.to_vec())
            .file_name(file.to_owned())
            .mime_str("image/jpeg")
    };
    let form = reqwest::multipart::Form::new()
        .part("idcard_image", part(&person.idcard, "idcard.jpg")?)
        .part("face_image", part(&person.face, "face.jpg")?)
        .text("name", person.name.clone())
        .text("idcard", person.id_number.clone())
        .text("phone", "13800138000");
    let resp = client
        .post(format!("{base}/api/v1/kyc/verify"))
        .bearer_auth(token)
        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
        .multipart(form)
        .send()
        .await?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        bail!("HTTP {status}: {}", body["code"].as_str().unwrap_or("?"));
    }
    Ok(body)
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyResult {
    pub requests: u64,
    pub errors: u64,
    /// Answers whose verification status was `success`.
    pub succeeded: u64,
    pub rps: f64,
    pub latency: Percentiles,
    pub first_error: Option<String>,
}

/// `concurrency` clients, each sending verifications back to back for `duration`.
pub async fn verify_load(
    base: &str,
    token: &str,
    person: Arc<Person>,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<VerifyResult> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_secs(60))
        .build()?;
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, base, token, person) = (
            client.clone(),
            base.to_owned(),
            token.to_owned(),
            Arc::clone(&person),
        );
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            let (mut errors, mut succeeded, mut first_error) = (0u64, 0u64, None);
            while Instant::now() < deadline {
                let t = Instant::now();
                match verify_once(&client, &base, &token, &person).await {
                    Ok(body) => {
                        times.push(t.elapsed().as_secs_f64() * 1000.0);
                        if body["status"] == "success" {
                            succeeded += 1;
                        }
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            (times, errors, succeeded, first_error)
        }));
    }
    let mut all = Vec::new();
    let (mut errors, mut succeeded, mut first_error) = (0, 0, None);
    for t in tasks {
        let (times, e, s, f) = t.await?;
        all.extend(times);
        errors += e;
        succeeded += s;
        first_error = first_error.or(f);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let requests = all.len() as u64 + errors;
    Ok(VerifyResult {
        requests,
        errors,
        succeeded,
        rps: requests as f64 / elapsed,
        latency: percentiles(all),
        first_error,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct RateResult {
    pub sent: u64,
    pub admitted: u64,
    pub refused: u64,
    /// 429s without a `Retry-After`.
    pub refused_without_retry_after: u64,
    /// Answers that were neither 2xx nor 429, and transport errors.
    pub other: u64,
    pub seconds: f64,
}

/// Sends `rate` requests per second in all, spread over `connections` clients, for `duration`,
/// each request due at its own time (`connections` keep-alive connections, one per client).
pub async fn rate_load(
    url: &str,
    token: &str,
    rate: f64,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<RateResult> {
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let started = tokio::time::Instant::now() + Duration::from_millis(50);
    let counters: Arc<[AtomicU64; 5]> = Arc::new(Default::default());
    let mut tasks = Vec::new();
    for c in 0..connections {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .timeout(Duration::from_secs(10))
            .build()?;
        let (url, token, counters) = (url.to_owned(), token.to_owned(), Arc::clone(&counters));
        tasks.push(tokio::spawn(async move {
            let mut i = c as u64;
            while i < total {
                tokio::time::sleep_until(started + interval * i as u32).await;
                let idx = match client.get(&url).bearer_auth(&token).send().await {
                    Ok(r) if r.status().is_success() => 1,
                    Ok(r) if r.status().as_u16() == 429 => {
                        if r.headers().contains_key("retry-after") {
                            2
                        } else {
                            3
                        }
                    }
                    _ => 4,
                };
                counters[0].fetch_add(1, Ordering::Relaxed);
                counters[idx].fetch_add(1, Ordering::Relaxed);
                i += connections as u64;
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let get = |i: usize| counters[i].load(Ordering::Relaxed);
    Ok(RateResult {
        sent: get(0),
        admitted: get(1),
        refused: get(2) + get(3),
        refused_without_retry_after: get(3),
        other: get(4),
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct WsResult {
    pub wanted: usize,
    pub opened: usize,
    pub open_failures: usize,
    pub first_failure: Option<String>,
    /// Connections still open after the hold (each answered a ping).
    pub survived: usize,
    pub open_seconds: f64,
}

/// Opens `n` liveness WebSockets with the token (each takes a new session and receives its
/// challenge), holds them idle, and counts those still open after `hold` by a ping on each.
/// `during_hold` runs once every connection is open (it reads memory).
pub async fn ws_idle<F>(
    ws_url: &str,
    token: &str,
    n: usize,
    hold: Duration,
    during_hold: F,
) -> anyhow::Result<WsResult>
where
    F: AsyncFnOnce() -> anyhow::Result<()>,
{
    let gate = Arc::new(Semaphore::new(64));
    let started = Instant::now();
    let mut opening = Vec::with_capacity(n);
    for _ in 0..n {
        let gate = Arc::clone(&gate);
        let mut req = ws_url.into_client_request()?;
        req.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}"))?,
        );
        opening.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;
            // The challenge: the session is active and the connection is the service's.
            match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
                Ok(Some(Ok(m))) if m.is_text() => Ok(ws),
                other => bail!("no challenge: {other:?}"),
            }
        }));
    }
    let mut sockets = Vec::with_capacity(n);
    let mut first_failure = None;
    for t in opening {
        match t.await? {
            Ok(ws) => sockets.push(ws),
            Err(e) => {
                first_failure.get_or_insert_with(|| e.to_string());
            }
        }
    }
    let open_seconds = started.elapsed().as_secs_f64();
    let opened = sockets.len();
    during_hold().await?;
    tokio::time::sleep(hold).await;
    let mut alive = 0;
    let checks = sockets.into_iter().map(|mut ws| async move {
        if ws
            .send(tokio_tungstenite::tungstenite::Message::Ping(
                b"bench".to_vec().into(),
            ))
            .await
            .is_err()
        {
            return false;
        }
        let ok = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(Ok(m)) = ws.next().await {
                if m.is_pong() {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or(false);
        let _ = ws.close(None).await;
        ok
    });
    for ok in futures::stream::iter(checks)
        .buffer_unordered(256)
        .collect::<Vec<_>>()
        .await
    {
        alive += usize::from(ok);
    }
    Ok(WsResult {
        wanted: n,
        opened,
        open_failures: n - opened,
        first_failure,
        survived: alive,
        open_seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let p = percentiles((1..=100).map(f64::from).rev().collect());
        assert_eq!(p.p50, 50.0);
        assert_eq!(p.p99, 99.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
    }
}
