//! One registered contact and its alias.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use sha2::{Digest, Sha256};

/// Who answers the registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Relayed to an upstream registrar that holds the alias (`enable_reg_caching`).
    Upstream,
    /// Kept by this SBC only (`cc_registrar`).
    Local,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Upstream => "upstream",
            Self::Local => "local",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "upstream" => Some(Self::Upstream),
            "local" => Some(Self::Local),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The user part registered upstream in place of the UA's contact.
    pub alias: String,
    /// Canonical AoR (see [`crate::canonical_aor`]).
    pub aor: String,
    /// The contact URI as the UA sent it.
    pub contact: String,
    /// Where the REGISTER came from, on which transport (`udp`/`tcp`) and interface.
    pub source: SocketAddr,
    pub transport: String,
    pub interface: String,
    pub user_agent: String,
    /// The Call-ID the registration has upstream (kept so refreshes after a restart replace
    /// the registrar's binding rather than add one), and the phone's own, which it goes with:
    /// a phone that restarts with a new Call-ID gets a new one upstream too (its CSeq starts
    /// over). Empty for local registrations.
    pub call_id: String,
    pub ua_call_id: String,
    /// When the UA's registration runs out (what the UA was told).
    pub ua_expires: Instant,
    /// When the registrar's binding runs out (the cache entry goes then).
    pub registrar_expires: Instant,
    pub origin: Origin,
    /// The cluster node that holds the phone's NAT binding or connection, when another node
    /// does (docs/manual/cluster.md, Registrations): calls to the phone go through it, the
    /// only address the phone's NAT lets in. `None`: this node, or no cluster.
    pub relay: Option<Relay>,
}

/// Another node of the cluster, where calls to one of its phones go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relay {
    pub node: String,
    /// The node's SIP address on the binding's interface, and its transport.
    pub addr: SocketAddr,
    pub transport: String,
}

impl Binding {
    /// `ip[:port]` of the source, port left out when it is 5060 (`$us`).
    pub fn source_text(&self) -> String {
        let ip = match self.source.ip() {
            IpAddr::V6(ip) => format!("[{ip}]"),
            IpAddr::V4(ip) => ip.to_string(),
        };
        if self.source.port() == 5060 {
            ip
        } else {
            format!("{ip}:{}", self.source.port())
        }
    }
}

/// The alias of (AoR, contact) registered from `source_ip`: 16 hex digits, the same for every
/// re-registration from the same place, so the registrar's binding is replaced, not added.
pub fn alias_of(aor: &str, contact: &str, source_ip: IpAddr) -> String {
    let mut h = Sha256::new();
    h.update(aor.as_bytes());
    h.update([0]);
    h.update(contact.as_bytes());
    h.update([0]);
    h.update(source_ip.to_string().as_bytes());
    let d = h.finalize();
    d[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// A binding of the tests: registered upstream over UDP from `src`, both expiries `secs`
/// after `now`.
#[cfg(test)]
pub(crate) fn test_binding(alias: &str, aor: &str, contact: &str, src: &str, now: Instant, secs: u64) -> Binding {
    let expires = now + std::time::Duration::from_secs(secs);
    Binding {
        alias: alias.into(),
        aor: aor.into(),
        contact: contact.into(),
        source: src.parse().expect("addr"),
        transport: "udp".into(),
        interface: "default".into(),
        user_agent: "ua".into(),
        call_id: String::new(),
        ua_call_id: String::new(),
        ua_expires: expires,
        registrar_expires: expires,
        origin: Origin::Upstream,
        relay: None,
    }
}
