//! The live HTML report of `run` / `rerun`: a consumer of the run's events,
//! like the progress reporters beside it, that refreshes
//! `report/index.html` from a background thread at most every
//! [`REFRESH_EVERY`] while the run goes on, then writes the final page and
//! the manifest's `grids:` images when it ends. The pages themselves are
//! `gallery`'s, the grid images `grid`'s; this knows only when to write them.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::gallery::{self, GridView, InProgress, ReportOptions};
use crate::grid::{self, GridRequest};
use crate::manifest::{GridSpec, Manifest};
use crate::run::{EventKind, RunEvent};

/// The shortest time between two refreshes during a run.
pub const REFRESH_EVERY: Duration = Duration::from_secs(10);

/// The grid a manifest entry asks for.
fn request(g: &GridSpec) -> GridRequest {
    GridRequest {
        x: g.x.clone(),
        y: g.y.clone(),
        page: g.page.clone(),
        r#where: g.r#where.clone(),
        group: g.group.clone(),
        cell: None,
    }
}

fn view(g: &GridSpec) -> GridView {
    GridView {
        name: g.name.clone(),
        x: g.x.clone(),
        y: g.y.clone(),
        page: g.page.clone(),
        r#where: g.r#where.clone(),
        group: g.group.clone(),
    }
}

/// Checks the manifest's `grids:` against the run's columns before
/// anything runs: every axis and `where` name must be a parameter, `seed`
/// or `group`. One line per problem, `file:line:col: …`.
pub fn check_grids(manifest: &Manifest, columns: &[String]) -> Result<(), Vec<String>> {
    let mut names = vec![gallery::folder::SEED.to_string()];
    names.extend(columns.iter().cloned());
    names.push(gallery::folder::GROUP.to_string());
    let mut lines = Vec::new();
    for g in &manifest.grids {
        let at = |key: &str| {
            g.key_at
                .iter()
                .find(|(k, _)| k == key)
                .map_or(g.at, |(_, s)| *s)
        };
        let mut keys: Vec<(String, &str)> = vec![("x".into(), &g.x), ("y".into(), &g.y)];
        if let Some(p) = &g.page {
            keys.push(("page".into(), p));
        }
        for (k, _) in &g.r#where {
            keys.push((format!("where.{k}"), k));
        }
        for (key, name) in keys {
            // Checked one name at a time, so each error names its own line.
            if let Err(e) = grid::check_name(&names, &format!("grids: '{}' {key}", g.name), name) {
                let span = at(&key);
                lines.push(format!(
                    "{}:{}:{}: {e}",
                    manifest.path.display(),
                    span.line,
                    span.col
                ));
            }
        }
        let axes = [Some(&g.x), Some(&g.y), g.page.as_ref()];
        for (i, a) in axes.iter().enumerate() {
            if let Some(a) = a
                && axes[i + 1..].iter().any(|b| b.is_some_and(|b| b == *a))
            {
                lines.push(format!(
                    "{}:{}:{}: grids: '{}': '{a}' is on two axes",
                    manifest.path.display(),
                    g.at.line,
                    g.at.col,
                    g.name
                ));
            }
        }
    }
    if lines.is_empty() { Ok(()) } else { Err(lines) }
}

/// What `run`/`rerun` hand the report hook: the manifest's grids (`None`
/// for `rerun`, which keeps the ones a run saved).
pub struct ReportPlan {
    /// The grids to draw at the end.
    pub grids: Option<Vec<GridSpec>>,
    /// Say nothing but problems (`-q`).
    pub quiet: bool,
}

enum Tick {
    Progress(InProgress),
}

/// The report hook while a run goes on.
pub struct LiveReport {
    root: PathBuf,
    grids: Vec<GridSpec>,
    quiet: bool,
    total: usize,
    done: usize,
    tx: Option<mpsc::Sender<Tick>>,
    thread: Option<JoinHandle<()>>,
}

fn stamp(now: SystemTime) -> String {
    let text = humantime::format_rfc3339_seconds(now).to_string();
    text.get(11..19).unwrap_or(&text).to_string()
}

/// Says a refresh's problem once, not at every refresh while it lasts (a
/// report folder made unwritable would else print a line every
/// [`REFRESH_EVERY`] for the rest of a long run).
#[derive(Default)]
struct Once(Option<String>);

impl Once {
    /// Whether `problem` is new (then it is remembered); `None` when a
    /// refresh went well, so that the next problem is said again.
    fn is_new(&mut self, problem: Option<String>) -> bool {
        let new = problem.is_some() && problem != self.0;
        self.0 = problem;
        new
    }
}

fn refresher(root: PathBuf, rx: mpsc::Receiver<Tick>, quiet: bool) {
    let mut last: Option<Instant> = None;
    let mut said = Once::default();
    while let Ok(Tick::Progress(mut p)) = rx.recv() {
        // Wait out the rest of the interval asleep, not in `recv`: the ticks
        // of the jobs ending meanwhile queue up without waking this thread
        // (one wake-up per job cost the runner a context switch each).
        // `finish` wakes it when the run ends.
        if let Some(at) = last {
            let until = at + REFRESH_EVERY;
            loop {
                // Checked before each sleep, not only after: the wake-up
                // `finish` sends may have been taken by another park of
                // this thread (the last refresh, the `recv` above) once
                // the run was over.
                if newest(&rx, &mut p).is_err() {
                    // The run ended: the final page is written by `finish`.
                    return;
                }
                let now = Instant::now();
                if now >= until {
                    break;
                }
                std::thread::park_timeout(until - now);
            }
        }
        if newest(&rx, &mut p).is_err() {
            return;
        }
        let options = ReportOptions {
            in_progress: Some(p),
            stamp: Some(stamp(SystemTime::now())),
        };
        let problem = gallery::write_report(&root, &options)
            .err()
            .map(|e| e.to_string());
        let new = said.is_new(problem.clone());
        if let Some(text) = problem
            && new
            && !quiet
        {
            // Worded as `finish` words its own.
            eprintln!("warning: report: {text}");
        }
        last = Some(Instant::now());
    }
}

/// Takes every tick waiting, keeping the newest progress in `p`; `Err`
/// once the run has ended (the sender is gone).
fn newest(rx: &mpsc::Receiver<Tick>, p: &mut InProgress) -> Result<(), ()> {
    loop {
        match rx.try_recv() {
            Ok(Tick::Progress(q)) => *p = q,
            Err(mpsc::TryRecvError::Empty) => return Ok(()),
            Err(mpsc::TryRecvError::Disconnected) => return Err(()),
        }
    }
}

impl ReportPlan {
    /// Starts the hook for the output folder `root`.
    pub fn start(self, root: &Path) -> LiveReport {
        if let Some(grids) = &self.grids {
            let views: Vec<GridView> = grids.iter().map(view).collect();
            if let Err(e) = gallery::save_grids(root, &views) {
                eprintln!("warning: report: {e}");
            }
        }
        let (tx, rx) = mpsc::channel();
        let dir = root.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("report".into())
            .spawn({
                let quiet = self.quiet;
                move || refresher(dir, rx, quiet)
            })
            .ok();
        LiveReport {
            root: root.to_path_buf(),
            grids: self.grids.unwrap_or_default(),
            quiet: self.quiet,
            total: 0,
            done: 0,
            tx: Some(tx),
            thread,
        }
    }
}

impl LiveReport {
    /// Takes one run event; a job's end (or the start) asks for a refresh.
    pub fn on_event(&mut self, event: &RunEvent) {
        match &event.kind {
            EventKind::RunStarted { total, .. } => self.total = *total,
            EventKind::JobFinished { .. } => self.done += 1,
            _ => return,
        }
        if let Some(tx) = &self.tx {
            let _ = tx.send(Tick::Progress(InProgress {
                done: self.done,
                total: self.total,
            }));
        }
    }

    /// Stops the refresher, writes the final page and the grids. Problems
    /// are warnings: the run's outcome is already decided.
    pub fn finish(mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            // It may be asleep until its next refresh.
            t.thread().unpark();
            let _ = t.join();
        }
        match gallery::write_report(&self.root, &ReportOptions::default()) {
            Ok(s) if !self.quiet => eprintln!("report: {}", s.index.display()),
            Ok(_) => {}
            Err(e) => eprintln!("warning: report: {e}"),
        }
        if self.grids.is_empty() {
            return;
        }
        if let Err(e) = gallery::FolderLog::open(&self.root) {
            eprintln!("warning: grids: {e}");
            return;
        }
        if let Err(e) = gallery::check_report_dir(&self.root) {
            eprintln!("warning: grids: {e}");
            return;
        }
        let dir = gallery::report_dir(&self.root).join("grids");
        for g in &self.grids {
            let base = dir.join(format!("{}.png", g.name));
            match grid::write_folder(&self.root, &request(g), &base) {
                Ok(grid) if !self.quiet => {
                    for p in grid.files {
                        eprintln!("grid: {}", p.display());
                    }
                }
                Ok(_) => {}
                Err(e) => eprintln!("warning: grid '{}': {e}", g.name),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_bad_grid_name_and_axis_is_its_own_line_at_its_key() {
        let text = "version: 1\njobs:\n  - workflow: t2i\n    matrix:\n      cfg: [5, 6]\n\
                    grids:\n  - name: g\n    x: cgf\n    y: cfg\n    page: cfg\n";
        let manifest = Manifest::parse(Path::new("m.yaml"), text).unwrap();
        let lines = check_grids(&manifest, &["cfg".to_string()]).unwrap_err();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].starts_with("m.yaml:8:5: grids: 'g' x: 'cgf' is not a parameter"),
            "{lines:?}"
        );
        assert_eq!(lines[1], "m.yaml:7:9: grids: 'g': 'cfg' is on two axes");
        let good = "version: 1\njobs:\n  - workflow: t2i\n    matrix:\n      cfg: [5, 6]\n\
                    grids:\n  - name: g\n    x: cfg\n    y: seed\n";
        let manifest = Manifest::parse(Path::new("m.yaml"), good).unwrap();
        assert_eq!(check_grids(&manifest, &["cfg".to_string()]), Ok(()));
    }

    #[test]
    fn a_refresh_problem_is_said_once_while_it_lasts_and_again_after_a_good_refresh() {
        let mut said = Once::default();
        let gone = || Some("report/index.html: Not a directory".to_string());
        assert!(said.is_new(gone()));
        assert!(!said.is_new(gone()));
        assert!(!said.is_new(gone()));
        assert!(said.is_new(Some("another problem".into())));
        assert!(!said.is_new(None));
        assert!(said.is_new(gone()));
    }
}
