//! The environment a run ran on, kept in `environment.json` beside
//! `run.json`: a list of snapshots, each a server, when the runner first
//! saw it so, and its values: `/system_stats` (ComfyUI, Python, PyTorch,
//! OS, each device's name, type and VRAM), a SHA-256 per node class the run
//! used (of its `/object_info` entry, so an updated node pack shows by class
//! name) and, where `/view_metadata` answers, a SHA-256 of each named
//! `.safetensors` model's header metadata (the header's, not the file's).
//!
//! A run appends a snapshot for a server only when its values differ from
//! that server's newest one, so a resume after an upgrade adds one and
//! keeps the old. A row of `runs.csv` leads to the snapshot in force when
//! it ran: its `server`'s newest snapshot first seen at or before its
//! `started_at` ([`Environment::in_force`]); no new column is needed.
//!
//! It owns the file and the fetches of `/system_stats` and `/view_metadata`;
//! the `/object_info` entries come from the preflight's fetch. It must not
//! know about `cli`, the scheduler or the log's format.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::comfy::ClientError;
use crate::comfy::http::HttpClient;

/// The file's name in the output folder.
pub const FILE: &str = "environment.json";

/// Every snapshot of a folder, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    /// The snapshots, in the order they were first seen.
    #[serde(default)]
    pub snapshots: Vec<Snapshot>,
}

/// One server's environment from a moment on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The server as `runs.csv`'s `server` column names it.
    pub server: String,
    /// When the runner first saw these values (RFC 3339, UTC, its clock,
    /// as the log's times).
    pub first_seen: String,
    /// What it saw.
    pub values: Values,
}

/// A server's environment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Values {
    /// `system.comfyui_version`.
    #[serde(default)]
    pub comfyui_version: Option<String>,
    /// `system.python_version`.
    #[serde(default)]
    pub python_version: Option<String>,
    /// `system.pytorch_version`.
    #[serde(default)]
    pub pytorch_version: Option<String>,
    /// `system.os`.
    #[serde(default)]
    pub os: Option<String>,
    /// The devices, in the server's order.
    #[serde(default)]
    pub devices: Vec<Device>,
    /// Node class → SHA-256 of its `/object_info` entry, for the classes
    /// the run used (empty when the preflight was skipped).
    #[serde(default)]
    pub nodes: BTreeMap<String, String>,
    /// `folder/file` → SHA-256 of the model's safetensors header metadata
    /// as `/view_metadata` gives it: the header's hash, not the file's.
    #[serde(default)]
    pub models: BTreeMap<String, String>,
}

/// One device of `/system_stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Device {
    /// `name`, e.g. `cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync`.
    pub name: String,
    /// `type`: `cuda`, `cpu`, `mps`…
    #[serde(rename = "type")]
    pub kind: String,
    /// `vram_total`, bytes.
    #[serde(default)]
    pub vram_total: Option<u64>,
}

/// Why the file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum EnvironmentError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Writing the file failed.
    #[error(transparent)]
    Write(#[from] crate::sink::SinkError),
    /// The file is not an environment record.
    #[error("{path}: not an environment record: {why}")]
    Bad {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
}

impl Environment {
    /// Reads a folder's record; none is an empty one.
    pub fn read(dir: &Path) -> Result<Environment, EnvironmentError> {
        let path = dir.join(FILE);
        match std::fs::read(&path) {
            Ok(bytes) => Environment::parse(&bytes, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Environment::default()),
            Err(source) => Err(EnvironmentError::Io {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// Parses a record read from `path` (named in the error).
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Environment, EnvironmentError> {
        serde_json::from_slice(bytes).map_err(|e| EnvironmentError::Bad {
            path: path.display().to_string(),
            why: e.to_string(),
        })
    }

    /// Writes the record into `dir`, atomically.
    pub fn write(&self, dir: &Path) -> Result<(), EnvironmentError> {
        let path = dir.join(FILE);
        let mut bytes = serde_json::to_vec_pretty(self).expect("plain data always serialises");
        bytes.push(b'\n');
        Ok(crate::sink::write_atomic_synced(&path, &bytes)?)
    }

    /// Records what `server` shows at `now`: a new snapshot only when it
    /// differs from the server's newest. Returns whether one was added.
    pub fn record(&mut self, server: &str, now: SystemTime, values: Values) -> bool {
        let newest = self.snapshots.iter().rev().find(|s| s.server == server);
        if newest.is_some_and(|s| s.values == values) {
            return false;
        }
        self.snapshots.push(Snapshot {
            server: server.to_string(),
            first_seen: humantime::format_rfc3339_millis(now).to_string(),
            values,
        });
        true
    }

    /// The snapshot in force for a row: `server`'s newest first seen at or
    /// before `started_at` (an RFC 3339 time, as logged). `None` for a row
    /// that never started or ran before any snapshot of its server.
    pub fn in_force(&self, server: &str, started_at: &str) -> Option<(usize, &Snapshot)> {
        let at = humantime::parse_rfc3339_weak(started_at).ok()?;
        self.snapshots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.server == server)
            .filter(|(_, s)| humantime::parse_rfc3339_weak(&s.first_seen).is_ok_and(|t| t <= at))
            .max_by_key(|(i, s)| (humantime::parse_rfc3339_weak(&s.first_seen).ok(), *i))
    }

    /// Adds `other`'s snapshots that this record lacks (`merge`), keeping
    /// the order first seen.
    pub fn merge(&mut self, other: &Environment) {
        for s in &other.snapshots {
            if !self.snapshots.contains(s) {
                self.snapshots.push(s.clone());
            }
        }
        // RFC 3339 in UTC with millis sorts as text; stable for ties.
        self.snapshots
            .sort_by(|a, b| a.first_seen.cmp(&b.first_seen));
    }
}

impl Values {
    /// The values of a `/system_stats` answer; `nodes` and `models` empty.
    pub fn from_system_stats(stats: &Value) -> Values {
        let text = |key: &str| {
            stats
                .pointer(&format!("/system/{key}"))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let devices = stats
            .get("devices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|d| Device {
                name: d.get("name").and_then(Value::as_str).unwrap_or("").into(),
                kind: d.get("type").and_then(Value::as_str).unwrap_or("").into(),
                vram_total: d.get("vram_total").and_then(Value::as_u64),
            })
            .collect();
        Values {
            comfyui_version: text("comfyui_version"),
            python_version: text("python_version"),
            pytorch_version: text("pytorch_version"),
            os: text("os"),
            devices,
            nodes: BTreeMap::new(),
            models: BTreeMap::new(),
        }
    }

    /// One line for people: `ComfyUI 0.8.0, Python 3.11.7, PyTorch 2.5.1,
    /// linux, cuda NVIDIA RTX 4090 (24 GiB); 6 node classes, 1 model`.
    pub fn line(&self) -> String {
        let or_unknown = |v: &Option<String>| v.clone().unwrap_or_else(|| "?".into());
        // Python's version string goes on with its build; the number says enough.
        let python = or_unknown(&self.python_version);
        let python = python.split_whitespace().next().unwrap_or("?");
        let devices: Vec<String> = self
            .devices
            .iter()
            .map(|d| match d.vram_total {
                Some(bytes) => format!(
                    "{} {} ({:.0} GiB)",
                    d.kind,
                    d.name,
                    bytes as f64 / f64::from(1u32 << 30)
                ),
                None => format!("{} {}", d.kind, d.name),
            })
            .collect();
        let count =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        crate::text::one_line(&format!(
            "ComfyUI {}, Python {python}, PyTorch {}, {}, {}; {}, {}",
            or_unknown(&self.comfyui_version),
            or_unknown(&self.pytorch_version),
            or_unknown(&self.os),
            if devices.is_empty() {
                "no device".to_string()
            } else {
                devices.join(", ")
            },
            count(self.nodes.len(), "node class", "node classes"),
            count(self.models.len(), "model", "models"),
        ))
    }
}

/// SHA-256 of each class's `/object_info` entry, as the server sent it.
pub fn node_hashes(object_info: &Map<String, Value>) -> BTreeMap<String, String> {
    object_info
        .iter()
        .map(|(class, entry)| {
            let bytes = serde_json::to_vec(entry).expect("JSON values serialise");
            (class.clone(), hex::encode(Sha256::digest(&bytes)))
        })
        .collect()
}

/// The model folder of a loader input, as ComfyUI's `folder_paths` names
/// it; `None` for inputs that name no model file.
fn model_folder(class: &str, input: &str) -> Option<&'static str> {
    Some(match (class, input) {
        ("CLIPVisionLoader", "clip_name") => "clip_vision",
        (_, "ckpt_name") => "checkpoints",
        (_, "lora_name") => "loras",
        (_, "vae_name") => "vae",
        (_, "unet_name") => "diffusion_models",
        (_, "clip_name" | "clip_name1" | "clip_name2" | "clip_name3" | "clip_name4") => {
            "text_encoders"
        }
        (_, "control_net_name") => "controlnet",
        (_, "style_model_name") => "style_models",
        (_, "gligen_name") => "gligen",
        (_, "hypernetwork_name") => "hypernetworks",
        _ => return None,
    })
}

/// The `.safetensors` models a prompt's loaders name, as (folder, file):
/// the only files `/view_metadata` describes.
pub fn models_named(prompt: &Map<String, Value>, into: &mut BTreeSet<(String, String)>) {
    for node in prompt.values() {
        let class = crate::patch::class_of(node);
        let Some(inputs) = node.get("inputs").and_then(Value::as_object) else {
            continue;
        };
        for (input, value) in inputs {
            if let (Some(folder), Some(file)) = (model_folder(class, input), value.as_str())
                && file.ends_with(".safetensors")
            {
                into.insert((folder.to_string(), file.to_string()));
            }
        }
    }
}

/// A server's values now: its `/system_stats`, the hashes of the
/// `object_info` entries the preflight fetched, and the header hash of each
/// of `models` that `/view_metadata` describes (a model it does not, or a
/// server without the route, is left out).
pub async fn collect(
    http: &HttpClient,
    object_info: Option<&Map<String, Value>>,
    models: &BTreeSet<(String, String)>,
) -> Result<Values, ClientError> {
    let stats = http.system_stats().await?;
    let mut values = Values::from_system_stats(&stats);
    if let Some(info) = object_info {
        values.nodes = node_hashes(info);
    }
    for (folder, file) in models {
        match http.view_metadata(folder, file).await {
            Ok(Some(metadata)) => {
                let bytes = serde_json::to_vec(&metadata).expect("JSON values serialise");
                values.models.insert(
                    format!("{folder}/{file}"),
                    hex::encode(Sha256::digest(&bytes)),
                );
            }
            Ok(None) => {}
            Err(e) => tracing::info!(
                "{}: no model metadata for {folder}/{file}: {e}",
                http.base()
            ),
        }
    }
    Ok(values)
}

/// How long recording the environment may hold up a run's start.
const RECORD_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Records the environment of a run's servers in `dir` before any job
/// starts: those the preflight reached (`catalogues`, by the server's URL as
/// shown), or all of `servers` without a preflight (`catalogues` empty), with
/// the models `jobs` name. Returns the problems as warnings, servers slower
/// than 10 s among them: the record serves the run, it never stops it.
pub async fn record_run(
    dir: &Path,
    pool: &crate::comfy::http::HttpPool,
    servers: &[crate::comfy::ServerUrl],
    catalogues: &[(String, crate::validate::Catalogue)],
    jobs: impl Iterator<Item = crate::plan::Job>,
) -> Vec<String> {
    let servers: Vec<_> = servers
        .iter()
        .filter_map(|url| {
            let shown = url.to_string();
            let info = catalogues
                .iter()
                .find(|(s, _)| *s == shown)
                .map(|(_, c)| c.object_info());
            (catalogues.is_empty() || info.is_some()).then(|| (pool.client(url.clone()), info))
        })
        .collect();
    let mut models = BTreeSet::new();
    for job in jobs {
        models_named(&job.prompt.0, &mut models);
    }
    let record = record_servers(dir, &servers, &models);
    tokio::time::timeout(RECORD_WITHIN, record)
        .await
        .unwrap_or_else(|_| {
            vec![format!(
                "environment not recorded: the servers did not answer within {}s",
                RECORD_WITHIN.as_secs()
            )]
        })
}

/// Records each server's values now into `dir`'s record: `servers` are
/// the clients with the `/object_info` entries the preflight fetched (if
/// it ran), `models` the models the prompts name. A server that does not
/// answer is left out, one line each in the returned warnings; a record
/// that cannot be read is left as it is (a warning too), never replaced.
pub async fn record_servers(
    dir: &Path,
    servers: &[(HttpClient, Option<&Map<String, Value>>)],
    models: &BTreeSet<(String, String)>,
) -> Vec<String> {
    // Before any job starts: every row of this run started after it.
    let now = SystemTime::now();
    let seen = futures_util::future::join_all(servers.iter().map(|(http, info)| async move {
        (http.base().to_string(), collect(http, *info, models).await)
    }))
    .await;
    let mut warnings = Vec::new();
    let mut env = match Environment::read(dir) {
        Ok(env) => env,
        Err(e) => return vec![format!("{e}; the environment is not recorded")],
    };
    for (server, values) in seen {
        match values {
            Ok(values) => {
                env.record(&server, now, values);
            }
            Err(e) => warnings.push(format!("environment of {server} not recorded: {e}")),
        }
    }
    if let Err(e) = env.write(dir) {
        warnings.push(e.to_string());
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn values(version: &str) -> Values {
        Values {
            comfyui_version: Some(version.into()),
            ..Values::default()
        }
    }

    #[test]
    fn a_row_leads_to_its_servers_snapshot_in_force_when_it_started() {
        let t0 = humantime::parse_rfc3339("2026-01-01T10:00:00Z").unwrap();
        let mut env = Environment::default();
        assert!(env.record("http://a", t0, values("0.8.0")));
        assert!(env.record("http://b", t0, values("0.7.0")));
        // The same values again: nothing new.
        assert!(!env.record("http://a", t0 + Duration::from_secs(60), values("0.8.0")));
        assert!(env.record("http://a", t0 + Duration::from_secs(3600), values("0.9.0")));
        assert_eq!(env.snapshots.len(), 3);
        let version = |server: &str, at: &str| {
            env.in_force(server, at)
                .and_then(|(_, s)| s.values.comfyui_version.clone())
        };
        assert_eq!(
            version("http://a", "2026-01-01T10:30:00.000Z").as_deref(),
            Some("0.8.0")
        );
        assert_eq!(
            version("http://a", "2026-01-01T11:00:00.000Z").as_deref(),
            Some("0.9.0")
        );
        assert_eq!(
            version("http://b", "2026-01-01T12:00:00.000Z").as_deref(),
            Some("0.7.0")
        );
        assert_eq!(version("http://a", "2026-01-01T09:00:00.000Z"), None);
        assert_eq!(version("http://a", ""), None);
        assert_eq!(version("http://c", "2026-01-01T12:00:00.000Z"), None);
    }

    #[test]
    fn system_stats_as_recorded_from_comfyui_become_values() {
        let transcript = include_str!("../tests/fixtures/transcripts/13_misc_endpoints.jsonl");
        let stats = transcript
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|m| m["dir"] == "http<" && m["path"] == "/system_stats")
            .unwrap();
        let v = Values::from_system_stats(&stats["body"]);
        assert_eq!(v.comfyui_version.as_deref(), Some("0.8.0"));
        assert_eq!(v.pytorch_version.as_deref(), Some("2.15.0+cu132"));
        assert_eq!(v.os.as_deref(), Some("linux"));
        assert_eq!(v.devices.len(), 1);
        assert_eq!(v.devices[0].kind, "cpu");
        assert_eq!(v.devices[0].vram_total, Some(25276502016));
        assert_eq!(
            v.line(),
            "ComfyUI 0.8.0, Python 3.11.7, PyTorch 2.15.0+cu132, linux, cpu cpu (24 GiB); 0 node classes, 0 models"
        );
    }

    #[test]
    fn merging_keeps_every_sources_snapshots_once_in_time_order() {
        let t0 = humantime::parse_rfc3339("2026-01-01T10:00:00Z").unwrap();
        let (mut a, mut b) = (Environment::default(), Environment::default());
        a.record("http://a", t0 + Duration::from_secs(5), values("0.8.0"));
        b.record("http://b", t0, values("0.9.0"));
        let mut merged = a.clone();
        merged.merge(&b);
        merged.merge(&a);
        let servers: Vec<&str> = merged.snapshots.iter().map(|s| s.server.as_str()).collect();
        assert_eq!(servers, ["http://b", "http://a"]);
    }
}
