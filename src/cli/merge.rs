//! `comfy-batch merge OUT DIR…`: shard folders → one output folder (see
//! `crate::folder::merge`).

use std::path::PathBuf;

use super::{CliError, Exit, GlobalArgs};
use crate::folder::merge::merge;

/// Arguments of `comfy-batch merge`.
#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// The merged folder (created, or merged into again).
    pub out: PathBuf,
    /// The shard folders.
    #[arg(required = true, value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    /// Merge folders from different manifests or fresh-seed keys anyway.
    #[arg(long)]
    pub force: bool,
    /// Do not rebuild the HTML report (OUT/report/).
    #[arg(long)]
    pub no_report: bool,
}

/// Runs the command.
pub fn execute(args: MergeArgs, global: &GlobalArgs) -> Result<Exit, CliError> {
    let summary = merge(&args.out, &args.dirs, args.force)?;
    // The rows are merged whatever happens here: a report problem is a warning.
    if !args.no_report {
        // The manifest's grids a shard's run saved stay the default view.
        let out_grids = crate::gallery::load_grids(&args.out);
        if out_grids.is_empty()
            && let Some(grids) = args
                .dirs
                .iter()
                .map(|d| crate::gallery::load_grids(d))
                .find(|g| !g.is_empty())
            && let Err(e) = crate::gallery::save_grids(&args.out, &grids)
        {
            eprintln!("warning: report: {e}");
        }
        match crate::gallery::write_report(&args.out, &crate::gallery::ReportOptions::default()) {
            Ok(s) if !global.quiet => eprintln!("report: {}", s.index.display()),
            Ok(_) => {}
            Err(e) => eprintln!("warning: report: {e}"),
        }
        let (written, problems) = crate::grid::write_saved(&args.out);
        for path in written.iter().filter(|_| !global.quiet) {
            eprintln!("grid: {}", path.display());
        }
        for problem in problems {
            eprintln!("warning: {problem}");
        }
    }
    if !global.quiet {
        for w in &summary.warnings {
            eprintln!("warning: {w}");
        }
        println!(
            "merged {} folder(s) into {}: {} new row(s), {} row(s) and {} job(s) in all, {} file(s) linked or copied",
            args.dirs.len(),
            args.out.display(),
            summary.rows_added,
            summary.rows_total,
            summary.jobs,
            summary.files
        );
    }
    Ok(Exit::Ok)
}
