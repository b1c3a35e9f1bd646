//! `Store`: the document store on sled (open, load, append, compact, ...).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use yrs::updates::decoder::Decode;
use yrs::{ReadTxn, StateVector, Transact, Update};

use crate::commit::{CommitStats, DiskSync, GroupCommit, Mergeable, StoreHealth, Ticket, lock};
use crate::doc_state::{DocSlot, DocState, read_state};
use crate::manifest::{Checkpoints, Manifest, holdings};
use crate::open::{contain, open_sled};
use crate::records::{self, SnapshotHeader};
use crate::replay::{self, StoredSnapshot, StoredUpdate};
use crate::upgrade::check_format;
use crate::wal::{self, Ops};
use crate::{DocId, StoreConfig, StoreError};

/// Position of an update in a document's log (starts at 1, never reused).
pub type Seq = u64;

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
    /// `None` when the record was durable before the ticket was made.
    ticket: Option<Ticket>,
}

impl Appended {
    /// A ticket for a record that is already durable, for [`crate::DocStore`]
    /// backends whose appends are durable when they return.
    pub fn already_durable(seq: Seq) -> Self {
        Appended { seq, ticket: None }
    }

    /// Resolves once the record is durable (per `Durability`).
    pub async fn durable(self) -> Result<Seq, StoreError> {
        if let Some(ticket) = self.ticket {
            ticket.wait_async().await?;
        }
        Ok(self.seq)
    }

    /// Has the store's flusher thread make the record durable now, so that
    /// [`Appended::durable`] only waits for it. Without this, `durable`
    /// runs the disk sync on the awaiting task's thread when no other sync
    /// is running (no hand-off to the flusher and back): best for a caller
    /// with nothing else to do, while a caller with more work queued keeps
    /// its thread for that work with this.
    pub fn sync_in_background(&mut self) {
        if let Some(ticket) = &mut self.ticket {
            ticket.sync_in_background();
        }
    }

    /// Blocking twin of `durable`, for non-async callers.
    pub fn wait_durable(self) -> Result<Seq, StoreError> {
        if let Some(ticket) = self.ticket {
            ticket.wait_durable()?;
        }
        Ok(self.seq)
    }
}

impl std::fmt::Debug for Appended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appended")
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

/// How the data directory was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Normal use: checked against the manifest, read and written.
    Checked,
    /// `Store::open_for_recovery`: not checked, never written.
    Recovery,
}

/// Slots kept before the first sweep of idle ones (see `Slots`).
const SLOTS_BEFORE_SWEEP: usize = 1024;

/// Per-document slots of the documents in use. A slot nobody holds is
/// swept once the map has doubled since the last sweep, so the map stays
/// proportional to the documents in use (their counters are on disk).
#[derive(Default)]
pub(crate) struct Slots {
    map: HashMap<DocId, Arc<DocSlot>>,
    /// Size at which the next sweep runs.
    sweep_at: usize,
    /// The storage engine's generation the cached counters belong to.
    generation: u64,
}

struct Inner {
    config: StoreConfig,
    access: Access,
    slots: Mutex<Slots>,
    /// The manifest's checkpoints and the live document count.
    checkpoints: Arc<Checkpoints>,
    // Last field: dropped after the others are done with the db.
    commit: GroupCommit,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Clean shutdown: a last checkpoint records what the store holds
        // (once every write is applied, so the document count has them).
        if self.access == Access::Checked
            && self.commit.check_healthy().is_ok()
            && self.commit.upto(self.commit.stats().writes).wait().is_ok()
            && let Ok(db) = self.commit.db()
            && let Err(e) = self.checkpoints.now(&db, || self.commit.sync_now())
        {
            tracing::warn!(error = %e, "the checkpoint at close failed");
        }
    }
}

/// The document store. Cheap to clone (shared handle); Send + Sync.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// Wall-clock time, ms since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(crate) fn ms_to_time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

impl Store {
    /// Opens (or creates) a data directory. Stale sled snapshot files are
    /// set aside first (see [`crate::open`]); a directory whose sled file
    /// holds less than its manifest records is refused with
    /// [`StoreError::HoldsLess`] (see [`crate::manifest`]); a directory in
    /// an older format is upgraded (its records stay as they are).
    pub fn open(config: StoreConfig) -> Result<Store, StoreError> {
        Self::open_as(config, Access::Checked)
    }

    /// Opens a damaged directory for `tandem check` and `tandem salvage`:
    /// no comparison with the manifest, no upgrade, no checkpoint, and every
    /// write fails with [`StoreError::ReadOnly`]. Documents are found by
    /// their records as well as their metadata ([`Store::stored_ids`]).
    /// (sled itself may still rewrite its own snapshot file at open.)
    pub fn open_for_recovery(config: StoreConfig) -> Result<Store, StoreError> {
        Self::open_as(config, Access::Recovery)
    }

    fn open_as(config: StoreConfig, access: Access) -> Result<Store, StoreError> {
        std::fs::create_dir_all(&config.path)?;
        let path = config.path.clone();
        let manifest = match access {
            Access::Checked => Manifest::read(&path)?,
            Access::Recovery => Manifest::read(&path).ok().flatten(),
        };
        let sled_config = sled::Config::new()
            .path(&path)
            .cache_capacity(config.cache_bytes)
            // Our flusher does every flush (and adds fdatasync).
            .flush_every_ms(None);
        let db = open_sled(&sled_config, &path)?;
        // Before anything reads sled: the log holds acknowledged writes
        // sled may not have persisted.
        let replayed = match contain("replaying the write-ahead log", || wal::replay(&path, &db)) {
            Ok(_) => true,
            Err(e) if access == Access::Recovery => {
                tracing::error!(error = %e, "the write-ahead log could not be replayed; reading sled as it is");
                false
            }
            Err(e) => return Err(e),
        };
        let held = contain("reading the data directory", || holdings(&db))?;
        let documents = match access {
            Access::Checked => {
                if let Some(manifest) = &manifest {
                    manifest.check(&path, &held)?;
                }
                contain("upgrading the data directory", || check_format(&db, &held))?
            }
            Access::Recovery => held.documents,
        };
        let sync = DiskSync::new(db.clone(), sled_config, &path, config.sync_faults.clone())?;
        sync.sync()?;
        // sled holds the replayed records now.
        if replayed {
            wal::empty(&path)?;
        }
        let commit_base = held.commit.max(manifest.map_or(0, |m| m.commit));
        let checkpoints = Arc::new(Checkpoints::new(
            &path,
            commit_base,
            documents,
            access == Access::Checked,
        ));
        checkpoints.now(&db, || sync.sync())?;
        let commit = GroupCommit::start(sync, config.durability, Arc::clone(&checkpoints))?;
        tracing::info!(
            path = %path.display(),
            documents,
            cache_bytes = config.cache_bytes,
            durability = ?config.durability,
            skip_gc = config.skip_gc,
            recovery = access == Access::Recovery,
            "store opened"
        );
        Ok(Store {
            inner: Arc::new(Inner {
                config,
                access,
                slots: Mutex::default(),
                checkpoints,
                commit,
            }),
        })
    }

    /// Fails when writes are not allowed (recovery mode, or a failed flush).
    fn check_writable(&self) -> Result<(), StoreError> {
        if self.inner.access == Access::Recovery {
            return Err(StoreError::ReadOnly);
        }
        self.inner.commit.check_healthy()
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// Options of every `yrs::Doc` the store creates (GC per `skip_gc`).
    pub fn doc_options(&self) -> yrs::Options {
        yrs::Options {
            skip_gc: self.inner.config.skip_gc,
            ..Default::default()
        }
    }

    /// The document's slot, created if needed (for writers, and readers
    /// of a document that exists). Sweeps idle slots when the map doubled.
    fn slot(&self, doc: &DocId) -> Arc<DocSlot> {
        let mut slots = self.slots();
        if let Some(slot) = slots.map.get(doc) {
            return Arc::clone(slot);
        }
        if slots.map.len() >= slots.sweep_at.max(SLOTS_BEFORE_SWEEP) {
            // Only the map holds an idle slot; its counters are on disk.
            slots.map.retain(|_, slot| Arc::strong_count(slot) > 1);
            slots.sweep_at = 2 * slots.map.len();
        }
        Arc::clone(slots.map.entry(doc.clone()).or_default())
    }

    /// The slot if the document is in use, without creating one.
    fn existing_slot(&self, doc: &DocId) -> Option<Arc<DocSlot>> {
        self.slots().map.get(doc).cloned()
    }

    /// The slot map, its cached counters dropped if sled was reopened
    /// after a fault since they were read (they may count lost writes).
    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        let mut slots = lock(&self.inner.slots);
        let generation = self.inner.commit.generation();
        if slots.generation != generation {
            for slot in slots.map.values() {
                *lock(&slot.state) = None;
            }
            slots.generation = generation;
        }
        slots
    }

    /// Documents with a slot in memory (for tests of the bookkeeping bound).
    pub fn tracked_documents(&self) -> usize {
        lock(&self.inner.slots).map.len()
    }

    /// Runs `f` on the document's counters, reading them from disk first if
    /// needed.
    fn with_state<R>(
        &self,
        slot: &DocSlot,
        doc: &DocId,
        f: impl FnOnce(&mut DocState) -> R,
    ) -> Result<R, StoreError> {
        let mut guard = lock(&slot.state);
        let state = match guard.take() {
            Some(state) => state,
            None => contain("reading a document's metadata", || {
                read_state(&self.db()?, doc)
            })?,
        };
        Ok(f(guard.insert(state)))
    }

    /// The document's counters without creating any state for it: from its
    /// slot when it is in use, else one point read.
    fn peek_state(&self, doc: &DocId) -> Result<DocState, StoreError> {
        if let Some(slot) = self.existing_slot(doc)
            && let Some(state) = *lock(&slot.state)
        {
            return Ok(state);
        }
        contain("reading a document's metadata", || {
            read_state(&self.db()?, doc)
        })
    }

    /// Loads a document (snapshot + log replay) into a fresh `yrs::Doc`
    /// (created with the store's GC option). A missing document loads empty.
    /// A log record that cannot be decoded or applied fails the load with
    /// [`StoreError::CorruptRecord`] naming the document and seq.
    /// Blocking: call from `spawn_blocking` in async code.
    pub fn load(&self, doc: &DocId) -> Result<yrs::Doc, StoreError> {
        let (snapshot, log) = self.read_all(doc)?;
        replay::replay(doc, self.doc_options(), snapshot.as_ref(), &log, None)
    }

    /// Like [`Store::load`], but skips records that cannot be decoded or
    /// applied and returns them as [`StoreError::CorruptRecord`]s instead.
    /// For operators recovering a damaged document; nothing is deleted.
    pub fn load_lossy(&self, doc: &DocId) -> Result<(yrs::Doc, Vec<StoreError>), StoreError> {
        let (snapshot, log) = self.read_all(doc)?;
        let mut bad = Vec::new();
        let loaded = replay::replay(
            doc,
            self.doc_options(),
            snapshot.as_ref(),
            &log,
            Some(&mut bad),
        )?;
        Ok((loaded, bad))
    }

    /// Snapshot and log of a document; empty (and no state created) when
    /// it was never written. A sled panic becomes [`StoreError::Damaged`].
    pub(crate) fn read_all(
        &self,
        doc: &DocId,
    ) -> Result<(Option<replay::StoredSnapshot>, Vec<StoredUpdate>), StoreError> {
        // In recovery mode the metadata may be what is damaged.
        if self.inner.access == Access::Checked && !self.peek_state(doc)?.exists() {
            return Ok((None, Vec::new()));
        }
        let slot = self.slot(doc);
        // Read the records of the writes known to be in sled: those before
        // the document's latest write (waited for); later ones may be
        // going into sled one key at a time (see `wal::Ops::apply_each`).
        let upto = match self.inner.access {
            Access::Checked => {
                let (upto, pending) = self.with_state(&slot, doc, |s| {
                    let pending = slot.pending.load(std::sync::atomic::Ordering::SeqCst);
                    (s.next_seq - 1, pending)
                })?;
                self.settle_upto(pending)?;
                upto
            }
            Access::Recovery => Seq::MAX,
        };
        let _reading = slot.layout.read().unwrap_or_else(|e| e.into_inner());
        contain("reading a document", || {
            let snapshot = replay::read_snapshot(&self.db()?, doc)?;
            let after = snapshot.as_ref().map_or(0, |s| s.header.merged_upto);
            let log = replay::read_log(&self.db()?, doc, after, upto)?;
            Ok((snapshot, log))
        })
    }

    /// Stores one write of `slot`'s document through the group commit and
    /// notes its position (see [`Store::settle`]).
    fn write(
        &self,
        slot: &Arc<DocSlot>,
        ops: Ops,
        creates: bool,
        merge: Option<Mergeable>,
    ) -> Result<Ticket, StoreError> {
        let keep = Arc::clone(slot);
        let ticket = self.inner.commit.write(ops, creates, merge, keep)?;
        slot.pending
            .fetch_max(ticket.position(), std::sync::atomic::Ordering::SeqCst);
        Ok(ticket)
    }

    /// Waits until the document's writes so far are in sled (they get
    /// there right after they are durable). A write that failed before it
    /// was durable is not waited for: what sled holds is then what is read.
    /// Fails when an acknowledged write could not be applied to sled yet
    /// (until the recovery replays the log), so no read misses one.
    fn settle(&self, slot: &DocSlot) -> Result<(), StoreError> {
        self.settle_upto(slot.pending.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// Waits until every write registered so far is in sled (see
    /// [`Store::settle`]): for reads that scan sled across documents.
    pub(crate) fn settle_all(&self) -> Result<(), StoreError> {
        if self.inner.access == Access::Recovery {
            return Ok(());
        }
        self.settle_upto(self.inner.commit.stats().writes)
    }

    /// Waits until the writes up to commit position `pending` are in sled
    /// (see [`Store::settle`]).
    fn settle_upto(&self, pending: u64) -> Result<(), StoreError> {
        if pending > 0 {
            self.inner.commit.upto(pending).wait_readable()?;
        }
        Ok(())
    }

    /// Appends one v1 update to the document's log. The record is written
    /// (and its `Seq` assigned, in call order) before this returns; the
    /// returned ticket resolves once the record is stored per `Durability`.
    /// Appends whose tickets are awaited together share one flush (group
    /// commit). Does not validate the update: callers apply it first.
    pub fn append(&self, doc: &DocId, update: &[u8]) -> Result<Appended, StoreError> {
        self.append_batch(doc, &[update])
    }

    /// Appends several v1 updates as ONE log record (one atomic sled
    /// write: a crash keeps all of them or none). They get consecutive
    /// seqs, in slice order; the returned ticket carries the *last* one
    /// (the first is `seq + 1 - updates.len()`) and resolves once the whole
    /// batch is stored per `Durability`. Much cheaper per update than
    /// `append` for the many small updates a busy room receives together.
    /// An empty slice writes nothing and returns an already durable ticket
    /// for the current last seq. Does not validate the updates.
    pub fn append_batch(&self, doc: &DocId, updates: &[&[u8]]) -> Result<Appended, StoreError> {
        self.check_writable()?;
        let slot = self.slot(doc);
        let count = updates.len() as u64;
        let seq = self.with_state(
            &slot,
            doc,
            |state| -> Result<(Seq, Option<Ticket>), StoreError> {
                let first = state.next_seq;
                if count == 0 {
                    return Ok((first - 1, None));
                }
                let now = now_ms();
                let values = match updates {
                    [single] => records::encode_log(now, single),
                    _ => records::encode_log_batch(now, updates),
                };
                let stored: u64 = values.iter().map(|v| v.len() as u64).sum();
                let created = !state.exists();
                let mut next = *state;
                next.next_seq += count;
                next.log_len += count;
                next.log_bytes += stored;
                next.last_modified_ms = next.last_modified_ms.max(now);
                // A one-chunk record may wait to be merged with the
                // document's next ones (see the crate docs, "Deferred
                // appends").
                let merge = (values.len() == 1).then_some(Mergeable {
                    first,
                    count,
                    meta: next,
                    stored,
                });
                // Records and counters in one atomic write.
                let mut ops = Ops::default();
                for (part, value) in values.into_iter().enumerate() {
                    ops.insert(records::log_key(doc, first, part as u32), value);
                }
                ops.insert(records::doc_meta_key(doc), next.encode());
                let ticket = self.write(&slot, ops, created, merge)?;
                *state = next;
                Ok((next.next_seq - 1, Some(ticket)))
            },
        )??;
        Ok(Appended {
            seq: seq.0,
            ticket: seq.1,
        })
    }

    /// True when the document's log is due for compaction: it passed
    /// `compact_after_updates` updates or `compact_after_bytes` bytes, **and**
    /// it is at least `compact_min_log_percent` % of the snapshot's size (so
    /// the work of all compactions stays proportional to the bytes written;
    /// see the crate docs). In-memory only; false for a document not touched
    /// since open.
    pub fn needs_compaction(&self, doc: &DocId) -> bool {
        let Some(slot) = self.existing_slot(doc) else {
            return false;
        };
        let state = lock(&slot.state);
        let config = &self.inner.config;
        state.is_some_and(|s| {
            let relative = u128::from(s.log_bytes) * 100
                >= u128::from(s.snapshot_bytes) * u128::from(config.compact_min_log_percent);
            s.log_len > 0
                && relative
                && (s.log_len >= config.compact_after_updates
                    || s.log_bytes >= config.compact_after_bytes)
        })
    }

    /// Merges the log into a new snapshot atomically. Blocking.
    ///
    /// Records appended while it runs stay in the log: the batch removes
    /// exactly the records it merged. Fails without changing anything when
    /// a record is corrupt.
    pub fn compact(&self, doc: &DocId) -> Result<CompactStats, StoreError> {
        self.compact_with(doc, None, |snapshot, log| {
            let merged = replay::replay(doc, self.doc_options(), snapshot, log, None)?;
            Ok(merged
                .transact()
                .encode_state_as_update_v1(&StateVector::default()))
        })
    }

    /// Replaces the records up to `upto` with `state`, the caller's own
    /// encoding (`encode_state_as_update_v1`) of the document as of
    /// `upto`, without replaying the log. Blocking, atomic, like
    /// [`Store::compact`].
    ///
    /// For the one writer of a loaded document (a room), whose `Doc` holds
    /// exactly the snapshot plus every record up to the last one it
    /// appended ([`Appended::seq`]): merging costs it one encode instead of
    /// decoding and replaying the whole log again. `upto` past the last
    /// appended record is refused (nothing changes).
    pub fn compact_from_state(
        &self,
        doc: &DocId,
        upto: Seq,
        state: Vec<u8>,
    ) -> Result<CompactStats, StoreError> {
        self.compact_with(doc, Some(upto), move |_, _| Ok(state))
    }

    /// The compaction both entries share: reads the snapshot and the log up
    /// to `upto` (the last appended record when `None`), has `merge` encode
    /// the merged state, and writes it with the merged records removed.
    fn compact_with(
        &self,
        doc: &DocId,
        upto: Option<Seq>,
        merge: impl FnOnce(Option<&StoredSnapshot>, &[StoredUpdate]) -> Result<Vec<u8>, StoreError>,
    ) -> Result<CompactStats, StoreError> {
        self.check_writable()?;
        let slot = self.slot(doc);
        let _maintenance = lock(&slot.maintenance);
        let last = self.with_state(&slot, doc, |s| s.next_seq - 1)?;
        let upto = match upto {
            Some(upto) if upto > last => {
                return Err(StoreError::InvalidUpdate {
                    doc: doc.clone(),
                    reason: format!("compaction up to {upto} past the last record {last}"),
                });
            }
            Some(upto) => upto,
            None => last,
        };
        // Every record up to `upto` must be in sled before it is read.
        self.settle(&slot)?;
        let (snapshot, log) = {
            let _reading = slot.layout.read().unwrap_or_else(|e| e.into_inner());
            contain("reading a document", || {
                let snapshot = replay::read_snapshot(&self.db()?, doc)?;
                let after = snapshot.as_ref().map_or(0, |s| s.header.merged_upto);
                let log = replay::read_log(&self.db()?, doc, after, upto)?;
                Ok((snapshot, log))
            })?
        };
        let old_bytes = snapshot.as_ref().map_or(0, |s| s.stored_bytes);
        if log.is_empty() {
            return Ok(CompactStats {
                merged_updates: 0,
                snapshot_bytes: old_bytes,
            });
        }
        let mut merged_count: u64 = log.iter().map(StoredUpdate::count).sum();
        // A record merged at a checkpoint may hold updates past `upto` (a
        // room's state is as of its last append): they stay in the log, as
        // a record of their own at `upto + 1`.
        let mut split = None;
        if let Some(record) = log.last()
            && let Ok((header, payload)) = &record.update
            && record.seq.saturating_add(u64::from(header.count)) > upto + 1
        {
            let updates = records::record_updates(header, payload).map_err(|reason| {
                StoreError::CorruptRecord {
                    doc: doc.clone(),
                    seq: record.seq,
                    reason,
                }
            })?;
            let kept = updates
                .get((upto + 1 - record.seq) as usize..)
                .unwrap_or(&[]);
            merged_count -= kept.len() as u64;
            split = Some(match kept {
                [single] => records::encode_log(header.modified_ms, single),
                _ => records::encode_log_batch(header.modified_ms, kept),
            });
        }
        let state = merge(snapshot.as_ref(), &log)?;

        let now = now_ms();
        let header = SnapshotHeader {
            merged_upto: upto,
            update_count: snapshot.as_ref().map_or(0, |s| s.header.update_count) + merged_count,
            modified_ms: now,
            parts: 0,
            checksum: None,
            header_len: 0,
        };
        let values = records::encode_snapshot(header, &state);
        let snapshot_bytes: u64 = values.iter().map(|v| v.len() as u64).sum();
        let mut batch = Ops::default();
        if let Some(old) = &snapshot {
            for key in old.keys.iter().skip(values.len()) {
                batch.remove(key.to_vec());
            }
        }
        for (part, value) in values.into_iter().enumerate() {
            batch.insert(records::snapshot_key(doc, part as u32), value);
        }
        let mut merged_bytes: u64 = log.iter().map(|r| r.stored_bytes).sum();
        for record in &log {
            for key in &record.keys {
                batch.remove(key.to_vec());
            }
        }
        if let Some(values) = split {
            for (part, value) in values.into_iter().enumerate() {
                merged_bytes = merged_bytes.saturating_sub(value.len() as u64);
                batch.insert(records::log_key(doc, upto + 1, part as u32), value);
            }
        }
        // Counters under the state lock (appends may have run meanwhile),
        // written in the same atomic batch as the snapshot; readers wait
        // until the batch is in sled.
        let _writing = slot.layout.write().unwrap_or_else(|e| e.into_inner());
        let ticket = self.with_state(&slot, doc, |s| -> Result<Ticket, StoreError> {
            let mut next = *s;
            next.merged_upto = upto;
            next.has_snapshot = true;
            next.snapshot_updates = header.update_count;
            next.snapshot_bytes = snapshot_bytes;
            next.log_len -= merged_count;
            // (Saturating: after a failed checkpoint's reopen, appends
            // counted against merged records may undercount by a little.)
            next.log_bytes = next.log_bytes.saturating_sub(merged_bytes);
            next.last_modified_ms = next.last_modified_ms.max(now);
            batch.insert(records::doc_meta_key(doc), next.encode());
            let ticket = self.write(&slot, batch, false, None)?;
            *s = next;
            Ok(ticket)
        })??;
        // (Not `wait`: other documents' deferred appends stay deferred.)
        ticket.wait_applied()?;
        drop(_writing);
        tracing::debug!(doc = %doc, merged = merged_count, snapshot_bytes, "compacted");
        Ok(CompactStats {
            merged_updates: merged_count,
            snapshot_bytes,
        })
    }

    /// Removes a document entirely (durable on return). Returns whether it
    /// existed.
    pub fn delete(&self, doc: &DocId) -> Result<bool, StoreError> {
        self.check_writable()?;
        // Held until the checkpoint below: the count only shrinks with one.
        let mut held = self.inner.checkpoints.hold();
        let slot = self.slot(doc);
        let _maintenance = lock(&slot.maintenance);
        let mut state = lock(&slot.state);
        // No append can start now (it needs `state`): let those in flight
        // reach sled, so the scan below sees every key.
        self.settle(&slot)?;
        let _writing = slot.layout.write().unwrap_or_else(|e| e.into_inner());
        let mut batch = Ops::default();
        let mut existed = false;
        for prefix in [records::snapshot_prefix(doc), records::log_prefix(doc)] {
            for item in self.db()?.scan_prefix(prefix) {
                batch.remove(item?.0.to_vec());
                existed = true;
            }
        }
        let had_meta = self.db()?.get(records::doc_meta_key(doc))?.is_some();
        batch.remove(records::doc_meta_key(doc));
        let ticket = self.write(&slot, batch, false, None)?;
        *state = Some(DocState::missing());
        let synced = ticket.wait_synced();
        drop((_writing, state));
        synced?;
        if had_meta {
            self.inner.checkpoints.document_deleted(&held);
            let db = &self.db()?;
            self.inner
                .checkpoints
                .run(&mut held, db, || self.inner.commit.sync_now())?;
        }
        Ok(existed || had_meta)
    }

    /// The document's full state as one v1 update.
    pub fn export(&self, doc: &DocId) -> Result<Vec<u8>, StoreError> {
        let loaded = self.load(doc)?;
        let state = loaded
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        Ok(state)
    }

    /// Merges a v1 update into a document (validated first; durable on return).
    pub fn import(&self, doc: &DocId, update: &[u8]) -> Result<(), StoreError> {
        let invalid = |reason: String| StoreError::InvalidUpdate {
            doc: doc.clone(),
            reason,
        };
        Update::decode_v1(update).map_err(|e| invalid(e.to_string()))?;
        replay::apply_v1(&yrs::Doc::with_options(self.doc_options()), update).map_err(invalid)?;
        let appended = self.append(doc, update)?;
        if let Some(ticket) = appended.ticket {
            ticket.wait_synced()?;
        }
        Ok(())
    }

    /// Group-commit counters (writes, durable writes, disk syncs), e.g. for
    /// metrics.
    pub fn commit_stats(&self) -> CommitStats {
        self.inner.commit.stats()
    }

    /// Flushes everything to disk and runs a checkpoint (used at shutdown).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.inner.commit.sync_now()?;
        if self.inner.access == Access::Checked {
            self.inner
                .checkpoints
                .now(&self.db()?, || self.inner.commit.sync_now())?;
        }
        Ok(())
    }

    /// The sled database, for the listing and inspection code of this
    /// crate (fails only during the moment of a reopen after a fault).
    pub(crate) fn db(&self) -> Result<sled::Db, StoreError> {
        self.inner.commit.db()
    }

    /// Whether the store can write now: cheap (one mutex), for `/healthz`
    /// and for refusing new joins while it cannot. See [`StoreHealth`].
    pub fn health(&self) -> StoreHealth {
        self.inner.commit.health()
    }

    /// Counters of a document without creating state (listing, `info`).
    pub(crate) fn state_of(&self, doc: &DocId) -> Result<DocState, StoreError> {
        self.peek_state(doc)
    }
}
