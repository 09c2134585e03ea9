//! `comfy-batch bench report`: the HTML report of a synthetic run of
//! `--jobs` simulator-like images (64 px PNGs, one per job), cold (every
//! thumbnail made) and again with nothing changed; the sizes of the page and
//! of its data; and a 10 × 10 grid of 512 px images.

use std::path::Path;
use std::time::Instant;

use crate::cli::{CliError, Exit};
use crate::gallery::{self, ReportOptions, RunFolder};
use crate::grid::{self, GridRequest};

/// Arguments of `comfy-batch bench report`.
#[derive(Debug, clap::Args)]
pub struct BenchReportArgs {
    /// Jobs in the synthetic run.
    #[arg(long, default_value_t = 10_000)]
    pub jobs: usize,
    /// Side of the grid benchmark (N × N images of 512 px).
    #[arg(long, default_value_t = 10)]
    pub grid: usize,
    /// Build the synthetic run in this (new) folder and keep it, to look
    /// at the page [default: a temporary folder].
    #[arg(long, value_name = "DIR")]
    pub keep: Option<std::path::PathBuf>,
}

const HEADER: &str = "job_id,job,workflow,workflow_sha256,seed,prompt,cfg,status,server,prompt_id,queued_at,started_at,finished_at,queue_s,run_s,images,error\n";

/// A folder like one `run` leaves: `jobs` rows, one PNG each.
fn synthetic_run(dir: &Path, jobs: usize) -> Result<(), CliError> {
    std::fs::create_dir_all(dir.join("images"))?;
    let mut log = String::from(HEADER);
    for i in 0..jobs {
        let id = format!("{:016x}", (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let rgb = [(i * 37) as u8, (i * 91) as u8, (i * 13) as u8];
        // Solid colour, as the simulator makes them.
        let mut png = Vec::new();
        image::RgbImage::from_pixel(64, 64, image::Rgb(rgb))
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .map_err(|e| CliError::many(Exit::Infrastructure, vec![e.to_string()]))?;
        let rel = format!("images/{id}_9_0.png");
        std::fs::write(dir.join(&rel), png)?;
        let (status, images, error) = if i % 97 == 5 {
            ("failed", String::new(), "KSampler (3): CUDA out of memory")
        } else {
            ("ok", rel, "")
        };
        log.push_str(&format!(
            "{id},bench#{i},w.json,abc,{},\"a photo of subject number {}, detailed\",{},{status},http://127.0.0.1:8188,p{i},,,,0.010,1.250,{images},{error}\n",
            i % 10,
            i / 100,
            3 + (i / 10) % 10,
        ));
    }
    Ok(std::fs::write(dir.join("runs.csv"), log)?)
}

/// Runs `bench report`.
pub fn execute(args: BenchReportArgs) -> Result<Exit, CliError> {
    let tmp = tempfile::tempdir()?;
    let base = args
        .keep
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let dir = base.join("run");
    let start = Instant::now();
    synthetic_run(&dir, args.jobs)?;
    println!(
        "bench report: {} jobs, 64 px PNGs (made in {:.1} s)",
        args.jobs,
        start.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let cold = gallery::write_report(&dir, &ReportOptions::default())?;
    let cold_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let warm = gallery::write_report(&dir, &ReportOptions::default())?;
    let warm_s = t.elapsed().as_secs_f64();
    let size = std::fs::metadata(&cold.index)?.len();
    println!(
        "cold:           {cold_s:.3} s ({} thumbnails made)",
        cold.thumbs_made
    );
    println!(
        "unchanged:      {warm_s:.3} s ({} thumbnails made, page rewritten: {})",
        warm.thumbs_made, warm.written
    );
    // The page's data beside it (report/data/<id>/: columns and chunks).
    let (mut data, mut files) = (0u64, 0usize);
    for folder in std::fs::read_dir(cold.index.with_file_name("data"))? {
        for f in std::fs::read_dir(folder?.path())? {
            data += f?.metadata()?.len();
            files += 1;
        }
    }
    println!("page:           {:.2} MB", size as f64 / 1e6);
    println!(
        "page's data:    {:.2} MB in {files} files",
        data as f64 / 1e6
    );

    // The grid: N × N distinct 512 px images with detail (a gradient and a
    // pattern), so decoding and encoding are not trivially cheap.
    let n = args.grid.max(1);
    let gdir = base.join("grid");
    std::fs::create_dir_all(gdir.join("images"))?;
    let mut log = String::from(HEADER);
    for i in 0..n * n {
        let img = image::RgbImage::from_fn(512, 512, |x, y| {
            let v = (x ^ y).wrapping_mul(i as u32 + 3);
            image::Rgb([(x / 2) as u8, (y / 2) as u8, (v % 251) as u8])
        });
        let rel = format!("images/g{i:04}_9_0.png");
        img.save(gdir.join(&rel))
            .map_err(|e| CliError::many(Exit::Infrastructure, vec![e.to_string()]))?;
        log.push_str(&format!(
            "g{i:04},grid#{i},w.json,abc,1,prompt {},{},ok,,,,,,,,{rel},\n",
            i / n,
            i % n
        ));
    }
    std::fs::write(gdir.join("runs.csv"), log)?;
    let run = RunFolder::read(&gdir)?;
    let req = GridRequest {
        x: "cfg".into(),
        y: "prompt".into(),
        ..GridRequest::default()
    };
    let out = gdir.join("grid.png");
    let t = Instant::now();
    let pages = grid::layout(&run, &req)?;
    let drawn = grid::draw(&run, &pages[0], None);
    let draw_s = t.elapsed().as_secs_f64();
    grid::save(&drawn.image, &out)?;
    let grid_s = t.elapsed().as_secs_f64();
    let (w, h) = drawn.image.dimensions();
    println!(
        "grid {n}x{n} of 512 px: {grid_s:.3} s ({w}x{h} px PNG; decode + draw {draw_s:.3} s, encode + write {:.3} s)",
        grid_s - draw_s
    );
    Ok(Exit::Ok)
}
