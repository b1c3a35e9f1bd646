//! Awareness: propagation (echoed to the sender), removal on close and on an
//! abrupt drop, ownership.

use tandem_tests::{Peer, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awareness_reaches_every_peer_including_the_sender() {
    let server = TestServer::start(&[]);
    let url = server.ws_url("aw");
    let mut a = Peer::join(&url).await;
    let b = Peer::join(&url).await;
    let id = a.client_id();
    a.set_awareness(r#"{"cursor":1}"#);
    for p in [&a, &b] {
        p.wait_until("a's state", |s| {
            s.states().get(&id).map(String::as_str) == Some(r#"{"cursor":1}"#)
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awareness_is_removed_when_a_peer_closes() {
    let server = TestServer::start(&[]);
    let url = server.ws_url("aw-close");
    let mut a = Peer::join(&url).await;
    let b = Peer::join(&url).await;
    let id = a.client_id();
    a.set_awareness(r#"{"cursor":1}"#);
    b.wait_until("a present", |s| s.states().contains_key(&id))
        .await;
    a.close().await;
    b.wait_until("a removed", |s| !s.states().contains_key(&id))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awareness_is_removed_when_a_socket_drops_abruptly() {
    let server = TestServer::start(&[]);
    let url = server.ws_url("aw-drop");
    let mut a = Peer::join(&url).await;
    let b = Peer::join(&url).await;
    let id = a.client_id();
    a.set_awareness(r#"{"cursor":2}"#);
    b.wait_until("a present", |s| s.states().contains_key(&id))
        .await;
    a.drop_abruptly();
    b.wait_until("a removed", |s| !s.states().contains_key(&id))
        .await;
    // A later joiner sees no ghost either.
    let c = Peer::join(&url).await;
    assert!(!c.state().states().contains_key(&id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoed_awareness_is_ignored_but_taking_over_a_client_id_closes_with_4009() {
    let server = TestServer::start(&[]);
    let url = server.ws_url("aw-owner");
    let mut a = Peer::join(&url).await;
    let b = Peer::join(&url).await;
    let id = a.client_id();
    a.set_awareness(r#"{"n":"a"}"#);
    b.wait_until("a present", |s| s.states().contains_key(&id))
        .await;
    // Stock y-websocket clients echo what they receive (same clock): harmless.
    b.send_awareness(id, 1, r#"{"n":"a"}"#);
    b.send_awareness(id, 1, "null");
    // Advancing someone else's clock is not.
    b.send_awareness(id, 2, r#"{"n":"forged"}"#);
    assert_eq!(b.wait_close().await, 4009);
    // a is untouched and the room still works.
    a.set_awareness(r#"{"n":"a2"}"#);
    a.wait_until("a's own state", |s| {
        s.states().get(&id).map(String::as_str) == Some(r#"{"n":"a2"}"#)
    })
    .await;
    let c = Peer::join(&url).await;
    a.insert(0, "still fine");
    c.wait_text("still fine").await;
    assert!(server.log().contains("awareness rejected"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_awareness_is_answered() {
    let server = TestServer::start(&[]);
    let url = server.ws_url("aw-query");
    let mut a = Peer::join(&url).await;
    let b = Peer::join(&url).await;
    let id = a.client_id();
    a.set_awareness(r#"{"q":1}"#);
    b.wait_until("a present", |s| s.states().contains_key(&id))
        .await;
    b.state().awareness.clear();
    b.send_raw(vec![3]);
    b.wait_until("answer", |s| s.states().contains_key(&id))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awareness_that_is_not_renewed_expires() {
    let server = TestServer::start(&["--awareness-timeout-ms", "300"]);
    let url = server.ws_url("aw-expiry");
    let mut a = Peer::join(&url).await;
    let b = Peer::join(&url).await;
    let id = a.client_id();
    a.set_awareness(r#"{"stale":true}"#);
    b.wait_until("a present", |s| s.states().contains_key(&id))
        .await;
    // a stays connected but never renews: the server expires and removes it.
    b.wait_until("a expired", |s| !s.states().contains_key(&id))
        .await;
    a.set_awareness(r#"{"stale":false}"#);
    b.wait_until("a renewed", |s| s.states().contains_key(&id))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_client_reclaims_its_id_from_a_dead_connection() {
    let server = TestServer::start(&["--ping-interval-ms", "400"]);
    let url = server.ws_url("aw-reclaim");
    let observer = Peer::join(&url).await;
    // The "old connection": claims client id 4242, then goes silent (a
    // half-open socket: it never reads, so it never answers pings).
    let mut old = tandem_tests::RawSocket::connect(&url).await;
    let id = 4242u64;
    let mut body = vec![1u8];
    body.extend(leb(id));
    body.push(1);
    let state = br#"{"who":"old"}"#;
    body.push(state.len() as u8);
    body.extend_from_slice(state);
    let mut frame = vec![1u8, body.len() as u8];
    frame.extend(body);
    old.send_binary(frame).await;
    let silent_since = tokio::time::Instant::now();
    observer
        .wait_until("old state", |s| s.states().contains_key(&id))
        .await;
    // The same client comes back on a new connection. Once the old socket
    // has been silent for 1.5 ping intervals (600 ms) it is presumed dead,
    // so the newer clock is accepted (not refused with 4009), even before
    // the heartbeat drops the old socket (after 2 intervals).
    let newer = Peer::join(&url).await;
    tokio::time::sleep_until(silent_since + std::time::Duration::from_millis(700)).await;
    newer.send_awareness(id, 2, r#"{"who":"new"}"#);
    observer
        .wait_until("new state", |s| {
            s.states().get(&id).map(String::as_str) == Some(r#"{"who":"new"}"#)
        })
        .await;
    assert!(newer.state().close.is_none(), "reconnect was refused");
}

fn leb(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out
}
