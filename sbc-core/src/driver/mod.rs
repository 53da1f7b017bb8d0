//! The thin tokio driver around the sans-IO engine: sockets in, parsed messages to the shard
//! that owns them, transmits out. Receivers parse in parallel; each shard is one task that owns
//! one [`Engine`] (no lock on the per-message path). Queues are bounded: when a shard's queue is
//! full the datagram is dropped and counted (the peer retransmits), a TCP reader waits.

mod admin_query;
mod alias;
pub mod capture;
pub(crate) mod dns;
pub(crate) mod handshakes;
mod hooks;
mod media;
mod outbound;
mod pins;
mod registrations;
mod rfc3263;
mod shard;
mod shed;
mod tcp;
pub mod tls;
mod tls_peers;
mod tls_records;
mod udp;

pub use admin_query::ShardBusy;
pub use hooks::CcSettings;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::b2bua::{shard_of_branch, CallHandle, EngineConfig, Interface, LocalSocket, Transport, TxId};
use crate::config::Config;
use crate::sip::msg::{Message, ParseError};

pub use shard::ShardStatus;

/// What a shard task receives.
#[derive(Debug)]
pub(crate) enum ShardInput {
    Message(Message, crate::b2bua::Source),
    /// An in-dialog REFER for the shard that holds the dialog its Refer-To's Replaces names,
    /// to map it (`fix_replaces_ref`) before the REFER goes on to its own shard (the third).
    MapReferTo(Message, crate::b2bua::Source, u8),
    /// That REFER, with the Refer-To the other shard mapped (`None`: it knew no such dialog).
    ReferMapped(Message, crate::b2bua::Source, Option<String>),
    Unparseable(Bytes, ParseError, crate::b2bua::Source),
    TransportError(TxId),
    /// Where a transaction's request to a host name went (for its responses' source check).
    Resolved(TxId, SocketAddr),
    Drain,
    /// The call-control verdict for a parked call.
    CcVerdict(CallHandle, crate::b2bua::CcVerdict),
    /// The management plane lists the shard's calls.
    ListCalls(tokio::sync::oneshot::Sender<Vec<crate::b2bua::CallOverview>>),
    /// The management plane looks at one call.
    GetCall(CallHandle, tokio::sync::oneshot::Sender<Option<crate::b2bua::CallOverview>>),
    /// The management plane reads a call's trace.
    GetTrace(CallHandle, tokio::sync::oneshot::Sender<Option<capture::CallTrace>>),
    /// The management plane ends a call (true if it existed).
    Teardown(CallHandle, tokio::sync::oneshot::Sender<bool>),
    /// The answer to a registration lookup the engine had to wait for.
    Registrations(crate::b2bua::RegTicket, regcache::RegView),
    /// The targets of a request's named next hops (RFC 3263), one list per name asked.
    Targets(crate::b2bua::ResolveTicket, Vec<Vec<crate::b2bua::Target>>),
}

/// Process-wide counters of the driver (the engines count the rest).
#[derive(Debug, Default)]
pub struct DriverCounters {
    pub datagrams_in: AtomicU64,
    pub parse_errors: AtomicU64,
    pub queue_full_drops: AtomicU64,
    pub stray_responses: AtomicU64,
    /// New requests dropped because their shard's queue was half full (`shed.rs`).
    pub overload_shed: AtomicU64,
    pub send_errors: AtomicU64,
    pub tcp_connections: AtomicUsize,
    pub tcp_refused: AtomicU64,
    /// TLS connections closed before their handshake (`handshakes.rs`).
    pub tls_handshakes_refused: AtomicU64,
    /// Connections the SBC closed, by why (`tcp::Cut`).
    pub tcp_cuts: [AtomicU64; tcp::Cut::COUNT],
}

pub use dns::{DnsCounters, DnsError};

impl DriverCounters {
    /// TCP connections the SBC closed, by reason (for metrics).
    pub fn tcp_cuts(&self) -> Vec<(&'static str, u64)> {
        tcp::Cut::ALL.iter().map(|c| (c.label(), self.tcp_cuts[*c as usize].load(Ordering::Relaxed))).collect()
    }
}

/// State shared by receivers, shards and TCP connections.
pub(crate) struct Shared {
    pub(crate) sockets: Vec<LocalSocket>,
    pub(crate) udp: Vec<Option<Arc<UdpSocket>>>,
    /// By socket: the TLS sides of the socket's interface, for TLS sockets.
    pub(crate) tls: Vec<Option<Arc<tls::TlsContext>>>,
    pub(crate) tcp: tcp::TcpTable,
    pub(crate) shards: Vec<mpsc::Sender<ShardInput>>,
    pub(crate) counters: DriverCounters,
    pub(crate) tcp_limits: tcp::TcpLimits,
    /// Who may begin a TLS handshake (`handshakes.rs`).
    pub(crate) handshakes: Arc<handshakes::HandshakeGate>,
    /// Asked before parsing whether a source is ignored (`shed.rs`).
    pub(crate) admission: Arc<crate::admission::Admission>,
    /// Host names of destinations (`dns.rs`).
    pub(crate) dns: Arc<dns::Dns>,
    /// Copies of the messages sent and received, for Homer (`capture.hep`).
    pub(crate) hep: Option<Arc<capture::HepExport>>,
    /// The writer of per-call pcap files (`msg_logger_path`).
    pub(crate) pcap: Arc<capture::PcapWriter>,
    /// Transferred calls kept on the shard of the dialog they replace (`pins.rs`).
    pub(crate) pins: pins::Pins,
}

impl Shared {
    /// Parses what a socket received and hands it to the owning shard.
    pub(crate) fn dispatch(&self, bytes: Bytes, src: crate::b2bua::Source) {
        #[allow(clippy::disallowed_methods)] // driver-side: admission's ignore list is timed
        if shed::opens_new_work(&bytes) && self.admission.ignores(std::time::Instant::now(), src.remote.ip()) {
            return;
        }
        let n = self.shards.len() as u8;
        let input = match Message::parse(bytes.clone()) {
            Ok(msg) => {
                let shard = if msg.is_request() {
                    #[allow(clippy::disallowed_methods)] // driver-side: a pin's age
                    let shard = self.pins.shard_of(&msg, n, std::time::Instant::now());
                    // Over UDP only: a stream client does not send a shed request again.
                    if src.transport == Transport::Udp && shed::is_new_request(&msg) && self.shard_overloaded(shard) {
                        self.counters.overload_shed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    if let Some(there) = self.refer_elsewhere(&msg, shard, n) {
                        return self.enqueue(there, ShardInput::MapReferTo(msg, src, shard));
                    }
                    shard
                } else {
                    match msg.top_via().and_then(|v| v.branch()).and_then(shard_of_branch) {
                        Some(s) if s < n => s,
                        _ => {
                            self.counters.stray_responses.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                };
                return self.enqueue(shard, ShardInput::Message(msg, src));
            }
            Err(e) => {
                self.counters.parse_errors.fetch_add(1, Ordering::Relaxed);
                ShardInput::Unparseable(bytes, e, src)
            }
        };
        self.enqueue(0, input);
    }

    /// Bytes a stream could not frame: the engine answers 400 if it can.
    pub(crate) fn dispatch_unframeable(&self, bytes: Bytes, err: ParseError, src: crate::b2bua::Source) {
        self.enqueue(0, ShardInput::Unparseable(bytes, err, src));
    }

    /// The shard to map an in-dialog REFER's Refer-To first, when the dialog its Replaces
    /// names lives elsewhere than the REFER's own (`own`): only that shard's engine knows it.
    fn refer_elsewhere(&self, msg: &Message, own: u8, shards: u8) -> Option<u8> {
        if shards <= 1 || msg.method() != Some(crate::sip::msg::Method::Refer) || msg.to_tag().is_none() {
            return None;
        }
        let named = crate::b2bua::refer_to_replaced_call_id(msg)?;
        let there = self.pins.shard_of_call_id(named.as_bytes(), shards);
        (there != own).then_some(there)
    }

    fn shard_overloaded(&self, shard: u8) -> bool {
        self.shards.get(usize::from(shard)).is_some_and(|q| shed::overloaded(q.capacity(), q.max_capacity()))
    }

    fn enqueue(&self, shard: u8, input: ShardInput) {
        let Some(q) = self.shards.get(usize::from(shard)) else {
            return;
        };
        if q.try_send(input).is_err() {
            self.counters.queue_full_drops.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Why the transports could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error("cannot bind {transport}:{addr}")]
    Bind { transport: Transport, addr: SocketAddr, source: std::io::Error },
    #[error("{0}: no listen address configured")]
    NoListen(String),
    #[error("cannot start the RTP relay")]
    Media(#[source] rtp_relay::RelayError),
    #[error("cannot open the registration store")]
    Registrations(#[source] regcache::StoreError),
    #[error("the OS gave no random bytes: {0}")]
    Random(getrandom::Error),
    #[error("cannot set up cluster mode: {0}")]
    Cluster(#[source] cluster::StoreError),
    #[error("cannot start the DNS resolver: {0}")]
    Dns(String),
    #[error("cannot start the pcap writer: {0}")]
    Pcap(std::io::Error),
    #[error("interface {interface}: TLS: {source}")]
    Tls { interface: String, source: tls::TlsError },
    #[error("interface {0} listens on tls: without a certificate (interfaces[].tls, or --tls-cert and --tls-key)")]
    TlsWithoutCertificate(String),
}

/// A running set of listeners and shards.
pub struct Runtime {
    shared: Arc<Shared>,
    cc_settings: Arc<CcSettings>,
    draining: std::sync::atomic::AtomicBool,
    statuses: Vec<Arc<ShardStatus>>,
    /// Call-control tasks still running hooks.
    cc_inflight: Arc<AtomicUsize>,
    relay: Arc<rtp_relay::Relay>,
    registrations: Arc<regcache::RegCache>,
    reg_store: Option<Arc<regcache::SqliteStore>>,
    admission: Arc<crate::admission::Admission>,
    /// The cluster this node joined (`cluster:`), if any.
    cluster: Option<Arc<cluster::Cluster>>,
    /// The TLS of each interface that has a certificate (and of the admin API, last).
    tls: Vec<Arc<tls::TlsContext>>,
    /// The admin API's HTTPS (`admin.tls`).
    admin_tls: Option<Arc<tls::TlsContext>>,
    /// Next hops' probes and blacklist (`routing.health`).
    health: Arc<crate::health::HealthTable>,
}

/// 32 bytes from the OS: the key of the SBC's digest nonces and each shard's identifier seed.
/// No weaker fallback: an SBC whose tags can be predicted must not start (`ids.rs`).
fn secret_key() -> Result<[u8; 32], StartError> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(StartError::Random)?;
    Ok(key)
}

/// How often expired registrations are collected (SEMS sweeps its table every 10 s too).
const REG_GC_INTERVAL: Duration = Duration::from_secs(10);

/// The registration cache, filled from its store (if one is configured).
#[allow(clippy::disallowed_methods)] // the one reading of both clocks that maps stored times
fn open_registrations(
    cfg: &Config,
) -> Result<(Arc<regcache::RegCache>, Option<Arc<regcache::SqliteStore>>), StartError> {
    use profiles::config::RegistrationStore;
    let path = match &cfg.registration_store {
        RegistrationStore::Off => None,
        RegistrationStore::File(p) => Some(p.clone()),
        // systemd's StateDirectory= (the packaged unit sets it).
        RegistrationStore::Auto => {
            std::env::var_os("STATE_DIRECTORY").map(|d| std::path::PathBuf::from(d).join("registrations.sqlite"))
        }
    };
    let Some(path) = path else {
        tracing::info!("registration cache in memory only (set registrations.store to keep it across restarts)");
        return Ok((Arc::new(regcache::RegCache::in_memory()), None));
    };
    let clock = regcache::WallClock::new(std::time::Instant::now(), std::time::SystemTime::now());
    let (store, live) = regcache::SqliteStore::open(&path, clock).map_err(StartError::Registrations)?;
    let store = Arc::new(store);
    let cache = Arc::new(regcache::RegCache::new(Box::new(store.clone())));
    tracing::info!(path = %path.display(), bindings = live.len(), "registration store opened");
    cache.restore(live);
    Ok((cache, Some(store)))
}

/// The SIP addresses this node publishes for its cluster peers: each socket's, or its
/// interface's advertised address when it listens on a wildcard one (none: not published,
/// peers cannot hand calls to it on that interface).
fn published_addresses(interfaces: &[Interface]) -> Vec<cluster::SipAddress> {
    let mut out = Vec::new();
    for iface in interfaces {
        for sock in &iface.sockets {
            let ip = if sock.addr.ip().is_unspecified() {
                match sock.advertised.as_deref().and_then(|a| a.parse::<std::net::IpAddr>().ok()) {
                    Some(ip) => ip,
                    None => {
                        tracing::warn!(
                            interface = %iface.name,
                            addr = %sock.addr,
                            "cluster: a wildcard listen address without an advertised IP is not published; \
                             other nodes cannot relay calls to this node's phones through it"
                        );
                        continue;
                    }
                }
            } else {
                sock.addr.ip()
            };
            out.push(cluster::SipAddress {
                interface: iface.name.clone(),
                transport: sock.transport.to_string(),
                addr: SocketAddr::new(ip, sock.addr.port()),
            });
        }
    }
    out
}

/// Joins the cluster as a new instance of its node (16 random hex digits tell this process
/// from another that claims the same `node_id`). Done before the call-control modules are
/// built: the shared ones count on the cluster.
pub async fn join_cluster(settings: &profiles::config::ClusterSettings) -> Result<cluster::Cluster, StartError> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(StartError::Random)?;
    let instance: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    cluster::Cluster::join(settings.clone(), &instance).await.map_err(StartError::Cluster)
}

impl Runtime {
    /// Binds every listen address, starts `shards` engines and the receivers.
    pub async fn start(
        cfg: &Config,
        profiles: Arc<profiles::Store>,
        call_control: Arc<callcontrol::Registry>,
        shards: usize,
        cluster: Option<Arc<cluster::Cluster>>,
    ) -> Result<Self, StartError> {
        let shards = shards.clamp(1, 64);
        let mut sockets = Vec::new();
        let mut udp = Vec::new();
        let mut udp_receivers = Vec::new();
        let mut listeners = Vec::new();
        let mut interfaces = Vec::new();
        let mut tls_by_socket = Vec::new();
        let mut tls_contexts = Vec::new();
        let admin_tls = match &cfg.admin.tls {
            Some(t) => Some(Arc::new(
                tls::TlsContext::new("admin", t)
                    .map_err(|source| StartError::Tls { interface: "admin".into(), source })?,
            )),
            None => None,
        };
        if let Some((_, name)) = cfg.tls_without_certificate() {
            return Err(StartError::TlsWithoutCertificate(name.to_string()));
        }
        for iface in &cfg.interfaces {
            let mut socks = Vec::new();
            let iface_tls = match &iface.tls {
                Some(t) => Some(Arc::new(
                    tls::TlsContext::new(&iface.name, t)
                        .map_err(|source| StartError::Tls { interface: iface.name.clone(), source })?,
                )),
                None => None,
            };
            if let Some(t) = &iface_tls {
                tls_contexts.push(t.clone());
            }
            for l in &iface.listen {
                let id = sockets.len() as u16;
                let local = match l.transport {
                    Transport::Udp => {
                        let bind_err = |source| StartError::Bind { transport: l.transport, addr: l.addr, source };
                        // One receiving socket per core that parses (up to 4).
                        let group = udp::bind_group(l.addr, shards.min(4)).map_err(bind_err)?;
                        let local = group.sender.local_addr().map_err(bind_err)?;
                        udp.push(Some(group.sender));
                        udp_receivers.extend(group.receivers.into_iter().map(|s| (id, s)));
                        local
                    }
                    Transport::Tcp | Transport::Tls => {
                        let bind_err = |source| StartError::Bind { transport: l.transport, addr: l.addr, source };
                        let s = tcp::bind(l.addr).map_err(bind_err)?;
                        let local = s.local_addr().map_err(bind_err)?;
                        let acceptor = match l.transport {
                            Transport::Tls => iface_tls.clone(),
                            _ => None,
                        };
                        listeners.push((id, s, acceptor));
                        udp.push(None);
                        local
                    }
                };
                tls_by_socket.push(iface_tls.clone().filter(|_| l.transport == Transport::Tls));
                let sock = LocalSocket { id, transport: l.transport, addr: local, advertised: iface.advertise.clone() };
                tracing::info!(interface = %iface.name, transport = %l.transport, addr = %local, "listening");
                socks.push(sock.clone());
                sockets.push(sock);
            }
            interfaces.push(Interface { name: iface.name.clone(), sockets: socks });
        }
        if sockets.is_empty() {
            return Err(StartError::NoListen(cfg.source.clone()));
        }
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..shards {
            let (tx, rx) = mpsc::channel(cfg.queue_depth);
            senders.push(tx);
            receivers.push(rx);
        }
        let admission = Arc::new(crate::admission::Admission::new(cfg.admission.clone()));
        let dns = Arc::new(dns::Dns::new(&cfg.dns_servers).map_err(StartError::Dns)?);
        let hep = cfg.capture.hep.as_ref().map(|h| {
            let node = cfg.cluster.as_ref().map(|c| c.node_id.as_str());
            let named = interfaces.iter().flat_map(|i| i.sockets.iter().map(|s| (s.clone(), i.name.clone())));
            Arc::new(capture::HepExport::start(h, node, &named.collect::<Vec<_>>(), dns.clone()))
        });
        let shared = Arc::new(Shared {
            sockets,
            udp,
            tls: tls_by_socket,
            tcp: tcp::TcpTable::default(),
            shards: senders,
            counters: DriverCounters::default(),
            tcp_limits: tcp::TcpLimits::from_config(cfg),
            handshakes: Arc::new(handshakes::HandshakeGate::new(cfg.tls_handshakes_per_source, cfg.tls_max_handshakes)),
            admission: admission.clone(),
            dns,
            hep,
            pcap: capture::PcapWriter::start().map_err(StartError::Pcap)?,
            pins: pins::Pins::new(cfg.max_call_duration),
        });
        let cc_settings = Arc::new(CcSettings {
            hook_timeout: cfg.call_control.hook_timeout,
            failure_code: cfg.call_control.failure_code,
            failure_reason: cfg.call_control.failure_reason.clone(),
            refusals: Default::default(),
        });
        let cc_inflight = Arc::new(AtomicUsize::new(0));
        let (relay, book) = start_relay(cfg, shards)?;
        let (registrations, reg_store) = open_registrations(cfg)?;
        let (reg_port, lookups) = match &cluster {
            Some(c) => {
                let shared = c.share_registrations(registrations.clone(), &published_addresses(&interfaces));
                let port: Arc<dyn sbc_engine::registrations::Registrations> =
                    Arc::new(registrations::ClusterRegistrations(shared.clone()));
                (port, registrations::Lookups::Cluster(shared))
            }
            None => {
                let port: Arc<dyn sbc_engine::registrations::Registrations> = registrations.clone();
                (port, registrations::Lookups::Local(registrations.clone()))
            }
        };
        let nonce_key = secret_key()?;
        let health = Arc::new(crate::health::HealthTable::new(cfg.health));

        {
            let (admission, shared) = (admission.clone(), shared.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(10));
                loop {
                    tick.tick().await;
                    #[allow(clippy::disallowed_methods)] // driver-side housekeeping
                    let now = std::time::Instant::now();
                    admission.sweep(now);
                    shared.pins.sweep(now);
                }
            });
        }
        {
            let cache = registrations.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(REG_GC_INTERVAL);
                loop {
                    tick.tick().await;
                    #[allow(clippy::disallowed_methods)] // driver-side housekeeping
                    let n = cache.collect_expired(std::time::Instant::now());
                    if n > 0 {
                        tracing::debug!(expired = n, "registrations expired");
                    }
                }
            });
        }
        let media = crate::b2bua::MediaSettings {
            book,
            shards,
            timeout: cfg.media.timeout,
            hold_timeout: cfg.media.hold_timeout,
        };
        let mut statuses = Vec::new();
        for (i, rx) in receivers.into_iter().enumerate() {
            let mut ecfg = EngineConfig::from_config(cfg, i as u8, shards, interfaces.clone(), profiles.clone());
            ecfg.media = Some(media.clone());
            ecfg.reg_cache = reg_port.clone();
            ecfg.nonce_key = nonce_key;
            ecfg.admission = admission.clone();
            ecfg.connections = Arc::new(tcp::Identities(shared.tcp.identities.clone()));
            ecfg.health = health.clone();
            // One shard probes the next hops for all.
            ecfg.probe_interval = cfg.health.probe_interval.filter(|_| i == 0);
            let status = Arc::new(ShardStatus::default());
            statuses.push(status.clone());
            let seed = secret_key()?;
            let cc = hooks::CcDriver::new(
                call_control.clone(),
                cc_settings.clone(),
                shared.shards[i].clone(),
                cc_inflight.clone(),
            );
            let engine = crate::b2bua::Engine::new(ecfg, seed);
            let media = Some(media::ShardMedia::new(relay.clone(), shared.pcap.clone()));
            let capture =
                capture::ShardCapture::new(shared.hep.clone(), shared.pcap.clone(), &cfg.capture, &interfaces);
            let parts = shard::Parts { cc, media, lookups: lookups.clone(), capture };
            tokio::spawn(shard::run(engine, rx, shared.clone(), status, parts));
        }
        for (id, sock) in udp_receivers {
            tokio::spawn(udp::receive(shared.clone(), id, sock));
        }
        for (id, l, acceptor) in listeners {
            tokio::spawn(tcp::accept(shared.clone(), id, l, acceptor));
        }
        Ok(Self {
            shared,
            cc_settings,
            draining: Default::default(),
            statuses,
            cc_inflight,
            relay,
            registrations,
            reg_store,
            admission,
            cluster,
            tls: tls_contexts.into_iter().chain(admin_tls.clone()).collect(),
            admin_tls,
            health,
        })
    }

    /// Reads every interface's TLS files again (SIGHUP, `POST /tls/reload`): the interfaces
    /// reloaded, or what did not load (those keep their running certificate).
    pub fn reload_tls(&self) -> Result<Vec<String>, String> {
        let mut failed = Vec::new();
        for t in &self.tls {
            match t.reload() {
                Ok(()) => tracing::info!(interface = %t.interface, "TLS certificate reloaded"),
                Err(e) => {
                    tracing::error!(interface = %t.interface, "TLS reload failed, the running certificate stays: {e}");
                    failed.push(format!("interface {}: {e}", t.interface));
                }
            }
        }
        if failed.is_empty() {
            Ok(self.tls.iter().map(|t| t.interface.clone()).collect())
        } else {
            Err(failed.join("; "))
        }
    }

    /// Each TLS interface and when its certificate runs out (unix seconds).
    pub fn tls_expiry(&self) -> Vec<(String, i64)> {
        self.tls.iter().map(|t| (t.interface.clone(), t.not_after())).collect()
    }

    /// The admin API's HTTPS side (`admin.tls`), and the handshake deadline of the limits.
    pub(crate) fn admin_tls(&self) -> Option<(Arc<tls::TlsContext>, Duration)> {
        self.admin_tls.clone().map(|t| (t, self.shared.tcp_limits.tls_handshake_timeout))
    }

    /// The cluster this node joined, if it runs in cluster mode.
    pub fn cluster(&self) -> Option<&Arc<cluster::Cluster>> {
        self.cluster.as_ref()
    }

    /// Every shard's calls; ids are `<shard>-<handle>`.
    pub async fn calls(&self) -> Result<Vec<(usize, crate::b2bua::CallOverview)>, ShardBusy> {
        admin_query::list_calls(&self.shared.shards).await
    }

    /// Call `handle` of `shard` (only that shard is asked).
    pub async fn call(
        &self,
        shard: usize,
        handle: CallHandle,
    ) -> Result<Option<crate::b2bua::CallOverview>, ShardBusy> {
        admin_query::call(&self.shared.shards, shard, handle).await
    }

    /// A call's messages, while it runs and for a while after (`capture/trace.rs`).
    pub async fn trace(&self, shard: usize, handle: CallHandle) -> Result<Option<capture::CallTrace>, ShardBusy> {
        admin_query::trace(&self.shared.shards, shard, handle).await
    }

    /// Next hops' state (`routing.health`).
    pub fn health(&self) -> &crate::health::HealthTable {
        &self.health
    }

    /// What the HEP exporter sent and dropped (`None`: no `capture.hep`).
    pub fn hep_counters(&self) -> Option<&capture::HepCounters> {
        self.shared.hep.as_ref().map(|h| &*h.counters)
    }

    /// Records written to and dropped from per-call pcap files (`msg_logger_path`).
    pub fn pcap_counters(&self) -> (u64, u64) {
        let p = &self.shared.pcap;
        (p.written.load(Ordering::Relaxed), p.dropped.load(Ordering::Relaxed))
    }

    /// Ends a call (see `Engine::admin_teardown`); false if the shard has no such call.
    pub async fn teardown(&self, shard: usize, handle: CallHandle) -> Result<bool, ShardBusy> {
        admin_query::teardown(&self.shared.shards, shard, handle).await
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Event counts with labels, summed over shards.
    pub fn labelled(&self) -> shard::Labelled {
        let mut all = shard::Labelled::default();
        for st in &self.statuses {
            if let Ok(l) = st.labelled.lock() {
                all.merge(&l);
            }
        }
        all
    }

    /// Calls (and route lookups) whose call-control hooks have not finished, `end` included.
    pub fn cc_tasks(&self) -> usize {
        self.cc_inflight.load(Ordering::SeqCst)
    }

    /// Call-control refusals by module.
    pub fn cc_refusals(&self) -> std::collections::BTreeMap<String, u64> {
        self.cc_settings.refusals.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// The RTP relay's counters (packets, drops by reason, streams, ports in use).
    /// What admission control refused and ignored.
    pub fn admission_stats(&self) -> crate::admission::AdmissionStats {
        self.admission.stats()
    }

    /// The registration cache (bindings and aliases).
    pub fn registrations(&self) -> &Arc<regcache::RegCache> {
        &self.registrations
    }

    /// Writes what the registration store has queued and stops it (at exit).
    pub fn close_registrations(&self) {
        if let Some(s) = &self.reg_store {
            s.close();
            let failed = s.errors.load(Ordering::Relaxed);
            tracing::info!(path = %s.path().display(), bindings = self.registrations.len(), failed_writes = failed, "registration store closed");
        }
    }

    pub fn media_stats(&self) -> rtp_relay::RelayStats {
        self.relay.stats()
    }

    /// The addresses actually bound (port 0 resolved), in config order.
    pub fn local_addrs(&self) -> Vec<(Transport, SocketAddr)> {
        self.shared.sockets.iter().map(|s| (s.transport, s.addr)).collect()
    }

    /// Host-name lookups by result.
    pub fn dns_counters(&self) -> &DnsCounters {
        &self.shared.dns.counters
    }

    pub fn counters(&self) -> &DriverCounters {
        &self.shared.counters
    }

    /// Stops taking new calls; existing calls and transactions go on.
    pub async fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
        for q in &self.shared.shards {
            let _ = q.send(ShardInput::Drain).await;
        }
    }

    pub fn active_calls(&self) -> usize {
        self.statuses.iter().map(|s| s.calls.load(Ordering::Relaxed)).sum()
    }

    /// True when no shard has a call or a transaction left and every call-control hook has
    /// finished (CDRs written, balances debited).
    pub fn is_idle(&self) -> bool {
        self.cc_inflight.load(Ordering::SeqCst) == 0 && self.statuses.iter().all(|s| s.idle.load(Ordering::Acquire))
    }

    /// Waits (at most `within`) until the TCP writers have written every message handed to
    /// them: the last replies of a drain reach TCP peers before exit.
    pub async fn flush(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.shared.tcp.unwritten() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Totals of the engines' counters.
    pub fn stats(&self) -> shard::StatsSnapshot {
        shard::StatsSnapshot::sum(&self.statuses)
    }
}

/// The RTP relay over every interface's media section (interfaces with no address to bind are
/// left out: a profile naming them fails at call time with 503, and is reported in the log).
fn start_relay(cfg: &Config, shards: usize) -> Result<(Arc<rtp_relay::Relay>, rtp_relay::BookConfig), StartError> {
    let mut interfaces = Vec::new();
    for i in &cfg.interfaces {
        let Some(bind) = i.media_bind() else {
            tracing::warn!(interface = %i.name, "no media address: calls relayed on it will fail");
            continue;
        };
        if bind.is_unspecified() {
            // Listening on 0.0.0.0 says nothing about where RTP should be: name it.
            tracing::warn!(interface = %i.name, "listens on a wildcard address and has no media.address: not relayed");
            continue;
        }
        interfaces.push(rtp_relay::MediaInterface {
            name: i.name.clone(),
            bind,
            advertise: i.media.advertise,
            port_min: i.media.port_min,
            port_max: i.media.port_max,
        });
        let ports = format!("{}-{}", i.media.port_min, i.media.port_max);
        // Each shard lends its own share of the range (`rtp-relay/src/ports.rs`); a call
        // relayed on one interface takes two pairs of one share per stream.
        let per_shard = interfaces.last().map_or(0, rtp_relay::MediaInterface::pair_count) / shards.max(1);
        tracing::info!(interface = %i.name, %bind, %ports, pairs_per_shard = per_shard, "media");
        if per_shard < 2 {
            tracing::warn!(interface = %i.name, %ports, shards, "media range too small for its shards: relayed calls will be refused");
        }
    }
    let listeners = cfg.interfaces.iter().flat_map(|i| i.listen.iter().map(|l| l.addr)).collect();
    let policy = crate::media_policy::MediaPolicy::new(listeners, cfg.media.deny.clone());
    let book = rtp_relay::BookConfig {
        interfaces: interfaces.clone(),
        max_streams: cfg.media.max_streams,
        policy: Some(Arc::new(policy)),
    };
    let rc = rtp_relay::RelayConfig {
        interfaces,
        latch_window: cfg.media.latch_window,
        workers: cfg.media.workers,
        max_packet_rate: cfg.media.max_packet_rate,
    };
    Ok((rtp_relay::Relay::start(&rc).map_err(StartError::Media)?, book))
}
