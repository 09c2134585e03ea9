//! UI-format → API-format conversion against the shared ground truth: every
//! pair in `tests/fixtures/ui_api_pairs` (official examples, and today's
//! templates with the prompts today's frontend made) is converted with the
//! built-in catalogue and compared node by node, input by input.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use comfy_batch::convert::{Catalogue, Report, RuleKind, convert};
use serde_json::{Map, Value};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ui_api_pairs")
}

/// Pairs that cannot match, and why.
const EXPECTED_DIFFERENCES: &[(&str, &str)] = &[(
    "stable_cascade__stable_cascade__inpaint_controlnet",
    "its group node's inner node ids were never saved, so the recorded prompt's ids cannot be reproduced",
)];

fn pairs(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("fixture dir")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".ui.json").map(str::to_string)
        })
        .collect();
    names.sort();
    names
}

fn load(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("read fixture")).expect("fixture json")
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let head: String = s.chars().take(max).collect();
    format!("{head}…")
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()),
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_value(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_value(v, w)))
        }
        _ => a == b,
    }
}

/// Upload-button inputs old frontends sent.
const UPLOAD_INPUTS: &[&str] = &["upload", "choose file to upload"];

/// Every difference between the recorded prompt and ours that no rule
/// that fired explains, one line each.
fn diff(
    expected: &Map<String, Value>,
    ours: &Map<String, Value>,
    report: &Report,
    explained: &mut Vec<RuleKind>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (id, e) in expected {
        let Some(o) = ours.get(id) else {
            out.push(format!("node {id} ({}) missing", e["class_type"]));
            continue;
        };
        if e["class_type"] != o["class_type"] {
            out.push(format!(
                "node {id}: class {} vs ours {}",
                e["class_type"], o["class_type"]
            ));
        }
        if let Some(t) = e.get("_meta").and_then(|m| m.get("title"))
            && o.get("_meta").and_then(|m| m.get("title")) != Some(t)
        {
            if report.fired(RuleKind::TitleFromDisplayName, id, "_meta.title") {
                explained.push(RuleKind::TitleFromDisplayName);
            } else {
                out.push(format!(
                    "node {id}: title {t} vs ours {}",
                    o["_meta"]["title"]
                ));
            }
        }
        let empty = Map::new();
        let ei = e["inputs"].as_object().unwrap_or(&empty);
        let oi = o["inputs"].as_object().unwrap_or(&empty);
        for (k, v) in ei {
            match oi.get(k) {
                None if UPLOAD_INPUTS.contains(&k.as_str())
                    && report.fired(RuleKind::UploadValueNotSent, id, "upload") =>
                {
                    explained.push(RuleKind::UploadValueNotSent);
                }
                None => out.push(format!(
                    "node {id} ({}): input {k} = {v} missing",
                    e["class_type"]
                )),
                Some(w) if !same_value(v, w) => out.push(format!(
                    "node {id} ({}): input {k} = {} vs ours {}",
                    e["class_type"],
                    clip(&v.to_string(), 80),
                    clip(&w.to_string(), 80)
                )),
                Some(_) => {}
            }
        }
        for (k, w) in oi {
            if ei.contains_key(k) {
                continue;
            }
            if report.fired(RuleKind::MissingWidgetDefault, id, k) {
                explained.push(RuleKind::MissingWidgetDefault);
            } else {
                out.push(format!(
                    "node {id} ({}): extra input {k} = {w}",
                    e["class_type"]
                ));
            }
        }
    }
    for (id, o) in ours {
        if !expected.contains_key(id) {
            out.push(format!("node {id} ({}) extra", o["class_type"]));
        }
    }
    out
}

struct Outcome {
    exact: Vec<String>,
    failed: Vec<(String, Vec<String>)>,
    /// The rules that explained a difference, and how many.
    explained: Vec<(RuleKind, usize)>,
}

fn run_dir(dir: &Path, catalogue: &Catalogue) -> Outcome {
    let mut exact = Vec::new();
    let mut failed = Vec::new();
    let mut explained = Vec::new();
    for name in pairs(dir) {
        let ui = load(&dir.join(format!("{name}.ui.json")));
        let api = load(&dir.join(format!("{name}.api.json")));
        let expected = api.as_object().expect("api object");
        match convert(ui.as_object().expect("ui object"), catalogue) {
            Ok(done) => {
                let d = diff(expected, &done.prompt, &done.report, &mut explained);
                if d.is_empty() {
                    exact.push(name);
                } else {
                    failed.push((name, d));
                }
            }
            Err(e) => failed.push((name, vec![format!("error: {e}")])),
        }
    }
    explained.sort();
    let mut counts: Vec<(RuleKind, usize)> = Vec::new();
    for r in explained {
        match counts.last_mut() {
            Some((last, n)) if *last == r => *n += 1,
            _ => counts.push((r, 1)),
        }
    }
    Outcome {
        exact,
        failed,
        explained: counts,
    }
}

fn summary(title: &str, total: usize, o: &Outcome) -> String {
    let mut s = format!(
        "{title}: {}/{total} exact; differences explained by rules: {:?}\n",
        o.exact.len(),
        o.explained
    );
    for (name, d) in &o.failed {
        let _ = writeln!(s, "  {name}: {} differences", d.len());
        for line in d.iter().take(12) {
            let _ = writeln!(s, "    {line}");
        }
    }
    s
}

#[test]
fn examples_convert_exactly_except_the_expected_differences() {
    let dir = fixtures();
    let total = pairs(&dir).len();
    assert_eq!(total, 54);
    let o = run_dir(&dir, &Catalogue::builtin());
    let unexpected: Vec<&String> = o
        .failed
        .iter()
        .map(|(n, _)| n)
        .filter(|n| !EXPECTED_DIFFERENCES.iter().any(|(e, _)| e == n))
        .collect();
    assert!(unexpected.is_empty(), "{}", summary("examples", total, &o));
    assert_eq!(
        o.exact.len(),
        total - EXPECTED_DIFFERENCES.len(),
        "{}",
        summary("examples", total, &o)
    );
    let rules: Vec<RuleKind> = o.explained.iter().map(|(r, _)| *r).collect();
    assert_eq!(
        rules,
        [
            RuleKind::MissingWidgetDefault,
            RuleKind::UploadValueNotSent,
            RuleKind::TitleFromDisplayName
        ],
        "{}",
        summary("examples", total, &o)
    );
    eprintln!("{}", summary("examples", total, &o));
}

#[test]
fn templates_convert_exactly() {
    let dir = fixtures().join("templates");
    let total = pairs(&dir).len();
    assert_eq!(total, 103);
    let o = run_dir(&dir, &Catalogue::builtin());
    assert!(o.failed.is_empty(), "{}", summary("templates", total, &o));
    let rules: Vec<RuleKind> = o.explained.iter().map(|(r, _)| *r).collect();
    assert_eq!(
        rules,
        [RuleKind::TitleFromDisplayName],
        "{}",
        summary("templates", total, &o)
    );
    eprintln!("{}", summary("templates", total, &o));
}
