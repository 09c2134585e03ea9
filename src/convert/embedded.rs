//! Workflows embedded in images: the frontend and the server write the UI
//! workflow (`workflow`) and the API prompt (`prompt`) into PNG `tEXt` /
//! `iTXt` chunks and into WebP EXIF strings (`workflow:{…}`); other tools
//! may compress them (`zTXt`, compressed `iTXt`). Only bytes are read here;
//! nothing is decoded beyond the metadata, and nothing inflates past
//! [`MAX_INFLATED`].

/// The most bytes an image's compressed `workflow` texts may inflate to,
/// all its chunks together; likewise its `prompt` texts.
/// The largest real workflows are a few MiB; without a cap, a chunk of a
/// few hundred KiB could make `convert` or `plan` allocate gigabytes.
pub const MAX_INFLATED: usize = 64 << 20;

/// What an image carries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Embedded {
    /// The UI-format workflow text, if any.
    pub workflow: Option<String>,
    /// The API-format prompt text, if any.
    pub prompt: Option<String>,
    /// The keys (`workflow`, `prompt`) of compressed texts left out because
    /// they inflate past the cap ([`MAX_INFLATED`]).
    pub too_large: Vec<&'static str>,
}

impl Embedded {
    /// The text to read a workflow from: `workflow` (what the frontend
    /// saved), else `prompt` (what it sent); else why there is none, as the
    /// end of a line naming the file.
    pub fn into_text(self) -> Result<String, String> {
        if let Some(text) = self.workflow.or(self.prompt) {
            return Ok(text);
        }
        Err(match self.too_large.first() {
            Some(key) => format!(
                "the image's compressed '{key}' metadata inflates past the {} MiB cap",
                MAX_INFLATED >> 20
            ),
            None => "the image carries no 'workflow' or 'prompt' metadata".into(),
        })
    }
}

/// Which image formats are recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    /// PNG.
    Png,
    /// WebP.
    Webp,
}

/// The image format of `bytes`, by signature.
pub fn image_kind(bytes: &[u8]) -> Option<ImageKind> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(ImageKind::Png)
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some(ImageKind::Webp)
    } else {
        None
    }
}

/// Reads the embedded texts of a PNG or WebP. Damaged or foreign chunks are
/// skipped; a truncated file yields what was found before the damage.
pub fn read(bytes: &[u8]) -> Embedded {
    match image_kind(bytes) {
        Some(ImageKind::Png) => read_png(bytes, MAX_INFLATED),
        Some(ImageKind::Webp) => read_webp(bytes),
        None => Embedded::default(),
    }
}

fn keep(found: &mut Embedded, key: &[u8], text: String) {
    match key {
        b"workflow" if found.workflow.is_none() => found.workflow = Some(text),
        b"prompt" if found.prompt.is_none() => found.prompt = Some(text),
        _ => {}
    }
}

/// Inflates a compressed text of `key` when it is one we want and do not
/// have yet, within the bytes its key's chunks may still inflate to
/// (`left`, one budget for `workflow`, one for `prompt`): every inflated
/// byte counts, kept or not, so many chunks under the cap cannot add up
/// to gigabytes. One past it is noted in [`Embedded::too_large`], a
/// damaged one skipped.
fn keep_compressed(found: &mut Embedded, key: &[u8], zlib: &[u8], left: &mut [usize; 2]) {
    let (wanted, name, left) = match key {
        b"workflow" => (found.workflow.is_none(), "workflow", &mut left[0]),
        b"prompt" => (found.prompt.is_none(), "prompt", &mut left[1]),
        _ => return,
    };
    if !wanted {
        return;
    }
    use miniz_oxide::inflate::{TINFLStatus, decompress_to_vec_zlib_with_limit};
    match decompress_to_vec_zlib_with_limit(zlib, *left) {
        Ok(text) => {
            *left -= text.len();
            if let Ok(text) = String::from_utf8(text) {
                keep(found, key, text);
            }
        }
        Err(e) if e.status == TINFLStatus::HasMoreOutput => {
            *left = 0;
            if !found.too_large.contains(&name) {
                found.too_large.push(name);
            }
        }
        Err(e) => *left = left.saturating_sub(e.output.len()),
    }
}

fn read_png(bytes: &[u8], cap: usize) -> Embedded {
    let mut found = Embedded::default();
    let mut left = [cap, cap];
    let mut at = 8;
    while at + 8 <= bytes.len() {
        let len =
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        let kind = &bytes[at + 4..at + 8];
        let start = at + 8;
        let Some(end) = start.checked_add(len).filter(|&e| e <= bytes.len()) else {
            break;
        };
        let data = &bytes[start..end];
        match kind {
            b"tEXt" => {
                if let Some(nul) = data.iter().position(|&b| b == 0) {
                    // Latin-1 by the spec; ComfyUI writes UTF-8 there.
                    let text = String::from_utf8(data[nul + 1..].to_vec())
                        .unwrap_or_else(|_| data[nul + 1..].iter().map(|&b| b as char).collect());
                    keep(&mut found, &data[..nul], text);
                }
            }
            b"zTXt" => {
                // Keyword, NUL, compression method (0: zlib), the text.
                if let Some(nul) = data.iter().position(|&b| b == 0)
                    && data.get(nul + 1) == Some(&0)
                {
                    keep_compressed(&mut found, &data[..nul], &data[nul + 2..], &mut left);
                }
            }
            b"iTXt" => match itxt(data) {
                Some((key, Itxt::Plain(text))) => keep(&mut found, key, text),
                Some((key, Itxt::Zlib(zlib))) => keep_compressed(&mut found, key, zlib, &mut left),
                None => {}
            },
            b"IEND" => break,
            _ => {}
        }
        at = end + 4; // the CRC
    }
    found
}

/// An `iTXt` chunk's text: as is, or compressed (ComfyUI writes plain
/// ones; other tools may compress).
enum Itxt<'a> {
    Plain(String),
    Zlib(&'a [u8]),
}

/// An `iTXt` chunk's keyword and text.
fn itxt(data: &[u8]) -> Option<(&[u8], Itxt<'_>)> {
    let nul = data.iter().position(|&b| b == 0)?;
    let key = &data[..nul];
    let flag = *data.get(nul + 1)?;
    let method = *data.get(nul + 2)?;
    // Language tag and translated keyword, each NUL-terminated.
    let mut rest = data.get(nul + 3..)?;
    for _ in 0..2 {
        let n = rest.iter().position(|&b| b == 0)?;
        rest = &rest[n + 1..];
    }
    match (flag, method) {
        (0, _) => Some((key, Itxt::Plain(String::from_utf8(rest.to_vec()).ok()?))),
        (1, 0) => Some((key, Itxt::Zlib(rest))),
        _ => None,
    }
}

fn read_webp(bytes: &[u8]) -> Embedded {
    let mut found = Embedded::default();
    let mut at = 12;
    while at + 8 <= bytes.len() {
        let kind = &bytes[at..at + 4];
        let len = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]])
            as usize;
        let start = at + 8;
        let Some(end) = start.checked_add(len).filter(|&e| e <= bytes.len()) else {
            break;
        };
        if kind == b"EXIF" || kind == b"XMP " {
            scan_strings(&bytes[start..end], &mut found);
        }
        at = end + (len & 1);
    }
    found
}

/// The frontend and ComfyUI's SaveAnimatedWEBP store `workflow:{json}` and
/// `prompt:{json}` as NUL-terminated EXIF strings: find them by prefix.
fn scan_strings(data: &[u8], found: &mut Embedded) {
    for part in data.split(|&b| b == 0) {
        for key in [&b"workflow"[..], &b"prompt"[..]] {
            let Some(pos) = find(part, key) else { continue };
            let rest = &part[pos + key.len()..];
            if rest.first() == Some(&b':')
                && let Ok(text) = std::str::from_utf8(&rest[1..])
                && text.trim_start().starts_with('{')
            {
                keep(found, key, text.to_string());
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(kind: &[u8], data: &[u8]) -> Vec<u8> {
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&[0, 0, 0, 0]);
        out
    }

    #[test]
    fn png_text_chunks_are_found_and_garbage_is_skipped() {
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend(chunk(b"zzZZ", &[0xff; 40]));
        png.extend(chunk(b"tEXt", b"prompt\0{\"1\":{}}"));
        png.extend(chunk(b"iTXt", b"workflow\0\0\0en\0\0{\"nodes\":[]}"));
        png.extend(chunk(b"IEND", b""));
        let found = read(&png);
        assert_eq!(found.prompt.as_deref(), Some("{\"1\":{}}"));
        assert_eq!(found.workflow.as_deref(), Some("{\"nodes\":[]}"));
    }

    #[test]
    fn truncated_and_lying_chunks_do_not_panic() {
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend_from_slice(&u32::MAX.to_be_bytes());
        png.extend_from_slice(b"tEXt");
        assert_eq!(read(&png), Embedded::default());
        assert_eq!(read(b"\x89PNG\r\n\x1a\n\0\0"), Embedded::default());
        let mut webp = b"RIFF\0\0\0\0WEBP".to_vec();
        webp.extend_from_slice(b"EXIF");
        webp.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(read(&webp), Embedded::default());
    }

    #[test]
    fn compressed_texts_are_inflated_within_the_cap() {
        use miniz_oxide::deflate::compress_to_vec_zlib;
        let workflow = br#"{"nodes":[],"links":[]}"#;
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut z = b"workflow\0\0".to_vec();
        z.extend(compress_to_vec_zlib(workflow, 6));
        png.extend(chunk(b"zTXt", &z));
        let mut i = b"prompt\0\x01\0en\0\0".to_vec();
        i.extend(compress_to_vec_zlib(br#"{"1":{}}"#, 6));
        png.extend(chunk(b"iTXt", &i));
        png.extend(chunk(b"IEND", b""));
        let found = read(&png);
        assert_eq!(
            found.workflow.as_deref(),
            Some(r#"{"nodes":[],"links":[]}"#)
        );
        assert_eq!(found.prompt.as_deref(), Some(r#"{"1":{}}"#));
        assert!(found.too_large.is_empty());

        // One byte past the cap: left out and noted, not a damaged chunk.
        let cap = workflow.len() - 1;
        let found = read_png(&png, cap);
        assert_eq!(found.workflow, None);
        assert_eq!(found.too_large, ["workflow"]);
        assert_eq!(
            found.clone().into_text().unwrap(),
            r#"{"1":{}}"#,
            "the prompt serves"
        );
        let only_workflow = Embedded {
            prompt: None,
            ..found
        };
        assert_eq!(
            only_workflow.into_text().unwrap_err(),
            "the image's compressed 'workflow' metadata inflates past the 64 MiB cap"
        );
        // Damaged compressed data is skipped like any damaged chunk.
        let mut bad = b"\x89PNG\r\n\x1a\n".to_vec();
        bad.extend(chunk(b"zTXt", b"workflow\0\0\x78\x9cgarbage"));
        assert_eq!(read(&bad), Embedded::default());
        assert_eq!(
            Embedded::default().into_text().unwrap_err(),
            "the image carries no 'workflow' or 'prompt' metadata"
        );
    }

    #[test]
    fn webp_exif_strings_are_found() {
        let exif = b"II*\0....workflow:{\"nodes\":[]}\0prompt:{\"3\":{}}\0";
        let mut webp = b"RIFF\0\0\0\0WEBP".to_vec();
        webp.extend_from_slice(b"EXIF");
        webp.extend_from_slice(&(exif.len() as u32).to_le_bytes());
        webp.extend_from_slice(exif);
        let found = read(&webp);
        assert_eq!(found.workflow.as_deref(), Some("{\"nodes\":[]}"));
        assert_eq!(found.prompt.as_deref(), Some("{\"3\":{}}"));
    }
}
