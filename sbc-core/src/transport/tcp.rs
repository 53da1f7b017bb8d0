//! TCP (RFC 3261 §18): messages framed by Content-Length, one reader and one writer task per
//! connection, connections reused in both directions (responses go back on the connection the
//! request came in on; requests to a peer reuse any open connection to it). Slow or silent
//! peers are cut off: a partial message must complete within `tcp_message_timeout`, an idle
//! connection closes after `tcp_idle_timeout`, and the number of connections is capped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use socket2::{Domain, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::Shared;
use crate::b2bua::{ConnId, Destination, SocketId, Source, Transport, TxId};
use crate::sip::msg::{frame_stream, salvage_request_rows, StreamFrame};

/// How long an outgoing connect may take before the transaction is failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages queued per connection before senders see it as failed.
const WRITE_QUEUE: usize = 1024;

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

struct Conn {
    writer: mpsc::Sender<Outgoing>,
    peer: SocketAddr,
    inbound: bool,
}

#[derive(Default)]
pub(crate) struct TcpTable {
    conns: DashMap<ConnId, Conn>,
    by_peer: DashMap<SocketAddr, ConnId>,
    /// Open connections per remote address (for the per-source cap).
    per_ip: DashMap<std::net::IpAddr, usize>,
    next_id: AtomicU64,
    /// Messages queued or being written (see [`Unwritten`]).
    unwritten: Arc<AtomicUsize>,
}

impl TcpTable {
    /// `inbound`: the peer opened it (only those count against its per-source cap).
    fn register(&self, peer: SocketAddr, inbound: bool) -> (ConnId, mpsc::Receiver<Outgoing>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (writer, rx) = mpsc::channel(WRITE_QUEUE);
        self.conns.insert(id, Conn { writer, peer, inbound });
        self.by_peer.insert(peer, id);
        if inbound {
            *self.per_ip.entry(peer.ip()).or_insert(0) += 1;
        }
        (id, rx)
    }

    fn remove(&self, id: ConnId) {
        if let Some((_, c)) = self.conns.remove(&id) {
            self.by_peer.remove_if(&c.peer, |_, v| *v == id);
            if c.inbound {
                if let Some(mut n) = self.per_ip.get_mut(&c.peer.ip()) {
                    *n = n.saturating_sub(1);
                }
                self.per_ip.remove_if(&c.peer.ip(), |_, n| *n == 0);
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
        self.per_ip.get(&ip).map_or(0, |n| *n)
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

pub(super) async fn accept(shared: Arc<Shared>, local: SocketId, listener: TcpListener) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "tcp accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // (0 = no per-source cap.)
        let over_source = shared.tcp_max_per_source > 0
            && shared.tcp.open_from(peer.ip()) >= shared.tcp_max_per_source
            && !shared.trusted.iter().any(|c| c.contains(peer.ip()));
        if over_source || shared.counters.tcp_connections.load(Ordering::Relaxed) >= shared.tcp_max_connections {
            shared.counters.tcp_refused.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        }
        let (id, rx) = shared.tcp.register(peer, true);
        start_connection(shared.clone(), local, id, peer, stream, rx);
    }
}

fn start_connection(
    shared: Arc<Shared>,
    local: SocketId,
    id: ConnId,
    peer: SocketAddr,
    stream: TcpStream,
    rx: mpsc::Receiver<Outgoing>,
) {
    let _ = stream.set_nodelay(true);
    shared.counters.tcp_connections.fetch_add(1, Ordering::Relaxed);
    let (read, write) = stream.into_split();
    let writer = tokio::spawn(write_loop(shared.clone(), write, rx));
    tokio::spawn(async move {
        read_loop(&shared, local, id, peer, read).await;
        shared.tcp.remove(id);
        writer.abort();
        shared.counters.tcp_connections.fetch_sub(1, Ordering::Relaxed);
        tracing::debug!(%peer, conn = id, "tcp connection closed");
    });
}

async fn write_loop(shared: Arc<Shared>, mut write: tokio::net::tcp::OwnedWriteHalf, mut rx: mpsc::Receiver<Outgoing>) {
    while let Some(o) = rx.recv().await {
        if write.write_all(&o.bytes).await.is_err() {
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

async fn read_loop(
    shared: &Arc<Shared>,
    local: SocketId,
    id: ConnId,
    peer: SocketAddr,
    mut read: tokio::net::tcp::OwnedReadHalf,
) {
    let mut buf = BytesMut::with_capacity(8192);
    let src = Source { transport: Transport::Tcp, local, remote: peer, conn: Some(id) };
    loop {
        // Frame everything already buffered.
        loop {
            match frame_stream(&buf) {
                Ok(StreamFrame::Message { len }) => {
                    let msg = buf.split_to(len).freeze();
                    shared.counters.datagrams_in.fetch_add(1, Ordering::Relaxed);
                    shared.dispatch(msg, src);
                }
                Ok(StreamFrame::KeepAlive { len, ping }) => {
                    let _ = buf.split_to(len);
                    if ping {
                        if let Some(c) = shared.tcp.conns.get(&id) {
                            let _ = c.writer.try_send(shared.tcp.outgoing(Bytes::from_static(b"\r\n"), 0, None));
                        }
                    }
                }
                Ok(StreamFrame::Incomplete) => break,
                Err(e) => {
                    // The stream cannot be resynchronised: answer 400 if we can, then close.
                    shared.counters.parse_errors.fetch_add(1, Ordering::Relaxed);
                    if salvage_request_rows(&buf).is_some() {
                        shared.dispatch_unframeable(Bytes::copy_from_slice(&buf), e, src);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    tracing::debug!(%peer, error = %e, "tcp framing error, closing");
                    return;
                }
            }
        }
        let limit = if buf.is_empty() { shared.tcp_idle_timeout } else { shared.tcp_message_timeout };
        match tokio::time::timeout(limit, read.read_buf(&mut buf)).await {
            Ok(Ok(0)) => return,
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                shared.counters.tcp_timeouts.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, partial = buf.len(), "tcp connection timed out");
                return;
            }
        }
    }
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
    let conn =
        dest.conn.filter(|c| shared.tcp.conns.contains_key(c)).or_else(|| shared.tcp.by_peer.get(&addr).map(|r| *r));
    if let Some(id) = conn {
        if let Some(c) = shared.tcp.conns.get(&id) {
            if c.writer.try_send(shared.tcp.outgoing(bytes, shard, tx)).is_err() {
                shared.report_error(shard, tx);
            }
            return;
        }
    }
    // New connection: registered before it is up, so concurrent sends queue on it.
    if shared.counters.tcp_connections.load(Ordering::Relaxed) >= shared.tcp_max_connections {
        return shared.report_error(shard, tx);
    }
    let (id, rx) = shared.tcp.register(addr, false);
    if let Some(c) = shared.tcp.conns.get(&id) {
        let _ = c.writer.try_send(shared.tcp.outgoing(bytes, shard, tx));
    }
    let local_ip = shared.sockets.get(usize::from(dest.local)).map(|s| s.addr.ip());
    let (local, shared) = (dest.local, shared.clone());
    tokio::spawn(async move {
        match connect(addr, local_ip).await {
            Ok(stream) => start_connection(shared, local, id, addr, stream, rx),
            Err(e) => {
                tracing::info!(%addr, error = %e, "tcp connect failed");
                shared.tcp.remove(id);
                let mut rx = rx;
                rx.close();
                while let Ok(o) = rx.try_recv() {
                    shared.report_error(o.shard, o.tx);
                }
            }
        }
    });
}

async fn connect(addr: SocketAddr, local_ip: Option<std::net::IpAddr>) -> std::io::Result<TcpStream> {
    let sock = if addr.is_ipv6() { tokio::net::TcpSocket::new_v6()? } else { tokio::net::TcpSocket::new_v4()? };
    // Leave from the interface's own address so the peer sees the right source.
    if let Some(ip) = local_ip.filter(|ip| !ip.is_unspecified() && ip.is_ipv6() == addr.is_ipv6()) {
        sock.bind(SocketAddr::new(ip, 0))?;
    }
    match tokio::time::timeout(CONNECT_TIMEOUT, sock.connect(addr)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")),
    }
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
