//! The run log's writer: one row per job attempt outcome, appended and
//! flushed as each job ends. Each row reaches the file in one `write`, and a
//! torn last line from a killed run is cut off when the log is reopened
//! (found by the module's one reader), so the log never holds a partial row.
//! The sink's durable rules hold: a row is synced only after the files it
//! names (`crate::sink::OutputDir::make_durable`), rows at most
//! [`SYNC_EVERY`] apart.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::Value;

use super::{LEADING, Log, LogError, Logged, PACK, TEXT, header};
use crate::outcome::{Outcome, Status};
use crate::paths::relative_to;
use crate::plan::Job;
use crate::sink::SinkError;

/// The longest `text` cell; the whole text is in its `.txt` file.
const MAX_TEXT: usize = 300;

/// Why the log could not be opened for appending.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Reading or writing failed.
    #[error(transparent)]
    Io(#[from] SinkError),
    /// The rows already there could not be read (a damaged row: nothing
    /// is cut or written).
    #[error(transparent)]
    Read(#[from] LogError),
    /// The existing log is not a comfy-batch log of this manifest.
    #[error("{}: {why}", path.display())]
    Incompatible {
        /// The log.
        path: PathBuf,
        /// What differs.
        why: String,
    },
}

/// How many pack columns a header has after its leading ones: all of
/// them, or none in a log begun before they existed.
fn pack_len(header: &[String]) -> usize {
    let at = LEADING.len();
    match header.get(at..at + PACK.len()) {
        Some(cols) if cols == PACK => PACK.len(),
        _ => 0,
    }
}

/// A parameter value as a CSV cell: strings raw, other JSON as JSON text.
/// An empty cell is a parameter the job does not set (or sets to `null`),
/// so a string set empty on purpose is written `""`, its JSON form; so is
/// any string that would read back as one (`"a"`, quotes included), which
/// keeps the cell exact for [`value`]. The rule is the log's contract
/// (README "Output folder"): a rewrite of the log keeps it and its tests.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) if s.is_empty() || is_json_string(s) => {
            Value::from(s.as_str()).to_string()
        }
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Whether a cell is a JSON string literal (`""`, `"a"`): the form
/// [`cell`] gives the strings that raw would be misread.
fn is_json_string(cell: &str) -> bool {
    cell.starts_with('"') && serde_json::from_str::<String>(cell).is_ok()
}

/// A parameter cell read back, the inverse of [`cell`]: `None` when the job
/// does not set it (an empty cell); a JSON string literal as its string;
/// numbers and booleans as such; anything else as its text (the plan's
/// type check catches a mismatch).
pub fn value(cell: &str) -> Option<Value> {
    if cell.is_empty() {
        return None;
    }
    Some(match serde_json::from_str::<Value>(cell) {
        Ok(v @ (Value::Number(_) | Value::Bool(_))) => v,
        Ok(Value::String(s)) if cell.starts_with('"') => Value::String(s),
        _ => Value::String(cell.to_string()),
    })
}

/// A parameter cell as people read it (the report, its grids): unset is
/// empty, a string set empty is `""`, other strings are unquoted.
pub fn shown(cell: &str) -> std::borrow::Cow<'_, str> {
    match value(cell) {
        Some(Value::String(s)) if !s.is_empty() && is_json_string(cell) => s.into(),
        _ => cell.into(),
    }
}

fn time_cell(t: Option<SystemTime>) -> String {
    t.map(|t| humantime::format_rfc3339_millis(t).to_string())
        .unwrap_or_default()
}

fn seconds_cell(from: Option<SystemTime>, to: Option<SystemTime>) -> String {
    match (from, to) {
        (Some(a), Some(b)) => {
            let d = b.duration_since(a).unwrap_or_default();
            format!("{:.3}", d.as_secs_f64())
        }
        _ => String::new(),
    }
}

/// The cells of one row (pure: used by the log and its snapshot tests).
/// The workflow's path is written relative to `base`, the log's folder;
/// parameters as the manifest gave them.
pub fn row(job: &Job, base: &Path, outcome: &Outcome, params: &[String]) -> Vec<String> {
    row_with(job, relative_to(base, &job.workflow.path), outcome, params)
}

/// [`row`] with the workflow's cell given.
/// The [`PACK`] cells of a job: `batch_index`, `pack_size` and `pack_id`,
/// empty outside packs.
pub fn pack_cells(pack: Option<&crate::plan::Pack>) -> [String; 3] {
    match pack {
        Some(p) => [
            p.batch_index.to_string(),
            p.size.to_string(),
            p.id.to_string(),
        ],
        None => Default::default(),
    }
}

fn row_with(job: &Job, workflow: String, outcome: &Outcome, params: &[String]) -> Vec<String> {
    let mut cells = vec![
        job.id.to_string(),
        job.label.clone(),
        workflow,
        job.workflow.sha256.clone(),
        job.seed.map(|s| s.to_string()).unwrap_or_default(),
    ];
    cells.extend(pack_cells(job.pack.as_ref()));
    for name in params {
        let value = job.params.iter().find(|(n, _)| n == name).map(|(_, v)| v);
        cells.push(value.map(cell).unwrap_or_default());
    }
    let a = &outcome.attempt;
    cells.extend([
        outcome.status.as_str().to_string(),
        a.server.clone().unwrap_or_default(),
        a.prompt_id
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        time_cell(a.queued_at),
        time_cell(a.started_at),
        time_cell(a.finished_at),
        seconds_cell(a.queued_at, a.started_at),
        seconds_cell(a.started_at, a.finished_at),
        outcome.images.join(";"),
        outcome
            .error
            .as_deref()
            .map(crate::text::one_line)
            .unwrap_or_default(),
        outcome
            .text
            .as_deref()
            .map(|t| crate::text::clip(&crate::text::one_line(t), MAX_TEXT))
            .unwrap_or_default(),
    ]);
    cells
}

/// An open log, appending rows.
pub struct RunLog {
    file: File,
    /// Held while the log is open: the folder's lock ([`lock`]).
    _lock: File,
    /// When the log was last synced to the disk (rows are synced in
    /// batches, at most [`SYNC_EVERY`] apart, and when the log closes).
    synced: std::time::Instant,
    path: PathBuf,
    params: Vec<String>,
    /// Workflow paths are logged relative to the log's folder.
    base: PathBuf,
    /// Those cells by workflow path (each row would otherwise ask the
    /// system for the working folder).
    workflow_cells: HashMap<PathBuf, String>,
    /// The file's length: where a torn row is cut back to.
    len: u64,
    /// Whether the file's header has the `text` column (a log begun by an
    /// older version does not: its rows are written without it).
    with_text: bool,
    /// Likewise for the pack columns ([`PACK`]).
    with_pack: bool,
}

impl RunLog {
    /// Opens `path` for appending (creating it with the header), checks that
    /// an existing log has the same columns, reads the rows already there
    /// into what a resumed run needs ([`Resume`]; `present` says whether a
    /// row's files are all there and whole), and cuts a torn last line. A
    /// damaged row before the last line is refused, naming its line, and
    /// nothing is cut or written.
    pub fn open(
        path: &Path,
        params: &[String],
        present: impl Fn(&[String]) -> bool,
    ) -> Result<(RunLog, Resume), OpenError> {
        let expected = header(params);
        // One writer per folder: a second run would adopt the same prompts
        // and log them twice. Locked before anything is read or cut: the
        // tail of a log being written is not torn.
        let lock = lock(path)?;
        regular_or_absent(path)?;
        // Not in append mode: Windows refuses to cut (set_len) a file
        // opened so, and a torn row must be cut. Rows are written at the end
        // all the same: the file is this run's alone (locked above).
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(SinkError::at(path))?;
        let len = file.metadata().map_err(SinkError::at(path))?.len();
        let mut with_text = true;
        let mut with_pack = true;
        let mut resume = Resume::default();
        let mut whole = 0;
        if len > 0 {
            let log = Log::open_file(path)?;
            let found = log.layout().header();
            with_text = found.last().map(String::as_str) == Some(TEXT);
            with_pack = pack_len(found) > 0;
            let mut older = expected.clone();
            if !with_text {
                older.pop();
            }
            if !with_pack {
                older.drain(LEADING.len()..LEADING.len() + PACK.len());
            }
            if found[..] != older[..] {
                return Err(OpenError::Incompatible {
                    path: path.to_path_buf(),
                    why: format!(
                        "its columns ({}) are not this manifest's ({}); write to another --output",
                        found.join(","),
                        expected.join(",")
                    ),
                });
            }
            let mut rows = log.rows()?;
            for row in rows.by_ref() {
                resume.add(&log.layout().logged(&row?), &present);
            }
            whole = rows.whole_end();
        }
        if whole != len {
            // A run killed mid-write: drop the torn tail (a header cut
            // short included: it is written again).
            file.set_len(whole).map_err(SinkError::at(path))?;
        }
        file.seek(SeekFrom::End(0)).map_err(SinkError::at(path))?;
        if whole == 0 {
            with_text = true;
            with_pack = true;
            let mut w = csv::Writer::from_writer(Vec::new());
            w.write_record(&expected).map_err(|e| csv_io(path, e))?;
            let bytes = w.into_inner().map_err(|e| csv_io(path, e.into_error()))?;
            file.write_all(&bytes).map_err(SinkError::at(path))?;
        }
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let len = file.stream_position().map_err(SinkError::at(path))?;
        Ok((
            RunLog {
                file,
                _lock: lock,
                synced: std::time::Instant::now(),
                path: path.to_path_buf(),
                params: params.to_vec(),
                base,
                workflow_cells: HashMap::new(),
                len,
                with_text,
                with_pack,
            },
            resume,
        ))
    }

    /// Appends one row and flushes it to the file.
    pub fn append(&mut self, job: &Job, outcome: &Outcome) -> Result<(), SinkError> {
        let workflow = match self.workflow_cells.get(&job.workflow.path) {
            Some(cell) => cell.clone(),
            None => {
                let cell = relative_to(&self.base, &job.workflow.path);
                self.workflow_cells
                    .insert(job.workflow.path.clone(), cell.clone());
                cell
            }
        };
        let mut cells = row_with(job, workflow, outcome, &self.params);
        if !self.with_text {
            cells.pop();
        }
        if !self.with_pack {
            cells.drain(LEADING.len()..LEADING.len() + PACK.len());
        }
        // A row is a few hundred bytes: the writer's default 8 KiB buffer,
        // zeroed for every row, cost more than the row.
        let mut w = csv::WriterBuilder::new()
            .buffer_capacity(512)
            .from_writer(Vec::with_capacity(512));
        w.write_record(&cells).map_err(|e| csv_io(&self.path, e))?;
        let bytes = w
            .into_inner()
            .map_err(|e| csv_io(&self.path, e.into_error()))?;
        // A failed write (disk full, file too large) may have left part of
        // the row: it is cut off, so the log stays whole.
        // The file is this run's alone (locked): its length is known.
        if let Err(e) = self.file.write_all(&bytes).and_then(|()| self.file.flush()) {
            let _ = self.file.set_len(self.len);
            let _ = self.file.seek(SeekFrom::Start(self.len));
            return Err(SinkError::at(&self.path)(e));
        }
        self.len += bytes.len() as u64;
        if self.synced.elapsed() >= SYNC_EVERY {
            self.sync()?;
        }
        Ok(())
    }

    /// Whether the log has the pack columns: one begun by an older version
    /// has not, and cannot take packed jobs' rows.
    pub fn has_pack_columns(&self) -> bool {
        self.with_pack
    }

    /// Syncs the rows written so far to the disk. The files a row names
    /// were synced before the row was written, so a row on the disk never
    /// names a file that is not.
    pub fn sync(&mut self) -> Result<(), SinkError> {
        let synced = self.file.sync_data().map_err(SinkError::at(&self.path));
        // Timed from its end: on a disk whose syncs take over a second,
        // a start time would make every later row sync again.
        self.synced = std::time::Instant::now();
        synced
    }
}

impl Drop for RunLog {
    fn drop(&mut self) {
        // Best effort: the run is over either way.
        let _ = self.file.sync_data();
    }
}

/// Locks the folder of the log at `path` for one run, by a file beside it
/// (`runs.csv.lock`, empty, never removed: a run removing it could let two
/// others lock two different files). Not the log itself: Windows locks
/// are mandatory, and every other reader of the log (the live report, the
/// final one, `status`, `export`) would be refused while the run lasts.
fn lock(path: &Path) -> Result<File, OpenError> {
    let lock_path = lock_path(path);
    let file = open_lock(path).map_err(SinkError::at(&lock_path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(OpenError::Incompatible {
            path: path.to_path_buf(),
            why: "another comfy-batch run is using this folder".into(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(SinkError::at(&lock_path)(e).into()),
    }
}

/// Opens (creating it) the file a run locks while it writes the log at
/// `log`, not locking it yet.
pub fn open_lock(log: &Path) -> std::io::Result<File> {
    // Windows locks only through a handle that may read or write.
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(lock_path(log))
}

/// The file a run locks while it writes the log at `log` (see [`RunLog`]):
/// `runs.csv.lock` beside it.
pub fn lock_path(log: &Path) -> PathBuf {
    let mut name = log.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    log.with_file_name(name)
}

/// The longest rows stay unsynced (a power loss within it loses those rows;
/// resume then collects the prompts from the server by id).
const SYNC_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

fn csv_io(path: &Path, e: impl Into<std::io::Error>) -> SinkError {
    SinkError {
        path: path.to_path_buf(),
        source: e.into(),
    }
}

/// Refuses a log that is there but is not a regular file: reading a FIFO
/// would wait for a writer forever.
fn regular_or_absent(path: &Path) -> Result<(), SinkError> {
    match fs::metadata(path) {
        Ok(m) if !m.is_file() => Err(SinkError::at(path)(std::io::Error::other(
            "not a regular file",
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The log's header and rows, through the module's one reader.
    fn read(path: &Path) -> Result<(Vec<String>, Vec<Logged>), LogError> {
        let log = Log::open_file(path)?;
        let rows = log
            .rows()?
            .map(|row| row.map(|row| log.layout().logged(&row)))
            .collect::<Result<_, _>>()?;
        Ok((log.layout().header().to_vec(), rows))
    }

    /// [`RunLog::open`], then the rows it kept.
    fn open(path: &Path, params: &[String]) -> Result<(RunLog, Vec<Logged>), OpenError> {
        let (log, _) = RunLog::open(path, params, |_| true)?;
        Ok((log, read(path)?.1))
    }

    #[test]
    fn the_plan_knows_every_column_of_the_log() {
        // The plan refuses parameters and choices named like these.
        for c in header(&[]) {
            assert!(crate::runlog::is_column(&c), "{c}");
        }
    }

    /// Unset, `null` and a string set empty were all an empty cell: the
    /// empty string (and any string that would read back as another, being
    /// a JSON string literal itself) is written in its JSON form.
    #[test]
    fn a_string_set_empty_is_told_from_unset_and_every_string_reads_back() {
        assert_eq!(cell(&Value::Null), "");
        assert_eq!(value(""), None);
        assert_eq!(cell(&json!("")), r#""""#);
        let texts = [
            "",
            "a fox",
            r#""a""#,
            r#""""#,
            "\"",
            r#"say "hi""#,
            " ",
            "null",
        ];
        for text in texts {
            let logged = cell(&json!(text));
            assert_eq!(value(&logged), Some(json!(text)), "{text:?} as {logged:?}");
        }
        assert_eq!(cell(&json!("a fox")), "a fox", "plain text stays raw");
        assert_eq!(value("7.5"), Some(json!(7.5)));
        assert_eq!(value("true"), Some(json!(true)));
        assert_eq!(shown(""), "");
        assert_eq!(shown(r#""""#), r#""""#);
        assert_eq!(shown(&cell(&json!(r#""a""#))), r#""a""#);
    }

    #[test]
    fn torn_last_line_is_cut_and_header_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.csv");
        let params = vec!["prompt".to_string()];
        drop(open(&path, &params).unwrap());
        let mut text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1);
        text.push_str(
            "abc,fox#1,w.json,00,1,,,,a fox,ok,http://s,p,,,,,,images/abc_9_0.png,,\nzzz,fox#2,w.j",
        );
        fs::write(&path, &text).unwrap();
        let (_, rows) = open(&path, &params).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].images, vec!["images/abc_9_0.png"]);
        assert_eq!(rows[0].status, Some(Status::Ok));
        assert!(fs::read_to_string(&path).unwrap().ends_with(",,\n"));
        let err = open(&path, &["other".to_string()]).err().unwrap();
        assert!(err.to_string().contains("another --output"), "{err}");
    }

    #[test]
    fn a_log_in_use_is_refused_and_its_unfinished_row_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.csv");
        let params = vec!["prompt".to_string()];
        let (mut first, _) = open(&path, &params).unwrap();
        // The running log is halfway through a row.
        first.file.write_all(b"abc,fox#1,w.js").unwrap();
        let err = open(&path, &params).err().unwrap();
        assert!(err.to_string().contains("another comfy-batch run"), "{err}");
        assert!(fs::read_to_string(&path).unwrap().ends_with("w.js"));
        drop(first);
        // Once it is closed, the torn row is cut and the log is this run's.
        let (_, rows) = open(&path, &params).unwrap();
        assert!(rows.is_empty());
        assert!(fs::read_to_string(&path).unwrap().ends_with("text\n"));
    }

    /// Windows locks are mandatory: were the log itself locked, the live
    /// report, the final one and `status` could not read it while a run
    /// holds it (on Unix any lock is advisory: this guards Windows).
    #[test]
    fn a_log_in_use_can_still_be_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.csv");
        let (_held, _) = open(&path, &["prompt".to_string()]).unwrap();
        let (found, rows) = read(&path).unwrap();
        assert_eq!(found, header(&["prompt".to_string()]));
        assert!(rows.is_empty());
        assert!(fs::read(&path).unwrap().ends_with(b"text\n"));
    }

    #[test]
    fn a_torn_multi_line_cell_is_cut_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.csv");
        let params = vec!["prompt".to_string()];
        drop(open(&path, &params).unwrap());
        let mut text = fs::read_to_string(&path).unwrap();
        let good = "abc,fox#1,w.json,00,1,,,,\"line one\nline two\",ok,,,,,,,,,,\n";
        text.push_str(good);
        let kept = text.clone();
        text.push_str("zzz,fox#2,w.json,00,2,,,,\"line one\nline");
        fs::write(&path, &text).unwrap();
        let (_, rows) = open(&path, &params).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].params[0].1, "line one\nline two");
        assert_eq!(fs::read_to_string(&path).unwrap(), kept);
    }

    #[test]
    fn a_packed_row_logs_its_batch_index_pack_size_and_pack_id_after_the_seed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.csv");
        let params = vec!["prompt".to_string()];
        let (mut log, _) = open(&path, &params).unwrap();
        let mut packed = job();
        packed.pack = Some(crate::plan::Pack {
            id: crate::ids::JobId::new("0123456789abcdef"),
            batch_index: 3,
            size: 8,
        });
        log.append(&packed, &captioned("x")).unwrap();
        log.append(&job(), &captioned("y")).unwrap();
        drop(log);
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("job_id,job,workflow,workflow_sha256,seed,batch_index,pack_size,pack_id,prompt,status,"),
            "{}",
            lines[0]
        );
        // The workflow cell (2) is relative to the folder: skipped.
        let cells = |line: &str| -> Vec<String> {
            let mut c: Vec<String> = line.split(',').take(10).map(String::from).collect();
            c.remove(2);
            c
        };
        assert_eq!(
            cells(lines[1]),
            [
                "abc",
                "cap#1",
                "00",
                "1",
                "3",
                "8",
                "0123456789abcdef",
                "",
                "ok"
            ]
        );
        assert_eq!(
            cells(lines[2]),
            ["abc", "cap#1", "00", "1", "", "", "", "", "ok"]
        );
        let (_, rows) = read(&path).unwrap();
        assert_eq!(
            rows[0].pack,
            ["3", "8", "0123456789abcdef"].map(String::from)
        );
        assert_eq!(rows[1].pack, <[String; 3]>::default());
        assert_eq!(rows[0].params, [("prompt".to_string(), String::new())]);
    }

    #[test]
    fn an_older_log_without_the_pack_columns_is_read_and_appended_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.csv");
        let older = "job_id,job,workflow,workflow_sha256,seed,prompt,status,server,prompt_id,queued_at,started_at,finished_at,queue_s,run_s,images,error,text\n\
                     old,fox#1,w.json,00,1,a fox,ok,,p,,,,,,images/old_9_0.png,,\n";
        fs::write(&path, older).unwrap();
        let params = vec!["prompt".to_string()];
        let (mut log, rows) = open(&path, &params).unwrap();
        assert!(!log.has_pack_columns());
        assert_eq!(
            rows[0].params,
            [("prompt".to_string(), "a fox".to_string())]
        );
        assert_eq!(rows[0].pack, <[String; 3]>::default());
        log.append(&job(), &captioned("y")).unwrap();
        drop(log);
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(older));
        let appended: Vec<&str> = text.lines().nth(2).unwrap().split(',').collect();
        assert_eq!(appended[4..7], ["1", "", "ok"], "{appended:?}");
        let (_, rows) = read(&path).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            crate::runlog::Layout::of(header(&params)).unwrap().params(),
            ["prompt"]
        );
    }

    fn job() -> Job {
        Job {
            index: 0,
            id: crate::ids::JobId::new("abc"),
            label: "cap#1".into(),
            workflow: std::sync::Arc::new(crate::plan::Workflow {
                name: "w".into(),
                path: "w.json".into(),
                sha256: "00".into(),
            }),
            seed: Some(1),
            params: Vec::new(),
            prompt: crate::patch::Prompt(Default::default()),
            images: Vec::new(),
            pack: None,
            shard_unit: 0,
        }
    }

    fn captioned(text: &str) -> Outcome {
        Outcome {
            status: Status::Ok,
            images: vec!["images/abc_13_0.txt".into(), "images/abc_4_0.mp4".into()],
            text: Some(text.into()),
            error: None,
            attempt: crate::run::Attempt::default(),
        }
    }

    #[test]
    fn the_text_column_is_last_one_line_and_cut() {
        let cells = row(&job(), Path::new(""), &captioned("a red\nfox"), &[]);
        assert_eq!(header(&[]).last().map(String::as_str), Some("text"));
        assert_eq!(cells.last().map(String::as_str), Some("a red fox"));
        let cells = row(&job(), Path::new(""), &captioned("a\0red\u{1b}fox"), &[]);
        assert_eq!(cells.last().map(String::as_str), Some("a red fox"));
        assert_eq!(
            cells[cells.len() - 3],
            "images/abc_13_0.txt;images/abc_4_0.mp4"
        );
        let long = "word ".repeat(200);
        let cells = row(&job(), Path::new(""), &captioned(&long), &[]);
        assert_eq!(cells.last().unwrap().chars().count(), MAX_TEXT);
    }

    #[test]
    fn a_log_without_the_text_column_is_read_and_kept_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.csv");
        let old = "job_id,job,workflow,workflow_sha256,seed,prompt,status,server,prompt_id,\
                   queued_at,started_at,finished_at,queue_s,run_s,images,error\n\
                   abc,cap#1,w.json,00,1,a fox,ok,http://s,cb-k-abc-1,,,,,,images/abc_9_0.png,\n";
        fs::write(&path, old).unwrap();
        let params = vec!["prompt".to_string()];
        let (mut log, rows) = open(&path, &params).unwrap();
        assert_eq!(rows[0].images, vec!["images/abc_9_0.png"]);
        assert_eq!(rows[0].prompt_id, "cb-k-abc-1");
        assert_eq!(rows[0].text, "");
        log.append(&job(), &captioned("a caption")).unwrap();
        drop(log);
        let (found, rows) = read(&path).unwrap();
        assert_eq!(found.last().map(String::as_str), Some("error"));
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].images.len(), 2);
        // A new log has the column, and a parameter may share a fixed name.
        let path = dir.path().join("new.csv");
        let params = vec!["text".to_string(), "status".to_string()];
        let (mut log, _) = open(&path, &params).unwrap();
        log.append(&job(), &captioned("a caption")).unwrap();
        drop(log);
        let (_, rows) = read(&path).unwrap();
        assert_eq!(rows[0].text, "a caption");
        assert_eq!(rows[0].status, Some(Status::Ok));
        assert_eq!(rows[0].params[0], ("text".to_string(), String::new()));
    }

    #[test]
    fn one_run_per_folder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.csv");
        let (_held, _) = open(&path, &[]).unwrap();
        let err = open(&path, &[]).err().unwrap();
        assert!(err.to_string().contains("another comfy-batch run"), "{err}");
    }
}

/// The attempt number in one of our prompt ids (`cb-<run>-<job_id>-<n>`).
fn attempt_of(prompt_id: &str, job_id: &str) -> Option<u32> {
    let (head, n) = prompt_id.rsplit_once('-')?;
    if !head.ends_with(&format!("-{job_id}")) {
        return None;
    }
    n.parse().ok()
}

/// What earlier runs into the same folder left, for resuming: per job, how
/// many attempts were logged and whether the newest one counts as done. A
/// few bytes a job (its [`job_key`](super::job_key)), never its row.
#[derive(Debug, Default)]
pub struct Resume {
    /// Attempts so far and whether the newest row is done, by job key.
    jobs: HashMap<u128, (u32, bool)>,
}

impl Resume {
    /// Adds a row, newer than every row added before: the newest row of a
    /// job id is the one that counts; it is done when `ok` with every file
    /// it lists still there (`present`).
    pub fn add(&mut self, row: &Logged, present: impl Fn(&[String]) -> bool) {
        let (count, done) = self.jobs.entry(super::job_key(&row.job_id)).or_default();
        // Retries within a run are not logged, so the attempt number in
        // the prompt id can exceed the row count: a new attempt must not
        // reuse (and collect) an old attempt's prompt.
        *count = (*count + 1).max(attempt_of(&row.prompt_id, &row.job_id).unwrap_or(0));
        *done = row.status == Some(Status::Ok) && present(&row.images);
    }

    /// Whether the job is done already.
    pub fn is_done(&self, job_id: &str) -> bool {
        self.jobs
            .get(&super::job_key(job_id))
            .is_some_and(|&(_, done)| done)
    }

    /// The number the job's next attempt gets (1 for a new job).
    pub fn next_attempt(&self, job_id: &str) -> u32 {
        self.jobs
            .get(&super::job_key(job_id))
            .map_or(0, |&(n, _)| n)
            + 1
    }
}

#[cfg(test)]
mod resume_tests {
    use super::*;

    fn logged(job_id: &str, status: Status, prompt_id: &str) -> Logged {
        Logged {
            line: 2,
            job_id: job_id.into(),
            job: "j#1".into(),
            workflow: "w.json".into(),
            workflow_sha256: String::new(),
            seed: String::new(),
            pack: Default::default(),
            params: Vec::new(),
            status: Some(status),
            prompt_id: prompt_id.into(),
            images: Vec::new(),
            error: String::new(),
            text: String::new(),
        }
    }

    #[test]
    fn next_attempt_skips_attempts_retried_within_a_run() {
        let rows = [
            logged("aa", Status::Ok, "cb-12345678-aa-3"),
            logged("bb", Status::Failed, "cb-12345678-bb-1"),
            logged("bb", Status::Interrupted, ""),
            logged("cc", Status::Ok, "someone-else"),
        ];
        let mut resume = Resume::default();
        for row in &rows {
            resume.add(row, |files| files.is_empty());
        }
        assert_eq!(resume.next_attempt("aa"), 4);
        assert_eq!(resume.next_attempt("bb"), 3);
        assert_eq!(resume.next_attempt("cc"), 2);
        assert_eq!(resume.next_attempt("dd"), 1);
        assert!(resume.is_done("aa") && resume.is_done("cc") && !resume.is_done("bb"));
    }
}
