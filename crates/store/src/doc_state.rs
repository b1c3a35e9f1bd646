//! Per-document bookkeeping: the in-memory counters and locks of each
//! document, and how the counters are rebuilt from disk.

use std::sync::{Mutex, RwLock};

use crate::records;
use crate::{DocId, Seq, StoreError};

/// In-memory counters of one document, so `needs_compaction` and `info` do
/// not touch the disk.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DocState {
    /// Seq the next append gets (one past the highest ever used).
    pub(crate) next_seq: Seq,
    /// Highest seq folded into the snapshot; log records above it are live.
    pub(crate) merged_upto: Seq,
    /// Whether a snapshot exists (a document may be all log).
    pub(crate) has_snapshot: bool,
    /// Updates folded into the snapshot over the document's life.
    pub(crate) snapshot_updates: u64,
    /// Bytes of the snapshot's values.
    pub(crate) snapshot_bytes: u64,
    /// Updates in the log (a batch record counts its updates): the
    /// updates-threshold input.
    pub(crate) log_len: u64,
    /// Bytes of the log's values: the bytes-threshold input.
    pub(crate) log_bytes: u64,
    /// Last append or compaction, ms since the Unix epoch.
    pub(crate) last_modified_ms: u64,
}

impl DocState {
    pub(crate) fn exists(&self) -> bool {
        self.has_snapshot || self.log_len > 0
    }
}

/// Per-document locks and counters.
#[derive(Default)]
pub(crate) struct DocSlot {
    /// Counters; `None` until first read from disk. Held while an append
    /// assigns its seq and inserts, so seq order is insert order.
    pub(crate) state: Mutex<Option<DocState>>,
    /// Serialises compaction and delete of this document.
    pub(crate) maintenance: Mutex<()>,
    /// Readers (load) hold it shared while reading snapshot + log; the
    /// compaction/delete batch holds it exclusively, so a reader never sees
    /// the new snapshot's log removal with the old snapshot.
    pub(crate) layout: RwLock<()>,
}

/// Reads a document's counters from its keys and record headers.
pub(crate) fn scan_state(db: &sled::Db, doc: &DocId) -> Result<DocState, StoreError> {
    let mut state = DocState::default();
    for item in db.scan_prefix(records::snapshot_prefix(doc)) {
        let (key, value) = item?;
        state.snapshot_bytes += value.len() as u64;
        let tail = records::split_doc_key(&key, true).map(|(_, tail)| tail);
        if tail.and_then(records::parse_snapshot_tail) == Some(0) {
            state.has_snapshot = true;
            if let Ok((header, _)) = records::decode_snapshot_header(&value) {
                state.merged_upto = header.merged_upto;
                state.snapshot_updates = header.update_count;
                state.last_modified_ms = header.modified_ms;
            }
        }
    }
    let prefix = records::log_prefix(doc);
    let mut last_seq = state.merged_upto;
    let mut previous = None;
    for item in db.scan_prefix(&prefix) {
        let (key, value) = item?;
        state.log_bytes += value.len() as u64;
        let Some((seq, part)) = records::parse_log_tail(&key[prefix.len()..]) else {
            continue;
        };
        if previous != Some(seq) {
            state.log_len += 1;
            previous = Some(seq);
        }
        last_seq = last_seq.max(seq);
        if part == 0
            && let Ok((header, _)) = records::decode_log_header(&value)
        {
            state.last_modified_ms = state.last_modified_ms.max(header.modified_ms);
            // A batch record holds seqs `seq..seq + count`.
            let extra = u64::from(header.count.saturating_sub(1));
            state.log_len += extra;
            last_seq = last_seq.max(seq.saturating_add(extra));
        }
    }
    state.next_seq = last_seq + 1;
    Ok(state)
}
