//! A call's own deadlines (Timer C, the maximum duration, the hard end after a CANCEL, reliable
//! provisional retransmissions, media checks, session timers) in the engine's timer heap.

use std::time::Instant;

use super::call::{CallKind, CallState, Side};
use super::{CallHandle, Engine, TimerRef};

impl Engine {
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
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        match &mut call.state {
            CallState::Ending(e) if due(e.hard_end) => {
                let b_ict = call.b_ict;
                self.forget_tx(b_ict);
                self.end_call(now, h, 487, "cancel_unanswered");
                return;
            }
            CallState::Early(e) if due(e.timer_c) => {
                e.timer_c = None;
                let _e = call.span.clone().entered();
                tracing::info!("Timer C expired, cancelling");
                self.tear_down(now, h, 408, "timer_c");
                self.reschedule_call(h);
                return;
            }
            _ => {}
        }
        let sst_due = [Side::A, Side::B]
            .into_iter()
            .find(|s| call.sst[s.idx()].as_ref().and_then(|t| t.due).is_some_and(|d| d <= now));
        if let Some(side) = sst_due {
            self.sst_due(now, h, side);
            self.reschedule_call(h);
            return;
        }
        if matches!(&call.state, CallState::Confirmed(c) if due(c.media_check)) {
            self.media_check(now, h);
            if !self.calls.contains_key(&h) {
                return;
            }
            self.reschedule_call(h);
            return;
        }
        // The call's limit: a subscription's expiry (before and after its answer), the call
        // timer or maximum duration of an answered call.
        let limit = match &mut call.state {
            CallState::Early(e) if due(e.expires) => e.expires.take(),
            CallState::Confirmed(c) if due(c.max_duration) => c.max_duration.take(),
            _ => None,
        };
        if limit.is_some() {
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
        if let Some(early) = call.early_mut() {
            if let Some(r) = early.reliable_1xx.as_mut().filter(|r| r.next <= now) {
                if now >= r.give_up {
                    early.reliable_1xx = None;
                } else {
                    let bytes = r.bytes.clone();
                    r.interval *= 2;
                    r.next = now + r.interval;
                    if let Some(dest) = self.txs.get(&a_ist).map(|e| e.dest.clone()) {
                        self.send_raw(dest, bytes);
                    }
                }
            }
        }
        self.reschedule_call(h);
    }
}
