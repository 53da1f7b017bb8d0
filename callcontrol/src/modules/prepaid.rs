//! `cc_prepaid`: balances in seconds per account, kept in an embedded SQLite database (WAL,
//! synchronous=FULL) so they survive restarts and crashes. Value `uuid` (mandatory, a pattern:
//! the account). An unknown account is a 500 (SEMS); a balance of zero or less refuses the
//! call (402 Insufficient Credit by default); otherwise the call timer is set to the balance.
//! When the call ends, the connected time, rounded to the nearest second, is debited.
//!
//! Exactly once, even across `kill -9`: every running call has a row (account, connect time,
//! granted seconds); the debit and the removal of that row are one transaction. One sbcd holds
//! a lock file beside the database; a heartbeat row is written every second; at start-up, the
//! rows a dead process left are settled up to its last heartbeat (never beyond their grant).
//! A debit that finds the database locked is kept (with its end time) and retried by the
//! heartbeat thread, which does not advance the heartbeat while one waits.
//! Balances are read and set while sbcd runs with `sbcd prepaid --db FILE get|set|list`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::{CallControl, CallEnd, CcError, Effects, Hook, LocalReply, Times, Verdict};

const MODULE: &str = "cc_prepaid";

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Seconds billed for `ms` milliseconds: to the nearest second, half a second rounds up.
pub fn billed_seconds(ms: i64) -> i64 {
    (ms.max(0) + 500) / 1000
}

/// Opens (and creates) a balance database.
pub fn open_db(path: &Path) -> rusqlite::Result<Connection> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    let c = Connection::open(path)?;
    c.busy_timeout(Duration::from_secs(5))?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "FULL")?;
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS balances(account TEXT PRIMARY KEY, seconds INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS calls(id TEXT PRIMARY KEY, account TEXT NOT NULL, connected_ms INTEGER, granted_s INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS heartbeat(id INTEGER PRIMARY KEY CHECK (id = 1), at_ms INTEGER NOT NULL);",
    )?;
    Ok(c)
}

/// The balance of `account`, if it exists.
pub fn balance(c: &Connection, account: &str) -> rusqlite::Result<Option<i64>> {
    c.query_row("SELECT seconds FROM balances WHERE account = ?1", [account], |r| r.get(0)).optional()
}

/// Sets (or creates) a balance.
pub fn set_balance(c: &Connection, account: &str, seconds: i64) -> rusqlite::Result<()> {
    c.execute(
        "INSERT INTO balances(account, seconds) VALUES (?1, ?2) ON CONFLICT(account) DO UPDATE SET seconds = ?2",
        params![account, seconds],
    )?;
    Ok(())
}

/// Adds to a balance, creating the account at 0 first (SEMS's `addCredit`); the new balance.
/// The sum stops at the largest integer: past it SQLite would store a float, which no later
/// read of the balance takes.
pub fn add_credit(c: &Connection, account: &str, seconds: i64) -> rusqlite::Result<i64> {
    c.query_row(
        "INSERT INTO balances(account, seconds) VALUES (?1, ?2)
         ON CONFLICT(account) DO UPDATE SET seconds =
           CASE WHEN ?2 > 0 AND seconds > 9223372036854775807 - ?2 THEN 9223372036854775807
                ELSE seconds + ?2 END
         RETURNING seconds",
        params![account, seconds],
        |r| r.get(0),
    )
}

/// Takes from an existing account's balance (SEMS's `subtractCredit`); the new balance, or
/// `None` without such an account. It stops at the smallest integer, as [`add_credit`] does.
pub fn subtract_credit(c: &Connection, account: &str, seconds: i64) -> rusqlite::Result<Option<i64>> {
    c.query_row(
        "UPDATE balances SET seconds =
           CASE WHEN ?2 > 0 AND seconds < -9223372036854775808 + ?2 THEN -9223372036854775808
                ELSE seconds - ?2 END
         WHERE account = ?1 RETURNING seconds",
        params![account, seconds],
        |r| r.get(0),
    )
    .optional()
}

/// Every account and its balance.
pub fn balances(c: &Connection) -> rusqlite::Result<Vec<(String, i64)>> {
    let mut st = c.prepare("SELECT account, seconds FROM balances ORDER BY account")?;
    let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

/// A reservation attempt for a new call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    UnknownAccount,
    NoCredit,
    /// The call may last this many seconds.
    Granted(i64),
    /// The store cannot answer now (a shared one whose server is away): the call is refused
    /// with 503 rather than let through unbilled.
    Unavailable,
}

/// Where balances live: per node ([`SqliteBalances`]), or shared by a cluster (the `cluster`
/// crate's, on Redis), with the same exactly-once guarantee for `settle`.
pub trait BalanceStore: Send + Sync + std::fmt::Debug {
    /// Checks the balance and records the call as running.
    fn reserve(&self, call: &str, account: &str) -> Result<Reservation, String>;
    /// The call was answered at `at_ms` (unix milliseconds).
    fn connected(&self, call: &str, at_ms: i64) -> Result<(), String>;
    /// The call ended at `end_ms` (answered at `connected_ms`, if the driver knows): debit its
    /// connected time and forget it, atomically.
    fn settle(&self, call: &str, connected_ms: Option<i64>, end_ms: i64) -> Result<Settled, String>;
}

/// What became of an ended call's debit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Debited this many seconds.
    Debited(i64),
    /// No such running call (settled already).
    Unknown,
    /// The store was busy: the debit is kept, with its end time, and done as soon as it can be.
    Deferred,
}

/// An ended call whose debit waits for a busy database.
#[derive(Debug, Clone)]
struct PendingDebit {
    call: String,
    connected_ms: Option<i64>,
    end_ms: i64,
}

/// Balances in a SQLite file: the running calls' rows and the debit change together in one
/// transaction; a heartbeat thread lets the next start settle a killed process's calls.
#[derive(Debug)]
pub struct SqliteBalances {
    db: Mutex<Connection>,
    /// Debits that met a locked database, done by the heartbeat thread.
    deferred: Arc<Mutex<Vec<PendingDebit>>>,
    stop: Arc<AtomicBool>,
    /// Held for the life of the process: one sbcd per balance database (the OS releases it
    /// when the process dies, however it dies).
    _lock: std::fs::File,
}

impl Drop for SqliteBalances {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl SqliteBalances {
    /// Opens the database, settles the calls a dead process left, starts the heartbeat.
    pub fn open(path: &Path) -> Result<Self, String> {
        let lock_path = path.with_extension("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("{}: {e}", lock_path.display()))?;
        lock.try_lock().map_err(|_| format!("{} is in use by another running sbcd", path.display()))?;
        let mut c = open_db(path).map_err(|e| format!("{}: {e}", path.display()))?;
        // Only the holder of the lock gets here: rows in `calls` are a dead process's.
        let settled = recover(&mut c).map_err(|e| e.to_string())?;
        if settled > 0 {
            tracing::warn!(
                calls = settled,
                "cc_prepaid: settled calls left by a previous run up to its last heartbeat"
            );
        }
        let stop = Arc::new(AtomicBool::new(false));
        let deferred = Arc::new(Mutex::new(Vec::new()));
        let mut hb = open_db(path).map_err(|e| e.to_string())?;
        let (flag, pending) = (stop.clone(), deferred.clone());
        std::thread::Builder::new()
            .name("prepaid-heartbeat".into())
            .spawn(move || loop {
                // Deferred debits first, and no heartbeat while any is left: a crash now
                // settles their calls at the last heartbeat before the database got stuck,
                // never later (which could bill them their whole grant).
                if settle_deferred(&mut hb, &pending) {
                    let at = unix_ms(SystemTime::now());
                    let _ = hb.execute(
                        "INSERT INTO heartbeat(id, at_ms) VALUES (1, ?1) ON CONFLICT(id) DO UPDATE SET at_ms = ?1",
                        [at],
                    );
                }
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                std::thread::sleep(Duration::from_secs(1));
            })
            .map_err(|e| e.to_string())?;
        Ok(Self { db: Mutex::new(c), deferred, stop, _lock: lock })
    }

    fn db(&self) -> Result<std::sync::MutexGuard<'_, Connection>, String> {
        self.db.lock().map_err(|_| "database lock poisoned".to_string())
    }
}

impl BalanceStore for SqliteBalances {
    fn reserve(&self, call: &str, account: &str) -> Result<Reservation, String> {
        let db = self.db()?;
        let Some(seconds) = balance(&db, account).map_err(|e| e.to_string())? else {
            return Ok(Reservation::UnknownAccount);
        };
        if seconds <= 0 {
            return Ok(Reservation::NoCredit);
        }
        db.execute(
            "INSERT INTO calls(id, account, connected_ms, granted_s) VALUES (?1, ?2, NULL, ?3)",
            params![call, account, seconds],
        )
        .map_err(|e| e.to_string())?;
        Ok(Reservation::Granted(seconds))
    }

    fn connected(&self, call: &str, at_ms: i64) -> Result<(), String> {
        let db = self.db()?;
        db.execute("UPDATE calls SET connected_ms = ?1 WHERE id = ?2", params![at_ms, call])
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    fn settle(&self, call: &str, connected_ms: Option<i64>, end_ms: i64) -> Result<Settled, String> {
        let debit = PendingDebit { call: call.to_string(), connected_ms, end_ms };
        let result = debit_on(&mut *self.db()?, &debit);
        match result {
            Ok(Some(billed)) => Ok(Settled::Debited(billed)),
            Ok(None) => Ok(Settled::Unknown),
            Err(e) if is_busy(&e) => {
                self.deferred.lock().map_err(|_| "deferred debits lock poisoned".to_string())?.push(debit);
                Ok(Settled::Deferred)
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Debits an ended call and forgets it, in one transaction: the seconds billed, or `None` for
/// a call that is not running (settled already).
fn debit_on(db: &mut Connection, d: &PendingDebit) -> rusqlite::Result<Option<i64>> {
    // IMMEDIATE: the write lock first (waiting up to the busy timeout), then the read. A
    // deferred transaction that reads and then writes fails at once, busy timeout or not,
    // when another connection (heartbeat, CLI) committed in between.
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let row: Option<(String, Option<i64>, i64)> = tx
        .query_row("SELECT account, connected_ms, granted_s FROM calls WHERE id = ?1", [&d.call], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let Some((account, connected, granted)) = row else {
        return Ok(None);
    };
    // The driver's answer time wins over the row's: the connect write may be late. Never more
    // than was granted: a call timer firing late is the SBC's delay, and the account must not
    // go below zero for it.
    let billed = d.connected_ms.or(connected).map_or(0, |c| billed_seconds(d.end_ms - c).min(granted));
    tx.execute("UPDATE balances SET seconds = seconds - ?1 WHERE account = ?2", params![billed, account])?;
    tx.execute("DELETE FROM calls WHERE id = ?1", [&d.call])?;
    tx.commit()?;
    Ok(Some(billed))
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

/// Tries the deferred debits again; true when none is left waiting. The list is not locked
/// while the database is waited for, so `end` hooks can add to it meanwhile.
fn settle_deferred(db: &mut Connection, pending: &Mutex<Vec<PendingDebit>>) -> bool {
    let Ok(mut taken) = pending.lock().map(|mut p| std::mem::take(&mut *p)) else { return false };
    taken.retain(|d| match debit_on(db, d) {
        Ok(billed) => {
            tracing::info!(call = %d.call, billed_s = billed.unwrap_or(0), "cc_prepaid: deferred debit done");
            false
        }
        Err(e) if is_busy(&e) => true,
        Err(e) => {
            tracing::error!(call = %d.call, "cc_prepaid: deferred debit failed: {e}; settled at the next start");
            false
        }
    });
    let Ok(mut pending) = pending.lock() else { return false };
    pending.extend(taken);
    pending.is_empty()
}

#[derive(Debug)]
pub struct Prepaid {
    store: Arc<dyn BalanceStore>,
    /// Distinguishes this process's calls from those of a process that died.
    run: String,
    refuse_code: u16,
    refuse_reason: String,
}

impl Prepaid {
    /// The module over a SQLite balance file.
    pub fn open(path: &Path, refuse_code: u16, refuse_reason: &str) -> Result<Self, String> {
        Ok(Self::with_store(Arc::new(SqliteBalances::open(path)?), refuse_code, refuse_reason))
    }

    pub fn with_store(store: Arc<dyn BalanceStore>, refuse_code: u16, refuse_reason: &str) -> Self {
        let run = format!("{}-{}", unix_ms(SystemTime::now()), std::process::id());
        Self { store, run, refuse_code, refuse_reason: refuse_reason.to_string() }
    }

    fn call_id(&self, hook: &Hook<'_>) -> String {
        format!("{}:{}:{}", self.run, hook.call.call, hook.instance)
    }

    fn account<'a>(hook: &'a Hook<'_>) -> Result<&'a str, CcError> {
        hook.param("uuid").map(str::trim).filter(|u| !u.is_empty()).ok_or_else(|| CcError::new(MODULE, "uuid is empty"))
    }
}

/// Settles calls left in the table (by a process that died): connected ones are debited up to
/// the last heartbeat. Returns how many rows were settled.
fn recover(c: &mut Connection) -> rusqlite::Result<usize> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let heartbeat: Option<i64> =
        tx.query_row("SELECT at_ms FROM heartbeat WHERE id = 1", [], |r| r.get(0)).optional()?;
    let rows: Vec<(String, String, Option<i64>, i64)> = {
        let mut st = tx.prepare("SELECT id, account, connected_ms, granted_s FROM calls")?;
        let r = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        r.collect::<rusqlite::Result<_>>()?
    };
    for (id, account, connected, granted) in &rows {
        if let (Some(c), Some(hb)) = (connected, heartbeat) {
            // No call outlived its grant: the call timer cut it at the latest.
            let billed = billed_seconds(hb - c).min(*granted);
            tx.execute("UPDATE balances SET seconds = seconds - ?1 WHERE account = ?2", params![billed, account])?;
        }
        tx.execute("DELETE FROM calls WHERE id = ?1", [id])?;
    }
    tx.commit()?;
    Ok(rows.len())
}

impl CallControl for Prepaid {
    fn module(&self) -> &'static str {
        MODULE
    }

    fn mandatory(&self) -> &'static [&'static str] {
        &["uuid"]
    }

    fn start(&self, hook: &Hook<'_>, effects: &mut Effects) -> Result<Verdict, CcError> {
        let account = Self::account(hook)?;
        match self.store.reserve(&self.call_id(hook), account).map_err(|e| CcError::new(MODULE, e))? {
            Reservation::UnknownAccount => Err(CcError::new(MODULE, format!("unknown account '{account}'"))),
            Reservation::Unavailable => {
                Ok(Verdict::Refuse(LocalReply::new(503, "Service Unavailable").with("Retry-After", "5")))
            }
            Reservation::NoCredit => {
                Ok(Verdict::Refuse(LocalReply::owned(self.refuse_code, self.refuse_reason.clone())))
            }
            Reservation::Granted(seconds) => {
                effects.set_call_timer(Duration::from_secs(seconds.max(0) as u64));
                effects.vars.insert(format!("{}::uuid", hook.instance), account.to_string());
                effects.vars.insert(format!("{}::balance", hook.instance), seconds.to_string());
                Ok(Verdict::Continue)
            }
        }
    }

    fn connect(&self, hook: &Hook<'_>, times: &Times) {
        let Some(at) = times.connect else { return };
        if let Err(e) = self.store.connected(&self.call_id(hook), unix_ms(at)) {
            tracing::error!(call = hook.call.call, "cc_prepaid: cannot record the answer: {e}");
        }
    }

    fn end(&self, hook: &Hook<'_>, times: &Times, _end: &CallEnd) {
        let end_ms = unix_ms(times.end.unwrap_or_else(SystemTime::now));
        match self.store.settle(&self.call_id(hook), times.connect.map(unix_ms), end_ms) {
            Ok(Settled::Debited(billed)) => {
                tracing::info!(call = hook.call.call, billed_s = billed, "cc_prepaid: debited")
            }
            Ok(Settled::Unknown) => {}
            Ok(Settled::Deferred) => {
                tracing::warn!(call = hook.call.call, "cc_prepaid: balance database busy, debit deferred");
            }
            Err(e) => tracing::error!(
                call = hook.call.call,
                "cc_prepaid: debit failed: {e}; the call stays reserved and is settled at the next start"
            ),
        }
    }
}
