//! Telling the user what happens: an indicatif display on a terminal
//! (`progress`), one plain line per event otherwise (`plain`), nothing with
//! `-q`. Reporters only consume [`RunEvent`]s; they know nothing of HTTP or
//! CSV.

mod plain;
mod progress;

pub use plain::PlainReporter;
pub use progress::ProgressReporter;

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
