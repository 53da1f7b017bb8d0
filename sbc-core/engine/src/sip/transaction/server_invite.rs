//! INVITE server transaction (RFC 3261 §17.2.1, with RFC 6026's Accepted state).
//!
//! Proceeding --300-699--> Completed --ACK--> Confirmed --I--> Terminated
//!     |                       +--H (no ACK)--> Terminated (Timeout)
//!     +--2xx--> Accepted --L--> Terminated
//!
//! In Accepted the 2xx is retransmitted (T1 doubling to T2) until the TU reports the ACK, as
//! RFC 3261 §13.3.1.4 asks of the UAS core; it lives here so the TU keeps no timers of its own.

use std::time::Instant;

use bytes::Bytes;

use super::{TimerConfig, TimerName, TimerSet, TxOutput};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Proceeding,
    Completed,
    Confirmed,
    Accepted,
    Terminated,
}

#[derive(Debug)]
pub struct ServerInvite {
    state: State,
    reliable: bool,
    cfg: TimerConfig,
    timers: TimerSet,
    last_response: Option<Bytes>,
    final_code: Option<u16>,
    acked: bool,
}

impl ServerInvite {
    pub fn new(reliable: bool, cfg: TimerConfig) -> Self {
        Self {
            state: State::Proceeding,
            reliable,
            cfg,
            timers: TimerSet::default(),
            last_response: None,
            final_code: None,
            acked: false,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }
    /// The final status sent, if any.
    pub fn final_code(&self) -> Option<u16> {
        self.final_code
    }
    /// Confirmed, or Accepted with the 2xx acknowledged: retransmitted INVITEs are absorbed
    /// until the returned deadline (Timer I or L).
    pub fn linger(&self) -> Option<Instant> {
        (self.state == State::Confirmed || (self.state == State::Accepted && self.acked))
            .then(|| self.timers.next())
            .flatten()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// The TU sends a response.
    pub fn send_response(&mut self, code: u16, bytes: Bytes, now: Instant, out: &mut Vec<TxOutput>) {
        if self.state != State::Proceeding {
            return; // a final response was sent already
        }
        out.push(TxOutput::Transmit(bytes.clone()));
        self.last_response = Some(bytes);
        match code {
            100..=199 => {}
            200..=299 => {
                self.state = State::Accepted;
                self.final_code = Some(code);
                self.timers.arm(TimerName::L, now, self.cfg.t1x64());
                if !self.reliable {
                    self.timers.arm(TimerName::Retransmit2xx, now, self.cfg.t1);
                }
            }
            _ => {
                self.state = State::Completed;
                self.final_code = Some(code);
                if !self.reliable {
                    self.timers.arm(TimerName::G, now, self.cfg.t1);
                }
                self.timers.arm(TimerName::H, now, self.cfg.t1x64());
            }
        }
    }

    /// A retransmission of the INVITE arrived.
    pub fn handle_retransmission(&mut self, out: &mut Vec<TxOutput>) {
        if matches!(self.state, State::Proceeding | State::Completed) {
            if let Some(r) = &self.last_response {
                out.push(TxOutput::Transmit(r.clone()));
            }
        }
    }

    /// The ACK for a non-2xx final response (same branch) arrived.
    pub fn handle_ack(&mut self, now: Instant, out: &mut Vec<TxOutput>) {
        if self.state == State::Completed {
            self.state = State::Confirmed;
            self.last_response = None;
            self.timers.clear();
            self.timers.arm(TimerName::I, now, self.cfg.t4_or_zero(self.reliable));
            if self.reliable {
                self.terminate(out);
            }
        }
    }

    /// The TU matched the ACK for our 2xx (it carries its own branch): stop retransmitting.
    pub fn handle_2xx_ack(&mut self) {
        self.acked = true;
        self.last_response = None;
        self.timers.cancel(TimerName::Retransmit2xx);
    }
    pub fn is_acked(&self) -> bool {
        self.acked
    }

    pub fn handle_timeout(&mut self, now: Instant, out: &mut Vec<TxOutput>) {
        while let Some(t) = self.timers.pop_due(now) {
            match t.name {
                TimerName::G if self.state == State::Completed => {
                    if let Some(r) = &self.last_response {
                        out.push(TxOutput::Transmit(r.clone()));
                    }
                    self.timers.arm(TimerName::G, now, (t.interval * 2).min(self.cfg.t2));
                }
                TimerName::Retransmit2xx if self.state == State::Accepted && !self.acked => {
                    if let Some(r) = &self.last_response {
                        out.push(TxOutput::Transmit(r.clone()));
                    }
                    self.timers.arm(TimerName::Retransmit2xx, now, (t.interval * 2).min(self.cfg.t2));
                }
                TimerName::H => {
                    out.push(TxOutput::Timeout);
                    self.terminate(out);
                }
                TimerName::L => {
                    if !self.acked {
                        out.push(TxOutput::Timeout);
                    }
                    self.terminate(out);
                }
                TimerName::I => self.terminate(out),
                _ => {}
            }
        }
    }

    /// The response could not be delivered. The TU hears of it while it still owes or awaits
    /// something (no final yet, or a 2xx not acknowledged), so it can end the call.
    pub fn handle_transport_error(&mut self, out: &mut Vec<TxOutput>) {
        if self.state == State::Proceeding || (self.state == State::Accepted && !self.acked) {
            out.push(TxOutput::Timeout);
        }
        self.terminate(out);
    }

    fn terminate(&mut self, out: &mut Vec<TxOutput>) {
        super::terminate(&mut self.state, State::Terminated, &mut self.timers, out);
    }

    #[cfg(test)]
    pub(crate) fn timers(&self) -> &TimerSet {
        &self.timers
    }
}
