//! The simulated nodes: what each node class the simulator knows does when
//! it runs (its output, the files it writes, its progress and its `ui`),
//! and the IS_CHANGED that goes into its cache key.
//!
//! Node outputs are small descriptors ([`Tensor`]: size, batch, colour), not
//! pixels; savers turn them into tiny PNGs whose colour is a function of the
//! producing graph (seed, cfg, prompt text…), so identical prompts give
//! identical bytes and different parameters different ones.
//!
//! It must not know the execution engine's order, caching or message
//! sequence ([`super::exec`]): a node sees only its own inputs, the
//! tensors its links point at, and the progress bar it reports to.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::exec::{Cache, Run, Stop};
use super::state::lock;
use super::{files, jpeg, media};

/// Sampler nodes: they take `steps × step_ms` and report each step.
const SAMPLERS: &[&str] = &[
    "KSampler",
    "KSamplerAdvanced",
    "SamplerCustom",
    "SamplerCustomAdvanced",
];

/// Largest side of the PNGs the sim writes: enough to tell images apart,
/// small enough to be written and served fast.
const MAX_SIDE: u32 = 64;

/// What a node produced, per output socket.
#[derive(Debug, Clone)]
pub(super) struct Tensor {
    width: u32,
    height: u32,
    batch: u32,
    rgb: [u8; 3],
    /// Exact colours (EmptyImage, ImageInvert) are the same for every batch
    /// image; hashed ones vary per image, as sampled images do.
    exact: bool,
    salt: [u8; 32],
    /// A string value (PrimitiveString), shown by PreviewAny.
    text: Option<String>,
}

impl Default for Tensor {
    fn default() -> Self {
        Tensor {
            width: 64,
            height: 64,
            batch: 1,
            rgb: [128, 128, 128],
            exact: false,
            salt: [0; 32],
            text: None,
        }
    }
}

impl Tensor {
    fn colour(&self, index: u32) -> [u8; 3] {
        if self.exact || index == 0 {
            return self.rgb;
        }
        let h = Sha256::new()
            .chain_update(self.salt)
            .chain_update(index.to_le_bytes())
            .finalize();
        [h[0], h[1], h[2]]
    }

    /// The PNG size: the nominal size scaled down to at most [`MAX_SIDE`].
    fn pixel_size(&self) -> (u32, u32) {
        let (w, h) = (self.width.max(1), self.height.max(1));
        let side = w.max(h);
        if side <= MAX_SIDE {
            return (w, h);
        }
        let scale = |v: u32| ((u64::from(v) * u64::from(MAX_SIDE)) / u64::from(side)).max(1) as u32;
        (scale(w), scale(h))
    }
}

impl Run<'_> {
    /// What node `id` (of class `class`) does when it runs: its output and
    /// its `ui`, when it reports one.
    pub(super) async fn behave(
        &mut self,
        cache: &Cache,
        id: &str,
        class: &str,
    ) -> Result<(Tensor, Option<Value>), Stop> {
        let base = self.base_tensor(cache, id);
        let mut ui: Option<Value> = None;
        let out = match class {
            "EmptyImage" => {
                let c = self.int_input(id, "color").unwrap_or(0).clamp(0, 0xFF_FFFF) as u32;
                Tensor {
                    rgb: [(c >> 16) as u8, (c >> 8) as u8, c as u8],
                    exact: true,
                    ..base
                }
            }
            "ImageInvert" => Tensor {
                rgb: base.rgb.map(|c| 255 - c),
                ..base
            },
            "LoadImage" | "LoadImageMask" => self.load_image(id)?,
            "SaveImage" | "PreviewImage" => {
                ui = Some(self.save_images(id, &base, class == "PreviewImage")?);
                base
            }
            "SaveImageWebsocket" => {
                self.save_websocket(id, &base)?;
                base
            }
            "TestSleep" => {
                self.test_sleep(id).await?;
                base
            }
            "SimNamedFiles" => {
                ui = Some(self.save_named(id, &base)?);
                base
            }
            "PrimitiveString" | "PrimitiveStringMultiline" => {
                let value = self
                    .inputs(id)
                    .and_then(|i| i.get("value"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                Tensor {
                    text: Some(value),
                    ..base
                }
            }
            "PreviewAny" => {
                let text = self
                    .inputs(id)
                    .and_then(|i| i.get("source"))
                    .map(|v| {
                        if v.is_array() {
                            self.linked(cache, v)
                                .and_then(|t| t.text)
                                .unwrap_or_else(|| "…".to_string())
                        } else if let Some(s) = v.as_str() {
                            s.to_string()
                        } else {
                            v.to_string()
                        }
                    })
                    .unwrap_or_default();
                ui = Some(json!({"text": [text]}));
                base
            }
            c if saver_kind(c).is_some() => {
                let kind = saver_kind(c).expect("matched above");
                ui = Some(self.save_files(id, &base, &kind)?);
                base
            }
            c if SAMPLERS.contains(&c) => {
                self.sample(id, &base).await?;
                base
            }
            _ => base,
        };
        Ok((out, ui))
    }

    /// The node's IS_CHANGED, part of its cache key; `None` when it is never
    /// cached.
    pub(super) fn is_changed(&self, id: &str, class: &str) -> Option<Value> {
        match class {
            "LoadImage" | "LoadImageMask" => {
                let value = self.inputs(id)?.get("image")?.as_str()?;
                let path = files::resolve_input(&self.shared.dirs, value)?;
                let bytes = std::fs::read(path).ok()?;
                Some(json!(hex::encode(Sha256::digest(&bytes))))
            }
            // IS_CHANGED returns the time: never cached.
            "SaveImageWebsocket" => None,
            _ => Some(Value::Null),
        }
    }

    /// The generic output of a node: size and batch from its first linked
    /// image-like input (IMAGE, LATENT, MASK; else any link) or its own
    /// width/height/batch_size, colour from its signature.
    fn base_tensor(&self, cache: &Cache, id: &str) -> Tensor {
        let mut t = Tensor::default();
        let class = self.shared.catalogue.class(self.class_of(id));
        let inputs = self.inputs(id).cloned().unwrap_or_default();
        let mut links: Vec<(bool, &Value)> = match class {
            Some(c) => c
                .inputs
                .iter()
                .filter_map(|s| {
                    let v = inputs.get(&s.name).filter(|v| v.is_array())?;
                    let pixels = matches!(s.type_name(), Some("IMAGE" | "LATENT" | "MASK"));
                    Some((pixels, v))
                })
                .collect(),
            None => inputs
                .values()
                .filter(|v| v.is_array())
                .map(|v| (false, v))
                .collect(),
        };
        // Stable: image-like inputs first, each group in declaration order.
        links.sort_by_key(|(pixels, _)| !pixels);
        let mut inherited = false;
        if let Some(src) = links.iter().find_map(|(_, v)| self.linked(cache, v)) {
            t = src;
            inherited = true;
        }
        let dim = |name: &str| {
            self.int_input(id, name)
                .filter(|v| *v > 0)
                .map(|v| v.min(1 << 20) as u32)
        };
        if let Some(w) = dim("width") {
            t.width = w;
        }
        if let Some(h) = dim("height") {
            t.height = h;
        }
        if let Some(b) = dim("batch_size") {
            t.batch = b;
        }
        let sig = self.sigs.get(id).cloned().flatten().unwrap_or_default();
        let digest = Sha256::digest(sig.as_bytes());
        t.salt.copy_from_slice(&digest);
        // Pass-through nodes that only look at their input keep an exact
        // colour only if nothing about them could change the pixels.
        if !(inherited && t.exact && is_pass_through(self.class_of(id))) {
            t.rgb = [digest[0], digest[1], digest[2]];
            t.exact = false;
        }
        t
    }

    fn load_image(&self, id: &str) -> Result<Tensor, Stop> {
        let value = self
            .inputs(id)
            .and_then(|i| i.get("image"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let path = files::resolve_input(&self.shared.dirs, &value);
        let bytes = path.as_ref().and_then(|p| std::fs::read(p).ok());
        let shown = path
            .as_ref()
            .map_or(value.clone(), |p| p.display().to_string());
        let unidentified = || {
            Stop::Failed {
            exception_type: "PIL.UnidentifiedImageError".into(),
            message: format!("cannot identify image file '{shown}'"),
            traceback: vec![
                "  File \"/srv/comfyui/app/nodes.py\", line 1690, in load_image\n    img = node_helpers.pillow(Image.open, image_path)\n".into(),
            ],
        }
        };
        let Some(bytes) = bytes else {
            return Err(Stop::Failed {
                exception_type: "FileNotFoundError".into(),
                message: format!("[Errno 2] No such file or directory: '{shown}'"),
                traceback: Vec::new(),
            });
        };
        let (width, height) = if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            let decoder = png::Decoder::new(std::io::Cursor::new(&bytes));
            match decoder.read_info() {
                Ok(reader) => {
                    let info = reader.info();
                    (info.width, info.height)
                }
                Err(_) => return Err(unidentified()),
            }
        } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF])
            || (bytes.len() > 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP")
        {
            (64, 64)
        } else {
            return Err(unidentified());
        };
        let digest = Sha256::digest(&bytes);
        let mut salt = [0u8; 32];
        salt.copy_from_slice(&digest);
        Ok(Tensor {
            width,
            height,
            batch: 1,
            rgb: [digest[0], digest[1], digest[2]],
            exact: true,
            salt,
            text: None,
        })
    }

    fn png_for(&self, t: &Tensor, index: u32) -> Vec<u8> {
        let (w, h) = t.pixel_size();
        let extra = self
            .item
            .extra_data
            .get("extra_pnginfo")
            .and_then(Value::as_object);
        let mut colour = t.colour(index);
        if self.drift {
            // Slight: one level of one channel, as numeric noise would.
            colour[0] = if colour[0] == u8::MAX {
                colour[0] - 1
            } else {
                colour[0] + 1
            };
        }
        files::encode_png(w, h, colour, &files::png_texts(&self.item.prompt, extra))
    }

    /// SaveImage / PreviewImage: real names, real PNGs.
    fn save_images(&self, id: &str, t: &Tensor, preview: bool) -> Result<Value, Stop> {
        let (base_dir, kind, prefix) = if preview {
            (
                &self.shared.dirs.temp,
                "temp",
                format!("ComfyUI_temp_{}", self.shared.temp_suffix),
            )
        } else {
            let p = self
                .inputs(id)
                .and_then(|i| i.get("filename_prefix"))
                .and_then(Value::as_str)
                .unwrap_or("ComfyUI")
                .to_string();
            (&self.shared.dirs.output, "output", p)
        };
        let target = files::save_target(&prefix, base_dir, t.width, t.height).map_err(|message| {
            Stop::Failed {
                exception_type: "Exception".into(),
                message,
                traceback: vec![
                    "  File \"/srv/comfyui/app/nodes.py\", line 1607, in save_images\n    full_output_folder, filename, counter, subfolder, filename_prefix = folder_paths.get_save_image_path(filename_prefix, self.output_dir, images[0].shape[1], images[0].shape[0])\n".into(),
                    "  File \"/srv/comfyui/app/folder_paths.py\", line 464, in get_save_image_path\n    raise Exception(err)\n".into(),
                ],
            }
        })?;
        let io_fail = |e: std::io::Error| Stop::Failed {
            exception_type: "OSError".into(),
            message: e.to_string(),
            traceback: Vec::new(),
        };
        let mut counters = lock(&self.shared.counters);
        let mut counter = counters
            .next(&target.folder, &target.filename)
            .map_err(io_fail)?;
        let mut images = Vec::with_capacity(t.batch as usize);
        for i in 0..t.batch {
            let name = target.filename.replace("%batch_num%", &i.to_string());
            let file = format!("{name}_{counter:05}_.png");
            files::write_file(&target.folder.join(&file), &self.png_for(t, i)).map_err(io_fail)?;
            let named = if self.shared.config.hostile_filenames && !preview {
                if counter % 2 == 0 {
                    format!("../../{file}")
                } else {
                    target.folder.join(&file).to_string_lossy().into_owned()
                }
            } else {
                file.clone()
            };
            images.push(json!({"filename": named, "subfolder": target.subfolder, "type": kind}));
            counter += 1;
        }
        counters.wrote(&target.folder, &target.filename, counter);
        Ok(json!({"images": images}))
    }

    /// The savers other than SaveImage (video, audio, latents, 3D, the
    /// VHS stand-in): real naming and counters, files from [`media`], the
    /// `ui` the real node reports.
    fn save_files(&self, id: &str, t: &Tensor, kind: &SaverKind) -> Result<Value, Stop> {
        let input = |name: &str| self.inputs(id).and_then(|i| i.get(name));
        let vhs_format = kind.vhs.then(|| {
            input("format")
                .and_then(Value::as_str)
                .unwrap_or("image/gif")
                .to_string()
        });
        let ext = match (&vhs_format, kind.ext) {
            (Some(format), _) => match format.as_str() {
                "image/webp" => "webp",
                "video/h264-mp4" => "mp4",
                "video/webm" => "webm",
                _ => "gif",
            },
            (None, "video") => match input("format").and_then(Value::as_str) {
                Some("webm") => "webm",
                _ => "mp4",
            },
            (None, ext) => ext,
        };
        let temp =
            kind.temp || (kind.vhs && input("save_output").and_then(Value::as_bool) == Some(false));
        let (base_dir, type_name, prefix) = if temp {
            (
                &self.shared.dirs.temp,
                "temp",
                format!("ComfyUI_temp_{}", self.shared.temp_suffix),
            )
        } else {
            let p = input("filename_prefix")
                .and_then(Value::as_str)
                .unwrap_or(kind.default_prefix)
                .to_string();
            (&self.shared.dirs.output, "output", p)
        };
        let target =
            files::save_target(&prefix, base_dir, t.width, t.height).map_err(|message| {
                Stop::Failed {
                    exception_type: "Exception".into(),
                    message,
                    traceback: Vec::new(),
                }
            })?;
        let io_fail = |e: std::io::Error| Stop::Failed {
            exception_type: "OSError".into(),
            message: e.to_string(),
            traceback: Vec::new(),
        };
        let fps = input("fps")
            .or_else(|| input("frame_rate"))
            .and_then(Value::as_f64)
            .unwrap_or(8.0);
        let frames: Vec<[u8; 3]> = (0..t.batch.clamp(1, 1024)).map(|i| t.colour(i)).collect();
        let (w, h) = t.pixel_size();
        let files_made = if kind.one_file { 1 } else { t.batch.max(1) };
        let mut counters = lock(&self.shared.counters);
        let mut counter = counters
            .next(&target.folder, &target.filename)
            .map_err(io_fail)?;
        let mut items = Vec::new();
        for i in 0..files_made {
            let name = target.filename.replace("%batch_num%", &i.to_string());
            let file = if kind.vhs {
                format!("{name}_{counter:05}.{ext}")
            } else {
                format!("{name}_{counter:05}_.{ext}")
            };
            let mut content = t.salt.to_vec();
            content.extend_from_slice(&i.to_le_bytes());
            let bytes = match ext {
                "webp" => media::animated_webp(w, h, &frames, fps),
                "png" => media::apng(w, h, &frames, fps),
                "latent" => media::latent(t.width, t.height, t.batch),
                "glb" => media::glb(&hex::encode(&content[..8])),
                other => media::stand_in(other, &content),
            };
            let path = target.folder.join(&file);
            files::write_file(&path, &bytes).map_err(io_fail)?;
            let named = if self.shared.config.hostile_filenames && !temp {
                if counter % 2 == 0 {
                    format!("../../{file}")
                } else {
                    path.to_string_lossy().into_owned()
                }
            } else {
                file.clone()
            };
            let mut item =
                json!({"filename": named, "subfolder": target.subfolder, "type": type_name});
            if let (Some(format), Value::Object(m)) = (&vhs_format, &mut item) {
                let stem = file.rsplit_once('.').map_or(file.as_str(), |(s, _)| s);
                m.insert("format".into(), json!(format));
                m.insert("frame_rate".into(), json!(fps));
                m.insert("workflow".into(), json!(format!("{stem}.png")));
                m.insert("fullpath".into(), json!(path.to_string_lossy()));
            }
            items.push(item);
            counter += 1;
        }
        counters.wrote(&target.folder, &target.filename, counter);
        let mut ui = Map::new();
        ui.insert(kind.key.into(), Value::Array(items.clone()));
        if kind.animated {
            ui.insert("animated".into(), json!([true]));
        }
        if kind.vhs && self.shared.config.duplicate_outputs {
            ui.insert("video".into(), Value::Array(items));
        }
        Ok(Value::Object(ui))
    }

    /// SimNamedFiles: each line of `filenames` a file of exactly that name
    /// in `output/named/`, listed under `images`.
    fn save_named(&self, id: &str, t: &Tensor) -> Result<Value, Stop> {
        let names = self
            .inputs(id)
            .and_then(|i| i.get("filenames"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let folder = self.shared.dirs.output.join("named");
        let fail = |message: String| Stop::Failed {
            exception_type: "OSError".into(),
            message,
            traceback: Vec::new(),
        };
        let mut items = Vec::new();
        for (i, name) in names
            .lines()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .enumerate()
        {
            if name.contains(['/', '\\']) || name == "." || name == ".." {
                return Err(fail(format!("not a plain file name: {name:?}")));
            }
            let ext = name
                .rsplit_once('.')
                .map(|(_, e)| e.to_ascii_lowercase())
                .unwrap_or_default();
            let bytes = if ext == "png" {
                self.png_for(t, i as u32)
            } else {
                let mut content = t.salt.to_vec();
                content.extend_from_slice(name.as_bytes());
                media::stand_in(&ext, &content)
            };
            std::fs::create_dir_all(&folder)
                .and_then(|()| files::write_file(&folder.join(name), &bytes))
                .map_err(|e| fail(e.to_string()))?;
            items.push(json!({"filename": name, "subfolder": "named", "type": "output"}));
        }
        Ok(json!({"images": items}))
    }

    /// SaveImageWebsocket: one progress and one PNG frame per image.
    fn save_websocket(&mut self, id: &str, t: &Tensor) -> Result<(), Stop> {
        for i in 0..t.batch {
            let png = Bytes::from(self.png_for(t, i));
            self.progress_update(id, json!(i), json!(t.batch), Some((&png, false)))?;
        }
        Ok(())
    }

    /// The test pack's TestSleep: sleeps, float progress about every 10 ms.
    async fn test_sleep(&mut self, id: &str) -> Result<(), Stop> {
        let seconds = self
            .inputs(id)
            .and_then(|i| i.get("seconds"))
            .and_then(Value::as_f64)
            .unwrap_or(1.0)
            .max(0.0);
        // As the test pack: `while now < expiration`, an update then a
        // 10 ms sleep per turn, the value clamped to the total.
        let start = Instant::now();
        let mut elapsed = 0.0;
        while elapsed < seconds {
            elapsed = start.elapsed().as_secs_f64();
            self.progress_update(id, json!(elapsed.min(seconds)), json!(seconds), None)?;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// The sampler's step count; custom samplers read it from the node that
    /// makes their sigmas (BasicScheduler & co.).
    fn steps(&self, id: &str) -> u64 {
        if let Some(s) = self.int_input(id, "steps") {
            return s.max(0) as u64;
        }
        let mut seen = HashSet::new();
        let mut stack: Vec<String> = vec![id.to_string()];
        while let Some(n) = stack.pop() {
            if !seen.insert(n.clone()) {
                continue;
            }
            if n != id
                && let Some(s) = self.int_input(&n, "steps")
            {
                return s.max(0) as u64;
            }
            if let Some(inputs) = self.inputs(&n) {
                for v in inputs.values() {
                    if let Some(src) = v.get(0).and_then(Value::as_str)
                        && v.as_array().is_some_and(|a| a.len() == 2)
                    {
                        stack.push(src.to_string());
                    }
                }
            }
        }
        20
    }

    /// Steps × `step_ms` × (a + b·N) for a batch of N ([`BATCH_FIXED`],
    /// [`BATCH_PER_IMAGE`]), one progress per step; with a preview method in
    /// `extra_data`, a JPEG preview per step, as the real server.
    async fn sample(&mut self, id: &str, t: &Tensor) -> Result<(), Stop> {
        let steps = self.steps(id);
        let step = Duration::from_millis(self.shared.config.step_ms)
            .mul_f64(BATCH_FIXED + BATCH_PER_IMAGE * f64::from(t.batch.max(1)));
        let previews = self
            .item
            .extra_data
            .get("preview_method")
            .and_then(Value::as_str)
            .is_some_and(|m| !matches!(m, "none" | "default"));
        let (w, h) = t.pixel_size();
        let start = tokio::time::Instant::now();
        for i in 1..=steps {
            if step.is_zero() {
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep_until(start + step * (i as u32)).await;
            }
            let preview = previews.then(|| Bytes::from(jpeg::solid(w, h, t.colour(i as u32))));
            self.progress_update(
                id,
                json!(i),
                json!(steps),
                preview.as_ref().map(|p| (p, true)),
            )?;
        }
        Ok(())
    }
}

/// A batch of N costs `a + b·N` times one image's steps: a batch of 1
/// costs what it always did (a + b = 1), a batch of 8 costs 5.2, about the
/// 1.5× per image users report for small models on GPUs (the real ComfyUI
/// 0.8 on a CPU measured about 1.25×).
const BATCH_FIXED: f64 = 0.4;
/// See [`BATCH_FIXED`].
const BATCH_PER_IMAGE: f64 = 0.6;

/// How a saver other than SaveImage names and groups its files.
struct SaverKind {
    /// The `ui` key its files are listed under.
    key: &'static str,
    /// The extension (`video`: from the node's `format` input).
    ext: &'static str,
    /// The node's default `filename_prefix`.
    default_prefix: &'static str,
    /// Adds `"animated": [true]`.
    animated: bool,
    /// The whole batch goes into one file (animations, latents).
    one_file: bool,
    /// Writes to temp (previews).
    temp: bool,
    /// The VideoHelperSuite stand-in: `gifs`, `format`, its own naming.
    vhs: bool,
}

fn saver_kind(class: &str) -> Option<SaverKind> {
    let k = |key, ext, default_prefix, animated, one_file| SaverKind {
        key,
        ext,
        default_prefix,
        animated,
        one_file,
        temp: false,
        vhs: false,
    };
    Some(match class {
        "SaveAnimatedWEBP" => k("images", "webp", "ComfyUI", true, true),
        "SaveAnimatedPNG" => k("images", "png", "ComfyUI", true, true),
        "SaveWEBM" => k("images", "webm", "ComfyUI", true, true),
        "SaveVideo" => k("images", "video", "video/ComfyUI", true, true),
        "SaveAudio" => k("audio", "flac", "audio/ComfyUI", false, false),
        "SaveAudioMP3" => k("audio", "mp3", "audio/ComfyUI", false, false),
        "SaveAudioOpus" => k("audio", "opus", "audio/ComfyUI", false, false),
        "PreviewAudio" => SaverKind {
            temp: true,
            ..k("audio", "flac", "", false, false)
        },
        "SaveLatent" => k("latents", "latent", "latents/ComfyUI", false, true),
        "SaveGLB" => k("3d", "glb", "mesh/ComfyUI", false, false),
        "VHS_VideoCombine" => SaverKind {
            vhs: true,
            ..k("gifs", "gif", "AnimateDiff", false, true)
        },
        _ => return None,
    })
}

/// Nodes whose output pixels are their input's (so an exact colour stays
/// exact through them).
fn is_pass_through(class: &str) -> bool {
    matches!(
        class,
        "TestSleep" | "SaveImage" | "PreviewImage" | "SaveImageWebsocket"
    )
}
