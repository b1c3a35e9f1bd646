//! The room's side of access control, against the real binary with JWT auth
//! on: a read-only connection may sync but not write (and stays connected),
//! and a live connection ends when its token expires.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tandem_gateway::access::Mode;
use tandem_gateway::auth::claims::unix_now;
use tandem_tests::client::text_update;
use tandem_tests::tokens::{auth_flags, claims, sign, token};
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
