//! The ComfyUI client: HTTP requests with reqwest (`http`), one websocket per
//! server (`ws`), the wire types (`protocol`) and what a node's output
//! lists (`outputs`). Knows nothing of jobs,
//! manifests or CSV files. Owns the credentials a server URL carries: sent
//! with every request, shown only redacted ([`ServerUrl`]).

pub mod http;
pub mod outputs;
pub mod protocol;
pub mod ws;

use std::fmt;

use reqwest::header::HeaderValue;

use crate::text::redact_url;

/// A server's base URL (`http://host:port`, or `https://…` behind a proxy,
/// possibly with a path prefix); the websocket URL follows as `ws`/`wss`.
///
/// What a proxy in front may need goes with every request, the websocket
/// handshake included, yet is never shown: user info (`http://user:pass@…`)
/// is sent as a basic-auth header built once, not in the URLs the HTTP and
/// websocket crates see (and log); the query (`?token=…`) is added to each
/// request URL. The only form shown (`Display`, `Debug`, and
/// [`ServerUrl::show`] for request URLs) is redacted:
/// `http://user:***@host/?token=***`.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerUrl {
    /// Scheme, host, path and query: no user info.
    url: reqwest::Url,
    /// `Authorization: Basic …` from the user info, marked sensitive.
    auth: Option<HeaderValue>,
    /// The URL as shown.
    shown: String,
}

impl ServerUrl {
    /// Parses and checks a user-supplied URL.
    pub fn parse(text: &str) -> Result<ServerUrl, ClientError> {
        let bad = |why: &str| ClientError::BadUrl {
            url: redact_url(text.trim(), &|_| true),
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
        url.set_fragment(None);
        if url.query() == Some("") {
            url.set_query(None);
        }
        let shown = redact_url(url.as_str().trim_end_matches('/'), &|_| true);
        let auth = if url.username().is_empty() && url.password().is_none() {
            None
        } else {
            let user = decode(url.username());
            let password = url.password().map(decode).unwrap_or_default();
            let _ = url.set_username("");
            let _ = url.set_password(None);
            Some(basic_auth(&user, &password))
        };
        Ok(ServerUrl { url, auth, shown })
    }

    /// An HTTP endpoint below the base, e.g. `prompt` or `history/ID`,
    /// with the base's query. Never show it as is: see [`ServerUrl::show`].
    pub fn endpoint(&self, path: &str) -> reqwest::Url {
        let mut url = self
            .url
            .join(path.trim_start_matches('/'))
            .expect("a relative path always joins onto a base URL");
        if let Some(query) = self.url.query() {
            let joined = match url.query() {
                Some(own) => format!("{query}&{own}"),
                None => query.to_string(),
            };
            url.set_query(Some(&joined));
        }
        url
    }

    /// [`ServerUrl::endpoint`] as shown.
    pub fn shown_endpoint(&self, path: &str) -> String {
        self.show(&self.endpoint(path))
    }

    /// The websocket URL for `clientId`, with the base's query. Never show
    /// it as is: see [`ServerUrl::show`].
    pub fn websocket(&self, client_id: &str) -> reqwest::Url {
        let mut url = self.endpoint("ws");
        let scheme = if self.url.scheme() == "https" {
            "wss"
        } else {
            "ws"
        };
        url.set_scheme(scheme)
            .expect("ws and wss are valid schemes for a URL with a host");
        url.query_pairs_mut().append_pair("clientId", client_id);
        url
    }

    /// The `Authorization` header the URL's user info makes, if it has any.
    pub fn authorization(&self) -> Option<&HeaderValue> {
        self.auth.as_ref()
    }

    /// A URL of a request to this server (an endpoint, the websocket) as it
    /// may be shown: the values of the base's query pairs redacted.
    pub fn show(&self, url: &reqwest::Url) -> String {
        let query = self.url.query().unwrap_or_default();
        let own: Vec<&str> = query.split('&').map(pair_name).collect();
        redact_url(url.as_str(), &|name| own.contains(&name))
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ServerUrl").field(&self.shown).finish()
    }
}

/// The name of a query pair (`name=value`, or a bare `name`).
fn pair_name(pair: &str) -> &str {
    pair.split_once('=').map_or(pair, |(name, _)| name)
}

/// Percent-decodes URL user info (`p%40ss` is `p@ss`).
fn decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// `Basic base64(user:password)`, marked sensitive (never in a `Debug`).
fn basic_auth(user: &str, password: &str) -> HeaderValue {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut value =
        HeaderValue::from_str(&format!("Basic {encoded}")).expect("base64 is a valid header value");
    value.set_sensitive(true);
    value
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
    /// problems, timeouts and 5xx answers, but not a 4xx, a bad body or a
    /// redirect (see [`ClientError::is_redirect`]).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Transport { .. } => !self.is_redirect(),
            ClientError::WebSocket { .. } => true,
            ClientError::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }

    /// Whether the server answered with a redirect, which is never
    /// followed: see [`http::HttpPool::new`].
    pub fn is_redirect(&self) -> bool {
        matches!(self, ClientError::Transport { source, .. } if source.is_redirect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_url_follows_the_scheme_and_path() {
        let u = ServerUrl::parse("http://127.0.0.1:8188").unwrap();
        assert_eq!(
            u.websocket("abc").as_str(),
            "ws://127.0.0.1:8188/ws?clientId=abc"
        );
        assert_eq!(
            u.endpoint("prompt").as_str(),
            "http://127.0.0.1:8188/prompt"
        );
        let u = ServerUrl::parse("https://gpu.example/comfy").unwrap();
        assert_eq!(
            u.websocket("x").as_str(),
            "wss://gpu.example/comfy/ws?clientId=x"
        );
        assert_eq!(
            u.endpoint("/view").as_str(),
            "https://gpu.example/comfy/view"
        );
        assert_eq!(u.to_string(), "https://gpu.example/comfy");
        assert!(ServerUrl::parse("ftp://x").is_err());
        assert!(ServerUrl::parse("not a url").is_err());
    }

    #[test]
    fn credentials_go_with_every_request_and_are_shown_redacted() {
        let u =
            ServerUrl::parse("https://me:p%40ss@gpu.example/comfy?token=t0p&region=eu").unwrap();
        assert_eq!(
            u.to_string(),
            "https://me:***@gpu.example/comfy/?token=***&region=***"
        );
        assert_eq!(format!("{u:?}"), format!("ServerUrl({:?})", u.to_string()));
        // The query goes with every request; the user info never does.
        let view = u.endpoint("view");
        assert_eq!(
            view.as_str(),
            "https://gpu.example/comfy/view?token=t0p&region=eu"
        );
        let ws = u.websocket("c1");
        assert_eq!(
            ws.as_str(),
            "wss://gpu.example/comfy/ws?token=t0p&region=eu&clientId=c1"
        );
        // It is sent as basic auth, decoded (`me:p@ss`), never in a Debug.
        let auth = u.authorization().unwrap();
        assert_eq!(auth.to_str().unwrap(), "Basic bWU6cEBzcw==");
        assert!(auth.is_sensitive());
        // A request URL is shown with the server's own values redacted,
        // the client's kept.
        let mut request = u.endpoint("view");
        request.query_pairs_mut().append_pair("filename", "a.png");
        assert_eq!(
            u.show(&request),
            "https://gpu.example/comfy/view?token=***&region=***&filename=a.png"
        );
        assert_eq!(
            u.shown_endpoint("history"),
            "https://gpu.example/comfy/history?token=***&region=***"
        );
        // A lone user name is a credential too; a URL without any is as given.
        let u = ServerUrl::parse("http://ghp_t0ken@host:8188").unwrap();
        assert_eq!(u.to_string(), "http://***@host:8188");
        assert!(u.authorization().is_some());
        let u = ServerUrl::parse("http://127.0.0.1:8188/").unwrap();
        assert_eq!(u.to_string(), "http://127.0.0.1:8188");
        assert!(u.authorization().is_none());
    }

    #[test]
    fn a_url_that_does_not_parse_is_shown_redacted_too() {
        for text in [
            "http://me:s3cret@host:99999/?token=t0p",
            "http://me:s3cret@/?token=t0p",
            "ftp://me:s3cret@host/?token=t0p",
            "http://me:s3cret?t0p@host:1/?token=t0p",
            "http://me:s3?cret@host:1/?token=t0p",
        ] {
            let e = ServerUrl::parse(text).unwrap_err().to_string();
            assert!(e.contains("me:***@"), "{e}");
            assert!(e.contains("token=***"), "{e}");
            assert!(!e.contains("s3cret") && !e.contains("t0p"), "{e}");
        }
    }
}
