//! The embedded ComfyUI-compatible simulator behind `comfy-batch sim`: the
//! server every test and benchmark talks to.
//!
//! It reproduces the real server's wire behaviour as recorded in the
//! project's transcripts: every HTTP route (also under `/api`), the websocket
//! message sequences, validation errors (through [`crate::validate`]), the
//! queue's priority order, history, classic caching, file naming and real
//! PNG bytes; plus seeded, reproducible fault injection, and optionally the
//! credential checks of a proxy in front (`require_headers`,
//! `require_query`). Node execution is
//! simulated: samplers take `steps × step_ms`, everything else is instant.
//!
//! It owns its HTTP server, worker and files; it must not know about `run`,
//! `sink`, `report` or `plan`.
//!
//! Faithful on purpose, including quirks: `status` before the final
//! `executing {node: null}`, history written after `execution_success`,
//! `{}` for pending ids, the 200-with-`node_errors` partial run, heap-ordered
//! `queue_pending`, interrupts lost when idle, and the reconnect bug (a
//! client-closed old socket unregisters a newer one with the same
//! `clientId`; sockets the sim itself closes do not).
//!
//! Known differences from ComfyUI 0.8.0:
//! - sampler previews (`extra_data.preview_method`) are solid-colour JPEGs
//!   of at most 64 px a side, not 512 px renders of the latent;
//! - `/view` ignores `preview=` and `channel=rgb|a` (returns the file as is);
//! - not served: `/upload/mask`, `/api/jobs`, `/internal/*`, TEXT frames
//!   (GetImageSize), the Origin check (403), upload size limits;
//! - nodes other than the ones below run instantly as pass-throughs:
//!   samplers (steps × `step_ms`), `TestSleep`, `SaveImage`, `PreviewImage`,
//!   `SaveImageWebsocket`, `LoadImage`, `EmptyImage`, `ImageInvert`,
//!   `PrimitiveString`, `PreviewAny`, and the savers of every output kind
//!   (protocol.md §6.1): `SaveAnimatedWEBP`/`PNG`, `SaveWEBM`, `SaveVideo`,
//!   `SaveAudio`/`MP3`/`Opus`, `PreviewAudio`, `SaveLatent`, `SaveGLB`, and
//!   a stand-in for VideoHelperSuite's `VHS_VideoCombine` (files under
//!   `gifs` with `format`); the sim-only `SimNamedFiles` saves files under
//!   the names it is given (as custom nodes naming their own files do);
//!   other output nodes have no `ui`;
//! - pixels are one colour per image, derived from the producing graph;
//!   PNG, animated PNG and WebP, `.latent` and `.glb` files are real, video
//!   and compressed audio are deterministic stand-in bytes with the
//!   format's magic (see `media`).
//! - `/system_stats` reports the configured versions and device
//!   ([`SimSystem`]), `/view_metadata` a made-up `__metadata__` for each
//!   listed `.safetensors` model, and drift ([`SimConfig::drift_seeds`])
//!   changes chosen prompts' pixels as another GPU or version would.
//!
//! ```no_run
//! # async fn demo() -> Result<(), comfy_batch::sim::SimError> {
//! use comfy_batch::sim::{Sim, SimConfig};
//! let sim = Sim::start(SimConfig::default(), "127.0.0.1:0".parse().unwrap()).await?;
//! println!("serving on {}", sim.url());
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

mod exec;
mod files;
mod http;
mod hub;
mod jpeg;
mod media;
mod nodes;
mod queue;
mod state;
mod ws;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use state::Shared;

/// How the simulator behaves: speed, injected faults, model catalogue and
/// where its files live.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Milliseconds per sampler step (KSampler & co. take `steps × step_ms`).
    pub step_ms: u64,
    /// Seed of every random choice (faults, temp prefix), for reproducible runs.
    pub seed: u64,
    /// Probability that an executed prompt fails with an `execution_error`
    /// at one of its nodes.
    pub fail_rate: f64,
    /// Close each websocket after this many messages sent to it.
    pub drop_ws_every: Option<u64>,
    /// Probability that `POST /prompt`, `GET /view`, `/history`, `/queue` or
    /// `POST /upload/image` answers 500.
    pub http_500_rate: f64,
    /// After this many executed prompts, forget queue, history and caches and
    /// drop every websocket, as a crashed and restarted server.
    pub restart_after: Option<u64>,
    /// Delay before each `/view` reply.
    pub view_delay_ms: u64,
    /// Each `/view` body sends its first half, then stalls this long before
    /// the rest (a download that hangs mid-file; 0: none).
    pub view_stall_ms: u64,
    /// Each `/view` body comes one byte at a time, this long apart (a
    /// download that never goes silent long enough for a read timeout; 0:
    /// at once).
    pub view_dribble_ms: u64,
    /// Name saved outputs in `executed` and the history as a hostile or
    /// buggy server might: alternately `../../<file>` and the file's
    /// absolute path on the server. The files themselves are saved as usual
    /// (a client that keeps only the last path component can fetch them);
    /// `/view` still refuses such names.
    pub hostile_filenames: bool,
    /// List each file of the `VHS_VideoCombine` stand-in under `video` as
    /// well as `gifs`, as some video packs do (a client must save it once).
    pub duplicate_outputs: bool,
    /// Report every saved file with `"subfolder": null`, as a buggy custom
    /// node might (a client must fail the job, not skip the file).
    pub malformed_outputs: bool,
    /// Delay before each full `/object_info` reply, as on a server with
    /// hundreds of custom node packs (the per-class route stays fast).
    pub object_info_delay_ms: u64,
    /// Answer 404 on `/object_info/{class}`, as servers older than the
    /// per-class route do.
    pub no_class_route: bool,
    /// Headers every request must carry (`Authorization: Basic …`, an API
    /// key), as a proxy in front of a server checks them (ComfyUI itself
    /// has no auth): HTTP requests and the websocket handshake alike; one
    /// missing or different is answered 401 and nothing is done.
    pub require_headers: Vec<(String, String)>,
    /// Query pairs (`token=…`) every request must carry, likewise.
    pub require_query: Vec<(String, String)>,
    /// Model catalogue: folder (`checkpoints`, `loras`…) → file names. It
    /// feeds `/object_info`, `/models/{folder}` and validation.
    pub models: BTreeMap<String, Vec<String>>,
    /// Base folder for `input/`, `output/` and `temp/`; `None` makes a fresh
    /// temporary folder owned (and removed) by the handle. `temp/` is emptied
    /// on start, as the real server does.
    pub dir: Option<PathBuf>,
    /// What `/system_stats` reports, so that two simulators (or one
    /// "upgraded" between runs) can be told apart.
    pub system: SimSystem,
    /// Drift, as an updated server or another GPU gives: PNG images of the
    /// prompts whose sampler seed is listed, and of every prompt after
    /// [`SimConfig::drift_after`] executed ones, have their red channel
    /// moved by 1 (deterministic; other prompts stay byte-identical).
    pub drift_seeds: Vec<u64>,
    /// Drift every prompt executed after this many (see `drift_seeds`).
    pub drift_after: Option<u64>,
}

/// The simulator's `/system_stats` values.
#[derive(Debug, Clone, PartialEq)]
pub struct SimSystem {
    /// `system.comfyui_version`.
    pub comfyui_version: String,
    /// `system.pytorch_version`.
    pub pytorch_version: String,
    /// The one device's `name` (its type is `cpu`).
    pub device: String,
}

impl Default for SimSystem {
    fn default() -> Self {
        SimSystem {
            comfyui_version: "0.8.0".into(),
            pytorch_version: "sim".into(),
            device: "sim".into(),
        }
    }
}

/// The model names a fresh simulator offers (the recorded catalogue came
/// from a server without models).
pub fn default_models() -> BTreeMap<String, Vec<String>> {
    let list = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    BTreeMap::from([
        (
            "checkpoints".to_string(),
            list(&[
                "v1-5-pruned-emaonly.safetensors",
                "sd15.safetensors",
                "sdxl_base.safetensors",
                "sdXL_v10VAEFix.safetensors",
            ]),
        ),
        (
            "loras".to_string(),
            list(&["add_detail.safetensors", "lcm_lora_sd15.safetensors"]),
        ),
        (
            "vae".to_string(),
            list(&[
                "vae-ft-mse-840000-ema-pruned.safetensors",
                "sdxl_vae.safetensors",
            ]),
        ),
        (
            "controlnet".to_string(),
            list(&[
                "control_v11p_sd15_canny.pth",
                "control_v11f1p_sd15_depth.pth",
            ]),
        ),
        (
            "upscale_models".to_string(),
            list(&["RealESRGAN_x4plus.pth", "4x-UltraSharp.pth"]),
        ),
        (
            "text_encoders".to_string(),
            list(&["clip_l.safetensors", "t5xxl_fp16.safetensors"]),
        ),
        (
            "clip_vision".to_string(),
            list(&["clip_vision_g.safetensors"]),
        ),
        (
            "diffusion_models".to_string(),
            list(&["flux1-dev.safetensors"]),
        ),
        (
            "embeddings".to_string(),
            list(&["easynegative.safetensors"]),
        ),
        ("hypernetworks".to_string(), Vec::new()),
        ("style_models".to_string(), Vec::new()),
        ("gligen".to_string(), Vec::new()),
        ("photomaker".to_string(), Vec::new()),
        ("latent_upscale_models".to_string(), Vec::new()),
        ("model_patches".to_string(), Vec::new()),
        ("diffusers".to_string(), Vec::new()),
    ])
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            step_ms: 1,
            seed: 0,
            fail_rate: 0.0,
            drop_ws_every: None,
            http_500_rate: 0.0,
            restart_after: None,
            view_delay_ms: 0,
            view_stall_ms: 0,
            view_dribble_ms: 0,
            hostile_filenames: false,
            duplicate_outputs: false,
            malformed_outputs: false,
            object_info_delay_ms: 0,
            no_class_route: false,
            require_headers: Vec::new(),
            require_query: Vec::new(),
            models: default_models(),
            dir: None,
            system: SimSystem::default(),
            drift_seeds: Vec::new(),
            drift_after: None,
        }
    }
}

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Binding the listen address failed.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Creating the input/output/temp folders failed.
    #[error("cannot prepare folder {path}")]
    Dir {
        /// The folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The bundled node catalogue is broken (a build problem).
    #[error("bundled node catalogue is invalid")]
    Catalogue(#[from] crate::validate::CatalogueError),
}

/// Counters for benchmarks: how much work the simulator did.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SimStats {
    /// Prompts taken off the queue and run to an end (success, error or
    /// interrupt).
    pub prompts_executed: u64,
    /// Summed wall time from `execution_start` to the end of each prompt.
    pub busy: Duration,
    /// Requests for the full `/object_info` catalogue.
    pub catalogue_requests: u64,
    /// Requests for one class, `/object_info/{class}`.
    pub class_requests: u64,
}

/// Entry point: starts a simulator.
pub struct Sim;

impl Sim {
    /// Binds `listen` (port 0 picks a free one), starts the HTTP server and
    /// the execution worker, and returns once it accepts connections.
    pub async fn start(config: SimConfig, listen: SocketAddr) -> Result<SimHandle, SimError> {
        let (tempdir, base) = match &config.dir {
            Some(dir) => (None, dir.clone()),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("comfy-sim-")
                    .tempdir()
                    .map_err(|source| SimError::Dir {
                        path: std::env::temp_dir(),
                        source,
                    })?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let shared = Arc::new(Shared::new(config, &base)?);
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| SimError::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| SimError::Bind {
            addr: listen,
            source,
        })?;
        let (stop_tx, stop_rx) = watch::channel(false);
        // aiohttp (the real server) disables Nagle on its sockets; without
        // it a burst of small websocket frames waits on the client's
        // delayed ACK (~40 ms per prompt on loopback).
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!("sim: TCP_NODELAY: {e}");
            }
        });
        let worker = tokio::spawn(exec::worker(shared.clone(), stop_rx.clone()));
        let app = http::router(shared.clone());
        let mut server_stop = stop_rx;
        let server = tokio::spawn(async move {
            let shutdown = async move {
                let _ = server_stop.wait_for(|stop| *stop).await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::warn!("sim server stopped: {e}");
            }
        });
        Ok(SimHandle {
            addr,
            shared,
            stop: stop_tx,
            server: Some(server),
            worker: Some(worker),
            _tempdir: tempdir,
        })
    }
}

/// A running simulator. [`SimHandle::shutdown`] stops it gracefully;
/// dropping it aborts its tasks (and removes its temporary folder).
pub struct SimHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
    worker: Option<JoinHandle<()>>,
    _tempdir: Option<tempfile::TempDir>,
}

impl SimHandle {
    /// The bound address (with the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`, the base URL clients use.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Where SaveImage writes.
    pub fn output_dir(&self) -> &Path {
        &self.shared.dirs.output
    }

    /// Where uploads land and LoadImage reads.
    pub fn input_dir(&self) -> &Path {
        &self.shared.dirs.input
    }

    /// Where PreviewImage writes.
    pub fn temp_dir(&self) -> &Path {
        &self.shared.dirs.temp
    }

    /// Work done so far.
    pub fn stats(&self) -> SimStats {
        self.shared.stats()
    }

    /// Waits (at most `timeout`) until the worker is not idle while a
    /// prompt is pending, i.e. it has taken the next prompt if there is one;
    /// returns whether it got there.
    ///
    /// The real server's worker thread wakes the moment a prompt is queued,
    /// so the requests it answers never see a pending prompt next to an
    /// idle worker; the sim's worker is a task that a loaded machine may
    /// schedule late. Tests replaying a recorded request order call this
    /// before each request so the sim is in the state the server was.
    pub async fn settled(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            {
                let core = state::lock(&self.shared.core);
                if core.queue.len() == 0 || core.running.is_some() {
                    return true;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Closes every websocket, stops the worker and the HTTP server.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        self.shared.hub.close_all();
        if let Some(worker) = self.worker.take() {
            worker.abort();
            let _ = worker.await;
        }
        if let Some(mut server) = self.server.take()
            && tokio::time::timeout(Duration::from_secs(2), &mut server)
                .await
                .is_err()
        {
            server.abort();
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.shared.hub.close_all();
        for task in [self.worker.take(), self.server.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
    }
}
