//! The page: `report/index.html`, rendered by minijinja with auto-escaping,
//! stays a few kilobytes however many jobs a run has; the run's data goes
//! into `report/data/<id>/` beside it, which the page's script loads through
//! `<script>` elements (so `file://` works and the CSP stays a hash plus
//! `'strict-dynamic'`):
//!
//! - `index.js`: the dimensions, and per job its status and the index of
//!   each dimension's value, as base64 columns of one or two bytes a job:
//!   filters, the grid's cells and the counts need no other file;
//! - `NNNN.js`: [`CHUNK`] jobs each, the rows (id, label, files, error,
//!   text…) a card, a cell or the viewer shows, loaded when one is shown.
//!
//! `<id>` is a digest of the data, so a page only ever loads its own
//! report's files: a new report is written to a new folder, then the page
//! pointing at it, and only then are older folders removed (the previous
//! one kept, for a page still open on it). The script and style are the
//! files beside this one, inlined: no server, no network, no build step.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write as _};
use std::path::Path;

use minijinja::{Environment, Value, context};
use serde_json::{Value as Json, json};
use sha2::Digest as _;

use super::folder::{Caps, Dimension, JobRecord, OutputKind, Source};
use super::{GalleryError, GridView, ReportOptions, thumbs};

const TEMPLATE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("page.js");
const STYLE: &str = include_str!("page.css");

/// At most this much of a text output is embedded per job.
const MAX_TEXT: u64 = 4096;

/// Jobs per chunk file: about 150 KB of rows each, a card's worth of
/// loading, and at most a thousand files for a million jobs.
pub(crate) const CHUNK: usize = 1000;

/// A dimension with more distinct values than this (or more bytes of them
/// than [`MAX_INDEXED_BYTES`]) is not indexed: its values stay in the rows,
/// it is searched but offers no filter or grid axis (a prompt per job).
const MAX_INDEXED: usize = 65_535;
const MAX_INDEXED_BYTES: usize = 8 << 20;

/// The caps the dimensions are collected with: past them a dimension is
/// not indexed, so its values are not kept either (its `count` in
/// `index.js` is then how many were seen by then: more than one, which is
/// what the page asks of it).
pub(crate) const CAPS: Caps = Caps {
    values: MAX_INDEXED,
    bytes: MAX_INDEXED_BYTES,
};

/// The name of the `<meta>` that carries the data folder's id.
const ID_META: &str = "comfy-batch-data";

/// JSON safe inside a `<script>` element: `<`, `>`, `&` and the two JS
/// line separators escaped (they only occur inside JSON strings, where
/// `\uXXXX` means the same).
pub(crate) fn script_safe_json(value: &impl serde::Serialize) -> String {
    let text = serde_json::to_string(value).unwrap_or_default();
    let mut out = String::with_capacity(text.len() + 64);
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// A path quoted for a POSIX shell when it needs it.
fn shell_quote(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:=@,".contains(c));
    if plain {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// The start of a text output, opened through [`crate::folder::open_under`].
fn read_text(root: &std::path::Path, rel: &str) -> String {
    let mut buf = Vec::new();
    if let Ok(f) = crate::folder::open_under(root, std::path::Path::new(rel)) {
        let _ = f.file.take(MAX_TEXT).read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// One job's row in a chunk: id, label, status, the values of the
/// dimensions that are not indexed (`null` for the indexed ones), queue
/// and run seconds, files, error, text, attempts, finish time, server,
/// workflow, then `batch_index`, `pack_size` and `pack_id` (empty outside
/// packs).
#[derive(serde::Serialize)]
struct JobRow<'a>(
    &'a str,
    &'a str,
    &'a str,
    Vec<Option<&'a str>>,
    &'a str,
    &'a str,
    Vec<FileRow<'a>>,
    &'a str,
    String,
    usize,
    &'a str,
    &'a str,
    &'a str,
    &'a [String; 3],
);

/// One output file: path, kind, thumbnail name, 1 when present.
#[derive(serde::Serialize)]
struct FileRow<'a>(&'a str, &'static str, String, u8);

/// The report's data folder, once written.
pub(crate) struct DataFiles {
    /// Its name under `report/data/`: a digest of its files.
    pub id: String,
    /// Jobs in it.
    pub jobs: usize,
}

/// The data folder being written (see the module doc): row by row into
/// chunk files in a temporary folder, renamed to its digest once whole
/// ([`DataFolder::finish`]). What it keeps per job is a few column
/// indexes, never the rows.
pub(crate) struct DataFolder<'a> {
    data: std::path::PathBuf,
    tmp: tempfile::TempDir,
    writer: DataWriter<'a>,
}

impl<'a> DataFolder<'a> {
    /// Starts the data folder of a run with dimensions `dims` (collected
    /// with [`CAPS`]) and parameter columns `params`, under `report`.
    pub(crate) fn new(
        report: &Path,
        dims: &'a [Dimension],
        params: &[String],
    ) -> Result<Self, GalleryError> {
        let data = report.join("data");
        std::fs::create_dir_all(&data).map_err(write_error(&data))?;
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempdir_in(&data)
            .map_err(write_error(&data))?;
        let writer = DataWriter::new(tmp.path().to_path_buf(), dims, params);
        Ok(DataFolder { data, tmp, writer })
    }

    /// Adds the next job (of the folder `root`; `has_thumb`: its outputs
    /// that have a thumbnail).
    pub(crate) fn push(
        &mut self,
        root: &Path,
        job: &JobRecord,
        has_thumb: &HashSet<&str>,
    ) -> Result<(), GalleryError> {
        self.writer.push(root, job, has_thumb)
    }

    /// Writes `index.js` and puts the folder in place under its digest.
    pub(crate) fn finish(self) -> Result<DataFiles, GalleryError> {
        let (id, jobs) = self.writer.finish()?;
        let dest = self.data.join(&id);
        // The same digest is the same data, already in place.
        if !dest.is_dir() {
            let kept = self.tmp.keep();
            // A temporary folder is private; a report is meant to be shared.
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(&kept, std::fs::Permissions::from_mode(0o755))
                    .map_err(write_error(&kept))?;
            }
            if let Err(e) = std::fs::rename(&kept, &dest) {
                let _ = std::fs::remove_dir_all(&kept);
                // Another writer put the same data there first.
                if !dest.is_dir() {
                    return Err(GalleryError::Write {
                        path: dest,
                        source: e,
                    });
                }
            }
        }
        Ok(DataFiles { id, jobs })
    }
}

fn write_error(path: &Path) -> impl FnOnce(std::io::Error) -> GalleryError + use<> {
    let path = path.to_path_buf();
    move |source| GalleryError::Write { path, source }
}

/// Removes the data folders of `report` but `keep` and the one the page
/// `old_page` used (a browser may still have it open), and temporary
/// folders an interrupted writer left an hour ago or more.
pub(crate) fn prune_data(report: &Path, keep: &str, old_page: Option<&[u8]>) {
    let previous = old_page.and_then(data_id_of);
    let Ok(entries) = std::fs::read_dir(report.join("data")) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == keep || previous.as_deref() == Some(name.as_str()) {
            continue;
        }
        if name.starts_with(".tmp-") {
            let age = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok());
            if age.is_none_or(|a| a.as_secs() < 3600) {
                continue;
            }
        }
        // Only what this module writes: folders named by a digest (or its
        // temporary ones), never a folder someone else put there.
        let ours = name.starts_with(".tmp-") || name.chars().all(|c| c.is_ascii_hexdigit());
        if ours && entry.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The data folder a page written by [`render`] loads.
fn data_id_of(page: &[u8]) -> Option<String> {
    let page = String::from_utf8_lossy(page);
    let marker = format!("<meta name=\"{ID_META}\" content=\"");
    let start = page.find(&marker)? + marker.len();
    let id = &page[start..start + page[start..].find('"')?];
    let plain = !id.is_empty() && id.chars().all(|c| c.is_ascii_hexdigit());
    plain.then(|| id.to_string())
}

/// Writes the chunks as rows come, and the columns at the end.
struct DataWriter<'a> {
    dir: std::path::PathBuf,
    dims: &'a [Dimension],
    /// Where each dimension's value is read from a job.
    sources: Vec<Option<Source>>,
    /// Value → index + 1 per indexed dimension (`None`: not indexed).
    index: Vec<Option<HashMap<&'a str, u16>>>,
    statuses: Vec<String>,
    /// The status column, then one per dimension (empty when not indexed).
    columns: Vec<Vec<u16>>,
    rows: String,
    in_chunk: usize,
    chunks: usize,
    jobs: usize,
    digest: sha2::Sha256,
}

impl<'a> DataWriter<'a> {
    fn new(dir: std::path::PathBuf, dims: &'a [Dimension], params: &[String]) -> Self {
        let index = dims
            .iter()
            .map(|d| {
                let bytes: usize = d.values.iter().map(String::len).sum();
                let small = d.values.len() <= MAX_INDEXED && bytes <= MAX_INDEXED_BYTES;
                (d.wide.is_none() && small).then(|| {
                    d.values
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (v.as_str(), i as u16 + 1))
                        .collect()
                })
            })
            .collect();
        DataWriter {
            dir,
            dims,
            sources: dims.iter().map(|d| Source::of(params, &d.name)).collect(),
            index,
            statuses: Vec::new(),
            columns: vec![Vec::new(); dims.len() + 1],
            rows: String::new(),
            in_chunk: 0,
            chunks: 0,
            jobs: 0,
            digest: sha2::Sha256::new(),
        }
    }

    fn push(
        &mut self,
        root: &Path,
        job: &JobRecord,
        has_thumb: &HashSet<&str>,
    ) -> Result<(), GalleryError> {
        let status = match self.statuses.iter().position(|s| *s == job.status) {
            Some(i) => i,
            None => {
                self.statuses.push(job.status.clone());
                self.statuses.len() - 1
            }
        };
        self.columns[0].push(u16::try_from(status).unwrap_or(u16::MAX));
        let mut wide = Vec::with_capacity(self.dims.len());
        for (i, source) in self.sources.iter().enumerate() {
            let v = source.map(|s| s.value(job)).filter(|v| !v.is_empty());
            match &self.index[i] {
                Some(ix) => {
                    self.columns[i + 1].push(v.and_then(|v| ix.get(v)).copied().unwrap_or(0));
                    wide.push(None);
                }
                None => wide.push(Some(v.unwrap_or_default())),
            }
        }
        let mut text = job.text.clone();
        let files: Vec<FileRow> = job
            .outputs
            .iter()
            .map(|o| {
                if let (OutputKind::Text, true, true, Some(_)) =
                    (o.kind, o.present, text.is_empty(), &o.path)
                {
                    text = read_text(root, &o.rel);
                }
                let thumb = if has_thumb.contains(o.rel.as_str()) {
                    thumbs::thumb_name(&o.rel)
                } else {
                    String::new()
                };
                let kind = match (o.path.is_some(), o.kind) {
                    (false, _) => "unsafe",
                    (true, k) => k.as_str(),
                };
                FileRow(&o.rel, kind, thumb, u8::from(o.present))
            })
            .collect();
        let row = JobRow(
            &job.id,
            &job.label,
            &job.status,
            wide,
            &job.queue_s,
            &job.run_s,
            files,
            &job.error,
            text,
            job.attempts,
            &job.finished_at,
            &job.server,
            &job.workflow,
            &job.pack,
        );
        if self.in_chunk > 0 {
            self.rows.push(',');
        }
        self.rows.push_str(&script_safe_json(&row));
        self.in_chunk += 1;
        self.jobs += 1;
        if self.in_chunk == CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the chunk being filled.
    fn flush(&mut self) -> Result<(), GalleryError> {
        let text = format!("comfyBatchReport.chunk({},[{}]);\n", self.chunks, self.rows);
        self.file(&format!("{:04}.js", self.chunks), &text)?;
        self.rows.clear();
        self.in_chunk = 0;
        self.chunks += 1;
        Ok(())
    }

    fn file(&mut self, name: &str, text: &str) -> Result<(), GalleryError> {
        self.digest.update(name.as_bytes());
        self.digest.update((text.len() as u64).to_le_bytes());
        self.digest.update(text.as_bytes());
        let path = self.dir.join(name);
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(write_error(&path))
    }

    /// Writes `index.js`; the folder's id and its jobs.
    fn finish(mut self) -> Result<(String, usize), GalleryError> {
        if self.in_chunk > 0 {
            self.flush()?;
        }
        let column = |c: &[u16]| -> (String, u8) {
            use base64::Engine as _;
            let wide = c.iter().any(|v| *v > 255);
            let bytes: Vec<u8> = if wide {
                c.iter().flat_map(|v| v.to_le_bytes()).collect()
            } else {
                c.iter().map(|v| *v as u8).collect()
            };
            let text = base64::engine::general_purpose::STANDARD.encode(bytes);
            (text, if wide { 2 } else { 1 })
        };
        let dims: Vec<Json> = self
            .dims
            .iter()
            .enumerate()
            .map(|(i, d)| match &self.index[i] {
                Some(_) => {
                    let (col, width) = column(&self.columns[i + 1]);
                    json!({"name": d.name, "numeric": d.numeric, "values": d.values,
                        "col": col, "width": width})
                }
                None => json!({"name": d.name, "numeric": d.numeric, "values": null,
                    "count": d.wide.unwrap_or(d.values.len())}),
            })
            .collect();
        let (status, width) = column(&self.columns[0]);
        let index = json!({
            "jobs": self.jobs,
            "chunk": CHUNK,
            "chunks": self.chunks,
            "statuses": self.statuses,
            "status": status,
            "width": width,
            "dims": dims,
        });
        let text = format!("comfyBatchReport.index({});\n", script_safe_json(&index));
        self.file("index.js", &text)?;
        let digest = self.digest.finalize();
        let id: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Ok((id, self.jobs))
    }
}

fn title(root: &Path) -> String {
    std::path::absolute(root)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "run".into())
}

/// The page's Content-Security-Policy source for its one script, so that
/// nothing else can run, not even an injected inline handler; the data
/// files it loads run through `'strict-dynamic'`.
fn script_hash() -> String {
    use base64::Engine as _;
    let digest = sha2::Sha256::digest(SCRIPT.as_bytes());
    format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// The page: the run's title, counts and grids, and the name of its data
/// folder; its size does not depend on the number of jobs.
pub(crate) fn render(
    root: &Path,
    grids: &[GridView],
    options: &ReportOptions,
    files: &DataFiles,
) -> Result<String, GalleryError> {
    let mut env = Environment::new();
    env.add_template("page.html", TEMPLATE)
        .map_err(|e| GalleryError::Render(e.to_string()))?;
    let template = env
        .get_template("page.html")
        .map_err(|e| GalleryError::Render(e.to_string()))?;
    let grids: Vec<Json> = grids
        .iter()
        .map(|g| {
            let fixed: serde_json::Map<String, Json> = g
                .r#where
                .iter()
                .map(|(k, v)| (k.clone(), Json::String(v.clone())))
                .collect();
            json!({"name": g.name, "x": g.x, "y": g.y, "page": g.page, "where": fixed, "group": g.group})
        })
        .collect();
    let log = std::path::absolute(root.join("runs.csv")).unwrap_or_else(|_| root.join("runs.csv"));
    let meta = json!({
        "title": title(root),
        "rerun": format!("comfy-batch rerun {}", shell_quote(&log.to_string_lossy())),
        "live": options
            .in_progress
            .map(|p| json!({"done": p.done, "total": p.total, "at": options.stamp})),
        "grids": grids,
        "data": format!("data/{}/", files.id),
        "jobs": files.jobs,
    });
    template
        .render(context! {
            title => title(root),
            jobs => files.jobs,
            id => files.id.clone(),
            id_meta => ID_META,
            live => options.in_progress.is_some(),
            data => Value::from_safe_string(script_safe_json(&meta)),
            script => Value::from_safe_string(SCRIPT.to_string()),
            script_hash => script_hash(),
            style => Value::from_safe_string(STYLE.to_string()),
        })
        .map_err(|e| GalleryError::Render(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gallery::folder::{FolderLog, RunFolder};

    #[test]
    fn script_safe_json_cannot_close_the_script() {
        let v = json!({"p": "</script><img src=x onerror=alert(1)> & \u{2028}"});
        let s = script_safe_json(&v);
        assert!(!s.contains('<') && !s.contains('>') && !s.contains('&'));
        let back: Json = serde_json::from_str(&s).unwrap();
        assert_eq!(back, v);
    }

    /// The data folder of `dir`: its id, `index.js` as JSON, and every
    /// chunk's rows in order.
    fn written(dir: &Path) -> (String, Json, Vec<Json>) {
        let log = FolderLog::open(dir).unwrap();
        let report = dir.join("report");
        let dims = log.dimensions(CAPS).unwrap();
        let mut data = DataFolder::new(&report, &dims, &log.params).unwrap();
        for job in log.jobs().unwrap() {
            data.push(dir, &job.unwrap(), &HashSet::new()).unwrap();
        }
        let files = data.finish().unwrap();
        let data = report.join("data").join(&files.id);
        let unwrap = |text: String, call: &str| -> Json {
            let body = text
                .strip_prefix(call)
                .and_then(|t| t.strip_suffix(");\n"))
                .unwrap_or_else(|| panic!("{text}"));
            serde_json::from_str(&format!("[{body}]")).unwrap()
        };
        let index = unwrap(
            std::fs::read_to_string(data.join("index.js")).unwrap(),
            "comfyBatchReport.index(",
        );
        let mut rows = Vec::new();
        for k in 0.. {
            let Ok(text) = std::fs::read_to_string(data.join(format!("{k:04}.js"))) else {
                break;
            };
            let call = unwrap(text, "comfyBatchReport.chunk(");
            assert_eq!(call[0], k);
            rows.extend(call[1].as_array().unwrap().iter().cloned());
        }
        (files.id, index[0].clone(), rows)
    }

    #[test]
    fn the_columns_and_chunks_say_every_jobs_values() {
        use base64::Engine as _;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("run");
        std::fs::create_dir_all(&dir).unwrap();
        let n = CHUNK * 2 + 7;
        let mut csv = String::from(
            "job_id,job,workflow,workflow_sha256,seed,prompt,cfg,status,images,error\n",
        );
        for i in 0..n {
            // cfg: 300 values (two bytes a job); prompt: unset on every 5th.
            let prompt = if i % 5 == 0 {
                String::new()
            } else {
                format!("p{} </script>", i % 3)
            };
            let status = ["ok", "failed", "ok", "timeout"][i % 4];
            csv.push_str(&format!(
                "j{i},g#{i},w.json,x,{i},{prompt},{},{status},,\n",
                i % 300
            ));
        }
        std::fs::write(dir.join("runs.csv"), &csv).unwrap();
        let run = RunFolder::read(&dir).unwrap();
        let (id, index, rows) = written(&dir);
        assert_eq!(index["jobs"], n);
        assert_eq!(rows.len(), n);
        let decode = |col: &Json, width: &Json| -> Vec<u16> {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(col.as_str().unwrap())
                .unwrap();
            match width.as_u64() {
                Some(1) => bytes.iter().map(|b| u16::from(*b)).collect(),
                _ => bytes
                    .chunks(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect(),
            }
        };
        let statuses: Vec<&str> = index["statuses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        let status = decode(&index["status"], &index["width"]);
        for (i, job) in run.jobs.iter().enumerate() {
            assert_eq!(statuses[status[i] as usize], job.status);
            assert_eq!(rows[i][0], job.id.as_str());
        }
        for d in index["dims"].as_array().unwrap() {
            let name = d["name"].as_str().unwrap();
            assert!(d["values"].is_array(), "{name} is indexed");
            let col = decode(&d["col"], &d["width"]);
            assert_eq!(col.len(), n);
            if name == "cfg" {
                assert_eq!(d["width"], 2, "300 values");
            }
            for (i, job) in run.jobs.iter().enumerate() {
                let want = run.value(job, name).unwrap_or_default();
                let got = match col[i] {
                    0 => "",
                    k => d["values"][k as usize - 1].as_str().unwrap(),
                };
                assert_eq!(got, want, "{name} of job {i}");
            }
        }
        // The same data, the same folder; a change, another.
        assert_eq!(written(&dir).0, id);
        csv.push_str("extra,g#x,w.json,x,1,p1,1,ok,,\n");
        std::fs::write(dir.join("runs.csv"), &csv).unwrap();
        assert_ne!(written(&dir).0, id);
    }

    #[test]
    fn a_page_names_its_data_folder() {
        let page = format!("<html><meta name=\"{ID_META}\" content=\"0a1b2c\">");
        assert_eq!(data_id_of(page.as_bytes()).as_deref(), Some("0a1b2c"));
        let odd = format!("<meta name=\"{ID_META}\" content=\"../x\">");
        assert_eq!(data_id_of(odd.as_bytes()), None);
        assert_eq!(data_id_of(b"<html>"), None);
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("/tmp/out/runs.csv"), "/tmp/out/runs.csv");
        assert_eq!(
            shell_quote("/tmp/my out/it's.csv"),
            "'/tmp/my out/it'\\''s.csv'"
        );
    }
}
