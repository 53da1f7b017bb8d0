//! The HEP exporter: shards hand it packets without waiting (a full queue drops them, counted),
//! and one task sends them to Homer over UDP or TCP. A Homer that is down, slow or unknown to
//! DNS costs signalling nothing; what it misses is counted by reason.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::hep::{encode, Captured, HepIdentity};
use crate::b2bua::{LocalSocket, SocketId, Transport};
use crate::driver::dns::Dns;
use profiles::config::{HepSettings, HepTarget};

/// Why a message did not reach Homer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HepDrop {
    /// The sender's queue was full (Homer slower than signalling).
    QueueFull,
    /// Over HEP's 64 KiB.
    TooLarge,
    /// Homer's name did not resolve.
    Unresolved,
    /// The socket refused the packet, or the TCP connection broke under it.
    SendFailed,
    /// No TCP connection to Homer (waiting to connect again).
    Disconnected,
}

impl HepDrop {
    pub const ALL: [Self; 5] =
        [Self::QueueFull, Self::TooLarge, Self::Unresolved, Self::SendFailed, Self::Disconnected];
    pub fn label(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::TooLarge => "too_large",
            Self::Unresolved => "unresolved",
            Self::SendFailed => "send_failed",
            Self::Disconnected => "disconnected",
        }
    }
}

/// What the exporter did, for metrics.
#[derive(Debug, Default)]
pub struct HepCounters {
    pub sent: AtomicU64,
    dropped: [AtomicU64; HepDrop::ALL.len()],
}

impl HepCounters {
    pub fn dropped(&self, why: HepDrop) -> u64 {
        self.dropped[why as usize].load(Ordering::Relaxed)
    }
    fn drop_one(&self, why: HepDrop) {
        self.dropped[why as usize].fetch_add(1, Ordering::Relaxed);
    }
}

pub(crate) struct HepExport {
    queue: mpsc::Sender<Vec<u8>>,
    /// Bytes of the packets waiting in `queue` (bounded by [`QUEUE_BYTES`] as well).
    queued_bytes: Arc<AtomicUsize>,
    identity: HepIdentity,
    sampling_percent: u8,
    /// By socket id: whether its interface is exported.
    exported: Vec<bool>,
    pub(crate) counters: Arc<HepCounters>,
}

/// Most bytes of packets waiting for the sender: `queue` large packets must not take the
/// memory of a node whose Homer is slow.
const QUEUE_BYTES: usize = 32 << 20;

impl HepExport {
    /// Starts the sender task (and, for a name, its resolver). `sockets` name each socket's
    /// interface.
    pub(crate) fn start(
        s: &HepSettings,
        default_node_name: Option<&str>,
        sockets: &[(LocalSocket, String)],
        dns: Arc<Dns>,
    ) -> Self {
        let (queue, rx) = mpsc::channel(s.queue);
        let counters = Arc::new(HepCounters::default());
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let exported =
            sockets.iter().map(|(_, iface)| s.interfaces.as_ref().is_none_or(|names| names.contains(iface))).collect();
        let node_name = s.node_name.as_deref().or(default_node_name);
        let identity = HepIdentity {
            agent_id: s.agent_id,
            password: s.password.as_ref().map(|p| p.as_bytes().into()),
            node_name: node_name.map(|n| n.as_bytes().into()),
        };
        tracing::info!(homer = %s.target, transport = %s.transport, "capture: HEP export on");
        let target = match &s.target {
            HepTarget::Addr(a) => watch::channel(Some(*a)).1,
            HepTarget::Host(host, port) => {
                let (tx, rx) = watch::channel(None);
                tokio::spawn(resolve_loop(host.clone(), *port, dns, tx));
                rx
            }
        };
        let sender = Sender { rx, target, counters: counters.clone(), queued_bytes: queued_bytes.clone() };
        tokio::spawn(sender.run(s.transport));
        Self { queue, queued_bytes, identity, sampling_percent: s.sampling_percent, exported, counters }
    }

    /// Queues `m` (seen on socket `local`) for Homer if its interface and its call's sample
    /// are exported. Never waits.
    pub(crate) fn export(&self, local: SocketId, m: &Captured<'_>) {
        if !self.exported.get(usize::from(local)).copied().unwrap_or(false) {
            return;
        }
        if !sampled(m.correlation.unwrap_or_default(), self.sampling_percent) {
            return;
        }
        let mut packet = Vec::with_capacity(m.payload.len() + 160);
        if encode(m, &self.identity, &mut packet).is_err() {
            return self.counters.drop_one(HepDrop::TooLarge);
        }
        let len = packet.len();
        if self.queued_bytes.fetch_add(len, Ordering::Relaxed) + len > QUEUE_BYTES {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            return self.counters.drop_one(HepDrop::QueueFull);
        }
        if self.queue.try_send(packet).is_err() {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            self.counters.drop_one(HepDrop::QueueFull);
        }
    }
}

/// Whole calls are sampled: the decision is a hash of the correlation id (FNV-1a, as shards
/// hash Call-IDs), the same for every message of a call and on every node.
fn sampled(key: &[u8], percent: u8) -> bool {
    if percent >= 100 {
        return true;
    }
    crate::b2bua::fnv1a(key) % 100 < u64::from(percent)
}

/// How often a resolved Homer name is asked again (DNS's own cache answers in between,
/// within the record's TTL): a Homer that moves is followed.
const REFRESH: Duration = Duration::from_secs(30);
/// After a failed lookup or connect, the first wait before the next try; it doubles up to
/// [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// A TCP connect or write to Homer that takes longer breaks the connection.
const TCP_DEADLINE: Duration = Duration::from_secs(3);

/// Keeps Homer's address current, apart from the sender: a name server that hangs delays
/// only the next refresh, and the last address that resolved stays in use meanwhile.
async fn resolve_loop(host: String, port: u16, dns: Arc<Dns>, addr: watch::Sender<Option<SocketAddr>>) {
    let mut backoff = RETRY_FIRST;
    let mut failing = false;
    loop {
        let wait = match dns.resolve(&host, port).await {
            Ok(a) => {
                if *addr.borrow() != Some(a) || failing {
                    tracing::info!(homer = %host, addr = %a, "capture: Homer resolved");
                }
                addr.send_replace(Some(a));
                (failing, backoff) = (false, RETRY_FIRST);
                REFRESH
            }
            Err(why) => {
                if !failing {
                    let kept = *addr.borrow();
                    tracing::warn!(homer = %host, ?why, ?kept, "capture: cannot resolve Homer (the last address it had, if any, stays in use)");
                }
                failing = true;
                let wait = backoff;
                backoff = (backoff * 2).min(RETRY_MAX);
                wait
            }
        };
        if addr.is_closed() {
            return;
        }
        tokio::time::sleep(wait).await;
    }
}

/// The task that sends queued packets to Homer.
struct Sender {
    rx: mpsc::Receiver<Vec<u8>>,
    /// Homer's address (`None` until a name first resolves).
    target: watch::Receiver<Option<SocketAddr>>,
    counters: Arc<HepCounters>,
    queued_bytes: Arc<AtomicUsize>,
}

impl Sender {
    async fn run(self, transport: Transport) {
        match transport {
            Transport::Tcp | Transport::Tls => self.send_tcp().await,
            Transport::Udp => self.send_udp().await,
        }
    }

    async fn next(&mut self) -> Option<Vec<u8>> {
        let packet = self.rx.recv().await?;
        self.queued_bytes.fetch_sub(packet.len(), Ordering::Relaxed);
        Some(packet)
    }

    async fn send_udp(mut self) {
        let mut socket: Option<(bool, UdpSocket)> = None;
        let mut failing = false;
        while let Some(packet) = self.next().await {
            let Some(addr) = *self.target.borrow() else {
                self.counters.drop_one(HepDrop::Unresolved);
                continue;
            };
            if socket.as_ref().is_none_or(|(v6, _)| *v6 != addr.is_ipv6()) {
                let any: SocketAddr = if addr.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }.parse().expect("literal");
                socket = UdpSocket::bind(any).await.ok().map(|s| (addr.is_ipv6(), s));
            }
            let sent = match &socket {
                Some((_, s)) => s.send_to(&packet, addr).await.map(|_| ()),
                None => Err(std::io::Error::other("no socket")),
            };
            match sent {
                Ok(()) => {
                    self.counters.sent.fetch_add(1, Ordering::Relaxed);
                    failing = false;
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(homer = %addr, error = %e, "capture: HEP send failed");
                    }
                    failing = true;
                    self.counters.drop_one(HepDrop::SendFailed);
                }
            }
        }
    }

    /// One connection at a time; after a failed connect or a broken connection, packets are
    /// dropped (`disconnected`) until the backoff passes. A connection is made to the address
    /// current at connect time (a Homer that moves is followed at the next connect).
    async fn send_tcp(mut self) {
        let mut conn: Option<TcpStream> = None;
        let mut retry_at = Instant::now();
        let mut backoff = RETRY_FIRST;
        while let Some(packet) = self.next().await {
            if conn.is_none() {
                if Instant::now() < retry_at {
                    self.counters.drop_one(HepDrop::Disconnected);
                    continue;
                }
                let Some(addr) = *self.target.borrow() else {
                    self.counters.drop_one(HepDrop::Unresolved);
                    continue;
                };
                match tokio::time::timeout(TCP_DEADLINE, TcpStream::connect(addr)).await {
                    Ok(Ok(s)) => {
                        let _ = s.set_nodelay(true);
                        tracing::info!(homer = %addr, "capture: connected to Homer");
                        conn = Some(s);
                    }
                    failed => {
                        let error = match failed {
                            Ok(Err(e)) => e.to_string(),
                            _ => "timed out".to_string(),
                        };
                        tracing::warn!(homer = %addr, %error, retry_s = backoff.as_secs(), "capture: cannot connect to Homer");
                        retry_at = Instant::now() + backoff;
                        backoff = (backoff * 2).min(RETRY_MAX);
                        self.counters.drop_one(HepDrop::Disconnected);
                        continue;
                    }
                }
            }
            let Some(stream) = conn.as_mut() else { continue };
            match tokio::time::timeout(TCP_DEADLINE, stream.write_all(&packet)).await {
                Ok(Ok(())) => {
                    self.counters.sent.fetch_add(1, Ordering::Relaxed);
                    backoff = RETRY_FIRST;
                }
                _ => {
                    tracing::warn!(retry_s = backoff.as_secs(), "capture: the connection to Homer broke");
                    conn = None;
                    retry_at = Instant::now() + backoff;
                    backoff = (backoff * 2).min(RETRY_MAX);
                    self.counters.drop_one(HepDrop::SendFailed);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_takes_whole_calls_near_the_share_asked() {
        let keys: Vec<String> = (0..10_000).map(|n| format!("{n:x}-call@host")).collect();
        let taken = keys.iter().filter(|k| sampled(k.as_bytes(), 25)).count();
        assert!((2200..2800).contains(&taken), "{taken} of 10000 at 25 %");
        assert!(keys.iter().all(|k| sampled(k.as_bytes(), 100)));
        // A lower share keeps a subset of a higher one's calls (one hash decides both).
        assert!(keys.iter().all(|k| !sampled(k.as_bytes(), 10) || sampled(k.as_bytes(), 25)));
    }
}
