//! A kill -9 at any moment of start-up never locks the data directory out:
//! the real binary is killed at random moments while it opens the store,
//! and every later start succeeds with every acknowledged write present.

mod common;

use std::time::{Duration, Instant};

use common::{next, seed, spawn, start, wait_listening};

/// Kill-during-start-up rounds (each also runs one full start).
const ROUNDS: u64 = 12;
/// The whole loop stops early once it has run this long (loaded machine).
const BUDGET: Duration = Duration::from_secs(90);

#[test]
fn kill_during_startup_never_locks_the_directory_out() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut seed = seed();
    let initial_seed = seed;
    let began = Instant::now();
    let mut acked: Vec<(String, String)> = Vec::new();
    let mut rounds = 0;
    let mut caught_mid_snapshot = 0u32;
    while rounds < ROUNDS && began.elapsed() < BUDGET {
        // A start killed at a random moment 0-20 ms after exec, or (every
        // other round) the moment sled's snapshot file appears, before sled
        // renames it: the crash that used to lock the directory out.
        let mut child = spawn(&data, &[]);
        if rounds % 2 == 0 {
            std::thread::sleep(Duration::from_micros(next(&mut seed) % 20_000));
        } else {
            let found = common::wait_for(Duration::from_secs(5), || {
                std::fs::read_dir(&data).ok()?.flatten().find(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    name.starts_with("snap.") && name.ends_with(".generating")
                })
            });
            caught_mid_snapshot += u32::from(found.is_some());
        }
        let _ = child.kill();
        let _ = child.wait();

        // Every start must succeed and serve every acknowledged write.
        let server = wait_listening(spawn(&data, &[]), common::TIMEOUT)
            .unwrap_or_else(|e| panic!("round {rounds} (seed {initial_seed}): {e}"));
        assert_serves(
            &server,
            &acked,
            &format!("round {rounds} (seed {initial_seed})"),
        );
        let doc = format!("doc-{rounds}");
        let body = format!("written in round {rounds}");
        let (status, _) = server
            .request("PUT", &format!("/api/docs/{doc}/text"), body.as_bytes())
            .unwrap();
        assert_eq!(status, 204, "round {rounds}: PUT");
        acked.push((doc, body));
        server.kill();
        rounds += 1;
    }
    assert!(rounds >= 3, "only {rounds} rounds ran in {BUDGET:?}");
    eprintln!("{rounds} rounds, {caught_mid_snapshot} killed while sled's snapshot file existed");
    // And a final clean start sees everything.
    assert_serves(&start(&data, &[]), &acked, "final start");
}

/// Asserts that `server` answers every `(doc, text)` in `acked`.
fn assert_serves(server: &common::Server, acked: &[(String, String)], context: &str) {
    for (doc, body) in acked {
        let (status, got) = server
            .request("GET", &format!("/api/docs/{doc}/text"), b"")
            .unwrap();
        assert_eq!(
            (status, String::from_utf8_lossy(&got).as_ref()),
            (200, body.as_str()),
            "{context}: acknowledged {doc} lost"
        );
    }
}
