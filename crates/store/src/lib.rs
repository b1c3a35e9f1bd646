//! tandem-store: the durable home of Tandem's documents.
//!
//! Each document (named by a validated [`DocId`]) is an append-only log of
//! yrs v1 updates plus a compacted snapshot, kept in one embedded
//! [sled](https://docs.rs/sled/0.34) database. The store knows nothing of
//! networks: the gateway applies an update to its in-memory `yrs::Doc`, then
//! hands the bytes to [`Store::append`] and acknowledges once the returned
//! [`Appended`] ticket resolves.
//!
//! # Layout
//!
//! In dependency order (each uses only those above it):
//!
//! - [`doc_id`]: `DocId`, the validated document name, and its error.
//! - [`config`]: `StoreConfig` and `Durability`, every knob with its default.
//! - [`error`]: `StoreError`, what can go wrong.
//! - [`records`]: key layout and record encoding (the on-disk format, its
//!   version numbers and checksums).
//! - [`open`]: opening a data directory safely (stale sled snapshot files
//!   set aside, sled panics contained).
//! - `doc_state`: per-document counters (stored in metadata records) and
//!   locks.
//! - [`manifest`]: the store's own account of what the directory holds,
//!   outside sled's file, checked at open; checkpoints.
//! - `faults`: [`SyncFaults`], the fault-injecting seam at the disk-sync
//!   boundary (tests).
//! - [`wal`]: the write-ahead log (preallocated file, records stamped
//!   with the log's epoch, replay at open): how a write is durable without
//!   a sled flush per commit.
//! - `doorbell`: how the flusher thread wakes async waiters from inside
//!   their runtime (a byte on a socket instead of a wake from outside).
//! - `commit`: group commit (a round led by the write's own waiter when the
//!   log is free, else by the flusher thread) behind `Appended`, the
//!   deferred appends merged at checkpoints, and the automatic recovery
//!   from write faults ([`StoreHealth`]).
//! - `replay`: reading snapshot + log back into a `yrs::Doc`.
//! - `store`: `Store` itself, the sled backend.
//! - `stored_state`: [`StoredState`], a document's snapshot and log read
//!   but not decoded (a joiner can be answered from it while the `Doc` loads).
//! - [`listing`]: pages of `DocInfo` from the metadata records; the record
//!   scan `check` and `salvage` use.
//! - `upgrade`: the format check at open and the upgrade of older formats.
//! - [`backup`]: the backup archive (tar + manifest): writing it from a
//!   running store, restoring it.
//! - [`doc_store`]: `DocStore`, the same capabilities as a trait for other
//!   backends.
//!
//! Start with [`Store`] and [`StoreConfig`].
//!
//! # Durability promise
//!
//! With [`Durability::Flush`] (the default): when an [`Appended`] ticket
//! resolves Ok, and when `import`, `compact`, `delete` or `flush` return Ok,
//! the write's record is in the write-ahead log (`<data dir>/tandem-wal`,
//! see [`wal`]) and the log has been `fdatasync`ed, which makes the kernel
//! issue a cache-flush to the drive (the log is preallocated, so there is
//! no file-size change to persist; a round that outgrows it persists the
//! new size in the same `fdatasync`). The
//! ticket resolves right then; the write is applied to sled just after, or,
//! for an append of one chunk, at the next checkpoint, merged with its
//! document's neighbours (see "Deferred appends" in `commit`; a reader of a
//! document waits until that document's writes in flight are applied,
//! applying the deferred ones itself, and a listing until every write in
//! flight is, so no read misses an acknowledged write; if the apply fails, reads of the document fail
//! until the automatic recovery has replayed the log into sled). Every
//! few seconds sled is flushed (`sled::Db::flush`: `pwrite` +
//! `sync_file_range`) and its data file `fdatasync`ed, and the log is
//! emptied; every open replays the log first. Such a write survives a
//! process crash, a kernel crash and a power loss, provided the drive
//! honours cache-flush requests (a drive or virtual disk that acknowledges
//! them without persisting can still lose the most recent writes). Writes
//! that are in flight together share one log write and one `fdatasync`
//! (group commit), which the first waiter runs on its own thread when no
//! other is running ([`Appended::sync_in_background`] leaves it to the
//! store's flusher thread). If a flush fails (a full disk, an I/O error), every write not
//! yet durable fails with [`StoreError::FlushFailed`] (none of them was
//! acknowledged), new writes are refused at once, reads keep working, and
//! [`Store::health`] reports [`StoreHealth::Failing`]; the store retries with
//! backoff (reopening sled, which otherwise remembers an I/O error forever)
//! and is writable again by itself once a sync succeeds: no restart, no
//! acknowledged write lost. [`SyncFaults`] injects such failures at the
//! disk-sync boundary for tests.
//!
//! With [`Durability::Relaxed`]`{ flush_every_ms }`: a ticket resolves as
//! soon as the record is queued for the write-ahead log, and the log is
//! written and `fdatasync`ed every `flush_every_ms` (earlier once 1 MiB is
//! queued, or when a read needs what is queued), then applied to sled, as
//! in flush mode. Any crash, of the process as
//! well as of the machine, loses at most the updates acknowledged during the
//! last `flush_every_ms` (plus one flush's duration). `import`, `delete` and
//! `flush` still sync before they return; dropping the last `Store` handle
//! flushes too.
//!
//! What else the store does because of sled 0.34: its own periodic flusher
//! is off (`flush_every_ms(None)`, ours does all flushing); its `conf` file
//! and the data directory are fsynced at open (sled does not); values are
//! split into ≤ 4000-byte chunks so that sled never moves a value or a page
//! into its separate blob files, which it does not fsync; the page cache is
//! bounded (`cache_bytes`, default 64 MiB instead of sled's 1 GiB);
//! compression stays off (sled's default; it cannot change after creation).

//! # Batches
//!
//! [`Store::append_batch`] stores several updates (e.g. everything a room
//! received together) as one log record in one atomic sled write, with
//! consecutive seqs; a crash keeps the whole batch or none of it, and its
//! ticket follows the same durability promise. One sled write per batch
//! instead of per update is most of the store's cost under load.
//!
//! # Compaction
//!
//! [`Store::compact`] merges snapshot + log into a new snapshot and, in the
//! same atomic sled batch, removes exactly the log records it merged, so a
//! crash leaves the old state or the new one, and appends racing a
//! compaction are kept. The caller decides when to run it;
//! [`Store::needs_compaction`] says when it is due: the log passed
//! `compact_after_updates` (default 1000) updates or `compact_after_bytes`
//! (default 1 MiB), **and** the log has grown to at least
//! `compact_min_log_percent` (default 100) % of the snapshot's size. A
//! compaction reads and rewrites the whole snapshot, so without the second
//! condition a large document would be rewritten every 1000 keystrokes
//! (quadratic work overall); with it, each compaction costs at most about
//! twice the bytes appended since the previous one (linear overall), and a
//! load replays a log at most about as large as the snapshot.
//!
//! [`Store::compact`] decodes and replays the whole log into a `Doc` to
//! encode the new snapshot, which costs as much CPU again as applying those
//! updates did. A caller that holds the live document (a room: the only
//! writer of its document while loaded) uses [`Store::compact_from_state`]
//! instead, handing over its own encoding as of the last record it
//! appended; the store then only rewrites keys (measured: 25 % less server
//! CPU per update while streaming the automerge-paper trace).
//!
//! # Bad data
//!
//! A log record that cannot be decoded or applied makes [`Store::load`]
//! (and `compact`, `export`) fail with [`StoreError::CorruptRecord`], which
//! names the document and the record's seq. Nothing is deleted, nothing
//! panics, other documents are unaffected, appends to the document still
//! work, and [`Store::load_lossy`] loads what is valid and lists the rest.
//!
//! # Integrity
//!
//! The store does not trust sled blindly. Before sled opens a directory,
//! stale `snap.*.generating` files (left by a crash during sled's snapshot
//! write, which sled would misread and then refuse the directory) are
//! renamed aside and logged ([`open`]). The store keeps its own account
//! of what the directory holds outside sled's data file
//! (`tandem-manifest.json`: format, checkpoint counter, document count),
//! and a data file holding less than that account refuses to open with
//! [`StoreError::HoldsLess`], naming the directory, what is missing and the
//! recovery commands ([`manifest`]). sled panics at open and read become
//! [`StoreError::Damaged`]; every readable document is still served. Every
//! record carries a CRC-32, so a flipped byte is a
//! [`StoreError::CorruptRecord`] (or `CorruptSnapshot`) naming the document
//! and seq, never a wrong document. [`Store::open_for_recovery`] opens a
//! damaged directory read-only for `tandem check` and `tandem salvage`.
//!
//! # Memory
//!
//! Reading a document that does not exist creates no state. Each document's
//! counters live on disk in its metadata record; the in-memory slot of a
//! document nobody is using is evicted (swept when the map has doubled), so
//! bookkeeping is proportional to the documents in use.
//!
//! # Format
//!
//! Data-dir format version [`records::DATA_FORMAT_VERSION`]; see
//! [`records`] for the key layout and record versions. `fixtures/store-v1/`,
//! `fixtures/store-v2/` and `fixtures/store-v3/` hold directories in
//! formats 1 (single-update records), 2 (batch records) and 3 (checksummed
//! records, metadata records, manifest) that a test opens, so later
//! releases keep reading them. Opening an older directory writes the
//! metadata records it lacks and marks it as the current format (its
//! records stay as they are).

pub mod backup;
pub mod config;
pub mod doc_id;
pub mod doc_store;
pub mod error;
pub mod listing;
pub mod manifest;
pub mod open;
pub mod records;
pub mod wal;

mod commit;
mod doc_state;
mod doorbell;
mod faults;
mod replay;
mod store;
mod stored_state;
mod upgrade;

pub use commit::{
    CommitStats, DEFERRED_CHECKPOINT, MAX_DEFERRED, RETRY_FIRST, RETRY_MAX, SLOW_SYNC,
    SYNC_SECONDS_BUCKETS, StoreHealth, SyncTimes,
};
pub use config::{Durability, StoreConfig};
pub use doc_id::{DocId, InvalidDocId};
pub use doc_store::DocStore;
pub use error::StoreError;
pub use faults::SyncFaults;
pub use listing::{DocInfo, DocPage};
pub use manifest::Manifest;
pub use store::{Appended, CompactStats, Seq, Store};
pub use stored_state::StoredState;
