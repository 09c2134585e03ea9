//! Flattening and resolution, as the frontend's `graphToPrompt` does it:
//! every node becomes an executable node with an execution id (subgraph
//! instances expand into `<instance>:<inner>` ids), PrimitiveNodes push their
//! values into the widgets they feed, and each input is resolved through
//! Reroutes, bypassed nodes and subgraph boundaries to the output that
//! really feeds it, or to a widget value. Node types are first renamed as
//! the frontend renames them on load; live widgets (a camera frame) are sent
//! as `null` and listed as needing a value.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::catalogue::{NodeDef, NodeDefs, Sent, WidgetDef, WidgetKind};
use super::comments::strip_comments;
use super::graph::{
    Graph, MODE_BYPASS, MODE_NEVER, Node, SUBGRAPH_INPUT, SUBGRAPH_OUTPUT, Slot, Subgraph, Workflow,
};
use super::{ConvertError, NeedsValue, Report, RuleKind};

/// Deepest subgraph nesting accepted (a definition that contains itself
/// would otherwise expand forever).
const MAX_DEPTH: usize = 32;

/// The most slots one input may be resolved through (Reroutes, bypassed
/// nodes, subgraph boundaries): real chains are a few dozen long, and the
/// walk is recursive.
const MAX_HOPS: usize = 1024;

/// Node types the frontend implements itself: never sent to the server.
fn virtual_kind(ty: &str) -> Option<Virtual> {
    Some(match ty {
        "Reroute" => Virtual::Reroute,
        "PrimitiveNode" => Virtual::Primitive,
        "Note" | "MarkdownNote" => Virtual::Note,
        _ => return None,
    })
}

/// The class a node type is loaded as: the frontend renames these types
/// when it loads a workflow, before it looks them up, at the top level and
/// in subgraphs (frontend 1.35.9, src/scripts/app.ts:1122-1129), never inside
/// group nodes (see [`super::groupnode`]).
pub(crate) fn class_of(ty: &str) -> &str {
    match ty {
        "T2IAdapterLoader" => "ControlNetLoader",
        "ConditioningAverage " => "ConditioningAverage",
        "SDV_img2vid_Conditioning" => "SVD_img2vid_Conditioning",
        "Load3DAnimation" => "Load3D",
        "Preview3DAnimation" => "Preview3D",
        other => other,
    }
}

/// Frontend-only helpers of popular custom node packs, used when the
/// catalogue does not define the type itself.
fn pack_virtual_kind(ty: &str) -> Option<Virtual> {
    Some(match ty {
        // KJNodes: a GetNode outputs what the SetNode of the same name is fed.
        "SetNode" => Virtual::Reroute,
        "GetNode" => Virtual::Get,
        // rgthree: a reroute, and canvas helpers with nothing to run.
        "Reroute (rgthree)" => Virtual::Reroute,
        "Fast Groups Muter (rgthree)"
        | "Fast Groups Bypasser (rgthree)"
        | "Fast Muter (rgthree)"
        | "Fast Bypasser (rgthree)"
        | "Bookmark (rgthree)"
        | "Label (rgthree)" => Virtual::Note,
        _ => return None,
    })
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Virtual {
    Reroute,
    Get,
    Primitive,
    Note,
}

#[derive(Debug)]
enum Kind<'w> {
    Real(&'w NodeDef),
    Virtual(Virtual),
    Instance(&'w Subgraph),
    /// A node whose class is unknown (already reported); resolves like a
    /// real node so the remaining errors can still be found.
    Unknown,
}

#[derive(Debug, Clone)]
struct Widget {
    name: String,
    value: Value,
    kind: WidgetKind,
}

#[derive(Debug)]
struct Dto<'w> {
    id: String,
    /// `""` at the root, `"5:"` inside instance 5, `"5:7:"` deeper.
    prefix: String,
    graph: &'w Graph,
    node: &'w Node,
    /// The class it is loaded as (see [`class_of`]).
    class: &'w str,
    /// The DTO of the subgraph instance this node is inside.
    instance: Option<usize>,
    kind: Kind<'w>,
    inputs: Vec<Slot>,
    widgets: Vec<Widget>,
}

/// What an input resolves to.
#[derive(Debug, Clone, PartialEq)]
enum Resolved {
    Link(String, usize),
    Widget(Value),
}

struct Flat<'w> {
    dtos: Vec<Dto<'w>>,
    by_id: HashMap<String, usize>,
    workflow: &'w Workflow,
}

/// A prompt, and the inputs in it that need a value no file holds.
pub(crate) type Built = (Map<String, Value>, Vec<NeedsValue>);

/// Builds the API prompt of a parsed workflow.
pub(crate) fn convert(
    workflow: &Workflow,
    catalogue: &NodeDefs,
    report: &mut Report,
) -> Result<Built, Vec<ConvertError>> {
    let mut flat = Flat {
        dtos: Vec::new(),
        by_id: HashMap::new(),
        workflow,
    };
    let mut errors = Vec::new();
    let mut stack = Vec::new();
    flat.add_graph(
        &workflow.root,
        "",
        None,
        catalogue,
        report,
        &mut errors,
        &mut stack,
    );
    if !errors.is_empty() {
        return Err(errors);
    }
    flat.apply_primitives();
    flat.output(report).map_err(|e| vec![e])
}

/// The custom node pack a node comes from, as its properties name it.
fn pack_of(node: &Node) -> Option<String> {
    let p = &node.properties;
    let get = |k: &str| p.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    get("cnr_id").or_else(|| get("aux_id")).map(|pack| {
        match (pack, get("ver")) {
            // A core node the server lacks: the server is older than the file.
            ("comfy-core", Some(ver)) => format!("comfy-core {ver}"),
            _ => pack.to_string(),
        }
    })
}

impl<'w> Flat<'w> {
    #[expect(clippy::too_many_arguments, reason = "one recursive walk")]
    fn add_graph(
        &mut self,
        graph: &'w Graph,
        prefix: &str,
        instance: Option<usize>,
        catalogue: &'w NodeDefs,
        report: &mut Report,
        errors: &mut Vec<ConvertError>,
        stack: &mut Vec<&'w str>,
    ) {
        // The root graph in the frontend's execution order (it decides the
        // order of subgraph instances' nodes in the prompt); inner nodes in
        // their saved order, as the frontend walks them.
        let order: Vec<usize> = if instance.is_none() {
            execution_order(graph)
        } else {
            (0..graph.nodes.len()).collect()
        };
        for node in order.into_iter().map(|i| &graph.nodes[i]) {
            let id = format!("{prefix}{}", node.id);
            let virtual_type = virtual_kind(&node.ty)
                .or_else(|| pack_virtual_kind(&node.ty).filter(|_| !catalogue.contains(&node.ty)));
            let (kind, widgets) = if let Some(v) = virtual_type {
                let widgets = match (v, &node.widgets_values) {
                    (Virtual::Primitive, Some(Value::Array(a))) if !a.is_empty() => vec![Widget {
                        name: "value".into(),
                        value: a[0].clone(),
                        kind: WidgetKind::Control,
                    }],
                    _ => Vec::new(),
                };
                (Kind::Virtual(v), widgets)
            } else if let Some((key, sg)) = self.workflow.subgraphs.get_key_value(&node.ty) {
                if stack.len() >= MAX_DEPTH || stack.contains(&key.as_str()) {
                    errors.push(ConvertError::SubgraphLoop {
                        node: id.clone(),
                        subgraph: node.ty.clone(),
                    });
                    continue;
                }
                (Kind::Instance(sg), Vec::new())
            } else if let Some(def) = catalogue.get(class_of(&node.ty)) {
                if class_of(&node.ty) != node.ty {
                    report.fire(&id, "class_type", RuleKind::RenamedClass);
                }
                (Kind::Real(def), widgets_of(&id, node, def, report))
            } else {
                errors.push(ConvertError::UnknownClass {
                    node: id.clone(),
                    class: node.ty.clone(),
                    title: node.title.clone(),
                    pack: pack_of(node),
                    search_name: node
                        .properties
                        .get("Node name for S&R")
                        .and_then(Value::as_str)
                        .filter(|s| *s != node.ty)
                        .map(str::to_string),
                });
                (Kind::Unknown, Vec::new())
            };
            let inputs = match &kind {
                Kind::Instance(sg) => sg
                    .inputs
                    .iter()
                    .map(|io| {
                        let saved = node.inputs.iter().find(|s| s.name == io.name);
                        Slot {
                            name: io.name.clone(),
                            ty: io.ty.clone(),
                            link: saved.and_then(|s| s.link),
                            widget: None,
                        }
                    })
                    .collect(),
                _ => node.inputs.clone(),
            };
            let index = self.dtos.len();
            self.dtos.push(Dto {
                id: id.clone(),
                prefix: prefix.to_string(),
                graph,
                node,
                class: class_of(&node.ty),
                instance,
                kind,
                inputs,
                widgets,
            });
            self.by_id.insert(id.clone(), index);
            if let Kind::Instance(sg) = self.dtos[index].kind {
                stack.push(node.ty.as_str());
                let inner = format!("{id}:");
                self.add_graph(
                    &sg.graph,
                    &inner,
                    Some(index),
                    catalogue,
                    report,
                    errors,
                    stack,
                );
                stack.pop();
                self.promote_widgets(index, sg);
            }
        }
    }

    /// A subgraph instance gets a widget for each of its inputs that feeds
    /// an inner widget; the instance's `widgets_values` fill them in order,
    /// else the inner widget's value.
    fn promote_widgets(&mut self, index: usize, sg: &'w Subgraph) {
        let node = self.dtos[index].node;
        let prefix = format!("{}:", self.dtos[index].id);
        let saved: &[Value] = match &node.widgets_values {
            Some(Value::Array(a)) => a,
            _ => &[],
        };
        // (input slot, name, the inner widget's value)
        let mut candidates: Vec<(usize, String, Value)> = Vec::new();
        for (i, io) in sg.inputs.iter().enumerate() {
            for link_id in &io.link_ids {
                let Some(link) = sg.graph.links.get(link_id) else {
                    continue;
                };
                if link.origin != SUBGRAPH_INPUT || link.origin_slot != i {
                    continue;
                }
                let Some(&t) = self.by_id.get(&format!("{prefix}{}", link.target)) else {
                    continue;
                };
                let Some(wname) = self.dtos[t]
                    .inputs
                    .get(link.target_slot)
                    .and_then(|s| s.widget.clone())
                else {
                    continue;
                };
                if let Some(w) = self.dtos[t].widgets.iter().find(|w| w.name == wname) {
                    candidates.push((i, io.name.clone(), w.value.clone()));
                    break;
                }
            }
        }
        // `proxyWidgets` orders the instance's widgets (and so its saved
        // values): `["-1", name]` is a promoted input widget, `[inner id,
        // name]` shows an inner widget, whose own value wins.
        let proxies: Option<Vec<(String, String)>> = node
            .properties
            .get("proxyWidgets")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|p| {
                        let p = p.as_array()?;
                        Some((
                            super::graph::id_key(p.first()?)?,
                            p.get(1)?.as_str()?.to_string(),
                        ))
                    })
                    .collect()
            });
        let mut widgets = Vec::new();
        for (k, (slot, name, inner)) in candidates.iter().enumerate() {
            let position = match &proxies {
                Some(p) => p.iter().position(|(id, n)| id == "-1" && n == name),
                None => Some(k),
            };
            let value = position
                .and_then(|p| saved.get(p))
                .cloned()
                .unwrap_or_else(|| inner.clone());
            widgets.push((
                *slot,
                Widget {
                    name: name.clone(),
                    value,
                    kind: WidgetKind::Control,
                },
            ));
        }
        let dto = &mut self.dtos[index];
        for (slot, w) in &widgets {
            if let Some(s) = dto.inputs.get_mut(*slot) {
                s.widget = Some(w.name.clone());
            }
        }
        dto.widgets = widgets.into_iter().map(|(_, w)| w).collect();
    }

    /// PrimitiveNode `applyToGraph`: its value goes into every widget its
    /// output feeds, through Reroutes.
    fn apply_primitives(&mut self) {
        let mut sets: Vec<(usize, String, Value)> = Vec::new();
        for d in &self.dtos {
            if !matches!(d.kind, Kind::Virtual(Virtual::Primitive)) {
                continue;
            }
            let Some(value) = d.widgets.first().map(|w| w.value.clone()) else {
                continue;
            };
            let mut todo: Vec<i64> = d
                .node
                .outputs
                .first()
                .map(|o| o.links.clone())
                .unwrap_or_default();
            let mut seen = HashSet::new();
            while let Some(link_id) = todo.pop() {
                if !seen.insert(link_id) {
                    continue;
                }
                let Some(link) = d.graph.links.get(&link_id) else {
                    continue;
                };
                let Some(&t) = self.by_id.get(&format!("{}{}", d.prefix, link.target)) else {
                    continue;
                };
                let target = &self.dtos[t];
                if matches!(target.kind, Kind::Virtual(Virtual::Reroute)) {
                    for o in &target.node.outputs {
                        todo.extend(o.links.iter().copied());
                    }
                    continue;
                }
                if let Some(w) = target
                    .inputs
                    .get(link.target_slot)
                    .and_then(|s| s.widget.clone())
                {
                    sets.push((t, w, value.clone()));
                }
            }
        }
        for (t, name, value) in sets {
            if let Some(w) = self.dtos[t].widgets.iter_mut().find(|w| w.name == name) {
                w.value = value;
            }
        }
    }

    fn resolve_input(
        &self,
        d: usize,
        slot: usize,
        ty: Option<&str>,
        visited: &mut HashSet<(usize, bool, usize)>,
    ) -> Result<Option<Resolved>, ConvertError> {
        if !visited.insert((d, false, slot)) {
            return Err(self.cycle(d));
        }
        if visited.len() > MAX_HOPS {
            return Err(self.too_long(d));
        }
        let dto = &self.dtos[d];
        let Some(input) = dto.inputs.get(slot) else {
            return Ok(None);
        };
        let Some(link_id) = input.link else {
            return Ok(None);
        };
        // A link id the graph does not have: the frontend drops such stale
        // links when it loads a workflow.
        let Some(link) = dto.graph.links.get(&link_id) else {
            return Ok(None);
        };
        if let (Some(inst), true) = (dto.instance, link.origin == SUBGRAPH_INPUT) {
            let outer = &self.dtos[inst];
            let Some(outer_input) = outer.inputs.get(link.origin_slot) else {
                return Ok(None);
            };
            if outer_input.link.is_none() {
                return Ok(outer_input
                    .widget
                    .as_ref()
                    .and_then(|w| outer.widgets.iter().find(|x| &x.name == w))
                    .map(|w| Resolved::Widget(w.value.clone())));
            }
            return self.resolve_input(inst, link.origin_slot, None, visited);
        }
        let origin_id = format!("{}{}", dto.prefix, link.origin);
        let Some(&origin) = self.by_id.get(&origin_id) else {
            return Err(ConvertError::MissingNode {
                node: dto.id.clone(),
                input: input.name.clone(),
                missing: origin_id,
            });
        };
        let ty = ty.unwrap_or(&input.ty).to_string();
        self.resolve_output(origin, link.origin_slot, &ty, visited)
    }

    fn resolve_output(
        &self,
        d: usize,
        slot: usize,
        ty: &str,
        visited: &mut HashSet<(usize, bool, usize)>,
    ) -> Result<Option<Resolved>, ConvertError> {
        if !visited.insert((d, true, slot)) {
            return Err(self.cycle(d));
        }
        if visited.len() > MAX_HOPS {
            return Err(self.too_long(d));
        }
        let dto = &self.dtos[d];
        if dto.node.mode == MODE_BYPASS {
            return match self.bypass_slot(d, slot, ty) {
                Some(i) => self.resolve_input(d, i, None, visited),
                None => Ok(None),
            };
        }
        match &dto.kind {
            Kind::Instance(sg) => {
                let Some(io) = sg.outputs.get(slot) else {
                    return Ok(None);
                };
                let Some(link) = io.link_ids.first().and_then(|l| sg.graph.links.get(l)) else {
                    return Ok(None);
                };
                if link.target != SUBGRAPH_OUTPUT {
                    return Ok(None);
                }
                if link.origin == SUBGRAPH_INPUT {
                    // Passed straight through: what feeds the instance.
                    return self.resolve_input(d, link.origin_slot, Some(ty), visited);
                }
                let inner = format!("{}:{}", dto.id, link.origin);
                let Some(&i) = self.by_id.get(&inner) else {
                    return Err(ConvertError::MissingNode {
                        node: dto.id.clone(),
                        input: format!("output {slot}"),
                        missing: inner,
                    });
                };
                self.resolve_output(i, link.origin_slot, ty, visited)
            }
            Kind::Virtual(Virtual::Get) => match self.setter_of(d) {
                Some(set) => self.resolve_input(set, 0, Some(ty), visited),
                None => Ok(None),
            },
            Kind::Virtual(_) => {
                if dto.inputs.get(slot).is_some() {
                    self.resolve_input(d, slot, Some(ty), visited)
                } else {
                    Ok(None)
                }
            }
            Kind::Real(_) | Kind::Unknown => Ok(Some(Resolved::Link(dto.id.clone(), slot))),
        }
    }

    /// The input a bypassed node passes to output `slot`: the same index
    /// when the types fit, else the first input of exactly the wanted type,
    /// else the first compatible one.
    fn bypass_slot(&self, d: usize, slot: usize, ty: &str) -> Option<usize> {
        let dto = &self.dtos[d];
        let inputs = &dto.inputs;
        if ty == "*" || ty.is_empty() {
            return Some(if inputs.len() > slot { slot } else { 0 });
        }
        let out_ty = dto
            .node
            .outputs
            .get(slot)
            .map(|o| o.ty.as_str())
            .unwrap_or("");
        if let Some(i) = inputs.get(slot)
            && valid_connection(&i.ty, out_ty)
            && valid_connection(&i.ty, ty)
        {
            return Some(slot);
        }
        if let Some(i) = inputs.iter().position(|i| i.ty == ty) {
            return Some(i);
        }
        inputs
            .iter()
            .position(|i| valid_connection(&i.ty, out_ty) && valid_connection(&i.ty, ty))
    }

    /// The SetNode in the same graph whose name (first widget value) is
    /// the GetNode's.
    fn setter_of(&self, d: usize) -> Option<usize> {
        let dto = &self.dtos[d];
        let name = first_value(dto.node)?;
        dto.graph
            .nodes
            .iter()
            .find(|n| n.ty == "SetNode" && first_value(n) == Some(name))
            .and_then(|n| self.by_id.get(&format!("{}{}", dto.prefix, n.id)).copied())
    }

    fn too_long(&self, d: usize) -> ConvertError {
        let dto = &self.dtos[d];
        ConvertError::ChainTooLong {
            node: dto.id.clone(),
            class: dto.node.ty.clone(),
            hops: MAX_HOPS,
        }
    }

    fn cycle(&self, d: usize) -> ConvertError {
        let dto = &self.dtos[d];
        ConvertError::Cycle {
            node: dto.id.clone(),
            class: dto.node.ty.clone(),
        }
    }

    fn output(&self, report: &mut Report) -> Result<Built, ConvertError> {
        let mut out = Map::new();
        let mut needs = Vec::new();
        for (i, dto) in self.dtos.iter().enumerate() {
            let Kind::Real(def) = dto.kind else {
                continue;
            };
            if dto.node.mode == MODE_NEVER || dto.node.mode == MODE_BYPASS {
                continue;
            }
            for input in def.previews_not_sent {
                report.fire(&dto.id, input, RuleKind::PreviewNotSent);
            }
            let mut inputs = Map::new();
            let mut live = Vec::new();
            for w in &dto.widgets {
                let dynamic_prompts = match &w.kind {
                    WidgetKind::Extension {
                        sent: Sent::Live(why),
                    } => {
                        inputs.insert(w.name.clone(), Value::Null);
                        live.push((w.name.clone(), *why));
                        continue;
                    }
                    WidgetKind::Value {
                        dynamic_prompts, ..
                    } => *dynamic_prompts,
                    WidgetKind::DynamicCombo { .. }
                    | WidgetKind::Extension {
                        sent: Sent::Saved(_),
                    } => false,
                    WidgetKind::Extension {
                        sent: Sent::Fixed(v),
                    } => {
                        inputs.insert(w.name.clone(), v.clone());
                        continue;
                    }
                    _ => continue,
                };
                let value = match (&w.value, dynamic_prompts) {
                    (Value::String(s), true) => {
                        let text = strip_comments(s);
                        if text.contains('{') {
                            report.fire(&dto.id, &w.name, RuleKind::DynamicPromptKept);
                        }
                        if text.len() != s.len() {
                            report.fire(&dto.id, &w.name, RuleKind::CommentsStripped);
                        }
                        Value::String(text)
                    }
                    (v, _) => v.clone(),
                };
                inputs.insert(w.name.clone(), wrap(value));
            }
            for (slot, input) in dto.inputs.iter().enumerate() {
                let mut visited = HashSet::new();
                match self.resolve_input(i, slot, None, &mut visited)? {
                    Some(Resolved::Link(from, s)) => {
                        inputs.insert(
                            input.name.clone(),
                            Value::from(vec![Value::from(from), Value::from(s)]),
                        );
                    }
                    Some(Resolved::Widget(v)) => {
                        inputs.insert(input.name.clone(), wrap(v));
                    }
                    None => {}
                }
            }
            let title = match &dto.node.title {
                Some(t) => t.clone(),
                None => {
                    report.fire(&dto.id, "_meta.title", RuleKind::TitleFromDisplayName);
                    def.display_name.clone()
                }
            };
            // A live input fed by a link instead needs nothing.
            for (input, why) in live {
                if inputs.get(&input).is_some_and(Value::is_null) {
                    needs.push(NeedsValue {
                        node: dto.id.clone(),
                        class: dto.class.to_string(),
                        title: title.clone(),
                        input,
                        why,
                    });
                }
            }
            let mut node = Map::new();
            node.insert("inputs".into(), Value::Object(inputs));
            node.insert("class_type".into(), Value::from(dto.class));
            let mut meta = Map::new();
            meta.insert("title".into(), Value::from(title));
            node.insert("_meta".into(), Value::Object(meta));
            out.insert(dto.id.clone(), Value::Object(node));
        }
        // Inputs linked to nodes that are not sent (muted) are dropped.
        let ids: HashSet<String> = out.keys().cloned().collect();
        for node in out.values_mut() {
            if let Some(Value::Object(inputs)) = node.get_mut("inputs") {
                inputs.retain(|_, v| match v.as_array() {
                    Some(a) if a.len() == 2 => a[0].as_str().is_some_and(|s| ids.contains(s)),
                    _ => true,
                });
            }
        }
        // The prompt is a JavaScript object: integer-like keys come first,
        // ascending, then the others (`5:3`) in insertion order.
        let (mut plain, other): (Vec<_>, Vec<_>) =
            out.into_iter().partition(|(k, _)| array_index(k).is_some());
        plain.sort_by_key(|(k, _)| array_index(k));
        let prompt: Map<String, Value> = plain.into_iter().chain(other).collect();
        let order: Vec<&String> = prompt.keys().collect();
        needs.sort_by_key(|n| order.iter().position(|k| **k == n.node));
        Ok((prompt, needs))
    }
}

/// The value of a key JavaScript treats as an array index (a canonical
/// decimal below 2^32 - 1), which objects order first.
fn array_index(key: &str) -> Option<u32> {
    let n: u32 = key.parse().ok()?;
    (n < u32::MAX && n.to_string() == key).then_some(n)
}

/// LiteGraph's `computeExecutionOrder`: nodes without linked inputs first
/// (in saved order), then each node once all its linked inputs were
/// reached; nodes left over (in cycles) last, integer-like ids ascending.
fn execution_order(graph: &Graph) -> Vec<usize> {
    let n = graph.nodes.len();
    let mut remaining: Vec<usize> = graph
        .nodes
        .iter()
        .map(|node| node.inputs.iter().filter(|i| i.link.is_some()).count())
        .collect();
    let mut queue: std::collections::VecDeque<usize> =
        (0..n).filter(|&i| remaining[i] == 0).collect();
    let mut done = vec![false; n];
    let mut visited_links = HashSet::new();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = queue.pop_front() {
        order.push(i);
        done[i] = true;
        for out in &graph.nodes[i].outputs {
            for link_id in &out.links {
                let Some(link) = graph.links.get(link_id) else {
                    continue;
                };
                if !visited_links.insert(*link_id) {
                    continue;
                }
                let Some(&t) = graph.index.get(&link.target) else {
                    continue;
                };
                if remaining[t] > 0 {
                    remaining[t] -= 1;
                    if remaining[t] == 0 {
                        queue.push_back(t);
                    }
                }
            }
        }
    }
    let mut left: Vec<usize> = (0..n).filter(|&i| !done[i]).collect();
    left.sort_by_key(|&i| array_index(&graph.nodes[i].id).map_or((1, 0), |k| (0, k)));
    order.extend(left);
    order
}

fn first_value(node: &Node) -> Option<&Value> {
    match &node.widgets_values {
        Some(Value::Array(a)) => a.first(),
        _ => None,
    }
}

/// A list value would read as a link: the frontend wraps it.
fn wrap(v: Value) -> Value {
    if v.is_array() {
        let mut m = Map::new();
        m.insert("__value__".into(), v);
        Value::Object(m)
    } else {
        v
    }
}

/// LiteGraph's `isValidConnection`: `*`/empty match anything; otherwise a
/// case-insensitive match of any of the comma-separated types.
pub(crate) fn valid_connection(a: &str, b: &str) -> bool {
    let any = |t: &str| t.is_empty() || t == "*" || t == "0";
    if any(a) || any(b) || a == b {
        return true;
    }
    let (a, b) = (a.to_lowercase(), b.to_lowercase());
    if !a.contains(',') && !b.contains(',') {
        return a == b;
    }
    a.split(',').any(|x| b.split(',').any(|y| x == y))
}

/// The widgets of a real node: the definition's, filled from the saved
/// `widgets_values` (a list by position, or an object by name); widgets the
/// file lacks keep the definition's default. A list with more values than
/// the node has widgets is read as the frontend's `configure` reads it
/// (frontend 1.35.9, src/lib/litegraph/src/LGraphNode.ts:862-868): each
/// widget takes the next value, the rest are ignored; unless the count is
/// that of another version's layout, which is then used.
fn widgets_of(id: &str, node: &Node, def: &NodeDef, report: &mut Report) -> Vec<Widget> {
    let saved = |layout: &[WidgetDef]| layout.iter().filter(|w| w.saved).count();
    let given = match &node.widgets_values {
        Some(Value::Array(values)) => Some(values.len()),
        _ => None,
    };
    let fits = |layout: &[WidgetDef]| {
        given.is_some_and(|n| {
            n == saved(layout) || n == saved(layout) + usize::from(def.progress_text)
        })
    };
    let layout: &[WidgetDef] = match def.other_layouts.iter().find(|l| fits(l)) {
        Some(old) if !fits(&def.widgets) => {
            report.fire(id, "widgets_values", RuleKind::OtherVersionLayout);
            old
        }
        _ => &def.widgets,
    };
    let mut fill = Fill {
        id,
        values: node.widgets_values.as_ref(),
        pos: 0,
        widgets: Vec::with_capacity(layout.len()),
        report,
    };
    for w in layout {
        fill.push(w);
    }
    let used = fill.pos;
    let widgets = fill.widgets;
    if let Some(n) = given {
        // One more value is the progress text the frontend shows (and saves)
        // for nodes that report one; it is never sent.
        if n.saturating_sub(used) > usize::from(def.progress_text) {
            report.fire(id, "widgets_values", RuleKind::ExtraWidgetValuesIgnored);
        }
    }
    widgets
}

struct Fill<'a> {
    id: &'a str,
    values: Option<&'a Value>,
    pos: usize,
    widgets: Vec<Widget>,
    report: &'a mut Report,
}

impl Fill<'_> {
    fn saved_value(&mut self, w: &WidgetDef) -> Option<Value> {
        if !w.saved {
            return None;
        }
        match self.values {
            Some(Value::Array(a)) => {
                let v = a.get(self.pos).cloned();
                self.pos += 1;
                v
            }
            Some(Value::Object(o)) => o.get(&w.name).cloned(),
            _ => None,
        }
    }

    fn push(&mut self, w: &WidgetDef) {
        let saved = self.saved_value(w);
        let filled = saved.is_some();
        let initial = match &w.kind {
            WidgetKind::Value { default, .. } | WidgetKind::DynamicCombo { default, .. } => {
                default.clone()
            }
            WidgetKind::Extension {
                sent: Sent::Saved(d),
            } => d.clone(),
            _ => Value::Null,
        };
        let value = match &w.kind {
            // A live value is never read from the file.
            WidgetKind::Extension {
                sent: Sent::Live(_),
            } => Value::Null,
            _ => saved.unwrap_or(initial),
        };
        match &w.kind {
            WidgetKind::Value { .. } | WidgetKind::DynamicCombo { .. } if !filled => {
                self.report
                    .fire(self.id, &w.name, RuleKind::MissingWidgetDefault);
            }
            WidgetKind::Upload if filled => {
                self.report
                    .fire(self.id, &w.name, RuleKind::UploadValueNotSent);
            }
            _ => {}
        }
        self.widgets.push(Widget {
            name: w.name.clone(),
            value: value.clone(),
            kind: w.kind.clone(),
        });
        if let WidgetKind::DynamicCombo { options, .. } = &w.kind
            && let Some((_, inner)) = options.iter().find(|(k, _)| same_key(k, &value))
        {
            for i in inner {
                self.push(i);
            }
        }
    }
}

/// Combo keys compare as the frontend's `==` would for strings and numbers.
fn same_key(a: &Value, b: &Value) -> bool {
    a == b
        || match (a, b) {
            (Value::String(s), Value::Number(n)) | (Value::Number(n), Value::String(s)) => {
                s == &n.to_string()
            }
            _ => false,
        }
}

/// Whether a node type exists only in the frontend.
pub(crate) fn is_frontend_only(ty: &str) -> bool {
    virtual_kind(ty).is_some()
}
