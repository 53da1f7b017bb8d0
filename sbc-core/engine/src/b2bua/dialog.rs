//! In-dialog traffic: requests from either leg are re-issued on the other leg's dialog, their
//! responses travel back, the end-to-end ACK is mapped, PRACK's RAck is translated, re-INVITE
//! and UPDATE glare is refused with 491.

use std::time::Instant;

use bytes::Bytes;
use callcontrol::LegEvent;
use profiles::filters::translate_reply;
use profiles::LocalReply;

use super::answers::learn_remote;
use super::apply::{append, CallRules};
use super::build::{
    copy_unowned, copy_unowned_if, copy_unowned_stripped, request_on_leg, response_head, single_via, Strip,
};
use super::call::{CallKind, CallState, InviteRelay, Side};
use super::cc::party;
use super::dialog_subs;
use super::media::{anchor_or_reject, offer_refusal, prepare_body_anyway};
use super::register::keeps_in_register_ok;
use super::session_timer;
use super::txs::{Purpose, TxRole};
use super::types::{Destination, Peer, Source};
use super::{CallHandle, Engine, TxId};
use crate::sip::msg::{parse_rack, parse_u32, reason_phrase, trim, CSeq, HeaderName, Message, Method};
use crate::sip::transaction::TxKey;
use rtp_relay::srtp::negotiation::Role;

/// The Allow of a 405 for a method the profile's message filter refuses (as SEMS sends it).
const FILTER_ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, PRACK, INFO, UPDATE, NOTIFY, REFER";

/// INVITE exchanges remembered per call for ACK mapping (the initial one and recent re-INVITEs).
const MAX_INVITE_RELAYS: usize = 4;

/// Longest subscription the SBC keeps without a refresh, whatever the two ends say.
const MAX_SUBSCRIPTION_S: u32 = 86_400;

/// Methods whose Contact refreshes the remote target (RFC 3261 §12.2, RFC 3311, RFC 6665).
fn is_target_refresh(m: Method) -> bool {
    matches!(m, Method::Invite | Method::Update | Method::Subscribe | Method::Notify | Method::Refer)
}

impl Engine {
    pub(super) fn on_in_dialog(&mut self, now: Instant, msg: Message, src: Source, key: TxKey) {
        let method = msg.method().unwrap_or(Method::Other);
        let found = msg.to_tag().and_then(|t| self.dialogs.get(t)).copied();
        // Call-ID and both tags must match (RFC 3261 §12.2.2): a forger who learnt our tag
        // still needs the peer's. A leg whose peer has no tag yet (a NOTIFY before the 2xx to
        // its SUBSCRIBE) takes the one the request brings.
        let Some((h, side)) = found.filter(|(h, side)| {
            self.calls.get(h).is_some_and(|c| {
                let leg = c.leg(*side);
                Some(&*leg.call_id) == msg.call_id()
                    && leg.remote_tag.as_deref().is_none_or(|t| Some(t) == msg.from_tag())
            })
        }) else {
            return self.no_such_dialog(now, &msg, &src);
        };
        let Some(call) = self.calls.get_mut(&h) else {
            return;
        };
        let cseq = msg.cseq().map_or(0, |c| c.num);
        if call.state.is_ending() && method != Method::Bye {
            return self.refuse(&msg, &src, &LocalReply::new(481, "Call/Transaction Does Not Exist"));
        }
        let rules = call.rules.clone();
        // enable_bleg_uas_auth: the callee proves who it is on every request
        // (docs/manual/access.md, Digest authentication).
        if let (Side::B, Some(creds)) = (side, rules.plan.bleg_uas_auth.as_ref()) {
            if let Err(challenge) = self.check_uas_auth(now, creds, &msg) {
                let reply = LocalReply::new(401, "Unauthorized").with("WWW-Authenticate", challenge);
                return self.refuse(&msg, &src, &reply);
            }
        }
        let Some(call) = self.calls.get_mut(&h) else {
            return;
        };
        // The profile's method filter, for calls (never ACK, CANCEL or BYE: a call must be able
        // to end). Subscription dialogs carry NOTIFYs, which it does not govern (as in SEMS).
        if let Some(f) = rules.profile.message_filter.as_ref().filter(|_| call.kind == CallKind::Invite) {
            let exempt = matches!(method, Method::Ack | Method::Cancel | Method::Bye);
            if !exempt && !f.allows(&String::from_utf8_lossy(msg.method_bytes())) {
                return self.refuse(
                    &msg,
                    &src,
                    &LocalReply::new(405, "Method Not Allowed").with("Allow", FILTER_ALLOW),
                );
            }
        }
        // SDP towards the other leg goes through the profile; an offer left with no media is
        // answered here (RFC 3264: 488).
        let out_body = if matches!(method, Method::Invite | Method::Update | Method::Prack) {
            // Filtered now (an offer left with nothing is refused before anything changes);
            // anchored below, once the request is sure to be relayed.
            let filtered = match rules.filter_body(side.other(), &call.leg(side.other()).via_sent_by, msg.body()) {
                Ok(b) => b,
                Err(_) => return self.refuse(&msg, &src, &LocalReply::new(488, "Not Acceptable Here")),
            };
            // An offer the legs' SRTP policies refuse whole is refused here, before it closes
            // the media the call has.
            let refusal = match (&call.media, method) {
                (Some(session), Method::Invite | Method::Update) => offer_refusal(session, side.other(), &filtered),
                _ => None,
            };
            if let Some(why) = refusal {
                call.span.in_scope(|| tracing::info!(reason = why, ?method, "SRTP: the re-offer is refused"));
                if let Some(book) = self.media.as_mut() {
                    book.insecure_refused += 1;
                }
                return self.refuse(&msg, &src, &LocalReply::new(488, "Not Acceptable Here"));
            }
            filtered
        } else {
            std::borrow::Cow::Borrowed(msg.body())
        };
        if call.leg(side).remote_cseq.is_some_and(|r| cseq < r) {
            return self.refuse(&msg, &src, &LocalReply::new(500, "CSeq Out Of Order"));
        }
        // A call must always be able to end: BYE is never limited (ACK and CANCEL do not
        // come here).
        if method != Method::Bye {
            if let Err(why) = call.dialog_limits.check(now) {
                call.span.in_scope(|| tracing::debug!(why, ?method, "in-dialog request over the dialog's limits"));
                return self.refuse(&msg, &src, &super::OVER_RATE);
            }
        }
        // A NOTIFY inside a call belongs to a subscription made in it, its `id` as the
        // subscriber knows it (`dialog_subs.rs`); one that belongs to none is refused if the
        // profile says so (SEMS's allow_subless_notify=no).
        let mut event_row = None;
        if method == Method::Notify && call.kind == CallKind::Invite {
            match dialog_subs::notify_of(&call.subscriptions, side, &msg) {
                Some(i) => {
                    event_row = dialog_subs::mapped_event(&call.subscriptions[i], &msg);
                    if dialog_subs::ends_subscription(&msg) {
                        call.subscriptions.remove(i);
                    }
                }
                None if rules.profile.refuse_subless_notify => {
                    return self.refuse(&msg, &src, &LocalReply::new(481, "Subscription Does Not Exist"));
                }
                None => {}
            }
        }
        call.leg_mut(side).remote_cseq = Some(cseq);
        // A NOTIFY may arrive before the 2xx to its SUBSCRIBE (RFC 6665 §4.1.2.4): it creates
        // the dialog on that leg — the notifier's tag and its route set (UAS order).
        if call.kind == CallKind::Subscription && method == Method::Notify && call.leg(side).remote_tag.is_none() {
            let leg = call.leg_mut(side);
            leg.remote_tag = msg.from_tag().map(Into::into);
            leg.route_set = msg.values(HeaderName::RecordRoute).map(Into::into).collect();
        }
        let max_forwards = match msg.max_forwards() {
            Some(Ok(0)) => return self.refuse(&msg, &src, &LocalReply::new(483, "Too Many Hops")),
            Some(Ok(n)) => n,
            _ => 70,
        };
        // A refresh on a leg with session timers: its interval must not be below our Min-SE.
        let timer_rules = call.sst[side.idx()].as_ref().map(|t| t.rules);
        if let (Some(r), true) = (timer_rules, matches!(method, Method::Invite | Method::Update)) {
            match session_timer::check_request(&r, &msg) {
                Ok(()) => {}
                Err(reply) => return self.refuse(&msg, &src, &reply),
            }
        }
        // Offer/answer glare (RFC 3261 §14.2, RFC 3311 §5.2).
        if matches!(method, Method::Invite | Method::Update) {
            match call.offer_pending {
                Some((s, true)) if s == side && method == Method::Invite => {
                    return self.refuse(
                        &msg,
                        &src,
                        &LocalReply::new(500, "Server Internal Error").with("Retry-After", "1"),
                    );
                }
                Some((s, _)) if s != side || method == Method::Update => {
                    return self.refuse(&msg, &src, &LocalReply::new(491, "Request Pending"));
                }
                _ => call.offer_pending = Some((side, method == Method::Invite)),
            }
        }
        let mut rack = None;
        if method == Method::Prack {
            let b_invite_cseq = call.b_invite_cseq;
            let mapped = msg
                .header_value(HeaderName::RAck)
                .and_then(parse_rack)
                .and_then(|(a_rseq, _, _)| call.rseq_map.iter().find(|(a, _)| *a == a_rseq).map(|(a, b)| (*a, *b)));
            let Some((a_rseq, b_rseq)) = mapped.filter(|_| side == Side::A) else {
                return self.refuse(&msg, &src, &LocalReply::new(481, "Call/Transaction Does Not Exist"));
            };
            if let Some(early) =
                call.early_mut().filter(|e| e.reliable_1xx.as_ref().is_some_and(|r| r.a_rseq == a_rseq))
            {
                early.reliable_1xx = None;
            }
            rack = Some(format!("{b_rseq} {b_invite_cseq} INVITE"));
        }
        if is_target_refresh(method) {
            let before = call.leg(side).remote_target.clone();
            learn_remote(call.leg_mut(side), &msg, true);
            // NAT handling: a UA that moved (new Contact, sent directly) is reached where the
            // refresh came from, on its connection (docs/manual/access.md, NAT handling).
            if rules.profile.dlg_nat_handling && before != call.leg(side).remote_target && single_via(&msg) {
                let leg = call.leg_mut(side);
                leg.transport = src.transport;
                leg.dest = Destination {
                    transport: src.transport,
                    local: src.local,
                    peer: Peer::Addr(src.remote),
                    conn: src.conn,
                };
                leg.target_is_source = true;
            }
        }
        if method == Method::Bye {
            call.end(Some(side), None);
            let _e = call.span.enter();
            tracing::info!(from = ?side, "BYE");
        }

        if method != Method::Bye {
            call.dialog_limits.take();
        }
        let server = self.new_server_tx(
            key,
            &msg,
            &src,
            TxRole::new(Some(h), side, Purpose::RelayServer { peer: TxId::NONE }),
            None,
        );
        if let Some(e) = self.txs.get_mut(&server).filter(|_| method != Method::Bye) {
            e.dialog_counted = true;
        }
        if method == Method::Invite {
            self.respond_local(now, server, &LocalReply::new(100, "Trying"));
        }
        let branch = self.ids.branch();
        // fix_replaces_ref: a REFER's Replaces for the other leg (`replaces.rs`).
        let refer_to = (method == Method::Refer && rules.profile.fix_replaces_ref)
            .then(|| self.refer_to_from_elsewhere.take().or_else(|| self.mapped_refer_to(&msg)));
        let refer_to = refer_to.flatten();
        let Some(call) = self.calls.get_mut(&h) else {
            return;
        };
        let offer_answer = matches!(method, Method::Invite | Method::Update | Method::Prack);
        let out_body = match (call.media.as_deref_mut(), self.media.as_mut(), offer_answer) {
            (Some(session), Some(book), true) => {
                // A PRACK's SDP answers a reliable 1xx's offer, or offers anew: not said.
                let role = (method != Method::Prack).then_some(Role::Offer);
                anchor_or_reject(session, book, side.other(), role, out_body)
            }
            _ => out_body,
        };
        // SEMS's hold_* options: a hold re-offer reaches the other leg as the profile says.
        let out_body = match rules.profile.hold[side.other().idx()] {
            Some(hold)
                if matches!(method, Method::Invite | Method::Update) && profiles::sdp::hold::is_hold(msg.body()) =>
            {
                profiles::sdp::hold::rewrite(&out_body, hold).map_or(out_body, std::borrow::Cow::Owned)
            }
            _ => out_body,
        };
        let out_leg = call.leg_mut(side.other());
        out_leg.note_sdp(&out_body);
        out_leg.local_cseq += 1;
        let out_cseq = out_leg.local_cseq;
        if matches!(method, Method::Subscribe | Method::Refer) && call.kind == CallKind::Invite {
            dialog_subs::subscribed(&mut call.subscriptions, side, &msg, cseq, out_cseq);
        }
        let out_leg = call.leg_mut(side.other());
        let mut w = request_on_leg(out_leg, msg.method_bytes(), out_cseq, &branch, max_forwards - 1);
        if is_target_refresh(method) || msg.header(HeaderName::Contact).is_some() {
            w.header("Contact", &out_leg.contact);
        }
        if let Some(rack) = &rack {
            w.header("RAck", rack.as_bytes());
        }
        let offer_answer = matches!(method, Method::Invite | Method::Update);
        let strip = Strip {
            rel100: method == Method::Invite,
            timer: offer_answer && call.has_session_timers(),
            // Credentials the SBC checked, or ones meant for the far side when the SBC
            // answers that side's challenges itself.
            credentials: match side {
                Side::B => rules.plan.bleg_uas_auth.is_some() || rules.plan.aleg_auth.is_some(),
                Side::A => rules.plan.auth.is_some(),
            },
            refer_to: refer_to.is_some(),
            event: event_row.is_some(),
        };
        copy_unowned_stripped(&mut w, &msg, rules.header_filter(), strip);
        if let Some(v) = &refer_to {
            w.header("Refer-To", v.as_bytes());
        }
        if let Some(v) = &event_row {
            w.header("Event", v.as_bytes());
        }
        if offer_answer {
            for (n, v) in call.sst[side.other().idx()].as_ref().map(|t| t.request_rows()).unwrap_or_default() {
                w.header(n, v.as_bytes());
            }
        }
        append(&mut w, rules.appended_on(side.other()));
        let bytes = w.finish(&out_body);
        if method == Method::Invite {
            // Long calls refresh their session many times: keep the exchanges that may still see
            // a retransmitted 2xx (glare allows one at a time), not every one since the start.
            while call.invite_relays.len() >= MAX_INVITE_RELAYS {
                call.invite_relays.remove(0);
            }
            call.invite_relays.push(InviteRelay {
                server_side: side,
                server_cseq: cseq,
                server_tx: server,
                client_cseq: out_cseq,
                ack: None,
            });
        }
        let (Ok(out_msg), Some(dest)) = (Message::parse(bytes), self.leg_dest(h, side.other())) else {
            self.respond_local(now, server, &LocalReply::new(500, "Server Internal Error"));
            if method == Method::Bye {
                self.end_call(now, h, 500, "bye_not_relayable");
            }
            return;
        };
        let client = self.start_client_tx(
            now,
            out_msg,
            dest,
            TxRole::new(Some(h), side.other(), Purpose::RelayClient { peer: server }),
        );
        self.set_relay_peer(server, client);
        self.announce_event(h, || LegEvent::Request {
            from: party(side),
            method: String::from_utf8_lossy(msg.method_bytes()).into_owned(),
        });
    }

    /// The ACK for a 2xx: forwarded to the other leg as that dialog's ACK (RFC 3261 §13.2.2.4).
    pub(super) fn on_ack(&mut self, now: Instant, msg: Message) {
        let found = msg.to_tag().and_then(|t| self.dialogs.get(t)).copied();
        let Some((h, side)) = found else {
            self.drop_msg("ack_no_dialog");
            return;
        };
        let cseq = msg.cseq().map_or(0, |c| c.num);
        let branch = self.ids.branch();
        let Some(call) = self.calls.get_mut(&h) else {
            return;
        };
        let Some(idx) = call.invite_relays.iter().position(|r| r.server_side == side && r.server_cseq == cseq) else {
            self.drop_msg("ack_unmatched");
            return;
        };
        let (server_tx, client_cseq, already) = (
            call.invite_relays[idx].server_tx,
            call.invite_relays[idx].client_cseq,
            call.invite_relays[idx].ack.is_some(),
        );
        if !already && !self.ist_final_code(server_tx).is_some_and(|c| (200..300).contains(&c)) {
            // An ACK before any 2xx to acknowledge (RFC 3261 §17.2.1 has no place for it).
            self.drop_msg("ack_before_2xx");
            return;
        }
        let Some(call) = self.calls.get_mut(&h) else {
            return;
        };
        if !already {
            // An answer in the ACK is filtered and anchored too; one with nothing left goes as
            // it came (the ACK cannot be refused).
            let rules = call.rules.clone();
            let sent_by = call.leg(side.other()).via_sent_by.clone();
            let media = call.media.as_deref_mut().zip(self.media.as_mut());
            let body = prepare_body_anyway(&rules, media, side.other(), Some(Role::Answer), &sent_by, msg.body());
            call.leg_mut(side.other()).note_sdp(&body);
            // The ACK of an INVITE we answered a challenge for carries the same credentials
            // (RFC 3261 §22.1).
            let b_ict = (side.other() == Side::B && client_cseq == call.b_invite_cseq).then_some(call.b_ict);
            let credentials = b_ict.map(|id| self.credentials_sent(id)).unwrap_or_default();
            let Some(call) = self.calls.get_mut(&h) else {
                return;
            };
            let out_leg = call.leg(side.other());
            let mut w = request_on_leg(out_leg, b"ACK", client_cseq, &branch, 70);
            for (n, v) in &credentials {
                w.header(n, v);
            }
            copy_unowned(&mut w, &msg, rules.header_filter());
            append(&mut w, rules.appended_on(side.other()));
            let ack = w.finish(&body);
            // Kept for the whole call (a 2xx may be retransmitted): at its own size, not the
            // writer's kilobyte of capacity.
            call.invite_relays[idx].ack = Some(Bytes::copy_from_slice(&ack));
            if let Some(dest) = self.leg_dest(h, side.other()) {
                self.send_raw(dest, ack);
            }
        }
        self.ist_acked(now, server_tx);
    }

    /// A response on the client side (`client`) of a relay, for the server transaction `server`.
    pub(super) fn relay_response(
        &mut self,
        now: Instant,
        client: TxId,
        server: TxId,
        call: Option<CallHandle>,
        server_side: Side,
        msg: Message,
    ) {
        let Some(code) = msg.status() else { return };
        if code == 100 {
            return; // hop-by-hop; we sent our own where it was due
        }
        let method = msg.cseq().map(|c| c.method).unwrap_or(Method::Other);
        let mut ended = false;
        // A NOTIFY saying the subscription is over ends the pair once it is answered.
        let final_notify = method == Method::Notify
            && self.txs.get(&server).and_then(|e| e.request.as_ref()).is_some_and(|r| {
                r.other_header("Subscription-State")
                    .is_some_and(|v| trim(v).to_ascii_lowercase().starts_with(b"terminated"))
            });
        let t1x64 = self.cfg.timers.t1x64();
        // The subscriber's own Expires bounds what the notifier may grant (RFC 6665 §4.2.1.1).
        let requested = self
            .txs
            .get(&server)
            .and_then(|e| e.request.as_ref())
            .and_then(|r| r.header_value(HeaderName::Expires))
            .and_then(parse_u32)
            .unwrap_or(3600)
            .min(MAX_SUBSCRIPTION_S);
        // Our answer to the caller's re-INVITE already gave up (Timer C): a late 2xx is hung up.
        let gave_up = method == Method::Invite
            && (200..300).contains(&code)
            && self.ist_final_code(server).is_some_and(|c| c >= 300);
        if gave_up {
            return self.ack_late_answer(client, &msg);
        }
        if let Some(call) = call.and_then(|h| self.calls.get_mut(&h)) {
            if call.kind == CallKind::Subscription && matches!(method, Method::Subscribe | Method::Refer) {
                let initial = call.a_ist == server;
                if (200..300).contains(&code) {
                    if initial && call.state.is_early() {
                        learn_remote(call.leg_mut(server_side.other()), &msg, false);
                        call.confirm(now);
                    }
                    // The answer says how long the subscription lives; refreshes extend it.
                    let granted = msg.header_value(HeaderName::Expires).and_then(parse_u32).unwrap_or(requested);
                    let expires = granted.min(requested);
                    let until = now + std::time::Duration::from_secs(u64::from(expires)) + t1x64;
                    match &mut call.state {
                        CallState::Early(e) => e.expires = Some(until),
                        CallState::Confirmed(c) => c.max_duration = Some(until),
                        CallState::Ending(_) => {}
                    }
                } else if code >= 300 && (initial || code == 481) {
                    ended = true;
                }
            }
            if call.kind == CallKind::Subscription {
                // Over once the final NOTIFY is answered, whatever the answer (RFC 6665 §4.4.1),
                // or when the far end says the dialog is gone.
                ended |= (final_notify && code >= 200) || code == 481;
            }
            let resp_cseq = msg.cseq().map_or(0, |c| c.num);
            if method == Method::Invite && (200..300).contains(&code) {
                let relay =
                    call.invite_relays.iter().find(|r| r.server_side == server_side && r.client_cseq == resp_cseq);
                if let Some(ack) = relay.and_then(|r| r.ack.clone()) {
                    // Retransmitted 2xx: the other side already acknowledged; repeat our ACK.
                    let h = call.handle;
                    if let Some(dest) = self.leg_dest(h, server_side.other()) {
                        self.send_raw(dest, ack);
                    }
                    return;
                }
            }
            if is_target_refresh(method) && (200..300).contains(&code) {
                learn_remote(call.leg_mut(server_side.other()), &msg, true);
            }
            if code >= 200 && matches!(method, Method::Invite | Method::Update) {
                call.offer_pending = None;
            }
            if code >= 300 && method == Method::Invite {
                call.invite_relays.retain(|r| !(r.server_side == server_side && r.client_cseq == resp_cseq));
            }
            ended |= code >= 200 && method == Method::Bye;
        }
        if let (Some(h), true) = (call, (200..300).contains(&code) && matches!(method, Method::Invite | Method::Update))
        {
            // Our request on that leg carried its session timer: the answer restarts it.
            self.sst_answered(now, h, server_side.other(), &msg);
        }
        self.forward_response(now, server, call, server_side, &msg, None);
        if let Some(h) = call {
            self.announce_event(h, || {
                let cseq = msg.header_value(HeaderName::CSeq).unwrap_or_default();
                let method = String::from_utf8_lossy(CSeq::method_bytes(cseq)).into_owned();
                LegEvent::Reply { from: party(server_side.other()), code, method }
            });
        }
        if ended {
            if let Some(h) = call {
                let reason = if method == Method::Bye { "bye" } else { "subscription_ended" };
                self.end_call(now, h, code, reason);
            }
        }
    }

    /// Timer C gave up on a relayed re-INVITE that the far end answered after all: the answer
    /// is acknowledged so the far end stops retransmitting; the call goes on (the other side was
    /// told 408 and keeps its previous session).
    fn ack_late_answer(&mut self, client: TxId, msg: &Message) {
        self.ack_only_2xx(client, msg);
    }

    /// Builds the response for server transaction `server` from the other leg's `msg` and sends
    /// it. Returns the bytes sent (for retransmission of reliable provisionals).
    pub(super) fn forward_response(
        &mut self,
        now: Instant,
        server: TxId,
        call: Option<CallHandle>,
        server_side: Side,
        msg: &Message,
        rseq: Option<u32>,
    ) -> Option<Bytes> {
        // A cached registration's 2xx: the cache learns the bindings, the UA sees its contacts.
        let registered = match msg.status() {
            Some(c) if (200..300).contains(&c) => {
                let pending = self.txs.get_mut(&server).and_then(|e| e.registration.take());
                pending.map(|p| self.cached_register_ok(now, &p, msg))
            }
            _ => None,
        };
        let e = self.txs.get(&server)?;
        let rules = match call.and_then(|h| self.calls.get(&h)) {
            Some(c) => Some(c.rules.clone()),
            None => e.rules.clone(),
        };
        let (req, src) = (e.request.as_ref()?, e.source.as_ref()?);
        let request_offered = profiles::sdp::media::sdp_range(req.body()).is_some();
        // reply_translations: the code and reason the caller sees (the class never changes).
        let (code, reason) = match rules
            .as_ref()
            .and_then(|r| translate_reply(&r.profile.reply_translations, msg.status()?))
        {
            Some(t) => (t.to, if t.reason.is_empty() { reason_phrase(t.to).as_bytes() } else { t.reason.as_bytes() }),
            None => (msg.status()?, msg.reason()),
        };
        // A 422 the SBC could not satisfy on its own timed leg means nothing to this side (its
        // timer is negotiated separately, and the callee's Min-SE does not cross): 500.
        let timed = call.and_then(|h| self.calls.get(&h)).is_some_and(|c| c.has_session_timers());
        let (code, reason) = if code == 422 && timed { (500, &b"Server Internal Error"[..]) } else { (code, reason) };
        let mut w = response_head(req, src, code, reason, e.to_tag.as_deref());
        if code == 500 && msg.status() == Some(422) {
            w.header("Warning", b"399 sbc \"the callee wants a longer session interval than maximum_timer\"");
        }
        let has_contact = msg.header(HeaderName::Contact).is_some();
        let redirect = (300..400).contains(&code) || req.method() == Some(Method::Register);
        if let Some(rows) = &registered {
            for r in rows {
                w.header("Contact", r.as_bytes());
            }
        } else if redirect {
            // Redirect targets and registration bindings are the message's content, not topology.
            for h in msg.headers_named(HeaderName::Contact) {
                w.copy_row(msg, h);
            }
        } else if has_contact {
            let ours = match call.and_then(|h| self.calls.get(&h)) {
                Some(c) => c.leg(server_side).contact.clone(),
                None => {
                    let sock = self.cfg.socket(src.local)?;
                    super::build::contact_value(&sock.sent_by(), src.transport)
                }
            };
            w.header("Contact", &ours);
        }
        if let Some(r) = rseq {
            w.header_fmt("RSeq", format_args!("{r}"));
        }
        let filter = rules.as_deref().and_then(CallRules::header_filter);
        let offer_answer = matches!(msg.cseq().map(|c| c.method), Some(Method::Invite | Method::Update));
        // A 2xx to the peer's INVITE/UPDATE on a timed leg: our own Session-Expires.
        let timer_rows = match (call, offer_answer && (200..300).contains(&code)) {
            (Some(h), true) if self.calls.get(&h).is_some_and(|c| c.sst[server_side.idx()].is_some()) => {
                let req = req.clone();
                self.sst_answer_rows(now, h, server_side, &req)
            }
            _ => Vec::new(),
        };
        for (n, v) in &timer_rows {
            w.header(n, v.as_bytes());
        }
        if registered.is_some() {
            copy_unowned_if(&mut w, msg, filter, keeps_in_register_ok);
        } else if timed && offer_answer {
            copy_unowned_stripped(&mut w, msg, filter, Strip { timer: true, ..Strip::default() });
        } else {
            copy_unowned(&mut w, msg, filter);
        }
        // SDP in a failure response (a 488 listing what the callee takes) is no answer: it goes
        // as it came and changes no media.
        let answered = msg.cseq().map(|c| c.method);
        let has_sdp = code < 300 && matches!(answered, Some(Method::Invite | Method::Update | Method::Prack));
        // A response to an INVITE or UPDATE answers its offer; one to an offerless INVITE
        // offers. A PRACK's response does not say.
        let role = match answered {
            Some(Method::Invite | Method::Update) if request_offered => Some(Role::Answer),
            Some(Method::Invite | Method::Update) => Some(Role::Offer),
            _ => None,
        };
        let body = match (&rules, has_sdp, call.and_then(|h| self.calls.get_mut(&h))) {
            (Some(r), true, Some(c)) => {
                let sent_by = c.leg(server_side).via_sent_by.clone();
                let media = c.media.as_deref_mut().zip(self.media.as_mut());
                Some(prepare_body_anyway(r, media, server_side, role, &sent_by, msg.body()))
            }
            _ => None,
        };
        let body: &[u8] = body.as_deref().unwrap_or(msg.body());
        if let (Some(c), true) = (call.and_then(|h| self.calls.get_mut(&h)), has_sdp) {
            c.leg_mut(server_side).note_sdp(body);
        }
        let bytes = w.finish(body);
        self.respond(now, server, code, bytes.clone());
        Some(bytes)
    }
}
