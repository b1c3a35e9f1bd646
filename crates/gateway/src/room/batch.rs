//! Applying one batch of peer traffic: decode (already done by the
//! connection) → apply to the `Doc` → `append_batch` → await durable → fan
//! out. Nothing of a batch is sent before all of its updates are durable.
//!
//! An update yrs rejects (or panics on) closes its sender with 1007 and is
//! not stored. Since yrs may have left partial state, the room then appends
//! the updates this batch has already accepted (from anyone, including the
//! offender's earlier messages in the same frame) and reloads the `Doc` from
//! the store; those accepted updates are still broadcast once durable. The
//! rest of the batch is applied to the reloaded document.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use tracing::{error, warn};
use yrs::{ReadTxn, Transact};

use super::run::Run;
use super::{PeerEvent, Room, Target, load};
use crate::close::CloseCode;
use crate::mailbox::PeerId;
use crate::protocol::{self, Inbound};

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

impl Room {
    /// Handles one batch (see the module docs); a store failure closes
    /// every peer with 1011 and marks the room failed.
    pub(super) async fn process(&mut self, batch: Vec<(PeerId, PeerEvent)>) {
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
}
