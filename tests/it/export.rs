//! `comfy-batch export`: a real run's folder as imagefolder and WebDataset,
//! checked file by file against runs.csv; deterministic tars; bad input
//! refused with nothing written.

use std::collections::BTreeMap;
use std::path::Path;

use crate::harness::{Project, Row, read_rows, sim};

/// Six tiny jobs that succeed and two the server rejects (width 0).
pub const MIXED: &str = r#"version: 1
workflows:
  tiny: workflows/tiny.json
jobs:
  - name: colors
    workflow: tiny
    matrix:
      "Canvas.color": [255, 65280, 16711680]
      "1.width": [16, 24]
  - name: bad
    workflow: tiny
    matrix:
      "Canvas.color": [1, 2]
      "1.width": [0]
"#;

/// Runs [`MIXED`] into `out` (exit 1: two rejected).
pub async fn mixed_run(p: &Project) {
    let s = sim().await;
    p.write("mixed.yaml", MIXED);
    let out = p.run("mixed.yaml", &[&s], &["--no-check"]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
}

/// The newest row per job id.
pub fn newest(rows: &[Row]) -> BTreeMap<String, Row> {
    rows.iter()
        .map(|r| (r.get("job_id").to_string(), r.clone()))
        .collect()
}

fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imagefolder_holds_every_ok_image_with_one_metadata_row_each() {
    let p = Project::new();
    mixed_run(&p).await;
    let out = p
        .cli(&["export", "out", "--format", "imagefolder", "--to", "ds"])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("exported 6 ok job(s) as 6 sample(s)"),
        "{}",
        out.stdout
    );
    let rows = newest(&p.rows());
    let text = std::fs::read_to_string(p.path("ds/metadata.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6);
    for meta in &lines {
        let obj = meta.as_object().unwrap();
        assert_eq!(
            obj.keys().next().unwrap(),
            "file_name",
            "file_name first: {meta}"
        );
        let id = obj["job_id"].as_str().unwrap();
        let row = &rows[id];
        assert_eq!(row.get("status"), "ok");
        assert_eq!(obj["job"], row.get("job"));
        // Typed per column: integers stay integers.
        assert_eq!(
            obj["Canvas.color"].as_i64().unwrap().to_string(),
            row.get("Canvas.color")
        );
        assert_eq!(
            obj["1.width"].as_i64().unwrap().to_string(),
            row.get("1.width")
        );
        let file = obj["file_name"].as_str().unwrap();
        let image = &row.images()[0];
        assert!(image.ends_with(file), "{image} vs {file}");
        assert_eq!(
            std::fs::read(p.path("ds").join(file)).unwrap(),
            std::fs::read(p.out().join(image)).unwrap()
        );
    }
    // Only ok jobs; nothing else but the files, the metadata and the marker.
    assert_eq!(list(&p.path("ds")).len(), 6 + 2);
    // A second export replaces the first whole, and removes what an
    // interrupted one left (marked as export marks its staging folder).
    p.write(".ds.export-interrupted/.comfy-batch-export", "");
    p.write(".ds.export-interrupted/half.png", "half");
    let again = p
        .cli(&[
            "export",
            "out",
            "--format",
            "imagefolder",
            "--to",
            "ds",
            "--where",
            "1.width=16",
        ])
        .await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(
        std::fs::read_to_string(p.path("ds/metadata.jsonl"))
            .unwrap()
            .lines()
            .count(),
        3
    );
    assert_eq!(list(&p.path("ds")).len(), 3 + 2);
    assert!(
        list(p.dir.path()).iter().all(|n| !n.contains(".export-")),
        "{:?}",
        list(p.dir.path())
    );
    let none = p
        .cli(&[
            "export",
            "out",
            "--format",
            "imagefolder",
            "--to",
            "none",
            "--where",
            "1.width=99",
        ])
        .await;
    // An empty dataset is refused (issue #23): one line, nothing written.
    assert_eq!(none.code, 2, "{}", none.stderr);
    assert_eq!(none.stderr.lines().count(), 1, "{}", none.stderr);
    assert!(
        none.stderr
            .contains("nothing to export: no job whose newest row is ok and matches --where"),
        "{}",
        none.stderr
    );
    assert!(!p.path("none").exists());
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imagefolder_files_are_hard_links() {
    use std::os::unix::fs::MetadataExt;
    let p = Project::new();
    mixed_run(&p).await;
    assert_eq!(
        p.cli(&["export", "out", "--format", "imagefolder", "--to", "ds"])
            .await
            .code,
        0
    );
    let row = p
        .rows()
        .into_iter()
        .find(|r| r.get("status") == "ok")
        .unwrap();
    let image = row.images()[0].clone();
    let name = Path::new(&image).file_name().unwrap();
    let a = std::fs::metadata(p.out().join(&image)).unwrap();
    let b = std::fs::metadata(p.path("ds").join(name)).unwrap();
    assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webdataset_shards_are_deterministic_and_complete() {
    let p = Project::new();
    mixed_run(&p).await;
    for to in ["wds1", "wds2"] {
        let out = p
            .cli(&[
                "export",
                "out",
                "--format",
                "webdataset",
                "--to",
                to,
                "--shard-size",
                "4",
            ])
            .await;
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    assert_eq!(
        list(&p.path("wds1")),
        [
            ".comfy-batch-export",
            "shard-000000.tar",
            "shard-000001.tar"
        ]
    );
    for shard in ["shard-000000.tar", "shard-000001.tar"] {
        assert_eq!(
            std::fs::read(p.path("wds1").join(shard)).unwrap(),
            std::fs::read(p.path("wds2").join(shard)).unwrap(),
            "{shard} differs between two exports of one folder"
        );
    }
    let rows = newest(&p.rows());
    let mut samples = 0;
    for shard in ["shard-000000.tar", "shard-000001.tar"] {
        let file = std::fs::File::open(p.path("wds1").join(shard)).unwrap();
        let mut archive = tar::Archive::new(file);
        let mut names = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let h = entry.header();
            assert_eq!(
                (h.mtime().unwrap(), h.uid().unwrap(), h.gid().unwrap()),
                (0, 0, 0)
            );
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
            if let Some(key) = name.strip_suffix(".json") {
                let meta: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                let row = &rows[meta["job_id"].as_str().unwrap()];
                assert_eq!(row.get("status"), "ok");
                assert_eq!(
                    meta["params"]["Canvas.color"].as_i64().unwrap().to_string(),
                    row.get("Canvas.color")
                );
                assert!(row.images()[0].contains(key), "{key} vs {:?}", row.images());
                samples += 1;
            }
            names.push(name);
        }
        // Each sample's files are adjacent: image then json.
        for pair in names.chunks(2) {
            assert_eq!(
                pair[0].strip_suffix(".png"),
                pair[1].strip_suffix(".json"),
                "{names:?}"
            );
        }
    }
    assert_eq!(samples, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_exports_exit_2_with_one_line_and_write_nothing() {
    let p = Project::new();
    mixed_run(&p).await;
    std::fs::create_dir_all(p.path("foreign")).unwrap();
    p.write("foreign/keep.txt", "mine");
    p.write("notarun/a.txt", "x");
    let cases: [(&[&str], &str); 6] = [
        (
            &["export", "notarun", "--format", "imagefolder", "--to", "x1"],
            "not a comfy-batch output folder (no runs.csv)",
        ),
        (
            &["export", "missing", "--format", "imagefolder", "--to", "x2"],
            "no such folder",
        ),
        (
            &["export", "out", "--format", "webdataset", "--to", "out/ds"],
            "is inside the run folder",
        ),
        (
            &["export", "out", "--format", "webdataset", "--to", "."],
            "contains the run folder",
        ),
        (
            &[
                "export",
                "out",
                "--format",
                "imagefolder",
                "--to",
                "foreign",
            ],
            "not an earlier comfy-batch export",
        ),
        (
            &[
                "export",
                "out",
                "--format",
                "imagefolder",
                "--to",
                "x3",
                "--where",
                "1.widht=16",
            ],
            "did you mean '1.width'",
        ),
    ];
    let before = list(p.dir.path());
    for (args, expected) in cases {
        let out = p.cli(args).await;
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(expected), "{args:?}: {}", out.stderr);
    }
    assert_eq!(list(p.dir.path()), before, "nothing written");
    assert_eq!(list(&p.path("foreign")), ["keep.txt"]);
    assert!(!p.out().join("ds").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_and_missing_files_in_a_hand_edited_log_are_skipped() {
    let p = Project::new();
    mixed_run(&p).await;
    // Hand-edit the log: one row points outside the folder, one at a file
    // with a hostile name, one at a file that is gone; a half row is being
    // written at the end.
    let log = p.out().join("runs.csv");
    let text = std::fs::read_to_string(&log).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let ok: Vec<usize> = (1..lines.len())
        .filter(|&i| lines[i].contains(",ok,"))
        .collect();
    let rows = read_rows(&log);
    let image = |i: usize| rows[i - 1].images()[0].clone();
    p.write("secret.png", "secret");
    lines[ok[0]] = lines[ok[0]].replace(&image(ok[0]), "../secret.png");
    let hostile = "images/.. evil\"name\n.png";
    std::fs::rename(p.out().join(image(ok[1])), p.out().join(hostile)).unwrap();
    let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
    let mut record: Vec<String> = read_rows(&log)[ok[1] - 1]
        .0
        .iter()
        .map(|(_, v)| v.clone())
        .collect();
    let col = rows[0].0.iter().position(|(c, _)| c == "images").unwrap();
    record[col] = hostile.to_string();
    w.write_record(&record).unwrap();
    lines[ok[1]] = String::from_utf8(w.into_inner().unwrap())
        .unwrap()
        .trim_end()
        .to_string();
    std::fs::remove_file(p.out().join(image(ok[2]))).unwrap();
    let torn = format!("{}\n{}", lines.join("\n"), "ffff,colors#9,w");
    std::fs::write(&log, torn).unwrap();

    let out = p
        .cli(&["export", "out", "--format", "webdataset", "--to", "wds"])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("still writing"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("../secret.png: the path leaves the output folder; never opened"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.contains("as 4 sample(s)"), "{}", out.stdout);
    let file = std::fs::File::open(p.path("wds/shard-000000.tar")).unwrap();
    let mut archive = tar::Archive::new(file);
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
                && !name.starts_with('.'),
            "unsafe name in tar: {name:?}"
        );
        assert_eq!(name.matches('.').count(), 1, "key without dots: {name:?}");
        let mut data = Vec::new();
        let mut entry = entry;
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        assert_ne!(data, b"secret");
    }
    let img = p
        .cli(&["export", "out", "--format", "imagefolder", "--to", "img"])
        .await;
    assert_eq!(img.code, 0, "{}", img.stderr);
    for name in list(&p.path("img")) {
        assert!(!name.contains('"') && !name.contains('\n'), "{name:?}");
    }
}

/// A hand-made run folder `out` with one ok image.
fn tiny_run(p: &Project) {
    p.write("out/images/a_1_0.png", "png");
    p.write(
        "out/runs.csv",
        "job_id,job,workflow,workflow_sha256,seed,status,server,prompt_id,queued_at,started_at,finished_at,queue_s,run_s,images,error\n\
         a,g#1,w.json,00,1,ok,,,,,,,,images/a_1_0.png,\n",
    );
}

/// Every name under `dir`, recursively, with its kind, links unfollowed.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for name in list(dir) {
        let path = dir.join(&name);
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            out.push(format!("{name}/"));
            out.extend(tree(&path).into_iter().map(|n| format!("{name}/{n}")));
        } else if meta.is_symlink() {
            out.push(format!(
                "{name} -> {}",
                std::fs::read_link(&path).unwrap().display()
            ));
        } else {
            out.push(format!("{name} ({} bytes)", meta.len()));
        }
    }
    out
}

/// `--to` equal to, inside or containing the run folder is refused however
/// it is spelled: from inside the run folder (`.`, `..`, `images`), through
/// a symlink to it, or `..` after a symlink (which the system resolves from
/// where the link leads, not lexically).
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_refuses_the_run_folder_itself_its_parents_and_insides_by_any_spelling() {
    use std::os::unix::fs::symlink;
    let p = Project::new();
    tiny_run(&p);
    symlink(p.out(), p.path("link")).unwrap();
    std::fs::create_dir(p.path("elsewhere")).unwrap();
    symlink(p.out().join("images"), p.path("elsewhere/imgs")).unwrap();
    let run = std::fs::canonicalize(p.out()).unwrap();
    let root = std::fs::canonicalize(p.dir.path()).unwrap();
    let before = tree(p.dir.path());
    let cases: [(&str, &[&str], String, &str); 7] = [
        (
            "out",
            &[".", "--to", "."],
            run.display().to_string(),
            "is the run folder",
        ),
        (
            "out",
            &[".", "--to", ".."],
            root.display().to_string(),
            "contains the run folder",
        ),
        (
            "out",
            &[".", "--to", "images"],
            run.join("images").display().to_string(),
            "is inside the run folder",
        ),
        (
            "out",
            &[".", "--to", "../link"],
            run.display().to_string(),
            "is the run folder",
        ),
        (
            "out",
            &["../link", "--to", "ds"],
            run.join("ds").display().to_string(),
            "is inside the run folder",
        ),
        (
            "",
            &["elsewhere/imgs/..", "--to", "out/ds"],
            run.join("ds").display().to_string(),
            "is inside the run folder",
        ),
        (
            "",
            &["out", "--to", "elsewhere/imgs/../ds"],
            run.join("ds").display().to_string(),
            "is inside the run folder",
        ),
    ];
    for (cwd, args, target, says) in cases {
        let out = crate::harness::comfy_batch()
            .arg("export")
            .args(args)
            .args(["--format", "imagefolder"])
            .current_dir(p.path(cwd))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        let named = format!("{target} {says} {}", run.display());
        assert!(
            stderr.contains(&named),
            "{args:?}: {stderr} (wanted {named})"
        );
    }
    assert_eq!(tree(p.dir.path()), before, "nothing written or deleted");
}

/// The cleanup of an interrupted export's `.NAME.export-*` folders removes
/// only folders export made (they carry its marker): a file, a symlink (to
/// a folder of someone's) and an unmarked folder of that name all stay.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_cleans_up_only_its_own_leftovers() {
    use std::os::unix::fs::symlink;
    let p = Project::new();
    tiny_run(&p);
    p.write(".ds.export-notes", "someone's file");
    p.write(".ds.export-old", "someone's too");
    p.write(".ds.export-mine/keep.txt", "an unmarked folder");
    p.write("precious/keep.txt", "behind a link");
    symlink(p.path("precious"), p.path(".ds.export-link")).unwrap();
    // An interrupted export's folder: marked, part written.
    p.write(".ds.export-abc123/.comfy-batch-export", "");
    p.write(".ds.export-abc123/a_1_0.png", "half");
    let mut foreign = tree(p.dir.path());
    foreign.retain(|n| !n.starts_with(".ds.export-abc123"));
    // Twice: the second replaces the first (its old copy moved aside).
    for _ in 0..2 {
        let out = p
            .cli(&["export", "out", "--format", "imagefolder", "--to", "ds"])
            .await;
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    let mut after = tree(p.dir.path());
    after.retain(|n| n != "ds/" && !n.starts_with("ds/"));
    assert_eq!(after, foreign, "only the marked leftover went");
    assert_eq!(
        list(&p.path("ds")),
        [".comfy-batch-export", "a_1_0.png", "metadata.jsonl"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packed_runs_samples_carry_batch_index_and_pack_size() {
    // 3 seeds in packs of 2 on the t2i fixture: two packs, and the two
    // images of the first share its seed.
    let s = sim().await;
    let p = Project::new();
    p.write(
        "packed.yaml",
        "version: 1\nworkflows:\n  t2i: workflows/t2i.json\njobs:\n  - name: pair\n    workflow: t2i\n    seeds: {count: 3, base: 7}\n    pack: 2\n",
    );
    let out = p.run("packed.yaml", &[&s], &["--no-check"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows = newest(&p.rows());
    assert_eq!(rows.len(), 3);
    for format in ["imagefolder", "webdataset"] {
        let to = format!("ds-{format}");
        let out = p
            .cli(&["export", "out", "--format", format, "--to", &to])
            .await;
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    let text = std::fs::read_to_string(p.path("ds-imagefolder/metadata.jsonl")).unwrap();
    let mut told = std::collections::BTreeSet::new();
    for line in text.lines() {
        let meta: serde_json::Value = serde_json::from_str(line).unwrap();
        let row = &rows[meta["job_id"].as_str().unwrap()];
        let keys: Vec<&str> = meta
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys[..6],
            [
                "file_name",
                "job_id",
                "job",
                "seed",
                "batch_index",
                "pack_size"
            ]
        );
        assert_eq!(
            meta["batch_index"],
            row.get("batch_index").parse::<u64>().unwrap(),
            "{meta}"
        );
        assert_eq!(
            meta["pack_size"],
            row.get("pack_size").parse::<u64>().unwrap(),
            "{meta}"
        );
        told.insert((meta["seed"].to_string(), meta["batch_index"].to_string()));
    }
    assert_eq!(
        told.len(),
        3,
        "each image told apart by (seed, batch_index): {text}"
    );
    // The WebDataset's .json say the same.
    let tar = std::fs::read(p.path("ds-webdataset/shard-000000.tar")).unwrap();
    let mut archive = tar::Archive::new(&tar[..]);
    let mut jsons = 0;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".json") {
            let meta: serde_json::Value = serde_json::from_reader(&mut entry).unwrap();
            let row = &rows[meta["job_id"].as_str().unwrap()];
            assert_eq!(
                meta["batch_index"],
                row.get("batch_index").parse::<u64>().unwrap()
            );
            assert_eq!(
                meta["pack_size"],
                row.get("pack_size").parse::<u64>().unwrap()
            );
            jsons += 1;
        }
    }
    assert_eq!(jsons, 3);
}
