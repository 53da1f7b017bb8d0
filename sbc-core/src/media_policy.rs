//! The configuration's rules for where relayed media may go, beyond the relay's own
//! (`rtp-relay/src/policy.rs`: its sockets, unspecified, multicast, link-local, loopback): an
//! SDP may not aim a stream at one of the SBC's signalling listeners, nor into a `media.deny`
//! block (the core network, management ranges). The relay asks through
//! [`rtp_relay::DestinationPolicy`] for every stream an SDP names.

use std::net::SocketAddr;

use profiles::config::Cidr;

#[derive(Debug, Clone, Default)]
pub struct MediaPolicy {
    /// The SBC's SIP listeners (a wildcard bind matches the port on any address).
    listeners: Vec<SocketAddr>,
    deny: Vec<Cidr>,
}

impl MediaPolicy {
    pub fn new(listeners: Vec<SocketAddr>, deny: Vec<Cidr>) -> Self {
        Self { listeners, deny }
    }
}

impl rtp_relay::DestinationPolicy for MediaPolicy {
    fn refuse(&self, dest: SocketAddr) -> Option<&'static str> {
        let ip = dest.ip().to_canonical();
        let listener = self
            .listeners
            .iter()
            .any(|l| l.port() == dest.port() && (l.ip().is_unspecified() || l.ip().to_canonical() == ip));
        if listener {
            return Some("signalling_listener");
        }
        self.deny.iter().any(|c| c.contains(ip)).then_some("media_deny")
    }
}

#[cfg(test)]
mod tests {
    use rtp_relay::DestinationPolicy;

    use super::*;

    #[test]
    fn listeners_and_denied_blocks_are_refused() {
        let p = MediaPolicy::new(
            vec!["192.0.2.10:5060".parse().expect("addr"), "0.0.0.0:5080".parse().expect("addr")],
            vec![Cidr::parse("10.0.0.0/8").expect("cidr")],
        );
        let at = |s: &str| p.refuse(s.parse().expect("addr"));
        assert_eq!(at("192.0.2.10:5060"), Some("signalling_listener"));
        assert_eq!(at("198.51.100.1:5080"), Some("signalling_listener"), "a wildcard listener's port anywhere");
        assert_eq!(at("192.0.2.10:5062"), None);
        assert_eq!(at("10.1.2.3:4000"), Some("media_deny"));
        assert_eq!(at("[::ffff:10.1.2.3]:4000"), Some("media_deny"));
        assert_eq!(at("198.51.100.1:4000"), None);
    }
}
