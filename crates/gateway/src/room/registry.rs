//! The room registry: finds the room of a document or opens it
//! (single-flight), enforces the open-room limit and the per-`sub` quotas
//! (connections and documents per token subject, `--max-connections-per-sub`
//! and `--max-rooms-per-sub`: a join past either is refused with 4429), and
//! stops every room at shutdown.
//!
//! A join is sent to the room's control queue (`control`) while the registry
//! lock is held, and a room unregisters itself (to unload) only under that
//! lock and only if its control queue is empty. So a join either reaches a live room
//! or finds no room and opens a fresh one: it is never lost in between.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tandem_store::{DocId, Store, StoreHealth};
use tokio::sync::{mpsc, oneshot};

use super::control::{self, ControlReceiver, ControlSender};
use futures_util::FutureExt;
use tracing::{Instrument, info};

use crate::access::Principal;
use crate::close::CloseCode;
use crate::config::Limits;
use crate::link::{PeerId, PeerLink};
use crate::mailbox::{Control, Edit, EditError, EditRequest};

use super::live::{Live, LiveTable};
use crate::metrics::Metrics;

/// Handle to the registry of open rooms. Cheap to clone.
#[derive(Clone)]
pub struct Rooms {
    shared: Arc<Shared>,
}

/// State shared by the registry and every room task.
pub(crate) struct Shared {
    /// Where documents live.
    pub store: Store,
    /// Limits and timings.
    pub limits: Limits,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Outbound bytes queued for all peers together (each peer's
    /// `PeerHealth` adds and removes its share).
    queued_bytes: Arc<AtomicUsize>,
    /// The open rooms; joins are sent and rooms unregister under this lock,
    /// so a join is never lost to a room that is unloading.
    registry: Mutex<Registry>,
    /// Every joined connection, for [`Rooms::close_peers`], and what each
    /// `sub` holds (the per-`sub` quotas).
    live: Mutex<LiveTable>,
    /// Resolves (returns `None`) once every room task has ended.
    all_stopped: tokio::sync::Mutex<mpsc::Receiver<()>>,
    /// Time origin of [`RoomUsage::idle_at`].
    epoch: Instant,
    /// Starts the ping sweep (`ping_sweep`) with the first join.
    ping_sweep: std::sync::Once,
}

/// Whether a room is in use, shared by the registry and the room task; what
/// least-recently-used eviction reads.
#[derive(Debug, Default)]
pub(crate) struct RoomUsage {
    /// Control messages sent to the room and not yet handled, plus its
    /// peers. Raised by the registry under its lock when it sends; lowered
    /// by the room once a message is handled (a join: once the peer has
    /// left). 0: nothing in flight and no peer, so unloading loses nothing.
    busy: AtomicUsize,
    /// When `busy` last fell to 0, in ms since `Shared::epoch`.
    idle_at: AtomicU64,
}

impl RoomUsage {
    /// One message sent to the room (or one peer joined through it).
    fn hold(&self) {
        self.busy.fetch_add(1, Ordering::AcqRel);
    }

    /// The room handled one message (or one peer left).
    pub(crate) fn release(&self, shared: &Shared) {
        if self.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            let now = shared.epoch.elapsed().as_millis() as u64;
            self.idle_at.store(now, Ordering::Release);
        }
    }
}

/// The open rooms and what opening another needs.
struct Registry {
    /// One entry per open document (at most `Limits::max_open_rooms`).
    rooms: HashMap<DocId, RoomEntry>,
    /// Key for the next room instance, so a room unregisters only itself,
    /// never a successor opened for the same document.
    next_key: u64,
    /// Set by shutdown: no room opens after it.
    shutting_down: bool,
    /// Each room task holds a clone; dropped here at shutdown, so
    /// `all_stopped` resolves once the last room task has ended.
    running: Option<mpsc::Sender<()>>,
}

/// How to reach one open room.
struct RoomEntry {
    /// The room instance's key (see `Registry::next_key`).
    key: u64,
    /// The room's control queue (joins, HTTP edits, shutdown). Unbounded so
    /// sending under the registry lock never waits; it carries only joins and
    /// HTTP edits (peer traffic has its own bounded queues, in each `Line`).
    control: ControlSender,
    /// In use, or idle since when.
    usage: Arc<RoomUsage>,
}

impl Rooms {
    /// A registry with no open room.
    pub fn new(store: Store, limits: Limits, metrics: Arc<Metrics>) -> Self {
        let (running, all_stopped) = mpsc::channel(1);
        Rooms {
            shared: Arc::new(Shared {
                store,
                limits,
                metrics,
                queued_bytes: Arc::new(AtomicUsize::new(0)),
                registry: Mutex::new(Registry {
                    rooms: HashMap::new(),
                    next_key: 0,
                    shutting_down: false,
                    running: Some(running),
                }),
                live: Mutex::new(LiveTable::default()),
                all_stopped: tokio::sync::Mutex::new(all_stopped),
                epoch: Instant::now(),
                ping_sweep: std::sync::Once::new(),
            }),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.shared.limits
    }

    /// Bytes queued for every peer of the server (`--max-queued-bytes`).
    pub(crate) fn queued_bytes(&self) -> Arc<AtomicUsize> {
        self.shared.queued_bytes.clone()
    }

    /// Number of open rooms.
    pub fn open_rooms(&self) -> usize {
        self.shared.lock().rooms.len()
    }

    /// Hands `link` to the document's room, opening (and loading) it first if
    /// needed. Fails with 1001 during shutdown, 4013 at `max_open_rooms`,
    /// and, when `counted` (an authenticated connection: its `sub` comes
    /// from a token), 4429 past the per-`sub` quotas.
    /// The returned guard keeps the connection findable by
    /// [`Rooms::close_peers`] (and counted) until it is dropped (when the
    /// connection ends).
    pub(crate) fn join(
        &self,
        doc: &DocId,
        link: PeerLink,
        counted: bool,
    ) -> Result<LivePeer, CloseCode> {
        // A joiner's first edit could not be acknowledged while the store's
        // syncs fail: refuse it with 1013 (try later) instead of letting it
        // join and loop on 1011. One mutex read, no I/O.
        if let StoreHealth::Failing { .. } = self.shared.store.health() {
            return Err(CloseCode::TryAgainLater);
        }
        let entry = Live {
            doc: doc.clone(),
            principal: link.principal.clone(),
            kill: link.kill.clone(),
            counted,
        };
        let id = link.id;
        self.shared.ping_sweep.call_once(|| {
            let every = self.shared.limits.ping_interval();
            tokio::spawn(ping_sweep(Arc::downgrade(&self.shared), every));
        });
        // Counted before the join is sent, so concurrent joins of one `sub`
        // cannot all pass the quota; released if the join fails.
        self.shared
            .live_peers()
            .insert(id, entry, &self.shared.limits)?;
        let live = LivePeer {
            shared: self.shared.clone(),
            id,
        };
        self.send(doc, Control::Join(Box::new(link)))?;
        Ok(live)
    }

    /// Closes every live connection for which `close(doc, principal)` holds
    /// with `code` (e.g. 4403 for a revoked token); returns how many.
    pub fn close_peers(
        &self,
        close: impl Fn(&DocId, &Principal) -> bool,
        code: CloseCode,
    ) -> usize {
        let live = self.shared.live_peers();
        live.peers
            .values()
            .filter(|p| close(&p.doc, &p.principal))
            .filter(|p| p.kill.try_send(code).is_ok())
            .count()
    }

    /// Applies an edit through the document's room (opening it if needed), so
    /// connected peers receive it; returns once it is durable.
    pub async fn edit(
        &self,
        doc: &DocId,
        principal: Principal,
        edit: Edit,
    ) -> Result<(), EditError> {
        let (reply, outcome) = oneshot::channel();
        self.send(
            doc,
            Control::Edit(Box::new(EditRequest {
                edit,
                principal,
                reply,
            })),
        )
        .map_err(EditError::Unavailable)?;
        outcome
            .await
            .unwrap_or(Err(EditError::Unavailable(CloseCode::Internal)))
    }

    /// Delivers `message` to the document's room, opening it if needed.
    fn send(&self, doc: &DocId, message: Control) -> Result<(), CloseCode> {
        let mut reg = self.shared.lock();
        if reg.shutting_down {
            return Err(CloseCode::GoingAway);
        }
        let mut message = message;
        if let Some(entry) = reg.rooms.get(doc) {
            entry.usage.hold();
            match entry.control.send(message) {
                Ok(()) => return Ok(()),
                Err(back) => {
                    // The room task ended without unregistering (it failed): replace it.
                    reg.rooms.remove(doc);
                    message = back;
                }
            }
        }
        if reg.rooms.len() >= self.shared.limits.max_open_rooms && !self.evict_lru(&mut reg) {
            return Err(CloseCode::Capacity);
        }
        let Some(running) = reg.running.clone() else {
            return Err(CloseCode::GoingAway);
        };
        let (control, control_rx) = control::queue();
        let usage = Arc::new(RoomUsage::default());
        usage.hold();
        if control.send(message).is_err() {
            return Err(CloseCode::Internal);
        }
        let key = reg.next_key;
        reg.next_key += 1;
        let room_usage = usage.clone();
        reg.rooms.insert(
            doc.clone(),
            RoomEntry {
                key,
                control,
                usage,
            },
        );
        self.shared
            .metrics
            .rooms_open
            .fetch_add(1, Ordering::Relaxed);
        let shared = self.shared.clone();
        let doc = doc.clone();
        let span = tracing::info_span!("room", doc = %doc.as_str());
        let registered = Registered {
            shared: shared.clone(),
            doc: doc.clone(),
            key,
        };
        // `map`, not an `async` block: one awaiting the room would hold
        // the room's future and its arguments both.
        tokio::spawn(
            super::run(doc, key, control_rx, room_usage, shared, running)
                .map(move |()| drop(registered))
                .instrument(span),
        );
        Ok(())
    }

    /// Unloads the least recently used room that is not in use (no peer,
    /// nothing in flight: see [`RoomUsage`]) to make space for another;
    /// false when every open room is in use. Called under the registry lock
    /// (`reg`), so no message can reach the room once it is unregistered;
    /// it compacts and ends on its own. A scan of the open rooms, only at
    /// the cap.
    fn evict_lru(&self, reg: &mut Registry) -> bool {
        let lru = reg
            .rooms
            .iter()
            .filter(|(_, e)| e.usage.busy.load(Ordering::Acquire) == 0)
            .min_by_key(|(_, e)| e.usage.idle_at.load(Ordering::Acquire))
            .map(|(doc, _)| doc.clone());
        let Some(doc) = lru else {
            return false;
        };
        if let Some(entry) = reg.rooms.remove(&doc) {
            info!(doc = %doc.as_str(), "at --max-open-rooms: unloading the least recently used idle room");
            let _ = entry.control.send(Control::Evict);
        }
        true
    }

    /// Tests only: makes the document's room task panic.
    #[cfg(test)]
    pub(crate) fn panic_room(&self, doc: &DocId) {
        let _ = self.send(doc, Control::Panic);
    }

    /// Stops every room: peers get 1001, rooms compact; returns when all ended.
    pub async fn shutdown(&self) {
        let controls: Vec<_> = {
            let mut reg = self.shared.lock();
            reg.shutting_down = true;
            reg.running = None;
            reg.rooms.drain().map(|(_, e)| e.control).collect()
        };
        for control in controls {
            let _ = control.send(Control::Shutdown);
        }
        let mut all_stopped = self.shared.all_stopped.lock().await;
        while all_stopped.recv().await.is_some() {}
    }
}

/// The server's one ping timer: every `every` (`--ping-interval`) it asks
/// each joined connection to ping its peer ([`crate::link::Line::ask_ping`];
/// the connection drops a peer silent for two intervals), until the
/// registry is gone. One timer instead of one per connection (a tokio
/// `Interval` and its boxed `Sleep`, ~150 bytes each), and no more
/// wakeups: each connection is woken once per interval, as its own timer
/// did. The live list is copied out (a pointer per connection) so the lock
/// is not held while the connections are woken.
async fn ping_sweep(shared: std::sync::Weak<Shared>, every: std::time::Duration) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let lines: Vec<Arc<crate::link::Line>> = shared
            .live_peers()
            .peers
            .values()
            .map(|p| p.kill.line().clone())
            .collect();
        drop(shared);
        for line in lines {
            line.ask_ping();
        }
    }
}

/// Keeps a connection in the registry's live list; dropped when the
/// connection's task ends.
pub(crate) struct LivePeer {
    /// The registry.
    shared: Arc<Shared>,
    /// The connection.
    id: PeerId,
}

impl Drop for LivePeer {
    fn drop(&mut self) {
        self.shared.live_peers().remove(self.id);
    }
}

/// Drop guard of a running room: however its task ends (return, failure,
/// panic), the room is unregistered and its slot freed, so the next join
/// opens a fresh room that reloads the document.
struct Registered {
    /// The registry.
    shared: Arc<Shared>,
    /// The room's document.
    doc: DocId,
    /// The room instance (a successor for the same document is left alone).
    key: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut reg = self.shared.lock();
        if reg.rooms.get(&self.doc).is_some_and(|e| e.key == self.key) {
            reg.rooms.remove(&self.doc);
        }
        drop(reg);
        self.shared
            .metrics
            .rooms_open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl Shared {
    /// The live connections (a panic cannot leave the map inconsistent:
    /// every critical section is one insert, remove or scan).
    fn live_peers(&self) -> MutexGuard<'_, LiveTable> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (every critical section is a single insert/remove), so recover.
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Unregisters room `key` of `doc` if no join is waiting for it. True
    /// when unregistered: the room may then unload.
    pub(crate) fn unregister_if_idle(
        &self,
        doc: &DocId,
        key: u64,
        control: &ControlReceiver,
    ) -> bool {
        let mut reg = self.lock();
        if !control.is_empty() {
            return false;
        }
        if reg.rooms.get(doc).is_some_and(|e| e.key == key) {
            reg.rooms.remove(doc);
        }
        true
    }

    /// Unregisters a room that cannot go on and closes the joins still queued.
    pub(crate) fn close_room(
        &self,
        doc: &DocId,
        key: u64,
        control: &mut ControlReceiver,
        code: CloseCode,
    ) {
        {
            let mut reg = self.lock();
            if reg.rooms.get(doc).is_some_and(|e| e.key == key) {
                reg.rooms.remove(doc);
            }
        }
        control.close();
        while let Some(ctl) = control.try_recv() {
            match ctl {
                Control::Join(link) => {
                    let _ = link.kill.try_send(code);
                }
                Control::Edit(req) => {
                    let _ = req.reply.send(Err(EditError::Unavailable(code)));
                }
                Control::Shutdown | Control::Evict => {}
                #[cfg(test)]
                Control::Panic => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tandem_store::{DocId, Store, StoreConfig};

    use super::*;
    use crate::access::{Mode, Principal};
    use crate::link::{Kill, Line, PeerId, PeerLink, RoomEnd};
    use crate::mailbox::Edit;

    #[tokio::test]
    async fn close_room_fails_the_queued_joins_and_edits_with_its_code() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let rooms = Rooms::new(store, Limits::default(), Arc::new(Metrics::default()));
        let (tx, mut rx) = control::queue();
        let line = Arc::new(Line::new(Default::default(), 16));
        let link = PeerLink {
            id: PeerId(1),
            kill: Kill::new(line.clone()),
            line: RoomEnd::new(line.clone()),
            principal: Principal {
                sub: "a".into(),
                mode: Mode::Write,
            },
        };
        let (reply, outcome) = oneshot::channel();
        let edit = EditRequest {
            edit: Edit::ReplaceText("x".into()),
            principal: Principal::anonymous(),
            reply,
        };
        assert!(tx.send(Control::Join(Box::new(link))).is_ok());
        assert!(tx.send(Control::Edit(Box::new(edit))).is_ok());
        let doc = DocId::new("d").unwrap();
        rooms
            .shared
            .close_room(&doc, 0, &mut rx, CloseCode::Internal);
        assert_eq!(line.kill_code(), Some(CloseCode::Internal));
        assert!(matches!(
            outcome.await,
            Ok(Err(EditError::Unavailable(CloseCode::Internal)))
        ));
        // A closed room takes nothing more: the registry opens a fresh one.
        assert!(tx.send(Control::Evict).is_err());
    }
}
