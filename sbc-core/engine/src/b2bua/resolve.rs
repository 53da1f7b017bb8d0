//! Named next hops resolved before a new request leaves (RFC 3263 §4). A request whose route
//! names a host waits here: a call's caller has its 100, its retransmissions are absorbed by
//! its transaction. The driver looks up NAPTR, SRV and A/AAAA records for every named hop at
//! once (`Output::Resolve`) and answers with each one's targets in RFC 3263 order; the first
//! usable target is where the request goes, the rest (then the next hops' targets) are the
//! failover alternatives (`failover.rs`) tried on 503, a timeout or a transport error.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use profiles::profile::NextHop;
use profiles::LocalReply;

use super::apply::CallRules;
use super::build::ip_of_host;
use super::call::CallKind;
use super::invite::BRoute;
use super::routing;
use super::setup::{NewRequest, Parked};
use super::types::{Peer, Transport};
use super::{CallHandle, Engine, Output, TimerRef, TxId};
use crate::sip::msg::{Scheme, Uri};

/// How long a request waits for its targets. The resolver gives up on a name server sooner
/// (`driver/dns.rs`); this bounds a chain of lookups that each take their time.
pub(super) const RESOLVE_DEADLINE: Duration = Duration::from_secs(8);

/// A host name to resolve as RFC 3263 §4 does: with neither port nor transport NAPTR picks
/// the transport, with a transport but no port SRV gives the targets, with a port only the
/// name's addresses are used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetQuery {
    pub host: Box<str>,
    pub port: Option<u16>,
    pub transport: Option<Transport>,
    /// A `sips:` URI: TLS targets only (`SIPS+D2T`, `_sips._tcp`).
    pub secure: bool,
}

/// One place to send a request: a transport and an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub transport: Transport,
    pub addr: SocketAddr,
}

/// Names a resolution the driver answers later ([`Engine::handle_targets`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResolveTicket(u64);

impl ResolveTicket {
    pub(super) fn new(id: u64) -> Self {
        Self(id)
    }
}

/// What waits for its targets, and goes on when they come.
pub(super) enum Resolving {
    /// A call or subscription: set up once its B leg knows where to go.
    Pair { req: NewRequest, kind: CallKind, rules: Arc<CallRules>, parked: Parked },
    /// An out-of-dialog request, relayed through its server transaction.
    Relay { server: TxId, req: NewRequest, rules: Arc<CallRules> },
}

pub(super) struct AwaitingTargets {
    what: Resolving,
    route: BRoute,
}

/// The query for a next-hop entry, if it names a host.
pub(super) fn hop_query(h: &NextHop) -> Option<TargetQuery> {
    if ip_of_host(h.host.as_bytes()).is_some() {
        return None;
    }
    let transport = h.transport.as_deref().and_then(|t| Transport::from_name(t.as_bytes()));
    Some(TargetQuery { host: h.host.to_ascii_lowercase().into(), port: h.port, transport, secure: false })
}

/// The query for a URI (`maddr` first), if it names a host.
pub(super) fn uri_query(uri: &[u8]) -> Option<TargetQuery> {
    let u = Uri::parse(uri)?;
    let host = u.param(b"maddr").unwrap_or(u.host);
    if ip_of_host(host).is_some() {
        return None;
    }
    let secure = u.scheme == Scheme::Sips;
    let named = u.param(b"transport").and_then(Transport::from_name);
    // A sips: URI is reached over TLS whatever its transport parameter says (RFC 3261 §26.2.2).
    let transport = if secure { named.map(|_| Transport::Tls) } else { named };
    let host = String::from_utf8_lossy(host).to_ascii_lowercase().into();
    Some(TargetQuery { host, port: u.port, transport, secure })
}

impl Engine {
    /// Parks `what` until the named hops of `route` are resolved, and asks the driver.
    pub(super) fn await_targets(&mut self, now: Instant, what: Resolving, mut route: BRoute) {
        // Only a call's INVITE fails over; anything else needs its first hop alone.
        let fails_over = matches!(&what, Resolving::Pair { kind: CallKind::Invite, .. });
        if !fails_over {
            route.alternatives.clear();
            route.named.retain(|(at, _)| *at == 0);
        }
        let queries = route.named.iter().map(|(_, q)| q.clone()).collect();
        let ticket = ResolveTicket(self.new_id());
        if matches!(what, Resolving::Pair { .. }) {
            self.awaiting_calls += 1;
        }
        self.awaiting_targets.insert(ticket, AwaitingTargets { what, route });
        self.schedule(now + RESOLVE_DEADLINE, TimerRef::Targets(ticket));
        self.out.push_back(Output::Resolve { ticket, queries });
    }

    fn stop_resolving(&mut self, ticket: ResolveTicket) -> Option<AwaitingTargets> {
        let waiting = self.awaiting_targets.remove(&ticket)?;
        if matches!(waiting.what, Resolving::Pair { .. }) {
            self.awaiting_calls -= 1;
        }
        Some(waiting)
    }

    /// The driver's answer to `Output::Resolve`: each query's targets, in the order of the
    /// queries (none for a name that did not resolve). An answer for something no longer
    /// waiting (cancelled, past its deadline) is ignored.
    pub fn handle_targets(&mut self, now: Instant, ticket: ResolveTicket, answers: Vec<Vec<Target>>) {
        if let Some(queries) = self.probing.remove(&ticket) {
            return self.probe_resolved(now, queries, answers);
        }
        let Some(AwaitingTargets { what, route }) = self.stop_resolving(ticket) else { return };
        let open = match &what {
            Resolving::Pair { parked, .. } => self.txs.contains_key(&parked.a_tx),
            Resolving::Relay { server, .. } => self.txs.contains_key(server),
        };
        if !open {
            return; // its transaction ended while it waited (a transport error)
        }
        match self.resolved_route(route, &answers) {
            Ok(route) => self.go_on_resolved(now, what, route),
            Err(reply) => self.resolving_failed(now, what, reply),
        }
    }

    /// The deadline of a resolution: what waits is answered 503, a late answer ignored.
    pub(super) fn targets_late(&mut self, now: Instant, ticket: ResolveTicket) {
        let Some(AwaitingTargets { what, .. }) = self.stop_resolving(ticket) else { return };
        tracing::warn!(ticket = ticket.0, "next hop names not resolved in time");
        self.resolving_failed(now, what, unresolvable());
    }

    /// The caller cancelled call `call` while its next hops were being resolved: it is
    /// forgotten. Whether call control had seen it; `None` if it was not waiting.
    pub(super) fn cancel_resolving_call(&mut self, call: CallHandle) -> Option<bool> {
        let ticket = self
            .awaiting_targets
            .iter()
            .find(|(_, w)| matches!(&w.what, Resolving::Pair { parked, .. } if parked.call == call))
            .map(|(t, _)| *t)?;
        match self.stop_resolving(ticket)?.what {
            Resolving::Pair { parked, .. } => Some(parked.cc.is_some()),
            Resolving::Relay { .. } => None,
        }
    }

    /// `route` with its named hops replaced by their usable targets, in order: a target needs
    /// a socket of its transport and family on the route's interface, TLS when only TLS may
    /// go, and must not be one of ours.
    fn resolved_route(&self, mut route: BRoute, answers: &[Vec<Target>]) -> Result<BRoute, LocalReply> {
        let hops: Vec<(Transport, Peer)> = std::iter::once((route.dest.transport, route.dest.peer.clone()))
            .chain(std::mem::take(&mut route.alternatives))
            .collect();
        let iface = self.cfg.interfaces.get(route.interface);
        let mut usable: Vec<(Transport, Peer, u16)> = Vec::new();
        let mut ours = false;
        for (at, (transport, peer)) in hops.into_iter().enumerate() {
            let Some(q) = route.named.iter().position(|(p, _)| *p == at) else {
                if let Some(s) = iface.and_then(|i| i.socket(transport, peer.is_ipv6())) {
                    usable.push((transport, peer, s.id));
                }
                continue;
            };
            let host = &route.named[q].1.host;
            for t in answers.get(q).into_iter().flatten() {
                let peer = Peer::Named { host: host.clone(), addr: t.addr };
                if route.tls_only && t.transport != Transport::Tls {
                    continue;
                }
                if routing::is_own_peer(&self.cfg, &peer) {
                    ours = true;
                    continue;
                }
                if let Some(s) = iface.and_then(|i| i.socket(t.transport, t.addr.is_ipv6())) {
                    usable.push((t.transport, peer, s.id));
                }
            }
        }
        route.named.clear();
        let mut usable = usable.into_iter();
        let Some((transport, peer, local)) = usable.next() else {
            return Err(if ours { LocalReply::new(482, "Loop Detected") } else { unresolvable() });
        };
        if route.fixed.is_some() {
            route.fixed = Some((transport, peer.clone()));
        }
        route.dest.transport = transport;
        route.dest.peer = peer;
        route.dest.local = local;
        route.alternatives = usable.map(|(t, p, _)| (t, p)).collect();
        Ok(route)
    }

    fn go_on_resolved(&mut self, now: Instant, what: Resolving, route: BRoute) {
        match what {
            Resolving::Pair { req, kind, rules, parked } => {
                self.start_dialog_pair(now, req, route, kind, rules, Some(parked))
            }
            Resolving::Relay { server, req, rules } => self.relay_out_of_dialog(now, server, req, rules, route),
        }
    }

    fn resolving_failed(&mut self, now: Instant, what: Resolving, reply: LocalReply) {
        match what {
            Resolving::Pair { parked: Parked { call, a_tx, cc: Some(_) }, .. } => {
                self.refuse_started(now, call, a_tx, reply, "no_route")
            }
            Resolving::Pair { parked, .. } => self.respond_local(now, parked.a_tx, &reply),
            Resolving::Relay { server, .. } => self.respond_local(now, server, &reply),
        }
    }
}

/// No usable target: as a transport failure to the next hop would be answered.
fn unresolvable() -> LocalReply {
    LocalReply::new(503, "Service Unavailable").with("Warning", "399 sbc \"next hop did not resolve\"")
}
