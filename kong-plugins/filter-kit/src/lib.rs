//! The policy logic of the KYC gateway filters, as plain Rust: no proxy-wasm, no I/O, no clocks.
//! The four filters (`kyc_jwt`, `kyc_rate_limit`, `kyc_idempotency`, `kyc_pii_mask`) are thin
//! adapters that read the host, call one function here and act on what it returns; time is always
//! passed in. Everything here compiles for `wasm32-wasip1` and is tested natively.
//!
//! # Layout
//!
//! - [`config`]: the typed configuration of each filter, parsed from the JSON bytes Kong passes to
//!   `on_configure`, with defaults and validation errors that name the field.
//! - [`jwt`]: finds the bearer token and verifies it (HS256, EdDSA, ES256; claims and scopes);
//!   answers with an [`jwt::Identity`] or an RFC 6750 [`jwt::Rejection`].
//! - [`gcra`]: the rate limiter's arithmetic over one stored theoretical arrival time, its shared-data
//!   encoding, its key and its response headers.
//! - [`idempotency`]: the idempotency filter's state machine: key validation, the records kept in
//!   shared data, and what to do on a request and on its response.
//! - [`mask`]: masks PII fields in a JSON response body, the Chinese way.
//! - [`reply`]: the project's JSON error body, shared by every reply a filter sends itself.

#![warn(missing_docs)]

pub mod config;
pub mod gcra;
pub mod idempotency;
pub mod jwt;
pub mod mask;
pub mod reply;

pub use config::ConfigError;
pub use reply::ErrorReply;
