//! Host glue shared by the gateway's proxy-wasm filters (`kyc_jwt`, `kyc_rate_limit`,
//! `kyc_idempotency`, `kyc_pii_mask`): metric counters, logging prefixed with the filter's name,
//! property and header reads that never panic, and the context that answers for a filter whose
//! configuration was refused. Policy stays in filter-kit; this crate only talks to the host.

use std::time::UNIX_EPOCH;

use filter_kit::reply::error_body;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel, MetricType};

/// A proxy-wasm counter. The host stores it under the defining filter's name, as
/// `pw:<filter>:<name>`, and Kong's Prometheus plugin exports it as `pw_<filter>_<name>`. The
/// metric host calls need Kong 3.8+ (the SDK traps on a refused definition); a failed increment
/// is ignored.
#[derive(Clone, Copy)]
pub struct Counter(Option<u32>);

impl Counter {
    /// Defines the counter `name`; the host adds the filter's name itself.
    pub fn define(name: &str) -> Self {
        Self(hostcalls::define_metric(MetricType::Counter, name).ok())
    }

    pub fn bump(self) {
        if let Some(id) = self.0 {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }
}

/// Logs `message` as `<filter>: <message>`; a refused log call is ignored.
pub fn log(filter: &str, level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, &format!("{filter}: {message}"));
}

/// A filter's parsed configuration, or `None` after logging which field was refused (the root
/// context then returns `false` from `on_configure`, and the host rejects the configuration).
pub fn configure<C>(filter: &str, parsed: Result<C, filter_kit::config::ConfigError>) -> Option<C> {
    parsed
        .map_err(|e| {
            log(
                filter,
                LogLevel::Error,
                &format!("invalid configuration: field `{}`: {}", e.field, e.message),
            )
        })
        .ok()
}

/// A property as non-empty text (Kong's values are strings); absent, unreadable or empty → `None`.
pub fn property(path: &[&str]) -> Option<String> {
    hostcalls::get_property(path.to_vec())
        .ok()
        .flatten()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|s| !s.is_empty())
}

/// A request header as text; a value that is not UTF-8 counts as absent (the SDK's `String`
/// getter would panic on it).
pub fn request_header(ctx: &dyn HttpContext, name: &str) -> Option<String> {
    ctx.get_http_request_header_bytes(name)
        .and_then(|bytes| String::from_utf8(bytes).ok())
}

/// A response header as text; a value that is not UTF-8 counts as absent.
pub fn response_header(ctx: &dyn HttpContext, name: &str) -> Option<String> {
    ctx.get_http_response_header_bytes(name)
        .and_then(|bytes| String::from_utf8(bytes).ok())
}

/// The request's `x-request-id`, or empty when there is none (or it is not UTF-8).
pub fn request_id(ctx: &dyn HttpContext) -> String {
    request_header(ctx, "x-request-id").unwrap_or_default()
}

/// The host's clock in whole seconds since the Unix epoch (0 if it reads before the epoch).
pub fn now_s(ctx: &dyn Context) -> u64 {
    ctx.get_current_time()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Stands in for a filter whose configuration was refused. Kong normally answers 500 for such a
/// chain before any request context exists; if a host does create one, it fails closed.
pub struct Unconfigured {
    /// The filter's name, as in the reply's message.
    pub filter: &'static str,
}

impl Context for Unconfigured {}

impl HttpContext for Unconfigured {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let body = error_body(
            "GATEWAY_MISCONFIGURED",
            &format!(
                "the gateway's {} filter has no valid configuration",
                self.filter
            ),
            &request_id(self),
        );
        self.send_http_response(500, vec![("content-type", "application/json")], Some(&body));
        Action::Pause
    }
}
