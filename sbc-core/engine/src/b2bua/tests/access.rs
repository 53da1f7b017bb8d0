//! Access features with virtual time: NAT handling, registration caching, session timers and
//! digest authentication.

use super::*;

/// The caller's real (public) address, and the private one its Contact names.
const ALICE_NAT: &str = "127.0.0.1:7001";
const ALICE_PRIVATE: &str = "127.0.0.9:5060";

const NAT: &str = "active_profile: nat\nprofiles:\n  nat:\n    dlg_nat_handling: yes\n";

fn nat_invite(call_id: &str) -> String {
    invite(call_id, "")
        .replace(&format!("Contact: <sip:alice@{ALICE}>"), &format!("Contact: <sip:alice@{ALICE_PRIVATE}>"))
}

/// Sets up an answered call from a NAT-ed caller; returns (B's INVITE, A's 200).
fn nat_call(h: &mut Harness, call_id: &str) -> (Message, Message) {
    let out = h.send(ALICE_NAT, &nat_invite(call_id));
    let b_inv = one(&out, BOB);
    let out = h.send(BOB, &response_to(&b_inv, 200, "bt", ""));
    let ok = one(&out, ALICE_NAT);
    let ack = in_dialog("ACK", ALICE_NAT, &hv(&ok, HeaderName::From), &hv(&ok, HeaderName::To), call_id, 10, "");
    h.send(ALICE_NAT, &ack);
    (b_inv, ok)
}

fn bye_from_bob(h: &mut Harness, b_inv: &Message, cseq: u32) -> Vec<Sent> {
    let from = "<sip:bob@biloxi.example>;tag=bt";
    let bye = in_dialog("BYE", BOB, from, &hv(b_inv, HeaderName::From), &hv(b_inv, HeaderName::CallId), cseq, "");
    h.send(BOB, &bye)
}

#[test]
fn nat_handling_sends_in_dialog_requests_to_the_callers_source() {
    let mut h = Harness::with_yaml(NAT);
    let (b_inv, _) = nat_call(&mut h, "nat1");
    let out = bye_from_bob(&mut h, &b_inv, 5);
    let bye = one(&out, ALICE_NAT);
    assert_eq!(bye.request_uri(), format!("sip:alice@{ALICE_PRIVATE}").as_bytes(), "R-URI stays the Contact");
    assert!(to(&out, ALICE_PRIVATE).is_empty());
}

#[test]
fn without_nat_handling_requests_follow_the_contact() {
    let mut h = Harness::new();
    let (b_inv, _) = nat_call(&mut h, "nat2");
    let out = bye_from_bob(&mut h, &b_inv, 5);
    assert_eq!(one(&out, ALICE_PRIVATE).method(), Some(Method::Bye));
}

#[test]
fn nat_handling_follows_a_target_refresh_from_a_new_address() {
    let mut h = Harness::with_yaml(NAT);
    let (b_inv, ok) = nat_call(&mut h, "nat3");
    // The caller re-INVITEs from a new public port with a new private Contact.
    let moved = "127.0.0.1:7002";
    let reinv = in_dialog(
        "INVITE",
        moved,
        &hv(&ok, HeaderName::From),
        &hv(&ok, HeaderName::To),
        "nat3",
        11,
        "Contact: <sip:alice@127.0.0.9:5062>\n",
    );
    let out = h.send(moved, &reinv);
    let b_reinv = to(&out, BOB).into_iter().find(|m| m.method() == Some(Method::Invite)).expect("relayed");
    let out = h.send(BOB, &response_to(&b_reinv, 200, "", ""));
    let ok2 = one(&out, moved);
    h.send(moved, &in_dialog("ACK", moved, &hv(&ok2, HeaderName::From), &hv(&ok2, HeaderName::To), "nat3", 11, ""));
    let out = bye_from_bob(&mut h, &b_inv, 6);
    let bye = one(&out, moved);
    assert_eq!(bye.request_uri(), b"sip:alice@127.0.0.9:5062");
}

const REG: &str = "active_profile: reg\nprofiles:\n  reg:\n    enable_reg_caching: yes\n    min_reg_expires: 3600\n    max_ua_expires: 60\n    next_hop: 127.0.0.1:5002\n";

fn register(call_id: &str, cseq: u32, contact: &str, extra: &str) -> String {
    let tx: String = call_id.chars().filter(char::is_ascii_alphanumeric).collect();
    format!(
        "REGISTER sip:registrar.example SIP/2.0\nVia: SIP/2.0/UDP {ALICE_PRIVATE};branch=z9hG4bKreg{tx}{cseq};rport\nMax-Forwards: 70\nFrom: <sip:alice@example.com>;tag=r1\nTo: <sip:alice@example.com>\nCall-ID: {call_id}\nCSeq: {cseq} REGISTER\nContact: {contact}\nUser-Agent: phone/1\n{extra}Content-Length: 0\n\n"
    )
}

/// The registrar's 200 with exactly the `contacts` rows given.
fn registrar_ok(req: &Message, contacts: &str) -> String {
    response_to(req, 200, "reg", contacts).replace(&format!("Contact: <sip:peer@{BOB}>\n"), "")
}

fn alias_of_contact(m: &Message) -> String {
    let c = m.contact().expect("contact");
    let uri = String::from_utf8_lossy(c.uri).into_owned();
    uri.trim_start_matches("sip:").split('@').next().unwrap_or_default().to_string()
}

/// Registers alice through the caching profile; returns the alias the registrar saw.
fn registered(h: &mut Harness) -> String {
    let out = h.send(ALICE_NAT, &register("reg1", 1, &format!("<sip:alice@{ALICE_PRIVATE};ob>"), "Expires: 120\n"));
    let up = one(&out, BOB);
    assert_eq!(up.method(), Some(Method::Register));
    let contact = hv(&up, HeaderName::Contact);
    let alias = alias_of_contact(&up);
    assert_eq!(alias.len(), 16);
    assert_eq!(
        contact,
        format!("<sip:{alias}@{SBC}>;expires=3600"),
        "alias at the SBC, expiry raised to min_reg_expires"
    );
    assert!(up.header(HeaderName::Expires).is_none(), "the expiry is in the contact");
    assert!(!String::from_utf8_lossy(up.bytes()).contains("127.0.0.9"), "the UA's address is hidden");
    let ok = format!("Contact: <sip:{alias}@{SBC}>;expires=3600\nExpires: 3600\n");
    let out = h.send(BOB, &registrar_ok(&up, &ok));
    let ok = one(&out, ALICE_NAT);
    assert_eq!(ok.status(), Some(200));
    assert_eq!(
        hv(&ok, HeaderName::Contact),
        format!("<sip:alice@{ALICE_PRIVATE};ob>;expires=60"),
        "the UA gets max_ua_expires"
    );
    assert!(ok.header(HeaderName::Expires).is_none());
    alias
}

#[test]
fn reg_caching_aliases_contacts_and_caps_the_ua_expiry() {
    for mut h in Harness::with_both_stores(REG) {
        let alias = registered(&mut h);
        let b = h.regs.get(&alias).expect("cached");
        let deferred = h.engine.stats.get(Counter::RegistrationLookupsDeferred);
        assert_eq!(deferred > 0, h.store == Store::Later, "{:?} store, {deferred} deferred", h.store);
        assert_eq!(b.source, addr(ALICE_NAT));
        assert_eq!(b.contact, format!("sip:alice@{ALICE_PRIVATE};ob"));
        assert_eq!(b.aor, "sip:alice@example.com");
        assert_eq!(b.user_agent, "phone/1");
    }
}

#[test]
fn re_registration_inside_the_registrar_binding_is_answered_locally() {
    for mut h in Harness::with_both_stores(REG) {
        let alias = registered(&mut h);
        h.advance(Duration::from_secs(50));
        let out = h.send(ALICE_NAT, &register("reg1", 2, &format!("<sip:alice@{ALICE_PRIVATE};ob>"), "Expires: 120\n"));
        assert!(to(&out, BOB).is_empty(), "absorbed: {out:#?}");
        let ok = one(&out, ALICE_NAT);
        assert_eq!(ok.status(), Some(200));
        assert_eq!(hv(&ok, HeaderName::Contact), format!("<sip:alice@{ALICE_PRIVATE};ob>;expires=60"));
        assert_eq!(h.engine.stats.get(Counter::RegistrationsAbsorbed), 1);
        // From another source port (the NAT rebinding) it goes upstream again, same alias.
        let out = h.send("127.0.0.1:7009", &register("reg1", 3, &format!("<sip:alice@{ALICE_PRIVATE};ob>"), ""));
        let up = one(&out, BOB);
        assert_eq!(alias_of_contact(&up), alias);
        // De-registration goes upstream and the registrar's answer without the alias drops it.
        let out = h.send(ALICE_NAT, &register("reg1", 4, &format!("<sip:alice@{ALICE_PRIVATE};ob>"), "Expires: 0\n"));
        let up = one(&out, BOB);
        assert!(hv(&up, HeaderName::Contact).ends_with(";expires=0"));
        h.send(BOB, &registrar_ok(&up, ""));
        assert!(h.regs.get(&alias).is_none());
    }
}

#[test]
fn calls_to_an_alias_reach_the_registered_contact_at_its_source() {
    for mut h in Harness::with_both_stores(REG) {
        let alias = registered(&mut h);
        let inv = invite("in1", "").replace(&format!("INVITE sip:bob@{BOB}"), &format!("INVITE sip:{alias}@{SBC}"));
        let out = h.send(CAROL, &inv);
        let to_ua = one(&out, ALICE_NAT);
        assert_eq!(to_ua.method(), Some(Method::Invite));
        assert_eq!(to_ua.request_uri(), format!("sip:alice@{ALICE_PRIVATE};ob").as_bytes());
        // An alias nobody registered: 404.
        let inv =
            invite("in2", "").replace(&format!("INVITE sip:bob@{BOB}"), &format!("INVITE sip:0123456789abcdef@{SBC}"));
        let out = h.send(CAROL, &inv);
        let nf = to(&out, CAROL).into_iter().find(|m| m.status().is_some_and(|s| s >= 200)).expect("final");
        assert_eq!(nf.status(), Some(404));
    }
}

#[test]
fn malformed_registers_get_400_with_a_warning() {
    for mut h in Harness::with_both_stores(REG) {
        for (contact, extra, warning) in [
            ("<sip:alice@127.0.0.9>", "Expires: soon\n", "Malformed expires"),
            ("*", "Expires: 10\n", "Expires not equal 0"),
            ("<sip:alice@127.0.0.9>;expires=x", "", "Malformed expires"),
            ("\"unterminated <sip:a@b>", "", "Malformed contact"),
        ] {
            let out = h.send(ALICE_NAT, &register(&format!("bad-{warning}"), 1, contact, extra));
            let r = one(&out, ALICE_NAT);
            assert_eq!(r.status(), Some(400), "{contact} {extra}");
            assert!(String::from_utf8_lossy(r.bytes()).contains(warning), "{warning}: {r:?}");
        }
    }
}

#[test]
fn expired_bindings_are_collected() {
    for mut h in Harness::with_both_stores(REG) {
        let alias = registered(&mut h);
        assert_eq!(h.engine.collect_expired_registrations(h.now + Duration::from_secs(3599)), 0);
        assert_eq!(h.engine.collect_expired_registrations(h.now + Duration::from_secs(3601)), 1);
        assert!(h.regs.get(&alias).is_none());
    }
}

const REGISTRAR: &str =
    "active_profile: local\nprofiles:\n  local:\n    call_control: registrar\n    registrar_module: cc_registrar\n";

#[test]
fn the_local_registrar_answers_register_and_routes_calls_to_the_aor() {
    for mut h in Harness::with_both_stores(REGISTRAR) {
        let out = h.send(ALICE_NAT, &register("loc1", 1, &format!("<sip:alice@{ALICE_PRIVATE}>"), "Expires: 300\n"));
        // The profile has call control: its route hook runs in the driver first.
        assert!(out.is_empty());
        let id = match h.cc.pop() {
            Some(CcRequest::Route { call, .. }) => call,
            other => panic!("expected a route request, got {other:?}"),
        };
        let out =
            h.verdict(id, CcVerdict::Continue { call_timer: None, vars: BTreeMap::new(), overrides: BTreeMap::new() });
        let ok = one(&out, ALICE_NAT);
        assert_eq!(ok.status(), Some(200));
        assert_eq!(hv(&ok, HeaderName::Contact), format!("<sip:alice@{ALICE_PRIVATE}>;expires=300"));
        assert!(to(&out, BOB).is_empty(), "never relayed");
        // Two contacts: 403.
        let two = format!("<sip:a@{ALICE_PRIVATE}>, <sip:b@{ALICE_PRIVATE}>");
        h.send(ALICE_NAT, &register("loc2", 2, &two, ""));
        let Some(CcRequest::Route { call, .. }) = h.cc.pop() else { panic!("route") };
        let out = h
            .verdict(call, CcVerdict::Continue { call_timer: None, vars: BTreeMap::new(), overrides: BTreeMap::new() });
        assert_eq!(one(&out, ALICE_NAT).status(), Some(403));
        // A call to the AoR goes to the contact, at the REGISTER's source.
        let inv = invite("loc-call", "").replace(&format!("INVITE sip:bob@{BOB}"), "INVITE sip:alice@example.com");
        h.send(CAROL, &inv);
        let Some(CcRequest::Start { call, .. }) = h.cc.pop() else { panic!("start") };
        let out = h
            .verdict(call, CcVerdict::Continue { call_timer: None, vars: BTreeMap::new(), overrides: BTreeMap::new() });
        let to_ua = one(&out, ALICE_NAT);
        assert_eq!(to_ua.request_uri(), format!("sip:alice@{ALICE_PRIVATE}").as_bytes());
        // Nobody registered as bob: 404.
        let inv = invite("loc-404", "").replace(&format!("INVITE sip:bob@{BOB}"), "INVITE sip:bob@example.com");
        h.send(CAROL, &inv);
        let Some(CcRequest::Start { call, .. }) = h.cc.pop() else { panic!("start") };
        let out = h
            .verdict(call, CcVerdict::Continue { call_timer: None, vars: BTreeMap::new(), overrides: BTreeMap::new() });
        let nf = to(&out, CAROL).into_iter().find(|m| m.status().is_some_and(|s| s >= 200)).expect("final");
        assert_eq!(nf.status(), Some(404));
    }
}

const SST: &str = "active_profile: sst\nprofiles:\n  sst:\n    enable_session_timer: yes\n    session_expires: 120\n    minimum_timer: 90\n";

fn other(m: &Message, name: &str) -> Option<String> {
    m.other_header(name).map(|v| String::from_utf8_lossy(v).into_owned())
}

/// A timed call: the caller asks for 1800 s and will refresh; the callee answers with
/// `callee_se`. Returns (B's INVITE, A's 200).
fn timed_call(h: &mut Harness, callee_se: &str) -> (Message, Message) {
    let out = h.send(ALICE, &invite("sst1", "Session-Expires: 1800\nMin-SE: 90\nSupported: timer, 100rel\n"));
    let b_inv = one(&out, BOB);
    let out = h.send(BOB, &response_to(&b_inv, 200, "bt", &format!("Session-Expires: {callee_se}\nRequire: timer\n")));
    let ok = one(&out, ALICE);
    h.send(ALICE, &in_dialog("ACK", ALICE, &hv(&ok, HeaderName::From), &hv(&ok, HeaderName::To), "sst1", 10, ""));
    (b_inv, ok)
}

#[test]
fn each_leg_negotiates_its_own_session_timer() {
    let mut h = Harness::with_yaml(SST);
    let (b_inv, ok) = timed_call(&mut h, "120;refresher=uas");
    assert_eq!(other(&b_inv, "Session-Expires").as_deref(), Some("120"), "ours, not the caller's 1800");
    assert_eq!(other(&b_inv, "Min-SE").as_deref(), Some("90"));
    assert!(b_inv.lists_option(HeaderName::Supported, b"timer"));
    assert!(b_inv.lists_option(HeaderName::Supported, b"100rel"), "other options still cross");
    assert_eq!(b_inv.values(HeaderName::Supported).filter(|v| *v == b"timer").count(), 1);
    // The caller asked 1800, we 120: the shorter wins; it refreshes (it supports timers).
    assert_eq!(other(&ok, "Session-Expires").as_deref(), Some("120;refresher=uac"));
    assert!(ok.lists_option(HeaderName::Require, b"timer"));
}

#[test]
fn a_callee_that_stops_refreshing_is_hung_up_on_both_legs() {
    let mut h = Harness::with_yaml(SST);
    timed_call(&mut h, "120;refresher=uas");
    // The callee refreshes (uas): it has until 120 - 32 = 88 s.
    let out = h.advance(Duration::from_secs(87));
    assert!(out.is_empty(), "{out:#?}");
    let out = h.advance(Duration::from_secs(2));
    let (a, b) = (first(&out, ALICE), first(&out, BOB));
    for bye in [&a, &b] {
        assert_eq!(bye.method(), Some(Method::Bye));
        assert!(other(bye, "Reason").is_some_and(|r| r.contains("session_timeout")), "{bye:?}");
    }
    assert_eq!(h.engine.stats.get(Counter::SessionTimeouts), 1);
}

#[test]
fn the_sbc_refreshes_at_half_the_interval_and_falls_back_to_invite() {
    // (The caller's leg runs no timer here: it would expire, unrefreshed, at 88 s.)
    let mut h = Harness::with_yaml(&format!("{SST}    enable_aleg_session_timer: no\n"));
    let (b_inv, _) = timed_call(&mut h, "120;refresher=uac");
    let out = h.advance(Duration::from_secs(59));
    assert!(to(&out, BOB).is_empty());
    let out = h.advance(Duration::from_secs(2));
    let upd = first(&out, BOB);
    assert_eq!(upd.method(), Some(Method::Update));
    assert_eq!(other(&upd, "Session-Expires").as_deref(), Some("120;refresher=uac"));
    assert!(to(&out, ALICE).is_empty(), "a refresh stays on its leg");
    // The callee has no UPDATE: the refresh is a re-INVITE offering what the callee has.
    let out = h.send(BOB, &response_to(&upd, 501, "", ""));
    let reinv = one(&out, BOB);
    assert_eq!(reinv.method(), Some(Method::Invite));
    assert_eq!(reinv.body(), b_inv.body(), "the last SDP sent to the callee");
    let out = h.send(BOB, &response_to(&reinv, 200, "", "Session-Expires: 120;refresher=uac\n"));
    let ack = one(&out, BOB);
    assert_eq!(ack.method(), Some(Method::Ack));
    assert_eq!(h.engine.stats.get(Counter::SessionRefreshes), 2);
    // The next refresh is a re-INVITE straight away, 60 s later.
    let out = h.advance(Duration::from_secs(61));
    assert_eq!(first(&out, BOB).method(), Some(Method::Invite));
    assert_eq!(h.engine.active_calls(), 1);
}

/// Glare on our refresh (491): sent again after a random wait up to `max_491_retry_time`.
#[test]
fn a_refresh_met_by_glare_is_sent_again_within_max_491_retry_time() {
    let mut h = Harness::with_yaml(&format!("{SST}    enable_aleg_session_timer: no\n    max_491_retry_time: 300\n"));
    timed_call(&mut h, "120;refresher=uac");
    let upd = first(&h.advance(Duration::from_secs(61)), BOB);
    assert_eq!(upd.method(), Some(Method::Update));
    let out = h.send(BOB, &response_to(&upd, 491, "", ""));
    assert!(to(&out, BOB).is_empty(), "not at once: {out:#?}");
    let again = first(&h.advance(Duration::from_millis(301)), BOB);
    assert_eq!(again.method(), Some(Method::Update));
    assert!(again.cseq().map(|c| c.num) > upd.cseq().map(|c| c.num), "a new request");
    assert_eq!(h.engine.active_calls(), 1);
}

#[test]
fn a_too_short_session_interval_gets_422_with_min_se() {
    let mut h = Harness::with_yaml(SST);
    let out = h.send(ALICE, &invite("sst422", "Session-Expires: 60\n"));
    let r = to(&out, ALICE).into_iter().find(|m| m.status().is_some_and(|s| s >= 200)).expect("final");
    assert_eq!(r.status(), Some(422));
    assert_eq!(other(&r, "Min-SE").as_deref(), Some("90"));
    assert!(to(&out, BOB).is_empty());
    let out = h.send(ALICE, &invite("sst400", "Session-Expires: soon\n"));
    assert_eq!(one(&out, ALICE).status(), Some(400));
}

#[test]
fn a_caller_refresh_is_answered_with_the_callers_own_timer() {
    let mut h = Harness::with_yaml(SST);
    let (_, ok) = timed_call(&mut h, "120;refresher=uas");
    let upd = in_dialog(
        "UPDATE",
        ALICE,
        &hv(&ok, HeaderName::From),
        &hv(&ok, HeaderName::To),
        "sst1",
        11,
        "Session-Expires: 600;refresher=uac\nContact: <sip:alice@127.0.0.1:5001>\n",
    );
    let out = h.send(ALICE, &upd);
    let b_upd = one(&out, BOB);
    assert_eq!(other(&b_upd, "Session-Expires").as_deref(), Some("120;refresher=uas"), "the callee's leg, not 600");
    let out = h.send(BOB, &response_to(&b_upd, 200, "", "Session-Expires: 120;refresher=uas\n"));
    let ok2 = one(&out, ALICE);
    assert_eq!(other(&ok2, "Session-Expires").as_deref(), Some("120;refresher=uac"), "600 asked, 120 ours");
    // The callee refreshed too (its UPDATE answered): no teardown at the old deadline.
    let out = h.advance(Duration::from_secs(87));
    assert!(out.iter().all(|s| s.msg.method() != Some(Method::Bye)));
}

/// Credentials, and the callee as the profile's next hop: challenges from it are answered.
const AUTH: &str = "active_profile: auth\nprofiles:\n  auth:\n    next_hop: 127.0.0.1:5002\n    enable_auth: yes\n    auth_user: $P(u)\n    auth_pwd: $P(p)\n";

#[test]
fn a_challenge_from_the_callee_is_answered_once_and_a_second_one_relayed() {
    let mut h = Harness::with_yaml(AUTH);
    let out = h.send(ALICE, &invite("auth1", "P-App-Param: u=alice;p=s3cret\n"));
    let b_inv = one(&out, BOB);
    assert!(b_inv.other_header("P-App-Param").is_none());
    let ch = "Proxy-Authenticate: Digest realm=\"carrier\", nonce=\"n0nce\", qop=\"auth\", algorithm=SHA-256, opaque=\"op\"\n";
    let out = h.send(BOB, &response_to(&b_inv, 407, "bt", ch));
    assert!(to(&out, ALICE).is_empty(), "the caller never sees the challenge");
    let to_bob = to(&out, BOB);
    assert_eq!(to_bob.len(), 2, "ACK for the 407 and the INVITE again: {to_bob:#?}");
    let again = to_bob.iter().find(|m| m.method() == Some(Method::Invite)).expect("resent");
    assert_eq!(again.cseq().unwrap().num, b_inv.cseq().unwrap().num + 1);
    assert_eq!(again.call_id(), b_inv.call_id());
    assert_ne!(again.top_via().unwrap().branch(), b_inv.top_via().unwrap().branch());
    assert_eq!(again.body(), b_inv.body());
    let answer = crate::sip::digest::Answer::parse(again.other_header("Proxy-Authorization").expect("credentials"))
        .expect("parses");
    assert_eq!(
        (answer.username.as_str(), answer.realm.as_str(), answer.uri.as_str()),
        ("alice", "carrier", format!("sip:bob@{BOB}").as_str())
    );
    assert!(answer.verify("s3cret", "INVITE"));
    assert!(!String::from_utf8_lossy(again.bytes()).contains("s3cret"));
    assert_eq!(h.engine.stats.get(Counter::AuthAnswered), 1);
    // A second challenge (wrong password, say) goes to the caller: no loop.
    let out = h.send(BOB, &response_to(again, 407, "bt2", ch));
    let relayed = one(&out, ALICE);
    assert_eq!(relayed.status(), Some(407));
    assert!(to(&out, BOB).iter().all(|m| m.method() == Some(Method::Ack)));
    assert_eq!(h.engine.active_calls(), 0);
}

#[test]
fn an_authenticated_call_keeps_counting_cseq_on_the_callee_leg() {
    let mut h = Harness::with_yaml(AUTH);
    // The caller's own credentials (for someone else) do not reach the callee.
    let out =
        h.send(ALICE, &invite("auth2", "P-App-Param: u=alice;p=pw\nProxy-Authorization: Digest username=\"x\"\n"));
    let b_inv = one(&out, BOB);
    assert!(b_inv.other_header("Proxy-Authorization").is_none());
    let ch = "WWW-Authenticate: Digest realm=\"r\", nonce=\"n\"\n";
    let out = h.send(BOB, &response_to(&b_inv, 401, "bt", ch));
    let again = to(&out, BOB).into_iter().find(|m| m.method() == Some(Method::Invite)).expect("resent");
    assert!(again.other_header("Authorization").is_some());
    let out = h.send(BOB, &response_to(&again, 200, "bt", ""));
    let ok = one(&out, ALICE);
    let out =
        h.send(ALICE, &in_dialog("ACK", ALICE, &hv(&ok, HeaderName::From), &hv(&ok, HeaderName::To), "auth2", 10, ""));
    let ack = one(&out, BOB);
    assert_eq!(ack.cseq().unwrap().num, again.cseq().unwrap().num, "the ACK answers the resent INVITE");
    assert_eq!(ack.other_header("Authorization"), again.other_header("Authorization"), "with its credentials");
    let out =
        h.send(ALICE, &in_dialog("BYE", ALICE, &hv(&ok, HeaderName::From), &hv(&ok, HeaderName::To), "auth2", 11, ""));
    assert_eq!(one(&out, BOB).cseq().unwrap().num, again.cseq().unwrap().num + 1);
}

const UAS_AUTH: &str = "active_profile: uas\nprofiles:\n  uas:\n    enable_bleg_uas_auth: yes\n    uas_auth_bleg_realm: sbc.example\n    uas_auth_bleg_user: callee\n    uas_auth_bleg_pwd: pw\n";

#[test]
fn requests_from_the_callee_must_prove_the_configured_credentials() {
    let mut h = Harness::with_yaml(UAS_AUTH);
    let (b_inv, _) = established(&mut h);
    let from = "<sip:bob@biloxi.example>;tag=bt";
    let (to_hdr, cid) = (hv(&b_inv, HeaderName::From), hv(&b_inv, HeaderName::CallId));
    let out = h.send(BOB, &in_dialog("BYE", BOB, from, &to_hdr, &cid, 5, ""));
    let r = one(&out, BOB);
    assert_eq!(r.status(), Some(401));
    assert!(to(&out, ALICE).is_empty());
    let ch =
        crate::sip::digest::Challenge::parse(r.other_header("WWW-Authenticate").expect("challenge")).expect("digest");
    assert_eq!(ch.realm, "sbc.example");
    // Wrong password: challenged again.
    let bad = crate::sip::digest::authorization(&ch, "callee", "nope", "BYE", &format!("sip:{SBC}"), "c1");
    let out = h.send(BOB, &in_dialog("BYE", BOB, from, &to_hdr, &cid, 6, &format!("Authorization: {bad}\n")));
    assert_eq!(one(&out, BOB).status(), Some(401));
    let good = crate::sip::digest::authorization(&ch, "callee", "pw", "BYE", &format!("sip:{SBC}"), "c2");
    let out = h.send(BOB, &in_dialog("BYE", BOB, from, &to_hdr, &cid, 7, &format!("Authorization: {good}\n")));
    let bye = one(&out, ALICE);
    assert_eq!(bye.method(), Some(Method::Bye));
    assert!(bye.other_header("Authorization").is_none(), "credentials stay on their leg");
    assert_eq!(h.engine.stats.get(Counter::AuthChallenged), 2);
}

#[test]
fn a_422_from_the_callee_is_retried_with_its_min_se_once() {
    let mut h = Harness::with_yaml(SST);
    let out = h.send(ALICE, &invite("sst422b", ""));
    let b_inv = one(&out, BOB);
    let out = h.send(BOB, &response_to(&b_inv, 422, "bt", "Min-SE: 300\n"));
    assert!(to(&out, ALICE).is_empty());
    let again = to(&out, BOB).into_iter().find(|m| m.method() == Some(Method::Invite)).expect("asked again");
    assert_eq!(other(&again, "Session-Expires").as_deref(), Some("300"));
    assert_eq!(other(&again, "Min-SE").as_deref(), Some("300"));
    assert_eq!(again.values(HeaderName::Supported).filter(|v| *v == b"timer").count(), 1);
    assert_eq!(again.cseq().unwrap().num, b_inv.cseq().unwrap().num + 1);
    // Asking for more than maximum_timer (900): the call fails (the caller's own timer is not
    // the problem, so it does not get a 422).
    let out = h.send(BOB, &response_to(&again, 422, "bt", "Min-SE: 1200\n"));
    let r = to(&out, ALICE).into_iter().find(|m| m.status().is_some_and(|s| s >= 200)).expect("final");
    assert_eq!(r.status(), Some(500));
}

#[test]
fn contact_options_rewrite_the_bindings_of_an_uncached_register() {
    let yaml = "active_profile: r\nprofiles:\n  r:\n    next_hop: 127.0.0.1:5002\n    contact_user: $fU-x\n    contact_host: pbx.example\n    contact_displayname: Desk\n";
    let mut h = Harness::with_yaml(yaml);
    let out = h.send(ALICE_NAT, &register("rw1", 1, &format!("<sip:alice@{ALICE_PRIVATE};ob>;expires=300, *"), ""));
    let up = one(&out, BOB);
    let contacts: Vec<String> =
        up.values(HeaderName::Contact).map(|v| String::from_utf8_lossy(v).into_owned()).collect();
    assert_eq!(contacts, ["\"Desk\" <sip:alice-x@pbx.example:5060;ob>;expires=300", "*"]);
}

#[test]
fn challenges_are_answered_for_two_realms_at_most_and_422_once() {
    let mut h = Harness::with_yaml(AUTH);
    let out = h.send(ALICE, &invite("realms", "P-App-Param: u=alice;p=pw\n"));
    let mut req = one(&out, BOB);
    for (i, realm) in ["proxy", "uas"].iter().enumerate() {
        let ch = format!("Proxy-Authenticate: Digest realm=\"{realm}\", nonce=\"n{i}\"\n");
        let out = h.send(BOB, &response_to(&req, 407, "bt", &ch));
        req = to(&out, BOB).into_iter().find(|m| m.method() == Some(Method::Invite)).expect("answered");
    }
    assert_eq!(
        req.headers().iter().filter(|h| req.slice(h.name_span).eq_ignore_ascii_case(b"Proxy-Authorization")).count(),
        2
    );
    let out = h.send(BOB, &response_to(&req, 407, "bt", "Proxy-Authenticate: Digest realm=\"third\", nonce=\"n3\"\n"));
    assert_eq!(first(&out, ALICE).status(), Some(407), "a third realm is the caller's business");

    let mut h = Harness::with_yaml(SST);
    let out = h.send(ALICE, &invite("422twice", ""));
    let b_inv = one(&out, BOB);
    let out = h.send(BOB, &response_to(&b_inv, 422, "bt", "Min-SE: 300\n"));
    let again = to(&out, BOB).into_iter().find(|m| m.method() == Some(Method::Invite)).expect("once");
    let out = h.send(BOB, &response_to(&again, 422, "bt", "Min-SE: 400\n"));
    assert!(to(&out, BOB).iter().all(|m| m.method() == Some(Method::Ack)), "not twice");
    assert_eq!(first(&out, ALICE).status(), Some(500));
}

#[test]
fn a_challenge_after_the_caller_cancelled_is_not_answered() {
    let mut h = Harness::with_yaml(AUTH);
    let inv = invite("authcancel", "P-App-Param: u=alice;p=pw\n");
    let out = h.send(ALICE, &inv);
    let b_inv = one(&out, BOB);
    h.send(BOB, &response_to(&b_inv, 100, "", ""));
    let cancel = inv
        .replacen("INVITE sip:", "CANCEL sip:", 1)
        .replace("CSeq: 10 INVITE", "CSeq: 10 CANCEL")
        .split("Content-Type")
        .next()
        .unwrap()
        .to_string()
        + "Content-Length: 0\n\n";
    h.send(ALICE, &cancel);
    let out = h.send(BOB, &response_to(&b_inv, 407, "bt", "Proxy-Authenticate: Digest realm=\"r\", nonce=\"n\"\n"));
    assert!(to(&out, BOB).iter().all(|m| m.method() != Some(Method::Invite)), "{out:#?}");
    assert_eq!(h.engine.active_calls(), 0);
}

#[test]
fn a_teardown_bye_that_is_challenged_is_answered() {
    let mut h = Harness::with_yaml(&format!("{AUTH}    enable_session_timer: yes\n    enable_aleg_session_timer: no\n    minimum_timer: 90\n    session_expires: 90\n"));
    let out = h.send(ALICE, &invite("authbye", "P-App-Param: u=alice;p=pw\n"));
    let b_inv = one(&out, BOB);
    let out = h.send(BOB, &response_to(&b_inv, 200, "bt", "Session-Expires: 90;refresher=uas\n"));
    let ok = one(&out, ALICE);
    h.send(ALICE, &in_dialog("ACK", ALICE, &hv(&ok, HeaderName::From), &hv(&ok, HeaderName::To), "authbye", 10, ""));
    // The callee never refreshes: the SBC hangs up, and the callee wants credentials for it.
    let out = h.advance(Duration::from_secs(61));
    let bye = first(&out, BOB);
    assert_eq!(bye.method(), Some(Method::Bye));
    assert_eq!(h.engine.active_calls(), 0);
    let out = h.send(BOB, &response_to(&bye, 401, "", "WWW-Authenticate: Digest realm=\"r\", nonce=\"n\"\n"));
    let again = one(&out, BOB);
    assert_eq!(again.method(), Some(Method::Bye));
    assert_eq!(again.cseq().unwrap().num, bye.cseq().unwrap().num + 1);
    let a = crate::sip::digest::Answer::parse(again.other_header("Authorization").expect("credentials")).unwrap();
    assert!(a.verify("pw", "BYE"));
}

#[test]
fn a_callee_granting_a_tiny_interval_does_not_cause_a_refresh_storm() {
    let mut h = Harness::with_yaml(SST);
    timed_call(&mut h, "1;refresher=uac");
    // Held to our Min-SE (90): the first refresh is at 45 s, not at once.
    let out = h.advance(Duration::from_secs(44));
    assert!(to(&out, BOB).is_empty(), "{out:#?}");
    let out = h.advance(Duration::from_secs(2));
    assert_eq!(first(&out, BOB).method(), Some(Method::Update));
    assert_eq!(h.engine.stats.get(Counter::SessionRefreshes), 1);
}

#[test]
fn a_rebooted_phone_gets_a_new_upstream_call_id_and_limits_hold() {
    for mut h in Harness::with_both_stores(REG) {
        registered(&mut h);
        let first_up = {
            // The same phone refreshing from another port keeps the upstream Call-ID...
            let out = h.send("127.0.0.1:7009", &register("reg1", 2, &format!("<sip:alice@{ALICE_PRIVATE};ob>"), ""));
            one(&out, BOB)
        };
        // ...after a reboot (new Call-ID, CSeq from 1) the registrar gets a new one, so the lower
        // CSeq is not refused as out of order.
        let out =
            h.send("127.0.0.1:7010", &register("reg-after-reboot", 1, &format!("<sip:alice@{ALICE_PRIVATE};ob>"), ""));
        let rebooted = one(&out, BOB);
        assert_ne!(rebooted.call_id(), first_up.call_id());

        // More than 16 contacts: 403.
        let many: Vec<String> = (0..17).map(|i| format!("<sip:a{i}@127.0.0.9>")).collect();
        let out = h.send(ALICE_NAT, &register("many", 1, &many.join(", "), ""));
        assert_eq!(one(&out, ALICE_NAT).status(), Some(403));

        // A full cache refuses new bindings (503), not refreshes of existing ones.
        h.engine.cfg.max_registrations = 1;
        let out = h.send(CAROL, &register("other", 1, "<sip:carol@127.0.0.9>", ""));
        assert_eq!(one(&out, CAROL).status(), Some(503));
        assert_eq!(h.regs.len(), 1);
    }
}

#[test]
fn callee_credentials_cannot_be_replayed_moved_or_kept_past_their_nonce() {
    let mut h = Harness::with_yaml(UAS_AUTH);
    let (b_inv, _) = established(&mut h);
    let from = "<sip:bob@biloxi.example>;tag=bt";
    let (to_hdr, cid) = (hv(&b_inv, HeaderName::From), hv(&b_inv, HeaderName::CallId));
    let uri = format!("sip:{SBC}");
    let info =
        |cseq: u32, auth: &str| in_dialog("INFO", BOB, from, &to_hdr, &cid, cseq, &format!("Authorization: {auth}\n"));
    let out = h.send(BOB, &in_dialog("INFO", BOB, from, &to_hdr, &cid, 5, ""));
    let ch = crate::sip::digest::Challenge::parse(one(&out, BOB).other_header("WWW-Authenticate").unwrap()).unwrap();
    let good = crate::sip::digest::authorization(&ch, "callee", "pw", "INFO", &uri, "c1");
    let out = h.send(BOB, &info(6, &good));
    assert_eq!(one(&out, ALICE).method(), Some(Method::Info));
    h.send(ALICE, &response_to(&one(&out, ALICE), 200, "", ""));
    // The same answer again (a replay): challenged.
    let out = h.send(BOB, &info(7, &good));
    assert_eq!(first(&out, BOB).status(), Some(401));
    // An answer for another URI: challenged.
    let other_uri = crate::sip::digest::authorization(&ch, "callee", "pw", "INFO", "sip:elsewhere", "c2");
    let out = h.send(BOB, &info(8, &other_uri));
    assert_eq!(first(&out, BOB).status(), Some(401));
    // Past five minutes the nonce is stale: challenged with stale=true.
    h.advance(Duration::from_secs(301));
    let late = crate::sip::digest::authorization(&ch, "callee", "pw", "INFO", &uri, "c3");
    let out = h.send(BOB, &info(9, &late));
    let r = first(&out, BOB);
    assert_eq!(r.status(), Some(401));
    assert!(String::from_utf8_lossy(r.other_header("WWW-Authenticate").unwrap()).contains("stale=true"));
    // A nonce from another dialog does not pass here.
    let mut h2 = Harness::with_yaml(UAS_AUTH);
    let (b2, _) = established(&mut h2);
    let out =
        h2.send(BOB, &in_dialog("INFO", BOB, from, &hv(&b2, HeaderName::From), &hv(&b2, HeaderName::CallId), 5, ""));
    let ch2 = crate::sip::digest::Challenge::parse(one(&out, BOB).other_header("WWW-Authenticate").unwrap()).unwrap();
    let borrowed = crate::sip::digest::authorization(&ch2, "callee", "pw", "INFO", &uri, "c4");
    let out = h.send(BOB, &info(10, &borrowed));
    assert_eq!(first(&out, BOB).status(), Some(401));
}

#[test]
fn reg_cache_variables_read_the_cache_and_a_star_register_clears_it() {
    let yaml = format!("{REG}    append_headers: \"X-Reg: $uc|$us|$ui\\r\\nX-Me: $UA|$Ua\"\n");
    for mut h in Harness::with_both_stores(&yaml) {
        let alias = registered(&mut h);
        // A call to the alias: $uc/$us/$ui describe its registration.
        let inv = invite("vars1", "").replace(&format!("INVITE sip:bob@{BOB}"), &format!("INVITE sip:{alias}@{SBC}"));
        let out = h.send(CAROL, &inv);
        let to_ua = one(&out, ALICE_NAT);
        assert_eq!(
            other(&to_ua, "X-Reg").as_deref(),
            Some(format!("sip:alice@{ALICE_PRIVATE};ob|127.0.0.1:7001|default").as_str())
        );
        // A call from the registered phone: $UA is its alias, $Ua the AoR of its Contact.
        let from_phone = invite("vars2", "")
            .replace("From: \"Alice\" <sip:alice@atlanta.example>", "From: <sip:alice@example.com>")
            .replace(&format!("Contact: <sip:alice@{ALICE}>"), &format!("Contact: <sip:alice@{ALICE_PRIVATE};ob>"))
            .replace(&format!("INVITE sip:bob@{BOB}"), &format!("INVITE sip:{alias}@{SBC}"));
        // (It calls itself through the SBC: the INVITE comes back to it.)
        let out = h.send(ALICE_NAT, &from_phone);
        let m = to(&out, ALICE_NAT).into_iter().find(|m| m.method() == Some(Method::Invite)).expect("the call");
        let me = other(&m, "X-Me").unwrap_or_default();
        assert_eq!(me, format!("{alias}|sip:alice@example.com"));
        // `*` with Expires: 0 goes upstream as it is; the registrar's answer empties the AoR.
        let out = h.send(ALICE_NAT, &register("reg1", 9, "*", "Expires: 0\n"));
        let up = one(&out, BOB);
        assert_eq!(hv(&up, HeaderName::Contact), "*");
        assert_eq!(hv(&up, HeaderName::Expires), "0");
        let out = h.send(BOB, &registrar_ok(&up, ""));
        assert_eq!(one(&out, ALICE_NAT).status(), Some(200));
        assert!(h.regs.is_empty());
    }
}

/// An INVITE from Carol to a registered alias.
fn invite_to_alias(call_id: &str, alias: &str) -> String {
    invite(call_id, "").replace(&format!("INVITE sip:bob@{BOB}"), &format!("INVITE sip:{alias}@{SBC}"))
}

#[test]
fn a_request_waits_for_a_store_that_answers_later_and_absorbs_its_retransmissions() {
    let mut h = Harness::with_store(REG, Store::Held);
    let reg = register("late1", 1, &format!("<sip:alice@{ALICE_PRIVATE};ob>"), "Expires: 120\n");
    assert!(h.send(ALICE_NAT, &reg).is_empty(), "nothing before the store answers");
    assert!(h.send(ALICE_NAT, &reg).is_empty(), "a retransmission meanwhile is absorbed");
    assert_eq!(h.engine.stats.get(Counter::RegistrationLookupsDeferred), 1);
    let up = one(&h.answer_lookups(), BOB);
    assert_eq!(up.method(), Some(Method::Register));
    let alias = alias_of_contact(&up);
    let ok = format!("Contact: <sip:{alias}@{SBC}>;expires=3600\n");
    assert_eq!(one(&h.send(BOB, &registrar_ok(&up, &ok)), ALICE_NAT).status(), Some(200));
    // A call to the alias: 100 at once, the INVITE when the store has answered.
    let out = h.send(CAROL, &invite_to_alias("late2", &alias));
    assert_eq!(one(&out, CAROL).status(), Some(100));
    assert!(to(&out, ALICE_NAT).is_empty());
    let to_ua = one(&h.answer_lookups(), ALICE_NAT);
    assert_eq!(to_ua.request_uri(), format!("sip:alice@{ALICE_PRIVATE};ob").as_bytes());
    assert_eq!(h.engine.stats.get(Counter::RegistrationLookupsDeferred), 2);
}

#[test]
fn a_store_that_does_not_answer_in_time_gets_the_request_refused() {
    let mut h = Harness::with_store(REG, Store::Held);
    let inv = invite_to_alias("late3", "0123456789abcdef");
    assert_eq!(one(&h.send(CAROL, &inv), CAROL).status(), Some(100));
    // The INVITE's transaction answers its retransmission with the 100 again.
    assert_eq!(one(&h.send(CAROL, &inv), CAROL).status(), Some(100));
    let out = h.advance(reg_lookup::LOOKUP_DEADLINE);
    let refused = first(&out, CAROL);
    assert_eq!(refused.status(), Some(503));
    assert_eq!(hv(&refused, HeaderName::CallId), "late3");
    assert_eq!(h.engine.stats.get(Counter::RegistrationLookupsLate), 1);
    assert!(h.answer_lookups().is_empty(), "the late answer is ignored");
    // Sent by the transaction: resent until the caller's ACK (RFC 3261 §17.2.1).
    let again = h.advance(Duration::from_secs(1));
    assert!(to(&again, CAROL).iter().any(|m| m.status() == Some(503)), "{again:#?}");
    // The ACK of a non-2xx answer is the INVITE's transaction's (same branch, RFC 3261 §17.1.1.3).
    let ack = cancel_for_invite(&inv)
        .replacen("CANCEL sip", "ACK sip", 1)
        .replace("CSeq: 10 CANCEL", "CSeq: 10 ACK")
        .replace("To: <sip:bob@biloxi.example>", &format!("To: {}", hv(&refused, HeaderName::To)));
    h.send(CAROL, &ack);
    assert!(to(&h.advance(Duration::from_secs(40)), CAROL).is_empty(), "the ACK stopped them");
    assert!(h.engine.is_idle());
    assert_eq!(h.engine.active_transactions(), 0);
}

/// A call whose call control ran while its callee registered: the registrations are looked up
/// again when the hooks let it go on, so the call finds the new binding.
#[test]
fn registrations_are_looked_up_again_after_call_control() {
    let yaml = "active_profile: \"$H(X-Profile)\"\nprofiles:\n  reg:\n    enable_reg_caching: yes\n    min_reg_expires: 3600\n    max_ua_expires: 60\n    next_hop: 127.0.0.1:5002\n  regcc:\n    enable_reg_caching: yes\n    call_control: [timer]\n    timer_module: cc_call_timer\n    timer_timer: \"60\"\n";
    let mut h = Harness::with_store(yaml, Store::Held);
    let contact = format!("sip:alice@{ALICE_PRIVATE};ob");
    let alias = regcache::alias_of("sip:alice@example.com", &contact, addr(ALICE_NAT).ip());
    let inv = invite_to_alias("late6", &alias).replace("Max-Forwards: 70\n", "Max-Forwards: 70\nX-Profile: regcc\n");
    h.send(CAROL, &inv);
    h.answer_lookups();
    let call = match h.cc.first() {
        Some(CcRequest::Start { call, .. }) => *call,
        other => panic!("expected a Start, got {other:?}"),
    };
    // Meanwhile alice registers.
    h.send(ALICE_NAT, &register("late7", 1, &format!("<{contact}>"), "X-Profile: reg\n"));
    let up = one(&h.answer_lookups(), BOB);
    assert_eq!(alias_of_contact(&up), alias);
    let ok = format!("Contact: <sip:{alias}@{SBC}>;expires=3600\n");
    h.send(BOB, &registrar_ok(&up, &ok));
    // The hooks say go on: looked up again, the call reaches alice.
    let go = CcVerdict::Continue { call_timer: None, vars: BTreeMap::new(), overrides: BTreeMap::new() };
    assert!(h.verdict(call, go).is_empty(), "waits for the second lookup");
    let to_ua = one(&h.answer_lookups(), ALICE_NAT);
    assert_eq!(to_ua.request_uri(), contact.as_bytes());
    assert_eq!(h.engine.stats.get(Counter::RegistrationLookupsDeferred), 3);
}

#[test]
fn a_request_cancelled_while_it_waits_for_the_store_gets_487() {
    let mut h = Harness::with_store(REG, Store::Held);
    let inv = invite_to_alias("late4", "0123456789abcdef");
    h.send(CAROL, &inv);
    let out = h.send(CAROL, &cancel_for_invite(&inv));
    let codes: Vec<_> = to(&out, CAROL).iter().map(|m| (m.status(), hv(m, HeaderName::CSeq))).collect();
    assert_eq!(codes, vec![(Some(200), "10 CANCEL".into()), (Some(487), "10 INVITE".into())]);
    assert!(h.answer_lookups().is_empty(), "the answer finds nothing waiting");
    assert!(h.engine.is_idle());
}

#[test]
fn nothing_is_looked_up_when_no_profile_reads_registrations() {
    let mut h = Harness::with_store(NAT, Store::Held);
    let out = h.send(ALICE_NAT, &nat_invite("late5"));
    assert_eq!(one(&out, BOB).method(), Some(Method::Invite));
    assert_eq!(h.engine.stats.get(Counter::RegistrationLookupsDeferred), 0);
}
