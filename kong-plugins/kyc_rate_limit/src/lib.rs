//! `kyc_rate_limit`: a GCRA limit per verified client (or per source address) and route, a thin
//! proxy-wasm adapter over `filter_kit::gcra`. The state of each key is one TAT in the host's
//! shared data (`ratelimit/…`, so Kong needs an `shm_kv` zone named `ratelimit`), read and then
//! written with the CAS just read, so the workers of a node share one limit. Refusals are a 429
//! sent here; admitted responses get the `RateLimit` headers. When shared data fails, the request
//! goes through, or gets a 503 with `fail_closed`. Every decision is filter-kit's.

use std::rc::Rc;
use std::time::UNIX_EPOCH;

use filter_host::{Counter, Unconfigured, configure, log, property, request_header, request_id};
use filter_kit::config::RateLimitConfig;
use filter_kit::gcra::{self, Decision};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, Status};

const FILTER: &str = "kyc_rate_limit";

/// Reads and CAS writes per request before giving up. Each lost race means another request for the
/// same key was counted, so a few tries settle even a burst across every worker of a node.
const MAX_CAS_ATTEMPTS: usize = 10;

/// Set by `kyc_jwt` (Kong's `kong.ctx.shared.kyc_client_id`), which a client cannot forge.
const CLIENT_ID_PROPERTY: [&str; 4] = ["kong", "ctx", "shared", "kyc_client_id"];
/// Kong 3.9+: the matched route's name, else its id (3.6+). Other hosts have neither.
const ROUTE_NAME_PROPERTY: [&str; 2] = ["kong", "route_name"];
const ROUTE_ID_PROPERTY: [&str; 2] = ["kong", "route_id"];
/// nginx's `$remote_addr`; Envoy appends the port.
const SOURCE_ADDRESS_PROPERTY: [&str; 2] = ["source", "address"];

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(RateLimitRoot::default())
    });
}}

struct Shared {
    cfg: RateLimitConfig,
    allowed: Counter,
    limited: Counter,
    /// Shared data that could not be read or settled, whichever way the request then went.
    shm_failures: Counter,
    /// Those of them refused with a 503 because the config says `fail_closed`.
    shm_refused: Counter,
}

#[derive(Default)]
struct RateLimitRoot {
    shared: Option<Rc<Shared>>,
}

impl Context for RateLimitRoot {}

impl RootContext for RateLimitRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        self.shared = configure(FILTER, RateLimitConfig::from_json(&bytes)).map(|cfg| {
            Rc::new(Shared {
                cfg,
                allowed: Counter::define("allowed_total"),
                limited: Counter::define("limited_total"),
                shm_failures: Counter::define("shm_failures_total"),
                shm_refused: Counter::define("shm_refused_total"),
            })
        });
        self.shared.is_some()
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(match &self.shared {
            Some(shared) => Box::new(RateLimitRequest {
                shared: Rc::clone(shared),
                admitted: None,
            }),
            None => Box::new(Unconfigured { filter: FILTER }),
        })
    }
}

struct RateLimitRequest {
    shared: Rc<Shared>,
    /// The decision that let this request through, for the response's headers. `None` for a
    /// refusal (its headers go on the 429), a shared-memory failure, and replies of other filters.
    admitted: Option<Decision>,
}

impl Context for RateLimitRequest {}

impl HttpContext for RateLimitRequest {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let key = gcra::key(
            &self.route(),
            property(&CLIENT_ID_PROPERTY).as_deref(),
            &source_address(),
        );
        let now_us = self
            .get_current_time()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        match self.decide(&key, now_us) {
            Some(d) if d.allowed => {
                self.shared.allowed.bump();
                self.admitted = Some(d);
                Action::Continue
            }
            Some(d) => {
                self.shared.limited.bump();
                self.refuse(&d);
                Action::Pause
            }
            None if self.shared.cfg.fail_closed => {
                self.shared.shm_failures.bump();
                self.shared.shm_refused.bump();
                log(
                    FILTER,
                    LogLevel::Warn,
                    &format!("shared data for {key} did not settle; request refused (fail_closed)"),
                );
                self.refuse_unavailable();
                Action::Pause
            }
            None => {
                // Fail open, the default: availability wins, and the metric tells operators.
                self.shared.shm_failures.bump();
                log(
                    FILTER,
                    LogLevel::Warn,
                    &format!("shared data for {key} did not settle; request let through"),
                );
                Action::Continue
            }
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(d) = self.admitted
            && self.shared.cfg.emit_headers
        {
            // Replace rather than add: the upstream may carry a limiter of its own.
            for (name, value) in gcra::headers(&self.shared.cfg, &d) {
                self.set_http_response_header(name, Some(&value));
            }
        }
        Action::Continue
    }
}

impl RateLimitRequest {
    /// Read, decide, CAS-write; on a lost race read and decide again. `None` when shared data
    /// failed or the races never settled.
    fn decide(&self, key: &str, now_us: u64) -> Option<Decision> {
        let cfg = &self.shared.cfg;
        for _ in 0..MAX_CAS_ATTEMPTS {
            // A missing key reads as (None, None): a fresh state, and cas 0 = "only if absent".
            let (stored, cas) = hostcalls::get_shared_data(key).ok()?;
            let d = gcra::decide(
                stored.as_deref().and_then(gcra::decode_state),
                now_us,
                cfg.rate_per_sec,
                cfg.burst,
            );
            let Some(tat) = d.new_tat else {
                return Some(d); // a refusal writes nothing
            };
            match hostcalls::set_shared_data(key, Some(&gcra::encode_state(tat)), cas) {
                Ok(()) => return Some(d),
                Err(Status::CasMismatch) => {}
                Err(_) => return None,
            }
        }
        None
    }

    fn refuse(&self, d: &Decision) {
        let headers = gcra::headers(&self.shared.cfg, d);
        let mut reply_headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        reply_headers.push(("content-type", "application/json"));
        let body = gcra::reply(d).json_body(&request_id(self));
        self.send_http_response(429, reply_headers, Some(&body));
    }

    /// The 503 of a limiter that fails closed: `retry-after` and the project's error body, but no
    /// `RateLimit` fields, since nothing was decided.
    fn refuse_unavailable(&self) {
        let reply = gcra::unavailable_reply();
        let retry_after = gcra::UNAVAILABLE_RETRY_AFTER_SECS.to_string();
        let body = reply.json_body(&request_id(self));
        self.send_http_response(
            u32::from(reply.status),
            vec![
                (gcra::RETRY_AFTER, retry_after.as_str()),
                ("content-type", "application/json"),
            ],
            Some(&body),
        );
    }

    /// The route part of the key: Kong's route name or id, else the path without its query
    /// (on hosts without Kong's properties; then every distinct path is limited separately).
    fn route(&self) -> String {
        property(&ROUTE_NAME_PROPERTY)
            .or_else(|| property(&ROUTE_ID_PROPERTY))
            .or_else(|| {
                request_header(self, ":path")
                    .map(|p| p.split('?').next().unwrap_or_default().to_owned())
            })
            .unwrap_or_default()
    }
}

/// The client's address for anonymous keys; behind a load balancer this is the balancer unless
/// nginx's real-IP module is set up.
fn source_address() -> String {
    property(&SOURCE_ADDRESS_PROPERTY)
        .map_or_else(|| "unknown".to_owned(), |raw| without_port(&raw).to_owned())
}

/// The address without a port: nginx reports `10.0.0.7` or `::1`, Envoy `10.0.0.7:5123` or
/// `[::1]:5123`.
fn without_port(address: &str) -> &str {
    if let Some(bracketed) = address.strip_prefix('[') {
        return bracketed.split(']').next().unwrap_or(bracketed);
    }
    match address.split_once(':') {
        Some((host, port)) if !port.contains(':') => host,
        _ => address,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_is_dropped_from_either_hosts_source_address() {
        assert_eq!(without_port("10.0.0.7"), "10.0.0.7");
        assert_eq!(without_port("10.0.0.7:5123"), "10.0.0.7");
        assert_eq!(without_port("::1"), "::1");
        assert_eq!(without_port("2001:db8::7"), "2001:db8::7");
        assert_eq!(without_port("[2001:db8::7]:5123"), "2001:db8::7");
    }
}
