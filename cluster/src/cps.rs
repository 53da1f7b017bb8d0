//! `cc_cps` rates shared by the cluster: `<prefix>:cps:<key>:<second>` counts the calls taken
//! in that second of Redis's clock, over every node; a script takes one atomically if the
//! count is below the limit, and the key goes two seconds later. Redis down or slow: the
//! node applies the rate alone (fail open: the limit per node while Redis is away).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use callcontrol::modules::{CallRates, LocalRates};

use crate::connection::Connection;

/// Takes one call for KEYS[1] in this second if fewer than ARGV[1] (0: no limit) were taken.
const TAKE: &str = r"
local t = redis.call('TIME')
local k = KEYS[1] .. ':' .. t[1]
local max = tonumber(ARGV[1])
local n = tonumber(redis.call('GET', k) or '0')
if max > 0 and n >= max then return 0 end
redis.call('INCR', k)
redis.call('PEXPIRE', k, 2000)
return 1
";

/// Call rates of the whole cluster.
pub struct SharedCallRates {
    conn: Arc<Connection>,
    runtime: tokio::runtime::Handle,
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
    /// the module's hooks on the blocking pool) on `runtime`.
    pub fn new(conn: Arc<Connection>, runtime: tokio::runtime::Handle, prefix: &str) -> Self {
        Self {
            conn,
            runtime,
            prefix: prefix.to_string(),
            take: redis::Script::new(TAKE),
            local: LocalRates::default(),
            rated_locally: AtomicU64::new(0),
        }
    }
}

impl CallRates for SharedCallRates {
    fn try_take(&self, key: &str, max: u32) -> Result<bool, String> {
        let k = format!("{}:cps:{key}", self.prefix);
        let taken: Result<i64, _> = self
            .runtime
            .block_on(self.conn.run(|mut c| async move { self.take.key(&k).arg(max).invoke_async(&mut c).await }));
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
