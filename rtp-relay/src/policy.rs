//! Where a stream's packets may be sent (issue 16): an SDP must not aim the relay at the SBC
//! itself (a forwarding loop that never ends) or turn it into a cannon towards hosts the SDP's
//! author could not reach (loopback, a core network). The relay refuses, for every stream:
//! its own sockets, unspecified, multicast and link-local addresses, and loopback unless the
//! side's media interface is itself on loopback; the configuration adds its rules through
//! [`DestinationPolicy`] (the SBC's signalling listeners, `media.deny`). A refused stream is
//! rejected (port 0 towards the other side) and counted.

use std::net::{IpAddr, SocketAddr};

use crate::ports::MediaInterface;

/// Rules of the configuration, beyond the relay's own (see the module doc).
pub trait DestinationPolicy: Send + Sync + std::fmt::Debug {
    /// Why media must not be sent to `dest`, or `None` when it may.
    fn refuse(&self, dest: SocketAddr) -> Option<&'static str>;
}

/// The relay's own rules for a side on `iface`, given every interface of the relay.
pub(crate) fn built_in<'a>(
    mut interfaces: impl Iterator<Item = &'a MediaInterface>,
    iface: &MediaInterface,
    dest: SocketAddr,
) -> Option<&'static str> {
    let ip = dest.ip().to_canonical();
    if interfaces.any(|i| i.owns(dest)) {
        return Some("own_socket");
    }
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_multicast() || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast()) {
        return Some("multicast");
    }
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    };
    if link_local {
        return Some("link_local");
    }
    if ip.is_loopback() && !iface.bind.to_canonical().is_loopback() {
        return Some("loopback");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(bind: &str) -> MediaInterface {
        MediaInterface {
            name: "m".into(),
            bind: bind.parse().expect("ip"),
            advertise: None,
            port_min: 10000,
            port_max: 10999,
        }
    }

    #[test]
    fn the_relay_never_aims_at_itself_or_at_what_no_peer_may_name() {
        let public = iface("192.0.2.10");
        let at = |s: &str| built_in([&public].into_iter(), &public, s.parse().expect("addr"));
        assert_eq!(at("192.0.2.10:10500"), Some("own_socket"));
        assert_eq!(at("192.0.2.10:11001"), None, "beyond the range (and its last RTCP port)");
        assert_eq!(at("0.0.0.0:4000"), Some("unspecified"));
        assert_eq!(at("[::]:4000"), Some("unspecified"));
        assert_eq!(at("224.0.0.1:4000"), Some("multicast"));
        assert_eq!(at("169.254.1.1:4000"), Some("link_local"));
        assert_eq!(at("[fe80::1]:4000"), Some("link_local"));
        assert_eq!(at("127.0.0.1:4000"), Some("loopback"));
        assert_eq!(at("[::ffff:127.0.0.1]:4000"), Some("loopback"));
        assert_eq!(at("198.51.100.7:4000"), None);
        // A relay on loopback (a lab, the tests) may send there.
        let lo = iface("127.0.0.1");
        assert_eq!(built_in([&lo].into_iter(), &lo, "127.0.0.1:4000".parse().expect("addr")), None);
    }
}
