//! Build script: puts the commit the binary is built from into its
//! `--version` (`COMFY_BATCH_VERSION`), when built from a git checkout; the
//! version alone otherwise (no git, an sdist, a crate archive).

use std::ffi::OsStr;
use std::path::Path;

#[path = "build/git.rs"]
mod git;

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let dir = Path::new(&dir);
    let program = OsStr::new("git");
    let commit = git::commit(program, dir);
    let version = git::version(env!("CARGO_PKG_VERSION"), commit.as_deref());
    println!("cargo:rustc-env=COMFY_BATCH_VERSION={version}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=build/git.rs");
    if commit.is_some() {
        for path in git::watched(program, dir) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
