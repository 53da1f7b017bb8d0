//! UDP: on Linux a group of sockets per listen address sharing it through `SO_REUSEPORT`, one
//! receiver task each. The kernel picks the socket by a hash of the sender's address, so the
//! datagrams of one peer keep their order (an ACK is never overtaken by the BYE sent right
//! after it) while many peers spread over the receivers. One busy peer is read by one task,
//! which costs little: receiving only parses and hands over, the shards do the work.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use super::Shared;
use crate::b2bua::{SocketId, Source, Transport};

/// Socket buffers large enough to ride out bursts of signalling (the kernel may cap them).
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// A listen address's sockets: all of them receive; `sender` (one of them) sends.
#[derive(Debug)]
pub(super) struct Group {
    pub(super) sender: Arc<UdpSocket>,
    pub(super) receivers: Vec<Arc<UdpSocket>>,
}

/// Binds up to `count` sockets to `addr`.
///
/// A plain bind comes first: it fails with "address in use" when anything holds the address,
/// including another sbcd whose reuse-port group would otherwise silently take part of the
/// traffic. It also resolves port 0 to the port the group then shares. (Between that probe
/// and the group's bind lies a short window in which a process started at the same instant
/// could pass the probe too.) Elsewhere than Linux, or where the option is refused, one
/// socket serves the address.
pub(super) fn bind_group(addr: SocketAddr, count: usize) -> std::io::Result<Group> {
    let probe = socket(addr, false)?;
    let addr = probe.local_addr()?.as_socket().unwrap_or(addr);
    let (first, rest) = if count <= 1 || !cfg!(target_os = "linux") {
        (probe, Vec::new())
    } else {
        drop(probe);
        let shared = || socket(addr, true);
        match shared().and_then(|first| Ok((first, (1..count).map(|_| shared()).collect::<Result<Vec<_>, _>>()?))) {
            Ok(group) => group,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => return Err(e),
            Err(e) => {
                tracing::warn!(%addr, error = %e, "SO_REUSEPORT refused: one socket serves the address");
                (socket(addr, false)?, Vec::new())
            }
        }
    };
    let sender = Arc::new(UdpSocket::from_std(first.into())?);
    let mut receivers = vec![sender.clone()];
    for s in rest {
        receivers.push(Arc::new(UdpSocket::from_std(s.into())?));
    }
    Ok(Group { sender, receivers })
}

fn socket(addr: SocketAddr, reuse_port: bool) -> std::io::Result<Socket> {
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    #[cfg(target_os = "linux")]
    if reuse_port {
        sock.set_reuse_port(true)?;
    }
    #[cfg(not(target_os = "linux"))]
    let _ = reuse_port;
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    Ok(sock)
}

pub(super) async fn receive(shared: Arc<Shared>, id: SocketId, sock: Arc<UdpSocket>) {
    // The largest UDP payload; anything bigger cannot arrive in one datagram.
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, remote) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // ICMP errors surface here on some systems; they are not fatal for the socket.
                tracing::debug!(error = %e, "udp receive error");
                continue;
            }
        };
        shared.counters.datagrams_in.fetch_add(1, Ordering::Relaxed);
        let data = &buf[..n];
        if data.iter().all(|&b| b == b'\r' || b == b'\n' || b == 0) {
            continue; // keepalive
        }
        let src = Source { transport: Transport::Udp, local: id, remote, conn: None };
        shared.dispatch(Bytes::copy_from_slice(data), src);
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_group_shares_its_port_and_a_second_group_is_refused() {
        let group = bind_group("127.0.0.1:0".parse().expect("addr"), 3).expect("bind").receivers;
        assert_eq!(group.len(), 3);
        let addr = group[0].local_addr().expect("addr");
        assert!(group.iter().all(|s| s.local_addr().ok() == Some(addr)));
        let again = bind_group(addr, 3).expect_err("a second instance must not join");
        assert_eq!(again.kind(), std::io::ErrorKind::AddrInUse);
    }

    #[tokio::test]
    async fn one_peer_lands_on_one_socket_so_its_datagrams_keep_their_order() {
        let group = bind_group("127.0.0.1:0".parse().expect("addr"), 4).expect("bind").receivers;
        let addr = group[0].local_addr().expect("addr");
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").expect("peer");
        for i in 0..50u8 {
            peer.send_to(&[i], addr).expect("send");
        }
        let mut per_socket = Vec::new();
        for s in &group {
            let mut got = Vec::new();
            let mut buf = [0u8; 8];
            // Loopback delivery is synchronous: what is queued is there; a short wait ends each.
            while let Ok(Ok((n, _))) =
                tokio::time::timeout(std::time::Duration::from_millis(30), s.recv_from(&mut buf)).await
            {
                got.extend_from_slice(&buf[..n]);
            }
            per_socket.push(got);
        }
        let holders: Vec<_> = per_socket.iter().filter(|g| !g.is_empty()).collect();
        assert_eq!(holders.len(), 1, "one socket gets all of one peer's datagrams: {per_socket:?}");
        assert_eq!(*holders[0], (0..50).collect::<Vec<u8>>());
    }
}
