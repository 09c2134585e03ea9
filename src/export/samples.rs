//! Rows → samples: one sample per output file of the format's kind, with a
//! safe, unique file name and key, and the row's metadata typed per column.
//! A row at a time: what is kept across rows is a hash per name taken.

use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};

use super::{ExportSummary, Format};
use crate::folder::{ColumnType, Refusal, Row, RunFolder, extension};

/// Metadata names the dataset loaders give a meaning of their own; a
/// parameter of that name is exported as `param_<name>`.
const RESERVED: [&str; 10] = [
    "file_name",
    "image",
    "audio",
    "label",
    "job_id",
    "job",
    "seed",
    "batch_index",
    "pack_size",
    "text",
];

/// One exported file and what describes it.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The file as the log names it, relative to the run folder (opened
    /// through [`RunFolder::file`] when written).
    pub rel: String,
    /// Its name in the export: unique, only `[A-Za-z0-9._-]`, no leading dot.
    pub file_name: String,
    /// The WebDataset key: the file name's stem, without dots, unique.
    pub key: String,
    /// Lowercase extension: the file's own when it is on
    /// [`crate::sink::KEPT_EXTENSIONS`], else `bin`.
    pub ext: String,
    /// `metadata.jsonl` columns after `file_name`: job_id, job, seed,
    /// `batch_index` and `pack_size` when the run has packed rows (null
    /// outside packs), every parameter, and `text` when the run has text
    /// outputs.
    pub metadata: Map<String, Value>,
    /// The WebDataset `.json`: job_id, job, seed, the pack columns as in
    /// `metadata`, params, text.
    pub json: Value,
    /// The WebDataset `.txt`: the text output, else the prompt.
    pub txt: Option<String>,
}

fn safe_name(raw: &str) -> String {
    let base = raw.rsplit('/').next().unwrap_or(raw);
    let mut name: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    if name.starts_with('.') || name.is_empty() {
        name.insert(0, '_');
    }
    name
}

/// The names taken so far, as 64-bit hashes: a few bytes a sample, not
/// the names (a collision, about one in 10^7 at a million names, renames
/// one file `-2`, still unique).
#[derive(Debug, Default)]
struct Taken(HashSet<u64>);

impl Taken {
    fn insert(&mut self, name: &str) -> bool {
        self.0.insert(crate::hash::hash64(&[name]))
    }
}

fn unique(name: String, taken: &mut Taken, split: impl Fn(&str) -> (String, String)) -> String {
    if taken.insert(&name) {
        return name;
    }
    let (stem, tail) = split(&name);
    (2..)
        .map(|n| format!("{stem}-{n}{tail}"))
        .find(|candidate| taken.insert(candidate))
        .expect("an unused name exists")
}

/// A sort key comparing runs of digits as numbers (`a_9_0` < `a_12_0`).
fn natural_key(name: &str) -> Vec<(u128, &str)> {
    let mut key = Vec::new();
    let mut rest = name;
    while let Some(c) = rest.chars().next() {
        let digits = c.is_ascii_digit();
        let end = rest
            .find(|ch: char| ch.is_ascii_digit() != digits)
            .unwrap_or(rest.len());
        let (chunk, tail) = rest.split_at(end);
        // Text sorts after every number; a number too long for u128 is
        // compared as text after the others.
        let number = if digits {
            chunk.parse().unwrap_or(u128::MAX)
        } else {
            u128::MAX
        };
        key.push((number, chunk));
        rest = tail;
    }
    key
}

/// Turns rows into samples, one row at a time, keeping the names taken.
pub(super) struct Samples<'f> {
    folder: &'f RunFolder,
    format: Format,
    types: HashMap<String, ColumnType>,
    has_text: bool,
    /// Whether any row exported is packed: then every sample carries
    /// `batch_index` and `pack_size` (one schema for the loaders).
    packed: bool,
    names: Taken,
    keys: Taken,
}

impl<'f> Samples<'f> {
    /// Samples of `folder`'s rows for `format`, with the columns' types and
    /// whether any row has a text (both learnt from every row exported).
    pub(super) fn new(
        folder: &'f RunFolder,
        format: Format,
        types: HashMap<String, ColumnType>,
        has_text: bool,
        packed: bool,
    ) -> Samples<'f> {
        Samples {
            folder,
            format,
            types,
            has_text,
            packed,
            names: Taken::default(),
            keys: Taken::default(),
        }
    }

    /// The samples of one row, in file order, noting what was skipped.
    pub(super) fn of(&mut self, row: &Row, summary: &mut ExportSummary) -> Vec<Sample> {
        let (folder, types, format) = (self.folder, &self.types, self.format);
        let mut samples = Vec::new();
        let text = folder.text(row);
        let mut params = Map::new();
        let mut metadata = Map::new();
        metadata.insert("job_id".into(), folder.get(row, "job_id").into());
        metadata.insert("job".into(), folder.get(row, "job").into());
        let seed = types["seed"].value(folder.get(row, "seed"));
        metadata.insert("seed".into(), seed.clone());
        // Two images of one pack share its seed: these tell them apart.
        let pack: Vec<(&str, Value)> = ["batch_index", "pack_size"]
            .into_iter()
            .filter(|_| self.packed)
            .map(|c| {
                let n = folder.get(row, c).parse::<u64>().ok();
                (c, n.map_or(Value::Null, Value::from))
            })
            .collect();
        for (c, v) in &pack {
            metadata.insert((*c).into(), v.clone());
        }
        for name in folder.params() {
            let value = types[name.as_str()].value(folder.param(row, name));
            let column = if RESERVED.contains(&name.as_str()) {
                format!("param_{name}")
            } else {
                name.clone()
            };
            metadata.insert(column, value.clone());
            params.insert(name.clone(), value);
        }
        if self.has_text {
            metadata.insert(
                "text".into(),
                text.clone().map_or(Value::Null, Value::String),
            );
        }
        let mut json = serde_json::json!({
            "job_id": folder.get(row, "job_id"),
            "job": folder.get(row, "job"),
            "seed": seed,
            "params": params,
            "text": text,
        });
        for (c, v) in pack {
            json[c] = v;
        }
        let prompt = ["prompt", "positive"]
            .iter()
            .map(|p| folder.param(row, p))
            .find(|p| !p.is_empty())
            .map(str::to_string);
        let txt = text.clone().or(prompt);
        // The log lists outputs in the order the server reported them,
        // which varies from run to run: sorted (numbers as numbers, so
        // node 9 before node 12), the same outputs give the same samples,
        // and byte-identical tars, every night.
        let mut files: Vec<&str> = folder.files(row).collect();
        files.sort_by(|a, b| natural_key(a).cmp(&natural_key(b)));
        files.dedup();
        for file in files {
            // A folder an earlier version wrote may hold the server's own
            // extension (`.html`, `.sh`): a loader keys members by it.
            let ext = extension(file);
            let ext = crate::sink::kept_extension(&ext)
                .unwrap_or(crate::sink::UNKNOWN_EXTENSION)
                .to_string();
            if !format.takes(&ext) {
                if ext != "txt" {
                    summary.other_kinds += 1;
                }
                continue;
            }
            match folder.file(file) {
                Ok(_) => {}
                Err(Refusal::Missing) => {
                    summary.missing.push(file.to_string());
                    continue;
                }
                Err(why) => {
                    summary.refused.push(format!("{file}: {why}"));
                    continue;
                }
            }
            let file_name = unique(safe_name(file), &mut self.names, |n| {
                match n.rsplit_once('.') {
                    Some((stem, ext)) => (stem.to_string(), format!(".{ext}")),
                    None => (n.to_string(), String::new()),
                }
            });
            let stem = file_name
                .rsplit_once('.')
                .map_or(file_name.as_str(), |(s, _)| s)
                .replace('.', "_")
                .chars()
                .take(80) // tar (ustar) names are at most 100 bytes
                .collect();
            let key = unique(stem, &mut self.keys, |k| (k.to_string(), String::new()));
            samples.push(Sample {
                rel: file.to_string(),
                file_name,
                key,
                ext,
                metadata: metadata.clone(),
                json: json.clone(),
                txt: txt.clone(),
            });
        }
        samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_sort_by_node_and_index_as_numbers() {
        let mut files = ["a_12_0.flac", "a_9_10.png", "a_9_2.png", "b_1_0.png"];
        files.sort_by(|a, b| natural_key(a).cmp(&natural_key(b)));
        assert_eq!(
            files,
            ["a_9_2.png", "a_9_10.png", "a_12_0.flac", "b_1_0.png"]
        );
    }

    #[test]
    fn hostile_names_become_safe_and_unique() {
        assert_eq!(safe_name("images/a b\n\"c\".png"), "a-b--c-.png");
        assert_eq!(safe_name("images/.hidden.png"), "_.hidden.png");
        assert_eq!(safe_name("images/ü.png"), "-.png");
        let mut taken = Taken::default();
        let split = |n: &str| match n.rsplit_once('.') {
            Some((s, e)) => (s.to_string(), format!(".{e}")),
            None => (n.to_string(), String::new()),
        };
        assert_eq!(unique("a.png".into(), &mut taken, split), "a.png");
        assert_eq!(unique("a.png".into(), &mut taken, split), "a-2.png");
        assert_eq!(unique("a.png".into(), &mut taken, split), "a-3.png");
    }
}
