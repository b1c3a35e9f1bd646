//! tandem-store: the durable home of Tandem's documents.
//!
//! API CONTRACT (fixed so the gateway can be built in parallel; the store
//! helper replaces this stub with the real implementation and real docs).

use std::path::PathBuf;
use std::time::SystemTime;

/// A validated document id: 1-128 chars of `A-Z a-z 0-9 . _ -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocId(String);

impl DocId {
    /// Validates `id`; the error says what is allowed.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidDocId> {
        let _ = id.into();
        todo!()
    }
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a document id was rejected (message is shown to users verbatim).
#[derive(Debug, thiserror::Error)]
#[error("document id '{id}' is invalid: only A-Z a-z 0-9 . _ - allowed, 1-128 chars")]
pub struct InvalidDocId {
    /// The rejected input.
    pub id: String,
}

/// When an append counts as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `append` returns only after the record is flushed to disk (group commit).
    #[default]
    Flush,
    /// `append` returns once written to sled's buffers; a background flush runs
    /// every `flush_every_ms`. Window of loss on crash: that interval.
    Relaxed {
        /// Interval of the background flush.
        flush_every_ms: u64,
    },
}

/// Store options; `StoreConfig::new(path)` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Data directory (created if missing).
    pub path: PathBuf,
    /// sled page cache bound in bytes.
    pub cache_bytes: u64,
    /// Durability mode.
    pub durability: Durability,
    /// Keep deleted content (no yrs GC) in every document the store creates.
    pub skip_gc: bool,
    /// Compact a document once its log holds this many updates...
    pub compact_after_updates: u64,
    /// ...or this many bytes.
    pub compact_after_bytes: u64,
}

impl StoreConfig {
    /// Defaults for a data directory.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let _ = path.into();
        todo!()
    }
}

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Placeholder.
    #[error("todo")]
    Todo,
}

/// Position of an update in a document's log.
pub type Seq = u64;

/// One row of `Store::list`.
#[derive(Debug, Clone)]
pub struct DocInfo {
    /// The document.
    pub id: DocId,
    /// Bytes stored (snapshot + log).
    pub size_bytes: u64,
    /// Updates ever appended (including those merged into the snapshot).
    pub update_count: u64,
    /// Updates still in the log (not yet compacted).
    pub log_len: u64,
    /// Last append, import or compaction.
    pub last_modified: SystemTime,
}

/// Result of `Store::compact`.
#[derive(Debug, Clone, Copy)]
pub struct CompactStats {
    /// Log records merged and removed.
    pub merged_updates: u64,
    /// Snapshot size after compaction.
    pub snapshot_bytes: u64,
}

/// Ticket for an append: await it to know the record is durable.
#[must_use = "an append is not durable until its ticket resolves"]
pub struct Appended {
    /// Position assigned to the record.
    pub seq: Seq,
}

impl Appended {
    /// Resolves once the record is durable (per `Durability`).
    pub async fn durable(self) -> Result<Seq, StoreError> {
        todo!()
    }
    /// Blocking twin of `durable`, for non-async callers.
    pub fn wait_durable(self) -> Result<Seq, StoreError> {
        todo!()
    }
}

/// The document store. Cheap to clone (shared handle); Send + Sync.
#[derive(Clone)]
pub struct Store {}

impl Store {
    /// Opens (or creates) a data directory.
    pub fn open(config: StoreConfig) -> Result<Store, StoreError> {
        let _ = config;
        todo!()
    }
    /// Loads a document (snapshot + log replay) into a fresh `yrs::Doc`
    /// (created with the store's GC option). A missing document loads empty.
    /// Blocking: call from `spawn_blocking` in async code.
    pub fn load(&self, doc: &DocId) -> Result<yrs::Doc, StoreError> {
        let _ = doc;
        todo!()
    }
    /// Appends one v1 update to the document's log. The record is written
    /// (and its `Seq` assigned, in call order) before this returns; the
    /// returned ticket resolves once the record is stored per `Durability`.
    /// Appends whose tickets are awaited together share one flush (group
    /// commit). Does not validate the update: callers apply it first.
    pub fn append(&self, doc: &DocId, update: &[u8]) -> Result<Appended, StoreError> {
        let _ = (doc, update);
        todo!()
    }
    /// True when the document's log passed a compaction threshold.
    pub fn needs_compaction(&self, doc: &DocId) -> bool {
        let _ = doc;
        todo!()
    }
    /// Merges the log into a new snapshot atomically. Blocking.
    pub fn compact(&self, doc: &DocId) -> Result<CompactStats, StoreError> {
        let _ = doc;
        todo!()
    }
    /// Every stored document.
    pub fn list(&self) -> Result<Vec<DocInfo>, StoreError> {
        todo!()
    }
    /// Info for one document, `None` if it has never been written.
    pub fn info(&self, doc: &DocId) -> Result<Option<DocInfo>, StoreError> {
        let _ = doc;
        todo!()
    }
    /// Removes a document entirely (durable on return).
    pub fn delete(&self, doc: &DocId) -> Result<bool, StoreError> {
        let _ = doc;
        todo!()
    }
    /// The document's full state as one v1 update.
    pub fn export(&self, doc: &DocId) -> Result<Vec<u8>, StoreError> {
        let _ = doc;
        todo!()
    }
    /// Merges a v1 update into a document (validated first; durable on return).
    pub fn import(&self, doc: &DocId, update: &[u8]) -> Result<(), StoreError> {
        let _ = (doc, update);
        todo!()
    }
    /// Flushes everything to disk (used at shutdown).
    pub fn flush(&self) -> Result<(), StoreError> {
        todo!()
    }
}
