//! TCP and TLS (RFC 3261 §18, §26.2): messages framed by Content-Length, one reader and one
//! writer task per connection (over the TLS session on a TLS one, whose handshake has the
//! first message's deadline and counts against the same caps), connections reused in both
//! directions (responses go back on the connection the
//! request came in on; requests to a peer reuse any open connection to it). Slow or silent
//! peers are cut off (issue 16): a message must be complete `tcp_message_timeout` after its
//! first byte however it trickles in, a connection a peer opened must bring its first message
//! within `tcp_first_message_timeout`, an idle one closes after `tcp_idle_timeout`; framing
//! keeps what it searched across reads. Connections peers open are capped overall and per
//! source (IPv6 per /64), those the SBC opens on a budget of their own, and the bytes of
//! partial messages over all connections too.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use socket2::{Domain, Socket, Type};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::Shared;
use crate::admission::source_key;
use crate::b2bua::{ConnId, Destination, SocketId, Source, Transport, TxId};
use crate::sip::msg::{salvage_request_rows, StreamFrame, StreamFramer};

/// How long an outgoing connect may take before the transaction is failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages queued per connection before senders see it as failed.
const WRITE_QUEUE: usize = 1024;
/// A partial message this large is cut when the buffer budget is spent (an INVITE with SDP
/// is a few kilobytes).
const LARGE_PARTIAL: usize = 64 * 1024;

/// A message waiting for a connection's writer, with the transaction to fail if it cannot go.
struct Outgoing {
    bytes: Bytes,
    shard: u8,
    tx: Option<TxId>,
    _unwritten: Unwritten,
}

/// Counts a message from the moment it is queued until its writer has written it or given it
/// up (dropped on every path): shutdown waits for the count to reach zero.
struct Unwritten(Arc<AtomicUsize>);

impl Unwritten {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count.clone())
    }
}

impl Drop for Unwritten {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
    }
}

pub(super) struct Conn {
    writer: mpsc::Sender<Outgoing>,
    peer: SocketAddr,
    inbound: bool,
    tls: bool,
    /// For a TLS connection the SBC opened: the name its server's certificate was checked for;
    /// for one a peer opened and aliased (RFC 5923), the name its client certificate proved.
    pub(super) server_name: Option<String>,
    /// The address new requests reach this connection by (an RFC 5923 alias).
    pub(super) alias: Option<SocketAddr>,
}

/// The limits of `limits.tcp_*`.
#[derive(Debug, Clone)]
pub(crate) struct TcpLimits {
    pub(crate) max_inbound: usize,
    pub(crate) max_outbound: usize,
    /// Connections one source (IPv6: one /64) may open; 0 = no cap.
    pub(crate) max_per_source: usize,
    /// Sources exempt from the per-source cap (`limits.admission.trusted`).
    pub(crate) trusted: Vec<profiles::config::Cidr>,
    pub(crate) idle_timeout: Duration,
    pub(crate) message_timeout: Duration,
    pub(crate) first_message_timeout: Duration,
    pub(crate) tls_handshake_timeout: Duration,
    pub(crate) max_buffered: usize,
}

impl TcpLimits {
    pub(crate) fn from_config(cfg: &crate::config::Config) -> Self {
        Self {
            max_inbound: cfg.tcp_max_connections,
            max_outbound: cfg.tcp_max_outbound_connections,
            max_per_source: cfg.tcp_max_connections_per_source,
            trusted: cfg.admission.trusted.clone(),
            idle_timeout: cfg.tcp_idle_timeout,
            message_timeout: cfg.tcp_message_timeout,
            first_message_timeout: cfg.tcp_first_message_timeout,
            tls_handshake_timeout: cfg.tls_handshake_timeout,
            max_buffered: cfg.tcp_max_buffered,
        }
    }
}

/// Why the SBC closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    /// A message not complete `message_timeout` after its first byte (slowloris, trickle).
    MessageTimeout = 0,
    /// A connection a peer opened that brought no message in time.
    FirstMessageTimeout = 1,
    /// Nothing at all for `idle_timeout`.
    IdleTimeout = 2,
    /// Partial messages over all connections passed `max_buffered`.
    BufferBudget = 3,
    /// A TLS handshake a peer began that failed or did not end within the first message's
    /// deadline.
    TlsHandshake = 4,
}

impl Cut {
    pub(crate) const COUNT: usize = 5;
    pub(crate) const ALL: [Self; Self::COUNT] =
        [Self::MessageTimeout, Self::FirstMessageTimeout, Self::IdleTimeout, Self::BufferBudget, Self::TlsHandshake];
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::MessageTimeout => "message_timeout",
            Self::FirstMessageTimeout => "first_message_timeout",
            Self::IdleTimeout => "idle_timeout",
            Self::BufferBudget => "buffer_budget",
            Self::TlsHandshake => "tls_handshake",
        }
    }
}

#[derive(Default)]
pub(crate) struct TcpTable {
    pub(super) conns: DashMap<ConnId, Conn>,
    /// The verified client certificates of TLS connections peers opened (the engine reads
    /// them through its `ConnectionFacts` port).
    pub(crate) identities: Arc<DashMap<ConnId, Arc<sbc_engine::connections::PeerIdentity>>>,
    /// Open connections by peer, and whether TLS (a TCP connection never carries a TLS send).
    pub(super) by_peer: DashMap<(SocketAddr, bool), ConnId>,
    /// Open connections peers opened per source (IPv6 per /64), for the per-source cap.
    per_source: DashMap<std::net::IpAddr, usize>,
    /// Open connections peers opened, and that the SBC opened.
    inbound: AtomicUsize,
    outbound: AtomicUsize,
    /// Bytes of partial messages held by every connection's reader.
    buffered: AtomicUsize,
    next_id: AtomicU64,
    /// Messages queued or being written (see [`Unwritten`]).
    unwritten: Arc<AtomicUsize>,
}

/// The engine's view of the connections' certificates (`sbc_engine::connections`).
#[derive(Debug)]
pub(crate) struct Identities(pub(crate) Arc<DashMap<ConnId, Arc<sbc_engine::connections::PeerIdentity>>>);

impl sbc_engine::connections::ConnectionFacts for Identities {
    fn peer_identity(&self, conn: ConnId) -> Option<Arc<sbc_engine::connections::PeerIdentity>> {
        self.0.get(&conn).map(|p| p.clone())
    }
}

impl TcpTable {
    /// `inbound`: the peer opened it (only those count against its per-source cap).
    fn register(
        &self,
        peer: SocketAddr,
        inbound: bool,
        tls: bool,
        server_name: Option<String>,
    ) -> (ConnId, mpsc::Receiver<Outgoing>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (writer, rx) = mpsc::channel(WRITE_QUEUE);
        self.conns.insert(id, Conn { writer, peer, inbound, tls, server_name, alias: None });
        self.by_peer.insert((peer, tls), id);
        if inbound {
            *self.per_source.entry(source_key(peer.ip())).or_insert(0) += 1;
            self.inbound.fetch_add(1, Ordering::Relaxed);
        } else {
            self.outbound.fetch_add(1, Ordering::Relaxed);
        }
        (id, rx)
    }

    fn remove(&self, id: ConnId) {
        self.identities.remove(&id);
        if let Some((_, c)) = self.conns.remove(&id) {
            self.by_peer.remove_if(&(c.peer, c.tls), |_, v| *v == id);
            if let Some(a) = c.alias {
                self.by_peer.remove_if(&(a, c.tls), |_, v| *v == id);
            }
            if c.inbound {
                let key = source_key(c.peer.ip());
                if let Some(mut n) = self.per_source.get_mut(&key) {
                    *n = n.saturating_sub(1);
                }
                self.per_source.remove_if(&key, |_, n| *n == 0);
                self.inbound.fetch_sub(1, Ordering::Relaxed);
            } else {
                self.outbound.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Messages handed to the connections' writers and not yet written (or given up).
    pub(super) fn unwritten(&self) -> usize {
        self.unwritten.load(Ordering::Acquire)
    }

    fn outgoing(&self, bytes: Bytes, shard: u8, tx: Option<TxId>) -> Outgoing {
        Outgoing { bytes, shard, tx, _unwritten: Unwritten::new(&self.unwritten) }
    }

    fn open_from(&self, ip: std::net::IpAddr) -> usize {
        self.per_source.get(&source_key(ip)).map_or(0, |n| *n)
    }

    /// Moves a reader's share of the buffer budget from `*held` to `now`; the total after.
    fn hold(&self, held: &mut usize, now: usize) -> usize {
        let total = if now >= *held {
            self.buffered.fetch_add(now - *held, Ordering::Relaxed) + (now - *held)
        } else {
            self.buffered.fetch_sub(*held - now, Ordering::Relaxed) - (*held - now)
        };
        *held = now;
        total
    }
}

pub(super) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_reuse_address(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    TcpListener::from_std(sock.into())
}

/// Accepts connections on a TCP listener; with `tls`, each begins with a TLS handshake.
pub(super) async fn accept(
    shared: Arc<Shared>,
    local: SocketId,
    listener: TcpListener,
    tls: Option<Arc<super::tls::TlsContext>>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "tcp accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let limits = &shared.tcp_limits;
        let trusted = limits.trusted.iter().any(|c| c.contains(peer.ip()));
        // (0 = no per-source cap.)
        let over_source =
            limits.max_per_source > 0 && shared.tcp.open_from(peer.ip()) >= limits.max_per_source && !trusted;
        if over_source || shared.tcp.inbound.load(Ordering::Relaxed) >= limits.max_inbound {
            shared.counters.tcp_refused.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        }
        // A TLS handshake must pass the gate first (its rate per source, the overall cap).
        #[allow(clippy::disallowed_methods)] // driver-side: the gate's buckets are timed
        let permit = match &tls {
            Some(_) => match shared.handshakes.begin(peer.ip(), trusted, std::time::Instant::now()) {
                Some(p) => Some(p),
                None => {
                    shared.counters.tls_handshakes_refused.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "tls handshake refused (rate or overall cap)");
                    drop(stream);
                    continue;
                }
            },
            None => None,
        };
        let _ = stream.set_nodelay(true);
        let (id, rx) = shared.tcp.register(peer, true, tls.is_some(), None);
        let Some(context) = &tls else {
            start_connection(shared.clone(), local, id, peer, stream, rx, true, Transport::Tcp);
            continue;
        };
        // The handshake in a task of its own, under its own deadline (the first message's
        // clock starts after it): the connection counts against the caps from now on, and
        // the permit against the handshakes in flight. (With the certificate loaded now.)
        let (shared, acceptor) = (shared.clone(), context.acceptor());
        tokio::spawn(async move {
            let deadline = shared.tcp_limits.tls_handshake_timeout;
            // Under rustls, the record clock: a record trickled in is cut like a message.
            let stream = super::tls_records::RecordClock::new(stream, shared.tcp_limits.message_timeout);
            let handshake = tokio::time::timeout(deadline, acceptor.accept(stream)).await;
            drop(permit);
            match handshake {
                Ok(Ok(tls)) => {
                    if let Some(who) = super::tls::peer_identity(tls.get_ref().1.peer_certificates()) {
                        shared.tcp.identities.insert(id, Arc::new(who));
                    }
                    start_connection(shared, local, id, peer, tls, rx, true, Transport::Tls)
                }
                failed => {
                    let why = failed.map_or_else(
                        |_| "timed out".to_string(),
                        |r| r.err().map(|e| e.to_string()).unwrap_or_default(),
                    );
                    tracing::debug!(%peer, %why, "tls handshake failed");
                    shared.counters.tcp_cuts[Cut::TlsHandshake as usize].fetch_add(1, Ordering::Relaxed);
                    shared.tcp.remove(id);
                    fail_queued(&shared, rx);
                }
            }
        });
    }
}

#[allow(clippy::too_many_arguments)] // one connection's parts, each from its opener
fn start_connection<S>(
    shared: Arc<Shared>,
    local: SocketId,
    id: ConnId,
    peer: SocketAddr,
    stream: S,
    rx: mpsc::Receiver<Outgoing>,
    inbound: bool,
    transport: Transport,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    shared.counters.tcp_connections.fetch_add(1, Ordering::Relaxed);
    let (read, write) = tokio::io::split(stream);
    let writer = tokio::spawn(write_loop(shared.clone(), write, rx));
    tokio::spawn(async move {
        if let Some(cut) = read_loop(&shared, local, id, peer, read, inbound, transport).await {
            shared.counters.tcp_cuts[cut as usize].fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, conn = id, reason = cut.label(), "tcp connection cut");
        }
        shared.tcp.remove(id);
        writer.abort();
        shared.counters.tcp_connections.fetch_sub(1, Ordering::Relaxed);
        tracing::debug!(%peer, conn = id, "tcp connection closed");
    });
}

async fn write_loop<W: AsyncWrite + Unpin>(shared: Arc<Shared>, mut write: W, mut rx: mpsc::Receiver<Outgoing>) {
    while let Some(o) = rx.recv().await {
        // Flushed each time: a TLS stream takes the bytes into its session and writes them to
        // the socket only as far as it can, so without it a message could wait for the next.
        if write.write_all(&o.bytes).await.is_err() || write.flush().await.is_err() {
            shared.report_error(o.shard, o.tx);
            break;
        }
    }
    // Whatever is still queued cannot be delivered on this connection.
    rx.close();
    while let Ok(o) = rx.try_recv() {
        shared.report_error(o.shard, o.tx);
    }
}

/// Reads and frames messages until the peer closes, the stream breaks or a limit cuts it
/// (returned). Time is read here, in the driver: the deadlines are the connection's.
#[allow(clippy::disallowed_methods)]
async fn read_loop<R: AsyncRead + Unpin>(
    shared: &Arc<Shared>,
    local: SocketId,
    id: ConnId,
    peer: SocketAddr,
    mut read: R,
    inbound: bool,
    transport: Transport,
) -> Option<Cut> {
    use tokio::time::Instant;
    let limits = &shared.tcp_limits;
    let mut buf = BytesMut::with_capacity(8192);
    let mut framer = StreamFramer::default();
    let src = Source { transport, local, remote: peer, conn: Some(id) };
    let opened = Instant::now();
    // A connection the SBC opened has spoken first: only those peers open must prove themselves.
    let mut framed_any = !inbound;
    // When the first byte of the message now in `buf` arrived.
    let mut started: Option<Instant> = None;
    let mut held = 0usize;
    // Whether a request may still make this connection an alias (RFC 5923): a TLS one a peer
    // opened, until its first request says.
    let mut may_alias = inbound && transport == Transport::Tls;
    let cut = loop {
        // Frame everything already buffered.
        let mut framed = false;
        let broken = loop {
            match framer.next(&buf) {
                Ok(StreamFrame::Message { len }) => {
                    let msg = buf.split_to(len).freeze();
                    (framed, framed_any) = (true, true);
                    shared.counters.datagrams_in.fetch_add(1, Ordering::Relaxed);
                    if std::mem::take(&mut may_alias) {
                        super::alias::take(shared, local, id, peer, &msg);
                    }
                    shared.dispatch(msg, src);
                }
                Ok(StreamFrame::KeepAlive { len, ping }) => {
                    let _ = buf.split_to(len);
                    framed = true;
                    if ping {
                        if let Some(c) = shared.tcp.conns.get(&id) {
                            let _ = c.writer.try_send(shared.tcp.outgoing(Bytes::from_static(b"\r\n"), 0, None));
                        }
                    }
                }
                Ok(StreamFrame::Incomplete) => break false,
                Err(e) => {
                    // The stream cannot be resynchronised: answer 400 if we can, then close.
                    shared.counters.parse_errors.fetch_add(1, Ordering::Relaxed);
                    if salvage_request_rows(&buf).is_some() {
                        shared.dispatch_unframeable(Bytes::copy_from_slice(&buf), e, src);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    tracing::debug!(%peer, error = %e, "tcp framing error, closing");
                    break true;
                }
            }
        };
        if broken {
            break None;
        }
        let now = Instant::now();
        started = match (buf.is_empty(), framed) {
            (true, _) => None,
            // What is left after a framed message is the start of the next one.
            (false, true) => Some(now),
            (false, false) => started.or(Some(now)),
        };
        // Over the budget, a connection holding a large partial message goes; one with an
        // ordinary message split across segments (far below it) is left to finish.
        if shared.tcp.hold(&mut held, buf.len()) > limits.max_buffered && buf.len() >= LARGE_PARTIAL {
            break Some(Cut::BufferBudget);
        }
        let first = (!framed_any).then(|| (opened + limits.first_message_timeout, Cut::FirstMessageTimeout));
        let (deadline, why) = match started {
            Some(s) => {
                let message = (s + limits.message_timeout, Cut::MessageTimeout);
                first.filter(|f| f.0 < message.0).unwrap_or(message)
            }
            None => first.unwrap_or((now + limits.idle_timeout, Cut::IdleTimeout)),
        };
        match tokio::time::timeout_at(deadline, read.read_buf(&mut buf)).await {
            // A TLS record that came too slowly (`tls_records.rs`).
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => break Some(Cut::MessageTimeout),
            Ok(Ok(0)) | Ok(Err(_)) => break None,
            Ok(Ok(_)) => {}
            Err(_) => break Some(why),
        }
    };
    shared.tcp.hold(&mut held, 0);
    cut
}

/// Sends on the preferred connection, any open connection to the peer, or a new one.
pub(super) fn send(
    shared: &Arc<Shared>,
    shard: u8,
    dest: &Destination,
    addr: SocketAddr,
    bytes: Bytes,
    tx: Option<TxId>,
) {
    let tls = dest.transport == Transport::Tls;
    let name = if tls { server_name(&dest.peer, addr) } else { None };
    let shown = name.as_ref().map(|n| n.to_str().to_ascii_lowercase());
    // The leg's own connection, else one open to the peer; for TLS only one the SBC opened and
    // checked for the same name (a connection the peer opened proves nothing about a name,
    // RFC 5923 §6).
    let conn = dest.conn.filter(|c| shared.tcp.conns.get(c).is_some_and(|c| c.tls == tls)).or_else(|| {
        let id = *shared.tcp.by_peer.get(&(addr, tls))?;
        let c = shared.tcp.conns.get(&id)?;
        (!tls || ((!c.inbound || c.alias == Some(addr)) && c.server_name == shown)).then_some(id)
    });
    if let Some(id) = conn {
        if let Some(c) = shared.tcp.conns.get(&id) {
            if c.writer.try_send(shared.tcp.outgoing(bytes, shard, tx)).is_err() {
                shared.report_error(shard, tx);
            }
            return;
        }
    }
    // New connection, on the budget of those the SBC opens (a flood of inbound connections
    // must not keep it from reaching its trunks); registered before it is up, so concurrent
    // sends queue on it.
    if shared.tcp.outbound.load(Ordering::Relaxed) >= shared.tcp_limits.max_outbound {
        return shared.report_error(shard, tx);
    }
    // A TLS connection needs the interface's client side, and a name to check the server by.
    let client = if tls {
        let host = match &dest.peer {
            crate::b2bua::Peer::Host(h, _) | crate::b2bua::Peer::Named { host: h, .. } => Some(&**h),
            crate::b2bua::Peer::Addr(_) => None,
        };
        let context = shared.tls.get(usize::from(dest.local)).and_then(|t| t.as_ref());
        let connector = context.map(|t| t.connector_for(host, addr)).map(|(c, unchecked)| {
            if unchecked {
                tracing::warn!(%addr, "TLS connection to a server whose certificate is NOT checked (tls.peers)");
            }
            c
        });
        match (connector, name) {
            (Some(c), Some(name)) => Some((c, name)),
            _ => return shared.report_error(shard, tx),
        }
    } else {
        None
    };
    let (id, rx) = shared.tcp.register(addr, false, tls, shown);
    if let Some(c) = shared.tcp.conns.get(&id) {
        let _ = c.writer.try_send(shared.tcp.outgoing(bytes, shard, tx));
    }
    let local_ip = shared.sockets.get(usize::from(dest.local)).map(|s| s.addr.ip());
    let (local, shared) = (dest.local, shared.clone());
    tokio::spawn(async move {
        let failed = match connect(addr, local_ip).await {
            Err(e) => Some((e, rx)),
            Ok(stream) => match client {
                None => {
                    start_connection(shared.clone(), local, id, addr, stream, rx, false, Transport::Tcp);
                    None
                }
                Some((connector, name)) => match tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, stream))
                    .await
                {
                    Ok(Ok(tls)) => {
                        start_connection(shared.clone(), local, id, addr, tls, rx, false, Transport::Tls);
                        None
                    }
                    Ok(Err(e)) => Some((e, rx)),
                    Err(_) => Some((std::io::Error::new(std::io::ErrorKind::TimedOut, "tls handshake timed out"), rx)),
                },
            },
        };
        if let Some((e, rx)) = failed {
            tracing::info!(%addr, error = %e, "connect failed");
            shared.tcp.remove(id);
            fail_queued(&shared, rx);
        }
    });
}

/// Fails the transactions of what was queued on a connection that never opened.
fn fail_queued(shared: &Shared, mut rx: mpsc::Receiver<Outgoing>) {
    rx.close();
    while let Ok(o) = rx.try_recv() {
        shared.report_error(o.shard, o.tx);
    }
}

/// The name a TLS server's certificate must carry: the host the request was sent to, else
/// its address.
fn server_name(peer: &crate::b2bua::Peer, addr: SocketAddr) -> Option<rustls::pki_types::ServerName<'static>> {
    match peer {
        crate::b2bua::Peer::Host(host, _) | crate::b2bua::Peer::Named { host, .. } => {
            rustls::pki_types::ServerName::try_from(host.to_string()).ok()
        }
        crate::b2bua::Peer::Addr(_) => Some(rustls::pki_types::ServerName::IpAddress(addr.ip().into())),
    }
}

async fn connect(addr: SocketAddr, local_ip: Option<std::net::IpAddr>) -> std::io::Result<TcpStream> {
    let sock = if addr.is_ipv6() { tokio::net::TcpSocket::new_v6()? } else { tokio::net::TcpSocket::new_v4()? };
    // Leave from the interface's own address so the peer sees the right source.
    if let Some(ip) = local_ip.filter(|ip| !ip.is_unspecified() && ip.is_ipv6() == addr.is_ipv6()) {
        sock.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, sock.connect(addr)).await {
        Ok(r) => r?,
        Err(_) => return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")),
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_counts_as_unwritten_until_it_is_dropped_written_or_not() {
        let table = TcpTable::default();
        let (tx, mut rx) = mpsc::channel(4);
        assert!(tx.try_send(table.outgoing(Bytes::from_static(b"a"), 0, None)).is_ok());
        assert!(tx.try_send(table.outgoing(Bytes::from_static(b"b"), 0, None)).is_ok());
        assert_eq!(table.unwritten(), 2, "queued");
        let taken = rx.try_recv().expect("queued");
        assert_eq!(table.unwritten(), 2, "taken by the writer, not yet written");
        drop(taken);
        assert_eq!(table.unwritten(), 1);
        drop(rx); // a writer that gives up: what was queued is gone too
        assert_eq!(table.unwritten(), 0);
        // A full or closed queue hands the message back, and it is dropped there.
        assert!(tx.try_send(table.outgoing(Bytes::from_static(b"c"), 0, None)).is_err());
        assert_eq!(table.unwritten(), 0);
    }
}
