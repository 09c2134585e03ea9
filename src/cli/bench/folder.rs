//! `comfy-batch bench folder --jobs N --dir D`: the folder commands on a
//! synthetic N-job output folder (one 64 px PNG a job, every 97th job
//! failed), each run as a child process: its peak RSS and wall time
//! (`merge` also rebuilds the report; `merge-no-report` is the merge alone).
//! `rerun-status` is `rerun LOG --status failed --status ok` (every job) on
//! a folder of its own whose rows a real plan wrote (so each rebuilds),
//! against a simulator that fails every prompt, with `--fail-fast`: it
//! selects, rebuilds and checks all N jobs, reads the log's attempts and
//! runs the first few, then lists the rest as not run.
//! `--against B` alternates each command with another comfy-batch binary
//! (e.g. main's), so a noisy machine slows both alike (docs/ci.md "Scale").

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cli::{CliError, Exit};

/// Arguments of `comfy-batch bench folder`.
#[derive(Debug, clap::Args)]
pub struct BenchFolderArgs {
    /// Jobs in the synthetic folder.
    #[arg(long, default_value_t = 200_000)]
    pub jobs: usize,
    /// Where to build the folder (kept, and reused when it has as many
    /// jobs): a tmpfs such as /dev/shm keeps the disk out of the figures.
    #[arg(long, value_name = "D")]
    pub dir: PathBuf,
    /// Another comfy-batch binary to alternate with, command by command.
    #[arg(long, value_name = "B")]
    pub against: Option<PathBuf>,
    /// Rounds of every command (each binary once a round).
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Only these commands (status, webdataset, imagefolder,
    /// merge-no-report, merge, report, grid, rerun-status).
    #[arg(long = "only", value_name = "CMD")]
    pub only: Vec<String>,
}

fn infra(message: String) -> CliError {
    CliError::many(Exit::Infrastructure, vec![message])
}

/// The folder: `runs.csv` written as it goes, one PNG's bytes in every file.
fn synthetic_folder(run: &Path, jobs: usize) -> Result<(), CliError> {
    let marker = run.join(".bench-jobs");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(&jobs.to_string()) {
        return Ok(());
    }
    let _ = std::fs::remove_dir_all(run);
    let io = |e: std::io::Error| infra(format!("{}: {e}", run.display()));
    std::fs::create_dir_all(run.join("images")).map_err(io)?;
    let mut png = Vec::new();
    image::RgbImage::from_pixel(64, 64, image::Rgb([200, 80, 40]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| infra(e.to_string()))?;
    let log = std::fs::File::create(run.join(crate::runlog::LOG)).map_err(io)?;
    let mut log = std::io::BufWriter::new(log);
    writeln!(
        log,
        "{}",
        crate::runlog::header(&["prompt".into(), "cfg".into()]).join(",")
    )
    .map_err(io)?;
    for i in 0..jobs {
        let id = format!("{:016x}", (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let rel = format!("images/{id}_9_0.png");
        let (status, images, error) = if i % 97 == 5 {
            ("failed", "", "KSampler (3): CUDA out of memory")
        } else {
            std::fs::write(run.join(&rel), &png).map_err(io)?;
            ("ok", rel.as_str(), "")
        };
        writeln!(
            log,
            "{id},bench#{i},w.json,abc,{},,,,\"a photo of subject number {}, detailed\",{},{status},http://127.0.0.1:8188,p{i},,,,0.010,1.250,{images},{error},",
            i % 10,
            i / 100,
            3 + (i / 10) % 10,
        )
        .map_err(io)?;
    }
    log.flush().map_err(io)?;
    std::fs::write(&marker, jobs.to_string()).map_err(io)
}

/// The folder `rerun` is measured on: a real plan's rows (N/100 prompts ×
/// 100 seeds, every 97th failed),
/// written by the log's own writer, so every row rebuilds to the job it
/// logs; no image files (`rerun` reads none). Returns the output folder.
fn rerun_folder(root: &Path, jobs: usize) -> Result<PathBuf, CliError> {
    let out = root.join("out");
    let marker = root.join(".bench-jobs");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(&jobs.to_string()) {
        return Ok(out);
    }
    let _ = std::fs::remove_dir_all(root);
    let io = |e: std::io::Error| infra(format!("{}: {e}", root.display()));
    std::fs::create_dir_all(root.join("workflows")).map_err(io)?;
    std::fs::create_dir_all(root.join("jobs")).map_err(io)?;
    std::fs::write(root.join("workflows/t2i.json"), super::WORKFLOW).map_err(io)?;
    let path = root.join("jobs/bench.yaml");
    // `bench plan`'s manifest, 100 seeds a prompt: N jobs, rounded up to
    // a hundred.
    let prompts: String = (0..jobs.div_ceil(100).max(1))
        .map(|i| format!("        - \"a photo of subject number {i}\"\n"))
        .collect();
    let text = format!(
        "version: 1\njobs:\n  - name: bench\n    workflow: t2i\n    matrix:\n      prompt:\n{prompts}    seeds: {{count: 100, base: 1}}\n"
    );
    std::fs::write(&path, text).map_err(io)?;
    let bad = |lines: Vec<String>| CliError::many(Exit::BadInput, lines);
    let manifest = crate::manifest::Manifest::load(&path).map_err(|e| bad(e.lines()))?;
    let plan = crate::plan::Plan::with_random_key(&manifest, 1).map_err(|e| bad(e.lines()))?;
    let output = crate::sink::OutputDir::open(&out)?;
    crate::folder::runinfo::RunInfo {
        fresh_seeds: Some(false),
        ..crate::folder::runinfo::RunInfo::of(&manifest, 1, "bench000", &out)
    }
    .write(&output)?;
    let (mut log, _) = crate::runlog::RunLog::open(&output.log_path(), plan.columns(), |_| false)
        .map_err(|e| infra(e.to_string()))?;
    for job in plan.jobs() {
        let failed = job.index % 97 == 5;
        let outcome = crate::outcome::Outcome {
            status: match failed {
                true => crate::outcome::Status::Failed,
                false => crate::outcome::Status::Ok,
            },
            images: match failed {
                true => Vec::new(),
                false => vec![format!("images/{}_9_0.png", job.id)],
            },
            text: None,
            error: failed.then(|| "KSampler (3): CUDA out of memory".to_string()),
            attempt: crate::outcome::Attempt::default(),
        };
        log.append(&job, &outcome)?;
    }
    drop(log);
    std::fs::write(&marker, jobs.to_string()).map_err(io)?;
    Ok(out)
}

/// Whether `--only` (none: every command) names `name`.
fn wants(only: &[String], name: &str) -> bool {
    only.is_empty() || only.iter().any(|o| o == name)
}

/// Runs the command.
pub fn execute(args: BenchFolderArgs) -> Result<Exit, CliError> {
    let exe = std::env::current_exe().map_err(|e| infra(e.to_string()))?;
    let run = args.dir.join("run");
    // Every command but `rerun-status` reads this folder.
    if args.only.is_empty() || args.only.iter().any(|o| o != "rerun-status") {
        let started = std::time::Instant::now();
        synthetic_folder(&run, args.jobs)?;
        eprintln!(
            "folder of {} jobs ready in {:.1} s: {}",
            args.jobs,
            started.elapsed().as_secs_f64(),
            run.display()
        );
    }
    let out = |name: &str| args.dir.join(name).display().to_string();
    let run_s = run.display().to_string();
    let mut commands: Vec<(&str, Vec<String>)> = vec![
        ("status", vec!["status".into(), run_s.clone()]),
        (
            "webdataset",
            vec![
                "export".into(),
                run_s.clone(),
                "--format".into(),
                "webdataset".into(),
                "--to".into(),
                out("wds"),
            ],
        ),
        (
            "imagefolder",
            vec![
                "export".into(),
                run_s.clone(),
                "--format".into(),
                "imagefolder".into(),
                "--to".into(),
                out("imf"),
            ],
        ),
        (
            "merge-no-report",
            vec![
                "merge".into(),
                out("merged"),
                run_s.clone(),
                "--no-report".into(),
            ],
        ),
        ("merge", vec!["merge".into(), out("merged"), run_s.clone()]),
        ("report", vec!["report".into(), run_s.clone()]),
        (
            "grid",
            [
                "grid",
                &run_s,
                "--x",
                "cfg",
                "--y",
                "seed",
                "--where",
                "prompt=a photo of subject number 0, detailed",
                "-o",
                &out("grid.png"),
            ]
            .map(String::from)
            .to_vec(),
        ),
    ];
    // Kept alive while the commands run: `rerun-status`'s server.
    let mut _sim = None;
    if wants(&args.only, "rerun-status") {
        let started = std::time::Instant::now();
        let out = rerun_folder(&args.dir.join("rerun"), args.jobs)?;
        eprintln!(
            "rerun folder of {} jobs ready in {:.1} s: {}",
            args.jobs,
            started.elapsed().as_secs_f64(),
            out.display()
        );
        // Every prompt fails, and the first failure stops the rerun: it
        // selects, rebuilds and checks every job, reads the log's attempts
        // and runs the first few, without writing 200k images.
        let sim_files = args.dir.join("rerun-sim");
        std::fs::create_dir_all(&sim_files).map_err(|e| infra(e.to_string()))?;
        let sim = super::run::start_sim(&exe, 0, &sim_files, &["--fail-rate", "1"])?;
        commands.push((
            "rerun-status",
            vec![
                "rerun".into(),
                // The log itself: older builds take no folder here.
                out.join(crate::runlog::LOG).display().to_string(),
                "--status".into(),
                "failed".into(),
                "--status".into(),
                "ok".into(),
                "--server".into(),
                sim.url.clone(),
                "--fail-fast".into(),
                "--no-report".into(),
            ],
        ));
        _sim = Some(sim);
    }
    let mut binaries = vec![("this", exe)];
    if let Some(b) = &args.against {
        binaries.push(("against", b.clone()));
    }
    println!("jobs\tcommand\tbinary\tpeak_mb\ttime_s\texit");
    for round in 0..args.rounds.max(1) {
        for (name, argv) in &commands {
            if !wants(&args.only, name) {
                continue;
            }
            // Alternate which binary goes first, round by round.
            let order: Vec<_> = if round % 2 == 0 {
                binaries.iter().collect()
            } else {
                binaries.iter().rev().collect()
            };
            for (label, binary) in order {
                let _ = std::fs::remove_dir_all(args.dir.join("merged"));
                let mut command = Command::new(binary);
                command.args(argv);
                let m = super::run::run_measured(command)?;
                println!(
                    "{}\t{name}\t{label}\t{:.1}\t{:.2}\t{}",
                    args.jobs,
                    m.max_rss_kib as f64 / 1024.0,
                    m.wall.as_secs_f64(),
                    m.code
                );
            }
        }
    }
    Ok(Exit::Ok)
}
