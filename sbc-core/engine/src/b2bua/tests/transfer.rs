//! Attended transfer across the B2BUA: a new INVITE's Replaces naming one of our dialogs as
//! its sender sees it reaches the far side naming that side's own dialog (RFC 3891).

use super::*;

/// An INVITE from `from` (its Via, Contact and tag `tag`) to `to`, with `extra` rows.
fn invite_between(from: &str, to: &str, call_id: &str, tag: &str, extra: &str) -> String {
    let body = SDP.replace('\n', "\r\n");
    format!(
        "INVITE sip:user@{to} SIP/2.0\nVia: SIP/2.0/UDP {from};branch=z9hG4bK{call_id};rport\nMax-Forwards: 70\nFrom: <sip:u@{from}>;tag={tag}\nTo: <sip:user@{to}>\nCall-ID: {call_id}\nCSeq: 1 INVITE\nContact: <sip:u@{from}>\n{extra}Content-Type: application/sdp\nContent-Length: {}\n\n{SDP}",
        body.len()
    )
}

fn tag_param(header: &str) -> String {
    header.split("tag=").nth(1).unwrap_or_default().split(';').next().unwrap_or_default().to_string()
}

#[test]
fn a_replaces_naming_our_dialog_is_mapped_to_the_far_sides_dialog() {
    let mut h = Harness::new();
    // Call 2: Bob calls Carol through the SBC, answered.
    let out = h.send(BOB, &invite_between(BOB, CAROL, "call-2@bob", "b2", ""));
    let to_carol = one(&out, CAROL);
    let out = h.send(CAROL, &response_from(CAROL, &to_carol, 200, "c2", ""));
    let ok_to_bob = first(&out, BOB);
    assert_eq!(ok_to_bob.status(), Some(200));
    // Bob's view of call 2: its Call-ID, our tag (To), its own tag (From).
    let our_tag_for_bob = tag_param(&hv(&ok_to_bob, HeaderName::To));
    // Carol's view: the B leg's Call-ID, her tag, our tag on that leg.
    let (carol_call_id, our_tag_for_carol) =
        (hv(&to_carol, HeaderName::CallId), tag_param(&hv(&to_carol, HeaderName::From)));

    // Alice, told by Bob (REFER) to replace call 2, calls Carol with Bob's view of it.
    let replaces = format!("Replaces: call-2@bob;to-tag={our_tag_for_bob};from-tag=b2;early-only\n");
    let out = h.send(ALICE, &invite_between(ALICE, CAROL, "call-3@alice", "a3", &replaces));
    let to_carol = one(&out, CAROL);
    assert_eq!(
        hv(&to_carol, HeaderName::Replaces),
        format!("{carol_call_id};to-tag=c2;from-tag={our_tag_for_carol};early-only"),
        "Carol's own dialog, as she sees it"
    );

    // A Replaces that names Carol's side already (mapped in a REFER) goes on as it is.
    let as_is = format!("Replaces: {carol_call_id};to-tag=c2;from-tag={our_tag_for_carol}\n");
    let out = h.send(ALICE, &invite_between(ALICE, CAROL, "call-4@alice", "a4", &as_is));
    assert_eq!(format!("Replaces: {}\n", hv(&one(&out, CAROL), HeaderName::Replaces)), as_is);

    // One that names no dialog of ours is held back.
    let stranger = "Replaces: nobody@x;to-tag=1;from-tag=2\nJoin: call-2@bob;to-tag=wrong;from-tag=b2\n";
    let out = h.send(ALICE, &invite_between(ALICE, CAROL, "call-5@alice", "a5", stranger));
    let sent = one(&out, CAROL);
    assert!(sent.header(HeaderName::Replaces).is_none() && sent.header(HeaderName::Join).is_none(), "{sent:?}");
}

/// `fix_replaces_ref`: the Replaces inside a relayed REFER's Refer-To is mapped on its way,
/// and the INVITE that follows (naming Carol's dialog already) goes on unchanged.
#[test]
fn fix_replaces_ref_maps_the_refer_to_on_its_way() {
    let mut h = Harness::with_yaml("active_profile: p\nprofiles:\n  p:\n    fix_replaces_ref: yes\n");
    let (b_inv, _) = established(&mut h);
    let out = h.send(BOB, &invite_between(BOB, CAROL, "call-2@bob", "b2", ""));
    let to_carol = one(&out, CAROL);
    let ok_to_bob = first(&h.send(CAROL, &response_from(CAROL, &to_carol, 200, "c2", "")), BOB);
    let our_tag_for_bob = tag_param(&hv(&ok_to_bob, HeaderName::To));
    let (carol_call_id, our_tag_for_carol) =
        (hv(&to_carol, HeaderName::CallId), tag_param(&hv(&to_carol, HeaderName::From)));

    // Bob's REFER on his call with Alice, its Replaces percent-encoded in the Refer-To.
    let embedded = format!("call-2%40bob%3Bto-tag%3D{our_tag_for_bob}%3Bfrom-tag%3Db2");
    let refer_to = format!("Refer-To: <sip:carol@{CAROL}?Replaces={embedded}>\n");
    let (from, to) = (format!("{};tag=bt", hv(&b_inv, HeaderName::To)), hv(&b_inv, HeaderName::From));
    let refer = in_dialog("REFER", BOB, &from, &to, &hv(&b_inv, HeaderName::CallId), 1, &refer_to);
    let to_alice = one(&h.send(BOB, &refer), ALICE);
    assert_eq!(to_alice.method(), Some(Method::Refer));
    let relayed = String::from_utf8_lossy(to_alice.other_header("Refer-To").unwrap_or_default()).into_owned();
    let expected = format!("{carol_call_id};to-tag=c2;from-tag={our_tag_for_carol}")
        .replace('@', "%40")
        .replace(';', "%3B")
        .replace('=', "%3D");
    assert_eq!(relayed, format!("<sip:carol@{CAROL}?Replaces={expected}>"));
}

/// Target-Dialog (RFC 4538) names a dialog with `local-tag` (the recipient's) and
/// `remote-tag`: an out-of-dialog REFER that carries one naming our dialog reaches the far side
/// naming that side's own.
#[test]
fn a_target_dialog_naming_our_dialog_is_mapped_to_the_far_sides_dialog() {
    let mut h = Harness::new();
    let out = h.send(BOB, &invite_between(BOB, CAROL, "call-6@bob", "b6", ""));
    let to_carol = one(&out, CAROL);
    let ok_to_bob = first(&h.send(CAROL, &response_from(CAROL, &to_carol, 200, "c6", "")), BOB);
    let our_tag_for_bob = tag_param(&hv(&ok_to_bob, HeaderName::To));
    let (carol_call_id, our_tag_for_carol) =
        (hv(&to_carol, HeaderName::CallId), tag_param(&hv(&to_carol, HeaderName::From)));

    let refer = format!(
        "REFER sip:user@{CAROL} SIP/2.0\nVia: SIP/2.0/UDP {BOB};branch=z9hG4bKtd1;rport\nMax-Forwards: 70\nFrom: <sip:u@{BOB}>;tag=b7\nTo: <sip:user@{CAROL}>\nCall-ID: refer-7@bob\nCSeq: 1 REFER\nContact: <sip:u@{BOB}>\nRefer-To: <sip:dave@example.com>\nTarget-Dialog: call-6@bob;local-tag={our_tag_for_bob};remote-tag=b6\nContent-Length: 0\n\n"
    );
    let sent = one(&h.send(BOB, &refer), CAROL);
    assert_eq!(sent.method(), Some(Method::Refer));
    assert_eq!(
        String::from_utf8_lossy(sent.header_value(HeaderName::TargetDialog).expect("mapped")),
        format!("{carol_call_id};local-tag=c6;remote-tag={our_tag_for_carol}"),
        "Carol's own dialog, as she sees it"
    );
}
