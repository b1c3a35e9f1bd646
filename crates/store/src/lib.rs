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
//! - [`doc_id`]: `DocId`, the validated document name, and its error.
//! - [`config`]: `StoreConfig` and `Durability`, every knob with its default.
//! - [`error`]: `StoreError`, what can go wrong.
//! - [`records`]: key layout and record encoding (the on-disk format and
//!   its version numbers).
//! - `commit`: group commit, the flusher thread behind `Appended`.
//! - `doc_state`: per-document counters and locks, rebuilt from disk.
//! - `replay`: reading snapshot + log back into a `yrs::Doc`.
//! - `store`: `Store` itself, the sled backend.
//! - [`doc_store`]: `DocStore`, the same capabilities as a trait for other
//!   backends.
//!
//! Start with [`Store`] and [`StoreConfig`].
//!
//! # Durability promise
//!
//! With [`Durability::Flush`] (the default), when an [`Appended`] ticket
//! resolves Ok (and when `import`, `compact`, `delete` return Ok) the record
//! has been written by `sled::Db::flush` (which on Linux issues
//! `sync_file_range` for the written range) **and** sled's data file has
//! been `fdatasync`ed, which also persists the file's size and asks the
//! drive to flush its volatile write cache. The record therefore survives a
//! process crash, a kernel crash and a power loss, provided the drive honours
//! cache-flush commands. Concurrent appends share one flush (group commit).
//! If a flush ever fails, the store stops acknowledging writes
//! ([`StoreError::FlushFailed`]); restart the process.
//!
//! With [`Durability::Relaxed`]`{ flush_every_ms }` a ticket resolves as soon
//! as the record is in sled's in-memory buffers and the same flush runs every
//! `flush_every_ms`; a crash loses at most the updates of the last interval
//! (plus the duration of one flush). A process crash alone may lose them as
//! well, since sled buffers writes in user space.
//!
//! Values are split into ≤ 4000-byte chunks so that sled never moves them to
//! its separate blob files, which sled 0.34 does not fsync.
//!
//! # Compaction
//!
//! [`Store::compact`] merges snapshot + log into a new snapshot and, in the
//! same atomic sled batch, removes exactly the log records it merged, so a
//! crash leaves the old state or the new one, and appends racing a
//! compaction are kept. [`Store::needs_compaction`] says when a log passed
//! `compact_after_updates` (default 1000) records or `compact_after_bytes`
//! (default 1 MiB); the caller decides when to run it.
//!
//! # Bad data
//!
//! A log record that cannot be decoded or applied makes [`Store::load`]
//! (and `compact`, `export`) fail with [`StoreError::CorruptRecord`], which
//! names the document and the record's seq. Nothing is deleted, nothing
//! panics, other documents are unaffected, appends to the document still
//! work, and [`Store::load_lossy`] loads what is valid and lists the rest.
//!
//! # Format
//!
//! Data-dir format version [`records::DATA_FORMAT_VERSION`] and record
//! format version [`records::RECORD_VERSION`]; see [`records`] for the key
//! layout. `fixtures/store-v1/` holds a directory in format 1 that a test
//! opens, so later releases keep reading it.

pub mod config;
pub mod doc_id;
pub mod doc_store;
pub mod error;
pub mod records;

mod commit;
mod doc_state;
mod replay;
mod store;

pub use commit::CommitStats;
pub use config::{Durability, StoreConfig};
pub use doc_id::{DocId, InvalidDocId};
pub use doc_store::DocStore;
pub use error::StoreError;
pub use store::{Appended, CompactStats, DocInfo, Seq, Store};
