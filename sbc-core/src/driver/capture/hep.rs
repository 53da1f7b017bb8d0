//! HEPv3 (the Homer Encapsulation Protocol, "EEP"): one SIP message with its addresses, time
//! and correlation as a packet of typed chunks. Layout: `HEP3`, the packet's length (u16),
//! then chunks of vendor (u16, 0 = generic), type (u16), length (u16, header included) and
//! data, every number in network order.

use std::net::{IpAddr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::b2bua::Transport;

/// Generic chunk types (HEP3 specification, "generic chunk types").
mod chunk {
    pub(super) const IP_FAMILY: u16 = 0x0001;
    pub(super) const IP_PROTOCOL: u16 = 0x0002;
    pub(super) const SRC_IPV4: u16 = 0x0003;
    pub(super) const DST_IPV4: u16 = 0x0004;
    pub(super) const SRC_IPV6: u16 = 0x0005;
    pub(super) const DST_IPV6: u16 = 0x0006;
    pub(super) const SRC_PORT: u16 = 0x0007;
    pub(super) const DST_PORT: u16 = 0x0008;
    pub(super) const TIME_SECONDS: u16 = 0x0009;
    pub(super) const TIME_MICROSECONDS: u16 = 0x000a;
    pub(super) const PROTOCOL_TYPE: u16 = 0x000b;
    pub(super) const AGENT_ID: u16 = 0x000c;
    pub(super) const AUTH_KEY: u16 = 0x000e;
    pub(super) const PAYLOAD: u16 = 0x000f;
    pub(super) const CORRELATION_ID: u16 = 0x0011;
    pub(super) const NODE_NAME: u16 = 0x0013;
}

/// Protocol type of a SIP payload (chunk 0x000b).
const PROTOCOL_SIP: u8 = 1;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// What every packet of this node carries.
#[derive(Debug, Clone, Default)]
pub(crate) struct HepIdentity {
    pub agent_id: u32,
    pub password: Option<Box<[u8]>>,
    pub node_name: Option<Box<[u8]>>,
}

/// One message as seen on the wire.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Captured<'a> {
    pub at: SystemTime,
    pub transport: Transport,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// The call's correlation id (its A leg's Call-ID), when the message belongs to one.
    pub correlation: Option<&'a [u8]>,
    pub payload: &'a [u8],
}

/// A packet over HEP's 64 KiB length field.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TooLarge;

/// Appends the HEPv3 packet of `m` to `out` (emptied first).
pub(crate) fn encode(m: &Captured<'_>, id: &HepIdentity, out: &mut Vec<u8>) -> Result<(), TooLarge> {
    out.clear();
    out.extend_from_slice(b"HEP3\0\0");
    let (src, dst) = same_family(m.src.ip(), m.dst.ip());
    let protocol = match m.transport {
        Transport::Udp => 17,
        Transport::Tcp | Transport::Tls => 6,
    };
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            put(out, chunk::IP_FAMILY, &[AF_INET]);
            put(out, chunk::IP_PROTOCOL, &[protocol]);
            put(out, chunk::SRC_IPV4, &s.octets());
            put(out, chunk::DST_IPV4, &d.octets());
        }
        (s, d) => {
            put(out, chunk::IP_FAMILY, &[AF_INET6]);
            put(out, chunk::IP_PROTOCOL, &[protocol]);
            put(out, chunk::SRC_IPV6, &v6(s).octets());
            put(out, chunk::DST_IPV6, &v6(d).octets());
        }
    }
    put(out, chunk::SRC_PORT, &m.src.port().to_be_bytes());
    put(out, chunk::DST_PORT, &m.dst.port().to_be_bytes());
    let since = m.at.duration_since(UNIX_EPOCH).unwrap_or_default();
    put(out, chunk::TIME_SECONDS, &(since.as_secs() as u32).to_be_bytes());
    put(out, chunk::TIME_MICROSECONDS, &since.subsec_micros().to_be_bytes());
    put(out, chunk::PROTOCOL_TYPE, &[PROTOCOL_SIP]);
    put(out, chunk::AGENT_ID, &id.agent_id.to_be_bytes());
    if let Some(p) = &id.password {
        put(out, chunk::AUTH_KEY, p);
    }
    if let Some(n) = &id.node_name {
        put(out, chunk::NODE_NAME, n);
    }
    if let Some(c) = m.correlation {
        put(out, chunk::CORRELATION_ID, c);
    }
    if m.payload.len() > usize::from(u16::MAX) {
        return Err(TooLarge);
    }
    put(out, chunk::PAYLOAD, m.payload);
    let total = u16::try_from(out.len()).map_err(|_| TooLarge)?;
    out[4..6].copy_from_slice(&total.to_be_bytes());
    Ok(())
}

fn put(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
    // Longer data only in the payload, which `encode` checks through the total.
    let len = (data.len() + 6).min(usize::from(u16::MAX)) as u16;
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(data);
}

/// Both addresses in one family: an IPv4-mapped IPv6 address (a dual-stack socket's peer) is
/// written as IPv4 when the other side is IPv4 too.
fn same_family(src: IpAddr, dst: IpAddr) -> (IpAddr, IpAddr) {
    let plain = |a: IpAddr| match a {
        IpAddr::V6(v) => v.to_ipv4_mapped().map_or(a, IpAddr::V4),
        v4 => v4,
    };
    (plain(src), plain(dst))
}

fn v6(a: IpAddr) -> std::net::Ipv6Addr {
    match a {
        IpAddr::V4(v) => v.to_ipv6_mapped(),
        IpAddr::V6(v) => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Chunks of a packet by type, checking the framing on the way.
    fn chunks(p: &[u8]) -> Vec<(u16, Vec<u8>)> {
        assert_eq!(&p[..4], b"HEP3");
        assert_eq!(usize::from(u16::from_be_bytes([p[4], p[5]])), p.len(), "total length");
        let mut out = Vec::new();
        let mut at = 6;
        while at < p.len() {
            assert_eq!(&p[at..at + 2], &[0, 0], "generic vendor");
            let kind = u16::from_be_bytes([p[at + 2], p[at + 3]]);
            let len = usize::from(u16::from_be_bytes([p[at + 4], p[at + 5]]));
            out.push((kind, p[at + 6..at + len].to_vec()));
            at += len;
        }
        assert_eq!(at, p.len(), "chunks fill the packet");
        out
    }

    fn get(c: &[(u16, Vec<u8>)], kind: u16) -> Option<&[u8]> {
        c.iter().find(|(k, _)| *k == kind).map(|(_, v)| v.as_slice())
    }

    #[test]
    fn an_ipv4_udp_message_carries_addresses_time_and_correlation() {
        let at = UNIX_EPOCH + Duration::from_micros(1_765_000_000_123_456);
        let m = Captured {
            at,
            transport: Transport::Udp,
            src: "192.0.2.1:5060".parse().expect("addr"),
            dst: "198.51.100.7:5080".parse().expect("addr"),
            correlation: Some(b"a-leg@x"),
            payload: b"OPTIONS sip:x SIP/2.0\r\n\r\n",
        };
        let id = HepIdentity { agent_id: 2001, password: Some((*b"pw").into()), node_name: Some((*b"sbc-1").into()) };
        let mut out = Vec::new();
        encode(&m, &id, &mut out).expect("fits");
        let c = chunks(&out);
        assert_eq!(get(&c, chunk::IP_FAMILY), Some(&[AF_INET][..]));
        assert_eq!(get(&c, chunk::IP_PROTOCOL), Some(&[17][..]));
        assert_eq!(get(&c, chunk::SRC_IPV4), Some(&[192, 0, 2, 1][..]));
        assert_eq!(get(&c, chunk::DST_IPV4), Some(&[198, 51, 100, 7][..]));
        assert_eq!(get(&c, chunk::SRC_PORT), Some(&5060u16.to_be_bytes()[..]));
        assert_eq!(get(&c, chunk::DST_PORT), Some(&5080u16.to_be_bytes()[..]));
        assert_eq!(get(&c, chunk::TIME_SECONDS), Some(&1_765_000_000u32.to_be_bytes()[..]));
        assert_eq!(get(&c, chunk::TIME_MICROSECONDS), Some(&123_456u32.to_be_bytes()[..]));
        assert_eq!(get(&c, chunk::PROTOCOL_TYPE), Some(&[1][..]));
        assert_eq!(get(&c, chunk::AGENT_ID), Some(&2001u32.to_be_bytes()[..]));
        assert_eq!(get(&c, chunk::AUTH_KEY), Some(&b"pw"[..]));
        assert_eq!(get(&c, chunk::NODE_NAME), Some(&b"sbc-1"[..]));
        assert_eq!(get(&c, chunk::CORRELATION_ID), Some(&b"a-leg@x"[..]));
        assert_eq!(get(&c, chunk::PAYLOAD), Some(m.payload));
    }

    #[test]
    fn families_are_made_one_and_tls_is_tcp() {
        let m = Captured {
            at: UNIX_EPOCH,
            transport: Transport::Tls,
            src: "[::ffff:192.0.2.1]:5061".parse().expect("addr"),
            dst: "198.51.100.7:5061".parse().expect("addr"),
            correlation: None,
            payload: b"x",
        };
        let mut out = Vec::new();
        encode(&m, &HepIdentity::default(), &mut out).expect("fits");
        let c = chunks(&out);
        assert_eq!(get(&c, chunk::IP_FAMILY), Some(&[AF_INET][..]), "a mapped address is IPv4");
        assert_eq!(get(&c, chunk::IP_PROTOCOL), Some(&[6][..]));
        assert!(get(&c, chunk::CORRELATION_ID).is_none() && get(&c, chunk::AUTH_KEY).is_none());
        let mixed = Captured { src: "[2001:db8::1]:5061".parse().expect("addr"), ..m };
        encode(&mixed, &HepIdentity::default(), &mut out).expect("fits");
        let c = chunks(&out);
        assert_eq!(get(&c, chunk::IP_FAMILY), Some(&[AF_INET6][..]));
        let dst: std::net::Ipv6Addr = "::ffff:198.51.100.7".parse().expect("v6");
        assert_eq!(get(&c, chunk::DST_IPV6), Some(&dst.octets()[..]), "IPv4 beside IPv6 is mapped");
    }

    #[test]
    fn a_message_over_64_kib_is_refused() {
        let big = vec![b'x'; 65_500];
        let m = Captured {
            at: UNIX_EPOCH,
            transport: Transport::Tcp,
            src: "192.0.2.1:5060".parse().expect("addr"),
            dst: "192.0.2.2:5060".parse().expect("addr"),
            correlation: None,
            payload: &big,
        };
        assert_eq!(encode(&m, &HepIdentity::default(), &mut Vec::new()), Err(TooLarge));
    }
}
