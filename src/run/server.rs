//! One server as the scheduler sees it: its HTTP client, its websocket
//! (owned by a supervisor task that reconnects), its message router and its
//! cache of uploaded images.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use tokio::sync::{OnceCell, mpsc, watch};

use super::Msg;
use super::retry::Backoff;
use crate::comfy::ClientError;
use crate::comfy::http::HttpClient;
use crate::comfy::protocol::{QueueState, Uploaded};
use crate::comfy::ws::{self, Router, ServerEvent, Socket};
use crate::ids::ServerId;
use crate::sink::InputFile;

/// The longest the first websocket handshake (and greeting) may take.
const FIRST_HANDSHAKE: Duration = Duration::from_secs(30);

/// A connected server.
pub(crate) struct Server {
    pub id: ServerId,
    pub http: HttpClient,
    pub client_id: String,
    pub router: Router,
    /// Whether the supervisor counts the server as lost: attempts on it are
    /// abandoned (even mid-request) and their jobs move on.
    lost: watch::Sender<bool>,
    headers: HeaderMap,
    uploads: Mutex<HashMap<String, Arc<OnceCell<Uploaded>>>>,
    /// The newest `/queue` read and when it was started: every job on the
    /// server shares it (one poll per server, not per job).
    queue: tokio::sync::Mutex<Option<(Instant, Arc<QueueState>)>>,
}

impl Server {
    /// Connects the websocket (before any prompt is posted, so no event is
    /// missed) and returns the server with its first socket.
    pub async fn connect(
        id: ServerId,
        http: HttpClient,
        headers: HeaderMap,
        progress: bool,
    ) -> Result<(Arc<Server>, Socket), ClientError> {
        let client_id = new_client_id();
        let socket = ws::connect(http.base(), &client_id, &headers, FIRST_HANDSHAKE).await?;
        let server = Arc::new(Server {
            id,
            http,
            client_id,
            router: Router::new(progress),
            lost: watch::Sender::new(false),
            headers,
            uploads: Mutex::new(HashMap::new()),
            queue: tokio::sync::Mutex::new(None),
        });
        Ok((server, socket))
    }

    /// Whether the supervisor gave the server up (for now).
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Resolves when the supervisor counts the server as lost.
    pub async fn wait_lost(&self) {
        let mut rx = self.lost.subscribe();
        let _ = rx.wait_for(|lost| *lost).await;
    }

    /// The server's URL as logged.
    pub fn url(&self) -> String {
        self.http.base().to_string()
    }

    /// The server's queue as read by a request started at or after `since`:
    /// concurrent callers share one request, and a read that started late
    /// enough is reused, so many jobs polling cost one `/queue` per round.
    pub async fn queue_since(&self, since: Instant) -> Result<Arc<QueueState>, ClientError> {
        let mut cached = self.queue.lock().await;
        if let Some((at, queue)) = cached.as_ref()
            && *at >= since
        {
            return Ok(queue.clone());
        }
        let at = Instant::now();
        let queue = Arc::new(self.http.queue().await?);
        *cached = Some((at, queue.clone()));
        Ok(queue)
    }

    /// The newest queue read, if it started at most `max_age` ago: enough
    /// to see that a prompt is still there (never that it is gone).
    pub async fn queue_recent(&self, max_age: Duration) -> Option<Arc<QueueState>> {
        let cached = self.queue.lock().await;
        cached
            .as_ref()
            .filter(|(at, _)| at.elapsed() <= max_age)
            .map(|(_, queue)| queue.clone())
    }

    /// Uploads an input once per distinct content and returns the server's
    /// name for it; concurrent jobs wait for the same upload. It is sent
    /// under its content name (`<sha256 prefix>.<ext>`, as kept in the
    /// output's `inputs/`), so the server dedupes it and a rerun finds it.
    pub async fn upload(&self, input: &InputFile) -> Result<Uploaded, ClientError> {
        let cell = {
            let mut map = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(input.name.clone()).or_default().clone()
        };
        cell.get_or_try_init(|| async {
            let mut backoff = Backoff::default();
            loop {
                match self
                    .http
                    .upload_image(&input.name, &input.path, input.len)
                    .await
                {
                    Ok(u) => return Ok(u),
                    Err(e) if e.is_transient() => {
                        match backoff.next().filter(|_| !self.is_lost()) {
                            Some(delay) => tokio::time::sleep(delay).await,
                            None => return Err(e),
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
        })
        .await
        .cloned()
    }

    /// Owns the websocket for the whole run: pumps it, and when it drops,
    /// reconnects with backoff (the old socket fully closed first), telling
    /// every in-flight prompt to reconcile. Reports the server lost after
    /// `lost_after` without a socket, and recovered when one is back.
    pub async fn supervise(
        self: Arc<Self>,
        mut socket: Socket,
        lost_after: Duration,
        events: mpsc::UnboundedSender<Msg>,
    ) {
        loop {
            // A silent socket is given up well within `lost_after`, so a
            // frozen server or dead path is noticed and counted lost in time.
            let silence =
                (lost_after / 2).clamp(Duration::from_millis(300), Duration::from_secs(15));
            let why = socket.pump(&self.router, silence).await;
            tracing::info!("{}: websocket lost: {why}", self.url());
            self.router.broadcast(ServerEvent::Disconnected);
            let since = Instant::now();
            let mut lost = false;
            let mut backoff = Backoff::unbounded();
            socket = loop {
                let handshake = lost_after.clamp(Duration::from_secs(1), Duration::from_secs(10));
                match ws::connect(self.http.base(), &self.client_id, &self.headers, handshake).await
                {
                    Ok(s) => break s,
                    Err(e) => {
                        if !lost && since.elapsed() >= lost_after {
                            lost = true;
                            self.lost.send_replace(true);
                            self.router.broadcast(ServerEvent::Lost);
                            let _ = events.send(Msg::ServerLost {
                                server: self.id,
                                cause: e.to_string(),
                            });
                        }
                        tokio::time::sleep(backoff.next().unwrap_or(Duration::from_secs(5))).await;
                    }
                }
            };
            tracing::info!("{}: websocket reconnected", self.url());
            if lost {
                self.lost.send_replace(false);
                let _ = events.send(Msg::ServerRecovered { server: self.id });
            }
            self.router.broadcast(ServerEvent::Reconnected);
        }
    }
}

/// A fresh client id, 32 hex characters like the server's own.
fn new_client_id() -> String {
    let bytes: [u8; 16] = rand::random();
    hex::encode(bytes)
}
