//! The write-ahead log on a real data directory: an acknowledged write is in
//! the log before sled has it on disk, and a directory copied at that moment
//! (what a crash leaves) opens with the write, replayed from the log.

mod common;

use std::path::Path;

use common::{Editor, append_durable, id, open, text};
use tandem_store::wal::logged_records;

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
    assert_eq!(
        logged_records(&live).unwrap(),
        2,
        "the acknowledged appends are not in the log"
    );
    // The state a crash right now would leave on disk.
    let copy = dir.path().join("copy");
    copy_dir(&live, &copy);
    drop(store);

    let reopened = open(&copy);
    assert_eq!(text(&reopened.load(&doc).unwrap()), "kept twice");
    // Replayed into sled and synced: the log is empty again.
    assert_eq!(logged_records(&copy).unwrap(), 0);
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
    assert_eq!(logged_records(dir.path()).unwrap(), 0);
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

#[test]
fn a_copy_taken_after_a_checkpoint_reused_the_log_opens_with_every_acknowledged_write() {
    // Past the checkpoint size the flusher syncs sled and starts the log
    // over (a new epoch, records written over the old ones in place): a
    // crash copy then holds stale records of the older epoch after the
    // live ones, and must open with exactly the acknowledged state.
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    let store = open(&live);
    let big = id("big");
    let filler = vec![b'x'; 3000];
    let editor = Editor::new(11);
    let mut expected = String::new();
    let mut last = None;
    for i in 0..3200u32 {
        let piece = if i % 100 == 0 { "y" } else { "" };
        if !piece.is_empty() {
            let update = editor.insert(expected.len() as u32, piece);
            expected.push_str(piece);
            last = Some(store.append(&big, &update).unwrap());
        }
        // Bulk that fills the log (any bytes: this doc is never loaded).
        let _ = store.append(&id("bulk"), &filler).unwrap();
    }
    last.unwrap().wait_durable().unwrap();
    // Wait (bounded) until the log was started over at least once.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while logged_records(&live).unwrap() >= 3200 + 32 {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint happened"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    append_durable(&store, &big, &editor.insert(expected.len() as u32, "z"));
    expected.push('z');
    let copy = dir.path().join("copy");
    copy_dir(&live, &copy);
    drop(store);
    let reopened = open(&copy);
    assert_eq!(text(&reopened.load(&big).unwrap()), expected);
    assert_eq!(
        reopened.info(&big).unwrap().unwrap().update_count,
        expected.len() as u64
    );
}
