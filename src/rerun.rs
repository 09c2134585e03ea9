//! `rerun`'s jobs, streamed: each selected row is kept as its place in the
//! log and the id it rebuilt to (a few bytes a job, never a row of strings
//! or a prompt), and the job is rebuilt from its row each time it is
//! wanted: once by the checking pass, which reports every problem before
//! anything runs ([`Rebuilder::check`]), then by the preflight's walks
//! ([`Rebuilder::jobs`]) and by the scheduler as slots free up
//! ([`RerunFeed`]). A job that no longer rebuilds to the job checked (its
//! workflow or input edited meanwhile) is not run, and said so.
//!
//! Library work, not `cli`'s: `cli::rerun` only lowers the flags, picks the
//! rows and hands these to the run. Knows the log's reader
//! (`crate::runlog`), `crate::plan::rebuild`, the job as sent
//! (`crate::sink::sent_job`) and the run's [`JobFeed`]; not how the jobs
//! are run.

use std::cell::RefCell;

use crate::plan::Job;
use crate::plan::rebuild::{Origin, Rebuilt, rebuild_row};
use crate::run::{JobBrief, JobFeed, RunError};
use crate::runlog::{At, Log, Place, Resume, job_key};

/// A selected job: where its row is and the id it rebuilt to when checked.
#[derive(Debug, Clone, Copy)]
pub struct Chosen {
    place: Place,
    /// [`job_key`] of the id: exact, the ids checked being 12 or 16 hex
    /// digits.
    id: u128,
}

/// The id a [`job_key`] was made from (one of at most 16 bytes, as every
/// id the checking pass lets through is).
fn id_of(key: u128) -> String {
    let bytes = key.to_be_bytes();
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Rebuilds jobs from rows of one log.
pub struct Rebuilder<'a> {
    log: &'a Log,
    origin: Origin<'a>,
}

impl<'a> Rebuilder<'a> {
    /// Rows of `log`, planned as `origin` says.
    pub fn new(log: &'a Log, origin: Origin<'a>) -> Self {
        Rebuilder { log, origin }
    }

    /// The row at `place`, read by `at`, rebuilt.
    fn rebuild(&self, at: &mut At<'_>, place: Place) -> Result<Rebuilt, Vec<String>> {
        let row = at
            .row(place.offset, u64::from(place.line))
            .map_err(|e| vec![e.to_string()])?;
        let row = self.log.layout().logged(&row);
        rebuild_row(&row, &self.origin, |row| {
            crate::sink::sent_job(self.origin.dir, row)
        })
    }

    /// The checking pass: every row of `places` (the selection, in order)
    /// rebuilt once, each warning shown as met (unless `quiet`), every
    /// problem kept; the rows whose position `keep` takes (a shard) are
    /// returned, with the ids they rebuild to. No job is kept.
    pub fn check(
        &self,
        places: Vec<Place>,
        keep: impl Fn(usize) -> bool,
        quiet: bool,
    ) -> Result<Vec<Chosen>, Vec<String>> {
        let mut at = self.log.at().map_err(|e| vec![e.to_string()])?;
        let mut chosen = Vec::new();
        let mut errors = Vec::new();
        for (i, place) in places.into_iter().enumerate() {
            match self.rebuild(&mut at, place) {
                Ok(Rebuilt { job, warning }) => {
                    if let Some(w) = warning.filter(|_| !quiet) {
                        eprintln!("warning: {w}");
                    }
                    if keep(i) {
                        chosen.push(Chosen {
                            place,
                            id: job_key(job.id.as_str()),
                        });
                    }
                }
                Err(lines) => errors.extend(lines),
            }
        }
        match errors.is_empty() {
            true => Ok(chosen),
            false => Err(errors),
        }
    }

    /// The job at `chosen` rebuilt again; `Err` says why it is not the job
    /// checked.
    fn again(&self, at: &mut At<'_>, chosen: &Chosen) -> Result<Job, String> {
        let place = chosen.place;
        let why = match self.rebuild(at, place) {
            Ok(Rebuilt { job, .. }) if job_key(job.id.as_str()) == chosen.id => return Ok(job),
            Ok(Rebuilt { job, .. }) => format!("it rebuilds as job {} now", job.id),
            Err(lines) => lines.join("; "),
        };
        Err(format!(
            "{}: line {}: job {} changed since it was checked ({why}); not run",
            self.log.path().display(),
            place.line,
            id_of(chosen.id),
        ))
    }

    /// The jobs of `chosen`, rebuilt one at a time (the preflight's walks);
    /// one that no longer rebuilds to the job checked is left out (the
    /// run's feed reports it).
    pub fn jobs(&'a self, chosen: &'a [Chosen]) -> Box<dyn Iterator<Item = Job> + 'a> {
        let Ok(mut at) = self.log.at() else {
            return Box::new(std::iter::empty());
        };
        Box::new(
            chosen
                .iter()
                .filter_map(move |c| self.again(&mut at, c).ok()),
        )
    }
}

/// The scheduler's feed of a rerun: the chosen jobs rebuilt as slots free
/// up, each numbered after the attempts the target log has; the rest
/// listed from their rows, without rebuilding.
pub struct RerunFeed<'a> {
    rebuilder: &'a Rebuilder<'a>,
    at: At<'a>,
    chosen: std::slice::Iter<'a, Chosen>,
    resume: Resume,
    /// A line per job not run because it changed since it was checked.
    changed: &'a RefCell<Vec<String>>,
}

impl<'a> RerunFeed<'a> {
    /// The jobs of `chosen`, numbered by `resume` (the target log's);
    /// `changed` collects the jobs left out.
    pub fn new(
        rebuilder: &'a Rebuilder<'a>,
        chosen: &'a [Chosen],
        resume: Resume,
        changed: &'a RefCell<Vec<String>>,
    ) -> Result<Self, crate::runlog::LogError> {
        Ok(RerunFeed {
            rebuilder,
            at: rebuilder.log.at()?,
            chosen: chosen.iter(),
            resume,
            changed,
        })
    }
}

impl JobFeed for RerunFeed<'_> {
    fn next_job(&mut self) -> Option<(Job, u32)> {
        for chosen in self.chosen.by_ref() {
            match self.rebuilder.again(&mut self.at, chosen) {
                Ok(job) => {
                    let attempt = self.resume.next_attempt(job.id.as_str());
                    return Some((job, attempt));
                }
                Err(line) => self.changed.borrow_mut().push(line),
            }
        }
        None
    }

    fn rest(
        &mut self,
        each: &mut dyn FnMut(JobBrief) -> Result<(), RunError>,
    ) -> Result<(), RunError> {
        let layout = self.rebuilder.log.layout();
        for chosen in self.chosen.by_ref() {
            let place = chosen.place;
            let row = match self.at.row(place.offset, u64::from(place.line)) {
                Ok(row) => row,
                Err(e) => {
                    self.changed.borrow_mut().push(e.to_string());
                    continue;
                }
            };
            // As `JobBrief::of` gives the job rebuilt from it: its checked
            // id, the row's label, seed and parameter cells.
            let params = layout
                .params()
                .iter()
                .map(|name| (name.clone(), layout.param(&row, name).to_string()))
                .filter(|(_, cell)| !cell.is_empty())
                .collect();
            each(JobBrief {
                id: crate::ids::JobId::new(id_of(chosen.id)),
                label: layout.get(&row, "job").to_string(),
                seed: layout.get(&row, "seed").parse().ok(),
                params,
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_comes_back_from_its_key() {
        for id in ["0123456789abcdef", "0123456789ab", "fedcba9876543210"] {
            assert_eq!(id_of(job_key(id)), id);
        }
    }
}
