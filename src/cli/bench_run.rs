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

use super::{CliError, Exit};

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

struct SimProcess {
    child: Child,
    url: String,
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

fn start_sim(exe: &Path, step_ms: u64, dir: &Path, extra: &[&str]) -> Result<SimProcess, CliError> {
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

/// What the kernel measured of a finished child.
struct Measured {
    wall: Duration,
    cpu: Duration,
    max_rss_kib: i64,
    code: i32,
}

fn run_measured(mut command: Command) -> Result<Measured, CliError> {
    let started = Instant::now();
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| infra(format!("starting comfy-batch run: {e}")))?;
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

/// The binaries: `sim` serves, `runner` is measured.
struct Exes<'a> {
    sim: &'a Path,
    runner: &'a Path,
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
) -> Result<(Measured, PathBuf), CliError> {
    let sims = Sims {
        count: 1,
        step_ms,
        flags: sim_flags,
    };
    run_phase_on(exes, work, name, jobs, steps, concurrency, &sims, &[])
}

/// The simulator processes of one phase.
struct Sims<'a> {
    count: u32,
    step_ms: u64,
    flags: &'a [&'a str],
}

/// [`run_phase`] with several simulator processes sharing the jobs.
#[expect(clippy::too_many_arguments, reason = "one call per phase, all named")]
fn run_phase_on(
    exes: &Exes<'_>,
    work: &Path,
    name: &str,
    jobs: usize,
    steps: u32,
    concurrency: u32,
    sims: &Sims<'_>,
    flags: &[&str],
) -> Result<(Measured, PathBuf), CliError> {
    let dir = work.join(name);
    let mut running = Vec::new();
    for i in 0..sims.count.max(1) {
        let sim_dir = dir.join(format!("sim{i}"));
        std::fs::create_dir_all(&sim_dir).map_err(|e| infra(e.to_string()))?;
        running.push(start_sim(exes.sim, sims.step_ms, &sim_dir, sims.flags)?);
    }
    let manifest = write_manifest(&dir, name, jobs, steps)?;
    let out = dir.join("out");
    let urls: Vec<String> = running.iter().map(|s| s.url.clone()).collect();
    let command = run_command(exes.runner, &manifest, &urls, concurrency, &out, flags);
    let measured = run_measured(command)?;
    drop(running);
    if measured.code != 0 {
        return Err(infra(format!(
            "{name}: comfy-batch run exited {}",
            measured.code
        )));
    }
    Ok((measured, out.join("runs.csv")))
}

/// Σ run_s over the span from the first start to the last finish.
fn busy_share(log: &Path) -> Result<(f64, f64), CliError> {
    let mut reader = csv::Reader::from_path(log).map_err(|e| infra(e.to_string()))?;
    let header = reader.headers().map_err(|e| infra(e.to_string()))?.clone();
    let col = |name: &str| header.iter().position(|h| h == name);
    let (Some(run_s), Some(started), Some(finished)) =
        (col("run_s"), col("started_at"), col("finished_at"))
    else {
        return Err(infra("runs.csv lacks timing columns".into()));
    };
    let mut busy = 0.0;
    let mut first: Option<std::time::SystemTime> = None;
    let mut last: Option<std::time::SystemTime> = None;
    for record in reader.records() {
        let record = record.map_err(|e| infra(e.to_string()))?;
        busy += record
            .get(run_s)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
        let parse = |i: usize| record.get(i).and_then(|s| humantime::parse_rfc3339(s).ok());
        if let Some(s) = parse(started) {
            first = Some(first.map_or(s, |f| f.min(s)));
        }
        if let Some(f) = parse(finished) {
            last = Some(last.map_or(f, |l| l.max(f)));
        }
    }
    let span = match (first, last) {
        (Some(a), Some(b)) => b.duration_since(a).unwrap_or_default().as_secs_f64(),
        _ => 0.0,
    };
    Ok((busy, span))
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
        let (m, _) = run_phase(exes, work, &format!("{name}-{i}"), 1, 1, 0, 2, sim_flags)?;
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
/// start-to-finish intervals, so overlapping downloads count once), and its
/// own span (its first start to its last finish).
struct ServerBusy {
    url: String,
    jobs: usize,
    busy: f64,
    span: f64,
}

/// Per server (the `server` column) figures, and the span of the whole run.
fn busy_per_server(log: &Path) -> Result<(Vec<ServerBusy>, f64), CliError> {
    use std::time::SystemTime;
    let mut reader = csv::Reader::from_path(log).map_err(|e| infra(e.to_string()))?;
    let header = reader.headers().map_err(|e| infra(e.to_string()))?.clone();
    let col = |name: &str| header.iter().position(|h| h == name);
    let (Some(server), Some(started), Some(finished)) =
        (col("server"), col("started_at"), col("finished_at"))
    else {
        return Err(infra("runs.csv lacks server/timing columns".into()));
    };
    let mut per: std::collections::BTreeMap<String, Vec<(SystemTime, SystemTime)>> =
        Default::default();
    for record in reader.records() {
        let record = record.map_err(|e| infra(e.to_string()))?;
        let parse = |i: usize| record.get(i).and_then(|s| humantime::parse_rfc3339(s).ok());
        if let (Some(a), Some(b)) = (parse(started), parse(finished)) {
            per.entry(record.get(server).unwrap_or("").to_string())
                .or_default()
                .push((a, b.max(a)));
        }
    }
    let (_, span) = busy_share(log)?;
    let secs = |a: SystemTime, b: SystemTime| b.duration_since(a).unwrap_or_default().as_secs_f64();
    let servers = per
        .into_iter()
        .map(|(url, mut intervals)| {
            intervals.sort();
            let (mut busy, mut open): (f64, Option<(SystemTime, SystemTime)>) = (0.0, None);
            for (a, b) in intervals.iter().copied() {
                open = match open {
                    Some((s, e)) if a <= e => Some((s, e.max(b))),
                    Some((s, e)) => {
                        busy += secs(s, e);
                        Some((a, b))
                    }
                    None => Some((a, b)),
                };
            }
            if let Some((s, e)) = open {
                busy += secs(s, e);
            }
            let first = intervals.iter().map(|i| i.0).min();
            let last = intervals.iter().map(|i| i.1).max();
            ServerBusy {
                url,
                jobs: intervals.len(),
                busy,
                span: match (first, last) {
                    (Some(a), Some(b)) => secs(a, b),
                    _ => 0.0,
                },
            }
        })
        .collect();
    Ok((servers, span))
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
    let (m, log) = run_phase_on(
        exes,
        work,
        "busy-servers",
        args.busy_jobs,
        20,
        args.concurrency,
        &sims,
        &runner_flags(args),
    )?;
    let (servers, span) = busy_per_server(&log)?;
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
        "runner{}: CPU {:.2}s = {:.3} ms/job (target <= 0.5); peak RSS {:.1} MB (target < 100); whole command {:.2}s",
        match runner_flags(args).join(" ") {
            flags if flags.is_empty() => String::new(),
            flags => format!(" ({flags})"),
        },
        m.cpu.as_secs_f64(),
        1000.0 * m.cpu.as_secs_f64() / args.busy_jobs as f64,
        m.max_rss_kib as f64 / 1024.0,
        m.wall.as_secs_f64()
    );
    Ok(())
}

/// Runs the three measurements and prints their figures.
/// Runs the measurements and prints their figures.
pub fn execute(args: BenchRunArgs) -> Result<Exit, CliError> {
    if let Some(count) = args.serve_sims {
        return serve_sims(count);
    }
    let exe = std::env::current_exe().map_err(|e| infra(e.to_string()))?;
    let runner = args.runner.clone().unwrap_or_else(|| exe.clone());
    let exes = Exes {
        sim: &exe,
        runner: &runner,
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
        let (m, log) = run_phase(
            &exes,
            work.path(),
            "busy",
            args.busy_jobs,
            20,
            args.step_ms,
            args.concurrency,
            &[],
        )?;
        let (busy, span) = busy_share(&log)?;
        println!(
            "busy share: {} jobs x 20 steps at {} ms/step: server busy {:.2}s of {:.2}s = {:.1}% (target >= 98%); whole command {:.2}s",
            args.busy_jobs,
            args.step_ms,
            busy,
            span,
            100.0 * busy / span.max(f64::EPSILON),
            m.wall.as_secs_f64()
        );
    }

    if wanted("overhead") {
        let (m, _) = run_phase(
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
        let (m, _) = run_phase(
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
            "durability: one image saved and synced as the runner does, jobs ending one at a time more than the {} ms sync interval apart (the worst case: jobs ending closer together share a sync) {:.2} ms/job vs {:.2} ms/job unsynced; the log is synced at most once a second",
            crate::sink::SYNC_INTERVAL.as_millis(),
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
    let mut synced = Duration::ZERO;
    for n in 0..jobs {
        // Syncs in a row wait out the sync interval: without this pause
        // (not timed) the figure would be the interval, not the disk.
        if n > 0 {
            std::thread::sleep(crate::sink::SYNC_INTERVAL);
        }
        let started = Instant::now();
        let id = crate::ids::JobId::new(format!("{n:016x}"));
        let saved = output
            .save_image(&id, "9", 0, "png", &bytes)
            .map_err(|e| io(&e))?;
        output.make_durable(&[saved]).map_err(|e| io(&e))?;
        synced += started.elapsed();
    }
    let synced = synced / jobs as u32;
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
