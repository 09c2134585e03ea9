//! Patching: a job's resolved parameters are set on a copy of its workflow
//! as JSON values (never by string substitution), and every saver's
//! `filename_prefix` is pointed at a per-job server folder. Knows nothing of YAML or the network;
//! which input a parameter name means is decided by `plan`.
//!
//! SEAM (fixed for the runner, #4): `Prompt`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ids::JobId;

/// An API-format prompt: node id → `{class_type, inputs, _meta?}`, in the
/// workflow file's key order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Prompt(pub serde_json::Map<String, serde_json::Value>);

/// One input of one node: where a parameter's value goes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot {
    /// The node id (JSON key of the prompt).
    pub node: String,
    /// The input name under the node's `inputs`.
    pub input: String,
}

/// Why a value cannot be set on an input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The node is not in the workflow.
    #[error("node {0} is not in the workflow")]
    NoNode(String),
    /// The node has no such input.
    #[error("node {node} ({class}) has no input '{input}'; its inputs: {}", available.join(", "))]
    MissingInput {
        /// Node id.
        node: String,
        /// Its class_type.
        class: String,
        /// The input asked for.
        input: String,
        /// The inputs it has, in workflow order.
        available: Vec<String>,
    },
    /// The input is fed by another node's output: setting it would cut the graph.
    #[error("input '{input}' of node {node} ({class}) is a link from node {from}, not a value")]
    Link {
        /// Node id.
        node: String,
        /// Its class_type.
        class: String,
        /// The input.
        input: String,
        /// The node the link comes from.
        from: String,
    },
    /// The value's JSON type differs from the workflow's value (a string for
    /// a number or the reverse).
    #[error("input '{input}' of node {node} ({class}) takes a {expected}, not {given}")]
    WrongType {
        /// Node id.
        node: String,
        /// Its class_type.
        class: String,
        /// The input.
        input: String,
        /// The kind the input takes.
        expected: &'static str,
        /// The value given.
        given: String,
    },
}

/// The JSON kind of a value, as named in messages.
pub fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "mapping",
    }
}

/// `["4", 1]`: a link to output 1 of node 4.
pub fn link_source(v: &Value) -> Option<&str> {
    match v.as_array().map(Vec::as_slice) {
        Some([Value::String(node), Value::Number(slot)]) if slot.is_u64() => Some(node),
        _ => None,
    }
}

/// A node's `class_type` (empty if absent).
pub fn class_of(node: &Value) -> &str {
    node.get("class_type").and_then(Value::as_str).unwrap_or("")
}

/// Checks that `slot` exists in `workflow`, holds a value (not a link), and
/// that `value` has the same JSON kind (numbers of any precision are fine:
/// int vs float is checked against the server's catalogue later).
pub fn check(workflow: &Map<String, Value>, slot: &Slot, value: &Value) -> Result<(), PatchError> {
    let node = workflow
        .get(&slot.node)
        .ok_or_else(|| PatchError::NoNode(slot.node.clone()))?;
    let class = class_of(node).to_owned();
    let inputs = node.get("inputs").and_then(Value::as_object);
    let Some(current) = inputs.and_then(|i| i.get(&slot.input)) else {
        return Err(PatchError::MissingInput {
            node: slot.node.clone(),
            class,
            input: slot.input.clone(),
            available: inputs
                .map(|i| i.keys().cloned().collect())
                .unwrap_or_default(),
        });
    };
    if let Some(from) = link_source(current) {
        return Err(PatchError::Link {
            node: slot.node.clone(),
            class,
            input: slot.input.clone(),
            from: from.to_owned(),
        });
    }
    let same = matches!(
        (current, value),
        (Value::Number(_), Value::Number(_))
            | (Value::String(_), Value::String(_))
            | (Value::Bool(_), Value::Bool(_))
            | (Value::Null | Value::Array(_) | Value::Object(_), _)
    );
    if same {
        Ok(())
    } else {
        Err(PatchError::WrongType {
            node: slot.node.clone(),
            class,
            input: slot.input.clone(),
            expected: kind_of(current),
            given: match value {
                Value::Null => "an empty value".into(),
                _ => format!(
                    "{} {}",
                    kind_of(value),
                    crate::text::clip(&value.to_string(), 80)
                ),
            },
        })
    }
}

/// Sets `value` on `slot` (already [`check`]ed). A missing node or input is
/// left alone: checking is the planner's job, setting must stay cheap.
pub fn set(prompt: &mut Map<String, Value>, slot: &Slot, value: Value) {
    if let Some(inputs) = prompt
        .get_mut(&slot.node)
        .and_then(|n| n.get_mut("inputs"))
        .and_then(Value::as_object_mut)
    {
        // Replace in place: no key allocation on the hot path.
        match inputs.get_mut(&slot.input) {
            Some(v) => *v = value,
            None => {
                inputs.insert(slot.input.clone(), value);
            }
        }
    }
}

/// The server-side file name prefix for a job: `comfy-batch/<id[0..2]>/<id>`,
/// so a server folder never fills up and any file leads back to its job.
pub fn server_prefix(id: &JobId) -> String {
    let s = id.as_str();
    format!("comfy-batch/{}/{}", s.get(..2).unwrap_or(s), s)
}

/// The nodes of a workflow that name their files on the server: every
/// node with a `filename_prefix` value (SaveImage, SaveAnimatedWEBP/PNG,
/// SaveVideo, SaveWEBM, SaveAudio/MP3/Opus, SaveLatent, SaveGLB, a custom
/// pack's VHS_VideoCombine…), in workflow order. A prefix fed by a link is
/// the graph's own choice and is left alone.
pub fn save_image_nodes(workflow: &Map<String, Value>) -> Vec<String> {
    workflow
        .iter()
        .filter(|(_, n)| {
            n.get("inputs")
                .and_then(|i| i.get("filename_prefix"))
                .is_some_and(Value::is_string)
        })
        .map(|(id, _)| id.clone())
        .collect()
}

/// Points the `filename_prefix` of `nodes` (savers whose prefix the user
/// did not set) at [`server_prefix`].
pub fn set_prefixes(prompt: &mut Map<String, Value>, nodes: &[String], id: &JobId) {
    if nodes.is_empty() {
        return;
    }
    let prefix = Value::String(server_prefix(id));
    for node in nodes {
        let slot = Slot {
            node: node.clone(),
            input: "filename_prefix".into(),
        };
        set(prompt, &slot, prefix.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn wf() -> Map<String, Value> {
        json!({
            "3": {"class_type": "KSampler", "inputs": {"seed": 1, "cfg": 8, "sampler_name": "euler", "model": ["4", 0]}},
            "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}}
        })
        .as_object()
        .cloned()
        .unwrap()
    }

    fn slot(node: &str, input: &str) -> Slot {
        Slot {
            node: node.into(),
            input: input.into(),
        }
    }

    #[test]
    fn numbers_of_any_precision_are_accepted() {
        assert_eq!(check(&wf(), &slot("3", "cfg"), &json!(6.5)), Ok(()));
        assert_eq!(
            check(&wf(), &slot("3", "sampler_name"), &json!("dpmpp_2m")),
            Ok(())
        );
    }

    #[test]
    fn wrong_value_type_is_an_error() {
        let err = check(&wf(), &slot("3", "cfg"), &json!("high")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "input 'cfg' of node 3 (KSampler) takes a number, not string \"high\""
        );
        let err = check(&wf(), &slot("3", "sampler_name"), &json!(5)).unwrap_err();
        assert!(matches!(
            err,
            PatchError::WrongType {
                expected: "string",
                ..
            }
        ));
    }

    #[test]
    fn links_and_missing_inputs_are_errors() {
        let err = check(&wf(), &slot("3", "model"), &json!("x")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "input 'model' of node 3 (KSampler) is a link from node 4, not a value"
        );
        let err = check(&wf(), &slot("3", "steps"), &json!(20)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "node 3 (KSampler) has no input 'steps'; its inputs: seed, cfg, sampler_name, model"
        );
    }

    #[test]
    fn values_are_set_as_json_and_prefixes_per_job() {
        let mut p = wf();
        set(&mut p, &slot("3", "cfg"), json!(6.5));
        let id = JobId::new("ab12cd34ef56");
        let savers = save_image_nodes(&p);
        set_prefixes(&mut p, &savers, &id);
        assert_eq!(p["3"]["inputs"]["cfg"], json!(6.5));
        assert_eq!(
            p["9"]["inputs"]["filename_prefix"],
            json!("comfy-batch/ab/ab12cd34ef56")
        );
    }

    #[test]
    fn every_saver_with_a_prefix_value_gets_the_job_prefix() {
        let mut p = json!({
            "1": {"class_type": "EmptyImage", "inputs": {"width": 8}},
            "2": {"class_type": "SaveAnimatedWEBP", "inputs": {"filename_prefix": "ComfyUI", "images": ["1", 0]}},
            "4": {"class_type": "SaveVideo", "inputs": {"filename_prefix": "video/ComfyUI", "video": ["3", 0]}},
            "6": {"class_type": "SaveAudio", "inputs": {"filename_prefix": "audio/ComfyUI", "audio": ["5", 0]}},
            "11": {"class_type": "SaveLatent", "inputs": {"filename_prefix": "latents/ComfyUI", "samples": ["10", 0]}},
            "14": {"class_type": "VHS_VideoCombine", "inputs": {"filename_prefix": "AnimateDiff", "images": ["1", 0]}},
            "15": {"class_type": "SaveGLB", "inputs": {"filename_prefix": ["16", 0], "mesh": ["17", 0]}},
            "13": {"class_type": "PreviewAny", "inputs": {"source": ["12", 0]}}
        })
        .as_object()
        .cloned()
        .unwrap();
        let savers = save_image_nodes(&p);
        assert_eq!(savers, ["2", "4", "6", "11", "14"]);
        set_prefixes(&mut p, &savers, &JobId::new("ab12cd34ef56"));
        for node in savers {
            assert_eq!(
                p[&node]["inputs"]["filename_prefix"],
                json!("comfy-batch/ab/ab12cd34ef56")
            );
        }
        assert_eq!(p["15"]["inputs"]["filename_prefix"], json!(["16", 0]));
    }
}
