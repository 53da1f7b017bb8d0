//! `sems.conf`'s interfaces as SEMS reads them: without `interfaces`, the bare keys make one
//! named `default`; with `interfaces=a,b`, each name's keys carry `_a`, `_b` and the bare ones
//! are ignored. `sip_ip`/`media_ip` may name a device (its address is taken from the host).

use std::net::IpAddr;

use super::yaml::Origin;
use super::Notes;
use crate::conf::{ConfEntry, ConfFile};
use crate::error::ConfigError;

/// One SEMS interface, as sbcd's `interfaces[]` entry needs it.
#[derive(Debug)]
pub(super) struct SemsInterface {
    pub(super) name: String,
    pub(super) sip: IpAddr,
    pub(super) port: u16,
    /// `media_ip` (else the SIP address, as SEMS's default RTP interface).
    pub(super) media: IpAddr,
    /// `rtp_low_port`–`rtp_high_port` (SEMS's defaults 1024–65535), and the line that set them.
    pub(super) ports: (u16, u16),
    pub(super) ports_origin: Origin,
    pub(super) public_ip: Option<(String, Origin)>,
    /// `tcp_idle_timeout` in ms.
    pub(super) tcp_idle_ms: Option<u64>,
    pub(super) origin: Origin,
}

fn key_of(base: &str, name: Option<&str>) -> String {
    name.map_or_else(|| base.to_string(), |n| format!("{base}_{n}"))
}

pub(super) fn number<T: std::str::FromStr>(e: &ConfEntry) -> Result<T, ConfigError> {
    e.value
        .trim()
        .parse()
        .map_err(|_| ConfigError::at(&e.file, e.line, &e.key, format!("'{}' is not a number", e.value)))
}

/// An address, or a device's (its first IPv4 address, else its first IPv6 one that is not
/// link-local).
fn address_of(e: &ConfEntry, notes: &mut Notes) -> Result<IpAddr, ConfigError> {
    let v = e.value.trim().trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = v.parse() {
        return Ok(ip);
    }
    let found = host_addresses().into_iter().filter(|(dev, _)| dev == v).map(|(_, ip)| ip).min_by_key(rank);
    match found {
        Some(ip) => {
            notes.push(Origin::from(e), format!("device {v} is {ip} on this host; written as that address"));
            Ok(ip)
        }
        None => Err(ConfigError::at(&e.file, e.line, &e.key, format!("'{v}' is neither an address nor a device here"))),
    }
}

/// IPv4 first, then global IPv6.
fn rank(ip: &IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 0,
        IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => 2,
        IpAddr::V6(_) => 1,
    }
}

/// Every (device, address) of this host.
fn host_addresses() -> Vec<(String, IpAddr)> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else { return Vec::new() };
    addrs
        .filter_map(|a| {
            let s = a.address?;
            let ip = s
                .as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))?;
            Some((a.interface_name, ip))
        })
        .collect()
}

/// SEMS's address when none is configured: the host's first address that is not loopback.
fn default_address() -> Option<IpAddr> {
    host_addresses().into_iter().map(|(_, ip)| ip).filter(|ip| !ip.is_loopback()).min_by_key(rank)
}

/// Reads the interfaces; notes what is not applied.
pub(super) fn read(conf: &ConfFile, notes: &mut Notes) -> Result<Vec<SemsInterface>, ConfigError> {
    let names: Vec<Option<String>> = match conf.get("interfaces") {
        Some(e) => {
            let names: Vec<_> =
                e.value.split(',').map(str::trim).filter(|n| !n.is_empty()).map(|n| Some(n.to_string())).collect();
            if names.is_empty() {
                return Err(ConfigError::at(&e.file, e.line, &e.key, "names no interface"));
            }
            for key in super::keys::INTERFACE_KEYS {
                if let Some(bare) = conf.get(key) {
                    notes.push(Origin::from(bare), "ignored, as SEMS ignores the bare keys when `interfaces` is set");
                }
            }
            names
        }
        None => vec![None],
    };
    let mut out = Vec::new();
    for name in names {
        let get = |base: &str| conf.get(&key_of(base, name.as_deref()));
        let shown = name.clone().unwrap_or_else(|| "default".into());
        let sip_entry = get("sip_ip").or_else(|| get("media_ip"));
        let (sip, origin) = match (get("sip_ip"), sip_entry) {
            (Some(e), _) => (address_of(e, notes)?, Origin::from(e)),
            (None, Some(m)) if name.is_some() => {
                return Err(ConfigError::at(
                    &m.file,
                    m.line,
                    &m.key,
                    format!("interface {shown} has media_ip but no sip_ip: sbcd's interfaces carry both"),
                ))
            }
            (None, Some(m)) => (address_of(m, notes)?, Origin::from(m)),
            (None, None) => {
                let ip = default_address().ok_or_else(|| {
                    ConfigError::new(&conf.path, None, "sip_ip", "is not set and this host has no address but loopback")
                })?;
                let origin = Origin { file: conf.path.clone(), line: 0, key: "sip_ip".into() };
                notes.push(
                    origin.clone(),
                    format!("not set: SEMS takes this host's first address, {ip}; written as that address"),
                );
                (ip, origin)
            }
        };
        let port = get("sip_port").map(number::<u16>).transpose()?.filter(|p| *p != 0).unwrap_or(5060);
        let media_entry = get("media_ip").filter(|e| !e.value.trim().is_empty());
        let media = media_entry.map(|e| address_of(e, notes)).transpose()?.unwrap_or(sip);
        let mut ports = (1024, 65535);
        let mut ports_origin = origin.clone();
        if get("media_ip").is_some() {
            if let Some(e) = get("rtp_low_port") {
                ports.0 = number(e)?;
                ports_origin = e.into();
            }
            if let Some(e) = get("rtp_high_port") {
                ports.1 = number(e)?;
                ports_origin = e.into();
            }
        } else {
            for e in [get("rtp_low_port"), get("rtp_high_port")].into_iter().flatten() {
                notes.push(
                    Origin::from(e),
                    "has no effect without media_ip (SEMS ignores it too); SEMS's 1024-65535 written",
                );
            }
        }
        let public_ip = get("public_ip")
            .filter(|e| !e.value.trim().is_empty())
            .map(|e| (e.value.trim().to_string(), Origin::from(e)));
        if let Some((ip, o)) = public_ip.as_ref().filter(|(ip, _)| ip.parse::<IpAddr>().is_err()) {
            notes.push(
                o.clone(),
                format!("'{ip}' is not an address: Via and Contact carry it, SDP keeps the media address"),
            );
        }
        if let Some(e) = get("sig_sock_opts") {
            notes.push(Origin::from(e), "not applied: responses go to the Via's address and rport (RFC 3261 §18.2.2, RFC 3581); Contact names its transport when not UDP");
        }
        if let Some(e) = get("tcp_connect_timeout") {
            notes.push(Origin::from(e), "not applied: sbcd's TCP connects give up after the transaction's timer");
        }
        let tcp_idle_ms = get("tcp_idle_timeout").map(number::<u64>).transpose()?;
        out.push(SemsInterface { name: shown, sip, port, media, ports, ports_origin, public_ip, tcp_idle_ms, origin });
    }
    Ok(out)
}
