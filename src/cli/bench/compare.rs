//! `comfy-batch bench compare --jobs N --dir D`: `compare A B` on two
//! synthetic N-job folders of 512 px PNGs, each run as a child process:
//! its wall and CPU time and peak RSS, with 10% of B's images drifted (a
//! level on some pixels: decoded, PSNR and SSIM) and the rest
//! byte-identical, then with all of them drifted. The folders' files are
//! hard links to 16 distinct images (and their 16 drifted copies), so
//! building them writes little; reading them is the page cache's.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cli::{CliError, Exit};

/// Arguments of `comfy-batch bench compare`.
#[derive(Debug, clap::Args)]
pub struct BenchCompareArgs {
    /// Jobs in each folder.
    #[arg(long, default_value_t = 10_000)]
    pub jobs: usize,
    /// Where to build the folders (kept, and reused when they have as
    /// many jobs).
    #[arg(long, value_name = "D")]
    pub dir: PathBuf,
}

fn infra(message: String) -> CliError {
    CliError::many(Exit::Infrastructure, vec![message])
}

/// Distinct images a folder's files link to.
const BASES: usize = 16;

/// Image `k`: a gradient with texture (so PNG has work to do), and its
/// drifted copy (one level up on every fifth pixel), as PNG bytes.
fn image_pair(k: usize) -> (Vec<u8>, Vec<u8>) {
    let k = k as u32;
    let base = image::RgbImage::from_fn(512, 512, |x, y| {
        let n = (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503) ^ k.wrapping_mul(97)) >> 28;
        image::Rgb([
            ((x + k * 13) % 256) as u8,
            ((y + k * 7) % 256) as u8,
            (((x + y) / 4 + n) % 256) as u8,
        ])
    });
    let mut drifted = base.clone();
    for (x, y, p) in drifted.enumerate_pixels_mut() {
        if (x * 7 + y * 13 + k).is_multiple_of(5) {
            p.0[0] = p.0[0].saturating_add(1);
        }
    }
    let png = |img: &image::RgbImage| {
        let mut out = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .map(|_| out)
    };
    (
        png(&base).expect("PNG encodes in memory"),
        png(&drifted).expect("PNG encodes in memory"),
    )
}

/// A folder of `jobs` jobs whose job `i` links to `source(i)`.
fn folder(dir: &Path, jobs: usize, source: &dyn Fn(usize) -> PathBuf) -> Result<(), CliError> {
    let marker = dir.join(".bench-jobs");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(&jobs.to_string()) {
        return Ok(());
    }
    let _ = std::fs::remove_dir_all(dir);
    let io = |e: std::io::Error| infra(format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(dir.join("images")).map_err(io)?;
    let log = std::fs::File::create(dir.join(crate::runlog::LOG)).map_err(io)?;
    let mut log = std::io::BufWriter::new(log);
    writeln!(
        log,
        "{}",
        crate::runlog::header(&["prompt".into()]).join(",")
    )
    .map_err(io)?;
    for i in 0..jobs {
        let id = format!("{:016x}", (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let rel = format!("images/{id}_9_0.png");
        let to = dir.join(&rel);
        if std::fs::hard_link(source(i), &to).is_err() {
            std::fs::copy(source(i), &to).map_err(io)?;
        }
        writeln!(
            log,
            "{id},bench#{i},w.json,abc,{i},,,,subject {},ok,http://127.0.0.1:8188,p{i},,,,0.010,1.250,{rel},,",
            i % 100,
        )
        .map_err(io)?;
    }
    log.flush().map_err(io)?;
    std::fs::write(&marker, jobs.to_string()).map_err(io)
}

/// Runs the command.
pub fn execute(args: BenchCompareArgs) -> Result<Exit, CliError> {
    let exe = std::env::current_exe().map_err(|e| infra(e.to_string()))?;
    let started = std::time::Instant::now();
    let sources = args.dir.join("sources");
    std::fs::create_dir_all(&sources).map_err(|e| infra(e.to_string()))?;
    for k in 0..BASES {
        let (base, drifted) = image_pair(k);
        for (name, bytes) in [(format!("{k}.png"), base), (format!("{k}-d.png"), drifted)] {
            std::fs::write(sources.join(name), bytes).map_err(|e| infra(e.to_string()))?;
        }
    }
    let base = |i: usize| sources.join(format!("{}.png", i % BASES));
    let drifted = |i: usize| sources.join(format!("{}-d.png", i % BASES));
    folder(&args.dir.join("a"), args.jobs, &base)?;
    folder(&args.dir.join("b10"), args.jobs, &|i| {
        if i % 10 == 3 { drifted(i) } else { base(i) }
    })?;
    folder(&args.dir.join("b100"), args.jobs, &drifted)?;
    eprintln!(
        "folders of {} jobs ready in {:.1} s under {}",
        args.jobs,
        started.elapsed().as_secs_f64(),
        args.dir.display()
    );
    println!("jobs\tdrifted\tpeak_mb\twall_s\tcpu_s\texit");
    for (drift, b) in [("10%", "b10"), ("100%", "b100")] {
        let mut command = Command::new(&exe);
        command
            .arg("compare")
            .arg(args.dir.join("a"))
            .arg(args.dir.join(b))
            .arg("-q");
        let m = super::run::run_measured(command)?;
        println!(
            "{}\t{drift}\t{:.1}\t{:.2}\t{:.2}\t{}",
            args.jobs,
            m.max_rss_kib as f64 / 1024.0,
            m.wall.as_secs_f64(),
            m.cpu.as_secs_f64(),
            m.code
        );
    }
    Ok(Exit::Ok)
}
