//! The wildcards folder: `NAME.txt` files (one entry per line, `#` comments
//! and blank lines skipped) and YAML/JSON collections (nested keys are
//! nested names), found by name, glob (`colors/*`) or, as the reference
//! does, by `**/name` when nothing else matches. Files are listed once and
//! read only when a template names them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{TemplateError, TemplateErrorKind as K};

/// The largest wildcard file read (a mistaken link to a huge file must not
/// eat the memory).
const MAX_FILE_BYTES: u64 = 64 << 20;
/// How deep folders are walked (symlink loops end here).
const MAX_DEPTH: usize = 16;

/// One entry of a wildcard collection, with where it was written.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The entry's text (a template itself).
    pub(crate) text: String,
    /// The file it comes from.
    pub(crate) file: PathBuf,
    /// 1-based line (1 for YAML/JSON entries, whose lines are not tracked).
    pub(crate) line: usize,
    /// 1-based column where the text starts.
    pub(crate) col: usize,
}

#[derive(Debug, Clone)]
enum Source {
    Text(PathBuf),
    /// A structured file and the key path inside it.
    Structured(PathBuf, Vec<String>),
}

/// The wildcard collections under one folder.
#[derive(Debug)]
pub struct Wildcards {
    root: PathBuf,
    /// Name → where its entries are (sorted by name: glob order is stable).
    index: BTreeMap<String, Vec<Source>>,
    listed: bool,
    /// YAML/JSON files that could not be read (named when a wildcard is
    /// not found: it may be in one of them).
    unreadable: Vec<String>,
    /// Entries already read, by collection name.
    read: std::collections::HashMap<String, std::rc::Rc<Vec<Entry>>>,
}

impl Wildcards {
    /// The collections under `root` (which need not exist: then every
    /// wildcard is unknown). Nothing is read until a template needs it.
    pub fn new(root: PathBuf) -> Wildcards {
        Wildcards {
            root,
            index: BTreeMap::new(),
            listed: false,
            unreadable: Vec::new(),
            read: std::collections::HashMap::new(),
        }
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn list(&mut self) -> Result<(), TemplateError> {
        if self.listed {
            return Ok(());
        }
        self.listed = true;
        if !self.root.is_dir() {
            return Ok(());
        }
        let mut files = Vec::new();
        walk(&self.root, &self.root, 0, &mut files);
        files.sort();
        for (rel, path) in files {
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            let stem = rel
                .rsplit_once('.')
                .map(|(s, _)| s)
                .unwrap_or(&rel)
                .to_owned();
            match ext {
                "txt" => self.index.entry(stem).or_default().push(Source::Text(path)),
                "yaml" | "yml" | "json" => {
                    let prefix = match stem.rsplit_once('/') {
                        Some((dir, _)) => format!("{dir}/"),
                        None => String::new(),
                    };
                    let collections = match read_structured(&path, &stem) {
                        Ok(c) => c,
                        Err(e) => {
                            self.unreadable.push(format!("{} ({})", rel, e.kind));
                            continue;
                        }
                    };
                    for (name, keys) in collections {
                        self.index
                            .entry(format!("{prefix}{name}"))
                            .or_default()
                            .push(Source::Structured(path.clone(), keys));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Structured files that could not be read, with why.
    pub(crate) fn unreadable(&self) -> &[String] {
        &self.unreadable
    }

    /// Every known name (for "did you mean").
    pub(crate) fn names(&mut self) -> Vec<String> {
        let _ = self.list();
        self.index.keys().cloned().collect()
    }

    /// The names a wildcard reference matches: itself, a glob, or
    /// `**/name` (as the reference falls back to).
    pub(crate) fn resolve(&mut self, name: &str) -> Result<Vec<String>, TemplateError> {
        self.list()?;
        let direct: Vec<String> = self
            .index
            .keys()
            .filter(|n| fnmatch(n, name))
            .cloned()
            .collect();
        if !direct.is_empty() {
            return Ok(direct);
        }
        let deep = format!("**/{name}");
        Ok(self
            .index
            .keys()
            .filter(|n| fnmatch(n, &deep))
            .cloned()
            .collect())
    }

    /// The entries of one collection name, in file order (not yet
    /// deduplicated or sorted).
    pub(crate) fn entries(&mut self, name: &str) -> Result<std::rc::Rc<Vec<Entry>>, TemplateError> {
        if let Some(hit) = self.read.get(name) {
            return Ok(hit.clone());
        }
        let out = std::rc::Rc::new(self.read_entries(name)?);
        self.read.insert(name.to_owned(), out.clone());
        Ok(out)
    }

    fn read_entries(&mut self, name: &str) -> Result<Vec<Entry>, TemplateError> {
        self.list()?;
        let sources = self.index.get(name).cloned().unwrap_or_default();
        let mut out = Vec::new();
        for source in sources {
            match source {
                Source::Text(path) => out.extend(read_text(&path)?),
                Source::Structured(path, keys) => {
                    let value = structured_value(&path)?;
                    let mut node = &value;
                    for k in &keys {
                        node = node.get(k).unwrap_or(&serde_json::Value::Null);
                    }
                    let items: Vec<&serde_json::Value> = match node {
                        serde_json::Value::Array(a) => a.iter().collect(),
                        other => vec![other],
                    };
                    for item in items {
                        let text = match item {
                            serde_json::Value::String(s) => s.clone(),
                            serde_json::Value::Object(o) => o
                                .get("text")
                                .or_else(|| o.get("content"))
                                .and_then(|v| v.as_str())
                                .unwrap_or("")
                                .to_owned(),
                            serde_json::Value::Number(n) => n.to_string(),
                            _ => String::new(),
                        };
                        if !text.trim().is_empty() {
                            out.push(Entry {
                                text: text.trim().to_owned(),
                                file: path.clone(),
                                line: 1,
                                col: 1,
                            });
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

fn walk(root: &Path, dir: &Path, depth: usize, out: &mut Vec<(String, PathBuf)>) {
    if depth > MAX_DEPTH {
        return;
    }
    let Ok(read) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in read.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        // Linked folders are not followed (a link loop would never end).
        let linked = entry.file_type().is_ok_and(|t| t.is_symlink());
        if path.is_dir() && !linked {
            walk(root, &path, depth + 1, out);
        } else if path.is_file() {
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            out.push((rel, path));
        }
    }
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, TemplateError> {
    crate::manifest::read_capped(path, MAX_FILE_BYTES).map_err(|e| {
        TemplateError::in_file(path, 1, 1, K::Wildcard(format!("cannot read it: {e}")))
    })
}

/// UTF-8 text, or an error at the first bad byte.
fn utf8(path: &Path, bytes: Vec<u8>) -> Result<String, TemplateError> {
    let bytes = match bytes.strip_prefix(b"\xEF\xBB\xBF") {
        Some(rest) => rest.to_vec(),
        None => bytes,
    };
    String::from_utf8(bytes).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let prefix = String::from_utf8_lossy(good);
        let line = prefix.matches('\n').count() + 1;
        let col = prefix.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        let byte = e.as_bytes()[e.utf8_error().valid_up_to()];
        TemplateError::in_file(
            path,
            line,
            col,
            K::Wildcard(format!(
                "byte 0x{byte:02X} is not UTF-8; save the file as UTF-8"
            )),
        )
    })
}

fn read_text(path: &Path) -> Result<Vec<Entry>, TemplateError> {
    let text = utf8(path, read_bytes(path)?)?;
    let mut out = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let lead = line.len() - line.trim_start().len();
        out.push(Entry {
            text: trimmed.to_owned(),
            file: path.to_owned(),
            line: i + 1,
            col: line[..lead].chars().count() + 1,
        });
    }
    Ok(out)
}

fn structured_value(path: &Path) -> Result<serde_json::Value, TemplateError> {
    let text = utf8(path, read_bytes(path)?)?;
    let json = path.extension().is_some_and(|e| e == "json");
    let parsed: Result<serde_json::Value, String> = if json {
        serde_json::from_str(&text).map_err(|e| e.to_string())
    } else {
        serde_yaml::from_str(&text).map_err(|e| e.to_string())
    };
    parsed.map_err(|e| TemplateError::in_file(path, 1, 1, K::Wildcard(crate::text::clip(&e, 200))))
}

/// The collections of a structured file: (name, key path).
fn read_structured(path: &Path, stem: &str) -> Result<Vec<(String, Vec<String>)>, TemplateError> {
    let value = structured_value(path)?;
    let mut out = Vec::new();
    match &value {
        serde_json::Value::Object(_) => collect(&value, &mut Vec::new(), &mut out),
        serde_json::Value::Array(_) => {
            let base = stem.rsplit('/').next().unwrap_or(stem).to_owned();
            out.push((base, Vec::new()));
        }
        _ => {}
    }
    Ok(out)
}

fn collect(v: &serde_json::Value, keys: &mut Vec<String>, out: &mut Vec<(String, Vec<String>)>) {
    if let serde_json::Value::Object(map) = v {
        for (k, child) in map {
            keys.push(k.clone());
            match child {
                serde_json::Value::Object(_) => collect(child, keys, out),
                serde_json::Value::Array(_) | serde_json::Value::String(_) => {
                    out.push((keys.join("/"), keys.clone()))
                }
                _ => {}
            }
            keys.pop();
        }
    }
}

/// Python's `fnmatch` (case-sensitive): `*` any run (also across `/`), `?`
/// one character, `[abc]`, `[!abc]`, `[a-z]`.
pub(crate) fn fnmatch(name: &str, pattern: &str) -> bool {
    let n: Vec<char> = name.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    // Iterative matching with one backtrack point for `*`.
    let (mut i, mut j) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while i < n.len() {
        if j < p.len() {
            match p[j] {
                '*' => {
                    star = Some((j, i));
                    j += 1;
                    continue;
                }
                '?' => {
                    i += 1;
                    j += 1;
                    continue;
                }
                '[' => {
                    if let Some((matched, next)) = class(&p, j, n[i]) {
                        if matched {
                            i += 1;
                            j = next;
                            continue;
                        }
                    } else if n[i] == '[' {
                        i += 1;
                        j += 1;
                        continue;
                    }
                }
                c if c == n[i] => {
                    i += 1;
                    j += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sj, si)) => {
                j = sj + 1;
                i = si + 1;
                star = Some((sj, si + 1));
            }
            None => return false,
        }
    }
    p[j..].iter().all(|c| *c == '*')
}

/// A `[...]` class at `p[j]`: (matches, index after it), or `None` when
/// the bracket is not closed (then it is a literal `[`).
fn class(p: &[char], j: usize, c: char) -> Option<(bool, usize)> {
    let mut k = j + 1;
    let negate = matches!(p.get(k), Some('!'));
    if negate {
        k += 1;
    }
    let start = k;
    let mut matched = false;
    while k < p.len() {
        if p[k] == ']' && k > start {
            return Some((matched != negate, k + 1));
        }
        if k + 2 < p.len() && p[k + 1] == '-' && p[k + 2] != ']' {
            if p[k] <= c && c <= p[k + 2] {
                matched = true;
            }
            k += 3;
        } else {
            if p[k] == c {
                matched = true;
            }
            k += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnmatch_is_pythons() {
        assert!(fnmatch("colors/warm", "colors/*"));
        assert!(fnmatch("colors/warm", "*"));
        assert!(fnmatch("a/b/c", "**/c"));
        assert!(!fnmatch("c", "**/c"));
        assert!(fnmatch("colors/warm", "colors/w?rm"));
        assert!(fnmatch("colors/warm", "colors/[vw]arm"));
        assert!(!fnmatch("colors/warm", "colors/[!w]arm"));
        assert!(!fnmatch("animals", "animal"));
    }
}
