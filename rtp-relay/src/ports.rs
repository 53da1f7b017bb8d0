//! Port pools: one per media interface, even RTP ports with RTCP on the next one (RFC 3550
//! §11). Ports come back at the tail, so a freed port is reused last and late packets of an
//! ended call do not reach the next one. A port some other process holds is skipped.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use crate::RelayError;

/// A media interface: where RTP is bound, what SDP says, which ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaInterface {
    pub name: String,
    pub bind: IpAddr,
    /// The address written into SDP (a public address in front of a 1:1 NAT); `bind` if unset.
    pub advertise: Option<IpAddr>,
    pub port_min: u16,
    pub port_max: u16,
}

impl MediaInterface {
    pub fn advertised(&self) -> IpAddr {
        self.advertise.unwrap_or(self.bind)
    }

    /// Whether `addr` is one of this interface's relay sockets (bound or advertised address,
    /// a port of its range).
    pub fn owns(&self, addr: SocketAddr) -> bool {
        let ip = addr.ip().to_canonical();
        (ip == self.bind.to_canonical() || Some(ip) == self.advertise.map(|a| a.to_canonical()))
            && (self.port_min..=self.port_max.saturating_add(1)).contains(&addr.port())
    }
}

/// An RTP socket and its RTCP socket, bound. Fields drop in order: the sockets close before
/// the lease gives the ports back.
#[derive(Debug)]
pub struct PortPair {
    pub rtp: UdpSocket,
    pub rtcp: UdpSocket,
    pub lease: PortLease,
}

/// Ownership of a port pair in its pool; dropping it gives the pair back. Whoever closes the
/// sockets (the forwarder) holds it, so a port is never handed out while its socket is open.
#[derive(Debug)]
pub struct PortLease {
    pool: Arc<PortPool>,
    pub port: u16,
}

impl Drop for PortLease {
    fn drop(&mut self) {
        self.pool.in_use.fetch_sub(1, Relaxed);
        self.pool.give_back_port(self.port);
    }
}

#[derive(Debug)]
pub(crate) struct PortPool {
    pub(crate) iface: MediaInterface,
    free: Mutex<VecDeque<u16>>,
    pub(crate) in_use: AtomicU64,
}

impl PortPool {
    pub(crate) fn new(iface: MediaInterface) -> Self {
        let first = iface.port_min.saturating_add(iface.port_min % 2);
        let free: VecDeque<u16> = (first..iface.port_max)
            .step_by(2)
            .filter(|p| p.checked_add(1).is_some_and(|q| q <= iface.port_max))
            .collect();
        Self { iface, free: Mutex::new(free), in_use: AtomicU64::new(0) }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.free.lock().map_or(0, |f| f.len()) + self.in_use.load(Relaxed) as usize
    }

    /// Takes the next free pair that binds. Ports another process holds go to the tail.
    pub(crate) fn take(self: &Arc<Self>) -> Result<PortPair, RelayError> {
        let attempts = self.free.lock().map_or(0, |f| f.len());
        for _ in 0..attempts {
            let Some(port) = self.free.lock().ok().and_then(|mut f| f.pop_front()) else { break };
            match bind_pair(self.iface.bind, port) {
                Ok((rtp, rtcp)) => {
                    self.in_use.fetch_add(1, Relaxed);
                    return Ok(PortPair { rtp, rtcp, lease: PortLease { pool: self.clone(), port } });
                }
                Err(e) => {
                    tracing::debug!(port, error = %e, interface = %self.iface.name, "media port busy, skipped");
                    self.give_back_port(port);
                }
            }
        }
        Err(RelayError::NoPorts { interface: self.iface.name.clone() })
    }

    fn give_back_port(&self, port: u16) {
        if let Ok(mut f) = self.free.lock() {
            f.push_back(port);
        }
    }
}

fn bind_pair(ip: IpAddr, port: u16) -> std::io::Result<(UdpSocket, UdpSocket)> {
    let rtp = UdpSocket::bind(SocketAddr::new(ip, port))?;
    let rtcp = UdpSocket::bind(SocketAddr::new(ip, port + 1))?;
    rtp.set_nonblocking(true)?;
    rtcp.set_nonblocking(true)?;
    Ok((rtp, rtcp))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(min: u16, max: u16) -> Arc<PortPool> {
        Arc::new(PortPool::new(MediaInterface {
            name: "t".into(),
            bind: "127.0.0.1".parse().expect("ip"),
            advertise: None,
            port_min: min,
            port_max: max,
        }))
    }

    #[test]
    fn pairs_are_even_and_inside_the_range() {
        let p = pool(41001, 41006);
        // 41002/41003 and 41004/41005; 41006 has no RTCP port inside the range.
        assert_eq!(p.capacity(), 2);
    }

    #[test]
    fn a_busy_port_is_skipped_and_an_empty_pool_says_so() {
        let p = pool(41010, 41013);
        let squatter = UdpSocket::bind("127.0.0.1:41010").expect("bind squatter");
        let pair = p.take().expect("the second pair binds");
        assert_eq!(pair.lease.port, 41012);
        assert!(matches!(p.take(), Err(RelayError::NoPorts { .. })));
        drop(squatter);
        drop(pair);
        // The skipped port went to the tail, before the released one.
        assert_eq!(p.take().expect("free again").lease.port, 41010);
    }
}
