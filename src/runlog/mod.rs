//! The run log, `runs.csv`: its columns (the one list), the layout of a
//! header by column name, its one writer (`write`: rows, cells, the
//! folder's lock, and what a resumed run takes from the rows already
//! there) and one tolerant streaming reader that every command reading a
//! folder uses (resume, rerun, status, export, merge, report, grid). Rows come one at a time from
//! a buffered file, never the whole log in memory; "the newest row of each
//! job" keeps a few bytes per job (a packed id, a byte offset, a sort key)
//! and streams the log again for the rows themselves.
//!
//! The rules, decided here once (README "Output folder"):
//! - `DIR` or `DIR/runs.csv` names the same log ([`log_path`]).
//! - The log is read as it was when opened: rows a run appends meanwhile
//!   are left for the next read.
//! - A last line that is not a whole row (no line end, an open quote, too
//!   few or too many cells) is a run killed mid-write or still writing: it
//!   is ignored, and [`Rows::torn_tail`] says so.
//! - A row with the wrong number of cells (or not UTF-8) anywhere before
//!   the last line is damage: reading stops with [`LogError::BadRow`],
//!   naming the line.
//! - An older header without `text` (or without the pack columns) is read
//!   as it is; columns are found by name, parameters sitting between `seed`
//!   (or `pack_id`) and the last `status`.
//!
//! Knows nothing of what a folder's files are or of the network: whether a
//! row's files are there is asked of the caller.

mod write;

pub use write::{
    OpenError, Resume, RunLog, cell, lock_path, open_lock, pack_cells, row, shown, value,
};

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The log's file name inside an output folder.
pub const LOG: &str = "runs.csv";

/// The fixed columns before the parameters.
pub const LEADING: [&str; 5] = ["job_id", "job", "workflow", "workflow_sha256", "seed"];
/// The pack columns, right after `seed` (empty for a job outside a
/// `pack:` group): the image's index in its pack's batch, the pack's size,
/// and the pack id that names its prompt file. Logs written before them
/// lack them; they are read as they are.
pub const PACK: [&str; 3] = ["batch_index", "pack_size", "pack_id"];
/// The fixed columns after the parameters.
pub const TRAILING: [&str; 10] = [
    "status",
    "server",
    "prompt_id",
    "queued_at",
    "started_at",
    "finished_at",
    "queue_s",
    "run_s",
    "images",
    "error",
];
/// The last column: a job's single text output (a caption), one line. Logs
/// written before it existed lack it; they are read as they are.
pub const TEXT: &str = "text";

/// Columns every comfy-batch log has; a file without them is not a log.
const REQUIRED: [&str; 4] = ["job_id", "job", "status", "images"];

/// Whether `name` is one of the log's own columns (no parameter may be
/// named so: it would be logged under a second column of that name).
pub fn is_column(name: &str) -> bool {
    LEADING.contains(&name) || PACK.contains(&name) || TRAILING.contains(&name) || name == TEXT
}

/// The header for a plan's parameter columns.
pub fn header(params: &[String]) -> Vec<String> {
    LEADING
        .iter()
        .chain(&PACK)
        .map(|s| s.to_string())
        .chain(params.iter().cloned())
        .chain(TRAILING.iter().map(|s| s.to_string()))
        .chain([TEXT.to_string()])
        .collect()
}

/// The log a command is pointed at: `DIR/runs.csv` for a folder `DIR`, or
/// the path itself when it names a file called `runs.csv`.
pub fn log_path(path: &Path) -> PathBuf {
    if path.file_name().is_some_and(|n| n == LOG) && !path.is_dir() {
        return path.to_path_buf();
    }
    path.join(LOG)
}

/// The folder of the log a command is pointed at (see [`log_path`]).
pub fn folder_of(path: &Path) -> PathBuf {
    match log_path(path).parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Why a log could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Not a comfy-batch log (missing, empty, or without its columns).
    #[error("{}: not a comfy-batch output folder ({why})", path.display())]
    NotALog {
        /// The folder (or the file named).
        path: PathBuf,
        /// What is missing.
        why: String,
    },
    /// A row before the last line is damaged.
    #[error("{}: line {line}: {why}; the log is damaged (repair or remove that line)", path.display())]
    BadRow {
        /// The log.
        path: PathBuf,
        /// 1-based line where the row starts.
        line: u64,
        /// What is wrong.
        why: String,
    },
    /// Reading failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The log.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// One row of the log: its cells in header order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// 1-based line in the file where the row starts.
    pub line: usize,
    /// The cells, as many as the header has.
    pub cells: Vec<String>,
}

/// A row read as the job it records (the typed columns rerun and resume
/// use; [`Layout::logged`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    /// 1-based line number in the file (for messages).
    pub line: usize,
    /// `job_id`.
    pub job_id: String,
    /// `job`.
    pub job: String,
    /// `workflow`: the workflow file, relative to the log's folder.
    pub workflow: String,
    /// `workflow_sha256`.
    pub workflow_sha256: String,
    /// `seed` (empty when the workflow has no seed input).
    pub seed: String,
    /// `batch_index`, `pack_size` and `pack_id` (empty outside packs and
    /// in logs that lack the columns).
    pub pack: [String; 3],
    /// Parameter columns: (name, cell), in log order.
    pub params: Vec<(String, String)>,
    /// `status`.
    pub status: Option<crate::outcome::Status>,
    /// `prompt_id`.
    pub prompt_id: String,
    /// `images`, split on `;`.
    pub images: Vec<String>,
    /// `error`.
    pub error: String,
    /// `text` (empty in logs that lack the column).
    pub text: String,
}

/// Where each column of a header is, by name.
#[derive(Debug, Clone)]
pub struct Layout {
    header: Vec<String>,
    /// The fixed columns (and any other outside the parameters).
    index: HashMap<String, usize>,
    /// The parameter columns: a parameter may share a fixed column's name
    /// (an alias called `text` or `status`).
    param_index: HashMap<String, usize>,
    params: Vec<String>,
}

impl Layout {
    /// The layout of a header; `Err` says what makes it not a log's.
    pub fn of(header: Vec<String>) -> Result<Layout, String> {
        // Parameters sit between `seed` (or `job`) and the last `status`
        // (a parameter may itself be called `status`).
        let to = header
            .iter()
            .rposition(|h| h == "status")
            .ok_or("runs.csv has no 'status' column")?;
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
            if is_column(h) && h != TEXT && !index.contains_key(h) {
                index.insert(h.clone(), i);
            } else if !param_index.contains_key(h) {
                param_index.insert(h.clone(), i);
                params.push(h.clone());
            }
        }
        if let Some(missing) = REQUIRED.iter().find(|c| !index.contains_key(**c)) {
            return Err(format!("runs.csv has no '{missing}' column"));
        }
        // The pack columns come together or not at all: a header with some
        // of them was edited by hand, and its rows would name half a pack.
        let packs = PACK.iter().filter(|c| index.contains_key(**c)).count();
        if packs != 0 && packs != PACK.len() {
            let missing = PACK.iter().find(|c| !index.contains_key(**c));
            return Err(format!(
                "runs.csv has some pack columns but no '{}'",
                missing.expect("some column is missing")
            ));
        }
        Ok(Layout {
            header,
            index,
            param_index,
            params,
        })
    }

    /// The header, as written.
    pub fn header(&self) -> &[String] {
        &self.header
    }

    /// Parameter columns, in log order.
    pub fn params(&self) -> &[String] {
        &self.params
    }

    /// Whether the log has a column.
    pub fn has(&self, column: &str) -> bool {
        self.index.contains_key(column) || self.param_index.contains_key(column)
    }

    /// A row's cell by column name, the fixed column first (`status`,
    /// `text`…), else the parameter; empty when the log lacks the column.
    pub fn get<'r>(&self, row: &'r Row, column: &str) -> &'r str {
        cell_at(row, self.index.get(column).or(self.param_index.get(column)))
    }

    /// A parameter's cell (by the column among the parameters, even when a
    /// fixed column has the same name), else the fixed column's.
    pub fn param<'r>(&self, row: &'r Row, name: &str) -> &'r str {
        cell_at(row, self.param_index.get(name).or(self.index.get(name)))
    }

    /// A row as the job it records.
    pub fn logged(&self, row: &Row) -> Logged {
        let get = |column: &str| self.get(row, column).to_string();
        Logged {
            line: row.line,
            job_id: get("job_id"),
            job: get("job"),
            workflow: get("workflow"),
            workflow_sha256: get("workflow_sha256"),
            seed: get("seed"),
            pack: PACK.map(get),
            params: self
                .params
                .iter()
                .map(|name| (name.clone(), self.param(row, name).to_string()))
                .collect(),
            status: crate::outcome::Status::parse(self.get(row, "status")),
            prompt_id: get("prompt_id"),
            images: self.files(row).map(str::to_string).collect(),
            error: get("error"),
            text: get(TEXT),
        }
    }

    /// A row's output files (`images`, `;`-separated), relative to the folder.
    pub fn files<'r>(&self, row: &'r Row) -> impl Iterator<Item = &'r str> {
        self.get(row, "images").split(';').filter(|s| !s.is_empty())
    }
}

fn cell_at<'r>(row: &'r Row, at: Option<&usize>) -> &'r str {
    at.and_then(|&i| row.cells.get(i))
        .map(String::as_str)
        .unwrap_or("")
}

/// An opened log: its header read, its rows streamed on demand.
#[derive(Debug, Clone)]
pub struct Log {
    path: PathBuf,
    layout: Layout,
    /// The file's length when opened: rows are read up to it.
    len: u64,
    /// Whether the file ended with a line end when opened.
    ends_whole: bool,
    /// Whether a read found the last line torn.
    torn: std::cell::Cell<bool>,
}

/// The small buffer a row-at-a-time read uses: rows are a few hundred bytes.
const SEEK_BUFFER: usize = 2048;

impl Log {
    /// Opens the log of `path` ([`log_path`]) and reads its header.
    pub fn open(path: &Path) -> Result<Log, LogError> {
        let not = |why: &str| LogError::NotALog {
            path: path.to_path_buf(),
            why: why.to_string(),
        };
        let log = log_path(path);
        let meta = std::fs::metadata(&log);
        if meta.as_ref().is_err_and(|e| {
            use std::io::ErrorKind::{NotADirectory, NotFound};
            matches!(e.kind(), NotFound | NotADirectory)
        }) {
            let dir = folder_of(path);
            return Err(not(if !dir.exists() {
                "no such folder"
            } else if !dir.is_dir() {
                "not a folder"
            } else if log.exists() {
                // A FIFO would block the reader forever.
                "runs.csv is not a regular file"
            } else {
                "no runs.csv"
            }));
        }
        Log::read_header(&log, path)
    }

    /// Opens the log file `log` itself, whatever its name (a run's own log
    /// as it appends to it).
    pub fn open_file(log: &Path) -> Result<Log, LogError> {
        Log::read_header(log, log)
    }

    /// Reads the header of `log`; `named` is what the user named, for
    /// messages.
    fn read_header(log: &Path, named: &Path) -> Result<Log, LogError> {
        let not = |why: &str| LogError::NotALog {
            path: named.to_path_buf(),
            why: why.to_string(),
        };
        let log = log.to_path_buf();
        let io = |source| LogError::Io {
            path: log.clone(),
            source,
        };
        // A log there that cannot be read is an I/O failure, not a folder
        // without one; a FIFO is not even opened (that would wait for a
        // writer), a folder fails at its read.
        if let Ok(meta) = std::fs::metadata(&log)
            && !meta.is_file()
            && !meta.is_dir()
        {
            return Err(io(std::io::Error::other("not a regular file")));
        }
        let mut file = File::open(&log).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let ends_whole = len > 0 && {
            let mut last = [0u8];
            file.seek(SeekFrom::End(-1)).map_err(io)?;
            file.read_exact(&mut last).map_err(io)?;
            file.rewind().map_err(io)?;
            last[0] == b'\n'
        };
        let mut reader = reader(file.take(len), 8 * 1024);
        let mut record = csv::StringRecord::new();
        let header = match reader.read_record(&mut record) {
            Ok(true) => record.iter().map(str::to_string).collect(),
            Ok(false) => return Err(not("runs.csv is empty")),
            Err(e) => return Err(not(&format!("not a CSV log: {e}"))),
        };
        let layout = Layout::of(header).map_err(|why| not(&why))?;
        Ok(Log {
            path: log,
            layout,
            len,
            ends_whole,
            torn: Default::default(),
        })
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the last line was not a whole row (a run still writing, or
    /// one killed mid-row): known once a read reached it.
    pub fn torn_tail(&self) -> bool {
        self.torn.get()
    }

    /// Where its columns are.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The log file opened again, for one more reader of it.
    fn reopen(&self) -> Result<File, LogError> {
        File::open(&self.path).map_err(|source| LogError::Io {
            path: self.path.clone(),
            source,
        })
    }

    /// Every whole row, in file order, one at a time.
    pub fn rows(&self) -> Result<Rows<'_>, LogError> {
        let file = self.reopen()?;
        let mut reader = reader(file.take(self.len), 64 * 1024);
        // Past the header, which was checked when opened.
        let mut skip = csv::ByteRecord::new();
        let _ = reader.read_byte_record(&mut skip);
        let header_end = reader.position().byte();
        // A header cut short (no line end, nothing after it) is no header.
        let whole_end = if header_end < self.len || self.ends_whole {
            header_end
        } else {
            0
        };
        Ok(Rows {
            log: self,
            reader,
            record: csv::ByteRecord::new(),
            torn_tail: false,
            done: false,
            whole_end,
        })
    }

    /// The newest row of each job (the one that counts), ordered by group,
    /// index within the group and job id, so the order does not depend on
    /// which job finished first. One pass over the log keeps a few bytes
    /// per job; the rows are then read again, one at a time.
    pub fn newest(&self) -> Result<Newest<'_>, LogError> {
        self.newest_in(self.newest_order()?)
    }

    /// The first pass of [`Log::newest`] alone, kept to walk the jobs
    /// more than once ([`Log::newest_in`]) without reading the whole log
    /// and sorting again each time (the report's two passes).
    pub fn newest_order(&self) -> Result<NewestOrder, LogError> {
        let (entries, torn_tail) = self.newest_entries(|_| true)?;
        Ok(NewestOrder { entries, torn_tail })
    }

    /// [`Log::newest`] in an order found before by [`Log::newest_order`]
    /// of this log.
    pub fn newest_in(&self, order: NewestOrder) -> Result<Newest<'_>, LogError> {
        Ok(Newest {
            at: self.at()?,
            entries: order.entries.into_iter(),
            torn_tail: order.torn_tail,
        })
    }

    /// Where the newest row of each job is, in [`Log::newest`]'s order,
    /// for the jobs whose newest row `wanted` keeps (`rerun --status`):
    /// one pass over the log, no row read twice; read the rows kept with
    /// [`Log::at`] when they are needed. `wanted` is asked of every row as
    /// it is read; the answer for a job's newest row is the one that counts.
    pub fn newest_places(&self, wanted: impl FnMut(&Row) -> bool) -> Result<Vec<Place>, LogError> {
        let (entries, _) = self.newest_entries(wanted)?;
        Ok(entries
            .into_iter()
            .filter(|e| e.wanted)
            .map(|e| Place {
                offset: e.offset,
                line: e.line,
            })
            .collect())
    }

    /// The first pass of [`Log::newest`]: the newest row of each job,
    /// sorted, each marked with what `wanted` said of it; and whether the
    /// last line was torn.
    fn newest_entries(
        &self,
        mut wanted: impl FnMut(&Row) -> bool,
    ) -> Result<(Vec<Entry>, bool), LogError> {
        let mut rows = self.rows()?;
        let mut at: HashMap<u128, u32> = HashMap::new();
        let mut entries: Vec<Entry> = Vec::new();
        let mut groups: HashMap<String, u32> = HashMap::new();
        while let Some(row) = rows.next_located() {
            let (offset, row) = row?;
            let id = self.layout.get(&row, "job_id");
            let (group, n, plain) = label_key(self.layout.get(&row, "job"));
            let next = groups.len() as u32;
            let group = *groups.entry(group.to_string()).or_insert(next);
            let entry = Entry {
                group,
                n,
                plain,
                id: packed(id),
                offset,
                line: u32::try_from(row.line).unwrap_or(u32::MAX),
                attempts: 1,
                wanted: wanted(&row),
            };
            match at.entry(job_key(id)) {
                std::collections::hash_map::Entry::Occupied(e) => {
                    let old = &mut entries[*e.get() as usize];
                    *old = Entry {
                        attempts: old.attempts.saturating_add(1),
                        ..entry
                    };
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(entries.len() as u32);
                    entries.push(entry);
                }
            }
        }
        let torn_tail = rows.torn_tail;
        drop(at);
        // Groups sort by name: their numbers become ranks.
        let mut names: Vec<(String, u32)> = groups.into_iter().collect();
        names.sort();
        let mut rank = vec![0u32; names.len()];
        for (r, (_, g)) in names.iter().enumerate() {
            rank[*g as usize] = r as u32;
        }
        for e in &mut entries {
            e.group = rank[e.group as usize];
        }
        // The offset breaks ties between ids longer than the packed prefix.
        entries.sort_unstable_by_key(|e| (e.group, e.n, e.plain, e.id, e.offset));
        Ok((entries, torn_tail))
    }

    /// A reader of rows by their byte offset.
    pub fn at(&self) -> Result<At<'_>, LogError> {
        let file = self.reopen()?;
        Ok(At {
            log: self,
            reader: reader(file, SEEK_BUFFER),
            record: csv::ByteRecord::new(),
        })
    }
}

fn reader<R: Read>(from: R, capacity: usize) -> csv::Reader<R> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(capacity)
        .from_reader(from)
}

/// Where each job's newest row is, in [`Log::newest`]'s order: a few
/// bytes a job ([`Log::newest_order`]).
#[derive(Debug, Clone)]
pub struct NewestOrder {
    entries: Vec<Entry>,
    torn_tail: bool,
}

/// One job's newest row, as the first pass of [`Log::newest`] keeps it.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Rank of the label's group.
    group: u32,
    /// The label's number.
    n: u64,
    /// Whether the label has no `#n` (it sorts after `label#0`).
    plain: bool,
    /// The job id's first 16 bytes, in order.
    id: u128,
    /// Byte offset of the row.
    offset: u64,
    /// Its line (for messages).
    line: u32,
    /// How many rows the job has (its attempts logged).
    attempts: u32,
    /// What the caller's filter said of the row ([`Log::newest_places`]).
    wanted: bool,
}

/// Where a row is in the log ([`Log::newest_places`]): what [`At::row`]
/// reads it by, a few bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// Byte offset where the row starts.
    pub offset: u64,
    /// Its 1-based line (for messages).
    pub line: u32,
}

/// The first 16 bytes of an id, big-endian, zero-padded: ordered as the
/// ids are, exact for ids of 16 bytes or fewer (comfy-batch's are 16 hex
/// characters).
fn packed(id: &str) -> u128 {
    let mut bytes = [0u8; 16];
    let n = id.len().min(16);
    bytes[..n].copy_from_slice(&id.as_bytes()[..n]);
    u128::from_be_bytes(bytes)
}

/// A job id as a compact key (sets of done jobs, the newest row's map): the
/// id itself when it fits in 16 bytes (comfy-batch's do), else a 128-bit
/// hash (a hand-edited log's long ids).
pub fn job_key(id: &str) -> u128 {
    if id.len() <= 16 {
        return packed(id);
    }
    crate::hash::hash128(&[id])
}

/// Sort key of a `group#n` label: group, then n as a number; a label
/// without a number after its group's `#0`.
fn label_key(label: &str) -> (&str, u64, bool) {
    match label.rsplit_once('#') {
        Some((group, n)) => match n.parse() {
            Ok(n) => (group, n, false),
            Err(_) => (label, 0, false),
        },
        None => (label, 0, true),
    }
}

/// Reads one row, applying the rules of the module doc; `Ok(None)` at the
/// end (a torn last line included).
fn next_row<R: Read>(
    log: &Log,
    reader: &mut csv::Reader<R>,
    record: &mut csv::ByteRecord,
    torn: &mut bool,
) -> Result<Option<Row>, LogError> {
    let line = reader.position().line() as usize;
    let read = reader.read_byte_record(record);
    let end = reader.position().byte();
    // The last line runs to the end of the file as it was when opened.
    let last = end >= log.len;
    let bad = |why: String| LogError::BadRow {
        path: log.path.clone(),
        line: line as u64,
        why,
    };
    match read {
        Ok(false) => return Ok(None),
        Ok(true) => {}
        Err(_) if last => {
            log.torn.set(true);
            *torn = true;
            return Ok(None);
        }
        Err(e) => return Err(bad(e.to_string())),
    }
    let width = log.layout.header.len();
    let mark = |t: &mut bool| {
        *t = true;
        log.torn.set(true);
    };
    if last && (!log.ends_whole || record.len() != width) {
        mark(torn);
        return Ok(None);
    }
    if record.len() != width {
        return Err(bad(format!("{} cells, expected {width}", record.len())));
    }
    let mut cells = Vec::with_capacity(width);
    for c in record.iter() {
        match std::str::from_utf8(c) {
            Ok(s) => cells.push(s.to_string()),
            Err(_) if last => {
                mark(torn);
                return Ok(None);
            }
            Err(_) => return Err(bad("not UTF-8 text".into())),
        }
    }
    Ok(Some(Row { line, cells }))
}

/// The rows of a log in file order ([`Log::rows`]).
pub struct Rows<'l> {
    log: &'l Log,
    reader: csv::Reader<std::io::Take<File>>,
    record: csv::ByteRecord,
    /// Whether the last line was not a whole row (and was left out): a run
    /// still writing, or one killed mid-row. Known once the rows are read.
    pub torn_tail: bool,
    done: bool,
    /// Where the whole rows read so far end (the header's end at first).
    whole_end: u64,
}

impl Rows<'_> {
    /// The byte offset where the whole rows read so far end: once every
    /// row is read, the length the log is cut back to when its last line
    /// is torn (0 when even the header is).
    pub fn whole_end(&self) -> u64 {
        self.whole_end
    }

    /// The next row and the byte offset where it starts (for [`At::row`]).
    pub fn next_located(&mut self) -> Option<Result<(u64, Row), LogError>> {
        if self.done {
            return None;
        }
        let offset = self.reader.position().byte();
        match next_row(
            self.log,
            &mut self.reader,
            &mut self.record,
            &mut self.torn_tail,
        ) {
            Ok(Some(row)) => {
                self.whole_end = self.reader.position().byte();
                Some(Ok((offset, row)))
            }
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl Iterator for Rows<'_> {
    type Item = Result<Row, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_located().map(|r| r.map(|(_, row)| row))
    }
}

/// Rows read by their byte offset ([`Log::at`]).
pub struct At<'l> {
    log: &'l Log,
    reader: csv::Reader<File>,
    record: csv::ByteRecord,
}

impl At<'_> {
    /// The row at `offset` (from [`Rows::next_located`]), on line `line`.
    pub fn row(&mut self, offset: u64, line: u64) -> Result<Row, LogError> {
        // Rows were read whole once: a failure now is the file changing
        // under the reader.
        let io = |source| LogError::Io {
            path: self.log.path.clone(),
            source,
        };
        if self.reader.position().byte() != offset {
            let mut pos = csv::Position::new();
            pos.set_byte(offset);
            pos.set_line(line);
            self.reader.seek(pos).map_err(|e| io(e.into()))?;
        }
        let mut torn = false;
        match next_row(self.log, &mut self.reader, &mut self.record, &mut torn)? {
            Some(row) => Ok(row),
            None => Err(io(std::io::Error::other("the log changed while read"))),
        }
    }
}

/// The newest row of each job, in label order ([`Log::newest`]).
pub struct Newest<'l> {
    at: At<'l>,
    entries: std::vec::IntoIter<Entry>,
    /// Whether the log's last line was not a whole row (left out).
    pub torn_tail: bool,
}

impl Newest<'_> {
    /// How many jobs are left to yield (all of them before the first).
    pub fn jobs(&self) -> usize {
        self.entries.len()
    }

    /// The next job's newest row and how many rows the job has.
    pub fn next_counted(&mut self) -> Option<Result<(Row, u32), LogError>> {
        let entry = self.entries.next()?;
        Some(
            self.at
                .row(entry.offset, u64::from(entry.line))
                .map(|row| (row, entry.attempts)),
        )
    }
}

impl Iterator for Newest<'_> {
    type Item = Result<Row, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_counted().map(|r| r.map(|(row, _)| row))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(columns: &[&str]) -> Result<Layout, String> {
        Layout::of(columns.iter().map(|c| c.to_string()).collect())
    }

    #[test]
    fn pack_columns_come_together_or_not_at_all() {
        let mut all: Vec<&str> = LEADING.to_vec();
        all.extend(PACK);
        all.push("prompt");
        all.extend(TRAILING);
        let full = layout(&all).unwrap();
        assert_eq!(full.params(), ["prompt"]);
        let mut older: Vec<&str> = LEADING.to_vec();
        older.push("prompt");
        older.extend(TRAILING);
        assert_eq!(layout(&older).unwrap().params(), ["prompt"]);
        let partial: Vec<&str> = all.iter().copied().filter(|c| *c != "pack_size").collect();
        assert_eq!(
            layout(&partial).unwrap_err(),
            "runs.csv has some pack columns but no 'pack_size'"
        );
    }

    /// `newest_places` keeps a job by its newest row alone, in `newest`'s
    /// order, and each place reads back that row.
    #[test]
    fn newest_places_filter_by_the_newest_row_in_one_pass() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG);
        let mut text = header(&[]).join(",");
        text.push('\n');
        // b failed, then ok; a ok, then failed; c failed once.
        for (id, label, status) in [
            ("bbbb", "g#2", "failed"),
            ("aaaa", "g#1", "ok"),
            ("bbbb", "g#2", "ok"),
            ("cccc", "g#3", "failed"),
            ("aaaa", "g#1", "failed"),
        ] {
            text.push_str(&format!("{id},{label},w.json,,,,,,{status},,,,,,,,,,\n"));
        }
        std::fs::write(&path, text).unwrap();
        let log = Log::open(dir.path()).unwrap();
        let status = |row: &Row| log.layout().get(row, "status").to_string();
        let mut asked = 0;
        let failed = log
            .newest_places(|row| {
                asked += 1;
                status(row) == "failed"
            })
            .unwrap();
        assert_eq!(asked, 5, "every row once");
        let mut at = log.at().unwrap();
        let read: Vec<(String, u32)> = failed
            .iter()
            .map(|p| {
                let row = at.row(p.offset, u64::from(p.line)).unwrap();
                assert_eq!(row.line as u32, p.line);
                (log.layout().get(&row, "job_id").to_string(), p.line)
            })
            .collect();
        assert_eq!(read, [("aaaa".to_string(), 6), ("cccc".to_string(), 5)]);
        let all = log.newest_places(|_| true).unwrap();
        let newest: Vec<usize> = log.newest().unwrap().map(|r| r.unwrap().line).collect();
        let lines: Vec<usize> = all.iter().map(|p| p.line as usize).collect();
        assert_eq!(lines, newest);
    }
}
