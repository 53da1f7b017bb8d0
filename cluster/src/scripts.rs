//! What the stores' Lua scripts and their callers share: the check that a process holds its
//! node's lease, and the lock of a table whose poisoning loses nothing worth a crash.

use std::sync::{Mutex, MutexGuard};

/// Lua: `live(lp, p)`: is `p` (`node:instance`) a process that holds its node's lease? `lp`
/// is the lease keys' prefix (`<prefix>:node:`). `drop_if_empty(index, k)`: hash `k` goes, and
/// leaves the set `index`, once it has no field left.
const LIVE: &str = r"
local function live(lp, p)
  local node, inst = string.match(p, '^(.*):([^:]*)$')
  return node ~= nil and redis.call('GET', lp .. node) == inst
end
local function drop_if_empty(index, k)
  if redis.call('HLEN', k) == 0 then
    redis.call('DEL', k)
    redis.call('SREM', index, k)
  end
end
";

/// A script whose `body` may call `live` and `drop_if_empty`.
pub(crate) fn with_live(body: &str) -> redis::Script {
    redis::Script::new(&format!("{LIVE}{body}"))
}

/// Locks `m`; a panic while another held it cannot leave a table worse than losing an update.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
