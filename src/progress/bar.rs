//! The terminal display: an overall bar (done / total, ETA, failures) and a
//! line per server with its running job and sampler step.

use std::collections::HashMap;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::plain::cancel_text;
use crate::ids::JobId;
use crate::run::{EventKind, RunEvent, Status};

/// indicatif bars on stderr.
pub struct ProgressReporter {
    multi: MultiProgress,
    overall: ProgressBar,
    servers: Vec<ProgressBar>,
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
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
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
                }
            }
            EventKind::JobFinished {
                job,
                outcome,
                stats,
            } => {
                self.labels.remove(&job.id);
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
                let cause = outcome.error.as_deref().unwrap_or("failed");
                let _ = self.multi.println(format!(
                    "retry {} {} attempt {attempt}: {cause}",
                    job.id, job.label
                ));
            }
            EventKind::ServerLost { server, cause } => {
                let _ = self
                    .multi
                    .println(format!("server {} lost: {cause}", self.url(server.0)));
            }
            EventKind::ServerRecovered { server } => {
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
                let _ = self.multi.println(format!(
                    "done: {} ok, {} not ok, {} skipped",
                    stats.ok, stats.failed, stats.skipped
                ));
            }
        }
    }

    fn url(&self, server: usize) -> String {
        self.urls.get(server).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_lines() {
        assert_eq!(server_line("http://a", None, None), "http://a: idle");
        assert_eq!(
            server_line("http://a", Some(("abc", "fox#2")), Some((3, 20))),
            "http://a: fox#2 (abc) step 3/20"
        );
    }
}
