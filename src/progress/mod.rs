//! Telling the user what happens: an indicatif display on a terminal
//! (`bar`), one plain line per event otherwise (`plain`), nothing with
//! `-q`. Reporters only consume [`RunEvent`]s; they know nothing of HTTP or
//! CSV.

mod bar;
mod plain;

pub use bar::ProgressReporter;
pub use plain::PlainReporter;

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
