//! `cc_call_timer`: a maximum call duration, counted from the answer. Value `timer` (seconds,
//! a pattern); empty or not a number falls back to the configured default. `0` refuses the call
//! with 503 (SEMS), no timer and no default refuses it with 500.

use std::time::Duration;

use crate::{CallControl, CcError, Effects, Hook, LocalReply, Verdict};

#[derive(Debug)]
pub struct CallTimer {
    default_s: Option<u64>,
}

impl CallTimer {
    pub fn new(default_s: Option<u64>) -> Self {
        Self { default_s }
    }
}

impl CallControl for CallTimer {
    fn module(&self) -> &'static str {
        "cc_call_timer"
    }

    /// A value from the call's parameters: nothing to wait for.
    fn may_block(&self, _phase: crate::Phase) -> bool {
        false
    }

    fn start(&self, hook: &Hook<'_>, effects: &mut Effects) -> Result<Verdict, CcError> {
        let given = hook.param("timer").map(str::trim).and_then(|t| t.parse::<f64>().ok()).filter(|t| t.is_finite());
        let secs = match given {
            Some(t) if t < 0.0 => return Err(CcError::new(self.module(), format!("negative timer {t}"))),
            Some(t) => t,
            None => match self.default_s {
                Some(d) => d as f64,
                None => return Err(CcError::new(self.module(), "no timer value and no default_timer")),
            },
        };
        if secs == 0.0 {
            return Ok(Verdict::Refuse(LocalReply::new(503, "Service Unavailable")));
        }
        // Anything beyond a year is no limit worth a timer; below a millisecond is zero.
        let d = Duration::try_from_secs_f64(secs.min(31_536_000.0)).unwrap_or_default().max(Duration::from_millis(1));
        effects.set_call_timer(d);
        Ok(Verdict::Continue)
    }
}
