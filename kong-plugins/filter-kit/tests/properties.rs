//! Property tests of the masks: every rule only replaces characters with stars and is idempotent;
//! a valid ID number or phone never survives in a masked body; `mask_json` on valid JSON gives
//! valid JSON equal to a reference rewrite of the parsed tree, and masking twice is masking once.

use filter_kit::config::MaskConfig;
use filter_kit::mask::{
    MaskOutcome, MaskRule, mask_address, mask_ends, mask_id_number, mask_json, mask_name,
    mask_phone, normalize_field,
};
use proptest::prelude::*;
use serde_json::Value;

/// The rewrite `mask_json` documents, on the parsed tree: a masked key's rule applies to every
/// string and number below it, unless a nested masked key has its own.
fn reference(v: &Value, rule: Option<MaskRule>, cfg: &MaskConfig) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let r = cfg.rule_for(&normalize_field(k)).or(rule);
                    (k.clone(), reference(v, r, cfg))
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|x| reference(x, rule, cfg)).collect()),
        Value::String(s) => rule.map_or_else(|| v.clone(), |r| Value::String(r.apply(s))),
        Value::Number(n) => {
            rule.map_or_else(|| v.clone(), |r| Value::String(r.apply(&n.to_string())))
        }
        Value::Bool(_) | Value::Null => v.clone(),
    }
}

fn keys() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(vec![
            "name",
            "id_card",
            "idCard",
            "ID-NUMBER",
            "phone",
            "mobile",
            "address",
            "status",
            "score",
            "data",
            "items",
            "request_id",
        ])
        .prop_map(str::to_owned),
        "\\PC{0,8}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            // Floats that serde_json reads back exactly, so the tree and the text agree.
            .prop_filter("finite, round-trips", |f| {
                f.is_finite()
                    && serde_json::to_string(f)
                        .ok()
                        .and_then(|t| serde_json::from_str::<f64>(&t).ok())
                        == Some(*f)
            })
            .prop_map(Value::from),
        "\\PC{0,24}".prop_map(Value::String),
        "1[3-9][0-9]{9}".prop_map(Value::String),
        "[1-6][0-9]{16}[0-9X]".prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((keys(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn masked_bytes(body: &[u8], cfg: &MaskConfig) -> Vec<u8> {
    match mask_json(body, cfg) {
        MaskOutcome::Masked(out) => out,
        MaskOutcome::Unchanged => body.to_vec(),
        MaskOutcome::NotJson => panic!(
            "valid JSON judged not JSON: {}",
            String::from_utf8_lossy(body)
        ),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn every_rule_only_stars_characters_and_is_idempotent(s in "\\PC{0,40}") {
        for mask in [mask_id_number as fn(&str) -> String, mask_phone, mask_name, mask_ends] {
            let once = mask(&s);
            prop_assert_eq!(once.chars().count(), s.chars().count());
            for (m, c) in once.chars().zip(s.chars()) {
                prop_assert!(m == c || m == '*', "{} -> {}", s, once);
            }
            prop_assert!(s.is_empty() || once.contains('*'), "nothing hidden: {}", s);
            prop_assert_eq!(mask(&once), once.clone());
        }
        let addr = mask_address(&s);
        prop_assert_eq!(mask_address(&addr), addr.clone());
    }

    #[test]
    fn masked_bodies_never_carry_the_id_number_or_phone(
        id in "[1-6][0-9]{16}[0-9X]",
        phone in "1[3-9][0-9]{9}",
        pretty in any::<bool>(),
    ) {
        let v = serde_json::json!({
            "request_id": "r-1",
            "id_card": id,
            "data": { "phone": phone, "contacts": [{ "mobile": phone.parse::<u64>().expect("digits") }] },
        });
        let body = if pretty { serde_json::to_vec_pretty(&v) } else { serde_json::to_vec(&v) }
            .expect("serialise");
        let out = masked_bytes(&body, &MaskConfig::default());
        let text = String::from_utf8(out).expect("UTF-8");
        prop_assert!(!text.contains(&id[6..14]), "{}", text);
        prop_assert!(!text.contains(&phone), "{}", text);
        prop_assert!(text.contains(&format!("{}****{}", &phone[..3], &phone[7..])), "{}", text);
    }

    #[test]
    fn masking_valid_json_gives_the_reference_rewrite_and_is_idempotent(v in json_value()) {
        let cfg = MaskConfig::default();
        let body = serde_json::to_vec(&v).expect("serialise");
        let out = masked_bytes(&body, &cfg);
        let parsed: Value = serde_json::from_slice(&out).expect("the masked body is JSON");
        prop_assert_eq!(&parsed, &reference(&v, None, &cfg));
        prop_assert_eq!(mask_json(&out, &cfg), MaskOutcome::Unchanged, "masking twice changed it");
    }
}
