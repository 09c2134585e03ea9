//! `comfy-batch sim`: placeholder until its issue lands.

use super::{CliError, Exit, GlobalArgs};

/// Arguments of `comfy-batch sim`.
#[derive(Debug, clap::Args)]
pub struct SimArgs {}

/// Runs the command.
pub fn execute(_args: SimArgs, _global: &GlobalArgs) -> Result<Exit, CliError> {
    Err(CliError::many(
        Exit::BadInput,
        vec!["not implemented yet".into()],
    ))
}
