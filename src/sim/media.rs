//! The bytes of the files the simulated savers write, one solid colour per
//! frame. Real, decodable files where a maintained crate encodes them:
//! still and animated PNG (`png`), animated WebP (lossless frames from
//! `image-webp` in a hand-built animation container), and the two container
//! formats simple enough to write by hand: `.latent` (safetensors, as
//! SaveLatent) and `.glb` (binary glTF). Video and compressed audio
//! (`.mp4`, `.webm`, `.gif`, `.flac`, `.mp3`, `.opus`) are small
//! deterministic stand-ins: the format's magic bytes followed by bytes
//! derived from the content, so they have the right extension and type and
//! differ when the content does, but no player decodes them.

use sha2::{Digest, Sha256};

/// An animated PNG: one frame per colour at `fps`.
pub(crate) fn apng(width: u32, height: u32, frames: &[[u8; 3]], fps: f64) -> Vec<u8> {
    let (w, h) = (width.max(1), height.max(1));
    let mut out = Vec::with_capacity(256);
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Fastest);
    let n = frames.len().max(1) as u32;
    let _ = enc.set_animated(n, 0);
    let (num, den) = delay(fps);
    let _ = enc.set_frame_delay(num, den);
    if let Ok(mut writer) = enc.write_header() {
        for rgb in frames_or_grey(frames) {
            if writer.write_image_data(&solid(w, h, rgb)).is_err() {
                break;
            }
        }
        let _ = writer.finish();
    }
    out
}

fn delay(fps: f64) -> (u16, u16) {
    let ms = if fps > 0.0 {
        (1000.0 / fps).round()
    } else {
        100.0
    };
    (ms.clamp(1.0, 65_535.0) as u16, 1000)
}

fn frames_or_grey(frames: &[[u8; 3]]) -> Vec<[u8; 3]> {
    if frames.is_empty() {
        vec![[128, 128, 128]]
    } else {
        frames.to_vec()
    }
}

fn solid(w: u32, h: u32, rgb: [u8; 3]) -> Vec<u8> {
    std::iter::repeat_n(rgb, (w * h) as usize)
        .flatten()
        .collect()
}

fn chunk(out: &mut Vec<u8>, fourcc: &[u8; 4], payload: &[u8]) {
    out.extend_from_slice(fourcc);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    if payload.len() % 2 == 1 {
        out.push(0);
    }
}

fn u24(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes()[..3]);
}

/// An animated WebP (extended format: VP8X, ANIM, one ANMF per frame, each
/// holding a lossless VP8L image).
pub(crate) fn animated_webp(width: u32, height: u32, frames: &[[u8; 3]], fps: f64) -> Vec<u8> {
    let (w, h) = (width.clamp(1, 16_383), height.clamp(1, 16_383));
    let duration = delay(fps).0 as u32;
    let mut body = Vec::new();
    let mut vp8x = vec![0x02, 0, 0, 0];
    u24(&mut vp8x, w - 1);
    u24(&mut vp8x, h - 1);
    chunk(&mut body, b"VP8X", &vp8x);
    // Background colour (BGRA), loop forever.
    chunk(&mut body, b"ANIM", &[255, 255, 255, 255, 0, 0]);
    for rgb in frames_or_grey(frames) {
        let mut still = Vec::new();
        let encoded = image_webp::WebPEncoder::new(&mut still).encode(
            &solid(w, h, rgb),
            w,
            h,
            image_webp::ColorType::Rgb8,
        );
        // The still file is `RIFF size WEBP` then its VP8L chunk.
        let Some(image) = encoded.ok().and_then(|()| still.get(12..)) else {
            continue;
        };
        let mut anmf = Vec::with_capacity(16 + image.len());
        u24(&mut anmf, 0);
        u24(&mut anmf, 0);
        u24(&mut anmf, w - 1);
        u24(&mut anmf, h - 1);
        u24(&mut anmf, duration);
        anmf.push(0b10); // no blending, no disposal
        anmf.extend_from_slice(image);
        chunk(&mut body, b"ANMF", &anmf);
    }
    let mut out = Vec::with_capacity(12 + body.len());
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&((4 + body.len()) as u32).to_le_bytes());
    out.extend_from_slice(b"WEBP");
    out.extend_from_slice(&body);
    out
}

/// A `.latent` file as SaveLatent writes it: safetensors holding a zero
/// `latent_tensor` of `[batch, 4, height/8, width/8]` and the format marker.
pub(crate) fn latent(width: u32, height: u32, batch: u32) -> Vec<u8> {
    let shape = [
        batch.max(1) as usize,
        4,
        (height / 8).max(1) as usize,
        (width / 8).max(1) as usize,
    ];
    let size = shape.iter().product::<usize>() * 4;
    let header = serde_json::json!({
        "latent_format_version_0": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]},
        "latent_tensor": {"dtype": "F32", "shape": shape, "data_offsets": [0, size]},
    })
    .to_string();
    let mut head = header.into_bytes();
    // safetensors pads the header with spaces to 8 bytes.
    while !head.len().is_multiple_of(8) {
        head.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + head.len() + size);
    out.extend_from_slice(&(head.len() as u64).to_le_bytes());
    out.extend_from_slice(&head);
    out.resize(out.len() + size, 0);
    out
}

/// A binary glTF 2.0 file with one empty scene named after the content.
pub(crate) fn glb(name: &str) -> Vec<u8> {
    let mut json = serde_json::json!({
        "asset": {"version": "2.0", "generator": "comfy-batch sim"},
        "scene": 0,
        "scenes": [{"name": name, "nodes": []}],
    })
    .to_string()
    .into_bytes();
    while !json.len().is_multiple_of(4) {
        json.push(b' ');
    }
    let total = 12 + 8 + json.len();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(b"glTF");
    out.extend_from_slice(&2u32.to_le_bytes());
    out.extend_from_slice(&(total as u32).to_le_bytes());
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(b"JSON");
    out.extend_from_slice(&json);
    out
}

/// A stand-in for a format no maintained crate here encodes: its magic
/// bytes, then 256 bytes derived from `content` (so different content gives
/// different files).
pub(crate) fn stand_in(ext: &str, content: &[u8]) -> Vec<u8> {
    let magic: &[u8] = match ext {
        "mp4" => b"\0\0\0\x18ftypisom\0\0\x02\0isomiso2",
        "webm" | "mkv" => b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm",
        "gif" => b"GIF89a",
        "flac" => b"fLaC\0\0\0\x22",
        "mp3" => b"ID3\x04\0\0\0\0\0\0",
        "opus" | "ogg" => b"OggS\0\x02",
        _ => b"",
    };
    let mut out = magic.to_vec();
    let mut block = Sha256::digest(content).to_vec();
    for _ in 0..8 {
        out.extend_from_slice(&block);
        block = Sha256::digest(&block).to_vec();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn animated_png_decodes_with_every_frame() {
        let bytes = apng(8, 4, &[[255, 0, 0], [0, 255, 0], [0, 0, 255]], 6.0);
        let reader = png::Decoder::new(std::io::Cursor::new(&bytes))
            .read_info()
            .unwrap();
        let info = reader.info();
        assert_eq!((info.width, info.height), (8, 4));
        assert_eq!(info.animation_control.unwrap().num_frames, 3);
    }

    #[test]
    fn animated_webp_has_a_valid_container() {
        let bytes = animated_webp(8, 4, &[[255, 0, 0], [0, 255, 0]], 6.0);
        assert_eq!(&bytes[0..4], b"RIFF");
        assert_eq!(&bytes[8..12], b"WEBP");
        assert_eq!(
            u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize,
            bytes.len() - 8
        );
        assert_eq!(&bytes[12..16], b"VP8X");
        let mut decoder = image_webp::WebPDecoder::new(std::io::Cursor::new(&bytes)).unwrap();
        assert!(decoder.is_animated());
        assert_eq!(decoder.dimensions(), (8, 4));
        assert_eq!(decoder.num_frames(), 2);
        let mut frame = vec![0; decoder.output_buffer_size().unwrap()];
        decoder.read_frame(&mut frame).unwrap();
        assert_eq!(&frame[0..3], &[255, 0, 0]);
    }

    #[test]
    fn latent_and_glb_are_well_formed() {
        let l = latent(72, 64, 1);
        let n = u64::from_le_bytes(l[0..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&l[8..8 + n]).unwrap();
        assert_eq!(
            header["latent_tensor"]["shape"],
            serde_json::json!([1, 4, 8, 9])
        );
        assert_eq!(l.len(), 8 + n + 4 * 8 * 9 * 4);
        let g = glb("x");
        assert_eq!(&g[0..4], b"glTF");
        assert_eq!(
            u32::from_le_bytes(g[8..12].try_into().unwrap()) as usize,
            g.len()
        );
        assert_ne!(stand_in("flac", b"a"), stand_in("flac", b"b"));
        assert!(stand_in("flac", b"a").starts_with(b"fLaC"));
    }
}
