//! Named next hops (RFC 3263): the request waits for its targets, goes to the first usable
//! one and fails over through the rest; no target, a cancel, or a resolver that never
//! answers each end the wait as a caller expects.

use super::*;

fn udp(a: &str) -> Target {
    Target { transport: Transport::Udp, addr: addr(a) }
}

fn tcp(a: &str) -> Target {
    Target { transport: Transport::Tcp, addr: addr(a) }
}

fn harness(next_hop: &str) -> Harness {
    Harness::with_yaml(&format!("active_profile: p\nprofiles:\n  p:\n    next_hop: \"{next_hop}\"\n"))
}

#[test]
fn a_call_waits_for_its_targets_and_goes_to_the_first_as_the_name() {
    let mut h = harness("carrier.example");
    h.dns_held = true;
    let out = h.send(ALICE, &invite("res-1@alice", ""));
    assert_eq!(one(&out, ALICE).status(), Some(100), "the caller hears 100 while names resolve");
    assert!(to(&out, BOB).is_empty());
    assert_eq!(
        h.queries,
        [TargetQuery { host: "carrier.example".into(), port: None, transport: None, secure: false }],
        "neither port nor transport: NAPTR decides"
    );
    assert_eq!(h.engine.active_calls(), 1, "a waiting call counts");
    h.dns.insert("carrier.example".into(), vec![udp(BOB)]);
    let out = h.answer_resolves();
    let sent = out.iter().find(|s| s.msg.method() == Some(Method::Invite)).expect("INVITE sent");
    assert_eq!(sent.to, Peer::Named { host: "carrier.example".into(), addr: addr(BOB) });
    let b_inv = one(&out, BOB);
    let out = h.send(BOB, &response_to(&b_inv, 200, "bt", ""));
    assert_eq!(one(&out, ALICE).status(), Some(200));
}

#[test]
fn a_failing_target_gives_way_to_the_next_then_to_the_next_hop() {
    let mut h = harness("carrier.example, backup.example");
    h.dns.insert("carrier.example".into(), vec![udp(CAROL), tcp("127.0.0.1:5009")]);
    h.dns.insert("backup.example".into(), vec![udp(BOB)]);
    let out = h.send(ALICE, &invite("res-2@alice", ""));
    assert_eq!(h.queries.len(), 2, "every named hop at once");
    let first = one(&out, CAROL);
    // The TCP target has no socket on this interface: skipped.
    let out = h.send(CAROL, &response_from(CAROL, &first, 503, "ct", ""));
    let b_inv = one(&out, BOB);
    assert_eq!(b_inv.call_id(), first.call_id(), "same dialog, next target");
    assert!(to(&out, ALICE).iter().all(|m| m.status() != Some(503)), "the caller does not see the 503");
    let out = h.send(BOB, &response_to(&b_inv, 200, "bt", ""));
    assert_eq!(one(&out, ALICE).status(), Some(200));
}

#[test]
fn no_usable_target_is_503_and_our_own_address_a_loop() {
    let mut h = harness("nowhere.example");
    let out = h.send(ALICE, &invite("res-3@alice", ""));
    let reply = to(&out, ALICE).into_iter().find(|m| m.status().is_some_and(|s| s >= 300)).expect("refused");
    assert_eq!(reply.status(), Some(503));
    let warning = reply.other_header("Warning").map(|w| String::from_utf8_lossy(w).into_owned());
    assert!(warning.is_some_and(|w| w.contains("did not resolve")), "{reply:?}");
    assert_eq!(h.engine.active_calls(), 0);

    let mut h = harness("loop.example");
    h.dns.insert("loop.example".into(), vec![udp(SBC)]);
    let out = h.send(ALICE, &invite("res-4@alice", ""));
    let reply = to(&out, ALICE).into_iter().find(|m| m.status().is_some_and(|s| s >= 300)).expect("refused");
    assert_eq!(reply.status(), Some(482));
}

#[test]
fn a_cancel_or_a_silent_resolver_ends_the_wait() {
    let mut h = harness("carrier.example");
    h.dns_held = true;
    h.dns.insert("carrier.example".into(), vec![udp(BOB)]);
    let inv = invite("res-5@alice", "");
    h.send(ALICE, &inv);
    let out = h.send(ALICE, &cancel_for_invite(&inv));
    let codes: Vec<_> = to(&out, ALICE).iter().filter_map(Message::status).collect();
    assert!(codes.contains(&200) && codes.contains(&487), "{codes:?}");
    assert_eq!(h.engine.active_calls(), 0);
    let out = h.answer_resolves();
    assert!(to(&out, BOB).is_empty(), "a late answer sends nothing");

    let mut h = harness("carrier.example");
    h.dns_held = true;
    h.send(ALICE, &invite("res-6@alice", ""));
    let out = h.advance(Duration::from_secs(9));
    assert!(to(&out, ALICE).iter().any(|m| m.status() == Some(503)), "503 at the deadline");
    assert_eq!(h.engine.active_calls(), 0);
    h.dns.insert("carrier.example".into(), vec![udp(BOB)]);
    assert!(to(&h.answer_resolves(), BOB).is_empty());
    h.advance(Duration::from_secs(40));
    assert!(h.engine.is_idle());
}

#[test]
fn an_address_hop_ahead_of_a_name_and_an_out_of_dialog_request() {
    // The first hop is an address: the call goes at once, the backup's name is resolved
    // meanwhile and its targets take its place among the alternatives.
    let mut h = harness(&format!("{CAROL}, backup.example:5070"));
    h.dns.insert("backup.example".into(), vec![udp(BOB)]);
    h.dns_held = true;
    let out = h.send(ALICE, &invite("res-7@alice", ""));
    let first = one(&out, CAROL);
    assert_eq!(h.queries[0].port, Some(5070), "a port given: addresses only");
    h.answer_resolves();
    let out = h.send(CAROL, &response_from(CAROL, &first, 503, "ct", ""));
    let sent = out.iter().find(|s| s.msg.method() == Some(Method::Invite)).expect("failed over");
    assert_eq!(sent.to, Peer::Named { host: "backup.example".into(), addr: addr(BOB) });

    // A failover before the backup's name resolved sends to the name (the driver resolves it).
    let mut h = harness(&format!("{CAROL}, backup.example:5070"));
    h.dns_held = true;
    let first = one(&h.send(ALICE, &invite("res-8@alice", "")), CAROL);
    let out = h.send(CAROL, &response_from(CAROL, &first, 503, "ct", ""));
    assert!(out.iter().any(|s| s.to == Peer::Host("backup.example".into(), 5070)), "{out:#?}");
    assert!(to(&h.answer_resolves(), BOB).is_empty(), "a late answer changes nothing sent");

    // An OPTIONS relayed to a named hop resolves the first hop alone.
    let mut h = harness("carrier.example, backup.example");
    h.dns.insert("carrier.example".into(), vec![udp(BOB)]);
    let options = format!(
        "OPTIONS sip:bob@carrier.example SIP/2.0\nVia: SIP/2.0/UDP {ALICE};branch=z9hG4bKopt1\nMax-Forwards: 70\nFrom: <sip:alice@a>;tag=o1\nTo: <sip:bob@carrier.example>\nCall-ID: res-opt@alice\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n"
    );
    let out = h.send(ALICE, &options);
    assert_eq!(h.queries.len(), 1);
    assert_eq!(one(&out, BOB).method(), Some(Method::Options));
}

/// Credentials go to a configured next hop by name wherever it resolved to (its SRV target's
/// address), as they go to one given as an address.
#[test]
fn a_configured_named_hop_gets_its_challenge_answered() {
    let yaml = "active_profile: p\nprofiles:\n  p:\n    next_hop: carrier.example\n    enable_auth: yes\n    auth_user: trunk\n    auth_pwd: secret\n";
    let mut h = Harness::with_yaml(yaml);
    h.dns.insert("carrier.example".into(), vec![udp(BOB)]);
    let b_inv = one(&h.send(ALICE, &invite("res-auth@alice", "")), BOB);
    let ch = "Proxy-Authenticate: Digest realm=\"carrier\", nonce=\"n\", qop=\"auth\", algorithm=MD5\n";
    let out = h.send(BOB, &response_to(&b_inv, 407, "bt", ch));
    let resent = to(&out, BOB).into_iter().find(|m| m.method() == Some(Method::Invite)).expect("answered");
    assert!(resent.other_header("Proxy-Authorization").is_some());
}

/// A sips: Request-URI through a next hop named without a transport: NAPTR may only pick TLS,
/// and nothing is refused before the targets are known.
#[test]
fn a_sips_call_through_a_named_hop_takes_tls_targets() {
    let yaml =
        "active_profile: p\nprofiles:\n  p:\n    next_hop: carrier.example\n    RURI: sips:$rU@carrier.example\n";
    let mut h = Harness::with_yaml(yaml);
    let mut cfg = h.engine.cfg.clone();
    let tls = LocalSocket { id: 1, transport: Transport::Tls, addr: addr("127.0.0.1:5061"), advertised: None };
    cfg.interfaces[0].sockets.push(tls);
    h.engine = Engine::new(cfg, [7; 32]);
    h.dns.insert("carrier.example".into(), vec![Target { transport: Transport::Tls, addr: addr(BOB) }]);
    let out = h.send(ALICE, &invite("res-sips@alice", ""));
    assert!(h.queries[0].secure && h.queries[0].transport.is_none(), "{:?}", h.queries);
    let b_inv = one(&out, BOB);
    assert!(b_inv.request_uri().starts_with(b"sips:bob@carrier.example"));
    assert!(hv(&b_inv, HeaderName::Via).starts_with("SIP/2.0/TLS"), "{b_inv:?}");
}

/// A first hop whose name gives nothing gives way to the next one, and the dialog's later
/// requests (its next hop fixed for the whole dialog) go there too, not to the dead name.
#[test]
fn the_next_hop_taking_over_from_a_dead_name_keeps_the_dialog() {
    let mut h = harness(&format!("nowhere.example, {BOB}"));
    let b_inv = one(&h.send(ALICE, &invite("res-fix@alice", "")), BOB);
    let ok = one(&h.send(BOB, &response_to(&b_inv, 200, "bt", "")), ALICE);
    let (from, to_hdr) = (hv(&ok, HeaderName::From), hv(&ok, HeaderName::To));
    h.send(ALICE, &in_dialog("ACK", ALICE, &from, &to_hdr, "res-fix@alice", 10, ""));
    let out = h.send(ALICE, &in_dialog("BYE", ALICE, &from, &to_hdr, "res-fix@alice", 11, ""));
    assert_eq!(one(&out, BOB).method(), Some(Method::Bye), "{out:#?}");
}
