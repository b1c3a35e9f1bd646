//! Flags that say where and how the store lives (shared by all commands).

use std::path::PathBuf;

use anyhow::Context;
use tandem_store::config::DEFAULT_COMPACT_MIN_LOG_PERCENT;
use tandem_store::{Durability, Store, StoreConfig};

/// How durable an update is when the server acknowledges it.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum DurabilityMode {
    /// Flushed to disk before it is broadcast (group commit). No loss on crash.
    Flush,
    /// Queued for the write-ahead log, which is synced every
    /// `--flush-every-ms`. A crash loses at most that window.
    Relaxed,
}

/// Data directory and store tuning.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// Directory holding the documents (created if missing).
    #[arg(long, env = "TANDEM_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// sled page cache size in MiB (default: the store's default).
    #[arg(long, env = "TANDEM_STORE_CACHE_MB")]
    pub store_cache_mb: Option<u64>,

    /// When an update counts as stored.
    #[arg(long, env = "TANDEM_DURABILITY", value_enum, default_value = "flush")]
    pub durability: DurabilityMode,

    /// Background flush interval for `--durability relaxed` (ms).
    #[arg(long, env = "TANDEM_FLUSH_EVERY_MS", default_value_t = 100)]
    pub flush_every_ms: u64,

    /// Automatic compaction waits until the update log is at least this % of
    /// the snapshot's size (0: no such condition).
    ///
    /// While a document is being edited, the server compacts it once its log
    /// passes 1000 updates or 1 MiB and, in addition, has grown to this
    /// percentage of the snapshot, so large documents are not rewritten for
    /// every small log (higher: fewer rewrites, longer logs to replay on
    /// load). `tandem compact` always compacts.
    #[arg(long, env = "TANDEM_COMPACT_MIN_LOG_PERCENT", default_value_t = DEFAULT_COMPACT_MIN_LOG_PERCENT)]
    pub compact_min_log_percent: u64,

    /// Keep deleted content in every document (no yrs garbage collection),
    /// including through compaction, so that past versions stay
    /// restorable. Documents then grow with their whole editing history.
    #[arg(long, env = "TANDEM_SKIP_GC")]
    pub skip_gc: bool,
}

impl StoreArgs {
    /// Opens the store (blocking).
    pub fn open(&self) -> anyhow::Result<Store> {
        let mut config = StoreConfig::new(&self.data_dir);
        if let Some(mb) = self.store_cache_mb {
            config.cache_bytes = mb * 1024 * 1024;
        }
        config.compact_min_log_percent = self.compact_min_log_percent;
        config.skip_gc = self.skip_gc;
        config.durability = match self.durability {
            DurabilityMode::Flush => Durability::Flush,
            DurabilityMode::Relaxed => Durability::Relaxed {
                flush_every_ms: self.flush_every_ms,
            },
        };
        Store::open(config)
            .with_context(|| format!("opening data directory {}", self.data_dir.display()))
    }
}
