//! A fault-injecting seam at the disk-sync boundary, so tests can make the
//! store's syncs fail (as a full disk would) and heal again, without a real
//! full disk. Production code never sets one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A switch shared by a test and the store it configures (through
/// `StoreConfig::sync_faults`): while it is on, every disk sync fails with
/// `ENOSPC` before reaching sled, exactly where a real sync would fail.
#[derive(Debug, Clone, Default)]
pub struct SyncFaults {
    failing: Arc<AtomicBool>,
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

    /// The injected error when the switch is on.
    pub(crate) fn check(&self) -> std::io::Result<()> {
        if self.failing.load(Ordering::SeqCst) {
            Err(std::io::Error::from_raw_os_error(28)) // ENOSPC
        } else {
            Ok(())
        }
    }
}
