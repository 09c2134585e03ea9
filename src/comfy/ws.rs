//! The websocket half of the client: one socket per server, one clientId,
//! and a [`Router`] that hands each message to the job whose prompt it
//! belongs to. Knows nothing of jobs: routes are keyed by prompt id.

use std::collections::HashMap;
use std::sync::Mutex;

use futures_util::{SinkExt, StreamExt};
use reqwest::header::HeaderMap;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async_with_config};

use super::protocol::{BinaryFrame, WsMessage};
use super::{ClientError, ServerUrl};

/// What a prompt's route receives.
#[derive(Debug, Clone)]
pub enum ServerEvent {
    /// A JSON message about this prompt.
    Message(WsMessage),
    /// An image sent over the socket (SaveImageWebsocket output or preview).
    Image {
        /// The node that sent it, when the frame says (type 4).
        node: Option<String>,
        /// File extension from the frame's format.
        ext: &'static str,
        /// The bytes as received.
        bytes: bytes::Bytes,
    },
    /// The socket was lost; messages may have been missed.
    Disconnected,
    /// A new socket is up: the prompt's state must be reconciled over HTTP,
    /// since whatever happened meanwhile was not replayed.
    Reconnected,
    /// The server stopped answering for too long: give the prompt up here.
    Lost,
}

#[derive(Default)]
struct RouterState {
    routes: HashMap<String, mpsc::UnboundedSender<ServerEvent>>,
    /// The prompt the server is executing, for frames and reconnect
    /// `executing` messages that carry no prompt id.
    current: Option<String>,
    /// The node it is executing: a type-1 frame (a server that ignored our
    /// `supports_preview_metadata`, or read it late) names no node, but
    /// arrives while its node runs.
    current_node: Option<String>,
    /// Between a `Disconnected` broadcast and the `Reconnected` one: a
    /// route registered then has missed what was sent meanwhile.
    down: bool,
}

/// Delivers messages to the prompt they concern. A route is registered
/// before the prompt is posted, since `execution_start` can overtake the
/// HTTP reply.
pub struct Router {
    state: Mutex<RouterState>,
    /// Message types dropped unread: the queue's `status` concerns no
    /// prompt (the greeting is read before routing starts), and sampler
    /// `progress` when nobody shows it.
    skip: &'static [&'static str],
}

impl Default for Router {
    fn default() -> Router {
        Router::new(true)
    }
}

impl Router {
    /// A router; without `progress`, `progress` messages are dropped
    /// unread: a sampler sends one per step, most of a job's messages, and
    /// parsing and routing each cost about 10 µs for a display nobody sees.
    pub fn new(progress: bool) -> Router {
        Router {
            state: Mutex::default(),
            skip: if progress {
                &["status"]
            } else {
                &["status", "progress"]
            },
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RouterState> {
        // A panic while holding this short lock leaves the map consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts routing `prompt_id`'s messages to the returned receiver.
    pub fn register(&self, prompt_id: &str) -> mpsc::UnboundedReceiver<ServerEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut state = self.lock();
        if state.down {
            // Its first messages may go to no socket: it hears of the
            // disconnect as if it had been registered before it.
            let _ = tx.send(ServerEvent::Disconnected);
        }
        state.routes.insert(prompt_id.to_string(), tx);
        rx
    }

    /// Stops routing `prompt_id`.
    pub fn unregister(&self, prompt_id: &str) {
        self.lock().routes.remove(prompt_id);
    }

    /// Sends `event` to every registered prompt.
    pub fn broadcast(&self, event: ServerEvent) {
        let mut state = self.lock();
        match event {
            ServerEvent::Disconnected => {
                state.current = None;
                state.current_node = None;
                state.down = true;
            }
            ServerEvent::Reconnected => state.down = false,
            _ => {}
        }
        for tx in state.routes.values() {
            let _ = tx.send(event.clone());
        }
    }

    fn send_to(state: &RouterState, prompt_id: &str, event: ServerEvent) {
        if let Some(tx) = state.routes.get(prompt_id) {
            let _ = tx.send(event);
        }
    }

    /// Routes one text frame.
    pub fn deliver_text(&self, text: &str) {
        match WsMessage::parse_skipping(text, self.skip) {
            Ok(WsMessage::Other) => {}
            Ok(message) => self.deliver(message),
            Err(e) => tracing::debug!("ignoring websocket message: {e}: {text}"),
        }
    }

    /// Routes one JSON message.
    pub fn deliver(&self, message: WsMessage) {
        let mut state = self.lock();
        match &message {
            WsMessage::ExecutionStart { prompt_id } => {
                state.current = Some(prompt_id.clone());
                state.current_node = None;
            }
            WsMessage::Executing {
                node: None,
                prompt_id: Some(p),
            } if state.current.as_deref() == Some(p.as_str()) => {
                state.current = None;
                state.current_node = None;
            }
            WsMessage::Executing {
                node: Some(node),
                prompt_id,
            } if prompt_id.is_none() || prompt_id.as_deref() == state.current.as_deref() => {
                state.current_node = Some(node.clone());
            }
            _ => {}
        }
        let route = match message.prompt_id() {
            Some(p) => state.routes.get(p),
            // The reconnect replay `executing {node}` has no prompt id: it is
            // about whatever runs now (only ours reach this socket).
            None if matches!(message, WsMessage::Executing { node: Some(_), .. }) => {
                state.current.as_deref().and_then(|p| state.routes.get(p))
            }
            None => None,
        };
        if let Some(tx) = route {
            let _ = tx.send(ServerEvent::Message(message));
        }
    }

    /// Routes one binary frame.
    pub fn deliver_frame(&self, frame: BinaryFrame) {
        let state = self.lock();
        match frame {
            BinaryFrame::ImageWithMetadata {
                node_id,
                prompt_id,
                ext,
                bytes,
            } => {
                let target = prompt_id.or_else(|| state.current.clone());
                if let Some(target) = target {
                    let event = ServerEvent::Image {
                        node: Some(node_id),
                        ext,
                        bytes,
                    };
                    Self::send_to(&state, &target, event);
                }
            }
            BinaryFrame::Image { ext, bytes } => {
                if let Some(target) = state.current.clone() {
                    let event = ServerEvent::Image {
                        node: state.current_node.clone(),
                        ext,
                        bytes,
                    };
                    Self::send_to(&state, &target, event);
                }
            }
            BinaryFrame::Other => {}
        }
    }
}

/// An open websocket, handshake and greeting done.
pub struct Socket {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// As shown (see `ServerUrl::show`).
    url: String,
}

/// Opens `/ws?clientId=…`, announces `supports_preview_metadata` (so image
/// frames carry their prompt id) and waits for the greeting `status`.
pub async fn connect(
    base: &ServerUrl,
    client_id: &str,
    headers: &HeaderMap,
    handshake: std::time::Duration,
) -> Result<Socket, ClientError> {
    let target = base.websocket(client_id);
    let url = base.show(&target);
    let err = |why: String| ClientError::WebSocket {
        url: url.clone(),
        why,
    };
    let mut request = target
        .as_str()
        .into_client_request()
        .map_err(|e| err(e.to_string()))?;
    for (name, value) in headers {
        request.headers_mut().append(name, value.clone());
    }
    // The URL's user info, as for every HTTP request (it replaces an
    // `Authorization` given with `--header` for this server).
    if let Some(auth) = base.authorization() {
        request
            .headers_mut()
            .insert(reqwest::header::AUTHORIZATION, auth.clone());
    }
    // A server that accepts connections but never answers (frozen, or a
    // network path gone dead) must not hold the caller forever.
    // Each read zeroes a buffer of this size first: tungstenite's 128 KiB
    // default cost more than parsing the small progress messages that make
    // most of the traffic (16 KiB still cost 2% of the runner's CPU with 32
    // servers, whose reads took 0.8 KB on average, 5 KB at most). Larger
    // frames (images) just take more reads.
    let config = WebSocketConfig::default().read_buffer_size(8 * 1024);
    let connect = connect_async_with_config(request, Some(config), false);
    let (mut stream, _) = tokio::time::timeout(handshake, connect)
        .await
        .map_err(|_| {
            err(format!(
                "no handshake within {:.1}s",
                handshake.as_secs_f64()
            ))
        })?
        .map_err(|e| err(e.to_string()))?;
    let flags = r#"{"type":"feature_flags","data":{"supports_preview_metadata":true}}"#;
    stream
        .send(Message::text(flags))
        .await
        .map_err(|e| err(e.to_string()))?;
    // The server registers the socket only once its greeting `status` is
    // out; a prompt posted earlier could lose its messages.
    let greeting = async {
        while let Some(message) = stream.next().await {
            match message.map_err(|e| err(e.to_string()))? {
                Message::Text(text) => {
                    if let Ok(WsMessage::Status { .. }) = WsMessage::parse(text.as_str()) {
                        return Ok(());
                    }
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
        Err(err("closed before its greeting".into()))
    };
    tokio::time::timeout(handshake, greeting)
        .await
        .map_err(|_| {
            err(format!(
                "no greeting within {:.1}s",
                handshake.as_secs_f64()
            ))
        })??;
    Ok(Socket { stream, url })
}

impl Socket {
    /// Reads until the socket closes or fails, routing every message.
    /// The server sets no heartbeat, so the socket pings it: after
    /// `silence` without any frame (a pong included) the server counts as
    /// gone, a dead network path included. Returns why it ended.
    pub async fn pump(mut self, router: &Router, silence: std::time::Duration) -> ClientError {
        let mut ping = tokio::time::interval(silence / 3);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_seen = tokio::time::Instant::now();
        let mut last_tick = last_seen;
        loop {
            let next = tokio::select! {
                next = self.stream.next() => next,
                _ = ping.tick() => {
                    // One runtime thread: the runner itself may have stalled
                    // (a slow sync) past the silence, the frames that came
                    // meanwhile not yet read. A tick that late measures the
                    // runner, not the server: the silence starts again.
                    let now = tokio::time::Instant::now();
                    if now - last_tick >= silence {
                        last_seen = now;
                    }
                    last_tick = now;
                    let mut dead = last_seen.elapsed() >= silence;
                    if !dead {
                        // A failed send shows up as a read error next; one that
                        // cannot even be written means a dead path.
                        let send = self.stream.send(Message::Ping(Default::default()));
                        dead = tokio::time::timeout(silence, send).await.is_err();
                    }
                    if !dead {
                        continue;
                    }
                    Some(Err(tokio_tungstenite::tungstenite::Error::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no answer to pings for {:.1}s", silence.as_secs_f64()),
                    ))))
                }
            };
            last_seen = tokio::time::Instant::now();
            let why = match next {
                Some(Ok(Message::Text(text))) => {
                    router.deliver_text(text.as_str());
                    continue;
                }
                Some(Ok(Message::Binary(data))) => {
                    router.deliver_frame(BinaryFrame::parse(data));
                    continue;
                }
                Some(Ok(Message::Close(frame))) => format!("closed by the server ({frame:?})"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => e.to_string(),
                None => "connection ended".to_string(),
            };
            // Close fully, handshake and all, so the server's handler for
            // this socket has ended before a reconnect with the same clientId
            // (whose registration that handler would otherwise remove:
            // protocol.md §1.1). Bounded, for a server that vanished.
            let close = async {
                let _ = self.stream.close(None).await;
                while let Some(Ok(_)) = self.stream.next().await {}
            };
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), close).await;
            return ClientError::WebSocket { url: self.url, why };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn routes_by_prompt_id_and_attributes_frames_to_the_running_prompt() {
        let router = Router::default();
        let mut a = router.register("a");
        let mut b = router.register("b");
        router.deliver(WsMessage::ExecutionStart {
            prompt_id: "b".into(),
        });
        router.deliver(WsMessage::Executing {
            node: Some("3".into()),
            prompt_id: None,
        });
        router.deliver_frame(BinaryFrame::Image {
            ext: "png",
            bytes: bytes::Bytes::from_static(b"x"),
        });
        router.deliver(WsMessage::Executing {
            node: None,
            prompt_id: Some("b".into()),
        });
        router.deliver_frame(BinaryFrame::Image {
            ext: "png",
            bytes: bytes::Bytes::from_static(b"lost"),
        });
        assert!(a.try_recv().is_err());
        let got: Vec<_> = std::iter::from_fn(|| b.try_recv().ok()).collect();
        assert_eq!(got.len(), 4);
        assert!(
            matches!(&got[1], ServerEvent::Message(WsMessage::Executing { node: Some(n), .. }) if n == "3")
        );
        assert!(
            matches!(&got[2], ServerEvent::Image { bytes, node: Some(n), .. } if &bytes[..] == b"x" && n == "3")
        );
        router.unregister("b");
        router.broadcast(ServerEvent::Reconnected);
        assert!(matches!(a.try_recv(), Ok(ServerEvent::Reconnected)));
    }

    /// A prompt posted while the socket is down may have its first
    /// messages (and websocket images) sent to nobody: its route hears of
    /// the disconnect like those registered before it, or it would take
    /// the reconnect for a clean start and log `ok` without the images.
    #[test]
    fn a_route_registered_while_the_socket_is_down_hears_of_it() {
        let router = Router::default();
        let mut before = router.register("a");
        router.broadcast(ServerEvent::Disconnected);
        let mut during = router.register("b");
        router.broadcast(ServerEvent::Reconnected);
        let mut after = router.register("c");
        for rx in [&mut before, &mut during] {
            assert!(matches!(rx.try_recv(), Ok(ServerEvent::Disconnected)));
            assert!(matches!(rx.try_recv(), Ok(ServerEvent::Reconnected)));
            assert!(rx.try_recv().is_err());
        }
        assert!(after.try_recv().is_err(), "nothing was missed");
    }

    #[test]
    fn progress_is_dropped_unread_when_nobody_shows_it() {
        let progress = r#"{"type": "progress", "data": {"value": 3, "max": 20, "prompt_id": "a", "node": "3"}}"#;
        let end = r#"{"type": "execution_success", "data": {"prompt_id": "a", "timestamp": 1}}"#;
        for (shown, expected) in [(true, 2), (false, 1)] {
            let router = Router::new(shown);
            let mut a = router.register("a");
            router.deliver_text(progress);
            router.deliver_text(end);
            let got: Vec<_> = std::iter::from_fn(|| a.try_recv().ok()).collect();
            assert_eq!(got.len(), expected, "shown: {shown}: {got:?}");
            assert!(matches!(
                got.last(),
                Some(ServerEvent::Message(WsMessage::ExecutionSuccess { .. }))
            ));
        }
    }

    /// Accepts one websocket on `listener`, reads the runner's feature
    /// flags and greets it as a server does.
    async fn accept_greeted(
        listener: tokio::net::TcpListener,
    ) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let _flags = ws.next().await;
        let greeting =
            r#"{"type":"status","data":{"status":{"exec_info":{"queue_remaining":0}},"sid":"x"}}"#;
        ws.send(Message::text(greeting)).await.unwrap();
        ws
    }

    /// protocol.md §1.1: a reconnect with the same clientId must come after
    /// the server's handler for the old socket has ended, or that handler
    /// unregisters the new socket. The supervisor reconnects only when
    /// `pump` returns, so `pump` returns only once the server has seen the
    /// old socket end.
    #[tokio::test]
    async fn pump_returns_only_after_the_server_saw_the_socket_end() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ended = Arc::new(AtomicBool::new(false));
        let server_ended = ended.clone();
        tokio::spawn(async move {
            let mut ws = accept_greeted(listener).await;
            // The server drops the socket (as the sim's drop fault does).
            ws.send(Message::Close(None)).await.unwrap();
            while let Some(Ok(_)) = ws.next().await {}
            server_ended.store(true, Ordering::SeqCst);
        });
        let base = ServerUrl::parse(&format!("http://{addr}")).unwrap();
        let timeout = std::time::Duration::from_secs(5);
        let socket = connect(&base, "x", &HeaderMap::new(), timeout)
            .await
            .unwrap();
        let why = socket.pump(&Router::default(), timeout).await;
        assert!(why.to_string().contains("closed by the server"), "{why}");
        assert!(
            ended.load(Ordering::SeqCst),
            "the server still holds the old socket"
        );
    }

    /// Reads take 8 KiB at a time: an `executed` message of hundreds of KB
    /// (a node with thousands of outputs) and an image frame of megabytes
    /// arrive whole, across many reads and TCP segments.
    #[tokio::test]
    async fn messages_far_larger_than_a_read_arrive_whole() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let images: Vec<Value> = (0..6000)
            .map(|i| {
                serde_json::json!({
                    "filename": format!("p_{i:05}_.png"),
                    "subfolder": "comfy-batch/deep/sub/folder",
                    "type": "output",
                })
            })
            .collect();
        let executed = serde_json::json!({
            "type": "executed",
            "data": {"node": "9", "output": {"images": images}, "prompt_id": "p"},
        })
        .to_string();
        assert!(executed.len() > 400_000, "{}", executed.len());
        let mut frame = vec![0, 0, 0, 1, 0, 0, 0, 2];
        frame.extend((0..3_000_000u32).map(|i| (i % 251) as u8));
        let sent = frame.clone();
        tokio::spawn(async move {
            let mut ws = accept_greeted(listener).await;
            let start = r#"{"type":"execution_start","data":{"prompt_id":"p"}}"#;
            ws.send(Message::text(start)).await.unwrap();
            ws.send(Message::text(executed)).await.unwrap();
            ws.send(Message::binary(sent)).await.unwrap();
            ws.send(Message::Close(None)).await.unwrap();
            while let Some(Ok(_)) = ws.next().await {}
        });
        let base = ServerUrl::parse(&format!("http://{addr}")).unwrap();
        let timeout = std::time::Duration::from_secs(10);
        let socket = connect(&base, "x", &HeaderMap::new(), timeout)
            .await
            .unwrap();
        let router = Router::default();
        let mut route = router.register("p");
        let why = socket.pump(&router, timeout).await;
        assert!(why.to_string().contains("closed by the server"), "{why}");
        let got: Vec<_> = std::iter::from_fn(|| route.try_recv().ok()).collect();
        assert_eq!(got.len(), 3, "{got:?}");
        let ServerEvent::Message(WsMessage::Executed { output, .. }) = &got[1] else {
            panic!("{:?}", got[1]);
        };
        let listed = output.as_ref().unwrap()["images"].as_array().unwrap();
        assert_eq!(listed.len(), 6000);
        assert_eq!(listed[5999]["filename"], "p_05999_.png");
        let ServerEvent::Image { bytes, ext, .. } = &got[2] else {
            panic!("{:?}", got[2]);
        };
        assert_eq!(*ext, "png");
        assert!(bytes[..] == frame[8..], "the image frame arrived changed");
    }

    /// With one runtime thread, the runner itself may stall (a slow disk's
    /// sync in the log writer) for longer than the silence allowed: that is
    /// not the server's silence, which went on talking meanwhile.
    #[tokio::test]
    async fn a_stalled_runner_reads_what_arrived_before_calling_the_server_silent() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // The server on its own thread: it keeps talking while we stall.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                listener.set_nonblocking(true).unwrap();
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let (tcp, _) = listener.accept().await.unwrap();
                let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
                let greeting = r#"{"type":"status","data":{"status":{"exec_info":{"queue_remaining":0}},"sid":"x"}}"#;
                ws.send(Message::text(greeting)).await.unwrap();
                let mut tick = tokio::time::interval(std::time::Duration::from_millis(20));
                loop {
                    tokio::select! {
                        read = ws.next() => if !matches!(read, Some(Ok(_))) { return },
                        _ = tick.tick() => {
                            let m = r#"{"type":"progress_state","data":{}}"#;
                            if ws.send(Message::text(m)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        });
        let base = ServerUrl::parse(&format!("http://{addr}")).unwrap();
        let timeout = std::time::Duration::from_secs(5);
        let socket = connect(&base, "x", &HeaderMap::new(), timeout)
            .await
            .unwrap();
        let silence = std::time::Duration::from_millis(300);
        let pump = tokio::spawn(async move { socket.pump(&Router::default(), silence).await });
        for _ in 0..8 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            // Blocks the only runtime thread, as a slow sync would.
            std::thread::sleep(silence * 3);
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            assert!(!pump.is_finished(), "{}", pump.await.unwrap());
        }
        pump.abort();
    }
}
