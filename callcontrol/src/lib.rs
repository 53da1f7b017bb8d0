//! `callcontrol`: business rules hooked into every call. A profile names a chain of instances
//! (`call_control=limit,timer`, `limit_module=cc_pcalls`, `limit_uuid=$fU` ...); for each call
//! the engine expands their values and the driver runs the modules' hooks:
//!
//! | hook | when | may |
//! |---|---|---|
//! | `start` | initial INVITE, after profile selection, before the B leg exists | refuse (code, reason, headers), drop, set a call timer, set `$V()` variables |
//! | `connect` | the call is answered (2xx relayed to the caller) | record state |
//! | `end` | the call is over, exactly once for every module whose `start` ran | account, write CDRs, release counters |
//!
//! Hooks are plain (blocking allowed) functions: the driver runs them off the signalling
//! path, each under a deadline; a hook that fails or is late yields the configured reply and
//! is logged once. A refusal stops the chain and `end` runs for the modules already started.

mod chain;
mod facts;
#[cfg(feature = "modules")]
pub mod modules;

pub use chain::{Registry, StartOutcome};
pub use facts::{CallEnd, CallFacts, EndedBy, Times};
pub use profiles::evaluate::CcInstance;
pub use profiles::LocalReply;

use std::collections::BTreeMap;
use std::time::Duration;

/// What `start` (or `route`) decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Continue,
    /// Answer the caller with this and stop.
    Refuse(LocalReply),
    /// Stop without an answer.
    Drop,
}

/// What `start` hooks leave for the call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    /// The shortest call timer set by any module; it runs from the answer.
    pub call_timer: Option<Duration>,
    /// `$V()` variables, by name (`<instance>::<var>` by convention).
    pub vars: BTreeMap<String, String>,
    /// Profile options replaced for this call (taken literally, checked like the profile's).
    pub overrides: BTreeMap<String, String>,
}

impl Effects {
    pub fn set_call_timer(&mut self, d: Duration) {
        self.call_timer = Some(self.call_timer.map_or(d, |t| t.min(d)));
    }
}

/// A hook that could not do its work: the call gets the configured failure reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{module}: {message}")]
pub struct CcError {
    pub module: String,
    pub message: String,
}

impl CcError {
    pub fn new(module: &str, message: impl Into<String>) -> Self {
        Self { module: module.to_string(), message: message.into() }
    }
}

/// One instance's view of a call: its name, its expanded values, the call.
#[derive(Debug, Clone, Copy)]
pub struct Hook<'a> {
    pub instance: &'a str,
    pub params: &'a BTreeMap<String, String>,
    pub call: &'a CallFacts,
}

impl Hook<'_> {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }
}

/// A call-control module. Every hook has a no-op default.
pub trait CallControl: Send + Sync + 'static {
    /// The name profiles use in `<instance>_module`.
    fn module(&self) -> &'static str;

    /// Values a profile must give every instance of this module (checked at load).
    fn mandatory(&self) -> &'static [&'static str] {
        &[]
    }

    /// The call starts. `effects` collects call timers and variables.
    fn start(&self, _hook: &Hook<'_>, _effects: &mut Effects) -> Result<Verdict, CcError> {
        Ok(Verdict::Continue)
    }

    /// The call was answered.
    fn connect(&self, _hook: &Hook<'_>, _times: &Times) {}

    /// The call is over (called once for every instance whose `start` ran).
    fn end(&self, _hook: &Hook<'_>, _times: &Times, _end: &CallEnd) {}

    /// An out-of-dialog request (REGISTER, OPTIONS, MESSAGE ...) is about to be relayed. May
    /// refuse or drop it, set `$V()` variables and replace profile options, like `start`.
    /// The default lets it through: a module without routing logic never breaks such requests.
    fn route(&self, _hook: &Hook<'_>, _effects: &mut Effects) -> Result<Verdict, CcError> {
        Ok(Verdict::Continue)
    }

    /// A request or reply crossed the SBC inside the call (notification only; it is relayed
    /// already).
    fn on_event(&self, _hook: &Hook<'_>, _event: &LegEvent) {}

    /// Whether this module's hook for `phase` may wait on something slow (a database, a file
    /// system, `fsync`, a socket that can fill up, a remote counter store). A phase in which a
    /// module of the chain may block runs on the blocking pool under the hook deadline; a phase
    /// in which none may runs inline on its call's task, which saves two thread hand-offs per
    /// hook (measured: a third of sbcd's CPU per call with a CDR and a call counter). The
    /// default is the safe answer. (`start` also counts as blocking when `end` may block: a
    /// refusal in `start` runs `end` for the modules already started.)
    fn may_block(&self, _phase: Phase) -> bool {
        true
    }
}

/// The hooks of a call, for [`CallControl::may_block`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Start,
    Connect,
    Event,
    End,
    Route,
}

impl Phase {
    /// The hook's name, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Connect => "connect",
            Self::Event => "event",
            Self::End => "end",
            Self::Route => "route",
        }
    }
}

/// Which side of the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    Caller,
    Callee,
}

/// What happened inside a call, for modules that follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegEvent {
    /// An in-dialog request from `from` (re-INVITE, UPDATE, INFO, BYE ...).
    Request { from: Party, method: String },
    /// A reply from `from` to a relayed request.
    Reply { from: Party, code: u16, method: String },
}
