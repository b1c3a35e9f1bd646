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
