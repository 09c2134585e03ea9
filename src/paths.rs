//! Lexical path helpers shared by the stages (no file system access), so
//! paths in messages and logs read as the user would write them.

use std::path::{Component, Path, PathBuf};

/// Removes `.` and `x/..` lexically; `..` above a root is dropped, above a
/// relative start kept.
pub(crate) fn normalize(path: &Path) -> PathBuf {
    let mut out: Vec<Component> = Vec::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.last() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => out.push(c),
            },
            _ => out.push(c),
        }
    }
    let p: PathBuf = out.iter().collect();
    if p.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        p
    }
}

/// `path` as seen from the folder `base`, with `..` steps where needed (both
/// made absolute against the working folder first); `path` itself when they
/// share no root.
pub(crate) fn relative_to(base: &Path, path: &Path) -> String {
    let abs = |p: &Path| {
        // `absolute("")` is an error; the empty path is the working folder.
        let p = if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        };
        normalize(&std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()))
    };
    let (base, path) = (abs(base), abs(path));
    let b: Vec<_> = base.components().collect();
    let p: Vec<_> = path.components().collect();
    let common = b.iter().zip(&p).take_while(|(x, y)| x == y).count();
    if common == 0 {
        return path.display().to_string();
    }
    let mut out = PathBuf::new();
    for _ in common..b.len() {
        out.push("..");
    }
    for c in &p[common..] {
        out.push(c.as_os_str());
    }
    if out.as_os_str().is_empty() {
        ".".to_string()
    } else {
        out.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_lexically() {
        assert_eq!(
            normalize(Path::new("jobs/../workflows/a.json")),
            PathBuf::from("workflows/a.json")
        );
        assert_eq!(normalize(Path::new("../x/./y")), PathBuf::from("../x/y"));
        assert_eq!(normalize(Path::new("a/..")), PathBuf::from("."));
        assert_eq!(normalize(Path::new("/../a")), PathBuf::from("/a"));
    }

    #[test]
    fn relative_paths_walk_up() {
        assert_eq!(
            relative_to(Path::new("/r/out/fox"), Path::new("/r/workflows/t2i.json")),
            "../../workflows/t2i.json"
        );
        assert_eq!(
            relative_to(
                Path::new("/r/out"),
                Path::new("/r/jobs/../workflows/a.json")
            ),
            "../workflows/a.json"
        );
        assert_eq!(relative_to(Path::new("/r/out"), Path::new("/r/out")), ".");
        let here = std::env::current_dir().unwrap();
        assert_eq!(relative_to(&here.join("out"), Path::new("")), "..");
    }
}
