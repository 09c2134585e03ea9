//! Packaging: the docs' install lines are the supported forms, the
//! Kubernetes example's ConfigMap lays out a manifest `plan` reads, and the
//! release workflow and Dockerfile say what they must (neither can run
//! here).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The install commands the docs may show: from a clone, or from a
/// repository the user names. No registry names until a release published
/// them (until then the name could be anyone's).
const SUPPORTED: [&str; 5] = [
    "cargo install --locked --path .",
    "pip install .",
    "uv tool install .",
    r#"cargo install --locked --git "$REPO_URL""#,
    r#"pip install "git+$REPO_URL""#,
];

/// Every install command in a text: from the installer's name (or a
/// runner that installs by name: `uvx`, `uv tool run`, `pipx run`) to the
/// end of the command (a comment, `&&`, `;`, a closing backtick end it),
/// with lines continued by a backslash joined first.
fn install_lines(text: &str) -> Vec<String> {
    let start = regex_lite::Regex::new(
        r"\b(cargo\s+b?install|pip3?\s+install|pipx\s+(install|run)|uv\s+(tool\s+(install|run)|pip\s+install|add|run\s+--with)|uvx)\b",
    )
    .unwrap();
    let mut commands = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        match line.trim_end().strip_suffix('\\') {
            Some(head) => {
                pending.push_str(head);
                pending.push(' ');
            }
            None => commands.push(std::mem::take(&mut pending) + line),
        }
    }
    let mut out = Vec::new();
    for line in &commands {
        for m in start.find_iter(line) {
            let rest = &line[m.start()..];
            let end = [" #", "&&", ";", "||", "`", "|"]
                .iter()
                .filter_map(|stop| rest.find(stop))
                .min()
                .unwrap_or(rest.len());
            out.push(rest[..end].split_whitespace().collect::<Vec<_>>().join(" "));
        }
    }
    out
}

#[test]
fn install_lines_are_found_however_they_are_written() {
    // Installs or runs from a registry by name, as a user might add them.
    let text = "uv tool run comfy-batch plan jobs/x.yaml\n\
        uv run --with comfy-batch comfy-batch --help\n\
        - python3 -m pip install comfy-batch\n\
        RUN pip install \\\n    --no-cache-dir comfy-batch\n\
        cargo install --locked \\\n  --path .\n";
    assert_eq!(
        install_lines(text),
        [
            "uv tool run comfy-batch plan jobs/x.yaml",
            "uv run --with comfy-batch comfy-batch --help",
            "pip install comfy-batch",
            "pip install --no-cache-dir comfy-batch",
            "cargo install --locked --path .",
        ]
    );
}

#[test]
fn install_lines_in_the_readme_docs_and_ci_examples_are_supported_forms() {
    // The extractor itself: what it must catch.
    assert_eq!(
        install_lines(
            "      run: cargo install --locked comfy-batch # nightly\n`pip install comfy-batch` or `uv tool install comfy-batch`"
        ),
        [
            "cargo install --locked comfy-batch",
            "pip install comfy-batch",
            "uv tool install comfy-batch"
        ]
    );
    let mut files = vec![root().join("README.md")];
    for folder in ["docs", "examples/ci"] {
        let mut entries: Vec<_> = std::fs::read_dir(root().join(folder))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        files.extend(entries);
    }
    let mut bad = Vec::new();
    let mut found: BTreeMap<String, usize> = BTreeMap::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for line in install_lines(&text) {
            if SUPPORTED.contains(&line.as_str()) {
                *found.entry(line).or_default() += 1;
            } else {
                bad.push(format!("{}: {line}", file.display()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "unsupported install lines:\n{}",
        bad.join("\n")
    );
    // The README shows every supported form, and the CI examples install.
    for form in SUPPORTED {
        assert!(
            found.contains_key(form),
            "{form} is not documented: {found:?}"
        );
    }
    for example in ["github-nightly.yml", "gitlab-ci.yml"] {
        let text = std::fs::read_to_string(root().join("examples/ci").join(example)).unwrap();
        assert!(
            !install_lines(&text).is_empty(),
            "{example} installs nothing"
        );
        assert!(
            text.contains("REPO_URL"),
            "{example}: REPO_URL is not named"
        );
    }
}

/// The Kubernetes example's `kubectl create configmap` line (in its
/// comments), as key → repository file, the way `--from-file` names keys.
fn configmap_keys(example: &str) -> BTreeMap<String, String> {
    let line = example
        .lines()
        .find(|l| l.contains("kubectl create configmap"))
        .expect("the example says how to make its ConfigMap");
    line.split_whitespace()
        .filter_map(|w| w.strip_prefix("--from-file="))
        .map(|arg| match arg.split_once('=') {
            Some((key, file)) => (key.to_string(), file.to_string()),
            None => (
                Path::new(arg)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                arg.to_string(),
            ),
        })
        .collect()
}

#[test]
fn k8s_example_configmap_items_lay_out_a_manifest_that_plans() {
    let text = std::fs::read_to_string(root().join("examples/ci/k8s-indexed-job.yaml")).unwrap();
    let keys = configmap_keys(&text);
    assert!(!keys.is_empty());
    // The image comes from the repository's Dockerfile, as the example says.
    assert!(text.contains("docker build"), "the example names no build");
    assert!(root().join("Dockerfile").is_file());
    let mut planned = 0;
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value: serde_yaml::Value = serde::Deserialize::deserialize(doc).unwrap();
        let Some(pod) = value
            .get("spec")
            .and_then(|s| s.get("template"))
            .and_then(|t| t.get("spec"))
        else {
            continue;
        };
        for container in pod["containers"].as_sequence().unwrap() {
            let image = container["image"].as_str().unwrap();
            assert!(image.contains("comfy-batch"), "{image}");
            // Lay each ConfigMap volume out as the kubelet does: with
            // `items:`, only the listed keys, each at its path inside a
            // timestamped folder that `..data` links to, and each top-level
            // name a link through `..data` (its atomic writer's layout, so
            // a manifest's `../workflows` crosses links).
            let base = tempfile::tempdir().unwrap();
            for mount in container["volumeMounts"].as_sequence().unwrap() {
                let volume = pod["volumes"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .find(|v| v["name"] == mount["name"])
                    .unwrap();
                let Some(config_map) = volume.get("configMap") else {
                    continue;
                };
                let items = config_map["items"]
                    .as_sequence()
                    .expect("the ConfigMap volume maps its keys to paths (items:)");
                let mount_at = base
                    .path()
                    .join(mount["mountPath"].as_str().unwrap().trim_start_matches('/'));
                let at = if cfg!(unix) {
                    mount_at.join("..2026_12_06_22_00_00.000000001")
                } else {
                    mount_at.clone()
                };
                let mut tops = std::collections::BTreeSet::new();
                for item in items {
                    let key = item["key"].as_str().unwrap();
                    let file = keys
                        .get(key)
                        .unwrap_or_else(|| panic!("no key {key} in {keys:?}"));
                    let path = item["path"].as_str().unwrap();
                    tops.insert(path.split('/').next().unwrap().to_string());
                    let to = at.join(path);
                    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                    std::fs::copy(root().join(file), to).unwrap();
                }
                #[cfg(unix)]
                {
                    use std::os::unix::fs::symlink;
                    symlink(at.file_name().unwrap(), mount_at.join("..data")).unwrap();
                    for top in &tops {
                        symlink(Path::new("..data").join(top), mount_at.join(top)).unwrap();
                    }
                }
            }
            // Every manifest the container names, planned from the laid-out
            // folder.
            let words: Vec<String> = container["command"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|w| w.as_str().unwrap().to_string())
                .collect();
            let manifest_re = regex_lite::Regex::new(r"/\S+\.yaml").unwrap();
            for word in &words {
                for m in manifest_re.find_iter(word) {
                    let local = base.path().join(m.as_str().trim_start_matches('/'));
                    let out = crate::harness::comfy_batch()
                        .arg("plan")
                        .arg(&local)
                        .args(["--format", "csv"])
                        .stdin(Stdio::null())
                        .output()
                        .unwrap();
                    let stdout = String::from_utf8_lossy(&out.stdout);
                    assert!(
                        out.status.success(),
                        "{}: {}",
                        m.as_str(),
                        String::from_utf8_lossy(&out.stderr)
                    );
                    assert!(stdout.lines().count() > 1, "{stdout}");
                    planned += 1;
                }
            }
        }
    }
    assert_eq!(planned, 2, "the shards' and the merge's manifest");
}

#[test]
fn release_workflow_builds_every_target_with_checksums_and_publishes() {
    let text = std::fs::read_to_string(root().join(".github/workflows/release.yml")).unwrap();
    let workflow: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let on = &workflow["on"];
    assert!(
        on["push"]["tags"]
            .as_sequence()
            .is_some_and(|t| !t.is_empty()),
        "{on:?}"
    );
    for target in [
        "x86_64-unknown-linux-musl",
        "aarch64-unknown-linux-musl",
        "x86_64-apple-darwin",
        "aarch64-apple-darwin",
        "x86_64-pc-windows-msvc",
    ] {
        assert!(text.contains(target), "no {target}");
    }
    let jobs = workflow["jobs"].as_mapping().unwrap();
    let run_lines: String = jobs
        .values()
        .flat_map(|job| job["steps"].as_sequence().cloned().unwrap_or_default())
        .map(|step| serde_yaml::to_string(&step).unwrap())
        .collect();
    for needed in [
        "sha256",                      // a checksum beside each archive
        "PyO3/maturin-action",         // the wheels
        "manylinux",                   // portable Linux wheels
        "pypa/gh-action-pypi-publish", // the Python package index
        "docker/build-push-action",    // the container image
        "gh release",                  // the release page
        "CHANGELOG.md",                // its notes
    ] {
        assert!(run_lines.contains(needed), "no {needed}");
    }
    // The tag's version has its changelog entry.
    let changelog = std::fs::read_to_string(root().join("CHANGELOG.md")).unwrap();
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        changelog
            .lines()
            .any(|l| l.starts_with(&format!("## {version}"))),
        "CHANGELOG.md has no `## {version}` entry"
    );
}

#[test]
fn dockerfile_builds_then_runs_the_binary_as_a_non_root_user() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let stages: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(stages.len(), 2, "{stages:?}");
    assert!(stages[0].contains(" AS build"), "{}", stages[0]);
    let runtime = &text[text.rfind("\nFROM ").unwrap()..];
    for needed in [
        "ca-certificates",
        "COPY --from=build",
        "USER ",
        "ENTRYPOINT [\"comfy-batch\"]",
    ] {
        assert!(
            runtime.contains(needed),
            "the runtime stage has no {needed}"
        );
    }
    let user = runtime.lines().find(|l| l.starts_with("USER ")).unwrap();
    assert!(!user.contains("root") && user.trim() != "USER 0", "{user}");
    assert!(text.contains("cargo build --locked --release"));
}

/// The release workflow, parsed.
fn release_workflow() -> serde_yaml::Value {
    let text = std::fs::read_to_string(root().join(".github/workflows/release.yml")).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

#[test]
fn release_workflow_grants_write_only_to_the_jobs_that_publish() {
    let workflow = release_workflow();
    // Nothing written by default: the jobs that build run other people's
    // build scripts (crates', maturin's) and need to read only.
    let writes = |permissions: &serde_yaml::Value| -> Vec<String> {
        permissions
            .as_mapping()
            .map(|m| {
                m.iter()
                    .filter(|(_, v)| v.as_str() == Some("write"))
                    .map(|(k, _)| k.as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let top = &workflow["permissions"];
    assert!(
        top.is_mapping() && writes(top).is_empty(),
        "the workflow's default permissions write: {top:?}"
    );
    // Each write is the one its job's steps need.
    let needs = [
        ("contents", "gh release"),
        ("id-token", "pypa/gh-action-pypi-publish"),
        ("packages", "docker/build-push-action"),
    ];
    for (name, job) in workflow["jobs"].as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        let steps = serde_yaml::to_string(&job["steps"]).unwrap();
        for scope in writes(&job["permissions"]) {
            let (_, step) = needs
                .iter()
                .find(|(s, _)| *s == scope)
                .unwrap_or_else(|| panic!("{name}: {scope}: write, which no step needs"));
            assert!(
                steps.contains(step),
                "{name}: {scope}: write without {step}"
            );
        }
        for (scope, step) in needs {
            if steps.contains(step) {
                assert!(
                    writes(&job["permissions"]).iter().any(|s| s == scope),
                    "{name} runs {step} without {scope}: write"
                );
            }
        }
        // No token left in .git/config for the build to read.
        for step in job["steps"].as_sequence().unwrap() {
            if step["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("actions/checkout@"))
            {
                assert_eq!(
                    step["with"]["persist-credentials"].as_bool(),
                    Some(false),
                    "{name}: checkout keeps the token"
                );
            }
        }
    }
}

#[test]
fn release_notes_are_the_tags_own_dated_changelog_entry() {
    let workflow = release_workflow();
    let script = workflow["jobs"]["create-release"]["steps"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "Notes from CHANGELOG.md")
        .and_then(|s| s["run"].as_str())
        .expect("the create-release job writes the notes")
        .to_string();
    let changelog = "# Changelog\n\n\
        ## 0.1.10 (unreleased)\n\n- ten\n\n\
        ## 0.1.2 (2027-01-02)\n\n- two\n\n\
        ## 0.1.1 (2027-01-01)\n\n- one\n";
    let notes = |version: &str| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("CHANGELOG.md"), changelog).unwrap();
        let out = Command::new("bash")
            .args(["-e", "-c", &script])
            .env("VERSION", version)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let notes = std::fs::read_to_string(dir.path().join("notes.md")).unwrap_or_default();
        (
            out.status.success(),
            notes,
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    // 0.1.1's entry alone, not 0.1.10's, whose heading starts the same.
    let (ok, text, out) = notes("0.1.1");
    assert!(ok, "{out}");
    assert_eq!(text.trim(), "- one", "{text}");
    let (ok, text, out) = notes("0.1.2");
    assert!(ok && text.trim() == "- two", "{out}{text}");
    // An entry not yet dated, or none, stops the release with a reason.
    for version in ["0.1.10", "0.1.3"] {
        let (ok, _, out) = notes(version);
        assert!(!ok, "{version}: released");
        assert!(
            out.contains("::error::") && out.contains(version),
            "{version}: {out}"
        );
    }
}

#[test]
fn dockerfile_bases_are_pinned_and_share_one_debian_release() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let images: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("FROM "))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    // The build's Rust is a named release, not whatever `rust:1` is on the
    // day of the build, and at least the crate's rust-version.
    let re = regex_lite::Regex::new(r"^rust:1\.(\d+)(\.\d+)?-(\w+)$").unwrap();
    let caps = re
        .captures(images[0])
        .unwrap_or_else(|| panic!("the build image names no Rust release: {}", images[0]));
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let wanted: u32 = regex_lite::Regex::new(r#"(?m)^rust-version = "1\.(\d+)""#)
        .unwrap()
        .captures(&manifest)
        .unwrap()[1]
        .parse()
        .unwrap();
    assert!(caps[1].parse::<u32>().unwrap() >= wanted, "{}", images[0]);
    // The binary links the build image's glibc: the runtime is the same
    // Debian release.
    assert_eq!(images[1], format!("debian:{}-slim", &caps[3]), "{images:?}");
}

#[test]
fn release_workflow_publishes_nothing_until_every_build_succeeded() {
    // PyPI never takes a version twice and the image's `latest` moves: a
    // build that fails after they were published leaves a release that
    // cannot be redone under its tag. So they wait for every build.
    let workflow = release_workflow();
    let jobs = workflow["jobs"].as_mapping().unwrap();
    let builds: Vec<&str> = ["build-release", "build-wheels", "sdist"]
        .into_iter()
        .filter(|b| jobs.contains_key(*b))
        .collect();
    assert_eq!(builds.len(), 3, "{:?}", jobs.keys().collect::<Vec<_>>());
    for (name, job) in jobs {
        let steps = serde_yaml::to_string(&job["steps"]).unwrap();
        let publishes = ["pypa/gh-action-pypi-publish", "push: true"]
            .iter()
            .any(|s| steps.contains(s));
        if !publishes {
            continue;
        }
        let needs: Vec<&str> = match &job["needs"] {
            serde_yaml::Value::String(one) => vec![one.as_str()],
            more => more
                .as_sequence()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap())
                .collect(),
        };
        for build in &builds {
            assert!(
                needs.contains(build),
                "{}: publishes before {build} succeeded: needs {needs:?}",
                name.as_str().unwrap()
            );
        }
    }
}
