//! Call control in the engine, with virtual time: a parked call, its verdict, `$V()`, the call
//! timer, refusal and failure, CANCEL while `start` runs, `end` exactly once, route hooks.

use super::*;

const CC_PROFILE: &str = r#"
active_profile: p
profiles:
  p:
    call_control: [limit, timer]
    limit_module: cc_pcalls
    limit_uuid: "$fU"
    timer_module: cc_call_timer
    timer_timer: "$H(X-Max)"
    RURI: "sip:$V(route::user)@$rd"
"#;

fn started(h: &Harness) -> (CallHandle, Vec<callcontrol::CcInstance>) {
    match h.cc.first() {
        Some(CcRequest::Start { call, chain, .. }) => (*call, chain.to_vec()),
        other => panic!("expected a Start, got {other:?}"),
    }
}

fn go(timer: Option<u64>, vars: &[(&str, &str)]) -> CcVerdict {
    CcVerdict::Continue {
        call_timer: timer.map(Duration::from_secs),
        vars: vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        overrides: BTreeMap::new(),
    }
}

#[test]
fn call_control_parks_the_call_then_applies_timer_and_variables() {
    let mut h = Harness::with_yaml(CC_PROFILE);
    let out = h.send(ALICE, &invite("cc1@alice", "X-Max: 5\n"));
    assert_eq!(one(&out, ALICE).status(), Some(100));
    assert!(to(&out, BOB).is_empty(), "no B leg before the verdict");
    let (call, chain) = started(&h);
    assert_eq!(chain.len(), 2);
    assert_eq!((chain[0].module.as_str(), chain[0].params["uuid"].as_str()), ("cc_pcalls", "alice"));
    assert_eq!(chain[1].params["timer"], "5");

    let out = h.verdict(call, go(Some(5), &[("route::user", "routed")]));
    let b = one(&out, BOB);
    assert_eq!(b.request_uri(), format!("sip:routed@{BOB}").as_bytes(), "$V() set by a module");
    let out = h.send(BOB, &response_to(&b, 200, "bt", ""));
    let ok = one(&out, ALICE);
    assert!(matches!(h.cc.get(1), Some(CcRequest::Connect { call: c }) if *c == call));
    h.send(ALICE, &in_dialog("ACK", ALICE, &hv(&ok, HeaderName::From), &hv(&ok, HeaderName::To), "cc1@alice", 10, ""));
    // The call timer runs from the answer: both legs get BYE after 5 s.
    let out = h.advance(Duration::from_secs(5));
    assert_eq!(one(&out, ALICE).method(), Some(Method::Bye));
    assert_eq!(one(&out, BOB).method(), Some(Method::Bye));
    match h.cc.get(2) {
        Some(CcRequest::End { call: c, end }) => {
            assert_eq!(*c, call);
            assert_eq!((end.by, end.reason.as_str(), end.answered), (callcontrol::EndedBy::Sbc, "call_timer", true));
        }
        other => panic!("expected End, got {other:?}"),
    }
    assert_eq!(h.cc.len(), 3, "end is announced once");
}

#[test]
fn call_control_refusal_and_failure_answer_the_caller() {
    let mut h = Harness::with_yaml(CC_PROFILE);
    h.send(ALICE, &invite("cc2@alice", ""));
    let (call, _) = started(&h);
    let refuse = CcVerdict::Refuse(LocalReply::new(402, "Too Many Simultaneous Calls").with("X-Why", "limit"));
    let out = h.verdict(call, refuse);
    let r = one(&out, ALICE);
    assert_eq!((r.status(), r.other_header("X-Why")), (Some(402), Some(&b"limit"[..])));
    assert!(to(&out, BOB).is_empty());
    assert!(matches!(h.cc.last(), Some(CcRequest::End { end, .. }) if !end.answered && end.code == 402));

    let mut h = Harness::with_yaml(CC_PROFILE);
    h.send(ALICE, &invite("cc3@alice", ""));
    let (call, _) = started(&h);
    let out = h.verdict(call, CcVerdict::Failed(LocalReply::new(503, "Service Unavailable")));
    assert_eq!(one(&out, ALICE).status(), Some(503));
}

#[test]
fn cancel_while_call_control_runs() {
    let mut h = Harness::with_yaml(CC_PROFILE);
    let inv = invite("cc4@alice", "");
    h.send(ALICE, &inv);
    let (call, _) = started(&h);
    let cancel = format!(
        "CANCEL sip:bob@{BOB} SIP/2.0\nVia: SIP/2.0/UDP {ALICE};branch=z9hG4bKcc4@alice;rport\nMax-Forwards: 70\nFrom: \"Alice\" <sip:alice@atlanta.example>;tag=at\nTo: <sip:bob@biloxi.example>\nCall-ID: cc4@alice\nCSeq: 10 CANCEL\nContent-Length: 0\n\n"
    );
    let out = h.send(ALICE, &cancel);
    let codes: Vec<_> = to(&out, ALICE).iter().filter_map(Message::status).collect();
    assert!(codes.contains(&200) && codes.contains(&487), "{codes:?}");
    assert!(matches!(h.cc.last(), Some(CcRequest::End { end, .. }) if end.by == callcontrol::EndedBy::Caller));
    // The verdict that arrives afterwards changes nothing.
    let out = h.verdict(call, go(None, &[]));
    assert!(out.is_empty());
    assert_eq!(h.engine.active_calls(), 0);
}

#[test]
fn call_control_overrides_replace_profile_options_literally() {
    let mut h = Harness::with_yaml(CC_PROFILE);
    h.send(ALICE, &invite("cc5@alice", ""));
    let (call, _) = started(&h);
    let overrides: BTreeMap<String, String> = [
        ("RURI".to_string(), format!("sip:$rU-literal@{BOB}")),
        ("To".to_string(), "<sip:other@x.example>".to_string()),
    ]
    .into_iter()
    .collect();
    let out = h.verdict(call, CcVerdict::Continue { call_timer: None, vars: BTreeMap::new(), overrides });
    let b = one(&out, BOB);
    assert_eq!(b.request_uri(), format!("sip:$rU-literal@{BOB}").as_bytes(), "never expanded");
    assert_eq!(hv(&b, HeaderName::To), "<sip:other@x.example>");
    // An override that fails the checks is a 500, like a bad expansion.
    let mut h = Harness::with_yaml(CC_PROFILE);
    h.send(ALICE, &invite("cc6@alice", ""));
    let (call, _) = started(&h);
    let bad: BTreeMap<String, String> = [("RURI".to_string(), "sip:a@b>,<sip:evil".to_string())].into_iter().collect();
    let out = h.verdict(call, CcVerdict::Continue { call_timer: None, vars: BTreeMap::new(), overrides: bad });
    assert_eq!(one(&out, ALICE).status(), Some(500));
}

#[test]
fn out_of_dialog_requests_wait_for_route_hooks() {
    let mut h = Harness::with_yaml(CC_PROFILE);
    let msg = format!(
        "MESSAGE sip:bob@{BOB} SIP/2.0\nVia: SIP/2.0/UDP {ALICE};branch=z9hG4bKr1\nMax-Forwards: 70\nFrom: <sip:alice@a>;tag=r1\nTo: <sip:bob@b>\nCall-ID: r1@alice\nCSeq: 1 MESSAGE\nContent-Length: 0\n\n"
    );
    let out = h.send(ALICE, &msg);
    assert!(out.is_empty(), "nothing relayed or answered before the verdict");
    let Some(CcRequest::Route { call, chain, .. }) = h.cc.first().cloned() else {
        panic!("expected Route: {:?}", h.cc)
    };
    assert_eq!(chain.len(), 2);
    // A retransmission is absorbed meanwhile.
    assert!(h.send(ALICE, &msg).is_empty());
    let out = h.verdict(call, go(None, &[("route::user", "routed")]));
    assert_eq!(one(&out, BOB).request_uri(), format!("sip:routed@{BOB}").as_bytes());

    let mut h = Harness::with_yaml(CC_PROFILE);
    h.send(ALICE, &msg.replace("r1", "r2"));
    let Some(CcRequest::Route { call, .. }) = h.cc.first().cloned() else { panic!() };
    let out = h.verdict(call, CcVerdict::Refuse(LocalReply::new(403, "Forbidden")));
    assert_eq!(one(&out, ALICE).status(), Some(403));
}

#[test]
fn call_control_hears_in_call_requests_and_replies() {
    let mut h = Harness::with_yaml(CC_PROFILE);
    h.send(ALICE, &invite("ev1@alice", ""));
    let (call, _) = started(&h);
    let out = h.verdict(call, go(None, &[("route::user", "bob")]));
    let b = one(&out, BOB);
    let out = h.send(BOB, &response_to(&b, 200, "bt", ""));
    let ok = one(&out, ALICE);
    let (from, to_hdr) = (hv(&ok, HeaderName::From), hv(&ok, HeaderName::To));
    h.send(ALICE, &in_dialog("ACK", ALICE, &from, &to_hdr, "ev1@alice", 10, ""));
    let out = h.send(ALICE, &in_dialog("INFO", ALICE, &from, &to_hdr, "ev1@alice", 11, ""));
    let info = one(&out, BOB);
    h.send(BOB, &response_to(&info, 200, "", ""));
    let events: Vec<_> =
        h.cc.iter()
            .filter_map(|r| match r {
                CcRequest::Event { event, .. } => Some(event.clone()),
                _ => None,
            })
            .collect();
    assert_eq!(
        events,
        vec![
            callcontrol::LegEvent::Request { from: callcontrol::Party::Caller, method: "INFO".into() },
            callcontrol::LegEvent::Reply { from: callcontrol::Party::Callee, code: 200, method: "INFO".into() },
        ]
    );
}
