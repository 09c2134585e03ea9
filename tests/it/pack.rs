//! `pack:` (issue #29) end to end: a packed sweep on the simulator logs a
//! row, an id and a file per image with its batch index; a pack whose
//! prompt fails fails each of its rows; a killed run resumes to each job
//! ok once; `rerun` of one packed row gives its image byte for byte; the
//! graphs that cannot take a batch are refused with one line.

use std::collections::{BTreeMap, BTreeSet};

use comfy_batch::sim::SimConfig;

use crate::harness::{Project, Row, queue_ids, read_rows, sim, sim_with, wait_for};

/// 2 cfg × 5 seeds in packs of 2: per cfg, packs of 2, 2 and 1.
const PACKED: &str = r#"version: 1
workflows:
  t2i: workflows/t2i.json
jobs:
  - name: fox
    workflow: t2i
    matrix:
      cfg: [5, 6.5]
    seeds: {count: 5, base: 3}
    pack: 2
"#;

/// [`PACKED`] with `count` seeds in packs of `pack`, over `cfg` (a YAML
/// list) and with `extra` lines in the group.
fn packed(count: u32, pack: u32, cfg: &str, extra: &str) -> String {
    PACKED
        .replace("count: 5", &format!("count: {count}"))
        .replace("pack: 2", &format!("pack: {pack}{extra}"))
        .replace("[5, 6.5]", cfg)
}

/// The names in `out/prompts/`, each a regular file (no links).
fn prompt_files(p: &Project) -> BTreeSet<String> {
    std::fs::read_dir(p.out().join("prompts"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            assert!(e.file_type().unwrap().is_file(), "{:?}", e.path());
            e.file_name().to_string_lossy().into_owned()
        })
        .collect()
}

/// The rows of a packed run, newest per job, by job id.
fn by_id(rows: &[Row]) -> BTreeMap<String, Row> {
    rows.iter()
        .map(|r| (r.get("job_id").to_string(), r.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packed_sweep_logs_a_row_an_id_and_its_own_image_per_batch_index() {
    let sim = sim().await;
    let p = Project::new();
    p.write("packed.yaml", PACKED);
    let out = p.run("packed.yaml", &[&sim], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows = p.rows();
    assert_eq!(rows.len(), 10, "one row per image");
    // The plan says which job is which; the log agrees.
    let plan = p.cli(&["plan", "packed.yaml", "--format", "csv"]).await;
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    p.write("plan.csv", &plan.stdout);
    let planned = read_rows(&p.path("plan.csv"));
    let logged = by_id(&rows);
    assert_eq!(logged.len(), 10, "ten ids");
    let mut packs: BTreeMap<String, Vec<&Row>> = BTreeMap::new();
    for job in &planned {
        let row = &logged[job.get("job_id")];
        for column in ["seed", "batch_index", "pack_size", "pack_id"] {
            assert_eq!(row.get(column), job.get(column), "{column} of {row:?}");
        }
        assert_eq!(row.get("status"), "ok", "{row:?}");
        let id = row.get("job_id");
        assert_eq!(row.images(), [format!("images/{id}_9_0.png")]);
        packs
            .entry(row.get("pack_id").to_string())
            .or_default()
            .push(row);
    }
    // Per cfg: packs of 2, 2 and 1 (the last one short).
    let mut sizes: Vec<usize> = packs.values().map(Vec::len).collect();
    sizes.sort();
    assert_eq!(sizes, [1, 1, 2, 2, 2, 2]);
    for (pack_id, members) in &packs {
        let size = members.len();
        let seeds: BTreeSet<&str> = members.iter().map(|r| r.get("seed")).collect();
        assert_eq!(seeds.len(), 1, "one seed per pack");
        let indices: BTreeSet<String> = members
            .iter()
            .map(|r| r.get("batch_index").to_string())
            .collect();
        let expected: BTreeSet<String> = (0..size).map(|i| i.to_string()).collect();
        assert_eq!(indices, expected);
        // File i of the pack's batch (the server's names follow the
        // batch) is the row with batch index i, byte for byte.
        let folder = sim.output_dir().join("comfy-batch").join(&pack_id[..2]);
        for row in members {
            let i: u32 = row.get("batch_index").parse().unwrap();
            let theirs = std::fs::read(folder.join(format!("{pack_id}_{:05}_.png", i + 1)))
                .expect("the server saved the pack's batch under the pack id");
            let ours = std::fs::read(p.out().join(&row.images()[0])).unwrap();
            assert_eq!(ours, theirs, "{row:?}");
        }
    }
    // The images of a pack differ by their index: ten images, ten contents.
    let contents: BTreeSet<Vec<u8>> = rows
        .iter()
        .map(|r| std::fs::read(p.out().join(&r.images()[0])).unwrap())
        .collect();
    assert_eq!(contents.len(), 10);
    // One prompt per pack: 2 cfg × packs of 2, 2 and 1.
    assert_eq!(sim.stats().prompts_executed, 6, "{}", out.stderr);
    // … kept once, as prompts/<pack_id>.json: no file per job, no link.
    let kept: BTreeSet<String> = prompt_files(&p);
    let expected: BTreeSet<String> = packs.keys().map(|id| format!("{id}.json")).collect();
    assert_eq!(kept, expected, "one prompt file per pack");
    let prompt_ids: BTreeSet<&str> = rows.iter().map(|r| r.get("prompt_id")).collect();
    assert_eq!(prompt_ids.len(), 6, "a pack's rows name its one prompt");
    for row in &rows {
        assert!(!row.get("finished_at").is_empty(), "{row:?}");
    }
    // merge carries each pack's one prompt file.
    let merged = p.cli(&["merge", "merged", "out"]).await;
    assert_eq!(merged.code, 0, "{}", merged.stderr);
    for pack_id in packs.keys() {
        let name = format!("prompts/{pack_id}.json");
        assert_eq!(
            std::fs::read(p.path("merged").join(&name)).unwrap(),
            std::fs::read(p.out().join(&name)).unwrap(),
            "{name}"
        );
    }
    // A second run has nothing left to do.
    let again = p.run("packed.yaml", &[&sim], &[]).await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(p.rows().len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pack_whose_prompt_fails_fails_each_of_its_rows_with_the_cause() {
    let sim = sim_with(SimConfig {
        fail_rate: 1.0,
        ..SimConfig::default()
    })
    .await;
    let p = Project::new();
    p.write("packed.yaml", PACKED);
    let out = p.run("packed.yaml", &[&sim], &[]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    let rows = p.rows();
    assert_eq!(rows.len(), 10, "a row per image, not per pack");
    for row in &rows {
        assert_eq!(row.get("status"), "failed", "{row:?}");
        assert!(!row.get("error").is_empty(), "the cause: {row:?}");
        assert!(row.images().is_empty(), "{row:?}");
        assert!(!row.get("batch_index").is_empty(), "{row:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_inside_a_pack_resumes_to_each_image_ok_once() {
    let sim = sim_with(SimConfig {
        step_ms: 15,
        ..SimConfig::default()
    })
    .await;
    let p = Project::new();
    let text = packed(9, 4, "[5, 6.5]", "");
    p.write("packed.yaml", &text);
    let mut run = p.spawn("packed.yaml", &[&sim], &["--concurrency", "2"]);
    wait_for("rows in runs.csv", 60, || p.row_count() >= 3).await;
    run.signal(libc::SIGKILL);
    assert_eq!(run.exit(30).await, -libc::SIGKILL);
    assert!(p.row_count() < 18, "killed too late");
    let out = p.run("packed.yaml", &[&sim], &["--concurrency", "2"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows = p.assert_each_job_ok_once(18);
    for row in &rows {
        let id = row.get("job_id");
        assert_eq!(row.images(), [format!("images/{id}_9_0.png")]);
    }
    let packs: BTreeSet<String> = rows
        .iter()
        .map(|r| format!("{}.json", r.get("pack_id")))
        .collect();
    assert_eq!(packs.len(), 6, "2 cfg × packs of 4, 4 and 1");
    assert_eq!(prompt_files(&p), packs, "one prompt file per pack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_while_its_pack_runs_adopts_the_packs_prompt_on_resume() {
    // One pack of 4: killed while its prompt runs, before any row.
    let sim = sim_with(SimConfig {
        step_ms: 60,
        ..SimConfig::default()
    })
    .await;
    let p = Project::new();
    let text = packed(4, 4, "[5]", "");
    p.write("packed.yaml", &text);
    let mut run = p.spawn("packed.yaml", &[&sim], &[]);
    wait_for("the pack's prompt running", 60, || {
        p.out()
            .join("prompts")
            .read_dir()
            .is_ok_and(|mut d| d.next().is_some())
            && sim.stats().prompts_executed == 0
    })
    .await;
    loop {
        let (running, _) = queue_ids(&sim).await;
        if running.iter().any(|id| id.starts_with("cb-")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    run.signal(libc::SIGKILL);
    assert_eq!(run.exit(30).await, -libc::SIGKILL);
    assert_eq!(p.row_count(), 0, "killed before any row");
    let out = p.run("packed.yaml", &[&sim], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows = p.assert_each_job_ok_once(4);
    // The killed run's prompt was adopted, not sent again.
    assert_eq!(sim.stats().prompts_executed, 1, "{}", out.stderr);
    let pack = format!("{}.json", rows[0].get("pack_id"));
    assert_eq!(prompt_files(&p), BTreeSet::from([pack]));
}

/// Runs [`PACKED`] in `p` against a simulator; returns the row of the
/// second image of a full pack (not the image its seed makes alone).
async fn second_of_a_pack(p: &Project) -> Row {
    let sim = sim().await;
    p.write("packed.yaml", PACKED);
    let out = p.run("packed.yaml", &[&sim], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    p.rows()
        .into_iter()
        .find(|r| r.get("batch_index") == "1")
        .expect("a packed row at batch index 1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_of_one_packed_row_gives_its_image_byte_for_byte() {
    let p = Project::new();
    let row = &second_of_a_pack(&p).await;
    let id = row.get("job_id").to_string();
    let fresh = sim().await;
    let out = p
        .cli(&[
            "rerun",
            "out/runs.csv",
            "--job",
            &id,
            "--output",
            "again",
            "--server",
            &fresh.url(),
        ])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);
    let again = read_rows(&p.path("again/runs.csv"));
    assert_eq!(again.len(), 1);
    let redone = &again[0];
    assert_eq!(redone.get("job_id"), id);
    for column in ["seed", "batch_index", "pack_size", "pack_id"] {
        assert_eq!(redone.get(column), row.get(column), "{column}");
    }
    let before = std::fs::read(p.out().join(&row.images()[0])).unwrap();
    let after = std::fs::read(p.path("again").join(&redone.images()[0])).unwrap();
    assert_eq!(before, after, "the same image, byte for byte");
    let pack = row.get("pack_id");
    assert_eq!(
        std::fs::read(p.out().join(format!("prompts/{pack}.json"))).unwrap(),
        std::fs::read(p.path(&format!("again/prompts/{pack}.json"))).unwrap(),
        "the pack's prompt is sent again as it was"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_of_a_packed_row_whose_workflow_is_gone_sends_the_packs_prompt() {
    let p = Project::new();
    let row = &second_of_a_pack(&p).await;
    let (id, pack) = (row.get("job_id"), row.get("pack_id"));
    assert!(!p.out().join(format!("prompts/{id}.json")).exists());
    std::fs::remove_file(p.path("workflows/t2i.json")).unwrap();
    let fresh = sim().await;
    let out = p
        .cli(&[
            "rerun",
            "out/runs.csv",
            "--job",
            id,
            "--output",
            "again",
            "--server",
            &fresh.url(),
        ])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let used = format!("); using prompts/{pack}.json");
    assert!(
        out.stderr.contains("workflow unreadable (") && out.stderr.contains(&used),
        "{}",
        out.stderr
    );
    let again = read_rows(&p.path("again/runs.csv"));
    assert_eq!(again.len(), 1);
    let redone = &again[0];
    for column in ["job_id", "seed", "batch_index", "pack_size", "pack_id"] {
        assert_eq!(redone.get(column), row.get(column), "{column}");
    }
    assert_eq!(
        std::fs::read(p.out().join(&row.images()[0])).unwrap(),
        std::fs::read(p.path("again").join(&redone.images()[0])).unwrap(),
        "the same image, byte for byte"
    );
    assert_eq!(fresh.stats().prompts_executed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graph_that_cannot_take_a_pack_is_refused_with_one_line() {
    let p = Project::new();
    p.write("inputs/red.png", crate::run::tiny_png([200, 10, 10]));
    // The sampler's latent is the encoded input image.
    let t2i = std::fs::read_to_string(p.path("workflows/t2i.json")).unwrap();
    let mut i2i: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&t2i).unwrap();
    i2i["5"] = serde_json::json!({"class_type": "VAEEncode", "inputs": {"pixels": ["1", 0], "vae": ["4", 2]}});
    i2i.insert(
        "1".into(),
        serde_json::json!({"class_type": "LoadImage", "inputs": {"image": "example.png"}}),
    );
    p.write("workflows/sdedit.json", serde_json::to_vec(&i2i).unwrap());
    p.write(
        "i2i.yaml",
        "version: 1\nworkflows:\n  i2i: workflows/sdedit.json\njobs:\n  - name: redo\n    workflow: i2i\n    set: {image: inputs/red.png}\n    seeds: [1, 2]\n    pack: 2\n",
    );
    let out = p.cli(&["plan", "i2i.yaml"]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    assert!(
        lines[0].contains("i2i.yaml:9:5: cannot pack in group 'redo' (workflow i2i): node"),
        "{}",
        out.stderr
    );
    assert!(lines[0].contains("(LoadImage)"), "{}", out.stderr);
    let run = p.cli(&["run", "i2i.yaml", "--output", "out"]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(!p.out().join("runs.csv").exists(), "nothing written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_packs_prompt_is_queued_while_a_pack_runs() {
    // Concurrency counts prompts: the jobs waiting for a pack's prompt take
    // no place from the next pack's.
    let sim = sim_with(SimConfig {
        step_ms: 25,
        ..SimConfig::default()
    })
    .await;
    let p = Project::new();
    let text = packed(8, 4, "[5]", "");
    p.write("packed.yaml", &text);
    let mut run = p.spawn("packed.yaml", &[&sim], &["--concurrency", "2"]);
    let mut most = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while sim.stats().prompts_executed < 2 && std::time::Instant::now() < deadline {
        let (running, pending) = queue_ids(&sim).await;
        let ours = running
            .iter()
            .chain(&pending)
            .filter(|id| id.starts_with("cb-"));
        most = most.max(ours.count());
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(run.exit(60).await, 0, "{}", run.stderr());
    assert_eq!(most, 2, "both packs' prompts on the server at once");
    assert_eq!(sim.stats().prompts_executed, 2);
    p.assert_each_job_ok_once(8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_pack_logs_no_prompt_id_that_was_never_sent() {
    // One pack of 4 running 40 steps × 20 ms: SIGTERM while its prompt
    // runs and its other jobs wait for it.
    let sim = sim_with(SimConfig {
        step_ms: 20,
        ..SimConfig::default()
    })
    .await;
    let p = Project::new();
    let text = packed(4, 4, "[5]", "\n    set:\n      steps: 40");
    p.write("packed.yaml", &text);
    let mut run = p.spawn("packed.yaml", &[&sim], &["--concurrency", "2"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (running, _) = queue_ids(&sim).await;
        if running.iter().any(|id| id.starts_with("cb-")) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the pack never ran");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    run.signal(libc::SIGTERM);
    assert_eq!(run.exit(30).await, 143, "{}", run.stderr());
    let rows = p.rows();
    // The jobs waiting for the pack's prompt are logged too.
    assert!(rows.len() >= 2, "{rows:?}");
    // The server saw one prompt: every row names it, or none.
    let history = crate::harness::get_json(&format!("{}/history", sim.url())).await;
    let sent: BTreeSet<&str> = history
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(sent.len(), 1, "{history}");
    for row in &rows {
        assert_eq!(row.get("status"), "interrupted", "{row:?}");
        let id = row.get("prompt_id");
        assert!(
            id.is_empty() || sent.contains(id),
            "{id} never sent: {row:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_pack_runs_its_prompt_once_per_attempt_not_once_per_job() {
    // Every prompt fails: a pack's failure is each of its jobs' failure,
    // not a cue for the next job of the pack to send the same prompt again.
    let sim = sim_with(SimConfig {
        fail_rate: 1.0,
        ..SimConfig::default()
    })
    .await;
    let p = Project::new();
    p.write("packed.yaml", PACKED);
    let out = p.run("packed.yaml", &[&sim], &["--retries", "1"]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    // 2 cfg × packs of 2, 2 and 1, each tried twice.
    assert_eq!(sim.stats().prompts_executed, 12, "{}", out.stderr);
    let rows = p.rows();
    assert_eq!(rows.len(), 20, "a row per image and attempt");
    let mut prompts: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for row in &rows {
        assert_eq!(row.get("status"), "failed", "{row:?}");
        assert!(!row.get("error").is_empty(), "the cause: {row:?}");
        let attempt = row.get("prompt_id").rsplit('-').next().unwrap().to_string();
        prompts
            .entry((row.get("pack_id").to_string(), attempt))
            .or_default()
            .insert(row.get("prompt_id").to_string());
    }
    // A pack's rows of one attempt name its one prompt.
    assert_eq!(prompts.len(), 12, "{prompts:?}");
    assert!(prompts.values().all(|ids| ids.len() == 1), "{prompts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_names_a_hand_edited_pack_cell_once_by_its_log_line() {
    let sim = sim().await;
    let p = Project::new();
    p.write("packed.yaml", PACKED);
    let out = p.run("packed.yaml", &[&sim], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let log = p.out().join("runs.csv");
    let text = std::fs::read_to_string(&log).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let at = lines[0]
        .split(',')
        .position(|c| c == "batch_index")
        .unwrap();
    let mut cells: Vec<String> = lines[3].split(',').map(String::from).collect();
    cells[at] = "x9".into();
    lines[3] = cells.join(",");
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let out = p
        .cli(&[
            "rerun",
            "out/runs.csv",
            "--output",
            "again",
            "--server",
            &sim.url(),
        ])
        .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    let errors: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(errors.len(), 1, "{}", out.stderr);
    assert!(
        errors[0].starts_with("error: out/runs.csv: line 4: batch_index 'x9', pack_size '"),
        "{}",
        out.stderr
    );
    assert_eq!(errors[0].matches("'x9'").count(), 1, "{}", out.stderr);
    assert!(!p.path("again/runs.csv").exists(), "nothing run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pack_job_that_lags_logs_each_attempt_with_that_attempts_prompt() {
    // Every prompt fails and each job retries: a job of a pack that starts
    // its attempt late (the pack's prompt of a later attempt already
    // failed) still ends attempt k with attempt k's prompt, so no row of a
    // job repeats a prompt id another of its rows has.
    let sim = sim_with(SimConfig {
        fail_rate: 1.0,
        ..SimConfig::default()
    })
    .await;
    let p = Project::new();
    p.write("packed.yaml", packed(8, 4, "[5, 6.5]", ""));
    let out = p.run("packed.yaml", &[&sim], &["--retries", "4"]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    // 2 cfg × 2 packs of 4, each sent once per attempt (5).
    assert_eq!(sim.stats().prompts_executed, 20, "{}", out.stderr);
    let rows = p.rows();
    assert_eq!(rows.len(), 80, "a row per image and attempt");
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in &rows {
        seen.entry(row.get("job_id").to_string())
            .or_default()
            .push(row.get("prompt_id").to_string());
    }
    for (job, prompts) in &seen {
        let distinct: BTreeSet<&String> = prompts.iter().collect();
        assert_eq!(distinct.len(), prompts.len(), "{job}: {prompts:?}");
    }
}
