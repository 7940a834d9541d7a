//! Text detection around the PP-OCRv4 DB model: the input size and tensor, and the probability
//! map turned into text boxes. Each step follows `rapidocr-onnxruntime` 1.4.4
//! (`ch_ppocr_det`), whose parameters are the defaults of [`DetParams`]; the comments name the
//! reference function each piece reproduces.

use image::{GrayImage, Luma, RgbImage};
use imageproc::point::Point;

/// A text box in image coordinates: top-left, top-right, bottom-right, bottom-left.
pub type Quad = [[f32; 2]; 4];

/// The reference's `Det` section of `config.yaml`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetParams {
    /// The shorter side is scaled up to at least this (`limit_type: min`).
    pub limit_side_len: u32,
    /// Probability over which a pixel is text.
    pub thresh: f32,
    /// Mean probability under which a box is dropped.
    pub box_thresh: f32,
    /// How far a box grows: area × ratio / perimeter on each side.
    pub unclip_ratio: f32,
    pub max_candidates: usize,
}

impl Default for DetParams {
    fn default() -> Self {
        Self {
            limit_side_len: 736,
            thresh: 0.3,
            box_thresh: 0.5,
            unclip_ratio: 1.6,
            max_candidates: 1000,
        }
    }
}

const MIN_SIZE: f32 = 3.0;

/// The model's input size for an image (`DetPreProcess.resize_image_type0`, `limit_type: min`):
/// the shorter side scaled up to `limit`, then each side rounded half-to-even to a multiple of 32.
#[must_use]
pub fn input_size(w: u32, h: u32, limit: u32) -> (u32, u32) {
    let short = f64::from(w.min(h));
    let ratio = if short < f64::from(limit) {
        f64::from(limit) / short
    } else {
        1.0
    };
    let side = |s: u32| {
        let s = (f64::from(s) * ratio).trunc();
        (((s / 32.0).round_ties_even() * 32.0) as u32).max(32)
    };
    (side(w), side(h))
}

/// CHW float tensor in BGR order, `(x / 255 - 0.5) / 0.5`: the normalisation of both models.
pub fn push_chw_bgr(img: &RgbImage, width: u32, out: &mut Vec<f32>) {
    let (w, h) = img.dimensions();
    let start = out.len();
    out.resize(start + 3 * (h * width) as usize, 0.0);
    let plane = (h * width) as usize;
    for (x, y, p) in img.enumerate_pixels() {
        let at = (y * width + x) as usize;
        for c in 0..3 {
            // channel 0 is blue
            out[start + c * plane + at] = f32::from(p.0[2 - c]) / 127.5 - 1.0;
        }
    }
    debug_assert!(w <= width);
}

/// The boxes of a probability map `pred` (`pw` × `ph`, row-major) in an image of `dest`
/// (`DBPostProcess` with `use_dilation: true`, `score_mode: fast`, then
/// `TextDetector.filter_tag_det_res`).
#[must_use]
pub fn boxes(pred: &[f32], pw: u32, ph: u32, dest: (u32, u32), p: &DetParams) -> Vec<Quad> {
    let bitmap = dilate_2x2(&GrayImage::from_fn(pw, ph, |x, y| {
        Luma([if pred[(y * pw + x) as usize] > p.thresh {
            255
        } else {
            0
        }])
    }));
    let mut out = Vec::new();
    let contours = imageproc::contours::find_contours::<i32>(&bitmap);
    for contour in contours.iter().take(p.max_candidates) {
        let Some((quad, short)) = mini_box(&contour.points) else {
            continue;
        };
        if short < MIN_SIZE || box_score_fast(pred, pw, ph, &quad) < p.box_thresh {
            continue;
        }
        let grown = unclip(&quad, p.unclip_ratio);
        // the grown box is a rectangle: its own convex hull
        let Some((quad, short)) = min_area_rect(&grown).map(order_mini_box) else {
            continue;
        };
        if short < MIN_SIZE + 2.0 {
            continue;
        }
        let (dw, dh) = (dest.0 as f32, dest.1 as f32);
        let scaled = quad.map(|[x, y]| {
            [
                (x / pw as f32 * dw).round_ties_even().clamp(0.0, dw),
                (y / ph as f32 * dh).round_ties_even().clamp(0.0, dh),
            ]
        });
        if let Some(q) = filter_tag(scaled, dest) {
            out.push(q);
        }
    }
    sort_reading_order(&mut out);
    out
}

/// `cv2.dilate` with a 2×2 kernel of ones (anchor at its centre, (1, 1)).
fn dilate_2x2(src: &GrayImage) -> GrayImage {
    let (w, h) = src.dimensions();
    GrayImage::from_fn(w, h, |x, y| {
        let xs = [x.saturating_sub(1), x];
        let ys = [y.saturating_sub(1), y];
        let v = ys
            .iter()
            .flat_map(|&yy| xs.iter().map(move |&xx| src.get_pixel(xx, yy).0[0]))
            .max()
            .unwrap_or(0);
        Luma([v])
    })
}

/// The minimum-area rectangle of a point set (`cv2.minAreaRect`), by rotating calipers over the
/// convex hull: its corners and the lengths of its two sides.
fn min_area_rect(hull: &[[f32; 2]]) -> Option<([[f32; 2]; 4], f32, f32)> {
    match hull.len() {
        0 => return None,
        1 => return Some(([hull[0]; 4], 0.0, 0.0)),
        _ => {}
    }
    let mut best: Option<(f32, [[f32; 2]; 4], f32, f32)> = None;
    for i in 0..hull.len() {
        let a = hull[i];
        let b = hull[(i + 1) % hull.len()];
        let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
        let len = dx.hypot(dy);
        if len == 0.0 {
            continue;
        }
        let u = [dx / len, dy / len];
        let v = [-u[1], u[0]];
        let (mut u0, mut u1, mut v0, mut v1) = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
        for q in hull {
            let (rx, ry) = (q[0] - a[0], q[1] - a[1]);
            let pu = rx * u[0] + ry * u[1];
            let pv = rx * v[0] + ry * v[1];
            u0 = u0.min(pu);
            u1 = u1.max(pu);
            v0 = v0.min(pv);
            v1 = v1.max(pv);
        }
        let area = (u1 - u0) * (v1 - v0);
        if best.as_ref().is_none_or(|b| area < b.0) {
            let at =
                |su: f32, sv: f32| [a[0] + u[0] * su + v[0] * sv, a[1] + u[1] * su + v[1] * sv];
            best = Some((
                area,
                [at(u0, v0), at(u1, v0), at(u1, v1), at(u0, v1)],
                u1 - u0,
                v1 - v0,
            ));
        }
    }
    best.map(|(_, c, w, h)| (c, w, h))
}

/// `get_mini_boxes`: the minimum-area rectangle's corners ordered top-left, top-right,
/// bottom-right, bottom-left (by x, then y within each pair), and its shorter side.
fn order_mini_box(rect: ([[f32; 2]; 4], f32, f32)) -> (Quad, f32) {
    let (mut pts, w, h) = rect;
    pts.sort_by(|a, b| a[0].total_cmp(&b[0]));
    let (i1, i4) = if pts[1][1] > pts[0][1] {
        (0, 1)
    } else {
        (1, 0)
    };
    let (i2, i3) = if pts[3][1] > pts[2][1] {
        (2, 3)
    } else {
        (3, 2)
    };
    ([pts[i1], pts[i2], pts[i3], pts[i4]], w.min(h))
}

fn mini_box(points: &[Point<i32>]) -> Option<(Quad, f32)> {
    let hull = imageproc::geometry::convex_hull(points.to_vec());
    let hull: Vec<[f32; 2]> = hull.iter().map(|p| [p.x as f32, p.y as f32]).collect();
    min_area_rect(&hull).map(order_mini_box)
}

/// Whether integer point (x, y) lies in the convex quad (edges included), like `cv2.fillPoly`.
fn inside(q: &[[i32; 2]; 4], x: i32, y: i32) -> bool {
    let mut sign = 0i64;
    for i in 0..4 {
        let a = q[i];
        let b = q[(i + 1) % 4];
        let cross = i64::from(b[0] - a[0]) * i64::from(y - a[1])
            - i64::from(b[1] - a[1]) * i64::from(x - a[0]);
        if cross != 0 {
            if sign != 0 && cross.signum() != sign {
                return false;
            }
            sign = cross.signum();
        }
    }
    true
}

/// `box_score_fast`: the mean probability inside the box.
fn box_score_fast(pred: &[f32], w: u32, h: u32, quad: &Quad) -> f32 {
    let (wi, hi) = (w as i32 - 1, h as i32 - 1);
    let xs = quad.map(|p| p[0]);
    let ys = quad.map(|p| p[1]);
    let fold = |v: [f32; 4], f: fn(f32, f32) -> f32, init| v.into_iter().fold(init, f);
    let xmin = (fold(xs, f32::min, f32::MAX).floor() as i32).clamp(0, wi);
    let xmax = (fold(xs, f32::max, f32::MIN).ceil() as i32).clamp(0, wi);
    let ymin = (fold(ys, f32::min, f32::MAX).floor() as i32).clamp(0, hi);
    let ymax = (fold(ys, f32::max, f32::MIN).ceil() as i32).clamp(0, hi);
    // `astype(np.int32)` truncates toward zero
    let q = quad.map(|p| [(p[0] - xmin as f32) as i32, (p[1] - ymin as f32) as i32]);
    let (mut sum, mut n) = (0.0f64, 0u32);
    for y in 0..=(ymax - ymin) {
        for x in 0..=(xmax - xmin) {
            if inside(&q, x, y) {
                sum += f64::from(pred[((y + ymin) as u32 * w + (x + xmin) as u32) as usize]);
                n += 1;
            }
        }
    }
    if n == 0 {
        0.0
    } else {
        (sum / f64::from(n)) as f32
    }
}

/// `unclip`: the box grown by area × ratio / perimeter on every side. The reference offsets the
/// polygon with round joins (pyclipper) and takes the minimum-area rectangle again, which for a
/// rectangle is the rectangle grown by that distance.
fn unclip(q: &Quad, ratio: f32) -> Quad {
    let mut area = 0.0;
    let mut perimeter = 0.0;
    for i in 0..4 {
        let a = q[i];
        let b = q[(i + 1) % 4];
        area += a[0] * b[1] - b[0] * a[1];
        perimeter += (b[0] - a[0]).hypot(b[1] - a[1]);
    }
    let area = area.abs() / 2.0;
    if perimeter == 0.0 {
        return *q;
    }
    let d = area * ratio / perimeter;
    let unit = |a: [f32; 2], b: [f32; 2]| {
        let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
        let l = dx.hypot(dy);
        if l == 0.0 {
            [0.0, 0.0]
        } else {
            [dx / l, dy / l]
        }
    };
    let u = unit(q[0], q[1]);
    let v = unit(q[0], q[3]);
    let mv = |p: [f32; 2], su: f32, sv: f32| {
        [
            p[0] + u[0] * su * d + v[0] * sv * d,
            p[1] + u[1] * su * d + v[1] * sv * d,
        ]
    };
    [
        mv(q[0], -1.0, -1.0),
        mv(q[1], 1.0, -1.0),
        mv(q[2], 1.0, 1.0),
        mv(q[3], -1.0, 1.0),
    ]
}

/// `filter_tag_det_res`: corners reordered clockwise from the top-left, clipped into the image,
/// and boxes 3 px or less on a side dropped.
fn filter_tag(q: Quad, (w, h): (u32, u32)) -> Option<Quad> {
    let mut by_x = q;
    by_x.sort_by(|a, b| a[0].total_cmp(&b[0]));
    let (mut left, mut right) = ([by_x[0], by_x[1]], [by_x[2], by_x[3]]);
    left.sort_by(|a, b| a[1].total_cmp(&b[1]));
    right.sort_by(|a, b| a[1].total_cmp(&b[1]));
    let clip = |p: [f32; 2]| {
        [
            p[0].clamp(0.0, (w - 1) as f32),
            p[1].clamp(0.0, (h - 1) as f32),
        ]
    };
    let out = [left[0], right[0], right[1], left[1]].map(clip);
    let dist = |a: [f32; 2], b: [f32; 2]| (a[0] - b[0]).hypot(a[1] - b[1]);
    let rw = dist(out[0], out[1]).trunc();
    let rh = dist(out[0], out[3]).trunc();
    (rw > 3.0 && rh > 3.0).then_some(out)
}

/// `sorted_boxes`: top to bottom by the top-left corner, then left to right within 10 px rows.
pub fn sort_reading_order(boxes: &mut [Quad]) {
    boxes.sort_by(|a, b| {
        a[0][1]
            .total_cmp(&b[0][1])
            .then(a[0][0].total_cmp(&b[0][0]))
    });
    for i in 0..boxes.len().saturating_sub(1) {
        for j in (0..=i).rev() {
            if (boxes[j + 1][0][1] - boxes[j][0][1]).abs() < 10.0
                && boxes[j + 1][0][0] < boxes[j][0][0]
            {
                boxes.swap(j, j + 1);
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_sides_are_scaled_to_the_limit_and_rounded_half_to_even() {
        // 856x540: ratio 736/540, 1166.8 -> 1166 -> 36.44 -> 36*32; 540 -> 736 -> 23*32
        assert_eq!(input_size(856, 540, 736), (1152, 736));
        // no upscaling when the shorter side is over the limit; 2.5 rounds to 2, 3.5 to 4
        assert_eq!(input_size(1000, 80 * 32 + 16, 736), (992, 2560));
        assert_eq!(input_size(800, 16 * 5, 736).1, 736);
        assert_eq!(input_size(2000, 1008, 736), (1984, 1024));
    }

    fn map_with(rects: &[(u32, u32, u32, u32)], w: u32, h: u32) -> Vec<f32> {
        let mut pred = vec![0.0; (w * h) as usize];
        for &(x0, y0, x1, y1) in rects {
            for y in y0..y1 {
                for x in x0..x1 {
                    pred[(y * w + x) as usize] = 0.9;
                }
            }
        }
        pred
    }

    #[test]
    fn a_text_region_becomes_one_grown_box_scaled_to_the_image() {
        let pred = map_with(&[(20, 10, 120, 30)], 200, 100);
        let out = boxes(&pred, 200, 100, (400, 200), &DetParams::default());
        assert_eq!(out.len(), 1, "{out:?}");
        let q = out[0];
        // pixels 20..=120 x 10..=30 after dilation: a 100 x 20 rectangle of pixel centres;
        // d = 2000 * 1.6 / 240 = 13.3, then scaled by 2
        assert!((q[0][0] - 2.0 * (20.0 - 13.33)).abs() < 1.5, "{q:?}");
        assert!((q[2][1] - 2.0 * (30.0 + 13.33)).abs() < 1.5, "{q:?}");
        assert_eq!(q[0][1], 0.0, "clipped at the top: {q:?}");
        assert!(q[0][0] < q[1][0] && q[0][1] < q[3][1]);
    }

    #[test]
    fn faint_thin_and_tiny_regions_are_dropped() {
        let mut pred = map_with(&[(10, 10, 60, 12)], 100, 60);
        // a region above thresh but below box_thresh on average
        for y in 30..50 {
            for x in 10..80 {
                pred[(y * 100 + x) as usize] = 0.4;
            }
        }
        assert!(boxes(&pred, 100, 60, (100, 60), &DetParams::default()).is_empty());
    }

    #[test]
    fn reading_order_is_rows_then_columns() {
        let q = |x: f32, y: f32| [[x, y], [x + 10.0, y], [x + 10.0, y + 5.0], [x, y + 5.0]];
        let mut v = vec![q(50.0, 3.0), q(0.0, 40.0), q(0.0, 8.0)];
        sort_reading_order(&mut v);
        assert_eq!(v, vec![q(0.0, 8.0), q(50.0, 3.0), q(0.0, 40.0)]);
    }

    #[test]
    fn rotated_points_give_a_rotated_rectangle() {
        // a 40 x 10 rectangle rotated by 30 degrees
        let (c, s) = (30f32.to_radians().cos(), 30f32.to_radians().sin());
        let pts: Vec<[f32; 2]> = [[0.0, 0.0], [40.0, 0.0], [40.0, 10.0], [0.0, 10.0]]
            .iter()
            .map(|p| [p[0] * c - p[1] * s, p[0] * s + p[1] * c])
            .collect();
        let (_, w, h) = min_area_rect(&pts).expect("rect");
        let (long, short) = (w.max(h), w.min(h));
        assert!(
            (long - 40.0).abs() < 1e-3 && (short - 10.0).abs() < 1e-3,
            "{w} {h}"
        );
    }
}
