//! The HTTP half of the client: one keep-alive reqwest client per server,
//! a method per endpoint the runner uses. Every call is a single attempt;
//! retry policy belongs to the caller (`run`).

use std::path::Path;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
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
#[derive(Debug, Clone)]
pub struct HttpClient {
    base: ServerUrl,
    client: reqwest::Client,
}

/// Parses `Name: value` header lines given with `--header`.
pub fn parse_headers(lines: &[String]) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("header '{line}' is not of the form 'Name: value'"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|e| format!("header name in '{line}': {e}"))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|e| format!("header value in '{line}': {e}"))?;
        headers.append(name, value);
    }
    Ok(headers)
}

impl HttpClient {
    /// A client for `base`, sending `headers` with every request (and the
    /// websocket handshake, see `ws`).
    pub fn new(
        base: ServerUrl,
        headers: HeaderMap,
        timeout: Duration,
    ) -> Result<HttpClient, ClientError> {
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(Duration::from_secs(10))
            .timeout(timeout)
            .pool_max_idle_per_host(16)
            .tcp_nodelay(true)
            .build()
            .map_err(|source| ClientError::Transport {
                url: base.to_string(),
                source,
            })?;
        Ok(HttpClient { base, client })
    }

    /// The server's base URL.
    pub fn base(&self) -> &ServerUrl {
        &self.base
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let request = request.build().map_err(|source| ClientError::Transport {
            url: self.base.to_string(),
            source,
        })?;
        let url = request.url().to_string();
        self.client
            .execute(request)
            .await
            .map_err(|source| ClientError::Transport { url, source })
    }

    /// The body of a successful response; any other status is an error
    /// carrying the start of the body.
    async fn ok_body(
        &self,
        response: reqwest::Response,
    ) -> Result<(String, bytes::Bytes), ClientError> {
        let url = response.url().to_string();
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|source| ClientError::Transport {
                url: url.clone(),
                source,
            })?;
        if !status.is_success() {
            return Err(status_error(url, status.as_u16(), &bytes));
        }
        Ok((url, bytes))
    }

    async fn json<T: DeserializeOwned>(
        &self,
        response: reqwest::Response,
    ) -> Result<T, ClientError> {
        let (url, bytes) = self.ok_body(response).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            url,
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

    /// `GET /object_info`: the node catalogue, for preflight validation.
    pub async fn object_info(&self) -> Result<Value, ClientError> {
        self.get_json("object_info").await
    }

    /// `GET /object_info/{class}`: one class's entry (`{class: entry}`, or
    /// `{}` when the server does not know it).
    pub async fn object_info_class(&self, class: &str) -> Result<Value, ClientError> {
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
            .send(self.client.post(self.base.endpoint("prompt")).json(&body))
            .await?;
        let url = response.url().to_string();
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|source| ClientError::Transport {
                url: url.clone(),
                source,
            })?;
        let decode = |why: serde_json::Error| ClientError::Decode {
            url: url.clone(),
            why: why.to_string(),
        };
        match status {
            200 => Ok(Submission::Accepted(
                serde_json::from_slice(&bytes).map_err(decode)?,
            )),
            400 => Ok(Submission::Rejected(
                serde_json::from_slice(&bytes).map_err(decode)?,
            )),
            _ => Err(status_error(url, status, &bytes)),
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
                        url: self.base.endpoint("history").to_string(),
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
        self.ok_body(response).await.map(|_| ())
    }

    /// `GET /view`: the file's bytes, exactly as the server sends them.
    pub async fn view(&self, image: &ImageRef) -> Result<bytes::Bytes, ClientError> {
        let request = self.client.get(self.base.endpoint("view")).query(&[
            ("filename", image.filename.as_str()),
            ("subfolder", image.subfolder.as_str()),
            ("type", image.kind.as_str()),
        ]);
        let response = self.send(request).await?;
        self.ok_body(response).await.map(|(_, bytes)| bytes)
    }

    /// `POST /upload/image`: uploads a local file to the input folder.
    pub async fn upload_image(&self, path: &Path, bytes: Vec<u8>) -> Result<Uploaded, ClientError> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "image.png".to_string());
        let part = reqwest::multipart::Part::bytes(bytes).file_name(name);
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
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode("cb-ab12-3"), "cb-ab12-3");
        assert_eq!(encode("a/b c"), "a%2Fb%20c");
    }
}
