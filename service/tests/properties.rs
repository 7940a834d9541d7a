//! Property tests of the PII types: the GB 11643 validator against an independent reading of the
//! standard, the masks (nothing hidden leaks, masking twice is masking once), and the phone rule.

use chrono::NaiveDate;
use kyc_service::kyc::pii::{IdNumber, Phone, PiiError, mask_id_number, mask_name, mask_phone};
use proptest::prelude::*;

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 25).expect("valid date")
}

/// GB 11643-1999 with ISO 7064 MOD 11-2, as the standard states it: with a_1 … a_18 the
/// characters (X = 10) and W_i = 2^(18-i) mod 11, the number is valid when Σ a_i·W_i ≡ 1 (mod 11).
fn reference_checksum_ok(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 18 {
        return false;
    }
    let mut sum = 0u64;
    for (i, &c) in b.iter().enumerate() {
        let a = match c {
            b'0'..=b'9' => u64::from(c - b'0'),
            b'X' | b'x' if i == 17 => 10,
            _ => return false,
        };
        let w = (1u64 << (17 - i)) % 11;
        sum += a * w;
    }
    sum % 11 == 1
}

/// The check character the standard's table gives for 17 digits: "10X98765432"[Σ a_i·W_i mod 11].
fn reference_check_char(first17: &str) -> char {
    let sum: u64 = first17
        .bytes()
        .enumerate()
        .map(|(i, c)| u64::from(c - b'0') * ((1u64 << (17 - i)) % 11))
        .sum();
    b"10X98765432"[(sum % 11) as usize] as char
}

const PROVINCES: [u8; 34] = [
    11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46, 50, 51, 52,
    53, 54, 61, 62, 63, 64, 65, 71, 81, 82,
];

/// 17 digits with a real province, a non-zero district and a real past birth date.
fn plausible_first17() -> impl Strategy<Value = String> {
    (
        proptest::sample::select(PROVINCES.to_vec()),
        1u32..=9999,
        1900i32..=2025,
        1u32..=12,
        1u32..=28,
        0u32..=999,
    )
        .prop_map(|(p, district, y, m, d, seq)| {
            format!("{p:02}{district:04}{y:04}{m:02}{d:02}{seq:03}")
        })
}

fn check_chars() -> impl Strategy<Value = char> {
    proptest::sample::select("0123456789X".chars().collect::<Vec<_>>())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_id_validator_agrees_with_the_standards_formula(first17 in plausible_first17(), c in check_chars()) {
        let s = format!("{first17}{c}");
        let ours = IdNumber::parse_on(&s, today());
        prop_assert_eq!(ours.is_ok(), reference_checksum_ok(&s), "{}", s);
        if let Err(e) = ours {
            prop_assert_eq!(e, PiiError::IdNumberChecksum);
        }
    }

    #[test]
    fn exactly_the_tables_check_character_completes_a_number(first17 in plausible_first17()) {
        let good = reference_check_char(&first17);
        let completed = format!("{first17}{good}");
        prop_assert!(reference_checksum_ok(&completed), "{}", completed);
        for c in "0123456789X".chars() {
            let s = format!("{first17}{c}");
            prop_assert_eq!(IdNumber::parse_on(&s, today()).is_ok(), c == good, "{}", s);
        }
        // A lower-case x is the same number.
        let lower = format!("{first17}{}", good.to_ascii_lowercase());
        let parsed = IdNumber::parse_on(&lower, today()).expect("lower-case x accepted");
        prop_assert_eq!(parsed.expose(), format!("{first17}{good}"));
    }

    #[test]
    fn any_accepted_string_passes_the_standards_formula(s in "[0-9X]{18}|[0-9]{17}[0-9Xx]|.{0,24}") {
        if IdNumber::parse_on(&s, today()).is_ok() {
            prop_assert!(reference_checksum_ok(s.trim()), "{}", s);
        }
    }

    #[test]
    fn a_masked_id_number_hides_its_birth_date_and_sequence(first17 in plausible_first17()) {
        let s = format!("{first17}{}", reference_check_char(&first17));
        let id = IdNumber::parse_on(&s, today()).expect("valid by construction");
        for shown in [id.to_string(), format!("{id:?}"), mask_id_number(&s)] {
            prop_assert!(!shown.contains(&s[6..14]), "birth date leaks in {}", shown);
            prop_assert!(!shown.contains(&s[6..17]), "{}", shown);
        }
        let masked = mask_id_number(&s);
        prop_assert_eq!(&masked[..6], &s[..6]);
        prop_assert_eq!(&masked[6..14], "********");
        prop_assert_eq!(&masked[14..], &s[14..]);
    }

    #[test]
    fn masks_only_replace_characters_with_stars_and_are_idempotent(s in "\\PC{0,40}") {
        for mask in [mask_id_number as fn(&str) -> String, mask_phone, mask_name] {
            let once = mask(&s);
            prop_assert_eq!(once.chars().count(), s.chars().count());
            for (m, c) in once.chars().zip(s.chars()) {
                prop_assert!(m == c || m == '*', "{} -> {}", s, once);
            }
            let n = s.chars().count();
            let stars = once.chars().filter(|c| *c == '*').count();
            prop_assert!(n == 0 || stars * 2 >= n.min(4), "too little hidden: {} -> {}", s, once);
            prop_assert_eq!(mask(&once), once.clone(), "masking twice differs: {}", s);
        }
    }

    #[test]
    fn phones_follow_the_mainland_rule(digits in "[0-9]{11}", prefix in "|\\+86|86|\\+86 |\\+86-", sep in proptest::bool::ANY) {
        let reference = regex::Regex::new(r"^1[3-9]\d{9}$").expect("regex");
        let raw = if sep {
            format!("{prefix}{} {}-{}", &digits[..3], &digits[3..7], &digits[7..])
        } else {
            format!("{prefix}{digits}")
        };
        let parsed = Phone::parse(&raw);
        prop_assert_eq!(parsed.is_ok(), reference.is_match(&digits), "{}", raw);
        if let Ok(p) = parsed {
            prop_assert_eq!(p.expose(), digits.as_str());
            let masked = p.to_string();
            prop_assert_eq!(&masked[..3], &digits[..3]);
            prop_assert_eq!(&masked[3..7], "****");
            prop_assert_eq!(&masked[7..], &digits[7..]);
            prop_assert_eq!(format!("{p:?}"), format!("Phone({masked})"));
        }
    }

    #[test]
    fn any_accepted_phone_is_a_mainland_mobile_number(s in "\\PC{0,20}|[+0-9 -]{0,18}") {
        let reference = regex::Regex::new(r"^1[3-9]\d{9}$").expect("regex");
        if let Ok(p) = Phone::parse(&s) {
            prop_assert!(reference.is_match(p.expose()), "{} -> {}", s, p.expose());
        }
    }
}
