//! Call flows of the B2BUA core through one engine: a basic call, busy, CANCEL, timeouts,
//! re-INVITE and hold, PRACK, local replies, out-of-dialog requests, forks, state left behind.

use super::*;

#[test]
fn basic_call_hides_topology_and_keeps_other_headers() {
    let mut h = Harness::new();
    let out = h.send(ALICE, &invite("call-1@alice", ""));
    let trying = one(&out, ALICE);
    assert_eq!(trying.status(), Some(100));
    let b_inv = one(&out, BOB);
    assert_ne!(b_inv.call_id(), Some(&b"call-1@alice"[..]));
    assert_eq!(b_inv.values(HeaderName::Via).count(), 1, "only our Via");
    assert!(!String::from_utf8_lossy(b_inv.bytes()).contains(ALICE), "no trace of the caller's address");
    assert_eq!(b_inv.max_forwards(), Some(Ok(69)));
    assert_eq!(b_inv.other_header("X-Custom"), Some(&b"keep  me"[..]));
    assert_eq!(b_inv.body(), SDP.replace('\n', "\r\n").as_bytes());
    assert_ne!(b_inv.from_tag(), Some(&b"at"[..]));
    assert!(b_inv.from_hdr().unwrap().display.starts_with(b"\"Alice\""));

    let out = h.send(BOB, &response_to(&b_inv, 180, "bt", ""));
    let ringing = one(&out, ALICE);
    assert_eq!(ringing.status(), Some(180));
    assert_eq!(ringing.call_id(), Some(&b"call-1@alice"[..]));
    let a_tag = ringing.to_tag().unwrap().to_vec();
    assert_ne!(a_tag, b"bt");
    assert!(ringing.top_via().unwrap().param(b"rport") == Some(b"5001"));
    assert!(!String::from_utf8_lossy(ringing.bytes()).contains(BOB), "no trace of the callee");

    let out = h.send(BOB, &response_to(&b_inv, 200, "bt", ""));
    let ok = one(&out, ALICE);
    assert_eq!(ok.to_tag(), Some(&a_tag[..]));
    assert_eq!(ok.contact().unwrap().uri, format!("sip:{SBC}").as_bytes());
    assert_eq!(ok.reason(), b"Whatever", "reason phrase relayed as is");

    let from = hv(&ok, HeaderName::From);
    let to_hdr = hv(&ok, HeaderName::To);
    let out = h.send(ALICE, &in_dialog("ACK", ALICE, &from, &to_hdr, "call-1@alice", 10, ""));
    let ack = one(&out, BOB);
    assert_eq!(ack.call_id(), b_inv.call_id());
    assert_eq!(ack.to_tag(), Some(&b"bt"[..]));
    assert_eq!(ack.request_uri(), format!("sip:peer@{BOB}").as_bytes());

    let out = h.send(ALICE, &in_dialog("BYE", ALICE, &from, &to_hdr, "call-1@alice", 11, ""));
    let bye = one(&out, BOB);
    assert_eq!(bye.method(), Some(Method::Bye));
    assert_eq!(bye.cseq().unwrap().num, 2);
    let out = h.send(BOB, &response_to(&bye, 200, "", ""));
    let ok = one(&out, ALICE);
    assert_eq!(ok.status(), Some(200));
    assert_eq!(ok.cseq().unwrap().num, 11);
    assert_eq!(h.engine.active_calls(), 0);
    // Transactions linger only for their RFC wait timers, then everything is gone.
    h.advance(Duration::from_secs(40));
    assert!(h.engine.is_idle(), "txs left: {}", h.engine.active_transactions());
}

#[test]
fn busy_is_acked_hop_by_hop_and_relayed() {
    let mut h = Harness::new();
    let out = h.send(ALICE, &invite("c486", ""));
    let b_inv = one(&out, BOB);
    let out = h.send(BOB, &response_to(&b_inv, 486, "bt", ""));
    let ack = one(&out, BOB);
    assert_eq!(ack.method(), Some(Method::Ack));
    assert_eq!(ack.top_via().unwrap().branch(), b_inv.top_via().unwrap().branch());
    let busy = one(&out, ALICE);
    assert_eq!(busy.status(), Some(486));
    assert_eq!(h.engine.active_calls(), 0);
    // The caller's retransmitted INVITE gets the 486 again, not a new call.
    let out = h.send(ALICE, &invite("c486", ""));
    assert_eq!(one(&out, ALICE).status(), Some(486));
    assert!(to(&out, BOB).is_empty());
}

#[test]
fn cancel_after_ringing() {
    let mut h = Harness::new();
    let inv_text = invite("ccancel", "");
    let out = h.send(ALICE, &inv_text);
    let b_inv = one(&out, BOB);
    h.send(BOB, &response_to(&b_inv, 180, "bt", ""));
    let cancel = inv_text.replacen("INVITE sip", "CANCEL sip", 1).replace("CSeq: 10 INVITE", "CSeq: 10 CANCEL");
    let cancel = cancel.split("Content-Type").next().unwrap().to_string() + "Content-Length: 0\n\n";
    let out = h.send(ALICE, &cancel);
    let to_a = to(&out, ALICE);
    assert!(to_a.iter().any(|m| m.status() == Some(200) && m.cseq().unwrap().method == Method::Cancel));
    assert!(to_a.iter().any(|m| m.status() == Some(487)));
    let b_cancel = one(&out, BOB);
    assert_eq!(b_cancel.method(), Some(Method::Cancel));
    assert_eq!(b_cancel.top_via().unwrap().branch(), b_inv.top_via().unwrap().branch());
    let out = h.send(BOB, &response_to(&b_inv, 487, "bt", ""));
    assert_eq!(one(&out, BOB).method(), Some(Method::Ack));
    assert!(to(&out, ALICE).is_empty(), "487 already sent to the caller");
    assert_eq!(h.engine.active_calls(), 0);
}

#[test]
fn cancel_before_any_provisional_waits_for_one() {
    let mut h = Harness::new();
    let inv_text = invite("cearly", "");
    let out = h.send(ALICE, &inv_text);
    let b_inv = one(&out, BOB);
    let cancel = inv_text.replacen("INVITE sip", "CANCEL sip", 1).replace("CSeq: 10 INVITE", "CSeq: 10 CANCEL");
    let cancel = cancel.split("Content-Type").next().unwrap().to_string() + "Content-Length: 0\n\n";
    let out = h.send(ALICE, &cancel);
    assert!(to(&out, BOB).iter().all(|m| m.method() != Some(Method::Cancel)), "no CANCEL before a provisional");
    let out = h.send(BOB, &response_to(&b_inv, 180, "bt", ""));
    assert_eq!(one(&out, BOB).method(), Some(Method::Cancel));
    assert!(to(&out, ALICE).is_empty(), "180 not relayed after the caller cancelled");
}

#[test]
fn no_answer_times_out_with_408() {
    let mut h = Harness::new();
    let out = h.send(ALICE, &invite("ctimeout", ""));
    one(&out, BOB);
    let out = h.advance(Duration::from_secs(33));
    let retrans = to(&out, BOB).len();
    assert_eq!(retrans, 6, "Timer A: 6 retransmissions before Timer B");
    let final_ = to(&out, ALICE).into_iter().find(|m| m.status().is_some_and(|c| c >= 200)).unwrap();
    assert_eq!(final_.status(), Some(408));
    assert_eq!(h.engine.active_calls(), 0);
}

#[test]
fn timer_c_cancels_a_call_that_rings_forever() {
    let mut h = Harness::new();
    let out = h.send(ALICE, &invite("cring", ""));
    let b_inv = one(&out, BOB);
    h.send(BOB, &response_to(&b_inv, 180, "bt", ""));
    let out = h.advance(Duration::from_secs(181));
    assert!(to(&out, ALICE).iter().any(|m| m.status() == Some(408)));
    assert!(to(&out, BOB).iter().any(|m| m.method() == Some(Method::Cancel)));
    // The callee never answers even the CANCEL: the call is still forgotten.
    h.advance(Duration::from_secs(70));
    assert_eq!(h.engine.active_calls(), 0);
}

#[test]
fn bye_from_callee_and_reinvite_hold() {
    let mut h = Harness::new();
    let (b_inv, ok) = established(&mut h);
    let b_call_id = String::from_utf8_lossy(b_inv.call_id().unwrap()).into_owned();
    let from_b = format!("{};tag=bt", hv(&b_inv, HeaderName::To));
    let to_b = hv(&b_inv, HeaderName::From);
    // Callee puts the call on hold with a re-INVITE.
    let out =
        h.send(BOB, &in_dialog("INVITE", BOB, &from_b, &to_b, &b_call_id, 1, "Contact: <sip:bob@127.0.0.1:5002>\n"));
    assert!(to(&out, BOB).iter().any(|m| m.status() == Some(100)));
    let reinv = one(&out, ALICE);
    assert_eq!(reinv.call_id(), Some(&b"call-1@alice"[..]));
    assert_eq!(reinv.request_uri(), format!("sip:alice@{ALICE}").as_bytes());
    assert_eq!(reinv.from_tag(), ok.to_tag());
    // Caller tries its own re-INVITE meanwhile: glare.
    let out = h.send(
        ALICE,
        &in_dialog("INVITE", ALICE, &hv(&ok, HeaderName::From), &hv(&ok, HeaderName::To), "call-1@alice", 12, ""),
    );
    assert_eq!(one(&out, ALICE).status(), Some(491));
    let out = h.send(ALICE, &response_from(ALICE, &reinv, 200, "", ""));
    let ok2 = one(&out, BOB);
    assert_eq!(ok2.status(), Some(200));
    assert_eq!(ok2.cseq().unwrap().num, 1);
    let out = h.send(BOB, &in_dialog("ACK", BOB, &from_b, &to_b, &b_call_id, 1, ""));
    let ack = one(&out, ALICE);
    assert_eq!(ack.cseq().unwrap().num, reinv.cseq().unwrap().num);
    // Callee hangs up.
    let out = h.send(BOB, &in_dialog("BYE", BOB, &from_b, &to_b, &b_call_id, 2, ""));
    let bye = one(&out, ALICE);
    let out = h.send(ALICE, &response_from(ALICE, &bye, 200, "", ""));
    assert_eq!(one(&out, BOB).status(), Some(200));
    assert_eq!(h.engine.active_calls(), 0);
}

#[test]
fn reliable_provisional_and_prack_are_mapped() {
    let mut h = Harness::new();
    let out = h.send(ALICE, &invite("c100rel", "Supported: 100rel\n"));
    let b_inv = one(&out, BOB);
    let out = h.send(BOB, &response_to(&b_inv, 183, "bt", "Require: 100rel\nRSeq: 777\n"));
    let p = one(&out, ALICE);
    assert_eq!(p.header_value(HeaderName::RSeq), Some(&b"1"[..]));
    // Retransmitted by us until PRACK.
    let out = h.advance(Duration::from_millis(600));
    assert_eq!(to(&out, ALICE).len(), 1);
    let out = h.send(
        ALICE,
        &in_dialog(
            "PRACK",
            ALICE,
            &hv(&p, HeaderName::From),
            &hv(&p, HeaderName::To),
            "c100rel",
            11,
            "RAck: 1 10 INVITE\n",
        ),
    );
    let prack = one(&out, BOB);
    assert_eq!(prack.header_value(HeaderName::RAck), Some(&b"777 1 INVITE"[..]));
    assert_eq!(prack.to_tag(), Some(&b"bt"[..]));
    let out = h.send(BOB, &response_to(&prack, 200, "", ""));
    assert_eq!(one(&out, ALICE).cseq().unwrap().method, Method::Prack);
    let out = h.advance(Duration::from_secs(5));
    assert!(to(&out, ALICE).is_empty(), "no more 183 retransmissions after PRACK");
}

#[test]
fn missing_ack_ends_the_call_with_bye_both_ways() {
    let mut h = Harness::new();
    let out = h.send(ALICE, &invite("cnoack", ""));
    let b_inv = one(&out, BOB);
    h.send(BOB, &response_to(&b_inv, 200, "bt", ""));
    let out = h.advance(Duration::from_secs(33));
    assert!(to(&out, ALICE).iter().filter(|m| m.status() == Some(200)).count() >= 5, "2xx retransmitted");
    assert!(to(&out, ALICE).iter().any(|m| m.method() == Some(Method::Bye)));
    assert!(to(&out, BOB).iter().any(|m| m.method() == Some(Method::Bye)));
    assert_eq!(h.engine.active_calls(), 0);
}

#[test]
fn local_replies() {
    let mut h = Harness::new();
    let ping = format!("OPTIONS sip:{SBC} SIP/2.0\nVia: SIP/2.0/UDP {ALICE};branch=z9hG4bKp\nMax-Forwards: 0\nFrom: <sip:mon@x>;tag=1\nTo: <sip:{SBC}>\nCall-ID: ping1\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n");
    let out = h.send(ALICE, &ping);
    let ok = one(&out, ALICE);
    assert_eq!(ok.status(), Some(200));
    assert!(ok.header_value(HeaderName::Other).is_none() || ok.other_header("Allow").is_some());

    let out = h.send(ALICE, &invite("cmf", "").replace("Max-Forwards: 70", "Max-Forwards: 0"));
    assert_eq!(one(&out, ALICE).status(), Some(483));

    // A request that comes back to us with a Call-ID we generated is a loop.
    let out = h.send(ALICE, &invite("first", ""));
    let b_inv = one(&out, BOB);
    let looped = invite(std::str::from_utf8(b_inv.call_id().unwrap()).unwrap(), "");
    let out = h.send(ALICE, &looped);
    assert_eq!(one(&out, ALICE).status(), Some(482));

    let out = h.send(ALICE, &invite("c415", "").replace("application/sdp", "application/unknownformat"));
    assert_eq!(one(&out, ALICE).status(), Some(415));

    h.engine.set_draining(true);
    let out = h.send(ALICE, &invite("cdrain", ""));
    assert_eq!(one(&out, ALICE).status(), Some(503));
}

#[test]
fn out_of_dialog_message_is_relayed_with_fresh_identifiers() {
    let mut h = Harness::new();
    let msg = format!("MESSAGE sip:bob@{BOB} SIP/2.0\nVia: SIP/2.0/UDP {ALICE};branch=z9hG4bKm1\nMax-Forwards: 70\nFrom: <sip:alice@x>;tag=mf\nTo: <sip:bob@y>\nCall-ID: msg1\nCSeq: 5 MESSAGE\nContent-Type: text/plain\nContent-Length: 5\n\nhello");
    let out = h.send(ALICE, &msg);
    let b = one(&out, BOB);
    assert_ne!(b.call_id(), Some(&b"msg1"[..]));
    assert_eq!(b.body(), b"hello");
    assert_eq!(b.values(HeaderName::Via).count(), 1);
    let out = h.send(BOB, &response_to(&b, 202, "bt", ""));
    let r = one(&out, ALICE);
    assert_eq!(r.status(), Some(202));
    assert_eq!(r.call_id(), Some(&b"msg1"[..]));
    assert_eq!(r.cseq().unwrap().num, 5);
    assert!(r.to_tag().is_some());
}

#[test]
fn unknown_dialog_gets_481_and_stray_responses_are_dropped() {
    let mut h = Harness::new();
    let out = h.send(ALICE, &in_dialog("BYE", ALICE, "<sip:a@x>;tag=1", "<sip:b@y>;tag=nope", "gone", 3, ""));
    assert_eq!(one(&out, ALICE).status(), Some(481));
    let stray = format!("SIP/2.0 200 OK\nVia: SIP/2.0/UDP {SBC};branch=z9hG4bKsbc00deadbeef\nFrom: <sip:a@x>;tag=1\nTo: <sip:b@y>;tag=2\nCall-ID: x\nCSeq: 1 INVITE\nContent-Length: 0\n\n");
    let out = h.send(BOB, &stray);
    assert!(out.is_empty());
    assert_eq!(h.engine.stats.get(Counter::Drops), 1);
}

/// Ended calls leave nothing behind: no transaction, dialog, reserved Call-ID, and no timer
/// entry beyond a small constant (stale deadlines are compacted away).
#[test]
fn thousands_of_calls_leave_no_state_behind() {
    let mut h = Harness::new();
    for i in 0..3000 {
        let cid = format!("many-{i}");
        let out = h.send(ALICE, &invite(&cid, ""));
        let b_inv = one(&out, BOB);
        let out = h.send(BOB, &response_to(&b_inv, 200, "bt", ""));
        let ok = one(&out, ALICE);
        let from = hv(&ok, HeaderName::From);
        let to_hdr = hv(&ok, HeaderName::To);
        h.send(ALICE, &in_dialog("ACK", ALICE, &from, &to_hdr, &cid, 10, ""));
        let out = h.send(ALICE, &in_dialog("BYE", ALICE, &from, &to_hdr, &cid, 11, ""));
        let bye = one(&out, BOB);
        h.send(BOB, &response_to(&bye, 200, "", ""));
        h.advance(Duration::from_millis(10));
    }
    h.advance(Duration::from_secs(40));
    let e = &h.engine;
    assert_eq!((e.txs.len(), e.tx_keys.len(), e.calls.len(), e.dialogs.len(), e.own_call_ids.len()), (0, 0, 0, 0, 0));
    // Each ended call left a 12 h max-duration deadline behind; compaction keeps the heap small.
    assert!(e.timers.len() <= TIMER_COMPACT_FLOOR * 2 + 8, "timer heap holds {} entries", e.timers.len());
}

#[test]
fn a_200_crossing_the_cancel_is_acked_and_hung_up() {
    let mut h = Harness::new();
    let inv_text = invite("ccross", "");
    let out = h.send(ALICE, &inv_text);
    let b_inv = one(&out, BOB);
    h.send(BOB, &response_to(&b_inv, 180, "bt", ""));
    h.send(ALICE, &cancel_for_invite(&inv_text));
    let out = h.send(BOB, &response_to(&b_inv, 200, "bt", ""));
    let to_b = to(&out, BOB);
    assert!(to_b.iter().any(|m| m.method() == Some(Method::Ack) && m.to_tag() == Some(&b"bt"[..])), "{to_b:#?}");
    assert!(to_b.iter().any(|m| m.method() == Some(Method::Bye) && m.to_tag() == Some(&b"bt"[..])));
    assert!(to(&out, ALICE).is_empty(), "the caller already has its 487");
    assert_eq!(h.engine.active_calls(), 0);
}

#[test]
fn bye_on_an_early_dialog_closes_both_invites() {
    let mut h = Harness::new();
    let out = h.send(ALICE, &invite("cearlybye", ""));
    let b_inv = one(&out, BOB);
    let out = h.send(BOB, &response_to(&b_inv, 180, "bt", ""));
    let ringing = one(&out, ALICE);
    let out = h.send(
        ALICE,
        &in_dialog("BYE", ALICE, &hv(&ringing, HeaderName::From), &hv(&ringing, HeaderName::To), "cearlybye", 11, ""),
    );
    let bye = one(&out, BOB);
    let out = h.send(BOB, &response_to(&bye, 200, "", ""));
    assert!(to(&out, ALICE).iter().any(|m| m.status() == Some(487)), "the caller's INVITE is answered");
    assert!(to(&out, BOB).iter().any(|m| m.method() == Some(Method::Cancel)), "the callee's INVITE is cancelled");
    h.send(BOB, &response_to(&b_inv, 487, "bt", ""));
    h.advance(Duration::from_secs(40));
    assert!(
        h.engine.is_idle() && h.engine.active_transactions() == 0,
        "nothing left: {}",
        h.engine.active_transactions()
    );
}

#[test]
fn a_relayed_reinvite_that_only_rings_is_ended_by_timer_c() {
    let mut h = Harness::new();
    let (_, ok) = established(&mut h);
    let (from, to_hdr) = (hv(&ok, HeaderName::From), hv(&ok, HeaderName::To));
    let out = h.send(ALICE, &in_dialog("INVITE", ALICE, &from, &to_hdr, "call-1@alice", 12, ""));
    let reinv = one(&out, BOB);
    h.send(BOB, &response_from(BOB, &reinv, 180, "", ""));
    let out = h.advance(Duration::from_secs(182));
    assert!(to(&out, ALICE).iter().any(|m| m.status() == Some(408)));
    assert!(to(&out, BOB).iter().any(|m| m.method() == Some(Method::Cancel)));
    // The offer is no longer pending: a new re-INVITE is relayed, not refused.
    let out = h.send(ALICE, &in_dialog("INVITE", ALICE, &from, &to_hdr, "call-1@alice", 13, ""));
    assert_eq!(one(&out, BOB).method(), Some(Method::Invite));
}

#[test]
fn rfc2543_ack_without_magic_cookie_reaches_the_callee() {
    let mut h = Harness::new();
    let text = invite("c2543", "").replace("branch=z9hG4bKc2543;rport", "branch=oldstyle");
    let out = h.send(ALICE, &text);
    let b_inv = one(&out, BOB);
    let out = h.send(BOB, &response_to(&b_inv, 200, "bt", ""));
    let ok = one(&out, ALICE);
    let ack = format!(
        "ACK sip:{SBC} SIP/2.0\nVia: SIP/2.0/UDP {ALICE};branch=oldstyle\nMax-Forwards: 70\nFrom: {}\nTo: {}\nCall-ID: c2543\nCSeq: 10 ACK\nContent-Length: 0\n\n",
        hv(&ok, HeaderName::From),
        hv(&ok, HeaderName::To)
    );
    let out = h.send(ALICE, &ack);
    assert_eq!(one(&out, BOB).method(), Some(Method::Ack));
}

#[test]
fn a_second_fork_answering_is_acked_and_hung_up() {
    let mut h = Harness::new();
    let (b_inv, _) = established(&mut h);
    let out = h.send(BOB, &response_to(&b_inv, 200, "fork2", ""));
    let to_b = to(&out, BOB);
    assert!(to_b.iter().any(|m| m.method() == Some(Method::Ack) && m.to_tag() == Some(&b"fork2"[..])));
    assert!(to_b.iter().any(|m| m.method() == Some(Method::Bye) && m.to_tag() == Some(&b"fork2"[..])));
    assert!(to(&out, ALICE).is_empty());
    assert_eq!(h.engine.active_calls(), 1, "the answered call goes on");
}

#[test]
fn reinvite_is_relayed_without_100rel_and_dialog_headers_stay_on_their_leg() {
    let mut h = Harness::new();
    let (_, ok) = established(&mut h);
    let extra =
        "Supported: timer, 100rel\nReplaces: call-1@alice;to-tag=x;from-tag=y\nPath: <sip:edge.intern.example;lr>\n";
    let out = h.send(
        ALICE,
        &in_dialog("INVITE", ALICE, &hv(&ok, HeaderName::From), &hv(&ok, HeaderName::To), "call-1@alice", 12, extra),
    );
    let reinv = one(&out, BOB);
    assert_eq!(reinv.header_value(HeaderName::Supported), Some(&b"timer"[..]));
    assert!(reinv.header(HeaderName::Replaces).is_none());
    assert!(reinv.header(HeaderName::Path).is_none());
}

#[test]
fn an_undeliverable_answer_to_the_caller_hangs_up_the_callee() {
    let mut h = Harness::new();
    let out = h.send(ALICE, &invite("cunreach", ""));
    let b_inv = one(&out, BOB);
    // Deliver the 200 by hand to learn the transaction it belongs to, then fail it.
    let msg = Message::parse(Bytes::from(response_to(&b_inv, 200, "bt", "").replace('\n', "\r\n"))).unwrap();
    let src = Source { transport: Transport::Udp, local: 0, remote: addr(BOB), conn: None };
    h.engine.handle_message(h.now, msg, src);
    let mut a_tx = None;
    while let Some(o) = h.engine.poll_output() {
        if let Output::Transmit { dest, tx, .. } = o {
            if dest.peer == Peer::Addr(addr(ALICE)) {
                a_tx = tx;
            }
        }
    }
    h.engine.handle_transport_error(h.now, a_tx.expect("the 200 went to the caller through its transaction"));
    let out = h.drain();
    assert!(to(&out, BOB).iter().any(|m| m.method() == Some(Method::Bye)), "{out:#?}");
    assert_eq!(h.engine.active_calls(), 0);
}

/// Finished transactions shrink to tombstones that still answer retransmissions correctly.
#[test]
fn finished_transactions_still_absorb_retransmissions() {
    let mut h = Harness::new();
    let (_, ok) = established(&mut h);
    let (from, to_hdr) = (hv(&ok, HeaderName::From), hv(&ok, HeaderName::To));
    let bye_text = in_dialog("BYE", ALICE, &from, &to_hdr, "call-1@alice", 11, "");
    let out = h.send(ALICE, &bye_text);
    let bye = one(&out, BOB);
    h.send(BOB, &response_to(&bye, 200, "", ""));
    // The caller did not get our 200 and sends its BYE again: the same 200, nothing relayed.
    let out = h.send(ALICE, &bye_text);
    assert_eq!(one(&out, ALICE).status(), Some(200));
    assert!(to(&out, BOB).is_empty());
    // A retransmitted 486 gets the ACK again.
    let out = h.send(ALICE, &invite("cbusy2", ""));
    let b_inv = one(&out, BOB);
    h.send(BOB, &response_to(&b_inv, 486, "bt", ""));
    let out = h.send(BOB, &response_to(&b_inv, 486, "bt", ""));
    assert_eq!(one(&out, BOB).method(), Some(Method::Ack));
    assert!(to(&out, ALICE).is_empty());
    h.advance(Duration::from_secs(40));
    assert_eq!(h.engine.active_transactions(), 0);
}

/// After Timer C gave up on a relayed re-INVITE, a 2xx that comes anyway is ACKed (the call
/// goes on), and a premature ACK from the caller is not taken for one.
#[test]
fn late_answer_after_timer_c_and_premature_ack() {
    let mut h = Harness::new();
    let (_, ok) = established(&mut h);
    let (from, to_hdr) = (hv(&ok, HeaderName::From), hv(&ok, HeaderName::To));
    let out = h.send(ALICE, &in_dialog("INVITE", ALICE, &from, &to_hdr, "call-1@alice", 12, ""));
    let reinv = one(&out, BOB);
    // An ACK before any 2xx: dropped, not relayed.
    let out = h.send(ALICE, &in_dialog("ACK", ALICE, &from, &to_hdr, "call-1@alice", 12, ""));
    assert!(to(&out, BOB).is_empty());
    h.send(BOB, &response_from(BOB, &reinv, 180, "", ""));
    let out = h.advance(Duration::from_secs(182));
    assert!(to(&out, ALICE).iter().any(|m| m.status() == Some(408)));
    let out = h.send(BOB, &response_from(BOB, &reinv, 200, "", ""));
    let to_b = to(&out, BOB);
    assert!(to_b.iter().any(|m| m.method() == Some(Method::Ack)), "{to_b:#?}");
    assert!(to_b.iter().all(|m| m.method() != Some(Method::Bye)));
    assert!(to(&out, ALICE).is_empty());
    assert_eq!(h.engine.active_calls(), 1);
}

/// A long call refreshed by many re-INVITEs keeps a bounded ACK-mapping history and still maps
/// the latest exchange.
#[test]
fn many_reinvites_keep_bounded_state() {
    let mut h = Harness::new();
    let (_, ok) = established(&mut h);
    let (from, to_hdr) = (hv(&ok, HeaderName::From), hv(&ok, HeaderName::To));
    for cseq in 12..40 {
        // A refresh every 200 ms: within the dialog's rate (dialog_limits.rs).
        h.advance(Duration::from_millis(200));
        let out = h.send(ALICE, &in_dialog("INVITE", ALICE, &from, &to_hdr, "call-1@alice", cseq, ""));
        let reinv = one(&out, BOB);
        let out = h.send(BOB, &response_from(BOB, &reinv, 200, "", ""));
        assert_eq!(one(&out, ALICE).status(), Some(200));
        let out = h.send(ALICE, &in_dialog("ACK", ALICE, &from, &to_hdr, "call-1@alice", cseq, ""));
        assert_eq!(one(&out, BOB).cseq().unwrap().num, reinv.cseq().unwrap().num);
    }
    let call = h.engine.calls.values().next().unwrap();
    assert!(call.invite_relays.len() <= 4);
}
