//! A node's lease: `<prefix>:node:<node_id>` holds the node's instance id and lives `lease`
//! unless renewed, and `<prefix>:nodes` scores each node by when its lease runs out. Renewed
//! every third of the lease; a node silent for a whole lease is dead, and what it held in the
//! cluster's stores is released by its expiry. Times are Redis's own (`TIME`), so the nodes'
//! clocks need not agree.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::connection::{Connection, StoreError};

/// Takes or renews the lease, unless another instance holds it. Returns {held (1/0), live
/// nodes, made (1: the key was not there: a first start, a lapse, or a Redis that lost its
/// data)}. `<prefix>:beats` keeps each process's (`node:instance`) last renewal: what the
/// calls of a process that died are settled up to (`balances.rs`). Entries of nodes and
/// processes dead for a day leave the sets.
const RENEW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local holder = redis.call('GET', KEYS[1])
local held = 0
local made = 0
if holder == false then made = 1 end
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[3])
  redis.call('ZADD', KEYS[3], now, ARGV[3] .. ':' .. ARGV[1])
  held = 1
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 86400000)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - 86400000)
return {held, redis.call('ZCOUNT', KEYS[2], now, '+inf'), made}
";

/// Gives the lease up if this instance holds it (a node leaving in order).
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[2])
  return 1
end
return 0
";

/// What the node knows of its lease.
#[derive(Debug, Default)]
pub struct LeaseState {
    /// This instance holds the node's lease.
    pub held: AtomicBool,
    /// Another live process holds this node id.
    pub clash: AtomicBool,
    /// Nodes whose lease had not run out at the last renewal.
    pub live_nodes: AtomicUsize,
}

/// The lease of one node.
pub struct Lease {
    node_key: String,
    nodes_key: String,
    beats_key: String,
    node_id: String,
    instance: String,
    lease: Duration,
    renew: redis::Script,
    release: redis::Script,
    state: Arc<LeaseState>,
    /// A renewal has succeeded since start (the first one makes the key).
    renewed_once: AtomicBool,
}

impl Lease {
    pub fn new(prefix: &str, node_id: &str, instance: &str, lease: Duration) -> Self {
        Self {
            node_key: format!("{prefix}:node:{node_id}"),
            nodes_key: format!("{prefix}:nodes"),
            beats_key: format!("{prefix}:beats"),
            node_id: node_id.to_string(),
            instance: instance.to_string(),
            lease,
            renew: redis::Script::new(RENEW),
            release: redis::Script::new(RELEASE),
            state: Arc::new(LeaseState::default()),
            renewed_once: AtomicBool::new(false),
        }
    }

    pub fn state(&self) -> &Arc<LeaseState> {
        &self.state
    }

    /// Every third of the lease.
    pub fn interval(&self) -> Duration {
        self.lease / 3
    }

    /// Takes or renews the lease once. Unrenewed, it is not counted as held: Redis may have
    /// lost it (a restart) or let it run out. Returns whether the lease key had to be made
    /// again while this process thought it held it (Redis lost it, or it ran out).
    pub async fn renew(&self, conn: &Connection) -> Result<bool, StoreError> {
        let ms = u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX);
        let renewed = conn
            .run(|mut c| async move {
                self.renew
                    .key(&self.node_key)
                    .key(&self.nodes_key)
                    .key(&self.beats_key)
                    .arg(&self.instance)
                    .arg(ms)
                    .arg(&self.node_id)
                    .invoke_async(&mut c)
                    .await
            })
            .await;
        let (held, live, made): (i64, usize, i64) = match renewed {
            Ok(r) => r,
            Err(e) => {
                self.state.held.store(false, Ordering::Relaxed);
                return Err(e);
            }
        };
        let held = held == 1;
        let was = self.state.held.swap(held, Ordering::Relaxed);
        let lost = held && made == 1 && self.renewed_once.swap(true, Ordering::Relaxed);
        let clashed = self.state.clash.swap(!held, Ordering::Relaxed);
        self.state.live_nodes.store(live, Ordering::Relaxed);
        if !held && !clashed {
            tracing::error!(
                node_id = %self.node_id,
                "cluster: another process holds this node_id's lease (a second node with the same \
                 cluster.node_id, or this node's previous process, whose lease runs out by itself); \
                 this node takes the lease when it is free"
            );
        } else if held && !was {
            tracing::info!(node_id = %self.node_id, live_nodes = live, "cluster: node lease held");
        }
        Ok(lost)
    }

    /// Gives the lease up (at shutdown): the other nodes see this one gone at once.
    pub async fn release(&self, conn: &Connection) -> Result<(), StoreError> {
        let _: i64 = conn
            .run(|mut c| async move {
                self.release
                    .key(&self.node_key)
                    .key(&self.nodes_key)
                    .arg(&self.instance)
                    .arg(&self.node_id)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        self.state.held.store(false, Ordering::Relaxed);
        Ok(())
    }
}
