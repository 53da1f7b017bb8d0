//! The node's connection to Redis: one multiplexed connection that reconnects by itself,
//! made lazily (a Redis that is down at start is retried, never waited for), and every
//! operation under the cluster's deadline. What happens is counted in [`Health`].
//!
//! Callers on threads that may block (call-control hooks on the blocking pool) use plain
//! connections of their own instead ([`Connection::run_blocking`]): the round trip happens on
//! the caller's thread, where the multiplexed connection would wake a runtime worker to send
//! and another to hand the answer back (a perf profile of cluster mode at 1000 calls/s spent
//! about 45 % of sbcd's samples switching and waking threads).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Why an operation did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Redis: {0}")]
    Redis(String),
    /// Redis answered, with an error (a script on a value of the wrong type, say): the
    /// connection is fine, and Redis is not counted down for it.
    #[error("Redis answered: {0}")]
    Answered(String),
}

/// What the connection has seen, for `/health` and `/metrics`.
#[derive(Debug, Default)]
pub struct Health {
    /// The last operation succeeded.
    pub up: AtomicBool,
    pub operations: AtomicU64,
    pub errors: AtomicU64,
    pub timeouts: AtomicU64,
    pub last_error: Mutex<String>,
}

impl Health {
    fn failed(&self, e: &StoreError) {
        let counter = if matches!(e, StoreError::Timeout(_)) { &self.timeouts } else { &self.errors };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = self.last_error.lock() {
            *last = e.to_string();
        }
        if matches!(e, StoreError::Answered(_)) {
            tracing::warn!(error = %e, "cluster: a Redis operation failed");
            return;
        }
        let was_up = self.up.swap(false, Ordering::Relaxed);
        if was_up {
            tracing::warn!(error = %e, "cluster: Redis unreachable; serving with this node's own state");
        }
    }

    fn succeeded(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!("cluster: Redis reachable");
        }
    }
}

/// The connection to the cluster's Redis.
pub struct Connection {
    client: redis::Client,
    conn: ArcSwapOption<ConnectionManager>,
    /// Serialises connection attempts: one at a time, the others wait for its result.
    connecting: tokio::sync::Mutex<()>,
    timeout: Duration,
    health: Arc<Health>,
    /// Idle plain connections for [`Connection::run_blocking`].
    plain: Mutex<Vec<redis::Connection>>,
}

/// Plain connections kept idle (one per blocking thread busy with Redis at once, roughly).
const PLAIN_IDLE: usize = 16;

/// A client error as the store counts it: an error Redis answered with, or a connection
/// that failed.
fn store_error(e: &redis::RedisError) -> StoreError {
    let connection = e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal();
    if connection {
        StoreError::Redis(e.to_string())
    } else {
        StoreError::Answered(e.to_string())
    }
}

impl Connection {
    /// A connection to `url` (not opened yet); `timeout` bounds every operation.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(|e| StoreError::Redis(e.to_string()))?;
        Ok(Self {
            client,
            conn: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(()),
            timeout,
            health: Arc::new(Health::default()),
            plain: Mutex::new(Vec::new()),
        })
    }

    /// The client, for connections of their own (pub/sub).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// The last operation succeeded: callers that must not wait skip Redis otherwise (the
    /// lease renewer keeps probing it).
    pub fn is_up(&self) -> bool {
        self.health.up.load(Ordering::Relaxed)
    }

    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    async fn manager(&self) -> Result<ConnectionManager, StoreError> {
        if let Some(c) = self.conn.load_full() {
            return Ok((*c).clone());
        }
        let _one = self.connecting.lock().await;
        if let Some(c) = self.conn.load_full() {
            return Ok((*c).clone());
        }
        // One attempt here: the operation's deadline bounds it, and the next operation tries
        // again. Once made, the manager reconnects by itself.
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1);
        let made = ConnectionManager::new_with_config(self.client.clone(), cfg)
            .await
            .map_err(|e| StoreError::Redis(e.to_string()))?;
        self.conn.store(Some(Arc::new(made.clone())));
        Ok(made)
    }

    /// A plain connection: an idle one, or a new one (connecting within the deadline).
    fn plain(&self) -> Result<redis::Connection, StoreError> {
        if let Some(c) = self.plain.lock().ok().and_then(|mut idle| idle.pop()) {
            return Ok(c);
        }
        let c = self.client.get_connection_with_timeout(self.timeout).map_err(|e| store_error(&e))?;
        c.set_read_timeout(Some(self.timeout)).map_err(|e| store_error(&e))?;
        c.set_write_timeout(Some(self.timeout)).map_err(|e| store_error(&e))?;
        Ok(c)
    }

    /// Runs `op` on a plain connection, on this thread: for threads that may block, never a
    /// runtime worker. Each read and write has the deadline; the outcome is counted as for
    /// [`Connection::run`]. A connection that failed is not used again.
    pub fn run_blocking<T>(
        &self,
        op: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        self.health.operations.fetch_add(1, Ordering::Relaxed);
        let result = self.plain().and_then(|mut c| match op(&mut c) {
            Ok(v) => {
                if let Ok(mut idle) = self.plain.lock() {
                    if idle.len() < PLAIN_IDLE {
                        idle.push(c);
                    }
                }
                Ok(v)
            }
            Err(e) if e.is_timeout() => Err(StoreError::Timeout(self.timeout)),
            Err(e) => {
                let e = store_error(&e);
                if matches!(e, StoreError::Redis(_)) {
                    // (After a Redis restart, every idle connection is as dead as this one.)
                    if let Ok(mut idle) = self.plain.lock() {
                        idle.clear();
                    }
                }
                Err(e)
            }
        });
        match &result {
            Ok(_) => self.health.succeeded(),
            Err(e) => self.health.failed(e),
        }
        result
    }

    /// Runs `op` on the connection under the deadline; the outcome is counted.
    pub async fn run<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.health.operations.fetch_add(1, Ordering::Relaxed);
        let attempt = async {
            let conn = self.manager().await?;
            op(conn).await.map_err(|e| store_error(&e))
        };
        let result = match tokio::time::timeout(self.timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        };
        match &result {
            Ok(_) => self.health.succeeded(),
            Err(e) => self.health.failed(e),
        }
        result
    }
}
