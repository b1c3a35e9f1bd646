//! Durability: documents survive SIGTERM and SIGKILL; what a peer received
//! is on disk; the HTTP API and operator commands read stored documents.

use tandem_tests::{Peer, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_sigterm_restores_documents() {
    let mut server = TestServer::start(&[]);
    let a = Peer::join(&server.ws_url("kept")).await;
    let b = Peer::join(&server.ws_url("kept")).await;
    a.insert(0, "survives a restart");
    b.wait_text("survives a restart").await;
    let status = server.sigterm();
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(a.wait_close().await, 1001);
    server.restart();
    let c = Peer::join(&server.ws_url("kept")).await;
    c.wait_text("survives a restart").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_a_peer_received_survives_sigkill() {
    let mut server = TestServer::start(&[]);
    let url = server.ws_url("crash");
    let a = Peer::join(&url).await;
    let b = Peer::join(&url).await;
    for i in 0..50u32 {
        a.insert(i, "x");
    }
    // Broadcast happens only after the store made the update durable.
    b.wait_text(&"x".repeat(50)).await;
    server.sigkill();
    server.restart();
    let c = Peer::join(&server.ws_url("crash")).await;
    c.wait_text(&"x".repeat(50)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_reads_stored_documents() {
    let server = TestServer::start(&[]);
    let a = Peer::join(&server.ws_url("api-doc")).await;
    let b = Peer::join(&server.ws_url("api-doc")).await;
    a.insert(0, "plain text");
    b.wait_text("plain text").await;
    assert_eq!(
        server.get_text("/api/docs/api-doc/text"),
        (200, "plain text".into())
    );
    let (status, list) = server.get_text("/api/docs");
    assert_eq!(status, 200);
    assert!(list.contains("\"api-doc\""), "{list}");
    let (status, update) = server.get("/api/docs/api-doc/update");
    assert_eq!(status, 200);
    let doc = yrs::Doc::new();
    {
        use yrs::updates::decoder::Decode;
        use yrs::{GetString, Transact};
        doc.transact_mut()
            .apply_update(yrs::Update::decode_v1(&update).unwrap())
            .unwrap();
        let text = doc.get_or_insert_text("content");
        assert_eq!(text.get_string(&doc.transact()), "plain text");
    }
    assert_eq!(server.get("/api/docs/missing/text").0, 404);
    assert_eq!(server.get("/api/docs/bad%20id/text").0, 400);
    assert_eq!(server.get("/metrics").0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_export_import_and_compact() {
    let mut server = TestServer::start(&[]);
    let a = Peer::join(&server.ws_url("ops")).await;
    let b = Peer::join(&server.ws_url("ops")).await;
    a.insert(0, "exported");
    b.wait_text("exported").await;
    assert!(server.sigterm().success());

    let out = server.run_cli(&["list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("ops"));
    let out = server.run_cli(&["export", "ops"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "exported");
    let out = server.run_cli(&["export", "ops", "--format", "json"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("exported"));
    let file = tempfile::NamedTempFile::new().unwrap();
    let path = file.path().to_str().unwrap();
    let out = server.run_cli(&["export", "ops", "--format", "update", "-o", path]);
    assert!(out.status.success());
    let out = server.run_cli(&["import", "copy", path]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = server.run_cli(&["compact"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = server.run_cli(&["export", "copy"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "exported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_writes_reach_connected_peers_and_the_store() {
    let server = TestServer::start(&[]);
    let a = Peer::join(&server.ws_url("http-write")).await;
    let b = Peer::join(&server.ws_url("http-write")).await;
    a.insert(0, "old text");
    // b has it, so the room has applied it: the PUT replaces it.
    b.wait_text("old text").await;
    let (status, _) = server.request("PUT", "/api/docs/http-write/text", b"new text");
    assert_eq!(status, 204);
    a.wait_text("new text").await;
    b.wait_text("new text").await;
    let update = tandem_tests::client::text_update("merged: ");
    let (status, _) = server.request("POST", "/api/docs/http-write/update", &update);
    assert_eq!(status, 204);
    a.wait_until("merged", |s| s.text().contains("merged: "))
        .await;
    let (_, stored) = server.get_text("/api/docs/http-write/text");
    assert_eq!(stored, a.text());
    // A document nobody has open is opened, written and stored.
    assert_eq!(
        server.request("PUT", "/api/docs/fresh/text", b"hello").0,
        204
    );
    assert_eq!(
        server.get_text("/api/docs/fresh/text"),
        (200, "hello".into())
    );
    // Garbage is refused and stores nothing.
    let (status, _) = server.request("POST", "/api/docs/fresh/update", &[0xff, 0xff, 0x01]);
    assert_eq!(status, 400);
    assert_eq!(
        server.get_text("/api/docs/fresh/text"),
        (200, "hello".into())
    );
}

/// Writes "hello world", deletes " world", stops the server (which compacts)
/// and returns the exported document as a binary update.
async fn export_after_delete(extra: &[&str], doc: &str) -> Vec<u8> {
    let mut server = TestServer::start(extra);
    let a = Peer::join(&server.ws_url(doc)).await;
    let b = Peer::join(&server.ws_url(doc)).await;
    a.insert(0, "hello world");
    b.wait_text("hello world").await;
    a.delete(5, 6);
    b.wait_text("hello").await;
    assert!(server.sigterm().success());
    let file = tempfile::NamedTempFile::new().unwrap();
    let path = file.path().to_str().unwrap();
    let mut args = vec!["export", doc, "--format", "update", "-o", path];
    args.extend_from_slice(extra);
    let out = server.run_cli(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_gc_keeps_deleted_text_through_compaction() {
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    // Garbage collection (the default) drops the deleted characters...
    let collected = export_after_delete(&[], "gc-on").await;
    assert!(!contains(&collected, b" world"));
    // ...`--skip-gc` keeps them, so past versions stay restorable.
    let kept = export_after_delete(&["--skip-gc"], "gc-off").await;
    assert!(contains(&kept, b" world"));
}
