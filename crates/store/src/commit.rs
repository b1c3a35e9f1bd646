//! Group commit: one flusher thread makes appends durable in batches.
//!
//! Every write that must become durable registers after its sled insert and
//! gets a *position* (a global counter). The flusher thread takes the highest
//! registered position, runs one [`DiskSync::sync`], and publishes that
//! position as durable. Writes that arrive while a sync runs are covered by
//! the next one, so under load one sync serves many appends. Waiters use a
//! `tokio::sync::watch` (async) or a `Condvar` (blocking); neither needs a
//! runtime, so the store works from sync and async callers alike.
//!
//! A failed sync poisons the committer: pending and later tickets fail with
//! [`StoreError::FlushFailed`]. After an fsync error the kernel may have
//! dropped the dirty pages, so retrying could falsely report success.

use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::watch;

use crate::manifest::Checkpoints;
use crate::{Durability, StoreError};

/// Locks a mutex, ignoring poisoning (no critical section here can leave
/// its data inconsistent when it panics).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The strongest flush sled 0.34 allows, plus what it leaves out.
///
/// `sled::Db::flush` writes its dirty buffers and calls
/// `sync_file_range(WAIT_BEFORE|WRITE|WAIT_AFTER)` on Linux, which neither
/// flushes the drive's volatile write cache nor persists the file's size
/// after it grew. We follow it with `fdatasync` on sled's `db` file (an
/// fsync applies to the inode, whichever descriptor issues it), which does
/// both.
pub(crate) struct DiskSync {
    db: sled::Db,
    /// Read-only handle on `<data dir>/db`, used only for `fdatasync`.
    db_file: File,
}

impl DiskSync {
    pub(crate) fn new(db: sled::Db, dir: &Path) -> Result<Self, StoreError> {
        let db_file = File::open(dir.join("db"))?;
        // sled writes its `conf` file without fsync, and the directory
        // entries of its files must survive a power loss too.
        File::open(dir.join("conf"))?.sync_all()?;
        File::open(dir)?.sync_all()?;
        Ok(DiskSync { db, db_file })
    }

    /// Makes every write that completed before this call durable.
    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        self.db_file.sync_data()?;
        Ok(())
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
}

/// Durable progress, as published to async waiters.
#[derive(Debug, Clone, Default)]
struct Progress {
    /// Every position <= this is durable.
    durable: u64,
    /// Set once a sync failed; nothing registered after `durable` will be.
    failed: Option<Arc<str>>,
}

struct State {
    /// Highest position handed out.
    registered: u64,
    /// Syncs run by the flusher (for `CommitStats`).
    syncs: u64,
    progress: Progress,
    shutdown: bool,
}

struct Shared {
    sync: DiskSync,
    mode: Durability,
    /// Periodic checkpoints of the manifest, run after successful syncs.
    checkpoints: Arc<Checkpoints>,
    state: Mutex<State>,
    /// Wakes the flusher when there is work (or shutdown).
    work: Condvar,
    /// Wakes blocking waiters when progress changes.
    progressed: Condvar,
    /// The same progress for async waiters.
    progress_tx: watch::Sender<Progress>,
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
}

impl GroupCommit {
    pub(crate) fn start(
        sync: DiskSync,
        mode: Durability,
        checkpoints: Arc<Checkpoints>,
    ) -> Result<Self, StoreError> {
        let (progress_tx, _) = watch::channel(Progress::default());
        let shared = Arc::new(Shared {
            sync,
            mode,
            checkpoints,
            state: Mutex::new(State {
                registered: 0,
                syncs: 0,
                progress: Progress::default(),
                shutdown: false,
            }),
            work: Condvar::new(),
            progressed: Condvar::new(),
            progress_tx,
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

    /// Registers a write whose sled insert has completed.
    pub(crate) fn register(&self) -> Ticket {
        let mut state = lock(&self.shared.state);
        state.registered += 1;
        let position = state.registered;
        drop(state);
        if self.shared.mode == Durability::Flush {
            self.shared.work.notify_one();
        }
        Ticket {
            shared: Arc::clone(&self.shared),
            position,
        }
    }

    /// Fails fast when an earlier sync failed.
    pub(crate) fn check_healthy(&self) -> Result<(), StoreError> {
        match &lock(&self.shared.state).progress.failed {
            Some(msg) => Err(StoreError::FlushFailed(msg.to_string())),
            None => Ok(()),
        }
    }

    /// Counters for metrics and benchmarks.
    pub(crate) fn stats(&self) -> CommitStats {
        let state = lock(&self.shared.state);
        CommitStats {
            writes: state.registered,
            durable_writes: state.progress.durable,
            syncs: state.syncs,
        }
    }

    /// Syncs on the calling thread, regardless of mode.
    pub(crate) fn sync_now(&self) -> Result<(), StoreError> {
        self.check_healthy()?;
        self.shared.sync.sync()
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

impl Ticket {
    fn outcome(&self, progress: &Progress) -> Option<Result<(), StoreError>> {
        if progress.durable >= self.position {
            Some(Ok(()))
        } else {
            progress
                .failed
                .as_ref()
                .map(|msg| Err(StoreError::FlushFailed(msg.to_string())))
        }
    }

    /// Waits, blocking the thread, until the write is durable per the mode.
    pub(crate) fn wait(self) -> Result<(), StoreError> {
        if self.shared.mode != Durability::Flush {
            return Ok(());
        }
        let mut state = lock(&self.shared.state);
        loop {
            if let Some(outcome) = self.outcome(&state.progress) {
                return outcome;
            }
            state = self
                .shared
                .progressed
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Waits until the write is on disk, whatever the mode (in relaxed mode
    /// by syncing on the calling thread): for operations documented as
    /// durable on return.
    pub(crate) fn wait_synced(self) -> Result<(), StoreError> {
        if self.shared.mode == Durability::Flush {
            self.wait()
        } else {
            self.shared.sync.sync()
        }
    }

    /// Waits asynchronously until the write is durable per the mode.
    pub(crate) async fn wait_async(self) -> Result<(), StoreError> {
        if self.shared.mode != Durability::Flush {
            return Ok(());
        }
        let mut rx = self.shared.progress_tx.subscribe();
        let progress = rx
            .wait_for(|p| self.outcome(p).is_some())
            .await
            .map_err(|_| StoreError::FlushFailed("flusher stopped".into()))?
            .clone();
        self.outcome(&progress).unwrap_or(Ok(()))
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
            let pending = state.registered > state.progress.durable;
            if state.progress.failed.is_some() {
                return;
            }
            if state.shutdown && !pending {
                return;
            }
            if pending && (interval.is_none() || state.shutdown) {
                break;
            }
            state = match interval {
                None => shared.work.wait(state).unwrap_or_else(|e| e.into_inner()),
                Some(every) => {
                    let (guard, timeout) = shared
                        .work
                        .wait_timeout(state, every)
                        .unwrap_or_else(|e| e.into_inner());
                    if timeout.timed_out() && guard.registered > guard.progress.durable {
                        state = guard;
                        break;
                    }
                    guard
                }
            };
        }
        let target = state.registered;
        drop(state);

        let result = shared.sync.sync();

        let mut state = lock(&shared.state);
        match result {
            Ok(()) => {
                state.progress.durable = target;
                state.syncs += 1;
            }
            Err(e) => {
                tracing::error!(error = %e, "flush failed; store stops acknowledging writes");
                state.progress.failed = Some(e.to_string().into());
            }
        }
        let progress = state.progress.clone();
        drop(state);
        shared.progressed.notify_all();
        shared.progress_tx.send_replace(progress.clone());
        if progress.failed.is_none()
            && let Err(e) = shared
                .checkpoints
                .maybe(&shared.sync.db, target, || shared.sync.sync())
        {
            tracing::warn!(error = %e, "checkpoint failed; the previous manifest stays");
        }
    }
}
