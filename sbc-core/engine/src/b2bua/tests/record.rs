//! A call's record (`record.rs`): written by one engine, read back from JSON by another that
//! takes the call over and carries on with it.

use super::*;

/// Media relayed, session timers on the callee's leg.
const YAML: &str = "active_profile: rec\nprofiles:\n  rec:\n    enable_rtprelay: yes\n    enable_session_timer: yes\n    session_expires: 120\n    minimum_timer: 90\n";

const PORTS: (u16, u16) = (44000, 44099);

const BOB_SDP: &str = "v=0\no=- 2 2 IN IP4 127.0.0.2\ns=-\nc=IN IP4 127.0.0.2\nt=0 0\nm=audio 7000 RTP/AVP 0\n";

fn with_sdp(msg: String, sdp: &str) -> String {
    let body = sdp.replace('\n', "\r\n");
    msg.replace(
        "Content-Length: 0\n\n",
        &format!("Content-Type: application/sdp\nContent-Length: {}\n\n{}", body.len(), sdp),
    )
}

/// An answered call through `h`; returns (B's INVITE, A's 200).
fn answered(h: &mut Harness, call_id: &str) -> (Message, Message) {
    let out = h.send(ALICE, &invite(call_id, ""));
    let b_inv = one(&out, BOB);
    let ok_b = response_to(&b_inv, 200, "bt", "Session-Expires: 120;refresher=uac\nRequire: timer\n");
    let out = h.send(BOB, &with_sdp(ok_b, BOB_SDP));
    let ok = one(&out, ALICE);
    h.send(ALICE, &in_dialog("ACK", ALICE, &hv(&ok, HeaderName::From), &hv(&ok, HeaderName::To), call_id, 10, ""));
    (b_inv, ok)
}

fn the_call(h: &Harness) -> CallHandle {
    *h.engine.calls.keys().next().expect("a call")
}

#[test]
fn an_answered_call_moves_to_another_engine_and_goes_on() {
    let mut first = Harness::with_relay_yaml(YAML, PORTS);
    let (b_inv, ok) = answered(&mut first, "rec-1@alice");
    first.advance(Duration::from_secs(10));
    let record = first.engine.call_record(first.now, the_call(&first)).expect("recordable");
    let json = serde_json::to_string(&record).expect("serialises");
    let read: CallRecord = serde_json::from_str(&json).expect("reads back");
    assert_eq!(read, record);
    assert_eq!(read.session_timers[1].and_then(|t| t.due_in_ms), Some(50_000), "refresh at 60 s, 10 s gone");

    // Another node (its own identifiers) takes the call over.
    let mut second = Harness::with_relay_yaml(YAML, PORTS);
    second.engine.ids = IdGen::new([9; 32], 0);
    second.now = first.now;
    second.engine.adopt_call(second.now, &read).expect("adopted");
    assert!(second.drain().is_empty(), "nothing is sent to adopt a call");
    let mut opened: Vec<_> = second.streams.values().map(|p| [p[0].1, p[1].1]).collect();
    let mut recorded: Vec<_> = first.streams.values().map(|p| [p[0].1, p[1].1]).collect();
    opened.sort();
    recorded.sort();
    assert_eq!(opened, recorded, "the media flows through the same ports");

    // The session timer runs from the record: the refresh is due 50 s after the takeover.
    // (The relay reports packets, so the media check at 50 s keeps the call.)
    second.media_activity = Some(second.now + Duration::from_secs(45));
    let early = second.advance(Duration::from_secs(49));
    assert!(to(&early, BOB).iter().all(|m| m.method() != Some(Method::Update)), "{early:#?}");
    let out = second.advance(Duration::from_secs(2));
    let refresh = to(&out, BOB).into_iter().find(|m| m.method() == Some(Method::Update)).expect("a refresh");
    second.send(BOB, &response_to(&refresh, 200, "bt", "Session-Expires: 120;refresher=uac\n"));

    // The caller re-INVITEs: relayed to the callee on its dialog, the SDP on the same port.
    let (from, to_hdr) = (hv(&ok, HeaderName::From), hv(&ok, HeaderName::To));
    let out = second.send(ALICE, &in_dialog("INVITE", ALICE, &from, &to_hdr, "rec-1@alice", 11, ""));
    let b_reinv = to(&out, BOB)
        .into_iter()
        .find(|m| m.method() == Some(Method::Invite))
        .unwrap_or_else(|| panic!("relayed: {out:#?}"));
    assert_eq!(b_reinv.call_id(), b_inv.call_id());
    assert_eq!(hv(&b_reinv, HeaderName::From), hv(&b_inv, HeaderName::From));
    assert_eq!(b_reinv.cseq().map(|c| c.num), Some(3), "the B leg's CSeq goes on after the refresh");
    let out = second.send(BOB, &with_sdp(response_to(&b_reinv, 200, "bt", ""), BOB_SDP));
    let ok2 = one(&out, ALICE);
    assert_eq!(String::from_utf8_lossy(ok2.body()), String::from_utf8_lossy(ok.body()), "same relay port");
    second.send(ALICE, &in_dialog("ACK", ALICE, &from, &to_hdr, "rec-1@alice", 11, ""));

    // The callee hangs up: the caller's dialog gets the BYE, with its next CSeq.
    let bye_b = in_dialog(
        "BYE",
        BOB,
        "<sip:bob@biloxi.example>;tag=bt",
        &hv(&b_inv, HeaderName::From),
        &hv(&b_inv, HeaderName::CallId),
        9,
        "",
    );
    let out = second.send(BOB, &bye_b);
    let bye = one(&out, ALICE);
    assert_eq!(bye.method(), Some(Method::Bye));
    assert_eq!(bye.call_id(), Some(&b"rec-1@alice"[..]));
    assert_eq!(hv(&bye, HeaderName::To), from, "addressed to the caller, with its tag");
    second.send(ALICE, &response_to(&bye, 200, "", ""));
    assert_eq!(second.engine.active_calls(), 0);
    assert!(second.streams.is_empty(), "the streams closed");
    assert_eq!(second.engine.media_ports_in_use(), 0);
}

#[test]
fn only_answered_quiet_calls_have_a_record() {
    let mut h = Harness::with_relay_yaml(YAML, PORTS);
    let out = h.send(ALICE, &invite("rec-2@alice", ""));
    let b_inv = one(&out, BOB);
    let call = the_call(&h);
    assert_eq!(h.engine.call_record(h.now, call), Err(NotRecordable::NotConfirmed));
    let ok_b = response_to(&b_inv, 200, "bt", "Session-Expires: 120;refresher=uac\nRequire: timer\n");
    let out = h.send(BOB, &with_sdp(ok_b, BOB_SDP));
    let ok = one(&out, ALICE);
    // Until the caller's ACK, the 2xx is resent: the call's transaction is in flight.
    assert_eq!(h.engine.call_record(h.now, call), Err(NotRecordable::Busy));
    let (from, to_hdr) = (hv(&ok, HeaderName::From), hv(&ok, HeaderName::To));
    h.send(ALICE, &in_dialog("ACK", ALICE, &from, &to_hdr, "rec-2@alice", 10, ""));
    assert!(h.engine.call_record(h.now, call).is_ok());
    // A re-INVITE under way: busy until it is done.
    h.send(ALICE, &in_dialog("INVITE", ALICE, &from, &to_hdr, "rec-2@alice", 11, ""));
    assert_eq!(h.engine.call_record(h.now, call), Err(NotRecordable::Busy));
    assert_eq!(h.engine.call_record(h.now, CallHandle::from_raw(999)), Err(NotRecordable::NoSuchCall));
}

#[test]
fn a_record_that_cannot_be_adopted_leaves_nothing_behind() {
    let mut first = Harness::with_relay_yaml(YAML, PORTS);
    answered(&mut first, "rec-3@alice");
    let record = first.engine.call_record(first.now, the_call(&first)).expect("recordable");

    // Its ports are taken here (by the same call, adopted once already).
    let mut second = Harness::with_relay_yaml(YAML, PORTS);
    second.engine.adopt_call(second.now, &record).expect("adopted");
    second.drain();
    let again = second.engine.adopt_call(second.now, &record);
    assert!(matches!(again, Err(AdoptError::DialogExists)), "{again:?}");

    let mut other_tags = record.clone();
    for leg in &mut other_tags.legs {
        leg.local_tag.push('x');
    }
    let taken = second.engine.adopt_call(second.now, &other_tags);
    assert!(matches!(taken, Err(AdoptError::Media(_))), "{taken:?}");
    let mut same_tags = other_tags.clone();
    same_tags.legs[1].local_tag = same_tags.legs[0].local_tag.clone();
    assert!(matches!(second.engine.adopt_call(second.now, &same_tags), Err(AdoptError::DialogExists)));
    let elsewhere = CallRecord { shard: 1, ..other_tags.clone() };
    assert!(matches!(second.engine.adopt_call(second.now, &elsewhere), Err(AdoptError::WrongShard(1))));
    for (bad, what) in [
        (CallRecord { profile: "gone".into(), ..record.clone() }, "profile"),
        (CallRecord { format: 2, ..record.clone() }, "format"),
        (CallRecord { ends_in_ms: Some(u64::MAX), ..other_tags.clone() }, "time"),
    ] {
        assert!(second.engine.adopt_call(second.now, &bad).is_err(), "{what}");
    }
    let mut no_socket = other_tags.clone();
    no_socket.legs[0].interface = "elsewhere".into();
    assert!(matches!(second.engine.adopt_call(second.now, &no_socket), Err(AdoptError::NoSocket { .. })));
    assert_eq!(second.engine.active_calls(), 1, "only the first adoption");
    assert_eq!(second.engine.media_ports_in_use(), 2);
    assert!(second.drain().is_empty());
}

/// The relay that takes a call over has seen no packet yet: the call gets a whole media
/// timeout from the takeover before silence ends it.
#[test]
fn an_adopted_call_gets_a_media_timeout_from_the_takeover() {
    // (No session timers: nobody here would answer their refreshes.)
    let yaml = "active_profile: rec\nprofiles:\n  rec:\n    enable_rtprelay: yes\n";
    let mut first = Harness::with_relay_yaml(yaml, PORTS);
    answered(&mut first, "rec-4@alice");
    first.advance(Duration::from_secs(50));
    first.media_activity = Some(first.now);
    let record = first.engine.call_record(first.now, the_call(&first)).expect("recordable");
    assert!(record.media_check_in_ms.is_some_and(|ms| ms <= 10_000), "{:?}", record.media_check_in_ms);
    let mut second = Harness::with_relay_yaml(yaml, PORTS);
    second.now = first.now;
    second.engine.adopt_call(second.now, &record).expect("adopted");
    let quiet = second.advance(Duration::from_secs(59));
    assert!(quiet.iter().all(|s| s.msg.method() != Some(Method::Bye)), "{quiet:#?}");
    let out = second.advance(Duration::from_secs(2));
    assert!(out.iter().any(|s| s.msg.method() == Some(Method::Bye)), "silent for a whole timeout: ended");
    assert_eq!(second.engine.stats.get(Counter::MediaTimeouts), 1);
}

/// A call whose profile was built for it (`session_expires` from a header,
/// `profiles/src/per_call.rs`) is adopted with that profile: the record carries its values.
#[test]
fn a_call_with_a_profile_of_its_own_is_adopted_with_it() {
    const OWN: &str =
        "active_profile: own\nprofiles:\n  own:\n    enable_session_timer: yes\n    session_expires: \"$H(X-SE)\"\n";
    let mut first = Harness::with_yaml(OWN);
    let out = first.send(ALICE, &invite("rec-own@alice", "X-SE: 300\n"));
    let b_inv = one(&out, BOB);
    let se = b_inv.other_header("Session-Expires").map(|v| String::from_utf8_lossy(v).into_owned());
    assert!(se.as_deref().is_some_and(|v| v.starts_with("300")), "the request's value: {se:?}");
    let ok_b = response_to(&b_inv, 200, "bt", "Session-Expires: 300;refresher=uac\nRequire: timer\n");
    let ok = one(&first.send(BOB, &ok_b), ALICE);
    first.send(
        ALICE,
        &in_dialog("ACK", ALICE, &hv(&ok, HeaderName::From), &hv(&ok, HeaderName::To), "rec-own@alice", 10, ""),
    );
    let record = first.engine.call_record(first.now, the_call(&first)).expect("recordable");
    let read: CallRecord = serde_json::from_str(&serde_json::to_string(&record).expect("json")).expect("reads back");
    assert_eq!(read.plan.per_call, [("session_expires".to_string(), "300".to_string())]);

    let mut second = Harness::with_yaml(OWN);
    second.engine.ids = IdGen::new([9; 32], 0);
    second.engine.adopt_call(second.now, &read).expect("adopted");
    let call = second.engine.calls.values().next().expect("the call");
    assert_eq!(call.rules.profile.session_timer.map(|t| t.session_expires), Some(300), "the call's own profile");
    let shared = second.engine.cfg.profiles.load().profiles["own"].session_timer.map(|t| t.session_expires);
    assert_eq!(shared, Some(120), "the shared one is left as it is (SEMS's default)");
}
