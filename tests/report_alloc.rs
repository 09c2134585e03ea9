//! The memory of `report` and `grid` over a folder, counted by a global
//! allocator of this test binary (as `tests/alloc_bound.rs` counts the
//! runner's): both stream the run log, so what they keep per job is a few
//! bytes (the log reader's offsets, the page's columns), never a record.
//! Figures of a release build are `bench folder`'s; these only fail if the
//! state per job grows.

use std::path::Path;

#[path = "common/counting.rs"]
mod counting;

use counting::{ONE_AT_A_TIME, peak_of};

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

/// A folder of `jobs` jobs as a run logs them (every 97th failed), one
/// 64 px PNG a job; every 50th is on disk, the others missing (as cheap to
/// the report's memory as any, and quick to make).
fn folder(dir: &Path, jobs: usize) {
    use std::fmt::Write as _;
    std::fs::create_dir_all(dir.join("images")).unwrap();
    let mut png = Vec::new();
    image::RgbImage::from_pixel(64, 64, image::Rgb([200, 80, 40]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let mut log = comfy_batch::runlog::header(&["prompt".into(), "cfg".into()]).join(",");
    log.push('\n');
    for i in 0..jobs {
        let id = format!("{:016x}", (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let rel = format!("images/{id}_9_0.png");
        if i % 50 == 0 {
            std::fs::write(dir.join(&rel), &png).unwrap();
        }
        let (status, images, error) = if i % 97 == 5 {
            ("failed", "", "KSampler (3): CUDA out of memory")
        } else {
            ("ok", rel.as_str(), "")
        };
        writeln!(
            log,
            "{id},bench#{i},w.json,abc,{},,,,\"a photo of subject number {}, detailed\",{},{status},http://127.0.0.1:8188,p{i},,,,0.010,1.250,{images},{error},",
            i % 100,
            i / 100 % 20,
            3 + (i / 10) % 10,
        )
        .unwrap();
    }
    std::fs::write(dir.join("runs.csv"), log).unwrap();
}

/// The jobs of the two folders compared.
const SMALL: usize = 2_000;
const LARGE: usize = 20_000;

/// What the report's peak may grow between them: it grew 1.9 MB (the log
/// reader's offsets and id map, about 100 bytes a job at their peak, and
/// the page's columns), and 22 MB with every job's record held, as before
/// it streamed (tried: this test then fails).
const REPORT_BOUND: isize = 4 << 20;

/// What the grid's peak may grow: it keeps the jobs of its cells only
/// (10 × 100 cells at both sizes: 1 job a cell, then 10): it grew 0.9 MB,
/// and 21 MB with every job's record held (tried: this test then fails).
const GRID_BOUND: isize = 4 << 20;

#[test]
fn the_reports_memory_does_not_grow_with_the_jobs() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let mut peaks = Vec::new();
    for jobs in [SMALL, LARGE] {
        let dir = tmp.path().join(format!("run{jobs}"));
        folder(&dir, jobs);
        let options = comfy_batch::gallery::ReportOptions::default();
        let (peak, summary) = peak_of(|| comfy_batch::gallery::write_report(&dir, &options));
        let summary = summary.unwrap();
        assert_eq!(summary.jobs, jobs);
        eprintln!("report of {jobs} jobs: peak {} KB", peak >> 10);
        peaks.push(peak);
    }
    let grew = peaks[1] - peaks[0];
    assert!(
        grew < REPORT_BOUND,
        "the report's peak grew {} KB from {SMALL} to {LARGE} jobs ({} bytes a job)",
        grew >> 10,
        grew / (LARGE - SMALL) as isize
    );
}

#[test]
fn the_grids_memory_does_not_grow_with_the_jobs() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let mut peaks = Vec::new();
    for jobs in [SMALL, LARGE] {
        let dir = tmp.path().join(format!("run{jobs}"));
        folder(&dir, jobs);
        let req = comfy_batch::grid::GridRequest {
            x: "cfg".into(),
            y: "seed".into(),
            r#where: vec![(
                "prompt".into(),
                "a photo of subject number 0, detailed".into(),
            )],
            // Small cells: the picture's pixels are not what is measured.
            cell: Some(16),
            ..Default::default()
        };
        let base = tmp.path().join(format!("grid{jobs}.png"));
        let (peak, written) = peak_of(|| comfy_batch::grid::write_folder(&dir, &req, &base));
        written.unwrap();
        eprintln!("grid of {jobs} jobs: peak {} KB", peak >> 10);
        peaks.push(peak);
    }
    let grew = peaks[1] - peaks[0];
    assert!(
        grew < GRID_BOUND,
        "the grid's peak grew {} KB from {SMALL} to {LARGE} jobs ({} bytes a job)",
        grew >> 10,
        grew / (LARGE - SMALL) as isize
    );
}
