//! Who sent which update when, and who has received it: edit-to-delivery
//! latency without embedding anything in the document.
//!
//! A sender files each update under its [`UpdateKey`] with its send time
//! *before* writing it to the socket. A receiver decodes each incoming
//! update into id ranges ([`UpdateIds`]) and looks up every send whose key
//! falls inside one of them, so re-encoded or merged updates still match.
//! [`Receipts`] keeps one receiver's tally, counting each send once.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::protocol::{UpdateIds, UpdateKey};

/// One sent update.
#[derive(Debug, Clone, Copy)]
struct SendRecord {
    /// The key it was filed under.
    key: UpdateKey,
    /// When the sender handed it to the socket.
    at: Instant,
    /// Index of the sending client within its room.
    sender: u32,
}

#[derive(Default)]
struct LedgerInner {
    by_key: BTreeMap<UpdateKey, u32>,
    sends: Vec<SendRecord>,
}

/// The sends of one room. Locked only for the insert or lookup, never
/// across an `.await`.
#[derive(Default)]
pub struct Ledger {
    inner: Mutex<LedgerInner>,
    /// Deliveries counted by every receiver of this room (progress for the drain).
    delivered: AtomicU64,
}

/// One match of an incoming update against a send.
#[derive(Debug, Clone, Copy)]
pub struct Delivery {
    /// Index of the send in the room's ledger.
    pub index: u32,
    /// When it was sent.
    pub sent_at: Instant,
    /// Which client sent it.
    pub sender: u32,
}

impl Ledger {
    /// Files a send; call just before writing the update to the socket.
    pub fn record(&self, key: UpdateKey, sender: u32, at: Instant) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let index = inner.sends.len() as u32;
        inner.sends.push(SendRecord { key, at, sender });
        inner.by_key.insert(key, index);
    }

    /// Number of sends filed so far.
    pub fn sends(&self) -> u64 {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sends
            .len() as u64
    }

    /// Send number `index` (in filing order): its key and send time.
    pub fn send(&self, index: u32) -> Option<(UpdateKey, Instant)> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.sends.get(index as usize).map(|r| (r.key, r.at))
    }

    /// Deliveries counted so far by all receivers of this room.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Every send covered by `ids`.
    pub fn lookup(&self, ids: &UpdateIds, out: &mut Vec<Delivery>) {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for (kind, client, clocks) in &ids.ranges {
            let lo = UpdateKey {
                kind: *kind,
                client: *client,
                clock: clocks.start,
            };
            let hi = UpdateKey {
                kind: *kind,
                client: *client,
                clock: clocks.end,
            };
            for (_, &index) in inner.by_key.range(lo..hi) {
                let rec = inner.sends[index as usize];
                out.push(Delivery {
                    index,
                    sent_at: rec.at,
                    sender: rec.sender,
                });
            }
        }
    }
}

/// One receiver's tally.
#[derive(Debug, Default)]
pub struct Receipts {
    seen: Vec<bool>,
    /// Latency of every first delivery from another client, in microseconds.
    pub latencies_us: Vec<u32>,
    /// First deliveries of other clients' updates.
    pub deliveries: u64,
    /// Our own updates coming back (servers may echo; not counted as deliveries).
    pub echoes: u64,
    /// Incoming updates that matched no send (e.g. from clients outside the bench).
    pub unmatched: u64,
    scratch: Vec<Delivery>,
}

impl Receipts {
    /// Matches one incoming update received at `now` by client `me`.
    pub fn receive(&mut self, ledger: &Ledger, me: u32, update: &[u8], now: Instant) {
        let Ok(ids) = UpdateIds::of(update) else {
            self.unmatched += 1;
            return;
        };
        self.scratch.clear();
        ledger.lookup(&ids, &mut self.scratch);
        if self.scratch.is_empty() {
            self.unmatched += 1;
        }
        let mut new = 0;
        for d in self.scratch.drain(..) {
            let i = d.index as usize;
            if i >= self.seen.len() {
                self.seen.resize(i + 1024, false);
            }
            if self.seen[i] {
                continue;
            }
            self.seen[i] = true;
            if d.sender == me {
                self.echoes += 1;
                continue;
            }
            new += 1;
            let us = now.saturating_duration_since(d.sent_at).as_micros();
            self.latencies_us.push(us.min(u32::MAX as u128) as u32);
        }
        self.deliveries += new;
        ledger.delivered.fetch_add(new, Ordering::Relaxed);
    }
}
