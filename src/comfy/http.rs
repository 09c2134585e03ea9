//! The HTTP half of the client: one pool of kept-alive connections per run
//! ([`HttpPool`], shared by every server's [`HttpClient`]), a method per
//! endpoint the runner uses. Every call is a single attempt;
//! retry policy belongs to the caller (`run`).

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::protocol::{
    HistoryEntry, ImageRef, PromptAccepted, PromptRejected, PromptRequest, QueueState, Uploaded,
};
use super::{ClientError, ServerUrl};
use crate::patch::Prompt;

/// What `POST /prompt` said.
#[derive(Debug)]
pub enum Submission {
    /// Queued; `node_errors` non-empty means only the valid outputs run.
    Accepted(PromptAccepted),
    /// Refused with a 400: nothing was queued.
    Rejected(PromptRejected),
}

/// HTTP access to one ComfyUI server.
#[derive(Clone)]
pub struct HttpClient {
    base: ServerUrl,
    client: reqwest::Client,
    /// `/prompt` and `/view`, asked once or twice per job: joined once.
    prompt_url: reqwest::Url,
    view_url: reqwest::Url,
}

impl std::fmt::Debug for HttpClient {
    /// The server as shown: the URLs joined for requests carry its query.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// The kept-alive connections the [`HttpClient`]s of a run draw from, with
/// the headers and time limit of every request. One per run: the
/// connections the preflight opened carry the run's requests (on loopback
/// a connection costs more than several requests, and a run against 32
/// servers opened 64 of them twice).
#[derive(Debug, Clone)]
pub struct HttpPool {
    client: reqwest::Client,
}

impl HttpPool {
    /// A pool sending `headers` with every request (and the websocket
    /// handshake, see `ws`), each request limited to `timeout`. A redirect
    /// is an error, never followed.
    pub fn new(headers: HeaderMap, timeout: Duration) -> Result<HttpPool, ClientError> {
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(Duration::from_secs(10))
            .timeout(timeout)
            // Also a limit on silence, for requests that lift the total one.
            .read_timeout(timeout)
            .pool_max_idle_per_host(16)
            .tcp_nodelay(true)
            // reqwest would follow one to another host with the `--header`
            // values (it drops only `Authorization` and cookies there):
            // the credentials go to the server given, and nowhere else.
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                let to = attempt.url().origin().ascii_serialization();
                attempt.error(format!(
                    "redirected to {to}, not followed (a server's credentials go to it alone)"
                ))
            }))
            .build()
            .map_err(|source| ClientError::transport("the HTTP client".to_string(), source))?;
        Ok(HttpPool { client })
    }

    /// The client of the server at `base`.
    pub fn client(&self, base: ServerUrl) -> HttpClient {
        HttpClient {
            prompt_url: base.endpoint("prompt"),
            view_url: base.endpoint("view"),
            base,
            client: self.client.clone(),
        }
    }
}

/// Parses `Name: value` header lines given with `--header`. The values are
/// marked sensitive: a `Debug` of the headers shows none of them.
pub fn parse_headers(lines: &[String]) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("header '{line}' is not of the form 'Name: value'"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|e| format!("header name '{}': {e}", name.trim()))?;
        let mut value = HeaderValue::from_str(value.trim())
            .map_err(|e| format!("header value in '{}': {e}", name.as_str()))?;
        value.set_sensitive(true);
        headers.append(name, value);
    }
    Ok(headers)
}

/// The total limit of one `/view` download, far beyond any file's; stalls
/// are caught by the read timeout.
const VIEW_LIMIT: Duration = Duration::from_secs(24 * 3600);

impl HttpClient {
    /// A client for `base` with a pool of its own (see [`HttpPool::new`]).
    pub fn new(
        base: ServerUrl,
        headers: HeaderMap,
        timeout: Duration,
    ) -> Result<HttpClient, ClientError> {
        Ok(HttpPool::new(headers, timeout)?.client(base))
    }

    /// The server's base URL.
    pub fn base(&self) -> &ServerUrl {
        &self.base
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let request = match self.base.authorization() {
            Some(auth) => request.header(AUTHORIZATION, auth.clone()),
            None => request,
        };
        let request = request
            .build()
            .map_err(|source| ClientError::transport(self.base.to_string(), source))?;
        // Shown only for an error: most requests succeed.
        let url = request.url().clone();
        self.client
            .execute(request)
            .await
            .map_err(|source| ClientError::transport(self.base.show(&url), source))
    }

    /// The body of a successful response; any other status is an error
    /// carrying the start of the body.
    async fn ok_body(
        &self,
        response: reqwest::Response,
        cap: usize,
    ) -> Result<(reqwest::Url, bytes::Bytes), ClientError> {
        let url = response.url().clone();
        let status = response.status();
        let bytes = read_body(response, &self.base, &url, cap).await?;
        if !status.is_success() {
            return Err(status_error(self.base.show(&url), status.as_u16(), &bytes));
        }
        Ok((url, bytes))
    }

    async fn json<T: DeserializeOwned>(
        &self,
        response: reqwest::Response,
    ) -> Result<T, ClientError> {
        let (url, bytes) = self.ok_body(response, MAX_JSON_BODY).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            url: self.base.show(&url),
            why: e.to_string(),
        })
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let response = self.send(self.client.get(self.base.endpoint(path))).await?;
        self.json(response).await
    }

    /// `GET /system_stats`: a cheap readiness probe.
    pub async fn system_stats(&self) -> Result<Value, ClientError> {
        self.get_json("system_stats").await
    }

    /// `GET /view_metadata/{folder}?filename=…`: a `.safetensors` model's
    /// header `__metadata__`; `None` when the server has none for it (404).
    pub async fn view_metadata(
        &self,
        folder: &str,
        filename: &str,
    ) -> Result<Option<Value>, ClientError> {
        let path = format!("view_metadata/{}", encode(folder));
        let request = self
            .client
            .get(self.base.endpoint(&path))
            .query(&[("filename", filename)]);
        let response = self.send(request).await?;
        match self.json(response).await {
            Ok(metadata) => Ok(Some(metadata)),
            Err(ClientError::Status { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /object_info`: the node catalogue, for preflight validation.
    pub async fn object_info(&self) -> Result<Value, ClientError> {
        self.get_json("object_info").await
    }

    /// `GET /object_info/{class}`: one class's entry (`{class: {...}}`, or
    /// `{}` for a class the server does not have). A server without the
    /// route answers 404.
    pub async fn object_info_class(
        &self,
        class: &str,
    ) -> Result<serde_json::Map<String, Value>, ClientError> {
        self.get_json(&format!("object_info/{}", encode(class)))
            .await
    }

    /// `POST /prompt` with our client id and prompt id.
    pub async fn submit(
        &self,
        prompt: &Prompt,
        client_id: &str,
        prompt_id: &str,
    ) -> Result<Submission, ClientError> {
        let body = PromptRequest {
            prompt,
            client_id,
            prompt_id,
        };
        let response = self
            .send(self.client.post(self.prompt_url.clone()).json(&body))
            .await?;
        let url = response.url().clone();
        let status = response.status().as_u16();
        let bytes = read_body(response, &self.base, &url, MAX_JSON_BODY).await?;
        let decode = |why: serde_json::Error| ClientError::Decode {
            url: self.base.show(&url),
            why: why.to_string(),
        };
        match status {
            200 => Ok(Submission::Accepted(
                serde_json::from_slice(&bytes).map_err(decode)?,
            )),
            400 => Ok(Submission::Rejected(
                serde_json::from_slice(&bytes).map_err(decode)?,
            )),
            _ => Err(status_error(self.base.show(&url), status, &bytes)),
        }
    }

    /// `GET /history/{id}`: `None` while unknown, pending or running.
    pub async fn history(&self, prompt_id: &str) -> Result<Option<HistoryEntry>, ClientError> {
        let mut map: serde_json::Map<String, Value> = self
            .get_json(&format!("history/{}", encode(prompt_id)))
            .await?;
        match map.remove(prompt_id) {
            None => Ok(None),
            Some(entry) => {
                serde_json::from_value(entry)
                    .map(Some)
                    .map_err(|e| ClientError::Decode {
                        url: self.base.shown_endpoint("history"),
                        why: e.to_string(),
                    })
            }
        }
    }

    /// `GET /queue`.
    pub async fn queue(&self) -> Result<QueueState, ClientError> {
        self.get_json("queue").await
    }

    /// `POST /queue {"delete": [ids]}`: removes pending prompts only.
    pub async fn delete_queued(&self, prompt_ids: &[String]) -> Result<(), ClientError> {
        let response = self
            .send(
                self.client
                    .post(self.base.endpoint("queue"))
                    .json(&json!({ "delete": prompt_ids })),
            )
            .await?;
        self.expect_ok(response).await
    }

    /// `POST /history {"delete": [ids]}`: forgets finished prompts (a
    /// prompt queued again under its id keeps its old entry until the new
    /// run ends).
    pub async fn delete_history(&self, prompt_ids: &[String]) -> Result<(), ClientError> {
        let response = self
            .send(
                self.client
                    .post(self.base.endpoint("history"))
                    .json(&json!({ "delete": prompt_ids })),
            )
            .await?;
        self.expect_ok(response).await
    }

    /// `POST /interrupt {"prompt_id": id}`: acts only if that prompt runs.
    pub async fn interrupt(&self, prompt_id: &str) -> Result<(), ClientError> {
        let response = self
            .send(
                self.client
                    .post(self.base.endpoint("interrupt"))
                    .json(&json!({ "prompt_id": prompt_id })),
            )
            .await?;
        self.expect_ok(response).await
    }

    async fn expect_ok(&self, response: reqwest::Response) -> Result<(), ClientError> {
        self.ok_body(response, MAX_JSON_BODY).await.map(|_| ())
    }

    /// `GET /view`: the file's bytes, exactly as the server sends them.
    pub async fn view(&self, image: &ImageRef) -> Result<bytes::Bytes, ClientError> {
        let mut body = self.view_body(image).await?;
        let mut bytes = bytes::BytesMut::new();
        while let Some(chunk) = body.chunk().await? {
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes.freeze())
    }

    /// `GET /view` as it arrives: a successful reply's body, chunk by chunk
    /// (any other status is an error carrying the start of the body), so a
    /// caller can write a large file without holding it.
    pub async fn view_body(&self, image: &ImageRef) -> Result<ViewBody, ClientError> {
        let request = self
            .client
            .get(self.view_url.clone())
            .query(&[
                ("filename", image.filename.as_str()),
                ("subfolder", image.subfolder.as_str()),
                ("type", image.kind.as_str()),
            ])
            // A video may take longer than the timeout to arrive over a slow
            // link: only a server silent for the timeout (the read
            // timeout) ends a download.
            .timeout(VIEW_LIMIT);
        let response = self.send(request).await?;
        let url = response.url().clone();
        let status = response.status();
        if !status.is_success() {
            let bytes = read_body(response, &self.base, &url, MAX_JSON_BODY).await?;
            return Err(status_error(self.base.show(&url), status.as_u16(), &bytes));
        }
        let too_big = response.content_length().unwrap_or(0) > MAX_FILE_BODY as u64;
        let body = ViewBody {
            response,
            base: self.base.clone(),
            url,
            read: 0,
        };
        if too_big {
            return Err(body.too_big());
        }
        Ok(body)
    }

    /// `POST /upload/image`: uploads the file at `path` (`len` bytes) to
    /// the input folder as `name`, streamed from the file, never held whole
    /// (the server may store it under another name; the reply says).
    pub async fn upload_image(
        &self,
        name: &str,
        path: &std::path::Path,
        len: u64,
    ) -> Result<Uploaded, ClientError> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|source| ClientError::LocalFile {
                path: path.display().to_string(),
                source,
            })?;
        // 64 KB pieces; a file that changed length meanwhile makes the
        // request fail rather than send a part of another length.
        let pieces = futures_util::stream::unfold(file, |mut file| async move {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; 64 << 10];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok::<_, std::io::Error>(buf), file))
                }
                Err(e) => Some((Err(e), file)),
            }
        });
        let body = reqwest::Body::wrap_stream(pieces);
        let part =
            reqwest::multipart::Part::stream_with_length(body, len).file_name(name.to_string());
        let form = reqwest::multipart::Form::new()
            .part("image", part)
            .text("type", "input");
        let response = self
            .send(
                self.client
                    .post(self.base.endpoint("upload/image"))
                    .multipart(form),
            )
            .await?;
        self.json(response).await
    }
}

/// A `/view` reply's body on its way ([`HttpClient::view_body`]): at most
/// [`MAX_FILE_BODY`] bytes are taken from it.
#[derive(Debug)]
pub struct ViewBody {
    response: reqwest::Response,
    base: ServerUrl,
    url: reqwest::Url,
    /// Bytes taken so far.
    read: usize,
}

impl ViewBody {
    /// The length the server declared, if any (a hint only: the body may
    /// end sooner, and never counts past the cap).
    pub fn declared_len(&self) -> Option<u64> {
        self.response.content_length()
    }

    /// The next piece of the body; `None` once it is whole. An error names
    /// the URL as the server shows it.
    pub async fn chunk(&mut self) -> Result<Option<bytes::Bytes>, ClientError> {
        let chunk = self
            .response
            .chunk()
            .await
            .map_err(|source| ClientError::transport(self.base.show(&self.url), source))?;
        if let Some(chunk) = &chunk {
            self.read += chunk.len();
            if self.read > MAX_FILE_BODY {
                return Err(self.too_big());
            }
        }
        Ok(chunk)
    }

    fn too_big(&self) -> ClientError {
        ClientError::Decode {
            url: self.base.show(&self.url),
            why: format!("the reply is larger than {} MB", MAX_FILE_BODY >> 20),
        }
    }
}

/// The most a JSON reply (catalogue, history, queue…) may hold: a
/// misbehaving or hostile server cannot make the runner buffer without end.
const MAX_JSON_BODY: usize = 256 << 20;
/// The most one downloaded file may hold.
const MAX_FILE_BODY: usize = 1 << 30;
/// The most room made for a body before it arrives.
const PREALLOCATED_MAX: u64 = 4 << 20;

/// Reads a body chunk by chunk, refusing one larger than `cap`; errors
/// name `url` as `base` shows it.
async fn read_body(
    mut response: reqwest::Response,
    base: &ServerUrl,
    url: &reqwest::Url,
    cap: usize,
) -> Result<bytes::Bytes, ClientError> {
    let too_big = || ClientError::Decode {
        url: base.show(url),
        why: match cap >> 20 {
            0 => format!("the reply is larger than {cap} bytes"),
            mb => format!("the reply is larger than {mb} MB"),
        },
    };
    let declared = response.content_length().unwrap_or(0);
    if declared > cap as u64 {
        return Err(too_big());
    }
    // Room for the declared length, up to a few MB, made once: a typical
    // image is not copied as it grows. A server's word is not trusted
    // further (the body still counts against the cap as it arrives).
    let mut body = bytes::BytesMut::with_capacity(declared.min(PREALLOCATED_MAX) as usize);
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|source| ClientError::transport(base.show(url), source))?
    {
        if body.len() + chunk.len() > cap {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

fn status_error(url: String, status: u16, body: &[u8]) -> ClientError {
    let text = String::from_utf8_lossy(body);
    let mut body = super::protocol::one_line(&text);
    if body.len() > 300 {
        let cut = (0..=300)
            .rev()
            .find(|&i| body.is_char_boundary(i))
            .unwrap_or(0);
        body.truncate(cut);
        body.push('…');
    }
    ClientError::Status { url, status, body }
}

/// Percent-encodes a path segment (our prompt ids are URL-safe, but the
/// server's may not be).
fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_and_errors_name_the_line() {
        let h = parse_headers(&["Authorization: Bearer x".into(), "X-A:b".into()]).unwrap();
        assert_eq!(h["authorization"], "Bearer x");
        assert_eq!(h["x-a"], "b");
        assert!(
            parse_headers(&["nocolon".into()])
                .unwrap_err()
                .contains("nocolon")
        );
        // A value is never echoed, not even a bad one; nor shown by Debug.
        let e = parse_headers(&["X-Key: s3cret\u{1}".into()]).unwrap_err();
        assert!(e.contains("X-Key") || e.contains("x-key"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
        let e = parse_headers(&["X Key: s3cret".into()]).unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
        assert!(!format!("{h:?}").contains("Bearer"), "{h:?}");
    }

    /// A loopback `/view` that sends `chunks` pieces of 1 KB, `gap` apart,
    /// then, if `stall`, never ends the body.
    async fn slow_view(chunks: usize, gap: Duration, stall: bool) -> ServerUrl {
        let app = axum::Router::new().route(
            "/view",
            axum::routing::get(move || async move {
                let body = futures_util::stream::unfold(0, move |i| async move {
                    if i == chunks {
                        if stall {
                            std::future::pending::<()>().await;
                        }
                        return None;
                    }
                    tokio::time::sleep(gap).await;
                    Some((Ok::<_, std::io::Error>(vec![b'v'; 1024]), i + 1))
                });
                axum::body::Body::from_stream(body)
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        ServerUrl::parse(&url).unwrap()
    }

    fn video() -> ImageRef {
        ImageRef {
            filename: "v_00001_.mp4".into(),
            subfolder: String::new(),
            kind: "output".into(),
        }
    }

    #[tokio::test]
    async fn a_long_download_that_keeps_flowing_is_not_cut_but_a_stalled_one_is() {
        // A video takes longer to download than the request timeout over a
        // slow link: only silence may end it.
        let timeout = Duration::from_millis(600);
        let url = slow_view(8, Duration::from_millis(200), false).await;
        let http = HttpClient::new(url, HeaderMap::new(), timeout).unwrap();
        let bytes = http.view(&video()).await.unwrap();
        assert_eq!(bytes.len(), 8 * 1024);
        let url = slow_view(2, Duration::from_millis(50), true).await;
        let http = HttpClient::new(url, HeaderMap::new(), timeout).unwrap();
        let started = std::time::Instant::now();
        let err = http.view(&video()).await.unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
        // A server that never answers at all is given up on as well.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = ServerUrl::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let http = HttpClient::new(url, HeaderMap::new(), timeout).unwrap();
        let started = std::time::Instant::now();
        let err = http.view(&video()).await.unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
        drop(listener);
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode("cb-ab12-3"), "cb-ab12-3");
        assert_eq!(encode("a/b c"), "a%2Fb%20c");
    }

    /// The server `url` is a request to (its scheme, host and port).
    fn base_of(url: &reqwest::Url) -> ServerUrl {
        ServerUrl::parse(&url.origin().ascii_serialization()).unwrap()
    }

    /// A server answering `body` (declared or chunked) to any request.
    async fn serving(body: &'static [u8], declare_length: bool) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/x", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf).await;
            let head = if declare_length {
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len())
            } else {
                "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_string()
            };
            let _ = conn.write_all(head.as_bytes()).await;
            let _ = conn.write_all(body).await;
        });
        url
    }

    /// A server answering the raw bytes `reply` to one request, then
    /// closing.
    async fn replying(reply: &'static [u8]) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/view?filename=x.png",
            listener.local_addr().unwrap()
        );
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf).await;
            let _ = conn.write_all(reply).await;
        });
        url
    }

    #[tokio::test]
    async fn a_declared_length_is_not_trusted() {
        // 900 MB declared, 5 bytes sent: an error naming the URL, which a
        // caller may retry; not 900 MB of room.
        let url = replying(b"HTTP/1.1 200 OK\r\nContent-Length: 900000000\r\n\r\nhello").await;
        let response = reqwest::get(&url).await.unwrap();
        let at = response.url().clone();
        let error = read_body(response, &base_of(&at), &at, MAX_FILE_BODY)
            .await
            .unwrap_err();
        assert!(error.is_transient(), "{error}");
        assert!(error.to_string().contains(&url), "{error}");
        // More sent than declared: only the declared bytes are the body.
        let url = replying(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello, and more").await;
        let response = reqwest::get(&url).await.unwrap();
        let at = response.url().clone();
        assert_eq!(
            &read_body(response, &base_of(&at), &at, 1024).await.unwrap()[..],
            b"hello"
        );
    }

    #[tokio::test]
    async fn bodies_larger_than_the_cap_are_refused() {
        for declared in [true, false] {
            let url = serving(&[b'x'; 4096], declared).await;
            let response = reqwest::get(&url).await.unwrap();
            let at = response.url().clone();
            let error = read_body(response, &base_of(&at), &at, 1024)
                .await
                .unwrap_err();
            assert!(error.to_string().contains("larger than"), "{error}");
        }
        let url = serving(b"small", true).await;
        let response = reqwest::get(&url).await.unwrap();
        let at = response.url().clone();
        assert_eq!(
            &read_body(response, &base_of(&at), &at, 1024).await.unwrap()[..],
            b"small"
        );
    }
}
