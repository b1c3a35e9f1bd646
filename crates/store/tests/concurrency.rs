//! Appends from many threads, racing compactions and loads, lose nothing;
//! relaxed durability still persists on a clean shutdown.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};

use common::{Editor, append_durable, id, open, text};
use tandem_store::{Durability, Store, StoreConfig};

#[test]
fn appends_racing_compactions_and_loads_are_never_lost() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let doc = id("busy");
    let writers = 4;
    let per_writer = 150;
    let done = AtomicBool::new(false);
    let seqs = std::thread::scope(|s| {
        let compactor = s.spawn(|| {
            let mut merged = 0;
            loop {
                let finished = done.load(Ordering::Acquire);
                merged += store.compact(&doc).unwrap().merged_updates;
                store.load(&doc).unwrap();
                if finished {
                    return merged;
                }
            }
        });
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let (store, doc) = (&store, &doc);
                s.spawn(move || {
                    let editor = Editor::new(w as u64 + 1);
                    let mut seqs = Vec::new();
                    for n in 0..per_writer {
                        let update = editor.insert(u32::MAX, &format!("<{w}.{n}>"));
                        seqs.push(store.append(doc, &update).unwrap().wait_durable().unwrap());
                    }
                    (editor, seqs)
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        done.store(true, Ordering::Release);
        let merged = compactor.join().unwrap();
        assert_eq!(store.info(&doc).unwrap().unwrap().log_len, 0);
        assert!(merged > 0);
        results
    });
    let mut all: Vec<u64> = seqs.iter().flat_map(|(_, s)| s.iter().copied()).collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=(writers * per_writer) as u64).collect::<Vec<_>>(),
        "seqs unique and gapless"
    );

    let check = |store: &Store| {
        let content = text(&store.load(&doc).unwrap());
        for w in 0..writers {
            for n in 0..per_writer {
                assert!(content.contains(&format!("<{w}.{n}>")), "<{w}.{n}> lost");
            }
        }
    };
    check(&store);
    store.compact(&doc).unwrap();
    check(&store);
    drop(store);
    check(&open(dir.path()));
}

#[test]
fn relaxed_mode_acknowledges_at_once_and_persists_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(dir.path());
    config.durability = Durability::Relaxed {
        flush_every_ms: 60_000,
    };
    let doc = id("relaxed");
    let editor = Editor::new(1);
    {
        let store = Store::open(config.clone()).unwrap();
        for i in 0..100 {
            append_durable(&store, &doc, &editor.insert(i, "r"));
        }
        // Nothing was synced by the background flusher yet (interval 60 s).
        assert_eq!(store.commit_stats().syncs, 0);
    }
    let store = Store::open(config).unwrap();
    assert_eq!(text(&store.load(&doc).unwrap()), "r".repeat(100));
}

/// A store on `dir` in relaxed mode with a flush interval of `ms`.
fn open_relaxed(dir: &std::path::Path, ms: u64) -> Store {
    let mut config = StoreConfig::new(dir);
    config.durability = Durability::Relaxed { flush_every_ms: ms };
    Store::open(config).unwrap()
}

/// Waits (polling, with a deadline) until `done` holds.
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn relaxed_mode_reads_see_every_acknowledged_write_before_the_timer() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_relaxed(dir.path(), 60_000);
    let doc = id("read-early");
    let editor = Editor::new(1);
    for i in 0..50 {
        append_durable(&store, &doc, &editor.insert(i, "r"));
    }
    assert_eq!(store.commit_stats().syncs, 0);
    // The read runs the round the timer would have run.
    assert_eq!(text(&store.load(&doc).unwrap()), "r".repeat(50));
    assert_eq!(store.commit_stats().durable_writes, 50);
}

#[test]
fn relaxed_mode_syncs_on_its_timer_and_early_past_a_mebibyte_queued() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_relaxed(dir.path(), 20);
    append_durable(&store, &id("timer"), &Editor::new(1).insert(0, "t"));
    wait_until("the timer's round", || {
        store.commit_stats().durable_writes == 1
    });

    let dir = tempfile::tempdir().unwrap();
    let store = open_relaxed(dir.path(), 60_000);
    let doc = id("big");
    let editor = Editor::new(2);
    let chunk = "x".repeat(64 << 10);
    for i in 0..20 {
        append_durable(&store, &doc, &editor.insert(i * chunk.len() as u32, &chunk));
    }
    wait_until("a round before the 60 s timer", || {
        store.commit_stats().syncs >= 1
    });
}
