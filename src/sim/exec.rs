//! The execution worker: one task taking prompts off the queue in priority
//! order and running them with the real message sequence (ComfyUI
//! `execution.py` `execute_async` + `main.py` `prompt_worker`), the real
//! execution order (`comfy_execution/graph.py`), classic signature caching
//! and the injected faults.
//!
//! What each node does when it runs lives in [`super::nodes`]; the engine
//! knows no node class but through it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use indexmap::{IndexMap, IndexSet};
use rand::RngExt;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::files;
use super::hub::ImageMeta;
use super::nodes::Tensor;
use super::queue::QueueItem;
use super::state::{MAX_HISTORY, Shared, lock, now_ms};
use crate::validate::Catalogue;

#[derive(Clone)]
struct CacheEntry {
    outputs: Vec<Tensor>,
    /// The node's `ui` (e.g. `{"images": […]}`), replayed when cached.
    ui: Option<Value>,
}

/// The classic cache: signature → outputs; after each prompt only the
/// entries that prompt used survive.
#[derive(Default)]
pub(crate) struct Cache {
    entries: HashMap<String, CacheEntry>,
}

impl Cache {
    fn keep_only(&mut self, keys: &HashSet<String>) {
        self.entries.retain(|k, _| keys.contains(k));
    }
}

/// Why a node stopped the prompt.
pub(super) enum Stop {
    Failed {
        exception_type: String,
        message: String,
        traceback: Vec<String>,
    },
    Interrupted,
}

enum Outcome {
    Success,
    Error,
    Interrupted,
}

pub(crate) async fn worker(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut cache = Cache::default();
    loop {
        let item = loop {
            {
                let mut core = lock(&shared.core);
                if core.reset_caches {
                    cache.entries.clear();
                    core.reset_caches = false;
                }
                if let Some(item) = core.queue.pop() {
                    core.running = Some(item.clone());
                    shared.broadcast_status(&core);
                    break item;
                }
            }
            tokio::select! {
                _ = shared.work.notified() => {}
                _ = stop.changed() => return,
            }
        };
        run_prompt(&shared, &mut cache, item).await;
    }
}

async fn run_prompt(shared: &Arc<Shared>, cache: &mut Cache, item: QueueItem) {
    let started = Instant::now();
    let client = item.client_id();
    shared.interrupt.store(false, Ordering::SeqCst);
    shared.hub.set_exec_client(client.clone());
    let mut run = Run {
        shared,
        item: &item,
        client: client.as_deref(),
        messages: Vec::new(),
        progress: IndexMap::new(),
        ui_outputs: IndexMap::new(),
        executed: Vec::new(),
        values: HashMap::new(),
        sigs: HashMap::new(),
        drift: drifts(
            &shared.config,
            &item.prompt,
            shared.stats().prompts_executed,
        ),
    };
    let outcome = run.execute(cache).await;
    shared.add_busy(started.elapsed());

    let outputs: Map<String, Value> = run
        .ui_outputs
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let meta: Map<String, Value> = run
        .ui_outputs
        .keys()
        .map(|k| {
            (
                k.clone(),
                json!({"node_id": k, "display_node": k, "parent_node": null, "real_node_id": k}),
            )
        })
        .collect();
    let success = matches!(outcome, Outcome::Success);
    let entry = json!({
        "prompt": item.to_json(),
        "outputs": outputs,
        "status": {
            "status_str": if success { "success" } else { "error" },
            "completed": success,
            "messages": run.messages,
        },
        "meta": meta,
    });
    let mut core = lock(&shared.core);
    if core
        .running
        .as_ref()
        .is_some_and(|r| r.prompt_id == item.prompt_id)
    {
        core.running = None;
    }
    core.history.insert(item.prompt_id.clone(), entry);
    while core.history.len() > MAX_HISTORY {
        core.history.shift_remove_index(0);
    }
    shared.broadcast_status(&core);
    if let Some(c) = client.as_deref() {
        shared.hub.send(
            "executing",
            json!({"node": null, "prompt_id": item.prompt_id}),
            Some(c),
        );
    }
    core.since_restart += 1;
    if shared
        .config
        .restart_after
        .is_some_and(|n| n > 0 && core.since_restart >= n)
    {
        // A crash and restart: queue, history and caches are gone, every
        // socket drops, numbering starts again.
        tracing::info!(
            "sim: simulated restart after {} prompts",
            core.since_restart
        );
        core.since_restart = 0;
        core.queue.clear();
        core.history.clear();
        core.number = 0;
        core.reset_caches = true;
        shared.hub.set_exec_client(None);
        shared.hub.close_all();
    }
}

/// The state of one prompt's execution.
pub(super) struct Run<'a> {
    /// The simulator's state: config, catalogue, folders, hub.
    pub(super) shared: &'a Shared,
    /// The prompt being run.
    pub(super) item: &'a QueueItem,
    client: Option<&'a str>,
    /// History `status.messages`.
    messages: Vec<Value>,
    /// `progress_state` registry, in the order nodes were touched.
    progress: IndexMap<String, (Value, Value, &'static str)>,
    ui_outputs: IndexMap<String, Value>,
    executed: Vec<String>,
    values: HashMap<String, Vec<Tensor>>,
    /// Each node's cache signature (`None`: never cached).
    pub(super) sigs: HashMap<String, Option<String>>,
    /// Whether this prompt's PNG images drift (`SimConfig::drift_seeds`,
    /// `drift_after`).
    pub(super) drift: bool,
}

/// Whether a prompt drifts: a sampler seed (`seed`, `noise_seed`) among
/// the listed ones, or `executed` prompts already past `drift_after`.
fn drifts(config: &super::SimConfig, prompt: &Map<String, Value>, executed: u64) -> bool {
    if config.drift_after.is_some_and(|n| executed >= n) {
        return true;
    }
    !config.drift_seeds.is_empty()
        && prompt.values().any(|node| {
            ["seed", "noise_seed"].iter().any(|name| {
                node.pointer(&format!("/inputs/{name}"))
                    .and_then(Value::as_u64)
                    .is_some_and(|seed| config.drift_seeds.contains(&seed))
            })
        })
}

impl Run<'_> {
    fn prompt_id(&self) -> &str {
        &self.item.prompt_id
    }

    fn node(&self, id: &str) -> &Value {
        self.item.prompt.get(id).unwrap_or(&Value::Null)
    }

    /// A node's `class_type` (empty when it has none).
    pub(super) fn class_of(&self, id: &str) -> &str {
        self.node(id)
            .get("class_type")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// A node's `inputs` object.
    pub(super) fn inputs(&self, id: &str) -> Option<&Map<String, Value>> {
        self.node(id).get("inputs").and_then(Value::as_object)
    }

    /// `add_message`: recorded in history, sent to the client (and to
    /// everyone when `broadcast` and there is no client).
    fn add_message(&mut self, event: &str, data: Value, broadcast: bool) {
        let mut data = data;
        if let Value::Object(m) = &mut data {
            m.insert("timestamp".into(), json!(now_ms()));
        }
        self.messages.push(json!([event, data]));
        match self.client {
            Some(c) => self.shared.hub.send(event, data, Some(c)),
            None if broadcast => self.shared.hub.send(event, data, None),
            None => {}
        }
    }

    /// Sent only when the prompt has a client (`executing`, `executed`).
    fn to_client(&self, event: &str, data: Value) {
        if let Some(c) = self.client {
            self.shared.hub.send(event, data, Some(c));
        }
    }

    /// Sent to the client, or broadcast without one (`progress`…).
    fn to_client_or_all(&self, event: &str, data: Value) {
        self.shared.hub.send(event, data, self.client);
    }

    fn send_progress_state(&self) {
        let pid = self.prompt_id();
        let nodes: Map<String, Value> = self
            .progress
            .iter()
            .map(|(id, (value, max, state))| {
                (
                    id.clone(),
                    json!({"value": value, "max": max, "state": state, "node_id": id,
                        "prompt_id": pid, "display_node_id": id, "parent_node_id": null,
                        "real_node_id": id}),
                )
            })
            .collect();
        self.to_client_or_all("progress_state", json!({"prompt_id": pid, "nodes": nodes}));
    }

    fn progress_start(&mut self, id: &str) {
        self.progress
            .insert(id.to_string(), (json!(0.0), json!(1.0), "running"));
        self.send_progress_state();
    }

    fn progress_finish(&mut self, id: &str) {
        let entry = self
            .progress
            .entry(id.to_string())
            .or_insert((json!(0), json!(1), "pending"));
        entry.0 = entry.1.clone();
        entry.2 = "finished";
        self.send_progress_state();
    }

    fn interrupted(&self) -> bool {
        self.shared.interrupt.load(Ordering::SeqCst)
    }

    /// A ProgressBar update: the interrupt check, `progress_state`, the
    /// image frames and `progress`, in the real order. `image` is
    /// `(bytes, is_jpeg)`.
    pub(super) fn progress_update(
        &mut self,
        id: &str,
        value: Value,
        max: Value,
        image: Option<(&Bytes, bool)>,
    ) -> Result<(), Stop> {
        if self.interrupted() {
            return Err(Stop::Interrupted);
        }
        self.progress
            .insert(id.to_string(), (value.clone(), max.clone(), "running"));
        self.send_progress_state();
        let meta = ImageMeta {
            node_id: id,
            prompt_id: &self.item.prompt_id,
            jpeg: image.is_some_and(|(_, jpeg)| jpeg),
        };
        let plain = image.map(|(bytes, _)| {
            self.shared
                .hub
                .send_image_with_metadata(bytes, &meta, self.client)
        });
        self.to_client_or_all(
            "progress",
            json!({"value": value, "max": max, "prompt_id": self.prompt_id(), "node": id}),
        );
        if let (Some((bytes, _)), Some(plain)) = (image, &plain) {
            self.shared
                .hub
                .send_image_plain(bytes, &meta, self.client, plain);
        }
        Ok(())
    }

    async fn execute(&mut self, cache: &mut Cache) -> Outcome {
        let pid = self.prompt_id().to_string();
        self.add_message("execution_start", json!({"prompt_id": pid}), false);
        let ids: Vec<String> = self.item.prompt.keys().cloned().collect();
        for id in &ids {
            self.signature(id, &mut HashSet::new());
        }
        let cached: Vec<String> = ids
            .iter()
            .filter(|id| self.cached(cache, id).is_some())
            .cloned()
            .collect();
        self.add_message(
            "execution_cached",
            json!({"nodes": cached, "prompt_id": pid}),
            false,
        );

        let cat = &self.shared.catalogue;
        let mut list = ExecList::default();
        for o in &self.item.outputs {
            list.add_node(&self.item.prompt, o, &|id: &str| {
                self.cached(cache, id).is_some()
            });
        }
        let fail_at = self.roll_failure(list.pending.len());
        let mut ran = 0usize;
        let outcome = loop {
            let Some(id) = list.stage(&self.item.prompt, cat) else {
                if list.pending.is_empty() {
                    break Outcome::Success;
                }
                let node = list.pending.first().cloned().unwrap_or_default();
                self.fail(
                    &node,
                    Stop::Failed {
                        exception_type: "graph.DependencyCycleError".into(),
                        message: "Dependency cycle detected".into(),
                        traceback: Vec::new(),
                    },
                );
                break Outcome::Error;
            };
            if let Some(entry) = self.cached(cache, &id).cloned() {
                // A cached output node: replay its old ui.
                self.to_client(
                    "executed",
                    json!({"node": id, "display_node": id,
                        "output": entry.ui.clone().unwrap_or(Value::Null), "prompt_id": pid}),
                );
                if let (Some(ui), Some(_)) = (entry.ui, self.client) {
                    self.ui_outputs.insert(id.clone(), ui);
                }
                self.progress_finish(&id);
                self.values.insert(id.clone(), entry.outputs);
                list.complete(&id);
                continue;
            }
            let fail_here = fail_at == Some(ran);
            ran += 1;
            match self.run_node(cache, &id, fail_here).await {
                Ok(()) => list.complete(&id),
                Err(Stop::Interrupted) => {
                    let data = json!({"prompt_id": pid, "node_id": id,
                        "node_type": self.class_of(&id), "executed": self.executed});
                    self.add_message("execution_interrupted", data, true);
                    break Outcome::Interrupted;
                }
                Err(stop) => {
                    self.fail(&id, stop);
                    break Outcome::Error;
                }
            }
        };
        if matches!(outcome, Outcome::Success) {
            self.add_message("execution_success", json!({"prompt_id": pid}), false);
        }
        let keep: HashSet<String> = self.sigs.values().flatten().cloned().collect();
        cache.keep_only(&keep);
        outcome
    }

    fn roll_failure(&self, candidates: usize) -> Option<usize> {
        let rate = self.shared.config.fail_rate;
        if rate <= 0.0 || candidates == 0 {
            return None;
        }
        let mut rng = lock(&self.shared.faults.fail);
        (rng.random::<f64>() < rate).then(|| rng.random_range(0..candidates))
    }

    fn fail(&mut self, id: &str, stop: Stop) {
        let Stop::Failed {
            exception_type,
            message,
            traceback,
        } = stop
        else {
            return;
        };
        let current_outputs: Vec<String> = self.item.prompt.keys().cloned().collect();
        let data = json!({
            "prompt_id": self.prompt_id(),
            "node_id": id,
            "node_type": self.class_of(id),
            "executed": self.executed,
            "exception_message": message,
            "exception_type": exception_type,
            "traceback": traceback,
            "current_inputs": self.current_inputs(id),
            "current_outputs": current_outputs,
        });
        self.add_message("execution_error", data, false);
    }

    /// `current_inputs` of an error: each input as a one-element list.
    fn current_inputs(&self, id: &str) -> Value {
        let mut out = Map::new();
        let Some(class) = self.shared.catalogue.class(self.class_of(id)) else {
            return Value::Object(out);
        };
        let inputs = self.inputs(id).cloned().unwrap_or_default();
        for spec in &class.inputs {
            if let Some(v) = inputs.get(&spec.name) {
                let shown = if v.is_array() {
                    json!(format!(
                        "<{} from node {}>",
                        spec.type_name().unwrap_or("*"),
                        v[0]
                    ))
                } else {
                    v.clone()
                };
                out.insert(spec.name.clone(), json!([shown]));
            }
        }
        for (name, kind) in &class.hidden {
            let v = match kind.as_str() {
                "PROMPT" => json!(files::python_json(&Value::Object(self.item.prompt.clone()))),
                "EXTRA_PNGINFO" => self
                    .item
                    .extra_data
                    .get("extra_pnginfo")
                    .cloned()
                    .unwrap_or(Value::Null),
                "UNIQUE_ID" => json!(id),
                _ => Value::Null,
            };
            out.insert(name.clone(), json!([v]));
        }
        Value::Object(out)
    }

    fn cached<'c>(&self, cache: &'c Cache, id: &str) -> Option<&'c CacheEntry> {
        let sig = self.sigs.get(id)?.as_ref()?;
        cache.entries.get(sig)
    }

    /// The classic cache key: class, IS_CHANGED, constant inputs and the
    /// ancestors' signatures (node id only for UNIQUE_ID nodes). `None` when
    /// it cannot be computed (a dangling link): never cached.
    fn signature(&mut self, id: &str, visiting: &mut HashSet<String>) -> Option<String> {
        if let Some(s) = self.sigs.get(id) {
            return s.clone();
        }
        if !visiting.insert(id.to_string()) {
            return None;
        }
        let result = self.compute_signature(id, visiting);
        visiting.remove(id);
        self.sigs.insert(id.to_string(), result.clone());
        result
    }

    fn compute_signature(&mut self, id: &str, visiting: &mut HashSet<String>) -> Option<String> {
        let class = self.class_of(id).to_string();
        let mut inputs: Vec<(String, Value)> = self.inputs(id)?.clone().into_iter().collect();
        inputs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut parts = Vec::with_capacity(inputs.len());
        for (name, v) in inputs {
            match v.as_array() {
                Some(link) if link.len() == 2 => {
                    let src = link[0].as_str()?.to_string();
                    self.item.prompt.get(&src)?;
                    let sig = self.signature(&src, visiting)?;
                    parts.push(json!([name, "link", sig, link[1]]));
                }
                _ => parts.push(json!([name, v])),
            }
        }
        let is_changed = self.is_changed(id, &class)?;
        let unique = self
            .shared
            .catalogue
            .class(&class)
            .is_some_and(|c| c.hidden.iter().any(|(_, k)| k == "UNIQUE_ID"));
        let key = json!([
            class,
            is_changed,
            parts,
            if unique { json!(id) } else { Value::Null }
        ]);
        Some(hex::encode(Sha256::digest(key.to_string().as_bytes())))
    }

    /// The tensor a link points at (computed this run or cached).
    pub(super) fn linked(&self, cache: &Cache, link: &Value) -> Option<Tensor> {
        let src = link.get(0)?.as_str()?;
        let socket = link.get(1)?.as_u64().unwrap_or(0) as usize;
        let outs = match self.values.get(src) {
            Some(v) => v,
            None => &self.cached(cache, src)?.outputs,
        };
        outs.get(socket).or(outs.first()).cloned()
    }

    /// A number input as an integer (floats truncated).
    pub(super) fn int_input(&self, id: &str, name: &str) -> Option<i64> {
        let v = self.inputs(id)?.get(name)?;
        v.as_i64().or_else(|| v.as_f64().map(|f| f as i64))
    }

    async fn run_node(&mut self, cache: &mut Cache, id: &str, fail_here: bool) -> Result<(), Stop> {
        let pid = self.prompt_id().to_string();
        self.progress_start(id);
        self.to_client(
            "executing",
            json!({"node": id, "display_node": id, "prompt_id": pid}),
        );
        if self.interrupted() {
            return Err(Stop::Interrupted);
        }
        if fail_here {
            return Err(Stop::Failed {
                exception_type: "RuntimeError".into(),
                message: format!(
                    "simulated failure injected by --fail-rate (seed {})",
                    self.shared.config.seed
                ),
                traceback: vec![
                    "  File \"/srv/comfyui/app/execution.py\", line 518, in execute\n    output_data, output_ui, has_subgraph, has_pending_tasks = await get_output_data(prompt_id, unique_id, obj, input_data_all, execution_block_cb=execution_block_cb, pre_execute_cb=pre_execute_cb, v3_data=v3_data)\n".into(),
                ],
            });
        }
        let class = self.class_of(id).to_string();
        let (out, mut ui) = self.behave(cache, id, &class).await?;
        if self.shared.config.malformed_outputs
            && let Some(Value::Object(keys)) = &mut ui
        {
            for item in keys.values_mut().filter_map(Value::as_array_mut).flatten() {
                if let Some(file) = item.as_object_mut().filter(|o| o.contains_key("filename")) {
                    file.insert("subfolder".into(), Value::Null);
                }
            }
        }
        if let Some(ui) = &ui {
            self.to_client(
                "executed",
                json!({"node": id, "display_node": id, "output": ui, "prompt_id": pid}),
            );
            self.ui_outputs.insert(id.to_string(), ui.clone());
        }
        self.progress_finish(id);
        let n_out = self
            .shared
            .catalogue
            .class(&class)
            .map_or(1, |c| c.outputs.len().max(1));
        let outputs = vec![out; n_out];
        if let Some(Some(sig)) = self.sigs.get(id) {
            cache.entries.insert(
                sig.clone(),
                CacheEntry {
                    outputs: outputs.clone(),
                    ui,
                },
            );
        }
        self.values.insert(id.to_string(), outputs);
        self.executed.push(id.to_string());
        Ok(())
    }
}
/// The real `ExecutionList`: nodes staged by a depth-first walk from each
/// output, picked by `ux_friendly_pick_node`.
#[derive(Default)]
struct ExecList {
    pending: IndexSet<String>,
    block_count: HashMap<String, usize>,
    blocking: HashMap<String, IndexSet<String>>,
}

fn links_of(prompt: &Map<String, Value>, id: &str) -> Vec<String> {
    prompt
        .get(id)
        .and_then(|n| n.get("inputs"))
        .and_then(Value::as_object)
        .map(|inputs| {
            inputs
                .values()
                .filter_map(|v| {
                    let a = v.as_array()?;
                    let src = a.first()?.as_str()?;
                    (a.len() == 2 && prompt.contains_key(src)).then(|| src.to_string())
                })
                .collect()
        })
        .unwrap_or_default()
}

impl ExecList {
    fn add_node(
        &mut self,
        prompt: &Map<String, Value>,
        id: &str,
        is_cached: &dyn Fn(&str) -> bool,
    ) {
        let mut stack = vec![id.to_string()];
        let mut links = Vec::new();
        while let Some(u) = stack.pop() {
            if self.pending.contains(&u) {
                continue;
            }
            self.pending.insert(u.clone());
            self.block_count.insert(u.clone(), 0);
            self.blocking.insert(u.clone(), IndexSet::new());
            for src in links_of(prompt, &u) {
                if !is_cached(&src) {
                    stack.push(src.clone());
                }
                links.push((src, u.clone()));
            }
        }
        for (from, to) in links {
            if is_cached(&from) {
                continue;
            }
            let blocked = self.blocking.entry(from).or_default();
            if blocked.insert(to.clone()) {
                *self.block_count.entry(to).or_default() += 1;
            }
        }
    }

    fn stage(&self, prompt: &Map<String, Value>, cat: &Catalogue) -> Option<String> {
        let ready: Vec<&String> = self
            .pending
            .iter()
            .filter(|id| self.block_count.get(*id).copied().unwrap_or(0) == 0)
            .collect();
        let is_output = |id: &str| {
            prompt
                .get(id)
                .and_then(|n| n.get("class_type"))
                .and_then(Value::as_str)
                .and_then(|c| cat.class(c))
                .is_some_and(|c| c.output_node)
        };
        let blocked = |id: &str| self.blocking.get(id).into_iter().flatten();
        if let Some(id) = ready.iter().find(|id| is_output(id)) {
            return Some((*id).clone());
        }
        if let Some(id) = ready.iter().find(|id| blocked(id).any(|b| is_output(b))) {
            return Some((*id).clone());
        }
        if let Some(id) = ready
            .iter()
            .find(|id| blocked(id).any(|b| blocked(b).any(|b2| is_output(b2))))
        {
            return Some((*id).clone());
        }
        ready.first().map(|id| (*id).clone())
    }

    fn complete(&mut self, id: &str) {
        self.pending.shift_remove(id);
        if let Some(blocked) = self.blocking.remove(id) {
            for b in blocked {
                if let Some(c) = self.block_count.get_mut(&b) {
                    *c = c.saturating_sub(1);
                }
            }
        }
    }
}
