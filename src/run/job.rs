//! One attempt of one job on one server: upload its images, write its
//! prompt, submit it, follow its messages to the end, free the server slot,
//! then download its images while the server works on the next prompts.
//!
//! Nothing is done twice: the prompt id is deterministic (run, job,
//! attempt), so before posting, an attempt whose prompt file exists looks the
//! id up (/history, /queue) and collects or follows what an earlier, killed
//! run queued; a post that failed in transit is looked up before it is
//! repeated. Nothing is lost: messages missed over a reconnect are
//! reconciled over HTTP, a watchdog polls the prompt now and then (and often
//! for an adopted prompt, whose messages went to the dead client), and a
//! prompt the server forgot is run again.
//!
//! A packed job's attempt submits its pack's prompt only when no other job
//! of the pack runs it; otherwise it saves its own image of that prompt's
//! batch (see `packs`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::lifecycle::{
    Acted, Action, End, Event, Frame, JobOutputs, Lifecycle, Lookup, Overrun, Setup, not_run,
    outputs_of_history, timed_out,
};
use super::offload::{FileWork, on_pool};
use super::packs::{Board, Publisher, Ran, Role};
use super::retry::Backoff;
use super::server::Server;
use super::{Attempt, CancelReason, EventKind, Msg, Outcome, Status};
use crate::comfy::ClientError;
use crate::comfy::http::Submission;
use crate::comfy::outputs::Output;
use crate::comfy::protocol::{WsMessage, node_errors_line};
use crate::comfy::ws::ServerEvent;
use crate::ids::PromptId;
use crate::outcome::error_line;
use crate::plan::Job;
use crate::sink::{Incoming, OutputDir, extension_of};

/// What an attempt needs besides the job and the server.
#[derive(Clone)]
pub(crate) struct AttemptContext {
    pub output: Arc<OutputDir>,
    pub previews: bool,
    /// `--timeout`: from the prompt's start until its outputs are collected.
    pub timeout: Option<Duration>,
    /// `--queue-timeout`: from its submission until it starts.
    pub queue_timeout: Option<Duration>,
    pub cancel: watch::Receiver<Option<CancelReason>>,
    pub events: mpsc::UnboundedSender<Msg>,
    pub run_key: String,
    /// Every server of the run: an earlier run's prompt is looked up on each.
    pub servers: Arc<Vec<Arc<Server>>>,
    /// The runner's doze: while it is not zero, a job's sync may wait as
    /// long for other jobs to share it (see [`OutputDir::make_job_durable`]).
    pub pace: Arc<super::Pace>,
    /// Where a job's prompt file and images are written.
    pub files: FileWork,
    /// The packs' prompts: one job of a pack runs it, the others collect.
    pub packs: Arc<Board>,
}

/// How an attempt ended.
pub(crate) enum AttemptEnd {
    /// A final outcome for this attempt.
    Done(Outcome),
    /// The server lost the prompt or could not take it: run it elsewhere.
    Requeue(String),
}

/// How long a job's outputs may take to download after it ended, at
/// least, when its `--timeout` leaves less (or has passed: a success that
/// landed before the interrupt took effect is kept if collected so soon).
const COLLECT_GRACE: Duration = Duration::from_secs(2);

/// How often a job's sampler progress is reported, at most.
const PROGRESS_EVERY: Duration = Duration::from_millis(50);

/// The longest a request removing or interrupting our prompt may take in
/// a terminated run (one of its few seconds; a failed one is tried again).
const TERMINATING_REQUEST: Duration = Duration::from_secs(1);

/// One sampler step as the server reported it.
#[derive(Debug, Clone, PartialEq)]
struct Step {
    node: String,
    value: f64,
    max: f64,
}

/// Thins a job's progress reports to one per [`PROGRESS_EVERY`]. A last
/// step, and the first step of another node (a new bar), are reported at
/// once; a step held back is reported when its turn comes unless a later
/// one replaced it, so a bar never stays behind what the server said (a
/// node's steps may stop short of its max, or pause). A new `max` alone
/// waits its turn: a server that changed it every step would otherwise
/// undo the thinning.
#[derive(Debug, Default)]
struct ProgressThrottle {
    last: Option<(Instant, String)>,
    held: Option<Step>,
}

impl ProgressThrottle {
    /// A step seen at `now`: the step to report now, if any.
    fn offer(&mut self, step: Step, now: Instant) -> Option<Step> {
        let new_bar = self
            .last
            .as_ref()
            .is_none_or(|(_, node)| *node != step.node);
        let due = new_bar
            || step.value >= step.max
            || self
                .last
                .as_ref()
                .is_some_and(|(at, ..)| now - *at >= PROGRESS_EVERY);
        if due {
            self.held = None;
            self.last = Some((now, step.node.clone()));
            Some(step)
        } else {
            self.held = Some(step);
            None
        }
    }

    /// When the step held back is due.
    fn held_until(&self) -> Option<Instant> {
        match (&self.held, &self.last) {
            (Some(_), Some((at, ..))) => Some(*at + PROGRESS_EVERY),
            _ => None,
        }
    }

    /// The step held back, reported at `now` (its turn has come).
    fn release(&mut self, now: Instant) -> Option<Step> {
        let step = self.held.take()?;
        self.last = Some((now, step.node.clone()));
        Some(step)
    }
}

/// The prompt id of an attempt: derived from the run and the job, so a
/// restarted runner finds its own earlier prompt on the server.
pub(crate) fn prompt_id(run_key: &str, job: &Job, attempt: u32) -> PromptId {
    PromptId::new(format!("cb-{run_key}-{}-{attempt}", job.id))
}

/// Frees the server slot exactly once: when the server is done with the
/// prompt, or at the latest when the attempt ends. Until the prompt is
/// queued on the server it holds the slot without giving the server work:
/// the scheduler must not count it as a prompt queued there (see
/// [`Slot::queued`]).
struct Slot {
    server: Arc<Server>,
    events: mpsc::UnboundedSender<Msg>,
    held: bool,
    /// The prompt is not queued on the server yet.
    unsent: bool,
}

impl Slot {
    fn new(server: Arc<Server>, events: mpsc::UnboundedSender<Msg>) -> Slot {
        Slot {
            server,
            events,
            held: true,
            unsent: true,
        }
    }

    /// The prompt is queued on the slot's server (or followed there):
    /// from now on the server has this work whatever the runner does.
    fn queued(&mut self) {
        if self.held && std::mem::take(&mut self.unsent) {
            let _ = self.events.send(Msg::Queued {
                server: self.server.id,
            });
        }
    }

    fn release(&mut self) {
        if std::mem::take(&mut self.held) {
            let _ = self.events.send(Msg::Released {
                server: self.server.id,
                unsent: std::mem::take(&mut self.unsent),
            });
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.release();
    }
}

/// Tells the scheduler a packed job waits for its pack's prompt, for as
/// long as it lives.
struct Parked(mpsc::UnboundedSender<Msg>);

impl Parked {
    fn new(events: &mpsc::UnboundedSender<Msg>) -> Parked {
        let _ = events.send(Msg::Parked { parked: true });
        Parked(events.clone())
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        let _ = self.0.send(Msg::Parked { parked: false });
    }
}

/// Runs one attempt. Never returns an error: every failure is an outcome.
pub(crate) async fn run_attempt(
    job: Arc<Job>,
    number: u32,
    server: Arc<Server>,
    ctx: AttemptContext,
) -> AttemptEnd {
    let output = ctx.output.clone();
    let pace = ctx.pace.clone();
    // A lost server ends the attempt wherever it is, even in a request that
    // would hang until its timeout; the job moves on. Not the sync below:
    // an end already known (a final failure) is not the server's to undo.
    let end = tokio::select! {
        end = attempt(job.clone(), number, server.clone(), ctx) => end,
        _ = server.wait_lost() => AttemptEnd::Requeue("server lost".into()),
    };
    if let AttemptEnd::Done(outcome) = &end
        && outcome.status != Status::Ok
    {
        // An ok job's prompt file was synced with its outputs; a row that
        // says the job failed must not reach the disk before its prompt
        // file either (`rerun` replays it).
        let synced = output
            .make_job_durable(job.prompt_file_id(), &[], pace.leave())
            .await;
        if let Err(e) = synced {
            tracing::warn!("{}: {e}", job.id);
        }
    }
    end
}

/// [`run_attempt`] until its end is known: its steps in order, each
/// ending the attempt early (`Err`) when it can go no further.
async fn attempt(
    job: Arc<Job>,
    number: u32,
    server: Arc<Server>,
    ctx: AttemptContext,
) -> AttemptEnd {
    let pid = prompt_id(&ctx.run_key, &job, number);
    let mut run = AttemptRun {
        slot: Slot::new(server.clone(), ctx.events.clone()),
        attempt: Attempt {
            number,
            server: Some(server.url()),
            prompt_id: Some(pid.clone()),
            ..Attempt::default()
        },
        job,
        number,
        pid,
        ctx,
    };
    run.steps(server).await.unwrap_or_else(|end| end)
}

/// One attempt's state, shared by its steps.
struct AttemptRun {
    // Dropped after the steps' route and the pack's publisher (their
    // locals), as when these were one function's locals.
    slot: Slot,
    attempt: Attempt,
    job: Arc<Job>,
    number: u32,
    pid: PromptId,
    ctx: AttemptContext,
}

/// The attempt's end, when a step ends it before its prompt is followed.
type Early<T> = Result<T, AttemptEnd>;

/// A failed attempt, ended now with this status and error line.
fn fail(attempt: &Attempt, status: Status, error: String) -> AttemptEnd {
    let mut attempt = attempt.clone();
    attempt.finished_at.get_or_insert_with(SystemTime::now);
    AttemptEnd::Done(Outcome {
        status,
        images: Vec::new(),
        text: None,
        error: Some(error),
        attempt,
    })
}

/// Where an earlier run's prompt under this id stands, as
/// [`AttemptRun::find_earlier`] found it.
struct Earlier {
    /// The server that follows it: the attempt's own unless an earlier run
    /// queued it on another.
    server: Arc<Server>,
    already: Lookup,
    /// The server whose history holds an earlier run of this prompt id that
    /// is to run again: ComfyUI keeps that entry until the new run ends, and
    /// every lookup meanwhile would take it for the new run's end.
    stale: Option<Arc<Server>>,
}

impl AttemptRun {
    /// Upload inputs, save the prompt, take the pack's role, find an
    /// earlier run, submit, follow.
    async fn steps(&mut self, home: Arc<Server>) -> Early<AttemptEnd> {
        let patched = self.upload_inputs(&home).await?;
        let job = self.job.clone();
        let prompt = patched.as_ref().unwrap_or(&job.prompt);
        let maybe_submitted = self.save_prompt(prompt).await?;
        let mut publisher = self.pack_role().await?;
        let Earlier {
            server,
            mut already,
            stale,
        } = self.find_earlier(&home, maybe_submitted).await;
        if server.id != home.id {
            // Followed where an earlier run queued it: this server's slot is free.
            self.slot.release();
            self.attempt.server = Some(server.url());
        }
        let pid = self.pid.clone();
        // Route before posting: execution_start can overtake the HTTP reply.
        let mut rx = server.router.register(pid.as_str());
        let _route = Unregister(server.clone(), pid.clone());
        // Queued by an earlier (killed) run under another client id: its
        // messages go nowhere, so it is followed by polling.
        let adopted = matches!(already, Lookup::StillThere { .. });
        // A prompt queued by an earlier run keeps what the server said then.
        let mut rejected = None;
        if matches!(already, Lookup::StillThere { .. } | Lookup::Finished { .. }) {
            let (output, id) = (self.ctx.output.clone(), job.prompt_file_id().clone());
            rejected = on_pool(move || Ok(output.rejection(&id)))
                .await
                .ok()
                .flatten();
        }
        if matches!(already, Lookup::Missing | Lookup::Unknown) {
            let cancelled = *self.ctx.cancel.borrow();
            if cancelled.is_some() {
                // Cancelled while uploading: never queue anything new.
                return Err(fail(&self.attempt, Status::Interrupted, not_run(cancelled)));
            }
            if let Some(stale) = &stale {
                self.forget_earlier(stale).await?;
            }
            (already, rejected) = self.submit(&server, prompt, maybe_submitted).await?;
        }
        self.attempt.queued_at = Some(SystemTime::now());
        self.slot.queued();
        let _ = self.ctx.events.send(Msg::Event(EventKind::JobSubmitted {
            job: job.id.clone(),
            label: job.label.clone(),
            server: server.id,
            prompt: pid.clone(),
        }));
        if matches!(already, Lookup::Finished { .. }) {
            tracing::info!("{}: collecting {pid}, finished earlier", job.id);
        }
        let setup = Setup {
            over_socket: sends_images_over_socket(&job),
            adopted,
            finished: matches!(already, Lookup::Finished { .. }).then_some(already),
            rejected,
            timeout: self.ctx.timeout,
            queue_timeout: self.ctx.queue_timeout,
        };
        Ok(self.follow(&server, &mut rx, setup, &mut publisher).await)
    }

    /// Uploads the job's images, each first read and kept in the output
    /// folder (for `rerun`); returns its prompt naming them by the server's
    /// upload names (`None`: no images, the plan's prompt as it is).
    async fn upload_inputs(&self, server: &Server) -> Early<Option<crate::patch::Prompt>> {
        let (job, ctx, attempt) = (&self.job, &self.ctx, &self.attempt);
        // Images first: the prompt names them by the server's upload names.
        // Only then is it copied: most jobs send the plan's prompt as it is.
        let mut patched: Option<crate::patch::Prompt> = None;
        for image in &job.images {
            // Read and kept in the output folder (for `rerun`) off the runtime
            // threads, then uploaded under its content name.
            let (output, path) = (ctx.output.clone(), image.path.clone());
            let input = on_pool(move || {
                let input = OutputDir::read_input(&path)?;
                output.save_input(&input)?;
                Ok(input)
            })
            .await;
            let input = match input {
                Ok(input) => input,
                Err(e) => return Err(fail(attempt, Status::Failed, format!("upload {e}"))),
            };
            match server.upload(&input).await {
                Ok(uploaded) => {
                    if let Some(inputs) = patched
                        .get_or_insert_with(|| job.prompt.clone())
                        .0
                        .get_mut(image.node.as_str())
                        .and_then(|n| n.get_mut("inputs"))
                        .and_then(Value::as_object_mut)
                    {
                        inputs.insert(
                            image.input.clone(),
                            Value::String(uploaded.load_image_value()),
                        );
                    }
                }
                Err(e) if e.is_transient() => {
                    return Err(AttemptEnd::Requeue(format!("upload: {}", error_line(&e))));
                }
                Err(e) => {
                    return Err(fail(
                        attempt,
                        Status::Failed,
                        format!("upload {}: {}", image.path.display(), error_line(&e)),
                    ));
                }
            }
        }
        Ok(patched)
    }

    /// Writes the prompt file; returns whether one was there already.
    async fn save_prompt(&self, prompt: &crate::patch::Prompt) -> Early<bool> {
        // A prompt file from an earlier run means that run may have queued this
        // very prompt id before it died: collect its work instead of redoing it.
        // A pack's jobs keep one file, the pack's (`Job::prompt_file_id`).
        let (output, id) = (self.ctx.output.clone(), self.job.prompt_file_id().clone());
        let text = match crate::sink::prompt_text(prompt) {
            Ok(text) => text,
            Err(e) => {
                return Err(fail(
                    &self.attempt,
                    Status::Failed,
                    format!("the prompt file: {e}"),
                ));
            }
        };
        let saved = self
            .ctx
            .files
            .run(1, text.len(), move || {
                let existed = output.has_prompt(&id);
                if !existed {
                    // What a server once said of a prompt whose file is gone
                    // says nothing of this one.
                    output.save_rejection(&id, None)?;
                }
                output.save_prompt_text(&id, &text).map(|()| existed)
            })
            .await;
        match saved {
            Ok(existed) => Ok(existed),
            Err(e) => Err(fail(&self.attempt, Status::Failed, e)),
        }
    }

    /// A pack's prompt is run by one of its jobs; the others collect their
    /// images from its outputs, holding no slot (the server's work is the
    /// submitter's). Returns the publisher when this job submits it (`None`
    /// outside a pack); a collecting job's attempt ends here.
    async fn pack_role(&mut self) -> Early<Option<Publisher>> {
        let Some(pack) = &self.job.pack else {
            return Ok(None);
        };
        let ctx = &mut self.ctx;
        loop {
            match ctx.packs.role(&pack.id, self.number) {
                Role::Submit(p) => return Ok(Some(p)),
                Role::Collect(ran) => {
                    self.slot.release();
                    return Err(collect(&self.job, self.number, ran, ctx).await);
                }
                Role::Failed(outcome) => {
                    self.slot.release();
                    let mut outcome = Outcome::clone(&outcome);
                    outcome.attempt.number = self.number;
                    return Err(AttemptEnd::Done(outcome));
                }
                Role::Wait(mut rx) => {
                    self.slot.release();
                    let _parked = Parked::new(&ctx.events);
                    let mut cancelled = *ctx.cancel.borrow();
                    if cancelled.is_none() {
                        cancelled = tokio::select! {
                            _ = rx.changed() => None,
                            Ok(()) = ctx.cancel.changed() => *ctx.cancel.borrow(),
                        };
                    }
                    if cancelled.is_some() {
                        // It sent nothing: its row names no prompt.
                        let unsent = Attempt {
                            prompt_id: None,
                            ..self.attempt.clone()
                        };
                        return Err(fail(&unsent, Status::Interrupted, not_run(cancelled)));
                    }
                }
            }
        }
    }

    /// When a prompt file was there already (`maybe_submitted`), looks its
    /// id up on `home`, then on the other servers: an earlier run's prompt is
    /// followed or collected where it is, or run again here.
    async fn find_earlier(&self, home: &Arc<Server>, maybe_submitted: bool) -> Earlier {
        let (job, ctx, pid) = (&self.job, &self.ctx, &self.pid);
        let mut server = home.clone();
        let mut already = Lookup::Missing;
        let mut stale: Option<Arc<Server>> = None;
        if !maybe_submitted {
            return Earlier {
                server,
                already,
                stale,
            };
        }
        already = reconcile(&server, pid.as_str(), true).await;
        if matches!(already, Lookup::Missing | Lookup::Unknown) {
            // An earlier run may have sent it to another of the servers:
            // look on each before queueing it a second time.
            for other in ctx
                .servers
                .iter()
                .filter(|o| o.id != home.id && !o.is_lost())
            {
                let found = reconcile(other, pid.as_str(), false).await;
                if matches!(found, Lookup::Finished { .. } | Lookup::StillThere { .. }) {
                    server = other.clone();
                    already = found;
                    break;
                }
            }
        }
        if matches!(already, Lookup::StillThere { .. }) {
            tracing::info!("{}: found {pid} still queued on {}", job.id, server.url());
        }
        if let Lookup::Finished {
            end: End::Interrupted(_),
            ..
        } = already
        {
            // Stopped by the earlier run's second Ctrl-C, which died before
            // logging it: work not done, as after an `interrupted` row. Run
            // again here, under the same id (the server allows that).
            tracing::info!(
                "{}: {pid} was interrupted by an earlier run; running it again",
                job.id
            );
            already = Lookup::Missing;
            stale = Some(server.clone());
            server = home.clone();
        }
        if sends_images_over_socket(job) {
            // Its images go to the client that queued it, never to the
            // history: an earlier run's prompt cannot be collected, only
            // run again (under the same id; the server allows that).
            match already {
                Lookup::Finished { .. } => {
                    already = Lookup::Missing;
                    stale = Some(server.clone());
                }
                Lookup::StillThere { .. } => {
                    if let Acted::Removed = act_on_server(&server, pid.as_str(), false).await {
                        already = Lookup::Missing;
                    }
                }
                Lookup::Missing | Lookup::Unknown => {}
            }
            if matches!(already, Lookup::Missing | Lookup::Unknown) {
                // Run again here, where its images were uploaded.
                server = home.clone();
            }
        }
        Earlier {
            server,
            already,
            stale,
        }
    }

    /// Deletes the earlier run's history entry of this prompt id from the
    /// server that holds it, before the id is queued again.
    async fn forget_earlier(&self, stale: &Server) -> Early<()> {
        let pid = &self.pid;
        match stale.http.delete_history(&[pid.to_string()]).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_transient() => {
                Err(AttemptEnd::Requeue(format!("history: {}", error_line(&e))))
            }
            Err(e) => Err(fail(
                &self.attempt,
                Status::Failed,
                format!("forgetting the earlier run of {pid}: {}", error_line(&e)),
            )),
        }
    }

    /// Queues the prompt, retrying a transient failure only after looking
    /// the id up (never queued twice). Returns what is known of it then
    /// (`Missing`: queued by this attempt; `Finished`: an earlier post got
    /// through and ran) and the server's complaint about some outputs.
    async fn submit(
        &self,
        server: &Server,
        prompt: &crate::patch::Prompt,
        maybe_submitted: bool,
    ) -> Early<(Lookup, Option<String>)> {
        let (job, ctx, pid) = (&self.job, &self.ctx, &self.pid);
        let mut backoff = Backoff::default();
        loop {
            match server
                .http
                .submit(prompt, &server.client_id, pid.as_str())
                .await
            {
                Ok(Submission::Accepted(accepted)) => {
                    let rejected = (!accepted.node_errors.is_empty()).then(|| {
                        format!(
                            "prompt_outputs_failed_validation: {}",
                            node_errors_line(&accepted.node_errors)
                        )
                    });
                    // Kept beside the prompt: a later run that adopts this
                    // prompt (this one killed) still knows it was partial.
                    // Without an earlier prompt file there is no earlier
                    // line to clear: a clean submission costs no file work.
                    let (output, id, line) = (
                        ctx.output.clone(),
                        job.prompt_file_id().clone(),
                        rejected.clone(),
                    );
                    if (line.is_some() || maybe_submitted)
                        && let Err(e) =
                            on_pool(move || output.save_rejection(&id, line.as_deref())).await
                    {
                        tracing::warn!("{}: {e}", job.id);
                    }
                    return Ok((Lookup::Missing, rejected));
                }
                Ok(Submission::Rejected(r)) => {
                    return Err(fail(&self.attempt, Status::Rejected, r.one_line()));
                }
                Err(e) if e.is_transient() => {
                    let delay = backoff.next().filter(|_| !server.is_lost());
                    let Some(delay) = delay else {
                        return Err(AttemptEnd::Requeue(format!("submit: {}", error_line(&e))));
                    };
                    tokio::time::sleep(delay).await;
                    // The failed request may have reached the server (a lost
                    // reply, a proxy's timeout): never queue a prompt twice.
                    match reconcile(server, pid.as_str(), true).await {
                        found @ Lookup::Finished { .. } => return Ok((found, None)),
                        Lookup::StillThere { .. } => return Ok((Lookup::Missing, None)),
                        Lookup::Missing | Lookup::Unknown => {}
                    }
                }
                Err(e) => {
                    return Err(fail(
                        &self.attempt,
                        Status::Failed,
                        format!("submit: {}", error_line(&e)),
                    ));
                }
            }
        }
    }

    /// Follows the submitted prompt to its end: from here the state machine
    /// decides; this loop only performs its actions and turns messages,
    /// timers and answers into its events.
    async fn follow(
        &mut self,
        server: &Arc<Server>,
        rx: &mut mpsc::UnboundedReceiver<ServerEvent>,
        setup: Setup,
        publisher: &mut Option<Publisher>,
    ) -> AttemptEnd {
        let AttemptRun {
            slot,
            attempt,
            job,
            number,
            pid,
            ctx,
        } = self;
        let (mut machine, first) = Lifecycle::new(setup);
        let mut actions: VecDeque<Action> = first.into();
        // The limit the machine set last (queue's, then run's), kept after it
        // fires: the run's also bounds the downloads.
        let mut limit_at: Option<Instant> = None;
        let mut limit_fired = false;
        // Held from the timeout until the attempt ends (see `Pace::hurry`).
        let mut _hurry = None;
        let mut cancel_seen: Option<CancelReason> = None;
        let mut act_at: Option<Instant> = None;
        let mut poll_at: Option<Instant> = None;
        let mut progress = ProgressThrottle::default();
        loop {
            while let Some(action) = actions.pop_front() {
                let answer = match action {
                    Action::Lookup => {
                        Some(Event::Looked(reconcile(server, pid.as_str(), true).await))
                    }
                    Action::Act { stop_running } => {
                        let act = act_on_server(server, pid.as_str(), stop_running);
                        // A terminated run has seconds left: no request may
                        // take them all (the scheduler's deadline ends it).
                        let acted = match cancel_seen {
                            Some(CancelReason::Terminated) => {
                                tokio::time::timeout(TERMINATING_REQUEST, act)
                                    .await
                                    .unwrap_or(Acted::Again(Duration::from_millis(300)))
                            }
                            _ => act.await,
                        };
                        Some(Event::Acted(acted))
                    }
                    Action::PollIn(after) => {
                        poll_at = Some(Instant::now() + after);
                        None
                    }
                    Action::ActIn(after) => {
                        act_at = Some(Instant::now() + after);
                        None
                    }
                    Action::LimitIn(after) => {
                        limit_at = after.map(|after| Instant::now() + after);
                        limit_fired = false;
                        // A queue's limit that fired as the prompt started asks
                        // nothing more of the server.
                        _hurry = None;
                        None
                    }
                    Action::ReportStarted => {
                        attempt.started_at = Some(SystemTime::now());
                        let _ = ctx.events.send(Msg::Event(EventKind::JobStarted {
                            job: job.id.clone(),
                            server: server.id,
                        }));
                        None
                    }
                    Action::NoteRunning => {
                        attempt.started_at.get_or_insert_with(SystemTime::now);
                        None
                    }
                    Action::Release => {
                        attempt.finished_at = Some(SystemTime::now());
                        slot.release();
                        None
                    }
                    Action::Fail(status, line) => {
                        let end = fail(attempt, status, line);
                        // A pack's prompt that failed fails its other jobs'
                        // attempts too: it is not sent again for each.
                        if let (Some(p), AttemptEnd::Done(outcome)) = (publisher.take(), &end)
                            && matches!(status, Status::Failed | Status::Timeout)
                        {
                            p.fail(*number, outcome.clone());
                        }
                        return end;
                    }
                    Action::Requeue(cause) => return AttemptEnd::Requeue(cause),
                    Action::Save(outputs, frames) => {
                        // A success kept past the limit (its interrupt lost the
                        // race) still gets a moment to be collected.
                        let by = limit_at.map(|at| at.max(Instant::now() + COLLECT_GRACE));
                        if let Some(publisher) = publisher.take() {
                            publisher.publish(Ran {
                                server: server.clone(),
                                outputs: outputs.clone(),
                                attempt: attempt.clone(),
                            });
                        }
                        return match save_outputs(job, server, ctx, outputs, frames, by).await {
                            Ok((images, text)) => AttemptEnd::Done(Outcome {
                                status: Status::Ok,
                                images,
                                text,
                                error: None,
                                attempt: std::mem::take(attempt),
                            }),
                            // The server stopped answering after the work was
                            // done: another attempt collects it by prompt id
                            // (or, lost with the server, redoes it).
                            Err(SaveError::Unreachable(e)) => AttemptEnd::Requeue(e),
                            Err(SaveError::TimedOut(e)) => fail(attempt, Status::Timeout, e),
                            Err(SaveError::Failed(e)) => fail(attempt, Status::Failed, e),
                        };
                    }
                };
                if let Some(event) = answer {
                    actions.extend(machine.step(event));
                }
            }
            if machine.is_done() {
                // Unreachable: every final action returns above.
                return AttemptEnd::Requeue("attempt ended without an outcome".into());
            }
            let cancel_now = *ctx.cancel.borrow();
            let event = if cancel_now > cancel_seen {
                cancel_seen = cancel_now;
                cancel_now.map(Event::Cancel)
            } else if let Some(event) = delivered(rx) {
                // Messages already here are taken without setting up the waits
                // below again for each of them: after a doze there are several.
                server_event(event, &mut progress, ctx, job, server)
            } else {
                tokio::select! {
                    event = rx.recv() => server_event(event, &mut progress, ctx, job, server),
                    _ = sleep_until(limit_at), if !limit_fired => {
                        limit_fired = true;
                        _hurry = Some(ctx.pace.hurry());
                        Some(Event::Deadline)
                    }
                    _ = sleep_until(progress.held_until()) => {
                        if let Some(step) = progress.release(Instant::now()) {
                            report_progress(ctx, job, server, step);
                        }
                        continue;
                    }
                    _ = sleep_until(act_at) => {
                        act_at = None;
                        Some(Event::ActDue)
                    }
                    _ = sleep_until(poll_at) => {
                        poll_at = None;
                        Some(if server.is_lost() { Event::Lost } else { Event::PollDue })
                    }
                    changed = ctx.cancel.changed() => {
                        // The scheduler is gone; nothing will read our outcome.
                        changed.is_err().then_some(Event::Gone("run ended"))
                    }
                }
            };
            if let Some(event) = event {
                actions.extend(machine.step(event));
            }
        }
    }
}

/// A message already delivered to the route, if any: `Some(None)` when
/// the route is closed.
fn delivered(rx: &mut mpsc::UnboundedReceiver<ServerEvent>) -> Option<Option<ServerEvent>> {
    match rx.try_recv() {
        Ok(event) => Some(Some(event)),
        Err(mpsc::error::TryRecvError::Empty) => None,
        Err(mpsc::error::TryRecvError::Disconnected) => Some(None),
    }
}

/// What a server event means to the state machine. Progress changes no
/// state: it goes to the display, at most every [`PROGRESS_EVERY`] (a bar
/// redraws no faster, and each report wakes the scheduler).
fn server_event(
    event: Option<ServerEvent>,
    progress: &mut ProgressThrottle,
    ctx: &AttemptContext,
    job: &Job,
    server: &Server,
) -> Option<Event> {
    match event {
        Some(ServerEvent::Message(WsMessage::Progress {
            value, max, node, ..
        })) => {
            let step = Step {
                node: node.unwrap_or_default(),
                value,
                max,
            };
            if let Some(step) = progress.offer(step, Instant::now()) {
                report_progress(ctx, job, server, step);
            }
            None
        }
        Some(event) => Event::from_server(event),
        None => Some(Event::Gone("router closed")),
    }
}

/// Tells the scheduler (and so the display) a job's sampler step.
fn report_progress(ctx: &AttemptContext, job: &Job, server: &Server, step: Step) {
    let _ = ctx.events.send(Msg::Event(EventKind::JobProgress {
        job: job.id.clone(),
        server: server.id,
        node: step.node,
        value: step.value.max(0.0).round() as u32,
        max: step.max.max(0.0).round() as u32,
    }));
}

struct Unregister(Arc<Server>, PromptId);

impl Drop for Unregister {
    fn drop(&mut self) {
        self.0.router.unregister(self.1.as_str());
    }
}

/// Sleeps until `deadline`; forever without one.
pub(super) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Deletes the prompt if it is pending; interrupts it if it runs and
/// `stop_running`.
async fn act_on_server(server: &Server, prompt_id: &str, stop_running: bool) -> Acted {
    let retry = Acted::Again(Duration::from_millis(300));
    let Ok(queue) = server.queue_since(std::time::Instant::now()).await else {
        return retry;
    };
    let running = if queue.is_pending(prompt_id) {
        if server
            .http
            .delete_queued(&[prompt_id.to_string()])
            .await
            .is_err()
        {
            return retry;
        }
        let Ok(queue) = server.queue_since(std::time::Instant::now()).await else {
            return retry;
        };
        if queue.is_pending(prompt_id) {
            return retry;
        }
        if !queue.is_running(prompt_id) {
            // Gone from the queue: deleted, unless it ran in between.
            return match server.http.history(prompt_id).await {
                Ok(None) => Acted::Removed,
                Ok(Some(_)) => Acted::Nothing,
                Err(_) => retry,
            };
        }
        true
    } else {
        queue.is_running(prompt_id)
    };
    if running && stop_running {
        let _ = server.http.interrupt(prompt_id).await;
        return Acted::Again(Duration::from_secs(1));
    }
    Acted::Nothing
}

/// Looks the prompt up: the history says how a finished prompt ended and
/// what it made; the queue says whether it is still coming. With `patient`
/// a failed request is retried with backoff.
async fn reconcile(server: &Server, prompt_id: &str, patient: bool) -> Lookup {
    let mut backoff = Backoff::default();
    loop {
        // One pass, each read deciding: history, then queue, then history
        // again (it may have finished between the first two reads). A second
        // queue read could miss a prompt that finished after the first one
        // and call it lost (it would then be run twice).
        let result = async {
            // Any queue read started after this serves (shared by the jobs
            // on the server): it still follows the first history read.
            let since = std::time::Instant::now();
            if let Some(entry) = server.http.history(prompt_id).await? {
                return Ok(finished(entry));
            }
            // Whether it runs tells the attempt its run's clock has started.
            let there = |queue: &crate::comfy::protocol::QueueState| {
                let running = queue.is_running(prompt_id);
                (running || queue.is_pending(prompt_id)).then_some(Lookup::StillThere { running })
            };
            // A recent read that shows it serves every job waiting on the
            // server: one `/queue` per round, not one per job.
            if let Some(found) = server
                .queue_recent(SHARED_QUEUE_AGE)
                .await
                .and_then(|q| there(&q))
            {
                return Ok(found);
            }
            let queue = server.queue_since(since).await?;
            if let Some(found) = there(&queue) {
                return Ok(found);
            }
            match server.http.history(prompt_id).await? {
                Some(entry) => Ok(finished(entry)),
                None => Err(Missed::Gone),
            }
        }
        .await;
        match result {
            Ok(found) => return found,
            Err(Missed::Gone) => return Lookup::Missing,
            Err(Missed::Failed(e)) if e.is_transient() && patient => {
                match backoff.next().filter(|_| !server.is_lost()) {
                    Some(d) => tokio::time::sleep(d).await,
                    None => return unknown(prompt_id, e),
                }
            }
            Err(Missed::Failed(e)) => return unknown(prompt_id, e),
        }
    }
}

/// A history entry as a lookup's answer.
fn finished(entry: crate::comfy::protocol::HistoryEntry) -> Lookup {
    let outputs = outputs_of_history(&entry);
    let end = match entry.status {
        Some(status) if status.status_str == "success" => End::Success,
        Some(status) => history_failure(&status.messages),
        None => history_failure(&[]),
    };
    Lookup::Finished { end, outputs }
}

/// How old a shared queue read may be to show a prompt still queued.
const SHARED_QUEUE_AGE: Duration = Duration::from_secs(1);

fn unknown(prompt_id: &str, e: ClientError) -> Lookup {
    let line = error_line(&e);
    tracing::debug!("{prompt_id}: cannot look it up yet: {line}");
    Lookup::Unknown
}

/// Why a lookup pass did not find the prompt.
enum Missed {
    /// In neither history nor queue.
    Gone,
    /// A request failed.
    Failed(ClientError),
}

impl From<ClientError> for Missed {
    fn from(e: ClientError) -> Self {
        Missed::Failed(e)
    }
}

fn history_failure(messages: &[(String, Value)]) -> End {
    for (kind, data) in messages.iter().rev() {
        match kind.as_str() {
            "execution_error" => {
                if let Ok(e) =
                    serde_json::from_value::<crate::comfy::protocol::ExecutionError>(data.clone())
                {
                    return End::Error(e.one_line());
                }
            }
            "execution_interrupted" => return End::Interrupted("interrupted".into()),
            _ => {}
        }
    }
    End::Error("failed (no details in the history)".into())
}

/// A packed job's attempt whose pack's prompt ran already (on `ran`'s
/// server): its own image is saved from those outputs, and its row tells
/// of that prompt (id, server, times).
async fn collect(job: &Job, number: u32, ran: Arc<Ran>, ctx: &AttemptContext) -> AttemptEnd {
    let attempt = Attempt {
        number,
        ..ran.attempt.clone()
    };
    let outcome = |status, images, text, error| {
        AttemptEnd::Done(Outcome {
            status,
            images,
            text,
            error,
            attempt: attempt.clone(),
        })
    };
    let outputs = ran.outputs.clone();
    match save_outputs(job, &ran.server, ctx, outputs, Vec::new(), None).await {
        Ok((images, text)) => outcome(Status::Ok, images, text, None),
        Err(SaveError::Unreachable(e)) => AttemptEnd::Requeue(e),
        Err(SaveError::TimedOut(e)) => outcome(Status::Timeout, Vec::new(), None, Some(e)),
        Err(SaveError::Failed(e)) => outcome(Status::Failed, Vec::new(), None, Some(e)),
    }
}

/// Whether the job's outputs come only over the websocket
/// (`SaveImageWebsocket`), so a history entry alone does not hold them.
fn sends_images_over_socket(job: &Job) -> bool {
    job.prompt.0.values().any(|node| {
        node.get("class_type")
            .and_then(Value::as_str)
            .is_some_and(|c| c.contains("SaveImageWebsocket"))
    })
}

/// Why images could not be saved.
enum SaveError {
    /// The server stopped answering (transient errors, retries used up).
    Unreachable(String),
    /// The downloads outlasted the job's limit: this line.
    TimedOut(String),
    /// Anything else: the job fails with this line.
    Failed(String),
}

/// Saves collected outputs: downloads every file the nodes reported (and
/// previews if asked) before `by` (the job's limit), writes them with the
/// texts and the websocket images; returns their paths relative to the
/// output folder and the job's single text (the log's `text` column).
async fn save_outputs(
    job: &Job,
    server: &Server,
    ctx: &AttemptContext,
    outputs: JobOutputs,
    frames: Vec<Frame>,
    by: Option<Instant>,
) -> Result<(Vec<String>, Option<String>), SaveError> {
    // A malformed report may hide files: the job is not `ok` without them.
    if let Some(e) = outputs.error() {
        return Err(SaveError::Failed(e.to_string()));
    }
    // A packed job's prompt made its whole pack: it keeps its own image,
    // and no frame (previews are the pack's, not the job's).
    let (outputs, frames) = match &job.pack {
        Some(p) => match outputs.batch_item(p.batch_index, p.size) {
            Ok(own) => (own, Vec::new()),
            Err(e) => return Err(SaveError::Failed(e)),
        },
        None => (outputs, frames),
    };
    // Downloaded first, then written in one batch (in place or on the
    // pool, see `offload`); a large file is written as it arrives instead.
    let mut files: Vec<(String, usize, String, Payload)> = Vec::new();
    let mut per_node: std::collections::HashMap<String, usize> = Default::default();
    let mut next_n = |node: &str| {
        let n = per_node.entry(node.to_string()).or_insert(0);
        *n += 1;
        *n - 1
    };
    for (node, output) in outputs.items() {
        let file = match output {
            Output::Text(text) => {
                let n = next_n(node);
                let bytes = bytes::Bytes::from(text.clone().into_bytes());
                files.push((node.to_string(), n, "txt".into(), Payload::Held(bytes)));
                continue;
            }
            Output::File(file) => file,
        };
        let wanted = file.kind == "output" || (ctx.previews && file.kind == "temp");
        if !wanted {
            continue;
        }
        // The server's name is only ever a request parameter (reduced to its
        // last component by the parser) and the source of an extension.
        let what = format!("node {node} file {}", file.filename);
        let download = async {
            let mut backoff = Backoff::default();
            loop {
                match download_one(server, file, ctx).await {
                    Ok(b) => return Ok(b),
                    Err(Fetch::Write(e)) => {
                        return Err(SaveError::Failed(format!("download {what}: {e}")));
                    }
                    Err(Fetch::Http(e)) if e.is_transient() => {
                        match backoff.next().filter(|_| !server.is_lost()) {
                            Some(d) => tokio::time::sleep(d).await,
                            None => {
                                return Err(SaveError::Unreachable(format!(
                                    "download {what}: {}",
                                    error_line(&e)
                                )));
                            }
                        }
                    }
                    Err(Fetch::Http(e)) => {
                        return Err(SaveError::Failed(format!(
                            "download {what}: {}",
                            error_line(&e)
                        )));
                    }
                }
            }
        };
        // One deadline for every file: the job's limit covers collecting
        // its outputs, however slowly a server sends them.
        let bytes = match by {
            Some(by) => tokio::time::timeout_at(by, download).await.map_err(|_| {
                SaveError::TimedOut(timed_out(ctx.timeout, Overrun::Download(&what)))
            })??,
            None => download.await?,
        };
        let n = next_n(node);
        files.push((node.to_string(), n, extension_of(&file.filename), bytes));
    }
    let text = outputs.single_text().map(str::to_string);
    for (node, ext, bytes) in &frames {
        // Sampler previews arrive on the same socket; only image-saving
        // nodes' frames are outputs (JPEG previews with --previews).
        let class = job
            .prompt
            .0
            .get(node.as_str())
            .and_then(|n| n.get("class_type"))
            .and_then(Value::as_str);
        let is_output = match class {
            Some(class) => class.contains("SaveImageWebsocket"),
            None => *ext == "png",
        };
        if !is_output && !ctx.previews {
            continue;
        }
        let n = next_n(node);
        files.push((
            node.clone(),
            n,
            ext.to_string(),
            Payload::Held(bytes.clone()),
        ));
    }
    let (output, id) = (ctx.output.clone(), job.id.clone());
    let bytes = files.iter().map(|(.., payload)| payload.held_len()).sum();
    let saved = ctx
        .files
        .run(files.len(), bytes, move || {
            files
                .into_iter()
                .map(|(node, n, ext, payload)| match payload {
                    Payload::Held(bytes) => output.save_image(&id, &node, n, &ext, &bytes),
                    Payload::Written(file) => output.save_incoming(&id, &node, n, &ext, file),
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(SaveError::Failed)?;
    // Jobs are long: a row that waits a doze costs no server time (this
    // job's slot is free already). Read now, not before the writes: the
    // run may have begun to stop meanwhile.
    ctx.output
        .make_job_durable(job.prompt_file_id(), &saved, ctx.pace.leave())
        .await
        .map_err(|e| SaveError::Failed(error_line(&e)))?;
    Ok((saved, text))
}

/// A downloaded output on its way to its file.
enum Payload {
    /// Small: held, written with the job's other files.
    Held(bytes::Bytes),
    /// Large: written as it arrived, named with the job's other files.
    Written(Incoming),
}

impl Payload {
    /// The bytes left to write.
    fn held_len(&self) -> usize {
        match self {
            Payload::Held(bytes) => bytes.len(),
            Payload::Written(_) => 0,
        }
    }
}

/// Why one download failed.
enum Fetch {
    /// The server or the connection: retried when transient.
    Http(ClientError),
    /// The output folder (one line): never retried.
    Write(String),
}

/// The most of a download held before it goes to a file as it arrives, and
/// the most written at once then: a file up to this size is written with
/// the job's others as before (in place while the disk is quick), a larger
/// one costs the runner about twice this, whatever its size.
const HELD_MAX: usize = super::offload::IN_PLACE_MAX_BYTES;

/// Downloads one server file: held while small, else written to an
/// [`Incoming`] file piece by piece on the blocking pool. Dropped before
/// the end (the job's timeout), the file is removed.
async fn download_one(
    server: &Server,
    file: &crate::comfy::protocol::ImageRef,
    ctx: &AttemptContext,
) -> Result<Payload, Fetch> {
    let mut body = server.http.view_body(file).await.map_err(Fetch::Http)?;
    let declared = body.declared_len().unwrap_or(0);
    // Room for the declared length when it will be held, made once; a
    // server's word is not trusted further.
    let mut held = bytes::BytesMut::with_capacity(declared.min(HELD_MAX as u64) as usize);
    let mut incoming: Option<Incoming> = None;
    while let Some(chunk) = body.chunk().await.map_err(Fetch::Http)? {
        held.extend_from_slice(&chunk);
        if held.len() <= HELD_MAX {
            continue;
        }
        let output = ctx.output.clone();
        let pending = std::mem::take(&mut held).freeze();
        let file = incoming.take();
        incoming = Some(
            on_pool(move || {
                let mut file = match file {
                    Some(file) => file,
                    None => output.incoming()?,
                };
                file.write(&pending)?;
                Ok(file)
            })
            .await
            .map_err(Fetch::Write)?,
        );
    }
    match incoming {
        None => Ok(Payload::Held(held.freeze())),
        Some(file) if held.is_empty() => Ok(Payload::Written(file)),
        Some(mut file) => {
            let rest = held.freeze();
            on_pool(move || {
                file.write(&rest)?;
                Ok(Payload::Written(file))
            })
            .await
            .map_err(Fetch::Write)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(node: &str, value: f64, max: f64) -> Step {
        Step {
            node: node.into(),
            value,
            max,
        }
    }

    /// Offers `steps` (ms since t0, node, value, max), releasing a held
    /// step whenever its turn comes before the next one; then lets the
    /// held one (if any) out. Returns the reported (ms, value, max).
    fn thin(steps: &[(u64, &str, f64, f64)]) -> Vec<(u64, f64, f64)> {
        let mut throttle = ProgressThrottle::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let ms_of = |t: Instant| (t - t0).as_millis() as u64;
        let mut reported = Vec::new();
        for &(ms, node, value, max) in steps {
            if let Some(due) = throttle.held_until()
                && due <= at(ms)
            {
                let s = throttle.release(due).unwrap();
                reported.push((ms_of(due), s.value, s.max));
            }
            if let Some(s) = throttle.offer(step(node, value, max), at(ms)) {
                reported.push((ms, s.value, s.max));
            }
        }
        if let Some(due) = throttle.held_until() {
            let s = throttle.release(due).unwrap();
            reported.push((ms_of(due), s.value, s.max));
        }
        reported
    }

    #[test]
    fn progress_is_thinned_but_first_and_last_steps_are_reported() {
        // Steps every 10 ms: one report per 50 ms, and the last step.
        let steps: Vec<_> = (1..=20)
            .map(|i| (10 * (i - 1), "3", i as f64, 20.0))
            .collect();
        let reported: Vec<u64> = thin(&steps).iter().map(|r| r.0).collect();
        assert_eq!(reported, vec![0, 50, 100, 150, 190]);
        // A fast job: its first and last steps only.
        let steps: Vec<_> = (1..=20).map(|i| (i - 1, "3", i as f64, 20.0)).collect();
        assert_eq!(thin(&steps), vec![(0, 1.0, 20.0), (19, 20.0, 20.0)]);
    }

    #[test]
    fn a_step_held_back_is_reported_when_the_steps_pause() {
        // Step 2 comes 10 ms after step 1, then the sampler stalls (a
        // shared GPU, an adaptive sampler): the bar must not stay at 1/20
        // for the whole stall.
        let reported = thin(&[
            (0, "3", 1.0, 20.0),
            (10, "3", 2.0, 20.0),
            (5000, "3", 3.0, 20.0),
        ]);
        assert_eq!(
            reported,
            vec![(0, 1.0, 20.0), (50, 2.0, 20.0), (5000, 3.0, 20.0)]
        );
    }

    #[test]
    fn a_node_whose_steps_stop_short_of_max_shows_its_last_step() {
        // SaveImageWebsocket reports 0..batch-1 of batch (as the real
        // server), right after the sampler's last step.
        let reported = thin(&[
            (0, "3", 20.0, 20.0),
            (2, "12", 0.0, 4.0),
            (3, "12", 1.0, 4.0),
            (4, "12", 2.0, 4.0),
            (5, "12", 3.0, 4.0),
        ]);
        assert_eq!(
            reported,
            vec![(0, 20.0, 20.0), (2, 0.0, 4.0), (52, 3.0, 4.0)],
            "another node starts a new bar at once; its last step follows"
        );
    }

    #[test]
    fn a_new_max_waits_its_turn_but_is_shown_within_it() {
        // A server that changes max every step is still thinned.
        let steps: Vec<_> = (1..=20)
            .map(|i| (i - 1, "3", i as f64, 100.0 + i as f64))
            .collect();
        assert_eq!(thin(&steps), vec![(0, 1.0, 101.0), (50, 20.0, 120.0)]);
        let reported = thin(&[(0, "3", 5.0, 10.0), (5, "3", 1.0, 30.0)]);
        assert_eq!(reported, vec![(0, 5.0, 10.0), (50, 1.0, 30.0)]);
    }
}
