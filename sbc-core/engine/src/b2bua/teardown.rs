//! Ending calls: CANCEL from the caller, teardown by the SBC (BYE both ways, or CANCEL and a
//! final answer while it rings), and the end itself: indexes, call control, media, counters.

use std::time::Instant;

use callcontrol::CallEnd;
use profiles::LocalReply;

use super::apply::append;
use super::build::{self, request_on_leg};
use super::call::{CallKind, CallState, Side};
use super::txs::{Purpose, Resendable, TxRole};
use super::types::Source;
use super::{CallHandle, Counter, Engine, Event, Output};
use crate::sip::msg::Message;
use crate::sip::transaction::{cancelled_invite_key, TxKey};

impl Engine {
    pub(super) fn on_cancel(&mut self, now: Instant, msg: Message, src: Source, key: TxKey) {
        let target = cancelled_invite_key(&msg).and_then(|k| self.tx_keys.get(&k).copied());
        let Some(ist) = target else {
            return self.no_such_dialog(now, &msg, &src);
        };
        let (purpose, call) = self.txs.get(&ist).map(|e| (e.purpose, e.call)).unwrap_or((Purpose::Local, None));
        let id = self.new_server_tx(key, &msg, &src, TxRole::new(None, Side::A, Purpose::Local), None);
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
                        self.start_client_tx(now, m, dest, TxRole::new(call, Side::B, Purpose::Detached));
                    }
                }
            }
            _ => self.respond_local(now, ist, &LocalReply::new(487, "Request Terminated")),
        }
    }

    /// Stops the B-leg INVITE: CANCEL now if a provisional came, else as soon as one does.
    pub(super) fn cancel_b(&mut self, now: Instant, h: CallHandle) {
        if self.cancel_pending(h) {
            return; // still waiting for call control: there is no B leg yet
        }
        let t1x64 = self.cfg.timers.t1x64();
        let Some(call) = self.calls.get_mut(&h) else {
            return;
        };
        // If the callee never answers the INVITE, give up on it after 64*T1 (RFC 3261 §9.1).
        call.end(None, Some(now + t1x64));
        if call.b_provisional {
            self.send_cancel(now, h);
        } else {
            call.cancel_pending = true;
        }
        self.reschedule_call(h);
    }

    pub(super) fn send_cancel(&mut self, now: Instant, h: CallHandle) {
        let Some(call) = self.calls.get(&h) else {
            return;
        };
        if !self.ict_pending(call.b_ict) {
            return;
        }
        let Some(bytes) = self.client_request(call.b_ict).map(build::cancel_for) else { return };
        let dest = self.txs.get(&call.b_ict).map(|e| e.dest.clone());
        if let (Ok(m), Some(dest)) = (Message::parse(bytes), dest) {
            self.start_client_tx(now, m, dest, TxRole::new(Some(h), Side::B, Purpose::Detached));
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
            CallState::Early(_) => {
                let a_ist = call.a_ist;
                if let Some(call) = self.calls.get_mut(&h) {
                    call.cause.get_or_insert(reason);
                }
                if self.ist_open(a_ist) {
                    self.respond_local(now, a_ist, &LocalReply::new(code, reason_text(code)));
                }
                self.cancel_b(now, h);
            }
            CallState::Confirmed(_) => {
                self.send_bye(now, h, Side::A, reason);
                self.send_bye(now, h, Side::B, reason);
                self.end_call(now, h, code, reason);
            }
            CallState::Ending(_) => self.end_call(now, h, code, reason),
        }
    }

    pub(super) fn send_bye(&mut self, now: Instant, h: CallHandle, side: Side, reason: &str) {
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
            let id = self.start_client_tx(now, m, dest, TxRole::new(None, side, Purpose::Detached));
            // The call is gone by the answer; a challenge to this BYE is still answered.
            if let (Some(m), Some(e)) = (keep, self.txs.get_mut(&id)) {
                e.resendable = Some(Resendable::new(m, credentials, configured));
            }
        }
    }

    /// ACK and BYE for a 2xx that arrived after the caller gave up.
    pub(super) fn ack_and_bye(&mut self, now: Instant, h: CallHandle) {
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
                self.start_client_tx(now, m, dest, TxRole::new(None, Side::B, Purpose::Detached));
            }
        }
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
        let answered = call.state.answered();
        let duration_ms = answered.map_or(0, |a| now.saturating_duration_since(a).as_millis() as u64);
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
            answered: answered.is_some(),
        }));
        if call.cc.is_some() {
            let bye_from = match &call.state {
                CallState::Ending(e) => e.bye_from,
                _ => None,
            };
            let by = super::cc::ended_by(reason, bye_from);
            let answered = answered.is_some();
            let code = if answered { 200 } else { code };
            let phrase = reason_text(code).to_string();
            // SEMS's `destination_ip`: where the B leg's INVITE went (and its answers came from).
            let destination_ip = call.leg(Side::B).dest.peer.addr().map(|a| a.ip());
            self.announce_end(h, CallEnd { by, code, phrase, reason: reason.to_string(), answered, destination_ip });
        }
    }
}

pub(super) fn reason_text(code: u16) -> &'static str {
    crate::sip::msg::reason_phrase(code)
}
