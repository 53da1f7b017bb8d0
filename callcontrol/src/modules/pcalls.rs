//! `cc_pcalls`: at most `max_calls` parallel calls per key. Values: `uuid` (mandatory, a
//! pattern such as `$fU`, `$si` or `$P(account)`) and `max_calls` (default 1; `0` means no
//! limit — SEMS refuses every call there, §8.4 item 5). Beyond the limit the call is refused
//! with the configured code (402 by default). The count is exact under concurrency and
//! released when the call ends, however it ends.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::{CallControl, CallEnd, CcError, Effects, Hook, Times, Verdict};

#[derive(Debug)]
pub struct ParallelCalls {
    refuse_code: u16,
    refuse_reason: String,
    counts: Mutex<HashMap<String, u32>>,
}

impl ParallelCalls {
    pub fn new(refuse_code: u16, refuse_reason: &str) -> Self {
        Self { refuse_code, refuse_reason: refuse_reason.to_string(), counts: Mutex::new(HashMap::new()) }
    }

    /// Calls counted for `key` now.
    pub fn count(&self, key: &str) -> u32 {
        self.counts.lock().map_or(0, |c| c.get(key).copied().unwrap_or(0))
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
        let mut counts = self.counts.lock().map_err(|_| CcError::new(self.module(), "counter lock poisoned"))?;
        let n = counts.entry(key.to_string()).or_insert(0);
        if max != 0 && *n >= max {
            if *n == 0 {
                counts.remove(key);
            }
            return Ok(Verdict::Refuse {
                code: self.refuse_code,
                reason: self.refuse_reason.clone(),
                headers: Vec::new(),
            });
        }
        *n += 1;
        Ok(Verdict::Continue)
    }

    fn end(&self, hook: &Hook<'_>, _times: &Times, _end: &CallEnd) {
        let Ok(key) = self.key(hook) else { return };
        let Ok(mut counts) = self.counts.lock() else { return };
        if let Some(n) = counts.get_mut(key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(key);
            }
        }
    }
}
