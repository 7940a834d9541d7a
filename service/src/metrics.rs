//! Prometheus metrics, with the seed's names: `http_requests_total{method,endpoint,status}`,
//! `http_request_duration_seconds{method,endpoint}` and `kyc_requests_total{type,status}`.
//! Every label has a bounded set of values: `endpoint` is the route template, never the raw path.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::kyc::model::{RequestType, Status};

pub struct Metrics {
    registry: Registry,
    pub http_requests_total: IntCounterVec,
    pub http_request_duration_seconds: HistogramVec,
    pub kyc_requests_total: IntCounterVec,
    pub tokens_issued_total: IntCounterVec,
    pub token_errors_total: IntCounterVec,
    pub rate_limit_rejections_total: IntCounter,
    pub redis_unavailable_total: IntCounterVec,
    pub db_pool_connections: IntGaugeVec,
    pub redis_pool_connections: IntGaugeVec,
    pub log_write_errors_total: IntCounter,
    pub vendor_calls_total: IntCounterVec,
    pub vendor_call_duration_seconds: HistogramVec,
    pub vendor_circuit_state: IntGaugeVec,
    pub idempotency_total: IntCounterVec,
    /// Liveness WebSocket connections in their message loop, on this instance.
    pub liveness_sessions_active: IntGauge,
}

impl Metrics {
    /// # Panics
    /// Only if two metrics are registered under one name, which is a bug in this function.
    #[must_use]
    #[allow(clippy::missing_panics_doc)]
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)
                .expect("valid counter definition");
            registry
                .register(Box::new(c.clone()))
                .expect("metric names are unique");
            c
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g =
                IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge definition");
            registry
                .register(Box::new(g.clone()))
                .expect("metric names are unique");
            g
        };
        let http_request_duration_seconds = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency by route template",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["method", "endpoint"],
        )
        .expect("valid histogram definition");
        registry
            .register(Box::new(http_request_duration_seconds.clone()))
            .expect("metric names are unique");
        let rate_limit_rejections_total = IntCounter::new(
            "rate_limit_rejections_total",
            "Requests refused by the per-client limit",
        )
        .expect("valid counter definition");
        registry
            .register(Box::new(rate_limit_rejections_total.clone()))
            .expect("metric names are unique");
        let log_write_errors_total = IntCounter::new(
            "log_write_errors_total",
            "Log lines that could not be written to the log file",
        )
        .expect("valid counter definition");
        registry
            .register(Box::new(log_write_errors_total.clone()))
            .expect("metric names are unique");

        let vendor_call_duration_seconds = HistogramVec::new(
            HistogramOpts::new(
                "vendor_call_duration_seconds",
                "Latency of one vendor attempt",
            )
            .buckets(vec![
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
            &["vendor"],
        )
        .expect("valid histogram definition");
        registry
            .register(Box::new(vendor_call_duration_seconds.clone()))
            .expect("metric names are unique");
        let liveness_sessions_active = IntGauge::new(
            "liveness_sessions_active",
            "Liveness WebSocket connections in progress",
        )
        .expect("valid gauge definition");
        registry
            .register(Box::new(liveness_sessions_active.clone()))
            .expect("metric names are unique");
        let m = Self {
            liveness_sessions_active,
            vendor_calls_total: counter(
                "vendor_calls_total",
                "Vendor attempts by vendor and outcome",
                &["vendor", "outcome"],
            ),
            vendor_call_duration_seconds,
            vendor_circuit_state: gauge(
                "vendor_circuit_state",
                "Vendor circuit: 0 closed, 1 open, 2 half-open",
                &["vendor"],
            ),
            idempotency_total: counter(
                "idempotency_total",
                "Idempotency-Key outcomes: stored, replayed, conflict, mismatch",
                &["outcome"],
            ),
            http_requests_total: counter(
                "http_requests_total",
                "HTTP requests by route template",
                &["method", "endpoint", "status"],
            ),
            http_request_duration_seconds,
            kyc_requests_total: counter(
                "kyc_requests_total",
                "KYC requests that reached a terminal status",
                &["type", "status"],
            ),
            tokens_issued_total: counter(
                "tokens_issued_total",
                "Access tokens issued by grant type",
                &["grant_type"],
            ),
            token_errors_total: counter(
                "token_errors_total",
                "Token endpoint errors by OAuth error code",
                &["error"],
            ),
            rate_limit_rejections_total,
            redis_unavailable_total: counter(
                "redis_unavailable_total",
                "Operations that found Redis unreachable, by operation",
                &["operation"],
            ),
            db_pool_connections: gauge(
                "db_pool_connections",
                "PostgreSQL pool connections by state",
                &["state"],
            ),
            redis_pool_connections: gauge(
                "redis_pool_connections",
                "Redis pool connections by state",
                &["state"],
            ),
            log_write_errors_total,
            registry,
        };
        // Every type × terminal status exists from the start, so ratios never divide by no data.
        for t in RequestType::ALL {
            for s in Status::TERMINAL {
                m.kyc_requests_total
                    .with_label_values(&[t.as_str(), s.as_str()]);
            }
        }
        m
    }

    /// The text exposition format.
    #[must_use]
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("encoding to a Vec cannot fail");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
