//! `status`'s account of a run folder: counts by status (the newest row of
//! each job counts), the jobs not ok with their errors, ok jobs whose files
//! are gone, the environment's snapshots with the rows run under each, and,
//! given a manifest's plan, how many of its jobs are still to run. Rows are
//! streamed: per job only its key is kept, and only when a plan is given.
//! Writes text to the writer it is given; knows nothing of argv or stderr.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use super::{FolderError, RunFolder};
use crate::manifest::Manifest;
use crate::plan::{Plan, PlanErrors, Shard};

/// The status order in the counts line.
const ORDER: [&str; 5] = ["ok", "failed", "rejected", "timeout", "interrupted"];

/// Why a status could not be given.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The folder or its log could not be read.
    #[error(transparent)]
    Folder(#[from] FolderError),
    /// Writing the status failed.
    #[error("writing the status: {0}")]
    Write(#[from] std::io::Error),
}

/// A manifest's plan to count the jobs still to run against.
pub struct Planned<'a> {
    /// The manifest, as the user named it.
    pub manifest: &'a Path,
    /// Its plan ([`plan_for`]).
    pub plan: &'a Plan,
    /// Count only this shard's jobs.
    pub shard: Option<Shard>,
}

/// The plan of `manifest` as the run in `folder` drew it (the fresh-seed
/// key its `run.json` keeps), and a warning when `manifest` (named
/// `manifest_shown`) is not the file the run recorded: the jobs still to run
/// are then counted from another plan.
pub fn plan_for(
    folder: &RunFolder,
    shown: &Path,
    manifest: &Manifest,
) -> Result<(Plan, Option<String>), PlanErrors> {
    let warning = match (folder.manifest_sha256(), manifest.sha256()) {
        (Some(run), Some(now)) if run != now => Some(format!(
            "{} differs from the manifest {} was run from ({} records another sha256); jobs still to run are counted from {}",
            manifest.path.display(),
            shown.display(),
            shown.join(super::runinfo::FILE).display(),
            manifest.path.display()
        )),
        _ => None,
    };
    let info = super::runinfo::RunInfo::read(folder.root());
    let plan = match info.random_key {
        Some(key) => Plan::with_random_key(manifest, key),
        None => Plan::new(manifest),
    }?;
    Ok((plan, warning))
}

/// Writes the status of `folder` (named `shown`) to `out`; a problem that
/// does not stop it (an environment record that does not parse) goes to
/// `warn`. Returns whether every job is ok, has its files, and (with
/// `planned`) none is left to run.
pub fn write_status(
    folder: &RunFolder,
    shown: &Path,
    planned: Option<Planned<'_>>,
    out: &mut dyn Write,
    warn: &mut dyn FnMut(String),
) -> Result<bool, StatusError> {
    let mut counts: Vec<(String, usize)> = ORDER.iter().map(|s| (s.to_string(), 0)).collect();
    let mut done: HashSet<u128> = HashSet::new();
    let (mut jobs, mut ok, mut present) = (0usize, 0usize, 0usize);
    for row in folder.newest()? {
        let row = row.map_err(FolderError::from)?;
        jobs += 1;
        let status = folder.get(&row, "status");
        match counts.iter_mut().find(|(s, _)| s == status) {
            Some((_, n)) => *n += 1,
            None => counts.push((status.to_string(), 1)),
        }
        if status == "ok" {
            ok += 1;
            if folder.files(&row).all(|f| folder.file(f).is_ok()) {
                present += 1;
                if planned.is_some() {
                    done.insert(crate::runlog::job_key(folder.get(&row, "job_id")));
                }
            }
        }
    }
    let parts: Vec<String> = counts
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(s, n)| format!("{n} {s}"))
        .collect();
    writeln!(
        out,
        "{}: {} job(s){}{}",
        shown.display(),
        jobs,
        if parts.is_empty() {
            String::new()
        } else {
            format!(": {}", parts.join(", "))
        },
        if folder.torn_tail() || super::log_in_use(folder.root()) {
            " (a run is still writing it)"
        } else {
            ""
        }
    )?;
    let not_ok = jobs - ok;
    if not_ok > 0 {
        // A second pass lists them: nothing of theirs was kept.
        for row in folder.newest()? {
            let row = row.map_err(FolderError::from)?;
            if folder.get(&row, "status") == "ok" {
                continue;
            }
            writeln!(
                out,
                "  {:<11} {:<16} {}  {}",
                folder.get(&row, "status"),
                folder.get(&row, "job"),
                folder.get(&row, "job_id"),
                folder.get(&row, "error")
            )?;
        }
    }
    let missing = ok - present;
    if missing > 0 {
        writeln!(
            out,
            "  {missing} ok job(s) have output files missing (a resumed run redoes them)"
        )?;
    }
    environment(folder, out, warn)?;
    let mut left = 0;
    if let Some(Planned {
        manifest,
        plan,
        shard,
    }) = planned
    {
        let mut jobs = 0;
        for job in plan.jobs() {
            if shard.is_none_or(|s| s.contains(job.index)) {
                jobs += 1;
                if !done.contains(&crate::runlog::job_key(job.id.as_str())) {
                    left += 1;
                }
            }
        }
        writeln!(
            out,
            "{}{}: {jobs} job(s), {left} still to run",
            manifest.display(),
            shard.map(|s| format!(" (shard {s})")).unwrap_or_default()
        )?;
    }
    Ok(jobs > 0 && not_ok == 0 && missing == 0 && left == 0)
}

/// The folder's environment snapshots, each with the rows that ran under
/// it; nothing for a folder without a record.
fn environment(
    folder: &RunFolder,
    out: &mut dyn Write,
    warn: &mut dyn FnMut(String),
) -> std::io::Result<()> {
    use crate::environment::{Environment, FILE};
    let path = folder.root().join(FILE);
    let Ok(mut file) = folder.file(FILE) else {
        return Ok(());
    };
    let env = match file.read_all().map(|b| Environment::parse(&b, &path)) {
        Ok(Ok(env)) => env,
        Ok(Err(e)) => {
            warn(e.to_string());
            return Ok(());
        }
        Err(e) => {
            warn(format!("{}: {e}", path.display()));
            return Ok(());
        }
    };
    // Every row counts (each attempt ran under a snapshot), streamed.
    let mut rows = vec![0usize; env.snapshots.len()];
    let Ok(all) = folder.rows() else {
        return Ok(());
    };
    for row in all.flatten() {
        let (server, started) = (folder.get(&row, "server"), folder.get(&row, "started_at"));
        if let Some((i, _)) = env.in_force(server, started) {
            rows[i] += 1;
        }
    }
    writeln!(out, "environment ({}):", env.snapshots.len())?;
    for (i, s) in env.snapshots.iter().enumerate() {
        writeln!(
            out,
            "  #{} {} since {}: {} ({} row{})",
            i + 1,
            crate::text::one_line(&s.server),
            s.first_seen,
            s.values.line(),
            rows[i],
            if rows[i] == 1 { "" } else { "s" }
        )?;
    }
    Ok(())
}
