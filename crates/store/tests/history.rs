//! `skip_gc` is honoured end to end, through compaction and restart.

mod common;

use common::{Editor, append_durable, id, text};
use tandem_store::{Store, StoreConfig};
use yrs::updates::encoder::{Encoder, EncoderV1};
use yrs::{Doc, Options, ReadTxn, Transact, Update, updates::decoder::Decode};

/// Restores the version described by `snapshot` from `state`, as a doc that
/// keeps deleted content.
fn restore(state: &[u8], snapshot: &yrs::Snapshot) -> Result<String, yrs::error::Error> {
    let full = Doc::with_options(Options {
        skip_gc: true,
        ..Default::default()
    });
    full.transact_mut()
        .apply_update(Update::decode_v1(state).unwrap())
        .unwrap();
    let mut encoder = EncoderV1::new();
    full.transact()
        .encode_state_from_snapshot(snapshot, &mut encoder)?;
    let old = Doc::new();
    old.transact_mut()
        .apply_update(Update::decode_v1(&encoder.to_vec()).unwrap())
        .unwrap();
    Ok(text(&old))
}

/// Writes "hello world", snapshots that version, deletes "world", compacts.
fn write_history(store: &Store) -> yrs::Snapshot {
    let doc = id("history");
    let editor = Editor::new(1);
    append_durable(store, &doc, &editor.insert(0, "hello world"));
    let version = editor.doc.transact().snapshot();
    append_durable(store, &doc, &editor.delete(5, 6));
    store.compact(&doc).unwrap();
    version
}

#[test]
fn skip_gc_keeps_deleted_content_through_compaction_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(dir.path());
    config.skip_gc = true;
    let version = {
        let store = Store::open(config.clone()).unwrap();
        write_history(&store)
    };
    let store = Store::open(config).unwrap();
    let doc = id("history");
    let loaded = store.load(&doc).unwrap();
    assert_eq!(text(&loaded), "hello");
    let mut encoder = EncoderV1::new();
    loaded
        .transact()
        .encode_state_from_snapshot(&version, &mut encoder)
        .expect("loaded doc keeps history");
    assert_eq!(
        restore(&store.export(&doc).unwrap(), &version).unwrap(),
        "hello world"
    );
}

#[test]
fn without_skip_gc_compaction_collects_deleted_content() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    let version = write_history(&store);
    let doc = id("history");
    assert_eq!(text(&store.load(&doc).unwrap()), "hello");
    // The compacted state no longer holds " world": restoring cannot bring it back.
    let restored = restore(&store.export(&doc).unwrap(), &version);
    assert_ne!(restored.ok().as_deref(), Some("hello world"));
}
