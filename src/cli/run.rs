//! `comfy-batch run`: placeholder until its issue lands.

use super::{CliError, Exit, GlobalArgs};

/// Arguments of `comfy-batch run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {}

/// Runs the command.
pub fn execute(_args: RunArgs, _global: &GlobalArgs) -> Result<Exit, CliError> {
    Err(CliError::many(
        Exit::BadInput,
        vec!["not implemented yet".into()],
    ))
}
