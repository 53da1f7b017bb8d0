//! The vocabulary shared by the engine and its driver: transports, sockets, where a message
//! came from and where one must go.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::sip::transaction::TimerConfig;

pub use profiles::config::Transport;

/// Index of a listening socket in the driver's socket table.
pub type SocketId = u16;
/// A TCP connection, numbered by the driver.
pub type ConnId = u64;

/// One listening socket of an interface.
#[derive(Debug, Clone)]
pub struct LocalSocket {
    pub id: SocketId,
    pub transport: Transport,
    pub addr: SocketAddr,
    /// Host written into Via/Contact instead of the bound address (e.g. a public IP).
    pub advertised: Option<String>,
}

impl LocalSocket {
    /// `host:port` as written in Via and Contact.
    pub fn sent_by(&self) -> String {
        let port = self.addr.port();
        match &self.advertised {
            Some(h) => format!("{h}:{port}"),
            None => match self.addr.ip() {
                IpAddr::V6(ip) => format!("[{ip}]:{port}"),
                IpAddr::V4(ip) => format!("{ip}:{port}"),
            },
        }
    }
}

/// A named interface (e.g. `intern`, `extern`) and its sockets.
#[derive(Debug, Clone)]
pub struct Interface {
    pub name: String,
    pub sockets: Vec<LocalSocket>,
}

impl Interface {
    pub fn socket(&self, transport: Transport, v6: bool) -> Option<&LocalSocket> {
        let same_family = self.sockets.iter().find(|s| s.transport == transport && s.addr.is_ipv6() == v6);
        same_family.or_else(|| self.sockets.iter().find(|s| s.transport == transport))
    }
}

/// Where a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    pub transport: Transport,
    pub local: SocketId,
    pub remote: SocketAddr,
    /// The TCP connection it arrived on; replies prefer it (RFC 3261 §18.2.2).
    pub conn: Option<ConnId>,
}

/// The far end of a transmission: an address, a host name the driver must resolve, or an
/// address found for a host name (RFC 3263), whose TLS certificate must name that host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    Addr(SocketAddr),
    Host(Box<str>, u16),
    /// `addr` is one of the targets of `host` (the domain the request was for: RFC 5922 §4
    /// checks the server's certificate against it, not against the SRV target).
    Named {
        host: Box<str>,
        addr: SocketAddr,
    },
}

impl Peer {
    /// The address's host; `None` for a name the driver resolves.
    pub fn ip(&self) -> Option<IpAddr> {
        self.addr().map(|a| a.ip())
    }

    /// The address; `None` for a name the driver resolves.
    pub fn addr(&self) -> Option<SocketAddr> {
        match self {
            Self::Addr(a) | Self::Named { addr: a, .. } => Some(*a),
            Self::Host(..) => None,
        }
    }

    /// Whether it is an IPv6 address (a name not resolved yet is not).
    pub fn is_ipv6(&self) -> bool {
        self.addr().is_some_and(|a| a.is_ipv6())
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Addr(a) => write!(f, "{a}"),
            Self::Host(h, p) => write!(f, "{h}:{p}"),
            Self::Named { host, addr } => write!(f, "{addr} ({host})"),
        }
    }
}

/// Where a message must go and from which socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub transport: Transport,
    pub local: SocketId,
    pub peer: Peer,
    /// Prefer this TCP connection when it is still open.
    pub conn: Option<ConnId>,
}

/// Engine settings; built by the driver from the validated config snapshot.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub shard: u8,
    pub timers: TimerConfig,
    /// Longest wait for a final response to an INVITE after a provisional (Timer C, > 3 min).
    pub timer_c: Duration,
    /// Hard cap on an established call; expiry sends BYE both ways. Zero disables it.
    pub max_call_duration: Duration,
    pub interfaces: Vec<Interface>,
    /// Index into `interfaces` of the interface B legs are sent from.
    pub outbound_interface: usize,
    /// Send every new outgoing request here instead of resolving its Request-URI.
    pub next_hop: Option<(Transport, Peer)>,
    /// Maximum simultaneous calls of this shard; beyond it new INVITEs get 503.
    pub max_calls: usize,
    /// The profile store: each new call or relayed request pins the snapshot it starts with.
    pub profiles: Arc<profiles::Store>,
    /// Media anchoring, for profiles with `enable_rtprelay` (`None`: media is never anchored).
    pub media: Option<super::media::MediaSettings>,
    /// The registration cache, shared by every shard (`enable_reg_caching`, `cc_registrar`).
    pub reg_cache: Arc<dyn crate::registrations::Registrations>,
    /// Most bindings the cache takes (new ones beyond it: 503).
    pub max_registrations: usize,
    /// Key of the HMAC in digest nonces the SBC issues (from the OS at start).
    pub nonce_key: [u8; 32],
    /// Admission control of new requests (a port: `admission.rs`).
    pub admission: Arc<dyn crate::admission::AdmissionControl>,
    /// What the driver knows of connections (a port: `connections.rs`).
    pub connections: Arc<dyn crate::connections::ConnectionFacts>,
    /// Bytes the messages cached by finished transactions may take (`linger.rs`).
    pub retransmission_cache: usize,
    /// Whether next hops may be used, and where their failures go (a port: `health.rs`).
    pub health: Arc<dyn crate::health::NextHopHealth>,
    /// OPTIONS probes to the configured next hops this often (one shard probes: `probe.rs`).
    pub probe_interval: Option<Duration>,
}

impl EngineConfig {
    /// The settings of shard `shard` of `shards` from the daemon's configuration, over the
    /// interfaces the driver opened.
    pub fn from_config(
        cfg: &profiles::config::Config,
        shard: u8,
        shards: usize,
        interfaces: Vec<Interface>,
        profiles: Arc<profiles::Store>,
    ) -> Self {
        Self {
            shard,
            timers: TimerConfig { t1: cfg.t1, t2: cfg.t2, t4: cfg.t4 },
            timer_c: cfg.timer_c,
            max_call_duration: cfg.max_call_duration,
            interfaces,
            outbound_interface: cfg.outbound_interface,
            next_hop: cfg.next_hop.map(|(t, a)| (t, Peer::Addr(a))),
            max_calls: cfg.max_calls.div_ceil(shards.max(1)),
            profiles,
            media: None,
            reg_cache: Arc::new(regcache::RegCache::in_memory()),
            max_registrations: cfg.max_registrations,
            nonce_key: [0; 32],
            // The driver puts its admission control in; tools without one take everything.
            admission: Arc::new(crate::admission::Unlimited),
            connections: Arc::new(crate::connections::NoConnections),
            retransmission_cache: cfg.retransmission_cache,
            health: Arc::new(crate::health::AlwaysUsable),
            // The driver turns probes on for one shard.
            probe_interval: None,
        }
    }

    pub fn socket(&self, id: SocketId) -> Option<&LocalSocket> {
        self.interfaces.iter().flat_map(|i| i.sockets.iter()).find(|s| s.id == id)
    }
    pub fn interface_of(&self, id: SocketId) -> Option<usize> {
        self.interfaces.iter().position(|i| i.sockets.iter().any(|s| s.id == id))
    }

    /// The name of the interface a socket belongs to.
    pub fn interface_name(&self, id: SocketId) -> Option<&str> {
        self.interfaces.iter().find(|i| i.sockets.iter().any(|s| s.id == id)).map(|i| i.name.as_str())
    }
}
