//! A small Yjs client over a real WebSocket, and a raw socket for bad input.
//!
//! [`Peer`] behaves like y-websocket's provider: it sends SyncStep1 on
//! connect, answers the server's SyncStep1, applies updates, keeps the
//! awareness states it hears about, and sends its own edits of the root
//! `Y.Text` "content" as Update messages.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use yrs::encoding::read::Cursor;
use yrs::sync::awareness::AwarenessUpdateEntry;
use yrs::sync::{AwarenessUpdate, Message as YMessage, SyncMessage};
use yrs::updates::decoder::{Decode, DecoderV1};
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

use crate::TIMEOUT;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a peer has received so far.
pub struct PeerState {
    /// The peer's copy of the document.
    pub doc: Doc,
    /// Awareness as this peer sees it: client id -> (clock, JSON or None if removed).
    pub awareness: HashMap<u64, (u32, Option<String>)>,
    /// The close frame received, if any: (code, reason).
    pub close: Option<(u16, String)>,
    /// The socket ended (closed or dropped).
    pub ended: bool,
    /// A SyncStep2 from the server was applied.
    pub synced: bool,
    /// Update/SyncStep2 messages received.
    pub updates_received: usize,
}

impl PeerState {
    /// The root text "content".
    pub fn text(&self) -> String {
        let text = self.doc.get_or_insert_text("content");
        text.get_string(&self.doc.transact())
    }

    /// Live awareness states: client id -> JSON.
    pub fn states(&self) -> HashMap<u64, String> {
        self.awareness
            .iter()
            .filter_map(|(id, (_, s))| s.clone().map(|s| (*id, s)))
            .collect()
    }

    /// Close code received, if any.
    pub fn close_code(&self) -> Option<u16> {
        self.close.as_ref().map(|c| c.0)
    }
}

/// A Yjs peer connected to one document room.
pub struct Peer {
    state: Arc<Mutex<PeerState>>,
    changed: watch::Receiver<u64>,
    out: mpsc::UnboundedSender<Message>,
    tasks: Vec<JoinHandle<()>>,
    awareness_clock: u32,
}

impl Peer {
    /// Connects with a fresh document and waits for the initial sync.
    pub async fn join(url: &str) -> Peer {
        let peer = Peer::connect(url, Doc::new()).await;
        peer.wait_until("initial sync", |s| s.synced).await;
        peer
    }

    /// Connects with `doc` (e.g. a reconnect carrying offline edits); does not wait.
    pub async fn connect(url: &str, doc: Doc) -> Peer {
        let (socket, _) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect timed out")
            .expect("connect");
        let (mut sink, mut stream) = socket.split();
        let sv = doc.transact().state_vector();
        let state = Arc::new(Mutex::new(PeerState {
            doc,
            awareness: HashMap::new(),
            close: None,
            ended: false,
            synced: false,
            updates_received: 0,
        }));
        let (changed_tx, changed) = watch::channel(0u64);
        let (out, mut out_rx) = mpsc::unbounded_channel::<Message>();
        let writer = tokio::spawn(async move {
            while let Some(msg) = out_rx.recv().await {
                if sink.send(msg).await.is_err() {
                    break;
                }
            }
        });
        let reader_state = state.clone();
        let reply = out.clone();
        let reader = tokio::spawn(async move {
            while let Some(msg) = stream.next().await {
                let Ok(msg) = msg else { break };
                {
                    let mut s = lock(&reader_state);
                    match msg {
                        Message::Binary(frame) => handle_frame(&mut s, &frame, &reply),
                        Message::Close(frame) => {
                            s.close = Some(
                                frame
                                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                                    .unwrap_or((1005, String::new())),
                            );
                        }
                        _ => {}
                    }
                }
                changed_tx.send_modify(|v| *v += 1);
            }
            lock(&reader_state).ended = true;
            changed_tx.send_modify(|v| *v += 1);
        });
        let _ = out.send(Message::binary(
            YMessage::Sync(SyncMessage::SyncStep1(sv)).encode_v1(),
        ));
        Peer {
            state,
            changed,
            out,
            tasks: vec![reader, writer],
            awareness_clock: 0,
        }
    }

    /// Locks and returns the received state.
    pub fn state(&self) -> MutexGuard<'_, PeerState> {
        lock(&self.state)
    }

    /// The document (shared: edits made on it are not sent automatically).
    pub fn doc(&self) -> Doc {
        self.state().doc.clone()
    }

    /// Current text of "content".
    pub fn text(&self) -> String {
        self.state().text()
    }

    /// The client id of this peer's document.
    pub fn client_id(&self) -> u64 {
        self.state().doc.client_id().get()
    }

    /// Waits until `cond` holds, panicking with `what` after [`TIMEOUT`].
    pub async fn wait_until(&self, what: &str, cond: impl Fn(&PeerState) -> bool) {
        let mut changed = self.changed.clone();
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            if cond(&self.state()) {
                return;
            }
            // Timed out, or the connection's task is gone (nothing will
            // change any more: waiting again would spin).
            let waited = tokio::time::timeout_at(deadline, changed.changed()).await;
            if !matches!(waited, Ok(Ok(()))) {
                if cond(&self.state()) {
                    return;
                }
                let s = self.state();
                let text = s.text();
                let head: String = text.chars().take(80).collect();
                panic!(
                    "timed out (or the connection ended) waiting for {what}; text ({} chars) starts {head:?}; close={:?} ended={}",
                    text.chars().count(),
                    s.close,
                    s.ended
                );
            }
        }
    }

    /// Waits until the text equals `expected`.
    pub async fn wait_text(&self, expected: &str) {
        self.wait_until(&format!("text {expected:?}"), |s| s.text() == expected)
            .await;
    }

    /// Waits for a close frame and returns its code.
    pub async fn wait_close(&self) -> u16 {
        self.wait_until("close frame", |s| s.close.is_some() || s.ended)
            .await;
        self.state().close_code().unwrap_or(1006)
    }

    /// Inserts `s` at `index` in "content" and sends the update.
    pub fn insert(&self, index: u32, s: &str) {
        self.edit(|doc| {
            let text = doc.get_or_insert_text("content");
            text.insert(&mut doc.transact_mut(), index, s);
        });
    }

    /// Deletes `len` characters at `index` in "content" and sends the update.
    pub fn delete(&self, index: u32, len: u32) {
        self.edit(|doc| {
            let text = doc.get_or_insert_text("content");
            text.remove_range(&mut doc.transact_mut(), index, len);
        });
    }

    fn edit(&self, f: impl FnOnce(&Doc)) {
        let update = {
            let s = self.state();
            let before = s.doc.transact().state_vector();
            f(&s.doc);
            s.doc.transact().encode_diff_v1(&before)
        };
        self.send_update(&update);
    }

    /// Sends one v1 update as a sync Update message.
    pub fn send_update(&self, update: &[u8]) {
        self.send_raw(YMessage::Sync(SyncMessage::Update(update.to_vec())).encode_v1());
    }

    /// Sets this peer's awareness state (JSON) with the next clock.
    pub fn set_awareness(&mut self, json: &str) {
        self.awareness_clock += 1;
        let (id, clock) = (self.client_id(), self.awareness_clock);
        self.send_awareness(id, clock, json);
    }

    /// Sends an awareness entry for any client id.
    pub fn send_awareness(&self, client: u64, clock: u32, json: &str) {
        let mut clients = HashMap::new();
        clients.insert(
            yrs::block::ClientID::new(client),
            AwarenessUpdateEntry {
                clock,
                json: json.into(),
            },
        );
        let msg = YMessage::Awareness(AwarenessUpdate { clients });
        self.send_raw(msg.encode_v1());
    }

    /// Sends one binary frame as-is.
    pub fn send_raw(&self, frame: Vec<u8>) {
        let _ = self.out.send(Message::binary(frame));
    }

    /// Closes cleanly (close frame) and waits for the socket to end.
    pub async fn close(self) {
        let _ = self.out.send(Message::Close(None));
        self.wait_until("socket end", |s| s.ended).await;
    }

    /// Drops the TCP connection without a close frame.
    pub fn drop_abruptly(self) {
        for t in &self.tasks {
            t.abort();
        }
    }

    /// Closes and reconnects with the same document (sending its offline edits).
    pub async fn reconnect(self, url: &str) -> Peer {
        let doc = self.doc();
        self.close().await;
        let peer = Peer::connect(url, doc).await;
        peer.wait_until("resync", |s| s.synced).await;
        peer
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn lock(state: &Mutex<PeerState>) -> MutexGuard<'_, PeerState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

fn handle_frame(s: &mut PeerState, frame: &[u8], reply: &mpsc::UnboundedSender<Message>) {
    let mut decoder = DecoderV1::new(Cursor::new(frame));
    // One message per frame is what the server promises; read them all anyway.
    while let Ok(msg) = YMessage::decode(&mut decoder) {
        match msg {
            YMessage::Sync(SyncMessage::SyncStep1(sv)) => {
                let diff = s.doc.transact().encode_diff_v1(&sv);
                let _ = reply.send(Message::binary(
                    YMessage::Sync(SyncMessage::SyncStep2(diff)).encode_v1(),
                ));
            }
            YMessage::Sync(SyncMessage::SyncStep2(u)) => {
                apply(s, &u);
                s.synced = true;
            }
            YMessage::Sync(SyncMessage::Update(u)) => apply(s, &u),
            YMessage::Awareness(update) => {
                for (client, e) in update.clients {
                    let removal = e.json.as_ref() == "null";
                    let known = s.awareness.get(&client.get()).cloned();
                    let apply = match &known {
                        None => true,
                        Some((clock, state)) => {
                            e.clock > *clock || (e.clock == *clock && removal && state.is_some())
                        }
                    };
                    if apply {
                        let state = (!removal).then(|| e.json.to_string());
                        s.awareness.insert(client.get(), (e.clock, state));
                    }
                }
            }
            _ => {}
        }
    }
}

fn apply(s: &mut PeerState, update: &[u8]) {
    if let Ok(update) = Update::decode_v1(update) {
        let _ = s.doc.transact_mut().apply_update(update);
    }
    s.updates_received += 1;
}

/// A bare WebSocket for sending hand-made frames and reading what comes back.
pub struct RawSocket {
    socket: Socket,
}

impl RawSocket {
    /// Connects without speaking the protocol.
    pub async fn connect(url: &str) -> RawSocket {
        let (socket, _) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect timed out")
            .expect("connect");
        RawSocket { socket }
    }

    /// Sends a binary frame.
    pub async fn send_binary(&mut self, frame: Vec<u8>) {
        let _ = self.socket.send(Message::binary(frame)).await;
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: &str) {
        let _ = self.socket.send(Message::text(text)).await;
    }

    /// Reads until a close frame (its code) or the end of the socket (1006).
    pub async fn wait_close(&mut self) -> u16 {
        let read = async {
            while let Some(msg) = self.socket.next().await {
                match msg {
                    Ok(Message::Close(frame)) => {
                        return frame.map(|f| u16::from(f.code)).unwrap_or(1005);
                    }
                    Ok(_) => continue,
                    Err(_) => return 1006,
                }
            }
            1006
        };
        tokio::time::timeout(TIMEOUT, read)
            .await
            .expect("timed out waiting for close")
    }
}

/// A v1 update inserting `s` at the start of "content" in a fresh document.
pub fn text_update(s: &str) -> Vec<u8> {
    let doc = Doc::new();
    let text = doc.get_or_insert_text("content");
    text.insert(&mut doc.transact_mut(), 0, s);
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
}
