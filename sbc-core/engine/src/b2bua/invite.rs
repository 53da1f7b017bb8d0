//! Call setup: the caller's initial INVITE is checked, gets its profile and route, and becomes
//! two legs. The callee's answers are in `answers.rs`, failover in `failover.rs`, the end of a
//! call in `teardown.rs`, its deadlines in `call_timers.rs`.

use std::time::Instant;

use profiles::LocalReply;

use super::apply::{hop_target, CallRules, Chosen};
use super::call::CallKind;
use super::reg_lookup::Waiting;
use super::resolve::{hop_query, uri_query, TargetQuery};
use super::routing;
use super::setup::{NewRequest, Parked};
use super::types::{Destination, Peer, Source, Transport};
use super::Engine;
use crate::sip::msg::{trim, Message};
use crate::sip::transaction::TxKey;

/// Content types the SBC understands in an INVITE (it will anchor media from SDP).
fn acceptable_body(msg: &Message) -> bool {
    if msg.body().is_empty() {
        return true;
    }
    let ct = msg.content_type().unwrap_or(b"application/sdp");
    let ct = trim(ct.split(|&c| c == b';').next().unwrap_or_default());
    ct.eq_ignore_ascii_case(b"application/sdp") || ct.len() >= 10 && ct[..10].eq_ignore_ascii_case(b"multipart/")
}

/// Where the first request of a new B leg goes, and where the leg's later requests must go
/// whatever its route set says (a next hop that is not only for the first request).
pub(super) struct BRoute {
    pub(super) dest: Destination,
    pub(super) fixed: Option<(Transport, Peer)>,
    /// The B leg's Request-URI when routing changed it (a `sips:` call downgraded).
    pub(super) ruri: Option<Box<[u8]>>,
    /// Only TLS hops may take over (a `sips:` call without `sips_downgrade`).
    pub(super) tls_only: bool,
    /// The interface the B leg leaves from (its sockets serve resolved targets).
    pub(super) interface: usize,
    /// The profile's other next hops, in order: a call's failover alternatives.
    pub(super) alternatives: Vec<(Transport, Peer)>,
    /// `dest` is a host name: resolved before the request leaves (`resolve.rs`).
    pub(super) named: Option<TargetQuery>,
    /// Alternatives that are host names: resolved once the call is on its way.
    pub(super) named_alternatives: Vec<TargetQuery>,
    /// `dest` is the Request-URI's host (a caller chose it: few of its targets are tried).
    pub(super) from_request: bool,
}

impl BRoute {
    /// Sends to `peer` over `transport` from socket `local` instead; a route fixed for the
    /// whole dialog (`next_hop` not only for the first request) follows.
    pub(super) fn retarget(&mut self, transport: Transport, peer: Peer, local: super::types::SocketId) {
        if self.fixed.is_some() {
            self.fixed = Some((transport, peer.clone()));
        }
        self.dest = Destination { transport, local, peer, conn: None };
    }
}

impl Engine {
    /// Checks every new (out-of-dialog) request must pass before anything is built for it:
    /// draining, Max-Forwards (RFC 3261 §16.3), and a Call-ID of ours coming back (a loop).
    /// Returns the Max-Forwards to use on the other leg.
    pub(super) fn admit_new_request(&self, msg: &Message, src: &Source) -> Result<u8, LocalReply> {
        if self.draining {
            return Err(LocalReply::new(503, "Service Unavailable").with("Retry-After", "30"));
        }
        routing::sips_arrival(msg, src)?;
        let max_forwards = match msg.max_forwards() {
            Some(Ok(0)) => return Err(LocalReply::new(483, "Too Many Hops")),
            Some(Ok(n)) => n,
            _ => 70,
        };
        if msg.call_id().is_some_and(|c| self.own_call_ids.contains(c)) {
            return Err(LocalReply::new(482, "Loop Detected"));
        }
        Ok(max_forwards)
    }

    /// Where a new outgoing request goes: the profile's next hop or outbound proxy, the
    /// configured next hop, or its Request-URI — from the profile's outbound interface. A
    /// request that came to `inbound`, a `sips:` URI, leaves over TLS only (`routing.rs`).
    pub(super) fn route_new_request(
        &self,
        inbound: &[u8],
        uri: &[u8],
        rules: &CallRules,
    ) -> Result<BRoute, LocalReply> {
        let plan = &rules.plan;
        let iface = match plan.outbound_interface.as_deref() {
            None | Some("default") => self.cfg.outbound_interface,
            Some(name) => self
                .cfg
                .interfaces
                .iter()
                .position(|i| i.name == name)
                .ok_or(LocalReply::new(500, "Unknown Outbound Interface"))?,
        };
        let (transport, peer, fixed, query, from_request) = if let Some(hop) = plan.next_hops.first() {
            let (t, p) = hop_target(hop);
            let fixed = (!rules.profile.next_hop_1st_req).then(|| (t, p.clone()));
            (t, p, fixed, hop_query(hop), false)
        } else if let Some(proxy) = &plan.outbound_proxy {
            let (t, p) = routing::target_of_uri(proxy.as_bytes(), Transport::Udp)?;
            (t, p, None, uri_query(proxy.as_bytes()), false)
        } else if let Some((t, p)) = &self.cfg.next_hop {
            (*t, p.clone(), Some((*t, p.clone())), None, false)
        } else {
            let (t, p) = routing::target_of_uri(uri, Transport::Udp)?;
            (t, p, None, uri_query(uri), true)
        };
        if routing::is_own_peer(&self.cfg, &peer) {
            return Err(LocalReply::new(482, "Loop Detected"));
        }
        // Failover of a sips: call takes TLS hops only, downgrade or not: the downgrade is for
        // the route the profile chose, not for whatever a failure leads to.
        let tls_only = routing::is_sips(inbound) || routing::is_sips(uri);
        let downgrade = rules.profile.sips_downgrade;
        // A name whose transport NAPTR picks: a sips: call that may not be downgraded takes
        // its TLS targets only; the socket for any other is chosen once it is known.
        let query = query.map(|mut q| {
            q.secure |= q.transport.is_none() && tls_only && !downgrade;
            q
        });
        let pending = query.as_ref().filter(|q| q.transport.is_none());
        let transport = if pending.is_some_and(|q| q.secure) { Transport::Tls } else { transport };
        let interface = self.cfg.interfaces.get(iface);
        let socket = interface
            .and_then(|i| i.socket(transport, peer.is_ipv6()))
            .or_else(|| interface.and_then(|i| i.sockets.first()).filter(|_| pending.is_some()))
            .ok_or(LocalReply::new(503, "No Socket For Transport"))?;
        let ruri = routing::sips_onward(inbound, uri, transport, downgrade)?;
        if ruri.is_some() {
            tracing::warn!(to = %peer, %transport, "sips: call downgraded (sips_downgrade)");
        }
        let mut named_alternatives = Vec::new();
        let mut alternatives = Vec::new();
        for hop in plan.next_hops.iter().skip(1) {
            let (t, p) = hop_target(hop);
            // A hop's transport is only known once a name without one is resolved (NAPTR).
            let query = hop_query(hop).map(|mut q| {
                q.secure |= q.transport.is_none() && tls_only;
                q
            });
            if tls_only && t != Transport::Tls && query.as_ref().is_none_or(|q| q.transport.is_some()) {
                continue;
            }
            if let Some(q) = query.filter(|q| !named_alternatives.contains(q)) {
                named_alternatives.push(q);
            }
            alternatives.push((t, p));
        }
        let dest = Destination { transport, local: socket.id, peer, conn: None };
        let named = query;
        Ok(BRoute {
            dest,
            fixed,
            ruri,
            tls_only,
            interface: iface,
            alternatives,
            named,
            named_alternatives,
            from_request,
        })
    }

    pub(super) fn on_initial_invite(&mut self, now: Instant, msg: Message, src: Source, key: TxKey) {
        if self.active_calls() >= self.cfg.max_calls && !self.draining {
            return self.refuse(&msg, &src, &LocalReply::new(503, "Service Unavailable").with("Retry-After", "5"));
        }
        let max_forwards = match self.admit_new_request(&msg, &src) {
            Ok(mf) => mf,
            Err(reply) => return self.refuse(&msg, &src, &reply),
        };
        if !acceptable_body(&msg) {
            return self.refuse(
                &msg,
                &src,
                &LocalReply::new(415, "Unsupported Media Type").with("Accept", "application/sdp"),
            );
        }
        let snapshot = self.cfg.profiles.load();
        let req = NewRequest::new(key, msg, src, max_forwards, snapshot);
        self.look_up_registrations(now, Waiting::New(req));
    }

    /// A new INVITE with its registrations at hand (`reg_lookup.rs`).
    pub(super) fn invite_with_registrations(&mut self, now: Instant, req: NewRequest) {
        // The profile decides before anything else runs, as in SEMS (docs/manual/profiles.md, Profiles).
        let rules = match self.choose_profile(&req, true) {
            Chosen::Go(r) => r,
            Chosen::Refuse(reply) => return self.refuse_invite(now, &req, &reply),
            Chosen::Fail => return self.refuse_invite(now, &req, &LocalReply::new(500, "Server Internal Error")),
            Chosen::CallControl(cc) => return self.start_call_control(now, req, cc),
        };
        let ruri = rules.plan.ruri.as_ref().map_or(req.msg.request_uri(), |r| r.as_bytes());
        let route = match self.route_new_request(req.msg.request_uri(), ruri, &rules) {
            Ok(d) => d,
            Err(reply) => return self.refuse_invite(now, &req, &reply),
        };
        let parked = req.server.map(|(call, a_tx)| Parked { call, a_tx, cc: None });
        self.start_dialog_pair(now, req, route, CallKind::Invite, rules, parked);
    }

    /// Refuses a new INVITE: through its transaction if it has one (it waited for its
    /// registrations and heard 100), else without one.
    pub(super) fn refuse_invite(&mut self, now: Instant, req: &NewRequest, reply: &LocalReply) {
        match req.server {
            Some((_, a_tx)) => self.respond_local(now, a_tx, reply),
            None => self.refuse(&req.msg, &req.src, reply),
        }
    }
}
