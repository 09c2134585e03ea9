//! `GET /ws?clientId=`: one task per socket. The writer drains the socket's
//! channel (and applies `--drop-ws-every`); the reader only looks at the
//! first message for `feature_flags`, as the real server.
//!
//! Reconnects behave as the real server, including its bug: when a socket
//! the *client* closed ends, the registry entry for its `sid` is removed even
//! if a newer socket took it. Sockets the *simulator* closes (drop fault,
//! restart, shutdown) leave a newer socket alone, so injected faults cannot
//! silence a client that reconnected quickly.

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use rand::RngExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::hub::Out;
use super::state::{Shared, lock};

/// A fresh `sid` as the real server makes it: `uuid4().hex`.
fn new_sid() -> String {
    let mut rng = rand::rng();
    let bytes: [u8; 16] = rng.random();
    hex::encode(bytes)
}

pub(crate) async fn serve_socket(
    shared: Arc<Shared>,
    socket: WebSocket,
    client_id: Option<String>,
) {
    let sid = client_id.filter(|s| !s.is_empty()).unwrap_or_else(new_sid);
    let (tx, mut rx) = mpsc::unbounded_channel::<Out>();
    let conn = {
        // Core lock first (as everywhere), so the count is current.
        let core = lock(&shared.core);
        shared.hub.register(&sid, tx.clone(), core.remaining())
    };

    let (mut sink, mut stream) = socket.split();
    let drop_every = shared.config.drop_ws_every.filter(|n| *n > 0);
    let writer_shared = shared.clone();
    let writer_sid = sid.clone();
    // Returns whether the simulator closed the socket.
    let mut writer = tokio::spawn(async move {
        let mut sent: u64 = 0;
        while let Some(out) = rx.recv().await {
            // Feed what is queued, then flush once: one write for a burst of
            // messages instead of one per message.
            let mut next = Some(out);
            while let Some(out) = next.take() {
                match out {
                    Out::Frame(msg) => {
                        if sink.feed(msg).await.is_err() {
                            return false;
                        }
                        sent += 1;
                        if drop_every.is_some_and(|n| sent >= n) {
                            writer_shared.hub.remove_if(&writer_sid, conn);
                            let _ = sink.send(Message::Close(None)).await;
                            return true;
                        }
                    }
                    Out::Close => {
                        let _ = sink.send(Message::Close(None)).await;
                        return true;
                    }
                }
                if !sent.is_multiple_of(64) {
                    next = rx.try_recv().ok();
                }
            }
            if sink.flush().await.is_err() {
                return false;
            }
        }
        false
    });

    let mut first = true;
    let closed_by_sim = loop {
        tokio::select! {
            done = &mut writer => break done.unwrap_or(false),
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    if first {
                        first = false;
                        handle_first(&shared, &sid, conn, &tx, &t);
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break false,
                Some(Ok(_)) => {}
            },
        }
    };
    if !closed_by_sim {
        writer.abort();
        shared.hub.remove(&sid);
    }
}

fn handle_first(
    shared: &Shared,
    sid: &str,
    conn: u64,
    tx: &mpsc::UnboundedSender<Out>,
    text: &str,
) {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return;
    };
    if v.get("type").and_then(Value::as_str) != Some("feature_flags") {
        return;
    }
    let Some(data) = v.get("data").and_then(Value::as_object) else {
        return;
    };
    let on = data.get("supports_preview_metadata") == Some(&Value::Bool(true));
    shared.hub.set_preview_metadata(sid, conn, on);
    let reply = json!({"type": "feature_flags", "data": features()});
    let _ = tx.send(Out::Frame(Message::Text(reply.to_string().into())));
}

/// The server's feature flags (`/features` and the websocket reply).
pub(crate) fn features() -> Value {
    json!({
        "supports_preview_metadata": true,
        "max_upload_size": 104857600,
        "extension": {"manager": {"supports_v4": true}},
    })
}
