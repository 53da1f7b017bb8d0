//! The registry of modules and the runner of a call's chain.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use profiles::{ConfigError, Snapshot};

use crate::{CallControl, CallEnd, CallFacts, CcError, CcInstance, Effects, Hook, Times, Verdict};

/// The modules this sbcd can run, by name.
#[derive(Clone, Default)]
pub struct Registry {
    modules: HashMap<&'static str, Arc<dyn CallControl>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.modules.keys()).finish()
    }
}

/// The result of a chain's `start` hooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartOutcome {
    pub verdict: Verdict,
    pub effects: Effects,
    /// The module whose verdict stopped the chain (for refusal metrics).
    pub decided_by: Option<String>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, module: Arc<dyn CallControl>) {
        self.modules.insert(module.module(), module);
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn CallControl>> {
        self.modules.get(name)
    }

    pub fn names(&self) -> Vec<&'static str> {
        let mut v: Vec<_> = self.modules.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Checks every profile's chain at load: static module names exist, mandatory values are
    /// set. Errors name the profile's file, line and key.
    pub fn check(&self, snap: &Snapshot) -> Result<(), ConfigError> {
        for p in snap.profiles.values() {
            for inst in &p.call_control {
                let Some(module) = inst.module.literal() else { continue };
                let key = format!("{}_module", inst.name);
                let at = p.option(&key).or_else(|| p.option("call_control"));
                let err =
                    |m: String| ConfigError::new(at.map_or(&p.file, |o| &o.file), at.and_then(|o| o.line), &key, m);
                let Some(m) = self.get(&module) else {
                    return Err(err(format!("no call-control module '{module}' (have: {})", self.names().join(", "))));
                };
                for needed in m.mandatory() {
                    if !inst.params.iter().any(|(k, _)| k == needed) {
                        return Err(err(format!("module {module} needs {}_{needed}", inst.name)));
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether a chain's `phase` has to run on the blocking pool: one of its modules may block
    /// in it (an unknown module fails at once, wherever it runs).
    pub fn chain_may_block(&self, chain: &[CcInstance], phase: crate::Phase) -> bool {
        chain.iter().any(|inst| self.get(&inst.module).is_some_and(|m| m.may_block(phase)))
    }

    /// Runs `start` along the chain. `started` counts the instances whose `start` ran to the
    /// end (their `end` is owed); on a refusal or drop, `end` is run here for the earlier ones
    /// and `started` goes back to 0.
    pub fn run_start(
        &self,
        chain: &[CcInstance],
        call: &CallFacts,
        times: &Times,
        started: &AtomicUsize,
    ) -> Result<StartOutcome, CcError> {
        let mut effects = Effects::default();
        for (i, inst) in chain.iter().enumerate() {
            let module = self.get(&inst.module).ok_or_else(|| CcError::new(&inst.module, "no such module"))?;
            let hook = Hook { instance: &inst.name, params: &inst.params, call };
            let verdict = match module.start(&hook, &mut effects) {
                Ok(v) => v,
                Err(e) => {
                    self.run_end(
                        &chain[..i],
                        call,
                        &ended_now(times),
                        &refused_end(500, "Server Internal Error", "call_control_error"),
                    );
                    started.store(0, Ordering::SeqCst);
                    return Err(e);
                }
            };
            if verdict != Verdict::Continue {
                let (code, phrase, cause) = match &verdict {
                    Verdict::Refuse(r) => (r.code, r.reason.as_ref(), "refused"),
                    _ => (0, "", "dropped"),
                };
                self.run_end(&chain[..i], call, &ended_now(times), &refused_end(code, phrase, cause));
                started.store(0, Ordering::SeqCst);
                return Ok(StartOutcome { verdict, effects, decided_by: Some(inst.module.clone()) });
            }
            started.store(i + 1, Ordering::SeqCst);
        }
        Ok(StartOutcome { verdict: Verdict::Continue, effects, decided_by: None })
    }

    /// Runs `route` along the chain for an out-of-dialog request; the first verdict that is
    /// not `Continue` wins.
    pub fn run_route(&self, chain: &[CcInstance], call: &CallFacts) -> Result<StartOutcome, CcError> {
        let mut effects = Effects::default();
        for inst in chain {
            let module = self.get(&inst.module).ok_or_else(|| CcError::new(&inst.module, "no such module"))?;
            let verdict = module.route(&Hook { instance: &inst.name, params: &inst.params, call }, &mut effects)?;
            if verdict != Verdict::Continue {
                return Ok(StartOutcome { verdict, effects, decided_by: Some(inst.module.clone()) });
            }
        }
        Ok(StartOutcome { verdict: Verdict::Continue, effects, decided_by: None })
    }

    pub fn run_event(&self, chain: &[CcInstance], call: &CallFacts, event: &crate::LegEvent) {
        for inst in chain {
            if let Some(m) = self.get(&inst.module) {
                m.on_event(&Hook { instance: &inst.name, params: &inst.params, call }, event);
            }
        }
    }

    pub fn run_connect(&self, chain: &[CcInstance], call: &CallFacts, times: &Times) {
        for inst in chain {
            if let Some(m) = self.get(&inst.module) {
                m.connect(&Hook { instance: &inst.name, params: &inst.params, call }, times);
            }
        }
    }

    pub fn run_end(&self, chain: &[CcInstance], call: &CallFacts, times: &Times, end: &CallEnd) {
        for inst in chain {
            if let Some(m) = self.get(&inst.module) {
                m.end(&Hook { instance: &inst.name, params: &inst.params, call }, times, end);
            }
        }
    }
}

/// `times` with the end stamped now (a call refused while its chain runs).
fn ended_now(times: &Times) -> Times {
    Times { end: Some(std::time::SystemTime::now().max(times.start)), ..*times }
}

fn refused_end(code: u16, phrase: &str, cause: &str) -> CallEnd {
    CallEnd {
        by: crate::EndedBy::Sbc,
        code,
        phrase: phrase.to_string(),
        reason: cause.to_string(),
        answered: false,
        destination_ip: None,
    }
}
