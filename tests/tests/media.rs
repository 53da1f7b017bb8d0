//! RTP relay end to end: sbcd anchors the media of relay profiles. The caller is an in-test UA
//! (it must act between signalling steps), the callee is SIPp; RTP is sent and received by the
//! test over loopback sockets. The relay binds 127.0.0.3 so its address is told apart from the
//! peers' 127.0.0.1 in SDP and packet sources.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;
use std::time::Instant;

use sbc_e2e::ua::{sdp, TestUa};
use sbc_e2e::*;

const RELAY_IP: &str = "127.0.0.3";

/// A config with one interface whose media is on 127.0.0.3:`ports`, every call relayed.
fn relay_config(dir: &std::path::Path, ports: (u16, u16), timeout_s: u64, profile_extra: &str) -> PathBuf {
    let text = format!(
        "interfaces:\n  - name: default\n    listen: ['udp:127.0.0.1:5060']\n    media: {{address: {RELAY_IP}, ports: {}-{}}}\nmedia:\n  timeout_s: {timeout_s}\nactive_profile: relay\nprofiles:\n  relay:\n    enable_rtprelay: yes\n{profile_extra}",
        ports.0, ports.1
    );
    config_file_in(dir, &text)
}

fn start(ports: (u16, u16), timeout_s: u64, profile_extra: &str) -> Sbcd {
    let dir = scratch_dir("media-cfg");
    let cfg = relay_config(&dir, ports, timeout_s, profile_extra);
    Sbcd::start(&["--config", cfg.to_str().expect("utf8 path")])
}

fn rtp_socket() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind rtp");
    // Generous: a packet either comes within milliseconds or the test fails anyway.
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s
}

fn port(s: &UdpSocket) -> u16 {
    s.local_addr().expect("addr").port()
}

fn rtp(seq: u8) -> [u8; 12] {
    [0x80, 0, 0, seq, 0, 0, 0, 160, 0xde, 0xad, 0xbe, 0xef]
}

fn recv(s: &UdpSocket) -> ([u8; 12], SocketAddr) {
    let mut buf = [0u8; 12];
    let (n, from) = s.recv_from(&mut buf).expect("a relayed RTP packet");
    assert_eq!(n, 12);
    (buf, from)
}

/// A callee (SIPp) whose answer names `callee_rtp`.
fn callee(scenario_file: &str, callee_rtp: &UdpSocket) -> (SippBg, u16) {
    let dir = scratch_dir("media-uas");
    let inf = injection_file(&dir, &[&port(callee_rtp).to_string()]);
    let uas_port = free_port();
    let extra = ["-inf".to_string(), inf.display().to_string(), "-trace_logs".into()];
    (sipp_uas_with(scenario_file, uas_port, Transport::Udp, 1, &extra), uas_port)
}

#[test]
fn media_flows_both_ways_through_the_relay_and_only_the_relay_is_seen() {
    let sbcd = start((46000, 46099), 60, "");
    let (caller_rtp, callee_rtp) = (rtp_socket(), rtp_socket());
    let (uas, uas_port) = callee("uas_media.xml", &callee_rtp);
    let mut ua = TestUa::new(sbcd.addr());
    let ok = ua.invite(&format!("sip:svc@127.0.0.1:{uas_port}"), &sdp("127.0.0.1", port(&caller_rtp), ""));
    assert_eq!(ok.status(), Some(200), "{}\n{}", ok.0, sbcd.log_text());
    let (conn, a_port) = ok.sdp_media().expect("SDP in the 200");
    assert_eq!(conn, RELAY_IP, "the caller sees the relay: {}", ok.0);
    assert!((46000..46100).contains(&a_port), "{}", ok.0);
    assert!(!ok.body().contains(&port(&callee_rtp).to_string()), "callee's port hidden: {}", ok.0);

    caller_rtp.send_to(&rtp(1), (RELAY_IP, a_port)).expect("send");
    let (pkt, b_side) = recv(&callee_rtp);
    assert_eq!(pkt, rtp(1), "payload unchanged");
    assert_eq!(b_side.ip().to_string(), RELAY_IP, "the callee gets it from the relay");
    assert_ne!(b_side.port(), a_port, "each leg has its own port");
    callee_rtp.send_to(&rtp(2), b_side).expect("send back");
    let (pkt, a_side) = recv(&caller_rtp);
    assert_eq!(pkt, rtp(2));
    assert_eq!(a_side, SocketAddr::new(RELAY_IP.parse().expect("ip"), a_port));

    // The admin API shows what the relay saw of this call (counters land just after the send).
    let deadline = Instant::now() + Duration::from_secs(10);
    let media = loop {
        let (st, body) = http(&sbcd, "GET", "/calls", None, None);
        assert_eq!(st, 200);
        let calls: serde_json::Value = serde_json::from_str(&body).expect("json");
        let m = calls[0]["media"].clone();
        if m["forwarded"].as_u64() >= Some(2) || Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(media["packets_from_caller"], 1, "{media}");
    assert_eq!(media["packets_from_callee"], 1, "{media}");
    assert_eq!(media["forwarded"], 2, "{media}");
    assert_eq!(media["bytes_from_caller"], 12, "{media}");

    assert_eq!(ua.bye().status(), Some(200));
    uas.assert_passed(Duration::from_secs(20), &sbcd);
}

/// SEMS's `log_rtp` (with `log_sip=no`, RTP only): the call's pcap file gets each relayed
/// packet as it came in and as it went out, with the addresses on the wire.
#[test]
fn log_rtp_writes_the_relayed_packets_into_the_calls_pcap() {
    let dir = scratch_dir("media-pcap");
    let extra = format!("    msg_logger_path: \"{}/rtp-$ci.pcap\"\n    log_rtp: yes\n    log_sip: no\n", dir.display());
    let sbcd = start((47600, 47699), 60, &extra);
    let (caller_rtp, callee_rtp) = (rtp_socket(), rtp_socket());
    let (uas, uas_port) = callee("uas_media.xml", &callee_rtp);
    let mut ua = TestUa::new(sbcd.addr());
    let ok = ua.invite(&format!("sip:svc@127.0.0.1:{uas_port}"), &sdp("127.0.0.1", port(&caller_rtp), ""));
    assert_eq!(ok.status(), Some(200), "{}\n{}", ok.0, sbcd.log_text());
    let (_, a_port) = ok.sdp_media().expect("SDP in the 200");
    let relay_a = SocketAddr::new(RELAY_IP.parse().expect("ip"), a_port);
    caller_rtp.send_to(&rtp(1), relay_a).expect("send");
    let (_, relay_b) = recv(&callee_rtp);
    callee_rtp.send_to(&rtp(2), relay_b).expect("send back");
    recv(&caller_rtp);
    assert_eq!(ua.bye().status(), Some(200));
    uas.assert_passed(Duration::from_secs(20), &sbcd);

    let file = dir.join(format!("rtp-{}.pcap", ua.call_id));
    let (caller, callee) = (caller_rtp.local_addr().expect("addr"), callee_rtp.local_addr().expect("addr"));
    let expected =
        [(caller, relay_a, rtp(1)), (relay_b, callee, rtp(1)), (callee, relay_b, rtp(2)), (relay_a, caller, rtp(2))];
    let records = || if file.exists() { pcap::pcap_records(&file) } else { Vec::new() };
    assert!(eventually(Duration::from_secs(5), || records().len() >= 4), "{}", sbcd.log_text());
    let got: Vec<_> = records().into_iter().map(|r| (r.src, r.dst, r.payload)).collect();
    assert_eq!(got, expected.map(|(s, d, p)| (s, d, p.to_vec())), "log_sip=no: RTP only");
    assert!(cluster::metric(&sbcd, "sbc_capture_pcap_written_total").is_some_and(|n| n >= 4));
}

#[test]
fn natted_caller_gets_audio_with_symmetric_rtp_from_the_sems_profile() {
    // The relay profile is the SEMS-style symmetricrtp.sbcprofile.conf, loaded unchanged.
    let sems = repo_root().join("tests/sems/symmetricrtp.sbcprofile.conf");
    let text = format!(
        "interfaces:\n  - name: default\n    listen: ['udp:127.0.0.1:5060']\n    media: {{address: {RELAY_IP}, ports: 46100-46199}}\nactive_profile: symmetricrtp\nprofiles:\n  symmetricrtp:\n    sems_file: {}\n",
        sems.display()
    );
    let sbcd = Sbcd::with_config(&text, &[]);
    // The caller's SDP names `advertised`, but it sends from `real` (a NAT's mapping).
    let (advertised, real, callee_rtp) = (rtp_socket(), rtp_socket(), rtp_socket());
    advertised.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
    let (uas, uas_port) = callee("uas_media.xml", &callee_rtp);
    let mut ua = TestUa::new(sbcd.addr());
    let ok = ua.invite(&format!("sip:svc@127.0.0.1:{uas_port}"), &sdp("127.0.0.1", port(&advertised), ""));
    let (_, a_port) = ok.sdp_media().expect("SDP in the 200");
    real.send_to(&rtp(1), (RELAY_IP, a_port)).expect("send");
    let (_, b_side) = recv(&callee_rtp);
    callee_rtp.send_to(&rtp(2), b_side).expect("send back");
    assert_eq!(recv(&real).0, rtp(2), "audio goes back to where the caller sends from");
    let mut buf = [0u8; 12];
    assert!(advertised.recv_from(&mut buf).is_err(), "nothing to the address the NAT hides");
    assert_eq!(ua.bye().status(), Some(200));
    uas.assert_passed(Duration::from_secs(20), &sbcd);
}

#[test]
fn a_reinvite_to_a_new_port_retargets_the_media() {
    let sbcd = start((46200, 46299), 60, "");
    let (first, second, callee_rtp) = (rtp_socket(), rtp_socket(), rtp_socket());
    let (uas, uas_port) = callee("uas_media_reinvite.xml", &callee_rtp);
    let mut ua = TestUa::new(sbcd.addr());
    let uri = format!("sip:svc@127.0.0.1:{uas_port}");
    let ok = ua.invite(&uri, &sdp("127.0.0.1", port(&first), ""));
    let (_, a_port) = ok.sdp_media().expect("SDP in the 200");
    first.send_to(&rtp(1), (RELAY_IP, a_port)).expect("send");
    let (_, b_side) = recv(&callee_rtp);
    callee_rtp.send_to(&rtp(2), b_side).expect("send");
    assert_eq!(recv(&first).0, rtp(2));
    // The caller moves its media to another port.
    let ok2 = ua.invite(&uri, &sdp("127.0.0.1", port(&second), ""));
    assert_eq!(ok2.status(), Some(200), "{}", ok2.0);
    assert_eq!(ok2.sdp_media().map(|m| m.1), Some(a_port), "the stream keeps the relay port");
    callee_rtp.send_to(&rtp(3), b_side).expect("send");
    assert_eq!(recv(&second).0, rtp(3), "audio follows the new SDP");
    assert_eq!(ua.bye().status(), Some(200));
    uas.assert_passed(Duration::from_secs(20), &sbcd);
}

#[test]
fn silent_call_is_torn_down_on_both_legs_at_the_media_timeout() {
    let sbcd = start((46300, 46399), 5, "");
    let (caller_rtp, callee_rtp) = (rtp_socket(), rtp_socket());
    let (uas, uas_port) = callee("uas_media.xml", &callee_rtp);
    let mut ua = TestUa::new(sbcd.addr());
    let ok = ua.invite(&format!("sip:svc@127.0.0.1:{uas_port}"), &sdp("127.0.0.1", port(&caller_rtp), ""));
    assert_eq!(ok.status(), Some(200));
    let bye = ua.recv_request(Duration::from_secs(15)).expect("a BYE from sbcd");
    assert_eq!(bye.method(), Some("BYE"), "{}", bye.0);
    assert!(bye.header("Reason").is_some_and(|r| r.contains("media_timeout")), "{}", bye.0);
    ua.ok(&bye);
    // The callee's scenario ends with a BYE too.
    uas.assert_passed(Duration::from_secs(20), &sbcd);
}

#[test]
fn ports_return_to_the_pool_after_many_calls() {
    // Four port pairs: one call at a time needs two, and the ports of a call come back when
    // the relay's thread has closed them, which may be just after the next call starts; a
    // leak of one pair per call exhausts the pool by the fourth call (and the summary at exit
    // counts every port still in use).
    let mut sbcd = start((46400, 46407), 60, "");
    let uas_port = free_port();
    let calls = 30;
    let uas = sipp_uas("uas_basic.xml", uas_port, Transport::Udp, calls);
    let dest = SocketAddr::from(([127, 0, 0, 1], uas_port));
    let extra = ["-l".to_string(), "1".into()];
    let (out, dir) = UacRun {
        local_ip: "127.0.0.1",
        scenario_file: "uac_basic.xml",
        dest,
        rsa: Some(sbcd.addr()),
        transport: Transport::Udp,
        calls,
        rate: 20,
        extra: &extra,
    }
    .run();
    assert!(
        out.status.success(),
        "{} calls one after another must all get media ports: {}\n{}",
        calls,
        read_error_logs(&dir),
        sbcd.log_text()
    );
    let _ = uas.wait(Duration::from_secs(20));
    sbcd.terminate(Duration::from_secs(10));
    let log = sbcd.log_text();
    let stopped = log.lines().find(|l| l.contains("media relay stopped")).expect("media summary at exit");
    assert!(stopped.contains("ports_in_use=0"), "{stopped}");
    assert!(stopped.contains("allocation_failures=0"), "{stopped}");
}

/// Every call flow of the core (183 + PRACK with SDP, re-INVITE to hold and back, CANCEL,
/// 486, BYE from the callee) through a relay profile over UDP and TCP: the flows still complete
/// with their SDP anchored, and no port is left in use at exit.
#[test]
fn the_core_call_flows_through_a_relay_profile_leave_no_port_behind() {
    let mut sbcd = start((46500, 46599), 60, "");
    for flow in ["basic", "prack", "reinvite", "cancel", "busy", "callee_bye"] {
        for transport in [Transport::Udp, Transport::Tcp] {
            call_through(&sbcd, flow, transport, 2);
        }
    }
    sbcd.terminate(Duration::from_secs(10));
    let log = sbcd.log_text();
    let stopped = log.lines().find(|l| l.contains("media relay stopped")).expect("media summary at exit");
    assert!(stopped.contains("ports_in_use=0") && stopped.contains("allocation_failures=0"), "{stopped}");
}

/// An IPv4 caller bridged to an IPv6 callee: the profile puts the callee's media on an IPv6
/// interface (`rtprelay_interface`); signalling stays IPv4.
#[test]
fn ipv4_caller_and_ipv6_callee_are_bridged() {
    let text = format!(
        "interfaces:\n  - name: default\n    listen: ['udp:127.0.0.1:5060']\n    media: {{address: {RELAY_IP}, ports: 46600-46699}}\n  - name: v6\n    listen: ['udp:[::1]:{}']\n    media: {{address: '::1', ports: 46600-46699}}\nactive_profile: relay\nprofiles:\n  relay:\n    enable_rtprelay: yes\n    rtprelay_interface: v6\n",
        free_port()
    );
    let sbcd = Sbcd::with_config(&text, &[]);
    let caller_rtp = rtp_socket();
    let callee_rtp = UdpSocket::bind("[::1]:0").expect("bind ::1");
    callee_rtp.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let (uas, uas_port) = callee("uas_media_v6.xml", &callee_rtp);
    let mut ua = TestUa::new(sbcd.addr());
    let ok = ua.invite(&format!("sip:svc@127.0.0.1:{uas_port}"), &sdp("127.0.0.1", port(&caller_rtp), ""));
    assert_eq!(ok.status(), Some(200), "{}\n{}", ok.0, sbcd.log_text());
    let (conn, a_port) = ok.sdp_media().expect("SDP in the 200");
    assert_eq!(conn, RELAY_IP, "the IPv4 caller sees the relay's IPv4 side: {}", ok.0);
    caller_rtp.send_to(&rtp(1), (RELAY_IP, a_port)).expect("send");
    let (pkt, b_side) = recv(&callee_rtp);
    assert_eq!(pkt, rtp(1));
    assert_eq!(b_side.ip().to_string(), "::1", "the callee gets it from the relay's IPv6 side");
    callee_rtp.send_to(&rtp(2), b_side).expect("send back");
    let (pkt, a_side) = recv(&caller_rtp);
    assert_eq!(pkt, rtp(2));
    assert_eq!(a_side, SocketAddr::new(RELAY_IP.parse().expect("ip"), a_port));
    assert_eq!(ua.bye().status(), Some(200));
    uas.assert_passed(Duration::from_secs(20), &sbcd);
}

// === Attacks on the relay (issue 16) ===

/// An SDP with one m-line per `(address, port)`, each with its own c= line.
fn sdp_streams(streams: &[(&str, u16)]) -> String {
    let mut s = "v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n".to_string();
    for (ip, port) in streams {
        s.push_str(&format!("m=audio {port} RTP/AVP 0\r\nc=IN IP4 {ip}\r\na=rtpmap:0 PCMU/8000\r\n"));
    }
    s
}

/// The ports of every m-line of a message's SDP.
fn m_ports(text: &str) -> Vec<u16> {
    text.lines().filter_map(|l| l.strip_prefix("m=audio ")?.split_whitespace().next()?.parse().ok()).collect()
}

/// An SDP that aims a stream at the relay's own port, at sbcd's SIP listener or into a
/// `media.deny` block gets that stream rejected (port 0 towards the callee), counted; a
/// stream to the caller itself goes on.
#[test]
fn an_sdp_aimed_at_the_sbc_or_a_denied_block_is_refused() {
    let (sbcd, mut callee) = sbcd_with_phone("bob", |sbc_port, callee| {
        format!(
            "interfaces:\n  - name: default\n    listen: ['udp:127.0.0.1:{sbc_port}']\n    media: {{address: {RELAY_IP}, ports: 46600-46699}}\nmedia:\n  deny: [127.0.0.77/32]\nactive_profile: relay\nprofiles:\n  relay:\n    enable_rtprelay: yes\n    next_hop: {callee}\n"
        )
    });
    let (sbc_port, callee_addr) = (sbcd.port, callee.local_addr());
    let answering = std::thread::spawn(move || {
        let inv = callee.recv_request(Duration::from_secs(10)).expect("INVITE");
        callee.answer(&inv, 200);
        callee.recv_request(Duration::from_secs(10)).expect("ACK");
        inv
    });
    let caller_rtp = rtp_socket();
    let offer = sdp_streams(&[
        (RELAY_IP, 46610),
        ("127.0.0.1", sbc_port),
        ("127.0.0.77", 4000),
        ("127.0.0.1", port(&caller_rtp)),
    ]);
    let mut ua = TestUa::new(sbcd.addr());
    let ok = ua.invite(&format!("sip:bob@{callee_addr}"), &offer);
    assert_eq!(ok.status(), Some(200), "{}", ok.0);
    let inv = answering.join().expect("callee");
    let ports = m_ports(&inv.0);
    assert_eq!(ports.len(), 4, "{}", inv.0);
    assert_eq!(&ports[..3], &[0, 0, 0], "aimed streams rejected: {}", inv.0);
    assert!((46600..46700).contains(&ports[3]), "the caller's own stream is anchored: {}", inv.0);
    let (_, metrics) = http(&sbcd, "GET", "/metrics", None, None);
    assert!(metrics.contains("sbc_media_destinations_refused_total 3"), "{metrics}");
    assert!(sbcd.log_text().contains("reason=\"own_socket\""), "{}", sbcd.log_text());
}

/// A third host spraying a call's relay ports gets nothing through to either side, and its
/// packets do not keep the call alive: the media timeout still ends it.
#[test]
fn a_third_hosts_rtp_reaches_no_one_and_keeps_no_call_alive() {
    let sbcd = start((46700, 46799), 5, "");
    let (caller_rtp, callee_rtp) = (rtp_socket(), rtp_socket());
    let (uas, uas_port) = callee("uas_media.xml", &callee_rtp);
    let mut ua = TestUa::new(sbcd.addr());
    let ok = ua.invite(&format!("sip:svc@127.0.0.1:{uas_port}"), &sdp("127.0.0.1", port(&caller_rtp), ""));
    assert_eq!(ok.status(), Some(200), "{}", ok.0);
    let (_, a_port) = ok.sdp_media().expect("SDP in the 200");
    // The real caller's packet shows where the callee's side of the relay is.
    caller_rtp.send_to(&rtp(1), (RELAY_IP, a_port)).expect("send");
    let (_, b_side) = recv(&callee_rtp);
    let stranger = UdpSocket::bind("127.0.0.99:0").expect("bind stranger");
    callee_rtp.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    caller_rtp.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let mut buf = [0u8; 64];
    let deadline = Instant::now() + Duration::from_secs(9);
    let mut bye = None;
    while Instant::now() < deadline && bye.is_none() {
        stranger.send_to(&rtp(66), (RELAY_IP, a_port)).expect("spray A side");
        stranger.send_to(&rtp(67), b_side).expect("spray B side");
        assert!(callee_rtp.recv_from(&mut buf).is_err(), "a stranger's packet reached the callee");
        assert!(caller_rtp.recv_from(&mut buf).is_err(), "a stranger's packet reached the caller");
        bye = ua.recv_request(Duration::from_millis(10));
    }
    let bye = bye.expect("the media timeout ends the call although the stranger kept sending");
    assert!(bye.header("Reason").is_some_and(|r| r.contains("media_timeout")), "{}", bye.0);
    ua.ok(&bye);
    uas.assert_passed(Duration::from_secs(20), &sbcd);
}

/// Offers with 16 m-lines (an attacker's way to take a pool's ports) get 4 streams each
/// (`media.max_streams`), so a pool of 20 pairs still has room for a real call after two.
#[test]
fn offers_with_many_streams_cannot_exhaust_the_ports() {
    // 50 pairs, 25 for each of sbcd's two shards: both greedy calls (8 pairs each) may land on
    // one shard and leave room for the real call there.
    let (sbcd, mut ringing) = sbcd_with_phone("bob", |sbc_port, _| {
        format!(
            "interfaces:\n  - name: default\n    listen: ['udp:127.0.0.1:{sbc_port}']\n    media: {{address: {RELAY_IP}, ports: 46800-46899}}\nactive_profile: relay\nprofiles:\n  relay:\n    enable_rtprelay: yes\n"
        )
    });
    let ringing_addr = ringing.local_addr();
    let sixteen: Vec<(&str, u16)> = (0..16).map(|i| ("127.0.0.1", 20000 + 2 * i)).collect();
    let offer = sdp_streams(&sixteen);
    for n in 0..2 {
        let greedy = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let me = greedy.local_addr().expect("addr");
        let inv = format!(
            "INVITE sip:bob@{ringing_addr} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKgreedy{n}\r\nMax-Forwards: 70\r\nFrom: <sip:g@{me}>;tag=g{n}\r\nTo: <sip:bob@{ringing_addr}>\r\nCall-ID: greedy{n}@{me}\r\nCSeq: 1 INVITE\r\nContact: <sip:g@{me}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{offer}",
            offer.len()
        );
        greedy.send_to(inv.as_bytes(), sbcd.addr()).expect("send");
        let relayed = ringing.recv_request(Duration::from_secs(10)).expect("the greedy INVITE");
        let ports = m_ports(&relayed.0);
        assert_eq!(ports.iter().filter(|p| **p != 0).count(), 4, "{}", relayed.0);
        // The callee rings and never answers: the ports stay taken.
    }
    let (_, stats) = http(&sbcd, "GET", "/stats", None, None);
    assert!(stats.contains("\"ports_in_use\":16"), "two calls of 4 streams, 2 legs each: {stats}");
    // A real call still gets its media.
    let (caller_rtp, callee_rtp) = (rtp_socket(), rtp_socket());
    let (uas, uas_port) = callee("uas_media.xml", &callee_rtp);
    let mut ua = TestUa::new(sbcd.addr());
    let ok = ua.invite(&format!("sip:svc@127.0.0.1:{uas_port}"), &sdp("127.0.0.1", port(&caller_rtp), ""));
    assert_eq!(ok.status(), Some(200), "{}", ok.0);
    assert!(ok.sdp_media().is_some_and(|(_, p)| p != 0), "{}", ok.0);
    assert_eq!(ua.bye().status(), Some(200));
    uas.assert_passed(Duration::from_secs(20), &sbcd);
}

/// A media port another process holds, with a real caller and a SIPp callee: the pair cannot
/// be bound once its SDP is out, so the call (one stream) gets 503, the failure is counted and
/// logged, and the pair is set aside. Every RTP port of the range is held, so whichever shard
/// takes the call draws a held one.
#[test]
fn a_media_port_another_process_holds_fails_the_call_and_is_set_aside() {
    let ports = (46500, 46507);
    let squatters: Vec<UdpSocket> =
        (ports.0..ports.1).step_by(2).map(|p| UdpSocket::bind((RELAY_IP, p)).expect("squat")).collect();
    let sbcd = start(ports, 60, "");
    let uas_port = free_port();
    let _uas = sipp_uas("uas_basic.xml", uas_port, Transport::Udp, 1);
    let caller_rtp = rtp_socket();
    let mut ua = TestUa::new(sbcd.addr());
    let resp = ua.invite(&format!("sip:svc@127.0.0.1:{uas_port}"), &sdp("127.0.0.1", port(&caller_rtp), ""));
    assert_eq!(resp.status(), Some(503), "{}", resp.0);
    let (_, stats) = http(&sbcd, "GET", "/stats", None, None);
    let v: serde_json::Value = serde_json::from_str(&stats).expect("stats json");
    assert!(v["media"]["allocation_failures"].as_u64().is_some_and(|n| n >= 1), "{stats}");
    assert!(
        eventually(Duration::from_secs(5), || sbcd.log_text().contains("held by another process: set aside")),
        "{}",
        sbcd.log_text()
    );
    drop(squatters);
}
