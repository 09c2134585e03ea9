//! `comfy-batch init [DIR]`: lowers the folder argument to
//! [`crate::scaffold::write_starter`] and lists what it wrote.

use std::path::PathBuf;

use super::{CliError, Exit, GlobalArgs};

/// Arguments of `comfy-batch init`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// The project folder (made if missing).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
}

/// Runs the command.
pub fn execute(args: InitArgs, global: &GlobalArgs) -> Result<Exit, CliError> {
    let written = crate::scaffold::write_starter(&args.dir).map_err(|e| {
        let exit = match e {
            crate::scaffold::ScaffoldError::Exists(_)
            | crate::scaffold::ScaffoldError::NotAFolder(_) => Exit::BadInput,
            crate::scaffold::ScaffoldError::Io { .. } => Exit::Infrastructure,
        };
        CliError::from_error(exit, &e)
    })?;
    if !global.quiet {
        for path in &written {
            println!("wrote {}", path.display());
        }
        let manifest = args.dir.join("jobs").join("fox-sweep.yaml");
        println!("next: comfy-batch run {} --sim", manifest.display());
    }
    Ok(Exit::Ok)
}
