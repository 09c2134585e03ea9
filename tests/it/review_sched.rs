//! The attack review of the unattended path after the scheduler, JUnit and
//! streamed report merges: what a nightly CI user (or a hostile folder) can
//! do to `run`, `report` and `grid`, against the simulator.

use crate::harness::{Project, sampler_jobs, sim};

/// `report/data` a link out of the folder: the report refuses it, as it
/// refuses `report/` or `report/thumbs/` as links, and so never writes
/// its data through it nor prunes the folders it finds there (which would
/// remove every folder of the link's target).
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_data_folder_that_is_a_link_is_refused_and_its_target_left_alone() {
    let sim = sim().await;
    let p = Project::new();
    p.write("jobs.yaml", sampler_jobs(2));
    let out = p.run("jobs.yaml", &[&sim], &["--no-report"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let precious = p.write("elsewhere/precious/keep.txt", "keep");
    std::fs::create_dir_all(p.out().join("report")).unwrap();
    std::os::unix::fs::symlink(p.path("elsewhere"), p.out().join("report/data")).unwrap();

    let report = p.cli(&["report", "out"]).await;
    assert!(precious.is_file(), "removed through the link");
    let left: Vec<_> = std::fs::read_dir(p.path("elsewhere"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["precious"], "written through the link");
    assert_eq!(report.code, 2, "{}", report.stderr);
    assert!(
        report.stderr.contains("report/data: is a symbolic link"),
        "{}",
        report.stderr
    );
}
