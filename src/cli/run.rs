//! `comfy-batch run MANIFEST`: flags, environment and manifest become one
//! [`RunConfig`]; then plan → preflight → resume filter → scheduler (see
//! `drive`), with the CSV log and the reporter as the scheduler's observers.

use std::path::{Path, PathBuf};

use super::drive::{Prepared, Session, drive, open_output};
use super::options::{RunOptions, check_output};
use super::runinfo::RunInfo;
use super::{CliError, Exit, GlobalArgs};
use crate::manifest::Manifest;
use crate::plan::Plan;
use crate::sink::csv::{Resume, RunLog};

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
    /// How to run (shared with `rerun`).
    #[command(flatten)]
    pub options: RunOptions,
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

/// Two different jobs under one id would share files, prompt ids and log
/// rows (one logged `ok` with the other's image): such a plan is refused.
/// Identical jobs were collapsed by the plan already, so any id seen twice
/// is a hash collision.
fn colliding_ids(plan: &Plan) -> Option<String> {
    let key = |id: &str| u64::from_str_radix(id, 16).unwrap_or(0);
    // Rows have the ids without the prompts, which cost most to build.
    let mut ids = Vec::with_capacity(plan.len());
    let _ = plan.for_each_row(|row| -> Result<(), ()> {
        ids.push(key(row.id));
        Ok(())
    });
    let twice = repeated(ids)?;
    let labels: Vec<String> = plan
        .jobs()
        .filter(|j| key(j.id.as_str()) == twice)
        .map(|j| format!("{} ({})", j.label, j.id))
        .collect();
    Some(format!(
        "jobs {} are different but share one id (a hash collision); change one of them, e.g. its seed",
        labels.join(" and ")
    ))
}

/// A value that occurs twice, if any.
fn repeated(mut ids: Vec<u64>) -> Option<u64> {
    ids.sort_unstable();
    ids.windows(2).find(|w| w[0] == w[1]).map(|w| w[0])
}

fn bad(lines: Vec<String>) -> CliError {
    CliError::many(Exit::BadInput, lines)
}

/// Runs the command.
pub fn execute(args: RunArgs, global: &GlobalArgs) -> Result<Exit, CliError> {
    let manifest = Manifest::load(&args.manifest).map_err(|e| bad(e.lines()))?;
    let output_path = resolve_output(args.output.as_deref(), &manifest);
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
    let source = super::convert::ServerClasses::new(
        &lowered.config.servers,
        &lowered.config.headers,
        global.quiet,
    );
    let fetch = |classes: &[String]| source.fetch(classes);
    let plan = Plan::with_catalogue_from(
        &manifest,
        info.random_key.unwrap_or_else(rand::random),
        &fetch,
    )
    .map_err(|e| bad(e.lines()))?;
    super::report::check_grids(&manifest, plan.columns())?;
    for warning in plan.warnings() {
        if !global.quiet {
            eprintln!("warning: {warning}");
        }
    }
    if let Some(line) = colliding_ids(&plan) {
        return Err(bad(vec![format!("{}: {line}", args.manifest.display())]));
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
        report: (!args.options.no_report).then(|| super::report::ReportPlan {
            grids: Some(manifest.grids.clone()),
            quiet: global.quiet,
        }),
    };
    let plan = &plan;
    drive(session, &|| Box::new(plan.jobs()), || {
        let output = open_output(&output_path)?;
        super::runinfo::RunInfo {
            fresh_seeds: Some(plan.draws_fresh_seeds()),
            choices: plan.choice_columns().to_vec(),
            ..super::runinfo::RunInfo::of(&manifest, plan.random_key(), &key, output.root())
        }
        .write(&output)?;
        let (log, rows) = RunLog::open(&output.log_path(), plan.columns())
            .map_err(|e| CliError::from_error(Exit::BadInput, &e))?;
        // Read even with --no-resume: attempt numbers (and so prompt ids)
        // go on from the log, or a rerun would collect the old prompts.
        let resume = std::rc::Rc::new(Resume::from_rows(&rows, &output));
        drop(rows);
        let skip_done = !args.no_resume;
        let numbering = resume.clone();
        let wanted = move |index: usize, id: &str| {
            shard.as_ref().is_none_or(|s| s.contains(index)) && !(skip_done && resume.is_done(id))
        };
        // Count first (from the rows, without building prompts), so the bar
        // has a total.
        let mut total = 0;
        let _ = plan.for_each_row(|row| -> Result<(), ()> {
            total += usize::from(wanted(row.index, row.id));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_seen_twice_is_found() {
        assert_eq!(repeated(vec![5, 1, 9, 3]), None);
        assert_eq!(repeated(vec![5, 1, 9, 1, 3]), Some(1));
        assert_eq!(repeated(Vec::new()), None);
    }

    /// The pair the review found colliding under 48-bit ids.
    #[test]
    fn ids_are_64_bits_and_the_reviewed_pair_differs() {
        let dir = tempfile::tempdir().unwrap();
        let wf = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/workflows/t2i.json")).unwrap();
        std::fs::create_dir_all(dir.path().join("workflows")).unwrap();
        std::fs::write(dir.path().join("workflows/t2i.json"), wf).unwrap();
        let path = dir.path().join("m.yaml");
        let text = "version: 1\nworkflows:\n  t2i: workflows/t2i.json\njobs:\n  - name: a\n    workflow: t2i\n    seeds: [13773221, 26107027]\n";
        std::fs::write(&path, text).unwrap();
        let manifest = Manifest::load(&path).unwrap();
        let plan = Plan::new(&manifest).unwrap();
        let ids: Vec<String> = plan.jobs().map(|j| j.id.to_string()).collect();
        assert_eq!(ids.len(), 2);
        assert!(ids.iter().all(|id| id.len() == 16), "{ids:?}");
        assert_ne!(ids[0], ids[1]);
        assert_ne!(
            ids[0][..12],
            ids[1][..12],
            "the 48-bit prefixes differ too: {ids:?}"
        );
        assert_eq!(colliding_ids(&plan), None);
    }
}
