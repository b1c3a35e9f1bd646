//! Cold joins: a room that opens answers a fresh joiner from the stored
//! bytes while its document loads (gateway `room/cold.rs`). The joiner must
//! get exactly the stored document (snapshot, log records after it, and
//! content waiting for missing updates), and a write that arrives while the
//! document loads must reach every joiner once, after it is durable.

use tandem_tests::{Peer, TestServer};
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

/// A fresh doc holding `update` (v1).
fn doc_of(update: &[u8]) -> Doc {
    let doc = Doc::new();
    doc.transact_mut()
        .apply_update(Update::decode_v1(update).unwrap())
        .unwrap();
    doc
}

/// Text, state vector and whether content waits for missing updates.
fn summary(doc: &Doc) -> (String, StateVector, bool) {
    let text = doc.get_or_insert_text("content");
    let txn = doc.transact();
    (
        text.get_string(&txn),
        txn.state_vector(),
        txn.store().pending_update().is_some(),
    )
}

/// The stored document as the server exports it (`GET .../update`).
fn exported(server: &TestServer, doc: &str) -> Doc {
    let (status, update) = server.get(&format!("/api/docs/{doc}/update"));
    assert_eq!(status, 200);
    doc_of(&update)
}

/// A fresh joiner's copy, re-encoded with everything it holds (pending too).
fn joiner_copy(peer: &Peer) -> Doc {
    let doc = peer.doc();
    let state = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    doc_of(&state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_joiner_of_a_stored_document_gets_exactly_the_document_and_its_pending_content() {
    let mut server = TestServer::start(&[]);
    let a = Peer::join(&server.ws_url("stored")).await;
    // Client 77 types "x" then "y"; only "y" is sent: it waits for "x".
    let other = Doc::with_client_id(77);
    let text = other.get_or_insert_text("content");
    text.insert(&mut other.transact_mut(), 0, "x");
    let before_y = other.transact().state_vector();
    text.insert(&mut other.transact_mut(), 1, "y");
    let y = other.transact().encode_diff_v1(&before_y);
    a.send_update(&y);
    // After "y" on the same connection: once "hello" is seen, "y" is stored.
    a.insert(0, "hello");
    let probe = Peer::join(&server.ws_url("stored")).await;
    probe.wait_text("hello").await;
    drop(probe);
    // SIGTERM compacts: the document is one snapshot, pending "y" included.
    server.sigterm();
    server.restart();
    let joiner = Peer::join(&server.ws_url("stored")).await;
    let stored = summary(&exported(&server, "stored"));
    assert_eq!(stored.0, "hello");
    assert!(stored.2, "the stored document keeps the pending update");
    assert_eq!(integrated(&joiner), (stored.0, stored.1));

    // Log records after the snapshot (SIGKILL: no compaction), merged.
    joiner.insert(5, " world");
    let witness = Peer::join(&server.ws_url("stored")).await;
    witness.wait_text("hello world").await;
    server.sigkill();
    server.restart();
    let joiner = Peer::join(&server.ws_url("stored")).await;
    let stored = summary(&exported(&server, "stored"));
    assert_eq!(stored.0, "hello world");
    assert!(stored.2);
    assert_eq!(integrated(&joiner), (stored.0, stored.1));
    // The pending "y" was kept: once "x" arrives, the joiner has both.
    let x_only = {
        let only_x = Doc::with_client_id(77);
        let t = only_x.get_or_insert_text("content");
        t.insert(&mut only_x.transact_mut(), 0, "x");
        only_x.transact().encode_diff_v1(&StateVector::default())
    };
    let sender = Peer::join(&server.ws_url("stored")).await;
    sender.send_update(&x_only);
    joiner
        .wait_until("x and the pending y", |s| s.text().contains("xy"))
        .await;
}

/// What a joiner integrated: its text and state vector. (A joiner answered
/// from the stored bytes also holds the pending content, as a Yjs server's
/// joiner does; one answered by the loaded document gets it once it can be
/// integrated. Either way it ends with the same document.)
fn integrated(peer: &Peer) -> (String, StateVector) {
    let (text, sv, _) = summary(&joiner_copy(peer));
    (text, sv)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_while_the_document_loads_reaches_every_joiner_once_after_it_is_durable() {
    let mut server = TestServer::start(&[]);
    let url = server.ws_url("busy");
    // Many separate items, so that loading takes a while.
    let big = Doc::with_client_id(5);
    let text = big.get_or_insert_text("content");
    for i in 0..20_000u32 {
        text.insert(&mut big.transact_mut(), i % 7, "ab");
    }
    let expected = text.get_string(&big.transact());
    let seed = Peer::join(&url).await;
    seed.send_update(&big.transact().encode_diff_v1(&StateVector::default()));
    let witness = Peer::join(&url).await;
    witness
        .wait_until("the seeded document", |s| s.text() == expected)
        .await;
    drop((seed, witness));
    server.sigterm();
    server.restart();
    // Three joiners at once; the writer edits right after its SyncStep1,
    // while the room is still loading.
    let a = Peer::connect(&server.ws_url("busy"), Doc::new()).await;
    let b = Peer::connect(&server.ws_url("busy"), Doc::new()).await;
    let writer = Peer::connect(&server.ws_url("busy"), Doc::new()).await;
    let edit = {
        let mine = Doc::with_client_id(9);
        mine.transact_mut()
            .apply_update(
                Update::decode_v1(&big.transact().encode_diff_v1(&StateVector::default())).unwrap(),
            )
            .unwrap();
        let t = mine.get_or_insert_text("content");
        let sv = mine.transact().state_vector();
        t.insert(&mut mine.transact_mut(), 0, "!");
        mine.transact().encode_diff_v1(&sv)
    };
    writer.send_update(&edit);
    let with_edit = format!("!{expected}");
    for peer in [&a, &b] {
        peer.wait_until("the document and the edit", |s| s.text() == with_edit)
            .await;
    }
    // Once: the whole document (one SyncStep2), then the edit (one
    // update; none if it was already in the SyncStep2 of a joiner the room
    // answered after the load).
    for peer in [&a, &b] {
        assert!(peer.state().updates_received <= 2);
        assert!(peer.state().synced);
    }
    // Received means durable: it survives a crash right now.
    server.sigkill();
    server.restart();
    let after = Peer::join(&server.ws_url("busy")).await;
    after
        .wait_until("the edit after a crash", |s| s.text() == with_edit)
        .await;
}
