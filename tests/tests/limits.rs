//! Limits and liveness: slow peers, full rooms, the open-room cap (and
//! least-recently-used eviction under it), the short grace of rooms opened
//! by HTTP only, single-flight loading, unload races, missed pongs.

use std::time::Duration;

use tandem_tests::client::text_update;
use tandem_tests::{Peer, RawSocket, TIMEOUT, TestServer};

/// Polls `cond` on the server (HTTP) until it holds or [`TIMEOUT`] passes.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A peer that joins and never reads is closed with 4008 once its queue
/// overflows, while the others keep receiving everything.
async fn slow_peer_is_closed_with_4008(flags: &[&str]) {
    let server = TestServer::start(flags);
    let url = server.ws_url("slow");
    let a = Peer::join(&url).await;
    let b = Peer::join(&url).await;
    // Joins, then never reads: its socket buffers and then its queue fill up.
    let mut slow = RawSocket::connect(&url).await;
    let chunk = "z".repeat(64 * 1024);
    let mut sent = 0usize;
    while server.metric("tandem_closes_total{code=\"4008\"}") < 1.0 {
        assert!(sent < 1000, "slow peer never closed");
        a.send_update(&text_update(&chunk));
        sent += 1;
        b.wait_until("b keeps up", |s| s.updates_received > sent)
            .await;
    }
    // Reading now drains what was buffered and ends with the close frame.
    assert_eq!(slow.wait_close().await, 4008);
    a.insert(0, "after");
    b.wait_until("still flowing", |s| s.text().contains("after"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_peer_is_closed_with_4008_when_its_queue_is_full() {
    slow_peer_is_closed_with_4008(&["--peer-queue", "8"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_peer_is_closed_with_4008_when_its_backlog_passes_the_byte_budget() {
    slow_peer_is_closed_with_4008(&["--peer-queue-bytes", "300000"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_room_refuses_the_next_peer_with_4013() {
    let server = TestServer::start(&["--max-peers-per-room", "2"]);
    let url = server.ws_url("full");
    let a = Peer::join(&url).await;
    let b = Peer::join(&url).await;
    let third = Peer::connect(&url, yrs::Doc::new()).await;
    assert_eq!(third.wait_close().await, 4013);
    a.insert(0, "two is company");
    b.wait_text("two is company").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_room_cap_refuses_another_document_with_4013() {
    let server = TestServer::start(&["--max-open-rooms", "1"]);
    let _a = Peer::join(&server.ws_url("first")).await;
    let other = Peer::connect(&server.ws_url("second"), yrs::Doc::new()).await;
    assert_eq!(other.wait_close().await, 4013);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_open_room_cap_the_least_recently_used_idle_room_unloads_first() {
    let server = TestServer::start(&["--max-open-rooms", "2", "--room-unload-grace-ms", "600000"]);
    let old = Peer::join(&server.ws_url("old")).await;
    old.insert(0, "old text");
    old.close().await;
    let busy = Peer::join(&server.ws_url("busy")).await;
    eventually("old's peer gone", || {
        server.metric("tandem_peers_connected") == 1.0
    })
    .await;
    // "old" has no peer: it makes way; "busy" is untouched.
    let new = Peer::join(&server.ws_url("new")).await;
    // (The evicted room counts until it has compacted and ended.)
    eventually("old unloaded", || server.metric("tandem_rooms_open") == 2.0).await;
    busy.insert(0, "busy text");
    let watcher = Peer::join(&server.ws_url("busy")).await;
    watcher.wait_text("busy text").await;
    // Every open room in use: refused.
    let fourth = Peer::connect(&server.ws_url("fourth"), yrs::Doc::new()).await;
    assert_eq!(fourth.wait_close().await, 4013);
    // The evicted document lost nothing: it reloads once a room is idle.
    new.close().await;
    eventually("new's peer gone", || {
        server.metric("tandem_peers_connected") == 2.0
    })
    .await;
    let back = Peer::join(&server.ws_url("old")).await;
    back.wait_text("old text").await;
    assert_eq!(busy.state().close_code(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_writes_to_fresh_ids_at_the_cap_do_not_lock_out_joins() {
    let server = TestServer::start(&["--max-open-rooms", "3", "--http-room-grace-ms", "600000"]);
    for i in 0..20 {
        let (status, _) = server.request("PUT", &format!("/api/docs/spam-{i}/text"), b"x");
        assert_eq!(status, 204, "each write makes way for itself");
    }
    let peer = Peer::join(&server.ws_url("legit")).await;
    peer.insert(0, "joined");
    peer.wait_text("joined").await;
    assert_eq!(server.get_text("/api/docs/spam-0/text").1, "x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_opened_only_by_http_unloads_after_the_short_grace() {
    let server = TestServer::start(&["--room-unload-grace-ms", "600000"]);
    let peer = Peer::join(&server.ws_url("joined")).await;
    peer.close().await;
    let (status, _) = server.request("PUT", "/api/docs/http-only/text", b"hello");
    assert_eq!(status, 204);
    // Only the HTTP room can unload (the joined one has the long grace).
    eventually("the HTTP-only room unloads", || {
        server.metric("tandem_rooms_open") == 1.0
    })
    .await;
    assert_eq!(server.get_text("/api/docs/http-only/text").1, "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_joins_load_the_document_once() {
    let server = TestServer::start(&[]);
    let url = server.ws_url("stampede");
    let peers = futures_util::future::join_all((0..8).map(|_| Peer::join(&url))).await;
    assert_eq!(server.metric("tandem_room_loads_total"), 1.0);
    peers[0].insert(0, "one room");
    for p in &peers {
        p.wait_text("one room").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejoining_while_the_room_unloads_loses_nothing() {
    let server = TestServer::start(&["--room-unload-grace-ms", "0"]);
    let url = server.ws_url("churn");
    let mut expected = String::new();
    for i in 0..15 {
        let p = Peer::join(&url).await;
        p.wait_text(&expected).await;
        let s = format!("{i},");
        p.insert(expected.chars().count() as u32, &s);
        expected.push_str(&s);
        p.close().await;
        if i % 2 == 0 {
            // Let the room unload; odd rounds rejoin at once and race the unload.
            eventually("room unloaded", || {
                server.metric("tandem_rooms_open") == 0.0
            })
            .await;
        }
    }
    let last = Peer::join(&url).await;
    last.wait_text(&expected).await;
    assert!(server.metric("tandem_room_loads_total") >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_answers_pings_is_dropped() {
    let server = TestServer::start(&["--ping-interval-ms", "100"]);
    let url = server.ws_url("silent");
    let _silent = RawSocket::connect(&url).await;
    eventually("peer joined", || {
        server.metric("tandem_peers_connected") == 1.0
    })
    .await;
    eventually("silent peer dropped", || {
        server.metric("tandem_peers_connected") == 0.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_peers_with_1001_and_exits_cleanly() {
    let mut server = TestServer::start(&[]);
    let a = Peer::join(&server.ws_url("bye")).await;
    assert!(server.sigterm().success());
    assert_eq!(a.wait_close().await, 1001);
}
