//! What a node reports it made: the `output` object of an `executed`
//! message, or one node's entry in a `/history/{id}` `outputs` (protocol.md
//! §6.1). Every list of `{filename, subfolder, type}` objects, under any key
//! (`images`, `gifs`, `audio`, `video`, `latents`, `3d`, a custom pack's
//! own), is a file to fetch from `/view`; `text` lists strings (PreviewAny,
//! captioning nodes). Other keys (`animated`, `frame_rate`…) carry no files.
//!
//! Pure: no I/O. It owns the parsing rules and the de-duplication of a file
//! listed twice; it must not know how or where outputs are saved.

use std::collections::HashSet;

use indexmap::IndexMap;
use serde_json::{Map, Value};

use super::protocol::ImageRef;

/// Keys under which a list must hold only file objects: a malformed item
/// there is an error, never a silently shorter list.
const FILE_KEYS: &[&str] = &["images", "gifs", "audio", "video", "latents", "3d"];

/// One thing a node made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A file on the server. Its `filename` is already reduced to its last
    /// path component (the server's own `/view` does the same), so it is
    /// only ever a request parameter and an extension, never a local path.
    File(ImageRef),
    /// A text the node showed (`text`), UTF-8.
    Text(String),
}

/// A node's output that does not have the documented shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node {node}: malformed output '{key}': {why}")]
pub struct OutputsError {
    /// The node that reported it.
    pub node: String,
    /// The key of its `output` object.
    pub key: String,
    /// What is wrong.
    pub why: String,
}

/// Parses one node's `output` object into its files and texts, in the
/// server's key order. A file listed under two keys (a pack reporting it
/// under `gifs` and `video`) appears once. `null` means no outputs.
pub fn parse_node(node: &str, output: &Value) -> Result<Vec<Output>, OutputsError> {
    let err = |key: &str, why: String| OutputsError {
        node: node.to_string(),
        key: key.to_string(),
        why,
    };
    let map = match output {
        Value::Null => return Ok(Vec::new()),
        Value::Object(map) => map,
        other => return Err(err("", format!("expected an object, got {}", kind(other)))),
    };
    let mut out: Vec<Output> = Vec::new();
    let mut seen = HashSet::new();
    for (key, value) in map {
        if key == "text" {
            if !value.is_array() && !value.is_string() {
                return Err(err(
                    key,
                    format!("expected a list of strings, got {}", kind(value)),
                ));
            }
            texts(value, &mut out).map_err(|why| err(key, why))?;
            continue;
        }
        let known = FILE_KEYS.contains(&key.as_str());
        let items = match value {
            Value::Array(items) => items,
            other if known => {
                return Err(err(key, format!("expected a list, got {}", kind(other))));
            }
            _ => continue,
        };
        // A custom key is a file list when any item names a file; then every
        // item must be one.
        let names_a_file = items
            .iter()
            .any(|i| i.as_object().is_some_and(|o| o.contains_key("filename")));
        if !known && !names_a_file {
            continue;
        }
        for (i, item) in items.iter().enumerate() {
            let file = file_ref(item).map_err(|why| err(key, format!("item {i}: {why}")))?;
            if seen.insert((
                file.kind.clone(),
                file.subfolder.clone(),
                file.filename.clone(),
            )) {
                out.push(Output::File(file));
            }
        }
    }
    Ok(out)
}

/// The strings of a `text` value: a string, or a list of them; nested lists
/// (a node fed a list) are flattened and numbers or booleans written as
/// JSON. Anything else is malformed.
fn texts(value: &Value, out: &mut Vec<Output>) -> Result<(), String> {
    match value {
        Value::String(s) => out.push(Output::Text(s.clone())),
        Value::Number(_) | Value::Bool(_) => out.push(Output::Text(value.to_string())),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                texts(item, out).map_err(|why| format!("item {i}: {why}"))?;
            }
        }
        other => return Err(format!("{}, not a string", kind(other))),
    }
    Ok(())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A `{filename, subfolder, type}` object, every field a string.
fn file_ref(item: &Value) -> Result<ImageRef, String> {
    let Some(obj) = item.as_object() else {
        return Err(format!("expected a file object, got {}", kind(item)));
    };
    let field = |name: &str| -> Result<&str, String> {
        match obj.get(name) {
            Some(Value::String(s)) => Ok(s),
            Some(other) => Err(format!("'{name}' is {}, not a string", kind(other))),
            None => Err(format!("'{name}' is missing")),
        }
    };
    let raw = field("filename")?;
    let subfolder = field("subfolder")?;
    let kind = field("type")?;
    let base = raw.rsplit(['/', '\\']).next().unwrap_or_default();
    if base.is_empty() || base == "." || base == ".." || base.contains('\0') {
        return Err(format!("unusable file name {raw:?}"));
    }
    Ok(ImageRef {
        filename: base.to_string(),
        subfolder: subfolder.to_string(),
        kind: kind.to_string(),
    })
}

/// A job's outputs as the server reported them, node by node: from
/// `executed` messages as they come, or from a history entry after a
/// reconnect. A node's latest report replaces its earlier one (the history
/// repeats what `executed` said), and the first malformed report is kept
/// as the job's error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobOutputs {
    nodes: IndexMap<String, Vec<Output>>,
    error: Option<OutputsError>,
}

impl JobOutputs {
    /// Every node's outputs of a history entry's `outputs`.
    pub fn from_history(outputs: &Map<String, Value>) -> JobOutputs {
        let mut all = JobOutputs::default();
        for (node, output) in outputs {
            all.add(node, output);
        }
        all
    }

    /// Records one node's report (an `executed` message's `output`).
    pub fn add(&mut self, node: &str, output: &Value) {
        match parse_node(node, output) {
            Ok(items) => {
                self.nodes.insert(node.to_string(), items);
            }
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
    }

    /// One node's report (an `executed` message's `output`), alone.
    pub fn of_node(node: &str, output: &Value) -> JobOutputs {
        let mut one = JobOutputs::default();
        one.add(node, output);
        one
    }

    /// Takes in a later report: each of its nodes replaces that node's
    /// earlier report (the history repeats what `executed` said), and the
    /// first error is kept.
    pub fn merge(&mut self, later: JobOutputs) {
        self.nodes.extend(later.nodes);
        if let Some(e) = later.error {
            self.error.get_or_insert(e);
        }
    }

    /// Adds one output to a node's list (tests and stand-ins build reports
    /// this way).
    pub fn push(&mut self, node: &str, item: Output) {
        self.nodes.entry(node.to_string()).or_default().push(item);
    }

    /// Whether no node reported anything and nothing was malformed.
    pub fn is_empty(&self) -> bool {
        self.error.is_none() && self.nodes.values().all(Vec::is_empty)
    }

    /// The first malformed report, if any: a job with one is not `ok`.
    pub fn error(&self) -> Option<&OutputsError> {
        self.error.as_ref()
    }

    /// Every output with its node, in report order; a file reported by two
    /// nodes is listed once, under the first.
    pub fn items(&self) -> Vec<(&str, &Output)> {
        // A node may list thousands of frames: a set, not a scan.
        let mut seen: HashSet<(&str, &str, &str)> = HashSet::new();
        let mut out = Vec::new();
        for (node, items) in &self.nodes {
            for item in items {
                if let Output::File(f) = item
                    && !seen.insert((&f.kind, &f.subfolder, &f.filename))
                {
                    continue;
                }
                out.push((node.as_str(), item));
            }
        }
        out
    }

    /// Each node's file of one image of a batch of `size` (a pack's job
    /// keeps its own): the node's `index`-th file. A node that did not
    /// report one file per batch image cannot say which is whose: that is
    /// the error (one line naming the node).
    pub fn batch_item(&self, index: u64, size: u64) -> Result<JobOutputs, String> {
        let mut one = JobOutputs {
            nodes: IndexMap::new(),
            error: self.error.clone(),
        };
        for (node, items) in &self.nodes {
            let files: Vec<&Output> = items
                .iter()
                .filter(|o| matches!(o, Output::File(_)))
                .collect();
            let own = files
                .get(index as usize)
                .filter(|_| files.len() as u64 == size);
            let Some(own) = own else {
                return Err(format!(
                    "node {node} reported {} file{} for a batch of {size}: the image of batch index {index} cannot be told",
                    files.len(),
                    if files.len() == 1 { "" } else { "s" }
                ));
            };
            one.nodes.insert(node.clone(), vec![(*own).clone()]);
        }
        Ok(one)
    }

    /// The job's only text, when it made exactly one (for the log's `text`
    /// column).
    pub fn single_text(&self) -> Option<&str> {
        let mut texts = self.nodes.values().flatten().filter_map(|o| match o {
            Output::Text(t) => Some(t.as_str()),
            Output::File(_) => None,
        });
        let first = texts.next()?;
        texts.next().is_none().then_some(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn file(name: &str, sub: &str, kind: &str) -> Output {
        Output::File(ImageRef {
            filename: name.into(),
            subfolder: sub.into(),
            kind: kind.into(),
        })
    }

    #[test]
    fn a_batch_item_is_each_nodes_file_at_its_index_or_a_line_naming_the_node() {
        let mut outputs = JobOutputs::default();
        for i in 0..3 {
            outputs.push("9", file(&format!("p_{i:05}_.png"), "cb", "output"));
        }
        outputs.push("12", file("t_00001_.png", "", "temp"));
        let mut two_nodes = outputs.clone();
        let only_9 = {
            let mut o = JobOutputs::default();
            for i in 0..3 {
                o.push("9", file(&format!("p_{i:05}_.png"), "cb", "output"));
            }
            o
        };
        let own = only_9.batch_item(2, 3).unwrap();
        assert_eq!(own.items(), [("9", &file("p_00002_.png", "cb", "output"))]);
        // A node with one file for a batch of 3 cannot say whose it is.
        two_nodes.push("13", file("x.png", "", "output"));
        assert_eq!(
            outputs.batch_item(1, 3).unwrap_err(),
            "node 12 reported 1 file for a batch of 3: the image of batch index 1 cannot be told"
        );
        assert!(two_nodes.batch_item(0, 3).is_err());
        assert!(only_9.batch_item(0, 2).is_err(), "3 files for a batch of 2");
    }

    #[test]
    fn every_recorded_kind_is_a_file_or_a_text() {
        let cases = [
            (
                json!({"animated": [true], "images": [{"filename": "anim_00001_.webp", "subfolder": "rec/kinds", "type": "output"}]}),
                vec![file("anim_00001_.webp", "rec/kinds", "output")],
            ),
            (
                json!({"audio": [{"filename": "tone_00001_.flac", "subfolder": "", "type": "output"}]}),
                vec![file("tone_00001_.flac", "", "output")],
            ),
            (
                json!({"latents": [{"filename": "l_00001_.latent", "subfolder": "x", "type": "output"}]}),
                vec![file("l_00001_.latent", "x", "output")],
            ),
            (
                json!({"3d": [{"filename": "m_00001_.glb", "subfolder": "mesh", "type": "output"}]}),
                vec![file("m_00001_.glb", "mesh", "output")],
            ),
            (
                json!({"text": ["caption for color 9382456"]}),
                vec![Output::Text("caption for color 9382456".into())],
            ),
            (
                json!({"text": [["a", "b"], 3, true]}),
                vec![
                    Output::Text("a".into()),
                    Output::Text("b".into()),
                    Output::Text("3".into()),
                    Output::Text("true".into()),
                ],
            ),
            (
                json!({"gifs": [{"filename": "v_00001.mp4", "subfolder": "", "type": "output", "format": "video/h264-mp4", "frame_rate": 8.0, "workflow": "v_00001.png", "fullpath": "/srv/out/v_00001.mp4"}]}),
                vec![file("v_00001.mp4", "", "output")],
            ),
            (
                json!({"my_pack_files": [{"filename": "a.bin", "subfolder": "", "type": "temp"}], "frames": [3, 4], "note": "x"}),
                vec![file("a.bin", "", "temp")],
            ),
            (Value::Null, vec![]),
            (json!({}), vec![]),
        ];
        for (output, want) in cases {
            assert_eq!(parse_node("9", &output).unwrap(), want, "{output}");
        }
    }

    #[test]
    fn a_file_listed_under_two_keys_appears_once() {
        let f = json!({"filename": "v.mp4", "subfolder": "", "type": "output"});
        let got = parse_node("4", &json!({"gifs": [f], "video": [f]})).unwrap();
        assert_eq!(got, vec![file("v.mp4", "", "output")]);
        let mut all = JobOutputs::default();
        all.add("4", &json!({"gifs": [f]}));
        all.add("5", &json!({"video": [f]}));
        assert_eq!(all.items().len(), 1, "two nodes naming one file");
    }

    #[test]
    fn malformed_entries_name_the_node() {
        let bad = [
            (
                json!({"images": [{"filename": "x.png", "subfolder": null, "type": "output"}]}),
                "node 7: malformed output 'images': item 0: 'subfolder' is null, not a string",
            ),
            (
                json!({"audio": [{"filename": "x.flac", "type": "output"}]}),
                "node 7: malformed output 'audio': item 0: 'subfolder' is missing",
            ),
            (
                json!({"images": "x.png"}),
                "node 7: malformed output 'images': expected a list, got a string",
            ),
            (
                json!({"gifs": [{"filename": "x.gif", "subfolder": "", "type": "output"}, 5]}),
                "node 7: malformed output 'gifs': item 1: expected a file object, got a number",
            ),
            (
                json!({"custom": [{"filename": "..", "subfolder": "", "type": "output"}]}),
                "node 7: malformed output 'custom': item 0: unusable file name \"..\"",
            ),
            (
                json!({"text": ["ok", null]}),
                "node 7: malformed output 'text': item 1: null, not a string",
            ),
            (
                json!({"text": [["a", {"b": 1}]]}),
                "node 7: malformed output 'text': item 0: item 1: an object, not a string",
            ),
            (
                json!({"text": 5}),
                "node 7: malformed output 'text': expected a list of strings, got a number",
            ),
            (
                json!([1]),
                "node 7: malformed output '': expected an object, got a list",
            ),
        ];
        for (output, want) in bad {
            assert_eq!(parse_node("7", &output).unwrap_err().to_string(), want);
        }
        let mut all = JobOutputs::default();
        all.add("7", &bad_images());
        all.add("8", &json!({"text": ["fine"]}));
        assert!(all.error().is_some_and(|e| e.node == "7"));
    }

    fn bad_images() -> Value {
        json!({"images": [{"filename": "x.png"}]})
    }

    #[test]
    fn server_names_keep_only_their_last_component() {
        let name = |n: &str| {
            parse_node(
                "9",
                &json!({"images": [{"filename": n, "subfolder": "s", "type": "output"}]}),
            )
            .map(|v| match &v[0] {
                Output::File(f) => f.filename.clone(),
                Output::Text(_) => unreachable!(),
            })
        };
        assert_eq!(name("x_00001_.png").unwrap(), "x_00001_.png");
        assert_eq!(name("../../x.png").unwrap(), "x.png");
        assert_eq!(name("/srv/comfy/output/x.webm").unwrap(), "x.webm");
        assert_eq!(name("..\\..\\x.flac").unwrap(), "x.flac");
        assert_eq!(name("C:\\ComfyUI\\output\\x.PNG").unwrap(), "x.PNG");
        let long = "é".repeat(300) + ".png";
        assert_eq!(name(&long).unwrap(), long);
        assert!(name("x\0.png").is_err(), "a NUL is never sent back");
        assert!(name("a/..").is_err());
        assert!(name("dir/").is_err());
        assert!(name("").is_err());
    }

    #[test]
    fn thousands_of_frames_are_listed_quickly_and_once() {
        let frames: Vec<Value> = (0..20_000)
            .map(|i| json!({"filename": format!("f_{i:05}_.png"), "subfolder": "", "type": "output"}))
            .collect();
        let mut all = JobOutputs::default();
        all.add("9", &json!({"images": frames, "gifs": frames}));
        assert_eq!(all.items().len(), 20_000);
    }

    #[test]
    fn history_and_messages_agree_and_the_single_text_is_found() {
        let history = json!({
            "13": {"text": ["a caption"]},
            "7": {"images": [{"filename": "a.png", "subfolder": "", "type": "output"}]},
        });
        let mut all = JobOutputs::from_history(history.as_object().unwrap());
        // The same report again (a late `executed`): nothing doubles.
        all.add("7", &history["7"]);
        assert_eq!(all.items().len(), 2);
        assert_eq!(all.single_text(), Some("a caption"));
        all.add("14", &json!({"text": ["b", "c"]}));
        assert_eq!(all.single_text(), None);
    }
}
