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

/// What the binary reads from its environment that the host running the
/// tests may set: the server, GitHub's summary file and annotations, and
/// the shard variables of `--shard auto`. On a CI runner a test would
/// otherwise append to the real job summary or run one shard of its plan.
pub const HOST_VARIABLES: [&str; 10] = [
    "COMFY_URL",
    "GITHUB_STEP_SUMMARY",
    "GITHUB_ACTIONS",
    "CI_NODE_INDEX",
    "CI_NODE_TOTAL",
    "CIRCLE_NODE_INDEX",
    "CIRCLE_NODE_TOTAL",
    "BUILDKITE_PARALLEL_JOB",
    "BUILDKITE_PARALLEL_JOB_COUNT",
    "JOB_COMPLETION_INDEX",
];

/// `comfy-batch` as every test runs it: none of the host's
/// [`HOST_VARIABLES`] (a test sets the ones it means), `RUST_LOG=warn`.
pub fn comfy_batch() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_comfy-batch"));
    without_host_variables(&mut command).env("RUST_LOG", "warn");
    command
}

/// `command` (a shell that runs the binary, say) without the host's
/// [`HOST_VARIABLES`].
pub fn without_host_variables(command: &mut std::process::Command) -> &mut std::process::Command {
    for name in HOST_VARIABLES {
        command.env_remove(name);
    }
    command
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
        self.cli_env(args, &[]).await
    }

    /// [`Project::cli`] with its environment changed: `(NAME, Some(v))`
    /// sets a variable, `(NAME, None)` removes it (the host's
    /// [`HOST_VARIABLES`] are removed and `RUST_LOG` is `warn` unless set
    /// here).
    pub async fn cli_env(&self, args: &[&str], env: &[(&str, Option<&str>)]) -> Output {
        let mut command = tokio::process::Command::from(comfy_batch());
        command
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        for (name, value) in env {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
        let run = command.output();
        // A hang fails the test (and kills the child) instead of blocking
        // the whole suite.
        let out = tokio::time::timeout(std::time::Duration::from_secs(180), run)
            .await
            .unwrap_or_else(|_| panic!("comfy-batch {args:?} did not exit within 180 s"))
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
        self.run_urls(manifest, &urls, extra).await
    }

    /// [`Project::run`] against servers given by URL (proxies, fronts).
    pub async fn run_urls(&self, manifest: &str, urls: &[String], extra: &[&str]) -> Output {
        let mut args = vec!["run", manifest, "--output", "out"];
        for url in urls {
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

// ---------------------------------------------------------------------------
// Helpers for the fault and resume tests (issue #5).

/// Polls `condition` every 20 ms until it holds; panics with `what` after
/// `secs` seconds (generous: the machine may be loaded).
#[allow(dead_code)]
pub async fn wait_for(what: &str, secs: u64, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A `comfy-batch run` in the background, for signals.
#[allow(dead_code)]
pub struct Running {
    pub child: tokio::process::Child,
    stderr: PathBuf,
}

#[allow(dead_code)]
impl Running {
    pub fn pid(&self) -> i32 {
        self.child.id().expect("the child runs") as i32
    }

    /// Sends a signal (SIGINT, SIGKILL…) to the process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", self.pid());
    }

    /// What it wrote on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits for the exit (at most `secs` seconds) and returns its code
    /// (`-9` for SIGKILL).
    pub async fn exit(&mut self, secs: u64) -> i32 {
        let status = tokio::time::timeout(std::time::Duration::from_secs(secs), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("no exit within {secs}s; stderr:\n{}", self.stderr()))
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        status
            .code()
            .or_else(|| status.signal().map(|s| -s))
            .unwrap_or(-1)
    }
}

#[allow(dead_code)]
impl Project {
    /// Starts `comfy-batch run MANIFEST --server URL… --output out EXTRA…`
    /// without waiting; stderr goes to a file in the project.
    pub fn spawn(&self, manifest: &str, servers: &[&SimHandle], extra: &[&str]) -> Running {
        let urls: Vec<String> = servers.iter().map(|s| s.url()).collect();
        self.spawn_urls(manifest, &urls, extra)
    }

    /// Data rows in `out/runs.csv` (0 before it exists).
    pub fn row_count(&self) -> usize {
        let path = self.out().join("runs.csv");
        match std::fs::read_to_string(path) {
            Ok(text) => text.lines().count().saturating_sub(1),
            Err(_) => 0,
        }
    }

    /// Asserts the outcome every reliability test wants: each of the `jobs`
    /// job ids has exactly one `ok` row, which is its newest row; every
    /// image it lists is there; no temporary file is left; the CSV ends
    /// with a whole line. Returns the newest row per job.
    pub fn assert_each_job_ok_once(&self, jobs: usize) -> Vec<Row> {
        let text = std::fs::read_to_string(self.out().join("runs.csv")).unwrap();
        assert!(text.ends_with('\n'), "torn last line:\n{text}");
        let rows = self.rows();
        let mut newest: std::collections::BTreeMap<String, Row> = Default::default();
        let mut oks: std::collections::BTreeMap<String, usize> = Default::default();
        for row in &rows {
            if row.get("status") == "ok" {
                *oks.entry(row.get("job_id").to_string()).or_default() += 1;
            }
            newest.insert(row.get("job_id").to_string(), row.clone());
        }
        assert_eq!(newest.len(), jobs, "jobs in the log:\n{text}");
        for (id, row) in &newest {
            assert_eq!(row.get("status"), "ok", "newest row of {id}:\n{text}");
            assert_eq!(oks.get(id), Some(&1), "ok rows of {id}:\n{text}");
            assert!(!row.images().is_empty(), "{row:?}");
            for image in row.images() {
                assert!(self.out().join(&image).is_file(), "{image} missing");
            }
        }
        for dir in ["images", "prompts", "inputs"] {
            let Ok(entries) = std::fs::read_dir(self.out().join(dir)) else {
                continue;
            };
            for entry in entries {
                let name = entry.unwrap().file_name().to_string_lossy().into_owned();
                assert!(!name.starts_with(".tmp-"), "{dir}/{name} left behind");
            }
        }
        newest.into_values().collect()
    }
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::SeqCst).to_string()
}

/// GETs JSON from a simulator, trying again on its injected 500s.
#[allow(dead_code)]
pub async fn get_json(url: &str) -> serde_json::Value {
    for _ in 0..50 {
        let response = reqwest::get(url).await.unwrap();
        if response.status().is_success() {
            return response.json().await.unwrap();
        }
    }
    panic!("{url}: no success in 50 tries")
}

/// The prompt ids on a server's queue: (running, pending).
#[allow(dead_code)]
pub async fn queue_ids(sim: &SimHandle) -> (Vec<String>, Vec<String>) {
    let queue = get_json(&format!("{}/queue", sim.url())).await;
    let ids = |key: &str| -> Vec<String> {
        queue[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| item.get(1).and_then(|v| v.as_str()).map(str::to_string))
            .collect()
    };
    (ids("queue_running"), ids("queue_pending"))
}

/// A manifest of `n` sampler jobs (t2i, 4 steps: 4 × `step_ms` each).
#[allow(dead_code)]
pub fn sampler_jobs(n: usize) -> String {
    let seeds: Vec<String> = (1..=n).map(|s| s.to_string()).collect();
    format!(
        "version: 1\nworkflows:\n  t2i: workflows/t2i.json\njobs:\n  - name: fox\n    workflow: t2i\n    seeds: [{}]\n",
        seeds.join(", ")
    )
}

/// A TCP proxy in front of a server that can go silent: after
/// [`Proxy::freeze`] it forwards nothing more either way and answers no new
/// connection, yet closes nothing (a frozen machine or a dead network path,
/// which only timeouts and heartbeats can tell).
#[allow(dead_code)]
pub struct Proxy {
    addr: std::net::SocketAddr,
    /// `GET /queue` requests seen (every request, keep-alive included).
    queue_gets: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Connections accepted.
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    frozen: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

#[allow(dead_code)]
impl Proxy {
    pub async fn start(target: std::net::SocketAddr) -> Proxy {
        Proxy::start_with(target, None).await
    }

    /// A proxy that delivers everything the server sends on `/ws`
    /// connections `lag` late (a socket running behind HTTP), and the rest
    /// at once.
    pub async fn lagging_ws(target: std::net::SocketAddr, lag: std::time::Duration) -> Proxy {
        Proxy::start_with(target, Some(lag)).await
    }

    async fn start_with(
        target: std::net::SocketAddr,
        ws_lag: Option<std::time::Duration>,
    ) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (frozen, watch) = tokio::sync::watch::channel(false);
        let queue_gets = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = queue_gets.clone();
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let accepted = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let watch = watch.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    if *watch.borrow() {
                        // Accepted, never answered.
                        let _held = &client;
                        std::future::pending::<()>().await;
                    }
                    let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let mut head = [0u8; 8];
                    let n = client.peek(&mut head).await.unwrap_or(0);
                    let lag = ws_lag.filter(|_| head[..n].starts_with(b"GET /ws"));
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let up = tokio::spawn(pipe(cr, sw, watch.clone(), Some(counter)));
                    match lag {
                        Some(lag) => lagging_pipe(sr, cw, lag).await,
                        None => pipe(sr, cw, watch, None).await,
                    }
                    let _ = up.await;
                });
            }
        });
        Proxy {
            addr,
            queue_gets,
            connections,
            frozen,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many `GET /queue` requests went through.
    pub fn queue_gets(&self) -> usize {
        self.queue_gets.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// How many connections it accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP proxy that resets (RST, nothing forwarded) every connection that
/// carried a `/object_info` request as soon as another request comes on
/// it: a middlebox that forgot the preflight's connections while they sat
/// idle, so the run's first requests on them fail after being sent.
pub struct ResettingProxy {
    addr: std::net::SocketAddr,
    resets: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl ResettingProxy {
    pub async fn start(target: std::net::SocketAddr) -> ResettingProxy {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let resets = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = resets.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let down = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut sr, &mut cw).await;
                        cw
                    });
                    let mut preflight = false;
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = cr.read(&mut buf).await {
                        let chunk = &buf[..n];
                        // hyper writes a request's head in one piece.
                        let request = [&b"GET "[..], b"POST "]
                            .iter()
                            .any(|m| chunk.starts_with(m));
                        let catalogue = chunk.starts_with(b"GET /object_info");
                        if request && preflight && !catalogue {
                            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            // Closed with unread data and no linger: RST.
                            let _ = cr.as_ref().set_zero_linger();
                            down.abort();
                            let _ = down.await;
                            return;
                        }
                        preflight |= catalogue;
                        if sw.write_all(chunk).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        ResettingProxy { addr, resets, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many connections it reset.
    pub fn resets(&self) -> usize {
        self.resets.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for ResettingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies bytes until EOF, each chunk delivered `lag` after it was read.
async fn lagging_pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    lag: std::time::Duration,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at + lag).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf).await {
        if tx
            .send((tokio::time::Instant::now(), buf[..n].to_vec()))
            .is_err()
        {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// Copies bytes until EOF; once frozen, holds both ends forever.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: tokio::sync::watch::Receiver<bool>,
    queue_gets: Option<std::sync::Arc<std::sync::atomic::AtomicUsize>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            n = from.read(&mut buf) => n,
            _ = frozen.wait_for(|f| *f) => Ok(0),
        };
        if *frozen.borrow() {
            let _held = (from, to);
            std::future::pending::<()>().await;
            return;
        }
        match n {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if let Some(count) = &queue_gets {
                    let seen = buf[..n].windows(10).filter(|w| w == b"GET /queue").count();
                    count.fetch_add(seen, std::sync::atomic::Ordering::SeqCst);
                }
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

impl Project {
    /// [`Project::spawn`] with server URLs as given (e.g. a [`Proxy`]).
    #[allow(dead_code)]
    pub fn spawn_urls(&self, manifest: &str, urls: &[String], extra: &[&str]) -> Running {
        self.spawn_logging(manifest, urls, extra, "warn")
    }

    /// [`Project::spawn_urls`] with `RUST_LOG` set to `log`.
    #[allow(dead_code)]
    pub fn spawn_logging(
        &self,
        manifest: &str,
        urls: &[String],
        extra: &[&str],
        log: &str,
    ) -> Running {
        self.spawn_env(manifest, urls, extra, log, &[])
    }

    /// [`Project::spawn_logging`] with more environment variables (`env`).
    #[allow(dead_code)]
    pub fn spawn_env(
        &self,
        manifest: &str,
        urls: &[String],
        extra: &[&str],
        log: &str,
        env: &[(&str, &str)],
    ) -> Running {
        let mut args = vec![
            "run".to_string(),
            manifest.to_string(),
            "--output".into(),
            "out".into(),
        ];
        for url in urls {
            args.push("--server".into());
            args.push(url.clone());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let stderr = self.path(&format!("stderr-{}.txt", rand_suffix()));
        let child = tokio::process::Command::from(comfy_batch())
            .args(&args)
            .current_dir(self.dir.path())
            .env("RUST_LOG", log)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Running { child, stderr }
    }
}

/// A loopback address that refuses connections: a socket bound but never
/// listening, held by the returned value so no other test (or simulator) is
/// given the port meanwhile, as it could be a port bound and closed again.
pub fn refusing_address() -> (tokio::net::TcpSocket, String) {
    let hold = tokio::net::TcpSocket::new_v4().unwrap();
    hold.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let url = format!("http://{}", hold.local_addr().unwrap());
    (hold, url)
}

#[test]
fn every_binary_a_test_runs_is_without_the_hosts_ci_variables() {
    // Each variable the binary reads from a CI (docs/ci.md), removed from
    // the command every test builds: on a GitHub runner a test would
    // otherwise append to the real job summary.
    let command = comfy_batch();
    let removed: Vec<String> = command
        .get_envs()
        .filter(|(_, value)| value.is_none())
        .map(|(name, _)| name.to_string_lossy().into_owned())
        .collect();
    for name in HOST_VARIABLES {
        assert!(
            removed.iter().any(|r| r == name),
            "{name} is kept: {removed:?}"
        );
    }
    let documented =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ci.md")).unwrap();
    for name in HOST_VARIABLES.iter().filter(|n| **n != "COMFY_URL") {
        assert!(
            documented.contains(name),
            "{name} is not a CI variable of docs/ci.md"
        );
    }
}

/// Makes a FIFO at `path` (creating folders): opening it for reading
/// waits for a writer, so a command that opens one it should not hangs.
#[cfg(unix)]
pub fn mkfifo(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(
        unsafe { libc::mkfifo(c.as_ptr(), 0o644) },
        0,
        "mkfifo {}",
        path.display()
    );
}
