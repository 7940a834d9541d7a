//! What a filter can make the host allocate: `fd_write` (a filter's stdout and stderr, which the
//! edge logs) gathers at most `FD_WRITE_MAX` bytes per call and reports a short write, whatever
//! the filter asks for (STRIDE D7 in docs/SECURITY.md).

use std::collections::HashMap;
use std::sync::Arc;

use kyc_edge::metrics::Metrics;
use kyc_edge::shm::Shm;
use kyc_edge::wasm::{FD_WRITE_MAX, Host};

/// `on_configure` writes two I/O vectors of 60,000 bytes each (120,000 in all) to stdout in one
/// `fd_write`, then refuses its configuration when the host reported exactly `FD_WRITE_MAX`
/// bytes written, and traps on any other count.
const GUEST: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 3)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 160000))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (memory.fill (i32.const 4096) (i32.const 97) (i32.const 120000))
    (i32.store (i32.const 1024) (i32.const 4096))
    (i32.store (i32.const 1028) (i32.const 60000))
    (i32.store (i32.const 1032) (i32.const 64096))
    (i32.store (i32.const 1036) (i32.const 60000))
    (drop (call $fd_write (i32.const 1) (i32.const 1024) (i32.const 2) (i32.const 2048)))
    (if (i32.ne (i32.load (i32.const 2048)) (i32.const FD_WRITE_MAX)) (then unreachable))
    (i32.const 0))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_response_body") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_delete") (param i32)))
"#;

#[test]
fn fd_write_gathers_at_most_its_cap_and_reports_a_short_write() {
    let dir = std::env::temp_dir().join(format!("kyc-edge-fdw-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let wat = GUEST.replace("FD_WRITE_MAX", &FD_WRITE_MAX.to_string());
    std::fs::write(
        dir.join("fdw.wasm"),
        wat::parse_str(&wat).expect("valid wat"),
    )
    .expect("write");
    let zones: HashMap<String, usize> = HashMap::new();
    let host = Host::load(
        &dir,
        Arc::new(Shm::new(&zones)),
        Arc::new(Metrics::new().expect("metrics")),
    )
    .expect("loads");
    // `validate` runs on_configure and returns what the filter logged when it refuses
    let logged = host.validate("fdw", b"").expect_err("the guest refuses");
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        !logged.contains("trapped"),
        "{}",
        &logged[..logged.len().min(200)]
    );
    assert_eq!(
        logged.len(),
        FD_WRITE_MAX,
        "{}",
        &logged[..logged.len().min(200)]
    );
    assert!(logged.bytes().all(|b| b == b'a'));
}
