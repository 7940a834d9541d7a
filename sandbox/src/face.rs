//! Synthetic faces and their comparison. A face is a handful of parameters drawn from a seed
//! (shape, hairline, eyes, brows, nose, mouth, colours) and rendered procedurally at any position,
//! scale and brightness. Comparison finds the largest skin-coloured blob, samples its luma on a
//! fixed grid, and scores the cosine similarity of the normalised grids. Not a real face matcher.

use image::{Rgb, RgbImage};

use crate::imaging::{self, fill_ellipse, fill_rect, fill_where, shade};
use crate::prng::SplitMix64;

/// The parameters that make one synthetic person's face. Lengths are in units of the face's
/// half-width; y grows downwards from the face's centre.
#[derive(Debug, Clone, PartialEq)]
pub struct Face {
    skin: [u8; 3],
    hair: [u8; 3],
    lips: [u8; 3],
    iris: [u8; 3],
    shirt: [u8; 3],
    face_ry: f32,
    hairline: f32,
    hair_tilt: f32,
    hair_curve: f32,
    hair_volume: f32,
    hair_length: f32,
    eye_y: f32,
    eye_dx: f32,
    eye_rx: f32,
    eye_ry: f32,
    brow_gap: f32,
    brow_thick: f32,
    brow_len: f32,
    nose_y: f32,
    nose_len: f32,
    nose_w: f32,
    mouth_y: f32,
    mouth_w: f32,
    mouth_h: f32,
    glasses: bool,
}

/// Where and how a face is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pose {
    pub cx: f32,
    pub cy: f32,
    /// Pixels per face unit (the face's half-width).
    pub scale: f32,
    /// Multiplies every colour drawn.
    pub brightness: f32,
    pub eyes_closed: bool,
    /// A head turn drawn the cheap way: brows, eyes, nose and mouth shift this many face units
    /// sideways inside the face's outline (positive: towards the image's right).
    pub yaw: f32,
    /// 0 (closed) to 1 (wide open): the lips part downwards around a dark opening.
    pub mouth_open: f32,
}

impl Pose {
    /// A frontal face, eyes open, mouth closed.
    #[must_use]
    pub const fn new(cx: f32, cy: f32, scale: f32, brightness: f32) -> Self {
        Self {
            cx,
            cy,
            scale,
            brightness,
            eyes_closed: false,
            yaw: 0.0,
            mouth_open: 0.0,
        }
    }
}

const SKIN: [[u8; 3]; 6] = [
    [236, 198, 170],
    [224, 180, 150],
    [210, 160, 125],
    [196, 146, 112],
    [182, 132, 100],
    [240, 205, 178],
];
const HAIR: [[u8; 3]; 5] = [
    [25, 20, 18],
    [45, 32, 25],
    [70, 48, 32],
    [22, 22, 28],
    [58, 40, 30],
];
const LIPS: [[u8; 3]; 4] = [
    [185, 88, 98],
    [200, 105, 115],
    [165, 78, 90],
    [175, 95, 110],
];
const IRIS: [[u8; 3]; 3] = [[40, 30, 25], [60, 40, 30], [30, 30, 35]];
const SHIRT: [[u8; 3]; 5] = [
    [40, 60, 110],
    [200, 200, 205],
    [30, 30, 35],
    [70, 110, 80],
    [120, 40, 50],
];

impl Face {
    /// The face for a seed label; the same label always gives the same face.
    #[must_use]
    pub fn from_label(label: &str) -> Self {
        let mut r = SplitMix64::from_label(label);
        let jitter = |r: &mut SplitMix64, c: [u8; 3]| {
            let d = r.range(-6.0, 6.0);
            c.map(|v| (f32::from(v) + d).round().clamp(0.0, 255.0) as u8)
        };
        let skin = r.pick(&SKIN);
        let skin = jitter(&mut r, skin);
        let hair = r.pick(&HAIR);
        let lips = r.pick(&LIPS);
        let iris = r.pick(&IRIS);
        let shirt = r.pick(&SHIRT);
        let face_ry = r.range(1.18, 1.42);
        let eye_rx = r.range(0.13, 0.2);
        let nose_y = r.range(0.08, 0.26);
        let nose_len = r.range(0.1, 0.22);
        let mouth_y = (nose_y + nose_len + r.range(0.14, 0.32)).min(face_ry * 0.78);
        Self {
            skin,
            hair,
            lips,
            iris,
            shirt,
            face_ry,
            hairline: r.range(-1.05, -0.55),
            hair_tilt: r.range(-0.25, 0.25),
            hair_curve: r.range(0.0, 0.45),
            hair_volume: r.unit(),
            hair_length: r.unit(),
            eye_y: r.range(-0.35, -0.05),
            eye_dx: r.range(0.34, 0.52),
            eye_rx,
            eye_ry: r.range(0.055, 0.09),
            brow_gap: r.range(0.13, 0.24),
            brow_thick: r.range(0.03, 0.07),
            brow_len: eye_rx * r.range(1.1, 1.5),
            nose_y,
            nose_len,
            nose_w: r.range(0.06, 0.12),
            mouth_y,
            mouth_w: r.range(0.2, 0.38),
            mouth_h: r.range(0.04, 0.09),
            glasses: r.unit() < 0.25,
        }
    }

    /// Draws the face (with hair, shoulders and collar) onto `img`.
    pub fn draw(&self, img: &mut RgbImage, pose: Pose) {
        let Pose {
            cx, cy, scale: s, ..
        } = pose;
        let c = |col: [u8; 3]| shade(col, pose.brightness);
        let px = |u: f32| cx + u * s;
        let py = |v: f32| cy + v * s;
        let ry = self.face_ry;

        // Shoulders and a collar reaching under the chin, so no skin-coloured neck joins the face.
        fill_ellipse(
            img,
            px(0.0),
            py(ry + 1.35),
            2.2 * s,
            1.05 * s,
            c(self.shirt),
        );
        fill_rect(
            img,
            px(-0.55),
            py(ry * 0.6),
            px(0.55),
            py(ry + 2.0),
            c(self.shirt),
        );

        // Hair behind the head, longer or shorter.
        let hw = 1.12 + self.hair_volume * 0.15;
        let top = -ry * 0.25 - 0.05;
        fill_ellipse(
            img,
            px(0.0),
            py(top),
            hw * s,
            (ry * 0.95 + self.hair_volume * 0.1) * s,
            c(self.hair),
        );
        if self.hair_length > 0.35 {
            fill_rect(
                img,
                px(-hw),
                py(top),
                px(hw),
                py(ry * self.hair_length),
                c(self.hair),
            );
        }

        fill_ellipse(img, px(0.0), py(0.0), s, ry * s, c(self.skin));

        // The fringe: the face above the hairline is hair.
        let (hl, tilt, curve) = (self.hairline, self.hair_tilt, self.hair_curve);
        fill_where(
            img,
            px(-1.0),
            py(-ry),
            px(1.0),
            py(0.0),
            c(self.hair),
            |x, y| {
                let u = (x - cx) / s;
                let v = (y - cy) / s;
                u * u + (v / ry) * (v / ry) <= 1.0 && v < hl + tilt * u + curve * u * u
            },
        );

        // Everything below belongs to the features, which a turn shifts inside the outline.
        let px = |u: f32| cx + (u + pose.yaw) * s;
        for side in [-1.0f32, 1.0] {
            let ex = side * self.eye_dx;
            let brow_y = self.eye_y - self.eye_ry - self.brow_gap;
            fill_ellipse(
                img,
                px(ex),
                py(brow_y),
                self.brow_len * s,
                self.brow_thick * s,
                c(self.hair),
            );
            if self.glasses {
                let (gx, gy) = (self.eye_rx + 0.1, self.eye_ry + 0.1);
                fill_ellipse(img, px(ex), py(self.eye_y), gx * s, gy * s, c([30, 30, 30]));
                fill_ellipse(
                    img,
                    px(ex),
                    py(self.eye_y),
                    (gx - 0.035) * s,
                    (gy - 0.035) * s,
                    c(self.skin),
                );
            }
            if pose.eyes_closed {
                let lid = shade(self.skin, 0.55 * pose.brightness);
                fill_ellipse(img, px(ex), py(self.eye_y), self.eye_rx * s, 0.018 * s, lid);
            } else {
                fill_ellipse(
                    img,
                    px(ex),
                    py(self.eye_y),
                    self.eye_rx * s,
                    self.eye_ry * s,
                    c([245, 245, 240]),
                );
                let r = self.eye_ry * 0.95 * s;
                fill_ellipse(img, px(ex), py(self.eye_y), r, r, c(self.iris));
                fill_ellipse(
                    img,
                    px(ex),
                    py(self.eye_y),
                    r * 0.45,
                    r * 0.45,
                    c([8, 8, 10]),
                );
            }
        }
        if self.glasses {
            let x = self.eye_dx - self.eye_rx - 0.1;
            fill_rect(
                img,
                px(-x),
                py(self.eye_y - 0.02),
                px(x),
                py(self.eye_y + 0.02),
                c([30, 30, 30]),
            );
        }

        let nose = shade(self.skin, 0.85 * pose.brightness);
        fill_ellipse(
            img,
            px(0.0),
            py(self.nose_y),
            self.nose_w * s,
            self.nose_len * s,
            nose,
        );
        let nostril = shade(self.skin, 0.5 * pose.brightness);
        for side in [-1.0f32, 1.0] {
            let x = side * self.nose_w * 0.8;
            let y = self.nose_y + self.nose_len * 0.8;
            fill_ellipse(img, px(x), py(y), 0.035 * s, 0.03 * s, nostril);
        }
        let open = pose.mouth_open.clamp(0.0, 1.0);
        if open > 0.0 {
            // The jaw drops: the lips grow downwards (keeping skin under them, so the chin and
            // the face's outline do not move) around a dark opening.
            let room = (ry - 0.1 - self.mouth_y - self.mouth_h).clamp(0.0, 0.18);
            let drop = room * open;
            let (my, mh) = (self.mouth_y + drop / 2.0, self.mouth_h + drop / 2.0);
            fill_ellipse(img, px(0.0), py(my), self.mouth_w * s, mh * s, c(self.lips));
            fill_ellipse(
                img,
                px(0.0),
                py(my + 0.1 * mh),
                self.mouth_w * 0.78 * s,
                mh * 0.72 * s,
                c([62, 22, 30]),
            );
        } else {
            fill_ellipse(
                img,
                px(0.0),
                py(self.mouth_y),
                self.mouth_w * s,
                self.mouth_h * s,
                c(self.lips),
            );
        }
    }
}

/// Why no face could be compared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no face found: {0}")]
pub struct NoFace(pub &'static str);

/// Skin as the sandbox draws it: warm (red > green > blue), clearly tinted, not too dark.
#[must_use]
pub fn is_skin(p: Rgb<u8>) -> bool {
    let [r, g, b] = p.0.map(i32::from);
    r >= 110 && r > g && g > b && r - b >= 35 && r - g >= 12 && r - b <= 150
}

/// Where a face is in an image, in that image's pixels: its bounding box, and for each row of
/// the box the span the face covers (skin plus what lies between: eyes, brows, mouth).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaceBox {
    pub x0: u32,
    pub y0: u32,
    pub x1: u32,
    pub y1: u32,
    spans: Vec<(u32, u32)>,
}

impl FaceBox {
    /// The face's rows, top to bottom: `(y, x_start, x_end)` in image pixels, end exclusive,
    /// for each row of the box where the face shows.
    pub fn rows(&self) -> impl Iterator<Item = (u32, u32, u32)> + '_ {
        self.spans
            .iter()
            .zip(self.y0..)
            .filter(|((a, b), _)| b > a)
            .map(|(&(a, b), y)| (y, self.x0 + a, self.x0 + b))
    }
}

/// Finds the largest skin-coloured blob shaped like a face.
///
/// # Errors
/// [`NoFace`] with the reason when no blob is big enough or face-shaped.
pub fn find(img: &RgbImage) -> Result<FaceBox, NoFace> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    // 0: not skin; 1: skin, not yet labelled; 2..: blob label.
    let mut label: Vec<u32> = img
        .as_raw()
        .chunks_exact(3)
        .map(|p| u32::from(is_skin(Rgb([p[0], p[1], p[2]]))))
        .collect();
    let mut best: Option<(usize, u32, [usize; 4])> = None;
    let mut stack = Vec::new();
    let mut next = 2u32;
    for start in 0..label.len() {
        if label[start] != 1 {
            continue;
        }
        let id = next;
        next += 1;
        label[start] = id;
        stack.push(start);
        let (mut area, mut bb) = (0usize, [w, h, 0, 0]);
        while let Some(i) = stack.pop() {
            area += 1;
            let (x, y) = (i % w, i / w);
            bb = [
                bb[0].min(x),
                bb[1].min(y),
                bb[2].max(x + 1),
                bb[3].max(y + 1),
            ];
            for (ok, j) in [
                (x > 0, i.wrapping_sub(1)),
                (x + 1 < w, i + 1),
                (y > 0, i.wrapping_sub(w)),
                (y + 1 < h, i + w),
            ] {
                if ok && label[j] == 1 {
                    label[j] = id;
                    stack.push(j);
                }
            }
        }
        if best.is_none_or(|(a, _, _)| area > a) {
            best = Some((area, id, bb));
        }
    }
    let (area, id, [x0, y0, x1, y1]) = best.ok_or(NoFace("no skin-coloured region"))?;
    let (bw, bh) = (x1 - x0, y1 - y0);
    if area < 300usize.max(w * h / 400) || bw < 16 || bh < 16 {
        return Err(NoFace("the largest skin-coloured region is too small"));
    }
    let aspect = bh as f32 / bw as f32;
    let fill = area as f32 / (bw * bh) as f32;
    if !(0.8..=2.2).contains(&aspect) || !(0.4..=0.93).contains(&fill) {
        return Err(NoFace(
            "the largest skin-coloured region is not face-shaped",
        ));
    }
    let spans = (y0..y1)
        .map(|y| {
            let row = &label[y * w + x0..y * w + x1];
            let first = row.iter().position(|&l| l == id);
            let last = row.iter().rposition(|&l| l == id);
            match (first, last) {
                (Some(a), Some(b)) => (a as u32, b as u32 + 1),
                _ => (0, 0),
            }
        })
        .collect();
    let c = |v: usize| v as u32;
    Ok(FaceBox {
        x0: c(x0),
        y0: c(y0),
        x1: c(x1),
        y1: c(y1),
        spans,
    })
}

/// Grid size of the feature vector.
const GW: usize = 24;
const GH: usize = 30;

/// The face's feature vector: the luma of the face (its box, with what lies beside the face in
/// each row replaced by the face's mean) on a fixed grid, normalised to mean 0 and variance 1 so
/// brightness and contrast drop out.
///
/// # Errors
/// [`NoFace`] when [`find`] finds none.
pub fn features(img: &RgbImage) -> Result<Vec<f32>, NoFace> {
    let work = imaging::fit(img, 1024);
    let bx = find(&work)?;
    let gray = imaging::to_gray(&work);
    let (bw, bh) = (bx.x1 - bx.x0, bx.y1 - bx.y0);
    let inside = |x: u32, y: u32| {
        let (a, b) = bx.spans[y as usize];
        x >= a && x < b
    };
    let (mut sum, mut n) = (0u64, 0u64);
    for y in 0..bh {
        for x in 0..bw {
            if inside(x, y) {
                sum += u64::from(gray.get_pixel(bx.x0 + x, bx.y0 + y)[0]);
                n += 1;
            }
        }
    }
    let mean = (sum / n.max(1)) as u8;
    let face = image::GrayImage::from_fn(bw, bh, |x, y| {
        if inside(x, y) {
            *gray.get_pixel(bx.x0 + x, bx.y0 + y)
        } else {
            image::Luma([mean])
        }
    });
    // Resampling with an area filter makes the grid barely depend on the face's size in pixels.
    let small = image::imageops::resize(
        &face,
        GW as u32,
        GH as u32,
        image::imageops::FilterType::Triangle,
    );
    let v: Vec<f32> = small.pixels().map(|p| f32::from(p[0])).collect();
    let n = v.len() as f32;
    let mean = v.iter().sum::<f32>() / n;
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / n;
    let sd = var.sqrt().max(1e-3);
    Ok(v.into_iter().map(|x| (x - mean) / sd).collect())
}

/// Cosine similarity of two feature vectors.
#[must_use]
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

/// Cosine similarity at or under which the score is 0.
pub const SCORE_FLOOR: f64 = 0.2;

/// The similarity score in [0, 1] of a cosine similarity `c` of two feature vectors:
/// `max(0, (c - 0.2) / 0.8)`, rounded to 4 decimals.
#[must_use]
pub fn score(c: f64) -> f64 {
    let s = ((c - SCORE_FLOOR) / (1.0 - SCORE_FLOOR)).clamp(0.0, 1.0);
    (s * 10_000.0).round() / 10_000.0
}

/// The score of the faces in two images.
///
/// # Errors
/// [`NoFace`] when either image has no face.
pub fn compare(a: &RgbImage, b: &RgbImage) -> Result<f64, NoFace> {
    Ok(score(cosine(&features(a)?, &features(b)?)))
}
