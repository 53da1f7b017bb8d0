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
