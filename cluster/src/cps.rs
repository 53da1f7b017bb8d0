//! `cc_cps` rates shared by the cluster: the hash `<prefix>:cps:<key>` counts, per second of
//! Redis's clock, the calls every node took; a script takes one atomically if that second's
//! count is below the limit, drops older seconds, and the key goes two seconds after its last
//! call. Windows are fixed seconds: across a boundary up to twice the rate can pass in one
//! second's span. Redis down or slow: the node applies the rate alone (fail open: the limit
//! per node while Redis is away).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use callcontrol::modules::{CallRates, LocalRates};

use crate::connection::Connection;

/// Takes one call for KEYS[1] in this second if fewer than ARGV[1] were taken.
const TAKE: &str = r"
local now = redis.call('TIME')[1]
local n = tonumber(redis.call('HGET', KEYS[1], now) or '0')
if n >= tonumber(ARGV[1]) then return 0 end
for _, s in ipairs(redis.call('HKEYS', KEYS[1])) do
  if s ~= now then redis.call('HDEL', KEYS[1], s) end
end
redis.call('HINCRBY', KEYS[1], now, 1)
redis.call('PEXPIRE', KEYS[1], 2000)
return 1
";

/// Call rates of the whole cluster.
pub struct SharedCallRates {
    conn: Arc<Connection>,
    prefix: String,
    take: redis::Script,
    local: LocalRates,
    /// Calls rated on this node alone because Redis did not answer.
    pub rated_locally: AtomicU64,
}

impl std::fmt::Debug for SharedCallRates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCallRates").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl SharedCallRates {
    /// Rates on `conn`; operations block the calling thread (the call-control driver runs
    /// the module's hooks on the blocking pool).
    pub fn new(conn: Arc<Connection>, prefix: &str) -> Self {
        Self {
            conn,
            prefix: prefix.to_string(),
            take: redis::Script::new(TAKE),
            local: LocalRates::default(),
            rated_locally: AtomicU64::new(0),
        }
    }
}

impl CallRates for SharedCallRates {
    fn try_take(&self, key: &str, max: u32) -> Result<bool, String> {
        if max == 0 {
            return Ok(true); // no limit: nothing to count
        }
        if !self.conn.is_up() {
            // Known away: calls are not held up by it (the lease renewer probes it).
            self.rated_locally.fetch_add(1, Ordering::Relaxed);
            return self.local.try_take(key, max);
        }
        let k = format!("{}:cps:{key}", self.prefix);
        let taken: Result<i64, _> = self.conn.run_blocking(|c| self.take.key(&k).arg(max).invoke(c));
        match taken {
            Ok(n) => Ok(n == 1),
            Err(e) => {
                tracing::debug!(error = %e, key, "cc_cps: rated on this node only");
                self.rated_locally.fetch_add(1, Ordering::Relaxed);
                self.local.try_take(key, max)
            }
        }
    }
}
