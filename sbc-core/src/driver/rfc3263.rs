//! Locating a SIP server by name (RFC 3263 §4): NAPTR picks the transports (when neither a
//! port nor a transport is given), SRV the hosts and ports in RFC 2782 order, A/AAAA the
//! addresses; without SRV records the name's own addresses on the default port. The engine
//! asks for every named next hop of a request at once (`Output::Resolve`) and takes the
//! targets in the order given here (`b2bua/resolve.rs`).
//!
//! Bounded: at most [`MAX_NAPTR`] NAPTR and [`MAX_SRV`] SRV records are used, [`MAX_ADDRS`]
//! addresses per host and [`MAX_TARGETS`] targets per name. Only terminal (`s`) NAPTR
//! records without a regexp are followed, so a NAPTR chain cannot loop; an SRV record naming
//! the service itself, or `.`, is left out. Records left out are counted (`unusable`).

use std::net::SocketAddr;

use hickory_resolver::proto::rr::{RData, RecordType};

use super::dns::{Dns, DnsError};
use crate::b2bua::{Target, TargetQuery, Transport};

const MAX_NAPTR: usize = 8;
const MAX_SRV: usize = 16;
const MAX_ADDRS: usize = 8;
const MAX_TARGETS: usize = 16;
/// Hosts whose addresses one name's resolution looks up (SRV targets).
const MAX_HOSTS: usize = 8;
/// One name's whole resolution, however many lookups it takes (the engine waits 8 s): a
/// slow domain holds the resolver's permits no longer.
const DEADLINE: std::time::Duration = std::time::Duration::from_secs(7);

/// The targets of `q`, best first (none: it did not resolve in time).
pub(crate) async fn targets(dns: &Dns, q: &TargetQuery) -> Vec<Target> {
    match tokio::time::timeout(DEADLINE, locate(dns, q)).await {
        Ok(t) => t,
        Err(_) => {
            dns.counters.error(DnsError::Timeout);
            tracing::info!(host = %q.host, "next hop name not located in time");
            Vec::new()
        }
    }
}

async fn locate(dns: &Dns, q: &TargetQuery) -> Vec<Target> {
    let host = q.host.trim_end_matches('.');
    let mut out = Vec::new();
    if let Some(port) = q.port {
        // A port given: the name's addresses only (§4.2).
        let transport = q.transport.unwrap_or(if q.secure { Transport::Tls } else { Transport::Udp });
        add_addresses(dns, host, port, transport, &mut out).await;
        return out;
    }
    let services = match q.transport {
        Some(t) => vec![(t, srv_name(t, q.secure, host))],
        None => {
            let from_naptr = naptr_services(dns, host, q.secure).await;
            if from_naptr.is_empty() {
                // No NAPTR: each transport's SRV name, in our order of preference (§4.1).
                let all = [Transport::Udp, Transport::Tcp, Transport::Tls];
                all.into_iter()
                    .filter(|t| !q.secure || *t == Transport::Tls)
                    .map(|t| (t, srv_name(t, q.secure, host)))
                    .collect()
            } else {
                from_naptr
            }
        }
    };
    // No SRV records at all (not a lookup that failed) is what falls back to the name's own
    // addresses.
    let (mut any_srv, mut failed, mut hosts) = (false, false, 0);
    for (transport, name) in &services {
        let records = match dns.records(name, RecordType::SRV).await {
            Ok(r) => r,
            Err(_) => {
                failed = true;
                continue;
            }
        };
        any_srv |= !records.is_empty();
        for (target, port) in srv_order(dns, name, records) {
            if out.len() >= MAX_TARGETS || hosts >= MAX_HOSTS {
                return out;
            }
            hosts += 1;
            add_addresses(dns, &target, port, *transport, &mut out).await;
        }
    }
    if !any_srv && !failed {
        // No SRV records at all: the name's addresses on the transport's default port (§4.2).
        let transport = q.transport.or(services.first().map(|(t, _)| *t)).unwrap_or(Transport::Udp);
        let transport = if q.secure { Transport::Tls } else { transport };
        add_addresses(dns, host, default_port(transport), transport, &mut out).await;
    }
    out
}

async fn add_addresses(dns: &Dns, host: &str, port: u16, transport: Transport, out: &mut Vec<Target>) {
    for ip in dns.addresses(host, MAX_ADDRS).await.unwrap_or_default() {
        let t = Target { transport, addr: SocketAddr::new(ip, port) };
        if out.len() < MAX_TARGETS && !out.contains(&t) {
            out.push(t);
        }
    }
}

/// `_sip._udp.host`, `_sip._tcp.host`, `_sips._tcp.host` (TLS, RFC 3263 §4.1).
fn srv_name(t: Transport, secure: bool, host: &str) -> String {
    match (t, secure) {
        (Transport::Tls, _) | (_, true) => format!("_sips._tcp.{host}"),
        (Transport::Tcp, false) => format!("_sip._tcp.{host}"),
        (Transport::Udp, false) => format!("_sip._udp.{host}"),
    }
}

fn default_port(t: Transport) -> u16 {
    if t == Transport::Tls {
        5061
    } else {
        5060
    }
}

/// The SRV names NAPTR gives `host`, with their transports, in NAPTR order (§4.1).
async fn naptr_services(dns: &Dns, host: &str, secure: bool) -> Vec<(Transport, String)> {
    let mut records: Vec<_> = dns
        .records(host, RecordType::NAPTR)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|r| match r {
            RData::NAPTR(n) => Some(n),
            _ => None,
        })
        .collect();
    records.sort_by_key(|n| (n.order, n.preference));
    let mut out = Vec::new();
    for n in records {
        let service = String::from_utf8_lossy(&n.services).to_ascii_uppercase();
        let transport = match service.as_str() {
            "SIP+D2U" if !secure => Some(Transport::Udp),
            "SIP+D2T" if !secure => Some(Transport::Tcp),
            "SIPS+D2T" => Some(Transport::Tls),
            _ => None,
        };
        let terminal = n.flags.eq_ignore_ascii_case(b"s") && n.regexp.is_empty();
        let replacement = n.replacement.to_utf8();
        let replacement = replacement.trim_end_matches('.');
        let usable = terminal && !n.replacement.is_root() && !replacement.eq_ignore_ascii_case(host);
        match transport {
            // Services of other applications (E2U …) are not ours to count.
            None if !service.starts_with("SIP") => {}
            Some(t) if usable && out.len() < MAX_NAPTR => {
                if !out.iter().any(|(_, name)| name == replacement) {
                    out.push((t, replacement.to_string()));
                }
            }
            _ => dns.counters.error(DnsError::Unusable),
        }
    }
    out
}

/// The targets of SRV records in RFC 2782 order (the best [`MAX_SRV`]); `.` (no service)
/// and records naming their own service are left out and counted.
fn srv_order(dns: &Dns, service: &str, records: Vec<RData>) -> Vec<(String, u16)> {
    let mut items = Vec::new();
    for r in records {
        let RData::SRV(srv) = r else { continue };
        let target = srv.target.to_utf8();
        let target = target.trim_end_matches('.');
        if srv.target.is_root() || target.eq_ignore_ascii_case(service) {
            dns.counters.error(DnsError::Unusable);
            continue;
        }
        items.push(((target.to_string(), srv.port), srv.priority, srv.weight));
    }
    // The best priorities first, whatever order the answer had; a flood of records is cut
    // before the weighted draw (which is quadratic in a priority's records).
    items.sort_by_key(|(_, p, _)| *p);
    if items.len() > 4 * MAX_SRV {
        dns.counters.error(DnsError::Unusable);
        items.truncate(4 * MAX_SRV);
    }
    let mut seed = getrandom::u64().unwrap_or(0x853c_49e6_748f_ea9b);
    profiles::weighted::weighted_order(items, move || {
        // splitmix64 from one seed from the OS: the spread of SRV weights, not a secret.
        seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
    .into_iter()
    .take(MAX_SRV)
    .collect()
}
