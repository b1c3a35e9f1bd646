//! A fault-injecting seam at the disk-sync boundary, so tests can make the
//! store's syncs fail (as a full disk would) and heal again, without a real
//! full disk, or hold them (as a slow disk would) and let them go. Production
//! code never sets one.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// A switch shared by a test and the store it configures (through
/// `StoreConfig::sync_faults`): while it is on, every disk sync fails with
/// `ENOSPC` before reaching sled, exactly where a real sync would fail.
#[derive(Debug, Clone, Default)]
pub struct SyncFaults {
    failing: Arc<AtomicBool>,
    /// While true, a sync waits before reaching the disk.
    held: Arc<(Mutex<bool>, Condvar)>,
    /// Syncs waiting in a hold right now.
    waiting: Arc<AtomicUsize>,
    /// The next apply of a durable write to sled fails (once).
    apply: Arc<AtomicBool>,
}

impl SyncFaults {
    /// A switch that is off.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every following sync fail (until [`SyncFaults::heal`]).
    pub fn fail(&self) {
        self.failing.store(true, Ordering::SeqCst);
    }

    /// Lets syncs reach the disk again.
    pub fn heal(&self) {
        self.failing.store(false, Ordering::SeqCst);
    }

    /// Makes the next apply of a logged, synced (so acknowledged) write to
    /// sled fail once, as a sled I/O error would: the store must still
    /// serve it, through the recovery's replay of the log.
    pub fn fail_next_apply(&self) {
        self.apply.store(true, Ordering::SeqCst);
    }

    /// The injected error of [`SyncFaults::fail_next_apply`], once.
    pub(crate) fn check_apply(&self) -> std::io::Result<()> {
        if self.apply.swap(false, Ordering::SeqCst) {
            Err(std::io::Error::from_raw_os_error(5)) // EIO
        } else {
            Ok(())
        }
    }

    /// Makes every following sync wait before it reaches the disk (a slow
    /// disk), until [`SyncFaults::release`].
    pub fn hold(&self) {
        *crate::commit::lock(&self.held.0) = true;
    }

    /// Lets held syncs (and every later one) go on.
    pub fn release(&self) {
        *crate::commit::lock(&self.held.0) = false;
        self.held.1.notify_all();
    }

    /// How many syncs wait in a hold right now (a test knows a sync has
    /// begun, and on which thread, by it).
    pub fn held_syncs(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Waits while syncs are held, then the injected error when the switch
    /// is on.
    pub(crate) fn check(&self) -> std::io::Result<()> {
        let (held, released) = &*self.held;
        let mut guard = crate::commit::lock(held);
        if *guard {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            while *guard {
                guard = released.wait(guard).unwrap_or_else(|e| e.into_inner());
            }
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
        drop(guard);
        if self.failing.load(Ordering::SeqCst) {
            Err(std::io::Error::from_raw_os_error(28)) // ENOSPC
        } else {
            Ok(())
        }
    }
}
