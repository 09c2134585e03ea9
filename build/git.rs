// The commit a build comes from, for `--version`. Shared by build.rs and
// the test of its fallbacks (`include!`d, so no inner doc comment here).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Runs `git ARGS…` in `dir`; its trimmed stdout when it ran and succeeded.
fn git_output(git: &OsStr, dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new(git)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    out.status.success().then(|| text.trim().to_string())
}

/// The first 12 hex digits of the commit checked out at `dir`, when `dir`
/// is the top of a git work tree and `git` runs. None otherwise: no git, a
/// source archive (an sdist, a crate), or a folder inside some other
/// repository, whose commit would be the wrong one.
pub fn commit(git: &OsStr, dir: &Path) -> Option<String> {
    let top = git_output(git, dir, &["rev-parse", "--show-toplevel"])?;
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same(Path::new(&top), dir) {
        return None;
    }
    let head = git_output(git, dir, &["rev-parse", "--verify", "--quiet", "HEAD"])?;
    let hex = head.len() >= 12 && head.bytes().all(|b| b.is_ascii_hexdigit());
    hex.then(|| head[..12].to_ascii_lowercase())
}

/// The files a new commit changes (HEAD, its branch's ref, packed refs):
/// the build script reruns when one does. Only those that exist, since
/// cargo reruns every time for a missing one.
pub fn watched(git: &OsStr, dir: &Path) -> Vec<PathBuf> {
    let mut names = vec!["HEAD".to_string(), "packed-refs".to_string()];
    names.extend(git_output(git, dir, &["symbolic-ref", "-q", "HEAD"]));
    names
        .iter()
        .filter_map(|name| git_output(git, dir, &["rev-parse", "--git-path", name]))
        .map(|path| dir.join(path))
        .filter(|path| path.exists())
        .collect()
}

/// The commit named by `COMFY_BATCH_COMMIT`, for builds where git cannot
/// answer (the release's cross and manylinux containers, whose checkout git
/// refuses or lacks): its first 12 hex digits, or None unless it is a
/// commit id (at least 12 hex digits, nothing else).
pub fn commit_from_env(value: Option<&str>) -> Option<String> {
    let value = value?.trim();
    let hex =
        value.len() >= 12 && value.len() <= 64 && value.bytes().all(|b| b.is_ascii_hexdigit());
    hex.then(|| value[..12].to_ascii_lowercase())
}

/// What `--version` shows after the program's name.
pub fn version(package: &str, commit: Option<&str>) -> String {
    match commit {
        Some(commit) => format!("{package} (commit {commit})"),
        None => package.to_string(),
    }
}
