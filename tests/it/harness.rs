//! Shared test harness: an in-process simulator on 127.0.0.1:0, a fresh
//! project folder per test, and the real `comfy-batch` binary run against
//! them over loopback.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use comfy_batch::sim::{Sim, SimConfig, SimHandle};

/// Starts a simulator with default settings (instant, no faults).
pub async fn sim() -> SimHandle {
    sim_with(SimConfig::default()).await
}

/// Starts a simulator with `config`.
pub async fn sim_with(config: SimConfig) -> SimHandle {
    Sim::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("the simulator starts")
}

/// A temporary project: `workflows/` holds the run fixtures.
pub struct Project {
    pub dir: tempfile::TempDir,
}

/// What a `comfy-batch` invocation did.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    #[allow(dead_code)] // read by some test modules only
    pub stdout: String,
    pub stderr: String,
}

impl Project {
    pub fn new() -> Project {
        let dir = tempfile::tempdir().unwrap();
        let workflows = dir.path().join("workflows");
        std::fs::create_dir_all(&workflows).unwrap();
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/run");
        for entry in std::fs::read_dir(fixtures).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), workflows.join(entry.file_name())).unwrap();
        }
        Project { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes a file (creating folders).
    pub fn write(&self, rel: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// The default output folder used by [`Project::run`].
    pub fn out(&self) -> PathBuf {
        self.path("out")
    }

    /// Runs `comfy-batch ARGS…` in the project folder.
    pub async fn cli(&self, args: &[&str]) -> Output {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_comfy-batch"))
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("COMFY_URL")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap();
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `comfy-batch run MANIFEST --server URL… --output out EXTRA…`.
    pub async fn run(&self, manifest: &str, servers: &[&SimHandle], extra: &[&str]) -> Output {
        let urls: Vec<String> = servers.iter().map(|s| s.url()).collect();
        let mut args = vec!["run", manifest, "--output", "out"];
        for url in &urls {
            args.push("--server");
            args.push(url);
        }
        args.extend_from_slice(extra);
        self.cli(&args).await
    }

    /// The rows of `out/runs.csv` as (column, value) pairs.
    pub fn rows(&self) -> Vec<Row> {
        read_rows(&self.out().join("runs.csv"))
    }
}

/// One CSV row.
#[derive(Debug, Clone)]
pub struct Row(pub Vec<(String, String)>);

impl Row {
    pub fn get(&self, column: &str) -> &str {
        self.0
            .iter()
            .find(|(c, _)| c == column)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no column {column} in {:?}", self.0))
    }

    pub fn images(&self) -> Vec<String> {
        self.get("images")
            .split(';')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }
}

pub fn read_rows(path: &Path) -> Vec<Row> {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect();
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            Row(header
                .iter()
                .cloned()
                .zip(r.iter().map(str::to_string))
                .collect())
        })
        .collect()
}

/// Where the simulator saved a job's first image under our per-job prefix.
pub fn sim_file(sim: &SimHandle, job_id: &str, counter: u32) -> PathBuf {
    sim.output_dir()
        .join("comfy-batch")
        .join(&job_id[..2])
        .join(format!("{job_id}_{counter:05}_.png"))
}
