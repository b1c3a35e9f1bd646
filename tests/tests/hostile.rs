//! Hostile clients against the real binary: each refusal closes or answers
//! only the offender, stores nothing of what it refused, and the server and
//! its other rooms go on.

use std::time::{Duration, Instant};

use tandem_tests::client::text_update;
use tandem_tests::{Peer, RawSocket, TIMEOUT, TestServer};
use yrs::encoding::write::Write;
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, Map, MapPrelim, MapRef, ReadTxn, StateVector, Text, Transact};

/// A sync Update frame carrying `update`.
fn update_frame(update: &[u8]) -> Vec<u8> {
    let mut frame = vec![0, 2];
    frame.write_buf(update);
    frame
}

/// An update creating `n` nested maps and one deleting the outermost (the
/// pair that overflowed a runtime thread's stack). Built on a thread with a
/// big stack: yrs recurses per level when deleting.
fn nested_maps(n: usize) -> (Vec<u8>, Vec<u8>) {
    std::thread::Builder::new()
        .stack_size(256 * 1024 * 1024)
        .spawn(move || {
            let doc = Doc::with_client_id(7);
            let root = doc.get_or_insert_map("m");
            {
                let mut txn = doc.transact_mut();
                let mut map: MapRef = root.insert(&mut txn, "k", MapPrelim::default());
                for _ in 1..n {
                    map = map.insert(&mut txn, "k", MapPrelim::default());
                }
            }
            let create = doc
                .transact()
                .encode_state_as_update_v1(&StateVector::default());
            let before = doc.transact().state_vector();
            root.remove(&mut doc.transact_mut(), "k");
            let delete = doc.transact().encode_diff_v1(&before);
            (create, delete)
        })
        .unwrap()
        .join()
        .unwrap()
}

/// Two peers of `doc` still exchange edits.
async fn room_works(server: &TestServer, doc: &str) {
    let url = server.ws_url(doc);
    let a = Peer::join(&url).await;
    let b = Peer::join(&url).await;
    a.insert(0, "still here");
    b.wait_text("still here").await;
}

/// Stored updates of `doc`, from `GET /api/docs` (0 if absent). The list
/// is either a JSON array or an object holding one (a paginated page).
fn stored_updates(server: &TestServer, doc: &str) -> u64 {
    let (_, body) = server.get("/api/docs?limit=1000");
    let list: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let rows = match &list {
        serde_json::Value::Array(rows) => rows.clone(),
        serde_json::Value::Object(fields) => fields
            .values()
            .find_map(|v| v.as_array().cloned())
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    rows.iter()
        .find(|r| r["id"] == doc)
        .and_then(|r| r["update_count"].as_u64())
        .unwrap_or(0)
}

/// Waits (with a timeout) until `cond` holds.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_nesting_is_refused_over_websocket_and_http_and_the_server_stays_up() {
    let mut server = TestServer::start(&[]);
    let (create, delete) = nested_maps(20_000);
    let mut bad = RawSocket::connect(&server.ws_url("deep-ws")).await;
    bad.send_binary(update_frame(&create)).await;
    bad.send_binary(update_frame(&delete)).await;
    assert_eq!(bad.wait_close().await, 1007);
    let (status, body) = server.request("POST", "/api/docs/deep-http/update", &create);
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("deep"));
    let (status, _) = server.request("POST", "/api/docs/deep-http/update", &delete);
    assert!(status == 204 || status == 400, "{status}");
    assert_eq!(server.get("/healthz").0, 200);
    room_works(&server, "deep-neighbour").await;
    // Nothing of it was stored: a restart replays nothing deep.
    assert!(server.sigterm().success());
    server.restart();
    assert_eq!(stored_updates(&server, "deep-ws"), 0);
    room_works(&server, "deep-ws").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_text_on_an_array_root_is_409_and_the_room_and_its_slot_recover() {
    let server = TestServer::start(&["--room-unload-grace-ms", "50"]);
    let doc = Doc::with_client_id(3);
    let array = doc.get_or_insert_array("content");
    yrs::Array::push_back(&array, &mut doc.transact_mut(), 1);
    let update = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    assert_eq!(
        server.request("POST", "/api/docs/arr/update", &update).0,
        204
    );
    for _ in 0..3 {
        let (status, body) = server.request("PUT", "/api/docs/arr/text", b"hello");
        assert_eq!(status, 409);
        assert!(String::from_utf8_lossy(&body).contains("array"));
    }
    assert_eq!(server.get("/api/docs/arr/text").0, 409);
    // The room still serves peers, and every slot is freed afterwards.
    let p = Peer::join(&server.ws_url("arr")).await;
    p.close().await;
    eventually("rooms to unload", || {
        server.metric("tandem_rooms_open") == 0.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_and_delete_floods_are_refused_and_honest_peers_go_on() {
    let server = TestServer::start(&[]);
    let url = server.ws_url("flood");
    let a = Peer::join(&url).await;
    let b = Peer::join(&url).await;
    // 100 KB of text waiting for a clock its client never sent.
    let doc = Doc::with_client_id(77);
    let text = doc.get_or_insert_text("content");
    text.insert(&mut doc.transact_mut(), 0, "a");
    let sv = doc.transact().state_vector();
    text.insert(&mut doc.transact_mut(), 1, &"b".repeat(100_000));
    let pending = doc.transact().encode_diff_v1(&sv);
    let mut bad = RawSocket::connect(&url).await;
    bad.send_binary(update_frame(&pending)).await;
    assert_eq!(bad.wait_close().await, 1007);
    // 20,000 deleted ranges of a client the document never saw.
    let mut deletes = Vec::new();
    deletes.write_var(0u32);
    deletes.write_var(1u32);
    deletes.write_var(999u64);
    deletes.write_var(20_000u32);
    for i in 0..20_000u32 {
        deletes.write_var(i * 2);
        deletes.write_var(1u32);
    }
    let mut bad = RawSocket::connect(&url).await;
    bad.send_binary(update_frame(&deletes)).await;
    assert_eq!(bad.wait_close().await, 1007);
    let (status, body) = server.request("POST", "/api/docs/flood/update", &deletes);
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    a.insert(0, "honest");
    b.wait_text("honest").await;
    assert_eq!(stored_updates(&server, "flood"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_echoing_client_makes_each_edit_stored_once_and_delivered_once() {
    let server = TestServer::start(&[]);
    let url = server.ws_url("echo");
    let a = Peer::join(&url).await;
    let echo = Peer::join(&url).await;
    for (i, word) in ["one ", "two ", "three"].iter().enumerate() {
        let before = a.state().updates_received;
        let sv = a.doc().transact().state_vector();
        let len = a.text().len() as u32;
        a.insert(len, word);
        let update = a.doc().transact().encode_diff_v1(&sv);
        echo.wait_until("the edit", |s| s.text().ends_with(word))
            .await;
        // The echoing client sends it straight back, as some stacks do.
        echo.send_update(&update);
        // A later real edit from the echoer is the barrier.
        let mark = format!("<{i}>");
        echo.insert(0, &mark);
        a.wait_until("the barrier", |s| s.text().starts_with(&mark))
            .await;
        assert_eq!(a.state().updates_received, before + 1, "echo delivered");
        echo.delete(0, mark.len() as u32);
        a.wait_until("barrier removed", |s| !s.text().contains('<'))
            .await;
    }
    // 3 edits + 3 barriers + 3 barrier removals; no echo stored.
    assert_eq!(stored_updates(&server, "echo"), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_past_its_quota_refuses_the_update_with_4413_and_413() {
    let server = TestServer::start(&["--max-doc-bytes", "20000"]);
    let url = server.ws_url("quota");
    let a = Peer::join(&url).await;
    a.insert(0, &"x".repeat(15_000));
    let b = Peer::join(&url).await;
    b.wait_until("the text", |s| s.text().len() == 15_000).await;
    a.insert(0, &"y".repeat(10_000));
    assert_eq!(a.wait_close().await, 4413);
    let (status, _) = server.request("PUT", "/api/docs/quota/text", "z".repeat(30_000).as_bytes());
    assert_eq!(status, 413);
    let (status, _) = server.request(
        "POST",
        "/api/docs/quota/update",
        &text_update(&"w".repeat(30_000)),
    );
    assert_eq!(status, 413);
    assert_eq!(stored_updates(&server, "quota"), 1);
    assert_eq!(server.get_text("/api/docs/quota/text").1.len(), 15_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_updates_speak_v2_on_request_and_refuse_left_over_bytes() {
    let server = TestServer::start(&[]);
    let doc = Doc::new();
    let text = doc.get_or_insert_text("content");
    text.insert(&mut doc.transact_mut(), 0, "version two");
    let v2 = doc
        .transact()
        .encode_state_as_update_v2(&StateVector::default());
    let (status, body) = server.request("POST", "/api/docs/v2/update", &v2);
    assert_eq!(status, 400, "a v2 update read as v1");
    assert!(String::from_utf8_lossy(&body).contains("v2"));
    assert_eq!(stored_updates(&server, "v2"), 0);
    assert_eq!(
        server
            .request("POST", "/api/docs/v2/update?format=v2", &v2)
            .0,
        204
    );
    let (status, body) = server.get("/api/docs/v2/update?format=v2");
    assert_eq!(status, 200);
    let back = Doc::new();
    back.transact_mut()
        .apply_update(yrs::Update::decode_v2(&body).unwrap())
        .unwrap();
    let text = back.get_or_insert_text("content");
    assert_eq!(text.get_string(&back.transact()), "version two");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_text_keeps_unchanged_text_so_concurrent_edits_survive() {
    let server = TestServer::start(&[]);
    let url = server.ws_url("diff");
    let a = Peer::join(&url).await;
    a.insert(0, "hello world");
    let b = Peer::join(&url).await;
    b.wait_text("hello world").await;
    let (status, _) = server.request("PUT", "/api/docs/diff/text", b"hello brave world");
    assert_eq!(status, 204);
    a.wait_text("hello brave world").await;
    // a's own characters were kept, not deleted and re-inserted: an edit
    // a makes relative to them lands where a meant it.
    a.insert(11, "!");
    b.wait_text("hello brave! world").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_storm_on_a_large_document_delivers_it_to_every_joiner() {
    let server = TestServer::start(&[]);
    let big = "lorem ipsum ".repeat(80_000); // ~1 MB
    assert_eq!(
        server
            .request("PUT", "/api/docs/storm/text", big.as_bytes())
            .0,
        204
    );
    let url = server.ws_url("storm");
    let joins = (0..20).map(|_| {
        let url = url.clone();
        tokio::spawn(async move { Peer::join(&url).await })
    });
    for peer in futures_util::future::join_all(joins).await {
        assert_eq!(peer.unwrap().text().len(), big.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_awareness_state_closes_only_its_sender_with_1009() {
    let server = TestServer::start(&["--max-awareness-bytes", "1024"]);
    let url = server.ws_url("big-aw");
    let bad = Peer::join(&url).await;
    let good = Peer::join(&url).await;
    bad.send_awareness(bad.client_id(), 1, &format!("\"{}\"", "x".repeat(2000)));
    assert_eq!(bad.wait_close().await, 1009);
    good.insert(0, "fine");
    let other = Peer::join(&url).await;
    other.wait_text("fine").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_awareness_is_coalesced_and_the_latest_state_arrives() {
    let server = TestServer::start(&[]);
    let url = server.ws_url("fast-aw");
    let fast = Peer::join(&url).await;
    let watcher = Peer::join(&url).await;
    let id = fast.client_id();
    for clock in 1..=200u32 {
        fast.send_awareness(id, clock, &format!("{{\"n\":{clock}}}"));
    }
    watcher
        .wait_until("the latest state", |s| {
            s.states().get(&id).map(String::as_str) == Some("{\"n\":200}")
        })
        .await;
    assert!(server.metric("tandem_awareness_updates_total") >= 1.0);
}
