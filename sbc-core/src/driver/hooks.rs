//! The call-control driver of one shard: each call with a chain gets a small task that runs its
//! hooks in order (`start`, then `connect`, then `end`) and sends the `start` verdict back to
//! the shard. Hooks never run on the signalling path. A hook in which a module of the chain may
//! block (a database, a file write, syslog) runs on the blocking pool under the configured
//! deadline, so a slow or failing one costs its call the failure reply, not a stuck shard; a
//! hook in which none may (counters, timers, header checks) runs inline on the task.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use callcontrol::{CallEnd, CallFacts, CcInstance, LegEvent, Phase, Registry, StartOutcome, Times, Verdict};
use tokio::sync::mpsc;

use super::ShardInput;
use crate::b2bua::{CallHandle, CcRequest, CcVerdict};
use crate::crash::{supervised, supervised_then_resume};
use profiles::LocalReply;

/// How hooks run, from the configuration.
#[derive(Debug)]
pub struct CcSettings {
    pub hook_timeout: Duration,
    pub failure_code: u16,
    pub failure_reason: String,
    /// Calls and requests refused (or dropped) by call control, by module; failures (error,
    /// panic, timeout) count under `failed`.
    pub refusals: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

impl CcSettings {
    fn count_refusal(&self, module: &str) {
        if let Ok(mut m) = self.refusals.lock() {
            *m.entry(module.to_string()).or_default() += 1;
        }
    }
}

enum CallEvent {
    Connect(SystemTime),
    Leg(LegEvent),
    End(CallEnd, SystemTime),
}

pub(super) struct CcDriver {
    registry: Arc<Registry>,
    settings: Arc<CcSettings>,
    shard: mpsc::Sender<ShardInput>,
    calls: HashMap<CallHandle, mpsc::UnboundedSender<CallEvent>>,
    /// Call tasks still running (their `end` may still be writing): shutdown waits for them.
    inflight: Arc<AtomicUsize>,
}

// Wall-clock stamps for CDRs and billing are the driver's job (the engine has no clock).
#[allow(clippy::disallowed_methods)]
fn wall_clock() -> SystemTime {
    SystemTime::now()
}

impl CcDriver {
    pub(super) fn new(
        registry: Arc<Registry>,
        settings: Arc<CcSettings>,
        shard: mpsc::Sender<ShardInput>,
        inflight: Arc<AtomicUsize>,
    ) -> Self {
        Self { registry, settings, shard, calls: HashMap::new(), inflight }
    }

    pub(super) fn dispatch(&mut self, req: CcRequest) {
        match req {
            CcRequest::Start { call, chain, facts } => {
                // At most a connect and an end follow: the channel stays tiny.
                let (tx, rx) = mpsc::unbounded_channel();
                self.calls.insert(call, tx);
                let task = CallTask {
                    registry: self.registry.clone(),
                    settings: self.settings.clone(),
                    shard: self.shard.clone(),
                    chain,
                    facts: Arc::new(facts),
                    call,
                    started: Arc::new(AtomicUsize::new(0)),
                };
                let inflight = self.inflight.clone();
                inflight.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    task.run(rx).await;
                    inflight.fetch_sub(1, Ordering::SeqCst);
                });
            }
            CcRequest::Route { call, chain, facts } => {
                let (registry, settings, shard) = (self.registry.clone(), self.settings.clone(), self.shard.clone());
                let inflight = self.inflight.clone();
                inflight.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let verdict = if registry.chain_may_block(&chain, Phase::Route) {
                        let run = tokio::task::spawn_blocking(move || {
                            supervised_then_resume(|| registry.run_route(&chain, &facts))
                        });
                        verdict_of(
                            tokio::time::timeout(settings.hook_timeout, run).await,
                            &settings,
                            call.get(),
                            "route",
                        )
                    } else {
                        let out = supervised(|| registry.run_route(&chain, &facts));
                        inline_verdict(out, &settings, call.get(), "route")
                    };
                    let _ = shard.send(ShardInput::CcVerdict(call, verdict)).await;
                    inflight.fetch_sub(1, Ordering::SeqCst);
                });
            }
            CcRequest::Event { call, event } => {
                if let Some(tx) = self.calls.get(&call) {
                    let _ = tx.send(CallEvent::Leg(event));
                }
            }
            CcRequest::Connect { call } => {
                if let Some(tx) = self.calls.get(&call) {
                    let _ = tx.send(CallEvent::Connect(wall_clock()));
                }
            }
            CcRequest::End { call, end } => {
                if let Some(tx) = self.calls.remove(&call) {
                    let _ = tx.send(CallEvent::End(end, wall_clock()));
                }
            }
        }
    }
}

struct CallTask {
    /// The engine's handle of the call (what the verdict names).
    call: CallHandle,
    registry: Arc<Registry>,
    settings: Arc<CcSettings>,
    shard: mpsc::Sender<ShardInput>,
    chain: Arc<[CcInstance]>,
    facts: Arc<CallFacts>,
    started: Arc<AtomicUsize>,
}

impl CallTask {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<CallEvent>) {
        // The engine's handle (the facts carry a process-wide number for modules).
        let call = self.call;
        let mut times = Times { start: wall_clock(), connect: None, end: None };
        let (verdict, late) = self.start(times).await;
        if self.shard.send(ShardInput::CcVerdict(call, verdict)).await.is_err() {
            return; // the shard is gone: the process is stopping
        }
        // A start that overran its deadline still runs: the call got the failure reply, but
        // which modules started (and are owed an end) is only known once it returns.
        if let Some(late) = late {
            let _ = late.await;
        }
        while let Some(event) = rx.recv().await {
            match event {
                CallEvent::Connect(at) => {
                    times.connect = Some(at);
                    let (registry, chain, facts) = (self.registry.clone(), self.chain.clone(), self.facts.clone());
                    self.bounded(Phase::Connect, move || registry.run_connect(&chain, &facts, &times)).await;
                }
                CallEvent::Leg(event) => {
                    let n = self.started.load(Ordering::SeqCst).min(self.chain.len());
                    let (registry, chain, facts) = (self.registry.clone(), self.chain.clone(), self.facts.clone());
                    self.bounded(Phase::Event, move || registry.run_event(&chain[..n], &facts, &event)).await;
                }
                CallEvent::End(end, at) => {
                    times.end = Some(at);
                    // Only the modules whose start ran are owed an end.
                    let n = self.started.load(Ordering::SeqCst).min(self.chain.len());
                    let (registry, chain, facts) = (self.registry.clone(), self.chain.clone(), self.facts.clone());
                    self.bounded(Phase::End, move || registry.run_end(&chain[..n], &facts, &times, &end)).await;
                    break;
                }
            }
        }
    }

    /// Runs `start` under the deadline; on a timeout also returns the still-running hook.
    async fn start(&self, times: Times) -> (CcVerdict, Option<tokio::task::JoinHandle<HookOutput>>) {
        let (registry, chain, facts, started) =
            (self.registry.clone(), self.chain.clone(), self.facts.clone(), self.started.clone());
        if self.inline(Phase::Start) {
            let out = supervised(|| registry.run_start(&chain, &facts, &times, &started));
            return (inline_verdict(out, &self.settings, self.facts.call, "start"), None);
        }
        let mut run = tokio::task::spawn_blocking(move || {
            supervised_then_resume(|| registry.run_start(&chain, &facts, &times, &started))
        });
        let result = tokio::time::timeout(self.settings.hook_timeout, &mut run).await;
        let late = result.is_err().then_some(run);
        (verdict_of(result, &self.settings, self.facts.call, "start"), late)
    }

    /// No module of the chain may block in `phase`: its hooks run on this task.
    fn inline(&self, phase: Phase) -> bool {
        let blocks = |p| self.registry.chain_may_block(&self.chain, p);
        // A refusal inside `start` runs `end` for the modules already started (a CDR write).
        !blocks(phase) && (phase != Phase::Start || !blocks(Phase::End))
    }

    async fn bounded(&self, phase: Phase, f: impl FnOnce() + Send + 'static) {
        let inline = self.inline(phase);
        let ends_call = phase == Phase::End;
        let phase = phase.as_str();
        if inline {
            if supervised(f).is_err() {
                tracing::error!(call = self.facts.call, phase, "call control hook panicked");
            }
            return;
        }
        if ends_call {
            // The call is over: nothing waits for `end`, but shutdown waits for this task, so a
            // slow CDR write is awaited to the end rather than abandoned to a deadline.
            if let Err(e) = tokio::task::spawn_blocking(|| supervised_then_resume(f)).await {
                tracing::error!(call = self.facts.call, phase, "call control hook panicked: {e}");
            }
            return;
        }
        let run = tokio::task::spawn_blocking(|| supervised_then_resume(f));
        match tokio::time::timeout(self.settings.hook_timeout, run).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(call = self.facts.call, phase, "call control hook panicked: {e}"),
            Err(_) => tracing::warn!(call = self.facts.call, phase, "call control hook too late"),
        }
    }
}

type HookOutput = Result<StartOutcome, callcontrol::CcError>;
type HookResult = Result<Result<HookOutput, tokio::task::JoinError>, tokio::time::error::Elapsed>;

/// The verdict from a chain run inline (a panic is a failure, as on the blocking pool).
fn inline_verdict(
    out: std::thread::Result<HookOutput>,
    settings: &CcSettings,
    call: u64,
    phase: &'static str,
) -> CcVerdict {
    match out {
        Ok(output) => verdict_of(Ok(Ok(output)), settings, call, phase),
        Err(_) => {
            tracing::error!(call, phase, "call control hook panicked");
            settings.count_refusal("failed");
            CcVerdict::Failed(LocalReply::owned(settings.failure_code, settings.failure_reason.clone()))
        }
    }
}

/// The verdict for the engine from what a `start` or `route` chain did (or failed to do).
fn verdict_of(result: HookResult, settings: &CcSettings, call: u64, phase: &'static str) -> CcVerdict {
    let failed = || {
        settings.count_refusal("failed");
        CcVerdict::Failed(LocalReply::owned(settings.failure_code, settings.failure_reason.clone()))
    };
    match result {
        Ok(Ok(Ok(outcome))) => {
            if outcome.verdict != Verdict::Continue {
                settings.count_refusal(outcome.decided_by.as_deref().unwrap_or("unknown"));
            }
            match outcome.verdict {
                Verdict::Continue => {
                    let e = outcome.effects;
                    CcVerdict::Continue { call_timer: e.call_timer, vars: e.vars, overrides: e.overrides }
                }
                Verdict::Refuse(reply) => CcVerdict::Refuse(reply),
                Verdict::Drop => CcVerdict::Drop,
            }
        }
        Ok(Ok(Err(e))) => {
            tracing::warn!(call, phase, "call control: {e}");
            failed()
        }
        Ok(Err(e)) => {
            tracing::error!(call, phase, "call control hook panicked: {e}");
            failed()
        }
        Err(_) => {
            tracing::warn!(
                call,
                phase,
                timeout_ms = settings.hook_timeout.as_millis() as u64,
                "call control hook too late"
            );
            failed()
        }
    }
}
