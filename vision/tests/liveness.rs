//! Liveness on real portraits: every action's synthesized sequence (fixtures::acting, JPEG-encoded
//! as a camera would send it) passes, the same portrait held still fails as a replay, and a
//! sequence whose person changes, or who is not the reference portrait, fails for that reason.
//! `KYC_VISION_MEASURES=1 ... --nocapture` prints the measures per frame (the table in
//! vision/README.md); `KYC_VISION_DUMP=DIR` also writes the frames there.

use image::{DynamicImage, RgbImage};
use kyc_vision::face::FaceEngine;
use kyc_vision::fixtures::{self, acting};
use kyc_vision::imaging::{self, DecodeLimits};
use kyc_vision::liveness::{self, Action, Measures, Reason};
use kyc_vision::models;

fn engine() -> FaceEngine {
    FaceEngine::load(&models::dir(None)).unwrap_or_else(|e| panic!("{e}"))
}

/// The frames as a camera would send them: JPEG at quality 85, decoded again.
fn camera(frames: Vec<RgbImage>) -> Vec<RgbImage> {
    frames
        .into_iter()
        .map(|f| {
            let jpeg = kyc_sandbox::imaging::encode_jpeg(&DynamicImage::ImageRgb8(f), 85);
            imaging::decode(&jpeg, DecodeLimits::default()).expect("decodes")
        })
        .collect()
}

fn portraits() -> Vec<RgbImage> {
    fixtures::photographs(&models::dir(None)).expect("photographs")
}

fn print_measures(engine: &FaceEngine, who: usize, action: Action, frames: &[RgbImage]) {
    if let Some(dir) = std::env::var_os("KYC_VISION_DUMP") {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        for (i, f) in frames.iter().enumerate() {
            f.save(dir.join(format!("{who}_{action}_{i}.png")))
                .expect("save");
        }
    }
    for (i, f) in frames.iter().enumerate() {
        match engine.frame(f, false) {
            Ok(face) => {
                let m = Measures::of(&face.landmarks);
                println!(
                    "portrait {who} {action:<10} frame {i}: ear {:.3} mar {:.3} yaw {:+.3} pitch {:.3}",
                    m.ear, m.mar, m.yaw, m.pitch
                );
            }
            Err(e) => println!("portrait {who} {action:<10} frame {i}: {e}"),
        }
    }
}

#[test]
fn every_action_passes_on_its_sequence_and_a_still_sequence_fails_as_a_replay() {
    let engine = engine();
    let mut failures = Vec::new();
    for (who, photo) in portraits().iter().enumerate() {
        let rest = engine
            .frame(photo, false)
            .expect("the portrait has one face");
        for action in Action::ALL {
            let frames = camera(acting::sequence(photo, &rest.landmarks, action));
            if std::env::var_os("KYC_VISION_MEASURES").is_some() {
                print_measures(&engine, who, action, &frames);
            }
            let o = liveness::check(&engine, &frames, action, None).expect("models");
            println!("portrait {who} {action}: {o:?}");
            if !(o.passed && o.score >= 0.5) {
                failures.push(format!("portrait {who}, {action}: {o:?}"));
            }

            let still = camera(acting::still(photo, frames.len()));
            let o = liveness::check(&engine, &still, action, None).expect("models");
            if o.passed || o.reason != Some(Reason::StaticFrames) || o.score >= 0.5 {
                failures.push(format!("portrait {who}, still, {action}: {o:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn an_action_is_not_mistaken_for_another() {
    let engine = engine();
    let photos = portraits();
    let rest = engine.frame(&photos[0], false).expect("one face");
    // A blink moves neither the mouth nor the head; a turn does not close the eyes.
    let blink = camera(acting::sequence(&photos[0], &rest.landmarks, Action::Blink));
    for other in [
        Action::OpenMouth,
        Action::TurnLeft,
        Action::TurnRight,
        Action::Nod,
    ] {
        let o = liveness::check(&engine, &blink, other, None).expect("models");
        assert_eq!(
            o.reason,
            Some(Reason::ActionNotDetected),
            "blink as {other}: {o:?}"
        );
    }
    let left = camera(acting::sequence(
        &photos[0],
        &rest.landmarks,
        Action::TurnLeft,
    ));
    for other in [Action::TurnRight, Action::Blink, Action::ShakeHead] {
        let o = liveness::check(&engine, &left, other, None).expect("models");
        assert_eq!(
            o.reason,
            Some(Reason::ActionNotDetected),
            "turn_left as {other}: {o:?}"
        );
    }
}

#[test]
fn the_same_person_throughout_and_the_reference_portrait() {
    let engine = engine();
    let photos = portraits();
    let rest = engine.frame(&photos[0], false).expect("one face");
    let mut frames = camera(acting::sequence(&photos[0], &rest.landmarks, Action::Blink));

    // The reference is the same person (the card's portrait crop would be): passes.
    let own = engine.embedding(&photos[0]).expect("one face");
    let o = liveness::check(&engine, &frames, Action::Blink, Some(&own)).expect("models");
    assert!(o.passed, "{o:?}");
    assert!(
        o.signals.reference_distance.is_some_and(|d| d < 0.6),
        "{o:?}"
    );

    // Another person as the reference: FACE_MISMATCH, score 0.
    let other = engine.embedding(&photos[1]).expect("one face");
    let o = liveness::check(&engine, &frames, Action::Blink, Some(&other)).expect("models");
    assert_eq!(o.reason, Some(Reason::FaceMismatch), "{o:?}");
    assert_eq!(o.score, 0.0);

    // Another person's photograph swapped in half-way: FACE_CHANGED.
    let last = frames.len() - 1;
    frames[last] = camera(vec![photos[1].clone()]).remove(0);
    let o = liveness::check(&engine, &frames, Action::Blink, None).expect("models");
    assert_eq!(o.reason, Some(Reason::FaceChanged), "{o:?}");
    assert!(o.signals.max_distance > 0.6, "{o:?}");
}

#[test]
fn frames_without_a_face_are_not_judged() {
    let engine = engine();
    let blank = RgbImage::from_pixel(320, 240, image::Rgb([120, 120, 120]));
    let o = liveness::check(&engine, &[blank.clone(), blank], Action::Blink, None).expect("models");
    assert_eq!(o.reason, Some(Reason::ActionNotDetected), "{o:?}");
    assert_eq!(o.signals.faces, 0);
}
