//! # kyc-service
//!
//! The KYC backend behind the gateway: it issues tokens, records KYC requests in PostgreSQL (PII
//! encrypted per field), keeps cluster-wide limits in Redis, and reports health and metrics.
//!
//! # Layout
//! - [`config`]: `config.yaml` + `KYC__*` overrides, validated once into [`config::Settings`].
//! - [`http`]: routes, extractors, middleware (request id, metrics, logging, auth, limits).
//! - [`auth`]: scopes, JWT access and refresh tokens, the OAuth 2.0 grants.
//! - [`kyc`]: the domain: PII types, request model, and the ports it needs (`kyc::ports`).
//! - [`store`]: PostgreSQL and Redis, implementing the ports; all SQL lives here.
//! - [`vendors`]: reqwest clients for OCR, face comparison and liveness, implementing the vendor port.
//! - [`crypto`]: field encryption (AES-256-GCM, HKDF keys with ids), blind indexes, argon2.
//! - [`telemetry`]: masked logging to stdout and a rotated file; [`metrics`]: Prometheus.
//! - [`app`]: builds [`app::AppState`] and serves it with graceful shutdown.
//! - [`error`]: the one error type and its one mapping to HTTP.

pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod error;
pub mod http;
pub mod kyc;
pub mod metrics;
pub mod store;
pub mod telemetry;
pub mod vendors;

pub use app::{AppState, serve};
pub use http::router;
