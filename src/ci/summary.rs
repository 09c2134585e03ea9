//! The GitHub job summary (Markdown appended to `GITHUB_STEP_SUMMARY`):
//! counts, jobs/s, each server's busy share, and a table of failures with
//! the `rerun` line for each; and the `::error` annotation of a failed job.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{Finished, Seen, label_order};
use crate::run::{CancelReason, Status};

/// At most this many failures are listed (GitHub caps a summary at 1 MiB).
const MAX_FAILURES: usize = 50;

/// A table cell: one line, no `|`, no formula should it be pasted into a
/// spreadsheet.
pub(crate) fn cell(text: &str) -> String {
    let line = crate::text::clip(&crate::text::one_line(text), 200);
    crate::text::defuse_formula(&line).replace('|', "\\|")
}

/// Shell-quotes a word when it needs it.
fn quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:=@%,".contains(c))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The command that runs one job again.
pub(super) fn rerun_line(log: &str, id: &str) -> String {
    format!("comfy-batch rerun {} --job {id}", quote(log))
}

/// The summary's Markdown.
pub(super) fn render(seen: &Seen, log: &str) -> String {
    let s = &seen.stats;
    let secs = seen.wall.as_secs_f64();
    let mut md = String::new();
    // The headline counts jobs that failed; one the run stopped
    // (interrupted) is not ok, yet did not fail.
    let failed = seen
        .jobs
        .iter()
        .filter(|j| {
            !j.not_run
                && matches!(
                    j.status,
                    Status::Failed | Status::Rejected | Status::Timeout
                )
        })
        .count();
    let title = if let Some(cause) = &seen.fatal {
        let _ = writeln!(md, "### comfy-batch: no server reachable\n");
        let _ = writeln!(md, "{}\n", cell(cause));
        let _ = writeln!(md, "**{} jobs not run**\n", s.not_run());
        return md;
    } else if failed == 0 {
        format!("{} of {} jobs ok", s.ok, s.total)
    } else {
        format!("{failed} of {} jobs failed", s.total)
    };
    let _ = writeln!(md, "### comfy-batch: {title}\n");
    let _ = writeln!(md, "| jobs | ok | not ok | skipped | wall | jobs/s |");
    let _ = writeln!(md, "| ---: | ---: | ---: | ---: | ---: | ---: |");
    let _ = writeln!(
        md,
        "| {} | {} | {} | {} | {:.1} s | {:.2} |\n",
        s.total,
        s.ok,
        s.failed,
        s.skipped,
        secs,
        if secs > 0.0 {
            s.done as f64 / secs
        } else {
            0.0
        }
    );
    if let Some(reason) = seen.cancelled {
        let why = match reason {
            CancelReason::FailFast => "stopped early: --fail-fast",
            CancelReason::MaxFailures => "stopped early: --max-failures reached",
            CancelReason::NoServers => "stopped early: no server left",
            CancelReason::Interrupt | CancelReason::SecondInterrupt => "stopped early: interrupted",
            CancelReason::Terminated => "stopped early: terminated",
        };
        match s.not_run() {
            0 => {
                let _ = writeln!(md, "**{why}**\n");
            }
            n => {
                let _ = writeln!(md, "**{why}; {n} not run**\n");
            }
        }
    }
    // Busy share: the time a server spent running our jobs over the wall,
    // jobs it held at once counted once (their union), at most the wall.
    let mut busy: BTreeMap<&str, (usize, Vec<super::Interval>)> = seen
        .servers
        .iter()
        .map(|s| (s.as_str(), (0, Vec::new())))
        .collect();
    for job in &seen.jobs {
        if let Some(server) = &job.server {
            let e = busy.entry(server.as_str()).or_default();
            e.0 += 1;
            if let Some(from) = job.started {
                let a = from
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64();
                e.1.push((a, a + job.time.as_secs_f64()));
            }
        }
    }
    if !busy.is_empty() {
        let _ = writeln!(md, "| server | jobs | busy |");
        let _ = writeln!(md, "| --- | ---: | ---: |");
        for (server, (jobs, runs)) in &mut busy {
            let share = if secs > 0.0 {
                100.0 * super::covered(runs).min(secs) / secs
            } else {
                0.0
            };
            let _ = writeln!(md, "| {} | {jobs} | {share:.0}% |", cell(server));
        }
        md.push('\n');
    }
    let mut failures: Vec<&Finished> = seen
        .jobs
        .iter()
        .filter(|j| j.status != Status::Ok && !j.not_run)
        .collect();
    failures.sort_by(|a, b| label_order(&a.label).cmp(&label_order(&b.label)));
    if !failures.is_empty() {
        let _ = writeln!(md, "#### Not ok\n");
        let _ = writeln!(md, "| job | status | error | rerun |");
        let _ = writeln!(md, "| --- | --- | --- | --- |");
        for job in failures.iter().take(MAX_FAILURES) {
            let _ = writeln!(
                md,
                "| {} | {} | {} | `{}` |",
                cell(&job.label),
                job.status.as_str(),
                cell(job.error.as_deref().unwrap_or("")),
                rerun_line(log, &job.id).replace('|', "\\|")
            );
        }
        if failures.len() > MAX_FAILURES {
            let _ = writeln!(md, "\n…and {} more.", failures.len() - MAX_FAILURES);
        }
        let mut statuses: Vec<&str> = failures.iter().map(|j| j.status.as_str()).collect();
        statuses.sort_unstable();
        statuses.dedup();
        let flags: Vec<String> = statuses.iter().map(|s| format!("--status {s}")).collect();
        let _ = writeln!(
            md,
            "\nAll of them: `comfy-batch rerun {} {}`",
            quote(log),
            flags.join(" ")
        );
        md.push('\n');
    }
    md
}

/// GitHub's escaping of a workflow command's message / property.
fn escape(text: &str, property: bool) -> String {
    let mut out = text
        .replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A");
    if property {
        out = out.replace(':', "%3A").replace(',', "%2C");
    }
    out
}

/// `::error title=…::…` for anything else.
pub(super) fn error_annotation(title: &str, message: &str) -> String {
    format!(
        "::error title={}::{}",
        escape(title, true),
        escape(message, false)
    )
}

/// `::error title=…::…` for a job that did not end ok.
pub(super) fn annotation(job: &Finished, log: &str) -> String {
    let title = format!("comfy-batch: {} {}", job.label, job.status.as_str());
    let message = format!(
        "{} (job {}; {})",
        job.error.as_deref().unwrap_or(job.status.as_str()),
        job.id,
        rerun_line(log, &job.id)
    );
    error_annotation(&title, &message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::RunStats;
    use std::time::{Duration, SystemTime};

    fn job(label: &str, server: &str, status: Status, error: Option<&str>) -> Finished {
        Finished {
            id: "00000000000000ab".into(),
            label: label.into(),
            seed: Some(1),
            params: vec![],
            status,
            error: error.map(str::to_string),
            server: Some(server.into()),
            started: Some(SystemTime::UNIX_EPOCH),
            time: Duration::from_secs(2),
            not_run: false,
        }
    }

    #[test]
    fn summary_has_counts_servers_and_failures_with_rerun_lines() {
        let seen = Seen {
            servers: vec!["http://a:8188".into(), "http://b:8188".into()],
            jobs: vec![
                job("fox#1", "http://a:8188", Status::Ok, None),
                job(
                    "fox#2",
                    "http://b:8188",
                    Status::Failed,
                    Some("a | pipe\nand a newline"),
                ),
                Finished {
                    started: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(2)),
                    ..job("fox#3", "http://a:8188", Status::Ok, None)
                },
            ],
            stats: RunStats {
                total: 3,
                done: 3,
                ok: 2,
                failed: 1,
                skipped: 4,
            },
            wall: Duration::from_secs(5),
            cancelled: Some(CancelReason::MaxFailures),
            fatal: None,
        };
        insta::assert_snapshot!(render(&seen, "out/my run/runs.csv"));
    }

    /// Jobs queued together on one server overlap: their union is the
    /// server's busy time, never the sum, and never more than the wall.
    #[test]
    fn busy_share_counts_overlapping_jobs_once_and_never_exceeds_the_wall() {
        let on = |label: &str, server: &str, from: u64, secs: u64| Finished {
            started: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(from)),
            time: Duration::from_secs(secs),
            ..job(label, server, Status::Ok, None)
        };
        let seen = |jobs: Vec<Finished>| Seen {
            servers: vec!["http://a".into()],
            stats: RunStats {
                total: jobs.len(),
                done: jobs.len(),
                ok: jobs.len(),
                ..RunStats::default()
            },
            jobs,
            wall: Duration::from_secs(5),
            cancelled: None,
            fatal: None,
        };
        let busy_line = |md: String| {
            md.lines()
                .find(|l| l.starts_with("| http://a |"))
                .map(str::to_string)
                .unwrap_or_default()
        };
        // 0–2 s and 1–3 s: busy 3 s of 5, not 4.
        let two = seen(vec![
            on("fox#1", "http://a", 0, 2),
            on("fox#2", "http://a", 1, 2),
        ]);
        assert_eq!(busy_line(render(&two, "r.csv")), "| http://a | 2 | 60% |");
        // Three at once for 4 s, then one sticking out past the wall's end
        // (clocks differ): all of the wall at most.
        let packed = seen(vec![
            on("fox#1", "http://a", 0, 4),
            on("fox#2", "http://a", 0, 4),
            on("fox#3", "http://a", 0, 4),
            on("fox#4", "http://a", 3, 4),
        ]);
        assert_eq!(
            busy_line(render(&packed, "r.csv")),
            "| http://a | 4 | 100% |"
        );
    }

    /// A table pasted into a spreadsheet must not run what a job's label,
    /// error or server holds: cells that would start a formula get a `'`.
    #[test]
    fn formula_looking_cells_are_neutralised() {
        let seen = Seen {
            servers: vec!["@http://a".into()],
            jobs: vec![
                job(
                    "=HYPERLINK(\"http://x\")#1",
                    "@http://a",
                    Status::Failed,
                    Some("+1+2"),
                ),
                job(
                    "-2#1",
                    "@http://a",
                    Status::Failed,
                    Some("\t=cmd|' /C calc'!A0"),
                ),
            ],
            stats: RunStats {
                total: 2,
                done: 2,
                failed: 2,
                ..RunStats::default()
            },
            wall: Duration::from_secs(5),
            cancelled: None,
            fatal: None,
        };
        let md = render(&seen, "r.csv");
        assert!(md.contains("| '@http://a | 2 |"), "{md}");
        assert!(
            md.contains("| '=HYPERLINK(\"http://x\")#1 | failed | '+1+2 |"),
            "{md}"
        );
        assert!(
            md.contains("| '-2#1 | failed | '=cmd\\|' /C calc'!A0 |"),
            "{md}"
        );
        // Text that only contains such characters is left as it is.
        assert_eq!(cell("a-b = c"), "a-b = c");
    }

    #[test]
    fn annotations_escape_newlines_and_percent() {
        let j = job(
            "fox#2",
            "http://b",
            Status::Timeout,
            Some("100% done\nthen: stuck"),
        );
        assert_eq!(
            annotation(&j, "out/runs.csv"),
            "::error title=comfy-batch%3A fox#2 timeout::100%25 done%0Athen: stuck (job 00000000000000ab; comfy-batch rerun out/runs.csv --job 00000000000000ab)"
        );
    }
}
