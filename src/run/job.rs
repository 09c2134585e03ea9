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

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::retry::Backoff;
use super::server::Server;
use super::{Attempt, CancelReason, EventKind, Msg, Outcome, Status};
use crate::comfy::ClientError;
use crate::comfy::http::Submission;
use crate::comfy::outputs::{JobOutputs, Output};
use crate::comfy::protocol::{WsMessage, node_errors_line};
use crate::comfy::ws::ServerEvent;
use crate::ids::PromptId;
use crate::plan::Job;
use crate::sink::OutputDir;

/// What an attempt needs besides the job and the server.
#[derive(Clone)]
pub(crate) struct AttemptContext {
    pub output: Arc<OutputDir>,
    pub previews: bool,
    pub timeout: Option<Duration>,
    pub cancel: watch::Receiver<Option<CancelReason>>,
    pub events: mpsc::UnboundedSender<Msg>,
    pub run_key: String,
}

/// How an attempt ended.
pub(crate) enum AttemptEnd {
    /// A final outcome for this attempt.
    Done(Outcome),
    /// The server lost the prompt or could not take it: run it elsewhere.
    Requeue(String),
}

/// The prompt id of an attempt: derived from the run and the job, so a
/// restarted runner finds its own earlier prompt on the server.
pub(crate) fn prompt_id(run_key: &str, job: &Job, attempt: u32) -> PromptId {
    PromptId::new(format!("cb-{run_key}-{}-{attempt}", job.id))
}

/// Frees the server slot exactly once: when the server is done with the
/// prompt, or at the latest when the attempt ends.
struct Slot {
    server: Arc<Server>,
    events: mpsc::UnboundedSender<Msg>,
    held: bool,
}

impl Slot {
    fn release(&mut self) {
        if std::mem::take(&mut self.held) {
            let _ = self.events.send(Msg::Released {
                server: self.server.id,
            });
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.release();
    }
}

/// What the server said about a prompt, gathered from messages or history.
#[derive(Default)]
struct Tracked {
    started: bool,
    outputs: JobOutputs,
    ws_images: Vec<(String, &'static str, bytes::Bytes)>,
    end: Option<End>,
}

enum End {
    Success,
    Error(String),
    Interrupted(String),
}

/// Runs one attempt. Never returns an error: every failure is an outcome.
pub(crate) async fn run_attempt(
    job: Arc<Job>,
    number: u32,
    server: Arc<Server>,
    mut ctx: AttemptContext,
) -> AttemptEnd {
    let pid = prompt_id(&ctx.run_key, &job, number);
    let mut slot = Slot {
        server: server.clone(),
        events: ctx.events.clone(),
        held: true,
    };
    let mut attempt = Attempt {
        number,
        server: Some(server.url()),
        prompt_id: Some(pid.clone()),
        ..Attempt::default()
    };
    let fail = |attempt: &Attempt, status: Status, error: String| {
        let mut attempt = attempt.clone();
        attempt.finished_at.get_or_insert_with(SystemTime::now);
        AttemptEnd::Done(Outcome {
            status,
            images: Vec::new(),
            text: None,
            error: Some(error),
            attempt,
        })
    };

    // Images first: the prompt names them by the server's upload names.
    let mut prompt = job.prompt.clone();
    for image in &job.images {
        match server.upload(&image.path).await {
            Ok(uploaded) => {
                if let Some(inputs) = prompt
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
            Err(e) if e.is_transient() => return AttemptEnd::Requeue(format!("upload: {e}")),
            Err(e) => {
                return fail(
                    &attempt,
                    Status::Failed,
                    format!("upload {}: {e}", image.path.display()),
                );
            }
        }
    }
    // A prompt file from an earlier run means that run may have queued this
    // very prompt id before it died: collect its work instead of redoing it.
    let maybe_submitted = ctx.output.prompt_path(&job.id).exists();
    if let Err(e) = ctx.output.save_prompt(&job.id, &prompt) {
        return fail(&attempt, Status::Failed, e.to_string());
    }

    // Route before posting: execution_start can overtake the HTTP reply.
    let mut rx = server.router.register(pid.as_str());
    let _route = Unregister(&server, pid.as_str());
    let mut tracked = Tracked::default();
    let mut already = Reconciled::Missing;
    if maybe_submitted {
        already = reconcile(&server, pid.as_str(), &mut tracked).await;
        if matches!(already, Reconciled::StillThere) {
            tracing::info!("{}: found {pid} still queued on {}", job.id, server.url());
        }
        if sends_images_over_socket(&job) {
            // Its images go to the client that queued it, never to the
            // history: an earlier run's prompt cannot be collected, only
            // run again (under the same id; the server allows that).
            match already {
                Reconciled::Finished => {
                    tracked = Tracked::default();
                    already = Reconciled::Missing;
                }
                Reconciled::StillThere => {
                    if let Acted::Removed = act_on_server(&server, pid.as_str(), false).await {
                        already = Reconciled::Missing;
                    }
                }
                Reconciled::Missing | Reconciled::Unknown(_) => {}
            }
        }
    }
    // Queued by an earlier (killed) run under another client id: its
    // messages go nowhere, so it is followed by polling.
    let adopted = matches!(already, Reconciled::StillThere);
    let mut rejected = None;
    if matches!(already, Reconciled::Missing | Reconciled::Unknown(_)) {
        let cancelled = *ctx.cancel.borrow();
        if cancelled.is_some() {
            // Cancelled while uploading: never queue anything new.
            return fail(&attempt, Status::Interrupted, not_run(cancelled));
        }
        let mut backoff = Backoff::default();
        loop {
            match server
                .http
                .submit(&prompt, &server.client_id, pid.as_str())
                .await
            {
                Ok(Submission::Accepted(accepted)) => {
                    rejected = (!accepted.node_errors.is_empty()).then(|| {
                        format!(
                            "prompt_outputs_failed_validation: {}",
                            node_errors_line(&accepted.node_errors)
                        )
                    });
                    break;
                }
                Ok(Submission::Rejected(r)) => {
                    return fail(&attempt, Status::Rejected, r.one_line());
                }
                Err(e) if e.is_transient() => {
                    let delay = backoff.next().filter(|_| !server.is_lost());
                    let Some(delay) = delay else {
                        return AttemptEnd::Requeue(format!("submit: {e}"));
                    };
                    tokio::time::sleep(delay).await;
                    // The failed request may have reached the server (a lost
                    // reply, a proxy's timeout): never queue a prompt twice.
                    match reconcile(&server, pid.as_str(), &mut tracked).await {
                        Reconciled::StillThere => break,
                        Reconciled::Finished => {
                            already = Reconciled::Finished;
                            break;
                        }
                        Reconciled::Missing | Reconciled::Unknown(_) => {}
                    }
                }
                Err(e) => return fail(&attempt, Status::Failed, format!("submit: {e}")),
            }
        }
    }
    attempt.queued_at = Some(SystemTime::now());
    let _ = ctx.events.send(Msg::Event(EventKind::JobSubmitted {
        job: job.id.clone(),
        label: job.label.clone(),
        server: server.id,
        prompt: pid.clone(),
    }));
    if matches!(already, Reconciled::Finished) {
        tracing::info!("{}: collecting {pid}, finished earlier", job.id);
    }

    let deadline = ctx.timeout.map(|t| Instant::now() + t);
    let mut timed_out = false;
    // Messages may have been missed (a dropped socket, or a prompt adopted
    // from a run whose client is gone): the history is then the authority
    // on outputs, and websocket images cannot be recovered.
    let mut missed = adopted;
    let mut cancel_seen: Option<CancelReason> = None;
    // When to (again) ask the server to drop or stop the prompt, for a
    // timeout or a cancel: a lost interrupt or a failed request is retried.
    let mut act_at: Option<Instant> = None;
    let poll_every = if adopted { ADOPTED_POLL } else { WATCHDOG_POLL };
    let mut poll_at = Instant::now() + poll_every;
    // The history says it ended; its final message is given a moment to
    // arrive (image frames come before it) before the history is trusted.
    let mut ended_in_history = false;
    let finished_before = matches!(already, Reconciled::Finished);
    if !finished_before {
        loop {
            let cancel_now = *ctx.cancel.borrow();
            if cancel_now > cancel_seen {
                cancel_seen = cancel_now;
                act_at = Some(Instant::now());
            }
            let stop_running = timed_out || cancel_seen == Some(CancelReason::SecondInterrupt);
            let event = tokio::select! {
                event = rx.recv() => event,
                _ = sleep_until(deadline), if !timed_out => {
                    timed_out = true;
                    act_at = Some(Instant::now());
                    continue;
                }
                _ = sleep_until(act_at) => {
                    act_at = None;
                    if stop_running || cancel_seen.is_some() {
                        match act_on_server(&server, pid.as_str(), stop_running).await {
                            Acted::Removed if timed_out => {
                                return fail(&attempt, Status::Timeout, timeout_text(ctx.timeout));
                            }
                            Acted::Removed => {
                                return fail(&attempt, Status::Interrupted, not_run(cancel_seen));
                            }
                            Acted::Again(after) => act_at = Some(Instant::now() + after),
                            Acted::Nothing => {}
                        }
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(poll_at) => {
                    poll_at = Instant::now() + poll_every;
                    if ended_in_history {
                        break;
                    }
                    if server.is_lost() {
                        return AttemptEnd::Requeue("server lost".into());
                    }
                    match reconcile(&server, pid.as_str(), &mut tracked).await {
                        Reconciled::Finished if adopted => break,
                        Reconciled::Finished => {
                            ended_in_history = true;
                            poll_at = Instant::now() + ENDED_GRACE;
                        }
                        Reconciled::StillThere => {}
                        Reconciled::Missing => {
                            return AttemptEnd::Requeue(
                                "the server forgot the prompt (restarted?)".into(),
                            );
                        }
                        Reconciled::Unknown(e) => {
                            tracing::debug!("{pid}: cannot reconcile yet: {e}");
                        }
                    }
                    continue;
                }
                changed = ctx.cancel.changed() => {
                    if changed.is_err() {
                        // The scheduler is gone; nothing will read our outcome.
                        return AttemptEnd::Requeue("run ended".into());
                    }
                    continue;
                }
            };
            let Some(event) = event else {
                return AttemptEnd::Requeue("router closed".into());
            };
            match event {
                ServerEvent::Message(message) => match message {
                    WsMessage::ExecutionStart { .. } => {
                        tracked.started = true;
                        attempt.started_at = Some(SystemTime::now());
                        let _ = ctx.events.send(Msg::Event(EventKind::JobStarted {
                            job: job.id.clone(),
                            server: server.id,
                        }));
                        if stop_running {
                            // It started after we asked: stop it now.
                            act_at = Some(Instant::now());
                        }
                    }
                    WsMessage::Executing { node: Some(_), .. } => {
                        if !tracked.started {
                            // Reconnect replay: it runs, though we missed the start.
                            tracked.started = true;
                            attempt.started_at.get_or_insert_with(SystemTime::now);
                            if stop_running {
                                act_at = Some(Instant::now());
                            }
                        }
                    }
                    WsMessage::Progress {
                        value, max, node, ..
                    } => {
                        let _ = ctx.events.send(Msg::Event(EventKind::JobProgress {
                            job: job.id.clone(),
                            server: server.id,
                            node: node.unwrap_or_default(),
                            value: value.max(0.0).round() as u32,
                            max: max.max(0.0).round() as u32,
                        }));
                    }
                    WsMessage::Executed { node, output, .. } => {
                        if let Some(output) = output {
                            // Replaces what the history may have listed.
                            tracked.outputs.add(&node, &output);
                        }
                    }
                    WsMessage::ExecutionSuccess { .. } => tracked.end = Some(End::Success),
                    WsMessage::ExecutionError(e) => tracked.end = Some(End::Error(e.one_line())),
                    WsMessage::ExecutionInterrupted {
                        node_id, node_type, ..
                    } => {
                        tracked.end = Some(End::Interrupted(format!(
                            "interrupted at node {} ({})",
                            node_id.unwrap_or_default(),
                            node_type.unwrap_or_default()
                        )))
                    }
                    WsMessage::Executing { node: None, .. } => {
                        if tracked.end.is_none() {
                            // The end message was lost: the history has it.
                            match reconcile(&server, pid.as_str(), &mut tracked).await {
                                Reconciled::Finished => {}
                                _ => {
                                    tracked.end =
                                        Some(End::Error("finished without a result".into()))
                                }
                            }
                        }
                        break;
                    }
                    WsMessage::Status { .. }
                    | WsMessage::ExecutionCached { .. }
                    | WsMessage::Other => {}
                },
                ServerEvent::Image { node, ext, bytes } => {
                    tracked
                        .ws_images
                        .push((node.unwrap_or_else(|| "ws".into()), ext, bytes));
                }
                ServerEvent::Disconnected => missed = true,
                ServerEvent::Reconnected => {
                    if tracked.end.is_some() {
                        // Only the final `executing` was missed: the outcome
                        // and the images came before it.
                        break;
                    }
                    match reconcile(&server, pid.as_str(), &mut tracked).await {
                        Reconciled::Finished => break,
                        Reconciled::StillThere => {}
                        Reconciled::Missing => {
                            return AttemptEnd::Requeue(
                                "the server forgot the prompt (restarted?)".into(),
                            );
                        }
                        Reconciled::Unknown(e) => {
                            tracing::debug!("{pid}: cannot reconcile yet: {e}");
                        }
                    }
                }
                ServerEvent::Lost => return AttemptEnd::Requeue("server lost".into()),
            }
        }
    }
    attempt.finished_at = Some(SystemTime::now());
    slot.release();

    // A success that landed before the interrupt took effect is kept.
    if timed_out && !matches!(tracked.end, Some(End::Success)) {
        return fail(&attempt, Status::Timeout, timeout_text(ctx.timeout));
    }
    if missed && matches!(tracked.end, Some(End::Success)) {
        // `executed` messages sent while we were away are gone; the history
        // lists every output.
        if !matches!(
            reconcile(&server, pid.as_str(), &mut tracked).await,
            Reconciled::Finished
        ) {
            return AttemptEnd::Requeue("outputs unknown after a disconnect".into());
        }
    }
    let (status, error) = match tracked.end.take() {
        Some(End::Success) => match rejected {
            Some(line) => (Status::Rejected, Some(line)),
            None => (Status::Ok, None),
        },
        Some(End::Error(line)) => (Status::Failed, Some(line)),
        Some(End::Interrupted(line)) => (Status::Interrupted, Some(line)),
        None => (
            Status::Failed,
            Some("no result from the server".to_string()),
        ),
    };
    if status == Status::Ok
        && sends_images_over_socket(&job)
        && (missed || tracked.ws_images.is_empty())
    {
        // Frames sent while we were away are lost for good; an `ok` row
        // never goes without its images.
        return fail(
            &attempt,
            Status::Failed,
            "websocket images were lost with the connection; run again".into(),
        );
    }
    if status != Status::Ok {
        return AttemptEnd::Done(Outcome {
            status,
            images: Vec::new(),
            text: None,
            error,
            attempt,
        });
    }
    match save_images(&job, &server, &ctx, tracked).await {
        Ok((images, text)) => AttemptEnd::Done(Outcome {
            status: Status::Ok,
            images,
            text,
            error: None,
            attempt,
        }),
        // The server stopped answering after the work was done: another
        // attempt collects it by prompt id (or, lost with the server, redoes it).
        Err(SaveError::Unreachable(e)) => AttemptEnd::Requeue(e),
        Err(SaveError::Failed(e)) => AttemptEnd::Done(Outcome {
            status: Status::Failed,
            images: Vec::new(),
            text: None,
            error: Some(e),
            attempt,
        }),
    }
}

struct Unregister<'a>(&'a Server, &'a str);

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        self.0.router.unregister(self.1);
    }
}

/// The error of a job whose prompt was dropped (or never posted) because
/// the run was cancelled.
fn not_run(reason: Option<CancelReason>) -> String {
    match reason {
        Some(CancelReason::MaxFailures) => "not run: too many failures (--max-failures)",
        Some(CancelReason::NoServers) => "not run: no server left",
        _ => "not run: interrupted",
    }
    .into()
}

fn timeout_text(timeout: Option<Duration>) -> String {
    let t = timeout.unwrap_or_default();
    format!("timed out after {}", humantime::format_duration(t))
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// How often an attempt checks its prompt over HTTP although messages
/// come: a safety net for lost messages, deletions by others, lost servers.
const WATCHDOG_POLL: Duration = Duration::from_secs(2);
/// How often a prompt queued by an earlier run (no messages reach us) is
/// looked up.
const ADOPTED_POLL: Duration = Duration::from_millis(250);
/// How long the final message may lag behind the history.
const ENDED_GRACE: Duration = Duration::from_secs(1);

/// What asking the server to drop (and, with `stop_running`, stop) a prompt
/// achieved.
enum Acted {
    /// It was pending and is gone: it never ran.
    Removed,
    /// Ask again after this long (a request failed, or an interrupt sent
    /// just as the prompt started may be lost: protocol.md §4).
    Again(Duration),
    /// Nothing to do: it runs and may finish, or it has ended already.
    Nothing,
}

/// Deletes the prompt if it is pending; interrupts it if it runs and
/// `stop_running`.
async fn act_on_server(server: &Server, prompt_id: &str, stop_running: bool) -> Acted {
    let retry = Acted::Again(Duration::from_millis(300));
    let Ok(queue) = server.http.queue().await else {
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
        let Ok(queue) = server.http.queue().await else {
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

enum Reconciled {
    Finished,
    StillThere,
    Missing,
    Unknown(ClientError),
}

/// After lost messages: the history says how a finished prompt ended and
/// what it made; the queue says whether it is still coming.
async fn reconcile(server: &Server, prompt_id: &str, tracked: &mut Tracked) -> Reconciled {
    let mut backoff = Backoff::default();
    loop {
        // One pass, each read deciding: history, then queue, then history
        // again (it may have finished between the first two reads). A second
        // queue read could miss a prompt that finished after the first one
        // and call it lost (it would then be run twice).
        let result = async {
            if let Some(entry) = server.http.history(prompt_id).await? {
                return Ok(Some(entry));
            }
            let queue = server.http.queue().await?;
            if queue.is_running(prompt_id) || queue.is_pending(prompt_id) {
                return Ok(None);
            }
            match server.http.history(prompt_id).await? {
                Some(entry) => Ok(Some(entry)),
                None => Err(Lookup::Gone),
            }
        }
        .await;
        match result {
            Ok(Some(entry)) => {
                tracked.outputs = JobOutputs::from_history(&entry.outputs);
                let status =
                    entry
                        .status
                        .unwrap_or_else(|| crate::comfy::protocol::HistoryStatus {
                            status_str: String::new(),
                            completed: false,
                            messages: Vec::new(),
                        });
                tracked.end = Some(if status.status_str == "success" {
                    End::Success
                } else {
                    history_failure(&status.messages)
                });
                return Reconciled::Finished;
            }
            Ok(None) => return Reconciled::StillThere,
            Err(Lookup::Gone) => return Reconciled::Missing,
            Err(Lookup::Failed(e)) if e.is_transient() => {
                match backoff.next().filter(|_| !server.is_lost()) {
                    Some(d) => tokio::time::sleep(d).await,
                    None => return Reconciled::Unknown(e),
                }
            }
            Err(Lookup::Failed(e)) => return Reconciled::Unknown(e),
        }
    }
}

/// Why a reconciling pass did not find the prompt.
enum Lookup {
    /// In neither history nor queue.
    Gone,
    /// A request failed.
    Failed(ClientError),
}

impl From<ClientError> for Lookup {
    fn from(e: ClientError) -> Self {
        Lookup::Failed(e)
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
    /// Anything else: the job fails with this line.
    Failed(String),
}

/// Downloads every file the nodes reported (previews too if asked), writes
/// their texts and the websocket images; returns their paths relative to the
/// output folder and the job's single text, if it made exactly one.
async fn save_images(
    job: &Job,
    server: &Server,
    ctx: &AttemptContext,
    tracked: Tracked,
) -> Result<(Vec<String>, Option<String>), SaveError> {
    // A malformed report may hide files: the job is not `ok` without them.
    if let Some(e) = tracked.outputs.error() {
        return Err(SaveError::Failed(e.to_string()));
    }
    let mut saved = Vec::new();
    let mut per_node: std::collections::HashMap<String, usize> = Default::default();
    let mut next_n = |node: &str| {
        let n = per_node.entry(node.to_string()).or_insert(0);
        *n += 1;
        *n - 1
    };
    for (node, output) in tracked.outputs.items() {
        let file = match output {
            Output::Text(text) => {
                let n = next_n(node);
                let rel = ctx
                    .output
                    .save_text(&job.id, node, n, text)
                    .map_err(|e| SaveError::Failed(e.to_string()))?;
                saved.push(rel);
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
        let mut backoff = Backoff::default();
        let bytes = loop {
            match server.http.view(file).await {
                Ok(b) => break b,
                Err(e) if e.is_transient() => match backoff.next().filter(|_| !server.is_lost()) {
                    Some(d) => tokio::time::sleep(d).await,
                    None => {
                        return Err(SaveError::Unreachable(format!(
                            "download node {node} file {}: {e}",
                            file.filename
                        )));
                    }
                },
                Err(e) => {
                    return Err(SaveError::Failed(format!(
                        "download node {node} file {}: {e}",
                        file.filename
                    )));
                }
            }
        };
        let n = next_n(node);
        let rel = ctx
            .output
            .save_file(&job.id, node, n, &file.filename, &bytes)
            .map_err(|e| SaveError::Failed(e.to_string()))?;
        saved.push(rel);
    }
    let text = tracked.outputs.single_text().map(str::to_string);
    for (node, ext, bytes) in &tracked.ws_images {
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
        let rel = ctx
            .output
            .save_image(&job.id, node, n, ext, bytes)
            .map_err(|e| SaveError::Failed(e.to_string()))?;
        saved.push(rel);
    }
    Ok((saved, text))
}
