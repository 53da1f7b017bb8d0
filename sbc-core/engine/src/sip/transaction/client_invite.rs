//! INVITE client transaction (RFC 3261 §17.1.1, with RFC 6026's Accepted state).
//!
//! Calling --1xx--> Proceeding --2xx--> Accepted --M--> Terminated
//!    |                 |--300-699 (ACK sent)--> Completed --D--> Terminated
//!    +--B (timeout)--> Terminated

use std::time::Instant;

use bytes::Bytes;

use super::{TimerConfig, TimerName, TimerSet, TxOutput};
use crate::sip::msg::{HeaderName, Message, MessageWriter};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Calling,
    Proceeding,
    Completed,
    Accepted,
    Terminated,
}

#[derive(Debug)]
pub struct ClientInvite {
    state: State,
    /// Released once only retransmission absorbing is left (saves memory during Timer D/K).
    request: Option<Message>,
    reliable: bool,
    cfg: TimerConfig,
    timers: TimerSet,
    ack: Option<Bytes>,
    /// Armed on each provisional when set: a relayed INVITE must not ring for ever.
    timer_c: Option<std::time::Duration>,
}

impl ClientInvite {
    /// Starts the transaction: the request goes out now.
    pub fn start(request: Message, reliable: bool, cfg: TimerConfig, now: Instant, out: &mut Vec<TxOutput>) -> Self {
        let mut timers = TimerSet::default();
        if !reliable {
            timers.arm(TimerName::A, now, cfg.t1);
        }
        timers.arm(TimerName::B, now, cfg.t1x64());
        out.push(TxOutput::Transmit(request.bytes().clone()));
        Self { state: State::Calling, request: Some(request), reliable, cfg, timers, ack: None, timer_c: None }
    }

    /// Bounds the Proceeding state with Timer C (re-armed on every provisional).
    pub fn with_timer_c(mut self, timer_c: std::time::Duration) -> Self {
        self.timer_c = Some(timer_c);
        self
    }

    pub fn state(&self) -> State {
        self.state
    }
    /// The request, while it may still be needed (not after a non-2xx final response).
    pub fn request(&self) -> Option<&Message> {
        self.request.as_ref()
    }
    /// Completed: retransmitted non-2xx finals get the ACK again until the returned deadline
    /// (Timer D).
    pub fn linger(&self) -> Option<(Option<Bytes>, Instant)> {
        (self.state == State::Completed).then(|| self.timers.next().map(|at| (self.ack.clone(), at))).flatten()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    pub fn handle_response(&mut self, resp: Message, now: Instant, out: &mut Vec<TxOutput>) {
        let Some(code) = resp.status() else { return };
        match (self.state, code) {
            (State::Calling | State::Proceeding, 100..=199) => {
                self.state = State::Proceeding;
                self.timers.cancel(TimerName::A);
                self.timers.cancel(TimerName::B);
                if let Some(c) = self.timer_c {
                    self.timers.arm(TimerName::C, now, c);
                }
                out.push(TxOutput::Response(resp));
            }
            (State::Calling | State::Proceeding, 200..=299) => {
                self.state = State::Accepted;
                // Nothing is retransmitted after a 2xx; the TU acknowledges from the 2xx itself.
                self.request = None;
                self.timers.clear();
                self.timers.arm(TimerName::M, now, self.cfg.t1x64());
                out.push(TxOutput::Response(resp));
            }
            (State::Calling | State::Proceeding, _) => {
                self.state = State::Completed;
                self.timers.clear();
                let ack = self.request.take().map(|req| build_ack(&req, &resp)).unwrap_or_default();
                out.push(TxOutput::Transmit(ack.clone()));
                self.ack = Some(ack);
                self.timers.arm(TimerName::D, now, self.cfg.timer_d(self.reliable));
                out.push(TxOutput::Response(resp));
            }
            (State::Completed, 300..) => {
                if let Some(ack) = &self.ack {
                    out.push(TxOutput::Transmit(ack.clone()));
                }
            }
            // 2xx retransmissions (and forked 2xx) go to the TU, which re-sends its ACK.
            (State::Accepted, 200..=299) => out.push(TxOutput::Response(resp)),
            _ => {}
        }
    }

    pub fn handle_timeout(&mut self, now: Instant, out: &mut Vec<TxOutput>) {
        while let Some(t) = self.timers.pop_due(now) {
            match t.name {
                TimerName::A if self.state == State::Calling => {
                    if let Some(r) = &self.request {
                        out.push(TxOutput::Transmit(r.bytes().clone()));
                    }
                    self.timers.arm(TimerName::A, now, t.interval * 2);
                }
                TimerName::B if self.state == State::Calling => {
                    out.push(TxOutput::Timeout);
                    self.terminate(out);
                }
                TimerName::C if self.state == State::Proceeding => {
                    // The TU gives up (CANCEL, 408 upstream); the transaction stays to ACK the
                    // 487 or pass on a 2xx that crosses the CANCEL, for at most 64*T1 more.
                    out.push(TxOutput::Timeout);
                    self.timer_c = None;
                    self.timers.arm(TimerName::M, now, self.cfg.t1x64());
                }
                TimerName::D | TimerName::M => self.terminate(out),
                _ => {}
            }
        }
    }

    /// A transport failure (e.g. TCP connect refused) ends the transaction (§17.1.1.2).
    pub fn handle_transport_error(&mut self, out: &mut Vec<TxOutput>) {
        if matches!(self.state, State::Calling | State::Proceeding) {
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

/// The hop-by-hop ACK for a non-2xx final response (RFC 3261 §17.1.1.3).
fn build_ack(req: &Message, resp: &Message) -> Bytes {
    let mut w = MessageWriter::request(b"ACK", req.request_uri());
    if let Some(via) = req.values(HeaderName::Via).next() {
        w.header("Via", via);
    }
    for h in req.headers_named(HeaderName::Route) {
        w.copy_row(req, h);
    }
    w.header("Max-Forwards", b"70");
    for (name, src) in [(HeaderName::From, req), (HeaderName::To, resp), (HeaderName::CallId, req)] {
        if let Some(h) = src.header(name) {
            w.copy_row(src, h);
        }
    }
    let num = req.cseq().map_or(0, |c| c.num);
    w.header_fmt("CSeq", format_args!("{num} ACK"));
    w.finish(b"")
}
