//! `Store`: the document store on sled (open, load, append, compact, ...).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use yrs::updates::decoder::Decode;
use yrs::{ReadTxn, StateVector, Transact, Update};

use crate::commit::{CommitStats, DiskSync, GroupCommit, Ticket, lock};
use crate::doc_state::{DocSlot, DocState, scan_state};
use crate::open::open_sled;
use crate::records::{self, SnapshotHeader};
use crate::replay::{self, StoredUpdate};
use crate::{DocId, StoreConfig, StoreError};

/// Position of an update in a document's log (starts at 1, never reused).
pub type Seq = u64;

/// One row of `Store::list`.
#[derive(Debug, Clone)]
pub struct DocInfo {
    /// The document.
    pub id: DocId,
    /// Bytes stored (snapshot + log values; sled's own overhead excluded).
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

    /// Blocking twin of `durable`, for non-async callers.
    pub fn wait_durable(self) -> Result<Seq, StoreError> {
        if let Some(ticket) = self.ticket {
            ticket.wait()?;
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

struct Inner {
    config: StoreConfig,
    db: sled::Db,
    docs: Mutex<HashMap<DocId, Arc<DocSlot>>>,
    // Last field: dropped after the others are done with the db.
    commit: GroupCommit,
}

/// The document store. Cheap to clone (shared handle); Send + Sync.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn ms_to_time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

impl Store {
    /// Opens (or creates) a data directory.
    pub fn open(config: StoreConfig) -> Result<Store, StoreError> {
        std::fs::create_dir_all(&config.path)?;
        let sled_config = sled::Config::new()
            .path(&config.path)
            .cache_capacity(config.cache_bytes)
            // Our flusher does every flush (and adds fdatasync).
            .flush_every_ms(None);
        let db = open_sled(&sled_config, &config.path)?;
        check_format(&db)?;
        let sync = DiskSync::new(db.clone(), &config.path)?;
        sync.sync()?;
        let commit = GroupCommit::start(sync, config.durability)?;
        tracing::info!(
            path = %config.path.display(),
            cache_bytes = config.cache_bytes,
            durability = ?config.durability,
            skip_gc = config.skip_gc,
            "store opened"
        );
        Ok(Store {
            inner: Arc::new(Inner {
                config,
                db,
                docs: Mutex::default(),
                commit,
            }),
        })
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

    fn slot(&self, doc: &DocId) -> Arc<DocSlot> {
        let mut docs = lock(&self.inner.docs);
        if let Some(slot) = docs.get(doc) {
            return Arc::clone(slot);
        }
        Arc::clone(docs.entry(doc.clone()).or_default())
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
        if guard.is_none() {
            *guard = Some(scan_state(&self.inner.db, doc)?);
        }
        Ok(f(guard.as_mut().expect("state initialised above")))
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

    fn read_all(
        &self,
        doc: &DocId,
    ) -> Result<(Option<replay::StoredSnapshot>, Vec<StoredUpdate>), StoreError> {
        let slot = self.slot(doc);
        let _reading = slot.layout.read().unwrap_or_else(|e| e.into_inner());
        let snapshot = replay::read_snapshot(&self.inner.db, doc)?;
        let after = snapshot.as_ref().map_or(0, |s| s.header.merged_upto);
        let log = replay::read_log(&self.inner.db, doc, after, Seq::MAX)?;
        Ok((snapshot, log))
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
        self.inner.commit.check_healthy()?;
        let slot = self.slot(doc);
        let count = updates.len() as u64;
        let seq = self.with_state(&slot, doc, |state| -> Result<Seq, StoreError> {
            let first = state.next_seq;
            if count == 0 {
                return Ok(first - 1);
            }
            let now = now_ms();
            let values = match updates {
                [single] => records::encode_log(now, single),
                _ => records::encode_log_batch(now, updates),
            };
            let stored: u64 = values.iter().map(|v| v.len() as u64).sum();
            if let [single] = &values[..] {
                self.inner
                    .db
                    .insert(records::log_key(doc, first, 0), &single[..])?;
            } else {
                let mut batch = sled::Batch::default();
                for (part, value) in values.into_iter().enumerate() {
                    batch.insert(records::log_key(doc, first, part as u32), value);
                }
                self.inner.db.apply_batch(batch)?;
            }
            state.next_seq += count;
            state.log_len += count;
            state.log_bytes += stored;
            state.last_modified_ms = state.last_modified_ms.max(now);
            Ok(state.next_seq - 1)
        })??;
        if count == 0 {
            return Ok(Appended::already_durable(seq));
        }
        Ok(Appended {
            seq,
            ticket: Some(self.inner.commit.register()),
        })
    }

    /// True when the document's log is due for compaction: it passed
    /// `compact_after_updates` updates or `compact_after_bytes` bytes, **and**
    /// it is at least `compact_min_log_percent` % of the snapshot's size (so
    /// the work of all compactions stays proportional to the bytes written;
    /// see the crate docs). In-memory only; false for a document not touched
    /// since open.
    pub fn needs_compaction(&self, doc: &DocId) -> bool {
        let Some(slot) = lock(&self.inner.docs).get(doc).cloned() else {
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
        self.inner.commit.check_healthy()?;
        let slot = self.slot(doc);
        let _maintenance = lock(&slot.maintenance);
        let upto = self.with_state(&slot, doc, |s| s.next_seq - 1)?;
        let (snapshot, log) = {
            let _reading = slot.layout.read().unwrap_or_else(|e| e.into_inner());
            let snapshot = replay::read_snapshot(&self.inner.db, doc)?;
            let after = snapshot.as_ref().map_or(0, |s| s.header.merged_upto);
            (
                snapshot,
                replay::read_log(&self.inner.db, doc, after, upto)?,
            )
        };
        let old_bytes = snapshot.as_ref().map_or(0, |s| s.stored_bytes);
        if log.is_empty() {
            return Ok(CompactStats {
                merged_updates: 0,
                snapshot_bytes: old_bytes,
            });
        }
        let merged_count: u64 = log.iter().map(StoredUpdate::count).sum();
        let merged = replay::replay(doc, self.doc_options(), snapshot.as_ref(), &log, None)?;
        let state = merged
            .transact()
            .encode_state_as_update_v1(&StateVector::default());

        let now = now_ms();
        let header = SnapshotHeader {
            merged_upto: upto,
            update_count: snapshot.as_ref().map_or(0, |s| s.header.update_count) + merged_count,
            modified_ms: now,
            parts: 0,
        };
        let values = records::encode_snapshot(header, &state);
        let snapshot_bytes: u64 = values.iter().map(|v| v.len() as u64).sum();
        let mut batch = sled::Batch::default();
        if let Some(old) = &snapshot {
            for key in old.keys.iter().skip(values.len()) {
                batch.remove(key.clone());
            }
        }
        for (part, value) in values.into_iter().enumerate() {
            batch.insert(records::snapshot_key(doc, part as u32), value);
        }
        let merged_bytes: u64 = log.iter().map(|r| r.stored_bytes).sum();
        for record in &log {
            for key in &record.keys {
                batch.remove(key.clone());
            }
        }
        {
            let _writing = slot.layout.write().unwrap_or_else(|e| e.into_inner());
            self.inner.db.apply_batch(batch)?;
        }
        self.with_state(&slot, doc, |s| {
            s.merged_upto = upto;
            s.has_snapshot = true;
            s.snapshot_updates = header.update_count;
            s.snapshot_bytes = snapshot_bytes;
            s.log_len -= merged_count;
            s.log_bytes -= merged_bytes;
            s.last_modified_ms = s.last_modified_ms.max(now);
        })?;
        self.inner.commit.register().wait()?;
        tracing::debug!(doc = %doc, merged = merged_count, snapshot_bytes, "compacted");
        Ok(CompactStats {
            merged_updates: merged_count,
            snapshot_bytes,
        })
    }

    /// Every stored document, sorted by id.
    pub fn list(&self) -> Result<Vec<DocInfo>, StoreError> {
        let mut ids = Vec::new();
        for snapshot in [true, false] {
            let mut from = records::kind_start(snapshot).to_vec();
            while let Some(item) = self.inner.db.range(from.clone()..).next() {
                let (key, _) = item?;
                let Some((id, _)) = records::split_doc_key(&key, snapshot) else {
                    break;
                };
                // Skip past this document: 0x01 sorts right after its 0x00.
                from = if snapshot {
                    records::snapshot_prefix(&id)
                } else {
                    records::log_prefix(&id)
                };
                *from.last_mut().expect("prefix ends with 0x00") = 1;
                ids.push(id);
            }
        }
        ids.sort();
        ids.dedup();
        let mut infos = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(info) = self.info(&id)? {
                infos.push(info);
            }
        }
        Ok(infos)
    }

    /// Info for one document, `None` if it has never been written.
    pub fn info(&self, doc: &DocId) -> Result<Option<DocInfo>, StoreError> {
        let slot = self.slot(doc);
        let state = self.with_state(&slot, doc, |s| *s)?;
        Ok(state.exists().then(|| DocInfo {
            id: doc.clone(),
            size_bytes: state.snapshot_bytes + state.log_bytes,
            update_count: state.snapshot_updates + state.log_len,
            log_len: state.log_len,
            last_modified: ms_to_time(state.last_modified_ms),
        }))
    }

    /// Removes a document entirely (durable on return). Returns whether it
    /// existed.
    pub fn delete(&self, doc: &DocId) -> Result<bool, StoreError> {
        self.inner.commit.check_healthy()?;
        let slot = self.slot(doc);
        let _maintenance = lock(&slot.maintenance);
        let mut state = lock(&slot.state);
        let _writing = slot.layout.write().unwrap_or_else(|e| e.into_inner());
        let mut batch = sled::Batch::default();
        let mut existed = false;
        for prefix in [records::snapshot_prefix(doc), records::log_prefix(doc)] {
            for item in self.inner.db.scan_prefix(prefix) {
                batch.remove(item?.0);
                existed = true;
            }
        }
        self.inner.db.apply_batch(batch)?;
        *state = Some(DocState {
            next_seq: 1,
            ..DocState::default()
        });
        drop((_writing, state));
        self.inner.commit.register().wait_synced()?;
        Ok(existed)
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

    /// Flushes everything to disk (used at shutdown).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.inner.commit.sync_now()
    }
}

/// Checks (or, for a new directory, writes) the data-dir format version.
fn check_format(db: &sled::Db) -> Result<(), StoreError> {
    match db.get(records::META_KEY)? {
        Some(v) => {
            let found = <[u8; 4]>::try_from(&v[..])
                .map(u32::from_be_bytes)
                .unwrap_or(u32::MAX);
            if found == 0 || found > records::DATA_FORMAT_VERSION {
                return Err(StoreError::UnsupportedFormat {
                    found,
                    supported: records::DATA_FORMAT_VERSION,
                });
            }
            if found < records::DATA_FORMAT_VERSION {
                // Older layouts stay readable; mark the directory as the
                // current version so older releases refuse the newer records.
                db.insert(
                    records::META_KEY,
                    &records::DATA_FORMAT_VERSION.to_be_bytes(),
                )?;
                tracing::info!(
                    from = found,
                    to = records::DATA_FORMAT_VERSION,
                    "data directory format upgraded"
                );
            }
        }
        None => {
            db.insert(
                records::META_KEY,
                &records::DATA_FORMAT_VERSION.to_be_bytes(),
            )?;
        }
    }
    Ok(())
}
