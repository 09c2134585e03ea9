//! Reading an output folder as it is on disk: `runs.csv` through the run
//! log's one reader (`crate::runlog`: the newest row of each job, in the
//! log's order of jobs, and its rules for a torn or damaged line), every
//! output file classified by its extension and checked for presence. The
//! folder may still be written to: a missing file is a value, not an error.
//!
//! Two ways to hold it: [`RunFolder`] keeps every job's record (small
//! folders, tests), [`FolderLog`] streams them and keeps nothing per job
//! (`report` and `grid` at any size): its [`FolderLog::dimensions`] stops
//! collecting a dimension's values once there are more than a caller's
//! caps ([`Caps`]), so a seed per job costs nothing per job.

use std::path::{Path, PathBuf};

/// Why a folder cannot be read as a run: the run log's reader's reasons.
pub use crate::runlog::LogError as FolderError;

/// What an output file is, by its extension: decides how the page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// png, jpg, jpeg, webp: decoded for thumbnails and grids.
    Image,
    /// gif, bmp, avif, apng: shown by the browser, not decoded here.
    BrowserImage,
    /// mp4, webm, mov, mkv.
    Video,
    /// flac, mp3, wav, ogg, opus, m4a.
    Audio,
    /// txt, json, md: shown as text.
    Text,
    /// Any other extension on [`crate::sink::KEPT_EXTENSIONS`] (latent,
    /// safetensors, glb…) and `bin`: a download link.
    Other,
    /// Any other extension (`html`, `svg`, `sh`…, from a folder an earlier
    /// version wrote): never linked, as a browser could open it as a page.
    Unlinked,
}

impl OutputKind {
    /// The kind of a file name.
    pub fn of(name: &str) -> OutputKind {
        let ext = name
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase())
            .unwrap_or_default();
        match ext.as_str() {
            "png" | "jpg" | "jpeg" | "webp" => OutputKind::Image,
            "gif" | "bmp" | "avif" | "apng" => OutputKind::BrowserImage,
            "mp4" | "webm" | "mov" | "mkv" | "m4v" => OutputKind::Video,
            "flac" | "mp3" | "wav" | "ogg" | "opus" | "m4a" | "aac" => OutputKind::Audio,
            "txt" | "json" | "md" | "csv" => OutputKind::Text,
            e if e == crate::sink::UNKNOWN_EXTENSION
                || crate::sink::kept_extension(e).is_some() =>
            {
                OutputKind::Other
            }
            _ => OutputKind::Unlinked,
        }
    }

    /// The short name used in the page's data.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputKind::Image | OutputKind::BrowserImage => "image",
            OutputKind::Video => "video",
            OutputKind::Audio => "audio",
            OutputKind::Text => "text",
            OutputKind::Other => "file",
            OutputKind::Unlinked => "unlinked",
        }
    }
}

/// One file a job's row lists.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputFile {
    /// The path as logged, relative to the output folder.
    pub rel: String,
    /// What it is.
    pub kind: OutputKind,
    /// The file on disk; `None` when the logged path would leave the
    /// folder (absolute, `..`) or goes through a symbolic link: such a path
    /// is never opened.
    pub path: Option<PathBuf>,
    /// Whether the file exists now.
    pub present: bool,
}

/// A job as its newest row describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    /// 1-based line of the newest row in `runs.csv`.
    pub line: usize,
    /// `job_id` (any length).
    pub id: String,
    /// `job` (`group#n`).
    pub label: String,
    /// `workflow`.
    pub workflow: String,
    /// `seed` (empty when the workflow has none).
    pub seed: String,
    /// `batch_index`, `pack_size` and `pack_id` (empty outside packs).
    pub pack: [String; 3],
    /// Parameter cells, in [`RunFolder::params`] order.
    pub params: Vec<String>,
    /// `status` as logged (`ok`, `failed`…; empty if absent).
    pub status: String,
    /// `server`.
    pub server: String,
    /// `finished_at`.
    pub finished_at: String,
    /// `queue_s`.
    pub queue_s: String,
    /// `run_s`.
    pub run_s: String,
    /// `error`.
    pub error: String,
    /// `text` (text outputs, when the log has that column).
    pub text: String,
    /// The outputs (`images`).
    pub outputs: Vec<OutputFile>,
    /// How many rows the job has (attempts).
    pub attempts: usize,
}

impl JobRecord {
    /// The group: the `job` label before `#`.
    pub fn group(&self) -> &str {
        group_of(&self.label)
    }

    /// The record of a log's row (`attempts`: how many rows its job has).
    fn of(
        layout: &crate::runlog::Layout,
        root: &Path,
        row: &crate::runlog::Row,
        attempts: u32,
    ) -> JobRecord {
        let get = |column: &str| layout.get(row, column).to_string();
        JobRecord {
            line: row.line,
            id: get("job_id"),
            label: get("job"),
            workflow: get("workflow"),
            seed: get("seed"),
            pack: crate::runlog::PACK.map(get),
            // Unset stays empty, a string set empty shows as `""`.
            params: layout
                .params()
                .iter()
                .map(|p| crate::runlog::shown(layout.param(row, p)).into_owned())
                .collect(),
            status: get("status"),
            server: get("server"),
            finished_at: get("finished_at"),
            queue_s: get("queue_s"),
            run_s: get("run_s"),
            error: get("error"),
            text: get(crate::runlog::TEXT),
            outputs: layout
                .files(row)
                .map(|rel| output_file(root, rel))
                .collect(),
            attempts: attempts as usize,
        }
    }
}

/// The group of a `group#n` label.
fn group_of(label: &str) -> &str {
    label.split('#').next().unwrap_or_default()
}

/// A run's folder: its parameter columns and its jobs (newest row each, in
/// the log's order of jobs: by label).
#[derive(Debug, Clone)]
pub struct RunFolder {
    /// The folder.
    pub root: PathBuf,
    /// Parameter column names: the columns between `seed` and `status`.
    pub params: Vec<String>,
    /// The jobs.
    pub jobs: Vec<JobRecord>,
}

/// The names of the dimensions a job can be placed by, besides the
/// parameter columns: the seed and the job group.
pub const SEED: &str = "seed";
/// The job group (the `job` column before `#`).
pub const GROUP: &str = "group";

/// A named way to read one value from each job (a parameter, the seed or the
/// group), with its distinct values in display order.
#[derive(Debug, Clone, PartialEq)]
pub struct Dimension {
    /// Its name (a column name, `seed` or `group`).
    pub name: String,
    /// Distinct non-empty values: numeric order when all are numbers,
    /// else order of first appearance.
    pub values: Vec<String>,
    /// Whether all values are numbers.
    pub numeric: bool,
    /// `Some(n)`: past the caps it was collected with ([`Caps`]), at least
    /// `n` distinct values, and `values` is left empty.
    pub wide: Option<usize>,
}

impl Dimension {
    /// Whether more than one value occurs.
    pub fn varies(&self) -> bool {
        self.wide.is_some() || self.values.len() > 1
    }
}

/// How many distinct values (and bytes of them) a dimension may collect
/// before it is wide ([`Dimension::wide`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Most distinct values.
    pub values: usize,
    /// Most bytes of distinct values.
    pub bytes: usize,
}

impl Caps {
    /// No cap: every value is kept.
    pub const NONE: Caps = Caps {
        values: usize::MAX,
        bytes: usize::MAX,
    };
}

/// Where a dimension's value is read from a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The parameter column at this index of the parameters.
    Param(usize),
    /// The seed.
    Seed,
    /// The job group.
    Group,
}

impl Source {
    /// The source of the dimension `dim` of a run with parameter columns
    /// `params` (a parameter called `group` wins over the job group).
    pub fn of(params: &[String], dim: &str) -> Option<Source> {
        if let Some(i) = params.iter().position(|p| p == dim) {
            return Some(Source::Param(i));
        }
        match dim {
            SEED => Some(Source::Seed),
            GROUP => Some(Source::Group),
            _ => None,
        }
    }

    /// A job's value.
    pub fn value(self, job: &JobRecord) -> &str {
        match self {
            Source::Param(i) => job.params.get(i).map(String::as_str).unwrap_or_default(),
            Source::Seed => &job.seed,
            Source::Group => job.group(),
        }
    }

    /// A row's value, as [`Source::value`] of its record, without making
    /// the record.
    fn of_row<'r>(
        self,
        layout: &crate::runlog::Layout,
        row: &'r crate::runlog::Row,
    ) -> std::borrow::Cow<'r, str> {
        match self {
            Source::Param(i) => crate::runlog::shown(layout.param(row, &layout.params()[i])),
            Source::Seed => layout.get(row, "seed").into(),
            Source::Group => group_of(layout.get(row, "job")).into(),
        }
    }
}

/// The dimension names of a run with parameter columns `params`: `seed`,
/// the parameters, `group` (unless a parameter has that name).
fn dimension_names(params: &[String]) -> Vec<String> {
    let mut names = vec![SEED.to_string()];
    names.extend(params.iter().cloned());
    if !params.iter().any(|p| p == GROUP) {
        names.push(GROUP.to_string());
    }
    names
}

/// Every dimension's distinct values, collected as jobs come (one job at a
/// time, none kept), up to [`Caps`].
pub struct Dimensions {
    caps: Caps,
    collect: Vec<(Option<Source>, Collect)>,
}

impl Dimensions {
    /// Collects the dimensions of a run with parameter columns `params`.
    pub fn new(params: &[String], caps: Caps) -> Dimensions {
        Dimensions {
            caps,
            collect: dimension_names(params)
                .into_iter()
                .map(|name| (Source::of(params, &name), Collect::new(name)))
                .collect(),
        }
    }

    /// Adds a job's values.
    pub fn add(&mut self, job: &JobRecord) {
        for (source, c) in &mut self.collect {
            c.add(source.map_or("", |s| s.value(job)), self.caps);
        }
    }

    /// Adds the values of a log's row.
    fn add_row(&mut self, layout: &crate::runlog::Layout, row: &crate::runlog::Row) {
        for (source, c) in &mut self.collect {
            if let Some(s) = source {
                c.add(&s.of_row(layout, row), self.caps);
            }
        }
    }

    /// The dimensions, in [`RunFolder::dimensions`] order.
    pub fn finish(self) -> Vec<Dimension> {
        self.collect.into_iter().map(|(_, c)| c.finish()).collect()
    }
}

/// The distinct values of one dimension as jobs come, up to [`Caps`].
struct Collect {
    name: String,
    values: indexmap::IndexSet<String>,
    bytes: usize,
    /// Whether every non-empty value so far is a number.
    numeric: bool,
    wide: Option<usize>,
}

impl Collect {
    fn new(name: String) -> Collect {
        Collect {
            name,
            values: Default::default(),
            bytes: 0,
            numeric: true,
            wide: None,
        }
    }

    fn add(&mut self, v: &str, caps: Caps) {
        if v.is_empty() {
            return;
        }
        if self.wide.is_some() {
            self.numeric = self.numeric && number(v).is_some();
            return;
        }
        if self.values.contains(v) {
            return;
        }
        self.numeric = self.numeric && number(v).is_some();
        self.bytes += v.len();
        self.values.insert(v.to_string());
        if self.values.len() > caps.values || self.bytes > caps.bytes {
            // Past the caps: what is kept is only how many it has seen.
            self.wide = Some(self.values.len());
            self.values = Default::default();
        }
    }

    fn finish(self) -> Dimension {
        let mut values: Vec<String> = self.values.into_iter().collect();
        let numeric = self.numeric && (self.wide.is_some() || !values.is_empty());
        if numeric {
            values.sort_by(|a, b| {
                number(a)
                    .unwrap_or_default()
                    .total_cmp(&number(b).unwrap_or_default())
            });
        }
        Dimension {
            name: self.name,
            values,
            numeric,
            wide: self.wide,
        }
    }
}

impl RunFolder {
    /// Reads the run log of `path` (`DIR` or `DIR/runs.csv`), every job's
    /// record in memory: [`FolderLog`] streams them instead.
    pub fn read(path: &Path) -> Result<RunFolder, FolderError> {
        let log = FolderLog::open(path)?;
        let jobs = log.jobs()?.collect::<Result<Vec<_>, _>>()?;
        Ok(RunFolder {
            root: log.root,
            params: log.params,
            jobs,
        })
    }

    /// Every dimension: `seed`, the parameter columns, `group`.
    pub fn dimensions(&self) -> Vec<Dimension> {
        let mut dims = Dimensions::new(&self.params, Caps::NONE);
        for job in &self.jobs {
            dims.add(job);
        }
        dims.finish()
    }

    /// A job's value on a dimension (`None` for an unknown dimension).
    pub fn value<'a>(&self, job: &'a JobRecord, dim: &str) -> Option<&'a str> {
        Source::of(&self.params, dim).map(|s| s.value(job))
    }

    /// The names [`RunFolder::value`] knows, for "did you mean".
    pub fn dimension_names(&self) -> Vec<String> {
        dimension_names(&self.params)
    }
}

/// A run's folder read as a stream: its log opened, its jobs' records made
/// one at a time as they are read ([`FolderLog::jobs`]), never all held.
#[derive(Debug)]
pub struct FolderLog {
    /// The folder.
    pub root: PathBuf,
    /// Parameter column names: the columns between `seed` and `status`.
    pub params: Vec<String>,
    log: crate::runlog::Log,
    /// The jobs' order, found by the first walk and kept for the next:
    /// a few bytes a job, instead of reading and sorting the log again.
    order: std::cell::OnceCell<crate::runlog::NewestOrder>,
}

impl FolderLog {
    /// Opens the run log of `path` (`DIR` or `DIR/runs.csv`).
    pub fn open(path: &Path) -> Result<FolderLog, FolderError> {
        let log = crate::runlog::Log::open(path)?;
        Ok(FolderLog {
            root: crate::runlog::folder_of(path),
            params: log.layout().params().to_vec(),
            log,
            order: Default::default(),
        })
    }

    /// The newest row of each job, in the log's order of jobs.
    fn newest(&self) -> Result<crate::runlog::Newest<'_>, FolderError> {
        if self.order.get().is_none() {
            let _ = self.order.set(self.log.newest_order()?);
        }
        let order = self.order.get().expect("set above").clone();
        self.log.newest_in(order)
    }

    /// The jobs' records (newest row each, in the log's order of jobs), made
    /// as they are read: the same log each call, as it was when opened.
    pub fn jobs(&self) -> Result<Jobs<'_>, FolderError> {
        Ok(Jobs {
            folder: self,
            newest: self.newest()?,
        })
    }

    /// Every dimension, as [`RunFolder::dimensions`] gives them, but a
    /// dimension past `caps` is wide: its values are not kept. One pass
    /// over the log; what it keeps is the values, not the jobs.
    pub fn dimensions(&self, caps: Caps) -> Result<Vec<Dimension>, FolderError> {
        let mut dims = Dimensions::new(&self.params, caps);
        for row in self.newest()? {
            dims.add_row(self.log.layout(), &row?);
        }
        Ok(dims.finish())
    }

    /// The names a job can be placed by (`seed`, the parameters, `group`).
    pub fn dimension_names(&self) -> Vec<String> {
        dimension_names(&self.params)
    }

    /// A job's value on a dimension (`None` for an unknown dimension).
    pub fn value<'a>(&self, job: &'a JobRecord, dim: &str) -> Option<&'a str> {
        Source::of(&self.params, dim).map(|s| s.value(job))
    }
}

/// The records of a [`FolderLog`]'s jobs ([`FolderLog::jobs`]).
pub struct Jobs<'f> {
    folder: &'f FolderLog,
    newest: crate::runlog::Newest<'f>,
}

impl Jobs<'_> {
    /// How many jobs are left to yield (all of them before the first).
    pub fn len(&self) -> usize {
        self.newest.jobs()
    }

    /// Whether no job is left.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Iterator for Jobs<'_> {
    type Item = Result<JobRecord, FolderError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (row, attempts) = match self.newest.next_counted()? {
            Ok(next) => next,
            Err(e) => return Some(Err(e)),
        };
        let layout = self.folder.log.layout();
        Some(Ok(JobRecord::of(layout, &self.folder.root, &row, attempts)))
    }
}

fn number(v: &str) -> Option<f64> {
    v.trim().parse::<f64>().ok().filter(|f| f.is_finite())
}

/// A logged path resolved inside `dir`; a path that is absolute, climbs
/// out, goes through a symbolic link or names no regular file (a FIFO, a
/// folder) is kept as text but never opened, refused as the folder rules
/// say (checked by [`refusal`]; read through [`crate::folder::open_under`]).
fn output_file(dir: &Path, rel: &str) -> OutputFile {
    let (path, present) = match refusal(dir, rel) {
        Ok(()) => (Some(dir.join(rel)), true),
        Err(why) if why.is_refused() => (None, false),
        Err(_) => (Some(dir.join(rel)), false),
    };
    OutputFile {
        rel: rel.to_string(),
        kind: OutputKind::of(rel),
        path,
        present,
    }
}

impl RunFolder {
    /// The output files the log lists that are never opened (their path
    /// leaves the folder or goes through a symbolic link), each with why.
    pub fn refused(&self) -> Vec<(String, String)> {
        self.jobs
            .iter()
            .flat_map(|j| refused_of(&self.root, j))
            .collect()
    }
}

/// The output files of `job` (of the folder `root`) that are never opened,
/// each with why (see [`RunFolder::refused`]).
pub fn refused_of<'j>(
    root: &'j Path,
    job: &'j JobRecord,
) -> impl Iterator<Item = (String, String)> + 'j {
    job.outputs.iter().filter(|o| o.path.is_none()).map(|o| {
        let why = match refusal(root, &o.rel) {
            Err(why) if why.is_refused() => why.to_string(),
            _ => crate::folder::Refusal::Outside.to_string(),
        };
        (o.rel.clone(), why)
    })
}

/// Why the logged file `rel` under `dir` is not opened, if it is not: as
/// [`crate::folder::open_under`] decides, without opening it.
fn refusal(dir: &Path, rel: &str) -> Result<(), crate::folder::Refusal> {
    use crate::folder::{Refusal, walk_under};
    if rel.contains('\\') {
        return Err(Refusal::Outside);
    }
    match walk_under(dir, Path::new(rel))? {
        meta if meta.is_file() => Ok(()),
        _ => Err(Refusal::NotAFile),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> RunFolder {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("runs.csv"), text).unwrap();
        RunFolder::read(dir.path()).unwrap()
    }

    const HEAD: &str = "job_id,job,workflow,workflow_sha256,seed,prompt,cfg,status,server,prompt_id,queued_at,started_at,finished_at,queue_s,run_s,images,error\n";

    /// The report tells a string set empty (`""`, its own value on the
    /// dimension) from a parameter a job does not set (empty: another
    /// group's, not constrained by it); other strings in their JSON form
    /// (`"a"`) show unquoted.
    #[test]
    fn a_string_set_empty_is_its_own_value_unset_is_none() {
        let f = parse(&format!(
            "{HEAD}a1,g#1,w.json,x,1,\"\"\"\"\"\",5,ok,s,p,,,,,,,\n\
             b2,g#2,w.json,x,1,,5,ok,s,p,,,,,,,\n\
             c3,g#3,w.json,x,1,\"\"\"a\"\"\",5,ok,s,p,,,,,,,\n"
        ));
        let prompts: Vec<&str> = f.jobs.iter().map(|j| j.params[0].as_str()).collect();
        assert_eq!(prompts, [r#""""#, "", "a"]);
        let dim = f
            .dimensions()
            .into_iter()
            .find(|d| d.name == "prompt")
            .unwrap();
        assert_eq!(dim.values, [r#""""#, "a"]);
    }

    #[test]
    fn parameters_named_status_or_text_are_parameters() {
        // Manifest aliases may be called `status` or `text`: their columns
        // sit among the parameters, the fixed ones after them.
        let f = parse(
            "job_id,job,workflow,workflow_sha256,seed,text,status,status,server,prompt_id,queued_at,started_at,finished_at,queue_s,run_s,images,error,text\n\
             a1,g#1,w.json,x,1,a cat,7,ok,s,p,,,,,,images/a1_9_0.png,,a caption\n",
        );
        assert_eq!(f.params, ["text", "status"]);
        assert_eq!(f.jobs[0].params, ["a cat", "7"]);
        assert_eq!(f.jobs[0].status, "ok");
        assert_eq!(f.jobs[0].text, "a caption");
    }

    #[test]
    fn newest_row_per_job_counts_and_order_is_by_label() {
        let f = parse(&format!(
            "{HEAD}a1,g#0,w.json,x,1,fox,5,failed,s,p,,,,,,,boom\n\
             b2,g#1,w.json,x,1,fox,8,ok,s,p,,,,,,images/b2_9_0.png,\n\
             a1,g#0,w.json,x,1,fox,5,ok,s,p,,,,,,images/a1_9_0.png,\n"
        ));
        assert_eq!(f.params, ["prompt", "cfg"]);
        assert_eq!(f.jobs.len(), 2);
        assert_eq!(f.jobs[0].id, "a1");
        assert_eq!(f.jobs[0].status, "ok");
        assert_eq!(f.jobs[0].attempts, 2);
        assert_eq!(f.jobs[0].line, 4);
        assert_eq!(f.jobs[1].outputs[0].kind, OutputKind::Image);
    }

    #[test]
    fn a_torn_last_line_is_ignored() {
        let f = parse(&format!(
            "{HEAD}a1,g#0,w.json,x,1,fox,5,ok,s,p,,,,,,,\nb2,g#1,w.json,x,1,fo"
        ));
        assert_eq!(f.jobs.len(), 1);
        let f = parse(&format!("{HEAD}a1,g#0,w.json,x,1,\"fox\nin"));
        assert_eq!(f.jobs.len(), 0);
    }

    #[test]
    fn escaping_paths_are_never_resolved() {
        for rel in [
            "../x.png",
            "/etc/passwd",
            "images/../../x.png",
            "a\\..\\b.png",
        ] {
            let o = output_file(Path::new("/out"), rel);
            assert!(o.path.is_none(), "{rel}");
            assert!(!o.present);
        }
        assert!(
            output_file(Path::new("/out"), "images/a.png")
                .path
                .is_some()
        );
    }

    #[test]
    fn numeric_dimensions_sort_by_value() {
        let f = parse(&format!(
            "{HEAD}a,g#0,w,x,10,fox,8,ok,,,,,,,,,\nb,g#1,w,x,9,fox,6.5,ok,,,,,,,,,\nc,h#0,w,x,9,dog,5,ok,,,,,,,,,\n"
        ));
        let dims = f.dimensions();
        let cfg = dims.iter().find(|d| d.name == "cfg").unwrap();
        assert_eq!(cfg.values, ["5", "6.5", "8"]);
        let seed = dims.iter().find(|d| d.name == "seed").unwrap();
        assert_eq!(seed.values, ["9", "10"]);
        let prompt = dims.iter().find(|d| d.name == "prompt").unwrap();
        assert_eq!(prompt.values, ["fox", "dog"]);
        let group = dims.iter().find(|d| d.name == "group").unwrap();
        assert_eq!(group.values, ["g", "h"]);
    }

    #[test]
    fn parameters_named_like_log_columns_stay_parameters() {
        // A CLIPTextEncode's `text` input, or a node's `error`/`images`
        // input, swept as a parameter: its column comes before `status`, the
        // log's own columns after it.
        let f = parse(
            "job_id,job,workflow,workflow_sha256,seed,text,images,error,server,status,server,prompt_id,queued_at,started_at,finished_at,queue_s,run_s,images,error,text\n\
             a1,g#0,w,x,1,a fox,p,e,s,failed,http://h,p,,,,,,images/a1_9_0.png,boom,caption\n",
        );
        assert_eq!(f.params, ["text", "images", "error", "server"]);
        let j = &f.jobs[0];
        assert_eq!(j.params, ["a fox", "p", "e", "s"]);
        assert_eq!(j.text, "caption");
        assert_eq!(j.error, "boom");
        assert_eq!(j.server, "http://h");
        assert_eq!(j.outputs.len(), 1);
        assert_eq!(j.outputs[0].rel, "images/a1_9_0.png");
    }

    #[test]
    fn a_file_without_the_run_columns_is_not_a_log() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("runs.csv"), "a,b\n1,2\n").unwrap();
        let e = RunFolder::read(dir.path()).unwrap_err();
        assert!(
            e.to_string().contains("not a comfy-batch output folder"),
            "{e}"
        );
    }

    #[test]
    fn output_kinds_by_extension() {
        assert_eq!(OutputKind::of("a.MP4"), OutputKind::Video);
        assert_eq!(OutputKind::of("a.flac"), OutputKind::Audio);
        assert_eq!(OutputKind::of("a.txt"), OutputKind::Text);
        assert_eq!(OutputKind::of("a.latent"), OutputKind::Other);
        assert_eq!(OutputKind::of("a.webp"), OutputKind::Image);
        assert_eq!(OutputKind::of("images/a_9_0.bin"), OutputKind::Other);
        assert_eq!(OutputKind::of("a.GLB"), OutputKind::Other);
        // What an earlier version kept from the server's name is not linked.
        for name in [
            "a.html",
            "a.HTM",
            "a.svg",
            "a.sh",
            "a.exe",
            "a.bat",
            "a.png.xhtml",
            "a",
        ] {
            assert_eq!(OutputKind::of(name), OutputKind::Unlinked, "{name}");
        }
    }
}
