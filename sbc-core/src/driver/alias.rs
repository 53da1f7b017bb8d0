//! RFC 5923 connection reuse: the first request on a TLS connection a peer opened may carry
//! `alias` in its top Via; then new requests to the Via's sent-by go on that connection (a
//! phone or trunk that listens nowhere is reached). Only what the peer proved is taken (§6):
//! - its verified client certificate names the sent-by host (RFC 5922: a DNS SAN or the host
//!   of a SIP URI SAN for a name, an IP SAN for an address; the CN only without SANs);
//! - the alias is the connection's own source address with the Via's port, never an address
//!   the Via names elsewhere (a certificate must not let one peer take another's traffic);
//! - an address another live connection answers for, or a host with its own `tls.peers` rule
//!   (a pinned CA), is not taken over.
//!
//! Without a certificate, or over TCP, no alias is taken.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;

use super::Shared;
use crate::b2bua::ConnId;
use crate::b2bua::SocketId;
use sbc_engine::connections::PeerIdentity;

/// Whether `who` names `host` (a lowercased name, or an address) as RFC 5922 reads a
/// certificate.
fn names(who: &PeerIdentity, host: &str) -> bool {
    let ip = host.parse::<IpAddr>().ok();
    if who.alt_names.is_empty() {
        return ip.is_none() && who.common_name.eq_ignore_ascii_case(host);
    }
    who.alt_names.iter().any(|san| match ip {
        Some(ip) => san.parse::<IpAddr>().is_ok_and(|s| s.to_canonical() == ip.to_canonical()),
        None => {
            let uri_host = san
                .strip_prefix("sip:")
                .or_else(|| san.strip_prefix("sips:"))
                .map(|rest| rest.rsplit('@').next().unwrap_or(rest).split([';', ':']).next().unwrap_or(""));
            uri_host.unwrap_or(san).eq_ignore_ascii_case(host)
        }
    })
}

/// Takes an alias for connection `id` from `peer` on `local` if its request `msg` asks for
/// one and may have it.
pub(super) fn take(shared: &Shared, local: SocketId, id: ConnId, peer: SocketAddr, msg: &Bytes) {
    let Ok(m) = crate::sip::msg::Message::parse(msg.clone()) else { return };
    let Some(via) = m.top_via().filter(|v| m.is_request() && v.has_param(b"alias")) else { return };
    let host = String::from_utf8_lossy(via.host).trim_matches(['[', ']']).to_ascii_lowercase();
    let refuse = |why: &str| tracing::debug!(%peer, why, "RFC 5923 alias not taken");
    let Some(who) = shared.tcp.identities.get(&id).map(|w| w.clone()) else {
        return refuse("no verified client certificate");
    };
    if !names(&who, &host) {
        return refuse("the client certificate does not name the Via host");
    }
    let host = match host.parse::<IpAddr>() {
        Ok(ip) if ip.to_canonical() != peer.ip().to_canonical() => {
            return refuse("the Via names another address than the connection's");
        }
        Ok(ip) => ip.to_string(),
        Err(_) => host,
    };
    let alias = SocketAddr::new(peer.ip(), via.port.unwrap_or(5061));
    let pinned =
        shared.tls.get(usize::from(local)).and_then(Option::as_ref).is_some_and(|t| t.has_peer_rule(&host, alias));
    if pinned {
        return refuse("the host has its own tls.peers rule");
    }
    match shared.tcp.by_peer.entry((alias, true)) {
        dashmap::mapref::entry::Entry::Occupied(e) if *e.get() != id && shared.tcp.conns.contains_key(e.get()) => {
            return refuse("another connection answers for that address");
        }
        dashmap::mapref::entry::Entry::Occupied(mut e) => {
            e.insert(id);
        }
        dashmap::mapref::entry::Entry::Vacant(e) => {
            e.insert(id);
        }
    }
    if let Some(mut c) = shared.tcp.conns.get_mut(&id) {
        c.alias = Some(alias);
        c.server_name = Some(host);
    }
    tracing::debug!(%peer, %alias, "connection aliased (RFC 5923)");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(cn: &str, sans: &[&str]) -> PeerIdentity {
        PeerIdentity { common_name: cn.into(), alt_names: sans.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn a_certificate_names_hosts_as_rfc_5922_reads_it() {
        let c = who("198.51.100.7", &["pbx.example", "sip:trunk.example", "192.0.2.1"]);
        assert!(names(&c, "pbx.example") && names(&c, "trunk.example") && names(&c, "192.0.2.1"));
        assert!(!names(&c, "198.51.100.7"), "a CN is no address, and not read beside SANs");
        assert!(!names(&c, "other.example"));
        assert!(names(&who("pbx.example", &[]), "pbx.example"), "the CN without SANs");
        assert!(!names(&who("192.0.2.1", &[]), "192.0.2.1"), "an address only from an IP SAN");
        assert!(names(&who("", &["::ffff:192.0.2.1"]), "192.0.2.1"), "IPv4-mapped is the same address");
    }
}
