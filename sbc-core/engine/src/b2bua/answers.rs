//! The callee's answers to our initial INVITE: provisional and final responses relayed to the
//! caller, the 2xx acknowledged (and a stray one hung up), Timer B and transport failures.

use std::time::Instant;

use profiles::LocalReply;

use super::build::{request_on_leg, without_tag};
use super::call::{CallState, InviteRelay, Leg, Reliable1xx, Side};
use super::cc::CcRequest;
use super::routing;
use super::txs::{Purpose, TxRole};
use super::types::{Destination, Transport};
use super::{CallHandle, Counter, Engine, Event, Output, TxId};
use crate::sip::msg::{parse_u32, HeaderName, Message};

impl Engine {
    /// A response to our initial INVITE on the B leg.
    pub(super) fn on_b_invite_response(&mut self, now: Instant, h: CallHandle, msg: Message) {
        let Some(code) = msg.status() else { return };
        let timer_c = self.cfg.timer_c;
        let Some(call) = self.calls.get_mut(&h) else {
            return;
        };
        if code < 200 {
            call.b_provisional = true;
            if let Some(early) = call.early_mut() {
                early.timer_c = Some(now + timer_c);
            }
            if call.cancel_pending {
                call.cancel_pending = false;
                self.send_cancel(now, h);
                return;
            }
            if code == 100 || !call.state.is_early() {
                return;
            }
            self.learn_callee(h, &msg);
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
                let early = self.calls.get_mut(&h).and_then(|c| c.early_mut());
                if let (true, Some(a_rseq), Some(early)) = (reliable_udp, rseq, early) {
                    let t1 = self.cfg.timers.t1;
                    early.reliable_1xx = Some(Box::new(Reliable1xx {
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
            if call.state.is_ending() {
                // Answered after the caller cancelled (a CANCEL crossing the 200, Timer C):
                // acknowledge and hang up this answer, whichever fork sent it.
                let b_ict = call.b_ict;
                self.kill_orphan_2xx(now, b_ict, &msg);
                self.end_call(now, h, 487, "cancelled");
                return;
            }
            if call.state.is_confirmed() && msg.to_tag() != call.leg(Side::B).remote_tag.as_deref() {
                // A second fork answered: this SBC keeps one dialog (RFC 3261 §13.2.2.4).
                let b_ict = call.b_ict;
                self.kill_orphan_2xx(now, b_ict, &msg);
                return;
            }
            if !call.state.is_early() {
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
            self.learn_callee(h, &msg);
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
            call.confirm(now);
            self.sst_answered(now, h, Side::B, &msg);
            let first_media_check = self.first_media_check(now);
            let Some(call) = self.calls.get_mut(&h) else {
                return;
            };
            let media_check = call.media.is_some().then_some(first_media_check).flatten();
            let max_duration = (!self.cfg.max_call_duration.is_zero()).then(|| now + self.cfg.max_call_duration);
            let (cc, state) = (call.cc.as_mut(), &mut call.state);
            let CallState::Confirmed(confirmed) = state else { return };
            confirmed.media_check = media_check;
            confirmed.max_duration = max_duration;
            if let Some(cc) = cc {
                // Call timers run from the answer; the shortest limit wins.
                if let Some(at) = cc.call_timer.and_then(|t| now.checked_add(t)) {
                    if confirmed.max_duration.is_none_or(|m| at <= m) {
                        confirmed.max_duration = Some(at);
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
        if code == 503 {
            self.b_destination_failed(now, h, Some(&msg));
            if self.fail_over(now, h) {
                return;
            }
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
        self.b_destination_failed(now, h, None);
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

    /// The callee's tag and target from a response to our INVITE; its first tag is adopted
    /// for `transparent_dlg_id`.
    fn learn_callee(&mut self, h: CallHandle, msg: &Message) {
        let Some(call) = self.calls.get_mut(&h) else { return };
        let first_tag = call.leg(Side::B).remote_tag.is_none();
        learn_remote(call.leg_mut(Side::B), msg, false);
        if first_tag {
            self.adopt_callee_tag(h);
        }
    }

    /// transparent_dlg_id: the caller gets the callee's To tag as ours, so both ends see one
    /// set of dialog identifiers. Done once, at the first tagged response.
    pub(super) fn adopt_callee_tag(&mut self, h: CallHandle) {
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

    /// A 2xx to one of our INVITEs whose call no longer exists: acknowledge it and hang up,
    /// so the callee is not left with a zombie call.
    pub(super) fn kill_orphan_2xx(&mut self, now: Instant, ict: TxId, resp: &Message) {
        let Some((leg, dest, cseq)) = self.dialog_of_2xx(ict, resp) else { return };
        let ack = request_on_leg(&leg, b"ACK", cseq, &self.ids.branch(), 70).finish(b"");
        let bye = request_on_leg(&leg, b"BYE", cseq + 1, &self.ids.branch(), 70).finish(b"");
        self.send_raw(dest.clone(), ack);
        if let Ok(m) = Message::parse(bye) {
            self.start_client_tx(now, m, dest, TxRole::new(None, Side::B, Purpose::Detached));
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
    pub(super) fn dialog_of_2xx(&self, ict: TxId, resp: &Message) -> Option<(Leg, Destination, u32)> {
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
