//! What the scheduler reports: the only coupling between `run` and its
//! consumers (the CSV sink and the reporters). Events carry the running
//! totals so consumers keep no counters of their own.

use std::sync::Arc;
use std::time::Duration;

use crate::ids::{JobId, PromptId, ServerId};
pub use crate::outcome::{Attempt, Outcome, Status};
use crate::plan::Job;

/// A job as the reports of jobs not run show it: its identity and
/// parameters, without the prompt (which costs most to build, and which a
/// run stopped early must not build for every job it leaves).
#[derive(Debug, Clone)]
pub struct JobBrief {
    /// The job id.
    pub id: JobId,
    /// `group#n`.
    pub label: String,
    /// The seed, if any.
    pub seed: Option<u64>,
    /// Its parameters as `runs.csv` cells (names as in the manifest).
    pub params: Vec<(String, String)>,
}

impl JobBrief {
    /// The brief of a job already built.
    pub fn of(job: &Job) -> JobBrief {
        JobBrief {
            id: job.id.clone(),
            label: job.label.clone(),
            seed: job.seed,
            params: job
                .params
                .iter()
                .map(|(n, v)| (n.clone(), crate::runlog::cell(v)))
                .collect(),
        }
    }
}

/// One event, stamped with the time since the run started.
#[derive(Debug, Clone)]
pub struct RunEvent {
    /// Time since the run started.
    pub at: Duration,
    /// What happened.
    pub kind: EventKind,
}

impl RunEvent {
    /// The row this event adds to the run's log, if any: each attempt
    /// retried, and a finished job's final one (unless it is a row already,
    /// see [`EventKind::JobFinished`]'s `logged`).
    pub fn log_row(&self) -> Option<(&Job, &Outcome)> {
        match &self.kind {
            EventKind::JobFinished {
                job,
                outcome,
                logged: false,
                ..
            }
            | EventKind::JobRetrying { job, outcome, .. } => Some((job, outcome)),
            _ => None,
        }
    }
}

/// The kinds of events, in the order a job goes through them.
#[derive(Debug, Clone)]
pub enum EventKind {
    /// The run begins: `total` jobs to run, `skipped` already done (resume)
    /// or outside the shard.
    RunStarted {
        /// Jobs this run will attempt.
        total: usize,
        /// Jobs skipped before the start.
        skipped: usize,
        /// The servers, in `ServerId` order.
        servers: Vec<String>,
    },
    /// A job's prompt was accepted by a server.
    JobSubmitted {
        /// The job.
        job: JobId,
        /// Its label (`group#n`).
        label: String,
        /// Where it went.
        server: ServerId,
        /// The prompt id it was queued under.
        prompt: PromptId,
    },
    /// The server started executing it.
    JobStarted {
        /// The job.
        job: JobId,
        /// Where it runs.
        server: ServerId,
    },
    /// A node reported progress (sampler steps).
    JobProgress {
        /// The job.
        job: JobId,
        /// Where it runs.
        server: ServerId,
        /// The node.
        node: String,
        /// Step.
        value: u32,
        /// Steps in all.
        max: u32,
    },
    /// An attempt failed and the job will be tried again. The failed
    /// attempt is logged like any outcome (`runs.csv` has a row per attempt
    /// outcome; the newest row of a job counts).
    JobRetrying {
        /// The job.
        job: Arc<Job>,
        /// The failed attempt's outcome.
        outcome: Outcome,
        /// The attempt that comes next (2 = first retry).
        attempt: u32,
    },
    /// A job ended (its images are saved already).
    JobFinished {
        /// The job.
        job: Arc<Job>,
        /// How it ended.
        outcome: Outcome,
        /// Totals after it.
        stats: RunStats,
        /// Its outcome is a row already: the failed attempt of a job that
        /// waited for its retry when the run stopped (logged with its
        /// [`EventKind::JobRetrying`]), not written again.
        logged: bool,
    },
    /// A server stopped answering; its jobs go to the others.
    ServerLost {
        /// The server.
        server: ServerId,
        /// Why.
        cause: String,
    },
    /// A server came back after being lost.
    ServerRecovered {
        /// The server.
        server: ServerId,
    },
    /// A job this run will not finish: never handed to a server before
    /// the run stopped early, or still in flight when a terminated run's
    /// time was up. It gets no row (the next run does it); CI reports list
    /// it as skipped with `reason`.
    JobNotRun {
        /// The job, without its prompt (never built for most of them).
        job: JobBrief,
        /// Why, one line (`not run: …`).
        reason: String,
    },
    /// The run is terminated (SIGTERM): no new jobs; the jobs never handed
    /// out were reported [`EventKind::JobNotRun`] just before. Sent before
    /// our prompts are removed from the servers, so what is known can be
    /// written at once, in case the process is killed during that cleanup.
    Terminating {
        /// The jobs handed to a server and not finished yet.
        in_flight: Vec<Arc<Job>>,
        /// Totals so far.
        stats: RunStats,
    },
    /// The run stops submitting.
    Cancelling {
        /// Why.
        reason: CancelReason,
    },
    /// The run is over.
    RunFinished {
        /// Final totals.
        stats: RunStats,
    },
}

/// Why a run stops early; the most severe wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CancelReason {
    /// `--fail-fast`: a job failed.
    FailFast,
    /// `--max-failures` reached.
    MaxFailures,
    /// No server is left.
    NoServers,
    /// First Ctrl-C: stop submitting, drop queued prompts, let running ones finish.
    Interrupt,
    /// Second Ctrl-C: interrupt running prompts too.
    SecondInterrupt,
    /// SIGTERM (or the console closed): as a second Ctrl-C, within the
    /// deadline of [`Stop::terminate_by`].
    Terminated,
}

impl CancelReason {
    /// The error of a job dropped (or never posted) because of it.
    pub fn not_run_line(self) -> &'static str {
        match self {
            CancelReason::FailFast => "not run: too many failures (--fail-fast)",
            CancelReason::MaxFailures => "not run: too many failures (--max-failures)",
            CancelReason::NoServers => "not run: no server left",
            CancelReason::Terminated => "not run: terminated",
            CancelReason::Interrupt | CancelReason::SecondInterrupt => "not run: interrupted",
        }
    }
}

/// The error of each job of a run that found no server at its start.
pub const NOT_RUN_NO_SERVER: &str = "not run: no server reachable";

/// What the user asked of a running run, as the edge (`cli`) saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stop {
    /// Ctrl-Cs so far (first: stop submitting and drop our queued prompts;
    /// second: interrupt the running ones too).
    pub interrupts: u32,
    /// Set on SIGTERM: the run ends by then, whatever its servers answer.
    pub terminate_by: Option<std::time::Instant>,
}

impl Stop {
    /// Whether anything was asked: a Ctrl-C or a termination.
    pub fn asked(&self) -> bool {
        self.interrupts > 0 || self.terminate_by.is_some()
    }

    /// Why a run stopped by this before its first prompt ends: terminated,
    /// else interrupted (however many Ctrl-Cs: nothing runs yet for a
    /// second one to interrupt).
    pub fn reason_before_start(&self) -> CancelReason {
        match self.terminate_by {
            Some(_) => CancelReason::Terminated,
            None => CancelReason::Interrupt,
        }
    }
}

impl RunStats {
    /// Jobs of this run that did not end (stopped early): they have no row
    /// of this run and the next run does them.
    pub fn not_run(&self) -> usize {
        self.total.saturating_sub(self.done)
    }
}

/// Running totals, carried by events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Jobs this run attempts.
    pub total: usize,
    /// Jobs ended (any status).
    pub done: usize,
    /// Jobs ended `ok`.
    pub ok: usize,
    /// Jobs ended otherwise.
    pub failed: usize,
    /// Jobs skipped before the start.
    pub skipped: usize,
}
