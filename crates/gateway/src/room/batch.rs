//! One batch of peer traffic and HTTP edits: the document work of the whole
//! batch goes to a yrs thread as one job ([`DocState::apply`]), then the
//! batch waits for its store appends once (group commit) as an [`InFlight`]
//! batch, then its frames go out in arrival order and its HTTP edits are
//! answered. Nothing of a batch is sent before all of its changes, and all
//! of every earlier batch's, are durable; meanwhile the room applies the
//! next batches (at most [`MAX_IN_FLIGHT`] wait at once), so a fast sender
//! is not held to one batch per disk sync. A small batch with none before
//! it in flight (a keystroke) runs its sync on the room's own task, which
//! saves two thread hand-offs per edit; a batch behind another or larger
//! than [`LEAD_EVENTS`] (a stream) hands its sync to the store's flusher
//! thread so the room goes on with the next ones (see `tandem_store`'s
//! `commit` module for the numbers).
//!
//! A refused change closes its sender (1007, or 4413 past the size quota) or
//! fails its HTTP edit; nothing of it is stored, and whatever the batch
//! accepted before it is stored and sent as usual.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use tandem_store::{Appended, StoreError};

use tokio::sync::oneshot;
use tracing::{error, warn};

use super::doc_state::{DocOp, Outcome};
use super::{Flow, Outbox, PeerEvent, Room, Target};
use crate::close::CloseCode;
use crate::inspect::Encoding;
use crate::link::PeerId;
use crate::mailbox::{Edit, EditError, RoomError};
use crate::protocol::{self, Inbound};
use crate::yrs_threads;

/// Bytes of document ops in a batch that may be applied in place (see
/// [`yrs_threads::run_small`]): a few KiB into a small document with
/// nothing pending is well under a millisecond.
const SMALL_BATCH: usize = 16 * 1024;

/// What the room does with one item of the batch once the document work is
/// done, in arrival order.
enum Step {
    /// The peer left.
    Left(PeerId),
    /// The outcome of the next document op, from this peer.
    Doc(PeerId),
    /// The outcome of the next document op, for this HTTP edit.
    Edit(oneshot::Sender<Result<(), EditError>>),
    /// An awareness update.
    Awareness(PeerId, yrs::sync::AwarenessUpdate),
    /// A query for every awareness state.
    Query(PeerId),
}

/// Result to send to an HTTP edit once the batch is durable.
type Ack = (
    oneshot::Sender<Result<(), EditError>>,
    Result<(), EditError>,
);

/// Most batches on their way to disk at once: while the oldest waits for
/// its sync the room applies the next ones, so one sync covers several
/// batches (a streaming client is no longer held to one batch per sync).
/// Bounds what the room holds of frames not yet sent.
pub(super) const MAX_IN_FLIGHT: usize = 8;

/// Most events in a batch whose room runs its disk sync itself (when no
/// other batch is in flight); a larger batch means a stream, whose syncs
/// the flusher runs in the background.
const LEAD_EVENTS: usize = 4;

/// Resolves once every store append of a batch is durable.
type Durable = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>>;

/// A batch whose changes are applied and on their way to disk: its frames
/// and HTTP answers go out once they are durable, after every earlier
/// batch's (durable before broadcast, in order).
pub(super) struct InFlight {
    /// Resolves once every store append of the batch is durable. In a
    /// mutex only so that the room stays `Sync` (its `&self` methods are
    /// held across awaits); reached only through `get_mut`, never locked.
    durable: Mutex<Durable>,
    /// The batch's frames, plus those of later batches with nothing to wait for.
    outbox: Outbox,
    /// The batch's HTTP answers.
    acks: Vec<Ack>,
}

/// Polls the oldest batch on its way to disk (pending when there is none).
/// A function of the queue alone, so the room's `select!` can poll it next
/// to its other fields. The error is boxed: the room's loop keeps a slot
/// for whichever branch's output, in every idle room, and a `StoreError`
/// inline made it 72 bytes instead of 48.
pub(super) fn poll_oldest(
    in_flight: &mut VecDeque<InFlight>,
    cx: &mut Context<'_>,
) -> Poll<Result<(), Box<StoreError>>> {
    match in_flight.front_mut() {
        Some(batch) => batch.poll_durable(cx).map(|r| r.map_err(Box::new)),
        None => Poll::Pending,
    }
}

impl InFlight {
    /// A batch waiting for `tickets`.
    fn new(tickets: Vec<Appended>, outbox: Outbox, acks: Vec<Ack>) -> Self {
        let durable = async move {
            let done = futures_util::future::join_all(tickets.into_iter().map(|t| t.durable()));
            done.await
                .into_iter()
                .find_map(Result::err)
                .map_or(Ok(()), Err)
        };
        InFlight {
            durable: Mutex::new(Box::pin(durable)),
            outbox,
            acks,
        }
    }

    /// Polls the batch's durability.
    fn poll_durable(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StoreError>> {
        let durable = self.durable.get_mut().unwrap_or_else(|e| e.into_inner());
        durable.as_mut().poll(cx)
    }
}

impl Room {
    /// Handles one batch (see the module docs); a store failure or a panic
    /// on the yrs thread closes every peer with 1011 and fails the room.
    pub(super) async fn process(&mut self, batch: Vec<(PeerId, PeerEvent)>) -> Flow {
        let events = batch.len();
        let (steps, ops) = self.plan(batch);
        let mut outcomes = Vec::new();
        let mut tickets = Vec::new();
        let mut compaction = None;
        if !ops.is_empty() {
            let Some(mut state) = self.state.take() else {
                return Flow::Failed;
            };
            // A compaction that is due is done from the live document,
            // encoded right after this batch (not in place: a whole encode).
            let compaction_due = !self.compacting.load(Ordering::Relaxed)
                && self.shared.store.needs_compaction(&self.doc_id);
            let small = !compaction_due
                && state.is_small()
                && ops.iter().map(DocOp::weight).fold(0, usize::saturating_add) <= SMALL_BATCH;
            let job = move || {
                let mut applied = state.apply(ops);
                if compaction_due && applied.store_failed.is_none() {
                    applied.compaction = state.compaction_state();
                }
                (state, applied)
            };
            let done = if small {
                yrs_threads::run_small(job).await
            } else {
                yrs_threads::run(job).await
            };
            let failure = match done {
                Ok((state, applied)) => {
                    self.state = Some(state);
                    outcomes = applied.outcomes;
                    tickets = applied.tickets;
                    compaction = applied.compaction;
                    applied.store_failed
                }
                Err(panicked) => Some(RoomError::from(panicked)),
            };
            if let Some(e) = failure {
                error!(error = %e, "document work failed: closing the room");
                return self.fail(steps, e);
            }
        }
        let (outbox, acks) = self.walk(steps, outcomes);
        if tickets.is_empty() && self.in_flight.is_empty() {
            // Nothing to wait for (awareness, replies, refusals): out now.
            self.dispatch(outbox);
            for (reply, result) in acks {
                let _ = reply.send(result);
            }
        } else if let (true, Some(last)) = (tickets.is_empty(), self.in_flight.back_mut()) {
            // Nothing of its own to wait for, but it goes out after the
            // batch before it (a SyncStep2 may hold that batch's changes).
            last.outbox.append(outbox);
            last.acks.extend(acks);
        } else {
            // Group commit: one durability wait for the whole batch, before
            // anything of it is sent; the room goes on with the next batch.
            while self.in_flight.len() >= MAX_IN_FLIGHT {
                let durable = std::future::poll_fn(|cx| poll_oldest(&mut self.in_flight, cx)).await;
                if self.settle(durable) == Flow::Failed {
                    return Flow::Failed;
                }
            }
            if !self.in_flight.is_empty() || events > LEAD_EVENTS {
                // A stream: the flusher syncs while the room goes on with
                // what follows (else the room's own wait runs the sync).
                tickets.iter_mut().for_each(Appended::sync_in_background);
            }
            self.in_flight
                .push_back(InFlight::new(tickets, outbox, acks));
        }
        if self.peers.is_empty() && self.empty_since.is_none() {
            self.empty_since = Some(Instant::now());
        }
        self.compact_in_background(compaction);
        Flow::Go
    }

    /// The oldest batch on its way to disk is there (or failed): sends its
    /// frames and answers its HTTP edits, or fails the room.
    pub(super) fn settle(&mut self, durable: Result<(), Box<StoreError>>) -> Flow {
        let Some(batch) = self.in_flight.pop_front() else {
            return Flow::Go;
        };
        if let Err(e) = durable {
            error!(error = %e, "store failed to persist updates");
            let e = Arc::new(RoomError::from(*e));
            for (reply, _) in batch.acks {
                let _ = reply.send(Err(EditError::Failed(e.clone())));
            }
            return self.fail(Vec::new(), e);
        }
        self.dispatch(batch.outbox);
        for (reply, result) in batch.acks {
            let _ = reply.send(result);
        }
        Flow::Go
    }

    /// Waits for every batch on its way to disk and sends it, and the
    /// awareness waiting to ride (before the room unloads or shuts down).
    pub(super) async fn settle_all(&mut self) -> Flow {
        while !self.in_flight.is_empty() {
            let durable = std::future::poll_fn(|cx| poll_oldest(&mut self.in_flight, cx)).await;
            if self.settle(durable) == Flow::Failed {
                return Flow::Failed;
            }
        }
        self.flush_riding();
        Flow::Go
    }

    /// Sends `outbox` now, or after the batches still on their way to disk
    /// (so frames never overtake a batch queued before them).
    pub(super) fn send(&mut self, outbox: Outbox) {
        if outbox.is_empty() {
            return;
        }
        match self.in_flight.back_mut() {
            Some(last) => last.outbox.append(outbox),
            None => self.dispatch(outbox),
        }
    }

    /// Splits the batch into the document ops (for the yrs thread) and the
    /// steps to take afterwards, in arrival order.
    fn plan(&mut self, batch: Vec<(PeerId, PeerEvent)>) -> (Vec<Step>, Vec<DocOp>) {
        let mut steps = Vec::new();
        let mut ops = Vec::new();
        // Whose update the last step was, if it was one: an update that
        // follows it from the same sender continues its run.
        let mut run_of: Option<PeerId> = None;
        for (peer, event) in batch {
            match event {
                PeerEvent::Left => {
                    run_of = None;
                    steps.push(Step::Left(peer));
                }
                PeerEvent::Edit(req) => {
                    run_of = None;
                    let req = *req;
                    ops.push(match req.edit {
                        Edit::Update { bytes, encoding } => DocOp::Update {
                            sender: None,
                            bytes,
                            encoding,
                            may_write: req.principal.mode.can_write(),
                            continues_run: false,
                        },
                        Edit::ReplaceText(_) if !req.principal.mode.can_write() => {
                            let _ = req.reply.send(Err(EditError::ReadOnly));
                            continue;
                        }
                        Edit::ReplaceText(text) => DocOp::ReplaceText(text),
                    });
                    steps.push(Step::Edit(req.reply));
                }
                PeerEvent::Frame(messages) => {
                    let Some(may_write) = self.peers.get(&peer).map(|p| p.may_write) else {
                        continue; // closed by the room earlier: ignore the rest
                    };
                    for message in messages {
                        if !matches!(message, Inbound::Update(_) | Inbound::Auth) {
                            run_of = None;
                        }
                        match message {
                            Inbound::SyncStep1(state) => {
                                ops.push(DocOp::SyncStep1 {
                                    sender: peer,
                                    state,
                                });
                                steps.push(Step::Doc(peer));
                            }
                            Inbound::Update(bytes) => {
                                ops.push(DocOp::Update {
                                    sender: Some(peer),
                                    bytes,
                                    encoding: Encoding::V1,
                                    may_write,
                                    continues_run: run_of == Some(peer),
                                });
                                steps.push(Step::Doc(peer));
                                run_of = Some(peer);
                            }
                            Inbound::Awareness(update) => steps.push(Step::Awareness(peer, update)),
                            Inbound::QueryAwareness => steps.push(Step::Query(peer)),
                            // Auth messages from clients carry nothing the server needs.
                            Inbound::Auth => {}
                        }
                    }
                }
            }
        }
        (steps, ops)
    }

    /// Turns the outcomes into frames (and closes refused senders), in
    /// arrival order; returns the frames and the HTTP answers.
    fn walk(&mut self, steps: Vec<Step>, outcomes: Vec<Outcome>) -> (Outbox, Vec<Ack>) {
        let mut outbox = Outbox::default();
        let mut acks = Vec::new();
        let mut outcomes = outcomes.into_iter();
        for step in steps {
            match step {
                Step::Left(peer) => self.remove_peer(peer, None, &mut outbox),
                Step::Doc(peer) => match outcomes.next() {
                    // Stored, so it is sent even if its sender is gone by now.
                    Some(Outcome::Changed(update)) => {
                        self.shared
                            .metrics
                            .updates_applied
                            .fetch_add(1, Ordering::Relaxed);
                        outbox.update(peer, update);
                    }
                    // Part of the run whose first op carried the change.
                    Some(Outcome::Merged) => {
                        self.shared
                            .metrics
                            .updates_applied
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    Some(Outcome::Reply(frame)) if self.peers.contains_key(&peer) => {
                        outbox.push(Target::One(peer), frame);
                    }
                    Some(Outcome::Denied) if self.peers.contains_key(&peer) => {
                        warn!(peer = %peer, "read-only peer tried to write");
                        outbox.push(
                            Target::One(peer),
                            protocol::encode_permission_denied("read-only"),
                        );
                    }
                    Some(Outcome::Refused(refusal)) => {
                        warn!(peer = %peer, error = %refusal, "update rejected");
                        self.remove_peer(peer, Some(refusal.close_code()), &mut outbox);
                    }
                    _ => {}
                },
                Step::Edit(reply) => {
                    let result = match outcomes.next() {
                        Some(Outcome::Changed(update)) => {
                            self.shared
                                .metrics
                                .updates_applied
                                .fetch_add(1, Ordering::Relaxed);
                            outbox.update(PeerId::SERVER, update);
                            Ok(())
                        }
                        Some(Outcome::Denied) => Err(EditError::ReadOnly),
                        Some(Outcome::Refused(refusal)) => {
                            warn!(error = %refusal, "HTTP edit rejected");
                            Err(EditError::Refused(refusal))
                        }
                        Some(_) => Ok(()),
                        None => Err(EditError::Unavailable(CloseCode::Internal)),
                    };
                    acks.push((reply, result));
                }
                Step::Awareness(peer, update) => {
                    if self.peers.contains_key(&peer)
                        && let Err(code) = self.awareness(peer, update, &mut outbox)
                    {
                        self.remove_peer(peer, Some(code), &mut outbox);
                    }
                }
                Step::Query(peer) => {
                    if let Some(states) = self.presence.snapshot() {
                        outbox.push(Target::One(peer), protocol::encode_awareness(&states));
                    }
                }
            }
        }
        (outbox, acks)
    }

    /// Sends a peer's awareness changes now if its rate allows, else holds
    /// them (merged with what is already held) until its next slot.
    fn hold_or_send_awareness(
        &mut self,
        peer: PeerId,
        changed: yrs::sync::AwarenessUpdate,
        now: Instant,
        outbox: &mut Outbox,
    ) {
        let interval = self.shared.limits.awareness_interval();
        let Some(slot) = self.peers.get_mut(&peer) else {
            return;
        };
        match &mut slot.awareness_held {
            Some(held) => held.clients.extend(changed.clients),
            None if now >= slot.awareness_next => {
                slot.awareness_next = now + interval;
                outbox.push(Target::All, protocol::encode_awareness(&changed));
            }
            None => {
                slot.awareness_held = Some(Box::new(changed));
                let due = slot.awareness_next;
                self.awareness_due = Some(self.awareness_due.map_or(due, |d| d.min(due)));
            }
        }
    }

    /// Sends every held awareness change whose slot has come.
    pub(super) fn release_awareness(&mut self, outbox: &mut Outbox) {
        let now = Instant::now();
        let interval = self.shared.limits.awareness_interval();
        let mut due: Option<Instant> = None;
        for slot in self.peers.values_mut() {
            if slot.awareness_held.is_none() {
                continue;
            }
            if slot.awareness_next <= now {
                if let Some(held) = slot.awareness_held.take() {
                    outbox.push(Target::All, protocol::encode_awareness(&held));
                }
                slot.awareness_next = now + interval;
            } else {
                let next = slot.awareness_next;
                due = Some(due.map_or(next, |d| d.min(next)));
            }
        }
        self.awareness_due = due;
    }

    /// The store failed or the document work panicked: every peer gets
    /// 1011, the batch's HTTP edits get the error, and the room goes (the
    /// next join reloads from the store).
    fn fail(&mut self, steps: Vec<Step>, error: impl Into<Arc<RoomError>>) -> Flow {
        let error = error.into();
        for step in steps {
            if let Step::Edit(reply) = step {
                let _ = reply.send(Err(EditError::Failed(error.clone())));
            }
        }
        // Batches still on their way to disk are never sent: their senders
        // are closed with the rest, their HTTP edits fail.
        for batch in std::mem::take(&mut self.in_flight) {
            for (reply, _) in batch.acks {
                let _ = reply.send(Err(EditError::Failed(error.clone())));
            }
        }
        self.state = None;
        self.close_all(CloseCode::Internal);
        Flow::Failed
    }

    /// Applies an awareness update and queues the changes for every peer;
    /// `Err` closes the sender.
    fn awareness(
        &mut self,
        peer: PeerId,
        update: yrs::sync::AwarenessUpdate,
        outbox: &mut Outbox,
    ) -> Result<(), CloseCode> {
        // An owner silent past a ping round trip is presumed gone (the
        // half-open socket of a client that has already reconnected).
        let peers = &self.peers;
        let alive_within = self.shared.limits.ping_interval() * 3 / 2;
        let owner_alive = |o: PeerId| {
            peers
                .get(&o)
                .is_some_and(|p| p.health.silent_for() < alive_within)
        };
        let max = self.shared.limits.max_awareness_bytes;
        if let Some(big) = update.clients.values().find(|e| e.json.len() > max) {
            warn!(peer = %peer, bytes = big.json.len(), max, "awareness state too large");
            return Err(CloseCode::TooLarge);
        }
        let now = Instant::now();
        match self.presence.apply(peer, update, now, owner_alive) {
            Ok(Some(changed)) => {
                self.shared
                    .metrics
                    .awareness_updates
                    .fetch_add(1, Ordering::Relaxed);
                self.hold_or_send_awareness(peer, changed, now, outbox);
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
