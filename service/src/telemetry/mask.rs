//! Masks names, ID numbers and phone numbers in free text, the Chinese way
//! (`110105********002X`, `138****8000`, `张*`).
//!
//! Numbers are found by shape wherever they stand. Names cannot be found by shape, so they are
//! masked where a field or label says "name" (`name=…`, `"name":"…"`, `姓名：…`); code that logs a
//! name holds a `ChineseName`, whose `Display` is already masked. Values of fields named like
//! `id_card` or `phone` are masked even when they are not valid numbers.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::{Captures, Regex};

use crate::kyc::pii::{mask_id_number, mask_name, mask_phone};

/// Maximal runs of ASCII digits (with an ID number's trailing X), judged by their length alone,
/// so a number glued to Chinese text or an underscore (`手机13800138000`, `user_13800138000`) is
/// still found, and a longer number is never cut into a false match.
static DIGIT_RUNS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[0-9]+[Xx]?").expect("valid digit-run pattern"));

/// `key=value`, `key: value`, `"key":"value"` for PII-bearing keys; and the Chinese labels.
static FIELDS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)(?P<key>(?-u:\b)(?:[a-z]+_)*(?:real_?name|full_?name|name|id_?card|id_?number|idcard_?no|phone|mobile)(?-u:\b)"?\s*[:=]\s*"?|(?:姓名|身份证号?|手机号?|电话)\s*[:：]\s*)(?P<val>[^\s",;&}\]]+)"#,
    )
    .expect("valid field pattern")
});

/// Returns `text` with every PII value it can recognise masked.
#[must_use]
pub fn mask_text(text: &str) -> Cow<'_, str> {
    let fields = FIELDS.replace_all(text, |c: &Captures<'_>| {
        let key = &c["key"];
        let val = &c["val"];
        let lower = key.to_ascii_lowercase();
        let masked = if lower.contains("name") || key.starts_with("姓名") {
            mask_name(val)
        } else if lower.contains("phone")
            || lower.contains("mobile")
            || lower.contains("tel")
            || key.starts_with('手')
            || key.starts_with('电')
        {
            mask_phone(val)
        } else {
            mask_id_number(val)
        };
        format!("{key}{masked}")
    });
    match DIGIT_RUNS.replace_all(&fields, |c: &Captures<'_>| {
        let m = &c[0];
        let b = m.as_bytes();
        let digits = b.iter().all(u8::is_ascii_digit);
        let mobile = |s: &[u8]| s.len() == 11 && s[0] == b'1' && (b'3'..=b'9').contains(&s[1]);
        match b.len() {
            18 => mask_id_number(m),
            15 if digits => mask_id_number(m),
            11 if digits && mobile(b) => mask_phone(m),
            13 if digits && b.starts_with(b"86") && mobile(&b[2..]) => mask_phone(m),
            _ => m.to_owned(),
        }
    }) {
        Cow::Borrowed(_) => fields,
        Cow::Owned(s) => Cow::Owned(s),
    }
}

#[cfg(test)]
mod tests {
    use super::mask_text;

    #[test]
    fn numbers_are_masked_wherever_they_stand() {
        let line = "GET /api/v1/kyc/status/11010519491231002X from 13800138000 and +8613900139000";
        let m = mask_text(line);
        assert_eq!(
            m,
            "GET /api/v1/kyc/status/110105********002X from 138****8000 and +86139****9000"
        );
    }

    #[test]
    fn structured_fields_are_masked_by_their_key() {
        let m = mask_text(
            r#"verify name=张三 id_card=123456789012345678 phone=12345678901 {"name":"李四","mobile":"13800138000"}"#,
        );
        assert!(!m.contains('三') && !m.contains('四'), "{m}");
        assert!(!m.contains("12345678901"), "{m}");
        assert!(m.contains("name=张*"), "{m}");
        assert!(m.contains(r#""name":"李*""#), "{m}");
        assert!(m.contains("id_card=123456********5678"), "{m}");
        assert!(m.contains(r#""mobile":"138****8000""#), "{m}");
    }

    #[test]
    fn chinese_labels_are_masked() {
        let m = mask_text("用户 姓名：王小明 身份证：11010519491231002X 手机：13800138000");
        assert_eq!(
            m,
            "用户 姓名：王** 身份证：110105********002X 手机：138****8000"
        );
    }

    #[test]
    fn masking_is_idempotent_and_leaves_other_text_alone() {
        let line =
            "request_id=0193 status=200 latency_ms=3 endpoint=/api/v1/kyc/status/{id} count=12345";
        assert_eq!(mask_text(line), line);
        let once = mask_text("name=张三 13800138000").into_owned();
        assert_eq!(mask_text(&once), once);
    }

    #[test]
    fn numbers_glued_to_other_text_and_compound_keys_are_masked() {
        let m = mask_text(
            "手机号13800138000 身份证号11010519491231002X user_13900139000 customer_name=张三 holder_phone=1234",
        );
        for plain in ["13800138000", "11010519491231002X", "13900139000", "张三"] {
            assert!(!m.contains(plain), "{plain} in {m}");
        }
        assert!(
            m.contains("customer_name=张*") && m.contains("holder_phone=****"),
            "{m}"
        );
    }

    #[test]
    fn long_digit_runs_that_are_not_pii_are_not_split() {
        let ts = "ts=1732521600123456789";
        assert_eq!(mask_text(ts), ts);
    }
}
