//! `comfy-batch sim`: serves the embedded ComfyUI-compatible simulator until
//! Ctrl-C. Flags map one to one onto [`crate::sim::SimConfig`].

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use super::{CliError, Exit, GlobalArgs};
use crate::sim::{Sim, SimConfig};

/// Arguments of `comfy-batch sim`.
#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// Address to serve on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8188")]
    pub listen: SocketAddr,
    /// Milliseconds per sampler step (KSampler & co. take steps × this).
    #[arg(long, default_value_t = 1)]
    pub step_ms: u64,
    /// Seed for every injected fault, so runs are reproducible.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Probability that a prompt fails with an execution_error.
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    pub fail_rate: f64,
    /// Close each websocket after this many messages.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub drop_ws_every: Option<u64>,
    /// Probability that POST /prompt, /view, /history, /queue or uploads answer 500.
    #[arg(long = "http-500-rate", default_value_t = 0.0, value_parser = probability)]
    pub http_500_rate: f64,
    /// Forget queue and history and drop sockets after this many prompts (a crash).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub restart_after: Option<u64>,
    /// Delay before each /view reply, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub view_delay_ms: u64,
    /// Send each /view body's first half, then stall this long (ms) before the rest.
    #[arg(long, default_value_t = 0)]
    pub view_stall_ms: u64,
    /// Send each /view body one byte at a time, this long apart.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub view_dribble_ms: u64,
    /// Name outputs in `executed` and the history with hostile paths
    /// (`../../x.png`, absolute ones), to test that clients never use them.
    #[arg(long)]
    pub hostile_filenames: bool,
    /// List VHS_VideoCombine files under `video` as well as `gifs`, as some
    /// video packs do.
    #[arg(long)]
    pub duplicate_outputs: bool,
    /// Report saved files with `"subfolder": null`, as a buggy node might.
    #[arg(long)]
    pub malformed_outputs: bool,
    /// Delay before each full /object_info reply (a server with many node
    /// packs); /object_info/{class} stays fast.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub object_info_delay_ms: u64,
    /// Answer 404 on /object_info/{class}, as older servers do.
    #[arg(long)]
    pub no_class_route: bool,
    /// Answer 401 to a request without this header (HTTP and the websocket
    /// handshake), as an authenticating proxy would (repeatable).
    #[arg(long = "require-header", value_name = "NAME: VALUE", value_parser = header_pair)]
    pub require_headers: Vec<(String, String)>,
    /// Answer 401 to a request without this query pair, e.g. `token=…`
    /// (repeatable).
    #[arg(long = "require-query", value_name = "NAME=VALUE", value_parser = query_pair)]
    pub require_query: Vec<(String, String)>,
    /// Replace a model folder's list: FOLDER=a,b,… (repeatable).
    #[arg(long = "models", value_name = "FOLDER=a,b,…", value_parser = model_list)]
    pub models: Vec<(String, Vec<String>)>,
    /// Base folder for input/, output/ and temp/ (default: a fresh temporary folder).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The ComfyUI version /system_stats reports.
    #[arg(long, value_name = "V", default_value = "0.8.0")]
    pub comfyui_version: String,
    /// The PyTorch version /system_stats reports.
    #[arg(long, value_name = "V", default_value = "sim")]
    pub pytorch_version: String,
    /// The device name /system_stats reports.
    #[arg(long, value_name = "NAME", default_value = "sim")]
    pub device: String,
    /// Perturb the pixels of PNG images slightly (red channel ±1) for
    /// prompts with these sampler seeds: a,b,…
    #[arg(long, value_name = "SEEDS", value_delimiter = ',')]
    pub drift_seeds: Vec<u64>,
    /// Perturb them for every prompt after this many executed ones.
    #[arg(long, value_name = "N")]
    pub drift_after: Option<u64>,
}

fn probability(s: &str) -> Result<f64, String> {
    let p: f64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number between 0 and 1"))?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("{p} is not between 0 and 1"))
    }
}

fn header_pair(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("'{s}' is not 'Name: value'"))?;
    Ok((name.trim().to_string(), value.trim().to_string()))
}

fn query_pair(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not NAME=VALUE"))?;
    Ok((name.to_string(), value.to_string()))
}

fn model_list(s: &str) -> Result<(String, Vec<String>), String> {
    let (folder, names) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not FOLDER=a,b,…"))?;
    let folder = folder.trim();
    if folder.is_empty() {
        return Err(format!("'{s}' has no folder name before '='"));
    }
    let names = names
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect();
    Ok((folder.to_string(), names))
}

impl SimArgs {
    /// The simulator configuration these flags describe.
    pub fn config(&self) -> SimConfig {
        let mut config = SimConfig {
            step_ms: self.step_ms,
            seed: self.seed,
            fail_rate: self.fail_rate,
            drop_ws_every: self.drop_ws_every,
            http_500_rate: self.http_500_rate,
            restart_after: self.restart_after,
            view_delay_ms: self.view_delay_ms,
            view_stall_ms: self.view_stall_ms,
            view_dribble_ms: self.view_dribble_ms,
            hostile_filenames: self.hostile_filenames,
            duplicate_outputs: self.duplicate_outputs,
            malformed_outputs: self.malformed_outputs,
            object_info_delay_ms: self.object_info_delay_ms,
            no_class_route: self.no_class_route,
            require_headers: self.require_headers.clone(),
            require_query: self.require_query.clone(),
            dir: self.dir.clone(),
            system: crate::sim::SimSystem {
                comfyui_version: self.comfyui_version.clone(),
                pytorch_version: self.pytorch_version.clone(),
                device: self.device.clone(),
            },
            drift_seeds: self.drift_seeds.clone(),
            drift_after: self.drift_after,
            ..SimConfig::default()
        };
        for (folder, names) in &self.models {
            config.models.insert(folder.clone(), names.clone());
        }
        config
    }
}

/// Runs the command: serves until Ctrl-C.
pub fn execute(args: SimArgs, _global: &GlobalArgs) -> Result<Exit, CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let handle = Sim::start(args.config(), args.listen).await?;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {}", handle.url());
        let _ = out.flush();
        drop(out);
        let _ = tokio::signal::ctrl_c().await;
        handle.shutdown().await;
        Ok(Exit::Ok)
    })
}

/// Starts the embedded simulator on a free loopback port (`--sim`).
pub(crate) async fn start_embedded() -> Result<crate::sim::SimHandle, CliError> {
    Ok(crate::sim::Sim::start(
        crate::sim::SimConfig::default(),
        "127.0.0.1:0".parse().expect("a valid socket address"),
    )
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_lists_parse() {
        assert_eq!(
            model_list("checkpoints=a.safetensors, b.ckpt").unwrap(),
            (
                "checkpoints".into(),
                vec!["a.safetensors".into(), "b.ckpt".into()]
            )
        );
        assert!(model_list("nope").is_err());
        assert!(probability("1.5").is_err());
    }
}
