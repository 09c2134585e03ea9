//! `comfy-batch bench` (hidden): speed and memory figures for the project's
//! notes, every benchmark in this folder (`run`, `convert`, `report`,
//! `folder`), none among the commands. `bench plan --jobs N` plans a synthetic manifest (prompts × 100
//! seeds × 10 cfg values) and reports jobs expanded and patched per second
//! and the peak RSS; `--templates` plans N jobs from one template over a
//! wildcard file instead (`draw: all`, one seed); `--csv` times the rows of
//! `plan --format csv` (written to a sink) instead of patched prompts.

use std::time::Instant;

use super::{CliError, Exit, GlobalArgs};

mod compare;
mod convert;
mod folder;
mod report;
mod run;
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
    Run(run::BenchRunArgs),
    /// Convert a synthetic UI-format workflow (no server).
    Convert(convert::BenchConvertArgs),
    /// The HTML report of a synthetic 10,000-job run (cold and unchanged),
    /// its page size, and a 10 x 10 grid of 512 px images.
    Report(report::BenchReportArgs),
    /// The folder commands (status, export, merge, report) on a synthetic
    /// folder: peak RSS and time of each.
    Folder(folder::BenchFolderArgs),
    /// `compare` on two synthetic folders of 512 px images (10% and all
    /// drifted): peak RSS and time.
    Compare(compare::BenchCompareArgs),
}

/// Arguments of `comfy-batch bench plan`.
#[derive(Debug, clap::Args)]
pub struct BenchPlanArgs {
    /// About how many jobs to plan (rounded up to a multiple of 1,000).
    #[arg(long, default_value_t = 1_000_000)]
    pub jobs: u64,
    /// Plan the jobs from a template and a wildcard file.
    #[arg(long)]
    pub templates: bool,
    /// Time `plan --format csv` rows instead of patched prompts.
    #[arg(long)]
    pub csv: bool,
}

/// Runs the command.
pub fn execute(args: BenchArgs, _global: &GlobalArgs) -> Result<Exit, CliError> {
    match args.what {
        BenchCommand::Plan(a) => bench_plan(&a),
        BenchCommand::Run(a) => run::execute(a),
        BenchCommand::Convert(a) => convert::execute(a),
        BenchCommand::Report(a) => report::execute(a),
        BenchCommand::Folder(a) => folder::execute(a),
        BenchCommand::Compare(a) => compare::execute(a),
    }
}

const WORKFLOW: &str = include_str!("../../../workflows/t2i.json");

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

/// The template manifest: `subjects` wildcard entries × 10 × 10 × 10
/// variants, one seed.
fn template_manifest(subjects: u64) -> (String, String) {
    let words: String = (0..subjects)
        .map(|i| format!("subject number {i}\n"))
        .collect();
    let text = "version: 1\njobs:\n  - name: bench\n    workflow: t2i\n    templates:\n      prompt: \"a photo of a __subjects__, {red|orange|yellow|green|blue|indigo|violet|white|black|grey} light, {calm|stormy|misty|sunny|dark|bright|cold|warm|quiet|busy} mood, {oil|ink|pencil|photo|pastel|charcoal|fresco|mosaic|collage|vector} style\"\n    seeds: [1]\n".to_owned();
    (text, words)
}

fn bench_plan(args: &BenchPlanArgs) -> Result<Exit, CliError> {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("workflows"))?;
    std::fs::create_dir_all(dir.path().join("jobs"))?;
    std::fs::write(dir.path().join("workflows/t2i.json"), WORKFLOW)?;
    let prompts = args.jobs.div_ceil(1000).max(1);
    let path = dir.path().join("jobs/bench.yaml");
    if args.templates {
        let (text, words) = template_manifest(prompts);
        std::fs::create_dir_all(dir.path().join("jobs/wildcards"))?;
        std::fs::write(dir.path().join("jobs/wildcards/subjects.txt"), words)?;
        std::fs::write(&path, text)?;
    } else {
        std::fs::write(&path, synthetic_manifest(prompts))?;
    }

    let start = Instant::now();
    let manifest = Manifest::load(&path).map_err(|e| CliError::many(Exit::BadInput, e.lines()))?;
    let plan = Plan::new(&manifest).map_err(|e| CliError::many(Exit::BadInput, e.lines()))?;
    let planned = start.elapsed();
    let mut count = 0u64;
    let mut bytes = 0usize;
    if args.csv {
        let mut sink = Counting(0);
        super::plan::write_csv(&plan, &mut sink)?;
        count = plan.len() as u64;
        bytes = sink.0;
    } else {
        for job in plan.jobs() {
            count += 1;
            bytes += job.prompt.0.len() + job.params.len();
        }
    }
    let total = start.elapsed();
    let secs = total.as_secs_f64().max(1e-9);
    if args.templates {
        println!(
            "bench plan: a template of {prompts} wildcard entries x 1000 variants, 1 seed{}",
            if args.csv { " (csv rows)" } else { "" }
        );
    } else {
        println!(
            "bench plan: {prompts} prompts x 10 cfg x 100 seeds{}",
            if args.csv { " (csv rows)" } else { "" }
        );
    }
    println!("jobs:           {count} (plan.len() = {})", plan.len());
    println!("load + plan:    {:.3} s", planned.as_secs_f64());
    println!("expand + patch: {:.3} s", (total - planned).as_secs_f64());
    println!("total:          {secs:.3} s");
    println!("throughput:     {:.0} jobs/s", count as f64 / secs);
    if let Some(cpu) = cpu_seconds() {
        // On a shared machine the wall clock includes waiting for a core.
        println!(
            "cpu time:       {cpu:.3} s ({:.0} jobs per cpu-second)",
            count as f64 / cpu.max(1e-9)
        );
    }
    println!(
        "peak rss:       {}",
        peak_rss().unwrap_or_else(|| "unknown".into())
    );
    std::hint::black_box(bytes);
    Ok(Exit::Ok)
}

/// A writer that only counts bytes (the CSV timing excludes the pipe).
struct Counting(usize);

impl std::io::Write for Counting {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// User + system CPU time of this process so far.
#[cfg(unix)]
fn cpu_seconds() -> Option<f64> {
    // SAFETY: getrusage fills the struct we pass; zeroed is a valid start.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage owned by this frame.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return None;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some(secs(usage.ru_utime) + secs(usage.ru_stime))
}

/// CPU time is not measured off Unix.
#[cfg(not(unix))]
fn cpu_seconds() -> Option<f64> {
    None
}

/// `VmHWM` from `/proc/self/status` (Linux), e.g. `23456 kB`.
fn peak_rss() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(format!("{:.1} MB", kb / 1024.0))
}
