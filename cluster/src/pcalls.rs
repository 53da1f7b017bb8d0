//! `cc_pcalls` counts shared by the cluster: `<prefix>:pcalls:<key>` is a hash of node id →
//! calls that node counts for the key. Taking a call (a Lua script, atomic on Redis) sums the
//! fields of live nodes, drops the fields of nodes whose lease ran out (their calls are
//! released with them) and counts one more for this node if the sum is below the limit.
//!
//! Redis down or slow: the call is counted in this node's memory under the same limit (fail
//! open: at most the limit per node while Redis is away), and counted into Redis when it
//! answers again; a release Redis did not take is kept and sent again. No count is lost or
//! left stuck by an outage.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use callcontrol::modules::{CallCounts, LocalCounts};

use crate::connection::{Connection, StoreError};

/// Counts one more call for ARGV[1] if the live nodes' sum is below ARGV[2] (0: no limit);
/// KEYS[2] is the node set (`lease.rs`). Returns 1 if counted.
const ACQUIRE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local fields = redis.call('HGETALL', KEYS[1])
local total = 0
for i = 1, #fields, 2 do
  local node = fields[i]
  local lease = redis.call('ZSCORE', KEYS[2], node)
  if node ~= ARGV[1] and (not lease or tonumber(lease) < now) then
    redis.call('HDEL', KEYS[1], node)
  else
    total = total + tonumber(fields[i + 1])
  end
end
local max = tonumber(ARGV[2])
if max > 0 and total >= max then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
return 1
";

/// Counts ARGV[2] calls of ARGV[1] for the key (negative: released); a node's field and an
/// empty hash go away at zero.
const ADD: &str = r"
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], tonumber(ARGV[2]))
if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return n
";

/// What the shared counts did, for metrics.
#[derive(Debug, Default)]
pub struct CountStats {
    /// Calls counted in this node's memory because Redis did not answer.
    pub counted_locally: AtomicU64,
    /// Counts sent to Redis after it came back.
    pub reconciled: AtomicU64,
}

/// Parallel-call counts of the whole cluster.
pub struct SharedCallCounts {
    conn: Arc<Connection>,
    runtime: tokio::runtime::Handle,
    prefix: String,
    node_id: String,
    acquire: redis::Script,
    add: redis::Script,
    /// Calls counted here while Redis was away (released here too), per key.
    local: LocalCounts,
    /// Per key: calls counted here that Redis has not heard of (+), releases it did not
    /// take (−). Sent when Redis answers again.
    owed: Mutex<HashMap<String, i64>>,
    stats: Arc<CountStats>,
}

impl std::fmt::Debug for SharedCallCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCallCounts").field("node_id", &self.node_id).finish_non_exhaustive()
    }
}

impl SharedCallCounts {
    /// Counts on `conn`, as node `node_id`. Its operations block the calling thread (the
    /// call-control driver runs this module's hooks on the blocking pool) on `runtime`.
    pub fn new(conn: Arc<Connection>, runtime: tokio::runtime::Handle, prefix: &str, node_id: &str) -> Self {
        Self {
            conn,
            runtime,
            prefix: prefix.to_string(),
            node_id: node_id.to_string(),
            acquire: redis::Script::new(ACQUIRE),
            add: redis::Script::new(ADD),
            local: LocalCounts::default(),
            owed: Mutex::new(HashMap::new()),
            stats: Arc::new(CountStats::default()),
        }
    }

    pub fn stats(&self) -> &Arc<CountStats> {
        &self.stats
    }

    fn key(&self, key: &str) -> String {
        format!("{}:pcalls:{key}", self.prefix)
    }

    async fn try_acquire_shared(&self, key: &str, max: u32) -> Result<bool, StoreError> {
        let (hash, nodes) = (self.key(key), format!("{}:nodes", self.prefix));
        let counted: i64 = self
            .conn
            .run(|mut c| async move {
                self.acquire.key(&hash).key(&nodes).arg(&self.node_id).arg(max).invoke_async(&mut c).await
            })
            .await?;
        Ok(counted == 1)
    }

    async fn add_shared(&self, key: &str, n: i64) -> Result<(), StoreError> {
        let hash = self.key(key);
        let _: i64 = self
            .conn
            .run(|mut c| async move { self.add.key(&hash).arg(&self.node_id).arg(n).invoke_async(&mut c).await })
            .await?;
        Ok(())
    }

    fn owe(&self, key: &str, n: i64) {
        if let Ok(mut owed) = self.owed.lock() {
            *owed.entry(key.to_string()).or_insert(0) += n;
        }
    }

    /// Sends what Redis has not heard of yet; what it still does not take stays owed.
    pub async fn reconcile(&self) {
        let owed: Vec<(String, i64)> = match self.owed.lock() {
            Ok(mut o) => o.drain().filter(|(_, n)| *n != 0).collect(),
            Err(_) => return,
        };
        for (key, n) in owed {
            match self.add_shared(&key, n).await {
                Ok(()) => {
                    self.stats.reconciled.fetch_add(n.unsigned_abs(), Ordering::Relaxed);
                }
                Err(_) => self.owe(&key, n),
            }
        }
    }

    /// Takes back one call counted here and not yet sent to Redis, if there is one.
    fn take_owed_call(&self, key: &str) -> bool {
        let Ok(mut owed) = self.owed.lock() else { return false };
        match owed.get_mut(key) {
            Some(n) if *n > 0 => {
                *n -= 1;
                if *n == 0 {
                    owed.remove(key);
                }
                true
            }
            _ => false,
        }
    }

    fn has_owed(&self) -> bool {
        self.owed.lock().is_ok_and(|o| !o.is_empty())
    }
}

impl CallCounts for SharedCallCounts {
    fn try_acquire(&self, key: &str, max: u32) -> Result<bool, String> {
        if self.has_owed() {
            self.runtime.block_on(self.reconcile());
        }
        match self.runtime.block_on(self.try_acquire_shared(key, max)) {
            Ok(counted) => Ok(counted),
            Err(e) => {
                // Fail open, with this node's own limit: counted into Redis when it is back.
                tracing::debug!(error = %e, key, "cc_pcalls: counted on this node only");
                let counted = self.local.try_acquire(key, max)?;
                if counted {
                    self.stats.counted_locally.fetch_add(1, Ordering::Relaxed);
                    self.owe(key, 1);
                }
                Ok(counted)
            }
        }
    }

    fn release(&self, key: &str) {
        // What Redis holds for this node plus what it is owed is this node's live calls:
        // one fewer now.
        if self.local.count(key) > 0 {
            self.local.release(key);
        }
        if self.take_owed_call(key) {
            return; // it never reached Redis: the two cancel out
        }
        if self.runtime.block_on(self.add_shared(key, -1)).is_err() {
            self.owe(key, -1);
        }
    }

    fn count(&self, key: &str) -> u32 {
        let hash = self.key(key);
        let counts: Result<Vec<i64>, _> = self
            .runtime
            .block_on(self.conn.run(|mut c| async move { redis::cmd("HVALS").arg(&hash).query_async(&mut c).await }));
        match counts {
            Ok(v) => u32::try_from(v.iter().sum::<i64>().max(0)).unwrap_or(u32::MAX),
            Err(_) => self.local.count(key),
        }
    }

    fn may_block(&self) -> bool {
        true
    }
}
