//! Finding and loading API-format workflow files by name, with the sha256 of
//! their bytes. UI-format files are refused with the way to export the API
//! format.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::manifest::{MAX_MANIFEST_BYTES, Manifest, normalize, read_capped};

/// Why a workflow cannot be used (the caller adds the manifest position).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum WorkflowError {
    /// No file found; the paths tried, in order.
    NotFound { tried: Vec<PathBuf> },
    /// A file listed in `workflows:` cannot be read.
    Read { path: PathBuf, cause: String },
    /// Not JSON at all.
    NotJson { path: PathBuf, cause: String },
    /// JSON, but not an object of nodes.
    Invalid { path: PathBuf, cause: String },
    /// A directory where the workflow file should be.
    Directory { path: PathBuf },
    /// A link (`["id", n]`) to a node the workflow does not have, or an
    /// input list that is no link.
    BadLink { path: PathBuf, cause: String },
    /// A ComfyUI UI-format file (`nodes`/`links`).
    UiFormat { path: PathBuf },
}

impl std::fmt::Display for WorkflowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkflowError::NotFound { tried } => write!(
                f,
                "no file for it: tried {}",
                tried
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            WorkflowError::Read { path, cause } => {
                write!(f, "cannot read {}: {cause}", path.display())
            }
            WorkflowError::NotJson { path, cause } => {
                write!(f, "{} is not JSON: {cause}", path.display())
            }
            WorkflowError::Directory { path } => {
                write!(f, "{} is a directory, not a workflow file", path.display())
            }
            WorkflowError::BadLink { path, cause } => {
                write!(f, "{} has a broken link: {cause}", path.display())
            }
            WorkflowError::Invalid { path, cause } => {
                write!(
                    f,
                    "{} is not an API-format workflow: {cause}",
                    path.display()
                )
            }
            WorkflowError::UiFormat { path } => write!(
                f,
                "{} is a UI-format workflow (it has 'nodes' and 'links'); comfy-batch needs the \
                 API format: in ComfyUI enable the dev mode options (Settings → 'Enable Dev mode \
                 Options') and use 'Save (API Format)', or in the new menu Workflow → \
                 'Export (API)'",
                path.display()
            ),
        }
    }
}

/// A loaded workflow: its bytes' hash and its nodes.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) path: PathBuf,
    pub(crate) sha256: String,
    pub(crate) nodes: Map<String, Value>,
}

/// The candidate files for a workflow name, in lookup order: the
/// `workflows:` entry, else `../workflows/<name>.json` then
/// `workflows/<name>.json`, relative to the manifest's folder.
pub(crate) fn candidates(manifest: &Manifest, name: &str) -> Vec<PathBuf> {
    if let Some(entry) = manifest.workflows.iter().find(|w| w.name == name) {
        return vec![entry.path.clone()];
    }
    let file = format!("{name}.json");
    vec![
        normalize(&manifest.dir.join("..").join("workflows").join(&file)),
        normalize(&manifest.dir.join("workflows").join(&file)),
    ]
}

/// Finds and loads the workflow `name`.
pub(crate) fn load(manifest: &Manifest, name: &str) -> Result<Loaded, WorkflowError> {
    let tried = candidates(manifest, name);
    let Some(path) = tried.iter().find(|p| p.exists()).cloned() else {
        return Err(WorkflowError::NotFound { tried });
    };
    if path.is_dir() {
        return Err(WorkflowError::Directory { path });
    }
    let bytes = read_capped(&path, MAX_MANIFEST_BYTES).map_err(|e| WorkflowError::Read {
        path: path.clone(),
        cause: e.to_string(),
    })?;
    parse(&path, &bytes)
}

/// Parses workflow bytes read from `path`.
pub(crate) fn parse(path: &Path, bytes: &[u8]) -> Result<Loaded, WorkflowError> {
    let invalid = |cause: String| WorkflowError::Invalid {
        path: path.to_owned(),
        cause,
    };
    let value: Value = serde_json::from_slice(bytes).map_err(|e| WorkflowError::NotJson {
        path: path.to_owned(),
        cause: e.to_string(),
    })?;
    let Value::Object(nodes) = value else {
        return Err(invalid("the top level is not an object".into()));
    };
    if nodes.contains_key("nodes") && nodes.contains_key("links") {
        return Err(WorkflowError::UiFormat {
            path: path.to_owned(),
        });
    }
    if nodes.is_empty() {
        return Err(invalid("it has no nodes".into()));
    }
    for (id, node) in &nodes {
        let ok = node.get("class_type").is_some_and(Value::is_string)
            && node.get("inputs").is_some_and(Value::is_object);
        if !ok {
            return Err(invalid(format!(
                "node '{id}' lacks a 'class_type' string or an 'inputs' object"
            )));
        }
    }
    check_links(&nodes).map_err(|cause| WorkflowError::BadLink {
        path: path.to_owned(),
        cause,
    })?;
    Ok(Loaded {
        path: path.to_owned(),
        sha256: hex::encode(Sha256::digest(bytes)),
        nodes,
    })
}

/// Every list input must be a link `["id", n]` to a node of the workflow:
/// in the API format a list is always a link, and the server rejects one to
/// a missing node only after the job is queued.
fn check_links(nodes: &Map<String, Value>) -> Result<(), String> {
    for (id, node) in nodes {
        let class = node.get("class_type").and_then(Value::as_str).unwrap_or("");
        let Some(inputs) = node.get("inputs").and_then(Value::as_object) else {
            continue;
        };
        for (input, value) in inputs {
            let Some(list) = value.as_array() else {
                continue;
            };
            let at = format!("input '{input}' of node {id} ({class})");
            match list.as_slice() {
                [Value::String(from), slot] if slot.is_u64() => {
                    if !nodes.contains_key(from) {
                        return Err(format!(
                            "{at} links to node {from}, which is not in the workflow"
                        ));
                    }
                }
                _ => {
                    return Err(format!(
                        "{at} is the list {value}, not a link [\"node id\", output index]"
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ui_format_is_refused_with_export_instructions() {
        let err = parse(
            Path::new("w.json"),
            br#"{"nodes": [], "links": [], "version": 0.4}"#,
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("UI-format"), "{text}");
        assert!(text.contains("Export (API)"), "{text}");
    }

    #[test]
    fn non_workflows_are_refused() {
        assert!(matches!(
            parse(Path::new("w.json"), b"[1]"),
            Err(WorkflowError::Invalid { .. })
        ));
        assert!(matches!(
            parse(Path::new("w.json"), b"{\"1\": {}}"),
            Err(WorkflowError::Invalid { .. })
        ));
        assert!(matches!(
            parse(Path::new("w.json"), b"{oops"),
            Err(WorkflowError::NotJson { .. })
        ));
    }

    #[test]
    fn links_must_point_at_nodes_of_the_workflow() {
        let err = parse(
            Path::new("w.json"),
            br#"{"1": {"class_type": "X", "inputs": {"a": ["2", 0]}}}"#,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "w.json has a broken link: input 'a' of node 1 (X) links to node 2, which is not in the workflow"
        );
        let err = parse(
            Path::new("w.json"),
            br#"{"1": {"class_type": "X", "inputs": {"a": [1, 0]}}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("not a link"), "{err}");
    }

    #[test]
    fn sha256_is_of_the_bytes() {
        let w = parse(
            Path::new("w.json"),
            br#"{"1": {"class_type": "X", "inputs": {}}}"#,
        )
        .unwrap();
        assert_eq!(w.sha256.len(), 64);
        assert_eq!(
            w.sha256,
            hex::encode(Sha256::digest(
                br#"{"1": {"class_type": "X", "inputs": {}}}"#
            ))
        );
    }
}
