//! The gate in front of TLS handshakes: a handshake costs the server a key exchange and a
//! signature, so a source that opens connections and never finishes, or handshakes over and
//! over, could take the workers' CPU from signalling. Each untrusted source (IPv6: its /64)
//! may begin `limits.tls_handshakes_per_source` a second (as many at once), and at most
//! `limits.tls_max_handshakes` run at a time over all sources; a connection over either is
//! closed before its handshake (and counted by the caller, `sbc_tls_handshakes_refused`).
//! Time is passed in; memory is bounded.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::admission::{source_key, Bucket};

/// Sources tracked at most; beyond, those quiet for [`QUIET`] are forgotten first.
const MAX_SOURCES: usize = 65_536;
const QUIET: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub(crate) struct HandshakeGate {
    per_source: u32,
    max_in_flight: usize,
    in_flight: AtomicUsize,
    sources: DashMap<IpAddr, Bucket>,
}

/// A handshake under way; dropping it ends its place in the overall cap.
#[derive(Debug)]
pub(crate) struct HandshakePermit(Arc<HandshakeGate>);

impl Drop for HandshakePermit {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl HandshakeGate {
    pub(crate) fn new(per_source: u32, max_in_flight: usize) -> Self {
        Self { per_source, max_in_flight, in_flight: AtomicUsize::new(0), sources: DashMap::new() }
    }

    /// A handshake from `ip` may begin at `now` (`trusted`: exempt from the per-source rate).
    pub(crate) fn begin(self: &Arc<Self>, ip: IpAddr, trusted: bool, now: Instant) -> Option<HandshakePermit> {
        if self.in_flight.load(Ordering::Relaxed) >= self.max_in_flight {
            return None;
        }
        if self.per_source > 0 && !trusted {
            if self.sources.len() >= MAX_SOURCES {
                self.sources.retain(|_, b| now.saturating_duration_since(b.last) < QUIET);
            }
            let rate = self.per_source;
            let mut bucket = self.sources.entry(source_key(ip)).or_insert_with(|| Bucket::full(now, rate));
            if !bucket.take(now, rate, rate) {
                return None;
            }
        }
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(HandshakePermit(self.clone()))
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
        let gate = Arc::new(HandshakeGate::new(2, 100));
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
    fn handshakes_in_flight_are_capped_and_a_finished_one_frees_its_place() {
        let gate = Arc::new(HandshakeGate::new(0, 2));
        #[allow(clippy::disallowed_methods)] // a start for virtual time
        let now = Instant::now();
        let one = gate.begin(ip("192.0.2.1"), false, now).expect("first");
        let _two = gate.begin(ip("192.0.2.2"), false, now).expect("second");
        assert!(gate.begin(ip("192.0.2.3"), true, now).is_none(), "the overall cap holds for trusted ones too");
        drop(one);
        assert!(gate.begin(ip("192.0.2.3"), false, now).is_some());
    }
}
