//! Prompt templates (issue 12): conformance with the reference
//! implementation, logged choices, reruns from a row, and errors.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use comfy_batch::templates::{Expansion, Template, Wildcards};
use serde_json::Value;

use crate::harness::{Project, read_rows, sim};

fn dynamicprompts_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dynamicprompts")
}

/// Every variant of `text` (void ones dropped, repeats merged), or the error.
fn expand_all(text: &str, wildcards: &Path) -> Result<BTreeSet<String>, String> {
    let mut w = Wildcards::new(wildcards.to_owned());
    let t = Template::compile(text, &mut w).map_err(|e| e.to_string())?;
    let mut x = Expansion::default();
    let mut out = BTreeSet::new();
    for i in 0..t.count() {
        if t.expand(i, &mut x) {
            out.insert(x.text.clone());
        }
    }
    Ok(out)
}

#[test]
fn combinatorial_expansions_equal_the_reference_implementation() {
    let dir = dynamicprompts_dir();
    let corpus: Vec<Value> =
        serde_json::from_slice(&std::fs::read(dir.join("corpus.json")).unwrap()).unwrap();
    let expected: Value =
        serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    let expected = &expected["expected"];
    assert!(
        corpus.len() >= 40,
        "the corpus has {} templates",
        corpus.len()
    );
    let wildcards = dir.join("wildcards");
    let mut same = 0;
    let mut documented = 0;
    for case in &corpus {
        let name = case["name"].as_str().unwrap();
        let text = case["template"].as_str().unwrap();
        let reference = &expected[name];
        assert!(
            !reference.is_null(),
            "{name}: no expected output; rerun gen_expected.py"
        );
        let ours = expand_all(text, &wildcards);
        if case.get("differs").is_none() {
            let want: BTreeSet<String> = reference["prompts"]
                .as_array()
                .unwrap_or_else(|| panic!("{name}: the reference refused it: {reference}"))
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect();
            assert_eq!(ours.as_ref(), Ok(&want), "{name}: {text:?}");
            same += 1;
            continue;
        }
        // A documented difference: the reference does something else, and
        // comfy-batch does what the corpus says.
        let theirs: Result<BTreeSet<String>, String> = match reference.get("prompts") {
            Some(p) => Ok(p
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect()),
            None => Err(reference["error"].as_str().unwrap().to_owned()),
        };
        assert_ne!(ours, theirs, "{name}: no longer differs; drop 'differs'");
        match (case.get("ours"), case.get("ours_error")) {
            (Some(want), _) => {
                let want: BTreeSet<String> = want
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_owned())
                    .collect();
                assert_eq!(ours, Ok(want), "{name}: {text:?}");
            }
            (None, Some(err)) => {
                let e = ours.expect_err(name);
                assert!(e.contains(err.as_str().unwrap()), "{name}: {e}");
            }
            _ => panic!("{name}: a difference needs 'ours' or 'ours_error'"),
        }
        documented += 1;
    }
    assert!(same >= 40, "{same} templates match the reference");
    assert_eq!(same + documented, corpus.len());
}

const MANIFEST: &str = r#"version: 1
wildcards: cards/
jobs:
  - name: zoo
    workflow: t2i
    templates:
      "6.text": "a {red|blue} __animals__ ${mood=!{calm|wild}}in a ${mood} __places__"
    seeds: [3]
  - name: drawn
    workflow: t2i
    templates:
      "6.text": "__animals__ at {dawn|dusk|noon}"
    draw: {random: 3, seed: 11}
    seeds: [4]
"#;

fn project() -> Project {
    let p = Project::new();
    p.write("cards/animals.txt", "# pets\ncat\ndog\n\n");
    p.write("cards/places.txt", "field\nforest\n");
    p.write("m.yaml", MANIFEST);
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_variants_run_as_jobs_with_each_choice_logged_and_rerun_from_the_row() {
    let server = sim().await;
    let p = project();
    let out = p
        .cli(&[
            "run",
            "m.yaml",
            "--output",
            "out",
            "--server",
            &server.url(),
        ])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows = p.rows();
    // 2 colours × 2 animals × 2 moods × 2 places, and 3 draws.
    assert_eq!(rows.len(), 19);
    let header: Vec<&str> = rows[0].0.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        header[8..12],
        ["6.text", "animals", "mood", "places"],
        "{header:?}"
    );
    for row in &rows {
        assert_eq!(row.get("status"), "ok");
        let text = row.get("6.text");
        assert!(text.contains(row.get("animals")), "{row:?}");
        if row.get("job").starts_with("zoo") {
            assert_eq!(
                text,
                format!(
                    "a {} {} in a {} {}",
                    if text.contains("red") { "red" } else { "blue" },
                    row.get("animals"),
                    row.get("mood"),
                    row.get("places")
                )
            );
            // The prompt sent holds the resolved text.
            let prompt: Value = serde_json::from_slice(
                &std::fs::read(p.out().join(format!("prompts/{}.json", row.get("job_id"))))
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(prompt["6"]["inputs"]["text"], text);
        } else {
            assert_eq!(row.get("mood"), "");
        }
    }
    let texts: BTreeSet<&str> = rows.iter().map(|r| r.get("6.text")).collect();
    assert_eq!(texts.len(), 19, "every variant once");

    // The same manifest plans the same jobs (ids, draws) again.
    let plan = p.cli(&["plan", "m.yaml", "--format", "csv"]).await;
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    let planned: BTreeMap<String, String> = plan
        .stdout
        .lines()
        .skip(1)
        .map(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            (cells[0].to_owned(), cells[8].to_owned())
        })
        .collect();
    let logged: BTreeMap<String, String> = rows
        .iter()
        .map(|r| (r.get("job_id").to_owned(), r.get("6.text").to_owned()))
        .collect();
    assert_eq!(planned, logged);

    // A row alone reruns the job: same id, choices kept, no fallback.
    std::fs::remove_dir_all(p.path("cards")).unwrap();
    let id = rows[5].get("job_id").to_owned();
    let out = p
        .cli(&[
            "rerun",
            "out/runs.csv",
            "--job",
            &id,
            "--output",
            "again",
            "--server",
            &server.url(),
        ])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);
    let again = read_rows(&p.path("again/runs.csv"));
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].get("job_id"), id);
    for col in ["6.text", "animals", "mood", "places"] {
        assert_eq!(again[0].get(col), rows[5].get(col), "{col}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_problems_exit_2_naming_file_line_and_column() {
    let p = project();
    p.write("cards/empty.txt", "# nothing yet\n");
    p.write("cards/loop_a.txt", "x\n__loop_b__\n");
    p.write("cards/loop_b.txt", "__loop_a__\n");
    p.write("cards/latin1.txt", b"caf\xe9\n".as_slice());
    let words: String = (0..1000).map(|i| format!("w{i}\n")).collect();
    p.write("cards/words.txt", words);
    let cases = [
        "a {red|blue photo",
        "a red} photo",
        "a __animal__",
        "{3$$a|b}",
        "{x$$a|b}",
        "__loop_a__",
        "__empty__",
        "__latin1__",
        "__../../etc/passwd__",
        "${who} is here",
        "__animals__ __animals__ __animals__ {1-9$$a|b|c|d|e|f|g|h|i}",
        "__words__ __words__ __words__",
        "{2-$$__words__}",
    ];
    let mut lines = Vec::new();
    for case in cases {
        let text = format!(
            "version: 1\nwildcards: cards\njobs:\n  - name: g\n    workflow: t2i\n    templates:\n      prompt: {}\n",
            serde_json::to_string(case).unwrap()
        );
        p.write("bad.yaml", text);
        let out = p.cli(&["plan", "bad.yaml"]).await;
        assert_eq!(out.code, 2, "{case}: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{case}: {}", out.stderr);
        lines.push(
            out.stderr
                .trim_end()
                .replace(&p.dir.path().display().to_string(), "[tmp]"),
        );
    }
    insta::assert_snapshot!(lines.join("\n"));
}
