//! `comfy-batch plan`: expand a manifest without any server and print the
//! jobs ([`crate::listing`]: a table, or json/csv for tools), optionally
//! writing each patched prompt to a folder. Any manifest problem: every
//! problem listed, exit 2.

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{CliError, Exit, GlobalArgs};
use crate::listing::{self, Format};
use crate::manifest::Manifest;
use crate::plan::Plan;

/// For `bench`, which measures the CSV listing.
pub(crate) use crate::listing::write_csv;

/// Arguments of `comfy-batch plan`.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// The manifest (YAML) to expand.
    pub manifest: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Also write each patched prompt as DIR/<job_id>.json.
    #[arg(long, value_name = "DIR")]
    pub write_prompts: Option<PathBuf>,
}

/// Loads and plans a manifest, mapping every problem to one line and exit 2.
pub(crate) fn load_plan(path: &Path) -> Result<(Manifest, Plan), CliError> {
    let manifest = Manifest::load(path)?;
    let plan = Plan::new(&manifest).map_err(|e| {
        let custom = e
            .lines()
            .iter()
            .any(|l| l.contains("which the node catalogue does not have"));
        let error = CliError::from(e);
        if custom {
            // Offline, only the built-in catalogue of core nodes is known.
            error.with_hint(
                "plan converts UI-format workflows with the built-in catalogue of core nodes; \
                 `comfy-batch check --server URL` converts with that server's nodes",
            )
        } else {
            error
        }
    })?;
    Ok((manifest, plan))
}

/// Runs the command.
pub fn execute(args: PlanArgs, global: &GlobalArgs) -> Result<Exit, CliError> {
    if let Some(dir) = &args.write_prompts
        && dir.exists()
        && !dir.is_dir()
    {
        return Err(CliError::usage(format!(
            "--write-prompts: {} is a file, not a folder",
            dir.display()
        )));
    }
    let (_, plan) = load_plan(&args.manifest)?;
    if !global.quiet {
        for w in plan.warnings() {
            eprintln!("warning: {w}");
        }
    }
    if let Some(dir) = &args.write_prompts {
        listing::write_prompts(&plan, dir)?;
    }
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let written = listing::write(&plan, args.format, &mut out).and_then(|()| out.flush());
    stdout_written(written)
}

/// The outcome of writing a command's output to stdout: a closed pipe
/// (`comfy-batch plan … | head`) is not an error worth a line.
pub(super) fn stdout_written(written: io::Result<()>) -> Result<Exit, CliError> {
    match written {
        Ok(()) => Ok(Exit::Ok),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(Exit::Ok),
        Err(e) => Err(e.into()),
    }
}
