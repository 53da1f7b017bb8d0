//! UDP: one socket per listen address, several receiver tasks per socket.

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

pub(super) fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    UdpSocket::from_std(sock.into())
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
