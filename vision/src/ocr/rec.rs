//! Line crops, text direction and recognition around the PP-OCRv4 models, following
//! `rapidocr-onnxruntime` 1.4.4 (`get_rotate_crop_image`, `ch_ppocr_cls`, `ch_ppocr_rec`).

use image::RgbImage;

use super::det::{Quad, push_chw_bgr};
use crate::imaging::{resize_linear, sample};

/// Recognition input height and the narrowest batch width (`rec_img_shape: [3, 48, 320]`).
pub const REC_H: u32 = 48;
pub const REC_MIN_W: u32 = 320;
/// Direction-classifier input (`cls_image_shape: [3, 48, 192]`).
pub const CLS_W: u32 = 192;
/// Crops per model call (`rec_batch_num`, `cls_batch_num`).
pub const BATCH: usize = 6;

/// `get_rotate_crop_image`: the quad warped to an upright rectangle (border replicated), turned
/// a quarter when it is at least 1.5 times taller than wide.
#[must_use]
pub fn crop(img: &RgbImage, q: &Quad) -> RgbImage {
    let dist = |a: [f32; 2], b: [f32; 2]| (a[0] - b[0]).hypot(a[1] - b[1]);
    let w = (dist(q[0], q[1]).max(dist(q[2], q[3])) as u32).max(1);
    let h = (dist(q[0], q[3]).max(dist(q[1], q[2])) as u32).max(1);
    // bilinear interpolation of the quad: exact for the parallelograms that boxes are
    let out = RgbImage::from_fn(w, h, |x, y| {
        let (u, v) = (x as f32 / w as f32, y as f32 / h as f32);
        let top = [
            q[0][0] + (q[1][0] - q[0][0]) * u,
            q[0][1] + (q[1][1] - q[0][1]) * u,
        ];
        let bot = [
            q[3][0] + (q[2][0] - q[3][0]) * u,
            q[3][1] + (q[2][1] - q[3][1]) * u,
        ];
        sample(
            img,
            top[0] + (bot[0] - top[0]) * v,
            top[1] + (bot[1] - top[1]) * v,
        )
    });
    if f64::from(h) / f64::from(w) >= 1.5 {
        image::imageops::rotate270(&out)
    } else {
        out
    }
}

/// `resize_norm_img`: height 48, width in proportion up to `width`, then zero padding to `width`.
pub fn push_line(img: &RgbImage, width: u32, out: &mut Vec<f32>) {
    let (w, h) = img.dimensions();
    let ratio = f64::from(w) / f64::from(h);
    let rw = ((f64::from(REC_H) * ratio).ceil() as u32).clamp(1, width);
    push_chw_bgr(&resize_linear(img, rw, REC_H), width, out);
}

/// Crop indices in order of width / height, in batches of [`BATCH`] (both models sort this way).
#[must_use]
pub fn batches(crops: &[RgbImage]) -> Vec<Vec<usize>> {
    let ratio = |i: usize| f64::from(crops[i].width()) / f64::from(crops[i].height());
    let mut order: Vec<usize> = (0..crops.len()).collect();
    order.sort_by(|&a, &b| ratio(a).total_cmp(&ratio(b)));
    order.chunks(BATCH).map(<[usize]>::to_vec).collect()
}

/// The recognition batch width: 48 × the widest ratio in the batch, at least 320.
#[must_use]
pub fn batch_width(crops: &[RgbImage], batch: &[usize]) -> u32 {
    let max_ratio = batch
        .iter()
        .fold(f64::from(REC_MIN_W) / f64::from(REC_H), |m, &i| {
            m.max(f64::from(crops[i].width()) / f64::from(crops[i].height()))
        });
    (f64::from(REC_H) * max_ratio) as u32
}

/// The character classes of the recognition model: the CTC blank, the model's dictionary (its
/// ONNX metadata key `character`), and a space (`CTCLabelDecode` with `use_space_char`).
#[derive(Debug, Clone)]
pub struct Charset(Vec<String>);

impl Charset {
    #[must_use]
    pub fn from_metadata(character: &str) -> Self {
        let mut v = vec![String::new()];
        v.extend(character.split('\n').map(str::to_owned));
        v.push(" ".to_owned());
        Self(v)
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.len() <= 2
    }

    /// CTC greedy decoding of one line (`steps` × `classes` probabilities): the most likely class
    /// per step, repeats collapsed, blanks dropped; the score is the mean probability of the kept
    /// steps (0 when none is kept).
    #[must_use]
    pub fn decode(&self, probs: &[f32], classes: usize) -> (String, f32) {
        let mut text = String::new();
        let (mut sum, mut n) = (0.0f32, 0u32);
        let mut prev = usize::MAX;
        for step in probs.chunks_exact(classes) {
            let (idx, p) = step
                .iter()
                .copied()
                .enumerate()
                .fold((0, f32::MIN), |b, (i, v)| if v > b.1 { (i, v) } else { b });
            if idx != 0
                && idx != prev
                && let Some(c) = self.0.get(idx)
            {
                text.push_str(c);
                sum += p;
                n += 1;
            }
            prev = idx;
        }
        let score = if n == 0 { 0.0 } else { sum / n as f32 };
        (text, score)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctc_collapses_repeats_drops_blanks_and_keeps_doubled_letters() {
        let cs = Charset::from_metadata("a\nb\n中");
        assert_eq!(cs.len(), 5); // blank, a, b, 中, space
        let step = |i: usize, p: f32| {
            let mut v = vec![(1.0 - p) / 4.0; 5];
            v[i] = p;
            v
        };
        // a a _ a b b _ 中 space -> "aab中 "
        let seq: Vec<f32> = [1, 1, 0, 1, 2, 2, 0, 3, 4]
            .iter()
            .flat_map(|&i| step(i, 0.9))
            .collect();
        let (text, score) = cs.decode(&seq, 5);
        assert_eq!(text, "aab中 ");
        assert!((score - 0.9).abs() < 1e-6);
        assert_eq!(cs.decode(&step(0, 0.9), 5), (String::new(), 0.0));
    }

    #[test]
    fn batches_sort_by_ratio_and_widths_follow_the_widest() {
        let crops = vec![
            RgbImage::new(480, 48),
            RgbImage::new(96, 48),
            RgbImage::new(960, 30),
        ];
        let b = batches(&crops);
        assert_eq!(b, vec![vec![1, 0, 2]]);
        assert_eq!(batch_width(&crops, &b[0]), 48 * 32);
        assert_eq!(batch_width(&crops, &[1]), 320);
        let mut out = Vec::new();
        push_line(&crops[1], 320, &mut out);
        assert_eq!(out.len(), 3 * 48 * 320);
        // 96 x 48 scales to 96 wide; the padding is zero, the image black (-1)
        assert_eq!(out[95], -1.0);
        assert_eq!(out[96], 0.0);
    }

    #[test]
    fn tall_crops_are_turned_upright() {
        let mut img = RgbImage::new(100, 100);
        img.put_pixel(10, 10, image::Rgb([255, 0, 0]));
        let q = [[0.0, 0.0], [20.0, 0.0], [20.0, 60.0], [0.0, 60.0]];
        let c = crop(&img, &q);
        assert_eq!(c.dimensions(), (60, 20));
    }
}
