//! Property: random interleavings of appends (single and batched) from
//! several simulated clients, compactions and reopens always load to the same document as an
//! in-memory reference that received every update.

mod common;

use common::{Editor, id, open, text};
use proptest::prelude::*;
use tandem_store::{Appended, Store};
use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

const CLIENTS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    /// Client inserts text at a position (clamped).
    Insert {
        client: usize,
        pos: u32,
        s: String,
    },
    /// Client deletes a range (clamped).
    Delete {
        client: usize,
        pos: u32,
        len: u32,
    },
    /// Client catches up with everything stored so far (so later edits
    /// depend on other clients' edits).
    Sync {
        client: usize,
    },
    /// Wait for every outstanding append to be durable.
    AwaitAll,
    /// Collect the following edits into one `append_batch` (written at the
    /// next op that is not an edit).
    BeginBatch,
    Compact,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..CLIENTS, 0u32..40, "[a-z]{1,6}").prop_map(|(client, pos, s)| Op::Insert { client, pos, s }),
        2 => (0..CLIENTS, 0u32..40, 1u32..6).prop_map(|(client, pos, len)| Op::Delete { client, pos, len }),
        2 => (0..CLIENTS).prop_map(|client| Op::Sync { client }),
        1 => Just(Op::AwaitAll),
        2 => Just(Op::BeginBatch),
        1 => Just(Op::Compact),
        1 => Just(Op::Reopen),
    ]
}

/// Waits for every outstanding append.
fn settle(pending: &mut Vec<Appended>) {
    for ticket in pending.drain(..) {
        ticket.wait_durable().unwrap();
    }
}

fn apply(doc: &Doc, update: &[u8]) {
    doc.transact_mut()
        .apply_update(Update::decode_v1(update).unwrap())
        .unwrap();
}

fn assert_same(store: &Store, reference: &Doc) {
    let loaded = store.load(&id("prop")).unwrap();
    assert_eq!(text(&loaded), text(reference));
    assert_eq!(
        loaded.transact().state_vector(),
        reference.transact().state_vector()
    );
}

/// Writes the held batch (if any) with `append_batch`.
fn end_batch(
    store: &Store,
    held: &mut Option<Vec<Vec<u8>>>,
    last_seq: &mut u64,
    pending: &mut Vec<Appended>,
) {
    let Some(updates) = held.take() else { return };
    let refs: Vec<&[u8]> = updates.iter().map(Vec::as_slice).collect();
    let ticket = store.append_batch(&id("prop"), &refs).unwrap();
    assert_eq!(
        ticket.seq,
        *last_seq + refs.len() as u64,
        "batch seqs are consecutive"
    );
    *last_seq = ticket.seq;
    pending.push(ticket);
}

fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let doc = id("prop");
    let mut store = open(dir.path());
    let reference = Doc::new();
    let editors: Vec<Editor> = (0..CLIENTS).map(|c| Editor::new(c as u64 + 1)).collect();
    let mut pending: Vec<Appended> = Vec::new();
    let mut last_seq = 0;
    let mut held: Option<Vec<Vec<u8>>> = None;
    for op in ops {
        if !matches!(op, Op::Insert { .. } | Op::Delete { .. }) {
            end_batch(&store, &mut held, &mut last_seq, &mut pending);
        }
        let update = match op {
            Op::Insert { client, pos, s } => Some(editors[client].insert(pos, &s)),
            Op::Delete { client, pos, len } => Some(editors[client].delete(pos, len)),
            Op::Sync { client } => {
                let sv = editors[client].doc.transact().state_vector();
                apply(
                    &editors[client].doc,
                    &reference.transact().encode_diff_v1(&sv),
                );
                None
            }
            Op::AwaitAll => {
                settle(&mut pending);
                None
            }
            Op::BeginBatch => {
                held = Some(Vec::new());
                None
            }
            Op::Compact => {
                store.compact(&doc).unwrap();
                assert_eq!(store.info(&doc).unwrap().map_or(0, |i| i.log_len), 0);
                None
            }
            Op::Reopen => {
                settle(&mut pending);
                drop(store);
                store = open(dir.path());
                assert_same(&store, &reference);
                None
            }
        };
        if let Some(update) = update {
            apply(&reference, &update);
            if let Some(held) = held.as_mut() {
                held.push(update);
                continue;
            }
            let ticket = store.append(&doc, &update).unwrap();
            assert_eq!(ticket.seq, last_seq + 1, "seqs are assigned in call order");
            last_seq = ticket.seq;
            pending.push(ticket);
        }
    }
    end_batch(&store, &mut held, &mut last_seq, &mut pending);
    settle(&mut pending);
    assert_same(&store, &reference);
    let full = reference
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    let exported = Doc::new();
    apply(&exported, &store.export(&doc).unwrap());
    let check = Doc::new();
    apply(&check, &full);
    assert_eq!(text(&exported), text(&check));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn interleaved_appends_compactions_and_reopens_match_reference(ops in prop::collection::vec(op(), 1..60)) {
        run(ops);
    }
}
