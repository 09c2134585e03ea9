//! `comfy-batch merge`: shard folders of real runs become one folder that
//! `status`, `export` and `rerun` accept; merging again adds only what is
//! new; bad merges are refused with nothing written.

use std::collections::BTreeSet;

use crate::export::newest;
use crate::harness::{Project, read_rows, sim};

const SWEEP: &str = r#"version: 1
workflows:
  tiny: workflows/tiny.json
jobs:
  - name: colors
    workflow: tiny
    matrix:
      "Canvas.color": [255, 65280, 16711680]
      "1.width": [16, 24]
grids:
  - {name: colors, x: 1.width, y: Canvas.color}
"#;

async fn shards(p: &Project) -> comfy_batch::sim::SimHandle {
    let s = sim().await;
    p.write("sweep.yaml", SWEEP);
    for k in 1..=2 {
        let shard = format!("{k}/2");
        let dir = format!("shard{k}");
        let url = s.url();
        let out = p
            .cli(&[
                "run",
                "sweep.yaml",
                "--server",
                &url,
                "--shard",
                &shard,
                "--output",
                &dir,
            ])
            .await;
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    s
}

fn read(p: &Project, rel: &str) -> String {
    std::fs::read_to_string(p.path(rel)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_merge_into_one_folder_and_merging_again_adds_only_what_is_new() {
    let p = Project::new();
    let s = shards(&p).await;
    let out = p.cli(&["merge", "merged", "shard1", "shard2"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("6 new row(s), 6 row(s) and 6 job(s) in all"),
        "{}",
        out.stdout
    );
    let rows = read_rows(&p.path("merged/runs.csv"));
    assert_eq!(rows.len(), 6);
    for row in &rows {
        for image in row.images() {
            assert!(p.path("merged").join(&image).is_file(), "{image}");
        }
        let id = row.get("job_id");
        assert!(p.path(&format!("merged/prompts/{id}.json")).is_file());
        // Paths in the log are relative to the merged folder.
        assert_eq!(row.get("workflow"), "../workflows/tiny.json");
    }
    let status = p
        .cli(&["status", "merged", "--manifest", "sweep.yaml"])
        .await;
    assert_eq!(status.code, 0, "{}{}", status.stdout, status.stderr);
    assert!(
        status.stdout.contains("6 job(s), 0 still to run"),
        "{}",
        status.stdout
    );

    // Twice: nothing new, the log unchanged.
    let log = read(&p, "merged/runs.csv");
    let again = p.cli(&["merge", "merged", "shard1", "shard2"]).await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(again.stdout.contains("0 new row(s)"), "{}", again.stdout);
    assert_eq!(read(&p, "merged/runs.csv"), log);

    // Shard 1 reruns every job: merging again adds exactly its new rows,
    // and the newest row of each of its jobs is the rerun's.
    let url = s.url();
    let rerun = p
        .cli(&[
            "run",
            "sweep.yaml",
            "--server",
            &url,
            "--shard",
            "1/2",
            "--output",
            "shard1",
            "--no-resume",
        ])
        .await;
    assert_eq!(rerun.code, 0, "{}", rerun.stderr);
    let third = p.cli(&["merge", "merged", "shard2", "shard1"]).await;
    assert!(
        third.stdout.contains("3 new row(s), 9 row(s) and 6 job(s)"),
        "{}",
        third.stdout
    );
    let merged = newest(&read_rows(&p.path("merged/runs.csv")));
    let shard1 = newest(&read_rows(&p.path("shard1/runs.csv")));
    for (id, row) in &shard1 {
        assert_eq!(merged[id].get("prompt_id"), row.get("prompt_id"));
    }
    // A job of the merged folder can be rerun from its log.
    let id = merged.keys().next().unwrap().clone();
    let r = p
        .cli(&["rerun", "merged/runs.csv", "--job", &id, "--server", &url])
        .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    // And it exports.
    let e = p
        .cli(&["export", "merged", "--format", "imagefolder"])
        .await;
    assert_eq!(e.code, 0, "{}", e.stderr);
    assert_eq!(
        read(&p, "merged-imagefolder/metadata.jsonl")
            .lines()
            .count(),
        6
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_merges_exit_2_with_one_line_and_write_nothing() {
    let p = Project::new();
    let s = shards(&p).await;
    // Another manifest's folder, with the same columns.
    p.write("other.yaml", SWEEP.replace("16711680", "7"));
    let url = s.url();
    let out = p
        .cli(&["run", "other.yaml", "--server", &url, "--output", "other"])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    p.write("junk/file.txt", "x");
    let listing = || -> BTreeSet<String> {
        std::fs::read_dir(p.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    let before = listing();
    let cases: [(&[&str], &str); 5] = [
        (
            &["merge", "shard1", "shard1", "shard2"],
            "cannot merge a folder into itself",
        ),
        (
            &["merge", "shard1/sub", "shard1"],
            "must not lie inside a source",
        ),
        (
            &["merge", "m", "shard1", "junk"],
            "not a comfy-batch output folder",
        ),
        (&["merge", "m", "shard1", "other"], "different manifest"),
        (
            &["merge", "junk", "shard1"],
            "not empty and not an output folder",
        ),
    ];
    for (args, expected) in cases {
        let out = p.cli(args).await;
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(expected), "{args:?}: {}", out.stderr);
    }
    assert_eq!(listing(), before, "nothing written");
    assert!(!p.path("shard1/sub").exists());
    let forced = p.cli(&["merge", "m", "shard1", "other", "--force"]).await;
    assert_eq!(forced.code, 0, "{}", forced.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_still_being_written_merges_as_far_as_logged_then_completes() {
    let p = Project::new();
    let s = crate::harness::sim_with(comfy_batch::sim::SimConfig {
        step_ms: 100,
        ..Default::default()
    })
    .await;
    // Four sampler steps of 100 ms a job, one job at a time: ~3 s in all.
    p.write(
        "sweep.yaml",
        "version: 1\nworkflows:\n  t2i: workflows/t2i.json\njobs:\n  - name: fox\n    workflow: t2i\n    matrix:\n      cfg: [5, 6, 7]\n    seeds: [1, 2]\n    set:\n      width: 64\n      height: 64\n",
    );
    let mut running = p.spawn("sweep.yaml", &[&s], &["--concurrency", "1"]);
    crate::harness::wait_for("two rows", 120, || p.row_count() >= 2).await;
    let early = p.cli(&["merge", "merged", "out"]).await;
    assert_eq!(early.code, 0, "{}", early.stderr);
    assert!(
        early.stderr.contains("still being written"),
        "{}",
        early.stderr
    );
    // A merge into the folder a run is writing is refused (its rows would be lost).
    let into = p.cli(&["merge", "out", "merged"]).await;
    assert_eq!(into.code, 2, "{}", into.stderr);
    assert!(
        into.stderr
            .contains("a comfy-batch run is writing this folder"),
        "{}",
        into.stderr
    );
    let status = p.cli(&["status", "out"]).await;
    assert!(
        status.stdout.contains("(a run is still writing it)"),
        "{}",
        status.stdout
    );
    assert_eq!(running.exit(120).await, 0, "{}", running.stderr());
    let late = p.cli(&["merge", "merged", "out"]).await;
    assert_eq!(late.code, 0, "{}", late.stderr);
    assert!(
        !late.stderr.contains("still being written"),
        "{}",
        late.stderr
    );
    let rows = newest(&read_rows(&p.path("merged/runs.csv")));
    assert_eq!(rows.len(), 6);
    assert!(rows.values().all(|r| r.get("status") == "ok"));
    assert_eq!(
        p.cli(&["status", "merged", "--manifest", "sweep.yaml"])
            .await
            .code,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_that_drew_fresh_seeds_with_other_keys_need_force() {
    let p = Project::new();
    let s = sim().await;
    // No `seeds:`: each folder draws its own fresh-seed key.
    p.write(
        "fresh.yaml",
        "version: 1\nworkflows:\n  t2i: workflows/t2i.json\njobs:\n  - name: fox\n    workflow: t2i\n    matrix:\n      cfg: [5, 6]\n    set:\n      width: 64\n      height: 64\n",
    );
    let url = s.url();
    for k in ["1", "2"] {
        let out = p
            .cli(&[
                "run",
                "fresh.yaml",
                "--server",
                &url,
                "--shard",
                &format!("{k}/2"),
                "--output",
                &format!("s{k}"),
            ])
            .await;
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    let refused = p.cli(&["merge", "m", "s1", "s2"]).await;
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused
            .stderr
            .contains("drew its fresh seeds with another key"),
        "{}",
        refused.stderr
    );
    assert!(!p.path("m").exists());
    let forced = p.cli(&["merge", "m", "s1", "s2", "--force"]).await;
    assert_eq!(forced.code, 0, "{}", forced.stderr);
    assert_eq!(read_rows(&p.path("m/runs.csv")).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_rebuilds_the_report_of_the_merged_folder_unless_told_not_to() {
    let p = Project::new();
    let _s = shards(&p).await;
    let out = p.cli(&["merge", "merged", "shard1", "shard2"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    // The page and the data it loads (report/data/<id>/).
    let mut page = read(&p, "merged/report/index.html");
    for folder in std::fs::read_dir(p.path("merged/report/data")).unwrap() {
        for file in std::fs::read_dir(folder.unwrap().path()).unwrap() {
            page.push_str(&std::fs::read_to_string(file.unwrap().path()).unwrap());
        }
    }
    // Every merged job is on the page, with its image (the simulator's
    // 64 px images are shown as they are: no thumbnail is made of them).
    for (id, row) in newest(&read_rows(&p.path("merged/runs.csv"))) {
        assert!(page.contains(&id), "{id} not on the page");
        let image = row.get("images");
        assert!(
            !image.is_empty() && page.contains(image),
            "{image} not on the page"
        );
        assert!(p.path("merged").join(image).is_file());
    }
    let thumbs = std::fs::read_dir(p.path("merged/report/thumbs")).map_or(0, |d| d.count());
    assert_eq!(thumbs, 0);
    // The manifest's grids stay the merged page's default view.
    assert_eq!(
        read(&p, "merged/report/grids.json"),
        read(&p, "shard1/report/grids.json")
    );
    assert!(page.contains("\"x\":\"1.width\""), "{page}");
    // And its image is drawn from the merged log: 2 widths × 3 colours.
    let png = image::open(p.path("merged/report/grids/colors.png")).unwrap();
    let shard = image::open(p.path("shard1/report/grids/colors.png")).unwrap();
    assert!(png.width() > shard.width() || png.height() > shard.height() || png != shard);

    let quiet = p
        .cli(&["merge", "other", "shard1", "shard2", "--no-report"])
        .await;
    assert_eq!(quiet.code, 0, "{}", quiet.stderr);
    assert!(p.path("other/runs.csv").is_file());
    assert!(!p.path("other/report").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_that_fails_after_locking_out_leaves_no_lock_file() {
    let p = Project::new();
    let _s = shards(&p).await;
    let first = p.cli(&["merge", "merged", "shard1"]).await;
    assert_eq!(first.code, 0, "{}", first.stderr);
    // A folder where one of shard 2's prompt files must go: the merge fails
    // while copying, after it took OUT's locks.
    let id = read_rows(&p.path("shard2/runs.csv"))[0]
        .get("job_id")
        .to_string();
    std::fs::create_dir_all(p.path(&format!("merged/prompts/{id}.json/x"))).unwrap();
    let out = p.cli(&["merge", "merged", "shard2"]).await;
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        !p.path("merged/.merge.lock").exists(),
        "lock file left behind: {}",
        out.stderr
    );
}
