//! Group nodes (`extra.groupNodes`, the frontend's pre-subgraph way of
//! packing nodes): each instance is replaced by its inner nodes, with the
//! frontend's ids `<instance>:<index>`, before flattening. The instance's
//! inputs, outputs and widget values are handed to the inner nodes in the
//! frontend's order: inner nodes by index, slots by position.

use serde_json::Value;

use super::ConvertError;
use super::catalogue::NodeDefs;
use super::graph::{Graph, Link, Node, Workflow, slots_of};

/// Whether a node type names a group node (`workflow>Name`, older
/// `workflow/Name`).
pub(crate) fn is_group_node(ty: &str) -> bool {
    group_name(ty).is_some()
}

fn group_name(ty: &str) -> Option<&str> {
    ty.strip_prefix("workflow>")
        .or_else(|| ty.strip_prefix("workflow/"))
}

/// Replaces every group node instance of the root graph by its inner nodes.
pub(crate) fn expand(
    workflow: &mut Workflow,
    catalogue: &NodeDefs,
) -> Result<(), Vec<ConvertError>> {
    if !workflow.root.nodes.iter().any(|n| is_group_node(&n.ty)) {
        return Ok(());
    }
    let mut errors = Vec::new();
    let mut next_link = workflow.root.links.keys().copied().max().unwrap_or(0) + 1;
    let nodes = std::mem::take(&mut workflow.root.nodes);
    let mut out = Vec::with_capacity(nodes.len());
    for node in nodes {
        let Some(name) = group_name(&node.ty).map(str::to_string) else {
            out.push(node);
            continue;
        };
        let Some(def) = workflow.group_nodes.get(&name) else {
            errors.push(ConvertError::GroupNode {
                node: node.id.clone(),
                name,
                why: "its definition is not in extra.groupNodes".into(),
            });
            continue;
        };
        match expand_one(&node, def, &mut workflow.root, catalogue, &mut next_link) {
            Ok(inner) => out.extend(inner),
            Err(why) => errors.push(ConvertError::GroupNode {
                node: node.id.clone(),
                name,
                why,
            }),
        }
    }
    workflow.root.nodes = out;
    workflow.root.reindex();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn slot_of(v: &Value) -> Option<usize> {
    v.as_u64().and_then(|n| usize::try_from(n).ok())
}

fn expand_one(
    instance: &Node,
    def: &Value,
    root: &mut Graph,
    catalogue: &NodeDefs,
    next_link: &mut i64,
) -> Result<Vec<Node>, String> {
    let list = def
        .get("nodes")
        .and_then(Value::as_array)
        .ok_or("its definition has no nodes")?;
    let mut inner: Vec<Node> = Vec::with_capacity(list.len());
    for (k, v) in list.iter().enumerate() {
        let obj = v.as_object().ok_or("an inner node is not an object")?;
        let index = obj.get("index").and_then(slot_of).unwrap_or(k);
        let ty = obj
            .get("type")
            .and_then(Value::as_str)
            .ok_or("an inner node has no type")?
            .to_string();
        // The frontend registers a group node before it renames old types,
        // and only when every inner type exists: an old name inside leaves
        // the whole group node missing (groupNode.ts:762-797 in 1.35.9).
        if super::flatten::class_of(&ty) != ty {
            return Err(format!(
                "its inner node {index} has type '{ty}', which the frontend does not rename \
                 inside a group node (only elsewhere, to '{}'): recreate the group node",
                super::flatten::class_of(&ty)
            ));
        }
        // Inner nodes' links are the group's own (`links` of the group
        // definition), never the saved slots'.
        let (mut inputs, mut outputs) = slots_of(obj);
        inputs.iter_mut().for_each(|s| s.link = None);
        outputs.iter_mut().for_each(|o| o.links.clear());
        inner.push(Node {
            id: format!("{}:{index}", instance.id),
            ty,
            mode: if instance.mode != 0 {
                instance.mode
            } else {
                obj.get("mode").and_then(Value::as_i64).unwrap_or(0)
            },
            title: obj.get("title").and_then(Value::as_str).map(str::to_string),
            inputs,
            outputs,
            widgets_values: obj.get("widgets_values").cloned(),
            properties: obj
                .get("properties")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
        });
    }
    // Internal links, and which slots they use.
    let mut linked_in = std::collections::HashSet::new();
    let mut linked_out = std::collections::HashSet::new();
    for l in def
        .get("links")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(a) = l.as_array() else { continue };
        let (Some(t), Some(ts)) = (a.get(2).and_then(slot_of), a.get(3).and_then(slot_of)) else {
            continue;
        };
        let Some(o) = a.first().and_then(slot_of) else {
            continue; // from outside: becomes an instance input
        };
        let os = a.get(1).and_then(slot_of).unwrap_or(0);
        if o >= inner.len() || t >= inner.len() {
            return Err(format!(
                "an inner link joins node {o} to {t}, which do not exist"
            ));
        }
        let id = *next_link;
        *next_link += 1;
        root.links.insert(
            id,
            Link {
                origin: inner[o].id.clone(),
                origin_slot: os,
                target: inner[t].id.clone(),
                target_slot: ts,
            },
        );
        if let Some(slot) = inner[t].inputs.get_mut(ts) {
            slot.link = Some(id);
        }
        if let Some(out) = inner[o].outputs.get_mut(os) {
            out.links.push(id);
        }
        linked_in.insert((t, ts));
        linked_out.insert((o, os));
    }
    let external: std::collections::HashSet<(usize, usize)> = def
        .get("external")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| Some((e.get(0).and_then(slot_of)?, e.get(1).and_then(slot_of)?)))
        .collect();
    // Instance inputs, in order: the inner sockets not fed from inside.
    let mut sockets = Vec::new();
    for (k, n) in inner.iter().enumerate() {
        for (s, slot) in n.inputs.iter().enumerate() {
            if slot.widget.is_none() && !linked_in.contains(&(k, s)) {
                sockets.push((k, s));
            }
        }
    }
    for (i, input) in instance.inputs.iter().enumerate() {
        let (Some(link_id), Some(&(k, s))) = (input.link, sockets.get(i)) else {
            continue;
        };
        if let Some(link) = root.links.get_mut(&link_id) {
            link.target = inner[k].id.clone();
            link.target_slot = s;
        }
        inner[k].inputs[s].link = Some(link_id);
    }
    // Instance outputs: inner outputs not used inside, or marked external.
    let mut outs = Vec::new();
    for (k, n) in inner.iter().enumerate() {
        for s in 0..n.outputs.len() {
            if !linked_out.contains(&(k, s)) || external.contains(&(k, s)) {
                outs.push((k, s));
            }
        }
    }
    let instance_id = &instance.id;
    for link in root.links.values_mut() {
        if &link.origin != instance_id {
            continue;
        }
        if let Some(&(k, s)) = outs.get(link.origin_slot) {
            link.origin = inner[k].id.clone();
            link.origin_slot = s;
        }
    }
    // Widget values, in inner node order.
    if let Some(Value::Array(values)) = &instance.widgets_values {
        let mut rest = values.as_slice();
        for n in &mut inner {
            let count = catalogue
                .get(&n.ty)
                .map_or(0, |d| d.widgets.iter().filter(|w| w.saved).count());
            let take = count.min(rest.len());
            if take > 0 {
                n.widgets_values = Some(Value::Array(rest[..take].to_vec()));
                rest = &rest[take..];
            }
        }
    }
    Ok(inner)
}
