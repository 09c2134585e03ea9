//! `run.json` beside `runs.csv`: what a later `run` into the same folder or a
//! `rerun` needs that the log's rows do not hold: the manifest's folder (the
//! base of `image` paths as logged) and `params:` aliases (to resolve
//! parameter names as the run did), and the key of the fresh-seed draw (so
//! a resumed run of a manifest without `seeds:` draws the same seeds and
//! finds its finished jobs).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{CliError, Exit};
use crate::manifest::Manifest;
use crate::sink::OutputDir;

/// The file's name in the output folder.
pub const FILE: &str = "run.json";

/// The file's content.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// Key of the fresh-seed stream (`Plan::random_key`).
    #[serde(default)]
    pub random_key: Option<u64>,
    /// The manifest's folder, relative to the output folder.
    #[serde(default)]
    pub manifest_dir: Option<String>,
    /// The manifest's aliases: name → target.
    #[serde(default)]
    pub aliases: serde_json::Map<String, serde_json::Value>,
}

impl RunInfo {
    /// Reads the folder's file; a missing or unreadable one is empty (it is
    /// a convenience, never required).
    pub fn read(dir: &Path) -> RunInfo {
        std::fs::read(dir.join(FILE))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    /// What a run of `manifest` with fresh-seed key `random_key` records.
    pub fn of(manifest: &Manifest, random_key: u64, output: &Path) -> RunInfo {
        RunInfo {
            random_key: Some(random_key),
            manifest_dir: Some(crate::paths::relative_to(output, &manifest.dir)),
            aliases: manifest
                .params
                .iter()
                .map(|a| (a.name.clone(), serde_json::Value::String(a.target.clone())))
                .collect(),
        }
    }

    /// Writes the file atomically.
    pub fn write(&self, output: &OutputDir) -> Result<(), CliError> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("plain data always serialises");
        bytes.push(b'\n');
        crate::sink::write_atomic(&output.root().join(FILE), &bytes)
            .map_err(|e| CliError::from_error(Exit::Infrastructure, &e))
    }
}
