//! Classifying a pair: its statuses, then each pair of files (by position
//! in the log's `images` cell). Bytes first, streamed (equal bytes are
//! identical, nothing decoded nor held whole); images by their decoded
//! pixels (each decoded once, 8-bit RGB and RGBA read as decoded, with no
//! copy to RGBA), PSNR over RGBA (an image without alpha counts as opaque)
//! and, only where pixels differ, SSIM over luma (the metric of
//! `image-compare`'s `MSSIMSimple`, computed here in one pass, of the luma
//! `image` makes, computed here to the last bit); text as text (line ends
//! and trailing blanks aside); anything else byte for byte.

use std::cell::RefCell;
use std::io::Read;
use std::path::Path;
use std::sync::OnceLock;

use image::{DynamicImage, GenericImageView, RgbaImage};

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

/// Decodes an image to RGBA, naming the side and file when it cannot.
pub(super) fn decode(bytes: &[u8], side: &str, rel: &str) -> Result<RgbaImage, String> {
    pixels(bytes, side, rel).map(DynamicImage::into_rgba8)
}

/// Decodes an image for the metrics: 8-bit RGB or RGBA as decoded, any
/// other layout converted to RGBA (in its colour space, as `decode` does);
/// the error names the side and file.
fn pixels(bytes: &[u8], side: &str, rel: &str) -> Result<DynamicImage, String> {
    match image::load_from_memory(bytes) {
        Ok(i @ (DynamicImage::ImageRgb8(_) | DynamicImage::ImageRgba8(_))) => Ok(i),
        Ok(other) => Ok(DynamicImage::ImageRgba8(other.into_rgba8())),
        Err(e) => Err(format!("{side} {rel}: cannot decode: {e}")),
    }
}

/// Whether two files hold the same bytes, read in blocks through one
/// pair of buffers per thread (a byte-identical pair is never held whole).
fn same_bytes(
    a: &mut crate::folder::Opened,
    b: &mut crate::folder::Opened,
) -> std::io::Result<bool> {
    const BLOCK: usize = 64 * 1024;
    thread_local! {
        static BUFFERS: RefCell<(Vec<u8>, Vec<u8>)> =
            RefCell::new((vec![0; BLOCK], vec![0; BLOCK]));
    }
    if a.meta.len() != b.meta.len() {
        return Ok(false);
    }
    BUFFERS.with_borrow_mut(|(ba, bb)| {
        loop {
            let n = read_full(&mut a.file, ba)?;
            if n != read_full(&mut b.file, &mut bb[..n])? || ba[..n] != bb[..n] {
                // A shorter read of B, or other bytes.
                return Ok(false);
            }
            if n < ba.len() {
                // Both ended here: B has nothing more either when its
                // metadata said the same length; a file grown since is not.
                return Ok(read_full(&mut b.file, &mut bb[..1])? == 0);
            }
        }
    })
}

/// Reads until `buf` is full or the file ends; how many bytes were read.
fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// PSNR of two images of one size (dB), infinite when equal: over every
/// channel of RGBA, alpha included (a changed mask is a change; an image
/// without alpha is opaque). Takes them as [`pixels`] gives them.
fn psnr(a: &DynamicImage, b: &DynamicImage) -> f64 {
    fn squares(x: &[u8], y: &[u8]) -> u64 {
        x.iter()
            .zip(y)
            .map(|(x, y)| u64::from(x.abs_diff(*y)).pow(2))
            .sum()
    }
    // RGB against RGBA: the RGB side's alpha is 255.
    fn mixed(rgb: &[u8], rgba: &[u8]) -> u64 {
        rgb.chunks_exact(3)
            .zip(rgba.chunks_exact(4))
            .map(|(x, y)| squares(x, &y[..3]) + u64::from(255 - y[3]).pow(2))
            .sum()
    }
    use DynamicImage::{ImageRgb8, ImageRgba8};
    let sum = match (a, b) {
        (ImageRgb8(x), ImageRgb8(y)) => squares(x, y),
        (ImageRgba8(x), ImageRgba8(y)) => squares(x, y),
        (ImageRgb8(x), ImageRgba8(y)) | (ImageRgba8(y), ImageRgb8(x)) => mixed(x, y),
        // `pixels` gives no other layout; convert as `decode` does.
        _ => squares(&a.to_rgba8(), &b.to_rgba8()),
    };
    if sum == 0 {
        return f64::INFINITY;
    }
    // The mean over RGBA's four channels, whatever the layout held.
    let mse = sum as f64 / (u64::from(a.width()) * u64::from(a.height()) * 4) as f64;
    10.0 * (255.0f64 * 255.0 / mse).log10()
}

/// Side of SSIM's square windows, pixels.
const SSIM_WINDOW: usize = 8;

/// SSIM of the two images' luma (1 for equal); see [`ssim_luma`].
fn ssim(a: &DynamicImage, b: &DynamicImage) -> f64 {
    ssim_luma(&luma(a), &luma(b), a.width() as usize)
}

/// The weights of R, G and B in the luma `image` makes of an sRGB image,
/// read from `image` itself: the luma of a pure red (green, blue) pixel of
/// a float image is its weight, with nothing rounded.
fn luma_weights() -> [f32; 3] {
    static WEIGHTS: OnceLock<[f32; 3]> = OnceLock::new();
    *WEIGHTS.get_or_init(|| {
        let unit = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
        let rgb = image::Rgb32FImage::from_raw(3, 1, unit.to_vec()).expect("3 pixels of 3");
        let l = DynamicImage::ImageRgb32F(rgb).to_luma32f().into_raw();
        [l[0], l[1], l[2]]
    })
}

/// The luma plane of an image, as `DynamicImage::to_luma8` makes it (the
/// luma `image-compare` was given), bit for bit. 8-bit sRGB images are
/// done here with `image`'s arithmetic (its per-image conversion goes
/// through float buffers and costs as much as decoding); others by it.
fn luma(img: &DynamicImage) -> Vec<u8> {
    let channels = match img {
        DynamicImage::ImageRgb8(_) => 3,
        DynamicImage::ImageRgba8(_) => 4,
        _ => return img.to_luma8().into_raw(),
    };
    if img.color_space() != image::metadata::Cicp::SRGB {
        return img.to_luma8().into_raw();
    }
    let [kr, kg, kb] = luma_weights();
    // `image`'s: a component is `c as f32 * (1 / 255)`, the weighted sum
    // is accumulated red first (fused where it was built with FMA), and
    // the result scaled by 255, rounded half away from zero and saturated.
    let unit = |c: u8| f32::from(c) * (1.0 / 255.0);
    #[cfg(all(
        any(target_arch = "x86", target_arch = "x86_64"),
        target_feature = "fma"
    ))]
    let acc = |acc: f32, c: u8, k: f32| unit(c).mul_add(k, acc);
    #[cfg(not(all(
        any(target_arch = "x86", target_arch = "x86_64"),
        target_feature = "fma"
    )))]
    let acc = |acc: f32, c: u8, k: f32| acc + unit(c) * k;
    img.as_bytes()
        .chunks_exact(channels)
        .map(|p| round_u8(acc(acc(acc(0.0, p[0], kr), p[1], kg), p[2], kb) * 255.0))
        .collect()
}

/// `x.round() as u8` for `x` ≥ 0 (half away from zero, saturated at 255),
/// without a call to `roundf`: the fraction of a float below 2^23 is
/// exact, so comparing it with one half rounds as `round` does.
fn round_u8(x: f32) -> u8 {
    let whole = x as u32; // truncates: x is not negative
    let up = x - whole as f32 >= 0.5;
    (whole + u32::from(up)).min(255) as u8
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
    let (ia, ib) = match (pixels(a, "A", rel.0), pixels(b, "B", rel.1)) {
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
        ssim: Some(ssim(&ia, &ib)),
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
    let open = |root: &Path, side: &str, rel: &str| {
        crate::folder::open_under(root, Path::new(rel)).map_err(|e| format!("{side} {rel}: {e}"))
    };
    let (mut oa, mut ob) = match (open(fa, "A", rel_a), open(fb, "B", rel_b)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return Verdict::of(Class::Different, e),
    };
    // A read error here is named by the whole reads below.
    if let Ok(true) = same_bytes(&mut oa, &mut ob) {
        return Verdict::of(Class::Identical, "");
    }
    let whole = |o: &mut crate::folder::Opened, side: &str, rel: &str| {
        o.read_all().map_err(|e| format!("{side} {rel}: {e}"))
    };
    let (a, b) = match (whole(&mut oa, "A", rel_a), whole(&mut ob, "B", rel_b)) {
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

    fn dynamic(i: &RgbaImage) -> DynamicImage {
        DynamicImage::ImageRgba8(i.clone())
    }

    #[test]
    fn psnr_is_infinite_for_equal_pixels_and_falls_as_they_drift() {
        let a = RgbaImage::from_pixel(8, 8, image::Rgba([100, 100, 100, 255]));
        let mut b = a.clone();
        assert!(psnr(&dynamic(&a), &dynamic(&b)).is_infinite());
        b.put_pixel(0, 0, image::Rgba([101, 100, 100, 255]));
        let one = psnr(&dynamic(&a), &dynamic(&b));
        // One level in one channel of 256: 10·log10(255² · 256).
        assert!((one - 72.21).abs() < 0.01, "{one}");
        b.put_pixel(1, 0, image::Rgba([0, 0, 0, 255]));
        assert!(psnr(&dynamic(&a), &dynamic(&b)) < one);
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
            let ours = ssim(&dynamic(&a), &dynamic(&b));
            assert!(ours < 1.0, "{w}×{h}: {ours}");
            assert_eq!(ours.to_bits(), theirs(&a, &b).to_bits(), "{w}×{h}: {ours}");
            assert_eq!(ssim(&dynamic(&a), &dynamic(&a)), 1.0);
        }
    }

    /// Checks `luma` against `image`'s luma of the RGBA copy (what SSIM
    /// was computed from before RGB was read as decoded) for every
    /// `step`-th of the 2^24 colours.
    fn luma_matches_image_for_every(step: u32) {
        let n = (1u32 << 24).div_ceil(step);
        let side = n.isqrt() + 1;
        let all = image::RgbImage::from_fn(side, side, |x, y| {
            let c = ((y * side + x) * step).min((1 << 24) - 1);
            image::Rgb([(c >> 16) as u8, (c >> 8) as u8, c as u8])
        });
        let rgb = DynamicImage::ImageRgb8(all);
        let theirs = DynamicImage::ImageRgba8(rgb.to_rgba8())
            .to_luma8()
            .into_raw();
        let ours = luma(&rgb);
        let rgba = luma(&DynamicImage::ImageRgba8(rgb.to_rgba8()));
        for (i, ((o, t), a)) in ours.iter().zip(&theirs).zip(&rgba).enumerate() {
            assert_eq!((o, a), (t, t), "pixel {i}");
        }
        assert_eq!(ours.len(), theirs.len());
    }

    #[test]
    fn luma_is_images_to_the_last_bit_for_a_spread_of_colours() {
        // Every 31st colour (541,201 of them, every value of each channel
        // among them): a second in a debug build.
        luma_matches_image_for_every(31);
    }

    #[test]
    #[ignore = "all 2^24 colours: about 50 s in a debug build; run with --ignored"]
    fn luma_is_images_to_the_last_bit_for_every_colour() {
        luma_matches_image_for_every(1);
    }

    /// PNG bytes of an image.
    fn png(i: &DynamicImage) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        i.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn rgb_without_alpha_scores_as_the_rgba_of_its_pixels() {
        // What every image was measured as before: RGBA, PSNR over its
        // bytes, SSIM by `image-compare` over its luma.
        let reference = |a: &[u8], b: &[u8]| {
            let rgba = |x: &[u8]| image::load_from_memory(x).unwrap().to_rgba8();
            let (a, b) = (rgba(a), rgba(b));
            let luma = |i: &RgbaImage| DynamicImage::ImageRgba8(i.clone()).to_luma8();
            let mssim = image_compare::gray_similarity_structure(
                &image_compare::Algorithm::MSSIMSimple,
                &luma(&a),
                &luma(&b),
            )
            .unwrap()
            .score;
            (psnr(&dynamic(&a), &dynamic(&b)), mssim)
        };
        let (a, mut b) = drifting(67, 45, 7);
        let opaque = |i: &RgbaImage| DynamicImage::ImageRgb8(dynamic(i).to_rgb8());
        let (a_rgb, a_rgba) = (png(&opaque(&a)), png(&dynamic(&opaque(&a).to_rgba8())));
        let gray = png(&DynamicImage::ImageLuma8(dynamic(&a).to_luma8()));
        let gray_rgb = png(&DynamicImage::ImageRgb8(
            DynamicImage::ImageLuma8(dynamic(&a).to_luma8()).to_rgb8(),
        ));
        let same = images(&a_rgb, &a_rgba, ("a.png", "b.png"), 40.0);
        assert_eq!(
            (same.class, same.ssim),
            (Class::Same, Some(1.0)),
            "{same:?}"
        );
        let same = images(&gray, &gray_rgb, ("a.png", "b.png"), 40.0);
        assert_eq!(same.class, Class::Same, "{same:?}");
        // B with its changed mask (RGBA) and without it (RGB).
        let b_rgba = png(&dynamic(&b));
        b.put_pixel(0, 0, image::Rgba([9, 9, 9, 255]));
        let b_rgb = png(&opaque(&b));
        for (x, y) in [
            (&a_rgb, &b_rgba),
            (&b_rgba, &a_rgb),
            (&a_rgba, &b_rgb),
            (&a_rgb, &b_rgb),
            (&gray, &b_rgb),
            (&b_rgba, &gray),
        ] {
            let v = images(x, y, ("a.png", "b.png"), 40.0);
            let (db, mssim) = reference(x, y);
            assert!(db.is_finite() && mssim < 1.0, "{db} {mssim}");
            assert_eq!(v.psnr.map(f64::to_bits), Some(db.to_bits()), "{v:?} {db}");
            assert_eq!(
                v.ssim.map(f64::to_bits),
                Some(mssim.to_bits()),
                "{v:?} {mssim}"
            );
        }
    }

    #[test]
    fn files_equal_in_bytes_are_identical_unread_otherwise_decoded() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = drifting(300, 300, 5);
        let write =
            |name: &str, bytes: &[u8]| std::fs::write(dir.path().join(name), bytes).unwrap();
        let big = vec![7u8; 200 * 1024 + 3];
        let mut other = big.clone();
        *other.last_mut().unwrap() = 8;
        write("a.png", &png(&dynamic(&a)));
        write("a2.png", &png(&dynamic(&a)));
        write("b.png", &png(&dynamic(&b)));
        write("big.bin", &big);
        write("big2.bin", &big);
        write("other.bin", &other);
        write("short.bin", &big[..big.len() - 1]);
        let class = |x: &str, y: &str| files(dir.path(), dir.path(), x, y, 40.0).class;
        assert_eq!(class("a.png", "a2.png"), Class::Identical);
        assert_eq!(class("big.bin", "big2.bin"), Class::Identical);
        assert_eq!(class("big.bin", "other.bin"), Class::Different);
        assert_eq!(class("big.bin", "short.bin"), Class::Different);
        assert_eq!(class("short.bin", "big.bin"), Class::Different);
        assert!(matches!(
            class("a.png", "b.png"),
            Class::Close | Class::Different
        ));
        let v = files(dir.path(), dir.path(), "a.png", "gone.png", 40.0);
        assert_eq!(v.class, Class::Different);
        assert!(v.reason.starts_with("B gone.png: missing"), "{}", v.reason);
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
