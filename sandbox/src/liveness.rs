//! The liveness rule: whether a short frame sequence shows a face performing the asked action.
//! It finds the face in each frame, measures a few signals (what changed in the eye and mouth
//! zones while the head held still, how far the head moved up or down, which way the features
//! face) and decides the action from them. Tuned on the sandbox's own synthetic faces; it is a
//! toy, not a presentation-attack detector (a video that acts out the challenge passes).

use std::fmt;
use std::str::FromStr;

use image::{GrayImage, RgbImage, imageops};
use serde::{Deserialize, Serialize};

use crate::face;
use crate::imaging;

/// Frames per check, inclusive.
pub const MIN_FRAMES: usize = 2;
pub const MAX_FRAMES: usize = 30;
/// Frames are shrunk until their longer side is at most this many pixels before anything else.
pub const WORK_SIDE: u32 = 160;
/// `motion` (luma levels, see [`Signals::motion`]) under which the frames are static.
pub const STATIC_MOTION: f64 = 12.0;
/// A cell whose mean absolute luma difference is under this many levels has not changed: camera
/// noise and JPEG re-encoding stay under it.
pub const NOISE_FLOOR: f64 = 12.0;
/// `blink` and `open_mouth`: the least change in the asked zone ([`Signals::eyes`],
/// [`Signals::mouth`]).
pub const ZONE_CHANGE: f64 = 0.1;
/// `blink` and `open_mouth`: the least share of a pair's change that lies in the asked zone.
pub const CONCENTRATION: f64 = 0.75;
/// `open_mouth`: the changed cells of the mouth zone must move this much one way (darker in one
/// frame), as a share of how much they change.
pub const DARKENING: f64 = 0.5;
/// Turns: the least yaw ([`Signals::yaw_max`]), as a fraction of the face's width.
pub const TURN_YAW: f64 = 0.05;
/// `nod`: the least vertical move of the face between two frames, as a fraction of its width.
pub const NOD_SHIFT: f64 = 0.06;
/// Two frames hold the head still when the face's centre moves less than this fraction of its
/// width, either way, and its yaw changes less than this.
pub const STILL: f64 = 0.02;

/// The face grid the eye and mouth zones are measured on: cells of 1/12 of the face's width,
/// 12 across the face and 15 up from the chin; the top 8 rows (7/12 of the face's width or more
/// above the chin) are the eye zone, the rest the mouth zone.
const FACE_COLS: usize = 12;
const FACE_ROWS: usize = 15;
const EYE_ROWS: usize = 8;
/// The motion grid: 18 x 18 cells of 1/12 of the face's width around the first face found
/// (from a quarter width under the chin), or 16 x 12 cells over the whole frame without a face.
const MOTION_CELLS: usize = 18;
/// Yaw is measured on the rows between these heights above the chin (fractions of the face's
/// width).
const YAW_ROWS: (f64, f64) = (0.08, 0.5);

/// The action the user was asked to perform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Blink,
    OpenMouth,
    Nod,
    ShakeHead,
    /// The user turns to their own left: the face turns towards the image's right as the camera
    /// sees it, which is the left of a mirrored selfie preview.
    TurnLeft,
    /// The user turns to their own right: towards the image's left.
    TurnRight,
}

impl Action {
    pub const ALL: [Action; 6] = [
        Action::Blink,
        Action::OpenMouth,
        Action::Nod,
        Action::ShakeHead,
        Action::TurnLeft,
        Action::TurnRight,
    ];

    /// The contract's name: `blink`, `open_mouth`, ...
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Blink => "blink",
            Action::OpenMouth => "open_mouth",
            Action::Nod => "nod",
            Action::ShakeHead => "shake_head",
            Action::TurnLeft => "turn_left",
            Action::TurnRight => "turn_right",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown action {0:?}: expected blink, open_mouth, nod, shake_head, turn_left or turn_right"
)]
pub struct UnknownAction(pub String);

impl FromStr for Action {
    type Err = UnknownAction;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == s.trim())
            .ok_or_else(|| UnknownAction(s.to_owned()))
    }
}

/// Why a check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    /// The frames are (nearly) identical: a replayed photo.
    StaticFrames,
    /// Something moved, but not the asked action (or no face was found to judge it on).
    ActionNotDetected,
}

/// What the rule measured, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Signals {
    /// The largest change between any two frames: the mean absolute luma difference (0-255, each
    /// frame's mean removed first) of the most changed cell of the motion grid.
    pub motion: f64,
    /// Frames in which a face was found.
    pub faces: usize,
    /// The largest eye-zone change of a pair of frames that held the head still and changed
    /// mostly (at least [`CONCENTRATION`]) in the eye zone: the sum over the zone's cells of how
    /// far each cell's change exceeds [`NOISE_FLOOR`], divided by the face grid's 180 cells.
    pub eyes: f64,
    /// The same for the mouth zone, for pairs whose mouth zone also darkened one way.
    pub mouth: f64,
    /// The largest vertical move of the face's centre between two frames, as a fraction of its
    /// width, among pairs that moved at least twice as much vertically as sideways and kept
    /// their yaw.
    pub nod: f64,
    /// The most the features faced right and left: the mean offset of the lower face's features
    /// (its pixels that are not skin: nostrils, lips) from the middle of the face's outline on
    /// their row, as a fraction of the face's width; positive towards the image's right.
    pub yaw_max: f64,
    pub yaw_min: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    pub passed: bool,
    /// `r / (r + 1)` of the action's strength `r` (its signal over its threshold): 0.5 at the
    /// threshold, two decimals; at least 0.5 when passed and at most 0.49 when not.
    pub score: f64,
    pub reason: Option<Reason>,
    pub signals: Signals,
}

/// Judges a sequence of frames (at least two, in order) against the asked action.
#[must_use]
pub fn check(frames: &[RgbImage], action: Action) -> Outcome {
    let frames = prepare(frames);
    let mut signals = measure(&frames);
    signals.motion = motion(&frames);
    let (strength, reason) = if signals.motion < STATIC_MOTION {
        (signals.motion / STATIC_MOTION, Some(Reason::StaticFrames))
    } else {
        let r = strength(action, &signals);
        (r, (r < 1.0).then_some(Reason::ActionNotDetected))
    };
    let score = (strength / (strength + 1.0) * 100.0).round() / 100.0;
    let passed = reason.is_none();
    Outcome {
        passed,
        score: if passed {
            score.max(0.5)
        } else {
            score.min(0.49)
        },
        reason,
        signals,
    }
}

/// How strongly `signals` show `action`: its signal over its threshold, the smaller of two when
/// an action needs two; 1 or more passes.
fn strength(action: Action, s: &Signals) -> f64 {
    let yaw_range = (s.yaw_max - s.yaw_min) / (TURN_YAW / 2.0);
    let r = match action {
        Action::Blink => s.eyes / ZONE_CHANGE,
        Action::OpenMouth => s.mouth / ZONE_CHANGE,
        Action::Nod => s.nod / NOD_SHIFT,
        Action::TurnLeft => (s.yaw_max / TURN_YAW).min(yaw_range),
        Action::TurnRight => (-s.yaw_min / TURN_YAW).min(yaw_range),
        Action::ShakeHead => (s.yaw_max / TURN_YAW).min(-s.yaw_min / TURN_YAW),
    };
    r.max(0.0)
}

struct Frame {
    gray: GrayImage,
    face: Option<Geometry>,
}

/// Where the face is in one frame, in that frame's (working) pixels.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    /// The middle of the face's box, its bottom (the chin) and its width.
    xc: f64,
    chin: f64,
    width: f64,
    /// The centroid of the face's area.
    cx: f64,
    cy: f64,
    yaw: f64,
}

/// Shrinks every frame to the working size (the first frame's), turns it gray and finds the face.
fn prepare(frames: &[RgbImage]) -> Vec<Frame> {
    let mut size = None;
    frames
        .iter()
        .map(|f| {
            let (w, h) = *size.get_or_insert_with(|| work_size(f));
            let work = if f.dimensions() == (w, h) {
                f.clone()
            } else if f.width() > 4 * w {
                // Area averaging first: the triangle filter is slow on large frames.
                let big = imageops::thumbnail(f, 2 * w, 2 * h);
                imageops::resize(&big, w, h, imageops::FilterType::Triangle)
            } else {
                imageops::resize(f, w, h, imageops::FilterType::Triangle)
            };
            let gray = imaging::to_gray(&work);
            let face = face::find(&work).ok().map(|b| geometry(&b, &work));
            Frame { gray, face }
        })
        .collect()
}

/// A frame's working size: its longer side shrunk to [`WORK_SIDE`] (never enlarged).
fn work_size(f: &RgbImage) -> (u32, u32) {
    let (w, h) = f.dimensions();
    let longest = w.max(h);
    if longest <= WORK_SIDE {
        return (w, h);
    }
    let scale = f64::from(WORK_SIDE) / f64::from(longest);
    let side = |v: u32| ((f64::from(v) * scale).round() as u32).max(1);
    (side(w), side(h))
}

fn geometry(bx: &face::FaceBox, work: &RgbImage) -> Geometry {
    let width = f64::from(bx.x1 - bx.x0);
    let chin = f64::from(bx.y1);
    let (mut n, mut sx, mut sy) = (0.0, 0.0, 0.0);
    for (y, a, b) in bx.rows() {
        let len = f64::from(b - a);
        n += len;
        sx += len * f64::from(a + b) / 2.0;
        sy += len * (f64::from(y) + 0.5);
    }
    let n = f64::max(n, 1.0);
    // Yaw is read from the lower face (nostrils, lips), where hair never covers the outline:
    // its features are the pixels inside the outline that are not skin, less each row's edge,
    // where JPEG blends the face with what lies beside it.
    let lower: Vec<(u32, u32, u32)> = bx
        .rows()
        .filter(|&(y, _, _)| {
            let above_chin = chin - f64::from(y);
            above_chin > YAW_ROWS.0 * width && above_chin <= YAW_ROWS.1 * width
        })
        .collect();
    let margin = (0.05 * width).round() as u32;
    let (mut weight, mut offset) = (0.0, 0.0);
    for &(y, a, b) in &lower {
        let middle = f64::from(a + b) / 2.0;
        for x in a + margin..b.saturating_sub(margin) {
            if !face::is_skin(*work.get_pixel(x, y)) {
                weight += 1.0;
                offset += f64::from(x) + 0.5 - middle;
            }
        }
    }
    Geometry {
        width,
        chin,
        xc: f64::from(bx.x0 + bx.x1) / 2.0,
        cx: sx / n,
        cy: sy / n,
        yaw: if weight > 0.0 {
            offset / weight / width
        } else {
            0.0
        },
    }
}

/// A grid of cells over a `width` x `height` patch: the cell of each pixel, row-major.
struct Grid {
    width: u32,
    height: u32,
    cols: usize,
    cells: usize,
    cell_of: Vec<usize>,
}

impl Grid {
    fn new(width: u32, height: u32, cols: usize, rows: usize) -> Self {
        let (width, height) = (width.max(1), height.max(1));
        let cell_of = (0..height)
            .flat_map(|v| {
                (0..width).map(move |u| {
                    let r = v as usize * rows / height as usize;
                    let k = u as usize * cols / width as usize;
                    r * cols + k
                })
            })
            .collect();
        Self {
            width,
            height,
            cols,
            cells: cols * rows,
            cell_of,
        }
    }

    /// The patch of `gray` whose top-left corner is at (`x0`, `y0`), with pixels outside the
    /// image repeating its edge, less the patch's mean luma.
    fn sample(&self, gray: &GrayImage, x0: i64, y0: i64) -> Vec<f32> {
        let clamp = |v: i64, max: u32| v.clamp(0, i64::from(max) - 1) as u32;
        let mut patch: Vec<f32> = (0..i64::from(self.height))
            .flat_map(|v| {
                (0..i64::from(self.width)).map(move |u| {
                    let x = clamp(x0 + u, gray.width());
                    let y = clamp(y0 + v, gray.height());
                    f32::from(gray.get_pixel(x, y)[0])
                })
            })
            .collect();
        let mean = patch.iter().sum::<f32>() / patch.len() as f32;
        for p in &mut patch {
            *p -= mean;
        }
        patch
    }

    /// Per cell: the mean absolute and the mean signed difference `a - b`.
    fn compare(&self, a: &[f32], b: &[f32]) -> Vec<(f64, f64)> {
        let mut sums = vec![(0.0f64, 0.0f64, 0u32); self.cells];
        for ((&x, &y), &cell) in a.iter().zip(b).zip(&self.cell_of) {
            let d = f64::from(x - y);
            let s = &mut sums[cell];
            s.0 += d.abs();
            s.1 += d;
            s.2 += 1;
        }
        sums.into_iter()
            .map(|(abs, signed, n)| {
                let n = f64::from(n.max(1));
                (abs / n, signed / n)
            })
            .collect()
    }
}

fn pairs(n: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..n).flat_map(move |i| (i + 1..n).map(move |j| (i, j)))
}

/// The largest change between two frames on the motion grid (see [`Signals::motion`]).
fn motion(frames: &[Frame]) -> f64 {
    let Some(first) = frames.first() else {
        return 0.0;
    };
    let (grid, x0, y0) = match frames.iter().find_map(|f| f.face) {
        Some(g) => {
            let cell = g.width / 12.0;
            let side = (cell * MOTION_CELLS as f64).round() as u32;
            let grid = Grid::new(side, side, MOTION_CELLS, MOTION_CELLS);
            let x0 = (g.xc - cell * MOTION_CELLS as f64 / 2.0).round() as i64;
            let y0 = (g.chin + g.width / 4.0).round() as i64 - i64::from(side);
            (grid, x0, y0)
        }
        None => (
            Grid::new(first.gray.width(), first.gray.height(), 16, 12),
            0,
            0,
        ),
    };
    let patches: Vec<Vec<f32>> = frames
        .iter()
        .map(|f| grid.sample(&f.gray, x0, y0))
        .collect();
    pairs(patches.len())
        .flat_map(|(i, j)| grid.compare(&patches[i], &patches[j]))
        .map(|(abs, _)| abs)
        .fold(0.0, f64::max)
}

/// Everything but `motion`, from the frames with a face.
fn measure(frames: &[Frame]) -> Signals {
    let faces: Vec<(&GrayImage, Geometry)> = frames
        .iter()
        .filter_map(|f| f.face.map(|g| (&f.gray, g)))
        .collect();
    let mut s = Signals {
        faces: faces.len(),
        ..Signals::default()
    };
    if faces.len() < 2 {
        return s;
    }
    let mut widths: Vec<f64> = faces.iter().map(|(_, g)| g.width).collect();
    widths.sort_by(f64::total_cmp);
    let width = widths[widths.len() / 2];
    let cell = width / FACE_COLS as f64;
    let grid = Grid::new(
        (cell * FACE_COLS as f64).round() as u32,
        (cell * FACE_ROWS as f64).round() as u32,
        FACE_COLS,
        FACE_ROWS,
    );
    // Each frame's face grid sits on that frame's face, so a head that moved still compares
    // eye with eye and mouth with mouth.
    let anchors: Vec<(i64, i64)> = faces
        .iter()
        .map(|(_, g)| {
            let x0 = (g.xc - width / 2.0).round() as i64;
            (x0, g.chin.round() as i64 - i64::from(grid.height))
        })
        .collect();
    s.yaw_max = faces.iter().map(|(_, g)| g.yaw).fold(f64::MIN, f64::max);
    s.yaw_min = faces.iter().map(|(_, g)| g.yaw).fold(f64::MAX, f64::min);
    for (i, j) in pairs(faces.len()) {
        let (a, b) = (faces[i].1, faces[j].1);
        let dx = (a.cx - b.cx).abs() / width;
        let dy = (a.cy - b.cy).abs() / width;
        let dyaw = (a.yaw - b.yaw).abs();
        if dyaw < STILL && dx <= dy / 2.0 {
            s.nod = s.nod.max(dy);
        }
        if dx >= STILL || dy >= STILL || dyaw >= STILL {
            continue;
        }
        // The head held still: both grids sit where the first frame's does, the second moved by
        // up to a pixel to where it matches best (noise moves the face's box by a pixel).
        let (x0, y0) = anchors[i];
        let first = grid.sample(faces[i].0, x0, y0);
        let cells = (-1..=1)
            .flat_map(|dy| (-1..=1).map(move |dx| (dx, dy)))
            .map(|(dx, dy)| grid.compare(&first, &grid.sample(faces[j].0, x0 + dx, y0 + dy)))
            .min_by(|a, b| {
                let total = |c: &[(f64, f64)]| c.iter().map(|(abs, _)| abs).sum::<f64>();
                total(a).total_cmp(&total(b))
            })
            .unwrap_or_default();
        let (mut eyes, mut mouth, mut signed, mut changed) = (0.0, 0.0, 0.0, 0.0);
        for (cell, (abs, sgn)) in cells.into_iter().enumerate() {
            let excess = abs - NOISE_FLOOR;
            if excess <= 0.0 {
                continue;
            }
            if cell / grid.cols < EYE_ROWS {
                eyes += excess;
            } else {
                mouth += excess;
                signed += sgn;
                changed += abs;
            }
        }
        let (eyes, mouth) = (eyes / grid.cells as f64, mouth / grid.cells as f64);
        let total = eyes + mouth;
        if total <= 0.0 {
            continue;
        }
        if eyes >= CONCENTRATION * total {
            s.eyes = s.eyes.max(eyes);
        }
        if mouth >= CONCENTRATION * total && signed.abs() >= DARKENING * changed {
            s.mouth = s.mouth.max(mouth);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use image::{DynamicImage, Rgb};

    use super::*;
    use crate::acting::{liveness_frames_rgb, liveness_video_frames};
    use crate::fixtures::Person;
    use crate::prng::SplitMix64;
    use crate::{id_number, y4m};

    fn person(k: usize) -> Person {
        let first17 = format!("4401061988{:02}{:02}{:03}", 1 + k % 12, 1 + k % 28, k);
        let id = format!("{first17}{}", id_number::check_digit(&first17));
        Person::new("测试", &id, None).expect("a valid person")
    }

    fn jpeg(frame: &RgbImage, quality: u8) -> RgbImage {
        let bytes = imaging::encode_jpeg(&DynamicImage::ImageRgb8(frame.clone()), quality);
        imaging::decode(&bytes).expect("a JPEG we just encoded")
    }

    /// Whether `asked` should pass on frames performing `performed`: a head shake turns both ways.
    fn should_pass(performed: Action, asked: Action) -> bool {
        performed == asked
            || (performed == Action::ShakeHead
                && matches!(asked, Action::TurnLeft | Action::TurnRight))
    }

    #[test]
    fn each_action_passes_on_frames_that_perform_it_and_no_other() {
        for k in 0..4 {
            let p = person(k);
            for performed in Action::ALL {
                let frames: Vec<RgbImage> = liveness_frames_rgb(&p, performed, 3)
                    .iter()
                    .map(|f| jpeg(f, 85))
                    .collect();
                for asked in Action::ALL {
                    let o = check(&frames, asked);
                    assert_eq!(
                        o.passed,
                        should_pass(performed, asked),
                        "person {k}, {performed} frames asked {asked}: {o:?}"
                    );
                    if o.passed {
                        assert!(o.score >= 0.6, "a weak pass: {o:?}");
                    } else {
                        assert_eq!(o.reason, Some(Reason::ActionNotDetected), "{o:?}");
                        assert!(o.score <= 0.49, "{o:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn frames_a_browser_samples_from_the_video_at_any_phase_pass() {
        // Chromium plays the .y4m; the page grabs frames at 10-15 fps from anywhere in an
        // action's stretch and sends them as JPEG.
        for k in [5, 6] {
            let p = person(k);
            let mut video = Vec::new();
            y4m::write_y4m(
                liveness_video_frames(&p, &Action::ALL, 30, 1.0),
                30,
                &mut video,
            )
            .expect("writes to a Vec");
            let (fps, played) = y4m::read_y4m(&video).expect("reads back");
            assert_eq!((fps, played.len()), (30, 6 * 30));
            let played: Vec<RgbImage> = played.iter().map(|f| jpeg(f, 70)).collect();
            for (n, performed) in Action::ALL.into_iter().enumerate() {
                let stretch = &played[n * 30..(n + 1) * 30];
                for (step, count) in [(3.0, 3), (2.0, 3), (2.5, 3), (2.0, 12)] {
                    for phase in [0.0, 0.8, 1.5, 2.9] {
                        let frames: Vec<RgbImage> = (0..count)
                            .map(|i| {
                                let at = (phase + step * f64::from(i)) as usize;
                                stretch[at.min(29)].clone()
                            })
                            .collect();
                        let o = check(&frames, performed);
                        assert!(
                            o.passed,
                            "person {k}, {performed}: {count} frames every {step} from {phase}: {o:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_same_frame_repeated_is_static_whatever_the_action() {
        let frame = liveness_frames_rgb(&person(0), Action::Blink, 1).remove(0);
        for asked in Action::ALL {
            let o = check(&[frame.clone(), frame.clone(), frame.clone()], asked);
            assert_eq!(o.reason, Some(Reason::StaticFrames), "{o:?}");
            assert!(!o.passed);
            assert!(o.score <= 0.49);
        }
    }

    #[test]
    fn a_still_photo_with_camera_noise_and_flicker_is_static() {
        let frame = liveness_frames_rgb(&person(1), Action::Blink, 1).remove(0);
        let mut r = SplitMix64::new(42);
        let frames: Vec<RgbImage> = (0..12)
            .map(|i| {
                let flicker = if i % 2 == 0 { 4.0 } else { -4.0 };
                let mut noisy = frame.clone();
                for p in noisy.pixels_mut() {
                    for c in 0..3 {
                        let v = f32::from(p[c]) + flicker + r.range(-12.0, 12.0);
                        p[c] = v.round().clamp(0.0, 255.0) as u8;
                    }
                }
                jpeg(&noisy, 80)
            })
            .collect();
        for asked in Action::ALL {
            let o = check(&frames, asked);
            assert_eq!(o.reason, Some(Reason::StaticFrames), "{asked}: {o:?}");
            assert!(o.signals.motion < STATIC_MOTION / 2.0, "{o:?}");
        }
    }

    #[test]
    fn turn_left_is_the_users_left_the_images_right() {
        let p = person(2);
        let frames = liveness_frames_rgb(&p, Action::TurnLeft, 4);
        assert!(check(&frames, Action::TurnLeft).signals.yaw_max > TURN_YAW);
        // The same frames mirrored, as a selfie preview shows them: now a turn to the right.
        let mirrored: Vec<RgbImage> = frames.iter().map(imageops::flip_horizontal).collect();
        assert!(check(&mirrored, Action::TurnRight).passed);
        assert!(!check(&mirrored, Action::TurnLeft).passed);
    }

    #[test]
    fn moving_frames_without_a_face_never_pass() {
        let frames: Vec<RgbImage> = (0..4u8)
            .map(|i| {
                RgbImage::from_fn(64, 48, |x, _| {
                    Rgb([if x < 16 * u32::from(i) { 250 } else { 10 }; 3])
                })
            })
            .collect();
        for asked in Action::ALL {
            let o = check(&frames, asked);
            assert_eq!(o.reason, Some(Reason::ActionNotDetected), "{o:?}");
            assert_eq!(o.signals.faces, 0);
        }
    }

    #[test]
    fn the_selfie_fixture_blinks() {
        let f = crate::fixtures(&person(3));
        let frames: Vec<RgbImage> = f
            .liveness
            .iter()
            .map(|b| imaging::decode(b).expect("a fixture JPEG"))
            .collect();
        assert!(check(&frames, Action::Blink).passed);
        assert!(!check(&frames, Action::OpenMouth).passed);
        assert!(!check(&frames, Action::TurnLeft).passed);
    }

    #[test]
    fn actions_parse_from_and_print_as_the_contracts_names() {
        for a in Action::ALL {
            assert_eq!(a.as_str().parse::<Action>(), Ok(a));
            assert_eq!(
                serde_json::to_string(&a).expect("serialises"),
                format!("\"{a}\"")
            );
        }
        assert!("dance".parse::<Action>().is_err());
        assert_eq!(
            serde_json::to_string(&Reason::ActionNotDetected).expect("serialises"),
            "\"ACTION_NOT_DETECTED\""
        );
    }
}
