//! Next hops' health in routing: a new request's candidates (its route's destination and a
//! call's failover alternatives) that the health port says are down or blacklisted are left
//! out before anything is sent, and a call's INVITE that timed out, could not be sent or got
//! 503 with `Retry-After` reports its destination (`health.rs` keeps the state).

use std::time::{Duration, Instant};

use profiles::LocalReply;

use super::call::Side;
use super::invite::BRoute;
use super::types::{Peer, Transport};
use super::{CallHandle, Engine};
use crate::health::HopKey;
use crate::sip::msg::Message;

/// The longest `Retry-After` a 503 may blacklist its next hop for.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(3600);

pub(super) fn hop_key(transport: Transport, peer: &Peer) -> Option<HopKey> {
    peer.addr().map(|addr| HopKey { transport, addr })
}

impl Engine {
    /// Whether a request may go to `peer` over `transport` now (a name not resolved yet may).
    pub(super) fn hop_usable(&self, now: Instant, transport: Transport, peer: &Peer) -> bool {
        hop_key(transport, peer).is_none_or(|k| self.cfg.health.usable(k, now))
    }

    /// `route` without its candidates that are down or blacklisted: the first one left is the
    /// destination. None left: 503.
    pub(super) fn healthy_route(&self, now: Instant, mut route: BRoute) -> Result<BRoute, LocalReply> {
        let first_ok = self.hop_usable(now, route.dest.transport, &route.dest.peer);
        route.alternatives.retain(|(t, p)| self.hop_usable(now, *t, p));
        if first_ok {
            return Ok(route);
        }
        let iface = self.cfg.interfaces.get(route.interface);
        let found =
            route.alternatives.iter().position(|(t, p)| iface.and_then(|i| i.socket(*t, p.is_ipv6())).is_some());
        let Some(at) = found else {
            tracing::info!(to = %route.dest.peer, "every next hop is down or blacklisted");
            return Err(LocalReply::new(503, "Service Unavailable").with("Warning", "399 sbc \"next hops down\""));
        };
        let (transport, peer) = route.alternatives.remove(at);
        route.alternatives.drain(..at);
        let Some(socket) = iface.and_then(|i| i.socket(transport, peer.is_ipv6())) else {
            return Err(LocalReply::new(503, "No Socket For Transport"));
        };
        tracing::info!(skipped = %route.dest.peer, to = %peer, "next hop down or blacklisted: the next one takes over");
        route.retarget(transport, peer, socket.id);
        Ok(route)
    }

    /// Call `h`'s B-leg INVITE failed at its current destination: blacklisted for the
    /// configured time (a timeout, a transport error), or for a 503's `Retry-After`. Only a
    /// destination the configuration names (or one of its DNS targets) is: a phone that is
    /// off for a moment, or a host a Request-URI chose, is not kept from the next call.
    pub(super) fn b_destination_failed(&mut self, now: Instant, h: CallHandle, response: Option<&Message>) {
        let Some(call) = self.calls.get(&h) else { return };
        let dest = &call.leg(Side::B).dest;
        if !self.is_configured_hop(&dest.peer, Some(&call.rules)) {
            return;
        }
        let Some(hop) = hop_key(dest.transport, &dest.peer) else { return };
        let retry_after = match response {
            None => None,
            Some(m) => match retry_after(m) {
                Some(d) => Some(d),
                // A 503 without Retry-After: overloaded for a moment, not gone.
                None => return,
            },
        };
        self.cfg.health.failed(hop, now, retry_after);
    }
}

/// A response's `Retry-After` in seconds (RFC 3261 §20.33), capped.
fn retry_after(m: &Message) -> Option<Duration> {
    let v = m.other_header("Retry-After")?;
    let digits: &[u8] = v.split(|c| !c.is_ascii_digit()).next().unwrap_or_default();
    let secs: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    (secs > 0).then(|| Duration::from_secs(secs).min(RETRY_AFTER_MAX))
}
