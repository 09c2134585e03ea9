//! The async half shared by `run` and `rerun`: start the simulator if asked,
//! preflight, install the Ctrl-C counter, feed the scheduler and route its
//! events to the CSV log and the reporter, then map the summary to an exit
//! code.

use std::io::IsTerminal;
use std::sync::Arc;

use super::{CliError, Exit};
use crate::comfy::ServerUrl;
use crate::plan::Job;
use crate::report::{PlainReporter, ProgressReporter, Reporter};
use crate::run::{CancelReason, EventKind, RunConfig, RunError};
use crate::sink::OutputDir;
use crate::sink::csv::RunLog;

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
}

/// Jobs to validate in the preflight, produced afresh (plans are lazy).
pub(crate) type JobSource<'a> = &'a dyn Fn() -> Box<dyn Iterator<Item = Job> + 'a>;

/// Starts the embedded simulator on a free loopback port (`--sim`).
pub(crate) async fn start_sim() -> Result<crate::sim::SimHandle, CliError> {
    crate::sim::Sim::start(
        crate::sim::SimConfig::default(),
        "127.0.0.1:0".parse().expect("a valid socket address"),
    )
    .await
    .map_err(|e| CliError::from_error(Exit::Infrastructure, &e))
}

/// Runs `jobs` (each with its first attempt number) and returns the exit code.
pub(crate) fn drive(
    session: Session,
    output: OutputDir,
    mut log: RunLog,
    preflight: JobSource<'_>,
    jobs: impl Iterator<Item = (Job, u32)>,
    total: usize,
    skipped: usize,
) -> Result<Exit, CliError> {
    let Session {
        mut config,
        sim,
        check,
        quiet,
        verbose,
    } = session;
    let mut reporter = if quiet {
        Reporter::Quiet
    } else if std::io::stderr().is_terminal() {
        Reporter::Progress(ProgressReporter::new(verbose > 0))
    } else {
        Reporter::Plain(PlainReporter::new(Box::new(std::io::stderr())))
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::from_error(Exit::Infrastructure, &e))?;
    let output = Arc::new(output);
    runtime.block_on(async move {
        let _sim = if sim {
            let sim = start_sim().await?;
            if !quiet {
                eprintln!("simulator: {}", sim.url());
            }
            let url = ServerUrl::parse(&sim.url())
                .map_err(|e| CliError::from_error(Exit::Infrastructure, &e))?;
            config.servers = vec![url];
            Some(sim)
        } else {
            None
        };
        if check {
            let catalogues = super::check::catalogues(&config.servers, &config.headers).await?;
            super::check::preflight(preflight, &catalogues)?;
        }
        let (int_tx, int_rx) = tokio::sync::watch::channel(0u32);
        tokio::spawn(async move {
            let mut count = 0;
            while tokio::signal::ctrl_c().await.is_ok() {
                count += 1;
                if int_tx.send(count).is_err() {
                    break;
                }
            }
        });
        let mut observer = |event: &crate::run::RunEvent| {
            if let EventKind::JobFinished { job, outcome, .. } = &event.kind {
                log.append(job, outcome)?;
            }
            reporter.on_event(event);
            Ok(())
        };
        let summary =
            crate::run::execute(config, jobs, total, skipped, output, int_rx, &mut observer)
                .await
                .map_err(|e| match e {
                    RunError::NoServer(_) => CliError::from_error(Exit::Infrastructure, &e)
                        .with_hint("start ComfyUI, pass --server URL, or rehearse with --sim"),
                    RunError::Sink(_) => CliError::from_error(Exit::Infrastructure, &e),
                })?;
        Ok(match summary.cancelled {
            Some(CancelReason::Interrupt | CancelReason::SecondInterrupt) => Exit::Interrupted,
            Some(CancelReason::NoServers) => Exit::Infrastructure,
            _ if summary.stats.failed > 0 => Exit::JobsFailed,
            _ => Exit::Ok,
        })
    })
}
