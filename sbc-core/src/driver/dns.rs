//! Host names, resolved by hickory's async resolver: NAPTR and SRV records for RFC 3263
//! (`rfc3263.rs`) and addresses. Answers are kept for their TTL (a "no such record" answer
//! for its negative TTL); a lookup is a future rather than a thread of tokio's blocking pool
//! (a slow attacker domain used to tie those up, one per transmission); at most
//! [`MAX_IN_FLIGHT`] lookups wait for a name server at once, and beyond that names already
//! answered still resolve while others fail at once (issue 16). Name servers come from
//! `dns.servers` or the system's configuration; the hosts file is read too.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;
use tokio::sync::Semaphore;

/// Lookups waiting for an answer at once.
pub(crate) const MAX_IN_FLIGHT: usize = 64;
/// Answers kept in [`Dns::known`].
const KNOWN_MAX: usize = 4096;
/// The longest an answer is kept, whatever its TTL says: a hostile domain's names must not
/// hold the table (RFC 2308 §5 suggests at most hours for negative answers).
const POSITIVE_MAX: std::time::Duration = std::time::Duration::from_secs(3600);
const NEGATIVE_MAX: std::time::Duration = std::time::Duration::from_secs(300);

/// Why a name gave no address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DnsFailure {
    /// Too many lookups in flight: refused at once.
    Shed,
    /// No address, or the name servers failed or timed out.
    NoAddress,
}

/// Lookups by result, for metrics.
#[derive(Debug, Default)]
pub struct DnsCounters {
    pub resolved: AtomicU64,
    pub failed: AtomicU64,
    pub shed: AtomicU64,
    /// Failed lookups and records left unused, by kind ([`DnsError`]).
    errors: [AtomicU64; DnsError::ALL.len()],
}

impl DnsCounters {
    pub fn errors(&self, kind: DnsError) -> u64 {
        self.errors[kind as usize].load(Ordering::Relaxed)
    }
    pub(crate) fn error(&self, kind: DnsError) {
        self.errors[kind as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// Why a lookup gave nothing usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsError {
    /// The name has no record of the type asked (or does not exist).
    NoRecords,
    /// No name server answered in time.
    Timeout,
    /// An answer that did not decode (or a CNAME chain that loops).
    Malformed,
    /// A record sbcd does not use: a NAPTR that is not terminal, has a regexp or an unknown
    /// service, an SRV whose target is `.` or that points at itself, beyond the limits.
    Unusable,
    /// Anything else (no connection to a name server ...).
    Other,
}

impl DnsError {
    pub const ALL: [Self; 5] = [Self::NoRecords, Self::Timeout, Self::Malformed, Self::Unusable, Self::Other];
    pub fn label(self) -> &'static str {
        match self {
            Self::NoRecords => "no_records",
            Self::Timeout => "timeout",
            Self::Malformed => "malformed",
            Self::Unusable => "unusable",
            Self::Other => "other",
        }
    }
}

fn kind_of(e: &hickory_resolver::net::NetError) -> DnsError {
    use hickory_resolver::net::NetError;
    if e.is_no_records_found() || e.is_nx_domain() {
        DnsError::NoRecords
    } else {
        match e {
            NetError::Timeout => DnsError::Timeout,
            NetError::Proto(_) => DnsError::Malformed,
            _ => DnsError::Other,
        }
    }
}

pub(crate) struct Dns {
    resolver: TokioResolver,
    permits: Arc<Semaphore>,
    /// Each (name, type) answered, until its TTL (or its negative TTL: a name without NAPTR
    /// records is the common case): hickory caches too, but can only be asked through a lookup
    /// that takes a permit, and a full set of permits must not stop names already known.
    known: std::sync::Mutex<HashMap<(Box<str>, RecordType), Known>>,
    pub(crate) counters: DnsCounters,
}

/// An answer kept for its TTL.
struct Known {
    records: Arc<[RData]>,
    until: std::time::Instant,
}

impl Dns {
    /// A resolver on `servers`, or on the system's configuration when empty (without one: the
    /// hosts file only, logged).
    pub(crate) fn new(servers: &[SocketAddr]) -> Result<Self, String> {
        let builder = if servers.is_empty() {
            TokioResolver::builder_tokio().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "no system DNS configuration: host names resolve from the hosts file only");
                TokioResolver::builder_with_config(ResolverConfig::default(), TokioRuntimeProvider::default())
            })
        } else {
            let name_servers = servers
                .iter()
                .map(|s| {
                    let mut ns = NameServerConfig::udp_and_tcp(s.ip());
                    for c in &mut ns.connections {
                        c.port = s.port();
                    }
                    ns
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(name_servers),
                TokioRuntimeProvider::default(),
            )
        };
        let mut opts = ResolverOpts::default();
        opts.cache_size = 4096;
        // A name server that does not answer holds a permit for 2 × 2 s at most.
        opts.timeout = std::time::Duration::from_secs(2);
        opts.attempts = 2;
        let resolver = builder.with_options(opts).build().map_err(|e| e.to_string())?;
        Ok(Self {
            resolver,
            permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            known: Default::default(),
            counters: DnsCounters::default(),
        })
    }

    /// The first address of `host`, an IPv4 one first (as the sockets of most interfaces
    /// are): where a request to a name outside RFC 3263 (an in-dialog target) goes.
    pub(crate) async fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, DnsFailure> {
        match self.addresses(host, 1).await {
            Ok(ips) => ips.first().map(|ip| SocketAddr::new(*ip, port)).ok_or(DnsFailure::NoAddress),
            Err(why) => Err(why),
        }
    }

    /// The addresses of `host` (IPv4 ones, else IPv6; at most `max`).
    pub(crate) async fn addresses(&self, host: &str, max: usize) -> Result<Vec<IpAddr>, DnsFailure> {
        let mut ips: Vec<IpAddr> = Vec::new();
        for kind in [RecordType::A, RecordType::AAAA] {
            for r in self.query(host, kind).await?.iter() {
                match r {
                    RData::A(a) => ips.push(IpAddr::V4(a.0)),
                    RData::AAAA(a) => ips.push(IpAddr::V6(a.0)),
                    _ => {}
                }
            }
            if !ips.is_empty() {
                break;
            }
        }
        ips.truncate(max);
        Ok(ips)
    }

    /// The records of `kind` for `name` (NAPTR, SRV): empty when there are none, an error
    /// when the lookup failed (counted by kind).
    pub(crate) async fn records(&self, name: &str, kind: RecordType) -> Result<Vec<RData>, DnsFailure> {
        self.query(name, kind).await.map(|r| r.to_vec())
    }

    /// One lookup: known answers without a permit, others with one (none left: shed).
    async fn query(&self, name: &str, kind: RecordType) -> Result<Arc<[RData]>, DnsFailure> {
        #[allow(clippy::disallowed_methods)] // driver-side: TTLs are wall-clock deadlines
        let now = std::time::Instant::now();
        if let Some(records) = self.known_answer(name, kind, now) {
            self.counters.resolved.fetch_add(1, Ordering::Relaxed);
            return Ok(records);
        }
        let Ok(_permit) = self.permits.clone().try_acquire_owned() else {
            self.counters.shed.fetch_add(1, Ordering::Relaxed);
            return Err(DnsFailure::Shed);
        };
        match self.resolver.lookup(name, kind).await {
            Ok(found) => {
                self.counters.resolved.fetch_add(1, Ordering::Relaxed);
                let records: Arc<[RData]> =
                    found.answers().iter().filter(|r| r.record_type() == kind).map(|r| r.data.clone()).collect();
                self.remember(name, kind, records.clone(), found.valid_until().min(now + POSITIVE_MAX));
                Ok(records)
            }
            Err(e) => {
                let why = kind_of(&e);
                // A name without records of one type is an ordinary answer (RFC 3263 goes on
                // to the next kind): counted, logged at debug.
                tracing::debug!(%name, ?kind, error = %e, "DNS lookup gave nothing");
                self.counters.error(why);
                let counter = if why == DnsError::NoRecords { &self.counters.resolved } else { &self.counters.failed };
                counter.fetch_add(1, Ordering::Relaxed);
                match negative_ttl(&e) {
                    Some(ttl) => {
                        let until = now + std::time::Duration::from_secs(u64::from(ttl)).min(NEGATIVE_MAX);
                        self.remember(name, kind, Arc::from([]), until);
                        Ok(Arc::from([]))
                    }
                    None if why == DnsError::NoRecords => Ok(Arc::from([])),
                    None => Err(DnsFailure::NoAddress),
                }
            }
        }
    }

    fn known_answer(&self, name: &str, kind: RecordType, now: std::time::Instant) -> Option<Arc<[RData]>> {
        let known = self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        known.get(&(name.into(), kind)).filter(|k| now < k.until).map(|k| k.records.clone())
    }

    #[allow(clippy::disallowed_methods)] // driver-side: TTLs are wall-clock deadlines
    fn remember(&self, name: &str, kind: RecordType, records: Arc<[RData]>, until: std::time::Instant) {
        let mut known = self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if known.len() >= KNOWN_MAX {
            let now = std::time::Instant::now();
            known.retain(|_, k| now < k.until);
            if known.len() >= KNOWN_MAX {
                // Full of live answers (a flood of names): start again rather than keep them.
                known.clear();
            }
        }
        known.insert((name.into(), kind), Known { records, until });
    }
}

/// How long a "no such records" answer may be kept (the SOA's, RFC 2308); `None` without one.
fn negative_ttl(e: &hickory_resolver::net::NetError) -> Option<u32> {
    match e {
        hickory_resolver::net::NetError::Dns(hickory_resolver::net::DnsError::NoRecordsFound(n)) => n.negative_ttl,
        _ => None,
    }
}
