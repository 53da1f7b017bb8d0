//! The relay's driver half: it binds the pairs a shard's [`MediaBook`](crate::book::MediaBook)
//! lent, hands the sockets to the [`Forwarder`] and carries out the book's commands. It runs
//! in the driver, never in the engine.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::counters::{RelayStats, StreamCounters};
use crate::flow::{FlowLimits, StreamSpec};
use crate::forwarder::{Forwarder, NewStream, PacketTap, StreamId, StreamSockets};
use crate::ports::{bind_pair, MediaInterface, PortLease, ReleaseSink};
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
}

impl RelayConfig {
    fn limits(&self) -> FlowLimits {
        FlowLimits { latch_window_ms: self.latch_window.as_millis() as u64, max_packet_rate: self.max_packet_rate }
    }
}

/// Why a stream did not open, and the pair that would not bind (another process holds it).
#[derive(Debug)]
pub struct OpenError {
    pub error: RelayError,
    pub busy: Option<(usize, u16)>,
}

pub struct Relay {
    interfaces: Vec<MediaInterface>,
    forwarder: Arc<dyn Forwarder>,
    epoch: Instant,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").field("interfaces", &self.interfaces.len()).finish()
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
        Arc::new(Self { interfaces: cfg.interfaces.clone(), forwarder, epoch })
    }

    pub fn interfaces(&self) -> &[MediaInterface] {
        &self.interfaces
    }

    /// Packet counters of every worker (ports and refusals are counted by the books).
    pub fn stats(&self) -> RelayStats {
        let mut s = RelayStats::default();
        for w in self.forwarder.worker_counters() {
            s.add_worker(&w);
        }
        s
    }

    /// Binds a stream's pairs (interface index, RTP port) and starts relaying it, copying its
    /// packets to `tap` if there is one. Each pair goes back through `release` once its
    /// sockets are closed, also when this fails.
    pub fn open(
        &self,
        stream: StreamId,
        ports: [(usize, u16); 2],
        spec: StreamSpec,
        tap: Option<Arc<dyn PacketTap>>,
        release: &ReleaseSink,
    ) -> Result<Arc<StreamCounters>, OpenError> {
        let [a, b] = ports.map(|(iface, port)| PortLease::new(iface, port, release.clone()));
        let ip = |lease: &PortLease| self.interfaces.get(lease.iface).map(|i| i.bind);
        let (Some(ip_a), Some(ip_b)) = (ip(&a), ip(&b)) else {
            let error = RelayError::UnknownInterface(format!("#{}", a.iface.max(b.iface)));
            return Err(OpenError { error, busy: None });
        };
        let busy = |pair: (usize, u16), e: std::io::Error| {
            let interface = self.interfaces.get(pair.0).map_or("", |i| i.name.as_str()).to_string();
            tracing::warn!(error = %e, %interface, port = pair.1, "media port held by another process: set aside");
            OpenError { error: RelayError::NoPorts { interface }, busy: Some(pair) }
        };
        let (pa, pb) = ((a.iface, a.port), (b.iface, b.port));
        let a = bind_pair(ip_a, a).map_err(|e| busy(pa, e))?;
        let b = bind_pair(ip_b, b).map_err(|e| busy(pb, e))?;
        let local =
            |s: &std::net::UdpSocket, ip: IpAddr, port: u16| s.local_addr().unwrap_or(SocketAddr::new(ip, port));
        let locals = [
            [local(&a.rtp, ip_a, a.lease.port), local(&a.rtcp, ip_a, a.lease.port + 1)],
            [local(&b.rtp, ip_b, b.lease.port), local(&b.rtcp, ip_b, b.lease.port + 1)],
        ];
        let counters = Arc::new(StreamCounters::default());
        let sockets = StreamSockets { sockets: [[a.rtp, a.rtcp], [b.rtp, b.rtcp]], locals, leases: [a.lease, b.lease] };
        self.forwarder
            .add(NewStream { id: stream, sockets, spec, counters: counters.clone(), tap })
            .map_err(|e| OpenError { error: e.into(), busy: None })?;
        Ok(counters)
    }

    /// New SDP addresses or options for a stream.
    pub fn update(&self, stream: StreamId, spec: StreamSpec) {
        self.forwarder.update(stream, spec);
    }

    /// The forwarder closes the sockets and drops their leases: the pairs go back then.
    pub fn close(&self, stream: StreamId) {
        self.forwarder.remove(stream);
    }

    /// When either side of a stream last sent a packet (`None`: never).
    pub fn last_activity(&self, counters: &StreamCounters) -> Option<Instant> {
        let ms = counters.last_rx_ms();
        (ms > 0).then(|| self.epoch + Duration::from_millis(ms - 1))
    }
}
