//! Starting out from an installed binary: `init` writes a project that
//! runs, the completion scripts load in the shells, `man` renders, and
//! `--version` names the commit (or, built without git, the version alone).

use std::path::Path;
use std::process::{Command, Stdio};

use crate::harness::{Project, comfy_batch, read_rows};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `comfy-batch ARGS…` with no stdin, as (code, stdout, stderr); as every
/// test runs it, without the host's CI variables.
fn cli(args: &[&str]) -> (i32, String, String) {
    let out = comfy_batch()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn init_writes_a_project_whose_example_runs_end_to_end_on_the_simulator() {
    let project = Project::new();
    let out = project.cli(&["init", "starter"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    // The files are the repository's own examples, byte for byte.
    for rel in [
        "jobs/fox-sweep.yaml",
        "jobs/dataset.yaml",
        "jobs/inputs/red.png",
        "jobs/inputs/blue.png",
        "workflows/t2i.json",
        "workflows/i2i.json",
    ] {
        let written = std::fs::read(project.path("starter").join(rel)).unwrap();
        assert_eq!(written, std::fs::read(root().join(rel)).unwrap(), "{rel}");
        assert!(out.stdout.contains(rel), "{rel} not listed: {}", out.stdout);
    }
    // The README's first command, from the written folder.
    let run = project
        .cli(&["run", "starter/jobs/fox-sweep.yaml", "--sim", "-q"])
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let rows = read_rows(&project.path("starter/out/fox-sweep/runs.csv"));
    assert_eq!(rows.len(), 26);
    assert!(rows.iter().all(|r| r.get("status") == "ok"), "{rows:?}");
    assert!(
        project
            .path("starter/out/fox-sweep/report/index.html")
            .is_file()
    );
    // The other example plans too.
    let plan = project
        .cli(&["plan", "starter/jobs/dataset.yaml", "--format", "csv"])
        .await;
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    assert_eq!(plan.stdout.lines().count(), 65, "{}", plan.stdout);
}

#[tokio::test]
async fn init_refuses_to_overwrite_and_then_writes_nothing() {
    let project = Project::new();
    project.write("here/workflows/i2i.json", "mine");
    let out = project.cli(&["init", "here"]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    assert!(
        lines[0].contains("i2i.json") && lines[0].contains("exists"),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_to_string(project.path("here/workflows/i2i.json")).unwrap(),
        "mine"
    );
    // Checked before anything was written: no half-made project.
    assert!(!project.path("here/jobs").exists());
    assert!(!project.path("here/workflows/t2i.json").exists());
}

#[tokio::test]
async fn init_where_a_folder_it_needs_is_a_file_or_a_broken_link_refuses_and_writes_nothing() {
    let project = Project::new();
    // `workflows` is a file, in one project; a link to nowhere in another;
    // the project folder itself is a file in a third.
    project.write("file/workflows", "mine");
    std::fs::create_dir(project.path("link")).unwrap();
    let dangling = project.path("link/workflows");
    #[cfg(unix)]
    std::os::unix::fs::symlink(project.path("nowhere"), &dangling).unwrap();
    #[cfg(not(unix))]
    std::fs::write(&dangling, "not a folder").unwrap();
    project.write("plain", "mine");
    for (dir, inside) in [
        ("file", Some("workflows")),
        ("link", Some("workflows")),
        ("plain", None),
    ] {
        let out = project.cli(&["init", dir]).await;
        assert_eq!(out.code, 2, "{dir}: {}", out.stderr);
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{dir}: {}", out.stderr);
        // As the binary joins it (`\\` on Windows).
        let blocker = std::path::Path::new(dir);
        let shown = match inside {
            Some(name) => blocker.join(name),
            None => blocker.to_path_buf(),
        };
        let shown = shown.display().to_string();
        assert!(
            lines[0].contains(&shown) && lines[0].contains("not a folder"),
            "{dir}: {}",
            out.stderr
        );
        // Nothing of the project before the folder that stopped it.
        assert!(
            !project.path(dir).join("jobs").exists(),
            "{dir}: half-written"
        );
    }
    assert_eq!(
        std::fs::read_to_string(project.path("file/workflows")).unwrap(),
        "mine"
    );
}

#[test]
fn completions_load_in_bash_and_zsh_and_name_the_commands() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let (code, script, err) = cli(&["completions", shell]);
        assert_eq!(code, 0, "{shell}: {err}");
        for command in ["run", "plan", "init", "completions", "man"] {
            assert!(script.contains(command), "{shell}: no {command}");
        }
        assert!(!script.contains("bench"), "{shell}: the hidden command");
    }
    let dir = tempfile::tempdir().unwrap();
    let (_, bash, _) = cli(&["completions", "bash"]);
    std::fs::write(dir.path().join("comfy-batch.bash"), bash).unwrap();
    // Loaded as bash-completion would, then asked to complete
    // `comfy-batch ru`.
    let script = "source ./comfy-batch.bash\n\
        complete -p comfy-batch\n\
        COMP_WORDS=(comfy-batch ru); COMP_CWORD=1; COMP_LINE='comfy-batch ru'; COMP_POINT=14\n\
        fn=$(complete -p comfy-batch | sed -n 's/.* -F \\([^ ]*\\) .*/\\1/p')\n\
        \"$fn\" comfy-batch ru comfy-batch\n\
        printf 'reply:%s\\n' \"${COMPREPLY[@]}\"\n";
    let out = Command::new("bash")
        .args(["--norc", "-c", script])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{:?}", out.stderr);
    assert!(stdout.contains("reply:run"), "{stdout}");
    assert!(!stdout.contains("reply:plan"), "{stdout}");

    // zsh: the script is a completion function file; autoloaded from fpath
    // by compinit, as the README says to install it.
    let (_, zsh, _) = cli(&["completions", "zsh"]);
    std::fs::create_dir(dir.path().join("fn")).unwrap();
    std::fs::write(dir.path().join("fn/_comfy-batch"), zsh).unwrap();
    let script = "fpath=(./fn $fpath); autoload -U compinit; compinit -u -D\n\
        print -r -- ${_comps[comfy-batch]}\n\
        autoload -Uz +X _comfy-batch && print loaded\n";
    let out = Command::new("zsh")
        .args(["-f", "-c", script])
        .current_dir(dir.path())
        .output()
        .expect("zsh is installed (.ci/run installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout, "_comfy-batch\nloaded\n");
}

#[test]
fn completions_for_an_unknown_shell_is_bad_input_naming_the_shells() {
    let (code, stdout, stderr) = cli(&["completions", "nosuchshell"]);
    assert_eq!(code, 2);
    assert!(stdout.is_empty());
    for shell in ["bash", "zsh", "fish", "powershell"] {
        assert!(stderr.contains(shell), "{stderr}");
    }
    assert!(stderr.contains("nosuchshell"), "{stderr}");
}

#[test]
fn man_renders_with_every_command() {
    let (code, page, err) = cli(&["man"]);
    assert_eq!(code, 0, "{err}");
    assert!(page.starts_with(".ie") || page.starts_with(".TH"), "{page}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("comfy-batch.1");
    std::fs::write(&file, &page).unwrap();
    let out = Command::new("man")
        .arg("-l")
        .arg(&file)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{:?}", out.stderr);
    assert!(text.contains("comfy-batch"), "{text}");
    // Each command with its summary.
    for (command, about) in [
        ("run", "Expand, submit, track"),
        ("plan", "Expand a manifest"),
        ("init", "Write a starter project"),
        ("completions", "shell completion script"),
        ("rerun", "Rebuild jobs"),
    ] {
        let name = format!("comfy-batch-{command}(1)");
        let at = text.lines().position(|l| l.trim() == name);
        let next = at.and_then(|i| text.lines().nth(i + 1)).unwrap_or_default();
        assert!(next.contains(about), "{name} / {about} not in:\n{text}");
    }
    assert!(
        !text.contains("bench"),
        "the hidden command is shown:\n{text}"
    );
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let (code, stdout, _) = cli(&["--version"]);
    assert_eq!(code, 0);
    let line = stdout.trim();
    let version = env!("CARGO_PKG_VERSION");
    let head = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match head {
        Some(head) => {
            let re =
                regex_lite::Regex::new(r"^comfy-batch (\S+) \(commit ([0-9a-f]{12})\)$").unwrap();
            let caps = re.captures(line).unwrap_or_else(|| panic!("{line}"));
            assert_eq!(&caps[1], version);
            assert!(head.starts_with(&caps[2]), "{line} vs {head}");
        }
        // Built from a folder that is not a git checkout: the version alone.
        None => assert_eq!(line, format!("comfy-batch {version}")),
    }
}

/// The build script's git helpers, as build.rs compiles them.
#[allow(dead_code)] // `watched` is the build script's alone
mod build_git {
    include!(concat!(env!("CARGO_MANIFEST_DIR"), "/build/git.rs"));
}

#[test]
fn version_without_git_or_outside_a_checkout_is_the_version_alone() {
    let git = std::ffi::OsStr::new("git");
    // No git on the machine (a wheel built in a bare container).
    let missing = std::ffi::OsStr::new("/nonexistent/bin/git");
    assert_eq!(build_git::commit(missing, root()), None);
    assert!(build_git::watched(missing, root()).is_empty());
    // An unpacked sdist: no repository at all.
    let unpacked = tempfile::tempdir().unwrap();
    assert_eq!(build_git::commit(git, unpacked.path()), None);
    // Sources inside some other repository: not its commit.
    assert_eq!(build_git::commit(git, &root().join("src")), None);
    assert_eq!(build_git::version("0.1.0", None), "0.1.0");
    assert_eq!(
        build_git::version("0.1.0", Some("0123456789ab")),
        "0.1.0 (commit 0123456789ab)"
    );
}

#[test]
fn man_dir_writes_a_page_per_command_that_the_main_page_refers_to() {
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("man1");
    let (code, stdout, err) = cli(&["man", "--dir", pages.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let mut names: Vec<String> = std::fs::read_dir(&pages)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in ["comfy-batch.1", "comfy-batch-run.1", "comfy-batch-init.1"] {
        assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
        assert!(stdout.contains(name), "{name} not listed: {stdout}");
    }
    assert!(!names.iter().any(|n| n.contains("bench")), "{names:?}");
    // The run page has run's own options.
    let out = Command::new("man")
        .arg("-l")
        .arg(pages.join("comfy-batch-run.1"))
        .env("MANPAGER", "cat")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{:?}", out.stderr);
    assert!(text.contains("--concurrency"), "{text}");
}
