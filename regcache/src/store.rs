//! The embedded store: every change of the cache is written to a SQLite file by one writer
//! thread (batched in transactions), so the signalling path never waits for the disk. At start
//! the live bindings are read back.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection};

use crate::binding::{Binding, Origin};
use crate::cache::Persist;

/// Writes batched into one transaction at most.
const BATCH: usize = 512;

#[derive(Debug, thiserror::Error)]
#[error("registration store {path}: {source}")]
pub struct StoreError {
    pub path: PathBuf,
    #[source]
    pub source: rusqlite::Error,
}

/// Maps the engine's monotonic instants to wall-clock time for the store, from one reading of
/// both clocks taken by the driver.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    instant: Instant,
    unix_ms: i64,
}

impl WallClock {
    pub fn new(instant: Instant, wall: SystemTime) -> Self {
        let unix_ms = wall.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Self { instant, unix_ms }
    }

    fn to_unix_ms(self, at: Instant) -> i64 {
        match at.checked_duration_since(self.instant) {
            Some(d) => self.unix_ms.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            None => self.unix_ms.saturating_sub(
                i64::try_from(self.instant.saturating_duration_since(at).as_millis()).unwrap_or(i64::MAX),
            ),
        }
    }

    /// `None` for a time already past.
    fn to_instant(self, unix_ms: i64) -> Option<Instant> {
        let ahead = u64::try_from(unix_ms.checked_sub(self.unix_ms)?).ok()?;
        self.instant.checked_add(Duration::from_millis(ahead))
    }
}

enum Op {
    Save(Box<Row>),
    Remove(String),
}

struct Row {
    alias: String,
    aor: String,
    contact: String,
    source: String,
    transport: String,
    interface: String,
    user_agent: String,
    call_id: String,
    ua_call_id: String,
    ua_expires_ms: i64,
    registrar_expires_ms: i64,
    origin: &'static str,
}

/// SQLite persistence for a [`crate::RegCache`].
pub struct SqliteStore {
    path: PathBuf,
    clock: WallClock,
    tx: Mutex<Option<Sender<Op>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
    /// Writes that failed (logged each time; the cache itself is unaffected).
    pub errors: std::sync::Arc<AtomicU64>,
}

fn open_db(path: &Path) -> rusqlite::Result<Connection> {
    let c = Connection::open(path)?;
    c.busy_timeout(Duration::from_secs(5))?;
    // WAL + NORMAL: a crash loses at most the last transactions, never corrupts the file.
    c.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
         CREATE TABLE IF NOT EXISTS bindings (
             alias TEXT PRIMARY KEY, aor TEXT NOT NULL, contact TEXT NOT NULL, source TEXT NOT NULL,
             transport TEXT NOT NULL, interface TEXT NOT NULL, user_agent TEXT NOT NULL, call_id TEXT NOT NULL, ua_call_id TEXT NOT NULL,
             ua_expires_ms INTEGER NOT NULL, registrar_expires_ms INTEGER NOT NULL, origin TEXT NOT NULL);",
    )?;
    Ok(c)
}

impl SqliteStore {
    /// Opens (or creates) the store and returns it with the bindings still live at `clock`.
    /// Expired rows are deleted.
    pub fn open(path: &Path, clock: WallClock) -> Result<(Self, Vec<Binding>), StoreError> {
        let err = |source| StoreError { path: path.to_path_buf(), source };
        let conn = open_db(path).map_err(err)?;
        conn.execute("DELETE FROM bindings WHERE registrar_expires_ms <= ?1", params![clock.unix_ms]).map_err(err)?;
        let live = load(&conn, clock).map_err(err)?;
        let (tx, rx) = mpsc::channel();
        let errors = std::sync::Arc::new(AtomicU64::new(0));
        let worker = {
            let errors = errors.clone();
            let path = path.to_path_buf();
            std::thread::Builder::new()
                .name("regcache-store".into())
                .spawn(move || write_loop(conn, rx, &path, &errors))
                .map_err(|e| err(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?
        };
        let store = Self {
            path: path.to_path_buf(),
            clock,
            tx: Mutex::new(Some(tx)),
            worker: Mutex::new(Some(worker)),
            errors,
        };
        Ok((store, live))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn send(&self, op: Op) {
        let guard = self.tx.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(tx) = guard.as_ref() {
            if tx.send(op).is_err() {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Writes what is queued and stops the writer (at shutdown). Later changes are not stored.
    pub fn close(&self) {
        self.tx.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        let worker = self.worker.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(w) = worker {
            let _ = w.join();
        }
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}

impl Persist for SqliteStore {
    fn saved(&self, b: &Binding) {
        self.send(Op::Save(Box::new(Row {
            alias: b.alias.clone(),
            aor: b.aor.clone(),
            contact: b.contact.clone(),
            source: b.source.to_string(),
            transport: b.transport.clone(),
            interface: b.interface.clone(),
            user_agent: b.user_agent.clone(),
            call_id: b.call_id.clone(),
            ua_call_id: b.ua_call_id.clone(),
            ua_expires_ms: self.clock.to_unix_ms(b.ua_expires),
            registrar_expires_ms: self.clock.to_unix_ms(b.registrar_expires),
            origin: b.origin.as_str(),
        })));
    }
    fn removed(&self, alias: &str) {
        self.send(Op::Remove(alias.to_string()));
    }
}

/// The daemon keeps the store to close it at shutdown while the cache writes through it.
impl Persist for std::sync::Arc<SqliteStore> {
    fn saved(&self, b: &Binding) {
        SqliteStore::saved(self, b);
    }
    fn removed(&self, alias: &str) {
        SqliteStore::removed(self, alias);
    }
}

fn load(conn: &Connection, clock: WallClock) -> rusqlite::Result<Vec<Binding>> {
    let mut st = conn.prepare(
        "SELECT alias, aor, contact, source, transport, interface, user_agent, ua_expires_ms,
                registrar_expires_ms, origin, call_id, ua_call_id FROM bindings",
    )?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, String>(5)?,
            r.get::<_, String>(6)?,
            r.get::<_, i64>(7)?,
            r.get::<_, i64>(8)?,
            r.get::<_, String>(9)?,
            r.get::<_, String>(10)?,
            r.get::<_, String>(11)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (alias, aor, contact, source, transport, interface, user_agent, ua_ms, reg_ms, origin, call_id, ua_call_id) =
            row?;
        // A row this version cannot read is skipped (and logged), not fatal: the phone simply
        // registers again.
        let (Ok(source), Some(origin), Some(registrar_expires)) =
            (source.parse::<SocketAddr>(), Origin::parse(&origin), clock.to_instant(reg_ms))
        else {
            tracing::warn!(%alias, "unreadable registration row skipped");
            continue;
        };
        let ua_expires = clock.to_instant(ua_ms).unwrap_or(clock.instant);
        out.push(Binding {
            alias,
            aor,
            contact,
            source,
            transport,
            interface,
            user_agent,
            call_id,
            ua_call_id,
            ua_expires,
            registrar_expires,
            origin,
            relay: None,
        });
    }
    Ok(out)
}

fn write_loop(mut conn: Connection, rx: Receiver<Op>, path: &Path, errors: &AtomicU64) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        if let Err(e) = write_batch(&mut conn, &batch) {
            errors.fetch_add(batch.len() as u64, Ordering::Relaxed);
            tracing::error!(path = %path.display(), error = %e, "registration store write failed");
        }
    }
}

fn write_batch(conn: &mut Connection, batch: &[Op]) -> rusqlite::Result<()> {
    // IMMEDIATE: the write lock up front, as every write transaction in the project takes it
    // (this one only writes, so a deferred one would wait the same way).
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut save = tx.prepare_cached(
            "INSERT OR REPLACE INTO bindings (alias, aor, contact, source, transport, interface, user_agent,
             ua_expires_ms, registrar_expires_ms, origin, call_id, ua_call_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?;
        let mut remove = tx.prepare_cached("DELETE FROM bindings WHERE alias = ?1")?;
        for op in batch {
            match op {
                Op::Save(r) => {
                    save.execute(params![
                        r.alias,
                        r.aor,
                        r.contact,
                        r.source,
                        r.transport,
                        r.interface,
                        r.user_agent,
                        r.ua_expires_ms,
                        r.registrar_expires_ms,
                        r.origin,
                        r.call_id,
                        r.ua_call_id
                    ])?;
                }
                Op::Remove(alias) => {
                    remove.execute(params![alias])?;
                }
            }
        }
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RegCache;

    #[test]
    fn bindings_survive_a_reopen_and_expired_ones_do_not() {
        let dir = std::env::temp_dir().join(format!("regcache-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("reg.sqlite");
        let _ = std::fs::remove_file(&path);
        #[allow(clippy::disallowed_methods)] // the driver's one reading of both clocks
        let (now, wall) = (Instant::now(), SystemTime::now());
        let clock = WallClock::new(now, wall);
        let (store, live) = SqliteStore::open(&path, clock).expect("open");
        assert!(live.is_empty());
        let cache = RegCache::new(Box::new(store));
        let mk = |alias: &str, secs: u64| Binding {
            alias: alias.into(),
            aor: "sip:a@x".into(),
            contact: "sip:a@10.0.0.1;ob".into(),
            source: "127.0.0.1:5070".parse().expect("addr"),
            transport: "tcp".into(),
            interface: "ext".into(),
            user_agent: "phone".into(),
            call_id: "up-1".into(),
            ua_call_id: "ua-1".into(),
            ua_expires: now + Duration::from_secs(secs / 2),
            registrar_expires: now + Duration::from_secs(secs),
            origin: Origin::Upstream,
            relay: None,
        };
        cache.put(mk("live", 3600));
        cache.put(mk("short", 2));
        cache.put(mk("gone", 3600));
        cache.remove("gone");
        drop(cache); // closes the store: every queued write is on disk

        // Later, after a restart: 10 s have passed.
        let later = WallClock::new(now, wall + Duration::from_secs(10));
        let (_store, live) = SqliteStore::open(&path, later).expect("reopen");
        assert_eq!(live.len(), 1, "{live:?}");
        let b = &live[0];
        assert_eq!((b.alias.as_str(), b.contact.as_str(), b.transport.as_str()), ("live", "sip:a@10.0.0.1;ob", "tcp"));
        let left = b.registrar_expires.duration_since(now).as_secs();
        assert!((3585..=3590).contains(&left), "registrar expiry carried over: {left}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
