//! An output folder read back, finished or still being written: `runs.csv`
//! by column name (so columns added later, such as `text`, are tolerated),
//! the newest row of each job, typed parameter values, `--where` filters,
//! and `run.json` ([`runinfo`]). Used by `export`, `merge` and `status`;
//! knows nothing of the network, the scheduler or how rows were written.
//! Every file a log names is opened through [`open_under`] (also by
//! `gallery` and `grid`), never through a symbolic link.

mod inside;
pub mod merge;
pub mod runinfo;
pub mod status;

pub use inside::{Opened, Refusal, open_under, walk_under};
pub(crate) use inside::{link_or_copy, same_inode};

use std::collections::HashMap;

use crate::runlog::{Log, LogError, Newest, Rows};
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

pub use crate::runlog::{LOG, Row};

/// Why a folder could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    /// The log is missing, not a comfy-batch log, or damaged.
    #[error(transparent)]
    Log(#[from] LogError),
    /// Reading failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A `--where` names a column the log does not have.
    #[error("--where {name}: no such column in {log}{}", hint.as_ref().map(|h| format!(" (did you mean '{h}'?)")).unwrap_or_default())]
    UnknownColumn {
        /// The name as given.
        name: String,
        /// The log.
        log: String,
        /// The nearest column name.
        hint: Option<String>,
    },
    /// A `--where` is not `name=value`.
    #[error("--where {0}: expected NAME=VALUE, e.g. cfg=7")]
    BadWhere(String),
}

/// An output folder and its log (read row by row, never whole).
#[derive(Debug, Clone)]
pub struct RunFolder {
    root: PathBuf,
    log: Log,
}

impl RunFolder {
    /// Opens the log of `path` (`DIR` or `DIR/runs.csv`) and reads its
    /// header; rows are read when asked for (see [`crate::runlog`]).
    pub fn open(path: &Path) -> Result<RunFolder, FolderError> {
        Ok(RunFolder {
            root: crate::runlog::folder_of(path),
            log: Log::open(path)?,
        })
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The log's header, as written.
    pub fn header(&self) -> &[String] {
        self.log.layout().header()
    }

    /// Parameter columns, in log order.
    pub fn params(&self) -> &[String] {
        self.log.layout().params()
    }

    /// Every whole row, in file order, one at a time.
    pub fn rows(&self) -> Result<Rows<'_>, FolderError> {
        Ok(self.log.rows()?)
    }

    /// Rows by their byte offset (see [`Rows::next_located`]).
    pub fn at(&self) -> Result<crate::runlog::At<'_>, FolderError> {
        Ok(self.log.at()?)
    }

    /// Whether the log's last line was not a whole row when it was opened
    /// (a run still writing, or one killed mid-row): it is left out.
    pub fn torn_tail(&self) -> bool {
        self.log.torn_tail()
    }

    /// Whether the log has a column.
    pub fn has(&self, column: &str) -> bool {
        self.log.layout().has(column)
    }

    /// A row's cell by column name, the fixed column first (`status`,
    /// `text`…), else the parameter; empty when the log lacks the column.
    pub fn get<'r>(&self, row: &'r Row, column: &str) -> &'r str {
        self.log.layout().get(row, column)
    }

    /// A parameter's cell (by the column among the parameters, even when a
    /// fixed column has the same name), else the fixed column's; empty
    /// when the log lacks it.
    pub fn param<'r>(&self, row: &'r Row, name: &str) -> &'r str {
        self.log.layout().param(row, name)
    }

    /// A row's output files (`images`, `;`-separated), relative to the folder.
    pub fn files<'r>(&self, row: &'r Row) -> impl Iterator<Item = &'r str> {
        self.log.layout().files(row)
    }

    /// The newest row of each job (the one that counts), ordered by group,
    /// index within the group and job id, streamed ([`Log::newest`]).
    pub fn newest(&self) -> Result<Newest<'_>, FolderError> {
        Ok(self.log.newest()?)
    }

    /// A file the log names (`rel`, relative to the folder), opened through
    /// [`open_under`]: never outside the folder, never through a link.
    pub fn file(&self, rel: &str) -> Result<Opened, Refusal> {
        open_under(&self.root, Path::new(rel))
    }

    /// The text (caption) of a row: the contents of the `.txt` files it
    /// lists, else the `text` column, else `None`. The files come first:
    /// the column is a one-line preview, clipped, with newlines folded.
    pub fn text(&self, row: &Row) -> Option<String> {
        let parts: Vec<String> = self
            .files(row)
            .filter(|f| extension(f) == "txt")
            .filter_map(|f| String::from_utf8(self.file(f).ok()?.read_all().ok()?).ok())
            .collect();
        if !parts.is_empty() {
            return Some(parts.join("\n"));
        }
        let cell = self.get(row, "text");
        (!cell.is_empty()).then(|| cell.to_string())
    }

    /// `run.json`, or an empty object when absent or unreadable.
    pub fn info(&self) -> serde_json::Map<String, Value> {
        self.file("run.json")
            .ok()
            .and_then(|mut f| f.read_all().ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// `run.json`'s `manifest_sha256`: the manifest the run came from, when
    /// recorded (folders of older versions lack it).
    pub fn manifest_sha256(&self) -> Option<String> {
        self.info()
            .get("manifest_sha256")
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    /// Parses `--where NAME=VALUE` filters against the log's columns.
    pub fn filter(&self, wheres: &[String]) -> Result<Filter, FolderError> {
        let mut terms: Vec<(String, Vec<String>)> = Vec::new();
        for w in wheres {
            let (name, value) = w
                .split_once('=')
                .ok_or_else(|| FolderError::BadWhere(w.clone()))?;
            let name = name.trim();
            if !self.has(name) {
                let hint = crate::text::nearest(name, self.header().iter().map(String::as_str));
                return Err(FolderError::UnknownColumn {
                    name: name.to_string(),
                    log: self.root.join(LOG).display().to_string(),
                    hint,
                });
            }
            match terms.iter_mut().find(|(n, _)| n == name) {
                Some((_, values)) => values.push(value.to_string()),
                None => terms.push((name.to_string(), vec![value.to_string()])),
            }
        }
        Ok(Filter { terms })
    }

    /// An empty [`ColumnTypes`] for the log's parameters (and `seed`).
    pub fn column_types(&self) -> ColumnTypes {
        let names: Vec<String> = self
            .params()
            .iter()
            .cloned()
            .chain(["seed".to_string()])
            .collect();
        ColumnTypes {
            seen: vec![Seen::default(); names.len()],
            names,
        }
    }
}

/// The type of every parameter column (and `seed`), learnt row by row: a
/// column whose every non-empty cell is an integer is integers, likewise
/// numbers and booleans; otherwise text. One type per column, so
/// Arrow-based readers (Hugging Face `datasets`) get one schema.
#[derive(Debug, Clone)]
pub struct ColumnTypes {
    names: Vec<String>,
    seen: Vec<Seen>,
}

/// What a column's cells were so far.
#[derive(Debug, Clone, Copy)]
struct Seen {
    any: bool,
    integer: bool,
    number: bool,
    boolean: bool,
}

impl Default for Seen {
    fn default() -> Seen {
        Seen {
            any: false,
            integer: true,
            number: true,
            boolean: true,
        }
    }
}

impl ColumnTypes {
    /// Learns a row's cells.
    pub fn add(&mut self, folder: &RunFolder, row: &Row) {
        for (name, seen) in self.names.iter().zip(&mut self.seen) {
            let c = folder.param(row, name);
            if c.is_empty() {
                continue;
            }
            seen.any = true;
            // An integer beyond i64 (a full-range u64 seed) would lose
            // digits as a float: such a column stays text, exact.
            let int = c.parse::<i64>().is_ok();
            let big = !int && c.parse::<i128>().is_ok();
            seen.integer &= int;
            seen.number &= !big && c.parse::<f64>().is_ok_and(f64::is_finite);
            seen.boolean &= c == "true" || c == "false";
        }
    }

    /// The types learnt, by column name.
    pub fn finish(&self) -> HashMap<String, ColumnType> {
        self.names
            .iter()
            .zip(&self.seen)
            .map(|(name, s)| {
                let t = if !s.any {
                    ColumnType::Text
                } else if s.integer {
                    ColumnType::Integer
                } else if s.number {
                    ColumnType::Number
                } else if s.boolean {
                    ColumnType::Boolean
                } else {
                    ColumnType::Text
                };
                (name.clone(), t)
            })
            .collect()
    }
}

/// How a column's cells become JSON values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// Every cell fits an i64.
    Integer,
    /// Every cell is a number.
    Number,
    /// Every cell is `true` or `false`.
    Boolean,
    /// Anything else: the cell's text.
    Text,
}

impl ColumnType {
    /// A cell as a JSON value of this type; an empty cell (unset) is
    /// `null`, a string set empty (`""`) is `""` ([`crate::runlog::cell`]).
    pub fn value(self, cell: &str) -> Value {
        if cell.is_empty() {
            return Value::Null;
        }
        match self {
            ColumnType::Integer => cell.parse::<i64>().map(Value::from).ok(),
            ColumnType::Number => cell.parse::<f64>().ok().map(Value::from),
            ColumnType::Boolean => Some(Value::Bool(cell == "true")),
            ColumnType::Text => match crate::runlog::value(cell) {
                Some(text @ Value::String(_)) => Some(text),
                _ => None,
            },
        }
        .unwrap_or_else(|| Value::String(cell.to_string()))
    }
}

/// `--where` terms: a row passes when, for every named column, its cell
/// equals one of the values given for that name (numbers compare as
/// numbers, so `cfg=7` matches `7.0`).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    terms: Vec<(String, Vec<String>)>,
}

impl Filter {
    /// Whether the row passes.
    pub fn matches(&self, folder: &RunFolder, row: &Row) -> bool {
        self.terms.iter().all(|(name, values)| {
            let cell = folder.param(row, name);
            values.iter().any(|v| same_value(cell, v))
        })
    }
}

fn same_value(cell: &str, wanted: &str) -> bool {
    if cell == wanted {
        return true;
    }
    match (cell.parse::<f64>(), wanted.parse::<f64>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Where a row's prompt as sent may be kept, in the order to try: its
/// pack's `prompts/<pack_id>.json` (one per pack), then its own
/// `prompts/<job_id>.json` (unpacked rows, and packed rows of folders
/// written before a pack kept one prompt).
pub fn prompt_files(job_id: &str, pack_id: &str) -> impl Iterator<Item = String> {
    let pack = (!pack_id.is_empty()).then(|| format!("prompts/{pack_id}.json"));
    pack.into_iter()
        .chain(std::iter::once(format!("prompts/{job_id}.json")))
}

/// The lowercase extension of a path in the log (`png`, `txt`…).
pub fn extension(path: &str) -> String {
    Path::new(path)
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
}

/// A path made absolute with its longest existing part resolved by the
/// system (symlinks, then each `..` from where the link leads, as an open
/// would) and the rest normalised, so two spellings of one folder compare
/// equal even before the folder exists. (Normalising `link/..` first would
/// name the link's parent, not the folder the system reaches.)
pub fn canonical(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    let resolved = loop {
        if let Ok(real) = fs::canonicalize(existing) {
            break real;
        }
        match (existing.parent(), existing.components().next_back()) {
            (Some(parent), Some(last)) => {
                rest.push(last.as_os_str().to_os_string());
                existing = parent;
            }
            _ => break existing.to_path_buf(),
        }
    };
    let mut out = resolved;
    out.extend(rest.iter().rev());
    crate::paths::normalize(&out)
}

/// Whether a `comfy-batch run` holds the folder's log (it locks the file
/// beside it while it writes). Only a regular file reached through no link
/// is opened: a FIFO there would block the open forever, and a run never
/// makes anything else.
pub fn log_in_use(root: &Path) -> bool {
    let lock = crate::runlog::lock_path(&root.join(LOG));
    lock.file_name()
        .and_then(|name| open_under(root, Path::new(name)).ok())
        .is_some_and(|f| f.file.try_lock_shared().is_err())
}

/// Whether `inner` is `outer` or lies inside it (both canonical).
pub fn is_within(inner: &Path, outer: &Path) -> bool {
    inner.starts_with(outer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(f: &RunFolder) -> Vec<Row> {
        f.rows().unwrap().map(Result::unwrap).collect()
    }

    fn newest(f: &RunFolder) -> Vec<Row> {
        f.newest().unwrap().map(Result::unwrap).collect()
    }

    fn types(f: &RunFolder, rows: &[Row]) -> HashMap<String, ColumnType> {
        let mut t = f.column_types();
        for r in rows {
            t.add(f, r);
        }
        t.finish()
    }

    fn folder(csv: &str) -> (tempfile::TempDir, RunFolder) {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(LOG), csv).unwrap();
        let f = RunFolder::open(dir.path()).unwrap();
        (dir, f)
    }

    const HEAD: &str = "job_id,job,workflow,workflow_sha256,seed,prompt,cfg,status,server,prompt_id,queued_at,started_at,finished_at,queue_s,run_s,images,error\n";

    #[test]
    fn newest_row_counts_and_order_is_by_label() {
        let csv = format!(
            "{HEAD}b,g#10,w,s,2,x,5,failed,,,,,,,,,boom\na,g#2,w,s,1,y,6.5,ok,,,,,,,,images/a_9_0.png,\nb,g#10,w,s,2,x,5,ok,,,,,,,,images/b_9_0.png,\n"
        );
        let (_d, f) = folder(&csv);
        assert_eq!(f.params(), ["prompt", "cfg"]);
        let newest = newest(&f);
        let ids: Vec<_> = newest.iter().map(|r| f.get(r, "job_id")).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(f.get(&newest[1], "status"), "ok");
        let types = types(&f, &newest);
        assert_eq!(types["cfg"], ColumnType::Number);
        assert_eq!(types["seed"], ColumnType::Integer);
        assert_eq!(types["prompt"], ColumnType::Text);
    }

    #[test]
    fn a_row_being_written_is_left_out() {
        let csv = format!("{HEAD}a,g#1,w,s,1,y,6,ok,,,,,,,,images/a.png,\nb,g#2,w,s,2,\"half");
        let (_d, f) = folder(&csv);
        assert_eq!(rows(&f).len(), 1);
        assert!(f.torn_tail());
    }

    #[test]
    fn a_text_column_is_not_a_parameter() {
        let csv = "job_id,job,workflow,workflow_sha256,seed,prompt,status,server,prompt_id,queued_at,started_at,finished_at,queue_s,run_s,images,text,error\na,g#1,w,s,1,y,ok,,,,,,,,,a caption,\n";
        let (_d, f) = folder(csv);
        assert_eq!(f.params(), ["prompt"]);
        assert_eq!(f.text(&rows(&f)[0]).as_deref(), Some("a caption"));
    }

    #[test]
    fn the_text_is_the_whole_txt_file_not_the_clipped_column() {
        let csv = "job_id,job,workflow,workflow_sha256,seed,prompt,status,server,prompt_id,queued_at,started_at,finished_at,queue_s,run_s,images,error,text\na,g#1,w,s,1,y,ok,,,,,,,,images/a_13_0.txt,,line one line two clipped…\n";
        let (d, f) = folder(csv);
        fs::create_dir(d.path().join("images")).unwrap();
        let whole = format!("line one\nline two {}", "word ".repeat(100));
        fs::write(d.path().join("images/a_13_0.txt"), &whole).unwrap();
        assert_eq!(f.text(&rows(&f)[0]), Some(whole));
        fs::remove_file(d.path().join("images/a_13_0.txt")).unwrap();
        assert_eq!(
            f.text(&rows(&f)[0]).as_deref(),
            Some("line one line two clipped…"),
            "the column when the file is gone"
        );
    }

    #[test]
    fn parameters_named_like_fixed_columns_keep_their_own_cells() {
        // A manifest alias may be called `text` or `status`: its column sits
        // among the parameters, the fixed ones after them.
        let csv = "job_id,job,workflow,workflow_sha256,seed,text,status,status,server,prompt_id,queued_at,started_at,finished_at,queue_s,run_s,images,error,text\na,g#1,w,s,1,a cat,7,ok,,,,,,,,,,a caption\nb,g#2,w,s,1,a dog,5,failed,,,,,,,,,boom,\n";
        let (_d, f) = folder(csv);
        assert_eq!(f.params(), ["text", "status"]);
        let rows = rows(&f);
        assert_eq!(f.param(&rows[0], "text"), "a cat");
        assert_eq!(f.param(&rows[0], "status"), "7");
        assert_eq!(f.get(&rows[0], "status"), "ok");
        assert_eq!(f.text(&rows[0]).as_deref(), Some("a caption"));
        assert_eq!(f.text(&rows[1]), None);
        assert_eq!(newest(&f).len(), 2);
        let types = types(&f, &newest(&f));
        assert_eq!(types["status"], ColumnType::Integer);
        assert_eq!(types["text"], ColumnType::Text);
        // `--where` names the parameter.
        let filter = f.filter(&["status=5".into()]).unwrap();
        let kept: Vec<_> = rows.iter().filter(|r| filter.matches(&f, r)).collect();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].cells[0], "b");
    }

    #[test]
    fn where_filters_by_name_with_numbers_compared_as_numbers() {
        let csv = format!("{HEAD}a,g#1,w,s,1,y,7.0,ok,,,,,,,,,\nb,g#2,w,s,2,y,5,ok,,,,,,,,,\n");
        let (_d, f) = folder(&csv);
        let filter = f.filter(&["cfg=7".into()]).unwrap();
        let all = rows(&f);
        let kept: Vec<_> = all.iter().filter(|r| filter.matches(&f, r)).collect();
        assert_eq!(kept.len(), 1);
        let err = f.filter(&["cgf=7".into()]).unwrap_err().to_string();
        assert!(err.contains("did you mean 'cfg'"), "{err}");
        assert!(f.filter(&["cfg".into()]).is_err());
    }

    #[test]
    fn paths_outside_the_folder_are_refused() {
        let (d, f) = folder(HEAD);
        fs::write(d.path().join("x.png"), b"x").unwrap();
        assert!(f.file("x.png").is_ok());
        assert!(f.file("../x.png").is_err());
        assert!(f.file("/etc/passwd").is_err());
        assert!(f.file("missing.png").is_err());
    }
}
