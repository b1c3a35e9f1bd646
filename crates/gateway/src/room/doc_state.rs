//! The room's document and everything yrs does with it, sans I/O and
//! synchronous: the room moves a [`DocState`] to a yrs thread
//! ([`crate::yrs_threads`]) with a batch of [`DocOp`]s and gets it back with
//! one [`Outcome`] per op and the store tickets to await.
//!
//! One write path for every change, from a WebSocket peer or HTTP:
//! inspect (decode, nesting depth, deleted ranges it does not have) →
//! authorize (a read-only sender may not change the document) → apply (one
//! yrs transaction; its *effective* change is what is stored and fanned out:
//! an update that adds nothing is acknowledged but neither stored nor sent)
//! → check the caps yrs can only tell after applying (pending content, size
//! quota) → append to the store. A refusal after yrs applied (a cap, a yrs
//! error or panic) stores what the batch accepted before, then reloads the
//! document from the store, so the live `Doc` never holds what was refused.
//!
//! Pending content (structs whose causal predecessors have not arrived) is
//! kept durable by storing the update *as received* while the document has
//! pending content: replaying it at load rebuilds the same pending state.
//! Otherwise only the effective change is stored. Pending content is capped
//! (`--max-pending-bytes`, `--max-pending-deletes`) because yrs retries all
//! of it on every later apply.
//!
//! Content *beside a hole* is stored as received too, and counted against
//! `--max-doc-bytes` by its received size. yrs (unlike Yjs) integrates a
//! struct whose client's earlier clocks are missing at once when it needs
//! nothing else (its origins and parent are there), next to a skip, and the
//! state vector stays below the hole. So the transaction's change encodes
//! empty: counted, stored and sent by its change alone, such an update was
//! acknowledged as a no-op while the live document kept it, and a client
//! could grow a room's memory past every quota with updates whose clocks
//! start past their own (measured: a 100 KB insert into a 10 KB quota
//! accepted, the quota's count unmoved). It reaches the other peers when
//! the hole is filled (the change from the state vector then covers it).
//!
//! The defaults, measured (debug build on this 2-core machine, so an upper
//! bound; `cargo test -p tandem-gateway caps_cost -- --ignored --nocapture`):
//!
//! | flood (one update) | its apply | each later keystroke |
//! |---|---|---|
//! | 1,000 pending structs (10 KB) | 7 ms | 3 ms |
//! | 5,000 pending structs (50 KB) | 54 ms | 10 ms |
//! | 10,000 pending structs (100 KB) | 128 ms | 24 ms |
//! | 10,000 unknown deleted ranges (32 KB) | 2 ms | 9 ms |
//! | 100,000 unknown deleted ranges (390 KB) | 29 ms | 14 ms |
//!
//! So `--max-pending-bytes` 64 KiB (~6,500 one-character structs: ~75 ms
//! for the worst accepted update, ~12 ms added to every later apply) and
//! `--max-pending-deletes` 10,000 (~2 ms, ~9 ms) keep the worst accepted
//! update under 100 ms. Deleted ranges of content the same update carries
//! (a client's history in its SyncStep2) are not pending and not counted.
//!
//! Encoded size is not resident size. Measured RSS growth of loading one
//! update into a `Doc` (`resident::rss_per_encoded_byte`, fresh process per
//! kind):
//!
//! | content | encoded | resident | per encoded byte | per item |
//! |---|---|---|---|---|
//! | one 10 MB text insert | 10.0 MB | 12.2 MB | 1.2 | - |
//! | 100,000 unmergeable keystrokes | 0.68 MB | 22.3 MB | 33 | ~220 B |
//! | 1,000,000-key map | 15.9 MB | 431 MB | 27 | ~430 B |
//! | 100,000 array inserts | 0.98 MB | 33.4 MB | 34 | ~330 B |
//!
//! So `--max-doc-bytes` (64 MiB) alone would let one document cost ~2 GB;
//! `--max-doc-items` (500,000, ~215 MB at the worst ~430 B an item) bounds
//! it. One document then costs at most ~215 MB resident (items) or
//! ~77 MB (64 MiB of bulk text), plus one shared encoded copy for joiners.

use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};

use bytes::Bytes;
use tandem_store::{Appended, DocId, Store};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, Out, ReadTxn, StateVector, Text, Transact, Update};

use crate::inspect::{Depths, Encoding, InspectError, Shape, parent_in_doc};
use crate::link::{PeerId, TEXT_ROOT};
use crate::mailbox::{Refusal, RoomError};
use crate::protocol;

/// Longest a `PUT .../text` diff may search for a minimal edit script.
const DIFF_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(50);

/// Largest old + new text diffed by character (see `replace_text`).
const CHAR_DIFF_BYTES: usize = 2 * 1024 * 1024;

/// The bounds the write path enforces (from [`crate::Limits`]).
#[derive(Debug, Clone)]
pub(crate) struct Caps {
    /// Deepest nesting of types (`--max-nesting-depth`).
    pub max_depth: u32,
    /// Most pending (not yet integrable) content, in encoded bytes.
    pub max_pending_bytes: usize,
    /// Most pending deleted ranges (ranges the document does not have).
    pub max_pending_deletes: usize,
    /// Largest encoded document (`--max-doc-bytes`).
    pub max_doc_bytes: usize,
    /// Most item structs in a document (`--max-doc-items`).
    pub max_doc_items: usize,
}

impl Caps {
    /// The caps `limits` set.
    pub(crate) fn of(limits: &crate::config::Limits) -> Caps {
        Caps {
            max_depth: limits.max_nesting_depth,
            max_pending_bytes: limits.max_pending_bytes,
            max_pending_deletes: limits.max_pending_deletes,
            max_doc_bytes: limits.max_doc_bytes,
            max_doc_items: limits.max_doc_items,
        }
    }
}

/// One thing to do with the document.
#[derive(Debug)]
pub(crate) enum DocOp {
    /// A change (an Update or SyncStep2 from a peer, or an HTTP update).
    Update {
        /// Who sent it (`None`: HTTP; a refused peer's later ops are skipped).
        sender: Option<PeerId>,
        /// The encoded update.
        bytes: Bytes,
        /// Its encoding.
        encoding: Encoding,
        /// The sender may change the document.
        may_write: bool,
        /// It directly follows an update from the same sender, with nothing
        /// of the batch in between: the two may be applied as one merged
        /// update (see [`DocState::apply`]).
        continues_run: bool,
    },
    /// Replace the root text with this string (HTTP `PUT .../text`).
    ReplaceText(String),
    /// A peer's state vector: answer with what it lacks.
    SyncStep1 {
        /// Who asked.
        sender: PeerId,
        /// What it has.
        state: StateVector,
    },
}

impl DocOp {
    /// How much work the op may be, in update bytes, for choosing where a
    /// batch runs (`room::batch`, which adds them saturating): a SyncStep1 (an encode of the document)
    /// and a text replacement (a diff) count as too much to run in place.
    pub(crate) fn weight(&self) -> usize {
        match self {
            DocOp::Update { bytes, .. } => bytes.len(),
            DocOp::ReplaceText(_) | DocOp::SyncStep1 { .. } => usize::MAX,
        }
    }
}

/// What became of one [`DocOp`].
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Applied; this effective change (v1) goes to the other peers.
    Changed(Bytes),
    /// Applied but it added nothing: acknowledged, not stored, not sent.
    Unchanged,
    /// The SyncStep2 frame answering a SyncStep1.
    Reply(Bytes),
    /// A read-only sender tried to change the document: nothing applied.
    Denied,
    /// Refused: nothing of it applied or stored.
    Refused(Refusal),
    /// Not looked at: its sender was refused earlier in the batch.
    Skipped,
    /// Applied merged into the run of its sender's updates before it: the
    /// run's first op carries the change (`Changed`), this one adds nothing
    /// more to send.
    Merged,
}

impl From<InspectError> for Refusal {
    fn from(e: InspectError) -> Self {
        Refusal::Malformed(e.to_string())
    }
}

/// What a batch of ops produced.
#[derive(Debug)]
pub(crate) struct Applied {
    /// One per op, in order.
    pub outcomes: Vec<Outcome>,
    /// Store appends to await before anything is sent.
    pub tickets: Vec<Appended>,
    /// The store failed: the room must close its peers with 1011 and go.
    pub store_failed: Option<RoomError>,
    /// The live document encoded for a compaction that was due, with the
    /// last record it holds (see [`DocState::compaction_state`]).
    pub compaction: Option<(tandem_store::Seq, Vec<u8>)>,
}

/// The live document and what the write path keeps about it.
/// Largest document [`DocState::is_small`] calls small.
const SMALL_DOC_BYTES: usize = 1 << 20;

pub(crate) struct DocState {
    /// The live document; equal to what the store holds plus what this
    /// batch accepted.
    doc: Doc,
    /// Depth of each nested type (for the nesting bound).
    depths: Depths,
    /// Encoded size of the document, as last measured (at load and by each
    /// compaction's encode) plus what was stored since: for
    /// `--max-doc-bytes`, and for [`DocState::is_small`]. It only grows
    /// between measures (deletions and merges shrink the real size), so
    /// without the compaction's measure a long stream into a small document
    /// counted past 1 MiB and every batch went to a yrs thread.
    doc_bytes: usize,
    /// Item structs in the document, as last counted plus those stored
    /// since (an upper bound: yrs merges consecutive items; recounted
    /// exactly before refusing anything on `--max-doc-items`).
    items: usize,
    /// The SyncStep2 frame for a joiner with an empty state vector, encoded
    /// once per document state and shared by every such joiner.
    full_state: Option<Bytes>,
    /// Where the document lives.
    store: Store,
    /// Its id.
    doc_id: DocId,
    /// The bounds.
    caps: Caps,
    /// The last log record this room appended: the live document holds the
    /// stored snapshot and every record up to it, no more (the room is the
    /// document's only writer while it is loaded), so it can be compacted
    /// from the live document ([`DocState::compaction_state`]).
    last_appended: Option<tandem_store::Seq>,
    /// Tests only: runs whose merged apply was tried (see `update_run`).
    #[cfg(test)]
    runs_tried: usize,
}

impl DocState {
    /// Loads `doc_id` from the store (run it on a yrs thread).
    pub(crate) fn load(store: Store, doc_id: DocId, caps: Caps) -> Result<DocState, RoomError> {
        let doc = store.load(&doc_id)?;
        DocState::from_doc(doc, store, doc_id, caps)
    }

    /// The state of `doc`, just loaded from `store` (run it on a yrs thread).
    pub(crate) fn from_doc(
        doc: Doc,
        store: Store,
        doc_id: DocId,
        caps: Caps,
    ) -> Result<DocState, RoomError> {
        let (depths, doc_bytes, items) = measure(&doc)?;
        Ok(DocState {
            doc,
            depths,
            doc_bytes,
            items,
            full_state: None,
            store,
            doc_id,
            caps,
            last_appended: None,
            #[cfg(test)]
            runs_tried: 0,
        })
    }

    /// The live document's state vector (for SyncStep1 to joiners).
    pub(crate) fn state_vector(&self) -> StateVector {
        self.doc.transact().state_vector()
    }

    /// The live document encoded whole, with the last record it holds, for
    /// `Store::compact_from_state` (one encode instead of the store decoding
    /// and replaying the whole log again); `None` until this room has
    /// appended a record (then the store compacts by replaying). The encode
    /// is also an exact measure: it resets the running size count.
    pub(crate) fn compaction_state(&mut self) -> Option<(tandem_store::Seq, Vec<u8>)> {
        let upto = self.last_appended?;
        let state = self
            .doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        self.doc_bytes = state.len();
        Some((upto, state))
    }

    /// Whether this room has appended a record (compactions then start
    /// from the live document).
    pub(crate) fn has_appended(&self) -> bool {
        self.last_appended.is_some()
    }

    /// A document whose ops are cheap: under 1 MiB encoded, nothing
    /// pending (content or deletes), so applying a few KiB to it, or
    /// refusing them and reloading it, takes well under a millisecond.
    pub(crate) fn is_small(&self) -> bool {
        if self.doc_bytes > SMALL_DOC_BYTES {
            return false;
        }
        let txn = self.doc.transact();
        pending_bytes(&txn) == 0 && pending_delete_ranges(&txn) == 0
    }

    /// Runs `ops` in order (see the module docs).
    ///
    /// A run of one sender's consecutive updates (see
    /// [`DocOp::Update::continues_run`]) is first applied as ONE update,
    /// merged with `yrs::merge_updates_v1`: one inspection, one transaction
    /// and one stored record instead of one each, and consecutive
    /// keystrokes become a few structs instead of one per character (the
    /// throughput stream's cost per update was mostly yrs's per-transaction
    /// and per-struct work). If the merged update is refused, whatever it
    /// applied is rolled back as for any refusal and the run is applied one
    /// update at a time; and a run that could reach the size or item quota
    /// is applied one update at a time from the start (the quotas keep a
    /// running count that is measured exactly only near the cap, and a
    /// merged update counts fewer bytes than its parts). So the same
    /// updates are accepted and refused as without merging: the property
    /// test `runs::a_merged_run_ends_like_one_update_at_a_time` checks it,
    /// quota refusals and malformed updates included.
    pub(crate) fn apply(&mut self, ops: Vec<DocOp>) -> Applied {
        let mut out = Applied {
            outcomes: Vec::with_capacity(ops.len()),
            tickets: Vec::new(),
            store_failed: None,
            compaction: None,
        };
        let mut unstored: Vec<Bytes> = Vec::new();
        let mut refused: HashSet<PeerId> = HashSet::new();
        let mut at = 0;
        // Ops before this index belong to a run that was not applied merged:
        // they go one at a time (merging the rest of such a run again would
        // cost a merge, and perhaps a refusal's reload, per update).
        let mut one_by_one_until = 0;
        while at < ops.len() {
            if out.store_failed.is_some() {
                out.outcomes.push(Outcome::Skipped);
                at += 1;
                continue;
            }
            if at >= one_by_one_until {
                let run = run_len(&ops[at..], &refused);
                if run > 1 {
                    if self.update_run(&ops[at..at + run], &mut unstored, &mut out) {
                        at += run;
                        continue;
                    }
                    one_by_one_until = at + run;
                }
            }
            let outcome = match &ops[at] {
                DocOp::SyncStep1 { sender, .. } if refused.contains(sender) => Outcome::Skipped,
                DocOp::SyncStep1 { state, .. } => Outcome::Reply(self.sync_step2(state)),
                DocOp::Update { sender, .. } if sender.is_some_and(|s| refused.contains(&s)) => {
                    Outcome::Skipped
                }
                DocOp::Update {
                    sender,
                    bytes,
                    encoding,
                    may_write,
                    ..
                } => {
                    let outcome =
                        self.update(bytes, *encoding, *may_write, &mut unstored, &mut out);
                    if let (Outcome::Refused(_), Some(s)) = (&outcome, sender) {
                        refused.insert(*s);
                    }
                    outcome
                }
                DocOp::ReplaceText(text) => self.replace_text(text, &mut unstored, &mut out),
            };
            out.outcomes.push(outcome);
            at += 1;
        }
        self.flush(&mut unstored, &mut out);
        out
    }

    /// Applies `run` (updates of one sender, see [`run_len`]) as one merged
    /// update; true when it was accepted (its outcomes are pushed), false
    /// when the run must be applied one update at a time (nothing of it is
    /// left applied).
    fn update_run(&mut self, run: &[DocOp], unstored: &mut Vec<Bytes>, out: &mut Applied) -> bool {
        let parts: Vec<&[u8]> = run
            .iter()
            .filter_map(|op| match op {
                DocOp::Update { bytes, .. } => Some(&bytes[..]),
                _ => None,
            })
            .collect();
        // Near a quota the running counts decide when to measure exactly, and
        // a merged update counts fewer bytes than its parts: there, each
        // update goes its own way, counted as before. (Bytes bound items
        // from above: every item takes at least one.)
        let received: usize = parts.iter().map(|p| p.len()).sum();
        if self.doc_bytes.saturating_add(received) > self.caps.max_doc_bytes
            || self.items.saturating_add(received) > self.caps.max_doc_items
        {
            return false;
        }
        #[cfg(test)]
        {
            self.runs_tried += 1;
        }
        // yrs may panic on hostile bytes: then each update goes its own way.
        let merged = catch_unwind(AssertUnwindSafe(|| yrs::merge_updates_v1(&parts)));
        let Ok(Ok(merged)) = merged else {
            return false;
        };
        match self.update(&merged, Encoding::V1, true, unstored, out) {
            Outcome::Refused(_) => false,
            Outcome::Changed(change) => {
                out.outcomes.push(Outcome::Changed(change));
                // An empty update (a client's SyncStep2 with nothing new)
                // changed nothing, merged or not.
                out.outcomes.extend(parts[1..].iter().map(|part| {
                    if *part == Update::EMPTY_V1 {
                        Outcome::Unchanged
                    } else {
                        Outcome::Merged
                    }
                }));
                true
            }
            _ => {
                out.outcomes
                    .extend(std::iter::repeat_with(|| Outcome::Unchanged).take(run.len()));
                true
            }
        }
    }

    /// SyncStep2 for `state`; the empty-state answer is encoded once.
    fn sync_step2(&mut self, state: &StateVector) -> Bytes {
        if state.is_empty() {
            if let Some(frame) = &self.full_state {
                return frame.clone();
            }
            let frame = protocol::encode_sync_step2(&self.doc.transact().encode_diff_v1(state));
            self.full_state = Some(frame.clone());
            return frame;
        }
        protocol::encode_sync_step2(&self.doc.transact().encode_diff_v1(state))
    }

    /// The write path for one encoded update.
    fn update(
        &mut self,
        bytes: &[u8],
        encoding: Encoding,
        may_write: bool,
        unstored: &mut Vec<Bytes>,
        out: &mut Applied,
    ) -> Outcome {
        let shape = match Shape::read(bytes, encoding) {
            Ok(shape) => shape,
            Err(e) => return Outcome::Refused(e.into()),
        };
        if shape.is_empty() {
            return Outcome::Unchanged;
        }
        let (added_depths, pending_deletes) = {
            let txn = self.doc.transact();
            if !may_write {
                return if adds_nothing(&txn, &shape) {
                    Outcome::Unchanged
                } else {
                    Outcome::Denied
                };
            }
            let depths = shape.type_depths(&self.depths, self.caps.max_depth, |id| {
                parent_in_doc(&txn, id)
            });
            let depths = match depths {
                Ok(d) => d,
                Err(e) => return Outcome::Refused(e.into()),
            };
            let already = pending_delete_ranges(&txn);
            (
                depths,
                already
                    + if shape.deletes_anything() {
                        shape.unknown_delete_ranges(&txn.state_vector())
                    } else {
                        0
                    },
            )
        };
        if pending_deletes > self.caps.max_pending_deletes {
            return Outcome::Refused(Refusal::Pending(format!(
                "the update deletes ranges this document does not have: {pending_deletes} pending, at most {} allowed",
                self.caps.max_pending_deletes
            )));
        }
        let decoded = match encoding {
            Encoding::V1 => Update::decode_v1(bytes),
            Encoding::V2 => Update::decode_v2(bytes),
        };
        let update = match decoded {
            Ok(u) => u,
            Err(e) => return Outcome::Refused(Refusal::Malformed(e.to_string())),
        };
        let applied = catch_unwind(AssertUnwindSafe(|| {
            let mut txn = self.doc.transact_mut();
            txn.apply_update(update).map(|()| {
                // Structs the state vector still lacks after the apply:
                // pending (waiting for what they need), or integrated beside
                // a hole in their client's clocks (see the module docs).
                let held = shape.adds_to(&txn.state_vector());
                (txn.encode_update_v1(), pending_bytes(&txn), held)
            })
        }));
        let refusal = match applied {
            Ok(Ok((effective, pending, held))) => {
                // Content held beside a hole is in the document but not in
                // its change: it counts as the update's bytes. Pending
                // content is counted so too, and again once it integrates:
                // an over-count, which the exact measure before any refusal
                // corrects (see `over_quota`).
                let counted = if held { bytes } else { &effective[..] };
                if pending > self.caps.max_pending_bytes {
                    Some(Refusal::Pending(format!(
                        "the update leaves {pending} bytes of content waiting for updates this document does not have; at most {} allowed",
                        self.caps.max_pending_bytes
                    )))
                } else if let Some(refusal) = self.over_quota(counted, Some(shape.items())) {
                    Some(refusal)
                } else {
                    self.depths.extend(added_depths);
                    return self.accept(effective, pending > 0 || held, bytes, encoding, unstored);
                }
            }
            Ok(Err(e)) => Some(Refusal::Malformed(format!("yrs rejected the update: {e}"))),
            Err(_) => Some(Refusal::Malformed("yrs could not apply the update".into())),
        };
        let refusal = refusal.unwrap_or_else(|| Refusal::Malformed("refused".into()));
        self.reload(unstored, out);
        Outcome::Refused(refusal)
    }

    /// Records an applied change: stores it (see the module docs for what is
    /// stored while content is pending) and returns what to fan out.
    fn accept(
        &mut self,
        effective: Vec<u8>,
        pending: bool,
        received: &[u8],
        encoding: Encoding,
        unstored: &mut Vec<Bytes>,
    ) -> Outcome {
        let changed = effective.as_slice() != Update::EMPTY_V1;
        let effective = Bytes::from(effective);
        if pending {
            let as_v1 = match encoding {
                Encoding::V1 => Some(Bytes::copy_from_slice(received)),
                Encoding::V2 => Update::decode_v2(received)
                    .ok()
                    .map(|u| Bytes::from(u.encode_v1())),
            };
            unstored.extend(as_v1);
        } else if changed {
            unstored.push(effective.clone());
        }
        if !changed {
            return Outcome::Unchanged;
        }
        self.full_state = None;
        Outcome::Changed(effective)
    }

    /// `PUT .../text`: a minimal character diff from the current text to
    /// `new`, so unchanged text keeps its identity (remote cursors stay put).
    fn replace_text(&mut self, new: &str, unstored: &mut Vec<Bytes>, out: &mut Applied) -> Outcome {
        if let Some(kind) = root_kind(&self.doc).filter(|k| *k != "text") {
            return Outcome::Refused(Refusal::NotText(kind));
        }
        let text = self.doc.get_or_insert_text(TEXT_ROOT);
        let effective = {
            let mut txn = self.doc.transact_mut();
            let old = text.get_string(&txn);
            // Bounded: past the deadline the diff is coarser, never slower.
            let mut config = similar::TextDiff::configure();
            config.timeout(DIFF_TIMEOUT);
            // A char diff keeps ~16 bytes per character on each side: past
            // CHAR_DIFF_BYTES, diff whole lines instead (still only the
            // changed lines are replaced).
            let diff = if old.len() + new.len() <= CHAR_DIFF_BYTES {
                config.diff_chars(old.as_str(), new)
            } else {
                config.diff_lines(old.as_str(), new)
            };
            // Offsets are in bytes (the store's documents use yrs' default
            // OffsetKind::Bytes); walk the old text while applying.
            let mut at: u32 = 0;
            for op in diff.ops() {
                let old_part: usize = op
                    .old_range()
                    .filter_map(|i| diff.old_slice(i))
                    .map(|s: &str| s.len())
                    .sum();
                let new_part: String = op.new_range().filter_map(|i| diff.new_slice(i)).collect();
                match op.tag() {
                    similar::DiffTag::Equal => at += old_part as u32,
                    similar::DiffTag::Delete => text.remove_range(&mut txn, at, old_part as u32),
                    similar::DiffTag::Insert => {
                        text.insert(&mut txn, at, &new_part);
                        at += new_part.len() as u32;
                    }
                    similar::DiffTag::Replace => {
                        text.remove_range(&mut txn, at, old_part as u32);
                        text.insert(&mut txn, at, &new_part);
                        at += new_part.len() as u32;
                    }
                }
            }
            txn.encode_update_v1()
        };
        if let Some(refusal) = self.over_quota(&effective, None) {
            self.reload(unstored, out);
            return Outcome::Refused(refusal);
        }
        self.accept(effective, false, &[], Encoding::V1, unstored)
    }

    /// Whether the applied `effective` change takes the document past its
    /// size or item quota; if not, counts it into `doc_bytes` and `items`.
    ///
    /// `items` is the change's item count if known (the received update's,
    /// an upper bound), else the effective change is read to count them.
    fn over_quota(&mut self, effective: &[u8], items: Option<usize>) -> Option<Refusal> {
        if effective == Update::EMPTY_V1 {
            return None;
        }
        let added =
            items.unwrap_or_else(|| Shape::read(effective, Encoding::V1).map_or(0, |s| s.items()));
        let mut size = self.doc_bytes + effective.len();
        let mut items = self.items + added;
        if size > self.caps.max_doc_bytes || items > self.caps.max_doc_items {
            // The running counts only grow (deletions and merges shrink the
            // real ones): measure exactly before refusing. The document
            // already holds the change, so the measure includes it.
            if let Ok((_, exact_size, exact_items)) = measure(&self.doc) {
                size = exact_size;
                items = exact_items;
            }
            if size > self.caps.max_doc_bytes {
                return Some(Refusal::DocTooLarge {
                    size,
                    max: self.caps.max_doc_bytes,
                });
            }
            if items > self.caps.max_doc_items {
                return Some(Refusal::TooManyItems {
                    items,
                    max: self.caps.max_doc_items,
                });
            }
        }
        self.doc_bytes = size;
        self.items = items;
        None
    }

    /// Appends the accepted changes not yet stored as one record.
    fn flush(&mut self, unstored: &mut Vec<Bytes>, out: &mut Applied) {
        if unstored.is_empty() || out.store_failed.is_some() {
            return;
        }
        let updates: Vec<&[u8]> = unstored.iter().map(|u| &u[..]).collect();
        match self.store.append_batch(&self.doc_id, &updates) {
            Ok(ticket) => {
                self.last_appended = Some(ticket.seq);
                out.tickets.push(ticket);
            }
            Err(e) => out.store_failed = Some(e.into()),
        }
        unstored.clear();
    }

    /// After a refusal yrs may have half-applied: stores what was accepted,
    /// then reloads the document from the store.
    fn reload(&mut self, unstored: &mut Vec<Bytes>, out: &mut Applied) {
        self.flush(unstored, out);
        if out.store_failed.is_some() {
            return;
        }
        match DocState::load(self.store.clone(), self.doc_id.clone(), self.caps.clone()) {
            Ok(fresh) => *self = fresh,
            Err(e) => out.store_failed = Some(e),
        }
    }
}

/// How many ops from the start of `ops` form one sender's run of updates
/// that may be applied merged: v1 updates from a peer allowed to write,
/// each but the first continuing the run, from a sender not `refused`.
/// 1 when the first op starts none.
fn run_len(ops: &[DocOp], refused: &HashSet<PeerId>) -> usize {
    let mergeable = |op: &DocOp| {
        matches!(
            op,
            DocOp::Update {
                sender: Some(sender),
                encoding: Encoding::V1,
                may_write: true,
                ..
            } if !refused.contains(sender)
        )
    };
    // A run starts at an update that is not empty (the first op carries the
    // run's change, and counts as an applied update).
    let starts = |op: &DocOp| {
        mergeable(op) && matches!(op, DocOp::Update { bytes, .. } if bytes[..] != *Update::EMPTY_V1)
    };
    if !ops.first().is_some_and(starts) {
        return 1;
    }
    1 + ops[1..]
        .iter()
        .take_while(|op| {
            mergeable(op)
                && matches!(
                    op,
                    DocOp::Update {
                        continues_run: true,
                        ..
                    }
                )
        })
        .count()
}

/// The nesting depths, encoded size and item structs of a document.
fn measure(doc: &Doc) -> Result<(Depths, usize, usize), InspectError> {
    let txn = doc.transact();
    let state = txn.encode_state_as_update_v1(&StateVector::default());
    let (mut depths, items) = Depths::of_state(&state)?;
    if let Some(pending) = txn.store().pending_update() {
        let (pending, _) = Depths::of_state(&pending.update.encode_v1())?;
        depths.merge(pending);
    }
    Ok((depths, state.len(), items))
}

/// Encoded bytes of the content waiting for missing predecessors.
fn pending_bytes<T: ReadTxn>(txn: &T) -> usize {
    txn.store()
        .pending_update()
        .map_or(0, |p| p.update.encode_v1().len())
}

/// Deleted ranges waiting for the content they delete.
fn pending_delete_ranges<T: ReadTxn>(txn: &T) -> usize {
    txn.store()
        .pending_ds()
        .map_or(0, |ds| ds.iter().map(|(_, r)| r.len()).sum())
}

/// True when applying `shape` would change nothing: every struct is
/// already integrated and every deleted range already deleted.
fn adds_nothing<T: ReadTxn>(txn: &T, shape: &Shape) -> bool {
    let state = txn.state_vector();
    if shape.adds_to(&state) {
        return false;
    }
    // The document's whole delete set is computed only if needed.
    !shape.deletes_anything() || shape.deletes_within(&txn.snapshot().delete_set)
}

/// The kind of the root `content`, if it exists and its kind is known.
pub(crate) fn root_kind(doc: &Doc) -> Option<&'static str> {
    let txn = doc.transact();
    let (_, out) = txn.root_refs().find(|(name, _)| *name == TEXT_ROOT)?;
    Some(match out {
        Out::YText(_) => "text",
        Out::YArray(_) => "array",
        Out::YMap(_) => "map",
        Out::YXmlElement(_) => "XML element",
        Out::YXmlFragment(_) => "XML fragment",
        Out::YXmlText(_) => "XML text",
        // A root only ever written by remote updates has no declared type:
        // tell it by its content (map entries, or values that are not text).
        Out::UndefinedRef(_) => {
            let map = txn.get_map(TEXT_ROOT)?;
            if yrs::Map::len(&map, &txn) > 0 {
                "map"
            } else {
                let array = txn.get_array(TEXT_ROOT)?;
                let not_text = yrs::Array::iter(&array, &txn)
                    .any(|v| !matches!(v, Out::Any(yrs::Any::String(_))));
                if not_text {
                    "array"
                } else {
                    return None;
                }
            }
        }
        _ => "value of another type",
    })
}

#[cfg(test)]
mod runs {
    //! A sender's run of updates applied merged: the same outcome as one by one.
    use super::*;
    use yrs::types::ToJson;
    use yrs::{Map, MapPrelim};

    /// The root the property test nests maps in.
    const MAP_ROOT: &str = "m";

    fn state(dir: &std::path::Path, max_doc_bytes: usize) -> DocState {
        let store = Store::open(tandem_store::StoreConfig::new(dir)).unwrap();
        let caps = Caps {
            max_depth: 4,
            max_pending_bytes: 64 * 1024,
            max_pending_deletes: 10_000,
            max_doc_bytes,
            max_doc_items: 500_000,
        };
        DocState::load(store, DocId::new("runs").unwrap(), caps).unwrap()
    }

    /// One update per string of `parts`, each typed at the end by client 5.
    fn keystrokes(parts: &[&str]) -> Vec<Vec<u8>> {
        let doc = Doc::with_client_id(5);
        let text = doc.get_or_insert_text(TEXT_ROOT);
        parts
            .iter()
            .map(|part| {
                let sv = doc.transact().state_vector();
                let len = text.len(&doc.transact());
                text.insert(&mut doc.transact_mut(), len, part);
                doc.transact().encode_diff_v1(&sv)
            })
            .collect()
    }

    /// The updates as one peer's consecutive ops (`merged`: marked as a run).
    fn ops(updates: &[Vec<u8>], merged: bool) -> Vec<DocOp> {
        updates
            .iter()
            .enumerate()
            .map(|(i, u)| DocOp::Update {
                sender: Some(PeerId(7)),
                bytes: Bytes::from(u.clone()),
                encoding: Encoding::V1,
                may_write: true,
                continues_run: merged && i > 0,
            })
            .collect()
    }

    fn text(state: &DocState) -> String {
        let text = state.doc.get_or_insert_text(TEXT_ROOT);
        text.get_string(&state.doc.transact())
    }

    /// The text and the nested maps, for comparing whole documents.
    fn content(doc: &Doc) -> (String, yrs::Any) {
        let text = doc.get_or_insert_text(TEXT_ROOT);
        let map = doc.get_or_insert_map(MAP_ROOT);
        let txn = doc.transact();
        (text.get_string(&txn), map.to_json(&txn))
    }

    fn stored(state: &DocState) -> u64 {
        state
            .store
            .info(&state.doc_id)
            .unwrap()
            .map_or(0, |i| i.update_count)
    }

    /// The outcome kinds, comparable across the two ways of applying: an
    /// update that adds nothing is accepted like one that does (merged into
    /// a run that changed the document, it cannot tell which it was).
    fn kinds(outcomes: &[Outcome]) -> Vec<&'static str> {
        outcomes
            .iter()
            .map(|o| match o {
                Outcome::Changed(_) | Outcome::Merged | Outcome::Unchanged => "accepted",
                Outcome::Refused(_) => "refused",
                Outcome::Skipped => "skipped",
                Outcome::Reply(_) | Outcome::Denied => "other",
            })
            .collect()
    }

    #[test]
    fn a_senders_run_is_applied_as_one_update_and_stored_as_one_record() {
        let parts: Vec<String> = (0..50).map(|i| format!("{}", i % 10)).collect();
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        let updates = keystrokes(&parts);
        let dir = tempfile::tempdir().unwrap();
        let mut run = state(dir.path(), usize::MAX);
        let out = run.apply(ops(&updates, true));
        assert!(matches!(out.outcomes[0], Outcome::Changed(_)));
        assert!(
            out.outcomes[1..]
                .iter()
                .all(|o| matches!(o, Outcome::Merged))
        );
        assert_eq!(text(&run), parts.concat());
        assert_eq!(stored(&run), 1, "one merged record");
        // The same updates not marked as a run: one record each.
        let dir = tempfile::tempdir().unwrap();
        let mut single = state(dir.path(), usize::MAX);
        let out = single.apply(ops(&updates, false));
        assert!(
            out.outcomes
                .iter()
                .all(|o| matches!(o, Outcome::Changed(_)))
        );
        assert_eq!(text(&single), parts.concat());
        assert_eq!(stored(&single), 50);
    }

    #[test]
    fn a_compaction_remeasures_the_document_so_a_long_stream_is_applied_in_place() {
        // 300 times: 4 KiB typed, then deleted. The stored changes add up to
        // over 1 MiB; the document holds a few bytes per deleted run.
        let doc = Doc::with_client_id(5);
        let text = doc.get_or_insert_text(TEXT_ROOT);
        let mut updates = Vec::new();
        for _ in 0..300 {
            let sv = doc.transact().state_vector();
            text.insert(&mut doc.transact_mut(), 0, &"a".repeat(4096));
            updates.push(doc.transact().encode_diff_v1(&sv));
            let sv = doc.transact().state_vector();
            text.remove_range(&mut doc.transact_mut(), 0, 4096);
            updates.push(doc.transact().encode_diff_v1(&sv));
        }
        let dir = tempfile::tempdir().unwrap();
        let mut stream = state(dir.path(), usize::MAX);
        assert!(stream.is_small());
        for update in &updates {
            let out = stream.apply(ops(std::slice::from_ref(update), false));
            assert!(matches!(out.outcomes[0], Outcome::Changed(_)));
        }
        // The running count only grows: past 1 MiB the batches would go to
        // a yrs thread, two thread hand-offs each.
        assert!(stream.doc_bytes > SMALL_DOC_BYTES);
        assert!(!stream.is_small());
        let (_, encoded) = stream.compaction_state().expect("records were appended");
        let (_, exact, _) = measure(&stream.doc).unwrap();
        assert_eq!(stream.doc_bytes, exact);
        assert_eq!(encoded.len(), exact);
        assert!(exact < 64 * 1024, "{exact} bytes");
        assert!(stream.is_small());
    }

    #[test]
    fn content_beside_a_hole_in_its_clocks_is_counted_stored_and_sent_once_the_hole_fills() {
        // Client 50 types "hello" (never sent), then 3,000 characters into
        // another root: they need nothing of "hello", only its clocks.
        let doc = Doc::with_client_id(50);
        let hello = doc.get_or_insert_text(TEXT_ROOT);
        let other = doc.get_or_insert_text("x");
        let sv = StateVector::default();
        hello.insert(&mut doc.transact_mut(), 0, "hello");
        let withheld = doc.transact().encode_diff_v1(&sv);
        let sv = doc.transact().state_vector();
        other.insert(&mut doc.transact_mut(), 0, &"z".repeat(3_000));
        let beside = doc.transact().encode_diff_v1(&sv);
        let others = |doc: &Doc| doc.get_or_insert_text("x").len(&doc.transact());

        // Past the quota by its own bytes: refused, and nothing of it kept.
        let dir = tempfile::tempdir().unwrap();
        let mut small = state(dir.path(), 2_000);
        let out = small.apply(ops(std::slice::from_ref(&beside), false));
        assert!(matches!(
            out.outcomes[0],
            Outcome::Refused(Refusal::DocTooLarge { .. })
        ));
        assert_eq!(others(&small.doc), 0);

        // Within it: counted and stored as received, so the store holds
        // what the live document does; nothing to send yet.
        let dir = tempfile::tempdir().unwrap();
        let mut room = state(dir.path(), 100_000);
        let out = room.apply(ops(std::slice::from_ref(&beside), false));
        assert!(matches!(out.outcomes[0], Outcome::Unchanged));
        assert_eq!(others(&room.doc), 3_000);
        assert!(room.doc_bytes >= beside.len());
        assert_eq!(others(&room.store.load(&room.doc_id).unwrap()), 3_000);

        // The hole filled: the change carries both, for the other peers.
        let out = room.apply(ops(&[withheld], false));
        let Outcome::Changed(change) = &out.outcomes[0] else {
            panic!("{:?}", out.outcomes[0]);
        };
        let peer = Doc::new();
        peer.transact_mut()
            .apply_update(Update::decode_v1(change).unwrap())
            .unwrap();
        assert_eq!(others(&peer), 3_000);
        assert_eq!(
            peer.get_or_insert_text(TEXT_ROOT)
                .get_string(&peer.transact()),
            "hello"
        );
    }

    #[test]
    fn a_refused_update_in_a_run_refuses_exactly_what_it_would_alone() {
        let big = "y".repeat(3_000);
        let updates = keystrokes(&["ab", "cd", &big, "ef"]);
        let dir = tempfile::tempdir().unwrap();
        let mut run = state(dir.path(), 2_000);
        let merged = run.apply(ops(&updates, true));
        let dir = tempfile::tempdir().unwrap();
        let mut single = state(dir.path(), 2_000);
        let alone = single.apply(ops(&updates, false));
        assert_eq!(
            kinds(&merged.outcomes),
            ["accepted", "accepted", "refused", "skipped"]
        );
        assert_eq!(kinds(&merged.outcomes), kinds(&alone.outcomes));
        assert_eq!(text(&run), "abcd");
        assert_eq!(text(&single), "abcd");
        assert_eq!(stored(&run), 2);
    }

    /// One thing a client sends: a keystroke, a deletion, a big insert (past
    /// the size quota once the document has grown), garbage, a chain of
    /// nested maps (past the depth bound of [`state`] when deeper than 4),
    /// or a keystroke another client (8) typed right after one it never
    /// sent (content that stays pending).
    ///
    /// Not here: edits a client sends after one of its own it withheld.
    /// yrs integrates such an edit at once beside the hole in its clocks
    /// when it needs nothing else, but holds it pending behind an earlier
    /// pending struct of the same client in the same update: merged and
    /// alone differ until the hole fills, by yrs's design. What the write
    /// path does with such content has its own test (`content_beside_a_hole…`).
    #[derive(Debug, Clone)]
    enum Sent {
        Type(u8, u8),
        Delete(u8),
        Big(u16),
        Garbage(Vec<u8>),
        Nest(u8),
        Orphan(u8),
    }

    fn send() -> impl proptest::strategy::Strategy<Value = Sent> {
        use proptest::prelude::*;
        prop_oneof![
            8 => (any::<u8>(), 0u8..26).prop_map(|(at, c)| Sent::Type(at, c)),
            2 => any::<u8>().prop_map(Sent::Delete),
            1 => (100u16..800).prop_map(Sent::Big),
            1 => proptest::collection::vec(any::<u8>(), 1..12).prop_map(Sent::Garbage),
            1 => (1u8..7).prop_map(Sent::Nest),
            1 => (0u8..26).prop_map(Sent::Orphan),
        ]
    }

    /// The updates a client sends, made on its own document.
    fn encode(sends: &[Sent]) -> Vec<Vec<u8>> {
        let doc = Doc::with_client_id(9);
        let text = doc.get_or_insert_text(TEXT_ROOT);
        let other = Doc::with_client_id(8);
        let orphans = other.get_or_insert_text(TEXT_ROOT);
        sends
            .iter()
            .map(|send| {
                let sv = doc.transact().state_vector();
                let len = text.len(&doc.transact());
                match send {
                    Sent::Type(at, c) => {
                        let at = u32::from(*at) % (len + 1);
                        let c = char::from(b'a' + c).to_string();
                        text.insert(&mut doc.transact_mut(), at, &c);
                    }
                    Sent::Delete(at) if len > 0 => {
                        text.remove_range(&mut doc.transact_mut(), u32::from(*at) % len, 1);
                    }
                    Sent::Delete(_) => {}
                    Sent::Big(n) => {
                        text.insert(&mut doc.transact_mut(), len, &"b".repeat(*n as usize))
                    }
                    Sent::Garbage(bytes) => return bytes.clone(),
                    Sent::Nest(depth) => {
                        let root = doc.get_or_insert_map(MAP_ROOT);
                        let mut txn = doc.transact_mut();
                        let mut map = root.insert(&mut txn, "k", MapPrelim::default());
                        for _ in 1..*depth {
                            map = map.insert(&mut txn, "k", MapPrelim::default());
                        }
                    }
                    Sent::Orphan(c) => {
                        let len = orphans.len(&other.transact());
                        orphans.insert(&mut other.transact_mut(), len, "p");
                        let sv = other.transact().state_vector();
                        let c = char::from(b'a' + c).to_string();
                        orphans.insert(&mut other.transact_mut(), len + 1, &c);
                        return other.transact().encode_diff_v1(&sv);
                    }
                }
                doc.transact().encode_diff_v1(&sv)
            })
            .collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Whatever a client sends, applying its run merged accepts and
        /// refuses exactly what applying it one update at a time does, and
        /// leaves the same document in memory and in the store.
        #[test]
        fn a_merged_run_ends_like_one_update_at_a_time(
            sends in proptest::collection::vec(send(), 1..40),
        ) {
            let updates = encode(&sends);
            let dir = tempfile::tempdir().unwrap();
            let mut run = state(dir.path(), 1_500);
            let merged = run.apply(ops(&updates, true));
            let dir = tempfile::tempdir().unwrap();
            let mut single = state(dir.path(), 1_500);
            let alone = single.apply(ops(&updates, false));
            proptest::prop_assert_eq!(kinds(&merged.outcomes), kinds(&alone.outcomes));
            proptest::prop_assert_eq!(content(&run.doc), content(&single.doc));
            let stored = |s: &DocState| content(&s.store.load(&s.doc_id).unwrap());
            proptest::prop_assert_eq!(stored(&run), content(&single.doc));
            proptest::prop_assert_eq!(stored(&single), content(&single.doc));
        }
    }

    #[test]
    fn a_run_refused_merged_is_tried_merged_once_then_goes_one_by_one() {
        let parts: Vec<String> = (0..50).map(|i| format!("{}", i % 10)).collect();
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        let mut updates = keystrokes(&parts);
        updates.push(vec![0xff, 0xff, 0xff]);
        let dir = tempfile::tempdir().unwrap();
        let mut run = state(dir.path(), usize::MAX);
        let out = run.apply(ops(&updates, true));
        assert_eq!(out.outcomes.len(), 51);
        assert!(matches!(out.outcomes[50], Outcome::Refused(_)));
        assert_eq!(text(&run), parts.concat());
        // Not once more for each update of the run's rest.
        assert_eq!(run.runs_tried, 1);
    }

    #[test]
    fn a_run_with_a_malformed_update_keeps_the_updates_before_it() {
        let mut updates = keystrokes(&["ab", "cd"]);
        updates.push(vec![0xff, 0xff, 0xff]);
        let dir = tempfile::tempdir().unwrap();
        let mut run = state(dir.path(), usize::MAX);
        let out = run.apply(ops(&updates, true));
        assert_eq!(kinds(&out.outcomes), ["accepted", "accepted", "refused"]);
        assert_eq!(text(&run), "abcd");
    }
}

#[cfg(test)]
mod measure {
    //! Run by hand: `cargo test -p tandem-gateway caps_cost -- --ignored --nocapture`.
    use std::time::Instant;

    use super::super::tests::unknown_deletes;
    use super::*;

    fn state(dir: &std::path::Path) -> DocState {
        let store = Store::open(tandem_store::StoreConfig::new(dir)).unwrap();
        let caps = Caps {
            max_depth: 1000,
            max_pending_bytes: usize::MAX,
            max_pending_deletes: usize::MAX,
            max_doc_bytes: usize::MAX,
            max_doc_items: usize::MAX,
        };
        DocState::load(store, DocId::new("m").unwrap(), caps).unwrap()
    }

    fn op(bytes: Vec<u8>) -> DocOp {
        DocOp::Update {
            sender: None,
            bytes: Bytes::from(bytes),
            encoding: Encoding::V1,
            may_write: true,
            continues_run: false,
        }
    }

    /// `clients` one-character structs, each waiting for a clock its client never sent.
    fn pending_flood(clients: u64) -> Vec<u8> {
        let updates: Vec<Vec<u8>> = (0..clients)
            .map(|c| {
                let doc = Doc::with_client_id(1_000 + c);
                let text = doc.get_or_insert_text(TEXT_ROOT);
                text.insert(&mut doc.transact_mut(), 0, "a");
                let sv = doc.transact().state_vector();
                text.insert(&mut doc.transact_mut(), 1, "b");
                doc.transact().encode_diff_v1(&sv)
            })
            .collect();
        yrs::merge_updates_v1(&updates).unwrap()
    }

    /// Applies `flood`, then times honest keystrokes (each retries what is pending).
    fn time(name: &str, flood: Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let mut s = state(dir.path());
        let size = flood.len();
        let t = Instant::now();
        let out = s.apply(vec![op(flood)]);
        let flood_ms = t.elapsed().as_secs_f64() * 1e3;
        assert!(matches!(
            out.outcomes[0],
            Outcome::Changed(_) | Outcome::Unchanged
        ));
        let (pending, deletes) = {
            let txn = s.doc.transact();
            (pending_bytes(&txn), pending_delete_ranges(&txn))
        };
        let honest = Doc::with_client_id(1);
        let text = honest.get_or_insert_text(TEXT_ROOT);
        let mut worst: f64 = 0.0;
        for i in 0..20 {
            let sv = honest.transact().state_vector();
            text.insert(&mut honest.transact_mut(), i, "x");
            let u = honest.transact().encode_diff_v1(&sv);
            let t = Instant::now();
            s.apply(vec![op(u)]);
            worst = worst.max(t.elapsed().as_secs_f64() * 1e3);
        }
        println!(
            "{name}: {size} B update, {pending} B pending, {deletes} pending ranges: \
             flood apply {flood_ms:.1} ms, worst later keystroke {worst:.1} ms"
        );
    }

    #[test]
    #[ignore]
    fn caps_cost() {
        for clients in [1_000, 5_000, 10_000] {
            time(&format!("pending x{clients}"), pending_flood(clients));
        }
        for ranges in [10_000, 100_000] {
            time(&format!("deletes x{ranges}"), unknown_deletes(ranges));
        }
    }
}

#[cfg(test)]
mod resident {
    //! Run by hand, twice per kind: the first run builds the update and saves
    //! it to `RSS_FILE`, the second (a fresh process, so no freed memory is
    //! reused) loads it into a `Doc` and reports the RSS growth:
    //! `RSS_KIND=map RSS_FILE=/tmp/m cargo test -p tandem-gateway rss_per_encoded_byte -- --ignored --nocapture`.
    use yrs::{Array, Doc, Map, ReadTxn, StateVector, Text, Transact, Update};

    use super::*;

    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap()
    }

    /// An update of about `n` elements of one kind.
    fn build(kind: &str, n: u32) -> Vec<u8> {
        let doc = Doc::with_client_id(1);
        match kind {
            "text-bulk" => {
                let text = doc.get_or_insert_text(TEXT_ROOT);
                text.insert(&mut doc.transact_mut(), 0, &"x".repeat(n as usize));
            }
            "text-keystrokes" => {
                // Each keystroke at the start: no two items merge.
                let text = doc.get_or_insert_text(TEXT_ROOT);
                for _ in 0..n {
                    text.insert(&mut doc.transact_mut(), 0, "x");
                }
            }
            "map" => {
                let map = doc.get_or_insert_map("m");
                let mut txn = doc.transact_mut();
                for i in 0..n {
                    map.insert(&mut txn, i.to_string(), i);
                }
            }
            "array" => {
                let array = doc.get_or_insert_array("a");
                for i in 0..n {
                    array.insert(&mut doc.transact_mut(), 0, i);
                }
            }
            other => panic!("unknown kind {other}"),
        }
        doc.transact()
            .encode_state_as_update_v1(&StateVector::default())
    }

    #[test]
    #[ignore]
    fn rss_per_encoded_byte() {
        let kind = std::env::var("RSS_KIND").unwrap_or_else(|_| "map".into());
        let n: u32 = std::env::var("RSS_N").map_or(200_000, |v| v.parse().unwrap());
        let file = std::env::var("RSS_FILE").unwrap_or_else(|_| "/tmp/tandem-rss".into());
        let Ok(update) = std::fs::read(&file) else {
            std::fs::write(&file, build(&kind, n)).unwrap();
            println!("built {file}: run again to measure");
            return;
        };
        let before = rss_kib();
        let doc = Doc::new();
        doc.transact_mut()
            .apply_update(Update::decode_v1(&update).unwrap())
            .unwrap();
        let after = rss_kib();
        let resident = (after - before) * 1024;
        println!(
            "{kind} x{n}: {} B encoded, {} B resident, {:.1} resident bytes per encoded byte",
            update.len(),
            resident,
            resident as f64 / update.len() as f64
        );
        drop(doc);
        std::fs::remove_file(&file).unwrap();
    }
}
