//! The output folder's images and prompts, written atomically.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::SinkError;
use crate::ids::JobId;
use crate::patch::Prompt;

/// The output folder of a run: `images/`, `prompts/` and `runs.csv`.
#[derive(Debug, Clone)]
pub struct OutputDir {
    root: PathBuf,
}

/// The local name of a job's `n`-th image from `node`:
/// `<job_id>_<node>_<n>.<ext>`. Built only from our own ids and a sanitised
/// extension; the server's file name never becomes a path.
pub fn image_file_name(job: &JobId, node: &str, n: usize, ext: &str) -> String {
    let raw = node;
    let mut node: String = node
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(32)
        .collect();
    if node != raw {
        // Distinct ids (`12:3`, `12-3`) must not share a file.
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(raw.as_bytes());
        node.push('-');
        node.push_str(&hex::encode(&digest[..3]));
    }
    let ext = usable_extension(ext).unwrap_or_else(|| "png".to_string());
    format!("{job}_{node}_{n}.{ext}")
}

/// The longest extension kept (`safetensors` fits); longer ones are not
/// extensions a user would recognise.
const MAX_EXT: usize = 16;

fn usable_extension(ext: &str) -> Option<String> {
    let ok =
        !ext.is_empty() && ext.len() <= MAX_EXT && ext.chars().all(|c| c.is_ascii_alphanumeric());
    ok.then(|| ext.to_ascii_lowercase())
}

/// The extension of the local copy of a server file: the part after the
/// last dot of the name's last path component, ASCII letters and digits
/// only, lower-cased; `bin` when the name has no usable one.
pub fn extension_of(server_name: &str) -> String {
    let base = server_name.rsplit(['/', '\\']).next().unwrap_or_default();
    base.rsplit_once('.')
        .filter(|(stem, _)| !stem.is_empty())
        .and_then(|(_, ext)| usable_extension(ext))
        .unwrap_or_else(|| "bin".to_string())
}

impl OutputDir {
    /// Creates (or reopens) the folder and removes temporary files a killed
    /// run may have left behind.
    pub fn open(root: &Path) -> Result<OutputDir, SinkError> {
        for dir in [
            root.to_path_buf(),
            root.join("images"),
            root.join("prompts"),
        ] {
            fs::create_dir_all(&dir).map_err(SinkError::at(&dir))?;
        }
        for dir in [root.join("images"), root.join("prompts")] {
            let entries = fs::read_dir(&dir).map_err(SinkError::at(&dir))?;
            for entry in entries.flatten() {
                let name = entry.file_name();
                if name.to_string_lossy().starts_with(".tmp-") {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        Ok(OutputDir {
            root: root.to_path_buf(),
        })
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The log's path.
    pub fn log_path(&self) -> PathBuf {
        self.root.join("runs.csv")
    }

    /// Where a job's prompt is kept.
    pub fn prompt_path(&self, job: &JobId) -> PathBuf {
        self.root.join("prompts").join(format!("{job}.json"))
    }

    /// Writes the exact prompt to be sent, replayable as is.
    pub fn save_prompt(&self, job: &JobId, prompt: &Prompt) -> Result<(), SinkError> {
        let path = self.prompt_path(job);
        let mut bytes = serde_json::to_vec_pretty(prompt).map_err(|e| SinkError {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        bytes.push(b'\n');
        write_atomic(&path, &bytes)
    }

    /// Saves image bytes verbatim and returns the path relative to the
    /// output folder, as logged in `runs.csv`.
    pub fn save_image(
        &self,
        job: &JobId,
        node: &str,
        n: usize,
        ext: &str,
        bytes: &[u8],
    ) -> Result<String, SinkError> {
        let name = image_file_name(job, node, n, ext);
        write_atomic(&self.root.join("images").join(&name), bytes)?;
        Ok(format!("images/{name}"))
    }

    /// Saves a server file's bytes verbatim as
    /// `images/<job_id>_<node>_<n>.<ext>`, the extension taken from the
    /// server's name ([`extension_of`]); returns the relative path.
    pub fn save_file(
        &self,
        job: &JobId,
        node: &str,
        n: usize,
        server_name: &str,
        bytes: &[u8],
    ) -> Result<String, SinkError> {
        self.save_image(job, node, n, &extension_of(server_name), bytes)
    }

    /// Saves a node's text output as UTF-8 `images/<job_id>_<node>_<n>.txt`;
    /// returns the relative path.
    pub fn save_text(
        &self,
        job: &JobId,
        node: &str,
        n: usize,
        text: &str,
    ) -> Result<String, SinkError> {
        self.save_image(job, node, n, "txt", text.as_bytes())
    }

    /// Whether every image a log row names exists (resume skips a job only
    /// then).
    pub fn images_present(&self, images: &[String]) -> bool {
        images.iter().all(|rel| {
            let rel = Path::new(rel);
            // Only our own layout counts; a hand-edited row cannot point
            // outside the folder.
            rel.components()
                .all(|c| matches!(c, std::path::Component::Normal(_)))
                && self.root.join(rel).is_file()
        })
    }
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over
/// `path`: readers and a later resume see the whole file or none.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SinkError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut builder = tempfile::Builder::new();
    builder.prefix(".tmp-");
    // A temporary file is owner-only; the file it becomes gets the modes of
    // any new file (0o666 less the umask), as the server's own outputs do.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let mut tmp = builder.tempfile_in(dir).map_err(SinkError::at(dir))?;
    tmp.write_all(bytes).map_err(SinkError::at(path))?;
    tmp.persist(path)
        .map_err(|e| SinkError::at(path)(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn saved_files_get_the_modes_of_any_new_file() {
        // Not the temporary file's owner-only mode: outputs are shared with
        // a group or served by a web server like any file the user makes.
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let out = OutputDir::open(dir.path()).unwrap();
        let rel = out
            .save_file(&JobId::new("abc"), "4", 0, "v.mp4", b"video")
            .unwrap();
        out.save_prompt(&JobId::new("abc"), &Prompt(Default::default()))
            .unwrap();
        let plain = dir.path().join("plain");
        fs::write(&plain, b"x").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join(rel)), mode(&plain));
        assert_eq!(mode(&out.prompt_path(&JobId::new("abc"))), mode(&plain));
    }

    #[test]
    fn names_never_come_from_the_server() {
        let id = JobId::new("0123456789ab");
        assert_eq!(image_file_name(&id, "9", 0, "png"), "0123456789ab_9_0.png");
        assert_eq!(
            image_file_name(&id, "../../x", 1, "PNG"),
            "0123456789ab_------x-9cdf6a_1.png"
        );
        assert_ne!(
            image_file_name(&id, "12:3", 0, "png"),
            image_file_name(&id, "12-3", 0, "png"),
            "distinct node ids never share a file"
        );
        assert_eq!(
            image_file_name(&id, "9", 2, "png/../../etc"),
            "0123456789ab_9_2.png"
        );
        assert_eq!(
            image_file_name(&id, "/abs", 0, ""),
            "0123456789ab_-abs-e802dc_0.png"
        );
    }

    #[test]
    fn extensions_come_from_the_sanitised_server_name() {
        let cases = [
            ("clip_00001_.mp4", "mp4"),
            ("tone_00001_.FLAC", "flac"),
            ("latent_00001_.latent", "latent"),
            ("m.safetensors", "safetensors"),
            ("../../etc/passwd", "bin"),
            ("/srv/out/x.webm", "webm"),
            ("..\\..\\x.Opus", "opus"),
            ("x.png/../../etc", "bin"),
            (".bashrc", "bin"),
            ("noext", "bin"),
            ("x.", "bin"),
            ("x.p%n", "bin"),
            ("x.averyveryverylongextension", "bin"),
            ("a.tar.gz", "gz"),
            ("C:\\ComfyUI\\output\\x.PNG", "png"),
            ("фото.png", "png"),
            ("x.пнг", "bin"),
            ("x.png\u{202e}gpj", "bin"),
        ];
        for (name, want) in cases {
            assert_eq!(extension_of(name), want, "{name}");
        }
        let dir = tempfile::tempdir().unwrap();
        let out = OutputDir::open(dir.path()).unwrap();
        let id = JobId::new("abc");
        assert_eq!(
            out.save_file(&id, "4", 0, "../../clip.MP4", b"v").unwrap(),
            "images/abc_4_0.mp4"
        );
        let rel = out.save_text(&id, "13", 0, "une légende").unwrap();
        assert_eq!(rel, "images/abc_13_0.txt");
        assert_eq!(
            std::fs::read_to_string(dir.path().join(rel)).unwrap(),
            "une légende"
        );
    }

    #[test]
    fn writes_are_atomic_and_leftovers_are_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let out = OutputDir::open(dir.path()).unwrap();
        std::fs::write(dir.path().join("images/.tmp-stale"), b"half").unwrap();
        let out2 = OutputDir::open(dir.path()).unwrap();
        assert!(!dir.path().join("images/.tmp-stale").exists());
        let rel = out2
            .save_image(&JobId::new("abc"), "9", 0, "png", b"bytes")
            .unwrap();
        assert_eq!(rel, "images/abc_9_0.png");
        assert_eq!(std::fs::read(dir.path().join(&rel)).unwrap(), b"bytes");
        assert!(out.images_present(&[rel]));
        assert!(!out.images_present(&["../runs.csv".into()]));
        assert!(!out.images_present(&["images/missing.png".into()]));
    }
}
