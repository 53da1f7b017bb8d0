//! Non-INVITE server transaction (RFC 3261 §17.2.2).
//!
//! Trying --1xx--> Proceeding --200-699--> Completed --J--> Terminated

use std::time::Instant;

use bytes::Bytes;

use super::{TimerConfig, TimerName, TimerSet, TxOutput};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

#[derive(Debug)]
pub struct ServerNonInvite {
    state: State,
    reliable: bool,
    cfg: TimerConfig,
    timers: TimerSet,
    last_response: Option<Bytes>,
}

impl ServerNonInvite {
    pub fn new(reliable: bool, cfg: TimerConfig) -> Self {
        Self { state: State::Trying, reliable, cfg, timers: TimerSet::default(), last_response: None }
    }

    pub fn state(&self) -> State {
        self.state
    }
    /// Completed: only retransmitted requests remain to be answered (with these bytes) until
    /// the returned deadline (Timer J).
    pub fn linger(&self) -> Option<(Option<Bytes>, Instant)> {
        (self.state == State::Completed)
            .then(|| self.timers.next().map(|at| (self.last_response.clone(), at)))
            .flatten()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    pub fn send_response(&mut self, code: u16, bytes: Bytes, now: Instant, out: &mut Vec<TxOutput>) {
        if matches!(self.state, State::Completed | State::Terminated) {
            return;
        }
        out.push(TxOutput::Transmit(bytes.clone()));
        self.last_response = Some(bytes);
        if code < 200 {
            self.state = State::Proceeding;
            return;
        }
        self.state = State::Completed;
        let j = if self.reliable { std::time::Duration::ZERO } else { self.cfg.t1x64() };
        self.timers.arm(TimerName::J, now, j);
    }

    /// A retransmitted request: answered with the last response, or absorbed in Trying.
    pub fn handle_retransmission(&mut self, out: &mut Vec<TxOutput>) {
        if matches!(self.state, State::Proceeding | State::Completed) {
            if let Some(r) = &self.last_response {
                out.push(TxOutput::Transmit(r.clone()));
            }
        }
    }

    pub fn handle_timeout(&mut self, now: Instant, out: &mut Vec<TxOutput>) {
        while let Some(t) = self.timers.pop_due(now) {
            if t.name == TimerName::J {
                self.terminate(out);
            }
        }
    }

    pub fn handle_transport_error(&mut self, out: &mut Vec<TxOutput>) {
        self.terminate(out);
    }

    fn terminate(&mut self, out: &mut Vec<TxOutput>) {
        super::terminate(&mut self.state, State::Terminated, &mut self.timers, out);
    }
}
