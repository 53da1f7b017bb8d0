//! Admission control in the engine, through its port: the test scripts the decisions and
//! counts what the engine asked. (The token buckets behind sbcd's port are tested in
//! `sbc-core/src/admission.rs`, end to end in `tests/tests/overload.rs`.)

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use super::*;
use crate::admission::{AdmissionControl, Admit};

/// Decisions for the next new requests, in order (`Yes` once they run out), and a cap on the
/// calls held at once.
#[derive(Debug, Default)]
pub(super) struct Scripted {
    pub(super) decisions: Vec<Admit>,
    pub(super) asked: AtomicUsize,
    pub(super) max_calls: u32,
    pub(super) calls: AtomicU32,
    pub(super) calls_refused: AtomicU32,
}

impl AdmissionControl for Scripted {
    fn admit(&self, _now: Instant, _source: IpAddr) -> Admit {
        let n = self.asked.fetch_add(1, Ordering::Relaxed);
        self.decisions.get(n).copied().unwrap_or(Admit::Yes)
    }
    fn may_start_call(&self, _source: IpAddr) -> bool {
        let ok = self.max_calls == 0 || self.calls.load(Ordering::Relaxed) < self.max_calls;
        if !ok {
            self.calls_refused.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }
    fn call_started(&self, _source: IpAddr) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
    fn call_ended(&self, _source: IpAddr) {
        self.calls.fetch_sub(1, Ordering::Relaxed);
    }
    fn trusts(&self, _source: IpAddr) -> bool {
        false
    }
}

#[test]
fn a_refused_request_gets_a_stateless_503_an_ignored_one_nothing_and_retransmissions_are_not_asked() {
    let mut h = Harness::new();
    let script = std::sync::Arc::new(Scripted {
        decisions: vec![Admit::Yes, Admit::Refuse, Admit::Drop, Admit::Drop],
        ..Scripted::default()
    });
    h.engine.cfg.admission = script.clone();
    let first_invite = invite("adm1", "");
    let out = h.send(ALICE, &first_invite);
    assert_eq!(one(&out, BOB).method(), Some(Method::Invite));
    // Its retransmission is the same transaction: absorbed, not a new request.
    let out = h.send(ALICE, &first_invite);
    assert!(to(&out, BOB).is_empty());
    assert_eq!(script.asked.load(Ordering::Relaxed), 1);
    // Refused: 503, nothing towards the callee, no call kept.
    let out = h.send(ALICE, &invite("adm2", ""));
    let r = one(&out, ALICE);
    assert_eq!(r.status(), Some(503));
    assert_eq!(r.other_header("Retry-After"), Some(&b"1"[..]));
    assert!(to(&out, BOB).is_empty());
    assert_eq!(h.engine.active_calls(), 1);
    // Ignored: no reply at all, REGISTER and OPTIONS alike.
    assert!(h.send(ALICE, &invite("adm3", "")).is_empty());
    let options = invite("adm4", "").replace("INVITE sip:", "OPTIONS sip:").replace(" INVITE\n", " OPTIONS\n");
    assert!(h.send(ALICE, &options).is_empty());
    // In-dialog requests are never asked about.
    assert_eq!(script.asked.load(Ordering::Relaxed), 4);
}
