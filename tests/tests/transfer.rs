//! An attended transfer through sbcd with in-process UAs on loopback: Alice calls Bob, Bob
//! calls Carol, and Bob transfers Alice to Carol with a REFER whose Refer-To carries a
//! Replaces naming Bob's call with Carol as Bob sees it. Alice's INVITE reaches Carol with a
//! Replaces naming Carol's own dialog (RFC 3891 across the B2BUA), and hangs up.

use std::time::Duration;

use sbc_e2e::ua::{sdp, SipText, TestUa};
use sbc_e2e::*;

/// `caller` calls `uri` in a thread while `callee` answers; the caller back, and the INVITE
/// the callee got.
fn call(mut caller: TestUa, callee: &TestUa, uri: String) -> (TestUa, SipText) {
    let t = std::thread::spawn(move || {
        let ok = caller.invite(&uri, &sdp("127.0.0.1", 7000, ""));
        assert_eq!(ok.status(), Some(200), "{}", ok.0);
        caller
    });
    let inv = callee.recv_request(Duration::from_secs(5)).expect("the INVITE arrives");
    callee.answer(&inv, &sdp("127.0.0.1", 7002, ""));
    let caller = t.join().expect("caller");
    let ack = callee.recv_request(Duration::from_secs(5)).expect("the ACK arrives");
    assert_eq!(ack.method(), Some("ACK"));
    (caller, inv)
}

#[test]
fn an_attended_transfer_replaces_the_far_sides_own_dialog() {
    transfer(&Sbcd::start(&[]), false, true);
}

/// The same with `fix_replaces_ref`: the REFER's Replaces is mapped on its way to Alice, and
/// her INVITE (naming Carol's dialog already) passes as it is. The two calls on one shard, and
/// on two (the REFER's shard asks the other one).
#[test]
fn with_fix_replaces_ref_the_refer_carries_the_far_sides_dialog() {
    let sbcd = Sbcd::with_config("active_profile: p\nprofiles:\n  p:\n    fix_replaces_ref: yes\n", &[]);
    transfer(&sbcd, true, false);
    transfer(&sbcd, true, true);
}

/// RFC 4538: Bob's out-of-dialog REFER to Carol names, in Target-Dialog, his call with her as
/// he sees it (sent from another shard than the call's); Carol gets it naming her own dialog.
#[test]
fn a_target_dialog_reaches_the_far_side_naming_its_own_dialog() {
    let sbcd = Sbcd::start(&[]);
    let (bob, carol) = (TestUa::new(sbcd.addr()), TestUa::new(sbcd.addr()));
    let carol_at = carol.local;
    let (bob, to_carol) = call(bob, &carol, format!("sip:carol@{carol_at}"));
    let (_, calls) = http(&sbcd, "GET", "/calls", None, None);
    let calls: serde_json::Value = serde_json::from_str(&calls).expect("json");
    let mut legs = calls.as_array().into_iter().flatten().flat_map(|c| c["legs"].as_array().into_iter().flatten());
    let bob_leg = legs.find(|l| l["call_id"] == bob.call_id.as_str()).expect("Bob's leg");
    let sbc_tag = bob_leg["local_tag"].as_str().unwrap_or_default();

    let shard = |call_id: &str| sbc_core::b2bua::shard_of_call_id(call_id.as_bytes(), 2);
    let refer_id =
        (0..).map(|n| format!("refer-{n}@bob")).find(|c| shard(c) != shard(&bob.call_id)).expect("another shard");
    let refer = format!(
        "REFER sip:carol@{carol_at} SIP/2.0\r\nVia: SIP/2.0/UDP {bob_at};branch=z9hG4bKtd1;rport\r\nMax-Forwards: 70\r\nFrom: <sip:bob@{bob_at}>;tag=td1\r\nTo: <sip:carol@{carol_at}>\r\nCall-ID: {refer_id}\r\nCSeq: 1 REFER\r\nContact: <sip:bob@{bob_at}>\r\nRefer-To: <sip:dave@example.com>\r\nTarget-Dialog: {};local-tag={sbc_tag};remote-tag={}\r\nContent-Length: 0\r\n\r\n",
        bob.call_id,
        bob.from_tag(),
        bob_at = bob.local,
    );
    bob.send(&refer);
    let relayed = carol.recv_method("REFER", Duration::from_secs(5)).expect("the REFER reaches Carol");
    let expected = format!(
        "{};local-tag=callee{};remote-tag={}",
        to_carol.header("Call-ID").unwrap_or_default(),
        carol_at.port(),
        to_carol.tag("From")
    );
    assert_eq!(relayed.header("Target-Dialog"), Some(expected.as_str()), "{}", relayed.0);
    carol.reply(&relayed, "202 Accepted", "");
    let answer = std::iter::from_fn(|| bob.recv(Duration::from_secs(5))).find(|m| m.status().is_some());
    assert_eq!(answer.and_then(|a| a.status()), Some(202));
}

/// `refer_mapped`: the REFER reaching Alice names Carol's dialog already (else Bob's).
/// `across_shards`: Bob's call with Carol is on another of sbcd's two shards than Alice's.
fn transfer(sbcd: &Sbcd, refer_mapped: bool, across_shards: bool) {
    let (alice, mut bob, carol) = (TestUa::new(sbcd.addr()), TestUa::new(sbcd.addr()), TestUa::new(sbcd.addr()));
    let shard = |call_id: &str| sbc_core::b2bua::shard_of_call_id(call_id.as_bytes(), 2);
    bob.call_id = (0..)
        .map(|n| format!("bob-{n}-{}", bob.call_id))
        .find(|c| (shard(c) != shard(&alice.call_id)) == across_shards)
        .expect("one of them hashes as asked");
    let (bob_at, carol_at) = (bob.local, carol.local);
    let (alice, to_bob) = call(alice, &bob, format!("sip:bob@{bob_at}"));
    let (bob, to_carol) = call(bob, &carol, format!("sip:carol@{carol_at}"));

    // Bob's call with Carol as Bob sees it: his Call-ID, the SBC's tag, his own tag.
    let (_, calls) = http(sbcd, "GET", "/calls", None, None);
    let calls: serde_json::Value = serde_json::from_str(&calls).expect("json");
    let legs = calls.as_array().into_iter().flatten().flat_map(|c| c["legs"].as_array().into_iter().flatten());
    let bob_leg = legs.clone().find(|l| l["call_id"] == bob.call_id.as_str()).expect("Bob's leg of the second call");
    let sbc_tag = bob_leg["local_tag"].as_str().unwrap_or_default();
    let replaces = format!("{};to-tag={sbc_tag};from-tag={}", bob.call_id, bob.from_tag());

    // Bob sends the REFER on his call with Alice (the dialog of the INVITE he answered).
    let refer_to = format!("<sip:carol@{carol_at}?Replaces={}>", replaces.replace(';', "%3B").replace('=', "%3D"));
    let contact = to_bob.header("Contact").unwrap_or_default().trim_matches(|c| c == '<' || c == '>').to_string();
    let refer = format!(
        "REFER {contact} SIP/2.0\r\nVia: SIP/2.0/UDP {bob_at};branch=z9hG4bKrefer1;rport\r\nMax-Forwards: 70\r\nFrom: {};tag=callee{}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 1 REFER\r\nContact: <sip:bob@{bob_at}>\r\nRefer-To: {refer_to}\r\nContent-Length: 0\r\n\r\n",
        to_bob.header("To").unwrap_or_default(),
        bob_at.port(),
        to_bob.header("From").unwrap_or_default(),
        to_bob.header("Call-ID").unwrap_or_default(),
    );
    bob.send(&refer);
    let relayed = alice.recv_request(Duration::from_secs(5)).expect("the REFER reaches Alice");
    assert_eq!(relayed.method(), Some("REFER"), "{}", relayed.0);
    alice.ok(&relayed);
    let to = relayed.header("Refer-To").unwrap_or_default();
    let embedded = to.split("Replaces=").nth(1).expect("Replaces in Refer-To").trim_end_matches('>');
    let embedded = embedded.replace("%3B", ";").replace("%3D", "=").replace("%40", "@");
    let expected = format!(
        "{};to-tag=callee{};from-tag={}",
        to_carol.header("Call-ID").unwrap_or_default(),
        carol_at.port(),
        to_carol.tag("From")
    );
    assert_eq!(&embedded, if refer_mapped { &expected } else { &replaces }, "the Refer-To Alice got");

    // Alice calls Carol with that Replaces: Carol is told to replace her own call with Bob.
    let mut alice2 = TestUa::new(sbcd.addr());
    alice2.extra_headers = format!("Replaces: {embedded}\r\n");
    let (mut alice2, to_carol_again) = call(alice2, &carol, format!("sip:carol@{carol_at}"));
    assert_eq!(to_carol_again.header("Replaces"), Some(expected.as_str()), "{}", to_carol_again.0);

    // The new call lives with the dialog it replaced (a shard of its own choosing): its BYE
    // finds it there.
    let bye = std::thread::spawn(move || alice2.bye().status());
    let req = carol.recv_request(Duration::from_secs(5)).expect("the BYE reaches Carol");
    assert_eq!(req.method(), Some("BYE"), "{}", req.0);
    carol.ok(&req);
    assert_eq!(bye.join().expect("alice"), Some(200));
}
