//! The node definitions conversion needs, read from `/object_info` entries:
//! for each class, its display name and its widgets in the frontend's order
//! (with the control, upload and extension widgets the frontend adds).
//!
//! The frontend-only widgets of core nodes (buttons, previews, live
//! captures) are those of frontend 1.35.9, the version ComfyUI 0.8 requires;
//! each entry cites the file of that release that adds it.

use std::collections::HashMap;

use serde_json::{Map, Value};

/// What a widget of a node definition is, as far as conversion cares.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum WidgetKind {
    /// A widget sent to the server under its input name.
    Value {
        /// The value a new node gets (the definition's default).
        default: Value,
        /// A `STRING` widget with `dynamicPrompts: true`: comments are
        /// stripped when queued.
        dynamic_prompts: bool,
    },
    /// The `control_after_generate` widget after a seed-like input: saved in
    /// the workflow, never sent.
    Control,
    /// The upload button after an `image_upload`-style combo: saved in the
    /// workflow by most frontends, never sent by today's.
    Upload,
    /// A combo whose chosen option brings its own widgets, placed right
    /// after it and named `<combo>.<input>` (V3 `COMFY_DYNAMICCOMBO_V3`).
    DynamicCombo {
        /// The value a new node gets.
        default: Value,
        /// Each option's key and widgets.
        options: Vec<(Value, Vec<WidgetDef>)>,
    },
    /// A widget the frontend's extensions add after the definition's
    /// widgets (audio players, 3D previews, text previews).
    Extension {
        /// What is sent for it.
        sent: Sent,
    },
}

/// What an extension widget sends.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Sent {
    /// Nothing.
    Nothing,
    /// Always this value.
    Fixed(Value),
    /// Its value (from the file, else this default).
    Saved(Value),
    /// A live capture no file holds (a camera frame, a 3D view): `null` is
    /// sent and the input is listed as needing a value, for this reason.
    Live(&'static str),
}

/// One widget of a node definition.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WidgetDef {
    /// The input name (`control_after_generate` / `upload` for the extras).
    pub(crate) name: String,
    /// Its kind.
    pub(crate) kind: WidgetKind,
    /// Whether its value has a place in `widgets_values`.
    pub(crate) saved: bool,
}

/// One node class as conversion sees it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NodeDef {
    /// The title a node of this class gets (`display_name`).
    pub(crate) display_name: String,
    /// Widgets in the order their values are saved in `widgets_values`.
    pub(crate) widgets: Vec<WidgetDef>,
    /// The node can show a progress text (it has a hidden `UNIQUE_ID`):
    /// once shown, the frontend saves it as one more widget value, which is
    /// never sent.
    pub(crate) progress_text: bool,
    /// Widget layouts of other frontend versions, each told apart by its
    /// number of saved values (Load3D saved with 5 values, not 7).
    pub(crate) other_layouts: Vec<Vec<WidgetDef>>,
    /// Preview widgets old frontends sent once they had shown a result, and
    /// a freshly loaded workflow does not have.
    pub(crate) previews_not_sent: &'static [&'static str],
}

/// The node definitions conversion uses (widget layouts, not the
/// validator's input specs: those are `validate::Catalogue`): built from a
/// whole `/object_info` response or from per-class entries
/// (`/object_info/{class}`), so a caller can fetch only the classes a
/// workflow uses (see [`classes_used`](super::classes_used)).
#[derive(Debug, Clone, Default)]
pub struct NodeDefs {
    classes: HashMap<String, NodeDef>,
}

/// Why a catalogue entry could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NodeDefsError {
    /// The response is not a JSON object of classes.
    #[error("object_info must be a JSON object of node classes")]
    NotAnObject,
    /// One class has no `input` object.
    #[error("object_info class '{0}' has no 'input' object")]
    BadClass(String),
}

/// Input types the frontend draws as a widget (a value kept on the node)
/// rather than as a socket.
const VALUE_TYPES: &[&str] = &[
    "INT",
    "FLOAT",
    "STRING",
    "BOOLEAN",
    "COMBO",
    // Custom widgets of core nodes (webcam, recorder, 3D viewers, markdown).
    "WEBCAM",
    "AUDIO_RECORD",
    "LOAD_3D",
    "LOAD_3D_ANIMATION",
    "MARKDOWN",
];

fn hidden_kind(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s),
        Value::Array(a) => a.first().and_then(Value::as_str),
        _ => None,
    }
}

fn ext(name: &str, saved: bool, sent: Sent) -> WidgetDef {
    WidgetDef {
        name: name.into(),
        kind: WidgetKind::Extension { sent },
        saved,
    }
}

/// The widgets the frontend's own extensions add to some core nodes, after
/// the definition's widgets, learned from what real frontends saved and sent
/// (paths are of frontend 1.35.9's sources).
fn extension_widgets(class: &str) -> Vec<WidgetDef> {
    let empty = || Value::from("");
    match class {
        // The animated preview: saved, never sent.
        "SaveAnimatedWEBP" | "SaveAnimatedPNG" => vec![ext("preview", true, Sent::Nothing)],
        "SaveGLB" | "Preview3D" | "Preview3DAnimation" => {
            vec![ext("image", true, Sent::Saved(empty()))]
        }
        "LoadAudio" => vec![ext("audioUI", true, Sent::Fixed(empty()))],
        "SaveAudio" | "SaveAudioMP3" | "SaveAudioOpus" | "PreviewAudio" => {
            vec![ext("audioUI", false, Sent::Fixed(empty()))]
        }
        "RecordAudio" => vec![ext("recording", true, Sent::Nothing)],
        "PreviewAny" => vec![
            ext("preview", true, Sent::Fixed(empty())),
            ext("preview_text", true, Sent::Nothing),
            ext("previewMode", true, Sent::Saved(Value::Bool(false))),
        ],
        // The capture button, saved; its serializeValue gives `undefined`,
        // which the prompt's JSON drops
        // (src/extensions/core/webcamCapture.ts:105-113).
        "WebcamCapture" => vec![ext("waiting for camera...", true, Sent::Nothing)],
        _ => Vec::new(),
    }
}

/// Why Load3D's `image` cannot come from a file.
const LOAD3D_LIVE: &str = "the frontend captures its 3D view each time it queues \
     (an image, mask and normal map it uploads), which no file holds";

/// Why WebcamCapture's `image` cannot come from a file.
const WEBCAM_LIVE: &str = "the frontend takes a camera frame each time it queues \
     (it makes no prompt without a camera), which no file holds";

/// The widgets the frontend draws for one input of a core node in place of
/// the definition's, or `None` for the usual ones.
fn custom_input_widgets(class: &str, input: &str) -> Option<Vec<WidgetDef>> {
    let button = |name: &str, value: &str| ext(name, true, Sent::Saved(Value::from(value)));
    match (class, input) {
        // Three buttons, then the 3D view, whose value is a capture made
        // when queued (src/extensions/core/load3d.ts:238-292, 337-378). The
        // buttons have no `serialize: false`, so their values are sent
        // (src/utils/executionUtil.ts:91).
        ("Load3D", "image") => Some(vec![
            button("upload 3d model", "upload3dmodel"),
            button("upload extra resources", "uploadExtraResources"),
            button("clear", "clear"),
            ext("image", true, Sent::Live(LOAD3D_LIVE)),
        ]),
        // The camera view (src/extensions/core/webcamCapture.ts:13-65,
        // 116-145).
        ("WebcamCapture", "image") => Some(vec![ext("image", true, Sent::Live(WEBCAM_LIVE))]),
        _ => None,
    }
}

/// The widget layouts older frontends saved for a class, given today's.
fn other_layouts(class: &str, widgets: &[WidgetDef]) -> Vec<Vec<WidgetDef>> {
    match class {
        // Before the three buttons, one upload button followed
        // `model_file`: 5 values (model, upload, image, width, height).
        "Load3D" => {
            let mut old: Vec<WidgetDef> = Vec::with_capacity(widgets.len());
            for w in widgets {
                match w.name.as_str() {
                    "upload 3d model" => old.push(WidgetDef {
                        name: "upload".into(),
                        kind: WidgetKind::Upload,
                        saved: true,
                    }),
                    "upload extra resources" | "clear" => {}
                    _ => old.push(w.clone()),
                }
            }
            vec![old]
        }
        _ => Vec::new(),
    }
}

impl NodeDefs {
    /// An empty catalogue; add classes with [`NodeDefs::insert`].
    pub fn new() -> NodeDefs {
        NodeDefs::default()
    }

    /// Reads a whole `/object_info` response (`{class: entry, …}`).
    pub fn from_object_info(info: &Value) -> Result<NodeDefs, NodeDefsError> {
        let map = info.as_object().ok_or(NodeDefsError::NotAnObject)?;
        let mut catalogue = NodeDefs {
            classes: HashMap::with_capacity(map.len()),
        };
        for (class, entry) in map {
            catalogue.insert(class, entry)?;
        }
        Ok(catalogue)
    }

    /// Reads an already parsed `/object_info` object; classes without an
    /// `input` object are left out (the server would not run them either).
    pub fn from_object_info_map(map: &Map<String, Value>) -> NodeDefs {
        let mut catalogue = NodeDefs {
            classes: HashMap::with_capacity(map.len()),
        };
        for (class, entry) in map {
            let _ = catalogue.insert(class, entry);
        }
        catalogue
    }

    /// The built-in catalogue (`assets/object_info.json`, recorded from a
    /// real server), for converting without a server.
    pub fn builtin() -> NodeDefs {
        let info: Value = serde_json::from_str(include_str!("../../assets/object_info.json"))
            .expect("the built-in catalogue is valid JSON (pinned by a test)");
        NodeDefs::from_object_info(&info).expect("the built-in catalogue has the object_info shape")
    }

    /// Adds (or replaces) one class from its `/object_info` entry.
    pub fn insert(&mut self, class: &str, entry: &Value) -> Result<(), NodeDefsError> {
        let def = parse_class(class, entry).ok_or_else(|| NodeDefsError::BadClass(class.into()))?;
        self.classes.insert(class.to_string(), def);
        Ok(())
    }

    /// Adds every class of `other` (replacing classes of the same name).
    pub fn extend(&mut self, other: NodeDefs) {
        self.classes.extend(other.classes);
    }

    /// Only the named classes of this catalogue (those it has).
    pub fn subset(&self, classes: &[String]) -> NodeDefs {
        NodeDefs {
            classes: classes
                .iter()
                .filter_map(|c| Some((c.clone(), self.classes.get(c)?.clone())))
                .collect(),
        }
    }

    /// Whether the catalogue knows `class`.
    pub fn contains(&self, class: &str) -> bool {
        self.classes.contains_key(class)
    }

    /// Number of classes.
    pub fn len(&self) -> usize {
        self.classes.len()
    }

    /// Whether there are no classes.
    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }

    pub(crate) fn get(&self, class: &str) -> Option<&NodeDef> {
        self.classes.get(class)
    }
}

/// The input names of one section, in `input_order` when the server gives
/// it, else in JSON order.
fn section_names<'a>(
    entry: &'a Value,
    specs: &'a Map<String, Value>,
    section: &str,
) -> Vec<&'a str> {
    let ordered: Option<Vec<&str>> = entry
        .get("input_order")
        .and_then(|o| o.get(section))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect());
    match ordered {
        Some(mut names) => {
            // A name missing from `input_order` still gets its widget, last.
            for k in specs.keys() {
                if !names.contains(&k.as_str()) {
                    names.push(k);
                }
            }
            names
        }
        None => specs.keys().map(String::as_str).collect(),
    }
}

fn parse_class(class: &str, entry: &Value) -> Option<NodeDef> {
    let input = entry.get("input")?.as_object()?;
    let mut widgets = Vec::new();
    for section in ["required", "optional"] {
        let Some(specs) = input.get(section).and_then(Value::as_object) else {
            continue;
        };
        for name in section_names(entry, specs, section) {
            let Some(spec) = specs.get(name) else {
                continue;
            };
            match custom_input_widgets(class, name) {
                Some(custom) => widgets.extend(custom),
                None => widgets.extend(widgets_of(name, spec)),
            }
        }
    }
    widgets.extend(extension_widgets(class));
    let other_layouts = other_layouts(class, &widgets);
    let progress_text = input
        .get("hidden")
        .and_then(Value::as_object)
        .is_some_and(|h| h.values().any(|v| hidden_kind(v) == Some("UNIQUE_ID")));
    let display_name = entry
        .get("display_name")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or(class)
        .to_string();
    Some(NodeDef {
        display_name,
        widgets,
        progress_text,
        other_layouts,
        previews_not_sent: match class {
            // Added only once a video was shown, neither saved nor sent
            // (src/composables/node/useNodeImage.ts:167-174).
            "SaveWEBM" => &["video-preview"],
            _ => &[],
        },
    })
}

/// The widgets one input spec makes: none for a socket, else the value
/// widget and the extras the frontend adds after it.
fn widgets_of(name: &str, spec: &Value) -> Vec<WidgetDef> {
    let (type_spec, options) = match spec {
        Value::Array(parts) if !parts.is_empty() => {
            (&parts[0], parts.get(1).and_then(Value::as_object))
        }
        Value::String(_) => (spec, None),
        _ => return Vec::new(),
    };
    let opt = |key: &str| options.and_then(|o| o.get(key));
    let flag = |key: &str| opt(key).and_then(Value::as_bool).unwrap_or(false);
    let (type_name, combo): (&str, Option<&Vec<Value>>) = match type_spec {
        Value::Array(list) => ("COMBO", Some(list)),
        Value::String(s) if s == "COMBO" => ("COMBO", opt("options").and_then(Value::as_array)),
        Value::String(s) if s == "COMFY_DYNAMICCOMBO_V3" => {
            return dynamic_combo(name, opt("options"), opt("default"));
        }
        Value::String(s) => (s.as_str(), None),
        _ => return Vec::new(),
    };
    if !VALUE_TYPES.contains(&type_name) || flag("forceInput") {
        return Vec::new();
    }
    let default = match opt("default") {
        Some(v) => v.clone(),
        None => match type_name {
            // The frontend's number widgets start at 0 without a default.
            "INT" | "FLOAT" => Value::from(0),
            "BOOLEAN" => Value::Bool(false),
            "COMBO" => combo
                .and_then(|c| c.first())
                .cloned()
                .unwrap_or(Value::Null),
            _ => Value::from(""),
        },
    };
    let mut out = vec![WidgetDef {
        name: name.to_string(),
        kind: WidgetKind::Value {
            default,
            dynamic_prompts: type_name == "STRING" && flag("dynamicPrompts"),
        },
        saved: true,
    }];
    if flag("control_after_generate") {
        out.push(WidgetDef {
            name: "control_after_generate".into(),
            kind: WidgetKind::Control,
            saved: true,
        });
    }
    // `file_upload` (Load3D's model) gets no button of its own in 1.35.9:
    // only these flags do (src/extensions/core/uploadImage.ts:14-18,
    // uploadAudio.ts:165).
    if ["image_upload", "video_upload", "audio_upload"]
        .iter()
        .any(|k| flag(k))
    {
        out.push(WidgetDef {
            name: "upload".into(),
            kind: WidgetKind::Upload,
            saved: true,
        });
    }
    out
}

/// A V3 dynamic combo: `options` is a list of `{key, inputs}`; each option's
/// widgets are named `<combo>.<input>`.
fn dynamic_combo(name: &str, options: Option<&Value>, default: Option<&Value>) -> Vec<WidgetDef> {
    let mut parsed = Vec::new();
    for o in options.and_then(Value::as_array).into_iter().flatten() {
        let Some(key) = o.get("key") else { continue };
        let mut widgets = Vec::new();
        if let Some(inputs) = o.get("inputs").and_then(Value::as_object) {
            for section in ["required", "optional"] {
                for (n, spec) in inputs
                    .get(section)
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                {
                    widgets.extend(widgets_of(&format!("{name}.{n}"), spec));
                }
            }
        }
        parsed.push((key.clone(), widgets));
    }
    let default = default
        .cloned()
        .or_else(|| parsed.first().map(|(k, _)| k.clone()))
        .unwrap_or(Value::Null);
    vec![WidgetDef {
        name: name.to_string(),
        kind: WidgetKind::DynamicCombo {
            default,
            options: parsed,
        },
        saved: true,
    }]
}
