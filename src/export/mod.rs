//! A run's `ok` outputs as a dataset other tools load as is: a Hugging Face
//! `imagefolder` / `audiofolder` (files + `metadata.jsonl`) or WebDataset
//! shards (`shard-000000.tar`, …). Reads an output folder through
//! [`crate::folder`]; knows nothing of the network or the scheduler.
//!
//! The export is built in a hidden folder beside the target and renamed into
//! place at the end, so an interrupted export leaves the previous one (or
//! nothing) and never a half-written dataset.

mod samples;
mod webdataset;

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use std::io::Write;

use crate::folder::{Filter, FolderError, Row, RunFolder, canonical, is_within, link_or_copy};
pub use samples::Sample;

/// The file marking a folder as ours, listing the export's files (one name
/// a line), so a later export may replace it while it holds nothing else.
const MARKER: &str = ".comfy-batch-export";

/// The dataset layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Hugging Face `imagefolder`: image files + `metadata.jsonl`.
    Imagefolder,
    /// Hugging Face `audiofolder`: audio files + `metadata.jsonl`.
    Audiofolder,
    /// WebDataset tar shards.
    Webdataset,
}

impl Format {
    /// The name used in default folder names and messages.
    pub fn name(self) -> &'static str {
        match self {
            Format::Imagefolder => "imagefolder",
            Format::Audiofolder => "audiofolder",
            Format::Webdataset => "webdataset",
        }
    }

    /// Whether a file of this extension is a sample of this format.
    fn takes(self, ext: &str) -> bool {
        // Extensions become tar member names and loader keys: short and plain.
        if ext.len() > 10 || !ext.chars().all(|c| c.is_ascii_alphanumeric()) {
            return false;
        }
        const IMAGE: [&str; 7] = ["png", "jpg", "jpeg", "webp", "gif", "bmp", "tiff"];
        const AUDIO: [&str; 5] = ["flac", "mp3", "wav", "ogg", "opus"];
        match self {
            Format::Imagefolder => IMAGE.contains(&ext),
            Format::Audiofolder => AUDIO.contains(&ext),
            // Every output but text, which is the sample's `.txt`.
            // (and `.json`, which is the sample's metadata).
            Format::Webdataset => !ext.is_empty() && ext != "txt" && ext != "json",
        }
    }
}

/// What to export and where.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// The layout.
    pub format: Format,
    /// The target folder (replaced when it holds nothing but an earlier
    /// export: its marker and the files the marker lists).
    pub to: PathBuf,
    /// Samples per WebDataset shard.
    pub shard_size: usize,
    /// `--where` terms.
    pub wheres: Vec<String>,
    /// Write the dataset even when it has no sample (else refused).
    pub allow_empty: bool,
}

/// Why an export was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The source folder could not be read, or a filter is bad.
    #[error(transparent)]
    Folder(#[from] FolderError),
    /// The target is unusable (inside the source, a file, someone else's folder).
    #[error("--to {}: {why}", path.display())]
    BadTarget {
        /// The target.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// No sample to export, and `allow_empty` not set.
    #[error("nothing to export: {0}; nothing written (--allow-empty writes an empty dataset)")]
    Empty(String),
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

pub(crate) fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
    move |source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportSummary {
    /// Jobs whose newest row is `ok` and passed the filters.
    pub jobs: usize,
    /// Samples written (files, one per output file of the format's kind).
    pub samples: usize,
    /// Files of the export (tars, or media files + metadata).
    pub files: usize,
    /// Files the log lists that were missing, skipped.
    pub missing: Vec<String>,
    /// Files the log lists that were refused (`FILE: why`: a path out of
    /// the folder, or reached through a symbolic link), never opened.
    pub refused: Vec<String>,
    /// Outputs of another kind than the format takes (e.g. video for imagefolder).
    pub other_kinds: usize,
}

impl ExportSummary {
    /// What the user is told beside the summary line, a line each
    /// (`warning: …`, `note: …`): files skipped (a few named, many as one
    /// line, not thousands) and outputs of another kind left out.
    pub fn notes(&self, source: &Path, format: Format) -> Vec<String> {
        let dir = source.display();
        let mut lines = Vec::new();
        match self.missing.as_slice() {
            few if few.len() <= 3 => lines.extend(few.iter().map(|file| {
                format!("warning: {dir}: {file}: listed in runs.csv but missing; skipped")
            })),
            many => lines.push(format!(
                "warning: {dir}: {} files listed in runs.csv are missing (the first: {}); skipped",
                many.len(),
                many[0]
            )),
        }
        for file in &self.refused {
            lines.push(format!("warning: {dir}: {file}; skipped"));
        }
        if self.other_kinds > 0 && format != Format::Webdataset {
            lines.push(format!(
                "note: {} output file(s) of another kind than {} left out",
                self.other_kinds,
                format.name()
            ));
        }
        lines
    }

    /// The summary line: what was exported, where.
    pub fn line(&self, to: &Path, format: Format) -> String {
        format!(
            "exported {} ok job(s) as {} sample(s) to {} ({}, {} file(s))",
            self.jobs,
            self.samples,
            to.display(),
            format.name(),
            self.files
        )
    }
}

/// The target folder for a source when `--to` is not given: a sibling
/// named after the source and the format (never inside the source).
pub fn default_target(source: &Path, format: Format) -> PathBuf {
    let source = canonical(source);
    let name = source
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    source
        .parent()
        .unwrap_or(Path::new("."))
        .join(format!("{name}-{}", format.name()))
}

/// Checks the target before anything is written. Both folders are compared
/// and inspected as the system resolves them ([`canonical`]), so no
/// spelling (`.`, `..`, a symlink) reaches the run folder, and the folder
/// checked is the folder replaced.
fn check_target(folder: &RunFolder, to: &Path) -> Result<(), ExportError> {
    let bad = |why: &str| ExportError::BadTarget {
        path: to.to_path_buf(),
        why: why.to_string(),
    };
    let source = canonical(folder.root());
    let target = canonical(to);
    let overlap = if target == source {
        Some(("is the run folder", " itself"))
    } else if is_within(&target, &source) {
        Some(("is inside the run folder", ""))
    } else if is_within(&source, &target) {
        Some(("contains the run folder", ""))
    } else {
        None
    };
    if let Some((overlap, itself)) = overlap {
        return Err(bad(&format!(
            "{} {overlap} {}{itself}; export to a folder beside it instead; nothing written",
            target.display(),
            source.display()
        )));
    }
    let to = target.as_path();
    if to.exists() {
        if !to.is_dir() {
            return Err(bad("is a file, not a folder"));
        }
        // Only a folder holding nothing but an earlier export (its marker
        // and the files the marker lists) is replaced: anything else in it
        // is someone's, and replacing the folder would delete it.
        let mut names: Vec<String> = fs::read_dir(to)
            .map_err(io_at(to))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        if !names.is_empty() {
            let marker = to.join(MARKER);
            let listed = match fs::symlink_metadata(&marker) {
                Ok(m) if m.is_file() => Some(fs::read_to_string(&marker).map_err(io_at(&marker))?),
                _ => None,
            };
            let ours: std::collections::HashSet<&str> =
                listed.iter().flat_map(|l| l.lines()).collect();
            names.sort();
            let foreign: Vec<&String> = names
                .iter()
                .filter(|n| {
                    !(n.as_str() == MARKER && listed.is_some()
                        || ours.contains(n.as_str())
                            && fs::symlink_metadata(to.join(n)).is_ok_and(|m| m.is_file()))
                })
                .collect();
            if let Some(first) = foreign.first() {
                let what = match foreign.len() - 1 {
                    0 => first.to_string(),
                    n => format!("{first} and {n} more"),
                };
                return Err(bad(&match listed {
                    None => format!(
                        "is not empty and not an earlier comfy-batch export (it holds {what}); choose another folder"
                    ),
                    Some(_) => format!(
                        "holds {what}, which the earlier comfy-batch export there did not make; nothing written or deleted (choose another folder)"
                    ),
                }));
            }
        }
    }
    if target.parent().is_none() {
        return Err(bad("has no parent folder"));
    }
    Ok(())
}

/// Exports `folder` as `options` say. Nothing is written when the options
/// are refused; the target appears whole or not at all. The log is read
/// twice, a row at a time: once for the columns' types, once to write.
pub fn export(folder: &RunFolder, options: &ExportOptions) -> Result<ExportSummary, ExportError> {
    let filter: Filter = folder.filter(&options.wheres)?;
    check_target(folder, &options.to)?;
    let wanted = |row: &Row| folder.get(row, "status") == "ok" && filter.matches(folder, row);
    // Every sample's metadata has one type per column, `text` when any row
    // has one and the pack columns when any row is packed: learnt from
    // every row before the first is written.
    let mut types = folder.column_types();
    let mut has_text = false;
    let mut packed = false;
    let mut jobs = 0;
    for row in folder.newest()? {
        let row = row.map_err(FolderError::from)?;
        if wanted(&row) {
            jobs += 1;
            types.add(folder, &row);
            has_text = has_text || folder.text(&row).is_some();
            packed = packed || !folder.get(&row, "pack_id").is_empty();
        }
    }

    let target = canonical(&options.to);
    let parent = target.parent().expect("checked above").to_path_buf();
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "export".into());
    let made_parent = first_missing(&parent);
    fs::create_dir_all(&parent).map_err(io_at(&parent))?;
    let prefix = format!(".{name}.export-");
    remove_stale(&parent, &prefix);
    let staging = tempfile::Builder::new()
        .prefix(&prefix)
        .tempdir_in(&parent)
        .map_err(io_at(&parent))?;
    // Marked at once (empty until the end lists the files), so a later
    // export knows an interrupted one's folder from someone's.
    let marker = staging.path().join(MARKER);
    fs::write(&marker, "").map_err(io_at(&marker))?;
    let mut summary = ExportSummary {
        jobs,
        ..ExportSummary::default()
    };
    let mut samples =
        samples::Samples::new(folder, options.format, types.finish(), has_text, packed);
    let mut sink = match options.format {
        Format::Imagefolder | Format::Audiofolder => Sink::Folder(FolderSink::new(staging.path())?),
        Format::Webdataset => {
            Sink::Shards(webdataset::Shards::new(staging.path(), options.shard_size))
        }
    };
    for row in folder.newest()? {
        let row = row.map_err(FolderError::from)?;
        if !wanted(&row) {
            continue;
        }
        for sample in samples.of(&row, &mut summary) {
            match &mut sink {
                Sink::Folder(f) => f.add(folder, &sample)?,
                Sink::Shards(s) => s.add(folder, &sample)?,
            }
            summary.samples += 1;
        }
    }
    if summary.samples == 0 && !options.allow_empty {
        // Nothing written: the staging folder goes, and so do the folders
        // made for it.
        drop(sink);
        drop(staging);
        if let Some(made) = made_parent {
            let _ = remove_empty_up_to(&parent, &made);
        }
        return Err(ExportError::Empty(format!(
            "no job whose newest row is ok{} has {} file{}",
            if options.wheres.is_empty() {
                ""
            } else {
                " and matches --where"
            },
            match options.format {
                Format::Imagefolder => "an image",
                Format::Audiofolder => "an audio",
                Format::Webdataset => "an output",
            },
            match (
                summary.missing.len() + summary.refused.len(),
                summary.other_kinds
            ) {
                (0, 0) => String::new(),
                (0, other) => format!(" ({other} output(s) of other kinds)"),
                (skipped, _) => format!(" ({skipped} missing or refused)"),
            }
        )));
    }
    summary.files = match sink {
        Sink::Folder(f) => f.finish()?,
        Sink::Shards(s) => s.finish()?,
    };
    // The marker lists every file of the export: the next export replaces
    // the folder only while it holds nothing else.
    let mut made: Vec<String> = fs::read_dir(staging.path())
        .map_err(io_at(staging.path()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != MARKER)
        .collect();
    made.sort();
    let mut listing = made.join("\n");
    listing.push('\n');
    fs::write(staging.path().join(MARKER), listing).map_err(io_at(staging.path()))?;
    // Swap: the old export moves aside, the new one takes its name.
    let staged = staging.keep();
    if target.exists() {
        // Named after this export's own staging folder: no one else's.
        let mut old = staged.clone().into_os_string();
        old.push("-old");
        let old = PathBuf::from(old);
        fs::rename(&target, &old).map_err(io_at(&target))?;
        fs::rename(&staged, &target).map_err(io_at(&target))?;
        let _ = fs::remove_dir_all(&old);
    } else {
        fs::rename(&staged, &target).map_err(io_at(&target))?;
    }
    Ok(summary)
}

/// The first folder of `path` (itself or an ancestor) that does not exist.
fn first_missing(path: &Path) -> Option<PathBuf> {
    let mut missing = None;
    for p in path.ancestors() {
        if p.as_os_str().is_empty() || p.exists() {
            break;
        }
        missing = Some(p.to_path_buf());
    }
    missing
}

/// Removes `path` and its parents up to `top`, each only while empty.
fn remove_empty_up_to(path: &Path, top: &Path) -> std::io::Result<()> {
    for p in path.ancestors() {
        fs::remove_dir(p)?;
        if p == top {
            break;
        }
    }
    Ok(())
}

/// Where samples are written.
enum Sink {
    /// `imagefolder` / `audiofolder`.
    Folder(FolderSink),
    /// WebDataset shards.
    Shards(webdataset::Shards),
}

/// A sample's file, opened through [`RunFolder::file`]. It was checked
/// when the samples were collected: failing now means it changed meanwhile.
fn open(folder: &RunFolder, rel: &str) -> Result<crate::folder::Opened, ExportError> {
    folder.file(rel).map_err(|why| ExportError::Io {
        path: folder.root().join(rel),
        source: std::io::Error::other(why),
    })
}

/// Removes what an interrupted export left beside the target: folders named
/// `prefix…` that carry export's marker (a staging folder gets it when it
/// is made). A file, a symlink or a folder without the marker of that name
/// is someone else's and stays.
fn remove_stale(parent: &Path, prefix: &str) {
    if let Ok(entries) = fs::read_dir(parent) {
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with(prefix) && is_ours(&path) {
                let _ = fs::remove_dir_all(path);
            }
        }
    }
}

/// Whether `dir` is a folder export made: a real folder (not reached
/// through a symlink) holding the marker as a regular file.
fn is_ours(dir: &Path) -> bool {
    fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir())
        && fs::symlink_metadata(dir.join(MARKER)).is_ok_and(|m| m.is_file())
}

/// `imagefolder` / `audiofolder`: the files flat in the folder, and one
/// `metadata.jsonl` row per file with `file_name` first, written as the
/// samples come.
struct FolderSink {
    dir: PathBuf,
    jsonl: std::io::BufWriter<fs::File>,
    files: usize,
}

impl FolderSink {
    fn new(dir: &Path) -> Result<FolderSink, ExportError> {
        let path = dir.join("metadata.jsonl");
        let file = fs::File::create(&path).map_err(io_at(&path))?;
        Ok(FolderSink {
            dir: dir.to_path_buf(),
            jsonl: std::io::BufWriter::new(file),
            files: 0,
        })
    }

    fn add(&mut self, folder: &RunFolder, s: &Sample) -> Result<(), ExportError> {
        let dest = self.dir.join(&s.file_name);
        link_or_copy(&mut open(folder, &s.rel)?, &dest).map_err(io_at(&dest))?;
        let mut row = Map::new();
        row.insert("file_name".into(), Value::String(s.file_name.clone()));
        row.extend(s.metadata.clone());
        let path = self.dir.join("metadata.jsonl");
        serde_json::to_writer(&mut self.jsonl, &Value::Object(row))
            .map_err(|e| io_at(&path)(e.into()))?;
        self.jsonl.write_all(b"\n").map_err(io_at(&path))?;
        self.files += 1;
        Ok(())
    }

    /// Flushes `metadata.jsonl`; returns the files written.
    fn finish(mut self) -> Result<usize, ExportError> {
        let path = self.dir.join("metadata.jsonl");
        self.jsonl.flush().map_err(io_at(&path))?;
        Ok(self.files + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_format_takes_its_kinds() {
        assert!(Format::Imagefolder.takes("png") && Format::Imagefolder.takes("webp"));
        assert!(!Format::Imagefolder.takes("flac") && !Format::Imagefolder.takes("mp4"));
        assert!(Format::Audiofolder.takes("flac") && Format::Audiofolder.takes("mp3"));
        assert!(!Format::Audiofolder.takes("png"));
        for kind in ["png", "webp", "mp4", "flac", "mp3", "latent"] {
            assert!(Format::Webdataset.takes(kind), "{kind}");
        }
        for kind in ["txt", "json", "", "a-b", "averyverylongextension"] {
            assert!(!Format::Webdataset.takes(kind), "{kind}");
        }
    }

    /// A folder as a run with audio and text outputs leaves it (the
    /// simulator makes only images).
    fn mixed_kinds(text_column: bool) -> (tempfile::TempDir, RunFolder) {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir_all(run.join("images")).unwrap();
        for (name, bytes) in [
            ("a_9_0.png", &b"png"[..]),
            ("a_12_0.flac", b"flac"),
            ("a_13_0.txt", b"a fox, in snow"),
            ("a_14_0.mp4", b"mp4"),
        ] {
            std::fs::write(run.join("images").join(name), bytes).unwrap();
        }
        let (text_head, text_cell) = if text_column {
            (",text", ",from the column")
        } else {
            ("", "")
        };
        let csv = format!(
            "job_id,job,workflow,workflow_sha256,seed,prompt,image,status,server,prompt_id,queued_at,started_at,finished_at,queue_s,run_s,images{text_head},error\n\
             a,g#1,w.json,00,18446744073709551615,a fox,inputs/x.png,ok,,,,,,,,images/a_9_0.png;images/a_12_0.flac;images/a_13_0.txt;images/a_14_0.mp4{text_cell},\n"
        );
        std::fs::write(run.join("runs.csv"), csv).unwrap();
        let folder = RunFolder::open(&run).unwrap();
        (dir, folder)
    }

    fn metadata(dir: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(dir.join("metadata.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn audio_image_and_text_outputs_go_where_they_belong() {
        let (dir, folder) = mixed_kinds(false);
        let options = |format, to: &str| ExportOptions {
            format,
            to: dir.path().join(to),
            shard_size: 10,
            wheres: vec![],
            allow_empty: false,
        };
        let audio = export(&folder, &options(Format::Audiofolder, "audio")).unwrap();
        assert_eq!((audio.samples, audio.other_kinds), (1, 2));
        let rows = metadata(&dir.path().join("audio"));
        assert_eq!(rows[0]["file_name"], "a_12_0.flac");
        assert_eq!(rows[0]["text"], "a fox, in snow");
        // A seed beyond i64 stays exact, as text; `image` is a reserved name.
        assert_eq!(rows[0]["seed"], "18446744073709551615");
        assert_eq!(rows[0]["param_image"], "inputs/x.png");
        let images = export(&folder, &options(Format::Imagefolder, "img")).unwrap();
        assert_eq!(images.samples, 1);
        assert_eq!(
            metadata(&dir.path().join("img"))[0]["file_name"],
            "a_9_0.png"
        );
        let wds = export(&folder, &options(Format::Webdataset, "wds")).unwrap();
        assert_eq!(
            wds.samples, 3,
            "png, flac and mp4; the text is each one's .txt"
        );

        let (dir, folder) = mixed_kinds(true);
        let to = dir.path().join("img");
        export(
            &folder,
            &ExportOptions {
                format: Format::Imagefolder,
                to: to.clone(),
                shard_size: 1,
                wheres: vec![],
                allow_empty: false,
            },
        )
        .unwrap();
        // The whole .txt file, not the column's clipped one-line preview.
        assert_eq!(metadata(&to)[0]["text"], "a fox, in snow");
    }

    #[test]
    fn webdataset_tars_do_not_depend_on_the_order_a_row_lists_its_files() {
        // Outputs are logged in the order the server reported them, which
        // differs from night to night; the samples must not.
        let tars = |images: &str| {
            let dir = tempfile::tempdir().unwrap();
            let run = dir.path().join("run");
            std::fs::create_dir_all(run.join("images")).unwrap();
            for name in ["a_9_0.png", "a_9_1.png", "a_12_0.flac"] {
                std::fs::write(run.join("images").join(name), name).unwrap();
            }
            let csv = format!(
                "job_id,job,workflow,workflow_sha256,seed,status,server,prompt_id,queued_at,started_at,finished_at,queue_s,run_s,images,error,text\n\
                 a,g#1,w.json,00,1,ok,,,,,,,,{images},,\n"
            );
            std::fs::write(run.join("runs.csv"), csv).unwrap();
            let folder = RunFolder::open(&run).unwrap();
            let to = dir.path().join("wds");
            let options = ExportOptions {
                format: Format::Webdataset,
                to: to.clone(),
                shard_size: 10,
                wheres: vec![],
                allow_empty: false,
            };
            export(&folder, &options).unwrap();
            std::fs::read(to.join("shard-000000.tar")).unwrap()
        };
        let (a, b) = (
            tars("images/a_9_1.png;images/a_12_0.flac;images/a_9_0.png"),
            tars("images/a_9_0.png;images/a_9_1.png;images/a_12_0.flac"),
        );
        assert!(a == b, "the tars differ");
    }

    #[test]
    fn the_default_target_is_a_sibling() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("fox");
        std::fs::create_dir(&run).unwrap();
        let to = default_target(&run, Format::Webdataset);
        assert_eq!(to.file_name().unwrap(), "fox-webdataset");
        assert_eq!(to.parent(), canonical(&run).parent());
    }
}
