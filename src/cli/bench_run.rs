//! `comfy-batch bench run`: the runner's speed and memory, measured the way
//! a user runs it: a simulator in its own process, `comfy-batch run` in
//! another, and the kernel's accounting (wait4) for the runner's CPU time
//! and peak RSS. Figures go to the project's notes; no test asserts them.

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
    /// Simulators (each its own process) sharing the busy-share run: the
    /// many-servers figure (each server's busy share, runner CPU per job).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub servers: u32,
    /// Pass `--no-check` to the measured run (the preflight fetches and
    /// keeps every server's catalogue: with many servers, most of the
    /// memory and a large share of the CPU).
    #[arg(long)]
    pub no_check: bool,
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

fn start_sim(exe: &Path, step_ms: u64, dir: &Path) -> Result<SimProcess, CliError> {
    use std::io::BufRead;
    let mut child = Command::new(exe)
        .args(["sim", "--listen", "127.0.0.1:0", "--step-ms"])
        .arg(step_ms.to_string())
        .arg("--dir")
        .arg(dir)
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

fn run_phase(
    exe: &Path,
    work: &Path,
    name: &str,
    jobs: usize,
    steps: u32,
    step_ms: u64,
    concurrency: u32,
) -> Result<(Measured, PathBuf), CliError> {
    run_phase_on(exe, work, name, jobs, steps, step_ms, concurrency, 1, false)
}

/// [`run_phase`] with `servers` simulator processes sharing the jobs.
#[expect(clippy::too_many_arguments, reason = "one flat list of bench knobs")]
fn run_phase_on(
    exe: &Path,
    work: &Path,
    name: &str,
    jobs: usize,
    steps: u32,
    step_ms: u64,
    concurrency: u32,
    servers: u32,
    no_check: bool,
) -> Result<(Measured, PathBuf), CliError> {
    let dir = work.join(name);
    let mut sims = Vec::new();
    for i in 0..servers {
        let sim_dir = dir.join(format!("sim{i}"));
        std::fs::create_dir_all(&sim_dir).map_err(|e| infra(e.to_string()))?;
        sims.push(start_sim(exe, step_ms, &sim_dir)?);
    }
    let manifest = write_manifest(&dir, name, jobs, steps)?;
    let out = dir.join("out");
    let mut command = Command::new(exe);
    command.arg("run").arg(&manifest);
    for sim in &sims {
        command.args(["--server", &sim.url]);
    }
    command
        .arg("--concurrency")
        .arg(concurrency.to_string())
        .arg("--output")
        .arg(&out)
        .arg("-q");
    if no_check {
        command.arg("--no-check");
    }
    let measured = run_measured(command)?;
    drop(sims);
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

/// `--servers N`: N simulators, one runner; each server's busy share and
/// the runner's CPU per job and peak RSS.
fn many_servers(exe: &Path, work: &Path, args: &BenchRunArgs) -> Result<(), CliError> {
    let (m, log) = run_phase_on(
        exe,
        work,
        "servers",
        args.busy_jobs,
        20,
        args.step_ms,
        args.concurrency,
        args.servers,
        args.no_check,
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
        if args.no_check { " (--no-check)" } else { "" },
        m.cpu.as_secs_f64(),
        1000.0 * m.cpu.as_secs_f64() / args.busy_jobs as f64,
        m.max_rss_kib as f64 / 1024.0,
        m.wall.as_secs_f64()
    );
    Ok(())
}

/// Runs the three measurements and prints their figures.
pub fn execute(args: BenchRunArgs) -> Result<Exit, CliError> {
    let exe = std::env::current_exe().map_err(|e| infra(e.to_string()))?;
    let work = tempfile::tempdir().map_err(|e| infra(e.to_string()))?;
    println!(
        "comfy-batch bench run ({} cores)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    if args.servers > 1 {
        many_servers(&exe, work.path(), &args)?;
        return Ok(Exit::Ok);
    }

    let (m, log) = run_phase(
        &exe,
        work.path(),
        "busy",
        args.busy_jobs,
        20,
        args.step_ms,
        args.concurrency,
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

    let (m, _) = run_phase(
        &exe,
        work.path(),
        "overhead",
        args.overhead_jobs,
        1,
        0,
        args.concurrency,
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

    let (m, _) = run_phase(
        &exe,
        work.path(),
        "memory",
        args.memory_jobs,
        1,
        0,
        args.concurrency,
    )?;
    println!(
        "memory: {} instant jobs in {:.2}s = {:.0} jobs/s; runner peak RSS {:.1} MB (target < 64 MB)",
        args.memory_jobs,
        m.wall.as_secs_f64(),
        args.memory_jobs as f64 / m.wall.as_secs_f64(),
        m.max_rss_kib as f64 / 1024.0
    );
    Ok(Exit::Ok)
}
