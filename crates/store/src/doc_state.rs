//! Per-document bookkeeping: the counters and locks of each document.
//!
//! The counters ([`DocState`]) are stored in the document's metadata record
//! (`'d' doc`, see [`crate::records`]), written in the same atomic sled
//! batch as every append, compaction and delete, so they are never behind
//! the records they count. Reading them is one point read; listing is a
//! range over the metadata records (O(page), not O(all records)). Data
//! directories older than format 3 have no metadata records: they are
//! rebuilt from the records once, at open ([`scan_records`]), as is a
//! metadata record that fails its checksum.

use std::sync::{Mutex, RwLock};

use crate::records;
use crate::{DocId, Seq, StoreError};

/// In-memory counters of one document, so `needs_compaction` and `info` do
/// not touch the disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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

/// Bytes of an encoded metadata record.
const META_LEN: usize = 1 + 8 * 7 + 1 + 4;

impl DocState {
    /// The state of a document that was never written.
    pub(crate) fn missing() -> Self {
        DocState {
            next_seq: 1,
            ..DocState::default()
        }
    }

    pub(crate) fn exists(&self) -> bool {
        self.has_snapshot || self.log_len > 0
    }

    /// The metadata record: `version:u8` then `next_seq merged_upto
    /// snapshot_updates snapshot_bytes log_len log_bytes last_modified_ms`
    /// (u64 little-endian each), `has_snapshot:u8`, and a CRC-32 of all that.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(META_LEN);
        out.push(records::DOC_META_VERSION);
        for v in [
            self.next_seq,
            self.merged_upto,
            self.snapshot_updates,
            self.snapshot_bytes,
            self.log_len,
            self.log_bytes,
            self.last_modified_ms,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.push(u8::from(self.has_snapshot));
        let crc = records::checksum(&[&out]);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes [`DocState::encode`]'s output; the error says what is wrong.
    pub(crate) fn decode(value: &[u8]) -> Result<Self, String> {
        if value.len() != META_LEN {
            return Err(format!("metadata record of {} bytes", value.len()));
        }
        if value[0] != records::DOC_META_VERSION {
            return Err(format!("unsupported metadata version {}", value[0]));
        }
        let (body, crc) = value.split_at(META_LEN - 4);
        if records::checksum(&[body]).to_le_bytes() != crc {
            return Err("metadata checksum mismatch".into());
        }
        let field = |i: usize| {
            let at = 1 + 8 * i;
            u64::from_le_bytes(body[at..at + 8].try_into().unwrap_or([0; 8]))
        };
        Ok(DocState {
            next_seq: field(0),
            merged_upto: field(1),
            snapshot_updates: field(2),
            snapshot_bytes: field(3),
            log_len: field(4),
            log_bytes: field(5),
            last_modified_ms: field(6),
            has_snapshot: body[META_LEN - 5] == 1,
        })
    }
}

/// Reads a document's counters from its metadata record (one point read);
/// a document without one was never written. A damaged metadata record is
/// rebuilt from the records (and logged).
pub(crate) fn read_state(db: &sled::Db, doc: &DocId) -> Result<DocState, StoreError> {
    match db.get(records::doc_meta_key(doc))? {
        None => Ok(DocState::missing()),
        Some(value) => match DocState::decode(&value) {
            Ok(state) => Ok(state),
            Err(reason) => {
                tracing::warn!(doc = %doc, %reason, "metadata record damaged; rebuilt from the records");
                scan_records(db, doc)
            }
        },
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
    /// Commit position of this document's latest write: a reader waits
    /// until it is applied (with a write-ahead log a write reaches sled
    /// only after it is durable and acknowledged), so it reads its own
    /// writes.
    pub(crate) pending: std::sync::atomic::AtomicU64,
}

/// Rebuilds a document's counters from its keys and record headers (for
/// directories older than format 3, damaged metadata, and `check`).
pub(crate) fn scan_records(db: &sled::Db, doc: &DocId) -> Result<DocState, StoreError> {
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
