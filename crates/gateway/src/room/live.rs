//! The live connections the registry knows of, and the per-`sub` quotas
//! they are counted against: connections per token `sub`
//! (`--max-connections-per-sub`) and documents it is connected to at once
//! (`--max-rooms-per-sub`); a join past either is refused with 4429. Only
//! authenticated connections are counted (without auth every caller is
//! `anonymous`, bounded by the per-address caps instead).

use std::collections::HashMap;

use tandem_store::DocId;

use crate::access::Principal;
use crate::close::CloseCode;
use crate::config::Limits;
use crate::link::{Kill, PeerId};

/// A joined connection as [`Rooms::close_peers`] sees it.
pub(super) struct Live {
    /// The document it joined.
    pub(super) doc: DocId,
    /// Who it acts as.
    pub(super) principal: Principal,
    /// Closes it with a code.
    pub(super) kill: Kill,
    /// Counted against its `sub`'s quotas (authenticated).
    pub(super) counted: bool,
}

/// The live connections, and per `sub` what its counted ones hold.
#[derive(Default)]
pub(super) struct LiveTable {
    /// Every joined connection (what `Rooms::close_peers` scans).
    pub(super) peers: HashMap<PeerId, Live>,
    /// What each `sub` holds, for its counted connections only.
    subs: HashMap<String, SubUsage>,
}

/// One `sub`'s connections, and how many of them are in each document.
#[derive(Default)]
struct SubUsage {
    /// Its open connections (`--max-connections-per-sub`).
    connections: usize,
    /// Its connections per document (`--max-rooms-per-sub` counts the keys).
    docs: HashMap<DocId, usize>,
}

impl LiveTable {
    /// Adds a connection, unless it is counted and its `sub` is at
    /// `--max-connections-per-sub`, or this would be a document past
    /// `--max-rooms-per-sub` (0: no quota); then 4429.
    pub(super) fn insert(
        &mut self,
        id: PeerId,
        peer: Live,
        limits: &Limits,
    ) -> Result<(), CloseCode> {
        if peer.counted {
            let usage = self.subs.entry(peer.principal.sub.clone()).or_default();
            let max_conns = limits.max_connections_per_sub;
            let max_docs = limits.max_rooms_per_sub;
            let new_doc = !usage.docs.contains_key(&peer.doc);
            if (max_conns > 0 && usage.connections >= max_conns)
                || (max_docs > 0 && new_doc && usage.docs.len() >= max_docs)
            {
                if usage.connections == 0 {
                    self.subs.remove(&peer.principal.sub);
                }
                return Err(CloseCode::RateLimited);
            }
            usage.connections += 1;
            *usage.docs.entry(peer.doc.clone()).or_default() += 1;
        }
        self.peers.insert(id, peer);
        Ok(())
    }

    /// Removes a connection and releases its share of its `sub`'s quotas.
    pub(super) fn remove(&mut self, id: PeerId) {
        let Some(peer) = self.peers.remove(&id) else {
            return;
        };
        if !peer.counted {
            return;
        }
        let sub = &peer.principal.sub;
        let Some(usage) = self.subs.get_mut(sub) else {
            return;
        };
        usage.connections -= 1;
        if let Some(n) = usage.docs.get_mut(&peer.doc) {
            *n -= 1;
            if *n == 0 {
                usage.docs.remove(&peer.doc);
            }
        }
        if usage.connections == 0 {
            self.subs.remove(sub);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Mode;

    fn peer(sub: &str, doc: &str, counted: bool) -> Live {
        Live {
            doc: DocId::new(doc.to_owned()).expect("id"),
            principal: Principal {
                sub: sub.into(),
                mode: Mode::Write,
            },
            kill: Kill::new(std::sync::Arc::new(crate::link::Line::new(
                Default::default(),
                1,
            ))),
            counted,
        }
    }

    #[test]
    fn quotas_count_per_sub_and_are_released_when_a_connection_leaves() {
        let limits = Limits {
            max_connections_per_sub: 2,
            max_rooms_per_sub: 1,
            ..Limits::default()
        };
        let mut t = LiveTable::default();
        t.insert(PeerId(1), peer("ana", "a", true), &limits)
            .expect("first");
        let other_doc = t.insert(PeerId(2), peer("ana", "b", true), &limits);
        assert_eq!(other_doc, Err(CloseCode::RateLimited), "one document");
        t.insert(PeerId(3), peer("ana", "a", true), &limits)
            .expect("same doc");
        let third = t.insert(PeerId(4), peer("ana", "a", true), &limits);
        assert_eq!(third, Err(CloseCode::RateLimited), "two connections");
        t.insert(PeerId(5), peer("bob", "b", true), &limits)
            .expect("bob");
        t.insert(PeerId(6), peer("anonymous", "c", false), &limits)
            .expect("uncounted");
        t.insert(PeerId(7), peer("anonymous", "d", false), &limits)
            .expect("uncounted");
        t.remove(PeerId(1));
        t.remove(PeerId(3));
        assert!(!t.subs.contains_key("ana"), "released whole");
        t.insert(PeerId(8), peer("ana", "b", true), &limits)
            .expect("room again");
    }
}
