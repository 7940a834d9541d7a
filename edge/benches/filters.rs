//! Issue #8, figure 3: what one request costs inside the edge's proxy-wasm host, filter by filter.
//! No sockets: each case walks one typical request through `Workers::flow` the way `proxy.rs`
//! does (start, request headers, the request body for a POST, response headers, the response body
//! as one chunk and then the empty end of stream, finish), with the real `Host`, the `shm_kv`
//! zones of `kong/kong.conf` and real `Metrics`. Target: at most 10 µs per filter per request.
//!
//! ```text
//! bash scripts/build-filters.sh                                  # target/filters/*.wasm
//! cargo bench -p kyc-edge --bench filters [-- --quick]           # [-- <case id> to run one]
//! KYC_BENCH_FILTERS=<dir> cargo bench …                          # another build of the filters
//! ```
//!
//! Each filter runs alone with its config from the first chain of `declarative/kong.yaml` that has
//! all four filters (the rate limit raised to its schema's maximum so it never rejects), then the
//! whole chain jwt → rate_limit → idempotency → pii_mask. The reference is the same request through
//! a filter that does nothing (`noop.wat`): the host's own cost per filter. A filter alone sees the
//! `kong.ctx.shared` identity `kyc_jwt` would have set (so idempotency and masking act as behind
//! it in production); in the chains `kyc_jwt` sets it. The GET is `GET /api/v1/kyc/status/<id>`
//! with a cached token (a client reuses its token for its lifetime), plus a case whose token is
//! new to the filter on every request, which pays the HS256 verification. Idempotency acts only on
//! a POST with `Idempotency-Key`: its cases send `POST /api/v1/kyc/liveness/sessions` with `{}`
//! and a fresh key per request, so each one claims the key and stores the response (a first
//! request, not a replay). Every case gets the same response: 200, JSON with a name, an ID number
//! and a phone number.
//!
//! Time per request is criterion's median. On a shared machine its cases run seconds apart under
//! different load, so the cases are also timed in turn (many rounds of a short batch of each,
//! median per case), and the ratio to the reference is read from those. Allocations are counted
//! afterwards, outside the timed loops (over `ALLOC_REQUESTS` requests after a warm-up, on this
//! thread: the host runs filter calls inline). All go to `target/bench/filters.json` for
//! `kyc-bench`, and to a table on stdout.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use criterion::Criterion;
use kyc_edge::conf::KongConf;
use kyc_edge::declarative::Declarative;
use kyc_edge::metrics::Metrics;
use kyc_edge::router::{FilterStep, Plan};
use kyc_edge::shm::Shm;
use kyc_edge::wasm::{Exchange, Header, Host, LocalResponse, Outcome, RequestInfo, Workers};
use serde_json::{Value, json};

/// Criterion's group: results in `target/criterion/filters/<case id>/`.
const GROUP: &str = "filters";
const TARGET_NS_PER_FILTER: f64 = 10_000.0;
const WARM_UP_REQUESTS: usize = 200;
const ALLOC_REQUESTS: usize = 1000;

const JWT: &str = "kyc_jwt";
const RATE_LIMIT: &str = "kyc_rate_limit";
const IDEMPOTENCY: &str = "kyc_idempotency";
const PII_MASK: &str = "kyc_pii_mask";
const NOOP: &str = "bench_noop";
const CHAIN: &[&str] = &[JWT, RATE_LIMIT, IDEMPOTENCY, PII_MASK];

const SECRET_TEMPLATE: &str = r#"${{ env "DECK_KYC_JWT_SECRET" }}"#;
/// When `DECK_KYC_JWT_SECRET` is unset: any secret does, the bench signs its own tokens.
const BENCH_SECRET: &str = "kyc-edge-bench-secret-not-for-production-use";
/// The seed's client, as kyc-service would issue its token.
const CLIENT_ID: &str = "kyc-client";
const SCOPES: &str = "kyc:read kyc:write";
/// More tokens than `kyc_jwt`'s cache holds (1024), used in turn: none is cached when it comes back.
const UNCACHED_TOKENS: usize = 2048;

const STATUS_PATH: &str = "/api/v1/kyc/status/6f1c2a9e-3b7d-4e51-9a0c-5d8e7f6a1b2c";
const POST_PATH: &str = "/api/v1/kyc/liveness/sessions";
const POST_BODY: &[u8] = b"{}";
const RESPONSE_BODY: &str = r#"{"request_id":"0d9c6e1f8a7b4c3d9e2f1a0b5c6d7e8f","status":"success","name":"张三","id_number":"11010519491231002X","phone":"13800138000"}"#;
const REQUEST_ID: &str = "5b2f0c3e9d8a4e17b6c1f0a2d3e4f5a6";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Post,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Token {
    /// The same token every request: answered from `kyc_jwt`'s cache after the first.
    Cached,
    /// A token the filter has not seen lately: signature and claims checked every request.
    Uncached,
}

struct Spec {
    /// Criterion's benchmark id (and the route's host, `<id>.bench`).
    id: &'static str,
    /// The name in `filters.json` and the table.
    name: &'static str,
    filters: &'static [&'static str],
    method: Method,
    token: Token,
}

const SPECS: &[Spec] = &[
    Spec {
        id: "reference",
        name: "reference (no-op filter)",
        filters: &[NOOP],
        method: Method::Get,
        token: Token::Cached,
    },
    Spec {
        id: "kyc_jwt",
        name: JWT,
        filters: &[JWT],
        method: Method::Get,
        token: Token::Cached,
    },
    Spec {
        id: "kyc_jwt_uncached",
        name: "kyc_jwt (token not cached)",
        filters: &[JWT],
        method: Method::Get,
        token: Token::Uncached,
    },
    Spec {
        id: "kyc_rate_limit",
        name: RATE_LIMIT,
        filters: &[RATE_LIMIT],
        method: Method::Get,
        token: Token::Cached,
    },
    Spec {
        id: "kyc_pii_mask",
        name: PII_MASK,
        filters: &[PII_MASK],
        method: Method::Get,
        token: Token::Cached,
    },
    Spec {
        id: "chain",
        name: "chain",
        filters: CHAIN,
        method: Method::Get,
        token: Token::Cached,
    },
    Spec {
        id: "reference_post",
        name: "reference (no-op filter, POST)",
        filters: &[NOOP],
        method: Method::Post,
        token: Token::Cached,
    },
    Spec {
        id: "kyc_idempotency",
        name: IDEMPOTENCY,
        filters: &[IDEMPOTENCY],
        method: Method::Post,
        token: Token::Cached,
    },
    Spec {
        id: "chain_post",
        name: "chain (POST, Idempotency-Key)",
        filters: CHAIN,
        method: Method::Post,
        token: Token::Cached,
    },
];

struct Case {
    spec: &'static Spec,
    steps: Arc<[Arc<FilterStep>]>,
    info: RequestInfo,
    /// The request as the proxy hands it to the chain, less `authorization` and `idempotency-key`.
    request_headers: Vec<Header>,
    /// What `kyc_jwt` leaves in `kong.ctx.shared` when it is not in the chain itself.
    properties: HashMap<String, Vec<u8>>,
}

/// One request's result, as the client would see it.
struct Served {
    /// A filter answered before the upstream (`send_local_response` in a request phase).
    local: Option<LocalResponse>,
    request_headers: Vec<Header>,
    response_headers: Vec<Header>,
    body: Vec<u8>,
}

struct Bench {
    workers: Workers,
    plan: Plan,
    cases: Vec<Case>,
    /// `Bearer <token>` for the cached cases, and the rotation of the uncached one.
    bearer: Vec<u8>,
    uncached: Vec<Vec<u8>>,
    next_token: Cell<usize>,
    next_key: Cell<u64>,
    response_headers: Vec<Header>,
}

fn main() {
    let started = SystemTime::now();
    let bench = Bench::new();
    bench.check();
    let mut c = Criterion::default()
        .without_plots()
        .output_directory(&criterion_dir())
        .configure_from_args();
    // The counting allocator stays installed, but counts nothing while criterion times: its
    // bookkeeping on every allocation and free would otherwise show in the figures.
    allocation_counter::opt_out(|| {
        let mut group = c.benchmark_group(GROUP);
        for case in &bench.cases {
            group.bench_function(case.spec.id, |b| b.iter(|| bench.request(case)));
        }
        group.finish();
    });
    c.final_summary();
    bench.report(started);
}

fn repo_root() -> PathBuf {
    let edge = Path::new(env!("CARGO_MANIFEST_DIR"));
    edge.parent().unwrap_or(edge).to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo_root().join("target"), PathBuf::from)
}

/// Where criterion writes (its own rule, minus the `cargo metadata` call), set explicitly so the
/// report reads the same place.
fn criterion_dir() -> PathBuf {
    std::env::var_os("CRITERION_HOME").map_or_else(|| target_dir().join("criterion"), PathBuf::from)
}

/// The built filters (`target/filters`, or `KYC_BENCH_FILTERS` to compare another build) plus
/// `noop.wat`, in one directory for `Host::load`.
fn filters_dir() -> PathBuf {
    let built = std::env::var_os("KYC_BENCH_FILTERS")
        .map_or_else(|| repo_root().join("target/filters"), PathBuf::from);
    assert!(
        built.join("kyc_jwt.wasm").exists(),
        "{} has no built filters: run `bash scripts/build-filters.sh` first",
        built.display()
    );
    let dir = target_dir().join("bench/filters-with-noop");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating target/bench/filters-with-noop");
    for entry in std::fs::read_dir(&built).expect("reading target/filters") {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_some_and(|e| e == "wasm") {
            let name = path.file_name().expect("a file name");
            std::fs::copy(&path, dir.join(name)).expect("copying a filter");
        }
    }
    let noop = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/noop.wat");
    let wasm = wat::parse_file(&noop).expect("benches/noop.wat is valid WAT");
    std::fs::write(dir.join(format!("{NOOP}.wasm")), wasm).expect("writing the no-op filter");
    dir
}

/// The filters' configs from the first chain of `declarative/kong.yaml` that has all four, with
/// the rate limit at its schema's maximum (1 000 000/s, burst 1 000 000) so it never rejects.
fn shipped_configs(secret: &str) -> HashMap<String, Value> {
    let path = repo_root().join("declarative/kong.yaml");
    let text = std::fs::read_to_string(&path)
        .expect("reading declarative/kong.yaml")
        .replace(SECRET_TEMPLATE, secret);
    let file: Value = serde_yaml_ng::from_str(&text).expect("declarative/kong.yaml parses");
    let chains = items(&file["services"])
        .iter()
        .flat_map(|s| items(&s["routes"]))
        .flat_map(|r| items(&r["filter_chains"]));
    let mut configs = chains
        .map(|chain| {
            items(&chain["filters"])
                .iter()
                .filter_map(|f| Some((f["name"].as_str()?.to_owned(), f["config"].clone())))
                .collect::<HashMap<_, _>>()
        })
        .find(|configs| CHAIN.iter().all(|f| configs.contains_key(*f)))
        .expect("declarative/kong.yaml has a chain with kyc_jwt, kyc_rate_limit, kyc_idempotency and kyc_pii_mask");
    let limit = configs
        .get_mut(RATE_LIMIT)
        .and_then(Value::as_object_mut)
        .expect("kyc_rate_limit has a config object");
    limit.insert("rate_per_sec".into(), json!(1_000_000));
    limit.insert("burst".into(), json!(1_000_000));
    configs
}

fn items(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

/// One route per case, told apart by host (`<id>.bench`), each with its chain.
fn declarative(configs: &HashMap<String, Value>) -> String {
    let mut yaml = String::from(
        "_format_version: \"3.0\"\nservices:\n- name: bench\n  url: http://127.0.0.1:9\n  routes:\n",
    );
    for spec in SPECS {
        let filters: Vec<String> = spec
            .filters
            .iter()
            .map(|f| match configs.get(*f) {
                Some(config) => json!({ "name": f, "config": config }).to_string(),
                None => json!({ "name": f }).to_string(),
            })
            .collect();
        let id = spec.id;
        let _ = writeln!(
            yaml,
            "  - {{name: {id}, hosts: [{id}.bench], paths: [/api/v1/kyc/], strip_path: false,\n     \
             filter_chains: [{{name: {id}-chain, filters: [{}]}}]}}",
            filters.join(", ")
        );
    }
    yaml
}

fn sign(secret: &str, jwt: &Value, jti: usize) -> Vec<u8> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs();
    let claims = json!({
        "iss": jwt["issuer"], "aud": jwt["audience"], "sub": CLIENT_ID, "client_id": CLIENT_ID,
        "scope": SCOPES, "iat": now, "nbf": now, "exp": now + 86_400,
        "jti": format!("bench-{jti}"),
    });
    // An access token as kyc-service issues it (RFC 9068's `typ`, which the filter requires).
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.typ = Some("at+jwt".into());
    let token = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("signing a token");
    format!("Bearer {token}").into_bytes()
}

fn header(name: &str, value: &str) -> Header {
    (name.to_owned(), value.as_bytes().to_vec())
}

fn find<'h>(headers: &'h [Header], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

impl Bench {
    fn new() -> Self {
        let secret = std::env::var("DECK_KYC_JWT_SECRET").unwrap_or_else(|_| BENCH_SECRET.into());
        let conf = KongConf::load(&repo_root().join("kong/kong.conf")).expect("kong/kong.conf");
        let shm = Arc::new(Shm::new(&conf.shm_zones));
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let host = Arc::new(Host::load(&filters_dir(), shm, metrics).expect("loading the filters"));
        let configs = shipped_configs(&secret);
        let decl = Declarative::parse(&declarative(&configs), &host.filter_names())
            .expect("the bench's declarative file parses");
        let plan = Plan::new(decl, 1).expect("the bench's plan");
        for step in &plan.steps {
            if let Err(why) = host.validate(&step.filter, &step.config) {
                panic!("{} refuses its config: {why}", step.filter);
            }
        }
        let cases = SPECS.iter().map(|spec| Case::new(spec, &plan)).collect();
        let jwt = &configs[JWT];
        Self {
            workers: Workers::new(host, 1),
            plan,
            cases,
            bearer: sign(&secret, jwt, 0),
            uncached: (1..=UNCACHED_TOKENS)
                .map(|i| sign(&secret, jwt, i))
                .collect(),
            next_token: Cell::new(0),
            next_key: Cell::new(0),
            response_headers: vec![
                header("content-type", "application/json"),
                header("content-length", &RESPONSE_BODY.len().to_string()),
                header("x-request-id", REQUEST_ID),
                header("date", "Sun, 30 Nov 2025 18:30:00 GMT"),
            ],
        }
    }

    /// One typical request of `case`, with a fresh `Idempotency-Key` for a POST.
    fn request(&self, case: &Case) -> Served {
        let key = (case.spec.method == Method::Post).then(|| {
            let n = self.next_key.get();
            self.next_key.set(n + 1);
            format!("bench-{n:016x}")
        });
        self.serve(case, key)
    }

    /// The request through the chain, as `proxy::handle` and `proxy::pump` drive it.
    fn serve(&self, case: &Case, idempotency_key: Option<String>) -> Served {
        let mut request_headers = case.request_headers.clone();
        let bearer = match case.spec.token {
            Token::Cached => self.bearer.clone(),
            Token::Uncached => {
                let i = self.next_token.get();
                self.next_token.set((i + 1) % self.uncached.len());
                self.uncached[i].clone()
            }
        };
        request_headers.push(("authorization".into(), bearer));
        if let Some(key) = idempotency_key {
            request_headers.push(("idempotency-key".into(), key.into_bytes()));
        }
        let ex = Exchange {
            request_headers,
            properties: case.properties.clone(),
            info: case.info.clone(),
            ..Exchange::default()
        };
        let mut flow = self
            .workers
            .flow(0, &self.plan, Arc::clone(&case.steps), ex);
        flow.start().expect("the chain starts");
        let mut outcome = flow.request_headers().expect("request headers");
        if outcome == Outcome::Continue && case.spec.method == Method::Post {
            outcome = flow.request_body(POST_BODY.to_vec()).expect("request body");
            black_box(flow.take_body());
        }
        if outcome == Outcome::Respond {
            let local = flow.take_local();
            flow.finish();
            return Served {
                local,
                request_headers: Vec::new(),
                response_headers: Vec::new(),
                body: Vec::new(),
            };
        }
        let outcome = flow
            .response_headers(200, self.response_headers.clone())
            .expect("response headers");
        assert_eq!(
            outcome,
            Outcome::Continue,
            "{}: a local response",
            case.spec.id
        );
        let response_headers = flow.response_header_map();
        let mut body = flow
            .response_body(RESPONSE_BODY.as_bytes().to_vec(), false)
            .expect("response body");
        body.extend(flow.response_body(Vec::new(), true).expect("end of stream"));
        flow.finish();
        Served {
            local: None,
            request_headers: std::mem::take(&mut flow.exchange_mut().request_headers),
            response_headers,
            body,
        }
    }

    /// Warms every case up, and checks each filter really did its work on the bench's request:
    /// a figure for a filter that stood aside would flatter it.
    fn check(&self) {
        for case in &self.cases {
            for _ in 0..WARM_UP_REQUESTS {
                black_box(self.request(case));
            }
            let id = case.spec.id;
            let served = self.request(case);
            if let Some(local) = &served.local {
                panic!(
                    "{id}: a filter answered {} {}",
                    local.status,
                    String::from_utf8_lossy(&local.body)
                );
            }
            assert_eq!(
                find(&served.response_headers, ":status"),
                Some("200"),
                "{id}"
            );
            let has = |f: &str| case.spec.filters.contains(&f);
            if has(JWT) {
                let client = find(&served.request_headers, "x-kyc-client-id");
                assert_eq!(client, Some(CLIENT_ID), "{id}: kyc_jwt forwards the client");
            }
            if has(RATE_LIMIT) {
                assert!(
                    find(&served.response_headers, "ratelimit").is_some(),
                    "{id}: kyc_rate_limit adds its headers"
                );
            }
            let body = String::from_utf8_lossy(&served.body);
            if has(PII_MASK) {
                let masked: Value = serde_json::from_str(&body).expect("the masked body is JSON");
                assert_ne!(masked["phone"], "13800138000", "{id}: kyc_pii_mask masks");
                assert_ne!(masked["name"], "张三", "{id}: kyc_pii_mask masks");
            } else {
                assert_eq!(body, RESPONSE_BODY, "{id}: the body passes unchanged");
            }
            if has(IDEMPOTENCY) && case.spec.method == Method::Post {
                // The key was claimed and the response stored: a retry is answered from it.
                let key = format!("bench-check-{id}");
                assert!(self.serve(case, Some(key.clone())).local.is_none(), "{id}");
                let replay = self.serve(case, Some(key)).local.map(|l| l.status);
                assert_eq!(replay, Some(200), "{id}: kyc_idempotency replays");
            }
        }
    }

    /// The cases' time per request measured in turn, `rounds` times a batch of each, median per
    /// case: load from elsewhere on a shared machine falls on every case alike, so the ratios to
    /// the reference hold better than those of criterion's runs, which are seconds apart.
    fn interleaved(&self, cases: &[(&Case, f64)], rounds: usize) -> Vec<f64> {
        const BATCH: u32 = 20;
        let mut samples = vec![Vec::with_capacity(rounds); cases.len()];
        allocation_counter::opt_out(|| {
            for _ in 0..rounds {
                for ((case, _), times) in cases.iter().zip(&mut samples) {
                    let start = Instant::now();
                    for _ in 0..BATCH {
                        black_box(self.request(case));
                    }
                    times.push(start.elapsed().as_nanos() as f64 / f64::from(BATCH));
                }
            }
        });
        samples
            .into_iter()
            .map(|mut times| {
                times.sort_by(f64::total_cmp);
                times.get(times.len() / 2).copied().unwrap_or(f64::NAN)
            })
            .collect()
    }

    /// Heap allocations per request (count, bytes), outside criterion's loop.
    fn allocations(&self, case: &Case) -> (f64, f64) {
        for _ in 0..WARM_UP_REQUESTS {
            black_box(self.request(case));
        }
        let info = allocation_counter::measure(|| {
            for _ in 0..ALLOC_REQUESTS {
                black_box(self.request(case));
            }
        });
        let n = ALLOC_REQUESTS as f64;
        (info.count_total as f64 / n, info.bytes_total as f64 / n)
    }

    /// The table and `target/bench/filters.json`, for the cases criterion measured in this run
    /// (none under `--list`, `--profile-time` or `cargo test`).
    fn report(&self, started: SystemTime) {
        let mut measured = Vec::new();
        for case in &self.cases {
            let path = criterion_dir()
                .join(GROUP)
                .join(case.spec.id)
                .join("new/estimates.json");
            let fresh = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= started);
            if !fresh {
                continue;
            }
            let estimates: Value = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
            let Some(ns) = estimates["median"]["point_estimate"].as_f64() else {
                eprintln!("{}: no median in {}", case.spec.id, path.display());
                continue;
            };
            measured.push((case, ns));
        }
        if measured.is_empty() {
            return;
        }
        let quick = std::env::args().any(|a| a == "--quick");
        let interleaved = self.interleaved(&measured, if quick { 100 } else { 400 });
        let mut rows = Vec::new();
        for ((case, ns), fair) in measured.iter().zip(interleaved) {
            let (allocs, bytes) = self.allocations(case);
            rows.push((case.spec, *ns, fair, allocs, bytes));
        }
        let reference = |method: Method| {
            rows.iter()
                .find(|(s, ..)| s.filters == [NOOP] && s.method == method)
                .map(|(_, _, fair, ..)| *fair)
        };
        let mut cases = Vec::new();
        println!(
            "\nper request inside the host: ns/req is criterion's median (target ≤ {:.0} µs per \
             filter);\ninterleaved is the median of {} rounds taking every case in turn, and × ref \
             is read from it",
            TARGET_NS_PER_FILTER / 1000.0,
            if quick { 100 } else { 400 }
        );
        println!(
            "{:<32} {:>6} {:>9} {:>10} {:>12} {:>7} {:>11} {:>10}",
            "case",
            "method",
            "ns/req",
            "ns/filter",
            "interleaved",
            "× ref",
            "allocs/req",
            "bytes/req"
        );
        for (spec, ns, fair, allocs, bytes) in &rows {
            let per_filter = ns / spec.filters.len() as f64;
            let ratio = reference(spec.method).map(|r| fair / r);
            println!(
                "{:<32} {:>6} {:>9.0} {:>10.0} {:>12.0} {:>7} {:>11.1} {:>10.0}{}",
                spec.name,
                spec.method.as_str(),
                ns,
                per_filter,
                fair,
                ratio.map_or_else(|| "-".into(), |r| format!("{r:.2}")),
                allocs,
                bytes,
                if per_filter > TARGET_NS_PER_FILTER {
                    "  over target"
                } else {
                    ""
                },
            );
            cases.push(json!({
                "name": spec.name,
                "id": spec.id,
                "method": spec.method.as_str(),
                "filters": spec.filters,
                "ns_per_request": ns,
                "ns_per_filter": per_filter,
                "ns_per_request_interleaved": fair,
                "ratio_to_reference": ratio,
                "allocs_per_request": allocs,
                "alloc_bytes_per_request": bytes,
            }));
        }
        let summary = json!({
            "figure": "issue 8, figure 3: per-request cost of each filter inside the edge's host",
            "statistic": "criterion median, ns per request",
            "quick": quick,
            "target_ns_per_filter": TARGET_NS_PER_FILTER,
            "alloc_requests": ALLOC_REQUESTS,
            "cases": cases,
        });
        let out = target_dir().join("bench/filters.json");
        let written = std::fs::create_dir_all(target_dir().join("bench")).and_then(|()| {
            let text = serde_json::to_string_pretty(&summary).unwrap_or_default();
            std::fs::write(&out, text + "\n")
        });
        match written {
            Ok(()) => println!("written: {}", out.display()),
            Err(e) => eprintln!("writing {}: {e}", out.display()),
        }
    }
}

impl Case {
    fn new(spec: &'static Spec, plan: &Plan) -> Self {
        let host = format!("{}.bench:8000", spec.id);
        let (method, path) = match spec.method {
            Method::Get => ("GET", STATUS_PATH),
            Method::Post => ("POST", POST_PATH),
        };
        let m = plan
            .route(method, &host, path)
            .unwrap_or_else(|| panic!("{}: no route", spec.id));
        assert_eq!(m.steps.len(), spec.filters.len(), "{}: its chain", spec.id);
        // What the proxy builds from curl's request: pseudo-headers, curl's headers, the edge's
        // request id; `authorization` and `idempotency-key` are added per request.
        let mut request_headers = vec![
            header(":method", method),
            header(":path", path),
            header(":authority", &host),
            header(":scheme", "http"),
            header("host", &host),
            header("user-agent", "curl/8.14.1"),
            header("accept", "*/*"),
        ];
        if spec.method == Method::Post {
            request_headers.push(header("content-type", "application/json"));
            request_headers.push(header("content-length", &POST_BODY.len().to_string()));
        }
        request_headers.push(header("x-request-id", REQUEST_ID));
        let properties = if spec.filters.contains(&JWT) {
            HashMap::new()
        } else {
            HashMap::from([
                (
                    "kong.ctx.shared.kyc_client_id".to_owned(),
                    CLIENT_ID.as_bytes().to_vec(),
                ),
                (
                    "kong.ctx.shared.kyc_scopes".to_owned(),
                    SCOPES.as_bytes().to_vec(),
                ),
            ])
        };
        Self {
            spec,
            steps: Arc::clone(&m.steps),
            info: RequestInfo {
                route_id: m.route.id.to_string(),
                route_name: m.route.name.clone().unwrap_or_default(),
                service_id: m.service.id.to_string(),
                service_name: m.service.name.clone(),
                client: Some(([127, 0, 0, 1], 51_234).into()),
                local: Some(([127, 0, 0, 1], 8000).into()),
                request_id: REQUEST_ID.into(),
            },
            request_headers,
            properties,
        }
    }
}
