//! `kyc_pii_mask`: masks PII in JSON responses at the gateway, a thin proxy-wasm adapter over
//! `filter_kit::mask`. A JSON response for a caller without the unmask scope (read from
//! `kong.ctx.shared.kyc_scopes`, set by `kyc_jwt`) loses its `Content-Length`, is collected whole
//! and leaves masked. It fails closed: a body it cannot read (compressed, or too large to hold) is
//! replaced by an error, never sent unmasked. Every masking decision is filter-kit's.

use std::rc::Rc;

use filter_host::{Counter, Unconfigured, configure, log, property, request_id, response_header};
use filter_kit::config::MaskConfig;
use filter_kit::mask::{self, MaskOutcome};
use filter_kit::reply::error_body;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

const FILTER: &str = "kyc_pii_mask";

/// The largest body held for masking (per request, in the worker's Wasm memory). Larger bodies
/// are withheld: the gateway's bodies are KYC records and lists of them, far below this.
const MAX_MASKED_BODY_BYTES: usize = 8 * 1024 * 1024;

/// Set by `kyc_jwt` (Kong's `kong.ctx.shared.kyc_scopes`, space-separated), which a client cannot
/// forge. Absent means no scopes: the body is masked.
const SCOPES_PROPERTY: [&str; 4] = ["kong", "ctx", "shared", "kyc_scopes"];

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(MaskRoot::default())
    });
}}

struct Shared {
    cfg: MaskConfig,
    metrics: Metrics,
}

/// Exported by Kong's Prometheus plugin as `pw_kyc_pii_mask_<name>`.
struct Metrics {
    masked: Counter,
    /// A JSON content type whose body was not valid JSON: passed through as it was.
    not_json: Counter,
    /// Compressed despite `accept-encoding: identity`: replaced by a 502.
    encoded: Counter,
    /// Over `MAX_MASKED_BODY_BYTES`: replaced by an error body.
    too_large: Counter,
}

#[derive(Default)]
struct MaskRoot {
    shared: Option<Rc<Shared>>,
}

impl Context for MaskRoot {}

impl RootContext for MaskRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        self.shared = configure(FILTER, MaskConfig::from_json(&bytes)).map(|cfg| {
            Rc::new(Shared {
                cfg,
                metrics: Metrics {
                    masked: Counter::define("masked_total"),
                    not_json: Counter::define("not_json_total"),
                    encoded: Counter::define("encoded_total"),
                    too_large: Counter::define("too_large_total"),
                },
            })
        });
        self.shared.is_some()
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(match &self.shared {
            Some(shared) => Box::new(MaskRequest {
                shared: Rc::clone(shared),
                body: Body::Pass,
            }),
            None => Box::new(Unconfigured { filter: FILTER }),
        })
    }
}

/// What happens to the response body.
enum Body {
    /// Not JSON, or the caller may see it unmasked.
    Pass,
    /// Collected chunk by chunk (each chunk is emptied as it goes by) and emitted masked at the
    /// end. Works on any host and any size, unlike `Action::Pause`, which `ngx_wasm_module` honours
    /// once and only up to `wasm_response_body_buffers`.
    Mask { collected: Vec<u8>, held_back: bool },
    /// Cannot be masked: every chunk is dropped and an error body sent at the end.
    Withhold,
}

struct MaskRequest {
    shared: Rc<Shared>,
    body: Body,
}

impl Context for MaskRequest {}

impl HttpContext for MaskRequest {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // A compressed body cannot be masked; ask the upstream for a plain one.
        self.set_http_request_header("accept-encoding", Some("identity"));
        Action::Continue
    }

    // No request-phase state is needed below: replies sent by earlier filters (a 401, a 429, an
    // idempotent replay) come through here too, and are masked like upstream responses.
    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let is_json =
            response_header(self, "content-type").is_some_and(|ct| mask::is_json_content_type(&ct));
        if !is_json {
            return Action::Continue;
        }
        let scopes: Vec<String> = property(&SCOPES_PROPERTY)
            .map(|s| s.split_ascii_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        if mask::unmasked_for(&self.shared.cfg, &scopes) {
            return Action::Continue;
        }
        // The body will change length; without this the old Content-Length would be sent.
        self.set_http_response_header("content-length", None);
        let encoded = response_header(self, "content-encoding")
            .is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity"));
        if encoded {
            self.shared.metrics.encoded.bump();
            log(
                FILTER,
                LogLevel::Warn,
                "compressed JSON response cannot be masked; answering 502",
            );
            self.set_http_response_header(":status", Some("502"));
            self.set_http_response_header("content-encoding", None);
            self.set_http_response_header("content-type", Some("application/json"));
            self.body = Body::Withhold;
        } else {
            self.body = Body::Mask {
                collected: Vec::new(),
                held_back: false,
            };
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match self.body {
            Body::Pass => {}
            Body::Mask { .. } => self.mask_chunk(body_size, end_of_stream),
            Body::Withhold => self.withhold_chunk(body_size, end_of_stream),
        }
        Action::Continue
    }
}

impl MaskRequest {
    fn mask_chunk(&mut self, body_size: usize, end_of_stream: bool) {
        let chunk = if body_size > 0 {
            self.get_http_response_body(0, body_size)
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let Body::Mask {
            collected,
            held_back,
        } = &mut self.body
        else {
            return;
        };
        collected.extend_from_slice(&chunk);
        if collected.len() > MAX_MASKED_BODY_BYTES {
            self.shared.metrics.too_large.bump();
            log(
                FILTER,
                LogLevel::Warn,
                "JSON response too large to mask; body withheld",
            );
            self.body = Body::Withhold;
            self.withhold_chunk(body_size, end_of_stream);
            return;
        }
        if !end_of_stream {
            if body_size > 0 {
                *held_back = true;
                self.replace_chunk(body_size, &[]);
            }
            return;
        }
        let held_back = *held_back;
        let collected = std::mem::take(collected);
        self.body = Body::Pass;
        match mask::mask_json(&collected, &self.shared.cfg) {
            MaskOutcome::Masked(masked) => {
                self.shared.metrics.masked.bump();
                self.replace_chunk(body_size, &masked);
            }
            outcome => {
                if outcome == MaskOutcome::NotJson {
                    self.shared.metrics.not_json.bump();
                }
                // Unchanged (or not JSON, which is passed as it is): put back what was held.
                if held_back {
                    self.replace_chunk(body_size, &collected);
                }
            }
        }
    }

    fn withhold_chunk(&self, body_size: usize, end_of_stream: bool) {
        if end_of_stream {
            let body = error_body(
                "RESPONSE_NOT_MASKABLE",
                "the response could not be checked for personal data and was withheld",
                &request_id(self),
            );
            self.replace_chunk(body_size, &body);
        } else {
            self.replace_chunk(body_size, &[]);
        }
    }

    /// Replaces the current chunk with `new`, passing the larger of the two lengths as the size:
    /// `ngx_wasm_module` keeps at most that many bytes of the new value, and Envoy drains that
    /// many bytes of the old chunk.
    fn replace_chunk(&self, chunk_size: usize, new: &[u8]) {
        if chunk_size > 0 || !new.is_empty() {
            self.set_http_response_body(0, chunk_size.max(new.len()), new);
        }
    }
}
