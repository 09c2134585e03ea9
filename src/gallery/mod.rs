//! The HTML report of a run: `runs.csv` + the output folder →
//! `report/index.html` (gallery and X/Y grid views, no network),
//! `report/data/` (the run's data, in chunks the page loads as it needs
//! them) and `report/thumbs/`.
//!
//! It streams the folder ([`folder::FolderLog`]): one pass over the log for
//! the dimensions, a second one for the rows, in batches whose thumbnails
//! are made in parallel; what it keeps per job is a few bytes of columns.
//!
//! It reads a folder, finished or still being written, and nothing else:
//! it must not know the network, the scheduler or the manifest. The page is
//! rendered by a template engine with auto-escaping; the run's data goes in
//! as JSON inside `<script>` files and one `<script type="application/json">`
//! element, with `<`, `>` and `&` escaped, and the page's script only ever sets text (never
//! HTML) from it, so a prompt such as `</script><img onerror=…>` stays text.

pub mod folder;
mod page;
pub mod thumbs;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use folder::{Dimension, FolderError, FolderLog, JobRecord, OutputKind, RunFolder};

/// A grid the page opens by default (from the manifest's `grids:`),
/// stored as `report/grids.json` so `comfy-batch report` finds it later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GridView {
    /// Its name.
    pub name: String,
    /// X axis.
    pub x: String,
    /// Y axis.
    pub y: String,
    /// Page axis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<String>,
    /// Fixed values (dimension, value).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub r#where: Vec<(String, String)>,
    /// Only this job group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// How far a run still being written has come (shown with a reload hint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InProgress {
    /// Jobs ended so far in this run.
    pub done: usize,
    /// Jobs this run will attempt.
    pub total: usize,
}

/// What to write.
#[derive(Debug, Clone, Default)]
pub struct ReportOptions {
    /// Set while the run is going on.
    pub in_progress: Option<InProgress>,
    /// Wall-clock time shown in the in-progress banner (`HH:MM:SS`, UTC).
    pub stamp: Option<String>,
}

/// What a report write did.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportSummary {
    /// `report/index.html`.
    pub index: PathBuf,
    /// Jobs on the page.
    pub jobs: usize,
    /// Thumbnails made now.
    pub thumbs_made: usize,
    /// Image files that could not be decoded.
    pub thumbs_failed: usize,
    /// Output files listed but absent.
    pub missing: usize,
    /// Output files listed but never opened nor linked: their path leaves
    /// the folder or goes through a symbolic link.
    pub refused: usize,
    /// Whether `index.html` was (re)written (false: it was up to date).
    pub written: bool,
}

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum GalleryError {
    /// The folder is not a readable run.
    #[error(transparent)]
    Folder(#[from] FolderError),
    /// Writing the page failed.
    #[error("{}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// `report/` or a folder in it is a symbolic link: the report is
    /// never written through one (it would land outside the folder).
    #[error("{}: is a symbolic link; the report is never written through one", path.display())]
    Link {
        /// The link.
        path: PathBuf,
    },
    /// The template failed (a bug).
    #[error("rendering the report: {0}")]
    Render(String),
}

/// The report folder of an output folder.
pub fn report_dir(root: &Path) -> PathBuf {
    root.join("report")
}

/// Refuses a `report/`, `report/thumbs/`, `report/grids/` or
/// `report/data/` that is a link: what the report and its grids write (and
/// the old data folders it prunes) stays in the folder.
pub fn check_report_dir(root: &Path) -> Result<(), GalleryError> {
    for rel in ["report", "report/thumbs", "report/grids", "report/data"] {
        if let Err(crate::folder::Refusal::Link(link)) =
            crate::folder::walk_under(root, Path::new(rel))
        {
            return Err(GalleryError::Link {
                path: root.join(link),
            });
        }
    }
    Ok(())
}

/// A file of `report/`, read only when it is a regular file reached
/// through no link (a FIFO there would block the read forever).
fn read_report_file(root: &Path, name: &str) -> Option<Vec<u8>> {
    crate::folder::open_under(root, &Path::new("report").join(name))
        .ok()?
        .read_all()
        .ok()
}

/// Stores the default grids for later `report` calls.
pub fn save_grids(root: &Path, grids: &[GridView]) -> Result<(), GalleryError> {
    check_report_dir(root)?;
    let path = report_dir(root).join("grids.json");
    let text = serde_json::to_vec_pretty(grids).map_err(|e| GalleryError::Render(e.to_string()))?;
    std::fs::create_dir_all(report_dir(root))
        .and_then(|()| crate::sink::write_atomic_unsynced(&path, &text).map_err(|e| e.source))
        .map_err(|source| GalleryError::Write { path, source })
}

/// The default grids stored by a run (none if absent or unreadable).
pub fn load_grids(root: &Path) -> Vec<GridView> {
    read_report_file(root, "grids.json")
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The caps a report collects a dimension's values with: past them the
/// dimension is wide, neither indexed nor kept ([`folder::Caps`]).
pub const CAPS: folder::Caps = page::CAPS;

/// Jobs read, thumbnailed (in parallel) and written at a time: one chunk.
const BATCH: usize = page::CHUNK;

/// Writes `root/report/index.html` and the thumbnails it needs.
pub fn write_report(root: &Path, options: &ReportOptions) -> Result<ReportSummary, GalleryError> {
    let log = FolderLog::open(root)?;
    check_report_dir(root)?;
    let report = report_dir(root);
    let thumbs_dir = report.join("thumbs");
    // The first pass reads every row: a damaged log stops here, before
    // anything is written.
    let dims = log.dimensions(page::CAPS)?;
    let mut data = page::DataFolder::new(&report, &dims, &log.params)?;
    let (mut made, mut failed, mut missing, mut refused) = (0, 0, 0, 0);
    let mut jobs = log.jobs()?;
    loop {
        let batch = jobs
            .by_ref()
            .take(BATCH)
            .collect::<Result<Vec<JobRecord>, _>>()?;
        if batch.is_empty() {
            break;
        }
        let outputs: Vec<&folder::OutputFile> = batch.iter().flat_map(|j| &j.outputs).collect();
        let states = thumbs::make_all(&thumbs_dir, root, &outputs);
        let mut has_thumb = std::collections::HashSet::new();
        for (o, s) in outputs.iter().zip(&states) {
            match s {
                thumbs::ThumbState::Made => made += 1,
                thumbs::ThumbState::Failed if o.kind == OutputKind::Image && o.present => {
                    failed += 1
                }
                _ => {}
            }
            if matches!(s, thumbs::ThumbState::Made | thumbs::ThumbState::Fresh) {
                has_thumb.insert(o.rel.as_str());
            }
            if o.path.is_none() {
                refused += 1;
            } else if !o.present {
                missing += 1;
            }
        }
        for job in &batch {
            data.push(root, job, &has_thumb)?;
        }
    }
    let grids = load_grids(root);
    let index = report.join("index.html");
    let old = read_report_file(root, "index.html");
    let files = data.finish()?;
    let html = page::render(root, &grids, options, &files)?;
    let same = old.as_deref() == Some(html.as_bytes());
    if !same {
        // The page is remade from the run folder: not synced.
        crate::sink::write_atomic_unsynced(&index, html.as_bytes()).map_err(|e| {
            GalleryError::Write {
                path: index.clone(),
                source: e.source,
            }
        })?;
    }
    // Only once the page points at the new data: an open page keeps the
    // folder it loads from until the next report.
    page::prune_data(&report, &files.id, old.as_deref());
    Ok(ReportSummary {
        index,
        jobs: files.jobs,
        thumbs_made: made,
        thumbs_failed: failed,
        missing,
        refused,
        written: !same,
    })
}
