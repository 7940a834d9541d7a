//! Liveness from the 68 face landmarks: whether a short frame sequence shows one live person
//! performing the asked action (`POST /v1/liveness/check`).
//!
//! # How a sequence is judged
//! 1. Every frame: dlib's HOG finds the face (no CNN: it costs seconds a frame) and the 68-point
//!    shape predictor places its landmarks ([`crate::face::FaceEngine::frame`]); its embedding is
//!    computed too. A frame with several faces fails the check (`MULTIPLE_FACES`); a frame without
//!    one is left out. Fewer than two frames with a face: `ACTION_NOT_DETECTED`.
//! 2. **One person throughout**: every frame's embedding must be within dlib's distance 0.6 of the
//!    first frame's, or the check fails with `FACE_CHANGED` (a photograph swapped in half-way).
//!    With a `reference` image (the ID card's portrait), the first frame must also be within 0.6
//!    of it, or `FACE_MISMATCH`.
//! 3. **Replay**: `motion`, the largest displacement of any landmark from its place in the first
//!    frame, in inter-ocular distances. Under [`STATIC_MOTION`] the frames are one still picture
//!    (a replayed photo, or the same frame sent again): `STATIC_FRAMES`.
//! 4. **The action**, from four measures per frame ([`Measures`]) and a strength `r` per action
//!    that reaches 1 at its threshold:
//!    - `blink`: the eye aspect ratio (EAR, Soukupová and Čech 2016) drops by [`BLINK_DROP`] of
//!      the open value and recovers: some frame's EAR is at most `1 − BLINK_DROP` of the highest
//!      EAR both before and after it;
//!    - `open_mouth`: the inner mouth aspect ratio (MAR) rises by [`MOUTH_RISE`] over its lowest;
//!    - `turn_left` / `turn_right`: yaw, the nose tip's position along the jaw line (0 = centred,
//!      positive towards the image's right), moves by [`TURN_YAW`] from the first frame, towards
//!      the image's right for the user's own left (frames as the camera captured them);
//!    - `nod`: pitch, the nose tip's place between the eyes and the upper lip, varies by
//!      [`NOD_PITCH`]; `shake_head`: both turns.
//!
//! `score = r / (r + 1)` (0.5 at the threshold, two decimals), 0 for an identity failure.
//!
//! It is a challenge-response check, not a presentation-attack detector: a video of the person
//! acting out the challenge passes.

use image::RgbImage;
use serde::Serialize;

use crate::face::{self, FaceEngine, FaceError};

pub use kyc_sandbox::vendor::Action;

/// Frames per check, inclusive (the contract's bounds).
pub const MIN_FRAMES: usize = 2;
pub const MAX_FRAMES: usize = 30;
/// `motion` (inter-ocular distances) under which the frames are one still picture.
pub const STATIC_MOTION: f64 = 0.03;
/// `blink`: the least relative drop of the eye aspect ratio.
pub const BLINK_DROP: f64 = 0.2;
/// `open_mouth`: the least rise of the mouth aspect ratio.
pub const MOUTH_RISE: f64 = 0.2;
/// `turn_left` / `turn_right`: the least change of yaw from the first frame.
pub const TURN_YAW: f64 = 0.08;
/// `nod`: the least range of pitch.
pub const NOD_PITCH: f64 = 0.07;

/// Why a check failed: the contract's two reasons and kyc-vision's identity reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    /// The frames are one still picture: a replayed photo.
    StaticFrames,
    /// The frames change, but not by the asked action, or fewer than two frames show a face.
    ActionNotDetected,
    /// A frame shows more than one face.
    MultipleFaces,
    /// A frame shows another person than the first frame.
    FaceChanged,
    /// The first frame's person is not the reference portrait's.
    FaceMismatch,
}

/// One frame's geometry, from its 68 landmarks.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Measures {
    /// Mean eye aspect ratio of both eyes: `(|p2−p6| + |p3−p5|) / (2 |p1−p4|)` (points 36–41 and
    /// 42–47); about 0.3 open, under 0.2 closed.
    pub ear: f64,
    /// Inner mouth aspect ratio: `(|61−67| + |62−66| + |63−65|) / (2 |60−64|)`; near 0 closed.
    pub mar: f64,
    /// Nose tip (30) projected on the jaw line from point 0 to point 16, less one half.
    pub yaw: f64,
    /// The nose tip (30) projected on the line from the eye corners' centre (36, 39, 42, 45) to
    /// the top of the upper lip (51), as a fraction of it: the nose protrudes, so nodding moves it
    /// along that line. Neither a blink nor an open mouth moves those points.
    pub pitch: f64,
    /// Distance between the eyes' centres, in pixels (the unit of `motion`).
    pub eye_distance: f64,
}

type Point = (f32, f32);

fn at(l: &[Point], i: usize) -> (f64, f64) {
    (f64::from(l[i].0), f64::from(l[i].1))
}

fn dist(a: (f64, f64), b: (f64, f64)) -> f64 {
    (a.0 - b.0).hypot(a.1 - b.1)
}

fn mean_of(l: &[Point], points: impl IntoIterator<Item = usize>) -> (f64, f64) {
    let (n, sx, sy) = points.into_iter().fold((0.0, 0.0, 0.0), |(n, sx, sy), i| {
        let p = at(l, i);
        (n + 1.0, sx + p.0, sy + p.1)
    });
    (sx / n, sy / n)
}

/// Where `p` falls on the segment from `a` to `b`: 0 at `a`, 1 at `b` (projected).
fn along(p: (f64, f64), a: (f64, f64), b: (f64, f64)) -> f64 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = (dx * dx + dy * dy).max(f64::EPSILON);
    ((p.0 - a.0) * dx + (p.1 - a.1) * dy) / len2
}

impl Measures {
    /// The measures of one face's 68 landmarks (iBUG 300-W order).
    ///
    /// # Panics
    /// When `l` has fewer than 68 points.
    #[must_use]
    pub fn of(l: &[Point]) -> Self {
        assert!(l.len() >= 68, "68 landmarks expected, got {}", l.len());
        let eye = |o: usize| {
            let p = |k: usize| at(l, o + k);
            (dist(p(1), p(5)) + dist(p(2), p(4))) / (2.0 * dist(p(0), p(3)).max(f64::EPSILON))
        };
        let mar =
            (dist(at(l, 61), at(l, 67)) + dist(at(l, 62), at(l, 66)) + dist(at(l, 63), at(l, 65)))
                / (2.0 * dist(at(l, 60), at(l, 64)).max(f64::EPSILON));
        // The eye line through the corners, which a blink does not move.
        let eyes = mean_of(l, [36, 39, 42, 45]);
        Measures {
            ear: (eye(36) + eye(42)) / 2.0,
            mar,
            yaw: along(at(l, 30), at(l, 0), at(l, 16)) - 0.5,
            pitch: along(at(l, 30), eyes, at(l, 51)),
            eye_distance: dist(mean_of(l, 36..42), mean_of(l, 42..48)),
        }
    }
}

/// The strength of `action` in a sequence's measures: 1 at its threshold (see the module
/// documentation). `frames` holds at least two entries.
#[must_use]
pub fn strength(action: Action, frames: &[Measures]) -> f64 {
    let turn = |sign: f64| {
        let first = frames[0].yaw;
        frames
            .iter()
            .map(|m| sign * (m.yaw - first))
            .fold(0.0, f64::max)
            / TURN_YAW
    };
    match action {
        Action::Blink => {
            let mut best: f64 = 0.0;
            for j in 1..frames.len().saturating_sub(1) {
                let before = frames[..j].iter().map(|m| m.ear).fold(0.0, f64::max);
                let after = frames[j + 1..].iter().map(|m| m.ear).fold(0.0, f64::max);
                let open = before.min(after);
                if open > 0.0 {
                    best = best.max((1.0 - frames[j].ear / open) / BLINK_DROP);
                }
            }
            best
        }
        Action::OpenMouth => {
            let (lo, hi) = range(frames.iter().map(|m| m.mar));
            (hi - lo) / MOUTH_RISE
        }
        Action::Nod => {
            let (lo, hi) = range(frames.iter().map(|m| m.pitch));
            (hi - lo) / NOD_PITCH
        }
        Action::TurnLeft => turn(1.0),
        Action::TurnRight => turn(-1.0),
        Action::ShakeHead => turn(1.0).min(turn(-1.0)),
    }
}

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

/// The largest displacement of any landmark from its place in the first frame, in `unit`s (the
/// first frame's inter-ocular distance).
#[must_use]
pub fn motion(landmarks: &[Vec<Point>], unit: f64) -> f64 {
    let Some(first) = landmarks.first() else {
        return 0.0;
    };
    let unit = unit.max(1.0);
    landmarks
        .iter()
        .flat_map(|l| {
            l.iter().zip(first).map(|(&p, &q)| {
                dist(
                    (f64::from(p.0), f64::from(p.1)),
                    (f64::from(q.0), f64::from(q.1)),
                )
            })
        })
        .fold(0.0, f64::max)
        / unit
}

/// What a check measured, returned beside the verdict (no image, nothing that identifies).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Signals {
    /// Frames in which a face was found.
    pub faces: usize,
    /// See [`motion`].
    pub motion: f64,
    /// The largest embedding distance of a frame from the first frame.
    pub max_distance: f64,
    /// The embedding distance of the first frame from the reference, when one was given.
    pub reference_distance: Option<f64>,
    pub ear: (f64, f64),
    pub mar: (f64, f64),
    pub yaw: (f64, f64),
    pub pitch: (f64, f64),
}

/// The verdict on a sequence.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Outcome {
    pub passed: bool,
    pub score: f64,
    pub reason: Option<Reason>,
    pub signals: Signals,
}

impl Outcome {
    fn failed(reason: Reason, signals: Signals) -> Self {
        Outcome {
            passed: false,
            score: 0.0,
            reason: Some(reason),
            signals,
        }
    }
}

/// Judges `frames` (in capture order) against `action`; with `reference`, the person must also be
/// the reference's (its embedding, computed by the caller with the full detection ladder).
///
/// # Errors
/// Only a broken model ([`FaceError::Model`]); everything about the frames is an [`Outcome`].
pub fn check(
    engine: &FaceEngine,
    frames: &[RgbImage],
    action: Action,
    reference: Option<&[f32]>,
) -> Result<Outcome, FaceError> {
    let mut landmarks = Vec::with_capacity(frames.len());
    let mut embeddings = Vec::with_capacity(frames.len());
    let mut signals = Signals::default();
    for frame in frames {
        match engine.frame(frame, true) {
            Ok(f) => {
                landmarks.push(f.landmarks);
                embeddings.extend(f.embedding);
            }
            Err(FaceError::NoFace) => {}
            Err(FaceError::MultipleFaces(_)) => {
                return Ok(Outcome::failed(Reason::MultipleFaces, signals));
            }
            Err(e @ FaceError::Model { .. }) => return Err(e),
        }
    }
    signals.faces = landmarks.len();
    if landmarks.len() < MIN_FRAMES {
        return Ok(Outcome::failed(Reason::ActionNotDetected, signals));
    }
    signals.max_distance = embeddings
        .iter()
        .map(|e| face::distance(&embeddings[0], e))
        .fold(0.0, f64::max);
    if signals.max_distance > face::DLIB_DISTANCE {
        return Ok(Outcome::failed(Reason::FaceChanged, signals));
    }
    if let Some(r) = reference {
        let d = face::distance(&embeddings[0], r);
        signals.reference_distance = Some(d);
        if d > face::DLIB_DISTANCE {
            return Ok(Outcome::failed(Reason::FaceMismatch, signals));
        }
    }
    let measures: Vec<Measures> = landmarks.iter().map(|l| Measures::of(l)).collect();
    signals.motion = motion(&landmarks, measures[0].eye_distance);
    signals.ear = range(measures.iter().map(|m| m.ear));
    signals.mar = range(measures.iter().map(|m| m.mar));
    signals.yaw = range(measures.iter().map(|m| m.yaw));
    signals.pitch = range(measures.iter().map(|m| m.pitch));
    let (r, reason) = if signals.motion < STATIC_MOTION {
        (0.0, Some(Reason::StaticFrames))
    } else {
        let r = strength(action, &measures);
        (r, (r < 1.0).then_some(Reason::ActionNotDetected))
    };
    let score = (r / (r + 1.0) * 100.0).round() / 100.0;
    Ok(Outcome {
        passed: reason.is_none(),
        // 0.5 is the threshold: a strength just under 1 must not round up to it.
        score: if reason.is_none() {
            score
        } else {
            score.min(0.49)
        },
        reason,
        signals,
    })
}
