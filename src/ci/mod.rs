//! Reporters for CI, fed [`RunEvent`]s like the progress reporters (as
//! nextest writes its JUnit): a JUnit XML file (`--junit FILE`), a Markdown
//! job summary appended to GitHub's `GITHUB_STEP_SUMMARY`, and `::error`
//! annotations under GitHub Actions. Every job of the run is in them:
//! those it never ran as skipped with the reason, and a run that found no
//! server says so ([`CiReporters::not_started`]); a terminated run's are
//! written on a thread of their own while its cleanup runs, and the JUnit
//! file again at its end only if an outcome changed. They know nothing of
//! HTTP or the CSV sink; `env` says what a CI's variables ask for; `cli`
//! reads them.

pub mod env;
mod junit;
mod summary;

pub(crate) use summary::cell as markdown_cell;

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::plan::Job;
use crate::run::{EventKind, JobBrief, NOT_RUN_NO_SERVER, Outcome, RunEvent, RunStats, Status};

/// Which CI outputs to produce; built by `cli` from flags and environment.
#[derive(Debug, Clone, Default)]
pub struct CiOptions {
    /// `--junit FILE`: written (atomically) when the run ends.
    pub junit: Option<PathBuf>,
    /// `GITHUB_STEP_SUMMARY`: appended to when the run ends.
    pub step_summary: Option<PathBuf>,
    /// `GITHUB_ACTIONS=true`: an `::error` line on stdout per failed job.
    pub annotations: bool,
    /// The run's `runs.csv`, as the user would type it, for `rerun` lines.
    pub log: String,
}

/// A CI output could not be written.
#[derive(Debug, thiserror::Error)]
#[error("{what} {}: {source}", path.display())]
pub struct CiError {
    /// Which output (`--junit`, `GITHUB_STEP_SUMMARY`).
    pub what: &'static str,
    /// The file.
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: std::io::Error,
}

/// One finished job as the CI outputs need it.
#[derive(Debug, Clone)]
struct Finished {
    id: String,
    label: String,
    seed: Option<u64>,
    params: Vec<(String, String)>,
    status: Status,
    error: Option<String>,
    server: Option<String>,
    /// When the attempt started (else was queued): where `time` begins.
    started: Option<SystemTime>,
    time: Duration,
    /// Never run to its end: `error` says why (a skipped testcase).
    not_run: bool,
}

impl Finished {
    /// A job that did not run, as a skipped testcase saying `reason`.
    fn not_run(job: JobBrief, reason: &str) -> Finished {
        Finished {
            id: job.id.to_string(),
            label: job.label,
            seed: job.seed,
            params: job.params,
            status: Status::Interrupted,
            error: Some(reason.to_string()),
            server: None,
            started: None,
            time: Duration::ZERO,
            not_run: true,
        }
    }
}

/// What the reporters saw of a run.
#[derive(Debug, Default)]
struct Seen {
    servers: Vec<String>,
    jobs: Vec<Finished>,
    stats: RunStats,
    wall: Duration,
    cancelled: Option<crate::run::CancelReason>,
    /// Why the run could not start at all (no server reachable).
    fatal: Option<String>,
}

/// When an attempt's run time begins: its start, else its queueing.
fn attempt_start(outcome: &Outcome) -> Option<SystemTime> {
    outcome.attempt.started_at.or(outcome.attempt.queued_at)
}

/// The run time of an attempt: from [`attempt_start`] to its end.
fn attempt_time(outcome: &Outcome) -> Duration {
    match (attempt_start(outcome), outcome.attempt.finished_at) {
        (Some(from), Some(to)) => to.duration_since(from).unwrap_or_default(),
        _ => Duration::ZERO,
    }
}

/// A span of time, (start, end) in seconds since the epoch.
pub(crate) type Interval = (f64, f64);

/// The length of the union of `intervals`, each counted once where they
/// overlap: a server's busy time from its jobs' runs, which overlap when it
/// holds several at once. Sorts `intervals`.
pub(crate) fn covered(intervals: &mut [Interval]) -> f64 {
    intervals.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut total, mut open): (f64, Option<Interval>) = (0.0, None);
    for &(a, b) in intervals.iter() {
        open = match open {
            Some((s, e)) if a <= e => Some((s, e.max(b))),
            Some((s, e)) => {
                total += e - s;
                Some((a, b))
            }
            None => Some((a, b)),
        };
    }
    total + open.map_or(0.0, |(s, e)| e - s)
}

/// The CI reporters of one run.
pub struct CiReporters {
    options: CiOptions,
    seen: Seen,
    out: Box<dyn Write + Send>,
    /// The job summary was appended already (a terminated run's, written
    /// before its cleanup): it is not appended twice.
    summary_written: bool,
    /// A terminated run's early write, running beside the cleanup; it
    /// gives back the jobs seen before it.
    early: Option<EarlyWrite>,
}

/// A terminated run's early write: what it writes (the jobs seen before
/// it, `known` of them, then those in flight as not run) and its thread.
struct EarlyWrite {
    seen: std::sync::Arc<Seen>,
    known: usize,
    thread: std::thread::JoinHandle<Result<(), CiError>>,
}

impl EarlyWrite {
    /// The jobs seen before the write, once its thread is done with them
    /// (joined or never started).
    fn jobs_of(seen: std::sync::Arc<Seen>, known: usize) -> Vec<Finished> {
        let mut jobs = match std::sync::Arc::try_unwrap(seen) {
            Ok(seen) => seen.jobs,
            Err(shared) => shared.jobs.clone(),
        };
        jobs.truncate(known);
        jobs
    }
}

impl CiReporters {
    /// Reporters as `options` say; annotations go to stdout.
    pub fn new(options: CiOptions) -> CiReporters {
        CiReporters::with_output(options, Box::new(std::io::stdout()))
    }

    /// Like [`CiReporters::new`], annotations written to `out` (tests).
    pub fn with_output(options: CiOptions, out: Box<dyn Write + Send>) -> CiReporters {
        CiReporters {
            options,
            seen: Seen::default(),
            out,
            summary_written: false,
            early: None,
        }
    }

    /// Whether any output is wanted (else events need not be seen at all).
    pub fn is_active(&self) -> bool {
        self.options.junit.is_some()
            || self.options.step_summary.is_some()
            || self.options.annotations
    }

    /// Takes one event; files are written when the run finishes.
    pub fn on_event(&mut self, event: &RunEvent) -> Result<(), CiError> {
        if !self.is_active() {
            return Ok(());
        }
        match &event.kind {
            EventKind::RunStarted { servers, .. } => self.seen.servers = servers.clone(),
            EventKind::JobFinished { job, outcome, .. } => {
                let finished = Finished {
                    id: job.id.to_string(),
                    label: job.label.clone(),
                    seed: job.seed,
                    params: JobBrief::of(job).params,
                    status: outcome.status,
                    error: outcome.error.as_deref().map(crate::text::one_line),
                    server: outcome.attempt.server.clone(),
                    started: attempt_start(outcome),
                    time: attempt_time(outcome),
                    not_run: false,
                };
                if self.options.annotations && finished.status != Status::Ok {
                    let line = summary::annotation(&finished, &self.options.log);
                    // stdout gone (a closed pipe) must not stop the run.
                    let _ = writeln!(self.out, "{line}").and_then(|()| self.out.flush());
                }
                if self.options.junit.is_some() || self.options.step_summary.is_some() {
                    self.seen.jobs.push(finished);
                }
            }
            EventKind::JobNotRun { job, reason } if self.keeps_jobs() => {
                self.seen.jobs.push(Finished::not_run(job.clone(), reason));
            }
            EventKind::Terminating { in_flight, stats } if self.keeps_jobs() => {
                // The process may be killed while our prompts are removed:
                // what is known is written now, on a thread of its own so
                // that the cleanup (on the runner's thread) does not wait
                // for it; the JUnit file again at the end only if an
                // outcome changed meanwhile.
                let mut seen = Seen {
                    jobs: std::mem::take(&mut self.seen.jobs),
                    servers: self.seen.servers.clone(),
                    stats: *stats,
                    wall: event.at,
                    cancelled: self.seen.cancelled,
                    fatal: None,
                };
                let known = seen.jobs.len();
                let line = crate::run::CancelReason::Terminated.not_run_line();
                seen.jobs.extend(
                    in_flight
                        .iter()
                        .map(|job| Finished::not_run(JobBrief::of(job), line)),
                );
                self.summary_written = self.options.step_summary.is_some();
                let seen = std::sync::Arc::new(seen);
                let (options, shared) = (self.options.clone(), seen.clone());
                let thread = std::thread::Builder::new()
                    .name("ci-reports".into())
                    .spawn(move || write_files(&options, &shared, true));
                let written = match thread {
                    Ok(thread) => {
                        self.early = Some(EarlyWrite {
                            seen,
                            known,
                            thread,
                        });
                        return Ok(());
                    }
                    Err(_) => write_files(&self.options, &seen, true),
                };
                self.seen.jobs = EarlyWrite::jobs_of(seen, known);
                written?;
            }
            EventKind::Cancelling { reason } => {
                self.seen.cancelled = Some(self.seen.cancelled.map_or(*reason, |r| r.max(*reason)));
            }
            EventKind::RunFinished { stats } => {
                let mut seen = std::mem::take(&mut self.seen);
                seen.stats = *stats;
                seen.wall = event.at;
                if let Some(early) = self.early.take() {
                    let written = early.thread.join();
                    let mut jobs = EarlyWrite::jobs_of(early.seen, early.known);
                    // A panic there is a write not done: done again here.
                    if let Ok(written) = written {
                        written?;
                        // Nothing ended since (no job was in flight): that
                        // file is the final one, not rendered again.
                        if seen.jobs.is_empty() {
                            return Ok(());
                        }
                    }
                    jobs.append(&mut seen.jobs);
                    seen.jobs = jobs;
                }
                self.write(&seen)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Whether the files want every job (annotations need only failures).
    fn keeps_jobs(&self) -> bool {
        self.options.junit.is_some() || self.options.step_summary.is_some()
    }

    /// A run that could not start: no server reachable (`cause`). Its
    /// outputs say so: an `::error`, a testcase `run` with an error, and
    /// each job skipped ("not run: no server reachable"): those of `jobs`
    /// and those the run reported not run already.
    pub fn not_started(
        &mut self,
        cause: &str,
        jobs: impl Iterator<Item = Job>,
    ) -> Result<(), CiError> {
        if self.options.annotations {
            let line = summary::error_annotation("comfy-batch: no server reachable", cause);
            let _ = writeln!(self.out, "{line}").and_then(|()| self.out.flush());
        }
        if !self.keeps_jobs() {
            return Ok(());
        }
        let mut seen = std::mem::take(&mut self.seen);
        seen.jobs
            .extend(jobs.map(|job| Finished::not_run(JobBrief::of(&job), NOT_RUN_NO_SERVER)));
        seen.stats = RunStats {
            total: seen.jobs.len(),
            ..RunStats::default()
        };
        seen.fatal = Some(crate::text::one_line(cause));
        self.write(&seen)
    }

    /// Writes the JUnit file (replacing an earlier one) and appends the
    /// job summary (once).
    fn write(&mut self, seen: &Seen) -> Result<(), CiError> {
        let summary = !self.summary_written;
        self.summary_written = true;
        write_files(&self.options, seen, summary)
    }
}

/// Writes the JUnit file `options` ask for (replacing an earlier one) and,
/// with `summary`, appends the job summary.
fn write_files(options: &CiOptions, seen: &Seen, summary: bool) -> Result<(), CiError> {
    {
        if let Some(path) = &options.junit {
            let err = |source| CiError {
                what: "--junit",
                path: path.clone(),
                source,
            };
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(err)?;
            }
            // Written into the temporary file as it is made, then renamed:
            // a reader sees the whole file or none, never the XML in memory.
            crate::sink::write_atomic_synced_with(path, |to| junit::write(seen, to))
                .map_err(|e| err(e.source))?;
        }
        if let Some(path) = options.step_summary.as_ref().filter(|_| summary) {
            let text = summary::render(seen, &options.log);
            let err = |source| CiError {
                what: "GITHUB_STEP_SUMMARY",
                path: path.clone(),
                source,
            };
            append_step_summary(path, &text).map_err(|e| err(e.source))?;
        }
        Ok(())
    }
}

/// Appends Markdown to GitHub's job summary file (`GITHUB_STEP_SUMMARY`),
/// creating it if need be: every step of a job adds its part.
pub fn append_step_summary(path: &std::path::Path, text: &str) -> Result<(), CiError> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|source| CiError {
            what: "GITHUB_STEP_SUMMARY",
            path: path.to_path_buf(),
            source,
        })
}

/// `group` of a `group#n` label.
fn group_of(label: &str) -> &str {
    label.rsplit_once('#').map_or(label, |(g, _)| g)
}

/// Sort key of a label: group, then n as a number.
fn label_order(label: &str) -> (&str, u64) {
    match label.rsplit_once('#') {
        Some((g, n)) => (g, n.parse().unwrap_or(0)),
        None => (label, 0),
    }
}
