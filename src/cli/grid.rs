//! `comfy-batch grid DIR --x P --y P [--page P] [--where P=V]… [-o FILE]`:
//! a labelled grid image of a run, from its log and files.

use std::path::PathBuf;

use super::{CliError, Exit, GlobalArgs};
use crate::gallery::report_dir;
use crate::grid::{self, GridRequest};

/// Arguments of `comfy-batch grid`.
#[derive(Debug, clap::Args)]
pub struct GridArgs {
    /// The output folder of a run (the one holding runs.csv).
    pub dir: PathBuf,
    /// The parameter across (columns): a parameter column, `seed` or `group`.
    #[arg(long, value_name = "PARAM")]
    pub x: String,
    /// The parameter down (rows).
    #[arg(long, value_name = "PARAM")]
    pub y: String,
    /// One image per value of this parameter (FILE-<value>.png).
    #[arg(long, value_name = "PARAM")]
    pub page: Option<String>,
    /// Only jobs with this value (repeatable); other parameters that vary
    /// share a cell.
    #[arg(long = "where", value_name = "PARAM=VALUE", value_parser = parse_where)]
    pub r#where: Vec<(String, String)>,
    /// Only this job group (the `job` column before `#`).
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,
    /// The image to write: .png, .jpg or .webp
    /// [default: DIR/report/grids/<x>-by-<y>.png].
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The longer side of a cell in pixels [default: the largest image's, at least 256].
    #[arg(long, value_name = "PX", value_parser = clap::value_parser!(u32).range(16..=4096))]
    pub cell_size: Option<u32>,
}

fn parse_where(text: &str) -> Result<(String, String), String> {
    grid::parse_where(text).map_err(|e| e.to_string())
}

/// Runs `grid`.
pub fn execute(args: GridArgs, global: &GlobalArgs) -> Result<Exit, CliError> {
    let dir = crate::runlog::folder_of(&args.dir);
    // The log's header first: a folder that is no run says so before
    // anything else is looked at.
    crate::gallery::FolderLog::open(&dir)?;
    if args.output.is_none() {
        crate::gallery::check_report_dir(&dir)?;
    }
    let output = args.output.clone().unwrap_or_else(|| {
        report_dir(&dir).join("grids").join(format!(
            "{}-by-{}.png",
            grid::file_part(&args.x),
            grid::file_part(&args.y)
        ))
    });
    let req = GridRequest {
        x: args.x,
        y: args.y,
        page: args.page,
        r#where: args.r#where,
        group: args.group,
        cell: args.cell_size,
    };
    let written = grid::write_folder(&dir, &req, &output)?;
    if !global.quiet {
        for (rel, why) in written.refused {
            eprintln!("warning: {}: {rel}: {why}", dir.display());
        }
        for p in written.files {
            println!("{}", p.display());
        }
    }
    Ok(Exit::Ok)
}
