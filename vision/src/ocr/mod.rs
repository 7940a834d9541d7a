//! The OCR engine: PP-OCRv4 detection, direction classification and recognition on ONNX Runtime,
//! with the pre- and post-processing of `rapidocr-onnxruntime` 1.4.4 reproduced step by step
//! ([`det`], [`rec`]).

pub mod det;
pub mod rec;

use std::path::Path;

use image::RgbImage;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::Tensor;

use crate::models::{self, ModelError};
use det::{DetParams, Quad};
use rec::Charset;

/// Lines scoring under this are dropped (`text_score`).
pub const TEXT_SCORE: f32 = 0.5;
/// A line is turned 180° when the classifier says so with more than this (`cls_thresh`).
pub const CLS_THRESH: f32 = 0.9;
/// Images with a longer side are scaled down to it first (`max_side_len`).
pub const MAX_SIDE_LEN: u32 = 2000;

/// One recognised line: its text, score and box in the input image.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub text: String,
    pub score: f32,
    pub quad: Quad,
}

impl Line {
    #[must_use]
    pub fn center(&self) -> [f32; 2] {
        let s = self
            .quad
            .iter()
            .fold([0.0, 0.0], |a, p| [a[0] + p[0], a[1] + p[1]]);
        [s[0] / 4.0, s[1] / 4.0]
    }

    #[must_use]
    pub fn height(&self) -> f32 {
        let d = |a: [f32; 2], b: [f32; 2]| (a[0] - b[0]).hypot(a[1] - b[1]);
        d(self.quad[0], self.quad[3]).max(d(self.quad[1], self.quad[2]))
    }
}

/// The three models of one worker. `Session::run` takes `&mut self`, so each worker of the
/// pool owns its engine.
pub struct Engine {
    det: Session,
    cls: Session,
    rec: Session,
    charset: Charset,
    params: DetParams,
}

fn ort_err(file: &str) -> impl Fn(ort::Error) -> ModelError + '_ {
    move |e| ModelError::Load {
        file: file.to_owned(),
        reason: e.to_string(),
    }
}

impl Engine {
    /// Loads the models from `dir` (checked by [`models::verify`] first) with `threads` intra-op
    /// threads per model.
    ///
    /// # Errors
    /// A model that ONNX Runtime cannot load, or a recognition model without its dictionary.
    pub fn load(dir: &Path, threads: usize) -> Result<Self, ModelError> {
        let env = models::environment(dir)?;
        let open = |file: &'static str| -> Result<Session, ModelError> {
            Session::builder(&env)
                .map_err(ort_err(file))?
                .with_intra_threads(threads)
                .map_err(|e| ort_err(file)(e.into()))?
                .with_inter_threads(1)
                .map_err(|e| ort_err(file)(e.into()))?
                // as the reference sets them: every graph optimisation, and no CPU memory arena
                // (with one, resident memory grew by ~60 MB a card as recognition batch widths varied)
                .with_optimization_level(GraphOptimizationLevel::All)
                .map_err(|e| ort_err(file)(e.into()))?
                .with_execution_providers([ort::ep::CPU::default()
                    .with_arena_allocator(false)
                    .build()])
                .map_err(|e| ort_err(file)(e.into()))?
                .commit_from_file(dir.join(file))
                .map_err(ort_err(file))
        };
        let det = open(models::DET)?;
        let cls = open(models::CLS)?;
        let rec = open(models::REC)?;
        let character = rec
            .metadata()
            .ok()
            .and_then(|m| m.custom("character"))
            .ok_or_else(|| ModelError::Load {
                file: models::REC.to_owned(),
                reason: "no `character` dictionary in the model's metadata".to_owned(),
            })?;
        Ok(Self {
            det,
            cls,
            rec,
            charset: Charset::from_metadata(&character),
            params: DetParams::default(),
        })
    }

    /// Reads every text line of an image, in reading order.
    ///
    /// # Errors
    /// An ONNX Runtime failure.
    pub fn read(&mut self, img: &RgbImage) -> Result<Vec<Line>, ort::Error> {
        let (img, scale) = reduce_max_side(img);
        let quads = self.detect(&img)?;
        let mut crops: Vec<RgbImage> = quads.iter().map(|q| rec::crop(&img, q)).collect();
        self.classify(&mut crops)?;
        let texts = self.recognize(&crops)?;
        Ok(quads
            .into_iter()
            .zip(texts)
            .filter(|(_, (_, s))| *s >= TEXT_SCORE)
            .map(|(q, (text, score))| Line {
                text,
                score,
                quad: q.map(|[x, y]| [x * scale.0, y * scale.1]),
            })
            .collect())
    }

    /// Text boxes, in reading order.
    ///
    /// # Errors
    /// An ONNX Runtime failure.
    pub fn detect(&mut self, img: &RgbImage) -> Result<Vec<Quad>, ort::Error> {
        let (w, h) = img.dimensions();
        let (iw, ih) = det::input_size(w, h, self.params.limit_side_len);
        let mut data = Vec::with_capacity((3 * iw * ih) as usize);
        det::push_chw_bgr(&crate::imaging::resize_linear(img, iw, ih), iw, &mut data);
        let input = Tensor::from_array(([1usize, 3, ih as usize, iw as usize], data))?;
        let outputs = self.det.run(ort::inputs![input])?;
        let (shape, pred) = outputs[0].try_extract_tensor::<f32>()?;
        let (pw, ph) = (shape[3] as u32, shape[2] as u32);
        Ok(det::boxes(pred, pw, ph, (w, h), &self.params))
    }

    fn classify(&mut self, crops: &mut [RgbImage]) -> Result<(), ort::Error> {
        for batch in rec::batches(crops) {
            let mut data = Vec::with_capacity(batch.len() * 3 * 48 * rec::CLS_W as usize);
            for &i in &batch {
                rec::push_line(&crops[i], rec::CLS_W, &mut data);
            }
            let shape = [batch.len(), 3, rec::REC_H as usize, rec::CLS_W as usize];
            let outputs = self
                .cls
                .run(ort::inputs![Tensor::from_array((shape, data))?])?;
            let (_, probs) = outputs[0].try_extract_tensor::<f32>()?;
            for (&i, p) in batch.iter().zip(probs.chunks_exact(2)) {
                if p[1] > p[0] && p[1] > CLS_THRESH {
                    image::imageops::rotate180_in_place(&mut crops[i]);
                }
            }
        }
        Ok(())
    }

    fn recognize(&mut self, crops: &[RgbImage]) -> Result<Vec<(String, f32)>, ort::Error> {
        let mut out = vec![(String::new(), 0.0); crops.len()];
        for batch in rec::batches(crops) {
            let width = rec::batch_width(crops, &batch);
            let mut data = Vec::with_capacity(batch.len() * 3 * 48 * width as usize);
            for &i in &batch {
                rec::push_line(&crops[i], width, &mut data);
            }
            let shape = [batch.len(), 3, rec::REC_H as usize, width as usize];
            let outputs = self
                .rec
                .run(ort::inputs![Tensor::from_array((shape, data))?])?;
            let (shape, probs) = outputs[0].try_extract_tensor::<f32>()?;
            let classes = shape[2] as usize;
            let per_line = shape[1] as usize * classes;
            for (&i, p) in batch.iter().zip(probs.chunks_exact(per_line)) {
                out[i] = self.charset.decode(p, classes);
            }
        }
        Ok(out)
    }
}

/// `reduce_max_side`: an image with a side over [`MAX_SIDE_LEN`] is scaled down (each side
/// rounded half-to-even to a multiple of 32). Returns the image and the factors back to the
/// input's coordinates.
fn reduce_max_side(img: &RgbImage) -> (std::borrow::Cow<'_, RgbImage>, (f32, f32)) {
    let (w, h) = img.dimensions();
    if w.max(h) <= MAX_SIDE_LEN {
        return (std::borrow::Cow::Borrowed(img), (1.0, 1.0));
    }
    let ratio = f64::from(MAX_SIDE_LEN) / f64::from(w.max(h));
    let side = |s: u32| {
        let s = (f64::from(s) * ratio).trunc();
        (((s / 32.0).round_ties_even() * 32.0) as u32).max(32)
    };
    let (rw, rh) = (side(w), side(h));
    (
        std::borrow::Cow::Owned(crate::imaging::resize_linear(img, rw, rh)),
        (w as f32 / rw as f32, h as f32 / rh as f32),
    )
}
