//! Drawing one grid page: read image sizes (headers, checked against the
//! images as decoded), choose one cell size, decode and fit every image in
//! parallel, then paint the title, the axis labels and the cells. The cell
//! size shrinks until the picture fits in [`MAX_SIDE`] pixels a side, so a
//! huge grid never allocates more than that.

use std::collections::HashMap;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use image::{DynamicImage, Rgb, RgbImage, imageops::FilterType};
use rayon::prelude::*;

use super::GridPage;
use super::font::{Pen, fill, font};
use crate::gallery::folder::{OutputKind, RunFolder};

/// The largest picture side, in pixels.
pub const MAX_SIDE: u32 = 16_384;
/// Small images (the simulator's 64 px) are scaled up to this cell side.
const MIN_CELL: u32 = 256;
/// Grid lines between cells.
const GAP: u32 = 2;

const WHITE: [u8; 3] = [255, 255, 255];
const INK: [u8; 3] = [29, 29, 31];
const MUTED: [u8; 3] = [110, 110, 115];
const LINE: [u8; 3] = [210, 210, 206];
const BACKDROP: [u8; 3] = [236, 235, 232];
const NOT_RUN: [u8; 3] = [243, 243, 241];
const FAILED_BG: [u8; 3] = [253, 232, 232];
const FAILED_INK: [u8; 3] = [160, 30, 30];

/// Where a cell landed in the picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellRect {
    /// Row (Y value index).
    pub row: usize,
    /// Column (X value index).
    pub col: usize,
    /// Left edge.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Width.
    pub w: u32,
    /// Height.
    pub h: u32,
}

/// A drawn page and where its cells are (for tests and tools).
pub struct Drawn {
    /// The picture.
    pub image: RgbImage,
    /// Every cell, row-major.
    pub cells: Vec<CellRect>,
    /// Whether the picture had to be scaled down to fit [`MAX_SIDE`].
    pub scaled: bool,
}

/// What one slot of a cell shows.
enum Item {
    /// An image, by its path as logged (relative to the run folder).
    Image(PathBuf),
    Marker(String),
    Failed {
        status: String,
        error: String,
    },
}

fn items_of(run: &RunFolder, jobs: &[usize]) -> Vec<Item> {
    let mut out = Vec::new();
    for &j in jobs {
        let job = &run.jobs[j];
        if job.status != "ok" {
            out.push(Item::Failed {
                status: job.status.clone(),
                error: job.error.clone(),
            });
            continue;
        }
        let images: Vec<&crate::gallery::folder::OutputFile> = job
            .outputs
            .iter()
            .filter(|o| o.kind == OutputKind::Image)
            .collect();
        if images.is_empty() {
            let what = job.outputs.first().map_or("no image".to_string(), |o| {
                format!("{} output", o.kind.as_str())
            });
            out.push(Item::Marker(what));
        }
        for o in images {
            match (&o.path, o.present) {
                (Some(_), true) => out.push(Item::Image(PathBuf::from(&o.rel))),
                _ => out.push(Item::Marker("missing file".into())),
            }
        }
    }
    out
}

struct Layout {
    cw: u32,
    ch: u32,
    px: f32,
    label_w: u32,
    title: Vec<String>,
    title_h: u32,
    xlabels: Vec<Vec<String>>,
    header_h: u32,
    ylabels: Vec<Vec<String>>,
    width: u32,
    height: u32,
}

fn plan(page: &GridPage, font: &ab_glyph::FontRef<'static>, cw: u32, ch: u32) -> Layout {
    let px = (cw.min(ch) as f32 / 12.0).clamp(13.0, 28.0);
    let pen = Pen::new(font, px);
    let lh = pen.line_height();
    let pad = (px / 2.0) as u32;
    // As wide as the longest row label (or the axis names) needs, within
    // a cell's width.
    let widest = page
        .y
        .1
        .iter()
        .map(|v| pen.width(v))
        .chain([pen.width(&format!("{} \\ {}", page.y.0, page.x.0))])
        .fold(0.0f32, f32::max)
        .ceil() as u32;
    let label_w = (widest + 2 * pad).clamp(60, cw.clamp(140, 420));
    let cols = page.x.1.len() as u32;
    let rows = page.y.1.len() as u32;
    let width = label_w + cols * (cw + GAP) + GAP;
    let show = |v: &str| {
        if v.is_empty() {
            "(none)".to_string()
        } else {
            v.to_string()
        }
    };
    let xlabels: Vec<Vec<String>> = page
        .x
        .1
        .iter()
        .map(|v| pen.wrap(&show(v), (cw.saturating_sub(2 * pad)).max(8) as f32, 4))
        .collect();
    let header_lines = xlabels.iter().map(Vec::len).max().unwrap_or(1).max(1) as u32;
    let header_h = header_lines * lh + 2 * pad;
    let ymax_lines = (ch / lh.max(1)).clamp(1, 10) as usize;
    let ylabels = page
        .y
        .1
        .iter()
        .map(|v| pen.wrap(&show(v), (label_w - 2 * pad) as f32, ymax_lines))
        .collect();
    let title = pen.wrap(
        &page.title,
        (width.saturating_sub(2 * pad)).max(40) as f32,
        3,
    );
    let title_h = title.len() as u32 * lh + 2 * pad;
    let height = title_h + header_h + rows * (ch + GAP) + GAP;
    Layout {
        cw,
        ch,
        px,
        label_w,
        title,
        title_h,
        xlabels,
        header_h,
        ylabels,
        width,
        height,
    }
}

/// An image of the run folder `root` (`rel` as logged), opened through
/// [`crate::folder::open_under`]: never through a symbolic link.
fn reader(root: &Path, rel: &Path) -> Option<image::ImageReader<BufReader<std::fs::File>>> {
    let opened = crate::folder::open_under(root, rel).ok()?;
    image::ImageReader::new(BufReader::new(opened.file))
        .with_guessed_format()
        .ok()
}

/// The size of an image of `size` fitted into `w`×`h`, keeping its aspect
/// ratio.
fn fit_size((iw, ih): (u32, u32), w: u32, h: u32) -> (u32, u32) {
    let (iw, ih) = (iw.max(1), ih.max(1));
    let s = (f64::from(w) / f64::from(iw)).min(f64::from(h) / f64::from(ih));
    let tw = ((f64::from(iw) * s).round() as u32).clamp(1, w.max(1));
    let th = ((f64::from(ih) * s).round() as u32).clamp(1, h.max(1));
    (tw, th)
}

/// An image as [`decode_within`] keeps it, and the size it decoded at.
type Kept = Option<(RgbImage, (u32, u32))>;

/// An image decoded, with the size it decoded at: kept whole when it fits
/// in `w`×`h`, else fitted into it. Never enlarged here: the cell it ends
/// in is known only once every image is decoded.
fn decode_within(root: &Path, rel: &Path, w: u32, h: u32) -> Kept {
    let img: DynamicImage = reader(root, rel)?.decode().ok()?;
    let size = (img.width().max(1), img.height().max(1));
    let rgb = crate::gallery::thumbs::flatten(&img);
    let (tw, th) = fit_size(size, w, h);
    if tw >= size.0 && th >= size.1 {
        return Some((rgb, size));
    }
    Some((
        image::imageops::resize(&rgb, tw, th, FilterType::Triangle),
        size,
    ))
}

/// An image of `size`, kept by [`decode_within`] as `img`, fitted into
/// `w`×`h` (enlarged if need be); decoded again from `rel` only when it
/// was kept smaller than that.
fn refit(
    root: &Path,
    rel: &Path,
    img: RgbImage,
    size: (u32, u32),
    w: u32,
    h: u32,
) -> Option<RgbImage> {
    let (tw, th) = fit_size(size, w, h);
    if (tw, th) == img.dimensions() {
        return Some(img);
    }
    if img.dimensions() != size && tw > img.width() {
        // Kept smaller than its cell now needs: only when a header lied.
        let (again, _) = decode_within(root, rel, w, h)?;
        return refit(root, rel, again, size, w, h);
    }
    Some(image::imageops::resize(&img, tw, th, FilterType::Triangle))
}

fn dims_of(root: &Path, rel: &Path) -> Option<(u32, u32)> {
    reader(root, rel)?.into_dimensions().ok()
}

/// Slots of a cell with `k` items: (columns, rows).
fn slots(k: usize) -> (u32, u32) {
    let cols = (k as f64).sqrt().ceil().max(1.0) as u32;
    let rows = (k as u32).div_ceil(cols).max(1);
    (cols, rows)
}

/// The layout for images of `sizes` (`cell` forces the longer side of a
/// cell), shrunk until it fits [`MAX_SIDE`]; and the cell width wanted
/// before shrinking.
fn layout_for(
    page: &GridPage,
    font: &ab_glyph::FontRef<'static>,
    sizes: &[Option<(u32, u32)>],
    cell: Option<u32>,
) -> (Layout, u32) {
    let (mut cw, mut ch) = sizes
        .iter()
        .flatten()
        .fold((0, 0), |(w, h), (a, b)| (w.max(*a), h.max(*b)));
    if cw == 0 || ch == 0 {
        (cw, ch) = (MIN_CELL, MIN_CELL);
    }
    let target = cell
        .unwrap_or_else(|| cw.max(ch).max(MIN_CELL))
        .clamp(8, MAX_SIDE);
    let s = f64::from(target) / f64::from(cw.max(ch));
    cw = ((f64::from(cw) * s).round() as u32).max(8);
    ch = ((f64::from(ch) * s).round() as u32).max(8);

    let wanted = cw;
    let mut layout = plan(page, font, cw, ch);
    for _ in 0..4 {
        if layout.width <= MAX_SIDE && layout.height <= MAX_SIDE {
            break;
        }
        let s = (f64::from(MAX_SIDE) / f64::from(layout.width))
            .min(f64::from(MAX_SIDE) / f64::from(layout.height))
            * 0.97;
        let ncw = ((f64::from(layout.cw) * s) as u32).max(4);
        let nch = ((f64::from(layout.ch) * s) as u32).max(4);
        layout = plan(page, font, ncw, nch);
    }
    (layout, wanted)
}

/// A cell's slot of each image (row, column, slot), in `items` order.
type Slot = (usize, usize, usize);

/// Every image of `items` with its slot and the slot's size in a `cw`×`ch`
/// cell, in `items` order.
fn slots_of(items: &[Vec<Vec<Item>>], cw: u32, ch: u32) -> Vec<(Slot, &PathBuf, u32, u32)> {
    let mut out = Vec::new();
    for (r, row) in items.iter().enumerate() {
        for (c, its) in row.iter().enumerate() {
            let (sc, sr) = slots(its.len());
            let sw = (cw.saturating_sub(sc - 1)) / sc;
            let sh = (ch.saturating_sub(sr - 1)) / sr;
            for (k, it) in its.iter().enumerate() {
                if let Item::Image(p) = it {
                    out.push(((r, c, k), p, sw.max(1), sh.max(1)));
                }
            }
        }
    }
    out
}

/// Draws one page. `cell` forces the longer side of a cell.
pub fn draw(run: &RunFolder, page: &GridPage, cell: Option<u32>) -> Drawn {
    let font = font();
    let items: Vec<Vec<Vec<Item>>> = page
        .cells
        .iter()
        .map(|row| row.iter().map(|jobs| items_of(run, jobs)).collect())
        .collect();
    let paths: Vec<&PathBuf> = items
        .iter()
        .flatten()
        .flatten()
        .filter_map(|i| match i {
            Item::Image(p) => Some(p),
            _ => None,
        })
        .collect();
    // Headers give the sizes cheaply, but a header may claim anything (a
    // PNG of a few bytes declaring 30000×30000): the cells are sized from
    // the images as decoded. Each is decoded once, in parallel, kept no
    // larger than the cell its header's claim gave, then fitted into its
    // final cell.
    let claimed: Vec<Option<(u32, u32)>> =
        paths.par_iter().map(|p| dims_of(&run.root, p)).collect();
    let (first, _) = layout_for(page, &font, &claimed, cell);
    let kept: Vec<(Slot, &PathBuf, Kept)> = slots_of(&items, first.cw, first.ch)
        .into_par_iter()
        .map(|(slot, p, w, h)| (slot, p, decode_within(&run.root, p, w, h)))
        .collect();
    let decoded: Vec<Option<(u32, u32)>> = kept
        .iter()
        .map(|(.., d)| d.as_ref().map(|(_, size)| *size))
        .collect();
    let (layout, wanted) = layout_for(page, &font, &decoded, cell);
    let (cw, ch) = (layout.cw, layout.ch);
    let targets = slots_of(&items, cw, ch);
    let pictures: HashMap<Slot, RgbImage> = kept
        .into_par_iter()
        .zip(targets)
        .filter_map(|((slot, p, d), (_, _, w, h))| {
            let (img, size) = d?;
            Some((slot, refit(&run.root, p, img, size, w, h)?))
        })
        .collect();

    let mut img = RgbImage::from_pixel(layout.width, layout.height, Rgb(WHITE));
    let pen = Pen::new(&font, layout.px);
    let small = Pen::new(&font, (layout.px * 0.85).max(11.0));
    let lh = pen.line_height() as i64;
    let pad = (layout.px / 2.0) as i64;
    for (i, line) in layout.title.iter().enumerate() {
        pen.draw(&mut img, pad, pad + i as i64 * lh, line, INK);
    }
    let top = layout.title_h;
    // Corner: the axis names.
    let corner = pen.wrap(
        &format!("{} \\ {}", page.y.0, page.x.0),
        (layout.label_w as f32 - 2.0 * pad as f32).max(8.0),
        3,
    );
    pen.draw_centred(
        &mut img,
        (0, i64::from(top), layout.label_w, layout.header_h),
        &corner,
        MUTED,
    );
    let grid_top = top + layout.header_h;
    let rows = page.y.1.len() as u32;
    let cols = page.x.1.len() as u32;
    // Grid lines.
    fill(
        &mut img,
        i64::from(layout.label_w),
        i64::from(grid_top),
        cols * (cw + GAP) + GAP,
        rows * (ch + GAP) + GAP,
        LINE,
    );
    for (c, lines) in layout.xlabels.iter().enumerate() {
        let x = layout.label_w + GAP + c as u32 * (cw + GAP);
        pen.draw_centred(
            &mut img,
            (i64::from(x), i64::from(top), cw, layout.header_h),
            lines,
            INK,
        );
    }
    let mut cells = Vec::new();
    for (r, lines) in layout.ylabels.iter().enumerate() {
        let y = grid_top + GAP + r as u32 * (ch + GAP);
        let total = lines.len() as i64 * lh;
        let mut ty = i64::from(y) + (i64::from(ch) - total) / 2;
        for l in lines {
            let w = pen.width(l).ceil() as i64;
            pen.draw(&mut img, i64::from(layout.label_w) - pad - w, ty, l, INK);
            ty += lh;
        }
        for (c, its) in items[r].iter().enumerate() {
            let x = layout.label_w + GAP + c as u32 * (cw + GAP);
            cells.push(CellRect {
                row: r,
                col: c,
                x,
                y,
                w: cw,
                h: ch,
            });
            if its.is_empty() {
                fill(&mut img, i64::from(x), i64::from(y), cw, ch, NOT_RUN);
                let l = small.wrap("not run", cw as f32 - 4.0, 1);
                small.draw_centred(&mut img, (i64::from(x), i64::from(y), cw, ch), &l, MUTED);
                continue;
            }
            fill(&mut img, i64::from(x), i64::from(y), cw, ch, BACKDROP);
            let (sc, sr) = slots(its.len());
            let sw = (cw.saturating_sub(sc - 1)) / sc;
            let sh = (ch.saturating_sub(sr - 1)) / sr;
            for (k, it) in its.iter().enumerate() {
                let k32 = k as u32;
                let sx = x + (k32 % sc) * (sw + 1);
                let sy = y + (k32 / sc) * (sh + 1);
                let sbox = (i64::from(sx), i64::from(sy), sw, sh);
                match it {
                    Item::Image(_) => match pictures.get(&(r, c, k)) {
                        Some(p) => {
                            let ox = sx + (sw - p.width().min(sw)) / 2;
                            let oy = sy + (sh - p.height().min(sh)) / 2;
                            image::imageops::replace(&mut img, p, i64::from(ox), i64::from(oy));
                        }
                        None => {
                            let l = small.wrap("unreadable image", sw as f32 - 4.0, 2);
                            small.draw_centred(&mut img, sbox, &l, FAILED_INK);
                        }
                    },
                    Item::Marker(text) => {
                        let l = small.wrap(text, sw as f32 - 4.0, 2);
                        small.draw_centred(&mut img, sbox, &l, MUTED);
                    }
                    Item::Failed { status, error } => {
                        fill(&mut img, sbox.0, sbox.1, sw, sh, FAILED_BG);
                        let max =
                            ((sh as i64 / small.line_height().max(1) as i64) - 1).max(0) as usize;
                        let mut l = vec![status.clone()];
                        l.extend(small.wrap(error, sw as f32 - 8.0, max.min(8)));
                        l.truncate(max.max(1));
                        small.draw_centred(&mut img, sbox, &l, FAILED_INK);
                    }
                }
            }
        }
    }
    let mut scaled = false;
    if img.width() > MAX_SIDE || img.height() > MAX_SIDE {
        // Labels keep a minimum size, so a very long axis can still
        // overflow: scale the whole picture down as a last resort.
        let s = (f64::from(MAX_SIDE) / f64::from(img.width()))
            .min(f64::from(MAX_SIDE) / f64::from(img.height()));
        let (w, h) = (
            ((f64::from(img.width()) * s) as u32).max(1),
            ((f64::from(img.height()) * s) as u32).max(1),
        );
        img = image::imageops::resize(&img, w, h, FilterType::Triangle);
        for c in &mut cells {
            c.x = (f64::from(c.x) * s) as u32;
            c.y = (f64::from(c.y) * s) as u32;
            c.w = (f64::from(c.w) * s) as u32;
            c.h = (f64::from(c.h) * s) as u32;
        }
        scaled = true;
    }
    Drawn {
        image: img,
        cells,
        scaled: scaled || cw < wanted,
    }
}
