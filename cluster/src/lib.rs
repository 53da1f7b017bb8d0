//! Cluster mode (docs/manual/cluster.md): several sbcd nodes share state on one Redis. This
//! crate is the driver's side of it: the connection (`connection.rs`: one reconnecting
//! connection, every operation under a deadline), the node's lease (`lease.rs`) and the
//! stores built on them (call counts and rates, registrations, the call registry). The
//! engine never calls it: the stores built on it answer the engine's ports later, as inputs.

pub mod balances;
mod connection;
mod cps;
mod lease;
mod membership;
mod pcalls;
mod registrations;
mod registry;
mod scripts;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

pub use balances::{BalanceStats, SharedBalances};
pub use connection::{Connection, Health, StoreError};
pub use cps::SharedCallRates;
pub use lease::{Lease, LeaseState};
pub use membership::{Membership, SipAddress};
pub use pcalls::{CountStats, SharedCallCounts};
use profiles::config::{redacted_redis_url, ClusterSettings};
pub use registrations::{RegStats, SharedRegistrations};
pub use registry::{AskError, CallRegistry, NodeCalls, ASK_DEADLINE};

/// How long start waits for Redis before it goes on without it (and keeps trying).
const START_DEADLINE: Duration = Duration::from_secs(3);

/// A node of a cluster: its settings, its connection and its lease.
pub struct Cluster {
    settings: ClusterSettings,
    connection: Arc<Connection>,
    lease: Arc<Lease>,
    call_counts: Arc<SharedCallCounts>,
    call_rates: Arc<SharedCallRates>,
    balances: Arc<SharedBalances>,
    membership: Arc<Membership>,
    call_registry: Arc<CallRegistry>,
    /// Registrations shared once the driver has its cache ([`Cluster::share_registrations`]).
    registrations: Arc<arc_swap::ArcSwapOption<SharedRegistrations>>,
    renewer: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The node's cluster state, as `/health` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    pub node_id: String,
    pub redis_up: bool,
    pub lease_held: bool,
    /// Another live process holds this node's id.
    pub node_id_clash: bool,
    pub live_nodes: usize,
    /// The other live nodes and their SIP addresses, as this node last read them.
    pub peers: std::collections::BTreeMap<String, Vec<String>>,
    /// Live nodes under this key prefix that `cluster.nodes` does not list.
    pub unexpected_nodes: Vec<String>,
    pub operations: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub last_error: String,
}

impl Cluster {
    /// Joins the cluster: connects (waiting at most a few seconds: a node whose Redis is
    /// down starts all the same and keeps trying), takes its lease and renews it from then on.
    /// `instance` tells this process from another that claims the same node id.
    pub async fn join(settings: ClusterSettings, instance: &str) -> Result<Self, StoreError> {
        let connection = Arc::new(Connection::new(&settings.redis_url, settings.timeout)?);
        let lease = Arc::new(Lease::new(&settings.key_prefix, &settings.node_id, instance, settings.lease));
        let first = async {
            loop {
                match lease.renew(&connection).await {
                    Ok(_) => return,
                    Err(_) => tokio::time::sleep(settings.timeout).await,
                }
            }
        };
        match tokio::time::timeout(START_DEADLINE, first).await {
            // (A clash was logged by the lease.)
            Ok(()) if !lease.state().held.load(Ordering::Relaxed) => {}
            Ok(()) => tracing::info!(
                node_id = %settings.node_id,
                redis = %redacted_redis_url(&settings.redis_url),
                live_nodes = lease.state().live_nodes.load(Ordering::Relaxed),
                "cluster: joined"
            ),
            Err(_) => tracing::warn!(
                node_id = %settings.node_id,
                redis = %redacted_redis_url(&settings.redis_url),
                "cluster: Redis unreachable at start; serving with this node's own state, retrying"
            ),
        }
        let call_counts =
            Arc::new(SharedCallCounts::new(connection.clone(), &settings.key_prefix, &settings.node_id, instance));
        let membership = Arc::new(Membership::new(
            &settings.key_prefix,
            &settings.node_id,
            settings.lease,
            settings.nodes.as_deref(),
        ));
        let call_registry = Arc::new(CallRegistry::new(
            connection.clone(),
            membership.clone(),
            &settings.key_prefix,
            &settings.node_id,
            instance,
        ));
        let call_rates = Arc::new(SharedCallRates::new(connection.clone(), &settings.key_prefix));
        let balances =
            Arc::new(SharedBalances::new(connection.clone(), &settings.key_prefix, &settings.node_id, instance));
        let registrations = Arc::new(arc_swap::ArcSwapOption::<SharedRegistrations>::empty());
        let renewer = {
            let (connection, lease, counts) = (connection.clone(), lease.clone(), call_counts.clone());
            let (regs, money, members) = (registrations.clone(), balances.clone(), membership.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(lease.interval());
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    // Failures are counted and logged by the connection. With Redis back, what
                    // it missed meanwhile is written; after it lost its data, every count.
                    let Ok(lost) = lease.renew(&connection).await else { continue };
                    if lost {
                        tracing::warn!("cluster: Redis lost this node's lease; writing its counts again");
                        counts.mark_all();
                    }
                    let c = counts.clone();
                    let _ = tokio::task::spawn_blocking(move || c.reconcile()).await;
                    counts.sweep().await;
                    let _ = members.refresh(&connection).await;
                    if let Some(r) = regs.load_full() {
                        r.refresh(lost);
                    }
                    let m = money.clone();
                    let _ = tokio::task::spawn_blocking(move || m.retry_pending()).await;
                    money.sweep().await;
                }
            })
        };
        let renewer = std::sync::Mutex::new(Some(renewer));
        Ok(Self {
            settings,
            connection,
            lease,
            call_counts,
            call_rates,
            balances,
            membership,
            call_registry,
            registrations,
            renewer,
        })
    }

    pub fn settings(&self) -> &ClusterSettings {
        &self.settings
    }

    pub fn connection(&self) -> &Arc<Connection> {
        &self.connection
    }

    /// The call registry: other nodes' calls, and answering their questions about ours.
    pub fn call_registry(&self) -> &Arc<CallRegistry> {
        &self.call_registry
    }

    /// Shares the registrations of this node's cache `local` with the cluster, publishing
    /// `own` (its SIP addresses) for its peers. Once, at start.
    pub fn share_registrations(&self, local: Arc<regcache::RegCache>, own: &[SipAddress]) -> Arc<SharedRegistrations> {
        self.membership.publish(own);
        let regs = SharedRegistrations::start(
            self.connection.clone(),
            local,
            &self.settings.key_prefix,
            &self.settings.node_id,
            self.membership.clone(),
            &tokio::runtime::Handle::current(),
        );
        self.registrations.store(Some(regs.clone()));
        regs
    }

    /// The shared registrations, once the driver started them.
    pub fn registrations(&self) -> Option<Arc<SharedRegistrations>> {
        self.registrations.load_full()
    }

    /// `cc_prepaid` balances shared by the cluster.
    pub fn balances(&self) -> &Arc<SharedBalances> {
        &self.balances
    }

    /// `cc_cps` rates shared by the cluster.
    pub fn call_rates(&self) -> &Arc<SharedCallRates> {
        &self.call_rates
    }

    /// `cc_pcalls` counts shared by the cluster.
    pub fn call_counts(&self) -> &Arc<SharedCallCounts> {
        &self.call_counts
    }

    pub fn view(&self) -> ClusterView {
        let h = self.connection.health();
        let l = self.lease.state();
        ClusterView {
            node_id: self.settings.node_id.clone(),
            redis_up: h.up.load(Ordering::Relaxed),
            lease_held: l.held.load(Ordering::Relaxed),
            node_id_clash: l.clash.load(Ordering::Relaxed),
            live_nodes: l.live_nodes.load(Ordering::Relaxed),
            peers: self.membership.peer_list(),
            unexpected_nodes: self.membership.strangers(),
            operations: h.operations.load(Ordering::Relaxed),
            errors: h.errors.load(Ordering::Relaxed),
            timeouts: h.timeouts.load(Ordering::Relaxed),
            last_error: h.last_error.lock().map(|e| e.clone()).unwrap_or_default(),
        }
    }

    /// Leaves in order: renewals stop and the lease is given up.
    pub async fn leave(&self) {
        // Renewals stop first: one in flight could otherwise land after the release.
        let renewer = self.renewer.lock().ok().and_then(|mut r| r.take());
        if let Some(r) = renewer {
            r.abort();
            let _ = r.await;
        }
        match self.lease.release(&self.connection).await {
            Ok(()) => tracing::info!(node_id = %self.settings.node_id, "cluster: left"),
            Err(e) => tracing::warn!(error = %e, "cluster: lease not given up; it runs out by itself"),
        }
    }
}
