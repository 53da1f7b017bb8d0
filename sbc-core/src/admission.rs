//! Admission control: how many new requests (initial INVITEs, out-of-dialog requests) the SBC
//! takes, overall and per source address, decided before any profile or call work is done.
//! Token buckets with trust tiers: a trusted source (a carrier's trunk) has its own rate and is
//! never ignored; an untrusted one that keeps hammering after being refused is ignored for a
//! while (no replies: scanners back off and cost nothing). Shared by every shard; time is
//! passed in. Memory is bounded: at most `max_sources` sources are tracked. The engine asks
//! through its [`AdmissionControl`] port; the receivers ask [`Admission::ignores`] before they
//! parse.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use profiles::config::AdmissionSettings;
pub use sbc_engine::admission::{source_key, AdmissionControl, Admit, Unlimited};

/// Refusals counted over this window decide whether a source is ignored.
const FLAG_WINDOW: Duration = Duration::from_secs(10);
/// How long an ignored source stays ignored.
const FLAG_TIME: Duration = Duration::from_secs(60);
/// A source silent this long (and not ignored) is forgotten.
const IDLE: Duration = Duration::from_secs(60);

/// A token bucket: `rate` a second, up to `burst` at once (also the TLS handshake gate's,
/// `driver/handshakes.rs`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    tokens: f64,
    pub(crate) last: Instant,
}

impl Bucket {
    pub(crate) fn full(now: Instant, burst: u32) -> Self {
        Self { tokens: f64::from(burst.max(1)), last: now }
    }

    pub(crate) fn take(&mut self, now: Instant, rate: u32, burst: u32) -> bool {
        // Shards read the clock before they get here: time never moves back for the bucket.
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * f64::from(rate)).min(f64::from(burst.max(1)));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn give_back(&mut self, burst: u32) {
        self.tokens = (self.tokens + 1.0).min(f64::from(burst.max(1)));
    }
}

#[derive(Debug)]
struct Source {
    bucket: Bucket,
    refused: u32,
    window_start: Instant,
    ignored_until: Option<Instant>,
    last_seen: Instant,
}

/// Counters for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionStats {
    pub refused: u64,
    pub dropped: u64,
    pub untracked: u64,
    pub sources: usize,
    /// New calls refused because their source had `per_source_calls` already.
    pub calls_refused: u64,
}

#[derive(Debug)]
pub struct Admission {
    cfg: AdmissionSettings,
    global: Mutex<Option<Bucket>>,
    sources: DashMap<IpAddr, Source>,
    refused: std::sync::atomic::AtomicU64,
    dropped: std::sync::atomic::AtomicU64,
    /// Requests from new sources while the table was full (global limit only).
    untracked: std::sync::atomic::AtomicU64,
    /// Calls open per untrusted source (see `per_source_calls`).
    calls: DashMap<IpAddr, u32>,
    /// New calls refused because their source had its calls already.
    calls_refused: std::sync::atomic::AtomicU64,
}

impl Admission {
    pub fn new(cfg: AdmissionSettings) -> Self {
        Self {
            cfg,
            global: Mutex::new(None),
            sources: DashMap::new(),
            refused: Default::default(),
            dropped: Default::default(),
            untracked: Default::default(),
            calls: DashMap::new(),
            calls_refused: Default::default(),
        }
    }

    /// Whether `ip` may start one more call (counted as refused if not).
    pub fn may_start_call(&self, ip: IpAddr) -> bool {
        let cap = self.cfg.per_source_calls;
        if cap == 0 || self.cfg.is_trusted(ip) {
            return true;
        }
        let open = self.calls.get(&source_key(ip)).map_or(0, |n| *n);
        if open >= cap {
            self.calls_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return false;
        }
        true
    }

    /// A call from `ip` now exists; [`Self::call_ended`] must follow.
    pub fn call_started(&self, ip: IpAddr) {
        if self.cfg.per_source_calls > 0 && !self.cfg.is_trusted(ip) {
            *self.calls.entry(source_key(ip)).or_insert(0) += 1;
        }
    }

    pub fn call_ended(&self, ip: IpAddr) {
        if self.cfg.per_source_calls > 0 && !self.cfg.is_trusted(ip) {
            let key = source_key(ip);
            if let Some(mut n) = self.calls.get_mut(&key) {
                *n = n.saturating_sub(1);
            }
            self.calls.remove_if(&key, |_, n| *n == 0);
        }
    }

    /// No limits at all (engine tests and benchmarks).
    pub fn unlimited() -> Self {
        Self::new(AdmissionSettings::unlimited())
    }

    /// Whether a new request from `ip` is taken now.
    pub fn admit(&self, now: Instant, ip: IpAddr) -> Admit {
        use std::sync::atomic::Ordering::Relaxed;
        let trusted = self.cfg.is_trusted(ip);
        let verdict = self.decide(now, ip, trusted);
        match verdict {
            Admit::Refuse => self.refused.fetch_add(1, Relaxed),
            Admit::Drop => self.dropped.fetch_add(1, Relaxed),
            Admit::Yes => 0,
        };
        verdict
    }

    fn decide(&self, now: Instant, ip: IpAddr, trusted: bool) -> Admit {
        let (rate, burst) = if trusted {
            (self.cfg.trusted_cps, self.cfg.trusted_cps)
        } else {
            (self.cfg.per_source_cps, self.cfg.per_source_burst)
        };
        if rate == 0 {
            return self.take_global(now);
        }
        let key = source_key(ip);
        // A full table is not swept here (that is the driver's, every 10 s): a flood of new
        // addresses must not cost a walk of the table per packet. New sources then get the
        // global limit only, counted.
        if !self.sources.contains_key(&key) && self.sources.len() >= self.cfg.max_sources {
            self.untracked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return self.take_global(now);
        }
        let mut s = self.sources.entry(key).or_insert_with(|| Source {
            bucket: Bucket::full(now, burst),
            refused: 0,
            window_start: now,
            ignored_until: None,
            last_seen: now,
        });
        s.last_seen = s.last_seen.max(now);
        // An ignored source costs nothing more, and does not touch the global budget.
        if let Some(until) = s.ignored_until {
            if now < until {
                return Admit::Drop;
            }
            s.ignored_until = None;
            s.refused = 0;
        }
        if !s.bucket.take(now, rate, burst) {
            return Self::refused(&mut s, now, trusted, self.cfg.drop_after);
        }
        // (Source entry, then the global lock: the one order everywhere.)
        let verdict = self.take_global(now);
        if verdict != Admit::Yes {
            // The SBC's limit, not this source's: it gets its token back.
            s.bucket.give_back(burst);
        }
        verdict
    }

    fn refused(s: &mut Source, now: Instant, trusted: bool, drop_after: u32) -> Admit {
        if now.saturating_duration_since(s.window_start) > FLAG_WINDOW {
            s.window_start = now;
            s.refused = 0;
        }
        s.refused += 1;
        if !trusted && drop_after > 0 && s.refused >= drop_after {
            s.ignored_until = Some(now + FLAG_TIME);
            tracing::warn!(refusals = s.refused, "source over its rate keeps sending; ignored for 60 s");
        }
        Admit::Refuse
    }

    fn take_global(&self, now: Instant) -> Admit {
        if self.cfg.max_cps == 0 {
            return Admit::Yes;
        }
        let mut g = self.global.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let b = g.get_or_insert_with(|| Bucket::full(now, self.cfg.burst));
        if b.take(now, self.cfg.max_cps, self.cfg.burst) {
            Admit::Yes
        } else {
            Admit::Refuse
        }
    }

    /// Whether new requests from `ip` are ignored now, counted as ignored if so. The receivers
    /// ask before parsing (see `driver/shed.rs`), so a flood from an ignored source costs
    /// one read of the table per datagram, not a parse and a trip through a shard's queue.
    pub fn ignores(&self, now: Instant, ip: IpAddr) -> bool {
        let ignored =
            self.sources.get(&source_key(ip)).is_some_and(|s| s.ignored_until.is_some_and(|until| now < until));
        if ignored {
            self.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        ignored
    }

    /// Forgets sources that have gone quiet (the driver calls this periodically).
    pub fn sweep(&self, now: Instant) {
        self.sources.retain(|_, s| {
            s.ignored_until.is_some_and(|u| now < u) || now.saturating_duration_since(s.last_seen) < IDLE
        });
    }

    pub fn stats(&self) -> AdmissionStats {
        use std::sync::atomic::Ordering::Relaxed;
        AdmissionStats {
            refused: self.refused.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            untracked: self.untracked.load(Relaxed),
            sources: self.sources.len(),
            calls_refused: self.calls_refused.load(Relaxed),
        }
    }
}

impl AdmissionControl for Admission {
    fn admit(&self, now: Instant, source: IpAddr) -> Admit {
        Self::admit(self, now, source)
    }
    fn may_start_call(&self, source: IpAddr) -> bool {
        Self::may_start_call(self, source)
    }
    fn call_started(&self, source: IpAddr) {
        Self::call_started(self, source);
    }
    fn call_ended(&self, source: IpAddr) {
        Self::call_ended(self, source);
    }
    fn trusts(&self, source: IpAddr) -> bool {
        self.cfg.is_trusted(source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use profiles::config::Cidr;

    fn settings() -> AdmissionSettings {
        AdmissionSettings {
            max_cps: 100,
            burst: 100,
            per_source_cps: 10,
            per_source_burst: 10,
            trusted: vec![Cidr::parse("10.0.0.0/8").expect("cidr")],
            trusted_cps: 0,
            drop_after: 20,
            max_sources: 3,
            per_source_calls: 2,
        }
    }

    /// The engine's port reaches the same buckets and counts.
    #[test]
    fn the_engine_port_decides_as_the_admission_does() {
        let a = Admission::new(settings());
        let port: &dyn AdmissionControl = &a;
        #[allow(clippy::disallowed_methods)] // an origin for virtual time
        let t0 = Instant::now();
        let src = ip("192.0.2.9");
        let decisions: Vec<Admit> = (0..11).map(|_| port.admit(t0, src)).collect();
        assert_eq!(decisions[..10], [Admit::Yes; 10]);
        assert_eq!(decisions[10], Admit::Refuse);
        port.call_started(src);
        port.call_started(src);
        assert!(!port.may_start_call(src) && !a.may_start_call(src));
        port.call_ended(src);
        assert!(a.may_start_call(src));
    }

    #[test]
    fn a_source_holds_at_most_its_calls_and_trusted_ones_any() {
        let a = Admission::new(settings());
        let (src, v6, trunk) = (ip("192.0.2.7"), ip("2001:db8:1:2::5"), ip("10.1.1.1"));
        for _ in 0..2 {
            assert!(a.may_start_call(src));
            a.call_started(src);
        }
        assert!(!a.may_start_call(src));
        assert!(a.may_start_call(ip("192.0.2.8")), "another source has its own");
        a.call_ended(src);
        assert!(a.may_start_call(src), "an ended call frees its place");
        // IPv6 by /64: another address of the prefix is the same source.
        a.call_started(v6);
        a.call_started(ip("2001:db8:1:2::99"));
        assert!(!a.may_start_call(ip("2001:db8:1:2:ffff::1")));
        for _ in 0..5 {
            assert!(a.may_start_call(trunk));
            a.call_started(trunk);
        }
        assert_eq!(a.stats().calls_refused, 2);
    }

    #[test]
    fn an_ignored_source_is_known_without_charging_it() {
        #[allow(clippy::disallowed_methods)] // a fixed origin for virtual time
        let t0 = Instant::now();
        let a = Admission::new(settings());
        let src = ip("192.0.2.7");
        assert!(!a.ignores(t0, src));
        for _ in 0..30 {
            a.admit(t0, src);
        }
        assert!(a.ignores(t0, src));
        assert!(!a.ignores(t0, ip("192.0.2.8")));
        assert!(!a.ignores(t0 + FLAG_TIME, src), "the minute is over");
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn a_source_gets_its_rate_then_503_then_is_ignored() {
        #[allow(clippy::disallowed_methods)] // a fixed origin for virtual time
        let t0 = Instant::now();
        let a = Admission::new(settings());
        let src = ip("192.0.2.1");
        assert!((0..10).all(|_| a.admit(t0, src) == Admit::Yes), "the burst");
        assert_eq!(a.admit(t0, src), Admit::Refuse);
        // Refilled at 10/s: one more after 100 ms.
        assert_eq!(a.admit(t0 + Duration::from_millis(100), src), Admit::Yes);
        // Hammering on: refused until drop_after (20) refusals in 10 s (one was above), then
        // ignored for a minute.
        let t1 = t0 + Duration::from_millis(100);
        let verdicts: Vec<Admit> = (0..25).map(|_| a.admit(t1, src)).collect();
        assert_eq!(verdicts.iter().filter(|v| **v == Admit::Refuse).count(), 19);
        assert_eq!(verdicts.iter().filter(|v| **v == Admit::Drop).count(), 6);
        assert_eq!(a.admit(t1 + Duration::from_secs(59), src), Admit::Drop);
        assert_eq!(a.admit(t1 + Duration::from_secs(61), src), Admit::Yes, "forgiven after 60 s");
        // Another source is not affected.
        assert_eq!(a.admit(t1, ip("192.0.2.2")), Admit::Yes);
        assert_eq!(a.stats().dropped, 7);
    }

    #[test]
    fn trusted_sources_pass_the_per_source_limit_and_the_global_one_holds() {
        #[allow(clippy::disallowed_methods)] // a fixed origin for virtual time
        let t0 = Instant::now();
        let a = Admission::new(settings());
        let trunk = ip("10.1.2.3");
        // 100 in the global burst, all from the trunk (no per-source limit for it).
        assert!((0..100).all(|_| a.admit(t0, trunk) == Admit::Yes));
        assert_eq!(a.admit(t0, trunk), Admit::Refuse, "the box's own limit still holds");
        // A trusted source is never ignored, however often refused.
        assert!((0..500).all(|_| a.admit(t0, trunk) != Admit::Drop));
    }

    #[test]
    fn tracked_sources_are_bounded() {
        #[allow(clippy::disallowed_methods)] // a fixed origin for virtual time
        let t0 = Instant::now();
        let a = Admission::new(settings());
        for i in 1..=3 {
            assert_eq!(a.admit(t0, ip(&format!("192.0.2.{i}"))), Admit::Yes);
        }
        // Table full: a new source gets the global limit only (no sweep per packet).
        assert_eq!(a.admit(t0, ip("192.0.2.99")), Admit::Yes);
        assert_eq!((a.stats().sources, a.stats().untracked), (3, 1));
        // The driver's sweep forgets quiet sources, and room comes back.
        a.sweep(t0 + IDLE + Duration::from_secs(1));
        assert_eq!(a.admit(t0 + IDLE + Duration::from_secs(1), ip("192.0.2.99")), Admit::Yes);
        assert_eq!(a.stats().sources, 1);
        // IPv6 sources count by /64.
        for i in 1..=20 {
            a.admit(t0 + IDLE + Duration::from_secs(1), ip(&format!("2001:db8:1:2::{i:x}")));
        }
        assert_eq!(a.stats().sources, 2);
    }
}

#[cfg(test)]
mod more_tests {
    use super::*;

    #[test]
    fn a_global_refusal_does_not_cost_the_source_its_token() {
        #[allow(clippy::disallowed_methods)] // a fixed origin for virtual time
        let t0 = Instant::now();
        let a = Admission::new(AdmissionSettings {
            max_cps: 1,
            burst: 1,
            per_source_cps: 2,
            per_source_burst: 2,
            drop_after: 3,
            ..AdmissionSettings::default()
        });
        let src: IpAddr = "192.0.2.1".parse().expect("ip");
        assert_eq!(a.admit(t0, src), Admit::Yes);
        // The box is at its limit: refused, but never counted against the source.
        for _ in 0..10 {
            assert_eq!(a.admit(t0, src), Admit::Refuse);
        }
        assert_eq!(a.stats().dropped, 0);
        // A second later the global bucket has one token, and the source still has one.
        assert_eq!(a.admit(t0 + Duration::from_secs(1), src), Admit::Yes);
    }
}
