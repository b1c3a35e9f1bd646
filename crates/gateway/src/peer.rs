//! One WebSocket connection: reads frames, decodes them (bad input closes
//! only this connection), forwards them to the room, and writes the room's
//! frames, pings and the final close frame.
//!
//! The reader and the writer are two futures of one task, over one socket
//! (no split: each takes the socket only inside a poll). The writer drains,
//! in priority order: the rest of a frame the room wrote through, a close
//! request (from the room or the reader), a pong owed for the client's
//! last ping, the bounded outbound queue, a ping. Pings are asked for by
//! the registry's one ping sweep (each `--ping-interval`, for every joined
//! connection), not by a timer per connection. While the writer has
//! nothing to write, the room writes its frames to the socket itself
//! instead of queueing them and waking this task (write-through, see
//! `link.rs`).
//!
//! The socket is the raw upgraded connection from [`crate::upgrade`],
//! framed by [`crate::wire`] (not tokio-tungstenite's stream): an idle
//! connection holds no read or write buffer, and costs ~3.5 KiB of RSS
//! (`tandem-bench connections` at 10,000 connections, two per room)
//! instead of ~7.3 KiB with tungstenite's 2 KiB read buffer and ~138 KiB
//! with warp's defaults. Of its heap (heaptrack at 5,000, before
//! write-through moved the socket and the pong from the task into the
//! line; RSS per connection stayed the same): its task, 896
//! bytes (tokio rounds a task to 128 bytes: 1,008 bytes was a 1,024-byte
//! cell); tokio's I/O registration, 256; its [`Line`], 192 (256 with the
//! socket, by `size_of`); its entry in
//! the registry's live list, ~160; and its share of its room, ~1 KiB: half
//! the room's task (1,024 bytes), of its document, of its peer map and
//! inbound streams, of its control queue and registry entry. Each state
//! an `async` function keeps across an `.await` is in every idle
//! connection's task: see the notes on [`PeerIo::run`], `Conn` and
//! `read_loop`. The
//! room and the connection share one [`Line`] (see `link.rs`), not channels.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tandem_store::DocId;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tracing::{Instrument, debug, info, warn};

use crate::access::Principal;
use crate::close::CloseCode;
use crate::link::{Kill, Line, Next, PeerId, PeerLink, RoomEnd};
use crate::metrics::Metrics;
use crate::protocol;
use crate::rate::InboundRate;
use crate::room::{LivePeer, Rooms};
use crate::upgrade::Socket;
use crate::wire::{Incoming, ReadError, Reader, Writer};

/// How long to wait for a close handshake or a blocked write at the end.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

static NEXT_PEER: AtomicU64 = AtomicU64::new(1);

/// Joins `ws` to the room of `doc` (`counted`: against its `sub`'s
/// quotas, see [`Rooms::join`]) and returns the future that serves the
/// connection until it ends (the caller spawns or awaits it).
///
/// The setup is synchronous on purpose: the returned future then holds only
/// the socket's two halves (the socket itself moves to the heap, behind the
/// split's shared lock), channels and a few pointers, so each connection's
/// task stays small (an `async fn` taking the socket would carry it inline).
pub(crate) fn serve(
    ws: Socket,
    doc: DocId,
    principal: Principal,
    counted: bool,
    ends: Ends,
    rooms: &Rooms,
    metrics: Arc<Metrics>,
) -> impl Future<Output = ()> + Send + use<> {
    let id = PeerId(NEXT_PEER.fetch_add(1, Ordering::Relaxed));
    let span = tracing::info_span!("peer", doc = %doc.as_str(), peer = %id);
    let limits = rooms.limits();
    let ping_every = limits.ping_interval();
    let line = Arc::new(Line::with_socket(
        ws,
        rooms.queued_bytes(),
        limits.peer_queue,
    ));
    let link = PeerLink {
        id,
        kill: Kill::new(line.clone()),
        principal,
        line: RoomEnd::new(line.clone()),
    };
    let live = span.in_scope(|| {
        debug!("connected");
        rooms
            .join(&doc, link, counted)
            .inspect_err(|code| {
                warn!(code = code.code(), "join refused");
                let _ = line.kill(*code);
            })
            .ok()
    });
    let io = PeerIo {
        conn: Conn {
            line: ConnEnd(line),
            metrics,
        },
        reader: Reader::new(limits.max_message_bytes),
        coalesce: limits.socket_buffer_bytes.max(MIN_COALESCE),
        ping_every,
        ends,
        rate: InboundRate::new(limits, std::time::Instant::now()),
        _live: live,
    };
    io.run().instrument(span)
}

/// Resolves when the connection must end, with the close code (e.g. the
/// auth session's 4401 at the token's `exp`, 4403 at a revocation); never,
/// without auth.
pub(crate) type Ends = Pin<Box<dyn Future<Output = CloseCode> + Send>>;

/// The connection's end of its [`Line`]: when the task ends (however it
/// ends), the room learns the reader ended and stops queueing frames.
struct ConnEnd(Arc<Line>);

impl Drop for ConnEnd {
    fn drop(&mut self) {
        self.0.conn_ended();
    }
}

/// Smallest write-coalescing target used (`--socket-buffer-bytes`).
const MIN_COALESCE: usize = 256;

/// Everything a connection's task owns once it has joined its room.
struct PeerIo {
    /// What the reader and the writer share.
    conn: Conn,
    /// Frame parsing state: a few header bytes, a message's fragments.
    reader: Reader,
    /// Bytes worth writing to the socket at once (`--socket-buffer-bytes`).
    coalesce: usize,
    /// `--ping-interval`: a write blocked for two is a stuck peer.
    ping_every: Duration,
    /// When the connection must end regardless of traffic (see [`Ends`]).
    ends: Ends,
    /// The inbound rate limit (4429).
    rate: InboundRate,
    /// Keeps this connection findable by `Rooms::close_peers` while it runs.
    _live: Option<LivePeer>,
}

/// What the reader and the writer both use, each through one reference:
/// an `async fn` holds every argument twice (as passed, and as its local),
/// so four references per loop were 64 bytes of each connection's task.
struct Conn {
    /// Frames and close codes from the room, decoded frames to it, liveness,
    /// the ping to answer, and the upgraded connection (read by this task
    /// alone, written by it or by the room: see `link.rs`).
    line: ConnEnd,
    /// Counters for `/metrics`.
    metrics: Arc<Metrics>,
}

impl Conn {
    /// The connection's [`Line`] to its room.
    fn line(&self) -> &Line {
        &self.line.0
    }
}

impl PeerIo {
    /// Runs the reader and the writer until both have ended (each gets
    /// [`CLOSE_TIMEOUT`] to finish once the other has).
    ///
    /// The reader and writer borrow this struct's fields rather than take
    /// them: an `async fn` keeps its arguments for its whole life, so state
    /// moved from one future into another would be held twice.
    ///
    /// Not an `async fn` either: one copies its arguments into its body's
    /// locals and keeps both (`self` twice: ~256 bytes per connection); an
    /// `async move` block that borrows what it captured holds it once.
    #[allow(clippy::manual_async_fn)] // on purpose: see above
    fn run(mut self) -> impl Future<Output = ()> + Send {
        async move {
            let io = &mut self;
            // Always there: `serve` built the line with it (only the room
            // tests' fake connections have none).
            let Some(socket) = io.conn.line().socket() else {
                return;
            };
            // Pinned where they are made (`tokio::pin!` would move them into a
            // second slot of this future, which then holds both).
            let mut reader =
                std::pin::pin!(read_loop(&io.conn, socket, &mut io.reader, &mut io.rate));
            let mut writer =
                std::pin::pin!(write_loop(&io.conn, socket, io.coalesce, io.ping_every));
            let (line, ends) = (&io.conn.line, &mut io.ends);
            let mut ending = false;
            loop {
                tokio::select! {
                    _ = &mut reader => {
                        let _ = Box::pin(tokio::time::timeout(CLOSE_TIMEOUT, &mut writer)).await;
                        break;
                    }
                    code = &mut writer => {
                        if let Some(code) = code {
                            info!(code = code.code(), reason = code.reason(), "closed by server");
                        }
                        let _ = Box::pin(tokio::time::timeout(CLOSE_TIMEOUT, &mut reader)).await;
                        break;
                    }
                    // The writer sends the close frame; the reader then ends.
                    code = &mut *ends, if !ending => {
                        ending = true;
                        let _ = line.0.kill(code);
                    }
                }
            }
            debug!("disconnected");
        }
    }
}

/// Reads until the socket ends or sends something bad; on bad input (or
/// faster than `rate` admits: 4429) asks the writer to close with the
/// matching code. Its end tells the room this peer left (after every frame
/// it sent). Pings are handed to the writer to answer.
async fn read_loop(conn: &Conn, socket: &Socket, reader: &mut Reader, rate: &mut InboundRate) {
    let code = loop {
        // A block, so that of a frame only its decoded messages are held
        // while they are handed to the room (not the frame twice as well).
        let messages = {
            let incoming = match reader.read(socket).await {
                Ok(Some(incoming)) => incoming,
                Ok(None) => break CloseCode::Normal,
                Err(e @ ReadError::TooLarge { .. }) => {
                    warn!(error = %e, "frame too large");
                    break CloseCode::TooLarge;
                }
                Err(e) => {
                    debug!(error = %e, "read failed");
                    break CloseCode::Normal;
                }
            };
            conn.line().saw_frame();
            let len = match &incoming {
                Incoming::Close => break CloseCode::Normal,
                Incoming::Text => {
                    warn!("text frame");
                    break CloseCode::TextFrame;
                }
                Incoming::Binary(frame) | Incoming::Ping(frame) => frame.len(),
                Incoming::Pong(len) => *len,
            };
            if !rate.admit(len, std::time::Instant::now()) {
                warn!("inbound rate limit exceeded");
                break CloseCode::RateLimited;
            }
            let frame = match incoming {
                Incoming::Binary(frame) => frame,
                Incoming::Ping(payload) => {
                    conn.line().pong(Vec::from(payload).into());
                    continue;
                }
                _ => continue, // a pong: only liveness
            };
            conn.metrics
                .bytes_in
                .fetch_add(frame.len() as u64, Ordering::Relaxed);
            match protocol::decode_frame(&frame) {
                Ok(messages) if messages.is_empty() => continue,
                Ok(messages) => messages,
                Err(e) => {
                    warn!(error = %e, "bad message");
                    break e.close_code();
                }
            }
        };
        // Boxed: it exists only while a frame is handed over.
        if Box::pin(conn.line().send_inbound(messages)).await.is_err() {
            // The room stopped reading us (it closed this peer): stop reading.
            conn.line().reader_ended();
            return;
        }
    };
    conn.line().reader_ended();
    let _ = conn.line().kill(code);
}

/// Writes queued frames, pongs and pings; returns the close code it sent,
/// if any.
///
/// Every write races the close request, and a write blocked for two ping
/// intervals (a peer that stopped reading) ends the connection: a stuck
/// socket never pins this task. A write abandoned for a close request
/// leaves its unwritten bytes queued in `out`, ahead of the close frame.
///
/// The write futures are boxed: they exist only while a write is under way,
/// so an idle connection's task does not carry their space (~300 bytes).
///
/// A ping goes out when the registry's ping sweep asks for one
/// ([`Line::ask_ping`], every `ping_every`); a peer silent for longer than
/// two intervals by then is dropped. While this writer waits with nothing
/// to write, the room writes its frames to the socket itself (see
/// `link.rs`); what the socket did not take comes back here first.
async fn write_loop(
    conn: &Conn,
    socket: &Socket,
    coalesce: usize,
    ping_every: Duration,
) -> Option<CloseCode> {
    let mut out = Writer::new(coalesce);
    let stall = ping_every * 2;
    let code = loop {
        let next = std::future::poll_fn(|cx| conn.line().poll_next(cx)).await;
        let written = match next {
            Next::Close(code) => break code,
            // The room let go of this peer without a close code: it
            // failed (a panic dropped it; see `room`'s containment docs).
            Next::RoomGone => break CloseCode::Internal,
            Next::Frame(frame) => tokio::select! {
                biased;
                code = wait_kill(conn.line()) => break code,
                ok = Box::pin(tokio::time::timeout(stall, write_batch(socket, &mut out, frame, conn.line()))) => ok.map_err(Stop::from),
            },
            Next::Raw(framed) => {
                out.raw(&framed);
                flush_or_close(socket, &mut out, conn.line(), stall).await
            }
            Next::Pong(payload) => {
                out.pong(&payload);
                flush_or_close(socket, &mut out, conn.line(), stall).await
            }
            Next::Ping => {
                if conn.line().silent_for() > stall {
                    debug!("peer missed pongs: dropping");
                    return None;
                }
                out.ping();
                flush_or_close(socket, &mut out, conn.line(), stall).await
            }
        };
        match written {
            Ok(true) => {}
            Ok(false) => return None,
            Err(Stop::Close(code)) => break code,
            Err(Stop::Stalled) => {
                debug!("write stalled: dropping peer");
                return None;
            }
        }
    };
    if code != CloseCode::Normal {
        conn.metrics.record_close(code);
    }
    out.close(code.code(), code.reason());
    let _ = Box::pin(tokio::time::timeout(CLOSE_TIMEOUT, out.flush(socket))).await;
    (code != CloseCode::Normal).then_some(code)
}

/// Why a write did not finish.
enum Stop {
    /// A close was asked for meanwhile (the unwritten rest stays in `out`).
    Close(CloseCode),
    /// The socket took nothing for two ping intervals.
    Stalled,
}

impl From<tokio::time::error::Elapsed> for Stop {
    fn from(_: tokio::time::error::Elapsed) -> Self {
        Stop::Stalled
    }
}

/// Writes what `out` holds, racing a close request; `Ok(false)` if the
/// socket failed.
async fn flush_or_close(
    socket: &Socket,
    out: &mut Writer,
    line: &Line,
    stall: Duration,
) -> Result<bool, Stop> {
    tokio::select! {
        biased;
        code = wait_kill(line) => Err(Stop::Close(code)),
        ok = Box::pin(tokio::time::timeout(stall, out.flush(socket))) => Ok(ok?.is_ok()),
    }
}

/// Resolves with the close code once one is asked for (a write in progress
/// is abandoned for it).
async fn wait_kill(line: &Line) -> CloseCode {
    std::future::poll_fn(|cx| {
        if let Some(code) = line.kill_code() {
            return std::task::Poll::Ready(code);
        }
        // Register, then look again: a code set in between is not missed
        // (a frame queued meanwhile only wakes the task once more).
        line.register_conn(cx);
        match line.kill_code() {
            Some(code) => std::task::Poll::Ready(code),
            None => std::task::Poll::Pending,
        }
    })
    .await
}

/// Writes `first` and whatever else is already queued, then flushes once.
async fn write_batch(socket: &Socket, out: &mut Writer, first: Bytes, line: &Line) -> bool {
    let mut next = Some(first);
    while let Some(frame) = next {
        if write_message(socket, out, &frame).await.is_err() {
            return false;
        }
        next = line.try_next_frame();
    }
    out.flush(socket).await.is_ok()
}

/// Largest WebSocket frame the server writes; a bigger message goes out as
/// several frames (fragments, RFC 6455 §5.4; every client reassembles them).
///
/// Each frame is copied into the connection's write buffer (which is
/// written out whenever it holds `--socket-buffer-bytes`): a 15 MB document
/// sent to 50 joiners as single frames cost 50 copies (~750 MB); as
/// fragments each connection holds at most one.
const FRAGMENT_BYTES: usize = 64 * 1024;

/// Queues one binary message, fragmented if it is large, writing to the
/// socket whenever enough is queued.
async fn write_message(socket: &Socket, out: &mut Writer, message: &[u8]) -> std::io::Result<()> {
    if message.len() <= FRAGMENT_BYTES {
        out.frame(OpCode::Data(Data::Binary), true, message);
    } else {
        let mut at = 0;
        while at < message.len() {
            let end = (at + FRAGMENT_BYTES).min(message.len());
            let opcode = OpCode::Data(if at == 0 {
                Data::Binary
            } else {
                Data::Continue
            });
            out.frame(opcode, end == message.len(), &message[at..end]);
            if out.wants_flush() {
                out.flush(socket).await?;
            }
            at = end;
        }
    }
    if out.wants_flush() {
        out.flush(socket).await?;
    }
    Ok(())
}
