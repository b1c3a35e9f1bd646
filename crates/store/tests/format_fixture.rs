//! A data directory written in format version 1 (`fixtures/store-v1/`)
//! must stay readable by every later release.
//!
//! Regenerate it only when adding a *new* format version (and keep the old
//! directory): `TANDEM_WRITE_STORE_FIXTURE=1 cargo test -p tandem-store --test format_fixture`.

mod common;

use std::path::{Path, PathBuf};

use common::{Editor, id, open, text};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/store-v1")
}

const NOTES: &str = "format one notes, compacted then appended";

fn big_text() -> String {
    (0..2000).map(|i| format!("{i:05} ")).collect()
}

fn write_fixture(dir: &Path) {
    let store = open(dir);
    let editor = Editor::new(1);
    let notes = id("fixture-notes");
    for word in NOTES.split_inclusive(' ').take(3) {
        store
            .append(&notes, &editor.insert(u32::MAX, word))
            .unwrap()
            .wait_durable()
            .unwrap();
    }
    store.compact(&notes).unwrap();
    for word in NOTES.split_inclusive(' ').skip(3) {
        store
            .append(&notes, &editor.insert(u32::MAX, word))
            .unwrap()
            .wait_durable()
            .unwrap();
    }
    // One record spanning several chunks.
    let big = id("fixture-big");
    store
        .append(&big, &Editor::new(2).insert(0, &big_text()))
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
fn format_v1_fixture_still_loads() {
    let fixture = fixture_dir();
    if std::env::var_os("TANDEM_WRITE_STORE_FIXTURE").is_some() {
        let _ = std::fs::remove_dir_all(&fixture);
        write_fixture(&fixture);
    }
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
    assert_eq!(ids, ["fixture-big", "fixture-notes"]);
    // And it can still be written and compacted.
    store
        .append(&notes, &Editor::new(9).insert(0, ">"))
        .unwrap()
        .wait_durable()
        .unwrap();
    store.compact(&notes).unwrap();
    let after = text(&store.load(&notes).unwrap());
    assert!(
        after.len() == NOTES.len() + 1 && after.contains(NOTES),
        "{after}"
    );
}
