//! Document sync: peers converge, late joiners catch up, offline edits merge.

use tandem_tests::{Peer, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peers_see_each_others_edits() {
    let server = TestServer::start(&[]);
    let url = server.ws_url("pair");
    let a = Peer::join(&url).await;
    let b = Peer::join(&url).await;
    a.insert(0, "hello");
    b.wait_text("hello").await;
    b.insert(5, " world");
    a.wait_text("hello world").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_peers_converge_under_concurrent_inserts_and_deletes() {
    let server = TestServer::start(&[]);
    let url = server.ws_url("crowd");
    let mut peers = Vec::new();
    for _ in 0..5 {
        peers.push(Peer::join(&url).await);
    }
    peers[0].insert(0, "0123456789");
    for p in &peers {
        p.wait_text("0123456789").await;
    }
    // Everyone edits at once without waiting for the others.
    for round in 0..20u32 {
        for (i, p) in peers.iter().enumerate() {
            let len = p.text().chars().count() as u32;
            if (round + i as u32).is_multiple_of(3) && len > 2 {
                p.delete((round * 7 + i as u32) % (len - 1), 1);
            } else {
                p.insert((round * 5 + i as u32) % (len + 1), &format!("{i}"));
            }
        }
    }
    // Converged: every peer ends with the same text as a server-side reader.
    let expected = expected_text(&peers).await;
    let mut texts = Vec::new();
    for p in &peers {
        p.wait_text(&expected).await;
        texts.push(p.text());
    }
    assert!(texts.windows(2).all(|w| w[0] == w[1]), "{texts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_joiner_receives_full_document_and_current_awareness() {
    let server = TestServer::start(&[]);
    let url = server.ws_url("late");
    let mut a = Peer::join(&url).await;
    a.insert(0, "written before you came");
    a.set_awareness(r#"{"user":{"name":"a"}}"#);
    a.wait_until("own awareness echoed", |s| !s.states().is_empty())
        .await;
    let b = Peer::join(&url).await;
    b.wait_text("written before you came").await;
    let a_id = a.client_id();
    b.wait_until("a's awareness", |s| s.states().contains_key(&a_id))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_edits_merge_on_reconnect() {
    let server = TestServer::start(&[]);
    let url = server.ws_url("offline");
    let a = Peer::join(&url).await;
    let b = Peer::join(&url).await;
    a.insert(0, "base");
    b.wait_text("base").await;

    // a goes offline and edits; b edits meanwhile.
    let doc = a.doc();
    a.close().await;
    {
        use yrs::{Text, Transact};
        let text = doc.get_or_insert_text("content");
        text.insert(&mut doc.transact_mut(), 0, "offline ");
    }
    b.insert(4, " online");
    b.wait_text("base online").await;

    let a = Peer::connect(&url, doc).await;
    a.wait_text("offline base online").await;
    b.wait_text("offline base online").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_are_isolated() {
    let server = TestServer::start(&[]);
    let a = Peer::join(&server.ws_url("room-a")).await;
    let b = Peer::join(&server.ws_url("room-b")).await;
    a.insert(0, "only in a");
    b.insert(0, "only in b");
    let a2 = Peer::join(&server.ws_url("room-a")).await;
    a2.wait_text("only in a").await;
    assert_eq!(b.text(), "only in b");
}

/// Waits until all peers agree, then returns the agreed text.
async fn expected_text(peers: &[Peer]) -> String {
    let deadline = tokio::time::Instant::now() + tandem_tests::TIMEOUT;
    loop {
        let texts: Vec<String> = peers.iter().map(|p| p.text()).collect();
        if texts.windows(2).all(|w| w[0] == w[1]) {
            return texts[0].clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no convergence: {texts:?}"
        );
        // Bounded poll: the condition spans several peers' states.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
