//! Redis: the cluster-wide per-client rate limit (GCRA in one atomic Lua script), single-use
//! liveness tickets (by digest, taken with `GETDEL`), and its health.
//!
//! Redis is an accelerator, not a dependency the service dies with: when it cannot be reached the
//! caller decides (fail open or closed), the failure is counted, and calls are skipped for a short
//! back-off so an outage costs requests no dial timeouts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use deadpool_redis::redis::{self, Script};
use deadpool_redis::{Pool, PoolConfig, Runtime, Timeouts};
use secrecy::ExposeSecret;
use uuid::Uuid;

use crate::config::RedisSettings;
use crate::kyc::ports::{LivenessTickets, StoreError};

/// The most a request waits for the rate limiter before its fail-open/closed policy applies.
const RATE_LIMIT_BUDGET: Duration = Duration::from_millis(250);

/// How long calls are skipped after Redis failed, before the next attempt.
const BACKOFF_AFTER_FAILURE: Duration = Duration::from_millis(500);

/// GCRA with burst: the theoretical arrival time (TAT, in µs of Redis' clock) is the only state.
/// Returns {allowed, remaining, retry_after_us, reset_after_us}.
const GCRA: &str = r"
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if now < allow_at then
  return {0, 0, allow_at - now, tat - now}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, math.floor((now - allow_at) / interval), 0, new_tat - now}
";

#[derive(Debug, thiserror::Error)]
#[error("redis is unavailable: {0}")]
pub struct RedisUnavailable(String);

/// One rate-limit answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    pub allowed: bool,
    /// Requests that could still be made right now.
    pub remaining: u64,
    /// When the next request would be admitted (zero when allowed).
    pub retry_after: Duration,
    /// When the bucket is full again.
    pub reset_after: Duration,
}

pub struct RedisStore {
    pool: Pool,
    prefix: String,
    gcra: Script,
    op_timeout: Duration,
    max_retries: u32,
    min_idle: usize,
    started: Instant,
    skip_until_ms: AtomicU64,
}

impl RedisStore {
    /// Builds the pool without connecting: the service starts even when Redis is down.
    ///
    /// # Errors
    /// When the URL or pool settings are invalid.
    pub fn new(s: &RedisSettings) -> Result<Self, RedisUnavailable> {
        let mut cfg = deadpool_redis::Config::from_url(s.url().expose_secret());
        let mut pool_cfg = PoolConfig::new(s.pool_size);
        pool_cfg.timeouts = Timeouts {
            wait: Some(s.dial_timeout),
            create: Some(s.dial_timeout),
            recycle: Some(s.read_timeout),
        };
        cfg.pool = Some(pool_cfg);
        let pool = cfg
            .create_pool(Some(Runtime::Tokio1))
            .map_err(|e| RedisUnavailable(e.to_string()))?;
        Ok(Self {
            pool,
            prefix: s.key_prefix.clone(),
            gcra: Script::new(GCRA),
            op_timeout: s.write_timeout + s.read_timeout,
            max_retries: s.max_retries,
            min_idle: s.min_idle_conns,
            started: Instant::now(),
            skip_until_ms: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn back_off(&self) {
        self.skip_until_ms.store(
            self.now_ms() + u64::try_from(BACKOFF_AFTER_FAILURE.as_millis()).unwrap_or(500),
            Ordering::Relaxed,
        );
    }

    /// Opens `min_idle_conns` connections so the first requests do not pay for them.
    pub async fn warm_up(&self) {
        let conns = futures::future::join_all((0..self.min_idle).map(|_| self.pool.get())).await;
        let opened = conns.iter().filter(|c| c.is_ok()).count();
        tracing::info!(opened, wanted = self.min_idle, "redis pool warmed up");
    }

    /// (in use, idle, max) connections of the pool.
    #[must_use]
    pub fn pool_status(&self) -> (usize, usize, usize) {
        let s = self.pool.status();
        (s.size - s.available, s.available, s.max_size)
    }

    /// Runs `op` on a pooled connection, bounded by the configured timeouts; a dropped connection
    /// is retried up to `max_retries` times on a fresh one.
    async fn run<T, F, Fut>(&self, op: F) -> Result<T, RedisUnavailable>
    where
        F: Fn(deadpool_redis::Connection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        if self.now_ms() < self.skip_until_ms.load(Ordering::Relaxed) {
            return Err(RedisUnavailable(
                "backing off after a recent failure".into(),
            ));
        }
        let mut attempt = 0;
        loop {
            let result = async {
                let conn = self
                    .pool
                    .get()
                    .await
                    .map_err(|e| RedisUnavailable(e.to_string()))?;
                tokio::time::timeout(self.op_timeout, op(conn))
                    .await
                    .map_err(|_| RedisUnavailable("timed out".into()))?
                    .map_err(|e| RedisUnavailable(e.to_string()))
            }
            .await;
            match result {
                Ok(v) => return Ok(v),
                Err(e) if attempt < self.max_retries && is_dropped_connection(&e) => attempt += 1,
                Err(e) => {
                    self.skip_until_ms.store(
                        self.now_ms()
                            + u64::try_from(BACKOFF_AFTER_FAILURE.as_millis()).unwrap_or(500),
                        Ordering::Relaxed,
                    );
                    return Err(e);
                }
            }
        }
    }

    /// # Errors
    /// When Redis cannot be reached in time.
    pub async fn ping(&self) -> Result<Duration, RedisUnavailable> {
        let started = Instant::now();
        self.run(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await })
            .await?;
        Ok(started.elapsed())
    }

    /// Admits or refuses one request against `rate` per second with `burst`, for `key`.
    ///
    /// # Errors
    /// When Redis cannot be reached in time: the caller applies its fail-open/closed policy.
    pub async fn rate_limit(
        &self,
        key: &str,
        rate: u32,
        burst: u32,
    ) -> Result<RateDecision, RedisUnavailable> {
        let key = format!("{}rl:{key}", self.prefix);
        let interval_us = 1_000_000 / u64::from(rate.max(1));
        let call = self.run(|mut c| {
            let mut inv = self.gcra.key(&key);
            inv.arg(interval_us).arg(burst);
            async move { inv.invoke_async(&mut c).await }
        });
        // Requests must not wait on a struggling Redis: past this budget the caller's
        // fail-open/closed policy applies, and the back-off spares the next requests.
        let (allowed, remaining, retry_us, reset_us): (i64, i64, i64, i64) =
            match tokio::time::timeout(RATE_LIMIT_BUDGET, call).await {
                Ok(r) => r?,
                Err(_) => {
                    self.back_off();
                    return Err(RedisUnavailable(
                        "no answer within the rate-limit budget".into(),
                    ));
                }
            };
        let us = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
        Ok(RateDecision {
            allowed: allowed == 1,
            remaining: u64::try_from(remaining).unwrap_or(0),
            retry_after: us(retry_us),
            reset_after: us(reset_us),
        })
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct TicketValue {
    session_id: Uuid,
    client_id: String,
}

#[async_trait]
impl LivenessTickets for RedisStore {
    async fn put_ticket(
        &self,
        digest: &str,
        session_id: Uuid,
        client_id: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let key = format!("{}liveness:ticket:{digest}", self.prefix);
        let value = serde_json::to_string(&TicketValue {
            session_id,
            client_id: client_id.to_owned(),
        })
        .map_err(|e| StoreError::Other(e.to_string()))?;
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        self.run(|mut c| {
            let mut cmd = redis::cmd("SET");
            cmd.arg(&key).arg(&value).arg("PX").arg(ms);
            async move { cmd.query_async::<()>(&mut c).await }
        })
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "liveness ticket not stored");
            StoreError::Unavailable
        })
    }

    async fn take_ticket(&self, digest: &str) -> Result<Option<(Uuid, String)>, StoreError> {
        let key = format!("{}liveness:ticket:{digest}", self.prefix);
        let value: Option<String> = self
            .run(|mut c| {
                let mut cmd = redis::cmd("GETDEL");
                cmd.arg(&key);
                async move { cmd.query_async(&mut c).await }
            })
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "liveness ticket not read");
                StoreError::Unavailable
            })?;
        Ok(value
            .and_then(|v| serde_json::from_str::<TicketValue>(&v).ok())
            .map(|t| (t.session_id, t.client_id)))
    }
}

fn is_dropped_connection(e: &RedisUnavailable) -> bool {
    let m = e.0.to_ascii_lowercase();
    m.contains("broken pipe")
        || m.contains("connection reset")
        || m.contains("connection closed")
        || m.contains("terminated")
}
