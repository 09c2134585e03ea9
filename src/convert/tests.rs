//! Unit tests of the conversion rules and of hostile input, with the
//! built-in catalogue. The shared ground-truth pairs are compared in
//! `tests/it/convert.rs`.

use serde_json::{Map, Value, json};

use super::*;

fn cat() -> &'static NodeDefs {
    static CAT: std::sync::OnceLock<NodeDefs> = std::sync::OnceLock::new();
    CAT.get_or_init(NodeDefs::builtin)
}

fn ui(v: Value) -> Map<String, Value> {
    v.as_object().expect("object").clone()
}

fn ok(v: Value) -> Converted {
    convert(&ui(v), cat()).expect("converts")
}

fn err(v: Value) -> Vec<String> {
    convert(&ui(v), cat())
        .expect_err("fails")
        .0
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn image(id: i64, links: Value) -> Value {
    json!({"id": id, "type": "EmptyImage", "widgets_values": [64, 32, 1, 0],
           "outputs": [{"type": "IMAGE", "links": links}]})
}

fn preview(id: i64, link: i64) -> Value {
    json!({"id": id, "type": "PreviewImage", "inputs": [{"name": "images", "type": "IMAGE", "link": link}]})
}

#[test]
fn widget_values_map_to_input_names_and_links_to_origins() {
    let done = ok(json!({"nodes": [image(1, json!([1])), preview(2, 1)],
        "links": [[1, 1, 0, 2, 0, "IMAGE"]]}));
    assert_eq!(
        Value::Object(done.prompt),
        json!({
            "1": {"inputs": {"width": 64, "height": 32, "batch_size": 1, "color": 0},
                  "class_type": "EmptyImage", "_meta": {"title": "EmptyImage"}},
            "2": {"inputs": {"images": ["1", 0]}, "class_type": "PreviewImage",
                  "_meta": {"title": "Preview Image"}}
        })
    );
}

#[test]
fn rule_missing_widget_default() {
    let done = ok(
        json!({"nodes": [{"id": 1, "type": "EmptyImage", "widgets_values": [64, 32]}], "links": []}),
    );
    assert_eq!(done.prompt["1"]["inputs"]["batch_size"], 1);
    assert_eq!(done.prompt["1"]["inputs"]["color"], 0);
    assert!(
        done.report
            .fired(RuleKind::MissingWidgetDefault, "1", "color")
    );
    assert!(
        !done
            .report
            .fired(RuleKind::MissingWidgetDefault, "1", "width")
    );
}

#[test]
fn rule_upload_value_not_sent() {
    let done = ok(
        json!({"nodes": [{"id": 1, "type": "LoadImage", "widgets_values": ["cat.png", "image"]}], "links": []}),
    );
    assert_eq!(done.prompt["1"]["inputs"], json!({"image": "cat.png"}));
    assert!(
        done.report
            .fired(RuleKind::UploadValueNotSent, "1", "upload")
    );
}

#[test]
fn rule_comments_stripped_and_dynamic_prompt_kept() {
    let done = ok(json!({"nodes": [{"id": 6, "type": "CLIPTextEncode",
        "widgets_values": ["a {red|blue} fox // note\n/* draft */in snow"]}], "links": []}));
    assert_eq!(
        done.prompt["6"]["inputs"]["text"],
        "a {red|blue} fox \nin snow"
    );
    assert!(done.report.fired(RuleKind::CommentsStripped, "6", "text"));
    assert!(done.report.fired(RuleKind::DynamicPromptKept, "6", "text"));
    let warnings = done.report.warnings();
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].contains("templates:"), "{warnings:?}");
}

#[test]
fn rule_title_from_display_name() {
    let done = ok(json!({"nodes": [{"id": 1, "type": "ImageInvert"},
        {"id": 2, "type": "ImageInvert", "title": "Mine"}], "links": []}));
    assert_eq!(done.prompt["1"]["_meta"]["title"], "Invert Image");
    assert_eq!(done.prompt["2"]["_meta"]["title"], "Mine");
    assert!(
        done.report
            .fired(RuleKind::TitleFromDisplayName, "1", "_meta.title")
    );
    assert!(
        !done
            .report
            .fired(RuleKind::TitleFromDisplayName, "2", "_meta.title")
    );
}

#[test]
fn seeds_have_a_control_value_that_is_not_sent() {
    let done = ok(json!({"nodes": [{"id": 3, "type": "KSampler",
        "widgets_values": [42, "randomize", 20, 8, "euler", "normal", 1]}], "links": []}));
    let inputs = &done.prompt["3"]["inputs"];
    assert_eq!(inputs["seed"], 42);
    assert_eq!(inputs["steps"], 20);
    assert_eq!(inputs["denoise"], 1);
    assert!(inputs.get("control_after_generate").is_none());
}

#[test]
fn widgets_values_as_an_object_map_by_name() {
    let done = ok(json!({"nodes": [{"id": 1, "type": "EmptyImage",
        "widgets_values": {"height": 8, "width": 16, "unknown": 1}}], "links": []}));
    assert_eq!(done.prompt["1"]["inputs"]["width"], 16);
    assert_eq!(done.prompt["1"]["inputs"]["height"], 8);
}

#[test]
fn list_values_are_wrapped() {
    let done = ok(
        json!({"nodes": [{"id": 1, "type": "EmptyImage", "widgets_values": [[1, 2], 2, 1, 0]}], "links": []}),
    );
    assert_eq!(
        done.prompt["1"]["inputs"]["width"],
        json!({"__value__": [1, 2]})
    );
}

#[test]
fn reroutes_primitives_and_notes_are_resolved_away() {
    let done = ok(json!({"nodes": [
        image(1, json!([1])),
        {"id": 2, "type": "Reroute", "inputs": [{"name": "", "type": "*", "link": 1}],
         "outputs": [{"type": "IMAGE", "links": [2]}]},
        preview(3, 2),
        {"id": 4, "type": "PrimitiveNode", "widgets_values": [99, "fixed"],
         "outputs": [{"type": "INT", "links": [3]}]},
        {"id": 5, "type": "EmptyImage", "widgets_values": [1, 1, 1, 0],
         "inputs": [{"name": "width", "type": "INT", "link": 3, "widget": {"name": "width"}}]},
        {"id": 6, "type": "Note", "widgets_values": ["hello"]},
        {"id": 7, "type": "MarkdownNote", "widgets_values": ["# hi"]}],
        "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"], [3, 4, 0, 5, 0, "INT"]]}));
    let ids: Vec<&String> = done.prompt.keys().collect();
    assert_eq!(ids, ["1", "3", "5"]);
    assert_eq!(done.prompt["3"]["inputs"]["images"], json!(["1", 0]));
    assert_eq!(done.prompt["5"]["inputs"]["width"], 99);
}

#[test]
fn muted_nodes_are_dropped_with_their_links_and_bypassed_nodes_bridged() {
    let done = ok(json!({"nodes": [
        image(1, json!([1])),
        {"id": 2, "type": "ImageInvert", "mode": 4, "inputs": [{"name": "image", "type": "IMAGE", "link": 1}],
         "outputs": [{"type": "IMAGE", "links": [2]}]},
        preview(3, 2),
        {"id": 4, "type": "EmptyImage", "mode": 2, "widgets_values": [1, 1, 1, 0],
         "outputs": [{"type": "IMAGE", "links": [3]}]},
        {"id": 5, "type": "ImageInvert", "inputs": [{"name": "image", "type": "IMAGE", "link": 3}]}],
        "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"], [3, 4, 0, 5, 0, "IMAGE"]]}));
    assert_eq!(done.prompt["3"]["inputs"]["images"], json!(["1", 0]));
    assert!(done.prompt.get("2").is_none() && done.prompt.get("4").is_none());
    assert_eq!(done.prompt["5"]["inputs"], json!({}));
}

/// A subgraph holding `ImageInvert` (inner id 1) fed by its input 0, and an
/// `EmptyImage` (inner id 2) whose width is promoted as input 1.
fn subgraph(id: &str, inner: Value) -> Value {
    json!({"id": id, "name": "S",
        "inputs": [{"name": "image", "type": "IMAGE", "linkIds": [10]},
                   {"name": "width", "type": "INT", "linkIds": [11]}],
        "outputs": [{"name": "IMAGE", "type": "IMAGE", "linkIds": [12]}],
        "nodes": inner,
        "links": [
            {"id": 10, "origin_id": -10, "origin_slot": 0, "target_id": 1, "target_slot": 0, "type": "IMAGE"},
            {"id": 11, "origin_id": -10, "origin_slot": 1, "target_id": 2, "target_slot": 0, "type": "INT"},
            {"id": 12, "origin_id": 1, "origin_slot": 0, "target_id": -20, "target_slot": 0, "type": "IMAGE"}]})
}

fn inner_nodes() -> Value {
    json!([
        {"id": 1, "type": "ImageInvert", "inputs": [{"name": "image", "type": "IMAGE", "link": 10}],
         "outputs": [{"type": "IMAGE", "links": [12]}]},
        {"id": 2, "type": "EmptyImage", "widgets_values": [5, 6, 1, 0],
         "inputs": [{"name": "width", "type": "INT", "link": 11, "widget": {"name": "width"}}]}])
}

#[test]
fn subgraphs_expand_with_instance_ids_and_promoted_widgets() {
    let done = ok(json!({"nodes": [
        image(1, json!([1])),
        {"id": 7, "type": "sg-1", "inputs": [{"name": "image", "type": "IMAGE", "link": 1}],
         "outputs": [{"type": "IMAGE", "links": [2]}], "widgets_values": [77]},
        preview(3, 2)],
        "links": [[1, 1, 0, 7, 0, "IMAGE"], [2, 7, 0, 3, 0, "IMAGE"]],
        "definitions": {"subgraphs": [subgraph("sg-1", inner_nodes())]}}));
    assert_eq!(done.prompt["7:1"]["inputs"]["image"], json!(["1", 0]));
    assert_eq!(done.prompt["3"]["inputs"]["images"], json!(["7:1", 0]));
    assert_eq!(done.prompt["7:2"]["inputs"]["width"], 77);
    assert_eq!(done.prompt["7:2"]["inputs"]["height"], 6);
    assert!(done.prompt.get("7").is_none());
}

#[test]
fn nested_subgraphs_get_nested_ids() {
    let outer = json!({"id": "outer", "name": "O",
        "inputs": [], "outputs": [{"name": "IMAGE", "type": "IMAGE", "linkIds": [21]}],
        "nodes": [{"id": 4, "type": "EmptyImage", "widgets_values": [9, 9, 1, 0], "outputs": [{"type": "IMAGE", "links": [20]}]},
                  {"id": 5, "type": "sg-1", "inputs": [{"name": "image", "type": "IMAGE", "link": 20}],
                   "outputs": [{"type": "IMAGE", "links": [21]}]}],
        "links": [{"id": 20, "origin_id": 4, "origin_slot": 0, "target_id": 5, "target_slot": 0, "type": "IMAGE"},
                  {"id": 21, "origin_id": 5, "origin_slot": 0, "target_id": -20, "target_slot": 0, "type": "IMAGE"}]});
    let done = ok(json!({"nodes": [
        {"id": 8, "type": "outer", "outputs": [{"type": "IMAGE", "links": [1]}]}, preview(3, 1)],
        "links": [[1, 8, 0, 3, 0, "IMAGE"]],
        "definitions": {"subgraphs": [outer, subgraph("sg-1", inner_nodes())]}}));
    assert_eq!(done.prompt["3"]["inputs"]["images"], json!(["8:5:1", 0]));
    assert_eq!(done.prompt["8:5:1"]["inputs"]["image"], json!(["8:4", 0]));
    assert_eq!(done.prompt["8:5:2"]["inputs"]["width"], 5);
}

#[test]
fn classes_used_lists_real_classes_once() {
    let v = ui(json!({"nodes": [image(1, json!([])), image(2, json!([])),
        {"id": 3, "type": "Reroute"}, {"id": 4, "type": "sg-1"}], "links": [],
        "definitions": {"subgraphs": [subgraph("sg-1", inner_nodes())]}}));
    assert_eq!(classes_used(&v), ["EmptyImage", "ImageInvert"]);
}

// ---- errors and hostile input ----

#[test]
fn every_unknown_class_is_named_with_its_pack() {
    let lines = err(json!({"nodes": [
        {"id": 1, "type": "Upscaler9000", "title": "Up", "properties": {"cnr_id": "up-pack", "Node name for S&R": "Upscaler9000"}},
        {"id": 2, "type": "Other", "properties": {"aux_id": "someone/other", "Node name for S&R": "Other Node"}},
        {"id": 3, "type": "Bare"},
        {"id": 4, "type": "NewCoreNode", "properties": {"cnr_id": "comfy-core", "ver": "0.9.1"}}], "links": []}));
    assert_eq!(
        lines,
        [
            "node 1 ('Up') has class 'Upscaler9000', which the node catalogue does not have (custom node pack 'up-pack'): install it",
            "node 2 (untitled) has class 'Other', which the node catalogue does not have (custom node pack 'someone/other', node 'Other Node'): install it",
            "node 3 (untitled) has class 'Bare', which the node catalogue does not have: is its custom node pack installed?",
            "node 4 (untitled) has class 'NewCoreNode', which the node catalogue does not have (a ComfyUI core node, saved with comfy-core 0.9.1): update ComfyUI",
        ]
    );
}

// The expectations of the rules below are derived from the sources of
// frontend 1.35.9 (the version ComfyUI 0.8 requires), read from the source
// maps of the `comfyui-frontend-package` 1.35.9 wheel on PyPI; running it
// headless against a ComfyUI (torch) was too heavy here. Paths and lines
// are of that release.

#[test]
fn rule_renamed_class() {
    // src/scripts/app.ts:1122-1129: renamed on load, before the lookup, at
    // the top level and inside subgraphs.
    for (old, new, widgets) in [
        ("T2IAdapterLoader", "ControlNetLoader", json!(["t2i.pth"])),
        ("ConditioningAverage ", "ConditioningAverage", json!([0.5])),
        (
            "SDV_img2vid_Conditioning",
            "SVD_img2vid_Conditioning",
            json!([1024, 576, 14, 127, 6, 0]),
        ),
        ("Preview3DAnimation", "Preview3D", json!(["m.glb", ""])),
    ] {
        let ui = json!({"nodes": [{"id": 4, "type": old, "widgets_values": widgets}], "links": []});
        assert_eq!(
            classes_used(&ui.as_object().unwrap().clone()),
            [new],
            "{old}"
        );
        let done = ok(ui);
        assert_eq!(done.prompt["4"]["class_type"], new, "{old}");
        assert!(
            done.report.fired(RuleKind::RenamedClass, "4", "class_type"),
            "{old}"
        );
    }
    let done = ok(json!({"nodes": [{"id": 4, "type": "T2IAdapterLoader",
        "widgets_values": ["t2i.pth"]}], "links": []}));
    assert_eq!(
        Value::Object(done.prompt),
        json!({"4": {"inputs": {"control_net_name": "t2i.pth"}, "class_type": "ControlNetLoader",
            "_meta": {"title": "Load ControlNet Model"}}})
    );
    // Not renamed: the class the file names is kept when it is not in the
    // table, and nothing fires.
    let done = ok(json!({"nodes": [{"id": 4, "type": "ControlNetLoader",
        "widgets_values": ["c.pth"]}], "links": []}));
    assert!(
        done.report
            .counts()
            .iter()
            .all(|(r, _)| *r != RuleKind::RenamedClass)
    );
}

#[test]
fn renamed_class_inside_a_group_node_is_not_renamed() {
    // src/extensions/core/groupNode.ts:762-797 registers a group node type
    // in beforeConfigureGraph, before app.ts:1122-1129 renames anything, and
    // only if every inner type is registered: an inner T2IAdapterLoader
    // leaves the whole group node missing.
    let group = json!({"nodes": [{"index": 0, "type": "T2IAdapterLoader",
        "widgets_values": ["t2i.pth"], "inputs": [], "outputs": []}],
        "links": [], "external": []});
    let v = json!({"nodes": [{"id": 1, "type": "workflow>Old", "widgets_values": ["t2i.pth"]}],
        "links": [], "extra": {"groupNodes": {"Old": group}}});
    let lines = err(v.clone());
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("node 1 is group node 'Old'")
            && lines[0].contains("'T2IAdapterLoader'")
            && lines[0].contains("inside a group node"),
        "{lines:?}"
    );
    assert_eq!(
        classes_used(&v.as_object().unwrap().clone()),
        ["T2IAdapterLoader"]
    );
}

#[test]
fn rule_extra_widget_values_ignored() {
    // src/lib/litegraph/src/LGraphNode.ts:862-868: each widget takes the
    // next saved value; values past the last widget are never read.
    let done = ok(json!({"nodes": [{"id": 1, "type": "LoadImage",
        "widgets_values": ["cat.png", "image", ""]}], "links": []}));
    assert_eq!(done.prompt["1"]["inputs"], json!({"image": "cat.png"}));
    assert!(
        done.report
            .fired(RuleKind::ExtraWidgetValuesIgnored, "1", "widgets_values")
    );
    let done = ok(json!({"nodes": [{"id": 1, "type": "EmptyImage",
        "widgets_values": [64, 32, 1, 0, 7, 8]}], "links": []}));
    assert_eq!(
        done.prompt["1"]["inputs"],
        json!({"width": 64, "height": 32, "batch_size": 1, "color": 0})
    );
    // As many values as widgets: nothing to ignore.
    let done = ok(json!({"nodes": [{"id": 1, "type": "LoadImage",
        "widgets_values": ["cat.png", "image"]}], "links": []}));
    assert!(
        !done
            .report
            .fired(RuleKind::ExtraWidgetValuesIgnored, "1", "widgets_values")
    );
}

#[test]
fn load3d_has_the_seven_widgets_of_frontend_1_35_9_and_its_view_needs_a_value() {
    // src/extensions/core/load3d.ts:238-292: after `model_file` (whose
    // `file_upload` adds no button: uploadImage.ts:14-18), the LOAD_3D
    // input adds three buttons and the 3D view, then width and height. The
    // buttons have no `serialize: false`, so graphToPrompt sends their
    // values (src/utils/executionUtil.ts:91); the view sends a capture it
    // uploads when queued (load3d.ts:337-378).
    let done = ok(
        json!({"nodes": [{"id": 7, "type": "Load3D", "widgets_values":
        ["toy.glb", "upload3dmodel", "uploadExtraResources", "clear", "", 768, 512]}], "links": []}),
    );
    let inputs = &done.prompt["7"]["inputs"];
    assert_eq!(
        inputs,
        &json!({"model_file": "toy.glb", "upload 3d model": "upload3dmodel",
            "upload extra resources": "uploadExtraResources", "clear": "clear",
            "image": null, "width": 768, "height": 512})
    );
    let order: Vec<&String> = inputs.as_object().unwrap().keys().collect();
    assert_eq!(
        order,
        [
            "model_file",
            "upload 3d model",
            "upload extra resources",
            "clear",
            "image",
            "width",
            "height"
        ]
    );
    assert_eq!(done.needs.len(), 1);
    assert_eq!(
        (done.needs[0].node.as_str(), done.needs[0].input.as_str()),
        ("7", "image")
    );
    assert!(
        done.report
            .rules
            .iter()
            .all(|r| r.rule == RuleKind::TitleFromDisplayName)
    );
    // Loaded as a Load3DAnimation, the same.
    let done = ok(
        json!({"nodes": [{"id": 7, "type": "Load3DAnimation", "widgets_values":
        ["toy.glb", "upload3dmodel", "uploadExtraResources", "clear", "", 768, 512]}], "links": []}),
    );
    assert_eq!(done.prompt["7"]["inputs"]["width"], 768);
    assert_eq!(done.prompt["7"]["class_type"], "Load3D");
}

#[test]
fn rule_other_version_layout() {
    // Before 1.35.9 one upload button followed `model_file`: 5 values.
    let done = ok(
        json!({"nodes": [{"id": 7, "type": "Load3D", "widgets_values":
        ["toy.glb", "image", "", 768, 512]}], "links": []}),
    );
    let inputs = &done.prompt["7"]["inputs"];
    assert_eq!(inputs["model_file"], "toy.glb");
    assert_eq!(inputs["width"], 768);
    assert_eq!(inputs["height"], 512);
    assert!(inputs["image"].is_null());
    assert!(
        done.report
            .fired(RuleKind::OtherVersionLayout, "7", "widgets_values")
    );
    assert!(
        !done
            .report
            .fired(RuleKind::ExtraWidgetValuesIgnored, "7", "widgets_values")
    );
    assert_eq!(done.needs.len(), 1);
}

#[test]
fn rule_preview_not_sent() {
    // src/composables/node/useNodeImage.ts:167-174: SaveWEBM's
    // `video-preview` exists only once a video was shown.
    let done = ok(json!({"nodes": [{"id": 47, "type": "SaveWEBM",
        "widgets_values": ["ComfyUI", "vp9", 24, 32]}], "links": []}));
    assert_eq!(
        done.prompt["47"]["inputs"],
        json!({"filename_prefix": "ComfyUI", "codec": "vp9", "fps": 24, "crf": 32})
    );
    assert!(
        done.report
            .fired(RuleKind::PreviewNotSent, "47", "video-preview")
    );
}

#[test]
fn webcam_capture_needs_a_value_for_its_image() {
    // src/extensions/core/webcamCapture.ts:105-145: the camera view, then
    // width, height and capture_on_queue, then a capture button that is
    // saved but whose value is `undefined` in the prompt; the image is a
    // frame taken and uploaded when queued.
    let done = ok(
        json!({"nodes": [{"id": 3, "type": "WebcamCapture", "title": "Cam",
        "widgets_values": ["", 640, 480, false, "capture"]}], "links": []}),
    );
    assert_eq!(
        done.prompt["3"]["inputs"],
        json!({"image": null, "width": 640, "height": 480, "capture_on_queue": false})
    );
    assert!(done.report.rules.is_empty(), "{:?}", done.report);
    assert_eq!(
        done.needs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        [
            "node 3 (WebcamCapture, 'Cam') input 'image' needs a value: the frontend takes a camera \
          frame each time it queues (it makes no prompt without a camera), which no file holds"
        ]
    );
    // Muted, it is not sent and needs nothing.
    let done = ok(
        json!({"nodes": [{"id": 3, "type": "WebcamCapture", "mode": 2},
        {"id": 4, "type": "EmptyImage"}], "links": []}),
    );
    assert!(done.needs.is_empty());
}

#[test]
fn a_link_to_a_missing_node_is_an_error() {
    let lines = err(json!({"nodes": [preview(2, 1)], "links": [[1, 99, 0, 2, 0, "IMAGE"]]}));
    assert_eq!(
        lines,
        ["node 2 input 'images' is linked to node 99, which is not in the workflow"]
    );
}

#[test]
fn cyclic_reroutes_are_an_error_not_a_hang() {
    let lines = err(json!({"nodes": [
        {"id": 1, "type": "Reroute", "inputs": [{"name": "", "type": "*", "link": 2}], "outputs": [{"type": "*", "links": [1, 3]}]},
        {"id": 2, "type": "Reroute", "inputs": [{"name": "", "type": "*", "link": 1}], "outputs": [{"type": "*", "links": [2]}]},
        preview(3, 3),
        {"id": 4, "type": "PrimitiveNode", "widgets_values": [1], "outputs": [{"type": "INT", "links": [4]}]},
        {"id": 5, "type": "Reroute", "inputs": [{"name": "", "type": "*", "link": 4}], "outputs": [{"type": "*", "links": [4]}]}],
        "links": [[1, 1, 0, 2, 0, "*"], [2, 2, 0, 1, 0, "*"], [3, 1, 0, 3, 0, "IMAGE"], [4, 4, 0, 5, 0, "INT"]]}));
    assert_eq!(lines.len(), 1);
    assert!(lines[0].contains("circle of links"), "{lines:?}");
}

#[test]
fn a_subgraph_inside_itself_is_an_error() {
    let selfish = json!({"id": "me", "name": "Me", "inputs": [], "outputs": [],
        "nodes": [{"id": 1, "type": "me"}], "links": []});
    let lines = err(json!({"nodes": [{"id": 1, "type": "me"}], "links": [],
        "definitions": {"subgraphs": [selfish]}}));
    assert!(lines[0].contains("inside itself"), "{lines:?}");
}

#[test]
fn deep_nesting_is_refused_and_deep_chains_do_not_overflow_the_stack() {
    // 40 nested subgraphs: more than the 32 accepted.
    let mut defs = Vec::new();
    for i in 0..40 {
        let inner = if i == 39 {
            json!([{"id": 1, "type": "EmptyImage", "widgets_values": [1, 1, 1, 0]}])
        } else {
            json!([{"id": 1, "type": format!("s{}", i + 1)}])
        };
        defs.push(
            json!({"id": format!("s{i}"), "name": "n", "inputs": [], "outputs": [],
            "nodes": inner, "links": []}),
        );
    }
    let lines = err(json!({"nodes": [{"id": 1, "type": "s0"}], "links": [],
        "definitions": {"subgraphs": defs}}));
    assert!(lines[0].contains("too deeply"), "{lines:?}");

    // 20,000 Reroutes in a row.
    let n = 20_000i64;
    let mut nodes = vec![image(1, json!([2]))];
    let mut links = vec![];
    for i in 0..n {
        let id = i + 2;
        nodes.push(json!({"id": id, "type": "Reroute",
            "inputs": [{"name": "", "type": "*", "link": id}],
            "outputs": [{"type": "*", "links": [id + 1]}]}));
        links.push(json!([id, id - 1, 0, id, 0, "*"]));
    }
    nodes.push(preview(n + 2, n + 2));
    links.push(json!([n + 2, n + 1, 0, n + 2, 0, "IMAGE"]));
    let e = convert(&ui(json!({"nodes": nodes, "links": links})), cat()).expect_err("too long");
    assert!(e.to_string().contains("the chain is too long"), "{e}");
}

#[test]
fn malformed_parts_are_errors_or_skipped_never_panics() {
    for bad in [
        json!({"nodes": "x", "links": []}),
        json!({"nodes": [1, 2], "links": []}),
        json!({"nodes": [{"id": 1}], "links": []}),
        json!({"nodes": [{"id": 1, "type": "EmptyImage"}, {"id": 1, "type": "EmptyImage"}], "links": []}),
    ] {
        assert!(convert(&ui(bad), cat()).is_err());
    }
    // Odd but harmless shapes are tolerated.
    let done = ok(json!({"nodes": [
        {"id": 1, "type": "EmptyImage", "widgets_values": "nonsense", "inputs": "x", "outputs": 3, "mode": "m"},
        {"id": 2, "type": "PreviewImage", "inputs": [{"name": "images", "type": "IMAGE", "link": 12345}]}],
        "links": [[1], "x", null, {"id": "q"}]}));
    assert_eq!(done.prompt["2"]["inputs"], json!({}));
}

#[test]
fn detect_tells_the_formats_apart() {
    assert_eq!(detect(&json!({"nodes": [], "links": []})), Format::Ui);
    assert_eq!(
        detect(&json!({"1": {"class_type": "X", "inputs": {}}})),
        Format::Api
    );
    assert_eq!(detect(&json!({"1": {"class": "X"}})), Format::Unknown);
    assert_eq!(detect(&json!([1])), Format::Unknown);
    assert_eq!(detect(&json!({})), Format::Unknown);
}

#[test]
fn group_nodes_expand_to_index_ids_with_the_instance_widget_values() {
    let group = json!({"nodes": [
            {"index": 0, "type": "EmptyImage", "widgets_values": [1, 1, 1, 0],
             "outputs": [{"type": "IMAGE", "links": []}]},
            {"index": 1, "type": "ImageBlend", "widgets_values": [0.5, "normal"],
             "inputs": [{"name": "image1", "type": "IMAGE", "link": null},
                        {"name": "image2", "type": "IMAGE", "link": null}],
             "outputs": [{"type": "IMAGE", "links": []}]}],
        "links": [[0, 0, 1, 0, 1, "IMAGE"], [null, 0, 1, 1, 9, "IMAGE"]], "external": []});
    let done = ok(json!({"nodes": [
        image(9, json!([1])),
        {"id": 5, "type": "workflow>Blend", "inputs": [{"name": "image2", "type": "IMAGE", "link": 1}],
         "outputs": [{"type": "IMAGE", "links": [2]}], "widgets_values": [8, 9, 1, 0, 0.25, "screen"]},
        preview(3, 2)],
        "links": [[1, 9, 0, 5, 0, "IMAGE"], [2, 5, 0, 3, 0, "IMAGE"]],
        "extra": {"groupNodes": {"Blend": group}}}));
    assert_eq!(done.prompt["5:0"]["inputs"]["width"], 8);
    assert_eq!(done.prompt["5:1"]["inputs"]["image1"], json!(["5:0", 0]));
    assert_eq!(done.prompt["5:1"]["inputs"]["image2"], json!(["9", 0]));
    assert_eq!(done.prompt["5:1"]["inputs"]["blend_mode"], "screen");
    assert_eq!(done.prompt["3"]["inputs"]["images"], json!(["5:1", 0]));
    let lines = err(json!({"nodes": [{"id": 5, "type": "workflow>Missing"}], "links": []}));
    assert!(lines[0].contains("not in extra.groupNodes"), "{lines:?}");
}

#[test]
fn kjnodes_set_and_get_nodes_are_resolved_like_reroutes() {
    let done = ok(json!({"nodes": [
        image(1, json!([1])),
        {"id": 2, "type": "SetNode", "widgets_values": ["pic"], "inputs": [{"name": "IMAGE", "type": "IMAGE", "link": 1}],
         "outputs": [{"type": "IMAGE", "links": []}]},
        {"id": 3, "type": "GetNode", "widgets_values": ["pic"], "outputs": [{"type": "IMAGE", "links": [2]}]},
        preview(4, 2),
        {"id": 5, "type": "GetNode", "widgets_values": ["nothing"], "outputs": [{"type": "IMAGE", "links": [3]}]},
        preview(6, 3)],
        "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 3, 0, 4, 0, "IMAGE"], [3, 5, 0, 6, 0, "IMAGE"]]}));
    assert_eq!(done.prompt["4"]["inputs"]["images"], json!(["1", 0]));
    assert_eq!(done.prompt["6"]["inputs"], json!({}));
    let ids: Vec<&String> = done.prompt.keys().collect();
    assert_eq!(ids, ["1", "4", "6"]);
}

#[test]
fn rgthree_reroutes_and_canvas_helpers_are_frontend_only() {
    let done = ok(json!({"nodes": [
        image(1, json!([1])),
        {"id": 2, "type": "Reroute (rgthree)", "inputs": [{"name": "", "type": "*", "link": 1}],
         "outputs": [{"type": "IMAGE", "links": [2]}]},
        preview(3, 2),
        {"id": 4, "type": "Fast Groups Bypasser (rgthree)", "inputs": [], "outputs": [{"type": "*", "links": []}]}],
        "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"]]}));
    assert_eq!(done.prompt["3"]["inputs"]["images"], json!(["1", 0]));
    let ids: Vec<&String> = done.prompt.keys().collect();
    assert_eq!(ids, ["1", "3"]);
}
