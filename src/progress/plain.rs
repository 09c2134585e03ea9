//! One line per job event, for CI logs and pipes.

use std::io::Write;
use std::time::Duration;

use crate::run::{CancelReason, EventKind, RunEvent, RunStats, Status};

/// Writes a line per event to any writer (stderr in the CLI, memory in
/// tests).
pub struct PlainReporter {
    out: Box<dyn Write + Send>,
    total: usize,
    servers: Vec<String>,
    /// Label and server of each submitted job, for its `start` line.
    queued: std::collections::HashMap<crate::ids::JobId, (String, usize)>,
}

/// The width of the `[done/total]` counter.
fn counter(done: usize, total: usize) -> String {
    let width = total.to_string().len();
    format!("[{done:>width$}/{total}]")
}

fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// The final counts: `3 ok, 1 not ok, 0 skipped`, and `, 60 not run` when
/// the run stopped before some of its jobs.
pub(crate) fn done_counts(stats: &RunStats) -> String {
    let mut line = format!(
        "{} ok, {} not ok, {} skipped",
        stats.ok, stats.failed, stats.skipped
    );
    if stats.not_run() > 0 {
        line.push_str(&format!(", {} not run", stats.not_run()));
    }
    line
}

/// What a cancel reason means to a user.
pub(crate) fn cancel_text(reason: CancelReason) -> &'static str {
    match reason {
        CancelReason::FailFast | CancelReason::MaxFailures => {
            "too many failures: no new jobs; waiting for the running ones"
        }
        CancelReason::NoServers => "no server left: stopping",
        CancelReason::Interrupt => {
            "interrupted: no new jobs, queued prompts removed; waiting for the running ones (Ctrl-C again to stop them)"
        }
        CancelReason::SecondInterrupt => "interrupted again: stopping the running prompts",
        CancelReason::Terminated => {
            "terminated: no new jobs; removing our queued prompts and stopping the running ones"
        }
    }
}

impl PlainReporter {
    /// A reporter writing to `out`.
    pub fn new(out: Box<dyn Write + Send>) -> PlainReporter {
        PlainReporter {
            out,
            total: 0,
            servers: Vec::new(),
            queued: std::collections::HashMap::new(),
        }
    }

    /// The line for an event, if it has one.
    pub fn line(&mut self, event: &RunEvent) -> Option<String> {
        Some(match &event.kind {
            EventKind::RunStarted {
                total,
                skipped,
                servers,
            } => {
                self.total = *total;
                self.servers = servers.clone();
                // No server when nothing is left to run (`--sim` then
                // starts none): no dangling "on".
                let mut line = if servers.is_empty() {
                    format!("run: {total} jobs")
                } else {
                    format!("run: {total} jobs on {}", servers.join(", "))
                };
                if *skipped > 0 {
                    line.push_str(&format!(
                        " ({skipped} skipped: done already or in another shard)"
                    ));
                }
                line
            }
            EventKind::JobSubmitted {
                job, label, server, ..
            } => {
                self.queued.insert(job.clone(), (label.clone(), server.0));
                return None;
            }
            EventKind::JobStarted { job, .. } => {
                let (label, server) = self.queued.get(job)?;
                format!(
                    "start  {job} {label} on {}",
                    self.servers.get(*server).map(String::as_str).unwrap_or("?")
                )
            }
            EventKind::JobRetrying {
                job,
                outcome,
                attempt,
            } => format!(
                "retry  {} {} attempt {attempt}: {}",
                job.id,
                job.label,
                outcome.error.as_deref().unwrap_or("failed")
            ),
            EventKind::JobFinished {
                job,
                outcome,
                stats,
                ..
            } => {
                self.queued.remove(&job.id);
                let mut line = format!(
                    "{} {:<11} {} {}",
                    counter(stats.done, self.total),
                    outcome.status.as_str(),
                    job.id,
                    job.label
                );
                if outcome.status == Status::Ok {
                    let n = outcome.images.len();
                    // Videos, audio and texts too, not only images.
                    line.push_str(&format!(" {n} file{}", if n == 1 { "" } else { "s" }));
                }
                if let Some(error) = &outcome.error {
                    line.push_str(&format!(": {error}"));
                }
                line
            }
            EventKind::ServerLost { server, cause } => format!(
                "server {} lost ({cause}); its jobs move to the others",
                self.servers
                    .get(server.0)
                    .map(String::as_str)
                    .unwrap_or("?")
            ),
            EventKind::ServerRecovered { server } => format!(
                "server {} is back",
                self.servers
                    .get(server.0)
                    .map(String::as_str)
                    .unwrap_or("?")
            ),
            EventKind::Cancelling { reason } => cancel_text(*reason).to_string(),
            EventKind::RunFinished { stats } => {
                format!("done: {} in {}", done_counts(stats), seconds(event.at))
            }
            EventKind::JobProgress { .. }
            | EventKind::JobNotRun { .. }
            | EventKind::Terminating { .. } => return None,
        })
    }

    /// Writes the event's line.
    pub fn on_event(&mut self, event: &RunEvent) {
        if let Some(line) = self.line(event) {
            let _ = writeln!(self.out, "{line}");
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::ids::{JobId, PromptId, ServerId};
    use crate::patch::Prompt;
    use crate::plan::{Job, Workflow};
    use crate::run::{Attempt, Outcome, RunStats};

    pub(in crate::progress) fn job(id: &str, label: &str) -> Arc<Job> {
        Arc::new(Job {
            index: 0,
            id: JobId::new(id),
            label: label.into(),
            workflow: Arc::new(Workflow {
                name: "t2i".into(),
                path: "workflows/t2i.json".into(),
                sha256: "00".into(),
            }),
            seed: Some(1),
            params: Vec::new(),
            prompt: Prompt(Default::default()),
            images: Vec::new(),
            pack: None,
            shard_unit: 0,
        })
    }

    pub(in crate::progress) fn outcome(
        status: Status,
        images: &[&str],
        error: Option<&str>,
    ) -> Outcome {
        Outcome {
            status,
            images: images.iter().map(|s| s.to_string()).collect(),
            text: None,
            error: error.map(str::to_string),
            attempt: Attempt {
                number: 1,
                queued_at: Some(UNIX_EPOCH),
                ..Attempt::default()
            },
        }
    }

    #[test]
    fn a_run_with_nothing_left_and_no_server_names_none() {
        let mut reporter = PlainReporter::new(Box::new(std::io::sink()));
        let line = reporter.line(&RunEvent {
            at: Duration::ZERO,
            kind: EventKind::RunStarted {
                total: 0,
                skipped: 26,
                servers: vec![],
            },
        });
        assert_eq!(
            line.as_deref(),
            Some("run: 0 jobs (26 skipped: done already or in another shard)")
        );
    }

    #[test]
    fn plain_lines_for_a_run() {
        let a = job("0123456789ab", "fox#1");
        let b = job("ba9876543210", "fox#2");
        let server = "http://127.0.0.1:8188".to_string();
        let stats = |done, ok, failed| RunStats {
            total: 2,
            done,
            ok,
            failed,
            skipped: 3,
        };
        let kinds = vec![
            EventKind::RunStarted {
                total: 2,
                skipped: 3,
                servers: vec![server],
            },
            EventKind::JobSubmitted {
                job: a.id.clone(),
                label: a.label.clone(),
                server: ServerId(0),
                prompt: PromptId::new("cb-x-0123456789ab-1"),
            },
            EventKind::JobStarted {
                job: a.id.clone(),
                server: ServerId(0),
            },
            EventKind::JobProgress {
                job: a.id.clone(),
                server: ServerId(0),
                node: "3".into(),
                value: 1,
                max: 20,
            },
            EventKind::JobFinished {
                job: a.clone(),
                outcome: outcome(Status::Ok, &["images/0123456789ab_9_0.png"], None),
                stats: stats(1, 1, 0),
                logged: false,
            },
            EventKind::JobRetrying {
                job: b.clone(),
                outcome: outcome(Status::Failed, &[], Some("node 3 (KSampler): OOM")),
                attempt: 2,
            },
            EventKind::JobFinished {
                job: b.clone(),
                outcome: outcome(Status::Failed, &[], Some("node 3 (KSampler): OOM")),
                stats: stats(2, 1, 1),
                logged: false,
            },
            EventKind::Cancelling {
                reason: CancelReason::Interrupt,
            },
            EventKind::RunFinished {
                stats: stats(2, 1, 1),
            },
        ];
        let mut reporter = PlainReporter::new(Box::new(std::io::sink()));
        let lines: Vec<String> = kinds
            .into_iter()
            .enumerate()
            .filter_map(|(i, kind)| {
                reporter.line(&RunEvent {
                    at: Duration::from_millis(1500 * i as u64),
                    kind,
                })
            })
            .collect();
        insta::assert_snapshot!(lines.join("\n"));
    }
}
