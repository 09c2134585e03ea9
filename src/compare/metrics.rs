//! Classifying a pair: its statuses, then each pair of files (by position
//! in the log's `images` cell). Bytes first (equal bytes are identical,
//! nothing decoded); images by their decoded pixels, PSNR over RGBA and
//! SSIM over luma (`image-compare`, MIT); text as text (line ends and
//! trailing blanks aside); anything else byte for byte.

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

/// SSIM of the two images' luma (1 for equal), windows of 8 pixels.
fn ssim(a: &RgbaImage, b: &RgbaImage) -> Option<f64> {
    let luma = |i: &RgbaImage| image::DynamicImage::ImageRgba8(i.clone()).to_luma8();
    image_compare::gray_similarity_structure(
        &image_compare::Algorithm::MSSIMSimple,
        &luma(a),
        &luma(b),
    )
    .ok()
    .map(|s| s.score)
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
        ssim: ssim(&ia, &ib),
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

    #[test]
    fn text_is_compared_as_text() {
        assert_eq!(texts(b"a\r\nb  \n\n", b"a\nb", "t.txt").class, Class::Same);
        let v = texts(b"a\nb\n", b"a\nc\n", "t.txt");
        assert_eq!(v.class, Class::Different);
        assert!(v.reason.contains("line 2"), "{}", v.reason);
        assert_eq!(texts(b"a\n", b"a\nb\n", "t.txt").class, Class::Different);
    }
}
