//! One shard: a task that owns an engine, feeds it inputs and the time, and sends its outputs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::mpsc;

use super::hooks::CcDriver;
use super::{ShardInput, Shared};
use crate::b2bua::{Engine, Event, Output};
use crate::sip::msg::Method;

/// What a shard publishes for the rest of the process (shutdown, stats).
#[derive(Debug, Default)]
pub struct ShardStatus {
    pub calls: AtomicUsize,
    pub transactions: AtomicUsize,
    pub calls_started: AtomicU64,
    pub calls_answered: AtomicU64,
    pub calls_ended: AtomicU64,
    pub requests: AtomicU64,
    pub responses: AtomicU64,
    pub retransmissions_absorbed: AtomicU64,
    pub drops: AtomicU64,
    pub local_replies: AtomicU64,
    pub media_timeouts: AtomicU64,
    pub registrations_absorbed: AtomicU64,
    pub session_refreshes: AtomicU64,
    pub session_timeouts: AtomicU64,
    pub auth_answered: AtomicU64,
    pub retransmission_cache_evictions: AtomicU64,
    pub auth_challenged: AtomicU64,
    pub requests_by_method: [AtomicU64; Method::COUNT],
    pub retransmissions_by_method: [AtomicU64; Method::COUNT],
    /// Counts with labels, from the engine's events (once per call or drop, not per message).
    pub labelled: Mutex<Labelled>,
    /// No call and no busy transaction left, stored once the batch's messages were handed to
    /// the sockets: shutdown waits for it, not for `calls` (published before the sends).
    pub idle: AtomicBool,
}

/// Event counts by label.
#[derive(Debug, Default, Clone)]
pub struct Labelled {
    /// (profile, outcome: `answered` or the final class `4xx` …) → calls ended.
    pub calls_ended: BTreeMap<(String, &'static str), u64>,
    /// Messages dropped without a reply, by reason.
    pub drops: BTreeMap<&'static str, u64>,
    /// Requests the SBC answered itself with an error, by status code.
    pub refused: BTreeMap<u16, u64>,
}

impl Labelled {
    fn count(&mut self, e: &Event) {
        match e {
            Event::CallEnded { code, profile, answered, .. } => {
                let outcome = if *answered {
                    "answered"
                } else {
                    match code / 100 {
                        3 => "3xx",
                        4 => "4xx",
                        5 => "5xx",
                        6 => "6xx",
                        // Ended without a final answer (e.g. a subscription that expired).
                        _ => "other",
                    }
                };
                *self.calls_ended.entry((profile.clone(), outcome)).or_default() += 1;
            }
            Event::Dropped { reason } => *self.drops.entry(reason).or_default() += 1,
            Event::Refused { code } => *self.refused.entry(*code).or_default() += 1,
            _ => {}
        }
    }
    pub fn merge(&mut self, o: &Self) {
        for (k, v) in &o.calls_ended {
            *self.calls_ended.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.drops {
            *self.drops.entry(k).or_default() += v;
        }
        for (k, v) in &o.refused {
            *self.refused.entry(*k).or_default() += v;
        }
    }
}

/// Sum of all shards' counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct StatsSnapshot {
    pub calls: usize,
    pub transactions: usize,
    pub calls_started: u64,
    pub calls_answered: u64,
    pub calls_ended: u64,
    pub requests: u64,
    pub responses: u64,
    pub retransmissions_absorbed: u64,
    pub drops: u64,
    pub local_replies: u64,
    pub media_timeouts: u64,
    pub registrations_absorbed: u64,
    pub session_refreshes: u64,
    pub session_timeouts: u64,
    pub auth_answered: u64,
    pub retransmission_cache_evictions: u64,
    pub auth_challenged: u64,
}

impl StatsSnapshot {
    pub(super) fn sum(all: &[Arc<ShardStatus>]) -> Self {
        let mut s = Self::default();
        for st in all {
            s.calls += st.calls.load(Ordering::Relaxed);
            s.transactions += st.transactions.load(Ordering::Relaxed);
            s.calls_started += st.calls_started.load(Ordering::Relaxed);
            s.calls_answered += st.calls_answered.load(Ordering::Relaxed);
            s.calls_ended += st.calls_ended.load(Ordering::Relaxed);
            s.requests += st.requests.load(Ordering::Relaxed);
            s.responses += st.responses.load(Ordering::Relaxed);
            s.retransmissions_absorbed += st.retransmissions_absorbed.load(Ordering::Relaxed);
            s.drops += st.drops.load(Ordering::Relaxed);
            s.local_replies += st.local_replies.load(Ordering::Relaxed);
            s.media_timeouts += st.media_timeouts.load(Ordering::Relaxed);
            s.registrations_absorbed += st.registrations_absorbed.load(Ordering::Relaxed);
            s.session_refreshes += st.session_refreshes.load(Ordering::Relaxed);
            s.session_timeouts += st.session_timeouts.load(Ordering::Relaxed);
            s.auth_answered += st.auth_answered.load(Ordering::Relaxed);
            s.retransmission_cache_evictions += st.retransmission_cache_evictions.load(Ordering::Relaxed);
            s.auth_challenged += st.auth_challenged.load(Ordering::Relaxed);
        }
        s
    }
}

/// Inputs handled before the shard looks at its timers and publishes its status again.
const BATCH: usize = 64;

pub(super) async fn run(
    mut engine: Engine,
    mut rx: mpsc::Receiver<ShardInput>,
    shared: Arc<Shared>,
    status: Arc<ShardStatus>,
    mut cc: CcDriver,
) {
    let shard = engine.config().shard;
    let epoch = clock();
    // Reused for every batch: the outputs of one wake-up, counted before they are sent.
    let mut outputs: Vec<Output> = Vec::with_capacity(BATCH * 4);
    loop {
        let deadline = engine.poll_timeout().map(|d| tokio::time::Instant::from_std(coalesce(epoch, d)));
        tokio::select! {
            input = rx.recv() => {
                let Some(input) = input else { break };
                handle(&mut engine, input);
                for _ in 1..BATCH {
                    match rx.try_recv() {
                        Ok(i) => handle(&mut engine, i),
                        Err(_) => break,
                    }
                }
            }
            () = sleep_until(deadline) => engine.handle_timeout(clock()),
        }
        // Timers may have come due while inputs were handled.
        engine.handle_timeout(clock());
        outputs.extend(std::iter::from_fn(|| engine.poll_output()));
        // Counters first, then the wire: a peer that got a reply and then reads /stats or
        // /metrics sees the state that reply came from (an ended call no longer counted).
        count_events(&outputs, &status);
        let idle = publish(&engine, &status);
        for o in outputs.drain(..) {
            match o {
                Output::Transmit { dest, bytes, tx } => shared.transmit(shard, dest, bytes, tx),
                Output::CallControl(req) => cc.dispatch(req),
                Output::Event(_) => {}
            }
        }
        status.idle.store(idle, Ordering::Release);
    }
}

/// Only batches with labelled events (an ended call, a drop, a local error reply) take the
/// (uncontended) lock, once; relayed messages never do.
fn count_events(outputs: &[Output], status: &ShardStatus) {
    let mut labelled = outputs.iter().filter_map(|o| match o {
        Output::Event(e @ (Event::CallEnded { .. } | Event::Dropped { .. } | Event::Refused { .. })) => Some(e),
        _ => None,
    });
    let Some(first) = labelled.next() else { return };
    if let Ok(mut l) = status.labelled.lock() {
        l.count(first);
        labelled.for_each(|e| l.count(e));
    }
}

fn handle(engine: &mut Engine, input: ShardInput) {
    let now = clock();
    match input {
        ShardInput::Message(msg, src) => engine.handle_message(now, msg, src),
        ShardInput::Unparseable(bytes, err, src) => engine.handle_unparseable(now, &bytes, err, src),
        ShardInput::TransportError(tx) => engine.handle_transport_error(now, tx),
        ShardInput::Resolved(tx, addr) => engine.handle_resolved(tx, addr),
        ShardInput::Drain => engine.set_draining(true),
        ShardInput::CcVerdict(call, verdict) => engine.handle_cc_verdict(now, call, verdict),
        // A question the API stopped waiting for (it answered 503) is not acted on: a teardown
        // done behind the operator's back would make their retry a 404.
        ShardInput::ListCalls(reply) if !reply.is_closed() => {
            let _ = reply.send(engine.calls_overview());
        }
        ShardInput::GetCall(call, reply) if !reply.is_closed() => {
            let _ = reply.send(engine.call_overview(call));
        }
        ShardInput::Teardown(call, reply) if !reply.is_closed() => {
            let _ = reply.send(engine.admin_teardown(now, call));
        }
        ShardInput::Teardown(call, _) => tracing::warn!(call, "admin teardown came after the API gave up: not done"),
        ShardInput::ListCalls(_) | ShardInput::GetCall(..) => {}
    }
}

/// The driver is the one place that reads the clock; the engine gets the time from here.
#[allow(clippy::disallowed_methods)]
fn clock() -> Instant {
    Instant::now()
}

/// Timers wake the shard on a 10 ms grid. Most of them only retire finished transactions
/// (RFC 3261 keeps each for up to 32 s); waking for each one separately cost sbcd a third of its
/// CPU per call at 200 calls/s (see docs/benchmarks/latest-run.md). Retransmissions start at
/// T1 = 500 ms, so 10 ms late changes nothing a peer can see.
const TIMER_GRID: std::time::Duration = std::time::Duration::from_millis(10);

fn coalesce(epoch: Instant, deadline: Instant) -> Instant {
    let since = deadline.saturating_duration_since(epoch);
    let grid = TIMER_GRID.as_nanos();
    let rest = since.as_nanos() % grid;
    if rest == 0 {
        return deadline;
    }
    deadline + std::time::Duration::from_nanos((grid - rest) as u64)
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Stores the engine's counters; true when it has no call and no busy transaction left.
fn publish(engine: &Engine, st: &ShardStatus) -> bool {
    let s = &engine.stats;
    let calls = engine.active_calls();
    st.calls.store(calls, Ordering::Relaxed);
    // Counting busy transactions walks the table; only a draining shard needs the number.
    let busy = if engine.is_draining() { engine.busy_transactions() } else { engine.active_transactions() };
    st.transactions.store(busy, Ordering::Relaxed);
    st.calls_started.store(s.calls_started, Ordering::Relaxed);
    st.calls_answered.store(s.calls_answered, Ordering::Relaxed);
    st.calls_ended.store(s.calls_ended, Ordering::Relaxed);
    st.requests.store(s.requests, Ordering::Relaxed);
    st.responses.store(s.responses, Ordering::Relaxed);
    st.retransmissions_absorbed.store(s.retransmissions_absorbed, Ordering::Relaxed);
    st.drops.store(s.drops, Ordering::Relaxed);
    st.local_replies.store(s.local_replies, Ordering::Relaxed);
    st.media_timeouts.store(s.media_timeouts, Ordering::Relaxed);
    st.registrations_absorbed.store(s.registrations_absorbed, Ordering::Relaxed);
    st.session_refreshes.store(s.session_refreshes, Ordering::Relaxed);
    st.session_timeouts.store(s.session_timeouts, Ordering::Relaxed);
    st.auth_answered.store(s.auth_answered, Ordering::Relaxed);
    st.retransmission_cache_evictions.store(s.retransmission_cache_evictions, Ordering::Relaxed);
    st.auth_challenged.store(s.auth_challenged, Ordering::Relaxed);
    for (a, v) in st.requests_by_method.iter().zip(s.requests_by_method) {
        a.store(v, Ordering::Relaxed);
    }
    for (a, v) in st.retransmissions_by_method.iter().zip(s.retransmissions_by_method) {
        a.store(v, Ordering::Relaxed);
    }
    calls == 0 && busy == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timer_wakeups_fall_on_a_10ms_grid_never_early() {
        let epoch = clock();
        let at = |ms: u64| epoch + Duration::from_millis(ms);
        assert_eq!(coalesce(epoch, at(3)), at(10));
        assert_eq!(coalesce(epoch, at(10)), at(10), "on the grid: unchanged");
        assert_eq!(coalesce(epoch, at(11)), at(20));
        assert_eq!(coalesce(epoch, epoch + Duration::from_micros(32_000_001)), at(32_010));
        // Deadlines already past (before the epoch) are not moved later than needed.
        assert!(coalesce(at(5), at(1)) <= at(5));
    }
}
