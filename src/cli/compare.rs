//! `comfy-batch compare A B`: lowers the flags into
//! [`crate::compare::CompareOptions`], prints what the library renders and
//! maps the result to an exit code (0 when at most `--max-different` pairs
//! are different, missing or failed; 1 otherwise; 2 for bad input).

use std::path::{Path, PathBuf};

use super::{CliError, Exit, GlobalArgs};
use crate::compare::{self, CompareOptions, Format};

/// Arguments of `comfy-batch compare`.
#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// The first output folder (or its runs.csv).
    pub a: PathBuf,
    /// The second output folder (or its runs.csv).
    pub b: PathBuf,
    /// Pair jobs by these parameters instead of by job id (e.g. prompt,seed).
    #[arg(long, value_name = "NAME,…", value_delimiter = ',')]
    pub by: Vec<String>,
    /// Differing pixels at or above this PSNR are `close` (dB).
    #[arg(long, value_name = "DB", default_value_t = compare::DEFAULT_THRESHOLD)]
    pub threshold: f64,
    /// Output: text (summary), csv or json (one record per pair).
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    pub format: Format,
    /// Write a self-contained HTML page of the pairs.
    #[arg(short = 'o', long = "output", value_name = "FILE.html")]
    pub html: Option<PathBuf>,
    /// Exit 0 while at most N pairs are different, missing or failed.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_different: usize,
    /// Write JUnit XML: a testcase per pair.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

/// Runs the command.
pub fn execute(args: CompareArgs, global: &GlobalArgs) -> Result<Exit, CliError> {
    if !args.threshold.is_finite() {
        return Err(CliError::many(
            Exit::BadInput,
            vec![format!(
                "--threshold {}: expected a number of dB, e.g. 40",
                args.threshold
            )],
        ));
    }
    let options = CompareOptions {
        by: args.by.iter().map(|s| s.trim().to_string()).collect(),
        threshold: args.threshold,
        only_b_jobs: false,
    };
    let c = compare::compare(&args.a, &args.b, &options)?;
    let out = match args.format {
        Format::Text => compare::summary(&c),
        format => {
            // The records own stdout: the environment goes to stderr.
            if !global.quiet {
                for line in &c.environment {
                    eprintln!("environment: {line}");
                }
            }
            compare::records(&c, format)
        }
    };
    if !(global.quiet && args.format == Format::Text) {
        use std::io::Write as _;
        super::plan::stdout_written(std::io::stdout().lock().write_all(out.as_bytes()))?;
    }
    if let Some(path) = &args.html {
        compare::write_html(&c, path)?;
    }
    if let Some(path) = &args.junit {
        compare::junit(&c, path)?;
    }
    let ci = super::ci_env::ci_options(None, &args.a);
    if let Some(path) = ci.step_summary {
        let text = compare::step_summary(&c, args.max_different);
        crate::ci::append_step_summary(&path, &text)?;
    }
    Ok(if c.failing() > args.max_different {
        Exit::JobsFailed
    } else {
        Exit::Ok
    })
}

/// `rerun --verify` before anything runs: the new outputs need a folder of
/// their own, or the logged files they are compared with would be replaced.
pub(super) fn check_verify(logged: &Path, output: Option<&Path>) -> Result<(), CliError> {
    let same =
        output.is_none_or(|o| crate::folder::canonical(o) == crate::folder::canonical(logged));
    if same {
        return Err(CliError::many(
            Exit::BadInput,
            vec![format!(
                "--verify compares the rerun's outputs with the logged ones in {}: give --output DIR, another folder, so they are not replaced",
                logged.display()
            )],
        ));
    }
    Ok(())
}

/// `rerun --verify` after the rerun (which ended with `ran`): its outputs
/// compared with the logged ones as `compare` does (the jobs rerun only),
/// the same summary printed; the exit follows compare's rule unless the
/// rerun itself stopped short (no server, interrupted).
pub(super) fn verify(
    logged: &Path,
    rerun: &Path,
    ran: Exit,
    quiet: bool,
) -> Result<Exit, CliError> {
    if !matches!(ran, Exit::Ok | Exit::JobsFailed) {
        return Ok(ran);
    }
    let options = CompareOptions {
        only_b_jobs: true,
        ..CompareOptions::default()
    };
    let c = compare::compare(logged, rerun, &options)?;
    if !quiet {
        print!("verify: {}", compare::summary(&c));
    }
    Ok(if c.failing() > 0 {
        Exit::JobsFailed
    } else {
        Exit::Ok
    })
}
