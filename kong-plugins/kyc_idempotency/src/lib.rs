//! `kyc_idempotency`: `Idempotency-Key` handling at the gateway, a thin proxy-wasm adapter over
//! `filter_kit::idempotency`. A request of a configured method claims its key with an in-flight
//! record in the host's shared data (`idem/…`, so Kong needs an `shm_kv` zone named `idem`),
//! written with the CAS just read; a retry gets the stored response (replay), a 409 while the
//! first runs, or a 422 when the key was used for another request. When the response is complete
//! its record is stored or released. Every decision is filter-kit's.

use std::rc::Rc;

use filter_host::{
    Counter, Unconfigured, configure, log, now_s, property, request_header, request_id,
    response_header,
};
use filter_kit::config::IdempotencyConfig;
use filter_kit::idempotency::{
    self, Fingerprint, IdempotencyKey, KeyError, RequestDecision, ResponseDecision,
};
use filter_kit::reply::ErrorReply;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, Status};

const FILTER: &str = "kyc_idempotency";

/// Reads and CAS writes per claim before answering 409. Each lost race means another request
/// wrote the key, so the next read normally ends in a replay, a 409 or a 422 by itself.
const MAX_CAS_ATTEMPTS: usize = 10;

/// Set by `kyc_jwt` (Kong's `kong.ctx.shared.kyc_client_id`), which a client cannot forge.
/// Keys are per client, so without it the filter stands aside.
const CLIENT_ID_PROPERTY: [&str; 4] = ["kong", "ctx", "shared", "kyc_client_id"];
/// `HTTP/1.1`, `HTTP/2.0`, … (Envoy: `HTTP/2`).
const PROTOCOL_PROPERTY: [&str; 2] = ["request", "protocol"];

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(IdempotencyRoot::default())
    });
}}

struct Shared {
    cfg: IdempotencyConfig,
    metrics: Metrics,
}

/// Exported by Kong's Prometheus plugin as `pw_kyc_idempotency_<name>`.
struct Metrics {
    replayed: Counter,
    /// 409: the same request is still being processed.
    conflicts: Counter,
    /// 422: the key was used for a different request.
    key_reused: Counter,
    stored: Counter,
    released: Counter,
    /// The claim could not be settled in shared data: answered 409.
    shm_contention: Counter,
    /// The record changed under us (our claim outlived `lock_timeout_secs` and was taken over):
    /// left as it was.
    lost_claim: Counter,
    /// A configured request without a verified client: passed through without idempotency.
    no_client: Counter,
    /// The request body never arrived (HTTP/2 without `content-length` and without a body):
    /// passed through without idempotency.
    unclaimed: Counter,
}

impl Metrics {
    fn define() -> Self {
        Self {
            replayed: Counter::define("replayed_total"),
            conflicts: Counter::define("conflicts_total"),
            key_reused: Counter::define("key_reused_total"),
            stored: Counter::define("stored_total"),
            released: Counter::define("released_total"),
            shm_contention: Counter::define("shm_contention_total"),
            lost_claim: Counter::define("lost_claim_total"),
            no_client: Counter::define("no_client_total"),
            unclaimed: Counter::define("unclaimed_total"),
        }
    }
}

#[derive(Default)]
struct IdempotencyRoot {
    shared: Option<Rc<Shared>>,
}

impl Context for IdempotencyRoot {}

impl RootContext for IdempotencyRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        self.shared = configure(FILTER, IdempotencyConfig::from_json(&bytes)).map(|cfg| {
            Rc::new(Shared {
                cfg,
                metrics: Metrics::define(),
            })
        });
        self.shared.is_some()
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(match &self.shared {
            Some(shared) => Box::new(IdempotencyRequest {
                shared: Rc::clone(shared),
                phase: Phase::Pass,
            }),
            None => Box::new(Unconfigured { filter: FILTER }),
        })
    }
}

/// Where a request is in the idempotency flow.
enum Phase {
    /// Not the filter's business (method not configured, no key, no client), or already settled.
    Pass,
    /// Key checked; the fingerprint needs the whole request body.
    AwaitingBody {
        storage_key: String,
        method: String,
        path: String,
        /// The request's `content-type`: a multipart body is fingerprinted without its boundary.
        content_type: Option<String>,
    },
    /// The key is ours: `record` is the in-flight record we wrote. The response is copied as it
    /// streams by, up to one byte past `max_body_bytes` (enough for filter-kit to see it is too
    /// big).
    Claimed {
        storage_key: String,
        fingerprint: Fingerprint,
        record: Vec<u8>,
        status: u16,
        content_type: Option<String>,
        body: Vec<u8>,
    },
}

struct IdempotencyRequest {
    shared: Rc<Shared>,
    phase: Phase,
}

impl Context for IdempotencyRequest {}

impl HttpContext for IdempotencyRequest {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let shared = Rc::clone(&self.shared);
        let Some(method) = request_header(self, ":method") else {
            return Action::Continue;
        };
        if !shared.cfg.applies_to(&method) {
            return Action::Continue;
        }
        let key = match IdempotencyKey::parse(request_header(self, idempotency::HEADER).as_deref())
        {
            Ok(key) => key,
            Err(KeyError::Missing) if !shared.cfg.required => return Action::Continue,
            Err(e) => {
                self.reply(&e.reply());
                return Action::Pause;
            }
        };
        let Some(client_id) = property(&CLIENT_ID_PROPERTY) else {
            shared.metrics.no_client.bump();
            log(
                FILTER,
                LogLevel::Warn,
                "no verified client (is kyc_jwt earlier in the chain?); passing without idempotency",
            );
            return Action::Continue;
        };
        let storage_key = idempotency::storage_key(&client_id, &key);
        let path = request_header(self, ":path").unwrap_or_default();
        let content_type = request_header(self, "content-type");
        if self.has_no_body() {
            return self.claim(storage_key, &method, &path, content_type.as_deref(), &[]);
        }
        self.phase = Phase::AwaitingBody {
            storage_key,
            method,
            path,
            content_type,
        };
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !matches!(self.phase, Phase::AwaitingBody { .. }) {
            return Action::Continue;
        }
        if !end_of_stream {
            // ngx_wasm_module hands over the whole body at once; Envoy streams it, so buffer.
            return Action::Pause;
        }
        let Phase::AwaitingBody {
            storage_key,
            method,
            path,
            content_type,
        } = std::mem::replace(&mut self.phase, Phase::Pass)
        else {
            return Action::Continue;
        };
        let body = self.get_http_request_body(0, body_size).unwrap_or_default();
        self.claim(storage_key, &method, &path, content_type.as_deref(), &body)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        match self.phase {
            Phase::AwaitingBody { .. } => {
                self.phase = Phase::Pass;
                self.shared.metrics.unclaimed.bump();
                log(
                    FILTER,
                    LogLevel::Warn,
                    "the request body never arrived; the response is not kept",
                );
            }
            Phase::Claimed { .. } => {
                // A status the filter cannot read counts as 0, which is never kept.
                let new_status = response_header(self, ":status")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let new_content_type = response_header(self, "content-type");
                let bodiless = matches!(new_status, 204 | 304)
                    || response_header(self, "content-length").as_deref() == Some("0");
                if let Phase::Claimed {
                    status,
                    content_type,
                    ..
                } = &mut self.phase
                {
                    *status = new_status;
                    *content_type = new_content_type;
                }
                if bodiless {
                    self.finish();
                }
            }
            Phase::Pass => {}
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let limit = self.shared.cfg.max_body_bytes.saturating_add(1);
        if let Phase::Claimed { body, .. } = &self.phase
            && body.len() < limit
            && body_size > 0
        {
            // Copy the chunk and let it stream on: nothing here changes the response.
            let chunk = self
                .get_http_response_body(0, body_size)
                .unwrap_or_default();
            if let Phase::Claimed { body, .. } = &mut self.phase {
                let room = limit - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
        }
        if end_of_stream && matches!(self.phase, Phase::Claimed { .. }) {
            self.finish();
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        // Client gone, upstream failure, or a body that never ended: free the key for a retry
        // instead of holding it until `lock_timeout_secs`.
        if let Phase::Claimed {
            storage_key,
            record,
            ..
        } = std::mem::replace(&mut self.phase, Phase::Pass)
        {
            self.settle(&storage_key, &record, &ResponseDecision::Release);
        }
    }
}

impl IdempotencyRequest {
    /// Whether the request certainly has no body, so the fingerprint can be taken now: hosts do
    /// not call `on_http_request_body` for a request without one.
    fn has_no_body(&self) -> bool {
        if let Some(length) = request_header(self, "content-length") {
            return length.trim().parse::<u64>().is_ok_and(|n| n == 0);
        }
        if request_header(self, "transfer-encoding").is_some() {
            return false;
        }
        // HTTP/1.x without either header has no body; HTTP/2 and /3 may stream one unannounced.
        property(&PROTOCOL_PROPERTY).is_some_and(|p| p.starts_with("HTTP/1"))
    }

    /// Reads the key's record, asks filter-kit, and acts: claim and forward, replay, or refuse.
    fn claim(
        &mut self,
        storage_key: String,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Action {
        let shared = Rc::clone(&self.shared);
        let metrics = &shared.metrics;
        let fingerprint = Fingerprint::new(&storage_key, method, path, content_type, body);
        let now = now_s(self);
        for _ in 0..MAX_CAS_ATTEMPTS {
            // A missing key reads as (None, None); cas 0 = "only if absent".
            let Ok((existing, cas)) = hostcalls::get_shared_data(&storage_key) else {
                break;
            };
            let decision =
                idempotency::on_request(&shared.cfg, existing.as_deref(), &fingerprint, now);
            match decision {
                RequestDecision::Proceed { record_to_write } => {
                    match hostcalls::set_shared_data(&storage_key, Some(&record_to_write), cas) {
                        Ok(()) => {
                            self.phase = Phase::Claimed {
                                storage_key,
                                fingerprint,
                                record: record_to_write,
                                status: 0,
                                content_type: None,
                                body: Vec::new(),
                            };
                            return Action::Continue;
                        }
                        Err(Status::CasMismatch) => {}
                        Err(_) => break,
                    }
                }
                RequestDecision::Replay {
                    status,
                    content_type,
                    body,
                } => {
                    metrics.replayed.bump();
                    let mut headers = vec![(idempotency::REPLAYED_HEADER, "true")];
                    if let Some(ct) = &content_type {
                        headers.push(("content-type", ct.as_str()));
                    }
                    self.send_http_response(
                        u32::from(status),
                        headers,
                        (!body.is_empty()).then_some(body.as_slice()),
                    );
                    return Action::Pause;
                }
                RequestDecision::Conflict409 => {
                    metrics.conflicts.bump();
                    self.refuse(&decision);
                    return Action::Pause;
                }
                RequestDecision::Mismatch422 => {
                    metrics.key_reused.bump();
                    self.refuse(&decision);
                    return Action::Pause;
                }
            }
        }
        // Shared data failed or every write lost a race: somebody else is working on this key.
        metrics.shm_contention.bump();
        log(
            FILTER,
            LogLevel::Warn,
            &format!("could not claim {storage_key}; answering 409"),
        );
        self.refuse(&RequestDecision::Conflict409);
        Action::Pause
    }

    /// Sends the 409 or 422 of a refusing decision.
    fn refuse(&self, decision: &RequestDecision) {
        if let Some(reply) = decision.reply() {
            self.reply(&reply);
        }
    }

    /// The response is complete: store it or release the key, as filter-kit decides.
    fn finish(&mut self) {
        let Phase::Claimed {
            storage_key,
            fingerprint,
            record,
            status,
            content_type,
            body,
        } = std::mem::replace(&mut self.phase, Phase::Pass)
        else {
            return;
        };
        let decision = idempotency::on_response(
            &self.shared.cfg,
            &fingerprint,
            status,
            content_type.as_deref(),
            &body,
            now_s(self),
        );
        self.settle(&storage_key, &record, &decision);
    }

    /// Writes the completed record or deletes the in-flight one, but only while the key still
    /// holds our in-flight record: once our claim expired, another request owns it.
    fn settle(&self, storage_key: &str, ours: &[u8], decision: &ResponseDecision) {
        let metrics = &self.shared.metrics;
        let (value, done) = match decision {
            ResponseDecision::Store(record) => (Some(record.as_slice()), metrics.stored),
            ResponseDecision::Release => (None, metrics.released), // a null value deletes
        };
        let written = match hostcalls::get_shared_data(storage_key) {
            Ok((Some(current), cas)) if current == ours => {
                hostcalls::set_shared_data(storage_key, value, cas).is_ok()
            }
            _ => false,
        };
        if written {
            done.bump();
        } else {
            metrics.lost_claim.bump();
            log(
                FILTER,
                LogLevel::Warn,
                &format!("{storage_key} changed while in flight; left as it is"),
            );
        }
    }

    fn reply(&self, reply: &ErrorReply) {
        let body = reply.json_body(&request_id(self));
        self.send_http_response(
            u32::from(reply.status),
            vec![("content-type", "application/json")],
            Some(&body),
        );
    }
}
