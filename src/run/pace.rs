//! When the runner may be slow to wake: a runner in front of many busy
//! servers is woken by every progress message of every server, and on a
//! virtual machine each wake-up costs more than the message. While every
//! server has a prompt queued behind the one it runs, nothing the runner
//! does is urgent, so the runtime thread dozes briefly before it waits for
//! the sockets again and then reads what arrived meanwhile in one go.
//!
//! Once nothing is left to hand out (every job handed out and its prompt
//! queued on its server: a retry or a moved job near the end counts as
//! work to hand out until then), no server waits for the runner at all:
//! the last jobs' messages wait a doze too, and only the run's end is up
//! to a doze later.
//!
//! An attempt whose timeout fired stops the dozing until it ends (or, when
//! `--queue-timeout` fired as its prompt started, until the run's limit is
//! set instead): its server runs a prompt nobody wants until the runner
//! has read the queue, interrupted or dequeued it and seen it end, each a
//! wait of its own.
//!
//! A finished job's sync may wait as long for other jobs to share it, and
//! it may do so even while a server waits for its next prompt: the slot
//! was given back when the server finished the prompt, so only the row is
//! late, never a server's work. Not once nothing is left to submit and no
//! server has a prompt: then no job can come to share the sync, and the
//! row would only keep the run from ending.
//!
//! Owns the policy (when, how long) and the shared settings the runtime's
//! park hook and the jobs read. Knows nothing of sockets, jobs or files:
//! the scheduler tells it how full the servers are and how long jobs run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// The longest doze: short against any job worth batching for, and a
/// bound on how late a timer, a progress line or a Ctrl-C is seen. Jobs
/// of 400 ms and more reach it.
const MAX_DOZE: Duration = Duration::from_millis(50);

/// A doze of at most this share of the shortest recent job: between a
/// job's end on the server and the next prompt queued behind the running
/// one lie three waits (the end's message, the prompt file, the
/// submission's reply), and they must stay well within the queued job
/// that keeps the server busy meanwhile. Only the first is dozed: the
/// scheduler counts a prompt not yet queued on its server as no work
/// there, so the queued job may be shorter than the recent ones. (An
/// eighth: measured against a twentieth, a seventh less CPU per job with
/// 32 servers, every server as busy.)
const SHARE_OF_JOB: u32 = 8;

/// Dozes shorter than this are not worth a sleep of their own: jobs under
/// 8 ms never doze.
const MIN_DOZE: Duration = Duration::from_millis(1);

/// How many recent jobs' run times the policy looks at.
const RECENT: usize = 8;

/// The doze the runtime thread takes before each park, and the leave a
/// finished job's sync has to gather others; shared between the scheduler
/// (which sets them) and the runtime's park hook and the jobs (which take
/// them).
#[derive(Debug, Default)]
pub struct Pace {
    doze_us: AtomicU64,
    leave_us: AtomicU64,
    /// Attempts whose timeout fired: each must still act on its server
    /// (read the queue, interrupt or dequeue the prompt, see it end), and
    /// the server runs the doomed prompt meanwhile. No dozing while any
    /// is at it.
    hurrying: AtomicUsize,
}

impl Pace {
    /// Called by the runtime before it parks its thread: sleeps for the
    /// current doze, if any. Messages arriving meanwhile wait in the
    /// sockets' buffers and are read together after it.
    pub fn doze(&self) {
        let due = self.due();
        if !due.is_zero() {
            std::thread::sleep(due);
        }
    }

    /// How long the next doze lasts: none while an attempt hurries.
    fn due(&self) -> Duration {
        if self.hurrying.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        self.current()
    }

    /// No dozing until the returned guard is dropped: an attempt whose
    /// timeout fired holds it until it ends.
    pub(crate) fn hurry(self: &Arc<Self>) -> Hurry {
        self.hurrying.fetch_add(1, Ordering::Relaxed);
        Hurry(self.clone())
    }

    /// The current doze.
    pub fn current(&self) -> Duration {
        load(&self.doze_us)
    }

    /// How long a finished job's sync may wait for others to share it.
    pub fn leave(&self) -> Duration {
        load(&self.leave_us)
    }
}

/// See [`Pace::hurry`].
#[derive(Debug)]
pub(crate) struct Hurry(Arc<Pace>);

impl Drop for Hurry {
    fn drop(&mut self) {
        self.0.hurrying.fetch_sub(1, Ordering::Relaxed);
    }
}

fn load(us: &AtomicU64) -> Duration {
    Duration::from_micros(us.load(Ordering::Relaxed))
}

fn store(us: &AtomicU64, value: Duration) {
    let value = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
    us.store(value, Ordering::Relaxed);
}

/// The scheduler's side: what it knows of the servers and the recent jobs,
/// turned into the doze.
#[derive(Debug, Default)]
pub(crate) struct PacePolicy {
    /// Run times (start of execution to its end) of the latest jobs.
    recent: [Duration; RECENT],
    seen: usize,
}

impl PacePolicy {
    /// Notes a job that ran on a server for `ran`.
    pub fn job_ran(&mut self, ran: Duration) {
        self.recent[self.seen % RECENT] = ran;
        self.seen += 1;
    }

    /// The doze for the servers' current load: `in_flight` per live server
    /// (queued and running prompts). Zero unless every live server has work
    /// queued behind its running prompt and the recent jobs were long.
    pub fn doze(&self, in_flight: impl IntoIterator<Item = usize>) -> Duration {
        let mut any = false;
        for n in in_flight {
            if n < 2 {
                // A server that may run dry: its next prompt is urgent.
                return Duration::ZERO;
            }
            any = true;
        }
        if any { self.leave() } else { Duration::ZERO }
    }

    /// The leave a finished job's sync has: as long as a doze, whatever
    /// the servers' load (a late row keeps no server waiting).
    pub fn leave(&self) -> Duration {
        if self.seen < RECENT {
            return Duration::ZERO;
        }
        let shortest = self.recent.iter().min().copied().unwrap_or_default();
        let leave = (shortest / SHARE_OF_JOB).min(MAX_DOZE);
        if leave < MIN_DOZE {
            Duration::ZERO
        } else {
            leave
        }
    }

    /// Sets `pace` to the doze for `in_flight` and the sync leave. Once
    /// nothing is `left` to submit and no server has a prompt of ours, no
    /// other job can end to share a finished job's sync: the leave would
    /// only keep the run from ending.
    pub fn apply<I>(&self, pace: &Pace, in_flight: I, left: bool)
    where
        I: IntoIterator<Item = usize>,
        I::IntoIter: Clone,
    {
        let in_flight = in_flight.into_iter();
        let busy = in_flight.clone().any(|n| n > 0);
        // Nothing left to hand out: no server can run dry for want of a
        // prompt, so the last jobs' messages may wait a doze too (the run
        // ends at most one doze later). Before, every message of the last
        // few hundred milliseconds woke the runner: a fifth of a 32-server
        // run's fixed CPU.
        let doze = match (left, busy) {
            (true, _) => self.doze(in_flight.clone()),
            (false, true) => self.leave(),
            (false, false) => Duration::ZERO,
        };
        let was = pace.current();
        if doze != was {
            if was.is_zero() {
                tracing::debug!("every server has work queued: dozing {doze:?} before each wait");
            } else if doze.is_zero() {
                tracing::debug!("a server may run dry: no more dozing");
            }
            store(&pace.doze_us, doze);
        }
        let leave = if left || busy {
            self.leave()
        } else {
            Duration::ZERO
        };
        store(&pace.leave_us, leave);
    }

    /// Cancelling or done: every wake-up and every row counts now.
    pub fn stop(&self, pace: &Pace) {
        if !pace.current().is_zero() {
            tracing::debug!("stopping: no more dozing");
        }
        store(&pace.doze_us, Duration::ZERO);
        store(&pace.leave_us, Duration::ZERO);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ran(policy: &mut PacePolicy, ms: u64, times: usize) {
        for _ in 0..times {
            policy.job_ran(Duration::from_millis(ms));
        }
    }

    #[test]
    fn no_doze_until_enough_jobs_ran() {
        let mut policy = PacePolicy::default();
        ran(&mut policy, 2000, RECENT - 1);
        assert_eq!(policy.doze([2, 2]), Duration::ZERO);
        ran(&mut policy, 2000, 1);
        assert_eq!(policy.doze([2, 2]), MAX_DOZE);
    }

    #[test]
    fn a_server_that_may_run_dry_wakes_the_runner_at_once() {
        let mut policy = PacePolicy::default();
        ran(&mut policy, 2000, RECENT);
        assert_eq!(policy.doze([2, 1, 2]), Duration::ZERO);
        assert_eq!(policy.doze([2, 0]), Duration::ZERO);
        assert_eq!(policy.doze([]), Duration::ZERO);
        assert_eq!(policy.doze([3, 2]), MAX_DOZE);
    }

    #[test]
    fn the_doze_is_a_small_share_of_the_shortest_recent_job() {
        let mut policy = PacePolicy::default();
        ran(&mut policy, 2000, RECENT - 1);
        ran(&mut policy, 40, 1);
        assert_eq!(policy.doze([2]), Duration::from_millis(5));
        // Instant jobs (a cached rerun, a tiny workflow): never doze.
        ran(&mut policy, 7, 1);
        assert_eq!(policy.doze([2]), Duration::ZERO);
        // Once the short job has left the window, the doze comes back.
        ran(&mut policy, 2000, RECENT);
        assert_eq!(policy.doze([2]), MAX_DOZE);
    }

    #[test]
    fn the_hook_sleeps_only_when_told() {
        let pace = Pace::default();
        let t = std::time::Instant::now();
        pace.doze();
        assert!(t.elapsed() < Duration::from_millis(50));
        let mut policy = PacePolicy::default();
        ran(&mut policy, 2000, RECENT);
        policy.apply(&pace, [2], true);
        assert_eq!(pace.current(), MAX_DOZE);
        let t = std::time::Instant::now();
        pace.doze();
        assert!(t.elapsed() >= MAX_DOZE);
        policy.apply(&pace, [1], true);
        assert_eq!(pace.current(), Duration::ZERO);
    }

    #[test]
    fn no_doze_while_a_timed_out_attempt_acts_on_its_server() {
        // The last job timed out: until its prompt is interrupted and seen
        // to end, the server runs work nobody wants, and the queue read,
        // the interrupt and its end's message would each wait a doze.
        let pace = Arc::new(Pace::default());
        let mut policy = PacePolicy::default();
        ran(&mut policy, 2000, RECENT);
        policy.apply(&pace, [1], false);
        assert_eq!(pace.due(), MAX_DOZE);
        let first = pace.hurry();
        let second = pace.hurry();
        assert_eq!(pace.due(), Duration::ZERO);
        drop(first);
        assert_eq!(pace.due(), Duration::ZERO);
        drop(second);
        assert_eq!(pace.due(), MAX_DOZE);
        // The scheduler's doze is kept meanwhile, not reset.
        assert_eq!(pace.current(), MAX_DOZE);
    }

    #[test]
    fn the_last_jobs_are_dozed_through_once_nothing_is_left_to_hand_out() {
        let pace = Pace::default();
        let mut policy = PacePolicy::default();
        ran(&mut policy, 200, RECENT);
        // A server that could still be refilled wakes the runner at once.
        policy.apply(&pace, [2, 1], true);
        assert_eq!(pace.current(), Duration::ZERO);
        // Nothing left: the servers finishing their last prompts wait.
        policy.apply(&pace, [2, 1], false);
        assert_eq!(pace.current(), Duration::from_millis(25));
        policy.apply(&pace, [0, 1], false);
        assert_eq!(pace.current(), Duration::from_millis(25));
        // The run is over.
        policy.apply(&pace, [0, 0], false);
        assert_eq!(pace.current(), Duration::ZERO);
        // A job handed back (a retry, a lost server's): awake again.
        policy.apply(&pace, [0, 1], true);
        assert_eq!(pace.current(), Duration::ZERO);
        // Short jobs never doze.
        ran(&mut policy, 7, 1);
        policy.apply(&pace, [0, 1], false);
        assert_eq!(pace.current(), Duration::ZERO);
    }

    #[test]
    fn a_sync_may_wait_while_a_server_waits_for_its_next_prompt_but_not_when_stopping() {
        let pace = Pace::default();
        let mut policy = PacePolicy::default();
        ran(&mut policy, 200, RECENT - 1);
        policy.apply(&pace, [2, 1], true);
        assert_eq!(pace.leave(), Duration::ZERO, "too few jobs seen");
        ran(&mut policy, 200, 1);
        policy.apply(&pace, [2, 1], true);
        assert_eq!(pace.current(), Duration::ZERO);
        assert_eq!(pace.leave(), Duration::from_millis(25));
        policy.apply(&pace, [2, 2], true);
        assert_eq!(pace.current(), Duration::from_millis(25));
        policy.stop(&pace);
        assert_eq!(
            (pace.current(), pace.leave()),
            (Duration::ZERO, Duration::ZERO)
        );
        // The run's last prompts: a job ending while another server still
        // runs one may wait for it; the last one to end waits for nobody.
        policy.apply(&pace, [0, 1], false);
        assert_eq!(pace.leave(), Duration::from_millis(25));
        policy.apply(&pace, [0, 0], true);
        assert_eq!(pace.leave(), Duration::from_millis(25), "more to submit");
        policy.apply(&pace, [0, 0], false);
        assert_eq!(pace.leave(), Duration::ZERO, "nothing left to end");
        // Short jobs: no leave either.
        ran(&mut policy, 7, 1);
        policy.apply(&pace, [2, 2], true);
        assert_eq!(
            (pace.current(), pace.leave()),
            (Duration::ZERO, Duration::ZERO)
        );
    }
}
