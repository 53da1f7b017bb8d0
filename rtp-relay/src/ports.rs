//! Media ports: one range per media interface, even RTP ports with RTCP on the next one (RFC
//! 3550 §11). The [`PortBook`] is pure bookkeeping, one per engine shard (each shard owns every
//! `shards`-th pair of each range, so no lock is shared); the relay binds the sockets. A pair
//! is lent out with a [`PortLease`] that goes to whoever closes its sockets: only when it drops
//! does the pair come back to its book (at the tail, so late packets of an ended call do not
//! reach the next one).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;

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

    /// How many pairs the range holds.
    pub fn pair_count(&self) -> usize {
        self.pairs().count()
    }

    /// Every RTP port of the range whose RTCP port is inside it too.
    fn pairs(&self) -> impl Iterator<Item = u16> + '_ {
        let first = self.port_min.saturating_add(self.port_min % 2);
        (first..self.port_max).step_by(2).filter(|p| p.checked_add(1).is_some_and(|q| q <= self.port_max))
    }
}

/// The pairs one shard may hand out, per interface (index into the interface list).
#[derive(Debug, Clone)]
pub struct PortBook {
    free: Vec<VecDeque<u16>>,
    in_use: usize,
    /// Pairs another process holds: never lent again (until a restart).
    aside: Vec<(usize, u16)>,
}

impl PortBook {
    /// Shard `shard` of `shards` gets every `shards`-th pair of each range, starting at its
    /// own index, so the shards' ports interleave over the whole range.
    pub fn new(interfaces: &[MediaInterface], shard: usize, shards: usize) -> Self {
        let shards = shards.max(1);
        let free = interfaces.iter().map(|i| i.pairs().skip(shard % shards).step_by(shards).collect()).collect();
        Self { free, in_use: 0, aside: Vec::new() }
    }

    /// The next free pair of interface `iface`.
    pub fn take(&mut self, iface: usize) -> Option<u16> {
        let port = self.free.get_mut(iface)?.pop_front()?;
        self.in_use += 1;
        Some(port)
    }

    /// Pair `port` of interface `iface`, if it is free here (a session taken over from
    /// another engine keeps its ports).
    pub fn take_exact(&mut self, iface: usize, port: u16) -> bool {
        let Some(free) = self.free.get_mut(iface) else { return false };
        let Some(at) = free.iter().position(|&p| p == port) else { return false };
        free.remove(at);
        self.in_use += 1;
        true
    }

    /// A pair whose sockets are closed (its lease dropped) is free again, last in line, unless
    /// it was set aside.
    pub fn give_back(&mut self, iface: usize, port: u16) {
        if let Some(f) = self.free.get_mut(iface) {
            self.in_use = self.in_use.saturating_sub(1);
            if !self.aside.contains(&(iface, port)) {
                f.push_back(port);
            }
        }
    }

    /// A pair that would not bind (another process holds a port of it) is not lent again,
    /// whether it has come back already or comes back later.
    pub fn set_aside(&mut self, iface: usize, port: u16) {
        if self.aside.contains(&(iface, port)) {
            return;
        }
        self.aside.push((iface, port));
        if let Some(f) = self.free.get_mut(iface) {
            f.retain(|&p| p != port);
        }
    }

    /// Pairs set aside.
    pub fn aside(&self) -> usize {
        self.aside.len()
    }

    pub fn in_use(&self) -> usize {
        self.in_use
    }

    /// Pairs of `iface` not lent out.
    pub fn free(&self, iface: usize) -> usize {
        self.free.get(iface).map_or(0, VecDeque::len)
    }
}

/// Called with (interface index, port) when a lease drops.
pub type ReleaseSink = Arc<dyn Fn(usize, u16) + Send + Sync>;

/// A pair lent out by a [`PortBook`]; dropping it reports the pair free to the book's owner.
/// Whoever closes the sockets (the forwarder) holds it, so a pair never goes back while its
/// socket is open.
pub struct PortLease {
    pub iface: usize,
    pub port: u16,
    sink: ReleaseSink,
}

impl PortLease {
    pub fn new(iface: usize, port: u16, sink: ReleaseSink) -> Self {
        Self { iface, port, sink }
    }
}

impl std::fmt::Debug for PortLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortLease").field("iface", &self.iface).field("port", &self.port).finish()
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        (self.sink)(self.iface, self.port);
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

/// Binds the pair a lease names on `ip`; on failure the lease drops and the pair goes back.
pub fn bind_pair(ip: IpAddr, lease: PortLease) -> std::io::Result<PortPair> {
    let rtp = UdpSocket::bind(SocketAddr::new(ip, lease.port))?;
    let rtcp = UdpSocket::bind(SocketAddr::new(ip, lease.port + 1))?;
    rtp.set_nonblocking(true)?;
    rtcp.set_nonblocking(true)?;
    Ok(PortPair { rtp, rtcp, lease })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn iface(min: u16, max: u16) -> MediaInterface {
        MediaInterface {
            name: "t".into(),
            bind: "127.0.0.1".parse().expect("ip"),
            advertise: None,
            port_min: min,
            port_max: max,
        }
    }

    #[test]
    fn pairs_are_even_inside_the_range_and_split_between_shards() {
        // 41002/41003 and 41004/41005; 41006 has no RTCP port inside the range.
        let mut one = PortBook::new(&[iface(41001, 41006)], 0, 1);
        assert_eq!(one.free(0), 2);
        assert_eq!((one.take(0), one.take(0), one.take(0)), (Some(41002), Some(41004), None));
        let ifaces = [iface(41000, 41011)];
        let shard = |s| {
            let mut b = PortBook::new(&ifaces, s, 2);
            std::iter::from_fn(move || b.take(0)).collect::<Vec<_>>()
        };
        assert_eq!((shard(0), shard(1)), (vec![41000, 41004, 41008], vec![41002, 41006, 41010]));
    }

    /// A pair set aside is not lent again, whether it was free already or comes back later.
    #[test]
    fn a_pair_set_aside_is_never_lent_again() {
        let mut book = PortBook::new(&[iface(41030, 41035)], 0, 1);
        let lent = book.take(0).expect("a pair");
        book.set_aside(0, lent);
        book.set_aside(0, 41034);
        book.give_back(0, lent);
        assert_eq!((book.in_use(), book.free(0), book.aside()), (0, 1, 2));
        assert_eq!((book.take(0), book.take(0)), (Some(41032), None));
    }

    #[test]
    fn a_pair_comes_back_last_when_its_lease_drops() {
        let mut book = PortBook::new(&[iface(41020, 41025)], 0, 1);
        let back = Arc::new(Mutex::new(Vec::new()));
        let sink: ReleaseSink = {
            let back = back.clone();
            Arc::new(move |i, p| back.lock().expect("lock").push((i, p)))
        };
        let port = book.take(0).expect("a pair");
        assert_eq!(book.in_use(), 1);
        let lease = PortLease::new(0, port, sink.clone());
        let squatter = UdpSocket::bind(("127.0.0.1", port)).expect("squatter");
        assert!(bind_pair("127.0.0.1".parse().expect("ip"), lease).is_err(), "the port is taken");
        drop(squatter);
        let released: Vec<(usize, u16)> = std::mem::take(&mut *back.lock().expect("lock"));
        assert_eq!(released, vec![(0, 41020)]);
        for (i, p) in released {
            book.give_back(i, p);
        }
        assert_eq!(book.in_use(), 0);
        assert_eq!((book.take(0), book.take(0), book.take(0)), (Some(41022), Some(41024), Some(41020)));
    }
}
