//! What the scheduler reports: the only coupling between `run` and its
//! consumers (the CSV sink and the reporters). Events carry the running
//! totals so consumers keep no counters of their own.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::ids::{JobId, PromptId, ServerId};
use crate::plan::Job;

/// One event, stamped with the time since the run started.
#[derive(Debug, Clone)]
pub struct RunEvent {
    /// Time since the run started.
    pub at: Duration,
    /// What happened.
    pub kind: EventKind,
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
    /// `--max-failures` / `--fail-fast` reached.
    MaxFailures,
    /// No server is left.
    NoServers,
    /// First Ctrl-C: stop submitting, drop queued prompts, let running ones finish.
    Interrupt,
    /// Second Ctrl-C: interrupt running prompts too.
    SecondInterrupt,
}

/// How one attempt of a job ended; `runs.csv`'s `status` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Executed successfully, every image saved.
    Ok,
    /// Failed in execution or while collecting its images.
    Failed,
    /// The server refused the prompt (validation).
    Rejected,
    /// Interrupted (Ctrl-C, or by someone else on the server).
    Interrupted,
    /// Exceeded `--timeout`.
    Timeout,
}

impl Status {
    /// The CSV spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Failed => "failed",
            Status::Rejected => "rejected",
            Status::Interrupted => "interrupted",
            Status::Timeout => "timeout",
        }
    }

    /// Parses the CSV spelling.
    pub fn parse(text: &str) -> Option<Status> {
        Some(match text {
            "ok" => Status::Ok,
            "failed" => Status::Failed,
            "rejected" => Status::Rejected,
            "interrupted" => Status::Interrupted,
            "timeout" => Status::Timeout,
            _ => return None,
        })
    }
}

/// The outcome of a job's last attempt: a failed job is a value, not an error.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// How it ended.
    pub status: Status,
    /// Every saved output (files of any kind, texts as `.txt`), relative
    /// to the output folder, in server order.
    pub images: Vec<String>,
    /// The job's text output, when it made exactly one (a caption): the
    /// log's `text` column.
    pub text: Option<String>,
    /// One line saying what went wrong.
    pub error: Option<String>,
    /// Where and when the attempt ran.
    pub attempt: Attempt,
}

/// Where and when one attempt ran.
#[derive(Debug, Clone, Default)]
pub struct Attempt {
    /// 1 for the first try.
    pub number: u32,
    /// The server's URL.
    pub server: Option<String>,
    /// The prompt id used.
    pub prompt_id: Option<PromptId>,
    /// When the server accepted it.
    pub queued_at: Option<SystemTime>,
    /// When it started executing.
    pub started_at: Option<SystemTime>,
    /// When it ended.
    pub finished_at: Option<SystemTime>,
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
