//! `merge OUT DIR…`: shard folders become one output folder. Every row of
//! every source is kept once (rows already in OUT are not added again, so
//! merging after a shard reran adds only what is new); the files a row
//! lists, `prompts/` and `inputs/` are hard-linked (copied across file
//! systems); `run.json` is carried over with its paths made relative to OUT,
//! and every folder's `environment.json` snapshots are kept.
//! Files land before the log names them, and the log is replaced whole, so
//! an interrupted merge is finished by running it again. The logs are
//! streamed: a check pass keeps a hash per row and a few bytes per row to
//! add, a write pass reads those rows again by offset. A file reached
//! through a symbolic link (itself, or a folder on its way such as a linked
//! `inputs/`) is never linked or copied: a warning names it.

use std::collections::HashSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{
    FolderError, LOG, Opened, Refusal, Row, RunFolder, canonical, is_within, open_under, walk_under,
};

/// Why a merge was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// A source (or OUT) could not be read.
    #[error(transparent)]
    Folder(#[from] FolderError),
    /// The folders cannot be merged as asked.
    #[error("{0}")]
    Refused(String),
    /// Writing failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> MergeError + '_ {
    move |source| MergeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a merge did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergeSummary {
    /// Rows added to OUT's log.
    pub rows_added: usize,
    /// Rows in OUT's log now.
    pub rows_total: usize,
    /// Distinct jobs in OUT now.
    pub jobs: usize,
    /// Files linked or copied (outputs, prompts, inputs).
    pub files: usize,
    /// Things the user should know (a source still being written, a file a
    /// row lists that is missing).
    pub warnings: Vec<String>,
}

/// Where a `run.json` says its run came from, for the compatibility check.
struct Identity {
    dir: PathBuf,
    manifest: Option<String>,
    fresh_key: Option<u64>,
}

impl Identity {
    fn of(folder: &RunFolder) -> Identity {
        let info = folder.info();
        let fresh = info.get("fresh_seeds").and_then(Value::as_bool) == Some(true);
        Identity {
            dir: folder.root().to_path_buf(),
            manifest: folder.manifest_sha256(),
            fresh_key: info
                .get("random_key")
                .and_then(Value::as_u64)
                .filter(|_| fresh),
        }
    }

    /// Why `other` is not from the same plan as `self`, if it is not.
    fn differs(&self, other: &Identity) -> Option<String> {
        let (a, b) = (self.dir.display(), other.dir.display());
        if let (Some(x), Some(y)) = (&self.manifest, &other.manifest)
            && x != y
        {
            return Some(format!("{b} was run from a different manifest than {a}"));
        }
        if let (Some(x), Some(y)) = (self.fresh_key, other.fresh_key)
            && x != y
        {
            return Some(format!(
                "{b} drew its fresh seeds with another key than {a} (a manifest without `seeds:` run separately)"
            ));
        }
        None
    }
}

/// Merges `sources` into `out`; refuses (writing nothing) when a source is
/// OUT itself, lies inside it or holds it, when logs have other columns, or
/// (unless `force`) when the folders come from different manifests or
/// fresh-seed keys.
pub fn merge(out: &Path, sources: &[PathBuf], force: bool) -> Result<MergeSummary, MergeError> {
    let checked = check(out, sources, force)?;
    write(out, checked)
}

/// A merge every check has passed, as the check step hands it to the
/// write step: the folders, and per row to add only where it is.
struct Checked {
    /// The sources, each once, in the order given; never empty.
    folders: Vec<RunFolder>,
    /// OUT, when it already is an output folder.
    existing: Option<RunFolder>,
    /// The one header every log has.
    header: Vec<String>,
    /// The `workflow` column, whose cells are paths to rebase.
    workflow: Option<usize>,
    /// Rows in OUT's log before the merge.
    existing_rows: usize,
    /// The rows to add, in the order they go into the log.
    added: Vec<Added>,
    /// Distinct jobs in OUT once merged.
    jobs: usize,
}

/// The check step: every refusal, then every log read through (a damaged
/// row refuses the merge), before anything is written.
fn check(out: &Path, sources: &[PathBuf], force: bool) -> Result<Checked, MergeError> {
    let folders = open_sources(out, sources)?;
    let existing = open_out(out)?;
    let header = same_plan(&folders, existing.as_ref(), force)?;
    if existing.is_some() && super::log_in_use(out) {
        return Err(MergeError::Refused(format!(
            "{}: a comfy-batch run is writing this folder; merge when it is done",
            out.display()
        )));
    }
    scan(folders, existing, header)
}

/// The sources, each once; refused when one is OUT, lies inside it or
/// holds it.
fn open_sources(out: &Path, sources: &[PathBuf]) -> Result<Vec<RunFolder>, MergeError> {
    let target = canonical(out);
    let mut seen = HashSet::new();
    let mut folders = Vec::new();
    for source in sources {
        let c = canonical(source);
        if c == target {
            return Err(MergeError::Refused(format!(
                "{}: cannot merge a folder into itself",
                source.display()
            )));
        }
        if is_within(&target, &c) || is_within(&c, &target) {
            return Err(MergeError::Refused(format!(
                "{}: OUT {} must not lie inside a source or hold one",
                source.display(),
                out.display()
            )));
        }
        if seen.insert(c) {
            folders.push(RunFolder::open(source)?);
        }
    }
    Ok(folders)
}

/// OUT as an output folder when it is one; refused when it is a file or a
/// folder with other things in it.
fn open_out(out: &Path) -> Result<Option<RunFolder>, MergeError> {
    if out.join(LOG).exists() {
        return Ok(Some(RunFolder::open(out)?));
    }
    if out.exists() {
        if !out.is_dir() {
            return Err(MergeError::Refused(format!(
                "{}: is a file, not a folder",
                out.display()
            )));
        }
        if fs::read_dir(out).map_err(io(out))?.next().is_some() {
            return Err(MergeError::Refused(format!(
                "{}: not empty and not an output folder (no runs.csv)",
                out.display()
            )));
        }
    }
    Ok(None)
}

/// The header all the logs share; refused when one has other columns or
/// (unless `force`) another manifest or fresh-seed key than the first.
fn same_plan(
    folders: &[RunFolder],
    existing: Option<&RunFolder>,
    force: bool,
) -> Result<Vec<String>, MergeError> {
    let Some(first) = folders.first() else {
        return Err(MergeError::Refused("no folder to merge".into()));
    };
    let header = first.header().to_vec();
    let first_id = Identity::of(first);
    for f in folders.iter().chain(existing) {
        if f.header() != header {
            return Err(MergeError::Refused(format!(
                "{}: runs.csv has other columns than {} ({} vs {}); these are not shards of one manifest",
                f.root().display(),
                first.root().display(),
                f.header().join(","),
                header.join(",")
            )));
        }
        if let Some(why) = first_id.differs(&Identity::of(f))
            && !force
        {
            return Err(MergeError::Refused(format!(
                "{why}; pass --force to merge anyway"
            )));
        }
    }
    Ok(header)
}

/// A log row that cannot be read, as a merge error.
fn log_err(e: crate::runlog::LogError) -> MergeError {
    MergeError::from(FolderError::from(e))
}

/// The check pass: every log read through, keeping per row only hashes
/// and where a row to add is.
fn scan(
    folders: Vec<RunFolder>,
    existing: Option<RunFolder>,
    header: Vec<String>,
) -> Result<Checked, MergeError> {
    let workflow = header.iter().position(|h| h == "workflow");
    let identity = |cells: &[String]| {
        // The workflow cell hashes as empty (its spelling depends on the
        // folder); the row's cells are borrowed, not copied, per row.
        let c: Vec<&str> = cells
            .iter()
            .enumerate()
            .map(|(i, cell)| if Some(i) == workflow { "" } else { cell })
            .collect();
        crate::hash::hash128(&c)
    };
    let mut known: HashSet<u128> = HashSet::new();
    let mut jobs: HashSet<u128> = HashSet::new();
    let mut existing_rows = 0;
    if let Some(e) = &existing {
        for row in e.rows()? {
            let row = row.map_err(log_err)?;
            known.insert(identity(&row.cells));
            jobs.insert(crate::runlog::job_key(e.get(&row, "job_id")));
            existing_rows += 1;
        }
    }
    let mut added: Vec<Added> = Vec::new();
    for (rank, f) in folders.iter().enumerate() {
        let mut rows = f.rows()?;
        while let Some(row) = rows.next_located() {
            let (offset, row) = row.map_err(log_err)?;
            if known.insert(identity(&row.cells)) {
                jobs.insert(crate::runlog::job_key(f.get(&row, "job_id")));
                added.push(Added {
                    time: time_key(f, &row),
                    rank: rank as u32,
                    line: row.line as u64,
                    offset,
                });
            }
        }
    }
    // The newest row of a job counts: new rows go in the order they ended.
    added.sort_unstable_by_key(|a| (a.time, a.rank, a.line));
    Ok(Checked {
        folders,
        existing,
        header,
        workflow,
        existing_rows,
        added,
        jobs: jobs.len(),
    })
}

/// The write step: files land before the log names them, and the new log
/// replaces the old one whole at the end.
fn write(out: &Path, checked: Checked) -> Result<MergeSummary, MergeError> {
    let mut summary = MergeSummary::default();
    for f in &checked.folders {
        if f.torn_tail() || super::log_in_use(f.root()) {
            summary.warnings.push(format!(
                "{}: still being written; merging the rows logged so far",
                f.root().display()
            ));
        }
    }
    for dir in [out.to_path_buf(), out.join("images"), out.join("prompts")] {
        fs::create_dir_all(&dir).map_err(io(&dir))?;
    }
    let lock = OutLock::take(out)?;
    let mut log = NewLog::create(&out.join(LOG), &checked.header)?;
    if let Some(e) = &checked.existing {
        for row in e.rows()? {
            log.write(&row.map_err(log_err)?.cells)?;
        }
    }
    add_rows(out, &checked, &mut log, &mut summary)?;
    copy_inputs(out, &checked.folders, &mut summary)?;
    if let Some(first) = checked.folders.first() {
        carry_run_json(out, first)?;
    }
    merge_environments(out, checked.folders.iter(), &mut summary.warnings)?;
    summary.rows_added = checked.added.len();
    summary.rows_total = checked.existing_rows + checked.added.len();
    summary.jobs = checked.jobs;
    log.finish()?;
    drop(lock);
    Ok(summary)
}

/// One merge at a time into OUT; and while it runs, a `run` into OUT
/// cannot take the log (it locks the file beside runs.csv), whose rows the
/// rename at the end would otherwise lose. Let go of when dropped, on
/// every path: a failed merge leaves no `.merge.lock` behind.
struct OutLock {
    path: PathBuf,
    // Options so that `drop` closes both before removing the lock file.
    lock: Option<File>,
    log_lock: Option<File>,
}

impl OutLock {
    /// Takes both locks; refused when another merge or run holds one.
    fn take(out: &Path) -> Result<OutLock, MergeError> {
        let path = out.join(".merge.lock");
        let lock = File::create(&path).map_err(io(&path))?;
        let log_lock_path = crate::runlog::lock_path(&out.join(LOG));
        let log_lock = crate::runlog::open_lock(&out.join(LOG)).map_err(io(&log_lock_path))?;
        if lock.try_lock().is_err() || log_lock.try_lock().is_err() {
            return Err(MergeError::Refused(format!(
                "{}: another merge or run is writing this folder",
                out.display()
            )));
        }
        Ok(OutLock {
            path,
            lock: Some(lock),
            log_lock: Some(log_lock),
        })
    }
}

impl Drop for OutLock {
    /// Lets go of both locks and removes the merge's lock file.
    fn drop(&mut self) {
        drop(self.log_lock.take());
        drop(self.lock.take());
        let _ = fs::remove_file(&self.path);
    }
}

/// The new log, written beside the old one as it goes (the rows already
/// there, then the added ones), replacing it at the end.
struct NewLog {
    path: PathBuf,
    w: csv::Writer<std::io::BufWriter<tempfile::NamedTempFile>>,
}

impl NewLog {
    /// Starts the new log beside `path` with its header.
    fn create(path: &Path, header: &[String]) -> Result<NewLog, MergeError> {
        let tmp = crate::sink::temp_beside(path).map_err(|e| MergeError::Io {
            path: e.path,
            source: e.source,
        })?;
        let mut log = NewLog {
            path: path.to_path_buf(),
            w: csv::Writer::from_writer(std::io::BufWriter::new(tmp)),
        };
        log.write(header)?;
        Ok(log)
    }

    /// Writes one row.
    fn write(&mut self, cells: &[String]) -> Result<(), MergeError> {
        self.w.write_record(cells).map_err(|e| MergeError::Io {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })
    }

    /// Replaces the old log with the new one.
    fn finish(self) -> Result<(), MergeError> {
        let io_log = |e: std::io::Error| MergeError::Io {
            path: self.path.clone(),
            source: e,
        };
        let tmp = self
            .w
            .into_inner()
            .map_err(|e| io_log(e.into_error()))?
            .into_inner()
            .map_err(|e| io_log(e.into_error()))?;
        // The rows reach the disk before the name does.
        tmp.as_file().sync_data().map_err(io_log)?;
        tmp.persist(&self.path).map_err(|e| io_log(e.error))?;
        Ok(())
    }
}

/// Each added row, in order: the files it lists and its prompt placed in
/// OUT, then the row itself written with its workflow path rebased.
fn add_rows(
    out: &Path,
    checked: &Checked,
    log: &mut NewLog,
    summary: &mut MergeSummary,
) -> Result<(), MergeError> {
    let folders = &checked.folders;
    let mut readers = folders
        .iter()
        .map(RunFolder::at)
        .collect::<Result<Vec<_>, _>>()?;
    for a in &checked.added {
        let f = &folders[a.rank as usize];
        let row = readers[a.rank as usize]
            .row(a.offset, a.line)
            .map_err(log_err)?;
        for file in f.files(&row) {
            match f.file(file) {
                Ok(mut from) => {
                    summary.files += place(&mut from, &out.join(file), Replace::IfDiffers)?
                }
                Err(why) => summary.warnings.push(format!(
                    "{}: {file}: listed in runs.csv line {}{}; not copied",
                    f.root().display(),
                    row.line,
                    match why {
                        Refusal::Missing => " but missing".to_string(),
                        why => format!(": {why}"),
                    }
                )),
            }
        }
        // A pack's rows share its one prompt file: placed once.
        let (id, pack) = (f.get(&row, "job_id"), f.get(&row, "pack_id"));
        for prompt in super::prompt_files(id, pack) {
            if let Ok(mut from) = f.file(&prompt) {
                summary.files += place(&mut from, &out.join(&prompt), Replace::IfDiffers)?;
                break;
            }
        }
        let mut cells = row.cells;
        if let Some(i) = checked.workflow {
            cells[i] = rebase(f.root(), out, &cells[i]);
        }
        log.write(&cells)?;
    }
    Ok(())
}

/// Every source's `inputs/` files placed in OUT's (kept when already there).
fn copy_inputs(
    out: &Path,
    folders: &[RunFolder],
    summary: &mut MergeSummary,
) -> Result<(), MergeError> {
    for f in folders {
        // `inputs/` itself a link (to another run's, or anywhere) is not
        // followed: one line for it, not one per file it leads to.
        let entries = match walk_under(f.root(), Path::new("inputs")) {
            Ok(meta) if meta.is_dir() => fs::read_dir(f.root().join("inputs")).ok(),
            Err(why) if why.is_refused() => {
                summary
                    .warnings
                    .push(format!("{}: inputs: {why}; not copied", f.root().display()));
                None
            }
            _ => None,
        };
        for entry in entries.into_iter().flatten().flatten() {
            let name = entry.file_name();
            if name.to_string_lossy().starts_with(".tmp-") {
                continue;
            }
            let rel = Path::new("inputs").join(&name);
            match open_under(f.root(), &rel) {
                Ok(mut from) => {
                    fs::create_dir_all(out.join("inputs")).map_err(io(out))?;
                    let to = out.join(&rel);
                    summary.files += place(&mut from, &to, Replace::Never)?;
                }
                Err(why) if why.is_refused() => summary.warnings.push(format!(
                    "{}: {}: {why}; not copied",
                    f.root().display(),
                    rel.display()
                )),
                Err(_) => {}
            }
        }
    }
    Ok(())
}

/// The first source's `run.json`, its paths made relative to OUT, unless
/// OUT has one.
fn carry_run_json(out: &Path, first: &RunFolder) -> Result<(), MergeError> {
    if out.join("run.json").exists() {
        return Ok(());
    }
    let mut info = first.info();
    if let Some(Value::String(dir)) = info.get("manifest_dir") {
        let rebased = rebase(first.root(), out, dir);
        info.insert("manifest_dir".into(), Value::String(rebased));
    }
    let mut bytes = serde_json::to_vec_pretty(&info).expect("JSON values serialise");
    bytes.push(b'\n');
    crate::sink::write_atomic_synced(&out.join("run.json"), &bytes).map_err(|e| MergeError::Io {
        path: e.path,
        source: e.source,
    })
}

/// A row to add, as the check pass keeps it: a few bytes, not its cells.
struct Added {
    time: [u8; 24],
    rank: u32,
    line: u64,
    offset: u64,
}

/// When a row's attempt ended (else started, else was queued): RFC 3339
/// text sorts in time order. Its first 24 bytes, zero-padded, sort as the
/// text does (comfy-batch writes exactly 24: milliseconds, `Z`).
fn time_key(f: &RunFolder, row: &Row) -> [u8; 24] {
    let text = ["finished_at", "started_at", "queued_at"]
        .iter()
        .map(|c| f.get(row, c))
        .find(|t| !t.is_empty())
        .unwrap_or("");
    let mut key = [0u8; 24];
    let n = text.len().min(24);
    key[..n].copy_from_slice(&text.as_bytes()[..n]);
    key
}

/// A path logged relative to folder `from`, made relative to folder `to`.
fn rebase(from: &Path, to: &Path, cell: &str) -> String {
    if cell.is_empty() || Path::new(cell).is_absolute() {
        return cell.to_string();
    }
    let abs = crate::paths::normalize(&canonical(from).join(cell));
    crate::paths::relative_to(&canonical(to), &abs)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Replace {
    /// Keep what is there (content-addressed names such as `inputs/`).
    Never,
    /// Replace when the bytes differ (a newer attempt's output).
    IfDiffers,
}

/// Links (or copies) the opened file to `to` through a temporary name;
/// returns 1 when a file was placed.
fn place(from: &mut Opened, to: &Path, replace: Replace) -> Result<usize, MergeError> {
    if to.exists() && (replace == Replace::Never || same_content(from, to)) {
        return Ok(0);
    }
    let dir = to.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = dir.join(format!(
        ".tmp-merge-{}",
        to.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let _ = fs::remove_file(&tmp);
    super::link_or_copy(from, &tmp).map_err(io(to))?;
    fs::rename(&tmp, to).map_err(io(to))?;
    Ok(1)
}

/// Whether the file at `b` (in OUT, ours) holds what the opened file does.
fn same_content(a: &mut Opened, b: &Path) -> bool {
    match fs::metadata(b) {
        Ok(y) if a.meta.len() == y.len() => {
            super::same_inode(&a.meta, &y) == Some(true)
                || a.read_all()
                    .ok()
                    .is_some_and(|bytes| fs::read(b).ok() == Some(bytes))
        }
        _ => false,
    }
}

/// Every source's environment snapshots join OUT's (none is dropped, none
/// doubled). A record that cannot be read is named in a warning; OUT's own
/// is then left as it is.
fn merge_environments<'a>(
    out: &Path,
    sources: impl Iterator<Item = &'a RunFolder>,
    warnings: &mut Vec<String>,
) -> Result<(), MergeError> {
    use crate::environment::{Environment, FILE};
    let mut merged = match Environment::read(out) {
        Ok(env) => env,
        Err(e) => {
            warnings.push(format!("{e}; environments not merged"));
            return Ok(());
        }
    };
    let before = merged.clone();
    for f in sources {
        let Ok(mut file) = f.file(FILE) else {
            continue;
        };
        let path = f.root().join(FILE);
        let read = file
            .read_all()
            .map_err(|e| format!("{}: {e}", path.display()));
        match read.and_then(|b| Environment::parse(&b, &path).map_err(|e| e.to_string())) {
            Ok(env) => merged.merge(&env),
            Err(e) => warnings.push(format!("{e}; not merged")),
        }
    }
    if merged != before {
        merged.write(out).map_err(|e| MergeError::Io {
            path: out.join(FILE),
            source: std::io::Error::other(e.to_string()),
        })?;
    }
    Ok(())
}
