//! Expansion: a manifest's job groups (matrix, zip, set, defaults, seeds)
//! become concrete [`Job`]s in a deterministic order, each with its stable
//! [`JobId`] and patched prompt. Knows nothing of HTTP or the output folder.
//!
//! SEAM (fixed for the runner, #4): `Job`, `Workflow`, `ImageInput`, and a
//! `Plan` offering `len()`, `columns()` and a lazy `jobs()` iterator.

use std::path::PathBuf;
use std::sync::Arc;

use crate::ids::{JobId, NodeId};
use crate::patch::Prompt;

/// One API-format workflow file as loaded for a run.
#[derive(Debug, Clone)]
pub struct Workflow {
    /// The name jobs refer to it by (`workflow: t2i`).
    pub name: String,
    /// Where it was read from (absolute or relative to the cwd).
    pub path: PathBuf,
    /// sha256 of the file's bytes, lowercase hex: logged so a later rerun can
    /// tell whether the workflow changed.
    pub sha256: String,
}

/// A local image that must be uploaded before the job's prompt is sent; the
/// runner replaces `prompt[node].inputs[input]` with the server's name for it.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageInput {
    /// The `LoadImage` (or similar) node.
    pub node: NodeId,
    /// The input to set, usually `image`.
    pub input: String,
    /// The local file, resolved against the manifest's folder.
    pub path: PathBuf,
}

/// One concrete, patched job: everything the runner and the log need.
#[derive(Debug, Clone)]
pub struct Job {
    /// Position in the full plan after deduplication, 0-based (`--shard`
    /// keeps `index % N == K - 1`).
    pub index: usize,
    /// Stable identity (hash of workflow content, parameters and seed).
    pub id: JobId,
    /// The `job` column: group name and index within the group, `fox#3`.
    pub label: String,
    /// The workflow the prompt was patched from.
    pub workflow: Arc<Workflow>,
    /// The seed set on the prompt, if the workflow has a seed input.
    pub seed: Option<u64>,
    /// Parameter values in manifest order (names as written in the manifest;
    /// `seed` excluded). Values are the JSON values set on the prompt, except
    /// `image` parameters, which hold the local path as written.
    pub params: Vec<(String, serde_json::Value)>,
    /// The prompt to send (before image names are replaced by upload names).
    pub prompt: Prompt,
    /// Local images to upload first.
    pub images: Vec<ImageInput>,
}
