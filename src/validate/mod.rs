//! Prompt validation against a server's `/object_info` node catalogue, with
//! the real server's rules and error shapes (ComfyUI `execution.py`:
//! `validate_prompt`, `validate_inputs`).
//!
//! One module, two users: the simulator answers `POST /prompt` with it, and
//! `check` / the preflight of `run` use it to reject bad jobs before queueing.
//! It owns the catalogue model (classes, input specs, model lists) and the
//! validation algorithm; it must not know about HTTP, the simulator or jobs.
//!
//! ```
//! use comfy_batch::validate::{Catalogue, ValidateOptions, validate_prompt};
//! let info = serde_json::json!({"EmptyImage": {"input": {"required": {
//!     "width": ["INT", {"min": 1}]}}, "output": ["IMAGE"], "output_node": false},
//!     "PreviewImage": {"input": {"required": {"images": ["IMAGE"]}}, "output": [], "output_node": true}});
//! let cat = Catalogue::from_object_info(&info).unwrap();
//! let prompt = serde_json::json!({"1": {"class_type": "EmptyImage", "inputs": {"width": 0}},
//!     "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}});
//! let v = validate_prompt(&cat, prompt.as_object().unwrap(), &ValidateOptions::default());
//! assert_eq!(v.error.unwrap().kind, "prompt_outputs_failed_validation");
//! assert_eq!(v.node_errors["1"].errors[0].kind, "value_smaller_than_min");
//! ```

mod py;

use std::collections::{BTreeMap, HashMap, HashSet};

use indexmap::IndexMap;
use serde::Serialize;
use serde_json::{Map, Value, json};

use py::{Num, obj};

/// Why a catalogue could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    /// The text is not JSON.
    #[error("object_info is not valid JSON")]
    Json(#[from] serde_json::Error),
    /// The JSON is not an object of classes.
    #[error("object_info must be a JSON object of node classes")]
    NotAnObject,
    /// One class entry has the wrong shape.
    #[error("object_info class '{class}' is malformed: {reason}")]
    BadClass {
        /// The class name.
        class: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// How an input is declared: the type name or combo list, plus its options
/// (`min`, `max`, `default`, `tooltip`, V3 `options`…).
#[derive(Debug, Clone)]
pub struct InputSpec {
    /// The input's name.
    pub name: String,
    /// `true` for `required`, `false` for `optional`.
    pub required: bool,
    /// The declared type as in the JSON: a type name (`"INT"`, `"IMAGE"`,
    /// `"COMBO"`) or a legacy combo list.
    pub type_spec: Value,
    /// The options object (`{}` when the spec has none).
    pub options: Map<String, Value>,
}

impl InputSpec {
    /// The combo choices for a legacy `[[...], {}]` or V3 `["COMBO",
    /// {"options": [...]}]` input, `None` for other inputs.
    pub fn combo_options(&self) -> Option<&[Value]> {
        match &self.type_spec {
            Value::Array(items) => Some(items),
            Value::String(s) if s == "COMBO" => Some(
                self.options
                    .get("options")
                    .and_then(Value::as_array)
                    .map_or(&[][..], Vec::as_slice),
            ),
            _ => None,
        }
    }

    /// The type name, `None` for a legacy combo list.
    pub fn type_name(&self) -> Option<&str> {
        self.type_spec.as_str()
    }

    /// `[type, options]` as the server reports it in `input_config`.
    fn config(&self) -> Value {
        json!([self.type_spec, self.options])
    }
}

/// One node class of the catalogue.
#[derive(Debug, Clone)]
pub struct NodeClass {
    /// The class name (`class_type`).
    pub name: String,
    /// Required then optional inputs, in the server's `input_order`.
    pub inputs: Vec<InputSpec>,
    /// Hidden inputs: name → kind (`PROMPT`, `EXTRA_PNGINFO`, `UNIQUE_ID`).
    pub hidden: Vec<(String, String)>,
    /// Output types (`RETURN_TYPES`).
    pub outputs: Vec<String>,
    /// Whether the class is an output node (runs without being consumed).
    pub output_node: bool,
}

impl NodeClass {
    /// The spec of one declared input.
    pub fn input(&self, name: &str) -> Option<&InputSpec> {
        self.inputs.iter().find(|i| i.name == name)
    }
}

/// The node catalogue: the parsed `/object_info`, optionally with model lists
/// filled in. Validation and the simulator's `/object_info` both read it.
#[derive(Debug, Clone)]
pub struct Catalogue {
    classes: HashMap<String, NodeClass>,
    raw: Map<String, Value>,
}

/// Which model folder feeds a loader input whose list comes from files, or
/// `None` for an ordinary input. The recorded catalogue came from a server
/// without models, so these lists are empty there and filled from a model
/// catalogue by [`Catalogue::with_models`].
pub fn model_folder(class: &str, input: &str) -> Option<&'static str> {
    Some(match (class, input) {
        ("CLIPVisionLoader", "clip_name") => "clip_vision",
        ("LatentUpscaleModelLoader", "model_name") => "latent_upscale_models",
        ("UpscaleModelLoader", "model_name") => "upscale_models",
        ("ModelPatchLoader", "name") => "model_patches",
        ("DiffusersLoader", "model_path") => "diffusers",
        (_, "ckpt_name") => "checkpoints",
        (_, "lora_name") => "loras",
        (_, "vae_name") => "vae",
        (_, "control_net_name") => "controlnet",
        (_, "clip_name" | "clip_name1" | "clip_name2" | "clip_name3" | "clip_name4") => {
            "text_encoders"
        }
        (_, "unet_name") => "diffusion_models",
        (_, "style_model_name") => "style_models",
        (_, "gligen_name") => "gligen",
        (_, "hypernetwork_name") => "hypernetworks",
        (_, "photomaker_model_name") => "photomaker",
        _ => return None,
    })
}

impl Catalogue {
    /// Parses `/object_info` JSON text.
    pub fn from_object_info_str(text: &str) -> Result<Catalogue, CatalogueError> {
        let value: Value = serde_json::from_str(text)?;
        Catalogue::from_object_info(&value)
    }

    /// Reads an `/object_info` response (`{class: {input, output, output_node, …}}`).
    pub fn from_object_info(info: &Value) -> Result<Catalogue, CatalogueError> {
        let map = info.as_object().ok_or(CatalogueError::NotAnObject)?;
        let mut classes = HashMap::with_capacity(map.len());
        for (name, entry) in map {
            classes.insert(name.clone(), parse_class(name, entry)?);
        }
        Ok(Catalogue {
            classes,
            raw: map.clone(),
        })
    }

    /// Replaces the file lists of model loader inputs (see [`model_folder`])
    /// with the given folder → names catalogue. Folders not in `models` are
    /// left as they are. `vae_name` keeps its built-in entries (`pixel_space`).
    pub fn with_models(mut self, models: &BTreeMap<String, Vec<String>>) -> Catalogue {
        let targets: Vec<(String, String, &'static str)> = self
            .classes
            .values()
            .flat_map(|c| {
                c.inputs.iter().filter_map(|i| {
                    let folder = model_folder(&c.name, &i.name)?;
                    i.combo_options()?;
                    Some((c.name.clone(), i.name.clone(), folder))
                })
            })
            .collect();
        for (class, input, folder) in targets {
            let Some(names) = models.get(folder) else {
                continue;
            };
            let mut list: Vec<Value> = names.iter().map(|n| Value::from(n.as_str())).collect();
            if input == "vae_name" {
                let builtin = self
                    .classes
                    .get(&class)
                    .and_then(|c| c.input(&input))
                    .and_then(InputSpec::combo_options)
                    .map(<[Value]>::to_vec)
                    .unwrap_or_default();
                for b in builtin {
                    if !list.contains(&b) {
                        list.push(b);
                    }
                }
            }
            self.set_combo(&class, &input, list);
        }
        self
    }

    /// Sets the choices of one combo input, in the parsed classes and in the
    /// raw JSON served as `/object_info`.
    pub fn set_combo(&mut self, class: &str, input: &str, options: Vec<Value>) {
        let Some(spec) = self
            .classes
            .get_mut(class)
            .and_then(|c| c.inputs.iter_mut().find(|i| i.name == input))
        else {
            return;
        };
        let v3 = spec.type_spec.as_str() == Some("COMBO");
        if v3 {
            spec.options
                .insert("options".into(), Value::Array(options.clone()));
        } else {
            spec.type_spec = Value::Array(options.clone());
        }
        let section = if spec.required {
            "required"
        } else {
            "optional"
        };
        if let Some(raw_spec) = self
            .raw
            .get_mut(class)
            .and_then(|c| c.get_mut("input"))
            .and_then(|i| i.get_mut(section))
            .and_then(|s| s.get_mut(input))
            .and_then(Value::as_array_mut)
        {
            if v3 {
                if let Some(Value::Object(o)) = raw_spec.get_mut(1) {
                    o.insert("options".into(), Value::Array(options));
                }
            } else if let Some(first) = raw_spec.get_mut(0) {
                *first = Value::Array(options);
            }
        }
    }

    /// One class by name.
    pub fn class(&self, name: &str) -> Option<&NodeClass> {
        self.classes.get(name)
    }

    /// Number of classes.
    pub fn len(&self) -> usize {
        self.classes.len()
    }

    /// Whether the catalogue has no classes.
    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }

    /// The catalogue as `/object_info` JSON (model lists applied).
    pub fn object_info(&self) -> &Map<String, Value> {
        &self.raw
    }
}

fn parse_class(name: &str, entry: &Value) -> Result<NodeClass, CatalogueError> {
    let bad = |reason: &str| CatalogueError::BadClass {
        class: name.to_string(),
        reason: reason.to_string(),
    };
    let input = entry
        .get("input")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("no 'input' object"))?;
    let order = entry.get("input_order").and_then(Value::as_object);
    let mut inputs = Vec::new();
    for (section, required) in [("required", true), ("optional", false)] {
        let Some(specs) = input.get(section).and_then(Value::as_object) else {
            continue;
        };
        // `input_order` is the server's declaration order; fall back to the
        // JSON order when it is absent.
        let names: Vec<String> = order
            .and_then(|o| o.get(section))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|n| n.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_else(|| specs.keys().cloned().collect());
        for input_name in names {
            let Some(spec) = specs.get(&input_name) else {
                continue;
            };
            let (type_spec, options) = match spec {
                Value::Array(parts) if !parts.is_empty() => (
                    parts[0].clone(),
                    parts
                        .get(1)
                        .and_then(Value::as_object)
                        .cloned()
                        .unwrap_or_default(),
                ),
                Value::String(s) => (Value::from(s.as_str()), Map::new()),
                _ => return Err(bad(&format!("input '{input_name}' has no type"))),
            };
            inputs.push(InputSpec {
                name: input_name,
                required,
                type_spec,
                options,
            });
        }
    }
    let hidden = input
        .get("hidden")
        .and_then(Value::as_object)
        .map(|h| {
            h.iter()
                .map(|(k, v)| {
                    let kind = match v {
                        Value::String(s) => s.clone(),
                        Value::Array(a) => a
                            .first()
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        _ => String::new(),
                    };
                    (k.clone(), kind)
                })
                .collect()
        })
        .unwrap_or_default();
    let outputs = entry
        .get("output")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|t| match t {
                    Value::String(s) => s.clone(),
                    // A combo output: its type is the list; no input accepts it
                    // by name, which is what the real check does too.
                    other => other.to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    let output_node = entry
        .get("output_node")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(NodeClass {
        name: name.to_string(),
        inputs,
        hidden,
        outputs,
        output_node,
    })
}

/// Knobs for [`validate_prompt`].
#[derive(Default)]
pub struct ValidateOptions<'a> {
    /// `partial_execution_targets`: only these output nodes run.
    pub partial_execution_targets: Option<&'a [String]>,
    /// Whether an (annotated) input file such as `x.png [output]` exists,
    /// for `LoadImage`'s custom validation. `None` skips the check (a
    /// preflight that uploads the files later).
    pub input_file_exists: Option<&'a (dyn Fn(&str) -> bool + Sync)>,
}

/// A prompt-level error (`error` of a 400 reply).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PromptError {
    /// `no_prompt`, `invalid_prompt`, `prompt_no_outputs`,
    /// `prompt_outputs_failed_validation`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Human-readable summary.
    pub message: String,
    /// Details (a node id, or the failed outputs' own errors).
    pub details: String,
    /// Always `{}` for these errors.
    pub extra_info: Map<String, Value>,
}

impl PromptError {
    fn new(kind: &str, message: String, details: String) -> PromptError {
        PromptError {
            kind: kind.into(),
            message,
            details,
            extra_info: Map::new(),
        }
    }

    /// The error for a body without `prompt`.
    pub fn no_prompt() -> PromptError {
        PromptError::new(
            "no_prompt",
            "No prompt provided".into(),
            "No prompt provided".into(),
        )
    }
}

/// One problem with one node's input.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InputError {
    /// e.g. `required_input_missing`, `value_not_in_list`, `return_type_mismatch`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Human-readable summary.
    pub message: String,
    /// Usually the input name, sometimes with the value.
    pub details: String,
    /// Case-specific fields (`input_name`, `input_config`, `received_value`…).
    pub extra_info: Map<String, Value>,
}

/// The errors of one node, as in the reply's `node_errors`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeError {
    /// The node's own errors.
    pub errors: Vec<InputError>,
    /// The output nodes that cannot run because of it.
    pub dependent_outputs: Vec<String>,
    /// The node's class.
    pub class_type: String,
}

/// The outcome of validating one prompt.
#[derive(Debug, Clone)]
pub struct Validation {
    /// The prompt as the server queues it: inputs coerced (`int()`,
    /// `float()`…) and `{"__value__": x}` unwrapped.
    pub prompt: Map<String, Value>,
    /// The output nodes that will run (non-empty when `error` is `None`).
    pub outputs_to_run: Vec<String>,
    /// Per-node errors; may be non-empty even when the prompt is accepted.
    pub node_errors: IndexMap<String, NodeError>,
    /// Set when the prompt is rejected (HTTP 400).
    pub error: Option<PromptError>,
}

impl Validation {
    /// Whether the server would queue the prompt.
    pub fn is_ok(&self) -> bool {
        self.error.is_none()
    }

    /// `node_errors` as JSON.
    pub fn node_errors_json(&self) -> Value {
        serde_json::to_value(&self.node_errors).unwrap_or_else(|_| json!({}))
    }
}

/// A Python exception raised while validating (a bad link): turned into
/// `exception_during_validation` / `exception_during_inner_validation`.
struct Raised {
    exception_type: &'static str,
    message: String,
    traceback: Vec<String>,
}

impl Raised {
    fn key_error(key: &Value) -> Raised {
        Raised {
            exception_type: "KeyError",
            message: py::repr(key),
            traceback: vec![
                tb_line(
                    838,
                    "validate_inputs",
                    "r = await validate_inputs(prompt_id, prompt, o_id, validated)",
                ),
                tb_line(
                    818,
                    "validate_inputs",
                    "o_class_type = prompt[o_id]['class_type']",
                ),
            ],
        }
    }

    fn other(exception_type: &'static str, message: String) -> Raised {
        Raised {
            exception_type,
            message,
            traceback: vec![tb_line(820, "validate_inputs", "received_type = r[val[1]]")],
        }
    }
}

fn tb_line(line: u32, func: &str, code: &str) -> String {
    format!("  File \"/srv/comfyui/app/execution.py\", line {line}, in {func}\n    {code}\n")
}

/// (valid, own errors) per validated node, in the order they finished.
type Validated = IndexMap<String, (bool, Vec<InputError>)>;

struct Validator<'a> {
    cat: &'a Catalogue,
    opts: &'a ValidateOptions<'a>,
    prompt: Map<String, Value>,
    validated: Validated,
    visiting: HashSet<String>,
}

/// Classes whose `VALIDATE_INPUTS` checks the `image` file and skips the
/// combo check.
const FILE_CHECKED: &[&str] = &["LoadImage", "LoadImageMask"];
/// Classes whose file list is dynamic and not checked against the combo.
const COMBO_UNCHECKED: &[&str] = &["LoadImageOutput"];

/// Whether [`validate_prompt`] never compares `class`'s `image` value with
/// its listed files (a folder's contents, different on each server).
pub(crate) fn image_list_unchecked(class: &str) -> bool {
    FILE_CHECKED.contains(&class) || COMBO_UNCHECKED.contains(&class)
}

/// Validates a prompt (API format: `{id: {class_type, inputs}}`) as the real
/// server does on `POST /prompt`.
pub fn validate_prompt(
    cat: &Catalogue,
    prompt: &Map<String, Value>,
    opts: &ValidateOptions<'_>,
) -> Validation {
    let reject = |error: PromptError| Validation {
        prompt: prompt.clone(),
        outputs_to_run: Vec::new(),
        node_errors: IndexMap::new(),
        error: Some(error),
    };
    let mut outputs = Vec::new();
    for (id, node) in prompt {
        let Some(class_type) = node.get("class_type") else {
            return reject(PromptError::new(
                "invalid_prompt",
                "Cannot execute because a node is missing the class_type property.".into(),
                format!("Node ID '#{id}'"),
            ));
        };
        let class_name = py::str_of(class_type);
        let Some(class) = class_type.as_str().and_then(|c| cat.class(c)) else {
            return reject(PromptError::new(
                "invalid_prompt",
                format!("Cannot execute because node {class_name} does not exist."),
                format!("Node ID '#{id}'"),
            ));
        };
        if class.output_node
            && opts
                .partial_execution_targets
                .is_none_or(|t| t.iter().any(|x| x == id))
        {
            outputs.push(id.clone());
        }
    }
    if outputs.is_empty() {
        return reject(PromptError::new(
            "prompt_no_outputs",
            "Prompt has no outputs".into(),
            String::new(),
        ));
    }

    let mut v = Validator {
        cat,
        opts,
        prompt: prompt.clone(),
        validated: IndexMap::new(),
        visiting: HashSet::new(),
    };
    let mut good = Vec::new();
    let mut failed_reasons: Vec<InputError> = Vec::new();
    let mut node_errors: IndexMap<String, NodeError> = IndexMap::new();
    for o in &outputs {
        let (valid, reasons) = match v.validate_inputs(o) {
            Ok(r) => r,
            Err(raised) => {
                let reasons = vec![InputError {
                    kind: "exception_during_validation".into(),
                    message: "Exception when validating node".into(),
                    details: raised.message.clone(),
                    extra_info: obj([
                        ("exception_type", Value::from(raised.exception_type)),
                        ("traceback", json!(raised.traceback)),
                    ]),
                }];
                v.validated.insert(o.clone(), (false, reasons.clone()));
                (false, reasons)
            }
        };
        if valid {
            good.push(o.clone());
            continue;
        }
        failed_reasons.extend(reasons);
        // As the real server: every node validated so far that has errors of
        // its own gets this output added to its dependents.
        for (node_id, (ok, errs)) in &v.validated {
            if *ok || errs.is_empty() {
                continue;
            }
            let entry = node_errors
                .entry(node_id.clone())
                .or_insert_with(|| NodeError {
                    errors: errs.clone(),
                    dependent_outputs: Vec::new(),
                    class_type: v
                        .prompt
                        .get(node_id)
                        .and_then(|n| n.get("class_type"))
                        .map(py::str_of)
                        .unwrap_or_default(),
                });
            entry.dependent_outputs.push(o.clone());
        }
    }
    let error = good.is_empty().then(|| {
        let details: Vec<String> = failed_reasons
            .iter()
            .map(|e| format!("{}: {}", e.message, e.details))
            .collect();
        PromptError::new(
            "prompt_outputs_failed_validation",
            "Prompt outputs failed validation".into(),
            details.join("\n"),
        )
    });
    Validation {
        prompt: v.prompt,
        outputs_to_run: good,
        node_errors,
        error,
    }
}

/// The real `validate_node_input`: equal, wildcard `*`, or overlapping
/// comma-separated type sets.
fn types_compatible(received: &str, input: &Value) -> bool {
    let Some(input) = input.as_str() else {
        return false;
    };
    if received == input {
        return true;
    }
    let r: HashSet<&str> = received.split(',').map(str::trim).collect();
    let i: HashSet<&str> = input.split(',').map(str::trim).collect();
    if r.contains("*") || i.contains("*") {
        return true;
    }
    !r.is_disjoint(&i)
}

impl Validator<'_> {
    fn validate_inputs(&mut self, id: &str) -> Result<(bool, Vec<InputError>), Raised> {
        if let Some(done) = self.validated.get(id) {
            return Ok(done.clone());
        }
        if !self.visiting.insert(id.to_string()) {
            return Err(Raised::other(
                "RecursionError",
                "maximum recursion depth exceeded".into(),
            ));
        }
        let result = self.validate_node(id);
        self.visiting.remove(id);
        let result = result?;
        self.validated.insert(id.to_string(), result.clone());
        Ok(result)
    }

    fn validate_node(&mut self, id: &str) -> Result<(bool, Vec<InputError>), Raised> {
        let cat = self.cat;
        let node = self.prompt.get(id).cloned().unwrap_or(Value::Null);
        let class_name = node
            .get("class_type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let Some(class) = cat.class(&class_name) else {
            return Err(Raised::key_error(&Value::from(class_name)));
        };
        let Some(inputs) = node.get("inputs").and_then(Value::as_object).cloned() else {
            return Err(Raised::key_error(&Value::from("inputs")));
        };
        let file_checked = FILE_CHECKED.contains(&class_name.as_str());
        let mut errors = Vec::new();
        let mut valid = true;
        for spec in &class.inputs {
            let x = spec.name.as_str();
            let Some(val) = inputs.get(x) else {
                if spec.required {
                    errors.push(InputError {
                        kind: "required_input_missing".into(),
                        message: "Required input is missing".into(),
                        details: x.into(),
                        extra_info: obj([("input_name", Value::from(x))]),
                    });
                }
                continue;
            };
            if let Value::Array(link) = val {
                if link.len() != 2 {
                    errors.push(InputError {
                        kind: "bad_linked_input".into(),
                        message:
                            "Bad linked input, must be a length-2 list of [node_id, slot_index]"
                                .into(),
                        details: x.into(),
                        extra_info: obj([
                            ("input_name", Value::from(x)),
                            ("input_config", spec.config()),
                            ("received_value", val.clone()),
                        ]),
                    });
                    continue;
                }
                let o_id = self.link_target(&link[0])?;
                let received = self.output_type(&o_id, &link[1])?;
                if !types_compatible(&received, &spec.type_spec) {
                    let type_text = match &spec.type_spec {
                        Value::String(s) => s.clone(),
                        other => py::repr(other),
                    };
                    errors.push(InputError {
                        kind: "return_type_mismatch".into(),
                        message: "Return type mismatch between linked nodes".into(),
                        details: format!(
                            "{x}, received_type({received}) mismatch input_type({type_text})"
                        ),
                        extra_info: obj([
                            ("input_name", Value::from(x)),
                            ("input_config", spec.config()),
                            ("received_type", Value::from(received)),
                            ("linked_node", val.clone()),
                        ]),
                    });
                    continue;
                }
                match self.validate_inputs(&o_id) {
                    Ok((true, _)) => {}
                    Ok((false, _)) => valid = false,
                    Err(raised) => {
                        valid = false;
                        let reasons = vec![InputError {
                            kind: "exception_during_inner_validation".into(),
                            message: "Exception when validating inner node".into(),
                            details: raised.message.clone(),
                            extra_info: obj([
                                ("input_name", Value::from(x)),
                                ("input_config", spec.config()),
                                ("exception_message", Value::from(raised.message)),
                                ("exception_type", Value::from(raised.exception_type)),
                                ("traceback", json!(raised.traceback)),
                                ("linked_node", val.clone()),
                            ]),
                        }];
                        self.validated.insert(o_id.clone(), (false, reasons));
                    }
                }
                continue;
            }
            let mut val = val.clone();
            if let Some(inner) = val.as_object().and_then(|o| o.get("__value__")) {
                val = inner.clone();
                self.set_input(id, x, val.clone());
            }
            let converted = match spec.type_name() {
                Some("INT") => py::to_int(&val).map(py::int_value),
                Some("FLOAT") => py::to_float(&val).map(py::float_value),
                Some("STRING") => Ok(Value::from(py::str_of(&val))),
                Some("BOOLEAN") => Ok(Value::from(py::truthy(&val))),
                _ => Ok(val.clone()),
            };
            let val = match converted {
                Ok(c) => {
                    if c != val {
                        self.set_input(id, x, c.clone());
                    }
                    c
                }
                Err(msg) => {
                    let type_text = spec.type_name().unwrap_or_default();
                    errors.push(InputError {
                        kind: "invalid_input_type".into(),
                        message: format!("Failed to convert an input value to a {type_text} value"),
                        details: format!("{x}, {}, {msg}", py::str_of(&val)),
                        extra_info: obj([
                            ("input_name", Value::from(x)),
                            ("input_config", spec.config()),
                            ("received_value", val.clone()),
                            ("exception_message", Value::from(msg)),
                        ]),
                    });
                    continue;
                }
            };
            if file_checked && x == "image" {
                // VALIDATE_INPUTS takes `image`: no min/max/combo checks; the
                // file must exist instead.
                let exists = self
                    .opts
                    .input_file_exists
                    .is_none_or(|f| f(&py::str_of(&val)));
                if !exists {
                    errors.push(InputError {
                        kind: "custom_validation_failed".into(),
                        message: "Custom validation failed for node".into(),
                        details: format!("{x} - Invalid image file: {}", py::str_of(&val)),
                        extra_info: obj([("input_name", Value::from(x))]),
                    });
                }
                continue;
            }
            if let Some(err) = range_error(x, spec, &val) {
                errors.push(err);
                continue;
            }
            if COMBO_UNCHECKED.contains(&class_name.as_str()) {
                continue;
            }
            if let Some(options) = spec.combo_options()
                && !options.iter().any(|o| py::py_eq(o, &val))
            {
                let (list_info, config) = if options.len() > 20 {
                    (format!("(list of length {})", options.len()), Value::Null)
                } else {
                    (py::list_repr(options), spec.config())
                };
                errors.push(InputError {
                    kind: "value_not_in_list".into(),
                    message: "Value not in list".into(),
                    details: format!("{x}: '{}' not in {list_info}", py::str_of(&val)),
                    extra_info: obj([
                        ("input_name", Value::from(x)),
                        ("input_config", config),
                        ("received_value", val.clone()),
                    ]),
                });
            }
        }
        Ok((errors.is_empty() && valid, errors))
    }

    /// `prompt[o_id]`: the link's source must be a node of the prompt.
    fn link_target(&self, key: &Value) -> Result<String, Raised> {
        match key {
            Value::String(s) if self.prompt.contains_key(s) => Ok(s.clone()),
            Value::Array(_) | Value::Object(_) => Err(Raised::other(
                "TypeError",
                format!(
                    "unhashable type: '{}'",
                    if key.is_array() { "list" } else { "dict" }
                ),
            )),
            other => Err(Raised::key_error(other)),
        }
    }

    /// `RETURN_TYPES[slot]` of the linked node, with Python's indexing rules.
    fn output_type(&self, o_id: &str, slot: &Value) -> Result<String, Raised> {
        let class_name = self
            .prompt
            .get(o_id)
            .and_then(|n| n.get("class_type"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let outputs = self
            .cat
            .class(class_name)
            .map(|c| c.outputs.as_slice())
            .unwrap_or_default();
        let index = match slot {
            Value::Bool(b) => i64::from(*b),
            Value::Number(n) if n.is_i64() || n.is_u64() => n.as_i64().unwrap_or(i64::MAX),
            other => {
                let t = match other {
                    Value::Number(_) => "float",
                    Value::String(_) => "str",
                    Value::Null => "NoneType",
                    Value::Array(_) => "list",
                    _ => "dict",
                };
                return Err(Raised::other(
                    "TypeError",
                    format!("tuple indices must be integers or slices, not {t}"),
                ));
            }
        };
        let len = outputs.len() as i64;
        let i = if index < 0 { index + len } else { index };
        if i < 0 || i >= len {
            return Err(Raised::other(
                "IndexError",
                "tuple index out of range".into(),
            ));
        }
        Ok(outputs[i as usize].clone())
    }

    fn set_input(&mut self, id: &str, name: &str, value: Value) {
        if let Some(inputs) = self
            .prompt
            .get_mut(id)
            .and_then(|n| n.get_mut("inputs"))
            .and_then(Value::as_object_mut)
        {
            inputs.insert(name.to_string(), value);
        }
    }
}

fn range_error(x: &str, spec: &InputSpec, val: &Value) -> Option<InputError> {
    let v = Num::of(val)?;
    let check = |key: &str| spec.options.get(key).and_then(Num::of);
    let fail = |kind: &str, message: String| InputError {
        kind: kind.into(),
        message,
        details: x.into(),
        extra_info: obj([
            ("input_name", Value::from(x)),
            ("input_config", spec.config()),
            ("received_value", val.clone()),
        ]),
    };
    if let Some(min) = check("min")
        && v.lt(min)
    {
        return Some(fail(
            "value_smaller_than_min",
            format!(
                "Value {} smaller than min of {}",
                py::repr(val),
                py::repr(&spec.options["min"])
            ),
        ));
    }
    if let Some(max) = check("max")
        && max.lt(v)
    {
        return Some(fail(
            "value_bigger_than_max",
            format!(
                "Value {} bigger than max of {}",
                py::repr(val),
                py::repr(&spec.options["max"])
            ),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalogue() -> Catalogue {
        Catalogue::from_object_info_str(include_str!("../../assets/object_info.json"))
            .expect("bundled catalogue parses")
    }

    fn run(prompt: Value) -> Validation {
        validate_prompt(
            &catalogue(),
            prompt.as_object().expect("object"),
            &ValidateOptions::default(),
        )
    }

    fn basic(width: Value) -> Value {
        json!({
            "1": {"class_type": "EmptyImage", "inputs": {"batch_size": 1, "color": 0, "height": 64, "width": width}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x", "images": ["2", 0]}},
        })
    }

    #[test]
    fn accepts_and_coerces() {
        let v = run(basic(json!(64.7)));
        assert!(v.is_ok());
        assert_eq!(v.outputs_to_run, vec!["3"]);
        assert_eq!(v.prompt["1"]["inputs"]["width"], json!(64));
    }

    #[test]
    fn min_error_has_the_real_shape() {
        let v = run(basic(json!(0)));
        let e = v.error.expect("rejected");
        assert_eq!(e.kind, "prompt_outputs_failed_validation");
        assert_eq!(e.details, "");
        let ne = serde_json::to_value(&v.node_errors).unwrap();
        assert_eq!(
            ne,
            json!({"1": {"errors": [{"type": "value_smaller_than_min", "message": "Value 0 smaller than min of 1",
                "details": "width", "extra_info": {"input_name": "width",
                "input_config": ["INT", {"default": 512, "min": 1, "max": 16384, "step": 1}], "received_value": 0}}],
                "dependent_outputs": ["3"], "class_type": "EmptyImage"}})
        );
    }

    #[test]
    fn unknown_class_and_no_outputs() {
        let v = run(json!({"1": {"class_type": "Nope", "inputs": {}}}));
        assert_eq!(
            v.error.unwrap().message,
            "Cannot execute because node Nope does not exist."
        );
        let v = run(json!({"1": {"class_type": "EmptyImage", "inputs": {}}}));
        assert_eq!(v.error.unwrap().kind, "prompt_no_outputs");
    }

    #[test]
    fn missing_link_target_is_blamed_on_the_holder() {
        let mut p = basic(json!(64));
        p["2"]["inputs"]["image"] = json!(["99", 0]);
        p["4"] = json!({"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}});
        let v = run(p);
        assert!(v.is_ok());
        assert_eq!(v.outputs_to_run, vec!["4"]);
        let e = &v.node_errors["2"].errors[0];
        assert_eq!(e.kind, "exception_during_inner_validation");
        assert_eq!(e.details, "'99'");
        assert_eq!(e.extra_info["input_name"], json!("images"));
    }

    #[test]
    fn type_mismatch_and_combos() {
        let mut p = basic(json!(64));
        p["3"]["inputs"]["images"] = json!(["5", 0]);
        p["5"] = json!({"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}});
        let v = run(p);
        let e = &v.node_errors["3"].errors[0];
        assert_eq!(e.kind, "return_type_mismatch");
        assert_eq!(
            e.details,
            "images, received_type(LATENT) mismatch input_type(IMAGE)"
        );

        let models =
            BTreeMap::from([("checkpoints".to_string(), vec!["a.safetensors".to_string()])]);
        let cat = catalogue().with_models(&models);
        let p = json!({
            "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "b.safetensors"}},
            "8": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["4", 2]}},
            "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x", "images": ["8", 0]}},
        });
        let v = validate_prompt(&cat, p.as_object().unwrap(), &ValidateOptions::default());
        let e = &v.node_errors["4"].errors[0];
        assert_eq!(
            e.details,
            "ckpt_name: 'b.safetensors' not in ['a.safetensors']"
        );
    }

    #[test]
    fn load_image_uses_the_file_check() {
        let p = json!({
            "1": {"class_type": "LoadImage", "inputs": {"image": "missing.png"}},
            "3": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x", "images": ["1", 0]}},
        });
        let exists = |_: &str| false;
        let opts = ValidateOptions {
            input_file_exists: Some(&exists),
            ..Default::default()
        };
        let v = validate_prompt(&catalogue(), p.as_object().unwrap(), &opts);
        assert_eq!(
            v.node_errors["1"].errors[0].details,
            "image - Invalid image file: missing.png"
        );
    }

    #[test]
    fn v3_combos_booleans_and_unwrapping() {
        let p = json!({
            "1": {"class_type": "EmptyImage", "inputs": {"batch_size": 1, "color": 0, "height": 64, "width": {"__value__": "64"}}},
            "2": {"class_type": "ImageFlip", "inputs": {"image": ["1", 0], "flip_method": "z-axis"}},
            "3": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x", "images": ["2", 0]}},
            "4": {"class_type": "PrimitiveBoolean", "inputs": {"value": "false"}},
            "5": {"class_type": "PreviewAny", "inputs": {"source": ["4", 0]}},
        });
        let v = run(p);
        assert!(v.is_ok(), "PreviewAny still runs");
        assert_eq!(v.outputs_to_run, vec!["5"]);
        let e = &v.node_errors["2"].errors[0];
        assert_eq!(e.kind, "value_not_in_list");
        assert_eq!(
            e.details,
            "flip_method: 'z-axis' not in ['x-axis: vertically', 'y-axis: horizontally']"
        );
        // Python's bool("false") is True; int("64") is 64.
        assert_eq!(v.prompt["4"]["inputs"]["value"], json!(true));
        assert_eq!(v.prompt["1"]["inputs"]["width"], json!(64));
    }

    #[test]
    fn long_lists_are_summarised() {
        let mut p = basic(json!(64));
        p["4"] = json!({"class_type": "KSamplerSelect", "inputs": {"sampler_name": "bogus"}});
        p["5"] = json!({"class_type": "PreviewAny", "inputs": {"source": ["4", 0]}});
        let v = run(p);
        let e = &v.node_errors["4"].errors[0];
        assert!(
            e.details
                .starts_with("sampler_name: 'bogus' not in (list of length "),
            "{}",
            e.details
        );
        assert_eq!(e.extra_info["input_config"], Value::Null);
    }
}
