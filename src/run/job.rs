//! One attempt of one job on one server: upload its images, write its
//! prompt, submit it, follow its messages to the end, free the server slot,
//! then download its images while the server works on the next prompts.

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
use crate::comfy::protocol::{ImageRef, WsMessage, images_of, node_errors_line};
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
    images: Vec<(String, ImageRef)>,
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
    }
    let mut rejected = None;
    if matches!(already, Reconciled::Missing | Reconciled::Unknown(_)) {
        if ctx.cancel.borrow().is_some() {
            // Cancelled while uploading: never queue anything new.
            return fail(&attempt, Status::Interrupted, "not run: cancelled".into());
        }
        let mut backoff = Backoff::default();
        let accepted = loop {
            match server
                .http
                .submit(&prompt, &server.client_id, pid.as_str())
                .await
            {
                Ok(Submission::Accepted(a)) => break a,
                Ok(Submission::Rejected(r)) => {
                    return fail(&attempt, Status::Rejected, r.one_line());
                }
                Err(e) if e.is_transient() => match backoff.next() {
                    Some(delay) => tokio::time::sleep(delay).await,
                    None => return AttemptEnd::Requeue(format!("submit: {e}")),
                },
                Err(e) => return fail(&attempt, Status::Failed, format!("submit: {e}")),
            }
        };
        rejected = (!accepted.node_errors.is_empty()).then(|| {
            format!(
                "prompt_outputs_failed_validation: {}",
                node_errors_line(&accepted.node_errors)
            )
        });
    }
    attempt.queued_at = Some(SystemTime::now());
    let _ = ctx.events.send(Msg::Event(EventKind::JobSubmitted {
        job: job.id.clone(),
        label: job.label.clone(),
        server: server.id,
        prompt: pid.clone(),
    }));
    if matches!(already, Reconciled::Finished) {
        tracing::info!("{}: collecting {pid}, finished by an earlier run", job.id);
    }

    let deadline = ctx.timeout.map(|t| Instant::now() + t);
    let mut timed_out = false;
    let mut cancel_handled: Option<CancelReason> = None;
    let finished_before = matches!(already, Reconciled::Finished);
    if !finished_before {
        loop {
            let cancel_now = *ctx.cancel.borrow();
            if cancel_now > cancel_handled {
                cancel_handled = cancel_now;
                match cancel_now {
                    Some(CancelReason::SecondInterrupt) => {
                        if tracked.started {
                            let _ = server.http.interrupt(pid.as_str()).await;
                        } else if remove_if_queued(&server, pid.as_str()).await {
                            return fail(
                                &attempt,
                                Status::Interrupted,
                                "not run: interrupted".into(),
                            );
                        }
                    }
                    Some(reason)
                        if !tracked.started && remove_if_queued(&server, pid.as_str()).await =>
                    {
                        let why = match reason {
                            CancelReason::MaxFailures => {
                                "not run: too many failures (--max-failures)"
                            }
                            CancelReason::NoServers => "not run: no server left",
                            _ => "not run: interrupted",
                        };
                        return fail(&attempt, Status::Interrupted, why.into());
                    }
                    _ => {}
                }
            }
            let event = tokio::select! {
                event = rx.recv() => event,
                _ = sleep_until(deadline), if !timed_out => {
                    timed_out = true;
                    let queue = server.http.queue().await.unwrap_or_default();
                    if queue.is_running(pid.as_str()) {
                        let _ = server.http.interrupt(pid.as_str()).await;
                        continue;
                    }
                    if remove_if_queued(&server, pid.as_str()).await {
                        return fail(&attempt, Status::Timeout, timeout_text(ctx.timeout));
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
                    }
                    WsMessage::Executing { node: Some(_), .. } => {
                        if !tracked.started {
                            // Reconnect replay: it runs, though we missed the start.
                            tracked.started = true;
                            attempt.started_at.get_or_insert_with(SystemTime::now);
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
                            for image in images_of(&output) {
                                tracked.images.push((node.clone(), image));
                            }
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
                ServerEvent::Disconnected => {}
                ServerEvent::Reconnected => {
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

    if timed_out {
        return fail(&attempt, Status::Timeout, timeout_text(ctx.timeout));
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
    if status != Status::Ok {
        return AttemptEnd::Done(Outcome {
            status,
            images: Vec::new(),
            error,
            attempt,
        });
    }
    match save_images(&job, &server, &ctx, tracked).await {
        Ok(images) => AttemptEnd::Done(Outcome {
            status: Status::Ok,
            images,
            error: None,
            attempt,
        }),
        Err(e) => AttemptEnd::Done(Outcome {
            status: Status::Failed,
            images: Vec::new(),
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

/// Deletes the prompt if it is still pending; false when it already runs
/// (or the queue cannot be read), in which case the caller keeps waiting.
async fn remove_if_queued(server: &Server, prompt_id: &str) -> bool {
    let ids = [prompt_id.to_string()];
    if server.http.delete_queued(&ids).await.is_err() {
        return false;
    }
    match server.http.queue().await {
        Ok(q) => !q.is_running(prompt_id) && !q.is_pending(prompt_id),
        Err(_) => false,
    }
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
        let result = async {
            if let Some(entry) = server.http.history(prompt_id).await? {
                return Ok(Some(entry));
            }
            let queue = server.http.queue().await?;
            if queue.is_running(prompt_id) || queue.is_pending(prompt_id) {
                return Ok(None);
            }
            // It may have finished between the two reads.
            server.http.history(prompt_id).await.map(|e| e.or(None))
        }
        .await;
        match result {
            Ok(Some(entry)) => {
                tracked.images = entry
                    .outputs
                    .iter()
                    .flat_map(|(node, out)| {
                        images_of(out).into_iter().map(move |i| (node.clone(), i))
                    })
                    .collect();
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
            Ok(None) => {
                let queue = server.http.queue().await;
                return match queue {
                    Ok(q) if q.is_running(prompt_id) || q.is_pending(prompt_id) => {
                        Reconciled::StillThere
                    }
                    Ok(_) => Reconciled::Missing,
                    Err(e) => Reconciled::Unknown(e),
                };
            }
            Err(e) if e.is_transient() => match backoff.next() {
                Some(d) => tokio::time::sleep(d).await,
                None => return Reconciled::Unknown(e),
            },
            Err(e) => return Reconciled::Unknown(e),
        }
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

/// Downloads the output images (and previews if asked) and writes them with
/// the websocket images; returns their paths relative to the output folder.
async fn save_images(
    job: &Job,
    server: &Server,
    ctx: &AttemptContext,
    tracked: Tracked,
) -> Result<Vec<String>, String> {
    let mut saved = Vec::new();
    let mut per_node: std::collections::HashMap<String, usize> = Default::default();
    let mut next_n = |node: &str| {
        let n = per_node.entry(node.to_string()).or_insert(0);
        *n += 1;
        *n - 1
    };
    for (node, image) in &tracked.images {
        let wanted = image.kind == "output" || (ctx.previews && image.kind == "temp");
        if !wanted {
            continue;
        }
        let mut backoff = Backoff::default();
        let bytes = loop {
            match server.http.view(image).await {
                Ok(b) => break b,
                Err(e) if e.is_transient() => match backoff.next() {
                    Some(d) => tokio::time::sleep(d).await,
                    None => return Err(format!("download node {node} image: {e}")),
                },
                Err(e) => return Err(format!("download node {node} image: {e}")),
            }
        };
        let ext = std::path::Path::new(&image.filename)
            .extension()
            .map(|e| e.to_string_lossy().into_owned())
            .unwrap_or_default();
        let n = next_n(node);
        let rel = ctx
            .output
            .save_image(&job.id, node, n, &ext, &bytes)
            .map_err(|e| e.to_string())?;
        saved.push(rel);
    }
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
            .map_err(|e| e.to_string())?;
        saved.push(rel);
    }
    Ok(saved)
}
