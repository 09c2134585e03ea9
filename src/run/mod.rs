//! The scheduler: keeps every server's slots (queued + running prompts)
//! full, tracks each job's prompt through the server's messages, retries,
//! times out and cancels, and reports everything as [`RunEvent`]s. Knows
//! nothing of terminals or file formats; images go through the sink's
//! [`OutputDir`] before a job is reported finished.

mod events;
mod feed;
mod job;
mod ledger;
mod lifecycle;
mod offload;
mod pace;
mod packs;
pub(crate) mod retry;
mod server;

pub use events::*;
pub use feed::{JobFeed, PlanFeed};
pub use pace::Pace;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use tokio::sync::{mpsc, watch};

use crate::comfy::http::HttpPool;
use crate::comfy::{ClientError, ServerUrl};
use crate::ids::{PromptId, ServerId};
use crate::plan::Job;
use crate::sink::OutputDir;
use job::{AttemptContext, AttemptEnd};
use ledger::{Ledger, Settled};
use pace::PacePolicy;
use server::Server;

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

struct ServerSlot {
    server: Arc<Server>,
    load: Load,
    alive: bool,
}

/// A server's prompts in flight, and how many of them are not queued on
/// it yet (their attempts still write the prompt file or wait for the
/// submission's reply).
#[derive(Debug, Default, Clone, Copy)]
struct Load {
    in_flight: usize,
    unsent: usize,
}

impl Load {
    /// An attempt took a slot.
    fn spawned(&mut self) {
        self.in_flight += 1;
        self.unsent += 1;
    }

    /// An attempt's prompt reached the server.
    fn queued(&mut self) {
        self.unsent = self.unsent.saturating_sub(1);
    }

    /// An attempt freed its slot (`unsent`: before its prompt was queued).
    fn released(&mut self, unsent: bool) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if unsent {
            self.queued();
        }
    }

    /// The prompts the server has, as the doze must count them: one the
    /// runner has still to send gives the server nothing to run while the
    /// runner dozes, and the waits before it reaches the server (the
    /// prompt file, the submission's reply) would each take a whole doze.
    fn on_server(&self) -> usize {
        self.in_flight.saturating_sub(self.unsent)
    }
}

/// Whether the runner still hands work out: jobs not yet handed out, or
/// a prompt handed out but not yet queued on its server (a retry or a
/// moved job near the end). Until it is queued, its server may wait for
/// it, and each wait before it gets there (the prompt file, the
/// submission's reply) would take a whole doze.
fn handing_out(nothing_left: bool, mut live: impl Iterator<Item = Load>) -> bool {
    !nothing_left || live.any(|load| load.unsent > 0)
}

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
    mut stop: watch::Receiver<Stop>,
    observer: &mut Observer<'_>,
) -> Result<RunSummary, RunError> {
    let started = Instant::now();
    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    // The observer runs here, in the caller's `block_on` (not on a runtime
    // worker pumping websockets). Once it fails (the log cannot be written)
    // it sees nothing more: the run stops as for a second Ctrl-C (our
    // queued prompts removed, running ones interrupted) and ends with it.
    let mut sink_error: Option<Box<dyn std::error::Error + Send + Sync>> = None;
    let failed_sink = std::cell::Cell::new(false);
    let mut emit = |kind: EventKind| -> Result<(), RunError> {
        if sink_error.is_some() {
            return Ok(());
        }
        if let Err(e) = observer(&RunEvent {
            at: started.elapsed(),
            kind,
        }) {
            sink_error = Some(e);
            failed_sink.set(true);
        }
        Ok(())
    };

    // Connect every websocket before the first POST; with nothing to run
    // (everything done already) no server is needed.
    let mut slots = Vec::new();
    let mut errors = Vec::new();
    let mut supervisors = Vec::new();
    let pool = config
        .http_pool()
        .map_err(|e| RunError::NoServer(vec![e]))?;
    let wanted = if total == 0 {
        &[][..]
    } else {
        &config.servers[..]
    };
    for (i, url) in wanted.iter().enumerate() {
        let connect = Server::connect(
            ServerId(i),
            pool.client(url.clone()),
            config.headers.clone(),
            config.progress,
        );
        // A Ctrl-C (or SIGTERM) while a server is slow to answer ends the
        // run at once: nothing was queued yet.
        let connected = tokio::select! {
            connected = connect => connected,
            asked = stop.wait_for(|s| s.interrupts > 0 || s.terminate_by.is_some()) => {
                let reason = match asked.is_ok_and(|s| s.terminate_by.is_some()) {
                    true => CancelReason::Terminated,
                    false => CancelReason::Interrupt,
                };
                return stopped_before_start(&config.servers, jobs, total, skipped, reason, &mut emit);
            }
        };
        match connected {
            Ok((server, socket)) => {
                let task = tokio::spawn(server.clone().supervise(
                    socket,
                    config.server_lost_after,
                    tx.clone(),
                ));
                supervisors.push(AbortOnDrop(task));
                slots.push(ServerSlot {
                    server,
                    load: Load::default(),
                    alive: true,
                });
            }
            Err(e) => errors.push(e),
        }
    }
    if slots.is_empty() && total > 0 {
        // Listed for the CI reports; no row is written.
        jobs.rest(&mut |job| {
            emit(EventKind::JobNotRun {
                job,
                reason: NOT_RUN_NO_SERVER.into(),
            })
        })?;
        return Err(RunError::NoServer(errors));
    }
    let mut ledger = Ledger::new(total, skipped, config.retries, config.max_failures);
    emit(EventKind::RunStarted {
        total,
        skipped,
        servers: config.servers.iter().map(|s| s.to_string()).collect(),
    })?;
    for e in &errors {
        tracing::warn!("server unreachable, running without it: {e}");
    }

    let (cancel_tx, cancel_rx) = watch::channel::<Option<CancelReason>>(None);
    let ctx = AttemptContext {
        output,
        previews: config.previews,
        timeout: config.timeout,
        queue_timeout: config.queue_timeout,
        cancel: cancel_rx,
        events: tx.clone(),
        run_key: config.run_key.clone(),
        servers: Arc::new(slots.iter().map(|s| s.server.clone()).collect()),
        pace: config.pace.clone(),
        files: offload::FileWork::new(),
        packs: Default::default(),
    };
    // Prompts left on a server that was lost when their job moved on:
    // removed from its queue when it comes back (unless the job returned).
    let mut orphans: std::collections::HashMap<PromptId, ServerId> = Default::default();
    // (job, attempt number, tries in this run)
    let mut waiting: VecDeque<(Arc<Job>, u32, u32)> = VecDeque::new();
    // The failed attempt (logged) of each job waiting for its retry: its
    // final outcome should the run stop before the retry ends.
    let mut retried: std::collections::HashMap<crate::ids::JobId, Outcome> = Default::default();
    let mut tasks = 0usize;
    // Of those, packed jobs waiting for their pack's prompt.
    let mut parked = 0usize;
    // The jobs of those tasks, for a termination's reports.
    let mut in_flight: std::collections::HashMap<crate::ids::JobId, Arc<Job>> = Default::default();
    // Set by a termination: the run ends then, tasks or not.
    let mut terminate_by: Option<tokio::time::Instant> = None;
    let mut stop_open = true;
    let mut exhausted = total == 0;
    let mut cancelled: Option<CancelReason> = None;
    let mut pacing = PacePolicy::default();
    let cancel = |reason: CancelReason,
                  cancelled: &mut Option<CancelReason>,
                  emit: &mut dyn FnMut(EventKind) -> Result<(), RunError>|
     -> Result<(), RunError> {
        if Some(reason) > *cancelled {
            *cancelled = Some(reason);
            let _ = cancel_tx.send(Some(reason));
            emit(EventKind::Cancelling { reason })?;
        }
        Ok(())
    };

    loop {
        if failed_sink.get() {
            cancel(CancelReason::SecondInterrupt, &mut cancelled, &mut emit)?;
        }
        // Fill free slots, least loaded live server first.
        // Jobs still downloading hold no slot; this bounds them (and their
        // images in memory) too.
        // Packed jobs waiting for their pack's prompt do not count: the
        // next pack's prompt must still be queued meanwhile.
        let max_tasks = 2 * config.concurrency * slots.len() + parked;
        while cancelled.is_none() && tasks < max_tasks {
            let Some(slot) = slots
                .iter_mut()
                .filter(|s| s.alive && s.load.in_flight < config.concurrency)
                .min_by_key(|s| s.load.in_flight)
            else {
                break;
            };
            let next = match waiting.pop_front() {
                Some(next) => Some(next),
                None if !exhausted => match jobs.next_job() {
                    Some((job, attempt)) => Some((Arc::new(job), attempt, 1)),
                    None => {
                        exhausted = true;
                        None
                    }
                },
                None => None,
            };
            let Some((job, attempt, tries)) = next else {
                break;
            };
            orphans.remove(&job::prompt_id(&config.run_key, &job, attempt));
            slot.load.spawned();
            tasks += 1;
            in_flight.insert(job.id.clone(), job.clone());
            let server = slot.server.clone();
            let ctx = ctx.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let end = job::run_attempt(job.clone(), attempt, server.clone(), ctx).await;
                let _ = tx.send(Msg::Finished {
                    job,
                    attempt,
                    tries,
                    server: server.id,
                    end,
                });
            });
        }
        let nothing_left = exhausted && waiting.is_empty();
        if tasks == 0 && (nothing_left || cancelled.is_some()) {
            break;
        }
        if tasks == 0 && !slots.iter().any(|s| s.alive) {
            cancel(CancelReason::NoServers, &mut cancelled, &mut emit)?;
            break;
        }

        // Cancelling, or a server that may run dry while there is work to
        // hand out: every wake-up counts (see `pace`).
        let live = slots.iter().filter(|s| s.alive).map(|s| s.load.on_server());
        let left = handing_out(
            nothing_left,
            slots.iter().filter(|s| s.alive).map(|s| s.load),
        );
        match cancelled {
            None => pacing.apply(&config.pace, live, left),
            Some(_) => pacing.stop(&config.pace),
        }
        let msg = tokio::select! {
            msg = rx.recv() => msg,
            changed = stop.changed(), if stop_open => {
                let asked = *stop.borrow();
                if changed.is_err() {
                    // The edge is gone: nothing more will be asked.
                    stop_open = false;
                } else if let (Some(by), None) = (asked.terminate_by, terminate_by) {
                    // In this order, before any job task runs again (they
                    // share this thread): no new jobs; what is known is
                    // reported, the jobs never handed out from the plan's
                    // rows (no prompt built); then the tasks remove our
                    // prompts while the reports are written (on a thread
                    // of their own).
                    terminate_by = Some(tokio::time::Instant::from_std(by));
                    cancel(CancelReason::Terminated, &mut cancelled, &mut emit)?;
                    exhausted = true;
                    gave_up(&mut waiting, &mut retried, &mut ledger, &mut emit)?;
                    not_handed_out(&mut waiting, jobs, CancelReason::Terminated, &mut emit)?;
                    emit(EventKind::Terminating {
                        in_flight: in_flight.values().cloned().collect(),
                        stats: ledger.stats,
                    })?;
                } else if asked.terminate_by.is_none() {
                    let reason = if asked.interrupts >= 2 {
                        CancelReason::SecondInterrupt
                    } else {
                        CancelReason::Interrupt
                    };
                    cancel(reason, &mut cancelled, &mut emit)?;
                }
                continue;
            }
            _ = job::sleep_until(terminate_by) => {
                // Time is up: the servers that did not answer keep what
                // they have; the next run adopts or removes it.
                for (_, job) in in_flight.drain() {
                    emit(EventKind::JobNotRun {
                        job: JobBrief::of(&job),
                        reason: "not run: terminated before its prompt could be removed".into(),
                    })?;
                }
                break;
            }
        };
        let Some(msg) = msg else { break };
        match msg {
            Msg::Event(kind) => emit(kind)?,
            Msg::Queued { server } => slot_of(&mut slots, server).load.queued(),
            Msg::Released { server, unsent } => slot_of(&mut slots, server).load.released(unsent),
            Msg::Parked { parked: true } => parked += 1,
            Msg::Parked { parked: false } => parked = parked.saturating_sub(1),
            Msg::ServerLost { server, cause } => {
                slot_of(&mut slots, server).alive = false;
                emit(EventKind::ServerLost { server, cause })?;
            }
            Msg::ServerRecovered { server } => {
                let slot = slot_of(&mut slots, server);
                slot.alive = true;
                let left: Vec<String> = orphans
                    .extract_if(|_, s| *s == server)
                    .map(|(p, _)| p.as_str().to_string())
                    .collect();
                if !left.is_empty() {
                    let server = slot.server.clone();
                    tokio::spawn(async move {
                        if let Err(e) = server.http.delete_queued(&left).await {
                            tracing::warn!("{}: could not remove moved prompts: {e}", server.url());
                        }
                    });
                }
                emit(EventKind::ServerRecovered { server })?;
            }
            Msg::Finished {
                job,
                attempt,
                tries,
                server,
                end,
            } => {
                tasks -= 1;
                in_flight.remove(&job.id);
                if let AttemptEnd::Done(outcome) = &end
                    && let (Some(start), Some(end)) =
                        (outcome.attempt.started_at, outcome.attempt.finished_at)
                {
                    pacing.job_ran(end.duration_since(start).unwrap_or_default());
                }
                if matches!(end, AttemptEnd::Requeue(_)) && !slot_of(&mut slots, server).alive {
                    orphans.insert(job::prompt_id(&config.run_key, &job, attempt), server);
                }
                let url = slot_of(&mut slots, server).server.url();
                match ledger.settle(&job.id, attempt, tries, &url, end, cancelled.is_some()) {
                    Settled::MoveOn(cause) => {
                        tracing::info!("{} ({url}): moving on: {cause}", job.id);
                        waiting.push_front((job, attempt, tries));
                    }
                    Settled::Retry(outcome) => {
                        retried.insert(job.id.clone(), outcome.clone());
                        emit(EventKind::JobRetrying {
                            job: job.clone(),
                            outcome,
                            attempt: attempt + 1,
                        })?;
                        waiting.push_back((job, attempt + 1, tries + 1));
                    }
                    Settled::Final(outcome) => {
                        retried.remove(&job.id);
                        let stats = ledger.stats;
                        emit(EventKind::JobFinished {
                            job,
                            outcome,
                            stats,
                            logged: false,
                        })?;
                        if ledger.failures_exceeded() {
                            let reason = match config.fail_fast {
                                true => CancelReason::FailFast,
                                false => CancelReason::MaxFailures,
                            };
                            cancel(reason, &mut cancelled, &mut emit)?;
                        }
                    }
                }
            }
        }
    }
    if let Some(reason) = cancelled {
        gave_up(&mut waiting, &mut retried, &mut ledger, &mut emit)?;
        not_handed_out(&mut waiting, jobs, reason, &mut emit)?;
    }
    let stats = ledger.stats;
    pacing.stop(&config.pace);
    emit(EventKind::RunFinished { stats })?;
    drop(supervisors);
    if let Some(e) = sink_error {
        return Err(RunError::Sink(e));
    }
    Ok(RunSummary { stats, cancelled })
}

/// Reports a run stopped (`reason`) before its first prompt, during the
/// preflight or while connecting: every job of `jobs` not run. Nothing was
/// queued, so nothing is left to remove.
pub fn stopped_before_start(
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
    not_handed_out(&mut VecDeque::new(), jobs, reason, emit)?;
    emit(EventKind::RunFinished { stats })?;
    Ok(RunSummary {
        stats,
        cancelled: Some(reason),
    })
}

/// Reports each job of `waiting` that waits for its retry (its failed
/// attempt in `retried`) as failed with that attempt's outcome, a row
/// already: the run stopped, the job did not run again, and it failed.
/// The others stay in `waiting`.
fn gave_up(
    waiting: &mut VecDeque<(Arc<Job>, u32, u32)>,
    retried: &mut std::collections::HashMap<crate::ids::JobId, Outcome>,
    ledger: &mut Ledger,
    emit: &mut dyn FnMut(EventKind) -> Result<(), RunError>,
) -> Result<(), RunError> {
    let mut rest = VecDeque::with_capacity(waiting.len());
    for (job, attempt, tries) in waiting.drain(..) {
        match retried.remove(&job.id) {
            Some(outcome) => {
                ledger.gave_up(&job.id);
                emit(EventKind::JobFinished {
                    job,
                    outcome,
                    stats: ledger.stats,
                    logged: true,
                })?;
            }
            None => rest.push_back((job, attempt, tries)),
        }
    }
    *waiting = rest;
    Ok(())
}

/// Reports the jobs a run stopped early never handed out (those waiting
/// for a slot again, then the rest of the feed, from its rows) as not run.
fn not_handed_out(
    waiting: &mut VecDeque<(Arc<Job>, u32, u32)>,
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
    for (job, ..) in waiting.drain(..) {
        not_run(JobBrief::of(&job))?;
    }
    jobs.rest(&mut not_run)
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The slot of a server. Slots exist only for servers that answered at the
/// start, so a `ServerId` (the index in the configured list) is looked up,
/// never used as an index.
fn slot_of(slots: &mut [ServerSlot], id: ServerId) -> &mut ServerSlot {
    slots
        .iter_mut()
        .find(|s| s.server.id == id)
        .expect("messages come only from servers that have a slot")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn long_jobs() -> PacePolicy {
        let mut policy = PacePolicy::default();
        for _ in 0..64 {
            policy.job_ran(Duration::from_secs(2));
        }
        policy
    }

    #[test]
    fn a_server_whose_next_prompt_is_not_queued_yet_stops_the_doze() {
        // A server ran its long job and now runs the short one queued
        // behind it; the runner took the slot for the next prompt, but
        // that prompt is still being written and submitted. Counting it as
        // queued would let the runner doze through both waits while the
        // short job ends and the server runs dry.
        let policy = long_jobs();
        let (mut busy, mut refilling) = (Load::default(), Load::default());
        for load in [&mut busy, &mut refilling] {
            load.spawned();
            load.spawned();
            load.queued();
            load.queued();
        }
        assert!(policy.doze([busy.on_server(), refilling.on_server()]) > Duration::ZERO);
        refilling.released(false);
        refilling.spawned();
        assert_eq!(refilling.in_flight, 2);
        assert_eq!(
            policy.doze([busy.on_server(), refilling.on_server()]),
            Duration::ZERO
        );
        // Its reply came: the server has its queued prompt again.
        refilling.queued();
        assert!(policy.doze([busy.on_server(), refilling.on_server()]) > Duration::ZERO);
    }

    #[test]
    fn a_retry_handed_out_after_the_last_job_is_sent_without_dozing() {
        // Nothing is left to hand out, one server runs its last job, and
        // the other's job failed and was retried there: its prompt is
        // being written and submitted while that server sits idle. Every
        // wait before it is queued must not take a doze.
        let policy = long_jobs();
        let pace = super::Pace::default();
        let (mut busy, mut retrying) = (Load::default(), Load::default());
        for load in [&mut busy, &mut retrying] {
            load.spawned();
            load.queued();
        }
        let loads = [busy, retrying];
        let on = |loads: [Load; 2]| loads.map(|l| l.on_server());
        policy.apply(&pace, on(loads), handing_out(true, loads.into_iter()));
        assert!(
            pace.current() > Duration::ZERO,
            "the last jobs are dozed through"
        );
        retrying.released(false);
        retrying.spawned();
        let loads = [busy, retrying];
        policy.apply(&pace, on(loads), handing_out(true, loads.into_iter()));
        assert_eq!(pace.current(), Duration::ZERO);
        // Queued: nothing is left to hand out again.
        retrying.queued();
        let loads = [busy, retrying];
        policy.apply(&pace, on(loads), handing_out(true, loads.into_iter()));
        assert!(pace.current() > Duration::ZERO);
        // Jobs still to hand out: the policy's own rule.
        assert!(handing_out(false, [Load::default()].into_iter()));
    }

    #[test]
    fn a_slot_freed_before_its_prompt_was_queued_leaves_nothing_unsent() {
        // An attempt that failed before submitting, or followed its prompt
        // to another server, frees a slot it never queued on.
        let mut load = Load::default();
        load.spawned();
        load.released(true);
        load.spawned();
        load.queued();
        load.released(false);
        assert_eq!((load.in_flight, load.unsent), (0, 0));
        load.spawned();
        load.spawned();
        load.queued();
        load.queued();
        assert_eq!(load.on_server(), 2);
    }
}
