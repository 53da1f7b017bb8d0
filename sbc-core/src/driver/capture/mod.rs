//! Copies of the SIP messages a shard receives and sends: to Homer as HEPv3 (`export.rs`,
//! `hep.rs`) and into each call's trace (`trace.rs`), both correlated by the call's A-leg
//! Call-ID. Received messages are taken as they reach the shard, sent ones as they are handed
//! to the sockets (HEP: once their address is known, in `Shared::send_to`). Datagrams the
//! edge guards drop before a shard sees them (`shed.rs`, admission's ignore list) are counted
//! there and not copied: a flood is not passed on to Homer.

mod export;
mod hep;
mod pcap;
mod trace;

pub(crate) use export::HepExport;
pub use export::{HepCounters, HepDrop};
pub(crate) use hep::Captured;
pub(crate) use pcap::{PcapFile, PcapWriter};
pub use trace::{CallTrace, Direction, TraceEntry};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use crate::b2bua::{CallHandle, Destination, Event, Interface, Output, Peer, Source};
use profiles::config::CaptureSettings;
use trace::Traces;

/// A shard's side of capture.
pub(crate) struct ShardCapture {
    hep: Option<Arc<HepExport>>,
    traces: Traces,
    /// By socket id: its address and interface.
    sockets: Vec<Option<(SocketAddr, Arc<str>)>>,
    /// The batch's received messages whose Call-ID no call had yet (a new call's first
    /// request): its events may start their call.
    pending: Vec<(Box<[u8]>, TraceEntry)>,
    /// Calls the batch ended: forgotten (down to the ended calls kept) once its messages left.
    ending: Vec<CallHandle>,
    /// Per-call pcap files (`msg_logger_path`).
    pcap_writer: Arc<PcapWriter>,
    pcaps: pcap::PcapCalls,
}

impl ShardCapture {
    pub(crate) fn new(
        hep: Option<Arc<HepExport>>,
        pcap_writer: Arc<PcapWriter>,
        settings: &CaptureSettings,
        interfaces: &[Interface],
    ) -> Self {
        let mut sockets = Vec::new();
        for iface in interfaces {
            let name: Arc<str> = iface.name.as_str().into();
            for s in &iface.sockets {
                let id = usize::from(s.id);
                if sockets.len() <= id {
                    sockets.resize(id + 1, None);
                }
                sockets[id] = Some((s.addr, name.clone()));
            }
        }
        Self {
            hep,
            traces: Traces::new(settings.trace_messages, settings.trace_ended_calls),
            sockets,
            pending: Vec::new(),
            ending: Vec::new(),
            pcap_writer,
            pcaps: pcap::PcapCalls::default(),
        }
    }

    /// Whether anything is copied. A profile may name a pcap file at any reload, so messages
    /// that may open a call are always looked at.
    fn on(&self) -> bool {
        self.hep.is_some() || self.traces.keeps_messages() || self.pcaps.any()
    }

    /// A message the shard got. `opens_dialog`: it may start a call (an INVITE or SUBSCRIBE
    /// without a To tag), so it is held until the batch's events say whether it did.
    pub(crate) fn received(&mut self, bytes: &Bytes, call_id: Option<&[u8]>, opens_dialog: bool, src: &Source) {
        if !self.on() && !opens_dialog {
            return;
        }
        let Some(Some((local, interface))) = self.sockets.get(usize::from(src.local)) else { return };
        let at = wall_clock();
        let known = call_id.and_then(|id| self.traces.call_of(id));
        if let Some(hep) = &self.hep {
            let correlation = known.map(|(_, c)| &**c).or(call_id);
            let m =
                Captured { at, transport: src.transport, src: src.remote, dst: *local, correlation, payload: bytes };
            hep.export(src.local, &m);
        }
        let Some(id) = call_id else { return };
        let call = known.map(|(call, _)| call);
        let (trace, pcap) = (self.traces.keeps_messages(), self.pcaps.any() || opens_dialog);
        if !pcap && (!trace || call.is_none() && !opens_dialog) {
            return;
        }
        let entry = TraceEntry {
            at,
            direction: Direction::In,
            transport: src.transport,
            local: *local,
            remote: Peer::Addr(src.remote),
            interface: interface.clone(),
            // A stream's message is a slice of its connection's read buffer: a copy keeps only
            // the message.
            message: if src.transport.is_reliable() { Bytes::copy_from_slice(bytes) } else { bytes.clone() },
        };
        if pcap {
            self.pcaps.message(id, opens_dialog, &entry);
        }
        match call {
            Some(call) if trace => self.traces.record(call, entry),
            None if trace && opens_dialog => self.pending.push((id.into(), entry)),
            _ => {}
        }
    }

    /// The batch's outputs, before any is sent: calls that started learn their Call-IDs, and
    /// the batch's received messages join them.
    pub(crate) fn before_sends(&mut self, outputs: &[Output]) {
        for o in outputs {
            match o {
                Output::Event(Event::CallStarted { call, a_call_id, b_call_id, pcap }) => {
                    if let Some(path) = pcap {
                        self.pcaps.started(&self.pcap_writer, *call, a_call_id, b_call_id, path.clone());
                    }
                    if self.hep.is_some() || self.traces.keeps_messages() {
                        self.traces.started(*call, a_call_id, b_call_id);
                    }
                }
                Output::Event(Event::CallEnded { call, .. }) => self.ending.push(*call),
                _ => {}
            }
        }
        self.pcaps.flush();
        for (id, entry) in self.pending.drain(..) {
            if let Some((call, _)) = self.traces.call_of(&id) {
                self.traces.record(call, entry);
            }
        }
    }

    /// A message about to be sent: kept in its call's trace; its correlation id (for HEP),
    /// when HEP is on.
    pub(crate) fn sent(&mut self, dest: &Destination, bytes: &Bytes) -> Option<Arc<[u8]>> {
        if !self.on() {
            return None;
        }
        let call_id = call_id_of(bytes);
        let known = call_id.and_then(|id| self.traces.call_of(id)).map(|(call, c)| (call, c.clone()));
        let trace = known.as_ref().map(|(call, _)| *call).filter(|_| self.traces.keeps_messages());
        if let (Some(Some((local, interface))), true) =
            (self.sockets.get(usize::from(dest.local)), trace.is_some() || self.pcaps.any())
        {
            let entry = TraceEntry {
                at: wall_clock(),
                direction: Direction::Out,
                transport: dest.transport,
                local: *local,
                remote: dest.peer.clone(),
                interface: interface.clone(),
                message: bytes.clone(),
            };
            if let Some(id) = call_id.filter(|_| self.pcaps.any()) {
                self.pcaps.message(id, false, &entry);
            }
            if let Some(call) = trace {
                self.traces.record(call, entry);
            }
        }
        self.hep.as_ref()?;
        known.map(|(_, c)| c).or_else(|| call_id.map(Arc::from))
    }

    /// The batch's messages left: the calls it ended become ended traces.
    pub(crate) fn after_sends(&mut self) {
        for call in std::mem::take(&mut self.ending) {
            self.pcaps.ended(call);
            self.traces.ended(call);
        }
    }

    pub(crate) fn trace(&self, call: CallHandle) -> Option<CallTrace> {
        self.traces.get(call).cloned()
    }
}

#[allow(clippy::disallowed_methods)] // driver-side: capture times are wall-clock times
fn wall_clock() -> SystemTime {
    SystemTime::now()
}

/// The Call-ID of a message the engine built (`Call-ID` or its compact form `i`), read
/// without parsing the rest.
pub(crate) fn call_id_of(msg: &[u8]) -> Option<&[u8]> {
    let head_end = msg.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(msg.len());
    for line in msg[..head_end].split(|b| *b == b'\n').skip(1) {
        let Some(colon) = line.iter().position(|b| *b == b':') else { continue };
        let name = line[..colon].trim_ascii();
        if name.eq_ignore_ascii_case(b"call-id") || name.eq_ignore_ascii_case(b"i") {
            return Some(line[colon + 1..].trim_ascii());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_call_id_is_read_in_either_form_and_only_from_the_head() {
        let full = b"INVITE sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nCall-ID:  abc@h \r\nCSeq: 1 INVITE\r\n\r\n";
        assert_eq!(call_id_of(full), Some(&b"abc@h"[..]));
        let compact = b"SIP/2.0 200 OK\r\ni: xyz\r\n\r\n";
        assert_eq!(call_id_of(compact), Some(&b"xyz"[..]));
        let in_body = b"SIP/2.0 200 OK\r\nCSeq: 1 BYE\r\n\r\nCall-ID: not-a-header\r\n";
        assert_eq!(call_id_of(in_body), None);
    }
}
