//! Measurements run by hand (not tests: they assert nothing about speed):
//! `TANDEM_BIN=target/release/tandem cargo test -p tandem-tests --test measure -- --ignored --nocapture`.

use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use tandem_tests::TestServer;
use tokio_tungstenite::tungstenite::Message;

/// Joins like a fresh y-websocket client (SyncStep1 with an empty state
/// vector) and returns once the SyncStep2 with the document arrived. Does
/// not decode it: the measurement is of the server, not of this client.
async fn join_raw(url: &str) -> usize {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.send(Message::binary(vec![0u8, 0, 1, 0])).await.unwrap();
    while let Some(msg) = ws.next().await {
        let data = msg.unwrap().into_data();
        if data.starts_with(&[0, 1]) {
            return data.len();
        }
    }
    panic!("socket ended before the document arrived");
}

/// 50 simultaneous joiners of a 15 MB text document: join p50/p99 and the
/// server's peak RSS (the join-storm workload, by hand).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn join_storm_of_a_15_mb_document() {
    let server = TestServer::start(&[]);
    let big = "lorem ipsum dolor sit amet ".repeat(15_000_000 / 27);
    assert_eq!(
        server
            .request("PUT", "/api/docs/storm/text", big.as_bytes())
            .0,
        204
    );
    let before = server.peak_rss_bytes();
    let url = server.ws_url("storm");
    let joins = (0..50).map(|_| {
        let url = url.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let len = join_raw(&url).await;
            assert!(len > big_len());
            (t.elapsed(), len)
        })
    });
    let mut times: Vec<_> = futures_util::future::join_all(joins)
        .await
        .into_iter()
        .map(|r| r.unwrap().0.as_secs_f64() * 1e3)
        .collect();
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    println!(
        "join storm, 50 joiners of {} MB: p50 {:.0} ms, p99 {:.0} ms; peak RSS {} MB before the storm, {} MB after",
        big.len() / 1_000_000,
        pct(0.5),
        pct(0.99),
        before / 1_000_000,
        server.peak_rss_bytes() / 1_000_000
    );
}

fn big_len() -> usize {
    "lorem ipsum dolor sit amet ".len() * (15_000_000 / 27)
}
