//! Merging a batch's consecutive updates from one sender into one
//! broadcast frame.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};

use bytes::Bytes;

use super::Target;
use crate::mailbox::PeerId;
use crate::protocol;

/// Consecutive updates of a batch from one sender, broadcast to the other
/// peers as ONE update frame (yrs `merge_updates_v1`): a client streaming
/// keystrokes costs each receiver one frame per batch instead of one per
/// keystroke, so receivers keep up with the room. What is stored is not
/// merged (each update as received).
#[derive(Default)]
pub(super) struct Run {
    /// Whose updates the run holds (`None`: empty); another sender's update
    /// ends the run, so the broadcast keeps arrival order across senders.
    sender: Option<PeerId>,
    /// The run's updates as received, merged only at `flush`.
    updates: Vec<Bytes>,
}

impl Run {
    /// Adds an update; one from another sender ends the current run first.
    pub(super) fn push(
        &mut self,
        sender: PeerId,
        update: Bytes,
        outbox: &mut VecDeque<(Target, Bytes)>,
    ) {
        if self.sender != Some(sender) {
            self.flush(outbox);
        }
        self.sender = Some(sender);
        self.updates.push(update);
    }

    /// Queues the run's frame(s) in `outbox` and empties the run.
    pub(super) fn flush(&mut self, outbox: &mut VecDeque<(Target, Bytes)>) {
        let Some(sender) = self.sender.take() else {
            return;
        };
        let target = || Target::AllBut(sender);
        if let [single] = &self.updates[..] {
            outbox.push_back((target(), protocol::encode_update(single)));
        } else {
            let merged = catch_unwind(AssertUnwindSafe(|| yrs::merge_updates_v1(&self.updates)));
            match merged {
                Ok(Ok(merged)) => outbox.push_back((target(), protocol::encode_update(&merged))),
                // Cannot happen for updates yrs applied; send them one by one.
                _ => {
                    for update in &self.updates {
                        outbox.push_back((target(), protocol::encode_update(update)));
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

    fn apply_frames(outbox: &VecDeque<(Target, Bytes)>) -> String {
        let doc = Doc::new();
        for (_, frame) in outbox {
            for message in protocol::decode_frame(frame).unwrap() {
                let Inbound::Update { update, .. } = message else {
                    panic!("not an update frame");
                };
                doc.transact_mut().apply_update(update).unwrap();
            }
        }
        let text = doc.get_or_insert_text("content");
        text.get_string(&doc.transact())
    }

    #[test]
    fn a_run_is_broadcast_as_one_frame_with_the_same_content() {
        let updates = updates();
        let mut one_by_one = VecDeque::new();
        for u in &updates {
            one_by_one.push_back((Target::All, protocol::encode_update(u)));
        }
        let mut run = Run::default();
        let mut outbox = VecDeque::new();
        for u in &updates {
            run.push(PeerId(7), u.clone(), &mut outbox);
        }
        assert!(outbox.is_empty(), "a run waits for its flush");
        run.flush(&mut outbox);
        assert_eq!(outbox.len(), 1);
        assert!(matches!(outbox[0].0, Target::AllBut(PeerId(7))));
        assert_eq!(apply_frames(&outbox), apply_frames(&one_by_one));
        let merged = apply_frames(&outbox);
        assert!(merged.len() == 5 && merged.contains("hlo"), "{merged}");
    }

    #[test]
    fn another_sender_ends_the_run() {
        let updates = updates();
        let mut run = Run::default();
        let mut outbox = VecDeque::new();
        run.push(PeerId(1), updates[0].clone(), &mut outbox);
        run.push(PeerId(1), updates[1].clone(), &mut outbox);
        run.push(PeerId(2), updates[2].clone(), &mut outbox);
        run.flush(&mut outbox);
        run.flush(&mut outbox);
        let targets: Vec<_> = outbox
            .iter()
            .map(|(t, _)| match t {
                Target::AllBut(p) => p.0,
                _ => 0,
            })
            .collect();
        assert_eq!(targets, [1, 2]);
        assert_eq!(apply_frames(&outbox), "hel");
    }
}
