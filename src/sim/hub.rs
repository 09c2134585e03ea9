//! The websocket registry (`sid` → socket) and message routing: targeted or
//! broadcast JSON, and image frames in each client's format (type 4 with
//! metadata when it set `supports_preview_metadata`, else type 1).
//!
//! Sending never blocks: each socket has an unbounded channel drained by its
//! own writer task, so the worker is never slowed by a slow client and the
//! per-socket order is the order of the calls.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::extract::ws::{Message, Utf8Bytes};
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedSender;

use super::state::lock;

/// The connections an image's type-4 send left out (see
/// [`Hub::send_image_with_metadata`]).
pub(crate) struct PlainClients(Vec<u64>);

/// What a socket's writer gets.
pub(crate) enum Out {
    Frame(Message),
    /// The simulator closes this socket (restart, shutdown); its registry
    /// entry is already gone.
    Close,
}

struct Slot {
    conn: u64,
    tx: UnboundedSender<Out>,
    preview_metadata: bool,
}

#[derive(Default)]
struct Inner {
    clients: HashMap<String, Slot>,
    next_conn: u64,
    /// `server.client_id`: the client of the running prompt.
    exec_client: Option<String>,
    /// `server.last_node_id`: the node of the last `executing` sent.
    last_node: Option<String>,
}

/// Metadata of an image frame (type 4).
pub(crate) struct ImageMeta<'a> {
    pub node_id: &'a str,
    pub prompt_id: &'a str,
    /// `true` for JPEG (sampler previews), `false` for PNG.
    pub jpeg: bool,
}

#[derive(Default)]
pub(crate) struct Hub {
    inner: Mutex<Inner>,
}

fn text(event: &str, data: &Value) -> Message {
    let body = json!({"type": event, "data": data});
    Message::Text(Utf8Bytes::from(body.to_string()))
}

impl Hub {
    /// Registers a socket under `sid`, replacing (not closing) an older one,
    /// queues its first frames (`status` with `sid`; `executing {node}` when
    /// its prompt is running) and returns its connection number.
    pub fn register(&self, sid: &str, tx: UnboundedSender<Out>, remaining: usize) -> u64 {
        let mut inner = lock(&self.inner);
        inner.next_conn += 1;
        let conn = inner.next_conn;
        let status = json!({"status": {"exec_info": {"queue_remaining": remaining}}, "sid": sid});
        let _ = tx.send(Out::Frame(text("status", &status)));
        if inner.exec_client.as_deref() == Some(sid)
            && let Some(node) = &inner.last_node
        {
            let _ = tx.send(Out::Frame(text("executing", &json!({"node": node}))));
        }
        inner.clients.insert(
            sid.to_string(),
            Slot {
                conn,
                tx,
                preview_metadata: false,
            },
        );
        conn
    }

    /// The real handler's `finally: sockets.pop(sid)`: removes whatever
    /// socket holds `sid` now, even a newer one (the real server's bug).
    pub fn remove(&self, sid: &str) {
        lock(&self.inner).clients.remove(sid);
    }

    /// Removes `sid` only if it is still this connection (sim-initiated
    /// closes must not hit a reconnected client).
    pub fn remove_if(&self, sid: &str, conn: u64) {
        let mut inner = lock(&self.inner);
        if inner.clients.get(sid).is_some_and(|s| s.conn == conn) {
            inner.clients.remove(sid);
        }
    }

    /// Stores the client's `supports_preview_metadata` flag.
    pub fn set_preview_metadata(&self, sid: &str, conn: u64, on: bool) {
        let mut inner = lock(&self.inner);
        if let Some(slot) = inner.clients.get_mut(sid)
            && slot.conn == conn
        {
            slot.preview_metadata = on;
        }
    }

    /// Closes every socket (restart, shutdown).
    pub fn close_all(&self) {
        let mut inner = lock(&self.inner);
        for (_, slot) in inner.clients.drain() {
            let _ = slot.tx.send(Out::Close);
        }
    }

    /// Marks the start or end of a prompt for the reconnect replay.
    pub fn set_exec_client(&self, client: Option<String>) {
        let mut inner = lock(&self.inner);
        inner.exec_client = client;
        inner.last_node = None;
    }

    /// Sends `{"type": event, "data": data}` to `to`, or to everyone.
    pub fn send(&self, event: &str, data: Value, to: Option<&str>) {
        let mut inner = lock(&self.inner);
        if event == "executing" {
            inner.last_node = data.get("node").and_then(Value::as_str).map(str::to_string);
        }
        let msg = text(event, &data);
        match to {
            Some(sid) => {
                if let Some(slot) = inner.clients.get(sid) {
                    let _ = slot.tx.send(Out::Frame(msg));
                }
            }
            None => {
                for slot in inner.clients.values() {
                    let _ = slot.tx.send(Out::Frame(msg.clone()));
                }
            }
        }
    }

    /// Sends an image as a type-4 frame (with metadata) to `to` (or
    /// everyone) among the clients that set `supports_preview_metadata`,
    /// and returns the others: [`Hub::send_image_plain`] sends them theirs.
    /// Two calls because the real server sends the two kinds at different
    /// points of a progress update; decided once, so a client whose flag
    /// arrives between the two still gets the image exactly once.
    pub fn send_image_with_metadata(
        &self,
        png: &Bytes,
        meta: &ImageMeta<'_>,
        to: Option<&str>,
    ) -> PlainClients {
        let inner = lock(&self.inner);
        let mut frame: Option<Message> = None;
        let mut plain = Vec::new();
        for slot in Self::targets(&inner, to) {
            if !slot.preview_metadata {
                plain.push(slot.conn);
                continue;
            }
            let frame = frame.get_or_insert_with(|| {
                let m = json!({
                    "node_id": meta.node_id,
                    "prompt_id": meta.prompt_id,
                    "display_node_id": meta.node_id,
                    "parent_node_id": null,
                    "real_node_id": meta.node_id,
                    "image_type": if meta.jpeg { "image/jpeg" } else { "image/png" },
                })
                .to_string();
                let mut b = BytesMut::with_capacity(8 + m.len() + png.len());
                b.put_u32(4);
                b.put_u32(m.len() as u32);
                b.put_slice(m.as_bytes());
                b.put_slice(png);
                Message::Binary(b.freeze())
            });
            let _ = slot.tx.send(Out::Frame(frame.clone()));
        }
        PlainClients(plain)
    }

    /// Sends an image as `[1][fmt][bytes]` (fmt 1 JPEG, 2 PNG) to the
    /// connections [`Hub::send_image_with_metadata`] left out, those still
    /// there.
    pub fn send_image_plain(
        &self,
        png: &Bytes,
        meta: &ImageMeta<'_>,
        to: Option<&str>,
        clients: &PlainClients,
    ) {
        let inner = lock(&self.inner);
        let mut frame: Option<Message> = None;
        for slot in Self::targets(&inner, to).filter(|s| clients.0.contains(&s.conn)) {
            let frame = frame.get_or_insert_with(|| {
                let mut b = BytesMut::with_capacity(8 + png.len());
                b.put_u32(1);
                b.put_u32(if meta.jpeg { 1 } else { 2 });
                b.put_slice(png);
                Message::Binary(b.freeze())
            });
            let _ = slot.tx.send(Out::Frame(frame.clone()));
        }
    }

    fn targets<'a>(inner: &'a Inner, to: Option<&'a str>) -> impl Iterator<Item = &'a Slot> + 'a {
        inner
            .clients
            .iter()
            .filter(move |(sid, _)| to.is_none_or(|to| to == sid.as_str()))
            .map(|(_, slot)| slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real server decides once per image which frame a client gets: a
    /// client whose `supports_preview_metadata` arrives between the two
    /// sends of a progress update still gets the image, once.
    #[test]
    fn a_flag_arriving_mid_update_neither_loses_nor_doubles_the_image() {
        let hub = Hub::default();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let conn = hub.register("c", tx, 0);
        let png = Bytes::from_static(b"png");
        let meta = ImageMeta {
            node_id: "2",
            prompt_id: "p",
            jpeg: false,
        };
        let plain = hub.send_image_with_metadata(&png, &meta, Some("c"));
        hub.set_preview_metadata("c", conn, true);
        hub.send_image_plain(&png, &meta, Some("c"), &plain);
        let frames: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok())
            .filter(|o| matches!(o, Out::Frame(Message::Binary(_))))
            .collect();
        assert_eq!(frames.len(), 1);
    }
}
