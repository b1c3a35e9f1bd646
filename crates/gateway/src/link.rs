//! The small shared types every other module may use (the leaf of the
//! crate's module graph): connection ids, the link a connection hands its
//! room, the [`Line`] both sides share, and the root text's name.
//!
//! # Why a `Line` instead of channels
//!
//! A connection and its room used to talk over three tokio mpsc channels
//! (inbound frames, outbound frames, close codes) plus an `Arc` of shared
//! health. Each tokio channel allocates its state (~400 bytes, cache-padded)
//! and a first block of 32 slots at creation, so an *idle* connection cost
//! ~3 KiB in empty channels. A `Line` is one allocation (~250 bytes): two
//! queues that hold memory only while frames are in them, the close code,
//! and one waker per side. Nothing in it is held across an `.await`.
//!
//! # Write-through
//!
//! The line also holds the connection's socket. When the room queues a
//! frame for a connection whose writer is idle (parked with nothing to
//! write), the room writes the frame to the socket itself
//! ([`Socket::write_now`]) instead of queueing it and waking the
//! connection's task. Waking that task was most of what a delivered update
//! cost beyond the `send` itself: a task poll, and often a futex wake of
//! the other tokio worker, which then stole the task. Whatever the socket
//! does not take at once (it is full, or failed) goes to the front of the
//! queue, still framed, and the writer is woken to finish it before
//! anything else, so the stream stays well-formed. The writer marks itself
//! busy whenever it has taken something to write (frames, a pong, a
//! ping, the close), so the two never write at the same time; the room
//! writes through only while holding the line's lock.

use std::cell::OnceCell;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::task::AtomicWaker;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::access::Principal;
use crate::close::CloseCode;
use crate::protocol::Inbound;
use crate::wire::{Io, Socket, binary_frame};

/// Name of the root `Y.Text` the web editor edits and `/api/docs/<id>/text` reads and writes.
pub const TEXT_ROOT: &str = "content";

/// Identifies one WebSocket connection for the lifetime of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct PeerId(pub u64);

impl PeerId {
    /// The server itself, as the sender of HTTP edits (no connection has id 0).
    pub(crate) const SERVER: PeerId = PeerId(0);
}

impl std::fmt::Display for PeerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Decoded frames a connection may have waiting for its room before its
/// reader stops reading the socket (backpressure on a flooding peer).
pub(crate) const INBOUND_FRAMES: usize = 64;

/// Largest frame the room writes through to an idle connection's socket
/// itself; a bigger one is queued for the connection's writer, which
/// fragments it (`peer.rs`).
pub(crate) const WRITE_THROUGH_BYTES: usize = 64 * 1024;

/// What a connection hands the room when it joins.
pub(crate) struct PeerLink {
    /// The connection.
    pub id: PeerId,
    /// Closes the connection with a code, bypassing its outbound queue
    /// (the registry keeps a clone for `Rooms::close_peers`).
    pub kill: Kill,
    /// Who the connection acts as (its mode decides whether it may write).
    pub principal: Principal,
    /// The room's end of the connection: its liveness, its outbound queue
    /// and its inbound frames.
    pub line: RoomEnd,
}

/// The room's end of a [`Line`]. Dropping it (the room removed the peer,
/// refused its join, or failed) tells the connection the room let go: with
/// no close code asked for, that means the room failed (1011).
#[derive(Debug)]
pub(crate) struct RoomEnd(Arc<Line>);

impl RoomEnd {
    /// The room's end of `line`.
    pub(crate) fn new(line: Arc<Line>) -> Self {
        RoomEnd(line)
    }

    /// The peer's inbound frames, as a stream for the room to poll.
    pub(crate) fn inbound(&self) -> InboundFrames {
        InboundFrames(self.0.clone())
    }
}

impl std::ops::Deref for RoomEnd {
    type Target = Line;

    fn deref(&self) -> &Line {
        &self.0
    }
}

impl Drop for RoomEnd {
    fn drop(&mut self) {
        self.0.room_let_go();
    }
}

/// Everything one connection and its room share: liveness, the bounded
/// queues in both directions, and the close code (see the module docs).
#[derive(Debug)]
pub(crate) struct Line<S = Io> {
    /// The connection's socket, for the room to write through to (see the
    /// module docs); `None` for the room tests' fake connections.
    socket: Option<Socket<S>>,
    /// When the connection started (the clock of `last_seen_ms`).
    started: Instant,
    /// When the last frame (of any kind, pongs included) arrived, in ms since `started`.
    last_seen_ms: AtomicU64,
    /// Bytes queued for this peer but not yet handed to the socket.
    queued_bytes: AtomicUsize,
    /// Bytes queued for every peer of the server (`--max-queued-bytes`).
    server_queued: Arc<AtomicUsize>,
    /// Most frames the outbound queue holds (`--peer-queue`); more is 4008.
    outbound_cap: usize,
    /// The queues and flags, behind one short-held lock.
    state: Mutex<LineState>,
    /// Wakes the connection's task: a frame or a close code to write, room
    /// in the inbound queue, or the room letting go.
    conn_waker: AtomicWaker,
    /// Wakes the room's task: an inbound frame, or the reader ended.
    room_waker: AtomicWaker,
}

#[derive(Debug, Default)]
struct LineState {
    /// Frames for the socket, in order.
    outbound: VecDeque<Bytes>,
    /// Decoded frames for the room, in order.
    inbound: VecDeque<Vec<Inbound>>,
    /// The code the connection must close with; the first one set wins.
    kill: Option<CloseCode>,
    /// The room dropped its slot for this peer (without a code: it failed).
    room_let_go: bool,
    /// The room dropped its inbound stream: the reader may stop.
    room_stopped_reading: bool,
    /// The reader ended: the room sees `None` after the queued frames.
    reader_ended: bool,
    /// The connection's task ended: nothing more is written.
    conn_ended: bool,
    /// The server's ping sweep asked for a ping (see `Line::ask_ping`).
    ping_due: bool,
    /// The payload of the client's last ping not yet answered (RFC 6455
    /// §5.5.3: only the latest must be answered).
    pong: Option<Box<[u8]>>,
    /// The front of `outbound` is the part of a frame the room wrote
    /// through that the socket did not take: already framed, it goes out
    /// before anything else.
    raw_front: bool,
    /// The writer is parked with nothing to write: the room may write
    /// through (see the module docs).
    writer_idle: bool,
}

/// A message the room sends to one or more peers: framed for the socket
/// at most once, the first time it is written through (a room sends each
/// update to every other peer, so framing per peer was an allocation and a
/// copy per delivery).
pub(crate) struct Outgoing {
    /// The message, as queued for a connection's writer.
    message: Bytes,
    /// The message as one whole frame, once a write-through needed it.
    framed: OnceCell<Vec<u8>>,
}

impl Outgoing {
    /// `message`, not framed yet.
    pub(crate) fn new(message: Bytes) -> Self {
        Outgoing {
            message,
            framed: OnceCell::new(),
        }
    }

    /// The message's length in bytes (unframed).
    pub(crate) fn len(&self) -> usize {
        self.message.len()
    }

    fn framed(&self) -> &[u8] {
        self.framed.get_or_init(|| binary_frame(&self.message))
    }
}

/// Why the room could not queue a frame for a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueueError {
    /// The outbound queue holds `--peer-queue` frames already (4008).
    Full,
    /// The connection has ended.
    Closed,
}

/// What the connection's writer does next, in priority order.
#[derive(Debug)]
pub(crate) enum Next {
    /// Finish the frame the room began writing through (already framed;
    /// it comes before a close, so the close frame follows whole frames).
    Raw(Bytes),
    /// Close with this code (a request from the room or the reader).
    Close(CloseCode),
    /// Answer the client's ping with this payload.
    Pong(Box<[u8]>),
    /// Write this frame.
    Frame(Bytes),
    /// The room let go of this peer without a close code: it failed.
    RoomGone,
    /// The server's ping sweep asks for a ping (see `Line::ask_ping`).
    Ping,
}

impl Line {
    /// Tests: a fake connection's line (no socket, so nothing is written
    /// through); its backlog also counts in `server_queued` (the
    /// server-wide outbound bound), its outbound queue holds at most
    /// `outbound_cap` frames.
    #[cfg(test)]
    pub(crate) fn new(server_queued: Arc<AtomicUsize>, outbound_cap: usize) -> Self {
        Self::build(None, server_queued, outbound_cap)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Line<S> {
    /// A new connection's line, on `socket` (which the room writes
    /// through to while the connection's writer is idle). Its backlog also
    /// counts in `server_queued` (the server-wide outbound bound); its
    /// outbound queue holds at most `outbound_cap` frames.
    pub(crate) fn with_socket(
        socket: Socket<S>,
        server_queued: Arc<AtomicUsize>,
        outbound_cap: usize,
    ) -> Self {
        Self::build(Some(socket), server_queued, outbound_cap)
    }

    fn build(
        socket: Option<Socket<S>>,
        server_queued: Arc<AtomicUsize>,
        outbound_cap: usize,
    ) -> Self {
        Line {
            socket,
            started: Instant::now(),
            last_seen_ms: AtomicU64::new(0),
            queued_bytes: AtomicUsize::new(0),
            server_queued,
            outbound_cap: outbound_cap.max(1),
            state: Mutex::default(),
            conn_waker: AtomicWaker::new(),
            room_waker: AtomicWaker::new(),
        }
    }

    /// The connection's socket (`None` for a test's fake connection).
    pub(crate) fn socket(&self) -> Option<&Socket<S>> {
        self.socket.as_ref()
    }

    fn state(&self) -> MutexGuard<'_, LineState> {
        // Nothing panics while holding the lock; a poisoned one is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that a frame arrived (liveness).
    pub(crate) fn saw_frame(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_seen_ms.store(now, Ordering::Relaxed);
    }

    /// How long the peer has sent nothing (a live peer answers every ping).
    pub(crate) fn silent_for(&self) -> Duration {
        let seen = Duration::from_millis(self.last_seen_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(seen)
    }

    /// Bytes waiting in the outbound queue.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Relaxed)
    }

    /// Bytes queued for every peer of the server.
    pub(crate) fn server_queued(&self) -> usize {
        self.server_queued.load(Ordering::Relaxed)
    }

    /// Room side: sends `frames` to the socket, in order (never waits; a
    /// full queue is the caller's 4008). To an idle connection they are
    /// written through (see the module docs) with ONE write, their frames
    /// one after the other: each write to a socket is a system call and, on
    /// a local network, a packet the kernel sends and receives, which was
    /// most of what a delivery cost (`room.rs`'s `dispatch`). Otherwise
    /// they are queued for the writer. All of them are taken or none
    /// (`Full`: the queue could not take them all).
    pub(crate) fn try_send_all(&self, frames: &[&Outgoing]) -> Result<(), QueueError> {
        let total: usize = frames.iter().map(|f| f.len()).sum();
        let mut len = total;
        {
            let mut state = self.state();
            if state.conn_ended {
                return Err(QueueError::Closed);
            }
            if state.outbound.len() + frames.len() > self.outbound_cap {
                return Err(QueueError::Full);
            }
            match &self.socket {
                Some(socket)
                    if state.writer_idle
                        && state.outbound.is_empty()
                        && state.kill.is_none()
                        && state.pong.is_none()
                        && !state.ping_due
                        && total <= WRITE_THROUGH_BYTES =>
                {
                    // Under the lock: the writer cannot start meanwhile.
                    let rest = match frames {
                        [one] => socket.write_now(one.framed()),
                        _ => {
                            let mut all = Vec::with_capacity(total + 4 * frames.len());
                            frames
                                .iter()
                                .for_each(|f| all.extend_from_slice(f.framed()));
                            socket.write_now(&all)
                        }
                    };
                    let Some(rest) = rest else {
                        return Ok(());
                    };
                    len = rest.len();
                    state.outbound.push_back(rest);
                    state.raw_front = true;
                    state.writer_idle = false;
                }
                _ => state
                    .outbound
                    .extend(frames.iter().map(|f| f.message.clone())),
            }
        }
        self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        self.server_queued.fetch_add(len, Ordering::Relaxed);
        self.conn_waker.wake();
        Ok(())
    }

    /// Either side: asks the connection to close with `code`, ahead of any
    /// queued frame. The first code wins. `Err` if the connection has ended.
    pub(crate) fn kill(&self, code: CloseCode) -> Result<(), QueueError> {
        {
            let mut state = self.state();
            if state.conn_ended {
                return Err(QueueError::Closed);
            }
            state.kill.get_or_insert(code);
        }
        self.conn_waker.wake();
        Ok(())
    }

    /// Room side: the room dropped its slot for this peer.
    pub(crate) fn room_let_go(&self) {
        self.state().room_let_go = true;
        self.conn_waker.wake();
    }

    /// Room side: the next inbound frame, `None` once the reader ended and
    /// every frame it queued was taken.
    pub(crate) fn poll_inbound(&self, cx: &mut Context<'_>) -> Poll<Option<Vec<Inbound>>> {
        let mut registered = false;
        loop {
            {
                let mut state = self.state();
                if let Some(frame) = state.inbound.pop_front() {
                    let was_full = state.inbound.len() + 1 >= INBOUND_FRAMES;
                    if state.inbound.is_empty() {
                        state.inbound = VecDeque::new(); // hold memory only while in use
                    }
                    drop(state);
                    if was_full {
                        self.conn_waker.wake();
                    }
                    return Poll::Ready(Some(frame));
                }
                if state.reader_ended {
                    return Poll::Ready(None);
                }
            }
            if registered {
                return Poll::Pending;
            }
            // Register, then look again: a frame queued in between is not missed.
            self.room_waker.register(cx.waker());
            registered = true;
        }
    }

    /// Room side: the room will not read this peer's frames any more.
    pub(crate) fn room_stopped_reading(&self) {
        self.state().room_stopped_reading = true;
        self.conn_waker.wake();
    }

    /// Connection side: queues a decoded frame for the room, once the queue
    /// has room ([`INBOUND_FRAMES`]). `Err` if the room stopped reading.
    pub(crate) fn poll_send_inbound(
        &self,
        cx: &mut Context<'_>,
        frame: &mut Option<Vec<Inbound>>,
    ) -> Poll<Result<(), QueueError>> {
        let mut registered = false;
        loop {
            {
                let mut state = self.state();
                if state.room_stopped_reading {
                    return Poll::Ready(Err(QueueError::Closed));
                }
                if state.inbound.len() < INBOUND_FRAMES {
                    if let Some(frame) = frame.take() {
                        state.inbound.push_back(frame);
                    }
                    drop(state);
                    self.room_waker.wake();
                    return Poll::Ready(Ok(()));
                }
            }
            if registered {
                return Poll::Pending;
            }
            self.conn_waker.register(cx.waker());
            registered = true;
        }
    }

    /// Connection side: waits until `frame` is queued for the room.
    pub(crate) async fn send_inbound(&self, frame: Vec<Inbound>) -> Result<(), QueueError> {
        let mut frame = Some(frame);
        std::future::poll_fn(|cx| self.poll_send_inbound(cx, &mut frame)).await
    }

    /// Connection side: the reader ended; the room sees it after the frames
    /// queued before (and removes the peer).
    pub(crate) fn reader_ended(&self) {
        self.state().reader_ended = true;
        self.room_waker.wake();
    }

    /// Connection side: what to write next. In priority order: the rest of
    /// a frame the room began writing through, a close request, a pong, the
    /// queued frames, whether the room let go, and last a ping the sweep
    /// asked for. Taking anything marks the writer busy until it comes back
    /// with nothing to do, when it is idle again (the room then writes
    /// through).
    pub(crate) fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Next> {
        let mut registered = false;
        loop {
            {
                let mut state = self.state();
                state.writer_idle = false;
                if let Some(next) = self.try_next(&mut state) {
                    return Poll::Ready(next);
                }
                if registered {
                    // Last, and only after registering: a ping asked for
                    // after this look still wakes the task.
                    if std::mem::take(&mut state.ping_due) {
                        return Poll::Ready(Next::Ping);
                    }
                    state.writer_idle = true;
                    return Poll::Pending;
                }
            }
            self.conn_waker.register(cx.waker());
            registered = true;
        }
    }

    /// Connection side: [`Line::poll_next`] without waiting (and without
    /// the ping, which waits for everything else).
    fn try_next(&self, state: &mut LineState) -> Option<Next> {
        if state.raw_front {
            state.raw_front = false;
            let raw = Self::pop_frame(state)?;
            return Some(Next::Raw(self.taken(raw)));
        }
        if let Some(code) = state.kill {
            return Some(Next::Close(code));
        }
        if let Some(payload) = state.pong.take() {
            return Some(Next::Pong(payload));
        }
        if let Some(frame) = Self::pop_frame(state) {
            return Some(Next::Frame(self.taken(frame)));
        }
        state.room_let_go.then_some(Next::RoomGone)
    }

    /// Connection side: the next queued frame, if any (close codes aside).
    pub(crate) fn try_next_frame(&self) -> Option<Bytes> {
        let mut state = self.state();
        if state.raw_front {
            return None; // only `poll_next` takes it (never queued behind a frame)
        }
        let frame = Self::pop_frame(&mut state)?;
        drop(state);
        Some(self.taken(frame))
    }

    /// Connection side: the client sent a ping with `payload`; the writer
    /// answers the latest one.
    pub(crate) fn pong(&self, payload: Box<[u8]>) {
        self.state().pong = Some(payload);
        self.conn_waker.wake();
    }

    fn pop_frame(state: &mut LineState) -> Option<Bytes> {
        let frame = state.outbound.pop_front()?;
        if state.outbound.is_empty() {
            state.outbound = VecDeque::new(); // hold memory only while in use
        }
        Some(frame)
    }

    /// Takes a frame handed to the socket off the backlog counts.
    fn taken(&self, frame: Bytes) -> Bytes {
        let len = frame.len();
        self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
        self.server_queued.fetch_sub(len, Ordering::Relaxed);
        frame
    }

    /// Tests: the next frame regardless of a close request; `None` once the
    /// room let go and the queue is empty (a fake connection's `recv`).
    #[cfg(test)]
    pub(crate) fn poll_frame(&self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let mut registered = false;
        loop {
            if let Some(frame) = self.try_next_frame() {
                return Poll::Ready(Some(frame));
            }
            if self.state().room_let_go {
                return Poll::Ready(None);
            }
            if registered {
                return Poll::Pending;
            }
            self.register_conn(cx);
            registered = true;
        }
    }

    /// Connection side: wake the connection's task on the next change (for
    /// a future that checks [`Line::kill_code`] itself).
    pub(crate) fn register_conn(&self, cx: &mut Context<'_>) {
        self.conn_waker.register(cx.waker());
    }

    /// Server side: asks the connection to ping its peer (and to check that
    /// it answered the last ones). The server's one ping sweep calls this
    /// for every joined connection each `--ping-interval`, instead of each
    /// connection holding a timer of its own (a tokio `Interval` and its
    /// boxed `Sleep`: ~150 bytes per connection).
    pub(crate) fn ask_ping(&self) {
        {
            let mut state = self.state();
            if state.conn_ended {
                return;
            }
            state.ping_due = true;
        }
        self.conn_waker.wake();
    }

    /// Connection side: the close code asked for, if any (without waiting).
    pub(crate) fn kill_code(&self) -> Option<CloseCode> {
        self.state().kill
    }

    /// Connection side: the connection's task ended. Queued frames are
    /// dropped (and taken off the server-wide count); the room's later
    /// frames and close requests get [`QueueError::Closed`].
    pub(crate) fn conn_ended(&self) {
        let dropped = {
            let mut state = self.state();
            state.conn_ended = true;
            state.reader_ended = true;
            std::mem::take(&mut state.outbound)
        };
        let len: usize = dropped.iter().map(Bytes::len).sum();
        self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
        self.server_queued.fetch_sub(len, Ordering::Relaxed);
        self.room_waker.wake();
    }
}

impl<S> Drop for Line<S> {
    /// Frames still queued when both sides let go are dropped with the
    /// line: take them off the server-wide count.
    fn drop(&mut self) {
        let left = self.queued_bytes.load(Ordering::Relaxed);
        self.server_queued.fetch_sub(left, Ordering::Relaxed);
    }
}

/// Closes a connection with a code (cloneable: the room and the registry
/// hold one each).
#[derive(Debug, Clone)]
pub(crate) struct Kill(Arc<Line>);

impl Kill {
    /// The kill switch of `line`.
    pub(crate) fn new(line: Arc<Line>) -> Self {
        Kill(line)
    }

    /// Asks the connection to close with `code` (see [`Line::kill`]); `Err`
    /// if it has ended. Named like a channel send: callers ignore or count it.
    pub(crate) fn try_send(&self, code: CloseCode) -> Result<(), QueueError> {
        self.0.kill(code)
    }

    /// The connection's line (for the server's ping sweep).
    pub(crate) fn line(&self) -> &Arc<Line> {
        &self.0
    }
}

/// The room's inbound stream of one peer (ends when its reader has ended
/// and the room took every frame); dropping it lets the reader stop.
pub(crate) struct InboundFrames(Arc<Line>);

impl futures_util::Stream for InboundFrames {
    type Item = Vec<Inbound>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_inbound(cx)
    }
}

impl Drop for InboundFrames {
    fn drop(&mut self) {
        self.0.room_stopped_reading();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::task::{Wake, Waker};

    use tokio::io::{AsyncReadExt, DuplexStream};

    use super::*;

    /// A waker that counts its wakeups (also for `room::control`'s tests).
    #[derive(Default)]
    pub(crate) struct Counter(pub(crate) AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A waker that counts its wakeups, and the count.
    fn counting_waker() -> (Arc<Counter>, Waker) {
        let counter = Arc::new(Counter::default());
        (counter.clone(), Waker::from(counter))
    }

    /// Room side: sends `message` to `line`.
    fn send<S: AsyncRead + AsyncWrite + Unpin>(
        line: &Line<S>,
        message: &'static [u8],
    ) -> Result<(), QueueError> {
        line.try_send_all(&[&Outgoing::new(Bytes::from_static(message))])
    }

    fn pinged(line: &Line<impl AsyncRead + AsyncWrite + Unpin>, cx: &mut Context<'_>) -> bool {
        matches!(line.poll_next(cx), Poll::Ready(Next::Ping))
    }

    #[test]
    fn a_ping_asked_for_wakes_the_connection_once_and_is_taken_once() {
        let line = Line::new(Default::default(), 4);
        let (counter, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(line.poll_next(&mut cx).is_pending());
        line.ask_ping();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        assert!(pinged(&line, &mut cx));
        assert!(line.poll_next(&mut cx).is_pending());
        // A ping waits for the frames queued before it is taken.
        line.ask_ping();
        send(&line, b"x").unwrap();
        assert!(matches!(
            line.poll_next(&mut cx),
            Poll::Ready(Next::Frame(_))
        ));
        assert!(pinged(&line, &mut cx));
        // A connection that ended is not asked again.
        line.conn_ended();
        line.ask_ping();
        assert!(line.poll_next(&mut cx).is_pending());
    }

    /// A line on one end of an in-memory socket that takes `capacity`
    /// bytes before it is full, and the other end.
    fn socket_line(capacity: usize) -> (Line<DuplexStream>, DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(capacity);
        (
            Line::with_socket(Socket::new(ours), Default::default(), 4),
            theirs,
        )
    }

    /// A server frame (unmasked, binary, final) carrying `payload`.
    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![0x82, payload.len() as u8];
        frame.extend_from_slice(payload);
        frame
    }

    #[tokio::test]
    async fn the_room_writes_through_to_an_idle_writer_without_waking_it() {
        let (line, mut theirs) = socket_line(1024);
        let (counter, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        // Before the writer has parked, a frame is queued for it.
        send(&line, b"first").unwrap();
        assert_eq!(line.queued_bytes(), 5);
        assert!(matches!(line.poll_next(&mut cx), Poll::Ready(Next::Frame(f)) if f == "first"));
        assert!(line.poll_next(&mut cx).is_pending());
        let woken = counter.0.load(Ordering::SeqCst);
        // Parked: the room writes the frame to the socket itself.
        send(&line, b"second").unwrap();
        send(&line, b"third").unwrap();
        assert_eq!(counter.0.load(Ordering::SeqCst), woken, "writer woken");
        assert_eq!(line.queued_bytes(), 0);
        let mut got = vec![0; 15];
        theirs.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [framed(b"second"), framed(b"third")].concat());
        assert!(line.poll_next(&mut cx).is_pending());
        // A pong owed or a close asked for: the writer goes first.
        line.pong(Box::new([1]));
        send(&line, b"after").unwrap();
        assert!(matches!(
            line.poll_next(&mut cx),
            Poll::Ready(Next::Pong(_))
        ));
        assert!(matches!(line.poll_next(&mut cx), Poll::Ready(Next::Frame(f)) if f == "after"));
    }

    #[tokio::test]
    async fn what_a_full_socket_does_not_take_goes_first_still_framed_even_before_a_close() {
        let (line, mut theirs) = socket_line(4);
        let (counter, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(line.poll_next(&mut cx).is_pending());
        send(&line, b"0123456789").unwrap();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1, "writer not woken");
        send(&line, b"next").unwrap();
        line.kill(CloseCode::Normal).unwrap();
        let mut head = vec![0; 4];
        theirs.read_exact(&mut head).await.unwrap();
        let Poll::Ready(Next::Raw(rest)) = line.poll_next(&mut cx) else {
            panic!("the rest of the frame is not first");
        };
        assert_eq!([head, rest.to_vec()].concat(), framed(b"0123456789"));
        assert!(matches!(
            line.poll_next(&mut cx),
            Poll::Ready(Next::Close(_))
        ));
        // The writer never went idle: the queued frame stayed queued.
        assert_eq!(line.queued_bytes(), 4);
    }

    /// An in-memory socket end that counts the writes made to it.
    struct Counted(DuplexStream, Arc<AtomicUsize>);

    impl AsyncRead for Counted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.0).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Counted {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.1.fetch_add(1, Ordering::SeqCst);
            Pin::new(&mut self.0).poll_write(cx, buf)
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.0).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.0).poll_shutdown(cx)
        }
    }

    #[tokio::test]
    async fn frames_for_an_idle_connection_go_out_in_one_write_in_order() {
        let writes = Arc::new(AtomicUsize::new(0));
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let line = Line::with_socket(
            Socket::new(Counted(ours, writes.clone())),
            Default::default(),
            4,
        );
        let (_, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(line.poll_next(&mut cx).is_pending());
        let frames = [b"one".as_slice(), b"two", b"three"].map(|m| Outgoing::new(Bytes::from(m)));
        line.try_send_all(&frames.each_ref()).unwrap();
        assert_eq!(
            writes.load(Ordering::SeqCst),
            1,
            "one write for three frames"
        );
        let mut got = vec![0; 17];
        theirs.read_exact(&mut got).await.unwrap();
        assert_eq!(
            got,
            [framed(b"one"), framed(b"two"), framed(b"three")].concat()
        );
        assert_eq!(line.queued_bytes(), 0);
    }

    #[test]
    fn frames_the_queue_cannot_all_take_are_refused_together() {
        let line = Line::new(Default::default(), 4);
        send(&line, b"a").unwrap();
        send(&line, b"b").unwrap();
        let frames = [b"c".as_slice(), b"d", b"e"].map(|m| Outgoing::new(Bytes::from(m)));
        assert_eq!(line.try_send_all(&frames.each_ref()), Err(QueueError::Full));
        assert_eq!(line.queued_bytes(), 2, "none of the three was queued");
        line.try_send_all(&frames[..2].iter().collect::<Vec<_>>())
            .unwrap();
        assert_eq!(line.queued_bytes(), 4);
    }
}
