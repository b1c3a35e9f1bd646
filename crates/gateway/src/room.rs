//! One open document: the room task (an actor) that owns the yrs `Doc`, the
//! awareness table and the peers, and is the only code that touches them.
//!
//! Peers talk to the room over channels: a join arrives on the control
//! channel with the peer's inbound receiver; the room polls every peer's
//! inbound stream, takes everything that is ready as one batch, applies it,
//! appends the batch's updates to the store as one record, awaits durability
//! once for the whole batch (group commit), and only then fans the encoded
//! frames out to the peers' bounded outbound queues.
//!
//! This file is the actor's lifecycle: load, the run loop, joins and leaves,
//! fan-out to the peers' queues, awareness expiry, compaction, unload and
//! shutdown. The rest, one concept per file:
//!
//! - `batch`: applying one batch: decode → apply → `append_batch` → await
//!   durable → fan out; a rejected update stores what the batch already
//!   accepted, then reloads the document.
//! - `run`: consecutive updates of a batch from one sender go out as one
//!   merged update frame, so a fast typist costs each receiver one frame
//!   per batch, not per keystroke.
//! - `edit`: an HTTP edit (the `/api/docs` write path), applied, stored and
//!   broadcast like a peer's update.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use tandem_store::{DocId, Store};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt, StreamMap};
use tracing::{debug, error, info, warn};
use yrs::{Doc, ReadTxn, Transact};

use crate::close::CloseCode;
use crate::mailbox::{Control, EditError, PeerId, PeerLink};
use crate::peer::PeerHealth;
use crate::presence::Presence;
use crate::protocol::{self, Inbound};
use crate::rooms::Shared;

mod batch;
mod edit;
mod run;

/// Most inbound frames handled as one batch (one durability wait).
const MAX_BATCH: usize = 256;

/// One item of a peer's inbound stream; `Left` always comes last.
enum PeerEvent {
    /// The messages of one frame, decoded whole by the connection (a frame
    /// that fails to decode never gets here).
    Frame(Vec<Inbound>),
    /// The connection ended (its inbound channel closed): the room drops the
    /// peer and its awareness states, after everything it sent before.
    Left,
}

/// A peer's inbound frames followed by `Left`, so the room learns of a
/// departure in order with the peer's traffic, from the same `StreamMap`.
type PeerStream = Pin<Box<dyn Stream<Item = PeerEvent> + Send + Sync>>;

/// The room's view of a joined peer.
struct PeerSlot {
    /// Liveness (for awareness takeover) and the outbound backlog in bytes
    /// (for the `--peer-queue-bytes` bound), shared with the connection task.
    health: Arc<PeerHealth>,
    /// Bounded queue of frames for the socket; the room only `try_send`s, so
    /// a full queue closes the peer with 4008 instead of stalling the room.
    outbound: mpsc::Sender<Bytes>,
    /// Closes the connection with a code, bypassing a possibly full
    /// `outbound` queue.
    kill: mpsc::Sender<CloseCode>,
}

/// Who receives an outgoing frame.
enum Target {
    /// A reply to the sender (SyncStep2, awareness query).
    One(PeerId),
    /// An update, to everyone but the peer it came from.
    AllBut(PeerId),
    /// Awareness changes (the sender too: a lone JS client otherwise hears
    /// nothing) and HTTP edits.
    All,
}

/// Runs the room for `doc` until it unloads, fails or the server stops.
pub(crate) async fn run(
    doc_id: DocId,
    key: u64,
    mut control: mpsc::UnboundedReceiver<Control>,
    shared: Arc<Shared>,
    _running: mpsc::Sender<()>,
) {
    let doc = match load(&shared.store, &doc_id).await {
        Ok(doc) => doc,
        Err(e) => {
            error!(error = %e, "loading document failed");
            shared.close_room(&doc_id, key, &mut control, CloseCode::Internal);
            return;
        }
    };
    shared.metrics.room_loads.fetch_add(1, Ordering::Relaxed);
    debug!("room loaded");
    let mut room = Room {
        presence: Presence::new(shared.limits.awareness_timeout()),
        doc_id,
        key,
        doc,
        peers: HashMap::new(),
        inbound: StreamMap::new(),
        empty_since: Some(Instant::now()),
        failed: false,
        compacting: Arc::new(AtomicBool::new(false)),
        shared,
    };
    room.run(control).await;
}

/// Loads `doc_id` from the store on a blocking thread (sled reads and yrs
/// decoding must not stall the runtime).
async fn load(store: &Store, doc_id: &DocId) -> Result<Doc, String> {
    let store = store.clone();
    let id = doc_id.clone();
    tokio::task::spawn_blocking(move || store.load(&id))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// The actor's state: owned by the room task alone, so nothing is locked.
struct Room {
    /// The document this room serves: its store key and registry key.
    doc_id: DocId,
    /// Registry key of this room instance (a reopened document gets a new one),
    /// so a stale room never unregisters its successor.
    key: u64,
    /// The live document: what every peer's SyncStep1 is answered from and
    /// updates are applied to; always equal to what the store holds plus the
    /// current batch's accepted updates.
    doc: Doc,
    /// Awareness states with their owning connection and expiry.
    presence: Presence,
    /// The joined peers, to fan frames out to and to close.
    peers: HashMap<PeerId, PeerSlot>,
    /// Every peer's inbound stream, polled together so one batch takes what
    /// all peers have ready, in arrival order per peer.
    inbound: StreamMap<PeerId, PeerStream>,
    /// When the last peer left (unload after the grace period).
    empty_since: Option<Instant>,
    /// The store failed: every peer was closed with 1011; the room must go.
    failed: bool,
    /// A background compaction is running (at most one per document; the
    /// flag is shared with the blocking task that clears it).
    compacting: Arc<AtomicBool>,
    /// The store, limits and metrics, and the registry to unregister from.
    shared: Arc<Shared>,
}

impl Room {
    /// The actor's loop: control messages first (joins, HTTP edits,
    /// shutdown), then a batch of peer traffic, then periodic maintenance.
    async fn run(&mut self, mut control: mpsc::UnboundedReceiver<Control>) {
        let tick_every = self
            .shared
            .limits
            .room_unload_grace()
            .min(Duration::from_secs(1))
            .max(Duration::from_millis(20));
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                ctl = control.recv() => match ctl {
                    Some(Control::Join(link)) => self.join(link),
                    Some(Control::Edit(req)) => {
                        let result = self.edit(req.edit).await;
                        let _ = req.reply.send(result);
                    }
                    Some(Control::Shutdown) | None => {
                        self.shutdown(&mut control).await;
                        return;
                    }
                },
                Some(first) = self.inbound.next(), if !self.inbound.is_empty() => {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match self.inbound.next().now_or_never() {
                            Some(Some(item)) => batch.push(item),
                            _ => break,
                        }
                    }
                    self.process(batch).await;
                }
                _ = tick.tick() => {
                    self.maintain();
                    if self.should_unload() && self.shared.unregister_if_idle(&self.doc_id, self.key, &control) {
                        self.compact().await;
                        info!("room unloaded");
                        return;
                    }
                }
            }
            if self.failed {
                self.shared
                    .close_room(&self.doc_id, self.key, &mut control, CloseCode::Internal);
                return;
            }
        }
    }

    /// Admits a peer (or refuses it with 4013 when the room is full) and
    /// sends it SyncStep1 and the current awareness states.
    fn join(&mut self, link: PeerLink) {
        if self.peers.len() >= self.shared.limits.max_peers_per_room {
            warn!(peer = %link.id, "room full");
            let _ = link.kill.try_send(CloseCode::Capacity);
            return;
        }
        // Two frames: the JS client reads only the first message of a frame.
        let step1 = protocol::encode_sync_step1(&self.doc.transact().state_vector());
        link.health.enqueued(step1.len());
        let _ = link.outbound.try_send(step1);
        if let Some(states) = self.presence.snapshot() {
            let frame = protocol::encode_awareness(&states);
            link.health.enqueued(frame.len());
            let _ = link.outbound.try_send(frame);
        }
        let stream: PeerStream = Box::pin(
            ReceiverStream::new(link.inbound)
                .map(PeerEvent::Frame)
                .chain(tokio_stream::once(PeerEvent::Left)),
        );
        self.inbound.insert(link.id, stream);
        self.peers.insert(
            link.id,
            PeerSlot {
                health: link.health,
                outbound: link.outbound,
                kill: link.kill,
            },
        );
        self.empty_since = None;
        self.shared
            .metrics
            .peers_connected
            .fetch_add(1, Ordering::Relaxed);
        debug!(peer = %link.id, peers = self.peers.len(), "peer joined");
    }

    /// Removes a peer (closing it with `code` if the room ends it) and queues
    /// the removal of its awareness states.
    fn remove_peer(
        &mut self,
        peer: PeerId,
        code: Option<CloseCode>,
        outbox: &mut VecDeque<(Target, Bytes)>,
    ) {
        let Some(slot) = self.peers.remove(&peer) else {
            return;
        };
        if let Some(code) = code {
            let _ = slot.kill.try_send(code);
        }
        self.shared
            .metrics
            .peers_connected
            .fetch_sub(1, Ordering::Relaxed);
        if let Some(removed) = self.presence.remove_peer(peer) {
            outbox.push_back((Target::All, protocol::encode_awareness(&removed)));
        }
        if self.peers.is_empty() {
            self.empty_since = Some(Instant::now());
        }
        debug!(peer = %peer, peers = self.peers.len(), "peer left");
    }

    /// Queues frames to peers; a full queue closes that peer with 4008.
    fn dispatch(&mut self, mut outbox: VecDeque<(Target, Bytes)>) {
        while let Some((target, frame)) = outbox.pop_front() {
            let ids: Vec<PeerId> = match target {
                Target::One(id) => vec![id],
                Target::AllBut(skip) => self.peers.keys().copied().filter(|p| *p != skip).collect(),
                Target::All => self.peers.keys().copied().collect(),
            };
            let mut slow = Vec::new();
            for id in ids {
                let Some(slot) = self.peers.get(&id) else {
                    continue;
                };
                let backlog = slot.health.queued_bytes();
                if backlog > 0 && backlog + frame.len() > self.shared.limits.peer_queue_bytes {
                    slow.push(id);
                    continue;
                }
                match slot.outbound.try_send(frame.clone()) {
                    Ok(()) => {
                        slot.health.enqueued(frame.len());
                        self.shared
                            .metrics
                            .bytes_out
                            .fetch_add(frame.len() as u64, Ordering::Relaxed);
                    }
                    Err(TrySendError::Full(_)) => slow.push(id),
                    Err(TrySendError::Closed(_)) => {}
                }
            }
            for id in slow {
                warn!(peer = %id, "slow peer: outbound queue full");
                self.remove_peer(id, Some(CloseCode::SlowPeer), &mut outbox);
            }
        }
    }

    /// Periodic work: expire awareness states.
    fn maintain(&mut self) {
        if let Some(expired) = self.presence.sweep(Instant::now()) {
            let mut outbox = VecDeque::new();
            outbox.push_back((Target::All, protocol::encode_awareness(&expired)));
            self.dispatch(outbox);
        }
    }

    /// No peer for the whole grace period (a reconnecting client keeps the
    /// document loaded).
    fn should_unload(&self) -> bool {
        self.peers.is_empty()
            && self
                .empty_since
                .is_some_and(|t| t.elapsed() >= self.shared.limits.room_unload_grace())
    }

    /// Closes every peer with `code` (store failure, shutdown).
    fn close_all(&mut self, code: CloseCode) {
        let mut outbox = VecDeque::new();
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in ids {
            self.remove_peer(id, Some(code), &mut outbox);
        }
    }

    /// Server shutdown: closes peers and queued joins with 1001, fails
    /// queued HTTP edits, and compacts the document before the task ends.
    async fn shutdown(&mut self, control: &mut mpsc::UnboundedReceiver<Control>) {
        self.close_all(CloseCode::GoingAway);
        while let Ok(ctl) = control.try_recv() {
            match ctl {
                Control::Join(link) => {
                    let _ = link.kill.try_send(CloseCode::GoingAway);
                }
                Control::Edit(req) => {
                    let _ = req
                        .reply
                        .send(Err(EditError::Unavailable(CloseCode::GoingAway)));
                }
                Control::Shutdown => {}
            }
        }
        self.compact().await;
    }

    /// Starts a compaction if the log passed its threshold and none is running.
    /// The store's compaction is safe alongside appends, so the room goes on.
    fn compact_in_background(&mut self) {
        if self.compacting.load(Ordering::Relaxed)
            || !self.shared.store.needs_compaction(&self.doc_id)
        {
            return;
        }
        self.compacting.store(true, Ordering::Relaxed);
        let (store, id, flag) = (
            self.shared.store.clone(),
            self.doc_id.clone(),
            self.compacting.clone(),
        );
        tokio::task::spawn_blocking(move || {
            if let Err(e) = store.compact(&id) {
                warn!(doc = %id.as_str(), error = %e, "compaction failed");
            }
            flag.store(false, Ordering::Relaxed);
        });
    }

    /// Compacts the document's log into a snapshot (at unload and shutdown).
    async fn compact(&self) {
        let store = self.shared.store.clone();
        let id = self.doc_id.clone();
        match tokio::task::spawn_blocking(move || store.compact(&id)).await {
            Ok(Ok(stats)) => {
                debug!(
                    merged = stats.merged_updates,
                    bytes = stats.snapshot_bytes,
                    "compacted"
                )
            }
            Ok(Err(e)) => warn!(error = %e, "compaction failed"),
            Err(e) => warn!(error = %e, "compaction task failed"),
        }
    }
}
