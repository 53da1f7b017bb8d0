//! The control plane: a [`Relay`] holds the port pools and the forwarder; a [`Session`] is the
//! media of one call. Signalling hands each SDP it relays to the session (from which side, what
//! each m-line says) and gets back the address and port to write in its place. Dropping the
//! session releases every port and flow, whatever way the call ended.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::counters::{RelayStats, SideSnapshot, StreamCounters};
use crate::flow::{FlowLimits, RemoteSpec, StreamSpec};
use crate::forwarder::{Forwarder, NewStream, StreamId, StreamSockets};
use crate::policy::{built_in, DestinationPolicy};
use crate::ports::{MediaInterface, PortPool};
use crate::userspace::UserspaceForwarder;
use crate::RelayError;

#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub interfaces: Vec<MediaInterface>,
    /// After a first latch or a new offer/answer, a symmetric side may move to a new source
    /// for this long; afterwards only its SDP address may take over.
    pub latch_window: Duration,
    /// Forwarder threads (0 = one per core).
    pub workers: usize,
    /// Packets a second one endpoint of a stream may send (0 = no limit).
    pub max_packet_rate: u32,
    /// m-lines relayed per call; further ones are rejected (port 0).
    pub max_streams: usize,
    /// The configuration's rules for media destinations, beyond the relay's own.
    pub policy: Option<Arc<dyn DestinationPolicy>>,
}

impl RelayConfig {
    fn limits(&self) -> FlowLimits {
        FlowLimits { latch_window_ms: self.latch_window.as_millis() as u64, max_packet_rate: self.max_packet_rate }
    }
}

pub struct Relay {
    pools: Vec<Arc<PortPool>>,
    max_streams: usize,
    policy: Option<Arc<dyn DestinationPolicy>>,
    destinations_refused: AtomicU64,
    forwarder: Arc<dyn Forwarder>,
    epoch: Instant,
    next_stream: AtomicU64,
    allocation_failures: AtomicU64,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").field("interfaces", &self.pools.len()).finish()
    }
}

impl Relay {
    /// A relay with the userspace forwarder.
    pub fn start(cfg: &RelayConfig) -> Result<Arc<Self>, RelayError> {
        let epoch = Instant::now();
        let workers = match cfg.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let own: Arc<[MediaInterface]> = cfg.interfaces.clone().into();
        let fwd = UserspaceForwarder::start(workers, epoch, cfg.limits(), own)?;
        Ok(Self::with_forwarder(cfg, Arc::new(fwd), epoch))
    }

    /// A relay over any forwarder (an offload backend, a test double). `epoch` must be the
    /// forwarder's zero of time.
    pub fn with_forwarder(cfg: &RelayConfig, forwarder: Arc<dyn Forwarder>, epoch: Instant) -> Arc<Self> {
        let pools = cfg.interfaces.iter().cloned().map(|i| Arc::new(PortPool::new(i))).collect();
        Arc::new(Self {
            pools,
            max_streams: cfg.max_streams,
            policy: cfg.policy.clone(),
            destinations_refused: AtomicU64::new(0),
            forwarder,
            epoch,
            next_stream: AtomicU64::new(1),
            allocation_failures: AtomicU64::new(0),
        })
    }

    pub fn interfaces(&self) -> impl Iterator<Item = &MediaInterface> {
        self.pools.iter().map(|p| &p.iface)
    }

    /// Port pairs an interface can hand out in total.
    pub fn capacity(&self, interface: &str) -> Option<usize> {
        self.pool(interface).ok().map(|p| p.capacity())
    }

    fn pool(&self, name: &str) -> Result<&Arc<PortPool>, RelayError> {
        self.pools.iter().find(|p| p.iface.name == name).ok_or_else(|| RelayError::UnknownInterface(name.to_string()))
    }

    pub fn stats(&self) -> RelayStats {
        let mut s = RelayStats::default();
        for w in self.forwarder.worker_counters() {
            s.add_worker(&w);
        }
        s.ports_in_use = self.pools.iter().map(|p| p.in_use.load(Relaxed)).sum();
        s.allocation_failures = self.allocation_failures.load(Relaxed);
        s.destinations_refused = self.destinations_refused.load(Relaxed);
        s
    }

    /// Why a side on media interface `iface` must not send to `dest` (see `policy.rs`).
    fn refuse_destination(&self, iface: &str, dest: SocketAddr) -> Option<&'static str> {
        let side = self.pool(iface).ok().map(|p| &p.iface)?;
        built_in(self.interfaces(), side, dest).or_else(|| self.policy.as_ref().and_then(|p| p.refuse(dest)))
    }

    /// Media of a new call. Fails when an interface is not configured.
    pub fn session(self: &Arc<Self>, sides: [SideOptions; 2]) -> Result<Session, RelayError> {
        for s in &sides {
            self.pool(&s.interface)?;
        }
        Ok(Session { relay: self.clone(), sides, streams: Vec::new() })
    }
}

/// How the relay treats one side of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SideOptions {
    /// Media interface whose ports this side is given.
    pub interface: String,
    /// Latch: send to where this side's packets come from (NAT).
    pub symmetric: bool,
    /// Drop RFC 4733 event packets this side sends.
    pub dtmf_filtering: bool,
    /// The host this side's signalling comes from (a preferred media source, see `flow.rs`).
    pub signalling: Option<IpAddr>,
}

/// One m-line of an SDP, as far as the relay cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offered {
    /// UDP-based (RTP, RTCP, UDPTL): something the relay can carry.
    pub relayable: bool,
    /// Port 0: the stream is rejected or removed.
    pub rejected: bool,
    /// Where the side wants RTP and RTCP; `None` with a zero address (hold, RFC 2543).
    pub rtp: Option<SocketAddr>,
    pub rtcp: Option<SocketAddr>,
    /// sendonly/recvonly/inactive or a zero address.
    pub held: bool,
    /// The telephone-event payload type, if any.
    pub dtmf_payload_type: Option<u8>,
    /// The side says it sends first from behind NAT (`a=direction:active`): latch on it even
    /// without forced symmetric RTP.
    pub sends_first: bool,
}

/// What to write in the SDP going to the other side for one m-line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advert {
    pub addr: IpAddr,
    /// RTP port; RTCP is the next one.
    pub port: u16,
}

/// Streams (m-lines) relayed per call by default; further ones are rejected, so one SDP
/// cannot take a pool's ports (an audio and a video stream with room to spare).
pub const DEFAULT_MAX_STREAMS: usize = 4;

#[derive(Debug)]
struct Stream {
    id: StreamId,
    ports: [u16; 2],
    spec: StreamSpec,
    counters: Arc<StreamCounters>,
    held: [bool; 2],
    /// The telephone-event payload type each side's SDP names.
    dtmf_pt: [Option<u8>; 2],
}

/// What [`Session::update`] did with an SDP.
#[derive(Debug)]
pub struct Anchoring {
    /// Per m-line: what to advertise to the other side; `None`: write port 0 (rejected, not
    /// relayable, or no ports).
    pub adverts: Vec<Option<Advert>>,
    /// Why some stream got no ports (the others are anchored).
    pub failure: Option<RelayError>,
    /// Streams refused for where their SDP aimed them: (m-line index, reason, address).
    pub refused: Vec<(usize, &'static str, SocketAddr)>,
}

impl Anchoring {
    /// Streams were offered but none could be anchored for lack of ports.
    pub fn nothing_anchored(&self) -> bool {
        self.failure.is_some() && self.adverts.iter().all(Option::is_none)
    }
}

/// The media of one call; side index 0 = A (caller), 1 = B (callee).
pub struct Session {
    relay: Arc<Relay>,
    sides: [SideOptions; 2],
    streams: Vec<Option<Stream>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("sides", &self.sides).field("streams", &self.streams).finish()
    }
}

impl Session {
    /// An SDP from side `from` (0 = A, 1 = B) with these m-lines, in order. A stream that gets
    /// no ports is rejected; the others go on.
    pub fn update(&mut self, from: usize, media: &[Offered]) -> Anchoring {
        let from = from.min(1);
        let to = 1 - from;
        let max_streams = self.relay.max_streams;
        if self.streams.len() < media.len().min(max_streams) {
            self.streams.resize_with(media.len().min(max_streams), || None);
        }
        let mut out = Vec::with_capacity(media.len());
        let mut failure = None;
        let mut refused = Vec::new();
        for (i, m) in media.iter().enumerate() {
            if i >= max_streams {
                out.push(None);
                continue;
            }
            // RTCP goes to its own address, or to the RTP port + 1: both are checked.
            let rtcp = m.rtcp.or_else(|| m.rtp.map(|a| SocketAddr::new(a.ip(), a.port().wrapping_add(1))));
            let aimed_badly = [m.rtp, rtcp]
                .into_iter()
                .flatten()
                .find_map(|dest| self.relay.refuse_destination(&self.sides[from].interface, dest).map(|r| (r, dest)));
            if let Some((reason, dest)) = aimed_badly.filter(|_| !m.rejected && m.relayable) {
                self.relay.destinations_refused.fetch_add(1, Relaxed);
                refused.push((i, reason, dest));
            }
            if m.rejected || !m.relayable || aimed_badly.is_some() {
                if let Some(s) = self.streams[i].take() {
                    self.close(s);
                }
                out.push(None);
                continue;
            }
            let remote = RemoteSpec {
                addr: [m.rtp, m.rtcp.or_else(|| m.rtp.map(|a| SocketAddr::new(a.ip(), a.port().wrapping_add(1))))],
                symmetric: self.sides[from].symmetric || m.sends_first,
                drop_payload_type: None,
                signalling: self.sides[from].signalling,
            };
            let filtering = [self.sides[0].dtmf_filtering, self.sides[1].dtmf_filtering];
            match self.streams[i].as_mut() {
                Some(s) => {
                    s.held[from] = m.held;
                    s.dtmf_pt[from] = m.dtmf_payload_type;
                    let mut spec = s.spec;
                    spec.remotes[from] = remote;
                    set_dtmf_drops(&mut spec, s.dtmf_pt, filtering);
                    if spec != s.spec {
                        s.spec = spec;
                        self.relay.forwarder.update(s.id, s.spec);
                    }
                }
                None => {
                    let mut spec = StreamSpec::default();
                    spec.remotes[from] = remote;
                    let mut dtmf_pt = [None; 2];
                    dtmf_pt[from] = m.dtmf_payload_type;
                    set_dtmf_drops(&mut spec, dtmf_pt, filtering);
                    match self.open(spec) {
                        Ok(mut s) => {
                            s.held[from] = m.held;
                            s.dtmf_pt = dtmf_pt;
                            self.streams[i] = Some(s);
                        }
                        Err(e) => {
                            failure = Some(e);
                            out.push(None);
                            continue;
                        }
                    }
                }
            }
            let addr = self.advertised(to);
            out.push(self.streams[i].as_ref().zip(addr).map(|(s, addr)| Advert { addr, port: s.ports[to] }));
        }
        Anchoring { adverts: out, failure, refused }
    }

    fn open(&self, spec: StreamSpec) -> Result<Stream, RelayError> {
        let fail = |e| {
            self.relay.allocation_failures.fetch_add(1, Relaxed);
            e
        };
        let pa = self.relay.pool(&self.sides[0].interface)?;
        let pb = self.relay.pool(&self.sides[1].interface)?;
        // A pair taken here goes back by itself if anything below fails (its lease drops).
        let a = pa.take().map_err(fail)?;
        let b = pb.take().map_err(fail)?;
        let local =
            |s: &std::net::UdpSocket, ip: IpAddr, port: u16| s.local_addr().unwrap_or(SocketAddr::new(ip, port));
        let locals = [
            [local(&a.rtp, pa.iface.bind, a.lease.port), local(&a.rtcp, pa.iface.bind, a.lease.port + 1)],
            [local(&b.rtp, pb.iface.bind, b.lease.port), local(&b.rtcp, pb.iface.bind, b.lease.port + 1)],
        ];
        let ports = [a.lease.port, b.lease.port];
        let id = self.relay.next_stream.fetch_add(1, Relaxed);
        let counters = Arc::new(StreamCounters::default());
        let sockets = StreamSockets { sockets: [[a.rtp, a.rtcp], [b.rtp, b.rtcp]], locals, leases: [a.lease, b.lease] };
        if let Err(e) = self.relay.forwarder.add(NewStream { id, sockets, spec, counters: counters.clone() }) {
            return Err(fail(e.into()));
        }
        Ok(Stream { id, ports, spec, counters, held: [false; 2], dtmf_pt: [None; 2] })
    }

    /// Side `side`'s signalling now comes from `host` (a failover to another next hop): its
    /// streams prefer that host's media from now on.
    pub fn set_signalling(&mut self, side: usize, host: Option<IpAddr>) {
        let side = side.min(1);
        self.sides[side].signalling = host;
        for s in self.streams.iter_mut().flatten() {
            if s.spec.remotes[side].signalling != host {
                s.spec.remotes[side].signalling = host;
                self.relay.forwarder.update(s.id, s.spec);
            }
        }
    }

    /// The forwarder closes the sockets and drops their leases: the ports go back then.
    fn close(&self, s: Stream) {
        self.relay.forwarder.remove(s.id);
    }

    /// The address SDP going to `side` names (its media interface's advertised address).
    pub fn advertised(&self, side: usize) -> Option<IpAddr> {
        self.relay.pool(&self.sides[side.min(1)].interface).ok().map(|p| p.iface.advertised())
    }

    /// When either side last sent a packet on any stream (`None`: never).
    pub fn last_activity(&self) -> Option<Instant> {
        let ms = self.streams.iter().flatten().map(|s| s.counters.last_rx_ms()).max().filter(|&m| m > 0)?;
        Some(self.relay.epoch + Duration::from_millis(ms.saturating_sub(1)))
    }

    /// Every open stream is held by one side or the other.
    pub fn on_hold(&self) -> bool {
        let mut open = self.streams.iter().flatten().peekable();
        open.peek().is_some() && open.all(|s| s.held[0] || s.held[1])
    }

    /// Counters of each m-line's stream (`None` for rejected ones).
    pub fn stream_stats(&self) -> Vec<Option<[SideSnapshot; 2]>> {
        self.streams.iter().map(|s| s.as_ref().map(|s| s.counters.snapshot())).collect()
    }

    /// Counters per side summed over every open stream.
    pub fn totals(&self) -> [SideSnapshot; 2] {
        let mut t = [SideSnapshot::default(); 2];
        for s in self.streams.iter().flatten() {
            for (acc, side) in t.iter_mut().zip(s.counters.snapshot()) {
                acc.add(&side);
            }
        }
        t
    }

    pub fn open_streams(&self) -> usize {
        self.streams.iter().flatten().count()
    }
}

/// A sender uses the payload numbers of the SDP it received (RFC 3264 §5.1), so events from a
/// side carry the other side's telephone-event number (its own until that is known).
fn set_dtmf_drops(spec: &mut StreamSpec, dtmf_pt: [Option<u8>; 2], filtering: [bool; 2]) {
    for side in 0..2 {
        spec.remotes[side].drop_payload_type = dtmf_pt[1 - side].or(dtmf_pt[side]).filter(|_| filtering[side]);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for s in std::mem::take(&mut self.streams).into_iter().flatten() {
            self.close(s);
        }
    }
}

#[cfg(test)]
mod tests;
