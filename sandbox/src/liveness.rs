//! The liveness rule, for now: a sequence of (nearly) identical frames is a replayed photo; frames
//! that change enough pass. It does not check that the change is the requested action.

use image::RgbImage;

/// Frames per check, inclusive.
pub const MIN_FRAMES: usize = 2;
pub const MAX_FRAMES: usize = 30;
/// Motion (mean absolute luma difference, 0..255, between consecutive 64x64 grayscale
/// thumbnails) under which the frames count as static.
pub const STATIC_MOTION: f64 = 1.5;

/// Why a check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    StaticFrames,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    pub passed: bool,
    /// `motion / (motion + STATIC_MOTION)`: 0.5 exactly at the threshold.
    pub score: f64,
    pub reason: Option<Reason>,
    /// The largest motion between consecutive frames.
    pub motion: f64,
}

/// Judges a sequence of frames (at least two).
#[must_use]
pub fn check(frames: &[RgbImage]) -> Outcome {
    let thumbs: Vec<Vec<u8>> = frames
        .iter()
        .map(|f| {
            let gray = crate::imaging::to_gray(f);
            image::imageops::resize(&gray, 64, 64, image::imageops::FilterType::Triangle).into_raw()
        })
        .collect();
    let motion = thumbs
        .windows(2)
        .map(|pair| {
            let total: u64 = pair[0]
                .iter()
                .zip(&pair[1])
                .map(|(a, b)| u64::from(a.abs_diff(*b)))
                .sum();
            total as f64 / pair[0].len() as f64
        })
        .fold(0.0, f64::max);
    let passed = motion >= STATIC_MOTION;
    Outcome {
        passed,
        score: (motion / (motion + STATIC_MOTION) * 100.0).round() / 100.0,
        reason: (!passed).then_some(Reason::StaticFrames),
        motion,
    }
}
