//! filter-kit's Idempotency-Key parsing and its shared-data records. A key that parses is 1-255
//! visible ASCII characters without quotes or backslashes and parses to itself again, bare or
//! quoted; a refusal is a 400; a record that decodes re-encodes to the same record.

#![no_main]

use filter_kit::idempotency::{IdempotencyKey, Record, storage_key};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(record) = Record::decode(data) {
        assert_eq!(Record::decode(&record.encode()), Some(record));
    }
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    match IdempotencyKey::parse(Some(header)) {
        Ok(key) => {
            let k = key.as_str();
            assert!((1..=255).contains(&k.len()), "length {}", k.len());
            assert!(
                k.bytes()
                    .all(|b| (0x21..=0x7E).contains(&b) && !matches!(b, b'"' | b'\'' | b'\\')),
                "a refused character in {k:?}"
            );
            assert_eq!(IdempotencyKey::parse(Some(k)).as_ref(), Ok(&key));
            assert_eq!(
                IdempotencyKey::parse(Some(&format!("\"{k}\""))).as_ref(),
                Ok(&key)
            );
            // Another client's records are never reachable through the client id.
            assert_ne!(storage_key("a/b", &key), storage_key("a", &key));
        }
        Err(e) => assert_eq!(e.reply().status, 400),
    }
});
