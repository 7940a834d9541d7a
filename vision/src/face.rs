//! Face comparison for KYC: detection (HOG, then CNN), 128-d embeddings, a calibrated score, and the
//! 68-point landmarks used by liveness.
#![forbid(unsafe_code)]
//!
//! Built on `dlib-face-recognition` 0.3.2 (Debian's `libdlib.so`, OpenBLAS) and the models of
//! `face-recognition-models` 0.3.0 installed under `<models>/dlib/`.
//!
//! # Pipeline
//! 1. The image is copied into dlib's format. An image whose longer side exceeds [`MAX_SIDE`] is first
//!    downscaled (area averaging) to that size; every coordinate this module returns is mapped back to the
//!    caller's image. This bounds the detectors' time and memory (the CNN detector's memory grows with the
//!    pixel count) and never matters for the embedding, which is computed from a 150×150 chip.
//! 2. **Detection**: dlib's HOG frontal face detector (at the working size, then upsampled 2× for small
//!    images). Only when HOG finds *no* face at all is the CNN (MMOD) detector run. Exactly one face must
//!    remain, else [`FaceError::NoFace`] / [`FaceError::MultipleFaces`]; see [`FaceEngine::detect`] for the
//!    ladder, the one-face rule and how several HOG boxes are confirmed by the CNN.
//! 3. **Embedding**: the 5-point shape predictor aligns the face, dlib's ResNet (`dlib_face_recognition_resnet_model_v1`)
//!    maps the aligned chip to 128 numbers (no jitter).
//! 4. **Distance**: Euclidean distance between the two embeddings; dlib recommends 0.6 as the same-person limit.
//! 5. **Score**: [`score`], a logistic in the distance, calibrated so that the configured [`THRESHOLD`] 0.8 sits
//!    exactly at [`DLIB_DISTANCE`] 0.6.
//!
//! # Threads
//! [`FaceEngine`] is [`Send`] but **not** [`Sync`]: the dlib binding marks its HOG detector, CNN detector and
//! encoder network `!Sync` (their forward passes write scratch buffers inside the model object), and this
//! type inherits that. Give each pool worker its own engine on its own thread (moving an engine into that
//! thread is fine); never share one engine between threads, not even behind `Arc` (the compiler refuses it).
//! Loading one engine reads ~132 MB of model files (1.3–2.4 s here); a test process holding one engine
//! measured VmRSS 118 MB.
//! An engine loaded with [`FaceEngine::load_threads`]`(_, 2+)` owns a second detector and encoder, which
//! [`FaceEngine::embeddings`] lends to a scoped thread for the second image of a pair; the two threads never
//! touch the same dlib object.
//! OpenBLAS (pthread build) starts its own threads for each large matrix product; `kyc-vision serve` sets
//! `OPENBLAS_NUM_THREADS=1` (unless set) so that workers and pairs do not oversubscribe the cores.

use std::borrow::Cow;
use std::path::Path;

use dlib_face_recognition::{
    FaceDetector, FaceDetectorCnn, FaceDetectorTrait, FaceEncoderNetwork, FaceEncoderTrait,
    ImageMatrix, LandmarkPredictor, LandmarkPredictorTrait, Rectangle,
};
use image::RgbImage;

/// The configured acceptance threshold on [`score`]: a pair is the same person when `score >= THRESHOLD`.
pub const THRESHOLD: f64 = 0.8;

/// dlib's recommended same-person limit on the embedding distance (`dlib.net`: 99.38 % on LFW at 0.6).
/// [`score`]`(DLIB_DISTANCE) == THRESHOLD`.
pub const DLIB_DISTANCE: f64 = 0.6;

/// Slope of the logistic in [`score`], per unit of distance. See [`score`] for its calibration.
pub const SCORE_SLOPE: f64 = 10.0;

/// A detection counts as a face only when its box side is at least this fraction of the largest detection's
/// side (area ratio 1/9); smaller ones are ignored. See [`FaceEngine::detect`].
pub const MIN_FACE_SIDE_RATIO: f64 = 1.0 / 3.0;

/// Longer image side above which the image is downscaled before anything else (the "working image").
/// HOG's time grows with the pixel count (measured here ~50 ms for 512×512); 1024 keeps a phone selfie
/// at ~1024×768 (~3× that) while its face stays far above the 150-px chip the encoder uses.
pub const MAX_SIDE: u32 = 1024;

/// HOG is retried on the working image upsampled 2× when it found nothing and the working image's longer
/// side is at most this: a card photographed whole (856 × 540) holds a portrait face of about 90 px,
/// under HOG's ~80 px floor once JPEG has softened it; at 2× it is found without the CNN's seconds.
pub const UPSAMPLE_MAX_SIDE: u32 = 1024;

/// The CNN fallback runs on the working image resized so that its longer side is this many pixels, which
/// bounds its time (it dominates everything else) and lets it find faces of at least ~1/8 of that side.
pub const CNN_SIDE: u32 = 640;

/// When HOG returns several face-sized boxes, each is confirmed by the CNN on a crop rescaled so that the box
/// is this many pixels (the CNN finds faces from ~80 px).
pub const CONFIRM_BOX_PX: u32 = 120;

/// Minimum intersection-over-union between a HOG box and a CNN box for the CNN to confirm it.
pub const CONFIRM_IOU: f64 = 0.3;

/// Images with a side shorter than this hold no detectable face; they are answered with
/// [`FaceError::NoFace`] without calling dlib (dlib's detectors cannot find faces below ~40 px anyway).
pub const MIN_SIDE: u32 = 32;

/// Model file names under `<models_dir>/dlib/`.
pub const CNN_DETECTOR_FILE: &str = "mmod_human_face_detector.dat";
/// 5-point predictor (alignment for the embedding).
pub const PREDICTOR5_FILE: &str = "shape_predictor_5_face_landmarks.dat";
/// 68-point predictor (liveness).
pub const PREDICTOR68_FILE: &str = "shape_predictor_68_face_landmarks.dat";
/// ResNet encoder.
pub const ENCODER_FILE: &str = "dlib_face_recognition_resnet_model_v1.dat";

/// Why a face could not be used. `NoFace` and `MultipleFaces` are answers about the image (reason codes);
/// `Model` means the installation is broken.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FaceError {
    /// Neither HOG nor the CNN detector found a face.
    #[error("no face found in the image")]
    NoFace,
    /// More than one face (see [`MIN_FACE_SIDE_RATIO`]); the count is given.
    #[error("{0} faces found in the image, expected exactly one")]
    MultipleFaces(usize),
    /// A model file is missing, unreadable, or not the model expected.
    #[error("face model {file}: {reason}")]
    Model { file: String, reason: String },
}

impl FaceError {
    /// A stable machine-readable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            FaceError::NoFace => "face.none",
            FaceError::MultipleFaces(_) => "face.multiple",
            FaceError::Model { .. } => "face.model",
        }
    }
}

/// Result of comparing two images.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    /// Euclidean distance between the two 128-d embeddings (0 = identical).
    pub distance: f64,
    /// [`score`]`(distance)`, in [0, 1]; same person when `score >= THRESHOLD`.
    pub score: f64,
}

impl Comparison {
    /// `score >= THRESHOLD`.
    pub fn accepted(&self) -> bool {
        self.score >= THRESHOLD
    }
}

/// One video frame's face, for liveness ([`FaceEngine::frame`]).
#[derive(Debug, Clone, PartialEq)]
pub struct FrameFace {
    /// The 68 landmarks in the frame's pixels (iBUG 300-W order, see [`FaceEngine::landmarks68`]).
    pub landmarks: Vec<(f32, f32)>,
    /// The 128-d embedding, when asked for.
    pub embedding: Option<Vec<f32>>,
}

/// Which detector produced a face box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detector {
    /// dlib's HOG frontal face detector (tried first).
    Hog,
    /// dlib's MMOD CNN detector (only when HOG found nothing).
    Cnn,
}

/// The one face of an image, in the caller's pixel coordinates (may extend past the image border).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaceBox {
    pub left: f32,
    pub top: f32,
    pub right: f32,
    pub bottom: f32,
    pub detector: Detector,
}

/// Maps an embedding distance to a score in [0, 1]; monotone decreasing, `score(0.6) == 0.8` exactly.
///
/// ```text
/// score(d) = 1 / (1 + (1 − T)/T · exp(k · (d − D)))
///   T = THRESHOLD = 0.8, D = DLIB_DISTANCE = 0.6, k = SCORE_SLOPE = 10
/// ```
///
/// This is the logistic `1 / (1 + exp(k · (d − d½)))` with its midpoint at `d½ = D + ln(T/(1−T))/k = 0.6 + ln 4 / 10 ≈ 0.739`.
/// At `d = D` the exponential is exactly 1, so `score(D) = 1 / (1 + 0.25) = 0.8` (bit-equal to the literal
/// `0.8` in `f64`; the tests check it): the
/// configured threshold 0.8 *is* dlib's distance 0.6, and `score(d) >= 0.8` ⇔ `d <= 0.6` (up to one rounding
/// step of `f64` right at the boundary).
///
/// **Calibration of the slope** (measured here, release build, the two test photographs; see the tests):
/// each photograph against its own crops, scales 0.5×/0.75×/1.5×/3.5×, mirror and mirror+crop/scale (18
/// pairs): distances 0.045–0.283; each against the other person under the same variants (20 pairs):
/// 0.638–0.732; the CNN fallback cases: same person rotated 45°/60° 0.065/0.350, a 22-px face 0.479, different person 0.700–0.768.
/// `k = 10` maps the same-person range to scores ≥ 0.99 and the different-person range to 0.43–0.73: the
/// score's midpoint 0.5 (d ≈ 0.739) lies at the far end of the measured different-person distances, and the
/// band where decisions are made (0.4–0.8) covers most of [0, 1] (slope at the threshold
/// `k·T·(1−T) = 1.6` per unit distance, i.e. 0.16 score per 0.1 distance). Reference points:
///
/// | d | 0.0 | 0.2 | 0.4 | 0.5 | 0.6 | 0.7 | 0.8 | 1.0 |
/// |---|---|---|---|---|---|---|---|---|
/// | score | 0.9994 | 0.9954 | 0.9673 | 0.9158 | **0.8** | 0.5954 | 0.3512 | 0.0683 |
///
/// `k` changes only how scores are spread, never which pairs are accepted (that is fixed by `d <= 0.6`).
/// Non-finite or negative distances are not produced by [`FaceEngine`]; NaN maps to 0 (reject), negative
/// distances are treated as 0.
pub fn score(distance: f64) -> f64 {
    if distance.is_nan() {
        return 0.0;
    }
    let d = distance.max(0.0);
    let odds = (1.0 - THRESHOLD) / THRESHOLD; // 0.25
    let s = 1.0 / (1.0 + odds * (SCORE_SLOPE * (d - DLIB_DISTANCE)).exp());
    s.clamp(0.0, 1.0)
}

/// Euclidean distance between two embeddings, computed in `f64`. Different lengths compare as infinitely far.
pub fn distance(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = f64::from(*x) - f64::from(*y);
            d * d
        })
        .sum::<f64>()
        .sqrt()
}

/// The face models: HOG detector, CNN detector, 5-point and 68-point shape predictors, ResNet encoder.
///
/// `Send`, not `Sync`: one engine per worker thread (see the module documentation).
pub struct FaceEngine {
    hog: FaceDetector,
    cnn: FaceDetectorCnn,
    predictor5: LandmarkPredictor,
    /// `None` only in the `second` engine below, which never computes landmarks.
    predictor68: Option<LandmarkPredictor>,
    encoder: FaceEncoderNetwork,
    /// A second detector, aligner and encoder (no 68-point predictor: ~35 MB of models instead of
    /// ~132 MB) for [`FaceEngine::embeddings`] to read the second image of a pair on a second thread.
    second: Option<Box<FaceEngine>>,
}

// Compile-time proof of the threading contract stated above.
const _: fn() = || {
    fn assert_send<T: Send>() {}
    assert_send::<FaceEngine>();
};

/// One image in dlib's format plus the factor from its pixels back to the caller's.
struct Level {
    matrix: ImageMatrix,
    /// caller pixels per pixel of this level
    scale: f64,
}

/// The one face of an image: the level it was found on and its box in that level's pixels.
struct Located {
    level: Level,
    rect: Rectangle,
    detector: Detector,
}

impl FaceEngine {
    /// Loads the four model files from `models_dir/dlib/` (the HOG detector is built into dlib).
    ///
    /// Checks that each shape predictor yields the number of points its name promises (5 and 68), so that
    /// swapped files are reported here rather than misbehaving later.
    pub fn load(models_dir: &Path) -> Result<Self, FaceError> {
        Self::load_threads(models_dir, 1)
    }

    /// [`FaceEngine::load`], and with `threads >= 2` also a second detector and encoder so that
    /// [`FaceEngine::embeddings`] reads the two images of a pair at once (the pool's per-worker
    /// `threads`, as for ONNX Runtime).
    pub fn load_threads(models_dir: &Path, threads: usize) -> Result<Self, FaceError> {
        let mut engine = Self::load_parts(models_dir, true)?;
        if threads >= 2 {
            engine.second = Some(Box::new(Self::load_parts(models_dir, false)?));
        }
        Ok(engine)
    }

    fn load_parts(models_dir: &Path, landmarks68: bool) -> Result<Self, FaceError> {
        let dir = models_dir.join("dlib");
        let cnn = FaceDetectorCnn::open(checked_path(&dir, CNN_DETECTOR_FILE)?)
            .map_err(|reason| model_error(&dir, CNN_DETECTOR_FILE, reason))?;
        let predictor5 = LandmarkPredictor::open(checked_path(&dir, PREDICTOR5_FILE)?)
            .map_err(|reason| model_error(&dir, PREDICTOR5_FILE, reason))?;
        let predictor68 = if landmarks68 {
            Some(
                LandmarkPredictor::open(checked_path(&dir, PREDICTOR68_FILE)?)
                    .map_err(|reason| model_error(&dir, PREDICTOR68_FILE, reason))?,
            )
        } else {
            None
        };
        let encoder = FaceEncoderNetwork::open(checked_path(&dir, ENCODER_FILE)?)
            .map_err(|reason| model_error(&dir, ENCODER_FILE, reason))?;

        // A shape predictor answers any rectangle of any image; probe each one on a grey square.
        let probe = ImageMatrix::from_image(&image024::RgbImage::from_pixel(
            64,
            64,
            image024::Rgb([128, 128, 128]),
        ));
        let rect = Rectangle {
            left: 8,
            top: 8,
            right: 56,
            bottom: 56,
        };
        let predictors = [
            Some((&predictor5, PREDICTOR5_FILE, 5)),
            predictor68.as_ref().map(|p| (p, PREDICTOR68_FILE, 68)),
        ];
        for (predictor, file, parts) in predictors.into_iter().flatten() {
            let got = predictor.face_landmarks(&probe, &rect).len();
            if got != parts {
                return Err(model_error(
                    &dir,
                    file,
                    format!("shape predictor yields {got} points, expected {parts}"),
                ));
            }
        }

        Ok(FaceEngine {
            hog: FaceDetector::new(),
            cnn,
            predictor5,
            predictor68,
            encoder,
            second: None,
        })
    }

    /// Finds the one face of `img`, in the caller's pixels.
    ///
    /// **Detection ladder** (stops at the first step that finds anything):
    /// 1. HOG on the working image (the caller's image, downscaled to [`MAX_SIDE`] if larger).
    /// 2. HOG on the working image upsampled 2× (dlib's "upsample once"), only when the working image's longer
    ///    side is at most [`UPSAMPLE_MAX_SIDE`]. HOG (like the CNN) does not find faces smaller than about
    ///    75–80 px: without this step a 512-px photo scaled to 0.5× is a "no face".
    /// 3. The CNN detector on the working image resized so that its longer side is [`CNN_SIDE`]; it finds faces
    ///    whose box is at least ~1/8 of the image's longer side, including poses HOG misses (measured: the
    ///    astronaut photo rotated 45° and 60°).
    ///
    /// **One-face rule.** Detections whose box side is below [`MIN_FACE_SIDE_RATIO`] (1/3) of the largest
    /// one's are ignored: a passer-by far behind the applicant, a small false detection. Anything larger
    /// counts, so a second person beside the applicant is an error even at half the applicant's size.
    /// A card with a "ghost" copy of its portrait at 1/3–1/2 of its size would count as two faces (the
    /// second-generation resident ID card has a single portrait).
    ///
    /// When HOG leaves more than one box, each box is **confirmed** by the CNN detector on a crop around it
    /// (box + 50 % on each side, rescaled so the box is [`CONFIRM_BOX_PX`] px; IoU ≥ [`CONFIRM_IOU`] with a CNN
    /// box), because HOG does produce face-sized false detections on real photographs (measured: on the
    /// mission patch of the astronaut's suit, whenever that photo is widened or rotated by 10–25°). If more
    /// than one face remains the answer is [`FaceError::MultipleFaces`] with their number; if the CNN
    /// confirms none of several HOG boxes, `MultipleFaces` with the number of HOG boxes. Never a pick.
    ///
    /// Measured on the test photographs (see the tests): grace_hopper beside a copy of itself at 0.25× →
    /// the big face only (side ratio ~0.25, ignored); at 0.5× → `MultipleFaces(2)`; the astronaut beside
    /// grace_hopper (faces 87 and 181 px, ratio 0.48) → `MultipleFaces(2)`, after the CNN discarded a third,
    /// face-sized HOG box on the mission patch. Cost of the confirmations: 0.3–0.7 s in total here (under load).
    pub fn detect(&self, img: &RgbImage) -> Result<FaceBox, FaceError> {
        let found = self.locate(img, true)?;
        let s = found.level.scale as f32;
        let r = found.rect;
        Ok(FaceBox {
            left: r.left as f32 * s,
            top: r.top as f32 * s,
            right: r.right as f32 * s,
            bottom: r.bottom as f32 * s,
            detector: found.detector,
        })
    }

    /// The 128-d embedding of the one face of `img` (see [`FaceEngine::detect`] for the one-face rule).
    pub fn embedding(&self, img: &RgbImage) -> Result<Vec<f32>, FaceError> {
        let found = self.locate(img, true)?;
        self.embedding_of(&found)
    }

    fn embedding_of(&self, found: &Located) -> Result<Vec<f32>, FaceError> {
        let landmarks = self
            .predictor5
            .face_landmarks(&found.level.matrix, &found.rect);
        // dlib's chip extraction accepts only 5- or 68-point shapes and would throw across the FFI otherwise;
        // `load` checked the model, this keeps the guarantee local.
        if landmarks.len() != 5 {
            return Err(FaceError::Model {
                file: PREDICTOR5_FILE.to_string(),
                reason: format!(
                    "shape predictor yielded {} points, expected 5",
                    landmarks.len()
                ),
            });
        }
        let encodings = self.encoder.get_face_encodings(
            &found.level.matrix,
            std::slice::from_ref(&landmarks),
            0,
        );
        match encodings.first() {
            Some(encoding) if encoding.as_ref().len() == 128 => {
                // The network computes in f32 and the binding widens to f64: narrowing back is exact.
                Ok(encoding.as_ref().iter().map(|&v| v as f32).collect())
            }
            other => Err(FaceError::Model {
                file: ENCODER_FILE.to_string(),
                reason: format!(
                    "encoder returned {} values, expected 128",
                    other.map_or(0, |e| e.as_ref().len())
                ),
            }),
        }
    }

    /// The embeddings of the one face of `a` and of `b`: at once on two threads when the engine was
    /// loaded with [`FaceEngine::load_threads`]`(_, 2+)`, else one after the other. Each result is
    /// what [`FaceEngine::embedding`] gives for that image, so a caller can say which image failed.
    pub fn embeddings(
        &mut self,
        a: &RgbImage,
        b: &RgbImage,
    ) -> (Result<Vec<f32>, FaceError>, Result<Vec<f32>, FaceError>) {
        let Some(mut second) = self.second.take() else {
            return (self.embedding(a), self.embedding(b));
        };
        let (ea, eb) = std::thread::scope(|s| {
            let helper = &mut *second;
            match std::thread::Builder::new()
                .name("face-pair".into())
                .spawn_scoped(s, move || helper.embedding(b))
            {
                Ok(other) => (self.embedding(a), other.join()),
                // no thread to be had (the process is at its limit): one after the other
                Err(_) => (self.embedding(a), Ok(self.embedding(b))),
            }
        });
        self.second = Some(second);
        match eb {
            Ok(eb) => (ea, eb),
            // dlib's C++ does not unwind into Rust; a panic here is a bug on this side: re-raise it
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Compares the one face of `a` with the one face of `b`, on this thread.
    pub fn compare(&self, a: &RgbImage, b: &RgbImage) -> Result<Comparison, FaceError> {
        let ea = self.embedding(a)?;
        let eb = self.embedding(b)?;
        let d = distance(&ea, &eb);
        Ok(Comparison {
            distance: d,
            score: score(d),
        })
    }

    /// The 68 landmarks (iBUG 300-W order: jaw 0–16, brows 17–26, nose 27–35, eyes 36–47, mouth 48–67) of the
    /// one face of `img`, as `(x, y)` in the caller's pixels.
    pub fn landmarks68(&self, img: &RgbImage) -> Result<Vec<(f32, f32)>, FaceError> {
        let found = self.locate(img, true)?;
        self.landmarks68_of(&found)
    }

    /// What liveness needs of one video frame: the 68 landmarks of its one face and, when `embed`,
    /// that face's embedding, from a single detection. Only HOG looks for the face (at 1×, then 2×
    /// for small frames): the CNN fallback costs seconds per frame, and a frame HOG cannot see a
    /// frontal-enough face in is one liveness does without.
    pub fn frame(&self, img: &RgbImage, embed: bool) -> Result<FrameFace, FaceError> {
        let found = self.locate(img, false)?;
        let landmarks = self.landmarks68_of(&found)?;
        let embedding = if embed {
            Some(self.embedding_of(&found)?)
        } else {
            None
        };
        Ok(FrameFace {
            landmarks,
            embedding,
        })
    }

    fn landmarks68_of(&self, found: &Located) -> Result<Vec<(f32, f32)>, FaceError> {
        let Some(predictor68) = &self.predictor68 else {
            return Err(FaceError::Model {
                file: PREDICTOR68_FILE.to_string(),
                reason: "not loaded in this engine".to_string(),
            });
        };
        let landmarks = predictor68.face_landmarks(&found.level.matrix, &found.rect);
        if landmarks.len() != 68 {
            return Err(FaceError::Model {
                file: PREDICTOR68_FILE.to_string(),
                reason: format!(
                    "shape predictor yielded {} points, expected 68",
                    landmarks.len()
                ),
            });
        }
        let s = found.level.scale;
        Ok(landmarks
            .iter()
            .map(|p| ((p.x() as f64 * s) as f32, (p.y() as f64 * s) as f32))
            .collect())
    }

    /// The detection ladder and the one-face rule (see [`FaceEngine::detect`]); without `cnn` the
    /// ladder stops after HOG.
    fn locate(&self, img: &RgbImage, cnn: bool) -> Result<Located, FaceError> {
        let work = working_image(img).ok_or(FaceError::NoFace)?;
        let base_scale = f64::from(img.width()) / f64::from(work.width());

        // 1. HOG on the working image; 2. HOG on it upsampled 2x.
        let mut level = Level {
            matrix: to_matrix(&work),
            scale: base_scale,
        };
        let mut hog: Vec<Rectangle> = self.hog.face_locations(&level.matrix).to_vec();
        if hog.is_empty() && work.width().max(work.height()) <= UPSAMPLE_MAX_SIDE {
            let up = level
                .matrix
                .resize(2 * work.width() as usize, 2 * work.height() as usize);
            let found = self.hog.face_locations(&up).to_vec();
            if !found.is_empty() {
                level = Level {
                    matrix: up,
                    scale: base_scale / 2.0,
                };
                hog = found;
            }
        }
        if !hog.is_empty() {
            let candidates = drop_small(&hog);
            let rect = match candidates.as_slice() {
                [one] => *one,
                _ => {
                    // Several face-sized HOG boxes: keep those the CNN confirms.
                    let level_scale = level.scale;
                    let confirmed: Vec<Rectangle> = candidates
                        .iter()
                        .copied()
                        .filter(|r| self.cnn_confirms(&work, base_scale, level_scale, r))
                        .collect();
                    match drop_small(&confirmed).as_slice() {
                        [one] => *one,
                        [] => return Err(FaceError::MultipleFaces(candidates.len())),
                        many => return Err(FaceError::MultipleFaces(many.len())),
                    }
                }
            };
            return Ok(Located {
                level,
                rect,
                detector: Detector::Hog,
            });
        }

        if !cnn {
            return Err(FaceError::NoFace);
        }
        // 3. CNN on the working image resized to CNN_SIDE.
        let cnn_img = resize_longer_to(&work, CNN_SIDE);
        let cnn_level = Level {
            matrix: to_matrix(&cnn_img),
            scale: base_scale * f64::from(work.width()) / f64::from(cnn_img.width()),
        };
        let cnn: Vec<Rectangle> = self.cnn.face_locations(&cnn_level.matrix).to_vec();
        match drop_small(&cnn).as_slice() {
            [] => Err(FaceError::NoFace),
            [one] => {
                let rect = *one;
                // Landmarks and the embedding are computed on the working image (it has the finer pixels
                // when the CNN image was downscaled).
                let k = cnn_level.scale / base_scale;
                let rect = scale_rect(&rect, k);
                Ok(Located {
                    level: Level {
                        matrix: level.matrix,
                        scale: base_scale,
                    },
                    rect,
                    detector: Detector::Cnn,
                })
            }
            many => Err(FaceError::MultipleFaces(many.len())),
        }
    }

    /// Whether the CNN detector finds a face on a crop around `rect` (given in pixels of a level whose scale
    /// is `level_scale`; `work` has scale `base_scale`).
    fn cnn_confirms(
        &self,
        work: &RgbImage,
        base_scale: f64,
        level_scale: f64,
        rect: &Rectangle,
    ) -> bool {
        let r = scale_rect(rect, level_scale / base_scale); // into working-image pixels
        let side = ((r.right - r.left + 1).max(r.bottom - r.top + 1)).max(1) as f64;
        let margin = side * 0.5;
        let (w, h) = (f64::from(work.width()), f64::from(work.height()));
        let x0 = (r.left as f64 - margin).clamp(0.0, w - 1.0);
        let y0 = (r.top as f64 - margin).clamp(0.0, h - 1.0);
        let x1 = (r.right as f64 + margin).clamp(x0 + 1.0, w);
        let y1 = (r.bottom as f64 + margin).clamp(y0 + 1.0, h);
        let crop = image::imageops::crop_imm(
            work,
            x0 as u32,
            y0 as u32,
            (x1 - x0) as u32,
            (y1 - y0) as u32,
        )
        .to_image();
        let k = f64::from(CONFIRM_BOX_PX) / side; // crop pixels -> confirm pixels
        let cw = ((crop.width() as f64 * k).round() as u32).max(1);
        let ch = ((crop.height() as f64 * k).round() as u32).max(1);
        let crop = image::imageops::resize(&crop, cw, ch, image::imageops::FilterType::Triangle);
        // The HOG box in confirm pixels.
        let target = Rectangle {
            left: ((r.left as f64 - x0) * k) as _,
            top: ((r.top as f64 - y0) * k) as _,
            right: ((r.right as f64 - x0) * k) as _,
            bottom: ((r.bottom as f64 - y0) * k) as _,
        };
        self.cnn
            .face_locations(&to_matrix(&crop))
            .iter()
            .any(|c| iou(c, &target) >= CONFIRM_IOU)
    }

    /// Runs only the HOG detector on the working image and returns all its boxes in the caller's pixels,
    /// before any rule. For diagnostics and tests.
    pub fn hog_boxes(&self, img: &RgbImage) -> Vec<[f32; 4]> {
        self.raw_boxes(img, Detector::Hog)
    }

    /// Runs only the CNN detector on the working image (not resized to [`CNN_SIDE`]) and returns all its boxes
    /// in the caller's pixels, before any rule. For diagnostics and tests.
    pub fn cnn_boxes(&self, img: &RgbImage) -> Vec<[f32; 4]> {
        self.raw_boxes(img, Detector::Cnn)
    }

    fn raw_boxes(&self, img: &RgbImage, which: Detector) -> Vec<[f32; 4]> {
        let Some(work) = working_image(img) else {
            return Vec::new();
        };
        let s = (f64::from(img.width()) / f64::from(work.width())) as f32;
        let matrix = to_matrix(&work);
        let rects = match which {
            Detector::Hog => self.hog.face_locations(&matrix),
            Detector::Cnn => self.cnn.face_locations(&matrix),
        };
        rects
            .iter()
            .map(|r| {
                [
                    r.left as f32 * s,
                    r.top as f32 * s,
                    r.right as f32 * s,
                    r.bottom as f32 * s,
                ]
            })
            .collect()
    }
}

fn area(r: &Rectangle) -> f64 {
    // dlib rectangles are inclusive: width = right - left + 1
    let w = (r.right - r.left + 1).max(0) as f64;
    let h = (r.bottom - r.top + 1).max(0) as f64;
    w * h
}

fn iou(a: &Rectangle, b: &Rectangle) -> f64 {
    let inter = Rectangle {
        left: a.left.max(b.left),
        top: a.top.max(b.top),
        right: a.right.min(b.right),
        bottom: a.bottom.min(b.bottom),
    };
    let i = if inter.right < inter.left || inter.bottom < inter.top {
        0.0
    } else {
        area(&inter)
    };
    let u = area(a) + area(b) - i;
    if u > 0.0 { i / u } else { 0.0 }
}

fn scale_rect(r: &Rectangle, k: f64) -> Rectangle {
    Rectangle {
        left: (r.left as f64 * k).round() as _,
        top: (r.top as f64 * k).round() as _,
        right: (r.right as f64 * k).round() as _,
        bottom: (r.bottom as f64 * k).round() as _,
    }
}

/// The detections whose side is at least [`MIN_FACE_SIDE_RATIO`] of the largest one's (compared as areas).
fn drop_small(rects: &[Rectangle]) -> Vec<Rectangle> {
    let largest = rects.iter().map(area).fold(0.0, f64::max);
    let min_area = largest * MIN_FACE_SIDE_RATIO * MIN_FACE_SIDE_RATIO;
    rects
        .iter()
        .copied()
        .filter(|r| area(r) >= min_area)
        .collect()
}

/// The caller's image, downscaled to [`MAX_SIDE`] if larger. `None` for images too small to hold a face.
fn working_image(img: &RgbImage) -> Option<Cow<'_, RgbImage>> {
    let (w, h) = img.dimensions();
    if w < MIN_SIDE || h < MIN_SIDE {
        return None;
    }
    if w.max(h) > MAX_SIDE {
        let small = resize_longer_to(img, MAX_SIDE);
        // A very elongated image can shrink below the minimum on its short side.
        if small.width() < MIN_SIDE || small.height() < MIN_SIDE {
            return None;
        }
        Some(Cow::Owned(small))
    } else {
        Some(Cow::Borrowed(img))
    }
}

/// `img` resized so that its longer side is `side` (area averaging to shrink, Triangle filter to enlarge).
fn resize_longer_to(img: &RgbImage, side: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let longer = w.max(h).max(1);
    if longer == side {
        return img.clone();
    }
    let f = f64::from(side) / f64::from(longer);
    let nw = ((f64::from(w) * f).round() as u32).max(1);
    let nh = ((f64::from(h) * f).round() as u32).max(1);
    if f < 1.0 {
        // Area averaging: alias-free for shrinking and about half the time of a Triangle filter
        // (measured 47 vs 104 ms for 1792x1792 -> 1024x1024).
        image::imageops::thumbnail(img, nw, nh)
    } else {
        image::imageops::resize(img, nw, nh, image::imageops::FilterType::Triangle)
    }
}

/// Copies RGB bytes into dlib's matrix (the binding takes image 0.24 buffers: a borrowed view of the same bytes).
fn to_matrix(img: &RgbImage) -> ImageMatrix {
    let raw: &[u8] = img.as_raw();
    match image024::ImageBuffer::<image024::Rgb<u8>, &[u8]>::from_raw(
        img.width(),
        img.height(),
        raw,
    ) {
        Some(view) => ImageMatrix::from_image(&view),
        // Unreachable: an `RgbImage` always holds width*height*3 bytes. An empty matrix finds no face.
        None => ImageMatrix::default(),
    }
}

fn checked_path(dir: &Path, file: &str) -> Result<std::path::PathBuf, FaceError> {
    let path = dir.join(file);
    // The binding panics on non-UTF-8 paths and on interior NULs; refuse them here instead.
    match path.to_str() {
        Some(s) if !s.contains('\0') => {}
        _ => {
            return Err(model_error(
                dir,
                file,
                "path is not valid UTF-8 without NUL".to_string(),
            ));
        }
    }
    if !path.is_file() {
        return Err(model_error(
            dir,
            file,
            "file not found; install the models with scripts/install-vision.sh".to_string(),
        ));
    }
    Ok(path)
}

fn model_error(dir: &Path, file: &str, reason: String) -> FaceError {
    FaceError::Model {
        file: dir.join(file).display().to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::OnceLock;
    use std::time::Instant;

    fn models_dir() -> PathBuf {
        crate::models::dir(None)
    }

    thread_local! {
        // FaceEngine is !Sync: one per test thread, loaded once per thread.
        static ENGINE: FaceEngine = FaceEngine::load(&models_dir()).expect("load face models");
    }

    fn with_engine<R>(f: impl FnOnce(&FaceEngine) -> R) -> R {
        ENGINE.with(|e| f(e))
    }

    fn photo(name: &str) -> RgbImage {
        static CACHE: OnceLock<(RgbImage, RgbImage)> = OnceLock::new();
        let (a, g) = CACHE.get_or_init(|| {
            let dir = models_dir().join("faces");
            let a = image::open(dir.join("astronaut.png"))
                .expect("astronaut.png")
                .to_rgb8();
            let g = image::open(dir.join("grace_hopper.jpg"))
                .expect("grace_hopper.jpg")
                .to_rgb8();
            (a, g)
        });
        match name {
            "astronaut" => a.clone(),
            "grace_hopper" => g.clone(),
            other => panic!("unknown photo {other}"),
        }
    }

    fn scaled(img: &RgbImage, f: f64) -> RgbImage {
        let w = (img.width() as f64 * f).round() as u32;
        let h = (img.height() as f64 * f).round() as u32;
        image::imageops::resize(img, w, h, image::imageops::FilterType::Triangle)
    }

    /// Crop around the detected face box, `margin` = extra space on each side as a fraction of the box size.
    fn face_crop(e: &FaceEngine, img: &RgbImage, margin: f32) -> RgbImage {
        let b = e.detect(img).expect("face for crop");
        let (bw, bh) = (b.right - b.left, b.bottom - b.top);
        let l = (b.left - margin * bw).max(0.0) as u32;
        let t = (b.top - margin * bh).max(0.0) as u32;
        let r = ((b.right + margin * bw) as u32).min(img.width());
        let btm = ((b.bottom + margin * bh) as u32).min(img.height());
        image::imageops::crop_imm(img, l, t, r - l, btm - t).to_image()
    }

    /// Variants of a photo used by the face table.
    fn variants(e: &FaceEngine, img: &RgbImage) -> Vec<(&'static str, RgbImage)> {
        let mirror = image::imageops::flip_horizontal(img);
        vec![
            ("original", img.clone()),
            ("mirror", mirror.clone()),
            ("scale0.5", scaled(img, 0.5)),
            ("scale0.75", scaled(img, 0.75)),
            ("scale1.5", scaled(img, 1.5)),
            ("crop+50%", face_crop(e, img, 0.5)),
            ("crop+25%", face_crop(e, img, 0.25)),
            ("mirror+crop", face_crop(e, &mirror, 0.4)),
            ("mirror+scale0.75", scaled(&mirror, 0.75)),
            ("scale3.5(downscaled)", scaled(img, 3.5)),
        ]
    }

    /// Rotates by `deg` degrees about the centre (bilinear), grey outside.
    fn rotated(img: &RgbImage, deg: f64) -> RgbImage {
        let (w, h) = img.dimensions();
        let (cx, cy) = (w as f64 / 2.0, h as f64 / 2.0);
        let (s, c) = deg.to_radians().sin_cos();
        RgbImage::from_fn(w, h, |x, y| {
            let dx = x as f64 - cx;
            let dy = y as f64 - cy;
            let sx = c * dx + s * dy + cx;
            let sy = -s * dx + c * dy + cy;
            if sx < 0.0 || sy < 0.0 || sx >= (w - 1) as f64 || sy >= (h - 1) as f64 {
                return image::Rgb([128, 128, 128]);
            }
            let (x0, y0) = (sx.floor() as u32, sy.floor() as u32);
            let (fx, fy) = (sx - x0 as f64, sy - y0 as f64);
            let mut out = [0u8; 3];
            for (ch, o) in out.iter_mut().enumerate() {
                let p = |xx: u32, yy: u32| img.get_pixel(xx, yy).0[ch] as f64;
                let v = p(x0, y0) * (1.0 - fx) * (1.0 - fy)
                    + p(x0 + 1, y0) * fx * (1.0 - fy)
                    + p(x0, y0 + 1) * (1.0 - fx) * fy
                    + p(x0 + 1, y0 + 1) * fx * fy;
                *o = v.round().clamp(0.0, 255.0) as u8;
            }
            image::Rgb(out)
        })
    }

    fn side_by_side(a: &RgbImage, b: &RgbImage) -> RgbImage {
        let w = a.width() + b.width();
        let h = a.height().max(b.height());
        let mut out = RgbImage::from_pixel(w, h, image::Rgb([255, 255, 255]));
        image::imageops::replace(&mut out, a, 0, 0);
        image::imageops::replace(&mut out, b, i64::from(a.width()), 0);
        out
    }

    #[test]
    fn score_is_monotone_bounded_and_calibrated() {
        assert!((score(DLIB_DISTANCE) - THRESHOLD).abs() < 1e-12);
        assert_eq!(score(0.6), 0.8);
        let mut prev = f64::INFINITY;
        for i in 0..=2000 {
            let d = i as f64 * 0.001;
            let s = score(d);
            assert!((0.0..=1.0).contains(&s), "score({d}) = {s}");
            assert!(s <= prev, "not monotone at {d}");
            if d < 1.5 {
                assert!(s < prev, "not strictly decreasing at {d}");
            }
            prev = s;
        }
        assert!(score(0.6 - 1e-9) > THRESHOLD && score(0.6 + 1e-9) < THRESHOLD);
        for d in [f64::NAN, f64::INFINITY, -1.0, 1e300] {
            let s = score(d);
            assert!((0.0..=1.0).contains(&s), "score({d}) = {s}");
        }
        assert_eq!(score(f64::NAN), 0.0);
        let table: Vec<String> = [0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0]
            .iter()
            .map(|d| format!("{d}:{:.4}", score(*d)))
            .collect();
        eprintln!("score table: {}", table.join(" "));
    }

    #[test]
    fn face_table_same_accepted_different_rejected() {
        with_engine(|e| {
            let a = photo("astronaut");
            let g = photo("grace_hopper");
            let va = variants(e, &a);
            let vg = variants(e, &g);
            let ea = e.embedding(&a).expect("astronaut embedding");
            let eg = e.embedding(&g).expect("grace_hopper embedding");
            assert_eq!(ea.len(), 128);

            let mut same = Vec::new();
            let mut diff = Vec::new();
            eprintln!(
                "{:<10} {:<22} {:>8} {:>8} {:>6}  detector",
                "reference", "variant", "distance", "score", "accept"
            );
            for (name, (reference, emb, own, other)) in [
                ("astronaut", (&a, &ea, &va, &vg)),
                ("grace", (&g, &eg, &vg, &va)),
            ] {
                let _ = reference;
                for (vname, v) in own.iter() {
                    let ev = e
                        .embedding(v)
                        .unwrap_or_else(|err| panic!("{name}/{vname}: {err}"));
                    let d = distance(emb, &ev);
                    let det = e
                        .detect(v)
                        .map(|b| format!("{:?}", b.detector))
                        .unwrap_or_default();
                    eprintln!(
                        "{name:<10} same:{vname:<17} {d:>8.4} {:>8.4} {:>6}  {det}",
                        score(d),
                        score(d) >= THRESHOLD
                    );
                    same.push((format!("{name}/{vname}"), d));
                }
                for (vname, v) in other.iter() {
                    let ev = e
                        .embedding(v)
                        .unwrap_or_else(|err| panic!("other/{vname}: {err}"));
                    let d = distance(emb, &ev);
                    eprintln!(
                        "{name:<10} diff:{vname:<17} {d:>8.4} {:>8.4} {:>6}",
                        score(d),
                        score(d) >= THRESHOLD
                    );
                    diff.push((format!("{name} vs other/{vname}"), d));
                }
            }
            let max_same = same.iter().map(|x| x.1).fold(0.0, f64::max);
            let min_diff = diff.iter().map(|x| x.1).fold(f64::INFINITY, f64::min);
            eprintln!(
                "same person: {} pairs, distance max {max_same:.4} (score {:.4}); different: {} pairs, distance min {min_diff:.4} (score {:.4})",
                same.len(),
                score(max_same),
                diff.len(),
                score(min_diff)
            );
            let false_rejects: Vec<_> =
                same.iter().filter(|(_, d)| score(*d) < THRESHOLD).collect();
            let false_accepts: Vec<_> = diff
                .iter()
                .filter(|(_, d)| score(*d) >= THRESHOLD)
                .collect();
            assert!(false_rejects.is_empty(), "false rejects: {false_rejects:?}");
            assert!(false_accepts.is_empty(), "false accepts: {false_accepts:?}");

            // compare() agrees with embedding() + distance()
            let c = e.compare(&a, &g).expect("compare");
            assert!(!c.accepted());
            let c2 = e
                .compare(&a, &image::imageops::flip_horizontal(&a))
                .expect("compare mirror");
            assert!(c2.accepted(), "{c2:?}");
        });
    }

    #[test]
    fn no_face_and_multiple_faces() {
        with_engine(|e| {
            let blank = RgbImage::from_pixel(400, 400, image::Rgb([200, 200, 200]));
            assert_eq!(e.embedding(&blank), Err(FaceError::NoFace));
            assert_eq!(e.landmarks68(&blank), Err(FaceError::NoFace));
            let tiny = RgbImage::from_pixel(10, 10, image::Rgb([0, 0, 0]));
            assert_eq!(e.embedding(&tiny), Err(FaceError::NoFace));
            let empty = RgbImage::new(0, 0);
            assert_eq!(e.embedding(&empty), Err(FaceError::NoFace));

            let a = photo("astronaut");
            let g = photo("grace_hopper");
            let both = side_by_side(&a, &g);
            assert_eq!(e.embedding(&both), Err(FaceError::MultipleFaces(2)));
            assert_eq!(e.landmarks68(&both), Err(FaceError::MultipleFaces(2)));
            assert_eq!(e.compare(&both, &a), Err(FaceError::MultipleFaces(2)));
            let twins = side_by_side(&a, &a);
            assert_eq!(e.embedding(&twins), Err(FaceError::MultipleFaces(2)));
        });
    }

    /// Exploration: what each detector sees across scales and rotations, and a small second face.
    #[test]
    #[ignore]
    fn probe_detectors() {
        with_engine(|e| {
            for name in ["astronaut", "grace_hopper"] {
                let img = photo(name);
                for f in [0.5, 0.4, 0.3, 0.25, 0.2, 0.15] {
                    let v = scaled(&img, f);
                    let t = Instant::now();
                    let d = e.detect(&v);
                    eprintln!("{name} scale {f}: detect {d:?} ({:?})", t.elapsed());
                }
                for deg in [10.0, 20.0, 25.0, 45.0, 60.0, 90.0] {
                    let v = rotated(&img, deg);
                    let t = Instant::now();
                    let d = e.detect(&v);
                    eprintln!("{name} rot {deg}: detect {d:?} ({:?})", t.elapsed());
                }
            }
            let a = photo("astronaut");
            let g = photo("grace_hopper");
            for (base, bn) in [(&a, "astronaut"), (&g, "grace")] {
                for (other, on) in [(&a, "astronaut"), (&g, "grace")] {
                    for f in [0.3, 0.4, 0.5, 0.6, 0.75, 1.0] {
                        let both = side_by_side(base, &scaled(other, f));
                        let t = Instant::now();
                        let d = e.detect(&both);
                        eprintln!(
                            "{bn} + {on}*{f}: hog {:?} -> {d:?} ({:?})",
                            e.hog_boxes(&both),
                            t.elapsed()
                        );
                    }
                }
            }
        });
    }

    #[test]
    fn small_second_face_is_ignored_comparable_one_is_not() {
        with_engine(|e| {
            let g = photo("grace_hopper");
            // grace's face box is ~216 px; a copy at 0.25x has a ~55 px face (side ratio ~0.25 < 1/3): ignored.
            let with_small = side_by_side(&g, &scaled(&g, 0.25));
            let b = e.detect(&with_small).expect("small second face ignored");
            assert!(b.right < g.width() as f32, "the big face was chosen: {b:?}");
            // at 0.5x (side ratio ~0.5): two faces.
            assert_eq!(
                e.detect(&side_by_side(&g, &scaled(&g, 0.5))),
                Err(FaceError::MultipleFaces(2))
            );
            // a different, smaller person beside the applicant: two faces.
            let a = photo("astronaut");
            assert_eq!(
                e.detect(&side_by_side(&g, &a)),
                Err(FaceError::MultipleFaces(2))
            );
        });
    }

    #[test]
    fn cnn_fallback_is_exercised() {
        with_engine(|e| {
            let a = photo("astronaut");
            let reference = e.embedding(&a).expect("astronaut");
            let other_ref = e.embedding(&photo("grace_hopper")).expect("grace_hopper");
            // Rotated 45 and 60 degrees: HOG (native and 2x) finds nothing, the CNN finds the face.
            // Scaled to 0.2x (102 px image, ~17 px face): too small for HOG even upsampled; the CNN on the
            // image resized to CNN_SIDE finds it.
            for (name, img) in [
                ("rot45", rotated(&a, 45.0)),
                ("rot60", rotated(&a, 60.0)),
                ("scale0.2", scaled(&a, 0.2)),
            ] {
                assert!(e.hog_boxes(&img).is_empty(), "{name}: HOG found a face");
                let b = e.detect(&img).unwrap_or_else(|err| panic!("{name}: {err}"));
                assert_eq!(b.detector, Detector::Cnn, "{name}");
                let emb = e
                    .embedding(&img)
                    .unwrap_or_else(|err| panic!("{name}: {err}"));
                let d = distance(&reference, &emb);
                let other = distance(&other_ref, &emb);
                eprintln!(
                    "CNN path {name}: box {b:?}, distance to original {d:.4} (score {:.4}), to grace_hopper {other:.4} (score {:.4})",
                    score(d),
                    score(other)
                );
                assert!(
                    score(other) < THRESHOLD,
                    "{name}: false accept against grace_hopper"
                );
                if name != "scale0.2" {
                    assert!(
                        score(d) >= THRESHOLD,
                        "{name}: rotated face not accepted, d = {d}"
                    );
                }
            }
        });
    }

    #[test]
    fn landmarks68_inside_the_face_box() {
        with_engine(|e| {
            for name in ["astronaut", "grace_hopper"] {
                let img = photo(name);
                let b = e.detect(&img).expect("face");
                let pts = e.landmarks68(&img).expect("landmarks");
                assert_eq!(pts.len(), 68);
                let (w, h) = (b.right - b.left, b.bottom - b.top);
                let inside = pts
                    .iter()
                    .filter(|(x, y)| *x >= b.left && *x <= b.right && *y >= b.top && *y <= b.bottom)
                    .count();
                // the largest excursion outside the box, as a fraction of the box side
                let excursion = pts
                    .iter()
                    .map(|(x, y)| {
                        let dx = (b.left - x).max(x - b.right).max(0.0) / w;
                        let dy = (b.top - y).max(y - b.bottom).max(0.0) / h;
                        dx.max(dy)
                    })
                    .fold(0.0f32, f32::max);
                eprintln!(
                    "{name}: box {b:?}; {inside}/68 landmarks inside the box, max excursion {excursion:.3} of the box side"
                );
                // dlib's HOG box is tight (brows to lower lip); the chin and jaw points may fall a little outside.
                assert!(
                    excursion <= 0.25,
                    "{name}: landmark {excursion} box sides outside"
                );
                assert!(inside >= 55, "{name}: only {inside}/68 inside");
                // eye centres left of / right of each other and above the mouth
                let mean = |r: std::ops::Range<usize>| {
                    let n = r.len() as f32;
                    let (sx, sy) = pts[r]
                        .iter()
                        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
                    (sx / n, sy / n)
                };
                let (right_eye, left_eye, mouth) = (mean(36..42), mean(42..48), mean(48..68));
                assert!(right_eye.0 < left_eye.0 && right_eye.1 < mouth.1 && left_eye.1 < mouth.1);
            }
            // On a large image (downscaled internally) the points come back in the caller's pixels.
            let a = photo("astronaut");
            let big = scaled(&a, 3.5);
            let p1 = e.landmarks68(&a).expect("landmarks");
            let p2 = e.landmarks68(&big).expect("landmarks big");
            let mean_dev = p1
                .iter()
                .zip(&p2)
                .map(|((x1, y1), (x2, y2))| {
                    ((x2 / 3.5 - x1).powi(2) + (y2 / 3.5 - y1).powi(2)).sqrt()
                })
                .sum::<f32>()
                / 68.0;
            eprintln!(
                "3.5x image: mean landmark deviation after mapping back {mean_dev:.2} px (of the 512 px original)"
            );
            assert!(mean_dev < 3.0);
        });
    }

    /// `embeddings` with a second engine reads each image on its own thread and gives what
    /// `embedding` gives for it, in the caller's order, and says which image failed.
    #[test]
    fn embeddings_on_two_threads_match_one_thread_and_keep_the_order() {
        let mut two = FaceEngine::load_threads(&models_dir(), 2).expect("load");
        assert!(two.second.is_some());
        assert!(
            FaceEngine::load(&models_dir())
                .expect("load")
                .second
                .is_none()
        );
        let a = photo("astronaut");
        let g = photo("grace_hopper");
        let (ea, eg) = two.embeddings(&a, &g);
        let (ea, eg) = (ea.expect("astronaut"), eg.expect("grace_hopper"));
        with_engine(|one| {
            assert_eq!(ea, one.embedding(&a).expect("astronaut"));
            assert_eq!(eg, one.embedding(&g).expect("grace_hopper"));
        });
        // swapped arguments, swapped answers (and the second engine is back after each call)
        let (eg2, ea2) = two.embeddings(&g, &a);
        assert_eq!((eg2.expect("g"), ea2.expect("a")), (eg, ea));
        let blank = RgbImage::from_pixel(256, 256, image::Rgb([200, 200, 200]));
        let (first, second) = two.embeddings(&blank, &a);
        assert_eq!(first, Err(FaceError::NoFace));
        assert!(second.is_ok());
        let (first, second) = two.embeddings(&a, &blank);
        assert!(first.is_ok());
        assert_eq!(second, Err(FaceError::NoFace));
        assert!(two.second.is_some());
        // the second engine has no 68-point predictor; the first one still answers landmarks
        assert!(two.landmarks68(&a).is_ok());
    }

    /// Timings; run with `cargo test --release -- --ignored timings --nocapture`.
    #[test]
    #[ignore]
    fn timings() {
        let t = Instant::now();
        let e = FaceEngine::load(&models_dir()).expect("load");
        eprintln!("load: {:?}", t.elapsed());
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            for line in status
                .lines()
                .filter(|l| l.starts_with("VmRSS") || l.starts_with("VmHWM"))
            {
                eprintln!("after load (test process): {line}");
            }
        }
        let a = photo("astronaut");
        let g = photo("grace_hopper");
        let am = image::imageops::flip_horizontal(&a);
        let _ = e.compare(&a, &g); // warm-up
        // CPU time of this process (all threads) in ms, from /proc/self/stat (utime + stime, 100 Hz ticks).
        fn cpu_ms() -> f64 {
            let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
            let after = stat.rsplit(')').next().unwrap_or("");
            let f: Vec<f64> = after
                .split_whitespace()
                .map(|x| x.parse().unwrap_or(0.0))
                .collect();
            // fields after ")" start at field 3 (state); utime = field 14, stime = field 15
            (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) * 10.0
        }
        let n = 20;
        for (name, x, y) in [
            ("astronaut vs grace", &a, &g),
            ("astronaut vs mirror", &a, &am),
        ] {
            let (t, c) = (Instant::now(), cpu_ms());
            for _ in 0..n {
                e.compare(x, y).expect("compare");
            }
            eprintln!(
                "compare {name} (512x512 + {}x{}): {:.1} ms/pair wall, {:.1} ms/pair CPU",
                y.width(),
                y.height(),
                t.elapsed().as_secs_f64() * 1000.0 / n as f64,
                (cpu_ms() - c) / n as f64
            );
        }
        for (name, x) in [("astronaut", &a), ("grace", &g)] {
            let t = Instant::now();
            for _ in 0..n {
                e.detect(x).expect("detect");
            }
            let det = t.elapsed().as_secs_f64() * 1000.0 / n as f64;
            let t = Instant::now();
            for _ in 0..n {
                e.embedding(x).expect("embedding");
            }
            let emb = t.elapsed().as_secs_f64() * 1000.0 / n as f64;
            let (t, c) = (Instant::now(), cpu_ms());
            for _ in 0..n {
                e.landmarks68(x).expect("landmarks");
            }
            let lm = t.elapsed().as_secs_f64() * 1000.0 / n as f64;
            let lm_cpu = (cpu_ms() - c) / n as f64;
            eprintln!(
                "{name}: detect {det:.1} ms, embedding (detect+align+encode) {emb:.1} ms, landmarks68 (detect+68 pts) {lm:.1} ms wall / {lm_cpu:.1} ms CPU"
            );
        }
        let r = rotated(&a, 45.0);
        let t = Instant::now();
        e.detect(&r).expect("cnn");
        eprintln!(
            "CNN fallback detect (astronaut rotated 45, HOG x2 + CNN at {CNN_SIDE}): {:?}",
            t.elapsed()
        );
        let blank = RgbImage::from_pixel(1280, 960, image::Rgb([200, 200, 200]));
        let t = Instant::now();
        let _ = e.detect(&blank);
        eprintln!(
            "no-face 1280x960 (worst case: HOG, CNN at {CNN_SIDE}): {:?}",
            t.elapsed()
        );
        let big = scaled(&a, 3.5);
        let t = Instant::now();
        let _ = image::imageops::resize(&big, 1024, 1024, image::imageops::FilterType::Triangle);
        let tri = t.elapsed();
        let t = Instant::now();
        let _ = image::imageops::thumbnail(&big, 1024, 1024);
        eprintln!(
            "shrinking 1792x1792 to 1024: Triangle {tri:?}, thumbnail {:?}",
            t.elapsed()
        );
        let t = Instant::now();
        e.embedding(&big).expect("big");
        eprintln!(
            "embedding of a 1792x1792 image (downscaled to {MAX_SIDE}): {:?}",
            t.elapsed()
        );
        let selfie = scaled(&g, 2.5); // 1280x1500
        let t = Instant::now();
        e.compare(&selfie, &a).expect("compare big");
        eprintln!(
            "compare 1280x1500 (downscaled to {MAX_SIDE}) vs 512x512: {:?}",
            t.elapsed()
        );
    }

    #[test]
    fn odd_shapes_are_answered_not_crashed() {
        with_engine(|e| {
            let noise = |w: u32, h: u32| {
                RgbImage::from_fn(w, h, |x, y| {
                    let v = (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503)) as u8;
                    image::Rgb([v, v.wrapping_mul(3), v.wrapping_mul(7)])
                })
            };
            for (w, h) in [
                (2000, 40),
                (40, 2000),
                (5000, 33),
                (33, 33),
                (31, 500),
                (1, 1),
            ] {
                let r = e.embedding(&noise(w, h));
                eprintln!("{w}x{h} noise: {:?}", r.as_ref().map(|v| v.len()));
                assert!(matches!(
                    r,
                    Err(FaceError::NoFace) | Err(FaceError::MultipleFaces(_)) | Ok(_)
                ));
                assert_eq!(
                    e.landmarks68(&RgbImage::from_pixel(w, h, image::Rgb([0, 0, 0]))),
                    Err(FaceError::NoFace)
                );
            }
        });
    }

    #[test]
    fn model_errors() {
        let missing = PathBuf::from("/nonexistent-kyc-models");
        match FaceEngine::load(&missing) {
            Err(FaceError::Model { file, reason }) => {
                assert!(file.ends_with(CNN_DETECTOR_FILE), "{file}");
                assert!(reason.contains("install-vision"), "{reason}");
            }
            Err(other) => panic!("unexpected error {other:?}"),
            Ok(_) => panic!("loaded from a missing directory"),
        }
    }
}
