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
//! `write`, `fdatasync`s the file, resolves their tickets, and only then
//! applies the writes to sled, in the same order. So sled never holds
//! a write the log does not hold before it, and sled's own state (whatever
//! sled persisted of it by itself) is always the state of the last
//! checkpoint plus a prefix of the log. Every operation is a blind write of
//! a whole key, so replaying the whole log over that state gives exactly
//! the state after the last logged write: [`replay`] runs at every open,
//! before anything reads sled. Every few seconds, or once the log passes
//! [`CHECKPOINT_BYTES`], the flusher flushes sled and `fdatasync`s its file
//! (everything in the log is applied by then) and empties the log.
//!
//! A record is `[len: u32 LE][crc32 of payload: u32 LE][payload]`, the
//! payload `[count: u32]` then per operation `[1][key len: u32][key][value
//! len: u32][value]` (insert) or `[0][key len: u32][key]` (remove). Replay
//! stops at the first record that is cut short (a crash during its write:
//! it was never acknowledged) or fails its checksum; a log with anything
//! after such a record is kept aside as `tandem-wal.damaged-<ms>` and
//! logged, never silently dropped.
//!
//! Writes are readable once applied, right after they are durable: the
//! store makes a reader of a document wait until the document's writes in
//! flight are applied (a listing: every write in flight), so a caller still
//! reads its own writes.

use std::fs::{File, OpenOptions};
use std::io::Write;
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
        out.extend_from_slice(&[0; 8]);
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
        let payload = &out[start + 8..];
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

/// The open log file, written only by the flusher thread.
pub(crate) struct Wal {
    file: File,
    /// Bytes known durable (everything up to here was `fdatasync`ed).
    durable_len: u64,
    /// Bytes written, durable or not.
    written_len: u64,
}

impl Wal {
    /// Opens (or creates) the log of `dir`, to append after what it holds.
    pub(crate) fn open(dir: &Path) -> Result<Wal, StoreError> {
        let path = dir.join(WAL_FILE);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)?;
        let len = file.metadata()?.len();
        Ok(Wal {
            file,
            durable_len: len,
            written_len: len,
        })
    }

    /// Appends records (not yet durable).
    pub(crate) fn write(&mut self, records: &[u8]) -> Result<(), StoreError> {
        let result = self.file.write_all(records);
        // Even a failed write may have written part: `reset` cuts it.
        self.written_len += records.len() as u64;
        Ok(result?)
    }

    /// Makes every appended record durable.
    pub(crate) fn sync(&mut self) -> Result<(), StoreError> {
        self.file.sync_data()?;
        self.durable_len = self.written_len;
        Ok(())
    }

    /// Cuts whatever was written after the last successful sync (after a
    /// failed write or sync: those records were never acknowledged) and
    /// syncs.
    pub(crate) fn reset(&mut self) -> Result<(), StoreError> {
        self.file.set_len(self.durable_len)?;
        self.written_len = self.durable_len;
        self.file.sync_data()?;
        Ok(())
    }

    /// Empties the log: only once every record in it is applied to sled
    /// and sled's file is synced. Durable with the next sync (until then a
    /// crash replays records sled already holds, which changes nothing).
    pub(crate) fn truncate(&mut self) -> Result<(), StoreError> {
        self.file.set_len(0)?;
        self.durable_len = 0;
        self.written_len = 0;
        Ok(())
    }

    /// Bytes in the log.
    pub(crate) fn len(&self) -> u64 {
        self.written_len
    }
}

/// Empties `dir`'s log, if it has one, once sled holds what it held (at
/// open, after [`replay`] and a sync of sled).
pub(crate) fn empty(dir: &Path) -> Result<(), StoreError> {
    match OpenOptions::new().write(true).open(dir.join(WAL_FILE)) {
        Ok(file) => {
            file.set_len(0)?;
            file.sync_data()?;
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// What [`replay`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Replayed {
    /// Records applied to sled.
    pub(crate) records: usize,
    /// Bytes after the last good record (a torn tail, or damage).
    pub(crate) ignored_bytes: usize,
    /// Where a log with damage before its end was kept.
    pub(crate) kept_aside: Option<PathBuf>,
}

/// Applies every whole, intact record of `dir`'s log to `db`, in order.
/// The caller then syncs sled and empties the log.
pub(crate) fn replay(dir: &Path, db: &sled::Db) -> Result<Replayed, StoreError> {
    let path = dir.join(WAL_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Replayed::default()),
        Err(e) => return Err(e.into()),
    };
    let mut replayed = Replayed::default();
    let mut at = 0usize;
    let mut damaged = false;
    while at < bytes.len() {
        let Some(header) = bytes.get(at..at + 8) else {
            break; // a torn header at the end
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let Some(payload) = bytes.get(at + 8..at + 8 + len) else {
            break; // a torn record at the end
        };
        let ops = (crc32fast::hash(payload) == crc)
            .then(|| Ops::decode(payload))
            .flatten();
        let Some(ops) = ops else {
            damaged = true;
            break;
        };
        db.apply_batch(ops.to_batch())?;
        replayed.records += 1;
        at += 8 + len;
    }
    replayed.ignored_bytes = bytes.len() - at;
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
    } else if replayed.ignored_bytes > 0 {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(n: u8) -> Ops {
        let mut ops = Ops::default();
        ops.insert(vec![b'k', n], vec![n; 3]);
        ops.remove(vec![b'r', n]);
        ops
    }

    fn log_of(records: &[Ops]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in records {
            r.encode_record(&mut out);
        }
        out
    }

    fn db(dir: &Path) -> sled::Db {
        sled::Config::new().path(dir.join("db")).open().unwrap()
    }

    #[test]
    fn a_record_decodes_to_the_operations_it_was_made_of() {
        let mut one = ops(7);
        one.insert(Vec::new(), Vec::new());
        let out = log_of(std::slice::from_ref(&one));
        assert_eq!(Ops::decode(&out[8..]), Some(one));
        assert_eq!(Ops::decode(&out[8..out.len() - 1]), None);
    }

    #[test]
    fn replay_applies_every_whole_record_in_order_and_ignores_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut second = Ops::default();
        second.insert(b"k\x01".to_vec(), b"newer".to_vec());
        let mut log = log_of(&[ops(1), second, ops(2)]);
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
    fn a_damaged_record_stops_replay_and_the_log_is_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = log_of(&[ops(1), ops(2), ops(3)]);
        let first_len = log_of(&[ops(1)]).len();
        log[first_len + 10] ^= 0xff;
        std::fs::write(dir.path().join(WAL_FILE), &log).unwrap();
        let db = db(dir.path());
        let replayed = replay(dir.path(), &db).unwrap();
        assert_eq!(replayed.records, 1);
        assert_eq!(replayed.ignored_bytes, log.len() - first_len);
        let aside = replayed.kept_aside.unwrap();
        assert_eq!(std::fs::read(aside).unwrap(), log);
        assert!(db.get(b"k\x01").unwrap().is_some());
        assert!(db.get(b"k\x03").unwrap().is_none());
    }

    #[test]
    fn reset_cuts_what_was_written_after_the_last_sync() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path()).unwrap();
        wal.write(&log_of(&[ops(1)])).unwrap();
        wal.sync().unwrap();
        let synced = wal.len();
        wal.write(&log_of(&[ops(2)])).unwrap();
        wal.reset().unwrap();
        assert_eq!(wal.len(), synced);
        assert_eq!(
            std::fs::metadata(dir.path().join(WAL_FILE)).unwrap().len(),
            synced
        );
        wal.truncate().unwrap();
        assert_eq!(
            std::fs::metadata(dir.path().join(WAL_FILE)).unwrap().len(),
            0
        );
    }
}
