//! Next hops' health, shared by every shard (the engine's [`NextHopHealth`] port): each
//! destination's probe results counted into up and down (`routing.health.down_after` /
//! `up_after`), and a blacklist of destinations whose INVITE timed out, could not be sent or
//! got 503 with `Retry-After`. Time is passed in. Memory is bounded: at most [`MAX_HOPS`]
//! destinations are kept (blacklistings past that are counted, not kept).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use profiles::config::HealthSettings;
pub use sbc_engine::health::{HopKey, NextHopHealth};

/// Destinations kept.
const MAX_HOPS: usize = 4096;

#[derive(Debug, Clone, Default)]
struct HopState {
    name: Option<String>,
    /// Probed: up (`Some(true)`) or down; never probed: `None` (usable).
    up: Option<bool>,
    /// Probe outcomes in a row that disagree with `up`.
    streak: u32,
    blacklisted_until: Option<Instant>,
    last_probe: Option<Instant>,
    changed: Option<Instant>,
    answered: u64,
    unanswered: u64,
}

/// A destination as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopView {
    pub key: HopKey,
    pub name: Option<String>,
    /// `up`, `down`, or `unknown` (not probed).
    pub state: &'static str,
    /// Seconds of blacklisting left (0: not blacklisted).
    pub blacklisted_for_s: u64,
    pub probes_answered: u64,
    pub probes_unanswered: u64,
    /// Seconds since the last probe's outcome and since the state last changed.
    pub last_probe_s: Option<u64>,
    pub since_s: Option<u64>,
}

/// What health did, for metrics.
#[derive(Debug, Default)]
pub struct HealthCounters {
    pub blacklisted: AtomicU64,
    pub went_down: AtomicU64,
    pub came_up: AtomicU64,
}

#[derive(Debug)]
pub struct HealthTable {
    settings: HealthSettings,
    hops: DashMap<HopKey, HopState>,
    /// Nothing recorded yet: every hop usable without a look at the map.
    empty: AtomicBool,
    pub counters: HealthCounters,
}

impl HealthTable {
    pub fn new(settings: HealthSettings) -> Self {
        Self { settings, hops: DashMap::new(), empty: AtomicBool::new(true), counters: HealthCounters::default() }
    }

    /// Every destination known, for `/health`, `/next-hops` and metrics.
    pub fn view(&self, now: Instant) -> Vec<HopView> {
        let secs = |t: Option<Instant>| t.map(|t| now.saturating_duration_since(t).as_secs());
        let mut all: Vec<HopView> = self
            .hops
            .iter()
            .map(|e| {
                let s = e.value();
                HopView {
                    key: *e.key(),
                    name: s.name.clone(),
                    state: match s.up {
                        Some(true) => "up",
                        Some(false) if s.last_probe.is_some_and(|at| now < at + self.stale_after()) => "down",
                        // Not probed (or no longer: a verdict that went stale).
                        _ => "unknown",
                    },
                    blacklisted_for_s: s.blacklisted_until.map_or(0, |u| u.saturating_duration_since(now).as_secs()),
                    probes_answered: s.answered,
                    probes_unanswered: s.unanswered,
                    last_probe_s: secs(s.last_probe),
                    since_s: secs(s.changed),
                }
            })
            .collect();
        all.sort_by_key(|v| (v.key.addr, v.key.transport.to_string()));
        all
    }

    /// How long a probe's verdict holds without another probe.
    fn stale_after(&self) -> Duration {
        self.settings.probe_interval.map_or(Duration::ZERO, |i| i * 3)
    }

    /// `f` on `hop`'s state, made if there is room (made by dropping what is stale when full).
    fn with(&self, hop: HopKey, now: Instant, f: impl FnOnce(&mut HopState)) -> bool {
        if !self.hops.contains_key(&hop) && self.hops.len() >= MAX_HOPS {
            let stale = self.stale_after();
            self.hops.retain(|_, s| {
                s.blacklisted_until.is_some_and(|u| now < u) || s.last_probe.is_some_and(|at| now < at + stale)
            });
            if self.hops.len() >= MAX_HOPS {
                return false;
            }
        }
        f(&mut self.hops.entry(hop).or_default());
        self.empty.store(false, Ordering::Relaxed);
        true
    }
}

impl NextHopHealth for HealthTable {
    fn usable(&self, hop: HopKey, now: Instant) -> bool {
        if self.empty.load(Ordering::Relaxed) {
            return true;
        }
        self.hops.get(&hop).is_none_or(|s| {
            // A down hop no longer probed (gone from the configuration) does not stay down.
            let down = s.up == Some(false) && s.last_probe.is_some_and(|at| now < at + self.stale_after());
            !down && s.blacklisted_until.is_none_or(|u| now >= u)
        })
    }

    fn failed(&self, hop: HopKey, now: Instant, retry_after: Option<Duration>) {
        // `blacklist_s: 0` turns the blacklist off, Retry-After included.
        if self.settings.blacklist.is_zero() {
            return;
        }
        let time = retry_after.unwrap_or(self.settings.blacklist);
        self.counters.blacklisted.fetch_add(1, Ordering::Relaxed);
        let kept = self.with(hop, now, |s| s.blacklisted_until = Some(now + time));
        tracing::warn!(to = %hop.addr, transport = %hop.transport, seconds = time.as_secs(), kept, "next hop blacklisted");
    }

    fn probed(&self, hop: HopKey, name: Option<&str>, answered: bool, now: Instant) {
        let (down_after, up_after) = (self.settings.down_after, self.settings.up_after);
        let mut change = None;
        self.with(hop, now, |s| {
            if let Some(n) = name {
                s.name = Some(n.to_string());
            }
            s.last_probe = Some(now);
            if answered {
                s.answered += 1;
            } else {
                s.unanswered += 1;
            }
            match s.up {
                // The first outcome decides at once; a down one needs its streak.
                None if answered => {
                    (s.up, s.changed) = (Some(true), Some(now));
                }
                None => {
                    s.streak += 1;
                    if s.streak >= down_after {
                        (s.up, s.changed, s.streak, change) = (Some(false), Some(now), 0, Some(false));
                    }
                }
                Some(up) if up == answered => s.streak = 0,
                Some(up) => {
                    s.streak += 1;
                    let needed = if up { down_after } else { up_after };
                    if s.streak >= needed {
                        (s.up, s.changed, s.streak, change) = (Some(answered), Some(now), 0, Some(answered));
                    }
                }
            }
        });
        match change {
            Some(true) => {
                self.counters.came_up.fetch_add(1, Ordering::Relaxed);
                tracing::info!(to = %hop.addr, transport = %hop.transport, name, "next hop answers again: up");
            }
            Some(false) => {
                self.counters.went_down.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(to = %hop.addr, transport = %hop.transport, name, "next hop does not answer its probes: down");
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sbc_engine::b2bua::Transport;

    fn hop() -> HopKey {
        HopKey { transport: Transport::Udp, addr: "192.0.2.7:5060".parse().expect("addr") }
    }

    fn table() -> HealthTable {
        HealthTable::new(HealthSettings {
            probe_interval: Some(Duration::from_secs(30)),
            down_after: 3,
            up_after: 2,
            blacklist: Duration::from_secs(60),
        })
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // a start for virtual time
    fn down_after_three_misses_up_after_two_answers() {
        let (t, now) = (table(), Instant::now());
        assert!(t.usable(hop(), now), "unknown hops are usable");
        for n in 0..3 {
            assert!(t.usable(hop(), now), "still usable after {n} misses");
            t.probed(hop(), Some("gw.example"), false, now);
        }
        assert!(!t.usable(hop(), now));
        assert_eq!(t.view(now)[0].state, "down");
        t.probed(hop(), None, true, now);
        assert!(!t.usable(hop(), now), "one answer is not enough");
        t.probed(hop(), None, true, now);
        assert!(t.usable(hop(), now));
        let v = &t.view(now)[0];
        assert_eq!(
            (v.state, v.name.as_deref(), v.probes_answered, v.probes_unanswered),
            ("up", Some("gw.example"), 2, 3)
        );
        assert_eq!((t.counters.went_down.load(Ordering::Relaxed), t.counters.came_up.load(Ordering::Relaxed)), (1, 1));
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // a start for virtual time
    fn a_blacklisting_runs_out() {
        let (t, now) = (table(), Instant::now());
        t.failed(hop(), now, None);
        assert!(!t.usable(hop(), now + Duration::from_secs(59)));
        assert!(t.usable(hop(), now + Duration::from_secs(60)));
        t.failed(hop(), now, Some(Duration::from_secs(5)));
        assert!(t.usable(hop(), now + Duration::from_secs(5)), "Retry-After decides");
        assert_eq!(t.view(now)[0].blacklisted_for_s, 5);

        let off = HealthTable::new(HealthSettings { blacklist: Duration::ZERO, ..t.settings });
        off.failed(hop(), now, Some(Duration::from_secs(120)));
        assert!(off.usable(hop(), now), "blacklist_s: 0 is off, Retry-After included");
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // a start for virtual time
    fn a_down_verdict_no_longer_probed_goes_stale() {
        let (t, now) = (table(), Instant::now());
        for _ in 0..3 {
            t.probed(hop(), None, false, now);
        }
        assert!(!t.usable(hop(), now + Duration::from_secs(89)));
        assert!(t.usable(hop(), now + Duration::from_secs(90)), "three intervals without a probe");
        assert_eq!(t.view(now + Duration::from_secs(90))[0].state, "unknown");
    }
}
