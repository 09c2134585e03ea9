//! Thumbnails: `report/thumbs/<hash of the path>.jpg`, made in parallel and
//! only when missing or older than their source, so refreshing the report
//! of a finished run touches no pixels. Names are hashes so that a hostile
//! or odd file name never becomes a path or a URL.

use std::path::Path;

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::folder::{OutputFile, OutputKind};

/// The longest side of a thumbnail, in pixels.
pub const THUMB_SIDE: u32 = 256;

/// The thumbnail name of an output (`<16 hex>.jpg`).
pub fn thumb_name(rel: &str) -> String {
    let digest = Sha256::digest(rel.as_bytes());
    format!("{}.jpg", hex::encode(&digest[..8]))
}

/// What happened to one thumbnail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThumbState {
    /// Made now.
    Made,
    /// Up to date already.
    Fresh,
    /// The source could not be decoded (the page shows the original).
    Failed,
    /// Small enough to be shown as it is ([`shown_as_is`]): no thumbnail.
    Original,
}

/// An image file of at most this many bytes, and at most [`THUMB_SIDE`]
/// pixels a side, is shown as it is: its thumbnail would weigh about as
/// much (a 256 px JPEG at the quality used here is 10–30 KB), and making it
/// would decode and encode every image of a run of small ones for nothing.
pub const AS_IS_MAX_BYTES: u64 = 32 * 1024;

/// Makes the thumbnails of `outputs` (files of the run folder `root`) that
/// need it, in parallel. Returns, per output, whether a thumbnail exists
/// afterwards.
pub fn make_all(dir: &Path, root: &Path, outputs: &[&OutputFile]) -> Vec<ThumbState> {
    outputs
        .par_iter()
        .map(|o| match (&o.path, o.kind, o.present) {
            (Some(_), OutputKind::Image, true) => {
                // Opened without following links, like every read of a
                // run folder; one refused now is unreadable.
                match crate::folder::open_under(root, Path::new(&o.rel)) {
                    Ok(src) => make_one(src, &dir.join(thumb_name(&o.rel))),
                    Err(_) => ThumbState::Failed,
                }
            }
            _ => ThumbState::Failed,
        })
        .collect()
}

fn mtime(p: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn make_one(mut src: crate::folder::Opened, dst: &Path) -> ThumbState {
    if let (Some(t), Ok(s)) = (mtime(dst), src.meta.modified())
        && t >= s
    {
        return ThumbState::Fresh;
    }
    if shown_as_is(&mut src) {
        return ThumbState::Original;
    }
    match encode(src) {
        // Thumbnails are remade from their sources: not synced, one by one.
        Some(bytes) => match dst
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| crate::sink::write_atomic_unsynced(dst, &bytes).map_err(|e| e.source))
        {
            Ok(()) => ThumbState::Made,
            Err(_) => ThumbState::Failed,
        },
        None => ThumbState::Failed,
    }
}

/// Whether `src` is a small image every browser shows (PNG, JPEG, GIF,
/// WebP), known by its content, not its name, and whole: only its header
/// is parsed, but a file cut short (an interrupted copy or write) must not
/// pass for one, so its end is checked too. Any doubt leaves it to
/// [`encode`], which decodes it or counts it unreadable.
fn shown_as_is(src: &mut crate::folder::Opened) -> bool {
    use image::ImageFormat::{Gif, Jpeg, Png, WebP};
    if src.meta.len() > AS_IS_MAX_BYTES {
        return false;
    }
    let Ok(bytes) = src.read_all() else {
        return false;
    };
    // Read whole, so a file grown since `metadata` is still judged by size.
    if bytes.len() as u64 > AS_IS_MAX_BYTES {
        return false;
    }
    let Ok(format) = image::guess_format(&bytes) else {
        return false;
    };
    if !matches!(format, Png | Jpeg | Gif | WebP) || !ends_whole(format, &bytes) {
        return false;
    }
    let size = if format == Gif {
        // No GIF decoder is built in (browsers show GIFs; the page shows
        // the original): its logical screen size is read where it lies.
        gif_size(&bytes)
    } else {
        image::ImageReader::with_format(std::io::Cursor::new(&bytes), format)
            .into_dimensions()
            .ok()
    };
    size.is_some_and(|(w, h)| w <= THUMB_SIDE && h <= THUMB_SIDE)
}

/// A GIF's width and height, from its logical screen descriptor.
fn gif_size(bytes: &[u8]) -> Option<(u32, u32)> {
    let d = bytes.get(6..10)?;
    let side = |lo: u8, hi: u8| u32::from(u16::from_le_bytes([lo, hi]));
    Some((side(d[0], d[1]), side(d[2], d[3])))
}

/// Whether `bytes` end as a complete file of `format` does: PNG's `IEND`
/// chunk, JPEG's end-of-image marker, GIF's trailer, or as many bytes as a
/// WebP's RIFF header announces.
fn ends_whole(format: image::ImageFormat, bytes: &[u8]) -> bool {
    const IEND: [u8; 12] = [0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82];
    match format {
        image::ImageFormat::Png => bytes.ends_with(&IEND),
        image::ImageFormat::Jpeg => bytes.ends_with(&[0xFF, 0xD9]),
        image::ImageFormat::Gif => bytes.ends_with(&[0x3B]),
        image::ImageFormat::WebP => bytes
            .get(4..8)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .is_some_and(|n| u64::from(u32::from_le_bytes(n)) + 8 == bytes.len() as u64),
        _ => false,
    }
}

fn encode(mut src: crate::folder::Opened) -> Option<Vec<u8>> {
    std::io::Seek::rewind(&mut src.file).ok()?;
    let img = image::ImageReader::new(std::io::BufReader::new(src.file))
        .with_guessed_format()
        .ok()?
        .decode()
        .ok()?;
    let small = if img.width() > THUMB_SIDE || img.height() > THUMB_SIDE {
        img.thumbnail(THUMB_SIDE, THUMB_SIDE)
    } else {
        img
    };
    let rgb = flatten(&small);
    let mut out = Vec::new();
    let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 82);
    rgb.write_with_encoder(enc).ok()?;
    Some(out)
}

/// RGB on a white background (JPEG has no alpha).
pub(crate) fn flatten(img: &image::DynamicImage) -> image::RgbImage {
    if !img.color().has_alpha() {
        return img.to_rgb8();
    }
    let rgba = img.to_rgba8();
    image::RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let p = rgba.get_pixel(x, y).0;
        let a = u32::from(p[3]);
        let mix = |c: u8| ((u32::from(c) * a + 255 * (255 - a)) / 255) as u8;
        image::Rgb([mix(p[0]), mix(p[1]), mix(p[2])])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What [`make_all`] does with the images `names` in `dir` (present,
    /// thumbnails in `dir/thumbs`).
    fn states_of(dir: &Path, names: &[&str]) -> Vec<ThumbState> {
        let outputs: Vec<OutputFile> = names
            .iter()
            .map(|name| OutputFile {
                rel: (*name).into(),
                kind: OutputKind::Image,
                path: Some(dir.join(name)),
                present: true,
            })
            .collect();
        make_all(
            &dir.join("thumbs"),
            dir,
            &outputs.iter().collect::<Vec<_>>(),
        )
    }

    #[test]
    fn thumbnails_are_made_once_and_scaled() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a.png");
        image::RgbImage::from_pixel(600, 300, image::Rgb([200, 10, 10]))
            .save(&src)
            .unwrap();
        let out = OutputFile {
            rel: "a.png".into(),
            kind: OutputKind::Image,
            path: Some(src),
            present: true,
        };
        let thumbs = dir.path().join("thumbs");
        assert_eq!(make_all(&thumbs, dir.path(), &[&out]), [ThumbState::Made]);
        assert_eq!(make_all(&thumbs, dir.path(), &[&out]), [ThumbState::Fresh]);
        let t = image::open(thumbs.join(thumb_name("a.png"))).unwrap();
        assert_eq!((t.width(), t.height()), (256, 128));
        let broken = OutputFile {
            rel: "b.png".into(),
            kind: OutputKind::Image,
            path: Some(dir.path().join("b.png")),
            present: true,
        };
        std::fs::write(dir.path().join("b.png"), b"not a png").unwrap();
        assert_eq!(
            make_all(&thumbs, dir.path(), &[&broken]),
            [ThumbState::Failed]
        );
    }

    #[test]
    fn small_images_are_shown_as_they_are_and_heavy_or_odd_ones_get_a_thumbnail() {
        let dir = tempfile::tempdir().unwrap();
        let save = |name: &str, w: u32, h: u32| {
            image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, (x ^ y) as u8]))
                .save(dir.path().join(name))
                .unwrap();
        };
        save("small.png", 64, 64);
        save("side.png", 256, 40);
        save("wide.png", 257, 40);
        // 256 px of noise: small in pixels, heavy in bytes.
        let mut seed = 1u32;
        let noise = image::RgbImage::from_fn(256, 256, |_, _| {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let b = seed.to_le_bytes();
            image::Rgb([b[1], b[2], b[3]])
        });
        noise.save(dir.path().join("noisy.png")).unwrap();
        assert!(
            std::fs::metadata(dir.path().join("noisy.png"))
                .unwrap()
                .len()
                > AS_IS_MAX_BYTES
        );
        let names = ["small.png", "side.png", "wide.png", "noisy.png"];
        let states = states_of(dir.path(), &names);
        use ThumbState::{Made, Original};
        assert_eq!(states, [Original, Original, Made, Made]);
        assert!(
            !dir.path()
                .join("thumbs")
                .join(thumb_name("small.png"))
                .exists()
        );
        // Shown as they are on every refresh, never made.
        let again = states_of(dir.path(), &names);
        assert_eq!(again[..2], [Original, Original]);
    }

    #[test]
    fn a_small_image_cut_short_or_lying_about_its_kind_is_not_shown_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let img = image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([x as u8, y as u8, 9]));
        let encoded = |format| {
            let mut out = std::io::Cursor::new(Vec::new());
            img.write_to(&mut out, format).unwrap();
            out.into_inner()
        };
        let png = encoded(image::ImageFormat::Png);
        let jpeg = encoded(image::ImageFormat::Jpeg);
        let webp = encoded(image::ImageFormat::WebP);
        let write =
            |name: &str, bytes: &[u8]| std::fs::write(dir.path().join(name), bytes).unwrap();
        // Whole files, one named as another kind: browsers go by content.
        write("whole.png", &png);
        write("whole.webp", &webp);
        write("jpeg.png", &jpeg);
        // Cut short: the header (and size) still read fine.
        write("cut.png", &png[..png.len() - 20]);
        write("cut.webp", &webp[..webp.len() - 20]);
        write("cut.jpg", &jpeg[..jpeg.len() - 20]);
        write("text.png", b"just some text, not an image");
        let names = [
            "whole.png",
            "whole.webp",
            "jpeg.png",
            "cut.png",
            "cut.webp",
            "cut.jpg",
            "text.png",
        ];
        let states = states_of(dir.path(), &names);
        use ThumbState::{Failed, Original};
        assert_eq!(states[..3], [Original, Original, Original]);
        // A cut PNG or WebP is unreadable (and counted so by `report`); a
        // cut JPEG is decoded as far as it goes: a thumbnail or unreadable,
        // never a broken original.
        assert_eq!(states[3..5], [Failed, Failed], "{states:?}");
        assert_ne!(states[5], Original);
        assert_eq!(states[6], Failed);
    }

    #[test]
    fn the_limits_of_shown_as_it_is_are_inclusive() {
        let dir = tempfile::tempdir().unwrap();
        let jpeg = |w: u32, h: u32| {
            let mut out = std::io::Cursor::new(Vec::new());
            image::RgbImage::from_pixel(w, h, image::Rgb([9, 99, 199]))
                .write_to(&mut out, image::ImageFormat::Jpeg)
                .unwrap();
            out.into_inner()
        };
        // A JPEG padded to `len` bytes with a comment segment after SOI.
        let padded = |len: u64| {
            let small = jpeg(16, 16);
            let seg = usize::try_from(len).unwrap() - small.len();
            let mut out = small[..2].to_vec();
            out.extend([0xFF, 0xFE]);
            out.extend(u16::try_from(seg - 2).unwrap().to_be_bytes());
            out.resize(out.len() + seg - 4, b' ');
            out.extend(&small[2..]);
            assert_eq!(out.len() as u64, len);
            out
        };
        let write =
            |name: &str, bytes: &[u8]| std::fs::write(dir.path().join(name), bytes).unwrap();
        write("side.jpg", &jpeg(256, 256));
        write("wide.jpg", &jpeg(257, 1));
        write("tall.jpg", &jpeg(1, 257));
        write("at.jpg", &padded(AS_IS_MAX_BYTES));
        write("over.jpg", &padded(AS_IS_MAX_BYTES + 1));
        let names = ["side.jpg", "wide.jpg", "tall.jpg", "at.jpg", "over.jpg"];
        let states = states_of(dir.path(), &names);
        use ThumbState::{Made, Original};
        assert_eq!(states, [Original, Made, Made, Original, Made]);
    }

    #[test]
    fn a_small_gif_is_shown_as_it_is_though_it_is_not_decoded_here() {
        let dir = tempfile::tempdir().unwrap();
        // A 1×1 GIF89a, and one whose screen is 257 px wide.
        let gif: &[u8] = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;";
        std::fs::write(dir.path().join("dot.gif"), gif).unwrap();
        let mut wide = gif.to_vec();
        wide[6..8].copy_from_slice(&257u16.to_le_bytes());
        std::fs::write(dir.path().join("wide.gif"), &wide).unwrap();
        std::fs::write(dir.path().join("cut.gif"), &gif[..gif.len() - 1]).unwrap();
        let states = states_of(dir.path(), &["dot.gif", "wide.gif", "cut.gif"]);
        use ThumbState::{Failed, Original};
        // Too wide or cut short: left to the decoder, which has no GIF.
        assert_eq!(states, [Original, Failed, Failed]);
    }
}
