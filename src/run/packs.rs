//! One prompt per pack: the jobs of a pack ([`crate::plan::Pack`]) send
//! the same prompt, so the first of them to start submits it like any job
//! and the others wait for its outputs, then each keeps its own image of
//! the batch. A prompt that failed or timed out is that attempt's end for
//! every job of the pack (the same prompt would fail again: a pack of N
//! must not run it N times); a submitter whose attempt ends otherwise
//! without outputs (moved, cancelled) leaves the pack to the next of its
//! jobs to try.
//!
//! Knows nothing of the scheduler or of files: it only hands the outputs
//! of a pack's prompt (where they are, what the server said) from the job
//! that ran it to the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::server::Server;
use crate::comfy::outputs::JobOutputs;
use crate::ids::JobId;
use crate::outcome::{Attempt, Outcome};

/// What a pack's prompt made: the server holding its files, its outputs,
/// and the attempt that ran it (prompt id, times) for every job's row.
#[derive(Clone)]
pub(crate) struct Ran {
    pub server: Arc<Server>,
    pub outputs: JobOutputs,
    pub attempt: Attempt,
}

enum Entry {
    /// A job of the pack is running its prompt.
    Running(watch::Receiver<Option<Arc<Ran>>>),
    /// The prompt ran: its outputs, for the jobs still to save theirs.
    Ran(Arc<Ran>),
}

/// One pack: what its prompt is doing now, and how each attempt of it
/// that failed ended (a few, `--retries` at most), kept apart so that a
/// job of the pack that starts attempt k late still ends it with attempt
/// k's prompt, not a later one's.
#[derive(Default)]
struct Pack {
    now: Option<Entry>,
    /// (attempt number, how its prompt ended), in the order they failed.
    failed: Vec<(u32, Arc<Outcome>)>,
}

impl Pack {
    /// How attempt `number` ended if the pack's prompt of that attempt
    /// failed; else, if a later attempt's failed, the first such (the
    /// attempt's own prompt never ran: it would fail again).
    fn failed(&self, number: u32) -> Option<Arc<Outcome>> {
        let exact = self.failed.iter().find(|(n, _)| *n == number);
        let later = || {
            self.failed
                .iter()
                .filter(|(n, _)| *n > number)
                .min_by_key(|(n, _)| *n)
        };
        exact.or_else(later).map(|(_, o)| o.clone())
    }
}

/// The run's packs by pack id.
#[derive(Default)]
pub(crate) struct Board {
    packs: Mutex<HashMap<JobId, Pack>>,
}

/// What a job of a pack does now.
pub(crate) enum Role {
    /// Submit the pack's prompt and publish its outputs.
    Submit(Publisher),
    /// Wait for the job that submits it; then ask again.
    Wait(watch::Receiver<Option<Arc<Ran>>>),
    /// Save its own image from these outputs.
    Collect(Arc<Ran>),
    /// End this attempt as the pack's prompt ended.
    Failed(Arc<Outcome>),
}

/// The submitting job's promise to the others: its outputs, or (dropped
/// without them) the pack left for another job to submit.
pub(crate) struct Publisher {
    board: Arc<Board>,
    pack: JobId,
    tx: watch::Sender<Option<Arc<Ran>>>,
    published: bool,
}

impl Board {
    /// The role of a job of `pack` that starts its attempt `number` now.
    pub(crate) fn role(self: &Arc<Self>, pack: &JobId, number: u32) -> Role {
        let mut packs = self.packs.lock().unwrap_or_else(|e| e.into_inner());
        let state = packs.entry(pack.clone()).or_default();
        if let Some(outcome) = state.failed(number) {
            return Role::Failed(outcome);
        }
        match &state.now {
            Some(Entry::Running(rx)) => return Role::Wait(rx.clone()),
            // Outputs on a server since lost cannot be fetched: run again.
            Some(Entry::Ran(ran)) if !ran.server.is_lost() => return Role::Collect(ran.clone()),
            _ => {}
        }
        let (tx, rx) = watch::channel(None);
        state.now = Some(Entry::Running(rx));
        Role::Submit(Publisher {
            board: self.clone(),
            pack: pack.clone(),
            tx,
            published: false,
        })
    }
}

impl Publisher {
    /// The prompt ran: the pack's other jobs collect from `ran`.
    pub(crate) fn publish(mut self, ran: Ran) {
        let ran = Arc::new(ran);
        let mut packs = self.board.packs.lock().unwrap_or_else(|e| e.into_inner());
        packs.entry(self.pack.clone()).or_default().now = Some(Entry::Ran(ran.clone()));
        drop(packs);
        self.published = true;
        let _ = self.tx.send(Some(ran));
    }

    /// The prompt of attempt `number` failed or timed out as `outcome`
    /// says: the pack's other jobs end that attempt the same way.
    pub(crate) fn fail(mut self, number: u32, outcome: Outcome) {
        let mut packs = self.board.packs.lock().unwrap_or_else(|e| e.into_inner());
        let state = packs.entry(self.pack.clone()).or_default();
        state.now = None;
        state.failed.push((number, Arc::new(outcome)));
        // Dropping the sender wakes the waiting jobs: they ask again.
        self.published = true;
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        if !self.published {
            // The waiting jobs see the sender gone and ask again.
            let mut packs = self.board.packs.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(state) = packs.get_mut(&self.pack)
                && matches!(state.now, Some(Entry::Running(_)))
            {
                state.now = None;
            }
        }
    }
}
