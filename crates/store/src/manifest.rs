//! The store's own account of what a data directory holds, kept outside
//! sled's data file so that damage to that file is detected instead of
//! being served as an empty (or smaller) store.
//!
//! `tandem-manifest.json` records the data format, a monotonic checkpoint
//! counter and the number of documents. A *checkpoint* raises the counter
//! inside sled ([`records::COMMIT_KEY`]), syncs sled, and only then replaces
//! the manifest (write a temporary file, fsync it, rename it over the old
//! one, fsync the directory), so the manifest never claims more than sled
//! durably holds. Checkpoints run at open, after every delete, at most every
//! [`CHECKPOINT_EVERY`] while documents are written, and at clean shutdown.
//!
//! At open, a sled file holding less than the manifest (no format record,
//! a lower counter, fewer documents: e.g. a truncated `db` file, which sled
//! opens as a smaller or empty database without any error) makes the open
//! fail with [`StoreError::HoldsLess`], naming the directory, what is
//! missing and the recovery commands. Deletes and checkpoints are
//! serialised so that the document count only ever shrinks together with
//! a checkpoint.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::commit::lock;
use crate::{StoreError, records};

/// Name of the manifest file in the data directory.
pub const MANIFEST_FILE: &str = "tandem-manifest.json";

/// Longest time between checkpoints while documents are being written.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);

/// The manifest: what the data directory held at its last checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// Data-dir format version ([`records::DATA_FORMAT_VERSION`]).
    pub format: u32,
    /// Checkpoint counter; sled's [`records::COMMIT_KEY`] is never lower.
    pub commit: u64,
    /// Documents stored at that checkpoint.
    pub documents: u64,
    /// When it was written, ms since the Unix epoch (for operators).
    pub written_ms: u64,
}

/// What sled's data file holds, to compare with the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Holdings {
    /// The format record, `None` when absent.
    pub(crate) format: Option<u32>,
    /// The checkpoint counter (0 when absent).
    pub(crate) commit: u64,
    /// Documents with a metadata record.
    pub(crate) documents: u64,
}

impl Manifest {
    /// Reads the manifest of `dir`; `Ok(None)` when there is none (a new
    /// directory, or one written before format 3).
    pub fn read(dir: &Path) -> Result<Option<Manifest>, StoreError> {
        let path = dir.join(MANIFEST_FILE);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        serde_json::from_slice(&text).map(Some).map_err(|e| {
            StoreError::Damaged(format!(
                "the manifest {} is unreadable ({e}); {}",
                path.display(),
                recovery(dir)
            ))
        })
    }

    /// Replaces the manifest of `dir` atomically (temp file, fsync, rename,
    /// directory fsync).
    pub fn write(&self, dir: &Path) -> Result<(), StoreError> {
        let tmp = dir.join(format!("{MANIFEST_FILE}.tmp"));
        let mut file = File::create(&tmp)?;
        let text = serde_json::to_vec_pretty(self)
            .map_err(|e| StoreError::Damaged(format!("encoding the manifest: {e}")))?;
        file.write_all(&text)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, dir.join(MANIFEST_FILE))?;
        File::open(dir)?.sync_all()?;
        Ok(())
    }

    /// Fails with [`StoreError::HoldsLess`] when sled holds less than this
    /// manifest records.
    pub(crate) fn check(&self, dir: &Path, held: &Holdings) -> Result<(), StoreError> {
        let missing = match held.format {
            None => Some(format!(
                "the data file has no format record and {} of {} documents (it was emptied or truncated)",
                held.documents, self.documents
            )),
            Some(_) if held.commit < self.commit => Some(format!(
                "the data file is at checkpoint {} but the manifest records checkpoint {} \
                 (holding {} documents; the data file has {}): its newest writes are gone",
                held.commit, self.commit, self.documents, held.documents
            )),
            Some(_) if held.documents < self.documents => Some(format!(
                "{} of the {} documents the manifest records are missing",
                self.documents - held.documents,
                self.documents
            )),
            Some(_) => None,
        };
        match missing {
            None => Ok(()),
            Some(what) => Err(StoreError::HoldsLess {
                path: dir.to_path_buf(),
                what,
                recovery: recovery(dir),
            }),
        }
    }
}

/// The commands an operator runs on a damaged directory.
pub(crate) fn recovery(dir: &Path) -> String {
    format!(
        "nothing was changed; run `tandem check --data-dir {0}` to see what is readable, then \
         `tandem salvage --data-dir {0} --to NEWDIR` to copy every readable document into a new \
         directory (or `tandem restore BACKUP --data-dir NEWDIR` from a backup)",
        dir.display()
    )
}

/// Reads what sled holds: format record, checkpoint counter, documents.
pub(crate) fn holdings(db: &sled::Db) -> Result<Holdings, StoreError> {
    let format = db.get(records::META_KEY)?.map(|v| {
        <[u8; 4]>::try_from(&v[..])
            .map(u32::from_be_bytes)
            .unwrap_or(u32::MAX)
    });
    let commit = db.get(records::COMMIT_KEY)?.map_or(0, |v| {
        <[u8; 8]>::try_from(&v[..]).map_or(0, u64::from_be_bytes)
    });
    let (start, end) = records::doc_meta_range();
    let mut documents = 0;
    for item in db.range(start..end) {
        item?;
        documents += 1;
    }
    Ok(Holdings {
        format,
        commit,
        documents,
    })
}

/// Progress of checkpoints.
struct Progress {
    /// Counter of the last checkpoint.
    commit: u64,
    /// When it ran.
    at: Instant,
    /// Writes registered by then (a checkpoint is due only after new ones).
    writes: u64,
}

/// Runs checkpoints and keeps the live document count they record.
pub(crate) struct Checkpoints {
    /// The data directory (where the manifest lives).
    dir: PathBuf,
    /// Held for a whole checkpoint, and by a delete from its removal to its
    /// own checkpoint, so the count written never exceeds what sled holds.
    progress: Mutex<Progress>,
    /// Documents stored now: raised after a new document's first record is
    /// written to sled, lowered by a delete (under `progress`).
    documents: AtomicU64,
    /// False when the store was opened for salvage: it writes no manifest.
    enabled: bool,
}

/// Proof that the caller holds the checkpoint lock (see [`Checkpoints::hold`]).
pub(crate) struct Held<'a> {
    progress: std::sync::MutexGuard<'a, Progress>,
}

impl Checkpoints {
    pub(crate) fn new(dir: &Path, commit: u64, documents: u64, enabled: bool) -> Self {
        Checkpoints {
            dir: dir.to_path_buf(),
            progress: Mutex::new(Progress {
                commit,
                at: Instant::now(),
                writes: 0,
            }),
            documents: AtomicU64::new(documents),
            enabled,
        }
    }

    /// A new document's first record is in sled.
    pub(crate) fn document_created(&self) {
        self.documents.fetch_add(1, Ordering::SeqCst);
    }

    /// Documents stored now.
    pub(crate) fn documents(&self) -> u64 {
        self.documents.load(Ordering::SeqCst)
    }

    /// Takes the checkpoint lock (for a delete).
    pub(crate) fn hold(&self) -> Held<'_> {
        Held {
            progress: lock(&self.progress),
        }
    }

    /// A document was removed from sled (caller holds the lock and runs a
    /// checkpoint before releasing it).
    pub(crate) fn document_deleted(&self, _held: &Held<'_>) {
        self.documents.fetch_sub(1, Ordering::SeqCst);
    }

    /// Runs a checkpoint when one is due: writes happened since the last
    /// one (`writes` is the number registered so far) and
    /// [`CHECKPOINT_EVERY`] has passed. Skipped while another checkpoint or
    /// a delete holds the lock. Called by the flusher thread. Says whether
    /// it ran one.
    pub(crate) fn maybe(
        &self,
        db: &sled::Db,
        writes: u64,
        sync: impl FnOnce() -> Result<(), StoreError>,
    ) -> Result<bool, StoreError> {
        // Never wait for the lock: a delete holding it waits for the
        // flusher (the caller), and is about to checkpoint anyway.
        let Ok(progress) = self.progress.try_lock() else {
            return Ok(false);
        };
        let mut held = Held { progress };
        if writes == held.progress.writes || held.progress.at.elapsed() < CHECKPOINT_EVERY {
            return Ok(false);
        }
        held.progress.writes = writes;
        self.run(&mut held, db, sync).map(|()| true)
    }

    /// Runs a checkpoint now.
    pub(crate) fn now(
        &self,
        db: &sled::Db,
        sync: impl FnOnce() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.run(&mut self.hold(), db, sync)
    }

    /// Runs a checkpoint while the caller already holds the lock.
    pub(crate) fn run(
        &self,
        held: &mut Held<'_>,
        db: &sled::Db,
        sync: impl FnOnce() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        if !self.enabled {
            return Ok(());
        }
        let documents = self.documents();
        let commit = held.progress.commit + 1;
        db.insert(records::COMMIT_KEY, &commit.to_be_bytes())?;
        sync()?;
        Manifest {
            format: records::DATA_FORMAT_VERSION,
            commit,
            documents,
            written_ms: crate::store::now_ms(),
        }
        .write(&self.dir)?;
        held.progress.commit = commit;
        held.progress.at = Instant::now();
        tracing::debug!(commit, documents, "checkpoint");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(commit: u64, documents: u64) -> Manifest {
        Manifest {
            format: records::DATA_FORMAT_VERSION,
            commit,
            documents,
            written_ms: 0,
        }
    }

    #[test]
    fn a_data_file_holding_less_is_refused_with_the_recovery_commands() {
        let dir = Path::new("/data/x");
        let held = |format, commit, documents| Holdings {
            format,
            commit,
            documents,
        };
        let m = manifest(7, 30);
        assert!(m.check(dir, &held(Some(3), 7, 30)).is_ok());
        assert!(m.check(dir, &held(Some(3), 9, 31)).is_ok());
        for bad in [held(None, 0, 0), held(Some(3), 6, 30), held(Some(3), 7, 29)] {
            let err = m.check(dir, &bad).unwrap_err().to_string();
            assert!(err.contains("/data/x"), "{err}");
            assert!(
                err.contains("tandem salvage --data-dir /data/x --to"),
                "{err}"
            );
        }
    }

    #[test]
    fn the_manifest_is_replaced_atomically_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Manifest::read(dir.path()).unwrap(), None);
        manifest(1, 2).write(dir.path()).unwrap();
        manifest(2, 3).write(dir.path()).unwrap();
        assert_eq!(Manifest::read(dir.path()).unwrap(), Some(manifest(2, 3)));
        assert!(!dir.path().join(format!("{MANIFEST_FILE}.tmp")).exists());
        std::fs::write(dir.path().join(MANIFEST_FILE), b"{garbage").unwrap();
        let err = Manifest::read(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(MANIFEST_FILE) && err.contains("tandem check"),
            "{err}"
        );
    }
}
