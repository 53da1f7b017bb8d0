//! `cc_prepaid` balances shared by the cluster (docs/manual/cluster.md, Prepaid balances).
//! `<prefix>:prepaid:bal:<account>` holds an account's seconds; `<prefix>:prepaid:calls:<account>`
//! its running calls, one field each, `<node>:<instance>|<call>` → `<granted> <connected>`
//! (`connected`: Redis's clock in ms, -1 before the answer).
//!
//! - **Never spent twice:** a new call is granted what the running calls of the account have
//!   not reserved (balance − their grants); nothing left, it is refused.
//! - **Never debited twice, never lost:** the debit and the removal of the call's field are one
//!   script. A debit Redis does not take (down, late) is kept and retried by the renewer until
//!   it lands or finds the call settled.
//! - **A dead process's calls** (its node's lease is gone, or held by a newer process) are
//!   settled by whoever meets them first (a new call of the account, or the renewers' sweep):
//!   debited from their answer up to that process's last lease renewal (`<prefix>:beats`),
//!   never beyond their grant.
//! - **Redis down or slow: fail closed.** A new prepaid call is refused (503) rather than let
//!   through unbilled.
//!
//! The scripts name lease keys they build themselves: one Redis server, not Redis Cluster.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use callcontrol::modules::prepaid::{billed_seconds, BalanceStore, Reservation, Settled};

use crate::connection::{Connection, StoreError};
use crate::scripts::{lock, with_live};

/// Hashes the renewers' sweep looks at per renewal.
const SWEEP_BATCH: u32 = 100;

/// Shared Lua (after `live`, `scripts.rs`): a call's field, and the settling of dead
/// processes' calls of one account. `settle_dead` returns the seconds the live calls hold.
const SHARED: &str = r"
local function parse(v)
  local g, c = string.match(v, '^(%-?%d+) (%-?%d+)$')
  return tonumber(g) or 0, tonumber(c) or -1
end
local function settle_dead(bal, calls, beats, lp)
  local fields = redis.call('HGETALL', calls)
  local held = 0
  for i = 1, #fields, 2 do
    local f = fields[i]
    local p = string.match(f, '^([^|]*)|')
    local granted, connected = parse(fields[i + 1])
    if p and live(lp, p) then
      held = held + granted
    else
      local beat = p and redis.call('ZSCORE', beats, p)
      local billed = 0
      if connected >= 0 and beat then
        billed = math.floor((tonumber(beat) - connected + 500) / 1000)
        if billed < 0 then billed = 0 end
        if billed > granted then billed = granted end
      end
      if billed > 0 and redis.call('EXISTS', bal) == 1 then redis.call('DECRBY', bal, billed) end
      redis.call('HDEL', calls, f)
    end
  end
  return held
end
";

/// KEYS: balance, calls, index, beats. ARGV: lease prefix, field. Returns the seconds granted,
/// 0 for no credit, -1 for an unknown account, -2 when the calling process does not hold its
/// node's lease (its calls would count as a dead process's, settled unbilled: refused).
const RESERVE: &str = r"
if not live(ARGV[1], string.match(ARGV[2], '^([^|]*)|') or '') then return -2 end
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local held = settle_dead(KEYS[1], KEYS[2], KEYS[4], ARGV[1])
local avail = tonumber(redis.call('GET', KEYS[1])) - held
if avail <= 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], avail .. ' -1')
redis.call('SADD', KEYS[3], KEYS[2])
return avail
";

/// KEYS: calls. ARGV: field. Notes the answer, by Redis's clock.
const CONNECT: &str = r"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
local granted = parse(v)
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], ARGV[1], granted .. ' ' .. (tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)))
return 1
";

/// KEYS: balance, calls, index. ARGV: field, seconds billed by the node (-1: it does not know
/// when the call was answered). Returns the seconds debited, or -1 if the call is not running
/// (settled already).
const SETTLE: &str = r"
local v = redis.call('HGET', KEYS[2], ARGV[1])
if not v then return -1 end
local granted, connected = parse(v)
local billed = tonumber(ARGV[2])
if billed < 0 then
  billed = 0
  if connected >= 0 then
    local t = redis.call('TIME')
    billed = math.floor((tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - connected + 500) / 1000)
  end
end
if billed > granted then billed = granted end
if billed < 0 then billed = 0 end
if billed > 0 and redis.call('EXISTS', KEYS[1]) == 1 then redis.call('DECRBY', KEYS[1], billed) end
redis.call('HDEL', KEYS[2], ARGV[1])
drop_if_empty(KEYS[3], KEYS[2])
return billed
";

/// KEYS: index, beats. ARGV: lease prefix, cursor, batch, calls prefix, balance prefix. Settles
/// dead processes' calls in a batch of accounts. Returns the next cursor.
const SWEEP: &str = r"
local r = redis.call('SSCAN', KEYS[1], ARGV[2], 'COUNT', ARGV[3])
for _, k in ipairs(r[2]) do
  local bal = ARGV[5] .. string.sub(k, #ARGV[4] + 1)
  settle_dead(bal, k, KEYS[2], ARGV[1])
  drop_if_empty(KEYS[1], k)
end
return r[1]
";

fn script(body: &str) -> redis::Script {
    with_live(&format!("{SHARED}{body}"))
}

/// What the shared balances did, for metrics.
#[derive(Debug, Default)]
pub struct BalanceStats {
    /// New prepaid calls refused because Redis did not answer (fail closed).
    pub refused_unavailable: AtomicU64,
    /// Debits Redis did not take at the call's end, done later by the renewer.
    pub debits_deferred: AtomicU64,
    pub debits_retried: AtomicU64,
}

/// An ended call whose debit waits for Redis.
#[derive(Debug, Clone)]
struct PendingDebit {
    field: String,
    account: String,
    billed: i64,
}

/// Prepaid balances of the whole cluster.
pub struct SharedBalances {
    conn: Arc<Connection>,
    prefix: String,
    lease_prefix: String,
    /// `<node_id>:<instance>|`: the start of this process's fields.
    process: String,
    /// The account of each running call of this process (settling needs it).
    accounts: Mutex<std::collections::HashMap<String, String>>,
    pending: Mutex<Vec<PendingDebit>>,
    sweep_cursor: Mutex<String>,
    reserve: redis::Script,
    connect: redis::Script,
    settle: redis::Script,
    sweep: redis::Script,
    stats: BalanceStats,
}

impl std::fmt::Debug for SharedBalances {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBalances").field("process", &self.process).finish_non_exhaustive()
    }
}

/// Keys of the balance of `account` under `prefix`.
pub fn balance_key(prefix: &str, account: &str) -> String {
    format!("{prefix}:prepaid:bal:{account}")
}

impl SharedBalances {
    /// Balances on `conn` for this process (`node_id`, `instance`); its hooks block (they run
    /// on the call-control driver's blocking pool).
    pub fn new(conn: Arc<Connection>, prefix: &str, node_id: &str, instance: &str) -> Self {
        Self {
            conn,
            prefix: prefix.to_string(),
            lease_prefix: format!("{prefix}:node:"),
            process: format!("{node_id}:{instance}|"),
            accounts: Mutex::default(),
            pending: Mutex::default(),
            sweep_cursor: Mutex::new("0".into()),
            reserve: script(RESERVE),
            connect: script(CONNECT),
            settle: script(SETTLE),
            sweep: script(SWEEP),
            stats: BalanceStats::default(),
        }
    }

    pub fn stats(&self) -> &BalanceStats {
        &self.stats
    }

    /// Debits waiting for Redis.
    pub fn pending_debits(&self) -> usize {
        lock(&self.pending).len()
    }

    fn calls_key(&self, account: &str) -> String {
        format!("{}:prepaid:calls:{account}", self.prefix)
    }
    fn index(&self) -> String {
        format!("{}:prepaid:calls", self.prefix)
    }
    fn beats(&self) -> String {
        format!("{}:beats", self.prefix)
    }
    fn field(&self, call: &str) -> String {
        format!("{}{call}", self.process)
    }

    fn settle_shared(&self, d: &PendingDebit) -> Result<i64, StoreError> {
        let keys = [balance_key(&self.prefix, &d.account), self.calls_key(&d.account), self.index()];
        self.conn.run_blocking(|c| self.settle.key(&keys[..]).arg(&d.field).arg(d.billed).invoke(c))
    }

    /// Tries the waiting debits again (the renewer, on the blocking pool, once Redis answers);
    /// the ones Redis still does not take stay.
    pub fn retry_pending(&self) {
        let waiting = std::mem::take(&mut *lock(&self.pending));
        let mut left = Vec::new();
        for d in waiting {
            match self.settle_shared(&d) {
                Ok(billed) => {
                    self.stats.debits_retried.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(account = %d.account, billed_s = billed.max(0), "cc_prepaid: deferred debit done");
                }
                Err(_) => left.push(d),
            }
        }
        lock(&self.pending).extend(left);
    }

    /// Settles dead processes' calls in a batch of accounts (each renewal takes the next).
    pub async fn sweep(&self) {
        let (index, beats) = (self.index(), self.beats());
        let calls_prefix = format!("{}:prepaid:calls:", self.prefix);
        let bal_prefix = format!("{}:prepaid:bal:", self.prefix);
        let cursor = lock(&self.sweep_cursor).clone();
        let next: Result<String, _> = self
            .conn
            .run(|mut c| async move {
                self.sweep
                    .key(&index)
                    .key(&beats)
                    .arg(&self.lease_prefix)
                    .arg(&cursor)
                    .arg(SWEEP_BATCH)
                    .arg(&calls_prefix)
                    .arg(&bal_prefix)
                    .invoke_async(&mut c)
                    .await
            })
            .await;
        if let Ok(next) = next {
            *lock(&self.sweep_cursor) = next;
        }
    }
}

impl BalanceStore for SharedBalances {
    fn reserve(&self, call: &str, account: &str) -> Result<Reservation, String> {
        let refused = |why: String| {
            self.stats.refused_unavailable.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%account, "cc_prepaid: {why}: call refused (prepaid fails closed)");
            Ok(Reservation::Unavailable)
        };
        // While Redis is known to be away the call is not held up by it (the renewer probes).
        if !self.conn.is_up() {
            return refused("Redis unreachable".into());
        }
        let keys = [balance_key(&self.prefix, account), self.calls_key(account), self.index(), self.beats()];
        let field = self.field(call);
        let granted: Result<i64, StoreError> =
            self.conn.run_blocking(|c| self.reserve.key(&keys[..]).arg(&self.lease_prefix).arg(&field).invoke(c));
        match granted {
            Ok(-2) => refused("this process does not hold its node's lease".into()),
            Ok(-1) => Ok(Reservation::UnknownAccount),
            Ok(n) if n <= 0 => Ok(Reservation::NoCredit),
            Ok(n) => {
                lock(&self.accounts).insert(call.to_string(), account.to_string());
                Ok(Reservation::Granted(n))
            }
            // A reservation that ran past its deadline may have landed, and the refused call's
            // `end` does not run: its release waits with the debits (nothing billed), until
            // Redis takes it or shows it never landed.
            Err(e) => {
                lock(&self.pending).push(PendingDebit { field, account: account.to_string(), billed: 0 });
                refused(e.to_string())
            }
        }
    }

    fn connected(&self, call: &str, _at_ms: i64) -> Result<(), String> {
        let Some(account) = lock(&self.accounts).get(call).cloned() else { return Ok(()) };
        let (calls, field) = (self.calls_key(&account), self.field(call));
        let _: i64 =
            self.conn.run_blocking(|c| self.connect.key(&calls).arg(&field).invoke(c)).map_err(|e| e.to_string())?;
        Ok(())
    }

    fn settle(&self, call: &str, connected_ms: Option<i64>, end_ms: i64) -> Result<Settled, String> {
        let Some(account) = lock(&self.accounts).remove(call) else { return Ok(Settled::Unknown) };
        let billed = connected_ms.map_or(-1, |c| billed_seconds(end_ms - c));
        let d = PendingDebit { field: self.field(call), account, billed };
        match self.settle_shared(&d) {
            Ok(-1) => Ok(Settled::Unknown),
            Ok(n) => Ok(Settled::Debited(n)),
            Err(_) => {
                self.stats.debits_deferred.fetch_add(1, Ordering::Relaxed);
                lock(&self.pending).push(d);
                Ok(Settled::Deferred)
            }
        }
    }
}

/// An account's balance, if it exists.
pub async fn balance(conn: &Connection, prefix: &str, account: &str) -> Result<Option<i64>, StoreError> {
    let key = balance_key(prefix, account);
    conn.run(|mut c| async move { redis::cmd("GET").arg(&key).query_async(&mut c).await }).await
}

/// Sets (or creates) an account's balance.
pub async fn set_balance(conn: &Connection, prefix: &str, account: &str, seconds: i64) -> Result<(), StoreError> {
    let key = balance_key(prefix, account);
    conn.run(|mut c| async move { redis::cmd("SET").arg(&key).arg(seconds).query_async(&mut c).await }).await
}

/// Adds to an account's balance, creating it at 0 first (SEMS's `addCredit`); the new balance.
pub async fn add_credit(conn: &Connection, prefix: &str, account: &str, seconds: i64) -> Result<i64, StoreError> {
    let key = balance_key(prefix, account);
    conn.run(|mut c| async move { redis::cmd("INCRBY").arg(&key).arg(seconds).query_async(&mut c).await }).await
}

/// Lua: DECRBY only an account that exists.
const SUBTRACT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('DECRBY', KEYS[1], ARGV[1])
end
return false
";

/// Takes from an existing account's balance (SEMS's `subtractCredit`); the new balance, or
/// `None` without such an account.
pub async fn subtract_credit(
    conn: &Connection,
    prefix: &str,
    account: &str,
    seconds: i64,
) -> Result<Option<i64>, StoreError> {
    let key = balance_key(prefix, account);
    conn.run(|mut c| async move { redis::Script::new(SUBTRACT).key(&key).arg(seconds).invoke_async(&mut c).await })
        .await
}

/// Every account and its balance, by account.
pub async fn balances(conn: &Connection, prefix: &str) -> Result<Vec<(String, i64)>, StoreError> {
    let head = balance_key(prefix, "");
    let pattern = format!("{}*", glob_escaped(&head));
    let keys: Vec<String> = conn
        .run(|mut c| async move {
            let mut keys = Vec::new();
            let mut cursor = 0u64;
            loop {
                let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut c)
                    .await?;
                keys.extend(batch);
                if next == 0 {
                    return Ok(keys);
                }
                cursor = next;
            }
        })
        .await?;
    let mut out = Vec::new();
    for k in keys {
        let account = k[head.len()..].to_string();
        if let Some(s) = balance(conn, prefix, &account).await? {
            out.push((account, s));
        }
    }
    out.sort();
    Ok(out)
}

/// `s` with the characters SCAN's MATCH treats as a pattern escaped.
fn glob_escaped(s: &str) -> String {
    s.chars().fold(String::new(), |mut out, ch| {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(ch);
        out
    })
}
