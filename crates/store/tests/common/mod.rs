//! Helpers shared by the store's integration tests.
#![allow(dead_code)]

use std::path::Path;

use tandem_store::{DocId, Store, StoreConfig, SyncFaults};
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact};

/// A store on `dir` with default settings.
pub fn open(dir: &Path) -> Store {
    Store::open(StoreConfig::new(dir)).expect("open store")
}

/// A config for `dir` whose disk syncs go through a fault switch, and the
/// switch.
pub fn config_with_faults(dir: &Path) -> (StoreConfig, SyncFaults) {
    let faults = SyncFaults::new();
    let mut config = StoreConfig::new(dir);
    config.sync_faults = Some(faults.clone());
    (config, faults)
}

/// Appends `update` and waits until it is durable.
pub fn append_durable(store: &Store, doc: &DocId, update: &[u8]) {
    store
        .append(doc, update)
        .expect("append")
        .wait_durable()
        .expect("durable");
}

/// A valid document id.
pub fn id(s: &str) -> DocId {
    DocId::new(s).expect("valid id")
}

/// The text of root type "text".
pub fn text(doc: &Doc) -> String {
    let t = doc.get_or_insert_text("text");
    t.get_string(&doc.transact())
}

/// A simulated editor: a local yrs doc whose edits come out as v1 updates.
pub struct Editor {
    pub doc: Doc,
}

impl Editor {
    /// An editor with a fixed client id (distinct per simulated client).
    pub fn new(client_id: u64) -> Self {
        Editor {
            doc: Doc::with_client_id(client_id),
        }
    }

    /// Inserts `s` at `index` (clamped) and returns the update.
    pub fn insert(&self, index: u32, s: &str) -> Vec<u8> {
        let t = self.doc.get_or_insert_text("text");
        let before = self.doc.transact().state_vector();
        let mut txn = self.doc.transact_mut();
        let len = t.len(&txn);
        t.insert(&mut txn, index.min(len), s);
        drop(txn);
        self.doc.transact().encode_state_as_update_v1(&before)
    }

    /// Deletes up to `n` chars at `index` (clamped) and returns the update.
    pub fn delete(&self, index: u32, n: u32) -> Vec<u8> {
        let t = self.doc.get_or_insert_text("text");
        let before = self.doc.transact().state_vector();
        let mut txn = self.doc.transact_mut();
        let len = t.len(&txn);
        let index = index.min(len);
        t.remove_range(&mut txn, index, n.min(len - index));
        drop(txn);
        self.doc.transact().encode_state_as_update_v1(&before)
    }

    /// Full state as one update.
    pub fn state(&self) -> Vec<u8> {
        self.doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default())
    }
}

/// Full state of a loaded doc, for comparisons.
pub fn state_of(doc: &Doc) -> Vec<u8> {
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
}

/// Opens the data directory with sled directly (to tamper with records),
/// waiting for a just-dropped store's background threads to release it.
pub fn open_raw_sled(dir: &Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match sled::open(dir) {
            Ok(db) => return db,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("open sled: {e}"),
        }
    }
}
