//! The engine's counters, declared once. Each row of [`Counter::DEFS`] gives a counter its key
//! in `GET /stats`, its `/metrics` family, its help text and how that family is labelled; the
//! engine's array, the shard's published copy (`driver/shard.rs`), the sum over shards and both
//! admin views are derived from it, so a new counter is one variant and one row.

use crate::sip::msg::Method;

/// A counter the engine keeps. Its discriminant indexes [`EngineStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    Requests,
    Responses,
    RetransmissionsAbsorbed,
    CallsStarted,
    CallsAnswered,
    CallsEnded,
    Drops,
    LocalReplies,
    MediaTimeouts,
    RegistrationsAbsorbed,
    SessionRefreshes,
    SessionTimeouts,
    AuthAnswered,
    AuthChallenged,
    RetransmissionCacheEvictions,
    MediaAllocationFailures,
    MediaDestinationsRefused,
    MediaInsecureRefused,
    RegistrationLookupsDeferred,
    RegistrationLookupsLate,
    RelayedToPeer,
    RelayedForPeer,
}

/// How a counter's `/metrics` family is labelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Labels {
    /// No label: the family is the counter itself.
    None,
    /// By request method, from the engine's per-method breakdown of the same count.
    Method,
    /// By labels the driver counts from the engine's events (profile and outcome of an ended
    /// call, a drop's reason, a refusal's code); the total is kept here for `/stats`.
    Events(&'static [&'static str]),
}

/// One row of the table.
#[derive(Debug)]
pub struct CounterDef {
    pub counter: Counter,
    /// Key in `GET /stats` (`media.x`: `x` inside the `media` object).
    pub key: &'static str,
    /// The `/metrics` family, without the `_total` suffix OpenMetrics adds.
    pub metric: &'static str,
    pub help: &'static str,
    pub labels: Labels,
}

const fn def(
    counter: Counter,
    key: &'static str,
    metric: &'static str,
    labels: Labels,
    help: &'static str,
) -> CounterDef {
    CounterDef { counter, key, metric, help, labels }
}

impl Counter {
    pub const COUNT: usize = 22;

    /// Every counter, in discriminant order.
    pub const DEFS: [CounterDef; Self::COUNT] = [
        def(Self::Requests, "requests", "sbc_sip_requests", Labels::Method, "SIP requests received, by method"),
        def(Self::Responses, "responses", "sbc_sip_responses", Labels::None, "SIP responses received"),
        def(
            Self::RetransmissionsAbsorbed,
            "retransmissions_absorbed",
            "sbc_sip_retransmissions",
            Labels::Method,
            "Request retransmissions absorbed by a transaction, by method",
        ),
        def(
            Self::CallsStarted,
            "calls_started",
            "sbc_calls_started",
            Labels::None,
            "Calls set up (rate() of it is the call setup rate)",
        ),
        def(
            Self::CallsAnswered,
            "calls_answered",
            "sbc_calls_answered",
            Labels::None,
            "Calls answered (2xx relayed to the caller)",
        ),
        def(
            Self::CallsEnded,
            "calls_ended",
            "sbc_calls_ended",
            Labels::Events(&["profile", "outcome"]),
            "Calls ended, by profile and outcome (answered, or the final class of an unanswered call)",
        ),
        def(
            Self::Drops,
            "drops",
            "sbc_sip_drops",
            Labels::Events(&["reason"]),
            "Messages dropped without a reply, by reason",
        ),
        def(
            Self::LocalReplies,
            "local_replies",
            "sbc_sip_local_replies",
            Labels::Events(&["code"]),
            "Requests the SBC answered itself with an error, by status",
        ),
        def(
            Self::MediaTimeouts,
            "media_timeouts",
            "sbc_media_timeouts",
            Labels::None,
            "Calls ended because no RTP flowed",
        ),
        def(
            Self::RegistrationsAbsorbed,
            "registrations_absorbed",
            "sbc_registrations_absorbed",
            Labels::None,
            "Re-registrations answered by the SBC inside the registrar's binding",
        ),
        def(
            Self::SessionRefreshes,
            "session_refreshes",
            "sbc_session_refreshes",
            Labels::None,
            "Session refreshes the SBC sent (RFC 4028)",
        ),
        def(
            Self::SessionTimeouts,
            "session_timeouts",
            "sbc_session_timeouts",
            Labels::None,
            "Calls ended because a session timer expired",
        ),
        def(
            Self::AuthAnswered,
            "auth_answered",
            "sbc_auth_answered",
            Labels::None,
            "Digest challenges answered with credentials",
        ),
        def(
            Self::AuthChallenged,
            "auth_challenged",
            "sbc_auth_challenged",
            Labels::None,
            "Requests the SBC challenged (enable_bleg_uas_auth)",
        ),
        def(
            Self::RetransmissionCacheEvictions,
            "retransmission_cache_evictions",
            "sbc_sip_retransmission_cache_evictions",
            Labels::None,
            "Messages cached by finished transactions dropped for the per-shard byte budget",
        ),
        def(
            Self::MediaAllocationFailures,
            "media.allocation_failures",
            "sbc_media_allocation_failures",
            Labels::None,
            "Streams that got no port pair",
        ),
        def(
            Self::MediaDestinationsRefused,
            "media.destinations_refused",
            "sbc_media_destinations_refused",
            Labels::None,
            "Streams refused because their SDP aimed them at the SBC, loopback, multicast, link-local or media.deny",
        ),
        def(
            Self::MediaInsecureRefused,
            "media.srtp_refused",
            "sbc_media_srtp_refused",
            Labels::None,
            "Streams refused by a leg's SRTP policy (aleg_srtp, bleg_srtp, sdes_required) or for a=crypto lines the SBC cannot use",
        ),
        def(
            Self::RegistrationLookupsDeferred,
            "registration_lookups_deferred",
            "sbc_registration_lookups_deferred",
            Labels::None,
            "New requests that waited for the registration store to answer",
        ),
        def(
            Self::RegistrationLookupsLate,
            "registration_lookups_late",
            "sbc_registration_lookups_late",
            Labels::None,
            "New requests refused with 503 because the registration store did not answer in time",
        ),
        def(
            Self::RelayedToPeer,
            "relayed_to_peer",
            "sbc_cluster_relayed_to_peer",
            Labels::None,
            "Requests to a phone another cluster node holds, sent through that node",
        ),
        def(
            Self::RelayedForPeer,
            "relayed_for_peer",
            "sbc_cluster_relayed_for_peer",
            Labels::None,
            "Requests another cluster node sent through this one to a phone it holds",
        ),
    ];

    pub const fn def(self) -> &'static CounterDef {
        &Self::DEFS[self as usize]
    }

    /// Where the per-method breakdown of this counter is kept, if its family is labelled by
    /// method (below [`BY_METHOD`]).
    pub const fn method_slot(self) -> Option<usize> {
        match self {
            Self::Requests => Some(0),
            Self::RetransmissionsAbsorbed => Some(1),
            _ => None,
        }
    }
}

/// Counters with a per-method breakdown.
pub const BY_METHOD: usize = 2;

/// Counters of one engine, read by the driver.
#[derive(Debug, Clone, Default)]
pub struct EngineStats {
    counts: [u64; Counter::COUNT],
    by_method: [[u64; Method::COUNT]; BY_METHOD],
}

impl EngineStats {
    pub fn get(&self, c: Counter) -> u64 {
        self.counts[c as usize]
    }

    /// The per-method breakdown of `c` (index: [`Method::index`]); zeros for a counter that
    /// keeps none.
    pub fn by_method(&self, c: Counter) -> [u64; Method::COUNT] {
        c.method_slot().map_or([0; Method::COUNT], |s| self.by_method[s])
    }

    pub(super) fn bump(&mut self, c: Counter) {
        self.counts[c as usize] += 1;
    }

    /// For a count another part of the engine keeps (the retransmission cache's evictions).
    pub(super) fn set(&mut self, c: Counter, v: u64) {
        self.counts[c as usize] = v;
    }

    /// Counts one message of `method` in `c` and in its per-method breakdown.
    pub(super) fn bump_method(&mut self, c: Counter, method: Method) {
        self.bump(c);
        if let Some(s) = c.method_slot() {
            self.by_method[s][method.index()] += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_in_discriminant_order_with_unique_names() {
        for (i, d) in Counter::DEFS.iter().enumerate() {
            assert_eq!(d.counter as usize, i, "{}", d.key);
            assert!(d.metric.starts_with("sbc_") && !d.metric.ends_with("_total"), "{}", d.metric);
        }
        let mut keys: Vec<_> = Counter::DEFS.iter().map(|d| d.key).collect();
        let mut metrics: Vec<_> = Counter::DEFS.iter().map(|d| d.metric).collect();
        keys.sort_unstable();
        keys.dedup();
        metrics.sort_unstable();
        metrics.dedup();
        assert_eq!((keys.len(), metrics.len()), (Counter::COUNT, Counter::COUNT));
    }

    #[test]
    fn method_labelled_counters_keep_their_breakdown() {
        let mut s = EngineStats::default();
        s.bump_method(Counter::Requests, Method::Invite);
        s.bump_method(Counter::Requests, Method::Bye);
        s.bump_method(Counter::RetransmissionsAbsorbed, Method::Invite);
        s.bump(Counter::Drops);
        assert_eq!(s.get(Counter::Requests), 2);
        assert_eq!(s.by_method(Counter::Requests).iter().sum::<u64>(), 2);
        assert_eq!(s.by_method(Counter::RetransmissionsAbsorbed)[Method::Invite.index()], 1);
        assert_eq!(s.by_method(Counter::Drops), [0; Method::COUNT]);
        for d in &Counter::DEFS {
            assert_eq!(d.counter.method_slot().is_some(), d.labels == Labels::Method, "{}", d.key);
        }
    }
}
