//! Every output kind a workflow makes lands in the output folder: images,
//! animations, video, audio, latents, 3D, a custom pack's `gifs`, and texts;
//! byte for byte as the server made them, named from our ids, each once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use comfy_batch::sim::{SimConfig, SimHandle};

use crate::harness::{Project, Row, sim_with};

/// Two captions, so two jobs, each running every saver of `kinds.json`.
const KINDS: &str = r#"version: 1
jobs:
  - name: kinds
    workflow: kinds
    matrix:
      "Caption.value": ["a red fox, in the snow", "a lighthouse at dusk"]
"#;

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The server's files of one job (under its per-job prefix), by content;
/// with `previews`, the temp folder's files too (one cached preview serves
/// both jobs).
fn server_files(sim: &SimHandle, job_id: &str, previews: bool) -> Vec<Vec<u8>> {
    let dir = sim.output_dir().join("comfy-batch").join(&job_id[..2]);
    let mut files: Vec<PathBuf> = files_under(&dir)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(job_id))
        })
        .collect();
    if previews {
        files.extend(files_under(sim.temp_dir()));
    }
    let mut out: Vec<Vec<u8>> = files
        .into_iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    out.sort();
    out
}

fn extensions(row: &Row) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for image in row.images() {
        let ext = image.rsplit('.').next().unwrap().to_string();
        *out.entry(ext).or_insert(0) += 1;
    }
    out
}

fn expected_extensions() -> BTreeMap<String, usize> {
    [
        ("png", 3),
        ("webp", 1),
        ("mp4", 2), // SaveVideo and the VHS stand-in
        ("webm", 1),
        ("flac", 1),
        ("mp3", 1),
        ("opus", 1),
        ("latent", 1),
        ("glb", 1),
        ("txt", 1),
    ]
    .into_iter()
    .map(|(e, n)| (e.to_string(), n))
    .collect()
}

/// Runs `KINDS` against a sim with `config`; checks every row is ok, every
/// file is the server's bytes, and returns the rows.
async fn run_kinds(config: SimConfig, extra: &[&str]) -> (Project, SimHandle, Vec<Row>) {
    let sim = sim_with(config).await;
    let p = Project::new();
    p.write("kinds.yaml", KINDS);
    let out = p.run("kinds.yaml", &[&sim], extra).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows = p.rows();
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert_eq!(row.get("status"), "ok", "{row:?}");
        let id = row.get("job_id");
        let mut ours: Vec<Vec<u8>> = Vec::new();
        for image in row.images() {
            let name = image.strip_prefix("images/").expect("in images/");
            assert!(name.starts_with(&format!("{id}_")), "{name}");
            let bytes = std::fs::read(p.out().join(&image)).unwrap();
            if !name.ends_with(".txt") {
                ours.push(bytes);
            }
        }
        ours.sort();
        assert_eq!(
            ours,
            server_files(&sim, id, extra.contains(&"--previews")),
            "{id}: the server's bytes, each once"
        );
    }
    (p, sim, rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_output_kind_lands_byte_for_byte_with_its_text() {
    let (p, sim, rows) = run_kinds(SimConfig::default(), &[]).await;
    for row in &rows {
        assert_eq!(extensions(row), expected_extensions(), "{row:?}");
        let caption = row.get("Caption.value");
        assert_eq!(row.get("text"), caption);
        let txt = row
            .images()
            .into_iter()
            .find(|i| i.ends_with(".txt"))
            .unwrap();
        assert_eq!(txt, format!("images/{}_13_0.txt", row.get("job_id")));
        assert_eq!(std::fs::read_to_string(p.out().join(txt)).unwrap(), caption);
    }
    // Every server file sits under the per-job prefix; the preview (temp)
    // was not kept without --previews.
    for file in files_under(sim.output_dir()) {
        let rel = file.strip_prefix(sim.output_dir()).unwrap();
        assert!(rel.starts_with("comfy-batch"), "{}", rel.display());
    }
    assert!(!files_under(sim.temp_dir()).is_empty());
    // The animated WebP is a real one.
    let webp = rows[0]
        .images()
        .into_iter()
        .find(|i| i.ends_with(".webp"))
        .unwrap();
    let bytes = std::fs::read(p.out().join(webp)).unwrap();
    assert_eq!(&bytes[..4], b"RIFF");
    assert_eq!(&bytes[8..16], b"WEBPVP8X");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previews_of_any_kind_are_kept_with_the_flag() {
    let (_p, _sim, rows) = run_kinds(SimConfig::default(), &["--previews"]).await;
    let mut want = expected_extensions();
    *want.get_mut("flac").unwrap() += 1; // PreviewAudio
    for row in &rows {
        assert_eq!(extensions(row), want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_listed_under_two_keys_is_saved_once() {
    let (_p, _sim, rows) = run_kinds(
        SimConfig {
            duplicate_outputs: true,
            ..SimConfig::default()
        },
        &[],
    )
    .await;
    for row in &rows {
        assert_eq!(extensions(row), expected_extensions());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_of_every_kind_stay_inside_the_output_folder() {
    let (p, _sim, rows) = run_kinds(
        SimConfig {
            hostile_filenames: true,
            ..SimConfig::default()
        },
        &[],
    )
    .await;
    for row in &rows {
        assert_eq!(extensions(row), expected_extensions());
    }
    // Nothing beside the output folder's own layout was written.
    for file in files_under(p.dir.path()) {
        let rel = file.strip_prefix(p.dir.path()).unwrap();
        let top = rel.components().next().unwrap().as_os_str();
        assert!(
            ["out", "workflows", "kinds.yaml"].contains(&top.to_str().unwrap()),
            "{}",
            rel.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_output_entries_fail_the_job_naming_the_node() {
    let sim = sim_with(SimConfig {
        malformed_outputs: true,
        ..SimConfig::default()
    })
    .await;
    let p = Project::new();
    p.write("kinds.yaml", KINDS);
    let out = p.run("kinds.yaml", &[&sim], &[]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    for row in p.rows() {
        assert_eq!(row.get("status"), "failed");
        assert_eq!(row.get("images"), "");
        let error = row.get("error");
        assert!(
            error.starts_with("node ") && error.contains("'subfolder' is null"),
            "{error}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_announced_while_the_socket_was_down_come_from_the_history() {
    // Sockets dropped every few messages: some `executed` messages of every
    // kind are lost and the history supplies them.
    let (_p, _sim, rows) = run_kinds(
        SimConfig {
            drop_ws_every: Some(7),
            ..SimConfig::default()
        },
        &[],
    )
    .await;
    for row in &rows {
        assert_eq!(extensions(row), expected_extensions(), "{row:?}");
        assert_eq!(row.get("text"), row.get("Caption.value"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_texts_are_files_and_leave_the_text_column_empty() {
    let sim = sim_with(SimConfig::default()).await;
    let p = Project::new();
    let mut wf: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.path("workflows/kinds.json")).unwrap())
            .unwrap();
    wf["21"] = serde_json::json!({"class_type": "PreviewAny", "inputs": {"source": "second, line\nbreak"}});
    p.write("workflows/kinds.json", wf.to_string());
    p.write("kinds.yaml", KINDS);
    let out = p.run("kinds.yaml", &[&sim], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    for row in p.rows() {
        assert_eq!(row.get("text"), "");
        let texts: Vec<String> = row
            .images()
            .into_iter()
            .filter(|i| i.ends_with(".txt"))
            .collect();
        assert_eq!(texts.len(), 2);
        let second = format!("images/{}_21_0.txt", row.get("job_id"));
        assert!(texts.contains(&second), "{texts:?}");
        let second = std::fs::read_to_string(p.out().join(second)).unwrap();
        assert_eq!(second, "second, line\nbreak");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_written_before_the_text_column_resumes_and_keeps_its_columns() {
    let sim = sim_with(SimConfig::default()).await;
    let p = Project::new();
    p.write("kinds.yaml", KINDS);
    let out = p.run("kinds.yaml", &[&sim], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    // Rewrite the log as the previous version wrote it: no `text` column.
    let log = p.out().join("runs.csv");
    let mut reader = csv::Reader::from_path(&log).unwrap();
    let mut writer = csv::Writer::from_writer(Vec::new());
    let header = reader.headers().unwrap().clone();
    assert_eq!(header.iter().next_back(), Some("text"));
    writer
        .write_record(header.iter().take(header.len() - 1))
        .unwrap();
    for record in reader.records() {
        let record = record.unwrap();
        writer
            .write_record(record.iter().take(header.len() - 1))
            .unwrap();
    }
    std::fs::write(&log, writer.into_inner().unwrap()).unwrap();
    // One job's audio is gone: that job runs again, the other is skipped.
    let rows = p.rows();
    let lost = rows[0]
        .images()
        .into_iter()
        .find(|i| i.ends_with(".flac"))
        .unwrap();
    std::fs::remove_file(p.out().join(lost)).unwrap();
    let out = p.run("kinds.yaml", &[&sim], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = std::fs::read_to_string(&log).unwrap();
    let widths: Vec<usize> = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes())
        .records()
        .map(|r| r.unwrap().len())
        .collect();
    assert_eq!(widths.len(), 4, "header, two rows, one new row: {text}");
    assert!(widths.iter().all(|w| *w == widths[0]), "{widths:?}");
    let rows = p.rows();
    assert_eq!(rows[2].get("job_id"), rows[0].get("job_id"));
    assert_eq!(rows[2].get("status"), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_text_is_kept_and_its_job_is_not_run_again() {
    // A caption node that showed "" (an empty prompt, a captioner with
    // nothing to say) leaves a 0-byte .txt: resume must still count the job
    // done, not run it again on every resume.
    let sim = sim_with(SimConfig::default()).await;
    let p = Project::new();
    p.write(
        "kinds.yaml",
        r#"version: 1
jobs:
  - name: kinds
    workflow: kinds
    matrix:
      "Caption.value": ["", "a lighthouse at dusk"]
"#,
    );
    let out = p.run("kinds.yaml", &[&sim], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows = p.rows();
    assert_eq!(rows.len(), 2);
    let empty = rows
        .iter()
        // Set empty on purpose: logged `""`, not the empty cell of unset.
        .find(|r| r.get("Caption.value") == "\"\"")
        .unwrap();
    assert_eq!(empty.get("status"), "ok");
    let txt = empty
        .images()
        .into_iter()
        .find(|i| i.ends_with(".txt"))
        .expect("the empty text is listed");
    assert_eq!(std::fs::read(p.out().join(txt)).unwrap(), b"");
    let out = p.run("kinds.yaml", &[&sim], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(p.rows().len(), 2, "nothing ran again: {}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_survives_drops_500s_and_restarts_each_job_once() {
    // The merge seam: JobOutputs carried through lost sockets (history
    // outputs), retried downloads and a server that forgets its prompts.
    let sim = sim_with(SimConfig {
        seed: 5,
        drop_ws_every: Some(11),
        http_500_rate: 0.15,
        restart_after: Some(3),
        view_delay_ms: 5,
        duplicate_outputs: true,
        ..SimConfig::default()
    })
    .await;
    let p = Project::new();
    let captions: Vec<String> = (0..6)
        .map(|i| format!("\"caption {i}, \\\"q\\\"\""))
        .collect();
    p.write(
        "kinds.yaml",
        format!(
            "version: 1\njobs:\n  - name: kinds\n    workflow: kinds\n    matrix:\n      \"Caption.value\": [{}]\n",
            captions.join(", ")
        ),
    );
    let out = p
        .run(
            "kinds.yaml",
            &[&sim],
            &["--concurrency", "3", "--retries", "10"],
        )
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    for row in p.assert_each_job_ok_once(6) {
        assert_eq!(extensions(&row), expected_extensions(), "{row:?}");
        assert_eq!(row.get("text"), row.get("Caption.value"), "{row:?}");
    }
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_downloading_every_kind_then_resume_collects_each_once() {
    // Slow downloads of many files per job: the kill lands with prompts
    // finished on the server and their files half fetched.
    let sim = sim_with(SimConfig {
        view_delay_ms: 40,
        ..SimConfig::default()
    })
    .await;
    let p = Project::new();
    let captions: Vec<String> = (0..6).map(|i| format!("\"caption {i}\"")).collect();
    p.write(
        "kinds.yaml",
        format!(
            "version: 1\njobs:\n  - name: kinds\n    workflow: kinds\n    matrix:\n      \"Caption.value\": [{}]\n",
            captions.join(", ")
        ),
    );
    let mut run = p.spawn("kinds.yaml", &[&sim], &["--concurrency", "3"]);
    crate::harness::wait_for("a row in runs.csv", 60, || p.row_count() >= 1).await;
    run.signal(libc::SIGKILL);
    assert_eq!(run.exit(30).await, -libc::SIGKILL);
    assert!(p.row_count() < 6, "killed too late");
    let out = p.run("kinds.yaml", &[&sim], &["--concurrency", "3"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    for row in p.assert_each_job_ok_once(6) {
        assert_eq!(extensions(&row), expected_extensions(), "{row:?}");
        assert_eq!(row.get("text"), row.get("Caption.value"), "{row:?}");
    }
    assert_eq!(
        sim.stats().prompts_executed,
        6,
        "each prompt ran once on the server\n{}",
        out.stderr
    );
}

/// A node that names its own files: pages, scripts, programs, an
/// upper-case PNG, a double extension, none at all, dots in the name.
const NAMED: &str = r#"{
  "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": 16711680}, "_meta": {"title": "Canvas"}},
  "2": {"class_type": "SimNamedFiles", "inputs": {"images": ["1", 0], "filenames": "page.html\nlogo.svg\nrun.sh\nsetup.exe\nstart.bat\nFOX.PNG\nx.png.html\nnoext\nclip.v2.MP4"}}
}"#;

const NAMED_MANIFEST: &str = r#"version: 1
workflows:
  named: workflows/named.json
jobs:
  - name: named
    workflow: named
"#;

/// What each server name of [`NAMED`] is saved as, in order.
const NAMED_SAVED: [(&str, &str); 9] = [
    ("page.html", "bin"),
    ("logo.svg", "bin"),
    ("run.sh", "bin"),
    ("setup.exe", "bin"),
    ("start.bat", "bin"),
    ("FOX.PNG", "png"),
    ("x.png.html", "bin"),
    ("noext", "bin"),
    ("clip.v2.MP4", "mp4"),
];

/// Extensions a browser may open as a page or a system may run.
const NEVER: [&str; 7] = [".html", ".htm", ".svg", ".sh", ".exe", ".bat", ".xhtml"];

/// The report's data: each job's files as `(rel, kind)`.
fn report_files(index: &Path) -> Vec<(String, String)> {
    crate::gallery::report_rows(index.parent().unwrap())
        .iter()
        .flat_map(|job| job[6].as_array().unwrap().clone())
        .map(|f| (f[0].as_str().unwrap().into(), f[1].as_str().unwrap().into()))
        .collect()
}

/// Every link of the report's viewer for `job`: `(href, has download)`.
fn viewer_links(index: &Path, job: &str) -> Vec<(String, bool)> {
    let dom = crate::gallery::dump_dom(index, &format!("job={job}"));
    let a = regex_lite::Regex::new(r#"<a ([^>]*)>"#).unwrap();
    let href = regex_lite::Regex::new(r#"href="([^"]*)""#).unwrap();
    a.captures_iter(&dom)
        .filter_map(|c| {
            let attrs = c[1].to_string();
            let h = href.captures(&attrs)?[1].to_string();
            Some((h, attrs.contains("download")))
        })
        .collect()
}

/// The member names of every shard of a WebDataset export in `dir`.
fn shard_members(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for shard in files_under(dir) {
        if shard.extension().is_some_and(|e| e == "tar") {
            let mut archive = tar::Archive::new(std::fs::File::open(&shard).unwrap());
            for entry in archive.entries().unwrap() {
                names.push(
                    entry
                        .unwrap()
                        .path()
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_extensions_are_kept_and_neither_report_nor_shards_offer_a_page() {
    let sim = sim_with(SimConfig::default()).await;
    let p = Project::new();
    p.write("workflows/named.json", NAMED);
    p.write("named.yaml", NAMED_MANIFEST);
    let out = p.run("named.yaml", &[&sim], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows = p.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get("status"), "ok", "{:?}", rows[0]);
    let id = rows[0].get("job_id").to_string();
    let want: Vec<String> = NAMED_SAVED
        .iter()
        .enumerate()
        .map(|(n, (_, ext))| format!("images/{id}_2_{n}.{ext}"))
        .collect();
    assert_eq!(
        rows[0].images(),
        want,
        "runs.csv names each file by the allow-list"
    );
    // Each downloaded whole, byte for byte, and nothing else saved.
    for ((server, _), rel) in NAMED_SAVED.iter().zip(&want) {
        assert_eq!(
            std::fs::read(p.out().join(rel)).unwrap(),
            std::fs::read(sim.output_dir().join("named").join(server)).unwrap(),
            "{server} → {rel}"
        );
    }
    let mut saved: Vec<String> = files_under(&p.out().join("images"))
        .iter()
        .map(|f| format!("images/{}", f.file_name().unwrap().to_string_lossy()))
        .collect();
    saved.sort();
    let mut sorted = want.clone();
    sorted.sort();
    assert_eq!(saved, sorted);

    // The report: a PNG is an image, an MP4 a video, the rest downloads;
    // no link leads to a page.
    let index = p.out().join("report/index.html");
    let kinds: BTreeMap<String, String> = report_files(&index).into_iter().collect();
    for (rel, (_, ext)) in want.iter().zip(NAMED_SAVED) {
        let kind = match ext {
            "png" => "image",
            "mp4" => "video",
            _ => "file",
        };
        assert_eq!(kinds[rel], kind, "{rel}");
    }
    let links = viewer_links(&index, &id);
    assert!(links.iter().any(|(h, _)| h.ends_with(".bin")), "{links:?}");
    for (href, download) in &links {
        assert!(
            !NEVER.iter().any(|e| href.to_ascii_lowercase().ends_with(e)),
            "{href}"
        );
        if href.ends_with(".bin") {
            assert!(download, "{href} is offered as a download");
        }
    }

    // The shards hold `.bin` members, never a page or a program.
    let e = p
        .cli(&["export", "out", "--format", "webdataset", "--to", "wds"])
        .await;
    assert_eq!(e.code, 0, "{}", e.stderr);
    let members = shard_members(&p.path("wds"));
    let exts: Vec<&str> = members
        .iter()
        .filter(|m| !m.ends_with(".json") && !m.ends_with(".txt"))
        .map(|m| m.rsplit_once('.').unwrap().1)
        .collect();
    assert_eq!(
        exts,
        [
            "bin", "bin", "bin", "bin", "bin", "png", "bin", "bin", "mp4"
        ],
        "{members:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_an_earlier_version_saved_under_the_servers_extension_are_resumed_not_linked() {
    // An earlier version saved `page.html` as `<id>_2_0.html`: the rerun
    // keeps those files and that row (no second copy as `.bin`), the
    // report does not link them and an export ships them as `.bin`.
    let sim = sim_with(SimConfig::default()).await;
    let p = Project::new();
    p.write("workflows/named.json", NAMED);
    p.write("named.yaml", NAMED_MANIFEST);
    assert_eq!(p.run("named.yaml", &[&sim], &[]).await.code, 0);
    let id = p.rows()[0].get("job_id").to_string();
    let log = p.out().join("runs.csv");
    let mut text = std::fs::read_to_string(&log).unwrap();
    for (n, old) in [(0, "html"), (1, "svg"), (2, "sh")] {
        let new = format!("images/{id}_2_{n}.bin");
        let old = format!("images/{id}_2_{n}.{old}");
        std::fs::rename(p.out().join(&new), p.out().join(&old)).unwrap();
        text = text.replace(&new, &old);
    }
    std::fs::write(&log, &text).unwrap();
    let before = files_under(&p.out().join("images"));

    let out = p.run("named.yaml", &[&sim], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(&log).unwrap(), text, "no row added");
    assert_eq!(
        files_under(&p.out().join("images")),
        before,
        "no file added or lost"
    );

    let index = p.out().join("report/index.html");
    let kinds: BTreeMap<String, String> = report_files(&index).into_iter().collect();
    for old in ["html", "svg", "sh"] {
        let rel = kinds
            .keys()
            .find(|k| k.ends_with(&format!(".{old}")))
            .unwrap();
        assert_eq!(kinds[rel], "unlinked", "{rel}");
    }
    let dom = crate::gallery::dump_dom(&index, &format!("job={id}"));
    assert!(dom.contains("not linked"), "the viewer says why");
    for (href, _) in viewer_links(&index, &id) {
        assert!(!NEVER.iter().any(|e| href.ends_with(e)), "{href}");
    }
    let e = p
        .cli(&["export", "out", "--format", "webdataset", "--to", "wds"])
        .await;
    assert_eq!(e.code, 0, "{}", e.stderr);
    let members = shard_members(&p.path("wds"));
    assert!(
        members
            .iter()
            .all(|m| !NEVER.iter().any(|e| m.ends_with(e))),
        "{members:?}"
    );
    assert_eq!(members.iter().filter(|m| m.ends_with(".bin")).count(), 7);
}

/// A 4 MB latent: larger than a download held in memory (1 MB), so written
/// to its file as it arrives.
const BIG_LATENT: &str = r#"{
  "1": {"class_type": "EmptyLatentImage", "inputs": {"width": 2048, "height": 2048, "batch_size": 4}},
  "2": {"class_type": "SaveLatent", "inputs": {"samples": ["1", 0], "filename_prefix": "latents/big"}}
}"#;

const BIG_JOB: &str =
    "version: 1\nworkflows:\n  big: workflows/big.json\njobs:\n  - name: big\n    workflow: big\n";

/// Issue #24 item 4: a large output streamed to disk is the server's file
/// byte for byte; one cut mid-way (the job's `--timeout` during a stalled
/// download, half of it written) leaves no file, not even a temporary one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_output_streamed_to_disk_is_whole_or_absent() {
    let sim = sim_with(SimConfig::default()).await;
    let p = Project::new();
    p.write("workflows/big.json", BIG_LATENT);
    p.write("big.yaml", BIG_JOB);
    let out = p.run("big.yaml", &[&sim], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows = p.rows();
    let images = rows[0].images();
    assert_eq!(images.len(), 1, "{rows:?}");
    let ours = std::fs::read(p.out().join(&images[0])).unwrap();
    let theirs: Vec<Vec<u8>> = files_under(sim.output_dir())
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "latent"))
        .map(|f| std::fs::read(f).unwrap())
        .collect();
    assert_eq!(theirs.len(), 1);
    assert!(ours.len() > 4 << 20, "{}", ours.len());
    assert!(ours == theirs[0], "the server's bytes");

    let stalling = sim_with(SimConfig {
        view_stall_ms: 20_000,
        ..SimConfig::default()
    })
    .await;
    let p = Project::new();
    p.write("workflows/big.json", BIG_LATENT);
    p.write("big.yaml", BIG_JOB);
    let out = p.run("big.yaml", &[&stalling], &["--timeout", "2s"]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    let rows = p.rows();
    assert_eq!(rows[0].get("status"), "timeout", "{rows:?}");
    assert!(
        rows[0].get("error").contains("download of node 2 file "),
        "{rows:?}"
    );
    assert_eq!(files_under(&p.out().join("images")), Vec::<PathBuf>::new());
}
