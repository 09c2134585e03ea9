//! The run's loop as one [`Scheduler`] and its steps: connect every
//! server's websocket ([`Scheduler::connect`]), hand jobs out to free
//! slots ([`Scheduler::hand_out`]), take the messages of job tasks and
//! server supervisors ([`Scheduler::on_message`]), follow what the user
//! asks ([`Scheduler::on_stop`]: Ctrl-C, SIGTERM), then report what a stop
//! left ([`Scheduler::drain`]) and sum up ([`Scheduler::finish`]).
//!
//! Owns the slots and their loads, the jobs waiting for a slot, the tasks
//! in flight and when the run stops. Must not know how an attempt runs
//! (`job`), what an attempt's end means for its job (`ledger`), how long
//! the thread dozes (`pace`), nor anything of terminals, files or the log:
//! every consumer sees [`RunEvent`]s through one [`Observer`].

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, watch};

use super::events::{
    CancelReason, EventKind, JobBrief, NOT_RUN_NO_SERVER, Outcome, RunEvent, Stop,
};
use super::job::{self, AttemptContext, AttemptEnd};
use super::ledger::{Ledger, Settled};
use super::pace::PacePolicy;
use super::server::Server;
use super::{JobFeed, Msg, Observer, RunConfig, RunError, RunSummary, offload};
use crate::comfy::ClientError;
use crate::ids::{JobId, PromptId, ServerId};
use crate::plan::Job;
use crate::sink::OutputDir;

/// The observer as the scheduler calls it: each event stamped with the
/// time since the start. It runs here, in the caller's `block_on` (not on a
/// runtime worker pumping websockets). Once it fails (the log cannot be
/// written) it sees nothing more: the run stops as for a second Ctrl-C
/// (our queued prompts removed, running ones interrupted) and ends with
/// that error.
pub(super) struct Events<'s, 'a> {
    observer: &'s mut Observer<'a>,
    started: Instant,
    failed: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl<'s, 'a> Events<'s, 'a> {
    /// Stamps events from now on.
    pub(super) fn new(observer: &'s mut Observer<'a>) -> Self {
        Events {
            observer,
            started: Instant::now(),
            failed: None,
        }
    }

    /// Shows `kind` to the observer unless it failed before; never an
    /// error itself (the failure is kept for [`Scheduler::finish`]), a
    /// `Result` for the helpers that stop at a consumer's error.
    pub(super) fn emit(&mut self, kind: EventKind) -> Result<(), RunError> {
        if self.failed.is_none()
            && let Err(e) = (self.observer)(&RunEvent {
                at: self.started.elapsed(),
                kind,
            })
        {
            self.failed = Some(e);
        }
        Ok(())
    }
}

/// A job handed back to be handed out again (moved from a lost server, or
/// to retry): the job, its attempt number, its tries in this run.
type Waiting = (Arc<Job>, u32, u32);

/// A server that answered at the start, and its share of the work.
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

/// Aborts a server's supervisor (its websocket pump) with the run.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The servers that took a websocket at the start, each supervised, and
/// why the others did not; the channel their supervisors (and later the
/// job tasks) write to, and what the user asks.
pub(super) struct Connected {
    slots: Vec<ServerSlot>,
    supervisors: Vec<AbortOnDrop>,
    errors: Vec<ClientError>,
    sender: mpsc::UnboundedSender<Msg>,
    messages: mpsc::UnboundedReceiver<Msg>,
    stop: watch::Receiver<Stop>,
}

/// How connecting ended.
pub(super) enum Connect {
    /// Every server was tried.
    Servers(Connected),
    /// A Ctrl-C or SIGTERM came first: nothing was queued.
    Stopped(CancelReason),
}

/// The job tasks spawned and not finished: each holds a slot, waits for
/// its pack's prompt, or downloads its outputs.
#[derive(Default)]
struct Tasks {
    count: usize,
    /// Of those, packed jobs waiting for their pack's prompt.
    parked: usize,
    /// Their jobs, for a termination's reports.
    jobs: HashMap<JobId, Arc<Job>>,
}

/// What the user asked, as the scheduler follows it.
struct Asked {
    stop: watch::Receiver<Stop>,
    /// False once the edge dropped its sender: nothing more will be asked.
    open: bool,
    /// Set by a termination: the run ends then, tasks or not.
    terminate_by: Option<tokio::time::Instant>,
}

/// What woke the loop. A message is by far the largest variant, and the
/// commonest: boxing it would allocate once per message for a value that
/// lives one step on the stack.
#[allow(clippy::large_enum_variant)]
enum Wake {
    /// A job task's or a supervisor's message (`None`: every sender gone).
    Message(Option<Msg>),
    /// The user asked something (`closed`: the edge is gone).
    Stop { closed: bool },
    /// A termination's deadline passed.
    OutOfTime,
}

/// One run's scheduling state; see the module doc for its steps.
pub(super) struct Scheduler<'s, 'a> {
    config: RunConfig,
    events: Events<'s, 'a>,
    /// The jobs not handed out yet.
    jobs: &'s mut dyn JobFeed,
    /// The feed returned none (or a termination ended it).
    exhausted: bool,
    /// Handed out before the feed's next job.
    waiting: VecDeque<Waiting>,
    /// The failed attempt (logged) of each job waiting for its retry: its
    /// final outcome should the run stop before the retry ends.
    retried: HashMap<JobId, Outcome>,
    ledger: Ledger,
    slots: Vec<ServerSlot>,
    supervisors: Vec<AbortOnDrop>,
    tasks: Tasks,
    /// Prompts left on a server that was lost when their job moved on:
    /// removed from its queue when it comes back (unless the job returned).
    orphans: HashMap<PromptId, ServerId>,
    /// What every attempt shares (its `events` is the sender of `messages`).
    ctx: AttemptContext,
    messages: mpsc::UnboundedReceiver<Msg>,
    asked: Asked,
    cancelled: Option<CancelReason>,
    /// Tells the job tasks of `cancelled`.
    cancel_tx: watch::Sender<Option<CancelReason>>,
    pacing: PacePolicy,
}

impl<'s, 'a> Scheduler<'s, 'a> {
    /// Connects every websocket before the first POST, each server's
    /// supervisor started as it answers; with nothing to run (everything
    /// done already) no server is needed. A Ctrl-C (or SIGTERM) while a
    /// server is slow to answer ends the run at once: nothing was queued
    /// yet.
    pub(super) async fn connect(
        config: &mut RunConfig,
        total: usize,
        mut stop: watch::Receiver<Stop>,
    ) -> Result<Connect, RunError> {
        let (sender, messages) = mpsc::unbounded_channel::<Msg>();
        let pool = config
            .http_pool()
            .map_err(|e| RunError::NoServer(vec![e]))?;
        let wanted = if total == 0 {
            &[][..]
        } else {
            &config.servers[..]
        };
        let (mut slots, mut supervisors, mut errors) = (Vec::new(), Vec::new(), Vec::new());
        for (i, url) in wanted.iter().enumerate() {
            let connect = Server::connect(
                ServerId(i),
                pool.client(url.clone()),
                config.headers.clone(),
                config.progress,
            );
            let answer = tokio::select! {
                answer = connect => answer,
                asked = stop.wait_for(Stop::asked) => {
                    let reason = asked.map_or(CancelReason::Interrupt, |s| s.reason_before_start());
                    return Ok(Connect::Stopped(reason));
                }
            };
            match answer {
                Ok((server, socket)) => {
                    let task = tokio::spawn(server.clone().supervise(
                        socket,
                        config.server_lost_after,
                        sender.clone(),
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
        Ok(Connect::Servers(Connected {
            slots,
            supervisors,
            errors,
            sender,
            messages,
            stop,
        }))
    }

    /// Starts the run on the servers `connected` found: reported started,
    /// the unreachable ones warned of. With jobs to run and no server, the
    /// jobs are listed for the CI reports (no row is written) and the run
    /// does not start.
    pub(super) fn start(
        config: RunConfig,
        jobs: &'s mut dyn JobFeed,
        total: usize,
        skipped: usize,
        output: Arc<OutputDir>,
        mut events: Events<'s, 'a>,
        connected: Connected,
    ) -> Result<Self, RunError> {
        let Connected {
            slots,
            supervisors,
            errors,
            sender,
            messages,
            stop,
        } = connected;
        if slots.is_empty() && total > 0 {
            jobs.rest(&mut |job| {
                events.emit(EventKind::JobNotRun {
                    job,
                    reason: NOT_RUN_NO_SERVER.into(),
                })
            })?;
            return Err(RunError::NoServer(errors));
        }
        let ledger = Ledger::new(total, skipped, config.retries, config.max_failures);
        events.emit(EventKind::RunStarted {
            total,
            skipped,
            servers: config.servers.iter().map(|s| s.to_string()).collect(),
        })?;
        for e in &errors {
            tracing::warn!("server unreachable, running without it: {e}");
        }
        let (cancel_tx, cancel) = watch::channel::<Option<CancelReason>>(None);
        let ctx = Self::context(&config, output, &slots, cancel, sender);
        Ok(Scheduler {
            config,
            events,
            jobs,
            exhausted: total == 0,
            waiting: VecDeque::new(),
            retried: HashMap::new(),
            ledger,
            slots,
            supervisors,
            tasks: Tasks::default(),
            orphans: HashMap::new(),
            ctx,
            messages,
            asked: Asked {
                stop,
                open: true,
                terminate_by: None,
            },
            cancelled: None,
            cancel_tx,
            pacing: PacePolicy::default(),
        })
    }

    /// What every attempt of the run shares: the config's limits, the
    /// servers that answered, the run's cancel and the scheduler's channel.
    fn context(
        config: &RunConfig,
        output: Arc<OutputDir>,
        slots: &[ServerSlot],
        cancel: watch::Receiver<Option<CancelReason>>,
        events: mpsc::UnboundedSender<Msg>,
    ) -> AttemptContext {
        AttemptContext {
            output,
            previews: config.previews,
            timeout: config.timeout,
            queue_timeout: config.queue_timeout,
            cancel,
            events,
            run_key: config.run_key.clone(),
            servers: Arc::new(slots.iter().map(|s| s.server.clone()).collect()),
            pace: config.pace.clone(),
            files: offload::FileWork::new(),
            packs: Default::default(),
        }
    }

    /// Hands out, then waits for what comes next, until no task is left
    /// and nothing is to be handed out (or the run stopped); then
    /// [`Self::drain`] and [`Self::finish`].
    pub(super) async fn run(mut self) -> Result<RunSummary, RunError> {
        loop {
            if self.events.failed.is_some() {
                self.cancel(CancelReason::SecondInterrupt)?;
            }
            self.hand_out();
            if self.tasks.count == 0 && (self.nothing_left() || self.cancelled.is_some()) {
                break;
            }
            if self.tasks.count == 0 && !self.slots.iter().any(|s| s.alive) {
                self.cancel(CancelReason::NoServers)?;
                break;
            }
            self.pace();
            match self.next_wake().await {
                Wake::Message(Some(msg)) => self.on_message(msg)?,
                Wake::Message(None) => break,
                Wake::Stop { closed } => self.on_stop(closed)?,
                Wake::OutOfTime => {
                    self.out_of_time()?;
                    break;
                }
            }
        }
        self.drain()?;
        self.finish()
    }

    /// Fills free slots, least loaded live server first. Jobs still
    /// downloading hold no slot; the bound on tasks bounds them (and their
    /// images in memory) too. Packed jobs waiting for their pack's prompt
    /// do not count: the next pack's prompt must still be queued meanwhile.
    fn hand_out(&mut self) {
        let max_tasks = 2 * self.config.concurrency * self.slots.len() + self.tasks.parked;
        while self.cancelled.is_none() && self.tasks.count < max_tasks {
            let Some(slot) = self.free_slot() else {
                break;
            };
            let Some(next) = self.next_job() else {
                break;
            };
            self.spawn(slot, next);
        }
    }

    /// The index of the least loaded live server with a free slot.
    fn free_slot(&self) -> Option<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.alive && s.load.in_flight < self.config.concurrency)
            .min_by_key(|(_, s)| s.load.in_flight)
            .map(|(i, _)| i)
    }

    /// The next job to hand out: one handed back first, else the feed's
    /// next (built now).
    fn next_job(&mut self) -> Option<Waiting> {
        if let Some(next) = self.waiting.pop_front() {
            return Some(next);
        }
        if self.exhausted {
            return None;
        }
        let next = self.jobs.next_job();
        self.exhausted = next.is_none();
        next.map(|(job, attempt)| (Arc::new(job), attempt, 1))
    }

    /// Runs one attempt of a job in a task of its own on the slot's server;
    /// it reports back with [`Msg::Finished`].
    fn spawn(&mut self, slot: usize, (job, attempt, tries): Waiting) {
        self.orphans
            .remove(&job::prompt_id(&self.config.run_key, &job, attempt));
        let slot = &mut self.slots[slot];
        slot.load.spawned();
        self.tasks.count += 1;
        self.tasks.jobs.insert(job.id.clone(), job.clone());
        let server = slot.server.clone();
        let ctx = self.ctx.clone();
        let tx = ctx.events.clone();
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

    /// Neither the feed nor the jobs handed back have any left.
    fn nothing_left(&self) -> bool {
        self.exhausted && self.waiting.is_empty()
    }

    /// Cancelling, or a server that may run dry while there is work to
    /// hand out: every wake-up counts (see `pace`).
    fn pace(&self) {
        if self.cancelled.is_some() {
            return self.pacing.stop(&self.config.pace);
        }
        let live = self.slots.iter().filter(|s| s.alive);
        let on_server = live.clone().map(|s| s.load.on_server());
        let left = handing_out(self.nothing_left(), live.map(|s| s.load));
        self.pacing.apply(&self.config.pace, on_server, left);
    }

    /// Waits for a message, what the user asks, or a termination's
    /// deadline.
    async fn next_wake(&mut self) -> Wake {
        tokio::select! {
            msg = self.messages.recv() => Wake::Message(msg),
            changed = self.asked.stop.changed(), if self.asked.open => {
                Wake::Stop { closed: changed.is_err() }
            }
            _ = job::sleep_until(self.asked.terminate_by) => Wake::OutOfTime,
        }
    }

    /// Follows a message of a job task or a server's supervisor.
    fn on_message(&mut self, msg: Msg) -> Result<(), RunError> {
        match msg {
            Msg::Event(kind) => self.events.emit(kind)?,
            Msg::Queued { server } => self.slot(server).load.queued(),
            Msg::Released { server, unsent } => self.slot(server).load.released(unsent),
            Msg::Parked { parked: true } => self.tasks.parked += 1,
            Msg::Parked { parked: false } => {
                self.tasks.parked = self.tasks.parked.saturating_sub(1);
            }
            Msg::ServerLost { server, cause } => {
                self.slot(server).alive = false;
                self.events.emit(EventKind::ServerLost { server, cause })?;
            }
            Msg::ServerRecovered { server } => self.on_recovered(server)?,
            Msg::Finished {
                job,
                attempt,
                tries,
                server,
                end,
            } => self.on_finished(job, attempt, tries, server, end)?,
        }
        Ok(())
    }

    /// A lost server answers again: it takes jobs, and the prompts its
    /// moved jobs left in its queue are removed.
    fn on_recovered(&mut self, server: ServerId) -> Result<(), RunError> {
        let left: Vec<String> = self
            .orphans
            .extract_if(|_, s| *s == server)
            .map(|(p, _)| p.as_str().to_string())
            .collect();
        let slot = self.slot(server);
        slot.alive = true;
        if !left.is_empty() {
            let server = slot.server.clone();
            tokio::spawn(async move {
                if let Err(e) = server.http.delete_queued(&left).await {
                    tracing::warn!("{}: could not remove moved prompts: {e}", server.url());
                }
            });
        }
        self.events.emit(EventKind::ServerRecovered { server })
    }

    /// An attempt ended: the ledger says whether its job moves on to
    /// another server, retries, or is done (and whether too many failed).
    fn on_finished(
        &mut self,
        job: Arc<Job>,
        attempt: u32,
        tries: u32,
        server: ServerId,
        end: AttemptEnd,
    ) -> Result<(), RunError> {
        self.tasks.count -= 1;
        self.tasks.jobs.remove(&job.id);
        if let AttemptEnd::Done(outcome) = &end
            && let (Some(start), Some(end)) =
                (outcome.attempt.started_at, outcome.attempt.finished_at)
        {
            self.pacing
                .job_ran(end.duration_since(start).unwrap_or_default());
        }
        if matches!(end, AttemptEnd::Requeue(_)) && !self.slot(server).alive {
            let prompt = job::prompt_id(&self.config.run_key, &job, attempt);
            self.orphans.insert(prompt, server);
        }
        let url = self.slot(server).server.url();
        let stopping = self.cancelled.is_some();
        match self
            .ledger
            .settle(&job.id, attempt, tries, &url, end, stopping)
        {
            Settled::MoveOn(cause) => {
                tracing::info!("{} ({url}): moving on: {cause}", job.id);
                self.waiting.push_front((job, attempt, tries));
            }
            Settled::Retry(outcome) => {
                self.retried.insert(job.id.clone(), outcome.clone());
                self.events.emit(EventKind::JobRetrying {
                    job: job.clone(),
                    outcome,
                    attempt: attempt + 1,
                })?;
                self.waiting.push_back((job, attempt + 1, tries + 1));
            }
            Settled::Final(outcome) => {
                self.retried.remove(&job.id);
                let stats = self.ledger.stats;
                self.events.emit(EventKind::JobFinished {
                    job,
                    outcome,
                    stats,
                    logged: false,
                })?;
                if self.ledger.failures_exceeded() {
                    let reason = match self.config.fail_fast {
                        true => CancelReason::FailFast,
                        false => CancelReason::MaxFailures,
                    };
                    self.cancel(reason)?;
                }
            }
        }
        Ok(())
    }

    /// The user asked something: a first termination ends the run by its
    /// deadline, Ctrl-Cs cancel (a second one interrupts the running
    /// prompts too).
    fn on_stop(&mut self, closed: bool) -> Result<(), RunError> {
        let asked = *self.asked.stop.borrow();
        if closed {
            self.asked.open = false;
        } else if let (Some(by), None) = (asked.terminate_by, self.asked.terminate_by) {
            self.terminate(by)?;
        } else if asked.terminate_by.is_none() {
            let reason = if asked.interrupts >= 2 {
                CancelReason::SecondInterrupt
            } else {
                CancelReason::Interrupt
            };
            self.cancel(reason)?;
        }
        Ok(())
    }

    /// In this order, before any job task runs again (they share this
    /// thread): no new jobs; what is known is reported, the jobs never
    /// handed out from the plan's rows (no prompt built); then the tasks
    /// remove our prompts while the reports are written (on a thread of
    /// their own).
    fn terminate(&mut self, by: Instant) -> Result<(), RunError> {
        self.asked.terminate_by = Some(tokio::time::Instant::from_std(by));
        self.cancel(CancelReason::Terminated)?;
        self.exhausted = true;
        self.give_up_retries()?;
        self.not_handed_out(CancelReason::Terminated)?;
        self.events.emit(EventKind::Terminating {
            in_flight: self.tasks.jobs.values().cloned().collect(),
            stats: self.ledger.stats,
        })
    }

    /// Time is up: the servers that did not answer keep what they have;
    /// the next run adopts or removes it.
    fn out_of_time(&mut self) -> Result<(), RunError> {
        for (_, job) in self.tasks.jobs.drain() {
            self.events.emit(EventKind::JobNotRun {
                job: JobBrief::of(&job),
                reason: "not run: terminated before its prompt could be removed".into(),
            })?;
        }
        Ok(())
    }

    /// Stops handing out for `reason`, unless the run stops for a stronger
    /// one already; the job tasks are told.
    fn cancel(&mut self, reason: CancelReason) -> Result<(), RunError> {
        if Some(reason) > self.cancelled {
            self.cancelled = Some(reason);
            let _ = self.cancel_tx.send(Some(reason));
            self.events.emit(EventKind::Cancelling { reason })?;
        }
        Ok(())
    }

    /// A run stopped early reports what it left: the jobs waiting for a
    /// retry as failed, those never handed out as not run.
    fn drain(&mut self) -> Result<(), RunError> {
        if let Some(reason) = self.cancelled {
            self.give_up_retries()?;
            self.not_handed_out(reason)?;
        }
        Ok(())
    }

    /// Reports the run finished and ends the supervisors; the observer's
    /// failure, if any, is the run's result.
    fn finish(self) -> Result<RunSummary, RunError> {
        let Scheduler {
            mut events,
            ledger,
            pacing,
            config,
            supervisors,
            cancelled,
            ..
        } = self;
        let stats = ledger.stats;
        pacing.stop(&config.pace);
        events.emit(EventKind::RunFinished { stats })?;
        drop(supervisors);
        if let Some(e) = events.failed {
            return Err(RunError::Sink(e));
        }
        Ok(RunSummary { stats, cancelled })
    }

    /// Reports each job waiting for its retry (its failed attempt in
    /// `retried`) as failed with that attempt's outcome, a row already:
    /// the run stopped, the job did not run again, and it failed. The
    /// others stay waiting.
    fn give_up_retries(&mut self) -> Result<(), RunError> {
        let mut rest = VecDeque::with_capacity(self.waiting.len());
        for (job, attempt, tries) in std::mem::take(&mut self.waiting) {
            match self.retried.remove(&job.id) {
                Some(outcome) => {
                    self.ledger.gave_up(&job.id);
                    self.events.emit(EventKind::JobFinished {
                        job,
                        outcome,
                        stats: self.ledger.stats,
                        logged: true,
                    })?;
                }
                None => rest.push_back((job, attempt, tries)),
            }
        }
        self.waiting = rest;
        Ok(())
    }

    /// Reports the jobs never handed out (those waiting for a slot again,
    /// then the rest of the feed) as not run.
    fn not_handed_out(&mut self, reason: CancelReason) -> Result<(), RunError> {
        let events = &mut self.events;
        let briefs = self.waiting.drain(..).map(|(job, ..)| JobBrief::of(&job));
        super::not_handed_out(briefs, &mut *self.jobs, reason, &mut |kind| {
            events.emit(kind)
        })
    }

    /// The slot of a server. Slots exist only for servers that answered at
    /// the start, so a `ServerId` (the index in the configured list) is
    /// looked up, never used as an index.
    fn slot(&mut self, id: ServerId) -> &mut ServerSlot {
        self.slots
            .iter_mut()
            .find(|s| s.server.id == id)
            .expect("messages come only from servers that have a slot")
    }
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
        let pace = super::super::Pace::default();
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
