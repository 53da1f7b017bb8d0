//! SIP transports the SBC speaks.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
    /// TCP with TLS (RFC 3261 §26.2).
    Tls,
}

impl Transport {
    /// A stream transport: no retransmissions of our own (RFC 3261 §17.1.1.2), a connection
    /// to reuse.
    pub fn is_reliable(self) -> bool {
        self != Self::Udp
    }
    /// As written in a Via sent-protocol.
    pub fn via_name(self) -> &'static str {
        match self {
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
            Self::Tls => "TLS",
        }
    }
    pub fn from_name(name: &[u8]) -> Option<Self> {
        if name.eq_ignore_ascii_case(b"udp") {
            Some(Self::Udp)
        } else if name.eq_ignore_ascii_case(b"tcp") {
            Some(Self::Tcp)
        } else if name.eq_ignore_ascii_case(b"tls") {
            Some(Self::Tls)
        } else {
            None
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
        })
    }
}
