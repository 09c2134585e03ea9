//! `compare A B`: two output folders, job by job. It owns the pairing (by
//! job id, or by the values of `--by` parameters), the classes a pair
//! falls in (identical, same, close, different, missing, failed), the
//! metrics that decide them (PSNR and SSIM for images, text for text,
//! bytes for the rest), the environment differences between the folders,
//! and what is written from them: the summary, CSV or JSON records, JUnit,
//! a job summary and a self-contained HTML page.
//!
//! It reads folders only through `folder` (the log's newest row per job,
//! files opened through [`crate::folder::open_under`]: no link followed,
//! nothing outside the folder) and knows nothing of servers, the
//! scheduler or the command line.

mod environment;
mod html;
mod metrics;
mod pairing;
mod report;

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::folder::{FolderError, RunFolder};

pub use environment::differences;
pub use html::write_html;
pub use report::{Format, junit, records, step_summary, summary};

/// PSNR at or above which differing pixels are `close` (dB): a level or
/// two of difference per pixel scores about 45-50 dB; visible change is
/// below 35.
pub const DEFAULT_THRESHOLD: f64 = 40.0;

/// What `compare` is asked.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// Pair jobs by these parameters (log columns) instead of by job id.
    pub by: Vec<String>,
    /// `close` from this PSNR on (dB).
    pub threshold: f64,
    /// Leave out A's jobs that B lacks instead of calling them missing
    /// (`rerun --verify`: B holds only the jobs rerun).
    pub only_b_jobs: bool,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            by: Vec::new(),
            threshold: DEFAULT_THRESHOLD,
            only_b_jobs: false,
        }
    }
}

/// The class of a pair (or of one file of it), best first: the order is
/// how bad it is, so a job with several files takes the greatest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// Every file byte-identical.
    Identical,
    /// Decoded pixels (or text) equal, bytes not.
    Same,
    /// Pixels differ, PSNR at or above the threshold.
    Close,
    /// Pixels below the threshold, or files that differ otherwise.
    Different,
    /// The job is on one side only.
    Missing,
    /// The job is not ok on one side (or both).
    Failed,
}

impl Class {
    /// Every class, best first.
    pub const ALL: [Class; 6] = [
        Class::Identical,
        Class::Same,
        Class::Close,
        Class::Different,
        Class::Missing,
        Class::Failed,
    ];

    /// Its name as printed and written.
    pub fn name(self) -> &'static str {
        match self {
            Class::Identical => "identical",
            Class::Same => "same",
            Class::Close => "close",
            Class::Different => "different",
            Class::Missing => "missing",
            Class::Failed => "failed",
        }
    }

    /// Whether the pair passes: identical, same or close.
    pub fn passes(self) -> bool {
        self <= Class::Close
    }
}

/// One job's side of a pair: what its newest row says.
#[derive(Debug, Clone, PartialEq)]
pub struct Side {
    /// `job_id`.
    pub id: String,
    /// `job` (the label, `group#n`).
    pub label: String,
    /// `status`.
    pub status: String,
    /// `error`, one line.
    pub error: String,
    /// The output files, relative to the folder, in log order.
    pub files: Vec<String>,
}

/// A parameter whose value differs between the two sides of a pair.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ParamDiff {
    /// The column.
    pub name: String,
    /// A's value (clipped).
    pub a: String,
    /// B's value (clipped).
    pub b: String,
}

/// Two jobs paired, and what comparing them found.
#[derive(Debug, Clone)]
pub struct Pair {
    /// A's job, if A has it.
    pub a: Option<Side>,
    /// B's job, if B has it.
    pub b: Option<Side>,
    /// The class.
    pub class: Class,
    /// The lowest PSNR among the files whose pixels differ (dB); `None`
    /// when no pixels were measured or they were equal (infinite).
    pub psnr: Option<f64>,
    /// The lowest SSIM among the images measured (1 for equal pixels).
    pub ssim: Option<f64>,
    /// Why the class, for people (empty for identical).
    pub reason: String,
    /// The parameters that differ between the two rows.
    pub params: Vec<ParamDiff>,
    /// Position in pairing order (A's label order, then B's leftovers).
    order: usize,
}

impl Pair {
    /// The label of the pair: A's, else B's.
    pub fn label(&self) -> &str {
        self.a
            .as_ref()
            .or(self.b.as_ref())
            .map_or("", |s| s.label.as_str())
    }
}

/// Two folders compared.
#[derive(Debug)]
pub struct Comparison {
    /// A's folder.
    pub a: PathBuf,
    /// B's folder.
    pub b: PathBuf,
    /// What differs between their environments, one line each (empty when
    /// nothing does or neither recorded one).
    pub environment: Vec<String>,
    /// Every pair, worst first (then by PSNR, then in A's order).
    pub pairs: Vec<Pair>,
    /// The threshold used (dB).
    pub threshold: f64,
}

impl Comparison {
    /// How many pairs are of `class`.
    pub fn count(&self, class: Class) -> usize {
        self.pairs.iter().filter(|p| p.class == class).count()
    }

    /// How many pairs do not pass (different, missing or failed).
    pub fn failing(&self) -> usize {
        self.pairs.iter().filter(|p| !p.class.passes()).count()
    }
}

/// Why two folders could not be compared.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// A folder is not an output folder, or its log is damaged.
    #[error("{side}: {source}")]
    Folder {
        /// `A` or `B`.
        side: &'static str,
        /// The cause.
        #[source]
        source: FolderError,
    },
    /// `--by` names a column a log lacks.
    #[error("--by {name}: no such parameter in {side} ({log}){}; it has: {}",
        suggestion.as_ref().map(|s| format!(" (did you mean '{s}'?)")).unwrap_or_default(),
        known.join(", "))]
    UnknownBy {
        /// The name given.
        name: String,
        /// `A` or `B`.
        side: &'static str,
        /// That side's log.
        log: String,
        /// The nearest known name.
        suggestion: Option<String>,
        /// The parameters it has.
        known: Vec<String>,
    },
    /// Two jobs of one side have the same `--by` values.
    #[error(
        "--by {by}: jobs {first} and {second} of {side} have the same values; add parameters to --by (e.g. seed) so each job has its own"
    )]
    Ambiguous {
        /// The names given.
        by: String,
        /// `A` or `B`.
        side: &'static str,
        /// The first job's label and id.
        first: String,
        /// The second's.
        second: String,
    },
    /// Not one job pairs up.
    #[error(
        "A and B share no job id ({a} jobs in A, {b} in B): they come from different manifests or workflows; pair them by parameters with --by NAME,… (e.g. --by prompt,seed)"
    )]
    NothingShared {
        /// Jobs in A.
        a: usize,
        /// Jobs in B.
        b: usize,
    },
    /// No pair shares any `--by` values.
    #[error("--by {by}: no job of A has the values of a job of B ({a} jobs in A, {b} in B)")]
    NothingSharedBy {
        /// The names given.
        by: String,
        /// Jobs in A.
        a: usize,
        /// Jobs in B.
        b: usize,
    },
    /// An output (`-o`, `--junit`) names a file inside a compared folder,
    /// where it would replace or add to that run's own files.
    #[error("{what} {}: inside the compared folder {}; write it outside both folders", path.display(), folder.display())]
    Inside {
        /// Which output.
        what: &'static str,
        /// The file, as given.
        path: PathBuf,
        /// The folder it lies in.
        folder: PathBuf,
    },
    /// An output (`-o`, `--junit`…) could not be written.
    #[error("{what} {}: {source}", path.display())]
    Write {
        /// Which output.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl CompareError {
    /// Whether the fault is the input's (bad arguments, bad folders), as
    /// opposed to writing an output.
    pub fn is_input(&self) -> bool {
        !matches!(self, CompareError::Write { .. })
    }
}

/// Compares the folders `a` and `b` (each `DIR` or `DIR/runs.csv`): pairs
/// their jobs, classifies each pair (files decoded in parallel, one pair's
/// images in memory per thread) and reads their environment records.
pub fn compare(a: &Path, b: &Path, options: &CompareOptions) -> Result<Comparison, CompareError> {
    let open = |side, path: &Path| {
        RunFolder::open(path).map_err(|source| CompareError::Folder { side, source })
    };
    let (fa, fb) = (open("A", a)?, open("B", b)?);
    let paired = pairing::pair(&fa, &fb, &options.by, options.only_b_jobs)?;
    // Files are opened by their folders' paths: a log reader is not shared
    // between threads.
    let (ra, rb) = (fa.root(), fb.root());
    let mut pairs: Vec<Pair> = paired
        .into_par_iter()
        .enumerate()
        .map(|(order, p)| metrics::classify(ra, rb, p, order, options.threshold))
        .collect();
    // Worst first; among equals, the lowest PSNR first (unmeasured last).
    pairs.sort_by(|x, y| {
        y.class
            .cmp(&x.class)
            .then_with(|| {
                let key = |p: &Pair| p.psnr.unwrap_or(f64::INFINITY);
                key(x).total_cmp(&key(y))
            })
            .then(x.order.cmp(&y.order))
    });
    Ok(Comparison {
        a: fa.root().to_path_buf(),
        b: fb.root().to_path_buf(),
        environment: differences(&fa, &fb),
        pairs,
        threshold: options.threshold,
    })
}

/// Writes `bytes` to `path` atomically, as output `what` (the flag);
/// refused inside either folder of `c` however it is spelled (a link, `..`).
fn write_output(
    c: &Comparison,
    what: &'static str,
    path: &Path,
    bytes: &[u8],
) -> Result<(), CompareError> {
    let target = crate::folder::canonical(path);
    if let Some(folder) = [&c.a, &c.b]
        .into_iter()
        .find(|f| target.starts_with(crate::folder::canonical(f)))
    {
        return Err(CompareError::Inside {
            what,
            path: path.to_path_buf(),
            folder: folder.clone(),
        });
    }
    let err = |source| CompareError::Write {
        what,
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    crate::sink::write_atomic_synced(path, bytes).map_err(|e| err(e.source))
}
