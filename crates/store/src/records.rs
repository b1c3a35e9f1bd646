//! Key layout and record encoding: the on-disk format of a data directory.
//!
//! Everything lives in sled's default tree. Keys start with a one-byte kind:
//!
//! | key | value |
//! |---|---|
//! | `0x00 "format"` | data-dir format version, `u32` big-endian ([`DATA_FORMAT_VERSION`]) |
//! | `'s' doc 0x00 part:u32be` | snapshot chunk number `part` |
//! | `'l' doc 0x00 seq:u64be part:u32be` | log record `seq`, chunk number `part` |
//!
//! `doc` is the [`DocId`]'s bytes; `0x00` never occurs in an id, so it ends
//! the id unambiguously and `'l' doc 0x00` is the prefix of exactly one
//! document's log, in `seq` order.
//!
//! A record (a log update or a snapshot) is split into chunks of at most
//! [`CHUNK_BYTES`] payload bytes, written together in one atomic sled batch.
//! Chunking keeps every sled value (and every sled page of ≤ 17 values)
//! below sled's blob threshold, because sled 0.34 writes oversize values to
//! separate blob files that it never fsyncs.
//!
//! Chunk 0 starts with a header whose first byte is the record format
//! version ([`RECORD_VERSION`]); integers in headers are little-endian:
//!
//! - log record, version 1: `version:u8 modified_ms:u64 parts:u32` then
//!   the payload, one yrs v1 update (its `seq` is the key's);
//! - log record, version 2 ([`BATCH_RECORD_VERSION`], a *batch*):
//!   `version:u8 modified_ms:u64 parts:u32 count:u32` then the payload,
//!   `count` updates each framed as `len:u32` + a yrs v1 update. The key's
//!   `seq` is the first update's; the batch holds seqs `seq..seq + count`.
//!   One batch is one atomic sled write, so a crash keeps all of it or none;
//! - snapshot: `version:u8 merged_upto:u64 update_count:u64 modified_ms:u64
//!   parts:u32` then the payload, `encode_state_as_update_v1` of the merged
//!   document. `merged_upto` is the highest log `seq` folded in (so `seq`s
//!   are never reused after compaction); `update_count` counts the updates
//!   folded in over the document's life.
//!
//! Format history: data-dir version 1 / record version 1 is the first
//! (`fixtures/store-v1/` pins it; a test opens it). Data-dir version 2 adds
//! batch log records (record version 2); opening a version-1 directory
//! upgrades its version number in place (its records stay as they are), so
//! a release that only reads version 1 refuses it instead of misreading it.
//! `fixtures/store-v2/` pins version 2. Data-dir version 3 adds a CRC-32 to every
//! record (record versions 3 and 4), the per-document metadata records and
//! the checkpoint counter; opening an older directory writes the metadata
//! records (see `upgrade`). `fixtures/store-v3/` pins version 3.

use crate::{DocId, Seq};

/// Version of the data directory layout, stored under [`META_KEY`].
pub const DATA_FORMAT_VERSION: u32 = 3;

/// Version byte of a single-update log record or a snapshot without a
/// checksum (data-dir formats 1 and 2; still read).
pub const RECORD_VERSION: u8 = 1;

/// Version byte of a batch log record without a checksum (data-dir format
/// 2; still read).
pub const BATCH_RECORD_VERSION: u8 = 2;

/// Version byte of a single-update log record or a snapshot with a CRC-32
/// (data-dir format 3 on; what this build writes).
pub const CHECKED_RECORD_VERSION: u8 = 3;

/// Version byte of a batch log record with a CRC-32 (data-dir format 3 on).
pub const CHECKED_BATCH_RECORD_VERSION: u8 = 4;

/// Version byte of a document's metadata record.
pub const DOC_META_VERSION: u8 = 1;

/// Largest payload slice stored in one sled value.
pub const CHUNK_BYTES: usize = 4000;

/// Key of the data-dir meta record.
pub const META_KEY: &[u8] = b"\x00format";

/// Key of the checkpoint counter (`u64` big-endian): raised at every
/// checkpoint, before the manifest outside sled records the same value.
pub const COMMIT_KEY: &[u8] = b"\x00commit";

const LOG_KIND: u8 = b'l';
const SNAPSHOT_KIND: u8 = b's';
const DOC_META_KIND: u8 = b'd';
const LOG_HEADER_LEN: usize = 1 + 8 + 4;
const BATCH_HEADER_LEN: usize = LOG_HEADER_LEN + 4;
const SNAPSHOT_HEADER_LEN: usize = 1 + 8 + 8 + 8 + 4;
const CRC_LEN: usize = 4;

/// CRC-32 (IEEE) of `parts` concatenated: the checksum of every record.
pub fn checksum(parts: &[&[u8]]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize()
}

/// Key of `doc`'s metadata record (its counters; see `doc_state`).
pub fn doc_meta_key(doc: &DocId) -> Vec<u8> {
    let mut key = Vec::with_capacity(doc.as_str().len() + 1);
    key.push(DOC_META_KIND);
    key.extend_from_slice(doc.as_str().as_bytes());
    key
}

/// The first key of the metadata range, and the key right after it.
pub(crate) fn doc_meta_range() -> ([u8; 1], [u8; 1]) {
    ([DOC_META_KIND], [DOC_META_KIND + 1])
}

/// The document a metadata key names.
pub(crate) fn doc_of_meta_key(key: &[u8]) -> Option<DocId> {
    let (&kind, rest) = key.split_first()?;
    if kind != DOC_META_KIND {
        return None;
    }
    DocId::new(std::str::from_utf8(rest).ok()?).ok()
}

/// Prefix of every key of `doc`'s log.
pub fn log_prefix(doc: &DocId) -> Vec<u8> {
    let mut key = Vec::with_capacity(doc.as_str().len() + 14);
    key.push(LOG_KIND);
    key.extend_from_slice(doc.as_str().as_bytes());
    key.push(0);
    key
}

/// Key of chunk `part` of log record `seq` of `doc`.
pub fn log_key(doc: &DocId, seq: Seq, part: u32) -> Vec<u8> {
    let mut key = log_prefix(doc);
    key.extend_from_slice(&seq.to_be_bytes());
    key.extend_from_slice(&part.to_be_bytes());
    key
}

/// Prefix of every key of `doc`'s snapshot.
pub fn snapshot_prefix(doc: &DocId) -> Vec<u8> {
    let mut key = Vec::with_capacity(doc.as_str().len() + 6);
    key.push(SNAPSHOT_KIND);
    key.extend_from_slice(doc.as_str().as_bytes());
    key.push(0);
    key
}

/// Key of chunk `part` of `doc`'s snapshot.
pub fn snapshot_key(doc: &DocId, part: u32) -> Vec<u8> {
    let mut key = snapshot_prefix(doc);
    key.extend_from_slice(&part.to_be_bytes());
    key
}

/// The first key of the log/snapshot range, to find documents.
pub(crate) fn kind_start(snapshot: bool) -> [u8; 1] {
    [if snapshot { SNAPSHOT_KIND } else { LOG_KIND }]
}

/// Splits a log or snapshot key into its document id and the rest (after
/// the `0x00`). `None` for keys of another kind or malformed keys.
pub(crate) fn split_doc_key(key: &[u8], snapshot: bool) -> Option<(DocId, &[u8])> {
    let (&kind, rest) = key.split_first()?;
    if kind != kind_start(snapshot)[0] {
        return None;
    }
    let end = rest.iter().position(|&b| b == 0)?;
    let id = std::str::from_utf8(&rest[..end]).ok()?;
    Some((DocId::new(id).ok()?, &rest[end + 1..]))
}

/// `(seq, part)` from the tail of a log key (after `doc 0x00`).
pub(crate) fn parse_log_tail(tail: &[u8]) -> Option<(Seq, u32)> {
    let seq = u64::from_be_bytes(tail.get(..8)?.try_into().ok()?);
    let part = u32::from_be_bytes(tail.get(8..12)?.try_into().ok()?);
    (tail.len() == 12).then_some((seq, part))
}

/// `part` from the tail of a snapshot key.
pub(crate) fn parse_snapshot_tail(tail: &[u8]) -> Option<u32> {
    (tail.len() == 4).then(|| u32::from_be_bytes([tail[0], tail[1], tail[2], tail[3]]))
}

/// Header of a log record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogHeader {
    /// Wall-clock time of the append, ms since the Unix epoch.
    pub modified_ms: u64,
    /// Number of chunks.
    pub parts: u32,
    /// Updates in the record: 1 for a version-1 record, else the batch's
    /// `count` (its seqs are `seq..seq + count`).
    pub count: u32,
    /// Whether the payload is framed (a batch record, version 2 or 4).
    pub batch: bool,
    /// Stored CRC-32 of header and payload (record versions 3 and 4).
    pub checksum: Option<u32>,
    /// Header bytes at the start of the first chunk (checksum included).
    pub header_len: usize,
}

/// Header of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SnapshotHeader {
    /// Highest log seq merged into this snapshot.
    pub merged_upto: Seq,
    /// Updates merged into this snapshot over the document's life.
    pub update_count: u64,
    /// Time of the compaction (or import) that wrote it, ms since the epoch.
    pub modified_ms: u64,
    /// Number of chunks.
    pub parts: u32,
    /// Stored CRC-32 of header and payload (record version 3).
    pub checksum: Option<u32>,
    /// Header bytes at the start of the first chunk (checksum included).
    pub header_len: usize,
}

fn parts_for(payload_len: usize) -> u32 {
    let parts = payload_len.div_ceil(CHUNK_BYTES).max(1);
    u32::try_from(parts).unwrap_or(u32::MAX)
}

/// Ends `first` (a header) with the CRC-32 of it and `payload`, then
/// splits the payload into chunk values after it.
fn split(mut first: Vec<u8>, payload: &[u8]) -> Vec<Vec<u8>> {
    let crc = checksum(&[&first, payload]);
    first.extend_from_slice(&crc.to_le_bytes());
    let mut chunks = payload.chunks(CHUNK_BYTES);
    first.extend_from_slice(chunks.next().unwrap_or(&[]));
    let mut values = vec![first];
    values.extend(chunks.map(<[u8]>::to_vec));
    values
}

/// Encodes a log record into its chunk values (index = part).
pub fn encode_log(modified_ms: u64, update: &[u8]) -> Vec<Vec<u8>> {
    let mut first = Vec::with_capacity(LOG_HEADER_LEN + CRC_LEN + update.len().min(CHUNK_BYTES));
    first.push(CHECKED_RECORD_VERSION);
    first.extend_from_slice(&modified_ms.to_le_bytes());
    first.extend_from_slice(&parts_for(update.len()).to_le_bytes());
    split(first, update)
}

/// Encodes a snapshot into its chunk values; `header.parts` is filled in.
pub fn encode_snapshot(header: SnapshotHeader, state: &[u8]) -> Vec<Vec<u8>> {
    let mut first =
        Vec::with_capacity(SNAPSHOT_HEADER_LEN + CRC_LEN + state.len().min(CHUNK_BYTES));
    first.push(CHECKED_RECORD_VERSION);
    first.extend_from_slice(&header.merged_upto.to_le_bytes());
    first.extend_from_slice(&header.update_count.to_le_bytes());
    first.extend_from_slice(&header.modified_ms.to_le_bytes());
    first.extend_from_slice(&parts_for(state.len()).to_le_bytes());
    split(first, state)
}

/// The stored checksum after a header of `len` bytes (none for the
/// unchecked versions); errors when the chunk is too short.
fn stored_checksum(
    first: &[u8],
    len: usize,
    checked: bool,
) -> Result<(Option<u32>, usize), String> {
    let total = if checked { len + CRC_LEN } else { len };
    if first.len() < total {
        return Err(format!("truncated header ({} bytes)", first.len()));
    }
    Ok((checked.then(|| u32_at(first, len)), total))
}

/// Whether a single-update log record or snapshot carries a checksum.
fn single_is_checked(value: &[u8]) -> Result<bool, String> {
    match value.first() {
        Some(&RECORD_VERSION) => Ok(false),
        Some(&CHECKED_RECORD_VERSION) => Ok(true),
        Some(&v) => Err(format!(
            "unsupported record format version {v} (this build reads 1-{CHECKED_BATCH_RECORD_VERSION})"
        )),
        None => Err("empty record".into()),
    }
}

fn u64_at(v: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&v[at..at + 8]);
    u64::from_le_bytes(b)
}

fn u32_at(v: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&v[at..at + 4]);
    u32::from_le_bytes(b)
}

/// Encodes several updates as one batch log record (version 4) into its
/// chunk values (index = part).
pub fn encode_log_batch(modified_ms: u64, updates: &[&[u8]]) -> Vec<Vec<u8>> {
    let payload_len: usize = updates.iter().map(|u| 4 + u.len()).sum();
    let count = u32::try_from(updates.len()).unwrap_or(u32::MAX);
    let mut payload = Vec::with_capacity(payload_len);
    for update in updates {
        let len = u32::try_from(update.len()).unwrap_or(u32::MAX);
        payload.extend_from_slice(&len.to_le_bytes());
        payload.extend_from_slice(update);
    }
    let mut first = Vec::with_capacity(BATCH_HEADER_LEN + CRC_LEN + payload_len.min(CHUNK_BYTES));
    first.push(CHECKED_BATCH_RECORD_VERSION);
    first.extend_from_slice(&modified_ms.to_le_bytes());
    first.extend_from_slice(&parts_for(payload_len).to_le_bytes());
    first.extend_from_slice(&count.to_le_bytes());
    split(first, &payload)
}

/// The updates a log record's joined payload holds (one for version 1).
pub fn record_updates<'a>(header: &LogHeader, payload: &'a [u8]) -> Result<Vec<&'a [u8]>, String> {
    if !header.batch {
        return Ok(vec![payload]);
    }
    let mut updates = Vec::with_capacity(header.count as usize);
    let mut rest = payload;
    while !rest.is_empty() {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err("truncated batch frame".into());
        };
        let len = u32::from_le_bytes(*len) as usize;
        if tail.len() < len {
            return Err(format!("batch frame of {len} bytes truncated"));
        }
        updates.push(&tail[..len]);
        rest = &tail[len..];
    }
    if updates.len() != header.count as usize {
        return Err(format!(
            "batch holds {} updates, header says {}",
            updates.len(),
            header.count
        ));
    }
    Ok(updates)
}

/// Decodes the header of a log record's first chunk; returns it and the
/// payload slice that chunk carries.
pub fn decode_log_header(first: &[u8]) -> Result<(LogHeader, &[u8]), String> {
    let batch = matches!(
        first.first(),
        Some(&BATCH_RECORD_VERSION | &CHECKED_BATCH_RECORD_VERSION)
    );
    if batch {
        let checked = first[0] == CHECKED_BATCH_RECORD_VERSION;
        let (checksum, header_len) = stored_checksum(first, BATCH_HEADER_LEN, checked)?;
        let header = LogHeader {
            modified_ms: u64_at(first, 1),
            parts: u32_at(first, 9),
            count: u32_at(first, 13),
            batch: true,
            checksum,
            header_len,
        };
        if header.count == 0 {
            return Err("empty batch record".into());
        }
        return Ok((header, &first[header_len..]));
    }
    let checked = single_is_checked(first)?;
    let (checksum, header_len) = stored_checksum(first, LOG_HEADER_LEN, checked)?;
    let header = LogHeader {
        modified_ms: u64_at(first, 1),
        parts: u32_at(first, 9),
        count: 1,
        batch: false,
        checksum,
        header_len,
    };
    Ok((header, &first[header_len..]))
}

/// Decodes the header of a snapshot's first chunk; returns it and the
/// payload slice that chunk carries.
pub fn decode_snapshot_header(first: &[u8]) -> Result<(SnapshotHeader, &[u8]), String> {
    let checked = single_is_checked(first)?;
    let (checksum, header_len) = stored_checksum(first, SNAPSHOT_HEADER_LEN, checked)?;
    let header = SnapshotHeader {
        merged_upto: u64_at(first, 1),
        update_count: u64_at(first, 9),
        modified_ms: u64_at(first, 17),
        parts: u32_at(first, 25),
        checksum,
        header_len,
    };
    Ok((header, &first[header_len..]))
}

/// Checks a joined record against the checksum its header carries (a
/// record of an unchecked version passes).
pub(crate) fn verify(
    first: &[u8],
    header_len: usize,
    stored: Option<u32>,
    payload: &[u8],
) -> Result<(), String> {
    let Some(stored) = stored else {
        return Ok(());
    };
    let computed = checksum(&[&first[..header_len - CRC_LEN], payload]);
    if computed == stored {
        Ok(())
    } else {
        Err(format!(
            "checksum mismatch (stored {stored:08x}, computed {computed:08x}): the record's bytes changed on disk"
        ))
    }
}

/// Joins the chunks of one record (`chunks[i]` = `(part, value)` in key
/// order), checking that exactly parts `0..expected` are present.
pub(crate) fn join_chunks<'a>(
    first_payload: &[u8],
    expected: u32,
    chunks: impl Iterator<Item = (u32, &'a [u8])>,
) -> Result<Vec<u8>, String> {
    let mut payload = first_payload.to_vec();
    let mut next = 1u32;
    for (part, value) in chunks {
        if part != next {
            return Err(format!("chunk {next} missing (found chunk {part})"));
        }
        payload.extend_from_slice(value);
        next += 1;
    }
    if next != expected {
        return Err(format!("record has {next} of {expected} chunks"));
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_record_round_trips_across_chunks() {
        for len in [0, 1, CHUNK_BYTES, CHUNK_BYTES + 1, 3 * CHUNK_BYTES + 7] {
            let update: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let values = encode_log(42, &update);
            assert!(
                values
                    .iter()
                    .all(|v| v.len() <= CHUNK_BYTES + LOG_HEADER_LEN + CRC_LEN)
            );
            let (header, first) = decode_log_header(&values[0]).unwrap();
            assert_eq!(header.parts as usize, values.len());
            let rest = values[1..]
                .iter()
                .enumerate()
                .map(|(i, v)| (i as u32 + 1, &v[..]));
            let joined = join_chunks(first, header.parts, rest).unwrap();
            assert_eq!(joined, update);
            verify(&values[0], header.header_len, header.checksum, &joined).unwrap();
        }
    }

    #[test]
    fn batch_record_round_trips_across_chunks() {
        for sizes in [
            vec![0],
            vec![1, 2, 3],
            vec![CHUNK_BYTES, 7, CHUNK_BYTES * 2 + 1],
        ] {
            let updates: Vec<Vec<u8>> = sizes
                .iter()
                .map(|&n| (0..n).map(|i| (i * 7) as u8).collect())
                .collect();
            let refs: Vec<&[u8]> = updates.iter().map(Vec::as_slice).collect();
            let values = encode_log_batch(42, &refs);
            assert!(
                values
                    .iter()
                    .all(|v| v.len() <= CHUNK_BYTES + BATCH_HEADER_LEN + CRC_LEN)
            );
            let (header, first) = decode_log_header(&values[0]).unwrap();
            assert_eq!((header.count as usize, header.batch), (refs.len(), true));
            assert_eq!(header.parts as usize, values.len());
            let rest = values[1..]
                .iter()
                .enumerate()
                .map(|(i, v)| (i as u32 + 1, &v[..]));
            let payload = join_chunks(first, header.parts, rest).unwrap();
            assert_eq!(record_updates(&header, &payload).unwrap(), refs);
            assert!(record_updates(&header, &payload[..payload.len() - 1]).is_err());
        }
    }

    #[test]
    fn any_flipped_byte_fails_the_checksum() {
        let values = encode_log(42, b"some update bytes");
        for at in 1..values[0].len() {
            let mut value = values[0].clone();
            value[at] ^= 0x10;
            let Ok((header, payload)) = decode_log_header(&value) else {
                continue;
            };
            let payload = payload.to_vec();
            let err = verify(&value, header.header_len, header.checksum, &payload).unwrap_err();
            assert!(err.contains("checksum mismatch"), "byte {at}: {err}");
        }
        let snapshot = encode_snapshot(SnapshotHeader::default(), b"state");
        let mut value = snapshot[0].clone();
        *value.last_mut().unwrap() ^= 1;
        let (header, payload) = decode_snapshot_header(&value).unwrap();
        assert!(verify(&value, header.header_len, header.checksum, payload).is_err());
    }

    #[test]
    fn keys_sort_by_seq_then_part() {
        let doc = DocId::new("a").unwrap();
        assert!(log_key(&doc, 1, 5) < log_key(&doc, 2, 0));
        assert!(log_key(&doc, 255, 0) < log_key(&doc, 256, 0));
        let other = DocId::new("a.b").unwrap();
        assert!(!log_key(&other, 1, 0).starts_with(&log_prefix(&doc)));
    }
}
