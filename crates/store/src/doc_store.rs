//! `DocStore`: the store's capabilities as a trait, so another backend can
//! stand in for sled later (the gateway may hold a `dyn DocStore`).

use crate::{Appended, CompactStats, DocId, DocInfo, DocPage, Store, StoreError, StoreHealth};

/// What Tandem needs from a document store. [`Store`] (sled) is the
/// embedded default; see its methods for the exact contract of each.
pub trait DocStore: Send + Sync {
    /// Snapshot + log replay into a fresh `yrs::Doc`; empty if never written.
    fn load(&self, doc: &DocId) -> Result<yrs::Doc, StoreError>;
    /// Appends one v1 update; seqs in call order; the ticket resolves when
    /// durable.
    fn append(&self, doc: &DocId, update: &[u8]) -> Result<Appended, StoreError>;
    /// Appends several v1 updates atomically, consecutive seqs; the ticket
    /// carries the last seq and resolves when all are durable.
    fn append_batch(&self, doc: &DocId, updates: &[&[u8]]) -> Result<Appended, StoreError>;
    /// True when the document's log passed a compaction threshold.
    fn needs_compaction(&self, doc: &DocId) -> bool;
    /// Merges the log into a new snapshot atomically.
    fn compact(&self, doc: &DocId) -> Result<CompactStats, StoreError>;
    /// Every stored document.
    fn list(&self) -> Result<Vec<DocInfo>, StoreError>;
    /// One page of documents in id order (O(page)).
    fn list_page(
        &self,
        prefix: &str,
        after: Option<&DocId>,
        limit: usize,
    ) -> Result<DocPage, StoreError>;
    /// Whether writes succeed now (cheap).
    fn health(&self) -> StoreHealth;
    /// Info for one document, `None` if never written.
    fn info(&self, doc: &DocId) -> Result<Option<DocInfo>, StoreError>;
    /// Removes a document entirely; whether it existed.
    fn delete(&self, doc: &DocId) -> Result<bool, StoreError>;
    /// Full state as one v1 update.
    fn export(&self, doc: &DocId) -> Result<Vec<u8>, StoreError>;
    /// Validates and merges a v1 update; durable on return.
    fn import(&self, doc: &DocId, update: &[u8]) -> Result<(), StoreError>;
    /// Flushes everything to disk.
    fn flush(&self) -> Result<(), StoreError>;
}

impl DocStore for Store {
    fn load(&self, doc: &DocId) -> Result<yrs::Doc, StoreError> {
        Store::load(self, doc)
    }
    fn append(&self, doc: &DocId, update: &[u8]) -> Result<Appended, StoreError> {
        Store::append(self, doc, update)
    }
    fn append_batch(&self, doc: &DocId, updates: &[&[u8]]) -> Result<Appended, StoreError> {
        Store::append_batch(self, doc, updates)
    }
    fn needs_compaction(&self, doc: &DocId) -> bool {
        Store::needs_compaction(self, doc)
    }
    fn compact(&self, doc: &DocId) -> Result<CompactStats, StoreError> {
        Store::compact(self, doc)
    }
    fn list(&self) -> Result<Vec<DocInfo>, StoreError> {
        Store::list(self)
    }
    fn list_page(
        &self,
        prefix: &str,
        after: Option<&DocId>,
        limit: usize,
    ) -> Result<DocPage, StoreError> {
        Store::list_page(self, prefix, after, limit)
    }
    fn health(&self) -> StoreHealth {
        Store::health(self)
    }
    fn info(&self, doc: &DocId) -> Result<Option<DocInfo>, StoreError> {
        Store::info(self, doc)
    }
    fn delete(&self, doc: &DocId) -> Result<bool, StoreError> {
        Store::delete(self, doc)
    }
    fn export(&self, doc: &DocId) -> Result<Vec<u8>, StoreError> {
        Store::export(self, doc)
    }
    fn import(&self, doc: &DocId, update: &[u8]) -> Result<(), StoreError> {
        Store::import(self, doc, update)
    }
    fn flush(&self) -> Result<(), StoreError> {
        Store::flush(self)
    }
}
