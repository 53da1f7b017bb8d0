//! Admission control in the engine: over-rate sources get a stateless 503 before any work.

use super::*;
use crate::admission::Admission;
use profiles::config::AdmissionSettings;

#[test]
fn over_rate_invites_get_503_without_a_call_and_retransmissions_are_not_charged() {
    let mut h = Harness::new();
    h.engine.cfg.admission = std::sync::Arc::new(Admission::new(AdmissionSettings {
        per_source_cps: 2,
        per_source_burst: 2,
        drop_after: 3,
        ..AdmissionSettings::default()
    }));
    let first_invite = invite("adm1", "");
    let out = h.send(ALICE, &first_invite);
    assert_eq!(one(&out, BOB).method(), Some(Method::Invite));
    // Its retransmission is the same transaction: absorbed, not a new request.
    let out = h.send(ALICE, &first_invite);
    assert!(to(&out, BOB).is_empty());
    let out = h.send(ALICE, &invite("adm2", ""));
    assert_eq!(one(&out, BOB).method(), Some(Method::Invite));
    // The third within the second: 503, nothing towards the callee, no call kept.
    let out = h.send(ALICE, &invite("adm3", ""));
    let r = one(&out, ALICE);
    assert_eq!(r.status(), Some(503));
    assert_eq!(r.other_header("Retry-After"), Some(&b"1"[..]));
    assert!(to(&out, BOB).is_empty());
    assert_eq!(h.engine.active_calls(), 2);
    // Another source (address) is served.
    let out = h.send("127.0.0.2:5003", &invite("adm4", ""));
    assert_eq!(first(&out, BOB).method(), Some(Method::Invite));
    // Going on regardless: ignored (no reply at all), REGISTER and OPTIONS alike.
    h.send(ALICE, &invite("adm5", ""));
    h.send(ALICE, &invite("adm6", ""));
    let out = h.send(ALICE, &invite("adm7", ""));
    assert!(out.is_empty(), "{out:#?}");
    // A second later the bucket has refilled, but the source stays ignored for a minute.
    h.advance(Duration::from_secs(1));
    assert!(h.send(ALICE, &invite("adm8", "")).is_empty());
    h.advance(Duration::from_secs(61));
    let out = h.send(ALICE, &invite("adm9", ""));
    assert_eq!(first(&out, BOB).method(), Some(Method::Invite));
}
