//! Workflows embedded in images: the frontend and the server write the UI
//! workflow (`workflow`) and the API prompt (`prompt`) into PNG `tEXt` /
//! `iTXt` chunks and into WebP EXIF strings (`workflow:{…}`). Only bytes
//! are read here; nothing is decoded beyond the metadata.

/// What an image carries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Embedded {
    /// The UI-format workflow text, if any.
    pub workflow: Option<String>,
    /// The API-format prompt text, if any.
    pub prompt: Option<String>,
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
        Some(ImageKind::Png) => read_png(bytes),
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

fn read_png(bytes: &[u8]) -> Embedded {
    let mut found = Embedded::default();
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
            b"iTXt" => {
                if let Some(text) = itxt(data) {
                    keep(&mut found, text.0, text.1);
                }
            }
            b"IEND" => break,
            _ => {}
        }
        at = end + 4; // the CRC
    }
    found
}

/// An uncompressed `iTXt` chunk's keyword and text (compressed ones are
/// skipped: ComfyUI does not write them).
fn itxt(data: &[u8]) -> Option<(&[u8], String)> {
    let nul = data.iter().position(|&b| b == 0)?;
    let key = &data[..nul];
    let flag = *data.get(nul + 1)?;
    if flag != 0 {
        return None;
    }
    let mut rest = data.get(nul + 3..)?;
    for _ in 0..2 {
        let n = rest.iter().position(|&b| b == 0)?;
        rest = &rest[n + 1..];
    }
    Some((key, String::from_utf8(rest.to_vec()).ok()?))
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
