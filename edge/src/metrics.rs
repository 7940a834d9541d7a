//! `GET /metrics` on the Admin API: Kong's Prometheus plugin names for traffic and latency, and the
//! filters' own metrics (`proxy_define_metric`) exported as Kong 3.9 does, `pw_<filter>_<name>`.
//! Filter metrics live once per node: a name defined by every worker is one series.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// Kong's default latency buckets, in milliseconds.
const LATENCY_BUCKETS_MS: &[f64] = &[
    1.0, 2.0, 5.0, 7.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0,
    200.0, 300.0, 400.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 30000.0, 60000.0,
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

impl MetricKind {
    pub fn from_abi(v: i32) -> Option<Self> {
        match v {
            0 => Some(Self::Counter),
            1 => Some(Self::Gauge),
            2 => Some(Self::Histogram),
            _ => None,
        }
    }
}

struct PwMetric {
    name: String,
    kind: MetricKind,
    value: AtomicI64,
}

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_latency: HistogramVec,
    pub upstream_latency: HistogramVec,
    pub kong_latency: HistogramVec,
    pub connections_active: IntGauge,
    pub connections_accepted: AtomicU64,
    pub total_requests: AtomicU64,
    pw: RwLock<Vec<PwMetric>>,
    define_lock: Mutex<()>,
}

impl Metrics {
    pub fn new() -> anyhow::Result<Self> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "kong_http_requests_total",
                "HTTP status codes per service/route in Kong",
            ),
            &[
                "service",
                "route",
                "code",
                "source",
                "workspace",
                "consumer",
            ],
        )?;
        let histogram = |name: &str, help: &str| {
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS_MS.to_vec()),
                &["service", "route", "workspace"],
            )
        };
        let request_latency = histogram(
            "kong_request_latency_ms",
            "Total latency incurred during requests for each service/route in Kong",
        )?;
        let upstream_latency = histogram(
            "kong_upstream_latency_ms",
            "Latency added by upstream response for each service/route in Kong",
        )?;
        let kong_latency = histogram(
            "kong_kong_latency_ms",
            "Latency added by Kong and enabled plugins for each service/route in Kong",
        )?;
        let connections_active = IntGauge::new(
            "kong_nginx_connections_active",
            "Number of active client connections",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_latency.clone()))?;
        registry.register(Box::new(upstream_latency.clone()))?;
        registry.register(Box::new(kong_latency.clone()))?;
        registry.register(Box::new(connections_active.clone()))?;
        Ok(Self {
            registry,
            requests,
            request_latency,
            upstream_latency,
            kong_latency,
            connections_active,
            connections_accepted: AtomicU64::new(0),
            total_requests: AtomicU64::new(0),
            pw: RwLock::new(Vec::new()),
            define_lock: Mutex::new(()),
        })
    }

    /// Defines (or finds) the filter metric `pw_<filter>_<name>` and returns its id.
    pub fn define(&self, filter: &str, name: &str, kind: MetricKind) -> Result<u32, &'static str> {
        if name.is_empty() || name.len() > 256 {
            return Err("metric name empty or longer than 256 bytes");
        }
        let full = sanitize(&format!("pw_{filter}_{name}"));
        let _guard = self
            .define_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let existing = self.read().iter().position(|m| m.name == full);
        if let Some(i) = existing {
            return if self.read()[i].kind == kind {
                u32::try_from(i).map_err(|_| "too many metrics")
            } else {
                Err("metric already defined with another type")
            };
        }
        let mut all = self
            .pw
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        all.push(PwMetric {
            name: full,
            kind,
            value: AtomicI64::new(0),
        });
        u32::try_from(all.len() - 1).map_err(|_| "too many metrics")
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<PwMetric>> {
        self.pw
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn increment(&self, id: u32, by: i64) -> bool {
        let all = self.read();
        match all.get(id as usize) {
            Some(m) if m.kind != MetricKind::Histogram => {
                m.value.fetch_add(by, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    pub fn record(&self, id: u32, value: i64) -> bool {
        let all = self.read();
        match all.get(id as usize) {
            Some(m) => {
                m.value.store(value, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    pub fn value(&self, id: u32) -> Option<i64> {
        self.read()
            .get(id as usize)
            .map(|m| m.value.load(Ordering::Relaxed))
    }

    /// The Prometheus text exposition of everything.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        let mut text = String::from_utf8_lossy(&buf).into_owned();
        for m in self.read().iter() {
            let kind = match m.kind {
                MetricKind::Counter => "counter",
                MetricKind::Gauge | MetricKind::Histogram => "gauge",
            };
            text.push_str(&format!(
                "# HELP {0} proxy-wasm filter metric\n# TYPE {0} {kind}\n{0} {1}\n",
                m.name,
                m.value.load(Ordering::Relaxed)
            ));
        }
        text
    }
}

/// Prometheus names allow `[a-zA-Z0-9_:]`; anything else becomes `_`.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_metrics_are_defined_once_and_exported_with_the_pw_prefix() {
        let m = Metrics::new().expect("registry");
        let a = m
            .define("kyc_jwt", "rejected_total", MetricKind::Counter)
            .expect("defines");
        let b = m
            .define("kyc_jwt", "rejected_total", MetricKind::Counter)
            .expect("same id");
        assert_eq!(a, b);
        assert!(
            m.define("kyc_jwt", "rejected_total", MetricKind::Gauge)
                .is_err()
        );
        assert!(m.increment(a, 2) && m.increment(b, 1));
        m.requests
            .with_label_values(&["s", "r", "200", "service", "default", ""])
            .inc();
        let text = m.render();
        assert!(text.contains("pw_kyc_jwt_rejected_total 3"), "{text}");
        assert!(
            text.contains("kong_http_requests_total{code=\"200\""),
            "{text}"
        );
        assert!(!m.increment(99, 1));
    }
}
