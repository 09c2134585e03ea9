//! `comfy-batch bench`: placeholder until its issue lands.

use super::{CliError, Exit, GlobalArgs};

/// Arguments of `comfy-batch bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {}

/// Runs the command.
pub fn execute(_args: BenchArgs, _global: &GlobalArgs) -> Result<Exit, CliError> {
    Err(CliError::many(
        Exit::BadInput,
        vec!["not implemented yet".into()],
    ))
}
