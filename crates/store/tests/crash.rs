//! Crash safety: a child process appends (single updates and batches) and
//! prints every acknowledged update; the parent SIGKILLs it at random moments, reopens the directory
//! and checks that every acknowledged update is there.
//!
//! The child is this test binary itself, re-run with `CRASH_CHILD_DIR` set
//! (see `crash_child`, a no-op in normal runs).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Editor, id, open, text};
use yrs::updates::decoder::Decode;
use yrs::{Transact, Update};

const ROUNDS: u64 = 10;

/// Appends tokens forever (until killed), compacting every 40 appends, and
/// prints `ack <token>` once each append is durable.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os("CRASH_CHILD_DIR") else {
        return;
    };
    let round: u64 = std::env::var("CRASH_CHILD_ROUND").unwrap().parse().unwrap();
    let store = open(std::path::Path::new(&dir));
    let doc = id("crash");
    let editor = Editor::new(1000 + round);
    let state = store.export(&doc).unwrap();
    editor
        .doc
        .transact_mut()
        .apply_update(Update::decode_v1(&state).unwrap())
        .unwrap();
    let mut out = std::io::stdout().lock();
    for n in 0..1_000_000u64 {
        let token = format!("[{round}.{n}]");
        if n % 2 == 0 {
            let ticket = store
                .append(&doc, &editor.insert(u32::MAX, &token))
                .unwrap();
            ticket.wait_durable().unwrap();
            writeln!(out, "ack {token}").unwrap();
        } else {
            // A batch record: three tokens, acknowledged together.
            let tokens: Vec<String> = (0..3).map(|i| format!("[{round}.{n}.{i}]")).collect();
            let updates: Vec<Vec<u8>> = tokens.iter().map(|t| editor.insert(u32::MAX, t)).collect();
            let refs: Vec<&[u8]> = updates.iter().map(Vec::as_slice).collect();
            store
                .append_batch(&doc, &refs)
                .unwrap()
                .wait_durable()
                .unwrap();
            for token in &tokens {
                writeln!(out, "ack {token}").unwrap();
            }
        }
        out.flush().unwrap();
        if n % 40 == 39 {
            store.compact(&doc).unwrap();
        }
    }
}

/// A small xorshift: random kill moments without extra crates.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn acknowledged_appends_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let mut seed = (clock.as_nanos() as u64
        ^ u64::from(std::process::id()).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        | 1;
    let initial_seed = seed;
    let mut acked = Vec::new();
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env("CRASH_CHILD_DIR", dir.path())
            .env("CRASH_CHILD_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let kill_after = 1 + next(&mut seed) % 200;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = 0;
        while seen < kill_after && Instant::now() < deadline {
            let Some(line) = lines.next() else { break };
            if let Some(token) = line.unwrap().strip_prefix("ack ") {
                acked.push(token.to_string());
                seen += 1;
            }
        }
        // Land the kill at a random point inside the next append/flush.
        std::thread::sleep(Duration::from_micros(next(&mut seed) % 2000));
        child.kill().unwrap();
        // Acks printed before the kill are promises too.
        for line in lines {
            if let Some(token) = line.unwrap().strip_prefix("ack ") {
                acked.push(token.to_string());
            }
        }
        child.wait().unwrap();

        let store = open(dir.path());
        let content = text(&store.load(&id("crash")).unwrap());
        for token in &acked {
            assert!(
                content.contains(token.as_str()),
                "round {round} (seed {initial_seed}): acknowledged {token} lost"
            );
        }
        assert!(seen > 0, "round {round}: child acknowledged nothing");
    }
}
