//! A synthetic face acting out the liveness actions, for tests: frames (RGB or JPEG) and videos
//! of a whole challenge. The face is a person's fixture face; every action alternates between a
//! rest pose and the acted pose, so any few consecutive frames show it. Judging is `liveness`'s.

use std::io::{self, Write};

use image::{DynamicImage, Rgb, RgbImage};

use crate::face::{Face, Pose};
use crate::fixtures::{JPEG_QUALITY, Person};
use crate::imaging;
use crate::liveness::Action;
use crate::y4m;

/// Size of every frame drawn here: a webcam's 320x240.
pub const WIDTH: u32 = 320;
pub const HEIGHT: u32 = 240;
/// In videos, the rest and the acted pose take turns every this many seconds (every 3 frames at
/// 30 fps), so frames sampled at 10-15 fps from anywhere in an action's stretch show both.
pub const POSE_SECONDS: f64 = 0.1;

/// The face at rest: frontal, eyes open, mouth closed, centred.
const REST: Pose = Pose::new(160.0, 112.0, 46.0, 1.0);
/// How far a turn shifts the features (face units: half the face's width), and the head with them.
const TURN_YAW: f32 = 0.22;
const TURN_SHIFT: f32 = 0.12;
/// How far a nod lowers the head (face units).
const NOD_DROP: f32 = 0.3;

/// The pose acting out `action`.
fn acted(action: Action) -> Pose {
    let s = REST.scale;
    let turned = |side: f32| Pose {
        yaw: side * TURN_YAW,
        cx: REST.cx + side * TURN_SHIFT * s,
        ..REST
    };
    match action {
        Action::Blink => Pose {
            eyes_closed: true,
            ..REST
        },
        Action::OpenMouth => Pose {
            mouth_open: 1.0,
            ..REST
        },
        Action::Nod => Pose {
            cy: REST.cy + NOD_DROP * s,
            ..REST
        },
        // The user's left is the image's right as the camera sees them.
        Action::TurnLeft | Action::ShakeHead => turned(1.0),
        Action::TurnRight => turned(-1.0),
    }
}

/// The pose `action` rests in between: frontal, except a head shake, which swings from one
/// side to the other.
fn rest(action: Action) -> Pose {
    match action {
        Action::ShakeHead => acted(Action::TurnRight),
        _ => REST,
    }
}

/// One 320x240 frame of `face` in `pose`, on the selfie's background.
#[must_use]
pub fn draw(face: &Face, pose: Pose) -> RgbImage {
    let mut img = backdrop(WIDTH, HEIGHT);
    face.draw(&mut img, pose);
    img
}

/// The selfie's background: a vertical blue-grey gradient, `width` x `height`.
pub(crate) fn backdrop(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |_, y| {
        let t = y as f32 / height as f32;
        Rgb([
            (180.0 - 30.0 * t) as u8,
            (200.0 - 30.0 * t) as u8,
            (215.0 - 55.0 * t) as u8,
        ])
    })
}

/// `n` 320x240 frames of `person`'s face performing `action`: the rest pose, then the acted pose,
/// and so on (three frames blink once: open, closed, open).
#[must_use]
pub fn liveness_frames_rgb(person: &Person, action: Action, n: usize) -> Vec<RgbImage> {
    let face = person.face();
    let poses = [draw(&face, rest(action)), draw(&face, acted(action))];
    (0..n).map(|i| poses[i % 2].clone()).collect()
}

/// [`liveness_frames_rgb`] as JPEG bytes (quality 85), ready for `/v1/liveness/check`.
#[must_use]
pub fn liveness_frames(person: &Person, action: Action, n: usize) -> Vec<Vec<u8>> {
    let face = person.face();
    let jpeg =
        |pose| imaging::encode_jpeg(&DynamicImage::ImageRgb8(draw(&face, pose)), JPEG_QUALITY);
    let poses = [jpeg(rest(action)), jpeg(acted(action))];
    (0..n).map(|i| poses[i % 2].clone()).collect()
}

/// The frames of a video performing `actions` one after the other, `seconds_per_action` each,
/// at `fps`. Within an action's stretch the rest and acted poses take turns every
/// [`POSE_SECONDS`]; a stretch always starts at rest.
pub fn liveness_video_frames(
    person: &Person,
    actions: &[Action],
    fps: u32,
    seconds_per_action: f64,
) -> impl Iterator<Item = RgbImage> {
    let face = person.face();
    let per_action = frames_in(fps, seconds_per_action);
    let stretches: Vec<[RgbImage; 2]> = actions
        .iter()
        .map(|&a| [draw(&face, rest(a)), draw(&face, acted(a))])
        .collect();
    stretches
        .into_iter()
        .flat_map(move |poses| (0..per_action).map(move |k| poses[pose_at(k, fps)].clone()))
}

/// The frames of a still video: the rest pose, unchanging, for `seconds`.
pub fn still_video_frames(
    person: &Person,
    fps: u32,
    seconds: f64,
) -> impl Iterator<Item = RgbImage> {
    let frame = draw(&person.face(), REST);
    std::iter::repeat_n(frame, frames_in(fps, seconds))
}

/// Writes [`liveness_video_frames`] as a YUV4MPEG2 (`.y4m`) video for Chromium's
/// `--use-file-for-fake-video-capture` (which loops it).
///
/// # Errors
/// When `out` fails, or `actions` is empty or `fps` is 0.
pub fn liveness_video(
    person: &Person,
    actions: &[Action],
    fps: u32,
    seconds_per_action: f64,
    out: &mut impl Write,
) -> io::Result<()> {
    y4m::write_y4m(
        liveness_video_frames(person, actions, fps, seconds_per_action),
        fps,
        out,
    )
}

/// Writes [`still_video_frames`] as a `.y4m` video: a replayed photo, which fails liveness.
///
/// # Errors
/// When `out` fails, or `fps` is 0.
pub fn still_video(
    person: &Person,
    fps: u32,
    seconds: f64,
    out: &mut impl Write,
) -> io::Result<()> {
    y4m::write_y4m(still_video_frames(person, fps, seconds), fps, out)
}

/// Frames in `seconds` at `fps`: at least one.
fn frames_in(fps: u32, seconds: f64) -> usize {
    ((f64::from(fps) * seconds).round() as usize).max(1)
}

/// Which pose (0 rest, 1 acted) the `k`th frame of a stretch shows.
fn pose_at(k: usize, fps: u32) -> usize {
    let t = k as f64 / f64::from(fps.max(1));
    ((t / POSE_SECONDS + 1e-9).floor() as usize) % 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person() -> Person {
        Person::new("张三", "11010519491231002X", None).expect("a valid person")
    }

    #[test]
    fn a_video_holds_each_action_for_its_seconds_switching_pose_every_tenth_of_a_second() {
        let p = person();
        let frames: Vec<RgbImage> =
            liveness_video_frames(&p, &[Action::Blink, Action::Nod], 30, 0.5).collect();
        assert_eq!(frames.len(), 30);
        let (open, closed) = (&frames[0], &frames[3]);
        assert_ne!(open, closed);
        for (k, f) in frames[..15].iter().enumerate() {
            assert_eq!(f, if (k / 3) % 2 == 0 { open } else { closed }, "frame {k}");
        }
        assert_eq!(&frames[15], open, "each stretch starts at rest");
        assert_ne!(frames[18], frames[15], "then nods");
        assert!(frames.iter().all(|f| f.dimensions() == (WIDTH, HEIGHT)));
    }

    #[test]
    fn frames_alternate_rest_and_action_and_a_still_video_never_changes() {
        let p = person();
        let frames = liveness_frames(&p, Action::OpenMouth, 4);
        assert_eq!(frames.len(), 4);
        assert_eq!(frames[0], frames[2]);
        assert_ne!(frames[0], frames[1]);
        assert!(frames[0].starts_with(&[0xFF, 0xD8, 0xFF]));
        let still: Vec<RgbImage> = still_video_frames(&p, 15, 2.0).collect();
        assert_eq!(still.len(), 30);
        assert!(still.iter().all(|f| f == &still[0]));
    }
}
