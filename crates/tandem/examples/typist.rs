//! A demo peer: joins a document and types at human speed with its own named
//! cursor, so one person alone can see Tandem's live editing and presence.
//!
//! ```text
//! cargo run --release -p tandem --example typist -- welcome
//! cargo run -p tandem --example typist -- DOC [--url ws://127.0.0.1:8080/ws] [--name NAME] [--cps 8]
//! ```
//!
//! It speaks the plain Yjs protocol (like any browser) over one WebSocket:
//! SyncStep1 on join, SyncStep2 / Update in both directions, and an awareness
//! state `{user: {name, color, colorLight}, cursor: {anchor, head}}` whose
//! positions are Yjs relative positions, as y-codemirror.next expects. It
//! types at the end of the shared text `content` and reconnects when the
//! server goes away.

use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use yrs::sync::{Awareness, Message, MessageReader, SyncMessage};
use yrs::updates::decoder::{Decode, DecoderV1};
use yrs::updates::encoder::Encode;
use yrs::{Assoc, Doc, IndexedSequence, ReadTxn, Text, TextRef, Transact, Update};

/// What the typist writes, one character at a time, over and over.
const SCRIPT: &str = "Hello from the typist. Everything you see here travels as Yjs updates \
through Tandem, which stores each one durably in sled before it fans it out to every peer. \
Open this page in a second window and type along: both cursors stay where they belong.\n";

/// Command-line options (positional document id, then flags).
struct Options {
    /// The document to join.
    doc: String,
    /// WebSocket base URL; the document id is appended as the last segment.
    url: String,
    /// Display name shown next to the cursor.
    name: String,
    /// Characters per second.
    cps: f64,
}

fn parse_args() -> anyhow::Result<Options> {
    let mut opts = Options {
        doc: String::new(),
        url: "ws://127.0.0.1:8080/ws".into(),
        name: "Typist (bot)".into(),
        cps: 8.0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| args.next().with_context(|| format!("{flag} needs a value"));
        match arg.as_str() {
            "--url" => opts.url = value("--url")?,
            "--name" => opts.name = value("--name")?,
            "--cps" => opts.cps = value("--cps")?.parse().context("--cps takes a number")?,
            "-h" | "--help" => {
                println!(
                    "usage: typist DOC [--url ws://127.0.0.1:8080/ws] [--name NAME] [--cps 8]"
                );
                std::process::exit(0);
            }
            flag if flag.starts_with('-') => bail!("unknown flag {flag}"),
            doc => opts.doc = doc.to_string(),
        }
    }
    if opts.doc.is_empty() {
        bail!("usage: typist DOC [--url ws://127.0.0.1:8080/ws] [--name NAME] [--cps 8]");
    }
    Ok(opts)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let opts = parse_args()?;
    let awareness = Awareness::new(Doc::new());
    let mut typist = Typist::new(awareness, &opts.name);
    let url = format!("{}/{}", opts.url.trim_end_matches('/'), opts.doc);
    loop {
        match typist.session(&url, opts.cps).await {
            Ok(()) => return Ok(()),
            Err(err) => {
                eprintln!("typist: {err:#}; reconnecting in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// The typist's replica of the document plus its place in the script.
struct Typist {
    /// Owns the local `Doc` and the awareness states of everyone in the room.
    awareness: Awareness,
    /// The shared text the web editor binds to.
    text: TextRef,
    /// Index of the next script character to type.
    next_char: usize,
}

impl Typist {
    fn new(mut awareness: Awareness, name: &str) -> Self {
        let text = awareness.doc().get_or_insert_text("content");
        let user = serde_json::json!({ "user": { "name": name, "color": "#b15d27", "colorLight": "#b15d2733" } });
        // Serializing a json! value cannot fail.
        let _ = awareness.set_local_state(user);
        Self {
            awareness,
            text,
            next_char: 0,
        }
    }

    /// One connection: sync, then type until the socket fails.
    async fn session(&mut self, url: &str, cps: f64) -> anyhow::Result<()> {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        let (mut sink, mut stream) = ws.split();
        println!("typist: connected to {url}");

        let sv = self.awareness.doc().transact().state_vector();
        sink.send(frame(Message::Sync(SyncMessage::SyncStep1(sv))))
            .await?;
        sink.send(frame(Message::Awareness(self.awareness.update()?)))
            .await?;

        let mut synced = false;
        let mut keystroke = tokio::time::interval(Duration::from_secs_f64(1.0 / cps.max(0.5)));
        let mut renew = tokio::time::interval(Duration::from_secs(10));
        loop {
            tokio::select! {
                incoming = stream.next() => {
                    let Some(incoming) = incoming else { bail!("server closed the connection") };
                    match incoming? {
                        WsMessage::Binary(bytes) => {
                            for reply in self.handle(&bytes, &mut synced)? {
                                sink.send(reply).await?;
                            }
                        }
                        WsMessage::Close(close) => bail!("server closed the connection: {close:?}"),
                        _ => {}
                    }
                }
                _ = keystroke.tick(), if synced => {
                    let update = self.type_next_char();
                    sink.send(frame(Message::Sync(SyncMessage::Update(update)))).await?;
                    sink.send(frame(Message::Awareness(self.awareness.update()?))).await?;
                }
                _ = renew.tick() => {
                    sink.send(frame(Message::Awareness(self.awareness.update()?))).await?;
                }
            }
        }
    }

    /// Applies one frame's messages; returns the frames to send back.
    fn handle(&mut self, bytes: &[u8], synced: &mut bool) -> anyhow::Result<Vec<WsMessage>> {
        let mut replies = Vec::new();
        let mut decoder = DecoderV1::from(bytes);
        for message in MessageReader::new(&mut decoder) {
            match message? {
                Message::Sync(SyncMessage::SyncStep1(sv)) => {
                    let diff = self
                        .awareness
                        .doc()
                        .transact()
                        .encode_state_as_update_v1(&sv);
                    replies.push(frame(Message::Sync(SyncMessage::SyncStep2(diff))));
                }
                Message::Sync(SyncMessage::SyncStep2(update)) => {
                    self.apply(&update)?;
                    *synced = true;
                }
                Message::Sync(SyncMessage::Update(update)) => self.apply(&update)?,
                Message::Awareness(update) => {
                    // Someone else's cursor; a malformed one is not our problem.
                    let _ = self.awareness.apply_update(update);
                }
                _ => {}
            }
        }
        Ok(replies)
    }

    fn apply(&mut self, update: &[u8]) -> anyhow::Result<()> {
        let update = Update::decode_v1(update)?;
        self.awareness.doc().transact_mut().apply_update(update)?;
        Ok(())
    }

    /// Types the next script character at the end of the text, moves the
    /// cursor behind it, and returns the encoded update.
    fn type_next_char(&mut self) -> Vec<u8> {
        let ch = SCRIPT.chars().nth(self.next_char).unwrap_or('\n');
        self.next_char = (self.next_char + 1) % SCRIPT.chars().count();
        let (update, cursor) = {
            let mut txn = self.awareness.doc().transact_mut();
            let end = self.text.len(&txn);
            self.text.insert(&mut txn, end, ch.encode_utf8(&mut [0; 4]));
            let update = txn.encode_update_v1();
            let end = self.text.len(&txn);
            (update, self.text.sticky_index(&txn, end, Assoc::Before))
        };
        let state = serde_json::json!({
            "user": self.awareness.local_state::<serde_json::Value>().and_then(|s| s.get("user").cloned()),
            "cursor": { "anchor": cursor, "head": cursor },
        });
        let _ = self.awareness.set_local_state(state);
        update
    }
}

/// One protocol message per WebSocket frame (the JS client reads only the first).
fn frame(message: Message) -> WsMessage {
    WsMessage::Binary(message.encode_v1().into())
}
