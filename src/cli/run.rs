//! `comfy-batch run MANIFEST`: flags, environment and manifest become one
//! [`RunConfig`]; then plan → resume filter → scheduler, with the CSV log
//! and the reporter as the scheduler's observers.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{CliError, Exit, GlobalArgs};
use crate::comfy::ServerUrl;
use crate::comfy::http::parse_headers;
use crate::manifest::Manifest;
use crate::plan::{Plan, Shard};
use crate::report::{PlainReporter, ProgressReporter, Reporter};
use crate::run::{CancelReason, EventKind, RunConfig, RunError};
use crate::sink::OutputDir;
use crate::sink::csv::{Resume, RunLog};

/// The server used when neither flags, `COMFY_URL` nor the manifest name one.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8188";

/// Arguments of `comfy-batch run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The manifest (YAML) to run.
    pub manifest: PathBuf,
    /// A ComfyUI server URL; repeat to share the work between servers
    /// [default: $COMFY_URL, else the manifest's `server`, else http://127.0.0.1:8188].
    #[arg(long = "server", value_name = "URL")]
    pub servers: Vec<String>,
    /// Start the embedded simulator and run against it (rehearsals, demos).
    #[arg(long, conflicts_with = "servers")]
    pub sim: bool,
    /// Prompts in flight per server, queued + running [default: manifest, else 2].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub concurrency: Option<u32>,
    /// Output folder [default: the manifest's `output`, else out/<manifest name>
    /// beside the manifest].
    #[arg(long, value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Run only the K-th of N deterministic partitions of the jobs (1-based).
    #[arg(long, value_name = "K/N")]
    pub shard: Option<String>,
    /// Stop submitting after N jobs did not end ok.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_failures: Option<u32>,
    /// Stop submitting after the first job that did not end ok.
    #[arg(long, conflicts_with = "max_failures")]
    pub fail_fast: bool,
    /// Per-job limit (e.g. 90s, 10m): the prompt is interrupted or dequeued
    /// and logged as `timeout`.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Try a job that failed in execution up to N more times.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub retries: u32,
    /// Extra HTTP header for every request, e.g. 'Authorization: Bearer …' (repeatable).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Also keep `temp` preview images.
    #[arg(long)]
    pub previews: bool,
    /// Run every job again, even those already `ok` in the output folder.
    #[arg(long)]
    pub no_resume: bool,
    /// Skip the preflight that validates every prompt against each
    /// server's /object_info before queueing anything.
    #[arg(long)]
    pub no_check: bool,
    /// How long a server may stay unreachable before its jobs move to the
    /// others (and, with none left, the run stops with exit 3). Hidden: for
    /// tests and CI, which cannot wait the default 30 s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, hide = true)]
    pub server_lost_after: Option<Duration>,
}

/// Starts the embedded simulator on a free loopback port (`--sim`).
pub(crate) async fn start_sim() -> Result<crate::sim::SimHandle, CliError> {
    crate::sim::Sim::start(
        crate::sim::SimConfig::default(),
        "127.0.0.1:0".parse().expect("a valid socket address"),
    )
    .await
    .map_err(|e| CliError::from_error(Exit::Infrastructure, &e))
}

/// Counts Ctrl-Cs into `counter`. A signal stream on Unix, not repeated
/// `ctrl_c()` calls: a quick second Ctrl-C is not lost between listeners.
fn spawn_interrupt_counter(counter: tokio::sync::watch::Sender<u32>) -> Result<(), CliError> {
    #[cfg(unix)]
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| CliError::from_error(Exit::Infrastructure, &e))?;
    tokio::spawn(async move {
        let mut count = 0;
        loop {
            #[cfg(unix)]
            let got = sigint.recv().await.is_some();
            #[cfg(not(unix))]
            let got = tokio::signal::ctrl_c().await.is_ok();
            if !got {
                break;
            }
            count += 1;
            if counter.send(count).is_err() {
                break;
            }
        }
    });
    Ok(())
}

fn parse_duration(text: &str) -> Result<Duration, String> {
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

/// The output folder: flag, else the manifest's, else `out/<stem>` beside it.
pub fn resolve_output(flag: Option<&Path>, manifest: &Manifest) -> PathBuf {
    if let Some(flag) = flag {
        return flag.to_path_buf();
    }
    if let Some(out) = &manifest.output {
        return out.clone();
    }
    let stem = manifest
        .path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    manifest.dir.join("out").join(stem)
}

/// A stable key for prompt ids: the same output folder gives the same key,
/// so a restarted run recognises its prompts on the server.
pub fn run_key(output: &Path) -> String {
    let canonical = std::fs::canonicalize(output).unwrap_or_else(|_| output.to_path_buf());
    let digest = Sha256::digest(canonical.to_string_lossy().as_bytes());
    hex::encode(&digest[..4])
}

fn bad(lines: Vec<String>) -> CliError {
    CliError::many(Exit::BadInput, lines)
}

/// Runs the command.
pub fn execute(args: RunArgs, global: &GlobalArgs) -> Result<Exit, CliError> {
    let manifest = Manifest::load(&args.manifest).map_err(|e| bad(e.lines()))?;
    let plan = Plan::new(&manifest).map_err(|e| bad(e.lines()))?;
    for warning in plan.warnings() {
        if !global.quiet {
            eprintln!("warning: {warning}");
        }
    }
    let shard: Option<Shard> = args
        .shard
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e: crate::plan::ShardError| bad(vec![format!("--shard: {e}")]))?;
    let env_url = std::env::var("COMFY_URL").ok();
    let urls = if args.sim {
        Vec::new()
    } else {
        resolve_servers(&args.servers, env_url.as_deref(), &manifest.servers)
    };
    let mut servers = Vec::new();
    for url in &urls {
        servers.push(ServerUrl::parse(url).map_err(|e| bad(vec![e.to_string()]))?);
    }
    let headers = parse_headers(&args.headers).map_err(|e| bad(vec![format!("--header: {e}")]))?;
    let output_path = resolve_output(args.output.as_deref(), &manifest);
    let output =
        OutputDir::open(&output_path).map_err(|e| CliError::from_error(Exit::BadInput, &e))?;
    let (mut log, rows) = RunLog::open(&output.log_path(), plan.columns())
        .map_err(|e| CliError::from_error(Exit::BadInput, &e))?;
    // Read even with --no-resume: attempt numbers (and so prompt ids) go on
    // from the log, or a rerun would collect the old prompts from the server.
    let resume = Resume::from_rows(&rows, &output);
    drop(rows);
    let skip_done = !args.no_resume;

    // Count first (cheap next to running), so the bar has a total.
    let wanted = |job: &crate::plan::Job| {
        shard.as_ref().is_none_or(|s| s.contains(job.index))
            && !(skip_done && resume.is_done(job.id.as_str()))
    };
    let total = plan.jobs().filter(|j| wanted(j)).count();
    let skipped = plan.len() - total;
    let jobs = plan.jobs().filter(move |j| wanted(j)).map(|job| {
        let attempt = resume.next_attempt(job.id.as_str());
        (job, attempt)
    });

    let mut config = RunConfig::new(servers, run_key(output.root()));
    config.headers = headers;
    config.concurrency = args
        .concurrency
        .map(|c| c as usize)
        .or(manifest.concurrency)
        .unwrap_or(2);
    config.previews = args.previews;
    config.timeout = args.timeout;
    config.retries = args.retries;
    if let Some(after) = args.server_lost_after {
        config.server_lost_after = after;
    }
    config.max_failures = if args.fail_fast {
        Some(1)
    } else {
        args.max_failures.map(|n| n as usize)
    };

    let mut reporter = if global.quiet {
        Reporter::Quiet
    } else if std::io::stderr().is_terminal() {
        Reporter::Progress(ProgressReporter::new(global.verbose > 0))
    } else {
        Reporter::Plain(PlainReporter::new(Box::new(std::io::stderr())))
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::from_error(Exit::Infrastructure, &e))?;
    let output = Arc::new(output);
    let plan = &plan;
    runtime.block_on(async move {
        let _sim = if args.sim {
            let sim = start_sim().await?;
            if !global.quiet {
                eprintln!("simulator: {}", sim.url());
            }
            config.servers =
                vec![ServerUrl::parse(&sim.url()).map_err(|e| bad(vec![e.to_string()]))?];
            Some(sim)
        } else {
            None
        };
        if !args.no_check {
            // A server down at the start is left out (the scheduler skips
            // it too); only when none answers is that an error.
            let mut catalogues = Vec::new();
            let mut first_error = None;
            for url in &config.servers {
                match super::check::catalogues(std::slice::from_ref(url), &config.headers).await {
                    Ok(found) => catalogues.extend(found),
                    Err(e) => {
                        if !global.quiet {
                            eprintln!("warning: {url}: {}", e.errors.join("; "));
                        }
                        first_error.get_or_insert(e);
                    }
                }
            }
            if let (true, Some(e)) = (catalogues.is_empty(), first_error) {
                return Err(e);
            }
            super::check::preflight(plan, &catalogues)?;
        }
        let (int_tx, int_rx) = tokio::sync::watch::channel(0u32);
        spawn_interrupt_counter(int_tx)?;
        let mut observer = |event: &crate::run::RunEvent| {
            if let EventKind::JobFinished { job, outcome, .. } = &event.kind {
                log.append(job, outcome)?;
            }
            reporter.on_event(event);
            Ok(())
        };
        let summary =
            crate::run::execute(config, jobs, total, skipped, output, int_rx, &mut observer)
                .await
                .map_err(|e| match e {
                    RunError::NoServer(_) => CliError::from_error(Exit::Infrastructure, &e)
                        .with_hint("start ComfyUI, pass --server URL, or rehearse with --sim"),
                    RunError::Sink(_) => CliError::from_error(Exit::Infrastructure, &e),
                })?;
        Ok(match summary.cancelled {
            Some(CancelReason::Interrupt | CancelReason::SecondInterrupt) => Exit::Interrupted,
            Some(CancelReason::NoServers) => Exit::Infrastructure,
            _ if summary.stats.failed > 0 => Exit::JobsFailed,
            _ => Exit::Ok,
        })
    })
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
