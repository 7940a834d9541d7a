//! From recognised lines to the fields of a second-generation resident ID card: rows, labels,
//! the GB 11643 cross-checks (birth date, sex, check character) and the quality flags. No model
//! runs here; [`crate::ocr`] gives the lines.

use std::sync::LazyLock;

use image::RgbImage;
use kyc_sandbox::id_number::{self, Sex};
use regex::Regex;
use serde::Serialize;

use crate::imaging;
use crate::ocr::Line;

/// One field as read, with the score of the lines it came from (their lowest).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Field {
    pub value: String,
    pub confidence: f32,
}

impl Field {
    fn new(value: String, confidence: f32) -> Self {
        Self {
            value,
            confidence: (confidence * 1000.0).round() / 1000.0,
        }
    }
}

/// The front (portrait side).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Front {
    pub name: Field,
    pub sex: Field,
    pub ethnicity: Field,
    /// `YYYY-MM-DD` as printed.
    pub birth_date: Field,
    pub address: Field,
    pub id_number: Field,
}

/// The back (issuing-authority side).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Back {
    pub issuing_authority: Field,
    /// `YYYY-MM-DD`.
    pub valid_from: Field,
    /// `YYYY-MM-DD`, or `长期` (no end).
    pub valid_until: Field,
}

/// Reason codes for what the cross-checks and the quality measures found. Stable strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    /// The ID number's check character (ISO 7064 MOD 11-2) does not match: a misread or an
    /// altered number. Never accepted as valid.
    IdCheckCharacterInvalid,
    /// The ID number is not 17 digits and a digit or X, or encodes no real date.
    IdNumberMalformed,
    /// The printed birth date differs from the one the ID number encodes.
    BirthDateMismatch,
    /// The printed sex differs from the ID number's 17th digit.
    SexMismatch,
    /// A field could not be read.
    FieldMissing,
    /// Variance of the Laplacian under [`Quality::BLUR_VARIANCE`].
    Blurred,
    Overexposed,
    Underexposed,
    /// The card's text covers too little of the frame, or its lines are too small to read well.
    CardTooSmall,
    /// Back side: the validity period has ended.
    CardExpired,
}

/// Image measures behind the quality flags.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Quality {
    pub laplacian_variance: f64,
    pub mean_luma: f64,
    /// Share of the frame covered by the box around all text.
    pub text_area: f64,
    /// Median text line height, pixels.
    pub line_height: f64,
}

impl Quality {
    /// Thresholds, calibrated on the rendered cards (see vision/README.md).
    pub const BLUR_VARIANCE: f64 = 150.0;
    pub const DARK_LUMA: f64 = 50.0;
    pub const BRIGHT_LUMA: f64 = 235.0;
    pub const MIN_TEXT_AREA: f64 = 0.08;
    pub const MIN_LINE_HEIGHT: f64 = 10.0;

    #[must_use]
    pub fn measure(img: &RgbImage, lines: &[Line]) -> Self {
        let (w, h) = img.dimensions();
        let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, 0.0f32, 0.0f32);
        for p in lines.iter().flat_map(|l| l.quad) {
            x0 = x0.min(p[0]);
            y0 = y0.min(p[1]);
            x1 = x1.max(p[0]);
            y1 = y1.max(p[1]);
        }
        let text_area = if lines.is_empty() {
            0.0
        } else {
            f64::from((x1 - x0) * (y1 - y0)) / f64::from(w * h)
        };
        // blur and exposure on the text's region, where the card is
        let region = if lines.is_empty() {
            img.clone()
        } else {
            let (cx, cy) = (x0.max(0.0) as u32, y0.max(0.0) as u32);
            let cw = ((x1 as u32).min(w) - cx.min(w - 1)).max(1);
            let ch = ((y1 as u32).min(h) - cy.min(h - 1)).max(1);
            image::imageops::crop_imm(img, cx.min(w - 1), cy.min(h - 1), cw, ch).to_image()
        };
        let g = imaging::gray(&region);
        let (_, _, mean_luma) = imaging::exposure(&g);
        let mut heights: Vec<f32> = lines.iter().map(Line::height).collect();
        heights.sort_by(f32::total_cmp);
        Self {
            laplacian_variance: imaging::laplacian_variance(&g),
            mean_luma,
            text_area,
            line_height: heights
                .get(heights.len() / 2)
                .copied()
                .map_or(0.0, f64::from),
        }
    }

    #[must_use]
    pub fn reasons(&self) -> Vec<Reason> {
        let mut r = Vec::new();
        if self.laplacian_variance < Self::BLUR_VARIANCE {
            r.push(Reason::Blurred);
        }
        if self.mean_luma > Self::BRIGHT_LUMA {
            r.push(Reason::Overexposed);
        }
        if self.mean_luma < Self::DARK_LUMA {
            r.push(Reason::Underexposed);
        }
        if self.text_area < Self::MIN_TEXT_AREA || self.line_height < Self::MIN_LINE_HEIGHT {
            r.push(Reason::CardTooSmall);
        }
        r
    }
}

/// Punctuation the recogniser reads into the gaps of spaced labels (`住，址`) or at a line's ends
/// on a noisy image; none of it belongs in a field. `·` stays: it joins the parts of some names.
fn is_noise(c: char) -> bool {
    c.is_whitespace() || "，,。.、：:；;'\"“”‘’!！?？`_~|".contains(c)
}

/// Lines grouped into rows (vertical overlap of at least half a line), each row's texts joined
/// left to right without spaces or stray punctuation, with the row's lowest score.
#[must_use]
pub fn rows(lines: &[Line]) -> Vec<(String, f32)> {
    let mut sorted: Vec<&Line> = lines.iter().collect();
    sorted.sort_by(|a, b| a.center()[1].total_cmp(&b.center()[1]));
    let mut rows: Vec<Vec<&Line>> = Vec::new();
    for l in sorted {
        let c = l.center()[1];
        match rows.last_mut() {
            Some(row)
                if {
                    let r = row[row.len() - 1];
                    (c - r.center()[1]).abs() < 0.5 * r.height().max(l.height())
                } =>
            {
                row.push(l);
            }
            _ => rows.push(vec![l]),
        }
    }
    rows.into_iter()
        .map(|mut row| {
            row.sort_by(|a, b| a.center()[0].total_cmp(&b.center()[0]));
            let text: String = row
                .iter()
                .flat_map(|l| l.text.chars())
                .filter(|&c| !is_noise(c))
                .collect();
            let score = row.iter().map(|l| l.score).fold(1.0f32, f32::min);
            (text, score)
        })
        .collect()
}

static ID_RE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[0-9]{17}[0-9X]").expect("regex"));
static DATE_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"([0-9]{4})年([0-9]{1,2})月([0-9]{1,2})日?").expect("regex"));
static PERIOD_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"([0-9]{4})[.\-]?([0-9]{2})[.\-]?([0-9]{2})[-—–一~]+(?:([0-9]{4})[.\-]?([0-9]{2})[.\-]?([0-9]{2})|(长期))")
        .expect("regex")
});

/// Full-width digits and letters to ASCII, `×` and `x` to `X`: what the recogniser may give for
/// the characters of an ID number.
fn ascii_id(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '０'..='９' => char::from(b'0' + (c as u32 - '０' as u32) as u8),
            'x' | '×' | 'Ｘ' | 'ｘ' => 'X',
            c => c,
        })
        .collect()
}

fn after<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    text.find(label).map(|i| &text[i + label.len()..])
}

/// What follows a row's label: the whole label, else its last character among the row's first
/// three (a misread first character, `娃名`, still finds the name).
fn labelled<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    after(text, label).or_else(|| {
        let key = label.chars().last()?;
        let head_len: usize = text.chars().take(3).map(char::len_utf8).sum();
        text[..head_len]
            .find(key)
            .map(|i| &text[i + key.len_utf8()..])
    })
}

/// The front's fields from its rows. Labels are looked for first; the rows after the birth date
/// and before the ID number are the address, its label (`住址`, or any `址` in a row's first three
/// characters) removed.
#[must_use]
pub fn parse_front(rows: &[(String, f32)]) -> Front {
    let mut f = Front::default();
    let mut address: Vec<(String, f32)> = Vec::new();
    let mut in_address = false;
    for (text, score) in rows {
        let s = *score;
        let ascii = ascii_id(text);
        if text.contains("公民身份号码") || (ID_RE.is_match(&ascii) && !text.contains('年'))
        {
            in_address = false;
            if let Some(m) = ID_RE.find(&ascii) {
                f.id_number = Field::new(m.as_str().to_owned(), s);
            }
            continue;
        }
        if let Some(rest) = labelled(text, "姓名") {
            in_address = false;
            f.name = Field::new(rest.to_owned(), s);
        } else if text.contains("性别") || text.contains("民族") || text.contains("族") {
            in_address = false;
            if let Some(c) = after(text, "性别")
                .or_else(|| after(text, "别"))
                .and_then(|r| r.chars().next())
                && (c == '男' || c == '女')
            {
                f.sex = Field::new(c.to_string(), s);
            }
            if let Some(rest) = after(text, "民族").or_else(|| after(text, "族")) {
                f.ethnicity = Field::new(rest.to_owned(), s);
            }
        } else if text.starts_with("出生") || DATE_RE.is_match(&ascii) {
            // the address follows the birth date, even when its label is misread
            in_address = address.is_empty();
            if let Some(c) = DATE_RE.captures(&ascii) {
                let n = |i: usize| c[i].parse::<u32>().unwrap_or(0);
                f.birth_date = Field::new(format!("{:04}-{:02}-{:02}", n(1), n(2), n(3)), s);
            }
        } else if let Some(rest) = labelled(text, "住址") {
            in_address = true;
            address.clear();
            address.push((rest.to_owned(), s));
        } else if in_address {
            address.push((text.clone(), s));
        }
    }
    if !address.is_empty() {
        let text: String = address.iter().map(|(t, _)| t.as_str()).collect();
        let score = address.iter().map(|(_, s)| *s).fold(1.0f32, f32::min);
        f.address = Field::new(text, score);
    }
    f
}

/// The back's fields from its rows.
#[must_use]
pub fn parse_back(rows: &[(String, f32)]) -> Back {
    let mut b = Back::default();
    for (text, s) in rows {
        if let Some(rest) = after(text, "签发机关") {
            b.issuing_authority = Field::new(rest.to_owned(), *s);
        }
        if let Some(c) = PERIOD_RE.captures(&ascii_id(text)) {
            b.valid_from = Field::new(format!("{}-{}-{}", &c[1], &c[2], &c[3]), *s);
            let until = if c.get(7).is_some() {
                "长期".to_owned()
            } else {
                format!("{}-{}-{}", &c[4], &c[5], &c[6])
            };
            b.valid_until = Field::new(until, *s);
        }
    }
    b
}

/// The GB 11643 cross-checks of a front: check character, the encoded birth date against the
/// printed one, the sex digit against the printed sex, and missing fields.
#[must_use]
pub fn check_front(f: &Front) -> Vec<Reason> {
    let mut r = Vec::new();
    let id = &f.id_number.value;
    match id_number::derive(id) {
        Err(_) => r.push(Reason::IdNumberMalformed),
        Ok((sex, birth)) => {
            if id_number::check_digit(&id[..17]) != id.chars().last().unwrap_or(' ') {
                r.push(Reason::IdCheckCharacterInvalid);
            }
            if !f.birth_date.value.is_empty() && f.birth_date.value != birth {
                r.push(Reason::BirthDateMismatch);
            }
            if !f.sex.value.is_empty() && f.sex.value != sex.as_str() {
                r.push(Reason::SexMismatch);
            }
        }
    }
    if [&f.name, &f.sex, &f.ethnicity, &f.birth_date, &f.address]
        .iter()
        .any(|x| x.value.is_empty())
    {
        r.push(Reason::FieldMissing);
    }
    r
}

/// Sex as the contract reports it: as printed, else as the ID number encodes it.
#[must_use]
pub fn sex_of(f: &Front) -> Sex {
    match f.sex.value.as_str() {
        "男" => Sex::Male,
        "女" => Sex::Female,
        _ => id_number::derive(&f.id_number.value).map_or(Sex::Female, |(s, _)| s),
    }
}

/// Whether a back's validity has ended by `today` (`YYYY-MM-DD`).
#[must_use]
pub fn expired(b: &Back, today: &str) -> bool {
    let until = &b.valid_until.value;
    until.len() == 10 && until.as_str() < today
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str, x: f32, y: f32, score: f32) -> Line {
        let w = 20.0 * text.chars().count() as f32;
        Line {
            text: text.to_owned(),
            score,
            quad: [[x, y], [x + w, y], [x + w, y + 24.0], [x, y + 24.0]],
        }
    }

    fn card(lines: &[Line]) -> Front {
        parse_front(&rows(lines))
    }

    #[test]
    fn labelled_rows_give_every_field_and_a_two_line_address() {
        let f = card(&[
            line("姓名", 40.0, 50.0, 0.99),
            line("张伟", 120.0, 52.0, 0.98),
            line("性别男", 40.0, 100.0, 0.99),
            line("民族汉", 200.0, 101.0, 0.97),
            line("出生1990年1月2日", 40.0, 150.0, 0.99),
            line("住址北京市东城区", 40.0, 200.0, 0.99),
            line("景山前街4号", 120.0, 235.0, 0.95),
            line("公民身份号码", 40.0, 400.0, 0.99),
            line("11010519900102001x", 260.0, 398.0, 0.96),
        ]);
        assert_eq!(f.name.value, "张伟");
        assert_eq!(f.name.confidence, 0.98);
        assert_eq!(f.sex.value, "男");
        assert_eq!(f.ethnicity.value, "汉");
        assert_eq!(f.birth_date.value, "1990-01-02");
        assert_eq!(f.address.value, "北京市东城区景山前街4号");
        assert_eq!(f.address.confidence, 0.95);
        assert_eq!(f.id_number.value, "11010519900102001X");
    }

    #[test]
    fn cross_checks_catch_a_wrong_check_character_date_and_sex() {
        let mut f = Front {
            name: Field::new("王芳".into(), 0.9),
            sex: Field::new("女".into(), 0.9),
            ethnicity: Field::new("汉".into(), 0.9),
            birth_date: Field::new("1949-12-31".into(), 0.9),
            address: Field::new("北京市".into(), 0.9),
            id_number: Field::new("11010519491231002X".into(), 0.9),
        };
        assert_eq!(check_front(&f), vec![]);
        // one digit misread: the check character no longer matches
        f.id_number.value = "11010519491231003X".into();
        let r = check_front(&f);
        assert!(r.contains(&Reason::IdCheckCharacterInvalid), "{r:?}");
        assert!(r.contains(&Reason::SexMismatch), "{r:?}");
        f.id_number.value = "11010519491231002X".into();
        f.birth_date.value = "1949-12-30".into();
        assert_eq!(check_front(&f), vec![Reason::BirthDateMismatch]);
        f.id_number.value = "1101051949123".into();
        assert!(check_front(&f).contains(&Reason::IdNumberMalformed));
        f.name.value.clear();
        assert!(check_front(&f).contains(&Reason::FieldMissing));
    }

    #[test]
    fn the_back_gives_authority_period_and_expiry() {
        let b = parse_back(&[
            ("中华人民共和国".into(), 0.99),
            ("居民身份证".into(), 0.99),
            ("签发机关北京市公安局东城分局".into(), 0.97),
            ("有效期限2010.03.01-2020.03.01".into(), 0.96),
        ]);
        assert_eq!(b.issuing_authority.value, "北京市公安局东城分局");
        assert_eq!(b.valid_from.value, "2010-03-01");
        assert_eq!(b.valid_until.value, "2020-03-01");
        assert!(expired(&b, "2026-12-01"));
        let b = parse_back(&[("有效期限2016.05.20-长期".into(), 0.9)]);
        assert_eq!(b.valid_until.value, "长期");
        assert!(!expired(&b, "2026-12-01"));
    }

    #[test]
    fn quality_flags_follow_their_thresholds() {
        let q = Quality {
            laplacian_variance: 10.0,
            mean_luma: 30.0,
            text_area: 0.01,
            line_height: 30.0,
        };
        assert_eq!(
            q.reasons(),
            vec![Reason::Blurred, Reason::Underexposed, Reason::CardTooSmall]
        );
        let ok = Quality {
            laplacian_variance: 500.0,
            mean_luma: 180.0,
            text_area: 0.4,
            line_height: 30.0,
        };
        assert!(ok.reasons().is_empty());
    }
}
