//! Where messages go: responses back along the Via (RFC 3261 §18.2.2, RFC 3581), new requests
//! to their Request-URI or the configured next hop, in-dialog requests to the route set or the
//! remote target.

use std::net::SocketAddr;

use profiles::LocalReply;

use super::build::ip_of_host;
use super::call::Side;
use super::types::{Destination, EngineConfig, Peer, SocketId, Source, Transport};
use super::CallHandle;
use crate::sip::msg::{Message, NameAddr, Scheme, Uri};

/// Where the responses to `req` go.
pub(super) fn response_dest(req: &Message, src: &Source) -> Destination {
    let peer = if src.transport.is_reliable() {
        // The connection the request came on is tried first (conn below); if it has closed, a
        // new one goes to the received address at the Via port (RFC 3261 §18.2.2).
        let port = req.top_via().and_then(|v| v.port);
        port.map_or(src.remote, |p| SocketAddr::new(src.remote.ip(), p))
    } else {
        match req.top_via() {
            // rport: back to the source port (RFC 3581); otherwise the received address at the
            // sent-by port.
            Some(v) if !v.has_param(b"rport") => SocketAddr::new(src.remote.ip(), v.port.unwrap_or(5060)),
            _ => src.remote,
        }
    };
    Destination { transport: src.transport, local: src.local, peer: Peer::Addr(peer), conn: src.conn }
}

/// Transport and peer for a URI (`sip:host[:port][;transport=x]`, `sips:` over TLS). Names
/// are resolved by the driver (A/AAAA); SRV/NAPTR selection (RFC 3263) is not done.
pub(super) fn target_of_uri(uri: &[u8], default_transport: Transport) -> Result<(Transport, Peer), LocalReply> {
    let u = Uri::parse(uri).ok_or(LocalReply::new(400, "Malformed Request-URI"))?;
    let named = u.param(b"transport");
    let transport = match u.scheme {
        // A sips: URI is reached over TLS whatever the default (RFC 3261 §26.2.2); over UDP
        // it cannot be.
        Scheme::Sips if named.is_some_and(|t| t.eq_ignore_ascii_case(b"udp")) => {
            return Err(LocalReply::new(400, "SIPS Over UDP"));
        }
        Scheme::Sips => Transport::Tls,
        Scheme::Sip => match named {
            Some(t) => Transport::from_name(t).ok_or(LocalReply::new(503, "Unsupported Transport"))?,
            None => default_transport,
        },
        Scheme::Tel => return Err(LocalReply::new(404, "No Route For tel URI")),
        Scheme::Other => return Err(LocalReply::new(416, "Unsupported URI Scheme")),
    };
    let host = u.param(b"maddr").unwrap_or(u.host);
    let port = u.port.unwrap_or(default_port(transport));
    let peer = match ip_of_host(host) {
        Some(ip) => Peer::Addr(SocketAddr::new(ip, port)),
        None => Peer::Host(String::from_utf8_lossy(host).into_owned().into_boxed_str(), port),
    };
    Ok((transport, peer))
}

/// Whether a URI is `sips:`.
pub(super) fn is_sips(uri: &[u8]) -> bool {
    Uri::parse(uri).is_some_and(|u| u.scheme == Scheme::Sips)
}

/// A new request with a `sips:` Request-URI came over a hop that is not TLS: RFC 5630 §4 and
/// §5.3 leave no last-hop exception, so it is refused rather than served unprotected.
pub(super) fn sips_arrival(msg: &Message, src: &Source) -> Result<(), LocalReply> {
    if src.transport == Transport::Tls || !is_sips(msg.request_uri()) {
        return Ok(());
    }
    Err(LocalReply::new(480, "SIPS Requires TLS").with("Warning", "381 sbc \"SIPS Required\""))
}

/// Where a request may go on (RFC 3261 §26.2.2, RFC 5630 §5.3): one that came to a `sips:`
/// Request-URI, or that a profile sends to one, leaves over TLS, and one that came to `sips:`
/// keeps a `sips:` Request-URI. With `downgrade` (`sips_downgrade`) it may leave over another
/// transport, its Request-URI turned `sip:` (returned). A `sip:` call goes as routed.
pub(super) fn sips_onward(
    inbound: &[u8],
    outbound: &[u8],
    transport: Transport,
    downgrade: bool,
) -> Result<Option<Box<[u8]>>, LocalReply> {
    let (secure_in, secure_out) = (is_sips(inbound), is_sips(outbound));
    let fine = if transport == Transport::Tls { secure_out || !secure_in } else { !secure_in && !secure_out };
    if fine {
        return Ok(None);
    }
    if !downgrade {
        return Err(LocalReply::new(480, "Temporarily Unavailable").with("Warning", "380 sbc \"SIPS Not Allowed\""));
    }
    let plain = match outbound.get(..5) {
        Some(s) if s.eq_ignore_ascii_case(b"sips:") && transport != Transport::Tls => {
            let mut u = b"sip:".to_vec();
            u.extend_from_slice(&outbound[5..]);
            Some(u.into_boxed_slice())
        }
        _ => None,
    };
    Ok(plain)
}

/// The port of a host given without one: 5061 for TLS, 5060 otherwise (RFC 3261 §19.1.2).
pub(super) fn default_port(transport: Transport) -> u16 {
    if transport == Transport::Tls {
        5061
    } else {
        5060
    }
}

/// Whether a URI names this SBC (no user part, one of our addresses). Such requests are ours to
/// answer (OPTIONS pings) rather than to relay.
pub(super) fn is_local_uri(cfg: &EngineConfig, uri: &[u8]) -> bool {
    let Some(u) = Uri::parse(uri) else {
        return false;
    };
    if u.scheme != Scheme::Sip && u.scheme != Scheme::Sips || u.user.is_some() {
        return false;
    }
    // A sips: URI without a port names 5061 (RFC 3261 §19.1.2).
    let port = u.port.or((u.scheme == Scheme::Sips).then_some(5061));
    is_own_address(cfg, u.host, port)
}

pub(super) fn is_own_address(cfg: &EngineConfig, host: &[u8], port: Option<u16>) -> bool {
    let port = port.unwrap_or(5060);
    cfg.interfaces.iter().flat_map(|i| i.sockets.iter()).any(|s| {
        s.addr.port() == port
            && (ip_of_host(host)
                .is_some_and(|ip| ip == s.addr.ip() || (s.addr.ip().is_unspecified() && ip.is_loopback()))
                || s.advertised.as_deref().is_some_and(|a| a.as_bytes().eq_ignore_ascii_case(host)))
    })
}

/// Whether a peer is one of our own listening sockets (a request there would loop).
pub(super) fn is_own_peer(cfg: &EngineConfig, peer: &Peer) -> bool {
    match peer {
        Peer::Addr(a) | Peer::Named { addr: a, .. } => {
            // Also a wildcard socket's loopback and an advertised address on its port.
            let host = match a.ip() {
                std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                v4 => v4.to_string(),
            };
            is_own_address(cfg, host.as_bytes(), Some(a.port()))
        }
        Peer::Host(..) => false,
    }
}

/// The URI a request on a dialog is sent to: the first route (loose routing) or the target.
pub(super) fn next_hop_uri<'a>(route_set: &'a [Box<[u8]>], remote_target: &'a [u8]) -> &'a [u8] {
    route_set.first().and_then(|r| NameAddr::parse(r)).map_or(remote_target, |n| n.uri)
}

impl super::Engine {
    /// Where requests on a leg go now: next hop (B leg, if configured), route set, or target.
    pub(super) fn leg_dest(&self, h: CallHandle, side: Side) -> Option<Destination> {
        let leg = self.calls.get(&h)?.leg(side);
        {
            if let Some((t, p)) = &leg.fixed_dest {
                let local = self.socket_for(leg.dest.local, *t, p)?;
                return Some(Destination { transport: *t, local, peer: p.clone(), conn: None });
            }
        }
        if leg.target_is_source {
            return Some(leg.dest.clone());
        }
        let uri = match &leg.forced_route {
            Some(r) => NameAddr::parse(r).map_or(&leg.remote_target[..], |n| n.uri),
            None => next_hop_uri(&leg.route_set, &leg.remote_target),
        };
        let (transport, peer) = target_of_uri(uri, leg.transport).unwrap_or((leg.transport, leg.dest.peer.clone()));
        let local = self.socket_for(leg.dest.local, transport, &peer)?;
        let conn = if transport == leg.dest.transport && transport.is_reliable() { leg.dest.conn } else { None };
        Some(Destination { transport, local, peer, conn })
    }

    /// A socket of the same interface as `local` for `transport` (and the peer's family).
    pub(super) fn socket_for(&self, local: SocketId, transport: Transport, peer: &Peer) -> Option<SocketId> {
        if self.cfg.socket(local).is_some_and(|s| s.transport == transport) {
            return Some(local);
        }
        let iface = self.cfg.interface_of(local)?;
        Some(self.cfg.interfaces.get(iface)?.socket(transport, peer.is_ipv6())?.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sips_goes_over_tls_and_leaves_it_only_when_allowed() {
        let (t, peer) = target_of_uri(b"sips:bob@trunk.example", Transport::Udp).expect("routable");
        assert_eq!((t, peer), (Transport::Tls, Peer::Host("trunk.example".into(), 5061)));
        let (t, _) = target_of_uri(b"sips:bob@192.0.2.1;transport=tcp", Transport::Udp).expect("routable");
        assert_eq!(t, Transport::Tls, "sips over TCP is TLS");
        assert_eq!(
            target_of_uri(b"sips:bob@192.0.2.1;transport=udp", Transport::Udp).map(|_| ()).map_err(|r| r.code),
            Err(400)
        );
        let (sips, sip) = (&b"sips:bob@h"[..], &b"sip:bob@h"[..]);
        assert_eq!(sips_onward(sips, sips, Transport::Tls, false).map_err(|r| r.code), Ok(None));
        assert_eq!(sips_onward(sips, sips, Transport::Udp, false).map_err(|r| r.code), Err(480));
        assert_eq!(sips_onward(sips, sip, Transport::Tls, false).map_err(|r| r.code), Err(480), "no silent sip:");
        assert_eq!(sips_onward(sips, sips, Transport::Udp, true).map_err(|r| r.code), Ok(Some(sip.into())));
        assert_eq!(sips_onward(sip, sip, Transport::Udp, false).map_err(|r| r.code), Ok(None));
        assert_eq!(
            sips_onward(sip, sips, Transport::Udp, false).map_err(|r| r.code),
            Err(480),
            "a rewrite to sips: over UDP"
        );
        assert_eq!(sips_onward(sip, sips, Transport::Tls, false).map_err(|r| r.code), Ok(None));
    }

    #[test]
    fn a_host_without_a_port_takes_its_transports_default() {
        let (t, peer) = target_of_uri(b"sip:trunk.example;transport=tls", Transport::Udp).expect("routable");
        assert_eq!((t, peer), (Transport::Tls, Peer::Host("trunk.example".into(), 5061)));
        let (t, peer) = target_of_uri(b"sip:192.0.2.1;transport=tcp", Transport::Udp).expect("routable");
        assert_eq!((t, peer), (Transport::Tcp, Peer::Addr("192.0.2.1:5060".parse().expect("addr"))));
    }
}
