//! Personal data as types: `IdNumber` (GB 11643-1999), `Phone` (mainland mobile) and `ChineseName`.
//! Holding one means it is valid; `Debug` and `Display` print it masked the Chinese way, so a stray
//! `{:?}` cannot leak it. The plaintext is reachable only through `expose()`.

use std::fmt;

use chrono::{Datelike, NaiveDate, Utc};

/// Why a value is not a valid piece of PII. Carries no part of the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PiiError {
    #[error("the ID number must have 18 characters: 17 digits and a check digit or X")]
    IdNumberFormat,
    #[error("the ID number's region code is not a valid administrative division")]
    IdNumberRegion,
    #[error("the ID number's birth date is not a real date in the past")]
    IdNumberBirthDate,
    #[error("the ID number's check character does not match (GB 11643-1999, ISO 7064 MOD 11-2)")]
    IdNumberChecksum,
    #[error("the phone must be a mainland mobile number: 11 digits starting 13-19, optionally +86")]
    Phone,
    #[error("the name must be 1 to 64 characters with no control characters")]
    Name,
}

const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const CHECK_CHARS: [u8; 11] = *b"10X98765432";

/// The MOD 11-2 check character for the first 17 digits.
fn check_char(first17: &[u8]) -> u8 {
    let sum: u32 = first17
        .iter()
        .zip(WEIGHTS)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    CHECK_CHARS[(sum % 11) as usize]
}

/// Province-level prefixes of GB/T 2260 (the first two digits of a region code).
const PROVINCES: [u8; 34] = [
    11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46, 50, 51, 52,
    53, 54, 61, 62, 63, 64, 65, 71, 81, 82,
];

/// A resident identity card number, normalised (a lowercase `x` becomes `X`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IdNumber(String);

impl IdNumber {
    /// # Errors
    /// Which rule of GB 11643-1999 the value breaks.
    pub fn parse(raw: &str) -> Result<Self, PiiError> {
        Self::parse_on(raw, Utc::now().date_naive())
    }

    /// Like [`parse`](Self::parse), judging "not in the future" against `today`.
    ///
    /// # Errors
    /// Which rule of GB 11643-1999 the value breaks.
    pub fn parse_on(raw: &str, today: NaiveDate) -> Result<Self, PiiError> {
        let s = raw.trim().to_ascii_uppercase();
        let b = s.as_bytes();
        if b.len() != 18
            || !b[..17].iter().all(u8::is_ascii_digit)
            || !(b[17].is_ascii_digit() || b[17] == b'X')
        {
            return Err(PiiError::IdNumberFormat);
        }
        let province = (b[0] - b'0') * 10 + (b[1] - b'0');
        if !PROVINCES.contains(&province)
            || &b[2..6] == b"0000" && province != 71 && province != 81 && province != 82
        {
            return Err(PiiError::IdNumberRegion);
        }
        let digits =
            |r: std::ops::Range<usize>| s[r].parse::<u32>().map_err(|_| PiiError::IdNumberFormat);
        let birth = NaiveDate::from_ymd_opt(
            i32::try_from(digits(6..10)?).map_err(|_| PiiError::IdNumberBirthDate)?,
            digits(10..12)?,
            digits(12..14)?,
        )
        .ok_or(PiiError::IdNumberBirthDate)?;
        if birth > today || birth.year() < 1850 {
            return Err(PiiError::IdNumberBirthDate);
        }
        if check_char(&b[..17]) != b[17] {
            return Err(PiiError::IdNumberChecksum);
        }
        Ok(Self(s))
    }

    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    #[must_use]
    pub fn birth_date(&self) -> NaiveDate {
        let n = |r: std::ops::Range<usize>| {
            self.0[r]
                .parse::<u32>()
                .expect("IdNumber holds 17 validated digits")
        };
        NaiveDate::from_ymd_opt(
            i32::try_from(n(6..10)).expect("4-digit year fits i32"),
            n(10..12),
            n(12..14),
        )
        .expect("IdNumber holds a validated birth date")
    }

    /// Odd sequence digit (the 17th character) means male.
    #[must_use]
    pub fn is_male(&self) -> bool {
        (self.0.as_bytes()[16] - b'0') % 2 == 1
    }
}

impl fmt::Debug for IdNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdNumber({})", mask_id_number(&self.0))
    }
}

impl fmt::Display for IdNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&mask_id_number(&self.0))
    }
}

/// A mainland mobile number, normalised to its 11 digits.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Phone(String);

impl Phone {
    /// Accepts `^1[3-9]\d{9}$` after an optional `+86` or `86` and spaces or dashes.
    ///
    /// # Errors
    /// [`PiiError::Phone`] when the rest is not a mainland mobile number.
    pub fn parse(raw: &str) -> Result<Self, PiiError> {
        let compact: String = raw
            .trim()
            .chars()
            .filter(|c| *c != ' ' && *c != '-')
            .collect();
        let digits = compact
            .strip_prefix("+86")
            .or_else(|| compact.strip_prefix("86").filter(|r| r.len() == 11));
        let digits = digits.unwrap_or(&compact);
        let b = digits.as_bytes();
        if b.len() == 11
            && b[0] == b'1'
            && (b'3'..=b'9').contains(&b[1])
            && b.iter().all(u8::is_ascii_digit)
        {
            Ok(Self(digits.to_owned()))
        } else {
            Err(PiiError::Phone)
        }
    }

    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Phone({})", mask_phone(&self.0))
    }
}

impl fmt::Display for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&mask_phone(&self.0))
    }
}

/// A person's name as printed on the card: 1–64 characters, no control characters.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ChineseName(String);

impl ChineseName {
    /// # Errors
    /// [`PiiError::Name`] when empty, too long or holding control characters.
    pub fn parse(raw: &str) -> Result<Self, PiiError> {
        let s = raw.trim();
        let n = s.chars().count();
        if n == 0 || n > 64 || s.chars().any(char::is_control) {
            return Err(PiiError::Name);
        }
        Ok(Self(s.to_owned()))
    }

    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ChineseName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChineseName({})", mask_name(&self.0))
    }
}

impl fmt::Display for ChineseName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&mask_name(&self.0))
    }
}

/// `11010519491231002X` → `110105********002X`: region kept, birth date and sequence hidden.
/// Shorter values keep less, so at least half of any value is hidden.
#[must_use]
pub fn mask_id_number(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let (head, tail) = match chars.len() {
        0..=3 => (0, 0),
        4..=9 => (1, 1),
        10..=14 => (3, 2),
        _ => (6, 4),
    };
    keep_ends(&chars, head, tail)
}

/// `13800138000` → `138****8000`.
#[must_use]
pub fn mask_phone(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let (head, tail) = match chars.len() {
        0..=4 => (0, 0),
        5..=10 => (1, 2),
        // `13800138000` and `8613800138000` keep their operator prefix.
        n @ 11..=13 => (n - 8, 4),
        _ => (3, 4),
    };
    keep_ends(&chars, head, tail)
}

/// `张三` → `张*`, `欧阳娜娜` → `欧***`: the first character only.
#[must_use]
pub fn mask_name(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    match chars.len() {
        0 => String::new(),
        1 => "*".to_owned(),
        n => std::iter::once(chars[0])
            .chain(std::iter::repeat_n('*', n - 1))
            .collect(),
    }
}

fn keep_ends(chars: &[char], head: usize, tail: usize) -> String {
    let n = chars.len();
    chars
        .iter()
        .enumerate()
        .map(|(i, c)| if i < head || i >= n - tail { *c } else { '*' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 25).expect("valid date")
    }

    #[test]
    fn the_standards_valid_examples_parse() {
        for id in [
            "11010519491231002X",
            "440524188001010014",
            "11010219840406970X",
        ] {
            assert!(IdNumber::parse_on(id, today()).is_ok(), "{id}");
        }
        let id = IdNumber::parse_on("11010519491231002x", today()).expect("lowercase x normalised");
        assert_eq!(id.expose(), "11010519491231002X");
        assert_eq!(
            id.birth_date(),
            NaiveDate::from_ymd_opt(1949, 12, 31).expect("date")
        );
        assert!(!id.is_male());
        assert!(
            IdNumber::parse_on("440524188001010014", today())
                .expect("valid")
                .is_male()
        );
    }

    #[test]
    fn the_standards_altered_examples_are_refused_for_the_right_reason() {
        assert_eq!(
            IdNumber::parse_on("110105194912310021", today()),
            Err(PiiError::IdNumberChecksum)
        );
        assert_eq!(
            IdNumber::parse_on("440524189001010014", today()),
            Err(PiiError::IdNumberChecksum)
        );
        assert_eq!(
            IdNumber::parse_on("11010219840506970X", today()),
            Err(PiiError::IdNumberChecksum)
        );
        // The seed's placeholder: province 12 exists, but its "birth year" is 7890.
        assert_eq!(
            IdNumber::parse_on("123456789012345678", today()),
            Err(PiiError::IdNumberBirthDate)
        );
        assert_eq!(
            IdNumber::parse_on("11020519491231002X", today()),
            Err(PiiError::IdNumberChecksum)
        );
        let first17 = b"99010519491231002";
        let no_province = format!(
            "{}{}",
            std::str::from_utf8(first17).expect("ascii"),
            check_char(first17) as char
        );
        assert_eq!(
            IdNumber::parse_on(&no_province, today()),
            Err(PiiError::IdNumberRegion)
        );
        assert_eq!(
            IdNumber::parse_on("11010519491331002X", today()),
            Err(PiiError::IdNumberBirthDate)
        );
        assert_eq!(
            IdNumber::parse_on("1101051949123100", today()),
            Err(PiiError::IdNumberFormat)
        );
        assert_eq!(
            IdNumber::parse_on("11010519491231002Y", today()),
            Err(PiiError::IdNumberFormat)
        );
    }

    #[test]
    fn a_birth_date_in_the_future_is_refused() {
        // 2030-01-01 with a correct check digit for these 17 digits.
        let first17 = b"11010520300101001";
        let id = format!(
            "{}{}",
            std::str::from_utf8(first17).expect("ascii"),
            check_char(first17) as char
        );
        assert_eq!(
            IdNumber::parse_on(&id, today()),
            Err(PiiError::IdNumberBirthDate)
        );
    }

    #[test]
    fn phones_follow_the_mainland_rule() {
        assert_eq!(
            Phone::parse("13800138000").expect("valid").expose(),
            "13800138000"
        );
        assert_eq!(
            Phone::parse("+86 138-0013-8000").expect("valid").expose(),
            "13800138000"
        );
        assert_eq!(
            Phone::parse("8613800138000").expect("valid").expose(),
            "13800138000"
        );
        for bad in [
            "12345678901",
            "1380013800",
            "23800138000",
            "138001380001",
            "1380013800a",
            "",
        ] {
            assert_eq!(Phone::parse(bad), Err(PiiError::Phone), "{bad}");
        }
    }

    #[test]
    fn names_are_bounded() {
        assert!(ChineseName::parse("张三").is_ok());
        assert_eq!(ChineseName::parse("  "), Err(PiiError::Name));
        assert_eq!(ChineseName::parse(&"名".repeat(65)), Err(PiiError::Name));
        assert_eq!(ChineseName::parse("张\n三"), Err(PiiError::Name));
    }

    #[test]
    fn masks_follow_the_chinese_convention() {
        assert_eq!(mask_id_number("11010519491231002X"), "110105********002X");
        assert_eq!(mask_phone("13800138000"), "138****8000");
        assert_eq!(mask_name("张三"), "张*");
        assert_eq!(mask_name("欧阳娜娜"), "欧***");
        assert_eq!(mask_name("李"), "*");
    }

    #[test]
    fn debug_and_display_never_show_the_plaintext() {
        let id = IdNumber::parse_on("11010519491231002X", today()).expect("valid");
        let phone = Phone::parse("13800138000").expect("valid");
        let name = ChineseName::parse("张三").expect("valid");
        let printed = format!("{id} {id:?} {phone} {phone:?} {name} {name:?}");
        assert!(!printed.contains("19491231"), "{printed}");
        assert!(!printed.contains("0013"), "{printed}");
        assert!(!printed.contains('三'), "{printed}");
    }

    #[test]
    fn masking_keeps_the_length_and_always_hides_something() {
        for n in 1..30 {
            let s: String = "1234567890".chars().cycle().take(n).collect();
            for masked in [mask_id_number(&s), mask_phone(&s)] {
                assert_eq!(masked.chars().count(), n, "{s} -> {masked}");
                assert!(masked.contains('*'), "{s} -> {masked}");
                assert!(
                    masked.chars().filter(|c| *c != '*').count() <= 10,
                    "{s} -> {masked}"
                );
            }
        }
    }
}
