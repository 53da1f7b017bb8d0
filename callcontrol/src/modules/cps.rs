//! `cc_cps`: at most `max_cps` new calls a second per key (a trunk: `$si`; a profile: a fixed
//! name; an account: `$fU`). Values: `uuid` and `max_cps` (both mandatory; `0` means no
//! limit, as `cc_pcalls`'s `max_calls`). Beyond the rate
//! the call gets `503 Service Unavailable` with `Retry-After: 1`. SEMS has no such module; it
//! is what a carrier limits trunks by. Counts live in [`CallRates`]: this node's memory, or
//! the cluster's store (`cluster` crate), which makes the rate cluster-wide.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::{CallControl, CcError, Effects, Hook, LocalReply, Verdict};

/// Keys tracked in memory before those idle for a second are dropped.
const SWEEP_AT: usize = 10_000;

/// Where call rates are counted.
pub trait CallRates: Send + Sync + std::fmt::Debug {
    /// Takes one call for `key` if fewer than `max` were taken this second (`max` 0: always).
    fn try_take(&self, key: &str, max: u32) -> Result<bool, String>;
    /// Whether taking may wait (a store over the network does).
    fn may_block(&self) -> bool {
        true
    }
}

/// Rates in this process's memory: one-second windows per key.
#[derive(Debug, Default)]
pub struct LocalRates(Mutex<HashMap<String, (Instant, u32)>>);

impl LocalRates {
    /// [`CallRates::try_take`] at `now`.
    pub fn try_take_at(&self, key: &str, max: u32, now: Instant) -> Result<bool, String> {
        let mut rates = self.0.lock().map_err(|_| "rate lock poisoned".to_string())?;
        if rates.len() >= SWEEP_AT {
            rates.retain(|_, (start, _)| now.saturating_duration_since(*start).as_secs() < 1);
        }
        let (start, n) = rates.entry(key.to_string()).or_insert((now, 0));
        if now.saturating_duration_since(*start).as_secs() >= 1 {
            *start = now;
            *n = 0;
        }
        if max != 0 && *n >= max {
            return Ok(false);
        }
        *n += 1;
        Ok(true)
    }
}

impl CallRates for LocalRates {
    fn try_take(&self, key: &str, max: u32) -> Result<bool, String> {
        #[allow(clippy::disallowed_methods)] // the driver's module: its clock is the wall's
        let now = Instant::now();
        self.try_take_at(key, max, now)
    }
    fn may_block(&self) -> bool {
        false
    }
}

#[derive(Debug)]
pub struct CallRate {
    rates: Arc<dyn CallRates>,
}

impl Default for CallRate {
    fn default() -> Self {
        Self::with_rates(Arc::new(LocalRates::default()))
    }
}

impl CallRate {
    pub fn with_rates(rates: Arc<dyn CallRates>) -> Self {
        Self { rates }
    }
}

impl CallControl for CallRate {
    fn module(&self) -> &'static str {
        "cc_cps"
    }

    fn may_block(&self, _phase: crate::Phase) -> bool {
        self.rates.may_block()
    }

    fn mandatory(&self) -> &'static [&'static str] {
        &["uuid", "max_cps"]
    }

    fn start(&self, hook: &Hook<'_>, _effects: &mut Effects) -> Result<Verdict, CcError> {
        let key = hook
            .param("uuid")
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| CcError::new(self.module(), "uuid is empty"))?;
        let max_cps = hook.param("max_cps").map(str::trim).unwrap_or_default();
        let max: u32 =
            max_cps.parse().map_err(|_| CcError::new(self.module(), format!("max_cps '{max_cps}' is not a number")))?;
        if self.rates.try_take(key, max).map_err(|e| CcError::new(self.module(), e))? {
            Ok(Verdict::Continue)
        } else {
            Ok(Verdict::Refuse(LocalReply::new(503, "Service Unavailable").with("Retry-After", "1")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_key_takes_max_calls_a_second() {
        let r = LocalRates::default();
        #[allow(clippy::disallowed_methods)] // a fixed origin for virtual time
        let t0 = Instant::now();
        assert_eq!((0..3).map(|_| r.try_take_at("trunk", 2, t0).unwrap()).collect::<Vec<_>>(), [true, true, false]);
        assert!(r.try_take_at("other", 2, t0).unwrap(), "each key its own rate");
        assert!(!r.try_take_at("trunk", 2, t0 + Duration::from_millis(999)).unwrap());
        assert!(r.try_take_at("trunk", 2, t0 + Duration::from_secs(1)).unwrap(), "a new second");
        assert!((0..5).all(|_| r.try_take_at("free", 0, t0).unwrap()), "0: no limit");
    }
}
