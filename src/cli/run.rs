//! `comfy-batch run MANIFEST`: flags, environment and manifest become one
//! [`RunConfig`]; then plan → preflight → resume filter → scheduler (see
//! `drive`), with the CSV log and the reporter as the scheduler's observers.

use std::path::PathBuf;

use super::drive::{Prepared, Session, drive, open_output};
use super::options::{RunOptions, check_output};
use super::{CliError, Exit, GlobalArgs};
use crate::folder::runinfo::RunInfo;
use crate::manifest::Manifest;
use crate::plan::Plan;
use crate::runlog::RunLog;

/// Arguments of `comfy-batch run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The manifest (YAML) to run.
    pub manifest: PathBuf,
    /// Output folder [default: the manifest's `output`, else out/<manifest name>
    /// beside the manifest].
    #[arg(long, value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Run every job again, even those already `ok` in the output folder.
    #[arg(long)]
    pub no_resume: bool,
    /// Send the jobs of every group with `seeds:` (and no `pack:` of its
    /// own) N to a prompt, as `pack: N` does.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub pack: Option<u64>,
    /// How to run (shared with `rerun`).
    #[command(flatten)]
    pub options: RunOptions,
}

/// Runs the command.
pub fn execute(args: RunArgs, global: &GlobalArgs) -> Result<Exit, CliError> {
    let mut manifest = Manifest::load(&args.manifest)?;
    if let Some(n) = args.pack {
        manifest.pack_seeded_groups(n);
    }
    let output_path = manifest.output_folder(args.output.as_deref());
    // A folder run before keeps its fresh-seed draw, so resuming finds the
    // same jobs even for a manifest without `seeds:`.
    let info = RunInfo::read(&output_path);
    let key = info.key_for(&output_path);
    let lowered = args
        .options
        .lower(&manifest.servers, manifest.concurrency, key.clone())?;
    // UI-format workflows are converted with the first answering server's catalogue,
    // fetched per class for the classes they use (the simulator's is the
    // built-in one).
    let source = crate::preflight::ServerClasses::new(
        &lowered.config.servers,
        &lowered.config.headers,
        global.quiet,
    );
    let fetch = |classes: &[String]| source.fetch(classes);
    let plan = Plan::with_catalogue_from(
        &manifest,
        info.random_key.unwrap_or_else(rand::random),
        &fetch,
    )?;
    crate::progress::check_grids(&manifest, plan.columns())
        .map_err(|lines| CliError::many(Exit::BadInput, lines))?;
    for warning in plan.warnings() {
        if !global.quiet {
            eprintln!("warning: {warning}");
        }
    }
    if let Some(line) = plan.colliding_ids() {
        return Err(CliError::usage(format!(
            "{}: {line}",
            args.manifest.display()
        )));
    }
    let output_path = check_output(&output_path)?;
    let (config, shard) = (lowered.config, lowered.shard);
    let session = Session {
        config,
        sim: args.options.sim,
        check: !args.options.no_check,
        quiet: global.quiet,
        verbose: global.verbose,
        resuming: output_path.is_dir(),
        junit: args.options.junit.clone(),
        report: (!args.options.no_report).then(|| crate::progress::ReportPlan {
            grids: Some(manifest.grids.clone()),
            quiet: global.quiet,
        }),
    };
    let plan = &plan;
    drive(session, &|| Box::new(plan.jobs()), || {
        let output = open_output(&output_path)?;
        RunInfo {
            fresh_seeds: Some(plan.draws_fresh_seeds()),
            choices: plan.choice_columns().to_vec(),
            ..RunInfo::of(&manifest, plan.random_key(), &key, output.root())
        }
        .write(&output)?;
        // Read even with --no-resume: attempt numbers (and so prompt ids)
        // go on from the log, or a rerun would collect the old prompts.
        let (log, resume) = RunLog::open(&output.log_path(), plan.columns(), |files| {
            output.images_present(files)
        })?;
        let resume = std::rc::Rc::new(resume);
        let skip_done = !args.no_resume;
        let numbering = resume.clone();
        if plan.has_packs() && !log.has_pack_columns() {
            return Err(CliError::many(
                Exit::BadInput,
                vec![format!(
                    "{}: begun by an older version, without the pack columns; write this manifest's packed groups to another --output",
                    output.log_path().display()
                )],
            ));
        }
        // A pack is one unit of --shard: its jobs are never split.
        let wanted = move |unit: usize, id: &str| {
            shard.as_ref().is_none_or(|s| s.contains(unit)) && !(skip_done && resume.is_done(id))
        };
        // Count first (from the rows, without building prompts), so the bar
        // has a total.
        let mut total = 0;
        let _ = plan.for_each_row(|row| -> Result<(), ()> {
            total += usize::from(wanted(row.shard_unit, row.id));
            Ok(())
        });
        let skipped = plan.len() - total;
        // Jobs never handed out are listed from the rows too.
        let jobs =
            crate::run::PlanFeed::new(plan, wanted, move |id: &str| numbering.next_attempt(id));
        Ok(Prepared {
            output,
            log,
            jobs: Box::new(jobs),
            total,
            skipped,
        })
    })
}
