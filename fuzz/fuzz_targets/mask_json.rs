//! filter-kit's JSON masking on any bytes. Never panics; valid JSON is never judged not JSON; a
//! masked body of valid JSON is valid JSON; masking a masked body changes nothing.

#![no_main]

use filter_kit::config::MaskConfig;
use filter_kit::mask::{MaskOutcome, mask_json};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let cfg = MaskConfig::default();
    let valid = serde_json::from_slice::<Value>(data).is_ok();
    match mask_json(data, &cfg) {
        MaskOutcome::NotJson => assert!(!valid, "valid JSON judged not JSON"),
        MaskOutcome::Unchanged => {}
        MaskOutcome::Masked(out) => {
            if valid {
                serde_json::from_slice::<Value>(&out).expect("masked JSON is still JSON");
            }
            assert_eq!(
                mask_json(&out, &cfg),
                MaskOutcome::Unchanged,
                "masking a masked body changed it"
            );
        }
    }
});
