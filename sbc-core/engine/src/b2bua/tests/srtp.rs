//! SRTP termination in the engine (`aleg_srtp`, `bleg_srtp`, `sdes_required`): what each leg's
//! SDP says and the keys handed to the relay. Packets are the e2e tests' (tests/tests/srtp.rs).

use super::media::{with_sdp, BOB_SDP};
use super::*;
use rtp_relay::srtp::{sdes, Suite};

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
         a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{ALICE_KEY}|2^20|1:4\n\
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
    assert_eq!(ours.tag, 2, "the first usable line of the offer (tag 1 has an MKI)");
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
    let odd = srtp_offer().replace("AES_CM_128_HMAC_SHA1_32", "F8_128_HMAC_SHA1_80");
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
    let theirs = sdes::format(3, &rtp_relay::srtp::MasterKey::new(Suite::AeadAes128Gcm, &[9; 28]).expect("key"));
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
