//! The terminal display: an overall bar (done / total, ETA, failures) and a
//! line per server with its running job and sampler step.

use std::collections::HashMap;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::plain::{cancel_text, done_counts};
use crate::ids::JobId;
use crate::run::{EventKind, RunEvent, Status};

/// indicatif bars on stderr.
pub struct ProgressReporter {
    multi: MultiProgress,
    overall: ProgressBar,
    servers: Vec<ProgressBar>,
    /// The job each server's line shows, if any.
    showing: Vec<Option<JobId>>,
    urls: Vec<String>,
    labels: HashMap<JobId, String>,
    verbose: bool,
}

/// The text of a server's line (pure, for tests).
pub fn server_line(url: &str, job: Option<(&str, &str)>, step: Option<(u32, u32)>) -> String {
    match (job, step) {
        (None, _) => format!("{url}: idle"),
        (Some((id, label)), None) => format!("{url}: {label} ({id})"),
        (Some((id, label)), Some((v, m))) => format!("{url}: {label} ({id}) step {v}/{m}"),
    }
}

impl ProgressReporter {
    /// A display on stderr; `verbose` also prints a line per finished job.
    pub fn new(verbose: bool) -> ProgressReporter {
        ProgressReporter::with_target(ProgressDrawTarget::stderr(), verbose)
    }

    fn with_target(target: ProgressDrawTarget, verbose: bool) -> ProgressReporter {
        let multi = MultiProgress::with_draw_target(target);
        let overall = multi.add(ProgressBar::new(0));
        overall.set_style(
            ProgressStyle::with_template(
                "{bar:30.cyan/blue} {pos}/{len} jobs  {msg}  elapsed {elapsed}  ETA {eta}",
            )
            .expect("the template is valid")
            .progress_chars("=> "),
        );
        ProgressReporter {
            multi,
            overall,
            servers: Vec::new(),
            showing: Vec::new(),
            urls: Vec::new(),
            labels: HashMap::new(),
            verbose,
        }
    }

    /// Updates the display for one event.
    pub fn on_event(&mut self, event: &RunEvent) {
        match &event.kind {
            EventKind::RunStarted { total, servers, .. } => {
                self.overall.set_length(*total as u64);
                self.overall.set_message("0 failed");
                self.urls = servers.clone();
                for url in servers {
                    let bar = self.multi.add(ProgressBar::new_spinner());
                    bar.set_message(server_line(url, None, None));
                    self.servers.push(bar);
                    self.showing.push(None);
                }
            }
            EventKind::JobSubmitted { job, label, .. } => {
                self.labels.insert(job.clone(), label.clone());
            }
            EventKind::JobStarted { job, server } => {
                if let Some(bar) = self.servers.get(server.0) {
                    let label = self.labels.get(job).map(String::as_str).unwrap_or("");
                    bar.set_message(server_line(
                        &self.url(server.0),
                        Some((job.as_str(), label)),
                        None,
                    ));
                    bar.tick();
                    // A job that moved here is no longer where it was.
                    self.went_idle(job);
                    self.showing[server.0] = Some(job.clone());
                }
            }
            EventKind::JobProgress {
                job,
                server,
                value,
                max,
                ..
            } => {
                if let Some(bar) = self.servers.get(server.0) {
                    let label = self.labels.get(job).map(String::as_str).unwrap_or("");
                    bar.set_message(server_line(
                        &self.url(server.0),
                        Some((job.as_str(), label)),
                        Some((*value, *max)),
                    ));
                    bar.tick();
                    self.showing[server.0] = Some(job.clone());
                }
            }
            EventKind::JobFinished {
                job,
                outcome,
                stats,
                ..
            } => {
                self.labels.remove(&job.id);
                self.went_idle(&job.id);
                self.overall.set_position(stats.done as u64);
                self.overall.set_message(format!("{} failed", stats.failed));
                if outcome.status != Status::Ok || self.verbose {
                    let error = outcome.error.as_deref().unwrap_or("");
                    let _ = self.multi.println(format!(
                        "{} {} {} {error}",
                        outcome.status.as_str(),
                        job.id,
                        job.label
                    ));
                }
            }
            EventKind::JobRetrying {
                job,
                outcome,
                attempt,
            } => {
                // It may run next on another server: this one's line no
                // longer shows it.
                self.went_idle(&job.id);
                let cause = outcome.error.as_deref().unwrap_or("failed");
                let _ = self.multi.println(format!(
                    "retry {} {} attempt {attempt}: {cause}",
                    job.id, job.label
                ));
            }
            EventKind::ServerLost { server, cause } => {
                if let Some(bar) = self.servers.get(server.0) {
                    bar.set_message(format!("{}: lost", self.url(server.0)));
                    self.showing[server.0] = None;
                }
                let _ = self
                    .multi
                    .println(format!("server {} lost: {cause}", self.url(server.0)));
            }
            EventKind::ServerRecovered { server } => {
                if let Some(bar) = self.servers.get(server.0) {
                    bar.set_message(server_line(&self.url(server.0), None, None));
                }
                let _ = self
                    .multi
                    .println(format!("server {} is back", self.url(server.0)));
            }
            EventKind::Cancelling { reason } => {
                let _ = self.multi.println(cancel_text(*reason));
            }
            EventKind::RunFinished { stats } => {
                for bar in &self.servers {
                    bar.finish_and_clear();
                }
                self.overall.finish();
                let _ = self.multi.println(format!("done: {}", done_counts(stats)));
            }
            EventKind::JobNotRun { .. } | EventKind::Terminating { .. } => {}
        }
    }

    /// A line showing `job` (which ended or moves on) says its server is
    /// idle, until the server starts another job.
    fn went_idle(&mut self, job: &JobId) {
        for (i, shown) in self.showing.iter_mut().enumerate() {
            if shown.as_ref() == Some(job) {
                *shown = None;
                let url = self.urls.get(i).cloned().unwrap_or_default();
                self.servers[i].set_message(server_line(&url, None, None));
            }
        }
    }

    fn url(&self, server: usize) -> String {
        self.urls.get(server).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::plain::tests::{job, outcome};
    use super::*;
    use crate::ids::{PromptId, ServerId};
    use crate::run::RunStats;

    #[test]
    fn server_lines() {
        assert_eq!(server_line("http://a", None, None), "http://a: idle");
        assert_eq!(
            server_line("http://a", Some(("abc", "fox#2")), Some((3, 20))),
            "http://a: fox#2 (abc) step 3/20"
        );
    }

    /// Each server's line after `kinds`.
    fn lines(kinds: Vec<EventKind>) -> Vec<String> {
        let mut reporter = ProgressReporter::with_target(ProgressDrawTarget::hidden(), false);
        for kind in kinds {
            reporter.on_event(&RunEvent {
                at: std::time::Duration::ZERO,
                kind,
            });
        }
        reporter.servers.iter().map(ProgressBar::message).collect()
    }

    fn started(job: &JobId, server: usize) -> [EventKind; 3] {
        [
            EventKind::JobSubmitted {
                job: job.clone(),
                label: "fox#1".into(),
                server: ServerId(server),
                prompt: PromptId::new("cb-x-0123456789ab-1"),
            },
            EventKind::JobStarted {
                job: job.clone(),
                server: ServerId(server),
            },
            EventKind::JobProgress {
                job: job.clone(),
                server: ServerId(server),
                node: "3".into(),
                value: 7,
                max: 20,
            },
        ]
    }

    fn run_started() -> EventKind {
        EventKind::RunStarted {
            total: 1,
            skipped: 0,
            servers: vec!["http://a".into(), "http://b".into()],
        }
    }

    #[test]
    fn a_job_that_fails_over_to_another_server_leaves_the_first_idle() {
        let a = job("0123456789ab", "fox#1");
        let mut kinds = vec![run_started()];
        kinds.extend(started(&a.id, 0));
        kinds.push(EventKind::JobRetrying {
            job: a.clone(),
            outcome: outcome(Status::Failed, &[], Some("node 3 (KSampler): OOM")),
            attempt: 2,
        });
        assert_eq!(lines(kinds.clone()), ["http://a: idle", "http://b: idle"]);
        kinds.extend(started(&a.id, 1));
        assert_eq!(
            lines(kinds),
            ["http://a: idle", "http://b: fox#1 (0123456789ab) step 7/20"]
        );
    }

    #[test]
    fn a_finished_job_or_a_lost_server_is_not_shown_as_running() {
        let a = job("0123456789ab", "fox#1");
        let mut kinds = vec![run_started()];
        kinds.extend(started(&a.id, 0));
        kinds.push(EventKind::JobFinished {
            job: a.clone(),
            outcome: outcome(Status::Ok, &[], None),
            stats: RunStats::default(),
            logged: false,
        });
        assert_eq!(lines(kinds), ["http://a: idle", "http://b: idle"]);

        // Lost mid-job: the job moves on (started elsewhere, with no
        // retry: a lost server's attempt does not count).
        let mut kinds = vec![run_started()];
        kinds.extend(started(&a.id, 0));
        kinds.push(EventKind::ServerLost {
            server: ServerId(0),
            cause: "connection refused".into(),
        });
        assert_eq!(lines(kinds.clone()), ["http://a: lost", "http://b: idle"]);
        kinds.push(EventKind::ServerRecovered {
            server: ServerId(0),
        });
        kinds.extend(started(&a.id, 1));
        assert_eq!(
            lines(kinds),
            ["http://a: idle", "http://b: fox#1 (0123456789ab) step 7/20"]
        );
    }

    #[test]
    fn a_job_moved_without_a_retry_is_shown_where_it_runs_only() {
        let a = job("0123456789ab", "fox#1");
        let mut kinds = vec![run_started()];
        kinds.extend(started(&a.id, 0));
        kinds.extend(started(&a.id, 1));
        assert_eq!(
            lines(kinds),
            ["http://a: idle", "http://b: fox#1 (0123456789ab) step 7/20"]
        );
    }
}
