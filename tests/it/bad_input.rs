//! Bad input (issue #5, item 7): a table of malformed manifests, workflows
//! and arguments, each run through the real binary. Every bad case must end
//! with exit 2, stderr made of `error:` lines (plus an optional `hint:`) that
//! name the file and line, the job group or the flag, nothing on stdout,
//! nothing queued, and never a panic or a backtrace. A few positive controls
//! (unicode, a 1 MB prompt, a BOM, numbers quoted as text) must pass. The
//! whole table's stderr is pinned by one snapshot.

use std::fmt::Write as _;

use crate::harness::Project;

/// A file the case writes into its fresh project before running.
enum File {
    Text(&'static str, String),
    Bytes(&'static str, Vec<u8>),
    Dir(&'static str),
}

fn text(path: &'static str, body: &str) -> File {
    File::Text(path, body.to_owned())
}

/// How the binary must end.
#[derive(Clone, Copy, PartialEq)]
enum Expect {
    /// Exit 2 with our own diagnostics: `error:` lines, maybe a `hint:`.
    Bad,
    /// Exit 2 from clap's argument parser: one `error:` line, then clap's
    /// usage block.
    BadArgs,
    /// Exit 0 (a positive control).
    Ok,
}

struct Case {
    name: &'static str,
    files: Vec<File>,
    args: Vec<&'static str>,
    expect: Expect,
    /// Text the first `error:` line must contain: the file with its line,
    /// the group, or the flag.
    names: &'static str,
}

fn case(
    name: &'static str,
    files: Vec<File>,
    args: &[&'static str],
    expect: Expect,
    names: &'static str,
) -> Case {
    Case {
        name,
        files,
        args: args.to_vec(),
        expect,
        names,
    }
}

/// `jobs/m.yaml` with `body`, planned.
fn plan(name: &'static str, body: &str, names: &'static str) -> Case {
    case(
        name,
        vec![text("jobs/m.yaml", body)],
        &["plan", "jobs/m.yaml"],
        Expect::Bad,
        names,
    )
}

/// A manifest using workflow `w`, whose file holds `workflow`.
fn workflow(name: &'static str, workflow: &[u8], names: &'static str) -> Case {
    case(
        name,
        vec![
            text(
                "jobs/m.yaml",
                "version: 1\njobs:\n  - name: g\n    workflow: w\n",
            ),
            File::Bytes("workflows/w.json", workflow.to_vec()),
        ],
        &["plan", "jobs/m.yaml"],
        Expect::Bad,
        names,
    )
}

/// The t2i fixture with `edit` applied.
fn t2i_with(edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/run/t2i.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut v);
    serde_json::to_vec_pretty(&v).unwrap()
}

/// Fixed "random" bytes (a small LCG): stable across runs for the snapshot.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x2545_f491;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (x >> 16) as u8
        })
        .collect()
}

const GOOD: &str = "version: 1\njobs:\n  - name: g\n    workflow: t2i\n    seeds: [1, 2]\n";

/// A manifest setting `set` on the t2i workflow (one job, seed 1).
fn t2i_set(set: &str) -> String {
    format!(
        "version: 1\njobs:\n  - name: g\n    workflow: t2i\n    set: {{{set}}}\n    seeds: [1]\n"
    )
}

fn cases() -> Vec<Case> {
    use Expect::*;
    let seeds =
        |s: &str| format!("version: 1\njobs:\n  - name: g\n    workflow: t2i\n    seeds: {s}\n");
    let laughs = {
        let mut s = String::from("version: 1\ndefaults:\n  a: &a [x, x, x, x, x, x, x, x, x]\n");
        for (name, prev) in ["b", "c", "d", "e", "f", "g", "h"]
            .iter()
            .zip(["a", "b", "c", "d", "e", "f", "g"])
        {
            let items = vec![format!("*{prev}"); 9].join(", ");
            let _ = writeln!(s, "  {name}: &{name} [{items}]");
        }
        s.push_str("jobs:\n  - name: g\n    workflow: t2i\n");
        s
    };
    let big_prompt = "a fox ".repeat((1 << 20) / 6 + 1);
    vec![
        // --- manifest text ---
        plan("empty file", "", "jobs/m.yaml:1:1: missing 'version: 1'"),
        case(
            "binary file",
            vec![File::Bytes("jobs/m.yaml", noise(512))],
            &["plan", "jobs/m.yaml"],
            Bad,
            "jobs/m.yaml:1:3: the manifest is not UTF-8",
        ),
        case(
            "NUL byte in text",
            vec![File::Bytes(
                "jobs/m.yaml",
                b"version: 1\njobs:\x00\n".to_vec(),
            )],
            &["plan", "jobs/m.yaml"],
            Bad,
            "jobs/m.yaml:2:6: invalid yaml: control character U+0000",
        ),
        case(
            "Latin-1 manifest",
            vec![File::Bytes(
                "jobs/m.yaml",
                b"version: 1\njobs:\n  - name: caf\xe9\n    workflow: t2i\n".to_vec(),
            )],
            &["plan", "jobs/m.yaml"],
            Bad,
            "jobs/m.yaml:3:14: the manifest is not UTF-8",
        ),
        case(
            "UTF-16 manifest",
            vec![File::Bytes(
                "jobs/m.yaml",
                b"\xff\xfev\x00e\x00r\x00".to_vec(),
            )],
            &["plan", "jobs/m.yaml"],
            Bad,
            "jobs/m.yaml:1:1: the manifest is UTF-16",
        ),
        plan(
            "alias to an unknown anchor",
            "version: 1\njobs:\n  - name: g\n    workflow: t2i\n    set: *common\n",
            "jobs/m.yaml:5:10: invalid yaml: alias '*common' refers to no anchor",
        ),
        plan(
            "alias used before its anchor",
            "version: 1\njobs:\n  - name: g\n    workflow: t2i\n    set: {prompt: *p, negative: &p blurry}\n",
            "jobs/m.yaml:5:19: invalid yaml: alias '*p'",
        ),
        plan(
            "merge key",
            "version: 1\ndefaults: &d\n  cfg: 5\njobs:\n  - name: g\n    workflow: t2i\n    set:\n      <<: *d\n      steps: 3\n",
            "jobs/m.yaml:8:7: invalid yaml: merge keys",
        ),
        plan(
            "alias bomb",
            &laughs,
            "jobs/m.yaml:1:1: invalid yaml: aliases expand to too many values",
        ),
        plan(
            "tab indentation",
            "version: 1\njobs:\n\t- name: g\n\t  workflow: t2i\n",
            "jobs/m.yaml:3:",
        ),
        plan(
            "bad indentation",
            "version: 1\njobs:\n  - name: g\n    workflow: t2i\n   seeds: [1]\n",
            "jobs/m.yaml:5:",
        ),
        plan(
            "unclosed flow mapping",
            "version: 1\njobs:\n  - name: g\n    workflow: t2i\n    set: {cfg: 5\n",
            "jobs/m.yaml:6:",
        ),
        plan(
            "nesting too deep",
            &format!(
                "version: 1\ndefaults:\n  x: {}{}\njobs: []\n",
                "[".repeat(5000),
                "]".repeat(5000)
            ),
            "jobs/m.yaml:3:",
        ),
        plan(
            "two YAML documents",
            "version: 1\njobs:\n  - name: g\n    workflow: t2i\n---\nversion: 1\n",
            "jobs/m.yaml:5:1: invalid yaml: a second YAML document",
        ),
        plan(
            "tagged key",
            "version: 1\njobs:\n  - name: g\n    workflow: t2i\n    set: {!x cfg: 5}\n",
            "jobs/m.yaml:5:11: jobs[0].set: invalid type: tagged value (!tag)",
        ),
        plan(
            "a 1 MB string for a number",
            &t2i_set(&format!("steps: \"{}\"", "9".repeat(1 << 20))),
            "jobs/m.yaml:5:11: wrong value type for 'steps'",
        ),
        plan(
            "a 1 MB string for a list",
            &format!(
                "version: 1\njobs:\n  - name: g\n    workflow: t2i\n    matrix: {{prompt: \"{}\"}}\n",
                "a".repeat(1 << 20)
            ),
            "jobs/m.yaml:5:22: jobs[0].matrix.prompt: invalid type: string",
        ),
        case(
            "a 1 MB sampler name fails check",
            vec![text(
                "jobs/m.yaml",
                &t2i_set(&format!("sampler: \"{}\"", "e".repeat(1 << 20))),
            )],
            &["check", "jobs/m.yaml", "--sim"],
            Bad,
            "node 3 (KSampler) input 'sampler_name': Value not in list",
        ),
        // --- numbers ---
        plan(
            "steps 1e400",
            &t2i_set("steps: 1e400"),
            "jobs/m.yaml:5:18: number 1e400 is out of range",
        ),
        plan(
            "steps beyond u64",
            &t2i_set("steps: 18446744073709551616"),
            "jobs/m.yaml:5:18: number 18446744073709551616 is out of range",
        ),
        plan(
            "seed beyond u64",
            &seeds("[18446744073709551616]"),
            "jobs/m.yaml:5:13: number 18446744073709551616 is out of range",
        ),
        plan(
            "seed beyond u64 in a list",
            &seeds("[1, 2, 18446744073709551616]"),
            "jobs/m.yaml:5:19: number 18446744073709551616",
        ),
        plan(
            "negative seed",
            &seeds("[7, -1]"),
            "jobs/m.yaml:5:16: jobs[0].seeds[1]: -1 is negative; a seed is a whole number",
        ),
        plan(
            "fractional seed",
            &seeds("[1.5]"),
            "jobs/m.yaml:5:13: jobs[0].seeds[0]: 1.5 is not a whole number",
        ),
        plan(
            "NaN cfg",
            &t2i_set("cfg: .nan"),
            "jobs/m.yaml:5:16: '.nan' is not a finite number",
        ),
        plan(
            "infinite cfg in a matrix",
            "version: 1\njobs:\n  - name: g\n    workflow: t2i\n    matrix: {cfg: [5, -.inf]}\n",
            "jobs/m.yaml:5:23: '-.inf' is not a finite number",
        ),
        plan(
            "concurrency 0",
            "version: 1\nconcurrency: 0\njobs:\n  - name: g\n    workflow: t2i\n",
            "jobs/m.yaml:2:14: concurrency: 0 is too small",
        ),
        plan(
            "concurrency -3",
            "version: 1\nconcurrency: -3\njobs:\n  - name: g\n    workflow: t2i\n",
            "jobs/m.yaml:2:14: concurrency: -3 is negative",
        ),
        // --- seeds ---
        plan(
            "seeds count 0",
            &seeds("{count: 0, base: 1}"),
            "jobs/m.yaml:5:20: jobs[0].seeds.count: 0 is too small",
        ),
        plan(
            "seeds count -1",
            &seeds("{count: -1, base: 1}"),
            "jobs/m.yaml:5:20: jobs[0].seeds.count: -1 is negative",
        ),
        plan(
            "seeds count without base",
            &seeds("{count: 3}"),
            "jobs/m.yaml:5:12: jobs[0].seeds: {count: N} needs a base",
        ),
        plan(
            "seeds empty range",
            &seeds("{range: [5, 1]}"),
            "jobs/m.yaml:5:12: jobs[0].seeds: range [5, 1] is empty",
        ),
        plan(
            "seeds range too large",
            &seeds("{range: [0, 18446744073709551615]}"),
            "jobs/m.yaml:5:5: bad seeds in group 'g'",
        ),
        plan(
            "seeds as a parameter",
            "version: 1\njobs:\n  - name: g\n    workflow: t2i\n    matrix: {seed: [1, 2]}\n",
            "jobs/m.yaml:5:14: 'seed' is not a parameter",
        ),
        // --- manifest structure ---
        plan(
            "duplicate keys",
            "version: 1\njobs:\n  - name: g\n    workflow: t2i\n    set: {cfg: 5, cfg: 6}\n",
            "jobs/m.yaml:5:19: duplicate key 'cfg'",
        ),
        plan(
            "duplicate top-level key",
            "version: 1\nversion: 1\njobs:\n  - name: g\n    workflow: t2i\n",
            "jobs/m.yaml:2:1: duplicate key 'version'",
        ),
        plan(
            "unknown top-level key",
            "version: 1\noutptu: out\njobs:\n  - name: g\n    workflow: t2i\n",
            "jobs/m.yaml:2:1: unknown key 'outptu'; did you mean 'output'?",
        ),
        plan(
            "version 2",
            "version: 2\njobs:\n  - name: g\n    workflow: t2i\n",
            "jobs/m.yaml:1:1: unsupported version 2",
        ),
        plan(
            "version as a string",
            "version: \"1\"\njobs:\n  - name: g\n    workflow: t2i\n",
            "jobs/m.yaml:1:1: unsupported version \"1\"",
        ),
        plan(
            "missing version",
            "jobs:\n  - name: g\n    workflow: t2i\n",
            "jobs/m.yaml:1:1: missing 'version: 1'",
        ),
        plan(
            "jobs empty",
            "version: 1\njobs:\n",
            "jobs/m.yaml:2:1: no jobs",
        ),
        plan(
            "jobs an empty list",
            "version: 1\njobs: []\n",
            "jobs/m.yaml:2:1: no jobs",
        ),
        plan(
            "jobs not a list",
            "version: 1\njobs:\n  name: g\n  workflow: t2i\n",
            "jobs/m.yaml:3:3: jobs: invalid type: map, expected a list of job groups",
        ),
        plan(
            "a document that is a list",
            "- version: 1\n",
            "jobs/m.yaml:1:1: invalid type: sequence",
        ),
        plan(
            "group without workflow",
            "version: 1\njobs:\n  - name: g\n    seeds: [1]\n",
            "jobs/m.yaml:3:5: group 'g' has no 'workflow:'",
        ),
        plan(
            "empty workflow name",
            "version: 1\njobs:\n  - name: g\n    workflow: \"\"\n",
            "jobs/m.yaml:4:5: group 'g' has an empty workflow name",
        ),
        plan(
            "server not http",
            "version: 1\nserver: ftp://x\njobs:\n  - name: g\n    workflow: t2i\n",
            "jobs/m.yaml:2:1: server 'ftp://x' is not an http:// or https:// URL",
        ),
        plan(
            "zip length mismatch",
            "version: 1\njobs:\n  - name: g\n    workflow: t2i\n    zip:\n      prompt: [a, b]\n      cfg: [5, 6, 7]\n",
            "jobs/m.yaml:5:5: zip lists differ in length in group 'g': 'prompt' has 2, 'cfg' has 3",
        ),
        plan(
            "unknown parameter",
            &t2i_set("sampeler: euler"),
            "jobs/m.yaml:5:11: unknown parameter 'sampeler' in group 'g' (workflow t2i); did you mean 'sampler'?",
        ),
        plan(
            "string for a number",
            &t2i_set("steps: \"20\""),
            "jobs/m.yaml:5:11: wrong value type for 'steps' in group 'g' (workflow t2i)",
        ),
        plan(
            "number for a string",
            &t2i_set("prompt: 5"),
            "jobs/m.yaml:5:11: wrong value type for 'prompt'",
        ),
        plan(
            "list for a value",
            &t2i_set("cfg: [5, 6]"),
            "jobs/m.yaml:5:11: wrong value type for 'cfg'",
        ),
        plan(
            "setting a link",
            &t2i_set("3.model: x"),
            "jobs/m.yaml:5:11: parameter '3.model' has no target in group 'g'",
        ),
        // --- files ---
        case(
            "manifest not found",
            vec![],
            &["plan", "jobs/absent.yaml"],
            Bad,
            "jobs/absent.yaml:1:1: cannot read the manifest: no such file",
        ),
        case(
            "manifest is a directory",
            vec![File::Dir("jobs/m.yaml")],
            &["plan", "jobs/m.yaml"],
            Bad,
            "jobs/m.yaml:1:1: cannot read the manifest: it is a directory",
        ),
        case(
            "missing image file",
            vec![text(
                "jobs/m.yaml",
                "version: 1\njobs:\n  - name: g\n    workflow: i2i\n    zip:\n      image: [there.png, gone.png, gone.png]\n",
            )],
            &["plan", "jobs/m.yaml"],
            Bad,
            "jobs/m.yaml:6:7: image file for 'image' not found in group 'g' (workflow i2i): jobs/gone.png",
        ),
        case(
            "image path is a directory",
            vec![
                File::Dir("jobs/pics"),
                text(
                    "jobs/m.yaml",
                    "version: 1\njobs:\n  - name: g\n    workflow: i2i\n    set: {image: pics}\n",
                ),
            ],
            &["plan", "jobs/m.yaml"],
            Bad,
            "jobs/m.yaml:5:11: image for 'image' is a directory in group 'g' (workflow i2i): jobs/pics",
        ),
        case(
            "workflow file not found",
            vec![text(
                "jobs/m.yaml",
                "version: 1\njobs:\n  - name: g\n    workflow: t2j\n",
            )],
            &["plan", "jobs/m.yaml"],
            Bad,
            "jobs/m.yaml:4:5: workflow 't2j' unusable in group 'g': no file for it: tried workflows/t2j.json, jobs/workflows/t2j.json",
        ),
        case(
            "workflow path is a directory",
            vec![
                File::Dir("jobs/flows"),
                text(
                    "jobs/m.yaml",
                    "version: 1\nworkflows: {w: flows}\njobs:\n  - name: g\n    workflow: w\n",
                ),
            ],
            &["plan", "jobs/m.yaml"],
            Bad,
            "jobs/m.yaml:2:13: workflow 'w' unusable in group 'g': jobs/flows is a directory",
        ),
        // --- workflows ---
        workflow(
            "UI-format workflow",
            br#"{"last_node_id": 9, "nodes": [], "links": [], "version": 0.4}"#,
            "jobs/m.yaml:4:5: workflow 'w' unusable in group 'g': workflows/w.json is a UI-format workflow with no node the server would run",
        ),
        workflow(
            "UI-format workflow with custom nodes",
            br#"{"nodes": [{"id": 1, "type": "Upscaler9000", "title": "Up", "properties": {"cnr_id": "up-pack"}}], "links": []}"#,
            "workflows/w.json: node 1 ('Up') has class 'Upscaler9000', which the node catalogue does not have (custom node pack 'up-pack'): install it",
        ),
        workflow(
            "UI-format workflow with a link to a missing node",
            br#"{"nodes": [{"id": 2, "type": "PreviewImage", "inputs": [{"name": "images", "type": "IMAGE", "link": 1}]}], "links": [[1, 9, 0, 2, 0, "IMAGE"]]}"#,
            "workflows/w.json: node 2 input 'images' is linked to node 9, which is not in the workflow",
        ),
        workflow(
            "UI-format workflow with a live input the manifest does not set",
            br#"{"nodes": [{"id": 5, "type": "WebcamCapture", "widgets_values": ["", 0, 0, true, "capture"]}], "links": []}"#,
            "workflows/w.json: node 5 (WebcamCapture, 'Webcam Capture') input 'image' needs a value",
        ),
        workflow(
            "workflow not JSON",
            b"name: not json\n",
            "workflows/w.json is not JSON: expected ident at line 1 column 2",
        ),
        workflow(
            "workflow empty file",
            b"",
            "workflows/w.json is not JSON: EOF while parsing",
        ),
        workflow(
            "workflow binary",
            &noise(256),
            "workflows/w.json is not JSON",
        ),
        workflow(
            "workflow JSON list",
            b"[1, 2]",
            "workflows/w.json is neither an API-format nor a UI-format ComfyUI workflow: the top level is not an object",
        ),
        workflow(
            "workflow without nodes",
            b"{}",
            "workflows/w.json is not an API-format workflow: it has no nodes",
        ),
        workflow(
            "node without class_type",
            br#"{"1": {"inputs": {}}}"#,
            "node '1' lacks a 'class_type' string",
        ),
        workflow(
            "node that is a number",
            br#"{"1": 5}"#,
            "node '1' lacks a 'class_type' string",
        ),
        workflow(
            "link to a missing node",
            &t2i_with(|w| w["8"]["inputs"]["samples"] = serde_json::json!(["99", 0])),
            "workflows/w.json has a broken link: input 'samples' of node 8 (VAEDecode) links to node 99",
        ),
        workflow(
            "link with a numeric node id",
            &t2i_with(|w| w["3"]["inputs"]["positive"] = serde_json::json!([6, 0])),
            "input 'positive' of node 3 (KSampler) is the list [6,0], not a link",
        ),
        // --- arguments ---
        case(
            "plan without a manifest",
            vec![],
            &["plan"],
            BadArgs,
            "the following required arguments were not provided",
        ),
        case(
            "plan --format xml",
            vec![text("jobs/m.yaml", GOOD)],
            &["plan", "jobs/m.yaml", "--format", "xml"],
            BadArgs,
            "invalid value 'xml' for '--format <FORMAT>'",
        ),
        case(
            "plan --write-prompts onto a file",
            vec![text("jobs/m.yaml", GOOD), text("prompts", "not a folder")],
            &["plan", "jobs/m.yaml", "--write-prompts", "prompts"],
            Bad,
            "--write-prompts: prompts is a file, not a folder",
        ),
        case(
            "run --shard 0/2",
            vec![text("jobs/m.yaml", GOOD)],
            &[
                "run",
                "jobs/m.yaml",
                "--sim",
                "--output",
                "out",
                "--shard",
                "0/2",
            ],
            BadArgs,
            "invalid value '0/2' for '--shard <K/N>': invalid shard '0/2': K must be between 1 and N",
        ),
        case(
            "run --shard 3/2",
            vec![text("jobs/m.yaml", GOOD)],
            &[
                "run",
                "jobs/m.yaml",
                "--sim",
                "--output",
                "out",
                "--shard",
                "3/2",
            ],
            BadArgs,
            "invalid value '3/2' for '--shard <K/N>': invalid shard '3/2'",
        ),
        case(
            "run --shard 1/0",
            vec![text("jobs/m.yaml", GOOD)],
            &[
                "run",
                "jobs/m.yaml",
                "--sim",
                "--output",
                "out",
                "--shard",
                "1/0",
            ],
            BadArgs,
            "invalid value '1/0' for '--shard <K/N>': invalid shard '1/0': N must be at least 1",
        ),
        case(
            "run --shard half",
            vec![text("jobs/m.yaml", GOOD)],
            &[
                "run",
                "jobs/m.yaml",
                "--sim",
                "--output",
                "out",
                "--shard",
                "half",
            ],
            BadArgs,
            "invalid value 'half' for '--shard <K/N>': invalid shard 'half'",
        ),
        case(
            "run --concurrency 0",
            vec![text("jobs/m.yaml", GOOD)],
            &[
                "run",
                "jobs/m.yaml",
                "--sim",
                "--output",
                "out",
                "--concurrency",
                "0",
            ],
            BadArgs,
            "invalid value '0' for '--concurrency <N>'",
        ),
        case(
            "run --timeout banana",
            vec![text("jobs/m.yaml", GOOD)],
            &[
                "run",
                "jobs/m.yaml",
                "--sim",
                "--output",
                "out",
                "--timeout",
                "banana",
            ],
            BadArgs,
            "invalid value 'banana' for '--timeout <DURATION>'",
        ),
        case(
            "run --max-failures 0",
            vec![text("jobs/m.yaml", GOOD)],
            &[
                "run",
                "jobs/m.yaml",
                "--sim",
                "--output",
                "out",
                "--max-failures",
                "0",
            ],
            BadArgs,
            "invalid value '0' for '--max-failures <N>'",
        ),
        case(
            "run --header nocolon",
            vec![text("jobs/m.yaml", GOOD)],
            &[
                "run",
                "jobs/m.yaml",
                "--sim",
                "--output",
                "out",
                "--header",
                "nocolon",
            ],
            Bad,
            "--header: header 'nocolon' is not of the form 'Name: value'",
        ),
        case(
            "run --server ftp://x",
            vec![text("jobs/m.yaml", GOOD)],
            &[
                "run",
                "jobs/m.yaml",
                "--output",
                "out",
                "--server",
                "ftp://x",
            ],
            Bad,
            "invalid server URL 'ftp://x': the scheme must be http or https",
        ),
        case(
            "check --server without host",
            vec![text("jobs/m.yaml", GOOD)],
            &["check", "jobs/m.yaml", "--server", "http://"],
            Bad,
            "invalid server URL 'http://'",
        ),
        case(
            "check --header nocolon",
            vec![text("jobs/m.yaml", GOOD)],
            &["check", "jobs/m.yaml", "--sim", "--header", "nocolon"],
            Bad,
            "--header: header 'nocolon'",
        ),
        // --- server-side ranges: only the catalogue knows (check / preflight) ---
        case(
            "negative steps pass plan",
            vec![text("jobs/m.yaml", &t2i_set("steps: -5"))],
            &["plan", "jobs/m.yaml", "--format", "csv"],
            Ok,
            "",
        ),
        case(
            "negative steps fail check",
            vec![text("jobs/m.yaml", &t2i_set("steps: -5"))],
            &["check", "jobs/m.yaml", "--sim"],
            Bad,
            "node 3 (KSampler) input 'steps': Value -5 smaller than min of 1",
        ),
        case(
            "negative steps fail the run preflight",
            vec![text("jobs/m.yaml", &t2i_set("steps: -5"))],
            &["run", "jobs/m.yaml", "--sim", "--output", "out"],
            Bad,
            "node 3 (KSampler) input 'steps'",
        ),
        case(
            "out-of-range values fail check",
            vec![text(
                "jobs/m.yaml",
                &t2i_set("cfg: -1, denoise: 7, width: 3, height: 100000, steps: 0"),
            )],
            &["check", "jobs/m.yaml", "--sim"],
            Bad,
            "node 5 (EmptyLatentImage) input 'width'",
        ),
        case(
            "unknown sampler fails check",
            vec![text("jobs/m.yaml", &t2i_set("sampler: eulr"))],
            &["check", "jobs/m.yaml", "--sim"],
            Bad,
            "'eulr' not in",
        ),
        case(
            "unknown checkpoint fails check",
            vec![text(
                "jobs/m.yaml",
                &t2i_set("checkpoint: nope.safetensors"),
            )],
            &["check", "jobs/m.yaml", "--sim"],
            Bad,
            "input 'ckpt_name'",
        ),
        case(
            "link to an output the node lacks fails check",
            vec![
                text(
                    "jobs/m.yaml",
                    "version: 1\njobs:\n  - name: g\n    workflow: w\n    seeds: [1]\n",
                ),
                File::Bytes(
                    "workflows/w.json",
                    t2i_with(|w| w["8"]["inputs"]["samples"] = serde_json::json!(["3", 4])),
                ),
            ],
            &["check", "jobs/m.yaml", "--sim"],
            Bad,
            "node 8 (VAEDecode) input 'samples' links to output 4 of node 3 (KSampler), which has 1 output (LATENT)",
        ),
        // --- positive controls ---
        case(
            "unicode prompts are accepted",
            vec![text(
                "jobs/m.yaml",
                &t2i_set(
                    "prompt: \"ein Fuchs im Schnee — 雪の中の狐 🦊 \u{202e}rtl\u{202c}\", negative: \"ℌ𝔢𝔩𝔩𝔬, Ωmega\"",
                ),
            )],
            &["check", "jobs/m.yaml", "--sim"],
            Ok,
            "",
        ),
        case(
            "a 1 MB prompt is accepted",
            vec![text(
                "jobs/m.yaml",
                &t2i_set(&format!("prompt: \"{big_prompt}\"")),
            )],
            &["check", "jobs/m.yaml", "--sim"],
            Ok,
            "",
        ),
        case(
            "a UTF-8 BOM is skipped",
            vec![File::Bytes(
                "jobs/m.yaml",
                [b"\xef\xbb\xbf".as_slice(), GOOD.as_bytes()].concat(),
            )],
            &["plan", "jobs/m.yaml"],
            Ok,
            "",
        ),
        case(
            "numbers quoted as text are text",
            vec![text(
                "jobs/m.yaml",
                &t2i_set("prompt: \"1e400\", negative: \".nan\""),
            )],
            &["plan", "jobs/m.yaml"],
            Ok,
            "",
        ),
        case(
            "anchors and aliases work",
            vec![text(
                "jobs/m.yaml",
                "version: 1\njobs:\n  - name: a\n    workflow: t2i\n    set: &s {cfg: 5, prompt: &p fox}\n    seeds: [1]\n  - name: b\n    workflow: t2i\n    set: *s\n    matrix: {negative: [*p]}\n    seeds: [2]\n",
            )],
            &["plan", "jobs/m.yaml"],
            Ok,
            "",
        ),
    ]
}

/// Replaces what changes between runs: the temp folder and loopback ports.
fn redact(text: &str, dir: &str) -> String {
    let text = text.replace(dir, "[TMP]");
    let port = regex_lite::Regex::new(r"127\.0\.0\.1:\d+").unwrap();
    port.replace_all(&text, "127.0.0.1:[PORT]").into_owned()
}

/// What is wrong with one case's outcome (empty when it is right).
fn judge(case: &Case, p: &Project, code: i32, stdout: &str, stderr: &str) -> Vec<String> {
    let mut wrong = Vec::new();
    for marker in ["panicked", "RUST_BACKTRACE", "stack backtrace"] {
        if stderr.contains(marker) {
            wrong.push(format!("stderr mentions '{marker}'"));
        }
    }
    let want = if case.expect == Expect::Ok { 0 } else { 2 };
    if code != want {
        wrong.push(format!("exit {code}, want {want}"));
    }
    let lines: Vec<&str> = stderr.lines().collect();
    if let Some(long) = lines.iter().find(|l| l.chars().count() > 1000) {
        wrong.push(format!("a line of {} characters", long.chars().count()));
    }
    let errors: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("error: "))
        .collect();
    match case.expect {
        Expect::Ok => {
            if !errors.is_empty() {
                wrong.push("error lines on success".into());
            }
            return wrong;
        }
        Expect::Bad => {
            if errors.is_empty() {
                wrong.push("no 'error:' line".into());
            }
            if let Some(l) = lines.iter().find(|l| {
                // `run --sim` says where its simulator listens first.
                !["error: ", "hint: ", "warning: ", "simulator: "]
                    .iter()
                    .any(|p| l.starts_with(p))
            }) {
                wrong.push(format!("a line that is no diagnostic: {l:?}"));
            }
        }
        Expect::BadArgs => {
            if errors.len() != 1 || !stderr.starts_with("error: ") {
                wrong.push(format!(
                    "want one leading 'error:' line, got {}",
                    errors.len()
                ));
            }
        }
    }
    if !errors.first().is_some_and(|e| e.contains(case.names)) {
        wrong.push(format!("the first error does not contain {:?}", case.names));
    }
    if !stdout.is_empty() {
        wrong.push("output on stdout".into());
    }
    if p.out().exists() {
        wrong.push("the output folder was created".into());
    }
    wrong
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_exits_2_with_one_clear_line_per_problem() {
    let cases = cases();
    assert!(
        cases.iter().filter(|c| c.expect != Expect::Ok).count() >= 25,
        "issue #5 wants at least 25 bad inputs"
    );
    let mut table = String::new();
    let mut failures = Vec::new();
    for case in &cases {
        let p = Project::new();
        std::fs::create_dir_all(p.path("jobs")).unwrap();
        // The i2i fixture's image, for the cases that need one that exists.
        p.write("jobs/there.png", b"png");
        for file in &case.files {
            match file {
                File::Text(path, body) => {
                    p.write(path, body);
                }
                File::Bytes(path, bytes) => {
                    p.write(path, bytes);
                }
                File::Dir(path) => std::fs::create_dir_all(p.path(path)).unwrap(),
            }
        }
        let out = p.cli(&case.args).await;
        let dir = p.dir.path().display().to_string();
        let stderr = redact(&out.stderr, &dir);
        for problem in judge(case, &p, out.code, &out.stdout, &stderr) {
            failures.push(format!("{}: {problem}\n{stderr}", case.name));
        }
        let _ = writeln!(
            table,
            "## {}\n$ comfy-batch {}\nexit {}\n{}",
            case.name,
            case.args.join(" "),
            out.code,
            stderr
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    insta::assert_snapshot!(table);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_mb_prompt_is_planned_whole() {
    let p = Project::new();
    let prompt = "a red fox in the snow, ".repeat(50_000);
    assert!(prompt.len() > 1_000_000);
    p.write("jobs/m.yaml", t2i_set(&format!("prompt: \"{prompt}\"")));
    let out = p
        .cli(&["plan", "jobs/m.yaml", "--write-prompts", "prompts"])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let files: Vec<_> = std::fs::read_dir(p.path("prompts")).unwrap().collect();
    assert_eq!(files.len(), 1);
    let sent: serde_json::Value =
        serde_json::from_slice(&std::fs::read(files[0].as_ref().unwrap().path()).unwrap()).unwrap();
    assert_eq!(sent["6"]["inputs"]["text"], prompt.as_str());
}
