//! Text on images with the bundled DejaVu Sans (`assets/fonts/`, Bitstream
//! Vera licence beside it): measuring, word wrapping (long words broken),
//! and drawing with anti-aliased coverage.

use ab_glyph::{Font, FontRef, PxScale, ScaleFont};
use image::{Rgb, RgbImage};

static FONT_BYTES: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// The bundled font.
pub(crate) fn font() -> FontRef<'static> {
    FontRef::try_from_slice(FONT_BYTES).expect("the bundled font parses")
}

/// Text of one size.
pub(crate) struct Pen<'a> {
    font: &'a FontRef<'static>,
    scale: PxScale,
}

impl<'a> Pen<'a> {
    pub fn new(font: &'a FontRef<'static>, px: f32) -> Pen<'a> {
        Pen {
            font,
            scale: PxScale::from(px),
        }
    }

    /// Line height in pixels.
    pub fn line_height(&self) -> u32 {
        let f = self.font.as_scaled(self.scale);
        (f.height() + f.line_gap()).ceil() as u32
    }

    /// Width of `text` on one line.
    pub fn width(&self, text: &str) -> f32 {
        let f = self.font.as_scaled(self.scale);
        let mut w = 0.0;
        let mut prev = None;
        for c in text.chars() {
            let id = f.glyph_id(c);
            if let Some(p) = prev {
                w += f.kern(p, id);
            }
            w += f.h_advance(id);
            prev = Some(id);
        }
        w
    }

    /// `text` wrapped to `max_width`, at most `max_lines` lines (the last
    /// one ends in `…` when cut). Whitespace runs fold to one space.
    pub fn wrap(&self, text: &str, max_width: f32, max_lines: usize) -> Vec<String> {
        let mut lines: Vec<String> = Vec::new();
        let mut line = String::new();
        let mut cut = false;
        'words: for word in text.split_whitespace() {
            let candidate = if line.is_empty() {
                word.to_string()
            } else {
                format!("{line} {word}")
            };
            if self.width(&candidate) <= max_width {
                line = candidate;
                continue;
            }
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
                if lines.len() == max_lines {
                    cut = true;
                    break 'words;
                }
            }
            // A word longer than the line is broken by characters.
            for c in word.chars() {
                line.push(c);
                if self.width(&line) > max_width && line.chars().count() > 1 {
                    let last = line.pop().expect("a character was pushed");
                    lines.push(std::mem::take(&mut line));
                    line.push(last);
                    if lines.len() == max_lines {
                        cut = true;
                        break 'words;
                    }
                }
            }
        }
        if !cut && !line.is_empty() {
            lines.push(line);
        }
        if cut && let Some(last) = lines.last_mut() {
            while !last.is_empty() && self.width(&format!("{last}…")) > max_width {
                last.pop();
            }
            last.push('…');
        }
        lines
    }

    /// Draws one line with its top-left at (`x`, `y`).
    pub fn draw(&self, img: &mut RgbImage, x: i64, y: i64, text: &str, color: [u8; 3]) {
        let f = self.font.as_scaled(self.scale);
        let mut caret = x as f32;
        let baseline = y as f32 + f.ascent();
        let mut prev = None;
        for c in text.chars() {
            let id = f.glyph_id(c);
            if let Some(p) = prev {
                caret += f.kern(p, id);
            }
            let glyph = id.with_scale_and_position(self.scale, ab_glyph::point(caret, baseline));
            caret += f.h_advance(id);
            prev = Some(id);
            let Some(outline) = self.font.outline_glyph(glyph) else {
                continue;
            };
            let b = outline.px_bounds();
            outline.draw(|gx, gy, cov| {
                let px = b.min.x as i64 + i64::from(gx);
                let py = b.min.y as i64 + i64::from(gy);
                if px < 0 || py < 0 || px >= i64::from(img.width()) || py >= i64::from(img.height())
                {
                    return;
                }
                let p = img.get_pixel_mut(px as u32, py as u32);
                let a = cov.clamp(0.0, 1.0);
                for (ch, col) in p.0.iter_mut().zip(color) {
                    *ch = (f32::from(*ch) * (1.0 - a) + f32::from(col) * a).round() as u8;
                }
            });
        }
    }

    /// Draws `lines` centred in the box (`x`, `y`, `w`, `h`).
    pub fn draw_centred(
        &self,
        img: &mut RgbImage,
        bx: (i64, i64, u32, u32),
        lines: &[String],
        color: [u8; 3],
    ) {
        let (x, y, w, h) = bx;
        let lh = self.line_height() as i64;
        let total = lh * lines.len() as i64;
        let mut top = y + (i64::from(h) - total) / 2;
        for l in lines {
            let lw = self.width(l).ceil() as i64;
            self.draw(img, x + (i64::from(w) - lw) / 2, top, l, color);
            top += lh;
        }
    }
}

/// A light pixel fill for a rectangle (clipped to the image).
pub(crate) fn fill(img: &mut RgbImage, x: i64, y: i64, w: u32, h: u32, color: [u8; 3]) {
    let x0 = x.max(0) as u32;
    let y0 = y.max(0) as u32;
    let x1 = ((x + i64::from(w)).max(0) as u32).min(img.width());
    let y1 = ((y + i64::from(h)).max(0) as u32).min(img.height());
    for yy in y0..y1 {
        for xx in x0..x1 {
            img.put_pixel(xx, yy, Rgb(color));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapping_respects_the_width_and_cuts_with_an_ellipsis() {
        let font = font();
        let pen = Pen::new(&font, 16.0);
        let lines = pen.wrap("a red fox in the snow at dusk by the sea", 80.0, 10);
        assert!(lines.len() > 2);
        assert!(lines.iter().all(|l| pen.width(l) <= 80.0), "{lines:?}");
        let cut = pen.wrap(&"word ".repeat(100), 80.0, 2);
        assert_eq!(cut.len(), 2);
        assert!(cut[1].ends_with('…'));
        let long = pen.wrap(&"x".repeat(200), 50.0, 3);
        assert_eq!(long.len(), 3);
        assert!(long.iter().all(|l| pen.width(l) <= 50.0));
    }

    #[test]
    fn drawing_marks_pixels() {
        let font = font();
        let pen = Pen::new(&font, 20.0);
        let mut img = RgbImage::from_pixel(100, 30, Rgb([255, 255, 255]));
        pen.draw(&mut img, 2, 2, "Hg", [0, 0, 0]);
        assert!(img.pixels().any(|p| p.0[0] < 100));
    }
}
