//! A fan-out *floor*: the least a server can do for the fan-out workload,
//! so that a server's latency can be read against what the generator and
//! the kernel cost by themselves on the same machine.
//!
//! `tandem-bench relay --listen ADDR` accepts y-websocket connections
//! (`ws://ADDR/<room>`), answers every SyncStep1 with an empty SyncStep2,
//! and writes every update and awareness frame it receives, unchanged, to
//! the other connections of the same room: framed once, then one
//! non-blocking `write` per peer, on one thread, with no queue, no task
//! wake-up per peer, no CRDT, no disk and no limits. Anything else a client
//! sends is dropped. A server that keeps anything, checks anything or is
//! durable does more than this, so no server can be faster than this floor
//! by a margin the generator can see; the floor's p99 at a point is the
//! part of every server's p99 that the generator, the loopback sockets and
//! the scheduler contribute.
//!
//! It is a measuring instrument, not a server: one message per frame (the
//! y-websocket framing), a peer whose socket does not take a whole frame at
//! once is dropped (at the fan-out workload's rates a loopback socket never
//! fills; a drop shows as missing deliveries), pings are not answered.

use std::cell::RefCell;
use std::collections::HashMap;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

/// SyncStep2 carrying an empty update (`[sync, step2, len 2, 0 structs, 0 deletes]`).
const EMPTY_STEP2: [u8; 5] = [0, 1, 2, 0, 0];

/// The connections of one room: an id and the write half of each socket.
type Room = Vec<(u64, Rc<OwnedWriteHalf>)>;

/// Every room by URL path.
type Rooms = Rc<RefCell<HashMap<String, Room>>>;

/// Accepts connections on `listener` until the process ends. Must run
/// inside a [`tokio::task::LocalSet`] (the rooms are shared on one thread).
pub async fn serve(listener: TcpListener) -> std::io::Result<()> {
    let rooms: Rooms = Rc::default();
    let mut next_id = 0u64;
    loop {
        let (tcp, _) = listener.accept().await?;
        next_id += 1;
        tokio::task::spawn_local(connection(tcp, next_id, rooms.clone()));
    }
}

/// What the relay does with one frame a client sent.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    /// Answer the sender with an empty SyncStep2.
    AnswerStep1,
    /// Write the frame to the room's other connections.
    Forward,
    /// Nothing (SyncStep2, auth, queries, empty frames).
    Drop,
}

/// Classifies a y-protocols message by its first bytes (every type and
/// subtype the relay acts on is a one-byte varint).
fn action(message: &[u8]) -> Action {
    match message {
        [0, 0, ..] => Action::AnswerStep1,
        [0, 2, ..] | [1, ..] => Action::Forward,
        _ => Action::Drop,
    }
}

/// `payload` as one unmasked binary WebSocket frame (server to client),
/// the header formatted by tungstenite.
fn frame(payload: &[u8]) -> Vec<u8> {
    let header = FrameHeader {
        opcode: OpCode::Data(Data::Binary),
        ..FrameHeader::default()
    };
    let len = payload.len() as u64;
    let mut out = Vec::with_capacity(header.len(len) + payload.len());
    header
        .format(len, &mut out)
        .expect("writing to a Vec cannot fail");
    out.extend_from_slice(payload);
    out
}

/// Whether the connection's request is `GET /healthz` (how the bench sees
/// that a server it started serves), read without consuming it. The
/// request line comes in the first segment; a check split otherwise fails
/// its handshake and is retried by the bench.
async fn is_health_check(tcp: &tokio::net::TcpStream) -> bool {
    let mut head = [0u8; 16];
    match tcp.peek(&mut head).await {
        Ok(n) => head[..n].starts_with(b"GET /healthz "),
        Err(_) => false,
    }
}

/// Writes all of `bytes` to `socket` now, or says it could not.
fn write_now(socket: &OwnedWriteHalf, bytes: &[u8]) -> bool {
    matches!(socket.try_write(bytes), Ok(n) if n == bytes.len())
}

async fn connection(tcp: tokio::net::TcpStream, id: u64, rooms: Rooms) {
    let _ = tcp.set_nodelay(true);
    if is_health_check(&tcp).await {
        // Read the request first: closing a socket with unread bytes resets it.
        let _ = tcp.try_read(&mut [0u8; 4096]);
        let _ =
            tcp.try_write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        return;
    }
    let mut path = String::new();
    // The error type is tungstenite's `Callback` signature, not ours.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| {
        path = req.uri().path().to_string();
        Ok::<_, ErrorResponse>(resp)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
        return;
    };
    let (read, write) = ws.into_inner().into_split();
    let write = Rc::new(write);
    // tungstenite zeroes its whole read buffer before every read (128 KiB
    // by default): that was 12 % of the floor's CPU at 100 × 10. Frames
    // here are small; 4 KiB is what the generator reads with too.
    let config = WebSocketConfig::default().read_buffer_size(4 * 1024);
    let mut ws = WebSocketStream::from_raw_socket(ReadOnly(read), Role::Server, Some(config)).await;
    rooms
        .borrow_mut()
        .entry(path.clone())
        .or_default()
        .push((id, write.clone()));
    while let Some(Ok(msg)) = ws.next().await {
        let Frame::Binary(message) = msg else {
            continue;
        };
        match action(&message) {
            Action::AnswerStep1 => {
                if !write_now(&write, &frame(&EMPTY_STEP2)) {
                    break;
                }
            }
            Action::Forward => {
                let framed = frame(&message);
                let mut dropped = Vec::new();
                if let Some(room) = rooms.borrow().get(&path) {
                    for (peer, socket) in room {
                        if *peer != id && !write_now(socket, &framed) {
                            dropped.push(*peer);
                        }
                    }
                }
                for peer in dropped {
                    eprintln!("relay: connection {peer} did not take a frame at once; dropped");
                    leave(&rooms, &path, peer);
                }
            }
            Action::Drop => {}
        }
    }
    leave(&rooms, &path, id);
}

/// Removes connection `id` from room `path` (its socket closes when the
/// last handle to its write half goes).
fn leave(rooms: &Rooms, path: &str, id: u64) {
    let mut rooms = rooms.borrow_mut();
    if let Some(room) = rooms.get_mut(path) {
        room.retain(|(peer, _)| *peer != id);
        if room.is_empty() {
            rooms.remove(path);
        }
    }
}

/// The read half of a socket as the WebSocket reader's stream: what the
/// reader would write (pongs, a close reply) is discarded, since the relay
/// writes to the socket only through its write half.
struct ReadOnly(OwnedReadHalf);

impl AsyncRead for ReadOnly {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ReadOnly {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step1_is_answered_updates_and_awareness_are_forwarded_the_rest_dropped() {
        assert_eq!(action(&[0, 0, 1, 0]), Action::AnswerStep1);
        assert_eq!(action(&[0, 2, 2, 0, 0]), Action::Forward);
        assert_eq!(action(&[1, 5, 1, 2, 3]), Action::Forward);
        assert_eq!(action(&[0, 1, 2, 0, 0]), Action::Drop);
        assert_eq!(action(&[2, 0]), Action::Drop);
        assert_eq!(action(&[]), Action::Drop);
    }

    #[test]
    fn frames_carry_their_length_in_the_short_medium_and_long_forms() {
        assert_eq!(frame(&[7; 3]), [0x82, 3, 7, 7, 7]);
        let medium = frame(&[0; 300]);
        assert_eq!(&medium[..4], &[0x82, 126, 1, 44]);
        assert_eq!(medium.len(), 304);
        let long = frame(&vec![0; 70_000]);
        assert_eq!(&long[..2], &[0x82, 127]);
        assert_eq!(u64::from_be_bytes(long[2..10].try_into().unwrap()), 70_000);
    }

    #[test]
    fn the_empty_step2_decodes_as_a_step2() {
        let got = crate::protocol::decode_frame(&EMPTY_STEP2).unwrap();
        assert!(matches!(
            got.as_slice(),
            [crate::protocol::Incoming::SyncStep2(_)]
        ));
    }
}
