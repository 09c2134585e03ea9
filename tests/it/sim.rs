//! The simulator against the real server's recordings.
//!
//! `conformance_*` tests replay each transcript of `tests/fixtures/transcripts`
//! (recorded from ComfyUI 0.8.0): the same requests, in the same order
//! relative to the websocket traffic, against an in-process sim; then compare
//! status codes, content types, JSON bodies and the per-socket message
//! sequences after normalising what legitimately differs (timestamps, prompt
//! numbers, file counters, temp prefixes, tracebacks and exception texts of
//! runtime errors, TestSleep's float progress values and how many of its
//! ~10 ms ticks happen, image bytes). `status` broadcasts answer HTTP
//! requests, so where they fall among execution messages is timing: they
//! are compared as their own sequence, the rest without them, and every
//! `executing {node: null}` must directly follow a `status`. `/system_stats`
//! is compared by shape (its values are machine facts).
//!
//! Harness notes, each a property of the recordings rather than of the sim:
//! - requests carry the recorded `prompt_id` (taken from the recorded reply),
//!   so ids match without mapping;
//! - the recorder sorted JSON keys, so `14` re-orders each node's inputs by the
//!   catalogue's `input_order` (what the UI sends; execution order depends on it);
//! - queries were not recorded: `/view` uses the last history's images (or the
//!   scenario's error cases), `/history` uses `max_items` = the reply's size;
//! - `09`'s first prompt was logged after the recorder mutated it: the history
//!   shows it loaded `rec_input.png`, which the replay sends.
//!
//! The other tests pin behaviour the recordings do not cover: file naming,
//! `/view` codes, upload renaming, priorities, caching, faults.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use comfy_batch::sim::{Sim, SimConfig, SimHandle};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value, json};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/transcripts");

// ---------------------------------------------------------------------------
// Websocket client used by all tests.

type Received = Arc<Mutex<Vec<Value>>>;

/// A websocket client collecting every frame as JSON (binary frames as
/// `{"binary": event, "format"|"meta": …, "png": bytes}`).
struct Client {
    received: Received,
    arrived: Arc<tokio::sync::Notify>,
    sink: Arc<tokio::sync::Mutex<WsSink>>,
    task: JoinHandle<()>,
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
type WsSink = futures_util::stream::SplitSink<WsStream, Message>;

fn decode_binary(b: &[u8]) -> Value {
    let word = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    if b.len() < 8 {
        return json!({"binary": "short"});
    }
    let event = word(0);
    if event == 4 {
        let n = word(4) as usize;
        let meta: Value = serde_json::from_slice(&b[8..8 + n]).unwrap_or(Value::Null);
        json!({"binary": 4, "meta": meta, "png": b[8 + n..].len()})
    } else {
        json!({"binary": event, "format": word(4), "png": b[8..].len()})
    }
}

impl Client {
    async fn connect(base: &str, client_id: &str) -> Client {
        Client::connect_with(base, client_id, None).await
    }

    async fn connect_with(base: &str, client_id: &str, first: Option<Value>) -> Client {
        let url = format!(
            "{}/ws?clientId={client_id}",
            base.replace("http://", "ws://")
        );
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("ws connects");
        let (mut sink, mut stream) = ws.split();
        if let Some(first) = first {
            sink.send(Message::Text(first.to_string().into()))
                .await
                .expect("send");
        }
        let received: Received = Arc::default();
        let arrived = Arc::new(tokio::sync::Notify::new());
        let r = received.clone();
        let a = arrived.clone();
        let task = tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                let v = match msg {
                    Message::Text(t) => serde_json::from_str(&t).unwrap_or(Value::Null),
                    Message::Binary(b) => decode_binary(&b),
                    Message::Close(_) => break,
                    _ => continue,
                };
                r.lock().expect("lock").push(v);
                a.notify_waiters();
            }
        });
        let client = Client {
            received,
            arrived,
            sink: Arc::new(tokio::sync::Mutex::new(sink)),
            task,
        };
        // The socket is registered once its first frame (`status` with the
        // sid) is out; anything sent before that could miss it.
        client
            .wait_until("the first status", |m| m["type"] == "status")
            .await;
        client
    }

    fn messages(&self) -> Vec<Value> {
        self.received.lock().expect("lock").clone()
    }

    /// Waits until a message satisfies `pred`; returns all messages so far.
    async fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        self.wait_until(what, pred).await;
        self.messages()
    }

    /// Waits until a message satisfies `pred`, without copying anything.
    async fn wait_until(&self, what: &str, pred: impl Fn(&Value) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut checked = 0;
        loop {
            let notified = self.arrived.notified();
            {
                let msgs = self.received.lock().expect("lock");
                if msgs[checked..].iter().any(&pred) {
                    return;
                }
                checked = msgs.len();
                assert!(
                    Instant::now() < deadline,
                    "timed out waiting for {what}: {msgs:#?}"
                );
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
        }
    }

    /// Waits for `executing {node: null}` of `prompt_id`.
    async fn wait_done(&self, prompt_id: &str) -> Vec<Value> {
        self.wait_for(&format!("end of {prompt_id}"), |m| {
            m["type"] == "executing"
                && m["data"]["node"].is_null()
                && m["data"]["prompt_id"] == prompt_id
        })
        .await
    }

    async fn close(self) {
        let _ = self.sink.lock().await.send(Message::Close(None)).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
    }
}

fn types(msgs: &[Value]) -> Vec<String> {
    msgs.iter()
        .map(|m| match m.get("type").and_then(Value::as_str) {
            Some(t) => t.to_string(),
            None => format!("binary{}", m["binary"]),
        })
        .collect()
}

async fn start(config: SimConfig) -> SimHandle {
    Sim::start(config, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("sim starts")
}

/// One pooled HTTP client per test runtime thread pool: connections are
/// reused as a real client would.
fn http() -> reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(reqwest::Client::new).clone()
}

// ---------------------------------------------------------------------------
// Normalisation: what may legitimately differ between two servers.

fn normalize_filename(s: &str) -> String {
    let mut out = s.to_string();
    if let Some(i) = out.find("ComfyUI_temp_")
        && out.len() >= i + 18
    {
        out.replace_range(i + 13..i + 18, "xxxxx");
    }
    // `_00012_.png` → `_NNNNN_.png`
    let b = out.as_bytes();
    if b.len() >= 11 && out.ends_with("_.png") {
        let start = b.len() - 11;
        if b[start] == b'_' && b[start + 1..start + 6].iter().all(u8::is_ascii_digit) {
            out.replace_range(start + 1..start + 6, "NNNNN");
        }
    }
    out
}

fn kind_of_number(v: &Value) -> Value {
    match v {
        Value::Number(n) if n.is_f64() => json!("<float>"),
        Value::Number(_) => json!("<int>"),
        other => other.clone(),
    }
}

/// A queue item / history `prompt`: `[number, id, prompt, extra, outputs]`.
fn normalize_item(v: &Value) -> Value {
    let mut a = v.as_array().cloned().unwrap_or_default();
    if let Some(n) = a.get_mut(0) {
        *n = kind_of_number(n);
    }
    normalize(&Value::Array(a))
}

fn normalize(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, x) in m {
                let nx = match k.as_str() {
                    "timestamp" | "create_time" => json!("<ts>"),
                    "number" => kind_of_number(x),
                    "traceback" => json!("<tb>"),
                    "value" if x.is_f64() => json!("<float>"),
                    "prompt" if x.is_array() => normalize_item(x),
                    "queue_running" | "queue_pending" => Value::Array(
                        x.as_array()
                            .into_iter()
                            .flatten()
                            .map(normalize_item)
                            .collect(),
                    ),
                    "messages" => Value::Array(
                        x.as_array()
                            .into_iter()
                            .flatten()
                            .map(|pair| {
                                let event = pair[0].as_str().unwrap_or_default();
                                json!([event, normalize_event(event, &pair[1])])
                            })
                            .collect(),
                    ),
                    _ => normalize(x),
                };
                out.insert(k.clone(), nx);
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(normalize).collect()),
        Value::String(s) => Value::String(normalize_filename(s)),
        other => other.clone(),
    }
}

/// Event data: errors keep their field names and node ids, not their texts.
fn normalize_event(event: &str, data: &Value) -> Value {
    let mut d = normalize(data);
    if matches!(event, "execution_error" | "execution_interrupted")
        && let Value::Object(m) = &mut d
    {
        for key in ["executed", "current_outputs"] {
            if let Some(Value::Array(a)) = m.get_mut(key) {
                a.sort_by_key(Value::to_string);
            }
        }
        if let Some(msg) = m.get_mut("exception_message") {
            *msg = json!("<msg>");
        }
        if let Some(Value::Object(ci)) = m.get_mut("current_inputs") {
            for v in ci.values_mut() {
                *v = json!("<input>");
            }
        }
    }
    d
}

fn normalize_ws(msg: &Value) -> Value {
    match msg.get("type").and_then(Value::as_str) {
        Some(t) => json!({"type": t, "data": normalize_event(t, &msg["data"])}),
        // Frames: event and format (or metadata), not the bytes. Recorded
        // frames are summaries: `{"binary": true, "event", "format", …}`.
        None if msg["binary"] == true => json!({"binary": msg["event"], "format": msg["format"]}),
        None => {
            let mut m = msg.clone();
            if let Value::Object(o) = &mut m {
                o.remove("png");
            }
            normalize(&m)
        }
    }
}

fn is_progress(v: &Value) -> bool {
    matches!(v["type"].as_str(), Some("progress" | "progress_state"))
}

/// Folds repeated progress updates (TestSleep's ~10 ms ticks): `A B A B` →
/// `A B`, `A A` → `A` for progress messages only.
fn collapse(msgs: &[Value]) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for m in msgs {
        out.push(m.clone());
        loop {
            let n = out.len();
            if n >= 4
                && is_progress(&out[n - 1])
                && is_progress(&out[n - 2])
                && out[n - 1] == out[n - 3]
                && out[n - 2] == out[n - 4]
            {
                out.truncate(n - 2);
            } else if n >= 2 && is_progress(&out[n - 1]) && out[n - 1] == out[n - 2] {
                out.truncate(n - 1);
            } else {
                break;
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Transcript replay.

/// How a recording is replayed (what the recorder did not keep).
#[derive(Default, Clone)]
struct Scenario {
    config: Option<SimConfig>,
    /// Re-order node inputs by `input_order` before sending.
    reorder_inputs: bool,
    /// `(index of the GET /view in the transcript, query)`.
    view_queries: Vec<(usize, String)>,
    /// Replace a prompt's body by the history's (recorder mutation).
    prompt_from_history: bool,
    /// The order the recorder's client sent the nodes in (its log sorted
    /// them; the outputs' order follows it, and the execution order that).
    node_order: &'static [&'static str],
    /// Compare progress messages one for one, none folded: for recordings
    /// without TestSleep, whose tick count is timing.
    exact: bool,
}

fn upload_png(rgb: [u8; 3]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, 4, 4);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().expect("png header");
    w.write_image_data(&rgb.repeat(16)).expect("png data");
    drop(w);
    out
}

fn reorder_inputs(prompt: &mut Value, order: &Map<String, Value>) {
    let Some(nodes) = prompt.as_object_mut() else {
        return;
    };
    for node in nodes.values_mut() {
        let class = node["class_type"].as_str().unwrap_or_default().to_string();
        let Some(spec) = order.get(&class) else {
            continue;
        };
        let mut names: Vec<String> = Vec::new();
        for section in ["required", "optional"] {
            for n in spec["input_order"][section]
                .as_array()
                .into_iter()
                .flatten()
            {
                names.extend(n.as_str().map(str::to_string));
            }
        }
        let Some(inputs) = node.get_mut("inputs").and_then(Value::as_object_mut) else {
            continue;
        };
        let mut sorted = Map::new();
        for n in &names {
            if let Some(v) = inputs.get(n) {
                sorted.insert(n.clone(), v.clone());
            }
        }
        for (k, v) in inputs.iter() {
            if !sorted.contains_key(k) {
                sorted.insert(k.clone(), v.clone());
            }
        }
        *inputs = sorted;
    }
}

struct Stream {
    client: String,
    expected: Vec<Value>,
    conn: Option<Client>,
    received: Vec<Value>,
}

async fn sync(streams: &[Stream], name: &str, at: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for s in streams {
        let Some(conn) = &s.conn else { continue };
        // Statuses are counted apart: where they fall among progress
        // updates changes how far those collapse.
        let size = |v: &[Value]| {
            let (status, rest): (Vec<Value>, Vec<Value>) =
                v.iter().cloned().partition(|m| m["type"] == "status");
            status.len() + collapse(&rest).len()
        };
        let want = size(&s.expected);
        loop {
            let got: Vec<Value> = conn.messages().iter().map(normalize_ws).collect();
            if size(&got) >= want {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: timed out before {at} waiting for {}: want {want} messages, got {:#?}\nexpected {:#?}",
                s.client,
                collapse(&got),
                collapse(&s.expected)
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

async fn replay(file: &str, scenario: Scenario) {
    let text = std::fs::read_to_string(Path::new(FIXTURES).join(file)).expect("transcript");
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("jsonl"))
        .collect();
    let object_info: Value =
        serde_json::from_str(include_str!("../../assets/object_info.json")).expect("catalogue");
    let sim = start(scenario.config.clone().unwrap_or_default()).await;
    let base = sim.url();
    let client = http();
    let mut problems: Vec<String> = Vec::new();

    // Sockets: one per recorded client (sid from its first status).
    let mut sids: BTreeMap<String, String> = BTreeMap::new();
    for e in &events {
        if e["dir"] == "ws<"
            && let Some(sid) = e["msg"]["data"]["sid"].as_str()
        {
            sids.entry(e["client"].as_str().unwrap_or_default().to_string())
                .or_insert_with(|| sid.to_string());
        }
    }
    let mut streams: Vec<Stream> = Vec::new();
    for (short, sid) in &sids {
        streams.push(Stream {
            client: short.clone(),
            expected: Vec::new(),
            conn: Some(Client::connect(&base, sid).await),
            received: Vec::new(),
        });
    }
    let current = |streams: &[Stream], short: &str| -> Option<usize> {
        streams.iter().rposition(|s| s.client == short)
    };

    let mut last_history: Option<Value> = None;
    let mut view_index = 0usize;
    for (i, e) in events.iter().enumerate() {
        match e["dir"].as_str().unwrap_or_default() {
            "ws<" => {
                let short = e["client"].as_str().unwrap_or_default();
                if let Some(k) = current(&streams, short) {
                    streams[k].expected.push(normalize_ws(&e["msg"]));
                }
            }
            "note" => {
                let text = e["text"].as_str().unwrap_or_default();
                sync(&streams, file, text).await;
                let short = sids.keys().next().cloned().unwrap_or_default();
                let k = current(&streams, &short).expect("stream");
                if text.contains("closed") {
                    let conn = streams[k].conn.take().expect("open socket");
                    streams[k].received = conn.messages();
                    conn.close().await;
                    // The recorder logs the new socket's first frames before
                    // its "reopened" note: they belong to a new stream.
                    streams.push(Stream {
                        client: short.clone(),
                        expected: Vec::new(),
                        conn: None,
                        received: Vec::new(),
                    });
                    // The recording reconnected ~0.3 s later; messages sent
                    // meanwhile are lost either way.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                } else if text.contains("reopened") {
                    let sid = sids[&short].clone();
                    streams[k].conn = Some(Client::connect(&base, &sid).await);
                }
            }
            "http>" => {
                sync(&streams, file, &format!("request #{i}")).await;
                // The recorded worker took each prompt as soon as it was
                // queued (`07`: `status` 1 from the worker's get before the
                // second POST's 2); a loaded machine can delay the sim's.
                assert!(
                    sim.settled(Duration::from_secs(60)).await,
                    "{file}: the worker never took the pending prompt before request #{i}"
                );
                let reply = events[i + 1..]
                    .iter()
                    .find(|r| r["dir"] == "http<" && r["path"] == e["path"])
                    .cloned()
                    .unwrap_or(Value::Null);
                let method = e["method"].as_str().unwrap_or("GET");
                let path = e["path"].as_str().unwrap_or_default();
                let mut url = format!("{base}{path}");
                let req = match (method, path) {
                    ("POST", "/prompt") => {
                        let body = e["body"].clone();
                        if let Value::Object(mut b) = body {
                            if let Some(id) = reply["body"]["prompt_id"].as_str() {
                                b.insert("prompt_id".into(), json!(id));
                            }
                            if scenario.reorder_inputs
                                && let Some(p) = b.get_mut("prompt")
                            {
                                reorder_inputs(p, object_info.as_object().expect("object"));
                            }
                            if !scenario.node_order.is_empty()
                                && let Some(Value::Object(p)) = b.get_mut("prompt")
                            {
                                let mut sorted = Map::new();
                                for id in scenario.node_order {
                                    if let Some(node) = p.remove(*id) {
                                        sorted.insert(id.to_string(), node);
                                    }
                                }
                                sorted.append(p);
                                *p = sorted;
                            }
                            if scenario.prompt_from_history
                                && let Some(id) = reply["body"]["prompt_id"].as_str()
                                && let Some(h) = events.iter().find(|r| {
                                    r["dir"] == "http<" && r["body"][id]["prompt"].is_array()
                                })
                            {
                                b.insert("prompt".into(), h["body"][id]["prompt"][2].clone());
                            }
                            client.post(&url).json(&Value::Object(b))
                        } else {
                            client
                                .post(&url)
                                .body(body.as_str().unwrap_or_default().to_string())
                        }
                    }
                    ("POST", "/upload/image") => {
                        let desc = e["body"].as_str().unwrap_or_default();
                        let (name, bytes) = if desc.contains("traversal") {
                            ("../evil.png".to_string(), upload_png([1, 2, 3]))
                        } else if desc.contains("different content") {
                            ("rec_input.png".to_string(), upload_png([200, 10, 10]))
                        } else {
                            ("rec_input.png".to_string(), upload_png([10, 200, 10]))
                        };
                        let overwrite = if desc.contains("overwrite=true") {
                            "true"
                        } else {
                            "false"
                        };
                        let form = reqwest::multipart::Form::new()
                            .part(
                                "image",
                                reqwest::multipart::Part::bytes(bytes)
                                    .file_name(name)
                                    .mime_str("image/png")
                                    .expect("mime"),
                            )
                            .text("overwrite", overwrite);
                        client.post(&url).multipart(form)
                    }
                    ("POST", _) => client.post(&url).json(&e["body"]),
                    ("GET", "/view") => {
                        let query = scenario
                            .view_queries
                            .iter()
                            .find(|(n, _)| *n == view_index)
                            .map(|(_, q)| q.clone())
                            .or_else(|| {
                                // The n-th image of the last history reply.
                                let h = last_history.as_ref()?;
                                let entry = h.as_object()?.values().next()?;
                                let images: Vec<&Value> = entry["outputs"]
                                    .as_object()?
                                    .values()
                                    .flat_map(|o| o["images"].as_array().into_iter().flatten())
                                    .collect();
                                let img = images.get(view_index)?;
                                Some(format!(
                                    "filename={}&subfolder={}&type={}",
                                    img["filename"].as_str()?,
                                    img["subfolder"].as_str()?,
                                    img["type"].as_str()?
                                ))
                            })
                            .expect("a /view query");
                        view_index += 1;
                        url = format!("{url}?{query}");
                        client.get(&url)
                    }
                    ("GET", "/history") => {
                        let n = reply["body"].as_object().map_or(0, Map::len);
                        client.get(format!("{url}?max_items={n}"))
                    }
                    _ => client.get(&url),
                };
                let resp = req.send().await.expect("request");
                let status = resp.status().as_u16();
                let ctype = resp
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let bytes = resp.bytes().await.expect("body");
                let what = format!("{method} {path} (line {})", i + 1);
                if reply["status"].as_u64() != Some(u64::from(status)) {
                    problems.push(format!(
                        "{what}: status {status}, recorded {}: {}",
                        reply["status"],
                        String::from_utf8_lossy(&bytes)
                    ));
                    continue;
                }
                if reply["content_type"].as_str().unwrap_or_default() != ctype {
                    problems.push(format!(
                        "{what}: content type {ctype:?}, recorded {}",
                        reply["content_type"]
                    ));
                }
                if ctype.starts_with("application/json") {
                    let got: Value = serde_json::from_slice(&bytes).expect("json body");
                    if path.starts_with("/history") {
                        last_history = Some(got.clone());
                    }
                    let (g, r) = if path == "/system_stats" {
                        (shape(&got), shape(&reply["body"]))
                    } else {
                        (normalize(&got), normalize(&reply["body"]))
                    };
                    if g != r {
                        problems.push(format!(
                            "{what}: body differs\n  sim:      {g}\n  recorded: {r}"
                        ));
                    }
                } else if ctype.starts_with("text/") {
                    let got = String::from_utf8_lossy(&bytes).to_string();
                    if Some(got.as_str()) != reply["body"].as_str() {
                        problems.push(format!("{what}: body {got:?}, recorded {}", reply["body"]));
                    }
                }
            }
            _ => {}
        }
    }
    sync(&streams, file, "the end").await;
    // Anything extra would arrive right after the recorded end.
    tokio::time::sleep(Duration::from_millis(30)).await;
    for s in &mut streams {
        if let Some(conn) = s.conn.take() {
            s.received = conn.messages();
            conn.close().await;
        }
        let got: Vec<Value> = s.received.iter().map(normalize_ws).collect();
        let want = s.expected.clone();
        let fold = |v: &[Value]| {
            if scenario.exact {
                v.to_vec()
            } else {
                collapse(v)
            }
        };
        let (got, want) = (fold(&got), fold(&want));
        // `status` broadcasts answer HTTP requests, so where they fall among
        // execution messages depends on timing: compare them as their own
        // sequence, and the rest without them; the end of each prompt must
        // still be `status` then `executing {node: null}`.
        let is_status = |m: &Value| m["type"] == "status";
        let statuses =
            |v: &[Value]| -> Vec<Value> { v.iter().filter(|m| is_status(m)).cloned().collect() };
        let others = |v: &[Value]| -> Vec<Value> {
            fold(
                &v.iter()
                    .filter(|m| !is_status(m))
                    .cloned()
                    .collect::<Vec<_>>(),
            )
        };
        for (i, m) in got.iter().enumerate() {
            if m["type"] == "executing"
                && m["data"]["node"].is_null()
                && (i == 0 || !is_status(&got[i - 1]))
            {
                problems.push(format!(
                    "socket {}: executing {{node: null}} #{i} not right after status",
                    s.client
                ));
            }
        }
        if statuses(&got) != statuses(&want) {
            problems.push(format!(
                "socket {}: status sequence differs\n  sim:      {:?}\n  recorded: {:?}",
                s.client,
                statuses(&got)
                    .iter()
                    .map(|m| m["data"]["status"]["exec_info"]["queue_remaining"].clone())
                    .collect::<Vec<_>>(),
                statuses(&want)
                    .iter()
                    .map(|m| m["data"]["status"]["exec_info"]["queue_remaining"].clone())
                    .collect::<Vec<_>>(),
            ));
        }
        let (got, want) = (others(&got), others(&want));
        if got != want {
            let first = got
                .iter()
                .zip(&want)
                .position(|(a, b)| a != b)
                .unwrap_or(got.len().min(want.len()));
            problems.push(format!(
                "socket {}: messages differ at #{first} (sim {} vs recorded {})\n  sim:      {}\n  recorded: {}\n  sim types:      {:?}\n  recorded types: {:?}",
                s.client,
                got.len(),
                want.len(),
                got.get(first).map_or("-".into(), Value::to_string),
                want.get(first).map_or("-".into(), Value::to_string),
                types(&got),
                types(&want),
            ));
        }
    }
    sim.shutdown().await;
    assert!(
        problems.is_empty(),
        "{file} does not conform:\n{}",
        problems.join("\n")
    );
}

/// Field names and value kinds, for replies whose values are machine facts.
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, x)| (k.clone(), shape(x))).collect()),
        Value::Array(a) => Value::Array(a.iter().take(1).map(shape).collect()),
        Value::Number(_) => json!("number"),
        Value::String(_) => json!("string"),
        other => other.clone(),
    }
}

fn recorded_models() -> SimConfig {
    let mut config = SimConfig::default();
    config
        .models
        .insert("checkpoints".into(), vec!["sd15_random.safetensors".into()]);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_01_basic_run() {
    replay("01_basic_run.jsonl", Scenario::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_02_fully_cached_rerun() {
    replay("02_fully_cached_rerun.jsonl", Scenario::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_03_progress_testsleep() {
    replay("03_progress_testsleep.jsonl", Scenario::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_04_validation_errors() {
    replay("04_validation_errors.jsonl", Scenario::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_05_runtime_error() {
    replay("05_runtime_error.jsonl", Scenario::default()).await;
}

/// The order of the real server's messages, every time: replayed 20 times
/// each, with no progress message folded, the basic run, the fully cached
/// rerun (`executed` then `progress_state` per cached output) and the
/// runtime error (`progress_state` before each `executing`) match their
/// recordings one message for one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_message_order_is_the_same_every_replay() {
    for _ in 0..20 {
        for file in [
            "01_basic_run.jsonl",
            "02_fully_cached_rerun.jsonl",
            "05_runtime_error.jsonl",
        ] {
            let exact = Scenario {
                exact: true,
                ..Scenario::default()
            };
            replay(file, exact).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_06_interrupt() {
    replay("06_interrupt.jsonl", Scenario::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_07_queue_of_three() {
    replay("07_queue_of_three.jsonl", Scenario::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_08_delete_from_queue() {
    replay("08_delete_from_queue.jsonl", Scenario::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_09_upload_and_img2img() {
    replay(
        "09_upload_and_img2img.jsonl",
        Scenario {
            view_queries: vec![
                (0, "filename=missing_file.png&type=input".into()),
                (1, "filename=../secret.png".into()),
            ],
            prompt_from_history: true,
            ..Scenario::default()
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_10_websocket_image_output() {
    replay("10_websocket_image_output.jsonl", Scenario::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_11_reconnect_same_client_mid_run() {
    replay(
        "11_reconnect_same_client_mid_run.jsonl",
        Scenario::default(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_12_other_client_sees() {
    replay("12_other_client_sees.jsonl", Scenario::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_13_misc_endpoints() {
    replay(
        "13_misc_endpoints.jsonl",
        Scenario {
            config: Some(recorded_models()),
            ..Scenario::default()
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_14_ksampler_t2i_with_previews() {
    replay(
        "14_ksampler_t2i_with_previews.jsonl",
        Scenario {
            config: Some(recorded_models()),
            reorder_inputs: true,
            ..Scenario::default()
        },
    )
    .await;
}

/// Every output kind: animated WebP, PNGs, WebM, FLAC, MP3, a latent, an
/// MP4 and a PreviewAny text, with their keys, `animated` flags and `/view`
/// content types. The recorder kept no queries: they are the history's
/// files in the recorded order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_15_output_kinds() {
    let files = [
        "anim_00001_.webp",
        "still_00001_.png",
        "still_00002_.png",
        "still_00003_.png",
        "webm_00001_.webm",
        "tone_00001_.flac",
        "mp3_00001_.mp3",
        "latent_00001_.latent",
        "clip_00001_.mp4",
    ];
    replay(
        "15_output_kinds.jsonl",
        Scenario {
            reorder_inputs: true,
            // Any order listing the outputs as the history does.
            node_order: &[
                "12", "13", "1", "2", "7", "5", "6", "9", "10", "11", "3", "4", "8",
            ],
            view_queries: files
                .iter()
                .enumerate()
                .map(|(i, f)| (i, format!("filename={f}&subfolder=rec/kinds&type=output")))
                .collect(),
            ..Scenario::default()
        },
    )
    .await;
}

// ---------------------------------------------------------------------------
// Focused behaviour tests.

fn t2i(seed: u64, prefix: &str) -> Value {
    json!({
        "3": {"class_type": "KSampler", "inputs": {"seed": seed, "steps": 4, "cfg": 8, "sampler_name": "euler",
            "scheduler": "normal", "denoise": 1, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
            "latent_image": ["5", 0]}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"batch_size": 1, "height": 512, "width": 512}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "masterpiece best quality girl"}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "bad hands"}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": prefix, "images": ["8", 0]}},
    })
}

/// Submits a prompt with a fresh prompt id; returns (status, reply).
async fn submit(base: &str, client_id: &str, prompt: &Value) -> (u16, Value, String) {
    let prompt_id = format!("p-{}", rand_suffix());
    let resp = http()
        .post(format!("{base}/prompt"))
        .json(&json!({"prompt": prompt, "client_id": client_id, "prompt_id": prompt_id}))
        .send()
        .await
        .expect("post");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json"), prompt_id)
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

async fn history(base: &str, prompt_id: &str) -> Value {
    let v: Value = http()
        .get(format!("{base}/history/{prompt_id}"))
        .send()
        .await
        .expect("history")
        .json()
        .await
        .expect("json");
    v[prompt_id].clone()
}

fn png_text(bytes: &[u8], key: &str) -> Option<String> {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let reader = decoder.read_info().ok()?;
    reader
        .info()
        .uncompressed_latin1_text
        .iter()
        .find(|c| c.keyword == key)
        .map(|c| c.text.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_t2i_workflow_runs_caches_and_varies_with_the_seed() {
    let sim = start(SimConfig::default()).await;
    let base = sim.url();
    let ws = Client::connect(&base, "t2i").await;

    let (status, reply, a) = submit(&base, "t2i", &t2i(1, "t2i/run")).await;
    assert_eq!(status, 200, "{reply}");
    let msgs = ws.wait_done(&a).await;
    let progress: Vec<&Value> = msgs.iter().filter(|m| m["type"] == "progress").collect();
    assert_eq!(progress.len(), 4, "one progress per step");
    assert_eq!(
        progress[3]["data"],
        json!({"value": 4, "max": 4, "prompt_id": a, "node": "3"})
    );
    let entry = history(&base, &a).await;
    assert_eq!(entry["status"]["status_str"], "success");
    assert_eq!(
        entry["outputs"]["9"]["images"][0],
        json!({"filename": "run_00001_.png", "subfolder": "t2i", "type": "output"})
    );
    let first = std::fs::read(sim.output_dir().join("t2i/run_00001_.png")).expect("png written");
    let chunk = png_text(&first, "prompt").expect("prompt chunk");
    let embedded: Value = serde_json::from_str(&chunk).expect("prompt json");
    assert_eq!(embedded["3"]["inputs"]["seed"], 1);

    // Identical: fully cached, old file names, nothing written.
    let (_, _, b) = submit(&base, "t2i", &t2i(1, "t2i/run")).await;
    let msgs = ws.wait_done(&b).await;
    let cached = msgs
        .iter()
        .find(|m| m["type"] == "execution_cached" && m["data"]["prompt_id"] == b)
        .expect("cached message");
    assert_eq!(
        cached["data"]["nodes"],
        json!(["3", "4", "5", "6", "7", "8", "9"])
    );
    assert_eq!(history(&base, &b).await["outputs"], entry["outputs"]);
    assert!(!sim.output_dir().join("t2i/run_00002_.png").exists());

    // A new seed re-runs the sampler chain and gives other pixels.
    let (_, _, c) = submit(&base, "t2i", &t2i(2, "t2i/run")).await;
    let msgs = ws.wait_done(&c).await;
    let cached = msgs
        .iter()
        .find(|m| m["type"] == "execution_cached" && m["data"]["prompt_id"] == c)
        .expect("cached message");
    assert_eq!(cached["data"]["nodes"], json!(["4", "5", "6", "7"]));
    let second = std::fs::read(sim.output_dir().join("t2i/run_00002_.png")).expect("second png");
    let pixels = |b: &[u8]| {
        let mut r = png::Decoder::new(std::io::Cursor::new(b.to_vec()))
            .read_info()
            .expect("png");
        let mut buf = vec![0; r.output_buffer_size().expect("size")];
        r.next_frame(&mut buf).expect("frame");
        buf
    };
    assert_ne!(pixels(&first), pixels(&second));
    assert!(sim.stats().prompts_executed >= 3);

    // The latent's size and batch reach the saver through the sampler.
    let mut batch = t2i(4, "t2i/%width%x%height%");
    batch["5"]["inputs"] = json!({"batch_size": 2, "height": 768, "width": 512});
    let (_, _, d) = submit(&base, "t2i", &batch).await;
    ws.wait_done(&d).await;
    let h = history(&base, &d).await;
    let names: Vec<&str> = h["outputs"]["9"]["images"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["filename"].as_str())
        .collect();
    assert_eq!(names, ["512x768_00001_.png", "512x768_00002_.png"]);
    let png = std::fs::read(sim.output_dir().join("t2i/512x768_00002_.png")).expect("png");
    let info = png::Decoder::new(std::io::Cursor::new(png))
        .read_info()
        .expect("png");
    assert_eq!(
        (info.info().width, info.info().height),
        (42, 64),
        "capped, aspect kept"
    );
    ws.close().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn img2img_with_an_uploaded_image_runs() {
    let sim = start(SimConfig::default()).await;
    let base = sim.url();
    let ws = Client::connect(&base, "i2i").await;
    let form = reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(upload_png([9, 8, 7])).file_name("red.png"),
    );
    let up: Value = http()
        .post(format!("{base}/upload/image"))
        .multipart(form)
        .send()
        .await
        .expect("upload")
        .json()
        .await
        .expect("json");
    assert_eq!(
        up,
        json!({"name": "red.png", "subfolder": "", "type": "input"})
    );
    let prompt = json!({
        "3": {"class_type": "KSampler", "inputs": {"seed": 5, "steps": 3, "cfg": 8, "sampler_name": "dpmpp_3m_sde",
            "scheduler": "karras", "denoise": 0.6, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
            "latent_image": ["11", 0]}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "a dress"}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "text"}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "i2i", "images": ["8", 0]}},
        "10": {"class_type": "LoadImage", "inputs": {"image": "red.png", "upload": "image"}},
        "11": {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}},
    });
    let (status, reply, id) = submit(&base, "i2i", &prompt).await;
    assert_eq!(status, 200, "{reply}");
    ws.wait_done(&id).await;
    assert_eq!(history(&base, &id).await["status"]["status_str"], "success");
    assert!(sim.output_dir().join("i2i_00001_.png").is_file());

    // A missing input file is a validation error, as recorded.
    let mut missing = prompt.clone();
    missing["10"]["inputs"]["image"] = json!("nope.png");
    let (status, reply, _) = submit(&base, "i2i", &missing).await;
    assert_eq!(status, 400);
    assert_eq!(
        reply["node_errors"]["10"]["errors"][0]["type"],
        "custom_validation_failed"
    );
    ws.close().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_images_carry_their_prompt_id_when_flagged() {
    let sim = start(SimConfig::default()).await;
    let base = sim.url();
    let flags = json!({"type": "feature_flags", "data": {"supports_preview_metadata": true}});
    let ws = Client::connect_with(&base, "flagged", Some(flags)).await;
    ws.wait_for("feature_flags reply", |m| m["type"] == "feature_flags")
        .await;
    let prompt = json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 600, "height": 300, "batch_size": 2, "color": 255}},
        "2": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}},
    });
    let (_, _, id) = submit(&base, "flagged", &prompt).await;
    let msgs = ws.wait_done(&id).await;
    let frames: Vec<&Value> = msgs.iter().filter(|m| m["binary"] == 4).collect();
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0]["meta"]["prompt_id"], json!(id));
    assert_eq!(frames[0]["meta"]["node_id"], "2");
    assert_eq!(frames[0]["meta"]["image_type"], "image/png");
    let t = types(&msgs);
    let i = t.iter().position(|x| x == "binary4").expect("frame");
    assert_eq!(&t[i - 1..=i + 1], ["progress_state", "binary4", "progress"]);
    assert!(!t.contains(&"executed".to_string()));
    ws.close().await;
    sim.shutdown().await;
}

fn instant_prompt(i: u64) -> Value {
    json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": i % 0xFFFFFF}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": format!("b/{:02x}/job{i}", i % 256)}},
    })
}

/// A runner-shaped load: `slots` clients each submit, wait for the end on
/// the websocket, read the history and download the image. Returns jobs/s.
async fn throughput(sim: &SimHandle, jobs: u64, slots: u64, prompt: fn(u64) -> Value) -> f64 {
    let base = sim.url();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..slots {
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            let cid = format!("bench{s}");
            let ws = Client::connect(&base, &cid).await;
            let http = http();
            let mut i = s;
            while i < jobs {
                let (status, reply, id) = submit(&base, &cid, &prompt(i)).await;
                assert_eq!(status, 200, "{reply}");
                ws.wait_until("end", |m| {
                    m["type"] == "executing"
                        && m["data"]["node"].is_null()
                        && m["data"]["prompt_id"] == id
                })
                .await;
                let h = history(&base, &id).await;
                if let Some(img) = h["outputs"]["2"]["images"][0].as_object() {
                    let r = http
                        .get(format!("{base}/view"))
                        .query(&[
                            ("filename", img["filename"].as_str().unwrap_or_default()),
                            ("subfolder", img["subfolder"].as_str().unwrap_or_default()),
                            ("type", img["type"].as_str().unwrap_or_default()),
                        ])
                        .send()
                        .await
                        .expect("view");
                    assert_eq!(r.status(), 200);
                    let _ = r.bytes().await;
                }
                i += slots;
            }
            ws.close().await;
        }));
    }
    for t in tasks {
        t.await.expect("client");
    }
    jobs as f64 / started.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instant_jobs_flow_fast() {
    let sim = start(SimConfig::default()).await;
    let rate = throughput(&sim, 300, 2, instant_prompt).await;
    eprintln!("instant jobs: {rate:.0} jobs/s");
    // A smoke check against pathological slowness (a debug build on a busy
    // machine); the real figures come from the ignored release benchmark.
    assert!(rate > 20.0, "only {rate:.0} jobs/s");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --release"]
async fn benchmark_instant_and_sampler_load() {
    let sim = start(SimConfig::default()).await;
    let rate = throughput(&sim, 2000, 2, instant_prompt).await;
    eprintln!("2000 instant jobs: {rate:.0} jobs/s");
    sim.shutdown().await;

    let sim = start(SimConfig {
        step_ms: 5,
        ..SimConfig::default()
    })
    .await;
    let before = Instant::now();
    throughput(&sim, 200, 2, |i| {
        let mut p = t2i(i, "bench");
        p["3"]["inputs"]["steps"] = json!(20);
        p["9"]["inputs"]["images"] = json!(["8", 0]);
        // The shared throughput helper reads node "2"'s images.
        p["2"] = json!({"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}});
        p
    })
    .await;
    let wall = before.elapsed();
    let stats = sim.stats();
    eprintln!(
        "200 × 20 steps: busy {:.1}% ({:?} of {:?})",
        100.0 * stats.busy.as_secs_f64() / wall.as_secs_f64(),
        stats.busy,
        wall
    );
    sim.shutdown().await;
}

async fn run_to_end(
    sim: &SimHandle,
    ws: &Client,
    client_id: &str,
    prompt: &Value,
) -> (String, Value) {
    let (status, reply, id) = submit(&sim.url(), client_id, prompt).await;
    assert_eq!(status, 200, "{reply}");
    ws.wait_done(&id).await;
    let h = history(&sim.url(), &id).await;
    (id, h)
}

fn save(prefix: &str, batch: u64) -> Value {
    json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 8, "batch_size": batch, "color": 7}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    })
}

fn images(entry: &Value) -> Vec<String> {
    entry["outputs"]["2"]["images"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            format!(
                "{}|{}",
                i["subfolder"].as_str().unwrap_or_default(),
                i["filename"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_image_names_files_like_the_real_server() {
    let sim = start(SimConfig::default()).await;
    let ws = Client::connect(&sim.url(), "names").await;
    // Existing files set the counter: 1 + the largest.
    std::fs::create_dir_all(sim.output_dir().join("a/b")).expect("dir");
    std::fs::write(sim.output_dir().join("a/b/img_00041_.png"), b"x").expect("file");
    std::fs::write(sim.output_dir().join("a/b/img_x_.png"), b"x").expect("file");
    std::fs::write(sim.output_dir().join("a/b/imgother_00099_.png"), b"x").expect("file");
    let (_, h) = run_to_end(&sim, &ws, "names", &save("a/b/img", 2)).await;
    assert_eq!(images(&h), ["a/b|img_00042_.png", "a/b|img_00043_.png"]);
    let (_, h) = run_to_end(&sim, &ws, "names", &save("a/./c/../b/img", 1)).await;
    assert_eq!(images(&h), ["a/b|img_00044_.png"]);
    // Deleting files lowers later counters, as on the real server.
    for n in 41..=44 {
        let _ = std::fs::remove_file(sim.output_dir().join(format!("a/b/img_{n:05}_.png")));
    }
    let (_, h) = run_to_end(&sim, &ws, "names", &save("a/b/img", 1)).await;
    assert_eq!(images(&h), ["a/b|img_00001_.png"]);
    let (_, h) = run_to_end(&sim, &ws, "names", &save("dims_%width%x%height%", 1)).await;
    assert_eq!(images(&h), ["|dims_16x8_00001_.png"]);

    // Escaping the output folder fails at execution time.
    let (id, h) = run_to_end(&sim, &ws, "names", &save("../escape", 1)).await;
    assert_eq!(h["status"]["status_str"], "error");
    let msgs = ws.messages();
    let err = msgs
        .iter()
        .find(|m| m["type"] == "execution_error" && m["data"]["prompt_id"] == id)
        .expect("execution_error");
    assert_eq!(err["data"]["node_id"], "2");
    assert_eq!(err["data"]["exception_type"], "Exception");
    assert!(
        err["data"]["exception_message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("**** ERROR: Saving image outside the output folder is not allowed.")
    );
    ws.close().await;
    sim.shutdown().await;
}

async fn get_status(url: String) -> u16 {
    http().get(url).send().await.expect("get").status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn view_answers_400_403_404_as_the_real_server() {
    let sim = start(SimConfig::default()).await;
    let base = sim.url();
    std::fs::create_dir_all(sim.output_dir().join("sub")).expect("dir");
    std::fs::write(sim.output_dir().join("sub/a.png"), upload_png([1, 1, 1])).expect("file");
    std::fs::write(sim.input_dir().join("in.png"), upload_png([2, 2, 2])).expect("file");
    let v = |q: &str| get_status(format!("{base}/view?{q}"));
    assert_eq!(v("").await, 404, "no filename");
    assert_eq!(v("filename=").await, 400);
    assert_eq!(v("filename=../x.png").await, 400);
    assert_eq!(v("filename=/etc/passwd").await, 400);
    assert_eq!(v("filename=a.png&type=bogus").await, 400);
    assert_eq!(v("filename=a.png&subfolder=../..").await, 403);
    assert_eq!(v("filename=a.png&subfolder=/etc").await, 403);
    assert_eq!(v("filename=missing.png").await, 404);
    assert_eq!(v("filename=a.png&subfolder=sub").await, 200);
    assert_eq!(v("filename=a.png&subfolder=sub&channel=bogus").await, 404);
    assert_eq!(v("filename=in.png&type=input").await, 200);
    assert_eq!(
        v("filename=in.png%20[input]&type=output").await,
        200,
        "annotation overrides type"
    );
    let r = http()
        .get(format!("{base}/api/view?filename=a.png&subfolder=sub"))
        .send()
        .await
        .expect("view");
    assert_eq!(r.headers()["content-type"], "image/png");
    assert_eq!(r.headers()["content-disposition"], "filename=\"a.png\"");
    sim.shutdown().await;
}

async fn upload(base: &str, name: &str, bytes: Vec<u8>, fields: &[(&str, &str)]) -> (u16, Value) {
    let mut form = reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(bytes).file_name(name.to_string()),
    );
    for (k, v) in fields {
        form = form.text(k.to_string(), v.to_string());
    }
    let r = http()
        .post(format!("{base}/upload/image"))
        .multipart(form)
        .send()
        .await
        .expect("upload");
    let status = r.status().as_u16();
    let body = r.bytes().await.expect("body");
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_dedupe_and_rename_like_the_real_server() {
    let sim = start(SimConfig::default()).await;
    let base = sim.url();
    let (a, b, c) = (
        upload_png([1, 0, 0]),
        upload_png([0, 1, 0]),
        upload_png([0, 0, 1]),
    );
    let name = |v: &Value| v["name"].as_str().unwrap_or_default().to_string();
    assert_eq!(
        name(&upload(&base, "x.png", a.clone(), &[]).await.1),
        "x.png"
    );
    assert_eq!(
        name(&upload(&base, "x.png", a.clone(), &[]).await.1),
        "x.png",
        "same content"
    );
    assert_eq!(
        name(&upload(&base, "x.png", b.clone(), &[]).await.1),
        "x (1).png"
    );
    assert_eq!(
        name(&upload(&base, "x.png", b.clone(), &[]).await.1),
        "x (1).png",
        "hash checked per candidate"
    );
    assert_eq!(
        name(&upload(&base, "x.png", c.clone(), &[]).await.1),
        "x (2).png"
    );
    let (_, v) = upload(&base, "x.png", c.clone(), &[("overwrite", "true")]).await;
    assert_eq!(name(&v), "x.png");
    assert_eq!(
        std::fs::read(sim.input_dir().join("x.png")).expect("file"),
        c
    );
    let (status, v) = upload(
        &base,
        "y.png",
        a.clone(),
        &[("subfolder", "s/t"), ("type", "temp")],
    )
    .await;
    assert_eq!(
        (status, v),
        (
            200,
            json!({"name": "y.png", "subfolder": "s/t", "type": "temp"})
        )
    );
    assert!(sim.temp_dir().join("s/t/y.png").is_file());
    assert_eq!(upload(&base, "../evil.png", a.clone(), &[]).await.0, 400);
    assert_eq!(
        upload(&base, "z.png", a.clone(), &[("subfolder", "../..")])
            .await
            .0,
        400
    );
    assert_eq!(
        upload(&base, "z.png", a.clone(), &[("type", "bogus")])
            .await
            .0,
        500
    );
    // LoadImage's list follows the input folder.
    let info: Value = http()
        .get(format!("{base}/object_info/LoadImage"))
        .send()
        .await
        .expect("info")
        .json()
        .await
        .expect("json");
    assert_eq!(
        info["LoadImage"]["input"]["required"]["image"][0],
        json!(["x (1).png", "x (2).png", "x.png"])
    );
    sim.shutdown().await;
}

fn sleep_prompt(seconds: f64, color: u64) -> Value {
    json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": color}},
        "5": {"class_type": "TestSleep", "inputs": {"value": ["1", 0], "seconds": seconds}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "s"}},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_priority_delete_interrupt_and_history_paging() {
    let sim = start(SimConfig::default()).await;
    let base = sim.url();
    let ws = Client::connect(&base, "q").await;
    let (_, _, running) = submit(&base, "q", &sleep_prompt(1.0, 1)).await;
    ws.wait_for("start", |m| m["type"] == "execution_start")
        .await;
    let (_, r1, later) = submit(&base, "q", &sleep_prompt(0.0, 2)).await;
    let resp: Value = http()
        .post(format!("{base}/prompt"))
        .json(&json!({"prompt": sleep_prompt(0.0, 3), "client_id": "q", "prompt_id": "front", "front": true}))
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    assert_eq!(
        resp["number"],
        json!(-(r1["number"].as_i64().expect("int") + 1))
    );
    let (_, _, deleted) = submit(&base, "q", &sleep_prompt(0.0, 4)).await;
    let given: Value = http()
        .post(format!("{base}/prompt"))
        .json(&json!({"prompt": sleep_prompt(0.0, 5), "client_id": "q", "prompt_id": "given", "number": 1000}))
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    assert_eq!(given["number"], json!(1000.0), "a given number is a float");
    // Pending and running prompts have no history yet.
    assert_eq!(history(&base, &later).await, Value::Null);
    assert_eq!(history(&base, &running).await, Value::Null);
    // Deleting a running prompt does nothing; a pending one goes.
    http()
        .post(format!("{base}/queue"))
        .json(&json!({"delete": [running, deleted]}))
        .send()
        .await
        .expect("delete");
    let q: Value = http()
        .get(format!("{base}/queue"))
        .send()
        .await
        .expect("queue")
        .json()
        .await
        .expect("json");
    assert_eq!(q["queue_running"][0][1], json!(running));
    assert_eq!(q["queue_pending"].as_array().map(Vec::len), Some(3));
    // Interrupting a prompt that is not running does nothing.
    http()
        .post(format!("{base}/interrupt"))
        .json(&json!({"prompt_id": later}))
        .send()
        .await
        .expect("interrupt");
    ws.wait_done("given").await;
    assert_eq!(
        history(&base, &running).await["status"]["status_str"],
        "success"
    );
    let order: Vec<String> = ws
        .messages()
        .iter()
        .filter(|m| m["type"] == "execution_start")
        .map(|m| {
            m["data"]["prompt_id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(order, [running.as_str(), "front", later.as_str(), "given"]);
    assert_eq!(history(&base, &deleted).await, Value::Null);

    // History: insertion order, newest N with max_items, offset.
    let page = |q: &'static str| {
        let base = base.clone();
        async move {
            let v: Value = http()
                .get(format!("{base}/history?{q}"))
                .send()
                .await
                .expect("h")
                .json()
                .await
                .expect("json");
            v.as_object()
                .map(|m| m.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
        }
    };
    assert_eq!(
        page("").await,
        [running.as_str(), "front", later.as_str(), "given"]
    );
    assert_eq!(page("max_items=2").await, [later.as_str(), "given"]);
    assert_eq!(page("max_items=1&offset=1").await, ["front"]);
    assert_eq!(get_status(format!("{base}/history?max_items=x")).await, 500);
    http()
        .post(format!("{base}/history"))
        .json(&json!({"delete": ["front"]}))
        .send()
        .await
        .expect("del");
    assert_eq!(page("").await, [running.as_str(), later.as_str(), "given"]);
    http()
        .post(format!("{base}/history"))
        .json(&json!({"clear": true}))
        .send()
        .await
        .expect("clear");
    assert!(page("").await.is_empty());

    // A global interrupt stops a running TestSleep.
    let (_, _, id) = submit(&base, "q", &sleep_prompt(5.0, 9)).await;
    ws.wait_for("sleep progress", |m| {
        m["type"] == "progress" && m["data"]["prompt_id"] == id
    })
    .await;
    http()
        .post(format!("{base}/interrupt"))
        .send()
        .await
        .expect("interrupt");
    let msgs = ws.wait_done(&id).await;
    let t: Vec<String> = types(&msgs).into_iter().rev().take(3).collect();
    assert_eq!(t, ["executing", "status", "execution_interrupted"]);
    assert_eq!(history(&base, &id).await["status"]["status_str"], "error");
    ws.close().await;
    sim.shutdown().await;
}

/// Which of `n` distinct prompts failed, for a given fault seed.
async fn failing_prompts(seed: u64, n: u64) -> Vec<u64> {
    let sim = start(SimConfig {
        seed,
        fail_rate: 0.3,
        ..SimConfig::default()
    })
    .await;
    let ws = Client::connect(&sim.url(), "f").await;
    let mut failed = Vec::new();
    for i in 0..n {
        let (_, h) = run_to_end(&sim, &ws, "f", &save("f", 1 + i % 2)).await;
        if h["status"]["status_str"] == "error" {
            let err = &h["status"]["messages"][2];
            assert_eq!(err[0], "execution_error");
            for key in [
                "prompt_id",
                "node_id",
                "node_type",
                "executed",
                "exception_message",
                "exception_type",
                "traceback",
                "current_inputs",
                "current_outputs",
                "timestamp",
            ] {
                assert!(err[1].get(key).is_some(), "execution_error has {key}");
            }
            failed.push(i);
        }
        // Repeated prompts would be fully cached (nothing runs, nothing
        // fails): clear the caches between runs.
        http()
            .post(format!("{}/free", sim.url()))
            .json(&json!({"free_memory": true}))
            .send()
            .await
            .expect("free");
    }
    ws.close().await;
    sim.shutdown().await;
    failed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_failures_are_reproducible() {
    let a = failing_prompts(7, 16).await;
    let b = failing_prompts(7, 16).await;
    assert_eq!(a, b, "same seed, same failures");
    assert!(
        !a.is_empty() && a.len() < 16,
        "some but not all fail: {a:?}"
    );
    assert_ne!(
        a,
        failing_prompts(8, 16).await,
        "another seed, other failures"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_http_500s_are_reproducible() {
    let codes = |seed| async move {
        let sim = start(SimConfig {
            seed,
            http_500_rate: 0.5,
            ..SimConfig::default()
        })
        .await;
        let mut out = Vec::new();
        for _ in 0..24 {
            out.push(get_status(format!("{}/queue", sim.url())).await);
        }
        // Readiness probes are never faulted.
        assert_eq!(get_status(format!("{}/system_stats", sim.url())).await, 200);
        sim.shutdown().await;
        out
    };
    let a = codes(3).await;
    assert_eq!(a, codes(3).await);
    assert!(a.contains(&500) && a.contains(&200), "{a:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_drop_after_n_messages_and_restarts_forget_everything() {
    let sim = start(SimConfig {
        drop_ws_every: Some(5),
        restart_after: Some(2),
        ..SimConfig::default()
    })
    .await;
    let base = sim.url();
    let ws = Client::connect(&base, "d").await;
    let (_, _, first) = submit(&base, "d", &save("d", 1)).await;
    // The socket closes after 5 messages; reconnecting works.
    tokio::time::timeout(Duration::from_secs(60), async {
        while !ws.task.is_finished() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("socket closed by the sim");
    assert_eq!(ws.messages().len(), 5);
    // Wait for the first prompt through history, then run a second: the
    // sim "crashes" after it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while history(&base, &first).await.is_null() {
        assert!(Instant::now() < deadline, "first prompt never finished");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ws2 = Client::connect(&base, "d").await;
    let (_, _, second) = submit(&base, "d", &save("d2", 1)).await;
    tokio::time::timeout(Duration::from_secs(60), async {
        while !ws2.task.is_finished() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("socket closed");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let all: Value = http()
            .get(format!("{base}/history"))
            .send()
            .await
            .expect("h")
            .json()
            .await
            .expect("json");
        if all.as_object().is_some_and(|m| m.is_empty()) && sim.stats().prompts_executed == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "history not forgotten: {all}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(history(&base, &second).await, Value::Null);
    // Numbering restarts too.
    let (_, reply, _) = submit(&base, "d", &save("d3", 1)).await;
    assert_eq!(reply["number"], 0);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_replays_the_running_node_and_keeps_the_real_bug() {
    let sim = start(SimConfig::default()).await;
    let base = sim.url();
    let old = Client::connect(&base, "r").await;
    let (_, _, id) = submit(&base, "r", &sleep_prompt(1.5, 3)).await;
    old.wait_for("sleep", |m| {
        m["type"] == "executing" && m["data"]["node"] == "5"
    })
    .await;
    // A second socket with the same clientId takes over.
    let new = Client::connect(&base, "r").await;
    let first = new.wait_for("replay", |m| m["type"] == "executing").await;
    assert_eq!(first[0]["data"]["sid"], "r");
    assert_eq!(
        first[1],
        json!({"type": "executing", "data": {"node": "5"}})
    );
    // The real server's bug: when the old socket goes, its handler removes
    // the new one from the registry, which then hears nothing more.
    old.close().await;
    // Once the prompt is in the history its end has been sent (to nobody);
    // give a wrongly registered socket a moment to hear it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while history(&base, &id).await.is_null() {
        assert!(Instant::now() < deadline, "the prompt never finished");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let got = new.messages();
    assert!(
        !got.iter()
            .any(|m| m["type"] == "executing" && m["data"]["node"].is_null()),
        "the replaced socket should hear nothing: {got:#?}"
    );
    assert_eq!(history(&base, &id).await["status"]["status_str"], "success");
    new.close().await;
    sim.shutdown().await;
}

#[test]
fn cli_prints_the_address_first() {
    use std::io::BufRead as _;
    let mut child = crate::harness::comfy_batch()
        .args([
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--models",
            "checkpoints=a.safetensors",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("line");
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.starts_with("listening on http://127.0.0.1:"), "{line}");
}

#[tokio::test]
async fn runs_on_a_current_thread_runtime() {
    let sim = start(SimConfig::default()).await;
    let ws = Client::connect(&sim.url(), "ct").await;
    let (_, h) = run_to_end(&sim, &ws, "ct", &t2i(3, "ct")).await;
    assert_eq!(h["status"]["status_str"], "success");
    ws.close().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_input_images_fail_at_run_time() {
    let sim = start(SimConfig::default()).await;
    let base = sim.url();
    let ws = Client::connect(&base, "junk").await;
    let (status, _) = upload(&base, "bad.png", b"not an image at all".to_vec(), &[]).await;
    assert_eq!(status, 200, "content is not checked on upload");
    let prompt = json!({
        "1": {"class_type": "LoadImage", "inputs": {"image": "bad.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "junk"}},
    });
    let (id, h) = run_to_end(&sim, &ws, "junk", &prompt).await;
    assert_eq!(h["status"]["status_str"], "error");
    let err = ws
        .messages()
        .into_iter()
        .find(|m| m["type"] == "execution_error" && m["data"]["prompt_id"] == id)
        .expect("execution_error");
    assert_eq!(err["data"]["node_id"], "1");
    assert_eq!(err["data"]["exception_type"], "PIL.UnidentifiedImageError");
    ws.close().await;
    sim.shutdown().await;
}

#[test]
fn sim_help_is_stable() {
    let out = crate::harness::comfy_batch()
        .args(["sim", "--help"])
        .output()
        .expect("run");
    insta::assert_snapshot!(String::from_utf8_lossy(&out.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_sampler_prompt_is_rejected_with_the_real_shapes() {
    let sim = start(SimConfig::default()).await;
    let mut prompt = t2i(1, "x");
    prompt["3"]["inputs"]["sampler_name"] = json!("eulr");
    prompt["3"]["inputs"]["steps"] = json!(0);
    prompt["4"]["inputs"]["ckpt_name"] = json!("missing.safetensors");
    let (status, reply, _) = submit(&sim.url(), "x", &prompt).await;
    assert_eq!(status, 400);
    insta::assert_json_snapshot!(reply);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_handle_stops_the_server() {
    let sim = start(SimConfig::default()).await;
    let url = format!("{}/prompt", sim.url());
    let dir = sim.output_dir().to_path_buf();
    assert_eq!(get_status(url.clone()).await, 200);
    drop(sim);
    // The aborted server task lets go of its listener when the runtime gets
    // to it. A fresh client: pooled keep-alive connections may outlive the
    // listener.
    let deadline = Instant::now() + Duration::from_secs(60);
    while reqwest::Client::new().get(&url).send().await.is_ok() {
        assert!(Instant::now() < deadline, "still serving");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!dir.exists(), "temporary folder removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_pnginfo_keys_become_png_chunks_and_views_can_be_slowed() {
    let sim = start(SimConfig {
        view_delay_ms: 60,
        ..SimConfig::default()
    })
    .await;
    let base = sim.url();
    let ws = Client::connect(&base, "meta").await;
    let workflow = json!({"nodes": [{"id": 1, "type": "EmptyImage"}], "version": 0.4});
    http()
        .post(format!("{base}/prompt"))
        .json(
            &json!({"prompt": save("meta", 1), "client_id": "meta", "prompt_id": "m1",
            "extra_data": {"extra_pnginfo": {"workflow": workflow}}}),
        )
        .send()
        .await
        .expect("post");
    ws.wait_done("m1").await;
    let started = Instant::now();
    let r = http()
        .get(format!("{base}/view?filename=meta_00001_.png&type=output"))
        .send()
        .await
        .expect("view");
    assert!(
        started.elapsed() >= Duration::from_millis(60),
        "view delay applied"
    );
    let png = r.bytes().await.expect("bytes");
    let chunk = png_text(&png, "workflow").expect("workflow chunk");
    assert_eq!(
        serde_json::from_str::<Value>(&chunk).expect("json"),
        workflow
    );
    assert!(png_text(&png, "prompt").is_some());

    // SaveImageWebsocket is never cached: a re-submit sends its frames again.
    let prompt = json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 1}},
        "2": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}},
    });
    for _ in 0..2 {
        let (_, _, id) = submit(&base, "meta", &prompt).await;
        ws.wait_done(&id).await;
    }
    let frames = ws.messages().iter().filter(|m| m["binary"] == 1).count();
    assert_eq!(frames, 2);
    ws.close().await;
    sim.shutdown().await;
}

/// `/view` streams a file from disk: fetching a 256 MiB output raises the
/// simulator's peak memory by a few chunks, not by the file (Linux: the
/// peak is read from `/proc/PID/status`).
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn view_streams_a_large_output_without_holding_it() {
    use std::io::BufRead as _;
    const LEN: u64 = 256 << 20;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("output")).unwrap();
    // Sparse: costs no disk.
    let file = std::fs::File::create(dir.path().join("output/big.mp4")).unwrap();
    file.set_len(LEN).unwrap();
    let mut child = crate::harness::comfy_batch()
        .args(["sim", "--listen", "127.0.0.1:0", "--dir"])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().trim_start_matches("listening on ").to_string();
    let peak = || {
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM");
        kb << 10
    };
    let before = peak();
    let mut reply = reqwest::get(format!("{url}/view?filename=big.mp4&type=output"))
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(reply.content_length(), Some(LEN));
    let mut got = 0u64;
    while let Some(chunk) = reply.chunk().await.unwrap() {
        got += chunk.len() as u64;
    }
    let grew = peak().saturating_sub(before);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(got, LEN);
    assert!(
        grew < 32 << 20,
        "the simulator's peak memory grew by {} MiB serving a {} MiB file",
        grew >> 20,
        LEN >> 20
    );
}

/// A batch costs `steps × step-ms × (a + b·N)` and each image differs by its index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_costs_steps_times_step_ms_times_a_plus_b_n_and_its_images_differ() {
    let sim = start(SimConfig {
        step_ms: 20,
        ..SimConfig::default()
    })
    .await;
    let ws = Client::connect(&sim.url(), "batch").await;
    let (_, one) = run_to_end(&sim, &ws, "batch", &t2i(5, "one")).await;
    let alone = sim.stats().busy;
    let mut eight = t2i(5, "eight");
    eight["5"]["inputs"]["batch_size"] = json!(8);
    let (_, h) = run_to_end(&sim, &ws, "batch", &eight).await;
    let batch = sim.stats().busy - alone;
    // 4 steps × 20 ms × (0.4 + 0.6 × 8) = 416 ms; alone 4 × 20 = 80 ms.
    assert!(batch >= Duration::from_millis(416), "{batch:?}");
    assert!(
        batch < alone * 8,
        "a batch beats its images one by one: {batch:?} vs {alone:?}"
    );
    // Each image of the batch differs by its index; the first is the
    // image of its seed alone.
    let files: Vec<Vec<u8>> = h["outputs"]["9"]["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| std::fs::read(sim.output_dir().join(i["filename"].as_str().unwrap())).unwrap())
        .collect();
    assert_eq!(files.len(), 8);
    let distinct: std::collections::BTreeSet<&Vec<u8>> = files.iter().collect();
    assert_eq!(distinct.len(), 8);
    let first = &one["outputs"]["9"]["images"][0]["filename"];
    assert_ne!(
        files[1],
        std::fs::read(sim.output_dir().join(first.as_str().unwrap())).unwrap()
    );
    sim.shutdown().await;
}
