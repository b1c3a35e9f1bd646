//! Data directories written in every past format version
//! (`fixtures/store-v1/`, `fixtures/store-v2/`, ...) must stay readable by
//! every later release.
//!
//! When adding a *new* format version, write its directory (older ones are
//! kept as they are): `TANDEM_WRITE_STORE_FIXTURE=1 cargo test -p
//! tandem-store --test format_fixture` writes `fixtures/store-v<current>/`.

mod common;

use std::path::{Path, PathBuf};

use common::{Editor, append_durable, id, open, text};

fn fixture_dir(version: u32) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../fixtures/store-v{version}"))
}

/// Words of the batch document (format 2 on): one `append_batch`.
const BATCH_WORDS: [&str; 4] = ["batched ", "words ", "in one ", "record"];

const NOTES: &str = "format one notes, compacted then appended";

fn big_text() -> String {
    (0..2000).map(|i| format!("{i:05} ")).collect()
}

fn write_fixture(dir: &Path) {
    let store = open(dir);
    let editor = Editor::new(1);
    let notes = id("fixture-notes");
    for word in NOTES.split_inclusive(' ').take(3) {
        append_durable(&store, &notes, &editor.insert(u32::MAX, word));
    }
    store.compact(&notes).unwrap();
    for word in NOTES.split_inclusive(' ').skip(3) {
        append_durable(&store, &notes, &editor.insert(u32::MAX, word));
    }
    // One record spanning several chunks.
    let big = id("fixture-big");
    append_durable(&store, &big, &Editor::new(2).insert(0, &big_text()));
    // Format 2: a batch record, spanning several chunks.
    let editor = Editor::new(3);
    let mut updates: Vec<Vec<u8>> = BATCH_WORDS
        .iter()
        .map(|w| editor.insert(u32::MAX, w))
        .collect();
    updates.push(editor.insert(0, &big_text()));
    let refs: Vec<&[u8]> = updates.iter().map(Vec::as_slice).collect();
    store
        .append_batch(&id("fixture-batch"), &refs)
        .unwrap()
        .wait_durable()
        .unwrap();
    store.flush().unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn every_format_fixture_still_loads() {
    let current = tandem_store::records::DATA_FORMAT_VERSION;
    if std::env::var_os("TANDEM_WRITE_STORE_FIXTURE").is_some() {
        let fixture = fixture_dir(current);
        let _ = std::fs::remove_dir_all(&fixture);
        write_fixture(&fixture);
    }
    for version in 1..=current {
        check_fixture(version);
    }
}

fn check_fixture(version: u32) {
    let fixture = fixture_dir(version);
    assert!(fixture.is_dir(), "{} is missing", fixture.display());
    // Work on a copy: opening a directory writes to it.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture, dir.path());
    let store = open(dir.path());
    let notes = id("fixture-notes");
    assert_eq!(text(&store.load(&notes).unwrap()), NOTES);
    let info = store.info(&notes).unwrap().unwrap();
    assert_eq!(info.update_count, NOTES.split_inclusive(' ').count() as u64);
    assert_eq!(info.log_len, info.update_count - 3);
    assert_eq!(text(&store.load(&id("fixture-big")).unwrap()), big_text());
    let ids: Vec<String> = store
        .list()
        .unwrap()
        .into_iter()
        .map(|i| i.id.to_string())
        .collect();
    if version >= 2 {
        let batch = id("fixture-batch");
        let expected = big_text() + &BATCH_WORDS.concat();
        assert_eq!(text(&store.load(&batch).unwrap()), expected);
        let info = store.info(&batch).unwrap().unwrap();
        assert_eq!(info.log_len, BATCH_WORDS.len() as u64 + 1);
        assert_eq!(ids, ["fixture-batch", "fixture-big", "fixture-notes"]);
    } else {
        assert_eq!(ids, ["fixture-big", "fixture-notes"]);
    }
    // And it can still be written and compacted.
    append_durable(&store, &notes, &Editor::new(9).insert(0, ">"));
    store.compact(&notes).unwrap();
    let after = text(&store.load(&notes).unwrap());
    assert!(
        after.len() == NOTES.len() + 1 && after.contains(NOTES),
        "{after}"
    );
}
