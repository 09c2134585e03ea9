//! Every command that reads a run folder (`merge`, `export` in each format,
//! `report`, `grid`) on a hand-built folder full of symbolic links out of
//! it: nothing behind a link is opened, linked or copied, and the command
//! names what it refused. A command added later that reads a folder joins
//! [`commands`]. Also `export`'s target rules: a folder holding anything but
//! an earlier export is refused whole, and an empty export needs
//! `--allow-empty`.

use std::path::{Path, PathBuf};

use crate::harness::Project;

const HEAD: &str = "job_id,job,workflow,workflow_sha256,seed,prompt,status,server,prompt_id,queued_at,started_at,finished_at,queue_s,run_s,images,error\n";

/// The good image's colour, and the one behind the links.
const GOOD: [u8; 3] = [255, 0, 0];
#[cfg(unix)]
const SECRET: [u8; 3] = [1, 254, 3];

fn png(rgb: [u8; 3]) -> Vec<u8> {
    let mut bytes = Vec::new();
    image::RgbImage::from_pixel(8, 8, image::Rgb(rgb))
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .unwrap();
    bytes
}

/// A row of the log: id, prompt, seed, the files it lists.
fn row(id: &str, n: usize, prompt: &str, files: &str) -> String {
    format!("{id},g#{n},w.json,x,{n},{prompt},ok,s,p,,,,0.1,0.2,{files},\n")
}

/// `run/`: one good job (`a1`, a red PNG, a flac, its prompt file) and
/// `extra` rows.
fn plain_run(p: &Project, extra: &str) -> PathBuf {
    let run = p.path("run");
    p.write("run/images/a1_9_0.png", png(GOOD));
    p.write("run/images/a1_12_0.flac", b"fLaC good audio");
    p.write("run/prompts/a1.json", "{}");
    p.write(
        "run/runs.csv",
        format!(
            "{HEAD}{}{extra}",
            row("a1", 1, "fox", "images/a1_9_0.png;images/a1_12_0.flac")
        ),
    );
    run
}

/// What lies behind the links: bytes none of the outputs may hold.
#[cfg(unix)]
fn needles() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("/etc/passwd", b"root:x:0:0".to_vec()),
        // The environment of the comfy-batch process (the harness sets it).
        ("/proc/self/environ", b"RUST_LOG=warn".to_vec()),
        ("elsewhere/secret.png", png(SECRET)),
        ("elsewhere/secret.flac", b"fLaC SECRET AUDIO".to_vec()),
        ("elsewhere/secret.txt", b"SECRET-TEXT".to_vec()),
    ]
}

/// [`plain_run`] plus links out of the folder: `images/s -> /etc`,
/// `images/p -> /proc/self`, `images/d -> elsewhere`, `inputs ->
/// elsewhere`, and `images/link.png -> elsewhere/secret.png`; a row names
/// a file through each. Returns the files that must be refused.
#[cfg(unix)]
fn hostile_run(p: &Project) -> Vec<&'static str> {
    use std::os::unix::fs::symlink;
    p.write("elsewhere/secret.png", png(SECRET));
    p.write("elsewhere/secret.flac", b"fLaC SECRET AUDIO");
    p.write("elsewhere/secret.txt", "SECRET-TEXT");
    let rows = [
        row("a2", 2, "etc", "images/s/passwd"),
        row("a3", 3, "proc", "images/p/environ"),
        row("a4", 4, "file", "images/link.png"),
        row(
            "a5",
            5,
            "dir",
            "images/d/secret.png;images/d/secret.flac;images/d/secret.txt",
        ),
        row("a6", 6, "inputs", "inputs/secret.png"),
    ]
    .concat();
    let run = plain_run(p, &rows);
    let elsewhere = p.path("elsewhere");
    symlink("/etc", run.join("images/s")).unwrap();
    symlink("/proc/self", run.join("images/p")).unwrap();
    symlink(&elsewhere, run.join("images/d")).unwrap();
    symlink(&elsewhere, run.join("inputs")).unwrap();
    symlink(elsewhere.join("secret.png"), run.join("images/link.png")).unwrap();
    vec![
        "images/s/passwd",
        "images/p/environ",
        "images/link.png",
        "images/d/secret.png",
        "images/d/secret.flac",
        "images/d/secret.txt",
        "inputs/secret.png",
    ]
}

/// Every regular file under `dir`, links not followed; panics on a link.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            let t = std::fs::symlink_metadata(&path).unwrap().file_type();
            assert!(!t.is_symlink(), "a link in the output: {}", path.display());
            if t.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

#[cfg(unix)]
/// Whether `hay` holds `needle` (a tar holds its members' bytes as they are).
fn holds(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(unix)]
/// A command reading the run folder `run`, and where its outputs go.
struct Command {
    name: &'static str,
    args: Vec<String>,
    outputs: PathBuf,
    /// Which of the refused files this command is given to read (a format
    /// takes only its kinds; the others it never looks at).
    reads: fn(&str) -> bool,
}

#[cfg(unix)]
fn commands(p: &Project) -> Vec<Command> {
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    vec![
        Command {
            name: "merge",
            args: s(&["merge", "merged", "run"]),
            outputs: p.path("merged"),
            reads: |_| true,
        },
        Command {
            name: "export imagefolder",
            args: s(&["export", "run", "--format", "imagefolder", "--to", "img"]),
            outputs: p.path("img"),
            reads: |f| f.ends_with(".png"),
        },
        Command {
            name: "export audiofolder",
            args: s(&["export", "run", "--format", "audiofolder", "--to", "aud"]),
            outputs: p.path("aud"),
            reads: |f| f.ends_with(".flac"),
        },
        Command {
            name: "export webdataset",
            args: s(&["export", "run", "--format", "webdataset", "--to", "wds"]),
            outputs: p.path("wds"),
            reads: |f| f.ends_with(".png") || f.ends_with(".flac"),
        },
        Command {
            name: "report",
            args: s(&["report", "run"]),
            outputs: p.path("run/report"),
            reads: |_| false, // a count, below
        },
        Command {
            name: "grid",
            args: s(&[
                "grid", "run", "--x", "prompt", "--y", "seed", "-o", "grid.png",
            ]),
            outputs: p.path("grid.png"),
            reads: |f| f.ends_with(".png"),
        },
    ]
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_command_reads_links_or_a_file_through_a_linked_folder() {
    let p = Project::new();
    let refused = hostile_run(&p);
    for c in commands(&p) {
        let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
        let out = p.cli(&args).await;
        assert_eq!(out.code, 0, "{}: {}", c.name, out.stderr);
        // Nothing behind a link in any output.
        let files = if c.outputs.is_dir() {
            files_under(&c.outputs)
        } else {
            vec![c.outputs.clone()]
        };
        assert!(!files.is_empty(), "{}: no output", c.name);
        for f in &files {
            let bytes = std::fs::read(f).unwrap();
            for (what, needle) in needles() {
                assert!(
                    !holds(&bytes, &needle),
                    "{}: {} holds {what}",
                    c.name,
                    f.display()
                );
            }
        }
        // Each refused file it was given is named, one line each.
        for file in refused.iter().filter(|f| (c.reads)(f)) {
            let lines: Vec<&str> = out
                .stderr
                .lines()
                .filter(|l| l.contains(&format!(" {file}: ")))
                .collect();
            assert_eq!(lines.len(), 1, "{}: {file}: {}", c.name, out.stderr);
            assert!(
                lines[0].contains("symbolic link"),
                "{}: {}",
                c.name,
                lines[0]
            );
        }
    }
    // The good files did arrive.
    assert_eq!(
        std::fs::read(p.path("merged/images/a1_9_0.png")).unwrap(),
        png(GOOD)
    );
    assert!(p.path("merged/prompts/a1.json").is_file());
    assert!(!p.path("merged/inputs").exists(), "inputs/ is a link");
    assert!(p.path("img/a1_9_0.png").is_file());
    assert!(p.path("aud/a1_12_0.flac").is_file());
    let grid = image::open(p.path("grid.png")).unwrap().to_rgb8();
    assert!(
        grid.pixels().any(|px| px.0 == GOOD),
        "the good image is drawn"
    );
    assert!(!grid.pixels().any(|px| px.0 == SECRET), "the secret is not");
    let report = p.cli(&["report", "run"]).await;
    assert!(
        report.stdout.contains("7 files refused"),
        "{}",
        report.stdout
    );
    // The page links none of them (no thumbnail, kind `unsafe`).
    let rows = crate::gallery::report_rows(&p.path("run/report"));
    let data = serde_json::to_string(&rows).unwrap();
    assert!(!data.contains("SECRET-TEXT"));
    let files: Vec<(String, String)> = rows
        .iter()
        .flat_map(|job| job[6].as_array().unwrap().clone())
        .map(|f| (f[0].as_str().unwrap().into(), f[1].as_str().unwrap().into()))
        .collect();
    for file in &refused {
        assert!(
            files.contains(&(file.to_string(), "unsafe".to_string())),
            "{file} is not marked unsafe on the page: {files:?}"
        );
    }
    let merged_log = std::fs::read_to_string(p.path("merged/runs.csv")).unwrap();
    assert_eq!(merged_log.lines().count(), 7, "every row is merged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_replaces_only_a_folder_holding_nothing_but_an_earlier_export() {
    let p = Project::new();
    plain_run(&p, "");
    let export = |to: &'static str| {
        let p = &p;
        async move {
            p.cli(&["export", "run", "--format", "imagefolder", "--to", to])
                .await
        }
    };
    // Someone's folders: a README, a git checkout.
    p.write("readme/README.md", "mine");
    p.write("git/.git/config", "[core]");
    for (to, name) in [("readme", "README.md"), ("git", ".git")] {
        let before = files_under(&p.path(to));
        let out = export(to).await;
        assert_eq!(out.code, 2, "{to}: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{to}: {}", out.stderr);
        assert!(out.stderr.contains(to), "{}", out.stderr);
        assert!(out.stderr.contains(name), "{}", out.stderr);
        assert_eq!(
            files_under(&p.path(to)),
            before,
            "{to}: nothing written or deleted"
        );
    }
    // An earlier export is replaced, even when this one has other files.
    let out = export("ds").await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    std::fs::rename(
        p.path("run/images/a1_9_0.png"),
        p.path("run/images/a1_9_1.png"),
    )
    .unwrap();
    let log = std::fs::read_to_string(p.path("run/runs.csv")).unwrap();
    std::fs::write(p.path("run/runs.csv"), log.replace("a1_9_0", "a1_9_1")).unwrap();
    let out = export("ds").await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(p.path("ds/a1_9_1.png").is_file());
    assert!(!p.path("ds/a1_9_0.png").exists(), "the old export is gone");
    // One foreign file beside an earlier export: refused, all kept.
    p.write("ds/notes.txt", "mine");
    let before = files_under(&p.path("ds"));
    let out = export("ds").await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("notes.txt"), "{}", out.stderr);
    assert_eq!(files_under(&p.path("ds")), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_export_is_refused_unless_allowed() {
    let p = Project::new();
    plain_run(&p, "");
    let before = files_under(p.dir.path());
    for (args, why) in [
        (
            &[
                "export",
                "run",
                "--format",
                "imagefolder",
                "--to",
                "e1",
                "--where",
                "prompt=owl",
            ][..],
            "matches --where",
        ),
        (
            &[
                "export",
                "run",
                "--format",
                "audiofolder",
                "--to",
                "e2",
                "--where",
                "prompt=owl",
            ][..],
            "matches --where",
        ),
    ] {
        let out = p.cli(args).await;
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
        assert!(out.stderr.contains("nothing to export"), "{}", out.stderr);
        assert!(out.stderr.contains(why), "{}", out.stderr);
    }
    // No file of the format's kind: the flac is the only audio; drop it.
    let log = std::fs::read_to_string(p.path("run/runs.csv")).unwrap();
    std::fs::write(
        p.path("run/runs.csv"),
        log.replace(";images/a1_12_0.flac", ""),
    )
    .unwrap();
    let out = p
        .cli(&["export", "run", "--format", "audiofolder", "--to", "e3"])
        .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("1 output(s) of other kinds"),
        "{}",
        out.stderr
    );
    let mut after = files_under(p.dir.path());
    after.retain(|f| !f.ends_with("runs.csv"));
    let mut was = before.clone();
    was.retain(|f| !f.ends_with("runs.csv"));
    assert_eq!(after, was, "nothing written");
    let out = p
        .cli(&[
            "export",
            "run",
            "--format",
            "audiofolder",
            "--to",
            "e3",
            "--allow-empty",
        ])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(std::fs::read(p.path("e3/metadata.jsonl")).unwrap(), b"");
}

/// `report` on a folder whose `report/` someone filled: a FIFO where
/// `grids.json` or `index.html` were never blocks it (a FIFO opened for
/// reading waits for a writer), and a `report/` (or its `thumbs/`, `grids/`) that is
/// a link out of the folder is never written through: refused with one
/// line naming it, nothing written behind it.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_neither_blocks_on_a_fifo_nor_writes_through_a_link_in_report() {
    use std::os::unix::fs::symlink;
    let p = Project::new();
    let run = plain_run(&p, "");
    let report = || async {
        tokio::time::timeout(
            std::time::Duration::from_secs(30),
            p.cli(&["report", "run"]),
        )
        .await
        .expect("report ends (never waits on a FIFO)")
    };
    for name in ["grids.json", "index.html"] {
        let path = run.join("report").join(name);
        crate::harness::mkfifo(&path);
        let out = report().await;
        assert_eq!(out.code, 0, "{name}: {}", out.stderr);
        std::fs::remove_dir_all(run.join("report")).unwrap();
    }
    std::fs::create_dir_all(p.path("elsewhere")).unwrap();
    for link in ["report", "report/thumbs", "report/grids"] {
        let _ = std::fs::remove_dir_all(run.join("report"));
        std::fs::create_dir_all(run.join(link).parent().unwrap()).unwrap();
        symlink(p.path("elsewhere"), run.join(link)).unwrap();
        let out = report().await;
        assert_eq!(out.code, 2, "{link}: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{link}: {}", out.stderr);
        assert!(
            out.stderr.contains(link) && out.stderr.contains("symbolic link"),
            "{link}: {}",
            out.stderr
        );
        assert!(
            files_under(&p.path("elsewhere")).is_empty(),
            "{link}: written through the link"
        );
        std::fs::remove_file(run.join(link)).unwrap();
    }
}

/// A FIFO where `runs.csv.lock` is (a run makes it a regular file) blocks
/// no command that asks whether a run holds the log: `merge`, `export` and
/// `status` end as on a plain folder.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_as_the_logs_lock_blocks_no_command() {
    let p = Project::new();
    let run = plain_run(&p, "");
    crate::harness::mkfifo(&run.join("runs.csv.lock"));
    for args in [
        &["merge", "merged", "run"][..],
        &["export", "run", "--format", "imagefolder", "--to", "img"],
        &["status", "run"],
    ] {
        let out = tokio::time::timeout(std::time::Duration::from_secs(30), p.cli(args))
            .await
            .unwrap_or_else(|_| panic!("{args:?} waits on the FIFO"));
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
    }
}

/// A FIFO (or a folder) where the log names an image is no file: the
/// folder rules refuse it (export warns "not a regular file"), and the
/// report counts it refused, not missing, and never opens it.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_counts_a_fifo_in_place_of_an_image_as_refused_like_export() {
    let p = Project::new();
    let run = plain_run(&p, &row("a2", 2, "fifo", "images/a2_9_0.png"));
    crate::harness::mkfifo(&run.join("images/a2_9_0.png"));
    let cli = |args: &'static [&'static str]| {
        let p = &p;
        async move {
            tokio::time::timeout(std::time::Duration::from_secs(30), p.cli(args))
                .await
                .expect("ends (never waits on the FIFO)")
        }
    };
    let export = cli(&["export", "run", "--format", "imagefolder", "--to", "img"]).await;
    assert_eq!(export.code, 0, "{}", export.stderr);
    assert!(
        export
            .stderr
            .contains("images/a2_9_0.png: not a regular file; never opened"),
        "{}",
        export.stderr
    );
    let report = cli(&["report", "run"]).await;
    assert_eq!(report.code, 0, "{}", report.stderr);
    assert!(
        report.stdout.contains("(1 files refused") && !report.stdout.contains("missing"),
        "{}",
        report.stdout
    );
    let rows = crate::gallery::report_rows(&run.join("report"));
    let files: Vec<(String, String)> = rows
        .iter()
        .flat_map(|job| job[6].as_array().unwrap().clone())
        .map(|f| (f[0].as_str().unwrap().into(), f[1].as_str().unwrap().into()))
        .collect();
    assert!(
        files.contains(&("images/a2_9_0.png".to_string(), "unsafe".to_string())),
        "{files:?}"
    );
}
