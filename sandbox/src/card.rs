//! The sandbox ID card: its layout, the data band that carries what the card says, and the "OCR"
//! that reads it back. The band is a two-colour block code (8x8 px cells at the nominal 856x540
//! size) framed by a solid border, which the reader locates by its long dark edges, samples cell
//! by cell, and verifies with a SHA-256 checksum. Real printed text is not read: no OCR is here.

use image::{Rgb, RgbImage};
use sha2::Digest as _;

use crate::face::{Face, Pose};
use crate::font;
use crate::id_number::{self, Sex};
use crate::imaging::{self, fill_rect};
use crate::prng::SplitMix64;

pub const CARD_W: u32 = 856;
pub const CARD_H: u32 = 540;
/// Cell size in pixels at the nominal card size.
pub const CELL: u32 = 8;
/// Data cells per row and rows of data cells, inside a one-cell border.
pub const COLS: u32 = 68;
pub const ROWS: u32 = 44;
/// Top-left corner of the band's outer border.
pub const BAND_X: u32 = 36;
pub const BAND_Y: u32 = 72;
/// The portrait: top-left corner and size.
pub const PORTRAIT: (u32, u32, u32, u32) = (620, 72, 200, 250);

/// Bytes the band holds (one bit per cell).
pub const CAPACITY: usize = (COLS * ROWS / 8) as usize;
const MAGIC: &[u8; 3] = b"KS1";
/// Limits per field, chosen so every valid set of fields fits the band.
pub const MAX_NAME_BYTES: usize = 64;
pub const MAX_ETHNICITY_BYTES: usize = 24;
pub const MAX_ADDRESS_BYTES: usize = 255;
/// Whitening seed ("KYC_CARD"): data bits are XORed with this stream so the band has no large
/// uniform areas whatever the text.
const WHITENING_SEED: u64 = 0x4B59_435F_4341_5244;

const DARK: Rgb<u8> = Rgb([24, 40, 88]);
const LIGHT: Rgb<u8> = Rgb([240, 244, 250]);
const INK: Rgb<u8> = Rgb([30, 50, 110]);

/// What a card says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardData {
    pub name: String,
    pub ethnicity: String,
    pub id_number: String,
    pub address: String,
}

/// The band's bytes: `KS1`, a big-endian u16 length, the fields (`u8` length + UTF-8 name,
/// `u8` length + ethnicity, the 18 ID characters, `u8` length + address), then the first 4
/// bytes of SHA-256 of the fields.
///
/// # Panics
/// When a field exceeds its `MAX_*` limit or the ID is not 18 bytes: callers build `CardData`
/// from a validated [`crate::fixtures::Person`].
#[must_use]
pub fn encode(data: &CardData) -> Vec<u8> {
    assert!(
        data.name.len() <= MAX_NAME_BYTES
            && data.ethnicity.len() <= MAX_ETHNICITY_BYTES
            && data.address.len() <= MAX_ADDRESS_BYTES
            && data.id_number.len() == 18,
        "card fields are validated before encoding"
    );
    let mut fields = Vec::new();
    for (i, f) in [&data.name, &data.ethnicity, &data.id_number, &data.address]
        .into_iter()
        .enumerate()
    {
        if i != 2 {
            fields.push(f.len() as u8);
        }
        fields.extend_from_slice(f.as_bytes());
    }
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&(fields.len() as u16).to_be_bytes());
    out.extend_from_slice(&fields);
    out.extend_from_slice(&sha2::Sha256::digest(&fields)[..4]);
    out
}

/// Whitened bits for every data cell, row by row: `true` is a dark cell.
fn cells(payload: &[u8]) -> Vec<bool> {
    let mut key = SplitMix64::new(WHITENING_SEED);
    let mut word = 0u64;
    (0..(COLS * ROWS) as usize)
        .map(|i| {
            if i % 64 == 0 {
                word = key.next_u64();
            }
            let key_bit = (word >> (i % 64)) & 1 == 1;
            let data_bit = payload
                .get(i / 8)
                .is_some_and(|b| (b >> (7 - i % 8)) & 1 == 1);
            key_bit ^ data_bit
        })
        .collect()
}

/// The rectangle of data cell `index` (row-major) at the nominal size: x, y, width, height.
#[must_use]
pub fn cell_rect(index: usize) -> (u32, u32, u32, u32) {
    let (c, r) = (index as u32 % COLS, index as u32 / COLS);
    (BAND_X + (c + 1) * CELL, BAND_Y + (r + 1) * CELL, CELL, CELL)
}

/// Draws the whole card at its nominal size: title, band, portrait and the ID number in print.
#[must_use]
pub fn render(data: &CardData, face: &Face) -> RgbImage {
    let mut img = RgbImage::from_fn(CARD_W, CARD_H, |x, y| {
        let t = (x + y) as f32 / (CARD_W + CARD_H) as f32;
        Rgb([
            (212.0 + 14.0 * t) as u8,
            (230.0 + 6.0 * t) as u8,
            (242.0 - 16.0 * t) as u8,
        ])
    });
    fill_rect(
        &mut img,
        0.0,
        0.0,
        CARD_W as f32,
        56.0,
        Rgb([184, 208, 232]),
    );
    let title = "KYC SANDBOX - NOT A REAL ID CARD";
    let x = (CARD_W as f32 - font::text_width(title, 3.0)) / 2.0;
    font::draw_text(&mut img, x, 18.0, 3.0, title, INK);

    let (bw, bh) = ((COLS + 2) * CELL, (ROWS + 2) * CELL);
    fill_rect(
        &mut img,
        BAND_X as f32,
        BAND_Y as f32,
        (BAND_X + bw) as f32,
        (BAND_Y + bh) as f32,
        DARK,
    );
    for (i, dark) in cells(&encode(data)).into_iter().enumerate() {
        let (x, y, w, h) = cell_rect(i);
        let colour = if dark { DARK } else { LIGHT };
        fill_rect(
            &mut img,
            x as f32,
            y as f32,
            (x + w) as f32,
            (y + h) as f32,
            colour,
        );
    }

    let (px, py, pw, ph) = PORTRAIT;
    let mut portrait = RgbImage::from_pixel(pw, ph, Rgb([243, 244, 246]));
    face.draw(&mut portrait, Pose::new(pw as f32 / 2.0, 118.0, 60.0, 1.0));
    image::imageops::replace(&mut img, &portrait, i64::from(px), i64::from(py));
    let specimen = "SPECIMEN";
    let x = px as f32 + (pw as f32 - font::text_width(specimen, 3.0)) / 2.0;
    font::draw_text(&mut img, x, (py + ph + 16) as f32, 3.0, specimen, INK);
    font::draw_text(&mut img, BAND_X as f32, 462.0, 4.0, &data.id_number, INK);
    img
}

/// What the OCR read, with the checks it made.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub data: CardData,
    pub sex: Sex,
    /// `YYYY-MM-DD`.
    pub birth_date: String,
    pub confidence: f64,
    pub warnings: Warnings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Warnings {
    /// Near-zero colour saturation: a black-and-white copy, not the card.
    pub photocopy: bool,
    /// Never set by the sandbox.
    pub screen_reshoot: bool,
    /// The band decodes but fails its checksum: the card was altered after issue.
    pub edited: bool,
    /// Shorter side under 270 px, or a very dark image (mean luma under 60).
    pub low_quality: bool,
}

/// Why no card could be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no card found: {0}")]
pub struct NoCard(pub &'static str);

/// Mean chroma (max - min of R, G, B) under which an image counts as a photocopy.
const PHOTOCOPY_CHROMA: f32 = 6.0;

/// Reads a card from an image.
///
/// # Errors
/// [`NoCard`] when no band is found or its content does not parse.
pub fn read(img: &RgbImage) -> Result<Reading, NoCard> {
    let gray = imaging::to_gray(img);
    let (xs, ys, xe, ye) = locate(&gray)?;
    let cw = (xe - xs) as f32 / (COLS + 2) as f32;
    let ch = (ye - ys) as f32 / (ROWS + 2) as f32;
    let sample = |c: u32, r: u32| {
        let cx = xs as f32 + (c as f32 + 0.5) * cw;
        let cy = ys as f32 + (r as f32 + 0.5) * ch;
        let m = imaging::mean_luma(
            &gray,
            cx - cw / 4.0,
            cy - ch / 4.0,
            cx + cw / 4.0,
            cy + ch / 4.0,
        );
        m.round().clamp(0.0, 255.0) as u8
    };
    let samples: Vec<u8> = (0..ROWS * COLS)
        .map(|i| sample(i % COLS + 1, i / COLS + 1))
        .collect();
    let (threshold, dark_mean, light_mean) = imaging::split(&samples);
    let border_dark = (0..ROWS + 2)
        .flat_map(|r| [(0, r), (COLS + 1, r)])
        .filter(|&(c, r)| f32::from(sample(c, r)) < threshold)
        .count();
    if border_dark < (ROWS + 2) as usize * 2 * 9 / 10 {
        return Err(NoCard("no card band: the border is incomplete"));
    }

    let mut key = SplitMix64::new(WHITENING_SEED);
    let mut word = 0u64;
    let mut payload = vec![0u8; CAPACITY];
    for (i, &v) in samples.iter().enumerate() {
        if i % 64 == 0 {
            word = key.next_u64();
        }
        let dark = f32::from(v) < threshold;
        let key_bit = (word >> (i % 64)) & 1 == 1;
        if dark ^ key_bit {
            payload[i / 8] |= 1 << (7 - i % 8);
        }
    }
    let (data, checksum_ok) = parse(&payload)?;
    let (sex, birth_date) = id_number::derive(&data.id_number)
        .map_err(|_| NoCard("the card band is unreadable: no valid ID number"))?;

    // Confidence: the share of cells that sit clearly on one side of the threshold.
    let margin = (light_mean - dark_mean) / 4.0;
    let clear = samples
        .iter()
        .filter(|&&v| (f32::from(v) - threshold).abs() >= margin)
        .count() as f64
        / samples.len() as f64;

    let chroma = img
        .pixels()
        .map(|p| f32::from(p.0.iter().max().unwrap_or(&0) - p.0.iter().min().unwrap_or(&0)))
        .sum::<f32>()
        / (img.width() * img.height()) as f32;
    let mean_luma =
        gray.pixels().map(|p| f32::from(p[0])).sum::<f32>() / (img.width() * img.height()) as f32;
    let warnings = Warnings {
        photocopy: chroma < PHOTOCOPY_CHROMA,
        screen_reshoot: false,
        edited: !checksum_ok,
        low_quality: img.width().min(img.height()) < 270 || mean_luma < 60.0,
    };
    let mut confidence = 0.5 + 0.48 * clear;
    if warnings.low_quality {
        confidence *= 0.9;
    }
    if warnings.edited {
        confidence = confidence.min(0.5);
    }
    Ok(Reading {
        data,
        sex,
        birth_date,
        confidence: (confidence * 100.0).round() / 100.0,
        warnings,
    })
}

/// The band's outer border as (x start, y start, x end, y end), end exclusive: the first and last
/// groups of rows holding a dark run at least 40% of the image wide are its top and bottom edges.
fn locate(gray: &image::GrayImage) -> Result<(u32, u32, u32, u32), NoCard> {
    let (w, h) = gray.dimensions();
    let (threshold, _, _) = imaging::split(gray.as_raw());
    let min_run = (w as f32 * 0.4) as u32;
    // For each row, its longest dark run as (start, end) when it is long enough.
    let runs: Vec<Option<(u32, u32)>> = gray
        .rows()
        .map(|row| {
            let (mut best, mut start) = ((0u32, 0u32), None);
            for (x, p) in row.enumerate() {
                let x = x as u32;
                match (f32::from(p[0]) < threshold, start) {
                    (true, None) => start = Some(x),
                    (false, Some(s)) => {
                        if x - s > best.1 - best.0 {
                            best = (s, x);
                        }
                        start = None;
                    }
                    _ => {}
                }
            }
            if let Some(s) = start
                && w - s > best.1 - best.0
            {
                best = (s, w);
            }
            (best.1 - best.0 >= min_run).then_some(best)
        })
        .collect();
    let long: Vec<u32> = (0..h).filter(|&y| runs[y as usize].is_some()).collect();
    let (Some(&first), Some(&last)) = (long.first(), long.last()) else {
        return Err(NoCard("no card band in the image"));
    };
    // The top edge is the group of consecutive long rows starting at `first`; likewise the bottom.
    let top_end = long
        .iter()
        .zip(long.iter().skip(1))
        .find(|(a, b)| **b > **a + 1)
        .map_or(last, |(a, _)| *a);
    let bottom_start = long
        .iter()
        .rev()
        .zip(long.iter().rev().skip(1))
        .find(|(a, b)| **b + 1 < **a)
        .map_or(first, |(a, _)| *a);
    if top_end >= bottom_start {
        return Err(NoCard("no card band in the image: only one edge"));
    }
    let edge = |y0: u32, y1: u32| runs[((y0 + y1) / 2) as usize].unwrap_or((0, 0));
    let (tx0, tx1) = edge(first, top_end);
    let (bx0, bx1) = edge(bottom_start, last);
    let tolerance = (w / 50).max(3);
    if tx0.abs_diff(bx0) > tolerance || tx1.abs_diff(bx1) > tolerance {
        return Err(NoCard(
            "no card band in the image: its edges do not line up",
        ));
    }
    let (xs, xe, ys, ye) = ((tx0 + bx0) / 2, (tx1 + bx1) / 2, first, last + 1);
    let cw = (xe - xs) as f32 / (COLS + 2) as f32;
    let ch = (ye - ys) as f32 / (ROWS + 2) as f32;
    if cw < 2.0 || !(0.75..=1.33).contains(&(cw / ch)) {
        return Err(NoCard("no card band in the image: wrong proportions"));
    }
    Ok((xs, ys, xe, ye))
}

/// The fields of a band's bytes and whether the checksum holds.
fn parse(payload: &[u8]) -> Result<(CardData, bool), NoCard> {
    const UNREADABLE: NoCard = NoCard("the card band is unreadable");
    if &payload[..3] != MAGIC {
        return Err(UNREADABLE);
    }
    let len = usize::from(u16::from_be_bytes([payload[3], payload[4]]));
    if 5 + len + 4 > payload.len() {
        return Err(UNREADABLE);
    }
    let fields = &payload[5..5 + len];
    let checksum_ok = sha2::Sha256::digest(fields)[..4] == payload[5 + len..5 + len + 4];
    let mut pos = 0usize;
    let mut next = |fixed: Option<usize>| -> Result<String, NoCard> {
        let n = match fixed {
            Some(n) => n,
            None => {
                let n = usize::from(*fields.get(pos).ok_or(UNREADABLE)?);
                pos += 1;
                n
            }
        };
        let bytes = fields.get(pos..pos + n).ok_or(UNREADABLE)?;
        pos += n;
        String::from_utf8(bytes.to_vec()).map_err(|_| UNREADABLE)
    };
    let name = next(None)?;
    let ethnicity = next(None)?;
    let id_number = next(Some(18))?;
    let address = next(None)?;
    if pos != fields.len() || name.is_empty() {
        return Err(UNREADABLE);
    }
    Ok((
        CardData {
            name,
            ethnicity,
            id_number,
            address,
        },
        checksum_ok,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> CardData {
        CardData {
            name: "张三".into(),
            ethnicity: "汉".into(),
            id_number: "11010519491231002X".into(),
            address: "北京市朝阳区建国路1号".into(),
        }
    }

    fn padded(mut bytes: Vec<u8>) -> Vec<u8> {
        bytes.resize(CAPACITY, 0);
        bytes
    }

    #[test]
    fn the_payload_round_trips_and_a_changed_byte_fails_the_checksum() {
        let payload = encode(&data());
        assert_eq!(parse(&padded(payload.clone())), Ok((data(), true)));
        let mut altered = payload;
        let last_id_digit = 3 + 2 + 1 + "张三".len() + 1 + "汉".len() + 16;
        altered[last_id_digit] = b'3';
        let (read, checksum_ok) = parse(&padded(altered)).expect("still parses");
        assert_eq!(read.id_number, "11010519491231003X");
        assert!(!checksum_ok);
    }

    #[test]
    fn the_longest_fields_still_fit_the_band() {
        let longest = CardData {
            name: "名".repeat(MAX_NAME_BYTES / 3),
            ethnicity: "族".repeat(MAX_ETHNICITY_BYTES / 3),
            id_number: "11010519491231002X".into(),
            address: "址".repeat(MAX_ADDRESS_BYTES / 3),
        };
        assert!(encode(&longest).len() <= CAPACITY);
        assert_eq!(parse(&padded(encode(&longest))), Ok((longest, true)));
    }

    #[test]
    fn a_blank_band_is_no_card() {
        assert!(parse(&[0u8; CAPACITY]).is_err());
        let blank = RgbImage::from_pixel(CARD_W, CARD_H, Rgb([230, 230, 230]));
        assert!(read(&blank).is_err());
    }
}
