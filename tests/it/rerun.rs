//! `comfy-batch rerun LOG.csv`: jobs rebuilt from the log alone reproduce
//! the first run exactly.

use std::collections::BTreeMap;

use crate::harness::{Project, read_rows, sim};

const MANIFEST: &str = r#"version: 1
params:
  look: "6.text"
jobs:
  - name: fox
    workflow: t2i
    matrix:
      look: ["a red fox", "a grey wolf"]
      cfg: [5, 6.5]
    seeds: {count: 2, base: 7}
  - name: invert
    workflow: i2i
    set:
      image: inputs/red.png
  - name: broken
    workflow: tiny
    set:
      "3.filename_prefix": "../escape"
"#;

fn images_by_job(
    rows: &[crate::harness::Row],
    dir: &std::path::Path,
) -> BTreeMap<String, Vec<Vec<u8>>> {
    rows.iter()
        .filter(|r| r.get("status") == "ok")
        .map(|r| {
            let bytes = r
                .images()
                .iter()
                .map(|i| std::fs::read(dir.join(i)).unwrap())
                .collect();
            (r.get("job_id").to_string(), bytes)
        })
        .collect()
}

async fn first_run(p: &Project, server: &str) {
    p.write("inputs/red.png", crate::run::tiny_png([200, 10, 10]));
    p.write("m.yaml", MANIFEST);
    let out = p
        .cli(&["run", "m.yaml", "--output", "out", "--server", server])
        .await;
    assert_eq!(out.code, 1, "one job fails on purpose: {}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_on_a_fresh_server_reproduces_every_image_byte_for_byte() {
    let first = sim().await;
    let p = Project::new();
    first_run(&p, &first.url()).await;
    let fresh = sim().await;
    let out = p
        .cli(&[
            "rerun",
            "out/runs.csv",
            "--status",
            "ok",
            "--output",
            "again",
            "--server",
            &fresh.url(),
        ])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);
    let before = images_by_job(&p.rows(), &p.out());
    let after = images_by_job(&read_rows(&p.path("again/runs.csv")), &p.path("again"));
    assert_eq!(before.len(), 9);
    assert_eq!(before, after, "same job ids, same bytes");
    for id in before.keys() {
        assert_eq!(
            std::fs::read(p.out().join(format!("prompts/{id}.json"))).unwrap(),
            std::fs::read(p.path(&format!("again/prompts/{id}.json"))).unwrap(),
            "the exact prompt of {id} is sent again"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_selects_by_status_and_job_and_appends_to_the_log() {
    let sim = sim().await;
    let p = Project::new();
    first_run(&p, &sim.url()).await;
    let failed = p
        .rows()
        .into_iter()
        .find(|r| r.get("status") == "failed")
        .unwrap();
    let out = p
        .cli(&[
            "rerun",
            "out/runs.csv",
            "--status",
            "failed",
            "--server",
            &sim.url(),
        ])
        .await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    let rows = p.rows();
    assert_eq!(rows.len(), 11);
    assert_eq!(rows[10].get("job_id"), failed.get("job_id"));
    assert_eq!(rows[10].get("job"), "broken#1");
    assert!(
        rows[10].get("prompt_id").ends_with("-2"),
        "second attempt: {:?}",
        rows[10]
    );

    let ok = rows[0].get("job_id").to_string();
    let out = p
        .cli(&[
            "rerun",
            "out/runs.csv",
            "--job",
            &ok,
            "--server",
            &sim.url(),
        ])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(p.rows().len(), 12);
    assert_eq!(p.rows()[11].get("job_id"), ok);

    let out = p
        .cli(&[
            "rerun",
            "out/runs.csv",
            "--job",
            "000000000000",
            "--server",
            &sim.url(),
        ])
        .await;
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("no job '000000000000' in the log"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_workflow_is_an_error_unless_allowed() {
    let sim = sim().await;
    let p = Project::new();
    first_run(&p, &sim.url()).await;
    let path = p.path("workflows/t2i.json");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"blurry\"", "\"grainy\"");
    std::fs::write(&path, text).unwrap();
    let out = p
        .cli(&[
            "rerun",
            "out/runs.csv",
            "--status",
            "ok",
            "--server",
            &sim.url(),
        ])
        .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("t2i.json"), "{}", out.stderr);
    assert!(
        out.stderr.contains("--allow-changed-workflow"),
        "{}",
        out.stderr
    );
    assert_eq!(p.rows().len(), 10, "nothing ran");
    let out = p
        .cli(&[
            "rerun",
            "out/runs.csv",
            "--status",
            "ok",
            "--allow-changed-workflow",
            "--output",
            "changed",
            "--server",
            &sim.url(),
        ])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows = read_rows(&p.path("changed/runs.csv"));
    assert_eq!(rows.len(), 9);
    let old: std::collections::BTreeSet<_> = p
        .rows()
        .iter()
        .map(|r| r.get("job_id").to_string())
        .collect();
    let changed = rows
        .iter()
        .filter(|r| r.get("workflow").ends_with("t2i.json"))
        .count();
    assert_eq!(changed, 8);
    for r in rows
        .iter()
        .filter(|r| r.get("workflow").ends_with("t2i.json"))
    {
        assert!(!old.contains(r.get("job_id")), "new content, new id");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_workflow_falls_back_to_the_prompt_as_sent() {
    let sim = sim().await;
    let p = Project::new();
    first_run(&p, &sim.url()).await;
    std::fs::remove_file(p.path("workflows/t2i.json")).unwrap();
    let out = p
        .cli(&[
            "rerun",
            "out/runs.csv",
            "--status",
            "ok",
            "--output",
            "fallback",
            "--server",
            &sim.url(),
        ])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stderr.matches("warning:").count(), 8, "{}", out.stderr);
    let before = images_by_job(&p.rows(), &p.out());
    let after = images_by_job(
        &read_rows(&p.path("fallback/runs.csv")),
        &p.path("fallback"),
    );
    assert_eq!(before, after);
}

/// With the input image gone, `rerun` falls back to the prompt as sent and
/// uploads the input kept in `inputs/` to a fresh server (issue #8 item 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_from_the_prompt_uploads_the_kept_input_to_a_fresh_server() {
    let first = sim().await;
    let p = Project::new();
    first_run(&p, &first.url()).await;
    let invert = p
        .rows()
        .into_iter()
        .find(|r| r.get("job") == "invert#1")
        .unwrap();
    std::fs::remove_file(p.path("inputs/red.png")).unwrap();
    let fresh = sim().await;
    let out = p
        .cli(&[
            "rerun",
            "out/runs.csv",
            "--job",
            invert.get("job_id"),
            "--output",
            "again",
            "--server",
            &fresh.url(),
        ])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("prompts/"), "{}", out.stderr);
    let again = read_rows(&p.path("again/runs.csv"));
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].get("status"), "ok", "{again:?}");
    assert_eq!(
        images_by_job(&again, &p.path("again")),
        images_by_job(&[invert], &p.out()),
        "the same image, from the kept input"
    );
}

/// `rerun` takes `run`'s options (issue #8 item 10): a shard of the log's
/// jobs, and the failure limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_takes_the_run_options() {
    let sim = sim().await;
    let p = Project::new();
    first_run(&p, &sim.url()).await;
    let jobs = p.rows().len();
    let out = p
        .cli(&[
            "rerun",
            "out/runs.csv",
            "--output",
            "half",
            "--shard",
            "1/2",
            "--max-failures",
            "5",
            "--concurrency",
            "3",
            "--server",
            &sim.url(),
        ])
        .await;
    assert!(out.code == 0 || out.code == 1, "{}", out.stderr);
    let half = read_rows(&p.path("half/runs.csv"));
    assert_eq!(half.len(), jobs.div_ceil(2), "{half:?}");
    let out = p
        .cli(&[
            "rerun",
            "out/runs.csv",
            "--status",
            "failed",
            "--output",
            "fast",
            "--fail-fast",
            "--server",
            &sim.url(),
        ])
        .await;
    assert_eq!(out.code, 1, "{}", out.stderr);
}

/// One group sets the negative prompt to an empty string on purpose, the
/// other leaves the workflow's own.
const EMPTY: &str = r#"version: 1
params:
  negative: "7.text"
jobs:
  - name: empty
    workflow: t2i
    set:
      negative: ""
    seeds: [1]
  - name: unset
    workflow: t2i
    seeds: [1]
"#;

/// An empty string set on purpose is not an unset parameter: `runs.csv`
/// writes it `""` (an empty cell is unset), `rerun` rebuilds both jobs from
/// their rows alone (no prompt file to fall back on) as the same jobs with
/// the same prompts, and `export` gives `""` against `null`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_string_set_on_purpose_is_not_an_unset_parameter() {
    let sim = sim().await;
    let p = Project::new();
    p.write("e.yaml", EMPTY);
    let url = sim.url();
    let out = p
        .cli(&["run", "e.yaml", "--output", "out", "--server", &url])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows = p.rows();
    let row = |group: &str| {
        rows.iter()
            .find(|r| r.get("job").starts_with(group))
            .unwrap()
            .clone()
    };
    assert_eq!(row("empty#").get("negative"), "\"\"");
    assert_eq!(row("unset#").get("negative"), "");
    let raw = std::fs::read_to_string(p.out().join("runs.csv")).unwrap();
    assert!(raw.contains(",\"\"\"\"\"\","), "the cell as CSV: {raw}");

    let sent: BTreeMap<String, String> = rows
        .iter()
        .map(|r| {
            let id = r.get("job_id").to_string();
            let prompt = std::fs::read_to_string(p.out().join(format!("prompts/{id}.json")));
            (id, prompt.unwrap())
        })
        .collect();
    std::fs::remove_dir_all(p.out().join("prompts")).unwrap();
    let again = p
        .cli(&[
            "rerun",
            "out/runs.csv",
            "--output",
            "again",
            "--server",
            &url,
        ])
        .await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(!again.stderr.contains("warning"), "{}", again.stderr);
    for (id, prompt) in &sent {
        let resent = std::fs::read_to_string(p.path(&format!("again/prompts/{id}.json")));
        assert_eq!(
            resent.as_ref().ok(),
            Some(prompt),
            "job {id} sent as before"
        );
    }
    let negative = |id: &str| -> serde_json::Value {
        let prompt: serde_json::Value = serde_json::from_str(&sent[id]).unwrap();
        prompt["7"]["inputs"]["text"].clone()
    };
    assert_eq!(negative(row("empty#").get("job_id")), "");
    assert_eq!(negative(row("unset#").get("job_id")), "blurry");
    let again_rows = read_rows(&p.path("again/runs.csv"));
    assert_eq!(
        again_rows
            .iter()
            .map(|r| (r.get("job_id").to_string(), r.get("negative").to_string()))
            .collect::<BTreeMap<_, _>>(),
        rows.iter()
            .map(|r| (r.get("job_id").to_string(), r.get("negative").to_string()))
            .collect::<BTreeMap<_, _>>()
    );

    let export = p
        .cli(&["export", "out", "--format", "imagefolder", "--to", "ds"])
        .await;
    assert_eq!(export.code, 0, "{}", export.stderr);
    let meta: Vec<serde_json::Value> = std::fs::read_to_string(p.path("ds/metadata.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |group: &str| {
        meta.iter()
            .find(|m| m["job"].as_str().unwrap().starts_with(group))
            .unwrap()["negative"]
            .clone()
    };
    assert_eq!(of("empty#"), serde_json::json!(""));
    assert_eq!(of("unset#"), serde_json::Value::Null);
}

/// `rerun` reads a run folder like the other commands (issue #23 item 4):
/// a kept input or a sent prompt reached through a symbolic link is never
/// read, so a hand-edited folder cannot make it upload a file from outside
/// to the server; and a FIFO where a prompt was never blocks it. Each is
/// refused with one line naming the job's file.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_never_sends_a_file_reached_through_a_link_nor_waits_on_a_fifo() {
    use std::os::unix::fs::symlink;
    let first = sim().await;
    let p = Project::new();
    first_run(&p, &first.url()).await;
    let invert = p
        .rows()
        .into_iter()
        .find(|r| r.get("job") == "invert#1")
        .unwrap();
    let id = invert.get("job_id").to_string();
    // The workflow's input is gone: rerun takes the prompt as sent and
    // the input kept in `inputs/`.
    std::fs::remove_file(p.path("inputs/red.png")).unwrap();
    let kept = std::fs::read_dir(p.path("out/inputs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    const SECRET: &[u8] = b"SECRET-NOT-AN-IMAGE";
    let secret = p.write("elsewhere/secret.png", SECRET);
    std::fs::remove_file(&kept).unwrap();
    symlink(&secret, &kept).unwrap();
    let prompt = p.path(&format!("out/prompts/{id}.json"));
    let sent = p.write("elsewhere/prompt.json", std::fs::read(&prompt).unwrap());
    let fresh = sim().await;
    let rerun = |to: &'static str| {
        let (p, id, url) = (&p, id.clone(), fresh.url());
        async move {
            let args = [
                "rerun",
                "out/runs.csv",
                "--job",
                &id,
                "--output",
                to,
                "--server",
                &url,
            ];
            tokio::time::timeout(std::time::Duration::from_secs(30), p.cli(&args))
                .await
                .expect("rerun ends (never waits on a FIFO)")
        }
    };
    let out = rerun("again").await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("inputs/") && out.stderr.contains("symbolic link"),
        "{}",
        out.stderr
    );
    // The prompt as sent, through a link, then as a FIFO.
    std::fs::remove_file(&kept).unwrap();
    std::fs::copy(&secret, &kept).unwrap();
    std::fs::remove_file(&prompt).unwrap();
    symlink(&sent, &prompt).unwrap();
    let out = rerun("again2").await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("prompts/{id}.json")) && out.stderr.contains("symbolic link"),
        "{}",
        out.stderr
    );
    std::fs::remove_file(&prompt).unwrap();
    crate::harness::mkfifo(&prompt);
    let out = rerun("again3").await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("not a regular file"), "{}", out.stderr);
    // Nothing from outside reached the server or a new folder.
    for dir in [
        fresh.input_dir().to_path_buf(),
        p.path("again"),
        p.path("again2"),
    ] {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let bytes = std::fs::read(e.path()).unwrap_or_default();
            assert!(
                !bytes.windows(SECRET.len()).any(|w| w == SECRET),
                "{} holds the secret",
                e.path().display()
            );
        }
    }
    assert!(
        !p.path("again/inputs").exists()
            || std::fs::read_dir(p.path("again/inputs"))
                .unwrap()
                .next()
                .is_none()
    );
}

/// Forty jobs of one workflow.
const MANY: &str = r#"version: 1
jobs:
  - name: many
    workflow: t2i
    matrix:
      "6.text": ["a fox", "a wolf", "a bear", "an owl"]
    seeds: {count: 10, base: 1}
"#;

/// `rerun --status failed,ok` of many rows (issue #24): each job runs once,
/// numbered after the attempts its log has (in place: 2, then 3); a shard
/// keeps its positions in the selection; a workflow changed since is
/// refused for every job, before anything runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_of_many_rows_runs_each_job_once_numbered_after_its_attempts() {
    let sim = sim().await;
    let p = Project::new();
    p.write("many.yaml", MANY);
    let url = sim.url();
    let out = p
        .cli(&["run", "many.yaml", "--output", "out", "--server", &url])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let first = p.rows();
    assert_eq!(first.len(), 40);
    let ids = |rows: &[crate::harness::Row]| -> Vec<String> {
        let mut ids: Vec<String> = rows.iter().map(|r| r.get("job_id").to_string()).collect();
        ids.sort();
        ids
    };
    let rerun = |extra: &'static [&'static str]| {
        let (p, url) = (&p, url.clone());
        async move {
            let mut args = vec!["rerun", "out", "--server", &url];
            args.extend(extra);
            p.cli(&args).await
        }
    };
    let out = rerun(&["--status", "failed,ok"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows = p.rows();
    assert_eq!(rows.len(), 80);
    assert_eq!(ids(&rows[40..]), ids(&first), "every job once");
    for row in &rows[40..] {
        assert!(row.get("prompt_id").ends_with("-2"), "{row:?}");
    }

    // In the log's order of jobs (by label), the shard 2/3 keeps the
    // positions 1, 4, 7…
    let mut by_label: Vec<(u32, String)> = first
        .iter()
        .map(|r| {
            let n = r.get("job").rsplit_once('#').unwrap().1.parse().unwrap();
            (n, r.get("job_id").to_string())
        })
        .collect();
    by_label.sort();
    let mut shard: Vec<String> = by_label
        .iter()
        .skip(1)
        .step_by(3)
        .map(|(_, id)| id.clone())
        .collect();
    shard.sort();
    let out = rerun(&["--status", "ok", "--shard", "2/3"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows = p.rows();
    assert_eq!(rows.len(), 80 + 13);
    assert_eq!(ids(&rows[80..]), shard);
    for row in &rows[80..] {
        assert!(row.get("prompt_id").ends_with("-3"), "{row:?}");
    }

    let path = p.path("workflows/t2i.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("\"blurry\"", "\"grainy\"")).unwrap();
    let out = rerun(&["--status", "ok"]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(
        out.stderr.matches("--allow-changed-workflow").count(),
        40,
        "every job: {}",
        out.stderr
    );
    assert_eq!(p.rows().len(), 93, "nothing ran");
    assert_eq!(sim.stats().prompts_executed, 93, "nothing was queued");
}
