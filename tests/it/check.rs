//! `comfy-batch check` and the preflight of `run`: bad values are caught
//! against the server's catalogue before anything is queued.

use crate::harness::{Project, sim};

const TYPO: &str = r#"version: 1
jobs:
  - name: fox
    workflow: t2i
    matrix:
      sampler: [euler, eulr]
      cfg: [5, 6]
    seeds: [1, 2]
  - name: big
    workflow: t2i
    set:
      steps: 0
      checkpoint: missing.safetensors
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_lists_each_problem_once_with_its_jobs() {
    let sim = sim().await;
    let p = Project::new();
    p.write("typo.yaml", TYPO);
    let out = p.cli(&["check", "typo.yaml", "--server", &sim.url()]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    let errors: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    insta::assert_snapshot!(errors.join("\n"));
    assert_eq!(sim.stats().prompts_executed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_preflight_fails_before_queueing_anything() {
    let sim = sim().await;
    let p = Project::new();
    p.write("typo.yaml", TYPO);
    let out = p.run("typo.yaml", &[&sim], &[]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("eulr"), "{}", out.stderr);
    assert_eq!(sim.stats().prompts_executed, 0);
    assert!(
        !out.stderr.contains("start "),
        "nothing was submitted: {}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_a_good_manifest() {
    let sim = sim().await;
    let p = Project::new();
    p.write(
        "good.yaml",
        "version: 1\njobs:\n  - name: fox\n    workflow: t2i\n    seeds: [1, 2]\n",
    );
    let out = p.cli(&["check", "good.yaml", "--server", &sim.url()]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("ok: 2 jobs valid"), "{}", out.stderr);
}
