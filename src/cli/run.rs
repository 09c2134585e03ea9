//! `comfy-batch run MANIFEST`: flags, environment and manifest become one
//! [`RunConfig`]; then plan → preflight → resume filter → scheduler (see
//! `drive`), with the CSV log and the reporter as the scheduler's observers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::drive::{Prepared, Session, drive, open_output};
use super::{CliError, Exit, GlobalArgs};
use crate::comfy::ServerUrl;
use crate::comfy::http::parse_headers;
use crate::manifest::Manifest;
use crate::plan::{Plan, Shard};
use crate::run::RunConfig;
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
    /// Do not write the HTML report (DIR/report/) during and after the run.
    #[arg(long)]
    pub no_report: bool,
    /// How long a server may stay unreachable before its jobs move to the
    /// others (and, with none left, the run stops with exit 3). Hidden: for
    /// tests and CI, which cannot wait the default 30 s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, hide = true)]
    pub server_lost_after: Option<Duration>,
}

/// Parses `90s`, `10m`, `1h30m` (shared by `run` and `rerun`).
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

/// The key of a folder logged before run keys were recorded in `run.json`:
/// a hash of its path.
/// Computed before the folder exists, so the path is made absolute and
/// normalised lexically; the nearest existing ancestor is canonicalised so
/// that a symlinked parent gives the same key as its target.
pub fn run_key(output: &Path) -> String {
    let normal = crate::paths::normalize(
        &std::path::absolute(output).unwrap_or_else(|_| output.to_path_buf()),
    );
    let mut existing = normal.as_path();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => break,
        }
    }
    let mut key = std::fs::canonicalize(existing).unwrap_or_else(|_| existing.to_path_buf());
    key.extend(rest.iter().rev());
    let digest = Sha256::digest(key.to_string_lossy().as_bytes());
    hex::encode(&digest[..4])
}

fn bad(lines: Vec<String>) -> CliError {
    CliError::many(Exit::BadInput, lines)
}

/// Where the server list came from, for messages.
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
        .map(|u| ServerUrl::parse(u).map_err(|e| bad(vec![format!("{source}: {e}")])))
        .collect()
}

/// Runs the command.
pub fn execute(args: RunArgs, global: &GlobalArgs) -> Result<Exit, CliError> {
    let manifest = Manifest::load(&args.manifest).map_err(|e| bad(e.lines()))?;
    let output_path = resolve_output(args.output.as_deref(), &manifest);
    // A folder run before keeps its fresh-seed draw, so resuming finds the
    // same jobs even for a manifest without `seeds:`.
    let info = super::runinfo::RunInfo::read(&output_path);
    let plan = match info.random_key {
        Some(key) => Plan::with_random_key(&manifest, key),
        None => Plan::new(&manifest),
    }
    .map_err(|e| bad(e.lines()))?;
    super::report::check_grids(&manifest, plan.columns())?;
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
    let servers = if args.sim {
        Vec::new()
    } else {
        parse_servers(&args.servers, env_url.as_deref(), &manifest.servers)?
    };
    let headers = parse_headers(&args.headers).map_err(|e| bad(vec![format!("--header: {e}")]))?;
    if output_path.exists() && !output_path.is_dir() {
        return Err(bad(vec![format!(
            "--output {}: is a file, not a folder",
            output_path.display()
        )]));
    }

    let key = info.key_for(&output_path);
    let mut config = RunConfig::new(servers, key.clone());
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
    let session = Session {
        config,
        sim: args.sim,
        check: !args.no_check,
        quiet: global.quiet,
        verbose: global.verbose,
        resuming: output_path.is_dir(),
        report: (!args.no_report).then(|| super::report::ReportPlan {
            grids: Some(manifest.grids.clone()),
            quiet: global.quiet,
        }),
    };
    let plan = &plan;
    drive(session, &|| Box::new(plan.jobs()), || {
        let output = open_output(&output_path)?;
        super::runinfo::RunInfo::of(&manifest, plan.random_key(), &key, output.root())
            .write(&output)?;
        let (log, rows) = RunLog::open(&output.log_path(), plan.columns())
            .map_err(|e| CliError::from_error(Exit::BadInput, &e))?;
        // Read even with --no-resume: attempt numbers (and so prompt ids)
        // go on from the log, or a rerun would collect the old prompts.
        let resume = std::rc::Rc::new(Resume::from_rows(&rows, &output));
        drop(rows);
        let skip_done = !args.no_resume;
        let numbering = resume.clone();
        let wanted = move |job: &crate::plan::Job| {
            shard.as_ref().is_none_or(|s| s.contains(job.index))
                && !(skip_done && resume.is_done(job.id.as_str()))
        };
        // Count first (cheap next to running), so the bar has a total.
        let total = plan.jobs().filter(|j| wanted(j)).count();
        let skipped = plan.len() - total;
        let jobs = plan.jobs().filter(move |j| wanted(j)).map(move |job| {
            let attempt = numbering.next_attempt(job.id.as_str());
            (job, attempt)
        });
        Ok(Prepared {
            output,
            log,
            jobs: Box::new(jobs),
            total,
            skipped,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_key_is_the_same_before_and_after_the_folder_exists() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("a/../out");
        let before = run_key(&out);
        std::fs::create_dir_all(dir.path().join("out")).unwrap();
        assert_eq!(before, run_key(&out));
        assert_eq!(before, run_key(&dir.path().join("out")));
        assert_ne!(before, run_key(&dir.path().join("other")));
    }

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
