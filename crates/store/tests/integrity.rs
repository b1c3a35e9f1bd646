//! A data directory is never locked out and never silently emptied: stale
//! sled files are set aside at open, damage is refused loudly.

mod common;

use common::{Editor, append_durable, id, open, text};

#[test]
fn stale_generating_snapshot_is_set_aside_and_every_document_opens() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        append_durable(&store, &id("kept"), &Editor::new(1).insert(0, "still here"));
    }
    // What a crash between sled's snapshot write and its rename leaves.
    let planted = dir.path().join("snap.FFFFFFFFFFFFFFFF.generating");
    std::fs::write(&planted, b"").unwrap();

    let store = open(dir.path());
    assert_eq!(text(&store.load(&id("kept")).unwrap()), "still here");
    assert!(!planted.exists(), "the stale file must be moved");
    let aside: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("set-aside.snap.FFFFFFFFFFFFFFFF.generating."))
        .collect();
    assert_eq!(aside.len(), 1, "set aside, never deleted");
}

/// A directory with `n` documents, closed cleanly (manifest written).
fn directory_with_documents(n: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for i in 0..n {
        let doc = id(&format!("doc-{i:03}"));
        append_durable(
            &store,
            &doc,
            &Editor::new(u64::from(i) + 1).insert(0, &"x".repeat(300)),
        );
    }
    dir
}

fn open_error(dir: &std::path::Path) -> String {
    match tandem_store::Store::open(tandem_store::StoreConfig::new(dir)) {
        Ok(store) => panic!("opened with {} documents", store.list().unwrap().len()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn an_emptied_data_file_is_refused_naming_the_directory_and_the_recovery() {
    let dir = directory_with_documents(30);
    std::fs::File::options()
        .write(true)
        .open(dir.path().join("db"))
        .unwrap()
        .set_len(0)
        .unwrap();
    let err = open_error(dir.path());
    assert!(err.contains(&dir.path().display().to_string()), "{err}");
    assert!(err.contains("0 of 30 documents"), "{err}");
    assert!(err.contains("tandem salvage"), "{err}");
}

#[test]
fn a_data_file_truncated_to_half_is_refused() {
    let dir = directory_with_documents(30);
    let db = dir.path().join("db");
    let len = std::fs::metadata(&db).unwrap().len();
    std::fs::File::options()
        .write(true)
        .open(&db)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let err = open_error(dir.path());
    assert!(
        err.contains("holds less than its manifest records"),
        "{err}"
    );
    assert!(err.contains("tandem check --data-dir"), "{err}");
}

#[test]
fn random_bit_flips_never_panic_open_or_reads() {
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    for round in 0..4 {
        let dir = directory_with_documents(30);
        let db = dir.path().join("db");
        let mut bytes = std::fs::read(&db).unwrap();
        for _ in 0..200 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let at = (seed % bytes.len() as u64) as usize;
            bytes[at] ^= 1 << (seed % 8);
        }
        std::fs::write(&db, bytes).unwrap();
        // Either a clean error or a store whose reads are clean results.
        let outcome = std::panic::catch_unwind(|| {
            if let Ok(store) = tandem_store::Store::open(tandem_store::StoreConfig::new(dir.path()))
            {
                let _ = store.list();
                for i in 0..30 {
                    let _ = store.load(&id(&format!("doc-{i:03}")));
                }
            }
        });
        assert!(outcome.is_ok(), "round {round}: a panic escaped the store");
    }
}

#[test]
fn a_flipped_byte_in_a_record_is_a_named_corrupt_record() {
    let dir = tempfile::tempdir().unwrap();
    let doc = id("flipped");
    {
        let store = open(dir.path());
        let editor = Editor::new(1);
        append_durable(&store, &doc, &editor.insert(0, "first "));
        append_durable(&store, &doc, &editor.insert(6, "second"));
    }
    let db = common::open_raw_sled(dir.path());
    let key = tandem_store::records::log_key(&doc, 2, 0);
    let mut value = db.get(&key).unwrap().unwrap().to_vec();
    let last = value.len() - 1;
    value[last] ^= 0x01;
    db.insert(&key, value).unwrap();
    db.flush().unwrap();
    drop(db);
    let store = open(dir.path());
    let err = store.load(&doc).unwrap_err().to_string();
    assert!(
        err.contains("document 'flipped': log record 2 is corrupt"),
        "{err}"
    );
    assert!(err.contains("checksum mismatch"), "{err}");
    let (loaded, skipped) = store.load_lossy(&doc).unwrap();
    assert_eq!((text(&loaded).as_str(), skipped.len()), ("first ", 1));
}

#[test]
fn reading_missing_documents_creates_no_state() {
    let dir = directory_with_documents(3);
    let store = open(dir.path());
    for i in 0..5000 {
        let doc = id(&format!("missing-{i}"));
        assert!(store.info(&doc).unwrap().is_none());
        assert_eq!(text(&store.load(&doc).unwrap()), "");
    }
    assert_eq!(store.tracked_documents(), 0);
}

#[test]
fn bookkeeping_of_documents_not_in_use_is_evicted() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for i in 0..5000 {
        let doc = id(&format!("written-{i}"));
        append_durable(&store, &doc, &Editor::new(1).insert(0, "x"));
    }
    assert!(
        store.tracked_documents() <= 2048,
        "{} slots kept for 5000 idle documents",
        store.tracked_documents()
    );
    // Evicted counters come back from disk.
    let info = store.info(&id("written-0")).unwrap().unwrap();
    assert_eq!(info.update_count, 1);
    append_durable(&store, &id("written-0"), &Editor::new(2).insert(0, "y"));
    assert_eq!(
        store.info(&id("written-0")).unwrap().unwrap().update_count,
        2
    );
}

#[test]
fn pages_follow_the_cursor_and_the_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for name in ["a-1", "a-2", "a-3", "b-1", "b-2"] {
        append_durable(&store, &id(name), &Editor::new(1).insert(0, name));
    }
    let names = |page: &tandem_store::DocPage| -> Vec<String> {
        page.docs.iter().map(|d| d.id.to_string()).collect()
    };
    let first = store.list_page("", None, 2).unwrap();
    assert_eq!(names(&first), ["a-1", "a-2"]);
    let second = store.list_page("", first.next.as_ref(), 2).unwrap();
    assert_eq!(names(&second), ["a-3", "b-1"]);
    let last = store.list_page("", second.next.as_ref(), 2).unwrap();
    assert_eq!((names(&last), last.next), (vec!["b-2".to_string()], None));
    let b = store.list_page("b-", None, 100).unwrap();
    assert_eq!(names(&b), ["b-1", "b-2"]);
    let after = store.list_page("a-", Some(&id("a-1")), 100).unwrap();
    assert_eq!(names(&after), ["a-2", "a-3"]);
    assert_eq!(first.docs[0].update_count, 1);
}

#[test]
fn a_deleted_document_does_not_make_the_directory_look_damaged() {
    let dir = directory_with_documents(5);
    {
        let store = open(dir.path());
        assert!(store.delete(&id("doc-000")).unwrap());
    }
    let store = open(dir.path());
    assert_eq!(store.list().unwrap().len(), 4);
}
