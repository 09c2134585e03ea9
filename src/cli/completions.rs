//! `comfy-batch completions SHELL` and `comfy-batch man [--dir DIR]`: the
//! command line's own definition, printed (or, for every man page, written)
//! by clap's generators (`clap_complete`, `clap_mangen`) so they cannot
//! disagree with it. They need the clap definition, which only `cli` has.

use std::path::PathBuf;

use clap::CommandFactory;

use super::{Cli, CliError, Exit, GlobalArgs};

/// Arguments of `comfy-batch completions`.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell the script is for.
    pub shell: clap_complete::Shell,
}

/// Prints the completion script for the shell.
pub fn completions(args: CompletionsArgs, _global: &GlobalArgs) -> Result<Exit, CliError> {
    let mut command = without_hidden_commands(Cli::command());
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut command, "comfy-batch", &mut out);
    print(&out)
}

/// The command line without its hidden commands (`bench`), which
/// `clap_complete` would offer (`clap_mangen` already leaves them out).
/// clap cannot remove a subcommand, so the top level is rebuilt from the
/// visible parts.
fn without_hidden_commands(command: clap::Command) -> clap::Command {
    let mut visible = clap::Command::new("comfy-batch")
        .version(env!("COMFY_BATCH_VERSION"))
        .args(command.get_arguments().cloned())
        .subcommands(
            command
                .get_subcommands()
                .filter(|c| !c.is_hide_set())
                .cloned(),
        );
    if let Some(about) = command.get_about() {
        visible = visible.about(about.clone());
    }
    visible
}

/// Arguments of `comfy-batch man`.
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write every page (comfy-batch.1 and comfy-batch-COMMAND.1, which the
    /// main page refers to) into this folder instead of printing the main
    /// page.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Prints the man page (roff), or writes every command's page.
pub fn man(args: ManArgs, global: &GlobalArgs) -> Result<Exit, CliError> {
    if let Some(dir) = args.dir {
        let failed = |e: std::io::Error| {
            let message = format!("cannot write man pages into {}: {e}", dir.display());
            std::io::Error::new(e.kind(), message)
        };
        std::fs::create_dir_all(&dir).map_err(failed)?;
        clap_mangen::generate_to(Cli::command(), &dir).map_err(failed)?;
        if !global.quiet {
            // The pages generate_to writes: the top level's and each
            // visible command's (none has visible commands of its own).
            let command = Cli::command();
            let pages = std::iter::once("comfy-batch.1".to_string()).chain(
                command
                    .get_subcommands()
                    .filter(|c| !c.is_hide_set())
                    .map(|c| format!("comfy-batch-{}.1", c.get_name())),
            );
            for page in pages {
                println!("wrote {}", dir.join(page).display());
            }
        }
        return Ok(Exit::Ok);
    }
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut out)?;
    print(&out)
}

/// Writes to stdout (a closed pipe is fine: `plan`'s rule).
fn print(bytes: &[u8]) -> Result<Exit, CliError> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    super::plan::stdout_written(stdout.write_all(bytes).and_then(|()| stdout.flush()))
}
