//! Classifying a pair: its statuses, then each pair of files (by position
//! in the log's `images` cell). Bytes first (equal bytes are identical,
//! nothing decoded); images by their decoded pixels (each decoded once),
//! PSNR over RGBA and, only where pixels differ, SSIM over luma (the
//! metric of `image-compare`'s `MSSIMSimple`, computed here in one pass);
//! text as text (line ends and trailing blanks aside); anything else byte
//! for byte.

use std::path::Path;

use image::RgbaImage;

use super::pairing::Paired;
use super::{Class, Pair};
use crate::folder::extension;

/// What comparing one pair of files found.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Verdict {
    pub class: Class,
    /// PSNR of differing pixels, dB (infinite when equal).
    pub psnr: Option<f64>,
    pub ssim: Option<f64>,
    pub reason: String,
}

impl Verdict {
    fn of(class: Class, reason: impl Into<String>) -> Verdict {
        Verdict {
            class,
            psnr: None,
            ssim: None,
            reason: reason.into(),
        }
    }
}

/// Whether a file is compared by its pixels.
pub(super) fn is_image(rel: &str) -> bool {
    matches!(extension(rel).as_str(), "png" | "jpg" | "jpeg" | "webp")
}

fn is_text(rel: &str) -> bool {
    matches!(extension(rel).as_str(), "txt" | "json" | "md" | "csv")
}

/// A file's bytes, read through [`crate::folder::open_under`] (no link
/// followed, nothing outside the folder); the error names the side and
/// the file.
pub(super) fn read(root: &Path, side: &str, rel: &str) -> Result<Vec<u8>, String> {
    crate::folder::open_under(root, Path::new(rel))
        .and_then(|mut f| f.read_all().map_err(crate::folder::Refusal::Io))
        .map_err(|e| format!("{side} {rel}: {e}"))
}

/// Decodes an image, naming the side and file when it cannot.
pub(super) fn decode(bytes: &[u8], side: &str, rel: &str) -> Result<RgbaImage, String> {
    image::load_from_memory(bytes)
        .map(|i| i.to_rgba8())
        .map_err(|e| format!("{side} {rel}: cannot decode: {e}"))
}

/// PSNR of two images of one size (dB), infinite when equal: over every
/// channel, alpha included (a changed mask is a change).
pub(super) fn psnr(a: &RgbaImage, b: &RgbaImage) -> f64 {
    let sum: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| {
            let d = u64::from(x.abs_diff(*y));
            d * d
        })
        .sum();
    if sum == 0 {
        return f64::INFINITY;
    }
    let mse = sum as f64 / a.as_raw().len() as f64;
    10.0 * (255.0f64 * 255.0 / mse).log10()
}

/// Side of SSIM's square windows, pixels.
const SSIM_WINDOW: usize = 8;

/// SSIM of the two images' luma (1 for equal); see [`ssim_luma`]. Takes
/// the images so their luma is made without copying them first.
fn ssim(a: RgbaImage, b: RgbaImage) -> f64 {
    let width = a.width() as usize;
    // `DynamicImage::to_luma8`, the luma `image-compare` was given.
    let luma = |i: RgbaImage| image::DynamicImage::ImageRgba8(i).to_luma8();
    let (la, lb) = (luma(a), luma(b));
    ssim_luma(la.as_raw(), lb.as_raw(), width)
}

/// SSIM of two luma planes of one size, rows of `width` pixels: the
/// metric of `image-compare` 0.5's `MSSIMSimple`, computed in one pass
/// without allocating. The plane is cut into 8×8 windows (narrower at the
/// right and bottom edges); each window scores
/// `(2·μx·μy + C1)(2·σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2))` with
/// μ the window's means, σ the sums (not means) of products of deviations,
/// C1 = (0.01·255)², C2 = (0.03·255)²; the result is the mean of the
/// scores weighted by window area. Windows are visited column of windows
/// by column and pixels row by row, as there, so the value is the same to
/// the last bit.
fn ssim_luma(a: &[u8], b: &[u8], width: usize) -> f64 {
    const C1: f64 = (0.01 * 255.0) * (0.01 * 255.0);
    const C2: f64 = (0.03 * 255.0) * (0.03 * 255.0);
    let height = a.len().checked_div(width).unwrap_or(0);
    let (mut weighted, mut area_sum) = (0.0f64, 0.0f64);
    for x0 in (0..width).step_by(SSIM_WINDOW) {
        let x1 = (x0 + SSIM_WINDOW).min(width);
        for y0 in (0..height).step_by(SSIM_WINDOW) {
            let y1 = (y0 + SSIM_WINDOW).min(height);
            let area = ((x1 - x0) * (y1 - y0)) as f64;
            let rows = (y0..y1).map(|y| {
                (
                    &a[y * width + x0..y * width + x1],
                    &b[y * width + x0..y * width + x1],
                )
            });
            let (mut sx, mut sy) = (0.0f64, 0.0f64);
            for (ra, rb) in rows.clone() {
                for (&x, &y) in ra.iter().zip(rb) {
                    sx += f64::from(x);
                    sy += f64::from(y);
                }
            }
            let (mx, my) = (sx / area, sy / area);
            let (mut vx, mut vy, mut cov) = (0.0f64, 0.0f64, 0.0f64);
            for (ra, rb) in rows {
                for (&x, &y) in ra.iter().zip(rb) {
                    let (dx, dy) = (f64::from(x) - mx, f64::from(y) - my);
                    vx += dx * dx;
                    vy += dy * dy;
                    cov += dx * dy;
                }
            }
            let score = ((2.0 * mx * my + C1) * (2.0 * cov + C2))
                / ((mx.powi(2) + my.powi(2) + C1) * (vx + vy + C2));
            weighted += score * area;
            area_sum += area;
        }
    }
    if area_sum == 0.0 {
        1.0
    } else {
        weighted / area_sum
    }
}

fn images(a: &[u8], b: &[u8], rel: (&str, &str), threshold: f64) -> Verdict {
    let (ia, ib) = match (decode(a, "A", rel.0), decode(b, "B", rel.1)) {
        (Ok(x), Ok(y)) => (x, y),
        (Err(e), _) | (_, Err(e)) => return Verdict::of(Class::Different, e),
    };
    if ia.dimensions() != ib.dimensions() {
        return Verdict::of(
            Class::Different,
            format!(
                "{}: size {}×{} in A, {}×{} in B",
                rel.0,
                ia.width(),
                ia.height(),
                ib.width(),
                ib.height()
            ),
        );
    }
    let db = psnr(&ia, &ib);
    if db.is_infinite() {
        return Verdict {
            class: Class::Same,
            psnr: Some(db),
            ssim: Some(1.0),
            reason: format!("{}: equal pixels, other bytes", rel.0),
        };
    }
    let (class, how) = if db >= threshold {
        (Class::Close, "at or above")
    } else {
        (Class::Different, "below")
    };
    Verdict {
        class,
        psnr: Some(db),
        ssim: Some(ssim(ia, ib)),
        reason: format!("{}: PSNR {db:.2} dB, {how} {threshold} dB", rel.0),
    }
}

fn texts(a: &[u8], b: &[u8], rel: &str) -> Verdict {
    let lines = |t: &[u8]| -> Vec<String> {
        String::from_utf8_lossy(t)
            .lines()
            .map(|l| l.trim_end().to_string())
            .collect::<Vec<_>>()
    };
    let (la, lb) = (lines(a), lines(b));
    let trim = |l: &[String]| l.len() - l.iter().rev().take_while(|s| s.is_empty()).count();
    let (la, lb) = (&la[..trim(&la)], &lb[..trim(&lb)]);
    match la.iter().zip(lb).position(|(x, y)| x != y) {
        None if la.len() == lb.len() => {
            Verdict::of(Class::Same, format!("{rel}: the same text, other bytes"))
        }
        at => Verdict::of(
            Class::Different,
            format!(
                "{rel}: text differs from line {}",
                at.unwrap_or(la.len().min(lb.len())) + 1
            ),
        ),
    }
}

/// Compares one pair of files.
pub(super) fn files(fa: &Path, fb: &Path, rel_a: &str, rel_b: &str, threshold: f64) -> Verdict {
    let (a, b) = match (read(fa, "A", rel_a), read(fb, "B", rel_b)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return Verdict::of(Class::Different, e),
    };
    if a == b {
        return Verdict::of(Class::Identical, "");
    }
    if is_image(rel_a) && is_image(rel_b) {
        images(&a, &b, (rel_a, rel_b), threshold)
    } else if is_text(rel_a) && is_text(rel_b) {
        texts(&a, &b, rel_a)
    } else {
        Verdict::of(Class::Different, format!("{rel_a}: bytes differ"))
    }
}

fn not_ok(side: &super::Side) -> Option<String> {
    (side.status != "ok").then(|| {
        if side.error.is_empty() {
            side.status.clone()
        } else {
            format!("{}: {}", side.status, crate::text::clip(&side.error, 200))
        }
    })
}

/// Classifies a pair: missing, failed, else the worst of its files.
pub(super) fn classify(fa: &Path, fb: &Path, paired: Paired, order: usize, threshold: f64) -> Pair {
    let mut pair = Pair {
        class: Class::Identical,
        psnr: None,
        ssim: None,
        reason: String::new(),
        params: paired.params,
        order,
        a: None,
        b: None,
    };
    let verdict = match (&paired.a, &paired.b) {
        (None, _) => Verdict::of(Class::Missing, "only in B"),
        (_, None) => Verdict::of(Class::Missing, "only in A"),
        (Some(a), Some(b)) => match (not_ok(a), not_ok(b)) {
            (Some(x), Some(y)) => Verdict::of(Class::Failed, format!("A {x}; B {y}")),
            (Some(x), None) => Verdict::of(Class::Failed, format!("A {x}")),
            (None, Some(y)) => Verdict::of(Class::Failed, format!("B {y}")),
            (None, None) => worst(fa, fb, a, b, threshold),
        },
    };
    pair.class = verdict.class;
    pair.psnr = verdict.psnr.filter(|p| p.is_finite());
    pair.ssim = verdict.ssim;
    pair.reason = verdict.reason;
    pair.a = paired.a;
    pair.b = paired.b;
    pair
}

/// The worst verdict among a job's files (the lowest PSNR and SSIM with it).
fn worst(fa: &Path, fb: &Path, a: &super::Side, b: &super::Side, threshold: f64) -> Verdict {
    if a.files.len() != b.files.len() {
        return Verdict::of(
            Class::Different,
            format!("{} file(s) in A, {} in B", a.files.len(), b.files.len()),
        );
    }
    let mut out = Verdict::of(Class::Identical, "");
    for (ra, rb) in a.files.iter().zip(&b.files) {
        let v = files(fa, fb, ra, rb, threshold);
        let low = |x: Option<f64>, y: Option<f64>| match (x, y) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        };
        out.psnr = low(out.psnr, v.psnr);
        out.ssim = low(out.ssim, v.ssim);
        if v.class > out.class {
            out.class = v.class;
            out.reason = v.reason;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psnr_is_infinite_for_equal_pixels_and_falls_as_they_drift() {
        let a = RgbaImage::from_pixel(8, 8, image::Rgba([100, 100, 100, 255]));
        let mut b = a.clone();
        assert!(psnr(&a, &b).is_infinite());
        b.put_pixel(0, 0, image::Rgba([101, 100, 100, 255]));
        let one = psnr(&a, &b);
        // One level in one channel of 256: 10·log10(255² · 256).
        assert!((one - 72.21).abs() < 0.01, "{one}");
        b.put_pixel(1, 0, image::Rgba([0, 0, 0, 255]));
        assert!(psnr(&a, &b) < one);
    }

    /// A textured image of `w`×`h` from `seed`, and a drifted copy (a few
    /// levels on some pixels, a changed mask on one).
    fn drifting(w: u32, h: u32, seed: u32) -> (RgbaImage, RgbaImage) {
        let noise = |x: u32, y: u32, c: u32| {
            (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503) ^ (seed + c).wrapping_mul(97))
                >> 24
        };
        let a = RgbaImage::from_fn(w, h, |x, y| {
            image::Rgba([
                noise(x, y, 0) as u8,
                (x * 3 + y) as u8,
                noise(x, y, 2) as u8,
                255,
            ])
        });
        let mut b = a.clone();
        for (x, y, p) in b.enumerate_pixels_mut() {
            if (x * 7 + y * 13 + seed).is_multiple_of(5) {
                p.0[0] = p.0[0].saturating_add(3);
                p.0[2] = p.0[2].saturating_sub((x % 9) as u8);
            }
        }
        b.put_pixel(w / 2, h / 2, image::Rgba([0, 0, 0, 0]));
        (a, b)
    }

    #[test]
    fn ssim_is_image_compares_mssim_simple_to_the_last_bit() {
        // Sizes with and without partial windows at the edges, one narrower
        // than a window.
        for (w, h, seed) in [(64, 64, 1), (37, 21, 2), (5, 19, 3), (512, 96, 4)] {
            let (a, b) = drifting(w, h, seed);
            let luma = |i: &RgbaImage| image::DynamicImage::ImageRgba8(i.clone()).to_luma8();
            let theirs = |x: &RgbaImage, y: &RgbaImage| {
                image_compare::gray_similarity_structure(
                    &image_compare::Algorithm::MSSIMSimple,
                    &luma(x),
                    &luma(y),
                )
                .unwrap()
                .score
            };
            let ours = ssim(a.clone(), b.clone());
            assert!(ours < 1.0, "{w}×{h}: {ours}");
            assert_eq!(ours.to_bits(), theirs(&a, &b).to_bits(), "{w}×{h}: {ours}");
            assert_eq!(ssim(a.clone(), a), 1.0);
        }
    }

    #[test]
    fn text_is_compared_as_text() {
        assert_eq!(texts(b"a\r\nb  \n\n", b"a\nb", "t.txt").class, Class::Same);
        let v = texts(b"a\nb\n", b"a\nc\n", "t.txt");
        assert_eq!(v.class, Class::Different);
        assert!(v.reason.contains("line 2"), "{}", v.reason);
        assert_eq!(texts(b"a\n", b"a\nb\n", "t.txt").class, Class::Different);
    }
}
