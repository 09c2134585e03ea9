//! UI-format → API-format conversion against the shared ground truth: every
//! pair in `tests/fixtures/ui_api_pairs` (official examples, and today's
//! templates with the prompts today's frontend made) is converted with the
//! built-in catalogue and compared node by node, input by input.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use comfy_batch::convert::{NodeDefs, Report, RuleKind, convert};
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
                None if report.fired(RuleKind::PreviewNotSent, id, k) => {
                    explained.push(RuleKind::PreviewNotSent);
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

fn run_dir(dir: &Path, catalogue: &NodeDefs) -> Outcome {
    let mut exact = Vec::new();
    let mut failed = Vec::new();
    let mut explained = Vec::new();
    for name in pairs(dir) {
        let ui = load(&dir.join(format!("{name}.ui.json")));
        let api = load(&dir.join(format!("{name}.api.json")));
        let expected = api.as_object().expect("api object");
        match convert(ui.as_object().expect("ui object"), catalogue) {
            Ok(done) => {
                let mut d = diff(expected, &done.prompt, &done.report, &mut explained);
                // Node order too: what the frontend's export shows.
                let (e, o): (Vec<&String>, Vec<&String>) =
                    (expected.keys().collect(), done.prompt.keys().collect());
                if d.is_empty() && e != o {
                    d.push(format!("node order {e:?} vs ours {o:?}"));
                }
                // And input order, over the inputs both have.
                for (id, node) in expected {
                    let (Some(ei), Some(oi)) = (
                        node["inputs"].as_object(),
                        done.prompt.get(id).and_then(|n| n["inputs"].as_object()),
                    ) else {
                        continue;
                    };
                    let eo: Vec<&String> = ei.keys().filter(|k| oi.contains_key(*k)).collect();
                    let oo: Vec<&String> = oi.keys().filter(|k| ei.contains_key(*k)).collect();
                    if d.is_empty() && eo != oo {
                        d.push(format!("node {id}: input order {eo:?} vs ours {oo:?}"));
                    }
                }
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
    let o = run_dir(&dir, &NodeDefs::builtin());
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
            RuleKind::TitleFromDisplayName,
            RuleKind::PreviewNotSent
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
    let o = run_dir(&dir, &NodeDefs::builtin());
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

// ---- the command line, manifests naming UI files, and errors ----

const UI_T2I: &str = include_str!("../fixtures/ui/t2i.ui.json");

/// A PNG carrying `text` in a `tEXt` chunk under `key` (plus a foreign chunk).
fn png_with(key: &str, text: &str) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&[0, 0, 0, 0]);
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut png, b"gaRb", &[0xfe; 33]);
    let mut data = key.as_bytes().to_vec();
    data.push(0);
    data.extend_from_slice(text.as_bytes());
    chunk(&mut png, b"tEXt", &data);
    chunk(&mut png, b"IEND", b"");
    png
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn convert_prints_what_the_frontend_sent_with_a_servers_catalogue() {
    let sim = crate::harness::sim().await;
    let p = crate::harness::Project::new();
    let name = "01_get_started_text_to_image";
    let dir = fixtures().join("templates");
    let ui = std::fs::read_to_string(dir.join(format!("{name}.ui.json"))).unwrap();
    p.write("w.json", &ui);
    let out = p.cli(&["convert", "w.json", "--server", &sim.url()]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let ours: Value = serde_json::from_str(&out.stdout).unwrap();
    let expected = load(&dir.join(format!("{name}.api.json")));
    // Same as the library's conversion with the built-in catalogue.
    let done = convert(ui_obj(&ui).as_object().unwrap(), &NodeDefs::builtin()).unwrap();
    let d = diff(
        expected.as_object().unwrap(),
        ours.as_object().unwrap(),
        &done.report,
        &mut Vec::new(),
    );
    assert!(d.is_empty(), "{d:#?}");

    // -o writes the file; an image embedding the workflow gives the same.
    p.write("w.png", png_with("workflow", &ui));
    let out = p.cli(&["convert", "w.png", "-o", "out.json", "-q"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let written: Value =
        serde_json::from_slice(&std::fs::read(p.path("out.json")).unwrap()).unwrap();
    assert_eq!(written, ours);

    // An API-format file passes through unchanged.
    let api = std::fs::read_to_string(p.path("workflows/t2i.json")).unwrap();
    let out = p.cli(&["convert", "workflows/t2i.json"]).await;
    assert_eq!(out.stdout.trim_end(), api.trim_end());
}

fn ui_obj(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn convert_errors_are_one_line_each_with_exit_2() {
    let p = crate::harness::Project::new();
    p.write(
        "custom.json",
        r#"{"nodes": [
            {"id": 1, "type": "Upscaler9000", "title": "Up", "properties": {"cnr_id": "up-pack"}},
            {"id": 2, "type": "EmptyImage", "widgets_values": [1, 2, 3, 4, 5, 6, 7]},
            {"id": 3, "type": "Facer", "properties": {"aux_id": "me/facer"}}], "links": []}"#,
    );
    p.write(
        "broken.json",
        r#"{"nodes": [{"id": 2, "type": "PreviewImage", "inputs": [{"name": "images", "type": "IMAGE", "link": 1}]}],
            "links": [[1, 99, 0, 2, 0, "IMAGE"]]}"#,
    );
    p.write("neither.json", r#"{"hello": "world"}"#);
    p.write("plain.png", png_with("Software", "x"));
    p.write("garbage.png", b"\x89PNG\r\n\x1a\n\xff\xff\xff\xffgarbage");
    let mut seen = Vec::new();
    for file in [
        "custom.json",
        "broken.json",
        "neither.json",
        "plain.png",
        "garbage.png",
        "nope.json",
    ] {
        let out = p.cli(&["convert", file]).await;
        assert_eq!(out.code, 2, "{file}: {}", out.stderr);
        assert!(out.stdout.is_empty(), "{file}: {}", out.stdout);
        assert!(
            out.stderr
                .lines()
                .all(|l| l.starts_with("error: ") || l.starts_with("hint: "))
        );
        seen.push(
            out.stderr
                .replace(&p.path("").display().to_string(), "[tmp]/"),
        );
    }
    insta::assert_snapshot!(seen.join(""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_run_ui_workflows_and_images_as_the_converted_prompt() {
    use sha2::Digest as _;
    let sim = crate::harness::sim().await;
    let p = crate::harness::Project::new();
    p.write("workflows/ui_t2i.json", UI_T2I);
    p.write("workflows/shot.png", png_with("workflow", UI_T2I));
    p.write(
        "m.yaml",
        "version: 1\nworkflows:\n  png: workflows/shot.png\njobs:\n  - name: ui\n    workflow: [ui_t2i, png]\n    matrix:\n      Positive.text: [a red fox, a blue fox]\n      steps: [3]\n    seeds: [5]\n",
    );
    let out = p.run("m.yaml", &[&sim], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows = p.rows();
    assert_eq!(rows.len(), 4);
    let file_sha = hex::encode(sha2::Sha256::digest(UI_T2I.as_bytes()));
    let ui_row = rows
        .iter()
        .find(|r| r.get("workflow").ends_with("ui_t2i.json"))
        .unwrap();
    assert_eq!(ui_row.get("workflow_sha256"), file_sha);
    let prompt: Value = serde_json::from_slice(
        &std::fs::read(
            p.out()
                .join(format!("prompts/{}.json", ui_row.get("job_id"))),
        )
        .unwrap(),
    )
    .unwrap();
    let mut ids: Vec<&String> = prompt.as_object().unwrap().keys().collect();
    ids.sort();
    assert_eq!(
        ids,
        ["3", "4", "5", "6", "7", "8", "9"],
        "virtual and muted nodes are not sent"
    );
    assert_eq!(prompt["3"]["inputs"]["steps"], 3);
    assert_eq!(prompt["3"]["inputs"]["seed"], 5);
    assert_eq!(prompt["6"]["inputs"]["clip"], serde_json::json!(["4", 1]));
    assert!(
        prompt["6"]["inputs"]["text"]
            .as_str()
            .unwrap()
            .ends_with("fox")
    );
    assert_eq!(prompt["6"]["_meta"]["title"], "Positive");
    assert_eq!(prompt["7"]["inputs"]["text"], "blurry");
    // The image's jobs have the same prompts; their ids differ by the file hash.
    let png_row = rows
        .iter()
        .find(|r| r.get("workflow").ends_with("shot.png"))
        .unwrap();
    assert_ne!(png_row.get("job_id"), ui_row.get("job_id"));
    assert!(rows.iter().all(|r| r.get("status") == "ok"));

    // A rerun rebuilds the same jobs from the log.
    let out = p
        .cli(&[
            "rerun",
            "out/runs.csv",
            "--output",
            "again",
            "--server",
            &sim.url(),
        ])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let again = crate::harness::read_rows(&p.path("again/runs.csv"));
    let mut ids: Vec<&str> = again.iter().map(|r| r.get("job_id")).collect();
    let mut before: Vec<&str> = rows.iter().map(|r| r.get("job_id")).collect();
    ids.sort();
    before.sort();
    assert_eq!(ids, before, "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_lists_every_unknown_class_of_every_workflow_at_once() {
    let sim = crate::harness::sim().await;
    let p = crate::harness::Project::new();
    p.write(
        "workflows/a.json",
        r#"{"nodes": [{"id": 1, "type": "Upscaler9000", "title": "Up", "properties": {"cnr_id": "up-pack"}},
                      {"id": 2, "type": "Facer", "properties": {"aux_id": "me/facer"}}], "links": []}"#,
    );
    p.write(
        "workflows/b.json",
        r#"{"nodes": [{"id": 7, "type": "Colorizer", "properties": {"Node name for S&R": "Colorize!"}}], "links": []}"#,
    );
    p.write(
        "m.yaml",
        "version: 1\njobs:\n  - workflow: a\n  - workflow: b\n",
    );
    let out = p.cli(&["check", "m.yaml", "--server", &sim.url()]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    let errors: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 3, "{}", out.stderr);
    for needle in [
        "'Upscaler9000'",
        "'up-pack'",
        "'Facer'",
        "'me/facer'",
        "'Colorizer'",
        "'Colorize!'",
    ] {
        assert!(out.stderr.contains(needle), "{needle}: {}", out.stderr);
    }
    assert_eq!(sim.stats().prompts_executed, 0);
}

/// Hostile input: every shared workflow, damaged at random (nodes removed,
/// links cut or pointed elsewhere, slots and types scrambled, widget values
/// truncated or replaced), must convert or fail with an error, never panic
/// or hang.
#[test]
fn damaged_workflows_never_panic() {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let catalogue = NodeDefs::builtin();
    let dir = fixtures();
    let mut files: Vec<PathBuf> = pairs(&dir)
        .iter()
        .map(|n| dir.join(format!("{n}.ui.json")))
        .collect();
    let tdir = dir.join("templates");
    files.extend(
        pairs(&tdir)
            .iter()
            .map(|n| tdir.join(format!("{n}.ui.json"))),
    );
    let (mut ok, mut failed) = (0, 0);
    for file in &files {
        let original = load(file);
        for _ in 0..6 {
            let mut w = original.clone();
            damage(&mut w, &mut rng);
            for sg in w
                .pointer_mut("/definitions/subgraphs")
                .and_then(Value::as_array_mut)
                .map(std::mem::take)
                .unwrap_or_default()
            {
                let mut sg = sg;
                damage(&mut sg, &mut rng);
                if let Some(list) = w
                    .pointer_mut("/definitions/subgraphs")
                    .and_then(Value::as_array_mut)
                {
                    list.push(sg);
                }
            }
            match convert(w.as_object().expect("object"), &catalogue) {
                Ok(_) => ok += 1,
                Err(e) => {
                    assert!(!e.0.is_empty());
                    failed += 1;
                }
            }
        }
    }
    assert!(ok > 0 && failed > 0, "ok {ok}, failed {failed}");

    fn damage(w: &mut Value, rng: &mut rand_chacha::ChaCha8Rng) {
        use rand::RngExt;
        for _ in 0..rng.random_range(1..4) {
            let n_nodes = w["nodes"].as_array().map_or(0, Vec::len);
            let n_links = w["links"].as_array().map_or(0, Vec::len);
            match rng.random_range(0..6) {
                0 if n_nodes > 0 => {
                    let list = w["nodes"].as_array_mut().unwrap();
                    let i = rng.random_range(0..list.len());
                    list.remove(i);
                }
                1 if n_links > 0 => {
                    let list = w["links"].as_array_mut().unwrap();
                    let i = rng.random_range(0..list.len());
                    let target = rng.random_range(-20i64..200);
                    match &mut list[i] {
                        Value::Array(a) if a.len() > 1 => a[1] = Value::from(target),
                        Value::Object(o) => {
                            o.insert("origin_id".into(), Value::from(target));
                        }
                        _ => {}
                    }
                }
                2 if n_links > 0 => {
                    let list = w["links"].as_array_mut().unwrap();
                    let i = rng.random_range(0..list.len());
                    list.remove(i);
                }
                3 if n_nodes > 0 => {
                    let list = w["nodes"].as_array_mut().unwrap();
                    let i = rng.random_range(0..list.len());
                    let node = &mut list[i];
                    if let Some(Value::Array(v)) = node.get_mut("widgets_values") {
                        let keep = rng.random_range(0..=v.len());
                        v.truncate(keep);
                        v.push(Value::from("junk"));
                    }
                }
                4 if n_nodes > 0 => {
                    let list = w["nodes"].as_array_mut().unwrap();
                    let i = rng.random_range(0..list.len());
                    let mode = [0, 2, 4][rng.random_range(0..3)];
                    list[i]["mode"] = Value::from(mode);
                    if let Some(Value::Array(inputs)) = list[i].get_mut("inputs")
                        && let Some(first) = inputs.first_mut()
                    {
                        first["type"] = Value::from("*");
                        first["link"] = Value::from(rng.random_range(0i64..400));
                    }
                }
                _ if n_nodes > 1 => {
                    // A Reroute loop through two existing nodes.
                    let list = w["nodes"].as_array_mut().unwrap();
                    let a = list[0]["id"].clone();
                    let b = list[1]["id"].clone();
                    list[0]["type"] = Value::from("Reroute");
                    list[1]["type"] = Value::from("Reroute");
                    list[0]["inputs"] =
                        serde_json::json!([{"name": "", "type": "*", "link": 900001}]);
                    list[1]["inputs"] =
                        serde_json::json!([{"name": "", "type": "*", "link": 900002}]);
                    if let Some(links) = w["links"].as_array_mut() {
                        links.push(serde_json::json!([900001, b, 0, a, 0, "*"]));
                        links.push(serde_json::json!([900002, a, 0, b, 0, "*"]));
                    }
                }
                _ => {}
            }
        }
    }
}

/// A server with a custom node pack: `MyInvert` (ImageInvert's definition
/// under another name) on top of `sim`'s catalogue; with `per_class` false
/// it answers 404 on `/object_info/{class}`, as servers older than that
/// route do. Everything else goes to `sim`.
async fn custom_pack_front(sim: String, per_class: bool) -> String {
    use axum::http::StatusCode;
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let sim = sim.clone();
        async move {
            let path = uri.path().to_string();
            async fn get(sim: &str, p: &str) -> (StatusCode, Vec<u8>) {
                let r = reqwest::get(format!("{sim}{p}")).await.unwrap();
                let code = StatusCode::from_u16(r.status().as_u16()).unwrap();
                (code, r.bytes().await.unwrap().to_vec())
            }
            let custom = || async {
                let (_, body) = get(&sim, "/object_info/ImageInvert").await;
                let mut v: Value = serde_json::from_slice(&body).unwrap();
                let mut entry = v["ImageInvert"].take();
                entry["name"] = "MyInvert".into();
                entry["display_name"] = "My Invert".into();
                entry
            };
            if path == "/object_info" {
                let (code, body) = get(&sim, &path).await;
                let mut all: Value = serde_json::from_slice(&body).unwrap();
                all["MyInvert"] = custom().await;
                return (code, all.to_string().into_bytes());
            }
            if path.starts_with("/object_info/") && !per_class {
                return (StatusCode::NOT_FOUND, b"404: Not Found".to_vec());
            }
            if path == "/object_info/MyInvert" {
                let entry = custom().await;
                return (
                    StatusCode::OK,
                    serde_json::json!({ "MyInvert": entry })
                        .to_string()
                        .into_bytes(),
                );
            }
            get(&sim, &path).await
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

const UI_CUSTOM: &str = r#"{"nodes": [
  {"id": 1, "type": "EmptyImage", "widgets_values": [64, 64, 1, 0],
   "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}]},
  {"id": 2, "type": "MyInvert", "properties": {"cnr_id": "my-pack"},
   "inputs": [{"name": "image", "type": "IMAGE", "link": 1}],
   "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [2]}]},
  {"id": 3, "type": "PreviewImage",
   "inputs": [{"name": "images", "type": "IMAGE", "link": 2}]}],
 "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"]]}"#;

/// A UI workflow using a class the server has and the built-in catalogue
/// lacks converts with the server's entry, whether the server has the
/// per-class route or only the whole `/object_info`; without a server it
/// is named as unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_class_the_server_has_converts_with_or_without_the_per_class_route() {
    let sim = crate::harness::sim().await;
    let p = crate::harness::Project::new();
    p.write("workflows/custom.json", UI_CUSTOM);
    p.write("m.yaml", "version: 1\njobs:\n  - workflow: custom\n");
    for per_class in [true, false] {
        let front = custom_pack_front(sim.url(), per_class).await;
        let out = p.cli(&["check", "m.yaml", "--server", &front]).await;
        assert_eq!(out.code, 0, "per class {per_class}: {}", out.stderr);
        assert!(
            !out.stderr.contains("warning"),
            "per class {per_class}: {}",
            out.stderr
        );
        let out = p
            .cli(&["convert", "workflows/custom.json", "--server", &front])
            .await;
        assert_eq!(out.code, 0, "per class {per_class}: {}", out.stderr);
        let prompt: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(prompt["2"]["class_type"], "MyInvert");
        assert_eq!(prompt["2"]["inputs"]["image"], serde_json::json!(["1", 0]));
    }
    let out = p.cli(&["check", "m.yaml", "--sim"]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("'MyInvert'") && out.stderr.contains("'my-pack'"),
        "{}",
        out.stderr
    );
}

/// With the first server down, UI workflows convert with the next server
/// that answers (the one the jobs will run on), and the dead server is
/// tried, and warned about, once, not once per workflow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_first_server_is_passed_over_once_for_the_next_one() {
    let sim = crate::harness::sim().await;
    let front = custom_pack_front(sim.url(), true).await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let p = crate::harness::Project::new();
    p.write("workflows/custom.json", UI_CUSTOM);
    p.write("workflows/t2i.json", UI_T2I);
    p.write("m.yaml", "version: 1\njobs:\n  - workflow: [custom, t2i]\n");
    let out = p
        .cli(&["check", "m.yaml", "--server", &dead, "--server", &front])
        .await;
    // `check` wants every server up: exit 3, but the conversion found MyInvert.
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(!out.stderr.contains("MyInvert"), "{}", out.stderr);
    assert_eq!(
        out.stderr.matches("cannot read the node catalogue").count(),
        1,
        "{}",
        out.stderr
    );
}

/// A workflow saved by an editor that writes a UTF-8 byte order mark (as
/// Windows Notepad does) loads as the frontend loads it: the mark ignored,
/// the hash still that of the file as written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_order_mark_before_a_workflow_is_ignored() {
    let p = crate::harness::Project::new();
    let bom = format!("\u{feff}{UI_T2I}");
    p.write("workflows/ui.json", &bom);
    let out = p.cli(&["convert", "workflows/ui.json"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let prompt: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(prompt["6"]["_meta"]["title"], "Positive");
    let api = out.stdout.clone();
    p.write("workflows/api.json", format!("\u{feff}{api}"));
    p.write(
        "m.yaml",
        "version: 1\njobs:\n  - workflow: [ui, api]\n    seeds: [1]\n",
    );
    let out = p.cli(&["plan", "m.yaml"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("2 jobs"), "{}", out.stdout);
}

/// A UI workflow with nothing the server would run (only a note) is an
/// error for `convert` as for manifests, not an empty prompt with exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn convert_refuses_a_workflow_with_nothing_to_run() {
    let p = crate::harness::Project::new();
    p.write(
        "note.json",
        r#"{"nodes": [{"id": 1, "type": "Note", "widgets_values": ["hi"]}], "links": []}"#,
    );
    let out = p.cli(&["convert", "note.json"]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(out.stdout, "");
    assert!(
        out.stderr.contains("note.json") && out.stderr.contains("no node the server would run"),
        "{}",
        out.stderr
    );
}

/// `-o` into a folder that does not exist names the flag and the file, not
/// a temporary file's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn convert_output_in_a_missing_folder_names_the_flag() {
    let p = crate::harness::Project::new();
    p.write("ui.json", UI_T2I);
    let out = p.cli(&["convert", "ui.json", "-o", "nodir/x.json"]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("-o nodir/x.json"), "{}", out.stderr);
    assert!(!out.stderr.contains(".tmp"), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
}

/// A zlib stream of `1 + 258 × copies` zeros, made by hand: a literal 0,
/// then copies of 258 bytes at distance 1 (13 bits each, fixed codes), so
/// tens of MiB inflate from a few hundred KiB.
fn zlib_zeros(copies: usize) -> Vec<u8> {
    struct Bits {
        out: Vec<u8>,
        acc: u64,
        len: u32,
    }
    impl Bits {
        fn put(&mut self, v: u32, n: u32) {
            self.acc |= u64::from(v) << self.len;
            self.len += n;
            while self.len >= 8 {
                self.out.push(self.acc as u8);
                self.acc >>= 8;
                self.len -= 8;
            }
        }
        /// Huffman codes go most significant bit first.
        fn code(&mut self, c: u32, n: u32) {
            self.put(c.reverse_bits() >> (32 - n), n);
        }
    }
    let mut b = Bits {
        out: vec![0x78, 0x01],
        acc: 0,
        len: 0,
    };
    b.put(1, 1); // the last block
    b.put(1, 2); // fixed codes
    b.code(0x30, 8); // literal 0
    for _ in 0..copies {
        b.code(0xC5, 8); // length 258 (symbol 285)
        b.code(0, 5); // distance 1
    }
    b.code(0, 7); // end of block
    let pad = (8 - b.len) % 8;
    b.put(0, pad); // to a byte boundary
    let n = 1 + 258 * copies as u64;
    let adler = ((n % 65521) << 16) | 1;
    let mut out = b.out;
    out.extend_from_slice(&(adler as u32).to_be_bytes());
    out
}

/// A PNG whose only text is a `zTXt` chunk `key` holding `zlib`.
fn png_with_ztxt(key: &str, zlib: &[u8]) -> Vec<u8> {
    png_with_ztxts(key, &[zlib])
}

/// A PNG whose only texts are `zTXt` chunks `key`, one per `zlibs` item.
fn png_with_ztxts(key: &str, zlibs: &[&[u8]]) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    for zlib in zlibs {
        let mut data = key.as_bytes().to_vec();
        data.extend_from_slice(&[0, 0]); // end of keyword, zlib
        data.extend_from_slice(zlib);
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        png.extend_from_slice(b"zTXt");
        png.extend_from_slice(&data);
        png.extend_from_slice(&[0, 0, 0, 0]); // CRC
    }
    png.extend_from_slice(&[0, 0, 0, 0]);
    png.extend_from_slice(b"IEND");
    png.extend_from_slice(&[0, 0, 0, 0]);
    png
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_metadata_converts_and_past_the_cap_says_so() {
    let p = crate::harness::Project::new();
    // A compressed workflow converts as the plain one does.
    p.write("w.png", png_with("workflow", UI_T2I));
    p.write(
        "z.png",
        png_with_ztxt(
            "workflow",
            &miniz_oxide::deflate::compress_to_vec_zlib(UI_T2I.as_bytes(), 6),
        ),
    );
    let plain = p.cli(&["convert", "w.png"]).await;
    assert_eq!(plain.code, 0, "{}", plain.stderr);
    let z = p.cli(&["convert", "z.png"]).await;
    assert_eq!(z.code, 0, "{}", z.stderr);
    assert_eq!(z.stdout, plain.stdout);

    // 65 MiB of zeros from about 430 KB: the cap is named, not "no metadata".
    let bomb = zlib_zeros((65 << 20) / 258);
    assert!(bomb.len() < 500_000, "{}", bomb.len());
    p.write("bomb.png", png_with_ztxt("workflow", &bomb));
    let out = p.cli(&["convert", "bomb.png"]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(
        out.stderr.trim_end(),
        "error: bomb.png: the image's compressed 'workflow' metadata inflates past the 64 MiB cap"
    );
    // A manifest naming it says the same, at plan time.
    p.write(
        "m.yaml",
        "version: 1\nworkflows:\n  b: bomb.png\njobs:\n  - name: b\n    workflow: b\n",
    );
    let out = p.cli(&["plan", "m.yaml"]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("the image's compressed 'workflow' metadata inflates past the 64 MiB cap"),
        "{}",
        out.stderr
    );
}

// ---- what the frontend does when it loads an old or odd workflow ----
// Expectations from frontend 1.35.9's sources (see src/convert/tests.rs).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn convert_repairs_what_the_frontend_repairs_on_load_and_says_so_with_v() {
    let p = crate::harness::Project::new();
    p.write(
        "old.json",
        r#"{"nodes": [
            {"id": 1, "type": "T2IAdapterLoader", "widgets_values": ["t2i_depth.pth"]},
            {"id": 2, "type": "LoadImage", "widgets_values": ["cat.png", "image", ""]},
            {"id": 3, "type": "SaveWEBM", "widgets_values": ["ComfyUI", "vp9", 24, 32],
             "inputs": [{"name": "images", "type": "IMAGE", "link": 1}]},
            {"id": 4, "type": "EmptyImage", "widgets_values": [64, 64, 1, 0],
             "outputs": [{"type": "IMAGE", "links": [1]}]}],
          "links": [[1, 4, 0, 3, 0, "IMAGE"]]}"#,
    );
    let out = p.cli(&["convert", "old.json", "-v"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let prompt: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(prompt["1"]["class_type"], "ControlNetLoader");
    assert_eq!(prompt["1"]["inputs"]["control_net_name"], "t2i_depth.pth");
    assert_eq!(
        prompt["2"]["inputs"],
        serde_json::json!({"image": "cat.png"})
    );
    assert!(prompt["3"]["inputs"].get("video-preview").is_none());
    for rule in [
        "renamed-class ×1",
        "extra-widget-values-ignored ×1",
        "preview-not-sent ×1",
    ] {
        assert!(out.stderr.contains(rule), "{rule}: {}", out.stderr);
    }
}

const WEBCAM: &str = r#"{"nodes": [
    {"id": 1, "type": "WebcamCapture", "widgets_values": ["", 640, 480, true, "capture"],
     "outputs": [{"type": "IMAGE", "links": [1]}]},
    {"id": 2, "type": "PreviewImage", "inputs": [{"name": "images", "type": "IMAGE", "link": 1}]}],
  "links": [[1, 1, 0, 2, 0, "IMAGE"]]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_input_refuses_convert_and_plan_unless_the_manifest_sets_it() {
    let sim = crate::harness::sim().await;
    let p = crate::harness::Project::new();
    p.write("workflows/cam.json", WEBCAM);
    let why = "node 1 (WebcamCapture, 'Webcam Capture') input 'image' needs a value: the \
               frontend takes a camera frame each time it queues";
    let out = p.cli(&["convert", "workflows/cam.json"]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr
            .starts_with(&format!("error: workflows/cam.json: {why}")),
        "{}",
        out.stderr
    );

    p.write(
        "m.yaml",
        "version: 1\njobs:\n  - name: cam\n    workflow: cam\n",
    );
    for args in [
        vec!["plan", "m.yaml"],
        vec!["check", "m.yaml", "--server", &sim.url()],
    ] {
        let out = p.cli(&args).await;
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        let errors: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| l.starts_with("error:"))
            .collect();
        assert_eq!(errors.len(), 1, "{args:?}: {}", out.stderr);
        assert!(errors[0].contains("m.yaml:4:"), "{}", errors[0]);
        assert!(errors[0].contains(why), "{}", errors[0]);
        assert!(
            errors[0].ends_with("set it in the manifest ('1.image')"),
            "{}",
            errors[0]
        );
    }
    assert_eq!(sim.stats().prompts_executed, 0);

    // Set by the manifest, the job has it.
    p.write(
        "m.yaml",
        "version: 1\njobs:\n  - name: cam\n    workflow: cam\n    set:\n      WebcamCapture.image: \"webcam/frame.png [temp]\"\n",
    );
    let out = p.cli(&["plan", "m.yaml", "--write-prompts", "pr"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let files: Vec<PathBuf> = std::fs::read_dir(p.path("pr"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    let prompt = load(&files[0]);
    assert_eq!(prompt["1"]["inputs"]["image"], "webcam/frame.png [temp]");
}

/// `convert -v` that refuses a live input says only why: no "converted N
/// nodes" summary for a prompt it does not give.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_live_input_is_one_line_with_verbose_too() {
    let p = crate::harness::Project::new();
    p.write("workflows/cam.json", WEBCAM);
    let out = p.cli(&["convert", "-v", "workflows/cam.json"]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    assert!(
        lines[0].starts_with("error: workflows/cam.json: node 1 (WebcamCapture"),
        "{}",
        out.stderr
    );
}

/// A live input set to null by the manifest is still unset: null is the
/// marker `convert` sends, which the server would run as no image. Refused
/// through a node id, a title and an alias alike, for a fixed value and an
/// axis member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_input_set_to_null_is_still_refused() {
    let p = crate::harness::Project::new();
    p.write("workflows/cam.json", WEBCAM);
    for set in [
        "    set:\n      1.image: null\n",
        "    set:\n      Webcam Capture.image: ~\n",
        "    set:\n      cam: null\n",
        "    matrix:\n      1.image: [\"f.png [temp]\", null]\n",
    ] {
        p.write(
            "m.yaml",
            format!(
                "version: 1\nparams:\n  cam: \"1.image\"\njobs:\n  - name: cam\n    workflow: cam\n{set}"
            ),
        );
        let out = p.cli(&["plan", "m.yaml"]).await;
        assert_eq!(out.code, 2, "{set}: {}", out.stderr);
        let errors: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| l.starts_with("error:"))
            .collect();
        assert_eq!(errors.len(), 1, "{set}: {}", out.stderr);
        assert!(errors[0].contains("m.yaml:8:"), "{set}: {}", errors[0]);
        assert!(
            errors[0].contains("input 'image' of node 1 needs a value, which null is not"),
            "{set}: {}",
            errors[0]
        );
    }
}

/// Many compressed texts, each under the cap but not a usable text (not
/// UTF-8), share one cap: a small image cannot make `convert` inflate
/// gigabytes one chunk at a time, and it says the cap was reached rather
/// than "no metadata".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_compressed_texts_share_one_cap() {
    let p = crate::harness::Project::new();
    let junk = miniz_oxide::deflate::compress_to_vec_zlib(&vec![0xFF; 30 << 20], 1);
    assert!(junk.len() < 1_000_000, "{}", junk.len());
    p.write(
        "many.png",
        png_with_ztxts("workflow", &[&junk, &junk, &junk]),
    );
    let out = p.cli(&["convert", "many.png"]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(
        out.stderr.trim_end(),
        "error: many.png: the image's compressed 'workflow' metadata inflates past the 64 MiB cap"
    );
}
