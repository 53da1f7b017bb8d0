//! Non-INVITE client transaction (RFC 3261 §17.1.2).
//!
//! Trying --1xx--> Proceeding --200-699--> Completed --K--> Terminated; F fires → Timeout.

use std::time::Instant;

use super::{TimerConfig, TimerName, TimerSet, TxOutput};
use crate::sip::msg::Message;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

#[derive(Debug)]
pub struct ClientNonInvite {
    state: State,
    /// Released once only retransmission absorbing is left (saves memory during Timer D/K).
    request: Option<Message>,
    reliable: bool,
    cfg: TimerConfig,
    timers: TimerSet,
}

impl ClientNonInvite {
    pub fn start(request: Message, reliable: bool, cfg: TimerConfig, now: Instant, out: &mut Vec<TxOutput>) -> Self {
        let mut timers = TimerSet::default();
        if !reliable {
            timers.arm(TimerName::E, now, cfg.t1);
        }
        timers.arm(TimerName::F, now, cfg.t1x64());
        out.push(TxOutput::Transmit(request.bytes().clone()));
        Self { state: State::Trying, request: Some(request), reliable, cfg, timers }
    }

    pub fn state(&self) -> State {
        self.state
    }
    /// The request, while it may still be needed (not after a non-2xx final response).
    pub fn request(&self) -> Option<&Message> {
        self.request.as_ref()
    }
    /// Completed: late responses are ignored until the returned deadline (Timer K).
    pub fn linger(&self) -> Option<Instant> {
        (self.state == State::Completed).then(|| self.timers.next()).flatten()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    pub fn handle_response(&mut self, resp: Message, now: Instant, out: &mut Vec<TxOutput>) {
        let Some(code) = resp.status() else { return };
        match (self.state, code) {
            (State::Trying | State::Proceeding, 100..=199) => {
                self.state = State::Proceeding;
                out.push(TxOutput::Response(resp));
            }
            (State::Trying | State::Proceeding, _) => {
                self.state = State::Completed;
                self.request = None;
                self.timers.clear();
                self.timers.arm(TimerName::K, now, self.cfg.t4_or_zero(self.reliable));
                out.push(TxOutput::Response(resp));
            }
            _ => {}
        }
    }

    pub fn handle_timeout(&mut self, now: Instant, out: &mut Vec<TxOutput>) {
        while let Some(t) = self.timers.pop_due(now) {
            match t.name {
                TimerName::E if matches!(self.state, State::Trying | State::Proceeding) => {
                    if let Some(r) = &self.request {
                        out.push(TxOutput::Transmit(r.bytes().clone()));
                    }
                    // Trying doubles up to T2; Proceeding retransmits every T2 (§17.1.2.2).
                    let next =
                        if self.state == State::Trying { (t.interval * 2).min(self.cfg.t2) } else { self.cfg.t2 };
                    self.timers.arm(TimerName::E, now, next);
                }
                TimerName::F if matches!(self.state, State::Trying | State::Proceeding) => {
                    out.push(TxOutput::Timeout);
                    self.terminate(out);
                }
                TimerName::K => self.terminate(out),
                _ => {}
            }
        }
    }

    pub fn handle_transport_error(&mut self, out: &mut Vec<TxOutput>) {
        if matches!(self.state, State::Trying | State::Proceeding) {
            out.push(TxOutput::Timeout);
        }
        self.terminate(out);
    }

    fn terminate(&mut self, out: &mut Vec<TxOutput>) {
        super::terminate(&mut self.state, State::Terminated, &mut self.timers, out);
    }
}
