//! SIP capture against a live sbcd: every message of a call reaches a Homer stand-in as HEPv3
//! with the call's correlation id, the same messages make up the call's trace in the API,
//! and a Homer that cannot be reached costs signalling nothing and is counted.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use sbc_e2e::cluster::metric;
use sbc_e2e::dns::FakeDns;
use sbc_e2e::hep::{HepListener, HepPacket};
use sbc_e2e::phone::Phone;
use sbc_e2e::ua::{sdp, TestUa};
use sbc_e2e::*;
use serde_json::Value;

const TOKEN: &str = "capture-t0ken";

/// sbcd routing every call to a phone of the test, with `capture` (lines indented by two).
fn sbcd_to_phone(capture: &str) -> (Sbcd, Phone) {
    sbcd_with_phone("bob", |_, phone| {
        format!("admin:\n  token: {TOKEN}\ncapture:\n{capture}{}", next_hop_config(phone, ""))
    })
}

/// A call from a test UA through sbcd to `phone`, hung up by the caller; the call's API id,
/// read while it is up, and the caller's Call-ID.
fn call(sbcd: &Sbcd, mut phone: Phone) -> (String, String) {
    let callee = std::thread::spawn(move || phone.take_call(|_| {}));
    let mut caller = TestUa::new(sbcd.addr());
    let ok = caller.invite(&format!("sip:bob@{}", sbcd.addr()), &sdp("127.0.0.1", 7000, ""));
    assert_eq!(ok.status(), Some(200), "{}", ok.0);
    let (_, calls) = http(sbcd, "GET", "/calls", Some(TOKEN), None);
    let calls: Value = serde_json::from_str(&calls).expect("json");
    let id = calls[0]["id"].as_str().unwrap_or_else(|| panic!("one call listed: {calls}")).to_string();
    assert_eq!(caller.bye().status(), Some(200));
    callee.join().expect("phone thread");
    (id, caller.call_id.clone())
}

fn lines(packets: &[HepPacket], from: SocketAddr, to: SocketAddr) -> Vec<String> {
    let start = |p: &HepPacket| p.first_line().split(' ').take(2).collect::<Vec<_>>().join(" ");
    packets.iter().filter(|p| p.src == from && p.dst == to).map(start).collect()
}

#[test]
fn every_message_of_a_call_reaches_homer_and_its_trace_with_the_a_leg_call_id() {
    let homer = HepListener::udp();
    let capture = format!("  hep: {}\n  agent_id: 2001\n  node_name: sbc-east\n  password: hep-pw\n", homer.addr);
    let began = SystemTime::now();
    let (sbcd, phone) = sbcd_to_phone(&capture);
    let phone_addr = phone.local_addr();
    let (id, a_call_id) = call(&sbcd, phone);

    // Wait for the last messages: HEP copies travel apart from the SIP ones.
    let done = |p: &[HepPacket]| {
        let oks = |from, to| lines(p, from, to).iter().filter(|l| l.starts_with("SIP/2.0 200")).count();
        // The answers of both legs' INVITE and BYE (the caller's address is any but these).
        let to_caller = p.iter().filter(|x| x.src == sbcd.addr() && x.dst != phone_addr);
        oks(phone_addr, sbcd.addr()) == 2
            && to_caller.filter(|x| x.first_line().starts_with("SIP/2.0 200")).count() == 2
    };
    let packets = homer.wait_until(Duration::from_secs(5), done);
    assert_eq!(homer.undecodable(), 0);
    let ended = SystemTime::now();
    for p in &packets {
        assert_eq!(p.correlation.as_deref(), Some(a_call_id.as_str()), "{}", p.payload);
        assert_eq!(
            (p.agent_id, p.node_name.as_deref(), p.password.as_deref()),
            (Some(2001), Some("sbc-east"), Some("hep-pw"))
        );
        assert_eq!(p.protocol, 17);
        assert!(p.time >= began - Duration::from_secs(1) && p.time <= ended, "{:?}", p.time);
    }
    let caller_addr = packets.iter().find(|p| p.first_line().starts_with("INVITE")).map(|p| p.src).expect("INVITE");
    let a_in = lines(&packets, caller_addr, sbcd.addr());
    let a_out = lines(&packets, sbcd.addr(), caller_addr);
    let b_out = lines(&packets, sbcd.addr(), phone_addr);
    let b_in = lines(&packets, phone_addr, sbcd.addr());
    let methods =
        |v: &[String]| v.iter().map(|l| l.split(' ').next().unwrap_or_default().to_string()).collect::<Vec<_>>();
    assert_eq!(methods(&a_in), ["INVITE", "ACK", "BYE"], "caller to sbcd");
    assert_eq!(a_out.iter().filter(|l| *l == "SIP/2.0 200").count(), 2, "{a_out:?}");
    assert_eq!(methods(&b_out), ["INVITE", "ACK", "BYE"], "sbcd to phone");
    assert_eq!(b_in, ["SIP/2.0 200", "SIP/2.0 200"], "phone to sbcd");
    let b_call_ids: BTreeSet<_> =
        packets.iter().filter(|p| p.src == phone_addr || p.dst == phone_addr).filter_map(HepPacket::call_id).collect();
    assert_eq!(b_call_ids.len(), 1);
    assert!(!b_call_ids.contains(a_call_id.as_str()), "the B leg has its own Call-ID, correlated to the A leg's");

    // The trace holds the same messages, each side marked.
    let (st, trace) = http(&sbcd, "GET", &format!("/calls/{id}/trace"), Some(TOKEN), None);
    assert_eq!(st, 200, "{trace}");
    let trace: Value = serde_json::from_str(&trace).expect("json");
    assert_eq!((trace["correlation_id"].as_str(), trace["ended"].as_bool()), (Some(a_call_id.as_str()), Some(true)));
    let messages = trace["messages"].as_array().expect("messages");
    let mut traced: Vec<&str> = messages.iter().filter_map(|m| m["message"].as_str()).collect();
    let mut exported: Vec<&str> = packets.iter().map(|p| p.payload.as_str()).collect();
    traced.sort_unstable();
    exported.sort_unstable();
    assert_eq!(traced, exported, "the trace and Homer saw the same messages");
    for m in messages {
        let text = m["message"].as_str().unwrap_or_default();
        let leg = if text.contains(&format!("Call-ID: {a_call_id}\r\n")) { "a" } else { "b" };
        assert_eq!(m["leg"].as_str(), Some(leg), "{m}");
        let (local, remote) = (m["local"].as_str().unwrap_or_default(), m["remote"].as_str().unwrap_or_default());
        assert_eq!(local, sbcd.addr().to_string());
        let peer = if leg == "a" { caller_addr } else { phone_addr };
        assert_eq!(remote, peer.to_string(), "{m}");
        assert!(m["time"].as_str().is_some_and(|t| t.ends_with('Z') && t.contains('.')), "{m}");
    }
    assert_eq!(metric(&sbcd, "sbc_capture_hep_sent_total"), Some(packets.len() as i64));
    assert_eq!(http(&sbcd, "GET", "/calls/0-999999/trace", Some(TOKEN), None).0, 404);
}

#[test]
fn a_homer_that_cannot_be_reached_costs_calls_nothing_and_is_counted() {
    // A name that does not resolve (the test's name server knows no record for it).
    let dns = FakeDns::answering(&[]);
    let capture = "  hep: homer.capture.test:9060\n".to_string();
    let (sbcd, phone) = sbcd_with_phone("bob", |_, phone| {
        format!("dns:\n  servers: [\"{}\"]\ncapture:\n{capture}{}", dns.addr, next_hop_config(phone, ""))
    });
    call_quietly(&sbcd, phone);
    let unresolved = || metric(&sbcd, "sbc_capture_hep_dropped_total{reason=\"unresolved\"}").unwrap_or(0);
    assert!(eventually(Duration::from_secs(5), || unresolved() >= 10), "{}", unresolved());
    assert!(sbcd.log_text().contains("cannot resolve Homer"), "{}", sbcd.log_text());

    // Over TCP to a port where nothing listens: the connection is tried again later, and what
    // comes in between is dropped.
    let closed = free_port();
    let capture = format!("  hep: 127.0.0.1:{closed}\n  hep_transport: tcp\n");
    let (sbcd, phone) = sbcd_to_phone(&capture);
    call_quietly(&sbcd, phone);
    let disconnected = || metric(&sbcd, "sbc_capture_hep_dropped_total{reason=\"disconnected\"}").unwrap_or(0);
    assert!(eventually(Duration::from_secs(5), || disconnected() >= 10), "{}", disconnected());
    assert_eq!(metric(&sbcd, "sbc_capture_hep_sent_total"), Some(0));
}

/// A call through sbcd that must go through whatever capture does.
fn call_quietly(sbcd: &Sbcd, mut phone: Phone) {
    let callee = std::thread::spawn(move || phone.take_call(|_| {}));
    let mut caller = TestUa::new(sbcd.addr());
    let ok = caller.invite(&format!("sip:bob@{}", sbcd.addr()), &sdp("127.0.0.1", 7000, ""));
    assert_eq!(ok.status(), Some(200), "{}", ok.0);
    assert_eq!(caller.bye().status(), Some(200));
    callee.join().expect("phone thread");
}

#[test]
fn homer_over_tcp_gets_requests_outside_calls_correlated_by_their_own_call_id() {
    let homer = HepListener::tcp();
    let capture = format!("  hep: {}\n  hep_transport: tcp\n", homer.addr);
    let sbcd = Sbcd::with_config(&format!("capture:\n{capture}"), &[]);
    let reply = options_ping(sbcd.addr(), Duration::from_secs(5)).expect("OPTIONS answered");
    assert!(reply.starts_with("SIP/2.0 200"), "{reply}");
    let packets = homer.wait_until(Duration::from_secs(5), |p| p.len() >= 2);
    assert_eq!(homer.undecodable(), 0);
    let firsts: Vec<&str> = packets.iter().map(HepPacket::first_line).collect();
    assert!(firsts[0].starts_with("OPTIONS ") && firsts[1].starts_with("SIP/2.0 200"), "{firsts:?}");
    for p in &packets {
        assert_eq!(p.correlation.as_deref(), p.call_id(), "own Call-ID outside a call");
        assert_eq!(p.agent_id, Some(1));
    }
}

#[test]
fn only_the_listed_interfaces_are_exported_and_garbage_keeps_its_call_id() {
    let homer = HepListener::udp();
    let other = free_port();
    // The test's --listen goes to the first interface (`core`); `edge` is the exported one.
    let yaml = format!(
        "interfaces:\n  - name: core\n    listen: [udp:127.0.0.1:1]\n  - name: edge\n    listen: [udp:127.0.0.1:{other}]\ncapture:\n  hep: {}\n  interfaces: [edge]\n",
        homer.addr
    );
    let sbcd = Sbcd::with_config(&yaml, &[]);
    let edge: SocketAddr = ([127, 0, 0, 1], other).into();
    assert!(options_ping(sbcd.addr(), Duration::from_secs(5)).is_some(), "core answers");
    assert!(options_ping(edge, Duration::from_secs(5)).is_some(), "edge answers");
    let garbage = "NOT SIP AT ALL\r\nCall-ID: junk-1@x\r\n\r\n";
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.send_to(garbage.as_bytes(), edge).expect("send");
    let packets = homer.wait_until(Duration::from_secs(5), |p| p.iter().any(|x| x.payload == garbage));
    assert!(packets.iter().all(|p| p.src == edge || p.dst == edge), "only edge's messages: {packets:?}");
    let options = packets.iter().filter(|p| p.dst == edge && p.first_line().starts_with("OPTIONS")).count();
    assert_eq!(options, 1, "{packets:?}");
    let junk = packets.iter().find(|p| p.payload == garbage).expect("the garbage is exported");
    assert_eq!(junk.correlation.as_deref(), Some("junk-1@x"), "read from the bytes that did not parse");
}

/// The messages of a pcap file: (source, destination, first line).
fn pcap_messages(path: &std::path::Path) -> Vec<(SocketAddr, SocketAddr, String)> {
    pcap::pcap_records(path).into_iter().map(|r| (r.src, r.dst, r.first_line())).collect()
}

/// SEMS's `msg_logger_path`: a pcap file per call with both legs' messages, named from the
/// request; a name the request could turn into another folder gets no file, and the call goes
/// on.
#[test]
fn a_profile_with_msg_logger_path_writes_each_calls_pcap() {
    let dir = scratch_dir("pcap");
    let options = format!("    msg_logger_path: \"{}/call-$H(X-Name).pcap\"\n", dir.display());
    let (sbcd, phone) = sbcd_with_phone("bob", |_, phone| next_hop_config(phone, &options));
    let phone_addr = phone.local_addr();
    let callee = std::thread::spawn(move || {
        let mut phone = phone;
        phone.take_call(|_| {});
        phone
    });
    let mut caller = TestUa::new(sbcd.addr());
    caller.extra_headers = "X-Name: one\r\n".into();
    assert_eq!(caller.invite(&format!("sip:bob@{}", sbcd.addr()), &sdp("127.0.0.1", 7000, "")).status(), Some(200));
    assert_eq!(caller.bye().status(), Some(200));
    let phone = callee.join().expect("phone");

    let file = dir.join("call-one.pcap");
    let done = || pcap_messages(&file).iter().filter(|(_, _, l)| l.starts_with("SIP/2.0 200")).count() >= 4;
    assert!(eventually(Duration::from_secs(5), || file.exists() && done()), "{}", sbcd.log_text());
    let messages = pcap_messages(&file);
    let from_phone: Vec<&str> =
        messages.iter().filter(|(s, _, _)| *s == phone_addr).map(|(_, _, l)| &l[..l.len().min(11)]).collect();
    assert_eq!(from_phone, ["SIP/2.0 200", "SIP/2.0 200"], "the callee's answers to INVITE and BYE: {messages:#?}");
    let caller_side = messages.iter().filter(|(s, d, _)| *s == caller.local || *d == caller.local).count();
    assert!(caller_side >= 5, "INVITE, 100, 200, ACK, BYE, 200 of the caller's leg: {messages:#?}");
    assert!(metric(&sbcd, "sbc_capture_pcap_written_total").is_some_and(|n| n >= messages.len() as i64));

    // A name that would leave the folder: no file, the call is made all the same.
    let callee = std::thread::spawn(move || {
        let mut phone = phone;
        phone.take_call(|_| {});
    });
    let mut caller = TestUa::new(sbcd.addr());
    caller.extra_headers = "X-Name: ../../escape\r\n".into();
    assert_eq!(caller.invite(&format!("sip:bob@{}", sbcd.addr()), &sdp("127.0.0.1", 7000, "")).status(), Some(200));
    assert_eq!(caller.bye().status(), Some(200));
    callee.join().expect("phone");
    let files: Vec<_> = std::fs::read_dir(&dir).expect("dir").flatten().map(|e| e.file_name()).collect();
    assert_eq!(files, ["call-one.pcap"], "nothing else written");
}
