//! Finding and loading workflow files by name, with the sha256 of their
//! bytes: API-format JSON as it is, UI-format JSON (and PNG/WebP images that
//! embed a workflow or a prompt) converted to the API format once, here,
//! with the catalogue the caller gives (the built-in one by default).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::convert::{self, ConvertError, Format, NodeDefs, Report, embedded};
use crate::manifest::{MAX_MANIFEST_BYTES, Manifest, normalize, read_capped};

/// The catalogue UI-format workflows are converted with: the caller's (a
/// server's), or entries fetched per class as workflows need them, else the
/// built-in one, parsed only when a UI file needs it. With `loads`, a
/// workflow named by its path is taken from there ([`Loads`]).
#[derive(Default)]
pub(crate) struct Catalogues<'a> {
    given: Option<&'a NodeDefs>,
    fetch: Option<FetchClasses<'a>>,
    fetched: RefCell<(NodeDefs, HashSet<String>)>,
    builtin: OnceLock<NodeDefs>,
    loads: Option<&'a Loads>,
}

/// Workflow files read, hashed and loaded once each, by path: a caller
/// that plans many manifests naming the same files (`rerun` plans a
/// one-job manifest per row of a log) pays for each file once, and every
/// plan is made from the same bytes, whatever happens to the file since.
/// A UI-format file is converted with the built-in catalogue.
#[derive(Debug, Default)]
pub struct Loads(RefCell<HashMap<PathBuf, Read>>);

/// One file as [`Loads`] read it.
#[derive(Debug)]
struct Read {
    /// sha256 of its bytes, or why they could not be read.
    sha256: Result<String, String>,
    loaded: Result<Loaded, WorkflowError>,
}

impl Loads {
    /// The file at `path`, read and loaded now unless it was before.
    fn read<R>(&self, path: &Path, f: impl FnOnce(&Read) -> R) -> R {
        if let Some(read) = self.0.borrow().get(path) {
            return f(read);
        }
        let unreadable = |why: String, error: WorkflowError| Read {
            sha256: Err(why),
            loaded: Err(error),
        };
        let path_buf = path.to_path_buf();
        let read = if path.is_dir() {
            unreadable(
                "it is a directory".into(),
                WorkflowError::Directory { path: path_buf },
            )
        } else {
            match read_capped(path, MAX_MANIFEST_BYTES) {
                Ok(bytes) => Read {
                    sha256: Ok(hex::encode(Sha256::digest(&bytes))),
                    loaded: parse_any(path, &bytes, &Catalogues::new(None)),
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => unreadable(
                    e.to_string(),
                    WorkflowError::NotFound {
                        tried: vec![path_buf],
                    },
                ),
                Err(e) => unreadable(
                    e.to_string(),
                    WorkflowError::Read {
                        path: path_buf,
                        cause: e.to_string(),
                    },
                ),
            }
        };
        let out = f(&read);
        self.0.borrow_mut().insert(path.to_path_buf(), read);
        out
    }

    /// The sha256 of the bytes of the file at `path` (read once), or why
    /// they cannot be read.
    pub fn sha256(&self, path: &Path) -> Result<String, String> {
        self.read(path, |r| r.sha256.clone())
    }
}

/// Fetches the catalogue entries of the given classes (e.g. one
/// `/object_info/{class}` each); classes it cannot find are left out.
pub type FetchClasses<'a> = &'a dyn Fn(&[String]) -> NodeDefs;

impl std::fmt::Debug for Catalogues<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalogues")
            .field("given", &self.given.is_some())
            .field("fetch", &self.fetch.is_some())
            .finish()
    }
}

impl<'a> Catalogues<'a> {
    /// Converts with `given`, or the built-in catalogue when `None`.
    pub(crate) fn new(given: Option<&'a NodeDefs>) -> Catalogues<'a> {
        Catalogues {
            given,
            ..Catalogues::default()
        }
    }

    /// Converts with entries `fetch` returns, asked for each UI-format
    /// workflow's classes not fetched before (an API-only manifest never
    /// calls it).
    pub(crate) fn per_class(fetch: FetchClasses<'a>) -> Catalogues<'a> {
        Catalogues {
            fetch: Some(fetch),
            ..Catalogues::default()
        }
    }

    /// Takes the workflows named by a path from `loads` (built-in
    /// catalogue), the others as [`Catalogues::new`] does.
    pub(crate) fn with_loads(loads: &'a Loads) -> Catalogues<'a> {
        Catalogues {
            loads: Some(loads),
            ..Catalogues::default()
        }
    }

    /// Runs `f` with a catalogue that has every class `ui` uses (that the
    /// source knows).
    fn with<R>(&self, ui: &Map<String, Value>, f: impl FnOnce(&NodeDefs) -> R) -> R {
        if let Some(c) = self.given {
            return f(c);
        }
        let Some(fetch) = self.fetch else {
            return f(self.builtin.get_or_init(NodeDefs::builtin));
        };
        let mut cache = self.fetched.borrow_mut();
        let missing: Vec<String> = convert::classes_used(ui)
            .into_iter()
            .filter(|c| !cache.1.contains(c))
            .collect();
        if !missing.is_empty() {
            let part = fetch(&missing);
            cache.0.extend(part);
            cache.1.extend(missing);
        }
        f(&cache.0)
    }
}

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
    /// A UI-format workflow that cannot be converted (every problem).
    Convert {
        path: PathBuf,
        errors: Vec<ConvertError>,
    },
    /// Neither an API-format nor a UI-format workflow, nor an image that
    /// embeds one.
    Neither { path: PathBuf, why: String },
    /// A UI-format workflow with nothing the server would run.
    EmptyUi { path: PathBuf },
}

impl WorkflowError {
    /// One line per problem (a conversion may find several).
    pub(crate) fn lines(&self) -> Vec<String> {
        match self {
            WorkflowError::Convert { path, errors } => errors
                .iter()
                .map(|e| format!("{}: {e}", path.display()))
                .collect(),
            other => vec![other.to_string()],
        }
    }
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
            WorkflowError::Convert { .. } => f.write_str(&self.lines().join("; ")),
            WorkflowError::EmptyUi { path } => write!(
                f,
                "{} is a UI-format workflow with no node the server would run (only notes, \
                 reroutes, primitives, muted or bypassed nodes)",
                path.display()
            ),
            WorkflowError::Neither { path, why } => write!(
                f,
                "{} is neither an API-format nor a UI-format ComfyUI workflow: {why}",
                path.display()
            ),
        }
    }
}

/// A loaded workflow: its bytes' hash and its nodes (API format).
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    pub(crate) path: PathBuf,
    /// sha256 of the file as written (not of the converted prompt), so an
    /// edited file is noticed.
    pub(crate) sha256: String,
    pub(crate) nodes: Map<String, Value>,
    /// What conversion did, for a UI-format file.
    pub(crate) report: Option<Report>,
    /// The inputs conversion left for the manifest to set (live captures).
    pub(crate) needs: Vec<convert::NeedsValue>,
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

/// Finds and loads the workflow `name`, converting a UI-format one.
pub(crate) fn load(
    manifest: &Manifest,
    name: &str,
    catalogues: &Catalogues<'_>,
) -> Result<Loaded, WorkflowError> {
    let tried = candidates(manifest, name);
    if let (Some(loads), Some(entry)) = (
        catalogues.loads,
        manifest.workflows.iter().find(|w| w.name == name),
    ) {
        return loads.read(&entry.path, |r| r.loaded.clone());
    }
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
    parse_any(&path, &bytes, catalogues)
}

/// Parses workflow bytes read from `path`: API-format JSON, UI-format JSON
/// (converted), or a PNG/WebP embedding either (`workflow` preferred: it
/// is what the frontend saved; `prompt` is what it sent).
pub(crate) fn parse_any(
    path: &Path,
    bytes: &[u8],
    catalogues: &Catalogues<'_>,
) -> Result<Loaded, WorkflowError> {
    let sha256 = hex::encode(Sha256::digest(bytes));
    let text: std::borrow::Cow<'_, [u8]> = if embedded::image_kind(bytes).is_some() {
        match embedded::read(bytes).into_text() {
            Ok(t) => t.into_bytes().into(),
            Err(why) => {
                return Err(WorkflowError::Neither {
                    path: path.to_owned(),
                    why,
                });
            }
        }
    } else {
        // A byte order mark (Windows Notepad writes one) is no content:
        // browsers drop it when the frontend opens the file.
        bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes).into()
    };
    let value: Value = serde_json::from_slice(&text).map_err(|e| WorkflowError::NotJson {
        path: path.to_owned(),
        cause: e.to_string(),
    })?;
    match (convert::detect(&value), value) {
        (Format::Ui, Value::Object(ui)) => {
            let done = catalogues
                .with(&ui, |c| convert::convert(&ui, c))
                .map_err(|e| WorkflowError::Convert {
                    path: path.to_owned(),
                    errors: e.0,
                })?;
            if done.prompt.is_empty() {
                return Err(WorkflowError::EmptyUi {
                    path: path.to_owned(),
                });
            }
            let mut loaded = api(path, done.prompt, sha256)?;
            loaded.report = Some(done.report);
            loaded.needs = done.needs;
            Ok(loaded)
        }
        // Not quite API format: `api` says what is wrong with it.
        (_, Value::Object(nodes)) => api(path, nodes, sha256),
        _ => Err(WorkflowError::Neither {
            path: path.to_owned(),
            why: "the top level is not an object".into(),
        }),
    }
}

/// Parses API-format workflow bytes read from `path` (tests).
#[cfg(test)]
pub(crate) fn parse(path: &Path, bytes: &[u8]) -> Result<Loaded, WorkflowError> {
    parse_any(path, bytes, &Catalogues::new(None))
}

fn api(path: &Path, nodes: Map<String, Value>, sha256: String) -> Result<Loaded, WorkflowError> {
    let invalid = |cause: String| WorkflowError::Invalid {
        path: path.to_owned(),
        cause,
    };
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
        sha256,
        nodes,
        report: None,
        needs: Vec::new(),
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

    const UI: &[u8] = br#"{"nodes": [
        {"id": 4, "type": "CheckpointLoaderSimple", "title": "Base", "widgets_values": ["a.safetensors"],
         "outputs": [{"type": "MODEL", "links": []}, {"type": "CLIP", "links": [1]}, {"type": "VAE", "links": []}]},
        {"id": 6, "type": "CLIPTextEncode", "widgets_values": ["a fox // draft"],
         "inputs": [{"name": "clip", "type": "CLIP", "link": 1}]}],
        "links": [[1, 4, 1, 6, 0, "CLIP"]], "version": 0.4}"#;

    #[test]
    fn ui_format_is_converted_and_hashed_as_written() {
        let w = parse(Path::new("w.json"), UI).unwrap();
        assert_eq!(w.sha256, hex::encode(Sha256::digest(UI)));
        assert_eq!(w.nodes["6"]["inputs"]["text"], "a fox ");
        assert_eq!(w.nodes["6"]["inputs"]["clip"], serde_json::json!(["4", 1]));
        assert_eq!(w.nodes["4"]["_meta"]["title"], "Base");
        assert!(w.report.is_some());
    }

    #[test]
    fn a_png_embedding_a_workflow_is_converted() {
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut data = b"workflow\0".to_vec();
        data.extend_from_slice(UI);
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        png.extend_from_slice(b"tEXt");
        png.extend_from_slice(&data);
        png.extend_from_slice(&[0; 4]);
        let w = parse(Path::new("w.png"), &png).unwrap();
        assert_eq!(w.nodes["6"]["class_type"], "CLIPTextEncode");
        assert_eq!(w.sha256, hex::encode(Sha256::digest(&png)));
        let bare = b"\x89PNG\r\n\x1a\n\0\0\0\0IEND\0\0\0\0";
        let err = parse(Path::new("w.png"), bare).unwrap_err();
        assert!(
            err.to_string().contains("no 'workflow' or 'prompt'"),
            "{err}"
        );
    }

    #[test]
    fn unknown_classes_are_all_listed() {
        let ui = br#"{"nodes": [
            {"id": 1, "type": "FancyUpscale", "title": "Up", "properties": {"cnr_id": "fancy-pack"}},
            {"id": 2, "type": "OtherThing", "properties": {"aux_id": "me/other", "Node name for S&R": "Other"}}],
            "links": []}"#;
        let err = parse(Path::new("w.json"), ui).unwrap_err();
        let lines = err.lines();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].contains("node 1 ('Up') has class 'FancyUpscale'"),
            "{lines:?}"
        );
        assert!(
            lines[0].contains("custom node pack 'fancy-pack'"),
            "{lines:?}"
        );
        assert!(lines[1].contains("'me/other'"), "{lines:?}");
    }

    #[test]
    fn non_workflows_are_refused() {
        assert!(matches!(
            parse(Path::new("w.json"), b"[1]"),
            Err(WorkflowError::Neither { .. })
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
