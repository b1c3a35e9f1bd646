//! A data directory is never locked out and never silently emptied: stale
//! sled files are set aside at open, damage is refused loudly.

mod common;

use common::{Editor, append_durable, id, open, text};

#[test]
fn stale_generating_snapshot_is_set_aside_and_every_document_opens() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        append_durable(&store, &id("kept"), &Editor::new(1).insert(0, "still here"));
    }
    // What a crash between sled's snapshot write and its rename leaves.
    let planted = dir.path().join("snap.FFFFFFFFFFFFFFFF.generating");
    std::fs::write(&planted, b"").unwrap();

    let store = open(dir.path());
    assert_eq!(text(&store.load(&id("kept")).unwrap()), "still here");
    assert!(!planted.exists(), "the stale file must be moved");
    let aside: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("set-aside.snap.FFFFFFFFFFFFFFFF.generating."))
        .collect();
    assert_eq!(aside.len(), 1, "set aside, never deleted");
}
