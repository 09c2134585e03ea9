//! The execution worker: one task taking prompts off the queue in priority
//! order and running them with the real message sequence (ComfyUI
//! `execution.py` `execute_async` + `main.py` `prompt_worker`), the real
//! execution order (`comfy_execution/graph.py`), classic signature caching,
//! and simulated nodes.
//!
//! Node outputs are small descriptors ([`Tensor`]: size, batch, colour), not
//! pixels; savers turn them into tiny PNGs whose colour is a function of the
//! producing graph (seed, cfg, prompt text…), so identical prompts give
//! identical bytes and different parameters different ones.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use indexmap::{IndexMap, IndexSet};
use rand::RngExt;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::hub::ImageMeta;
use super::queue::QueueItem;
use super::state::{MAX_HISTORY, Shared, lock, now_ms};
use super::{files, jpeg, media};
use crate::validate::Catalogue;

/// Sampler nodes: they take `steps × step_ms` and report each step.
const SAMPLERS: &[&str] = &[
    "KSampler",
    "KSamplerAdvanced",
    "SamplerCustom",
    "SamplerCustomAdvanced",
];

/// Largest side of the PNGs the sim writes: enough to tell images apart,
/// small enough to be written and served fast.
const MAX_SIDE: u32 = 64;

/// What a node produced, per output socket.
#[derive(Debug, Clone)]
struct Tensor {
    width: u32,
    height: u32,
    batch: u32,
    rgb: [u8; 3],
    /// Exact colours (EmptyImage, ImageInvert) are the same for every batch
    /// image; hashed ones vary per image, as sampled images do.
    exact: bool,
    salt: [u8; 32],
    /// A string value (PrimitiveString), shown by PreviewAny.
    text: Option<String>,
}

impl Default for Tensor {
    fn default() -> Self {
        Tensor {
            width: 64,
            height: 64,
            batch: 1,
            rgb: [128, 128, 128],
            exact: false,
            salt: [0; 32],
            text: None,
        }
    }
}

impl Tensor {
    fn colour(&self, index: u32) -> [u8; 3] {
        if self.exact || index == 0 {
            return self.rgb;
        }
        let h = Sha256::new()
            .chain_update(self.salt)
            .chain_update(index.to_le_bytes())
            .finalize();
        [h[0], h[1], h[2]]
    }

    /// The PNG size: the nominal size scaled down to at most [`MAX_SIDE`].
    fn pixel_size(&self) -> (u32, u32) {
        let (w, h) = (self.width.max(1), self.height.max(1));
        let side = w.max(h);
        if side <= MAX_SIDE {
            return (w, h);
        }
        let scale = |v: u32| ((u64::from(v) * u64::from(MAX_SIDE)) / u64::from(side)).max(1) as u32;
        (scale(w), scale(h))
    }
}

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
enum Stop {
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
struct Run<'a> {
    shared: &'a Shared,
    item: &'a QueueItem,
    client: Option<&'a str>,
    /// History `status.messages`.
    messages: Vec<Value>,
    /// `progress_state` registry, in the order nodes were touched.
    progress: IndexMap<String, (Value, Value, &'static str)>,
    ui_outputs: IndexMap<String, Value>,
    executed: Vec<String>,
    values: HashMap<String, Vec<Tensor>>,
    sigs: HashMap<String, Option<String>>,
    /// Whether this prompt's PNG images drift (`SimConfig::drift_seeds`,
    /// `drift_after`).
    drift: bool,
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

    fn class_of(&self, id: &str) -> &str {
        self.node(id)
            .get("class_type")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    fn inputs(&self, id: &str) -> Option<&Map<String, Value>> {
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
    fn progress_update(
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
        let is_changed = match class.as_str() {
            "LoadImage" | "LoadImageMask" => {
                let value = self.inputs(id)?.get("image")?.as_str()?.to_string();
                let path = files::resolve_input(&self.shared.dirs, &value)?;
                let bytes = std::fs::read(path).ok()?;
                json!(hex::encode(Sha256::digest(&bytes)))
            }
            // IS_CHANGED returns the time: never cached.
            "SaveImageWebsocket" => return None,
            _ => Value::Null,
        };
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
    fn linked(&self, cache: &Cache, link: &Value) -> Option<Tensor> {
        let src = link.get(0)?.as_str()?;
        let socket = link.get(1)?.as_u64().unwrap_or(0) as usize;
        let outs = match self.values.get(src) {
            Some(v) => v,
            None => &self.cached(cache, src)?.outputs,
        };
        outs.get(socket).or(outs.first()).cloned()
    }

    fn int_input(&self, id: &str, name: &str) -> Option<i64> {
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
        let base = self.base_tensor(cache, id);
        let mut ui: Option<Value> = None;
        let out = match class.as_str() {
            "EmptyImage" => {
                let c = self.int_input(id, "color").unwrap_or(0).clamp(0, 0xFF_FFFF) as u32;
                Tensor {
                    rgb: [(c >> 16) as u8, (c >> 8) as u8, c as u8],
                    exact: true,
                    ..base
                }
            }
            "ImageInvert" => Tensor {
                rgb: base.rgb.map(|c| 255 - c),
                ..base
            },
            "LoadImage" | "LoadImageMask" => self.load_image(id)?,
            "SaveImage" | "PreviewImage" => {
                ui = Some(self.save_images(id, &base, class == "PreviewImage")?);
                base
            }
            "SaveImageWebsocket" => {
                self.save_websocket(id, &base)?;
                base
            }
            "TestSleep" => {
                self.test_sleep(id).await?;
                base
            }
            "SimNamedFiles" => {
                ui = Some(self.save_named(id, &base)?);
                base
            }
            "PrimitiveString" | "PrimitiveStringMultiline" => {
                let value = self
                    .inputs(id)
                    .and_then(|i| i.get("value"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                Tensor {
                    text: Some(value),
                    ..base
                }
            }
            "PreviewAny" => {
                let text = self
                    .inputs(id)
                    .and_then(|i| i.get("source"))
                    .map(|v| {
                        if v.is_array() {
                            self.linked(cache, v)
                                .and_then(|t| t.text)
                                .unwrap_or_else(|| "…".to_string())
                        } else if let Some(s) = v.as_str() {
                            s.to_string()
                        } else {
                            v.to_string()
                        }
                    })
                    .unwrap_or_default();
                ui = Some(json!({"text": [text]}));
                base
            }
            c if saver_kind(c).is_some() => {
                let kind = saver_kind(c).expect("matched above");
                ui = Some(self.save_files(id, &base, &kind)?);
                base
            }
            c if SAMPLERS.contains(&c) => {
                self.sample(id, &base).await?;
                base
            }
            _ => base,
        };
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

    /// The generic output of a node: size and batch from its first linked
    /// image-like input (IMAGE, LATENT, MASK; else any link) or its own
    /// width/height/batch_size, colour from its signature.
    fn base_tensor(&self, cache: &Cache, id: &str) -> Tensor {
        let mut t = Tensor::default();
        let class = self.shared.catalogue.class(self.class_of(id));
        let inputs = self.inputs(id).cloned().unwrap_or_default();
        let mut links: Vec<(bool, &Value)> = match class {
            Some(c) => c
                .inputs
                .iter()
                .filter_map(|s| {
                    let v = inputs.get(&s.name).filter(|v| v.is_array())?;
                    let pixels = matches!(s.type_name(), Some("IMAGE" | "LATENT" | "MASK"));
                    Some((pixels, v))
                })
                .collect(),
            None => inputs
                .values()
                .filter(|v| v.is_array())
                .map(|v| (false, v))
                .collect(),
        };
        // Stable: image-like inputs first, each group in declaration order.
        links.sort_by_key(|(pixels, _)| !pixels);
        let mut inherited = false;
        if let Some(src) = links.iter().find_map(|(_, v)| self.linked(cache, v)) {
            t = src;
            inherited = true;
        }
        let dim = |name: &str| {
            self.int_input(id, name)
                .filter(|v| *v > 0)
                .map(|v| v.min(1 << 20) as u32)
        };
        if let Some(w) = dim("width") {
            t.width = w;
        }
        if let Some(h) = dim("height") {
            t.height = h;
        }
        if let Some(b) = dim("batch_size") {
            t.batch = b;
        }
        let sig = self.sigs.get(id).cloned().flatten().unwrap_or_default();
        let digest = Sha256::digest(sig.as_bytes());
        t.salt.copy_from_slice(&digest);
        // Pass-through nodes that only look at their input keep an exact
        // colour only if nothing about them could change the pixels.
        if !(inherited && t.exact && is_pass_through(self.class_of(id))) {
            t.rgb = [digest[0], digest[1], digest[2]];
            t.exact = false;
        }
        t
    }

    fn load_image(&self, id: &str) -> Result<Tensor, Stop> {
        let value = self
            .inputs(id)
            .and_then(|i| i.get("image"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let path = files::resolve_input(&self.shared.dirs, &value);
        let bytes = path.as_ref().and_then(|p| std::fs::read(p).ok());
        let shown = path
            .as_ref()
            .map_or(value.clone(), |p| p.display().to_string());
        let unidentified = || {
            Stop::Failed {
            exception_type: "PIL.UnidentifiedImageError".into(),
            message: format!("cannot identify image file '{shown}'"),
            traceback: vec![
                "  File \"/srv/comfyui/app/nodes.py\", line 1690, in load_image\n    img = node_helpers.pillow(Image.open, image_path)\n".into(),
            ],
        }
        };
        let Some(bytes) = bytes else {
            return Err(Stop::Failed {
                exception_type: "FileNotFoundError".into(),
                message: format!("[Errno 2] No such file or directory: '{shown}'"),
                traceback: Vec::new(),
            });
        };
        let (width, height) = if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            let decoder = png::Decoder::new(std::io::Cursor::new(&bytes));
            match decoder.read_info() {
                Ok(reader) => {
                    let info = reader.info();
                    (info.width, info.height)
                }
                Err(_) => return Err(unidentified()),
            }
        } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF])
            || (bytes.len() > 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP")
        {
            (64, 64)
        } else {
            return Err(unidentified());
        };
        let digest = Sha256::digest(&bytes);
        let mut salt = [0u8; 32];
        salt.copy_from_slice(&digest);
        Ok(Tensor {
            width,
            height,
            batch: 1,
            rgb: [digest[0], digest[1], digest[2]],
            exact: true,
            salt,
            text: None,
        })
    }

    fn png_for(&self, t: &Tensor, index: u32) -> Vec<u8> {
        let (w, h) = t.pixel_size();
        let extra = self
            .item
            .extra_data
            .get("extra_pnginfo")
            .and_then(Value::as_object);
        let mut colour = t.colour(index);
        if self.drift {
            // Slight: one level of one channel, as numeric noise would.
            colour[0] = if colour[0] == u8::MAX {
                colour[0] - 1
            } else {
                colour[0] + 1
            };
        }
        files::encode_png(w, h, colour, &files::png_texts(&self.item.prompt, extra))
    }

    /// SaveImage / PreviewImage: real names, real PNGs.
    fn save_images(&self, id: &str, t: &Tensor, preview: bool) -> Result<Value, Stop> {
        let (base_dir, kind, prefix) = if preview {
            (
                &self.shared.dirs.temp,
                "temp",
                format!("ComfyUI_temp_{}", self.shared.temp_suffix),
            )
        } else {
            let p = self
                .inputs(id)
                .and_then(|i| i.get("filename_prefix"))
                .and_then(Value::as_str)
                .unwrap_or("ComfyUI")
                .to_string();
            (&self.shared.dirs.output, "output", p)
        };
        let target = files::save_target(&prefix, base_dir, t.width, t.height).map_err(|message| {
            Stop::Failed {
                exception_type: "Exception".into(),
                message,
                traceback: vec![
                    "  File \"/srv/comfyui/app/nodes.py\", line 1607, in save_images\n    full_output_folder, filename, counter, subfolder, filename_prefix = folder_paths.get_save_image_path(filename_prefix, self.output_dir, images[0].shape[1], images[0].shape[0])\n".into(),
                    "  File \"/srv/comfyui/app/folder_paths.py\", line 464, in get_save_image_path\n    raise Exception(err)\n".into(),
                ],
            }
        })?;
        let io_fail = |e: std::io::Error| Stop::Failed {
            exception_type: "OSError".into(),
            message: e.to_string(),
            traceback: Vec::new(),
        };
        let mut counters = lock(&self.shared.counters);
        let mut counter = counters
            .next(&target.folder, &target.filename)
            .map_err(io_fail)?;
        let mut images = Vec::with_capacity(t.batch as usize);
        for i in 0..t.batch {
            let name = target.filename.replace("%batch_num%", &i.to_string());
            let file = format!("{name}_{counter:05}_.png");
            files::write_file(&target.folder.join(&file), &self.png_for(t, i)).map_err(io_fail)?;
            let named = if self.shared.config.hostile_filenames && !preview {
                if counter % 2 == 0 {
                    format!("../../{file}")
                } else {
                    target.folder.join(&file).to_string_lossy().into_owned()
                }
            } else {
                file.clone()
            };
            images.push(json!({"filename": named, "subfolder": target.subfolder, "type": kind}));
            counter += 1;
        }
        counters.wrote(&target.folder, &target.filename, counter);
        Ok(json!({"images": images}))
    }

    /// The savers other than SaveImage (video, audio, latents, 3D, the
    /// VHS stand-in): real naming and counters, files from [`media`], the
    /// `ui` the real node reports.
    fn save_files(&self, id: &str, t: &Tensor, kind: &SaverKind) -> Result<Value, Stop> {
        let input = |name: &str| self.inputs(id).and_then(|i| i.get(name));
        let vhs_format = kind.vhs.then(|| {
            input("format")
                .and_then(Value::as_str)
                .unwrap_or("image/gif")
                .to_string()
        });
        let ext = match (&vhs_format, kind.ext) {
            (Some(format), _) => match format.as_str() {
                "image/webp" => "webp",
                "video/h264-mp4" => "mp4",
                "video/webm" => "webm",
                _ => "gif",
            },
            (None, "video") => match input("format").and_then(Value::as_str) {
                Some("webm") => "webm",
                _ => "mp4",
            },
            (None, ext) => ext,
        };
        let temp =
            kind.temp || (kind.vhs && input("save_output").and_then(Value::as_bool) == Some(false));
        let (base_dir, type_name, prefix) = if temp {
            (
                &self.shared.dirs.temp,
                "temp",
                format!("ComfyUI_temp_{}", self.shared.temp_suffix),
            )
        } else {
            let p = input("filename_prefix")
                .and_then(Value::as_str)
                .unwrap_or(kind.default_prefix)
                .to_string();
            (&self.shared.dirs.output, "output", p)
        };
        let target =
            files::save_target(&prefix, base_dir, t.width, t.height).map_err(|message| {
                Stop::Failed {
                    exception_type: "Exception".into(),
                    message,
                    traceback: Vec::new(),
                }
            })?;
        let io_fail = |e: std::io::Error| Stop::Failed {
            exception_type: "OSError".into(),
            message: e.to_string(),
            traceback: Vec::new(),
        };
        let fps = input("fps")
            .or_else(|| input("frame_rate"))
            .and_then(Value::as_f64)
            .unwrap_or(8.0);
        let frames: Vec<[u8; 3]> = (0..t.batch.clamp(1, 1024)).map(|i| t.colour(i)).collect();
        let (w, h) = t.pixel_size();
        let files_made = if kind.one_file { 1 } else { t.batch.max(1) };
        let mut counters = lock(&self.shared.counters);
        let mut counter = counters
            .next(&target.folder, &target.filename)
            .map_err(io_fail)?;
        let mut items = Vec::new();
        for i in 0..files_made {
            let name = target.filename.replace("%batch_num%", &i.to_string());
            let file = if kind.vhs {
                format!("{name}_{counter:05}.{ext}")
            } else {
                format!("{name}_{counter:05}_.{ext}")
            };
            let mut content = t.salt.to_vec();
            content.extend_from_slice(&i.to_le_bytes());
            let bytes = match ext {
                "webp" => media::animated_webp(w, h, &frames, fps),
                "png" => media::apng(w, h, &frames, fps),
                "latent" => media::latent(t.width, t.height, t.batch),
                "glb" => media::glb(&hex::encode(&content[..8])),
                other => media::stand_in(other, &content),
            };
            let path = target.folder.join(&file);
            files::write_file(&path, &bytes).map_err(io_fail)?;
            let named = if self.shared.config.hostile_filenames && !temp {
                if counter % 2 == 0 {
                    format!("../../{file}")
                } else {
                    path.to_string_lossy().into_owned()
                }
            } else {
                file.clone()
            };
            let mut item =
                json!({"filename": named, "subfolder": target.subfolder, "type": type_name});
            if let (Some(format), Value::Object(m)) = (&vhs_format, &mut item) {
                let stem = file.rsplit_once('.').map_or(file.as_str(), |(s, _)| s);
                m.insert("format".into(), json!(format));
                m.insert("frame_rate".into(), json!(fps));
                m.insert("workflow".into(), json!(format!("{stem}.png")));
                m.insert("fullpath".into(), json!(path.to_string_lossy()));
            }
            items.push(item);
            counter += 1;
        }
        counters.wrote(&target.folder, &target.filename, counter);
        let mut ui = Map::new();
        ui.insert(kind.key.into(), Value::Array(items.clone()));
        if kind.animated {
            ui.insert("animated".into(), json!([true]));
        }
        if kind.vhs && self.shared.config.duplicate_outputs {
            ui.insert("video".into(), Value::Array(items));
        }
        Ok(Value::Object(ui))
    }

    /// SimNamedFiles: each line of `filenames` a file of exactly that name
    /// in `output/named/`, listed under `images`.
    fn save_named(&self, id: &str, t: &Tensor) -> Result<Value, Stop> {
        let names = self
            .inputs(id)
            .and_then(|i| i.get("filenames"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let folder = self.shared.dirs.output.join("named");
        let fail = |message: String| Stop::Failed {
            exception_type: "OSError".into(),
            message,
            traceback: Vec::new(),
        };
        let mut items = Vec::new();
        for (i, name) in names
            .lines()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .enumerate()
        {
            if name.contains(['/', '\\']) || name == "." || name == ".." {
                return Err(fail(format!("not a plain file name: {name:?}")));
            }
            let ext = name
                .rsplit_once('.')
                .map(|(_, e)| e.to_ascii_lowercase())
                .unwrap_or_default();
            let bytes = if ext == "png" {
                self.png_for(t, i as u32)
            } else {
                let mut content = t.salt.to_vec();
                content.extend_from_slice(name.as_bytes());
                media::stand_in(&ext, &content)
            };
            std::fs::create_dir_all(&folder)
                .and_then(|()| files::write_file(&folder.join(name), &bytes))
                .map_err(|e| fail(e.to_string()))?;
            items.push(json!({"filename": name, "subfolder": "named", "type": "output"}));
        }
        Ok(json!({"images": items}))
    }

    /// SaveImageWebsocket: one progress and one PNG frame per image.
    fn save_websocket(&mut self, id: &str, t: &Tensor) -> Result<(), Stop> {
        for i in 0..t.batch {
            let png = Bytes::from(self.png_for(t, i));
            self.progress_update(id, json!(i), json!(t.batch), Some((&png, false)))?;
        }
        Ok(())
    }

    /// The test pack's TestSleep: sleeps, float progress about every 10 ms.
    async fn test_sleep(&mut self, id: &str) -> Result<(), Stop> {
        let seconds = self
            .inputs(id)
            .and_then(|i| i.get("seconds"))
            .and_then(Value::as_f64)
            .unwrap_or(1.0)
            .max(0.0);
        // As the test pack: `while now < expiration`, an update then a
        // 10 ms sleep per turn, the value clamped to the total.
        let start = Instant::now();
        let mut elapsed = 0.0;
        while elapsed < seconds {
            elapsed = start.elapsed().as_secs_f64();
            self.progress_update(id, json!(elapsed.min(seconds)), json!(seconds), None)?;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// The sampler's step count; custom samplers read it from the node that
    /// makes their sigmas (BasicScheduler & co.).
    fn steps(&self, id: &str) -> u64 {
        if let Some(s) = self.int_input(id, "steps") {
            return s.max(0) as u64;
        }
        let mut seen = HashSet::new();
        let mut stack: Vec<String> = vec![id.to_string()];
        while let Some(n) = stack.pop() {
            if !seen.insert(n.clone()) {
                continue;
            }
            if n != id
                && let Some(s) = self.int_input(&n, "steps")
            {
                return s.max(0) as u64;
            }
            if let Some(inputs) = self.inputs(&n) {
                for v in inputs.values() {
                    if let Some(src) = v.get(0).and_then(Value::as_str)
                        && v.as_array().is_some_and(|a| a.len() == 2)
                    {
                        stack.push(src.to_string());
                    }
                }
            }
        }
        20
    }

    /// Steps × `step_ms`, one progress per step; with a preview method in
    /// `extra_data`, a JPEG preview per step, as the real server.
    async fn sample(&mut self, id: &str, t: &Tensor) -> Result<(), Stop> {
        let steps = self.steps(id);
        let step = Duration::from_millis(self.shared.config.step_ms);
        let previews = self
            .item
            .extra_data
            .get("preview_method")
            .and_then(Value::as_str)
            .is_some_and(|m| !matches!(m, "none" | "default"));
        let (w, h) = t.pixel_size();
        let start = tokio::time::Instant::now();
        for i in 1..=steps {
            if step.is_zero() {
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep_until(start + step * (i as u32)).await;
            }
            let preview = previews.then(|| Bytes::from(jpeg::solid(w, h, t.colour(i as u32))));
            self.progress_update(
                id,
                json!(i),
                json!(steps),
                preview.as_ref().map(|p| (p, true)),
            )?;
        }
        Ok(())
    }
}

/// How a saver other than SaveImage names and groups its files.
struct SaverKind {
    /// The `ui` key its files are listed under.
    key: &'static str,
    /// The extension (`video`: from the node's `format` input).
    ext: &'static str,
    /// The node's default `filename_prefix`.
    default_prefix: &'static str,
    /// Adds `"animated": [true]`.
    animated: bool,
    /// The whole batch goes into one file (animations, latents).
    one_file: bool,
    /// Writes to temp (previews).
    temp: bool,
    /// The VideoHelperSuite stand-in: `gifs`, `format`, its own naming.
    vhs: bool,
}

fn saver_kind(class: &str) -> Option<SaverKind> {
    let k = |key, ext, default_prefix, animated, one_file| SaverKind {
        key,
        ext,
        default_prefix,
        animated,
        one_file,
        temp: false,
        vhs: false,
    };
    Some(match class {
        "SaveAnimatedWEBP" => k("images", "webp", "ComfyUI", true, true),
        "SaveAnimatedPNG" => k("images", "png", "ComfyUI", true, true),
        "SaveWEBM" => k("images", "webm", "ComfyUI", true, true),
        "SaveVideo" => k("images", "video", "video/ComfyUI", true, true),
        "SaveAudio" => k("audio", "flac", "audio/ComfyUI", false, false),
        "SaveAudioMP3" => k("audio", "mp3", "audio/ComfyUI", false, false),
        "SaveAudioOpus" => k("audio", "opus", "audio/ComfyUI", false, false),
        "PreviewAudio" => SaverKind {
            temp: true,
            ..k("audio", "flac", "", false, false)
        },
        "SaveLatent" => k("latents", "latent", "latents/ComfyUI", false, true),
        "SaveGLB" => k("3d", "glb", "mesh/ComfyUI", false, false),
        "VHS_VideoCombine" => SaverKind {
            vhs: true,
            ..k("gifs", "gif", "AnimateDiff", false, true)
        },
        _ => return None,
    })
}

/// Nodes whose output pixels are their input's (so an exact colour stays
/// exact through them).
fn is_pass_through(class: &str) -> bool {
    matches!(
        class,
        "TestSleep" | "SaveImage" | "PreviewImage" | "SaveImageWebsocket"
    )
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
