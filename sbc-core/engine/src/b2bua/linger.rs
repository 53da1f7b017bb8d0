//! Finished transactions kept only to absorb retransmissions until their wait timer (D, I, J,
//! K, L; up to 64·T1) fires, each with the message it sends again. Under load most
//! transactions are in this state, so their cached messages share a byte budget per shard
//! (issue 16): past it the oldest caches are dropped first (the transaction still absorbs its
//! retransmissions, it just no longer answers them), counted.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use bytes::Bytes;

use super::types::Destination;
use super::TxId;
use crate::sip::transaction::TxKey;

/// A finished transaction: what it absorbs and what it sends again.
pub(super) struct Linger {
    pub(super) key: TxKey,
    /// Sent again on a retransmitted request (server) or non-2xx final (client).
    pub(super) resend: Option<Bytes>,
    pub(super) dest: Destination,
    pub(super) until: Instant,
}

impl Linger {
    pub(super) fn until(&self) -> Instant {
        self.until
    }
}

/// The lingering transactions of one engine and the budget of their cached messages.
pub(super) struct LingerTable {
    entries: HashMap<TxId, Linger>,
    /// Transactions with a cached message, oldest first; ids already gone are skipped.
    order: VecDeque<TxId>,
    bytes: usize,
    budget: usize,
    evictions: u64,
}

impl LingerTable {
    pub(super) fn new(budget: usize) -> Self {
        Self { entries: HashMap::new(), order: VecDeque::new(), bytes: 0, budget, evictions: 0 }
    }

    pub(super) fn insert(&mut self, id: TxId, linger: Linger) {
        if let Some(b) = &linger.resend {
            self.bytes += b.len();
            self.order.push_back(id);
        }
        if let Some(old) = self.entries.insert(id, linger) {
            self.bytes -= old.resend.map_or(0, |b| b.len());
        }
        // Entries go in the order they expire, mostly: what is gone at the front costs nothing
        // to skip, and keeps the queue as short as the table.
        while let Some(front) = self.order.front() {
            match self.entries.get_mut(front) {
                Some(l) if l.resend.is_some() && self.bytes > self.budget => {
                    self.bytes -= l.resend.take().map_or(0, |b| b.len());
                    self.evictions += 1;
                    self.order.pop_front();
                }
                Some(l) if l.resend.is_some() => break,
                _ => {
                    self.order.pop_front();
                }
            }
        }
        // A long-lived entry at the front shields gone ones behind it: compact now and then.
        if self.order.len() > 2 * self.entries.len() + 64 {
            let entries = &self.entries;
            self.order.retain(|id| entries.get(id).is_some_and(|l| l.resend.is_some()));
        }
    }

    pub(super) fn get(&self, id: &TxId) -> Option<&Linger> {
        self.entries.get(id)
    }

    pub(super) fn remove(&mut self, id: &TxId) -> Option<Linger> {
        let l = self.entries.remove(id)?;
        self.bytes -= l.resend.as_ref().map_or(0, Bytes::len);
        Some(l)
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Bytes of cached messages now.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.bytes
    }

    /// Cached messages dropped for the budget since the start.
    pub(super) fn evictions(&self) -> u64 {
        self.evictions
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::b2bua::types::{Peer, Transport};

    fn linger(key: &str, len: usize, until: Instant) -> Linger {
        let dest = Destination {
            transport: Transport::Udp,
            local: 0,
            peer: Peer::Addr("192.0.2.1:5060".parse().expect("addr")),
            conn: None,
        };
        let key = crate::sip::transaction::client_key(key.as_bytes(), b"BYE");
        Linger { key, resend: Some(Bytes::from(vec![b'x'; len])), dest, until }
    }

    #[test]
    fn the_oldest_caches_go_first_over_the_budget_and_the_entries_stay() {
        #[allow(clippy::disallowed_methods)] // a fixed origin for virtual time
        let t = Instant::now() + Duration::from_secs(32);
        let mut table = LingerTable::new(1000);
        for id in 1..=3 {
            table.insert(TxId(id), linger(&format!("b{id}"), 400, t));
        }
        assert_eq!((table.bytes(), table.evictions()), (800, 1));
        assert!(table.get(&TxId(1)).is_some_and(|l| l.resend.is_none()), "still absorbs, no longer answers");
        assert!(table.get(&TxId(3)).is_some_and(|l| l.resend.is_some()));
        table.remove(&TxId(2));
        assert_eq!(table.bytes(), 400);
        assert_eq!(table.len(), 2);
        // Ids that are gone do not pile up in the order.
        for id in 4..1000 {
            table.insert(TxId(id), linger(&format!("b{id}"), 10, t));
            table.remove(&TxId(id));
        }
        assert!(table.order.len() <= 2 * table.len() + 64, "{}", table.order.len());
    }
}
