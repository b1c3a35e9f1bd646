//! Per-client bounds against the real binary: the per-connection inbound
//! rate limit (4429).

use tandem_tests::client::text_update;
use tandem_tests::{Peer, RawSocket, TestServer};

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
