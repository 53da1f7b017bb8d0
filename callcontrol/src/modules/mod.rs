//! Built-in modules.

mod call_timer;
mod pcalls;

pub use call_timer::CallTimer;
pub use pcalls::ParallelCalls;

use std::sync::Arc;

use crate::Registry;

/// Module settings from the daemon's configuration (`call_control:` in sbc.yaml).
#[derive(Debug, Clone)]
pub struct ModuleSettings {
    /// cc_pcalls: the reply beyond the limit.
    pub pcalls_refuse_code: u16,
    pub pcalls_refuse_reason: String,
    /// cc_call_timer: the timer when a profile gives none (None: such a call is refused).
    pub call_timer_default_s: Option<u64>,
}

impl Default for ModuleSettings {
    fn default() -> Self {
        Self {
            pcalls_refuse_code: 402,
            pcalls_refuse_reason: "Too Many Simultaneous Calls".into(),
            call_timer_default_s: None,
        }
    }
}

/// A registry with every built-in module.
pub fn builtin(settings: &ModuleSettings) -> Registry {
    let mut r = Registry::new();
    r.add(Arc::new(ParallelCalls::new(settings.pcalls_refuse_code, &settings.pcalls_refuse_reason)));
    r.add(Arc::new(CallTimer::new(settings.call_timer_default_s)));
    r
}
