//! Listing documents: pages of [`DocInfo`] read from the metadata records
//! (O(page), never a scan of the logs), and the full scan of record keys
//! that `check` and `salvage` use to find documents whose metadata is lost.

use std::time::SystemTime;

use crate::doc_state::DocState;
use crate::store::ms_to_time;
use crate::{DocId, Store, StoreError, records};

/// Default page size of [`Store::list_page`] (and `GET /api/docs`).
pub const DEFAULT_PAGE: usize = 100;

/// Largest page [`Store::list_page`] returns.
pub const MAX_PAGE: usize = 1000;

/// One row of a listing.
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

impl DocInfo {
    fn new(id: DocId, state: &DocState) -> Self {
        DocInfo {
            id,
            size_bytes: state.snapshot_bytes + state.log_bytes,
            update_count: state.snapshot_updates + state.log_len,
            log_len: state.log_len,
            last_modified: ms_to_time(state.last_modified_ms),
        }
    }
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct DocPage {
    /// Documents in id order.
    pub docs: Vec<DocInfo>,
    /// Pass as `after` for the next page; `None` on the last page.
    pub next: Option<DocId>,
}

impl Store {
    /// Up to `limit` (clamped to 1..=[`MAX_PAGE`]) documents whose id starts
    /// with `prefix`, in id order, strictly after `after`. Reads only the
    /// page's metadata records: the cost is O(page), whatever the number of
    /// documents.
    pub fn list_page(
        &self,
        prefix: &str,
        after: Option<&DocId>,
        limit: usize,
    ) -> Result<DocPage, StoreError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let (kind, end) = records::doc_meta_range();
        let mut start = kind.to_vec();
        start.extend_from_slice(prefix.as_bytes());
        if let Some(after) = after {
            // The smallest key greater than `after`'s.
            let mut key = records::doc_meta_key(after);
            key.push(0);
            start = start.max(key);
        }
        // Acknowledged writes may still be going into sled.
        self.settle_all()?;
        crate::open::contain("listing documents", || {
            let mut docs = Vec::with_capacity(limit + 1);
            for item in self.db()?.range(start.clone()..end.to_vec()) {
                let (key, value) = item?;
                if !key[1..].starts_with(prefix.as_bytes()) {
                    break;
                }
                let Some(id) = records::doc_of_meta_key(&key) else {
                    continue;
                };
                let state = match DocState::decode(&value) {
                    Ok(state) => state,
                    Err(_) => self.state_of(&id)?,
                };
                if docs.len() == limit {
                    let next = docs.last().map(|d: &DocInfo| d.id.clone());
                    return Ok(DocPage { docs, next });
                }
                docs.push(DocInfo::new(id, &state));
            }
            Ok(DocPage { docs, next: None })
        })
    }

    /// Every stored document, sorted by id (page after page; O(documents)).
    pub fn list(&self) -> Result<Vec<DocInfo>, StoreError> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = self.list_page("", after.as_ref(), MAX_PAGE)?;
            all.extend(page.docs);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// Info for one document, `None` if it has never been written. Creates
    /// no state for a missing document.
    pub fn info(&self, doc: &DocId) -> Result<Option<DocInfo>, StoreError> {
        let state = self.state_of(doc)?;
        Ok(state.exists().then(|| DocInfo::new(doc.clone(), &state)))
    }

    /// Every document that has a metadata record *or* any snapshot or log
    /// record, sorted: how `check` and `salvage` find documents whose
    /// metadata was lost. Scans every record key (O(documents) seeks).
    pub fn stored_ids(&self) -> Result<Vec<DocId>, StoreError> {
        self.settle_all()?;
        crate::open::contain("scanning the data directory", || {
            let mut ids = record_doc_ids(&self.db()?)?;
            let (start, end) = records::doc_meta_range();
            for item in self.db()?.range(start..end) {
                let (key, _) = item?;
                ids.extend(records::doc_of_meta_key(&key));
            }
            ids.sort();
            ids.dedup();
            Ok(ids)
        })
    }
}

/// The documents that have snapshot or log records (one seek per document).
pub(crate) fn record_doc_ids(db: &sled::Db) -> Result<Vec<DocId>, StoreError> {
    let mut ids = Vec::new();
    for snapshot in [true, false] {
        let mut from = records::kind_start(snapshot).to_vec();
        while let Some(item) = db.range(from.clone()..).next() {
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
            if let Some(last) = from.last_mut() {
                *last = 1;
            }
            ids.push(id);
        }
    }
    ids.sort();
    ids.dedup();
    Ok(ids)
}
