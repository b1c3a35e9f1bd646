//! Invalid ids, corrupt records, isolation between documents.

mod common;

use common::{Editor, append_durable, id, open, text};
use tandem_store::{DocId, StoreError, records};

#[test]
fn invalid_doc_ids_are_rejected_with_a_helpful_message() {
    for bad in [
        "",
        "a/b",
        "../etc",
        "with space",
        "ünïcode",
        "nul\0byte",
        &"x".repeat(129),
    ] {
        let err = DocId::new(bad).expect_err(bad);
        let msg = err.to_string();
        assert!(
            msg.contains("only A-Z a-z 0-9 . _ - allowed, 1-128 chars"),
            "{msg}"
        );
        assert_eq!(err.id, bad);
    }
    assert_eq!(
        DocId::new("a/b").unwrap_err().to_string(),
        "document id 'a/b' is invalid: only A-Z a-z 0-9 . _ - allowed, 1-128 chars"
    );
    for good in ["a", "Doc-1.v2_final", &"x".repeat(128)] {
        assert_eq!(DocId::new(good).unwrap().as_str(), good);
        assert_eq!(good.parse::<DocId>().unwrap().to_string(), good);
    }
}

/// Writes `value` over log record `seq` of `doc`, bypassing the store.
fn overwrite_record(dir: &std::path::Path, doc: &DocId, seq: u64, value: &[u8]) {
    let db = common::open_raw_sled(dir);
    assert!(db.get(records::log_key(doc, seq, 0)).unwrap().is_some());
    db.insert(records::log_key(doc, seq, 0), value).unwrap();
    db.flush().unwrap();
}

fn write_three(dir: &std::path::Path, doc: &DocId, editor: &Editor) {
    let store = open(dir);
    for word in ["one ", "two ", "three"] {
        store
            .append(doc, &editor.insert(u32::MAX, word))
            .unwrap()
            .wait_durable()
            .unwrap();
    }
}

#[test]
fn corrupt_record_fails_load_naming_doc_and_seq_and_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (doc, other) = (id("damaged"), id("healthy"));
    let editor = Editor::new(1);
    write_three(dir.path(), &doc, &editor);
    write_three(dir.path(), &other, &Editor::new(2));
    // Valid header, payload that is not a yrs update.
    let mut garbage = records::encode_log(0, &[0xff; 16]).remove(0);
    garbage.truncate(garbage.len());
    overwrite_record(dir.path(), &doc, 2, &garbage);

    let store = open(dir.path());
    let err = store
        .load(&doc)
        .expect_err("corrupt record must fail the load");
    match &err {
        StoreError::CorruptRecord { doc: d, seq, .. } => assert_eq!((d, *seq), (&doc, 2)),
        other => panic!("unexpected error {other}"),
    }
    assert!(
        err.to_string()
            .starts_with("document 'damaged': log record 2 is corrupt"),
        "{err}"
    );
    // Other documents are unaffected.
    assert_eq!(text(&store.load(&other).unwrap()), "one two three");
    // Compaction refuses and deletes nothing.
    assert!(matches!(
        store.compact(&doc),
        Err(StoreError::CorruptRecord { seq: 2, .. })
    ));
    assert_eq!(store.info(&doc).unwrap().unwrap().log_len, 3);
    // The valid rest is recoverable, and the bad record is reported.
    let (partial, bad) = store.load_lossy(&doc).unwrap();
    assert_eq!(bad.len(), 1);
    assert!(matches!(bad[0], StoreError::CorruptRecord { seq: 2, .. }));
    assert!(text(&partial).starts_with("one "));
    // Appends still work; the record is still there after a restart.
    append_durable(&store, &doc, &Editor::new(3).insert(0, "x"));
    drop(store);
    let store = open(dir.path());
    assert!(matches!(
        store.load(&doc),
        Err(StoreError::CorruptRecord { seq: 2, .. })
    ));
    assert_eq!(store.info(&doc).unwrap().unwrap().log_len, 4);
}

#[test]
fn record_with_unknown_format_version_is_reported_not_panicked() {
    let dir = tempfile::tempdir().unwrap();
    let doc = id("future");
    write_three(dir.path(), &doc, &Editor::new(1));
    overwrite_record(dir.path(), &doc, 3, &[0xee, 1, 2, 3]);
    let store = open(dir.path());
    let err = store.load(&doc).unwrap_err();
    assert!(
        matches!(err, StoreError::CorruptRecord { seq: 3, .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("unsupported record format version 238"),
        "{err}"
    );
    overwrite_record_after_drop(store, dir.path(), &doc);
}

fn overwrite_record_after_drop(store: tandem_store::Store, dir: &std::path::Path, doc: &DocId) {
    drop(store);
    // A truncated header is reported too.
    overwrite_record(dir, doc, 1, &[records::RECORD_VERSION, 0]);
    let store = open(dir);
    assert!(matches!(
        store.load(doc),
        Err(StoreError::CorruptRecord { seq: 1, .. })
    ));
}

#[test]
fn many_documents_are_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<DocId> = (0..40).map(|i| id(&format!("doc-{i}"))).collect();
    // Ids that are prefixes of each other must not bleed into each other.
    let tricky = [id("a"), id("a.b"), id("a-"), id("ab")];
    {
        let store = open(dir.path());
        let mut tickets = Vec::new();
        for (n, doc) in ids.iter().chain(&tricky).enumerate() {
            let editor = Editor::new(n as u64 + 1);
            for _ in 0..3 {
                tickets.push(
                    store
                        .append(doc, &editor.insert(u32::MAX, doc.as_str()))
                        .unwrap(),
                );
            }
        }
        for t in tickets {
            t.wait_durable().unwrap();
        }
        store.compact(&ids[0]).unwrap();
        store.compact(&tricky[0]).unwrap();
        store.delete(&ids[1]).unwrap();
    }
    let store = open(dir.path());
    for doc in ids.iter().chain(&tricky).filter(|d| d.as_str() != "doc-1") {
        assert_eq!(
            text(&store.load(doc).unwrap()),
            doc.as_str().repeat(3),
            "{doc}"
        );
        assert_eq!(store.info(doc).unwrap().unwrap().update_count, 3, "{doc}");
    }
    assert_eq!(text(&store.load(&ids[1]).unwrap()), "");
    assert_eq!(store.list().unwrap().len(), ids.len() + tricky.len() - 1);
}

#[test]
fn data_dir_from_a_newer_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    let db = common::open_raw_sled(dir.path());
    db.insert(records::META_KEY, &99u32.to_be_bytes()).unwrap();
    db.flush().unwrap();
    drop(db);
    // `open` itself waits for the raw handle's threads to let go.
    let err = tandem_store::Store::open(tandem_store::StoreConfig::new(dir.path()))
        .err()
        .expect("a format-99 directory must not open");
    assert!(
        matches!(
            err,
            StoreError::UnsupportedFormat {
                found: 99,
                supported: records::DATA_FORMAT_VERSION
            }
        ),
        "{err}"
    );
}

#[test]
fn second_open_of_a_directory_in_use_names_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(dir.path());
    let err = tandem_store::Store::open(tandem_store::StoreConfig::new(dir.path()))
        .err()
        .expect("locked");
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    assert!(
        err.to_string().contains("in use by another process"),
        "{err}"
    );
}
