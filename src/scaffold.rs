//! `init`: a starter project (the repository's own example manifests,
//! workflows and input images, embedded at build time so they cannot drift)
//! written into a folder, so that an installed binary without a clone can run
//! the README's first example.
//!
//! It owns the list of files and writing them; it knows nothing of argv or
//! of what the manifests mean.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// One file of the starter project.
#[derive(Debug, Clone, Copy)]
pub struct StarterFile {
    /// Where it goes, relative to the project folder (`/`-separated).
    pub path: &'static str,
    /// Its bytes.
    pub contents: &'static [u8],
}

/// Embeds a repository file at the same relative path.
macro_rules! starter {
    ($path:literal) => {
        StarterFile {
            path: $path,
            contents: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/", $path)),
        }
    };
}

/// The starter project: `jobs/fox-sweep.yaml` (the README's first run) and
/// `jobs/dataset.yaml` (the CI examples'), with what they reference.
pub const STARTER: [StarterFile; 6] = [
    starter!("jobs/fox-sweep.yaml"),
    starter!("jobs/dataset.yaml"),
    starter!("jobs/inputs/red.png"),
    starter!("jobs/inputs/blue.png"),
    starter!("workflows/t2i.json"),
    starter!("workflows/i2i.json"),
];

/// Why the starter project was not written.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// A file it would write is already there: nothing was written.
    #[error("{} already exists; nothing was written (init never overwrites)", .0.display())]
    Exists(PathBuf),
    /// A folder or file could not be made.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Writes [`STARTER`] under `dir` (made if missing) and returns the paths
/// written. Every path is checked first, so an existing file stops it
/// before anything is written; each file is then created only if still
/// absent, so a file that appears meanwhile is not overwritten either.
pub fn write_starter(dir: &Path) -> Result<Vec<PathBuf>, ScaffoldError> {
    let targets: Vec<(PathBuf, &StarterFile)> =
        STARTER.iter().map(|f| (dir.join(f.path), f)).collect();
    if let Some((path, _)) = targets.iter().find(|(p, _)| p.symlink_metadata().is_ok()) {
        return Err(ScaffoldError::Exists(path.clone()));
    }
    let mut written = Vec::with_capacity(targets.len());
    for (path, file) in targets {
        let io = |source| ScaffoldError::Io {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| ScaffoldError::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => ScaffoldError::Exists(path.clone()),
                _ => io(e),
            })?;
        out.write_all(file.contents).map_err(io)?;
        written.push(path);
    }
    Ok(written)
}
