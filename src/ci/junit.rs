//! JUnit XML, written as `quick-junit` (nextest's writer) writes it, and
//! straight to the file a few testcases at a time (a million jobs' XML is
//! never held whole): a testsuite per group, a testcase per job
//! named by its label and the parameters that vary within its group,
//! `failure` with the one-line error for failed, rejected and timed-out
//! jobs, `skipped` for interrupted ones and for those never run (with the
//! reason); a run that could not start has a testcase `run` with an
//! `error` naming the cause. Not through `quick-junit`'s report: building
//! it cost a few objects and a terminal-escape scan per string, seconds
//! for the million jobs a terminated run must list within its bound.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::{Finished, Seen, group_of, label_order};
use crate::run::Status;

/// The names whose values differ between the jobs of one group (seed
/// included), in parameter order.
fn varying(jobs: &[&Finished]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    if let Some(first) = jobs.first() {
        for (name, value) in &first.params {
            let differs = jobs
                .iter()
                .any(|j| j.params.iter().find(|(n, _)| n == name).map(|(_, v)| v) != Some(value));
            if differs {
                names.push(name.clone());
            }
        }
        if jobs.iter().any(|j| j.seed != first.seed) {
            names.push("seed".into());
        }
    }
    names
}

/// Appends the testcase name of `job`: its label, then the `varying`
/// parameters' values (`fox#3 (cfg=7, seed=2)`).
fn case_name(out: &mut String, job: &Finished, varying: &[String]) {
    out.push_str(&job.label);
    let mut first = true;
    for name in varying {
        let value = if name == "seed" {
            job.seed.map(|s| s.to_string())
        } else {
            job.params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let Some(value) = value else { continue };
        out.push_str(if first { " (" } else { ", " });
        first = false;
        let _ = write!(
            out,
            "{name}={}",
            crate::text::clip(&crate::text::one_line(&value), 60)
        );
    }
    if !first {
        out.push(')');
    }
}

/// A testcase's status element: its tag, message, type, and the text
/// inside it (none: an empty element).
struct Verdict<'a> {
    tag: &'static str,
    message: &'a str,
    kind: &'a str,
    text: Option<&'a str>,
}

/// The verdict of `job`, `None` for one that passed.
fn verdict(job: &Finished) -> Option<Verdict<'_>> {
    let message = job.error.as_deref().unwrap_or(job.status.as_str());
    let skipped = |kind| {
        Some(Verdict {
            tag: "skipped",
            message,
            kind,
            text: None,
        })
    };
    match job.status {
        Status::Ok => None,
        _ if job.not_run => skipped("not-run"),
        Status::Interrupted => skipped("interrupted"),
        Status::Failed | Status::Rejected | Status::Timeout => Some(Verdict {
            tag: "failure",
            message,
            kind: job.status.as_str(),
            text: Some(message),
        }),
    }
}

/// Appends `text` escaped for XML (`&<>'"`, as `quick-xml` does), without
/// what XML cannot hold: terminal escapes and control characters other
/// than tab and line breaks (as `quick-junit`'s strings drop them).
fn escaped(out: &mut String, text: &str) {
    // Almost every value is plain: checked before anything is copied.
    let plain = !text.chars().any(|c| {
        (c < ' ' && !matches!(c, '\t' | '\n' | '\r'))
            || ('\u{7f}'..='\u{9f}').contains(&c)
            || matches!(c, '<' | '>' | '&' | '\'' | '"')
    });
    if plain {
        out.push_str(text);
        return;
    }
    let clean = quick_junit::XmlString::new(text);
    for c in clean.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
}

/// Appends ` name="value"`, the value escaped.
fn attribute(out: &mut String, name: &str, value: &str) {
    out.push(' ');
    out.push_str(name);
    out.push_str("=\"");
    escaped(out, value);
    out.push('"');
}

/// Appends ` time="seconds"` as `quick-junit` writes it (milliseconds).
fn time(out: &mut String, time: Duration) {
    let _ = write!(out, " time=\"{:.3}\"", time.as_secs_f64());
}

/// Counts of a suite or of the whole report.
#[derive(Default, Clone, Copy)]
struct Counts {
    tests: usize,
    skipped: usize,
    failures: usize,
    errors: usize,
}

impl Counts {
    fn of<'a>(jobs: impl Iterator<Item = &'a Finished>) -> Counts {
        let mut counts = Counts::default();
        for job in jobs {
            counts.tests += 1;
            match verdict(job).map(|v| v.tag) {
                Some("skipped") => counts.skipped += 1,
                Some(_) => counts.failures += 1,
                None => {}
            }
        }
        counts
    }
}

/// Bytes of XML gathered before they are written out.
const CHUNK: usize = 64 * 1024;

/// Writes the report as XML text to `to`, in chunks of about [`CHUNK`]
/// bytes (so `to` needs no buffer of its own).
pub(super) fn write(seen: &Seen, to: &mut dyn std::io::Write) -> std::io::Result<()> {
    let mut groups: BTreeMap<&str, Vec<&Finished>> = BTreeMap::new();
    for job in &seen.jobs {
        groups.entry(group_of(&job.label)).or_default().push(job);
    }
    let mut total = Counts::of(seen.jobs.iter());
    if seen.fatal.is_some() {
        total.tests += 1;
        total.errors += 1;
    }
    let mut out = String::with_capacity(CHUNK + 4096);
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites");
    attribute(&mut out, "name", "comfy-batch");
    let _ = write!(
        out,
        " tests=\"{}\" skipped=\"{}\" failures=\"{}\" errors=\"{}\"",
        total.tests, total.skipped, total.failures, total.errors
    );
    time(&mut out, seen.wall);
    out.push_str(">\n");
    if let Some(cause) = &seen.fatal {
        out.push_str("    <testsuite name=\"comfy-batch\" tests=\"1\" skipped=\"0\" errors=\"1\" failures=\"0\">\n");
        out.push_str(
            "        <testcase name=\"run\" classname=\"comfy-batch\">\n            <error",
        );
        attribute(&mut out, "message", cause);
        out.push_str(" type=\"no-server\"/>\n        </testcase>\n    </testsuite>\n");
    }
    let mut name = String::new();
    for (group, mut jobs) in groups {
        // Keys parsed once a job, not once a comparison.
        jobs.sort_by_cached_key(|j| (label_order(&j.label), j.id.as_str()));
        let varying = varying(&jobs);
        let counts = Counts::of(jobs.iter().copied());
        out.push_str("    <testsuite");
        attribute(&mut out, "name", group);
        let _ = write!(
            out,
            " tests=\"{}\" skipped=\"{}\" errors=\"{}\" failures=\"{}\"",
            counts.tests, counts.skipped, counts.errors, counts.failures
        );
        time(&mut out, jobs.iter().map(|j| j.time).sum());
        out.push_str(">\n");
        for job in jobs {
            name.clear();
            case_name(&mut name, job, &varying);
            out.push_str("        <testcase");
            attribute(&mut out, "name", &name);
            attribute(&mut out, "classname", group);
            time(&mut out, job.time);
            out.push_str(">\n");
            if let Some(v) = verdict(job) {
                let _ = write!(out, "            <{}", v.tag);
                attribute(&mut out, "message", v.message);
                attribute(&mut out, "type", v.kind);
                match v.text {
                    Some(text) => {
                        out.push('>');
                        escaped(&mut out, text);
                        let _ = writeln!(out, "</{}>", v.tag);
                    }
                    None => out.push_str("/>\n"),
                }
            }
            out.push_str("            <system-out>job_id: ");
            escaped(&mut out, &job.id);
            out.push('\n');
            if let Some(server) = &job.server {
                out.push_str("server: ");
                escaped(&mut out, server);
                out.push('\n');
            }
            out.push_str("</system-out>\n        </testcase>\n");
            if out.len() >= CHUNK {
                to.write_all(out.as_bytes())?;
                out.clear();
            }
        }
        out.push_str("    </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    to.write_all(out.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The report as XML text.
    fn render(seen: &Seen) -> String {
        let mut out = Vec::new();
        write(seen, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn job(label: &str, cfg: &str, seed: u64, status: Status, error: Option<&str>) -> Finished {
        Finished {
            id: format!("{:016x}", seed),
            label: label.into(),
            seed: Some(seed),
            params: vec![
                ("prompt".into(), "a fox".into()),
                ("cfg".into(), cfg.into()),
            ],
            status,
            error: error.map(str::to_string),
            server: Some("http://127.0.0.1:8188".into()),
            started: None,
            time: Duration::from_millis(1500),
            not_run: false,
        }
    }

    #[test]
    fn suites_per_group_cases_named_by_varying_parameters() {
        let seen = Seen {
            servers: vec![],
            jobs: vec![
                job(
                    "fox#2",
                    "7",
                    2,
                    Status::Failed,
                    Some("KSampler: out of memory & <stuff>"),
                ),
                job("fox#1", "5", 1, Status::Ok, None),
                job("owl#1", "5", 3, Status::Interrupted, None),
                job(
                    "fox#3",
                    "7",
                    3,
                    Status::Timeout,
                    Some("no result after 90s"),
                ),
            ],
            stats: Default::default(),
            wall: Duration::from_secs(4),
            cancelled: None,
            fatal: None,
        };
        insta::assert_snapshot!(render(&seen));
    }

    /// The same report built with `quick-junit`, the writer this one
    /// writes as.
    fn through_quick_junit(seen: &Seen) -> String {
        use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
        let mut report = Report::new("comfy-batch");
        report.set_time(seen.wall);
        if let Some(cause) = &seen.fatal {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
            status.set_message(cause.clone()).set_type("no-server");
            let mut case = TestCase::new("run", status);
            case.set_classname("comfy-batch");
            let mut suite = TestSuite::new("comfy-batch");
            suite.add_test_case(case);
            report.add_test_suite(suite);
        }
        let mut groups: BTreeMap<&str, Vec<&Finished>> = BTreeMap::new();
        for job in &seen.jobs {
            groups.entry(group_of(&job.label)).or_default().push(job);
        }
        for (group, mut jobs) in groups {
            jobs.sort_by(|a, b| label_order(&a.label).cmp(&label_order(&b.label)));
            let varying = varying(&jobs);
            let mut suite = TestSuite::new(group);
            suite.set_time(jobs.iter().map(|j| j.time).sum());
            for job in jobs {
                let status = match verdict(job) {
                    None => TestCaseStatus::success(),
                    Some(v) if v.tag == "skipped" => {
                        let mut s = TestCaseStatus::skipped();
                        s.set_message(v.message).set_type(v.kind);
                        s
                    }
                    Some(v) => {
                        let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                        s.set_message(v.message)
                            .set_type(v.kind)
                            .set_description(v.message);
                        s
                    }
                };
                let mut name = String::new();
                case_name(&mut name, job, &varying);
                let mut case = TestCase::new(name, status);
                case.set_classname(group).set_time(job.time);
                let mut out = format!("job_id: {}\n", job.id);
                if let Some(server) = &job.server {
                    out.push_str(&format!("server: {server}\n"));
                }
                case.set_system_out(out);
                suite.add_test_case(case);
            }
            report.add_test_suite(suite);
        }
        report.to_string().unwrap()
    }

    #[test]
    fn hostile_values_are_written_as_quick_junit_writes_them() {
        let hostile = "a \"b\" 'c' <d> & \u{1b}[31mred\u{1b}[0m\u{7}\u{0}\u{9b}e\tf";
        let mut odd = job("fox#2", hostile, 2, Status::Failed, Some(hostile));
        odd.server = Some(format!("http://h/{hostile}"));
        let mut not_run = job(
            "fox#3",
            "7",
            3,
            Status::Interrupted,
            Some("not run: terminated"),
        );
        not_run.not_run = true;
        not_run.server = None;
        let seen = Seen {
            servers: vec![],
            jobs: vec![
                odd,
                not_run,
                job("fox#1", "5", 1, Status::Ok, None),
                job("<owl>&#1", "5", 4, Status::Rejected, Some("bad \"input\"")),
                job("owl#1", "5", 5, Status::Interrupted, None),
            ],
            stats: Default::default(),
            wall: Duration::from_millis(4321),
            cancelled: None,
            fatal: Some("127.0.0.1:1 refused & <gone>".into()),
        };
        let ours = render(&seen);
        assert_eq!(ours, through_quick_junit(&seen));
        let back = quick_junit::Report::deserialize_from_str(&ours).unwrap();
        assert_eq!(
            (back.tests, back.failures, back.errors, back.skipped),
            (6, 2, 1, 2)
        );
    }

    #[test]
    fn the_xml_is_written_a_chunk_at_a_time_never_whole() {
        /// Records the largest single write and keeps every byte.
        #[derive(Default)]
        struct Writes {
            bytes: Vec<u8>,
            largest: usize,
        }
        impl std::io::Write for Writes {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.largest = self.largest.max(buf.len());
                self.bytes.extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let jobs: Vec<Finished> = (0..5_000)
            .map(|i| job(&format!("fox#{}", i + 1), "7", i, Status::Ok, None))
            .collect();
        let seen = Seen {
            servers: vec![],
            jobs,
            stats: Default::default(),
            wall: Duration::from_secs(4),
            cancelled: None,
            fatal: None,
        };
        let mut writes = Writes::default();
        write(&seen, &mut writes).unwrap();
        assert!(writes.bytes.len() > 10 * CHUNK, "{}", writes.bytes.len());
        assert!(
            writes.largest < CHUNK + 4096,
            "one write of {}",
            writes.largest
        );
        assert_eq!(
            String::from_utf8(writes.bytes).unwrap(),
            through_quick_junit(&seen)
        );
    }
}
