//! Awareness (cursors, selections, who is here) of one room, with ownership.
//!
//! yrs' `Awareness` owns a `Doc`, knows nothing of connections and never
//! expires states, so the room keeps its own table: per client id the
//! y-protocols clock and JSON state, when it was last renewed, and which
//! connection controls it. The merge rules are awareness.js's: an entry wins
//! if its clock is newer, or equal with a `null` state (a removal).
//!
//! Ownership: the first connection that sets a state for a client id owns it
//! until it disconnects. Another connection may echo that id back (stock
//! y-websocket clients re-broadcast what they receive, with the same or an
//! older clock, and send same-clock removals when their own timer expires a
//! peer): such echoes are ignored. Advancing the clock of an id owned by
//! another live connection is a protocol violation ([`NotOwner`]).
//!
//! Removals (disconnect, expiry) keep the client's clock, as the reference
//! server does: peers drop a state on a same-clock `null`, and the owner's
//! next renewal (clock + 1) is accepted again after it reconnects.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use yrs::block::ClientID;
use yrs::sync::AwarenessUpdate;
use yrs::sync::awareness::AwarenessUpdateEntry;

use crate::link::PeerId;

const NULL_STATE: &str = "null";

/// A connection tried to change a client id that another connection owns.
#[derive(Debug, thiserror::Error)]
#[error("awareness client id {client} is owned by another connection")]
pub(crate) struct NotOwner {
    /// The contested client id.
    pub client: u64,
}

#[derive(Debug)]
struct Entry {
    clock: u32,
    /// `None` once removed (the clock is kept to reject stale updates).
    state: Option<Arc<str>>,
    /// Last time the state was set or renewed (for the 30 s expiry).
    renewed: Instant,
    /// The connection controlling this client id, if still connected.
    owner: Option<PeerId>,
}

/// The awareness table of one room.
#[derive(Debug)]
pub(crate) struct Presence {
    entries: HashMap<ClientID, Entry>,
    /// States not renewed within this long are removed (awareness.js: 30 s).
    timeout: Duration,
}

impl Presence {
    /// An empty table expiring states after `timeout` without renewal.
    pub(crate) fn new(timeout: Duration) -> Self {
        Presence {
            entries: HashMap::new(),
            timeout,
        }
    }

    /// Applies `update` sent by `peer`. Returns the entries that changed (to
    /// broadcast to every peer, the sender included), or `NotOwner` without
    /// applying anything. `owner_alive` says whether another owning
    /// connection is still live; a dead owner's ids may be taken over.
    pub(crate) fn apply(
        &mut self,
        peer: PeerId,
        update: AwarenessUpdate,
        now: Instant,
        owner_alive: impl Fn(PeerId) -> bool,
    ) -> Result<Option<AwarenessUpdate>, NotOwner> {
        let mut takeovers = Vec::new();
        for (client, incoming) in &update.clients {
            if let Some(e) = self.entries.get(client)
                && let Some(owner) = e.owner
                && owner != peer
                && incoming.clock > e.clock
            {
                if owner_alive(owner) {
                    return Err(NotOwner {
                        client: client.get(),
                    });
                }
                takeovers.push(*client);
            }
        }
        for client in takeovers {
            if let Some(e) = self.entries.get_mut(&client) {
                e.owner = None;
            }
        }
        let mut changed = HashMap::new();
        for (client, incoming) in update.clients {
            let removal = incoming.json.as_ref() == NULL_STATE;
            match self.entries.get_mut(&client) {
                Some(e) => {
                    if e.owner.is_some_and(|o| o != peer) {
                        continue; // an echo of someone else's state
                    }
                    let newer = incoming.clock > e.clock;
                    let same_clock_removal =
                        incoming.clock == e.clock && removal && e.state.is_some();
                    if !(newer || same_clock_removal) {
                        continue;
                    }
                    e.clock = incoming.clock;
                    e.renewed = now;
                    if removal {
                        e.state = None;
                    } else {
                        e.state = Some(incoming.json.clone());
                        e.owner = Some(peer);
                    }
                    changed.insert(client, incoming);
                }
                None => {
                    let owner = (!removal).then_some(peer);
                    let state = (!removal).then(|| incoming.json.clone());
                    self.entries.insert(
                        client,
                        Entry {
                            clock: incoming.clock,
                            state,
                            renewed: now,
                            owner,
                        },
                    );
                    if !removal {
                        changed.insert(client, incoming);
                    }
                }
            }
        }
        Ok((!changed.is_empty()).then_some(AwarenessUpdate { clients: changed }))
    }

    /// Forgets `peer`: removes the states it controls. Returns the removals to broadcast.
    pub(crate) fn remove_peer(&mut self, peer: PeerId) -> Option<AwarenessUpdate> {
        let mut removed = HashMap::new();
        for (client, e) in self.entries.iter_mut() {
            if e.owner != Some(peer) {
                continue;
            }
            e.owner = None;
            if e.state.take().is_some() {
                removed.insert(*client, null_entry(e.clock));
            }
        }
        (!removed.is_empty()).then_some(AwarenessUpdate { clients: removed })
    }

    /// Removes states not renewed within the timeout and drops long-dead
    /// entries. Returns the removals to broadcast.
    pub(crate) fn sweep(&mut self, now: Instant) -> Option<AwarenessUpdate> {
        let mut removed = HashMap::new();
        let timeout = self.timeout;
        self.entries.retain(|client, e| {
            let age = now.saturating_duration_since(e.renewed);
            if e.state.is_some() && age >= timeout {
                e.state = None;
                e.renewed = now;
                removed.insert(*client, null_entry(e.clock));
            }
            // Keep removed entries a while so stale updates stay rejected.
            e.state.is_some() || e.owner.is_some() || age < timeout * 2
        });
        (!removed.is_empty()).then_some(AwarenessUpdate { clients: removed })
    }

    /// When [`Presence::sweep`] next has something to do: the earliest
    /// expiry of a live state, or when a removed, ownerless entry may be
    /// forgotten. `None` when nothing is due (the room need not wake).
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter_map(|e| match (&e.state, e.owner) {
                (Some(_), _) => Some(e.renewed + self.timeout),
                (None, None) => Some(e.renewed + self.timeout * 2),
                (None, Some(_)) => None, // kept until its owner leaves
            })
            .min()
    }

    /// Every live state (sent to a joining peer and in reply to a query).
    pub(crate) fn snapshot(&self) -> Option<AwarenessUpdate> {
        let clients: HashMap<_, _> = self
            .entries
            .iter()
            .filter_map(|(client, e)| {
                e.state.as_ref().map(|s| {
                    (
                        *client,
                        AwarenessUpdateEntry {
                            clock: e.clock,
                            json: s.clone(),
                        },
                    )
                })
            })
            .collect();
        (!clients.is_empty()).then_some(AwarenessUpdate { clients })
    }

    /// Number of live states.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.values().filter(|e| e.state.is_some()).count()
    }

    /// True when nobody has a live state.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn null_entry(clock: u32) -> AwarenessUpdateEntry {
    AwarenessUpdateEntry {
        clock,
        json: NULL_STATE.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upd(client: u64, clock: u32, json: &str) -> AwarenessUpdate {
        let mut clients = HashMap::new();
        clients.insert(
            ClientID::new(client),
            AwarenessUpdateEntry {
                clock,
                json: json.into(),
            },
        );
        AwarenessUpdate { clients }
    }

    #[test]
    fn owner_sets_renews_and_removal_on_disconnect_is_broadcast() {
        let mut p = Presence::new(Duration::from_secs(30));
        let now = Instant::now();
        let a = PeerId(1);
        assert!(
            p.apply(a, upd(7, 1, r#"{"x":1}"#), now, |_| true)
                .unwrap()
                .is_some()
        );
        assert!(
            p.apply(a, upd(7, 2, r#"{"x":2}"#), now, |_| true)
                .unwrap()
                .is_some()
        );
        assert!(
            p.apply(a, upd(7, 2, r#"{"x":2}"#), now, |_| true)
                .unwrap()
                .is_none()
        );
        let removed = p.remove_peer(a).unwrap();
        assert_eq!(removed.clients[&ClientID::new(7)].clock, 2);
        assert!(p.is_empty());
    }

    #[test]
    fn echoes_from_other_peers_are_ignored_but_advancing_is_rejected() {
        let mut p = Presence::new(Duration::from_secs(30));
        let now = Instant::now();
        let (a, b) = (PeerId(1), PeerId(2));
        p.apply(a, upd(7, 3, "{}"), now, |_| true).unwrap();
        assert!(
            p.apply(b, upd(7, 3, "{}"), now, |_| true)
                .unwrap()
                .is_none()
        );
        assert!(
            p.apply(b, upd(7, 3, "null"), now, |_| true)
                .unwrap()
                .is_none()
        );
        assert_eq!(p.len(), 1);
        assert!(p.apply(b, upd(7, 4, "{}"), now, |_| true).is_err());
        // Once a's connection is presumed dead, b (a reconnect) may take over.
        assert!(
            p.apply(b, upd(7, 4, "{}"), now, |_| false)
                .unwrap()
                .is_some()
        );
        assert!(p.remove_peer(a).is_none());
        assert!(p.remove_peer(b).is_some());
    }

    #[test]
    fn nothing_is_due_without_states_and_expiry_is_due_after_the_timeout() {
        let mut p = Presence::new(Duration::from_secs(30));
        assert!(p.next_due().is_none());
        let now = Instant::now();
        p.apply(PeerId(1), upd(7, 1, "{}"), now, |_| true).unwrap();
        assert_eq!(p.next_due(), Some(now + Duration::from_secs(30)));
        p.remove_peer(PeerId(1));
        // Removed and ownerless: forgotten after twice the timeout.
        assert_eq!(p.next_due(), Some(now + Duration::from_secs(60)));
        assert!(p.sweep(now + Duration::from_secs(61)).is_none());
        assert!(p.next_due().is_none());
    }

    #[test]
    fn states_expire_without_renewal() {
        let mut p = Presence::new(Duration::from_secs(30));
        let now = Instant::now();
        p.apply(PeerId(1), upd(7, 1, "{}"), now, |_| true).unwrap();
        assert!(p.sweep(now + Duration::from_secs(10)).is_none());
        assert!(p.sweep(now + Duration::from_secs(31)).is_some());
        assert!(p.is_empty());
    }
}
