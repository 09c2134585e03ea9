//! Files as the real server names and writes them: SaveImage's
//! `<prefix>_<counter:05>_.png` (folder_paths.`get_save_image_path`), PNGs
//! with `tEXt` metadata, annotated input paths (`x.png [output]`), lexical
//! path containment checks, and the upload renaming rules.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::{Map, Value};

/// Normalises a path lexically (`a/./b/../c` → `a/c`), as `os.path.normpath`
/// / `abspath` do; leading `..` are kept.
pub(crate) use crate::paths::normalize;

/// Whether `path` (joined and normalised) stays inside `base`.
pub(crate) fn inside(base: &Path, path: &Path) -> bool {
    normalize(path).starts_with(normalize(base))
}

/// `normpath` for a relative text path (`a//b/../c` → `a/c`, `` → `.`).
fn normpath_str(p: &str) -> String {
    let n = normalize(Path::new(p));
    let s = n.to_string_lossy().to_string();
    if s.is_empty() { ".".into() } else { s }
}

/// Splits `name [output]` into the name and its folder type
/// (folder_paths.`annotated_filepath`).
pub(crate) fn annotated(name: &str) -> (&str, Option<&'static str>) {
    for (suffix, kind) in [
        (" [output]", "output"),
        (" [input]", "input"),
        (" [temp]", "temp"),
    ] {
        if let Some(stripped) = name.strip_suffix(suffix) {
            return (stripped, Some(kind));
        }
    }
    (name, None)
}

/// Resolves a LoadImage value (`sub/x.png`, `x.png [output]`) to a file
/// path, `None` if it escapes its folder.
pub(crate) fn resolve_input(dirs: &super::state::Dirs, value: &str) -> Option<PathBuf> {
    let (name, kind) = annotated(value);
    let base = dirs.by_type(kind.unwrap_or("input"))?;
    let path = base.join(name);
    inside(base, &path).then(|| normalize(&path))
}

/// Remembers the next SaveImage counter per folder and prefix, valid while
/// the folder's mtime is the one seen after our own last write; anything
/// else (a new folder, files added or deleted by others) triggers one
/// listing, as the real server does on every save. This keeps big folders
/// from being re-listed for each image.
#[derive(Default)]
pub(crate) struct CounterCache {
    dirs: HashMap<PathBuf, DirCounters>,
}

struct DirCounters {
    mtime: Option<SystemTime>,
    next: HashMap<String, u64>,
}

fn mtime(dir: &Path) -> Option<SystemTime> {
    std::fs::metadata(dir).and_then(|m| m.modified()).ok()
}

/// The real `map_filename` + filter: the counter a file name carries for
/// `prefix`, if it belongs to it.
fn counter_of(file: &str, prefix: &str) -> Option<u64> {
    let rest = file.get(prefix.len()..)?;
    if !file.starts_with(prefix) || !rest.starts_with('_') {
        return None;
    }
    // The real server reads the digits up to the next `_`; VideoHelperSuite
    // (`name_00001.mp4`) up to the extension: leading digits serve both.
    let digits: String = rest[1..].chars().take_while(char::is_ascii_digit).collect();
    Some(digits.parse::<u64>().unwrap_or(0))
}

impl CounterCache {
    /// The counter for the first image saved as `prefix` in `dir` (created
    /// if missing).
    pub fn next(&mut self, dir: &Path, prefix: &str) -> io::Result<u64> {
        let current = mtime(dir);
        let entry = self.dirs.entry(dir.to_path_buf()).or_insert(DirCounters {
            mtime: None,
            next: HashMap::new(),
        });
        if current.is_none() || entry.mtime != current {
            entry.next.clear();
            entry.mtime = current;
        }
        if let Some(n) = entry.next.get(prefix) {
            return Ok(*n);
        }
        let mut max: Option<u64> = None;
        match std::fs::read_dir(dir) {
            Ok(rd) => {
                for f in rd.flatten() {
                    let name = f.file_name();
                    if let Some(c) = counter_of(&name.to_string_lossy(), prefix) {
                        max = Some(max.map_or(c, |m| m.max(c)));
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir)?;
                entry.mtime = mtime(dir);
            }
            Err(e) => return Err(e),
        }
        let n = max.map_or(1, |m| m + 1);
        entry.next.insert(prefix.to_string(), n);
        Ok(n)
    }

    /// Records that counters up to `next - 1` are used, after writing.
    pub fn wrote(&mut self, dir: &Path, prefix: &str, next: u64) {
        if let Some(entry) = self.dirs.get_mut(dir) {
            entry.mtime = mtime(dir);
            entry.next.insert(prefix.to_string(), next);
        }
        // Bound memory for runs with very many folders.
        if self.dirs.len() > 4096 {
            self.dirs.clear();
        }
    }
}

/// Where a SaveImage prefix lands: folder, subfolder text and file prefix.
pub(crate) struct SaveTarget {
    pub folder: PathBuf,
    pub subfolder: String,
    pub filename: String,
}

/// The real "saving outside the output folder" exception text.
pub(crate) fn escape_message(full: &Path, base: &Path) -> String {
    let common = common_path(&normalize(full), &normalize(base));
    format!(
        "**** ERROR: Saving image outside the output folder is not allowed.\n full_output_folder: {}\n         output_dir: {}\n         commonpath: {}\n",
        normalize(full).display(),
        base.display(),
        common.display()
    )
}

fn common_path(a: &Path, b: &Path) -> PathBuf {
    a.components()
        .zip(b.components())
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x)
        .collect()
}

/// `get_save_image_path` minus the counter: substitutes the `%…%`
/// variables, splits subfolder and name, and refuses escapes.
pub(crate) fn save_target(
    prefix: &str,
    base: &Path,
    width: u32,
    height: u32,
) -> Result<SaveTarget, String> {
    let prefix = compute_vars(prefix, width, height);
    let norm = normpath_str(&prefix);
    let (subfolder, filename) = match norm.rsplit_once('/') {
        // `dirname("/x")` is `/`, which escapes like any absolute path.
        Some(("", f)) => ("/".to_string(), f.to_string()),
        Some((d, f)) => (d.to_string(), f.to_string()),
        None => (String::new(), norm.clone()),
    };
    let folder = base.join(&subfolder);
    if !inside(base, &folder) {
        return Err(escape_message(&folder, base));
    }
    Ok(SaveTarget {
        folder,
        subfolder,
        filename,
    })
}

/// `%width%`, `%height%`, `%year%`… as the server substitutes them (UTC).
fn compute_vars(input: &str, width: u32, height: u32) -> String {
    if !input.contains('%') {
        return input.to_string();
    }
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let (y, m, d) = civil_from_days(days);
    let tod = secs % 86_400;
    input
        .replace("%width%", &width.to_string())
        .replace("%height%", &height.to_string())
        .replace("%year%", &y.to_string())
        .replace("%month%", &format!("{m:02}"))
        .replace("%day%", &format!("{d:02}"))
        .replace("%hour%", &format!("{:02}", tod / 3600))
        .replace("%minute%", &format!("{:02}", tod % 3600 / 60))
        .replace("%second%", &format!("{:02}", tod % 60))
}

/// Days since 1970-01-01 → (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `json.dumps` as Python writes it (`", "` and `": "` separators, non-ASCII
/// escaped), for PNG text chunks that match the real server's.
pub(crate) fn python_json(v: &Value) -> String {
    struct PyFormatter;
    impl serde_json::ser::Formatter for PyFormatter {
        fn begin_array_value<W: ?Sized + io::Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> io::Result<()> {
            if first { Ok(()) } else { w.write_all(b", ") }
        }
        fn begin_object_key<W: ?Sized + io::Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> io::Result<()> {
            if first { Ok(()) } else { w.write_all(b", ") }
        }
        fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
            w.write_all(b": ")
        }
    }
    let mut buf = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, PyFormatter);
    if serde::Serialize::serialize(v, &mut ser).is_err() {
        return String::new();
    }
    let s = String::from_utf8_lossy(&buf);
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

/// A solid-colour RGB PNG with `tEXt` chunks (keyword, text).
pub(crate) fn encode_png(
    width: u32,
    height: u32,
    rgb: [u8; 3],
    texts: &[(String, String)],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let mut enc = png::Encoder::new(&mut out, width.max(1), height.max(1));
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    // Tiny solid images: the fastest setting avoids big compressor buffers.
    enc.set_compression(png::Compression::Fastest);
    for (k, t) in texts {
        let _ = enc.add_text_chunk(k.clone(), t.clone());
    }
    let pixels: Vec<u8> = std::iter::repeat_n(rgb, (width.max(1) * height.max(1)) as usize)
        .flatten()
        .collect();
    if let Ok(mut w) = enc.write_header() {
        let _ = w.write_image_data(&pixels);
    }
    out
}

/// Writes a file atomically enough for readers (tmp + rename).
pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// PNG text chunks for a saved image: `prompt`, then each `extra_pnginfo` key.
pub(crate) fn png_texts(
    prompt: &Map<String, Value>,
    extra: Option<&Map<String, Value>>,
) -> Vec<(String, String)> {
    let mut texts = vec![(
        "prompt".to_string(),
        python_json(&Value::Object(prompt.clone())),
    )];
    if let Some(extra) = extra {
        for (k, v) in extra {
            texts.push((k.clone(), python_json(v)));
        }
    }
    texts
}

/// Image files as LoadImage's list shows them: top level of the input
/// folder, image extensions, sorted.
pub(crate) fn input_images(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = rd
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| {
            let lower = n.to_ascii_lowercase();
            [
                ".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff",
            ]
            .iter()
            .any(|ext| lower.ends_with(ext))
        })
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_follow_the_real_rules() {
        assert_eq!(counter_of("basic_00007_.png", "basic"), Some(7));
        assert_eq!(counter_of("basic_x_.png", "basic"), Some(0));
        assert_eq!(counter_of("basicx_00001_.png", "basic"), None);
        assert_eq!(counter_of("bas", "basic"), None);
    }

    #[test]
    fn save_targets_split_and_refuse_escapes() {
        let base = Path::new("/srv/out");
        let t = save_target("rec/basic", base, 8, 8).unwrap();
        assert_eq!(
            (t.subfolder.as_str(), t.filename.as_str()),
            ("rec", "basic")
        );
        let t = save_target("a/./b/../img_%width%", base, 8, 4).unwrap();
        assert_eq!((t.subfolder.as_str(), t.filename.as_str()), ("a", "img_8"));
        assert!(save_target("../escape", base, 8, 8).is_err());
        assert!(save_target("/etc/x", base, 8, 8).is_err());
    }

    #[test]
    fn python_json_matches_json_dumps() {
        let v = serde_json::json!({"a": [1, 2.5], "b": "é"});
        assert_eq!(python_json(&v), r#"{"a": [1, 2.5], "b": "\u00e9"}"#);
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_000), (2024, 10, 4));
    }
}
