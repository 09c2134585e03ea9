//! Where a job's file work runs: in place on the runtime thread, or on
//! tokio's blocking pool.
//!
//! Handing a job's few small files to a pool thread and back costs more
//! than writing them: the hand-off wakes a pool thread, then the runtime
//! (with 32 servers, about a tenth of the runner's CPU per job and half
//! its context switches). So small writes run in place while the disk
//! keeps them quick. Large writes (many files or bytes), and every write
//! while recent ones were slow (a network share, a disk stalled by
//! writeback), go to the pool: the runtime thread that pumps every
//! server's websocket never waits long on a disk. Owns that choice and its
//! running measure of "recent"; knows nothing of jobs or files, only
//! counts, sizes and durations.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::outcome::error_line;
use crate::sink::SinkError;

/// Work of more bytes than this goes to the pool (a video, a batch of
/// large images): writing it may take milliseconds even on a quick disk.
pub(crate) const IN_PLACE_MAX_BYTES: usize = 1 << 20;

/// Work of more files than this goes to the pool: each new file costs the
/// file system tens of microseconds however small (a batch of 700 small
/// images took 20 ms).
pub(crate) const IN_PLACE_MAX_FILES: usize = 16;

/// While recent writes took longer than this on average, all go to the pool.
pub(crate) const QUICK: Duration = Duration::from_millis(1);

/// The running average weighs each new write by one part in this many, so
/// one slow write sends the next dozen or so to the pool, and a disk that
/// is quick again gets its writes back in place as soon.
const WEIGHT: u64 = 8;

/// The runner's file work placement. Cheap to share.
#[derive(Debug, Clone, Default)]
pub(crate) struct FileWork {
    /// Recent writes' running average, in microseconds (0 at the start:
    /// a disk is taken as quick until shown slow).
    recent_us: Arc<AtomicU64>,
}

impl FileWork {
    /// A placement that has seen no write yet.
    pub fn new() -> FileWork {
        FileWork::default()
    }

    /// Runs `work`, which writes `files` files of `bytes` bytes in all, in
    /// place or on the pool (see the module doc); its error comes back as
    /// one line.
    pub async fn run<T: Send + 'static>(
        &self,
        files: usize,
        bytes: usize,
        work: impl FnOnce() -> Result<T, SinkError> + Send + 'static,
    ) -> Result<T, String> {
        if self.in_place(files, bytes) {
            return timed(&self.recent_us, work).map_err(|e| error_line(&e));
        }
        let recent = self.recent_us.clone();
        on_pool(move || timed(&recent, work)).await
    }

    /// Whether work of `files` files and `bytes` bytes runs in place now.
    fn in_place(&self, files: usize, bytes: usize) -> bool {
        files <= IN_PLACE_MAX_FILES
            && bytes <= IN_PLACE_MAX_BYTES
            && self.recent_us.load(Ordering::Relaxed) < QUICK.as_micros() as u64
    }
}

/// Runs `work` and folds its duration into `recent` (pool writes count
/// too, or a disk once slow would never be tried in place again).
fn timed<T>(recent: &AtomicU64, work: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let value = work();
    let took = start.elapsed().as_micros().min(u64::MAX as u128) as u64;
    // Writes on the pool may end together: a lost update only delays the
    // average by one write.
    let old = recent.load(Ordering::Relaxed);
    let new = (old - old / WEIGHT).saturating_add(took / WEIGHT);
    recent.store(new, Ordering::Relaxed);
    value
}

/// Runs file work on the blocking pool, never on the runtime thread that
/// also pumps websockets (reading a local input of any size, say); the
/// error comes back as one line.
pub(crate) async fn on_pool<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, SinkError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(error_line(&e)),
        Err(e) => Err(format!("writing files: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread::{self, ThreadId};

    /// The thread `work` ran on, placed by `files` for one file of `bytes`
    /// bytes.
    async fn thread_of(files: &FileWork, bytes: usize, pause: Duration) -> ThreadId {
        files
            .run(1, bytes, move || {
                thread::sleep(pause);
                Ok(thread::current().id())
            })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn small_quick_writes_run_in_place_and_large_ones_on_the_pool() {
        let files = FileWork::new();
        let here = thread::current().id();
        for _ in 0..20 {
            assert_eq!(thread_of(&files, 40_000, Duration::ZERO).await, here);
        }
        assert_ne!(
            thread_of(&files, IN_PLACE_MAX_BYTES + 1, Duration::ZERO).await,
            here
        );
        assert_eq!(
            thread_of(&files, IN_PLACE_MAX_BYTES, Duration::ZERO).await,
            here
        );
    }

    #[tokio::test]
    async fn a_slow_write_sends_the_next_ones_to_the_pool_until_writes_are_quick_again() {
        let files = FileWork::new();
        let here = thread::current().id();
        // The slow write itself ran in place: nothing said it would be slow.
        assert_eq!(thread_of(&files, 10, Duration::from_millis(40)).await, here);
        let mut on_pool = 0;
        while thread_of(&files, 10, Duration::ZERO).await != here {
            on_pool += 1;
            assert!(on_pool < 100, "never back in place");
        }
        // 40 ms weighs 5 ms; each quick write takes an eighth off: 13
        // writes until the average is under a millisecond (a few more on a
        // busy machine, where a quick write may be preempted).
        assert!((10..=40).contains(&on_pool), "{on_pool} writes on the pool");
        assert_eq!(thread_of(&files, 10, Duration::ZERO).await, here);
    }

    #[tokio::test]
    async fn errors_come_back_as_one_line_from_either_place() {
        let fail = || -> Result<(), SinkError> {
            Err(SinkError {
                path: "out/images/a.png".into(),
                source: std::io::Error::other("disk on fire"),
            })
        };
        let files = FileWork::new();
        let in_place = files.run(1, 10, fail).await.unwrap_err();
        let pooled = files
            .run(1, IN_PLACE_MAX_BYTES + 1, fail)
            .await
            .unwrap_err();
        assert_eq!(in_place, pooled);
        assert!(in_place.contains("out/images/a.png") && in_place.contains("disk on fire"));
    }
}
