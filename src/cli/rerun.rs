//! `comfy-batch rerun LOG.csv`: lowers its flags, selects rows of a run log
//! (`crate::runlog`), has `crate::plan::rebuild` turn them into jobs (the
//! job as sent, `crate::sink::sent_job`, the fallback) and runs them again.

use std::path::PathBuf;

use super::drive::{Prepared, Session, drive, open_output};
use super::options::{RunOptions, check_output};
use super::{CliError, Exit, GlobalArgs};
use crate::plan::Job;
use crate::plan::rebuild::{Origin, rebuild_all};
use crate::run::Status;
use crate::runlog::{self, Log, Logged, RunLog};

/// Arguments of `comfy-batch rerun`.
#[derive(Debug, clap::Args)]
pub struct RerunArgs {
    /// The run log (`runs.csv`, or the folder holding it) to take jobs from.
    pub log: PathBuf,
    /// Rerun this job id (repeatable) [default: every job in the log].
    #[arg(long = "job", value_name = "ID")]
    pub jobs: Vec<String>,
    /// Rerun jobs whose newest row has this status: ok, failed, rejected,
    /// interrupted or timeout (repeatable).
    #[arg(long = "status", value_name = "STATUS", value_parser = parse_status)]
    pub statuses: Vec<Status>,
    /// Output folder [default: the log's folder, appending to the same log].
    #[arg(long, value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Rebuild from the workflow file even if it changed since the run
    /// (the jobs then get new ids).
    #[arg(long)]
    pub allow_changed_workflow: bool,
    /// Then compare the new outputs with the logged ones, as `compare`
    /// does (needs --output, another folder); exit 1 unless all pass.
    #[arg(long)]
    pub verify: bool,
    /// How to run (the same options as `run`).
    #[command(flatten)]
    pub options: RunOptions,
}

fn parse_status(text: &str) -> Result<Status, String> {
    Status::parse(text).ok_or_else(|| {
        format!("'{text}' is not a status (ok, failed, rejected, interrupted, timeout)")
    })
}

/// The newest row of each job id (in the log's order of jobs: by label),
/// filtered by `--job` and `--status`; a `--job` not in the log is an error.
fn select(log: &Log, args: &RerunArgs) -> Result<Vec<Logged>, Vec<String>> {
    let fail = |e: runlog::LogError| vec![e.to_string()];
    let mut seen = std::collections::HashSet::new();
    let mut selected = Vec::new();
    let layout = log.layout();
    for row in log.newest().map_err(fail)? {
        let row = row.map_err(fail)?;
        // Typed (every cell copied) only once selected.
        let id = layout.get(&row, "job_id");
        if !args.jobs.is_empty() {
            if !args.jobs.iter().any(|j| j == id) {
                continue;
            }
            seen.insert(id.to_string());
        }
        let status = Status::parse(layout.get(&row, "status"));
        if args.statuses.is_empty() || status.is_some_and(|s| args.statuses.contains(&s)) {
            selected.push(layout.logged(&row));
        }
    }
    let missing: Vec<String> = args
        .jobs
        .iter()
        .filter(|id| !seen.contains(id.as_str()))
        .map(|id| format!("{}: no job '{id}' in the log", args.log.display()))
        .collect();
    if !missing.is_empty() {
        return Err(missing);
    }
    Ok(selected)
}

/// Runs the command.
pub fn execute(args: RerunArgs, global: &GlobalArgs) -> Result<Exit, CliError> {
    let bad = |lines: Vec<String>| CliError::many(Exit::BadInput, lines);
    let log = Log::open(&args.log)?;
    let dir = runlog::folder_of(&args.log);
    let selected = select(&log, &args).map_err(bad)?;
    let info = super::runinfo::RunInfo::read(&dir);
    let base = info
        .manifest_dir
        .as_ref()
        .map(|m| dir.join(m))
        .unwrap_or_else(|| dir.clone());
    let origin = Origin {
        dir: &dir,
        base: &base,
        aliases: &info.aliases,
        choices: &info.choices,
        allow_changed: args.allow_changed_workflow,
    };
    if args.verify {
        super::compare::check_verify(&dir, args.output.as_deref())?;
    }
    let (mut jobs, warnings) =
        rebuild_all(&selected, &origin, |row| crate::sink::sent_job(&dir, row)).map_err(bad)?;
    if !global.quiet {
        for w in &warnings {
            eprintln!("warning: {w}");
        }
    }
    for (i, job) in jobs.iter_mut().enumerate() {
        job.index = i;
    }
    let params: Vec<String> = log.layout().params().to_vec();

    let output_path = args.output.clone().unwrap_or_else(|| dir.clone());
    let mut target_info = super::runinfo::RunInfo::read(&output_path);
    let key = target_info.key_for(&output_path);
    if target_info.run_key.is_none() {
        // A new folder: keep what a later rerun or run into it needs.
        target_info = super::runinfo::RunInfo {
            run_key: Some(key.clone()),
            ..super::runinfo::RunInfo::read(&dir)
        };
        if target_info.manifest_dir.is_some() && output_path != dir {
            let source_manifest_dir = dir.join(target_info.manifest_dir.as_deref().unwrap_or("."));
            target_info.manifest_dir = Some(crate::paths::relative_to(
                &output_path,
                &source_manifest_dir,
            ));
        }
    }
    let output_path = check_output(&output_path)?;
    // The run's own `concurrency:` is the default, as for `run`.
    let lowered = args.options.lower(&[], target_info.concurrency, key)?;
    let (config, shard) = (lowered.config, lowered.shard);
    if let Some(shard) = &shard {
        jobs.retain(|job| shard.contains(job.index));
    }
    let session = Session {
        config,
        sim: args.options.sim,
        check: !args.options.no_check,
        quiet: global.quiet,
        verbose: global.verbose,
        resuming: output_path.is_dir(),
        junit: args.options.junit.clone(),
        report: (!args.options.no_report).then_some(crate::progress::ReportPlan {
            grids: None,
            quiet: global.quiet,
        }),
    };
    let jobs = &jobs;
    let ran = drive(session, &|| Box::new(jobs.iter().cloned()), || {
        let output = open_output(&output_path)?;
        target_info.write(&output)?;
        // A rerun runs what it was asked to, done or not; the log only
        // numbers the attempts so prompt ids never repeat.
        let (log, resume) = RunLog::open(&output.log_path(), &params, |files| {
            output.images_present(files)
        })?;
        let numbered: Vec<(Job, u32)> = jobs
            .iter()
            .map(|job| (job.clone(), resume.next_attempt(job.id.as_str())))
            .collect();
        Ok(Prepared {
            output,
            log,
            total: numbered.len(),
            skipped: 0,
            jobs: Box::new(numbered.into_iter()),
        })
    })?;
    if args.verify {
        return super::compare::verify(&dir, &output_path, ran, global.quiet);
    }
    Ok(ran)
}
