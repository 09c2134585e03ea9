//! The options `run` and `rerun` share, as one flattened clap struct lowered
//! once into the scheduler's [`RunConfig`], so the two commands can never
//! drift apart (flags, defaults, checks). Also the server precedence and the
//! duration syntax every command uses. Depends on no other command module.

use std::path::PathBuf;
use std::time::Duration;

use super::CliError;
use crate::comfy::ServerUrl;
use crate::comfy::http::parse_headers;
use crate::plan::Shard;
use crate::run::RunConfig;

/// The server used when neither flags, `COMFY_URL` nor the manifest name one.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8188";

/// How jobs are run: the flags `run` and `rerun` both take.
#[derive(Debug, Clone, clap::Args)]
pub struct RunOptions {
    /// A ComfyUI server URL; repeat to share the work between servers
    /// [default: $COMFY_URL, else the manifest's `server` (for `run`), else http://127.0.0.1:8188].
    #[arg(long = "server", value_name = "URL")]
    pub servers: Vec<String>,
    /// Start the embedded simulator and run against it (rehearsals, demos).
    #[arg(long, conflicts_with = "servers")]
    pub sim: bool,
    /// Prompts in flight per server, queued + running [default: manifest, else 2].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub concurrency: Option<u32>,
    /// Run only the K-th of N deterministic partitions of the jobs
    /// (1-based); `auto` (or `auto/N`) takes them from the CI's environment.
    #[arg(long, value_name = "K/N")]
    pub shard: Option<crate::ci::env::ShardArg>,
    /// Write a JUnit XML report of the jobs to FILE when the run ends.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Stop submitting after N jobs did not end ok.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_failures: Option<u32>,
    /// Stop submitting after the first job that did not end ok.
    #[arg(long, conflicts_with = "max_failures")]
    pub fail_fast: bool,
    /// Per-job limit (e.g. 90s, 10m) from the prompt's start until its
    /// outputs are downloaded: it is interrupted and logged as `timeout` (a
    /// success that landed first is kept).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Limit on the time a prompt waits in the server's queue to start: it
    /// is removed and logged as `timeout` [default: none].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub queue_timeout: Option<Duration>,
    /// Try a job that failed in execution or timed out up to N more times.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub retries: u32,
    /// Extra HTTP header for every request, e.g. 'Authorization: Bearer …' (repeatable).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Also keep `temp` preview images.
    #[arg(long)]
    pub previews: bool,
    /// Skip the preflight that validates every prompt against each
    /// server's /object_info before queueing anything.
    #[arg(long)]
    pub no_check: bool,
    /// Do not write the HTML report (DIR/report/) during and after the run.
    #[arg(long)]
    pub no_report: bool,
    /// How long a server may stay unreachable before its jobs move to the
    /// others (and, with none left, the run stops with exit 3). Hidden: for
    /// tests and CI, which cannot wait the default 30 s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, hide = true)]
    pub server_lost_after: Option<Duration>,
}

/// [`RunOptions`] lowered: the scheduler's config and the shard filter.
pub(crate) struct Lowered {
    /// For the scheduler (servers empty with `--sim`: the session fills them).
    pub config: RunConfig,
    /// `--shard`.
    pub shard: Option<Shard>,
}

impl RunOptions {
    /// Checks and lowers the options. `servers` and `concurrency` are the
    /// manifest's (or the earlier run's) defaults.
    pub(crate) fn lower(
        &self,
        servers: &[String],
        concurrency: Option<usize>,
        run_key: String,
    ) -> Result<Lowered, CliError> {
        let shard: Option<Shard> =
            super::ci_env::resolve_shard(self.shard).map_err(CliError::usage)?;
        let env = std::env::var("COMFY_URL").ok();
        let servers = if self.sim {
            Vec::new()
        } else {
            parse_servers(&self.servers, env.as_deref(), servers)?
        };
        let headers =
            parse_headers(&self.headers).map_err(|e| CliError::usage(format!("--header: {e}")))?;
        let mut config = RunConfig::new(servers, run_key);
        config.headers = headers;
        config.concurrency = self
            .concurrency
            .map(|c| c as usize)
            .or(concurrency)
            .unwrap_or(2);
        config.previews = self.previews;
        config.timeout = self.timeout;
        config.queue_timeout = self.queue_timeout;
        config.retries = self.retries;
        if let Some(after) = self.server_lost_after {
            config.server_lost_after = after;
        }
        config.fail_fast = self.fail_fast;
        config.max_failures = if self.fail_fast {
            Some(1)
        } else {
            self.max_failures.map(|n| n as usize)
        };
        Ok(Lowered { config, shard })
    }
}

/// Parses `90s`, `10m`, `1h30m`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 90s, 10m, 1h30m)"))
}

/// The servers to use: flags, else `COMFY_URL`, else the manifest, else the
/// default. One function so the precedence is stated (and tested) once.
pub fn resolve_servers(flags: &[String], env: Option<&str>, manifest: &[String]) -> Vec<String> {
    if !flags.is_empty() {
        return flags.to_vec();
    }
    if let Some(env) = env.filter(|e| !e.trim().is_empty()) {
        return vec![env.trim().to_string()];
    }
    if !manifest.is_empty() {
        return manifest.to_vec();
    }
    vec![DEFAULT_SERVER.to_string()]
}

/// The servers, parsed; an error names where the bad one came from.
fn parse_servers(
    flags: &[String],
    env: Option<&str>,
    manifest: &[String],
) -> Result<Vec<ServerUrl>, CliError> {
    let urls = resolve_servers(flags, env, manifest);
    let source = if !flags.is_empty() {
        "--server"
    } else if env.is_some_and(|e| !e.trim().is_empty()) {
        "COMFY_URL"
    } else if !manifest.is_empty() {
        "the manifest's server"
    } else {
        "the default server"
    };
    urls.iter()
        .map(|u| ServerUrl::parse(u).map_err(|e| CliError::usage(format!("{source}: {e}"))))
        .collect()
}

/// `--output`, checked: a file in its place is a usage error.
pub(crate) fn check_output(path: &std::path::Path) -> Result<PathBuf, CliError> {
    if path.exists() && !path.is_dir() {
        return Err(CliError::usage(format!(
            "--output {}: is a file, not a folder",
            path.display()
        )));
    }
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_precedence_is_flag_env_manifest_default() {
        let m = vec!["http://m:1".to_string()];
        let f = vec!["http://f:1".to_string(), "http://f:2".to_string()];
        assert_eq!(resolve_servers(&f, Some("http://e:1"), &m), f);
        assert_eq!(
            resolve_servers(&[], Some("http://e:1"), &m),
            vec!["http://e:1"]
        );
        assert_eq!(resolve_servers(&[], Some("  "), &m), m);
        assert_eq!(resolve_servers(&[], None, &m), m);
        assert_eq!(resolve_servers(&[], None, &[]), vec![DEFAULT_SERVER]);
    }
}
