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
    /// A folder the project needs is something else (a file, a link to
    /// nowhere): nothing was written.
    #[error("{} is not a folder; nothing was written", .0.display())]
    NotAFolder(PathBuf),
    /// A folder or file could not be made; what this call had written
    /// before is removed again.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Writes [`STARTER`] under `dir` (made if missing) and returns the paths
/// written. Every path is checked first, so an existing file, or a file or
/// broken link where a folder goes, stops it before anything is written;
/// each file is then created only if still absent, so a file that appears
/// meanwhile is not overwritten either. A write that fails midway removes
/// what this call wrote (files, then the folders it made): never a
/// half-made project.
pub fn write_starter(dir: &Path) -> Result<Vec<PathBuf>, ScaffoldError> {
    let targets: Vec<(PathBuf, &StarterFile)> =
        STARTER.iter().map(|f| (dir.join(f.path), f)).collect();
    // The folders, shallowest first, so a file where a folder goes is named
    // rather than the error of a path through it.
    let mut folders: Vec<PathBuf> = vec![dir.to_path_buf()];
    for file in STARTER {
        let mut at = dir.to_path_buf();
        let parts: Vec<&str> = file.path.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            at.push(part);
            if !folders.contains(&at) {
                folders.push(at.clone());
            }
        }
    }
    for folder in &folders {
        // `metadata` follows links: a link to a folder is a folder, a link
        // to nowhere is not.
        let not_a_folder = match folder.metadata() {
            Ok(meta) => !meta.is_dir(),
            Err(_) => folder.symlink_metadata().is_ok(),
        };
        if not_a_folder {
            return Err(ScaffoldError::NotAFolder(folder.clone()));
        }
    }
    if let Some((path, _)) = targets.iter().find(|(p, _)| p.symlink_metadata().is_ok()) {
        return Err(ScaffoldError::Exists(path.clone()));
    }
    let mut made = Made::default();
    for (path, file) in targets {
        if let Err(e) = made.file(&path, file.contents) {
            made.undo();
            return Err(e);
        }
    }
    Ok(made.files)
}

/// What one [`write_starter`] call made, to remove again if it fails.
#[derive(Default)]
struct Made {
    /// Folders it created, shallowest first.
    folders: Vec<PathBuf>,
    /// Files it wrote, in order.
    files: Vec<PathBuf>,
}

impl Made {
    /// Creates `path` (and its missing folders) with `contents`, never over
    /// an existing file.
    fn file(&mut self, path: &Path, contents: &[u8]) -> Result<(), ScaffoldError> {
        let io = |path: &Path, source| ScaffoldError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent() {
            let missing: Vec<PathBuf> = parent
                .ancestors()
                .take_while(|a| !a.as_os_str().is_empty() && a.symlink_metadata().is_err())
                .map(Path::to_path_buf)
                .collect();
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
            self.folders.extend(missing.into_iter().rev());
        }
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => ScaffoldError::Exists(path.to_path_buf()),
                _ => io(path, e),
            })?;
        self.files.push(path.to_path_buf());
        out.write_all(contents).map_err(|e| io(path, e))
    }

    /// Removes what was made, deepest first. Best effort: the error that
    /// stopped the write is the one reported.
    fn undo(self) {
        for file in self.files.iter().rev() {
            let _ = std::fs::remove_file(file);
        }
        for folder in self.folders.iter().rev() {
            // Only if empty: never anything the user put there meanwhile.
            let _ = std::fs::remove_dir(folder);
        }
    }
}
