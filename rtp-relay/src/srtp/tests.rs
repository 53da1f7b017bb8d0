use rtc_srtp::context::Context;
use rtc_srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use rtc_srtp::protection_profile::ProtectionProfile;

use super::contexts::{CryptoDrop, SideContexts};
use super::negotiation::{Rewrite, Role, Roles, Security, StreamSdes};
use super::sdes::{self, CryptoLine};
use super::*;

fn key(suite: Suite, byte: u8) -> MasterKey {
    let material: Vec<u8> = (0..suite.material_len() as u8).map(|i| i ^ byte).collect();
    MasterKey::new(suite, &material).expect("length of the suite")
}

fn rtp(ssrc: u32, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 0, (seq >> 8) as u8, seq as u8, 0, 0, 0, 160];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// A sender report without report blocks (RFC 3550 §6.4.1).
fn rtcp(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 200, 0, 6];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[1; 20]);
    p
}

/// The peer's side of the wire, in webrtc-rs's implementation (not the one the relay uses).
fn peer(k: &MasterKey) -> Context {
    let profile = match k.suite {
        Suite::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
        Suite::AesCm128HmacSha1_32 => ProtectionProfile::Aes128CmHmacSha1_32,
        Suite::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
    };
    let provider = rtc_srtp::crypto::default_provider().expect("ring provider");
    Context::new(
        k.key(),
        k.salt(),
        profile,
        Some(srtp_replay_protection(64)),
        Some(srtcp_replay_protection(64)),
        provider.crypto(),
    )
    .expect("context")
}

fn contexts(recv: Option<MasterKey>, send: Option<MasterKey>) -> SideContexts {
    SideContexts::new(SideCrypto { srtp: true, recv, send, mux: false })
}

fn through(ctx: &mut SideContexts, rtcp: bool, packet: &[u8], protect: bool) -> Result<Vec<u8>, CryptoDrop> {
    let mut buf = [0u8; 2048];
    buf[..packet.len()].copy_from_slice(packet);
    let n =
        if protect { ctx.protect(rtcp, &mut buf, packet.len()) } else { ctx.unprotect(rtcp, &mut buf, packet.len()) }?;
    Ok(buf[..n].to_vec())
}

#[test]
fn crypto_lines_read_and_written() {
    let k = key(Suite::AesCm128HmacSha1_80, 3);
    let line = sdes::format(7, &k);
    assert!(line.starts_with("7 AES_CM_128_HMAC_SHA1_80 inline:"), "{line}");
    assert_eq!(sdes::parse(&line), Some(CryptoLine { tag: 7, key: Ok(k) }));
    let with_lifetime = format!("{line}|2^31 WSH=64");
    assert_eq!(sdes::parse(&with_lifetime).map(|l| l.key), Some(Ok(k)));
    let gcm = key(Suite::AeadAes128Gcm, 9);
    assert_eq!(sdes::parse(&sdes::format(1, &gcm)).map(|l| l.key), Some(Ok(gcm)));
}

#[test]
fn crypto_lines_the_relay_cannot_honour_say_why() {
    let k = sdes::format(1, &key(Suite::AesCm128HmacSha1_80, 1));
    let why = |v: &str| sdes::parse(v).map(|l| l.key.err());
    assert_eq!(why(&format!("{k}|2^20|x:4")), Some(Some("MKI value not supported")));
    assert_eq!(why(&k.replace("AES_CM_128_HMAC_SHA1_80", "F8_128_HMAC_SHA1_80")), Some(Some("unknown crypto suite")));
    assert_eq!(why("1 AES_CM_128_HMAC_SHA1_80 inline:AAAA"), Some(Some("key has the wrong length for its suite")));
    assert_eq!(why("1 AES_CM_128_HMAC_SHA1_80 inline:!!!"), Some(Some("key is not base64")));
    assert_eq!(why(&format!("{k} UNENCRYPTED_SRTP")), Some(Some("session parameter not supported")));
    assert_eq!(why("1 AES_CM_128_HMAC_SHA1_80 uri:x"), Some(Some("key method is not inline")));
    assert_eq!(why("1 AES_CM_128_HMAC_SHA1_80"), Some(Some("no key parameters")));
    assert_eq!(sdes::parse("x AES_CM_128_HMAC_SHA1_80 inline:AAAA"), None);
    assert_eq!(sdes::parse("1234567890 AES_CM_128_HMAC_SHA1_80 inline:AAAA"), None);
    assert_eq!(sdes::parse(""), None);
}

#[test]
fn the_relay_decrypts_and_encrypts_as_another_implementation_does() {
    for suite in Suite::ALL {
        let (k_in, k_out) = (key(suite, 0x11), key(suite, 0x22));
        let mut side = contexts(Some(k_in), Some(k_out));
        let (mut peer_out, mut peer_in) = (peer(&k_in), peer(&k_out));
        for seq in [65_530u16, 65_535, 0, 5] {
            let plain = rtp(0xabcd, seq, b"twenty bytes of pcm.");
            let sealed = peer_out.encrypt_rtp(&plain).expect("peer encrypts");
            assert_ne!(&sealed[12..32], &plain[12..], "{suite:?} encrypts the payload");
            assert_eq!(through(&mut side, false, &sealed, false).as_deref(), Ok(&plain[..]), "{suite:?} seq {seq}");
            let ours = through(&mut side, false, &plain, true).expect("relay encrypts");
            assert_eq!(&peer_in.decrypt_rtp(&ours).expect("peer decrypts")[..], &plain[..], "{suite:?}");
        }
        let report = rtcp(0xabcd);
        let sealed = peer_out.encrypt_rtcp(&report).expect("peer encrypts RTCP");
        assert_eq!(through(&mut side, true, &sealed, false).as_deref(), Ok(&report[..]), "{suite:?} SRTCP in");
        let ours = through(&mut side, true, &report, true).expect("relay encrypts RTCP");
        assert_eq!(&peer_in.decrypt_rtcp(&ours).expect("peer decrypts RTCP")[..], &report[..], "{suite:?}");
    }
}

#[test]
fn tampered_replayed_and_unkeyed_packets_are_refused() {
    let k = key(Suite::AesCm128HmacSha1_80, 5);
    let mut side = contexts(Some(k), None);
    let mut peer_out = peer(&k);
    let sealed = peer_out.encrypt_rtp(&rtp(1, 10, b"payload")).expect("encrypts").to_vec();
    let mut tampered = sealed.clone();
    tampered[14] ^= 1;
    assert_eq!(through(&mut side, false, &tampered, false), Err(CryptoDrop::Authentication));
    assert!(through(&mut side, false, &sealed, false).is_ok(), "a forgery does not spoil the real packet");
    assert_eq!(through(&mut side, false, &sealed, false), Err(CryptoDrop::Replay));
    assert_eq!(
        through(&mut side, false, &rtp(1, 11, b"plain rtp, twenty bytes or more"), false),
        Err(CryptoDrop::Authentication)
    );
    assert_eq!(through(&mut side, false, &[0x80, 0], false), Err(CryptoDrop::Malformed));
    assert_eq!(through(&mut side, false, &rtp(1, 12, b"x"), true), Err(CryptoDrop::NoKey), "no key to send with");
    // Forged SSRCs leave no state behind: the real SSRC goes on after a spray of them.
    for ssrc in 100..2100u32 {
        let mut f = sealed.clone();
        f[8..12].copy_from_slice(&ssrc.to_be_bytes());
        assert_eq!(through(&mut side, false, &f, false), Err(CryptoDrop::Authentication));
    }
    let next = peer_out.encrypt_rtp(&rtp(1, 11, b"payload")).expect("encrypts");
    assert!(through(&mut side, false, &next, false).is_ok());
}

#[test]
fn rekeying_with_the_same_keys_keeps_the_replay_window() {
    let k = key(Suite::AesCm128HmacSha1_80, 6);
    let mut side = contexts(Some(k), Some(k));
    let sealed = peer(&k).encrypt_rtp(&rtp(1, 10, b"payload")).expect("encrypts");
    assert!(through(&mut side, false, &sealed, false).is_ok());
    side.rekey(SideCrypto { srtp: true, recv: Some(k), send: Some(k), mux: false });
    assert_eq!(through(&mut side, false, &sealed, false), Err(CryptoDrop::Replay));
    let other = key(Suite::AesCm128HmacSha1_80, 7);
    side.rekey(SideCrypto { srtp: true, recv: Some(other), send: Some(k), mux: false });
    assert_eq!(
        through(&mut side, false, &sealed, false),
        Err(CryptoDrop::Replay),
        "a new key: the old key's context stays beside it, with its window"
    );
}

// --- negotiation ---

const SDES: Policy = Policy::Sdes { required: false };
const REQUIRED: Policy = Policy::Sdes { required: true };

fn offer_of(lines: &[(u32, MasterKey)]) -> Security {
    Security {
        savp: true,
        lines: lines.iter().map(|&(tag, k)| CryptoLine { tag, key: Ok(k) }).collect(),
        ..Security::default()
    }
}

fn plain() -> Security {
    Security::default()
}

fn counter() -> impl FnMut() -> [u8; MAX_MATERIAL] {
    let mut n = 0u8;
    move || {
        n += 1;
        [n; MAX_MATERIAL]
    }
}

#[test]
fn an_srtp_caller_is_bridged_to_a_plain_callee_and_back() {
    let mut s = StreamSdes::default();
    let mut fresh = counter();
    let theirs = key(Suite::AesCm128HmacSha1_32, 1);
    let unusable = CryptoLine { tag: 1, key: Err("MKI is not supported") };
    let mut offer = offer_of(&[(2, theirs)]);
    offer.lines.insert(0, unusable);
    let to_b = s.step([SDES, Policy::Plain], 0, Role::Offer, &offer, &mut fresh);
    assert_eq!(to_b, Ok(Rewrite::Plain));
    let to_a = s.step([SDES, Policy::Plain], 1, Role::Answer, &plain(), &mut fresh);
    let Ok(Rewrite::Sdes(lines)) = to_a else { panic!("an SRTP answer to A: {to_a:?}") };
    assert_eq!(lines.len(), 1, "an answer has one line");
    assert_eq!((lines[0].0, lines[0].1.suite), (2, Suite::AesCm128HmacSha1_32), "the offer's tag and suite");
    let a = s.side_crypto(0);
    assert_eq!((a.srtp, a.recv, a.send), (true, Some(theirs), Some(lines[0].1)));
    assert_eq!(s.side_crypto(1), SideCrypto::default(), "B is plain");
}

#[test]
fn a_plain_caller_is_offered_to_an_srtp_callee_with_every_suite() {
    let mut s = StreamSdes::default();
    let mut fresh = counter();
    let policies = [Policy::Plain, REQUIRED];
    let Ok(Rewrite::Sdes(offered)) = s.step(policies, 0, Role::Offer, &plain(), &mut fresh) else {
        panic!()
    };
    let suites: Vec<(u32, Suite)> = offered.iter().map(|(t, k)| (*t, k.suite)).collect();
    assert_eq!(suites, vec![(1, Suite::ALL[0]), (2, Suite::ALL[1]), (3, Suite::ALL[2])]);
    assert_eq!(
        s.side_crypto(1),
        SideCrypto { srtp: true, recv: None, send: None, mux: false },
        "nothing goes before the answer"
    );
    let b_key = key(Suite::AeadAes128Gcm, 4);
    // An answer naming a tag the relay did not offer with that suite is refused.
    let wrong = offer_of(&[(1, b_key)]);
    assert!(s.clone().step(policies, 1, Role::Answer, &wrong, &mut fresh).is_err());
    assert_eq!(s.step(policies, 1, Role::Answer, &offer_of(&[(3, b_key)]), &mut fresh), Ok(Rewrite::Plain));
    assert_eq!(s.side_crypto(1), SideCrypto { srtp: true, recv: Some(b_key), send: Some(offered[2].1), mux: false });
    // A re-offer keeps the relay's keys (no restart of the peer's replay window).
    let Ok(Rewrite::Sdes(again)) = s.step(policies, 0, Role::Offer, &plain(), &mut fresh) else {
        panic!()
    };
    assert_eq!(again, offered);
}

#[test]
fn policies_refuse_what_they_must() {
    let mut fresh = counter();
    let k = key(Suite::AesCm128HmacSha1_80, 1);
    let mut s = StreamSdes::default();
    assert!(s.step([REQUIRED, Policy::Plain], 0, Role::Offer, &plain(), &mut fresh).is_err(), "plain to required");
    assert!(s.step([Policy::Plain, SDES], 0, Role::Offer, &offer_of(&[(1, k)]), &mut fresh).is_err(), "SRTP to plain");
    let bad = Security {
        savp: true,
        lines: vec![CryptoLine { tag: 1, key: Err("unknown crypto suite") }],
        ..Security::default()
    };
    assert_eq!(s.step([SDES, Policy::Plain], 0, Role::Offer, &bad, &mut fresh), Err("unknown crypto suite"));
    let none = Security { savp: true, ..Security::default() };
    assert!(s.step([SDES, Policy::Plain], 0, Role::Offer, &none, &mut fresh).is_err(), "SAVP without a key");
    assert_eq!(s.step([SDES, Policy::Plain], 0, Role::Offer, &plain(), &mut fresh), Ok(Rewrite::Plain), "optional");
    let both = [Policy::Passthrough; 2];
    assert_eq!(s.step(both, 0, Role::Offer, &offer_of(&[(1, k)]), &mut fresh), Ok(Rewrite::Keep));
}

#[test]
fn a_passthrough_side_beside_a_terminated_one_keeps_its_kind() {
    let mut fresh = counter();
    let k = key(Suite::AesCm128HmacSha1_80, 1);
    let policies = [Policy::Passthrough, Policy::Plain];
    let mut s = StreamSdes::default();
    assert_eq!(s.step(policies, 0, Role::Offer, &offer_of(&[(5, k)]), &mut fresh), Ok(Rewrite::Plain));
    let Ok(Rewrite::Sdes(lines)) = s.step(policies, 1, Role::Answer, &plain(), &mut fresh) else {
        panic!()
    };
    assert_eq!(lines[0].0, 5);
    // The other way: B (sdes) offers SRTP, the passthrough A is offered SRTP too.
    let policies = [Policy::Passthrough, SDES];
    let mut s = StreamSdes::default();
    assert!(matches!(s.step(policies, 1, Role::Offer, &offer_of(&[(1, k)]), &mut fresh), Ok(Rewrite::Sdes(_))));
    let mut s = StreamSdes::default();
    assert_eq!(s.step(policies, 1, Role::Offer, &plain(), &mut fresh), Ok(Rewrite::Plain));
}

#[test]
fn roles_taken_from_the_message_and_inferred_for_prack() {
    let mut r = Roles::default();
    let (offer, answer) = (Some(Role::Offer), Some(Role::Answer));
    assert_eq!(r.role(0, offer, Some("o=a 1 1 IN IP4 h")), Role::Offer, "INVITE");
    // Forked 183s with different o= lines, then a 200 from a third: all answers (the
    // responses say so), whatever their origin.
    assert_eq!(r.role(1, answer, Some("o=fork1 1 1 IN IP4 h")), Role::Answer);
    assert_eq!(r.role(1, answer, Some("o=fork2 7 7 IN IP4 h")), Role::Answer);
    assert_eq!(r.role(1, answer, Some("o=b 1 1 IN IP4 h")), Role::Answer);
    // An INVITE without SDP: its reliable 183 offers, the PRACK's SDP is inferred an answer.
    assert_eq!(r.role(1, offer, Some("o=b 1 2 IN IP4 h")), Role::Offer);
    assert_eq!(r.role(0, None, Some("o=a 1 2 IN IP4 h")), Role::Answer, "PRACK answers the 183");
    // A PRACK with new SDP after the exchange ended: an offer.
    assert_eq!(r.role(0, None, Some("o=a 1 3 IN IP4 h")), Role::Offer);
    // A stale offer (refused with 488) does not make the other side's next offer an answer.
    assert_eq!(r.role(1, offer, Some("o=b 1 4 IN IP4 h")), Role::Offer);
    // The same o= again without a known role: the role it had.
    assert_eq!(r.role(1, None, Some("o=b 1 4 IN IP4 h")), Role::Offer);
}

#[test]
fn a_failed_re_offer_leaves_the_exchange_as_it_was_and_its_new_key_is_taken_beside_the_old() {
    let mut s = StreamSdes::default();
    let mut fresh = counter();
    let policies = [SDES, Policy::Plain];
    let first = key(Suite::AesCm128HmacSha1_32, 1);
    s.step(policies, 0, Role::Offer, &offer_of(&[(1, first)]), &mut fresh).expect("offer");
    s.step(policies, 1, Role::Answer, &plain(), &mut fresh).expect("answer");
    let before = s.side_crypto(0);
    // A re-offers with a new key and another suite; B's answer never comes (488, timeout).
    let second = key(Suite::AesCm128HmacSha1_80, 2);
    s.step(policies, 0, Role::Offer, &offer_of(&[(4, second)]), &mut fresh).expect("re-offer");
    let now = s.side_crypto(0);
    assert_eq!(now.recv, Some(second), "its new key is accepted at once (the old one too, contexts.rs)");
    assert_eq!(now.send, before.send, "the relay keeps sending as agreed until it answers");
    // The answer comes after all: the new suite, under the new tag, with a key of its own.
    let Ok(Rewrite::Sdes(lines)) = s.step(policies, 1, Role::Answer, &plain(), &mut fresh) else {
        panic!()
    };
    assert_eq!((lines[0].0, lines[0].1.suite), (4, Suite::AesCm128HmacSha1_80));
    assert_eq!(s.side_crypto(0).send, Some(lines[0].1));
    // Back to the first suite: never the key the relay sent with before (its indexes are used).
    s.step(policies, 0, Role::Offer, &offer_of(&[(1, first)]), &mut fresh).expect("offer");
    let Ok(Rewrite::Sdes(back)) = s.step(policies, 1, Role::Answer, &plain(), &mut fresh) else {
        panic!()
    };
    assert_eq!(back[0].1.suite, Suite::AesCm128HmacSha1_32);
    assert_ne!(Some(back[0].1), before.send, "a fresh key");
}

#[test]
fn answers_repeat_refresh_and_check_without_change() {
    let mut s = StreamSdes::default();
    let mut fresh = counter();
    let policies = [Policy::Plain, REQUIRED];
    let Ok(Rewrite::Sdes(offered)) = s.step(policies, 0, Role::Offer, &plain(), &mut fresh) else {
        panic!()
    };
    let b = key(Suite::AesCm128HmacSha1_80, 3);
    s.step(policies, 1, Role::Answer, &offer_of(&[(1, b)]), &mut fresh).expect("183");
    s.step(policies, 1, Role::Answer, &offer_of(&[(1, b)]), &mut fresh).expect("the 200 repeats it");
    assert_eq!(s.side_crypto(1).send, Some(offered[0].1));
    // B as the offerer, then the relay's refresh re-offers B the line it answered: B's answer
    // under that tag, with a new key, is taken.
    let mut s = StreamSdes::default();
    let policies = [REQUIRED, Policy::Plain];
    s.step(policies, 0, Role::Offer, &offer_of(&[(9, b)]), &mut fresh).expect("offer");
    s.step(policies, 1, Role::Answer, &plain(), &mut fresh).expect("answer");
    let renewed = key(Suite::AesCm128HmacSha1_80, 4);
    let before = s.clone();
    assert_eq!(s.check(policies, 0, Role::Answer, &offer_of(&[(9, renewed)])), Ok(()));
    assert_eq!(s, before, "check changes nothing");
    assert!(s.check(policies, 0, Role::Offer, &plain()).is_err(), "plain on a required side");
    s.learn(REQUIRED, 0, Role::Answer, &offer_of(&[(9, renewed)])).expect("the refresh's answer");
    assert_eq!(s.side_crypto(0).recv, Some(renewed));
}

#[test]
fn a_stream_that_is_not_rtp_is_left_alone_and_forgets_its_keys() {
    let mut s = StreamSdes::default();
    let mut fresh = counter();
    let policies = [REQUIRED, Policy::Plain];
    s.step(policies, 0, Role::Offer, &offer_of(&[(1, key(Suite::AesCm128HmacSha1_80, 1))]), &mut fresh).expect("o");
    s.step(policies, 1, Role::Answer, &plain(), &mut fresh).expect("a");
    assert!(s.terminated());
    let t38 = Security { other_transport: true, ..Security::default() };
    assert_eq!(s.step(policies, 0, Role::Offer, &t38, &mut fresh), Ok(Rewrite::Keep));
    assert_eq!(s, StreamSdes::default(), "plain both ways, no keys kept");
}

#[test]
fn the_relay_never_encrypts_twice_at_one_index() {
    let k = key(Suite::AeadAes128Gcm, 8);
    let mut side = contexts(None, Some(k));
    let first = through(&mut side, false, &rtp(7, 100, b"first words"), true).expect("sealed");
    assert_eq!(through(&mut side, false, &rtp(7, 100, b"other words"), true), Err(CryptoDrop::Replay));
    assert_eq!(peer(&k).decrypt_rtp(&first).map(|p| p.to_vec()).ok(), Some(rtp(7, 100, b"first words")));
}

#[test]
fn ssrcs_are_bounded_both_ways() {
    use super::contexts::MAX_SSRCS;
    let k = key(Suite::AesCm128HmacSha1_80, 9);
    let mut side = contexts(Some(k), Some(k));
    for ssrc in 0..MAX_SSRCS as u32 {
        assert!(through(&mut side, false, &rtp(ssrc, 1, b"payload here"), true).is_ok());
    }
    assert_eq!(through(&mut side, false, &rtp(999, 1, b"payload here"), true), Err(CryptoDrop::SsrcLimit));
    assert!(through(&mut side, false, &rtp(3, 2, b"payload here"), true).is_ok(), "known ones go on");
    // Receiving, the one unused longest makes room: a phone changing SSRC keeps working.
    let mut seal = peer(&k);
    for ssrc in 0..=MAX_SSRCS as u32 {
        let p = seal.encrypt_rtp(&rtp(ssrc, 1, b"payload here")).expect("sealed");
        assert!(through(&mut side, false, &p, false).is_ok(), "ssrc {ssrc}");
    }
}

#[test]
fn the_previous_key_is_accepted_until_the_new_one_authenticates() {
    let (old, new) = (key(Suite::AesCm128HmacSha1_80, 1), key(Suite::AesCm128HmacSha1_80, 2));
    let mut side = contexts(Some(old), None);
    let (mut seal_old, mut seal_new) = (peer(&old), peer(&new));
    assert!(through(&mut side, false, &seal_old.encrypt_rtp(&rtp(5, 1, b"payload one")).expect("s"), false).is_ok());
    side.rekey(SideCrypto { srtp: true, recv: Some(new), send: None, mux: false });
    assert!(through(&mut side, false, &seal_old.encrypt_rtp(&rtp(5, 2, b"payload two")).expect("s"), false).is_ok());
    assert!(through(&mut side, false, &seal_new.encrypt_rtp(&rtp(5, 3, b"payload new")).expect("s"), false).is_ok());
    let late = seal_old.encrypt_rtp(&rtp(5, 4, b"payload old")).expect("s");
    assert_eq!(through(&mut side, false, &late, false), Err(CryptoDrop::Authentication), "the old key is gone");
}

#[test]
fn a_key_with_an_mki_opens_packets_that_carry_it() {
    let line = format!("{}|2^31|1:1", sdes::format(1, &key(Suite::AesCm128HmacSha1_80, 0x21)));
    let line = line.as_str();
    let k = sdes::parse(line).and_then(|l| l.key.ok()).expect("an MKI line is usable");
    assert_eq!(k.mki(), Some(&[1u8][..]));
    let mut cfg = libsrtp::StreamConfig::new(
        vec![libsrtp::MasterKey::new(k.key(), k.salt(), &Some(vec![1]))],
        &libsrtp::ProtectionProfile::Aes128CmHmacSha180,
        &libsrtp::ProtectionProfile::Aes128CmHmacSha180,
    );
    cfg.allow_send_repeat(false);
    let mut sender = libsrtp::SendSession::new();
    sender.add_stream(None, &cfg).expect("sender");
    let plain = rtp(2, 1, b"with a key identifier");
    let sealed = sender.rtp_protect_mki(plain.clone(), &Some(vec![1])).expect("sealed");
    assert_eq!(sealed.len(), plain.len() + 1 + 10, "MKI and tag");
    let mut side = contexts(Some(k), None);
    assert_eq!(through(&mut side, false, &sealed, false), Ok(plain));
    assert_eq!(
        sdes::parse(&line.replace("1:1", "1:5")).map(|l| l.key.err()),
        Some(Some("MKI longer than 4 bytes or its value too large"))
    );
    assert_eq!(
        sdes::parse(&line.replace("1:1", "256:1")).map(|l| l.key.err()),
        Some(Some("MKI longer than 4 bytes or its value too large"))
    );
}
