//! Subscriptions and REFER with virtual time: the NOTIFYs of a SUBSCRIBE or REFER dialog pair
//! both ways, and a REFER inside a call that leaves the call up.

use super::*;

#[test]
fn subscription_dialogs_carry_their_notifies_both_ways() {
    let mut h = Harness::new();
    let sub = format!(
        "SUBSCRIBE sip:bob@{BOB} SIP/2.0\nVia: SIP/2.0/UDP {ALICE};branch=z9hG4bKsub1\nMax-Forwards: 70\nFrom: <sip:alice@atlanta.example>;tag=as\nTo: <sip:bob@biloxi.example>\nCall-ID: sub-1\nCSeq: 1 SUBSCRIBE\nContact: <sip:alice@{ALICE}>\nEvent: presence\nExpires: 600\nContent-Length: 0\n\n"
    );
    let out = h.send(ALICE, &sub);
    let b_sub = one(&out, BOB);
    assert_ne!(b_sub.call_id(), Some(&b"sub-1"[..]));
    assert_eq!(b_sub.contact().unwrap().uri, format!("sip:{SBC}").as_bytes());
    // The notifier's first NOTIFY may overtake its 200.
    let b_call_id = String::from_utf8_lossy(b_sub.call_id().unwrap()).into_owned();
    let notify = |state: &str, cseq: u32| {
        in_dialog(
            "NOTIFY",
            BOB,
            &format!("{};tag=bt", hv(&b_sub, HeaderName::To)),
            &hv(&b_sub, HeaderName::From),
            &b_call_id,
            cseq,
            &format!("Event: presence\nSubscription-State: {state}\nContact: <sip:bob@{BOB}>\n"),
        )
    };
    let out = h.send(BOB, &notify("active;expires=600", 1));
    let a_notify = one(&out, ALICE);
    assert_eq!(a_notify.call_id(), Some(&b"sub-1"[..]));
    assert_eq!(a_notify.to_tag(), Some(&b"as"[..]));
    assert_eq!(a_notify.request_uri(), format!("sip:alice@{ALICE}").as_bytes());
    let out = h.send(ALICE, &response_from(ALICE, &a_notify, 200, "", ""));
    assert_eq!(one(&out, BOB).status(), Some(200));
    let out = h.send(BOB, &response_to(&b_sub, 200, "bt", "Expires: 600\n"));
    let ok = one(&out, ALICE);
    assert_eq!(ok.to_tag(), a_notify.from_tag(), "one A-leg tag for the 200 and the NOTIFYs");
    // The final NOTIFY ends the pair once answered.
    let out = h.send(BOB, &notify("terminated;reason=timeout", 2));
    let last = one(&out, ALICE);
    h.send(ALICE, &response_from(ALICE, &last, 200, "", ""));
    assert_eq!(h.engine.active_calls(), 0);
}

/// A transfer's NOTIFY (Subscription-State: terminated) inside a call does not end the call.
#[test]
fn refer_notify_inside_a_call_leaves_the_call_up() {
    let mut h = Harness::new();
    let (b_inv, ok) = established(&mut h);
    let refer = caller_refer(&mut h, &ok);
    h.send(BOB, &response_from(BOB, &refer, 202, "", ""));
    let notify = callee_notify(&b_inv, 5, "Event: refer\nSubscription-State: terminated;reason=noresource\n");
    let out = h.send(BOB, &notify);
    let a_notify = one(&out, ALICE);
    h.send(ALICE, &response_from(ALICE, &a_notify, 200, "", ""));
    assert_eq!(h.engine.active_calls(), 1, "the call survives its transfer subscription");
}

/// The caller's REFER (CSeq 11) in the call its 200 `ok` set up, as the callee gets it.
fn caller_refer(h: &mut Harness, ok: &Message) -> Message {
    let (from, to_hdr) = (hv(ok, HeaderName::From), hv(ok, HeaderName::To));
    let out = h.send(
        ALICE,
        &in_dialog("REFER", ALICE, &from, &to_hdr, "call-1@alice", 11, "Refer-To: <sip:carol@example.com>\n"),
    );
    one(&out, BOB)
}

/// A NOTIFY from the callee in the call's dialog (its CSeq and tags right).
fn callee_notify(b_inv: &Message, cseq: u32, extra: &str) -> String {
    let b_call_id = String::from_utf8_lossy(b_inv.call_id().unwrap()).into_owned();
    in_dialog(
        "NOTIFY",
        BOB,
        &format!("{};tag=bt", hv(b_inv, HeaderName::To)),
        &hv(b_inv, HeaderName::From),
        &b_call_id,
        cseq,
        extra,
    )
}

/// The `id` of a REFER's NOTIFY is the REFER's CSeq on each leg (RFC 3515 §2.4.4): the caller
/// gets its own, and with `allow_subless_notify=no` a NOTIFY of no subscription is refused.
#[test]
fn a_transfers_notify_carries_the_callers_id_and_stray_notifies_can_be_refused() {
    let mut h = Harness::with_yaml("active_profile: p\nprofiles:\n  p:\n    allow_subless_notify: no\n");
    let (b_inv, ok) = established(&mut h);
    let refer = caller_refer(&mut h, &ok);
    let b_cseq = refer.cseq().map(|c| c.num).expect("CSeq");
    assert_ne!(b_cseq, 11, "the B leg numbers its own requests");
    h.send(BOB, &response_from(BOB, &refer, 202, "", ""));

    let stray = callee_notify(&b_inv, 5, "Event: dialog\nSubscription-State: active\n");
    assert_eq!(one(&h.send(BOB, &stray), BOB).status(), Some(481), "no such subscription");
    let notify = callee_notify(&b_inv, 6, &format!("Event: refer;id={b_cseq}\nSubscription-State: active\n"));
    let a_notify = one(&h.send(BOB, &notify), ALICE);
    assert_eq!(a_notify.other_header("Event"), Some(&b"refer;id=11"[..]), "the caller's own id");
    h.send(ALICE, &response_from(ALICE, &a_notify, 200, "", ""));
    let done = callee_notify(&b_inv, 7, &format!("Event: refer;id={b_cseq}\nSubscription-State: terminated\n"));
    let a_done = one(&h.send(BOB, &done), ALICE);
    h.send(ALICE, &response_from(ALICE, &a_done, 200, "", ""));
    let late = callee_notify(&b_inv, 8, &format!("Event: refer;id={b_cseq}\nSubscription-State: terminated\n"));
    assert_eq!(one(&h.send(BOB, &late), BOB).status(), Some(481), "the subscription ended");

    // By default (SEMS's), such a NOTIFY is relayed as it is.
    let mut h = Harness::new();
    let (b_inv, _) = established(&mut h);
    let stray = callee_notify(&b_inv, 5, "Event: dialog\nSubscription-State: active\n");
    assert_eq!(one(&h.send(BOB, &stray), ALICE).method(), Some(Method::Notify));
}
