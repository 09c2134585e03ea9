//! Target resolution: which input(s) of which node a parameter name means in
//! one workflow. The five rules of docs/manifest.md ("Parameter targets"),
//! tried in order:
//! `ID.input` / `ID.inputs.input`, then `Title.input`, then
//! `ClassType.input`, then a user alias from `params:`, then the built-in
//! names found by walking the graph from the sampler node.
//!
//! Resolution runs once per (group, workflow), never per job.

use std::collections::{BTreeSet, HashSet, VecDeque};

use serde_json::{Map, Value};

use crate::patch::{Slot, class_of, link_source};
use crate::text::nearest;

/// Why a name has no single target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TargetError {
    /// No rule matches.
    Unknown { suggestion: Option<String> },
    /// Several nodes match; candidates as `id (Class 'title')`.
    Ambiguous {
        why: String,
        candidates: Vec<String>,
    },
    /// The node exists but lacks the input (or holds a link there).
    Input(String),
    /// A built-in whose anchor node is absent (e.g. no sampler).
    NotFound(String),
}

/// The sampler classes a built-in walk starts from.
pub(crate) const SAMPLERS: &[&str] = &[
    "KSampler",
    "KSamplerAdvanced",
    "SamplerCustom",
    "SamplerCustomAdvanced",
];

/// Built-in parameter names (for suggestions and docs).
pub(crate) const BUILTINS: &[&str] = &[
    "seed",
    "noise_seed",
    "steps",
    "cfg",
    "sampler",
    "sampler_name",
    "scheduler",
    "denoise",
    "prompt",
    "positive",
    "negative",
    "width",
    "height",
    "batch_size",
    "checkpoint",
    "image",
];

/// A workflow viewed as a graph.
pub(crate) struct Graph<'a> {
    nodes: &'a Map<String, Value>,
}

fn inputs(node: &Value) -> Option<&Map<String, Value>> {
    node.get("inputs").and_then(Value::as_object)
}

fn title(node: &Value) -> Option<&str> {
    node.get("_meta")
        .and_then(|m| m.get("title"))
        .and_then(Value::as_str)
}

/// The output slot a link reads (`["4", 1]` → 1).
fn link_slot(v: &Value) -> u64 {
    v.get(1).and_then(Value::as_u64).unwrap_or(0)
}

impl<'a> Graph<'a> {
    pub(crate) fn new(nodes: &'a Map<String, Value>) -> Self {
        Graph { nodes }
    }

    /// `id (Class)`, or `id (Class 'Title')`: how messages name a node.
    pub(crate) fn describe(&self, id: &str) -> String {
        let node = &self.nodes[id];
        match title(node) {
            Some(t) if t != class_of(node) => format!("{id} ({} '{t}')", class_of(node)),
            _ => format!("{id} ({})", class_of(node)),
        }
    }

    /// A slot on `id`, checked to exist and hold a value; a link from a
    /// primitive node (one value input, a class named like `PrimitiveInt`,
    /// `Seed…`) is followed to it.
    fn value_slot(&self, id: &str, input: &str) -> Result<Slot, TargetError> {
        let node = &self.nodes[id];
        let Some(v) = inputs(node).and_then(|i| i.get(input)) else {
            let available: Vec<&str> = inputs(node)
                .map(|i| i.keys().map(String::as_str).collect())
                .unwrap_or_default();
            return Err(TargetError::Input(format!(
                "node {} has no input '{input}'; its inputs: {}",
                self.describe(id),
                available.join(", ")
            )));
        };
        if let Some(from) = link_source(v) {
            if let Some(prim) = self.nodes.get(from) {
                let values: Vec<&String> = inputs(prim)
                    .map(|i| {
                        i.iter()
                            .filter(|(_, v)| link_source(v).is_none())
                            .map(|(k, _)| k)
                            .collect()
                    })
                    .unwrap_or_default();
                let class = class_of(prim);
                let primitive = ["Primitive", "Seed", "Int", "Float", "Number", "String"]
                    .iter()
                    .any(|p| class.contains(p));
                if let [only] = values.as_slice()
                    && primitive
                    && inputs(prim).is_some_and(|i| i.len() == 1)
                {
                    return Ok(Slot {
                        node: from.to_owned(),
                        input: (*only).clone(),
                    });
                }
            }
            return Err(TargetError::Input(format!(
                "input '{input}' of node {} is a link from node {from}, not a value",
                self.describe(id)
            )));
        }
        Ok(Slot {
            node: id.to_owned(),
            input: input.to_owned(),
        })
    }

    fn ids_where(&self, pred: impl Fn(&str, &Value) -> bool) -> Vec<&'a str> {
        self.nodes
            .iter()
            .filter(|(id, n)| pred(id, n))
            .map(|(id, _)| id.as_str())
            .collect()
    }

    /// Resolves `name` (rules 1 to 5). `aliases` are the manifest's `params:`.
    pub(crate) fn resolve(
        &self,
        name: &str,
        aliases: &[(String, String)],
    ) -> Result<Vec<Slot>, TargetError> {
        if let Some(found) = self.explicit(name)? {
            return Ok(vec![found]);
        }
        if let Some((_, target)) = aliases.iter().find(|(a, _)| a == name) {
            return match self.explicit(target)? {
                Some(found) => Ok(vec![found]),
                None => self.builtin(target).unwrap_or_else(|| {
                    Err(TargetError::NotFound(format!(
                        "alias '{name}' points to '{target}', which matches no node id, title, \
                         class or built-in name"
                    )))
                }),
            };
        }
        match self.builtin(name) {
            Some(found) => found,
            None => Err(TargetError::Unknown {
                suggestion: self.suggest(name, aliases),
            }),
        }
    }

    /// Rules 1-3: `ID.input`, `Title.input`, `Class.input`. `Ok(None)` when
    /// the name has no such form.
    fn explicit(&self, name: &str) -> Result<Option<Slot>, TargetError> {
        if let Some((head, rest)) = name.split_once('.')
            && self.nodes.contains_key(head)
        {
            let input = rest.strip_prefix("inputs.").unwrap_or(rest);
            return self.value_slot(head, input).map(Some);
        }
        let Some((head, input)) = name.rsplit_once('.') else {
            return Ok(None);
        };
        for (rule, matches) in [
            ("title", self.ids_where(|_, n| title(n) == Some(head))),
            ("class", self.ids_where(|_, n| class_of(n) == head)),
        ] {
            match matches.as_slice() {
                [] => continue,
                [one] => return self.value_slot(one, input).map(Some),
                many => {
                    return Err(TargetError::Ambiguous {
                        why: format!("{} nodes have the {rule} '{head}'", many.len()),
                        candidates: many.iter().map(|id| format!("{id}.{input}")).collect(),
                    });
                }
            }
        }
        Ok(None)
    }

    fn suggest(&self, name: &str, aliases: &[(String, String)]) -> Option<String> {
        let mut words: Vec<String> = BUILTINS.iter().map(|s| (*s).to_owned()).collect();
        words.extend(aliases.iter().map(|(a, _)| a.clone()));
        if name.contains('.') {
            for (id, node) in self.nodes {
                for input in inputs(node).into_iter().flat_map(|i| i.keys()) {
                    words.push(format!("{id}.{input}"));
                    if let Some(t) = title(node) {
                        words.push(format!("{t}.{input}"));
                    }
                    words.push(format!("{}.{input}", class_of(node)));
                }
            }
        }
        nearest(name, words.iter().map(String::as_str))
    }

    /// The sampler nodes, in workflow order.
    pub(crate) fn samplers(&self) -> Vec<&'a str> {
        self.ids_where(|_, n| SAMPLERS.contains(&class_of(n)))
    }

    fn the_sampler(&self, name: &str) -> Result<&'a str, TargetError> {
        match self.samplers().as_slice() {
            [one] => Ok(one),
            [] => Err(TargetError::NotFound(format!(
                "no sampler node ({}) to find '{name}' on; use ID.input",
                SAMPLERS.join(", ")
            ))),
            many => Err(TargetError::Ambiguous {
                why: format!("{} sampler nodes", many.len()),
                candidates: many.iter().map(|id| self.describe(id)).collect(),
            }),
        }
    }

    /// Rule 5. `None` when `name` is not a built-in.
    fn builtin(&self, name: &str) -> Option<Result<Vec<Slot>, TargetError>> {
        let one = |r: Result<Slot, TargetError>| r.map(|s| vec![s]);
        Some(match name {
            "seed" | "noise_seed" => one(self.on_sampler(name, &["seed", "noise_seed"], "noise")),
            "steps" => one(self.on_sampler(name, &["steps"], "sigmas")),
            "cfg" => one(self.on_sampler(name, &["cfg"], "guider")),
            "sampler" | "sampler_name" => one(self.on_sampler(name, &["sampler_name"], "sampler")),
            "scheduler" => one(self.on_sampler(name, &["scheduler"], "sigmas")),
            "denoise" => one(self.on_sampler(name, &["denoise"], "sigmas")),
            "prompt" | "positive" => self.text(name, 0),
            "negative" => self.text(name, 1),
            "width" | "height" | "batch_size" => {
                one(self.upstream_unique(name, name, |c| c.contains("Latent"), "latent-image"))
            }
            "checkpoint" => one(self.upstream_unique(
                name,
                "ckpt_name",
                |c| c.contains("CheckpointLoader"),
                "checkpoint loader",
            )),
            "image" => one(self.upstream_unique(
                name,
                "image",
                |c| c.starts_with("LoadImage"),
                "LoadImage",
            )),
            _ => return None,
        })
    }

    /// A sampler setting: on the sampler itself, or (SamplerCustom*) on the
    /// node feeding its `via` input (noise → RandomNoise, guider →
    /// CFGGuider, sampler → KSamplerSelect, sigmas → BasicScheduler).
    fn on_sampler(&self, name: &str, names: &[&str], via: &str) -> Result<Slot, TargetError> {
        let sampler = self.the_sampler(name)?;
        let node_inputs = inputs(&self.nodes[sampler]);
        for input in names {
            if node_inputs.is_some_and(|i| i.contains_key(*input)) {
                return self.value_slot(sampler, input);
            }
        }
        if let Some(start) = node_inputs.and_then(|i| i.get(via)).and_then(link_source) {
            let found = self.bfs(start, |id, n| {
                names
                    .iter()
                    .any(|i| inputs(n).and_then(|x| x.get(*i)).is_some() && !id.is_empty())
            });
            if let Some(id) = found.first() {
                let input = names
                    .iter()
                    .find(|i| inputs(&self.nodes[*id]).is_some_and(|x| x.contains_key(**i)))
                    .copied()
                    .unwrap_or(names[0]);
                return self.value_slot(id, input);
            }
        }
        Err(TargetError::NotFound(format!(
            "the sampler {} has no '{}' input{}",
            self.describe(sampler),
            names.join("' or '"),
            if node_inputs.is_some_and(|i| i.contains_key(via)) {
                format!(" and none is found through its '{via}' input")
            } else {
                String::new()
            }
        )))
    }

    /// Nodes reachable upstream from `start` (included), breadth first,
    /// that satisfy `pred`, in visit order.
    fn bfs(&self, start: &str, pred: impl Fn(&str, &Value) -> bool) -> Vec<&'a str> {
        let mut seen = HashSet::new();
        let mut queue = VecDeque::from([start]);
        let mut found = Vec::new();
        while let Some(id) = queue.pop_front() {
            let Some((key, node)) = self.nodes.get_key_value(id) else {
                continue;
            };
            if !seen.insert(key.as_str()) {
                continue;
            }
            if pred(key, node) {
                found.push(key.as_str());
            }
            for v in inputs(node).into_iter().flat_map(|i| i.values()) {
                if let Some(from) = link_source(v) {
                    queue.push_back(from);
                }
            }
        }
        found
    }

    /// The one node of a kind (`class` test) with `input`, upstream of the
    /// sampler(s); the whole workflow when there is no sampler.
    fn upstream_unique(
        &self,
        name: &str,
        input: &str,
        class: impl Fn(&str) -> bool,
        what: &str,
    ) -> Result<Slot, TargetError> {
        let is = |_: &str, n: &Value| {
            class(class_of(n)) && inputs(n).is_some_and(|i| i.contains_key(input))
        };
        let samplers = self.samplers();
        let found: Vec<&str> = if samplers.is_empty() {
            self.ids_where(is)
        } else {
            let mut set = BTreeSet::new();
            for s in &samplers {
                set.extend(self.bfs(s, is));
            }
            // Keep workflow order.
            self.ids_where(|id, _| set.contains(id))
        };
        match found.as_slice() {
            [one] => self.value_slot(one, input),
            [] => Err(TargetError::NotFound(format!(
                "no {what} node with input '{input}'{} (for '{name}')",
                if samplers.is_empty() {
                    ""
                } else {
                    " upstream of the sampler"
                }
            ))),
            many => Err(TargetError::Ambiguous {
                why: format!("{} {what} nodes", many.len()),
                candidates: many.iter().map(|id| format!("{id}.{input}")).collect(),
            }),
        }
    }

    /// `prompt`/`negative`: the text encoder feeding the sampler's positive
    /// (`side` 0) or negative (1) conditioning, through conditioning nodes.
    fn text(&self, name: &str, side: u64) -> Result<Vec<Slot>, TargetError> {
        let sampler = self.the_sampler(name)?;
        let want = if side == 0 { "positive" } else { "negative" };
        let mut start = inputs(&self.nodes[sampler])
            .and_then(|i| i.get(want))
            .cloned();
        if start.is_none() {
            // SamplerCustomAdvanced: conditioning lives on the guider.
            let guider = inputs(&self.nodes[sampler])
                .and_then(|i| i.get("guider"))
                .and_then(link_source)
                .and_then(|g| self.nodes.get(g));
            if let Some(g) = guider.and_then(inputs) {
                start = g.get(want).cloned();
                if start.is_none() && side == 0 {
                    start = g.get("conditioning").cloned();
                }
            }
        }
        let Some(start) = start.filter(|s| link_source(s).is_some()) else {
            return Err(TargetError::NotFound(format!(
                "the sampler {} has no linked '{want}' conditioning",
                self.describe(sampler)
            )));
        };
        let mut encoders = Vec::new();
        let mut seen = HashSet::new();
        self.walk_conditioning(&start, &mut seen, &mut encoders);
        match encoders.as_slice() {
            [one] => self.text_slots(one),
            [] => Err(TargetError::NotFound(format!(
                "no text-encode node feeds the sampler's {want} input"
            ))),
            many => Err(TargetError::Ambiguous {
                why: format!(
                    "{} text-encode nodes feed the sampler's {want} input",
                    many.len()
                ),
                candidates: many.iter().map(|id| self.describe(id)).collect(),
            }),
        }
    }

    /// Follows a conditioning link upstream to text encoders. A node with
    /// both `positive` and `negative` inputs (ControlNetApplyAdvanced…)
    /// passes output 0 from `positive` and 1 from `negative`; others pass
    /// every input named like conditioning (`conditioning`, `conditioning_to`,
    /// `cond…`).
    fn walk_conditioning(
        &self,
        link: &Value,
        seen: &mut HashSet<(String, u64)>,
        out: &mut Vec<&'a str>,
    ) {
        let Some(from) = link_source(link) else {
            return;
        };
        let Some((id, node)) = self.nodes.get_key_value(from) else {
            return;
        };
        let slot = link_slot(link);
        if !seen.insert((id.clone(), slot)) {
            return;
        }
        if class_of(node).contains("TextEncode") {
            if !out.contains(&id.as_str()) {
                out.push(id.as_str());
            }
            return;
        }
        let Some(ins) = inputs(node) else { return };
        if ins.contains_key("positive") && ins.contains_key("negative") {
            let side = if slot == 0 { "positive" } else { "negative" };
            if let Some(v) = ins.get(side) {
                self.walk_conditioning(v, seen, out);
            }
            return;
        }
        for (k, v) in ins {
            if k.starts_with("cond")
                || k.contains("conditioning")
                || k == "positive"
                || k == "negative"
            {
                self.walk_conditioning(v, seen, out);
            }
        }
    }

    /// The text input(s) of an encoder: `text`, else every string input
    /// named `text…`, `clip_l` or `t5xxl` (SDXL, Flux encoders take both).
    fn text_slots(&self, id: &str) -> Result<Vec<Slot>, TargetError> {
        let ins = inputs(&self.nodes[id]);
        if ins.is_some_and(|i| i.contains_key("text")) {
            return Ok(vec![self.value_slot(id, "text")?]);
        }
        let names: Vec<&String> = ins
            .map(|i| {
                i.iter()
                    .filter(|(k, v)| {
                        v.is_string() && (k.starts_with("text") || *k == "clip_l" || *k == "t5xxl")
                    })
                    .map(|(k, _)| k)
                    .collect()
            })
            .unwrap_or_default();
        if names.is_empty() {
            return Err(TargetError::NotFound(format!(
                "the text-encode node {} has no text input",
                self.describe(id)
            )));
        }
        names.into_iter().map(|n| self.value_slot(id, n)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn graph(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn t2i() -> Map<String, Value> {
        graph(json!({
            "3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 20, "cfg": 8, "sampler_name": "euler", "scheduler": "normal", "denoise": 1,
                  "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
            "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "a.safetensors"}},
            "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
            "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "pos", "clip": ["4", 1]}, "_meta": {"title": "Positive"}},
            "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "neg", "clip": ["4", 1]}, "_meta": {"title": "Negative"}},
            "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
            "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x", "images": ["8", 0]}}
        }))
    }

    fn resolve(wf: &Map<String, Value>, name: &str) -> Result<Vec<String>, TargetError> {
        resolve_with(wf, name, &[])
    }

    fn resolve_with(
        wf: &Map<String, Value>,
        name: &str,
        aliases: &[(&str, &str)],
    ) -> Result<Vec<String>, TargetError> {
        let aliases: Vec<(String, String)> = aliases
            .iter()
            .map(|(a, b)| ((*a).into(), (*b).into()))
            .collect();
        Graph::new(wf).resolve(name, &aliases).map(|v| {
            v.into_iter()
                .map(|s| format!("{}.{}", s.node, s.input))
                .collect()
        })
    }

    #[test]
    fn rule_1_node_id_and_input() {
        assert_eq!(resolve(&t2i(), "3.cfg"), Ok(vec!["3.cfg".into()]));
        assert_eq!(resolve(&t2i(), "3.inputs.cfg"), Ok(vec!["3.cfg".into()]));
    }

    #[test]
    fn rule_2_title_and_input() {
        assert_eq!(resolve(&t2i(), "Negative.text"), Ok(vec!["7.text".into()]));
    }

    #[test]
    fn rule_3_class_and_input() {
        assert_eq!(
            resolve(&t2i(), "EmptyLatentImage.width"),
            Ok(vec!["5.width".into()])
        );
        let err = resolve(&t2i(), "CLIPTextEncode.text").unwrap_err();
        assert_eq!(
            err,
            TargetError::Ambiguous {
                why: "2 nodes have the class 'CLIPTextEncode'".into(),
                candidates: vec!["6.text".into(), "7.text".into()]
            }
        );
    }

    #[test]
    fn rule_4_alias_wins_over_builtin() {
        assert_eq!(
            resolve_with(&t2i(), "prompt", &[("prompt", "Negative.text")]),
            Ok(vec!["7.text".into()])
        );
        assert_eq!(
            resolve_with(&t2i(), "style", &[("style", "6.text")]),
            Ok(vec!["6.text".into()])
        );
        assert_eq!(
            resolve_with(&t2i(), "guidance", &[("guidance", "cfg")]),
            Ok(vec!["3.cfg".into()])
        );
        assert!(matches!(
            resolve_with(&t2i(), "x", &[("x", "Nowhere.text")]),
            Err(TargetError::NotFound(m)) if m.contains("alias 'x' points to 'Nowhere.text'")
        ));
    }

    #[test]
    fn rule_5_builtins_walk_the_graph() {
        let wf = t2i();
        for (name, want) in [
            ("seed", "3.seed"),
            ("steps", "3.steps"),
            ("cfg", "3.cfg"),
            ("sampler", "3.sampler_name"),
            ("scheduler", "3.scheduler"),
            ("denoise", "3.denoise"),
            ("prompt", "6.text"),
            ("negative", "7.text"),
            ("width", "5.width"),
            ("batch_size", "5.batch_size"),
            ("checkpoint", "4.ckpt_name"),
        ] {
            assert_eq!(resolve(&wf, name), Ok(vec![want.to_owned()]), "{name}");
        }
    }

    #[test]
    fn conditioning_nodes_are_walked_through() {
        let mut wf = t2i();
        // 6 → ControlNetApplyAdvanced(10) → ConditioningSetArea(11) → sampler positive;
        // 7 → 10 (negative output) → sampler negative.
        wf.insert("10".into(), json!({"class_type": "ControlNetApplyAdvanced", "inputs": {"positive": ["6", 0], "negative": ["7", 0], "control_net": ["12", 0], "image": ["13", 0], "strength": 1}}));
        wf.insert("11".into(), json!({"class_type": "ConditioningSetArea", "inputs": {"conditioning": ["10", 0], "width": 64, "height": 64, "x": 0, "y": 0, "strength": 1}}));
        wf["3"]["inputs"]["positive"] = json!(["11", 0]);
        wf["3"]["inputs"]["negative"] = json!(["10", 1]);
        assert_eq!(resolve(&wf, "prompt"), Ok(vec!["6.text".into()]));
        assert_eq!(resolve(&wf, "negative"), Ok(vec!["7.text".into()]));
        // A combine of two encoders is ambiguous.
        wf.insert(
            "14".into(),
            json!({"class_type": "CLIPTextEncode", "inputs": {"text": "more", "clip": ["4", 1]}}),
        );
        wf.insert("15".into(), json!({"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["11", 0], "conditioning_2": ["14", 0]}}));
        wf["3"]["inputs"]["positive"] = json!(["15", 0]);
        assert!(matches!(
            resolve(&wf, "prompt"),
            Err(TargetError::Ambiguous { .. })
        ));
    }

    #[test]
    fn sampler_custom_advanced_settings_live_on_feeding_nodes() {
        let wf = graph(json!({
            "1": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["2", 0], "guider": ["3", 0], "sampler": ["4", 0], "sigmas": ["5", 0], "latent_image": ["8", 0]}},
            "2": {"class_type": "RandomNoise", "inputs": {"noise_seed": 5}},
            "3": {"class_type": "CFGGuider", "inputs": {"model": ["9", 0], "positive": ["6", 0], "negative": ["7", 0], "cfg": 3.5}},
            "4": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
            "5": {"class_type": "BasicScheduler", "inputs": {"model": ["9", 0], "scheduler": "simple", "steps": 20, "denoise": 1}},
            "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "p", "clip": ["9", 1]}},
            "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "n", "clip": ["9", 1]}},
            "8": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 1024, "height": 1024, "batch_size": 1}},
            "9": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "x"}}
        }));
        for (name, want) in [
            ("seed", "2.noise_seed"),
            ("cfg", "3.cfg"),
            ("sampler", "4.sampler_name"),
            ("steps", "5.steps"),
            ("scheduler", "5.scheduler"),
            ("denoise", "5.denoise"),
            ("prompt", "6.text"),
            ("negative", "7.text"),
            ("width", "8.width"),
            ("checkpoint", "9.ckpt_name"),
        ] {
            assert_eq!(resolve(&wf, name), Ok(vec![want.to_owned()]), "{name}");
        }
    }

    #[test]
    fn sdxl_encoders_set_both_texts() {
        let mut wf = t2i();
        wf["6"] = json!({"class_type": "CLIPTextEncodeSDXL", "inputs": {"clip": ["4", 1], "width": 1024, "text_g": "a", "text_l": "b"}});
        assert_eq!(
            resolve(&wf, "prompt"),
            Ok(vec!["6.text_g".into(), "6.text_l".into()])
        );
    }

    #[test]
    fn two_samplers_are_ambiguous_unless_aliased() {
        let mut wf = t2i();
        wf.insert("20".into(), json!({"class_type": "KSamplerAdvanced", "inputs": {"noise_seed": 1, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["3", 0]}, "_meta": {"title": "Refiner"}}));
        assert_eq!(
            resolve(&wf, "seed"),
            Err(TargetError::Ambiguous {
                why: "2 sampler nodes".into(),
                candidates: vec![
                    "3 (KSampler)".into(),
                    "20 (KSamplerAdvanced 'Refiner')".into()
                ]
            })
        );
        assert_eq!(
            resolve_with(&wf, "seed", &[("seed", "Refiner.noise_seed")]),
            Ok(vec!["20.noise_seed".into()])
        );
    }

    #[test]
    fn missing_inputs_links_and_unknown_names_are_errors() {
        let wf = t2i();
        assert!(
            matches!(resolve(&wf, "3.cfgg"), Err(TargetError::Input(m)) if m.contains("has no input 'cfgg'"))
        );
        assert!(
            matches!(resolve(&wf, "3.model"), Err(TargetError::Input(m)) if m.contains("is a link from node 4"))
        );
        assert_eq!(
            resolve(&wf, "sampeler"),
            Err(TargetError::Unknown {
                suggestion: Some("sampler".into())
            })
        );
        assert_eq!(
            resolve(&wf, "image"),
            Err(TargetError::NotFound(
                "no LoadImage node with input 'image' upstream of the sampler (for 'image')".into()
            ))
        );
    }

    #[test]
    fn a_linked_primitive_is_followed() {
        let mut wf = t2i();
        wf.insert(
            "30".into(),
            json!({"class_type": "PrimitiveInt", "inputs": {"value": 7}}),
        );
        wf["3"]["inputs"]["seed"] = json!(["30", 0]);
        assert_eq!(resolve(&wf, "seed"), Ok(vec!["30.value".into()]));
    }
}
