//! `comfy-batch grid` and the manifest's `grids:`: pictures decoded and
//! checked cell by cell against the simulator's prompt-dependent colours.

use std::path::Path;

use comfy_batch::gallery::RunFolder;
use comfy_batch::grid::{self, GridRequest};
use comfy_batch::sim::SimConfig;

use crate::harness::{Project, sim, sim_with};

const SWEEP: &str = r#"version: 1
workflows:
  t2i: workflows/t2i.json
jobs:
  - name: sweep
    workflow: t2i
    matrix:
      prompt: ["a red fox", "an owl at night"]
      cfg: [5, 6.5, 8]
    seeds: [1, 2]
"#;

fn colour_of(path: &Path) -> [u8; 3] {
    image::open(path).unwrap().to_rgb8().get_pixel(0, 0).0
}

fn centre(img: &image::RgbImage, c: &grid::CellRect) -> [u8; 3] {
    img.get_pixel(c.x + c.w / 2, c.y + c.h / 2).0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_cell_shows_its_jobs_image() {
    let sim = sim().await;
    let p = Project::new();
    p.write("sweep.yaml", SWEEP);
    assert_eq!(p.run("sweep.yaml", &[&sim], &[]).await.code, 0);
    let out = p
        .cli(&[
            "grid", "out", "--x", "cfg", "--y", "prompt", "--where", "seed=2", "-o", "g.png",
        ])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "g.png");
    let picture = image::open(p.path("g.png")).unwrap().to_rgb8();

    // The same page through the library gives the cell geometry.
    let run = RunFolder::read(&p.out()).unwrap();
    let req = GridRequest {
        x: "cfg".into(),
        y: "prompt".into(),
        r#where: vec![("seed".into(), "2".into())],
        ..GridRequest::default()
    };
    let pages = grid::layout(&run, &req).unwrap();
    assert_eq!(pages.len(), 1);
    let page = &pages[0];
    assert_eq!(page.x.1, ["5", "6.5", "8"]);
    assert_eq!(page.y.1, ["a red fox", "an owl at night"]);
    let drawn = grid::draw(&run, page, None);
    assert_eq!(picture.dimensions(), drawn.image.dimensions());
    assert_eq!(drawn.cells.len(), 6);
    let mut colours = std::collections::BTreeSet::new();
    for cell in &drawn.cells {
        let jobs = &page.cells[cell.row][cell.col];
        assert_eq!(jobs.len(), 1);
        let job = &run.jobs[jobs[0]];
        assert_eq!(
            job.params[run.params.iter().position(|n| n == "cfg").unwrap()],
            page.x.1[cell.col]
        );
        assert_eq!(job.seed, "2");
        let expected = colour_of(job.outputs[0].path.as_ref().unwrap());
        assert_eq!(centre(&picture, cell), expected, "cell {cell:?}");
        // Sim images are 64 px: scaled up into 256 px cells.
        assert_eq!((cell.w, cell.h), (256, 256));
        colours.insert(expected);
    }
    assert_eq!(
        colours.len(),
        6,
        "six different prompts/cfg give six colours"
    );
    assert!(
        picture.width() > 3 * 256 && picture.height() > 2 * 256,
        "room for labels"
    );

    // Other formats; an unknown one is refused before any work.
    for name in ["g.jpg", "g.webp"] {
        let out = p
            .cli(&["grid", "out", "--x", "cfg", "--y", "prompt", "-o", name])
            .await;
        assert_eq!(out.code, 0, "{}", out.stderr);
        let img = image::open(p.path(name)).unwrap();
        assert_eq!(img.width(), picture.width());
    }
    let out = p
        .cli(&["grid", "out", "--x", "cfg", "--y", "prompt", "-o", "g.gif"])
        .await;
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("unsupported image format"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_and_not_run_cells_are_marked_and_pages_split() {
    let sim = sim_with(SimConfig {
        fail_rate: 0.3,
        seed: 11,
        ..SimConfig::default()
    })
    .await;
    let p = Project::new();
    p.write("sweep.yaml", SWEEP);
    let run = p.run("sweep.yaml", &[&sim], &[]).await;
    assert_eq!(run.code, 1, "some jobs fail: {}", run.stderr);
    let run = RunFolder::read(&p.out()).unwrap();
    let req = GridRequest {
        x: "cfg".into(),
        y: "prompt".into(),
        page: Some("seed".into()),
        ..GridRequest::default()
    };
    let pages = grid::layout(&run, &req).unwrap();
    assert_eq!(pages.len(), 2);
    let mut failed = 0;
    for page in &pages {
        let drawn = grid::draw(&run, page, Some(128));
        for cell in &drawn.cells {
            let job = &run.jobs[page.cells[cell.row][cell.col][0]];
            let corner = drawn.image.get_pixel(cell.x + 1, cell.y + 1).0;
            if job.status == "ok" {
                assert_eq!(
                    centre(&drawn.image, cell),
                    colour_of(job.outputs[0].path.as_ref().unwrap())
                );
            } else {
                failed += 1;
                assert_eq!(corner, [253, 232, 232], "a failed cell is tinted");
            }
        }
    }
    assert!(failed > 0);
    let out = p
        .cli(&[
            "grid", "out", "--x", "cfg", "--y", "prompt", "--page", "seed", "-o", "g/x.png",
        ])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(p.path("g/x-1.png").is_file() && p.path("g/x-2.png").is_file());

    // A combination never run: drop one row, the cell says so.
    let log = std::fs::read_to_string(p.out().join("runs.csv")).unwrap();
    let mut lines: Vec<&str> = log.lines().collect();
    let gone = lines.remove(1).split(',').next().unwrap().to_string();
    std::fs::write(p.out().join("runs.csv"), lines.join("\n") + "\n").unwrap();
    let run = RunFolder::read(&p.out()).unwrap();
    assert!(run.jobs.iter().all(|j| j.id != gone));
    let pages = grid::layout(&run, &req).unwrap();
    let empty: Vec<(usize, usize, usize)> = pages
        .iter()
        .enumerate()
        .flat_map(|(i, pg)| {
            pg.cells.iter().enumerate().flat_map(move |(r, row)| {
                row.iter()
                    .enumerate()
                    .filter(|(_, c)| c.is_empty())
                    .map(move |(c, _)| (i, r, c))
            })
        })
        .collect();
    assert_eq!(empty.len(), 1);
    let (pi, r, c) = empty[0];
    let drawn = grid::draw(&run, &pages[pi], Some(128));
    let cell = drawn
        .cells
        .iter()
        .find(|x| x.row == r && x.col == c)
        .unwrap();
    assert_eq!(
        drawn.image.get_pixel(cell.x + 1, cell.y + 1).0,
        [243, 243, 241]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_grids_are_drawn_by_run_and_open_the_page() {
    let sim = sim().await;
    let p = Project::new();
    p.write(
        "sweep.yaml",
        format!(
            "{SWEEP}grids:\n  - name: by-cfg\n    x: cfg\n    y: prompt\n    page: seed\n  - name: seed-one\n    x: prompt\n    y: cfg\n    where: {{seed: 1}}\n"
        ),
    );
    let out = p.run("sweep.yaml", &[&sim], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let grids = p.out().join("report/grids");
    for name in ["by-cfg-1.png", "by-cfg-2.png", "seed-one.png"] {
        let img = image::open(grids.join(name)).unwrap();
        assert!(img.width() > 256, "{name}");
    }
    // The page opens on the manifest's first grid.
    let dom = crate::gallery::dump_dom(&p.out().join("report/index.html"), "view=grid");
    assert!(dom.contains("data-page=\"1\"") && dom.contains("data-page=\"2\""));
    assert!(dom.contains("data-x=\"6.5\" data-y=\"a red fox\""), "{dom}");
    // `report` alone keeps that default.
    assert_eq!(p.cli(&["report", "out"]).await.code, 0);
    let dom = crate::gallery::dump_dom(&p.out().join("report/index.html"), "view=grid");
    assert!(dom.contains("data-page=\"2\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_grid_names_exit_2_before_anything_runs() {
    let p = Project::new();
    p.write(
        "sweep.yaml",
        format!("{SWEEP}grids:\n  - name: g\n    x: cgf\n    y: prompt\n"),
    );
    let out = p
        .cli(&[
            "run",
            "sweep.yaml",
            "--output",
            "out",
            "--server",
            "http://127.0.0.1:9",
        ])
        .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(
        out.stderr.trim(),
        "error: sweep.yaml:13:5: grids: 'g' x: 'cgf' is not a parameter of this run (did you mean 'cfg'?); it has: seed, prompt, cfg, group"
    );
    assert!(!p.out().exists(), "nothing was created");
    p.write(
        "sweep.yaml",
        format!("{SWEEP}grids:\n  - name: g\n    x: cfg\n    y: prompt\n    colour: red\n"),
    );
    let out = p.cli(&["plan", "sweep.yaml"]).await;
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("sweep.yaml:15:5: unknown key 'colour'"),
        "{}",
        out.stderr
    );

    let sim = sim().await;
    p.write("sweep.yaml", SWEEP);
    assert_eq!(p.run("sweep.yaml", &[&sim], &["--no-report"]).await.code, 0);
    let out = p.cli(&["grid", "out", "--x", "cfg", "--y", "promt"]).await;
    assert_eq!(out.code, 2);
    assert_eq!(out.stderr.lines().count(), 1);
    assert!(
        out.stderr
            .contains("--y: 'promt' is not a parameter of this run (did you mean 'prompt'?)"),
        "{}",
        out.stderr
    );
    let out = p
        .cli(&[
            "grid", "out", "--x", "cfg", "--y", "prompt", "--where", "seed=7",
        ])
        .await;
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("--where: no job has seed = '7'; values: 1, 2"),
        "{}",
        out.stderr
    );
    let out = p
        .cli(&[
            "grid", "out", "--x", "cfg", "--y", "prompt", "--where", "seed",
        ])
        .await;
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("expected NAME=VALUE"), "{}", out.stderr);
}

#[test]
fn a_huge_grid_is_capped_at_16384_px() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("images")).unwrap();
    image::RgbImage::from_pixel(300, 200, image::Rgb([10, 200, 30]))
        .save(dir.path().join("images/a.png"))
        .unwrap();
    let mut log =
        String::from("job_id,job,workflow,workflow_sha256,seed,prompt,status,images,error\n");
    for i in 0..70 {
        log.push_str(&format!("j{i},g#{i},w,x,{i},fox,ok,images/a.png,\n"));
    }
    std::fs::write(dir.path().join("runs.csv"), log).unwrap();
    let run = RunFolder::read(dir.path()).unwrap();
    let req = GridRequest {
        x: "seed".into(),
        y: "prompt".into(),
        ..GridRequest::default()
    };
    let page = &grid::layout(&run, &req).unwrap()[0];
    let drawn = grid::draw(&run, page, None);
    assert!(
        drawn.image.width() <= grid::MAX_SIDE,
        "{}",
        drawn.image.width()
    );
    assert!(
        drawn.image.width() > 12_000,
        "shrunk only as much as needed"
    );
    assert!(drawn.scaled);
    // Images of another aspect are fitted: 3:2 in the cell, centred.
    let c = drawn.cells[0];
    assert_eq!(
        drawn.image.get_pixel(c.x + c.w / 2, c.y + c.h / 2).0,
        [10, 200, 30]
    );
}

/// CRC-32 (ISO-HDLC), as PNG chunks carry it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG whose header, checksums right, claims `w`×`h`, with a few bytes of
/// image data that are no image.
fn lying_png(w: u32, h: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = png.len();
        png.extend_from_slice(kind);
        png.extend_from_slice(data);
        let crc = crc32(&png[start..]);
        png.extend_from_slice(&crc.to_be_bytes());
    };
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &[0x78, 0x9c, 0x63, 0x00, 0x00]);
    chunk(b"IEND", b"");
    png
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cells_are_sized_from_decoded_images_not_a_headers_claim() {
    // One real 64 px image and one whose header claims 30000×30000: the
    // claim used to size every cell, a blank 16k picture.
    let p = Project::new();
    let out = p.out();
    std::fs::create_dir_all(out.join("images")).unwrap();
    image::RgbImage::from_pixel(64, 64, image::Rgb([10, 200, 30]))
        .save(out.join("images/a_9_0.png"))
        .unwrap();
    std::fs::write(out.join("images/b_9_0.png"), lying_png(30_000, 30_000)).unwrap();
    assert_eq!(
        image::image_dimensions(out.join("images/b_9_0.png")).unwrap(),
        (30_000, 30_000),
        "the header parses"
    );
    std::fs::write(
        out.join("runs.csv"),
        "job_id,job,workflow,workflow_sha256,seed,prompt,status,images,error\n\
         a,g#0,w,x,1,fox,ok,images/a_9_0.png,\n\
         b,g#1,w,x,2,fox,ok,images/b_9_0.png,\n",
    )
    .unwrap();
    let r = p
        .cli(&["grid", "out", "--x", "seed", "--y", "prompt", "-o", "g.png"])
        .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (w, h) = image::image_dimensions(p.path("g.png")).unwrap();
    assert!(w < 1_000 && h < 1_000, "{w}×{h}");

    let run = RunFolder::read(&out).unwrap();
    let req = GridRequest {
        x: "seed".into(),
        y: "prompt".into(),
        ..GridRequest::default()
    };
    let page = &grid::layout(&run, &req).unwrap()[0];
    let drawn = grid::draw(&run, page, None);
    assert_eq!((drawn.image.width(), drawn.image.height()), (w, h));
    // The real image fills its 256 px cell, as it would alone.
    let c = drawn.cells[0];
    assert_eq!((c.w, c.h), (256, 256));
    assert_eq!(centre(&drawn.image, &c), [10, 200, 30]);
    assert!(!drawn.scaled);

    // With only the liar, the cell is the smallest one.
    std::fs::write(
        out.join("runs.csv"),
        "job_id,job,workflow,workflow_sha256,seed,prompt,status,images,error\n\
         b,g#1,w,x,2,fox,ok,images/b_9_0.png,\n\
         c,g#2,w,x,3,fox,ok,images/b_9_0.png,\n",
    )
    .unwrap();
    let run = RunFolder::read(&out).unwrap();
    let page = &grid::layout(&run, &req).unwrap()[0];
    let drawn = grid::draw(&run, page, None);
    assert_eq!((drawn.cells[0].w, drawn.cells[0].h), (256, 256));
}

/// The report's page, data and grid images are written as any new file is
/// (the umask's modes, as the run's images and `runs.csv`), not forced to
/// 0644: a group-shared folder (umask 002) keeps them group-writable.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_files_get_the_modes_of_any_new_file() {
    use std::os::unix::fs::PermissionsExt;
    let sim = sim().await;
    let p = Project::new();
    p.write("sweep.yaml", SWEEP);
    assert_eq!(p.run("sweep.yaml", &[&sim], &["--no-report"]).await.code, 0);
    // `umask` is the shell's: set in the child only, never in this process.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#"umask 002 && "$0" report "$1" && "$0" grid "$1" --x cfg --y prompt -o "$1/g/grid.png""#)
        .arg(env!("CARGO_BIN_EXE_comfy-batch"))
        .arg(p.out())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = |rel: &str| {
        std::fs::metadata(p.out().join(rel))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("report/index.html"), 0o664);
    assert_eq!(mode("g/grid.png"), 0o664);
}
