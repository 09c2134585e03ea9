//! The output folder's images and prompts, written atomically.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::SinkError;
use super::durable::Syncer;
use crate::ids::JobId;
use crate::patch::Prompt;
use crate::runlog::job_key;

/// The output folder of a run: `images/`, `prompts/` and `runs.csv`.
#[derive(Debug, Clone)]
pub struct OutputDir {
    root: PathBuf,
    /// Jobs ending together share one sync (group commit).
    syncs: Arc<Syncer>,
    /// Which jobs have a prompt file or a rejection line.
    known: Arc<Mutex<Known>>,
}

/// The jobs whose prompt file or rejection line the folder holds: listed
/// when it is opened, kept up to date as this run writes them. Asking the
/// file system instead cost a `stat` and an `unlink` per job. Only the run
/// holding the folder's lock writes these files; one deleted by hand
/// meanwhile only makes a job look for an earlier submission that is not
/// there.
///
/// Each job is kept as its 16-byte key ([`crate::runlog::job_key`]), not
/// its id's text: the sets grow with the jobs of a million-job folder.
#[derive(Debug, Default)]
struct Known {
    prompts: HashSet<u128>,
    rejections: HashSet<u128>,
}

impl Known {
    /// Notes a file of `prompts/`.
    fn note(&mut self, name: &str) {
        if let Some(id) = name.strip_suffix(".node_errors.txt") {
            self.rejections.insert(job_key(id));
        } else if let Some(id) = name.strip_suffix(".json") {
            self.prompts.insert(job_key(id));
        }
    }

    fn lock(known: &Mutex<Known>) -> std::sync::MutexGuard<'_, Known> {
        // The sets stay whole whatever a panicking holder did.
        known.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A prompt as its file in `prompts/` holds it: pretty JSON and a newline.
pub fn prompt_text(prompt: &Prompt) -> Result<Vec<u8>, serde_json::Error> {
    let mut text = serde_json::to_vec_pretty(prompt)?;
    text.push(b'\n');
    Ok(text)
}

/// The local name of a job's `n`-th image from `node`:
/// `<job_id>_<node>_<n>.<ext>`. Built only from our own ids and an
/// extension on [`KEPT_EXTENSIONS`] (`bin` for any other); the server's file
/// name never becomes a path.
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
    let ext = kept_extension(ext).unwrap_or(UNKNOWN_EXTENSION);
    format!("{job}_{node}_{n}.{ext}")
}

/// The extensions a saved file keeps from the server's name (lower-cased):
/// media a browser shows as media, data and 3D formats that no browser
/// runs. Anything else, a page (`html`, `svg`, which can carry script) or a
/// program (`sh`, `exe`, `bat`), is saved as [`UNKNOWN_EXTENSION`], so the
/// report, a file manager or a dataset loader never opens it as one.
pub const KEPT_EXTENSIONS: [&str; 34] = [
    // images
    "png",
    "apng",
    "jpg",
    "jpeg",
    "webp",
    "gif",
    "avif",
    "bmp",
    "tif",
    "tiff",
    // video
    "mp4",
    "webm",
    "mov",
    "mkv",
    "m4v",
    // audio
    "flac",
    "mp3",
    "opus",
    "ogg",
    "wav",
    "m4a",
    "aac",
    // data
    "latent",
    "safetensors",
    "npy",
    "json",
    "txt",
    // 3D
    "glb",
    "gltf",
    "obj",
    "ply",
    "stl",
    "fbx",
    "usdz",
];

/// The extension of a file whose own is not on [`KEPT_EXTENSIONS`]: bytes
/// to download, nothing to open.
pub const UNKNOWN_EXTENSION: &str = "bin";

/// `ext` as kept (lower-case), when it is on [`KEPT_EXTENSIONS`] in any case.
pub fn kept_extension(ext: &str) -> Option<&'static str> {
    KEPT_EXTENSIONS
        .iter()
        .find(|kept| kept.eq_ignore_ascii_case(ext))
        .copied()
}

/// The extension of the local copy of a server file: the part after the
/// last dot of the name's last path component, when it is on
/// [`KEPT_EXTENSIONS`] (`x.png.html` is `bin`, `x.PNG` is `png`); else
/// [`UNKNOWN_EXTENSION`].
pub fn extension_of(server_name: &str) -> String {
    let base = server_name.rsplit(['/', '\\']).next().unwrap_or_default();
    base.rsplit_once('.')
        .filter(|(stem, _)| !stem.is_empty())
        .and_then(|(_, ext)| kept_extension(ext))
        .unwrap_or(UNKNOWN_EXTENSION)
        .to_string()
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
        // Every folder we write atomically into: a killed run's half
        // written file is never left visible there.
        let mut known = Known::default();
        for (dir, prompts) in [
            (root.to_path_buf(), false),
            (root.join("images"), false),
            (root.join("prompts"), true),
            (root.join("inputs"), false),
        ] {
            let Ok(entries) = fs::read_dir(&dir) else {
                // `inputs/` exists only once a job had an input.
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with(".tmp-") {
                    let _ = fs::remove_file(entry.path());
                } else if prompts {
                    known.note(&name);
                }
            }
        }
        Ok(OutputDir {
            root: root.to_path_buf(),
            syncs: Arc::new(Syncer::new(root)),
            known: Arc::new(Mutex::new(known)),
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

    /// Whether the folder holds a prompt file of `job`: from an earlier
    /// run (which may have queued it) or written by this one.
    pub fn has_prompt(&self, job: &JobId) -> bool {
        Known::lock(&self.known)
            .prompts
            .contains(&job_key(job.as_str()))
    }

    /// Writes the exact prompt to be sent, replayable as is.
    pub fn save_prompt(&self, job: &JobId, prompt: &Prompt) -> Result<(), SinkError> {
        let text = prompt_text(prompt).map_err(|e| SinkError {
            path: self.prompt_path(job),
            source: std::io::Error::other(e),
        })?;
        self.save_prompt_text(job, &text)
    }

    /// [`OutputDir::save_prompt`] of a prompt made into its file's text
    /// already ([`prompt_text`]).
    pub fn save_prompt_text(&self, job: &JobId, text: &[u8]) -> Result<(), SinkError> {
        // Synced with the job's outputs by `make_job_durable`, before a row
        // names the job: a sync per prompt before its submission cost more
        // than the rest of the job's file work, and buys only that a power
        // loss right after the submission cannot make a rerun queue it again.
        write_atomic_unsynced(&self.prompt_path(job), text)?;
        Known::lock(&self.known)
            .prompts
            .insert(job_key(job.as_str()));
        Ok(())
    }

    /// Names a local input image by its content, read piece by piece (an
    /// input is never held whole: it is copied and uploaded from its file).
    pub fn read_input(path: &Path) -> Result<InputFile, SinkError> {
        use sha2::{Digest, Sha256};
        use std::io::Read;
        let mut file = fs::File::open(path).map_err(SinkError::at(path))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 << 10];
        let mut len = 0u64;
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(SinkError::at(path)(e)),
            };
            hasher.update(&buf[..n]);
            len += n as u64;
        }
        let digest = hex::encode(hasher.finalize());
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .filter(|e| {
                !e.is_empty() && e.len() <= 5 && e.chars().all(|c| c.is_ascii_alphanumeric())
            })
            .unwrap_or_else(|| "png".to_string());
        Ok(InputFile {
            name: format!("{}.{ext}", &digest[..INPUT_NAME_HEX]),
            path: path.to_path_buf(),
            len,
        })
    }

    /// Keeps an uploaded input once, as `inputs/<sha256 prefix>.<ext>`, so
    /// `rerun` can upload it again from the prompt alone. Returns its path
    /// relative to the folder.
    pub fn save_input(&self, input: &InputFile) -> Result<String, SinkError> {
        let dir = self.root.join("inputs");
        let path = dir.join(&input.name);
        let whole = fs::metadata(&path).is_ok_and(|m| m.len() == input.len);
        if !whole {
            fs::create_dir_all(&dir).map_err(SinkError::at(&dir))?;
            let mut from = fs::File::open(&input.path).map_err(SinkError::at(&input.path))?;
            write_atomic_synced_from(&path, &mut from)?;
            sync_dir(&dir)?;
        }
        Ok(format!("inputs/{}", input.name))
    }

    /// Keeps (or, with `None`, clears) the line saying the server accepted
    /// the job's prompt with errors in some of its outputs, so a later run
    /// adopting that prompt logs it `rejected` too.
    pub fn save_rejection(&self, job: &JobId, line: Option<&str>) -> Result<(), SinkError> {
        let path = self.rejection_path(job);
        let id = job.as_str();
        match line {
            Some(line) => {
                write_atomic_synced(&path, line.as_bytes())?;
                Known::lock(&self.known).rejections.insert(job_key(id));
                Ok(())
            }
            None if !Known::lock(&self.known).rejections.contains(&job_key(id)) => Ok(()),
            None => match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(SinkError::at(&path)(e)),
                _ => {
                    Known::lock(&self.known).rejections.remove(&job_key(id));
                    Ok(())
                }
            },
        }
    }

    /// The line kept by [`OutputDir::save_rejection`], if any.
    pub fn rejection(&self, job: &JobId) -> Option<String> {
        if !Known::lock(&self.known)
            .rejections
            .contains(&job_key(job.as_str()))
        {
            return None;
        }
        fs::read_to_string(self.rejection_path(job)).ok()
    }

    fn rejection_path(&self, job: &JobId) -> PathBuf {
        self.root
            .join("prompts")
            .join(format!("{job}.node_errors.txt"))
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
        // Synced in batches by `make_durable`, before a row names it.
        write_atomic_unsynced(&self.root.join("images").join(&name), bytes)?;
        Ok(format!("images/{name}"))
    }

    /// A file of `images/` to write as it arrives (a download too large
    /// to hold): a temporary file until [`OutputDir::save_incoming`] names
    /// it, removed if dropped before (a download cut or timed out leaves
    /// nothing; a killed run's is removed by the next [`OutputDir::open`]).
    pub fn incoming(&self) -> Result<Incoming, SinkError> {
        let dir = self.root.join("images");
        let file = temp_beside(&dir.join("incoming"))?;
        Ok(Incoming { file, dir })
    }

    /// Names a whole [`Incoming`] file
    /// `images/<job_id>_<node>_<n>.<ext>`, as [`OutputDir::save_image`]
    /// does for bytes; returns the relative path. Synced in batches by
    /// `make_durable` before a row names it, as every output.
    pub fn save_incoming(
        &self,
        job: &JobId,
        node: &str,
        n: usize,
        ext: &str,
        incoming: Incoming,
    ) -> Result<String, SinkError> {
        let name = image_file_name(job, node, n, ext);
        let path = incoming.dir.join(&name);
        incoming
            .file
            .persist(&path)
            .map_err(|e| SinkError::at(&path)(e.error))?;
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

    /// Whether every image a log row names exists whole (resume skips a
    /// job only then): an empty file, or one whose format's end marker is
    /// missing (a power loss before the data reached the disk), counts as
    /// missing.
    pub fn images_present(&self, images: &[String]) -> bool {
        images.iter().all(|rel| {
            let rel = Path::new(rel);
            // Only our own layout counts; a hand-edited row cannot point
            // outside the folder.
            rel.components()
                .all(|c| matches!(c, std::path::Component::Normal(_)))
                && looks_whole(&self.root, rel)
        })
    }

    /// Makes the files saved so far (their data and their names) durable
    /// before a log row names them. Callers that arrive while a sync runs
    /// share the next one, so jobs ending together cost one sync; blocks
    /// the calling thread (for callers off the runtime).
    pub fn make_durable(&self, files: &[String]) -> Result<(), SinkError> {
        let paths: Vec<PathBuf> = files.iter().map(|rel| self.root.join(rel)).collect();
        self.syncs.durable_blocking(paths, Duration::ZERO)
    }

    /// [`OutputDir::make_durable`] for a job's outputs and its prompt file
    /// (`job` names it: [`crate::plan::Job::prompt_file_id`]), if there is one (a job can fail before it is written), awaited without
    /// holding a thread. A sync it starts waits until `gather` after the
    /// previous sync started, so that jobs ending meanwhile share it: each
    /// sync of the file system has a fixed cost. The caller decides what a
    /// late row costs it (zero: nothing waits, not even a sync another
    /// caller started gathering).
    pub async fn make_job_durable(
        &self,
        job: &JobId,
        files: &[String],
        gather: Duration,
    ) -> Result<(), SinkError> {
        let mut paths: Vec<PathBuf> = files.iter().map(|rel| self.root.join(rel)).collect();
        if self.has_prompt(job) {
            let prompt = self.prompt_path(job);
            // Off Linux each file is synced by name: a prompt file deleted
            // by hand meanwhile must not fail every job sharing the sync
            // (Linux syncs the whole file system, names or not).
            if cfg!(target_os = "linux") || prompt.exists() {
                paths.push(prompt);
            }
        }
        self.syncs.durable(paths, gather).await
    }
}

/// The input kept in output folder `root` that a prompt's image value
/// names, if it is one of ours (`<sha256 prefix>.<ext>`, possibly with a
/// subfolder or an ` [input]` annotation) and is still there. One reached
/// through a symbolic link (`inputs/` or the file), or not a regular file,
/// is refused with its path: it is never read, so never uploaded.
pub fn kept_input(
    root: &Path,
    value: &str,
) -> Option<Result<PathBuf, (PathBuf, crate::folder::Refusal)>> {
    let value = value.strip_suffix(" [input]").unwrap_or(value);
    let name = value.rsplit('/').next()?;
    let (stem, ext) = name.split_once('.')?;
    let ours = stem.len() == INPUT_NAME_HEX
        && stem
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && !ext.is_empty()
        && ext.bytes().all(|b| b.is_ascii_alphanumeric());
    if !ours {
        return None;
    }
    let rel = Path::new("inputs").join(name);
    let path = root.join(&rel);
    match crate::folder::walk_under(root, &rel) {
        Ok(meta) if meta.is_file() => Some(Ok(path)),
        Ok(_) => Some(Err((path, crate::folder::Refusal::NotAFile))),
        Err(crate::folder::Refusal::Missing) => None,
        Err(why) => Some(Err((path, why))),
    }
}

/// Hex digits of the sha256 naming a kept input (64 bits, as job ids).
const INPUT_NAME_HEX: usize = 16;

/// A local input image, named by its content (never held whole).
#[derive(Debug, Clone)]
pub struct InputFile {
    /// `<sha256 prefix>.<ext>`: its name in `inputs/` and on the server.
    pub name: String,
    /// The file, uploaded from there.
    pub path: PathBuf,
    /// Its length when it was named.
    pub len: u64,
}

/// An output file being written as it arrives ([`OutputDir::incoming`]):
/// whole or nothing under its final name.
#[derive(Debug)]
pub struct Incoming {
    file: tempfile::NamedTempFile,
    /// `images/`, where it is named.
    dir: PathBuf,
}

impl Incoming {
    /// Appends the next piece.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), SinkError> {
        self.file.write_all(bytes).map_err(SinkError::at(&self.dir))
    }
}

/// Whether `root/rel` exists, is not empty and, for the image formats we
/// know, ends as that format must. Only a regular file reached through no
/// link is opened, as every command reads a run folder: a FIFO there would
/// block the open forever.
fn looks_whole(root: &Path, rel: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(opened) = crate::folder::open_under(root, rel) else {
        return false;
    };
    let (mut file, len) = (opened.file, opened.meta.len());
    let ext = rel
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if len == 0 {
        // A node may show an empty text (an empty caption): its file is
        // whole at 0 bytes. It was synced before its row was written.
        return ext == "txt";
    }
    let mut tail = [0u8; 12];
    let n = tail.len().min(len as usize);
    let read_tail = |file: &mut fs::File, tail: &mut [u8]| {
        file.seek(SeekFrom::End(-(tail.len() as i64)))
            .and_then(|_| file.read_exact(tail))
            .is_ok()
    };
    match ext.as_str() {
        // The IEND chunk: length 0, type, CRC.
        "png" => {
            n == 12
                && read_tail(&mut file, &mut tail)
                && tail == [0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82]
        }
        // End of image marker.
        "jpg" | "jpeg" => {
            n >= 2 && read_tail(&mut file, &mut tail[..2]) && tail[..2] == [0xFF, 0xD9]
        }
        // The RIFF header states the file's length.
        "webp" => {
            let mut head = [0u8; 8];
            file.read_exact(&mut head).is_ok()
                && &head[..4] == b"RIFF"
                && u64::from(u32::from_le_bytes([head[4], head[5], head[6], head[7]])) + 8 <= len
        }
        _ => true,
    }
}

/// Syncs a folder's entries (names created by renames) to the disk. Only
/// Unix can open a folder for that; elsewhere renames are left to the OS.
pub(super) fn sync_dir(dir: &Path) -> Result<(), SinkError> {
    #[cfg(unix)]
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(SinkError::at(dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// [`write_atomic_synced`] without the sync: for files the caller makes
/// durable later, in a batch, or can make again (the report's pages,
/// thumbnails and grids). The folder must exist.
pub(crate) fn write_atomic_unsynced(path: &Path, bytes: &[u8]) -> Result<(), SinkError> {
    #[cfg(target_os = "linux")]
    if unnamed::write_new(path, bytes)? {
        return Ok(());
    }
    let mut tmp = temp_beside(path)?;
    tmp.write_all(bytes).map_err(SinkError::at(path))?;
    tmp.persist(path)
        .map_err(|e| SinkError::at(path)(e.error))?;
    Ok(())
}

/// New files written without a temporary name (Linux): the file is made
/// unnamed in its folder (`O_TMPFILE`), written, then given its name. A
/// name created once costs the file system less than a temporary name
/// created and renamed (with 32 servers, about 4% of the runner's CPU per
/// job, whose two files took a tenth of it), and a killed run leaves
/// nothing behind. The file is linked by its descriptor where the kernel
/// allows (Linux 6.10 and later), else through `/proc`. Anything this way
/// cannot do (a file system without unnamed files, an older kernel without
/// `/proc`, a name already taken) falls back to the temporary name.
#[cfg(target_os = "linux")]
mod unnamed {
    use std::ffi::CString;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::OpenOptionsExt;
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::SinkError;

    /// Set once this way failed for a reason that will not go away.
    static UNAVAILABLE: AtomicBool = AtomicBool::new(false);

    /// Set once linking the descriptor itself was refused: then it is
    /// linked through its `/proc/self/fd` name, a path the kernel must walk
    /// for every file (a third of the link's cost).
    pub(super) static NO_EMPTY_PATH: AtomicBool = AtomicBool::new(false);

    /// Writes `bytes` as the new file `path`; false when the caller must
    /// write it the other way (nothing was created then).
    pub(super) fn write_new(path: &Path, bytes: &[u8]) -> Result<bool, SinkError> {
        if UNAVAILABLE.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o666)
            .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
            .open(dir);
        let mut file = match opened {
            Ok(file) => file,
            Err(e) => {
                // Not supported here (the other way will say if the folder
                // itself is the problem).
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
                ) {
                    UNAVAILABLE.store(true, Ordering::Relaxed);
                }
                return Ok(false);
            }
        };
        file.write_all(bytes).map_err(SinkError::at(path))?;
        let Ok(to) = CString::new(path.as_os_str().as_bytes()) else {
            return Ok(false);
        };
        if !NO_EMPTY_PATH.load(Ordering::Relaxed) {
            // SAFETY: a valid C string and an empty one; the descriptor
            // stays open (owned by `file`) until after the call.
            let linked = unsafe {
                libc::linkat(
                    file.as_raw_fd(),
                    c"".as_ptr(),
                    libc::AT_FDCWD,
                    to.as_ptr(),
                    libc::AT_EMPTY_PATH,
                )
            };
            if linked == 0 {
                return Ok(true);
            }
            let e = std::io::Error::last_os_error();
            if !matches!(
                e.raw_os_error(),
                Some(libc::ENOENT | libc::EPERM | libc::EINVAL)
            ) {
                // A name already taken or a passing error: the other way
                // replaces the file, or says what is wrong.
                return Ok(false);
            }
            // Refused (Linux before 6.10 lets only privileged callers link a
            // descriptor): `/proc` links it for anyone.
            NO_EMPTY_PATH.store(true, Ordering::Relaxed);
        }
        let Ok(from) = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd())) else {
            return Ok(false);
        };
        // SAFETY: two valid C strings; the descriptor stays open (owned by
        // `file`) until after the call.
        let linked = unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                from.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        };
        if linked == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        if matches!(
            e.raw_os_error(),
            Some(libc::ENOENT | libc::EPERM | libc::EXDEV | libc::EOPNOTSUPP | libc::EINVAL)
        ) {
            // No `/proc`, or linking refused: every file would fail alike.
            UNAVAILABLE.store(true, Ordering::Relaxed);
        }
        // A name already taken (a job run again) or a passing error: the
        // other way replaces the file, or says what is wrong.
        Ok(false)
    }
}

/// A temporary file in `path`'s folder. A temporary file is owner-only;
/// the file it becomes gets the modes of any new file (0o666 less the
/// umask), as the server's own outputs do.
pub(crate) fn temp_beside(path: &Path) -> Result<tempfile::NamedTempFile, SinkError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut builder = tempfile::Builder::new();
    builder.prefix(".tmp-");
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    builder
        .tempfile_in(dir)
        .map_err(|e| SinkError::at(dir)(without_temp_name(e)))
}

/// The error of a temporary file that could not be made, without the name
/// `tempfile` adds (`… at path "out/images/.tmp-x1Yz"`): that file never
/// existed, and the error already names its folder.
fn without_temp_name(e: std::io::Error) -> std::io::Error {
    // The name is only in the message: the error it wraps is private.
    let text = e.to_string();
    match text.split_once(" at path ") {
        Some((bare, _)) => std::io::Error::new(e.kind(), bare),
        None => e,
    }
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over
/// `path`: readers and a later resume see the whole file or none.
pub(crate) fn write_atomic_synced(path: &Path, mut bytes: &[u8]) -> Result<(), SinkError> {
    write_atomic_synced_from(path, &mut bytes)
}

/// [`write_atomic_synced`] of what `from` reads (a file copied without holding
/// it whole).
fn write_atomic_synced_from(path: &Path, from: &mut dyn std::io::Read) -> Result<(), SinkError> {
    write_atomic_synced_with(path, |to| std::io::copy(from, to).map(drop))
}

/// [`write_atomic_synced`] of what `write` writes (a file made without
/// holding it whole).
pub(crate) fn write_atomic_synced_with(
    path: &Path,
    write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> Result<(), SinkError> {
    let mut tmp = temp_beside(path)?;
    write(&mut tmp).map_err(SinkError::at(path))?;
    // The data reaches the disk before the name does: after a power loss
    // the file is whole or absent, never a named empty file.
    tmp.as_file().sync_data().map_err(SinkError::at(path))?;
    tmp.persist(path)
        .map_err(|e| SinkError::at(path)(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_temporary_file_that_cannot_be_made_is_reported_at_its_folder() {
        // As when the folder is deleted mid-run: one line naming the
        // folder and the cause, not a temporary name that never existed.
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("images");
        let e = write_atomic_unsynced(&gone.join("a.png"), b"png").unwrap_err();
        let cause = fs::File::open(gone.join("a.png")).unwrap_err();
        assert_eq!(e.to_string(), format!("{}: {cause}", gone.display()));
        assert_eq!(e.source.kind(), std::io::ErrorKind::NotFound);
    }

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
            "0123456789ab_9_2.bin"
        );
        assert_eq!(
            image_file_name(&id, "/abs", 0, ""),
            "0123456789ab_-abs-e802dc_0.bin"
        );
        assert_eq!(image_file_name(&id, "9", 0, "html"), "0123456789ab_9_0.bin");
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
            ("a.tar.gz", "bin"),
            ("C:\\ComfyUI\\output\\x.PNG", "png"),
            ("фото.png", "png"),
            ("x.пнг", "bin"),
            ("x.png\u{202e}gpj", "bin"),
            // Only the allow-list: pages, scripts and programs are bytes.
            ("x.html", "bin"),
            ("x.HTM", "bin"),
            ("x.svg", "bin"),
            ("x.sh", "bin"),
            ("x.exe", "bin"),
            ("x.bat", "bin"),
            ("x.png.html", "bin"),
            ("x.html.png", "png"),
            ("my.fox.v2.JPEG", "jpeg"),
            ("clip.M4V", "m4v"),
            ("mesh_00001_.usdz", "usdz"),
            ("x.bin", "bin"),
        ];
        for (name, want) in cases {
            assert_eq!(extension_of(name), want, "{name}");
        }
        for ext in KEPT_EXTENSIONS {
            let upper = format!("ComfyUI_00001_.{}", ext.to_ascii_uppercase());
            assert_eq!(extension_of(&upper), ext, "{upper}");
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
    fn a_file_written_again_is_replaced_whole_and_no_temporary_stays() {
        // A job run again writes over its own earlier files: the first way
        // (a new name) cannot, the fallback must.
        let dir = tempfile::tempdir().unwrap();
        let out = OutputDir::open(dir.path()).unwrap();
        let id = JobId::new("abc");
        out.save_image(&id, "9", 0, "bin", b"first").unwrap();
        let rel = out.save_image(&id, "9", 0, "bin", b"second!").unwrap();
        assert_eq!(std::fs::read(dir.path().join(&rel)).unwrap(), b"second!");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("images"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["abc_9_0.bin"]);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn new_files_are_written_unnamed_then_named_where_the_file_system_can() {
        // tmpfs has had unnamed files since Linux 3.11; the disk under the
        // tests may not (the fallback's own tests cover that).
        let Ok(dir) = tempfile::tempdir_in("/dev/shm") else {
            return;
        };
        let path = dir.path().join("new.png");
        assert!(unnamed::write_new(&path, b"whole").unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"whole");
        // A name taken is left to the fallback, untouched.
        assert!(!unnamed::write_new(&path, b"other").unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"whole");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // Where linking the descriptor is refused, `/proc` names the file
        // (only slower: the flag set here makes no other test wrong).
        let by_proc = dir.path().join("by-proc.png");
        unnamed::NO_EMPTY_PATH.store(true, std::sync::atomic::Ordering::Relaxed);
        let written = unnamed::write_new(&by_proc, b"also whole");
        let taken = unnamed::write_new(&by_proc, b"other");
        unnamed::NO_EMPTY_PATH.store(false, std::sync::atomic::Ordering::Relaxed);
        assert!(written.unwrap() && !taken.unwrap());
        assert_eq!(std::fs::read(&by_proc).unwrap(), b"also whole");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn prompt_files_and_rejections_are_known_from_the_listing_and_the_writes() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (JobId::new("0ld"), JobId::new("5e7"));
        {
            let out = OutputDir::open(dir.path()).unwrap();
            out.save_prompt(&old, &Prompt(serde_json::Map::new()))
                .unwrap();
            out.save_rejection(&old, Some("prompt_outputs_failed_validation: x"))
                .unwrap();
        }
        // A later run learns of them from the folder itself.
        let out = OutputDir::open(dir.path()).unwrap();
        assert!(out.has_prompt(&old) && !out.has_prompt(&new));
        assert_eq!(
            out.rejection(&old).as_deref(),
            Some("prompt_outputs_failed_validation: x")
        );
        assert_eq!(out.rejection(&new), None);
        out.save_rejection(&old, None).unwrap();
        assert!(!dir.path().join("prompts/0ld.node_errors.txt").exists());
        assert_eq!(out.rejection(&old), None);
        // A job without a prompt file or outputs has nothing to sync.
        out.make_job_durable(&new, &[], Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(out.syncs.syncs(), 0);
        out.save_prompt(&new, &Prompt(serde_json::Map::new()))
            .unwrap();
        assert!(out.has_prompt(&new));
        out.make_job_durable(&new, &[], Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(out.syncs.syncs(), 1);
    }

    #[test]
    fn writes_are_atomic_and_leftovers_are_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let out = OutputDir::open(dir.path()).unwrap();
        // A run killed while keeping an input or writing run.json leaves
        // its temporary file there too.
        std::fs::create_dir_all(dir.path().join("inputs")).unwrap();
        let stale = ["images/.tmp-stale", "inputs/.tmp-stale", ".tmp-stale"];
        for rel in stale {
            std::fs::write(dir.path().join(rel), b"half").unwrap();
        }
        let out2 = OutputDir::open(dir.path()).unwrap();
        for rel in stale {
            assert!(!dir.path().join(rel).exists(), "{rel} left behind");
        }
        let rel = out2
            .save_image(&JobId::new("abc"), "9", 0, "bin", b"bytes")
            .unwrap();
        assert_eq!(rel, "images/abc_9_0.bin");
        assert_eq!(std::fs::read(dir.path().join(&rel)).unwrap(), b"bytes");
        assert!(out.images_present(&[rel]));
        assert!(!out.images_present(&["../runs.csv".into()]));
        assert!(!out.images_present(&["images/missing.png".into()]));
    }

    #[test]
    fn empty_or_truncated_images_count_as_missing() {
        let dir = tempfile::tempdir().unwrap();
        let out = OutputDir::open(dir.path()).unwrap();
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend([0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82]);
        let whole = out
            .save_image(&JobId::new("a"), "9", 0, "png", &png)
            .unwrap();
        assert!(out.images_present(std::slice::from_ref(&whole)));
        let cut = out
            .save_image(&JobId::new("b"), "9", 0, "png", &png[..png.len() - 5])
            .unwrap();
        assert!(!out.images_present(&[cut]));
        let empty = out
            .save_image(&JobId::new("c"), "9", 0, "png", b"")
            .unwrap();
        assert!(!out.images_present(&[empty]));
        let jpeg = out
            .save_image(&JobId::new("d"), "9", 0, "jpg", &[0xFF, 0xD8, 1, 2])
            .unwrap();
        assert!(!out.images_present(&[jpeg]));
        // An empty text is a whole file: a node may show "".
        let text = out.save_text(&JobId::new("e"), "13", 0, "").unwrap();
        assert!(out.images_present(&[text]));
        out.make_durable(&["images/a_9_0.png".to_string()]).unwrap();
    }
}
