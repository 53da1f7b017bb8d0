//! Admission control as the engine sees it: a port. Before any work for a new request (an
//! initial INVITE, an out-of-dialog request) the engine asks whether to take it, and a new
//! call whether its source may hold one more. The answer is needed at once, so the port
//! answers from state it holds locally; an implementation that shares its counts (between
//! shards, or between nodes in a cluster) brings them up to date on its own time, never on the
//! engine's. `sbc-core/src/admission.rs` is the token-bucket implementation sbcd runs.

use std::net::IpAddr;
use std::time::Instant;

/// The decision for one new request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// Answer 503 with Retry-After.
    Refuse,
    /// Ignore it (a flagged source).
    Drop,
}

/// What the engine asks of admission control.
pub trait AdmissionControl: Send + Sync + std::fmt::Debug {
    /// A new request from `source` at `now`.
    fn admit(&self, now: Instant, source: IpAddr) -> Admit;
    /// Whether `source` may start one more call.
    fn may_start_call(&self, source: IpAddr) -> bool;
    /// A call from `source` was set up (after `may_start_call` said yes).
    fn call_started(&self, source: IpAddr);
    /// A call from `source` ended.
    fn call_ended(&self, source: IpAddr);
    /// Whether `source` is trusted (`limits.admission.trusted`): what it asks of the SBC in a
    /// request (a dynamic `call_control` entry) is done.
    fn trusts(&self, source: IpAddr) -> bool;
}

/// Takes everything: no limits (tools, tests, `sbcd explain`).
#[derive(Debug, Default, Clone, Copy)]
pub struct Unlimited;

impl AdmissionControl for Unlimited {
    fn admit(&self, _now: Instant, _source: IpAddr) -> Admit {
        Admit::Yes
    }
    fn may_start_call(&self, _source: IpAddr) -> bool {
        true
    }
    fn call_started(&self, _source: IpAddr) {}
    fn call_ended(&self, _source: IpAddr) {}
    fn trusts(&self, _source: IpAddr) -> bool {
        true
    }
}

/// The address a source is counted by: IPv4 as is, IPv6 by its /64 (one subscriber's
/// prefix; every address in it is the same source). TCP's per-source cap counts so too.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
        v4 => v4,
    }
}
