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
    let dir = work.join(name);
    std::fs::create_dir_all(dir.join("sim")).map_err(|e| infra(e.to_string()))?;
    let sim = start_sim(exe, step_ms, &dir.join("sim"))?;
    let manifest = write_manifest(&dir, name, jobs, steps)?;
    let out = dir.join("out");
    let mut command = Command::new(exe);
    command
        .arg("run")
        .arg(&manifest)
        .args(["--server", &sim.url, "--concurrency"])
        .arg(concurrency.to_string())
        .arg("--output")
        .arg(&out)
        .arg("-q");
    let measured = run_measured(command)?;
    drop(sim);
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

    let (synced, unsynced) = durability_cost(work.path(), args.overhead_jobs.min(500))?;
    println!(
        "durability: one image saved and synced as the runner does, one job at a time (the worst case: jobs ending together share a sync) {:.2} ms/job vs {:.2} ms/job unsynced; the log is synced at most once a second",
        synced.as_secs_f64() * 1000.0,
        unsynced.as_secs_f64() * 1000.0
    );
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
