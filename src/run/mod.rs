//! The scheduler: keeps every server's slots (queued + running prompts)
//! full, tracks each job's prompt through the server's messages, retries,
//! times out and cancels, and reports everything as [`RunEvent`]s. Knows
//! nothing of terminals or file formats; images go through the sink's
//! [`OutputDir`] before a job is reported finished.
//!
//! [`execute`] is the entry: its loop is `scheduler`'s `Scheduler`, one
//! named step per method. A run stopped before it starts (during `cli`'s
//! preflight, [`stopped_in_preflight`], or while connecting) is reported
//! here too, so every consumer sees the same events for it.

mod events;
mod feed;
mod job;
mod ledger;
mod lifecycle;
mod offload;
mod pace;
mod packs;
pub(crate) mod retry;
mod scheduler;
mod server;

pub use events::*;
pub use feed::{JobFeed, PlanFeed};
pub use pace::Pace;

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use tokio::sync::watch;

use crate::comfy::http::HttpPool;
use crate::comfy::{ClientError, ServerUrl};
use crate::ids::ServerId;
use crate::plan::Job;
use crate::sink::OutputDir;
use job::AttemptEnd;
use scheduler::{Connect, Events, Scheduler};

/// Everything the scheduler needs, built once by `cli`.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The servers sharing the work.
    pub servers: Vec<ServerUrl>,
    /// Extra HTTP headers for every request and the websocket handshake.
    pub headers: HeaderMap,
    /// Prompts in flight per server (queued + running).
    pub concurrency: usize,
    /// Also keep `temp` (preview) images.
    pub previews: bool,
    /// Per-job limit from the prompt's start until its outputs are
    /// collected; the prompt is interrupted, the downloads given up.
    pub timeout: Option<Duration>,
    /// Limit on the time a prompt waits to start; it is then removed.
    pub queue_timeout: Option<Duration>,
    /// Stop submitting after this many jobs did not end `ok`.
    pub max_failures: Option<usize>,
    /// `max_failures` is `--fail-fast`'s: the reports name that flag.
    pub fail_fast: bool,
    /// Extra attempts for a job that failed in execution or timed out.
    pub retries: u32,
    /// Stable key of the run (from its output folder), part of prompt ids.
    pub run_key: String,
    /// Limit for a single HTTP request.
    pub http_timeout: Duration,
    /// The connections to carry on with (the preflight's, built from
    /// `headers` and `http_timeout` by [`RunConfig::http_pool`]); `None`
    /// until one is built.
    pub http: Option<HttpPool>,
    /// How long a server may stay unreachable before its jobs move on. Its
    /// websocket is pinged and given up after half of this without any
    /// frame, so a server gone silent (no close, no reset) counts too.
    pub server_lost_after: Duration,
    /// Whether anyone shows sampler progress (a live bar): without, the
    /// servers' `progress` messages are dropped unread.
    pub progress: bool,
    /// How long the runtime thread may doze before it parks, and a finished
    /// job's sync may wait for others: set here, taken by the runtime's
    /// park hook and the jobs (see [`Pace`]).
    pub pace: Arc<Pace>,
}

impl RunConfig {
    /// The run's connections: those kept in `http` (the preflight's), else
    /// a pool built from `headers` and `http_timeout` and kept there.
    pub fn http_pool(&mut self) -> Result<HttpPool, ClientError> {
        if let Some(pool) = &self.http {
            return Ok(pool.clone());
        }
        let pool = HttpPool::new(self.headers.clone(), self.http_timeout)?;
        self.http = Some(pool.clone());
        Ok(pool)
    }

    /// Defaults for everything but the servers and the run key.
    pub fn new(servers: Vec<ServerUrl>, run_key: String) -> RunConfig {
        RunConfig {
            servers,
            headers: HeaderMap::new(),
            concurrency: 2,
            previews: false,
            timeout: None,
            queue_timeout: None,
            max_failures: None,
            fail_fast: false,
            retries: 0,
            run_key,
            http_timeout: Duration::from_secs(60),
            http: None,
            server_lost_after: Duration::from_secs(30),
            progress: true,
            pace: Arc::default(),
        }
    }
}

/// Why a run could not go on; a job's failure is not one of these.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No server accepted a websocket at the start.
    #[error("no server reachable: {}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    NoServer(Vec<ClientError>),
    /// The event consumer (the CSV log) failed; the run stopped.
    #[error("{0}")]
    Sink(Box<dyn std::error::Error + Send + Sync>),
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Final totals.
    pub stats: RunStats,
    /// Set when the run stopped early.
    pub cancelled: Option<CancelReason>,
}

/// What job tasks and server supervisors tell the scheduler.
pub(crate) enum Msg {
    Event(EventKind),
    /// An attempt's prompt is queued on its server.
    Queued {
        server: ServerId,
    },
    /// An attempt frees its slot; `unsent`: its prompt was never queued.
    Released {
        server: ServerId,
        unsent: bool,
    },
    /// A packed job waits for its pack's prompt, sent by another job
    /// (`parked: false` when it stops waiting): a task that is no work.
    Parked {
        parked: bool,
    },
    Finished {
        job: Arc<Job>,
        attempt: u32,
        tries: u32,
        server: ServerId,
        end: AttemptEnd,
    },
    ServerLost {
        server: ServerId,
        cause: String,
    },
    ServerRecovered {
        server: ServerId,
    },
}

/// The consumer of events: the CSV sink and the reporter, in that order.
pub type Observer<'a> =
    dyn FnMut(&RunEvent) -> Result<(), Box<dyn std::error::Error + Send + Sync>> + 'a;

/// Runs `jobs` (already filtered by shard and resume; each with its first
/// attempt number, 1 + the attempts an earlier run logged; see
/// [`JobFeed`]) on the configured
/// servers. `stop` says what the user asked: Ctrl-Cs (first: stop
/// submitting and drop queued prompts; second: interrupt running ones
/// too), or a termination, which does both and ends the run by its
/// deadline, listing the jobs it could not finish ([`EventKind::Terminating`]).
/// A run stopped early reports each job it never handed out as
/// [`EventKind::JobNotRun`].
pub async fn execute(
    mut config: RunConfig,
    jobs: &mut dyn JobFeed,
    total: usize,
    skipped: usize,
    output: Arc<OutputDir>,
    stop: watch::Receiver<Stop>,
    observer: &mut Observer<'_>,
) -> Result<RunSummary, RunError> {
    let mut events = Events::new(observer);
    let connected = match Scheduler::connect(&mut config, total, stop).await? {
        Connect::Servers(connected) => connected,
        Connect::Stopped(reason) => {
            let emit = &mut |kind| events.emit(kind);
            return stopped_before_start(&config.servers, jobs, total, skipped, reason, emit);
        }
    };
    Scheduler::start(config, jobs, total, skipped, output, events, connected)?
        .run()
        .await
}

/// Reports a run stopped (`reason`) before its first prompt, during the
/// preflight or while connecting: every job of `jobs` not run. Nothing was
/// queued, so nothing is left to remove.
fn stopped_before_start(
    servers: &[ServerUrl],
    jobs: &mut dyn JobFeed,
    total: usize,
    skipped: usize,
    reason: CancelReason,
    emit: &mut dyn FnMut(EventKind) -> Result<(), RunError>,
) -> Result<RunSummary, RunError> {
    let stats = RunStats {
        total,
        skipped,
        ..RunStats::default()
    };
    emit(EventKind::RunStarted {
        total,
        skipped,
        servers: servers.iter().map(|s| s.to_string()).collect(),
    })?;
    emit(EventKind::Cancelling { reason })?;
    not_handed_out(std::iter::empty(), jobs, reason, emit)?;
    emit(EventKind::RunFinished { stats })?;
    Ok(RunSummary {
        stats,
        cancelled: Some(reason),
    })
}

/// Reports a run stopped (`reason`) during its preflight, before any
/// folder was opened: every job of `jobs` not run, to `observer`, whose
/// failure is the result.
pub fn stopped_in_preflight(
    servers: &[ServerUrl],
    jobs: impl Iterator<Item = Job>,
    reason: CancelReason,
    observer: &mut Observer<'_>,
) -> Result<RunSummary, RunError> {
    let jobs: Vec<(Job, u32)> = jobs.map(|job| (job, 1)).collect();
    let started = Instant::now();
    let mut emit = |kind| {
        observer(&RunEvent {
            at: started.elapsed(),
            kind,
        })
        .map_err(RunError::Sink)
    };
    let total = jobs.len();
    stopped_before_start(servers, &mut jobs.into_iter(), total, 0, reason, &mut emit)
}

/// Reports the jobs a run stopped early never handed out (`waiting`, those
/// handed back for a slot again, then the rest of the feed, from its rows)
/// as not run.
fn not_handed_out(
    waiting: impl Iterator<Item = JobBrief>,
    jobs: &mut dyn JobFeed,
    reason: CancelReason,
    emit: &mut dyn FnMut(EventKind) -> Result<(), RunError>,
) -> Result<(), RunError> {
    let line = lifecycle::not_run(Some(reason));
    let mut not_run = |job| {
        emit(EventKind::JobNotRun {
            job,
            reason: line.clone(),
        })
    };
    for job in waiting {
        not_run(job)?;
    }
    jobs.rest(&mut not_run)
}
