//! Host names (a `next_hop` by name, a Request-URI's host), resolved by hickory's async
//! resolver: answers are cached for their TTL, a lookup is a future rather than a thread of
//! tokio's blocking pool (a slow attacker domain used to tie those up, one per transmission),
//! and at most [`MAX_IN_FLIGHT`] lookups run at once; beyond that a transmission fails at once
//! and its transaction takes its failure path (issue 16). Name servers come from `dns.servers`
//! or the system's configuration; the hosts file is read too.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use tokio::sync::Semaphore;

/// Lookups waiting for an answer at once.
pub(crate) const MAX_IN_FLIGHT: usize = 64;

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
        let resolver = builder.with_options(opts).build().map_err(|e| e.to_string())?;
        Ok(Self { resolver, permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)), counters: DnsCounters::default() })
    }

    /// The first address of `host`, an IPv4 one first (as the sockets of most interfaces are).
    pub(crate) async fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, DnsFailure> {
        let Ok(_permit) = self.permits.clone().try_acquire_owned() else {
            self.counters.shed.fetch_add(1, Ordering::Relaxed);
            return Err(DnsFailure::Shed);
        };
        let found: Option<IpAddr> = match self.resolver.lookup_ip(host).await {
            Ok(ips) => {
                let all: Vec<IpAddr> = ips.iter().collect();
                all.iter().find(|ip| ip.is_ipv4()).or(all.first()).copied()
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
