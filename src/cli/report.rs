//! `comfy-batch report DIR`: the gallery of a run written once. The live
//! report of `run` / `rerun` is `crate::progress::LiveReport`.

use std::path::PathBuf;

use super::{CliError, Exit, GlobalArgs};
use crate::gallery::{self, ReportOptions};

/// Arguments of `comfy-batch report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The output folder of a run (the one holding runs.csv).
    pub dir: PathBuf,
}

/// Runs `report`.
pub fn execute(args: ReportArgs, global: &GlobalArgs) -> Result<Exit, CliError> {
    let dir = crate::runlog::folder_of(&args.dir);
    let summary = gallery::write_report(&dir, &ReportOptions::default())?;
    if !global.quiet {
        print_summary(&summary);
    }
    Ok(Exit::Ok)
}

fn print_summary(s: &gallery::ReportSummary) {
    let mut notes = Vec::new();
    if s.missing > 0 {
        notes.push(format!("{} files missing", s.missing));
    }
    if s.refused > 0 {
        notes.push(format!(
            "{} files refused: never opened nor linked, as their path leaves the folder, goes through a symbolic link or names no regular file",
            s.refused
        ));
    }
    if s.thumbs_failed > 0 {
        notes.push(format!("{} images unreadable", s.thumbs_failed));
    }
    let notes = if notes.is_empty() {
        String::new()
    } else {
        format!(" ({})", notes.join(", "))
    };
    println!("report: {} ({} jobs){notes}", s.index.display(), s.jobs);
}
