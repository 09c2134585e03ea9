//! `comfy-batch status DIR [--manifest M]`: flags lowered to
//! [`crate::folder::status`], which writes the account. Exit 0 when every
//! job is ok (and, with the manifest, none is left), 1 otherwise: a CI gate.

use std::io::Write as _;
use std::path::PathBuf;

use super::{CliError, Exit, GlobalArgs};
use crate::ci::env::ShardArg;
use crate::folder::{RunFolder, status};
use crate::manifest::Manifest;

/// Arguments of `comfy-batch status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The run's output folder.
    pub dir: PathBuf,
    /// The manifest it was run from: also count its jobs still to run.
    #[arg(long, value_name = "M")]
    pub manifest: Option<PathBuf>,
    /// With --manifest: count only this shard's jobs (K/N, auto, auto/N).
    #[arg(long, value_name = "K/N", requires = "manifest")]
    pub shard: Option<ShardArg>,
}

/// Runs the command.
pub fn execute(args: StatusArgs, _global: &GlobalArgs) -> Result<Exit, CliError> {
    let folder = RunFolder::open(&args.dir)?;
    let shard = super::ci_env::resolve_shard(args.shard).map_err(CliError::usage)?;
    let manifest = args.manifest.as_deref().map(Manifest::load).transpose()?;
    let plan = match &manifest {
        Some(manifest) => {
            let (plan, warning) = status::plan_for(&folder, &args.dir, manifest)?;
            if let Some(warning) = warning {
                eprintln!("warning: {warning}");
            }
            Some(plan)
        }
        None => None,
    };
    let planned = plan.as_ref().zip(args.manifest.as_deref());
    let planned = planned.map(|(plan, manifest)| status::Planned {
        manifest,
        plan,
        shard,
    });
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut warn = |w: String| eprintln!("warning: {w}");
    let all_ok = status::write_status(&folder, &args.dir, planned, &mut out, &mut warn)
        .and_then(|ok| Ok(out.flush().map(|()| ok)?));
    // A closed pipe (`status | head`) ends it without a line.
    let all_ok = match all_ok {
        Err(status::StatusError::Write(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => false,
        other => other?,
    };
    Ok(if all_ok { Exit::Ok } else { Exit::JobsFailed })
}
