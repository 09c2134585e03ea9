//! `comfy-batch plan`: placeholder until its issue lands.

use super::{CliError, Exit, GlobalArgs};

/// Arguments of `comfy-batch plan`.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {}

/// Runs the command.
pub fn execute(_args: PlanArgs, _global: &GlobalArgs) -> Result<Exit, CliError> {
    Err(CliError::many(
        Exit::BadInput,
        vec!["not implemented yet".into()],
    ))
}
