//! The room's side of access control, against the real binary with JWT auth
//! on: a read-only connection may sync but not write (and stays connected),
//! and a live connection ends when its token expires or is revoked.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tandem_gateway::access::Mode;
use tandem_gateway::auth::claims::unix_now;
use tandem_tests::client::text_update;
use tandem_tests::tokens::{auth_flags, claims, http, sign, token};
use tandem_tests::{Peer, TIMEOUT, TestServer};
use tokio_tungstenite::tungstenite::Message;
use yrs::encoding::write::Write;

fn ws(server: &TestServer, doc: &str, token: &str) -> String {
    format!("{}?token={token}", server.ws_url(doc))
}

/// The y-protocols auth frame "permission denied" with `reason`.
fn permission_denied(reason: &str) -> Vec<u8> {
    let mut frame = vec![2u8, 0];
    frame.write_string(reason);
    frame
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_edit_is_denied_not_applied_and_the_socket_stays_open() {
    let server = TestServer::start(&auth_flags());
    let writer = Peer::join(&ws(&server, "ro", &token(&["ro"], Mode::Write))).await;
    writer.insert(0, "original");
    let url = ws(&server, "ro", &token(&["ro"], Mode::Read));
    let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    let mut update = vec![0u8, 2];
    update.write_buf(text_update("sneaky"));
    socket.send(Message::binary(update)).await.unwrap();
    // Then a SyncStep1: its answer proves the socket is still served.
    socket
        .send(Message::binary(vec![0u8, 0, 1, 0]))
        .await
        .unwrap();
    let expected = permission_denied("read-only");
    let (mut denied, mut answered) = (false, false);
    while !(denied && answered) {
        let msg = tokio::time::timeout(TIMEOUT, socket.next())
            .await
            .expect("frames in time")
            .expect("socket open")
            .unwrap();
        let data = msg.into_data();
        denied |= data[..] == expected[..];
        answered |= denied && data.starts_with(&[0, 1]);
    }
    // Nothing of the refused edit reached the document.
    let late = Peer::join(&ws(&server, "ro", &token(&["ro"], Mode::Read))).await;
    late.wait_text("original").await;
    writer.insert(8, "!");
    late.wait_text("original!").await;
    // The writer never saw it either (its own edit arrived after it).
    writer.wait_text("original!").await;
    // Nor was it stored: the document read back after a restart.
    drop((writer, late, socket));
    let mut server = server;
    server.sigterm();
    server.restart();
    let admin = format!("Bearer {}", token(&["*"], Mode::Admin));
    let stored = http(
        server.addr,
        "GET",
        "/api/docs/ro/text",
        &[("authorization", &admin)],
        b"",
    );
    assert_eq!(stored.status, 200);
    assert_eq!(stored.text(), "original!");
}

/// `POST /api/admin/revoke` with `body`, as an admin.
fn revoke(server: &TestServer, body: &str) {
    let admin = format!("Bearer {}", token(&["*"], Mode::Admin));
    let r = http(
        server.addr,
        "POST",
        "/api/admin/revoke",
        &[
            ("authorization", &admin),
            ("content-type", "application/json"),
        ],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_closes_the_matching_live_sockets_with_4403_and_only_those() {
    let server = TestServer::start(&auth_flags());
    let by_jti = claims(&["*"], Mode::Write);
    let jti = by_jti.jti.clone().expect("jti");
    let mut by_sub = claims(&["*"], Mode::Read);
    by_sub.sub = "mallory".into();
    let mut by_doc = claims(&["*"], Mode::Write);
    by_doc.iat = Some(unix_now() - 10);
    let a = Peer::join(&ws(&server, "live", &sign(&by_jti))).await;
    let b = Peer::join(&ws(&server, "live", &sign(&by_sub))).await;
    let c = Peer::join(&ws(&server, "plan", &sign(&by_doc))).await;
    let bystander = Peer::join(&ws(&server, "live", &token(&["live"], Mode::Write))).await;
    let other_doc = Peer::join(&ws(&server, "other", &sign(&by_doc))).await;

    revoke(&server, &format!("{{\"jti\":\"{jti}\"}}"));
    assert_eq!(a.wait_close().await, 4403);
    revoke(&server, "{\"sub\":\"mallory\"}");
    assert_eq!(b.wait_close().await, 4403);
    revoke(&server, "{\"doc\":\"plan\"}");
    assert_eq!(c.wait_close().await, 4403);

    // Everyone else is still served.
    bystander.insert(0, "still here");
    let check = Peer::join(&ws(&server, "live", &token(&["live"], Mode::Read))).await;
    check.wait_text("still here").await;
    other_doc.insert(0, "me too");
    let check = Peer::join(&ws(&server, "other", &token(&["other"], Mode::Read))).await;
    check.wait_text("me too").await;
    assert_eq!(bystander.state().close_code(), None);
    assert_eq!(other_doc.state().close_code(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_connection_is_closed_with_4401_when_its_token_expires() {
    let server = TestServer::start(&auth_flags());
    let mut short = claims(&["exp"], Mode::Write);
    short.exp = unix_now() + 2;
    let peer = Peer::join(&ws(&server, "exp", &sign(&short))).await;
    let code = tokio::time::timeout(Duration::from_secs(15), peer.wait_close())
        .await
        .expect("closed at expiry");
    assert_eq!(code, 4401);
}
