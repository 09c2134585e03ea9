//! `comfy-batch status`: counts, failures and what is left, with an exit
//! code a CI gate can use.

use crate::export::mixed_run;
use crate::harness::{Project, sim};

const SWEEP: &str = r#"version: 1
workflows:
  tiny: workflows/tiny.json
jobs:
  - name: colors
    workflow: tiny
    matrix:
      "Canvas.color": [255, 65280, 16711680, 0]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_listed_and_exit_1() {
    let p = Project::new();
    mixed_run(&p).await;
    let out = p.cli(&["status", "out"]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    let id = regex_lite::Regex::new(r"\b[0-9a-f]{12,}\b").unwrap();
    // The environment names the sim's port, the time and the OS.
    let env = regex_lite::Regex::new(r"#1 \S+ since \S+: (.*), \w+, cpu").unwrap();
    let stdout = env.replace_all(&out.stdout, "#1 [SERVER] since [TIME]: $1, [OS], cpu");
    insta::assert_snapshot!(id.replace_all(&stdout, "[ID]"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_manifest_it_counts_what_is_left() {
    let p = Project::new();
    let s = sim().await;
    p.write("sweep.yaml", SWEEP);
    let url = s.url();
    let run = p
        .cli(&[
            "run",
            "sweep.yaml",
            "--server",
            &url,
            "--shard",
            "1/2",
            "--output",
            "out",
        ])
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let all = p.cli(&["status", "out"]).await;
    assert_eq!(all.code, 0, "{}", all.stdout);
    let (counts, env) = all.stdout.split_once('\n').unwrap();
    assert_eq!(counts, "out: 2 job(s): 2 ok");
    assert!(env.starts_with("environment (1):\n  #1 "), "{env}");
    assert!(env.ends_with("(2 rows)\n"), "{env}");
    let left = p.cli(&["status", "out", "--manifest", "sweep.yaml"]).await;
    assert_eq!(left.code, 1);
    assert!(
        left.stdout
            .ends_with("sweep.yaml: 4 job(s), 2 still to run\n"),
        "{}",
        left.stdout
    );
    let shard = p
        .cli(&[
            "status",
            "out",
            "--manifest",
            "sweep.yaml",
            "--shard",
            "1/2",
        ])
        .await;
    assert_eq!(shard.code, 0, "{}", shard.stdout);
    assert!(
        shard
            .stdout
            .ends_with("sweep.yaml (shard 1/2): 2 job(s), 0 still to run\n"),
        "{}",
        shard.stdout
    );
    // An ok job whose image is gone is not done.
    let image = p.rows()[0].images()[0].clone();
    std::fs::remove_file(p.out().join(image)).unwrap();
    let gone = p.cli(&["status", "out"]).await;
    assert_eq!(gone.code, 1);
    assert!(
        gone.stdout
            .contains("1 ok job(s) have output files missing"),
        "{}",
        gone.stdout
    );
}

/// `--manifest` names a file that may have changed since the run (or is
/// another manifest): its count of jobs left is then of another plan, and
/// status says so on stderr, keeping stdout and the exit code as they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_other_than_the_runs_is_warned_about() {
    let p = Project::new();
    let s = sim().await;
    p.write("sweep.yaml", SWEEP);
    let url = s.url();
    let run = p
        .cli(&["run", "sweep.yaml", "--server", &url, "--output", "out"])
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let same = p.cli(&["status", "out", "--manifest", "sweep.yaml"]).await;
    assert_eq!(same.code, 0, "{}", same.stdout);
    assert_eq!(same.stderr, "");
    p.write("sweep.yaml", SWEEP.replace("0]", "0, 128]"));
    let changed = p.cli(&["status", "out", "--manifest", "sweep.yaml"]).await;
    assert_eq!(changed.code, 1, "{}", changed.stdout);
    assert!(
        changed
            .stdout
            .ends_with("sweep.yaml: 5 job(s), 1 still to run\n"),
        "{}",
        changed.stdout
    );
    assert_eq!(
        changed.stderr,
        format!(
            "warning: sweep.yaml differs from the manifest out was run from ({} records another sha256); jobs still to run are counted from sweep.yaml\n",
            std::path::Path::new("out").join("run.json").display()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_an_output_folder_exits_2() {
    let p = Project::new();
    p.write("empty/x.txt", "");
    let out = p.cli(&["status", "empty"]).await;
    assert_eq!(out.code, 2);
    assert_eq!(
        out.stderr,
        "error: empty: not a comfy-batch output folder (no runs.csv)\n"
    );
}
