//! Wire types of the ComfyUI API as the real server sends them
//! (`protocol.md`): websocket messages, binary frames and HTTP bodies.
//! Only the fields the client acts on are typed; everything else is ignored
//! so that a newer server's extra fields never break a run.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One JSON websocket message, `{"type": T, "data": D}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum WsMessage {
    /// Queue size broadcast; the first frame of a connection also carries `sid`.
    Status {
        /// The client id the server registered this socket under.
        #[serde(default)]
        sid: Option<String>,
    },
    /// A prompt left the queue and started executing.
    ExecutionStart {
        /// The prompt.
        prompt_id: String,
    },
    /// The nodes that will not run because their outputs are cached.
    ExecutionCached {
        /// The prompt.
        prompt_id: String,
        /// Cached node ids.
        #[serde(default)]
        nodes: Vec<String>,
    },
    /// A node started, or (`node: null`) the prompt is completely done and
    /// its history written. After a reconnect `prompt_id` is absent.
    Executing {
        /// The node, or `None` when the prompt is done.
        node: Option<String>,
        /// The prompt (absent in the reconnect replay).
        #[serde(default)]
        prompt_id: Option<String>,
    },
    /// An output node returned its UI data (images), or a cached one replayed it.
    Executed {
        /// The node.
        node: String,
        /// `{"images": [ImageRef…]}` for image outputs.
        #[serde(default)]
        output: Option<Value>,
        /// The prompt.
        prompt_id: String,
    },
    /// A ProgressBar step; values may be floats.
    Progress {
        /// Current step.
        value: f64,
        /// Total steps.
        max: f64,
        /// The prompt (absent for some broadcast sources).
        #[serde(default)]
        prompt_id: Option<String>,
        /// The node.
        #[serde(default)]
        node: Option<String>,
    },
    /// The prompt executed successfully (history is written only afterwards).
    ExecutionSuccess {
        /// The prompt.
        prompt_id: String,
    },
    /// A node raised an exception.
    ExecutionError(ExecutionError),
    /// The prompt was interrupted.
    ExecutionInterrupted {
        /// The prompt.
        prompt_id: String,
        /// The node that saw the interrupt flag.
        #[serde(default)]
        node_id: Option<String>,
        /// Its class.
        #[serde(default)]
        node_type: Option<String>,
    },
    /// Any message type the client does not act on (`progress_state`,
    /// `feature_flags`, `logs`, extension messages…).
    #[serde(skip)]
    Other,
}

/// A message's type and its data left unparsed: most messages are progress
/// steps or types the client ignores, and none needs a JSON tree.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    data: Option<&'a serde_json::value::RawValue>,
}

impl WsMessage {
    /// Parses a text frame. Types the client does not act on become
    /// [`WsMessage::Other`] without looking at their data, so an extension's
    /// or a newer server's messages never break a run.
    pub fn parse(text: &str) -> Result<WsMessage, serde_json::Error> {
        WsMessage::parse_skipping(text, &[])
    }

    /// [`WsMessage::parse`], with the types in `skip` ignored as well.
    pub fn parse_skipping(text: &str, skip: &[&str]) -> Result<WsMessage, serde_json::Error> {
        let ignored = |kind: &str| !KNOWN.contains(&kind) || skip.contains(&kind);
        // The server writes the type first (`{"type": "progress_state", …`):
        // the kilobytes of a type the client ignores are not even scanned.
        if leading_type(text).is_some_and(ignored) {
            return Ok(WsMessage::Other);
        }
        let Envelope { kind, data } = serde_json::from_str(text)?;
        if ignored(&kind) {
            return Ok(WsMessage::Other);
        }
        // The tag first, so the data is read straight into its variant
        // (the server may send `data` first; serde would buffer it then).
        let data = data.map_or("null", |d| d.get());
        let mut tagged = String::with_capacity(data.len() + kind.len() + 20);
        tagged.push_str("{\"type\":\"");
        tagged.push_str(&kind);
        tagged.push_str("\",\"data\":");
        tagged.push_str(data);
        tagged.push('}');
        serde_json::from_str(&tagged)
    }
}

/// The message types the client acts on.
const KNOWN: [&str; 9] = [
    "status",
    "execution_start",
    "execution_cached",
    "executing",
    "executed",
    "progress",
    "execution_success",
    "execution_error",
    "execution_interrupted",
];

/// The type of a message that starts `{"type": "<plain name>"`, or `None`
/// when it does not start so (then the whole message is parsed).
fn leading_type(text: &str) -> Option<&str> {
    let rest = text.trim_start().strip_prefix('{')?.trim_start();
    let rest = rest.strip_prefix("\"type\"")?.trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    let end = rest.find(['"', '\\'])?;
    // An escape in the name: the full parse reads it.
    (rest.as_bytes()[end] == b'"').then(|| &rest[..end])
}

/// The data of an `execution_error` message.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ExecutionError {
    /// The prompt.
    pub prompt_id: String,
    /// The failing node.
    #[serde(default)]
    pub node_id: Option<String>,
    /// Its class.
    #[serde(default)]
    pub node_type: Option<String>,
    /// The exception's text.
    #[serde(default)]
    pub exception_message: String,
    /// The exception's Python type.
    #[serde(default)]
    pub exception_type: String,
}

impl ExecutionError {
    /// One line for the log: `node 9 (SaveImage): ValueError: message`.
    pub fn one_line(&self) -> String {
        let node = self.node_id.as_deref().unwrap_or("?");
        let class = self.node_type.as_deref().unwrap_or("?");
        one_line(&format!(
            "node {node} ({class}): {}: {}",
            self.exception_type,
            self.exception_message.trim()
        ))
    }
}

impl WsMessage {
    /// The prompt a message belongs to, if it names one.
    pub fn prompt_id(&self) -> Option<&str> {
        match self {
            WsMessage::ExecutionStart { prompt_id }
            | WsMessage::ExecutionCached { prompt_id, .. }
            | WsMessage::Executed { prompt_id, .. }
            | WsMessage::ExecutionSuccess { prompt_id }
            | WsMessage::ExecutionInterrupted { prompt_id, .. }
            | WsMessage::ExecutionError(ExecutionError { prompt_id, .. }) => Some(prompt_id),
            WsMessage::Executing { prompt_id, .. } | WsMessage::Progress { prompt_id, .. } => {
                prompt_id.as_deref()
            }
            WsMessage::Status { .. } | WsMessage::Other => None,
        }
    }
}

/// A reference to a file the server made, as in `executed.output.images`
/// and history outputs. Never used as a local path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    /// The server's file name.
    pub filename: String,
    /// The server's subfolder.
    #[serde(default)]
    pub subfolder: String,
    /// `output`, `temp` or `input`.
    #[serde(rename = "type", default = "default_output")]
    pub kind: String,
}

fn default_output() -> String {
    "output".to_string()
}

/// The image references in one node's `output` object (`{"images": [...]}`);
/// other UI keys (text, latents) are ignored.
pub fn images_of(output: &Value) -> Vec<ImageRef> {
    output
        .get("images")
        .and_then(|v| serde_json::from_value::<Vec<ImageRef>>(v.clone()).ok())
        .unwrap_or_default()
}

/// A binary websocket frame: previews and SaveImageWebsocket outputs.
#[derive(Debug, Clone, PartialEq)]
pub enum BinaryFrame {
    /// Type 1: `[1][fmt][bytes]`, fmt 1 = JPEG, 2 = PNG; carries no prompt id.
    Image {
        /// The image's file extension, from `fmt`.
        ext: &'static str,
        /// The encoded image.
        bytes: bytes::Bytes,
    },
    /// Type 4: `[4][len][json][bytes]`, with the node and prompt.
    ImageWithMetadata {
        /// The node that sent it.
        node_id: String,
        /// The prompt it belongs to.
        prompt_id: Option<String>,
        /// The image's file extension, from `image_type`.
        ext: &'static str,
        /// The encoded image.
        bytes: bytes::Bytes,
    },
    /// Anything else (text frames, unknown types).
    Other,
}

#[derive(Deserialize)]
struct FrameMeta {
    node_id: String,
    #[serde(default)]
    prompt_id: Option<String>,
    #[serde(default)]
    image_type: String,
}

impl BinaryFrame {
    /// Parses a frame; big-endian u32 headers as `server.py:encode_bytes`.
    pub fn parse(data: bytes::Bytes) -> BinaryFrame {
        let word = |at: usize| -> Option<u32> {
            data.get(at..at + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        match word(0) {
            Some(1) => match word(4) {
                Some(fmt) => BinaryFrame::Image {
                    ext: if fmt == 1 { "jpg" } else { "png" },
                    bytes: data.slice(8..),
                },
                None => BinaryFrame::Other,
            },
            Some(4) => {
                let Some(len) = word(4).map(|l| l as usize) else {
                    return BinaryFrame::Other;
                };
                let Some(json) = data.get(8..8 + len) else {
                    return BinaryFrame::Other;
                };
                let Ok(meta) = serde_json::from_slice::<FrameMeta>(json) else {
                    return BinaryFrame::Other;
                };
                BinaryFrame::ImageWithMetadata {
                    node_id: meta.node_id,
                    prompt_id: meta.prompt_id,
                    ext: if meta.image_type == "image/jpeg" {
                        "jpg"
                    } else {
                        "png"
                    },
                    bytes: data.slice(8 + len..),
                }
            }
            _ => BinaryFrame::Other,
        }
    }
}

/// The body of `POST /prompt`.
#[derive(Debug, Serialize)]
pub struct PromptRequest<'a> {
    /// The API-format prompt.
    pub prompt: &'a crate::patch::Prompt,
    /// Our websocket's client id, so events reach us.
    pub client_id: &'a str,
    /// Our own prompt id, known before the reply.
    pub prompt_id: &'a str,
}

/// The 200 reply of `POST /prompt`.
#[derive(Debug, Deserialize)]
pub struct PromptAccepted {
    /// Queue position (int, or float when the client sent `number`).
    #[serde(default)]
    pub number: Option<f64>,
    /// Nodes that failed validation; non-empty means only the valid outputs run.
    #[serde(default)]
    pub node_errors: serde_json::Map<String, Value>,
}

/// The 400 reply of `POST /prompt`.
#[derive(Debug, Deserialize)]
pub struct PromptRejected {
    /// The overall error.
    pub error: RejectedError,
    /// Per-node errors.
    #[serde(default)]
    pub node_errors: serde_json::Map<String, Value>,
}

/// `error` of a 400 reply.
#[derive(Debug, Deserialize)]
pub struct RejectedError {
    /// e.g. `prompt_outputs_failed_validation`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Human message.
    #[serde(default)]
    pub message: String,
    /// Details.
    #[serde(default)]
    pub details: String,
}

/// Renders `node_errors` as one line: `node 3 (KSampler) input 'steps':
/// Value 0 smaller than min of 1; node 9 …`.
pub fn node_errors_line(node_errors: &serde_json::Map<String, Value>) -> String {
    let mut parts = Vec::new();
    for (node, entry) in node_errors {
        let class = entry
            .get("class_type")
            .and_then(Value::as_str)
            .unwrap_or("?");
        let errors = entry
            .get("errors")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for e in errors {
            let message = e.get("message").and_then(Value::as_str).unwrap_or("error");
            let details = e.get("details").and_then(Value::as_str).unwrap_or("");
            let input = e
                .get("extra_info")
                .and_then(|x| x.get("input_name"))
                .and_then(Value::as_str);
            let mut part = format!("node {node} ({class})");
            if let Some(input) = input {
                part.push_str(&format!(" input '{input}'"));
            }
            part.push_str(&format!(": {message}"));
            if !details.is_empty() {
                part.push_str(&format!(" ({details})"));
            }
            parts.push(part);
        }
    }
    one_line(&parts.join("; "))
}

impl PromptRejected {
    /// One line for the log.
    pub fn one_line(&self) -> String {
        let nodes = node_errors_line(&self.node_errors);
        let head = format!("{}: {}", self.error.kind, self.error.message);
        if nodes.is_empty() {
            if self.error.details.is_empty() {
                one_line(&head)
            } else {
                one_line(&format!("{head} ({})", self.error.details))
            }
        } else {
            one_line(&format!("{head}: {nodes}"))
        }
    }
}

pub use crate::text::one_line;

/// One entry of `GET /history/{id}`: what the client needs to finish a job
/// it lost track of.
#[derive(Debug, Clone, Deserialize)]
pub struct HistoryEntry {
    /// Node id → UI output (`{"images": [...]}`), in server order.
    #[serde(default)]
    pub outputs: serde_json::Map<String, Value>,
    /// Completion status.
    #[serde(default)]
    pub status: Option<HistoryStatus>,
}

/// `status` of a history entry.
#[derive(Debug, Clone, Deserialize)]
pub struct HistoryStatus {
    /// `success` or `error`.
    #[serde(default)]
    pub status_str: String,
    /// Whether it completed.
    #[serde(default)]
    pub completed: bool,
    /// `[[type, data], …]`: the execution messages, errors included.
    #[serde(default)]
    pub messages: Vec<(String, Value)>,
}

/// `GET /queue`: items are `[number, prompt_id, prompt, extra_data, outputs]`.
/// Only each item's number and prompt id are kept; the prompts (possibly
/// megabytes each on a shared server) are skipped while parsing.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct QueueState {
    /// The running prompt(s).
    #[serde(default)]
    pub queue_running: Vec<QueueItem>,
    /// The pending prompts, in heap order.
    #[serde(default)]
    pub queue_pending: Vec<QueueItem>,
}

/// One queue item: its number and prompt id, the rest skipped unparsed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueItem {
    /// The queue number (order of execution).
    pub number: Option<f64>,
    /// The prompt id.
    pub prompt_id: String,
}

impl<'de> Deserialize<'de> for QueueItem {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = QueueItem;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a queue item [number, prompt_id, …]")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<QueueItem, A::Error> {
                let number = seq
                    .next_element::<Value>()?
                    .as_ref()
                    .and_then(Value::as_f64);
                let prompt_id = match seq.next_element::<Value>()? {
                    Some(Value::String(id)) => id,
                    _ => String::new(),
                };
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(QueueItem { number, prompt_id })
            }
        }
        d.deserialize_seq(Visit)
    }
}

impl QueueState {
    /// Whether the prompt is running.
    pub fn is_running(&self, prompt_id: &str) -> bool {
        self.queue_running.iter().any(|i| i.prompt_id == prompt_id)
    }
    /// Whether the prompt waits in the queue.
    pub fn is_pending(&self, prompt_id: &str) -> bool {
        self.queue_pending.iter().any(|i| i.prompt_id == prompt_id)
    }
}

#[cfg(test)]
mod queue_tests {
    use super::*;

    #[test]
    fn queue_items_keep_only_number_and_id() {
        let text = r#"{"queue_running": [[3, "a", {"1": {"inputs": {"x": [1, 2]}}}, {}, ["9"]]],
                       "queue_pending": [[4, "b", {}, {}, []], [5, "c"]]}"#;
        let q: QueueState = serde_json::from_str(text).unwrap();
        assert!(q.is_running("a") && !q.is_running("b"));
        assert!(q.is_pending("b") && q.is_pending("c") && !q.is_pending("a"));
        assert_eq!(q.queue_pending[1].number, Some(5.0));
    }
}

/// The reply of `POST /upload/image`.
#[derive(Debug, Clone, Deserialize)]
pub struct Uploaded {
    /// The name the server stored the file under.
    pub name: String,
    /// The subfolder, as sent.
    #[serde(default)]
    pub subfolder: String,
    /// `input`, `temp` or `output`.
    #[serde(rename = "type", default)]
    pub kind: String,
}

impl Uploaded {
    /// The value a LoadImage `image` input takes for this upload.
    pub fn load_image_value(&self) -> String {
        let mut value = if self.subfolder.is_empty() {
            self.name.clone()
        } else {
            format!("{}/{}", self.subfolder, self.name)
        };
        match self.kind.as_str() {
            "temp" => value.push_str(" [temp]"),
            "output" => value.push_str(" [output]"),
            _ => {}
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignored_types_are_known_by_their_first_bytes_and_others_parse_fully() {
        assert_eq!(
            leading_type(r#"{"type": "progress_state", "data": {"#),
            Some("progress_state")
        );
        assert_eq!(leading_type(r#" { "type" : "x\u0041", "data": {}}"#), None);
        assert_eq!(leading_type(r#"{"data": {}, "type": "progress"}"#), None);
        // Cut off, or not JSON at all: an ignored type stays ignored, a
        // broken known one is still an error.
        assert_eq!(
            WsMessage::parse(r#"{"type": "progress_state", "data": {"nodes": "#).unwrap(),
            WsMessage::Other
        );
        assert!(WsMessage::parse(r#"{"type": "progress", "data": {"value": "#).is_err());
        assert_eq!(
            WsMessage::parse(
                r#"{"type":"progress","data":{"value":1,"max":2,"prompt_id":"p","node":"3"}}"#
            )
            .unwrap(),
            WsMessage::Progress {
                value: 1.0,
                max: 2.0,
                prompt_id: Some("p".into()),
                node: Some("3".into())
            }
        );
    }

    #[test]
    fn parses_recorded_messages() {
        let m = WsMessage::parse(r#"{"data": {"sid": "fad5", "status": {"exec_info": {"queue_remaining": 0}}}, "type": "status"}"#).unwrap();
        assert_eq!(
            m,
            WsMessage::Status {
                sid: Some("fad5".into())
            }
        );
        let m =
            WsMessage::parse(r#"{"data": {"node": null, "prompt_id": "p"}, "type": "executing"}"#)
                .unwrap();
        assert_eq!(
            m,
            WsMessage::Executing {
                node: None,
                prompt_id: Some("p".into())
            }
        );
        let m = WsMessage::parse(r#"{"data": {"node": "5"}, "type": "executing"}"#).unwrap();
        assert_eq!(
            m,
            WsMessage::Executing {
                node: Some("5".into()),
                prompt_id: None
            }
        );
        let m = WsMessage::parse(r#"{"data": {"max": 0.3, "node": "5", "prompt_id": "e", "value": 4.7e-07}, "type": "progress"}"#).unwrap();
        assert!(matches!(m, WsMessage::Progress { .. }));
        let m = WsMessage::parse(
            r#"{"data": {"nodes": {}, "prompt_id": "p"}, "type": "progress_state"}"#,
        )
        .unwrap();
        assert_eq!(m, WsMessage::Other);
        let m = WsMessage::parse(r#"{"type": "feature_flags", "data": {"x": 1}}"#).unwrap();
        assert_eq!(m, WsMessage::Other);
    }

    #[test]
    fn parses_binary_frames() {
        let mut f = vec![0, 0, 0, 1, 0, 0, 0, 2];
        f.extend_from_slice(b"PNGDATA");
        assert_eq!(
            BinaryFrame::parse(f.into()),
            BinaryFrame::Image {
                ext: "png",
                bytes: bytes::Bytes::from_static(b"PNGDATA")
            }
        );
        let meta = br#"{"node_id":"2","prompt_id":"p","display_node_id":"2","parent_node_id":null,"real_node_id":"2","image_type":"image/png"}"#;
        let mut f = vec![0, 0, 0, 4];
        f.extend_from_slice(&(meta.len() as u32).to_be_bytes());
        f.extend_from_slice(meta);
        f.extend_from_slice(b"IMG");
        assert_eq!(
            BinaryFrame::parse(f.into()),
            BinaryFrame::ImageWithMetadata {
                node_id: "2".into(),
                prompt_id: Some("p".into()),
                ext: "png",
                bytes: bytes::Bytes::from_static(b"IMG")
            }
        );
        assert_eq!(
            BinaryFrame::parse(bytes::Bytes::from_static(&[0, 0, 0, 4, 0, 0, 9, 9])),
            BinaryFrame::Other
        );
        assert_eq!(
            BinaryFrame::parse(bytes::Bytes::from_static(&[1])),
            BinaryFrame::Other
        );
    }

    #[test]
    fn renders_node_errors_on_one_line() {
        let body: PromptRejected = serde_json::from_str(r#"{"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation", "details": "", "extra_info": {}}, "node_errors": {"3": {"errors": [{"type": "value_smaller_than_min", "message": "Value 0 smaller than min of 1", "details": "steps", "extra_info": {"input_name": "steps"}}], "dependent_outputs": ["9"], "class_type": "KSampler"}}}"#).unwrap();
        assert_eq!(
            body.one_line(),
            "prompt_outputs_failed_validation: Prompt outputs failed validation: node 3 (KSampler) input 'steps': Value 0 smaller than min of 1 (steps)"
        );
    }
}
