//! The server's own WebSocket framing (gateway `wire.rs`), driven from a
//! raw TCP socket with hand-made frames: pings answered with their
//! payload, the close handshake, fragmented messages reassembled (with a
//! control frame between fragments), the size limit checked at the frame
//! header and across fragments (1009), and unmasked client frames refused.

use tandem_tests::client::text_update;
use tandem_tests::{Peer, TIMEOUT, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use yrs::sync::{Message, SyncMessage};
use yrs::updates::encoder::Encode;

const KEY: [u8; 4] = [0x12, 0x9a, 0xfe, 0x33];

/// A client frame, masked unless `masked` is false.
fn frame(opcode: u8, fin: bool, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = vec![opcode | if fin { 0x80 } else { 0 }];
    let bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(bit | n as u8),
        n if n < 65536 => {
            out.push(bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        out.extend_from_slice(&KEY);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ KEY[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// A y-protocols sync Update message carrying `update`.
fn update_message(update: Vec<u8>) -> Vec<u8> {
    Message::Sync(SyncMessage::Update(update)).encode_v1()
}

struct Raw(TcpStream);

impl Raw {
    /// Connects to `doc` and completes the upgrade by hand.
    async fn connect(server: &TestServer, doc: &str) -> Raw {
        let url = server.ws_url(doc);
        let rest = url.strip_prefix("ws://").unwrap();
        let (host, path) = rest.split_at(rest.find('/').unwrap());
        let mut tcp = tokio::time::timeout(TIMEOUT, TcpStream::connect(host))
            .await
            .unwrap()
            .unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0];
            let n = tokio::time::timeout(TIMEOUT, tcp.read(&mut byte))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(n, 1, "the server closed during the handshake");
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        Raw(tcp)
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.0.write_all(bytes).await.unwrap();
    }

    /// The next server frame: (opcode, fin, payload); `None` at the end of
    /// the stream. Server frames must not be masked.
    async fn next_frame(&mut self) -> Option<(u8, bool, Vec<u8>)> {
        let mut head = [0; 2];
        match tokio::time::timeout(TIMEOUT, self.0.read_exact(&mut head)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return None,
            Err(_) => panic!("no frame within {TIMEOUT:?}"),
        }
        assert_eq!(head[1] & 0x80, 0, "server frames are not masked");
        let len = match head[1] & 0x7f {
            126 => {
                let mut len = [0; 2];
                self.0.read_exact(&mut len).await.unwrap();
                u16::from_be_bytes(len) as usize
            }
            127 => {
                let mut len = [0; 8];
                self.0.read_exact(&mut len).await.unwrap();
                u64::from_be_bytes(len) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0; len];
        self.0.read_exact(&mut payload).await.unwrap();
        Some((head[0] & 0x0f, head[0] & 0x80 != 0, payload))
    }

    /// Skips frames until one with `opcode`; its payload.
    async fn wait_for(&mut self, opcode: u8) -> Vec<u8> {
        loop {
            let (op, _, payload) = self.next_frame().await.expect("stream ended");
            if op == opcode {
                return payload;
            }
        }
    }

    /// Skips frames until the close frame; its code.
    async fn wait_close(&mut self) -> u16 {
        let payload = self.wait_for(0x8).await;
        u16::from_be_bytes([payload[0], payload[1]])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_are_answered_with_their_payload_and_a_close_is_answered_then_the_stream_ends() {
    let server = TestServer::start(&[]);
    let mut raw = Raw::connect(&server, "ping").await;
    raw.send(&frame(0x9, true, b"are you there", true)).await;
    assert_eq!(raw.wait_for(0xA).await, b"are you there");
    raw.send(&frame(0x9, true, b"", true)).await;
    assert_eq!(raw.wait_for(0xA).await, b"");
    raw.send(&frame(0x8, true, &1000u16.to_be_bytes(), true))
        .await;
    assert_eq!(raw.wait_close().await, 1000);
    assert!(
        raw.next_frame().await.is_none(),
        "the server ends the stream after the close"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fragmented_message_is_reassembled_with_a_ping_between_its_fragments() {
    let server = TestServer::start(&[]);
    let watcher = Peer::join(&server.ws_url("frag")).await;
    let mut raw = Raw::connect(&server, "frag").await;
    let message = update_message(text_update("fragments"));
    let (one, rest) = message.split_at(3);
    let (two, three) = rest.split_at(rest.len() / 2);
    raw.send(&frame(0x2, false, one, true)).await;
    raw.send(&frame(0x0, false, two, true)).await;
    raw.send(&frame(0x9, true, b"mid", true)).await;
    raw.send(&frame(0x0, true, three, true)).await;
    assert_eq!(raw.wait_for(0xA).await, b"mid");
    watcher.wait_text("fragments").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_announcing_too_much_closes_with_1009_before_any_payload() {
    let server = TestServer::start(&["--max-message-bytes", "65536"]);
    let mut raw = Raw::connect(&server, "header").await;
    let mut header = frame(0x2, true, &vec![0; 65537], true);
    header.truncate(2 + 8 + 4); // the 64-bit length form: no payload follows
    raw.send(&header).await;
    assert_eq!(raw.wait_close().await, 1009);
    // The limit itself is fine.
    let mut ok = Raw::connect(&server, "header").await;
    ok.send(&frame(
        0x2,
        true,
        &update_message(text_update(&"x".repeat(60_000))),
        true,
    ))
    .await;
    ok.send(&frame(0x9, true, b"after", true)).await;
    assert_eq!(ok.wait_for(0xA).await, b"after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragments_under_the_limit_that_add_up_past_it_close_with_1009() {
    let server = TestServer::start(&["--max-message-bytes", "65536"]);
    let mut raw = Raw::connect(&server, "sum").await;
    raw.send(&frame(0x2, false, &[0; 40_000], true)).await;
    raw.send(&frame(0x0, true, &[0; 40_000], true)).await;
    assert_eq!(raw.wait_close().await, 1009);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmasked_client_frame_ends_the_connection_unread() {
    let server = TestServer::start(&[]);
    let watcher = Peer::join(&server.ws_url("mask")).await;
    let mut raw = Raw::connect(&server, "mask").await;
    raw.send(&frame(
        0x2,
        true,
        &update_message(text_update("unmasked")),
        false,
    ))
    .await;
    // A protocol error closes like a normal end (1000), as before.
    assert_eq!(raw.wait_close().await, 1000);
    // Nothing of it reached the room: a masked update afterwards (from
    // another socket) is the only text the watcher sees.
    let mut good = Raw::connect(&server, "mask").await;
    good.send(&frame(
        0x2,
        true,
        &update_message(text_update("masked")),
        true,
    ))
    .await;
    watcher.wait_text("masked").await;
}
