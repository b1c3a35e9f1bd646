//! Per-client bounds against the real binary: the per-connection inbound
//! rate limit and the per-`sub` quotas (both 4429).

use tandem_gateway::access::Mode;
use tandem_tests::client::text_update;
use tandem_tests::tokens::{auth_flags, claims, sign};
use tandem_tests::{Peer, RawSocket, TIMEOUT, TestServer};

/// A SyncStep1 with an empty state vector: valid, cheap, answered.
const SYNC_STEP1: [u8; 4] = [0, 0, 1, 0];

/// A connection that floods past its bucket is closed with 4429, and only
/// it: a neighbour in the same room, sending within its own budget, is
/// still served.
async fn a_flood_is_closed_with_4429(flags: &[&str], frame: Vec<u8>) {
    let server = TestServer::start(flags);
    let url = server.ws_url("flood");
    let a = Peer::join(&url).await;
    let b = Peer::join(&url).await;
    let mut flooder = RawSocket::connect(&url).await;
    for _ in 0..500 {
        flooder.send_binary(frame.clone()).await;
    }
    assert_eq!(flooder.wait_close().await, 4429);
    for word in ["<one>", "<two>", "<three>"] {
        a.insert(0, word);
        b.wait_until("edits keep flowing", |s| s.text().contains(word))
            .await;
    }
    assert_eq!(a.state().close_code(), None);
    assert_eq!(server.metric("tandem_closes_total{code=\"4429\"}"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_messages_than_the_rate_allows_close_the_sender_with_4429() {
    let flags = ["--peer-msgs-per-sec", "10", "--peer-msgs-burst", "20"];
    a_flood_is_closed_with_4429(&flags, SYNC_STEP1.to_vec()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_bytes_than_the_rate_allows_close_the_sender_with_4429() {
    let flags = [
        "--max-message-bytes",
        "8192",
        "--peer-bytes-per-sec",
        "1000",
        "--peer-bytes-burst",
        "8192",
    ];
    let mut update = vec![0u8, 2];
    yrs::encoding::write::Write::write_buf(&mut update, text_update(&"x".repeat(3000)));
    a_flood_is_closed_with_4429(&flags, update).await;
}

/// `ws://.../ws/<doc>?token=` for a writer whose `sub` is `sub`.
fn url_as(server: &TestServer, doc: &str, sub: &str) -> String {
    let mut c = claims(&["*"], Mode::Write);
    c.sub = sub.into();
    format!("{}?token={}", server.ws_url(doc), sign(&c))
}

/// Joins (and syncs) once the quota has room again, or times out.
async fn join_when_admitted(url: &str) -> Peer {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let peer = Peer::connect(url, yrs::Doc::new()).await;
        // Either synced (admitted) or closed (refused: 4429), whichever first.
        peer.wait_until("synced or refused", |s| {
            s.synced || s.close.is_some() || s.ended
        })
        .await;
        if peer.state().synced {
            return peer;
        }
        assert_eq!(peer.state().close_code(), Some(4429));
        assert!(
            tokio::time::Instant::now() < deadline,
            "never admitted again"
        );
    }
}

fn quota_server(flags: &[&str]) -> TestServer {
    let mut all = auth_flags();
    all.extend_from_slice(flags);
    TestServer::start(&all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_past_its_connection_quota_is_refused_with_4429_and_others_are_not() {
    let server = quota_server(&["--max-connections-per-sub", "2"]);
    let first = Peer::join(&url_as(&server, "a", "ana")).await;
    let _second = Peer::join(&url_as(&server, "b", "ana")).await;
    let mut third = RawSocket::connect(&url_as(&server, "a", "ana")).await;
    assert_eq!(third.wait_close().await, 4429);
    // Another sub is not affected, nor are ana's open connections.
    let bob = Peer::join(&url_as(&server, "a", "bob")).await;
    first.insert(0, "still served");
    bob.wait_text("still served").await;
    // Closing one frees a slot.
    first.close().await;
    let again = join_when_admitted(&url_as(&server, "a", "ana")).await;
    again.wait_text("still served").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_past_its_document_quota_is_refused_with_4429_but_may_join_its_open_ones() {
    let server = quota_server(&["--max-rooms-per-sub", "2"]);
    let x = Peer::join(&url_as(&server, "x", "ana")).await;
    let _y = Peer::join(&url_as(&server, "y", "ana")).await;
    let mut z = RawSocket::connect(&url_as(&server, "z", "ana")).await;
    assert_eq!(z.wait_close().await, 4429);
    // A second connection to a document it already holds is fine.
    let x2 = Peer::join(&url_as(&server, "x", "ana")).await;
    x.insert(0, "hi");
    x2.wait_text("hi").await;
    let _bob = Peer::join(&url_as(&server, "z", "bob")).await;
    // Leaving a document frees it.
    x.close().await;
    x2.close().await;
    let _z = join_when_admitted(&url_as(&server, "z", "ana")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auth_connections_are_not_counted_per_sub() {
    let server = TestServer::start(&["--max-connections-per-sub", "1", "--max-rooms-per-sub", "1"]);
    let a = Peer::join(&server.ws_url("one")).await;
    let b = Peer::join(&server.ws_url("two")).await;
    let c = Peer::join(&server.ws_url("one")).await;
    a.insert(0, "anonymous");
    c.wait_text("anonymous").await;
    assert_eq!(b.state().close_code(), None);
}
