//! Deferred appends merged at a checkpoint (see the crate docs of
//! `commit`): what a reader, a compaction, a reopen and a crash image see
//! afterwards is exactly what was appended, and the metadata counts exactly
//! the bytes sled holds.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Editor, append_durable, id, open, open_raw_sled, text};
use tandem_store::{DocId, Store, records};

const TIMEOUT: Duration = Duration::from_secs(60);

/// More one-chunk appends than a checkpoint lets wait (it is then due
/// early, and merges them).
const TYPED: usize = 1100;

/// Types `n` characters into `doc`, one durable append each; returns the
/// text typed.
fn type_chars(store: &Store, doc: &DocId, editor: &Editor, n: usize, text: &mut String) {
    for i in 0..n {
        let c = char::from(b'a' + (i % 26) as u8);
        let update = editor.insert(text.len() as u32, &c.to_string());
        text.push(c);
        append_durable(store, doc, &update);
    }
}

/// Waits until a checkpoint merged records. The early checkpoint leaves a
/// document unmerged when it finds the document's counters or maintenance
/// lock busy (its `try_lock`s; the typing thread registering its next
/// append), and what is deferred after it waits for the checkpoint of the
/// timer, which runs only after a round: so this runs rounds meanwhile.
fn wait_merged(store: &Store) {
    tick_until_merged(store);
}

/// Appends one update to each of a series of fresh documents (nothing of
/// theirs to merge), running rounds until a checkpoint due by its timer or
/// by the deferred appends has merged records.
fn tick_until_merged(store: &Store) {
    let deadline = Instant::now() + TIMEOUT;
    let mut ticks = 0;
    while store.commit_stats().merged_records == 0 {
        assert!(Instant::now() < deadline, "no checkpoint merged records");
        let doc = id(&format!("tick-{ticks}"));
        append_durable(store, &doc, &Editor::new(9).insert(0, "x"));
        ticks += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Bytes of the document's records in sled (snapshot and log), read with
/// sled itself once the store is closed.
fn bytes_in_sled(dir: &Path, doc: &DocId) -> u64 {
    let db = open_raw_sled(dir);
    [records::snapshot_prefix(doc), records::log_prefix(doc)]
        .iter()
        .flat_map(|prefix| db.scan_prefix(prefix))
        .map(|item| item.unwrap().1.len() as u64)
        .sum()
}

#[test]
fn merged_appends_read_back_whole_and_their_counters_match_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let doc = id("typed");
    let editor = Editor::new(1);
    let mut expected = String::new();
    type_chars(&store, &doc, &editor, TYPED, &mut expected);
    wait_merged(&store);
    let merged = store.commit_stats().merged_records;
    assert!(
        merged > TYPED as u64 / 2,
        "only {merged} of {TYPED} records merged"
    );
    assert_eq!(text(&store.load(&doc).unwrap()), expected);
    let info = store.info(&doc).unwrap().unwrap();
    assert_eq!(info.update_count, TYPED as u64);
    // Appends after the merge chain on.
    type_chars(&store, &doc, &editor, 10, &mut expected);
    let size = store.info(&doc).unwrap().unwrap().size_bytes;
    drop(store);
    assert_eq!(size, bytes_in_sled(dir.path(), &doc), "counted bytes");

    let store = open(dir.path());
    assert_eq!(text(&store.load(&doc).unwrap()), expected);
    let info = store.info(&doc).unwrap().unwrap();
    assert_eq!(
        (info.update_count, info.size_bytes),
        (TYPED as u64 + 10, size)
    );
    // A full compaction then leaves the snapshot alone.
    let stats = store.compact(&doc).unwrap();
    assert_eq!(stats.merged_updates, TYPED as u64 + 10);
    assert_eq!(text(&store.load(&doc).unwrap()), expected);
}

/// A checkpoint (here the one due early, past the deferred appends a
/// checkpoint lets wait) is timed (`CommitStats::checkpoint_times`), and
/// the rounds' syncs are not counted as checkpoints.
#[test]
fn a_checkpoint_is_timed_and_no_round_counts_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let doc = id("timed");
    let mut expected = String::new();
    type_chars(&store, &doc, &Editor::new(3), TYPED, &mut expected);
    wait_merged(&store);
    let deadline = Instant::now() + TIMEOUT;
    while store.commit_stats().checkpoint_times.count() == 0 {
        assert!(Instant::now() < deadline, "no checkpoint was timed");
        std::thread::sleep(Duration::from_millis(10));
    }
    let times = store.commit_stats().checkpoint_times;
    // A flush of sled and a sync of its file: never under a microsecond.
    assert!(times.total_us >= times.count(), "{times:?}");
    // A checkpoint merged the records, and none of the rounds' syncs is
    // counted as one: far fewer checkpoints than syncs.
    assert!(times.count() < store.commit_stats().syncs / 10, "{times:?}");
}

#[test]
fn a_compaction_up_to_a_seq_inside_a_merged_record_keeps_the_later_updates() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let doc = id("straddled");
    let editor = Editor::new(2);
    let mut expected = String::new();
    // The room's view: its state as of seq 555, then more appends.
    type_chars(&store, &doc, &editor, 555, &mut expected);
    let state_at_555 = editor.state();
    type_chars(&store, &doc, &editor, TYPED - 555, &mut expected);
    wait_merged(&store);

    // Merged records hold about a hundred one-char updates each, so seq
    // 555 is inside one of them.
    store.compact_from_state(&doc, 555, state_at_555).unwrap();
    assert_eq!(text(&store.load(&doc).unwrap()), expected);
    let info = store.info(&doc).unwrap().unwrap();
    assert_eq!(info.update_count, TYPED as u64);
    let size = info.size_bytes;
    drop(store);
    assert_eq!(size, bytes_in_sled(dir.path(), &doc), "counted bytes");

    let store = open(dir.path());
    assert_eq!(text(&store.load(&doc).unwrap()), expected);
    // The kept updates are still log records: a compaction merges them.
    let stats = store.compact(&doc).unwrap();
    assert_eq!(stats.merged_updates, TYPED as u64 - 555);
    assert_eq!(text(&store.load(&doc).unwrap()), expected);
    assert_eq!(
        store.info(&doc).unwrap().unwrap().update_count,
        TYPED as u64
    );
}

#[test]
fn a_crash_after_the_merge_reached_sled_but_before_the_log_was_emptied_opens_unmerged() {
    // The state on disk of a crash between a checkpoint's sled flush and
    // its emptying of the log: sled holds the merged records, the log still
    // every append as logged. Replaying the log over the merge must give
    // back exactly the appended document and counters.
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    let store = open(&live);
    let doc = id("replayed");
    let editor = Editor::new(3);
    let mut expected = String::new();
    // Fewer than a checkpoint lets wait: they wait for its timer.
    type_chars(&store, &doc, &editor, 1000, &mut expected);
    let log = std::fs::read(live.join(tandem_store::wal::WAL_FILE)).unwrap();
    // Other documents' writes run rounds until a checkpoint has merged the
    // first document's appends.
    tick_until_merged(&store);
    drop(store);
    std::fs::write(live.join(tandem_store::wal::WAL_FILE), log).unwrap();

    let store = open(&live);
    assert_eq!(text(&store.load(&doc).unwrap()), expected);
    let info = store.info(&doc).unwrap().unwrap();
    assert_eq!(info.update_count, 1000);
    let size = info.size_bytes;
    drop(store);
    assert_eq!(size, bytes_in_sled(&live, &doc), "counted bytes");
}

#[test]
fn runs_cut_by_the_chunk_size_keep_every_record_and_count_exactly() {
    // Updates of ~1.5 and ~3 KB: two of the first fit one chunk, a third
    // does not, so the merge writes runs of two and leaves every ~3 KB
    // record as a run of one.
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let doc = id("chunky");
    let editor = Editor::new(5);
    let mut expected = String::new();
    const CHUNKY: usize = 30;
    for i in 0..CHUNKY {
        let len = if i % 3 == 2 { 3000 } else { 1500 };
        let piece: String = std::iter::repeat_n(char::from(b'a' + (i % 26) as u8), len).collect();
        let update = editor.insert(expected.len() as u32, &piece);
        expected.push_str(&piece);
        append_durable(&store, &doc, &update);
    }
    // Too few for an early checkpoint: the timer's merges them.
    tick_until_merged(&store);
    assert_eq!(text(&store.load(&doc).unwrap()), expected);
    let info = store.info(&doc).unwrap().unwrap();
    assert_eq!(info.update_count, CHUNKY as u64);
    drop(store);
    assert_eq!(
        info.size_bytes,
        bytes_in_sled(dir.path(), &doc),
        "counted bytes"
    );
    let store = open(dir.path());
    assert_eq!(text(&store.load(&doc).unwrap()), expected);
}

#[test]
fn a_compaction_of_one_document_leaves_the_others_appends_to_be_merged() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let compacted = id("compacted");
    append_durable(&store, &compacted, &Editor::new(7).insert(0, "c"));
    let doc = id("typing");
    let editor = Editor::new(8);
    let mut expected = String::new();
    type_chars(&store, &doc, &editor, 600, &mut expected);
    // Its write is applied after its own document's deferred appends only.
    store.compact(&compacted).unwrap();
    tick_until_merged(&store);
    let merged = store.commit_stats().merged_records;
    assert!(merged >= 590, "{merged} of the 600 appends merged");
    assert_eq!(text(&store.load(&doc).unwrap()), expected);
    assert_eq!(text(&store.load(&compacted).unwrap()), "c");
}
