//! One open document: the room task (an actor) that owns the yrs `Doc`, the
//! awareness table and the peers, and is the only code that touches them.
//!
//! Peers talk to the room over channels: a join arrives on the control
//! queue (`control`) with the peer's `Line`; the room polls every peer's
//! inbound stream, takes everything that is ready as one batch, applies it,
//! appends the batch's updates to the store as one record, and fans the
//! encoded frames out to the peers' bounded outbound queues only once the
//! whole batch is durable (group commit). While a batch waits for its disk
//! sync the room goes on applying the next ones (up to
//! `batch::MAX_IN_FLIGHT`); batches are sent strictly in order, each after
//! its own changes and every earlier batch's are durable, and any other
//! frame (awareness, replies) queues behind them, so nothing a peer
//! receives is ever ahead of the disk or out of order.
//!
//! This file is the actor's lifecycle: load, the run loop, joins and leaves,
//! fan-out to the peers' queues, awareness expiry, compaction, unload and
//! shutdown. The rest, one concept per file:
//!
//! - `control`: the queue joins, HTTP edits and shutdown arrive on.
//! - `cold`: the load, answering joiners that sync from scratch from the
//!   stored bytes while the `Doc` is built.
//! - `batch`: one batch of peer traffic and HTTP edits: the document work
//!   goes to a yrs thread in one job, then await durable → fan out → reply.
//! - `doc_state`: the document and the one write path (inspect → authorize →
//!   apply → caps → store), synchronous and sans I/O; a sender's run of
//!   updates goes through it once, merged.
//! - `live` (the registry's): the live connections and the per-`sub` quotas.
//! - `outbox`: the frames a batch sends, in order, with a sender's
//!   consecutive updates merged into one frame.
//!
//! Containment: all yrs work runs on [`crate::yrs_threads`]; a panic there
//! fails only this room. A panic in the room task itself drops the room:
//! the registry entry is removed by a drop guard (`registry::Registered`) and
//! every peer's slot is dropped, which tells its connection the room let go
//! (`link::RoomEnd`); the connection answers with 1011 (a room never lets go
//! of a live peer without a close code otherwise). The next join opens a fresh room that reloads from the store.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use tandem_store::DocId;
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt, StreamMap};
use tracing::{debug, error, info, warn};

use crate::close::CloseCode;
use crate::link::{InboundFrames, Outgoing, PeerId, PeerLink, QueueError, RoomEnd};
use crate::mailbox::{Control, EditError, EditRequest};
use crate::presence::Presence;
use crate::protocol::{self, Inbound};

use crate::yrs_threads;

mod batch;
mod cold;
mod control;
mod doc_state;
mod live;
mod outbox;
mod registry;
#[cfg(test)]
mod tests;

use control::ControlReceiver;
use doc_state::DocState;
pub(crate) use doc_state::root_kind;
use outbox::{Outbox, Target};
pub(crate) use registry::LivePeer;
pub use registry::Rooms;
use registry::{RoomUsage, Shared};

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
    /// An HTTP edit (never from a peer stream: the room makes a batch of
    /// it). Boxed, as it comes in `Control::Edit`: it would make every
    /// event as large (~90 bytes, not 32), and events sit in every idle
    /// room's task (the loop's next-event slot) and in every peer's stream.
    Edit(Box<EditRequest>),
}

/// A peer's inbound frames followed by `Left`, so the room learns of a
/// departure in order with the peer's traffic, from the same `StreamMap`.
///
/// A plain struct, not a boxed chain of stream adapters: the map holds it
/// inline (40 bytes), where the chain was a ~120-byte allocation per peer.
struct PeerStream {
    /// A frame read while the document loaded, handed out before the rest.
    first: Option<Vec<Inbound>>,
    /// The peer's frames as its connection queues them.
    inbound: InboundFrames,
    /// `inbound` ended and `Left` was handed out: the stream is done.
    left: bool,
}

impl Stream for PeerStream {
    type Item = PeerEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<PeerEvent>> {
        let this = self.get_mut();
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(PeerEvent::Frame(first)));
        }
        if this.left {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inbound).poll_next(cx) {
            Poll::Ready(Some(frame)) => Poll::Ready(Some(PeerEvent::Frame(frame))),
            Poll::Ready(None) => {
                this.left = true;
                Poll::Ready(Some(PeerEvent::Left))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The room's view of a joined peer.
struct PeerSlot {
    /// The room's end of the connection's line: its liveness (for awareness
    /// takeover), its outbound backlog in bytes (for `--peer-queue-bytes`),
    /// its bounded outbound queue (the room only `try_send`s, so a full
    /// queue closes the peer with 4008 instead of stalling the room) and its
    /// kill switch (a close code that bypasses a full queue). Dropping the
    /// slot tells the connection the room let go of it.
    health: RoomEnd,
    /// The connection's principal may change the document (else its
    /// changes are refused with a y-protocols "permission denied").
    may_write: bool,
    /// Awareness rate limit: when this peer's next awareness broadcast may go.
    awareness_next: Instant,
    /// Awareness changes held back by the rate limit, merged (latest state
    /// per client id), sent at `awareness_next`. Boxed: held only briefly,
    /// and inline it would double every slot in every room's peer map
    /// (80 bytes, not 40).
    awareness_held: Option<Box<yrs::sync::AwarenessUpdate>>,
}

/// Most awareness frames that wait to ride at once (see [`Room::dispatch`]);
/// past it they go out with the ones before them at once. Each is at most
/// `--max-awareness-bytes` per client id it carries, and a connection makes
/// at most `--awareness-per-sec` of them.
const MAX_RIDING: usize = 256;

/// Awareness frames waiting for the room's next dispatch to ride with.
struct Riding {
    /// The frames, in order, each for every peer.
    frames: Vec<Bytes>,
    /// When they go out alone if nothing else is sent first.
    until: Instant,
}

/// The room for `doc`: a future that runs it until it unloads, fails or
/// the server stops (the registry spawns it).
///
/// Built without an `async fn`, so the room task holds its state once: an
/// `async fn` copies its arguments into its body's locals and keeps both.
/// The load is boxed (~740 bytes, only while it runs), so an idle room's
/// task holds the room and its loop alone.
pub(crate) fn run(
    doc_id: DocId,
    key: u64,
    control: ControlReceiver,
    usage: Arc<RoomUsage>,
    shared: Arc<Shared>,
    running: mpsc::Sender<()>,
) -> impl Future<Output = ()> + Send {
    let mut room = Room {
        presence: Presence::new(shared.limits.awareness_timeout()),
        doc_id,
        key,
        state: None,
        peers: HashMap::new(),
        inbound: StreamMap::new(),
        empty_since: Some(Instant::now()),
        awareness_due: None,
        riding: None,
        compacting: Arc::new(AtomicBool::new(false)),
        in_flight: VecDeque::new(),
        usage,
        had_peer: false,
        shared,
    };
    let mut control = control;
    async move {
        // Held until the room ends (`Shared::all_stopped` waits for it).
        let _running = &running;
        // Joiners are answered from the stored bytes while the `Doc` loads (`cold`).
        let held = match Box::pin(cold::load(&mut room, &mut control)).await {
            Ok(held) => held,
            Err(e) => {
                error!(error = %e, "loading document failed");
                room.close_all(CloseCode::Internal);
                let shared = room.shared.clone();
                shared.close_room(&room.doc_id, room.key, &mut control, CloseCode::Internal);
                return;
            }
        };
        room.shared
            .metrics
            .room_loads
            .fetch_add(1, Ordering::Relaxed);
        debug!("room loaded");
        room.run(&mut control, held).await;
    }
}

/// Whether the room goes on after handling something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// Carry on.
    Go,
    /// The store failed or the document work panicked: every peer was
    /// closed with 1011; the room must unregister and end.
    Failed,
}

/// The actor's state: owned by the room task alone, so nothing is locked.
struct Room {
    /// The document this room serves: its store key and registry key.
    doc_id: DocId,
    /// Registry key of this room instance (a reopened document gets a new one),
    /// so a stale room never unregisters its successor.
    key: u64,
    /// The live document and its write path; moved to a yrs thread for each
    /// batch and back (`None` only while a job runs or after it panicked).
    state: Option<DocState>,
    /// Awareness states with their owning connection and expiry.
    presence: Presence,
    /// The joined peers, to fan frames out to and to close.
    peers: HashMap<PeerId, PeerSlot>,
    /// Every peer's inbound stream, polled together so one batch takes what
    /// all peers have ready, in arrival order per peer.
    inbound: StreamMap<PeerId, PeerStream>,
    /// When the last peer left (unload after the grace period).
    empty_since: Option<Instant>,
    /// The earliest time a held-back awareness change may go out.
    awareness_due: Option<Instant>,
    /// Awareness frames waiting to ride with the next frame to each peer
    /// (see [`Room::dispatch`]). Boxed: an idle room holds one pointer.
    riding: Option<Box<Riding>>,
    /// A background compaction is running (at most one per document; the
    /// flag is shared with the blocking task that clears it).
    compacting: Arc<AtomicBool>,
    /// Batches applied and on their way to disk, oldest first (at most
    /// `batch::MAX_IN_FLIGHT`); each is sent once durable, in order.
    in_flight: VecDeque<batch::InFlight>,
    /// In use or idle, for the registry's least-recently-used eviction:
    /// released once per handled control message and per departed peer.
    usage: Arc<RoomUsage>,
    /// A peer has joined since the room loaded; until then (a room opened
    /// by HTTP requests only) it unloads after `--http-room-grace-ms`.
    had_peer: bool,
    /// The store, limits and metrics, and the registry to unregister from.
    shared: Arc<Shared>,
}

impl Room {
    /// The actor's loop: control messages first (joins, HTTP edits,
    /// shutdown), then a batch of peer traffic, then periodic maintenance.
    async fn run(&mut self, control: &mut ControlReceiver, first: Option<Control>) {
        let limits = &self.shared.limits;
        let tick_every = limits
            .room_unload_grace()
            .min(limits.http_room_grace())
            .min(Duration::from_secs(1))
            .max(Duration::from_millis(20));
        // Maintenance wakes the room only when something is due: a held-back
        // awareness change, the next awareness expiry, or (with no peer)
        // the unload check every `tick_every`. A room of idle peers without
        // awareness states sleeps (it used to tick every second: 5,000 idle
        // rooms were 5,000 wakeups a second). One timer for all three: each
        // `Sleep` is ~112 bytes in every room's task.
        // Pinned where it is made (`tokio::pin!` would move it into a
        // second slot of this future, which then holds both).
        let mut maintenance = std::pin::pin!(tokio::time::sleep(tick_every));
        let mut unload_check: Option<Instant> = None;
        // A control message that arrived while the document loaded comes first.
        if let Some(ctl) = first {
            // Boxed, like every await of `on_control` (see the loop).
            match Box::pin(self.on_control(Some(ctl), control)).await {
                Some(Flow::Go) => {}
                Some(Flow::Failed) => {
                    self.shared
                        .close_room(&self.doc_id, self.key, control, CloseCode::Internal);
                    return;
                }
                None => return,
            }
        }
        loop {
            if self.peers.is_empty() {
                unload_check.get_or_insert_with(|| Instant::now() + tick_every);
            } else {
                unload_check = None;
            }
            let riding_due = self.riding.as_ref().map(|r| r.until);
            let due = [
                unload_check,
                self.presence.next_due(),
                self.awareness_due,
                riding_due,
            ]
            .into_iter()
            .flatten()
            .min();
            if let Some(due) = due
                && maintenance.deadline() != due.into()
            {
                maintenance.as_mut().reset(due.into());
            }
            let flow = tokio::select! {
                biased;
                ctl = control.recv() => match ctl {
                    // A join needs no await: handled in place.
                    Some(Control::Join(link)) => {
                        self.join(*link);
                        Flow::Go
                    }
                    // Boxed: an edit, eviction or shutdown is rare, and its
                    // state would otherwise sit in every idle room's task.
                    ctl => match Box::pin(self.on_control(ctl, control)).await {
                        Some(flow) => flow,
                        None => return,
                    },
                },
                // The oldest batch on its way to disk is there: send it.
                durable = std::future::poll_fn(|cx| batch::poll_oldest(&mut self.in_flight, cx)), if !self.in_flight.is_empty() => {
                    self.settle(durable)
                }
                Some(first) = self.inbound.next(), if !self.inbound.is_empty() && self.in_flight.len() < batch::MAX_IN_FLIGHT => {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match self.inbound.next().now_or_never() {
                            Some(Some(item)) => batch.push(item),
                            _ => break,
                        }
                    }
                    Box::pin(self.process(batch)).await
                }
                _ = &mut maintenance, if due.is_some() => {
                    // What was due by the deadline that fired, in the order
                    // the two timers' branches had: awareness first.
                    let fired = maintenance.deadline().into_std();
                    if riding_due.is_some_and(|at| at <= fired) {
                        self.flush_riding();
                    }
                    if self.awareness_due.is_some_and(|at| at <= fired) {
                        let mut outbox = Outbox::default();
                        self.release_awareness(&mut outbox);
                        self.send(outbox);
                    }
                    if unload_check.is_some_and(|at| at <= fired)
                        || self.presence.next_due().is_some_and(|at| at <= fired)
                    {
                        unload_check = None;
                        self.maintain();
                        if self.should_unload() && self.shared.unregister_if_idle(&self.doc_id, self.key, control) {
                            self.compact().await;
                            info!("room unloaded");
                            return;
                        }
                    }
                    Flow::Go
                }
            };
            if flow == Flow::Failed {
                self.shared
                    .close_room(&self.doc_id, self.key, control, CloseCode::Internal);
                return;
            }
        }
    }

    /// Handles one control message (`None`: the registry is gone, as at
    /// shutdown); `None` back when the room has ended.
    async fn on_control(
        &mut self,
        ctl: Option<Control>,
        control: &mut ControlReceiver,
    ) -> Option<Flow> {
        match ctl {
            Some(Control::Edit(req)) => {
                // Boxed: the batch's state exists only while it runs, not
                // in every idle room's task.
                let flow =
                    Box::pin(self.process(vec![(PeerId::SERVER, PeerEvent::Edit(req))])).await;
                self.usage.release(&self.shared);
                Some(flow)
            }
            Some(Control::Evict) => {
                self.settle_all().await;
                self.compact().await;
                info!("room unloaded to make space (least recently used)");
                None
            }
            #[cfg(test)]
            Some(Control::Panic) => panic!("test: the room task panics"),
            Some(Control::Shutdown) | None => {
                self.settle_all().await;
                self.shutdown(control).await;
                None
            }
            Some(Control::Join(link)) => {
                self.join(*link);
                Some(Flow::Go)
            }
        }
    }

    /// Admits a peer (or refuses it with 4013 when the room is full), sends
    /// it SyncStep1 and the current awareness states, and starts reading it.
    fn join(&mut self, link: PeerLink) {
        if let Some((id, inbound)) = self.admit(link)
            && self.greet(id)
        {
            self.listen(id, None, inbound);
        }
    }

    /// Adds a peer to the room (or refuses it with 4013 when the room is
    /// full); returns its inbound frames, not yet read (see `listen`).
    fn admit(&mut self, link: PeerLink) -> Option<(PeerId, InboundFrames)> {
        if self.peers.len() >= self.shared.limits.max_peers_per_room {
            warn!(peer = %link.id, "room full");
            let _ = link.kill.try_send(CloseCode::Capacity);
            self.usage.release(&self.shared);
            return None;
        }
        let inbound = link.line.inbound();
        self.peers.insert(
            link.id,
            PeerSlot {
                health: link.line,
                may_write: link.principal.mode.can_write(),
                awareness_next: Instant::now(),
                awareness_held: None,
            },
        );
        self.empty_since = None;
        self.had_peer = true;
        self.shared
            .metrics
            .peers_connected
            .fetch_add(1, Ordering::Relaxed);
        debug!(peer = %link.id, peers = self.peers.len(), "peer joined");
        Some((link.id, inbound))
    }

    /// Sends an admitted peer SyncStep1 (the loaded document's state
    /// vector) and the current awareness states; false (and the peer
    /// closed with 1011) when the room has no document.
    fn greet(&mut self, id: PeerId) -> bool {
        let Some(state) = &self.state else {
            let mut outbox = Outbox::default();
            self.remove_peer(id, Some(CloseCode::Internal), &mut outbox);
            return false;
        };
        let Some(slot) = self.peers.get(&id) else {
            return false;
        };
        // Two frames (the JS client reads only the first message of a
        // frame), in one write.
        let step1 = Outgoing::new(protocol::encode_sync_step1(&state.state_vector()));
        let awareness = self
            .presence
            .snapshot()
            .map(|s| Outgoing::new(protocol::encode_awareness(&s)));
        let frames: Vec<&Outgoing> = std::iter::once(&step1).chain(awareness.as_ref()).collect();
        let _ = slot.health.try_send_all(&frames);
        true
    }

    /// Starts reading an admitted peer: `first` (a frame read while the
    /// document loaded, minus what was answered then) before the rest.
    fn listen(&mut self, id: PeerId, first: Option<Vec<Inbound>>, inbound: InboundFrames) {
        let stream = PeerStream {
            first,
            inbound,
            left: false,
        };
        self.inbound.insert(id, stream);
    }

    /// Removes a peer (closing it with `code` if the room ends it) and queues
    /// the removal of its awareness states.
    fn remove_peer(&mut self, peer: PeerId, code: Option<CloseCode>, outbox: &mut Outbox) {
        let Some(slot) = self.peers.remove(&peer) else {
            return;
        };
        self.usage.release(&self.shared);
        // What the rate limit held back still goes out (often the peer's own
        // goodbye: its states set to null just before it closed).
        if let Some(held) = slot.awareness_held.as_ref() {
            outbox.push(Target::All, protocol::encode_awareness(held));
        }
        if let Some(code) = code {
            let _ = slot.health.kill(code);
        }
        self.shared
            .metrics
            .peers_connected
            .fetch_sub(1, Ordering::Relaxed);
        if let Some(removed) = self.presence.remove_peer(peer) {
            outbox.push(Target::All, protocol::encode_awareness(&removed));
        }
        if self.peers.is_empty() {
            self.empty_since = Some(Instant::now());
        }
        debug!(peer = %peer, peers = self.peers.len(), "peer left");
    }

    /// Sends `outbox`'s frames to the peers, in order; a peer whose queue
    /// cannot take them is closed with 4008.
    ///
    /// Each peer's frames of one dispatch go out in ONE socket write
    /// ([`crate::link::Line::try_send_all`]). Awareness broadcasts with
    /// nothing else to go with them (a cursor moved) ride: they wait, at
    /// most `--awareness-delay-ms`, for the room's next dispatch, and go out
    /// in front of its frames in the same writes. In a typing room that
    /// next dispatch is the next edit, a few ms later, so a cursor costs
    /// each peer no write of its own. Each peer still receives everything in
    /// arrival order: the riding frames are older than any frame dispatched
    /// after them, and nothing is dispatched to a peer without them first.
    fn dispatch(&mut self, mut outbox: Outbox) {
        let mut frames: Vec<(Target, Bytes)> = std::iter::from_fn(|| outbox.pop()).collect();
        if frames.is_empty() {
            return;
        }
        let delay = self.shared.limits.awareness_delay();
        let riding = self.riding.as_ref().map_or(0, |r| r.frames.len());
        if !delay.is_zero()
            && riding + frames.len() <= MAX_RIDING
            && frames
                .iter()
                .all(|(target, _)| matches!(target, Target::All))
        {
            let ride = self.riding.get_or_insert_with(|| {
                Box::new(Riding {
                    frames: Vec::new(),
                    until: Instant::now() + delay,
                })
            });
            ride.frames
                .extend(frames.into_iter().map(|(_, frame)| frame));
            return;
        }
        if let Some(ride) = self.riding.take() {
            frames.splice(0..0, ride.frames.into_iter().map(|f| (Target::All, f)));
        }
        self.fan_out(frames);
    }

    /// Sends the awareness frames waiting to ride, alone (their time is up,
    /// or the room is about to stop).
    fn flush_riding(&mut self) {
        if let Some(ride) = self.riding.take() {
            self.fan_out(ride.frames.into_iter().map(|f| (Target::All, f)).collect());
        }
    }

    /// Writes each peer its frames of `frames`, in order, in one write; a
    /// peer whose queue cannot take them is closed with 4008 (and the
    /// removal of its awareness states sent right after).
    fn fan_out(&mut self, mut frames: Vec<(Target, Bytes)>) {
        let (peer_queue_bytes, max_queued_bytes) = {
            let limits = &self.shared.limits;
            (limits.peer_queue_bytes, limits.max_queued_bytes)
        };
        while !frames.is_empty() {
            // Framed for the socket at most once each, for all peers.
            let outgoing: Vec<(Target, Outgoing)> = frames
                .drain(..)
                .map(|(target, frame)| (target, Outgoing::new(frame)))
                .collect();
            let mut mine: Vec<&Outgoing> = Vec::new();
            let mut slow = Vec::new();
            for (&id, slot) in &self.peers {
                mine.clear();
                mine.extend(
                    outgoing
                        .iter()
                        .filter(|(t, _)| t.includes(id))
                        .map(|(_, f)| f),
                );
                if mine.is_empty() {
                    continue;
                }
                let len: usize = mine.iter().map(|f| f.len()).sum();
                let backlog = slot.health.queued_bytes();
                if backlog > 0
                    && (backlog + len > peer_queue_bytes
                        || slot.health.server_queued() + len > max_queued_bytes)
                {
                    slow.push(id);
                    continue;
                }
                match slot.health.try_send_all(&mine) {
                    Ok(()) => {
                        self.shared
                            .metrics
                            .bytes_out
                            .fetch_add(len as u64, Ordering::Relaxed);
                    }
                    Err(QueueError::Full) => slow.push(id),
                    Err(QueueError::Closed) => {}
                }
            }
            drop(mine);
            let mut removals = Outbox::default();
            for id in slow {
                warn!(peer = %id, "slow peer: outbound queue full");
                self.remove_peer(id, Some(CloseCode::SlowPeer), &mut removals);
            }
            frames.extend(std::iter::from_fn(|| removals.pop()));
        }
    }

    /// Periodic work: expire awareness states.
    fn maintain(&mut self) {
        if let Some(expired) = self.presence.sweep(Instant::now()) {
            let mut outbox = Outbox::default();
            outbox.push(Target::All, protocol::encode_awareness(&expired));
            self.send(outbox);
        }
    }

    /// No peer for the whole grace period (a reconnecting client keeps the
    /// document loaded); a room no peer ever joined (opened by HTTP
    /// requests) has the short `--http-room-grace-ms`.
    fn should_unload(&self) -> bool {
        let limits = &self.shared.limits;
        let grace = if self.had_peer {
            limits.room_unload_grace()
        } else {
            limits.http_room_grace()
        };
        self.peers.is_empty()
            && self.in_flight.is_empty()
            && self.empty_since.is_some_and(|t| t.elapsed() >= grace)
    }

    /// Closes every peer with `code` (store failure, shutdown).
    fn close_all(&mut self, code: CloseCode) {
        let mut outbox = Outbox::default();
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in ids {
            self.remove_peer(id, Some(code), &mut outbox);
        }
    }

    /// Server shutdown: closes peers and queued joins with 1001, fails
    /// queued HTTP edits, and compacts the document before the task ends.
    async fn shutdown(&mut self, control: &mut ControlReceiver) {
        self.close_all(CloseCode::GoingAway);
        while let Some(ctl) = control.try_recv() {
            match ctl {
                Control::Join(link) => {
                    let _ = link.kill.try_send(CloseCode::GoingAway);
                }
                Control::Edit(req) => {
                    let _ = req
                        .reply
                        .send(Err(EditError::Unavailable(CloseCode::GoingAway)));
                }
                Control::Shutdown | Control::Evict => {}
                #[cfg(test)]
                Control::Panic => {}
            }
        }
        self.compact().await;
    }

    /// Starts a compaction if the log passed its threshold and none is
    /// running: from `live` (the live document, encoded by the batch that
    /// found the compaction due) when there is one, else, before this room
    /// has appended anything, by the store's replay. Due but without
    /// `live`, it waits for the next batch to encode it. The store's
    /// compaction is safe alongside appends, so the room goes on.
    fn compact_in_background(&mut self, live: Option<(tandem_store::Seq, Vec<u8>)>) {
        if self.compacting.load(Ordering::Relaxed) {
            return;
        }
        if live.is_none()
            && (self.state.as_ref().is_none_or(|s| s.has_appended())
                || !self.shared.store.needs_compaction(&self.doc_id))
        {
            return;
        }
        self.compacting.store(true, Ordering::Relaxed);
        let (store, id, flag) = (
            self.shared.store.clone(),
            self.doc_id.clone(),
            self.compacting.clone(),
        );
        let job = yrs_threads::run(move || {
            let compacted = match live {
                Some((upto, state)) => store.compact_from_state(&id, upto, state),
                None => store.compact(&id),
            };
            if let Err(e) = compacted {
                warn!(doc = %id.as_str(), error = %e, "compaction failed");
            }
        });
        tokio::spawn(async move {
            if job.await.is_err() {
                warn!("compaction panicked");
            }
            flag.store(false, Ordering::Relaxed);
        });
    }

    /// Compacts the document's log into a snapshot (at unload and shutdown).
    async fn compact(&self) {
        let store = self.shared.store.clone();
        let id = self.doc_id.clone();
        match yrs_threads::run(move || store.compact(&id)).await {
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
