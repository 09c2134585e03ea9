//! Stopping for good, and saying so: SIGTERM (`docker stop`, a deleted
//! pod, a cancelled CI job) ends a run within its bound with the log, the
//! JUnit file and the job summary written and nothing of ours left on the
//! servers; and the CI reports of a run that could not start, or stopped
//! early, list every job it did not run.

use std::time::{Duration, Instant};

use crate::ci_examples::cli_env;
use crate::faults::{config, long_jobs, nothing_of_ours_queued};
use crate::harness::{Project, Proxy, queue_ids, refusing_address, sim_with, wait_for};

/// Waits until one of our prompts runs on `sim`.
async fn one_of_ours_running(sim: &comfy_batch::sim::SimHandle) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (running, _) = queue_ids(sim).await;
        if running.iter().any(|id| id.starts_with("cb-")) {
            return;
        }
        assert!(Instant::now() < deadline, "nothing of ours started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_cleans_up_within_its_bound_writes_the_ci_reports_and_a_rerun_completes() {
    // 30 steps × 20 ms: the queued job waits behind the running one.
    let sim = sim_with(config(20)).await;
    let p = Project::new();
    p.write("jobs.yaml", long_jobs(8, 30));
    let summary = p.path("summary.md");
    let extra = ["--concurrency", "2", "--junit", "junit.xml"];
    let env = [
        ("GITHUB_STEP_SUMMARY", summary.to_str().unwrap()),
        ("GITHUB_ACTIONS", "true"),
    ];
    let mut run = p.spawn_env("jobs.yaml", &[sim.url()], &extra, "warn", &env);
    wait_for("a row", 60, || p.row_count() >= 1).await;
    one_of_ours_running(&sim).await;
    let begin = Instant::now();
    run.signal(libc::SIGTERM);
    assert_eq!(run.exit(30).await, 143, "{}", run.stderr());
    let took = begin.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}");
    nothing_of_ours_queued(&sim).await;

    let text = std::fs::read_to_string(p.out().join("runs.csv")).unwrap();
    assert!(text.ends_with('\n'), "{text}");
    let rows = p.rows();
    let ok = rows.iter().filter(|r| r.get("status") == "ok").count();
    assert!(rows.len() < 8, "stopped early: {text}");
    for row in &rows {
        assert!(
            ["ok", "interrupted"].contains(&row.get("status")),
            "{row:?}"
        );
    }
    // The running prompt was interrupted (not waited for); the queued one
    // removed unrun, or interrupted too should the server have started it
    // in between.
    assert!(
        rows.iter()
            .any(|r| r.get("error").starts_with("interrupted at node")),
        "{text}"
    );
    for row in rows.iter().filter(|r| r.get("status") == "interrupted") {
        let error = row.get("error");
        assert!(
            error == "not run: terminated" || error.starts_with("interrupted at node"),
            "{row:?}"
        );
    }

    let xml = std::fs::read_to_string(p.path("junit.xml")).unwrap();
    assert_eq!(xml.matches("<testcase ").count(), 8, "{xml}");
    assert_eq!(xml.matches("<skipped ").count(), 8 - ok, "{xml}");
    assert!(
        xml.contains(r#"message="not run: terminated" type="not-run""#),
        "{xml}"
    );
    let md = std::fs::read_to_string(&summary).unwrap();
    assert_eq!(
        md.matches("### comfy-batch").count(),
        1,
        "appended once: {md}"
    );
    assert!(md.contains("**stopped early: terminated; "), "{md}");
    let stderr = run.stderr();
    assert!(stderr.contains("terminated: no new jobs"), "{stderr}");
    assert!(
        stderr.contains(&format!("{} not run", 8 - rows.len())),
        "{stderr}"
    );

    let out = p.run("jobs.yaml", &[&sim], &["--concurrency", "2"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    p.assert_each_job_ok_once(8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_within_its_bound_when_the_server_answers_nothing() {
    // 200 steps × 20 ms: nothing ends by itself while the test runs.
    let sim = sim_with(config(20)).await;
    let proxy = Proxy::start(sim.addr()).await;
    let p = Project::new();
    p.write("jobs.yaml", long_jobs(4, 200));
    let extra = ["--concurrency", "2", "--junit", "junit.xml"];
    let mut run = p.spawn_env("jobs.yaml", &[proxy.url()], &extra, "warn", &[]);
    one_of_ours_running(&sim).await;
    // Accepts connections, answers nothing (no `/queue`, no `/interrupt`):
    // every cleanup request hangs.
    proxy.freeze();
    let begin = Instant::now();
    run.signal(libc::SIGTERM);
    assert_eq!(run.exit(30).await, 143, "{}", run.stderr());
    let took = begin.elapsed();
    // The 5 s bound, and a little for the reports and the exit.
    assert!(took < Duration::from_secs(7), "took {took:?}");
    assert!(took >= Duration::from_secs(5), "gave up early: {took:?}");
    let xml = std::fs::read_to_string(p.path("junit.xml")).unwrap();
    assert_eq!(xml.matches("<testcase ").count(), 4, "{xml}");
    assert_eq!(
        xml.matches("not run: terminated before its prompt could be removed")
            .count(),
        2,
        "the two in flight: {xml}"
    );
    assert_eq!(
        xml.matches(r#"message="not run: terminated" type="not-run""#)
            .count(),
        2,
        "the two never handed out: {xml}"
    );
    assert!(
        run.stderr().contains("report: not written"),
        "{}",
        run.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_reachable_server_writes_the_junit_the_summary_and_an_error() {
    let p = Project::new();
    p.write("jobs.yaml", long_jobs(3, 1));
    let (_hold, url) = refusing_address();
    // The preflight finds no server; without it the runner does.
    for check in [None, Some("--no-check")] {
        let summary = p.path("summary.md");
        let _ = std::fs::remove_file(&summary);
        let mut args = vec!["run", "jobs.yaml", "--server", &url, "--junit", "junit.xml"];
        args.extend(check);
        let env = [
            ("GITHUB_STEP_SUMMARY", summary.to_str().unwrap()),
            ("GITHUB_ACTIONS", "true"),
        ];
        let out = cli_env(&p, &args, &env).await;
        assert_eq!(out.code, 3, "{check:?}: {}", out.stderr);
        let xml = std::fs::read_to_string(p.path("junit.xml")).unwrap();
        assert_eq!(xml.matches("<testcase ").count(), 4, "{check:?}: {xml}");
        assert!(xml.contains(r#"<testcase name="run""#), "{xml}");
        assert_eq!(xml.matches("<error ").count(), 1, "{xml}");
        assert!(
            xml.contains(&url["http://".len()..]),
            "names the cause: {xml}"
        );
        assert_eq!(
            xml.matches(r#"message="not run: no server reachable" type="not-run""#)
                .count(),
            3,
            "{xml}"
        );
        let md = std::fs::read_to_string(&summary).unwrap();
        assert!(
            md.starts_with("### comfy-batch: no server reachable"),
            "{md}"
        );
        assert!(md.contains("**3 jobs not run**"), "{md}");
        let errors: Vec<&str> = out
            .stdout
            .lines()
            .filter(|l| l.starts_with("::error title=comfy-batch%3A no server reachable::"))
            .collect();
        assert_eq!(errors.len(), 1, "{check:?}: {}", out.stdout);
        std::fs::remove_file(p.path("junit.xml")).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_fast_lists_the_jobs_it_did_not_run_and_counts_them() {
    let sim = sim_with(config(2)).await;
    let p = Project::new();
    p.write(
        "ff.yaml",
        r#"version: 1
jobs:
  - name: escape
    workflow: tiny
    matrix:
      "1.color": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    set:
      "3.filename_prefix": "../escape"
"#,
    );
    let summary = p.path("summary.md");
    let url = sim.url();
    let args = [
        "run",
        "ff.yaml",
        "--server",
        &url,
        "--output",
        "out",
        "--fail-fast",
        "--concurrency",
        "1",
        "--junit",
        "junit.xml",
    ];
    let env = [("GITHUB_STEP_SUMMARY", summary.to_str().unwrap())];
    let out = cli_env(&p, &args, &env).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    let rows = p.rows();
    let not_run = 10 - rows.len();
    assert!(not_run > 0, "stopped early");
    assert!(
        out.stderr.contains(&format!(
            "done: 0 ok, {} not ok, 0 skipped, {not_run} not run",
            rows.len()
        )),
        "{}",
        out.stderr
    );
    let xml = std::fs::read_to_string(p.path("junit.xml")).unwrap();
    assert_eq!(xml.matches("<testcase ").count(), 10, "{xml}");
    assert_eq!(
        // The flag the user gave, not the limit it stands for.
        xml.matches(r#"message="not run: too many failures (--fail-fast)" type="not-run""#)
            .count(),
        not_run,
        "{xml}"
    );
    let md = std::fs::read_to_string(&summary).unwrap();
    assert!(
        md.contains(&format!(
            "**stopped early: --fail-fast; {not_run} not run**"
        )),
        "{md}"
    );
    // Jobs not run are not listed as failures to rerun one by one.
    assert_eq!(md.matches("--job ").count(), rows.len(), "{md}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_lost_mid_run_lists_the_jobs_it_did_not_run() {
    let sim = sim_with(config(15)).await;
    let p = Project::new();
    p.write("jobs.yaml", crate::harness::sampler_jobs(16));
    let extra = ["--server-lost-after", "1s", "--junit", "junit.xml"];
    let mut run = p.spawn_env("jobs.yaml", &[sim.url()], &extra, "warn", &[]);
    wait_for("3 rows", 60, || p.row_count() >= 3).await;
    sim.shutdown().await;
    assert_eq!(run.exit(60).await, 3, "{}", run.stderr());
    let rows = p.rows();
    let not_run = 16 - rows.len();
    assert!(not_run > 0, "stopped early");
    let stderr = run.stderr();
    assert!(stderr.contains(&format!("{not_run} not run")), "{stderr}");
    let xml = std::fs::read_to_string(p.path("junit.xml")).unwrap();
    assert_eq!(xml.matches("<testcase ").count(), 16, "{xml}");
    assert_eq!(
        xml.matches(r#"message="not run: no server left" type="not-run""#)
            .count(),
        not_run,
        "{xml}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_the_preflight_writes_the_ci_reports_and_queues_nothing() {
    // The server accepts connections and answers nothing: the preflight
    // waits on its catalogue when the CI job is cancelled.
    let sim = sim_with(config(1)).await;
    let proxy = Proxy::start(sim.addr()).await;
    proxy.freeze();
    let p = Project::new();
    p.write("jobs.yaml", long_jobs(3, 1));
    let summary = p.path("summary.md");
    let env = [
        ("GITHUB_STEP_SUMMARY", summary.to_str().unwrap()),
        ("GITHUB_ACTIONS", "true"),
    ];
    let extra = ["--junit", "junit.xml"];
    let mut run = p.spawn_env("jobs.yaml", &[proxy.url()], &extra, "warn", &env);
    wait_for("the preflight's request", 60, || proxy.connections() >= 1).await;
    let begin = Instant::now();
    run.signal(libc::SIGTERM);
    assert_eq!(run.exit(30).await, 143, "{}", run.stderr());
    assert!(
        begin.elapsed() < Duration::from_secs(5),
        "{:?}",
        begin.elapsed()
    );
    let xml = std::fs::read_to_string(p.path("junit.xml")).unwrap();
    assert_eq!(
        xml.matches(r#"message="not run: terminated" type="not-run""#)
            .count(),
        3,
        "{xml}"
    );
    let md = std::fs::read_to_string(&summary).unwrap();
    assert!(md.contains("3 not run"), "{md}");
    assert!(run.stderr().contains("terminated"), "{}", run.stderr());
    assert_eq!(sim.stats().prompts_executed, 0);
}

/// Issue #23 item 7: a job waiting for its retry when `--fail-fast` stops
/// the run failed (its attempts are rows): the CI reports list it as
/// failed with its last error, not as not run, and the headline counts
/// only jobs that failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_fast_reports_a_job_waiting_for_its_retry_as_failed() {
    let sim = sim_with(comfy_batch::sim::SimConfig {
        fail_rate: 1.0,
        ..config(2)
    })
    .await;
    let p = Project::new();
    p.write("ff.yaml", crate::harness::sampler_jobs(12));
    let summary = p.path("summary.md");
    let url = sim.url();
    let args = [
        "run",
        "ff.yaml",
        "--server",
        &url,
        "--output",
        "out",
        "--fail-fast",
        "--retries",
        "2",
        "--concurrency",
        "2",
        "--junit",
        "junit.xml",
    ];
    let env = [("GITHUB_STEP_SUMMARY", summary.to_str().unwrap())];
    let out = cli_env(&p, &args, &env).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    // Each job's newest row is what counts; a job with rows was run.
    let mut last: std::collections::BTreeMap<String, (u32, String)> = Default::default();
    for row in p.rows() {
        let (_, n) = row.get("prompt_id").rsplit_once('-').unwrap();
        let attempt: u32 = n.parse().unwrap();
        let entry = last.entry(row.get("job_id").to_string()).or_default();
        assert!(attempt > entry.0, "one row per attempt: {row:?}");
        *entry = (attempt, row.get("status").to_string());
    }
    let failed = last.values().filter(|(_, s)| s == "failed").count();
    assert!(failed > 0, "{last:?}");
    let xml = std::fs::read_to_string(p.path("junit.xml")).unwrap();
    assert_eq!(xml.matches("<testcase ").count(), 12, "{xml}");
    assert_eq!(
        xml.matches(r#"type="not-run""#).count(),
        12 - last.len(),
        "a job with rows is not listed as not run: {last:?}\n{xml}"
    );
    assert_eq!(
        xml.matches(r#"type="failed""#).count(),
        failed,
        "{last:?}\n{xml}"
    );
    let md = std::fs::read_to_string(&summary).unwrap();
    assert!(
        md.contains(&format!("### comfy-batch: {failed} of 12 jobs failed")),
        "{last:?}\n{md}"
    );
}

/// Issue #24: a SIGTERM on a large plan ends within the same bound. The
/// jobs never handed out are listed from the plan's rows (no prompt built
/// for them), the JUnit file is written beside the cleanup (our queued
/// prompts removed, the running one interrupted), which does not wait for
/// it. 20,000 jobs, in a debug build on the loaded 2-core machine: 1.2 s
/// now (50,000 took 15.3 s before, and 4–9 s now: too near the bound to
/// stay steady there); the release figures at 200,000 and 1M jobs are in
/// docs/ci.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_a_20k_job_plan_ends_within_its_bound_with_the_junit_complete() {
    const JOBS: usize = 20_000;
    // 200 steps × 20 ms: nothing ends by itself while the test runs.
    let sim = sim_with(config(20)).await;
    let p = Project::new();
    p.write(
        "jobs.yaml",
        format!(
            "version: 1\nworkflows:\n  t2i: workflows/t2i.json\njobs:\n  - name: fox\n    workflow: t2i\n    seeds: {{range: [1, {JOBS}]}}\n    set:\n      steps: 200\n"
        ),
    );
    let extra = [
        "--concurrency",
        "2",
        "--junit",
        "junit.xml",
        "--no-check",
        "--no-report",
    ];
    let mut run = p.spawn_env("jobs.yaml", &[sim.url()], &extra, "warn", &[]);
    one_of_ours_running(&sim).await;
    let begin = Instant::now();
    run.signal(libc::SIGTERM);
    assert_eq!(run.exit(60).await, 143, "{}", run.stderr());
    let took = begin.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}");
    nothing_of_ours_queued(&sim).await;
    // The running prompt was interrupted, not left to run.
    let rows = p.rows();
    assert!(
        rows.iter()
            .any(|r| r.get("error").starts_with("interrupted at node")),
        "{rows:?}"
    );
    let xml = std::fs::read_to_string(p.path("junit.xml")).unwrap();
    assert!(xml.trim_end().ends_with("</testsuites>"), "whole file");
    assert_eq!(xml.matches("<testcase ").count(), JOBS);
    assert_eq!(
        xml.matches(r#"message="not run: terminated" type="not-run""#)
            .count(),
        JOBS - rows.len(),
    );
}
