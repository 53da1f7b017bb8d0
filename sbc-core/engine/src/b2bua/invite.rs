//! Call setup: the caller's initial INVITE is checked, gets its profile and route, and becomes
//! two legs. The callee's answers are in `answers.rs`, failover in `failover.rs`, the end of a
//! call in `teardown.rs`, its deadlines in `call_timers.rs`.

use std::sync::Arc;
use std::time::Instant;

use callcontrol::{CallEnd, EndedBy};
use profiles::LocalReply;

use super::apply::{append, hop_target, CallRules, Chosen};
use super::build::{self, copy_unowned_stripped, leg_contact, request_on_leg, without_tag, Strip};
use super::call::{Call, CallKind, CallState, Early, Leg, Side};
use super::cc::CallCc;
use super::media::{prepare_body, BodyError};
use super::routing;
use super::session_timer::{self, LegTimer};
use super::txs::{Purpose, Resendable};
use super::types::{Destination, Peer, Source, Transport};
use super::{CallHandle, Counter, Engine, Event, Output, TxId};
use crate::sip::msg::{trim, HeaderName, Message};
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
}

impl Engine {
    /// Checks every new (out-of-dialog) request must pass before anything is built for it:
    /// draining, Max-Forwards (RFC 3261 §16.3), and a Call-ID of ours coming back (a loop).
    /// Returns the Max-Forwards to use on the other leg.
    pub(super) fn admit_new_request(&self, msg: &Message) -> Result<u8, LocalReply> {
        if self.draining {
            return Err(LocalReply::new(503, "Service Unavailable").with("Retry-After", "30"));
        }
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
    /// configured next hop, or its Request-URI — from the profile's outbound interface.
    pub(super) fn route_new_request(&self, uri: &[u8], rules: &CallRules) -> Result<BRoute, LocalReply> {
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
        let (transport, peer, fixed) = if let Some(hop) = plan.next_hops.first() {
            let (t, p) = hop_target(hop);
            let fixed = (!rules.profile.next_hop_1st_req).then(|| (t, p.clone()));
            (t, p, fixed)
        } else if let Some(proxy) = &plan.outbound_proxy {
            let (t, p) = routing::target_of_uri(proxy.as_bytes(), Transport::Udp)?;
            (t, p, None)
        } else if let Some((t, p)) = &self.cfg.next_hop {
            (*t, p.clone(), Some((*t, p.clone())))
        } else {
            let (t, p) = routing::target_of_uri(uri, Transport::Udp)?;
            (t, p, None)
        };
        if routing::is_own_peer(&self.cfg, &peer) {
            return Err(LocalReply::new(482, "Loop Detected"));
        }
        let v6 = matches!(&peer, Peer::Addr(a) if a.is_ipv6());
        let socket = self
            .cfg
            .interfaces
            .get(iface)
            .and_then(|i| i.socket(transport, v6))
            .ok_or(LocalReply::new(503, "No Socket For Transport"))?;
        Ok(BRoute { dest: Destination { transport, local: socket.id, peer, conn: None }, fixed })
    }

    pub(super) fn on_initial_invite(&mut self, now: Instant, msg: Message, src: Source, key: TxKey) {
        if self.calls.len() + self.pending_cc.len() >= self.cfg.max_calls && !self.draining {
            return self.refuse(&msg, &src, &LocalReply::new(503, "Service Unavailable").with("Retry-After", "5"));
        }
        let max_forwards = match self.admit_new_request(&msg) {
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
        // The profile decides before anything else runs, as in SEMS (docs/manual/profiles.md, Profiles).
        let rules = match self.choose_profile(&msg, &src, true) {
            Chosen::Go(r) => r,
            Chosen::Refuse(reply) => return self.refuse(&msg, &src, &reply),
            Chosen::Fail => return self.refuse(&msg, &src, &LocalReply::new(500, "Server Internal Error")),
            Chosen::CallControl { snapshot, profile, chain } => {
                return self.start_call_control(now, key, msg, src, max_forwards, snapshot, profile, chain);
            }
        };
        let ruri = rules.plan.ruri.as_ref().map_or(msg.request_uri(), |r| r.as_bytes());
        let route = match self.route_new_request(ruri, &rules) {
            Ok(d) => d,
            Err(reply) => return self.refuse(&msg, &src, &reply),
        };
        self.start_dialog_pair(now, key, msg, src, route, max_forwards, CallKind::Invite, rules, None);
    }

    /// Creates the two legs of a new dialog pair (a call, or a subscription) from the request
    /// that starts it, with the profile applied, and sends that request on the B leg. A call
    /// that waited for call control (`parked`) brings its handle, its A-side transaction and
    /// the call-control state it takes over.
    #[allow(clippy::too_many_arguments)] // the request, where it goes, and what it starts
    pub(super) fn start_dialog_pair(
        &mut self,
        now: Instant,
        key: TxKey,
        msg: Message,
        src: Source,
        route: BRoute,
        max_forwards: u8,
        kind: CallKind,
        rules: Arc<CallRules>,
        parked: Option<(CallHandle, TxId, CallCc)>,
    ) {
        // A call parked for call control already has its transaction: errors are answered
        // there, and call control hears that the call ended.
        let fail = |me: &mut Self, msg: &Message, src: &Source, reply: LocalReply| match parked {
            Some((h, a_tx, _)) => {
                me.respond_local(now, a_tx, &reply);
                let (code, phrase) = (reply.code, reply.reason.into_owned());
                let end = CallEnd { by: EndedBy::Sbc, code, phrase, reason: "setup_failed".into(), answered: false };
                me.announce_end(h, end);
            }
            None => me.refuse(msg, src, &reply),
        };
        let is_invite = kind == CallKind::Invite;
        // Calls a source may hold at once (issue 16): with the streams per call, this caps the
        // media ports one address can take too. Subscriptions (a phone's BLF keys) do not count.
        if is_invite && !self.cfg.admission.may_start_call(src.remote.ip()) {
            tracing::debug!(source = %src.remote.ip(), "source has its calls already");
            return fail(self, &msg, &src, LocalReply::new(503, "Service Unavailable").with("Retry-After", "5"));
        }
        // Session timers (RFC 4028): the caller's interval must not be below our Min-SE.
        let sst = if is_invite {
            [rules.profile.aleg_session_timer.map(LegTimer::new), rules.profile.session_timer.map(LegTimer::new)]
        } else {
            [None, None]
        };
        if let Some(r) = &rules.profile.aleg_session_timer.filter(|_| is_invite) {
            match session_timer::check_request(r, &msg) {
                Ok(()) => {}
                Err(reply) => return fail(self, &msg, &src, reply),
            }
        }
        let b_dest = route.dest;
        let plan = &rules.plan;
        // A leg: the interface it arrived on, unless the profile names another.
        let a_local = match plan.aleg_outbound_interface.as_deref() {
            Some(name) if name != "default" => {
                let v6 = src.remote.is_ipv6();
                let sock =
                    self.cfg.interfaces.iter().find(|i| i.name == name).and_then(|i| i.socket(src.transport, v6));
                if sock.is_none() {
                    tracing::warn!(
                        interface = name,
                        "aleg_outbound_interface has no socket for this transport; ignored"
                    );
                }
                sock.map_or(src.local, |s| s.id)
            }
            _ => src.local,
        };
        let (Some(a_socket), Some(b_socket)) =
            (self.cfg.socket(a_local).cloned(), self.cfg.socket(b_dest.local).cloned())
        else {
            return fail(self, &msg, &src, LocalReply::new(500, "Server Internal Error"));
        };
        let b_sent_by = b_socket.sent_by();
        let iface_name = |me: &Self, id| me.cfg.interface_name(id).map(str::to_string);
        let (a_iface, b_iface) = (iface_name(self, a_local), iface_name(self, b_dest.local));
        let mut media = match (is_invite, a_iface, b_iface) {
            (true, Some(a), Some(b)) => {
                match self.open_media(&rules, &msg, [&a, &b], [Some(src.remote.ip()), b_dest.peer.ip()]) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, profile = %rules.profile.name, "cannot relay media");
                        return fail(self, &msg, &src, LocalReply::new(503, "Service Unavailable"));
                    }
                }
            }
            _ => None,
        };
        let body = match prepare_body(&rules, media.as_mut().zip(self.media.as_mut()), Side::B, &b_sent_by, msg.body())
        {
            Ok(b) => b,
            Err(e) => {
                self.discard_media(media);
                return match e {
                    BodyError::NothingLeft => fail(self, &msg, &src, LocalReply::new(488, "Not Acceptable Here")),
                    BodyError::NoMedia(e) => {
                        tracing::warn!(error = %e, "no media ports for a new call");
                        fail(self, &msg, &src, LocalReply::new(503, "Service Unavailable"))
                    }
                };
            }
        };
        let (handle, a_tx, a_tag, cc) = match parked {
            Some((h, a_tx, cc)) => {
                let tag = self.txs.get(&a_tx).and_then(|e| e.to_tag.clone()).unwrap_or_else(|| self.ids.tag());
                (h, a_tx, tag, Some(cc))
            }
            None => {
                let handle = self.new_call();
                let a_tag = self.ids.tag();
                // A call's INVITE has its own roles (Timer C, 100rel, ACK); a subscription's
                // first request is relayed like any in-dialog one, its responses mapped by
                // relay_response.
                let a_purpose =
                    if is_invite { Purpose::AInitialInvite } else { Purpose::RelayServer { peer: TxId::NONE } };
                let a_tx = self.new_server_tx(key, &msg, &src, Some(handle), Side::A, a_purpose, Some(a_tag.clone()));
                if is_invite {
                    self.respond_local(now, a_tx, &LocalReply::new(100, "Trying"));
                }
                (handle, a_tx, a_tag, None)
            }
        };
        let span = tracing::info_span!("call", id = handle.get());

        let a_sent_by = a_socket.sent_by();
        // RFC 2543 peers may send no Contact (RFC 4475 §3.4.1): reach them where they are.
        let (a_target, a_peer) = match msg.contact().filter(|c| c.uri != b"*") {
            Some(c) => {
                let peer = routing::target_of_uri(c.uri, src.transport).map_or(Peer::Addr(src.remote), |(_, p)| p);
                (Box::<[u8]>::from(c.uri), peer)
            }
            None => (msg.from_hdr().map(|f| f.uri.into()).unwrap_or_default(), Peer::Addr(src.remote)),
        };
        // NAT handling (docs/manual/access.md, NAT handling): a UA that sent directly to us (one
        // Via) is reached where it sent from, whatever private address its Contact names; its TCP
        // connection is reused.
        let behind_nat = rules.profile.dlg_nat_handling && build::single_via(&msg) && plan.aleg_next_hop.is_none();
        let a_peer = if behind_nat { Peer::Addr(src.remote) } else { a_peer };
        let a_target_is_source = msg.contact().is_none() || behind_nat;
        let proxy_route =
            |uri: &Option<String>| uri.as_ref().map(|u| format!("<{u};lr>").into_bytes().into_boxed_slice());
        let a_leg = Leg {
            call_id: msg.call_id().unwrap_or_default().into(),
            local_tag: a_tag,
            remote_tag: msg.from_tag().map(Into::into),
            local_party: without_tag(msg.header_value(HeaderName::To).unwrap_or_default()),
            remote_party: without_tag(msg.header_value(HeaderName::From).unwrap_or_default()),
            local_cseq: 0,
            remote_cseq: msg.cseq().map(|c| c.num),
            remote_target: a_target,
            route_set: msg.values(HeaderName::RecordRoute).map(Into::into).collect(),
            transport: src.transport,
            dest: Destination {
                transport: src.transport,
                local: a_local,
                peer: a_peer,
                conn: if a_local == src.local { src.conn } else { None },
            },
            contact: leg_contact(&plan.aleg_contact, &a_sent_by, src.transport),
            via_sent_by: a_sent_by.into_boxed_str(),
            target_is_source: a_target_is_source,
            fixed_dest: plan.aleg_next_hop.as_ref().map(hop_target),
            last_sdp: None,
            forced_route: if rules.profile.aleg_force_outbound_proxy {
                proxy_route(&plan.aleg_outbound_proxy)
            } else {
                None
            },
        };
        let party = |v: &Option<String>, h: HeaderName| match v {
            Some(p) => p.as_bytes().into(),
            None => without_tag(msg.header_value(h).unwrap_or_default()),
        };
        let force_proxy = rules.profile.force_outbound_proxy;
        // transparent_dlg_id: the callee sees the caller's dialog identifiers.
        // (Not when the caller's tag is missing or already names a leg here: two dialogs
        // would share one key.)
        let transparent = a_leg
            .remote_tag
            .clone()
            .filter(|t| rules.profile.transparent_dlg_id && !t.is_empty() && !self.dialogs.contains_key(t))
            .map(|tag| (a_leg.call_id.clone(), tag, a_leg.remote_cseq.unwrap_or(1)));
        let transparent_ids = transparent.is_some();
        let (b_call_id, b_tag, b_cseq) = match transparent {
            Some(t) => t,
            None => {
                (plan.call_id.as_ref().map_or_else(|| self.ids.call_id(), |c| c.as_bytes().into()), self.ids.tag(), 1)
            }
        };
        let b_leg = Leg {
            call_id: b_call_id,
            local_tag: b_tag,
            remote_tag: None,
            local_party: party(&plan.from, HeaderName::From),
            remote_party: party(&plan.to, HeaderName::To),
            local_cseq: b_cseq,
            remote_cseq: None,
            remote_target: plan.ruri.as_ref().map_or(msg.request_uri(), |r| r.as_bytes()).into(),
            // The outbound proxy routes the first request; the answer's Record-Route takes over
            // unless it is forced on every request.
            route_set: if force_proxy { Vec::new() } else { proxy_route(&plan.outbound_proxy).into_iter().collect() },
            transport: b_dest.transport,
            dest: b_dest.clone(),
            contact: leg_contact(&plan.bleg_contact, &b_sent_by, b_dest.transport),
            via_sent_by: b_sent_by.into_boxed_str(),
            target_is_source: false,
            fixed_dest: route.fixed,
            last_sdp: (!body.is_empty()).then(|| bytes::Bytes::copy_from_slice(&body)),
            forced_route: if force_proxy { proxy_route(&plan.outbound_proxy) } else { None },
        };

        let branch = self.ids.branch();
        let mut w = request_on_leg(&b_leg, msg.method_bytes(), b_cseq, &branch, max_forwards - 1);
        w.header("Contact", &b_leg.contact);
        let strip = Strip {
            timer: sst.iter().any(Option::is_some),
            // The SBC answers the callee side's challenges: the caller's credentials stay here.
            credentials: plan.auth.is_some(),
            ..Strip::default()
        };
        copy_unowned_stripped(&mut w, &msg, rules.header_filter(), strip);
        for (n, v) in sst[Side::B.idx()].as_ref().map(LegTimer::request_rows).unwrap_or_default() {
            w.header(n, v.as_bytes());
        }
        append(&mut w, &plan.append_headers);
        append(&mut w, &plan.append_headers_req);
        let Ok(b_request) = Message::parse(w.finish(&body)) else {
            tracing::error!("generated B-leg request does not parse");
            self.respond_local(now, a_tx, &LocalReply::new(500, "Server Internal Error"));
            if cc.is_some() {
                let end = CallEnd {
                    by: EndedBy::Sbc,
                    code: 500,
                    phrase: "Server Internal Error".into(),
                    reason: "setup_failed".into(),
                    answered: false,
                };
                self.announce_end(handle, end);
            }
            self.discard_media(media);
            return;
        };
        {
            let _e = span.enter();
            tracing::info!(
                method = %String::from_utf8_lossy(msg.method_bytes()),
                profile = %rules.profile.name,
                from = %String::from_utf8_lossy(&b_leg.local_party),
                ruri = %String::from_utf8_lossy(&b_leg.remote_target),
                a_call_id = %String::from_utf8_lossy(&a_leg.call_id),
                b_call_id = %String::from_utf8_lossy(&b_leg.call_id),
                "call started"
            );
        }
        self.dialogs.insert(a_leg.local_tag.clone(), (handle, Side::A));
        self.dialogs.insert(b_leg.local_tag.clone(), (handle, Side::B));
        if !transparent_ids {
            // (A transparent Call-ID is the caller's: loops are caught by Max-Forwards then.)
            self.own_call_ids.insert(b_leg.call_id.clone());
        }
        let b_invite_cseq = b_request.cseq().map_or(1, |c| c.num);
        let b_purpose = if is_invite { Purpose::BInitialInvite } else { Purpose::RelayClient { peer: a_tx } };
        // The other next hops are failover alternatives for a call's INVITE.
        let failover: Vec<(Transport, Peer)> =
            if is_invite { rules.plan.next_hops.iter().skip(1).map(hop_target).collect() } else { Vec::new() };
        let b_invite = (!failover.is_empty()).then(|| b_request.clone());
        // Kept to answer a digest challenge or a 422 (the call is not in the table yet for the
        // transaction to find its rules).
        let for_auth = (rules.plan.auth.is_some() || sst[Side::B.idx()].is_some()).then(|| b_request.clone());
        // Kept for the call's credentials only (`auth.rs`): without them nothing asks.
        let configured = rules.plan.auth.is_some() && self.is_configured_hop(&b_dest.peer, Some(&rules));
        let b_tx = self.start_client_tx(now, b_request, b_dest, Some(handle), Side::B, b_purpose);
        if let (Some(req), Some(e)) = (for_auth, self.txs.get_mut(&b_tx)) {
            e.resendable = Some(Resendable::new(req, rules.plan.auth.clone(), configured));
        }
        if !is_invite {
            self.set_relay_peer(a_tx, b_tx);
        }
        if is_invite {
            self.cfg.admission.call_started(src.remote.ip());
        }
        self.calls.insert(
            handle,
            Box::new(Call {
                handle,
                span,
                kind,
                rules,
                cc,
                cause: None,
                failover,
                b_invite: b_invite.map(Box::new),
                state: CallState::Early(Early {
                    timer_c: is_invite.then(|| now + self.cfg.timer_c),
                    // A subscription is bounded until its answer says for how long it lives.
                    expires: (!is_invite).then(|| now + self.cfg.timers.t1x64()),
                    reliable_1xx: None,
                }),
                legs: [a_leg, b_leg],
                a_ist: a_tx,
                b_invite_cseq,
                b_ict: b_tx,
                b_provisional: false,
                cancel_pending: false,
                invite_relays: Vec::new(),
                offer_pending: None,
                rseq_map: Vec::new(),
                next_a_rseq: 1,
                started: now,
                media: media.map(Box::new),
                dialog_limits: Default::default(),
                b_via_configured_hop: configured,
                a_source: src.remote.ip(),
                sst,
                scheduled: None,
            }),
        );
        self.stats.bump(Counter::CallsStarted);
        self.out.push_back(Output::Event(Event::CallStarted { call: handle }));
        self.reschedule_call(handle);
    }
}
