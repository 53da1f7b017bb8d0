//! The registration cache as the engine sees it: a port. A new request's registrations are
//! asked for once, as a whole ([`RegQuery`]), before its profile is chosen; everything decided
//! for the request then reads the answer ([`RegView`]). An implementation that holds the
//! bindings in memory answers at once; one that must ask elsewhere (the other nodes of a
//! cluster) answers `None`, the engine parks the request and emits
//! `Output::RegistrationLookup`, and the driver brings the answer back as a later input
//! (`Engine::handle_registrations`). Writes return at once: a store that shares the bindings
//! does its work on its own time, never on a shard's.
//! `regcache::RegCache` is the implementation sbcd runs, its persistence in the driver.

use std::net::SocketAddr;
use std::time::Instant;

use regcache::{Binding, RegCache, RegQuery, RegView};

/// What the engine asks of the registration cache.
pub trait Registrations: Send + Sync + std::fmt::Debug {
    /// The bindings `query` names, if they can be had without waiting; `None` sends the query
    /// to the driver, whose answer comes back through `Engine::handle_registrations`.
    fn lookup(&self, query: &RegQuery) -> Option<RegView>;
    /// Bindings held (the limit `registrations.max_bindings` is checked against it).
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Adds or replaces a binding.
    fn put(&self, binding: Binding);
    /// Sets when the phone's registration of `binding` runs out (a re-registration this node
    /// absorbed), if the binding is still there (it may have gone since the lookup). A store
    /// shared by several nodes notes that this node holds the binding from now on: the
    /// phone's NAT just let this node's answer in.
    fn set_ua_expires(&self, binding: &Binding, ua_expires: Instant);
    /// Removes an alias's binding, if any.
    fn remove(&self, alias: &str);
    /// Drops the bindings expired at `now`; how many.
    fn collect_expired(&self, now: Instant) -> usize;
    /// Whether `source` is another node of the cluster, whose requests may name a binding
    /// this node holds ([`RELAY_HEADER`]). Never, outside a cluster.
    fn is_peer(&self, _source: SocketAddr) -> bool {
        false
    }
    /// The key the cluster's nodes sign [`RELAY_HEADER`] with; `None` outside a cluster, or
    /// before the node has it (calls then go to phones directly).
    fn relay_key(&self) -> Option<[u8; 32]> {
        None
    }
}

/// The header with which a node of a cluster hands a call to one of its peers' phones to that
/// peer (docs/manual/cluster.md, Registrations): `<alias>;mac=<hex>`, the alias of the binding
/// and an HMAC of it and the request's Call-ID under the cluster's key. Honoured only from a
/// peer ([`Registrations::is_peer`]) with a good MAC, and never relayed on.
pub const RELAY_HEADER: &str = "X-Sbc-Relay";

impl Registrations for RegCache {
    fn lookup(&self, query: &RegQuery) -> Option<RegView> {
        Some(self.view(query))
    }
    fn len(&self) -> usize {
        Self::len(self)
    }
    fn put(&self, binding: Binding) {
        Self::put(self, binding);
    }
    fn set_ua_expires(&self, binding: &Binding, ua_expires: Instant) {
        Self::set_ua_expires(self, &binding.alias, ua_expires);
    }
    fn remove(&self, alias: &str) {
        Self::remove(self, alias);
    }
    fn collect_expired(&self, now: Instant) -> usize {
        Self::collect_expired(self, now)
    }
}
