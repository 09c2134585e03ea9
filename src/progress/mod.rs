//! Telling the user what happens: an indicatif display on a terminal
//! (`bar`), one plain line per event otherwise (`plain`), nothing with
//! `-q`; and the HTML report kept fresh while a run goes on (`report`).
//! Reporters only consume [`RunEvent`]s; they know nothing of HTTP or
//! CSV. The other consumer, `ci` (JUnit, GitHub summaries), is a module of
//! its own because it also writes files for other tools.

mod bar;
mod plain;
mod report;

pub use bar::ProgressReporter;
pub use plain::PlainReporter;
pub use report::{LiveReport, REFRESH_EVERY, ReportPlan, check_grids};

use crate::run::RunEvent;

/// The reporter chosen at the edge.
pub enum Reporter {
    /// Bars on a terminal.
    Progress(ProgressReporter),
    /// Plain lines (CI, pipes).
    Plain(PlainReporter),
    /// Errors only (`-q`).
    Quiet,
}

impl Reporter {
    /// Shows one event.
    pub fn on_event(&mut self, event: &RunEvent) {
        match self {
            Reporter::Progress(p) => p.on_event(event),
            Reporter::Plain(p) => p.on_event(event),
            Reporter::Quiet => {}
        }
    }
}
