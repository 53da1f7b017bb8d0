//! The flow-table entry an offload backend (XDP/AF_XDP, io_uring) mirrors: one plain,
//! fixed-size, versioned `#[repr(C)]` record per receiving socket, as rtpengine shares one
//! command header between daemon and kernel module. Userspace stays the source of truth: a
//! backend may take any subset of flows and drop them at any time.

use std::net::{IpAddr, SocketAddr};

use crate::flow::StreamFlows;

/// Bumped whenever [`FlowEntryV1`]'s layout changes.
pub const FLOW_ABI_VERSION: u32 = 2;

/// An IPv4 or IPv6 address and port; IPv4 is stored IPv4-mapped (`::ffff:a.b.c.d`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WireAddr {
    pub ip: [u8; 16],
    pub port: u16,
    /// 4 or 6; 0 = no address.
    pub family: u8,
    pub _pad: u8,
}

impl WireAddr {
    pub fn from_socket_addr(a: Option<SocketAddr>) -> Self {
        match a {
            None => Self::default(),
            Some(a) => {
                let (ip, family) = match a.ip() {
                    IpAddr::V4(v4) => (v4.to_ipv6_mapped().octets(), 4),
                    IpAddr::V6(v6) => (v6.octets(), 6),
                };
                Self { ip, port: a.port(), family, _pad: 0 }
            }
        }
    }
}

/// Flag bits of [`FlowEntryV1::flags`].
pub mod flags {
    /// Packets from other sources than `expected_source` are not for the fast path.
    pub const STRICT_SOURCE: u32 = 1;
    /// Drop RTP packets whose payload type is `drop_payload_type`.
    pub const DROP_PAYLOAD_TYPE: u32 = 2;
    /// The relay decrypts or encrypts this stream's packets (SRTP termination): a backend
    /// that only forwards must leave it to userspace (version 2).
    pub const USERSPACE_ONLY: u32 = 4;
}

/// "A packet arriving at `local` goes out from `out_local` to `dest`."
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlowEntryV1 {
    pub version: u32,
    pub flags: u32,
    /// Bumped on every update, so a backend can tell a stale entry.
    pub generation: u32,
    pub stream: u64,
    pub local: WireAddr,
    pub out_local: WireAddr,
    pub dest: WireAddr,
    /// The latched source when the sender is symmetric (family 0 otherwise).
    pub expected_source: WireAddr,
    pub drop_payload_type: u8,
    pub _pad: [u8; 7],
}

/// The four entries (one per receiving socket, `[side][component]` order) that describe a
/// stream's current forwarding state: what an offload backend installs for it.
pub fn stream_entries(
    stream: u64,
    flows: &StreamFlows,
    locals: &[[SocketAddr; 2]; 2],
    generation: u32,
) -> [FlowEntryV1; 4] {
    std::array::from_fn(|k| {
        let (side, comp) = (k / 2, k % 2);
        let remote = &flows.spec().remotes[side];
        let mut flags = 0;
        let mut expected_source = WireAddr::default();
        if remote.symmetric {
            flags |= flags::STRICT_SOURCE;
            expected_source = WireAddr::from_socket_addr(flows.target(side, comp));
        }
        if remote.drop_payload_type.is_some() && comp == crate::flow::RTP {
            flags |= flags::DROP_PAYLOAD_TYPE;
        }
        if flows.spec().remotes.iter().any(|r| r.crypto.srtp) {
            flags |= flags::USERSPACE_ONLY;
        }
        FlowEntryV1 {
            version: FLOW_ABI_VERSION,
            flags,
            generation,
            stream,
            local: WireAddr::from_socket_addr(Some(locals[side][comp])),
            out_local: WireAddr::from_socket_addr(Some(locals[1 - side][comp])),
            dest: WireAddr::from_socket_addr(flows.target(1 - side, comp)),
            expected_source,
            drop_payload_type: remote.drop_payload_type.unwrap_or(0),
            _pad: [0; 7],
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{RemoteSpec, StreamSpec};

    #[test]
    fn entries_mirror_the_flow_state() {
        let a: SocketAddr = "10.0.0.1:4000".parse().expect("addr");
        let b: SocketAddr = "10.0.0.2:6000".parse().expect("addr");
        let spec = StreamSpec {
            remotes: [
                RemoteSpec {
                    addr: [Some(a), None],
                    symmetric: true,
                    drop_payload_type: Some(101),
                    signalling: None,
                    crypto: Default::default(),
                },
                RemoteSpec {
                    addr: [Some(b), None],
                    symmetric: false,
                    drop_payload_type: None,
                    signalling: None,
                    crypto: Default::default(),
                },
            ],
        };
        let flows = StreamFlows::new(spec, crate::flow::FlowLimits { latch_window_ms: 2000, max_packet_rate: 0 }, 0);
        let l = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let locals = [[l(10000), l(10001)], [l(20000), l(20001)]];
        let e = stream_entries(7, &flows, &locals, 3);
        // A's RTP socket relays out of B's RTP socket to B's SDP address.
        assert_eq!(e[0].local, WireAddr::from_socket_addr(Some(l(10000))));
        assert_eq!(e[0].out_local, WireAddr::from_socket_addr(Some(l(20000))));
        assert_eq!(e[0].dest, WireAddr::from_socket_addr(Some(b)));
        assert_eq!(e[0].flags, flags::STRICT_SOURCE | flags::DROP_PAYLOAD_TYPE);
        // Nothing known for B's RTCP towards A: no destination, the fast path drops or defers.
        assert_eq!(e[3].dest.family, 0);
        assert_eq!(e[2].dest, WireAddr::from_socket_addr(Some(a)));
        assert!(e.iter().all(|e| e.flags & flags::USERSPACE_ONLY == 0));
        // SRTP terminated on one side: every entry of the stream stays in userspace.
        let mut secured = spec;
        secured.remotes[1].crypto.srtp = true;
        let flows = StreamFlows::new(secured, crate::flow::FlowLimits { latch_window_ms: 2000, max_packet_rate: 0 }, 0);
        assert!(stream_entries(7, &flows, &locals, 4).iter().all(|e| e.flags & flags::USERSPACE_ONLY != 0));
    }

    #[test]
    fn entry_layout_is_fixed() {
        assert_eq!(size_of::<WireAddr>(), 20);
        assert_eq!(size_of::<FlowEntryV1>(), 112);
    }

    #[test]
    fn ipv4_is_mapped() {
        let w = WireAddr::from_socket_addr(Some("192.0.2.1:4000".parse().expect("addr")));
        assert_eq!(w.family, 4);
        assert_eq!(&w.ip[10..], &[0xff, 0xff, 192, 0, 2, 1]);
        assert_eq!(w.port, 4000);
    }
}
