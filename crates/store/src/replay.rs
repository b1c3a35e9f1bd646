//! Reading a document back: snapshot and log records from sled, and their
//! replay into a `yrs::Doc`.

use sled::IVec;
use yrs::updates::decoder::Decode;
use yrs::{Doc, Transact, Update};

use crate::records::{self, SnapshotHeader};
use crate::{DocId, Seq, StoreError};

/// A document's snapshot as stored.
pub(crate) struct StoredSnapshot {
    pub(crate) header: SnapshotHeader,
    /// `encode_state_as_update_v1` of the merged document.
    pub(crate) state: Vec<u8>,
    /// Keys of its chunks.
    pub(crate) keys: Vec<IVec>,
    /// Bytes its chunks occupy (keys excluded).
    pub(crate) stored_bytes: u64,
}

/// One log record as stored (one update, or a batch of them); `update` is
/// `Err` when it cannot be decoded.
pub(crate) struct StoredUpdate {
    pub(crate) seq: Seq,
    pub(crate) update: Result<(records::LogHeader, Vec<u8>), String>,
    /// Keys of its chunks.
    pub(crate) keys: Vec<IVec>,
    /// Bytes its chunks occupy (keys excluded).
    pub(crate) stored_bytes: u64,
}

impl StoredUpdate {
    /// Updates (seqs) the record holds; 1 when it cannot be decoded.
    pub(crate) fn count(&self) -> u64 {
        self.update.as_ref().map_or(1, |(h, _)| u64::from(h.count))
    }
}

/// Reads `doc`'s snapshot; `Ok(None)` when it has none.
pub(crate) fn read_snapshot(
    db: &sled::Db,
    doc: &DocId,
) -> Result<Option<StoredSnapshot>, StoreError> {
    let mut chunks = Vec::new();
    for item in db.scan_prefix(records::snapshot_prefix(doc)) {
        let (key, value) = item?;
        let part = records::split_doc_key(&key, true)
            .and_then(|(_, tail)| records::parse_snapshot_tail(tail))
            .ok_or_else(|| corrupt_snapshot(doc, "malformed key"))?;
        chunks.push((part, key, value));
    }
    let Some(((_, _, first), rest)) = chunks.split_first().map(|(f, r)| (f.clone(), r)) else {
        return Ok(None);
    };
    if chunks[0].0 != 0 {
        return Err(corrupt_snapshot(doc, "first chunk missing"));
    }
    let (header, first_payload) =
        records::decode_snapshot_header(&first).map_err(|e| corrupt_snapshot(doc, &e))?;
    let state = records::join_chunks(
        first_payload,
        header.parts,
        rest.iter().map(|(p, _, v)| (*p, &v[..])),
    )
    .and_then(|state| {
        records::verify(&first, header.header_len, header.checksum, &state).map(|()| state)
    })
    .map_err(|e| corrupt_snapshot(doc, &e))?;
    Ok(Some(StoredSnapshot {
        header,
        state,
        stored_bytes: chunks.iter().map(|(_, _, v)| v.len() as u64).sum(),
        keys: chunks.into_iter().map(|(_, k, _)| k).collect(),
    }))
}

fn corrupt_snapshot(doc: &DocId, reason: &str) -> StoreError {
    StoreError::CorruptSnapshot {
        doc: doc.clone(),
        reason: reason.to_string(),
    }
}

/// Reads `doc`'s log records with `after < seq <= upto`, in seq order.
/// Records that fail to decode are returned as such, never skipped.
pub(crate) fn read_log(
    db: &sled::Db,
    doc: &DocId,
    after: Seq,
    upto: Seq,
) -> Result<Vec<StoredUpdate>, StoreError> {
    let mut out: Vec<StoredUpdate> = Vec::new();
    // Chunks of the record being assembled: (part, key, value).
    let mut pending: Vec<(u32, IVec, IVec)> = Vec::new();
    let mut pending_seq = None;
    let start = records::log_key(doc, after.saturating_add(1), 0);
    let prefix = records::log_prefix(doc);
    for item in db.range(start..) {
        let (key, value) = item?;
        if !key.starts_with(&prefix) {
            break;
        }
        let Some((seq, part)) = records::parse_log_tail(&key[prefix.len()..]) else {
            tracing::warn!(doc = %doc, key = ?key, "ignoring malformed log key");
            continue;
        };
        if seq > upto {
            break;
        }
        if pending_seq != Some(seq) {
            if let Some(prev) = pending_seq {
                out.push(assemble(prev, std::mem::take(&mut pending)));
            }
            pending_seq = Some(seq);
        }
        pending.push((part, key, value));
    }
    if let Some(prev) = pending_seq {
        out.push(assemble(prev, pending));
    }
    Ok(out)
}

fn assemble(seq: Seq, chunks: Vec<(u32, IVec, IVec)>) -> StoredUpdate {
    let stored_bytes = chunks.iter().map(|(_, _, v)| v.len() as u64).sum();
    let update = match chunks.split_first() {
        Some(((0, _, first), rest)) => {
            records::decode_log_header(first).and_then(|(header, payload)| {
                let rest = rest.iter().map(|(p, _, v)| (*p, &v[..]));
                let bytes = records::join_chunks(payload, header.parts, rest)?;
                records::verify(first, header.header_len, header.checksum, &bytes)?;
                Ok((header, bytes))
            })
        }
        _ => Err("first chunk missing".to_string()),
    };
    StoredUpdate {
        seq,
        update,
        stored_bytes,
        keys: chunks.into_iter().map(|(_, k, _)| k).collect(),
    }
}

/// Applies one v1 update to `doc`; the error text says what yrs rejected.
/// A panic inside yrs (possible on crafted input) is reported as an error.
pub(crate) fn apply_v1(doc: &Doc, bytes: &[u8]) -> Result<(), String> {
    let update = Update::decode_v1(bytes).map_err(|e| format!("not a yrs v1 update: {e}"))?;
    let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        doc.transact_mut().apply_update(update)
    }));
    match applied {
        Ok(result) => result.map_err(|e| format!("yrs rejected the update: {e}")),
        Err(_) => Err("yrs panicked while applying the update".to_string()),
    }
}

/// Snapshot then log, applied to a fresh `Doc` made with `options`.
/// Corrupt records are collected in `bad` when it is `Some`, otherwise the
/// first one aborts the replay with [`StoreError::CorruptRecord`].
pub(crate) fn replay(
    id: &DocId,
    options: yrs::Options,
    snapshot: Option<&StoredSnapshot>,
    log: &[StoredUpdate],
    mut bad: Option<&mut Vec<StoreError>>,
) -> Result<Doc, StoreError> {
    let doc = Doc::with_options(options);
    if let Some(snapshot) = snapshot {
        apply_v1(&doc, &snapshot.state).map_err(|reason| corrupt_snapshot(id, &reason))?;
    }
    for record in log {
        // (seq, why) of every update of the record that failed.
        let mut failed = Vec::new();
        match &record.update {
            Ok((header, bytes)) => match records::record_updates(header, bytes) {
                Ok(updates) => {
                    for (seq, update) in (record.seq..).zip(updates) {
                        if let Err(reason) = apply_v1(&doc, update) {
                            failed.push((seq, reason));
                        }
                    }
                }
                Err(reason) => failed.push((record.seq, reason)),
            },
            Err(reason) => failed.push((record.seq, reason.clone())),
        }
        for (seq, reason) in failed {
            let err = StoreError::CorruptRecord {
                doc: id.clone(),
                seq,
                reason,
            };
            match bad.as_deref_mut() {
                Some(bad) => bad.push(err),
                None => return Err(err),
            }
        }
    }
    Ok(doc)
}
