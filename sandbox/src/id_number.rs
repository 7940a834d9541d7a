//! The resident ID number (GB 11643): parsed once, then trusted. Owns the format, the birth date
//! and sex it encodes, and the check digit; not the card layout.

use std::fmt;

/// A valid 18-character resident ID number. `Debug` and `Display` are masked so a stray `{:?}`
/// in a log cannot print one; [`IdNumber::as_str`] gives the full value.
#[derive(Clone, PartialEq, Eq)]
pub struct IdNumber(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdNumberError {
    #[error("the ID number must be 18 characters (17 digits, then a digit or X); got {0}")]
    Length(usize),
    #[error("the ID number must be 17 digits followed by a digit or X")]
    Characters,
    #[error("the ID number's birth date (characters 7-14, {0}) is not a date")]
    BirthDate(String),
    #[error("the ID number's check digit should be {expected}, not {got} (GB 11643)")]
    CheckDigit { expected: char, got: char },
}

/// Sex as printed on the card, derived from the 17th character (odd: male, even: female).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Sex {
    #[serde(rename = "男")]
    Male,
    #[serde(rename = "女")]
    Female,
}

impl Sex {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Sex::Male => "男",
            Sex::Female => "女",
        }
    }
}

const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const CHECK: [char; 11] = ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'];

impl IdNumber {
    /// Parses and checks format, birth date and check digit. A lower-case `x` is accepted and
    /// stored upper-case.
    ///
    /// # Errors
    /// Says which rule the input breaks.
    pub fn parse(input: &str) -> Result<Self, IdNumberError> {
        let s = input.trim().to_ascii_uppercase();
        let (_, _) = derive(&s)?;
        let expected = check_digit(&s[..17]);
        let got = s.chars().last().unwrap_or(' ');
        if expected != got {
            return Err(IdNumberError::CheckDigit { expected, got });
        }
        Ok(Self(s))
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    #[must_use]
    pub fn sex(&self) -> Sex {
        derive(&self.0).map_or(Sex::Female, |(sex, _)| sex)
    }

    /// `YYYY-MM-DD`.
    #[must_use]
    pub fn birth_date(&self) -> String {
        derive(&self.0).map(|(_, d)| d).unwrap_or_default()
    }
}

/// The check digit (ISO 7064 MOD 11-2) of the first 17 digits.
#[must_use]
pub fn check_digit(first17: &str) -> char {
    let sum: u32 = first17
        .chars()
        .zip(WEIGHTS)
        .map(|(c, w)| c.to_digit(10).unwrap_or(0) * w)
        .sum();
    CHECK[(sum % 11) as usize]
}

/// Sex and birth date from an ID number's format alone, without the check digit: the OCR uses it
/// for what a card says even when the card fails its own checksum.
///
/// # Errors
/// When the format or the birth date is wrong.
pub fn derive(s: &str) -> Result<(Sex, String), IdNumberError> {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() != 18 {
        return Err(IdNumberError::Length(chars.len()));
    }
    if !chars[..17].iter().all(char::is_ascii_digit)
        || !(chars[17].is_ascii_digit() || chars[17] == 'X')
    {
        return Err(IdNumberError::Characters);
    }
    let digits = &s[6..14];
    let year: u32 = digits[..4].parse().unwrap_or(0);
    let month: u32 = digits[4..6].parse().unwrap_or(0);
    let day: u32 = digits[6..8].parse().unwrap_or(0);
    let leap = (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => 0,
    };
    if !(1800..=2100).contains(&year) || day == 0 || day > days_in_month {
        return Err(IdNumberError::BirthDate(digits.to_owned()));
    }
    let sex = if chars[16].to_digit(10).unwrap_or(0) % 2 == 1 {
        Sex::Male
    } else {
        Sex::Female
    };
    Ok((sex, format!("{year:04}-{month:02}-{day:02}")))
}

impl fmt::Display for IdNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}********{}", &self.0[..6], &self.0[14..])
    }
}

impl fmt::Debug for IdNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdNumber({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standards_example_is_valid_and_female_born_1949_12_31() {
        let id = IdNumber::parse("11010519491231002x").expect("GB 11643 annex example");
        assert_eq!(id.as_str(), "11010519491231002X");
        assert_eq!(id.sex(), Sex::Female);
        assert_eq!(id.birth_date(), "1949-12-31");
        assert_eq!(id.to_string(), "110105********002X");
    }

    #[test]
    fn wrong_length_characters_dates_and_check_digits_are_refused() {
        assert_eq!(IdNumber::parse("1234"), Err(IdNumberError::Length(4)));
        assert_eq!(
            IdNumber::parse("11010519491231002A"),
            Err(IdNumberError::Characters)
        );
        assert!(matches!(
            IdNumber::parse("110105194913310020"),
            Err(IdNumberError::BirthDate(_))
        ));
        assert_eq!(
            IdNumber::parse("110105194912310021"),
            Err(IdNumberError::CheckDigit {
                expected: 'X',
                got: '1'
            })
        );
    }
}
