//! What the stores' Lua scripts and their callers share: the check that a process holds its
//! node's lease, and the lock of a table whose poisoning loses nothing worth a crash.

use std::sync::{Mutex, MutexGuard};

/// Lua: is `p` (`node:instance`) a process that holds its node's lease? `lp` is the lease
/// keys' prefix (`<prefix>:node:`).
const LIVE: &str = r"
local function live(lp, p)
  local node, inst = string.match(p, '^(.*):([^:]*)$')
  return node ~= nil and redis.call('GET', lp .. node) == inst
end
";

/// A script whose `body` may call `live(lp, p)`.
pub(crate) fn with_live(body: &str) -> redis::Script {
    redis::Script::new(&format!("{LIVE}{body}"))
}

/// Locks `m`; a panic while another held it cannot leave a table worse than losing an update.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
