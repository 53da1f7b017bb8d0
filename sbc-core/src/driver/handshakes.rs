//! The gate in front of TLS handshakes: a handshake costs the server a key exchange and a
//! signature, so a source that opens connections and never finishes, or handshakes over and
//! over, could take the workers' CPU from signalling. An untrusted source (IPv6: its /64) may
//! begin `limits.tls_handshakes_per_source` a second (as many at once) and have at most
//! [`per_source_in_flight`](HandshakeGate::new) under way; at most `limits.tls_max_handshakes`
//! untrusted ones run at a time over all sources, so a few stalling sources cannot fill them
//! all. `admission.trusted` sources (the carriers' trunks) are neither rated nor capped here
//! (the TCP caps still hold). A connection refused is closed before its handshake (and
//! counted by the caller, `sbc_tls_handshakes_refused`). Time is passed in; memory is bounded:
//! at most [`MAX_SOURCES`] sources are tracked, and when they are all busy a new one waits.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::admission::{source_key, Bucket};

/// Sources tracked at most; when full, those quiet for [`QUIET`] are forgotten (at most once
/// a [`SWEEP_EVERY`]), and a new source is refused until room is made.
pub(crate) const MAX_SOURCES: usize = 65_536;
const QUIET: Duration = Duration::from_secs(10);
const SWEEP_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Source {
    bucket: Bucket,
    in_flight: usize,
}

#[derive(Debug)]
pub(crate) struct HandshakeGate {
    per_source: u32,
    max_in_flight: usize,
    per_source_in_flight: usize,
    in_flight: AtomicUsize,
    sources: DashMap<IpAddr, Source>,
    last_sweep: Mutex<Option<Instant>>,
}

/// A handshake under way; dropping it gives its places back.
#[derive(Debug)]
pub(crate) struct HandshakePermit {
    gate: Arc<HandshakeGate>,
    /// The source's key, for an untrusted one (counted in the caps).
    source: Option<IpAddr>,
}

impl Drop for HandshakePermit {
    fn drop(&mut self) {
        if let Some(key) = self.source {
            self.gate.in_flight.fetch_sub(1, Ordering::Relaxed);
            if let Some(mut s) = self.gate.sources.get_mut(&key) {
                s.in_flight = s.in_flight.saturating_sub(1);
            }
        }
    }
}

impl HandshakeGate {
    /// `per_source` handshakes a second per untrusted source (0: no rate), `max_in_flight`
    /// under way over the untrusted ones; one source may hold a 64th of those (at least 2).
    pub(crate) fn new(per_source: u32, max_in_flight: usize) -> Self {
        Self {
            per_source,
            max_in_flight,
            per_source_in_flight: (max_in_flight / 64).max(2),
            in_flight: AtomicUsize::new(0),
            sources: DashMap::new(),
            last_sweep: Mutex::new(None),
        }
    }

    /// A handshake from `ip` may begin at `now` (`trusted`: not rated, not capped here).
    pub(crate) fn begin(self: &Arc<Self>, ip: IpAddr, trusted: bool, now: Instant) -> Option<HandshakePermit> {
        if trusted {
            return Some(HandshakePermit { gate: self.clone(), source: None });
        }
        if self.in_flight.load(Ordering::Relaxed) >= self.max_in_flight {
            return None;
        }
        let key = source_key(ip);
        if self.sources.len() >= MAX_SOURCES && !self.sources.contains_key(&key) && !self.sweep(now) {
            return None;
        }
        let rate = self.per_source;
        let mut s = self.sources.entry(key).or_insert_with(|| Source { bucket: Bucket::full(now, rate), in_flight: 0 });
        if s.in_flight >= self.per_source_in_flight {
            return None;
        }
        if rate > 0 && !s.bucket.take(now, rate, rate) {
            return None;
        }
        s.bucket.last = s.bucket.last.max(now);
        s.in_flight += 1;
        drop(s);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(HandshakePermit { gate: self.clone(), source: Some(key) })
    }

    /// Forgets quiet sources (not more often than [`SWEEP_EVERY`]); whether there is room now.
    fn sweep(&self, now: Instant) -> bool {
        let mut last = self.last_sweep.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_none_or(|l| now.saturating_duration_since(l) >= SWEEP_EVERY) {
            *last = Some(now);
            self.sources.retain(|_, s| s.in_flight > 0 || now.saturating_duration_since(s.bucket.last) < QUIET);
        }
        self.sources.len() < MAX_SOURCES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn a_source_gets_its_rate_others_theirs_and_trusted_ones_any() {
        let gate = Arc::new(HandshakeGate::new(2, 1000));
        #[allow(clippy::disallowed_methods)] // a start for virtual time
        let t0 = Instant::now();
        let a = ip("198.51.100.1");
        let held: Vec<_> = (0..2).map(|_| gate.begin(a, false, t0).expect("within the burst")).collect();
        assert!(gate.begin(a, false, t0).is_none(), "over the source's rate");
        assert!(gate.begin(ip("198.51.100.2"), false, t0).is_some(), "another source has its own");
        assert!(gate.begin(a, true, t0).is_some(), "a trusted source is not rated");
        assert!(gate.begin(a, false, t0 + Duration::from_millis(500)).is_some(), "a token back after 1/rate");
        // IPv6: one /64 is one source.
        let (v6a, v6b) = (ip("2001:db8:1:2::1"), ip("2001:db8:1:2::ffff"));
        assert!(gate.begin(v6a, false, t0).is_some() && gate.begin(v6b, false, t0).is_some());
        assert!(gate.begin(ip("2001:db8:1:2::7"), false, t0).is_none());
        drop(held);
    }

    #[test]
    fn stalling_sources_cannot_fill_the_cap_and_trusted_ones_pass_it() {
        let gate = Arc::new(HandshakeGate::new(0, 128));
        #[allow(clippy::disallowed_methods)] // a start for virtual time
        let now = Instant::now();
        // One source holds at most 128/64 = 2 handshakes under way, whatever its rate.
        let one: Vec<_> = (0..2).map(|_| gate.begin(ip("192.0.2.1"), false, now).expect("its share")).collect();
        assert!(gate.begin(ip("192.0.2.1"), false, now).is_none());
        // 63 more stalling sources fill the rest.
        let many: Vec<_> =
            (2..=64).flat_map(|n| [0, 1].map(|_| gate.begin(ip(&format!("192.0.2.{n}")), false, now))).collect();
        assert!(many.iter().all(Option::is_some));
        assert!(gate.begin(ip("192.0.2.200"), false, now).is_none(), "the cap holds");
        assert!(gate.begin(ip("203.0.113.1"), true, now).is_some(), "a trusted trunk still gets in");
        drop(one);
        assert!(gate.begin(ip("192.0.2.200"), false, now).is_some(), "a finished handshake frees its place");
    }
}
