//! `cc_pcalls`: at most `max_calls` parallel calls per key. Values: `uuid` (mandatory, a
//! pattern such as `$fU`, `$si` or `$P(account)`) and `max_calls` (default 1; `0` means no
//! limit — SEMS refuses every call there). Beyond the limit the call is refused
//! with the configured code (402 by default). The count is exact under concurrency and
//! released when the call ends, however it ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::{CallControl, CallEnd, CcError, Effects, Hook, LocalReply, Times, Verdict};

/// Where parallel-call counts live: this node's memory ([`LocalCounts`]), or the cluster's
/// store (the `cluster` crate's, on Redis), which implements the same operations.
pub trait CallCounts: Send + Sync + std::fmt::Debug {
    /// Counts one more call for `key` if fewer than `max` are counted (`max` 0: no limit).
    /// Returns whether the call was counted.
    fn try_acquire(&self, key: &str, max: u32) -> Result<bool, String>;
    /// One call for `key` is over.
    fn release(&self, key: &str);
    /// Calls counted for `key` now.
    fn count(&self, key: &str) -> u32;
    /// Whether a call may wait (a store over the network does): then the module's hooks run
    /// on the blocking pool.
    fn may_block(&self) -> bool {
        true
    }
}

/// Counts in this process's memory, exact under concurrency (one lock).
#[derive(Debug, Default)]
pub struct LocalCounts(Mutex<HashMap<String, u32>>);

impl CallCounts for LocalCounts {
    fn may_block(&self) -> bool {
        false
    }
    fn try_acquire(&self, key: &str, max: u32) -> Result<bool, String> {
        let mut counts = self.0.lock().map_err(|_| "counter lock poisoned".to_string())?;
        let n = counts.entry(key.to_string()).or_insert(0);
        if max != 0 && *n >= max {
            if *n == 0 {
                counts.remove(key);
            }
            return Ok(false);
        }
        *n += 1;
        Ok(true)
    }

    fn release(&self, key: &str) {
        let Ok(mut counts) = self.0.lock() else { return };
        if let Some(n) = counts.get_mut(key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(key);
            }
        }
    }

    fn count(&self, key: &str) -> u32 {
        self.0.lock().map_or(0, |c| c.get(key).copied().unwrap_or(0))
    }
}

#[derive(Debug)]
pub struct ParallelCalls {
    refuse_code: u16,
    refuse_reason: String,
    counts: Arc<dyn CallCounts>,
}

impl ParallelCalls {
    pub fn new(refuse_code: u16, refuse_reason: &str) -> Self {
        Self::with_counts(refuse_code, refuse_reason, Arc::new(LocalCounts::default()))
    }

    pub fn with_counts(refuse_code: u16, refuse_reason: &str, counts: Arc<dyn CallCounts>) -> Self {
        Self { refuse_code, refuse_reason: refuse_reason.to_string(), counts }
    }

    /// Calls counted for `key` now.
    pub fn count(&self, key: &str) -> u32 {
        self.counts.count(key)
    }

    fn key<'a>(&self, hook: &'a Hook<'_>) -> Result<&'a str, CcError> {
        hook.param("uuid")
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| CcError::new(self.module(), "uuid is empty"))
    }
}

impl CallControl for ParallelCalls {
    fn module(&self) -> &'static str {
        "cc_pcalls"
    }

    /// As its counter store: in this process's memory it never waits, a shared store may.
    fn may_block(&self, _phase: crate::Phase) -> bool {
        self.counts.may_block()
    }

    fn mandatory(&self) -> &'static [&'static str] {
        &["uuid"]
    }

    fn start(&self, hook: &Hook<'_>, _effects: &mut Effects) -> Result<Verdict, CcError> {
        let key = self.key(hook)?;
        let max: u32 = match hook.param("max_calls").map(str::trim) {
            None | Some("") => 1,
            Some(m) => {
                m.parse().map_err(|_| CcError::new(self.module(), format!("max_calls '{m}' is not a number")))?
            }
        };
        if self.counts.try_acquire(key, max).map_err(|e| CcError::new(self.module(), e))? {
            Ok(Verdict::Continue)
        } else {
            Ok(Verdict::Refuse(LocalReply::owned(self.refuse_code, self.refuse_reason.clone())))
        }
    }

    fn end(&self, hook: &Hook<'_>, _times: &Times, _end: &CallEnd) {
        if let Ok(key) = self.key(hook) {
            self.counts.release(key);
        }
    }
}
