//! CI: the examples under `examples/ci/` and the command lines of
//! `docs/ci.md` go through the real argument parser (so they cannot rot);
//! `--junit`, the GitHub job summary and annotations, and `--shard auto`
//! from a CI's variables, end to end.

use std::path::Path;

use crate::export::MIXED;
use crate::harness::{Output, Project, read_rows, sim};

/// Replaces CI placeholders (`${{ matrix.shard }}`, `$(INDEX)`, `${X}`,
/// `$X`) by `1`, as the CI would by a value.
fn substitute(line: &str) -> String {
    let gh = regex_lite::Regex::new(r"\$\{\{[^}]*\}\}").unwrap();
    let var = regex_lite::Regex::new(
        r"\$\([A-Za-z_][A-Za-z0-9_]*\)|\$\{[A-Za-z_][A-Za-z0-9_]*\}|\$[A-Za-z_][A-Za-z0-9_]*",
    )
    .unwrap();
    let line = gh.replace_all(line, "1");
    var.replace_all(&line, "1").into_owned()
}

/// Splits a command line as a POSIX shell would (quotes, backslashes).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => word.push(c),
            (Some(_), '\\') => word.extend(chars.next()),
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => {
                word.extend(chars.next());
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, '#') if !in_word => break,
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// Every `comfy-batch …` command in a script: continuation lines joined,
/// `&&` / `;` / `||` split.
fn commands_in_script(script: &str) -> Vec<Vec<String>> {
    let joined = script.replace("\\\n", " ");
    let mut out = Vec::new();
    for line in joined.lines() {
        let line = line.trim().trim_start_matches("$ ");
        for part in line
            .split("&&")
            .flat_map(|p| p.split("||"))
            .flat_map(|p| p.split(';'))
        {
            let mut words = shell_words(&substitute(part.trim()));
            // `NAME=value comfy-batch …`: the assignments are the shell's.
            let assignment = regex_lite::Regex::new(r"^[A-Za-z_][A-Za-z0-9_]*=").unwrap();
            let env = words.iter().take_while(|w| assignment.is_match(w)).count();
            words.drain(..env);
            if words.first().is_some_and(|w| w == "comfy-batch") {
                out.push(words);
            }
        }
    }
    out
}

fn commands_in_yaml(value: &serde_yaml::Value, out: &mut Vec<Vec<String>>) {
    match value {
        serde_yaml::Value::String(s) => out.extend(commands_in_script(s)),
        serde_yaml::Value::Sequence(items) => {
            let words: Option<Vec<String>> =
                items.iter().map(|i| i.as_str().map(substitute)).collect();
            match words {
                Some(words) if words.first().is_some_and(|w| w == "comfy-batch") => out.push(words),
                _ => items.iter().for_each(|i| commands_in_yaml(i, out)),
            }
        }
        serde_yaml::Value::Mapping(map) => map.values().for_each(|v| commands_in_yaml(v, out)),
        serde_yaml::Value::Tagged(t) => commands_in_yaml(&t.value, out),
        _ => {}
    }
}

fn parse_all(file: &str, commands: &[Vec<String>]) {
    for words in commands {
        if let Err(e) = comfy_batch::cli::parse_args(words) {
            panic!("{file}: `{}` does not parse:\n{e}", words.join(" "));
        }
    }
}

#[test]
fn every_command_in_the_ci_examples_parses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<_> = std::fs::read_dir(root.join("examples/ci"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut total = 0;
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let mut commands = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e: serde_yaml::Error| panic!("{}: {e}", path.display()));
            commands_in_yaml(&value, &mut commands);
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            commands.len() >= 3,
            "{name}: only {} commands found",
            commands.len()
        );
        assert!(
            commands
                .iter()
                .any(|c| c.get(1).is_some_and(|w| w == "merge")),
            "{name}: no merge step"
        );
        parse_all(&name, &commands);
        total += commands.len();
    }
    assert!(files.len() >= 3, "{files:?}");
    assert!(total >= 12, "{total}");
}

#[test]
fn every_command_in_docs_ci_parses() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ci.md")).unwrap();
    let mut commands = Vec::new();
    let mut in_code = false;
    let mut block = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            if in_code {
                commands.extend(commands_in_script(&block));
                block.clear();
            }
            in_code = !in_code;
        } else if in_code {
            block.push_str(line);
            block.push('\n');
        }
    }
    assert!(
        commands.len() >= 8,
        "only {} commands in docs/ci.md",
        commands.len()
    );
    parse_all("docs/ci.md", &commands);
}

#[test]
fn the_extractor_finds_what_a_shell_would_run() {
    let cmds = commands_in_script(
        "cargo install comfy-batch\ncomfy-batch run a.yaml \\\n  --shard ${{ matrix.shard }}/4 --output 'out/my dir' # note\nx && comfy-batch status out",
    );
    assert_eq!(
        cmds,
        [
            vec![
                "comfy-batch",
                "run",
                "a.yaml",
                "--shard",
                "1/4",
                "--output",
                "out/my dir"
            ],
            vec!["comfy-batch", "status", "out"]
        ]
    );
    assert!(
        comfy_batch::cli::parse_args(["comfy-batch", "run", "a.yaml", "--shard", "5/4"]).is_err()
    );
    assert!(
        comfy_batch::cli::parse_args(["comfy-batch", "run", "a.yaml", "--shrad", "1/4"]).is_err()
    );
}

/// `comfy-batch ARGS…` with the CI variables of `env` only (the harness
/// removes the host's).
pub(crate) async fn cli_env(p: &Project, args: &[&str], env: &[(&str, &str)]) -> Output {
    let vars: Vec<(&str, Option<&str>)> = env.iter().map(|(k, v)| (*k, Some(*v))).collect();
    p.cli_env(args, &vars).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junit_summary_and_annotations_under_github_actions() {
    let p = Project::new();
    let s = sim().await;
    p.write("mixed.yaml", MIXED);
    let url = s.url();
    let summary = p.path("summary.md");
    std::fs::write(&summary, "earlier step\n").unwrap();
    let out = cli_env(
        &p,
        &[
            "run",
            "mixed.yaml",
            "--server",
            &url,
            "--output",
            "out",
            "--no-check",
            "--junit",
            "reports/junit.xml",
        ],
        &[
            ("GITHUB_STEP_SUMMARY", summary.to_str().unwrap()),
            ("GITHUB_ACTIONS", "true"),
        ],
    )
    .await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    let xml = std::fs::read_to_string(p.path("reports/junit.xml")).unwrap();
    assert_eq!(xml.matches("<testcase ").count(), 8, "{xml}");
    assert_eq!(xml.matches("<failure ").count(), 2, "{xml}");
    assert_eq!(xml.matches("<testsuite ").count(), 2, "{xml}");
    assert!(
        xml.contains(r#"<testcase name="bad#1 (Canvas.color=1)" classname="bad""#),
        "{xml}"
    );
    let md = std::fs::read_to_string(&summary).unwrap();
    assert!(
        md.starts_with("earlier step\n### comfy-batch: 2 of 8 jobs failed"),
        "{md}"
    );
    assert!(md.contains("comfy-batch rerun out/runs.csv --job "), "{md}");
    assert!(md.contains(&format!("| {url} | 8 |")), "{md}");
    let errors: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("::error title=comfy-batch%3A bad#"))
        .collect();
    assert_eq!(errors.len(), 2, "{}", out.stdout);
    // Every failed row of the log is a failure in the report.
    for row in read_rows(&p.out().join("runs.csv")) {
        if row.get("status") != "ok" {
            assert!(xml.contains(row.get("job_id")));
        }
    }
}

const SIX: &str = r#"version: 1
workflows:
  tiny: workflows/tiny.json
jobs:
  - name: colors
    workflow: tiny
    matrix:
      "Canvas.color": [255, 65280, 16711680]
      "1.width": [16, 24]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_auto_reads_the_ci_and_says_when_nothing_is_set() {
    let p = Project::new();
    let s = sim().await;
    p.write("six.yaml", SIX);
    let url = s.url();
    let gitlab = cli_env(
        &p,
        &[
            "run", "six.yaml", "--server", &url, "--output", "g2", "--shard", "auto",
        ],
        &[("CI_NODE_INDEX", "2"), ("CI_NODE_TOTAL", "2")],
    )
    .await;
    assert_eq!(gitlab.code, 0, "{}", gitlab.stderr);
    let k8s = cli_env(
        &p,
        &[
            "run", "six.yaml", "--server", &url, "--output", "k0", "--shard", "auto/2",
        ],
        &[("JOB_COMPLETION_INDEX", "0")],
    )
    .await;
    assert_eq!(k8s.code, 0, "{}", k8s.stderr);
    let fixed = cli_env(
        &p,
        &[
            "run", "six.yaml", "--server", &url, "--output", "f2", "--shard", "2/2",
        ],
        &[],
    )
    .await;
    assert_eq!(fixed.code, 0);
    let ids = |dir: &str| -> std::collections::BTreeSet<String> {
        read_rows(&p.path(dir).join("runs.csv"))
            .iter()
            .map(|r| r.get("job_id").to_string())
            .collect()
    };
    assert_eq!(ids("g2"), ids("f2"));
    assert_eq!(ids("g2").len(), 3);
    assert!(ids("k0").is_disjoint(&ids("g2")) && ids("k0").len() == 3);

    let none = cli_env(
        &p,
        &[
            "run", "six.yaml", "--server", &url, "--output", "n", "--shard", "auto",
        ],
        &[],
    )
    .await;
    assert_eq!(none.code, 2);
    assert_eq!(none.stderr.lines().count(), 1, "{}", none.stderr);
    assert!(
        none.stderr
            .contains("--shard auto: no shard in the environment"),
        "{}",
        none.stderr
    );
    assert!(!p.path("n").exists(), "nothing written");
}

/// Two CIs' variables at once (a GitLab runner inside another CI's job):
/// when they give the same shard it runs and says which it read; when they
/// differ it stops before anything runs, on one line naming both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_auto_names_its_variables_and_refuses_two_cis_that_disagree() {
    let p = Project::new();
    let s = sim().await;
    p.write("six.yaml", SIX);
    let url = s.url();
    let run = |out: &'static str| {
        [
            "run", "six.yaml", "--server", &url, "--output", out, "--shard", "auto",
        ]
        .map(str::to_string)
    };
    let args = run("agree");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agree = cli_env(
        &p,
        &args,
        &[
            ("CI_NODE_INDEX", "2"),
            ("CI_NODE_TOTAL", "2"),
            ("CIRCLE_NODE_INDEX", "1"),
            ("CIRCLE_NODE_TOTAL", "2"),
        ],
    )
    .await;
    assert_eq!(agree.code, 0, "{}", agree.stderr);
    assert!(
        agree.stderr.contains(
            "--shard auto: shard 2/2 from GitLab CI_NODE_INDEX=2, CI_NODE_TOTAL=2 and CircleCI CIRCLE_NODE_INDEX=1, CIRCLE_NODE_TOTAL=2"
        ),
        "{}",
        agree.stderr
    );
    let args = run("differ");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let differ = cli_env(
        &p,
        &args,
        &[
            ("CI_NODE_INDEX", "1"),
            ("CI_NODE_TOTAL", "2"),
            ("CIRCLE_NODE_INDEX", "1"),
            ("CIRCLE_NODE_TOTAL", "2"),
        ],
    )
    .await;
    assert_eq!(differ.code, 2, "{}", differ.stderr);
    assert_eq!(differ.stderr.lines().count(), 1, "{}", differ.stderr);
    assert!(
        differ.stderr.contains(
            "--shard auto: the CIs disagree: GitLab CI_NODE_INDEX=1, CI_NODE_TOTAL=2 gives 1/2 but CircleCI CIRCLE_NODE_INDEX=1, CIRCLE_NODE_TOTAL=2 gives 2/2"
        ),
        "{}",
        differ.stderr
    );
    assert!(!p.path("differ").exists(), "nothing written");
}

#[test]
fn help_texts_of_the_dataset_and_ci_commands_are_stable() {
    let mut all = String::new();
    for cmd in ["export", "merge", "status"] {
        let err = comfy_batch::cli::parse_args(["comfy-batch", cmd, "--help"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::DisplayHelp);
        all.push_str(&format!("== {cmd} --help\n{err}\n"));
    }
    insta::assert_snapshot!(all);
}
