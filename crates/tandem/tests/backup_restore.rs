//! Online backup and the recovery runbook with the real binary: a backup
//! taken while clients type restores every document (everything
//! acknowledged before it began, nothing the server never had; a backup
//! taken once they stopped restores every document exactly); a damaged
//! directory refuses to start, `check` reports it, `salvage` copies the
//! readable rest.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{Server, start};
use tandem_store::{DocId, Store, StoreConfig};
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, Text, Transact, Update};

const TYPISTS: u64 = 3;

fn tandem(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .expect("run tandem")
}

/// Types words into `doc` over HTTP until `stop`; returns every word
/// acknowledged (204), in order, with the time it was acknowledged.
fn typist(
    addr: std::net::SocketAddr,
    doc: String,
    client: u64,
    stop: Arc<AtomicBool>,
) -> Vec<(std::time::Instant, String)> {
    let editor = Doc::with_client_id(client);
    let text = editor.get_or_insert_text("content");
    let mut acked = Vec::new();
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        let word = format!("[{client}.{n}]");
        n += 1;
        let before = editor.transact().state_vector();
        {
            let mut txn = editor.transact_mut();
            let len = text.len(&txn);
            text.insert(&mut txn, len, &word);
        }
        let update = editor.transact().encode_state_as_update_v1(&before);
        let response = common::http(addr, "POST", &format!("/api/docs/{doc}/update"), &update);
        if response.is_ok_and(|r| r.status == 204) {
            acked.push((std::time::Instant::now(), word));
        }
    }
    acked
}

fn text_of(store: &Store, doc: &str) -> String {
    let ydoc = store.load(&DocId::new(doc).unwrap()).unwrap();
    let text = ydoc.get_or_insert_text("content");
    text.get_string(&ydoc.transact())
}

fn backup(server: &Server, to: &Path) {
    let response = server.exchange("GET", "/api/backup", b"").unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/x-tar"));
    std::fs::write(to, &response.body).unwrap();
}

fn restore(archive: &Path, dir: &Path) -> Store {
    let out = tandem(&["restore", archive.to_str().unwrap()], dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Store::open(StoreConfig::new(dir)).unwrap()
}

#[test]
fn a_backup_taken_while_clients_type_restores_every_document() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("data"), &[]);
    for i in 0..20 {
        let (status, _) = server
            .request(
                "PUT",
                &format!("/api/docs/still-{i}/text"),
                format!("quiet {i}").as_bytes(),
            )
            .unwrap();
        assert_eq!(status, 204);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let typists: Vec<_> = (0..TYPISTS)
        .map(|k| {
            let (addr, stop) = (server.addr, Arc::clone(&stop));
            std::thread::spawn(move || typist(addr, format!("typed-{k}"), k + 1, stop))
        })
        .collect();
    // Let them type a little, then back up while they keep typing.
    common::wait_for(common::TIMEOUT, || {
        let r = server
            .exchange("GET", "/api/docs?prefix=typed-", b"")
            .ok()?;
        (String::from_utf8_lossy(&r.body).matches("\"id\"").count() == TYPISTS as usize)
            .then_some(())
    })
    .expect("typists started");
    let began = std::time::Instant::now();
    let during = dir.path().join("during.tar");
    backup(&server, &during);
    stop.store(true, Ordering::SeqCst);
    let typed: Vec<_> = typists.into_iter().map(|t| t.join().unwrap()).collect();

    let restored = restore(&during, &dir.path().join("restored"));
    for i in 0..20 {
        assert_eq!(
            text_of(&restored, &format!("still-{i}")),
            format!("quiet {i}")
        );
    }
    for (k, words) in typed.iter().enumerate() {
        let doc = format!("typed-{k}");
        let content = text_of(&restored, &doc);
        for (at, word) in words {
            if *at < began {
                assert!(
                    content.contains(word.as_str()),
                    "{doc}: {word} acknowledged before the backup is missing"
                );
            }
        }
        // Nothing the server does not have: the restored state is part of
        // the final one.
        let (status, final_state) = server
            .request("GET", &format!("/api/docs/{doc}/update"), b"")
            .unwrap();
        assert_eq!(status, 200);
        let server_doc = Doc::new();
        server_doc
            .transact_mut()
            .apply_update(Update::decode_v1(&final_state).unwrap())
            .unwrap();
        let restored_sv = restored
            .load(&DocId::new(doc.as_str()).unwrap())
            .unwrap()
            .transact()
            .state_vector();
        let final_sv = server_doc.transact().state_vector();
        for (client, clock) in restored_sv.iter() {
            assert!(
                final_sv.get(client) >= *clock,
                "{doc}: restored has updates the server lacks"
            );
        }
    }
    drop(restored);

    // Once typing stopped, a backup restores every document exactly.
    let after = dir.path().join("after.tar");
    backup(&server, &after);
    let exact = restore(&after, &dir.path().join("exact"));
    let page = server.exchange("GET", "/api/docs?limit=1000", b"").unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&page.body).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 20 + TYPISTS as usize);
    for row in rows {
        let doc = row["id"].as_str().unwrap();
        let (_, text) = server
            .request("GET", &format!("/api/docs/{doc}/text"), b"")
            .unwrap();
        assert_eq!(
            text_of(&exact, doc),
            String::from_utf8_lossy(&text),
            "{doc}"
        );
        let state = exact.export(&DocId::new(doc).unwrap()).unwrap();
        let (_, served) = server
            .request("GET", &format!("/api/docs/{doc}/update"), b"")
            .unwrap();
        let (a, b) = (Doc::new(), Doc::new());
        a.transact_mut()
            .apply_update(Update::decode_v1(&state).unwrap())
            .unwrap();
        b.transact_mut()
            .apply_update(Update::decode_v1(&served).unwrap())
            .unwrap();
        assert_eq!(
            a.transact().state_vector(),
            b.transact().state_vector(),
            "{doc}"
        );
    }

    // A cut-short archive is refused, naming the missing manifest.
    let bytes = std::fs::read(&after).unwrap();
    let cut = dir.path().join("cut.tar");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let out = tandem(
        &["restore", cut.to_str().unwrap()],
        &dir.path().join("never"),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("BACKUP-MANIFEST.json") || err.contains("cannot be restored"),
        "{err}"
    );
}

#[test]
fn a_damaged_directory_is_refused_checked_and_salvaged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let server = start(&data, &[]);
        for doc in ["alpha", "beta", "gamma"] {
            let (status, _) = server
                .request("PUT", &format!("/api/docs/{doc}/text"), doc.as_bytes())
                .unwrap();
            assert_eq!(status, 204);
        }
        let (status, _) = server
            .request("PUT", "/api/docs/beta/text", b"beta two")
            .unwrap();
        assert_eq!(status, 204);
        // A clean shutdown writes the manifest's last checkpoint.
        let pid = server.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let mut server = server;
        server.child.wait().unwrap();
    }
    let out = tandem(&["check"], &data);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 documents found, 3 fully readable"));

    // Flip a byte of beta's newest record.
    {
        let db = sled::Config::new()
            .path(&data)
            .flush_every_ms(None)
            .open()
            .unwrap();
        // Its newest record: a log record, or the snapshot the room wrote
        // when it unloaded.
        let beta = DocId::new("beta").unwrap();
        let (key, value) = db
            .scan_prefix(tandem_store::records::snapshot_prefix(&beta))
            .chain(db.scan_prefix(tandem_store::records::log_prefix(&beta)))
            .last()
            .unwrap()
            .unwrap();
        let mut value = value.to_vec();
        let last = value.len() - 1;
        value[last] ^= 0x40;
        db.insert(key, value).unwrap();
        db.flush().unwrap();
    }
    let out = tandem(&["check"], &data);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        report.contains("document 'beta'") && report.contains("checksum mismatch"),
        "{report}"
    );
    assert!(report.contains("tandem salvage"), "{report}");

    let salvaged = dir.path().join("salvaged");
    let out = tandem(&["salvage", "--to", salvaged.to_str().unwrap()], &data);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("skipped"));
    let store = Store::open(StoreConfig::new(&salvaged)).unwrap();
    assert_eq!(text_of(&store, "alpha"), "alpha");
    assert_eq!(text_of(&store, "gamma"), "gamma");
    // beta lost at most its damaged record (or all of it, if that was its
    // snapshot): never a wrong document.
    assert!(["", "beta", "beta two"].contains(&text_of(&store, "beta").as_str()));
    drop(store);

    std::fs::File::options()
        .write(true)
        .open(data.join("db"))
        .unwrap()
        .set_len(0)
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "an emptied data file must not be served"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&data.display().to_string()), "{err}");
    // Either sled reads it as empty (then the manifest says 0 of 3
    // documents) or it refuses its snapshot: a named refusal either way,
    // with the recovery commands.
    assert!(err.contains("tandem restore BACKUP --data-dir"), "{err}");
}

#[test]
fn a_second_backup_while_one_runs_gets_503() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("data"), &[]);
    // Far more than the stream's queue and the socket buffers hold, so an
    // unread backup stays running.
    let big = "b".repeat(4 << 20);
    for i in 0..4 {
        let (status, _) = server
            .request("PUT", &format!("/api/docs/big-{i}/text"), big.as_bytes())
            .unwrap();
        assert_eq!(status, 204);
    }
    let mut first = std::net::TcpStream::connect(server.addr).unwrap();
    write!(
        first,
        "GET /api/backup HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 12];
    first.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    let second = server.exchange("GET", "/api/backup", b"").unwrap();
    assert_eq!(second.status, 503);
    assert!(String::from_utf8_lossy(&second.body).contains("already running"));
    // Reading the first to its end frees the slot.
    let mut rest = Vec::new();
    first.read_to_end(&mut rest).unwrap();
    assert!(rest.len() > 16 << 20, "{} bytes", rest.len());
    let third = common::wait_for(common::TIMEOUT, || {
        let r = server.exchange("GET", "/api/backup", b"").ok()?;
        (r.status == 200).then_some(r)
    });
    assert!(
        third.is_some(),
        "a backup runs again once the first finished"
    );
}
