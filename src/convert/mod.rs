//! UI-format workflows → API-format prompts, as ComfyUI's frontend makes
//! them (`graphToPrompt`): widget values mapped to input names by the node
//! definitions, links resolved through Reroutes, PrimitiveNodes, bypassed
//! and muted nodes, group nodes and subgraphs.
//!
//! A pure function of the file and a node [`NodeDefs`]; it must not know
//! servers, manifests or jobs. Callers get the catalogue where they like (the
//! built-in one, a server's `/object_info`, or per class for the classes
//! [`classes_used`] lists). Where today's catalogue differs from the one the
//! file was saved with, a named [`RuleKind`] says what was done, so a
//! conversion can be explained. Inputs no file can hold (live captures) are
//! listed as [`NeedsValue`]; what supplies them is the caller's business.
//!
//! ```
//! use comfy_batch::convert::{NodeDefs, convert};
//! let info = serde_json::json!({"EmptyImage": {"input": {"required": {
//!     "width": ["INT", {"default": 512}], "height": ["INT", {"default": 512}]}},
//!     "output": ["IMAGE"], "display_name": "EmptyImage"}});
//! let catalogue = NodeDefs::from_object_info(&info).unwrap();
//! let ui = serde_json::json!({"nodes": [{"id": 1, "type": "EmptyImage",
//!     "widgets_values": [64, 32]}], "links": []});
//! let done = convert(ui.as_object().unwrap(), &catalogue).unwrap();
//! assert_eq!(done.prompt["1"]["inputs"]["width"], 64);
//! ```

mod catalogue;
mod comments;
pub mod embedded;
mod flatten;
mod graph;
mod groupnode;

use std::fmt;

use serde_json::{Map, Value};

pub use catalogue::{NodeDefs, NodeDefsError};

/// A difference between what a file says and what today's catalogue
/// expects, and what conversion did about it. Each has a test and a name
/// that the conversion report shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RuleKind {
    /// The file has fewer widget values than today's definition has
    /// widgets (an input added since): the frontend's default is sent.
    MissingWidgetDefault,
    /// The file saved a value for an upload button (`"upload": "image"`);
    /// old frontends sent it, today's does not, nor does comfy-batch.
    UploadValueNotSent,
    /// `//` or `/* */` comments were removed from a `dynamicPrompts` text,
    /// as the frontend does when it queues.
    CommentsStripped,
    /// A `dynamicPrompts` text holds `{a|b}` choices: the frontend draws one
    /// at random each time it queues; comfy-batch keeps the text as it is
    /// (use `templates:` in a manifest to sweep variants).
    DynamicPromptKept,
    /// The node has no saved title, so its `_meta.title` is the catalogue's
    /// `display_name`; the frontend uses its own bundled translation of the
    /// name when it has one, which can lag behind the server's (a renamed
    /// node keeps its old name there).
    TitleFromDisplayName,
    /// The node's type is one the frontend renames when it loads a
    /// workflow (`T2IAdapterLoader` → `ControlNetLoader`, a typo fixed, an
    /// animation node merged into its plain one): the new class is sent.
    RenamedClass,
    /// The file has more widget values than the node has widgets: the
    /// frontend maps what maps and ignores the rest, and so does comfy-batch.
    ExtraWidgetValuesIgnored,
    /// The number of values identifies a widget layout of another frontend
    /// version (Load3D saved with 5 values, not 7): it was read that way.
    OtherVersionLayout,
    /// Old frontends sent the preview widget of a video they had shown
    /// (SaveWEBM's `video-preview`); a freshly loaded workflow has none.
    PreviewNotSent,
}

impl RuleKind {
    /// The rule's name as reports show it.
    pub fn name(self) -> &'static str {
        match self {
            RuleKind::MissingWidgetDefault => "missing-widget-default",
            RuleKind::UploadValueNotSent => "upload-value-not-sent",
            RuleKind::CommentsStripped => "comments-stripped",
            RuleKind::DynamicPromptKept => "dynamic-prompt-kept",
            RuleKind::TitleFromDisplayName => "title-from-display-name",
            RuleKind::RenamedClass => "renamed-class",
            RuleKind::ExtraWidgetValuesIgnored => "extra-widget-values-ignored",
            RuleKind::OtherVersionLayout => "other-version-layout",
            RuleKind::PreviewNotSent => "preview-not-sent",
        }
    }

    /// Whether a user should be warned when it fires.
    pub fn is_warning(self) -> bool {
        matches!(self, RuleKind::DynamicPromptKept)
    }
}

impl fmt::Display for RuleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One use of a rule: which node and input it touched.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RuleUse {
    /// The rule.
    pub rule: RuleKind,
    /// The node's id in the prompt (`5`, `12:3`).
    pub node: String,
    /// The input (widget) name.
    pub input: String,
}

/// What a conversion did besides the plain mapping.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Every rule use, in the order they happened.
    pub rules: Vec<RuleUse>,
}

impl Report {
    pub(crate) fn fire(&mut self, node: &str, input: &str, rule: RuleKind) {
        self.rules.push(RuleUse {
            rule,
            node: node.to_string(),
            input: input.to_string(),
        });
    }

    /// Whether `rule` fired on `node`'s `input`.
    pub fn fired(&self, rule: RuleKind, node: &str, input: &str) -> bool {
        self.rules
            .iter()
            .any(|r| r.rule == rule && r.node == node && r.input == input)
    }

    /// The rules used and how often, in rule order.
    pub fn counts(&self) -> Vec<(RuleKind, usize)> {
        let mut out: Vec<(RuleKind, usize)> = Vec::new();
        let mut rules: Vec<RuleKind> = self.rules.iter().map(|r| r.rule).collect();
        rules.sort();
        for r in rules {
            match out.last_mut() {
                Some((last, n)) if *last == r => *n += 1,
                _ => out.push((r, 1)),
            }
        }
        out
    }

    /// One line per warning the user should see.
    pub fn warnings(&self) -> Vec<String> {
        self.rules
            .iter()
            .filter(|r| r.rule.is_warning())
            .map(|r| match r.rule {
                RuleKind::DynamicPromptKept => format!(
                    "node {} input '{}' has {{a|b}} choices, which the frontend draws at random; \
                     the text is sent as it is (sweep variants with `templates:` in a manifest)",
                    r.node, r.input
                ),
                other => format!("node {} input '{}': {other}", r.node, r.input),
            })
            .collect()
    }
}

/// An input no file can give a value for: the frontend makes it live (a
/// camera frame, a capture of a 3D view) each time it queues. The prompt
/// holds `null` there; a caller must supply a value or refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeedsValue {
    /// The node's id in the prompt.
    pub node: String,
    /// Its class.
    pub class: String,
    /// Its title (or class).
    pub title: String,
    /// The input.
    pub input: String,
    /// Why the file cannot give it.
    pub why: &'static str,
}

impl fmt::Display for NeedsValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "node {} ({}, '{}') input '{}' needs a value: {}",
            self.node, self.class, self.title, self.input, self.why
        )
    }
}

/// A converted workflow.
#[derive(Debug, Clone)]
pub struct Converted {
    /// The API-format prompt: node id → `{inputs, class_type, _meta}`.
    pub prompt: Map<String, Value>,
    /// What rules were used.
    pub report: Report,
    /// The inputs that need a value the file cannot give (in prompt order).
    pub needs: Vec<NeedsValue>,
}

/// Why a workflow cannot be converted. Messages are one line each.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConvertError {
    /// A node class the catalogue does not have.
    #[error("node {node} ({}) has class '{class}', which the node catalogue does not have{}",
        title.as_deref().map_or_else(|| "untitled".to_string(), |t| format!("'{t}'")),
        unknown_hint(pack.as_deref(), search_name.as_deref()))]
    UnknownClass {
        /// The node id in the prompt.
        node: String,
        /// Its class (`type`).
        class: String,
        /// Its title, if it has one.
        title: Option<String>,
        /// The custom node pack (`cnr_id`/`aux_id` in its properties).
        pack: Option<String>,
        /// `Node name for S&R`, when it differs from the class.
        search_name: Option<String>,
    },
    /// A link whose origin node does not exist.
    #[error(
        "node {node} input '{input}' is linked to node {missing}, which is not in the workflow"
    )]
    MissingNode {
        /// The node whose input is linked.
        node: String,
        /// The input.
        input: String,
        /// The missing node's id.
        missing: String,
    },
    /// Links that go round in a circle (e.g. Reroutes feeding each other).
    #[error("node {node} ({class}) is part of a circle of links")]
    Cycle {
        /// A node on the circle.
        node: String,
        /// Its class.
        class: String,
    },
    /// A chain of Reroutes / bypassed nodes longer than any real workflow has.
    #[error(
        "node {node} ({class}) is reached through more than {hops} Reroutes, bypassed nodes or subgraph boundaries: the chain is too long"
    )]
    ChainTooLong {
        /// A node on the chain.
        node: String,
        /// Its class.
        class: String,
        /// The limit.
        hops: usize,
    },
    /// A subgraph that contains itself, or nesting deeper than 32 levels.
    #[error(
        "node {node} instantiates subgraph {subgraph} inside itself (or nests subgraphs too deeply)"
    )]
    SubgraphLoop {
        /// The instance node.
        node: String,
        /// The subgraph id.
        subgraph: String,
    },
    /// A group node whose definition is missing or unreadable.
    #[error("node {node} is group node '{name}': {why}")]
    GroupNode {
        /// The node id.
        node: String,
        /// The group node's name.
        name: String,
        /// What is wrong.
        why: String,
    },
    /// The JSON does not have the shape of a UI-format workflow.
    #[error("not a readable UI-format workflow: {0}")]
    Malformed(String),
}

fn unknown_hint(pack: Option<&str>, search: Option<&str>) -> String {
    if let Some(core) = pack.filter(|p| p.starts_with("comfy-core")) {
        return format!(" (a ComfyUI core node, saved with {core}): update ComfyUI");
    }
    match (pack, search) {
        (Some(p), Some(s)) => format!(" (custom node pack '{p}', node '{s}'): install it"),
        (Some(p), None) => format!(" (custom node pack '{p}'): install it"),
        (None, Some(s)) => format!(" (node '{s}'): is its custom node pack installed?"),
        (None, None) => ": is its custom node pack installed?".into(),
    }
}

/// All the problems that stopped a conversion (every unknown class at once).
#[derive(Debug, Clone, PartialEq)]
pub struct ConvertErrors(pub Vec<ConvertError>);

impl fmt::Display for ConvertErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("; "))
    }
}

impl std::error::Error for ConvertErrors {}

/// Which format a workflow JSON object is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The API format: `{id: {class_type, inputs}}`.
    Api,
    /// The UI format: `{nodes: [...], links: [...]}`.
    Ui,
    /// Neither.
    Unknown,
}

/// Tells the formats apart.
pub fn detect(value: &Value) -> Format {
    let Some(obj) = value.as_object() else {
        return Format::Unknown;
    };
    if obj.get("nodes").is_some_and(Value::is_array) {
        return Format::Ui;
    }
    let api = !obj.is_empty()
        && obj.values().all(|n| {
            n.get("class_type").is_some_and(Value::is_string)
                && n.get("inputs").is_some_and(Value::is_object)
        });
    if api { Format::Api } else { Format::Unknown }
}

/// Converts a UI-format workflow with `catalogue`. Every unknown class is
/// reported at once.
pub fn convert(ui: &Map<String, Value>, catalogue: &NodeDefs) -> Result<Converted, ConvertErrors> {
    let mut workflow = graph::parse(ui).map_err(|e| ConvertErrors(vec![e]))?;
    groupnode::expand(&mut workflow, catalogue).map_err(ConvertErrors)?;
    let mut report = Report::default();
    let (prompt, needs) =
        flatten::convert(&workflow, catalogue, &mut report).map_err(ConvertErrors)?;
    Ok(Converted {
        prompt,
        report,
        needs,
    })
}

/// The node classes a UI-format workflow uses that the server must know:
/// every node type except the frontend's own nodes, subgraph instances and
/// group nodes (whose inner classes are listed instead), sorted, each once.
/// Frontend-only helpers of custom packs (KJNodes' SetNode…) are listed: a
/// server that defines such a class decides what it is.
pub fn classes_used(ui: &Map<String, Value>) -> Vec<String> {
    let mut out = std::collections::BTreeSet::new();
    let Ok(workflow) = graph::parse(ui) else {
        return Vec::new();
    };
    let mut graphs = vec![&workflow.root];
    graphs.extend(workflow.subgraphs.values().map(|s| &s.graph));
    for g in graphs {
        for n in &g.nodes {
            if flatten::is_frontend_only(&n.ty)
                || workflow.subgraphs.contains_key(&n.ty)
                || groupnode::is_group_node(&n.ty)
            {
                continue;
            }
            out.insert(flatten::class_of(&n.ty).to_string());
        }
    }
    for def in workflow.group_nodes.values() {
        for n in def
            .get("nodes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(t) = n.get("type").and_then(Value::as_str)
                && !flatten::is_frontend_only(t)
            {
                // Not renamed inside a group node (see groupnode::expand).
                out.insert(t.to_string());
            }
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests;
