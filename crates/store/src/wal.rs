//! The write-ahead log: how an acknowledged write becomes durable without a
//! `sled::Db::flush` per commit.
//!
//! # Why
//!
//! A sled 0.34 flush hands the write of its buffer to sled's I/O thread
//! pool (whose queue wakes every one of its seven waiting threads per job),
//! which `pwrite`s and `sync_file_range`s it; we then `fdatasync` the data
//! file. Measured on the fan-out bench (10 rooms × 5 clients typing at
//! 10/s, one sync per 1.1 appends): ~270 µs of CPU per sync, about half of
//! the server's CPU per delivered update. Appending the batch's sled
//! operations to one file of our own and `fdatasync`ing that costs a
//! `write` and an `fdatasync` on the flusher thread and nothing else.
//!
//! # How (with [`crate::Durability::Flush`])
//!
//! A write (an append, a compaction, a delete) is a list of sled inserts
//! and removes ([`Ops`]). It is queued with the group commit; the flusher
//! thread writes every queued record to `<data dir>/tandem-wal` in one
//! `pwrite` at the log's current offset, `fdatasync`s the file, resolves
//! their tickets, and only then applies the writes to sled, in the same
//! order. So sled never holds a write the log does not hold before it, and
//! sled's own state (whatever sled persisted of it by itself) is always the
//! state of the last checkpoint plus a prefix of the log. Every operation
//! is a blind write of a whole key, so replaying the whole log over that
//! state gives exactly the state after the last logged write: [`replay`]
//! runs at every open, before anything reads sled. Every few seconds, or
//! once the log passes [`CHECKPOINT_BYTES`], the flusher flushes sled and
//! `fdatasync`s its file (everything in the log is applied by then) and
//! empties the log. With [`crate::Durability::Relaxed`] the same rounds run
//! on the flusher's timer instead of per commit (see `commit`).
//!
//! # Format (2: preallocated, epochs)
//!
//! The file is preallocated ([`PREALLOCATED_BYTES`] of zeroes, written and
//! synced with its size once, at open), so that a commit's `fdatasync` has
//! no file-size change to persist: on this project's VM (ext4 without a
//! journal) a growing file cost one more synchronous inode write per sync.
//! It starts with a [`HEADER_BYTES`] header: a magic, the log's *epoch*
//! (u64) and a CRC-32 of both. Records follow, each `[len: u32 LE][crc32
//! of payload: u32 LE][epoch: u64 LE][payload]`, the payload `[count: u32]`
//! then per operation `[1][key len: u32][key][value len: u32][value]`
//! (insert) or `[0][key len: u32][key]` (remove). Emptying the log does not
//! truncate it: it raises the epoch in the header and writes the next
//! records over the old ones from the start, so the bytes after the live
//! records are zeroes or records of older epochs. At open, after the
//! replay and a sync of sled, the file is made fresh ([`empty`]): a new
//! epoch above the old one (and above the clock in ms), the rest zeroed or
//! stale.
//!
//! Replay applies records of the header's epoch in order and stops at the
//! first zeroed record or record of another epoch (the end), at a record
//! cut short by the end of the file, or at a record that fails its checksum
//! or does not decode. Such a bad record is a torn last write (a crash
//! during it: never acknowledged) when no intact record of the current
//! epoch follows it anywhere in the file; otherwise, and when the header
//! itself is damaged, the log is damaged: it is kept aside as
//! `tandem-wal.damaged-<ms>` and logged, never silently dropped. A file
//! without the magic is a format-1 log (the same records without the epoch
//! field, appended from offset 0; truncated when emptied) and replays as
//! before. After a failed write or sync the bytes written since the last
//! good sync are zeroed (those writes were never acknowledged).
//!
//! Writes are readable once applied, right after they are durable: the
//! store makes a reader of a document wait until the document's writes in
//! flight are applied (a listing: every write in flight), so a caller still
//! reads its own writes.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::StoreError;

/// File name of the log inside the data directory.
pub const WAL_FILE: &str = "tandem-wal";

/// Size past which the flusher checkpoints sled and empties the log.
pub const CHECKPOINT_BYTES: u64 = 8 << 20;

/// Tag of an insert in a record.
const INSERT: u8 = 1;
/// Tag of a remove in a record.
const REMOVE: u8 = 0;

/// One atomic write: sled inserts and removes, applied as one batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Ops {
    items: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Ops {
    /// Sets `key` to `value`.
    pub(crate) fn insert(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.items.push((key.into(), Some(value.into())));
    }

    /// Removes `key`.
    pub(crate) fn remove(&mut self, key: impl Into<Vec<u8>>) {
        self.items.push((key.into(), None));
    }

    /// Key and value of the first operation, if it is an insert.
    pub(crate) fn first_insert(&self) -> Option<(&[u8], &[u8])> {
        let (key, value) = self.items.first()?;
        Some((key, value.as_deref()?))
    }

    /// Key of the last operation.
    pub(crate) fn last_key(&self) -> Option<&[u8]> {
        self.items.last().map(|(key, _)| key.as_slice())
    }

    /// Replaces the value every insert of `key` sets.
    pub(crate) fn set_value(&mut self, key: &[u8], value: Vec<u8>) {
        for (k, v) in &mut self.items {
            if k == key && v.is_some() {
                *v = Some(value.clone());
            }
        }
    }

    /// The same operations as one sled batch (atomic).
    pub(crate) fn to_batch(&self) -> sled::Batch {
        let mut batch = sled::Batch::default();
        for (key, value) in &self.items {
            match value {
                Some(value) => batch.insert(key.as_slice(), value.as_slice()),
                None => batch.remove(key.as_slice()),
            }
        }
        batch
    }

    /// Applies the operations to sled one by one, in order. Not atomic for
    /// sled (a crash may leave part of them), which is what lets them skip
    /// `sled::Tree::apply_batch`: sled 0.34 rolls and writes its log buffer
    /// twice per batch (`pin_log`), each a `pwrite` + `sync_file_range` on
    /// its thread pool, which was most of our disk cost. The write-ahead
    /// log makes the write atomic instead: it is durable in the log before
    /// the first operation reaches sled, and every open replays the log.
    /// Readers never see part of a write: the store bounds a document read
    /// to the writes known applied, and a compaction or delete holds the
    /// document's layout lock until applied.
    pub(crate) fn apply_each(&self, db: &sled::Db) -> Result<(), StoreError> {
        for (key, value) in &self.items {
            match value {
                Some(value) => db.insert(key.as_slice(), value.as_slice())?,
                None => db.remove(key.as_slice())?,
            };
        }
        Ok(())
    }

    /// Appends this write as one log record to `out`.
    pub(crate) fn encode_record(&self, out: &mut Vec<u8>) {
        let start = out.len();
        // The epoch (bytes 8..16) is stamped by `Wal::write`.
        out.extend_from_slice(&[0; RECORD_HEADER]);
        out.extend_from_slice(&(self.items.len() as u32).to_le_bytes());
        for (key, value) in &self.items {
            out.push(if value.is_some() { INSERT } else { REMOVE });
            out.extend_from_slice(&(key.len() as u32).to_le_bytes());
            out.extend_from_slice(key);
            if let Some(value) = value {
                out.extend_from_slice(&(value.len() as u32).to_le_bytes());
                out.extend_from_slice(value);
            }
        }
        let payload = &out[start + RECORD_HEADER..];
        let len = payload.len() as u32;
        let crc = crc32fast::hash(payload);
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }

    /// Decodes one record's payload (`None`: malformed).
    fn decode(payload: &[u8]) -> Option<Ops> {
        let mut at = 0usize;
        let mut take = |n: usize| -> Option<&[u8]> {
            let bytes = payload.get(at..at.checked_add(n)?)?;
            at += n;
            Some(bytes)
        };
        let u32_at = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        let count = u32_at(take(4)?);
        let mut ops = Ops::default();
        for _ in 0..count {
            let tag = take(1)?[0];
            let klen = u32_at(take(4)?);
            let key = take(klen)?.to_vec();
            match tag {
                INSERT => {
                    let vlen = u32_at(take(4)?);
                    ops.insert(key, take(vlen)?.to_vec());
                }
                REMOVE => ops.remove(key),
                _ => return None,
            }
        }
        (at == payload.len()).then_some(ops)
    }
}

/// First bytes of a preallocated log (format 2); a log without them is a
/// format-1 log (`[len][crc][payload]` records appended from offset 0),
/// still replayed.
const MAGIC: &[u8; 8] = b"TWAL\x00\x00\x00\x02";

/// Bytes of the log's header: magic, epoch (u64 LE), CRC-32 of those 16
/// bytes (u32 LE), zero padding. Records start right after it.
pub const HEADER_BYTES: u64 = 32;

/// Bytes of a record's header: `[len: u32][crc32 of payload: u32][epoch:
/// u64]` (format 2).
const RECORD_HEADER: usize = 16;

/// Size the log is preallocated to (zeroes, written and synced once), so
/// that a commit's `fdatasync` writes the records' pages and no file-size
/// change (on ext4 without a journal, a size change is one more
/// synchronous inode write per sync). A round that does not fit grows the
/// file, which stays correct.
pub const PREALLOCATED_BYTES: u64 = CHECKPOINT_BYTES + (1 << 20);

/// Bytes zeroed or read per call (below glibc's 128 KiB mmap threshold).
const ZERO_CHUNK: usize = 64 << 10;

/// The 32-byte header of a log of `epoch`.
fn header(epoch: u64) -> [u8; HEADER_BYTES as usize] {
    let mut out = [0u8; HEADER_BYTES as usize];
    out[..8].copy_from_slice(MAGIC);
    out[8..16].copy_from_slice(&epoch.to_le_bytes());
    let crc = crc32fast::hash(&out[..16]);
    out[16..20].copy_from_slice(&crc.to_le_bytes());
    out
}

/// The epoch of a format-2 log's header: `None` when `bytes` is not a
/// format-2 log, `Some(Err)` when its header is damaged.
fn epoch_of(bytes: &[u8]) -> Option<Result<u64, ()>> {
    if !bytes.starts_with(MAGIC) {
        return None;
    }
    let Some(head) = bytes.get(..20) else {
        return Some(Err(()));
    };
    let crc = u32::from_le_bytes([head[16], head[17], head[18], head[19]]);
    if crc32fast::hash(&head[..16]) != crc {
        return Some(Err(()));
    }
    let mut epoch = [0u8; 8];
    epoch.copy_from_slice(&head[8..16]);
    Some(Ok(u64::from_le_bytes(epoch)))
}

/// Writes `dir`'s log afresh: a header with an epoch above any the file
/// held, then zeroes up to [`PREALLOCATED_BYTES`], synced with its size and
/// its directory entry. Only once sled holds everything the old log held
/// (at open, after [`replay`] and a sync of sled): the old records, left
/// in place, are of an older epoch and never replayed again.
pub(crate) fn empty(dir: &Path) -> Result<(), StoreError> {
    let path = dir.join(WAL_FILE);
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)?;
    let mut head = [0u8; HEADER_BYTES as usize];
    let old = match file.read_exact_at(&mut head, 0) {
        Ok(()) => epoch_of(&head).and_then(Result::ok).unwrap_or(0),
        Err(_) => 0,
    };
    let epoch = (old + 1).max(crate::store::now_ms());
    if file.metadata()?.len() < PREALLOCATED_BYTES {
        file.set_len(0)?;
        // Small chunks: a freed allocation of 128 KiB or more raises
        // glibc's mmap threshold, which then keeps freed memory resident.
        let zeroes = [0u8; ZERO_CHUNK];
        let mut left = PREALLOCATED_BYTES;
        while left > 0 {
            let n = left.min(zeroes.len() as u64) as usize;
            file.write_all(&zeroes[..n])?;
            left -= n as u64;
        }
    } else {
        // Zero the start, so that no stale record sits right after the
        // header (it could not match the new epoch anyway).
        file.write_all_at(&[0u8; 4096], 0)?;
    }
    file.write_all_at(&header(epoch), 0)?;
    file.sync_all()?;
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// The open log file, written only by the flusher thread, records written
/// in place (`pwrite`) after the header.
pub(crate) struct Wal {
    file: File,
    /// The epoch records are stamped with; raised by every [`Wal::truncate`].
    epoch: u64,
    /// Offset up to which everything was `fdatasync`ed.
    durable_at: u64,
    /// Offset where the next record goes (what was written, durable or not).
    written_at: u64,
    /// `false` when the file held something else than a fresh log at open
    /// (a log not replayed, in recovery mode): it is left alone and every
    /// write fails.
    writable: bool,
}

impl Wal {
    /// Opens `dir`'s log, made fresh by [`empty`] (an absent or empty file
    /// is made fresh here). A file holding anything else (records not
    /// replayed: recovery mode) is left untouched, and writes fail.
    pub(crate) fn open(dir: &Path) -> Result<Wal, StoreError> {
        let path = dir.join(WAL_FILE);
        let fresh = std::fs::metadata(&path).map_or(true, |m| m.len() == 0);
        if fresh {
            empty(dir)?;
        }
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        let mut head = [0u8; HEADER_BYTES as usize];
        let mut first = [0u8; RECORD_HEADER];
        let epoch = match (
            file.read_exact_at(&mut head, 0),
            file.read_exact_at(&mut first, HEADER_BYTES),
        ) {
            // Fresh: a valid header and no record after it.
            (Ok(()), Ok(())) if first[..4] == [0; 4] => epoch_of(&head).and_then(Result::ok),
            _ => None,
        };
        if epoch.is_none() {
            tracing::error!(log = %path.display(), "the write-ahead log holds records that were not replayed; it is left as it is and not written");
        }
        Ok(Wal {
            file,
            epoch: epoch.unwrap_or(0),
            durable_at: HEADER_BYTES,
            written_at: HEADER_BYTES,
            writable: epoch.is_some(),
        })
    }

    /// Writes records (encoded by [`Ops::encode_record`]) after the last
    /// ones, stamped with the log's epoch (not yet durable).
    pub(crate) fn write(&mut self, records: &mut [u8]) -> Result<(), StoreError> {
        if !self.writable {
            return Err(StoreError::FlushFailed(
                "the write-ahead log holds records that were not replayed".into(),
            ));
        }
        let mut at = 0usize;
        while at + RECORD_HEADER <= records.len() {
            let len = u32::from_le_bytes([
                records[at],
                records[at + 1],
                records[at + 2],
                records[at + 3],
            ]) as usize;
            records[at + 8..at + 16].copy_from_slice(&self.epoch.to_le_bytes());
            at += RECORD_HEADER + len;
        }
        let result = self.file.write_all_at(records, self.written_at);
        // Even a failed write may have written part: `reset` clears it.
        self.written_at += records.len() as u64;
        Ok(result?)
    }

    /// Makes every written record durable.
    pub(crate) fn sync(&mut self) -> Result<(), StoreError> {
        self.file.sync_data()?;
        self.durable_at = self.written_at;
        Ok(())
    }

    /// Zeroes whatever was written after the last successful sync (after
    /// a failed write or sync: those records were never acknowledged, and
    /// are written again once the store recovers) and syncs.
    pub(crate) fn reset(&mut self) -> Result<(), StoreError> {
        let zeroes = [0u8; ZERO_CHUNK];
        let mut at = self.durable_at;
        while at < self.written_at {
            let n = (self.written_at - at).min(ZERO_CHUNK as u64);
            self.file.write_all_at(&zeroes[..n as usize], at)?;
            at += n;
        }
        self.written_at = self.durable_at;
        self.file.sync_data()?;
        Ok(())
    }

    /// Empties the log: only once every record in it is applied to sled
    /// and sled's file is synced. Raises the epoch in the header, so the
    /// records in the file are stale; the next records overwrite them from
    /// the start. Durable with the next sync (until then a crash replays
    /// records sled already holds, which changes nothing).
    pub(crate) fn truncate(&mut self) -> Result<(), StoreError> {
        if !self.writable {
            return Ok(());
        }
        self.epoch += 1;
        self.file.write_all_at(&header(self.epoch), 0)?;
        self.durable_at = HEADER_BYTES;
        self.written_at = HEADER_BYTES;
        Ok(())
    }

    /// Bytes of records in the log.
    pub(crate) fn len(&self) -> u64 {
        self.written_at - HEADER_BYTES
    }
}

/// What [`replay`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Replayed {
    /// Records applied to sled.
    pub(crate) records: usize,
    /// Bytes after the last good record (a torn tail, damage, or in a
    /// preallocated log zeroes and records of older epochs).
    pub(crate) ignored_bytes: usize,
    /// Where a log with damage before its end was kept.
    pub(crate) kept_aside: Option<PathBuf>,
}

/// How one record of a log decodes.
enum Record {
    /// A whole, intact record of the current epoch, and where the next one
    /// starts.
    Valid(Ops, usize),
    /// Cut short by the end of the file (a crash during its write).
    Torn,
    /// Zeroes, or a record of an older epoch: the log's end (format 2).
    End,
    /// Fails its checksum or does not decode.
    Bad,
}

/// Decodes the record at `at` (`epoch`: `None` for a format-1 log).
fn record_at(bytes: &[u8], at: usize, epoch: Option<u64>) -> Record {
    let header_len = if epoch.is_some() { RECORD_HEADER } else { 8 };
    let Some(header) = bytes.get(at..at + header_len) else {
        return Record::Torn;
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if let Some(epoch) = epoch {
        let mut stamped = [0u8; 8];
        stamped.copy_from_slice(&header[8..16]);
        if len == 0 && crc == 0 || u64::from_le_bytes(stamped) != epoch {
            return Record::End;
        }
    }
    let Some(payload) = at
        .checked_add(header_len + len)
        .and_then(|end| bytes.get(at + header_len..end))
    else {
        return Record::Torn;
    };
    match (crc32fast::hash(payload) == crc)
        .then(|| Ops::decode(payload))
        .flatten()
    {
        Some(ops) => Record::Valid(ops, at + header_len + len),
        None => Record::Bad,
    }
}

/// Whether any whole, intact record of `epoch` starts after `from`: a bad
/// record followed by one is damage, not a torn last write.
fn valid_record_after(bytes: &[u8], from: usize, epoch: u64) -> bool {
    let stamp = epoch.to_le_bytes();
    (from..bytes.len().saturating_sub(RECORD_HEADER)).any(|at| {
        bytes[at + 8..at + 16] == stamp
            && matches!(record_at(bytes, at, Some(epoch)), Record::Valid(..))
    })
}

/// The front of a log file, read in [`ZERO_CHUNK`]s as far as parsing
/// needs: a preallocated log is mostly zeroes or stale records, which are
/// never read whole (unless a bad record needs the rest to be judged).
struct LogReader {
    file: Option<File>,
    bytes: Vec<u8>,
    /// The file's size.
    len: usize,
}

impl LogReader {
    fn open(path: &Path) -> Result<LogReader, StoreError> {
        match File::open(path) {
            Ok(file) => {
                let len = file.metadata()?.len() as usize;
                Ok(LogReader {
                    file: Some(file),
                    bytes: Vec::new(),
                    len,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LogReader {
                file: None,
                bytes: Vec::new(),
                len: 0,
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads until `want` bytes are in (or the file ends).
    fn fill(&mut self, want: usize) -> Result<(), StoreError> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let want = want.min(self.len);
        while self.bytes.len() < want {
            let at = self.bytes.len();
            let n = (want - at).max(ZERO_CHUNK).min(self.len - at);
            self.bytes.resize(at + n, 0);
            if let Err(e) = file.read_exact_at(&mut self.bytes[at..], at as u64) {
                self.bytes.truncate(at);
                self.len = at; // the file shrank meanwhile
                if e.kind() != std::io::ErrorKind::UnexpectedEof {
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    /// The record at `at`, reading as much of the file as it needs.
    fn record_at(&mut self, at: usize, epoch: Option<u64>) -> Result<Record, StoreError> {
        loop {
            let have = self.bytes.len();
            let record = record_at(&self.bytes, at, epoch);
            if !matches!(record, Record::Torn) || have >= self.len {
                return Ok(record);
            }
            // Cut short by what was read so far: read what its length says.
            let need = self
                .bytes
                .get(at..at + 4)
                .map_or(0, |l| u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize);
            self.fill(
                at.saturating_add(RECORD_HEADER)
                    .saturating_add(need)
                    .max(have + 1),
            )?;
        }
    }
}

/// The log's epoch (`None`: format 1, or a damaged header: `damaged`)
/// and the offset of its first record.
fn start_of(log: &mut LogReader) -> Result<(Option<u64>, usize, bool), StoreError> {
    log.fill(HEADER_BYTES as usize)?;
    Ok(match epoch_of(&log.bytes) {
        None => (None, 0, false),
        Some(Ok(epoch)) => (Some(epoch), HEADER_BYTES as usize, false),
        Some(Err(())) => (None, log.len, true),
    })
}

/// Applies every whole, intact record of `dir`'s log (of the log's current
/// epoch) to `db`, in order. The caller then syncs sled and calls
/// [`empty`].
pub(crate) fn replay(dir: &Path, db: &sled::Db) -> Result<Replayed, StoreError> {
    let path = dir.join(WAL_FILE);
    let mut log = LogReader::open(&path)?;
    let mut replayed = Replayed::default();
    // A damaged header: nothing can be trusted to be of the current epoch.
    let (epoch, mut at, mut damaged) = start_of(&mut log)?;
    let mut torn = false;
    while at < log.len {
        match log.record_at(at, epoch)? {
            Record::Valid(ops, next) => {
                db.apply_batch(ops.to_batch())?;
                replayed.records += 1;
                at = next;
            }
            Record::Torn => {
                torn = true;
                break;
            }
            Record::End => break,
            Record::Bad => {
                // In a preallocated log, a torn last write is a bad record
                // followed by nothing valid; anything valid after it is
                // damage in the middle.
                log.fill(log.len)?;
                match epoch {
                    Some(epoch) if !valid_record_after(&log.bytes, at + 1, epoch) => torn = true,
                    _ => damaged = true,
                }
                break;
            }
        }
    }
    replayed.ignored_bytes = log.len.saturating_sub(at);
    if damaged {
        let aside = dir.join(format!("{WAL_FILE}.damaged-{}", crate::store::now_ms()));
        std::fs::copy(&path, &aside)?;
        tracing::error!(
            log = %path.display(),
            kept_as = %aside.display(),
            records = replayed.records,
            ignored_bytes = replayed.ignored_bytes,
            "the write-ahead log is damaged: replayed the records before the damage, kept the log aside"
        );
        replayed.kept_aside = Some(aside);
    } else if torn {
        tracing::warn!(
            ignored_bytes = replayed.ignored_bytes,
            "the write-ahead log ends in a record cut short by a crash (never acknowledged): ignored"
        );
    }
    if replayed.records > 0 {
        tracing::info!(records = replayed.records, "replayed the write-ahead log");
    }
    Ok(replayed)
}

/// Records of the current epoch in `dir`'s log that an open would replay
/// (for tests and inspection; applies nothing).
pub fn logged_records(dir: &Path) -> Result<usize, StoreError> {
    let mut log = LogReader::open(&dir.join(WAL_FILE))?;
    let (epoch, mut at, _) = start_of(&mut log)?;
    let mut records = 0;
    while let Record::Valid(_, next) = log.record_at(at, epoch)? {
        records += 1;
        at = next;
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(n: u8) -> Ops {
        let mut ops = Ops::default();
        ops.insert(vec![b'k', n], vec![n; 3]);
        ops.remove(vec![b'r', n]);
        ops
    }

    /// Records stamped with `epoch`, as `Wal::write` writes them.
    fn records_of(epoch: u64, records: &[Ops]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in records {
            let at = out.len();
            r.encode_record(&mut out);
            out[at + 8..at + 16].copy_from_slice(&epoch.to_le_bytes());
        }
        out
    }

    /// A preallocated log of `epoch` holding `records`, then zeroes.
    fn log_of(epoch: u64, records: &[Ops]) -> Vec<u8> {
        let mut out = header(epoch).to_vec();
        out.extend(records_of(epoch, records));
        out.resize(out.len() + 4096, 0);
        out
    }

    fn db(dir: &Path) -> sled::Db {
        sled::Config::new().path(dir.join("db")).open().unwrap()
    }

    #[test]
    fn a_record_decodes_to_the_operations_it_was_made_of() {
        let mut one = ops(7);
        one.insert(Vec::new(), Vec::new());
        let out = records_of(1, std::slice::from_ref(&one));
        assert_eq!(Ops::decode(&out[RECORD_HEADER..]), Some(one));
        assert_eq!(Ops::decode(&out[RECORD_HEADER..out.len() - 1]), None);
    }

    #[test]
    fn replay_applies_every_whole_record_in_order_and_ignores_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut second = Ops::default();
        second.insert(b"k\x01".to_vec(), b"newer".to_vec());
        let mut log = header(3).to_vec();
        log.extend(records_of(3, &[ops(1), second, ops(2)]));
        log.truncate(log.len() - 3);
        std::fs::write(dir.path().join(WAL_FILE), &log).unwrap();
        let db = db(dir.path());
        db.insert(b"r\x01", b"gone").unwrap();
        let replayed = replay(dir.path(), &db).unwrap();
        assert_eq!(replayed.records, 2);
        assert!(replayed.ignored_bytes > 0 && replayed.kept_aside.is_none());
        assert_eq!(db.get(b"k\x01").unwrap().unwrap().as_ref(), b"newer");
        assert!(db.get(b"r\x01").unwrap().is_none());
        assert!(
            db.get(b"k\x02").unwrap().is_none(),
            "the torn record is not applied"
        );
    }

    #[test]
    fn a_torn_write_over_the_preallocated_zeroes_is_a_torn_tail_not_damage() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = log_of(5, &[ops(1), ops(2)]);
        let whole = header(5).len() + records_of(5, &[ops(1)]).len();
        // The second record's last bytes never reached the disk.
        let end = header(5).len() + records_of(5, &[ops(1), ops(2)]).len();
        log[end - 4..end].fill(0);
        std::fs::write(dir.path().join(WAL_FILE), &log).unwrap();
        let db = db(dir.path());
        let replayed = replay(dir.path(), &db).unwrap();
        assert_eq!(replayed.records, 1);
        assert_eq!(replayed.ignored_bytes, log.len() - whole);
        assert!(replayed.kept_aside.is_none());
        assert!(db.get(b"k\x02").unwrap().is_none());
    }

    #[test]
    fn records_of_an_older_epoch_after_the_current_ones_are_never_replayed() {
        let dir = tempfile::tempdir().unwrap();
        // Epoch 7 wrote three records; a checkpoint raised the epoch to 8
        // and one record overwrote the start of the old ones.
        let mut log = log_of(7, &[ops(1), ops(2), ops(3)]);
        let mut newer = Ops::default();
        newer.insert(b"fresh".to_vec(), b"1".to_vec());
        let fresh = records_of(8, &[newer]);
        log[..HEADER_BYTES as usize].copy_from_slice(&header(8));
        let at = HEADER_BYTES as usize;
        log[at..at + fresh.len()].copy_from_slice(&fresh);
        std::fs::write(dir.path().join(WAL_FILE), &log).unwrap();
        let db = db(dir.path());
        let replayed = replay(dir.path(), &db).unwrap();
        assert_eq!(replayed.records, 1);
        assert!(
            replayed.kept_aside.is_none(),
            "stale records are not damage"
        );
        assert!(db.get(b"fresh").unwrap().is_some());
        for n in 1..=3u8 {
            assert!(
                db.get([b'k', n]).unwrap().is_none(),
                "stale record {n} replayed"
            );
        }
    }

    #[test]
    fn a_damaged_record_stops_replay_and_the_log_is_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = log_of(9, &[ops(1), ops(2), ops(3)]);
        let first_end = HEADER_BYTES as usize + records_of(9, &[ops(1)]).len();
        log[first_end + RECORD_HEADER + 2] ^= 0xff;
        std::fs::write(dir.path().join(WAL_FILE), &log).unwrap();
        let db = db(dir.path());
        let replayed = replay(dir.path(), &db).unwrap();
        assert_eq!(replayed.records, 1);
        assert_eq!(replayed.ignored_bytes, log.len() - first_end);
        let aside = replayed.kept_aside.unwrap();
        assert_eq!(std::fs::read(aside).unwrap(), log);
        assert!(db.get(b"k\x01").unwrap().is_some());
        assert!(db.get(b"k\x03").unwrap().is_none());
    }

    #[test]
    fn a_damaged_header_keeps_the_log_aside() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = log_of(9, &[ops(1)]);
        log[9] ^= 0xff;
        std::fs::write(dir.path().join(WAL_FILE), &log).unwrap();
        let replayed = replay(dir.path(), &db(dir.path())).unwrap();
        assert_eq!(replayed.records, 0);
        assert!(replayed.kept_aside.is_some());
    }

    #[test]
    fn a_log_of_the_first_format_still_replays() {
        let dir = tempfile::tempdir().unwrap();
        // Format 1: `[len][crc][payload]` from offset 0, no header, no epoch.
        let mut log = Vec::new();
        for r in [ops(1), ops(2)] {
            let v2 = records_of(0, &[r]);
            log.extend_from_slice(&v2[..8]);
            log.extend_from_slice(&v2[RECORD_HEADER..]);
        }
        std::fs::write(dir.path().join(WAL_FILE), &log).unwrap();
        let db = db(dir.path());
        let replayed = replay(dir.path(), &db).unwrap();
        assert_eq!((replayed.records, replayed.ignored_bytes), (2, 0));
        assert!(db.get(b"k\x02").unwrap().is_some());
    }

    #[test]
    fn the_log_is_preallocated_and_reset_and_truncate_leave_only_what_counts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(WAL_FILE);
        let mut wal = Wal::open(dir.path()).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), PREALLOCATED_BYTES);
        wal.write(&mut records_of(0, &[ops(1)])).unwrap();
        wal.sync().unwrap();
        let synced = wal.len();
        wal.write(&mut records_of(0, &[ops(2)])).unwrap();
        wal.reset().unwrap();
        assert_eq!(wal.len(), synced);
        assert_eq!(logged_records(dir.path()).unwrap(), 1);
        // Records are written in place: the file's size does not change.
        assert_eq!(std::fs::metadata(&path).unwrap().len(), PREALLOCATED_BYTES);
        wal.truncate().unwrap();
        assert_eq!((wal.len(), logged_records(dir.path()).unwrap()), (0, 0));
        wal.write(&mut records_of(0, &[ops(3)])).unwrap();
        wal.sync().unwrap();
        assert_eq!(logged_records(dir.path()).unwrap(), 1);
        let db = db(dir.path());
        assert_eq!(replay(dir.path(), &db).unwrap().records, 1);
        assert!(db.get(b"k\x03").unwrap().is_some());
        assert!(db.get(b"k\x01").unwrap().is_none());
        // At open, after a replay: a fresh log of a higher epoch.
        empty(dir.path()).unwrap();
        assert_eq!(logged_records(dir.path()).unwrap(), 0);
        assert!(Wal::open(dir.path()).unwrap().writable);
    }

    #[test]
    fn a_log_that_was_not_replayed_is_left_alone_and_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let log = log_of(4, &[ops(1)]);
        std::fs::write(dir.path().join(WAL_FILE), &log).unwrap();
        let mut wal = Wal::open(dir.path()).unwrap();
        assert!(wal.write(&mut records_of(0, &[ops(2)])).is_err());
        wal.truncate().unwrap();
        assert_eq!(std::fs::read(dir.path().join(WAL_FILE)).unwrap(), log);
    }
}
