//! The runner's memory, counted by a global allocator of this test binary
//! (the `comfy-batch` binary's own, mimalloc, counts nothing): the runner
//! runs in this process through `cli::execute`, the simulator in a process
//! of its own. Figures of a release build
//! are `bench run`'s; these only fail if the runner's memory grows with
//! what it should not: the number of jobs, or the size of one file.

use std::path::Path;
use std::process::ExitCode;

#[path = "common/counting.rs"]
mod counting;

use counting::ONE_AT_A_TIME;

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

/// A simulator in a process of its own (its worker's memory is not the
/// runner's), killed when dropped.
struct Simulator {
    child: std::process::Child,
    url: String,
}

impl Simulator {
    fn start() -> Simulator {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_comfy-batch"))
            .args(["sim", "--listen", "127.0.0.1:0", "--step-ms", "0"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line.trim().rsplit(' ').next().unwrap().to_string();
        assert!(url.starts_with("http://"), "{line}");
        Simulator { child, url }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `comfy-batch run ARGS…` in this process; returns the peak of the
/// runner's live bytes above those live before.
fn peak_of_run(args: &[&str]) -> isize {
    let cli = comfy_batch::cli::parse_args(
        ["comfy-batch", "run", "--no-report", "--no-check", "-q"]
            .iter()
            .chain(args),
    )
    .unwrap();
    let (peak, code) = counting::peak_of(|| comfy_batch::cli::execute(cli));
    assert_eq!(code, ExitCode::SUCCESS, "run {args:?}");
    peak
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A manifest of `jobs` jobs of a 8×8 image each.
fn tiny_jobs(dir: &Path, jobs: usize) -> String {
    write(
        &dir.join("tiny.json"),
        r#"{"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}}}"#,
    );
    let manifest = dir.join(format!("jobs{jobs}.yaml"));
    write(
        &manifest,
        &format!(
            "version: 1\nworkflows:\n  tiny: tiny.json\nparams:\n  seed: \"1.color\"\njobs:\n  - name: t\n    workflow: tiny\n    seeds: {{range: [1, {jobs}]}}\n"
        ),
    );
    manifest.to_string_lossy().into_owned()
}

#[test]
fn a_large_output_is_written_as_it_arrives_not_held() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let sim = Simulator::start();
    let dir = tempfile::tempdir().unwrap();
    // A latent of [4, 4, 1024, 1024] floats: 64 MB in one file.
    write(
        &dir.path().join("latent.json"),
        r#"{"1": {"class_type": "EmptyLatentImage", "inputs": {"width": 8192, "height": 8192, "batch_size": 4}},
            "2": {"class_type": "SaveLatent", "inputs": {"samples": ["1", 0], "filename_prefix": "latents/big"}}}"#,
    );
    let manifest = dir.path().join("big.yaml");
    write(
        &manifest,
        "version: 1\nworkflows:\n  latent: latent.json\njobs:\n  - name: big\n    workflow: latent\n",
    );
    let out = dir.path().join("out");
    let peak = peak_of_run(&[
        manifest.to_str().unwrap(),
        "--server",
        &sim.url,
        "--output",
        out.to_str().unwrap(),
    ]);
    let images: Vec<_> = std::fs::read_dir(out.join("images"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(images.len(), 1, "{images:?}");
    assert!(std::fs::metadata(&images[0]).unwrap().len() > 64 << 20);
    eprintln!("a 64 MB output: peak {} KB", peak >> 10);
    assert!(
        peak < 16 << 20,
        "the runner held {} MB for a 64 MB file",
        peak >> 20
    );
}

#[test]
fn the_runners_memory_does_not_grow_with_the_jobs() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let sim = Simulator::start();
    let dir = tempfile::tempdir().unwrap();
    let mut peaks = Vec::new();
    for jobs in [SMALL, LARGE] {
        let manifest = tiny_jobs(dir.path(), jobs);
        let out = dir.path().join(format!("out{jobs}"));
        let started = std::time::Instant::now();
        let peak = peak_of_run(&[
            &manifest,
            "--server",
            &sim.url,
            "--output",
            out.to_str().unwrap(),
            "--concurrency",
            "8",
        ]);
        eprintln!(
            "{jobs} jobs: peak {} KB, {:.1} s",
            peak >> 10,
            started.elapsed().as_secs_f64()
        );
        peaks.push(peak);
    }
    let grew = peaks[1] - peaks[0];
    assert!(
        grew < GROWTH_BOUND,
        "the runner's peak grew {} KB from {SMALL} to {LARGE} jobs ({} bytes a job)",
        grew >> 10,
        grew / (LARGE - SMALL) as isize
    );
}

/// The jobs of the two runs compared.
const SMALL: usize = 500;
const LARGE: usize = 2_500;

/// What the peak may grow between them: it grew 103 KB (the output
/// folder's sets of 16-byte job keys, by their steps), and 225 KB with one
/// more `String` a job kept by the runner (tried: this test then fails).
const GROWTH_BOUND: isize = 150 << 10;
