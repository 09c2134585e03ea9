//! Injected faults: every behaviour of issue #5 against the simulator's
//! faults, with the real binary over loopback. Each test checks what the
//! log and the output folder hold afterwards, and what is left on the
//! server's queue.

use std::collections::BTreeSet;
use std::time::Duration;

use comfy_batch::sim::{Sim, SimConfig, SimHandle};
use serde_json::{Value, json};

use crate::harness::{
    Project, Proxy, get_json, queue_ids, sampler_jobs, sim_file, sim_with, wait_for,
};

/// `n` sampler jobs of `steps` steps each (each takes `steps × step_ms`).
pub(crate) fn long_jobs(n: usize, steps: u32) -> String {
    format!("{}    set:\n      steps: {steps}\n", sampler_jobs(n))
}

pub(crate) fn config(step_ms: u64) -> SimConfig {
    SimConfig {
        step_ms,
        ..SimConfig::default()
    }
}

/// Asserts no prompt of ours is running or waiting on `sim`.
pub(crate) async fn nothing_of_ours_queued(sim: &SimHandle) {
    let (running, pending) = queue_ids(sim).await;
    let ours: Vec<_> = running
        .iter()
        .chain(&pending)
        .filter(|id| id.starts_with("cb-"))
        .collect();
    assert!(ours.is_empty(), "still on the server: {ours:?}");
}

/// The sim's history entry for a prompt id, if any.
async fn history(sim: &SimHandle, prompt_id: &str) -> Option<Value> {
    let mut all = get_json(&format!("{}/history/{prompt_id}", sim.url())).await;
    all.as_object_mut().unwrap().remove(prompt_id)
}

/// Queues a prompt of someone else's (a long t2i run) so ours must wait.
async fn foreign_blocker(sim: &SimHandle, steps: u32) -> String {
    let mut prompt: Value = serde_json::from_str(include_str!("../fixtures/run/t2i.json")).unwrap();
    prompt["3"]["inputs"]["steps"] = json!(steps);
    let reply: Value = reqwest::Client::new()
        .post(format!("{}/prompt", sim.url()))
        .json(&json!({"prompt": prompt, "client_id": "someone-else"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    reply["prompt_id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_drops_lose_nothing_and_run_nothing_twice() {
    // Every socket closes after 20 messages: several drops per job.
    let sim = sim_with(SimConfig {
        step_ms: 5,
        drop_ws_every: Some(20),
        ..SimConfig::default()
    })
    .await;
    let p = Project::new();
    p.write("jobs.yaml", sampler_jobs(16));
    let out = p.run("jobs.yaml", &[&sim], &["--concurrency", "3"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows = p.assert_each_job_ok_once(16);
    assert_eq!(rows.len(), p.rows().len(), "one row per job");
    for row in &rows {
        let ours = std::fs::read(p.out().join(&row.images()[0])).unwrap();
        assert_eq!(
            ours,
            std::fs::read(sim_file(&sim, row.get("job_id"), 1)).unwrap()
        );
    }
    // Reconciled through /history and /queue, never posted twice.
    assert_eq!(sim.stats().prompts_executed, 16);
    nothing_of_ours_queued(&sim).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_gets_the_forgotten_jobs_again() {
    // Every 5 prompts the server "crashes": queue, history and sockets gone.
    let sim = sim_with(SimConfig {
        step_ms: 5,
        restart_after: Some(5),
        ..SimConfig::default()
    })
    .await;
    let p = Project::new();
    p.write("jobs.yaml", sampler_jobs(16));
    let out = p.run("jobs.yaml", &[&sim], &["--concurrency", "3"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows = p.assert_each_job_ok_once(16);
    assert_eq!(rows.len(), p.rows().len(), "one row per job");
    assert!(sim.stats().prompts_executed >= 16);
    nothing_of_ours_queued(&sim).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_500s_are_retried_with_backoff() {
    let sim = sim_with(SimConfig {
        step_ms: 2,
        http_500_rate: 0.25,
        seed: 7,
        ..SimConfig::default()
    })
    .await;
    let p = Project::new();
    p.write("jobs.yaml", sampler_jobs(12));
    let out = p.run("jobs.yaml", &[&sim], &["--no-check"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    p.assert_each_job_ok_once(12);
    assert_eq!(p.rows().len(), 12);
    // A 500 on POST /prompt is answered before queueing, and a lookup
    // precedes every re-post: each prompt ran once.
    assert_eq!(sim.stats().prompts_executed, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_refusing_connections_for_a_while_then_back_empty() {
    // The server goes away (connections refused) and comes back on the same
    // port with an empty queue and history, as after a crash and restart.
    let dir = tempfile::tempdir().unwrap();
    let cfg = SimConfig {
        step_ms: 10,
        dir: Some(dir.path().to_path_buf()),
        ..SimConfig::default()
    };
    let first = sim_with(cfg.clone()).await;
    let addr = first.addr();
    let p = Project::new();
    p.write("jobs.yaml", sampler_jobs(10));
    let mut run = p.spawn("jobs.yaml", &[&first], &["--server-lost-after", "60s"]);
    wait_for("3 rows", 60, || p.row_count() >= 3).await;
    first.shutdown().await;
    // Refused meanwhile: the port stays bound (never listening) so that no
    // other test's server can be given it before ours is back.
    let hold = tokio::net::TcpSocket::new_v4()
        .ok()
        .filter(|s| s.set_reuseaddr(true).is_ok() && s.bind(addr).is_ok());
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(hold);
    let second = Sim::start(cfg, addr).await.expect("the same port again");
    assert_eq!(run.exit(60).await, 0, "{}", run.stderr());
    p.assert_each_job_ok_once(10);
    nothing_of_ours_queued(&second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execution_failures_are_final_without_retries() {
    let sim = sim_with(SimConfig {
        step_ms: 1,
        fail_rate: 0.4,
        seed: 3,
        ..SimConfig::default()
    })
    .await;
    let p = Project::new();
    p.write("jobs.yaml", sampler_jobs(12));
    let out = p.run("jobs.yaml", &[&sim], &[]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    let rows = p.rows();
    assert_eq!(rows.len(), 12, "one row per job");
    let failed = rows.iter().filter(|r| r.get("status") == "failed").count();
    assert!(failed > 0, "some failed");
    for row in rows.iter().filter(|r| r.get("status") == "failed") {
        assert!(!row.get("error").is_empty(), "{row:?}");
        assert!(row.get("prompt_id").ends_with("-1"), "not retried: {row:?}");
    }
    // A rerun (resume) retries just those, as new attempts.
    let again = p.run("jobs.yaml", &[&sim], &["--retries", "10"]).await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    p.assert_each_job_ok_once(12);
}

/// `runs.csv` has one row per attempt outcome (README.md): a failed attempt
/// that is retried is logged too, under its own prompt id, and the job's
/// newest row, the retry that worked, is the one that counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_log_every_attempt_and_the_newest_counts() {
    let sim = sim_with(SimConfig {
        step_ms: 1,
        fail_rate: 0.4,
        seed: 3,
        ..SimConfig::default()
    })
    .await;
    let p = Project::new();
    p.write("jobs.yaml", sampler_jobs(12));
    let out = p.run("jobs.yaml", &[&sim], &["--retries", "10"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let newest = p.assert_each_job_ok_once(12);
    let rows = p.rows();
    assert!(rows.len() > 12, "failed attempts are logged");
    for row in rows.iter().filter(|r| r.get("status") != "ok") {
        assert_eq!(row.get("status"), "failed", "{row:?}");
        assert!(!row.get("error").is_empty());
    }
    let ids: std::collections::BTreeSet<_> = rows.iter().map(|r| r.get("prompt_id")).collect();
    assert_eq!(ids.len(), rows.len(), "every attempt has its own prompt id");
    assert!(
        newest.iter().any(|r| !r.get("prompt_id").ends_with("-1")),
        "some job needed a retry"
    );
    assert!(out.stderr.contains("retry"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_interrupts_the_running_prompt() {
    // 40 steps × 50 ms = 2 s, far beyond the 400 ms limit.
    let sim = sim_with(config(50)).await;
    let p = Project::new();
    p.write("jobs.yaml", long_jobs(1, 40));
    let out = p.run("jobs.yaml", &[&sim], &["--timeout", "400ms"]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    let rows = p.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get("status"), "timeout", "{:?}", rows[0]);
    assert!(rows[0].get("error").contains("timed out after 400ms"));
    let entry = history(&sim, rows[0].get("prompt_id"))
        .await
        .expect("it ran");
    let messages = entry["status"]["messages"].to_string();
    assert!(messages.contains("execution_interrupted"), "{messages}");
    nothing_of_ours_queued(&sim).await;
}

/// Issue #23 item 1: `--queue-timeout` bounds the time a prompt waits
/// behind another client's work; it is removed and the row says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_timeout_removes_prompts_still_queued() {
    let sim = sim_with(config(20)).await;
    // Someone else's 2 s prompt runs first: ours wait in the queue.
    let blocker = foreign_blocker(&sim, 100).await;
    let p = Project::new();
    p.write("jobs.yaml", sampler_jobs(3));
    let out = p
        .run(
            "jobs.yaml",
            &[&sim],
            &["--queue-timeout", "300ms", "--concurrency", "3"],
        )
        .await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    let rows = p.rows();
    assert_eq!(rows.len(), 3);
    for row in &rows {
        assert_eq!(row.get("status"), "timeout", "{row:?}");
        assert_eq!(
            row.get("error"),
            "timed out after 300ms queued (--queue-timeout); removed from the queue"
        );
        assert!(
            history(&sim, row.get("prompt_id")).await.is_none(),
            "never ran"
        );
    }
    nothing_of_ours_queued(&sim).await;
    let (running, _) = queue_ids(&sim).await;
    assert_eq!(
        running,
        vec![blocker],
        "the other client's prompt is untouched"
    );
}

/// A run whose jobs all end soon after its start (here timed out in the
/// queue behind another client's work) exits once done: the live
/// report's refresher, asleep until its next refresh, is woken. It lost
/// the wake-up and slept out its 10 s, with the run's work done (and after
/// a SIGTERM, past the 5 s bound towards SIGKILL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_ends_early_exits_without_waiting_for_the_reports_next_refresh() {
    let sim = sim_with(config(20)).await;
    foreign_blocker(&sim, 2000).await;
    let p = Project::new();
    p.write("jobs.yaml", sampler_jobs(2));
    for limit in ["300ms", "1s"] {
        let _ = std::fs::remove_dir_all(p.out());
        let begin = std::time::Instant::now();
        let out = p
            .run("jobs.yaml", &[&sim], &["--queue-timeout", limit])
            .await;
        let took = begin.elapsed();
        assert_eq!(out.code, 1, "{}", out.stderr);
        assert!(out.stderr.contains("report: "), "{}", out.stderr);
        assert!(took < Duration::from_secs(6), "{limit}: took {took:?}");
    }
}

/// Issue #23 item 1: `--timeout` counts from the prompt's start, not
/// from its submission: five 0.5 s jobs queued at once behind each other
/// (the last waits 2 s) all fit a 1.5 s limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_does_not_count_time_queued_behind_our_own_prompts() {
    let sim = sim_with(config(20)).await;
    let p = Project::new();
    p.write("jobs.yaml", long_jobs(5, 25));
    let out = p
        .run(
            "jobs.yaml",
            &[&sim],
            &["--timeout", "1500ms", "--concurrency", "5"],
        )
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    p.assert_each_job_ok_once(5);
}

/// Issue #23 item 1: without `--queue-timeout`, a prompt waiting behind
/// another client's work is not bounded by `--timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_does_not_count_time_behind_another_clients_prompt() {
    let sim = sim_with(config(20)).await;
    // Someone else's 1.6 s prompt runs first.
    foreign_blocker(&sim, 80).await;
    let p = Project::new();
    p.write("jobs.yaml", sampler_jobs(2));
    let out = p.run("jobs.yaml", &[&sim], &["--timeout", "1s"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    p.assert_each_job_ok_once(2);
}

/// Issue #23: `--retries N` retries a `timeout` as it does a failure, each
/// attempt under its own prompt id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_is_retried_like_a_failure() {
    let sim = sim_with(config(50)).await;
    let p = Project::new();
    p.write("jobs.yaml", long_jobs(1, 40));
    let out = p
        .run(
            "jobs.yaml",
            &[&sim],
            &["--timeout", "300ms", "--retries", "1"],
        )
        .await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    let rows = p.rows();
    let ids: Vec<&str> = rows.iter().map(|r| r.get("prompt_id")).collect();
    assert_eq!(rows.len(), 2, "{ids:?}");
    for row in &rows {
        assert_eq!(row.get("status"), "timeout", "{row:?}");
    }
    assert!(ids[0].ends_with("-1") && ids[1].ends_with("-2"), "{ids:?}");
    nothing_of_ours_queued(&sim).await;
}

/// Issue #23 item 2: the job's limit covers downloading its outputs; a
/// download that stalls (20 s) ends at the limit as a `timeout` naming
/// the file, and nothing half-downloaded is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_download_is_a_timeout_with_its_cause() {
    let sim = sim_with(SimConfig {
        view_stall_ms: 20_000,
        ..config(1)
    })
    .await;
    let p = Project::new();
    p.write("jobs.yaml", sampler_jobs(1));
    let started = std::time::Instant::now();
    let out = p.run("jobs.yaml", &[&sim], &["--timeout", "1s"]).await;
    let took = started.elapsed();
    assert_eq!(out.code, 1, "{}", out.stderr);
    let rows = p.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get("status"), "timeout", "{:?}", rows[0]);
    let error = rows[0].get("error");
    assert!(
        error.starts_with("timed out after 1s: download of node 9 file ")
            && error.ends_with(" stalled (--timeout)"),
        "{error}"
    );
    assert!(rows[0].images().is_empty(), "{:?}", rows[0]);
    assert!(took < Duration::from_secs(15), "took {took:?}");
}

/// Issue #23 item 2: a download that dribbles (a byte every 200 ms, never
/// silent long enough for the read timeout) is cut at the limit as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dribbling_download_is_cut_at_the_limit_too() {
    let sim = sim_with(SimConfig {
        view_dribble_ms: 200,
        ..config(1)
    })
    .await;
    let p = Project::new();
    p.write("jobs.yaml", sampler_jobs(1));
    let started = std::time::Instant::now();
    let out = p.run("jobs.yaml", &[&sim], &["--timeout", "1s"]).await;
    let took = started.elapsed();
    assert_eq!(out.code, 1, "{}", out.stderr);
    let rows = p.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get("status"), "timeout", "{:?}", rows[0]);
    assert!(
        rows[0].get("error").contains(": download of node 9 file "),
        "{:?}",
        rows[0]
    );
    assert!(took < Duration::from_secs(15), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_server_hands_its_jobs_to_the_other() {
    let a = sim_with(config(15)).await;
    let b = sim_with(config(15)).await;
    let p = Project::new();
    p.write("jobs.yaml", sampler_jobs(16));
    let mut run = p.spawn("jobs.yaml", &[&a, &b], &["--server-lost-after", "1s"]);
    wait_for("4 rows", 60, || p.row_count() >= 4).await;
    let a_url = a.url();
    a.shutdown().await;
    assert_eq!(run.exit(60).await, 0, "{}", run.stderr());
    let rows = p.assert_each_job_ok_once(16);
    assert!(run.stderr().contains("lost"), "{}", run.stderr());
    let servers: BTreeSet<_> = rows.iter().map(|r| r.get("server").to_string()).collect();
    assert!(servers.contains(&b.url()), "{servers:?}");
    let after_loss = rows.iter().filter(|r| r.get("server") == a_url).count();
    assert!(after_loss < 16, "the rest went to the other server");
    nothing_of_ours_queued(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_servers_lost_flushes_the_log_and_exits_3() {
    let a = sim_with(config(15)).await;
    let p = Project::new();
    p.write("jobs.yaml", sampler_jobs(16));
    let mut run = p.spawn("jobs.yaml", &[&a], &["--server-lost-after", "1s"]);
    wait_for("3 rows", 60, || p.row_count() >= 3).await;
    a.shutdown().await;
    assert_eq!(run.exit(60).await, 3, "{}", run.stderr());
    assert!(run.stderr().contains("no server left"), "{}", run.stderr());
    let text = std::fs::read_to_string(p.out().join("runs.csv")).unwrap();
    assert!(text.ends_with('\n'));
    let rows = p.rows();
    assert!(rows.len() >= 3 && rows.len() < 16, "{text}");
    for row in &rows {
        assert!(p.out().join(&row.images()[0]).is_file() || row.get("status") != "ok");
    }
    // Another server finishes the rest.
    let b = sim_with(config(1)).await;
    let out = p.run("jobs.yaml", &[&b], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    p.assert_each_job_ok_once(16);
}

/// Decision: after Ctrl-C, a job already handed to a server whose prompt
/// was removed from the queue (or not yet posted) gets an `interrupted` row
/// with the error "not run: interrupted"; a job still waiting in the runner
/// gets no row. Neither is `ok`, so a rerun completes both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_removes_queued_prompts_waits_for_running_then_rerun_completes() {
    // Two servers, 4 steps × 60 ms per job.
    let a = sim_with(config(60)).await;
    let b = sim_with(config(60)).await;
    let p = Project::new();
    p.write("jobs.yaml", sampler_jobs(16));
    let mut run = p.spawn("jobs.yaml", &[&a, &b], &["--concurrency", "3"]);
    wait_for("2 rows", 60, || p.row_count() >= 2).await;
    run.signal(libc::SIGINT);
    assert_eq!(run.exit(30).await, 130, "{}", run.stderr());
    let stderr = run.stderr();
    assert!(stderr.contains("waiting for the running ones"), "{stderr}");
    nothing_of_ours_queued(&a).await;
    nothing_of_ours_queued(&b).await;
    let rows = p.rows();
    assert!(rows.len() < 16, "stopped early");
    for row in &rows {
        match row.get("status") {
            "ok" => {}
            "interrupted" => {
                assert_eq!(row.get("error"), "not run: interrupted", "{row:?}");
                let sim = if row.get("server") == a.url() { &a } else { &b };
                assert!(history(sim, row.get("prompt_id")).await.is_none());
            }
            other => panic!("{other}: {row:?}"),
        }
    }
    assert!(
        rows.iter().any(|r| r.get("status") == "interrupted"),
        "queued prompts were removed: {rows:?}"
    );

    let out = p.run("jobs.yaml", &[&a, &b], &["--concurrency", "3"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    p.assert_each_job_ok_once(16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_fleet_lets_the_runner_doze_and_ctrl_c_still_stops_it_cleanly() {
    // 4 steps × 25 ms: jobs long enough for the runner to doze between
    // reads while both servers have work queued.
    let a = sim_with(config(25)).await;
    let b = sim_with(config(25)).await;
    let p = Project::new();
    p.write("jobs.yaml", sampler_jobs(60));
    let urls = [a.url(), b.url()];
    let extra = ["--concurrency", "3"];
    let mut run = p.spawn_logging("jobs.yaml", &urls, &extra, "comfy_batch::run=debug");
    wait_for("the runner to doze", 60, || run.stderr().contains("dozing")).await;
    let dozing_rows = p.row_count();
    wait_for("more rows while dozing", 60, || {
        p.row_count() >= dozing_rows + 4
    })
    .await;
    run.signal(libc::SIGINT);
    assert_eq!(run.exit(30).await, 130, "{}", run.stderr());
    // The last word on dozing is that it stopped (with the cancel): the
    // run drained without dozing.
    let stderr = run.stderr();
    let last = stderr.lines().rfind(|l| l.contains("dozing"));
    assert!(
        last.is_some_and(|l| l.contains("no more dozing")),
        "{stderr}"
    );
    nothing_of_ours_queued(&a).await;
    nothing_of_ours_queued(&b).await;

    let out = p.run("jobs.yaml", &[&a, &b], &extra).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    p.assert_each_job_ok_once(60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ctrl_c_interrupts_the_running_prompt() {
    // 200 steps × 200 ms: far too long to wait for, even on a loaded
    // machine (the interrupt is seen within a step).
    let sim = sim_with(config(200)).await;
    let p = Project::new();
    p.write("jobs.yaml", long_jobs(4, 200));
    let mut run = p.spawn("jobs.yaml", &[&sim], &["--concurrency", "2"]);
    let mut started = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !started {
        assert!(std::time::Instant::now() < deadline, "nothing started");
        let (running, _) = queue_ids(&sim).await;
        started = running.iter().any(|id| id.starts_with("cb-"));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let begin = std::time::Instant::now();
    run.signal(libc::SIGINT);
    wait_for("the first Ctrl-C to be seen", 30, || {
        run.stderr().contains("waiting for the running ones")
    })
    .await;
    run.signal(libc::SIGINT);
    assert_eq!(run.exit(30).await, 130, "{}", run.stderr());
    assert!(
        begin.elapsed() < Duration::from_secs(30),
        "did not wait 40 s"
    );
    nothing_of_ours_queued(&sim).await;
    let rows = p.rows();
    assert!(!rows.is_empty());
    for row in &rows {
        assert_eq!(row.get("status"), "interrupted", "{row:?}");
    }
    let ran: Vec<_> = rows
        .iter()
        .filter(|r| r.get("error") != "not run: interrupted")
        .collect();
    assert_eq!(ran.len(), 1, "the running one was stopped: {rows:?}");
    let entry = history(&sim, ran[0].get("prompt_id")).await.unwrap();
    assert!(
        entry["status"]["messages"]
            .to_string()
            .contains("execution_interrupted")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_server_file_names_never_leave_the_output_folder() {
    let sim = sim_with(SimConfig {
        hostile_filenames: true,
        ..SimConfig::default()
    })
    .await;
    let p = Project::new();
    p.write("jobs.yaml", sampler_jobs(4));
    let out = p.run("jobs.yaml", &[&sim], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows = p.assert_each_job_ok_once(4);
    for row in &rows {
        let id = row.get("job_id");
        assert_eq!(row.images(), vec![format!("images/{id}_9_0.png")]);
        let ours = std::fs::read(p.out().join(&row.images()[0])).unwrap();
        assert_eq!(ours, std::fs::read(sim_file(&sim, id, 1)).unwrap());
    }
    // The server really did name them hostilely.
    let entry = history(&sim, rows[0].get("prompt_id")).await.unwrap();
    let name = entry["outputs"]["9"]["images"][0]["filename"]
        .as_str()
        .unwrap();
    assert!(
        name.starts_with("../../") || name.starts_with('/'),
        "{name}"
    );
    // Nothing was written anywhere but our folders.
    let list = |dir: &std::path::Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with("stderr-"))
            .collect()
    };
    assert_eq!(
        list(p.dir.path()),
        ["jobs.yaml", "out", "workflows"].map(String::from).into()
    );
    assert_eq!(
        list(&p.out()),
        // runs.csv.lock: the run's lock, kept (see `runlog::RunLog::open`).
        [
            "environment.json",
            "images",
            "prompts",
            "report",
            "run.json",
            "runs.csv",
            "runs.csv.lock"
        ]
        .map(String::from)
        .into()
    );
    assert_eq!(list(&p.out().join("images")).len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_gone_silent_is_noticed_by_heartbeat_and_its_jobs_move() {
    // Server A sits behind a proxy that goes silent mid-run: no close, no
    // reset, no answer, as a frozen machine or a dead network path.
    let a = sim_with(config(15)).await;
    let b = sim_with(config(15)).await;
    let proxy = Proxy::start(a.addr()).await;
    let p = Project::new();
    p.write("jobs.yaml", sampler_jobs(16));
    let mut run = p.spawn_urls(
        "jobs.yaml",
        &[proxy.url(), b.url()],
        &["--server-lost-after", "1s"],
    );
    wait_for("4 rows", 60, || p.row_count() >= 4).await;
    proxy.freeze();
    assert_eq!(run.exit(60).await, 0, "{}", run.stderr());
    assert!(run.stderr().contains("lost"), "{}", run.stderr());
    p.assert_each_job_ok_once(16);
    nothing_of_ours_queued(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_down_at_the_start_is_left_out() {
    // A port bound but never listened on: connections are refused, and
    // nothing else (the sim below, another test) can be given it meanwhile,
    // as it could a port bound and closed again.
    let hold = tokio::net::TcpSocket::new_v4().unwrap();
    hold.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let down = format!("http://{}", hold.local_addr().unwrap());
    let b = sim_with(config(1)).await;
    let p = Project::new();
    p.write("jobs.yaml", sampler_jobs(6));
    let mut run = p.spawn_urls("jobs.yaml", &[down.clone(), b.url()], &[]);
    assert_eq!(run.exit(60).await, 0, "{}", run.stderr());
    assert!(
        run.stderr().contains(&format!("warning: {down}")),
        "{}",
        run.stderr()
    );
    let rows = p.assert_each_job_ok_once(6);
    assert!(rows.iter().all(|r| r.get("server") == b.url()));
    drop(hold);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_at_once_still_logs_each_job_ok_once() {
    let sim = sim_with(SimConfig {
        step_ms: 3,
        seed: 11,
        fail_rate: 0.15,
        drop_ws_every: Some(40),
        http_500_rate: 0.1,
        restart_after: Some(7),
        hostile_filenames: true,
        ..SimConfig::default()
    })
    .await;
    let p = Project::new();
    p.write("jobs.yaml", sampler_jobs(20));
    let out = p
        .run(
            "jobs.yaml",
            &[&sim],
            &["--concurrency", "3", "--retries", "10"],
        )
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    p.assert_each_job_ok_once(20);
    let rows = p.rows();
    let ids: std::collections::BTreeSet<_> = rows.iter().map(|r| r.get("prompt_id")).collect();
    assert_eq!(ids.len(), rows.len(), "no attempt logged twice");
    nothing_of_ours_queued(&sim).await;
}

// ---------------------------------------------------------------------------
// Issue #8: defects an independent review reproduced.

/// A SaveImageWebsocket job's frames come over a socket running seconds
/// behind HTTP: the history says "done" long before the last frame arrives,
/// and the job must still end `ok` with every frame (issue #8 item 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_images_behind_a_lagging_socket_all_arrive() {
    let sim = sim_with(config(1)).await;
    let proxy = Proxy::lagging_ws(sim.addr(), Duration::from_secs(5)).await;
    let p = Project::new();
    p.write(
        "workflows/ws4.json",
        r#"{"1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 4, "color": 255}},
            "2": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}}}"#,
    );
    p.write(
        "ws.yaml",
        "version: 1\njobs:\n  - name: ws\n    workflow: ws4\n    matrix:\n      \"1.color\": [1, 2]\n",
    );
    let mut run = p.spawn_urls("ws.yaml", &[proxy.url()], &["--no-check"]);
    assert_eq!(run.exit(90).await, 0, "{}", run.stderr());
    let rows = p.assert_each_job_ok_once(2);
    for row in &rows {
        assert_eq!(row.images().len(), 4, "{row:?}");
    }
    assert_eq!(sim.stats().prompts_executed, 2, "nothing ran twice");
}

/// A reset connection is logged with its cause, the URL once (item 7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_connection_keeps_its_cause_in_one_line() {
    use comfy_batch::comfy::ServerUrl;
    use comfy_batch::comfy::http::HttpClient;
    use comfy_batch::comfy::protocol::ImageRef;
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf).await;
            // Linger 0: close with RST, as a crashing server or proxy does.
            let _ = conn.set_zero_linger();
            drop(conn);
        }
    });
    let url = ServerUrl::parse(&format!("http://{addr}")).unwrap();
    let client = HttpClient::new(url, Default::default(), Duration::from_secs(10)).unwrap();
    let image = ImageRef {
        filename: "x.png".into(),
        subfolder: String::new(),
        kind: "output".into(),
    };
    let error = client.view(&image).await.unwrap_err();
    let line = comfy_batch::outcome::error_line(&error);
    assert_eq!(line.matches("/view").count(), 1, "{line}");
    assert!(
        line.contains("reset") || line.contains("closed"),
        "the cause is kept: {line}"
    );
    assert!(!line.contains('\n'));
}

/// Ctrl-C while the first server is slow to answer its websocket handshake
/// ends the run at once with exit 130 (item 11).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_during_the_first_connect_ends_the_run_at_once() {
    let sim = sim_with(config(1)).await;
    let proxy = Proxy::start(sim.addr()).await;
    proxy.freeze();
    let p = Project::new();
    p.write("jobs.yaml", sampler_jobs(2));
    let mut run = p.spawn_urls("jobs.yaml", &[proxy.url()], &["--no-check"]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    run.signal(libc::SIGINT);
    assert_eq!(run.exit(10).await, 130, "{}", run.stderr());
}

/// A prompt an earlier (killed) run queued, which the server accepted with
/// errors in one of its outputs, is `rejected` when adopted, not `ok`
/// (item 11).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adopted_partially_valid_prompt_is_rejected() {
    let sim = sim_with(config(20)).await;
    foreign_blocker(&sim, 100).await;
    let p = Project::new();
    p.write(
        "bad.yaml",
        "version: 1\njobs:\n  - name: partial\n    workflow: partial\n    set:\n      \"3.upscale_method\": bogus\n",
    );
    let mut run = p.spawn("bad.yaml", &[&sim], &["--no-check"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !queue_ids(&sim)
        .await
        .1
        .iter()
        .any(|id| id.starts_with("cb-"))
    {
        assert!(std::time::Instant::now() < deadline, "nothing queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The runner has had the server's reply well before this.
    tokio::time::sleep(Duration::from_millis(500)).await;
    run.signal(libc::SIGKILL);
    assert_eq!(run.exit(30).await, -libc::SIGKILL);
    let out = p.run("bad.yaml", &[&sim], &["--no-check"]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    let rows = p.rows();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].get("status"), "rejected", "{rows:?}");
    assert!(rows[0].get("error").contains("upscale_method"), "{rows:?}");
}

/// The log cannot grow (file size limit: EFBIG): the run stops, removes its
/// queued prompts and exits 3 with one line; the log stays whole (item 11).
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_cannot_grow_stops_the_run_cleanly() {
    // SIGXFSZ ignored (inherited through exec): writes past the limit fail
    // with EFBIG instead of killing the process.
    log_cannot_grow("trap '' XFSZ; ").await;
}

/// The same under a plain `ulimit -f` (a batch system's limit), where
/// SIGXFSZ keeps its default action: the runner must not be killed by it
/// before it can stop cleanly.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_size_limit_does_not_kill_the_run() {
    log_cannot_grow("").await;
}

#[cfg(unix)]
async fn log_cannot_grow(shell_prefix: &str) {
    let sim = sim_with(config(10)).await;
    let p = Project::new();
    p.write(
        "jobs.yaml",
        "version: 1\njobs:\n  - name: tiny\n    workflow: tiny\n    matrix:\n      \"1.color\": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]\n",
    );
    foreign_blocker(&sim, 4).await;
    // 4 blocks of 512 bytes.
    let mut shell = std::process::Command::new("sh");
    crate::harness::without_host_variables(&mut shell);
    let run = tokio::process::Command::from(shell)
        .arg("-c")
        .arg(format!("{shell_prefix}ulimit -f 4; exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_comfy-batch"))
        .args([
            "run",
            "jobs.yaml",
            "--output",
            "out",
            "--no-check",
            "--server",
        ])
        .arg(sim.url())
        .current_dir(p.dir.path())
        .env("RUST_LOG", "off")
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{:?} {stderr}", out.status);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("runs.csv"), "{stderr}");
    let text = std::fs::read_to_string(p.out().join("runs.csv")).unwrap();
    assert!(text.ends_with('\n'), "torn log:\n{text}");
    let rows = p.rows();
    assert!(rows.len() < 20, "the log filled up: {}", rows.len());
    nothing_of_ours_queued(&sim).await;
}

/// Jobs waiting on a busy shared server share one `/queue` read per round
/// instead of each fetching (and parsing) the whole queue (issue #8 item 6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_jobs_share_one_queue_poll() {
    let sim = sim_with(config(40)).await;
    // About 8 s of someone else's work ahead of ours.
    foreign_blocker(&sim, 200).await;
    let proxy = Proxy::start(sim.addr()).await;
    let p = Project::new();
    p.write("jobs.yaml", sampler_jobs(6));
    let mut run = p.spawn_urls(
        "jobs.yaml",
        &[proxy.url()],
        &["--no-check", "--concurrency", "6"],
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    let gets = proxy.queue_gets();
    run.signal(libc::SIGINT);
    let _ = run.exit(60).await;
    // Each of the 6 jobs polls every 2 s: 18 reads in 6 s if unshared.
    assert!(gets <= 8, "{gets} GET /queue in 6 s for 6 waiting jobs");
}

/// One row per job, each of `status` and with its prompt file.
fn every_row_is(p: &Project, jobs: usize, status: &str) {
    let rows = p.rows();
    assert_eq!(rows.len(), jobs, "one row per job");
    for row in &rows {
        assert_eq!(row.get("status"), status, "{row:?}");
        let prompt = p
            .out()
            .join("prompts")
            .join(format!("{}.json", row.get("job_id")));
        assert!(prompt.is_file(), "{row:?}");
    }
}

/// Every job of a run that ends not ok has its prompt file synced before its
/// row: many at once must neither stall nor lose a row (2159d7e).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_job_failing_at_once_logs_each_with_its_prompt_file() {
    let sim = sim_with(SimConfig {
        step_ms: 1,
        fail_rate: 1.0,
        ..SimConfig::default()
    })
    .await;
    let p = Project::new();
    p.write("jobs.yaml", sampler_jobs(40));
    let out = p.run("jobs.yaml", &[&sim], &["--concurrency", "16"]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    every_row_is(&p, 40, "failed");
    nothing_of_ours_queued(&sim).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_job_rejected_at_once_logs_each() {
    let sim = sim_with(config(1)).await;
    let p = Project::new();
    p.write(
        "bad.yaml",
        format!(
            "{}    set:\n      sampler: bogus_sampler\n",
            sampler_jobs(30)
        ),
    );
    let out = p
        .run("bad.yaml", &[&sim], &["--no-check", "--concurrency", "16"])
        .await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    every_row_is(&p, 30, "rejected");
}

/// Ctrl-C with many prompts queued: each gets its `interrupted` row (each
/// synced first) and the run still ends at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_with_many_queued_writes_every_interrupted_row() {
    let a = sim_with(config(100)).await;
    let b = sim_with(config(100)).await;
    let p = Project::new();
    p.write("jobs.yaml", sampler_jobs(60));
    let mut run = p.spawn("jobs.yaml", &[&a, &b], &["--concurrency", "12"]);
    wait_for("prompts queued", 60, || {
        std::fs::read_dir(p.out().join("prompts")).is_ok_and(|d| d.count() >= 20)
    })
    .await;
    let begin = std::time::Instant::now();
    run.signal(libc::SIGINT);
    wait_for("the first Ctrl-C to be seen", 30, || {
        run.stderr().contains("waiting for the running ones")
    })
    .await;
    run.signal(libc::SIGINT);
    assert_eq!(run.exit(60).await, 130, "{}", run.stderr());
    assert!(begin.elapsed() < Duration::from_secs(30), "stalled");
    nothing_of_ours_queued(&a).await;
    nothing_of_ours_queued(&b).await;
    let rows = p.rows();
    let interrupted = rows
        .iter()
        .filter(|r| r.get("status") == "interrupted")
        .count();
    assert!(interrupted >= 18, "{rows:?}");
    let ids: BTreeSet<_> = rows.iter().map(|r| r.get("job_id")).collect();
    assert_eq!(ids.len(), rows.len(), "one row per job: {rows:?}");
    for row in &rows {
        assert!(matches!(row.get("status"), "ok" | "interrupted"), "{row:?}");
    }
    let out = p
        .run("jobs.yaml", &[&a, &b], &["--concurrency", "12"])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    p.assert_each_job_ok_once(60);
}

/// An input that can no longer be read fails its job before any prompt
/// file exists: the job still ends with its row, the run goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_failing_before_its_prompt_file_exists_ends_cleanly() {
    let sim = sim_with(config(150)).await;
    let p = Project::new();
    let prefixes: Vec<String> = (0..8).map(|i| format!("\"x/{i}\"")).collect();
    p.write("inputs/red.png", crate::run::tiny_png([255, 0, 0]));
    p.write(
        "i2i.yaml",
        format!(
            "version: 1\njobs:\n  - name: img\n    workflow: i2i\n    matrix:\n      \"3.filename_prefix\": [{}]\n    set:\n      image: inputs/red.png\n",
            prefixes.join(", ")
        ),
    );
    let mut run = p.spawn("i2i.yaml", &[&sim], &["--concurrency", "1"]);
    wait_for("a first prompt", 60, || {
        std::fs::read_dir(p.out().join("prompts")).is_ok_and(|d| d.count() >= 1)
    })
    .await;
    std::fs::remove_file(p.path("inputs/red.png")).unwrap();
    assert_eq!(run.exit(60).await, 1, "{}", run.stderr());
    let rows = p.rows();
    assert_eq!(rows.len(), 8, "{rows:?}");
    let failed: Vec<_> = rows
        .iter()
        .filter(|r| r.get("status") == "failed")
        .collect();
    assert!(!failed.is_empty(), "{rows:?}");
    for row in failed {
        assert!(row.get("error").starts_with("upload "), "{row:?}");
        let prompt = p
            .out()
            .join("prompts")
            .join(format!("{}.json", row.get("job_id")));
        assert!(!prompt.exists(), "{row:?}");
    }
}
