//! Next-hop health as the engine sees it: a port answered at once from state the driver keeps
//! (`sbc-core/src/health.rs`), shared by every shard. Before a new request leaves, each
//! candidate target is asked whether it may be used (not marked down by its probes, not
//! blacklisted after a failure); the engine reports failed INVITEs and the outcome of the
//! OPTIONS probes it sends (`b2bua/probe.rs`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::b2bua::Transport;

/// A destination as health knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HopKey {
    pub transport: Transport,
    pub addr: SocketAddr,
}

pub trait NextHopHealth: Send + Sync + std::fmt::Debug {
    /// Whether a request may go to `hop` at `now`.
    fn usable(&self, _hop: HopKey, _now: Instant) -> bool {
        true
    }
    /// An INVITE to `hop` timed out or could not be sent (or was refused with 503 and
    /// `Retry-After`, then `retry_after` says for how long).
    fn failed(&self, _hop: HopKey, _now: Instant, _retry_after: Option<Duration>) {}
    /// An OPTIONS probe to `hop` (for the next hop named `name`, if a name) was answered
    /// (`true`) or not.
    fn probed(&self, _hop: HopKey, _name: Option<&str>, _answered: bool, _now: Instant) {}
}

/// Every hop usable, nothing kept (tools, tests, `sbcd explain`).
#[derive(Debug, Default, Clone, Copy)]
pub struct AlwaysUsable;

impl NextHopHealth for AlwaysUsable {}
