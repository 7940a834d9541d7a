//! Pixels in and out: magic-byte sniffing and a real decode under size limits, JPEG/PNG encoding,
//! and the few drawing and sampling primitives that the card and the face share. No vendor logic.

use std::io::Cursor;

use image::{DynamicImage, GrayImage, ImageFormat, ImageReader, Limits, Rgb, RgbImage};

/// Largest decoded width or height accepted; bigger images are refused rather than allocated.
pub const MAX_SIDE: u32 = 8192;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("not base64")]
    Base64,
    #[error("not a JPEG or PNG (unknown magic bytes)")]
    NotAnImage,
    #[error("a {0} that cannot be decoded: {1}")]
    Undecodable(&'static str, String),
}

/// The format the first bytes announce, if it is one the vendors accept.
#[must_use]
pub fn sniff(bytes: &[u8]) -> Option<ImageFormat> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(ImageFormat::Jpeg)
    } else if bytes.starts_with(&[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A]) {
        Some(ImageFormat::Png)
    } else {
        None
    }
}

/// Decodes a JPEG or PNG into RGB. Anything else, or a file that only starts like one, is refused.
///
/// # Errors
/// [`ImageError::NotAnImage`] or [`ImageError::Undecodable`].
pub fn decode(bytes: &[u8]) -> Result<RgbImage, ImageError> {
    let format = sniff(bytes).ok_or(ImageError::NotAnImage)?;
    let name = if format == ImageFormat::Jpeg {
        "JPEG"
    } else {
        "PNG"
    };
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(256 * 1024 * 1024);
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| ImageError::Undecodable(name, e.to_string()))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(ImageError::Undecodable(name, "empty image".into()));
    }
    // `into_rgb8` keeps the decoded buffer when it is already 8-bit RGB (every JPEG here): `to_rgb8`
    // copied it through the colour-space conversion, ~19% of the sandbox's CPU under the verify load.
    Ok(img.into_rgb8())
}

/// Decodes standard base64 (padding optional, surrounding whitespace ignored), then the image.
///
/// # Errors
/// [`ImageError::Base64`] and those of [`decode`].
pub fn decode_base64(text: &str) -> Result<RgbImage, ImageError> {
    use base64::Engine as _;
    let text = text.trim();
    let text = text
        .strip_prefix("data:")
        .and_then(|rest| rest.split_once(";base64,").map(|(_, b)| b))
        .unwrap_or(text);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
        .map_err(|_| ImageError::Base64)?;
    decode(&bytes)
}

/// JPEG at `quality` (1-100).
#[must_use]
pub fn encode_jpeg(img: &DynamicImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality);
    img.write_with_encoder(encoder)
        .expect("encoding an in-memory RGB or gray image to a Vec cannot fail");
    out
}

#[must_use]
pub fn encode_png(img: &DynamicImage) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
        .expect("encoding an in-memory image to a Vec cannot fail");
    out
}

/// ITU-R BT.601 luma, 0..255.
#[must_use]
pub fn luma(p: Rgb<u8>) -> f32 {
    0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2])
}

#[must_use]
pub fn to_gray(img: &RgbImage) -> GrayImage {
    DynamicImage::ImageRgb8(img.clone()).to_luma8()
}

/// Shrinks so the longer side is at most `max_side` (never enlarges).
#[must_use]
pub fn fit(img: &RgbImage, max_side: u32) -> RgbImage {
    let longest = img.width().max(img.height());
    if longest <= max_side {
        return img.clone();
    }
    let scale = f64::from(max_side) / f64::from(longest);
    let w = ((f64::from(img.width()) * scale).round() as u32).max(1);
    let h = ((f64::from(img.height()) * scale).round() as u32).max(1);
    image::imageops::resize(img, w, h, image::imageops::FilterType::Triangle)
}

/// Multiplies a colour by `factor`, saturating.
#[must_use]
pub fn shade(c: [u8; 3], factor: f32) -> Rgb<u8> {
    Rgb(c.map(|v| (f32::from(v) * factor).round().clamp(0.0, 255.0) as u8))
}

/// Fills the axis-aligned ellipse centred at (cx, cy), clipped to the image.
pub fn fill_ellipse(img: &mut RgbImage, cx: f32, cy: f32, rx: f32, ry: f32, colour: Rgb<u8>) {
    fill_where(img, cx - rx, cy - ry, cx + rx, cy + ry, colour, |x, y| {
        let u = (x - cx) / rx;
        let v = (y - cy) / ry;
        u * u + v * v <= 1.0
    });
}

/// Fills the rectangle [x0, x1) x [y0, y1), clipped to the image.
pub fn fill_rect(img: &mut RgbImage, x0: f32, y0: f32, x1: f32, y1: f32, colour: Rgb<u8>) {
    fill_where(img, x0, y0, x1, y1, colour, |_, _| true);
}

/// Sets every pixel of the bounding box whose centre satisfies `inside`.
pub fn fill_where(
    img: &mut RgbImage,
    x0: f32,
    y0: f32,
    x1: f32,
    y1: f32,
    colour: Rgb<u8>,
    inside: impl Fn(f32, f32) -> bool,
) {
    let (w, h) = (img.width() as f32, img.height() as f32);
    let xs = x0.floor().clamp(0.0, w) as u32;
    let xe = x1.ceil().clamp(0.0, w) as u32;
    let ys = y0.floor().clamp(0.0, h) as u32;
    let ye = y1.ceil().clamp(0.0, h) as u32;
    for y in ys..ye {
        for x in xs..xe {
            let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
            if px >= x0 && px < x1 && py >= y0 && py < y1 && inside(px, py) {
                img.put_pixel(x, y, colour);
            }
        }
    }
}

/// Mean luma of the rectangle [x0, x1) x [y0, y1) (clipped; at least one pixel).
#[must_use]
pub fn mean_luma(img: &GrayImage, x0: f32, y0: f32, x1: f32, y1: f32) -> f32 {
    let (w, h) = (img.width(), img.height());
    let xs = (x0.floor().max(0.0) as u32).min(w - 1);
    let ys = (y0.floor().max(0.0) as u32).min(h - 1);
    let xe = (x1.ceil().max(0.0) as u32).clamp(xs + 1, w);
    let ye = (y1.ceil().max(0.0) as u32).clamp(ys + 1, h);
    let mut sum = 0u64;
    for y in ys..ye {
        for x in xs..xe {
            sum += u64::from(img.get_pixel(x, y)[0]);
        }
    }
    sum as f32 / ((xe - xs) * (ye - ys)) as f32
}

/// The threshold between dark and light in a set of 0..255 values: the midpoint of the two class
/// means of Otsu's split (Otsu's own value sits at the edge of a gap between clusters), with the
/// two means.
#[must_use]
pub fn split(values: &[u8]) -> (f32, f32, f32) {
    let t = otsu(values.iter().copied());
    let (mut dark, mut dn, mut light, mut ln) = (0f32, 0f32, 0f32, 0f32);
    for &v in values {
        if v <= t {
            dark += f32::from(v);
            dn += 1.0;
        } else {
            light += f32::from(v);
            ln += 1.0;
        }
    }
    let dark = if dn > 0.0 { dark / dn } else { f32::from(t) };
    let light = if ln > 0.0 { light / ln } else { f32::from(t) };
    ((dark + light) / 2.0, dark, light)
}

/// Otsu's threshold of a set of 0..255 values: the split that best separates dark from light
/// (values at or under it are dark).
#[must_use]
pub fn otsu(values: impl Iterator<Item = u8>) -> u8 {
    let mut hist = [0u64; 256];
    let mut n = 0u64;
    for v in values {
        hist[usize::from(v)] += 1;
        n += 1;
    }
    if n == 0 {
        return 128;
    }
    let total: f64 = hist
        .iter()
        .enumerate()
        .map(|(i, &c)| i as f64 * c as f64)
        .sum();
    let (mut sum_b, mut w_b) = (0.0f64, 0.0f64);
    let (mut best, mut best_var) = (128u8, -1.0f64);
    for (t, &count) in hist.iter().enumerate() {
        w_b += count as f64;
        if w_b == 0.0 {
            continue;
        }
        let w_f = n as f64 - w_b;
        if w_f == 0.0 {
            break;
        }
        sum_b += t as f64 * count as f64;
        let m_b = sum_b / w_b;
        let m_f = (total - sum_b) / w_f;
        let var = w_b * w_f * (m_b - m_f) * (m_b - m_f);
        if var > best_var {
            best_var = var;
            best = t as u8;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_truncated_images_are_not_images() {
        assert_eq!(decode(b"hello"), Err(ImageError::NotAnImage));
        assert!(matches!(
            decode(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10]),
            Err(ImageError::Undecodable("JPEG", _))
        ));
        assert!(matches!(
            decode(&[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 1, 2]),
            Err(ImageError::Undecodable("PNG", _))
        ));
        assert_eq!(decode_base64("%%%"), Err(ImageError::Base64));
    }

    #[test]
    fn an_encoded_image_decodes_back_with_its_size() {
        let img = RgbImage::from_pixel(40, 30, Rgb([200, 10, 10]));
        let jpeg = encode_jpeg(&DynamicImage::ImageRgb8(img.clone()), 85);
        assert_eq!(decode(&jpeg).map(|i| i.dimensions()), Ok((40, 30)));
        let png = encode_png(&DynamicImage::ImageRgb8(img.clone()));
        assert_eq!(decode(&png), Ok(img));
    }
}
