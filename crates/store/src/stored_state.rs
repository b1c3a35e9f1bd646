//! A document as the store holds it, read but not decoded: the snapshot
//! (`encode_state_as_update_v1` of the merged document, pending content
//! included) and the log records after it, each a v1 update.
//!
//! For a server that answers a joiner from the stored bytes while it builds
//! the `yrs::Doc` in the background: [`Store::read_stored`] is one read, and
//! both the answer ([`StoredState::updates`]) and the document
//! ([`StoredState::into_doc`]) come from that same read, so they cannot
//! differ even if something appends in between.

use crate::replay::{self, StoredSnapshot, StoredUpdate};
use crate::{DocId, Store, StoreError, records};

/// One read of a document's snapshot and log (see the module docs).
pub struct StoredState {
    /// The document.
    doc: DocId,
    /// Options of the `Doc` [`StoredState::into_doc`] builds.
    options: yrs::Options,
    /// Its snapshot, if it has one.
    snapshot: Option<StoredSnapshot>,
    /// Its log records after the snapshot, in seq order.
    log: Vec<StoredUpdate>,
}

impl Store {
    /// Reads a document's snapshot and log records without decoding them
    /// into a `yrs::Doc` (empty for a document never written). Blocking
    /// (sled reads), but no yrs work: call it from `spawn_blocking`.
    pub fn read_stored(&self, doc: &DocId) -> Result<StoredState, StoreError> {
        let (snapshot, log) = self.read_all(doc)?;
        Ok(StoredState {
            doc: doc.clone(),
            options: self.doc_options(),
            snapshot,
            log,
        })
    }
}

impl StoredState {
    /// The stored v1 updates in order: the snapshot, then every update of
    /// every log record. Applied in this order to an empty `Doc` (or merged
    /// with `yrs::merge_updates_v1`) they give the document
    /// [`StoredState::into_doc`] loads. A record that cannot be read fails
    /// with [`StoreError::CorruptRecord`], as [`Store::load`] would.
    pub fn updates(&self) -> Result<Vec<&[u8]>, StoreError> {
        let mut out: Vec<&[u8]> = self.snapshot.iter().map(|s| &s.state[..]).collect();
        for record in &self.log {
            let corrupt = |reason: String| StoreError::CorruptRecord {
                doc: self.doc.clone(),
                seq: record.seq,
                reason,
            };
            let (header, bytes) = record.update.as_ref().map_err(|r| corrupt(r.clone()))?;
            out.extend(records::record_updates(header, bytes).map_err(corrupt)?);
        }
        Ok(out)
    }

    /// Whether nothing is stored (a document never written).
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none() && self.log.is_empty()
    }

    /// Replays the read into a fresh `yrs::Doc`, exactly as [`Store::load`]
    /// does (yrs work: run it where yrs work runs).
    pub fn into_doc(self) -> Result<yrs::Doc, StoreError> {
        replay::replay(
            &self.doc,
            self.options,
            self.snapshot.as_ref(),
            &self.log,
            None,
        )
    }
}
