//! WebSocket framing (RFC 6455) over the upgraded connection: our reader
//! and writer on top of tungstenite's frame-header codec, instead of
//! tokio-tungstenite's stream.
//!
//! Why: tungstenite keeps a read buffer for each connection's whole life
//! (`read_buffer_size`), and each socket read takes at most that much, so
//! a small buffer means a syscall per few bytes of a large frame while a
//! 2 KiB one was a third of an idle connection's memory. Here an idle
//! connection holds no buffer at all:
//!
//! - [`Reader`] reads frame headers into a 16-byte array inline in the
//!   connection's task, checks the announced length against
//!   `--max-message-bytes` (frame and reassembled message) *before* reading
//!   the payload, then reads the payload straight into a buffer of exactly
//!   that size, grown (zero-filled) at most [`CHUNK`] at a time as bytes
//!   arrive, so a header promising a big frame commits no memory by itself.
//! - What one socket read brings past the current frame (a client
//!   sending many small frames) is kept only until it is used
//!   ([`ReadAhead`]), so a small frame costs no read of its own.
//! - [`Writer`] copies outgoing frames into a buffer that exists only while
//!   a write is under way; what a cancelled write left unwritten stays
//!   queued, so the stream stays well-formed (a close frame follows it).
//!
//! Rules enforced on client frames (RFC 6455 §5): every frame is masked;
//! RSV bits are 0 (no extension is negotiated); reserved opcodes,
//! fragmented or over-125-byte control frames, a continuation without a
//! message or a new message inside a fragmented one are protocol errors.
//! Control frames may arrive between the fragments of a message. A text
//! message is reported at its first frame, unread (the server closes 1003).

use std::future::poll_fn;
use std::io::{self, Cursor};
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};

/// The upgraded HTTP connection a WebSocket runs on.
pub(crate) type Io = TokioIo<Upgraded>;

/// One WebSocket connection's transport, shared by its reader and writer.
///
/// Both run as futures of one task and take the lock only inside a poll,
/// never across an `.await`, so it is never contended; it exists so that
/// the two futures can each hold a reference (the task stays `Send`).
pub(crate) struct Socket<S = Io>(Mutex<S>);

impl<S> std::fmt::Debug for Socket<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Socket")
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Socket<S> {
    /// Wraps an upgraded connection.
    pub(crate) fn new(io: S) -> Self {
        Socket(Mutex::new(io))
    }

    fn io(&self) -> MutexGuard<'_, S> {
        // Nothing panics while holding the lock; a poisoned one is still usable.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads into `buf`; `Ok(0)` at the end of the stream.
    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut read = ReadBuf::new(buf);
        ready!(Pin::new(&mut *self.io()).poll_read(cx, &mut read))?;
        Poll::Ready(Ok(read.filled().len()))
    }

    fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.io()).poll_write(cx, buf)
    }

    fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io()).poll_flush(cx)
    }

    /// Writes `frame` (a whole frame, see [`binary_frame`]) if the socket
    /// takes it without waiting, and returns what it did not take: `None`
    /// when all of it went out, else the frame's unwritten bytes (all of
    /// them if the socket was full or failed), which the connection's
    /// writer must send before anything else.
    ///
    /// For the room's write-through (see `link.rs`): it writes to an idle
    /// connection's socket itself instead of waking the connection's task
    /// to do it. Never waits; the socket's write readiness is left for the
    /// writer to register (it polls the socket itself before waiting).
    pub(crate) fn write_now(&self, frame: &[u8]) -> Option<Bytes> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut at = 0;
        let mut io = self.io();
        while at < frame.len() {
            match Pin::new(&mut *io).poll_write(&mut cx, &frame[at..]) {
                Poll::Ready(Ok(n)) if n > 0 => at += n,
                // Full, failed or closed: the writer finds out for itself.
                _ => break,
            }
        }
        let flushed = at == frame.len()
            && matches!(Pin::new(&mut *io).poll_flush(&mut cx), Poll::Ready(Ok(())));
        if flushed {
            return None;
        }
        Some(Bytes::copy_from_slice(&frame[at..]))
    }
}

/// Appends one frame to `out` (server frames are not masked).
fn format_frame(out: &mut Vec<u8>, opcode: OpCode, is_final: bool, payload: &[u8]) {
    let header = FrameHeader {
        is_final,
        opcode,
        ..FrameHeader::default()
    };
    out.reserve(header.len(payload.len() as u64) + payload.len());
    // Writing into a Vec cannot fail.
    let _ = header.format(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// `message` as one whole binary frame, as the server sends it.
pub(crate) fn binary_frame(message: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    format_frame(&mut frame, OpCode::Data(Data::Binary), true, message);
    frame
}

/// A whole message or a control frame from the client.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// A binary message (its fragments reassembled).
    Binary(Bytes),
    /// The first frame of a text message (not read further).
    Text,
    /// A ping, with its payload (to be echoed in the pong).
    Ping(Bytes),
    /// A pong, with its payload's length.
    Pong(usize),
    /// A close frame: the client ends the connection.
    Close,
}

/// Why reading from a client failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// A frame, or a message's fragments together, over the size limit (1009).
    #[error("frame or message of {size} bytes is over the limit of {max}")]
    TooLarge {
        /// The announced size (of the message so far plus this frame).
        size: u64,
        /// `--max-message-bytes`.
        max: usize,
    },
    /// The client broke RFC 6455's framing rules.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// The transport failed, or ended inside a frame.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Header bytes read ahead: the longest header (14 bytes) and then some
/// (a frame's first payload bytes, or the next frame's header).
const HEAD: usize = 16;

/// Most of a payload zero-filled ahead of the bytes that arrived.
pub(crate) const CHUNK: usize = 64 * 1024;

/// Longest payload of a control frame (RFC 6455 §5.5).
const MAX_CONTROL: u64 = 125;

/// Most bytes one socket read takes while the reader needs fewer (a frame
/// header, a small payload): read into the stack of the poll, and what is
/// past the current need is kept in [`ReadAhead`] until it is used.
const READ_AHEAD: usize = 8 * 1024;

/// Bytes read from the socket past what the reader needed at the time
/// (the next frames of a client that sends many small ones): kept on the
/// heap, and only until they are used, so an idle connection holds none.
///
/// Without it a small frame cost two reads (its header, then its payload):
/// 5-7 % of the server's CPU per update in the throughput stream.
#[derive(Default)]
struct ReadAhead {
    /// The bytes, from `at` on not yet used (empty: no allocation).
    bytes: Vec<u8>,
    at: usize,
}

impl ReadAhead {
    /// Fills `dst` with buffered bytes, else from the socket (`Ok(0)`: the
    /// stream ended). A small `dst` is filled from one read of up to
    /// [`READ_AHEAD`] bytes, and the rest of that read is kept.
    fn poll_read<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        socket: &Socket<S>,
        dst: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if self.at < self.bytes.len() {
            let n = dst.len().min(self.bytes.len() - self.at);
            dst[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
            self.at += n;
            if self.at == self.bytes.len() {
                *self = ReadAhead::default();
            }
            return Poll::Ready(Ok(n));
        }
        if dst.len() >= READ_AHEAD {
            return socket.poll_read(cx, dst);
        }
        let mut stack = [0u8; READ_AHEAD];
        let read = ready!(socket.poll_read(cx, &mut stack))?;
        let n = read.min(dst.len());
        dst[..n].copy_from_slice(&stack[..n]);
        if read > n {
            self.bytes = stack[n..read].to_vec();
            self.at = 0;
        }
        Poll::Ready(Ok(n))
    }
}

/// Reads a client's frames (see the module docs).
///
/// A state machine polled by the connection's task rather than an `async
/// fn`: its whole state is this struct (~100 bytes), which the task holds
/// inline; nested futures would hold several copies.
pub(crate) struct Reader {
    /// `--max-message-bytes`: the largest frame and reassembled message.
    max: usize,
    /// Bytes read but not yet consumed (the start of the next frame).
    head: [u8; HEAD],
    filled: u8,
    /// The frame whose payload is being read (boxed: idle, the task holds
    /// one pointer for it).
    frame: Option<Box<Payload>>,
    /// The fragments of a binary message so far.
    partial: Option<Vec<u8>>,
    /// Bytes read past the current frame, not yet used.
    ahead: ReadAhead,
}

/// A frame whose header has been read and accepted.
struct Payload {
    opcode: OpCode,
    is_final: bool,
    mask: [u8; 4],
    /// The payload's length (within the limit).
    len: usize,
    /// What has arrived of it.
    bytes: Vec<u8>,
}

impl Reader {
    /// A reader admitting frames and messages up to `max` bytes.
    pub(crate) fn new(max: usize) -> Self {
        Reader {
            max,
            head: [0; HEAD],
            filled: 0,
            frame: None,
            partial: None,
            ahead: ReadAhead::default(),
        }
    }

    /// The next message or control frame; `Ok(None)` when the client closed
    /// the stream between frames.
    pub(crate) async fn read<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        socket: &Socket<S>,
    ) -> Result<Option<Incoming>, ReadError> {
        poll_fn(|cx| self.poll_read(cx, socket)).await
    }

    /// Polls for the next message or control frame (see [`Reader::read`]).
    pub(crate) fn poll_read<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        socket: &Socket<S>,
    ) -> Poll<Result<Option<Incoming>, ReadError>> {
        loop {
            let Some(frame) = &mut self.frame else {
                let filled = usize::from(self.filled);
                let mut cursor = Cursor::new(&self.head[..filled]);
                let parsed = FrameHeader::parse(&mut cursor)
                    .map_err(|_| ReadError::Protocol("malformed frame header"))?;
                let Some((header, len)) = parsed else {
                    // Incomplete: fewer than 14 bytes are buffered, so there is room.
                    let n = ready!(self.ahead.poll_read(cx, socket, &mut self.head[filled..]))?;
                    if n == 0 {
                        if filled == 0 {
                            return Poll::Ready(Ok(None));
                        }
                        return Poll::Ready(Err(eof()));
                    }
                    self.filled += n as u8;
                    continue;
                };
                self.consume(cursor.position() as usize);
                if let Some(incoming) = self.accept(header, len)? {
                    return Poll::Ready(Ok(Some(incoming)));
                }
                continue;
            };
            while frame.bytes.len() < frame.len {
                let at = frame.bytes.len();
                frame.bytes.resize(frame.len.min(at + CHUNK), 0);
                let read = self.ahead.poll_read(cx, socket, &mut frame.bytes[at..]);
                let n = match read {
                    Poll::Ready(Ok(n)) => n,
                    other => {
                        frame.bytes.truncate(at);
                        ready!(other)?;
                        0
                    }
                };
                if n == 0 {
                    return Poll::Ready(Err(eof()));
                }
                frame.bytes.truncate(at + n);
            }
            let Some(frame) = self.frame.take() else {
                continue;
            };
            let Payload {
                opcode,
                is_final,
                mask,
                mut bytes,
                ..
            } = *frame;
            unmask(&mut bytes, mask);
            let incoming = match opcode {
                OpCode::Control(Control::Ping) => Incoming::Ping(bytes.into()),
                OpCode::Control(Control::Pong) => Incoming::Pong(bytes.len()),
                OpCode::Control(_) => Incoming::Close,
                OpCode::Data(_) => match (self.partial.take(), is_final) {
                    (None, true) => Incoming::Binary(bytes.into()),
                    (None, false) => {
                        self.partial = Some(bytes);
                        continue;
                    }
                    (Some(mut partial), fin) => {
                        partial.extend_from_slice(&bytes);
                        if !fin {
                            self.partial = Some(partial);
                            continue;
                        }
                        Incoming::Binary(partial.into())
                    }
                },
            };
            return Poll::Ready(Ok(Some(incoming)));
        }
    }

    /// Checks a frame header against the rules and the limit; starts
    /// reading its payload, or answers at once (a text message).
    fn accept(&mut self, header: FrameHeader, len: u64) -> Result<Option<Incoming>, ReadError> {
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Err(ReadError::Protocol("reserved bits set"));
        }
        let Some(mask) = header.mask else {
            return Err(ReadError::Protocol("unmasked client frame"));
        };
        match header.opcode {
            OpCode::Control(Control::Reserved(_)) => {
                return Err(ReadError::Protocol("reserved control opcode"));
            }
            OpCode::Control(_) => {
                if !header.is_final || len > MAX_CONTROL {
                    return Err(ReadError::Protocol("fragmented or oversized control frame"));
                }
            }
            OpCode::Data(data) => {
                let so_far = match (data, &self.partial) {
                    (Data::Reserved(_), _) => {
                        return Err(ReadError::Protocol("reserved data opcode"));
                    }
                    (Data::Continue, Some(partial)) => partial.len(),
                    (Data::Continue, None) => {
                        return Err(ReadError::Protocol("continuation without a message"));
                    }
                    (_, Some(_)) => {
                        return Err(ReadError::Protocol("new message inside a fragmented one"));
                    }
                    (Data::Text | Data::Binary, None) => 0,
                };
                let size = (so_far as u64).saturating_add(len);
                if size > self.max as u64 {
                    return Err(ReadError::TooLarge {
                        size,
                        max: self.max,
                    });
                }
                if data == Data::Text {
                    return Ok(Some(Incoming::Text));
                }
            }
        }
        let len = len as usize; // within the limit (or 125), so it fits
        let mut bytes = Vec::with_capacity(len);
        let ahead = len.min(usize::from(self.filled));
        bytes.extend_from_slice(&self.head[..ahead]);
        self.consume(ahead);
        self.frame = Some(Box::new(Payload {
            opcode: header.opcode,
            is_final: header.is_final,
            mask,
            len,
            bytes,
        }));
        Ok(None)
    }

    /// Drops the first `n` buffered bytes.
    fn consume(&mut self, n: usize) {
        let filled = usize::from(self.filled);
        self.head.copy_within(n..filled, 0);
        self.filled = (filled - n) as u8;
    }
}

fn eof() -> ReadError {
    io::Error::from(io::ErrorKind::UnexpectedEof).into()
}

/// Unmasks (or masks) a payload: XOR with the 4-byte key, cycled.
pub(crate) fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let mut words = payload.chunks_exact_mut(4);
    for word in &mut words {
        for (byte, key) in word.iter_mut().zip(mask) {
            *byte ^= key;
        }
    }
    for (byte, key) in words.into_remainder().iter_mut().zip(mask) {
        *byte ^= key;
    }
}

/// Frames on their way to the client (server frames are not masked).
pub(crate) struct Writer {
    /// Formatted frames; empty (unallocated) when nothing is being written.
    out: Vec<u8>,
    /// How much of `out` the socket has taken.
    at: usize,
    /// Bytes worth writing at once (`--socket-buffer-bytes`).
    coalesce: usize,
}

impl Writer {
    /// A writer that hands frames to the socket once `coalesce` bytes are
    /// queued (and at every [`Writer::flush`]).
    pub(crate) fn new(coalesce: usize) -> Self {
        Writer {
            out: Vec::new(),
            at: 0,
            coalesce,
        }
    }

    /// Queues one frame.
    pub(crate) fn frame(&mut self, opcode: OpCode, is_final: bool, payload: &[u8]) {
        format_frame(&mut self.out, opcode, is_final, payload);
    }

    /// Queues bytes that are already framed (what [`Socket::write_now`]
    /// left unwritten).
    pub(crate) fn raw(&mut self, framed: &[u8]) {
        self.out.extend_from_slice(framed);
    }

    /// Queues a ping with no payload.
    pub(crate) fn ping(&mut self) {
        self.frame(OpCode::Control(Control::Ping), true, &[]);
    }

    /// Queues the pong answering a ping with `payload`.
    pub(crate) fn pong(&mut self, payload: &[u8]) {
        self.frame(OpCode::Control(Control::Pong), true, payload);
    }

    /// Queues a close frame with `code` and `reason` (cut to fit a control frame).
    pub(crate) fn close(&mut self, code: u16, reason: &str) {
        let mut cut = reason.len().min(MAX_CONTROL as usize - 2);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut payload = Vec::with_capacity(2 + cut);
        payload.extend_from_slice(&code.to_be_bytes());
        payload.extend_from_slice(&reason.as_bytes()[..cut]);
        self.frame(OpCode::Control(Control::Close), true, &payload);
    }

    /// Whether enough is queued to be worth writing now.
    pub(crate) fn wants_flush(&self) -> bool {
        self.out.len() - self.at >= self.coalesce
    }

    /// Writes everything queued and flushes the socket. Cancel-safe: what
    /// is not written yet stays queued for the next flush.
    pub(crate) async fn flush<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        socket: &Socket<S>,
    ) -> io::Result<()> {
        poll_fn(|cx| self.poll_flush(cx, socket)).await
    }

    fn poll_flush<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        socket: &Socket<S>,
    ) -> Poll<io::Result<()>> {
        while self.at < self.out.len() {
            let n = ready!(socket.poll_write(cx, &self.out[self.at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.at += n;
        }
        // Hold memory only while writing.
        self.out = Vec::new();
        self.at = 0;
        socket.poll_flush(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// A client frame: masked with `KEY` unless `masked` is false.
    fn client_frame(opcode: u8, fin: bool, payload: &[u8], masked: bool) -> Vec<u8> {
        let mut frame = vec![opcode | if fin { 0x80 } else { 0 }];
        let bit = if masked { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => frame.push(bit | n as u8),
            n if n < 65536 => {
                frame.push(bit | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(bit | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mut body = payload.to_vec();
        if masked {
            frame.extend_from_slice(&KEY);
            unmask(&mut body, KEY);
        }
        frame.extend_from_slice(&body);
        frame
    }

    fn pair() -> (Socket<DuplexStream>, DuplexStream) {
        let (server, client) = tokio::io::duplex(1 << 20);
        (Socket::new(server), client)
    }

    async fn read_all(bytes: &[u8], max: usize) -> Vec<Result<Option<Incoming>, String>> {
        let (socket, mut client) = pair();
        client.write_all(bytes).await.unwrap();
        drop(client);
        let mut reader = Reader::new(max);
        let mut out = Vec::new();
        loop {
            let next = reader.read(&socket).await.map_err(|e| e.to_string());
            let done = !matches!(next, Ok(Some(_)));
            out.push(next);
            if done {
                return out;
            }
        }
    }

    /// A stream that counts how often it is read.
    struct Counted {
        inner: DuplexStream,
        reads: usize,
    }

    impl AsyncRead for Counted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            self.reads += 1;
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Counted {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.inner).poll_write(cx, buf)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    #[tokio::test]
    async fn small_frames_that_arrive_together_cost_one_read_and_leave_nothing_buffered() {
        let (server, mut client) = tokio::io::duplex(1 << 20);
        let socket = Socket::new(Counted {
            inner: server,
            reads: 0,
        });
        let mut wire = Vec::new();
        for i in 0..100u8 {
            wire.extend(client_frame(0x2, true, &[i; 20], true));
        }
        client.write_all(&wire).await.unwrap();
        let mut reader = Reader::new(1 << 20);
        for i in 0..100u8 {
            let next = reader.read(&socket).await.unwrap();
            assert_eq!(next, Some(Incoming::Binary(Bytes::from(vec![i; 20]))));
        }
        // 2,800 bytes: one read took them all (two per frame without read-ahead).
        assert_eq!(socket.io().reads, 1);
        assert_eq!(
            reader.ahead.bytes.capacity(),
            0,
            "an idle reader holds no buffer"
        );
    }

    #[tokio::test]
    async fn reads_messages_split_anywhere_and_reassembles_fragments() {
        let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let mut wire = client_frame(0x2, true, b"hello", true);
        wire.extend(client_frame(0x2, false, b"frag", true));
        wire.extend(client_frame(0x9, true, b"p", true)); // a ping between fragments
        wire.extend(client_frame(0x0, false, b"men", true));
        wire.extend(client_frame(0x0, true, b"ted", true));
        wire.extend(client_frame(0x2, true, &big, true));
        wire.extend(client_frame(0x2, true, b"", true));
        wire.extend(client_frame(0xA, true, b"xyz", true));
        wire.extend(client_frame(0x8, true, &[0x03, 0xe8], true));
        let expected = vec![
            Ok(Some(Incoming::Binary(Bytes::from_static(b"hello")))),
            Ok(Some(Incoming::Ping(Bytes::from_static(b"p")))),
            Ok(Some(Incoming::Binary(Bytes::from_static(b"fragmented")))),
            Ok(Some(Incoming::Binary(Bytes::from(big)))),
            Ok(Some(Incoming::Binary(Bytes::new()))),
            Ok(Some(Incoming::Pong(3))),
            Ok(Some(Incoming::Close)),
            Ok(None),
        ];
        // All at once, then byte by byte (every split point of every header).
        assert_eq!(read_all(&wire, 1 << 20).await, expected);
        let (socket, mut client) = pair();
        let feed = tokio::spawn(async move {
            for byte in wire {
                client.write_all(&[byte]).await.unwrap();
            }
        });
        let mut reader = Reader::new(1 << 20);
        for want in expected {
            assert_eq!(reader.read(&socket).await.map_err(|e| e.to_string()), want);
        }
        feed.await.unwrap();
    }

    #[tokio::test]
    async fn frames_and_messages_over_the_limit_are_too_large_before_their_payload() {
        // The header alone is enough: no payload follows it.
        let mut header = client_frame(0x2, true, &[0; 101], true);
        header.truncate(2 + 4);
        let read = read_all(&header, 100).await;
        assert!(
            matches!(read[..], [Err(ref e)] if e.contains("over the limit")),
            "{read:?}"
        );
        let mut wire = client_frame(0x2, false, &[1; 60], true);
        wire.extend(client_frame(0x0, true, &[2; 41], true));
        let read = read_all(&wire, 100).await;
        assert!(
            matches!(read[..], [Err(ref e)] if e.contains("101 bytes")),
            "{read:?}"
        );
        // Exactly at the limit is fine.
        let read = read_all(&client_frame(0x2, true, &[7; 100], true), 100).await;
        assert_eq!(
            read[0],
            Ok(Some(Incoming::Binary(Bytes::from(vec![7; 100]))))
        );
        // A 64-bit length with the top bit set is refused, not allocated.
        let mut huge = vec![0x82, 0xff];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        huge.extend_from_slice(&KEY);
        let read = read_all(&huge, 100).await;
        assert!(read[0].is_err(), "{read:?}");
    }

    #[tokio::test]
    async fn framing_rule_violations_are_protocol_errors() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("unmasked", client_frame(0x2, true, b"x", false)),
            ("reserved bits", {
                let mut f = client_frame(0x2, true, b"x", true);
                f[0] |= 0x40;
                f
            }),
            ("reserved data opcode", client_frame(0x3, true, b"x", true)),
            (
                "reserved control opcode",
                client_frame(0xB, true, b"", true),
            ),
            ("fragmented control", client_frame(0x9, false, b"", true)),
            (
                "oversized control",
                client_frame(0x9, true, &[0; 126], true),
            ),
            ("continuation first", client_frame(0x0, true, b"x", true)),
            ("message inside a message", {
                let mut f = client_frame(0x2, false, b"x", true);
                f.extend(client_frame(0x2, true, b"y", true));
                f
            }),
        ];
        for (what, wire) in cases {
            let read = read_all(&wire, 1000).await;
            let last = read.last().unwrap();
            assert!(
                matches!(last, Err(e) if e.starts_with("protocol error")),
                "{what}: {read:?}"
            );
        }
    }

    #[tokio::test]
    async fn text_is_reported_at_its_first_frame_and_a_cut_stream_is_an_error() {
        let read = read_all(&client_frame(0x1, false, b"hi", true), 1000).await;
        assert_eq!(read[0], Ok(Some(Incoming::Text)));
        let mut cut = client_frame(0x2, true, b"hello", true);
        cut.truncate(cut.len() - 1);
        let read = read_all(&cut, 1000).await;
        assert!(
            matches!(read[..], [Err(ref e)] if e.contains("end of file")),
            "{read:?}"
        );
    }

    #[tokio::test]
    async fn writer_frames_are_unmasked_and_survive_a_cancelled_flush() {
        // A pipe smaller than what is queued: the first flush cannot finish.
        let (server, mut client) = tokio::io::duplex(16);
        let socket = Socket::new(server);
        let mut writer = Writer::new(1 << 20);
        writer.frame(OpCode::Data(Data::Binary), true, &[5; 300]);
        let cancelled =
            tokio::time::timeout(std::time::Duration::from_millis(20), writer.flush(&socket)).await;
        assert!(cancelled.is_err(), "the flush should have been blocked");
        writer.ping();
        writer.close(4008, "slow");
        let flushed = tokio::spawn(async move {
            writer.flush(&socket).await.unwrap();
            assert!(
                writer.out.capacity() == 0,
                "the buffer is freed after a write"
            );
        });
        let mut got = Vec::new();
        let mut expected = vec![0x82, 126, 0x01, 0x2c];
        expected.extend_from_slice(&[5; 300]);
        expected.extend_from_slice(&[0x89, 0x00, 0x88, 0x06, 0x0f, 0xa8]);
        expected.extend_from_slice(b"slow");
        while got.len() < expected.len() {
            let mut buf = [0; 64];
            let n = client.read(&mut buf).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        flushed.await.unwrap();
        assert_eq!(got, expected);
    }
}
