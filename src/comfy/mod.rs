//! The ComfyUI client: HTTP requests with reqwest (`http`), one websocket per
//! server (`ws`), the wire types (`protocol`) and what a node's output
//! lists (`outputs`). Knows nothing of jobs,
//! manifests or CSV files.

pub mod http;
pub mod outputs;
pub mod protocol;
pub mod ws;

use std::fmt;

/// A server's base URL (`http://host:port`, or `https://…` behind a proxy,
/// possibly with a path prefix); the websocket URL follows as `ws`/`wss`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl(reqwest::Url);

impl ServerUrl {
    /// Parses and checks a user-supplied URL.
    pub fn parse(text: &str) -> Result<ServerUrl, ClientError> {
        let bad = |why: &str| ClientError::BadUrl {
            url: text.to_string(),
            why: why.to_string(),
        };
        let mut url = reqwest::Url::parse(text.trim()).map_err(|e| bad(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("the scheme must be http or https"));
        }
        if url.host_str().is_none() {
            return Err(bad("it has no host"));
        }
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        url.set_query(None);
        url.set_fragment(None);
        Ok(ServerUrl(url))
    }

    /// An HTTP endpoint below the base, e.g. `prompt` or `history/ID`.
    pub fn endpoint(&self, path: &str) -> reqwest::Url {
        self.0
            .join(path.trim_start_matches('/'))
            .expect("a relative path always joins onto a base URL")
    }

    /// The websocket URL for `clientId`.
    pub fn websocket(&self, client_id: &str) -> String {
        let mut url = self.endpoint("ws");
        let scheme = if self.0.scheme() == "https" {
            "wss"
        } else {
            "ws"
        };
        url.set_scheme(scheme)
            .expect("ws and wss are valid schemes for a URL with a host");
        url.query_pairs_mut().append_pair("clientId", client_id);
        url.to_string()
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str().trim_end_matches('/'))
    }
}

/// What can go wrong talking to a server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL given is unusable.
    #[error("invalid server URL '{url}': {why}")]
    BadUrl {
        /// As given.
        url: String,
        /// Why.
        why: String,
    },
    /// The request did not get a response (refused, reset, timed out).
    #[error("{url}: {source}")]
    Transport {
        /// The request.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an unexpected status.
    #[error("{url}: HTTP {status}: {body}")]
    Status {
        /// The request.
        url: String,
        /// The status code.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The body was not what the API promises.
    #[error("{url}: unexpected response: {why}")]
    Decode {
        /// The request.
        url: String,
        /// Why.
        why: String,
    },
    /// The websocket failed.
    #[error("websocket {url}: {why}")]
    WebSocket {
        /// The websocket URL.
        url: String,
        /// Why.
        why: String,
    },
    /// A local file could not be read.
    #[error("{path}: {source}")]
    LocalFile {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl ClientError {
    /// A failed request. reqwest names the URL in its own message too; it
    /// is dropped there so a logged line says it once, followed by the
    /// causes (`…: error sending request: …: connection reset by peer`).
    pub(crate) fn transport(url: String, source: reqwest::Error) -> ClientError {
        ClientError::Transport {
            url,
            source: source.without_url(),
        }
    }

    /// Whether retrying the same request later may succeed: connection
    /// problems, timeouts and 5xx answers, but not a 4xx or a bad body.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Transport { .. } | ClientError::WebSocket { .. } => true,
            ClientError::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_url_follows_the_scheme_and_path() {
        let u = ServerUrl::parse("http://127.0.0.1:8188").unwrap();
        assert_eq!(u.websocket("abc"), "ws://127.0.0.1:8188/ws?clientId=abc");
        assert_eq!(
            u.endpoint("prompt").as_str(),
            "http://127.0.0.1:8188/prompt"
        );
        let u = ServerUrl::parse("https://gpu.example/comfy").unwrap();
        assert_eq!(u.websocket("x"), "wss://gpu.example/comfy/ws?clientId=x");
        assert_eq!(
            u.endpoint("/view").as_str(),
            "https://gpu.example/comfy/view"
        );
        assert_eq!(u.to_string(), "https://gpu.example/comfy");
        assert!(ServerUrl::parse("ftp://x").is_err());
        assert!(ServerUrl::parse("not a url").is_err());
    }
}
