//! Reading the per-call pcap files sbcd writes (`msg_logger_path`): raw IPv4 packets with a
//! UDP header (`sbc-core/src/driver/capture/pcap.rs`).

use std::net::SocketAddr;
use std::path::Path;

/// One record: a UDP datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcapRecord {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub payload: Vec<u8>,
}

impl PcapRecord {
    /// The first line of a SIP message (text up to the first line break).
    pub fn first_line(&self) -> String {
        String::from_utf8_lossy(&self.payload).lines().next().unwrap_or_default().to_string()
    }

    /// An RTP or RTCP packet rather than SIP: version 2 in the first byte.
    pub fn is_rtp(&self) -> bool {
        self.payload.first().is_some_and(|b| b >> 6 == 2)
    }
}

/// The whole records of a pcap file, checking its header: a file read while sbcd writes it
/// gives the records written so far (tests poll until the ones they expect are there).
pub fn pcap_records(path: &Path) -> Vec<PcapRecord> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if data.len() < 24 {
        return Vec::new();
    }
    assert_eq!(&data[..4], &0xa1b2_c3d4u32.to_le_bytes(), "a pcap file");
    assert_eq!(u32::from_le_bytes(data[20..24].try_into().expect("4")), 101, "raw IP packets");
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= data.len() {
        let len = u32::from_le_bytes(data[at + 8..at + 12].try_into().expect("4")) as usize;
        let Some(ip) = data.get(at + 16..at + 16 + len) else { break };
        assert_eq!(ip[0] >> 4, 4, "IPv4 on loopback");
        let addr = |o: usize, p: usize| {
            SocketAddr::from(([ip[o], ip[o + 1], ip[o + 2], ip[o + 3]], u16::from_be_bytes([ip[p], ip[p + 1]])))
        };
        out.push(PcapRecord { src: addr(12, 20), dst: addr(16, 22), payload: ip[28..].to_vec() });
        at += 16 + len;
    }
    out
}
