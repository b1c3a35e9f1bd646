//! Write faults are survived and recovery is automatic: through the
//! fault-injecting seam at the disk-sync boundary (always), and on a real
//! full tmpfs (where this machine lets the test mount one).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Editor, append_durable, config_with_faults, id, text};
use tandem_store::{Store, StoreConfig, StoreError, StoreHealth};

const TIMEOUT: Duration = Duration::from_secs(30);

fn wait_writable(store: &Store) {
    let deadline = Instant::now() + TIMEOUT;
    while store.health() != StoreHealth::Writable {
        assert!(Instant::now() < deadline, "still {:?}", store.health());
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn failing_syncs_refuse_writes_keep_reads_and_recover_by_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let (config, faults) = config_with_faults(dir.path());
    let store = Store::open(config).unwrap();
    let doc = id("typed");
    let editor = Editor::new(1);
    append_durable(&store, &doc, &editor.insert(0, "acked "));

    faults.fail();
    let lost = editor.insert(u32::MAX, "refused ");
    let refused = store.append(&doc, &lost).and_then(|t| t.wait_durable());
    assert!(
        matches!(refused, Err(StoreError::FlushFailed(_))),
        "{refused:?}"
    );
    let StoreHealth::Failing { reason, .. } = store.health() else {
        panic!("health says writable while syncs fail");
    };
    assert!(reason.contains("No space left"), "{reason}");
    // New writes fail at once with a clear error; reads keep working.
    let err = store.append(&doc, &editor.insert(0, "x")).unwrap_err();
    assert!(err.to_string().contains("flushing to disk failed"), "{err}");
    assert!(text(&store.load(&doc).unwrap()).starts_with("acked "));
    assert!(store.info(&doc).unwrap().is_some());

    faults.heal();
    wait_writable(&store);
    append_durable(&store, &doc, &editor.insert(u32::MAX, "after"));
    drop(store);
    let store = common::open(dir.path());
    let content = text(&store.load(&doc).unwrap());
    assert!(
        content.starts_with("acked ") && content.ends_with("after"),
        "{content}"
    );
}

/// Mounts a small tmpfs on `dir`; `false` where mounting is not permitted.
fn mount_tmpfs(dir: &Path, size: &str) -> bool {
    std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success())
}

struct Unmount<'a>(&'a Path);

impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.0).status();
    }
}

#[test]
fn a_real_full_disk_is_survived_and_recovery_needs_no_restart() {
    let mount = tempfile::tempdir().unwrap();
    if !mount_tmpfs(mount.path(), "24m") {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root and mount permission)");
        return;
    }
    let _unmount = Unmount(mount.path());
    let data = mount.path().join("data");
    let filler = mount.path().join("filler");
    let store = Store::open(StoreConfig::new(&data)).unwrap();
    // Leave a little room, then type into documents until the disk is full.
    let mut fill = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 1 << 20];
    while std::io::Write::write_all(&mut fill, &chunk).is_ok() {}
    drop(fill);
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .open(&filler)
        .map(|f| {
            f.set_len(
                std::fs::metadata(&filler)
                    .unwrap()
                    .len()
                    .saturating_sub(3 << 20),
            )
        });

    let editor = Editor::new(7);
    let doc = id("full");
    let mut acked = String::new();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        assert!(Instant::now() < deadline, "the disk never filled");
        let word = format!("w{} ", acked.len());
        let update = editor.insert(u32::MAX, &format!("{word}{}", "p".repeat(2000)));
        match store.append(&doc, &update).and_then(|t| t.wait_durable()) {
            Ok(_) => acked.push_str(&word),
            Err(_) => break,
        }
    }
    assert!(matches!(store.health(), StoreHealth::Failing { .. }));
    assert!(store.append(&doc, b"\0").is_err(), "writes must be refused");
    let while_full = store.load(&doc).map(|d| text(&d));
    eprintln!(
        "{} words acknowledged before the disk filled; a read while full: {}",
        acked.split_whitespace().count(),
        match &while_full {
            Ok(t) => format!("ok ({} chars)", t.len()),
            Err(e) => format!("error: {e}"),
        }
    );

    std::fs::remove_file(&filler).unwrap();
    wait_writable(&store);
    append_durable(&store, &doc, &editor.insert(0, "recovered "));
    let content = text(&store.load(&doc).unwrap());
    for word in acked.split_whitespace() {
        assert!(
            content.contains(&format!("{word} p")),
            "acknowledged {word} lost"
        );
    }
    drop(store);
    let store = common::open(&data);
    let content = text(&store.load(&doc).unwrap());
    assert!(content.starts_with("recovered "), "after reopen");
    for word in acked.split_whitespace() {
        assert!(
            content.contains(&format!("{word} p")),
            "acknowledged {word} lost after reopen"
        );
    }
}

#[test]
fn an_acknowledged_write_whose_sled_apply_failed_is_never_missed_and_recovery_replays_it() {
    let dir = tempfile::tempdir().unwrap();
    let (config, faults) = config_with_faults(dir.path());
    let store = Store::open(config.clone()).unwrap();
    let doc = id("applied-late");
    let editor = Editor::new(3);
    append_durable(&store, &doc, &editor.insert(0, "first "));
    // Read (so applied to sled: acknowledged writes may not be yet).
    assert_eq!(text(&store.load(&doc).unwrap()), "first ");

    faults.fail_next_apply();
    // In the log and synced: acknowledged, although sled never got it.
    append_durable(&store, &doc, &editor.insert(u32::MAX, "second"));
    // A read fails or sees it; it never misses it.
    match store.load(&doc) {
        Ok(loaded) => assert_eq!(text(&loaded), "first second"),
        Err(e) => assert!(matches!(e, StoreError::FlushFailed(_)), "{e:?}"),
    }
    wait_writable(&store);
    assert_eq!(text(&store.load(&doc).unwrap()), "first second");
    assert_eq!(store.info(&doc).unwrap().unwrap().update_count, 2);
    drop(store);
    let reopened = Store::open(config).unwrap();
    assert_eq!(text(&reopened.load(&doc).unwrap()), "first second");
}
