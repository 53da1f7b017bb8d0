//! SRTP termination in the engine (`aleg_srtp`, `bleg_srtp`, `sdes_required`): what each leg's
//! SDP says and the keys handed to the relay. Packets are the e2e tests' (tests/tests/srtp.rs).

use super::media::{with_sdp, BOB_SDP};
use super::*;
use rtp_relay::srtp::{sdes, MasterKey, Suite};

fn srtp_relay(aleg: &str, bleg: &str, required: bool) -> Harness {
    let yaml = format!(
        "active_profile: s\nprofiles:\n  s:\n    enable_rtprelay: yes\n    aleg_srtp: {aleg}\n    bleg_srtp: {bleg}\n    sdes_required: {}\n",
        if required { "yes" } else { "no" }
    );
    Harness::with_relay_yaml(&yaml, (44000, 44099))
}

const ALICE_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd";

fn srtp_offer() -> String {
    format!(
        "v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 6000 RTP/SAVP 0\n\
         a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{ALICE_KEY}|2^20|1:4 UNENCRYPTED_SRTP\n\
         a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{ALICE_KEY}\n"
    )
}

fn body(m: &Message) -> String {
    String::from_utf8_lossy(m.body()).to_string()
}

fn crypto_lines(sdp: &str) -> Vec<&str> {
    sdp.lines().filter_map(|l| l.strip_prefix("a=crypto:")).collect()
}

#[test]
fn an_srtp_caller_reaches_a_plain_callee_through_keys_of_the_sbc() {
    let mut h = srtp_relay("sdes", "rtp", true);
    let out = h.send(ALICE, &invite_sdp("srtp-1@alice", "", &srtp_offer()));
    let b_inv = one(&out, BOB);
    let offer = body(&b_inv);
    assert!(offer.contains(" RTP/AVP 0\r\n") && crypto_lines(&offer).is_empty(), "plain to B: {offer}");
    let out = h.send(BOB, &with_sdp(response_to(&b_inv, 200, "bt", ""), BOB_SDP));
    let ok = one(&out, ALICE);
    let answer = body(&ok);
    assert!(answer.contains(" RTP/SAVP 0\r\n"), "{answer}");
    let lines = crypto_lines(&answer);
    assert_eq!(lines.len(), 1, "{answer}");
    let ours = sdes::parse(lines[0]).expect("a crypto line");
    assert_eq!(ours.tag, 2, "the first usable line of the offer (tag 1 asks for unencrypted SRTP)");
    let ours = ours.key.expect("a usable key");
    assert_eq!(ours.suite, Suite::AesCm128HmacSha1_32);
    assert!(!answer.contains(ALICE_KEY), "the SBC's own key, not Alice's");
    let spec = h.specs.values().next().expect("a stream");
    let (a, b) = (spec.remotes[0].crypto, spec.remotes[1].crypto);
    assert!(a.srtp && a.send == Some(ours));
    assert_eq!(a.recv.map(|k| k.material().to_vec()), Some((0..30).collect()), "Alice's key decrypts her packets");
    assert!(!b.srtp && b.recv.is_none() && b.send.is_none(), "B is plain");
    assert_eq!(h.engine.counter(Counter::MediaInsecureRefused), 0);
}

#[test]
fn a_plain_offer_to_a_leg_that_requires_srtp_gets_488() {
    let mut h = srtp_relay("sdes", "rtp", true);
    let out = h.send(ALICE, &invite("srtp-2@alice", ""));
    assert!(to(&out, BOB).is_empty(), "nothing goes to B");
    let answers: Vec<_> = to(&out, ALICE).into_iter().filter_map(|m| m.status()).collect();
    assert!(answers.contains(&488), "{answers:?}");
    assert_eq!(h.engine.counter(Counter::MediaInsecureRefused), 1);
    assert_eq!(h.engine.media_ports_in_use(), 0);
    // An unknown suite is refused the same way.
    let odd = srtp_offer().replace("AES_CM_128_HMAC_SHA1_", "F8_128_HMAC_SHA1_");
    let out = h.send(ALICE, &invite_sdp("srtp-3@alice", "", &odd));
    assert!(to(&out, ALICE).into_iter().filter_map(|m| m.status()).any(|c| c == 488));
}

#[test]
fn a_plain_caller_is_offered_srtp_towards_the_callee_and_its_answer_keys_the_stream() {
    let mut h = srtp_relay("rtp", "sdes", true);
    let out = h.send(ALICE, &invite("srtp-4@alice", ""));
    let b_inv = one(&out, BOB);
    let offer = body(&b_inv);
    assert!(offer.contains(" RTP/SAVP 0\r\n"), "{offer}");
    let lines = crypto_lines(&offer);
    let suites: Vec<String> = lines.iter().map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string()).collect();
    assert_eq!(suites, ["AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32", "AEAD_AES_128_GCM"]);
    let theirs = sdes::format(3, &MasterKey::new(Suite::AeadAes128Gcm, &[9; 28]).expect("key"));
    let bob = format!("{}a=crypto:{theirs}\n", BOB_SDP.replace("RTP/AVP", "RTP/SAVP"));
    let out = h.send(BOB, &with_sdp(response_to(&b_inv, 200, "bt", ""), &bob));
    let answer = body(&one(&out, ALICE));
    assert!(answer.contains(" RTP/AVP 0\r\n") && crypto_lines(&answer).is_empty(), "plain to A: {answer}");
    let spec = h.specs.values().next().expect("a stream");
    let b = spec.remotes[1].crypto;
    let offered_gcm = sdes::parse(lines[2]).expect("line").key.expect("key");
    assert_eq!((b.recv.map(|k| k.suite), b.send), (Some(Suite::AeadAes128Gcm), Some(offered_gcm)));
}

#[test]
fn passthrough_leaves_crypto_lines_and_transport_as_they_came() {
    let mut h = srtp_relay("passthrough", "passthrough", false);
    let out = h.send(ALICE, &invite_sdp("srtp-5@alice", "", &srtp_offer()));
    let offer = body(&one(&out, BOB));
    assert!(offer.contains(" RTP/SAVP 0\r\n") && offer.contains(ALICE_KEY), "{offer}");
    assert_eq!(crypto_lines(&offer).len(), 2);
}

/// An answered call from an SRTP caller to a plain callee; returns B's INVITE, the 200 to A,
/// and A's From and To for in-dialog requests.
fn answered(h: &mut Harness, call_id: &str) -> (Message, Message, String, String) {
    let out = h.send(ALICE, &invite_sdp(call_id, "", &srtp_offer()));
    let b_inv = one(&out, BOB);
    let out = h.send(BOB, &with_sdp(response_to(&b_inv, 200, "bt", ""), BOB_SDP));
    let ok = one(&out, ALICE);
    let (from, to_hdr) = (hv(&ok, HeaderName::From), hv(&ok, HeaderName::To));
    h.send(ALICE, &in_dialog("ACK", ALICE, &from, &to_hdr, call_id, 10, ""));
    (b_inv, ok, from, to_hdr)
}

#[test]
fn a_re_offer_the_policy_refuses_gets_488_and_the_call_keeps_its_media() {
    let mut h = srtp_relay("sdes", "rtp", true);
    let (_, _, from, to_hdr) = answered(&mut h, "srtp-6@alice");
    let (specs, ports) = (h.specs.clone(), h.engine.media_ports_in_use());
    let plain = SDP.replace("o=- 1 1", "o=- 1 2");
    let contact = format!("Contact: <sip:alice@{ALICE}>\n");
    let out =
        h.send(ALICE, &with_sdp(in_dialog("INVITE", ALICE, &from, &to_hdr, "srtp-6@alice", 11, &contact), &plain));
    assert!(to(&out, BOB).is_empty(), "nothing reaches B");
    assert!(to(&out, ALICE).iter().any(|m| m.status() == Some(488)), "{out:#?}");
    assert_eq!((h.specs.clone(), h.engine.media_ports_in_use()), (specs, ports), "the media is as it was");
    assert_eq!(h.engine.counter(Counter::MediaInsecureRefused), 1);
}

#[test]
fn a_stream_the_relay_does_not_anchor_carries_no_key_across() {
    let mut h = srtp_relay("sdes", "rtp", false);
    let video =
        "m=video 6002 RTP/SAVP 96\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:VIDEOKEYVIDEOKEYVIDEOKEYVIDEOKEYVIDEOKE\n";
    let two = format!("{}{video}", srtp_offer());
    // The video line's key has the wrong length: that stream is refused, the audio goes on.
    let out = h.send(ALICE, &invite_sdp("srtp-7@alice", "", &two));
    let offer = body(&one(&out, BOB));
    assert!(offer.contains("m=video 0 "), "{offer}");
    assert!(!offer.contains("VIDEOKEY") && !offer.contains(ALICE_KEY), "no key of Alice's reaches B: {offer}");
    assert!(crypto_lines(&offer).is_empty(), "{offer}");
}

#[test]
fn a_late_offer_from_the_callee_is_offered_to_an_srtp_caller_and_the_ack_answers_it() {
    let mut h = srtp_relay("sdes", "rtp", true);
    let out = h.send(ALICE, &invite_sdp("srtp-8@alice", "", ""));
    let b_inv = one(&out, BOB);
    assert!(b_inv.body().is_empty());
    let out = h.send(BOB, &with_sdp(response_to(&b_inv, 200, "bt", ""), BOB_SDP));
    let ok = one(&out, ALICE);
    let offer = body(&ok);
    assert!(offer.contains(" RTP/SAVP 0"), "{offer}");
    assert_eq!(crypto_lines(&offer).len(), 3, "the 200 offers A every suite: {offer}");
    let ours = sdes::parse(crypto_lines(&offer)[1]).expect("line").key.expect("key");
    let theirs = MasterKey::new(Suite::AesCm128HmacSha1_32, &[4; 30]).expect("key");
    let answer = format!("{}a=crypto:{}\n", SDP.replace("RTP/AVP", "RTP/SAVP"), sdes::format(2, &theirs));
    let (from, to_hdr) = (hv(&ok, HeaderName::From), hv(&ok, HeaderName::To));
    let out = h.send(ALICE, &with_sdp(in_dialog("ACK", ALICE, &from, &to_hdr, "srtp-8@alice", 10, ""), &answer));
    let ack = to(&out, BOB).into_iter().find(|m| m.method() == Some(Method::Ack)).expect("the ACK goes on");
    assert!(body(&ack).contains(" RTP/AVP 0") && crypto_lines(&body(&ack)).is_empty(), "{}", body(&ack));
    let a = h.specs.values().next().expect("a stream").remotes[0].crypto;
    assert_eq!((a.recv, a.send), (Some(theirs), Some(ours)), "A's answer keyed both ways");
}

#[test]
fn forked_early_answers_are_each_answered_with_one_line() {
    let mut h = srtp_relay("sdes", "rtp", true);
    let out = h.send(ALICE, &invite_sdp("srtp-9@alice", "", &srtp_offer()));
    let b_inv = one(&out, BOB);
    for (tag, origin) in [("f1", "o=- 5 5"), ("f2", "o=- 9 9")] {
        let sdp = BOB_SDP.replace("o=- 2 2", origin);
        let out = h.send(BOB, &with_sdp(response_to(&b_inv, 183, tag, ""), &sdp));
        let early = to(&out, ALICE).into_iter().find(|m| m.status() == Some(183)).expect("183 relayed");
        assert_eq!(crypto_lines(&body(&early)).len(), 1, "an answer, from fork {tag}: {}", body(&early));
    }
}

#[test]
fn sdp_in_a_failure_response_is_not_anchored() {
    let mut h = srtp_relay("sdes", "rtp", true);
    let out = h.send(ALICE, &invite_sdp("srtp-10@alice", "", &srtp_offer()));
    let b_inv = one(&out, BOB);
    let specs = h.specs.clone();
    let out = h.send(BOB, &with_sdp(response_to(&b_inv, 488, "bt", ""), BOB_SDP));
    let refused = to(&out, ALICE).into_iter().find(|m| m.status() == Some(488)).expect("488 relayed");
    assert!(crypto_lines(&body(&refused)).is_empty(), "no key made for a failure: {}", body(&refused));
    assert_eq!(h.specs, specs);
}

/// The SBC's own session refresh re-offers the callee the SDP it last sent it; the callee's
/// 2xx may bring a new key, which the relay takes.
#[test]
fn a_session_refresh_answered_with_a_new_key_rekeys_the_stream() {
    let yaml = "active_profile: s\nprofiles:\n  s:\n    enable_rtprelay: yes\n    aleg_srtp: rtp\n    bleg_srtp: sdes\n    enable_session_timer: yes\n    enable_aleg_session_timer: no\n    session_expires: 120\n    minimum_timer: 90\n    session_refresh_method: INVITE\n";
    let mut h = Harness::with_relay_yaml(yaml, (44100, 44199));
    let out = h.send(ALICE, &invite("srtp-11@alice", ""));
    let b_inv = one(&out, BOB);
    let initial = MasterKey::new(Suite::AesCm128HmacSha1_80, &[1; 30]).expect("key");
    let answer = |k: &MasterKey| format!("{}a=crypto:{}\n", BOB_SDP.replace("RTP/AVP", "RTP/SAVP"), sdes::format(1, k));
    let se = "Session-Expires: 120;refresher=uac\nRequire: timer\n";
    let out = h.send(BOB, &with_sdp(response_to(&b_inv, 200, "bt", se), &answer(&initial)));
    let ok = one(&out, ALICE);
    h.send(
        ALICE,
        &in_dialog("ACK", ALICE, &hv(&ok, HeaderName::From), &hv(&ok, HeaderName::To), "srtp-11@alice", 10, ""),
    );
    let spec_b = |h: &Harness| h.specs.values().next().expect("a stream").remotes[1].crypto;
    assert_eq!(spec_b(&h).recv, Some(initial));
    // Media flows (the relay says so), so the call outlives the media timeout.
    h.media_activity = Some(h.now + Duration::from_secs(58));
    let out = h.advance(Duration::from_secs(61));
    let reinv = first(&out, BOB);
    assert_eq!(reinv.method(), Some(Method::Invite));
    assert_eq!(reinv.body(), b_inv.body(), "the SDP last sent to the callee");
    let renewed = MasterKey::new(Suite::AesCm128HmacSha1_80, &[2; 30]).expect("key");
    h.send(BOB, &with_sdp(response_to(&reinv, 200, "", se), &answer(&renewed)));
    assert_eq!(spec_b(&h).recv, Some(renewed), "the callee's new key is taken");
    assert_eq!(spec_b(&h).send, Some(sdes::parse(crypto_lines(&body(&b_inv))[0]).expect("l").key.expect("k")));
}
