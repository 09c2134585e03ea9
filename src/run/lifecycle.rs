//! The life of one attempt once its prompt is on a server, as a pure state
//! machine: [`Lifecycle::step`] takes what happened ([`Event`]: a message,
//! a timer, the answer to a lookup) and says what to do ([`Action`]). It
//! owns every rule about when a prompt is over and how it ended (lost
//! messages, timeouts, cancels, lost servers, websocket images); it performs
//! no I/O and reads no clock, so the rules are tested over recorded message
//! sequences without a network. The async shell in `job` performs the
//! actions and feeds back the events. It knows nothing of files or HTTP.
//!
//! It also decides which limit runs when: `--queue-timeout` from the
//! prompt's submission until it starts, `--timeout` from the moment the
//! runner learns it started (its `execution_start`, or a lookup that finds
//! it running), so time spent queued behind other prompts never counts
//! against a job's run. The shell keeps one timer, set by [`Action::LimitIn`].

use std::time::Duration;

use crate::comfy::protocol::{HistoryEntry, WsMessage};
use crate::comfy::ws::ServerEvent;
use crate::outcome::Status;

use super::CancelReason;

/// How often an attempt checks its prompt over HTTP although messages
/// come: a safety net for lost messages, deletions by others, lost servers.
pub(crate) const WATCHDOG_POLL: Duration = Duration::from_secs(2);
/// How often a prompt queued by an earlier run (no messages reach us) is
/// looked up.
pub(crate) const ADOPTED_POLL: Duration = Duration::from_millis(250);
/// How long the final message may lag behind the history.
pub(crate) const ENDED_GRACE: Duration = Duration::from_secs(1);

/// How the server said a prompt ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum End {
    /// `execution_success`.
    Success,
    /// `execution_error`, as one line.
    Error(String),
    /// `execution_interrupted`, as one line.
    Interrupted(String),
}

pub(crate) use crate::comfy::outputs::JobOutputs;

/// An image sent over the websocket: (node id, extension, bytes).
pub(crate) type Frame = (String, &'static str, bytes::Bytes);

/// What a lookup of the prompt (history, then queue) found.
#[derive(Debug, Clone)]
pub(crate) enum Lookup {
    /// In the history: how it ended and every output it lists.
    Finished {
        /// How it ended.
        end: End,
        /// Its outputs.
        outputs: JobOutputs,
    },
    /// Running (`running`) or pending.
    StillThere {
        /// It runs now.
        running: bool,
    },
    /// In neither: the server forgot it.
    Missing,
    /// The lookup failed (a request error, retries used up).
    Unknown,
}

/// What asking the server to drop (and maybe stop) the prompt achieved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Acted {
    /// It was pending and is gone: it never ran.
    Removed,
    /// Ask again after this long (a request failed, or an interrupt sent
    /// just as the prompt started may be lost: protocol.md §4).
    Again(Duration),
    /// Nothing to do: it runs and may finish, or it has ended already.
    Nothing,
}

/// What happened.
#[derive(Debug, Clone)]
pub(crate) enum Event {
    /// `execution_start`.
    Started,
    /// `executing` a node: it runs (a reconnect may have hidden the start).
    Running,
    /// `executed`: the outputs one node announced.
    Executed(JobOutputs),
    /// An image frame on the socket.
    Frame(Frame),
    /// `execution_success`, `execution_error` or `execution_interrupted`.
    Ended(End),
    /// `executing {node: null}`: the server is done with the prompt.
    Idle,
    /// The socket dropped: messages may be missed until it is back.
    Disconnected,
    /// The socket is back.
    Reconnected,
    /// The server is counted lost (also seen by a poll).
    Lost,
    /// The message router closed, or the scheduler went away.
    Gone(&'static str),
    /// The limit of [`Action::LimitIn`] elapsed.
    Deadline,
    /// The run is cancelled (the most severe reason so far).
    Cancel(CancelReason),
    /// The timer of [`Action::ActIn`] fired.
    ActDue,
    /// The timer of [`Action::PollIn`] fired.
    PollDue,
    /// The answer to [`Action::Lookup`].
    Looked(Lookup),
    /// The answer to [`Action::Act`].
    Acted(Acted),
}

/// What to do.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    /// Look the prompt up; answer with [`Event::Looked`].
    Lookup,
    /// Drop the prompt if pending, and interrupt it if running and
    /// `stop_running`; answer with [`Event::Acted`].
    Act {
        /// Interrupt it when it runs.
        stop_running: bool,
    },
    /// Send [`Event::PollDue`] after this long (replacing an earlier timer).
    PollIn(Duration),
    /// Send [`Event::ActDue`] after this long (replacing an earlier timer).
    ActIn(Duration),
    /// Send [`Event::Deadline`] after this long, replacing an earlier
    /// limit; `None`: no limit from now on.
    LimitIn(Option<Duration>),
    /// Report that the server started it.
    ReportStarted,
    /// Note that it runs (its start message was missed).
    NoteRunning,
    /// The server is done with the prompt: free its slot.
    Release,
    /// Final: save these outputs and frames; the job is `ok`.
    Save(JobOutputs, Vec<Frame>),
    /// Final: the attempt ended so.
    Fail(Status, String),
    /// Final: run the job elsewhere (or again), for this reason.
    Requeue(String),
}

/// Why a lookup was asked for, so its answer is read accordingly.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Why {
    /// The watchdog.
    Poll,
    /// `executing {node: null}` came without an outcome message.
    Idle,
    /// The socket came back.
    Reconnect,
    /// Success after missed messages: the history lists every output.
    Outputs,
}

/// How the prompt came to be tracked.
#[derive(Debug, Clone)]
pub(crate) struct Setup {
    /// Its outputs come only over the websocket (`SaveImageWebsocket`).
    pub over_socket: bool,
    /// Queued by an earlier run: its messages go to a dead client.
    pub adopted: bool,
    /// Already finished (found in the history before anything was sent).
    pub finished: Option<Lookup>,
    /// The server accepted it with errors in some outputs (this line).
    pub rejected: Option<String>,
    /// The `--timeout`: how long it may run, counted from its start.
    pub timeout: Option<Duration>,
    /// The `--queue-timeout`: how long it may wait to start.
    pub queue_timeout: Option<Duration>,
}

/// Which of the job's limits elapsed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Limit {
    /// `--queue-timeout`: it never started.
    Queue,
    /// `--timeout`: it ran too long.
    Run,
}

/// What a `timeout` overran: the cause its row's error names.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Overrun<'a> {
    /// It ran longer than `--timeout`.
    Running,
    /// It waited to start longer than `--queue-timeout` (and was removed).
    Queued,
    /// Downloading this output (`node N file NAME`) outlasted `--timeout`.
    Download(&'a str),
}

/// The state of one attempt's prompt on its server.
#[derive(Debug)]
pub(crate) struct Lifecycle {
    setup: Setup,
    started: bool,
    timed_out: Option<Limit>,
    /// Messages may have been missed (a dropped socket, or an adopted
    /// prompt): the history is the authority on outputs, and websocket
    /// images cannot be recovered.
    missed: bool,
    cancel: Option<CancelReason>,
    /// The history says it ended; its final message gets [`ENDED_GRACE`].
    ended_in_history: bool,
    end: Option<End>,
    outputs: JobOutputs,
    frames: Vec<Frame>,
    asked: Option<Why>,
    /// Past tracking: deciding the outcome.
    finishing: bool,
    outputs_checked: bool,
    released: bool,
    done: bool,
}

impl Lifecycle {
    /// A prompt just accepted (or found queued or finished) and the first
    /// actions.
    pub fn new(setup: Setup) -> (Lifecycle, Vec<Action>) {
        let mut machine = Lifecycle {
            missed: setup.adopted,
            setup,
            started: false,
            timed_out: None,
            cancel: None,
            ended_in_history: false,
            end: None,
            outputs: JobOutputs::default(),
            frames: Vec::new(),
            asked: None,
            finishing: false,
            outputs_checked: false,
            released: false,
            done: false,
        };
        let actions = match machine.setup.finished.take() {
            Some(Lookup::Finished { end, outputs }) => {
                machine.end = Some(end);
                machine.outputs = outputs;
                machine.finish()
            }
            _ => {
                let mut actions = vec![Action::PollIn(machine.poll_every())];
                if let Some(limit) = machine.setup.queue_timeout {
                    actions.push(Action::LimitIn(Some(limit)));
                }
                actions
            }
        };
        (machine, actions)
    }

    /// Whether a final action was given: nothing more is to be fed.
    pub fn is_done(&self) -> bool {
        self.done
    }

    fn stop_running(&self) -> bool {
        self.timed_out == Some(Limit::Run) || self.cancel >= Some(CancelReason::SecondInterrupt)
    }

    /// It runs (`note` says how the shell learnt it): the queue's limit is
    /// moot, the run's starts now.
    fn started(&mut self, note: Action) -> Vec<Action> {
        self.started = true;
        if self.timed_out == Some(Limit::Queue) {
            // It started before the queue's limit could remove it.
            self.timed_out = None;
        }
        let mut actions = vec![note, Action::LimitIn(self.setup.timeout)];
        if self.stop_running() {
            // It started after we asked: stop it now.
            actions.push(Action::ActIn(Duration::ZERO));
        }
        actions
    }

    fn timeout_line(&self, limit: Limit) -> String {
        match limit {
            Limit::Queue => timed_out(self.setup.queue_timeout, Overrun::Queued),
            Limit::Run => timed_out(self.setup.timeout, Overrun::Running),
        }
    }

    fn poll_every(&self) -> Duration {
        if self.setup.adopted {
            ADOPTED_POLL
        } else {
            WATCHDOG_POLL
        }
    }

    fn ask(&mut self, why: Why) -> Vec<Action> {
        self.asked = Some(why);
        vec![Action::Lookup]
    }

    fn last(&mut self, action: Action) -> Vec<Action> {
        self.done = true;
        vec![action]
    }

    fn requeue(&mut self, why: &str) -> Vec<Action> {
        self.last(Action::Requeue(why.to_string()))
    }

    fn take_finished(&mut self, found: Lookup) {
        if let Lookup::Finished { end, outputs } = found {
            self.end = Some(end);
            self.outputs = outputs;
        }
    }

    /// The transition function.
    pub fn step(&mut self, event: Event) -> Vec<Action> {
        if self.done {
            return Vec::new();
        }
        if self.finishing {
            // Only the answer to the last lookup matters now.
            return match event {
                Event::Looked(found) if self.asked.take() == Some(Why::Outputs) => {
                    if !matches!(found, Lookup::Finished { .. }) {
                        return self.requeue("outputs unknown after a disconnect");
                    }
                    self.take_finished(found);
                    self.outputs_checked = true;
                    self.finish()
                }
                _ => Vec::new(),
            };
        }
        match event {
            // Reported as before, but the run's clock is not set back.
            Event::Started if self.started => vec![Action::ReportStarted],
            Event::Started => self.started(Action::ReportStarted),
            // Reconnect replay: it runs, though we missed the start.
            Event::Running if !self.started => self.started(Action::NoteRunning),
            Event::Running => Vec::new(),
            Event::Executed(outputs) => {
                // The history may have listed the node already: its
                // report replaces the earlier one.
                self.outputs.merge(outputs);
                Vec::new()
            }
            Event::Frame(frame) => {
                self.frames.push(frame);
                Vec::new()
            }
            Event::Ended(end) => {
                self.end = Some(end);
                Vec::new()
            }
            Event::Idle if self.end.is_none() => self.ask(Why::Idle),
            Event::Idle => self.finish(),
            Event::Disconnected => {
                self.missed = true;
                Vec::new()
            }
            // Only the final `executing` was missed: the outcome and the
            // images came before it.
            Event::Reconnected if self.end.is_some() => self.finish(),
            Event::Reconnected => self.ask(Why::Reconnect),
            Event::Lost => self.requeue("server lost"),
            Event::Gone(why) => self.requeue(why),
            Event::Deadline => {
                self.timed_out = Some(if self.started {
                    Limit::Run
                } else {
                    Limit::Queue
                });
                vec![Action::ActIn(Duration::ZERO)]
            }
            Event::Cancel(reason) if Some(reason) > self.cancel => {
                self.cancel = Some(reason);
                vec![Action::ActIn(Duration::ZERO)]
            }
            Event::Cancel(_) => Vec::new(),
            Event::ActDue if self.timed_out.is_some() || self.cancel.is_some() => {
                vec![Action::Act {
                    stop_running: self.stop_running(),
                }]
            }
            Event::ActDue => Vec::new(),
            Event::Acted(Acted::Removed) => {
                let failed = match self.timed_out {
                    Some(limit) => Action::Fail(Status::Timeout, self.timeout_line(limit)),
                    None => Action::Fail(Status::Interrupted, not_run(self.cancel)),
                };
                self.last(failed)
            }
            Event::Acted(Acted::Again(after)) => vec![Action::ActIn(after)],
            Event::Acted(Acted::Nothing) => Vec::new(),
            Event::PollDue if self.ended_in_history => self.finish(),
            Event::PollDue => {
                let mut actions = vec![Action::PollIn(self.poll_every())];
                actions.extend(self.ask(Why::Poll));
                actions
            }
            Event::Looked(found) => match (self.asked.take(), found) {
                (Some(Why::Idle), found @ Lookup::Finished { .. }) => {
                    self.take_finished(found);
                    self.finish()
                }
                (Some(Why::Idle), _) => {
                    self.end = Some(End::Error("finished without a result".into()));
                    self.finish()
                }
                (_, Lookup::Missing) => self.requeue("the server forgot the prompt (restarted?)"),
                // Its start message was missed (or went to an earlier
                // run's client): the run's clock starts now.
                (_, Lookup::StillThere { running: true }) if !self.started => {
                    self.started(Action::NoteRunning)
                }
                (_, Lookup::StillThere { .. } | Lookup::Unknown) => Vec::new(),
                (Some(Why::Poll), found) => {
                    if self.setup.adopted {
                        self.take_finished(found);
                        return self.finish();
                    }
                    if self.setup.over_socket {
                        // Its frames follow the socket, however far behind
                        // HTTP that runs: only `executing {node: null}` on
                        // the socket (or its loss) ends it.
                        return Vec::new();
                    }
                    self.take_finished(found);
                    self.ended_in_history = true;
                    vec![Action::PollIn(ENDED_GRACE)]
                }
                (Some(Why::Reconnect | Why::Outputs) | None, found) => {
                    self.take_finished(found);
                    self.finish()
                }
            },
        }
    }

    /// Tracking is over: decide the outcome (maybe after one more lookup).
    fn finish(&mut self) -> Vec<Action> {
        self.finishing = true;
        let mut actions = Vec::new();
        if !std::mem::replace(&mut self.released, true) {
            actions.push(Action::Release);
        }
        let success = matches!(self.end, Some(End::Success));
        // A success that landed before the interrupt took effect is kept.
        if self.timed_out == Some(Limit::Run) && !success {
            self.done = true;
            actions.push(Action::Fail(Status::Timeout, self.timeout_line(Limit::Run)));
            return actions;
        }
        if self.missed && success && !self.outputs_checked {
            // `executed` messages sent while we were away are gone; the
            // history lists every output.
            self.asked = Some(Why::Outputs);
            actions.push(Action::Lookup);
            return actions;
        }
        self.done = true;
        let (status, line) = match self.end.take() {
            Some(End::Success) => match self.setup.rejected.take() {
                Some(line) => (Status::Rejected, line),
                None => (Status::Ok, String::new()),
            },
            Some(End::Error(line)) => (Status::Failed, line),
            Some(End::Interrupted(line)) => (Status::Interrupted, line),
            None => (Status::Failed, "no result from the server".into()),
        };
        let action = match status {
            Status::Ok if self.setup.over_socket && (self.missed || self.frames.is_empty()) => {
                // Frames sent while we were away are lost for good; an `ok`
                // row never goes without its images.
                Action::Fail(
                    Status::Failed,
                    "websocket images were lost with the connection; run again".into(),
                )
            }
            Status::Ok => {
                if !self.started {
                    // It ended unseen: it started as far as we know now, and
                    // collecting its outputs is the run's to bound.
                    actions.push(Action::LimitIn(self.setup.timeout));
                }
                Action::Save(
                    std::mem::take(&mut self.outputs),
                    std::mem::take(&mut self.frames),
                )
            }
            status => Action::Fail(status, line),
        };
        actions.push(action);
        actions
    }
}

impl Event {
    /// A message for the prompt as an event; `None` for those that change
    /// nothing (progress is reported by the shell as it comes).
    pub fn from_server(event: ServerEvent) -> Option<Event> {
        Some(match event {
            ServerEvent::Message(message) => match message {
                WsMessage::ExecutionStart { .. } => Event::Started,
                WsMessage::Executing { node: Some(_), .. } => Event::Running,
                WsMessage::Executing { node: None, .. } => Event::Idle,
                WsMessage::Executed { node, output, .. } => Event::Executed(
                    output
                        .map(|o| JobOutputs::of_node(&node, &o))
                        .unwrap_or_default(),
                ),
                WsMessage::ExecutionSuccess { .. } => Event::Ended(End::Success),
                WsMessage::ExecutionError(e) => Event::Ended(End::Error(e.one_line())),
                WsMessage::ExecutionInterrupted {
                    node_id, node_type, ..
                } => Event::Ended(End::Interrupted(format!(
                    "interrupted at node {} ({})",
                    node_id.unwrap_or_default(),
                    node_type.unwrap_or_default()
                ))),
                WsMessage::Progress { .. }
                | WsMessage::Status { .. }
                | WsMessage::ExecutionCached { .. }
                | WsMessage::Other => return None,
            },
            ServerEvent::Image { node, ext, bytes } => {
                Event::Frame((node.unwrap_or_else(|| "ws".into()), ext, bytes))
            }
            ServerEvent::Disconnected => Event::Disconnected,
            ServerEvent::Reconnected => Event::Reconnected,
            ServerEvent::Lost => Event::Lost,
        })
    }
}

/// The outputs a history entry lists, every node's.
pub(crate) fn outputs_of_history(entry: &HistoryEntry) -> JobOutputs {
    JobOutputs::from_history(&entry.outputs)
}

/// The error of a job whose prompt was dropped (or never posted) because
/// the run was cancelled.
pub(crate) fn not_run(reason: Option<CancelReason>) -> String {
    reason
        .unwrap_or(CancelReason::Interrupt)
        .not_run_line()
        .into()
}

/// The error of a `timeout` row: the limit and what overran it.
pub(crate) fn timed_out(limit: Option<Duration>, overrun: Overrun) -> String {
    let t = humantime::format_duration(limit.unwrap_or_default());
    match overrun {
        Overrun::Running => format!("timed out after {t} running (--timeout)"),
        Overrun::Queued => {
            format!("timed out after {t} queued (--queue-timeout); removed from the queue")
        }
        Overrun::Download(what) => {
            format!("timed out after {t}: download of {what} stalled (--timeout)")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::comfy::outputs::Output;
    use crate::comfy::protocol::{BinaryFrame, ImageRef};
    use crate::comfy::ws::Router;
    use serde_json::Value;

    /// The events the first accepted prompt of a recorded transcript got on
    /// its client's socket, routed as the runner routes them.
    fn recorded(name: &str) -> Vec<Event> {
        let path = format!(
            "{}/tests/fixtures/transcripts/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let lines: Vec<Value> = std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let is_post = |l: &Value| l["method"] == "POST" && l["path"] == "/prompt";
        let client = lines
            .iter()
            .find(|l| is_post(l) && l["body"]["client_id"].is_string())
            .and_then(|l| l["body"]["client_id"].as_str())
            .unwrap()[..8]
            .to_string();
        let prompt_id = lines
            .iter()
            .find(|l| is_post(l) && l["status"] == 200)
            .and_then(|l| l["body"]["prompt_id"].as_str())
            .unwrap()
            .to_string();
        let router = Router::default();
        let mut rx = router.register(&prompt_id);
        for line in lines
            .iter()
            .filter(|l| l["dir"] == "ws<" && l["client"] == client.as_str())
        {
            let msg = &line["msg"];
            if msg["binary"] == true {
                let event = msg["event"].as_u64().unwrap() as u8;
                let format = msg["format"].as_u64().unwrap() as u8;
                let mut bytes = vec![0, 0, 0, event, 0, 0, 0, format];
                bytes.extend_from_slice(b"image bytes");
                router.deliver_frame(BinaryFrame::parse(bytes.into()));
            } else {
                router.deliver(WsMessage::parse(&msg.to_string()).unwrap());
            }
        }
        let mut events = Vec::new();
        while let Ok(event) = rx.try_recv() {
            events.extend(Event::from_server(event));
        }
        assert!(!events.is_empty(), "{name}: no events for {prompt_id}");
        events
    }

    fn setup() -> Setup {
        Setup {
            over_socket: false,
            adopted: false,
            finished: None,
            rejected: None,
            timeout: None,
            queue_timeout: None,
        }
    }

    /// Feeds `events` in order, answering each lookup with `answer` (in
    /// turn; the last one repeats) and each act with `acted`. Returns the
    /// final action, if one was given.
    fn run(
        setup: Setup,
        events: impl IntoIterator<Item = Event>,
        answers: &[Lookup],
        acted: Acted,
    ) -> Option<Action> {
        let (mut machine, first) = Lifecycle::new(setup);
        let mut actions: VecDeque<Action> = first.into();
        let mut events: VecDeque<Event> = events.into_iter().collect();
        let mut answers: VecDeque<Lookup> = answers.iter().cloned().collect();
        loop {
            while let Some(action) = actions.pop_front() {
                let answer = match action {
                    Action::Save(..) | Action::Fail(..) | Action::Requeue(_) => {
                        assert!(machine.is_done());
                        return Some(action);
                    }
                    Action::Lookup => {
                        let next = if answers.len() > 1 {
                            answers.pop_front()
                        } else {
                            answers.front().cloned()
                        };
                        Event::Looked(next.unwrap_or(Lookup::StillThere { running: false }))
                    }
                    Action::Act { .. } => Event::Acted(acted),
                    _ => continue,
                };
                actions.extend(machine.step(answer));
            }
            let event = events.pop_front()?;
            actions.extend(machine.step(event));
        }
    }

    fn output(node: &str, name: &str) -> JobOutputs {
        let mut one = JobOutputs::default();
        one.push(
            node,
            Output::File(ImageRef {
                filename: name.into(),
                subfolder: String::new(),
                kind: "output".into(),
            }),
        );
        one
    }

    fn finished(outputs: JobOutputs) -> Lookup {
        Lookup::Finished {
            end: End::Success,
            outputs,
        }
    }

    #[test]
    fn a_recorded_run_saves_what_executed_announced() {
        match run(setup(), recorded("01_basic_run.jsonl"), &[], Acted::Nothing) {
            Some(Action::Save(outputs, frames)) => {
                // The SaveImage's file and the PreviewImage's temp file.
                let kinds: Vec<&str> = (outputs.items().iter())
                    .map(|(_, o)| match o {
                        Output::File(f) => f.kind.as_str(),
                        Output::Text(_) => "text",
                    })
                    .collect();
                assert_eq!(kinds, ["temp", "output"], "{outputs:?}");
                assert!(frames.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_recorded_runtime_error_fails_with_its_line() {
        match run(
            setup(),
            recorded("05_runtime_error.jsonl"),
            &[],
            Acted::Nothing,
        ) {
            Some(Action::Fail(Status::Failed, line)) => assert!(!line.is_empty()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_recorded_interrupt_is_interrupted() {
        let end = run(setup(), recorded("06_interrupt.jsonl"), &[], Acted::Nothing);
        assert!(
            matches!(end, Some(Action::Fail(Status::Interrupted, _))),
            "{end:?}"
        );
    }

    #[test]
    fn recorded_websocket_frames_are_saved() {
        let socket = Setup {
            over_socket: true,
            ..setup()
        };
        match run(
            socket,
            recorded("10_websocket_image_output.jsonl"),
            &[],
            Acted::Nothing,
        ) {
            Some(Action::Save(outputs, frames)) => {
                assert!(outputs.is_empty());
                assert_eq!(frames.len(), 2);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn recorded_previews_come_as_frames_beside_the_saved_image() {
        match run(
            setup(),
            recorded("14_ksampler_t2i_with_previews.jsonl"),
            &[],
            Acted::Nothing,
        ) {
            Some(Action::Save(outputs, frames)) => {
                assert_eq!(outputs.items().len(), 1);
                assert!(!frames.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }

    /// Issue #8 item 2: the history says "done" before the socket delivered
    /// the frames; a websocket-image job waits for the socket.
    #[test]
    fn a_websocket_job_never_ends_on_the_history_alone() {
        let socket = Setup {
            over_socket: true,
            ..setup()
        };
        let early = [Event::PollDue, Event::PollDue, Event::PollDue];
        assert_eq!(
            run(
                socket.clone(),
                early.clone(),
                &[finished(JobOutputs::default())],
                Acted::Nothing
            ),
            None,
            "still waiting for the socket"
        );
        let mut events = early.to_vec();
        events.extend(recorded("10_websocket_image_output.jsonl"));
        match run(
            socket,
            events,
            &[finished(JobOutputs::default())],
            Acted::Nothing,
        ) {
            Some(Action::Save(_, frames)) => assert_eq!(frames.len(), 2),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn other_jobs_end_on_the_history_after_a_grace() {
        let events = [Event::Started, Event::PollDue, Event::PollDue];
        let history = [finished(output("9", "a.png"))];
        match run(setup(), events, &history, Acted::Nothing) {
            Some(Action::Save(outputs, _)) => assert_eq!(outputs, output("9", "a.png")),
            other => panic!("{other:?}"),
        }
        // Within the grace the final message still counts.
        assert_eq!(
            run(
                setup(),
                [Event::Started, Event::PollDue],
                &history,
                Acted::Nothing
            ),
            None
        );
    }

    /// Issue #8 item 10: a success that lands before the timeout's
    /// interrupt takes effect is kept; otherwise the job is `timeout`.
    #[test]
    fn timeout_keeps_a_success_that_landed_first() {
        let limited = Setup {
            timeout: Some(Duration::from_secs(5)),
            ..setup()
        };
        let mut events = vec![Event::Started, Event::Deadline, Event::ActDue];
        events.extend(recorded("01_basic_run.jsonl"));
        assert!(matches!(
            run(limited.clone(), events, &[], Acted::Nothing),
            Some(Action::Save(..))
        ));
        let mut events = vec![Event::Started, Event::Deadline, Event::ActDue];
        events.extend(recorded("06_interrupt.jsonl"));
        assert_eq!(
            run(limited, events, &[], Acted::Nothing),
            Some(Action::Fail(
                Status::Timeout,
                "timed out after 5s running (--timeout)".into()
            ))
        );
    }

    /// Issue #23 item 1: `--timeout` runs from the start the runner learns
    /// of (its message, or a lookup that finds it running), never from the
    /// submission; `--queue-timeout` runs until then.
    #[test]
    fn the_run_limit_starts_with_the_prompt_not_its_submission() {
        let limited = Setup {
            timeout: Some(Duration::from_secs(5)),
            ..setup()
        };
        let (mut machine, first) = Lifecycle::new(limited.clone());
        assert_eq!(
            first,
            vec![Action::PollIn(WATCHDOG_POLL)],
            "no limit queued"
        );
        let started = machine.step(recorded("01_basic_run.jsonl").remove(0));
        assert_eq!(
            started,
            vec![
                Action::ReportStarted,
                Action::LimitIn(Some(Duration::from_secs(5)))
            ]
        );
        // A start replayed after a reconnect does not set the clock back.
        assert_eq!(machine.step(Event::Started), vec![Action::ReportStarted]);

        // Both limits: the queue's until the start, then the run's alone.
        let (mut machine, first) = Lifecycle::new(Setup {
            queue_timeout: Some(Duration::from_secs(60)),
            ..limited.clone()
        });
        assert_eq!(
            first,
            vec![
                Action::PollIn(WATCHDOG_POLL),
                Action::LimitIn(Some(Duration::from_secs(60)))
            ]
        );
        assert_eq!(
            machine.step(Event::Started),
            vec![
                Action::ReportStarted,
                Action::LimitIn(Some(Duration::from_secs(5)))
            ]
        );

        // Its start message missed: a lookup that finds it pending starts
        // nothing; one that finds it running starts the run's clock.
        let (mut machine, _) = Lifecycle::new(limited.clone());
        assert_eq!(machine.step(Event::PollDue).last(), Some(&Action::Lookup));
        assert_eq!(
            machine.step(Event::Looked(Lookup::StillThere { running: false })),
            vec![]
        );
        machine.step(Event::PollDue);
        assert_eq!(
            machine.step(Event::Looked(Lookup::StillThere { running: true })),
            vec![
                Action::NoteRunning,
                Action::LimitIn(Some(Duration::from_secs(5)))
            ]
        );

        // Found finished, never seen running: collecting it is bounded.
        let (_, actions) = Lifecycle::new(Setup {
            finished: Some(finished(output("9", "a.png"))),
            ..limited
        });
        assert_eq!(
            actions,
            vec![
                Action::Release,
                Action::LimitIn(Some(Duration::from_secs(5))),
                Action::Save(output("9", "a.png"), Vec::new())
            ]
        );
    }

    /// Issue #23 item 1: the queue's limit removes a prompt still pending
    /// (never interrupts one) and its row says it was the queue; a prompt
    /// that started meanwhile runs on under the run's limit.
    #[test]
    fn the_queue_limit_removes_a_pending_prompt_and_says_so() {
        let limited = Setup {
            queue_timeout: Some(Duration::from_millis(300)),
            ..setup()
        };
        let (mut machine, _) = Lifecycle::new(limited.clone());
        assert_eq!(
            machine.step(Event::Deadline),
            vec![Action::ActIn(Duration::ZERO)]
        );
        assert_eq!(
            machine.step(Event::ActDue),
            vec![Action::Act {
                stop_running: false
            }]
        );
        assert_eq!(
            machine.step(Event::Acted(Acted::Removed)),
            vec![Action::Fail(
                Status::Timeout,
                "timed out after 300ms queued (--queue-timeout); removed from the queue".into()
            )]
        );
        // It started before it could be removed: the recorded run ends ok.
        let mut events = vec![Event::Deadline, Event::ActDue];
        events.extend(recorded("01_basic_run.jsonl"));
        assert!(matches!(
            run(limited, events, &[], Acted::Nothing),
            Some(Action::Save(..))
        ));
    }

    #[test]
    fn a_cancel_drops_a_pending_prompt_and_interrupts_only_on_the_second() {
        let events = [Event::Cancel(CancelReason::Interrupt), Event::ActDue];
        assert_eq!(
            run(setup(), events, &[], Acted::Removed),
            Some(Action::Fail(
                Status::Interrupted,
                "not run: interrupted".into()
            ))
        );
        let (mut machine, _) = Lifecycle::new(setup());
        machine.step(Event::Started);
        machine.step(Event::Cancel(CancelReason::Interrupt));
        assert_eq!(
            machine.step(Event::ActDue),
            vec![Action::Act {
                stop_running: false
            }]
        );
        machine.step(Event::Cancel(CancelReason::SecondInterrupt));
        assert_eq!(
            machine.step(Event::ActDue),
            vec![Action::Act { stop_running: true }]
        );
    }

    #[test]
    fn after_a_disconnect_the_history_lists_the_outputs() {
        let mut events = vec![Event::Started, Event::Disconnected, Event::Reconnected];
        events.extend(recorded("01_basic_run.jsonl"));
        let history = [finished(output("3", "from-history.png"))];
        match run(setup(), events, &history, Acted::Nothing) {
            Some(Action::Save(outputs, _)) => {
                assert_eq!(outputs, output("3", "from-history.png"))
            }
            other => panic!("{other:?}"),
        }
        // Websocket images sent meanwhile are gone: never `ok` without them.
        let socket = Setup {
            over_socket: true,
            ..setup()
        };
        let events = [Event::Started, Event::Disconnected, Event::Reconnected];
        assert!(matches!(
            run(
                socket,
                events,
                &[finished(JobOutputs::default())],
                Acted::Nothing
            ),
            Some(Action::Fail(Status::Failed, _))
        ));
    }

    #[test]
    fn an_adopted_prompt_is_followed_by_polling_and_keeps_its_rejection() {
        let adopted = Setup {
            adopted: true,
            rejected: Some("prompt_outputs_failed_validation: node 3".into()),
            ..setup()
        };
        let history = [finished(output("2", "a.png"))];
        assert_eq!(
            run(adopted, [Event::PollDue], &history, Acted::Nothing),
            Some(Action::Fail(
                Status::Rejected,
                "prompt_outputs_failed_validation: node 3".into()
            ))
        );
    }

    #[test]
    fn a_finished_prompt_found_before_sending_is_collected_at_once() {
        let (machine, actions) = Lifecycle::new(Setup {
            finished: Some(finished(output("9", "a.png"))),
            ..setup()
        });
        assert!(machine.is_done());
        assert_eq!(
            actions,
            vec![
                Action::Release,
                Action::LimitIn(None),
                Action::Save(output("9", "a.png"), Vec::new())
            ]
        );
    }

    #[test]
    fn lost_servers_and_forgotten_prompts_move_the_job() {
        assert_eq!(
            run(setup(), [Event::Started, Event::Lost], &[], Acted::Nothing),
            Some(Action::Requeue("server lost".into()))
        );
        assert_eq!(
            run(
                setup(),
                [Event::PollDue],
                &[Lookup::Missing],
                Acted::Nothing
            ),
            Some(Action::Requeue(
                "the server forgot the prompt (restarted?)".into()
            ))
        );
        // A failed lookup decides nothing.
        assert_eq!(
            run(
                setup(),
                [Event::PollDue],
                &[Lookup::Unknown],
                Acted::Nothing
            ),
            None
        );
    }
}
