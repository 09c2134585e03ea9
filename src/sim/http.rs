//! The HTTP routes, each also under `/api`, answering with the real server's
//! status codes and bodies (ComfyUI `server.py`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Multipart, Path as UrlPath, Query, State, WebSocketUpgrade};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::files;
use super::queue::QueueItem;
use super::state::{Shared, lock, now_ms};
use super::ws;
use crate::validate::{PromptError, ValidateOptions, validate_prompt};

type S = State<Arc<Shared>>;
type Params = Query<HashMap<String, String>>;

/// Keys the real server strips from `extra_data` before queueing.
const SENSITIVE: &[&str] = &["auth_token_comfy_org", "api_key_comfy_org"];

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let routes: Router<Arc<Shared>> = Router::new()
        .route("/ws", get(ws_upgrade))
        .route("/prompt", post(post_prompt).get(get_prompt))
        .route("/queue", get(get_queue).post(post_queue))
        .route("/interrupt", post(post_interrupt))
        .route("/history", get(get_history).post(post_history))
        .route("/history/{id}", get(get_history_item))
        .route("/view", get(view))
        .route("/upload/image", post(upload_image))
        .route("/object_info", get(object_info))
        .route("/object_info/{class}", get(object_info_class))
        .route("/system_stats", get(system_stats))
        .route("/features", get(|| async { json_ok(ws::features()) }))
        .route("/models", get(models))
        .route("/models/{folder}", get(models_folder))
        .route("/view_metadata/{folder}", get(view_metadata))
        .route("/embeddings", get(embeddings))
        .route("/free", post(post_free));
    Router::new()
        .merge(routes.clone())
        .nest("/api", routes)
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            require_credentials,
        ))
        .with_state(shared)
}

/// Answers 401 to a request without every header and query pair the
/// config requires (`--require-header`, `--require-query`), as an
/// authenticating proxy in front of the server would.
async fn require_credentials(
    State(shared): S,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let config = &shared.config;
    let headers_ok = config.require_headers.iter().all(|(name, value)| {
        request
            .headers()
            .get_all(name.as_str())
            .iter()
            .any(|v| v.as_bytes() == value.as_bytes())
    });
    let query_ok = config.require_query.is_empty() || {
        let pairs = Query::<Vec<(String, String)>>::try_from_uri(request.uri())
            .map(|q| q.0)
            .unwrap_or_default();
        config
            .require_query
            .iter()
            .all(|wanted| pairs.contains(wanted))
    };
    if headers_ok && query_ok {
        next.run(request).await
    } else {
        empty(StatusCode::UNAUTHORIZED)
    }
}

fn json_response(status: StatusCode, v: &Value) -> Response {
    let mut r = Response::new(Body::from(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

fn json_ok(v: Value) -> Response {
    json_response(StatusCode::OK, &v)
}

/// aiohttp's bare `web.Response(status=…)`: no body, no content type.
fn empty(status: StatusCode) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    r
}

/// What aiohttp answers when a handler raises.
fn server_error() -> Response {
    let mut r = Response::new(Body::from(
        "500 Internal Server Error\n\nServer got itself in trouble",
    ));
    *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn ws_upgrade(State(shared): S, Query(q): Params, upgrade: WebSocketUpgrade) -> Response {
    let client_id = q.get("clientId").cloned();
    upgrade.on_upgrade(move |socket| ws::serve_socket(shared, socket, client_id))
}

/// Python truthiness for `front`.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

async fn post_prompt(State(shared): S, body: Bytes) -> Response {
    if shared.http_fault() {
        return server_error();
    }
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&body) else {
        return server_error();
    };
    // `number` is taken (and the counter advanced) before anything else is
    // checked, as the real handler does.
    let number = match body.get("number") {
        Some(n) => {
            let f = match n {
                Value::Number(x) => x.as_f64(),
                Value::String(s) => s.trim().parse::<f64>().ok(),
                Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
                _ => None,
            };
            match f.and_then(serde_json::Number::from_f64) {
                Some(x) => Value::Number(x),
                None => return server_error(),
            }
        }
        None => {
            let mut core = lock(&shared.core);
            let n = core.number as i64;
            core.number += 1;
            let front = body.get("front").is_some_and(truthy);
            json!(if front { -n } else { n })
        }
    };
    let Some(prompt) = body.get("prompt") else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": PromptError::no_prompt(), "node_errors": {}}),
        );
    };
    let Some(prompt) = prompt.as_object() else {
        return server_error();
    };
    let prompt_id = match body.get("prompt_id") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => uuid4(),
    };
    let targets: Option<Vec<String>> = body
        .get("partial_execution_targets")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        });
    let dirs = &shared.dirs;
    let exists = |value: &str| files::resolve_input(dirs, value).is_some_and(|p| p.is_file());
    let opts = ValidateOptions {
        partial_execution_targets: targets.as_deref(),
        input_file_exists: Some(&exists),
    };
    let validation = validate_prompt(&shared.catalogue, prompt, &opts);
    let mut extra_data: Map<String, Value> = body
        .get("extra_data")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if let Some(c) = body.get("client_id") {
        extra_data.insert("client_id".into(), c.clone());
    }
    if let Some(error) = &validation.error {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": error, "node_errors": validation.node_errors_json()}),
        );
    }
    for k in SENSITIVE {
        extra_data.shift_remove(*k);
    }
    extra_data.insert("create_time".into(), json!(now_ms()));
    let reply = json!({
        "prompt_id": prompt_id,
        "number": number,
        "node_errors": validation.node_errors_json(),
    });
    {
        let mut core = lock(&shared.core);
        core.queue.push(QueueItem {
            number,
            prompt_id,
            prompt: validation.prompt,
            extra_data,
            outputs: validation.outputs_to_run,
        });
        shared.broadcast_status(&core);
    }
    shared.work.notify_one();
    json_ok(reply)
}

fn uuid4() -> String {
    use rand::RngExt;
    let mut b: [u8; 16] = rand::rng().random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

async fn get_prompt(State(shared): S) -> Response {
    let core = lock(&shared.core);
    json_ok(json!({"exec_info": {"queue_remaining": core.remaining()}}))
}

async fn get_queue(State(shared): S) -> Response {
    if shared.http_fault() {
        return server_error();
    }
    let core = lock(&shared.core);
    let running: Vec<Value> = core.running.iter().map(QueueItem::to_json).collect();
    let pending: Vec<Value> = core.queue.items().iter().map(QueueItem::to_json).collect();
    json_ok(json!({"queue_running": running, "queue_pending": pending}))
}

async fn post_queue(State(shared): S, body: Bytes) -> Response {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&body) else {
        return server_error();
    };
    let mut core = lock(&shared.core);
    if body.get("clear").is_some_and(truthy) {
        core.queue.clear();
        shared.broadcast_status(&core);
    }
    if let Some(ids) = body.get("delete").and_then(Value::as_array) {
        for id in ids.iter().filter_map(Value::as_str) {
            let last = core.queue.len() == 1;
            if core.queue.remove(id) {
                // Deleting the last pending prompt wipes the queue, which
                // reports once more: two statuses, as recorded.
                if last {
                    shared.broadcast_status(&core);
                }
                shared.broadcast_status(&core);
            }
        }
    }
    empty(StatusCode::OK)
}

async fn post_interrupt(State(shared): S, body: Bytes) -> Response {
    // An empty or invalid body is a global interrupt.
    let parsed: Value = serde_json::from_slice(&body).unwrap_or_else(|_| json!({}));
    let Some(obj) = parsed.as_object() else {
        return server_error();
    };
    let target = obj.get("prompt_id").filter(|v| truthy(v));
    let should = match target {
        None => true,
        Some(id) => {
            let core = lock(&shared.core);
            core.running
                .as_ref()
                .is_some_and(|r| Some(r.prompt_id.as_str()) == id.as_str())
        }
    };
    if should {
        shared.interrupt.store(true, Ordering::SeqCst);
    }
    empty(StatusCode::OK)
}

async fn get_history(State(shared): S, Query(q): Params) -> Response {
    if shared.http_fault() {
        return server_error();
    }
    let parse = |k: &str| -> Result<Option<i64>, ()> {
        match q.get(k) {
            None => Ok(None),
            Some(s) => s.trim().parse::<i64>().map(Some).map_err(|_| ()),
        }
    };
    let (Ok(max_items), Ok(offset)) = (parse("max_items"), parse("offset")) else {
        return server_error();
    };
    let core = lock(&shared.core);
    let len = core.history.len() as i64;
    let mut offset = offset.unwrap_or(-1);
    if offset < 0
        && let Some(m) = max_items
    {
        offset = len - m;
    }
    let mut out = Map::new();
    for (i, (k, v)) in core.history.iter().enumerate() {
        if i as i64 >= offset {
            out.insert(k.clone(), v.clone());
            if max_items.is_some_and(|m| out.len() as i64 >= m) {
                break;
            }
        }
    }
    json_ok(Value::Object(out))
}

async fn get_history_item(State(shared): S, UrlPath(id): UrlPath<String>) -> Response {
    if shared.http_fault() {
        return server_error();
    }
    let core = lock(&shared.core);
    match core.history.get(&id) {
        Some(entry) => json_ok(json!({ id: entry })),
        None => json_ok(json!({})),
    }
}

async fn post_history(State(shared): S, body: Bytes) -> Response {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&body) else {
        return server_error();
    };
    let mut core = lock(&shared.core);
    if body.get("clear").is_some_and(truthy) {
        core.history.clear();
    }
    if let Some(ids) = body.get("delete").and_then(Value::as_array) {
        for id in ids.iter().filter_map(Value::as_str) {
            core.history.shift_remove(id);
        }
    }
    empty(StatusCode::OK)
}

async fn view(State(shared): S, Query(q): Params) -> Response {
    if shared.config.view_delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(shared.config.view_delay_ms)).await;
    }
    if shared.http_fault() {
        return server_error();
    }
    let Some(raw) = q.get("filename") else {
        return empty(StatusCode::NOT_FOUND);
    };
    let (filename, annotated) = files::annotated(raw);
    if filename.is_empty() || filename.starts_with('/') || filename.contains("..") {
        return empty(StatusCode::BAD_REQUEST);
    }
    let kind = annotated.unwrap_or_else(|| q.get("type").map_or("output", String::as_str));
    let Some(mut dir) = shared.dirs.by_type(kind).map(std::path::Path::to_path_buf) else {
        return empty(StatusCode::BAD_REQUEST);
    };
    if let Some(sub) = q.get("subfolder") {
        let full = dir.join(sub);
        if !files::inside(&dir, &full) {
            return empty(StatusCode::FORBIDDEN);
        }
        dir = files::normalize(&full);
    }
    let base = filename.rsplit('/').next().unwrap_or(filename);
    let path = dir.join(base);
    let channel = q.get("channel").map_or("rgba", String::as_str);
    if !matches!(channel, "rgba" | "rgb" | "a") {
        return empty(StatusCode::NOT_FOUND);
    }
    // Streamed from disk, a chunk at a time: a 268 MB video costs the
    // simulator a chunk, not 268 MB. Only a regular file is opened (a FIFO
    // would block the open).
    let file = match tokio::fs::metadata(&path).await {
        Ok(m) if m.is_file() => tokio::fs::File::open(&path).await.map(|f| (f, m.len())),
        _ => Err(std::io::ErrorKind::NotFound.into()),
    };
    let Ok((file, len)) = file else {
        return empty(StatusCode::NOT_FOUND);
    };
    let pace = match (shared.config.view_stall_ms, shared.config.view_dribble_ms) {
        (0, 0) => Pace::Whole,
        (0, ms) => Pace::Dribble(Duration::from_millis(ms)),
        (ms, _) => Pace::Stall(Duration::from_millis(ms)),
    };
    let body = streamed(file, len, pace);
    let mut r = Response::new(body);
    if pace == Pace::Whole {
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    let mime = mime_of(base);
    if let Ok(v) = HeaderValue::from_str(mime) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("filename=\"{base}\"")) {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

/// How `/view` paces a file's bytes (the `--view-*` faults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pace {
    /// As fast as the connection takes them, with a declared length.
    Whole,
    /// The first half, then a pause of this long before the rest, without
    /// a declared length (as a chunked reply from a proxy).
    Stall(Duration),
    /// One byte at a time, this far apart.
    Dribble(Duration),
}

/// The first `len` bytes of `file` as a body, read a chunk at a time as
/// the connection takes them, paced as `pace` says.
fn streamed(file: tokio::fs::File, len: u64, pace: Pace) -> Body {
    use tokio::io::AsyncReadExt as _;
    const CHUNK: u64 = 64 * 1024;
    let half = len / 2;
    let chunks =
        futures_util::stream::try_unfold((file, 0u64), move |(mut file, sent)| async move {
            if sent >= len {
                return Ok(None);
            }
            let want = match pace {
                Pace::Whole => CHUNK,
                Pace::Stall(_) if sent < half => CHUNK.min(half - sent),
                Pace::Stall(stall) => {
                    if sent == half {
                        tokio::time::sleep(stall).await;
                    }
                    CHUNK
                }
                Pace::Dribble(gap) => {
                    tokio::time::sleep(gap).await;
                    1
                }
            };
            let mut buf = vec![0; want.min(len - sent) as usize];
            let n = file.read(&mut buf).await?;
            if n == 0 {
                // Shorter than when it was opened: the reply ends early.
                return Ok(None);
            }
            buf.truncate(n);
            Ok::<_, std::io::Error>(Some((Bytes::from(buf), (file, sent + n as u64))))
        });
    Body::from_stream(chunks)
}

fn mime_of(name: &str) -> &'static str {
    let lower = name.to_ascii_lowercase();
    let ext = lower.rsplit('.').next().unwrap_or_default();
    match ext {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "json" => "application/json",
        "txt" => "text/plain",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "flac" => "audio/flac",
        "mp3" => "audio/mpeg",
        "wav" => "audio/x-wav",
        // Python's mimetypes knows neither `.opus`, `.latent` nor `.glb`.
        _ => "application/octet-stream",
    }
}

async fn upload_image(State(shared): S, mut multipart: Multipart) -> Response {
    if shared.http_fault() {
        return server_error();
    }
    let mut image: Option<(String, Bytes)> = None;
    let mut kind: Option<String> = None;
    let mut subfolder = String::new();
    let mut overwrite: Option<String> = None;
    loop {
        match multipart.next_field().await {
            Ok(Some(field)) => {
                let name = field.name().unwrap_or_default().to_string();
                let file_name = field.file_name().map(str::to_string);
                let Ok(data) = field.bytes().await else {
                    return empty(StatusCode::BAD_REQUEST);
                };
                let text = || String::from_utf8_lossy(&data).to_string();
                match name.as_str() {
                    "image" => image = Some((file_name.unwrap_or_default(), data)),
                    "type" => kind = Some(text()),
                    "subfolder" => subfolder = text(),
                    "overwrite" => overwrite = Some(text()),
                    _ => {}
                }
            }
            Ok(None) => break,
            Err(_) => return empty(StatusCode::BAD_REQUEST),
        }
    }
    let kind = kind.unwrap_or_else(|| "input".into());
    // Any other type is an unbound variable in the real handler: a 500.
    let Some(base) = shared.dirs.by_type(&kind).map(std::path::Path::to_path_buf) else {
        return server_error();
    };
    let Some((mut filename, data)) = image else {
        return empty(StatusCode::BAD_REQUEST);
    };
    if filename.is_empty() {
        return empty(StatusCode::BAD_REQUEST);
    }
    let folder = files::normalize(&base.join(&subfolder));
    let mut path = folder.join(&filename);
    if !files::inside(&base, &path) {
        return empty(StatusCode::BAD_REQUEST);
    }
    if std::fs::create_dir_all(&folder).is_err() {
        return server_error();
    }
    let overwrite = matches!(overwrite.as_deref(), Some("true" | "1"));
    let mut duplicate = false;
    if !overwrite {
        let (stem, ext) = match filename.rfind('.') {
            Some(i) if i > 0 => (filename[..i].to_string(), filename[i..].to_string()),
            _ => (filename.clone(), String::new()),
        };
        let digest = Sha256::digest(&data);
        let mut i = 1;
        while path.exists() {
            if std::fs::read(&path).is_ok_and(|b| Sha256::digest(&b) == digest) {
                duplicate = true;
                break;
            }
            filename = format!("{stem} ({i}){ext}");
            path = folder.join(&filename);
            i += 1;
        }
    }
    if !duplicate && files::write_file(&path, &data).is_err() {
        return server_error();
    }
    json_ok(json!({"name": filename, "subfolder": subfolder, "type": kind}))
}

/// Classes whose `image` list is the input folder's images.
const INPUT_IMAGE_CLASSES: &[&str] = &["LoadImage", "LoadImageMask"];

/// One `/object_info` entry, with the input folder's images where listed.
fn info_entry(
    class: &str,
    entry: &Value,
    images: &mut Option<Vec<Value>>,
    shared: &Shared,
) -> Value {
    let mut entry = entry.clone();
    if INPUT_IMAGE_CLASSES.contains(&class) {
        let list = images
            .get_or_insert_with(|| {
                files::input_images(&shared.dirs.input)
                    .into_iter()
                    .map(Value::from)
                    .collect()
            })
            .clone();
        if let Some(spec) = entry.pointer_mut("/input/required/image/0") {
            *spec = Value::Array(list);
        }
    }
    entry
}

/// `/object_info` with the model catalogue and the current input files.
fn object_info_value(shared: &Shared, only: Option<&str>) -> Value {
    let info = shared.catalogue.object_info();
    let mut images = None;
    match only {
        Some(class) => match info.get(class) {
            Some(v) => json!({ class: info_entry(class, v, &mut images, shared) }),
            None => json!({}),
        },
        None => Value::Object(
            info.iter()
                .map(|(k, v)| (k.clone(), info_entry(k, v, &mut images, shared)))
                .collect(),
        ),
    }
}

async fn object_info(State(shared): S) -> Response {
    shared.count_catalogue(true);
    if shared.config.object_info_delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(shared.config.object_info_delay_ms)).await;
    }
    json_ok(object_info_value(&shared, None))
}

async fn object_info_class(State(shared): S, UrlPath(class): UrlPath<String>) -> Response {
    if shared.config.no_class_route {
        return not_found();
    }
    shared.count_catalogue(false);
    json_ok(object_info_value(&shared, Some(&class)))
}

/// aiohttp's answer for a route it does not have.
fn not_found() -> Response {
    let mut r = Response::new(Body::from("404: Not Found"));
    *r.status_mut() = StatusCode::NOT_FOUND;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn system_stats(State(shared): S) -> Response {
    let uptime = shared.started.elapsed().map_or(0, |d| d.as_secs());
    json_ok(json!({
        "system": {
            "os": std::env::consts::OS,
            "ram_total": 17179869184u64,
            "ram_free": 8589934592u64,
            "comfyui_version": shared.config.system.comfyui_version,
            "required_frontend_version": "1.35.9",
            "installed_templates_version": "0.7.67",
            "required_templates_version": "0.7.67",
            "python_version": "3.11.7 (comfy-batch sim)",
            "pytorch_version": shared.config.system.pytorch_version,
            "embedded_python": false,
            "argv": ["comfy-batch", "sim", format!("--uptime={uptime}s")],
        },
        "devices": [{
            "name": shared.config.system.device, "type": "cpu", "index": null,
            "vram_total": 17179869184u64, "vram_free": 17179869184u64,
            "torch_vram_total": 17179869184u64, "torch_vram_free": 17179869184u64,
        }],
    }))
}

async fn models(State(shared): S) -> Response {
    let folders: Vec<&String> = shared.config.models.keys().collect();
    json_ok(json!(folders))
}

async fn models_folder(State(shared): S, UrlPath(folder): UrlPath<String>) -> Response {
    match shared.config.models.get(&folder) {
        Some(names) => json_ok(json!(names)),
        None => empty(StatusCode::NOT_FOUND),
    }
}

/// `GET /view_metadata/{folder}?filename=…`: a listed `.safetensors`
/// model's header `__metadata__`, as ComfyUI answers (404 for any other
/// file). The sim's models are names only: their metadata names the file.
async fn view_metadata(
    State(shared): S,
    UrlPath(folder): UrlPath<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let listed = |name: &str| {
        shared
            .config
            .models
            .get(&folder)
            .is_some_and(|names| names.iter().any(|n| n == name))
    };
    match query.get("filename") {
        Some(name) if name.ends_with(".safetensors") && listed(name) => json_ok(json!({
            "format": "pt",
            "modelspec.title": name.trim_end_matches(".safetensors"),
        })),
        _ => not_found(),
    }
}

async fn embeddings(State(shared): S) -> Response {
    let names: Vec<String> = shared
        .config
        .models
        .get("embeddings")
        .into_iter()
        .flatten()
        .map(|n| {
            n.rsplit_once('.')
                .map_or(n.as_str(), |(s, _)| s)
                .to_string()
        })
        .collect();
    json_ok(json!(names))
}

async fn post_free(State(shared): S, body: Bytes) -> Response {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&body) else {
        return server_error();
    };
    if body.get("free_memory").is_some_and(truthy) {
        lock(&shared.core).reset_caches = true;
    }
    empty(StatusCode::OK)
}
