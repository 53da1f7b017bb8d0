//! The HEP exporter: shards hand it packets without waiting (a full queue drops them, counted),
//! and one task sends them to Homer over UDP or TCP. A Homer that is down, slow or unknown to
//! DNS costs signalling nothing; what it misses is counted by reason.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
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
    identity: HepIdentity,
    sampling_percent: u8,
    /// By socket id: whether its interface is exported.
    exported: Vec<bool>,
    pub(crate) counters: Arc<HepCounters>,
}

impl HepExport {
    /// Starts the sender task. `sockets` name each socket's interface.
    pub(crate) fn start(
        s: &HepSettings,
        default_node_name: Option<&str>,
        sockets: &[(LocalSocket, String)],
        dns: Arc<Dns>,
    ) -> Self {
        let (queue, rx) = mpsc::channel(s.queue);
        let counters = Arc::new(HepCounters::default());
        let exported =
            sockets.iter().map(|(_, iface)| s.interfaces.as_ref().is_none_or(|names| names.contains(iface))).collect();
        let node_name = s.node_name.as_deref().or(default_node_name);
        let identity = HepIdentity {
            agent_id: s.agent_id,
            password: s.password.as_ref().map(|p| p.as_bytes().into()),
            node_name: node_name.map(|n| n.as_bytes().into()),
        };
        tracing::info!(homer = %s.target, transport = %s.transport, "capture: HEP export on");
        tokio::spawn(send_loop(rx, Target::new(s.target.clone(), dns), s.transport, counters.clone()));
        Self { queue, identity, sampling_percent: s.sampling_percent, exported, counters }
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
        if self.queue.try_send(packet).is_err() {
            self.counters.drop_one(HepDrop::QueueFull);
        }
    }
}

/// Whole calls are sampled: the decision is a hash of the correlation id (FNV-1a), the same for
/// every message of a call and on every node.
fn sampled(key: &[u8], percent: u8) -> bool {
    if percent >= 100 {
        return true;
    }
    let h = key.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
    h % 100 < u64::from(percent)
}

/// How long a resolved Homer address is used before it is asked again (DNS's own cache
/// answers in between, within the record's TTL).
const REFRESH: Duration = Duration::from_secs(30);
/// After a failed lookup or connect, messages are dropped this long before the next try.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// A TCP connect or write to Homer that takes longer breaks the connection.
const TCP_DEADLINE: Duration = Duration::from_secs(3);

/// Homer's address, resolved when it is a name.
struct Target {
    target: HepTarget,
    dns: Arc<Dns>,
    addr: Option<SocketAddr>,
    /// When the address must be asked for again.
    refresh_at: Instant,
}

impl Target {
    fn new(target: HepTarget, dns: Arc<Dns>) -> Self {
        let addr = match &target {
            HepTarget::Addr(a) => Some(*a),
            HepTarget::Host(..) => None,
        };
        Self { target, dns, addr, refresh_at: Instant::now() }
    }

    /// The address to send to; a failed lookup keeps the last one (if any) and is not tried
    /// again for [`RETRY_FIRST`].
    async fn current(&mut self) -> Option<SocketAddr> {
        let HepTarget::Host(host, port) = &self.target else { return self.addr };
        if Instant::now() < self.refresh_at {
            return self.addr;
        }
        match self.dns.resolve(host, *port).await {
            Ok(a) => {
                if self.addr != Some(a) {
                    tracing::info!(homer = %self.target, addr = %a, "capture: Homer resolved");
                }
                self.addr = Some(a);
                self.refresh_at = Instant::now() + REFRESH;
            }
            Err(why) => {
                tracing::warn!(homer = %self.target, ?why, "capture: cannot resolve Homer; messages are dropped");
                self.refresh_at = Instant::now() + RETRY_FIRST;
            }
        }
        self.addr
    }
}

async fn send_loop(rx: mpsc::Receiver<Vec<u8>>, target: Target, transport: Transport, counters: Arc<HepCounters>) {
    match transport {
        Transport::Tcp | Transport::Tls => send_tcp(rx, target, counters).await,
        Transport::Udp => send_udp(rx, target, counters).await,
    }
}

async fn send_udp(mut rx: mpsc::Receiver<Vec<u8>>, mut target: Target, counters: Arc<HepCounters>) {
    let mut socket: Option<(bool, UdpSocket)> = None;
    let mut failing = false;
    while let Some(packet) = rx.recv().await {
        let Some(addr) = target.current().await else {
            counters.drop_one(HepDrop::Unresolved);
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
                counters.sent.fetch_add(1, Ordering::Relaxed);
                failing = false;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(homer = %addr, error = %e, "capture: HEP send failed");
                }
                failing = true;
                counters.drop_one(HepDrop::SendFailed);
            }
        }
    }
}

async fn send_tcp(mut rx: mpsc::Receiver<Vec<u8>>, mut target: Target, counters: Arc<HepCounters>) {
    let mut conn: Option<TcpStream> = None;
    let mut retry_at = Instant::now();
    let mut backoff = RETRY_FIRST;
    while let Some(packet) = rx.recv().await {
        if conn.is_none() {
            if Instant::now() < retry_at {
                counters.drop_one(HepDrop::Disconnected);
                continue;
            }
            let Some(addr) = target.current().await else {
                counters.drop_one(HepDrop::Unresolved);
                continue;
            };
            match tokio::time::timeout(TCP_DEADLINE, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    tracing::info!(homer = %addr, "capture: connected to Homer");
                    conn = Some(s);
                    backoff = RETRY_FIRST;
                }
                failed => {
                    let error = failed.map_or_else(
                        |_| "timed out".to_string(),
                        |r| r.err().map(|e| e.to_string()).unwrap_or_default(),
                    );
                    tracing::warn!(homer = %addr, %error, retry_s = backoff.as_secs(), "capture: cannot connect to Homer");
                    retry_at = Instant::now() + backoff;
                    backoff = (backoff * 2).min(RETRY_MAX);
                    counters.drop_one(HepDrop::Disconnected);
                    continue;
                }
            }
        }
        let Some(stream) = conn.as_mut() else { continue };
        match tokio::time::timeout(TCP_DEADLINE, stream.write_all(&packet)).await {
            Ok(Ok(())) => {
                counters.sent.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                tracing::warn!("capture: the connection to Homer broke; connecting again");
                conn = None;
                counters.drop_one(HepDrop::SendFailed);
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
        assert!(keys.iter().all(|k| sampled(k.as_bytes(), 25) == sampled(k.as_bytes(), 25)), "stable");
        assert!(keys.iter().all(|k| sampled(k.as_bytes(), 100)));
    }
}
