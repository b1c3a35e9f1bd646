//! The y-protocols wire format as the bench needs it, sans-IO: encode one
//! message per frame, decode every message of a frame, and name an update by
//! the ids it carries so a receiver can match it to its send.
//!
//! Matching by id rather than by bytes: a server may re-encode an update (the
//! reference Node server emits the update Yjs produces after integrating it),
//! merge several updates into one, or forward the bytes unchanged; the ids of
//! the inserted items and of the deleted ranges survive all three.

use std::ops::Range;

use yrs::encoding::read::Cursor;
use yrs::sync::{Awareness, Message, MessageReader, SyncMessage};
use yrs::updates::decoder::{Decode, DecoderV1};
use yrs::updates::encoder::Encode;
use yrs::{ReadTxn, StateVector, Transact, Update};

/// What a frame from the server said, reduced to what the bench acts on.
#[derive(Debug)]
pub enum Incoming {
    /// The server's state vector: answer with SyncStep2.
    SyncStep1(StateVector),
    /// The part of the server's document we lack: the sync is complete.
    SyncStep2(Vec<u8>),
    /// A document update from some peer.
    Update(Vec<u8>),
    /// An awareness update (cursor/presence) with this many entries.
    Awareness(usize),
    /// Anything else (auth, awareness query, custom): counted, ignored.
    Other,
}

/// Decodes every message in one binary frame (a server may pack several).
pub fn decode_frame(frame: &[u8]) -> Result<Vec<Incoming>, yrs::encoding::read::Error> {
    let mut decoder = DecoderV1::new(Cursor::new(frame));
    let mut out = Vec::with_capacity(1);
    for msg in MessageReader::new(&mut decoder) {
        out.push(match msg? {
            Message::Sync(SyncMessage::SyncStep1(sv)) => Incoming::SyncStep1(sv),
            Message::Sync(SyncMessage::SyncStep2(u)) => Incoming::SyncStep2(u),
            Message::Sync(SyncMessage::Update(u)) => Incoming::Update(u),
            Message::Awareness(a) => Incoming::Awareness(a.clients.len()),
            _ => Incoming::Other,
        });
    }
    Ok(out)
}

/// SyncStep1 carrying `doc`'s state vector.
pub fn sync_step1(doc: &yrs::Doc) -> Vec<u8> {
    let sv = doc.transact().state_vector();
    Message::Sync(SyncMessage::SyncStep1(sv)).encode_v1()
}

/// SyncStep2: what `doc` has beyond the server's state vector `sv`.
pub fn sync_step2(doc: &yrs::Doc, sv: &StateVector) -> Vec<u8> {
    let diff = doc.transact().encode_state_as_update_v1(sv);
    Message::Sync(SyncMessage::SyncStep2(diff)).encode_v1()
}

/// A sync Update message wrapping `update`.
pub fn update_message(update: Vec<u8>) -> Vec<u8> {
    Message::Sync(SyncMessage::Update(update)).encode_v1()
}

/// The awareness message announcing `awareness`'s local state.
pub fn awareness_message(awareness: &Awareness) -> Option<Vec<u8>> {
    let update = awareness.update().ok()?;
    Some(Message::Awareness(update).encode_v1())
}

/// Whether an id names an inserted item or a deleted range: an item can be
/// inserted by one update and deleted by a later one, so the two differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IdKind {
    /// The item was inserted.
    Insert,
    /// The item was deleted.
    Delete,
}

/// The identity of one sent update: its first inserted id, or (for a
/// delete-only update) its first deleted id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UpdateKey {
    /// Insert or delete.
    pub kind: IdKind,
    /// The Yjs client id that created (or whose item was deleted).
    pub client: u64,
    /// The first clock of the range.
    pub clock: u32,
}

/// Every id range an update covers: what a receiver matches against sends.
#[derive(Debug, Default)]
pub struct UpdateIds {
    /// `(kind, client, clocks)` for each inserted and each deleted range.
    pub ranges: Vec<(IdKind, u64, Range<u32>)>,
}

impl UpdateIds {
    /// Decodes a v1 update and lists its inserted and deleted ranges.
    pub fn of(update: &[u8]) -> Result<UpdateIds, yrs::encoding::read::Error> {
        let update = Update::decode_v1(update)?;
        let mut ranges = Vec::new();
        for (client, clocks) in update.insertions(true).iter() {
            for r in clocks.iter() {
                ranges.push((IdKind::Insert, client.get(), r.clone()));
            }
        }
        for (client, clocks) in update.delete_set().iter() {
            for r in clocks.iter() {
                ranges.push((IdKind::Delete, client.get(), r.clone()));
            }
        }
        Ok(UpdateIds { ranges })
    }

    /// The key a sender files its update under: the first insert range if
    /// there is one, else the first delete range.
    pub fn key(&self) -> Option<UpdateKey> {
        let first = |kind| {
            self.ranges
                .iter()
                .filter(|(k, _, r)| *k == kind && !r.is_empty())
                .min_by_key(|(_, c, r)| (*c, r.start))
                .map(|(kind, client, r)| UpdateKey {
                    kind: *kind,
                    client: *client,
                    clock: r.start,
                })
        };
        first(IdKind::Insert).or_else(|| first(IdKind::Delete))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{Trace, Typist};

    #[test]
    fn keys_survive_a_merge_of_updates() {
        let trace = Trace::generate(200, 3);
        let mut typist = Typist::new(7);
        let updates: Vec<Vec<u8>> = (0..50).map(|_| typist.next_update(&trace)).collect();
        let keys: Vec<UpdateKey> = updates
            .iter()
            .map(|u| UpdateIds::of(u).unwrap().key().unwrap())
            .collect();
        let merged = yrs::merge_updates_v1(updates.iter().map(|u| u.as_slice())).unwrap();
        let ids = UpdateIds::of(&merged).unwrap();
        for key in keys {
            let covered = ids
                .ranges
                .iter()
                .any(|(k, c, r)| *k == key.kind && *c == key.client && r.contains(&key.clock));
            assert!(covered, "{key:?} lost in merge");
        }
    }

    #[test]
    fn several_messages_in_one_frame_all_decode() {
        let mut frame = update_message(vec![0, 0]);
        frame.extend(update_message(vec![0, 0]));
        assert_eq!(decode_frame(&frame).unwrap().len(), 2);
    }
}
