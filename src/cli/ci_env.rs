//! The CI's environment, read here at the edge and nowhere else: the
//! process's variables handed to [`crate::ci::env`], which says what they
//! mean (`--shard auto`, GitHub's job summary and annotations).

use std::path::{Path, PathBuf};

use crate::ci::CiOptions;
use crate::ci::env::ShardArg;
use crate::plan::Shard;

/// A variable of the process's environment.
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The CI outputs of a run: `--junit FILE`, and under GitHub Actions the
/// step summary and `::error` annotations. `log` is the run's `runs.csv`.
pub(crate) fn ci_options(junit: Option<PathBuf>, log: &Path) -> CiOptions {
    crate::ci::env::ci_options(junit, log, &var)
}

/// Resolves `--shard` against the process environment; for `auto`, says
/// on stderr which CI variables gave it.
pub(crate) fn resolve_shard(arg: Option<ShardArg>) -> Result<Option<Shard>, String> {
    let Some(arg) = arg else { return Ok(None) };
    let resolved = arg.resolve(&var).map_err(|e| format!("--shard {e}"))?;
    if let Some(source) = &resolved.source {
        eprintln!("--shard {arg}: {source}");
    }
    Ok(Some(resolved.shard))
}
