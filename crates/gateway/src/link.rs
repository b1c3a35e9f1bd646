//! The small shared types every other module may use (the leaf of the
//! crate's module graph): connection ids, the link a connection hands its
//! room, the health both sides share, and the root text's name.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::access::Principal;
use crate::close::CloseCode;
use crate::protocol::Inbound;

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

/// What a connection hands the room when it joins.
pub(crate) struct PeerLink {
    /// The connection.
    pub id: PeerId,
    /// Its liveness and outbound backlog (shared with the connection task).
    pub health: Arc<PeerHealth>,
    /// Bounded queue of frames to write to the socket; overflow means 4008.
    pub outbound: mpsc::Sender<Bytes>,
    /// Tells the connection to close with a code (bypasses the outbound queue).
    pub kill: mpsc::Sender<CloseCode>,
    /// Who the connection acts as (its mode decides whether it may write).
    pub principal: Principal,
    /// Decoded frames from the socket, in order.
    pub inbound: mpsc::Receiver<Vec<Inbound>>,
}

/// Liveness and backlog of one connection, shared by its task and its room.
#[derive(Debug)]
pub(crate) struct PeerHealth {
    /// When the connection started (the clock of `last_seen_ms`).
    started: Instant,
    /// When the last frame (of any kind, pongs included) arrived, in ms since `started`.
    last_seen_ms: AtomicU64,
    /// Bytes queued for this peer but not yet handed to the socket.
    queued_bytes: AtomicUsize,
    /// Bytes queued for every peer of the server (`--max-queued-bytes`).
    server_queued: Arc<AtomicUsize>,
}

impl PeerHealth {
    /// A new connection's health; its backlog also counts in `server_queued`
    /// (the server-wide outbound bound).
    pub(crate) fn new(server_queued: Arc<AtomicUsize>) -> Self {
        PeerHealth {
            started: Instant::now(),
            last_seen_ms: AtomicU64::new(0),
            queued_bytes: AtomicUsize::new(0),
            server_queued,
        }
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

    /// Accounts for a frame put in the outbound queue.
    pub(crate) fn enqueued(&self, len: usize) {
        self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        self.server_queued.fetch_add(len, Ordering::Relaxed);
    }

    /// Accounts for a frame handed to the socket.
    pub(crate) fn dequeued(&self, len: usize) {
        self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
        self.server_queued.fetch_sub(len, Ordering::Relaxed);
    }

    /// Bytes queued for every peer of the server.
    pub(crate) fn server_queued(&self) -> usize {
        self.server_queued.load(Ordering::Relaxed)
    }
}

impl Drop for PeerHealth {
    /// Frames still queued when both sides let go are dropped with the
    /// channel: take them off the server-wide count.
    fn drop(&mut self) {
        let left = self.queued_bytes.load(Ordering::Relaxed);
        self.server_queued.fetch_sub(left, Ordering::Relaxed);
    }
}
