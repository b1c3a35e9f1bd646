//! The frames a batch sends, in arrival order, with each sender's
//! consecutive updates merged into one frame.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};

use bytes::Bytes;

use crate::link::PeerId;
use crate::protocol;

/// Who receives an outgoing frame.
#[derive(Debug, Clone, Copy)]
pub(super) enum Target {
    /// A reply to the sender (SyncStep2, awareness query).
    One(PeerId),
    /// An update, to everyone but the peer it came from (an HTTP edit's
    /// sender is [`PeerId::SERVER`], so everyone).
    AllBut(PeerId),
    /// Awareness changes (the sender too: a lone JS client otherwise hears
    /// nothing). Only awareness goes to `All`: such frames may ride with
    /// the next dispatch (`Room::dispatch`).
    All,
}

impl Target {
    /// Whether `peer` receives a frame sent to this target.
    pub(super) fn includes(self, peer: PeerId) -> bool {
        match self {
            Target::One(id) => id == peer,
            Target::AllBut(skip) => skip != peer,
            Target::All => true,
        }
    }
}

/// The frames of one batch, in the order they must go out.
///
/// Consecutive updates of a batch from one sender go to the other peers as
/// ONE update frame (yrs `merge_updates_v1`): a client streaming keystrokes
/// costs each receiver one frame per batch instead of one per keystroke, so
/// receivers keep up with the room. Any other frame (or another sender's
/// update) ends the run first, so arrival order holds across senders.
#[derive(Default)]
pub(super) struct Outbox {
    /// Frames ready to go, in order.
    frames: VecDeque<(Target, Bytes)>,
    /// Whose updates the open run holds (`None`: no run).
    sender: Option<PeerId>,
    /// The open run's updates, merged when the run ends.
    updates: Vec<Bytes>,
}

impl Outbox {
    /// Queues an update from `sender` for everyone else.
    pub(super) fn update(&mut self, sender: PeerId, update: Bytes) {
        if self.sender != Some(sender) {
            self.end_run();
        }
        self.sender = Some(sender);
        self.updates.push(update);
    }

    /// Queues any other frame, after everything queued before it.
    pub(super) fn push(&mut self, target: Target, frame: Bytes) {
        self.end_run();
        self.frames.push_back((target, frame));
    }

    /// Queues every frame of `later` after everything queued here (a batch
    /// that must wait for an earlier one still on its way to disk).
    pub(super) fn append(&mut self, mut later: Outbox) {
        self.end_run();
        later.end_run();
        self.frames.append(&mut later.frames);
    }

    /// Whether nothing is queued.
    pub(super) fn is_empty(&self) -> bool {
        self.frames.is_empty() && self.sender.is_none()
    }

    /// The next frame to send, in order (ends the open run first).
    pub(super) fn pop(&mut self) -> Option<(Target, Bytes)> {
        self.end_run();
        self.frames.pop_front()
    }

    /// Turns the open run into its frame(s).
    fn end_run(&mut self) {
        let Some(sender) = self.sender.take() else {
            return;
        };
        let target = Target::AllBut(sender);
        if let [single] = &self.updates[..] {
            self.frames
                .push_back((target, protocol::encode_update(single)));
        } else {
            let merged = catch_unwind(AssertUnwindSafe(|| yrs::merge_updates_v1(&self.updates)));
            match merged {
                Ok(Ok(merged)) => self
                    .frames
                    .push_back((target, protocol::encode_update(&merged))),
                // Cannot happen for updates yrs applied; send them one by one.
                _ => {
                    for update in &self.updates {
                        self.frames
                            .push_back((target, protocol::encode_update(update)));
                    }
                }
            }
        }
        self.updates.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Inbound;
    use yrs::updates::decoder::Decode;
    use yrs::{Doc, GetString, ReadTxn, Text, Transact};

    /// Keystroke updates of one editor, plus a delete and a concurrent
    /// editor's insert (so the merge has several clients and a delete set).
    fn updates() -> Vec<Bytes> {
        let (a, b) = (Doc::with_client_id(1), Doc::with_client_id(2));
        let mut out = Vec::new();
        for (doc, s) in [(&a, "hello"), (&b, "xy")] {
            let text = doc.get_or_insert_text("content");
            for ch in s.chars() {
                let before = doc.transact().state_vector();
                let len = text.len(&doc.transact());
                text.insert(&mut doc.transact_mut(), len, &ch.to_string());
                out.push(Bytes::from(doc.transact().encode_diff_v1(&before)));
            }
        }
        let text = a.get_or_insert_text("content");
        let before = a.transact().state_vector();
        text.remove_range(&mut a.transact_mut(), 1, 2);
        out.push(Bytes::from(a.transact().encode_diff_v1(&before)));
        out
    }

    fn drain(outbox: &mut Outbox) -> Vec<(Target, Bytes)> {
        std::iter::from_fn(|| outbox.pop()).collect()
    }

    fn apply_frames(frames: &[(Target, Bytes)]) -> String {
        let doc = Doc::new();
        for (_, frame) in frames {
            for message in protocol::decode_frame(frame).unwrap() {
                let Inbound::Update(raw) = message else {
                    panic!("not an update frame");
                };
                let update = yrs::Update::decode_v1(&raw).unwrap();
                doc.transact_mut().apply_update(update).unwrap();
            }
        }
        let text = doc.get_or_insert_text("content");
        text.get_string(&doc.transact())
    }

    #[test]
    fn a_run_is_broadcast_as_one_frame_with_the_same_content() {
        let updates = updates();
        let one_by_one: Vec<_> = updates
            .iter()
            .map(|u| (Target::All, protocol::encode_update(u)))
            .collect();
        let mut outbox = Outbox::default();
        for u in &updates {
            outbox.update(PeerId(7), u.clone());
        }
        assert!(outbox.frames.is_empty(), "a run waits for its end");
        let frames = drain(&mut outbox);
        assert_eq!(frames.len(), 1);
        assert!(matches!(frames[0].0, Target::AllBut(PeerId(7))));
        assert_eq!(apply_frames(&frames), apply_frames(&one_by_one));
        let merged = apply_frames(&frames);
        assert!(merged.len() == 5 && merged.contains("hlo"), "{merged}");
    }

    #[test]
    fn another_sender_ends_the_run() {
        let updates = updates();
        let mut outbox = Outbox::default();
        outbox.update(PeerId(1), updates[0].clone());
        outbox.update(PeerId(1), updates[1].clone());
        outbox.update(PeerId(2), updates[2].clone());
        let frames = drain(&mut outbox);
        let targets: Vec<_> = frames
            .iter()
            .map(|(t, _)| match t {
                Target::AllBut(p) => p.0,
                _ => 0,
            })
            .collect();
        assert_eq!(targets, [1, 2]);
        assert_eq!(apply_frames(&frames), "hel");
    }
}
