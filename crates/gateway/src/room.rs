//! One open document: the room task (an actor) that owns the yrs `Doc`, the
//! awareness table and the peers, and is the only code that touches them.
//!
//! Peers talk to the room over channels: a join arrives on the control
//! channel with the peer's inbound receiver; the room polls every peer's
//! inbound stream, takes everything that is ready as one batch, applies it,
//! appends the batch's updates to the store as one record, awaits durability
//! once for the whole batch (group commit), and only then fans the encoded
//! frames out to the peers' bounded outbound queues. Consecutive updates of
//! a batch from one sender go out as one merged update frame (`run`), so a
//! fast typist costs each receiver one frame per batch, not per keystroke.

use std::collections::{HashMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
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
use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, Text, Transact};

use crate::close::CloseCode;
use crate::mailbox::{Control, PeerLink};
use crate::mailbox::{Edit, EditError, PeerId};
use crate::peer::PeerHealth;
use crate::presence::Presence;
use crate::protocol::{self, Inbound};
use crate::rooms::Shared;

mod run;
use run::Run;

/// Most inbound frames handled as one batch (one durability wait).
const MAX_BATCH: usize = 256;

/// One item of a peer's inbound stream; `Left` always comes last.
enum PeerEvent {
    Frame(Vec<Inbound>),
    Left,
}

type PeerStream = Pin<Box<dyn Stream<Item = PeerEvent> + Send + Sync>>;

/// The room's view of a joined peer.
struct PeerSlot {
    health: Arc<PeerHealth>,
    outbound: mpsc::Sender<Bytes>,
    kill: mpsc::Sender<CloseCode>,
}

/// Who receives an outgoing frame.
enum Target {
    One(PeerId),
    AllBut(PeerId),
    All,
}

/// Where handling a message puts its results.
struct Out<'a> {
    /// Frames to send once the batch is durable, in order.
    outbox: &'a mut VecDeque<(Target, Bytes)>,
    /// Updates waiting to join `outbox` as one frame.
    run: &'a mut Run,
    /// Applied updates not yet handed to the store.
    unstored: &'a mut Vec<Bytes>,
    /// Set when yrs rejected an update: the document must be reloaded.
    reload: &'a mut bool,
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

async fn load(store: &Store, doc_id: &DocId) -> Result<Doc, String> {
    let store = store.clone();
    let id = doc_id.clone();
    tokio::task::spawn_blocking(move || store.load(&id))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

struct Room {
    doc_id: DocId,
    /// Registry key of this room instance (a reopened document gets a new one).
    key: u64,
    doc: Doc,
    presence: Presence,
    peers: HashMap<PeerId, PeerSlot>,
    inbound: StreamMap<PeerId, PeerStream>,
    /// When the last peer left (unload after the grace period).
    empty_since: Option<Instant>,
    /// The store failed: every peer was closed with 1011; the room must go.
    failed: bool,
    /// A background compaction is running.
    compacting: Arc<AtomicBool>,
    shared: Arc<Shared>,
}

impl Room {
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

    async fn process(&mut self, batch: Vec<(PeerId, PeerEvent)>) {
        let mut outbox = VecDeque::new();
        let mut tickets = Vec::new();
        // Applied updates not yet handed to the store (one record per batch).
        let mut unstored = Vec::new();
        // Consecutive updates from one sender, broadcast as one merged frame.
        let mut run = Run::default();
        let mut reload = false;
        for (peer, event) in batch {
            match event {
                PeerEvent::Left => {
                    run.flush(&mut outbox);
                    self.remove_peer(peer, None, &mut outbox);
                }
                PeerEvent::Frame(messages) => {
                    for message in messages {
                        if self.failed || !self.peers.contains_key(&peer) {
                            break;
                        }
                        let mut out = Out {
                            outbox: &mut outbox,
                            run: &mut run,
                            unstored: &mut unstored,
                            reload: &mut reload,
                        };
                        if let Err(code) = self.handle(peer, message, &mut out) {
                            run.flush(&mut outbox);
                            self.remove_peer(peer, Some(code), &mut outbox);
                        }
                        if reload {
                            // A rejected or panicking update may have left partial
                            // state: the store holds exactly what was accepted
                            // (once the accepted updates of this batch are in it).
                            reload = false;
                            self.store(&mut unstored, &mut tickets);
                            if self.failed {
                                break;
                            }
                            match load(&self.shared.store, &self.doc_id).await {
                                Ok(doc) => self.doc = doc,
                                Err(e) => {
                                    error!(error = %e, "reloading document failed");
                                    self.failed = true;
                                }
                            }
                        }
                    }
                }
            }
            if self.failed {
                break;
            }
        }
        run.flush(&mut outbox);
        self.store(&mut unstored, &mut tickets);
        // Group commit: one durability wait for the whole batch, before anything is sent.
        let durable =
            futures_util::future::join_all(tickets.into_iter().map(|t| t.durable())).await;
        if let Some(Err(e)) = durable.into_iter().find(|r| r.is_err()) {
            error!(error = %e, "store failed to persist updates");
            self.failed = true;
        }
        if self.failed {
            self.close_all(CloseCode::Internal);
            return;
        }
        self.dispatch(outbox);
        self.compact_in_background();
    }

    /// Appends the applied updates in `unstored` to the store as one batch
    /// record (one sled write) and keeps its ticket; a store error fails the
    /// room.
    fn store(&mut self, unstored: &mut Vec<Bytes>, tickets: &mut Vec<tandem_store::Appended>) {
        if unstored.is_empty() || self.failed {
            return;
        }
        let updates: Vec<&[u8]> = unstored.iter().map(|u| &u[..]).collect();
        match self.shared.store.append_batch(&self.doc_id, &updates) {
            Ok(ticket) => tickets.push(ticket),
            Err(e) => {
                error!(error = %e, "store append failed");
                self.failed = true;
            }
        }
        unstored.clear();
    }

    /// Applies one update; on success it joins `out.unstored` (for the
    /// caller to store) and `out.run` (for the broadcast). If yrs rejects
    /// it (or panics), sets `out.reload`.
    fn handle_update(
        &mut self,
        peer: PeerId,
        raw: Bytes,
        update: yrs::Update,
        out: &mut Out<'_>,
    ) -> Result<(), CloseCode> {
        if update.is_empty() {
            return Ok(());
        }
        let applied = catch_unwind(AssertUnwindSafe(|| {
            self.doc.transact_mut().apply_update(update)
        }));
        match applied {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                warn!(peer = %peer, error = %e, "update rejected");
                *out.reload = true;
                return Err(CloseCode::Malformed);
            }
            Err(_) => {
                warn!(peer = %peer, "update made yrs panic");
                *out.reload = true;
                return Err(CloseCode::Malformed);
            }
        }
        self.shared
            .metrics
            .updates_applied
            .fetch_add(1, Ordering::Relaxed);
        out.run.push(peer, raw.clone(), out.outbox);
        out.unstored.push(raw);
        Ok(())
    }

    /// Handles one message; `Err` closes the peer with that code.
    fn handle(
        &mut self,
        peer: PeerId,
        message: Inbound,
        out: &mut Out<'_>,
    ) -> Result<(), CloseCode> {
        if !matches!(message, Inbound::Update { .. }) {
            // Anything else is queued after the updates before it.
            out.run.flush(out.outbox);
        }
        let outbox = &mut *out.outbox;
        match message {
            Inbound::SyncStep1(sv) => {
                let diff = self.doc.transact().encode_diff_v1(&sv);
                outbox.push_back((Target::One(peer), protocol::encode_sync_step2(&diff)));
            }
            Inbound::Update { raw, update } => {
                return self.handle_update(peer, raw, update, out);
            }
            Inbound::Awareness(update) => {
                // An owner silent past a ping round trip is presumed gone (the
                // half-open socket of a client that has already reconnected).
                let peers = &self.peers;
                let alive_within = self.shared.limits.ping_interval() * 3 / 2;
                let owner_alive = |o: PeerId| {
                    peers
                        .get(&o)
                        .is_some_and(|p| p.health.silent_for() < alive_within)
                };
                let applied = self
                    .presence
                    .apply(peer, update, Instant::now(), owner_alive);
                self.after_awareness(peer, applied, outbox)?;
            }
            Inbound::QueryAwareness => {
                if let Some(states) = self.presence.snapshot() {
                    outbox.push_back((Target::One(peer), protocol::encode_awareness(&states)));
                }
            }
            // No auth yet: auth messages are accepted and ignored.
            Inbound::Auth => {}
        }
        Ok(())
    }

    /// Applies, stores and broadcasts an HTTP edit.
    async fn edit(&mut self, edit: Edit) -> Result<(), EditError> {
        let update = match edit {
            Edit::Update(raw) => {
                let decoded = catch_unwind(AssertUnwindSafe(|| yrs::Update::decode_v1(&raw)))
                    .map_err(|_| EditError::Malformed("decoder panicked".into()))?
                    .map_err(|e| EditError::Malformed(e.to_string()))?;
                let applied = catch_unwind(AssertUnwindSafe(|| {
                    self.doc.transact_mut().apply_update(decoded)
                }));
                if !matches!(applied, Ok(Ok(()))) {
                    self.doc = load(&self.shared.store, &self.doc_id)
                        .await
                        .map_err(EditError::Store)?;
                    return Err(EditError::Malformed("yrs rejected the update".into()));
                }
                raw.to_vec()
            }
            Edit::ReplaceText(new) => {
                let before = self.doc.transact().state_vector();
                let text = self.doc.get_or_insert_text(crate::api::TEXT_ROOT);
                {
                    let mut txn = self.doc.transact_mut();
                    let len = text.len(&txn);
                    text.remove_range(&mut txn, 0, len);
                    text.insert(&mut txn, 0, &new);
                }
                self.doc.transact().encode_diff_v1(&before)
            }
        };
        let stored = match self.shared.store.append(&self.doc_id, &update) {
            Ok(ticket) => ticket.durable().await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = stored {
            error!(error = %e, "store failed to persist an HTTP edit");
            self.failed = true;
            self.close_all(CloseCode::Internal);
            return Err(EditError::Store(e.to_string()));
        }
        self.shared
            .metrics
            .updates_applied
            .fetch_add(1, Ordering::Relaxed);
        let mut outbox = VecDeque::new();
        outbox.push_back((Target::All, protocol::encode_update(&update)));
        self.dispatch(outbox);
        if self.peers.is_empty() {
            self.empty_since = Some(Instant::now());
        }
        self.compact_in_background();
        Ok(())
    }

    /// Queues the awareness changes for every peer, or refuses the sender.
    fn after_awareness(
        &self,
        peer: PeerId,
        applied: Result<Option<yrs::sync::AwarenessUpdate>, crate::presence::NotOwner>,
        outbox: &mut VecDeque<(Target, Bytes)>,
    ) -> Result<(), CloseCode> {
        match applied {
            Ok(Some(changed)) => {
                self.shared
                    .metrics
                    .awareness_updates
                    .fetch_add(1, Ordering::Relaxed);
                outbox.push_back((Target::All, protocol::encode_awareness(&changed)));
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => {
                warn!(peer = %peer, error = %e, "awareness rejected");
                Err(CloseCode::NotOwner)
            }
        }
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

    fn should_unload(&self) -> bool {
        self.peers.is_empty()
            && self
                .empty_since
                .is_some_and(|t| t.elapsed() >= self.shared.limits.room_unload_grace())
    }

    fn close_all(&mut self, code: CloseCode) {
        let mut outbox = VecDeque::new();
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in ids {
            self.remove_peer(id, Some(code), &mut outbox);
        }
    }

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
