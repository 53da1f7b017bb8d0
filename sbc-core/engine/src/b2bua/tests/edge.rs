//! What an attacker on the Internet tries against one engine: refusals that would amplify,
//! identifiers that would be guessed.

use super::*;

/// An attacker's address: another host (the test peers differ by port only).
const MALLORY: &str = "127.0.0.66:5060";

fn to_tag(m: &Message) -> String {
    String::from_utf8_lossy(m.to_tag().unwrap_or_default()).into_owned()
}

/// RFC 3261 §8.2.6.2 and issue 16: a refused INVITE that is never ACKed (its source forged)
/// gets one reply per INVITE received, never a retransmission on a timer, and leaves nothing.
#[test]
fn a_refused_invite_is_answered_once_per_copy_received_and_kept_nowhere() {
    let mut h = Harness::new();
    let hop0 = invite("amp1", "").replace("Max-Forwards: 70", "Max-Forwards: 0");
    let first = one(&h.send(ALICE, &hop0), ALICE);
    assert_eq!(first.status(), Some(483));
    assert!(h.advance(Duration::from_secs(40)).is_empty(), "nothing is resent while no ACK comes");
    assert_eq!(h.engine.active_transactions(), 0);

    // A retransmission is answered again, alike and with the same To tag.
    let again = one(&h.send(ALICE, &hop0), ALICE);
    assert_eq!(again.status(), Some(483));
    assert_eq!(to_tag(&again), to_tag(&first));
    assert!(!to_tag(&first).is_empty());
    // Another request gets another tag.
    let other = one(&h.send(ALICE, &invite("amp2", "").replace("Max-Forwards: 70", "Max-Forwards: 0")), ALICE);
    assert_ne!(to_tag(&other), to_tag(&first));
    assert!(h.advance(Duration::from_secs(40)).is_empty());
    assert_eq!(h.engine.active_transactions(), 0);
}

/// Every refusal of a new request takes the stateless path: 415, the profile's refuse_with,
/// max_calls 503, 404 for nowhere to go, and the health-check OPTIONS.
#[test]
fn every_local_refusal_of_a_new_request_is_stateless() {
    let mut h = Harness::with_yaml("active_profile: deny\nprofiles:\n  deny:\n    refuse_with: \"403 Forbidden\"\n");
    let out = h.send(ALICE, &invite("deny1", ""));
    assert_eq!(one(&out, ALICE).status(), Some(403));

    let mut h = Harness::new();
    let bad_body = invite("cmf415", "").replace("Content-Type: application/sdp", "Content-Type: text/plain");
    assert_eq!(one(&h.send(ALICE, &bad_body), ALICE).status(), Some(415));
    let ping = format!("OPTIONS sip:{SBC} SIP/2.0\nVia: SIP/2.0/UDP {ALICE};branch=z9hG4bKp\nMax-Forwards: 70\nFrom: <sip:mon@x>;tag=1\nTo: <sip:{SBC}>\nCall-ID: ping1\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n");
    assert_eq!(one(&h.send(ALICE, &ping), ALICE).status(), Some(200));
    assert_eq!(h.engine.active_transactions(), 0);

    h.engine.cfg.max_calls = 0;
    assert_eq!(one(&h.send(ALICE, &invite("full1", "")), ALICE).status(), Some(503));
    assert!(h.advance(Duration::from_secs(40)).is_empty());
    assert_eq!(h.engine.active_transactions(), 0);
}

/// The ACK a caller sends for a stateless refusal is absorbed without an answer.
#[test]
fn the_ack_of_a_stateless_refusal_is_absorbed() {
    let mut h = Harness::new();
    let hop0 = invite("amp3", "").replace("Max-Forwards: 70", "Max-Forwards: 0");
    let refusal = one(&h.send(ALICE, &hop0), ALICE);
    let ack = format!(
        "ACK sip:bob@{BOB} SIP/2.0\nVia: SIP/2.0/UDP {ALICE};branch=z9hG4bKamp3;rport\nMax-Forwards: 70\nFrom: {}\nTo: {}\nCall-ID: amp3\nCSeq: 10 ACK\nContent-Length: 0\n\n",
        hv(&refusal, HeaderName::From),
        hv(&refusal, HeaderName::To)
    );
    assert!(h.send(ALICE, &ack).is_empty());
    assert_eq!(h.engine.active_transactions(), 0);
}

/// A response from an address the request did not go to is dropped, even with the right
/// branch; the callee's own answer still goes through.
#[test]
fn a_response_from_a_third_address_is_dropped() {
    let mut h = Harness::new();
    let out = h.send(ALICE, &invite("forge1", ""));
    let b_inv = one(&out, BOB);
    assert!(to(&h.send(MALLORY, &response_from(MALLORY, &b_inv, 200, "evil", "")), ALICE).is_empty());
    let ringing = one(&h.send(BOB, &response_to(&b_inv, 180, "bt", "")), ALICE);
    assert_eq!(ringing.status(), Some(180));
}

/// `next_hop_replies_from_any` takes a carrier that answers from another address.
#[test]
fn a_profile_may_take_responses_from_any_address() {
    let mut h =
        Harness::with_yaml("active_profile: carrier\nprofiles:\n  carrier:\n    next_hop_replies_from_any: yes\n");
    let b_inv = one(&h.send(ALICE, &invite("forge2", "")), BOB);
    let ok = one(&h.send(MALLORY, &response_from(MALLORY, &b_inv, 200, "bt", "")), ALICE);
    assert_eq!(ok.status(), Some(200));
}

/// An in-dialog request must carry the peer's tag as well as ours: a BYE forged with the
/// Call-ID and our To tag but another From tag gets 481 and the call lives on.
#[test]
fn an_in_dialog_request_needs_both_tags() {
    let mut h = Harness::new();
    let (_b_inv, ok) = established(&mut h);
    let forged_from = hv(&ok, HeaderName::From).replace("tag=at", "tag=forged");
    let bye = in_dialog("BYE", ALICE, &forged_from, &hv(&ok, HeaderName::To), "call-1@alice", 11, "");
    let out = h.send(ALICE, &bye);
    assert_eq!(one(&out, ALICE).status(), Some(481));
    assert!(to(&out, BOB).is_empty());
    assert_eq!(h.engine.active_calls(), 1);

    let bye = in_dialog("BYE", ALICE, &hv(&ok, HeaderName::From), &hv(&ok, HeaderName::To), "call-1@alice", 11, "");
    let out = h.send(ALICE, &bye);
    assert_eq!(one(&out, BOB).method(), Some(Method::Bye));
}

/// Credentials of the operator go only where the configuration sends requests (issue 16): a
/// caller who points the Request-URI at its own server gets its challenge relayed back,
/// never a digest to crack.
fn challenge_of(yaml_options: &str, realm: &str, algorithm: &str) -> (Option<Message>, Vec<Message>) {
    let yaml = format!("active_profile: p\nprofiles:\n  p:\n    enable_auth: yes\n    auth_user: trunk\n    auth_pwd: secret\n{yaml_options}");
    let mut h = Harness::with_yaml(&yaml);
    let b_inv = one(&h.send(ALICE, &invite("cred1", "")), BOB);
    let ch =
        format!("Proxy-Authenticate: Digest realm=\"{realm}\", nonce=\"n\", qop=\"auth\", algorithm={algorithm}\n");
    let out = h.send(BOB, &response_to(&b_inv, 407, "bt", &ch));
    let resent = to(&out, BOB).into_iter().find(|m| m.method() == Some(Method::Invite));
    (resent, to(&out, ALICE))
}

#[test]
fn a_challenge_from_a_request_uri_destination_is_relayed_not_answered() {
    let (resent, to_caller) = challenge_of("", "evil", "MD5");
    assert!(resent.is_none(), "credentials went to the Request-URI's host");
    assert_eq!(to_caller.first().and_then(Message::status), Some(407));
}

#[test]
fn a_configured_next_hop_or_a_listed_realm_gets_the_answer() {
    let (resent, _) = challenge_of("    next_hop: 127.0.0.1:5002\n", "carrier", "MD5");
    assert!(resent.is_some_and(|m| m.other_header("Proxy-Authorization").is_some()));
    let (resent, _) = challenge_of("    auth_realm: other, carrier\n", "carrier", "SHA-256");
    assert!(resent.is_some_and(|m| m.other_header("Proxy-Authorization").is_some()));
    let (resent, _) = challenge_of("    auth_realm: '*'\n", "anything", "MD5");
    assert!(resent.is_some(), "'*' takes any realm (credentials that are the caller's own)");
    // A list names the realms: a configured next hop asking for another realm is relayed.
    let (resent, to_caller) = challenge_of("    next_hop: 127.0.0.1:5002\n    auth_realm: carrier\n", "evil", "MD5");
    assert!(resent.is_none());
    assert_eq!(to_caller.first().and_then(Message::status), Some(407));
}

#[test]
fn auth_refuse_md5_answers_only_stronger_challenges() {
    let options = "    next_hop: 127.0.0.1:5002\n    auth_refuse_md5: yes\n";
    let (resent, to_caller) = challenge_of(options, "carrier", "MD5");
    assert!(resent.is_none());
    assert_eq!(to_caller.first().and_then(Message::status), Some(407));
    let (resent, _) = challenge_of(options, "carrier", "SHA-256");
    assert!(resent.is_some());
}

/// A peer in a call cannot keep the SBC relaying: at most 8 in-dialog requests wait for their
/// answers at once, and a dialog's rate is bounded; BYE always passes.
#[test]
fn a_dialog_has_few_requests_in_flight_and_bye_always_passes() {
    let mut h = Harness::new();
    let (_b_inv, ok) = established(&mut h);
    let (from, to_hdr) = (hv(&ok, HeaderName::From), hv(&ok, HeaderName::To));
    let mut relayed = Vec::new();
    for cseq in 11..21 {
        let out = h.send(ALICE, &in_dialog("INFO", ALICE, &from, &to_hdr, "call-1@alice", cseq, ""));
        match to(&out, BOB).into_iter().next() {
            Some(info) => relayed.push(info),
            None => assert_eq!(one(&out, ALICE).status(), Some(503), "{out:#?}"),
        }
    }
    assert_eq!(relayed.len(), 8, "eight in flight at most");
    // Answers free their places.
    for info in &relayed {
        h.send(BOB, &response_from(BOB, info, 200, "", ""));
    }
    let out = h.send(ALICE, &in_dialog("INFO", ALICE, &from, &to_hdr, "call-1@alice", 21, ""));
    assert_eq!(one(&out, BOB).method(), Some(Method::Info));
    // Still too many at once for the rate; the BYE goes through all the same.
    let out = h.send(ALICE, &in_dialog("BYE", ALICE, &from, &to_hdr, "call-1@alice", 30, ""));
    assert_eq!(one(&out, BOB).method(), Some(Method::Bye));
}

/// An untrusted source holds at most `per_source_calls` calls; an ended one frees its place.
#[test]
fn a_source_holds_at_most_its_calls() {
    let mut h = Harness::new();
    let cap = std::sync::Arc::new(admission::Scripted { max_calls: 2, ..Default::default() });
    h.engine.cfg.admission = cap.clone();
    let b1 = one(&h.send(ALICE, &invite("src1", "")), BOB);
    one(&h.send(ALICE, &invite("src2", "")), BOB);
    let out = h.send(ALICE, &invite("src3", ""));
    assert!(to(&out, BOB).is_empty());
    assert_eq!(first(&out, ALICE).status(), Some(503));
    // The callee refuses the first call: it ends, and the source may call again.
    h.send(BOB, &response_to(&b1, 486, "bt", ""));
    one(&h.send(ALICE, &invite("src4", "")), BOB);
    assert_eq!(cap.calls_refused.load(std::sync::atomic::Ordering::Relaxed), 1);
}

/// The messages finished transactions keep for retransmissions share a byte budget: past it
/// the oldest are dropped, counted, and a retransmission of such a request is still absorbed
/// (not relayed as new), only no longer answered.
#[test]
fn finished_transactions_keep_their_messages_within_a_byte_budget() {
    let mut h = Harness::new();
    h.engine.cfg.retransmission_cache = 1;
    h.engine.lingering = linger::LingerTable::new(1);
    let (_b_inv, ok) = established(&mut h);
    let (from, to_hdr) = (hv(&ok, HeaderName::From), hv(&ok, HeaderName::To));
    let bye = in_dialog("BYE", ALICE, &from, &to_hdr, "call-1@alice", 11, "");
    let out = h.send(ALICE, &bye);
    let b_bye = one(&out, BOB);
    let out = h.send(BOB, &response_from(BOB, &b_bye, 200, "", ""));
    assert_eq!(one(&out, ALICE).status(), Some(200));
    assert!(h.engine.stats.get(Counter::RetransmissionCacheEvictions) >= 1);
    // The caller's BYE again: absorbed, nothing sent anywhere.
    assert!(h.send(ALICE, &bye).is_empty());
    assert_eq!(h.engine.stats.get(Counter::RetransmissionsAbsorbed), 1);
}

/// A request sent to a host name goes to the address it resolved to: responses from
/// elsewhere are dropped like any other.
#[test]
fn responses_to_a_host_name_come_from_where_it_resolved() {
    let mut h = Harness::with_yaml("active_profile: p\nprofiles:\n  p:\n    next_hop: callee.test:5002\n");
    h.dns.insert("callee.test".into(), vec![Target { transport: Transport::Udp, addr: addr(BOB) }]);
    let out = h.send(ALICE, &invite("named", ""));
    let sent = out
        .iter()
        .find(|s| matches!(&s.to, Peer::Named { host, addr: a } if &**host == "callee.test" && *a == addr(BOB)))
        .expect("to the name's address");
    let b_inv = sent.msg.clone();
    assert!(to(&h.send(MALLORY, &response_from(MALLORY, &b_inv, 200, "evil", "")), ALICE).is_empty());
    let ringing = one(&h.send(BOB, &response_to(&b_inv, 180, "bt", "")), ALICE);
    assert_eq!(ringing.status(), Some(180));
}

/// Relayed out-of-dialog requests (here a MESSAGE) follow their profile's
/// `next_hop_replies_from_any` too; without it, an answer from another host is dropped.
#[test]
fn relayed_requests_follow_the_profiles_response_source_rule() {
    let message = |call_id: &str| {
        format!("MESSAGE sip:bob@{BOB} SIP/2.0\nVia: SIP/2.0/UDP {ALICE};branch=z9hG4bK{call_id}\nMax-Forwards: 70\nFrom: <sip:alice@a.example>;tag=m1\nTo: <sip:bob@{BOB}>\nCall-ID: {call_id}\nCSeq: 1 MESSAGE\nContent-Length: 0\n\n")
    };
    for (relaxed, reaches_caller) in [(true, true), (false, false)] {
        let yaml = format!(
            "active_profile: p\nprofiles:\n  p:\n    next_hop_replies_from_any: {}\n",
            if relaxed { "yes" } else { "no" }
        );
        let mut h = Harness::with_yaml(&yaml);
        let relayed = one(&h.send(ALICE, &message(&format!("msg-{relaxed}"))), BOB);
        let out = h.send(MALLORY, &response_from(MALLORY, &relayed, 200, "x", ""));
        assert_eq!(!to(&out, ALICE).is_empty(), reaches_caller, "relaxed={relaxed}: {out:#?}");
    }
}

/// A next hop the caller writes (`$H(X-Hop)`) is not a configured one: its challenge is
/// relayed, never answered.
#[test]
fn a_next_hop_taken_from_the_request_is_not_trusted_with_credentials() {
    let (resent, to_caller) = {
        let yaml = "active_profile: p\nprofiles:\n  p:\n    next_hop: $H(X-Hop)\n    enable_auth: yes\n    auth_user: trunk\n    auth_pwd: secret\n";
        let mut h = Harness::with_yaml(yaml);
        let b_inv = one(&h.send(ALICE, &invite("hop1", &format!("X-Hop: {BOB}\n"))), BOB);
        let ch = "Proxy-Authenticate: Digest realm=\"evil\", nonce=\"n\", qop=\"auth\"\n";
        let out = h.send(BOB, &response_to(&b_inv, 407, "bt", ch));
        (to(&out, BOB).into_iter().find(|m| m.method() == Some(Method::Invite)), to(&out, ALICE))
    };
    assert!(resent.is_none(), "credentials went to a hop the caller chose");
    assert_eq!(to_caller.first().and_then(Message::status), Some(407));
}

/// In a dialog set up through a configured next hop, the callee's in-dialog challenges are
/// answered even when in-dialog requests follow the route set (`next_hop_1st_req`).
#[test]
fn a_dialog_through_a_configured_hop_answers_its_in_dialog_challenges() {
    let yaml = "active_profile: p\nprofiles:\n  p:\n    next_hop: 127.0.0.1:5002\n    next_hop_1st_req: yes\n    enable_auth: yes\n    auth_user: trunk\n    auth_pwd: secret\n";
    let mut h = Harness::with_yaml(yaml);
    let b_inv = one(&h.send(ALICE, &invite("dlgauth", "")), BOB);
    // The callee answers from its own Contact at CAROL's address: in-dialog requests go there.
    let ok = one(&h.send(BOB, &response_from(CAROL, &b_inv, 200, "bt", "")), ALICE);
    let (from, to_hdr) = (hv(&ok, HeaderName::From), hv(&ok, HeaderName::To));
    h.send(ALICE, &in_dialog("ACK", ALICE, &from, &to_hdr, "dlgauth", 10, ""));
    let out = h.send(ALICE, &in_dialog("INFO", ALICE, &from, &to_hdr, "dlgauth", 11, ""));
    let info = one(&out, CAROL);
    let ch = "WWW-Authenticate: Digest realm=\"carrier\", nonce=\"n\", qop=\"auth\"\n";
    let out = h.send(CAROL, &response_from(CAROL, &info, 401, "", ch));
    let again = to(&out, CAROL).into_iter().find(|m| m.method() == Some(Method::Info)).expect("answered");
    assert!(again.other_header("Authorization").is_some());
}
