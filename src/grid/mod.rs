//! Labelled grid images of a run (A1111's X/Y plot, from the log): which
//! job goes in which cell ([`layout`]), and the picture ([`draw`]): axis
//! labels and a title line in the bundled DejaVu Sans, images of any size
//! fitted into equal cells, missing and failed cells marked, the whole
//! capped at [`MAX_SIDE`] pixels a side.
//!
//! A grid of a folder ([`write_folder`], [`select`]) streams its log once
//! and keeps only the jobs the grid shows (after `--where` and `group`)
//! and each dimension's values up to the report's caps: not a record per
//! job of the run.
//!
//! Like `gallery`, it reads an output folder (finished or still being
//! written) and must not know the network, the scheduler or the manifest.

mod draw;
mod font;

use std::path::{Path, PathBuf};

pub use draw::{CellRect, Drawn, MAX_SIDE, draw};

use crate::gallery::folder::{self, Dimension, Dimensions, FolderLog, JobRecord, RunFolder};

/// What to put on the axes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GridRequest {
    /// X axis (columns).
    pub x: String,
    /// Y axis (rows).
    pub y: String,
    /// One picture per value of this dimension.
    pub page: Option<String>,
    /// Keep only jobs with these values (dimension, value).
    pub r#where: Vec<(String, String)>,
    /// Keep only this job group.
    pub group: Option<String>,
    /// The longer side of a cell, in pixels (default: the largest image's,
    /// at least 256).
    pub cell: Option<u32>,
}

/// Why a grid cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum GridError {
    /// An axis or `--where` names no dimension of the run.
    #[error("{what}: '{name}' is not a parameter of this run{}; it has: {}",
        suggestion.as_ref().map(|s| format!(" (did you mean '{s}'?)")).unwrap_or_default(),
        known.join(", "))]
    UnknownAxis {
        /// The flag or key (`--x`, `--where`, `x`…).
        what: String,
        /// The name given.
        name: String,
        /// The nearest known name.
        suggestion: Option<String>,
        /// Every known name.
        known: Vec<String>,
    },
    /// A `--where` or `group` value no job has.
    #[error("{what}: no job has {name} = '{value}'{}; values: {}",
        suggestion.as_ref().map(|s| format!(" (did you mean '{s}'?)")).unwrap_or_default(),
        values.join(", "))]
    UnknownValue {
        /// The flag or key.
        what: String,
        /// The dimension.
        name: String,
        /// The value given.
        value: String,
        /// The nearest value.
        suggestion: Option<String>,
        /// The values there are (the first few).
        values: Vec<String>,
    },
    /// The same dimension on two axes.
    #[error("'{0}' is on two axes; pick different parameters for --x, --y and --page")]
    SameAxis(String),
    /// A `--where` malformed.
    #[error("--where '{0}': expected NAME=VALUE")]
    BadWhere(String),
    /// The folder cannot be read.
    #[error(transparent)]
    Folder(#[from] folder::FolderError),
    /// No job to show.
    #[error("{}: no job to show{}", path.display(), if *filtered { " with these --where/group values" } else { ": runs.csv has no rows yet" })]
    NoJobs {
        /// The folder.
        path: PathBuf,
        /// Whether filters removed every job.
        filtered: bool,
    },
    /// An axis with more values than a picture can show.
    #[error(
        "--{axis} {name}: {count} values; a grid image shows at most {MAX_VALUES} per axis (pick another axis, or narrow it with --where or --page)"
    )]
    TooLarge {
        /// `x` or `y`.
        axis: &'static str,
        /// The dimension.
        name: String,
        /// How many values it has.
        count: usize,
    },
    /// The output format is not known.
    #[error("-o {}: unsupported image format (use .png, .jpg or .webp)", .0.display())]
    Format(PathBuf),
    /// Writing failed.
    #[error("{}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Encoding failed.
    #[error("{}: cannot encode the image: {why}", path.display())]
    Encode {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

/// The most values an axis of a picture may have (at the smallest cell,
/// that is still within [`MAX_SIDE`]).
pub const MAX_VALUES: usize = 2000;

/// Parses `NAME=VALUE`.
pub fn parse_where(text: &str) -> Result<(String, String), GridError> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(GridError::BadWhere(text.to_string())),
    }
}

/// One grid picture's content: the values on each axis and the jobs of
/// each cell (indices into [`RunFolder::jobs`]).
#[derive(Debug, Clone, PartialEq)]
pub struct GridPage {
    /// The page value, when there is a page axis.
    pub page: Option<String>,
    /// X axis name and values.
    pub x: (String, Vec<String>),
    /// Y axis name and values.
    pub y: (String, Vec<String>),
    /// `cells[row][col]`: the jobs there (empty: not run).
    pub cells: Vec<Vec<Vec<usize>>>,
    /// The title line: folder, axes, fixed and pooled parameters.
    pub title: String,
}

/// Checks one dimension name; `what` names the flag or key in the error.
pub fn check_name(run_dims: &[String], what: &str, name: &str) -> Result<(), GridError> {
    if run_dims.iter().any(|d| d == name) {
        return Ok(());
    }
    Err(GridError::UnknownAxis {
        what: what.to_string(),
        name: name.to_string(),
        suggestion: crate::text::nearest(name, run_dims.iter().map(String::as_str)),
        known: run_dims.to_vec(),
    })
}

/// Checks the names of a request against the dimension names a run has
/// (parameter columns, `seed`, `group`), before anything runs.
pub fn check_names(req: &GridRequest, names: &[String], prefix: &str) -> Result<(), GridError> {
    check_name(names, &format!("{prefix}x"), &req.x)?;
    check_name(names, &format!("{prefix}y"), &req.y)?;
    if let Some(p) = &req.page {
        check_name(names, &format!("{prefix}page"), p)?;
    }
    for (k, _) in &req.r#where {
        check_name(names, &format!("{prefix}where"), k)?;
    }
    let axes = [Some(&req.x), Some(&req.y), req.page.as_ref()];
    for (i, a) in axes.iter().enumerate() {
        if let Some(a) = a
            && axes[i + 1..].iter().any(|b| b.is_some_and(|b| b == *a))
        {
            return Err(GridError::SameAxis(a.to_string()));
        }
    }
    Ok(())
}

/// The values `jobs` have on `dim`, in the dimension's order (`""` last
/// when some job lacks it). One pass over the jobs. A wide dimension
/// (values not kept: [`folder::Caps`]) gives its values in numeric order,
/// or else in the order they first occur among `jobs`.
fn sorted_values(run: &RunFolder, dims: &[Dimension], jobs: &[usize], dim: &str) -> Vec<String> {
    let values = jobs
        .iter()
        .map(|&j| run.value(&run.jobs[j], dim).unwrap_or_default());
    let dimension = dims.iter().find(|d| d.name == dim);
    if let Some(d) = dimension.filter(|d| d.wide.is_some()) {
        let mut have: indexmap::IndexSet<&str> = values.collect();
        let none = have.shift_remove("");
        let mut present: Vec<String> = have.into_iter().map(str::to_string).collect();
        if d.numeric {
            let number = |v: &str| v.trim().parse::<f64>().unwrap_or_default();
            present.sort_by(|a, b| number(a).total_cmp(&number(b)));
        }
        if none {
            present.push(String::new());
        }
        return present;
    }
    let have: std::collections::HashSet<&str> = values.collect();
    let mut present: Vec<String> = dimension
        .map(|d| d.values.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|v| have.contains(v.as_str()))
        .cloned()
        .collect();
    if have.contains("") {
        present.push(String::new());
    }
    present
}

/// The `--where` and `group` values `req` asks for that no job has: the
/// first as an error (`has`: whether some job has a dimension's value).
fn check_values(
    dims: &[Dimension],
    req: &GridRequest,
    has: impl Fn(&str, &str) -> bool,
) -> Result<(), GridError> {
    let value_check = |what: &str, name: &str, value: &str| -> Result<(), GridError> {
        if !value.is_empty() && has(name, value) {
            return Ok(());
        }
        let values = dims
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.values.clone())
            .unwrap_or_default();
        Err(GridError::UnknownValue {
            what: what.to_string(),
            name: name.to_string(),
            value: value.to_string(),
            suggestion: crate::text::nearest(value, values.iter().map(String::as_str)),
            values: values.into_iter().take(12).collect(),
        })
    };
    for (k, v) in &req.r#where {
        value_check("--where", k, v)?;
    }
    if let Some(g) = &req.group {
        value_check("group", folder::GROUP, g)?;
    }
    Ok(())
}

/// Whether the grid `req` shows `job` (its `--where` values and group).
fn keeps(value: impl Fn(&str) -> Option<String>, group: &str, req: &GridRequest) -> bool {
    // A job without the parameter (another group's) is not constrained.
    req.r#where.iter().all(|(k, v)| {
        let have = value(k).unwrap_or_default();
        have == *v || have.is_empty()
    }) && req.group.as_deref().is_none_or(|g| group == g)
}

/// Which jobs go where.
pub fn layout(run: &RunFolder, req: &GridRequest) -> Result<Vec<GridPage>, GridError> {
    let names = run.dimension_names();
    check_names(req, &names, "--")?;
    let dims = run.dimensions();
    check_values(&dims, req, |name, value| {
        dims.iter()
            .find(|d| d.name == name)
            .is_some_and(|d| d.values.iter().any(|v| v == value))
    })?;
    if run.jobs.is_empty() {
        return Err(GridError::NoJobs {
            path: run.root.clone(),
            filtered: false,
        });
    }
    let keep = |job: &JobRecord| keeps(|k| run.value(job, k).map(str::to_string), job.group(), req);
    let chosen: Vec<usize> = (0..run.jobs.len())
        .filter(|&i| keep(&run.jobs[i]))
        .collect();
    place(run, &dims, req, &chosen)
}

/// The jobs of a folder's grid, read in one pass over its log: only the
/// jobs `req` keeps (its `--where` values and group), with every
/// dimension of the whole run (collected up to the report's caps).
pub struct Selection {
    /// The folder, with only the jobs kept.
    pub run: RunFolder,
    /// The dimensions of all its jobs.
    pub dims: Vec<Dimension>,
    /// The output files of all its jobs that are never opened, each with
    /// why ([`RunFolder::refused`]).
    pub refused: Vec<(String, String)>,
}

/// Reads the jobs of the grid `req` of the folder `dir` ([`Selection`]),
/// checking its names and values as [`layout`] does.
pub fn select(dir: &Path, req: &GridRequest) -> Result<Selection, GridError> {
    let log = FolderLog::open(dir)?;
    check_names(req, &log.dimension_names(), "--")?;
    let mut dims = Dimensions::new(&log.params, crate::gallery::CAPS);
    // Whether some job has each `--where` value, then the group.
    let mut found = vec![false; req.r#where.len() + 1];
    let mut refused = Vec::new();
    let (mut jobs, mut kept) = (0usize, Vec::new());
    for job in log.jobs()? {
        let job = job?;
        jobs += 1;
        dims.add(&job);
        for (f, (k, v)) in found.iter_mut().zip(&req.r#where) {
            *f = *f || log.value(&job, k) == Some(v.as_str());
        }
        found[req.r#where.len()] |= req.group.as_deref() == Some(job.group());
        refused.extend(folder::refused_of(&log.root, &job));
        if keeps(|k| log.value(&job, k).map(str::to_string), job.group(), req) {
            kept.push(job);
        }
    }
    let dims = dims.finish();
    check_values(&dims, req, |name, value| {
        let at = req
            .r#where
            .iter()
            .position(|(k, v)| k == name && v == value);
        match at {
            Some(i) => found[i],
            None => found[req.r#where.len()],
        }
    })?;
    if jobs == 0 {
        return Err(GridError::NoJobs {
            path: log.root,
            filtered: false,
        });
    }
    Ok(Selection {
        run: RunFolder {
            root: log.root,
            params: log.params,
            jobs: kept,
        },
        dims,
        refused,
    })
}

/// The pages of a grid of the jobs `chosen` of `run` (`dims`: the whole
/// run's dimensions).
fn place(
    run: &RunFolder,
    dims: &[Dimension],
    req: &GridRequest,
    chosen: &[usize],
) -> Result<Vec<GridPage>, GridError> {
    if chosen.is_empty() {
        return Err(GridError::NoJobs {
            path: run.root.clone(),
            filtered: true,
        });
    }
    let pages: Vec<Option<String>> = match &req.page {
        Some(p) => sorted_values(run, dims, chosen, p)
            .into_iter()
            .map(Some)
            .collect(),
        None => vec![None],
    };
    let mut out = Vec::new();
    for page in pages {
        let on_page: Vec<usize> = chosen
            .iter()
            .copied()
            .filter(|&j| match (&req.page, &page) {
                (Some(p), Some(v)) => run.value(&run.jobs[j], p).unwrap_or_default() == v,
                _ => true,
            })
            .collect();
        let xs = sorted_values(run, dims, &on_page, &req.x);
        let ys = sorted_values(run, dims, &on_page, &req.y);
        for (axis, name, values) in [("x", &req.x, &xs), ("y", &req.y, &ys)] {
            if values.len() > MAX_VALUES {
                return Err(GridError::TooLarge {
                    axis,
                    name: name.clone(),
                    count: values.len(),
                });
            }
        }
        let mut cells = vec![vec![Vec::new(); xs.len()]; ys.len()];
        for &j in &on_page {
            let job = &run.jobs[j];
            let xv = run.value(job, &req.x).unwrap_or_default();
            let yv = run.value(job, &req.y).unwrap_or_default();
            if let (Some(c), Some(r)) = (
                xs.iter().position(|v| v == xv),
                ys.iter().position(|v| v == yv),
            ) {
                cells[r][c].push(j);
            }
        }
        let title = title(run, dims, req, &page, &on_page);
        out.push(GridPage {
            page,
            x: (req.x.clone(), xs),
            y: (req.y.clone(), ys),
            cells,
            title,
        });
    }
    Ok(out)
}

fn title(
    run: &RunFolder,
    dims: &[Dimension],
    req: &GridRequest,
    page: &Option<String>,
    jobs: &[usize],
) -> String {
    let name = std::path::absolute(&run.root)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let mut parts = vec![format!("{name}: x = {}, y = {}", req.x, req.y)];
    if let (Some(p), Some(v)) = (&req.page, page) {
        parts.push(format!("{p} = {}", crate::text::clip(v, 80)));
    }
    for d in dims {
        if [&req.x, &req.y].contains(&&d.name) || req.page.as_ref() == Some(&d.name) {
            continue;
        }
        let values = sorted_values(run, dims, jobs, &d.name);
        let values: Vec<&String> = values.iter().filter(|v| !v.is_empty()).collect();
        match values.len() {
            0 => {}
            1 => parts.push(format!("{} = {}", d.name, crate::text::clip(values[0], 80))),
            n => parts.push(format!("{}: all {n}", d.name)),
        }
    }
    parts.join(" · ")
}

/// A file-name-safe form of a value: letters, digits, `-`, `_`, `.`;
/// other characters become `_`; at most 60 characters.
pub fn file_part(value: &str) -> String {
    let s: String = value
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(60)
        .collect();
    let s = s.trim_matches('.').to_string();
    if s.is_empty() { "_".into() } else { s }
}

/// The files for the pages of a grid: `base` itself for one page without
/// a page axis, else `<stem>-<page value>.<ext>` (distinct even when two
/// values sanitise alike).
pub fn page_paths(base: &Path, pages: &[GridPage]) -> Vec<PathBuf> {
    let stem = base
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "grid".into());
    let ext = base
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_else(|| "png".into());
    let dir = base.parent().unwrap_or(Path::new(""));
    let mut used = std::collections::HashSet::new();
    pages
        .iter()
        .map(|p| match &p.page {
            None => base.to_path_buf(),
            Some(v) => {
                let mut name = format!("{stem}-{}", file_part(v));
                let mut n = 2;
                while !used.insert(name.clone()) {
                    name = format!("{stem}-{}-{n}", file_part(v));
                    n += 1;
                }
                dir.join(format!("{name}.{ext}"))
            }
        })
        .collect()
}

/// Encodes an image by the extension of `path` and writes it atomically.
pub fn save(image: &image::RgbImage, path: &Path) -> Result<(), GridError> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let mut bytes = Vec::new();
    let enc_err = |e: image::ImageError| GridError::Encode {
        path: path.to_path_buf(),
        why: e.to_string(),
    };
    match ext.as_str() {
        "png" => image
            .write_with_encoder(image::codecs::png::PngEncoder::new_with_quality(
                &mut bytes,
                image::codecs::png::CompressionType::Fast,
                image::codecs::png::FilterType::Sub,
            ))
            .map_err(enc_err)?,
        "jpg" | "jpeg" => image
            .write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(
                &mut bytes, 90,
            ))
            .map_err(enc_err)?,
        "webp" => image
            .write_with_encoder(image::codecs::webp::WebPEncoder::new_lossless(&mut bytes))
            .map_err(enc_err)?,
        _ => return Err(GridError::Format(path.to_path_buf())),
    }
    // A grid is redrawn from the run folder: not synced.
    path.parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| crate::sink::write_atomic_unsynced(path, &bytes).map_err(|e| e.source))
        .map_err(|source| GridError::Write {
            path: path.to_path_buf(),
            source,
        })
}

/// Refuses a grid file name whose format is not known, before any work.
fn check_format(base: &Path) -> Result<(), GridError> {
    let ext_ok = base
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .is_some_and(|e| matches!(e.as_str(), "png" | "jpg" | "jpeg" | "webp"));
    if !ext_ok {
        return Err(GridError::Format(base.to_path_buf()));
    }
    Ok(())
}

/// Lays out, draws and writes every page of a grid; returns the files.
pub fn write(run: &RunFolder, req: &GridRequest, base: &Path) -> Result<Vec<PathBuf>, GridError> {
    check_format(base)?;
    let pages = layout(run, req)?;
    write_pages(run, &pages, req, base)
}

/// What [`write_folder`] wrote, and what it would not open.
#[derive(Debug, Default)]
pub struct WrittenGrid {
    /// The picture files, one per page.
    pub files: Vec<PathBuf>,
    /// Output files never opened, each with why ([`RunFolder::refused`]).
    pub refused: Vec<(String, String)>,
}

/// [`write`] for the folder `dir`, streamed ([`select`]).
pub fn write_folder(dir: &Path, req: &GridRequest, base: &Path) -> Result<WrittenGrid, GridError> {
    check_format(base)?;
    let selection = select(dir, req)?;
    let run = &selection.run;
    let all: Vec<usize> = (0..run.jobs.len()).collect();
    let pages = place(run, &selection.dims, req, &all)?;
    Ok(WrittenGrid {
        files: write_pages(run, &pages, req, base)?,
        refused: selection.refused,
    })
}

/// Draws and writes `pages`.
fn write_pages(
    run: &RunFolder,
    pages: &[GridPage],
    req: &GridRequest,
    base: &Path,
) -> Result<Vec<PathBuf>, GridError> {
    let paths = page_paths(base, pages);
    for (page, path) in pages.iter().zip(&paths) {
        let drawn = draw(run, page, req.cell);
        save(&drawn.image, path)?;
    }
    Ok(paths)
}

/// Redraws the images of the grids saved with the report
/// (`DIR/report/grids/<name>.png`) from the folder's log, as a run draws
/// them from its own. Returns the files written and the problems, a line
/// each: a grid that cannot be drawn never stops the others.
pub fn write_saved(dir: &Path) -> (Vec<PathBuf>, Vec<String>) {
    let (mut written, mut problems) = (Vec::new(), Vec::new());
    let views = crate::gallery::load_grids(dir);
    if views.is_empty() {
        return (written, problems);
    }
    if let Err(e) = FolderLog::open(dir) {
        return (written, vec![format!("grids: {e}")]);
    }
    if let Err(e) = crate::gallery::check_report_dir(dir) {
        return (written, vec![format!("grids: {e}")]);
    }
    let grids = crate::gallery::report_dir(dir).join("grids");
    for g in views {
        let req = GridRequest {
            x: g.x,
            y: g.y,
            page: g.page,
            r#where: g.r#where,
            group: g.group,
            cell: None,
        };
        match write_folder(dir, &req, &grids.join(format!("{}.png", g.name))) {
            Ok(grid) => written.extend(grid.files),
            Err(e) => problems.push(format!("grid '{}': {e}", g.name)),
        }
    }
    (written, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> RunFolder {
        let text = "job_id,job,workflow,workflow_sha256,seed,prompt,cfg,status,images,error\n\
            a,g#0,w,x,1,fox,5,ok,,\n\
            b,g#1,w,x,1,fox,8,failed,,boom\n\
            c,g#2,w,x,1,owl,5,ok,,\n\
            d,g#3,w,x,2,owl,5,ok,,\n";
        read(text)
    }

    /// The folder of a log `text` (its files absent), through the one reader.
    fn read(text: &str) -> RunFolder {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("runs.csv"), text).unwrap();
        RunFolder::read(dir.path()).unwrap()
    }

    fn req(x: &str, y: &str) -> GridRequest {
        GridRequest {
            x: x.into(),
            y: y.into(),
            ..GridRequest::default()
        }
    }

    #[test]
    fn cells_hold_their_jobs_and_pool_the_rest() {
        let r = run();
        let pages = layout(&r, &req("cfg", "prompt")).unwrap();
        assert_eq!(pages.len(), 1);
        let p = &pages[0];
        assert_eq!(p.x.1, ["5", "8"]);
        assert_eq!(p.y.1, ["fox", "owl"]);
        assert_eq!(p.cells[0][0], [0]);
        assert_eq!(p.cells[0][1], [1]);
        assert_eq!(p.cells[1][0], [2, 3]);
        assert!(p.cells[1][1].is_empty());
        assert!(p.title.contains("seed: all 2"), "{}", p.title);
        let only = GridRequest {
            r#where: vec![("seed".into(), "2".into())],
            ..req("cfg", "prompt")
        };
        let p = &layout(&r, &only).unwrap()[0];
        assert_eq!(p.cells, vec![vec![vec![3]]]);
        assert!(p.title.contains("seed = 2"), "{}", p.title);
    }

    /// A string set empty (`""` in the log) is a value of its own: it has
    /// a column, and `where` selects it by `""`.
    #[test]
    fn a_string_set_empty_is_a_value_of_its_own() {
        let text = "job_id,job,workflow,workflow_sha256,seed,negative,cfg,status,images,error\n\
            a,g#0,w,x,1,\"\"\"\"\"\",5,ok,,\n\
            b,g#1,w,x,1,blurry,5,ok,,\n\
            c,g#2,w,x,1,\"\"\"\"\"\",8,ok,,\n";
        let r = read(text);
        let p = &layout(&r, &req("negative", "cfg")).unwrap()[0];
        assert_eq!(p.x.1, [r#""""#, "blurry"]);
        let empty = GridRequest {
            r#where: vec![("negative".into(), r#""""#.into())],
            ..req("cfg", "seed")
        };
        let p = &layout(&r, &empty).unwrap()[0];
        assert_eq!(p.cells, vec![vec![vec![0], vec![2]]]);
    }

    #[test]
    fn bad_names_say_did_you_mean() {
        let e = layout(&run(), &req("cgf", "prompt")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--x: 'cgf' is not a parameter of this run (did you mean 'cfg'?); it has: seed, prompt, cfg, group"
        );
        let w = GridRequest {
            r#where: vec![("prompt".into(), "fx".into())],
            ..req("cfg", "seed")
        };
        let e = layout(&run(), &w).unwrap_err();
        assert!(e.to_string().contains("no job has prompt = 'fx'"), "{e}");
        let e = layout(&run(), &req("cfg", "cfg")).unwrap_err();
        assert!(matches!(e, GridError::SameAxis(_)));
    }

    #[test]
    fn page_files_are_distinct_and_safe() {
        let r = run();
        let pages = layout(
            &r,
            &GridRequest {
                page: Some("prompt".into()),
                ..req("cfg", "seed")
            },
        )
        .unwrap();
        let paths = page_paths(Path::new("g/x.png"), &pages);
        assert_eq!(
            paths,
            [PathBuf::from("g/x-fox.png"), PathBuf::from("g/x-owl.png")]
        );
        assert_eq!(file_part("../a b/c"), "_a_b_c");
        assert_eq!(file_part(".."), "_");
    }
}
