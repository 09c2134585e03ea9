//! `comfy-batch export DIR --format imagefolder|audiofolder|webdataset
//! [--to OUT]`: a run's ok outputs as a dataset (see `crate::export`).

use std::path::PathBuf;

use super::{CliError, Exit, GlobalArgs};
use crate::export::{ExportOptions, Format};
use crate::folder::RunFolder;

/// Arguments of `comfy-batch export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The run's output folder (the one holding runs.csv).
    pub dir: PathBuf,
    /// The dataset layout.
    #[arg(long, value_enum)]
    pub format: Format,
    /// Target folder, replaced when it holds nothing but an earlier export
    /// [default: DIR-<format> beside DIR].
    #[arg(long, value_name = "OUT")]
    pub to: Option<PathBuf>,
    /// Samples per WebDataset shard.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub shard_size: u64,
    /// Only jobs whose column NAME has this value (repeatable: one name
    /// given twice is either value, different names must all match).
    #[arg(long = "where", value_name = "NAME=VALUE")]
    pub wheres: Vec<String>,
    /// Write the dataset even when no sample is left (else exit 2).
    #[arg(long)]
    pub allow_empty: bool,
}

/// Runs the command.
pub fn execute(args: ExportArgs, global: &GlobalArgs) -> Result<Exit, CliError> {
    let folder = RunFolder::open(&args.dir)?;
    let to = args
        .to
        .clone()
        .unwrap_or_else(|| crate::export::default_target(&args.dir, args.format));
    let options = ExportOptions {
        format: args.format,
        to: to.clone(),
        shard_size: usize::try_from(args.shard_size).unwrap_or(usize::MAX),
        wheres: args.wheres,
        allow_empty: args.allow_empty,
    };
    let summary = crate::export::export(&folder, &options)?;
    if !global.quiet {
        if folder.torn_tail() || crate::folder::log_in_use(&args.dir) {
            eprintln!(
                "warning: {}: a run is still writing this folder; exported the jobs logged so far",
                args.dir.display()
            );
        }
        for line in summary.notes(&args.dir, args.format) {
            eprintln!("{line}");
        }
        println!("{}", summary.line(&to, args.format));
    }
    Ok(Exit::Ok)
}
