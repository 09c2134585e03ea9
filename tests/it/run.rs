//! `comfy-batch run` end to end: the real binary against in-process
//! simulators over loopback.

use std::collections::BTreeSet;

use crate::harness::{Project, Row, sim, sim_file, sim_with};

const SWEEP: &str = r#"version: 1
workflows:
  t2i: workflows/t2i.json
jobs:
  - name: fox
    workflow: t2i
    matrix:
      prompt: ["a red fox in the snow", "a lighthouse at dusk"]
      cfg: [5, 6.5]
    seeds: [1, 2]
"#;

const TINY: &str = r#"version: 1
workflows:
  tiny: workflows/tiny.json
jobs:
  - name: colors
    workflow: tiny
    matrix:
      "Canvas.color": [255, 65280, 16711680, 0]
      "1.width": [16, 24]
"#;

fn redact_csv(text: &str, project: &Project, servers: &[String]) -> String {
    let mut out = text.replace(project.dir.path().to_str().unwrap(), "[DIR]");
    for (i, s) in servers.iter().enumerate() {
        out = out.replace(s.as_str(), &format!("[SERVER{}]", i + 1));
    }
    let time = regex_lite::Regex::new(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z").unwrap();
    let secs = regex_lite::Regex::new(r",\d+\.\d{3},\d+\.\d{3},").unwrap();
    let pid = regex_lite::Regex::new(r"cb-[0-9a-f]{8}-").unwrap();
    let out = time.replace_all(&out, "[TIME]");
    let out = secs.replace_all(&out, ",[S],[S],");
    let out = pid.replace_all(&out, "cb-[RUN]-").into_owned();
    // Rows land in completion order; the snapshot pins their content.
    let mut lines: Vec<&str> = out.lines().collect();
    lines[1..].sort();
    lines.join("\n") + "\n"
}

fn all_ok(rows: &[Row]) {
    for row in rows {
        assert_eq!(row.get("status"), "ok", "{row:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_lands_every_image_byte_for_byte_with_a_complete_csv() {
    let sim = sim().await;
    let p = Project::new();
    p.write("sweep.yaml", SWEEP);
    let out = p.run("sweep.yaml", &[&sim], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows = p.rows();
    assert_eq!(rows.len(), 8);
    all_ok(&rows);
    let ids: BTreeSet<_> = rows.iter().map(|r| r.get("job_id").to_string()).collect();
    assert_eq!(ids.len(), 8, "one row per job");
    for row in &rows {
        let images = row.images();
        assert_eq!(images.len(), 1);
        let id = row.get("job_id");
        assert_eq!(images[0], format!("images/{id}_9_0.png"));
        let ours = std::fs::read(p.out().join(&images[0])).unwrap();
        let theirs = std::fs::read(sim_file(&sim, id, 1)).unwrap();
        assert_eq!(ours, theirs, "image of {id} is the server's bytes");
        assert!(p.out().join(format!("prompts/{id}.json")).is_file());
        assert!(!row.get("queued_at").is_empty() && !row.get("finished_at").is_empty());
    }
    let csv = std::fs::read_to_string(p.out().join("runs.csv")).unwrap();
    insta::assert_snapshot!(redact_csv(&csv, &p, &[sim.url()]));
    // Plain progress lines, one per job start and end, when not on a terminal.
    assert_eq!(
        out.stderr
            .lines()
            .filter(|l| l.starts_with("start"))
            .count(),
        8,
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("done: 8 ok, 0 not ok"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_seeds_and_params_give_different_images() {
    let sim = sim().await;
    let p = Project::new();
    p.write("sweep.yaml", SWEEP);
    let out = p.run("sweep.yaml", &[&sim], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let bytes: BTreeSet<Vec<u8>> = p
        .rows()
        .iter()
        .map(|r| std::fs::read(p.out().join(&r.images()[0])).unwrap())
        .collect();
    assert_eq!(bytes.len(), 8, "each job made its own image");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_rejections_are_logged_as_rejected() {
    let sim = sim().await;
    let p = Project::new();
    p.write(
        "bad.yaml",
        r#"version: 1
jobs:
  - name: partial
    workflow: partial
    set:
      "3.upscale_method": "bogus"
  - name: all-invalid
    workflow: t2i
    set:
      sampler: bogus_sampler
    seeds: [1]
"#,
    );
    let out = p.run("bad.yaml", &[&sim], &["--no-check"]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    let rows = p.rows();
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert_eq!(row.get("status"), "rejected", "{row:?}");
        assert!(row.images().is_empty());
    }
    let partial = rows.iter().find(|r| r.get("job") == "partial#1").unwrap();
    assert!(
        partial
            .get("error")
            .contains("node 3 (ImageScale) input 'upscale_method'"),
        "{partial:?}"
    );
    let all = rows
        .iter()
        .find(|r| r.get("job") == "all-invalid#1")
        .unwrap();
    assert!(all.get("error").contains("sampler_name"), "{all:?}");
    assert!(!all.get("error").contains('\n'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execution_error_fails_the_job_with_one_line() {
    let sim = sim().await;
    let p = Project::new();
    p.write(
        "err.yaml",
        r#"version: 1
jobs:
  - name: escape
    workflow: tiny
    set:
      "3.filename_prefix": "../escape"
  - name: fine
    workflow: tiny
"#,
    );
    let out = p.run("err.yaml", &[&sim], &[]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    let rows = p.rows();
    let bad = rows.iter().find(|r| r.get("job") == "escape#1").unwrap();
    assert_eq!(bad.get("status"), "failed");
    assert!(
        bad.get("error").starts_with("node 3 (SaveImage)"),
        "{bad:?}"
    );
    let good = rows.iter().find(|r| r.get("job") == "fine#1").unwrap();
    assert_eq!(good.get("status"), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_jobs_fully_cached_on_the_server_still_land() {
    let sim = sim().await;
    let p = Project::new();
    p.write("tiny.yaml", TINY);
    let first = p.run("tiny.yaml", &[&sim], &[]).await;
    assert_eq!(first.code, 0, "{}", first.stderr);
    let again = p
        .cli(&[
            "run",
            "tiny.yaml",
            "--output",
            "out2",
            "--server",
            &sim.url(),
        ])
        .await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    let a = p.rows();
    let b = crate::harness::read_rows(&p.path("out2/runs.csv"));
    assert_eq!(a.len(), 8);
    assert_eq!(b.len(), 8);
    all_ok(&b);
    for x in &a {
        let y = b
            .iter()
            .find(|y| y.get("job_id") == x.get("job_id"))
            .unwrap();
        let xi = std::fs::read(p.out().join(&x.images()[0])).unwrap();
        let yi = std::fs::read(p.path("out2").join(&y.images()[0])).unwrap();
        assert_eq!(xi, yi, "the cached replay names the same server file");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_deduplicated_and_the_returned_names_used() {
    let sim = sim().await;
    let p = Project::new();
    let red = tiny_png([255, 0, 0]);
    let other = tiny_png([0, 0, 255]);
    p.write("inputs/red.png", &red);
    p.write("inputs/again/red.png", &other);
    p.write(
        "i2i.yaml",
        r#"version: 1
jobs:
  - name: same
    workflow: i2i
    matrix:
      "3.filename_prefix": ["x/a", "x/b", "x/c"]
    set:
      image: inputs/red.png
  - name: clash
    workflow: i2i
    set:
      image: inputs/again/red.png
"#,
    );
    let out = p.run("i2i.yaml", &[&sim], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows = p.rows();
    assert_eq!(rows.len(), 4);
    all_ok(&rows);
    // Uploaded under their content names (two files called red.png with
    // different content no longer clash), each once, each kept in the
    // output's inputs/ for rerun.
    let content_name = |bytes: &[u8]| {
        use sha2::Digest;
        format!("{}.png", &hex::encode(sha2::Sha256::digest(bytes))[..16])
    };
    let mut names: Vec<String> = std::fs::read_dir(sim.input_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut expected = vec![content_name(&red), content_name(&other)];
    expected.sort();
    assert_eq!(names, expected);
    for (name, bytes) in [(content_name(&red), &red), (content_name(&other), &other)] {
        assert_eq!(&std::fs::read(sim.input_dir().join(&name)).unwrap(), bytes);
        assert_eq!(
            &std::fs::read(p.out().join("inputs").join(&name)).unwrap(),
            bytes
        );
    }
    for row in &rows {
        let prompt: serde_json::Value = serde_json::from_slice(
            &std::fs::read(p.out().join(format!("prompts/{}.json", row.get("job_id")))).unwrap(),
        )
        .unwrap();
        let expected = if row.get("job") == "clash#1" {
            content_name(&other)
        } else {
            content_name(&red)
        };
        assert_eq!(prompt["1"]["inputs"]["image"], expected.as_str());
        assert!(
            row.get("image").ends_with("red.png"),
            "the log keeps the local path"
        );
    }
}

/// Job ids follow an input image's content, not its path (issue #8 item 5):
/// an edited input is a new job, a moved one is the same job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_input_is_a_new_job_and_a_moved_one_is_not() {
    let sim = sim().await;
    let p = Project::new();
    let manifest = |path: &str| {
        format!(
            "version: 1\njobs:\n  - name: one\n    workflow: i2i\n    set:\n      image: {path}\n"
        )
    };
    p.write("inputs/red.png", tiny_png([255, 0, 0]));
    p.write("i2i.yaml", manifest("inputs/red.png"));
    assert_eq!(p.run("i2i.yaml", &[&sim], &[]).await.code, 0);
    p.write("inputs/red.png", tiny_png([0, 255, 0]));
    let out = p.run("i2i.yaml", &[&sim], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows = p.rows();
    assert_eq!(rows.len(), 2, "the edited input made a new job");
    assert_ne!(rows[0].get("job_id"), rows[1].get("job_id"));
    std::fs::rename(p.path("inputs/red.png"), p.path("inputs/green.png")).unwrap();
    p.write("i2i.yaml", manifest("inputs/green.png"));
    let out = p.run("i2i.yaml", &[&sim], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(p.rows().len(), 2, "the moved input is the same, done job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_image_websocket_frames_become_files() {
    let sim = sim().await;
    let p = Project::new();
    p.write(
        "ws.yaml",
        r#"version: 1
jobs:
  - name: ws
    workflow: ws
    matrix:
      "1.color": [1, 2, 3]
"#,
    );
    let out = p.run("ws.yaml", &[&sim], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows = p.rows();
    assert_eq!(rows.len(), 3);
    all_ok(&rows);
    let mut seen = BTreeSet::new();
    for row in &rows {
        let id = row.get("job_id");
        assert_eq!(
            row.images(),
            vec![
                format!("images/{id}_2_0.png"),
                format!("images/{id}_2_1.png")
            ]
        );
        for image in row.images() {
            let bytes = std::fs::read(p.out().join(&image)).unwrap();
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
            seen.insert(bytes);
        }
    }
    assert_eq!(
        seen.len(),
        3,
        "batch images of a job are alike, jobs differ"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_one_run() {
    let a = sim().await;
    let b = sim().await;
    let p = Project::new();
    p.write("tiny.yaml", TINY);
    let out = p.run("tiny.yaml", &[&a, &b], &["--concurrency", "1"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows = p.rows();
    assert_eq!(rows.len(), 8);
    all_ok(&rows);
    let servers: BTreeSet<_> = rows.iter().map(|r| r.get("server").to_string()).collect();
    assert_eq!(servers, BTreeSet::from([a.url(), b.url()]));
    assert_eq!(a.stats().prompts_executed + b.stats().prompts_executed, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_are_disjoint_and_complete() {
    let sim = sim().await;
    let p = Project::new();
    p.write("tiny.yaml", TINY);
    for shard in ["1/3", "2/3", "3/3"] {
        let out = p.run("tiny.yaml", &[&sim], &["--shard", shard]).await;
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    let rows = p.rows();
    assert_eq!(rows.len(), 8);
    let ids: BTreeSet<_> = rows.iter().map(|r| r.get("job_id").to_string()).collect();
    assert_eq!(ids.len(), 8);
}

/// The header's job count and skips, read from `run`'s stderr.
fn header_counts(stderr: &str) -> (usize, usize) {
    let re = regex_lite::Regex::new(r"run: (\d+) jobs[^\n(]*(?:\((\d+) skipped)?").unwrap();
    let c = re
        .captures(stderr)
        .unwrap_or_else(|| panic!("no header:\n{stderr}"));
    let n = |i: usize| c.get(i).map_or(0, |m| m.as_str().parse().unwrap());
    (n(1), n(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_agree_with_what_runs_across_shards_resume_and_collapsed_duplicates() {
    // 5 jobs from 8 rows of the manifest: a repeated value and a job equal
    // to another group's are collapsed. The header, the summary and the
    // rows must all count the jobs that run (counted without building
    // prompts, run from the built jobs: the two walks must agree).
    const DUPS: &str = r#"version: 1
workflows:
  tiny: workflows/tiny.json
jobs:
  - name: colors
    workflow: tiny
    matrix:
      "Canvas.color": [255, 255, 65280]
      "1.width": [16, 24]
  - name: again
    workflow: tiny
    matrix:
      "Canvas.color": [255]
      "1.width": [16, 32]
"#;
    let sim = sim().await;
    let p = Project::new();
    p.write("dups.yaml", DUPS);
    let check = |out: &crate::harness::Output, run: usize, skipped: usize| {
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert_eq!(header_counts(&out.stderr), (run, skipped), "{}", out.stderr);
        let done = format!("done: {run} ok, 0 not ok, {skipped} skipped");
        assert!(out.stderr.contains(&done), "{done}?\n{}", out.stderr);
    };
    let first = p.run("dups.yaml", &[&sim], &["--shard", "1/2"]).await;
    let (in_first, _) = header_counts(&first.stderr);
    assert!((1..5).contains(&in_first), "{}", first.stderr);
    check(&first, in_first, 5 - in_first);
    assert_eq!(p.row_count(), in_first);
    // Resume: the rest, the first shard's jobs skipped as done.
    let rest = p.run("dups.yaml", &[&sim], &[]).await;
    check(&rest, 5 - in_first, in_first);
    p.assert_each_job_ok_once(5);
    // Again without resuming: the second shard only, done or not.
    let second = p
        .run("dups.yaml", &[&sim], &["--no-resume", "--shard", "2/2"])
        .await;
    check(&second, 5 - in_first, in_first);
    assert_eq!(p.row_count(), 5 + 5 - in_first);
    let nothing = p.run("dups.yaml", &[&sim], &[]).await;
    check(&nothing, 0, 5);
    assert_eq!(sim.stats().prompts_executed as usize, 5 + 5 - in_first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_resumes_and_redoes_only_what_is_missing() {
    let sim = sim().await;
    let p = Project::new();
    p.write("tiny.yaml", TINY);
    assert_eq!(p.run("tiny.yaml", &[&sim], &[]).await.code, 0);
    let again = p.run("tiny.yaml", &[&sim], &[]).await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(again.stderr.contains("run: 0 jobs"), "{}", again.stderr);
    assert_eq!(p.rows().len(), 8);
    let lost = p.rows()[3].clone();
    std::fs::remove_file(p.out().join(&lost.images()[0])).unwrap();
    let third = p.run("tiny.yaml", &[&sim], &[]).await;
    assert_eq!(third.code, 0, "{}", third.stderr);
    let rows = p.rows();
    assert_eq!(rows.len(), 9);
    assert_eq!(rows[8].get("job_id"), lost.get("job_id"));
    assert!(p.out().join(&rows[8].images()[0]).is_file());
    let all = p.run("tiny.yaml", &[&sim], &["--no-resume"]).await;
    assert_eq!(all.code, 0);
    assert_eq!(p.rows().len(), 17);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_server_reachable_exits_3() {
    let p = Project::new();
    p.write("tiny.yaml", TINY);
    let (_hold, url) = crate::harness::refusing_address();
    let out = p
        .cli(&["run", "tiny.yaml", "--server", &url, "--no-check"])
        .await;
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("no server reachable"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_fast_stops_submitting() {
    let sim = sim_with(comfy_batch::sim::SimConfig {
        step_ms: 2,
        ..Default::default()
    })
    .await;
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
    let out = p
        .run("ff.yaml", &[&sim], &["--fail-fast", "--concurrency", "1"])
        .await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    let rows = p.rows();
    assert!(rows.len() < 10, "stopped early: {} rows", rows.len());
    assert!(out.stderr.contains("too many failures"), "{}", out.stderr);
}

/// A small valid PNG of one colour.
pub fn tiny_png(rgb: [u8; 3]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, 4, 4);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().unwrap();
        let data: Vec<u8> = std::iter::repeat_n(rgb, 16).flatten().collect();
        writer.write_image_data(&data).unwrap();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_seeds_are_kept_for_the_folder_so_a_rerun_resumes() {
    let sim = sim().await;
    let p = Project::new();
    p.write(
        "fresh.yaml",
        "version: 1\njobs:\n  - name: fox\n    workflow: t2i\n    matrix:\n      cfg: [5, 6, 7]\n",
    );
    assert_eq!(p.run("fresh.yaml", &[&sim], &[]).await.code, 0);
    let seeds: BTreeSet<_> = p.rows().iter().map(|r| r.get("seed").to_string()).collect();
    assert_eq!(seeds.len(), 3, "a fresh seed per job, logged");
    let again = p.run("fresh.yaml", &[&sim], &[]).await;
    assert!(again.stderr.contains("run: 0 jobs"), "{}", again.stderr);
    let other = p
        .cli(&[
            "run",
            "fresh.yaml",
            "--output",
            "other",
            "--server",
            &sim.url(),
        ])
        .await;
    assert_eq!(other.code, 0);
    let other_seeds: BTreeSet<_> = crate::harness::read_rows(&p.path("other/runs.csv"))
        .iter()
        .map(|r| r.get("seed").to_string())
        .collect();
    assert!(
        seeds.is_disjoint(&other_seeds),
        "a new folder draws new seeds"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_announced_while_the_socket_was_down_come_from_the_history() {
    let sim = sim_with(comfy_batch::sim::SimConfig {
        step_ms: 5,
        drop_ws_every: Some(16),
        ..Default::default()
    })
    .await;
    let p = Project::new();
    p.write(
        "two.yaml",
        "version: 1\njobs:\n  - name: two\n    workflow: two_saves\n    seeds: {range: [1, 12]}\n",
    );
    let out = p.run("two.yaml", &[&sim], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows = p.rows();
    assert_eq!(rows.len(), 12);
    all_ok(&rows);
    for row in &rows {
        let id = row.get("job_id");
        let mut images = row.images();
        images.sort();
        assert_eq!(
            images,
            vec![
                format!("images/{id}_13_0.png"),
                format!("images/{id}_9_0.png")
            ],
            "both SaveImage outputs of {id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_images_lost_with_the_socket_are_never_logged_ok_without_them() {
    let sim = sim_with(comfy_batch::sim::SimConfig {
        drop_ws_every: Some(30),
        ..Default::default()
    })
    .await;
    let p = Project::new();
    p.write(
        "ws.yaml",
        "version: 1\njobs:\n  - name: ws\n    workflow: ws\n    matrix:\n      \"1.color\": [1, 2, 3, 4, 5, 6]\n",
    );
    let out = p.run("ws.yaml", &[&sim], &["--retries", "20"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows = p.rows();
    let mut newest = std::collections::BTreeMap::new();
    for row in &rows {
        if row.get("status") == "ok" {
            assert_eq!(row.images().len(), 2, "an ok row has both frames: {row:?}");
        }
        newest.insert(row.get("job_id").to_string(), row.clone());
    }
    assert_eq!(newest.len(), 6);
    assert!(newest.values().all(|r| r.get("status") == "ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_folder_needs_no_server() {
    let sim = sim().await;
    let p = Project::new();
    p.write("tiny.yaml", TINY);
    assert_eq!(p.run("tiny.yaml", &[&sim], &[]).await.code, 0);
    let (_hold, url) = crate::harness::refusing_address();
    let out = p
        .cli(&["run", "tiny.yaml", "--output", "out", "--server", &url])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("run: 0 jobs"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_texts_are_stable() {
    let p = Project::new();
    let mut all = String::new();
    for command in ["run", "rerun", "check"] {
        let out = p.cli(&[command, "--help"]).await;
        assert_eq!(out.code, 0);
        all.push_str(&format!("$ comfy-batch {command} --help\n{}\n", out.stdout));
    }
    insta::assert_snapshot!(all);
}

/// A FIFO where the log is (`runs.csv` of the output folder, or the log
/// given to `rerun`) blocks neither `run` nor `rerun`: each ends with one
/// line naming it, as not a regular file.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_as_the_log_blocks_neither_run_nor_rerun() {
    let sim = sim().await;
    let p = Project::new();
    p.write("m.yaml", TINY);
    crate::harness::mkfifo(&p.path("out/runs.csv"));
    let url = sim.url();
    for args in [
        &["run", "m.yaml", "--output", "out", "--server", &url][..],
        &["rerun", "out/runs.csv", "--server", &url],
    ] {
        let out = tokio::time::timeout(std::time::Duration::from_secs(30), p.cli(args))
            .await
            .unwrap_or_else(|_| panic!("{args:?} waits on the FIFO"));
        assert_ne!(out.code, 0, "{args:?}: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains("runs.csv") && out.stderr.contains("not a regular file"),
            "{args:?}: {}",
            out.stderr
        );
    }
}

/// Resuming into a folder where a FIFO took an image's place: the run
/// ends (a FIFO opened for reading would wait for a writer forever), the
/// job is redone and its image is a regular file again.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_in_place_of_an_image_does_not_block_a_resumed_run() {
    let sim = sim().await;
    let p = Project::new();
    p.write("m.yaml", TINY);
    let out = p.run("m.yaml", &[&sim], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let image = p.rows()[0].images()[0].to_string();
    let path = p.out().join(&image);
    std::fs::remove_file(&path).unwrap();
    crate::harness::mkfifo(&path);
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        p.run("m.yaml", &[&sim], &[]),
    )
    .await
    .expect("the resumed run waits on the FIFO");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(std::fs::symlink_metadata(&path).unwrap().is_file());
    assert_eq!(p.rows().len(), 9, "only that job is redone");
}

/// A FIFO where `run.json` is (the run's notes, read by `run`, `rerun` and
/// `status`) blocks none of them: each reads only a regular file there.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_as_run_json_blocks_no_command() {
    let sim = sim().await;
    let p = Project::new();
    p.write("m.yaml", TINY);
    let out = p.run("m.yaml", &[&sim], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let job = p.rows()[0].get("job_id").to_string();
    let url = sim.url();
    for args in [
        &["status", "out"][..],
        &["rerun", "out/runs.csv", "--job", &job, "--server", &url],
        &["run", "m.yaml", "--output", "out", "--server", &url],
    ] {
        let info = p.out().join("run.json");
        let _ = std::fs::remove_file(&info);
        crate::harness::mkfifo(&info);
        let out = tokio::time::timeout(std::time::Duration::from_secs(60), p.cli(args))
            .await
            .unwrap_or_else(|_| panic!("{args:?} waits on the FIFO"));
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
    }
}
