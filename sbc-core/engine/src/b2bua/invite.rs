//! Call setup and teardown: the caller's initial INVITE becomes two legs, the callee's
//! responses travel back, CANCEL and the call timers end what must end.

use profiles::LocalReply;
use std::time::Instant;

use std::sync::Arc;

use callcontrol::{CallEnd, EndedBy};

use super::apply::{append, hop_target, CallRules, Chosen};
use super::build::{self, copy_unowned_stripped, leg_contact, request_on_leg, without_tag, Strip};
use super::call::{Call, CallKind, CallState, InviteRelay, Leg, Reliable1xx, Side};
use super::cc::{CallCc, CcRequest};
use super::media::{prepare_body, BodyError};
use super::routing;
use super::session_timer::{self, LegTimer};
use super::txs::{Purpose, Resendable};
use super::types::{Destination, LocalSocket, Peer, SocketId, Source, Transport};
use super::{CallHandle, Counter, Engine, Event, Output, TimerRef, TxId};
use crate::sip::msg::{parse_u32, trim, HeaderName, Message, MessageWriter};
use crate::sip::transaction::{cancelled_invite_key, TxKey};

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
                bye_from: None,
                cause: None,
                failover,
                b_invite: b_invite.map(Box::new),
                state: CallState::Early,
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
                reliable_1xx: None,
                started: now,
                answered: None,
                timer_c: is_invite.then(|| now + self.cfg.timer_c),
                // A subscription is bounded until its answer says for how long it lives.
                max_duration: (!is_invite).then(|| now + self.cfg.timers.t1x64()),
                hard_end: None,
                media: media.map(Box::new),
                dialog_limits: Default::default(),
                b_via_configured_hop: configured,
                a_source: src.remote.ip(),
                media_check: None,
                sst,
                scheduled: None,
            }),
        );
        self.stats.bump(Counter::CallsStarted);
        self.out.push_back(Output::Event(Event::CallStarted { call: handle }));
        self.reschedule_call(handle);
    }

    /// A response to our initial INVITE on the B leg.
    pub(super) fn on_b_invite_response(&mut self, now: Instant, h: CallHandle, msg: Message) {
        let Some(code) = msg.status() else { return };
        let timer_c = self.cfg.timer_c;
        let Some(call) = self.calls.get_mut(&h) else {
            return;
        };
        if code < 200 {
            call.b_provisional = true;
            if call.state == CallState::Early {
                call.timer_c = Some(now + timer_c);
            }
            if call.cancel_pending {
                call.cancel_pending = false;
                self.send_cancel(now, h);
                return;
            }
            if code == 100 || call.state != CallState::Early {
                return;
            }
            let first_tag = call.leg(Side::B).remote_tag.is_none();
            learn_remote(call.leg_mut(Side::B), &msg, false);
            if first_tag {
                self.adopt_callee_tag(h);
            }
            let Some(call) = self.calls.get_mut(&h) else {
                return;
            };
            let mut rseq = None;
            if msg.lists_option(HeaderName::Require, b"100rel") {
                let Some(b_rseq) = msg.header_value(HeaderName::RSeq).and_then(parse_u32) else {
                    return;
                };
                if call.rseq_map.iter().any(|(_, b)| *b == b_rseq) {
                    return; // the callee retransmits until it gets our PRACK
                }
                let a_rseq = call.next_a_rseq;
                call.next_a_rseq += 1;
                call.rseq_map.push((a_rseq, b_rseq));
                rseq = Some(a_rseq);
            }
            let a_ist = call.a_ist;
            let reliable_udp = rseq.is_some() && call.leg(Side::A).transport == Transport::Udp;
            if let Some(bytes) = self.forward_response(now, a_ist, Some(h), Side::A, &msg, rseq) {
                if let (true, Some(a_rseq), Some(call)) = (reliable_udp, rseq, self.calls.get_mut(&h)) {
                    let t1 = self.cfg.timers.t1;
                    call.reliable_1xx = Some(Box::new(Reliable1xx {
                        bytes,
                        a_rseq,
                        next: now + t1,
                        interval: t1,
                        give_up: now + t1 * 64,
                    }));
                }
            }
            self.reschedule_call(h);
            return;
        }
        if code < 300 {
            if call.state == CallState::Ending {
                // Answered after the caller cancelled (a CANCEL crossing the 200, Timer C):
                // acknowledge and hang up this answer, whichever fork sent it.
                let b_ict = call.b_ict;
                self.kill_orphan_2xx(now, b_ict, &msg);
                self.end_call(now, h, 487, "cancelled");
                return;
            }
            if call.state == CallState::Confirmed && msg.to_tag() != call.leg(Side::B).remote_tag.as_deref() {
                // A second fork answered: this SBC keeps one dialog (RFC 3261 §13.2.2.4).
                let b_ict = call.b_ict;
                self.kill_orphan_2xx(now, b_ict, &msg);
                return;
            }
            if call.state != CallState::Early {
                // A retransmitted 2xx: repeat our ACK if the caller has acknowledged already.
                let b_cseq = msg.cseq().map_or(0, |c| c.num);
                let ack = call.invite_relays.iter().find(|r| r.client_cseq == b_cseq).and_then(|r| r.ack.clone());
                if let Some(ack) = ack {
                    let dest = self.leg_dest(h, Side::B);
                    if let Some(dest) = dest {
                        self.send_raw(dest, ack);
                    }
                }
                return;
            }
            let first_tag = call.leg(Side::B).remote_tag.is_none();
            learn_remote(call.leg_mut(Side::B), &msg, false);
            if first_tag {
                self.adopt_callee_tag(h);
            }
            let Some(call) = self.calls.get_mut(&h) else {
                return;
            };
            let a_ist = call.a_ist;
            // The caller's ACK carries the CSeq of its INVITE (PRACKs may have moved its CSeq on).
            let a_invite_cseq =
                self.txs.get(&a_ist).and_then(|e| e.request.as_ref()).and_then(Message::cseq).map_or(0, |c| c.num);
            if !self.ist_open(a_ist) {
                // The caller is gone (cancelled or answered with an error): hang up the callee.
                self.ack_and_bye(now, h);
                self.end_call(now, h, 487, "cancelled");
                return;
            }
            let Some(call) = self.calls.get_mut(&h) else {
                return;
            };
            call.state = CallState::Confirmed;
            call.answered = Some(now);
            call.timer_c = None;
            call.reliable_1xx = None;
            self.sst_answered(now, h, Side::B, &msg);
            let Some(call) = self.calls.get_mut(&h) else {
                return;
            };
            if call.media.is_some() {
                let first = self.first_media_check(now);
                if let Some(call) = self.calls.get_mut(&h) {
                    call.media_check = first;
                }
            }
            let Some(call) = self.calls.get_mut(&h) else {
                return;
            };
            if !self.cfg.max_call_duration.is_zero() {
                call.max_duration = Some(now + self.cfg.max_call_duration);
            }
            if let Some(cc) = call.cc.as_mut() {
                // Call timers run from the answer; the shortest limit wins.
                if let Some(at) = cc.call_timer.and_then(|t| now.checked_add(t)) {
                    if call.max_duration.is_none_or(|m| at <= m) {
                        call.max_duration = Some(at);
                        cc.timer_armed = true;
                    }
                }
                self.out.push_back(Output::CallControl(CcRequest::Connect { call: h }));
            }
            let Some(call) = self.calls.get_mut(&h) else {
                return;
            };
            call.invite_relays.push(InviteRelay {
                server_side: Side::A,
                server_cseq: a_invite_cseq,
                server_tx: a_ist,
                client_cseq: call.b_invite_cseq,
                ack: None,
            });
            {
                let _e = call.span.enter();
                tracing::info!(code, "call answered");
            }
            self.forward_response(now, a_ist, Some(h), Side::A, &msg, None);
            self.stats.bump(Counter::CallsAnswered);
            self.out.push_back(Output::Event(Event::CallAnswered { call: h }));
            self.reschedule_call(h);
            return;
        }
        // 503 from a next hop that has alternatives: try the next one (RFC 3263 §4.3).
        if code == 503 && self.fail_over(now, h) {
            return;
        }
        let Some(call) = self.calls.get(&h) else {
            return;
        };
        // 3xx–6xx: the transaction has ACKed it; relay it and the call is over.
        let a_ist = call.a_ist;
        if self.ist_open(a_ist) {
            self.forward_response(now, a_ist, Some(h), Side::A, &msg, None);
        }
        self.end_call(now, h, code, "rejected");
    }

    /// Our INVITE got no final response (Timer B) or could not be sent.
    pub(super) fn on_b_invite_timeout(&mut self, now: Instant, h: CallHandle, transport_failed: bool) {
        if self.fail_over(now, h) {
            return;
        }
        let Some(call) = self.calls.get(&h) else {
            return;
        };
        let a_ist = call.a_ist;
        let reply = if transport_failed {
            LocalReply::new(503, "Service Unavailable")
        } else {
            LocalReply::new(408, "Request Timeout")
        };
        if self.ist_open(a_ist) {
            self.respond_local(now, a_ist, &reply);
        }
        self.end_call(now, h, reply.code, if transport_failed { "unreachable" } else { "timeout" });
    }

    /// transparent_dlg_id: the caller gets the callee's To tag as ours, so both ends see one
    /// set of dialog identifiers. Done once, at the first tagged response.
    fn adopt_callee_tag(&mut self, h: CallHandle) {
        let Some(call) = self.calls.get_mut(&h) else { return };
        if !call.rules.profile.transparent_dlg_id {
            return;
        }
        let Some(tag) = call.leg(Side::B).remote_tag.clone() else { return };
        if self.dialogs.contains_key(&tag) {
            return; // the two ends chose the same tag: keep ours
        }
        let old = std::mem::replace(&mut call.leg_mut(Side::A).local_tag, tag.clone());
        let a_ist = call.a_ist;
        self.dialogs.remove(&old);
        self.dialogs.insert(tag.clone(), (h, Side::A));
        if let Some(e) = self.txs.get_mut(&a_ist) {
            e.to_tag = Some(tag);
        }
    }

    /// Sends the B leg's INVITE to the next `next_hop` alternative, if the call is still
    /// waiting for its first answer and one is left. Same dialog (Call-ID, tags), a new
    /// transaction with the next CSeq.
    fn fail_over(&mut self, now: Instant, h: CallHandle) -> bool {
        let Some(call) = self.calls.get_mut(&h) else {
            return false;
        };
        if call.state != CallState::Early || call.b_provisional || call.failover.is_empty() {
            return false;
        }
        let Some(old) = call.b_invite.take() else {
            return false;
        };
        let current = call.leg(Side::B).dest.local;
        let alternatives = std::mem::take(&mut call.failover);
        // The first alternative this interface has a socket for; the rest stay for later.
        let mut rest = alternatives.into_iter();
        let Some((transport, peer, local)) =
            rest.by_ref().find_map(|(t, p)| self.socket_for(current, t, &p).map(|local| (t, p, local)))
        else {
            return false;
        };
        let rest: Vec<(Transport, Peer)> = rest.collect();
        if let Some(call) = self.calls.get_mut(&h) {
            call.failover = rest;
        }
        let Some(sent_by) = self.cfg.socket(local).map(LocalSocket::sent_by) else {
            return false;
        };
        let branch = self.ids.branch();
        let Some(call) = self.calls.get_mut(&h) else {
            return false;
        };
        let contact = leg_contact(&call.rules.plan.bleg_contact, &sent_by, transport);
        let leg = call.leg_mut(Side::B);
        leg.local_cseq += 1;
        let cseq = leg.local_cseq;
        let dest = Destination { transport, local, peer: peer.clone(), conn: None };
        leg.transport = transport;
        leg.dest = dest.clone();
        if leg.fixed_dest.is_some() {
            leg.fixed_dest = Some((transport, peer));
        }
        leg.contact = contact.clone();
        leg.via_sent_by = sent_by.clone().into_boxed_str();
        // The callee's media is now expected from the new next hop's host.
        if let (Some(media), Some(book)) = (call.media.as_mut(), self.media.as_mut()) {
            media.set_signalling(book, Side::B.idx(), dest.peer.ip());
        }
        let mut w = MessageWriter::request(b"INVITE", old.request_uri());
        build::write_via(&mut w, transport, &sent_by, &branch);
        for row in old.headers() {
            match row.name {
                // The writer adds its own Content-Length.
                HeaderName::Via | HeaderName::ContentLength => {}
                HeaderName::CSeq => {
                    w.header_fmt("CSeq", format_args!("{cseq} INVITE"));
                }
                HeaderName::Contact => {
                    w.header("Contact", &contact);
                }
                // Answers to the previous hop's challenges are not the next hop's business.
                _ if super::auth::is_credentials_row(&old, row) => {}
                _ => {
                    w.copy_row(&old, row);
                }
            }
        }
        let Ok(next) = Message::parse(w.finish(old.body())) else {
            return false;
        };
        {
            let _e = call.span.enter();
            tracing::info!(to = %dest.peer, transport = %transport, "B leg failing over to the next hop");
        }
        call.b_invite_cseq = cseq;
        if !call.failover.is_empty() {
            call.b_invite = Some(Box::new(next.clone()));
        }
        let id = self.start_client_tx(now, next, dest, Some(h), Side::B, Purpose::BInitialInvite);
        if let Some(call) = self.calls.get_mut(&h) {
            call.b_ict = id;
        }
        true
    }

    pub(super) fn on_cancel(&mut self, now: Instant, msg: Message, src: Source, key: TxKey) {
        let target = cancelled_invite_key(&msg).and_then(|k| self.tx_keys.get(&k).copied());
        let Some(ist) = target else {
            return self.no_such_dialog(now, &msg, &src);
        };
        let (purpose, call) = self.txs.get(&ist).map(|e| (e.purpose, e.call)).unwrap_or((Purpose::Local, None));
        let id = self.new_server_tx(key, &msg, &src, None, Side::A, Purpose::Local, None);
        self.respond_local(now, id, &LocalReply::new(200, "OK"));
        if !self.ist_open(ist) {
            return;
        }
        match (purpose, call) {
            (Purpose::AInitialInvite, Some(h)) => {
                self.respond_local(now, ist, &LocalReply::new(487, "Request Terminated"));
                if let Some(call) = self.calls.get_mut(&h) {
                    call.cause.get_or_insert("cancelled");
                }
                self.cancel_b(now, h);
            }
            (Purpose::RelayServer { peer }, _) => {
                // A cancelled re-INVITE: cancel ours; the callee's 487 is relayed back.
                if let Some(req) = self.client_request(peer) {
                    let bytes = build::cancel_for(req);
                    let dest = self.txs.get(&peer).map(|e| e.dest.clone());
                    if let (Ok(m), Some(dest)) = (Message::parse(bytes), dest) {
                        self.start_client_tx(now, m, dest, call, Side::B, Purpose::Detached);
                    }
                }
            }
            _ => self.respond_local(now, ist, &LocalReply::new(487, "Request Terminated")),
        }
    }

    /// Stops the B-leg INVITE: CANCEL now if a provisional came, else as soon as one does.
    fn cancel_b(&mut self, now: Instant, h: CallHandle) {
        if self.cancel_pending(h) {
            return; // still waiting for call control: there is no B leg yet
        }
        let t1x64 = self.cfg.timers.t1x64();
        let Some(call) = self.calls.get_mut(&h) else {
            return;
        };
        call.state = CallState::Ending;
        call.timer_c = None;
        call.reliable_1xx = None;
        // If the callee never answers the INVITE, give up on it after 64*T1 (RFC 3261 §9.1).
        call.hard_end = Some(now + t1x64);
        if call.b_provisional {
            self.send_cancel(now, h);
        } else {
            call.cancel_pending = true;
        }
        self.reschedule_call(h);
    }

    fn send_cancel(&mut self, now: Instant, h: CallHandle) {
        let Some(call) = self.calls.get(&h) else {
            return;
        };
        if !self.ict_pending(call.b_ict) {
            return;
        }
        let Some(bytes) = self.client_request(call.b_ict).map(build::cancel_for) else { return };
        let dest = self.txs.get(&call.b_ict).map(|e| e.dest.clone());
        if let (Ok(m), Some(dest)) = (Message::parse(bytes), dest) {
            self.start_client_tx(now, m, dest, Some(h), Side::B, Purpose::Detached);
        }
    }

    /// Ends a call from the inside (timers, lost ACK, operator): BYE on established legs,
    /// an error and CANCEL on a call still being set up.
    pub(super) fn tear_down(&mut self, now: Instant, h: CallHandle, code: u16, reason: &'static str) {
        let Some(call) = self.calls.get(&h) else {
            return;
        };
        if call.kind == CallKind::Subscription {
            // A subscription has nothing to hang up: both ends let it expire.
            return self.end_call(now, h, code, reason);
        }
        match call.state {
            CallState::Early => {
                let a_ist = call.a_ist;
                if let Some(call) = self.calls.get_mut(&h) {
                    call.cause.get_or_insert(reason);
                }
                if self.ist_open(a_ist) {
                    self.respond_local(now, a_ist, &LocalReply::new(code, reason_text(code)));
                }
                self.cancel_b(now, h);
            }
            CallState::Confirmed => {
                self.send_bye(now, h, Side::A, reason);
                self.send_bye(now, h, Side::B, reason);
                self.end_call(now, h, code, reason);
            }
            CallState::Ending => self.end_call(now, h, code, reason),
        }
    }

    fn send_bye(&mut self, now: Instant, h: CallHandle, side: Side, reason: &str) {
        let branch = self.ids.branch();
        let Some(call) = self.calls.get_mut(&h) else {
            return;
        };
        let rules = call.rules.clone();
        let leg = call.leg_mut(side);
        leg.local_cseq += 1;
        let mut w = request_on_leg(leg, b"BYE", leg.local_cseq, &branch, 70);
        w.header_fmt("Reason", format_args!("SIP;cause=200;text=\"{reason}\""));
        append(&mut w, rules.appended_on(side));
        let bytes = w.finish(b"");
        let credentials = match side {
            Side::B => rules.plan.auth.clone(),
            Side::A => rules.plan.aleg_auth.clone(),
        };
        if let (Ok(m), Some(dest)) = (Message::parse(bytes), self.leg_dest(h, side)) {
            let keep = credentials.is_some().then(|| m.clone());
            let configured = keep.is_some() && self.to_configured_hop(Some(h), side, &dest.peer, Some(&rules));
            let id = self.start_client_tx(now, m, dest, None, side, Purpose::Detached);
            // The call is gone by the answer; a challenge to this BYE is still answered.
            if let (Some(m), Some(e)) = (keep, self.txs.get_mut(&id)) {
                e.resendable = Some(Resendable::new(m, credentials, configured));
            }
        }
    }

    /// ACK and BYE for a 2xx that arrived after the caller gave up.
    fn ack_and_bye(&mut self, now: Instant, h: CallHandle) {
        let (ack_branch, bye_branch) = (self.ids.branch(), self.ids.branch());
        let Some(call) = self.calls.get_mut(&h) else {
            return;
        };
        let invite_cseq = call.b_invite_cseq;
        let rules = call.rules.clone();
        let leg = call.leg_mut(Side::B);
        let mut ack = request_on_leg(leg, b"ACK", invite_cseq, &ack_branch, 70);
        append(&mut ack, rules.appended_on(Side::B));
        let ack = ack.finish(b"");
        leg.local_cseq = leg.local_cseq.max(invite_cseq) + 1;
        let mut bye = request_on_leg(leg, b"BYE", leg.local_cseq, &bye_branch, 70);
        append(&mut bye, rules.appended_on(Side::B));
        let bye = bye.finish(b"");
        if let Some(dest) = self.leg_dest(h, Side::B) {
            self.send_raw(dest.clone(), ack);
            if let Ok(m) = Message::parse(bye) {
                self.start_client_tx(now, m, dest, None, Side::B, Purpose::Detached);
            }
        }
    }

    /// A 2xx to one of our INVITEs whose call no longer exists: acknowledge it and hang up,
    /// so the callee is not left with a zombie call.
    pub(super) fn kill_orphan_2xx(&mut self, now: Instant, ict: TxId, resp: &Message) {
        let Some((leg, dest, cseq)) = self.dialog_of_2xx(ict, resp) else { return };
        let ack = request_on_leg(&leg, b"ACK", cseq, &self.ids.branch(), 70).finish(b"");
        let bye = request_on_leg(&leg, b"BYE", cseq + 1, &self.ids.branch(), 70).finish(b"");
        self.send_raw(dest.clone(), ack);
        if let Ok(m) = Message::parse(bye) {
            self.start_client_tx(now, m, dest, None, Side::B, Purpose::Detached);
        }
    }

    /// Acknowledges a 2xx nobody is waiting for, without ending its dialog (a re-INVITE answer
    /// that arrived after we gave up on it: the call itself goes on).
    pub(super) fn ack_only_2xx(&mut self, ict: TxId, resp: &Message) {
        let Some((leg, dest, cseq)) = self.dialog_of_2xx(ict, resp) else { return };
        let ack = request_on_leg(&leg, b"ACK", cseq, &self.ids.branch(), 70).finish(b"");
        self.send_raw(dest, ack);
    }

    /// The dialog a 2xx to one of our INVITEs establishes, rebuilt from the 2xx alone (it
    /// echoes our From, Call-ID, CSeq and Via), with where to send requests on it.
    fn dialog_of_2xx(&self, ict: TxId, resp: &Message) -> Option<(Leg, Destination, u32)> {
        let dest = self.txs.get(&ict).map(|e| e.dest.clone())?;
        let mut routes: Vec<Box<[u8]>> = resp.values(HeaderName::RecordRoute).map(Into::into).collect();
        routes.reverse();
        let cseq = resp.cseq().map_or(1, |c| c.num);
        let contact = resp.contact().map(|c| Box::<[u8]>::from(c.uri));
        let leg = Leg {
            call_id: resp.call_id().unwrap_or_default().into(),
            local_tag: resp.from_tag().unwrap_or_default().into(),
            remote_tag: resp.to_tag().map(Into::into),
            local_party: without_tag(resp.header_value(HeaderName::From).unwrap_or_default()),
            remote_party: without_tag(resp.header_value(HeaderName::To).unwrap_or_default()),
            local_cseq: cseq,
            remote_cseq: None,
            // Without a Contact, the To URI is the best Request-URI left; the ACK and BYE go where
            // the INVITE went anyway (dest below).
            target_is_source: contact.is_none(),
            remote_target: contact
                .or_else(|| resp.to_hdr().map(|t| Box::<[u8]>::from(t.uri)))
                .unwrap_or_else(|| Box::from(&b"sip:invalid"[..])),
            route_set: routes,
            transport: dest.transport,
            dest: dest.clone(),
            contact: Box::default(),
            fixed_dest: None,
            forced_route: None,
            last_sdp: None,
            via_sent_by: resp.top_via().map_or_else(Default::default, |v| {
                let host = String::from_utf8_lossy(v.host);
                match v.port {
                    Some(p) => format!("{host}:{p}"),
                    None => host.into_owned(),
                }
                .into_boxed_str()
            }),
        };
        let dest = if leg.target_is_source || self.cfg.next_hop.is_some() {
            dest
        } else {
            let uri = match &leg.forced_route {
                Some(r) => crate::sip::msg::NameAddr::parse(r).map_or(&leg.remote_target[..], |n| n.uri),
                None => routing::next_hop_uri(&leg.route_set, &leg.remote_target),
            };
            match routing::target_of_uri(uri, dest.transport) {
                Ok((transport, peer)) if transport == dest.transport => Destination { peer, conn: None, ..dest },
                _ => dest,
            }
        };
        Some((leg, dest, cseq))
    }

    /// Forgets a call: its dialogs stop matching, its B Call-ID stops counting as ours.
    pub(super) fn end_call(&mut self, now: Instant, h: CallHandle, code: u16, reason: &'static str) {
        // A call can end before its INVITE did (a BYE on an early dialog): close both sides so
        // neither transaction waits for ever.
        if let Some((a_ist, b_ict, provisional)) = self.calls.get(&h).map(|c| (c.a_ist, c.b_ict, c.b_provisional)) {
            if self.ist_open(a_ist) {
                self.respond_local(now, a_ist, &LocalReply::new(487, "Request Terminated"));
            }
            if provisional && self.ict_pending(b_ict) {
                self.send_cancel(now, h);
            }
        }
        let Some(mut call) = self.calls.remove(&h) else {
            return;
        };
        if let (Some(session), Some(book)) = (call.media.as_mut(), self.media.as_mut()) {
            session.close(book);
        }
        if call.kind == CallKind::Invite {
            self.cfg.admission.call_ended(call.a_source);
        }
        // A call being torn down (cancel, Timer C) ends with the final answer of the callee,
        // but for the reason it was torn down.
        let reason = call.cause.unwrap_or(reason);
        for leg in &call.legs {
            self.dialogs.remove(&leg.local_tag);
        }
        self.own_call_ids.remove(&call.leg(Side::B).call_id);
        let duration_ms = call.answered.map_or(0, |a| now.saturating_duration_since(a).as_millis() as u64);
        let total_ms = now.saturating_duration_since(call.started).as_millis() as u64;
        {
            let _e = call.span.enter();
            tracing::info!(code, reason, duration_ms, total_ms, "call ended");
        }
        self.stats.bump(Counter::CallsEnded);
        self.out.push_back(Output::Event(Event::CallEnded {
            call: h,
            code,
            reason,
            profile: call.rules.profile.name.clone(),
            answered: call.answered.is_some(),
        }));
        if call.cc.is_some() {
            let by = super::cc::ended_by(reason, call.bye_from);
            let answered = call.answered.is_some();
            let code = if answered { 200 } else { code };
            let phrase = reason_text(code).to_string();
            self.announce_end(h, CallEnd { by, code, phrase, reason: reason.to_string(), answered });
        }
    }

    pub(super) fn reschedule_call(&mut self, h: CallHandle) {
        let Some(call) = self.calls.get_mut(&h) else {
            return;
        };
        let next = call.next_deadline();
        if next.is_some() && next != call.scheduled {
            call.scheduled = next;
            if let Some(at) = next {
                self.schedule(at, TimerRef::Call(h));
            }
        }
    }

    pub(super) fn call_timeout(&mut self, now: Instant, h: CallHandle, at: Instant) {
        let Some(call) = self.calls.get_mut(&h) else {
            return;
        };
        if call.scheduled != Some(at) {
            return;
        }
        call.scheduled = None;
        if call.hard_end.is_some_and(|t| t <= now) {
            let b_ict = call.b_ict;
            self.forget_tx(b_ict);
            self.end_call(now, h, 487, "cancel_unanswered");
            return;
        }
        if call.timer_c.is_some_and(|t| t <= now) {
            call.timer_c = None;
            let _e = call.span.clone().entered();
            tracing::info!("Timer C expired, cancelling");
            self.tear_down(now, h, 408, "timer_c");
            self.reschedule_call(h);
            return;
        }
        let sst_due = [Side::A, Side::B]
            .into_iter()
            .find(|s| call.sst[s.idx()].as_ref().and_then(|t| t.due).is_some_and(|d| d <= now));
        if let Some(side) = sst_due {
            self.sst_due(now, h, side);
            self.reschedule_call(h);
            return;
        }
        if call.media_check.is_some_and(|t| t <= now) {
            self.media_check(now, h);
            if !self.calls.contains_key(&h) {
                return;
            }
            self.reschedule_call(h);
            return;
        }
        if call.max_duration.is_some_and(|t| t <= now) {
            call.max_duration = None;
            if call.kind == CallKind::Subscription {
                // Expired without refresh: both sides drop it by the same rule (RFC 6665 §4.1.2.2).
                self.end_call(now, h, 408, "subscription_expired");
            } else {
                let reason = if call.cc.is_some_and(|c| c.timer_armed) { "call_timer" } else { "max_call_duration" };
                self.tear_down(now, h, 200, reason);
            }
            return;
        }
        let a_ist = call.a_ist;
        if let Some(r) = call.reliable_1xx.as_mut().filter(|r| r.next <= now) {
            if now >= r.give_up {
                call.reliable_1xx = None;
            } else {
                let bytes = r.bytes.clone();
                r.interval *= 2;
                r.next = now + r.interval;
                if let Some(dest) = self.txs.get(&a_ist).map(|e| e.dest.clone()) {
                    self.send_raw(dest, bytes);
                }
            }
        }
        self.reschedule_call(h);
    }

    /// Where requests on a leg go now: next hop (B leg, if configured), route set, or target.
    pub(super) fn leg_dest(&self, h: CallHandle, side: Side) -> Option<Destination> {
        let leg = self.calls.get(&h)?.leg(side);
        {
            if let Some((t, p)) = &leg.fixed_dest {
                let local = self.socket_for(leg.dest.local, *t, p)?;
                return Some(Destination { transport: *t, local, peer: p.clone(), conn: None });
            }
        }
        if leg.target_is_source {
            return Some(leg.dest.clone());
        }
        let uri = match &leg.forced_route {
            Some(r) => crate::sip::msg::NameAddr::parse(r).map_or(&leg.remote_target[..], |n| n.uri),
            None => routing::next_hop_uri(&leg.route_set, &leg.remote_target),
        };
        let (transport, peer) =
            routing::target_of_uri(uri, leg.transport).unwrap_or((leg.transport, leg.dest.peer.clone()));
        let local = self.socket_for(leg.dest.local, transport, &peer)?;
        let conn = if transport == Transport::Tcp { leg.dest.conn } else { None };
        Some(Destination { transport, local, peer, conn })
    }

    /// A socket of the same interface as `local` for `transport` (and the peer's family).
    fn socket_for(&self, local: SocketId, transport: Transport, peer: &Peer) -> Option<SocketId> {
        if self.cfg.socket(local).is_some_and(|s| s.transport == transport) {
            return Some(local);
        }
        let iface = self.cfg.interface_of(local)?;
        Some(self.cfg.interfaces.get(iface)?.socket(transport, matches!(peer, Peer::Addr(a) if a.is_ipv6()))?.id)
    }
}

/// Updates a leg from a dialog-creating or target-refresh response: remote tag, target (its
/// Contact) and, for the first one, the route set (Record-Route reversed, RFC 3261 §12.1.2).
pub(super) fn learn_remote(leg: &mut Leg, msg: &Message, target_only: bool) {
    if let Some(c) = msg.contact().filter(|c| c.uri != b"*") {
        leg.remote_target = c.uri.into();
    }
    if target_only {
        return;
    }
    if let Some(tag) = msg.to_tag() {
        if leg.remote_tag.as_deref() != Some(tag) {
            leg.remote_tag = Some(tag.into());
            let mut routes: Vec<Box<[u8]>> = msg.values(HeaderName::RecordRoute).map(Into::into).collect();
            routes.reverse();
            leg.route_set = routes;
        }
    }
}

fn reason_text(code: u16) -> &'static str {
    crate::sip::msg::reason_phrase(code)
}
