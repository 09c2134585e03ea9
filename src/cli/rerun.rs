//! `comfy-batch rerun LOG.csv`: lowers its flags, selects rows of a run log
//! (`crate::runlog`) in one pass, keeping where each is, has
//! `crate::plan::rebuild` turn them into jobs (the job as sent,
//! `crate::sink::sent_job`, the fallback) one at a time (`crate::rerun`: checked
//! first, every problem before anything runs, then rebuilt as the
//! preflight and the scheduler ask) and runs them again. Memory stays a few
//! bytes a job, whatever the log's size.

use std::cell::RefCell;
use std::collections::HashSet;
use std::path::PathBuf;

use super::drive::{Prepared, Session, drive, open_output};
use super::options::{RunOptions, check_output};
use super::{CliError, Exit, GlobalArgs};
use crate::plan::rebuild::Origin;
use crate::rerun::{Rebuilder, RerunFeed};
use crate::run::Status;
use crate::runlog::{self, Log, Place, RunLog};

/// Arguments of `comfy-batch rerun`.
#[derive(Debug, clap::Args)]
pub struct RerunArgs {
    /// The run log (`runs.csv`, or the folder holding it) to take jobs from.
    pub log: PathBuf,
    /// Rerun this job id (repeatable) [default: every job in the log].
    #[arg(long = "job", value_name = "ID")]
    pub jobs: Vec<String>,
    /// Rerun jobs whose newest row has this status: ok, failed, rejected,
    /// interrupted or timeout (repeatable, or comma-separated).
    #[arg(long = "status", value_name = "STATUS", value_parser = parse_status, value_delimiter = ',')]
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

/// Where the newest row of each job id is (in the log's order of jobs: by
/// label), filtered by `--job` and `--status` as the log is read, once; a
/// `--job` not in the log is an error.
fn select(log: &Log, args: &RerunArgs) -> Result<Vec<Place>, Vec<String>> {
    let layout = log.layout();
    let asked: HashSet<&str> = args.jobs.iter().map(String::as_str).collect();
    let mut seen = HashSet::new();
    let places = log
        .newest_places(|row| {
            let id = layout.get(row, "job_id");
            if !asked.is_empty() {
                if !asked.contains(id) {
                    return false;
                }
                seen.insert(id.to_string());
            }
            let status = Status::parse(layout.get(row, "status"));
            args.statuses.is_empty() || status.is_some_and(|s| args.statuses.contains(&s))
        })
        .map_err(|e| vec![e.to_string()])?;
    let missing: Vec<String> = args
        .jobs
        .iter()
        .filter(|id| !seen.contains(id.as_str()))
        .map(|id| format!("{}: no job '{id}' in the log", args.log.display()))
        .collect();
    if !missing.is_empty() {
        return Err(missing);
    }
    Ok(places)
}

/// Runs the command.
pub fn execute(args: RerunArgs, global: &GlobalArgs) -> Result<Exit, CliError> {
    let bad = |lines: Vec<String>| CliError::many(Exit::BadInput, lines);
    let log = Log::open(&args.log)?;
    let dir = runlog::folder_of(&args.log);
    let places = select(&log, &args).map_err(bad)?;
    let info = super::runinfo::RunInfo::read(&dir);
    let base = info
        .manifest_dir
        .as_ref()
        .map(|m| dir.join(m))
        .unwrap_or_else(|| dir.clone());
    // Read once each: every job is rebuilt from the bytes checked.
    let workflows = crate::plan::Loads::default();
    let origin = Origin {
        dir: &dir,
        base: &base,
        aliases: &info.aliases,
        choices: &info.choices,
        allow_changed: args.allow_changed_workflow,
        workflows: &workflows,
    };
    if args.verify {
        super::compare::check_verify(&dir, args.output.as_deref())?;
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
    // Every selected row is checked (every problem reported, in every
    // shard); a shard keeps its positions in the selection.
    let rebuilder = Rebuilder::new(&log, origin);
    let in_shard = |i: usize| shard.as_ref().is_none_or(|s| s.contains(i));
    let chosen = rebuilder
        .check(places, in_shard, global.quiet)
        .map_err(bad)?;
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
    let (rebuilder, chosen) = (&rebuilder, &chosen[..]);
    let changed = RefCell::new(Vec::new());
    let ran = drive(session, &|| rebuilder.jobs(chosen), || {
        let output = open_output(&output_path)?;
        target_info.write(&output)?;
        // A rerun runs what it was asked to, done or not; the log only
        // numbers the attempts so prompt ids never repeat.
        let (log, resume) = RunLog::open(&output.log_path(), &params, |files| {
            output.images_present(files)
        })?;
        Ok(Prepared {
            output,
            log,
            total: chosen.len(),
            skipped: 0,
            jobs: Box::new(RerunFeed::new(rebuilder, chosen, resume, &changed)?),
        })
    })?;
    let changed = changed.into_inner();
    if !changed.is_empty() {
        // What ran is logged; these did not run.
        return Err(bad(changed));
    }
    if args.verify {
        return super::compare::verify(&dir, &output_path, ran, global.quiet);
    }
    Ok(ran)
}
