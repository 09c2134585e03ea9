//! `comfy-batch plan` end to end: the real binary in a fresh temp folder
//! holding copies of the example workflows and manifests.

use std::path::{Path, PathBuf};
use std::process::Output;

/// A temp project with `workflows/`, `jobs/` (and `jobs/inputs/`) copied
/// from the repository.
struct Project {
    dir: tempfile::TempDir,
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

impl Project {
    fn new() -> Project {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&root.join("workflows"), &dir.path().join("workflows"));
        copy_dir(&root.join("jobs"), &dir.path().join("jobs"));
        Project { dir }
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.path().join(name), text).unwrap();
    }

    fn plan(&self, args: &[&str]) -> Output {
        crate::harness::comfy_batch()
            .arg("plan")
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn plan_prints_a_table_of_the_sweep() {
    let p = Project::new();
    let out = p.plan(&["jobs/fox-sweep.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "");
    insta::assert_snapshot!(text(&out.stdout));
}

#[test]
fn plan_csv_has_the_runs_csv_leading_columns() {
    let p = Project::new();
    let out = p.plan(&["jobs/dataset.yaml", "--format", "csv"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some(
            "job_id,job,workflow,workflow_sha256,seed,batch_index,pack_size,pack_id,style,prompt,steps,cfg,sampler,scheduler,width,height"
        )
    );
    assert_eq!(lines.count(), 64);
    insta::assert_snapshot!(stdout.lines().take(5).collect::<Vec<_>>().join("\n"));
}

#[test]
fn plan_json_lists_every_job_with_its_images() {
    let p = Project::new();
    let out = p.plan(&["jobs/fox-sweep.yaml", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let jobs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(jobs.len(), 26);
    insta::assert_json_snapshot!(jobs[18]);
}

#[test]
fn plan_writes_each_patched_prompt() {
    let p = Project::new();
    let out = p.plan(&[
        "jobs/fox-sweep.yaml",
        "--format",
        "csv",
        "--write-prompts",
        "prompts",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let ids: Vec<String> = text(&out.stdout)
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 26);
    for id in ids {
        let path = p.dir.path().join("prompts").join(format!("{id}.json"));
        let prompt: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            prompt["9"]["inputs"]["filename_prefix"],
            format!("comfy-batch/{}/{id}", &id[..2])
        );
    }
}

#[test]
fn plan_lists_every_problem_and_exits_2() {
    let p = Project::new();
    p.write(
        "jobs/bad.yaml",
        "version: 1\njobs:\n  - name: fox\n    workflow: t2i\n    matrix:\n      sampeler: [euler]\n      cfg: [high]\n    zip:\n      prompt: [a, b]\n      steps: [1]\n  - name: other\n    workflow: nope\n",
    );
    let out = p.plan(&["jobs/bad.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(text(&out.stdout), "");
    insta::assert_snapshot!(text(&out.stderr));
}

#[test]
fn manifest_problems_exit_2_with_lines() {
    let p = Project::new();
    p.write(
        "jobs/typo.yaml",
        "version: 1\noutptu: x\njobs:\n  - workflow: t2i\n    seed: [1]\n",
    );
    let out = p.plan(&["jobs/typo.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    insta::assert_snapshot!(text(&out.stderr));
    p.write(
        "jobs/broken.yaml",
        "version: 1\njobs:\n  - workflow: t2i\n    set: {cfg: 5\n",
    );
    let out = p.plan(&["jobs/broken.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).starts_with("error: jobs/broken.yaml:5:"),
        "{}",
        text(&out.stderr)
    );
    let out = p.plan(&["jobs/absent.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).starts_with("error: jobs/absent.yaml:1:1: cannot read the manifest"));
}

#[test]
fn collapsed_duplicates_warn_on_stderr() {
    let p = Project::new();
    p.write(
        "jobs/dup.yaml",
        "version: 1\njobs:\n  - workflow: t2i\n    matrix: {cfg: [5, 5]}\n    seeds: [1]\n",
    );
    let out = p.plan(&["jobs/dup.yaml", "--format", "csv"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stderr),
        "warning: group 'job1': 1 job identical to earlier jobs collapsed (the first repeats job1#1)\n"
    );
    assert_eq!(text(&out.stdout).lines().count(), 2);
}

#[test]
fn plan_help_is_pinned() {
    let out = crate::harness::comfy_batch()
        .args(["plan", "--help"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    insta::assert_snapshot!(text(&out.stdout));
}
