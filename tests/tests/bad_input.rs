//! Bad input closes only the offending connection, with its close code;
//! the room keeps working. A frame that fails to decode is rejected whole
//! (nothing of it is stored); an update yrs rejects at apply time is not
//! stored, but the updates accepted before it (even in the same frame) are.

use tandem_tests::client::text_update;
use tandem_tests::{Peer, RawSocket, TestServer};

/// Two healthy peers in `doc` with text "ok", plus the updates counter.
async fn healthy_room(server: &TestServer, doc: &str) -> (Peer, Peer) {
    let a = Peer::join(&server.ws_url(doc)).await;
    let b = Peer::join(&server.ws_url(doc)).await;
    a.insert(0, "ok");
    b.wait_text("ok").await;
    (a, b)
}

/// The room still syncs and the store holds exactly the healthy edits.
async fn room_still_works(server: &TestServer, doc: &str, a: &Peer, b: &Peer) {
    b.insert(2, "!");
    a.wait_text("ok!").await;
    let late = Peer::join(&server.ws_url(doc)).await;
    late.wait_text("ok!").await;
    assert_eq!(server.get_text(&format!("/api/docs/{doc}/text")).1, "ok!");
    assert_eq!(server.metric("tandem_updates_applied_total"), 2.0);
}

async fn bad_frame_closes_with(frame: Vec<u8>, code: u16, doc: &str) {
    let server = TestServer::start(&[]);
    let (a, b) = healthy_room(&server, doc).await;
    let mut bad = RawSocket::connect(&server.ws_url(doc)).await;
    bad.send_binary(frame).await;
    assert_eq!(bad.wait_close().await, code);
    room_still_works(&server, doc, &a, &b).await;
    assert!(server.log().contains("WARN"), "expected a warning log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_frame_closes_with_1003() {
    let server = TestServer::start(&[]);
    let (a, b) = healthy_room(&server, "text").await;
    let mut bad = RawSocket::connect(&server.ws_url("text")).await;
    bad.send_text("hello").await;
    assert_eq!(bad.wait_close().await, 1003);
    room_still_works(&server, "text", &a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bytes_close_with_1007() {
    bad_frame_closes_with(vec![0, 2, 5, 0xde, 0xad, 0xbe, 0xef, 0x00], 1007, "garbage").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_varint_closes_with_1007() {
    bad_frame_closes_with(vec![0x80], 1007, "varint").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_sync_subtype_closes_with_1007() {
    bad_frame_closes_with(vec![0, 9, 0], 1007, "subtype").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_message_type_closes_with_4003() {
    bad_frame_closes_with(vec![42, 0], 4003, "msgtype").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_awareness_json_closes_with_1007() {
    // awareness: 1 entry, client 7, clock 1, state "{not json"
    let mut body = vec![1, 7, 1, 9];
    body.extend_from_slice(b"{not json");
    let mut frame = vec![1, body.len() as u8];
    frame.extend(body);
    bad_frame_closes_with(frame, 1007, "awjson").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_update_before_garbage_in_the_same_frame_is_not_stored() {
    let mut frame = vec![0, 2];
    let update = text_update("sneaky");
    frame.push(update.len() as u8);
    frame.extend(update);
    frame.extend([0x80]);
    bad_frame_closes_with(frame, 1007, "mixed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_frame_closes_with_1009() {
    let server = TestServer::start(&["--max-message-bytes", "65536"]);
    let (a, b) = healthy_room(&server, "big").await;
    let mut bad = RawSocket::connect(&server.ws_url("big")).await;
    let update = text_update(&"y".repeat(100_000));
    let mut frame = vec![0, 2];
    let mut len = update.len();
    while len >= 0x80 {
        frame.push((len as u8 & 0x7f) | 0x80);
        len >>= 7;
    }
    frame.push(len as u8);
    frame.extend(update);
    bad.send_binary(frame).await;
    assert_eq!(bad.wait_close().await, 1009);
    room_still_works(&server, "big", &a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_doc_id_is_rejected_with_400_before_upgrade() {
    let server = TestServer::start(&[]);
    let err = tokio_tungstenite::connect_async(server.ws_url("no%20spaces"))
        .await
        .expect_err("upgrade must fail");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 400),
        other => panic!("unexpected {other:?}"),
    }
    let long = "a".repeat(200);
    assert_eq!(server.get(&format!("/ws/{long}")).0, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_yrs_rejects_closes_with_1007_and_is_not_stored() {
    let mut server = TestServer::start(&[]);
    let url = server.ws_url("invalid-parent");
    // Client 1 writes "ab": item (1,0) is a string, not a type.
    let a = Peer::connect(&url, yrs::Doc::with_client_id(1)).await;
    a.wait_until("sync", |s| s.synced).await;
    a.insert(0, "ab");
    let b = Peer::join(&url).await;
    b.wait_text("ab").await;
    // Client 2 inserts "x" whose parent is item (1,0): yrs refuses it.
    let update = vec![1, 1, 2, 0, 0x04, 0, 1, 0, 1, b'x', 0];
    let mut bad = RawSocket::connect(&url).await;
    bad.send_binary([vec![0, 2, update.len() as u8], update].concat())
        .await;
    assert_eq!(bad.wait_close().await, 1007);
    let log = server.log();
    assert!(
        log.contains("update rejected") || log.contains("update made yrs panic"),
        "{log}"
    );
    a.insert(2, "c");
    b.wait_text("abc").await;
    // The store never saw it: the document still loads after a restart.
    assert!(server.sigterm().success());
    server.restart();
    let c = Peer::join(&server.ws_url("invalid-parent")).await;
    c.wait_text("abc").await;
}

/// Sends, from a raw socket, a valid update (client 3 appends "Z" to "ab")
/// followed by one yrs rejects at apply time (client 2 inserts "x" under
/// item (1,0), a string), in one frame or in two back-to-back frames.
///
/// Both messages decode, so the frame is not rejected whole: the room applies
/// the valid update, then the rejected one closes the sender with 1007. Before
/// reloading the document the room stores what the batch already accepted,
/// so the valid update is kept and broadcast. With two frames the two
/// updates may or may not share a batch; the outcome is the same.
async fn valid_then_rejected_update(doc: &str, one_frame: bool) {
    use yrs::{ReadTxn, StateVector, Text, Transact, updates::decoder::Decode};

    let mut server = TestServer::start(&[]);
    let url = server.ws_url(doc);
    let a = Peer::connect(&url, yrs::Doc::with_client_id(1)).await;
    a.wait_until("sync", |s| s.synced).await;
    a.insert(0, "ab");
    let b = Peer::join(&url).await;
    b.wait_text("ab").await;

    let writer = yrs::Doc::with_client_id(3);
    let state = a
        .doc()
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    writer
        .transact_mut()
        .apply_update(yrs::Update::decode_v1(&state).unwrap())
        .unwrap();
    let before = writer.transact().state_vector();
    let text = writer.get_or_insert_text("content");
    text.insert(&mut writer.transact_mut(), 2, "Z");
    let valid = writer.transact().encode_diff_v1(&before);
    let rejected = vec![1, 1, 2, 0, 0x04, 0, 1, 0, 1, b'x', 0];
    let message = |u: &[u8]| [&[0, 2, u.len() as u8][..], u].concat();

    let mut bad = RawSocket::connect(&url).await;
    if one_frame {
        bad.send_binary([message(&valid), message(&rejected)].concat())
            .await;
    } else {
        bad.send_binary(message(&valid)).await;
        bad.send_binary(message(&rejected)).await;
    }
    assert_eq!(bad.wait_close().await, 1007);
    let log = server.log();
    assert!(
        log.contains("update rejected") || log.contains("update made yrs panic"),
        "{log}"
    );
    // The valid update was stored and broadcast; the other peers keep working.
    a.wait_text("abZ").await;
    b.wait_text("abZ").await;
    b.insert(3, "!");
    a.wait_text("abZ!").await;
    assert_eq!(server.get_text(&format!("/api/docs/{doc}/text")).1, "abZ!");
    assert_eq!(server.metric("tandem_updates_applied_total"), 3.0);
    // A crash: the store holds the accepted updates, not the rejected one.
    server.sigkill();
    server.restart();
    let c = Peer::join(&server.ws_url(doc)).await;
    c.wait_text("abZ!").await;
    assert_eq!(server.get_text(&format!("/api/docs/{doc}/text")).1, "abZ!");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_update_then_a_rejected_one_in_one_frame_keeps_the_valid_one() {
    valid_then_rejected_update("valid-then-rejected-1", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_update_then_a_rejected_one_in_two_frames_keeps_the_valid_one() {
    valid_then_rejected_update("valid-then-rejected-2", false).await;
}
