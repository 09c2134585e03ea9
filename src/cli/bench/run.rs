//! `comfy-batch bench run`: the runner's speed and memory, measured the way
//! a user runs it: a simulator in its own process, `comfy-batch run` in
//! another, and the kernel's accounting (wait4) for the runner's CPU time
//! and peak RSS. Figures go to the project's notes; no test asserts them.
//!
//! Phases: server busy share (sampler jobs), per-job overhead and memory
//! (instant jobs), the wall time of a one-job run (median of several; also
//! against a server whose whole `/object_info` is slow, as one with many
//! node packs), and one runner in front of many simulators (served from
//! this process) for the runner's memory per server. `--runner` measures
//! another build's `comfy-batch` against this build's simulators.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ci::Interval;
use crate::cli::{CliError, Exit};

/// Arguments of `bench run`.
#[derive(Debug, clap::Args)]
pub struct BenchRunArgs {
    /// Jobs for the server-busy-share figure (20 sampler steps each).
    #[arg(long, default_value_t = 200)]
    pub busy_jobs: usize,
    /// Milliseconds per sampler step in the busy-share figure.
    #[arg(long, default_value_t = 5)]
    pub step_ms: u64,
    /// Instant jobs for the overhead figure.
    #[arg(long, default_value_t = 2000)]
    pub overhead_jobs: usize,
    /// Instant jobs for the memory figure.
    #[arg(long, default_value_t = 10000)]
    pub memory_jobs: usize,
    /// Prompts in flight per server.
    #[arg(long, default_value_t = 2)]
    pub concurrency: u32,
    /// The busy phase's jobs go N to a prompt (`run --pack N`): its whole
    /// command's time shows what a latent batch gains on the simulator.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub pack: Option<u32>,
    /// One-job runs for the one-job wall figure (the median is reported).
    #[arg(long, default_value_t = 9)]
    pub one_job_runs: usize,
    /// Delay of the whole `/object_info` in the slow-catalogue figure.
    #[arg(long, default_value_t = 500)]
    pub slow_catalogue_ms: u64,
    /// Simulators behind one runner in the many-servers memory figure
    /// (instant jobs, simulators served by one other process).
    #[arg(long, default_value_t = 32)]
    pub rss_servers: usize,
    /// Simulators (each its own process, 20 steps at `--step-ms`) sharing
    /// one runner: with N > 1 only this figure runs, each server's busy
    /// share and the runner's CPU per job.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub servers: u32,
    /// Pass `--no-check` to the `--servers` run (the preflight fetches every
    /// server's catalogue entries for the plan's classes).
    #[arg(long)]
    pub no_check: bool,
    /// Pass `--no-report` to the `--servers` run: the runner alone, without
    /// the HTML report's thumbnails and pages.
    #[arg(long)]
    pub no_report: bool,
    /// The `comfy-batch` binary measured as the runner (default: this one).
    #[arg(long)]
    pub runner: Option<PathBuf>,
    /// Only these phases (repeatable): busy, overhead, memory, one-job,
    /// durability, servers.
    #[arg(long = "only", value_name = "PHASE")]
    pub only: Vec<String>,
    /// Internal: serve this many simulators, print their URLs, run until
    /// killed (the many-servers phase keeps them out of the measured
    /// process: a child's peak RSS counts its parent's memory at spawn).
    #[arg(long, hide = true)]
    pub serve_sims: Option<usize>,
}

pub(super) struct SimProcess {
    child: Child,
    pub(super) url: String,
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn infra(message: String) -> CliError {
    CliError::many(Exit::Infrastructure, vec![message])
}

pub(super) fn start_sim(
    exe: &Path,
    step_ms: u64,
    dir: &Path,
    extra: &[&str],
) -> Result<SimProcess, CliError> {
    use std::io::BufRead;
    let mut child = Command::new(exe)
        .args(["sim", "--listen", "127.0.0.1:0", "--step-ms"])
        .arg(step_ms.to_string())
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| infra(format!("starting the simulator: {e}")))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| infra(format!("reading the simulator's address: {e}")))?;
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .ok_or_else(|| infra(format!("unexpected simulator output: {line}")))?
        .to_string();
    Ok(SimProcess { child, url })
}

/// What the kernel measured of a finished child (also `bench folder`'s).
pub(super) struct Measured {
    pub(super) wall: Duration,
    pub(super) cpu: Duration,
    pub(super) max_rss_kib: i64,
    pub(super) code: i32,
}

/// Elsewhere no child's CPU time and peak memory come with its exit: the
/// benchmark says so instead of reporting figures it cannot measure.
#[cfg(not(unix))]
pub(super) fn run_measured(_command: Command) -> Result<Measured, CliError> {
    Err(infra(
        "bench run measures the runner's CPU and peak memory with wait4, which only Unix has"
            .into(),
    ))
}

#[cfg(unix)]
pub(super) fn run_measured(mut command: Command) -> Result<Measured, CliError> {
    let started = Instant::now();
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| infra(format!("starting comfy-batch: {e}")))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills in; pid is our child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if waited != pid {
        return Err(infra("wait4 failed".into()));
    }
    let wall = started.elapsed();
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    Ok(Measured {
        wall,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        max_rss_kib: usage.ru_maxrss,
        code: if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -1
        },
    })
}

const WORKFLOW: &str = r#"{
  "3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 20, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
  "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
  "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
  "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a fox", "clip": ["4", 1]}},
  "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
  "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
  "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "ComfyUI"}}
}"#;

fn write_manifest(dir: &Path, name: &str, jobs: usize, steps: u32) -> Result<PathBuf, CliError> {
    let io = |e: std::io::Error| infra(format!("{}: {e}", dir.display()));
    std::fs::write(dir.join("bench.json"), WORKFLOW).map_err(io)?;
    let path = dir.join(format!("{name}.yaml"));
    let yaml = format!(
        "version: 1\nworkflows:\n  bench: bench.json\njobs:\n  - name: {name}\n    workflow: bench\n    set:\n      steps: {steps}\n    seeds: {{range: [1, {jobs}]}}\n"
    );
    std::fs::write(&path, yaml).map_err(io)?;
    Ok(path)
}

/// The binaries: `sim` serves, `runner` is measured; the simulators keep
/// their outputs under `sim_files`.
struct Exes<'a> {
    sim: &'a Path,
    runner: &'a Path,
    sim_files: &'a Path,
}

/// Where the simulators keep their outputs: a file system of their own
/// where there is one (Linux's `/dev/shm`). They stand in for GPU
/// machines; on the runner's disk, its `syncfs` would write their files
/// back too and charge the runner for it.
fn sim_files_dir() -> Result<tempfile::TempDir, CliError> {
    let shm = Path::new("/dev/shm");
    if cfg!(target_os = "linux")
        && shm.is_dir()
        && let Ok(dir) = tempfile::Builder::new()
            .prefix("comfy-batch-bench-")
            .tempdir_in(shm)
    {
        return Ok(dir);
    }
    tempfile::tempdir().map_err(|e| infra(e.to_string()))
}

/// `comfy-batch run MANIFEST --server URL… -q` into `out`.
fn run_command(
    runner: &Path,
    manifest: &Path,
    urls: &[String],
    concurrency: u32,
    out: &Path,
    flags: &[&str],
) -> Command {
    let mut command = Command::new(runner);
    command.arg("run").arg(manifest);
    for url in urls {
        command.args(["--server", url]);
    }
    command
        .arg("--concurrency")
        .arg(concurrency.to_string())
        .arg("--output")
        .arg(out)
        .arg("-q");
    command.args(flags);
    command
}

#[expect(clippy::too_many_arguments, reason = "one call per phase, all named")]
fn run_phase(
    exes: &Exes<'_>,
    work: &Path,
    name: &str,
    jobs: usize,
    steps: u32,
    step_ms: u64,
    concurrency: u32,
    sim_flags: &[&str],
) -> Result<Measured, CliError> {
    let sims = Sims {
        count: 1,
        step_ms,
        flags: sim_flags,
    };
    let (measured, ()) = run_phase_on(
        exes,
        work,
        name,
        jobs,
        steps,
        concurrency,
        &sims,
        &[],
        |_| Ok(()),
    )?;
    Ok(measured)
}

/// The simulator processes of one phase.
struct Sims<'a> {
    count: u32,
    step_ms: u64,
    flags: &'a [&'a str],
}

/// [`run_phase`] with several simulator processes sharing the jobs;
/// `after` reads the simulators (by URL) before they stop.
#[expect(clippy::too_many_arguments, reason = "one call per phase, all named")]
fn run_phase_on<R>(
    exes: &Exes<'_>,
    work: &Path,
    name: &str,
    jobs: usize,
    steps: u32,
    concurrency: u32,
    sims: &Sims<'_>,
    flags: &[&str],
    after: impl FnOnce(&[String]) -> Result<R, CliError>,
) -> Result<(Measured, R), CliError> {
    let dir = work.join(name);
    std::fs::create_dir_all(&dir).map_err(|e| infra(e.to_string()))?;
    let mut running = Vec::new();
    for i in 0..sims.count.max(1) {
        let sim_dir = exes.sim_files.join(name).join(format!("sim{i}"));
        std::fs::create_dir_all(&sim_dir).map_err(|e| infra(e.to_string()))?;
        running.push(start_sim(exes.sim, sims.step_ms, &sim_dir, sims.flags)?);
    }
    let manifest = write_manifest(&dir, name, jobs, steps)?;
    let out = dir.join("out");
    let urls: Vec<String> = running.iter().map(|s| s.url.clone()).collect();
    let command = run_command(exes.runner, &manifest, &urls, concurrency, &out, flags);
    let measured = run_measured(command)?;
    if measured.code != 0 {
        return Err(infra(format!(
            "{name}: comfy-batch run exited {}",
            measured.code
        )));
    }
    let read = after(&urls)?;
    drop(running);
    Ok((measured, read))
}

/// The median of some durations (the middle one; the upper for an even
/// count).
fn median(mut walls: Vec<Duration>) -> Duration {
    walls.sort();
    walls.get(walls.len() / 2).copied().unwrap_or_default()
}

/// One-job runs against one simulator with `sim_flags`: the median and
/// the fastest wall (on a loaded machine the fastest shows the cost).
fn one_job(
    exes: &Exes<'_>,
    work: &Path,
    name: &str,
    runs: usize,
    sim_flags: &[&str],
) -> Result<(Duration, Duration, Measured), CliError> {
    let mut walls = Vec::new();
    let mut last = None;
    for i in 0..runs.max(1) {
        let m = run_phase(exes, work, &format!("{name}-{i}"), 1, 1, 0, 2, sim_flags)?;
        walls.push(m.wall);
        last = Some(m);
    }
    let fastest = walls.iter().min().copied().unwrap_or_default();
    Ok((median(walls), fastest, last.expect("at least one run")))
}

/// `--serve-sims N`: N simulators in this process, one `listening on URL`
/// line each, until killed.
fn serve_sims(count: usize) -> Result<Exit, CliError> {
    use std::io::Write as _;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| infra(e.to_string()))?;
    runtime.block_on(async {
        let mut sims = Vec::new();
        let mut out = std::io::stdout().lock();
        for i in 0..count.max(1) {
            let config = crate::sim::SimConfig {
                step_ms: 0,
                ..crate::sim::SimConfig::default()
            };
            let addr = "127.0.0.1:0".parse().expect("a valid socket address");
            let sim = crate::sim::Sim::start(config, addr)
                .await
                .map_err(|e| infra(format!("starting simulator {i}: {e}")))?;
            let _ = writeln!(out, "listening on {}", sim.url());
            sims.push(sim);
        }
        let _ = out.flush();
        drop(out);
        std::future::pending::<()>().await;
        Ok(Exit::Ok)
    })
}

/// One `comfy-batch run` in front of `servers` simulators (served by one
/// other process), two jobs per server.
fn many_servers(
    exes: &Exes<'_>,
    work: &Path,
    servers: usize,
    concurrency: u32,
) -> Result<Measured, CliError> {
    use std::io::BufRead;
    let mut child = Command::new(exes.sim)
        .args(["bench", "run", "--serve-sims"])
        .arg(servers.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| infra(format!("starting the simulators: {e}")))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let host = SimProcess {
        child,
        url: String::new(),
    };
    let mut urls = Vec::new();
    for line in std::io::BufReader::new(stdout).lines().take(servers.max(1)) {
        let line = line.map_err(|e| infra(format!("reading the simulators' addresses: {e}")))?;
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .ok_or_else(|| infra(format!("unexpected simulator output: {line}")))?;
        urls.push(url.to_string());
    }
    let dir = work.join("servers");
    std::fs::create_dir_all(&dir).map_err(|e| infra(e.to_string()))?;
    let manifest = write_manifest(&dir, "servers", 2 * urls.len(), 1)?;
    let command = run_command(
        exes.runner,
        &manifest,
        &urls,
        concurrency,
        &dir.join("out"),
        &[],
    );
    let measured = run_measured(command)?;
    drop(host);
    if measured.code != 0 {
        return Err(infra(format!(
            "servers: comfy-batch run exited {}",
            measured.code
        )));
    }
    Ok(measured)
}

/// One server's figures: URL, jobs, seconds busy (the union of its jobs'
/// execution intervals), and its own span (its first start to its last
/// end).
struct ServerBusy {
    url: String,
    jobs: usize,
    busy: f64,
    span: f64,
}

/// The execution intervals of every prompt in a simulator's history, from
/// the server's own timestamps (`execution_start` to the message that
/// ended it). The runner's log stamps would measure when the runner read
/// the messages, which lags by however long it let them wait.
fn history_intervals(history: &serde_json::Value) -> Vec<Interval> {
    let Some(entries) = history.as_object() else {
        return Vec::new();
    };
    let ms = |data: &serde_json::Value| data.get("timestamp").and_then(serde_json::Value::as_f64);
    let mut intervals = Vec::new();
    for entry in entries.values() {
        let Some(messages) = entry.pointer("/status/messages").and_then(|m| m.as_array()) else {
            continue;
        };
        let (mut start, mut end) = (None, None);
        for message in messages {
            match (message.get(0).and_then(|n| n.as_str()), message.get(1)) {
                (Some("execution_start"), Some(data)) => start = ms(data),
                (
                    Some("execution_success" | "execution_error" | "execution_interrupted"),
                    Some(data),
                ) => end = ms(data),
                _ => {}
            }
        }
        if let (Some(a), Some(b)) = (start, end) {
            intervals.push((a / 1000.0, b.max(a) / 1000.0));
        }
    }
    intervals
}

/// Reads every simulator's history (they are still up).
fn server_intervals(urls: &[String]) -> Result<Vec<(String, Vec<Interval>)>, CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| infra(e.to_string()))?;
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let mut all = Vec::new();
        for url in urls {
            let history: serde_json::Value = client
                .get(format!("{url}/history"))
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| infra(format!("{url}/history: {e}")))?
                .json()
                .await
                .map_err(|e| infra(format!("{url}/history: {e}")))?;
            all.push((url.clone(), history_intervals(&history)));
        }
        Ok(all)
    })
}

/// Per server figures, and the span of the whole run (the first start on
/// any server to the last end on any).
fn busy_per_server(per: Vec<(String, Vec<Interval>)>) -> (Vec<ServerBusy>, f64) {
    let first = per
        .iter()
        .flat_map(|(_, v)| v.iter().map(|i| i.0))
        .fold(f64::INFINITY, f64::min);
    let last = per
        .iter()
        .flat_map(|(_, v)| v.iter().map(|i| i.1))
        .fold(f64::NEG_INFINITY, f64::max);
    let span = (last - first).max(0.0);
    let servers = per
        .into_iter()
        .map(|(url, mut intervals)| {
            let busy = crate::ci::covered(&mut intervals);
            let first = intervals.iter().map(|i| i.0).fold(f64::INFINITY, f64::min);
            let last = intervals
                .iter()
                .map(|i| i.1)
                .fold(f64::NEG_INFINITY, f64::max);
            ServerBusy {
                url,
                jobs: intervals.len(),
                busy,
                span: (last - first).max(0.0),
            }
        })
        .collect();
    (servers, span)
}

/// The measured run's extra flags, from `--no-check` and `--no-report`.
fn runner_flags(args: &BenchRunArgs) -> Vec<&'static str> {
    let mut flags = Vec::new();
    if args.no_check {
        flags.push("--no-check");
    }
    if args.no_report {
        flags.push("--no-report");
    }
    flags
}

/// `--servers N`: N simulators, one runner; each server's busy share and
/// the runner's CPU per job and peak RSS.
fn busy_servers(exes: &Exes<'_>, work: &Path, args: &BenchRunArgs) -> Result<(), CliError> {
    let sims = Sims {
        count: args.servers,
        step_ms: args.step_ms,
        flags: &[],
    };
    let (m, intervals) = run_phase_on(
        exes,
        work,
        "busy-servers",
        args.busy_jobs,
        20,
        args.concurrency,
        &sims,
        &runner_flags(args),
        server_intervals,
    )?;
    // A short run too, for the run's fixed cost (starting, connecting,
    // the preflight, ending): what each further job costs is the slope
    // between the two runs, not the big run's average.
    let short_run = short_run_jobs(args.busy_jobs, args.servers as usize)
        .map(|small| {
            run_phase_on(
                exes,
                work,
                "busy-servers-short",
                small,
                20,
                args.concurrency,
                &sims,
                &runner_flags(args),
                |_| Ok(()),
            )
            .map(|(short, ())| (small, short))
        })
        .transpose()?;
    let (servers, span) = busy_per_server(intervals);
    let pct = |busy: f64, span: f64| 100.0 * busy / span.max(f64::EPSILON);
    // Busy while it had work (its own span): what the runner controls. Over
    // the whole run's span the last job's granularity shows too.
    let own: Vec<f64> = servers.iter().map(|s| pct(s.busy, s.span)).collect();
    let whole: Vec<f64> = servers.iter().map(|s| pct(s.busy, span)).collect();
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    for (s, share) in servers.iter().zip(&own) {
        println!(
            "  {}: {} jobs, busy {:.2}s of its {:.2}s = {share:.1}%",
            s.url, s.jobs, s.busy, s.span
        );
    }
    println!(
        "many servers: {} servers, {} jobs x 20 steps at {} ms/step, concurrency {}: busy share while working min {:.1}% mean {:.1}% (target >= 98%); over the whole {:.2}s min {:.1}% mean {:.1}%",
        args.servers,
        args.busy_jobs,
        args.step_ms,
        args.concurrency,
        min(&own),
        mean(&own),
        span,
        min(&whole),
        mean(&whole),
    );
    println!(
        "runner{}: CPU {:.2}s = {:.3} ms/job over the whole run (target <= 0.5); peak RSS {:.1} MB (target < 100); whole command {:.2}s",
        match runner_flags(args).join(" ") {
            flags if flags.is_empty() => String::new(),
            flags => format!(" ({flags})"),
        },
        m.cpu.as_secs_f64(),
        1000.0 * m.cpu.as_secs_f64() / args.busy_jobs as f64,
        m.max_rss_kib as f64 / 1024.0,
        m.wall.as_secs_f64()
    );
    match short_run {
        Some((small, short)) => {
            let split = CpuSplit::of((small, short.cpu), (args.busy_jobs, m.cpu));
            println!(
                "runner CPU per further job {:.3} ms (target <= 0.5), fixed per run {:.0} ms (from a {small}-job run's CPU {:.2}s: one run's figure, as noisy as its CPU)",
                split.per_job_ms,
                split.fixed_ms,
                short.cpu.as_secs_f64(),
            );
        }
        None => println!(
            "runner CPU per further job and fixed per run: not measured, {} jobs are too close to a short run's for the slope between them to mean anything (--busy-jobs {} or more)",
            args.busy_jobs,
            least_busy_jobs_to_split(args.servers as usize),
        ),
    }
    Ok(())
}

/// Jobs a split's two runs must differ by at least: a run's CPU is only
/// known to some milliseconds, and the slope divides that by the
/// difference (a few jobs apart, it gave -11 ms fixed and 6.5 ms per job).
const SPLIT_FURTHER_JOBS: usize = 50;

/// The short run's jobs for the CPU split beside a run of `busy_jobs` on
/// `servers` (a tenth, at least a job per server), if the two are far
/// enough apart in size for the slope between them to mean anything.
fn short_run_jobs(busy_jobs: usize, servers: usize) -> Option<usize> {
    let small = (busy_jobs / 10).max(servers).max(1);
    (busy_jobs >= small + SPLIT_FURTHER_JOBS && busy_jobs >= 2 * small).then_some(small)
}

/// The least `--busy-jobs` whose run [`short_run_jobs`] can split.
fn least_busy_jobs_to_split(servers: usize) -> usize {
    (1..)
        .find(|&jobs| short_run_jobs(jobs, servers).is_some())
        .unwrap_or(usize::MAX)
}

/// A run's CPU split into a fixed part and a part per job, from two runs
/// of different sizes (a straight line through both).
#[derive(Debug, PartialEq)]
struct CpuSplit {
    per_job_ms: f64,
    fixed_ms: f64,
}

impl CpuSplit {
    fn of((few, few_cpu): (usize, Duration), (many, many_cpu): (usize, Duration)) -> CpuSplit {
        let ms = |d: Duration| 1000.0 * d.as_secs_f64();
        let per_job_ms = (ms(many_cpu) - ms(few_cpu)) / (many as f64 - few as f64).max(1.0);
        CpuSplit {
            per_job_ms,
            fixed_ms: ms(few_cpu) - per_job_ms * few as f64,
        }
    }
}

/// Runs the measurements and prints their figures.
pub fn execute(args: BenchRunArgs) -> Result<Exit, CliError> {
    if let Some(count) = args.serve_sims {
        return serve_sims(count);
    }
    let exe = std::env::current_exe().map_err(|e| infra(e.to_string()))?;
    let runner = args.runner.clone().unwrap_or_else(|| exe.clone());
    let sim_files = sim_files_dir()?;
    let exes = Exes {
        sim: &exe,
        runner: &runner,
        sim_files: sim_files.path(),
    };
    let wanted = |phase: &str| args.only.is_empty() || args.only.iter().any(|p| p == phase);
    if args.servers > 1 {
        let work = tempfile::tempdir().map_err(|e| infra(e.to_string()))?;
        busy_servers(&exes, work.path(), &args)?;
        return Ok(Exit::Ok);
    }
    let work = tempfile::tempdir().map_err(|e| infra(e.to_string()))?;
    println!(
        "comfy-batch bench run ({} cores; runner {})",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        runner.display()
    );

    if wanted("busy") {
        let sims = Sims {
            count: 1,
            step_ms: args.step_ms,
            flags: &[],
        };
        let pack = args.pack.map(|n| n.to_string());
        let flags: Vec<&str> = pack.iter().flat_map(|n| ["--pack", n.as_str()]).collect();
        let (m, intervals) = run_phase_on(
            &exes,
            work.path(),
            "busy",
            args.busy_jobs,
            20,
            args.concurrency,
            &sims,
            &flags,
            server_intervals,
        )?;
        let (servers, span) = busy_per_server(intervals);
        let busy: f64 = servers.iter().map(|s| s.busy).sum();
        println!(
            "busy share: {} jobs{} x 20 steps at {} ms/step: server busy {:.2}s of {:.2}s = {:.1}% (target >= 98%); whole command {:.2}s",
            args.busy_jobs,
            pack.map(|n| format!(" in packs of {n}"))
                .unwrap_or_default(),
            args.step_ms,
            busy,
            span,
            100.0 * busy / span.max(f64::EPSILON),
            m.wall.as_secs_f64()
        );
    }

    if wanted("overhead") {
        let m = run_phase(
            &exes,
            work.path(),
            "overhead",
            args.overhead_jobs,
            1,
            0,
            args.concurrency,
            &[],
        )?;
        println!(
            "overhead: {} instant jobs in {:.2}s = {:.0} jobs/s (target >= 500); runner CPU {:.2}s = {:.2} ms/job; peak RSS {:.1} MB",
            args.overhead_jobs,
            m.wall.as_secs_f64(),
            args.overhead_jobs as f64 / m.wall.as_secs_f64(),
            m.cpu.as_secs_f64(),
            1000.0 * m.cpu.as_secs_f64() / args.overhead_jobs as f64,
            m.max_rss_kib as f64 / 1024.0
        );
    }

    if wanted("memory") {
        let m = run_phase(
            &exes,
            work.path(),
            "memory",
            args.memory_jobs,
            1,
            0,
            args.concurrency,
            &[],
        )?;
        println!(
            "memory: {} instant jobs in {:.2}s = {:.0} jobs/s; runner peak RSS {:.1} MB (target < 64 MB)",
            args.memory_jobs,
            m.wall.as_secs_f64(),
            args.memory_jobs as f64 / m.wall.as_secs_f64(),
            m.max_rss_kib as f64 / 1024.0
        );
    }

    if wanted("one-job") {
        let (wall, fastest, m) = one_job(&exes, work.path(), "one", args.one_job_runs, &[])?;
        let delay = args.slow_catalogue_ms.to_string();
        let (slow, slow_fastest, _) = one_job(
            &exes,
            work.path(),
            "one-slow",
            args.one_job_runs,
            &["--object-info-delay-ms", &delay],
        )?;
        println!(
            "one job: wall median {:.1} ms, fastest {:.1} ms of {} runs (target <= 30 ms); runner CPU {:.1} ms, peak RSS {:.1} MB; with a {} ms /object_info: median {:.1} ms, fastest {:.1} ms",
            wall.as_secs_f64() * 1000.0,
            fastest.as_secs_f64() * 1000.0,
            args.one_job_runs,
            m.cpu.as_secs_f64() * 1000.0,
            m.max_rss_kib as f64 / 1024.0,
            args.slow_catalogue_ms,
            slow.as_secs_f64() * 1000.0,
            slow_fastest.as_secs_f64() * 1000.0
        );
    }

    if wanted("servers") {
        let m = many_servers(&exes, work.path(), args.rss_servers, args.concurrency)?;
        println!(
            "servers: one runner, {} simulators, {} instant jobs in {:.2}s; runner CPU {:.2}s, peak RSS {:.1} MB",
            args.rss_servers,
            2 * args.rss_servers,
            m.wall.as_secs_f64(),
            m.cpu.as_secs_f64(),
            m.max_rss_kib as f64 / 1024.0
        );
    }

    if wanted("durability") {
        let (synced, unsynced) = durability_cost(work.path(), args.overhead_jobs.min(500))?;
        println!(
            "durability: one image saved and synced as the runner does, one job at a time (the worst case: jobs ending together share a sync) {:.2} ms/job vs {:.2} ms/job unsynced; the log is synced at most once a second",
            synced.as_secs_f64() * 1000.0,
            unsynced.as_secs_f64() * 1000.0
        );
    }
    Ok(Exit::Ok)
}

/// The cost of the syncs on this disk, per job: a 64 KB image written
/// through the sink (synced, renamed, folder synced) against a plain write
/// and rename.
fn durability_cost(work: &Path, jobs: usize) -> Result<(Duration, Duration), CliError> {
    let io = |e: &dyn std::error::Error| infra(format!("durability figure: {e}"));
    let jobs = jobs.max(1);
    let bytes = vec![7u8; 64 * 1024];
    let output = crate::sink::OutputDir::open(&work.join("durability")).map_err(|e| io(&e))?;
    let started = Instant::now();
    for n in 0..jobs {
        let id = crate::ids::JobId::new(format!("{n:016x}"));
        let saved = output
            .save_image(&id, "9", 0, "png", &bytes)
            .map_err(|e| io(&e))?;
        output.make_durable(&[saved]).map_err(|e| io(&e))?;
    }
    let synced = started.elapsed() / jobs as u32;
    let plain = work.join("durability-plain");
    std::fs::create_dir_all(&plain).map_err(|e| io(&e))?;
    let started = Instant::now();
    for n in 0..jobs {
        let tmp = plain.join(format!(".tmp-{n}"));
        std::fs::write(&tmp, &bytes).map_err(|e| io(&e))?;
        std::fs::rename(&tmp, plain.join(format!("{n}.png"))).map_err(|e| io(&e))?;
    }
    Ok((synced, started.elapsed() / jobs as u32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(start: u64, end: (&str, u64)) -> serde_json::Value {
        json!({"status": {"status_str": "success", "completed": true, "messages": [
            ["execution_start", {"prompt_id": "p", "timestamp": start}],
            ["execution_cached", {"nodes": [], "prompt_id": "p", "timestamp": start}],
            [end.0, {"prompt_id": "p", "timestamp": end.1}],
        ]}})
    }

    #[test]
    fn the_cpu_is_split_only_between_runs_far_apart_in_size() {
        assert_eq!(short_run_jobs(200, 1), Some(20));
        assert_eq!(short_run_jobs(80, 4), Some(8));
        assert_eq!(short_run_jobs(200, 32), Some(32));
        // A job or a few apart: the slope is the CPU's noise.
        assert_eq!(short_run_jobs(5, 4), None);
        assert_eq!(short_run_jobs(40, 32), None);
        assert_eq!(short_run_jobs(3, 4), None);
        assert_eq!(least_busy_jobs_to_split(4), 55);
        assert_eq!(least_busy_jobs_to_split(32), 82);
        assert_eq!(least_busy_jobs_to_split(64), 128);
    }

    #[test]
    fn cpu_splits_into_a_fixed_part_and_one_per_job() {
        let split = CpuSplit::of(
            (64, Duration::from_millis(100)),
            (640, Duration::from_millis(388)),
        );
        assert!((split.per_job_ms - 0.5).abs() < 1e-9, "{split:?}");
        assert!((split.fixed_ms - 68.0).abs() < 1e-9, "{split:?}");
    }

    #[test]
    fn busy_comes_from_the_servers_own_timestamps() {
        let history = json!({
            "a": entry(10_000, ("execution_success", 10_200)),
            "b": entry(10_150, ("execution_error", 10_400)),
            "c": entry(11_000, ("execution_interrupted", 11_100)),
            // Never ended (or still running): not counted.
            "d": {"status": {"messages": [["execution_start", {"timestamp": 12_000}]]}},
        });
        let mut intervals = history_intervals(&history);
        intervals.sort_by(|x, y| x.0.total_cmp(&y.0));
        assert_eq!(intervals, vec![(10.0, 10.2), (10.15, 10.4), (11.0, 11.1)]);
        let (servers, span) = busy_per_server(vec![
            ("s1".into(), intervals),
            ("s2".into(), vec![(9.5, 10.0)]),
        ]);
        assert!((span - 1.6).abs() < 1e-9, "{span}");
        let s1 = &servers[0];
        assert_eq!(s1.jobs, 3);
        // Overlapping prompts count once: 10.0–10.4 and 11.0–11.1.
        assert!((s1.busy - 0.5).abs() < 1e-9, "{}", s1.busy);
        assert!((s1.span - 1.1).abs() < 1e-9, "{}", s1.span);
    }
}
