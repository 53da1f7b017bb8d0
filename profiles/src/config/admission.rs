//! `limits.admission`: how many new requests the SBC takes, overall and per source.

use std::net::IpAddr;

use serde::Deserialize;

/// An address block, `10.0.0.0/8`, `2001:db8::/32` or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (ip, prefix) = match s.trim().split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = ip.parse().map_err(|_| format!("'{s}' is not an address or address/prefix"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| format!("'{s}': bad prefix"))?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let (a, b, bits) = match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32),
            (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
            // A block written as IPv4-mapped IPv6: its prefix counts over the last 32 bits.
            (IpAddr::V6(a), IpAddr::V4(b)) => match a.to_ipv4_mapped() {
                Some(a) => {
                    let v4 = Self { addr: IpAddr::V4(a), prefix: self.prefix.saturating_sub(96) };
                    return v4.contains(IpAddr::V4(b));
                }
                None => return false,
            },
            (IpAddr::V4(_), IpAddr::V6(b)) => match b.to_ipv4_mapped() {
                Some(b) => return self.contains(IpAddr::V4(b)),
                None => return false,
            },
        };
        let shift = bits - u32::from(self.prefix.min(bits as u8));
        shift >= bits || (a >> shift) == (b >> shift)
    }
}

/// New requests a second one untrusted address may send by default.
pub(crate) const DEFAULT_PER_SOURCE_CPS: u32 = 100;
/// The burst above that rate by default (a phone's start-up: REGISTER and its subscriptions).
pub(crate) const DEFAULT_PER_SOURCE_BURST: u32 = 200;
/// Concurrent calls (dialogs) of one untrusted address by default: a PBX with more is a trunk.
pub(crate) const DEFAULT_PER_SOURCE_CALLS: u32 = 100;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileAdmission {
    max_cps: u32,
    burst: u32,
    per_source_cps: u32,
    per_source_burst: u32,
    trusted: Vec<String>,
    trusted_cps: u32,
    drop_after: u32,
    max_sources: usize,
    per_source_calls: u32,
}

impl Default for FileAdmission {
    fn default() -> Self {
        Self {
            max_cps: 0,
            burst: 0,
            // On by default (issue 16): one address cannot take the SBC alone. Far above what a
            // phone or a PBX sends; carriers and the core belong in `trusted`.
            per_source_cps: DEFAULT_PER_SOURCE_CPS,
            per_source_burst: DEFAULT_PER_SOURCE_BURST,
            trusted: Vec::new(),
            trusted_cps: 0,
            drop_after: 200,
            max_sources: 100_000,
            per_source_calls: DEFAULT_PER_SOURCE_CALLS,
        }
    }
}

/// Admission limits for new requests (initial INVITEs and out-of-dialog requests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionSettings {
    /// New requests per second over all sources, and the burst above it (0 = no limit).
    pub max_cps: u32,
    pub burst: u32,
    /// The same per source address (trusted sources excepted).
    pub per_source_cps: u32,
    pub per_source_burst: u32,
    /// Sources (carriers' trunks, the core) with their own per-source rate, never ignored.
    pub trusted: Vec<Cidr>,
    /// Per trusted source (0 = no limit).
    pub trusted_cps: u32,
    /// A source refused this many times within 10 s is ignored (no replies) for 60 s
    /// (0 = never).
    pub drop_after: u32,
    /// Sources tracked at once; beyond it, new sources get the global limit only.
    pub max_sources: usize,
    /// Calls one untrusted source may have at once (0 = no limit; subscriptions do not
    /// count). With `media.max_streams` this also caps the media ports one source can hold.
    pub per_source_calls: u32,
}

impl Default for AdmissionSettings {
    /// What an absent `limits.admission` gives: the per-source defaults, nothing trusted.
    fn default() -> Self {
        Self::from_file(&FileAdmission::default()).unwrap_or_else(|_| Self::unlimited())
    }
}

impl AdmissionSettings {
    /// No limits at all (engine tests, and benchmarks of the call path itself).
    pub fn unlimited() -> Self {
        Self {
            max_cps: 0,
            burst: 0,
            per_source_cps: 0,
            per_source_burst: 0,
            trusted: Vec::new(),
            trusted_cps: 0,
            drop_after: 0,
            max_sources: 1,
            per_source_calls: 0,
        }
    }

    pub(super) fn from_file(f: &FileAdmission) -> Result<Self, (String, String)> {
        let trusted = f
            .trusted
            .iter()
            .map(|c| Cidr::parse(c))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|m| ("limits.admission.trusted".to_string(), m))?;
        if f.max_sources == 0 {
            return Err(("limits.admission.max_sources".into(), "must be at least 1".into()));
        }
        Ok(Self {
            max_cps: f.max_cps,
            burst: if f.burst == 0 { f.max_cps } else { f.burst },
            per_source_cps: f.per_source_cps,
            per_source_burst: if f.per_source_burst == 0 { f.per_source_cps } else { f.per_source_burst },
            trusted,
            trusted_cps: f.trusted_cps,
            drop_after: f.drop_after,
            max_sources: f.max_sources,
            per_source_calls: f.per_source_calls,
        })
    }

    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::Cidr;

    #[test]
    fn cidr_matching() {
        let c = Cidr::parse("10.1.0.0/16").expect("cidr");
        assert!(c.contains("10.1.2.3".parse().expect("ip")));
        assert!(!c.contains("10.2.0.1".parse().expect("ip")));
        assert!(c.contains("::ffff:10.1.9.9".parse().expect("ip")));
        let all = Cidr::parse("0.0.0.0/0").expect("cidr");
        assert!(all.contains("192.0.2.1".parse().expect("ip")));
        let one = Cidr::parse("192.0.2.7").expect("ip");
        assert!(one.contains("192.0.2.7".parse().expect("ip")) && !one.contains("192.0.2.8".parse().expect("ip")));
        let v6 = Cidr::parse("2001:db8::/32").expect("cidr");
        assert!(v6.contains("2001:db8:1::1".parse().expect("ip")) && !v6.contains("2001:db9::1".parse().expect("ip")));
        assert!(Cidr::parse("10.0.0.0/33").is_err() && Cidr::parse("ten/8").is_err());
        let mapped = Cidr::parse("::ffff:10.0.0.0/104").expect("cidr");
        assert!(mapped.contains("10.9.8.7".parse().expect("ip")) && !mapped.contains("11.0.0.1".parse().expect("ip")));
    }
}
