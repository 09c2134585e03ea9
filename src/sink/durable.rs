//! Group commit on a thread of its own: files reach the disk before a log
//! row names them, and jobs ending together share one sync of the file
//! system (each sync has a fixed cost, often milliseconds).
//!
//! Requests queue on a channel; one thread takes every request waiting,
//! syncs once for all of them and answers each. Nobody blocks a thread to
//! wait: an async caller awaits its answer, so a hundred jobs waiting for
//! a sync cost a hundred small futures, not a hundred sleeping threads
//! woken together (on a virtual machine the wake-ups cost more than the
//! sync). While the thread gathers, a request joins the queue without
//! waking it unless it may not wait that long. Owns when to sync and
//! what; knows nothing of jobs, rows or the runner, only paths and how
//! long a caller lets a sync wait.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering, fence};
use std::sync::{Arc, OnceLock, mpsc};
use std::thread::Thread;
use std::time::{Duration, Instant};

use super::SinkError;

/// The answer to one request: `Err` says why the sync failed.
type Reply = Box<dyn FnOnce(Result<(), String>) + Send>;

/// One caller's files.
struct Request {
    /// Files to make durable.
    paths: Vec<PathBuf>,
    /// How long after the previous sync started this one may wait to
    /// gather others.
    gather: Duration,
    reply: Reply,
}

/// The output folder's group commit. Cheap to share; its thread starts
/// with the first request and ends when the last handle is dropped.
#[derive(Debug)]
pub(crate) struct Syncer {
    root: PathBuf,
    queue: OnceLock<Queue>,
    /// While the thread gathers: the leave (in microseconds) it waits out
    /// after the previous sync started; 0 when it does not gather.
    gathering: Arc<AtomicU64>,
    /// Syncs run so far (for tests and curious readers).
    syncs: Arc<AtomicU64>,
    /// Gathers cut short by a request that could not wait (for tests).
    wakes: AtomicU64,
}

/// The way to the sync thread.
#[derive(Debug)]
struct Queue {
    requests: mpsc::Sender<Request>,
    /// The thread, to wake from its gather (none: it could not start).
    thread: Option<Thread>,
}

impl Syncer {
    /// A syncer for the file system holding `root`.
    pub fn new(root: &Path) -> Syncer {
        Syncer {
            root: root.to_path_buf(),
            queue: OnceLock::new(),
            gathering: Arc::default(),
            syncs: Arc::default(),
            wakes: AtomicU64::new(0),
        }
    }

    /// How many syncs ran.
    #[cfg(test)]
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// How many requests woke the thread from a gather.
    #[cfg(test)]
    pub fn wakes(&self) -> u64 {
        self.wakes.load(Ordering::Relaxed)
    }

    /// Makes `paths` durable, waiting without holding a thread. A sync
    /// waits first until the least `gather` of the callers it serves after
    /// the previous one started.
    pub async fn durable(&self, paths: Vec<PathBuf>, gather: Duration) -> Result<(), SinkError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let reply: Reply = Box::new(move |result| {
            let _ = tx.send(result);
        });
        if !self.send(paths, gather, reply) {
            return Ok(());
        }
        let result = rx
            .await
            .unwrap_or_else(|_| Err("the sync thread ended".into()));
        self.error(result)
    }

    /// [`Syncer::durable`] for callers off the runtime: blocks the thread.
    pub fn durable_blocking(&self, paths: Vec<PathBuf>, gather: Duration) -> Result<(), SinkError> {
        let (tx, rx) = mpsc::channel();
        let reply: Reply = Box::new(move |result| {
            let _ = tx.send(result);
        });
        if !self.send(paths, gather, reply) {
            return Ok(());
        }
        let result = rx
            .recv()
            .unwrap_or_else(|_| Err("the sync thread ended".into()));
        self.error(result)
    }

    /// Queues a request; false when there is nothing to sync.
    fn send(&self, paths: Vec<PathBuf>, gather: Duration, reply: Reply) -> bool {
        if paths.is_empty() {
            return false;
        }
        let request = Request {
            paths,
            gather,
            reply,
        };
        let queue = self.queue();
        if let Err(mpsc::SendError(request)) = queue.requests.send(request) {
            // The thread is gone (it panicked): say so rather than hang.
            (request.reply)(Err("the sync thread ended".into()));
            return true;
        }
        // A gathering thread sleeps without watching the queue: wake it only
        // if this request may not wait as long. Paired with the fence in
        // `serve`: either this sees the gather, or the thread sees this
        // request before it sleeps.
        fence(Ordering::SeqCst);
        let leave = self.gathering.load(Ordering::SeqCst);
        if leave != 0
            && gather.as_micros() < u128::from(leave)
            && let Some(thread) = &queue.thread
        {
            self.wakes.fetch_add(1, Ordering::Relaxed);
            thread.unpark();
        }
        true
    }

    fn error(&self, result: Result<(), String>) -> Result<(), SinkError> {
        result.map_err(|why| SinkError {
            path: self.root.clone(),
            source: std::io::Error::other(why),
        })
    }

    fn queue(&self) -> &Queue {
        self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel();
            let (root, syncs) = (self.root.clone(), self.syncs.clone());
            let gathering = self.gathering.clone();
            let spawned = std::thread::Builder::new()
                .name("comfy-batch-sync".into())
                .spawn(move || serve(&root, &rx, &gathering, &syncs));
            let thread = match spawned {
                Ok(handle) => Some(handle.thread().clone()),
                Err(e) => {
                    // No thread: every request is answered with why.
                    tracing::warn!("cannot start the sync thread: {e}");
                    None
                }
            };
            Queue {
                requests: tx,
                thread,
            }
        })
    }
}

/// The sync thread: takes every request waiting, waits out the gather,
/// syncs once, answers each. Ends when every handle is gone.
fn serve(root: &Path, queue: &mpsc::Receiver<Request>, gathering: &AtomicU64, syncs: &AtomicU64) {
    let mut last_start: Option<Instant> = None;
    let mut batch: Vec<Request> = Vec::new();
    let mut paths: Vec<PathBuf> = Vec::new();
    // Every request has files (`send` keeps empty ones off the queue).
    let take = |mut request: Request, batch: &mut Vec<Request>, paths: &mut Vec<PathBuf>| {
        paths.append(&mut request.paths);
        batch.push(request);
    };
    while let Ok(first) = queue.recv() {
        take(first, &mut batch, &mut paths);
        while let Ok(more) = queue.try_recv() {
            take(more, &mut batch, &mut paths);
        }
        // Too soon after the last sync: wait, gathering the jobs that end
        // meanwhile (one that may not wait cuts it short: it wakes us).
        loop {
            let leave = batch.iter().map(|r| r.gather).min();
            let wait = match (last_start, leave) {
                (Some(t), Some(leave)) => leave.saturating_sub(t.elapsed()),
                _ => Duration::ZERO,
            };
            let Some(leave) = leave.filter(|_| !wait.is_zero()) else {
                break;
            };
            let leave_us = u64::try_from(leave.as_micros()).unwrap_or(u64::MAX);
            gathering.store(leave_us.max(1), Ordering::SeqCst);
            fence(Ordering::SeqCst);
            // Requests queued before the store may not have woken us.
            let before = batch.len();
            while let Ok(more) = queue.try_recv() {
                take(more, &mut batch, &mut paths);
            }
            if batch.len() == before {
                std::thread::park_timeout(wait);
            }
            gathering.store(0, Ordering::SeqCst);
            while let Ok(more) = queue.try_recv() {
                take(more, &mut batch, &mut paths);
            }
        }
        if batch.is_empty() {
            continue;
        }
        last_start = Some(Instant::now());
        let result = sync_files(root, &paths).map_err(|e| e.to_string());
        syncs.fetch_add(1, Ordering::Relaxed);
        paths.clear();
        for request in batch.drain(..) {
            (request.reply)(result.clone());
        }
    }
}

/// Syncs files' data and names. Linux syncs the whole file system in one
/// call (far cheaper than a sync per file); elsewhere each file, then each
/// folder holding one.
fn sync_files(root: &Path, files: &[PathBuf]) -> Result<(), SinkError> {
    if files.is_empty() {
        return Ok(());
    }
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let dir = fs::File::open(root).map_err(SinkError::at(root))?;
        // SAFETY: syncfs on a descriptor we own; no memory is shared.
        if unsafe { libc::syncfs(dir.as_raw_fd()) } == 0 {
            return Ok(());
        }
    }
    let _ = root;
    sync_each(files)
}

/// The portable way: each file's data, then each folder holding one.
fn sync_each(files: &[PathBuf]) -> Result<(), SinkError> {
    let mut dirs: Vec<&Path> = Vec::new();
    for file in files {
        // Windows flushes only through a handle that may write
        // (`FlushFileBuffers` wants GENERIC_WRITE; a read-only handle gets
        // "access denied"); opening for writing truncates nothing.
        #[cfg(windows)]
        let opened = fs::OpenOptions::new().write(true).open(file);
        #[cfg(not(windows))]
        let opened = fs::File::open(file);
        opened
            .and_then(|f| f.sync_data())
            .map_err(SinkError::at(file))?;
        if let Some(dir) = file.parent()
            && !dirs.contains(&dir)
        {
            dirs.push(dir);
        }
    }
    for dir in dirs {
        super::files::sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GATHER: Duration = Duration::from_millis(20);

    /// `n` async callers, each with a file of its own, asking at once; all
    /// must succeed.
    async fn callers_at_once(syncer: &Arc<Syncer>, root: &Path, n: usize, gather: Duration) {
        let waits: Vec<_> = (0..n)
            .map(|n| {
                let paths = files(root, &[&format!("{n}.png")]);
                let syncer = syncer.clone();
                tokio::spawn(async move { syncer.durable(paths, gather).await })
            })
            .collect();
        for wait in waits {
            wait.await.unwrap().unwrap();
        }
    }

    fn files(root: &Path, names: &[&str]) -> Vec<PathBuf> {
        names
            .iter()
            .map(|n| {
                let p = root.join(n);
                fs::write(&p, n).unwrap();
                p
            })
            .collect()
    }

    #[test]
    fn the_per_file_way_syncs_the_sinks_files_and_leaves_them_whole() {
        // Where the file system cannot be synced in one call (anything but
        // Linux, or a failed syncfs) each file is: on Windows that needs a
        // handle that may write.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("images")).unwrap();
        let paths = files(dir.path(), &["images/a.png", "b.json"]);
        sync_each(&paths).unwrap();
        assert_eq!(fs::read(&paths[0]).unwrap(), b"images/a.png");
        assert_eq!(fs::read(&paths[1]).unwrap(), b"b.json");
        let gone = dir.path().join("gone.png");
        let err = sync_each(std::slice::from_ref(&gone)).unwrap_err();
        assert_eq!(err.path, gone);
    }

    #[test]
    fn callers_ending_together_share_syncs_and_all_return() {
        let dir = tempfile::tempdir().unwrap();
        let syncer = Syncer::new(dir.path());
        std::thread::scope(|scope| {
            for n in 0..16 {
                let (syncer, root) = (&syncer, dir.path());
                scope.spawn(move || {
                    let paths = files(root, &[&format!("{n}.png")]);
                    syncer.durable_blocking(paths, GATHER).unwrap();
                });
            }
        });
        let syncs = syncer.syncs();
        assert!((1..=16).contains(&syncs), "{syncs}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn callers_that_may_wait_as_long_join_a_gather_without_waking_the_thread() {
        let dir = tempfile::tempdir().unwrap();
        let syncer = Arc::new(Syncer::new(dir.path()));
        let leave = Duration::from_millis(400);
        // A first sync, so the next one has one to wait after.
        syncer
            .durable(files(dir.path(), &["first.png"]), leave)
            .await
            .unwrap();
        let t = Instant::now();
        callers_at_once(&syncer, dir.path(), 20, leave).await;
        assert_eq!(syncer.wakes(), 0, "nobody needed the gather cut short");
        assert_eq!(syncer.syncs(), 2, "the twenty shared one sync");
        assert!(t.elapsed() >= leave / 2, "{:?}", t.elapsed());
        // One that may not wait wakes the thread and is served at once.
        let hurry = files(dir.path(), &["hurry.png"]);
        let (slow, t) = (
            {
                let syncer = syncer.clone();
                let paths = files(dir.path(), &["slow.png"]);
                tokio::spawn(async move { syncer.durable(paths, leave * 10).await })
            },
            Instant::now(),
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        syncer.durable(hurry, Duration::ZERO).await.unwrap();
        slow.await.unwrap().unwrap();
        assert!(t.elapsed() < leave * 5, "{:?}", t.elapsed());
        assert_eq!(syncer.wakes(), 1);
    }

    #[tokio::test]
    async fn async_callers_wait_without_a_thread_each_and_share_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let syncer = Arc::new(Syncer::new(dir.path()));
        // The first sync has no previous one to wait for; the hundred
        // callers queued behind it on this one thread share the next
        // (a long gather: a loaded machine must not split them).
        callers_at_once(&syncer, dir.path(), 100, Duration::from_millis(300)).await;
        assert!(syncer.syncs() <= 2, "{}", syncer.syncs());
    }

    #[test]
    fn every_caller_of_failing_syncs_gets_the_error() {
        // A folder that is gone: every sync fails, whoever asked for it.
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        let syncer = Syncer::new(&gone);
        let results: Vec<bool> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..16)
                .map(|n| {
                    let (syncer, gone) = (&syncer, &gone);
                    scope.spawn(move || {
                        syncer
                            .durable_blocking(vec![gone.join(format!("{n}.png"))], GATHER)
                            .is_err()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(results.iter().all(|&failed| failed), "{results:?}");
    }

    #[test]
    fn a_sync_that_may_not_wait_cuts_short_another_callers_gather() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let syncer = Syncer::new(root);
        let (a, b) = (files(root, &["a.png"]), files(root, &["b.png"]));
        syncer.durable_blocking(a.clone(), Duration::ZERO).unwrap();
        let long = Duration::from_secs(3);
        std::thread::scope(|scope| {
            // A caller with a long leave starts gathering the next sync...
            let slow = scope.spawn(|| syncer.durable_blocking(a, long).unwrap());
            std::thread::sleep(Duration::from_millis(100));
            // ...and one with none (short jobs, or a run stopping) joins it: it
            // must not wait out the other's leave.
            let t = Instant::now();
            syncer.durable_blocking(b, Duration::ZERO).unwrap();
            assert!(t.elapsed() < long / 2, "{:?}", t.elapsed());
            slow.join().unwrap();
        });
        assert_eq!(syncer.syncs(), 2, "they shared it");
    }

    #[test]
    fn syncs_in_a_row_are_spaced_out_only_when_the_caller_lets_them_wait() {
        let dir = tempfile::tempdir().unwrap();
        let syncer = Syncer::new(dir.path());
        let a = files(dir.path(), &["a.png"]);
        let t = Instant::now();
        for _ in 0..3 {
            syncer.durable_blocking(a.clone(), GATHER).unwrap();
        }
        assert!(t.elapsed() >= 2 * GATHER, "{:?}", t.elapsed());
        // Without leave to wait (short jobs, or a run stopping)
        // nothing does: a hundred syncs in a row take less than the
        // hundred gathers they would otherwise wait out.
        let t = Instant::now();
        for _ in 0..100 {
            syncer.durable_blocking(a.clone(), Duration::ZERO).unwrap();
        }
        assert!(t.elapsed() < 100 * GATHER, "{:?}", t.elapsed());
        assert_eq!(syncer.syncs(), 103);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_request_with_nothing_to_sync_neither_waits_nor_delays_the_next_sync() {
        // A job that failed before its prompt file was written has nothing
        // to make durable: it must not wait out the gather for an empty
        // sync, nor count as a sync that pushes the next one back.
        let dir = tempfile::tempdir().unwrap();
        let syncer = Syncer::new(dir.path());
        let a = files(dir.path(), &["a.png"]);
        syncer.durable(a.clone(), Duration::ZERO).await.unwrap();
        let t = Instant::now();
        syncer.durable(Vec::new(), GATHER).await.unwrap();
        assert!(t.elapsed() < GATHER, "{:?}", t.elapsed());
        assert_eq!(syncer.syncs(), 1, "no sync for nothing");
        syncer.durable(a, Duration::ZERO).await.unwrap();
        assert_eq!(syncer.syncs(), 2);
    }
}
