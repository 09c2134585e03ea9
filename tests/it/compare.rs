//! `comfy-batch compare A B` (issue #27 item 2): folders made by real runs
//! against simulators (one drifting, one failing, two on different
//! PyTorch versions), changed by hand only where a class needs it (an
//! image re-encoded, replaced or cut short), compared by the binary.

use std::path::Path;

use comfy_batch::sim::{SimConfig, SimSystem};

use crate::harness::{Output, Project, read_rows, sampler_jobs, sim, sim_with};

/// `run MANIFEST --output DIR --server URL --concurrency 1`, which must pass.
async fn run_into(p: &Project, manifest: &str, dir: &str, url: &str) {
    let out = p
        .cli(&[
            "run",
            manifest,
            "--output",
            dir,
            "--server",
            url,
            "--concurrency",
            "1",
        ])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
}

/// The image of the job with `seed` in `dir` (its path relative to `dir`).
fn image_of(dir: &Path, seed: &str) -> String {
    read_rows(&dir.join("runs.csv"))
        .into_iter()
        .rfind(|r| r.get("seed") == seed)
        .unwrap()
        .images()
        .pop()
        .unwrap()
}

fn job_id_of(dir: &Path, seed: &str) -> String {
    read_rows(&dir.join("runs.csv"))
        .into_iter()
        .find(|r| r.get("seed") == seed)
        .unwrap()
        .get("job_id")
        .to_string()
}

/// The same pixels in other bytes: decoded and written again with another
/// compression and filter.
fn reencode(path: &Path) {
    let before = std::fs::read(path).unwrap();
    let img = image::load_from_memory(&before).unwrap();
    let mut out = Vec::new();
    let enc = image::codecs::png::PngEncoder::new_with_quality(
        &mut out,
        image::codecs::png::CompressionType::Fast,
        image::codecs::png::FilterType::NoFilter,
    );
    img.write_with_encoder(enc).unwrap();
    assert_ne!(before, out, "re-encoding changes the bytes");
    std::fs::write(path, out).unwrap();
}

/// stderr's `error:` lines.
fn errors(out: &Output) -> Vec<&str> {
    out.stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect()
}

/// A (plain sim, seeds 1-6) and B (seed 2 drifting, seed 3 re-encoded,
/// seed 4 showing seed 1's image, seed 5 failed on rerun, seed 6 never run).
async fn six_classes(p: &Project) {
    let plain = sim().await;
    let drifting = sim_with(SimConfig {
        drift_seeds: vec![2],
        ..SimConfig::default()
    })
    .await;
    let failing = sim_with(SimConfig {
        fail_rate: 1.0,
        ..SimConfig::default()
    })
    .await;
    p.write("six.yaml", sampler_jobs(6));
    p.write("five.yaml", sampler_jobs(5));
    run_into(p, "six.yaml", "a", &plain.url()).await;
    run_into(p, "five.yaml", "b", &drifting.url()).await;
    let b = p.path("b");
    reencode(&b.join(image_of(&b, "3")));
    std::fs::copy(b.join(image_of(&b, "1")), b.join(image_of(&b, "4"))).unwrap();
    let rerun = p
        .cli(&[
            "rerun",
            "b/runs.csv",
            "--job",
            &job_id_of(&b, "5"),
            "--server",
            &failing.url(),
        ])
        .await;
    assert_eq!(rerun.code, 1, "{}", rerun.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_classifies_each_pair_and_exits_by_max_different() {
    let p = Project::new();
    six_classes(&p).await;
    let out = p.cli(&["compare", "a", "b"]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stdout.starts_with("environment: no difference\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("6 pairs: 1 identical, 1 same, 1 close, 1 different, 1 missing, 1 failed\n"),
        "{}",
        out.stdout
    );
    // Worst first: failed, missing, different, then close.
    let listed: Vec<&str> = out
        .stdout
        .lines()
        .skip_while(|l| *l != "worst first:")
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(listed, ["failed", "missing", "different", "close"]);

    // Three pairs are not identical, same or close.
    for (max, code) in [("2", 1), ("3", 0)] {
        let out = p
            .cli(&["compare", "a", "b", "--max-different", max, "-q"])
            .await;
        assert_eq!(out.code, code, "--max-different {max}: {}", out.stderr);
    }

    let json = p.cli(&["compare", "a", "b", "--format", "json"]).await;
    assert_eq!(json.code, 1, "{}", json.stderr);
    let records: Vec<serde_json::Value> = json
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let by_class = |class: &str| records.iter().find(|r| r["class"] == class).unwrap();
    // Equal pixels: PSNR is infinite, written null, and the class says so.
    assert!(by_class("same")["psnr_db"].is_null());
    assert_eq!(by_class("same")["ssim"], 1.0);
    let close = by_class("close")["psnr_db"].as_f64().unwrap();
    let different = by_class("different")["psnr_db"].as_f64().unwrap();
    assert!(close >= 40.0 && different < 40.0, "{close} {different}");
    assert!(by_class("different")["ssim"].as_f64().unwrap() < 1.0);
    assert!(by_class("missing")["b"].is_null());
    assert_eq!(by_class("failed")["b"]["status"], "failed");
    // A UUID in the simulator's error would change each run.
    let uuid =
        regex_lite::Regex::new(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
            .unwrap();
    insta::assert_snapshot!("compare_json", uuid.replace_all(&json.stdout, "[uuid]"));
    let csv = p.cli(&["compare", "a", "b", "--format", "csv"]).await;
    assert_eq!(csv.code, 1, "{}", csv.stderr);
    insta::assert_snapshot!("compare_csv", uuid.replace_all(&csv.stdout, "[uuid]"));

    // JUnit: a testcase per pair, the three bad ones failing.
    let out = p
        .cli(&["compare", "a", "b", "--junit", "reports/compare.xml", "-q"])
        .await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    let xml = std::fs::read_to_string(p.path("reports/compare.xml")).unwrap();
    assert_eq!(xml.matches("<testcase ").count(), 6, "{xml}");
    assert_eq!(xml.matches("<failure ").count(), 3, "{xml}");
    for class in ["different", "missing", "failed"] {
        assert!(xml.contains(&format!("type=\"{class}\"")), "{xml}");
    }

    // The job summary under GitHub Actions: the counts as a table.
    let summary = p.path("summary.md");
    let out = p
        .cli_env(
            &["compare", "a", "b", "-q"],
            &[("GITHUB_STEP_SUMMARY", Some(summary.to_str().unwrap()))],
        )
        .await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    let md = std::fs::read_to_string(&summary).unwrap();
    assert!(md.contains("| different | 1 |"), "{md}");
    assert!(
        md.contains("3 pair(s) not identical, same or close"),
        "{md}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_a_folder_with_itself_is_all_identical() {
    let sim = sim().await;
    let p = Project::new();
    p.write("jobs.yaml", sampler_jobs(3));
    run_into(&p, "jobs.yaml", "a", &sim.url()).await;
    let out = p.cli(&["compare", "a", "a/runs.csv"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("3 pairs: 3 identical, 0 same, 0 close, 0 different, 0 missing, 0 failed"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("worst first"), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_refuses_an_output_inside_a_compared_folder_by_any_spelling() {
    let sim = sim().await;
    let p = Project::new();
    p.write("jobs.yaml", sampler_jobs(2));
    run_into(&p, "jobs.yaml", "a", &sim.url()).await;
    run_into(&p, "jobs.yaml", "b", &sim.url()).await;
    let log = std::fs::read(p.path("a/runs.csv")).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(p.path("b"), p.path("link")).unwrap();
    let mut targets = vec![
        ("-o", "a/runs.csv"),
        ("-o", "b/../a/report/compare.html"),
        ("--junit", "b/compare.xml"),
    ];
    if cfg!(unix) {
        targets.push(("-o", "link/runs.csv"));
    }
    for (flag, target) in targets {
        let out = p.cli(&["compare", "a", "b", flag, target]).await;
        assert_eq!(out.code, 2, "{flag} {target}: {}", out.stderr);
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{}", out.stderr);
        assert!(
            lines[0].starts_with(&format!(
                "error: {flag} {target}: inside the compared folder"
            )),
            "{}",
            out.stderr
        );
    }
    assert_eq!(
        std::fs::read(p.path("a/runs.csv")).unwrap(),
        log,
        "the log kept"
    );
    assert!(!p.path("a/report/compare.html").exists());
    assert!(!p.path("b/compare.xml").exists());
    for dir in ["a", "b"] {
        let status = p.cli(&["status", dir]).await;
        assert_eq!(status.code, 0, "{}", status.stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_pairs_by_parameters_and_refuses_unknown_ones() {
    let sim = sim().await;
    let p = Project::new();
    let manifest = |cfg: &str| {
        format!(
            "version: 1\nworkflows:\n  t2i: workflows/t2i.json\njobs:\n  - name: fox\n    workflow: t2i\n    matrix:\n      cfg: [{cfg}]\n    seeds: [1, 2]\n"
        )
    };
    p.write("five.yaml", manifest("5"));
    p.write("six.yaml", manifest("6"));
    run_into(&p, "five.yaml", "a", &sim.url()).await;
    run_into(&p, "six.yaml", "b", &sim.url()).await;

    // Different manifests share no job id: said, not reported as missing.
    let out = p.cli(&["compare", "a", "b"]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(errors(&out).len(), 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("A and B share no job id") && out.stderr.contains("--by"),
        "{}",
        out.stderr
    );

    let out = p
        .cli(&["compare", "a", "b", "--by", "seed", "--format", "json"])
        .await;
    assert!(out.code == 0 || out.code == 1, "{}", out.stderr);
    let records: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 2);
    let rows_a = read_rows(&p.path("a/runs.csv"));
    let rows_b = read_rows(&p.path("b/runs.csv"));
    for r in &records {
        let seed_of = |rows: &[crate::harness::Row], id: &serde_json::Value| {
            rows.iter()
                .find(|row| row.get("job_id") == id.as_str().unwrap())
                .unwrap()
                .get("seed")
                .to_string()
        };
        assert_eq!(
            seed_of(&rows_a, &r["a"]["job_id"]),
            seed_of(&rows_b, &r["b"]["job_id"]),
            "paired by seed: {r}"
        );
        assert_eq!(
            r["params"],
            serde_json::json!([{"name": "cfg", "a": "5", "b": "6"}]),
            "{r}"
        );
    }

    // A name neither log has: exit 2, one line, with the nearest name.
    let out = p.cli(&["compare", "a", "b", "--by", "sed"]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(errors(&out).len(), 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("--by sed: no such parameter in A")
            && out.stderr.contains("did you mean 'seed'?"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_names_a_changed_environment_before_anything_else() {
    let system = |pytorch: &str| SimSystem {
        pytorch_version: pytorch.into(),
        ..SimSystem::default()
    };
    let old = sim_with(SimConfig {
        system: system("2.5.1"),
        ..SimConfig::default()
    })
    .await;
    let new = sim_with(SimConfig {
        system: system("2.6.0"),
        ..SimConfig::default()
    })
    .await;
    let p = Project::new();
    p.write("jobs.yaml", sampler_jobs(2));
    run_into(&p, "jobs.yaml", "a", &old.url()).await;
    run_into(&p, "jobs.yaml", "b", &new.url()).await;
    let out = p.cli(&["compare", "a", "b"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .starts_with("environment:\n  pytorch 2.5.1 → 2.6.0\n2 pairs: 2 identical"),
        "{}",
        out.stdout
    );
    // With records on stdout, the differences go to stderr.
    let out = p.cli(&["compare", "a", "b", "--format", "csv"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("environment: pytorch 2.5.1 → 2.6.0"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.starts_with("a_job_id,"), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_bad_input_is_one_line_or_a_pair_with_its_reason() {
    let sim = sim().await;
    let p = Project::new();
    p.write("jobs.yaml", sampler_jobs(2));
    run_into(&p, "jobs.yaml", "a", &sim.url()).await;
    run_into(&p, "jobs.yaml", "b", &sim.url()).await;
    // A truncated image on one side: different, with the reason.
    let b = p.path("b");
    let cut = b.join(image_of(&b, "2"));
    let bytes = std::fs::read(&cut).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let out = p.cli(&["compare", "a", "b"]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    let line = out
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("different"))
        .unwrap_or_else(|| panic!("{}", out.stdout));
    assert!(
        line.contains(&format!("B {}: cannot decode", image_of(&b, "2"))),
        "{line}"
    );

    let out = p.cli(&["compare", "a", "b", "--format", "xml"]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(errors(&out).len(), 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("invalid value 'xml' for '--format <FORMAT>': expected text, csv or json"),
        "{}",
        out.stderr
    );

    let out = p.cli(&["compare", "a", "nowhere"]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(errors(&out).len(), 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("B: nowhere: not a comfy-batch output folder"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_page_shows_both_images_of_each_pair_and_hostile_text_as_text() {
    const HOSTILE: &str = "</script><img src=x onerror=alert(1)>";
    let plain = sim().await;
    let drifting = sim_with(SimConfig {
        drift_seeds: vec![2],
        ..SimConfig::default()
    })
    .await;
    let p = Project::new();
    let manifest = |prompt: &str| {
        format!(
            "version: 1\nworkflows:\n  t2i: workflows/t2i.json\njobs:\n  - name: fox\n    workflow: t2i\n    matrix:\n      prompt: [{}]\n    seeds: [1, 2, 3]\n",
            serde_json::to_string(prompt).unwrap()
        )
    };
    p.write("a.yaml", manifest("a fox"));
    p.write("b.yaml", manifest(HOSTILE));
    run_into(&p, "a.yaml", "a", &plain.url()).await;
    run_into(&p, "b.yaml", "b", &drifting.url()).await;
    let out = p
        .cli(&[
            "compare",
            "a",
            "b",
            "--by",
            "seed",
            "-o",
            "cmp/page.html",
            "-q",
        ])
        .await;
    assert!(out.code == 0 || out.code == 1, "{}", out.stderr);
    let page = p.path("cmp/page.html");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        !html.contains("src=\"http") && !html.contains("src=\"file"),
        "no network, no files"
    );

    let dom = crate::gallery::dump_dom(&page, "");
    let pairs = crate::gallery::elements(&dom, "article", "data-pair");
    assert_eq!(pairs.len(), 3, "{dom}");
    let images = crate::gallery::elements(&dom, "img", "data-side");
    for side in ["a", "b"] {
        let shown: Vec<_> = images
            .iter()
            .filter(|i| i["data-side"] == side && i["src"].starts_with("data:image/jpeg;base64,"))
            .collect();
        assert_eq!(shown.len(), 3, "an {side} image per pair");
    }
    let heat = images
        .iter()
        .filter(|i| i["data-side"] == "diff" && i["src"].starts_with("data:image/png;base64,"));
    assert_eq!(heat.count(), 3, "a heat map per pair of differing images");
    // The hostile prompt is a parameter that differs: shown as text in B's
    // cell, never as an element.
    assert!(
        crate::gallery::elements(&dom, "img", "onerror").is_empty(),
        "no injected element"
    );
    let cells = crate::gallery::elements(&dom, "td", "data-side");
    assert_eq!(cells.iter().filter(|c| c["data-side"] == "b").count(), 3);
    assert!(
        dom.contains("&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;"),
        "the prompt as text"
    );

    // Filtered by class through the fragment: the others are hidden.
    let classes: Vec<String> = pairs.iter().map(|p| p["data-class"].clone()).collect();
    let dom = crate::gallery::dump_dom(&page, "class=missing");
    let shown = crate::gallery::elements(&dom, "article", "data-pair")
        .into_iter()
        .filter(|a| !a.contains_key("hidden"))
        .count();
    assert_eq!(shown, 0, "no pair is missing: {classes:?}");
    let first = &classes[0];
    let dom = crate::gallery::dump_dom(&page, &format!("class={first}"));
    let visible: Vec<String> = crate::gallery::elements(&dom, "article", "data-pair")
        .into_iter()
        .filter(|a| !a.contains_key("hidden"))
        .map(|a| a["data-class"].clone())
        .collect();
    assert_eq!(
        visible.len(),
        classes.iter().filter(|c| *c == first).count()
    );
    assert!(visible.iter().all(|c| c == first));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_verify_compares_with_the_logged_outputs_and_fails_on_a_changed_image() {
    let sim = sim().await;
    let p = Project::new();
    p.write("jobs.yaml", sampler_jobs(3));
    run_into(&p, "jobs.yaml", "out", &sim.url()).await;
    let url = sim.url();
    // Into the log's own folder it would replace what it compares with.
    let out = p
        .cli(&["rerun", "out/runs.csv", "--verify", "--server", &url])
        .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("--verify") && out.stderr.contains("--output"),
        "{}",
        out.stderr
    );

    // The deterministic simulator makes the same bytes again.
    let out = p
        .cli(&[
            "rerun",
            "out/runs.csv",
            "--verify",
            "--output",
            "again",
            "--server",
            &url,
        ])
        .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("verify: environment: no difference\n")
            && out.stdout.contains("3 pairs: 3 identical"),
        "{}",
        out.stdout
    );

    // A logged image planted by hand is not what the rerun makes.
    let dir = p.path("out");
    std::fs::copy(dir.join(image_of(&dir, "1")), dir.join(image_of(&dir, "2"))).unwrap();
    let id = job_id_of(&dir, "2");
    let out = p
        .cli(&[
            "rerun",
            "out/runs.csv",
            "--job",
            &id,
            "--verify",
            "--output",
            "third",
            "--server",
            &url,
        ])
        .await;
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("1 pairs: 0 identical, 0 same, 0 close, 1 different"),
        "only the job rerun is compared: {}",
        out.stdout
    );
}
