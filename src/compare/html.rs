//! The comparison as one self-contained HTML page (`-o FILE.html`), under
//! the report's rules: no network (images are `data:` URIs), a CSP that
//! lets only its own script run (by hash), every value escaped by
//! minijinja's auto-escaping. Each pair shows A and B side by side with a
//! difference heat map, its metrics and the parameters that differ;
//! filterable by class, worst first. The first [`MAX_SHOWN`] pairs are on
//! it (a page of 10,000 pairs of images would not open).

use std::io::Cursor;
use std::path::Path;

use image::{RgbImage, RgbaImage};
use minijinja::{Environment, Value, context};
use rayon::prelude::*;
use serde_json::json;
use sha2::Digest as _;

use super::metrics::{decode, is_image, read};
use super::{Class, CompareError, Comparison, Pair};

const TEMPLATE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("page.js");

/// Pairs on the page, worst first.
pub const MAX_SHOWN: usize = 300;

/// The longer side of an image on the page, in pixels.
const SIDE: u32 = 320;

/// The script's CSP source: only it may run.
fn script_hash() -> String {
    use base64::Engine as _;
    let digest = sha2::Sha256::digest(SCRIPT.as_bytes());
    format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

fn data_uri(mime: &str, bytes: &[u8]) -> String {
    use base64::Engine as _;
    format!(
        "data:{mime};base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// A preview of an image as a JPEG `data:` URI, at most [`SIDE`] pixels.
fn preview(img: &RgbaImage) -> Option<String> {
    let small = image::DynamicImage::ImageRgba8(img.clone()).thumbnail(SIDE, SIDE);
    let mut out = Cursor::new(Vec::new());
    let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85);
    small.to_rgb8().write_with_encoder(enc).ok()?;
    Some(data_uri("image/jpeg", &out.into_inner()))
}

/// The difference heat map as a PNG `data:` URI: each cell the largest
/// channel difference of the pixels it covers (so one changed pixel still
/// shows), black for none, dark red to yellow as it grows.
fn heat_map(a: &RgbaImage, b: &RgbaImage) -> Option<String> {
    let (w, h) = a.dimensions();
    let step = w.max(h).div_ceil(SIDE).max(1);
    let (hw, hh) = (w.div_ceil(step), h.div_ceil(step));
    let mut cells = vec![0u8; (hw * hh) as usize];
    for (x, y, pa) in a.enumerate_pixels() {
        let pb = b.get_pixel(x, y);
        let d = pa.0.iter().zip(pb.0).map(|(p, q)| p.abs_diff(q)).max()?;
        let cell = &mut cells[((y / step) * hw + x / step) as usize];
        *cell = (*cell).max(d);
    }
    let img = RgbImage::from_fn(hw, hh, |x, y| {
        let d = cells[(y * hw + x) as usize];
        if d == 0 {
            return image::Rgb([0, 0, 0]);
        }
        // Small differences (drift is a level or two) must be visible.
        let t = (f32::from(d) / 32.0).min(1.0);
        image::Rgb([
            (128.0 + 127.0 * (t * 2.0).min(1.0)) as u8,
            (255.0 * (t * 2.0 - 1.0).max(0.0)) as u8,
            0,
        ])
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).ok()?;
    Some(data_uri("image/png", &out.into_inner()))
}

/// One picture on the page: an image, or a note saying why there is none.
fn figure(side: &str, caption: String, src: Option<String>, note: String) -> serde_json::Value {
    json!({"side": side, "caption": caption, "src": src, "note": note})
}

/// The figures of a pair: its first image on each side and, when both
/// decode at one size, the heat map of their difference.
fn figures(fa: &Path, fb: &Path, p: &Pair) -> Vec<serde_json::Value> {
    let first = |s: &Option<super::Side>| {
        s.as_ref()
            .and_then(|s| s.files.iter().find(|f| is_image(f)).cloned())
    };
    let load = |folder: &Path, side: &str, rel: &Option<String>| match rel {
        None => Err(format!("no image in {side}")),
        Some(rel) => read(folder, side, rel).and_then(|b| decode(&b, side, rel)),
    };
    let (ra, rb) = (first(&p.a), first(&p.b));
    if ra.is_none() && rb.is_none() {
        return Vec::new();
    }
    let (ia, ib) = (load(fa, "A", &ra), load(fb, "B", &rb));
    let mut out = Vec::new();
    for (side, rel, img) in [("a", &ra, &ia), ("b", &rb, &ib)] {
        let caption = format!("{} {}", side.to_uppercase(), rel.as_deref().unwrap_or(""));
        match img {
            Ok(img) => out.push(figure(side, caption, preview(img), String::new())),
            Err(e) => out.push(figure(side, caption, None, e.clone())),
        }
    }
    if let (Ok(a), Ok(b)) = (&ia, &ib)
        && a.dimensions() == b.dimensions()
        && p.class != Class::Identical
    {
        out.push(figure(
            "diff",
            "difference (black: equal)".into(),
            heat_map(a, b),
            String::new(),
        ));
    }
    out
}

/// A JSON value as the template sees it (minijinja is built without serde).
fn template_value(v: serde_json::Value) -> Value {
    use serde_json::Value as J;
    match v {
        J::Null => Value::from(()),
        J::Bool(b) => Value::from(b),
        J::Number(n) => n
            .as_i64()
            .map(Value::from)
            .unwrap_or_else(|| Value::from(n.as_f64().unwrap_or(0.0))),
        J::String(s) => Value::from(s),
        J::Array(a) => Value::from(a.into_iter().map(template_value).collect::<Vec<_>>()),
        J::Object(o) => Value::from(
            o.into_iter()
                .map(|(k, v)| (k, template_value(v)))
                .collect::<std::collections::BTreeMap<_, _>>(),
        ),
    }
}

/// Writes the page of `c` to `path` (atomically), reading the images of
/// the pairs shown from the two folders again.
pub fn write_html(c: &Comparison, path: &Path) -> Result<(), CompareError> {
    let (fa, fb) = (c.a.as_path(), c.b.as_path());
    let shown = &c.pairs[..c.pairs.len().min(MAX_SHOWN)];
    let pairs: Vec<serde_json::Value> = shown
        .par_iter()
        .map(|p| {
            let id = |s: &Option<super::Side>| s.as_ref().map_or("", |s| s.id.as_str()).to_owned();
            json!({
                "label": p.label(),
                "class": p.class.name(),
                "a_id": id(&p.a),
                "b_id": id(&p.b),
                "psnr": p.psnr.map(|v| format!("{v:.2}")),
                "ssim": p.ssim.map(|v| format!("{v:.4}")),
                "reason": p.reason,
                "params": p.params,
                "figures": figures(fa, fb, p),
            })
        })
        .collect();
    let classes: Vec<serde_json::Value> = Class::ALL
        .iter()
        .map(|k| json!({"name": k.name(), "count": c.count(*k)}))
        .collect();
    let name = |p: &Path| crate::text::one_line(&p.display().to_string());
    let mut env = Environment::new();
    let render = |e: minijinja::Error| CompareError::Write {
        what: "-o",
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    };
    env.add_template("page.html", TEMPLATE).map_err(render)?;
    let html = env
        .get_template("page.html")
        .and_then(|t| {
            t.render(context! {
                a => name(&c.a),
                b => name(&c.b),
                counts => super::report::counts(c),
                threshold => c.threshold,
                classes => template_value(serde_json::Value::from(classes)),
                environment => c.environment.clone(),
                pairs => template_value(serde_json::Value::from(pairs)),
                hidden => c.pairs.len() - shown.len(),
                script => Value::from_safe_string(SCRIPT.to_string()),
                script_hash => script_hash(),
            })
        })
        .map_err(render)?;
    super::write_output(c, "-o", path, html.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_changed_pixel_shows_on_the_heat_map_of_a_large_image() {
        let a = RgbaImage::from_pixel(1000, 500, image::Rgba([9, 9, 9, 255]));
        let mut b = a.clone();
        b.put_pixel(999, 499, image::Rgba([10, 9, 9, 255]));
        let uri = heat_map(&a, &b).unwrap();
        use base64::Engine as _;
        let png = base64::engine::general_purpose::STANDARD
            .decode(uri.strip_prefix("data:image/png;base64,").unwrap())
            .unwrap();
        let heat = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!(heat.dimensions(), (250, 125));
        assert_ne!(heat.get_pixel(249, 124).0, [0, 0, 0]);
        assert_eq!(heat.get_pixel(0, 0).0, [0, 0, 0]);
    }
}
