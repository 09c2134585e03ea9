//! The run log read back by every folder command through one reader
//! (issue #24 item 1): a damaged row names its line, `DIR/runs.csv` is
//! `DIR`, a torn last line is left out and said, and missing files are
//! counted (`status`) or skipped (`export`), at 20k rows.

use crate::harness::Project;

const HEAD: &str = "job_id,job,workflow,workflow_sha256,seed,prompt,status,server,prompt_id,queued_at,started_at,finished_at,queue_s,run_s,images,error,text\n";

fn row(i: usize, status: &str) -> String {
    format!("{i:016x},g#{i},w.json,00,{i},a fox,{status},,,,,,,,images/{i:016x}_9_0.png,,\n")
}

/// A folder of `n` ok jobs; every `missing_every`-th job's file is absent
/// (none when 0).
fn folder(p: &Project, n: usize, missing_every: usize, tail: &str) {
    let mut log = String::from(HEAD);
    for i in 0..n {
        log.push_str(&row(i, "ok"));
        if missing_every == 0 || i % missing_every != missing_every - 1 {
            p.write(&format!("out/images/{i:016x}_9_0.png"), b"png");
        }
    }
    log.push_str(tail);
    p.write("out/runs.csv", log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_with_too_many_fields_names_its_line_in_status_export_and_merge() {
    let p = Project::new();
    let mut log = String::from(HEAD);
    log.push_str(&row(0, "ok"));
    log.push_str(&row(1, "ok").replace(",,\n", ",,,one too many\n"));
    log.push_str(&row(2, "ok"));
    p.write("out/runs.csv", log);
    for args in [
        &["status", "out"][..],
        &["export", "out", "--format", "imagefolder", "--to", "ds"],
        &["merge", "merged", "out"],
    ] {
        let out = p.cli(args).await;
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{args:?}: {}", out.stderr);
        assert!(
            out.stderr
                .contains("runs.csv: line 3: 18 cells, expected 17; the log is damaged"),
            "{args:?}: {}",
            out.stderr
        );
    }
    assert!(!p.path("ds").exists() && !p.path("merged/runs.csv").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_export_take_dir_or_dir_runs_csv() {
    let p = Project::new();
    folder(&p, 3, 0, "");
    let by_dir = p.cli(&["status", "out"]).await;
    let by_file = p.cli(&["status", "out/runs.csv"]).await;
    assert_eq!(by_dir.code, 0, "{}", by_dir.stderr);
    assert_eq!(by_file.code, 0, "{}", by_file.stderr);
    assert!(
        by_file.stdout.contains("3 job(s): 3 ok"),
        "{}",
        by_file.stdout
    );
    let out = p
        .cli(&[
            "export",
            "out/runs.csv",
            "--format",
            "imagefolder",
            "--to",
            "ds",
        ])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(p.path("ds/metadata.jsonl").is_file());
}

/// 20k rows (a debug build reads them in seconds), a torn last line and
/// 10% of the files missing: each command says so, never a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_rows_a_torn_tail_and_a_tenth_of_the_files_missing() {
    let p = Project::new();
    folder(
        &p,
        20_000,
        10,
        "ffffffffffffffff,g#99999,w.json,00,1,\"a fo",
    );
    let status = p.cli(&["status", "out"]).await;
    assert_eq!(status.code, 1, "{}", status.stderr);
    assert!(
        status
            .stdout
            .contains("20000 job(s): 20000 ok (a run is still writing it)"),
        "{}",
        status.stdout
    );
    assert!(
        status
            .stdout
            .contains("2000 ok job(s) have output files missing"),
        "{}",
        status.stdout
    );
    let export = p
        .cli(&[
            "export",
            "out",
            "--format",
            "webdataset",
            "--to",
            "wds",
            "--shard-size",
            "5000",
        ])
        .await;
    assert_eq!(export.code, 0, "{}", export.stderr);
    assert!(
        export
            .stdout
            .contains("exported 20000 ok job(s) as 18000 sample(s)"),
        "{}",
        export.stdout
    );
    assert!(export.stderr.contains("a run is still writing this folder"));
    let missing: Vec<&str> = export
        .stderr
        .lines()
        .filter(|l| l.contains("missing"))
        .collect();
    assert_eq!(missing.len(), 1, "{}", export.stderr);
    assert!(
        missing[0].contains("2000 files listed in runs.csv are missing (the first: images/"),
        "{}",
        missing[0]
    );
    let shards: Vec<_> = std::fs::read_dir(p.path("wds"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tar"))
        .collect();
    assert_eq!(shards.len(), 4);
}

/// `bench folder` builds its folder and runs every folder command on it,
/// one line of figures each (the 200k-job figures are docs/ci.md's): grid
/// and `rerun --status` too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_folder_runs_each_folder_command_and_reports_its_peak() {
    let p = Project::new();
    let out = p
        .cli(&["bench", "folder", "--jobs", "300", "--dir", "b"])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "jobs\tcommand\tbinary\tpeak_mb\ttime_s\texit");
    let commands: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split('\t').nth(1).unwrap())
        .collect();
    assert_eq!(
        commands,
        [
            "status",
            "webdataset",
            "imagefolder",
            "merge-no-report",
            "merge",
            "report",
            "grid",
            "rerun-status"
        ]
    );
    for line in &lines[1..] {
        let cells: Vec<&str> = line.split('\t').collect();
        let peak: f64 = cells[3].parse().unwrap();
        assert!(peak > 1.0, "{line}");
        // status exits 1: every 97th job failed; so does rerun: its
        // simulator fails every prompt.
        let code = match cells[1] {
            "status" | "rerun-status" => "1",
            _ => "0",
        };
        assert_eq!(cells[5], code, "{line}");
    }
    assert_eq!(
        std::fs::read_to_string(p.path("b/run/runs.csv"))
            .unwrap()
            .lines()
            .count(),
        301
    );
}

/// A damaged row in the middle of a folder's log gets the same answer from
/// the commands that append to the log or take jobs from it as from
/// `status`: one line naming it, and the log left as it is. Resume used to
/// cut the log at that row, losing every row after it, and report and grid
/// skipped it without a word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_middle_row_is_named_by_resume_rerun_report_and_grid_and_kept() {
    let sim = crate::harness::sim().await;
    let p = Project::new();
    p.write("jobs.yaml", crate::harness::sampler_jobs(3));
    let first = p.run("jobs.yaml", &[&sim], &[]).await;
    assert_eq!(first.code, 0, "{}", first.stderr);
    let log = p.out().join("runs.csv");
    let text = std::fs::read_to_string(&log).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 4, "{text}");
    lines[2].push_str(",one too many");
    let damaged = lines.join("\n") + "\n";
    std::fs::write(&log, &damaged).unwrap();
    let url = sim.url();
    for args in [
        &["run", "jobs.yaml", "--output", "out", "--server", &url][..],
        &["rerun", "out/runs.csv", "--status", "ok", "--server", &url],
        &["report", "out"],
        &[
            "grid", "out", "--x", "seed", "--y", "group", "-o", "grid.png",
        ],
    ] {
        let out = p.cli(args).await;
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        let refusal: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| l.contains("line 3"))
            .collect();
        assert_eq!(refusal.len(), 1, "{args:?}: {}", out.stderr);
        assert!(
            refusal[0].contains("runs.csv: line 3: ") && refusal[0].contains("the log is damaged"),
            "{args:?}: {}",
            out.stderr
        );
        assert_eq!(std::fs::read_to_string(&log).unwrap(), damaged, "{args:?}");
    }
    assert!(!p.path("grid.png").exists());
}
