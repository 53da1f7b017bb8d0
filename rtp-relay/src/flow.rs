//! The sans-IO flow table entry of one stream: where each side's packets go and which sources
//! are accepted. No sockets, no clock: the worker passes the time in milliseconds.
//!
//! Which sources a side's socket accepts (issue 16; latching resists RTP injection, "RTP
//! bleed"):
//! - a side's *preferred* sources are its SDP address's host and the host its signalling
//!   comes from; a side without symmetric RTP takes packets from those alone;
//! - a symmetric side latches onto the first source, and afterwards moves to another source
//!   only when that one is preferred (always, if the current one is not; else in the latching
//!   window that follows the first latch or a new offer/answer, or continuing the same SSRC),
//!   or when it continues the same SSRC within the window from a latch that is not preferred
//!   (a NAT binding that changed). A stranger can neither take a preferred latch nor start a
//!   new SSRC;
//! - every endpoint's accepted packets are policed to a packet rate (a flood through one
//!   stream stops there; a stranger's packets, dropped before, spend nothing).
use std::net::{IpAddr, SocketAddr};

use crate::counters::DropReason;
use crate::srtp::SideCrypto;

/// RTP or RTCP.
pub const RTP: usize = 0;
pub const RTCP: usize = 1;

/// What signalling says about one side of a stream (from that side's latest SDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct RemoteSpec {
    /// Where that side wants RTP and RTCP (`None`: unknown, rejected, or held with 0.0.0.0).
    pub addr: [Option<SocketAddr>; 2],
    /// Send to where its packets come from, learned by latching.
    pub symmetric: bool,
    /// Drop RTP packets of this payload type that it sends (`rtprelay_dtmf_filtering`).
    pub drop_payload_type: Option<u8>,
    /// The host this side's signalling comes from: a preferred media source.
    pub signalling: Option<IpAddr>,
    /// SRTP with this side: its keys and the relay's (`srtp/`); default: bytes as they come.
    #[serde(default)]
    pub crypto: SideCrypto,
}

/// Both sides of a stream; index 0 = A side, 1 = B side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct StreamSpec {
    pub remotes: [RemoteSpec; 2],
}

/// Limits every stream of a relay applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowLimits {
    /// After a first latch or a new offer/answer, a symmetric side may move for this long.
    pub latch_window_ms: u64,
    /// Packets a second one endpoint (a side's RTP or RTCP) may send; 0 = no limit.
    pub max_packet_rate: u32,
}

/// One remote endpoint (a side's RTP or RTCP): its SDP address and what latching learned.
#[derive(Debug, Clone, Copy, Default)]
struct Endpoint {
    sdp: Option<SocketAddr>,
    latched: Option<SocketAddr>,
    /// The SSRC the latched source sends (RTP, or RTCP's sender SSRC).
    ssrc: Option<u32>,
    /// Re-latching is allowed until then (relay-epoch ms).
    open_until_ms: u64,
    /// Packet-rate bucket: tokens left and when it was last filled.
    tokens: u32,
    filled_ms: u64,
}

impl Endpoint {
    /// Takes one packet's token; refills at `rate` a second up to one second's worth.
    fn police(&mut self, rate: u32, now_ms: u64) -> bool {
        if rate == 0 {
            return true;
        }
        let earned = now_ms.saturating_sub(self.filled_ms).saturating_mul(u64::from(rate)) / 1000;
        if earned > 0 {
            self.tokens = u64::from(self.tokens).saturating_add(earned).min(u64::from(rate)) as u32;
            self.filled_ms = now_ms;
        }
        match self.tokens.checked_sub(1) {
            Some(left) => {
                self.tokens = left;
                true
            }
            None => false,
        }
    }
}

/// An RTCP packet: on the RTCP socket, or multiplexed on the RTP one (RFC 5761 §4: packet
/// types 192-223 are not RTP payload types).
pub(crate) fn is_rtcp(comp: usize, data: &[u8]) -> bool {
    comp == RTCP || data.get(1).is_some_and(|pt| (192..=223).contains(pt))
}

/// The SSRC of an RTP packet, or the sender SSRC of an RTCP one (RFC 3550 §5.1, §6.4).
fn ssrc(comp: usize, data: &[u8]) -> Option<u32> {
    ssrc_of(is_rtcp(comp, data), data)
}

/// The same, the packet's kind known (also the SRTP contexts', `srtp/contexts.rs`).
pub(crate) fn ssrc_of(rtcp: bool, data: &[u8]) -> Option<u32> {
    let at = if rtcp { 4 } else { 8 };
    let b = data.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
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
    limits: FlowLimits,
}

impl StreamFlows {
    pub fn new(spec: StreamSpec, limits: FlowLimits, now_ms: u64) -> Self {
        let mut s = Self { spec: StreamSpec::default(), ends: Default::default(), limits };
        for e in s.ends.iter_mut().flatten() {
            (e.tokens, e.filled_ms) = (limits.max_packet_rate, now_ms);
        }
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
                e.open_until_ms = now_ms.saturating_add(self.limits.latch_window_ms);
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

    /// Whether `ip` is a preferred source of `side`: its SDP host or its signalling host.
    fn preferred(&self, side: usize, comp: usize, ip: IpAddr) -> bool {
        let canon = ip.to_canonical();
        let sdp = [self.ends[side][comp].sdp, self.ends[side][RTP].sdp];
        sdp.iter().flatten().any(|a| a.ip().to_canonical() == canon)
            || self.spec.remotes[side].signalling.is_some_and(|s| s.to_canonical() == canon)
    }

    /// A packet `data` from `src` arrived on `side`'s `comp` socket at `now_ms`:
    /// [`admit`](Self::admit), then [`accept`](Self::accept).
    pub fn on_packet(&mut self, side: usize, comp: usize, src: SocketAddr, data: &[u8], now_ms: u64) -> Outcome {
        match self.admit(side, comp, src, data, now_ms) {
            Ok(()) => self.accept(side, comp, src, data, now_ms),
            Err(r) => Outcome { verdict: Verdict::Drop(r), latched: false },
        }
    }

    /// Whether a packet is taken: its source (nothing changes: a packet that then fails SRTP
    /// authentication must not have moved a latch), then the endpoint's packet rate (policed
    /// once the source is accepted: a stranger's flood must not spend the real peer's budget
    /// and cut its audio).
    pub fn admit(
        &mut self,
        side: usize,
        comp: usize,
        src: SocketAddr,
        data: &[u8],
        now_ms: u64,
    ) -> Result<(), DropReason> {
        if data.len() < 4 {
            return Err(DropReason::Malformed);
        }
        if !self.source_ok(side, comp, src, data, now_ms) {
            return Err(DropReason::ForeignSource);
        }
        if !self.ends[side][comp].police(self.limits.max_packet_rate, now_ms) {
            return Err(DropReason::RateLimited);
        }
        Ok(())
    }

    /// Whether `src` may send on `side`'s `comp` now (see the module's rules).
    fn source_ok(&self, side: usize, comp: usize, src: SocketAddr, data: &[u8], now_ms: u64) -> bool {
        if !self.spec.remotes[side].symmetric {
            return self.preferred(side, comp, src.ip());
        }
        let e = &self.ends[side][comp];
        match e.latched {
            None => true,
            Some(a) if a == src => true,
            Some(a) => {
                let preferred = self.preferred(side, comp, src.ip());
                let current_preferred = self.preferred(side, comp, a.ip());
                let in_window = now_ms < e.open_until_ms;
                let packet_ssrc = ssrc(comp, data);
                let same_ssrc = packet_ssrc.is_some() && packet_ssrc == e.ssrc;
                Some(src) == e.sdp
                    // A preferred host: from a stranger's latch at any time; from another
                    // preferred source in the window, or continuing its SSRC (a NAT binding
                    // of the phone's that moved to a new port late in the call).
                    || (preferred && (!current_preferred || in_window || same_ssrc))
                    || (!current_preferred && in_window && same_ssrc)
            }
        }
    }

    /// An admitted packet: latching (a symmetric side's source is learned), the DTMF filter,
    /// the destination.
    pub fn accept(&mut self, side: usize, comp: usize, src: SocketAddr, data: &[u8], now_ms: u64) -> Outcome {
        let drop = |r, latched| Outcome { verdict: Verdict::Drop(r), latched };
        let mut latched = false;
        if self.spec.remotes[side].symmetric {
            let window = self.limits.latch_window_ms;
            let packet_ssrc = ssrc(comp, data);
            let e = &mut self.ends[side][comp];
            match e.latched {
                // The packet of almost every call: from where the side is latched. An SSRC
                // change is taken from the latched address only.
                Some(a) if a == src => e.ssrc = packet_ssrc.or(e.ssrc),
                None => {
                    e.latched = Some(src);
                    e.ssrc = packet_ssrc;
                    e.open_until_ms = e.open_until_ms.max(now_ms.saturating_add(window));
                    latched = true;
                }
                // Admitted from elsewhere: it takes over.
                Some(_) => {
                    e.latched = Some(src);
                    e.ssrc = packet_ssrc;
                    latched = true;
                }
            }
        }
        // RFC 4733 events ride RTP; with rtcp-mux an RTCP packet (PT 200-204, RFC 5761 §4) on
        // the RTP socket is never mistaken for one.
        if let (RTP, Some(pt), Some(&marker_pt)) = (comp, self.spec.remotes[side].drop_payload_type, data.get(1)) {
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
