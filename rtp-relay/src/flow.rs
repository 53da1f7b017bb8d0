//! The sans-IO flow table entry of one stream: where each side's packets go and which sources
//! are accepted. No sockets, no clock: the worker passes the time in milliseconds.
//!
//! Latching (symmetric RTP) resists RTP injection ("RTP bleed"): a side learns its peer's real
//! address from the first packet, and afterwards moves only to a packet from the address its SDP
//! names, or to any source during the latching window that follows the first latch or a new
//! offer/answer. Outside that window a stranger's packets are dropped and counted.

use std::net::SocketAddr;

use crate::counters::DropReason;

/// RTP or RTCP.
pub const RTP: usize = 0;
pub const RTCP: usize = 1;

/// What signalling says about one side of a stream (from that side's latest SDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RemoteSpec {
    /// Where that side wants RTP and RTCP (`None`: unknown, rejected, or held with 0.0.0.0).
    pub addr: [Option<SocketAddr>; 2],
    /// Send to where its packets come from, learned by latching.
    pub symmetric: bool,
    /// Drop RTP packets of this payload type that it sends (`rtprelay_dtmf_filtering`).
    pub drop_payload_type: Option<u8>,
}

/// Both sides of a stream; index 0 = A side, 1 = B side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamSpec {
    pub remotes: [RemoteSpec; 2],
}

/// One remote endpoint (a side's RTP or RTCP): its SDP address and what latching learned.
#[derive(Debug, Clone, Copy, Default)]
struct Endpoint {
    sdp: Option<SocketAddr>,
    latched: Option<SocketAddr>,
    /// Re-latching to any source is allowed until then (relay-epoch ms).
    open_until_ms: u64,
}

/// What to do with one received packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it out of the other side's socket of the same component to `dest`.
    Forward(SocketAddr),
    Drop(DropReason),
}

/// The verdict, and whether the packet moved the sender's latched address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    pub latched: bool,
}

/// The sans-IO state of one stream.
#[derive(Debug, Clone)]
pub struct StreamFlows {
    spec: StreamSpec,
    ends: [[Endpoint; 2]; 2],
    latch_window_ms: u64,
}

impl StreamFlows {
    pub fn new(spec: StreamSpec, latch_window_ms: u64, now_ms: u64) -> Self {
        let mut s = Self { spec: StreamSpec::default(), ends: Default::default(), latch_window_ms };
        s.update(spec, now_ms);
        s
    }

    pub fn spec(&self) -> &StreamSpec {
        &self.spec
    }

    /// A new offer or answer: new SDP addresses, and a fresh latching window on every endpoint
    /// of both sides (a peer may now send from somewhere else, and a source latched before the
    /// answer, when the real peer could not send yet, must not keep the stream).
    pub fn update(&mut self, spec: StreamSpec, now_ms: u64) {
        for side in 0..2 {
            for comp in [RTP, RTCP] {
                let e = &mut self.ends[side][comp];
                e.sdp = spec.remotes[side].addr[comp];
                e.open_until_ms = now_ms.saturating_add(self.latch_window_ms);
            }
        }
        self.spec = spec;
    }

    /// Where packets for `side`'s `comp` go now.
    pub fn target(&self, side: usize, comp: usize) -> Option<SocketAddr> {
        let e = &self.ends[side][comp];
        if self.spec.remotes[side].symmetric {
            // RTCP of a NAT-ed peer that has sent RTP but no RTCP yet: its public address, the
            // port after RTP (its SDP's RTCP address is private).
            let from_rtp = || {
                let rtp = self.ends[side][RTP].latched.filter(|_| comp == RTCP)?;
                Some(SocketAddr::new(rtp.ip(), rtp.port().checked_add(1)?))
            };
            e.latched.or_else(from_rtp).or(e.sdp)
        } else {
            e.sdp
        }
    }

    /// A packet `data` from `src` arrived on `side`'s `comp` socket at `now_ms`.
    pub fn on_packet(&mut self, side: usize, comp: usize, src: SocketAddr, data: &[u8], now_ms: u64) -> Outcome {
        let drop = |r, latched| Outcome { verdict: Verdict::Drop(r), latched };
        if data.len() < 4 {
            return drop(DropReason::Malformed, false);
        }
        let mut latched = false;
        if self.spec.remotes[side].symmetric {
            let window = self.latch_window_ms;
            let e = &mut self.ends[side][comp];
            match e.latched {
                Some(a) if a == src => {}
                None => {
                    e.latched = Some(src);
                    e.open_until_ms = e.open_until_ms.max(now_ms.saturating_add(window));
                    latched = true;
                }
                Some(_) if Some(src) == e.sdp || now_ms < e.open_until_ms => {
                    e.latched = Some(src);
                    latched = true;
                }
                Some(_) => return drop(DropReason::ForeignSource, false),
            }
        }
        // RFC 4733 events ride RTP; with rtcp-mux an RTCP packet (PT 200-204, RFC 5761 §4) on
        // the RTP socket is never mistaken for one.
        if let (RTP, Some(pt)) = (comp, self.spec.remotes[side].drop_payload_type) {
            let marker_pt = data[1];
            if marker_pt & 0x7f == pt && !(192..=223).contains(&marker_pt) {
                return drop(DropReason::DtmfFiltered, latched);
            }
        }
        match self.target(1 - side, comp) {
            Some(dest) => Outcome { verdict: Verdict::Forward(dest), latched },
            None => drop(DropReason::NoDestination, latched),
        }
    }
}

#[cfg(test)]
mod tests;
