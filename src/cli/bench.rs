//! `comfy-batch bench` (hidden): speed and memory figures for the project's
//! notes. `bench plan --jobs N` plans a synthetic manifest (prompts × 100
//! seeds × 10 cfg values) and reports jobs expanded and patched per second
//! and the peak RSS.

use std::time::Instant;

use super::{CliError, Exit, GlobalArgs};
use crate::manifest::Manifest;
use crate::plan::Plan;

/// Arguments of `comfy-batch bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// What to measure.
    #[command(subcommand)]
    pub what: BenchCommand,
}

/// The benchmarks.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Expand and patch a synthetic manifest (no server).
    Plan(BenchPlanArgs),
    /// Run synthetic manifests against a simulator process: server busy
    /// share, per-job overhead and peak memory of `comfy-batch run`.
    Run(super::bench_run::BenchRunArgs),
    /// The HTML report of a synthetic 10,000-job run (cold and unchanged),
    /// its page size, and a 10 x 10 grid of 512 px images.
    Report(super::bench_report::BenchReportArgs),
}

/// Arguments of `comfy-batch bench plan`.
#[derive(Debug, clap::Args)]
pub struct BenchPlanArgs {
    /// About how many jobs to plan (rounded up to a multiple of 1,000).
    #[arg(long, default_value_t = 1_000_000)]
    pub jobs: u64,
}

/// Runs the command.
pub fn execute(args: BenchArgs, _global: &GlobalArgs) -> Result<Exit, CliError> {
    match args.what {
        BenchCommand::Plan(a) => bench_plan(&a),
        BenchCommand::Run(a) => super::bench_run::execute(a),
        BenchCommand::Report(a) => super::bench_report::execute(a),
    }
}

const WORKFLOW: &str = include_str!("../../workflows/t2i.json");

/// The synthetic manifest: `prompts` prompts × 10 cfg values × 100 seeds.
fn synthetic_manifest(prompts: u64) -> String {
    let mut text = String::from(
        "version: 1\njobs:\n  - name: bench\n    workflow: t2i\n    matrix:\n      prompt:\n",
    );
    for i in 0..prompts {
        text.push_str(&format!("        - \"a photo of subject number {i}\"\n"));
    }
    text.push_str("      cfg: [3, 3.5, 4, 4.5, 5, 5.5, 6, 6.5, 7, 7.5]\n");
    text.push_str("    seeds: {count: 100, base: 1}\n");
    text
}

fn bench_plan(args: &BenchPlanArgs) -> Result<Exit, CliError> {
    let io = |e: std::io::Error| CliError::from_error(Exit::Infrastructure, &e);
    let dir = tempfile::tempdir().map_err(io)?;
    std::fs::create_dir_all(dir.path().join("workflows")).map_err(io)?;
    std::fs::create_dir_all(dir.path().join("jobs")).map_err(io)?;
    std::fs::write(dir.path().join("workflows/t2i.json"), WORKFLOW).map_err(io)?;
    let prompts = args.jobs.div_ceil(1000).max(1);
    let path = dir.path().join("jobs/bench.yaml");
    std::fs::write(&path, synthetic_manifest(prompts)).map_err(io)?;

    let start = Instant::now();
    let manifest = Manifest::load(&path).map_err(|e| CliError::many(Exit::BadInput, e.lines()))?;
    let plan = Plan::new(&manifest).map_err(|e| CliError::many(Exit::BadInput, e.lines()))?;
    let planned = start.elapsed();
    let mut count = 0u64;
    let mut bytes = 0usize;
    for job in plan.jobs() {
        count += 1;
        bytes += job.prompt.0.len() + job.params.len();
    }
    let total = start.elapsed();
    let secs = total.as_secs_f64().max(1e-9);
    println!("bench plan: {prompts} prompts x 10 cfg x 100 seeds");
    println!("jobs:           {count} (plan.len() = {})", plan.len());
    println!("load + plan:    {:.3} s", planned.as_secs_f64());
    println!("expand + patch: {:.3} s", (total - planned).as_secs_f64());
    println!("total:          {secs:.3} s");
    println!("throughput:     {:.0} jobs/s", count as f64 / secs);
    println!(
        "peak rss:       {}",
        peak_rss().unwrap_or_else(|| "unknown".into())
    );
    std::hint::black_box(bytes);
    Ok(Exit::Ok)
}

/// `VmHWM` from `/proc/self/status` (Linux), e.g. `23456 kB`.
fn peak_rss() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(format!("{:.1} MB", kb / 1024.0))
}
