//! RFC 3261 §17 transactions as four sans-IO state machines (plus RFC 6026's Accepted state).
//!
//! Each machine is fed inputs with the current time and writes what it wants done into an
//! output list: bytes to transmit, a message or an event for the transaction user. Timers are
//! named after the RFC (A–K, L, M) and armed as deadlines; the owner asks `poll_timeout` and
//! calls `handle_timeout` when the earliest one is due. Nothing here reads a clock.
//!
//! Timer values come from [`TimerConfig`] (T1, T2, T4 from the operator's config), per RFC 3261
//! Table 4; on a reliable transport the wait timers D, I, J, K are zero and nothing is
//! retransmitted.

mod client_invite;
pub mod client_non_invite;
mod key;
pub mod server_invite;
pub mod server_non_invite;

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::msg::Message;

pub use client_invite::{ClientInvite, State as ClientInviteState};
pub use client_non_invite::ClientNonInvite;
pub use key::{cancelled_invite_key, client_key, server_key, TxKey};
pub use server_invite::ServerInvite;
pub use server_non_invite::ServerNonInvite;

/// Base timer values (RFC 3261 §17.1.1.1 and Table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate, default 500 ms.
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses, default 4 s.
    pub t2: Duration,
    /// Maximum time a message stays in the network, default 5 s.
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        Self { t1: Duration::from_millis(500), t2: Duration::from_secs(4), t4: Duration::from_secs(5) }
    }
}

impl TimerConfig {
    /// 64*T1: Timers B, F, H, J (unreliable), L, M.
    pub fn t1x64(&self) -> Duration {
        self.t1 * 64
    }
    /// Timer D: at least 32 s on unreliable transports, zero on reliable ones.
    pub fn timer_d(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            Duration::from_secs(32).max(self.t1x64())
        }
    }
    /// Timers I and K: T4 on unreliable transports, zero on reliable ones.
    pub fn t4_or_zero(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            self.t4
        }
    }
}

/// What a transaction asks its owner to do.
#[derive(Debug)]
pub enum TxOutput {
    /// Send these bytes to the transaction's peer.
    Transmit(Bytes),
    /// A response for the transaction user (client transactions only).
    Response(Message),
    /// Timer B/F/H fired, or the TU's 2xx was never acknowledged (Timer L).
    Timeout,
    /// The transaction reached Terminated and can be forgotten.
    Terminated,
}

/// The named timers, for tests and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerName {
    A,
    B,
    D,
    E,
    F,
    G,
    H,
    I,
    J,
    K,
    L,
    M,
    /// A provisional arrived but no final response within Timer C (RFC 3261 §16.6, > 3 min).
    C,
    /// Retransmission of a 2xx to INVITE until the ACK (RFC 3261 §13.3.1.4).
    Retransmit2xx,
}

/// Moves a machine to its Terminated state once: timers cleared, the owner told.
pub(crate) fn terminate<S: PartialEq + Copy>(
    state: &mut S,
    terminated: S,
    timers: &mut TimerSet,
    out: &mut Vec<TxOutput>,
) {
    if *state != terminated {
        *state = terminated;
        timers.clear();
        out.push(TxOutput::Terminated);
    }
}

/// One armed timer: its deadline and, for retransmit timers, the current interval.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Armed {
    pub(crate) name: TimerName,
    pub(crate) at: Instant,
    pub(crate) interval: Duration,
}

/// A small fixed set of timers per transaction (never more than three are armed at once).
#[derive(Debug, Default)]
pub(crate) struct TimerSet {
    armed: Vec<Armed>,
}

impl TimerSet {
    pub(crate) fn arm(&mut self, name: TimerName, now: Instant, interval: Duration) {
        self.cancel(name);
        self.armed.push(Armed { name, at: now + interval, interval });
    }
    pub(crate) fn cancel(&mut self, name: TimerName) {
        self.armed.retain(|a| a.name != name);
    }
    pub(crate) fn clear(&mut self) {
        self.armed.clear();
    }
    pub(crate) fn next(&self) -> Option<Instant> {
        self.armed.iter().map(|a| a.at).min()
    }
    /// Removes and returns the earliest timer due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Armed> {
        let (i, _) = self.armed.iter().enumerate().filter(|(_, a)| a.at <= now).min_by_key(|(_, a)| a.at)?;
        Some(self.armed.swap_remove(i))
    }
    #[cfg(test)]
    pub(crate) fn is_armed(&self, name: TimerName) -> bool {
        self.armed.iter().any(|a| a.name == name)
    }
}

#[cfg(test)]
mod tests;
