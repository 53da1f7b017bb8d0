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

/// A Request-URI's host is the caller's choice: at most this many of its targets are tried
/// (its first and two more), so one INVITE cannot send the SBC round many hosts.
const REQUEST_TARGETS: usize = 3;

/// A call's alternatives being resolved while its INVITE is on its way.
pub(super) struct Backfill {
    call: CallHandle,
    queries: Vec<TargetQuery>,
    tls_only: bool,
}

impl Engine {
    /// Parks `what` until the name of its route's destination is resolved, and asks the
    /// driver. (Named alternatives are resolved later, once the call is on its way:
    /// [`Engine::resolve_alternatives`].)
    pub(super) fn await_targets(&mut self, now: Instant, what: Resolving, route: BRoute) {
        let Some(query) = route.named.clone() else { return self.go_on_resolved(now, what, route) };
        let ticket = ResolveTicket(self.new_id());
        if matches!(what, Resolving::Pair { .. }) {
            self.awaiting_calls += 1;
        }
        self.awaiting_targets.insert(ticket, AwaitingTargets { what, route });
        self.schedule(now + RESOLVE_DEADLINE, TimerRef::Targets(ticket));
        self.out.push_back(Output::Resolve { ticket, queries: vec![query] });
    }

    /// Asks for the targets of call `call`'s named alternatives; they replace the names in
    /// its failover list when they come (a failover before then resolves a name alone).
    pub(super) fn resolve_alternatives(
        &mut self,
        now: Instant,
        call: CallHandle,
        queries: Vec<TargetQuery>,
        tls_only: bool,
    ) {
        if queries.is_empty() {
            return;
        }
        let ticket = ResolveTicket(self.new_id());
        self.backfills.insert(ticket, Backfill { call, queries: queries.clone(), tls_only });
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
        if let Some(b) = self.backfills.remove(&ticket) {
            return self.backfill(b, answers);
        }
        let Some(AwaitingTargets { what, route }) = self.stop_resolving(ticket) else { return };
        let open = match &what {
            Resolving::Pair { parked, .. } => self.txs.contains_key(&parked.a_tx),
            Resolving::Relay { server, .. } => self.txs.contains_key(server),
        };
        if !open {
            // Its transaction ended while it waited (a transport error): call control, if it
            // saw the call, hears that it is over.
            if let Resolving::Pair { parked: Parked { call, a_tx, cc: Some(_) }, .. } = what {
                self.refuse_started(now, call, a_tx, unresolvable(), "no_route");
            }
            return;
        }
        let targets = answers.into_iter().next().unwrap_or_default();
        match self.resolved_route(route, targets) {
            Ok(route) => self.go_on_resolved(now, what, route),
            Err(reply) => self.resolving_failed(now, what, reply),
        }
    }

    /// The deadline of a resolution: what waits is answered 503, a late answer ignored.
    pub(super) fn targets_late(&mut self, now: Instant, ticket: ResolveTicket) {
        if self.backfills.remove(&ticket).is_some() {
            return; // the names stay names: a failover resolves them one by one
        }
        let Some(AwaitingTargets { what, .. }) = self.stop_resolving(ticket) else { return };
        tracing::warn!(ticket = ticket.0, "next hop name not resolved in time");
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

    /// `route` with its named destination replaced by the first of its usable `targets`, the
    /// others put first among the alternatives. A target needs a socket of its transport on
    /// the route's interface and must not be one of ours.
    fn resolved_route(&self, mut route: BRoute, targets: Vec<Target>) -> Result<BRoute, LocalReply> {
        let Some(query) = route.named.take() else { return Ok(route) };
        let iface = self.cfg.interfaces.get(route.interface);
        let mut usable: Vec<(Transport, Peer, u16)> = Vec::new();
        let mut ours = false;
        for t in targets {
            let peer = Peer::Named { host: query.host.clone(), addr: t.addr };
            if routing::is_own_peer(&self.cfg, &peer) {
                ours = true;
                continue;
            }
            if let Some(s) = iface.and_then(|i| i.socket(t.transport, t.addr.is_ipv6())) {
                usable.push((t.transport, peer, s.id));
            }
        }
        if route.from_request {
            usable.truncate(REQUEST_TARGETS);
        }
        let mut usable = usable.into_iter();
        let Some((transport, peer, local)) = usable.next() else {
            if ours {
                return Err(LocalReply::new(482, "Loop Detected"));
            }
            // The next hops after it may do: the route goes on with them.
            let mut rest = std::mem::take(&mut route.alternatives).into_iter();
            let (transport, peer) = rest.next().ok_or_else(unresolvable)?;
            let socket = iface.and_then(|i| i.socket(transport, peer.is_ipv6())).ok_or_else(unresolvable)?;
            route.retarget(transport, peer, socket.id);
            route.alternatives = rest.collect();
            if let Some(q) = route.named_alternatives.iter().find(|q| host_is(&route.dest.peer, &q.host)) {
                route.named = Some(q.clone());
            }
            // (A named one is resolved in its turn.)
            return Ok(route);
        };
        route.retarget(transport, peer, local);
        let mut alternatives: Vec<(Transport, Peer)> = usable.map(|(t, p, _)| (t, p)).collect();
        alternatives.append(&mut route.alternatives);
        route.alternatives = alternatives;
        Ok(route)
    }

    /// The targets of a call's named alternatives, in place of the names in its failover list.
    fn backfill(&mut self, b: Backfill, answers: Vec<Vec<Target>>) {
        let Backfill { call, queries, tls_only } = b;
        let Some(current) = self.calls.get(&call).map(|c| c.leg(super::call::Side::B).dest.local) else {
            return;
        };
        let Some(failover) = self.calls.get(&call).map(|c| c.failover.clone()) else { return };
        let mut filled = Vec::with_capacity(failover.len());
        for (transport, peer) in failover {
            let Some(at) = queries.iter().position(|q| host_is(&peer, &q.host)) else {
                filled.push((transport, peer));
                continue;
            };
            for t in answers.get(at).into_iter().flatten() {
                let named = Peer::Named { host: queries[at].host.clone(), addr: t.addr };
                let tls_ok = !tls_only || t.transport == Transport::Tls;
                let ours = routing::is_own_peer(&self.cfg, &named);
                let fits = tls_ok && !ours && self.socket_for(current, t.transport, &named).is_some();
                if fits && !filled.contains(&(t.transport, named.clone())) {
                    filled.push((t.transport, named));
                }
            }
        }
        if let Some(c) = self.calls.get_mut(&call) {
            c.failover = filled;
        }
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

/// Whether `peer` is the (unresolved) host `host`.
fn host_is(peer: &Peer, host: &str) -> bool {
    matches!(peer, Peer::Host(h, _) if h.eq_ignore_ascii_case(host))
}

/// No usable target: as a transport failure to the next hop would be answered.
fn unresolvable() -> LocalReply {
    LocalReply::new(503, "Service Unavailable").with("Warning", "399 sbc \"next hop did not resolve\"")
}
