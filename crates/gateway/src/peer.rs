//! One WebSocket connection: reads frames, decodes them (bad input closes
//! only this connection), forwards them to the room, and writes the room's
//! frames, pings and the final close frame.
//!
//! The reader and the writer are two futures of one task. The writer owns
//! the socket's sink and drains, in priority order: a close request (from
//! the room or the reader), the bounded outbound queue, the ping timer.
//!
//! The socket is a plain tokio-tungstenite stream from [`crate::upgrade`]
//! (not warp's `WebSocket`), configured there with small buffers: an idle
//! connection costs ~8 KiB (its task, the socket's read buffer, its share
//! of its room; measured with `tandem-bench connections`) instead of
//! ~138 KiB with warp's defaults. The room and the connection share one
//! [`Line`] (see `link.rs`), not channels.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tandem_store::DocId;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::{Instrument, debug, info, warn};

use crate::access::Principal;
use crate::close::CloseCode;
use crate::link::{Kill, Line, Next, PeerId, PeerLink, RoomEnd};
use crate::metrics::Metrics;
use crate::protocol;
use crate::rate::InboundRate;
use crate::room::{LivePeer, Rooms};
use crate::upgrade::Socket;

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
    let (sink, stream) = ws.split();
    let line = Arc::new(Line::new(rooms.queued_bytes(), limits.peer_queue));
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
        sink,
        stream,
        line: ConnEnd(line),
        ping_every,
        metrics,
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

/// Everything a connection's task owns once it has joined its room.
struct PeerIo {
    sink: SplitSink<Socket, Message>,
    stream: SplitStream<Socket>,
    /// Frames and close codes from the room, decoded frames to it, liveness.
    line: ConnEnd,
    ping_every: Duration,
    metrics: Arc<Metrics>,
    /// When the connection must end regardless of traffic (see [`Ends`]).
    ends: Ends,
    /// The inbound rate limit (4429).
    rate: InboundRate,
    /// Keeps this connection findable by `Rooms::close_peers` while it runs.
    _live: Option<LivePeer>,
}

impl PeerIo {
    /// Runs the reader and the writer until both have ended (each gets
    /// [`CLOSE_TIMEOUT`] to finish once the other has).
    async fn run(self) {
        let PeerIo {
            sink,
            stream,
            line,
            ping_every,
            metrics,
            ends,
            rate,
            _live,
        } = self;
        let reader = read_loop(stream, rate, &line.0, &metrics);
        let writer = write_loop(sink, &line.0, ping_every, &metrics);
        tokio::pin!(reader, writer, ends);
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
                code = &mut ends, if !ending => {
                    ending = true;
                    let _ = line.0.kill(code);
                }
            }
        }
        debug!("disconnected");
    }
}

/// Reads until the socket ends or sends something bad; on bad input (or
/// faster than `rate` admits: 4429) asks the writer to close with the
/// matching code. Its end tells the room this peer left (after every frame
/// it sent).
async fn read_loop(
    mut stream: SplitStream<Socket>,
    mut rate: InboundRate,
    line: &Line,
    metrics: &Metrics,
) {
    let code = loop {
        let msg = match stream.next().await {
            None => break CloseCode::Normal,
            Some(Ok(msg)) => msg,
            Some(Err(e)) => {
                if is_too_large(&e) {
                    warn!(error = %e, "frame too large");
                    break CloseCode::TooLarge;
                }
                debug!(error = %e, "read failed");
                break CloseCode::Normal;
            }
        };
        line.saw_frame();
        if msg.is_close() {
            break CloseCode::Normal;
        }
        if !rate.admit(msg.len(), std::time::Instant::now()) {
            warn!("inbound rate limit exceeded");
            break CloseCode::RateLimited;
        }
        if msg.is_text() {
            warn!("text frame");
            break CloseCode::TextFrame;
        }
        if !msg.is_binary() {
            continue; // ping/pong: only liveness
        }
        let frame: Bytes = msg.into_data();
        metrics
            .bytes_in
            .fetch_add(frame.len() as u64, Ordering::Relaxed);
        match protocol::decode_frame(&frame) {
            Ok(messages) if messages.is_empty() => {}
            Ok(messages) => {
                if line.send_inbound(messages).await.is_err() {
                    // The room stopped reading us (it closed this peer): stop reading.
                    line.reader_ended();
                    return;
                }
            }
            Err(e) => {
                warn!(error = %e, "bad message");
                break e.close_code();
            }
        }
    };
    line.reader_ended();
    let _ = line.kill(code);
}

/// Writes queued frames and pings; returns the close code it sent, if any.
///
/// Every write races the close request, and a write blocked for two ping
/// intervals (a peer that stopped reading) ends the connection: a stuck
/// socket never pins this task.
///
/// The write futures are boxed: they exist only while a write is under way,
/// so an idle connection's task does not carry their space (~300 bytes).
async fn write_loop(
    mut sink: SplitSink<Socket, Message>,
    line: &Line,
    ping_every: Duration,
    metrics: &Metrics,
) -> Option<CloseCode> {
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stall = ping_every * 2;
    let code = loop {
        let written = tokio::select! {
            biased;
            next = std::future::poll_fn(|cx| line.poll_next(cx)) => match next {
                Next::Close(code) => break code,
                // The room let go of this peer without a close code: it
                // failed (a panic dropped it; see `room`'s containment docs).
                Next::RoomGone => break CloseCode::Internal,
                Next::Frame(frame) => tokio::select! {
                    biased;
                    code = wait_kill(line) => break code,
                    ok = Box::pin(tokio::time::timeout(stall, write_batch(&mut sink, frame, line))) => ok,
                },
            },
            _ = ping.tick() => {
                if line.silent_for() > stall {
                    debug!("peer missed pongs: dropping");
                    return None;
                }
                tokio::select! {
                    biased;
                    code = wait_kill(line) => break code,
                    ok = Box::pin(tokio::time::timeout(stall, async { sink.send(Message::Ping(Bytes::new())).await.is_ok() })) => ok,
                }
            }
        };
        match written {
            Ok(true) => {}
            Ok(false) => return None,
            Err(_) => {
                debug!("write stalled: dropping peer");
                return None;
            }
        }
    };
    if code != CloseCode::Normal {
        metrics.record_close(code);
    }
    let close = Message::Close(Some(CloseFrame {
        code: code.code().into(),
        reason: code.reason().into(),
    }));
    let _ = Box::pin(tokio::time::timeout(CLOSE_TIMEOUT, sink.send(close))).await;
    (code != CloseCode::Normal).then_some(code)
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
async fn write_batch(sink: &mut SplitSink<Socket, Message>, first: Bytes, line: &Line) -> bool {
    let mut next = Some(first);
    while let Some(frame) = next {
        if write_message(sink, frame).await.is_err() {
            return false;
        }
        next = line.try_next_frame();
    }
    sink.flush().await.is_ok()
}

/// Largest WebSocket frame the server writes; a bigger message goes out as
/// several frames (fragments, RFC 6455 §5.4; every client reassembles them).
///
/// tungstenite copies each frame whole into the connection's write buffer
/// (and drains that buffer with a memmove per socket write): a 15 MB
/// document sent to 50 joiners as single frames cost 50 copies (~750 MB)
/// and quadratic draining; as fragments each connection holds at most one.
const FRAGMENT_BYTES: usize = 64 * 1024;

/// Writes one binary message, fragmented if it is large (no copy: each
/// fragment is a slice of the shared bytes).
async fn write_message(
    sink: &mut SplitSink<Socket, Message>,
    message: Bytes,
) -> Result<(), tungstenite::Error> {
    use tungstenite::protocol::frame::Frame;
    use tungstenite::protocol::frame::coding::{Data, OpCode};
    if message.len() <= FRAGMENT_BYTES {
        return sink.feed(Message::binary(message)).await;
    }
    let mut at = 0;
    while at < message.len() {
        let end = (at + FRAGMENT_BYTES).min(message.len());
        let opcode = OpCode::Data(if at == 0 {
            Data::Binary
        } else {
            Data::Continue
        });
        let fragment = Frame::message(message.slice(at..end), opcode, end == message.len());
        sink.feed(Message::Frame(fragment)).await?;
        at = end;
    }
    Ok(())
}

/// True when a read failed because the frame or message exceeded the size
/// limit ([`crate::upgrade::socket_config`] sets both to `--max-message-bytes`).
fn is_too_large(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Capacity(_))
}
