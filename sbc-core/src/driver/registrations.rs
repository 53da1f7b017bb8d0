//! The registration store behind the engine's port (`engine/src/registrations.rs`): this
//! node's cache alone, or in cluster mode the bindings shared through Redis
//! (`cluster/src/registrations.rs`), whose lookups are answered later, as shard inputs.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use regcache::{Binding, RegCache, RegQuery, RegView};
use tokio::sync::mpsc;

use super::ShardInput;
use crate::b2bua::RegTicket;
use sbc_engine::registrations::Registrations;

/// The port in cluster mode: lookups wait for Redis while it answers, and are answered from
/// this node's own bindings at once while it does not (fail open).
pub(crate) struct ClusterRegistrations(pub(crate) Arc<cluster::SharedRegistrations>);

impl std::fmt::Debug for ClusterRegistrations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterRegistrations").field("local", self.0.local()).finish()
    }
}

impl Registrations for ClusterRegistrations {
    fn lookup(&self, query: &RegQuery) -> Option<RegView> {
        if self.0.is_up() {
            return None;
        }
        self.0.stats().looked_up_locally.fetch_add(1, Ordering::Relaxed);
        Some(self.0.local().view(query))
    }
    fn len(&self) -> usize {
        self.0.local().len()
    }
    fn put(&self, binding: Binding) {
        self.0.put(binding);
    }
    fn set_ua_expires(&self, binding: &Binding, ua_expires: Instant) {
        self.0.claim(binding, ua_expires);
    }
    fn remove(&self, alias: &str) {
        self.0.remove(alias);
    }
    fn collect_expired(&self, now: Instant) -> usize {
        self.0.local().collect_expired(now)
    }
    fn is_peer(&self, source: SocketAddr) -> bool {
        self.0.is_peer(source)
    }
    fn relay_key(&self) -> Option<[u8; 32]> {
        self.0.relay_key()
    }
}

/// Who answers the lookups a shard's engine could not have at once.
#[derive(Clone)]
pub(crate) enum Lookups {
    /// This node's cache (it answers every lookup at once, so this is never asked).
    Local(Arc<RegCache>),
    /// Redis, from a task of their own; this node's bindings when Redis fails.
    Cluster(Arc<cluster::SharedRegistrations>),
}

impl Lookups {
    /// Answers `query`: now (`Some`), or later through `shard` (`None`).
    pub(crate) fn ask(&self, ticket: RegTicket, query: RegQuery, shard: &mpsc::Sender<ShardInput>) -> Option<RegView> {
        match self {
            Self::Local(cache) => Some(cache.view(&query)),
            Self::Cluster(regs) => {
                let (regs, shard) = (regs.clone(), shard.clone());
                tokio::spawn(async move {
                    let view = match regs.lookup(&query).await {
                        Ok(view) => view,
                        Err(_) => {
                            regs.stats().looked_up_locally.fetch_add(1, Ordering::Relaxed);
                            regs.local().view(&query)
                        }
                    };
                    // (A shard that stopped has no use for it.)
                    let _ = shard.send(ShardInput::Registrations(ticket, view)).await;
                });
                None
            }
        }
    }
}
