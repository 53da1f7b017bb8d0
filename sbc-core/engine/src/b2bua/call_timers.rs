//! A call's own deadlines (Timer C, the maximum duration, the hard end after a CANCEL, reliable
//! provisional retransmissions, media checks, session timers) in the engine's timer heap.

use std::time::Instant;

use super::call::{CallKind, Side};
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
}
