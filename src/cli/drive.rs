//! The async half shared by `run` and `rerun`: start the simulator if asked,
//! preflight every prompt (before anything is created or queued), open the
//! output folder, record each server's environment (`environment`), watch
//! for Ctrl-C and SIGTERM (the only place signals are read), feed the
//! scheduler and route its events to the CSV log and the
//! reporters, then map the summary to an exit code.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{CliError, Exit};
use crate::comfy::ServerUrl;
use crate::plan::Job;
use crate::preflight::JobSource;
use crate::progress::{PlainReporter, ProgressReporter, Reporter};
use crate::run::{CancelReason, RunConfig, RunError, Stop};
use crate::runlog::RunLog;
use crate::sink::OutputDir;

/// Threads for the runner's file work (the runtime's blocking pool): a
/// slow disk still has a few writes in flight at once, and the jobs of
/// many servers ending together queue instead of waking a thread each.
const FILE_THREADS: usize = 4;

/// How a session runs, beyond the scheduler's own config.
pub(crate) struct Session {
    /// The scheduler's config (servers replaced when `sim`).
    pub config: RunConfig,
    /// Start the embedded simulator and use it as the only server.
    pub sim: bool,
    /// Validate every prompt against each server's catalogue first.
    pub check: bool,
    /// `-q`.
    pub quiet: bool,
    /// `-v` count.
    pub verbose: u8,
    /// The output folder exists already: it is opened first, and when
    /// nothing is left to run no server is needed at all.
    pub resuming: bool,
    /// `--junit FILE`.
    pub junit: Option<std::path::PathBuf>,
    /// The HTML report and grids (`None` with `--no-report`).
    pub report: Option<crate::progress::ReportPlan>,
}

/// What the command hands the scheduler once the preflight passed: the
/// opened output folder and log, and the jobs to run (each with its first
/// attempt number).
pub(crate) struct Prepared<'a> {
    /// The output folder.
    pub output: OutputDir,
    /// Its log, open for appending.
    pub log: RunLog,
    /// The jobs to run.
    pub jobs: Box<dyn crate::run::JobFeed + 'a>,
    /// How many.
    pub total: usize,
    /// How many of the plan's were skipped (done, or another shard).
    pub skipped: usize,
}

/// Opens the output folder; a file in its place is a usage error.
pub(crate) fn open_output(path: &Path) -> Result<OutputDir, CliError> {
    super::options::check_output(path)?;
    Ok(OutputDir::open(path)?)
}

/// How long a terminated run's cleanup may take (removing our prompts,
/// interrupting the running ones): Docker and GitHub Actions give about
/// 10 s between SIGTERM and SIGKILL, and the report wants some of them.
const TERMINATE_WITHIN: Duration = Duration::from_secs(5);

/// Tells the run what the user asks: Ctrl-Cs counted, and SIGTERM (or a
/// closed console on Windows) as a termination due within
/// [`TERMINATE_WITHIN`]. A signal stream on Unix, not repeated `ctrl_c()`
/// calls: a quick second Ctrl-C is not lost between listeners.
fn spawn_stop_watch(stop: tokio::sync::watch::Sender<Stop>) -> Result<(), CliError> {
    #[cfg(unix)]
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let terminated = termination()?;
    tokio::spawn(async move {
        let mut terminated = std::pin::pin!(terminated);
        let mut seen_termination = false;
        loop {
            #[cfg(unix)]
            let interrupt = sigint.recv();
            #[cfg(not(unix))]
            let interrupt = async { tokio::signal::ctrl_c().await.ok() };
            tokio::select! {
                got = interrupt => {
                    if got.is_none() {
                        break;
                    }
                    stop.send_modify(|s| s.interrupts += 1);
                }
                () = &mut terminated, if !seen_termination => {
                    seen_termination = true;
                    let by = Instant::now() + TERMINATE_WITHIN;
                    stop.send_modify(|s| s.terminate_by = Some(by));
                }
            }
            if stop.is_closed() {
                break;
            }
        }
    });
    Ok(())
}

/// Resolves on SIGTERM (`docker stop`, a deleted pod, a cancelled CI job).
#[cfg(unix)]
fn termination() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigterm = signal(SignalKind::terminate())?;
    Ok(async move {
        if sigterm.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
    })
}

/// Resolves when the console window is closed (or the user logs off):
/// Windows ends the process a few seconds later, as SIGKILL follows
/// SIGTERM elsewhere.
#[cfg(windows)]
fn termination() -> std::io::Result<impl std::future::Future<Output = ()>> {
    let mut close = tokio::signal::windows::ctrl_close()?;
    Ok(async move {
        if close.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
    })
}

/// Elsewhere nothing announces a termination.
#[cfg(not(any(unix, windows)))]
fn termination() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(std::future::pending::<()>())
}

/// A run that found no server: the CI outputs say so (a failure to write
/// them is a warning; the run's error is what counts).
fn not_started(
    ci: &mut crate::ci::CiReporters,
    e: &CliError,
    jobs: Box<dyn Iterator<Item = Job> + '_>,
) {
    if let Err(w) = ci.not_started(&e.errors.join("; "), jobs) {
        eprintln!("warning: {w}");
    }
}

/// The preflight: each reachable server's catalogue, every prompt. A
/// server down at the start is left out (the scheduler skips it too); only
/// when none answers is that an error. The run keeps the connections it
/// opened (`RunConfig::http_pool`).
async fn preflight(
    config: &mut RunConfig,
    jobs: JobSource<'_>,
    quiet: bool,
) -> Result<Vec<(String, crate::validate::Catalogue)>, CliError> {
    let pool = config.http_pool()?;
    Ok(crate::preflight::check_servers(&config.servers, &pool, jobs, quiet).await?)
}

/// Runs a session: preflight `jobs`, then `prepare` the folder and the jobs
/// to run, then schedule them. Returns the exit code.
pub(crate) fn drive<'a>(
    session: Session,
    jobs: JobSource<'a>,
    prepare: impl FnOnce() -> Result<Prepared<'a>, CliError>,
) -> Result<Exit, CliError> {
    let Session {
        mut config,
        sim,
        check,
        quiet,
        verbose,
        resuming,
        junit,
        report,
    } = session;
    let mut prepare = Some(prepare);
    let early = match resuming {
        true => Some((prepare.take().expect("prepare is called once"))()?),
        false => None,
    };
    let nothing_left = early.as_ref().is_some_and(|p| p.total == 0);
    // One thread pumps every socket and runs every job's state machine:
    // a job's work between messages is microseconds, and a second worker
    // only adds a cross-thread wake-up per message (measured: one runner
    // in front of 32 servers spends less CPU per job on one thread). A
    // job's small writes run on this thread while the disk is quick, the
    // rest on the blocking pool (run::offload); syncs on a thread of their
    // own. The pool is kept small: a job's file work is a few
    // small writes, and when the jobs of many servers end together, each
    // task handed to an idle thread of a large pool woke a thread of its
    // own, where a few busy ones take the queue in turn (measured with 32
    // servers: three context switches and about a tenth of the CPU per job
    // less). While every server has work queued, the scheduler lets the
    // thread doze before it parks, so one wake-up reads many servers'
    // messages. Not with the embedded simulator: it runs on this thread,
    // and its timers would doze too.
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_all().max_blocking_threads(FILE_THREADS);
    if !sim {
        let pace = config.pace.clone();
        builder.on_thread_park(move || pace.doze());
    }
    let runtime = builder.build()?;
    runtime.block_on(async move {
        // Watched from the start: a SIGTERM during a slow preflight ends
        // with the CI reports too, not by the signal's default.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(Stop::default());
        spawn_stop_watch(stop_tx)?;
        let _sim = if sim && !nothing_left {
            let sim = super::sim::start_embedded().await?;
            if !quiet {
                eprintln!("simulator: {}", sim.url());
            }
            let url = ServerUrl::parse(&sim.url())?;
            config.servers = vec![url];
            Some(sim)
        } else {
            None
        };
        let catalogues = if check && !nothing_left {
            let mut asked = stop_rx.clone();
            let checked = tokio::select! {
                checked = preflight(&mut config, jobs, quiet) => Some(checked),
                _ = asked.wait_for(Stop::asked) => None,
            };
            match checked {
                Some(Ok(found)) => found,
                checked => {
                    // The folder is not opened for a run that does not start:
                    // a resumed one's jobs are known, else the command's all.
                    let listed: Box<dyn Iterator<Item = Job>> = match early {
                        Some(mut prepared) => Box::new(
                            std::iter::from_fn(move || prepared.jobs.next_job())
                                .map(|(job, _)| job),
                        ),
                        None => jobs(),
                    };
                    let options = super::ci_env::ci_options(junit, Path::new("runs.csv"));
                    let mut ci = crate::ci::CiReporters::new(options);
                    return match checked {
                        Some(Err(e)) => {
                            if e.exit == Exit::Infrastructure {
                                not_started(&mut ci, &e, listed);
                            }
                            Err(e)
                        }
                        // Stopped: nothing was queued and no folder opened.
                        _ => {
                            let reason = asked.borrow().reason_before_start();
                            let summary = crate::run::stopped_in_preflight(
                                &config.servers,
                                listed,
                                reason,
                                &mut |event| Ok(ci.on_event(event)?),
                            )?;
                            let word = match reason {
                                CancelReason::Terminated => "terminated",
                                _ => "interrupted",
                            };
                            let total = summary.stats.total;
                            eprintln!("{word} during the preflight: nothing was queued, {total} jobs not run");
                            Ok(Exit::from(&summary))
                        }
                    };
                }
            }
        } else {
            Vec::new()
        };
        let prepared = match (early, prepare) {
            (Some(prepared), _) => prepared,
            (None, Some(prepare)) => prepare()?,
            (None, None) => unreachable!("prepare is taken only for an early open"),
        };
        // The command's jobs, for the models they name (shadowed below).
        let planned = jobs;
        let Prepared {
            output,
            mut log,
            mut jobs,
            total,
            skipped,
        } = prepared;
        let mut reporter = if quiet {
            Reporter::Quiet
        } else if std::io::stderr().is_terminal() {
            Reporter::Progress(ProgressReporter::new(verbose > 0))
        } else {
            Reporter::Plain(PlainReporter::new(Box::new(std::io::stderr())))
        };
        // Only the live bar shows sampler steps: the log lines, the report
        // and the CI outputs never do.
        config.progress = matches!(reporter, Reporter::Progress(_));
        let mut ci =
            crate::ci::CiReporters::new(super::ci_env::ci_options(junit, &output.log_path()));
        let mut live = report.map(|r| r.start(output.root()));
        if !nothing_left {
            // A Ctrl-C or SIGTERM meanwhile is the run's to handle: the
            // record is given up, as it is for servers slower than this.
            let mut asked = stop_rx.clone();
            let pool = config.http_pool()?;
            let (servers, root) = (&config.servers, output.root());
            let record =
                crate::environment::record_run(root, &pool, servers, &catalogues, planned());
            tokio::select! {
                warnings = record => for warning in warnings.iter().filter(|_| !quiet) {
                    eprintln!("warning: {warning}");
                },
                _ = asked.changed() => {}
            }
        }
        let asked = stop_rx.clone();
        let mut observer = |event: &crate::run::RunEvent| {
            if let Some((job, outcome)) = event.log_row() {
                log.append(job, outcome)?;
            }
            reporter.on_event(event);
            ci.on_event(event)?;
            if let Some(live) = live.as_mut() {
                live.on_event(event);
            }
            Ok(())
        };
        let summary = crate::run::execute(
            config,
            &mut *jobs,
            total,
            skipped,
            Arc::new(output),
            stop_rx,
            &mut observer,
        )
        .await;
        // A terminated run writes its report only while time is left; its
        // page is written by `comfy-batch report` later.
        let out_of_time = asked
            .borrow()
            .terminate_by
            .is_some_and(|by| Instant::now() >= by);
        match live {
            Some(live) if !out_of_time => live.finish(),
            Some(_) if !quiet => {
                eprintln!("report: not written (terminated; run 'comfy-batch report')")
            }
            _ => {}
        }
        let summary = summary.map_err(|e| match e {
            RunError::NoServer(_) => {
                let e = CliError::from(e)
                    .with_hint("start ComfyUI, pass --server URL, or rehearse with --sim");
                not_started(&mut ci, &e, Box::new(std::iter::empty()));
                e
            }
            RunError::Sink(_) => CliError::from(e),
        })?;
        Ok(Exit::from(&summary))
    })
}
