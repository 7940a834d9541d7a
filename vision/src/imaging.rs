//! Pixels in: bounded decoding (dimensions are read from the header and refused before any pixel is
//! decoded), OpenCV-compatible bilinear resizing and sampling, and the measures the quality flags
//! use. The OCR reference (rapidocr, OpenCV) defines the numerics copied here.

use std::io::Cursor;

use image::{GrayImage, ImageFormat, ImageReader, Limits, Rgb, RgbImage};

pub use kyc_sandbox::imaging::{ImageError, sniff};

/// Limits on what [`decode`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest width or height.
    pub max_side: u32,
    /// Largest width × height.
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_side: 8192,
            max_pixels: 40_000_000,
        }
    }
}

/// Decodes a JPEG or PNG into RGB after checking its header's dimensions against `limits`, so a
/// decompression bomb (a small file announcing a huge image) is refused before any pixel is
/// decoded or any buffer allocated.
///
/// # Errors
/// [`ImageError::NotAnImage`], or [`ImageError::Undecodable`] naming the limit or the decoder's
/// complaint.
pub fn decode(bytes: &[u8], limits: DecodeLimits) -> Result<RgbImage, ImageError> {
    let format = sniff(bytes).ok_or(ImageError::NotAnImage)?;
    let name = if format == ImageFormat::Jpeg {
        "JPEG"
    } else {
        "PNG"
    };
    let bad = |m: String| ImageError::Undecodable(name, m);
    let (w, h) = ImageReader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(|e| bad(e.to_string()))?;
    if w == 0 || h == 0 {
        return Err(bad("empty image".into()));
    }
    if w.max(h) > limits.max_side || u64::from(w) * u64::from(h) > limits.max_pixels {
        return Err(bad(format!(
            "{w}x{h} ({} pixels) is beyond the limit ({} px a side, {} pixels); refused before decoding",
            u64::from(w) * u64::from(h),
            limits.max_side,
            limits.max_pixels
        )));
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut l = Limits::default();
    l.max_image_width = Some(limits.max_side);
    l.max_image_height = Some(limits.max_side);
    l.max_alloc = Some(limits.max_pixels.saturating_mul(4).max(64 << 20));
    reader.limits(l);
    Ok(reader.decode().map_err(|e| bad(e.to_string()))?.into_rgb8())
}

/// Decodes base64 text, then [`decode`].
///
/// # Errors
/// [`ImageError::Base64`] or those of [`decode`].
pub fn decode_base64(text: &str, limits: DecodeLimits) -> Result<RgbImage, ImageError> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| ImageError::Base64)?;
    decode(&bytes, limits)
}

/// One source coordinate of OpenCV's `INTER_LINEAR` (half-pixel centres, clamped at the border):
/// the two neighbours and the weight of the second.
#[inline]
fn linear_tap(dst: u32, scale: f64, len: u32) -> (u32, u32, f32) {
    let s = ((f64::from(dst) + 0.5) * scale - 0.5).max(0.0);
    let i = s.floor();
    let i0 = (i as u32).min(len - 1);
    let i1 = (i0 + 1).min(len - 1);
    (i0, i1, (s - i) as f32)
}

/// Resizes like `cv2.resize(img, (w, h))` with its default `INTER_LINEAR`: no anti-aliasing on
/// downscaling, which is what the models were trained behind.
#[must_use]
pub fn resize_linear(src: &RgbImage, w: u32, h: u32) -> RgbImage {
    let (sw, sh) = src.dimensions();
    if w == 0 || h == 0 || sw == 0 || sh == 0 {
        return RgbImage::new(w, h);
    }
    let sx = f64::from(sw) / f64::from(w);
    let sy = f64::from(sh) / f64::from(h);
    let xs: Vec<_> = (0..w)
        .map(|x| {
            let (x0, x1, fx) = linear_tap(x, sx, sw);
            (3 * x0 as usize, 3 * x1 as usize, fx)
        })
        .collect();
    let stride = 3 * sw as usize;
    let raw = src.as_raw();
    let mut out = RgbImage::new(w, h);
    // row slices and precomputed taps: the detector's input (about 860k pixels a card) is
    // resized on every read
    for (y, row) in out.chunks_exact_mut(3 * w as usize).enumerate() {
        let (y0, y1, fy) = linear_tap(y as u32, sy, sh);
        let r0 = &raw[y0 as usize * stride..][..stride];
        let r1 = &raw[y1 as usize * stride..][..stride];
        for (px, &(i0, i1, fx)) in row.chunks_exact_mut(3).zip(&xs) {
            for (k, v) in px.iter_mut().enumerate() {
                *v = mix([r0[i0 + k], r0[i1 + k], r1[i0 + k], r1[i1 + k]], fx, fy);
            }
        }
    }
    out
}

/// Bilinear sample at a real position, the border replicated.
#[must_use]
pub fn sample(src: &RgbImage, x: f32, y: f32) -> Rgb<u8> {
    let (w, h) = src.dimensions();
    let x = x.clamp(0.0, (w - 1) as f32);
    let y = y.clamp(0.0, (h - 1) as f32);
    let (x0, y0) = (x.floor() as u32, y.floor() as u32);
    let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let (a, b, c, d) = (
        src.get_pixel(x0, y0).0,
        src.get_pixel(x1, y0).0,
        src.get_pixel(x0, y1).0,
        src.get_pixel(x1, y1).0,
    );
    Rgb(std::array::from_fn(|k| {
        mix([a[k], b[k], c[k], d[k]], fx, fy)
    }))
}

/// The bilinear mix of four neighbours `[top-left, top-right, bottom-left, bottom-right]`,
/// weight `fx` on the right column and `fy` on the bottom row, rounded half up.
#[inline]
fn mix([a, b, c, d]: [u8; 4], fx: f32, fy: f32) -> u8 {
    let top = f32::from(a) + (f32::from(b) - f32::from(a)) * fx;
    let bot = f32::from(c) + (f32::from(d) - f32::from(c)) * fx;
    // the mix lies in [0, 255]: adding 0.5 and truncating is `round()` there, without the libm
    // call `round` costs on baseline x86-64 (three per pixel); `as` saturates
    (top + (bot - top) * fy + 0.5) as u8
}

/// ITU-R BT.601 luma.
#[must_use]
pub fn gray(img: &RgbImage) -> GrayImage {
    image::imageops::grayscale(img)
}

/// Variance of the 3×3 Laplacian of the luma: low on a blurred image.
#[must_use]
pub fn laplacian_variance(g: &GrayImage) -> f64 {
    let lap = imageproc::filter::laplacian_filter(g);
    let n = f64::from(lap.width() * lap.height()).max(1.0);
    let (sum, sq) = lap.pixels().fold((0.0, 0.0), |(s, q), p| {
        let v = f64::from(p.0[0]);
        (s + v, q + v * v)
    });
    let mean = sum / n;
    sq / n - mean * mean
}

/// Fractions of pixels at or under 20 and at or over 235 luma, and the mean luma.
#[must_use]
pub fn exposure(g: &GrayImage) -> (f64, f64, f64) {
    let n = f64::from(g.width() * g.height()).max(1.0);
    let (mut dark, mut bright, mut sum) = (0u64, 0u64, 0u64);
    for p in g.pixels() {
        let v = p.0[0];
        dark += u64::from(v <= 20);
        bright += u64::from(v >= 235);
        sum += u64::from(v);
    }
    (dark as f64 / n, bright as f64 / n, sum as f64 / n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let mut out = Vec::new();
        RgbImage::new(w, h)
            .write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .expect("encode");
        out
    }

    #[test]
    fn a_header_beyond_the_limits_is_refused_before_decoding() {
        let limits = DecodeLimits {
            max_side: 100,
            max_pixels: 5_000,
        };
        assert_eq!(decode(&png(80, 60), limits).expect("fits").width(), 80);
        let e = decode(&png(101, 10), limits).expect_err("too wide");
        assert!(e.to_string().contains("refused before decoding"), "{e}");
        let e = decode(&png(90, 90), limits).expect_err("too many pixels");
        assert!(e.to_string().contains("8100"), "{e}");
        assert_eq!(decode(b"GIF89a", limits), Err(ImageError::NotAnImage));
    }

    #[test]
    fn linear_resize_matches_opencv_on_a_two_pixel_ramp() {
        // cv2.resize(np.array([[[0,0,0],[200,200,200]]],np.uint8), (4,1)) == [0, 50, 150, 200]
        let mut src = RgbImage::new(2, 1);
        src.put_pixel(1, 0, Rgb([200, 200, 200]));
        let out = resize_linear(&src, 4, 1);
        let row: Vec<u8> = (0..4).map(|x| out.get_pixel(x, 0).0[0]).collect();
        assert_eq!(row, [0, 50, 150, 200]);
    }

    #[test]
    fn blur_lowers_the_laplacian_variance() {
        let mut g = GrayImage::new(64, 64);
        for (x, y, p) in g.enumerate_pixels_mut() {
            p.0[0] = if (x / 4 + y / 4) % 2 == 0 { 0 } else { 255 };
        }
        let sharp = laplacian_variance(&g);
        let blurred = laplacian_variance(&imageproc::filter::gaussian_blur_f32(&g, 3.0));
        assert!(sharp > 20.0 * blurred, "{sharp} vs {blurred}");
    }
}
