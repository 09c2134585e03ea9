//! One exit code per failure, whatever the command (README's "Exit codes"):
//! a folder that is not a run folder or a log that does not parse is 2; a
//! log that cannot be read (an I/O failure) is 3.

use crate::harness::{Output, Project, sim};

/// The commands that read a run folder, each with the flags it needs.
const READERS: [&[&str]; 4] = [
    &["status"],
    &["export", "--format", "imagefolder", "--to", "exported"],
    &["report"],
    &["grid", "--x", "seed", "--y", "job"],
];

async fn read(p: &Project, command: &[&str], dir: &str) -> Output {
    let mut args = vec![command[0], dir];
    args.extend_from_slice(&command[1..]);
    tokio::time::timeout(std::time::Duration::from_secs(60), p.cli(&args))
        .await
        .unwrap_or_else(|_| panic!("{args:?} did not end"))
}

/// A `runs.csv` that is a folder: opening or reading it fails at the
/// system (EISDIR; access denied on Windows), even as root, where an
/// unreadable mode would not. Every reader calls that an I/O failure, 3,
/// in one line naming the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_log_is_exit_3_for_every_reader() {
    let p = Project::new();
    std::fs::create_dir_all(p.path("run/runs.csv")).unwrap();
    for command in READERS {
        let out = read(&p, command, "run").await;
        assert_eq!(out.code, 3, "{command:?}: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{command:?}: {}", out.stderr);
        assert!(
            out.stderr.contains("runs.csv"),
            "{command:?}: {}",
            out.stderr
        );
    }
    assert!(!p.path("exported").exists(), "nothing exported");
}

/// The same log failure is 3 for `run` and `merge` too, which write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_log_is_exit_3_for_run_and_merge() {
    let sim = sim().await;
    let p = Project::new();
    p.write(
        "m.yaml",
        "version: 1\nworkflows:\n  tiny: workflows/tiny.json\njobs:\n  - name: a\n    workflow: tiny\n",
    );
    std::fs::create_dir_all(p.path("out/runs.csv")).unwrap();
    let out = p.run("m.yaml", &[&sim], &[]).await;
    assert_eq!(out.code, 3, "run: {}", out.stderr);
    assert!(out.stderr.contains("runs.csv"), "{}", out.stderr);
    let out = p.cli(&["merge", "merged", "out"]).await;
    assert_eq!(out.code, 3, "merge: {}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "merge: {}", out.stderr);
    assert!(out.stderr.contains("runs.csv"), "{}", out.stderr);
}

/// A folder without a log, or with a `runs.csv` that is not a run log, is
/// not a run folder: 2 for every reader, one line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_that_is_not_a_run_is_exit_2_for_every_reader() {
    let p = Project::new();
    p.write("empty/x.txt", "");
    p.write("notes/runs.csv", "just some notes\n");
    for dir in ["empty", "notes"] {
        for command in READERS {
            let out = read(&p, command, dir).await;
            assert_eq!(out.code, 2, "{command:?} {dir}: {}", out.stderr);
            assert_eq!(
                out.stderr.lines().count(),
                1,
                "{command:?} {dir}: {}",
                out.stderr
            );
            assert!(
                out.stderr.contains(dir),
                "{command:?} {dir}: {}",
                out.stderr
            );
        }
    }
}

/// `compare` reads two logs: one that cannot be read is 3 there too, as
/// for every reader, not 2 (bad input).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_log_is_exit_3_for_compare() {
    let p = Project::new();
    std::fs::create_dir_all(p.path("a/runs.csv")).unwrap();
    std::fs::create_dir_all(p.path("b/runs.csv")).unwrap();
    let out = p.cli(&["compare", "a", "b"]).await;
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("runs.csv"), "{}", out.stderr);
}
