//! JUnit XML (through `quick-junit`, nextest's writer): a testsuite per
//! group, a testcase per job named by its label and the parameters that
//! vary within its group, `failure` with the one-line error for failed,
//! rejected and timed-out jobs, `skipped` for interrupted ones and for
//! those never run (with the reason); a run that could not start has a
//! testcase `run` with an `error` naming the cause.

use std::collections::BTreeMap;

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

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

fn case_name(job: &Finished, varying: &[String]) -> String {
    let parts: Vec<String> = varying
        .iter()
        .filter_map(|name| {
            let value = if name == "seed" {
                job.seed.map(|s| s.to_string())
            } else {
                job.params
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
            }?;
            Some(format!(
                "{name}={}",
                crate::text::clip(&crate::text::one_line(&value), 60)
            ))
        })
        .collect();
    if parts.is_empty() {
        job.label.clone()
    } else {
        format!("{} ({})", job.label, parts.join(", "))
    }
}

/// The report as XML text.
pub(super) fn render(seen: &Seen) -> String {
    let mut groups: BTreeMap<&str, Vec<&Finished>> = BTreeMap::new();
    for job in &seen.jobs {
        groups.entry(group_of(&job.label)).or_default().push(job);
    }
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
    for (group, mut jobs) in groups {
        jobs.sort_by(|a, b| {
            label_order(&a.label)
                .cmp(&label_order(&b.label))
                .then(a.id.cmp(&b.id))
        });
        let varying = varying(&jobs);
        let mut suite = TestSuite::new(group);
        suite.set_time(jobs.iter().map(|j| j.time).sum());
        for job in jobs {
            let message = job
                .error
                .clone()
                .unwrap_or_else(|| job.status.as_str().to_string());
            let status = match job.status {
                Status::Ok => TestCaseStatus::success(),
                _ if job.not_run => {
                    let mut s = TestCaseStatus::skipped();
                    s.set_message(message).set_type("not-run");
                    s
                }
                Status::Interrupted => {
                    let mut s = TestCaseStatus::skipped();
                    s.set_message(message).set_type("interrupted");
                    s
                }
                Status::Failed | Status::Rejected | Status::Timeout => {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    s.set_message(message.clone())
                        .set_type(job.status.as_str())
                        .set_description(message);
                    s
                }
            };
            let mut case = TestCase::new(case_name(job, &varying), status);
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
    report
        .to_string()
        .unwrap_or_else(|e| format!("<!-- comfy-batch: could not render JUnit: {e} -->\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
}
