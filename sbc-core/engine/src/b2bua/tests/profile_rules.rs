//! Profiles applied on the wire, with virtual time: rewriting, filters, codecs, reply
//! translation, refusal, reload, next hops and failover, shared rules.

use super::*;

const REWRITE: &str = r#"
active_profile: ["$H(P-SBCProfile)", rewrite]
profiles:
  rewrite:
    RURI: "sip:$rU-x@$rd"
    From: "\"Anon\" <sip:anonymous@invalid>"
    To: "<sip:$rU@callee.example>"
    Call-ID: "$ci_leg2"
    append_headers: ["X-Src: $si", "X-Prof: $M($si=>map)"]
    append_headers_req: "X-Every: 1"
    aleg_append_headers_req: "X-To-Caller: 1"
    header_filter: blacklist
    header_list: [X-Custom]
    message_filter: blacklist
    message_list: [info]
    sdp_filter: whitelist
    sdpfilter_list: [pcma]
    reply_translations: "486=>603 Declined here"
  refuse:
    refuse_with: "403 Forbidden"
    append_headers: "Warning: 399 $rd \"not here\""
regex_maps:
  map: ["^127\\.0\\.0\\.1$=>local"]
"#;

fn invite_with_codecs(call_id: &str, extra: &str) -> String {
    invite_sdp(
        call_id,
        extra,
        "v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 6000 RTP/AVP 0 8\na=rtpmap:0 PCMU/8000\na=rtpmap:8 PCMA/8000\n",
    )
}

#[test]
fn profile_rewrites_the_b_leg_request() {
    let mut h = Harness::with_yaml(REWRITE);
    let out = h.send(ALICE, &invite_with_codecs("p1@alice", "P-App-Param: x=1\n"));
    let b = one(&out, BOB);
    assert_eq!(b.request_uri(), format!("sip:bob-x@{BOB}").as_bytes());
    assert_eq!(hv(&b, HeaderName::From).split(";tag=").next(), Some("\"Anon\" <sip:anonymous@invalid>"));
    assert_eq!(hv(&b, HeaderName::To), "<sip:bob@callee.example>");
    assert_eq!(hv(&b, HeaderName::CallId), "p1@alice_leg2");
    assert_eq!(b.other_header("X-Src"), Some(&b"127.0.0.1"[..]));
    assert_eq!(b.other_header("X-Prof"), Some(&b"local"[..]));
    assert_eq!(b.other_header("X-Every"), Some(&b"1"[..]));
    assert_eq!(b.other_header("X-Custom"), None, "blacklisted");
    assert_eq!(b.other_header("P-App-Param"), None, "control headers stay at the SBC");
    let body = String::from_utf8_lossy(b.body()).into_owned();
    assert!(body.contains("m=audio 6000 RTP/AVP 8\r\n") && !body.contains("PCMU"), "{body}");
    assert_eq!(b.header_value(HeaderName::ContentLength), Some(body.len().to_string().as_bytes()));

    // Replies are translated; the class never changes.
    let out = h.send(BOB, &response_to(&b, 486, "bt", ""));
    let busy = one(&out, ALICE);
    assert_eq!((busy.status(), busy.reason()), (Some(603), &b"Declined here"[..]));
}

#[test]
fn profile_filters_in_dialog_methods_and_appends_per_leg() {
    let mut h = Harness::with_yaml(REWRITE);
    let out = h.send(ALICE, &invite_with_codecs("p2@alice", ""));
    let b = one(&out, BOB);
    let out = h.send(BOB, &response_to(&b, 200, "bt", ""));
    let ok = one(&out, ALICE);
    let (from, to_hdr) = (hv(&ok, HeaderName::From), hv(&ok, HeaderName::To));
    h.send(ALICE, &in_dialog("ACK", ALICE, &from, &to_hdr, "p2@alice", 10, ""));
    let out = h.send(ALICE, &in_dialog("INFO", ALICE, &from, &to_hdr, "p2@alice", 11, ""));
    let refused = one(&out, ALICE);
    assert_eq!(refused.status(), Some(405));
    assert!(refused.other_header("Allow").is_some_and(|a| a.starts_with(b"INVITE, ACK, BYE")));
    assert!(to(&out, BOB).is_empty(), "a filtered request is not relayed");
    // The callee hangs up: the BYE to the caller carries the A-leg headers only.
    let b_from = hv(&b, HeaderName::To) + ";tag=bt";
    let b_to = hv(&b, HeaderName::From);
    let out = h.send(BOB, &in_dialog("BYE", BOB, &b_from, &b_to, "p2@alice_leg2", 1, ""));
    let bye = one(&out, ALICE);
    assert_eq!(bye.other_header("X-To-Caller"), Some(&b"1"[..]));
    assert_eq!(bye.other_header("X-Every"), None);
}

#[test]
fn profile_selection_refusal_and_unknown_profile() {
    let mut h = Harness::with_yaml(REWRITE);
    let out = h.send(ALICE, &invite("p3@alice", "P-SBCProfile: refuse\n"));
    let r = one(&out, ALICE);
    assert_eq!((r.status(), r.reason()), (Some(403), &b"Forbidden"[..]));
    assert_eq!(r.other_header("Warning"), Some(format!("399 {BOB} \"not here\"").as_bytes()));
    assert!(to(&out, BOB).is_empty());
    let out = h.send(ALICE, &invite("p4@alice", "P-SBCProfile: nonesuch\n"));
    assert_eq!(one(&out, ALICE).status(), Some(500), "an unknown name does not fall through");
}

#[test]
fn codec_filter_leaving_nothing_answers_488() {
    let mut h = Harness::with_yaml(REWRITE);
    // The default test offer has PCMU only; the profile keeps PCMA only.
    let out = h.send(ALICE, &invite("p5@alice", ""));
    let r = to(&out, ALICE);
    assert_eq!(r.last().and_then(Message::status), Some(488));
    assert!(to(&out, BOB).is_empty());
}

#[test]
fn reload_does_not_touch_running_calls() {
    let mut h = Harness::with_yaml(REWRITE);
    let out = h.send(ALICE, &invite_with_codecs("p6@alice", ""));
    let b = one(&out, BOB);
    // Swap in a transparent snapshot: the running call keeps its reply translation.
    let fresh = profiles::config::Config::from_yaml("", "empty.yaml").unwrap().profiles;
    h.engine.config().profiles.replace(fresh).unwrap();
    let out = h.send(BOB, &response_to(&b, 486, "bt", ""));
    assert_eq!(one(&out, ALICE).status(), Some(603));
    // A new call uses the new snapshot: no rewriting, no filtering.
    let out = h.send(ALICE, &invite("p7@alice", ""));
    let b2 = one(&out, BOB);
    assert_eq!(b2.request_uri(), format!("sip:bob@{BOB}").as_bytes());
    assert_eq!(b2.other_header("X-Custom"), Some(&b"keep  me"[..]));
}

#[test]
fn next_hop_and_outbound_proxy() {
    let yaml = format!(
        "active_profile: p\nprofiles:\n  p:\n    next_hop: \"{CAROL}\"\n    outbound_proxy: \"sip:proxy.example\"\n"
    );
    let mut h = Harness::with_yaml(&yaml);
    let out = h.send(ALICE, &invite("p8@alice", ""));
    let b = one(&out, CAROL);
    assert_eq!(b.request_uri(), format!("sip:bob@{BOB}").as_bytes(), "R-URI kept, sent to the next hop");
    assert_eq!(hv(&b, HeaderName::Route), "<sip:proxy.example;lr>");
}

#[test]
fn next_hop_alternatives_take_over_on_503_and_timeout() {
    // (The TCP alternative is skipped: this SBC has no TCP socket.)
    let yaml = format!(
        "active_profile: p\nprofiles:\n  p:\n    next_hop: \"{BOB}, 127.0.0.1:5009/tcp, {CAROL}, 127.0.0.1:5004\"\n"
    );
    let mut h = Harness::with_yaml(&yaml);
    let out = h.send(ALICE, &invite("f1@alice", ""));
    let first = one(&out, BOB);
    // The first hop is overloaded: the same dialog goes to the second, with the next CSeq.
    let out = h.send(BOB, &response_to(&first, 503, "", ""));
    assert!(to(&out, ALICE).iter().all(|m| m.status() != Some(503)), "the caller does not see the 503");
    let second = one(&out, CAROL);
    assert_eq!(second.call_id(), first.call_id());
    assert_eq!(second.from_tag(), first.from_tag());
    assert_eq!(second.cseq().unwrap().num, first.cseq().unwrap().num + 1);
    assert_ne!(second.top_via().unwrap().branch(), first.top_via().unwrap().branch());
    // The second never answers: after Timer B the third is tried.
    let out = h.advance(Duration::from_secs(33));
    // (with its retransmissions, as for any INVITE over UDP)
    let third = to(&out, "127.0.0.1:5004").into_iter().next().expect("INVITE to the third hop");
    assert_eq!(third.cseq().unwrap().num, first.cseq().unwrap().num + 2);
    // The third answers: the call is up with it.
    let out = h.send("127.0.0.1:5004", &response_to(&third, 200, "ct", ""));
    assert_eq!(one(&out, ALICE).status(), Some(200));
}

#[test]
fn last_next_hop_failure_reaches_the_caller() {
    let yaml = format!("active_profile: p\nprofiles:\n  p:\n    next_hop: \"{BOB}, {CAROL}\"\n");
    let mut h = Harness::with_yaml(&yaml);
    let out = h.send(ALICE, &invite("f2@alice", ""));
    let first = one(&out, BOB);
    let out = h.send(BOB, &response_to(&first, 503, "", ""));
    let second = one(&out, CAROL);
    let out = h.send(CAROL, &response_to(&second, 503, "", ""));
    assert_eq!(to(&out, ALICE).last().and_then(Message::status), Some(503));
}

#[test]
fn transparent_dialog_ids_cross_the_sbc() {
    let mut h = Harness::with_yaml("active_profile: p\nprofiles:\n  p: { transparent_dlg_id: yes }\n");
    let out = h.send(ALICE, &invite("t1@alice", ""));
    let b = one(&out, BOB);
    assert_eq!(b.call_id(), Some(&b"t1@alice"[..]));
    assert_eq!(b.from_tag(), Some(&b"at"[..]));
    assert_eq!(b.cseq().unwrap().num, 10);
    let out = h.send(BOB, &response_to(&b, 180, "bt", ""));
    let ringing = one(&out, ALICE);
    assert_eq!(ringing.to_tag(), Some(&b"bt"[..]), "the callee's tag reaches the caller");
    let out = h.send(BOB, &response_to(&b, 200, "bt", ""));
    let ok = one(&out, ALICE);
    assert_eq!(ok.to_tag(), Some(&b"bt"[..]));
    let (from, to_hdr) = (hv(&ok, HeaderName::From), hv(&ok, HeaderName::To));
    let out = h.send(ALICE, &in_dialog("ACK", ALICE, &from, &to_hdr, "t1@alice", 10, ""));
    assert_eq!(one(&out, BOB).cseq().unwrap().num, 10);
    // The caller hangs up with the identifiers it saw; the callee gets the same ones.
    let out = h.send(ALICE, &in_dialog("BYE", ALICE, &from, &to_hdr, "t1@alice", 11, ""));
    let bye = one(&out, BOB);
    assert_eq!(
        (bye.call_id(), bye.from_tag(), bye.to_tag()),
        (Some(&b"t1@alice"[..]), Some(&b"at"[..]), Some(&b"bt"[..]))
    );
    let out = h.send(BOB, &response_to(&bye, 200, "", ""));
    assert_eq!(one(&out, ALICE).status(), Some(200));
}

#[test]
fn profile_routing_contact_and_sdp_options_on_the_wire() {
    let yaml = format!(
        r#"active_profile: p
profiles:
  p:
    RURI_host: "core.example.net:5090"
    next_hop: "{CAROL}"
    next_hop_1st_req: yes
    patch_ruri_next_hop: no
    outbound_proxy: "sip:edge.example.net"
    force_outbound_proxy: yes
    bleg_contact_user: "$fU"
    bleg_contact_params: "+sip.instance=x"
    aleg_contact_host: "sbc.example.net"
    aleg_next_hop: "{ALICE}"
    aleg_outbound_proxy: "sip:a-edge.example.net"
    aleg_force_outbound_proxy: yes
    media_filter: blacklist
    mediafilter_list: [video]
    sdp_alines_filter: blacklist
    sdp_alinesfilter_list: [ptime]
    sdp_anonymize: yes
    codec_preference: [pcma]
    aleg_sdp_filter: blacklist
    aleg_sdpfilter_list: [pcmu]
"#
    );
    let mut h = Harness::with_yaml(&yaml);
    let offer = "v=0\no=alice 7 7 IN IP4 127.0.0.1\ns=Talk\nu=http://x\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 6000 RTP/AVP 0 8\na=rtpmap:0 PCMU/8000\na=rtpmap:8 PCMA/8000\na=ptime:20\nm=video 6002 RTP/AVP 96\na=rtpmap:96 H264/90000\n";
    let out = h.send(ALICE, &invite_sdp("r1@alice", "", offer));
    let b = one(&out, CAROL);
    assert_eq!(b.request_uri(), b"sip:bob@core.example.net:5090");
    assert_eq!(hv(&b, HeaderName::Route), "<sip:edge.example.net;lr>");
    assert_eq!(hv(&b, HeaderName::Contact), format!("<sip:alice@{SBC}>;+sip.instance=x"));
    let body = String::from_utf8_lossy(b.body()).into_owned();
    assert!(body.contains("m=audio 6000 RTP/AVP 8 0\r\n"), "codec order: {body}");
    assert!(body.contains("m=video 0 RTP/AVP 96"), "video disabled: {body}");
    assert!(!body.contains("a=ptime"), "attribute filtered: {body}");
    assert!(body.contains("o=- 7 7 IN IP4 127.0.0.1\r\ns=-\r\nc="), "anonymised: {body}");

    // The answer toward the caller: PCMU filtered by the A-side filter, our A-side Contact.
    let answer = "v=0\r\no=bob 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n";
    let ok_text = response_from(CAROL, &b, 200, "bt", "Content-Type: application/sdp\n")
        .replace("Content-Length: 0\n\n", &format!("Content-Length: {}\n\n{answer}", answer.len()));
    let out = h.send(CAROL, &ok_text);
    let ok = one(&out, ALICE);
    assert_eq!(hv(&ok, HeaderName::Contact), "<sip:sbc.example.net>");
    let body = String::from_utf8_lossy(ok.body()).into_owned();
    assert!(body.contains("m=audio 7000 RTP/AVP 8\r\n") && !body.contains("PCMU"), "{body}");

    // next_hop_1st_req: in-dialog requests no longer go to the next hop but, the proxy being
    // forced, to the proxy, its Route first and the callee's Contact as Request-URI.
    let (from, to_hdr) = (hv(&ok, HeaderName::From), hv(&ok, HeaderName::To));
    h.send(ALICE, &in_dialog("ACK", ALICE, &from, &to_hdr, "r1@alice", 10, ""));
    let out = h.send(ALICE, &in_dialog("INFO", ALICE, &from, &to_hdr, "r1@alice", 11, ""));
    let proxy = Peer::Host("edge.example.net".into(), 5060);
    let info = out.iter().find(|s| s.to == proxy).map(|s| s.msg.clone()).expect("INFO through the forced proxy");
    assert!(to(&out, CAROL).is_empty());
    assert_eq!(info.request_uri(), format!("sip:peer@{CAROL}").as_bytes());
    assert_eq!(hv(&info, HeaderName::Route), "<sip:edge.example.net;lr>");
    // Toward the caller: aleg_next_hop decides where, the forced A-side proxy is routed through.
    let b_from = hv(&b, HeaderName::To) + ";tag=bt";
    let b_to = hv(&b, HeaderName::From);
    let b_call_id = hv(&b, HeaderName::CallId);
    let out = h.send(CAROL, &in_dialog("BYE", CAROL, &b_from, &b_to, &b_call_id, 1, ""));
    let bye = one(&out, ALICE);
    assert_eq!(hv(&bye, HeaderName::Route), "<sip:a-edge.example.net;lr>");
}

#[test]
fn out_of_dialog_relay_applies_the_profile_both_ways() {
    let yaml = "active_profile: p\nprofiles:\n  p:\n    RURI: \"sip:relay-$rU@$rd\"\n    header_filter: blacklist\n    header_list: [X-Secret]\n    append_headers: \"X-Via-Sbc: $Rn\"\n    reply_translations: \"404=>480 Gone Away\"\n";
    let mut h = Harness::with_yaml(yaml);
    let msg = format!(
        "MESSAGE sip:bob@{BOB} SIP/2.0\nVia: SIP/2.0/UDP {ALICE};branch=z9hG4bKm1\nMax-Forwards: 70\nFrom: <sip:alice@a>;tag=m1\nTo: <sip:bob@b>\nCall-ID: m1@alice\nCSeq: 1 MESSAGE\nX-Secret: s\nContent-Length: 0\n\n"
    );
    let out = h.send(ALICE, &msg);
    let relayed = one(&out, BOB);
    assert_eq!(relayed.request_uri(), format!("sip:relay-bob@{BOB}").as_bytes());
    assert_eq!(relayed.other_header("X-Secret"), None);
    assert_eq!(relayed.other_header("X-Via-Sbc"), Some(&b"default"[..]));
    let out = h.send(BOB, &response_to(&relayed, 404, "bt", "X-Secret: r\n"));
    let resp = one(&out, ALICE);
    assert_eq!((resp.status(), resp.reason()), (Some(480), &b"Gone Away"[..]));
    assert_eq!(resp.other_header("X-Secret"), None, "the filter applies to replies too");
}

#[test]
fn transparent_ids_fall_back_when_the_callers_tag_is_taken() {
    let mut h = Harness::with_yaml("active_profile: p\nprofiles:\n  p: { transparent_dlg_id: yes }\n");
    let out = h.send(ALICE, &invite("t2@alice", ""));
    let first = one(&out, BOB);
    assert_eq!(first.from_tag(), Some(&b"at"[..]));
    // A second call with the same From tag must not take over the first one's dialog.
    let out = h.send(ALICE, &invite("t3@alice", ""));
    let second = one(&out, BOB);
    assert_ne!(second.from_tag(), Some(&b"at"[..]));
    let out = h.send(BOB, &response_to(&first, 200, "b1", ""));
    assert_eq!(one(&out, ALICE).status(), Some(200));
}

/// Calls whose profile evaluates alike share one set of rules (a held call costs a kilobyte
/// less); a profile that takes values from the request gives each call its own.
#[test]
fn calls_share_rules_only_when_their_profile_evaluates_alike() {
    let distinct_rules = |h: &Harness| {
        let mut ptrs: Vec<_> = h.engine.calls.values().map(|c| std::sync::Arc::as_ptr(&c.rules)).collect();
        ptrs.sort();
        ptrs.dedup();
        ptrs.len()
    };
    let mut transparent = Harness::new();
    for n in 0..3 {
        one(&transparent.send(ALICE, &invite(&format!("t{n}@alice"), "")), BOB);
    }
    assert_eq!((transparent.engine.calls.len(), distinct_rules(&transparent)), (3, 1));

    let mut rewriting = Harness::with_yaml(REWRITE);
    for n in 0..3 {
        one(&rewriting.send(ALICE, &invite_with_codecs(&format!("r{n}@alice"), "")), BOB);
    }
    // `Call-ID: $ci_leg2` differs per call.
    assert_eq!((rewriting.engine.calls.len(), distinct_rules(&rewriting)), (3, 3));
}

/// SEMS's hold options: the caller's hold re-offer reaches the callee as the profile says (the
/// direction `hold_activity_bleg`, the zero address); a re-offer that is not hold is left alone.
#[test]
fn hold_re_offers_towards_the_callee_are_rewritten_as_the_profile_says() {
    let yaml = "active_profile: p\nprofiles:\n  p:\n    hold_alter_b2b_bleg: yes\n    hold_activity_bleg: sendrecv\n    hold_zero_connection_bleg: yes\n";
    let mut h = Harness::with_yaml(yaml);
    let (_, ok) = established(&mut h);
    let (from, to_hdr) = (hv(&ok, HeaderName::From), hv(&ok, HeaderName::To));
    let reinvite = |cseq: u32, sdp: &str| {
        let body = sdp.replace('\n', "\r\n");
        in_dialog("INVITE", ALICE, &from, &to_hdr, "call-1@alice", cseq, "").replace(
            "Content-Length: 0\n\n",
            &format!("Content-Type: application/sdp\nContent-Length: {}\n\n{sdp}", body.len()),
        )
    };
    let hold = SDP.replace("m=audio", "a=sendonly\nm=audio");
    let b = one(&h.send(ALICE, &reinvite(11, &hold)), BOB);
    let sdp = String::from_utf8_lossy(b.body()).into_owned();
    assert!(sdp.contains("c=IN IP4 0.0.0.0") && sdp.contains("a=sendrecv") && !sdp.contains("sendonly"), "{sdp}");
    h.send(BOB, &response_to(&b, 200, "bt", ""));
    let resume = one(&h.send(ALICE, &reinvite(12, SDP)), BOB);
    assert_eq!(String::from_utf8_lossy(resume.body()), SDP.replace('\n', "\r\n"), "not hold: as it came");
}
