//! The registration cache as the engine sees it: a port. The engine reads bindings when a
//! REGISTER is absorbed or a call goes to a registered user, and writes them when a registrar
//! answers or a phone registers locally. Reads answer from what the implementation holds in
//! memory and writes return at once, so a store that shares the bindings (a database, the
//! other nodes of a cluster) does its work on its own time, never on a shard's.
//! `regcache::RegCache` is the implementation sbcd runs, its persistence in the driver.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use regcache::{Binding, RegCache};

/// What the engine asks of the registration cache.
pub trait Registrations: Send + Sync + std::fmt::Debug {
    /// The binding of an alias.
    fn get(&self, alias: &str) -> Option<Binding>;
    /// The bindings of an address of record.
    fn of_aor(&self, aor: &str) -> Vec<Binding>;
    /// The binding of a contact registered from `source`.
    fn by_contact(&self, contact: &str, source: SocketAddr) -> Option<Binding>;
    /// The alias of (AoR, contact) from `source_ip`: the cached one, or a new one.
    fn alias_for(&self, aor: &str, contact: &str, source_ip: IpAddr) -> String;
    /// Bindings held.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Adds or replaces a binding.
    fn put(&self, binding: Binding);
    /// Removes an alias's binding, if any.
    fn remove(&self, alias: &str);
    /// Drops the bindings expired at `now`; how many.
    fn collect_expired(&self, now: Instant) -> usize;
}

impl Registrations for RegCache {
    fn get(&self, alias: &str) -> Option<Binding> {
        Self::get(self, alias)
    }
    fn of_aor(&self, aor: &str) -> Vec<Binding> {
        Self::of_aor(self, aor)
    }
    fn by_contact(&self, contact: &str, source: SocketAddr) -> Option<Binding> {
        Self::by_contact(self, contact, source)
    }
    fn alias_for(&self, aor: &str, contact: &str, source_ip: IpAddr) -> String {
        Self::alias_for(self, aor, contact, source_ip)
    }
    fn len(&self) -> usize {
        Self::len(self)
    }
    fn put(&self, binding: Binding) {
        Self::put(self, binding);
    }
    fn remove(&self, alias: &str) {
        Self::remove(self, alias);
    }
    fn collect_expired(&self, now: Instant) -> usize {
        Self::collect_expired(self, now)
    }
}
