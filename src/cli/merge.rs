//! `comfy-batch merge OUT DIR…`: shard folders → one output folder (see
//! `crate::folder::merge`).

use std::path::PathBuf;

use super::{CliError, Exit, GlobalArgs};
use crate::folder::merge::{MergeError, merge};

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
}

/// Runs the command.
pub fn execute(args: MergeArgs, global: &GlobalArgs) -> Result<Exit, CliError> {
    let summary = merge(&args.out, &args.dirs, args.force).map_err(|e| match e {
        MergeError::Io { .. } => CliError::from_error(Exit::Infrastructure, &e),
        _ => CliError::from_error(Exit::BadInput, &e),
    })?;
    // HOOK(report, issue 10): rebuild OUT/report/ here once `gallery` lands (with a `--no-report` flag), e.g. `crate::gallery::write(&args.out)`.
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
