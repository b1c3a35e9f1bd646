//! Room tests: a real registry and room task with fake peer links (plain
//! channels instead of sockets) and a real store in a temp dir.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tandem_store::{DocId, Store, StoreConfig};
use yrs::encoding::write::Write;
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact};

use crate::access::{Mode, Principal};
use crate::close::CloseCode;
use crate::config::Limits;
use crate::inspect::Encoding;
use crate::link::{Kill, Line, PeerId, PeerLink, RoomEnd, TEXT_ROOT};
use crate::mailbox::{Edit, EditError};
use crate::metrics::Metrics;
use crate::protocol::{self, Inbound};
use crate::room::Rooms;

use crate::mailbox::Refusal;

/// How long a test waits for something that should happen at once.
const WAIT: Duration = Duration::from_secs(10);

/// A registry over a store in a temp dir.
struct Fixture {
    rooms: Rooms,
    metrics: Arc<Metrics>,
    store: Store,
    _dir: tempfile::TempDir,
    next_peer: u64,
}

/// The test's end of one fake connection.
struct FakePeer {
    /// Keeps it in the registry's live list (for `close_peers`).
    _live: super::LivePeer,
    /// The connection's end of its line (frames both ways, the close code).
    line: Arc<Line>,
    doc: Doc,
}

impl Fixture {
    fn new(limits: Limits) -> Fixture {
        Fixture::with_config(limits, |_| {})
    }

    /// A fixture whose store config `adjust` changes first.
    fn with_config(limits: Limits, adjust: impl FnOnce(&mut StoreConfig)) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut config = StoreConfig::new(dir.path());
        adjust(&mut config);
        let store = Store::open(config).unwrap();
        let metrics = Arc::new(Metrics::default());
        let rooms = Rooms::new(store.clone(), limits, metrics.clone());
        Fixture {
            rooms,
            metrics,
            store,
            _dir: dir,
            next_peer: 1,
        }
    }

    async fn join(&mut self, doc: &str, mode: Mode) -> FakePeer {
        let line = Arc::new(Line::new(Default::default(), 1024));
        let id = PeerId(self.next_peer);
        self.next_peer += 1;
        let link = PeerLink {
            id,
            kill: Kill::new(line.clone()),
            line: RoomEnd::new(line.clone()),
            principal: Principal {
                sub: format!("peer-{}", id.0),
                mode,
            },
        };
        let live = self
            .rooms
            .join(&DocId::new(doc).unwrap(), link, true)
            .unwrap();
        let mut peer = FakePeer {
            _live: live,
            line,
            doc: Doc::new(),
        };
        // SyncStep1 from the server, then sync to it.
        let sv = peer.doc.transact().state_vector();
        peer.send(vec![Inbound::SyncStep1(sv)]).await;
        peer.drain_until_synced().await;
        peer
    }

    fn stored_updates(&self, doc: &str) -> u64 {
        self.store
            .info(&DocId::new(doc).unwrap())
            .unwrap()
            .map_or(0, |i| i.update_count)
    }

    /// The text of `doc` as the store holds it (loaded from the store).
    fn stored_text(&self, doc: &str) -> String {
        let doc = self.store.load(&DocId::new(doc).unwrap()).unwrap();
        let text = doc.get_or_insert_text(TEXT_ROOT);
        text.get_string(&doc.transact())
    }

    async fn edit(&self, doc: &str, edit: Edit) -> Result<(), EditError> {
        self.rooms
            .edit(&DocId::new(doc).unwrap(), Principal::anonymous(), edit)
            .await
    }
}

impl Drop for FakePeer {
    /// Like a connection's task ending: the room sees the peer leave.
    fn drop(&mut self) {
        self.line.conn_ended();
    }
}

impl FakePeer {
    async fn send(&self, messages: Vec<Inbound>) {
        self.line.send_inbound(messages).await.unwrap();
    }

    async fn send_update(&self, update: Vec<u8>) {
        self.send(vec![Inbound::Update(Bytes::from(update))]).await;
    }

    /// Applies every update frame until the SyncStep2 reply arrived.
    async fn drain_until_synced(&mut self) {
        loop {
            let frame = self.next_frame().await.expect("sync reply");
            if self.apply_frame(&frame) == Some(1) {
                return;
            }
        }
    }

    async fn next_frame(&mut self) -> Option<Bytes> {
        tokio::time::timeout(WAIT, self.recv()).await.ok().flatten()
    }

    /// The next frame the room queued; `None` once the room let go.
    async fn recv(&self) -> Option<Bytes> {
        std::future::poll_fn(|cx| self.line.poll_frame(cx)).await
    }

    /// Applies a frame's document content; returns the sync sub-type.
    fn apply_frame(&self, frame: &Bytes) -> Option<u8> {
        let (tag, sub) = (frame[0], frame.get(1).copied());
        if tag != 0 || sub == Some(0) {
            return None;
        }
        for message in protocol::decode_frame(frame).unwrap() {
            if let Inbound::Update(raw) = message {
                let update = yrs::Update::decode_v1(&raw).unwrap();
                self.doc.transact_mut().apply_update(update).unwrap();
            }
        }
        sub
    }

    /// Waits for the next update frame and applies it.
    async fn receive_update(&mut self) -> Bytes {
        loop {
            let frame = self.next_frame().await.expect("an update frame");
            if self.apply_frame(&frame).is_some() {
                return frame;
            }
        }
    }

    /// Waits until this peer's text is `expected`.
    async fn wait_text(&mut self, expected: &str) {
        while self.text() != expected {
            self.receive_update().await;
        }
    }

    fn text(&self) -> String {
        let text = self.doc.get_or_insert_text(TEXT_ROOT);
        text.get_string(&self.doc.transact())
    }

    /// Types `s` at the end of this peer's text; returns the update.
    fn type_text(&self, s: &str) -> Vec<u8> {
        let text = self.doc.get_or_insert_text(TEXT_ROOT);
        let before = self.doc.transact().state_vector();
        let len = text.len(&self.doc.transact());
        text.insert(&mut self.doc.transact_mut(), len, s);
        self.doc.transact().encode_diff_v1(&before)
    }

    async fn wait_close(&mut self) -> CloseCode {
        let code = std::future::poll_fn(|cx| match self.line.kill_code() {
            Some(code) => std::task::Poll::Ready(code),
            None => {
                self.line.register_conn(cx);
                match self.line.kill_code() {
                    Some(code) => std::task::Poll::Ready(code),
                    None => std::task::Poll::Pending,
                }
            }
        });
        tokio::time::timeout(WAIT, code)
            .await
            .expect("closed in time")
    }

    /// True if nothing arrives for a moment (used only after a round trip
    /// proved the room has handled what came before).
    fn nothing_queued(&mut self) -> bool {
        self.line.try_next_frame().is_none()
    }

    /// A round trip through the room: everything sent before is handled.
    async fn round_trip(&mut self) {
        self.send(vec![Inbound::SyncStep1(StateVector::default())])
            .await;
        self.drain_until_synced().await;
    }
}

/// An update from a fresh client `client` inserting `s` at the start.
fn text_update(client: u64, s: &str) -> Vec<u8> {
    let doc = Doc::with_client_id(client);
    let text = doc.get_or_insert_text(TEXT_ROOT);
    text.insert(&mut doc.transact_mut(), 0, s);
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
}

/// A v1 update with no structs and `ranges` deleted ranges of client 999.
pub(super) fn unknown_deletes(ranges: u32) -> Vec<u8> {
    let mut out = Vec::new();
    out.write_var(0u32); // no structs
    out.write_var(1u32); // one client in the delete set
    out.write_var(999u64);
    out.write_var(ranges);
    for i in 0..ranges {
        out.write_var(i * 2);
        out.write_var(1u32);
    }
    out
}

/// An update of `len` bytes of text from client 77 that depends on a clock
/// the document never saw (so yrs keeps it pending).
fn pending_text(len: usize) -> Vec<u8> {
    let doc = Doc::with_client_id(77);
    let text = doc.get_or_insert_text(TEXT_ROOT);
    text.insert(&mut doc.transact_mut(), 0, "a");
    let sv = doc.transact().state_vector();
    text.insert(&mut doc.transact_mut(), 1, &"b".repeat(len));
    doc.transact().encode_diff_v1(&sv)
}

#[tokio::test]
async fn an_update_reaches_the_other_peer_and_the_store_in_order() {
    let mut fx = Fixture::new(Limits::default());
    let a = fx.join("order", Mode::Write).await;
    let mut b = fx.join("order", Mode::Write).await;
    a.send_update(a.type_text("one ")).await;
    a.send_update(a.type_text("two")).await;
    b.wait_text("one two").await;
    assert_eq!(fx.stored_text("order"), "one two");
}

#[tokio::test]
async fn the_room_applies_the_next_batch_while_one_waits_for_its_sync_and_sends_both_in_order() {
    let faults = tandem_store::SyncFaults::new();
    let seam = faults.clone();
    let mut fx = Fixture::with_config(Limits::default(), |c| c.sync_faults = Some(seam));
    let a = fx.join("pipeline", Mode::Write).await;
    let mut b = fx.join("pipeline", Mode::Write).await;
    faults.hold();
    // Let go of held syncs however the test ends (the store's drop waits
    // for its flusher, which a held sync would block forever).
    let _release = Release(faults.clone());
    a.send_update(a.type_text("one ")).await;
    // Another frame once the room has taken the first (its own batch).
    wait_for(|| fx.stored_updates("pipeline") == 1).await;
    a.send_update(a.type_text("two")).await;
    // The room took the second batch although the first is not durable...
    wait_for(|| fx.stored_updates("pipeline") == 2).await;
    // ...and nothing of either went out before the disk had it.
    assert!(b.nothing_queued(), "a frame went out before its sync");
    faults.release();
    b.wait_text("one two").await;
}

#[tokio::test]
async fn a_failed_sync_sends_none_of_the_batches_in_flight_and_fails_their_edits() {
    let faults = tandem_store::SyncFaults::new();
    let seam = faults.clone();
    let mut fx = Fixture::with_config(Limits::default(), |c| c.sync_faults = Some(seam));
    let a = fx.join("lost", Mode::Write).await;
    let mut b = fx.join("lost", Mode::Write).await;
    faults.hold();
    let _release = Release(faults.clone());
    a.send_update(a.type_text("one ")).await;
    wait_for(|| fx.stored_updates("lost") == 1).await;
    let edit = fx.edit(
        "lost",
        Edit::Update {
            bytes: Bytes::from(text_update(99, "http")),
            encoding: Encoding::V1,
        },
    );
    let (edited, ()) = tokio::join!(edit, async {
        wait_for(|| fx.stored_updates("lost") == 2).await;
        faults.fail();
        faults.release();
    });
    assert!(
        matches!(edited, Err(EditError::Failed(_))),
        "the HTTP edit in flight failed: {edited:?}"
    );
    assert_eq!(b.wait_close().await, CloseCode::Internal);
    assert!(
        b.nothing_queued(),
        "no frame of a batch that never became durable"
    );
    assert_eq!(b.text(), "");
}

#[tokio::test]
async fn a_live_room_compacts_from_its_document_and_the_store_keeps_every_change() {
    let mut fx = Fixture::with_config(Limits::default(), |c| {
        c.compact_after_updates = 5;
        c.compact_min_log_percent = 0;
    });
    let a = fx.join("compact", Mode::Write).await;
    let mut b = fx.join("compact", Mode::Write).await;
    let mut typed = String::new();
    for i in 0..60 {
        let word = format!("w{i} ");
        a.send_update(a.type_text(&word)).await;
        typed.push_str(&word);
        // One batch each: every few batches one finds a compaction due.
        b.wait_text(&typed).await;
    }
    let id = DocId::new("compact").unwrap();
    let info = || fx.store.info(&id).unwrap().expect("stored");
    // Compactions ran while the room was live (the log is shorter than
    // the 60 records appended) and nothing was lost: the store's own copy
    // equals what the peers have.
    wait_for(|| info().log_len < 60).await;
    assert_eq!(info().update_count, 60);
    let stored = fx.store.load(&id).unwrap();
    let text = stored.get_or_insert_text(TEXT_ROOT);
    assert_eq!(text.get_string(&stored.transact()), typed);
}

/// Releases held syncs when dropped.
struct Release(tandem_store::SyncFaults);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// Waits until `done` holds (or fails the test after [`WAIT`]).
async fn wait_for(done: impl Fn() -> bool) {
    tokio::time::timeout(WAIT, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("condition within the wait");
}

#[tokio::test]
async fn an_update_that_adds_nothing_is_neither_stored_nor_sent() {
    let mut fx = Fixture::new(Limits::default());
    let mut a = fx.join("echo", Mode::Write).await;
    let mut b = fx.join("echo", Mode::Write).await;
    let update = a.type_text("hello");
    a.send_update(update.clone()).await;
    b.wait_text("hello").await;
    // b echoes it back, as some client stacks do.
    b.send_update(update).await;
    b.round_trip().await;
    a.round_trip().await;
    assert_eq!(fx.stored_updates("echo"), 1);
    // a got only the round trip's reply, not the echo.
    assert!(a.nothing_queued());
}

#[tokio::test]
async fn a_read_only_peer_cannot_write_but_stays_connected() {
    let mut fx = Fixture::new(Limits::default());
    let mut w = fx.join("ro", Mode::Write).await;
    w.send_update(w.type_text("base")).await;
    w.round_trip().await;
    let mut r = fx.join("ro", Mode::Read).await;
    assert_eq!(r.text(), "base");
    // Its SyncStep2 of what it already has is normal: no answer at all.
    let same = r
        .doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    r.send_update(same).await;
    r.round_trip().await;
    assert!(r.nothing_queued());
    // A real change is refused with "permission denied", not applied.
    r.send_update(r.type_text(" and more")).await;
    let frame = r.next_frame().await.unwrap();
    assert_eq!(frame, protocol::encode_permission_denied("read-only"));
    r.round_trip().await;
    assert_eq!(fx.stored_updates("ro"), 1);
    assert!(r.line.kill_code().is_none(), "still connected");
}

#[tokio::test]
async fn a_panicking_room_closes_its_peers_and_frees_its_slot() {
    let mut fx = Fixture::new(Limits::default());
    let mut a = fx.join("boom", Mode::Write).await;
    a.send_update(a.type_text("kept")).await;
    a.round_trip().await;
    assert_eq!(fx.rooms.open_rooms(), 1);
    fx.rooms.panic_room(&DocId::new("boom").unwrap());
    // The room lets go without a code: the connection says 1011.
    while tokio::time::timeout(WAIT, a.recv())
        .await
        .unwrap()
        .is_some()
    {}
    let deadline = tokio::time::Instant::now() + WAIT;
    while fx.rooms.open_rooms() != 0 {
        assert!(tokio::time::Instant::now() < deadline, "slot not freed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let b = fx.join("boom", Mode::Write).await;
    assert_eq!(b.text(), "kept");
}

#[tokio::test]
async fn a_refused_update_keeps_what_came_before_and_the_room_goes_on() {
    let limits = Limits {
        max_nesting_depth: 10,
        ..Limits::default()
    };
    let mut fx = Fixture::new(limits);
    let mut a = fx.join("deep", Mode::Write).await;
    let mut bad = fx.join("deep", Mode::Write).await;
    let (deep, _) = crate::inspect::tests_support::nested_maps_then_delete(11);
    let good = bad.type_text("fine");
    bad.send(vec![
        Inbound::Update(Bytes::from(good)),
        Inbound::Update(Bytes::from(deep)),
    ])
    .await;
    assert_eq!(bad.wait_close().await, CloseCode::Malformed);
    a.wait_text("fine").await;
    let (ok, _) = crate::inspect::tests_support::nested_maps_then_delete(10);
    a.send_update(ok).await;
    a.round_trip().await;
    assert_eq!(fx.stored_updates("deep"), 2);
}

#[tokio::test]
async fn pending_content_past_its_cap_is_refused() {
    let mut fx = Fixture::new(Limits::default());
    let mut small = fx.join("pending", Mode::Write).await;
    small.send_update(pending_text(100)).await;
    small.round_trip().await;
    let mut big = fx.join("pending", Mode::Write).await;
    big.send_update(pending_text(Limits::default().max_pending_bytes + 1))
        .await;
    assert_eq!(big.wait_close().await, CloseCode::Malformed);
    // The first one is stored as received: pending content survives a reload.
    assert_eq!(fx.stored_updates("pending"), 1);
}

#[tokio::test]
async fn deletions_of_unknown_content_past_their_cap_are_refused() {
    let mut fx = Fixture::new(Limits::default());
    let mut a = fx.join("ds", Mode::Write).await;
    a.send_update(unknown_deletes(100)).await;
    a.round_trip().await;
    let max = Limits::default().max_pending_deletes as u32;
    a.send_update(unknown_deletes(max + 1)).await;
    assert_eq!(a.wait_close().await, CloseCode::Malformed);
}

#[tokio::test]
async fn an_update_past_the_document_quota_is_refused_with_4413() {
    let limits = Limits {
        max_doc_bytes: 10_000,
        ..Limits::default()
    };
    let mut fx = Fixture::new(limits);
    let mut a = fx.join("quota", Mode::Write).await;
    a.send_update(a.type_text(&"x".repeat(5_000))).await;
    a.round_trip().await;
    a.send_update(a.type_text(&"y".repeat(6_000))).await;
    assert_eq!(a.wait_close().await, CloseCode::DocTooLarge);
    assert_eq!(fx.stored_updates("quota"), 1);
    let err = fx
        .edit("quota", Edit::ReplaceText("z".repeat(20_000)))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        EditError::Refused(Refusal::DocTooLarge { .. })
    ));
}

#[tokio::test]
async fn content_beside_a_hole_in_its_clocks_counts_against_the_document_quota() {
    let limits = Limits {
        max_doc_bytes: 10_000,
        ..Limits::default()
    };
    let mut fx = Fixture::new(limits);
    let mut a = fx.join("hole", Mode::Write).await;
    // Each time: a keystroke never sent, then 3,000 characters that need
    // nothing of it but its clock. yrs keeps them without moving the state
    // vector, so their change encodes empty; they count by their bytes.
    let doc = Doc::with_client_id(77);
    let text = doc.get_or_insert_text(TEXT_ROOT);
    let side = doc.get_or_insert_text("side");
    for _ in 0..4 {
        text.insert(&mut doc.transact_mut(), 0, "w");
        let sv = doc.transact().state_vector();
        side.insert(&mut doc.transact_mut(), 0, &"z".repeat(3_000));
        a.send_update(doc.transact().encode_diff_v1(&sv)).await;
    }
    assert_eq!(a.wait_close().await, CloseCode::DocTooLarge);
    // The three within the quota are stored as received.
    assert_eq!(fx.stored_updates("hole"), 3);
}

#[tokio::test]
async fn put_text_changes_only_what_differs() {
    let mut fx = Fixture::new(Limits::default());
    let mut a = fx.join("diff", Mode::Write).await;
    let base = text_update(5, "hello world");
    let decoded = yrs::Update::decode_v1(&base).unwrap();
    a.doc.transact_mut().apply_update(decoded).unwrap();
    a.send_update(base).await;
    a.round_trip().await;
    fx.edit("diff", Edit::ReplaceText("hello brave world".into()))
        .await
        .unwrap();
    let frame = a.receive_update().await;
    assert_eq!(a.text(), "hello brave world");
    // The change carries the insertion, not a delete and re-insert of all.
    let Inbound::Update(raw) = protocol::decode_frame(&frame).unwrap().remove(0) else {
        panic!("not an update");
    };
    let update = yrs::Update::decode_v1(&raw).unwrap();
    assert!(update.delete_set().is_empty(), "{update:?}");
    // The same text again changes nothing and stores nothing.
    let before = fx.stored_updates("diff");
    fx.edit("diff", Edit::ReplaceText("hello brave world".into()))
        .await
        .unwrap();
    assert_eq!(fx.stored_updates("diff"), before);
}

#[tokio::test]
async fn put_text_on_a_root_of_another_type_is_refused_naming_it() {
    let mut fx = Fixture::new(Limits::default());
    let doc = Doc::with_client_id(3);
    let array = doc.get_or_insert_array(TEXT_ROOT);
    yrs::Array::push_back(&array, &mut doc.transact_mut(), 1);
    let update = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    let bytes = Bytes::from(update);
    fx.edit(
        "array",
        Edit::Update {
            bytes,
            encoding: Encoding::V1,
        },
    )
    .await
    .unwrap();
    let err = fx
        .edit("array", Edit::ReplaceText("x".into()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("array"), "{err}");
    // The room is still usable.
    let a = fx.join("array", Mode::Write).await;
    drop(a);
}

#[tokio::test]
async fn http_updates_accept_v2_and_refuse_left_over_bytes() {
    let fx = Fixture::new(Limits::default());
    let doc = Doc::with_client_id(4);
    let text = doc.get_or_insert_text(TEXT_ROOT);
    text.insert(&mut doc.transact_mut(), 0, "v2!");
    let v2 = doc
        .transact()
        .encode_state_as_update_v2(&StateVector::default());
    let as_v1 = fx
        .edit(
            "v2",
            Edit::Update {
                bytes: Bytes::from(v2.clone()),
                encoding: Encoding::V1,
            },
        )
        .await
        .unwrap_err();
    assert!(as_v1.to_string().contains("invalid update"), "{as_v1}");
    fx.edit(
        "v2",
        Edit::Update {
            bytes: Bytes::from(v2),
            encoding: Encoding::V2,
        },
    )
    .await
    .unwrap();
    let mut v1 = text_update(6, "x");
    v1.extend_from_slice(&[1, 2, 3]);
    let err = fx
        .edit(
            "v2",
            Edit::Update {
                bytes: Bytes::from(v1),
                encoding: Encoding::V1,
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("left over"), "{err}");
    assert_eq!(fx.stored_updates("v2"), 1);
}

#[tokio::test]
async fn joiners_with_an_empty_state_share_one_encoded_state() {
    let mut fx = Fixture::new(Limits::default());
    let a = fx.join("share", Mode::Write).await;
    a.send_update(a.type_text("shared")).await;
    let mut frames = Vec::new();
    for _ in 0..3 {
        let mut p = fx.join("share", Mode::Read).await;
        p.send(vec![Inbound::SyncStep1(StateVector::default())])
            .await;
        loop {
            let f = p.next_frame().await.unwrap();
            if f[0] == 0 && f[1] == 1 {
                frames.push(f);
                break;
            }
        }
    }
    // The same allocation, not three encodes.
    assert!(frames.windows(2).all(|w| w[0].as_ptr() == w[1].as_ptr()));
}

#[tokio::test]
async fn a_history_that_deletes_its_own_content_is_not_a_delete_flood() {
    let limits = Limits {
        max_pending_deletes: 100,
        ..Limits::default()
    };
    let mut fx = Fixture::new(limits);
    let mut a = fx.join("history", Mode::Write).await;
    let ranges = 300;
    let doc = Doc::with_client_id(8);
    let text = doc.get_or_insert_text(TEXT_ROOT);
    text.insert(&mut doc.transact_mut(), 0, &"ab".repeat(ranges as usize));
    {
        let mut txn = doc.transact_mut();
        for i in (0..ranges).rev() {
            text.remove_range(&mut txn, i * 2, 1);
        }
    }
    let state = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    let update = yrs::Update::decode_v1(&state).unwrap();
    assert!(
        update
            .delete_set()
            .iter()
            .map(|(_, r)| r.len())
            .sum::<usize>()
            >= ranges as usize
    );
    a.send_update(state).await;
    a.round_trip().await;
    assert_eq!(a.text(), "b".repeat(ranges as usize));
}

/// An awareness update setting client `client`'s state at `clock`.
fn awareness(client: u64, clock: u32, json: &str) -> Inbound {
    let mut clients = std::collections::HashMap::new();
    clients.insert(
        yrs::block::ClientID::new(client),
        yrs::sync::awareness::AwarenessUpdateEntry {
            clock,
            json: json.into(),
        },
    );
    Inbound::Awareness(yrs::sync::AwarenessUpdate { clients })
}

#[tokio::test]
async fn fast_awareness_is_coalesced_to_the_latest_state() {
    let mut fx = Fixture::new(Limits::default());
    let a = fx.join("cursor", Mode::Write).await;
    let mut b = fx.join("cursor", Mode::Write).await;
    for clock in 1..=50u32 {
        a.send(vec![awareness(42, clock, &format!("{{\"n\":{clock}}}"))])
            .await;
    }
    // b hears far fewer than 50 frames, and the last one is the latest state.
    let mut frames = 0;
    loop {
        let frame = b.next_frame().await.expect("awareness frames");
        if frame[0] != 1 {
            continue;
        }
        frames += 1;
        let Inbound::Awareness(update) = protocol::decode_frame(&frame).unwrap().remove(0) else {
            panic!("not awareness");
        };
        let entry = &update.clients[&yrs::block::ClientID::new(42)];
        if entry.clock == 50 {
            assert_eq!(&*entry.json, "{\"n\":50}");
            break;
        }
    }
    assert!(frames < 50, "{frames} frames: not coalesced");
}

/// The client id and clock of the awareness frame `frame`, if it is one.
fn awareness_clock(frame: &Bytes) -> Option<(u64, u32)> {
    let Inbound::Awareness(update) = protocol::decode_frame(frame).ok()?.remove(0) else {
        return None;
    };
    let (id, entry) = update.clients.iter().next()?;
    Some((id.get(), entry.clock))
}

#[tokio::test]
async fn an_awareness_change_rides_with_the_next_edit_in_order() {
    // A delay far past the test's wait: alone, the change would come too late.
    let limits = Limits {
        awareness_delay_ms: 60_000,
        ..Limits::default()
    };
    let mut fx = Fixture::new(limits);
    let a = fx.join("ride", Mode::Write).await;
    let mut b = fx.join("ride", Mode::Write).await;
    a.send(vec![awareness(45, 1, "{\"at\":1}")]).await;
    // The room has taken the change (so the edit comes in a later batch).
    let taken = async {
        while fx.metrics.awareness_updates.load(Ordering::Relaxed) == 0 {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(WAIT, taken)
        .await
        .expect("awareness taken");
    assert!(b.nothing_queued(), "the change did not wait");
    a.send_update(a.type_text("x")).await;
    let first = b.next_frame().await.expect("the cursor, with the edit");
    assert_eq!(awareness_clock(&first), Some((45, 1)), "the cursor first");
    let second = b.next_frame().await.expect("the edit");
    assert_eq!(b.apply_frame(&second), Some(2), "then the edit");
    assert_eq!(b.text(), "x");
}

#[tokio::test]
async fn awareness_waiting_to_ride_goes_out_at_once_past_its_bound() {
    let limits = Limits {
        awareness_delay_ms: 60_000,
        awareness_per_sec: 1000,
        ..Limits::default()
    };
    let mut fx = Fixture::new(limits);
    let a = fx.join("many-cursors", Mode::Write).await;
    let mut b = fx.join("many-cursors", Mode::Write).await;
    let past = super::MAX_RIDING as u32 + 1;
    for clock in 1..=past {
        a.send(vec![awareness(47, clock, &format!("{{\"n\":{clock}}}"))])
            .await;
        // Slower than the rate limit: each change is a frame of its own.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Long before the delay, the bound sends what waits.
    let mut seen = 0;
    while seen < past {
        let frame = b
            .next_frame()
            .await
            .expect("the waiting frames, at the bound");
        if let Some((47, clock)) = awareness_clock(&frame) {
            seen = seen.max(clock);
        }
    }
}

#[tokio::test]
async fn an_awareness_change_with_nothing_to_ride_with_goes_out_at_the_delay() {
    let delay = Duration::from_millis(300);
    let limits = Limits {
        awareness_delay_ms: delay.as_millis() as u64,
        ..Limits::default()
    };
    let mut fx = Fixture::new(limits);
    let a = fx.join("alone", Mode::Write).await;
    let mut b = fx.join("alone", Mode::Write).await;
    let sent = std::time::Instant::now();
    a.send(vec![awareness(46, 1, "{\"at\":1}")]).await;
    let frame = b.next_frame().await.expect("the cursor, alone");
    assert_eq!(awareness_clock(&frame), Some((46, 1)));
    assert!(
        sent.elapsed() >= delay,
        "out after {:?}, before the delay",
        sent.elapsed()
    );
}

#[tokio::test]
async fn an_oversized_awareness_state_closes_the_sender_with_1009() {
    let mut fx = Fixture::new(Limits::default());
    let mut a = fx.join("big-cursor", Mode::Write).await;
    let json = format!("\"{}\"", "x".repeat(Limits::default().max_awareness_bytes));
    a.send(vec![awareness(43, 1, &json)]).await;
    assert_eq!(a.wait_close().await, CloseCode::TooLarge);
}

#[tokio::test]
async fn the_item_quota_counts_what_yrs_keeps_apart() {
    let limits = Limits {
        max_doc_items: 50,
        ..Limits::default()
    };
    let mut fx = Fixture::new(limits);
    let mut a = fx.join("items", Mode::Write).await;
    // Typing at the end: yrs merges the keystrokes into few items.
    for _ in 0..100 {
        a.send_update(a.type_text("x")).await;
    }
    a.round_trip().await;
    assert_eq!(a.text().len(), 100);
    // Each insert at the start stays its own item: the 50th one is refused.
    for _ in 0..60 {
        let before = a.doc.transact().state_vector();
        let text = a.doc.get_or_insert_text(TEXT_ROOT);
        text.insert(&mut a.doc.transact_mut(), 0, "y");
        let update = a.doc.transact().encode_diff_v1(&before);
        if a.line
            .send_inbound(vec![Inbound::Update(Bytes::from(update))])
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(a.wait_close().await, CloseCode::DocTooLarge);
}

#[tokio::test]
async fn a_goodbye_held_by_the_awareness_rate_still_goes_out_when_the_peer_leaves() {
    let mut fx = Fixture::new(Limits::default());
    let a = fx.join("bye", Mode::Write).await;
    let mut b = fx.join("bye", Mode::Write).await;
    // A state then, at once, its removal (as y-websocket does on close).
    a.send(vec![awareness(44, 1, "{\"u\":1}")]).await;
    a.send(vec![awareness(44, 2, "null")]).await;
    drop(a);
    loop {
        let frame = b.next_frame().await.expect("the goodbye");
        if frame[0] != 1 {
            continue;
        }
        let Inbound::Awareness(update) = protocol::decode_frame(&frame).unwrap().remove(0) else {
            panic!("not awareness");
        };
        if update.clients[&yrs::block::ClientID::new(44)].clock == 2 {
            break;
        }
    }
}

#[tokio::test]
async fn the_size_quota_measures_exactly_before_refusing() {
    let limits = Limits {
        max_doc_bytes: 10_000,
        ..Limits::default()
    };
    let mut fx = Fixture::new(limits);
    let mut a = fx.join("shrink", Mode::Write).await;
    a.send_update(a.type_text(&"x".repeat(6_000))).await;
    // Deleting it all leaves a small document (yrs drops deleted text).
    let before = a.doc.transact().state_vector();
    let text = a.doc.get_or_insert_text(TEXT_ROOT);
    text.remove_range(&mut a.doc.transact_mut(), 0, 6_000);
    a.send_update(a.doc.transact().encode_diff_v1(&before))
        .await;
    // The running count says 12,000+ bytes; the document holds ~6,000.
    a.send_update(a.type_text(&"y".repeat(6_000))).await;
    a.round_trip().await;
    assert!(a.line.kill_code().is_none(), "refused although it fits");
    assert_eq!(fx.stored_text("shrink"), "y".repeat(6_000));
}

#[tokio::test]
async fn put_text_on_a_large_text_replaces_only_the_changed_line() {
    let mut fx = Fixture::new(Limits::default());
    let old: String = (0..200_000).map(|i| format!("line {i}\n")).collect();
    assert!(old.len() > 2 * 1024 * 1024);
    fx.edit("big-diff", Edit::ReplaceText(old.clone()))
        .await
        .unwrap();
    let mut a = fx.join("big-diff", Mode::Write).await;
    assert_eq!(a.text().len(), old.len());
    let new = old.replacen("line 1000\n", "line one thousand\n", 1);
    fx.edit("big-diff", Edit::ReplaceText(new.clone()))
        .await
        .unwrap();
    let frame = a.receive_update().await;
    assert_eq!(a.text(), new);
    assert!(
        frame.len() < 200,
        "{} bytes for one changed line",
        frame.len()
    );
}

#[tokio::test]
async fn close_peers_closes_exactly_the_matching_connections() {
    let mut fx = Fixture::new(Limits::default());
    let mut first = fx.join("revoke", Mode::Write).await; // principal "peer-1"
    let mut second = fx.join("revoke", Mode::Write).await;
    let mut elsewhere = fx.join("other", Mode::Write).await;
    let closed = fx.rooms.close_peers(
        |doc, p| doc.as_str() == "revoke" && p.sub == "peer-1",
        CloseCode::Forbidden,
    );
    assert_eq!(closed, 1);
    assert_eq!(first.wait_close().await, CloseCode::Forbidden);
    second.round_trip().await;
    elsewhere.round_trip().await;
    assert!(second.line.kill_code().is_none() && elsewhere.line.kill_code().is_none());
    // A connection that ended is no longer listed.
    drop(first);
    assert_eq!(
        fx.rooms
            .close_peers(|_, p| p.sub == "peer-1", CloseCode::Forbidden),
        0
    );
}

#[tokio::test]
async fn an_update_from_a_client_id_past_53_bits_fails_neither_the_room_nor_its_sender() {
    let mut fx = Fixture::new(Limits::default());
    let mut a = fx.join("big-id", Mode::Write).await;
    let mut b = fx.join("big-id", Mode::Write).await;
    // Client 5's update, its client id rewritten to 2^60 + 5 (Yjs ids have
    // 53 bits; yrs debug_asserts that in its decoder, see Cargo.toml).
    let mut update = text_update(5, "x");
    assert_eq!(&update[..3], &[1, 1, 5]);
    let mut id = Vec::new();
    id.write_var((1u64 << 60) + 5);
    update.splice(2..3, id);
    a.send_update(update).await;
    a.round_trip().await;
    assert!(a.line.kill_code().is_none(), "the sender was closed");
    b.send_update(b.type_text("still here")).await;
    b.round_trip().await;
    a.round_trip().await;
    assert!(a.text().contains("still here"), "{}", a.text());
    assert!(b.line.kill_code().is_none(), "the room failed");
}
