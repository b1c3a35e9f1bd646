//! `StoreError`: everything that can go wrong in the store.

use crate::{DocId, Seq};

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled reported an error (I/O, or corruption of its own files).
    #[error("storage engine error: {0}")]
    Sled(#[from] sled::Error),
    /// A file-system operation of the store itself failed.
    #[error("I/O error on the data directory: {0}")]
    Io(#[from] std::io::Error),
    /// A flush to disk failed. The store stops acknowledging writes after
    /// this (an fsync error cannot be retried safely); restart the process.
    #[error("flushing to disk failed, the store no longer accepts writes: {0}")]
    FlushFailed(String),
    /// A log record of a document cannot be read. Nothing is deleted: the
    /// record stays on disk for inspection; other documents are unaffected.
    #[error("document '{doc}': log record {seq} is corrupt: {reason}")]
    CorruptRecord {
        /// The document whose log holds the record.
        doc: DocId,
        /// The record's position in that log.
        seq: Seq,
        /// What failed (format version, yrs decode or apply error).
        reason: String,
    },
    /// The compacted snapshot of a document cannot be read (kept on disk).
    #[error("document '{doc}': snapshot is corrupt: {reason}")]
    CorruptSnapshot {
        /// The document.
        doc: DocId,
        /// What failed.
        reason: String,
    },
    /// An update handed to `import` is not a valid v1 update.
    #[error("document '{doc}': invalid update: {reason}")]
    InvalidUpdate {
        /// The document it was meant for.
        doc: DocId,
        /// The decode/apply error.
        reason: String,
    },
    /// Another process (or another `Store` in this one) has the data
    /// directory open.
    #[error("data directory {} is in use by another process (sled lock held)", path.display())]
    Locked {
        /// The data directory.
        path: std::path::PathBuf,
    },
    /// The storage engine's files are damaged in a way it cannot report as
    /// an error (sled panicked); nothing was changed.
    #[error("the data directory is damaged: {0}")]
    Damaged(String),
    /// sled's data file holds less than the store's manifest records (it
    /// was truncated, emptied or replaced). Nothing was changed.
    #[error("data directory {} holds less than its manifest records: {what}; {recovery}", path.display())]
    HoldsLess {
        /// The data directory.
        path: std::path::PathBuf,
        /// What is missing.
        what: String,
        /// The commands that recover it.
        recovery: String,
    },
    /// A write through a store opened with `Store::open_for_recovery`.
    #[error("this store was opened for recovery (check/salvage) and is never written")]
    ReadOnly,
    /// The data directory was written by a newer (or unknown) Tandem format.
    #[error(
        "data directory format version {found} is not supported (this build reads versions 1..={supported})"
    )]
    UnsupportedFormat {
        /// Version found in the directory's meta record.
        found: u32,
        /// Newest version this build understands.
        supported: u32,
    },
}
