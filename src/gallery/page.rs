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

/// The start of a text output, opened through [`crate::folder::open_under`].
fn read_text(root: &std::path::Path, rel: &str) -> String {
    let mut buf = Vec::new();
    if let Ok(f) = crate::folder::open_under(root, std::path::Path::new(rel)) {
        let _ = f.file.take(MAX_TEXT).read_to_end(&mut buf);
    }
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
                if let (OutputKind::Text, true, true, Some(_)) =
                    (o.kind, o.present, text.is_empty(), &o.path)
                {
                    text = read_text(&run.root, &o.rel);
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

    /// The page's data as the `json!` tree built before 0cd9550: the
    /// streamed rows must say exactly the same, byte for byte.
    fn reference(
        run: &RunFolder,
        grids: &[GridView],
        has_thumb: &HashSet<&str>,
        options: &ReportOptions,
    ) -> Json {
        let dims = run.dimensions();
        let index: Vec<std::collections::HashMap<&str, usize>> = dims
            .iter()
            .map(|d| {
                d.values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (v.as_str(), i))
                    .collect()
            })
            .collect();
        let jobs: Vec<Json> = run
            .jobs
            .iter()
            .map(|job| {
                let values: Vec<i64> = dims
                    .iter()
                    .zip(&index)
                    .map(|(d, ix)| {
                        run.value(job, &d.name)
                            .and_then(|v| ix.get(v))
                            .map_or(-1, |i| *i as i64)
                    })
                    .collect();
                let mut text = job.text.clone();
                let files: Vec<Json> = job
                    .outputs
                    .iter()
                    .map(|o| {
                        if let (OutputKind::Text, true, true, Some(_)) =
                            (o.kind, o.present, text.is_empty(), &o.path)
                        {
                            text = read_text(&run.root, &o.rel);
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
                        json!([o.rel, kind, thumb, u8::from(o.present)])
                    })
                    .collect();
                json!([
                    job.id,
                    job.label,
                    job.status,
                    values,
                    job.queue_s,
                    job.run_s,
                    files,
                    job.error,
                    text,
                    job.attempts,
                    job.finished_at,
                    job.server,
                    job.workflow,
                ])
            })
            .collect();
        let dims: Vec<Json> = dims
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
        json!({
            "title": title(run),
            "rerun": format!("comfy-batch rerun {}", shell_quote(&log.to_string_lossy())),
            "live": options.in_progress.map(|p| json!({"done": p.done, "total": p.total, "at": options.stamp})),
            "dims": dims,
            "grids": grids,
            "jobs": jobs,
        })
    }

    #[test]
    fn streamed_data_is_the_old_tree_byte_for_byte() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("it's a </script> run\u{2028}");
        std::fs::create_dir_all(dir.join("images")).unwrap();
        std::fs::create_dir_all(dir.join("texts")).unwrap();
        std::fs::write(dir.join("images/a1_0.png"), b"png").unwrap();
        std::fs::write(dir.join("images/b2_0.png"), b"png").unwrap();
        std::fs::write(
            dir.join("texts/a1_1.txt"),
            "a \"caption\" </script><b>&amp; \u{2028}\u{2029} é 🦊\n",
        )
        .unwrap();
        // Over MAX_TEXT with a multibyte char cut at the limit.
        std::fs::write(dir.join("texts/c3.md"), "é".repeat(3000)).unwrap();
        let csv = "job_id,job,workflow,workflow_sha256,seed,prompt,cfg,steps,status,server,prompt_id,queued_at,started_at,finished_at,queue_s,run_s,images,error,text\n\
            a1,\"g \"\"q\"\"#0\",w.json,x,1,\"a </script> \u{2028} cat\",7.5,20,ok,http://s:1,p,,,2026-01-01T00:00:00Z,0.1,2.5,images/a1_0.png;texts/a1_1.txt,,\n\
            b2,g#1,w.json,x,2,fox & <dog>,10,20,failed,http://s:2,p,,,,,,images/b2_0.png;../escape.png;/etc/passwd;images/missing.webp,\"boom \"\"x\"\" </script>\",\n\
            c3,,,,3,,2,,interrupted,,,,,,,,texts/c3.md;texts/none.txt;out/x.mp4;a.flac;l.latent;g.gif,,inline text wins\n\
            b2,g#1,w.json,x,2,fox & <dog>,10,20,ok,http://s:2,p,,,,,,images/b2_0.png,,\n\
            d4,g#2,other.json,y,4,\u{1F98A} ünï,1e1,20,rejected,,,,,,,,texts/c3.md;../escape.png;/etc/passwd;C:\\\\x.png,\"node 3: no \u{2029}\",\n";
        std::fs::write(dir.join("runs.csv"), csv).unwrap();
        let run = RunFolder::read(&dir).unwrap();
        assert_eq!(run.jobs.len(), 4);
        let grids = [
            GridView {
                name: "seed × cfg".into(),
                x: "seed".into(),
                y: "cfg".into(),
                page: Some("prompt".into()),
                r#where: vec![
                    ("steps".into(), "20".into()),
                    ("prompt".into(), "</script>\u{2028}".into()),
                ],
                group: Some("g \"q\"".into()),
            },
            GridView {
                name: "plain".into(),
                x: "cfg".into(),
                y: "seed".into(),
                page: None,
                r#where: vec![],
                group: None,
            },
        ];
        let has_thumb: HashSet<&str> = ["images/a1_0.png", "images/b2_0.png"].into();
        for options in [
            ReportOptions::default(),
            ReportOptions {
                in_progress: Some(crate::gallery::InProgress { done: 3, total: 9 }),
                stamp: Some("09:41:00".into()),
            },
            ReportOptions {
                in_progress: Some(crate::gallery::InProgress { done: 0, total: 0 }),
                stamp: None,
            },
        ] {
            let old = reference(&run, &grids, &has_thumb, &options);
            let new = data(&run, &grids, &has_thumb, &options);
            assert_eq!(serde_json::to_string(&new).unwrap(), old.to_string());
            let safe = script_safe_json(&new);
            assert_eq!(safe, script_safe_json(&old));
            for c in ['<', '>', '&', '\u{2028}', '\u{2029}'] {
                assert!(!safe.contains(c), "{c:?} in {safe}");
            }
            assert!(safe.contains("\\u003c/script\\u003e") && safe.contains("\\u2028"));
            let back: Json = serde_json::from_str(&safe).unwrap();
            assert_eq!(back, old);
        }
        // The varied content is really there.
        let old = reference(&run, &grids, &has_thumb, &ReportOptions::default()).to_string();
        for needle in [
            "\"unsafe\"",
            "\"numeric\":true",
            "caption",
            "inline text wins",
            "a1_0",
        ] {
            assert!(old.contains(needle), "{needle} not in {old}");
        }
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
