//! `run.json` beside `runs.csv`: what a later `run` into the same folder or a
//! `rerun` needs that the log's rows do not hold: the manifest's folder (the
//! base of `image` paths as logged) and `params:` aliases (to resolve
//! parameter names as the run did), and the key of the fresh-seed draw (so
//! a resumed run of a manifest without `seeds:` draws the same seeds and
//! finds its finished jobs). Folder state: read and written here, never
//! through the network or the scheduler.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::manifest::Manifest;
use crate::sink::{OutputDir, SinkError};

/// The file's name in the output folder.
pub const FILE: &str = "run.json";

/// The file's content.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// The folder's run key, part of every prompt id: drawn once when the
    /// folder is first used, so a resumed run (even after the folder moved)
    /// recognises its prompts, and two machines never share ids.
    #[serde(default)]
    pub run_key: Option<String>,
    /// Key of the fresh-seed stream (`Plan::random_key`).
    #[serde(default)]
    pub random_key: Option<u64>,
    /// The manifest's folder, relative to the output folder.
    #[serde(default)]
    pub manifest_dir: Option<String>,
    /// The manifest's aliases: name → target.
    #[serde(default)]
    pub aliases: serde_json::Map<String, serde_json::Value>,
    /// The manifest's `concurrency:`, the default of a `rerun`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    /// sha256 of the manifest file: `merge` refuses folders of different
    /// manifests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_sha256: Option<String>,
    /// Whether some group draws fresh seeds (no `seeds:`), so that
    /// `random_key` matters when folders are merged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fresh_seeds: Option<bool>,
    /// Columns of `runs.csv` that log template choices (wildcards,
    /// variables): not parameters, so a rebuild from a row skips them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<String>,
}

impl RunInfo {
    /// Reads the folder's file; a missing or unreadable one is empty (it is
    /// a convenience, never required). Only a regular file reached through
    /// no link is read, as every command reads a run folder (a FIFO would
    /// block the read forever).
    pub fn read(dir: &Path) -> RunInfo {
        crate::folder::open_under(dir, Path::new(FILE))
            .ok()
            .and_then(|mut f| f.read_all().ok())
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    /// What a run of `manifest` with fresh-seed key `random_key` records.
    pub fn of(manifest: &Manifest, random_key: u64, run_key: &str, output: &Path) -> RunInfo {
        RunInfo {
            run_key: Some(run_key.to_string()),
            random_key: Some(random_key),
            manifest_dir: Some(crate::paths::relative_to(output, &manifest.dir)),
            aliases: manifest
                .params
                .iter()
                .map(|a| (a.name.clone(), serde_json::Value::String(a.target.clone())))
                .collect(),
            concurrency: manifest.concurrency,
            manifest_sha256: manifest.sha256(),
            // Set by the caller, which has the plan.
            fresh_seeds: None,
            choices: Vec::new(),
        }
    }

    /// The run key for a folder: the recorded one; for a folder logged
    /// before keys were recorded, the hash of its path; else a fresh one.
    pub fn key_for(&self, output: &Path) -> String {
        if let Some(key) = &self.run_key {
            return key.clone();
        }
        if output.join("runs.csv").exists() {
            return legacy_key(output);
        }
        hex::encode(rand::random::<[u8; 4]>())
    }

    /// Writes the file atomically.
    pub fn write(&self, output: &OutputDir) -> Result<(), SinkError> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("plain data always serialises");
        bytes.push(b'\n');
        crate::sink::write_atomic_synced(&output.root().join(FILE), &bytes)
    }
}

/// The key of a folder logged before run keys were recorded in `run.json`:
/// a hash of its path.
/// Computed before the folder exists, so the path is made absolute and
/// normalised lexically; the nearest existing ancestor is canonicalised so
/// that a symlinked parent gives the same key as its target.
fn legacy_key(output: &Path) -> String {
    let normal = crate::paths::normalize(
        &std::path::absolute(output).unwrap_or_else(|_| output.to_path_buf()),
    );
    let mut existing = normal.as_path();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => break,
        }
    }
    let mut key = std::fs::canonicalize(existing).unwrap_or_else(|_| existing.to_path_buf());
    key.extend(rest.iter().rev());
    let digest = Sha256::digest(key.to_string_lossy().as_bytes());
    hex::encode(&digest[..4])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_key_is_the_same_before_and_after_the_folder_exists() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("a/../out");
        let before = legacy_key(&out);
        std::fs::create_dir_all(dir.path().join("out")).unwrap();
        assert_eq!(before, legacy_key(&out));
        assert_eq!(before, legacy_key(&dir.path().join("out")));
        assert_ne!(before, legacy_key(&dir.path().join("other")));
    }
}
