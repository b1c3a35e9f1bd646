//! Opening a data directory safely: what the store does before and around
//! `sled::Config::open`, because sled 0.34 cannot be trusted to do it.
//!
//! - **Stale snapshot files.** sled writes `snap.<lsn>.generating`, fsyncs
//!   it and renames it to `snap.<lsn>`. A crash before the rename leaves the
//!   `.generating` file, and the next open reads it as the newest snapshot
//!   and refuses the directory ("Read corrupted data"). Such files are
//!   renamed to `set-aside.snap.<lsn>.generating.<unix ms>` (sled considers
//!   only names starting with `snap.`), never deleted, and logged. This runs
//!   only while we hold the same `flock` sled takes on `db`, so a running
//!   server's in-progress snapshot is never touched.
//! - **A torn first start.** sled writes its `conf` file without making it
//!   atomic, once, when it creates the directory. A kill at that moment
//!   leaves a `conf` that fails its checksum, and every later open is
//!   refused. A directory that sled reads as corrupt but that this store
//!   never opened (no manifest and no write-ahead log, which every open
//!   creates before it acknowledges anything) holds no acknowledged write:
//!   its sled files are renamed aside (`set-aside.<name>.<unix ms>`, never
//!   deleted, logged) and the open starts afresh, once.
//! - **Panics.** sled panics on some damaged files instead of returning an
//!   error; `contain` turns such a panic into [`StoreError::Damaged`].

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::StoreError;

/// How long `open` waits for a just-dropped store's lock to be released.
const LOCK_GRACE: Duration = Duration::from_secs(2);

/// Prefix of the names stale snapshot files are renamed to.
pub const SET_ASIDE_PREFIX: &str = "set-aside.";

/// Runs `f`, turning a panic (sled panics on some damaged files) into
/// [`StoreError::Damaged`] with `what` saying what was being done.
pub(crate) fn contain<T>(
    what: &str,
    f: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(StoreError::Damaged(format!(
                "the storage engine panicked while {what}: {message}"
            )))
        }
    }
}

/// Opens sled on `path`: waits briefly while the directory is locked (sled's
/// background threads may hold the lock for a moment after the previous
/// `Store` in this process was dropped), sets stale snapshot files aside
/// under that lock, then opens with any sled panic contained.
pub(crate) fn open_sled(config: &sled::Config, path: &Path) -> Result<sled::Db, StoreError> {
    let deadline = Instant::now() + LOCK_GRACE;
    let mut started_afresh = false;
    loop {
        let attempt = set_aside_stale_snapshots(path)
            .and_then(|_| contain("opening the data directory", || Ok(config.open()?)));
        match attempt {
            Err(StoreError::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(StoreError::Sled(sled::Error::Io(e)))
                if e.to_string().contains("could not acquire lock") =>
            {
                if Instant::now() >= deadline {
                    return Err(StoreError::Locked {
                        path: path.to_path_buf(),
                    });
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(StoreError::Sled(sled::Error::Corruption { .. }))
                if !started_afresh && never_opened(path) =>
            {
                set_aside_unopened(path)?;
                started_afresh = true;
            }
            Err(StoreError::Sled(e @ sled::Error::Corruption { .. })) => {
                return Err(StoreError::Damaged(format!(
                    "sled cannot read the data directory {} ({e}); {}",
                    path.display(),
                    crate::manifest::recovery(path)
                )));
            }
            other => return other,
        }
    }
}

/// Whether the store never opened `dir`: no manifest and no write-ahead
/// log (every open writes both before it acknowledges a write).
fn never_opened(dir: &Path) -> bool {
    !dir.join(crate::manifest::MANIFEST_FILE).exists() && !dir.join(crate::wal::WAL_FILE).exists()
}

/// Renames sled's files in a directory the store never opened aside (see
/// the module docs), so sled creates the directory afresh.
fn set_aside_unopened(dir: &Path) -> Result<(), StoreError> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if !matches!(name, "conf" | "db" | "blobs") && !name.starts_with("snap.") {
            continue;
        }
        let to = dir.join(format!("{SET_ASIDE_PREFIX}{name}.{stamp}"));
        std::fs::rename(dir.join(name), &to)?;
        tracing::warn!(
            from = %dir.join(name).display(),
            to = %to.display(),
            "set aside a sled file of a first start cut short by a crash \
             (the directory was never opened, so it holds no acknowledged write)"
        );
    }
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// Renames every `snap.*.generating` file in `dir` aside (see the module
/// docs) and returns the new paths. Holds sled's lock on `db` meanwhile;
/// [`StoreError::Locked`] if another process holds it.
pub fn set_aside_stale_snapshots(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let db_path = dir.join("db");
    // A directory without `db` is new: sled has never written a snapshot.
    let Ok(db_file) = File::open(&db_path) else {
        return Ok(Vec::new());
    };
    match db_file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(StoreError::Locked {
                path: dir.to_path_buf(),
            });
        }
        Err(TryLockError::Error(e)) => return Err(e.into()),
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut moved = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if !(name.starts_with("snap.") && name.ends_with(".generating")) {
            continue;
        }
        let from = dir.join(name);
        let to = dir.join(format!("{SET_ASIDE_PREFIX}{name}.{stamp}"));
        std::fs::rename(&from, &to)?;
        tracing::warn!(
            from = %from.display(),
            to = %to.display(),
            "set aside a stale sled snapshot file left by a crash during a snapshot \
             (sled would misread it as its newest snapshot); nothing was deleted"
        );
        moved.push(to);
    }
    if !moved.is_empty() {
        File::open(dir)?.sync_all()?;
    }
    // Dropping the handle releases the lock before sled takes it.
    drop(db_file);
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_a_named_error() {
        let err = contain::<()>("reading", || panic!("boom")).unwrap_err();
        assert!(
            err.to_string().contains("panicked while reading: boom"),
            "{err}"
        );
    }

    #[test]
    fn only_generating_snapshots_are_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "db",
            "conf",
            "snap.0000000000000010",
            "snap.00000000000000FF.generating",
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let moved = set_aside_stale_snapshots(dir.path()).unwrap();
        assert_eq!(moved.len(), 1);
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names.len(), 4, "{names:?}");
        assert_eq!(&names[..2], ["conf", "db"]);
        assert!(
            names[2].starts_with("set-aside.snap.00000000000000FF.generating."),
            "{names:?}"
        );
        assert_eq!(names[3], "snap.0000000000000010");
        assert_eq!(moved[0], dir.path().join(&names[2]));
    }

    /// A directory as sled's first start leaves it, with its `conf` cut
    /// short as a kill while sled writes it leaves it.
    fn torn_first_start(dir: &Path) {
        drop(sled::open(dir).unwrap());
        let conf = dir.join("conf");
        let bytes = std::fs::read(&conf).unwrap();
        std::fs::write(&conf, &bytes[..bytes.len() / 2]).unwrap();
    }

    #[test]
    fn a_first_start_cut_short_in_sleds_conf_starts_afresh() {
        let dir = tempfile::tempdir().unwrap();
        torn_first_start(dir.path());
        let store = crate::Store::open(crate::StoreConfig::new(dir.path())).unwrap();
        assert!(store.list().unwrap().is_empty());
        drop(store);
        let aside = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().starts_with("set-aside.conf.")
            })
            .count();
        assert_eq!(aside, 1, "the torn conf was not set aside");
    }

    #[test]
    fn a_torn_conf_in_a_directory_the_store_opened_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        drop(crate::Store::open(crate::StoreConfig::new(dir.path())).unwrap());
        let conf = dir.path().join("conf");
        let bytes = std::fs::read(&conf).unwrap();
        std::fs::write(&conf, &bytes[..bytes.len() / 2]).unwrap();
        let err = crate::Store::open(crate::StoreConfig::new(dir.path()))
            .err()
            .expect("a damaged directory that held data opened");
        assert!(matches!(err, StoreError::Damaged(_)), "{err:?}");
        assert!(conf.exists(), "the conf was moved");
    }
}
