//! An output folder read back, finished or still being written: `runs.csv`
//! by column name (so columns added later, such as `text`, are tolerated),
//! the newest row of each job, typed parameter values, `--where` filters,
//! and `run.json`. Used by `export`, `merge` and `status`; knows nothing of
//! the network, the scheduler or how rows were written. Every file a log
//! names is opened through [`open_under`] (also by `gallery` and `grid`),
//! never through a symbolic link.

mod inside;
pub mod merge;

pub use inside::{Opened, Refusal, open_under, walk_under};
pub(crate) use inside::{link_or_copy, same_inode};

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// The log's file name inside an output folder.
pub const LOG: &str = "runs.csv";

/// Columns every comfy-batch log has; a file without them is not a log.
const REQUIRED: [&str; 4] = ["job_id", "job", "status", "images"];

/// Columns that are neither parameters nor required (known by name, so a
/// column between `seed` and `status` that is one of these is not taken
/// for a parameter).
const KNOWN: [&str; 14] = [
    "job_id",
    "job",
    "workflow",
    "workflow_sha256",
    "seed",
    "status",
    "server",
    "prompt_id",
    "queued_at",
    "started_at",
    "finished_at",
    "queue_s",
    "run_s",
    "error",
];

/// Why a folder could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    /// The path is not a comfy-batch output folder.
    #[error("{}: not a comfy-batch output folder ({why})", path.display())]
    NotAnOutputFolder {
        /// The folder.
        path: PathBuf,
        /// What is missing.
        why: String,
    },
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

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FolderError + '_ {
    move |source| FolderError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One row of the log: its cells in header order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// 1-based line in the file where the row starts.
    pub line: usize,
    /// The cells, as many as the header has.
    pub cells: Vec<String>,
}

/// An output folder and its log.
#[derive(Debug, Clone)]
pub struct RunFolder {
    root: PathBuf,
    header: Vec<String>,
    /// The fixed columns (and any other outside the parameters).
    index: HashMap<String, usize>,
    /// The parameter columns: a parameter may share a fixed column's name
    /// (an alias called `text` or `status`).
    param_index: HashMap<String, usize>,
    params: Vec<String>,
    rows: Vec<Row>,
    /// Bytes at the end of the log that were not (yet) a whole row: a run
    /// still writing, or one killed mid-row.
    pub torn_tail: bool,
}

impl RunFolder {
    /// Reads `root/runs.csv`. A last row still being written is left out.
    pub fn open(root: &Path) -> Result<RunFolder, FolderError> {
        let not = |why: &str| FolderError::NotAnOutputFolder {
            path: root.to_path_buf(),
            why: why.to_string(),
        };
        if !root.is_dir() {
            return Err(not(if root.exists() {
                "not a folder"
            } else {
                "no such folder"
            }));
        }
        let log = root.join(LOG);
        if !log.is_file() {
            return Err(not("no runs.csv"));
        }
        let text = fs::read(&log).map_err(io(&log))?;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(text.as_slice());
        let mut record = csv::StringRecord::new();
        let mut header: Option<Vec<String>> = None;
        let mut rows = Vec::new();
        let mut torn_tail = false;
        loop {
            let line = reader.position().line() as usize;
            match reader.read_record(&mut record) {
                Ok(true) => {}
                Ok(false) => break,
                Err(_) => {
                    torn_tail = true;
                    break;
                }
            }
            let end = reader.position().byte() as usize;
            let complete = end > 0 && text.get(end - 1) == Some(&b'\n');
            let cells: Vec<String> = record.iter().map(str::to_string).collect();
            match &header {
                None => header = Some(cells),
                Some(h) if complete && h.len() == cells.len() => rows.push(Row { line, cells }),
                Some(_) => {
                    // A row still being appended (or torn by a kill): what
                    // follows it is not trusted either.
                    torn_tail = true;
                    break;
                }
            }
        }
        let header = header.ok_or_else(|| not("runs.csv is empty"))?;
        // Parameters sit between `seed` (or `job`) and the last `status`
        // (a parameter may itself be called `status`).
        let to = header
            .iter()
            .rposition(|h| h == "status")
            .ok_or_else(|| not("runs.csv has no 'status' column"))?;
        let first = |name: &str| header[..to].iter().position(|h| h == name);
        let from = first("seed")
            .or_else(|| first("workflow_sha256"))
            .or_else(|| first("job"))
            .map_or(0, |i| i + 1);
        let region = from..to.max(from);
        let mut index: HashMap<String, usize> = HashMap::new();
        for (i, h) in header.iter().enumerate() {
            if !region.contains(&i) {
                index.entry(h.clone()).or_insert(i);
            }
        }
        let mut param_index = HashMap::new();
        let mut params = Vec::new();
        for i in region {
            let h = &header[i];
            // A known name among the parameters is a parameter only when
            // the fixed column of that name is there too.
            if KNOWN.contains(&h.as_str()) && !index.contains_key(h) {
                index.insert(h.clone(), i);
            } else if !param_index.contains_key(h) {
                param_index.insert(h.clone(), i);
                params.push(h.clone());
            }
        }
        if let Some(missing) = REQUIRED.iter().find(|c| !index.contains_key(**c)) {
            return Err(not(&format!("runs.csv has no '{missing}' column")));
        }
        Ok(RunFolder {
            root: root.to_path_buf(),
            header,
            index,
            param_index,
            params,
            rows,
            torn_tail,
        })
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The log's header, as written.
    pub fn header(&self) -> &[String] {
        &self.header
    }

    /// Parameter columns, in log order.
    pub fn params(&self) -> &[String] {
        &self.params
    }

    /// Every whole row, in file order.
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// Whether the log has a column.
    pub fn has(&self, column: &str) -> bool {
        self.index.contains_key(column) || self.param_index.contains_key(column)
    }

    /// A row's cell by column name, the fixed column first (`status`,
    /// `text`…), else the parameter; empty when the log lacks the column.
    pub fn get<'r>(&self, row: &'r Row, column: &str) -> &'r str {
        cell(row, self.index.get(column).or(self.param_index.get(column)))
    }

    /// A parameter's cell (by the column among the parameters, even when a
    /// fixed column has the same name), else the fixed column's; empty
    /// when the log lacks it.
    pub fn param<'r>(&self, row: &'r Row, name: &str) -> &'r str {
        cell(row, self.param_index.get(name).or(self.index.get(name)))
    }

    /// A row's output files (`images`, `;`-separated), relative to the folder.
    pub fn files<'r>(&self, row: &'r Row) -> impl Iterator<Item = &'r str> {
        self.get(row, "images").split(';').filter(|s| !s.is_empty())
    }

    /// The newest row of each job (the one that counts), ordered by group,
    /// index within the group and job id, so the order does not depend on
    /// which job finished first.
    pub fn newest(&self) -> Vec<&Row> {
        let mut newest: HashMap<&str, &Row> = HashMap::new();
        for row in &self.rows {
            newest.insert(self.get(row, "job_id"), row);
        }
        let mut rows: Vec<&Row> = newest.into_values().collect();
        rows.sort_by(|a, b| {
            label_key(self.get(a, "job"))
                .cmp(&label_key(self.get(b, "job")))
                .then_with(|| self.get(a, "job_id").cmp(self.get(b, "job_id")))
        });
        rows
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
                let hint = self
                    .header
                    .iter()
                    .map(|h| (strsim::osa_distance(h, name), h))
                    .filter(|(d, _)| *d <= 2.max(name.len() / 3))
                    .min_by_key(|(d, _)| *d)
                    .map(|(_, h)| h.clone());
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

    /// The typed value of every parameter column (and `seed`): a column
    /// whose every non-empty cell is an integer is integers, likewise
    /// numbers and booleans; otherwise text. One type per column, so
    /// Arrow-based readers (Hugging Face `datasets`) get one schema.
    pub fn column_types(&self, rows: &[&Row]) -> HashMap<String, ColumnType> {
        let mut types = HashMap::new();
        for name in self.params.iter().map(String::as_str).chain(["seed"]) {
            let cells = rows
                .iter()
                .map(|r| self.param(r, name))
                .filter(|c| !c.is_empty());
            types.insert(name.to_string(), ColumnType::of(cells));
        }
        types
    }
}

fn cell<'r>(row: &'r Row, at: Option<&usize>) -> &'r str {
    at.and_then(|&i| row.cells.get(i))
        .map(String::as_str)
        .unwrap_or("")
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
    fn of<'a>(cells: impl Iterator<Item = &'a str> + Clone) -> ColumnType {
        let mut cells = cells.peekable();
        if cells.peek().is_none() {
            return ColumnType::Text;
        }
        // An integer beyond i64 (a full-range u64 seed) would lose digits
        // as a float: such a column stays text, exact.
        let big = |c: &str| c.parse::<i64>().is_err() && c.parse::<i128>().is_ok();
        if cells.clone().all(|c| c.parse::<i64>().is_ok()) {
            ColumnType::Integer
        } else if cells
            .clone()
            .all(|c| !big(c) && c.parse::<f64>().is_ok_and(f64::is_finite))
        {
            ColumnType::Number
        } else if cells.clone().all(|c| c == "true" || c == "false") {
            ColumnType::Boolean
        } else {
            ColumnType::Text
        }
    }

    /// A cell as a JSON value of this type; an empty cell (unset) is
    /// `null`, a string set empty (`""`) is `""` ([`crate::sink::csv::cell`]).
    pub fn value(self, cell: &str) -> Value {
        if cell.is_empty() {
            return Value::Null;
        }
        match self {
            ColumnType::Integer => cell.parse::<i64>().map(Value::from).ok(),
            ColumnType::Number => cell.parse::<f64>().ok().map(Value::from),
            ColumnType::Boolean => Some(Value::Bool(cell == "true")),
            ColumnType::Text => match crate::sink::csv::value(cell) {
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

/// Sort key of a `group#n` label: group, then n as a number.
fn label_key(label: &str) -> (&str, u64, &str) {
    match label.rsplit_once('#') {
        Some((group, n)) => match n.parse() {
            Ok(n) => (group, n, ""),
            Err(_) => (label, 0, ""),
        },
        None => (label, 0, label),
    }
}

/// The lowercase extension of a path in the log (`png`, `txt`…).
pub fn extension(path: &str) -> String {
    Path::new(path)
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
}

/// A path made absolute and normalised, with its nearest existing ancestor
/// resolved through symlinks, so two spellings of one folder compare equal
/// even before the folder exists.
pub fn canonical(path: &Path) -> PathBuf {
    let normal =
        crate::paths::normalize(&std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()));
    let mut existing = normal.as_path();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => break,
        }
    }
    let mut out = fs::canonicalize(existing).unwrap_or_else(|_| existing.to_path_buf());
    out.extend(rest.iter().rev());
    out
}

/// Whether a `comfy-batch run` holds the folder's log (it locks the file
/// beside it while it writes). Only a regular file reached through no link
/// is opened: a FIFO there would block the open forever, and a run never
/// makes anything else.
pub fn log_in_use(root: &Path) -> bool {
    let lock = crate::sink::csv::lock_path(&root.join(LOG));
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
        let newest = f.newest();
        let ids: Vec<_> = newest.iter().map(|r| f.get(r, "job_id")).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(f.get(newest[1], "status"), "ok");
        let types = f.column_types(&newest);
        assert_eq!(types["cfg"], ColumnType::Number);
        assert_eq!(types["seed"], ColumnType::Integer);
        assert_eq!(types["prompt"], ColumnType::Text);
    }

    #[test]
    fn a_row_being_written_is_left_out() {
        let csv = format!("{HEAD}a,g#1,w,s,1,y,6,ok,,,,,,,,images/a.png,\nb,g#2,w,s,2,\"half");
        let (_d, f) = folder(&csv);
        assert_eq!(f.rows().len(), 1);
        assert!(f.torn_tail);
    }

    #[test]
    fn a_text_column_is_not_a_parameter() {
        let csv = "job_id,job,workflow,workflow_sha256,seed,prompt,status,server,prompt_id,queued_at,started_at,finished_at,queue_s,run_s,images,text,error\na,g#1,w,s,1,y,ok,,,,,,,,,a caption,\n";
        let (_d, f) = folder(csv);
        assert_eq!(f.params(), ["prompt"]);
        assert_eq!(f.text(&f.rows()[0]).as_deref(), Some("a caption"));
    }

    #[test]
    fn the_text_is_the_whole_txt_file_not_the_clipped_column() {
        let csv = "job_id,job,workflow,workflow_sha256,seed,prompt,status,server,prompt_id,queued_at,started_at,finished_at,queue_s,run_s,images,error,text\na,g#1,w,s,1,y,ok,,,,,,,,images/a_13_0.txt,,line one line two clipped…\n";
        let (d, f) = folder(csv);
        fs::create_dir(d.path().join("images")).unwrap();
        let whole = format!("line one\nline two {}", "word ".repeat(100));
        fs::write(d.path().join("images/a_13_0.txt"), &whole).unwrap();
        assert_eq!(f.text(&f.rows()[0]), Some(whole));
        fs::remove_file(d.path().join("images/a_13_0.txt")).unwrap();
        assert_eq!(
            f.text(&f.rows()[0]).as_deref(),
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
        let rows = f.rows();
        assert_eq!(f.param(&rows[0], "text"), "a cat");
        assert_eq!(f.param(&rows[0], "status"), "7");
        assert_eq!(f.get(&rows[0], "status"), "ok");
        assert_eq!(f.text(&rows[0]).as_deref(), Some("a caption"));
        assert_eq!(f.text(&rows[1]), None);
        assert_eq!(f.newest().len(), 2);
        let types = f.column_types(&f.newest());
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
        let kept: Vec<_> = f.rows().iter().filter(|r| filter.matches(&f, r)).collect();
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
