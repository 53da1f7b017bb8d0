//! RTP relay in the engine, with virtual time; the harness plays the relay (no sockets): SDP
//! naming only the relay, media timeouts and activity, hold, no ports, failed opens, multipart.

use super::*;

const RELAY_YAML: &str = "active_profile: relay\nprofiles:\n  relay:\n    enable_rtprelay: yes\n";

fn with_relay(ports: (u16, u16)) -> Harness {
    Harness::with_relay_yaml(RELAY_YAML, ports)
}

pub(super) fn with_sdp(msg: String, sdp: &str) -> String {
    let body = sdp.replace('\n', "\r\n");
    msg.replace(
        "Content-Length: 0\n\n",
        &format!("Content-Type: application/sdp\nContent-Length: {}\n\n{}", body.len(), sdp),
    )
}

fn sdp_port(m: &Message) -> u16 {
    let body = String::from_utf8_lossy(m.body()).to_string();
    let line = body.lines().find(|l| l.starts_with("m=audio")).expect("an audio m-line");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

pub(super) const BOB_SDP: &str =
    "v=0\no=- 2 2 IN IP4 127.0.0.2\ns=-\nc=IN IP4 127.0.0.2\nt=0 0\nm=audio 7000 RTP/AVP 0\n";

#[test]
fn relayed_call_sdp_names_only_the_relay_and_silence_ends_it_with_bye_both_ways() {
    let mut h = with_relay((43000, 43099));
    let out = h.send(ALICE, &invite("media-1@alice", ""));
    let b_inv = one(&out, BOB);
    let offer = String::from_utf8_lossy(b_inv.body()).to_string();
    assert!(offer.contains("c=IN IP4 192.0.2.99\r\n"), "{offer}");
    assert!(!offer.contains("127.0.0.1"), "the caller's media address is hidden: {offer}");
    let b_port = sdp_port(&b_inv);
    assert!((43000..43100).contains(&b_port) && b_port.is_multiple_of(2));
    let out = h.send(BOB, &with_sdp(response_to(&b_inv, 200, "bt", ""), BOB_SDP));
    let ok = one(&out, ALICE);
    let answer = String::from_utf8_lossy(ok.body()).to_string();
    assert!(answer.contains("c=IN IP4 192.0.2.99\r\n") && !answer.contains("127.0.0.2"), "{answer}");
    let a_port = sdp_port(&ok);
    assert_ne!(a_port, b_port);
    assert_eq!(h.engine.media_ports_in_use(), 2);
    let (from, to_hdr) = (hv(&ok, HeaderName::From), hv(&ok, HeaderName::To));
    h.send(ALICE, &in_dialog("ACK", ALICE, &from, &to_hdr, "media-1@alice", 10, ""));
    // 59 s of silence: still up. At 60 s: BYE to both sides.
    assert!(h.advance(Duration::from_secs(59)).is_empty());
    let out = h.advance(Duration::from_millis(1100));
    for who in [ALICE, BOB] {
        let bye = to(&out, who).into_iter().find(|m| m.method() == Some(Method::Bye)).expect("a BYE each way");
        assert!(String::from_utf8_lossy(bye.bytes()).contains("text=\"media_timeout\""));
    }
    assert_eq!(h.engine.stats.get(Counter::MediaTimeouts), 1);
    assert_eq!(h.engine.active_calls(), 0);
    assert_eq!(h.engine.media_ports_in_use(), 0, "the relay closed the stream and the pairs came back");
}

/// Media the relay saw keeps a call up: the check at 60 s asks, the answer says a packet came
/// at 50 s, so the call lasts until 110 s of the last packet, not 60 s of the answer.
#[test]
fn reported_media_activity_keeps_the_call_up_until_the_relay_goes_silent() {
    let mut h = with_relay((43500, 43599));
    let out = h.send(ALICE, &invite("media-6@alice", ""));
    let b_inv = one(&out, BOB);
    let out = h.send(BOB, &with_sdp(response_to(&b_inv, 200, "bt", ""), BOB_SDP));
    let ok = one(&out, ALICE);
    let (from, to_hdr) = (hv(&ok, HeaderName::From), hv(&ok, HeaderName::To));
    h.send(ALICE, &in_dialog("ACK", ALICE, &from, &to_hdr, "media-6@alice", 10, ""));
    h.media_activity = Some(h.now + Duration::from_secs(50));
    assert!(!h.advance(Duration::from_secs(100)).iter().any(|s| s.msg.method() == Some(Method::Bye)));
    let out = h.advance(Duration::from_secs(15));
    assert!(out.iter().any(|s| s.msg.method() == Some(Method::Bye)), "60 s after the last packet");
    assert_eq!(h.engine.stats.get(Counter::MediaTimeouts), 1);
    assert_eq!(h.engine.media_ports_in_use(), 0);
}

/// Ports the relay cannot bind (another process holds one) fail the call that drew them: its
/// SDP already names them. The caller gets 503, the callee a CANCEL once it rings, and the
/// pairs go back.
#[test]
fn a_stream_the_relay_cannot_open_ends_its_call() {
    let mut h = with_relay((43600, 43699));
    h.media_fails = vec![0];
    let out = h.send(ALICE, &invite("media-7@alice", ""));
    let answers: Vec<_> = to(&out, ALICE).into_iter().filter_map(|m| m.status()).collect();
    assert!(answers.contains(&503), "{answers:?}");
    assert_eq!(h.engine.counter(Counter::MediaAllocationFailures), 1);
    let b_inv = first(&out, BOB);
    h.send(BOB, &response_to(&b_inv, 180, "bt", ""));
    let out = h.send(BOB, &response_to(&b_inv, 487, "bt", ""));
    assert!(to(&out, ALICE).is_empty() || to(&out, ALICE).iter().all(|m| m.status() != Some(200)));
    h.advance(Duration::from_secs(40));
    assert_eq!(h.engine.active_calls(), 0);
    assert_eq!(h.engine.media_ports_in_use(), 0);
}

/// A second stream the relay cannot open is dropped and the call goes on with the first; the
/// pair another process holds is never lent again.
#[test]
fn a_failed_stream_beside_a_working_one_leaves_the_call_up_and_its_busy_pair_aside() {
    let mut h = with_relay((43700, 43707));
    h.media_fails = vec![1];
    let two = format!("{SDP}m=video 6002 RTP/AVP 96\n");
    let out = h.send(ALICE, &invite_sdp("media-8@alice", "", &two));
    let b_inv = one(&out, BOB);
    assert!(to(&out, ALICE).iter().all(|m| m.status() != Some(503)), "the call goes on");
    assert_eq!(h.engine.counter(Counter::MediaAllocationFailures), 1);
    // Of four pairs, the audio stream holds two and one is set aside: one is left to lend.
    assert_eq!(h.engine.media_ports_in_use(), 2);
    let out = h.send(BOB, &with_sdp(response_to(&b_inv, 200, "bt", ""), BOB_SDP));
    assert_eq!(one(&out, ALICE).status(), Some(200));
    let out = h.send("127.0.0.2:5003", &invite_sdp("media-9@other", "", SDP));
    let answers: Vec<_> = to(&out, "127.0.0.2:5003").into_iter().filter_map(|m| m.status()).collect();
    assert!(answers.contains(&503), "one free pair is not enough for a call: {answers:?}");
}

#[test]
fn a_held_call_waits_for_the_hold_timeout_and_a_relay_off_profile_leaves_sdp_alone() {
    let mut h = with_relay((43100, 43199));
    let (b_inv, ok) = {
        let out = h.send(ALICE, &invite("media-2@alice", ""));
        let b_inv = one(&out, BOB);
        let out = h.send(BOB, &with_sdp(response_to(&b_inv, 200, "bt", ""), BOB_SDP));
        (b_inv, one(&out, ALICE))
    };
    let (from, to_hdr) = (hv(&ok, HeaderName::From), hv(&ok, HeaderName::To));
    h.send(ALICE, &in_dialog("ACK", ALICE, &from, &to_hdr, "media-2@alice", 10, ""));
    // Bob puts the call on hold with a re-INVITE.
    let hold = BOB_SDP.replace("m=audio 7000 RTP/AVP 0\n", "m=audio 7000 RTP/AVP 0\na=sendonly\n");
    let b_from = hv(&b_inv, HeaderName::To).replace(">", ">;tag=bt");
    let b_to = hv(&b_inv, HeaderName::From);
    let b_cid = String::from_utf8_lossy(b_inv.call_id().unwrap()).to_string();
    let reinv =
        with_sdp(in_dialog("INVITE", BOB, &b_from, &b_to, &b_cid, 1, &format!("Contact: <sip:peer@{BOB}>\n")), &hold);
    let out = h.send(BOB, &reinv);
    let to_alice = to(&out, ALICE);
    let a_reinv = to_alice.iter().find(|m| m.method() == Some(Method::Invite)).expect("re-INVITE relayed");
    assert!(String::from_utf8_lossy(a_reinv.body()).contains("a=sendonly"));
    assert_eq!(sdp_port(a_reinv), sdp_port(&ok), "the same stream keeps its port");
    let out = h.send(ALICE, &with_sdp(response_from(ALICE, a_reinv, 200, "", ""), SDP));
    assert!(!to(&out, BOB).is_empty());
    h.send(BOB, &in_dialog("ACK", BOB, &b_from, &b_to, &b_cid, 1, ""));
    assert!(!h.advance(Duration::from_secs(120)).iter().any(|s| s.msg.method() == Some(Method::Bye)), "on hold: 600 s");
    let out = h.advance(Duration::from_secs(500));
    assert!(out.iter().any(|s| s.msg.method() == Some(Method::Bye)));

    // A profile without the relay: the SDP goes through untouched.
    let mut plain = Harness::new();
    let out = plain.send(ALICE, &invite("media-3@alice", ""));
    assert_eq!(one(&out, BOB).body(), SDP.replace('\n', "\r\n").as_bytes());
}

#[test]
fn no_media_ports_refuses_the_call_with_503_and_leaves_nothing_behind() {
    // One port pair on the interface; a relayed call needs one per leg.
    let mut h = with_relay((43200, 43201));
    let out = h.send(ALICE, &invite("media-4@alice", ""));
    let answers: Vec<_> = to(&out, ALICE).into_iter().filter_map(|m| m.status()).collect();
    assert!(answers.contains(&503), "{answers:?}");
    assert!(to(&out, BOB).is_empty(), "nothing goes to the callee");
    assert_eq!(h.engine.active_calls(), 0);
    assert_eq!(h.engine.counter(Counter::MediaAllocationFailures), 1);
    assert_eq!(h.engine.media_ports_in_use(), 0);
}

#[test]
fn p_msgflags_forces_symmetric_rtp_as_sems_reads_it() {
    let m = |v: &str| {
        Message::parse(Bytes::from(format!("OPTIONS sip:x SIP/2.0\r\nP-MsgFlags: {v}\r\nContent-Length: 0\r\n\r\n")))
            .unwrap()
    };
    // SEMS reads the hex digits least significant first: bit value 2 is in the first digit.
    assert!(crate::b2bua::media::msgflags_symmetric(&m("2")));
    assert!(crate::b2bua::media::msgflags_symmetric(&m("30")));
    assert!(!crate::b2bua::media::msgflags_symmetric(&m("1")));
    assert!(!crate::b2bua::media::msgflags_symmetric(&m("02")));
    assert!(!crate::b2bua::media::msgflags_symmetric(&m("zz")));
}

#[test]
fn sdp_inside_a_multipart_body_is_anchored_and_the_other_parts_kept() {
    let mut h = with_relay((43300, 43399));
    let body = "--b1\r\nContent-Type: application/isup;version=itu-t92+\r\n\r\nISUP-BYTES\r\n--b1\r\nContent-Type: application/sdp\r\n\r\nv=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n\r\n--b1--\r\n";
    let inv = invite("media-5@alice", "")
        .replace("Content-Type: application/sdp\n", "Content-Type: multipart/mixed;boundary=b1\n");
    let (head, _) = inv.split_once("Content-Length:").unwrap();
    let msg = Message::parse(Bytes::from(format!(
        "{}Content-Length: {}\r\n\r\n{body}",
        head.replace('\n', "\r\n"),
        body.len()
    )))
    .unwrap();
    let src = Source { transport: Transport::Udp, local: 0, remote: addr(ALICE), conn: None };
    h.engine.handle_message(h.now, msg, src);
    let b_inv = one(&h.drain(), BOB);
    let out = String::from_utf8_lossy(b_inv.body()).to_string();
    assert!(out.contains("ISUP-BYTES") && out.contains("c=IN IP4 192.0.2.99\r\n"), "{out}");
    assert!(!out.contains("m=audio 6000 "), "{out}");
    assert!(out.ends_with("\r\n--b1--\r\n"));
}

#[test]
fn a_call_with_nothing_relayed_is_not_timed_out() {
    let mut h = with_relay((43400, 43499));
    let msrp = "v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=message 7394 TCP/MSRP *\n";
    let out = h.send(ALICE, &invite_sdp("media-6@alice", "", msrp));
    let b_inv = one(&out, BOB);
    assert!(String::from_utf8_lossy(b_inv.body()).contains("m=message 0 TCP/MSRP"), "TCP media is rejected");
    let out = h.send(BOB, &with_sdp(response_to(&b_inv, 200, "bt", ""), &msrp.replace("7394", "0")));
    let ok = one(&out, ALICE);
    let (from, to_hdr) = (hv(&ok, HeaderName::From), hv(&ok, HeaderName::To));
    h.send(ALICE, &in_dialog("ACK", ALICE, &from, &to_hdr, "media-6@alice", 10, ""));
    assert!(!h.advance(Duration::from_secs(300)).iter().any(|s| s.msg.method() == Some(Method::Bye)));
    assert_eq!(h.engine.active_calls(), 1);
}
