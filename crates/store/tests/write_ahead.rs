//! The write-ahead log on a real data directory: an acknowledged write is in
//! the log before sled has it on disk, and a directory copied at that moment
//! (what a crash leaves) opens with the write, replayed from the log.

mod common;

use std::path::Path;

use common::{Editor, append_durable, id, open, text};
use tandem_store::wal::WAL_FILE;

/// Copies a directory's files (the data directory is flat).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

#[test]
fn an_acknowledged_append_is_logged_and_a_copy_taken_before_any_checkpoint_opens_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    let store = open(&live);
    let doc = id("logged");
    let editor = Editor::new(7);
    append_durable(&store, &doc, &editor.insert(0, "kept "));
    append_durable(&store, &doc, &editor.insert(5, "twice"));
    // Acknowledged, so in the log (sled flushes only at checkpoints, 5 s apart).
    let logged = std::fs::metadata(live.join(WAL_FILE)).unwrap().len();
    assert!(logged > 0, "the acknowledged appends are not in the log");
    // The state a crash right now would leave on disk.
    let copy = dir.path().join("copy");
    copy_dir(&live, &copy);
    drop(store);

    let reopened = open(&copy);
    assert_eq!(text(&reopened.load(&doc).unwrap()), "kept twice");
    // Replayed into sled and synced: the log is empty again.
    assert_eq!(std::fs::metadata(copy.join(WAL_FILE)).unwrap().len(), 0);
}

#[test]
fn a_clean_close_leaves_an_empty_log_and_reads_see_their_own_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let doc = id("own-writes");
    let editor = Editor::new(8);
    // Not waited for: a read still sees it (it waits for the write in flight).
    let appended = store.append(&doc, &editor.insert(0, "mine")).unwrap();
    assert_eq!(text(&store.load(&doc).unwrap()), "mine");
    appended.wait_durable().unwrap();
    drop(store);
    assert_eq!(
        std::fs::metadata(dir.path().join(WAL_FILE)).unwrap().len(),
        0
    );
    assert_eq!(text(&open(dir.path()).load(&doc).unwrap()), "mine");
}

#[test]
fn an_acknowledged_write_is_listed_counted_and_loaded_at_once() {
    // Tickets resolve once the log is synced, before sled has the write:
    // every read path must still see it.
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for i in 0..100u32 {
        let doc = id(&format!("doc-{i:03}"));
        append_durable(&store, &doc, &Editor::new(5).insert(0, "x"));
        assert_eq!(
            store.list().unwrap().len(),
            i as usize + 1,
            "list after {i}"
        );
        assert_eq!(store.stored_ids().unwrap().len(), i as usize + 1);
        assert_eq!(store.info(&doc).unwrap().map(|d| d.update_count), Some(1));
        assert_eq!(text(&store.load(&doc).unwrap()), "x");
    }
}
