//! The page: the run as compact JSON (dimension values by index, files with
//! their thumbnails) embedded in one HTML document rendered by minijinja with
//! auto-escaping. The script and style are the files beside this one,
//! inlined: the page needs no server, no network and no build step.

use std::collections::HashSet;
use std::io::Read;

use minijinja::{Environment, Value, context};
use serde_json::{Value as Json, json};

use super::folder::{OutputKind, RunFolder};
use super::{GalleryError, GridView, ReportOptions, thumbs};

const TEMPLATE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("page.js");
const STYLE: &str = include_str!("page.css");

/// At most this much of a text output is embedded per job.
const MAX_TEXT: u64 = 4096;

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

fn read_text(path: &std::path::Path) -> String {
    let mut buf = Vec::new();
    let _ = std::fs::File::open(path).and_then(|f| f.take(MAX_TEXT).read_to_end(&mut buf));
    String::from_utf8_lossy(&buf).into_owned()
}

/// The page's data, serialized as it is read: a tree of 10,000 jobs' values
/// would be most of a run's peak memory.
#[derive(serde::Serialize)]
struct PageData<'a> {
    title: String,
    rerun: String,
    live: Option<Json>,
    dims: Vec<Json>,
    grids: Vec<Json>,
    jobs: Jobs<'a>,
}

/// Every job as one array ([`JobRow`]), made while serializing.
struct Jobs<'a> {
    run: &'a RunFolder,
    dims: Vec<crate::gallery::folder::Dimension>,
    has_thumb: &'a HashSet<&'a str>,
}

impl serde::Serialize for Jobs<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let index: Vec<std::collections::HashMap<&str, usize>> = self
            .dims
            .iter()
            .map(|d| {
                d.values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (v.as_str(), i))
                    .collect()
            })
            .collect();
        let mut seq = serializer.serialize_seq(Some(self.run.jobs.len()))?;
        for job in &self.run.jobs {
            seq.serialize_element(&self.row(job, &index))?;
        }
        seq.end()
    }
}

/// One job: id, label, status, dimension value indexes, queue and run
/// seconds, files, error, text, attempts, finish time, server, workflow.
#[derive(serde::Serialize)]
struct JobRow<'a>(
    &'a str,
    &'a str,
    &'a str,
    Vec<i64>,
    &'a str,
    &'a str,
    Vec<FileRow<'a>>,
    &'a str,
    String,
    usize,
    &'a str,
    &'a str,
    &'a str,
);

/// One output file: path, kind, thumbnail name, 1 when present.
#[derive(serde::Serialize)]
struct FileRow<'a>(&'a str, &'static str, String, u8);

impl<'a> Jobs<'a> {
    fn row(
        &self,
        job: &'a crate::gallery::folder::JobRecord,
        index: &[std::collections::HashMap<&str, usize>],
    ) -> JobRow<'a> {
        let run = self.run;
        let values: Vec<i64> = self
            .dims
            .iter()
            .zip(index)
            .map(|(d, ix)| {
                run.value(job, &d.name)
                    .and_then(|v| ix.get(v))
                    .map_or(-1, |i| *i as i64)
            })
            .collect();
        let mut text = job.text.clone();
        let files: Vec<FileRow<'a>> = job
            .outputs
            .iter()
            .map(|o| {
                if let (OutputKind::Text, true, true, Some(p)) =
                    (o.kind, o.present, text.is_empty(), &o.path)
                {
                    text = read_text(p);
                }
                let thumb = if self.has_thumb.contains(o.rel.as_str()) {
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
        JobRow(
            &job.id,
            &job.label,
            &job.status,
            values,
            &job.queue_s,
            &job.run_s,
            files,
            &job.error,
            text,
            job.attempts,
            &job.finished_at,
            &job.server,
            &job.workflow,
        )
    }
}

/// The page's data.
fn data<'a>(
    run: &'a RunFolder,
    grids: &[GridView],
    has_thumb: &'a HashSet<&'a str>,
    options: &ReportOptions,
) -> PageData<'a> {
    let dims = run.dimensions();
    let dims_json: Vec<Json> = dims
        .iter()
        .map(|d| json!({"name": d.name, "values": d.values, "numeric": d.numeric}))
        .collect();
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
    let log = std::path::absolute(run.root.join("runs.csv"))
        .unwrap_or_else(|_| run.root.join("runs.csv"));
    PageData {
        title: title(run),
        rerun: format!("comfy-batch rerun {}", shell_quote(&log.to_string_lossy())),
        live: options
            .in_progress
            .map(|p| json!({"done": p.done, "total": p.total, "at": options.stamp})),
        dims: dims_json,
        grids,
        jobs: Jobs {
            run,
            dims,
            has_thumb,
        },
    }
}

fn title(run: &RunFolder) -> String {
    std::path::absolute(&run.root)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "run".into())
}

/// The page's Content-Security-Policy source for its one script, so that
/// nothing else can run, not even an injected inline handler.
fn script_hash() -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(SCRIPT.as_bytes());
    format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// The whole page.
pub(crate) fn render(
    run: &RunFolder,
    grids: &[GridView],
    has_thumb: &HashSet<&str>,
    options: &ReportOptions,
) -> Result<String, GalleryError> {
    let mut env = Environment::new();
    env.add_template("page.html", TEMPLATE)
        .map_err(|e| GalleryError::Render(e.to_string()))?;
    let template = env
        .get_template("page.html")
        .map_err(|e| GalleryError::Render(e.to_string()))?;
    let data = script_safe_json(&data(run, grids, has_thumb, options));
    template
        .render(context! {
            title => title(run),
            jobs => run.jobs.len(),
            live => options.in_progress.is_some(),
            data => Value::from_safe_string(data),
            script => Value::from_safe_string(SCRIPT.to_string()),
            script_hash => script_hash(),
            style => Value::from_safe_string(STYLE.to_string()),
        })
        .map_err(|e| GalleryError::Render(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_safe_json_cannot_close_the_script() {
        let v = json!({"p": "</script><img src=x onerror=alert(1)> & \u{2028}"});
        let s = script_safe_json(&v);
        assert!(!s.contains('<') && !s.contains('>') && !s.contains('&'));
        let back: Json = serde_json::from_str(&s).unwrap();
        assert_eq!(back, v);
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
