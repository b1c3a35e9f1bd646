//! Group commit: writes become durable in batches (rounds), run by the
//! write's own waiter when the log is free and by one flusher thread
//! otherwise; the flusher also brings the store back by itself after a
//! write fault.
//!
//! Every write that must become durable gets a *position* (a global
//! counter). With [`Durability::Flush`] a write is queued with its log
//! record ([`crate::wal`]); the flusher thread takes everything queued,
//! writes the records to the write-ahead log in one `write`, `fdatasync`s
//! it, publishes the highest position as *durable* (tickets resolve), then
//! applies the writes to sled in order and publishes them *applied*.
//! Readers wait for applied (`Ticket::wait`, `Ticket::wait_readable`), the
//! acknowledgement only for durable (`Ticket::wait_durable`, `wait_async`),
//! so an acknowledgement does not wait for sled's inserts (about a third of
//! the flusher's time). Writes that arrive meanwhile are covered by the
//! next round, so under load one sync serves many writes.
//!
//! # Who runs a round
//!
//! A waiter whose write is not durable yet *leads*: if no other round
//! holds the log (a `try_lock`), it runs the round on its own thread,
//! covering everything queued, and publishes it to every waiter
//! (`Shared::lead`). That saves the two thread hand-offs of a round run by
//! the flusher (a futex wake of the flusher, then the doorbell and a
//! worker's wake-up back), a large share of a sparse edit's CPU on this
//! project's 2-core VM: in the fan-out bench, CPU
//! per delivered update fell 15-20 % at 10 rooms × 5 clients and at 1 × 50
//! (interleaved A/B). An async waiter leads only on a multi-thread runtime
//! (on a current-thread one the sync would stop every task), after one
//! yield, so that the tasks that are ready run and their writes join its
//! round. Blocking waiters lead too. An async waiter does not lead while
//! the disk is slow: after a round whose log write and sync took longer
//! than [`SLOW_SYNC`], until a round is fast again, so a slow disk never
//! holds a runtime worker for each sync (with one worker, the default on
//! two cores, that would stop every room and connection for each sync).
//! The flusher still runs a round for:
//! - writes handed to it ([`Ticket::sync_in_background`]): a room in the
//!   middle of a stream keeps its task for the next batches while the
//!   flusher syncs, so the durable pipeline keeps both cores busy (leading
//!   there took the throughput stream from ~300k to ~200k updates/s);
//! - what was queued while a leader held the log (the leader wakes it when
//!   it lets go, so no write waits for a round that nobody runs);
//! - writes whose waiter is on a current-thread runtime, and writes nobody
//!   waits for (a ticket dropped unresolved wakes it);
//! - and always the checkpoints and the recovery, holding the log, so no
//!   leader blocks its worker on sled while sled flushes.
//!
//! Every publication happens under the state lock, so a leader and the
//! flusher publishing at once cannot leave an older value last. At 100
//! rooms × 10 clients (many writers at once) leading does not pay: CPU per
//! delivery stayed within 5 % of the flusher-only design.
//!
//! Every few
//! seconds (and past [`crate::wal::CHECKPOINT_BYTES`]) the flusher runs a
//! full [`DiskSync::sync`] of sled and empties the log. With
//! [`Durability::Relaxed`] a write is queued the same way and acknowledged
//! at once; the flusher runs the round on its timer (every
//! `flush_every_ms`), or early once [`RELAXED_ROUND_BYTES`] of records are
//! queued, and a reader leads one to read what is queued. Before, relaxed
//! mode applied each write to sled as a `sled::Batch` (sled's own log
//! written twice per batch, on its thread pool) and cost 1.6-1.8 times
//! flush mode's CPU per delivered update; now it costs about half of it
//! (fan-out bench, 10 × 5: 89-94 → 26-27 µs; 100 × 10: 42-43 → 17-18 µs).
//! Waiters use a
//! `tokio::sync::watch` (async) or a `Condvar` (blocking); neither needs a
//! runtime, so the store works from sync and async callers alike.
//!
//! # Deferred appends
//!
//! An append whose record fits in one chunk (a keystroke, a room's small
//! batch) is not inserted into sled after its round: it waits, durable in
//! the log, in a *deferred* list, and the next checkpoint inserts each
//! document's consecutive waiting records as batch records of at most one
//! chunk, with one metadata insert per document. Two sled inserts per
//! append were 14-15 % of the server's CPU in the fan-out bench; at 100
//! rooms × 10 clients a document gets ~10 appends per second, so most of
//! them become one insert per chunk of 4000 bytes.
//!
//! - Readers lose nothing: `applied` counts a deferred write as readable,
//!   and every wait for readable (`Ticket::wait`, `Ticket::wait_readable`,
//!   so every document read, listing and compaction) first applies the
//!   deferred writes up to its position, one by one as logged. Every other
//!   kind of write applies its own document's deferred appends before it
//!   (a compaction or delete never overtakes an append of its document;
//!   other documents' stay deferred).
//! - Crash safety: merging happens only in a checkpoint, holding the log,
//!   right before sled is flushed and the log emptied. Until the log is
//!   emptied it holds every merged append as logged, and replaying it
//!   rewrites each key the merge wrote (the run's first record, whose
//!   merged value is one chunk like the original, and the metadata), so a
//!   crash at any point opens with the unmerged layout, and the counters
//!   the log wrote. A document is merged only while its maintenance lock is
//!   free (held until the log is emptied: no compaction or delete reads a
//!   merged layout a replay would not reproduce) and nothing else of it is
//!   registered after its deferred appends (its metadata then counts
//!   exactly what sled holds: `log_bytes` is lowered by the bytes the merge
//!   saved, in the cached counters too). If the flush fails after a merge,
//!   the recovery reopens sled, which replays the log.
//! - A compaction up to a seq inside a merged record (a room compacts as of
//!   its last append) keeps the record's later updates as a record of their
//!   own (see `Store::compact_with`).
//! - Bounds: each deferred append holds its document's slot and its write
//!   in memory. Past [`DEFERRED_CHECKPOINT`] of them a checkpoint is due
//!   early; past [`MAX_DEFERRED`] a round applies the oldest as logged.
//!
//! In the fan-out bench (interleaved, four rounds, means) this took CPU
//! per delivery at 10 × 5 from 77.4 to 65.2 µs, at 1 × 50 from 12.3 to
//! 11.0 µs and at 100 × 10 from 30.0 to 26.6 µs; the durable stream was
//! unchanged (seven interleaved rounds: 204k against 203k updates/s). A
//! checkpoint due after fewer deferred appends saves less (256: 24.2 µs
//! at 100 × 10; 4096: 23.2 µs; 16384: 22.9 µs, against 27.1 unmerged in
//! those rounds), and more of them hold more slots in memory.
//!
//! # Faults
//!
//! A failed sync makes the store *failing*: every write registered and not
//! yet durable fails with [`StoreError::FlushFailed`] (none of them was
//! acknowledged), new writes are refused at once with the same error, and
//! reads keep working. The flusher then retries with exponential backoff
//! ([`RETRY_FIRST`] doubling to [`RETRY_MAX`]). sled 0.34 remembers an I/O
//! error forever (its "global error" fails every later operation, reads
//! included), so a retry first reopens sled when it reports such an error:
//! sled then recovers from its files exactly what was durable, which
//! includes every acknowledged write. After an fsync error the kernel may
//! have dropped the dirty pages of the writes that failed; those writes
//! were never acknowledged, and the reopen reads the truth from disk. A
//! write that is durable in the log but failed to reach sled was
//! acknowledged: the retry then always reopens sled, whose reopen replays
//! the log, and until then a read that would miss it fails instead. Once a
//! sync succeeds the store is writable again, with no restart.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use crate::doc_state::{DocSlot, DocState};
use crate::doorbell::Doorbell;
use crate::manifest::{CHECKPOINT_EVERY, Checkpoints};
use crate::records;
use crate::wal::{self, Ops, Wal};
use crate::{Durability, Seq, StoreError, SyncFaults};

/// First wait before retrying after a failed sync.
pub const RETRY_FIRST: Duration = Duration::from_millis(50);
/// Longest wait between retries.
pub const RETRY_MAX: Duration = Duration::from_secs(2);

/// A round whose log write and sync take longer than this marks the disk
/// slow: async waiters stop leading rounds (each would block a runtime
/// worker, with one worker the whole server, for its sync) and leave them
/// to the flusher thread until one of its rounds is fast again. Syncs on
/// SSDs and on this project's VM take 0.2-3 ms; a disk that stalls or
/// seeks (tens of ms) is better served by the flusher's larger rounds.
pub const SLOW_SYNC: Duration = Duration::from_millis(10);

/// Relaxed mode: queued log records past which the flusher runs a round
/// before its timer, so the queue's memory stays bounded whatever the rate.
const RELAXED_ROUND_BYTES: usize = 1 << 20;

/// Deferred appends past which a checkpoint is due (merging them) before
/// its time: each holds its document's slot in memory, and a checkpoint
/// costs about two syncs.
pub const DEFERRED_CHECKPOINT: usize = 1024;

/// Most deferred appends kept: past it a round applies the oldest as
/// logged, so the list's memory (and the slots it holds) stays bounded
/// while a checkpoint is on its way.
pub const MAX_DEFERRED: usize = 2 * DEFERRED_CHECKPOINT;

/// Locks a mutex, ignoring poisoning (no critical section here can leave
/// its data inconsistent when it panics).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether the store can write, for health checks (`/healthz`) and for
/// refusing new work while it cannot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreHealth {
    /// Writes succeed.
    Writable,
    /// Syncs fail; writes are refused, reads work, retries run.
    Failing {
        /// The error of the last failed sync or retry.
        reason: String,
        /// When the store started failing.
        since: SystemTime,
    },
}

/// The sled database (swappable: a retry after an I/O error reopens it)
/// and the strongest flush sled 0.34 allows, plus what it leaves out.
///
/// `sled::Db::flush` writes its dirty buffers and calls
/// `sync_file_range(WAIT_BEFORE|WRITE|WAIT_AFTER)` on Linux, which neither
/// flushes the drive's volatile write cache nor persists the file's size
/// after it grew. We follow it with `fdatasync` on sled's `db` file (an
/// fsync applies to the inode, whichever descriptor issues it), which does
/// both.
pub(crate) struct DiskSync {
    /// The open database; `None` only for the moment of a reopen.
    db: RwLock<Option<sled::Db>>,
    /// How to open it again.
    sled_config: sled::Config,
    /// The data directory.
    dir: PathBuf,
    /// Read-only handle on `<data dir>/db`, used only for `fdatasync`.
    db_file: File,
    /// Test seam: injected sync failures.
    faults: Option<SyncFaults>,
    /// Set when a write durable in the log failed to reach sled: the
    /// recovery then reopens sled (which replays the log) even if sled
    /// itself reports no error.
    apply_failed: std::sync::atomic::AtomicBool,
    /// Raised by every reopen: counters cached in memory from before it
    /// may count writes sled lost, so the store drops them.
    generation: std::sync::atomic::AtomicU64,
}

impl DiskSync {
    pub(crate) fn new(
        db: sled::Db,
        sled_config: sled::Config,
        dir: &Path,
        faults: Option<SyncFaults>,
    ) -> Result<Self, StoreError> {
        let db_file = File::open(dir.join("db"))?;
        // sled writes its `conf` file without fsync, and the directory
        // entries of its files must survive a power loss too.
        File::open(dir.join("conf"))?.sync_all()?;
        File::open(dir)?.sync_all()?;
        Ok(DiskSync {
            db: RwLock::new(Some(db)),
            sled_config,
            dir: dir.to_path_buf(),
            db_file,
            faults,
            apply_failed: std::sync::atomic::AtomicBool::new(false),
            generation: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// A handle on the database (cheap: sled's handle is shared).
    pub(crate) fn db(&self) -> Result<sled::Db, StoreError> {
        self.db
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| StoreError::FlushFailed("the storage engine is reopening".into()))
    }

    /// Makes every write that completed before this call durable.
    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        if let Some(faults) = &self.faults {
            faults.check()?;
        }
        self.db()?.flush()?;
        self.db_file.sync_data()?;
        Ok(())
    }

    /// True between a reopen's close and a successful open.
    fn is_closed(&self) -> bool {
        self.db.read().unwrap_or_else(|e| e.into_inner()).is_none()
    }

    /// Closes and reopens sled, which clears its remembered I/O error and
    /// recovers from its files what is durable.
    fn reopen(&self) -> Result<(), StoreError> {
        let mut db = self.db.write().unwrap_or_else(|e| e.into_inner());
        drop(db.take());
        match crate::open::open_sled(&self.sled_config, &self.dir) {
            Ok(fresh) => {
                // sled recovered what it had persisted; the log holds the
                // rest of what was acknowledged.
                wal::replay(&self.dir, &fresh)?;
                *db = Some(fresh);
                self.apply_failed
                    .store(false, std::sync::atomic::Ordering::SeqCst);
                self.generation
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tracing::info!(path = %self.dir.display(), "storage engine reopened after a write fault");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// Upper bounds, in seconds, of the buckets of [`SyncTimes`]: a sync on
/// an SSD or this project's VM takes 0.2-3 ms, a stalling disk tens to
/// hundreds.
pub const SYNC_SECONDS_BUCKETS: [f64; 11] = [
    0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// A histogram of durations in the buckets of [`SYNC_SECONDS_BUCKETS`]. As
/// `CommitStats::sync_times`: how long the log write and `fdatasync` of each
/// round took whose write and sync succeeded (what durability costs each
/// write in waiting, and how a disk stalls); it counts as many rounds as
/// `CommitStats::syncs` but for a round that failed after its sync
/// (applying it to sled). As `CommitStats::checkpoint_times`: how long each
/// checkpoint held the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncTimes {
    /// Rounds per bucket (not cumulative): `counts[i]` took at most
    /// `SYNC_SECONDS_BUCKETS[i]` and more than the bound before it; the
    /// last entry counts the rounds over the last bound.
    pub counts: [u64; SYNC_SECONDS_BUCKETS.len() + 1],
    /// Their total time, in microseconds.
    pub total_us: u64,
}

impl SyncTimes {
    /// Rounds counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// [`SyncTimes`] as it is counted: lock-free, one bump per round (or checkpoint).
#[derive(Default)]
struct SyncClock {
    counts: [AtomicU64; SYNC_SECONDS_BUCKETS.len() + 1],
    total_us: AtomicU64,
}

impl SyncClock {
    fn record(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let bucket = SYNC_SECONDS_BUCKETS
            .iter()
            .position(|&bound| secs <= bound)
            .unwrap_or(SYNC_SECONDS_BUCKETS.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.total_us.fetch_add(us, Ordering::Relaxed);
    }

    fn read(&self) -> SyncTimes {
        SyncTimes {
            counts: std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed)),
            total_us: self.total_us.load(Ordering::Relaxed),
        }
    }
}

/// Group-commit counters since the store was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Writes registered (appends, imports, compactions, deletes).
    pub writes: u64,
    /// Of those, how many are known durable.
    pub durable_writes: u64,
    /// Disk syncs the flusher ran; `durable_writes / syncs` is the mean
    /// group-commit batch size.
    pub syncs: u64,
    /// Of those, how many a waiter ran on its own thread (a lead) rather
    /// than the flusher thread.
    pub led: u64,
    /// Log records that checkpoints merged into their neighbours instead
    /// of inserting them into sled one by one (see "Deferred appends").
    pub merged_records: u64,
    /// How long each round's log write and sync took.
    pub sync_times: SyncTimes,
    /// How long each checkpoint (the deferred appends applied, sled
    /// flushed and synced, the log emptied; or the manifest written) held
    /// the log, on the flusher thread: every round, so every durable
    /// write, waits meanwhile. Counted when the checkpoint succeeded.
    pub checkpoint_times: SyncTimes,
}

/// Durable progress, as published to async waiters.
#[derive(Debug, Clone, Default)]
struct Progress {
    /// Every position <= this is durable.
    durable: u64,
    /// Positions in `durable + 1 ..= failed_upto` failed (not acknowledged).
    failed_upto: u64,
    /// Why the last sync failed (kept while the store is failing).
    reason: Option<Arc<str>>,
}

/// An append that may wait in the deferred list and be merged with the same
/// document's neighbours at a checkpoint: its write is exactly one
/// single-chunk log record (the write's first operation) and the
/// document's metadata record (its last); its document is the one whose
/// slot the write keeps.
pub(crate) struct Mergeable {
    /// Seq of the record's first update.
    pub(crate) first: Seq,
    /// Updates in the record.
    pub(crate) count: u64,
    /// The document's counters after this append (the metadata it writes).
    pub(crate) meta: DocState,
    /// Bytes of the record's value.
    pub(crate) stored: u64,
}

/// Consecutive deferred records of one document that a checkpoint writes
/// as one batch record of one chunk.
struct Run<'a> {
    /// The latest of the records' modification times.
    modified_ms: u64,
    /// The updates, in seq order.
    updates: Vec<&'a [u8]>,
    /// Bytes the records take in sled unmerged.
    stored: u64,
    /// Bytes of the merged payload (each update framed).
    framed: usize,
    /// The first record's key (the merged record's) and value, and how
    /// many records the run holds (a run of one keeps its record as it is).
    key: &'a [u8],
    original: &'a [u8],
    records: usize,
}

/// A write waiting in the queue for the flusher (write-ahead mode).
struct Queued {
    /// Its commit position.
    position: u64,
    /// The write, applied to sled once its log record is durable.
    ops: Ops,
    /// It creates a document (counted for the manifest once applied).
    creates: bool,
    /// `Some` for an append that may wait to be merged (see "Deferred
    /// appends").
    merge: Option<Mergeable>,
    /// The document's slot, kept alive until the write is applied (its
    /// counters must not be dropped before sled has them).
    keep: Arc<DocSlot>,
}

struct State {
    /// Highest position handed out.
    registered: u64,
    /// Every position <= this is applied to sled or waits in the deferred
    /// list (readable: a reader applies what it needs of that list first).
    /// With the write-ahead log a write is durable (and its ticket
    /// resolved) before it is applied, so this trails `progress.durable` by
    /// at most a round.
    applied: u64,
    /// `Some(p)` after an apply to sled failed: writes from position `p` on
    /// may be missing from sled until the recovery's reopen has replayed
    /// the log, so `applied` stays below `p` until then.
    unapplied_from: Option<u64>,
    /// Log records merged away by checkpoints (for `CommitStats`).
    merged_records: u64,
    /// Log records of the queued writes, in position order.
    queued_records: Vec<u8>,
    /// The queued writes, in position order.
    queued: Vec<Queued>,
    /// Syncs run (for `CommitStats`).
    syncs: u64,
    /// Of those, led by a waiter on its own thread.
    led: u64,
    progress: Progress,
    /// `Some` while the store is failing: since when.
    failing_since: Option<SystemTime>,
    shutdown: bool,
    /// The flusher is waiting on `work`: only then does a new write have
    /// to wake it (a `Condvar` notify is a syscall even with no waiter,
    /// and the flusher otherwise finds the write on its next round).
    flusher_waiting: bool,
    /// Threads blocked on `progressed` (readers waiting for applied):
    /// only then does a round have to notify it.
    blocked: usize,
    /// A round led by a waiter found the log due for a checkpoint, which
    /// only the flusher runs.
    checkpoint_wanted: bool,
    /// Relaxed mode: [`RELAXED_ROUND_BYTES`] are queued, the flusher runs
    /// a round before its timer.
    round_wanted: bool,
    /// When sled was last flushed and the log emptied.
    last_full: Instant,
}

struct Shared {
    sync: DiskSync,
    mode: Durability,
    /// The write-ahead log (`Some` with [`Durability::Flush`]); used by the
    /// flusher thread only.
    wal: Mutex<Option<Wal>>,
    /// Durable appends not applied to sled yet, in position order (see
    /// "Deferred appends"). Lock order: `wal`, then this, then `state`.
    deferred: Mutex<VecDeque<Queued>>,
    /// Periodic checkpoints of the manifest, run after successful syncs.
    checkpoints: Arc<Checkpoints>,
    state: Mutex<State>,
    /// Wakes the flusher when there is work (or shutdown).
    work: Condvar,
    /// Wakes blocking waiters when progress changes.
    progressed: Condvar,
    /// The same progress for async waiters.
    progress_tx: watch::Sender<Progress>,
    /// Hands `progress_tx`'s publications to a task of the waiters'
    /// runtime (see `doorbell`).
    doorbell: Doorbell<Progress>,
    /// The last round's log write and sync took longer than [`SLOW_SYNC`]:
    /// async waiters leave rounds to the flusher until one is fast again.
    slow_disk: AtomicBool,
    /// [`DEFERRED_CHECKPOINT`] appends are deferred: a checkpoint is due.
    crowded: AtomicBool,
    /// How long each round's log write and sync took, when they succeeded.
    sync_clock: SyncClock,
    /// How long each checkpoint held the log, when it succeeded.
    checkpoint_clock: SyncClock,
}

/// Owner of the flusher thread; dropping it flushes what is pending and
/// stops the thread.
pub(crate) struct GroupCommit {
    shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
}

/// A registered write waiting to become durable.
pub(crate) struct Ticket {
    shared: Arc<Shared>,
    position: u64,
    /// Whether an async wait may lead the round on its own thread (false
    /// once handed to the flusher, see [`Ticket::sync_in_background`]).
    lead: bool,
}

impl GroupCommit {
    pub(crate) fn start(
        sync: DiskSync,
        mode: Durability,
        checkpoints: Arc<Checkpoints>,
    ) -> Result<Self, StoreError> {
        let (progress_tx, _) = watch::channel(Progress::default());
        let wal = Some(Wal::open(&sync.dir)?);
        let shared = Arc::new(Shared {
            sync,
            mode,
            wal: Mutex::new(wal),
            deferred: Mutex::new(VecDeque::new()),
            checkpoints,
            state: Mutex::new(State {
                registered: 0,
                applied: 0,
                unapplied_from: None,
                merged_records: 0,
                queued_records: Vec::new(),
                queued: Vec::new(),
                syncs: 0,
                led: 0,
                progress: Progress::default(),
                failing_since: None,
                shutdown: false,
                flusher_waiting: false,
                blocked: 0,
                checkpoint_wanted: false,
                round_wanted: false,
                last_full: Instant::now(),
            }),
            work: Condvar::new(),
            progressed: Condvar::new(),
            progress_tx,
            doorbell: Doorbell::new(),
            slow_disk: AtomicBool::new(false),
            sync_clock: SyncClock::default(),
            checkpoint_clock: SyncClock::default(),
            crowded: AtomicBool::new(false),
        });
        let worker = Arc::clone(&shared);
        let flusher = std::thread::Builder::new()
            .name("tandem-store-flush".into())
            .spawn(move || flusher_loop(&worker))?;
        Ok(GroupCommit {
            shared,
            flusher: Some(flusher),
        })
    }

    /// The database handle (see [`DiskSync::db`]).
    pub(crate) fn db(&self) -> Result<sled::Db, StoreError> {
        self.shared.sync.db()
    }

    /// How many times sled was reopened after a fault.
    pub(crate) fn generation(&self) -> u64 {
        self.shared
            .sync
            .generation
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Stores one atomic write: with [`Durability::Flush`] queued for the
    /// flusher (applied to sled once its log record is durable), else
    /// applied to sled now. `keep` stays alive until the write is applied;
    /// `creates` counts a new document (for the manifest) once it is.
    /// Refused at once while the store is failing.
    pub(crate) fn write(
        &self,
        ops: Ops,
        creates: bool,
        merge: Option<Mergeable>,
        keep: Arc<DocSlot>,
    ) -> Result<Ticket, StoreError> {
        let mut state = lock(&self.shared.state);
        if let (Some(_), Some(reason)) = (&state.failing_since, &state.progress.reason) {
            return Err(StoreError::FlushFailed(reason.to_string()));
        }
        ops.encode_record(&mut state.queued_records);
        state.registered += 1;
        let position = state.registered;
        state.queued.push(Queued {
            position,
            ops,
            creates,
            merge,
            keep,
        });
        // No wake-up here: the ticket's waiter leads the round itself
        // (`Shared::lead`), or its drop wakes the flusher; in relaxed mode
        // the flusher's timer runs it, early once this much is queued.
        let early = self.shared.mode != Durability::Flush
            && state.queued_records.len() >= RELAXED_ROUND_BYTES
            && !state.round_wanted;
        state.round_wanted |= early;
        let wake = early && state.flusher_waiting;
        drop(state);
        if wake {
            self.shared.work.notify_one();
        }
        Ok(Ticket {
            shared: Arc::clone(&self.shared),
            position,
            lead: true,
        })
    }

    /// A ticket for everything registered so far (waiting on it waits for
    /// the writes before it: with a write-ahead log, until they are in sled).
    pub(crate) fn upto(&self, position: u64) -> Ticket {
        Ticket {
            shared: Arc::clone(&self.shared),
            position,
            lead: true,
        }
    }

    /// Fails fast while the store is failing.
    pub(crate) fn check_healthy(&self) -> Result<(), StoreError> {
        let state = lock(&self.shared.state);
        match (&state.failing_since, &state.progress.reason) {
            (Some(_), Some(reason)) => Err(StoreError::FlushFailed(reason.to_string())),
            _ => Ok(()),
        }
    }

    /// Whether the store can write now.
    pub(crate) fn health(&self) -> StoreHealth {
        let state = lock(&self.shared.state);
        match (state.failing_since, &state.progress.reason) {
            (Some(since), Some(reason)) => StoreHealth::Failing {
                reason: reason.to_string(),
                since,
            },
            _ => StoreHealth::Writable,
        }
    }

    /// Counters for metrics and benchmarks.
    pub(crate) fn stats(&self) -> CommitStats {
        let state = lock(&self.shared.state);
        CommitStats {
            writes: state.registered,
            durable_writes: state.progress.durable,
            syncs: state.syncs,
            led: state.led,
            merged_records: state.merged_records,
            sync_times: self.shared.sync_clock.read(),
            checkpoint_times: self.shared.checkpoint_clock.read(),
        }
    }

    /// Syncs on the calling thread, regardless of mode (after the queued
    /// writes are in sled). A failure makes the store failing (the flusher
    /// then retries). Never called by the flusher.
    pub(crate) fn sync_now(&self) -> Result<(), StoreError> {
        self.check_healthy()?;
        let registered = lock(&self.shared.state).registered;
        self.upto(registered).wait()?;
        let result = self.shared.sync.sync();
        if let Err(e) = &result {
            self.shared.fail(e);
        }
        result
    }
}

impl Shared {
    /// Records a failed sync: every write not durable yet fails, the store
    /// turns failing, and the flusher starts retrying.
    fn fail(&self, error: &StoreError) {
        let mut state = lock(&self.state);
        if state.failing_since.is_none() {
            tracing::error!(error = %error, "disk sync failed; writes are refused until a retry succeeds");
        }
        state.failing_since.get_or_insert_with(SystemTime::now);
        state.progress.failed_upto = state.registered;
        state.progress.reason = Some(error.to_string().into());
        self.publish(state, false);
        self.work.notify_one();
    }

    /// Writes the queued log records, syncs the log, publishes positions
    /// up to `target` durable (their tickets resolve), then applies the
    /// writes to sled in order (write-ahead mode; flusher thread only).
    /// Readers wait for `applied`, not `durable` (see [`Ticket::wait`]).
    ///
    /// When the log cannot be written or synced, the writes go back to the
    /// front of the queue: their tickets fail (nobody was told they are
    /// durable), and they are written again once the store recovers, so
    /// the store's counters, which already count them, stay true. Once the
    /// log holds them, a failure to apply them to sled is repaired by the
    /// recovery's reopen, which replays the log (`apply_failed` forces it).
    fn commit_logged(
        &self,
        wal: &mut Wal,
        target: u64,
        mut records: Vec<u8>,
        queued: Vec<Queued>,
        led: bool,
    ) -> Result<(), StoreError> {
        let started = Instant::now();
        let logged = match &self.sync.faults {
            Some(faults) => faults.check().map_err(StoreError::from),
            None => Ok(()),
        }
        .and_then(|()| wal.write(&mut records))
        .and_then(|()| wal.sync());
        let took = started.elapsed();
        self.slow_disk.store(took > SLOW_SYNC, Ordering::Relaxed);
        if logged.is_ok() {
            self.sync_clock.record(took);
        }
        if let Err(e) = logged {
            let mut state = lock(&self.state);
            let mut all = records;
            all.append(&mut state.queued_records);
            state.queued_records = all;
            let mut writes = queued;
            writes.append(&mut state.queued);
            state.queued = writes;
            return Err(e);
        }
        self.publish_durable(target, led);
        let mut deferred = lock(&self.deferred);
        let db = match self.sync.db() {
            Ok(db) => db,
            Err(e) => {
                let first = queued.first().map_or(target, |w| w.position);
                self.unapplied(first, &mut deferred);
                return Err(e);
            }
        };
        for write in queued {
            if write.merge.is_some() {
                deferred.push_back(write);
                continue;
            }
            // Anything else is applied after its document's deferred
            // appends (other documents' keys are disjoint from its own).
            self.drain_of(&db, &mut deferred, &write.keep)?;
            if let Err(e) = self.apply_one(&db, &write) {
                self.unapplied(write.position, &mut deferred);
                return Err(e);
            }
        }
        if let Some(over) = deferred.len().checked_sub(MAX_DEFERRED)
            && let Some(oldest) = deferred.get(over).map(|w| w.position - 1)
        {
            self.drain(&db, &mut deferred, oldest)?;
        }
        self.crowded
            .store(deferred.len() >= DEFERRED_CHECKPOINT, Ordering::Relaxed);
        Ok(())
    }

    /// Applies one write to sled, as logged.
    fn apply_one(&self, db: &sled::Db, write: &Queued) -> Result<(), StoreError> {
        if let Some(faults) = &self.sync.faults {
            faults.check_apply()?;
        }
        write.ops.apply_each(db)?;
        if write.creates {
            self.checkpoints.document_created();
        }
        Ok(())
    }

    /// Applies the deferred appends up to position `upto`, as logged (one
    /// by one), in order.
    fn drain(
        &self,
        db: &sled::Db,
        deferred: &mut VecDeque<Queued>,
        upto: u64,
    ) -> Result<(), StoreError> {
        while let Some(write) = deferred.pop_front() {
            if write.position > upto {
                deferred.push_front(write);
                break;
            }
            if let Err(e) = self.apply_one(db, &write) {
                self.unapplied(write.position, deferred);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Applies the deferred appends of the document whose slot is `slot`,
    /// as logged, in order; the others stay deferred.
    fn drain_of(
        &self,
        db: &sled::Db,
        deferred: &mut VecDeque<Queued>,
        slot: &Arc<DocSlot>,
    ) -> Result<(), StoreError> {
        let of_slot = |w: &Queued| Arc::ptr_eq(&w.keep, slot);
        if !deferred.iter().any(of_slot) {
            return Ok(());
        }
        let (own, others): (VecDeque<Queued>, VecDeque<Queued>) =
            deferred.drain(..).partition(of_slot);
        *deferred = others;
        for write in own {
            if let Err(e) = self.apply_one(db, &write) {
                self.unapplied(write.position, deferred);
                return Err(e);
            }
        }
        Ok(())
    }

    /// A reader's part: applies the deferred appends up to `upto` (the
    /// reader's position) before it reads sled. A failure makes the store
    /// failing (its recovery replays the log into sled).
    fn apply_deferred(&self, upto: u64) -> Result<(), StoreError> {
        let mut deferred = lock(&self.deferred);
        if deferred.front().is_none_or(|w| w.position > upto) {
            return Ok(());
        }
        let drained = self
            .sync
            .db()
            .and_then(|db| self.drain(&db, &mut deferred, upto));
        drop(deferred);
        drained.map_err(|e| {
            self.fail(&e);
            StoreError::FlushFailed(format!(
                "an acknowledged write is not readable until the store recovers ({e})"
            ))
        })
    }

    /// Records that writes from `position` on (and every deferred one) may
    /// be missing from sled: the deferred list is dropped (the log holds
    /// all of it), readers of them fail until the recovery has reopened
    /// sled, which replays the log.
    fn unapplied(&self, position: u64, deferred: &mut VecDeque<Queued>) {
        let first = deferred
            .front()
            .map_or(position, |w| w.position.min(position));
        deferred.clear();
        self.sync
            .apply_failed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let mut state = lock(&self.state);
        let from = state.unapplied_from.map_or(first, |p| p.min(first));
        state.unapplied_from = Some(from);
        state.applied = state.applied.min(from - 1);
    }

    /// Applies every deferred append to sled, merging each document's
    /// consecutive single-chunk records into batch records of at most one
    /// chunk where that is safe (see "Deferred appends"); a checkpoint's
    /// first step, holding the log. Returns the maintenance locks of the
    /// documents merged: they must be held until the log is emptied.
    fn apply_merged<'a>(
        &self,
        db: &sled::Db,
        writes: &'a [Queued],
    ) -> Result<Vec<MutexGuard<'a, ()>>, StoreError> {
        // Each document's writes, in position order, documents in order of
        // their first write.
        let mut order: Vec<*const DocSlot> = Vec::new();
        let mut groups: HashMap<*const DocSlot, Vec<&'a Queued>> = HashMap::new();
        for write in writes.iter().filter(|w| w.merge.is_some()) {
            let slot = Arc::as_ptr(&write.keep);
            groups
                .entry(slot)
                .or_insert_with(|| {
                    order.push(slot);
                    Vec::new()
                })
                .push(write);
        }
        let mut held = Vec::new();
        let mut merged_away = 0u64;
        for slot in order {
            let group = &groups[&slot];
            match self.merge_group(group) {
                Some((guard, ops, away)) => {
                    if let Some(faults) = &self.sync.faults {
                        faults.check_apply()?;
                    }
                    ops.apply_each(db)?;
                    for _ in group.iter().filter(|w| w.creates) {
                        self.checkpoints.document_created();
                    }
                    merged_away += away;
                    held.push(guard);
                }
                None => {
                    for write in group {
                        self.apply_one(db, write)?;
                    }
                }
            }
        }
        lock(&self.state).merged_records += merged_away;
        Ok(held)
    }

    /// The merged write of one document's deferred appends, with the
    /// document's maintenance lock and how many records it saves; `None`
    /// when they must be applied as logged: fewer than two, records that do
    /// not chain, a compaction or delete running, another write of the
    /// document registered after them, or its counters busy.
    fn merge_group<'a>(&self, group: &[&'a Queued]) -> Option<(MutexGuard<'a, ()>, Ops, u64)> {
        let (first, last): (&'a Queued, &'a Queued) = (group.first()?, group.last()?);
        let (Some(_), Some(tail)) = (&first.merge, &last.merge) else {
            return None;
        };
        if group.len() < 2 {
            return None;
        }
        let slot: &'a DocSlot = &first.keep;
        let meta_key = first.ops.last_key()?;
        let guard = slot.maintenance.try_lock().ok()?;
        // Runs of consecutive seqs whose batch fits in one chunk.
        let mut runs: Vec<Run<'a>> = Vec::new();
        let mut next_seq = None;
        for write in group {
            let merge = write.merge.as_ref()?;
            let (key, value) = write.ops.first_insert()?;
            let (header, payload) = records::decode_log_header(value).ok()?;
            if header.parts != 1 {
                return None;
            }
            let updates = records::record_updates(&header, payload).ok()?;
            let framed: usize = updates.iter().map(|u| 4 + u.len()).sum();
            match runs.last_mut() {
                Some(run)
                    if next_seq == Some(merge.first)
                        && run.framed + framed <= records::CHUNK_BYTES =>
                {
                    run.modified_ms = run.modified_ms.max(header.modified_ms);
                    run.updates.extend(updates);
                    run.stored += merge.stored;
                    run.framed += framed;
                    run.records += 1;
                }
                _ => runs.push(Run {
                    modified_ms: header.modified_ms,
                    updates,
                    stored: merge.stored,
                    framed,
                    key,
                    original: value,
                    records: 1,
                }),
            }
            next_seq = Some(merge.first + merge.count);
        }
        if runs.len() == group.len() {
            return None;
        }
        let mut ops = Ops::default();
        let mut saved = 0u64;
        for run in &runs {
            if run.records == 1 {
                ops.insert(run.key, run.original);
                continue;
            }
            let mut values = records::encode_log_batch(run.modified_ms, &run.updates);
            let value = values.pop()?;
            if !values.is_empty() {
                return None;
            }
            saved += run.stored.saturating_sub(value.len() as u64);
            ops.insert(run.key, value);
        }
        // The counters must count exactly what sled will hold: the cached
        // ones, and those of the document's appends registered since (queued
        // for the next round and not logged yet, as this thread holds the
        // log), are lowered by the bytes the merge saves. Anything else of
        // the document registered since leaves it unmerged.
        let mut counters = slot.state.try_lock().ok()?;
        let mut state = lock(&self.state);
        let later: Vec<usize> = (0..state.queued.len())
            .filter(|&i| Arc::ptr_eq(&state.queued[i].keep, &first.keep))
            .collect();
        let latest = match later.last() {
            Some(&i) => state.queued[i].merge.as_ref()?.meta,
            None => tail.meta,
        };
        if *counters != Some(latest) || later.iter().any(|&i| state.queued[i].merge.is_none()) {
            return None;
        }
        for &i in &later {
            let write = &mut state.queued[i];
            let merge = write.merge.as_mut()?;
            merge.meta.log_bytes = merge.meta.log_bytes.saturating_sub(saved);
            write.ops.set_value(meta_key, merge.meta.encode());
        }
        if !later.is_empty() {
            let mut encoded = Vec::with_capacity(state.queued_records.len());
            for write in &state.queued {
                write.ops.encode_record(&mut encoded);
            }
            state.queued_records = encoded;
        }
        drop(state);
        let mut cached = latest;
        cached.log_bytes = cached.log_bytes.saturating_sub(saved);
        *counters = Some(cached);
        drop(counters);
        let mut meta = tail.meta;
        meta.log_bytes = meta.log_bytes.saturating_sub(saved);
        ops.insert(meta_key, meta.encode());
        Some((guard, ops, (group.len() - runs.len()) as u64))
    }

    /// Publishes positions up to `target` durable (in the log, synced):
    /// their tickets resolve, while readers still wait until they are
    /// applied.
    fn publish_durable(&self, target: u64, led: bool) {
        let mut state = lock(&self.state);
        state.progress.durable = state.progress.durable.max(target);
        self.publish(state, led);
    }

    /// Publishes the progress in `state` to every waiter. Async waiters get
    /// it from this thread when `led` by a waiter inside a tokio runtime
    /// (where waking them is cheap), else through the doorbell's task when
    /// one listens. It happens under the state lock, so two threads
    /// publishing (a leading waiter and the flusher) cannot put an older
    /// value last.
    fn publish(&self, state: MutexGuard<'_, State>, led: bool) {
        let progress = state.progress.clone();
        if led && tokio::runtime::Handle::try_current().is_ok() {
            self.doorbell.publish_here(progress, |p| {
                self.progress_tx.send_replace(p);
            });
        } else if let Some(progress) = self.doorbell.ring(progress) {
            self.progress_tx.send_replace(progress);
        }
        let wake = state.blocked > 0;
        drop(state);
        if wake {
            self.progressed.notify_all();
        }
    }

    /// One write-ahead round on the calling thread, which holds the log:
    /// takes everything queued, logs and syncs it, publishes it durable and
    /// applies it to sled; `led` when a waiter runs it (not the flusher).
    /// False when nothing was queued (or the store is failing, when only
    /// the flusher's recovery writes).
    fn round(&self, wal: &mut Wal, led: bool) -> bool {
        let mut state = lock(&self.state);
        if state.failing_since.is_some() || state.queued.is_empty() {
            return false;
        }
        let target = state.registered;
        let records = std::mem::take(&mut state.queued_records);
        let queued = std::mem::take(&mut state.queued);
        drop(state);
        match self.commit_logged(wal, target, records, queued, led) {
            Ok(()) => self.succeed(target, led),
            Err(e) => self.fail(&e),
        }
        true
    }

    /// A waiter's fast path: runs a round on the calling thread if no other
    /// round holds the log, so the write becomes durable with no hand-off
    /// to the flusher thread and back. True when it ran one. What arrived
    /// meanwhile, and a checkpoint the log is due for, go to the flusher.
    fn lead(&self) -> bool {
        let mut guard = match self.wal.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return false,
        };
        let Some(wal) = guard.as_mut() else {
            return false;
        };
        let ran = self.round(wal, true);
        let len = wal.len();
        drop(guard);
        let mut state = lock(&self.state);
        let due = len >= wal::CHECKPOINT_BYTES
            || (len > 0 && state.last_full.elapsed() >= CHECKPOINT_EVERY)
            || self.crowded.load(Ordering::Relaxed);
        state.checkpoint_wanted |= due;
        let wake = state.flusher_waiting && (due || !state.queued.is_empty());
        drop(state);
        if wake {
            self.work.notify_one();
        }
        ran
    }

    /// Wakes the flusher for writes nobody will lead (a ticket dropped
    /// unresolved).
    fn kick(&self, position: u64) {
        let state = lock(&self.state);
        let open = position > state.progress.durable.max(state.progress.failed_upto);
        let wake = open && state.flusher_waiting && !state.queued.is_empty();
        drop(state);
        if wake {
            self.work.notify_one();
        }
    }

    /// Blocks on `progressed` until notified, counted in `blocked` so that
    /// rounds notify only when someone waits.
    fn wait_progress<'a>(&self, mut state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        state.blocked += 1;
        let mut state = self
            .progressed
            .wait(state)
            .unwrap_or_else(|e| e.into_inner());
        state.blocked -= 1;
        state
    }

    /// Applies the deferred appends (merged), flushes sled and empties the
    /// log once it is due (flusher thread only, holding the log). Says
    /// whether it did.
    fn checkpoint_log(&self, wal: &mut Wal) -> Result<bool, StoreError> {
        let last_full = {
            let mut state = lock(&self.state);
            state.checkpoint_wanted = false;
            state.last_full
        };
        let due = wal.len() >= wal::CHECKPOINT_BYTES
            || (wal.len() > 0 && last_full.elapsed() >= CHECKPOINT_EVERY)
            || self.crowded.load(Ordering::Relaxed);
        if due {
            self.empty_log(wal)?;
            lock(&self.state).last_full = Instant::now();
        }
        Ok(due)
    }

    /// Applies every deferred append (merged where it can), flushes sled
    /// and empties the log, holding the log. Until the log is emptied it
    /// still holds each merged append as logged, and a replay rewrites every
    /// key the merge wrote (the first record's only chunk, the metadata),
    /// so a crash anywhere in between opens with the unmerged layout; the
    /// merged documents' maintenance locks are held until then, so no
    /// compaction or delete is computed from a layout a replay would not
    /// reproduce. If the flush fails, sled is reopened (replaying the log)
    /// before anything is written again.
    fn empty_log(&self, wal: &mut Wal) -> Result<(), StoreError> {
        let mut deferred = lock(&self.deferred);
        let writes: Vec<Queued> = deferred.drain(..).collect();
        let merged = self
            .sync
            .db()
            .and_then(|db| self.apply_merged(&db, &writes));
        let held = match merged {
            Ok(held) => held,
            Err(e) => {
                let first = writes.first().map_or(u64::MAX, |w| w.position);
                self.unapplied(first, &mut deferred);
                return Err(e);
            }
        };
        self.crowded.store(false, Ordering::Relaxed);
        drop(deferred);
        let emptied = self.sync.sync().and_then(|()| wal.truncate());
        if emptied.is_err() && !held.is_empty() {
            // sled holds merged records the log does not describe.
            self.sync
                .apply_failed
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        drop(held);
        emptied
    }

    /// Records a successful round covering positions up to `target`:
    /// durable and applied to sled. Async waiters are woken only when the
    /// durable position or the health changed (`publish_durable` already
    /// told them of this round's writes).
    fn succeed(&self, target: u64, led: bool) {
        let mut state = lock(&self.state);
        let newly_durable = target > state.progress.durable;
        state.progress.durable = state.progress.durable.max(target);
        state.applied = state.applied.max(target);
        if let Some(from) = state.unapplied_from {
            state.applied = state.applied.min(from - 1);
        }
        state.syncs += 1;
        state.led += u64::from(led);
        let healed = state.failing_since.take().is_some();
        if healed {
            tracing::info!("disk syncs succeed again; the store accepts writes");
            state.progress.reason = None;
        }
        if newly_durable || healed {
            self.publish(state, led);
        } else {
            let wake = state.blocked > 0;
            drop(state);
            if wake {
                self.progressed.notify_all();
            }
        }
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        lock(&self.shared.state).shutdown = true;
        self.shared.work.notify_one();
        if let Some(flusher) = self.flusher.take() {
            let _ = flusher.join();
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.shared.mode == Durability::Flush {
            self.shared.kick(self.position);
        }
    }
}

impl Ticket {
    /// Whether the write is durable (or failed); `applied` also requires it
    /// to be in sled.
    fn outcome_at(
        &self,
        progress: &Progress,
        applied: Option<u64>,
    ) -> Option<Result<(), StoreError>> {
        let done = applied.unwrap_or(progress.durable);
        if done >= self.position {
            Some(Ok(()))
        } else if progress.failed_upto >= self.position {
            let reason = progress.reason.as_deref().unwrap_or("disk sync failed");
            Some(Err(StoreError::FlushFailed(reason.to_string())))
        } else {
            None
        }
    }

    /// The write's commit position.
    pub(crate) fn position(&self) -> u64 {
        self.position
    }

    fn outcome(&self, progress: &Progress) -> Option<Result<(), StoreError>> {
        self.outcome_at(progress, None)
    }

    /// Waits, blocking the thread, until the write is durable per the mode
    /// and applied to sled (readable): for the store's own reads and
    /// maintenance, which read sled next.
    pub(crate) fn wait(self) -> Result<(), StoreError> {
        self.wait_until(true)
    }

    /// Waits, blocking the thread, until the write is durable per the mode
    /// (it may not be applied to sled yet): for `Appended::wait_durable`.
    pub(crate) fn wait_durable(self) -> Result<(), StoreError> {
        self.wait_until(false)
    }

    /// Waits until a reader of sled sees the write: Ok once it is applied,
    /// and Ok too when it failed before becoming durable (it was never
    /// acknowledged: sled's state is the truth). Err when it is durable
    /// (acknowledged) but its apply to sled failed and the recovery has not
    /// replayed it yet: a read must fail rather than miss it.
    pub(crate) fn wait_readable(self) -> Result<(), StoreError> {
        self.block_until(|state| {
            if state.applied >= self.position {
                return Some(Ok(()));
            }
            if state.progress.failed_upto >= self.position {
                if state.progress.durable >= self.position {
                    return Some(Err(StoreError::FlushFailed(
                        "an acknowledged write is not readable until the store recovers".into(),
                    )));
                }
                return Some(Ok(()));
            }
            None
        })?;
        self.shared.apply_deferred(self.position)
    }

    /// Waits, blocking the thread, until the write is durable and in sled,
    /// leaving other writes' deferred appends deferred: for a write that is
    /// never deferred itself (a compaction), whose caller reads nothing
    /// after it.
    pub(crate) fn wait_applied(self) -> Result<(), StoreError> {
        self.block_until(|state| self.outcome_at(&state.progress, Some(state.applied)))
    }

    fn wait_until(self, applied: bool) -> Result<(), StoreError> {
        if self.shared.mode != Durability::Flush && !applied {
            // Relaxed: acknowledged once queued.
            return Ok(());
        }
        self.block_until(|state| {
            let applied = applied.then_some(state.applied);
            self.outcome_at(&state.progress, applied)
        })?;
        if applied {
            self.shared.apply_deferred(self.position)?;
        }
        Ok(())
    }

    /// Blocks until `done` answers, leading rounds on this thread while the
    /// log is free. Every change of progress happens under the state lock
    /// and notifies blocked threads, and `done` is checked under that lock
    /// before each wait, so no change is missed.
    fn block_until<R>(&self, done: impl Fn(&State) -> Option<R>) -> R {
        loop {
            if let Some(outcome) = done(&lock(&self.shared.state)) {
                return outcome;
            }
            if self.shared.lead() {
                continue;
            }
            let state = lock(&self.shared.state);
            if let Some(outcome) = done(&state) {
                return outcome;
            }
            drop(self.shared.wait_progress(state));
        }
    }

    /// Waits until the write is on disk, whatever the mode (in relaxed mode
    /// by leading a round early): for operations documented as durable on
    /// return.
    pub(crate) fn wait_synced(self) -> Result<(), StoreError> {
        self.wait()
    }

    /// Has the flusher thread make the write durable now, and the async
    /// wait only wait for it: for a caller with more work queued, which
    /// goes on with it meanwhile instead of spending the sync in a lead.
    pub(crate) fn sync_in_background(&mut self) {
        if self.lead && self.shared.mode == Durability::Flush {
            self.lead = false;
            self.shared.kick(self.position);
        }
    }

    /// Waits asynchronously until the write is durable per the mode,
    /// leading the round on this thread when the log is free (unless the
    /// write went to the flusher, see [`Ticket::sync_in_background`]).
    pub(crate) async fn wait_async(self) -> Result<(), StoreError> {
        if self.shared.mode != Durability::Flush {
            return Ok(());
        }
        let shared = Arc::downgrade(&self.shared);
        self.shared.doorbell.listen_from(move |progress| {
            if let Some(shared) = shared.upgrade() {
                shared.progress_tx.send_replace(progress);
            }
        });
        // Subscribed before the first check: a publication after it wakes
        // the wait below even if it came before the wait began.
        let mut rx = self.shared.progress_tx.subscribe();
        // On a current-thread runtime a lead would stop every task for the
        // sync: the flusher runs it instead.
        let mut lead = self.lead
            && !self.shared.slow_disk.load(Ordering::Relaxed)
            && tokio::runtime::Handle::try_current()
                .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if lead {
            // Let the tasks that are ready run first, so that their writes
            // join this round.
            tokio::task::yield_now().await;
        } else if self.lead {
            // (A ticket handed off was kicked by `sync_in_background`.)
            self.shared.kick(self.position);
        }
        loop {
            if let Some(outcome) = self.outcome(&lock(&self.shared.state).progress) {
                return outcome;
            }
            if lead && self.shared.slow_disk.load(Ordering::Relaxed) {
                // The disk turned slow meanwhile: no worker blocks in it.
                lead = false;
                self.shared.kick(self.position);
                continue;
            }
            if lead && self.shared.lead() {
                continue;
            }
            rx.changed()
                .await
                .map_err(|_| StoreError::FlushFailed("flusher stopped".into()))?;
        }
    }
}

/// Retries until a sync succeeds (or shutdown), reopening sled when it
/// remembers an I/O error. Returns false on shutdown.
fn recover(shared: &Shared) -> bool {
    let mut wait = RETRY_FIRST;
    loop {
        {
            let state = lock(&shared.state);
            let (state, _) = shared
                .work
                .wait_timeout_while(state, wait, |s| !s.shutdown)
                .unwrap_or_else(|e| e.into_inner());
            if state.shutdown {
                return false;
            }
        }
        // Cut log records written after the last good sync (never
        // acknowledged) first; then sled, reopened if it remembers an error.
        let reset = || match lock(&shared.wal).as_mut() {
            Some(wal) => wal.reset(),
            None => Ok(()),
        };
        let reopen_and_sync = || {
            // The reopen replays the log, which holds every deferred
            // append: sled has them all then.
            let mut deferred = lock(&shared.deferred);
            shared.sync.reopen()?;
            deferred.clear();
            lock(&shared.state).unapplied_from = None;
            drop(deferred);
            shared.sync.sync()
        };
        let attempt = if let Err(e) = reset() {
            Err(e)
        } else if shared.sync.is_closed()
            || shared
                .sync
                .apply_failed
                .load(std::sync::atomic::Ordering::SeqCst)
        {
            // An earlier reopen failed half-way (sled closed, not reopened),
            // or durable writes did not all reach sled.
            reopen_and_sync()
        } else {
            shared.sync.sync().or_else(|e| match e {
                // sled's remembered error (or a failed flush of its own):
                // only a reopen clears it.
                StoreError::Sled(_) => reopen_and_sync(),
                other => Err(other),
            })
        };
        match attempt {
            Ok(()) => {
                // What the failed rounds left queued is written by the next
                // round, which then publishes it durable.
                // The reopen replayed the log: every durable write is in sled.
                let durable = lock(&shared.state).progress.durable;
                shared.succeed(durable, false);
                return true;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?wait, "disk sync still failing");
                let mut state = lock(&shared.state);
                state.progress.failed_upto = state.registered;
                state.progress.reason = Some(e.to_string().into());
                shared.publish(state, false);
                wait = (wait * 2).min(RETRY_MAX);
            }
        }
    }
}

fn flusher_loop(shared: &Shared) {
    let interval = match shared.mode {
        Durability::Flush => None,
        Durability::Relaxed { flush_every_ms } => {
            Some(Duration::from_millis(flush_every_ms.max(1)))
        }
    };
    loop {
        let mut state = lock(&shared.state);
        loop {
            if state.failing_since.is_some() {
                break;
            }
            // Writes put back by a failed round count although their
            // positions are marked failed.
            let pending = state.registered > state.progress.durable.max(state.progress.failed_upto)
                || !state.queued.is_empty();
            if state.shutdown && !pending {
                drop(state);
                // Clean shutdown: sled holds everything, the log nothing.
                if let Some(wal) = lock(&shared.wal).as_mut()
                    && wal.len() > 0
                {
                    let _ = shared.empty_log(wal);
                }
                return;
            }
            if (pending && (interval.is_none() || state.shutdown || state.round_wanted))
                || state.checkpoint_wanted
            {
                break;
            }
            state.flusher_waiting = true;
            state = match interval {
                None => shared.work.wait(state).unwrap_or_else(|e| e.into_inner()),
                Some(every) => {
                    let (mut guard, timeout) = shared
                        .work
                        .wait_timeout(state, every)
                        .unwrap_or_else(|e| e.into_inner());
                    guard.flusher_waiting = false;
                    if timeout.timed_out()
                        && (guard.registered
                            > guard.progress.durable.max(guard.progress.failed_upto)
                            || !guard.queued.is_empty())
                    {
                        state = guard;
                        break;
                    }
                    guard
                }
            };
            state.flusher_waiting = false;
        }
        if state.failing_since.is_some() {
            drop(state);
            if !recover(shared) {
                return;
            }
            continue;
        }
        state.round_wanted = false;
        drop(state);
        // A waiter may have led the round meanwhile: then this one finds
        // nothing queued. The checkpoints after it hold the log too, so no
        // waiter leads a round (and blocks its runtime's worker on sled)
        // while sled flushes.
        let mut wal = lock(&shared.wal);
        if let Some(wal) = wal.as_mut() {
            shared.round(wal, false);
        }
        let state = lock(&shared.state);
        let (failing, durable) = (state.failing_since.is_some(), state.progress.durable);
        drop(state);
        if failing {
            continue;
        }
        // How long the checkpoints below hold the log (rounds wait).
        let started = Instant::now();
        let emptied = match wal.as_mut().map(|wal| shared.checkpoint_log(wal)) {
            Some(Err(e)) => {
                shared.fail(&e);
                continue;
            }
            Some(Ok(emptied)) => emptied,
            None => false,
        };
        let manifest = match shared.sync.db() {
            Ok(db) => match shared
                .checkpoints
                .maybe(&db, durable, || shared.sync.sync())
            {
                Ok(ran) => ran,
                Err(e) => {
                    tracing::warn!(error = %e, "checkpoint failed; the previous manifest stays");
                    false
                }
            },
            Err(_) => false,
        };
        if emptied || manifest {
            shared.checkpoint_clock.record(started.elapsed());
        }
    }
}
