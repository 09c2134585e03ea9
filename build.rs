//! Build script: puts the commit the binary is built from into its
//! `--version` (`COMFY_BATCH_VERSION`), when built from a git checkout; the
//! version alone otherwise (no git, an sdist, a crate archive). Where git
//! cannot answer, `COMFY_BATCH_COMMIT` names the commit (the release
//! workflow sets it for its containers).

use std::ffi::OsStr;
use std::path::Path;

#[path = "build/git.rs"]
mod git;

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let dir = Path::new(&dir);
    let program = OsStr::new("git");
    let from_git = git::commit(program, dir);
    let given = std::env::var("COMFY_BATCH_COMMIT").ok();
    let commit = from_git
        .clone()
        .or_else(|| git::commit_from_env(given.as_deref()));
    let version = git::version(env!("CARGO_PKG_VERSION"), commit.as_deref());
    println!("cargo:rustc-env=COMFY_BATCH_VERSION={version}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=build/git.rs");
    println!("cargo:rerun-if-env-changed=COMFY_BATCH_COMMIT");
    if from_git.is_some() {
        for path in git::watched(program, dir) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
