//! `comfy-batch bench convert --nodes N`: how long converting a synthetic
//! UI-format workflow of about N nodes takes (Reroutes, a PrimitiveNode, a
//! bypassed and a muted node, and a subgraph instantiated several times),
//! after the catalogue is parsed once.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cli::{CliError, Exit};
use crate::convert::{NodeDefs, convert};

/// Arguments of `comfy-batch bench convert`.
#[derive(Debug, clap::Args)]
pub struct BenchConvertArgs {
    /// About how many nodes the workflow has.
    #[arg(long, default_value_t = 500)]
    pub nodes: usize,
    /// How many conversions to time.
    #[arg(long, default_value_t = 50)]
    pub repeat: usize,
}

/// A text-to-image chain per 10 nodes, joined through Reroutes, with a few
/// nodes inside a subgraph instantiated once per chain.
fn synthetic(nodes: usize) -> Value {
    let chains = nodes.div_ceil(10).max(1);
    let mut list = Vec::new();
    let mut links = Vec::new();
    let mut link = 0i64;
    let mut add_link = |links: &mut Vec<Value>, from: i64, slot: i64, to: i64, to_slot: i64| {
        link += 1;
        links.push(json!([link, from, slot, to, to_slot, "*"]));
        link
    };
    for c in 0..chains as i64 {
        let b = c * 10 + 1;
        let (ckpt, pos, neg, lat, ks, dec, save, rr, prim, sg) = (
            b,
            b + 1,
            b + 2,
            b + 3,
            b + 4,
            b + 5,
            b + 6,
            b + 7,
            b + 8,
            b + 9,
        );
        let l_model = add_link(&mut links, ckpt, 0, ks, 0);
        let l_clip_rr = add_link(&mut links, ckpt, 1, rr, 0);
        let l_clip_pos = add_link(&mut links, rr, 0, pos, 0);
        let l_clip_neg = add_link(&mut links, rr, 0, neg, 0);
        let l_pos = add_link(&mut links, pos, 0, ks, 1);
        let l_neg = add_link(&mut links, neg, 0, ks, 2);
        let l_lat = add_link(&mut links, lat, 0, sg, 0);
        let l_sg = add_link(&mut links, sg, 0, ks, 3);
        let l_steps = add_link(&mut links, prim, 0, ks, 4);
        let l_samples = add_link(&mut links, ks, 0, dec, 0);
        let l_vae = add_link(&mut links, ckpt, 2, dec, 1);
        let l_img = add_link(&mut links, dec, 0, save, 0);
        list.extend([
            json!({"id": ckpt, "type": "CheckpointLoaderSimple", "widgets_values": ["sd15.safetensors"],
                   "outputs": [{"type": "MODEL", "links": [l_model]}, {"type": "CLIP", "links": [l_clip_rr]},
                               {"type": "VAE", "links": [l_vae]}]}),
            json!({"id": rr, "type": "Reroute", "inputs": [{"name": "", "type": "*", "link": l_clip_rr}],
                   "outputs": [{"type": "CLIP", "links": [l_clip_pos, l_clip_neg]}]}),
            json!({"id": pos, "type": "CLIPTextEncode", "widgets_values": [format!("subject {c} // note")],
                   "inputs": [{"name": "clip", "type": "CLIP", "link": l_clip_pos}],
                   "outputs": [{"type": "CONDITIONING", "links": [l_pos]}]}),
            json!({"id": neg, "type": "CLIPTextEncode", "widgets_values": ["lowres"], "mode": if c % 7 == 3 { 4 } else { 0 },
                   "inputs": [{"name": "clip", "type": "CLIP", "link": l_clip_neg}],
                   "outputs": [{"type": "CONDITIONING", "links": [l_neg]}]}),
            json!({"id": lat, "type": "EmptyLatentImage", "widgets_values": [512, 512, 1],
                   "outputs": [{"type": "LATENT", "links": [l_lat]}]}),
            json!({"id": sg, "type": "bench-sub", "inputs": [{"name": "samples", "type": "LATENT", "link": l_lat}],
                   "outputs": [{"type": "LATENT", "links": [l_sg]}], "widgets_values": [2.0]}),
            json!({"id": prim, "type": "PrimitiveNode", "widgets_values": [20 + c, "fixed"],
                   "outputs": [{"type": "INT", "links": [l_steps]}]}),
            json!({"id": ks, "type": "KSampler", "widgets_values": [c, "fixed", 20, 7, "euler", "normal", 1],
                   "inputs": [{"name": "model", "type": "MODEL", "link": l_model},
                              {"name": "positive", "type": "CONDITIONING", "link": l_pos},
                              {"name": "negative", "type": "CONDITIONING", "link": l_neg},
                              {"name": "latent_image", "type": "LATENT", "link": l_sg},
                              {"name": "steps", "type": "INT", "link": l_steps, "widget": {"name": "steps"}}],
                   "outputs": [{"type": "LATENT", "links": [l_samples]}]}),
            json!({"id": dec, "type": "VAEDecode",
                   "inputs": [{"name": "samples", "type": "LATENT", "link": l_samples},
                              {"name": "vae", "type": "VAE", "link": l_vae}],
                   "outputs": [{"type": "IMAGE", "links": [l_img]}]}),
            json!({"id": save, "type": "SaveImage", "widgets_values": ["bench"], "mode": if c % 11 == 5 { 2 } else { 0 },
                   "inputs": [{"name": "images", "type": "IMAGE", "link": l_img}]}),
        ]);
    }
    let sub = json!({"id": "bench-sub", "name": "Upscale",
        "inputs": [{"name": "samples", "type": "LATENT", "linkIds": [1]},
                   {"name": "scale_by", "type": "FLOAT", "linkIds": [2]}],
        "outputs": [{"name": "LATENT", "type": "LATENT", "linkIds": [3]}],
        "nodes": [{"id": 1, "type": "LatentUpscaleBy", "widgets_values": ["nearest-exact", 1.5],
                   "inputs": [{"name": "samples", "type": "LATENT", "link": 1},
                              {"name": "scale_by", "type": "FLOAT", "link": 2, "widget": {"name": "scale_by"}}],
                   "outputs": [{"type": "LATENT", "links": [3]}]}],
        "links": [{"id": 1, "origin_id": -10, "origin_slot": 0, "target_id": 1, "target_slot": 0, "type": "LATENT"},
                  {"id": 2, "origin_id": -10, "origin_slot": 1, "target_id": 1, "target_slot": 1, "type": "FLOAT"},
                  {"id": 3, "origin_id": 1, "origin_slot": 0, "target_id": -20, "target_slot": 0, "type": "LATENT"}]});
    json!({"nodes": list, "links": links, "definitions": {"subgraphs": [sub]}, "version": 0.4})
}

/// Runs the benchmark.
pub fn execute(args: BenchConvertArgs) -> Result<Exit, CliError> {
    let start = Instant::now();
    let catalogue = NodeDefs::builtin();
    let parse = start.elapsed();
    let workflow = synthetic(args.nodes);
    let text = workflow.to_string();
    let ui = workflow
        .as_object()
        .expect("the synthetic workflow is an object");
    let mut times: Vec<Duration> = Vec::new();
    let mut nodes = 0;
    for _ in 0..args.repeat.max(1) {
        let t = Instant::now();
        let done = convert(ui, &catalogue)?;
        times.push(t.elapsed());
        nodes = done.prompt.len();
    }
    // With reading the JSON text, as `plan` does.
    let t = Instant::now();
    let parsed: Value = serde_json::from_str(&text).expect("the synthetic workflow is JSON");
    let reparsed = parsed.as_object().map(|ui| convert(ui, &catalogue));
    let with_json = t.elapsed();
    std::hint::black_box(reparsed);
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "bench convert: {} UI nodes ({} KB) -> {nodes} prompt nodes",
        ui["nodes"].as_array().map_or(0, Vec::len),
        text.len() / 1024
    );
    println!("catalogue parse: {:.1} ms (once per run)", ms(parse));
    println!(
        "convert:         median {:.2} ms, max {:.2} ms over {} runs",
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1]),
        times.len()
    );
    println!("json + convert:  {:.2} ms", ms(with_json));
    println!(
        "first conversion of a run (catalogue + json + convert): {:.1} ms",
        ms(parse + with_json)
    );
    Ok(Exit::Ok)
}
