//! One shard: a task that owns an engine, feeds it inputs and the time, and sends its outputs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::mpsc;

use super::capture::ShardCapture;
use super::hooks::CcDriver;
use super::media::ShardMedia;
use super::registrations::Lookups;
use super::{ShardInput, Shared};
use crate::b2bua::{CallOverview, Counter, Engine, Event, Output, BY_METHOD};
use crate::sip::msg::Method;

/// What a shard publishes for the rest of the process (shutdown, stats).
#[derive(Debug, Default)]
pub struct ShardStatus {
    pub calls: AtomicUsize,
    pub transactions: AtomicUsize,
    /// Media port pairs the shard has lent out.
    pub media_ports: AtomicUsize,
    /// The engine's counters, indexed by [`Counter`].
    counts: [AtomicU64; Counter::COUNT],
    /// Per-method breakdowns, indexed by [`Counter::method_slot`].
    by_method: [[AtomicU64; Method::COUNT]; BY_METHOD],
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
#[derive(Debug, Clone, Copy)]
pub struct StatsSnapshot {
    pub calls: usize,
    pub transactions: usize,
    pub media_ports: usize,
    counts: [u64; Counter::COUNT],
    by_method: [[u64; Method::COUNT]; BY_METHOD],
}

impl StatsSnapshot {
    pub fn get(&self, c: Counter) -> u64 {
        self.counts[c as usize]
    }

    /// The per-method breakdown of `c` (index: [`Method::index`]); zeros if it keeps none.
    pub fn by_method(&self, c: Counter) -> [u64; Method::COUNT] {
        c.method_slot().map_or([0; Method::COUNT], |s| self.by_method[s])
    }

    pub(super) fn sum(all: &[Arc<ShardStatus>]) -> Self {
        let mut s = Self {
            calls: 0,
            transactions: 0,
            media_ports: 0,
            counts: [0; Counter::COUNT],
            by_method: [[0; Method::COUNT]; BY_METHOD],
        };
        let add = |sum: &mut [u64], from: &[AtomicU64]| {
            sum.iter_mut().zip(from).for_each(|(s, a)| *s += a.load(Ordering::Relaxed))
        };
        for st in all {
            s.calls += st.calls.load(Ordering::Relaxed);
            s.transactions += st.transactions.load(Ordering::Relaxed);
            s.media_ports += st.media_ports.load(Ordering::Relaxed);
            add(&mut s.counts, &st.counts);
            for (sum, from) in s.by_method.iter_mut().zip(&st.by_method) {
                add(sum, from);
            }
        }
        s
    }
}

/// Inputs handled before the shard looks at its timers and publishes its status again.
const BATCH: usize = 64;

/// What a shard drives besides its engine.
pub(super) struct Parts {
    pub(super) cc: CcDriver,
    pub(super) media: Option<ShardMedia>,
    pub(super) lookups: Lookups,
    pub(super) capture: ShardCapture,
}

pub(super) async fn run(
    mut engine: Engine,
    mut rx: mpsc::Receiver<ShardInput>,
    shared: Arc<Shared>,
    status: Arc<ShardStatus>,
    parts: Parts,
) {
    let Parts { mut cc, mut media, lookups, mut capture } = parts;
    engine.start_probes(clock());
    let shard = engine.config().shard;
    let epoch = clock();
    // Reused for every batch: the outputs of one wake-up, counted before they are sent.
    let mut outputs: Vec<Output> = Vec::with_capacity(BATCH * 4);
    // Answers of the shard's own work (media probes, failed opens, lookups), handed back at once.
    let mut answers: Vec<ShardAnswer> = Vec::new();
    loop {
        let deadline = engine.poll_timeout().map(|d| tokio::time::Instant::from_std(coalesce(epoch, d)));
        tokio::select! {
            input = rx.recv() => {
                let Some(input) = input else { break };
                handle(&mut engine, &shared, media.as_ref(), &mut capture, input);
                for _ in 1..BATCH {
                    match rx.try_recv() {
                        Ok(i) => handle(&mut engine, &shared, media.as_ref(), &mut capture, i),
                        Err(_) => break,
                    }
                }
            }
            Some((iface, port)) = released(&mut media) => engine.handle_media_released(iface, port),
            () = sleep_until(deadline) => engine.handle_timeout(clock()),
        }
        while let Some((iface, port)) = media.as_mut().and_then(ShardMedia::try_released) {
            engine.handle_media_released(iface, port);
        }
        loop {
            // Timers may have come due while inputs were handled.
            engine.handle_timeout(clock());
            outputs.extend(std::iter::from_fn(|| engine.poll_output()));
            // Counters first, then the wire: a peer that got a reply and then reads /stats or
            // /metrics sees the state that reply came from (an ended call no longer counted).
            count_events(&outputs, &status);
            let idle = publish(&engine, &status);
            capture.before_sends(&outputs);
            for o in outputs.drain(..) {
                match o {
                    Output::Transmit { dest, bytes, tx } => {
                        let correlation = capture.sent(&dest, &bytes);
                        shared.transmit(shard, dest, bytes, tx, correlation)
                    }
                    Output::CallControl(req) => cc.dispatch(req),
                    Output::Media(cmd) => {
                        if let Some((stream, busy)) = media.as_mut().and_then(|m| m.run(cmd)) {
                            answers.push(ShardAnswer::Failed(stream, busy));
                        }
                    }
                    Output::MediaProbe { call, streams } => {
                        let last = media.as_ref().and_then(|m| m.last_activity(&streams));
                        answers.push(ShardAnswer::Activity(call, last));
                    }
                    // Cluster mode's lookups come back through the shard's input channel.
                    Output::RegistrationLookup { ticket, query } => {
                        if let Some(view) = lookups.ask(ticket, query, &shared.shards[usize::from(shard)]) {
                            answers.push(ShardAnswer::Registrations(ticket, view));
                        }
                    }
                    Output::Resolve { ticket, queries } => shared.resolve(shard, ticket, queries),
                    Output::Event(_) => {}
                }
            }
            capture.after_sends();
            status.idle.store(idle, Ordering::Release);
            if answers.is_empty() {
                break;
            }
            for a in answers.drain(..) {
                match a {
                    ShardAnswer::Failed(stream, busy) => engine.handle_media_error(clock(), stream, busy),
                    ShardAnswer::Activity(call, last) => engine.handle_media_activity(clock(), call, last),
                    ShardAnswer::Registrations(ticket, view) => engine.handle_registrations(clock(), ticket, view),
                }
            }
        }
    }
}

/// What the shard's own work reports back to its engine.
enum ShardAnswer {
    /// A stream that did not open, and the pair that would not bind.
    Failed(rtp_relay::forwarder::StreamId, Option<(usize, u16)>),
    Activity(crate::b2bua::CallHandle, Option<Instant>),
    Registrations(crate::b2bua::RegTicket, regcache::RegView),
}

/// The next pair the forwarder gave back; never, without media.
async fn released(media: &mut Option<ShardMedia>) -> Option<(usize, u16)> {
    match media {
        Some(m) => m.released().await,
        None => std::future::pending().await,
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

fn handle(
    engine: &mut Engine,
    shared: &Shared,
    media: Option<&ShardMedia>,
    capture: &mut ShardCapture,
    input: ShardInput,
) {
    let now = clock();
    match input {
        ShardInput::Message(msg, src) => {
            let opens = msg.to_tag().is_none() && matches!(msg.method(), Some(Method::Invite | Method::Subscribe));
            capture.received(msg.bytes(), msg.call_id(), opens, &src);
            engine.handle_message(now, msg, src)
        }
        ShardInput::MapReferTo(msg, src, own) => {
            let mapped = engine.mapped_refer_to(&msg);
            shared.enqueue(own, ShardInput::ReferMapped(msg, src, mapped));
        }
        ShardInput::ReferMapped(msg, src, refer_to) => {
            capture.received(msg.bytes(), msg.call_id(), false, &src);
            engine.handle_refer_mapped_elsewhere(now, msg, src, refer_to)
        }
        ShardInput::Unparseable(bytes, err, src) => {
            capture.received(&bytes, super::capture::call_id_of(&bytes), false, &src);
            engine.handle_unparseable(now, &bytes, err, src)
        }
        ShardInput::TransportError(tx) => engine.handle_transport_error(now, tx),
        ShardInput::Resolved(tx, addr) => engine.handle_resolved(tx, addr),
        ShardInput::Drain => engine.set_draining(true),
        ShardInput::CcVerdict(call, verdict) => engine.handle_cc_verdict(now, call, verdict),
        ShardInput::Registrations(ticket, view) => engine.handle_registrations(now, ticket, view),
        ShardInput::Targets(ticket, answers) => engine.handle_targets(now, ticket, answers),
        // A question the API stopped waiting for (it answered 503) is not acted on: a teardown
        // done behind the operator's back would make their retry a 404.
        ShardInput::ListCalls(reply) if !reply.is_closed() => {
            let mut calls = engine.calls_overview();
            calls.iter_mut().for_each(|c| with_media_counters(c, media));
            let _ = reply.send(calls);
        }
        ShardInput::GetCall(call, reply) if !reply.is_closed() => {
            let mut call = engine.call_overview(call);
            if let Some(c) = call.as_mut() {
                with_media_counters(c, media);
            }
            let _ = reply.send(call);
        }
        ShardInput::GetTrace(call, reply) if !reply.is_closed() => {
            let _ = reply.send(capture.trace(call));
        }
        ShardInput::Teardown(call, reply) if !reply.is_closed() => {
            let _ = reply.send(engine.admin_teardown(now, call));
        }
        ShardInput::Teardown(call, _) => {
            tracing::warn!(call = call.get(), "admin teardown came after the API gave up: not done")
        }
        ShardInput::ListCalls(_) | ShardInput::GetCall(..) | ShardInput::GetTrace(..) => {}
    }
}

/// The relay's counters of an anchored call, which the engine does not hold.
fn with_media_counters(call: &mut CallOverview, media: Option<&ShardMedia>) {
    if let (Some(streams), Some(m)) = (&call.stream_ids, media) {
        call.media = Some(m.totals(streams));
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
    st.media_ports.store(engine.media_ports_in_use(), Ordering::Relaxed);
    let store = |to: &[AtomicU64], from: &[u64]| to.iter().zip(from).for_each(|(a, v)| a.store(*v, Ordering::Relaxed));
    for d in &Counter::DEFS {
        st.counts[d.counter as usize].store(engine.counter(d.counter), Ordering::Relaxed);
        if let Some(slot) = d.counter.method_slot() {
            store(&st.by_method[slot], &s.by_method(d.counter));
        }
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
