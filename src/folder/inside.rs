//! Opening a file a run folder's log names, without ever following a
//! symbolic link on the way: the one door through which `merge`, `export`,
//! `report`, `grid` and `rerun` read (and link) what a folder holds. A hand-edited
//! log, or a folder someone put links into (`images/s -> /etc`,
//! `inputs -> elsewhere`), must not make them read, copy or link a file
//! outside the folder.
//!
//! The folder itself (the DIR the user names, and every folder above it)
//! may be a link: the user chose it. Everything below it is checked.
//! Knows nothing of logs, rows or what the file is for.

use std::fs::{self, File};
use std::io::{Read, Seek};
use std::path::{Component, Path, PathBuf};

/// Why a path under a run folder was not opened.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Absolute, empty, or with `..`: it would leave the folder.
    #[error("the path leaves the output folder; never opened")]
    Outside,
    /// A component of the path (the file itself or a folder on the way) is
    /// a symbolic link (or, on Windows, a junction).
    #[error("reached through the symbolic link {}; never opened", .0.display())]
    Link(PathBuf),
    /// Nothing there.
    #[error("missing")]
    Missing,
    /// There, but not a regular file (a folder, a device, a pipe).
    #[error("not a regular file; never opened")]
    NotAFile,
    /// The file changed between the check and the open (a component was
    /// swapped for a link meanwhile): what was opened is not used.
    #[error("changed while being opened; not used")]
    Changed,
    /// Reading the file system failed.
    #[error("{0}")]
    Io(std::io::Error),
}

impl Refusal {
    /// Whether the path was refused (as opposed to simply absent or
    /// unreadable): a link on the way, a path out of the folder, not a file.
    pub fn is_refused(&self) -> bool {
        matches!(
            self,
            Refusal::Outside | Refusal::Link(_) | Refusal::NotAFile | Refusal::Changed
        )
    }
}

/// A file opened by [`open_under`]: the descriptor, its path, and its
/// metadata taken from the descriptor.
#[derive(Debug)]
pub struct Opened {
    /// The open file.
    pub file: File,
    /// `root/rel`, checked: no component below the root is a link.
    pub path: PathBuf,
    /// The opened file's metadata (from the descriptor, not the path).
    pub meta: fs::Metadata,
}

impl Opened {
    /// The whole file.
    pub fn read_all(&mut self) -> std::io::Result<Vec<u8>> {
        let mut bytes = Vec::with_capacity(usize::try_from(self.meta.len()).unwrap_or(0));
        self.file.rewind()?;
        self.file.read_to_end(&mut bytes)?;
        Ok(bytes)
    }
}

/// Checks `root/rel` without opening it: `rel` is relative with plain
/// components only, and no component below `root` is a symbolic link
/// (each is looked at with `symlink_metadata`, which never follows one).
/// Returns the last component's metadata (a file or a folder).
pub fn walk_under(root: &Path, rel: &Path) -> Result<fs::Metadata, Refusal> {
    // Lexically first: a `..` after a missing folder is still out.
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(Refusal::Outside);
    }
    let mut at = root.to_path_buf();
    let mut so_far = PathBuf::new();
    let mut last = None;
    for name in rel.iter() {
        at.push(name);
        so_far.push(name);
        let meta = fs::symlink_metadata(&at).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory => Refusal::Missing,
            _ => Refusal::Io(e),
        })?;
        if meta.file_type().is_symlink() {
            return Err(Refusal::Link(so_far));
        }
        last = Some(meta);
    }
    last.ok_or(Refusal::Outside)
}

/// Opens the regular file `root/rel` for reading without following any
/// symbolic link below `root`: [`walk_under`] checks every component, the
/// last is opened with `O_NOFOLLOW` (on unix), and the descriptor must be
/// the very file the walk saw (same device and inode).
///
/// What remains: a folder on the path swapped for a link after the walk
/// passed it leads the open elsewhere; the inode check catches that unless
/// the walk's own look at the last component went through the same swapped
/// link. Closing that needs opening component by component (`openat`);
/// using it needs someone writing the folder while we read it, and winning
/// the race. Elsewhere than unix (no `O_NOFOLLOW`, no inode), the walk alone
/// stands between the check and the open.
pub fn open_under(root: &Path, rel: &Path) -> Result<Opened, Refusal> {
    let seen = walk_under(root, rel)?;
    if !seen.is_file() {
        return Err(Refusal::NotAFile);
    }
    let path = root.join(rel);
    let mut options = fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    }
    let file = options.open(&path).map_err(|e| {
        #[cfg(unix)]
        if e.raw_os_error() == Some(libc::ELOOP) {
            // The file became a link since the walk.
            return Refusal::Link(rel.to_path_buf());
        }
        match e.kind() {
            std::io::ErrorKind::NotFound => Refusal::Missing,
            _ => Refusal::Io(e),
        }
    })?;
    let meta = file.metadata().map_err(Refusal::Io)?;
    if !meta.is_file() || same_inode(&seen, &meta) == Some(false) {
        return Err(Refusal::Changed);
    }
    Ok(Opened { file, path, meta })
}

/// Whether two metadata describe the same file (device and inode); `None`
/// where that cannot be told (not unix).
pub(crate) fn same_inode(a: &fs::Metadata, b: &fs::Metadata) -> Option<bool> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some(a.dev() == b.dev() && a.ino() == b.ino())
    }
    #[cfg(not(unix))]
    {
        let _ = (a, b);
        None
    }
}

/// Hard-links the opened file to `to` (a new name), copying from its
/// descriptor when linking is not possible (another file system) or the
/// link would not be the opened file (its path changed since it was
/// opened): what lands at `to` is always the file that was checked.
pub(crate) fn link_or_copy(from: &mut Opened, to: &Path) -> std::io::Result<()> {
    // `hard_link` links a link itself, never what it points to.
    if fs::hard_link(&from.path, to).is_ok() {
        let linked = fs::symlink_metadata(to)?;
        if linked.is_file() && same_inode(&linked, &from.meta) != Some(false) {
            return Ok(());
        }
        fs::remove_file(to)?;
    }
    from.file.rewind()?;
    let mut out = File::create_new(to)?;
    std::io::copy(&mut from.file, &mut out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_files_open_and_paths_out_of_the_folder_do_not() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("images")).unwrap();
        fs::write(d.path().join("images/a.png"), b"a").unwrap();
        let mut opened = open_under(d.path(), Path::new("images/a.png")).unwrap();
        assert_eq!(opened.read_all().unwrap(), b"a");
        for rel in [
            "../x",
            "/etc/passwd",
            "images/../images/a.png",
            "gone/../../x",
            "",
        ] {
            assert!(
                matches!(open_under(d.path(), Path::new(rel)), Err(Refusal::Outside)),
                "{rel}"
            );
        }
        assert!(matches!(
            open_under(d.path(), Path::new("images/b.png")),
            Err(Refusal::Missing)
        ));
        assert!(matches!(
            open_under(d.path(), Path::new("images")),
            Err(Refusal::NotAFile)
        ));
    }

    #[cfg(unix)]
    #[test]
    fn a_link_anywhere_on_the_path_is_refused_and_named() {
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("outside");
        fs::create_dir_all(outside.join("deep")).unwrap();
        fs::write(outside.join("deep/secret"), b"secret").unwrap();
        let run = d.path().join("run");
        fs::create_dir_all(run.join("images/real")).unwrap();
        std::os::unix::fs::symlink(&outside, run.join("images/s")).unwrap();
        std::os::unix::fs::symlink(&outside, run.join("inputs")).unwrap();
        std::os::unix::fs::symlink(outside.join("deep/secret"), run.join("images/f.png")).unwrap();
        std::os::unix::fs::symlink(outside.join("deep"), run.join("images/real/d")).unwrap();
        for (rel, link) in [
            ("images/s/deep/secret", "images/s"),
            ("inputs/deep/secret", "inputs"),
            ("images/f.png", "images/f.png"),
            ("images/real/d/secret", "images/real/d"),
        ] {
            match open_under(&run, Path::new(rel)) {
                Err(Refusal::Link(l)) => assert_eq!(l, Path::new(link), "{rel}"),
                other => panic!("{rel}: {other:?}"),
            }
        }
        // The folder named by the user may itself be a link.
        let alias = d.path().join("alias");
        std::os::unix::fs::symlink(&outside, &alias).unwrap();
        assert!(open_under(&alias, Path::new("deep/secret")).is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn a_link_made_is_the_opened_file_even_if_its_name_changed_since() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("a"), b"checked").unwrap();
        fs::write(d.path().join("other"), b"other").unwrap();
        let mut opened = open_under(d.path(), Path::new("a")).unwrap();
        // Swapped after the open: the name now leads elsewhere.
        fs::remove_file(d.path().join("a")).unwrap();
        std::os::unix::fs::symlink(d.path().join("other"), d.path().join("a")).unwrap();
        let to = d.path().join("copy");
        link_or_copy(&mut opened, &to).unwrap();
        assert!(!fs::symlink_metadata(&to).unwrap().file_type().is_symlink());
        assert_eq!(fs::read(&to).unwrap(), b"checked");
    }
}
