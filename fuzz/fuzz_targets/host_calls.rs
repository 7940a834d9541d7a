//! The edge's host-call boundary: a guest filter calls the proxy-wasm and WASI host functions of
//! kyc-edge with pointers, lengths and enum values taken from the input, through the real host (the
//! engine, linker and per-instance state `Host::load` builds, one request's `Flow` through every
//! phase, as `proxy::handle` drives it).
//!
//! The guest (`guest_wat`, compiled once per process) reads the input as its plugin configuration
//! and runs it as a program, from `on_configure` through `on_delete`; each callback runs on from
//! where the last one stopped, until a `yield` or the end. An instruction is one byte, taken modulo
//! the number of instructions: an index into `IMPORTS` calls that host function, its arguments
//! following (an i64 as 8 bytes, an i32 as a kind byte and 4 bytes, see `arg` in the guest: a
//! literal, the end of memory + v, a pointer into the program, a small value, the last allocation
//! + v, the out-pointer scratch, the heap top + v, or an extreme); then `yield a` (returns `a & 3`
//! from the callback), `malloc mode v` (how `proxy_on_memory_allocate` answers from now on: a
//! bump allocator, a fixed garbage pointer, the end of memory, a trap, a re-entrant host call, the
//! previous block again, the out-pointer scratch, or growing memory first), `grow n`,
//! `store addr n bytes`, `fill addr len byte` and `put32 addr value` to lay out memory.
//!
//! Invariants: every host call returns a proxy-wasm status (0..=12) or traps the guest; the host
//! never panics or aborts (libFuzzer reports both); after a trap the same workers serve a fresh
//! instance. The guest reports a status out of range through a shared-data key in a zone of its
//! own, which the harness checks.

#![no_main]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use kyc_edge::declarative::Declarative;
use kyc_edge::metrics::Metrics;
use kyc_edge::router::{FilterStep, Plan};
use kyc_edge::shm::Shm;
use kyc_edge::wasm::{Exchange, Failure, Flow, Header, Host, Outcome, RequestInfo, Workers};
use libfuzzer_sys::fuzz_target;

const FILTER: &str = "host_calls";

/// Every import the edge's linker defines (`edge/src/wasm/abi.rs`): module, name, parameters
/// (`i` i32, `I` i64) and whether it returns a status. A signature that drifts from the host's
/// fails the instantiation, and the target with it.
const IMPORTS: &[(&str, &str, &str, bool)] = &[
    ("env", "proxy_log", "iii", true),
    ("env", "proxy_get_log_level", "i", true),
    ("env", "proxy_get_current_time_nanoseconds", "i", true),
    ("env", "proxy_set_tick_period_milliseconds", "i", true),
    ("env", "proxy_set_effective_context", "i", true),
    ("env", "proxy_continue_stream", "i", true),
    ("env", "proxy_get_buffer_bytes", "iiiii", true),
    ("env", "proxy_set_buffer_bytes", "iiiii", true),
    ("env", "proxy_get_header_map_pairs", "iii", true),
    ("env", "proxy_set_header_map_pairs", "iii", true),
    ("env", "proxy_get_header_map_value", "iiiii", true),
    ("env", "proxy_replace_header_map_value", "iiiii", true),
    ("env", "proxy_add_header_map_value", "iiiii", true),
    ("env", "proxy_remove_header_map_value", "iii", true),
    ("env", "proxy_get_property", "iiii", true),
    ("env", "proxy_set_property", "iiii", true),
    ("env", "proxy_get_shared_data", "iiiii", true),
    ("env", "proxy_set_shared_data", "iiiii", true),
    ("env", "proxy_send_local_response", "iiiiiiii", true),
    ("env", "proxy_define_metric", "iiii", true),
    ("env", "proxy_increment_metric", "iI", true),
    ("env", "proxy_record_metric", "iI", true),
    ("env", "proxy_get_metric", "ii", true),
    ("env", "proxy_http_call", "iiiiiiiiii", true),
    ("env", "proxy_grpc_call", "iiiiiiiiiiii", true),
    ("env", "proxy_grpc_stream", "iiiiiiiii", true),
    ("env", "proxy_grpc_send", "iiii", true),
    ("env", "proxy_grpc_cancel", "i", true),
    ("env", "proxy_grpc_close", "i", true),
    ("env", "proxy_get_status", "iii", true),
    ("env", "proxy_register_shared_queue", "iii", true),
    ("env", "proxy_resolve_shared_queue", "iiiii", true),
    ("env", "proxy_dequeue_shared_queue", "iii", true),
    ("env", "proxy_enqueue_shared_queue", "iii", true),
    ("env", "proxy_call_foreign_function", "iiiiii", true),
    ("env", "proxy_close_stream", "i", true),
    ("env", "proxy_done", "", true),
    ("wasi_snapshot_preview1", "fd_write", "iiii", true),
    ("wasi_snapshot_preview1", "environ_sizes_get", "ii", true),
    ("wasi_snapshot_preview1", "environ_get", "ii", true),
    ("wasi_snapshot_preview1", "proc_exit", "i", false),
];

/// The instructions after the imports: yield, malloc, grow, store, fill, put32.
const CONTROL_OPS: usize = 6;

/// The guest reports a host call that returned something other than a status here; no other
/// zone holds a key that starts so, so only the guest's report can set it (or an input that spells
/// out this key and zone exactly, which the harness would then report wrongly).
const ORACLE_ZONE: &str = "host-calls-oracle";
const ORACLE_KEY: &str = "host-calls-oracle/a-host-call-returned-no-status";

/// The guest's memory: 0..0x400 stays zero (for null-ish pointers), out-pointer scratch at
/// 0x400, the oracle's value and key, then the heap (the program is its first block).
const RET: u32 = 0x400;
const ORACLE_VAL: u32 = 0x480;
const ORACLE_KEY_AT: u32 = 0x500;
const HEAP: u32 = 0x1000;
/// Pages: the guest may grow to 2 MiB. What the target checks is how the host takes arguments,
/// not how much a filter may make it hold (bodies and headers it sets, log lines it writes grow
/// with guest memory, and no host limit is asked of here); a small memory keeps those in bounds.
const MEMORY_MAX_PAGES: u32 = 32;

fn import_index(name: &str) -> usize {
    IMPORTS
        .iter()
        .position(|(_, n, _, _)| *n == name)
        .expect("the import is in IMPORTS")
}

/// The guest module's WAT text. Its interpreter is written out per import from `IMPORTS`.
#[allow(clippy::too_many_lines)]
fn guest_wat() -> String {
    let ops = IMPORTS.len() + CONTROL_OPS;
    let get_buffer_bytes = import_index("proxy_get_buffer_bytes");
    let set_shared_data = import_index("proxy_set_shared_data");
    let mut w = String::from("(module\n");
    for (i, (module, name, params, result)) in IMPORTS.iter().enumerate() {
        let params: String = params
            .chars()
            .map(|p| {
                if p == 'I' {
                    " (param i64)"
                } else {
                    " (param i32)"
                }
            })
            .collect();
        let result = if *result { " (result i32)" } else { "" };
        let _ = writeln!(
            w,
            "  (import \"{module}\" \"{name}\" (func $f{i}{params}{result}))"
        );
    }
    let _ = write!(
        w,
        r#"
  (memory (export "memory") 1 {MEMORY_MAX_PAGES})
  (data (i32.const {ORACLE_KEY_AT}) "{ORACLE_KEY}")
  (global $cur (mut i32) (i32.const 0))
  (global $end (mut i32) (i32.const 0))
  (global $prog (mut i32) (i32.const 0))
  (global $heap (mut i32) (i32.const {HEAP}))
  (global $last (mut i32) (i32.const {HEAP}))
  (global $mode (mut i32) (i32.const 0))
  (global $mval (mut i32) (i32.const 0))
  (global $depth (mut i32) (i32.const 0))

  (func $mem_end (result i32) (i32.shl (memory.size) (i32.const 16)))

  ;; The next program byte, 0 past the end.
  (func $byte (result i32) (local $b i32)
    (if (i32.ge_u (global.get $cur) (global.get $end)) (then (return (i32.const 0))))
    (local.set $b (i32.load8_u (global.get $cur)))
    (global.set $cur (i32.add (global.get $cur) (i32.const 1)))
    (local.get $b))
  (func $u32 (result i32)
    (i32.or
      (i32.or (call $byte) (i32.shl (call $byte) (i32.const 8)))
      (i32.or (i32.shl (call $byte) (i32.const 16)) (i32.shl (call $byte) (i32.const 24)))))
  (func $u64 (result i64)
    (i64.or (i64.extend_i32_u (call $u32)) (i64.shl (i64.extend_i32_u (call $u32)) (i64.const 32))))

  ;; An i32 argument: a kind byte, then 4 bytes v.
  (func $arg (result i32) (local $kind i32) (local $v i32)
    (local.set $kind (i32.and (call $byte) (i32.const 7)))
    (local.set $v (call $u32))
    (block $k7 (block $k6 (block $k5 (block $k4 (block $k3 (block $k2 (block $k1 (block $k0
      (br_table $k0 $k1 $k2 $k3 $k4 $k5 $k6 $k7 (local.get $kind)))
      (return (local.get $v)))
      (return (i32.add (call $mem_end) (local.get $v))))
      (return (i32.add (global.get $prog) (i32.and (local.get $v) (i32.const 0xffff)))))
      (return (i32.and (local.get $v) (i32.const 0xff))))
      (return (i32.add (global.get $last) (local.get $v))))
      (return (i32.add (i32.const {RET}) (i32.and (local.get $v) (i32.const 0x3f)))))
      (return (i32.add (global.get $heap) (local.get $v))))
    (block $x3 (block $x2 (block $x1 (block $x0
      (br_table $x0 $x1 $x2 $x3 (i32.and (local.get $v) (i32.const 3))))
      (return (i32.const 0x80000000)))
      (return (i32.const 0x7fffffff)))
      (return (i32.const -1)))
    (i32.or (local.get $v) (i32.const 0x80000000)))

  ;; A sane allocator: 8-aligned blocks from the heap top, growing memory as needed; 0 when full.
  (func $bump (param $size i32) (result i32) (local $p i32) (local $top i64) (local $pages i64)
    (local.set $p (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
    (local.set $top (i64.add (i64.extend_i32_u (local.get $p)) (i64.extend_i32_u (local.get $size))))
    (if (i64.gt_u (local.get $top) (i64.extend_i32_u (call $mem_end)))
      (then
        (local.set $pages (i64.shr_u
          (i64.add (i64.sub (local.get $top) (i64.extend_i32_u (call $mem_end))) (i64.const 0xffff))
          (i64.const 16)))
        (if (i64.gt_u (local.get $pages) (i64.const {MEMORY_MAX_PAGES})) (then (return (i32.const 0))))
        (if (i32.eq (memory.grow (i32.wrap_i64 (local.get $pages))) (i32.const -1))
          (then (return (i32.const 0))))))
    (global.set $heap (i32.wrap_i64 (local.get $top)))
    (global.set $last (local.get $p))
    (local.get $p))

  (func $malloc (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (block $m7 (block $m6 (block $m5 (block $m4 (block $m3 (block $m2 (block $m1 (block $m0
      (br_table $m0 $m1 $m2 $m3 $m4 $m5 $m6 $m7 (i32.and (global.get $mode) (i32.const 7))))
      (return (call $bump (local.get $size))))
      ;; garbage
      (return (global.get $mval)))
      ;; near (or past) the end of memory
      (return (i32.sub (call $mem_end) (i32.and (global.get $mval) (i32.const 0xff)))))
      ;; the allocator traps
      (unreachable))
      ;; re-entrant: a host call that allocates, up to mval & 7 deep, then a sane block
      (if (i32.lt_u (global.get $depth) (i32.and (global.get $mval) (i32.const 7)))
        (then
          (global.set $depth (i32.add (global.get $depth) (i32.const 1)))
          (drop (call $f{get_buffer_bytes} (i32.const 7) (i32.const 0) (i32.const 16)
            (i32.const {RET}) (i32.add (i32.const {RET}) (i32.const 4))))
          (global.set $depth (i32.sub (global.get $depth) (i32.const 1)))))
      (return (call $bump (local.get $size))))
      ;; the previous block again (aliasing)
      (return (global.get $last)))
      ;; over the out-pointers the host writes next
      (return (i32.add (i32.const {RET}) (i32.and (global.get $mval) (i32.const 0x3f)))))
    ;; grow first, then a sane block
    (drop (memory.grow (i32.and (global.get $mval) (i32.const 3))))
    (call $bump (local.get $size)))

  ;; A host call answered with something that is not a proxy-wasm status: tell the harness.
  (func $check (param $op i32) (param $r i32)
    (if (i32.gt_u (local.get $r) (i32.const 12))
      (then
        (i32.store (i32.const {ORACLE_VAL}) (local.get $op))
        (i32.store (i32.const {ORACLE_VAL_4}) (local.get $r))
        (drop (call $f{set_shared_data} (i32.const {ORACLE_KEY_AT}) (i32.const {ORACLE_KEY_LEN})
          (i32.const {ORACLE_VAL}) (i32.const 8) (i32.const 0))))))

  ;; Runs the program from where it stopped, until a yield (its value) or the end (`default`).
  (func $run (param $default i32) (result i32) (local $op i32) (local $r i32) (local $a i32) (local $n i32)
    (loop $next
      (if (i32.ge_u (global.get $cur) (global.get $end)) (then (return (local.get $default))))
      (local.set $op (i32.rem_u (call $byte) (i32.const {ops})))
"#,
        ORACLE_VAL_4 = ORACLE_VAL + 4,
        ORACLE_KEY_LEN = ORACLE_KEY.len(),
    );
    for k in (0..ops).rev() {
        let _ = writeln!(w, "      (block $c{k}");
    }
    let labels: Vec<String> = (0..ops).map(|k| format!("$c{k}")).collect();
    let _ = writeln!(
        w,
        "        (br_table {} (local.get $op)))",
        labels.join(" ")
    );
    for (i, (_, name, params, result)) in IMPORTS.iter().enumerate() {
        let args: Vec<&str> = params
            .chars()
            .map(|p| {
                if p == 'I' {
                    "(call $u64)"
                } else {
                    "(call $arg)"
                }
            })
            .collect();
        let call = format!("(call $f{i} {})", args.join(" "));
        if *result {
            let _ = writeln!(
                w,
                "      ;; {name}\n      (call $check (i32.const {i}) {call}) (br $next))"
            );
        } else {
            let _ = writeln!(w, "      ;; {name}\n      {call} (br $next))");
        }
    }
    let _ = write!(
        w,
        r#"      ;; yield a
      (return (i32.and (call $byte) (i32.const 3))))
      ;; malloc mode v
      (global.set $mode (call $byte)) (global.set $mval (call $u32)) (br $next))
      ;; grow n
      (drop (memory.grow (i32.and (call $byte) (i32.const 3)))) (br $next))
      ;; store addr n bytes: copies the next n program bytes to addr
      (local.set $a (call $arg))
      (local.set $n (call $byte))
      (if (i32.gt_u (local.get $n) (i32.sub (global.get $end) (global.get $cur)))
        (then (local.set $n (i32.sub (global.get $end) (global.get $cur)))))
      (memory.copy (local.get $a) (global.get $cur) (local.get $n))
      (global.set $cur (i32.add (global.get $cur) (local.get $n)))
      (br $next))
      ;; fill addr len byte
      (local.set $a (call $arg))
      (local.set $n (call $arg))
      (memory.fill (local.get $a) (call $byte) (local.get $n))
      (br $next))
    ;; put32 addr value
    (local.set $a (call $arg))
    (i32.store (local.get $a) (call $arg))
    (br $next))
    (local.get $default))

  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  ;; Loads the program (the plugin configuration) with the sane allocator, then runs it.
  (func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
    (if (i32.eqz (call $f{get_buffer_bytes} (i32.const 7) (i32.const 0) (local.get $size)
          (i32.const {RET}) (i32.add (i32.const {RET}) (i32.const 4))))
      (then
        (global.set $prog (i32.load (i32.const {RET})))
        (global.set $cur (global.get $prog))
        (global.set $end (i32.add (global.get $prog) (i32.load (i32.add (i32.const {RET}) (i32.const 4)))))))
    (call $run (i32.const 1)))
  (func (export "proxy_on_context_create") (param i32 i32) (drop (call $run (i32.const 0))))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (call $run (i32.const 0)))
  (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32) (call $run (i32.const 0)))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (call $run (i32.const 0)))
  (func (export "proxy_on_response_body") (param i32 i32 i32) (result i32) (call $run (i32.const 0)))
  (func (export "proxy_on_done") (param i32) (result i32) (call $run (i32.const 1)))
  (func (export "proxy_on_log") (param i32) (drop (call $run (i32.const 0))))
  (func (export "proxy_on_delete") (param i32) (drop (call $run (i32.const 0)))))
"#
    );
    w
}

/// The edge host over the guest, compiled once per process. Each input swaps in empty shared
/// data and metrics (the host's public fields), so no input sees another's state.
static HOST: Mutex<Option<Arc<Host>>> = Mutex::new(None);

fn load_host() -> Arc<Host> {
    let wasm = wat::parse_str(guest_wat()).expect("the guest's WAT is valid");
    let dir = std::env::temp_dir().join(format!("kyc-fuzz-host-calls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating the guest's directory");
    std::fs::write(dir.join(format!("{FILTER}.wasm")), wasm).expect("writing the guest");
    let host =
        Host::load(&dir, Arc::new(shm()), Arc::new(metrics())).expect("the edge loads the guest");
    let _ = std::fs::remove_dir_all(&dir);
    Arc::new(host)
}

fn shm() -> Shm {
    // A catch-all zone, a small one that fills and evicts, and the oracle's.
    let zones: HashMap<String, usize> = [
        ("*".to_owned(), 64 * 1024),
        ("kyc".to_owned(), 512),
        (ORACLE_ZONE.to_owned(), 1024),
    ]
    .into();
    Shm::new(&zones)
}

fn metrics() -> Metrics {
    Metrics::new().expect("a fresh metrics registry")
}

fn header(name: &str, value: &str) -> Header {
    (name.to_owned(), value.as_bytes().to_vec())
}

/// A request as `proxy::handle` hands it to the filters.
fn exchange() -> Exchange {
    Exchange {
        request_headers: vec![
            header(":method", "POST"),
            header(":path", "/api/v1/kyc/verify?lang=zh"),
            header(":authority", "api.kyc.test"),
            header(":scheme", "http"),
            header("content-type", "application/json"),
            header("authorization", "Bearer a.b.c"),
            header("idempotency-key", "fuzz-0001"),
            header("user-agent", "fuzz"),
        ],
        properties: [(
            "kong.ctx.shared.client_id".to_owned(),
            b"demo-client".to_vec(),
        )]
        .into(),
        info: RequestInfo {
            route_id: "11111111-1111-4111-8111-111111111111".into(),
            route_name: "kyc".into(),
            service_id: "22222222-2222-4222-8222-222222222222".into(),
            service_name: "kyc-service".into(),
            client: "203.0.113.7:50123".parse().ok(),
            local: "127.0.0.1:8000".parse().ok(),
            request_id: "fuzz-request".into(),
        },
        ..Exchange::default()
    }
}

/// One request through the chain, phase by phase, as `proxy::handle` and `proxy::reply_local`
/// drive it.
fn serve(flow: &mut Flow) -> Result<(), Failure> {
    flow.start()?;
    let mut outcome = flow.request_headers()?;
    if outcome == Outcome::Continue {
        outcome = flow.request_body(br#"{"name":"fuzz"}"#.to_vec())?;
        let _ = flow.take_body();
    }
    let body = if outcome == Outcome::Respond {
        let local = flow.take_local().ok_or(Failure::Stalled)?;
        flow.response_headers(local.status, local.headers)?;
        local.body
    } else {
        let headers = vec![header("content-type", "application/json")];
        match flow.response_headers(200, headers)? {
            Outcome::Respond => flow.take_replacement_body(),
            Outcome::Continue => {
                let _ = flow.response_body(br#"{"id":"#.to_vec(), false)?;
                b"1}".to_vec()
            }
        }
    };
    let _ = flow.response_header_map();
    let _ = flow.response_body(body, true)?;
    flow.finish();
    Ok(())
}

fn step(entry: usize, config: &[u8], chain: &str) -> Arc<[Arc<FilterStep>]> {
    Arc::from([Arc::new(FilterStep {
        entry,
        filter: FILTER.into(),
        config: config.into(),
        chain: chain.into(),
    })])
}

fuzz_target!(|data: &[u8]| {
    let mut slot = HOST
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let host = slot.get_or_insert_with(load_host);
    let shm = Arc::new(shm());
    {
        let host = Arc::get_mut(host).expect("no workers outlive an input");
        host.shm = Arc::clone(&shm);
        host.metrics = Arc::new(metrics());
    }
    let workers = Workers::new(Arc::clone(host), 1);
    let plan = Plan::new(Declarative::default(), 1).expect("an empty plan");

    let mut flow = workers.flow(0, &plan, step(0, data, "fuzz"), exchange());
    let served = serve(&mut flow);
    // A request that failed early still ends its contexts (as dropping the flow would).
    flow.finish();
    let trapped = flow.trapped();
    drop(flow);

    if let Ok(Some((value, _))) = shm.get(ORACLE_KEY) {
        let word = |at: usize| {
            value
                .get(at..at + 4)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u32::from_le_bytes)
        };
        let (op, status) = (word(0) as usize, word(4));
        let name = IMPORTS.get(op).map_or("?", |(_, n, _, _)| *n);
        panic!("{name} returned {status}, which is not a proxy-wasm status");
    }
    // A trap fails its request, or (in on_done, on_log or on_delete) only ends it.
    assert!(
        trapped || served != Err(Failure::Trap),
        "the request failed with a trap the flow does not know of"
    );

    // The trapped instance was dropped: the next request gets a fresh one, configured again.
    if trapped {
        let mut next = workers.flow(0, &plan, step(1, &[], "after-trap"), exchange());
        let served = serve(&mut next);
        assert!(
            served.is_ok() && !next.trapped(),
            "a fresh instance after a trap does not serve: {served:?}"
        );
    }
});
