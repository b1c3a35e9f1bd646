//! Restart, compaction and basic API behaviour on real sled directories.

mod common;

use common::{Editor, append_durable, id, open, text};
use tandem_store::{Store, StoreConfig};

#[test]
fn restart_round_trip_keeps_every_update() {
    let dir = tempfile::tempdir().unwrap();
    let doc = id("notes");
    let editor = Editor::new(1);
    {
        let store = open(dir.path());
        for (i, word) in ["hello", " world", "!"].iter().enumerate() {
            let ticket = store.append(&doc, &editor.insert(u32::MAX, word)).unwrap();
            assert_eq!(ticket.seq, i as u64 + 1);
            ticket.wait_durable().unwrap();
        }
    }
    let store = open(dir.path());
    let loaded = store.load(&doc).unwrap();
    assert_eq!(text(&loaded), "hello world!");
    let info = store.info(&doc).unwrap().expect("doc exists");
    assert_eq!(info.update_count, 3);
    assert_eq!(info.log_len, 3);
    // Seqs continue after a restart.
    let next = store.append(&doc, &editor.insert(0, ">")).unwrap();
    assert_eq!(next.seq, 4);
    next.wait_durable().unwrap();
}

#[test]
fn never_written_doc_loads_empty_and_has_no_info() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let doc = id("nothing-here");
    assert_eq!(text(&store.load(&doc).unwrap()), "");
    assert!(store.info(&doc).unwrap().is_none());
    assert!(store.list().unwrap().is_empty());
    assert!(!store.needs_compaction(&doc));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_appends_resolve_durable() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let doc = id("async");
    let editor = Editor::new(7);
    let mut tickets = Vec::new();
    for i in 0..100 {
        tickets.push(store.append(&doc, &editor.insert(i, "x")).unwrap());
    }
    for (i, ticket) in tickets.into_iter().enumerate() {
        assert_eq!(ticket.durable().await.unwrap(), i as u64 + 1);
    }
    assert_eq!(text(&store.load(&doc).unwrap()).len(), 100);
}

#[test]
fn compaction_keeps_content_and_shrinks_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let doc = id("compact-me");
    let editor = Editor::new(3);
    for i in 0..200 {
        append_durable(&store, &doc, &editor.insert(i, "ab"));
    }
    append_durable(&store, &doc, &editor.delete(10, 50));
    let before = text(&store.load(&doc).unwrap());
    let stats = store.compact(&doc).unwrap();
    assert_eq!(stats.merged_updates, 201);
    let info = store.info(&doc).unwrap().unwrap();
    assert_eq!(info.log_len, 0);
    assert_eq!(info.update_count, 201);
    assert_eq!(text(&store.load(&doc).unwrap()), before);
    assert_eq!(text(&store.load(&doc).unwrap()), text(&editor.doc));
    // A second compaction has nothing to merge.
    assert_eq!(store.compact(&doc).unwrap().merged_updates, 0);
}

#[test]
fn compaction_then_more_appends_then_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let doc = id("c2");
    let editor = Editor::new(5);
    {
        let store = open(dir.path());
        for i in 0..50 {
            append_durable(&store, &doc, &editor.insert(i, "q"));
        }
        store.compact(&doc).unwrap();
        for i in 0..30 {
            append_durable(&store, &doc, &editor.insert(i * 2, "z"));
        }
        let info = store.info(&doc).unwrap().unwrap();
        assert_eq!((info.log_len, info.update_count), (30, 80));
    }
    let store = open(dir.path());
    assert_eq!(text(&store.load(&doc).unwrap()), text(&editor.doc));
    let info = store.info(&doc).unwrap().unwrap();
    assert_eq!((info.log_len, info.update_count), (30, 80));
    // Seqs are never reused after compaction.
    let ticket = store.append(&doc, &editor.insert(0, "!")).unwrap();
    assert_eq!(ticket.seq, 81);
    ticket.wait_durable().unwrap();
    store.compact(&doc).unwrap();
    drop(store);
    assert_eq!(
        text(&open(dir.path()).load(&doc).unwrap()),
        text(&editor.doc)
    );
}

#[test]
fn needs_compaction_follows_thresholds() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(dir.path());
    config.compact_after_updates = 10;
    config.compact_after_bytes = u64::MAX;
    let store = Store::open(config).unwrap();
    let doc = id("t");
    let editor = Editor::new(9);
    for i in 0..9 {
        append_durable(&store, &doc, &editor.insert(i, "a"));
        assert!(!store.needs_compaction(&doc));
    }
    append_durable(&store, &doc, &editor.insert(0, "a"));
    assert!(store.needs_compaction(&doc));
    store.compact(&doc).unwrap();
    assert!(!store.needs_compaction(&doc));
}

#[test]
fn large_updates_round_trip_across_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let doc = id("big");
    let editor = Editor::new(11);
    let big = "0123456789".repeat(50_000);
    {
        let store = open(dir.path());
        append_durable(&store, &doc, &editor.insert(0, &big));
        store.compact(&doc).unwrap();
        append_durable(&store, &doc, &editor.delete(0, 400_000));
    }
    let store = open(dir.path());
    assert_eq!(text(&store.load(&doc).unwrap()), &big[400_000..]);
    store.compact(&doc).unwrap();
    assert_eq!(text(&store.load(&doc).unwrap()), &big[400_000..]);
}

#[test]
fn export_import_delete_and_list() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (a, b) = (id("a"), id("b"));
    let editor = Editor::new(2);
    append_durable(&store, &a, &editor.insert(0, "shared text"));
    let exported = store.export(&a).unwrap();
    store.import(&b, &exported).unwrap();
    assert_eq!(text(&store.load(&b).unwrap()), "shared text");
    let listed: Vec<String> = store
        .list()
        .unwrap()
        .into_iter()
        .map(|i| i.id.to_string())
        .collect();
    assert_eq!(listed, ["a", "b"]);
    assert!(store.import(&b, &[0xff, 0xff, 0xff]).is_err());
    assert!(store.delete(&a).unwrap());
    assert!(!store.delete(&a).unwrap());
    assert!(store.info(&a).unwrap().is_none());
    assert_eq!(text(&store.load(&a).unwrap()), "");
    drop(store);
    let store = open(dir.path());
    let listed: Vec<String> = store
        .list()
        .unwrap()
        .into_iter()
        .map(|i| i.id.to_string())
        .collect();
    assert_eq!(listed, ["b"]);
}

#[test]
fn batch_appends_get_consecutive_seqs_and_survive_restart_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let doc = id("batched");
    let editor = Editor::new(4);
    let words = ["one ", "two ", "three "];
    {
        let store = open(dir.path());
        let updates: Vec<Vec<u8>> = words.iter().map(|w| editor.insert(u32::MAX, w)).collect();
        let refs: Vec<&[u8]> = updates.iter().map(Vec::as_slice).collect();
        let ticket = store.append_batch(&doc, &refs).unwrap();
        assert_eq!(ticket.seq, 3, "the ticket carries the batch's last seq");
        ticket.wait_durable().unwrap();
        let empty = store.append_batch(&doc, &[]).unwrap();
        assert_eq!(empty.wait_durable().unwrap(), 3);
        let single = store
            .append(&doc, &editor.insert(u32::MAX, "four"))
            .unwrap();
        assert_eq!(single.wait_durable().unwrap(), 4);
    }
    let store = open(dir.path());
    assert_eq!(text(&store.load(&doc).unwrap()), "one two three four");
    let info = store.info(&doc).unwrap().unwrap();
    assert_eq!((info.log_len, info.update_count), (4, 4));
    // Seqs continue after the batch's last one, also after a restart.
    let next = store.append(&doc, &editor.insert(0, ">")).unwrap();
    assert_eq!(next.wait_durable().unwrap(), 5);
    let stats = store.compact(&doc).unwrap();
    assert_eq!(stats.merged_updates, 5);
    let info = store.info(&doc).unwrap().unwrap();
    assert_eq!((info.log_len, info.update_count), (0, 5));
    assert_eq!(text(&store.load(&doc).unwrap()), ">one two three four");
}

#[test]
fn compaction_waits_for_the_log_to_match_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(dir.path());
    config.compact_after_updates = 1;
    let store = Store::open(config).unwrap();
    let doc = id("grows");
    let editor = Editor::new(5);
    let big = "x".repeat(20_000);
    append_durable(&store, &doc, &editor.insert(0, &big));
    store.compact(&doc).unwrap();
    let snapshot_bytes = store.info(&doc).unwrap().unwrap().size_bytes;
    // Small appends: past `compact_after_updates`, but the log is still far
    // smaller than the snapshot, so rewriting the snapshot would be waste.
    let mut log_bytes = 0;
    while log_bytes < snapshot_bytes {
        assert!(!store.needs_compaction(&doc));
        append_durable(&store, &doc, &editor.insert(0, "small edit "));
        log_bytes = store.info(&doc).unwrap().unwrap().size_bytes - snapshot_bytes;
    }
    assert!(store.needs_compaction(&doc));
}

#[test]
fn compaction_from_a_callers_state_merges_up_to_its_record_and_keeps_the_rest() {
    use yrs::{ReadTxn, StateVector, Transact};
    let dir = tempfile::tempdir().unwrap();
    let doc = id("live");
    let editor = Editor::new(9);
    {
        let store = open(dir.path());
        for i in 0..40 {
            append_durable(&store, &doc, &editor.insert(i, "a"));
        }
        // The caller's document as of record 40, then two more records.
        let state = editor
            .doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        append_durable(&store, &doc, &editor.insert(0, "b"));
        append_durable(&store, &doc, &editor.insert(0, "c"));
        let refused = store.compact_from_state(&doc, 43, state.clone());
        assert!(refused.is_err(), "past the last record");
        let stats = store.compact_from_state(&doc, 40, state).unwrap();
        assert_eq!(stats.merged_updates, 40);
        let info = store.info(&doc).unwrap().unwrap();
        assert_eq!((info.log_len, info.update_count), (2, 42));
        assert_eq!(text(&store.load(&doc).unwrap()), text(&editor.doc));
    }
    let store = open(dir.path());
    assert_eq!(text(&store.load(&doc).unwrap()), text(&editor.doc));
}
