//! Resume after SIGKILL: a run killed at any moment and then run again ends
//! with every job exactly once `ok`, every image present, no temporary file
//! and no torn CSV line; and the rerun collects the work the killed run had
//! queued (by its deterministic prompt id) instead of redoing it.

use comfy_batch::sim::SimConfig;

use crate::harness::{Project, queue_ids, sampler_jobs, sim, sim_with, wait_for};

const JOBS: usize = 12;

/// Kills a run at the moment `kill_when` says, reruns it to the end, and
/// checks the result and that the server ran each prompt once.
async fn kill_then_rerun(config: SimConfig, kill_when: KillAt) {
    let sim = sim_with(config).await;
    let p = Project::new();
    p.write("jobs.yaml", sampler_jobs(JOBS));
    let mut run = p.spawn("jobs.yaml", &[&sim], &["--concurrency", "3"]);
    match kill_when {
        KillAt::Rows(n) => wait_for("rows in runs.csv", 60, || p.row_count() >= n).await,
        KillAt::Queued => {
            let mut queued = false;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while !queued {
                assert!(std::time::Instant::now() < deadline, "nothing queued");
                let (_, pending) = queue_ids(&sim).await;
                queued = pending.iter().any(|id| id.starts_with("cb-"));
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
    }
    run.signal(libc::SIGKILL);
    assert_eq!(run.exit(30).await, -libc::SIGKILL);
    let logged_before = p.row_count();
    assert!(
        logged_before < JOBS,
        "killed too late: {logged_before} rows"
    );

    let out = p.run("jobs.yaml", &[&sim], &["--concurrency", "3"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    p.assert_each_job_ok_once(JOBS);
    // Nothing redone: the prompts the killed run queued were collected.
    wait_for("the server to go idle", 30, || {
        sim.stats().prompts_executed >= JOBS as u64
    })
    .await;
    assert_eq!(
        sim.stats().prompts_executed,
        JOBS as u64,
        "each prompt ran once on the server\n{}",
        out.stderr
    );
    let (running, pending) = queue_ids(&sim).await;
    assert!(running.is_empty() && pending.is_empty());
}

enum KillAt {
    /// After this many rows are logged.
    Rows(usize),
    /// As soon as a prompt waits in the server's queue.
    Queued,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_prompts_are_queued_then_rerun_collects_them() {
    let config = SimConfig {
        step_ms: 15,
        ..SimConfig::default()
    };
    kill_then_rerun(config, KillAt::Queued).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_midway_then_rerun_logs_each_job_ok_once() {
    let config = SimConfig {
        step_ms: 15,
        ..SimConfig::default()
    };
    kill_then_rerun(config, KillAt::Rows(4)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_downloading_then_rerun_fetches_from_history() {
    // Slow downloads: prompts finish on the server while their images are
    // still on their way, so the kill lands between server and log.
    let config = SimConfig {
        step_ms: 5,
        view_delay_ms: 150,
        ..SimConfig::default()
    };
    kill_then_rerun(config, KillAt::Rows(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complete_run_is_skipped_and_a_missing_image_is_redone() {
    let sim = sim().await;
    let p = Project::new();
    p.write("jobs.yaml", sampler_jobs(4));
    assert_eq!(p.run("jobs.yaml", &[&sim], &[]).await.code, 0);
    let rows = p.assert_each_job_ok_once(4);
    std::fs::remove_file(p.out().join(&rows[0].images()[0])).unwrap();
    let out = p.run("jobs.yaml", &[&sim], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("3 skipped"), "{}", out.stderr);
    let all = p.rows();
    assert_eq!(all.len(), 5, "one new row");
    let redone = &all[4];
    assert_eq!(redone.get("job_id"), rows[0].get("job_id"));
    assert_eq!(redone.get("status"), "ok");
    assert!(
        redone.get("prompt_id").ends_with("-2"),
        "a new attempt, not the old prompt collected again: {redone:?}"
    );
    assert!(p.out().join(&rows[0].images()[0]).is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_resume_runs_again_with_new_prompt_ids() {
    let sim = sim().await;
    let p = Project::new();
    p.write("jobs.yaml", sampler_jobs(3));
    assert_eq!(p.run("jobs.yaml", &[&sim], &[]).await.code, 0);
    let out = p.run("jobs.yaml", &[&sim], &["--no-resume"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows = p.rows();
    assert_eq!(rows.len(), 6);
    let ids: std::collections::BTreeSet<_> = rows
        .iter()
        .map(|r| r.get("prompt_id").to_string())
        .collect();
    assert_eq!(ids.len(), 6, "every attempt has its own prompt id");
    assert_eq!(sim.stats().prompts_executed, 6);
}

/// A run killed after the server finished its prompts but before anything
/// was logged (simulated: the log and images removed, the prompt files
/// kept): the rerun collects image jobs from the history without running
/// them again, and reruns websocket-image jobs, whose images only ever went
/// to the dead client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_but_unlogged_prompts_are_collected_or_rerun_by_kind() {
    let sim = sim().await;
    let p = Project::new();
    p.write(
        "jobs.yaml",
        format!(
            "{}  - name: socket\n    workflow: ws\n    matrix:\n      \"1.color\": [1, 2]\n",
            sampler_jobs(3)
        ),
    );
    assert_eq!(p.run("jobs.yaml", &[&sim], &[]).await.code, 0);
    assert_eq!(sim.stats().prompts_executed, 5);
    std::fs::remove_file(p.out().join("runs.csv")).unwrap();
    std::fs::remove_dir_all(p.out().join("images")).unwrap();

    let out = p.run("jobs.yaml", &[&sim], &["-v"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows = p.assert_each_job_ok_once(5);
    for row in rows.iter().filter(|r| r.get("job").starts_with("socket")) {
        assert_eq!(row.images().len(), 2, "{row:?}");
    }
    assert_eq!(
        sim.stats().prompts_executed,
        7,
        "only the 2 socket jobs again"
    );
}

/// A run over two servers killed with prompts queued on both, resumed with
/// the servers in the other order (so jobs land where they were not sent
/// before): each prompt is found where the killed run queued it and runs
/// once (issue #8 item 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_over_several_servers_runs_each_prompt_once() {
    let config = || SimConfig {
        step_ms: 40,
        ..SimConfig::default()
    };
    let a = sim_with(config()).await;
    let b = sim_with(config()).await;
    let p = Project::new();
    p.write("jobs.yaml", sampler_jobs(JOBS));
    let mut run = p.spawn("jobs.yaml", &[&a, &b], &["--concurrency", "3"]);
    let mut queued = false;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !queued {
        assert!(std::time::Instant::now() < deadline, "nothing queued");
        let ours = |ids: Vec<String>| ids.iter().any(|id| id.starts_with("cb-"));
        queued = ours(queue_ids(&a).await.1) && ours(queue_ids(&b).await.1);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    run.signal(libc::SIGKILL);
    assert_eq!(run.exit(30).await, -libc::SIGKILL);
    let out = p.run("jobs.yaml", &[&b, &a], &["--concurrency", "3"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    p.assert_each_job_ok_once(JOBS);
    let executed = || a.stats().prompts_executed + b.stats().prompts_executed;
    wait_for("the servers to go idle", 30, || executed() >= JOBS as u64).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        executed(),
        JOBS as u64,
        "each prompt ran once\n{}",
        out.stderr
    );
}

/// An image left empty or cut short (a power loss before its data reached
/// the disk) counts as missing: resume runs its job again (item 8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_or_truncated_images_are_redone() {
    let sim = sim().await;
    let p = Project::new();
    p.write("jobs.yaml", sampler_jobs(4));
    let out = p.run("jobs.yaml", &[&sim], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows = p.assert_each_job_ok_once(4);
    let empty = p.out().join(&rows[0].images()[0]);
    std::fs::write(&empty, b"").unwrap();
    let cut = p.out().join(&rows[1].images()[0]);
    let bytes = std::fs::read(&cut).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let out = p.run("jobs.yaml", &[&sim], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let all = p.rows();
    assert_eq!(all.len(), 6, "two jobs redone");
    let redone: std::collections::BTreeSet<_> = all[4..].iter().map(|r| r.get("job_id")).collect();
    assert!(redone.contains(rows[0].get("job_id")) && redone.contains(rows[1].get("job_id")));
    assert!(std::fs::metadata(&empty).unwrap().len() > 0);
    assert_eq!(std::fs::read(&cut).unwrap().len(), bytes.len());
}

/// A run stopped by a second Ctrl-C interrupts its running prompt, and may
/// die before that job's row is written. The rerun then finds the prompt
/// file and, on the server, the record of that interrupt: work not done,
/// so it runs the job again (under the same prompt id) instead of logging
/// the earlier run's interrupt as the job's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_an_earlier_run_interrupted_is_run_again_by_the_rerun() {
    interrupted_prompt_is_run_again(250).await;
}

/// As above, with a job longer than the watchdog's poll: while the prompt
/// runs again, the server's history still holds the interrupted run's entry
/// under the same id (ComfyUI replaces it only when the new run ends), and
/// that stale entry must not be taken for the new run's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_run_again_is_not_ended_by_the_stale_interrupted_history_entry() {
    interrupted_prompt_is_run_again(1_000).await;
}

async fn interrupted_prompt_is_run_again(step_ms: u64) {
    let sim = sim_with(SimConfig {
        step_ms,
        ..SimConfig::default()
    })
    .await;
    let p = Project::new();
    p.write("jobs.yaml", sampler_jobs(2));
    assert_eq!(p.run("jobs.yaml", &[&sim], &[]).await.code, 0);
    let rows = p.assert_each_job_ok_once(2);
    let (job_id, prompt_id) = (rows[1].get("job_id"), rows[1].get("prompt_id"));

    // What the dead run left: its prompt file and no row for the job...
    let log = p.out().join("runs.csv");
    let text = std::fs::read_to_string(&log).unwrap();
    let kept: String = text
        .lines()
        .filter(|line| !line.contains(prompt_id))
        .map(|line| format!("{line}\n"))
        .collect();
    std::fs::write(&log, kept).unwrap();
    // ...and on the server, that prompt interrupted while it ran.
    let mut prompt: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(p.out().join("prompts").join(format!("{job_id}.json"))).unwrap(),
    )
    .unwrap();
    // Another seed, so the server's cache cannot answer it at once.
    for node in prompt.as_object_mut().unwrap().values_mut() {
        if let Some(seed) = node["inputs"].get_mut("seed") {
            *seed = serde_json::json!(seed.as_u64().unwrap() + 1_000_000);
        }
    }
    let http = reqwest::Client::new();
    let body = serde_json::json!({"prompt": prompt, "prompt_id": prompt_id, "client_id": "gone"});
    let posted = http
        .post(format!("{}/prompt", sim.url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(posted.status().is_success());
    let mut running = false;
    for _ in 0..200 {
        running = queue_ids(&sim).await.0.iter().any(|id| id == prompt_id);
        if running {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(running, "the prompt never ran");
    http.post(format!("{}/interrupt", sim.url()))
        .json(&serde_json::json!({"prompt_id": prompt_id}))
        .send()
        .await
        .unwrap();
    let history = format!("{}/history/{prompt_id}", sim.url());
    let mut interrupted = false;
    for _ in 0..300 {
        let entry = crate::harness::get_json(&history).await;
        interrupted = entry[prompt_id]["status"]["messages"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m[0] == "execution_interrupted"));
        if interrupted {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(interrupted, "the server never recorded the interrupt");

    let out = p.run("jobs.yaml", &[&sim], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let all = p.rows();
    assert_eq!(all.len(), 2, "{all:?}");
    let redone = &all[1];
    assert_eq!((redone.get("job_id"), redone.get("status")), (job_id, "ok"));
    assert_eq!(redone.get("prompt_id"), prompt_id, "the same attempt");
    for image in redone.images() {
        assert!(p.out().join(&image).is_file(), "{image}");
    }
}
