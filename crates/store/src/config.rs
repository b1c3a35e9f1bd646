//! `StoreConfig` and `Durability`: every knob of the store, with its default.

use std::path::PathBuf;

/// Default bound of sled's page cache: 64 MiB (sled's own default is 1 GiB,
/// and its real RSS overshoots the bound, so we keep it modest).
pub const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// Default log length (records) after which a document wants compaction.
pub const DEFAULT_COMPACT_AFTER_UPDATES: u64 = 1_000;

/// Default log size (bytes of stored records) after which a document wants
/// compaction: 1 MiB.
pub const DEFAULT_COMPACT_AFTER_BYTES: u64 = 1024 * 1024;

/// Default minimum size of the log relative to the snapshot, in percent,
/// before a document wants compaction: 100 (the log must have grown to the
/// snapshot's size), which keeps the total compaction work linear in the
/// bytes written instead of quadratic.
pub const DEFAULT_COMPACT_MIN_LOG_PERCENT: u64 = 100;

/// When an append counts as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `append`'s ticket resolves only after the record is flushed to disk
    /// (sled flush + `fdatasync`), shared across concurrent appends (group
    /// commit). See the crate docs for the exact promise.
    #[default]
    Flush,
    /// `append`'s ticket resolves once the record is queued for the
    /// write-ahead log; the log is written and synced every
    /// `flush_every_ms` (earlier past 1 MiB queued). Window of loss on a
    /// crash: that interval (plus the sync's own duration).
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
    /// sled page cache bound in bytes. Default [`DEFAULT_CACHE_BYTES`].
    pub cache_bytes: u64,
    /// Durability mode. Default [`Durability::Flush`].
    pub durability: Durability,
    /// Keep deleted content (no yrs GC) in every document the store creates,
    /// including the documents compaction builds, so version history can be
    /// restored later. Default `false`.
    pub skip_gc: bool,
    /// Compact a document once its log holds this many updates...
    /// Default [`DEFAULT_COMPACT_AFTER_UPDATES`].
    pub compact_after_updates: u64,
    /// ...or this many bytes. Default [`DEFAULT_COMPACT_AFTER_BYTES`].
    pub compact_after_bytes: u64,
    /// ...and, in both cases, only once the log's bytes are at least this
    /// percentage of the snapshot's bytes (0 = no such condition). Each
    /// compaction rewrites the whole snapshot, so this keeps large documents
    /// from being rewritten for every small log. Default
    /// [`DEFAULT_COMPACT_MIN_LOG_PERCENT`].
    pub compact_min_log_percent: u64,
    /// Fault injection at the disk-sync boundary, for tests only. Default
    /// `None`.
    pub sync_faults: Option<crate::SyncFaults>,
}

impl StoreConfig {
    /// Defaults for a data directory.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StoreConfig {
            path: path.into(),
            cache_bytes: DEFAULT_CACHE_BYTES,
            durability: Durability::Flush,
            skip_gc: false,
            compact_after_updates: DEFAULT_COMPACT_AFTER_UPDATES,
            compact_after_bytes: DEFAULT_COMPACT_AFTER_BYTES,
            compact_min_log_percent: DEFAULT_COMPACT_MIN_LOG_PERCENT,
            sync_faults: None,
        }
    }
}
