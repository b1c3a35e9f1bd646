//! Opening a room: a joiner with an empty state vector is answered from the
//! document's stored bytes while the yrs `Doc` loads in the background.
//!
//! Loading a large document is mostly yrs work (integrating the snapshot,
//! measuring it for the caps, encoding the full state again): ~8 ms for the
//! 311 KB automerge-paper document, and 50 rooms opening at once queue for
//! the few yrs threads. Yet a fresh client (empty state vector, y-websocket's
//! first message) only needs the whole document, and the store already holds
//! it encoded: the snapshot is `encode_state_as_update_v1` of the merged
//! document, and the log records after it are v1 updates.
//!
//! So the room's first step is one read of the stored bytes
//! ([`tandem_store::Store::read_stored`], sled only, on the blocking pool),
//! from which it makes the SyncStep2 frame for an empty state vector: the
//! snapshot as is when there is no log (the usual case: a room compacts when
//! it unloads), else snapshot and log merged with `yrs::merge_updates_v1` on
//! a yrs thread. The `Doc` is replayed on a yrs thread *from that same read*,
//! so the frame and the loaded document hold the same content by
//! construction. While that runs, the room:
//!
//! - admits joiners (room-full refusals as usual; store-health refusals
//!   happen before a join reaches the room) and reads each one's first
//!   frame only (the rest waits in its bounded inbound channel). A
//!   SyncStep1 with an empty state vector in it, before any update, is
//!   answered at once with the shared frame (one `Bytes` for every such
//!   joiner), through the room's usual per-peer queue bounds; the rest of
//!   the frame waits for the load. Any other SyncStep1 waits for the load.
//! - accepts no write: peers' updates and HTTP edits wait until the load is
//!   done and then take the one write path in arrival order. So nothing can
//!   be written between the read and the load, every joiner was sent the
//!   document before any write the room accepts, and each such write reaches
//!   it once, after it is durable, like any broadcast.
//! - the first control message that is not a join (an HTTP edit, shutdown,
//!   eviction) stops the reading of control messages; it is handled first
//!   once the document is loaded.
//!
//! The load itself runs on a background yrs thread, at a lower CPU
//! priority (`yrs_threads::run_background`), when the frame was ready from
//! the read: then only edits wait for it, while the joiners' frames still
//! have to be written. With 50 rooms opening at once on two cores, the
//! loads (~8 ms of yrs work each) otherwise shared the cores with those
//! writes: `tandem-bench cold-join`, 50 concurrent, four interleaved
//! rounds, p99 147/151/246/164 ms with the loads at the normal priority
//! against 135/86/106/103 ms in the background.
//!
//! When the load is done every waiting joiner gets the server's SyncStep1
//! (the loaded state vector: not computed from the bytes, where content
//! waiting for missing updates would over-claim) and the awareness states,
//! and its frames are read from the one it sent first. A load that fails
//! closes every admitted joiner with 1011, as before.
//!
//! Content waiting for missing updates (pending) is in the stored bytes (the
//! snapshot is encoded with it, and such updates are stored as received), so
//! an answered joiner receives it too, as a Yjs server's
//! `encodeStateAsUpdate` sends it; what it can integrate, and so its state
//! vector and text, are those of the loaded document.

use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::{Pin, pin};
use std::task::Poll;

use bytes::Bytes;
use tandem_store::StoredState;
use tokio::sync::oneshot;
use tracing::{debug, warn};

use super::control::ControlReceiver;
use super::doc_state::{Caps, DocState};
use super::{Outbox, Room, Target};
use futures_util::StreamExt as _;

use crate::link::{InboundFrames, PeerId};
use crate::mailbox::{Control, RoomError};
use crate::protocol::{self, Inbound};
use crate::yrs_threads;

/// A joiner admitted while the document loads.
struct Waiting {
    /// The connection.
    id: PeerId,
    /// Its inbound frames (only the first is read before the load is done).
    inbound: InboundFrames,
    /// What is left of its first frame, once read (`None` inside: the
    /// connection ended before sending one).
    first: Option<Option<Vec<Inbound>>>,
    /// Its first frame holds a SyncStep1 with an empty state vector, not
    /// yet answered (the frame was not ready yet).
    wants_full_state: bool,
}

/// Loads the room's document while answering joiners from the stored bytes
/// (see the module docs). Returns the control message that stopped the
/// reading of control messages, if any, for the room to handle first.
pub(super) async fn load(
    room: &mut Room,
    control: &mut ControlReceiver,
) -> Result<Option<Control>, RoomError> {
    let caps = Caps::of(&room.shared.limits);
    let (store, id) = (room.shared.store.clone(), room.doc_id.clone());
    let read = tokio::task::spawn_blocking(move || read(&store, &id)).await;
    let (stored, ready) = match read {
        Ok(read) => read?,
        // `read_stored` contains sled's panics; anything else is a bug.
        Err(_) => return Err(RoomError::Panicked(yrs_threads::Panicked)),
    };
    // The frame, if it still has to be merged: sent by the load job first.
    let (merged_tx, mut merged_rx) = oneshot::channel();
    let mut frame = ready;
    let merge = frame.is_none() && !stored.is_empty();
    let mut merging = merge;
    let (store, id) = (room.shared.store.clone(), room.doc_id.clone());
    let job = move || {
        if merge {
            let _ = merged_tx.send(merged_frame(&stored));
        }
        DocState::from_doc(stored.into_doc()?, store, id, caps)
    };
    // With the frame ready, no one waits on the load but edits: it yields
    // the CPU to the sending of that frame (see the module docs). A merge
    // that joiners wait for runs at the normal priority.
    let job: Pin<Box<dyn Future<Output = _> + Send>> = if merge {
        Box::pin(yrs_threads::run(job))
    } else {
        Box::pin(yrs_threads::run_background(job))
    };
    let mut job = pin!(job);
    let mut waiting: Vec<Waiting> = Vec::new();
    let mut held: Option<Control> = None;
    let loaded = loop {
        tokio::select! {
            biased;
            loaded = &mut job => break loaded,
            merged = &mut merged_rx, if merging => {
                merging = false;
                // No frame (the merge failed): joiners wait for the load.
                frame = merged.ok().flatten();
                if let Some(frame) = &frame {
                    answer_waiting(room, &mut waiting, frame);
                }
            }
            ctl = control.recv(), if held.is_none() => match ctl {
                Some(Control::Join(link)) => {
                    if let Some((id, inbound)) = room.admit(*link) {
                        waiting.push(Waiting { id, inbound, first: None, wants_full_state: false });
                    }
                }
                Some(other) => held = Some(other),
                None => held = Some(Control::Shutdown),
            },
            (i, first) = first_frame(&mut waiting) => {
                let w = &mut waiting[i];
                let mut first = first;
                if let Some(messages) = &mut first
                    && let Some(at) = full_state_request(messages)
                {
                    match &frame {
                        Some(frame) => {
                            messages.remove(at);
                            send(room, w.id, frame.clone());
                        }
                        None => w.wants_full_state = true,
                    }
                }
                w.first = Some(first);
            }
        }
    };
    let state = match loaded {
        Ok(state) => state?,
        Err(panicked) => return Err(RoomError::from(panicked)),
    };
    room.state = Some(state);
    debug!(
        joiners = waiting.len(),
        "document loaded; joiners that came meanwhile are greeted"
    );
    for w in waiting {
        if !room.peers.contains_key(&w.id) {
            continue; // closed meanwhile (its first answer overflowed its queue)
        }
        if room.greet(w.id) {
            room.listen(w.id, w.first.flatten(), w.inbound);
        }
    }
    Ok(held)
}

/// Reads the stored bytes, and makes the frame right away when no merge is
/// needed (no yrs work: the snapshot is copied behind a SyncStep2 header).
fn read(
    store: &tandem_store::Store,
    id: &tandem_store::DocId,
) -> Result<(StoredState, Option<Bytes>), RoomError> {
    let stored = store.read_stored(id)?;
    let updates = stored.updates()?;
    let frame = match updates[..] {
        [single] => Some(protocol::encode_sync_step2(single)),
        _ => None,
    };
    Ok((stored, frame))
}

/// The SyncStep2 frame of snapshot and log merged (yrs work: on a yrs
/// thread); `None` when yrs cannot merge them (then the load decides).
fn merged_frame(stored: &StoredState) -> Option<Bytes> {
    let updates = stored.updates().ok()?;
    match catch_unwind(AssertUnwindSafe(|| yrs::merge_updates_v1(&updates))) {
        Ok(Ok(merged)) => Some(protocol::encode_sync_step2(&merged)),
        _ => {
            warn!("stored updates do not merge: joiners wait for the load");
            None
        }
    }
}

/// Where a first frame asks for the whole document: a SyncStep1 with an
/// empty state vector before any update (an update before it would have to
/// be in the answer).
fn full_state_request(messages: &[Inbound]) -> Option<usize> {
    for (i, message) in messages.iter().enumerate() {
        match message {
            Inbound::SyncStep1(state) if state.is_empty() => return Some(i),
            Inbound::SyncStep1(_) | Inbound::Update(_) => return None,
            _ => {}
        }
    }
    None
}

/// Answers the joiners whose first frame asked for the whole document
/// before the frame was ready.
fn answer_waiting(room: &mut Room, waiting: &mut [Waiting], frame: &Bytes) {
    for w in waiting.iter_mut().filter(|w| w.wants_full_state) {
        w.wants_full_state = false;
        if let Some(Some(messages)) = &mut w.first
            && let Some(at) = full_state_request(messages)
        {
            messages.remove(at);
            send(room, w.id, frame.clone());
        }
    }
}

/// Queues `frame` for one peer under the room's usual bounds.
fn send(room: &mut Room, id: PeerId, frame: Bytes) {
    let mut outbox = Outbox::default();
    outbox.push(Target::One(id), frame);
    room.dispatch(outbox);
}

/// The next first frame of a waiting joiner that has not sent one yet
/// (pending forever when none is left to read).
async fn first_frame(waiting: &mut [Waiting]) -> (usize, Option<Vec<Inbound>>) {
    poll_fn(|cx| {
        for (i, w) in waiting.iter_mut().enumerate() {
            if w.first.is_none()
                && let Poll::Ready(frame) = w.inbound.poll_next_unpin(cx)
            {
                return Poll::Ready((i, frame));
            }
        }
        Poll::Pending
    })
    .await
}
