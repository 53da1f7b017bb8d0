//! Each call's SIP messages, kept by its shard for `GET /calls/{id}/trace`, and which call a
//! Call-ID belongs to (the correlation HEP packets carry). Bounded: at most
//! `trace_messages` messages a call and [`SHARD_BYTES`] of messages over the shard's traces
//! (later ones are counted, not kept), and the traces of the last `trace_ended_calls` ended
//! calls; the oldest ended call's trace goes first.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use crate::b2bua::{CallHandle, Peer, Transport};

/// Bytes of messages one shard's traces may hold: a caller that fills its call with large
/// re-INVITEs, or many such calls, cannot take more.
pub(crate) const SHARD_BYTES: usize = 64 << 20;

/// Which way a message went through the SBC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
}

/// One message of a call's trace.
#[derive(Debug, Clone)]
pub struct TraceEntry {
    pub at: SystemTime,
    pub direction: Direction,
    pub transport: Transport,
    /// The SBC's socket.
    pub local: std::net::SocketAddr,
    /// The peer: an address, or the host name the message was sent to.
    pub remote: Peer,
    pub interface: Arc<str>,
    pub message: Bytes,
}

/// A call's messages, in the order the shard saw them.
#[derive(Debug, Clone)]
pub struct CallTrace {
    /// The A leg's Call-ID: every message of the call is correlated by it.
    pub correlation: Arc<[u8]>,
    pub b_call_id: Box<[u8]>,
    pub messages: Vec<TraceEntry>,
    /// Messages past the limit, not kept.
    pub omitted: usize,
    pub ended: bool,
}

pub(crate) struct Traces {
    max_messages: usize,
    max_ended: usize,
    calls: HashMap<CallHandle, CallTrace>,
    by_call_id: HashMap<Box<[u8]>, CallHandle>,
    ended: VecDeque<CallHandle>,
    /// Bytes of the messages kept, over every trace.
    bytes: usize,
    max_bytes: usize,
}

impl Traces {
    pub(crate) fn new(max_messages: usize, max_ended: usize) -> Self {
        Self::with_budget(max_messages, max_ended, SHARD_BYTES)
    }

    fn with_budget(max_messages: usize, max_ended: usize, max_bytes: usize) -> Self {
        let (calls, by_call_id, ended) = (HashMap::new(), HashMap::new(), VecDeque::new());
        Self { max_messages, max_ended, calls, by_call_id, ended, bytes: 0, max_bytes }
    }

    pub(crate) fn started(&mut self, call: CallHandle, a_call_id: &[u8], b_call_id: &[u8]) {
        self.by_call_id.insert(a_call_id.into(), call);
        self.by_call_id.insert(b_call_id.into(), call);
        let trace = CallTrace {
            correlation: a_call_id.into(),
            b_call_id: b_call_id.into(),
            messages: Vec::new(),
            omitted: 0,
            ended: false,
        };
        self.calls.insert(call, trace);
    }

    /// The call is over; its trace stays among the last ended ones.
    pub(crate) fn ended(&mut self, call: CallHandle) {
        let Some(t) = self.calls.get_mut(&call) else { return };
        if t.ended {
            return;
        }
        t.ended = true;
        self.ended.push_back(call);
        while self.ended.len() > self.max_ended {
            let Some(old) = self.ended.pop_front() else { break };
            if let Some(t) = self.calls.remove(&old) {
                self.bytes -= t.messages.iter().map(|m| m.message.len()).sum::<usize>();
                for id in [&*t.correlation, &*t.b_call_id] {
                    if self.by_call_id.get(id) == Some(&old) {
                        self.by_call_id.remove(id);
                    }
                }
            }
        }
    }

    /// The call a Call-ID belongs to, and the call's correlation id.
    pub(crate) fn call_of(&self, call_id: &[u8]) -> Option<(CallHandle, &Arc<[u8]>)> {
        let call = *self.by_call_id.get(call_id)?;
        self.calls.get(&call).map(|t| (call, &t.correlation))
    }

    pub(crate) fn record(&mut self, call: CallHandle, entry: TraceEntry) {
        let (max, room) = (self.max_messages, self.max_bytes.saturating_sub(self.bytes));
        if let Some(t) = self.calls.get_mut(&call) {
            if t.messages.len() < max && entry.message.len() <= room {
                self.bytes += entry.message.len();
                t.messages.push(entry);
            } else {
                t.omitted += 1;
            }
        }
    }

    pub(crate) fn keeps_messages(&self) -> bool {
        self.max_messages > 0
    }

    pub(crate) fn get(&self, call: CallHandle) -> Option<&CallTrace> {
        self.calls.get(&call)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8) -> TraceEntry {
        TraceEntry {
            at: SystemTime::UNIX_EPOCH,
            direction: Direction::In,
            transport: Transport::Udp,
            local: "127.0.0.1:5060".parse().expect("addr"),
            remote: Peer::Addr("127.0.0.1:5070".parse().expect("addr")),
            interface: "default".into(),
            message: Bytes::from(vec![n]),
        }
    }

    #[test]
    fn both_legs_map_to_the_call_and_its_a_leg_call_id() {
        let mut t = Traces::new(2, 10);
        let call = CallHandle::from_raw(7);
        t.started(call, b"a@x", b"b@y");
        assert_eq!(t.call_of(b"b@y").map(|(c, k)| (c, k.to_vec())), Some((call, b"a@x".to_vec())));
        assert_eq!(t.call_of(b"a@x").map(|(c, _)| c), Some(call));
        assert!(t.call_of(b"other").is_none());
        for n in 0..5 {
            t.record(call, entry(n));
        }
        let trace = t.get(call).expect("kept");
        assert_eq!((trace.messages.len(), trace.omitted), (2, 3), "two kept, the rest counted");
        assert_eq!(&trace.messages[1].message[..], &[1]);
    }

    #[test]
    fn the_oldest_ended_calls_go_first_and_live_calls_stay() {
        let mut t = Traces::new(10, 2);
        let h = CallHandle::from_raw;
        for n in 1..=4u64 {
            t.started(h(n), format!("a{n}").as_bytes(), format!("b{n}").as_bytes());
        }
        t.ended(h(1));
        t.ended(h(2));
        t.ended(h(2));
        assert!(t.get(h(1)).is_some_and(|c| c.ended), "two ended calls fit");
        t.ended(h(3));
        assert!(t.get(h(1)).is_none() && t.call_of(b"b1").is_none(), "the oldest ended call went");
        assert!(t.get(h(2)).is_some() && t.get(h(3)).is_some());
        assert!(t.get(h(4)).is_some_and(|c| !c.ended), "a live call is never evicted");
    }

    #[test]
    fn the_shard_budget_bounds_what_is_kept_and_evictions_free_it() {
        let mut t = Traces::with_budget(10, 1, 2);
        let h = CallHandle::from_raw;
        t.started(h(1), b"a1", b"b1");
        t.started(h(2), b"a2", b"b2");
        t.record(h(1), entry(1));
        t.record(h(1), entry(2));
        t.record(h(2), entry(3));
        assert_eq!(t.get(h(2)).map(|c| (c.messages.len(), c.omitted)), Some((0, 1)), "over the budget: counted");
        t.ended(h(1));
        t.started(h(3), b"a3", b"b3");
        t.ended(h(3));
        assert!(t.get(h(1)).is_none(), "evicted");
        t.record(h(2), entry(4));
        assert_eq!(t.get(h(2)).map(|c| c.messages.len()), Some(1), "the evicted trace's bytes are free again");
    }

    #[test]
    fn a_transparent_call_id_serves_both_legs() {
        let mut t = Traces::new(10, 0);
        let call = CallHandle::from_raw(1);
        t.started(call, b"same", b"same");
        assert_eq!(t.call_of(b"same").map(|(c, _)| c), Some(call));
        t.ended(call);
        assert!(t.call_of(b"same").is_none() && t.get(call).is_none(), "no ended call kept");
    }
}
