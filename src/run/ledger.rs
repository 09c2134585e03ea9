//! The scheduler's bookkeeping as plain data: what becomes of an ended
//! attempt (moved to another server, tried again, or final), the running
//! totals, and when the failure limit stops the run. Pure: no I/O, no
//! clock, no channels; `execute` feeds it and performs what it decides.

use std::collections::HashMap;

use super::job::AttemptEnd;
use super::{Attempt, Outcome, RunStats, Status};
use crate::ids::JobId;

/// How often a job may be moved to another server before it counts as failed.
pub(crate) const MAX_REQUEUES: u32 = 5;

/// What becomes of an ended attempt.
#[derive(Debug)]
pub(crate) enum Settled {
    /// Run it again elsewhere (same attempt number, same prompt id), first
    /// in line: the cause, for the log.
    MoveOn(String),
    /// Log this outcome and run the job again as the next attempt.
    Retry(Outcome),
    /// The job's final outcome (the totals already count it).
    Final(Outcome),
}

/// Retries, moves and totals of one run.
#[derive(Debug)]
pub(crate) struct Ledger {
    retries: u32,
    max_failures: Option<usize>,
    moves: HashMap<JobId, u32>,
    /// The totals so far.
    pub stats: RunStats,
}

impl Ledger {
    /// A run of `total` jobs (`skipped` left out) with `--retries` and
    /// `--max-failures`.
    pub fn new(total: usize, skipped: usize, retries: u32, max_failures: Option<usize>) -> Self {
        Ledger {
            retries,
            max_failures,
            moves: HashMap::new(),
            stats: RunStats {
                total,
                skipped,
                ..RunStats::default()
            },
        }
    }

    /// Decides what becomes of attempt `attempt` of `job` (its `tries`-th
    /// in this run) that ended with `end` on `server`; `cancelled` when the
    /// run stops submitting.
    pub fn settle(
        &mut self,
        job: &JobId,
        attempt: u32,
        tries: u32,
        server: &str,
        end: AttemptEnd,
        cancelled: bool,
    ) -> Settled {
        let outcome = match end {
            AttemptEnd::Requeue(cause) => {
                let n = self.moves.entry(job.clone()).or_insert(0);
                *n += 1;
                if *n <= MAX_REQUEUES && !cancelled {
                    return Settled::MoveOn(cause);
                }
                Outcome {
                    status: if cancelled {
                        Status::Interrupted
                    } else {
                        Status::Failed
                    },
                    images: Vec::new(),
                    text: None,
                    error: Some(cause),
                    attempt: Attempt {
                        number: attempt,
                        server: Some(server.to_string()),
                        ..Attempt::default()
                    },
                }
            }
            AttemptEnd::Done(outcome) => outcome,
        };
        // A timeout may be a slow moment of a shared server: retried as a
        // failure is. A rejection would be refused again.
        let retried = matches!(outcome.status, Status::Failed | Status::Timeout);
        if retried && tries <= self.retries && !cancelled {
            return Settled::Retry(outcome);
        }
        self.moves.remove(job);
        self.stats.done += 1;
        if outcome.status == Status::Ok {
            self.stats.ok += 1;
        } else {
            self.stats.failed += 1;
        }
        Settled::Final(outcome)
    }

    /// A job that waited for its retry when the run stopped: it failed,
    /// and the totals count it so.
    pub fn gave_up(&mut self, job: &JobId) {
        self.moves.remove(job);
        self.stats.done += 1;
        self.stats.failed += 1;
    }

    /// Whether `--max-failures` is reached.
    pub fn failures_exceeded(&self) -> bool {
        self.max_failures
            .is_some_and(|max| self.stats.failed >= max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(status: Status) -> AttemptEnd {
        AttemptEnd::Done(Outcome {
            status,
            images: Vec::new(),
            text: None,
            error: None,
            attempt: Attempt::default(),
        })
    }

    #[test]
    fn a_job_moves_on_a_bounded_number_of_times_then_fails() {
        let mut ledger = Ledger::new(1, 0, 0, None);
        let id = JobId::new("a");
        for _ in 0..MAX_REQUEUES {
            let s = ledger.settle(&id, 1, 1, "s", AttemptEnd::Requeue("lost".into()), false);
            assert!(matches!(s, Settled::MoveOn(cause) if cause == "lost"));
        }
        match ledger.settle(&id, 1, 1, "s", AttemptEnd::Requeue("lost".into()), false) {
            Settled::Final(o) => {
                assert_eq!(o.status, Status::Failed);
                assert_eq!(o.error.as_deref(), Some("lost"));
                assert_eq!(o.attempt.server.as_deref(), Some("s"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(ledger.stats.failed, 1);
    }

    #[test]
    fn a_cancelled_run_moves_nothing_and_logs_interrupted() {
        let mut ledger = Ledger::new(1, 0, 3, None);
        match ledger.settle(
            &JobId::new("a"),
            1,
            1,
            "s",
            AttemptEnd::Requeue("x".into()),
            true,
        ) {
            Settled::Final(o) => assert_eq!(o.status, Status::Interrupted),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn execution_failures_are_retried_up_to_the_limit() {
        let mut ledger = Ledger::new(1, 0, 2, Some(1));
        let id = JobId::new("a");
        assert!(matches!(
            ledger.settle(&id, 1, 1, "s", done(Status::Failed), false),
            Settled::Retry(_)
        ));
        assert!(matches!(
            ledger.settle(&id, 2, 2, "s", done(Status::Failed), false),
            Settled::Retry(_)
        ));
        assert!(!ledger.failures_exceeded());
        assert!(matches!(
            ledger.settle(&id, 3, 3, "s", done(Status::Failed), false),
            Settled::Final(_)
        ));
        assert!(ledger.failures_exceeded());
        // Rejections are final at once.
        let mut ledger = Ledger::new(1, 0, 2, None);
        assert!(matches!(
            ledger.settle(&JobId::new("b"), 1, 1, "s", done(Status::Rejected), false),
            Settled::Final(_)
        ));
        assert_eq!(
            (ledger.stats.done, ledger.stats.ok, ledger.stats.failed),
            (1, 0, 1)
        );
    }

    /// Issue #23: `--retries` retries a timeout as a failure, up to the
    /// same limit, and not once the run is cancelled.
    #[test]
    fn timeouts_are_retried_like_failures() {
        let mut ledger = Ledger::new(1, 0, 1, None);
        let id = JobId::new("a");
        assert!(matches!(
            ledger.settle(&id, 1, 1, "s", done(Status::Timeout), false),
            Settled::Retry(o) if o.status == Status::Timeout
        ));
        assert!(matches!(
            ledger.settle(&id, 2, 2, "s", done(Status::Timeout), false),
            Settled::Final(o) if o.status == Status::Timeout
        ));
        assert_eq!(ledger.stats.failed, 1);
        let mut ledger = Ledger::new(1, 0, 1, None);
        assert!(matches!(
            ledger.settle(&id, 1, 1, "s", done(Status::Timeout), true),
            Settled::Final(_)
        ));
    }
}
