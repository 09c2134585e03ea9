//! `comfy-batch status DIR [--manifest M]`: counts by status (the newest row
//! of each job counts), the jobs not ok with their errors, and with the
//! manifest how many of its jobs are still to run. Exit 0 when every job is
//! ok (and, with the manifest, none is left), 1 otherwise: a CI gate. The
//! environment's snapshots are listed with the rows run under each.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::PathBuf;

use super::{CliError, Exit, GlobalArgs};
use crate::ci::env::ShardArg;
use crate::folder::RunFolder;
use crate::manifest::Manifest;
use crate::plan::Plan;

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

/// The status order in the counts line.
const ORDER: [&str; 5] = ["ok", "failed", "rejected", "timeout", "interrupted"];

/// The folder's environment snapshots, each with the rows that ran under
/// it; nothing for a folder without a record.
fn environment(folder: &RunFolder, out: &mut String) {
    use crate::environment::{Environment, FILE};
    let path = folder.root().join(FILE);
    let Ok(mut file) = folder.file(FILE) else {
        return;
    };
    let env = match file.read_all().map(|b| Environment::parse(&b, &path)) {
        Ok(Ok(env)) => env,
        Ok(Err(e)) => return eprintln!("warning: {e}"),
        Err(e) => return eprintln!("warning: {}: {e}", path.display()),
    };
    // Every row counts (each attempt ran under a snapshot), streamed.
    let mut rows = vec![0usize; env.snapshots.len()];
    let Ok(all) = folder.rows() else {
        return;
    };
    for row in all.flatten() {
        let (server, started) = (folder.get(&row, "server"), folder.get(&row, "started_at"));
        if let Some((i, _)) = env.in_force(server, started) {
            rows[i] += 1;
        }
    }
    let _ = writeln!(out, "environment ({}):", env.snapshots.len());
    for (i, s) in env.snapshots.iter().enumerate() {
        let _ = writeln!(
            out,
            "  #{} {} since {}: {} ({} row{})",
            i + 1,
            crate::text::one_line(&s.server),
            s.first_seen,
            s.values.line(),
            rows[i],
            if rows[i] == 1 { "" } else { "s" }
        );
    }
}

/// Runs the command.
pub fn execute(args: StatusArgs, _global: &GlobalArgs) -> Result<Exit, CliError> {
    let folder = RunFolder::open(&args.dir)?;
    let shard = super::ci_env::resolve_shard(args.shard).map_err(CliError::usage)?;
    // Counted as the rows stream by: per job only its id when done (for
    // --manifest), so the memory does not grow with the rows' text.
    let mut counts: Vec<(String, usize)> = ORDER.iter().map(|s| (s.to_string(), 0)).collect();
    let mut done: HashSet<u128> = HashSet::new();
    let (mut jobs, mut ok, mut present) = (0usize, 0usize, 0usize);
    for row in folder.newest()? {
        let row = row?;
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
                if args.manifest.is_some() {
                    done.insert(crate::runlog::job_key(folder.get(&row, "job_id")));
                }
            }
        }
    }
    let mut out = String::new();
    let parts: Vec<String> = counts
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(s, n)| format!("{n} {s}"))
        .collect();
    let _ = writeln!(
        out,
        "{}: {} job(s){}{}",
        args.dir.display(),
        jobs,
        if parts.is_empty() {
            String::new()
        } else {
            format!(": {}", parts.join(", "))
        },
        if folder.torn_tail() || crate::folder::log_in_use(&args.dir) {
            " (a run is still writing it)"
        } else {
            ""
        }
    );
    print!("{out}");
    out.clear();
    let not_ok = jobs - ok;
    if not_ok > 0 {
        // A second pass lists them: nothing of theirs was kept.
        for row in folder.newest()? {
            let row = row?;
            if folder.get(&row, "status") == "ok" {
                continue;
            }
            println!(
                "  {:<11} {:<16} {}  {}",
                folder.get(&row, "status"),
                folder.get(&row, "job"),
                folder.get(&row, "job_id"),
                folder.get(&row, "error")
            );
        }
    }
    let missing = ok - present;
    if missing > 0 {
        let _ = writeln!(
            out,
            "  {missing} ok job(s) have output files missing (a resumed run redoes them)"
        );
    }
    environment(&folder, &mut out);
    let mut left = 0;
    if let Some(path) = &args.manifest {
        let manifest = Manifest::load(path)?;
        // Another manifest (or this one edited since) plans other jobs:
        // the count below is then of its plan, not the run's.
        if let (Some(run), Some(now)) = (folder.manifest_sha256(), manifest.sha256())
            && run != now
        {
            eprintln!(
                "warning: {} differs from the manifest {} was run from ({} records another sha256); jobs still to run are counted from {}",
                path.display(),
                args.dir.display(),
                args.dir.join(crate::folder::runinfo::FILE).display(),
                path.display()
            );
        }
        let info = crate::folder::runinfo::RunInfo::read(&args.dir);
        let plan = match info.random_key {
            Some(key) => Plan::with_random_key(&manifest, key),
            None => Plan::new(&manifest),
        }?;
        let mut planned = 0;
        for job in plan.jobs() {
            if shard.is_none_or(|s| s.contains(job.index)) {
                planned += 1;
                if !done.contains(&crate::runlog::job_key(job.id.as_str())) {
                    left += 1;
                }
            }
        }
        let _ = writeln!(
            out,
            "{}{}: {planned} job(s), {left} still to run",
            path.display(),
            shard.map(|s| format!(" (shard {s})")).unwrap_or_default()
        );
    }
    print!("{out}");
    let all_ok = jobs > 0 && not_ok == 0 && missing == 0 && left == 0;
    Ok(if all_ok { Exit::Ok } else { Exit::JobsFailed })
}
