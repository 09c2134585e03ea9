//! The UI-format graph, read into owned typed parts: nodes with their
//! slots, links by id, subgraph definitions and group-node definitions.
//! Only the fields conversion uses are kept; everything else (positions,
//! sizes, colours) is ignored.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::ConvertError;

/// The id of the subgraph input node in a subgraph definition's links.
pub(crate) const SUBGRAPH_INPUT: &str = "-10";
/// The id of the subgraph output node.
pub(crate) const SUBGRAPH_OUTPUT: &str = "-20";

/// An input slot of a node.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Slot {
    pub(crate) name: String,
    pub(crate) ty: String,
    pub(crate) link: Option<i64>,
    /// The widget this input belongs to (a widget converted to an input).
    pub(crate) widget: Option<String>,
}

/// An output slot of a node.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OutSlot {
    pub(crate) ty: String,
    pub(crate) links: Vec<i64>,
}

/// Node modes the conversion cares about.
pub(crate) const MODE_NEVER: i64 = 2;
pub(crate) const MODE_BYPASS: i64 = 4;

/// One node as saved.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub(crate) id: String,
    pub(crate) ty: String,
    pub(crate) mode: i64,
    pub(crate) title: Option<String>,
    pub(crate) inputs: Vec<Slot>,
    pub(crate) outputs: Vec<OutSlot>,
    pub(crate) widgets_values: Option<Value>,
    pub(crate) properties: Map<String, Value>,
}

/// A link from an output slot to an input slot.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Link {
    pub(crate) origin: String,
    pub(crate) origin_slot: usize,
    pub(crate) target: String,
    pub(crate) target_slot: usize,
}

/// Nodes and links of one graph (the root or a subgraph definition).
#[derive(Debug, Clone, Default)]
pub(crate) struct Graph {
    pub(crate) nodes: Vec<Node>,
    pub(crate) index: HashMap<String, usize>,
    pub(crate) links: HashMap<i64, Link>,
}

impl Graph {
    pub(crate) fn reindex(&mut self) {
        self.index = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.clone(), i))
            .collect();
    }
}

/// An input or output of a subgraph definition.
#[derive(Debug, Clone)]
pub(crate) struct SubgraphIo {
    pub(crate) name: String,
    pub(crate) ty: String,
    pub(crate) link_ids: Vec<i64>,
}

/// A subgraph definition (`definitions.subgraphs[]`).
#[derive(Debug, Clone)]
pub(crate) struct Subgraph {
    pub(crate) graph: Graph,
    pub(crate) inputs: Vec<SubgraphIo>,
    pub(crate) outputs: Vec<SubgraphIo>,
}

/// A whole UI-format workflow.
#[derive(Debug, Clone)]
pub(crate) struct Workflow {
    pub(crate) root: Graph,
    pub(crate) subgraphs: HashMap<String, Subgraph>,
    /// `extra.groupNodes`: name → definition.
    pub(crate) group_nodes: Map<String, Value>,
}

/// A node id as the key it becomes: numbers in decimal, strings as they are.
pub(crate) fn id_key(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(
            n.as_i64()
                .map(|i| i.to_string())
                .unwrap_or_else(|| n.to_string()),
        ),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn str_of(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

fn usize_of(v: Option<&Value>) -> Option<usize> {
    v.and_then(|v| {
        v.as_u64().or_else(|| {
            v.as_f64()
                .filter(|f| *f >= 0.0 && f.fract() == 0.0)
                .map(|f| f as u64)
        })
    })
    .and_then(|n| usize::try_from(n).ok())
}

fn link_id(v: Option<&Value>) -> Option<i64> {
    v.and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
}

/// A saved node's `inputs` and `outputs` slot lists, with their links
/// (one reading for graph nodes and group-node inner nodes).
pub(super) fn slots_of(obj: &serde_json::Map<String, Value>) -> (Vec<Slot>, Vec<OutSlot>) {
    let inputs = obj
        .get("inputs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|s| Slot {
                    name: str_of(s.get("name")),
                    ty: str_of(s.get("type")),
                    link: link_id(s.get("link")),
                    widget: s
                        .get("widget")
                        .and_then(|w| w.get("name"))
                        .and_then(Value::as_str)
                        .map(str::to_string),
                })
                .collect()
        })
        .unwrap_or_default();
    let outputs = obj
        .get("outputs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|s| OutSlot {
                    ty: str_of(s.get("type")),
                    links: s
                        .get("links")
                        .and_then(Value::as_array)
                        .map(|l| l.iter().filter_map(|x| link_id(Some(x))).collect())
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default();
    (inputs, outputs)
}

fn parse_node(v: &Value, at: &str) -> Result<Node, ConvertError> {
    let bad = |why: &str| ConvertError::Malformed(format!("{at}: {why}"));
    let obj = v
        .as_object()
        .ok_or_else(|| bad("a node is not an object"))?;
    let id = obj
        .get("id")
        .and_then(id_key)
        .ok_or_else(|| bad("a node has no id"))?;
    let ty = obj
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(&format!("node {id} has no type")))?
        .to_string();
    let (inputs, outputs) = slots_of(obj);
    Ok(Node {
        id,
        ty,
        mode: obj.get("mode").and_then(Value::as_i64).unwrap_or(0),
        title: obj.get("title").and_then(Value::as_str).map(str::to_string),
        inputs,
        outputs,
        widgets_values: obj.get("widgets_values").cloned(),
        properties: obj
            .get("properties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
    })
}

/// Links are saved as arrays `[id, origin, origin_slot, target, target_slot,
/// type]` (root graphs) or objects (subgraphs, newer root graphs).
fn parse_link(v: &Value) -> Option<(i64, Link)> {
    match v {
        Value::Array(a) => Some((
            link_id(a.first())?,
            Link {
                origin: id_key(a.get(1)?)?,
                origin_slot: usize_of(a.get(2))?,
                target: id_key(a.get(3)?)?,
                target_slot: usize_of(a.get(4))?,
            },
        )),
        Value::Object(o) => Some((
            link_id(o.get("id"))?,
            Link {
                origin: id_key(o.get("origin_id")?)?,
                origin_slot: usize_of(o.get("origin_slot"))?,
                target: id_key(o.get("target_id")?)?,
                target_slot: usize_of(o.get("target_slot"))?,
            },
        )),
        _ => None,
    }
}

fn parse_graph(obj: &Map<String, Value>, at: &str) -> Result<Graph, ConvertError> {
    let nodes = obj
        .get("nodes")
        .and_then(Value::as_array)
        .ok_or_else(|| ConvertError::Malformed(format!("{at}: 'nodes' is not a list")))?
        .iter()
        .map(|n| parse_node(n, at))
        .collect::<Result<Vec<_>, _>>()?;
    let mut links = HashMap::new();
    if let Some(list) = obj.get("links").and_then(Value::as_array) {
        for l in list {
            if let Some((id, link)) = parse_link(l) {
                links.insert(id, link);
            }
        }
    }
    let mut graph = Graph {
        nodes,
        index: HashMap::new(),
        links,
    };
    graph.reindex();
    if graph.index.len() != graph.nodes.len() {
        return Err(ConvertError::Malformed(format!(
            "{at}: two nodes share an id"
        )));
    }
    Ok(graph)
}

fn parse_io(v: Option<&Value>) -> Vec<SubgraphIo> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|io| SubgraphIo {
                    name: str_of(io.get("name")),
                    ty: str_of(io.get("type")),
                    link_ids: io
                        .get("linkIds")
                        .and_then(Value::as_array)
                        .map(|l| l.iter().filter_map(|x| link_id(Some(x))).collect())
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Reads a UI-format workflow object.
pub(crate) fn parse(ui: &Map<String, Value>) -> Result<Workflow, ConvertError> {
    let root = parse_graph(ui, "the workflow")?;
    let mut subgraphs = HashMap::new();
    if let Some(list) = ui
        .get("definitions")
        .and_then(|d| d.get("subgraphs"))
        .and_then(Value::as_array)
    {
        for s in list {
            let Some(obj) = s.as_object() else {
                continue;
            };
            let Some(id) = obj.get("id").and_then(Value::as_str) else {
                continue;
            };
            let at = format!("subgraph {id}");
            subgraphs.insert(
                id.to_string(),
                Subgraph {
                    graph: parse_graph(obj, &at)?,
                    inputs: parse_io(obj.get("inputs")),
                    outputs: parse_io(obj.get("outputs")),
                },
            );
        }
    }
    let group_nodes = ui
        .get("extra")
        .and_then(|e| e.get("groupNodes"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    Ok(Workflow {
        root,
        subgraphs,
        group_nodes,
    })
}
