//! SRTP termination end to end (`aleg_srtp`, `bleg_srtp`, `sdes_required`): sbcd decrypts what
//! the SRTP leg sends and encrypts what it gets, with its own keys, and relays plain RTP to the
//! other leg. The far ends seal and open packets with webrtc-rs's SRTP (`sbc_e2e::srtp`), not
//! the implementation in sbcd, so each check is also one of interoperability.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use sbc_e2e::cluster::metric;
use sbc_e2e::srtp::{rtp, Crypto};
use sbc_e2e::ua::{sdp, TestUa};
use sbc_e2e::*;

const RELAY_IP: &str = "127.0.0.3";

fn start(ports: (u16, u16), srtp: &str) -> Sbcd {
    let text = format!(
        "interfaces:\n  - name: default\n    listen: ['udp:127.0.0.1:5060']\n    media: {{address: {RELAY_IP}, ports: {}-{}}}\nactive_profile: s\nprofiles:\n  s:\n    enable_rtprelay: yes\n{srtp}",
        ports.0, ports.1
    );
    Sbcd::with_config(&text, &[])
}

fn rtp_socket() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind rtp");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    s
}

fn port(s: &UdpSocket) -> u16 {
    s.local_addr().expect("addr").port()
}

fn recv(s: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = [0u8; 2048];
    let (n, from) = s.recv_from(&mut buf).expect("a relayed packet");
    (buf[..n].to_vec(), from)
}

fn nothing_within(s: &UdpSocket, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).expect("timeout");
    let mut buf = [0u8; 2048];
    let none = s.recv_from(&mut buf).is_err();
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    none
}

fn savp_offer(ip: &str, port: u16, lines: &[Crypto]) -> String {
    let crypto: String = lines.iter().map(Crypto::line).collect();
    sdp(ip, port, &crypto).replace(" RTP/AVP ", " RTP/SAVP ")
}

fn drops(sbcd: &Sbcd, reason: &str) -> i64 {
    metric(sbcd, &format!("sbc_media_drops_total{{reason=\"{reason}\"}}")).unwrap_or(0)
}

/// An SRTP caller (SDES) and a plain callee: the callee gets exactly the caller's plaintext,
/// the caller gets the callee's audio sealed with the key sbcd answered; a tampered packet and
/// a replay go nowhere and are counted. `log_rtp` writes each side's packets as they crossed
/// the wire, sealed on the caller's side, and not the forgeries.
#[test]
fn srtp_caller_and_plain_callee_hear_each_other_and_forgeries_are_dropped() {
    let pcap_dir = scratch_dir("srtp-pcap");
    let pcap = pcap_dir.join("call.pcap");
    let sbcd = start(
        (47000, 47099),
        &format!(
            "    aleg_srtp: sdes\n    bleg_srtp: rtp\n    sdes_required: yes\n    msg_logger_path: {}\n    log_rtp: yes\n    log_sip: no\n",
            pcap.display()
        ),
    );
    let (caller_rtp, callee_rtp) = (rtp_socket(), rtp_socket());
    let dir = scratch_dir("srtp-uas");
    let inf = injection_file(&dir, &[&port(&callee_rtp).to_string()]);
    let uas_port = free_port();
    let extra = ["-inf".to_string(), inf.display().to_string(), "-trace_logs".into()];
    let uas = sipp_uas_with("uas_media_plain_offer.xml", uas_port, Transport::Udp, 1, &extra);
    let caller_key = Crypto::new(1, "AES_CM_128_HMAC_SHA1_80", 0x40);
    let mut ua = TestUa::new(sbcd.addr());
    let offer = savp_offer("127.0.0.1", port(&caller_rtp), std::slice::from_ref(&caller_key));
    let ok = ua.invite(&format!("sip:svc@127.0.0.1:{uas_port}"), &offer);
    assert_eq!(ok.status(), Some(200), "{}\n{}", ok.0, sbcd.log_text());
    assert!(ok.body().contains(" RTP/SAVP 0"), "{}", ok.0);
    let answered = Crypto::all_in(ok.body());
    assert_eq!(answered.len(), 1, "one line in an answer: {}", ok.0);
    assert_eq!((answered[0].tag, answered[0].suite.as_str()), (1, "AES_CM_128_HMAC_SHA1_80"));
    assert_ne!(answered[0].material, caller_key.material, "sbcd's own key");
    let (_, a_port) = ok.sdp_media().expect("SDP in the 200");

    // Caller → callee: sealed by the caller, plain at the callee, byte for byte.
    let mut seal = caller_key.sealer();
    let voice = rtp(0x1234_5678, 1, b"hello from the srtp side, 160 bytes would do too");
    let sealed = seal.rtp(&voice);
    caller_rtp.send_to(&sealed, (RELAY_IP, a_port)).expect("send");
    let (got, b_side) = recv(&callee_rtp);
    assert_eq!(got, voice, "the callee hears what the caller sealed");

    // Callee → caller: plain from the callee, sealed with the key sbcd answered.
    let reply = rtp(0x0bad_cafe, 7, b"and back from the plain side");
    callee_rtp.send_to(&reply, b_side).expect("send back");
    let (sealed_back, _) = recv(&caller_rtp);
    assert_ne!(sealed_back, reply, "encrypted towards the SRTP leg");
    let mut open = answered[0].opener();
    assert_eq!(open.rtp(&sealed_back).as_deref(), Some(&reply[..]), "the caller opens it with sbcd's key");

    // A tampered packet and a replay are dropped and counted; the call goes on.
    let mut tampered = seal.rtp(&rtp(0x1234_5678, 2, b"tampered"));
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    caller_rtp.send_to(&tampered, (RELAY_IP, a_port)).expect("send");
    caller_rtp.send_to(&sealed, (RELAY_IP, a_port)).expect("send");
    assert!(nothing_within(&callee_rtp, Duration::from_millis(300)), "neither reaches the callee");
    let counted = || drops(&sbcd, "srtp_authentication") == 1 && drops(&sbcd, "srtp_replay") == 1;
    assert!(eventually(Duration::from_secs(5), counted), "{}", http(&sbcd, "GET", "/metrics", None, None).1);
    let next = rtp(0x1234_5678, 3, b"still talking");
    let next_sealed = seal.rtp(&next);
    caller_rtp.send_to(&next_sealed, (RELAY_IP, a_port)).expect("send");
    assert_eq!(recv(&callee_rtp).0, next);

    assert_eq!(ua.bye().status(), Some(200));
    uas.assert_passed(Duration::from_secs(20), &sbcd);

    let relay_a: SocketAddr = (RELAY_IP.parse::<std::net::IpAddr>().expect("ip"), a_port).into();
    let (caller, callee) = (caller_rtp.local_addr().expect("addr"), callee_rtp.local_addr().expect("addr"));
    let expected = [
        (caller, relay_a, sealed.clone()),
        (b_side, callee, voice),
        (callee, b_side, reply),
        (relay_a, caller, sealed_back),
        (caller, relay_a, next_sealed),
        (b_side, callee, next),
    ];
    let records = || if pcap.exists() { pcap::pcap_records(&pcap) } else { Vec::new() };
    assert!(eventually(Duration::from_secs(5), || records().len() >= expected.len()), "{:?}", records());
    let got: Vec<_> = records().into_iter().map(|r| (r.src, r.dst, r.payload)).collect();
    assert_eq!(got, expected, "as on the wire, without the tampered packet and the replay");
}

/// A plain caller and an SRTP callee that picks AES-GCM from sbcd's offer: both directions
/// again, the other way round.
#[test]
fn plain_caller_and_srtp_callee_with_aes_gcm_hear_each_other() {
    let sbcd = start((47100, 47199), "    aleg_srtp: rtp\n    bleg_srtp: sdes\n");
    let (caller_rtp, callee_rtp) = (rtp_socket(), rtp_socket());
    let mut caller = TestUa::new(sbcd.addr());
    let callee = TestUa::new(sbcd.addr());
    let callee_key = Crypto::new(3, "AEAD_AES_128_GCM", 0x90);
    let uri = format!("sip:svc@{}", callee.local);
    let offer = sdp("127.0.0.1", port(&caller_rtp), "");
    let answered = std::thread::scope(|s| {
        let call = s.spawn(|| caller.invite(&uri, &offer));
        let inv = callee.recv_request(Duration::from_secs(5)).expect("the INVITE reaches the callee");
        let offered = Crypto::all_in(inv.body());
        let suites: Vec<&str> = offered.iter().map(|c| c.suite.as_str()).collect();
        assert_eq!(suites, ["AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32", "AEAD_AES_128_GCM"], "{}", inv.0);
        assert!(inv.body().contains(" RTP/SAVP "), "{}", inv.0);
        let (_, b_port) = inv.sdp_media().expect("SDP in the INVITE");
        callee.answer(&inv, &savp_offer("127.0.0.1", port(&callee_rtp), std::slice::from_ref(&callee_key)));
        let ok = call.join().expect("caller");
        (offered[2].clone(), b_port, ok)
    });
    let (sbcd_key, b_port, ok) = answered;
    assert_eq!(ok.status(), Some(200), "{}\n{}", ok.0, sbcd.log_text());
    assert!(ok.body().contains(" RTP/AVP ") && Crypto::all_in(ok.body()).is_empty(), "plain to the caller: {}", ok.0);
    let (_, a_port) = ok.sdp_media().expect("SDP in the 200");

    // Caller → callee: plain in, sealed with sbcd's GCM key out.
    let voice = rtp(0x0101_0101, 100, b"plain words for the secure side");
    caller_rtp.send_to(&voice, (RELAY_IP, a_port)).expect("send");
    let (sealed, _) = recv(&callee_rtp);
    assert_eq!(sbcd_key.opener().rtp(&sealed).as_deref(), Some(&voice[..]), "the callee opens it");
    // Callee → caller: sealed with the callee's key, plain at the caller.
    let reply = rtp(0x0202_0202, 9, b"secure words for the plain side");
    callee_rtp.send_to(&callee_key.sealer().rtp(&reply), (RELAY_IP, b_port)).expect("send back");
    assert_eq!(recv(&caller_rtp).0, reply);
    assert_eq!(drops(&sbcd, "srtp_authentication"), 0);
}

/// `sdes_required`: a plain offer from that leg is refused with 488 and counted.
#[test]
fn a_plain_offer_on_a_leg_that_requires_srtp_is_refused_with_488() {
    let sbcd = start((47200, 47299), "    aleg_srtp: sdes\n    bleg_srtp: rtp\n    sdes_required: yes\n");
    let mut ua = TestUa::new(sbcd.addr());
    let resp = ua.invite("sip:svc@127.0.0.1:9", &sdp("127.0.0.1", 40000, ""));
    assert_eq!(resp.status(), Some(488), "{}", resp.0);
    assert_eq!(metric(&sbcd, "sbc_media_srtp_refused_total"), Some(1));
    assert!(sbcd.log_text().contains("plain RTP on a side that requires SRTP"), "{}", sbcd.log_text());
}

/// SRTP on both legs: sbcd re-keys, each leg with its own keys, RTP and (muxed) SRTCP, both
/// ways.
#[test]
fn two_srtp_legs_are_re_keyed_rtp_and_muxed_rtcp_both_ways() {
    let sbcd = start((47300, 47399), "    aleg_srtp: sdes\n    bleg_srtp: sdes\n    sdes_required: yes\n");
    let (caller_rtp, callee_rtp) = (rtp_socket(), rtp_socket());
    let mut caller = TestUa::new(sbcd.addr());
    let callee = TestUa::new(sbcd.addr());
    let (a_key, b_key) =
        (Crypto::new(1, "AES_CM_128_HMAC_SHA1_80", 0x11), Crypto::new(1, "AES_CM_128_HMAC_SHA1_80", 0x77));
    let uri = format!("sip:svc@{}", callee.local);
    let offer = savp_offer("127.0.0.1", port(&caller_rtp), std::slice::from_ref(&a_key)) + "a=rtcp-mux\r\n";
    let (to_b, b_port, ok) = std::thread::scope(|s| {
        let call = s.spawn(|| caller.invite(&uri, &offer));
        let inv = callee.recv_request(Duration::from_secs(5)).expect("the INVITE reaches the callee");
        let offered = Crypto::all_in(inv.body());
        assert!(!offered.iter().any(|c| c.material == a_key.material), "A's key never reaches B: {}", inv.0);
        let (_, b_port) = inv.sdp_media().expect("SDP in the INVITE");
        let answer = savp_offer("127.0.0.1", port(&callee_rtp), std::slice::from_ref(&b_key)) + "a=rtcp-mux\r\n";
        callee.answer(&inv, &answer);
        (offered[0].clone(), b_port, call.join().expect("caller"))
    });
    assert_eq!(ok.status(), Some(200), "{}\n{}", ok.0, sbcd.log_text());
    let to_a = Crypto::all_in(ok.body()).pop().expect("one line in the answer");
    assert_ne!(to_a.material, b_key.material, "B's key never reaches A");
    let (_, a_port) = ok.sdp_media().expect("SDP in the 200");
    // RTP A → B: sealed with A's key, opened by B with the key sbcd offered it.
    let voice = rtp(0x0a0a_0a0a, 1, b"from one srtp leg to the other");
    caller_rtp.send_to(&a_key.sealer().rtp(&voice), (RELAY_IP, a_port)).expect("send");
    let (got, _) = recv(&callee_rtp);
    assert_eq!(to_b.opener().rtp(&got).as_deref(), Some(&voice[..]), "re-keyed towards B");
    // RTP B → A.
    let reply = rtp(0x0b0b_0b0b, 1, b"and back the other way");
    callee_rtp.send_to(&b_key.sealer().rtp(&reply), (RELAY_IP, b_port)).expect("send");
    assert_eq!(to_a.opener().rtp(&recv(&caller_rtp).0).as_deref(), Some(&reply[..]), "re-keyed towards A");
    // SRTCP, muxed on the RTP ports: a sender report A → B.
    let mut report = vec![0x80, 200, 0, 6];
    report.extend_from_slice(&0x0a0a_0a0a_u32.to_be_bytes());
    report.extend_from_slice(&[3; 20]);
    caller_rtp.send_to(&a_key.sealer().rtcp(&report), (RELAY_IP, a_port)).expect("send");
    assert_eq!(to_b.opener().rtcp(&recv(&callee_rtp).0).as_deref(), Some(&report[..]), "SRTCP re-keyed");
    assert_eq!(drops(&sbcd, "srtp_authentication"), 0);
}
