//! Operator recovery of a damaged document with the real `tandem` binary:
//! plain `export` refuses a document with a corrupt log record and names it,
//! `export --lossy` exports the readable rest, the recovered update imports
//! into a new document, and the damaged record is never deleted.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use tandem_store::{DocId, Store, StoreConfig, StoreError, records};
use yrs::{Doc, ReadTxn, Text, Transact};

/// How long a step may wait for the data directory's lock to be released.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `tandem ARGS --data-dir DIR`, retrying while the directory is still
/// locked by a handle this test process just dropped.
fn tandem(dir: &Path, args: &[&str]) -> Output {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let out = Command::new(env!("CARGO_BIN_EXE_tandem"))
            .args(args)
            .arg("--data-dir")
            .arg(dir)
            .output()
            .expect("run tandem");
        let locked = String::from_utf8_lossy(&out.stderr).contains("in use by another process");
        if !locked || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Appends `s` to the root text `content` (what `export` shows) of an editor
/// doc and returns the update.
fn type_text(editor: &Doc, s: &str) -> Vec<u8> {
    let text = editor.get_or_insert_text("content");
    let before = editor.transact().state_vector();
    let mut txn = editor.transact_mut();
    let len = text.len(&txn);
    text.insert(&mut txn, len, s);
    drop(txn);
    editor.transact().encode_state_as_update_v1(&before)
}

/// Opens sled directly, waiting for a just-dropped store to release it.
fn open_raw_sled(dir: &Path) -> sled::Db {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match sled::Config::new().path(dir).flush_every_ms(None).open() {
            Ok(db) => return db,
            Err(e) if Instant::now() > deadline => panic!("open sled: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// A data dir holding document `damaged` with log records 1..=3, where
/// record 2 is corrupt and records 1 and 3 (one editor) read "alpha beta".
fn damaged_data_dir() -> (tempfile::TempDir, DocId) {
    let dir = tempfile::tempdir().expect("temp dir");
    let doc = DocId::new("damaged").expect("valid id");
    {
        let store = Store::open(StoreConfig::new(dir.path())).expect("open store");
        let editor = Doc::with_client_id(1);
        let other = Doc::with_client_id(2);
        for update in [
            type_text(&editor, "alpha "),
            type_text(&other, "lost"),
            type_text(&editor, "beta"),
        ] {
            store
                .append(&doc, &update)
                .expect("append")
                .wait_durable()
                .expect("durable");
        }
    }
    // Record 2 gets a valid header around a payload that is no yrs update
    // (how the store's own tests corrupt a record).
    let db = open_raw_sled(dir.path());
    let key = records::log_key(&doc, 2, 0);
    assert!(db.get(&key).expect("read").is_some(), "record 2 exists");
    let garbage = records::encode_log(0, &[0xff; 16]).remove(0);
    db.insert(key, garbage).expect("overwrite");
    db.flush().expect("flush");
    (dir, doc)
}

#[test]
fn lossy_export_recovers_a_damaged_document_and_deletes_nothing() {
    let (dir, doc) = damaged_data_dir();
    let data = dir.path();

    // Plain export refuses, names the record and points at --lossy.
    let out = tandem(data, &["export", "damaged"]);
    assert!(!out.status.success(), "plain export must fail");
    let err = stderr(&out);
    assert!(
        err.contains("document 'damaged': log record 2 is corrupt"),
        "{err}"
    );
    assert!(err.contains("--lossy"), "{err}");
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));

    // --lossy exports the readable rest and reports the skipped record.
    let out = tandem(data, &["export", "damaged", "--lossy", "--format", "text"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "alpha beta");
    let err = stderr(&out);
    assert!(
        err.contains("document 'damaged': log record 2 is corrupt"),
        "{err}"
    );

    // The recovered state imports into a new document.
    let file = data.join("damaged.recovered");
    let file_arg = file.to_str().expect("utf-8 temp path");
    let out = tandem(
        data,
        &[
            "export", "damaged", "--lossy", "--format", "update", "-o", file_arg,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = tandem(data, &["import", "restored", file_arg]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = tandem(data, &["export", "restored"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "alpha beta");

    // Nothing was deleted: plain export still fails, all three records stay.
    let out = tandem(data, &["export", "damaged", "--format", "update"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("log record 2 is corrupt"));
    let deadline = Instant::now() + TIMEOUT;
    let store = loop {
        match Store::open(StoreConfig::new(data)) {
            Ok(store) => break store,
            Err(StoreError::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("open store: {e}"),
        }
    };
    assert_eq!(store.info(&doc).expect("info").expect("exists").log_len, 3);
    assert!(matches!(
        store.load(&doc),
        Err(StoreError::CorruptRecord { seq: 2, .. })
    ));
}

#[test]
fn help_documents_recovery_and_the_compaction_knob() {
    let help = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tandem"))
            .args(args)
            .output()
            .expect("run tandem");
        assert!(out.status.success());
        stdout(&out)
    };
    let export = help(&["export", "--help"]);
    assert!(export.contains("--lossy"), "{export}");
    assert!(export.contains("nothing is deleted"), "{export}");
    assert!(export.contains("tandem import NEWDOC"), "{export}");
    let serve = help(&["serve", "--help"]);
    assert!(serve.contains("--compact-min-log-percent"), "{serve}");
    assert!(serve.contains("TANDEM_COMPACT_MIN_LOG_PERCENT"), "{serve}");
    let env = serve
        .find("TANDEM_COMPACT_MIN_LOG_PERCENT")
        .expect("env var listed");
    let default = format!(
        "[default: {}]",
        tandem_store::config::DEFAULT_COMPACT_MIN_LOG_PERCENT
    );
    let section = &serve[env..];
    let section = &section[..section.find("--").unwrap_or(section.len())];
    assert!(section.contains(&default), "{section}");
}
