//! Frame quality for the liveness page: before a camera frame is sent, the page asks whether it is
//! good enough to judge — sharp enough (the variance of the Laplacian of its grayscale) and neither
//! too dark nor too bright (its mean luma). It does not look for a face; the liveness vendor does.
//!
//! Compiled with wasm-bindgen for `wasm32-unknown-unknown` (`scripts/build-web.sh`); the math is
//! plain Rust, tested natively.

use wasm_bindgen::prelude::*;

/// Mean luma (0–255) under which a frame is too dark to judge.
pub const TOO_DARK_BELOW: f64 = 40.0;
/// Mean luma (0–255) above which a frame is too bright (washed out) to judge.
pub const TOO_BRIGHT_ABOVE: f64 = 220.0;
/// Variance of the Laplacian under which a frame is too blurry to judge. On the 320x240 frames the
/// page scores, the drawn face of the tests scores about 565, the same face after two 5x5 box blurs
/// about 4, a uniform frame (a covered camera) 0.
pub const TOO_BLURRY_BELOW: f64 = 15.0;

/// A frame's quality, as the page shows it.
#[wasm_bindgen]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameQuality {
    /// Variance of the 4-neighbour Laplacian of the grayscale frame: higher is sharper.
    pub blur: f64,
    /// Mean luma, 0 (black) to 255 (white).
    pub brightness: f64,
    pub too_dark: bool,
    pub too_bright: bool,
    pub too_blurry: bool,
    /// Good enough to send: none of the above.
    pub ok: bool,
}

#[wasm_bindgen]
impl FrameQuality {
    /// Why the frame is not sent, for the user; empty when it is `ok`.
    #[must_use]
    pub fn reason(&self) -> String {
        let mut why = Vec::new();
        if self.too_dark {
            why.push("too dark: add light");
        }
        if self.too_bright {
            why.push("too bright: move away from the light");
        }
        if self.too_blurry {
            why.push("too blurry: hold still and clean the lens");
        }
        why.join("; ")
    }
}

/// The thresholds, so the page can show them.
#[wasm_bindgen]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub too_dark_below: f64,
    pub too_bright_above: f64,
    pub too_blurry_below: f64,
}

#[wasm_bindgen]
#[must_use]
pub fn thresholds() -> Thresholds {
    Thresholds {
        too_dark_below: TOO_DARK_BELOW,
        too_bright_above: TOO_BRIGHT_ABOVE,
        too_blurry_below: TOO_BLURRY_BELOW,
    }
}

/// Why a buffer cannot be scored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScoreError {
    /// The Laplacian needs a 3x3 neighbourhood.
    TooSmall { width: u32, height: u32 },
    /// An RGBA buffer is `width * height * 4` bytes.
    WrongLength { expected: usize, actual: usize },
}

impl std::fmt::Display for ScoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooSmall { width, height } => {
                write!(f, "a {width}x{height} frame is too small (at least 3x3)")
            }
            Self::WrongLength { expected, actual } => {
                write!(
                    f,
                    "an RGBA frame of that size has {expected} bytes, not {actual}"
                )
            }
        }
    }
}

impl std::error::Error for ScoreError {}

/// Scores an RGBA frame (a canvas's `getImageData().data`), `width` by `height` pixels.
///
/// # Errors
/// The buffer's length is not `width * height * 4`, or the frame is smaller than 3x3.
#[wasm_bindgen]
pub fn score_frame(rgba: &[u8], width: u32, height: u32) -> Result<FrameQuality, JsError> {
    score(rgba, width, height).map_err(|e| JsError::new(&e.to_string()))
}

/// [`score_frame`] for Rust callers.
///
/// # Errors
/// As [`score_frame`].
pub fn score(rgba: &[u8], width: u32, height: u32) -> Result<FrameQuality, ScoreError> {
    if width < 3 || height < 3 {
        return Err(ScoreError::TooSmall { width, height });
    }
    let (w, h) = (width as usize, height as usize);
    let expected = w * h * 4;
    if rgba.len() != expected {
        return Err(ScoreError::WrongLength {
            expected,
            actual: rgba.len(),
        });
    }
    let gray: Vec<i32> = rgba.chunks_exact(4).map(luma).collect();
    let brightness = gray.iter().map(|&g| f64::from(g)).sum::<f64>() / (w * h) as f64;
    let blur = laplacian_variance(&gray, w, h);
    let too_dark = brightness < TOO_DARK_BELOW;
    let too_bright = brightness > TOO_BRIGHT_ABOVE;
    let too_blurry = blur < TOO_BLURRY_BELOW;
    Ok(FrameQuality {
        blur,
        brightness,
        too_dark,
        too_bright,
        too_blurry,
        ok: !(too_dark || too_bright || too_blurry),
    })
}

/// ITU-R BT.601 luma in integers (weights 77/150/29 of 256); alpha is ignored.
fn luma(px: &[u8]) -> i32 {
    (77 * i32::from(px[0]) + 150 * i32::from(px[1]) + 29 * i32::from(px[2]) + 128) >> 8
}

/// Variance of `g(x-1,y) + g(x+1,y) + g(x,y-1) + g(x,y+1) - 4 g(x,y)` over the interior pixels
/// (OpenCV's `Laplacian` with `ksize=1`, the usual focus measure).
fn laplacian_variance(gray: &[i32], w: usize, h: usize) -> f64 {
    let (mut sum, mut sum_sq) = (0i64, 0i64);
    for y in 1..h - 1 {
        let row = y * w;
        for x in 1..w - 1 {
            let i = row + x;
            let l = gray[i - 1] + gray[i + 1] + gray[i - w] + gray[i + w] - 4 * gray[i];
            sum += i64::from(l);
            sum_sq += i64::from(l) * i64::from(l);
        }
    }
    let n = ((w - 2) * (h - 2)) as f64;
    let mean = sum as f64 / n;
    sum_sq as f64 / n - mean * mean
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: u32 = 320;
    const H: u32 = 240;

    fn frame(f: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
        let mut out = Vec::with_capacity((W * H * 4) as usize);
        for y in 0..H {
            for x in 0..W {
                let [r, g, b] = f(x, y);
                out.extend_from_slice(&[r, g, b, 255]);
            }
        }
        out
    }

    /// A face-sized ellipse with eyes and a mouth on a mid-grey background: sharp edges.
    fn sharp(x: u32, y: u32) -> [u8; 3] {
        let (dx, dy) = (f64::from(x) - 160.0, f64::from(y) - 120.0);
        let in_face = (dx / 70.0).powi(2) + (dy / 95.0).powi(2) < 1.0;
        let eye = |cx: f64| (f64::from(x) - cx).powi(2) + (f64::from(y) - 95.0).powi(2) < 64.0;
        let mouth = (130..190).contains(&x) && (165..175).contains(&y);
        if eye(135.0) || eye(185.0) || mouth {
            [30, 20, 20]
        } else if in_face {
            [220, 180, 150]
        } else if (x / 16 + y / 16).is_multiple_of(2) {
            [90, 100, 110]
        } else {
            [120, 130, 140]
        }
    }

    /// A 5x5 box blur of the RGBA frame (edges clamped).
    fn box_blur(rgba: &[u8]) -> Vec<u8> {
        let (w, h) = (W as i64, H as i64);
        let mut out = rgba.to_vec();
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    let mut acc = 0u32;
                    for dy in -2..=2 {
                        for dx in -2..=2 {
                            let (sx, sy) = ((x + dx).clamp(0, w - 1), (y + dy).clamp(0, h - 1));
                            acc += u32::from(rgba[((sy * w + sx) * 4 + c) as usize]);
                        }
                    }
                    out[((y * w + x) * 4 + c) as usize] = (acc / 25) as u8;
                }
            }
        }
        out
    }

    #[test]
    fn a_sharp_well_lit_frame_is_ok() {
        let q = score(&frame(sharp), W, H).expect("scores");
        assert!(q.ok, "{q:?}");
        assert!(q.blur > 100.0, "{q:?}");
        assert!((60.0..200.0).contains(&q.brightness), "{q:?}");
        assert_eq!(q.reason(), "");
    }

    #[test]
    fn the_same_frame_blurred_is_too_blurry() {
        let sharp_frame = frame(sharp);
        let q = score(&box_blur(&box_blur(&sharp_frame)), W, H).expect("scores");
        assert!(q.too_blurry && !q.ok, "{q:?}");
        assert!(q.reason().contains("too blurry"));
        assert!(
            !q.too_dark && !q.too_bright,
            "blurring keeps the brightness: {q:?}"
        );
    }

    #[test]
    fn a_uniform_frame_has_no_laplacian_variance() {
        let q = score(&frame(|_, _| [128, 128, 128]), W, H).expect("scores");
        assert!(q.blur.abs() < 1e-9, "{q:?}");
        assert!((q.brightness - 128.0).abs() < 0.5, "{q:?}");
        assert!(q.too_blurry);
    }

    #[test]
    fn a_dark_frame_and_a_bright_frame_are_refused_with_their_reason() {
        let dark = frame(|x, y| {
            let [r, g, b] = sharp(x, y);
            [r / 8, g / 8, b / 8]
        });
        let q = score(&dark, W, H).expect("scores");
        assert!(q.too_dark && !q.too_bright && !q.ok, "{q:?}");
        assert!(q.reason().starts_with("too dark"));

        let bright = frame(|x, y| {
            let [r, g, b] = sharp(x, y);
            [r.max(235), g.max(235), b.max(235)]
        });
        let q = score(&bright, W, H).expect("scores");
        assert!(q.too_bright && !q.too_dark && !q.ok, "{q:?}");
        assert!(q.reason().starts_with("too bright"));
    }

    #[test]
    fn luma_follows_bt601_and_ignores_alpha() {
        assert_eq!(luma(&[255, 255, 255, 0]), 255);
        assert_eq!(luma(&[0, 0, 0, 255]), 0);
        assert_eq!(luma(&[255, 0, 0, 255]), 77);
        assert_eq!(luma(&[0, 255, 0, 255]), 149);
        assert_eq!(luma(&[0, 0, 255, 255]), 29);
    }

    #[test]
    fn the_laplacian_of_a_single_bright_pixel() {
        // One pixel of 100 in a 3x3... 5x5 field of zeros: interior Laplacians are -400 at the
        // centre, 100 at its four neighbours, 0 at the four corners (9 interior pixels).
        let mut gray = vec![0i32; 25];
        gray[12] = 100;
        let v = laplacian_variance(&gray, 5, 5);
        let values = [-400.0, 100.0, 100.0, 100.0, 100.0, 0.0, 0.0, 0.0, 0.0];
        let mean = values.iter().sum::<f64>() / 9.0;
        let expected = values.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / 9.0;
        assert!((v - expected).abs() < 1e-9, "{v} vs {expected}");
    }

    #[test]
    fn a_buffer_of_the_wrong_size_is_an_error() {
        assert_eq!(
            score(&[0; 12], 2, 2),
            Err(ScoreError::TooSmall {
                width: 2,
                height: 2
            })
        );
        assert_eq!(
            score(&[0; 35], 3, 3),
            Err(ScoreError::WrongLength {
                expected: 36,
                actual: 35
            })
        );
    }
}
