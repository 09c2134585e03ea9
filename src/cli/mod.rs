//! The edge of the program: clap arguments, the environment and the terminal
//! are read here and nowhere else; every command turns its flags into one
//! config for the library. A library error says its own exit code
//! ([`crate::exit::Failure`]) and becomes a [`CliError`] through `?`;
//! [`execute`] is the one place that prints it and ends with its code.
//!
//! Command modules depend one way: `run` and `rerun` → `drive` → `sim`
//! (the embedded simulator); `run`, `rerun`, `drive` and `check` →
//! `options` (flags shared by `run` and `rerun`) → `ci_env` (the CI's
//! variables, also read by `status`); `completions` and `status` → `plan`
//! (its stdout rule); `check` and `convert` → `sim`. The preflight that `check`, `convert`, `run` and
//! `rerun` share is the library's (`crate::preflight`), and so is what
//! `drive` hands on: the scheduler's loop and a run stopped in its
//! preflight (`crate::run`), which events are log rows, where a run writes
//! (`crate::manifest`). `runinfo` only
//! re-exports [`crate::folder::runinfo`] for `rerun`.

mod bench;
mod check;
mod ci_env;
mod compare;
mod completions;
mod convert;
mod drive;
mod export;
mod grid;
mod init;
mod merge;
mod options;
mod plan;
mod report;
mod rerun;
mod run;
mod runinfo;
mod sim;
mod status;

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

pub use crate::exit::Exit;
use crate::exit::Failure;

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

/// Every library error ends the program with the code it names itself
/// ([`Failure::exit_code`]): the one mapping from errors to exit codes.
impl<E: Failure> From<E> for CliError {
    fn from(error: E) -> Self {
        let cli_error = CliError::many(error.exit_code(), error.lines());
        match error.hint() {
            Some(hint) => cli_error.with_hint(hint),
            None => cli_error,
        }
    }
}

/// The longest error line printed, in characters.
const MAX_LINE: usize = 1000;

/// An error on its way to the user: one or more messages, an optional hint,
/// and the exit code it maps to. Only this module renders diagnostics.
#[derive(Debug)]
pub struct CliError {
    /// The exit code the program ends with.
    pub exit: Exit,
    /// One line per problem (several when e.g. a manifest has many).
    pub errors: Vec<String>,
    /// A suggestion shown after the errors.
    pub hint: Option<String>,
}

impl CliError {
    /// A flag or argument the command itself refuses: one line, exit 2.
    pub fn usage(line: impl Into<String>) -> Self {
        CliError::many(Exit::BadInput, vec![line.into()])
    }

    /// Several independent problems, each printed on its own line.
    pub fn many(exit: Exit, errors: Vec<String>) -> Self {
        CliError {
            exit,
            errors,
            hint: None,
        }
    }

    /// Adds a hint line.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The diagnostic as printed on stderr. Each problem is one line: a
    /// line break inside a message is folded, and a line that quotes a
    /// huge value is cut in the middle.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for e in &self.errors {
            let line = e.split_whitespace().collect::<Vec<_>>().join(" ");
            let _ = writeln!(out, "error: {}", crate::text::clip(&line, MAX_LINE));
        }
        if let Some(hint) = &self.hint {
            let _ = writeln!(out, "hint: {hint}");
        }
        out
    }
}

/// comfy-batch: run sweeps of ComfyUI workflows from a YAML manifest, with
/// bounded concurrency, and keep every image plus a CSV log.
#[derive(Debug, Parser)]
#[command(
    name = "comfy-batch",
    version = env!("COMFY_BATCH_VERSION"),
    about,
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Flags that every command takes.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Print only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Print more (repeat for debug tracing); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Expand a manifest into jobs without any server.
    Plan(plan::PlanArgs),
    /// Expand, submit, track, download and log a manifest's jobs.
    Run(run::RunArgs),
    /// Validate every job against a live server's node catalogue; queue nothing.
    Check(check::CheckArgs),
    /// Rebuild jobs from rows of a run log (runs.csv) and run them again.
    Rerun(rerun::RerunArgs),
    /// Convert a UI-format workflow (or an image embedding one) to the API format.
    Convert(convert::ConvertArgs),
    /// Serve the embedded ComfyUI-compatible simulator.
    Sim(sim::SimArgs),
    /// A run's ok outputs as a Hugging Face imagefolder/audiofolder or WebDataset shards.
    Export(export::ExportArgs),
    /// Shard folders into one output folder.
    Merge(merge::MergeArgs),
    /// Counts by status, failures, and what is left; exit 0 when all ok.
    Status(status::StatusArgs),
    /// Compare two output folders job by job (pixels, text, bytes) and their environments.
    Compare(compare::CompareArgs),
    /// Write DIR/report/: a gallery and X/Y grid page of a run, opened from disk (index.html and its data).
    Report(report::ReportArgs),
    /// Draw a labelled grid image of a run (X × Y, optional pages).
    Grid(grid::GridArgs),
    /// Write a starter project (example manifests, workflows, inputs) into DIR.
    Init(init::InitArgs),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish).
    Completions(completions::CompletionsArgs),
    /// Print the man page (roff), or write every command's page (--dir).
    Man(completions::ManArgs),
    /// Measure speed and memory (figures for the project's notes).
    #[command(hide = true)]
    Bench(bench::BenchArgs),
}

/// Parses a command line as `main` would, without running it: tests use it
/// to keep the documented examples (`examples/ci/`) parseable.
pub fn parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    Cli::try_parse_from(args)
}

/// Parses argv, runs the command and maps the result to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.global);
    execute(cli)
}

/// Runs a parsed command line ([`parse_args`]) as `main` does and maps the
/// result to an exit code: tests measuring the runner's own memory run it
/// in their process this way.
pub fn execute(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Plan(args) => plan::execute(args, &cli.global),
        Command::Run(args) => run::execute(args, &cli.global),
        Command::Check(args) => check::execute(args, &cli.global),
        Command::Rerun(args) => rerun::execute(args, &cli.global),
        Command::Convert(args) => convert::execute(args, &cli.global),
        Command::Sim(args) => sim::execute(args, &cli.global),
        Command::Export(args) => export::execute(args, &cli.global),
        Command::Merge(args) => merge::execute(args, &cli.global),
        Command::Status(args) => status::execute(args, &cli.global),
        Command::Compare(args) => compare::execute(args, &cli.global),
        Command::Report(args) => report::execute(args, &cli.global),
        Command::Grid(args) => grid::execute(args, &cli.global),
        Command::Init(args) => init::execute(args, &cli.global),
        Command::Completions(args) => completions::completions(args, &cli.global),
        Command::Man(args) => completions::man(args, &cli.global),
        Command::Bench(args) => bench::execute(args, &cli.global),
    };
    match result {
        Ok(exit) => exit.into(),
        Err(error) => {
            eprint!("{}", error.render());
            error.exit.into()
        }
    }
}

fn init_tracing(global: &GlobalArgs) {
    use tracing_subscriber::filter::{EnvFilter, FilterExt, filter_fn};
    use tracing_subscriber::prelude::*;
    let default = match (global.quiet, global.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // tungstenite traces each websocket handshake request whole: its query
    // (a proxy's token) and every header (credentials). Never shown,
    // whatever RUST_LOG says; its other lines are.
    let secret = filter_fn(|meta| {
        !(*meta.level() == tracing::Level::TRACE
            && meta.target() == "tungstenite::handshake::client")
    });
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_filter(filter.and(secret));
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
