//! Setting up a dialog pair (a call, or a subscription) from the request that starts it. Each
//! step is a small constructor that returns what it built or the reply to give instead: the
//! checks, the legs' sockets, the media anchor and the SDP, the caller's side, each leg, the
//! B-leg request. `start_dialog_pair` runs them in order and files the call.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use callcontrol::{CallEnd, EndedBy};
use profiles::{LocalReply, Snapshot};
use regcache::RegView;
use rtp_relay::Session;

use super::apply::{append, hop_target, CallRules};
use super::build::{self, copy_unowned_stripped, leg_contact, proxy_route, request_on_leg, without_tag, Strip};
use super::call::{Call, CallKind, CallState, Early, Leg, Side};
use super::cc::CallCc;
use super::invite::BRoute;
use super::media::{prepare_body, BodyError};
use super::resolve::Resolving;
use super::routing;
use super::session_timer::{self, LegTimer};
use super::txs::{Purpose, Resendable, TxRole};
use super::types::{Destination, Peer, SocketId, Source, Transport};
use super::{CallHandle, Counter, Engine, Event, Output, TxId};
use crate::sip::msg::{HeaderName, Message};
use crate::sip::transaction::TxKey;

/// A new request the engine has admitted (Max-Forwards checked, no loop): its transaction
/// key, the message, where it came from, the Max-Forwards the other leg gets one less of, the
/// configuration it is handled with (pinned when it arrived) and the registrations it may
/// read (`reg_lookup.rs`).
pub(super) struct NewRequest {
    pub(super) key: TxKey,
    pub(super) msg: Message,
    pub(super) src: Source,
    pub(super) max_forwards: u8,
    pub(super) snapshot: Arc<Snapshot>,
    pub(super) regs: RegView,
    /// An INVITE that waited for its registrations: the call's handle and its server
    /// transaction, made (and 100 sent) when it began to wait.
    pub(super) server: Option<(CallHandle, TxId)>,
}

impl NewRequest {
    pub(super) fn new(key: TxKey, msg: Message, src: Source, max_forwards: u8, snapshot: Arc<Snapshot>) -> Self {
        Self { key, msg, src, max_forwards, snapshot, regs: RegView::default(), server: None }
    }
}

/// A call that waited (for call control, or its registrations): its handle, the caller's
/// transaction (answered with 100 already) and the call-control state it takes over, if call
/// control has seen it.
pub(super) struct Parked {
    pub(super) call: CallHandle,
    pub(super) a_tx: TxId,
    pub(super) cc: Option<CallCc>,
}

/// The sockets the two legs use, and how each leg's Via names ours.
struct Sockets {
    /// The A leg's: the one the request came on, unless the profile names another interface.
    a_local: SocketId,
    a_sent_by: String,
    b_sent_by: String,
}

/// The caller's side of a new pair: the call's handle, its server transaction, our tag there.
pub(super) struct ASide {
    pub(super) handle: CallHandle,
    pub(super) a_tx: TxId,
    a_tag: Box<[u8]>,
    pub(super) cc: Option<CallCc>,
}

impl Engine {
    /// Creates the two legs of a new dialog pair from the request that starts it, with the
    /// profile applied, and sends that request on the B leg.
    pub(super) fn start_dialog_pair(
        &mut self,
        now: Instant,
        req: NewRequest,
        route: BRoute,
        kind: CallKind,
        rules: Arc<CallRules>,
        parked: Option<Parked>,
    ) {
        if route.named.is_some() {
            // Its next hops are names: resolved first, with the caller's transaction made now
            // (a 100 for an INVITE, its retransmissions absorbed).
            let mut req = req;
            let parked = match parked {
                Some(p) => p,
                None => {
                    let a = self.a_side(now, std::mem::take(&mut req.key), &req.msg, &req.src, kind, None);
                    Parked { call: a.handle, a_tx: a.a_tx, cc: a.cc }
                }
            };
            return self.await_targets(now, Resolving::Pair { req, kind, rules, parked }, route);
        }
        let mut route = match self.healthy_route(now, route) {
            Ok(r) => r,
            Err(reply) => return self.setup_failed(now, &req.msg, &req.src, parked.as_ref(), reply),
        };
        let NewRequest { key, msg, src, max_forwards, .. } = req;
        let checked = self.check_new_pair(&msg, &src, kind, &rules);
        let sst = match checked.and_then(|sst| Ok((sst, self.leg_sockets(&src, &route, &rules)?))) {
            Ok(ok) => ok,
            Err(reply) => return self.setup_failed(now, &msg, &src, parked.as_ref(), reply),
        };
        let (sst, sockets) = sst;
        let (media, body) = match self.anchor_offer(&msg, &src, kind, &rules, &sockets, &route) {
            Ok(ok) => ok,
            Err(reply) => return self.setup_failed(now, &msg, &src, parked.as_ref(), reply),
        };
        let a = self.a_side(now, key, &msg, &src, kind, parked);
        let span = tracing::info_span!("call", id = a.handle.get());
        let Sockets { a_local, a_sent_by, b_sent_by } = sockets;
        let a_leg = a_leg(&msg, &src, &rules, a_local, a_sent_by, a.a_tag);
        let (b_leg, transparent_ids) = self.b_leg(&msg, &rules, &route, b_sent_by, &a_leg, &body);
        let branch = self.ids.branch();
        let relay = self.relay_row(&rules.plan, &b_leg.call_id);
        // Replaces/Join/Target-Dialog naming a dialog of ours: mapped to the other leg (RFC
        // 3891, 3911, 4538).
        let dialog_refs = self.dialog_ref_rows(&msg);
        let extra = BRequestRows { relay, dialog_refs };
        let Some(b_request) = b_request(&msg, &rules, &b_leg, &sst, &body, &branch, max_forwards, extra) else {
            tracing::error!("generated B-leg request does not parse");
            self.respond_local(now, a.a_tx, &LocalReply::new(500, "Server Internal Error"));
            if a.cc.is_some() {
                let phrase = "Server Internal Error".into();
                let end = CallEnd {
                    by: EndedBy::Sbc,
                    code: 500,
                    phrase,
                    reason: "setup_failed".into(),
                    answered: false,
                    destination_ip: None,
                };
                self.announce_end(a.handle, end);
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
        let handle = a.handle;
        self.dialogs.insert(a_leg.local_tag.clone(), (handle, Side::A));
        self.dialogs.insert(b_leg.local_tag.clone(), (handle, Side::B));
        if !transparent_ids {
            // (A transparent Call-ID is the caller's: loops are caught by Max-Forwards then.)
            self.own_call_ids.insert(b_leg.call_id.clone());
        }
        let is_invite = kind == CallKind::Invite;
        let b_invite_cseq = b_request.cseq().map_or(1, |c| c.num);
        let b_purpose = if is_invite { Purpose::BInitialInvite } else { Purpose::RelayClient { peer: a.a_tx } };
        // The other next hops are failover alternatives for a call's INVITE.
        // A sips: call fails over to TLS hops only (unless sips_downgrade).
        let failover: Vec<(Transport, Peer)> = if is_invite { route.alternatives.clone() } else { Vec::new() };
        let named_alternatives = if is_invite { std::mem::take(&mut route.named_alternatives) } else { Vec::new() };
        let tls_only = route.tls_only;
        let b_invite = (!failover.is_empty()).then(|| b_request.clone());
        // Kept to answer a digest challenge or a 422 (the call is not in the table yet for the
        // transaction to find its rules).
        let for_auth = (rules.plan.auth.is_some() || sst[Side::B.idx()].is_some()).then(|| b_request.clone());
        // Kept for the call's credentials only (`auth.rs`): without them nothing asks.
        let b_dest = route.dest;
        let configured = rules.plan.auth.is_some() && self.is_configured_hop(&b_dest.peer, Some(&rules));
        let b_tx = self.start_client_tx(now, b_request, b_dest, TxRole::new(Some(handle), Side::B, b_purpose));
        if let (Some(req), Some(e)) = (for_auth, self.txs.get_mut(&b_tx)) {
            e.resendable = Some(Resendable::new(req, rules.plan.auth.clone(), configured));
        }
        if !is_invite {
            self.set_relay_peer(a.a_tx, b_tx);
        }
        if is_invite {
            self.cfg.admission.call_started(src.remote.ip());
        }
        let state = CallState::Early(Early {
            timer_c: is_invite.then(|| now + self.cfg.timer_c),
            // A subscription is bounded until its answer says for how long it lives.
            expires: (!is_invite).then(|| now + self.cfg.timers.t1x64()),
            reliable_1xx: None,
        });
        let (a_call_id, b_call_id) = (a_leg.call_id.clone(), b_leg.call_id.clone());
        let call = Call {
            handle,
            span,
            kind,
            rules,
            cc: a.cc,
            cause: None,
            failover,
            b_invite: b_invite.map(Box::new),
            state,
            legs: [a_leg, b_leg],
            a_ist: a.a_tx,
            b_invite_cseq,
            b_ict: b_tx,
            b_provisional: false,
            cancel_pending: false,
            invite_relays: Vec::new(),
            subscriptions: Vec::new(),
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
        };
        let pcap = call.rules.plan.pcap.as_deref().map(Into::into);
        self.calls.insert(handle, Box::new(call));
        self.stats.bump(Counter::CallsStarted);
        self.out.push_back(Output::Event(Event::CallStarted { call: handle, a_call_id, b_call_id, pcap }));
        self.reschedule_call(handle);
        self.resolve_alternatives(now, handle, named_alternatives, tls_only);
    }

    /// The reply for a pair that cannot be set up. A call parked for call control already
    /// has its transaction: the reply goes there, and call control hears that the call ended.
    fn setup_failed(&mut self, now: Instant, msg: &Message, src: &Source, parked: Option<&Parked>, reply: LocalReply) {
        match parked {
            Some(p) => {
                self.respond_local(now, p.a_tx, &reply);
                if p.cc.is_some() {
                    let (code, phrase) = (reply.code, reply.reason.into_owned());
                    let end = CallEnd {
                        by: EndedBy::Sbc,
                        code,
                        phrase,
                        reason: "setup_failed".into(),
                        answered: false,
                        destination_ip: None,
                    };
                    self.announce_end(p.call, end);
                }
            }
            None => self.refuse(msg, src, &reply),
        }
    }

    /// What a new pair must pass: the calls its source may hold, and for a call the caller's
    /// session interval. Returns the legs' session timers.
    fn check_new_pair(
        &self,
        msg: &Message,
        src: &Source,
        kind: CallKind,
        rules: &CallRules,
    ) -> Result<[Option<LegTimer>; 2], LocalReply> {
        if kind != CallKind::Invite {
            return Ok([None, None]);
        }
        // Calls a source may hold at once (issue 16): with the streams per call, this caps the
        // media ports one address can take too. Subscriptions (a phone's BLF keys) do not count.
        if !self.cfg.admission.may_start_call(src.remote.ip()) {
            tracing::debug!(source = %src.remote.ip(), "source has its calls already");
            return Err(LocalReply::new(503, "Service Unavailable").with("Retry-After", "5"));
        }
        // Session timers (RFC 4028): the caller's interval must not be below our Min-SE.
        if let Some(r) = &rules.profile.aleg_session_timer {
            session_timer::check_request(r, msg)?;
        }
        Ok([rules.profile.aleg_session_timer.map(LegTimer::new), rules.profile.session_timer.map(LegTimer::new)])
    }

    /// The legs' sockets: A on the interface the request came in on unless the profile names
    /// another, B where the route says.
    fn leg_sockets(&self, src: &Source, route: &BRoute, rules: &CallRules) -> Result<Sockets, LocalReply> {
        let a_local = match rules.plan.aleg_outbound_interface.as_deref() {
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
        match (self.cfg.socket(a_local), self.cfg.socket(route.dest.local)) {
            (Some(a), Some(b)) => Ok(Sockets { a_local, a_sent_by: a.sent_by(), b_sent_by: b.sent_by() }),
            _ => Err(LocalReply::new(500, "Server Internal Error")),
        }
    }

    /// A call's media session, when its profile relays media, and the body for the B leg:
    /// the profile's SDP rules applied and the streams anchored at the relay.
    fn anchor_offer<'m>(
        &mut self,
        msg: &'m Message,
        src: &Source,
        kind: CallKind,
        rules: &CallRules,
        sockets: &Sockets,
        route: &BRoute,
    ) -> Result<(Option<Session>, Cow<'m, [u8]>), LocalReply> {
        let iface_name = |id| self.cfg.interface_name(id).map(str::to_string);
        let (a_iface, b_iface) = (iface_name(sockets.a_local), iface_name(route.dest.local));
        let mut media = match (kind == CallKind::Invite, a_iface, b_iface) {
            (true, Some(a), Some(b)) => {
                match self.open_media(rules, msg, [&a, &b], [Some(src.remote.ip()), route.dest.peer.ip()]) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, profile = %rules.profile.name, "cannot relay media");
                        return Err(LocalReply::new(503, "Service Unavailable"));
                    }
                }
            }
            _ => None,
        };
        match prepare_body(rules, media.as_mut().zip(self.media.as_mut()), Side::B, &sockets.b_sent_by, msg.body()) {
            Ok(body) => Ok((media, body)),
            Err(e) => {
                self.discard_media(media);
                Err(match e {
                    BodyError::NothingLeft => LocalReply::new(488, "Not Acceptable Here"),
                    BodyError::Insecure(why) => {
                        tracing::info!(reason = why, "SRTP: the offer is refused");
                        LocalReply::new(488, "Not Acceptable Here")
                    }
                    BodyError::NoMedia(e) => {
                        tracing::warn!(error = %e, "no media ports for a new call");
                        LocalReply::new(503, "Service Unavailable")
                    }
                })
            }
        }
    }

    /// The caller's side: a parked call brings its own; otherwise a new handle, tag and server
    /// transaction (answered `100 Trying` for a call).
    pub(super) fn a_side(
        &mut self,
        now: Instant,
        key: TxKey,
        msg: &Message,
        src: &Source,
        kind: CallKind,
        parked: Option<Parked>,
    ) -> ASide {
        if let Some(p) = parked {
            let a_tag = self.txs.get(&p.a_tx).and_then(|e| e.to_tag.clone()).unwrap_or_else(|| self.ids.tag());
            return ASide { handle: p.call, a_tx: p.a_tx, a_tag, cc: p.cc };
        }
        let handle = self.new_call();
        let a_tag = self.ids.tag();
        // A call's INVITE has its own roles (Timer C, 100rel, ACK); a subscription's first
        // request is relayed like any in-dialog one, its responses mapped by relay_response.
        let is_invite = kind == CallKind::Invite;
        let purpose = if is_invite { Purpose::AInitialInvite } else { Purpose::RelayServer { peer: TxId::NONE } };
        let a_tx = self.new_server_tx(key, msg, src, TxRole::new(Some(handle), Side::A, purpose), Some(a_tag.clone()));
        if is_invite {
            self.respond_local(now, a_tx, &LocalReply::new(100, "Trying"));
        }
        ASide { handle, a_tx, a_tag, cc: None }
    }

    /// The B leg: new identifiers (or the caller's, with `transparent_dlg_id`), the profile's
    /// From, To, Request-URI and proxies. Also says whether the identifiers are the caller's.
    fn b_leg(
        &mut self,
        msg: &Message,
        rules: &CallRules,
        route: &BRoute,
        sent_by: String,
        a_leg: &Leg,
        body: &[u8],
    ) -> (Leg, bool) {
        let plan = &rules.plan;
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
        let (call_id, local_tag, local_cseq) = match transparent {
            Some(t) => t,
            None => {
                (plan.call_id.as_ref().map_or_else(|| self.ids.call_id(), |c| c.as_bytes().into()), self.ids.tag(), 1)
            }
        };
        let party = |v: &Option<String>, h: HeaderName| match v {
            Some(p) => p.as_bytes().into(),
            None => without_tag(msg.header_value(h).unwrap_or_default()),
        };
        let dest = route.dest.clone();
        let remote_target: Box<[u8]> =
            route.ruri.clone().unwrap_or_else(|| plan.ruri.as_ref().map_or(msg.request_uri(), |r| r.as_bytes()).into());
        let b_sips = routing::is_sips(&remote_target);
        let leg = Leg {
            call_id,
            local_tag,
            remote_tag: None,
            local_party: party(&plan.from, HeaderName::From),
            remote_party: party(&plan.to, HeaderName::To),
            local_cseq,
            remote_cseq: None,
            remote_target,
            // The outbound proxy routes the first request; the answer's Record-Route takes over
            // unless it is forced on every request.
            route_set: if force_proxy { Vec::new() } else { proxy_route(&plan.outbound_proxy).into_iter().collect() },
            transport: dest.transport,
            contact: leg_contact(&plan.bleg_contact, &sent_by, dest.transport, b_sips),
            dest,
            via_sent_by: sent_by.into_boxed_str(),
            target_is_source: false,
            fixed_dest: route.fixed.clone(),
            last_sdp: (!body.is_empty()).then(|| bytes::Bytes::copy_from_slice(body)),
            forced_route: if force_proxy { proxy_route(&plan.outbound_proxy) } else { None },
        };
        (leg, transparent_ids)
    }
}

/// The A leg, facing the caller, from its request, on our socket `local` (named `sent_by`).
fn a_leg(
    msg: &Message,
    src: &Source,
    rules: &CallRules,
    local: SocketId,
    sent_by: String,
    local_tag: Box<[u8]>,
) -> Leg {
    let plan = &rules.plan;
    // RFC 2543 peers may send no Contact (RFC 4475 §3.4.1): reach them where they are.
    let (remote_target, peer) = match msg.contact().filter(|c| c.uri != b"*") {
        Some(c) => {
            let peer = routing::target_of_uri(c.uri, src.transport).map_or(Peer::Addr(src.remote), |(_, p)| p);
            (Box::<[u8]>::from(c.uri), peer)
        }
        None => (msg.from_hdr().map(|f| f.uri.into()).unwrap_or_default(), Peer::Addr(src.remote)),
    };
    // NAT handling (docs/manual/access.md, NAT handling): a UA that sent directly to us (one
    // Via) is reached where it sent from, whatever private address its Contact names; its TCP
    // connection is reused.
    let behind_nat = rules.profile.dlg_nat_handling && build::single_via(msg) && plan.aleg_next_hop.is_none();
    let peer = if behind_nat { Peer::Addr(src.remote) } else { peer };
    Leg {
        call_id: msg.call_id().unwrap_or_default().into(),
        local_tag,
        remote_tag: msg.from_tag().map(Into::into),
        local_party: without_tag(msg.header_value(HeaderName::To).unwrap_or_default()),
        remote_party: without_tag(msg.header_value(HeaderName::From).unwrap_or_default()),
        local_cseq: 0,
        remote_cseq: msg.cseq().map(|c| c.num),
        remote_target,
        route_set: msg.values(HeaderName::RecordRoute).map(Into::into).collect(),
        transport: src.transport,
        dest: Destination {
            transport: src.transport,
            local,
            peer,
            conn: if local == src.local { src.conn } else { None },
        },
        contact: leg_contact(&plan.aleg_contact, &sent_by, src.transport, routing::is_sips(msg.request_uri())),
        via_sent_by: sent_by.into_boxed_str(),
        target_is_source: msg.contact().is_none() || behind_nat,
        fixed_dest: plan.aleg_next_hop.as_ref().map(hop_target),
        last_sdp: None,
        forced_route: if rules.profile.aleg_force_outbound_proxy {
            proxy_route(&plan.aleg_outbound_proxy)
        } else {
            None
        },
    }
}

/// Rows of the B leg's request the engine works out beside the profile's.
struct BRequestRows {
    /// The cluster's relay header (`peer_relay.rs`).
    relay: Option<String>,
    /// Replaces and Join, mapped to this leg (`replaces.rs`).
    dialog_refs: Vec<(&'static str, String)>,
}

/// The request that opens the B leg: the caller's, on the B leg's dialog, its rows filtered and
/// appended to as the profile says (and `extra`: the row naming a cluster peer's binding, the
/// mapped Replaces and Join). `None` if what was built does not parse.
#[allow(clippy::too_many_arguments)] // one request's parts, each from elsewhere
fn b_request(
    msg: &Message,
    rules: &CallRules,
    b_leg: &Leg,
    sst: &[Option<LegTimer>; 2],
    body: &[u8],
    branch: &[u8],
    max_forwards: u8,
    extra: BRequestRows,
) -> Option<Message> {
    let plan = &rules.plan;
    let mut w = request_on_leg(b_leg, msg.method_bytes(), b_leg.local_cseq, branch, max_forwards - 1);
    w.header("Contact", &b_leg.contact);
    let strip = Strip {
        timer: sst.iter().any(Option::is_some),
        // The SBC answers the callee side's challenges: the caller's credentials stay here.
        credentials: plan.auth.is_some(),
        ..Strip::default()
    };
    copy_unowned_stripped(&mut w, msg, rules.header_filter(), strip);
    for (n, v) in sst[Side::B.idx()].as_ref().map(LegTimer::request_rows).unwrap_or_default() {
        w.header(n, v.as_bytes());
    }
    append(&mut w, &plan.append_headers);
    append(&mut w, &plan.append_headers_req);
    if let Some(v) = extra.relay {
        w.header(crate::registrations::RELAY_HEADER, v.as_bytes());
    }
    for (name, value) in &extra.dialog_refs {
        w.header(name, value.as_bytes());
    }
    Message::parse(w.finish(body)).ok()
}
