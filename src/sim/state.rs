//! What the HTTP handlers, the websocket handlers and the worker share: the
//! queue and history (one lock, as the real `PromptQueue`), the socket hub,
//! the folders, fault dice and counters.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use indexmap::IndexMap;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::files::CounterCache;
use super::hub::Hub;
use super::queue::{PromptQueue, QueueItem};
use super::{SimConfig, SimError, SimStats};
use crate::validate::Catalogue;

/// A stand-in for VideoHelperSuite's `VHS_VideoCombine`, the most used
/// custom video saver: it reports its file under `gifs` with `format`,
/// `frame_rate`, `workflow` and `fullpath`, as the pack does.
const VHS_VIDEO_COMBINE: &str = r#"{
  "input": {
    "required": {
      "images": ["IMAGE"],
      "frame_rate": ["FLOAT", {"default": 8, "min": 1, "step": 1}],
      "loop_count": ["INT", {"default": 0, "min": 0, "max": 100, "step": 1}],
      "filename_prefix": ["STRING", {"default": "AnimateDiff"}],
      "format": [["image/gif", "image/webp", "video/h264-mp4", "video/webm"], {}],
      "pingpong": ["BOOLEAN", {"default": false}],
      "save_output": ["BOOLEAN", {"default": true}]
    },
    "optional": {"audio": ["AUDIO"]},
    "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO", "unique_id": "UNIQUE_ID"}
  },
  "input_order": {
    "required": ["images", "frame_rate", "loop_count", "filename_prefix", "format", "pingpong", "save_output"],
    "optional": ["audio"],
    "hidden": ["prompt", "extra_pnginfo", "unique_id"]
  },
  "output": ["VHS_FILENAMES"],
  "output_is_list": [false],
  "output_name": ["Filenames"],
  "name": "VHS_VideoCombine",
  "display_name": "Video Combine (stand-in)",
  "description": "comfy-batch sim stand-in for ComfyUI-VideoHelperSuite",
  "python_module": "custom_nodes.ComfyUI-VideoHelperSuite",
  "category": "Video Helper Suite",
  "output_node": true
}"#;

/// A sim-only node standing in for custom nodes that name their own files
/// (any extension, any case, dots in the name): one file per line of
/// `filenames`, written as is into `output/named/` (a PNG when the name
/// ends `.png` in any case, else stand-in bytes) and listed under `images`.
/// A later prompt naming the same file replaces it.
const SIM_NAMED_FILES: &str = r#"{
  "input": {
    "required": {
      "images": ["IMAGE"],
      "filenames": ["STRING", {"default": "x.png", "multiline": true}]
    }
  },
  "input_order": {"required": ["images", "filenames"]},
  "output": [],
  "output_is_list": [],
  "output_name": [],
  "name": "SimNamedFiles",
  "display_name": "Named Files (sim)",
  "description": "comfy-batch sim: saves files under the names given",
  "python_module": "custom_nodes.comfy-batch-sim",
  "category": "sim",
  "output_node": true
}"#;

/// The recorded catalogue plus the sim's stand-ins for custom packs.
fn base_catalogue() -> Result<Catalogue, crate::validate::CatalogueError> {
    let mut info: Value = serde_json::from_str(include_str!("../../assets/object_info.json"))?;
    if let Value::Object(map) = &mut info {
        map.insert(
            "VHS_VideoCombine".into(),
            serde_json::from_str(VHS_VIDEO_COMBINE)?,
        );
        map.insert(
            "SimNamedFiles".into(),
            serde_json::from_str(SIM_NAMED_FILES)?,
        );
    }
    Catalogue::from_object_info(&info)
}

/// The catalogue for a model list, shared by every simulator of the process
/// with the same models (tests and benchmarks start dozens; each parsed copy
/// is several MB).
fn shared_catalogue(
    models: &BTreeMap<String, Vec<String>>,
) -> Result<Arc<Catalogue>, crate::validate::CatalogueError> {
    type Cache = Vec<(BTreeMap<String, Vec<String>>, Weak<Catalogue>)>;
    static CACHE: Mutex<Cache> = Mutex::new(Vec::new());
    let mut cache = lock(&CACHE);
    cache.retain(|(_, c)| c.strong_count() > 0);
    if let Some(c) = cache
        .iter()
        .find(|(m, _)| m == models)
        .and_then(|(_, c)| c.upgrade())
    {
        return Ok(c);
    }
    let catalogue = Arc::new(base_catalogue()?.with_models(models));
    cache.push((models.clone(), Arc::downgrade(&catalogue)));
    Ok(catalogue)
}

/// The most history entries kept, as the real server.
pub(crate) const MAX_HISTORY: usize = 10_000;

/// The sim's folders.
pub(crate) struct Dirs {
    pub input: PathBuf,
    pub output: PathBuf,
    pub temp: PathBuf,
}

impl Dirs {
    /// The folder for a `type` (`input`, `output`, `temp`).
    pub fn by_type(&self, kind: &str) -> Option<&Path> {
        match kind {
            "input" => Some(&self.input),
            "output" => Some(&self.output),
            "temp" => Some(&self.temp),
            _ => None,
        }
    }
}

/// Queue, running prompt, history and the prompt counter: one lock, as the
/// real `PromptQueue.mutex`.
pub(crate) struct Core {
    pub queue: PromptQueue,
    pub running: Option<QueueItem>,
    pub history: IndexMap<String, Value>,
    pub number: u64,
    /// Prompts executed since the last (simulated) restart.
    pub since_restart: u64,
    /// Set by `POST /free {"free_memory": true}` and restarts: the worker
    /// empties its caches before the next prompt.
    pub reset_caches: bool,
}

impl Core {
    /// `queue_remaining`: pending plus running.
    pub fn remaining(&self) -> usize {
        self.queue.len() + usize::from(self.running.is_some())
    }
}

/// Seeded dice for each kind of fault, so a run is reproducible.
pub(crate) struct Faults {
    pub fail: Mutex<ChaCha8Rng>,
    pub http: Mutex<ChaCha8Rng>,
}

pub(crate) struct Shared {
    pub config: SimConfig,
    pub catalogue: Arc<Catalogue>,
    pub dirs: Dirs,
    pub hub: Hub,
    pub core: Mutex<Core>,
    pub work: Notify,
    pub interrupt: AtomicBool,
    pub faults: Faults,
    stats: Mutex<SimStats>,
    /// PreviewImage's `_temp_xxxxx` suffix, fixed per server process.
    pub temp_suffix: String,
    pub counters: Mutex<CounterCache>,
    pub started: SystemTime,
}

/// Locks a mutex, recovering from poisoning: a panicked handler must not
/// take the whole simulator down.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Milliseconds since the epoch, as the server's timestamps.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Shared {
    pub fn new(config: SimConfig, base: &Path) -> Result<Shared, SimError> {
        let dirs = Dirs {
            input: base.join("input"),
            output: base.join("output"),
            temp: base.join("temp"),
        };
        // The real server wipes its temp folder on start.
        if dirs.temp.exists() {
            let _ = std::fs::remove_dir_all(&dirs.temp);
        }
        for d in [&dirs.input, &dirs.output, &dirs.temp] {
            std::fs::create_dir_all(d).map_err(|source| SimError::Dir {
                path: d.clone(),
                source,
            })?;
        }
        let catalogue = shared_catalogue(&config.models)?;
        let mut letters_rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0x7e3a_5f00);
        // The real alphabet, typo included ("...stupvxyz").
        let alphabet = b"abcdefghijklmnopqrstupvxyz";
        let temp_suffix: String = (0..5)
            .map(|_| alphabet[letters_rng.random_range(0..alphabet.len())] as char)
            .collect();
        Ok(Shared {
            faults: Faults {
                fail: Mutex::new(ChaCha8Rng::seed_from_u64(config.seed ^ 0xfa11)),
                http: Mutex::new(ChaCha8Rng::seed_from_u64(config.seed ^ 0x5000)),
            },
            config,
            catalogue,
            dirs,
            hub: Hub::default(),
            core: Mutex::new(Core {
                queue: PromptQueue::default(),
                running: None,
                history: IndexMap::new(),
                number: 0,
                since_restart: 0,
                reset_caches: false,
            }),
            work: Notify::new(),
            interrupt: AtomicBool::new(false),
            stats: Mutex::new(SimStats::default()),
            temp_suffix,
            counters: Mutex::new(CounterCache::default()),
            started: SystemTime::now(),
        })
    }

    pub fn stats(&self) -> SimStats {
        *lock(&self.stats)
    }

    /// Counts a catalogue request: the whole `/object_info` or one class.
    pub fn count_catalogue(&self, whole: bool) {
        let mut s = lock(&self.stats);
        if whole {
            s.catalogue_requests += 1;
        } else {
            s.class_requests += 1;
        }
    }

    pub fn add_busy(&self, busy: Duration) {
        let mut s = lock(&self.stats);
        s.prompts_executed += 1;
        s.busy += busy;
    }

    /// Broadcasts `status` with the queue size; called with the core lock
    /// held so statuses go out in the order the queue changed.
    pub fn broadcast_status(&self, core: &Core) {
        self.hub.send(
            "status",
            json!({"status": {"exec_info": {"queue_remaining": core.remaining()}}}),
            None,
        );
    }

    /// Rolls the `--http-500-rate` dice.
    pub fn http_fault(&self) -> bool {
        let rate = self.config.http_500_rate;
        rate > 0.0 && lock(&self.faults.http).random::<f64>() < rate
    }
}
