//! YUV4MPEG2 (`.y4m`) video in and out: 4:2:0 planar, BT.601 limited range, chroma sited as in
//! JPEG (`C420jpeg`), progressive, square pixels. The format Chromium's fake camera plays
//! (`--use-file-for-fake-video-capture`). Nothing here knows about faces.

use std::io::{self, Write};

use image::{Rgb, RgbImage};

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.into())
}

/// Writes `frames` (all the size of the first, even width and height) as a `.y4m` at `fps`:
/// the header `YUV4MPEG2 W<w> H<h> F<fps>:1 Ip A1:1 C420jpeg`, then per frame `FRAME`, the Y
/// plane and the 2x2-averaged Cb and Cr planes.
///
/// # Errors
/// `InvalidInput` for no frames, `fps` 0, an odd or changing size; or the writer's error.
pub fn write_y4m(
    frames: impl IntoIterator<Item = RgbImage>,
    fps: u32,
    out: &mut impl Write,
) -> io::Result<()> {
    if fps == 0 {
        return Err(invalid("fps must be at least 1"));
    }
    let mut frames = frames.into_iter();
    let first = frames
        .next()
        .ok_or_else(|| invalid("a video needs a frame"))?;
    let (w, h) = first.dimensions();
    if w == 0 || h == 0 || w % 2 == 1 || h % 2 == 1 {
        return Err(invalid(format!(
            "4:2:0 needs an even width and height, got {w}x{h}"
        )));
    }
    writeln!(out, "YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg")?;
    let mut planes = Vec::with_capacity((w * h * 3 / 2) as usize);
    for frame in std::iter::once(first).chain(frames) {
        if frame.dimensions() != (w, h) {
            return Err(invalid(format!(
                "every frame must be {w}x{h}, got {}x{}",
                frame.width(),
                frame.height()
            )));
        }
        planes.clear();
        to_i420(&frame, &mut planes);
        out.write_all(b"FRAME\n")?;
        out.write_all(&planes)?;
    }
    out.flush()
}

/// BT.601 limited range: Y in 16..=235, Cb and Cr in 16..=240.
fn ycbcr(p: Rgb<u8>) -> [f32; 3] {
    let [r, g, b] = p.0.map(|v| f32::from(v) / 255.0);
    [
        16.0 + 65.481 * r + 128.553 * g + 24.966 * b,
        128.0 - 37.797 * r - 74.203 * g + 112.0 * b,
        128.0 + 112.0 * r - 93.786 * g - 18.214 * b,
    ]
}

fn byte(v: f32) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

fn to_i420(img: &RgbImage, out: &mut Vec<u8>) {
    let (w, h) = img.dimensions();
    out.extend(img.pixels().map(|&p| byte(ycbcr(p)[0])));
    for plane in [1, 2] {
        for y in (0..h).step_by(2) {
            for x in (0..w).step_by(2) {
                let sum: f32 = [(0, 0), (1, 0), (0, 1), (1, 1)]
                    .iter()
                    .map(|&(dx, dy)| ycbcr(*img.get_pixel(x + dx, y + dy))[plane])
                    .sum();
                out.push(byte(sum / 4.0));
            }
        }
    }
}

/// A `.y4m` read back: its frame rate (frames per second, rounded down) and its frames in RGB.
/// Reads what [`write_y4m`] writes (4:2:0, 8-bit; frame parameters ignored), as a player would.
///
/// # Errors
/// `InvalidData` when the bytes are not such a video.
pub fn read_y4m(bytes: &[u8]) -> io::Result<(u32, Vec<RgbImage>)> {
    let bad = |msg: &str| io::Error::new(io::ErrorKind::InvalidData, msg.to_owned());
    let line_end = |from: usize| {
        bytes[from..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| from + i)
            .ok_or_else(|| bad("a header line without its newline"))
    };
    let end = line_end(0)?;
    let header =
        std::str::from_utf8(&bytes[..end]).map_err(|_| bad("a header that is not text"))?;
    let mut tokens = header.split(' ');
    if tokens.next() != Some("YUV4MPEG2") {
        return Err(bad("no YUV4MPEG2 signature"));
    }
    let (mut w, mut h, mut fps) = (0usize, 0usize, 0u32);
    for t in tokens {
        let (tag, value) = t.split_at(t.len().min(1));
        match tag {
            "W" => w = value.parse().map_err(|_| bad("a bad width"))?,
            "H" => h = value.parse().map_err(|_| bad("a bad height"))?,
            "F" => {
                let (n, d) = value
                    .split_once(':')
                    .ok_or_else(|| bad("a bad frame rate"))?;
                let (n, d): (u32, u32) = (
                    n.parse().map_err(|_| bad("a bad frame rate"))?,
                    d.parse().map_err(|_| bad("a bad frame rate"))?,
                );
                fps = n / d.max(1);
            }
            "C" if !value.starts_with("420") => return Err(bad("only 4:2:0 is read")),
            _ => {}
        }
    }
    if w == 0 || h == 0 || w % 2 == 1 || h % 2 == 1 {
        return Err(bad("a missing or odd size"));
    }
    let (luma, chroma) = (w * h, (w / 2) * (h / 2));
    let mut frames = Vec::new();
    let mut at = end + 1;
    while at < bytes.len() {
        let end = line_end(at)?;
        if !bytes[at..end].starts_with(b"FRAME") {
            return Err(bad("a frame without its FRAME line"));
        }
        let data = bytes
            .get(end + 1..end + 1 + luma + 2 * chroma)
            .ok_or_else(|| bad("a truncated frame"))?;
        let (ys, rest) = data.split_at(luma);
        let (cb, cr) = rest.split_at(chroma);
        frames.push(RgbImage::from_fn(w as u32, h as u32, |x, y| {
            let (x, y) = (x as usize, y as usize);
            let c = (y / 2) * (w / 2) + x / 2;
            let yy = (f32::from(ys[y * w + x]) - 16.0) * 255.0 / 219.0;
            let u = (f32::from(cb[c]) - 128.0) * 255.0 / 224.0;
            let v = (f32::from(cr[c]) - 128.0) * 255.0 / 224.0;
            Rgb([
                byte(yy + 1.402 * v),
                byte(yy - 0.344_136 * u - 0.714_136 * v),
                byte(yy + 1.772 * u),
            ])
        }));
        at = end + 1 + luma + 2 * chroma;
    }
    Ok((fps, frames))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_video_reads_back_with_its_header_size_and_colours() {
        let frames = vec![
            RgbImage::from_pixel(4, 2, Rgb([224, 180, 150])),
            RgbImage::from_pixel(4, 2, Rgb([20, 40, 200])),
        ];
        let mut out = Vec::new();
        write_y4m(frames.clone(), 30, &mut out).expect("writes to a Vec");
        assert!(out.starts_with(b"YUV4MPEG2 W4 H2 F30:1 Ip A1:1 C420jpeg\nFRAME\n"));
        assert_eq!(out.len(), 39 + 2 * (6 + 4 * 2 * 3 / 2));
        let (fps, back) = read_y4m(&out).expect("reads back");
        assert_eq!(fps, 30);
        assert_eq!(back.len(), 2);
        for (a, b) in frames.iter().zip(&back) {
            for (p, q) in a.pixels().zip(b.pixels()) {
                for c in 0..3 {
                    assert!(p[c].abs_diff(q[c]) <= 2, "{p:?} came back as {q:?}");
                }
            }
        }
    }

    #[test]
    fn odd_sizes_changing_sizes_and_no_frames_are_refused() {
        let mut out = Vec::new();
        let odd = RgbImage::new(3, 2);
        assert!(write_y4m([odd], 30, &mut out).is_err());
        let mixed = [RgbImage::new(4, 2), RgbImage::new(2, 2)];
        assert!(write_y4m(mixed, 30, &mut out).is_err());
        assert!(write_y4m(Vec::new(), 30, &mut out).is_err());
        assert!(write_y4m([RgbImage::new(2, 2)], 0, &mut out).is_err());
    }
}
