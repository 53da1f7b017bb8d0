//! Host names (a `next_hop` by name, a Request-URI's host), resolved by hickory's async
//! resolver: answers are cached for their TTL, a lookup is a future rather than a thread of
//! tokio's blocking pool (a slow attacker domain used to tie those up, one per transmission),
//! and at most [`MAX_IN_FLIGHT`] lookups wait for a name server at once; beyond that names
//! already answered still resolve and a transmission to another fails at once, its
//! transaction taking its failure path (issue 16). Name servers come from `dns.servers`
//! or the system's configuration; the hosts file is read too.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use tokio::sync::Semaphore;

/// Lookups waiting for an answer at once.
pub(crate) const MAX_IN_FLIGHT: usize = 64;
/// Names whose answer is kept for [`Dns::known`] (past it, only expired ones make room).
const KNOWN_MAX: usize = 4096;

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
}

pub(crate) struct Dns {
    resolver: TokioResolver,
    permits: Arc<Semaphore>,
    /// The answer of each name resolved, until its TTL: hickory caches too, but it can only be
    /// asked through a lookup that may query a name server.
    known: std::sync::Mutex<HashMap<Box<str>, (IpAddr, std::time::Instant)>>,
    pub(crate) counters: DnsCounters,
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

    /// The first address of `host`, an IPv4 one first (as the sockets of most interfaces are).
    /// A name answered before is served from [`Self::known`] until its TTL runs out, without a
    /// permit: with every permit taken by names that hang, the names in use still resolve.
    #[allow(clippy::disallowed_methods)] // driver-side: TTLs are wall-clock deadlines
    pub(crate) async fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, DnsFailure> {
        let now = std::time::Instant::now();
        if let Some(ip) = self.known_answer(host, now) {
            self.counters.resolved.fetch_add(1, Ordering::Relaxed);
            return Ok(SocketAddr::new(ip, port));
        }
        let Ok(_permit) = self.permits.clone().try_acquire_owned() else {
            self.counters.shed.fetch_add(1, Ordering::Relaxed);
            return Err(DnsFailure::Shed);
        };
        let found = match self.resolver.lookup_ip(host).await {
            Ok(ips) => {
                let ip = ips.iter().find(IpAddr::is_ipv4).or_else(|| ips.iter().next());
                if let Some(ip) = ip {
                    self.remember(host, ip, ips.valid_until());
                }
                ip
            }
            Err(e) => {
                tracing::debug!(%host, error = %e, "DNS lookup failed");
                None
            }
        };
        match found {
            Some(ip) => {
                self.counters.resolved.fetch_add(1, Ordering::Relaxed);
                Ok(SocketAddr::new(ip, port))
            }
            None => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                Err(DnsFailure::NoAddress)
            }
        }
    }
}

impl Dns {
    fn known_answer(&self, host: &str, now: std::time::Instant) -> Option<IpAddr> {
        let known = self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        known.get(host).filter(|(_, until)| now < *until).map(|(ip, _)| *ip)
    }

    #[allow(clippy::disallowed_methods)] // driver-side: TTLs are wall-clock deadlines
    fn remember(&self, host: &str, ip: IpAddr, until: std::time::Instant) {
        let mut known = self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if known.len() >= KNOWN_MAX {
            let now = std::time::Instant::now();
            known.retain(|_, (_, u)| now < *u);
        }
        if known.len() < KNOWN_MAX {
            known.insert(host.into(), (ip, until));
        }
    }
}
