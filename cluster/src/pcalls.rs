//! `cc_pcalls` counts shared by the cluster. `<prefix>:pcalls:<key>` is a hash with one field
//! per process, `<node_id>:<instance>`, holding that process's live calls for the key as an
//! absolute number: a write that lands twice, or lands although its deadline passed, changes
//! nothing. Taking a call (a Lua script) sums the fields of processes that hold their node's
//! lease, drops the others (the calls of a dead or restarted process are released with its
//! lease) and writes this process's count plus one if the sum is below the limit.
//!
//! This process's counts are the truth, kept in memory; Redis is told them. When Redis is down,
//! or an operation runs past its deadline (it may or may not have landed), the call is decided
//! on this process's own count (fail open: the limit per node) and the key is marked; the lease
//! renewer writes every marked key's count once Redis answers, and every key's count after
//! Redis lost its data (a restart). Writes for one key are serialised here and go over one
//! connection, in order. The scripts name lease keys they build themselves: one Redis server
//! (or a primary with replicas), not Redis Cluster.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use callcontrol::modules::CallCounts;

use crate::connection::{Connection, StoreError};
use crate::scripts::{lock, with_live as script};

/// Lock stripes: writes for keys of one stripe are serialised.
const STRIPES: usize = 64;
/// Keys the sweeper looks at per renewal.
const SWEEP_BATCH: u32 = 100;

/// KEYS: the hash, the index of hashes. ARGV: lease prefix, this field, this process's count,
/// the limit (0: none). Returns 1 if the call was counted (the field set to count + 1).
const ACQUIRE: &str = r"
local fields = redis.call('HGETALL', KEYS[1])
local total = tonumber(ARGV[3])
for i = 1, #fields, 2 do
  local f = fields[i]
  if f ~= ARGV[2] then
    if live(ARGV[1], f) then
      total = total + tonumber(fields[i + 1])
    else
      redis.call('HDEL', KEYS[1], f)
    end
  end
end
local max = tonumber(ARGV[4])
if max > 0 and total >= max then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], tonumber(ARGV[3]) + 1)
redis.call('SADD', KEYS[2], KEYS[1])
return 1
";

/// KEYS: the hash, the index. ARGV: this field, its count (0: the field goes).
const SET: &str = r"
if tonumber(ARGV[2]) > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('SADD', KEYS[2], KEYS[1])
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return 1
";

/// KEYS: the hash. ARGV: lease prefix. The live processes' calls.
const COUNT: &str = r"
local fields = redis.call('HGETALL', KEYS[1])
local total = 0
for i = 1, #fields, 2 do
  if live(ARGV[1], fields[i]) then total = total + tonumber(fields[i + 1]) end
end
return total
";

/// KEYS: the index. ARGV: lease prefix, cursor, batch. Drops dead processes' fields from a
/// batch of hashes, and empty hashes from the index. Returns the next cursor.
const SWEEP: &str = r"
local r = redis.call('SSCAN', KEYS[1], ARGV[2], 'COUNT', ARGV[3])
for _, k in ipairs(r[2]) do
  local fields = redis.call('HKEYS', k)
  for _, f in ipairs(fields) do
    if not live(ARGV[1], f) then redis.call('HDEL', k, f) end
  end
  drop_if_empty(KEYS[1], k)
end
return r[1]
";

/// What the shared counts did, for metrics.
#[derive(Debug, Default)]
pub struct CountStats {
    /// Calls decided on this process's own count because Redis did not answer.
    pub counted_locally: AtomicU64,
    /// Counts written to Redis by the renewer after it came back.
    pub reconciled: AtomicU64,
}

/// Parallel-call counts of the whole cluster.
pub struct SharedCallCounts {
    conn: Arc<Connection>,
    prefix: String,
    /// `<prefix>:node:`: where the scripts find a node's lease holder.
    lease_prefix: String,
    /// This process's field: `<node_id>:<instance>`.
    field: String,
    acquire: redis::Script,
    set: redis::Script,
    count: redis::Script,
    sweep: redis::Script,
    /// This process's live calls per key: the truth Redis is told.
    live: Mutex<HashMap<String, u32>>,
    /// Keys whose count Redis may not have right.
    dirty: Mutex<HashSet<String>>,
    stripes: Vec<Mutex<()>>,
    sweep_cursor: Mutex<String>,
    stats: Arc<CountStats>,
}

impl std::fmt::Debug for SharedCallCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCallCounts").field("field", &self.field).finish_non_exhaustive()
    }
}

impl SharedCallCounts {
    /// Counts on `conn` for this process (`node_id`, `instance`). Its operations block the
    /// calling thread (the call-control driver runs this module's hooks on the blocking pool).
    pub fn new(conn: Arc<Connection>, prefix: &str, node_id: &str, instance: &str) -> Self {
        Self {
            conn,
            prefix: prefix.to_string(),
            lease_prefix: format!("{prefix}:node:"),
            field: format!("{node_id}:{instance}"),
            acquire: script(ACQUIRE),
            set: script(SET),
            count: script(COUNT),
            sweep: script(SWEEP),
            live: Mutex::new(HashMap::new()),
            dirty: Mutex::new(HashSet::new()),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            sweep_cursor: Mutex::new("0".into()),
            stats: Arc::new(CountStats::default()),
        }
    }

    pub fn stats(&self) -> &Arc<CountStats> {
        &self.stats
    }

    fn hash(&self, key: &str) -> String {
        format!("{}:pcalls:{key}", self.prefix)
    }

    fn index(&self) -> String {
        format!("{}:pcalls", self.prefix)
    }

    fn stripe(&self, key: &str) -> MutexGuard<'_, ()> {
        let h = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        lock(&self.stripes[(h % STRIPES as u64) as usize])
    }

    fn live_count(&self, key: &str) -> u32 {
        lock(&self.live).get(key).copied().unwrap_or(0)
    }

    fn set_live(&self, key: &str, n: u32) {
        let mut live = lock(&self.live);
        if n == 0 {
            live.remove(key);
        } else {
            live.insert(key.to_string(), n);
        }
    }

    fn mark(&self, key: &str) {
        lock(&self.dirty).insert(key.to_string());
    }

    fn acquire_shared(&self, key: &str, mine: u32, max: u32) -> Result<bool, StoreError> {
        let (hash, index) = (self.hash(key), self.index());
        let counted: i64 = self.conn.run_blocking(|c| {
            self.acquire.key(&hash).key(&index).arg(&self.lease_prefix).arg(&self.field).arg(mine).arg(max).invoke(c)
        })?;
        Ok(counted == 1)
    }

    fn set_shared(&self, key: &str, n: u32) -> Result<(), StoreError> {
        let (hash, index) = (self.hash(key), self.index());
        let _: i64 = self.conn.run_blocking(|c| self.set.key(&hash).key(&index).arg(&self.field).arg(n).invoke(c))?;
        Ok(())
    }

    /// Writes the count of every key Redis may not have right; stops at the first failure
    /// (Redis is away again: the rest waits for the next renewal). Blocks: the renewer runs it
    /// on the blocking pool, as the hooks run theirs.
    pub fn reconcile(&self) {
        let keys: Vec<String> = lock(&self.dirty).iter().cloned().collect();
        for key in keys {
            let written = {
                let _one = self.stripe(&key);
                let n = self.live_count(&key);
                self.set_shared(&key, n)
            };
            if written.is_err() {
                return;
            }
            lock(&self.dirty).remove(&key);
            self.stats.reconciled.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Redis lost what it held (it restarted empty): every live count is written again.
    pub fn mark_all(&self) {
        let keys: Vec<String> = lock(&self.live).keys().cloned().collect();
        lock(&self.dirty).extend(keys);
    }

    /// Drops dead processes' fields from a batch of hashes (each renewal takes the next).
    pub async fn sweep(&self) {
        let index = self.index();
        let cursor = lock(&self.sweep_cursor).clone();
        let next: Result<String, _> = self
            .conn
            .run(|mut c| async move {
                self.sweep.key(&index).arg(&self.lease_prefix).arg(&cursor).arg(SWEEP_BATCH).invoke_async(&mut c).await
            })
            .await;
        if let Ok(next) = next {
            *lock(&self.sweep_cursor) = next;
        }
    }
}

impl CallCounts for SharedCallCounts {
    fn try_acquire(&self, key: &str, max: u32) -> Result<bool, String> {
        let _one = self.stripe(key);
        let mine = self.live_count(key);
        // While Redis is known to be away, calls are not held up by it (the renewer probes).
        let shared = if self.conn.is_up() { self.acquire_shared(key, mine, max).ok() } else { None };
        let counted = match shared {
            Some(counted) => counted,
            None => {
                // Fail open with this process's own limit; Redis is told the count later.
                self.stats.counted_locally.fetch_add(1, Ordering::Relaxed);
                self.mark(key);
                max == 0 || mine < max
            }
        };
        if counted {
            self.set_live(key, mine + 1);
        }
        Ok(counted)
    }

    fn release(&self, key: &str) {
        let _one = self.stripe(key);
        let n = self.live_count(key).saturating_sub(1);
        self.set_live(key, n);
        let written = self.conn.is_up() && self.set_shared(key, n).is_ok();
        if !written {
            self.mark(key);
        }
    }

    /// The live processes' calls for `key` (this process's own if Redis does not answer).
    /// Blocks: not for async contexts.
    fn count(&self, key: &str) -> u32 {
        let hash = self.hash(key);
        let total: Result<i64, _> = self.conn.run_blocking(|c| self.count.key(&hash).arg(&self.lease_prefix).invoke(c));
        match total {
            Ok(n) => u32::try_from(n.max(0)).unwrap_or(u32::MAX),
            Err(_) => self.live_count(key),
        }
    }

    fn may_block(&self) -> bool {
        true
    }
}
