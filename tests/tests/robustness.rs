//! Bad input and lifecycle against a running sbcd: junk and oversize datagrams, slow and
//! truncated TCP peers, bad configuration, and a SIGTERM while a call is up.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use sbc_e2e::{
    eventually, free_port, sbcd_bin, scratch_dir, sipp_uac_bg_over, sipp_uas, spawn_sbcd_on, Sbcd, SippBg, Transport,
};

/// An OPTIONS answered within 10 s, resent every second (one datagram can be lost to a socket
/// buffer still full of a flood).
fn ping_retrying(sbcd: &Sbcd) -> Option<String> {
    (0..10).find_map(|_| sbc_e2e::options_ping(sbcd.addr(), Duration::from_secs(1)))
}

#[test]
fn junk_and_oversize_datagrams_are_dropped_and_service_goes_on() {
    let mut sbcd = Sbcd::start(&[]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut x: u64 = 0x1234_5678_9abc_def1;
    for i in 0..2000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = (x % 1500) as usize + 1;
        let junk: Vec<u8> = (0..len).map(|k| (x >> (k % 56)) as u8).collect();
        let _ = sock.send_to(&junk, sbcd.addr());
        if i % 500 == 0 {
            // Also the largest datagram there is, and a request with a header block over the limit.
            let _ = sock.send_to(&vec![b'A'; 65_000], sbcd.addr());
            let mut big =
                b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx\r\nX-Big: ".to_vec();
            big.extend(std::iter::repeat_n(b'b', 64_000));
            big.extend_from_slice(b"\r\n\r\n");
            let _ = sock.send_to(&big, sbcd.addr());
        }
    }
    let pong = ping_retrying(&sbcd).expect("sbcd still answers after the junk");
    assert!(pong.starts_with("SIP/2.0 200"), "{pong}");
    assert!(sbcd.is_running());
}

#[test]
fn malformed_request_gets_400_with_a_reason() {
    let sbcd = Sbcd::start(&[]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let me = sock.local_addr().unwrap();
    let bad = format!("INVITE sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKbad;rport\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@y>\r\nCall-ID: bad1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 900\r\n\r\nshort");
    sock.send_to(bad.as_bytes(), sbcd.addr()).unwrap();
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("a 400 comes back");
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("SIP/2.0 400"), "{text}");
    assert!(text.contains("Warning: 399"), "{text}");
}

fn config_with(dir: &std::path::Path, yaml: &str) -> String {
    sbc_e2e::config_file_in(dir, yaml).to_string_lossy().into_owned()
}

#[test]
fn slow_tcp_peer_is_cut_off_and_truncated_frames_do_no_harm() {
    let dir = scratch_dir("slow");
    let cfg = config_with(&dir, "limits:\n  tcp_message_timeout_s: 1\n");
    let mut sbcd = Sbcd::start(&["--config", &cfg]);
    // Slowloris: half a header block, then silence.
    let mut slow = TcpStream::connect(sbcd.addr()).unwrap();
    slow.write_all(b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;bran").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = slow.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the connection is closed, not answered");
    assert!(started.elapsed() < Duration::from_secs(4), "closed after the message timeout");
    // Truncated frames, closed mid-message.
    for cut in [10usize, 40, 90] {
        let mut c = TcpStream::connect(sbcd.addr()).unwrap();
        let msg = b"INVITE sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKt\r\nContent-Length: 50\r\n\r\nv=0";
        c.write_all(&msg[..cut.min(msg.len())]).unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(sbcd.is_running());
    let pong = ping_retrying(&sbcd).expect("still serving");
    assert!(pong.starts_with("SIP/2.0 200"), "{pong}");
}

#[test]
fn check_config_names_file_line_and_key() {
    let dir = scratch_dir("cfg");
    let cfg = config_with(&dir, "sip:\n  t1_ms: 500\n  t1_msec: 3\n");
    let out = Command::new(sbcd_bin()).args(["--check-config", "--config", &cfg]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{cfg}:3:")) && err.contains("t1_msec"), "{err}");

    let good = config_with(&dir, "routing:\n  next_hop: udp:127.0.0.1:5999\n");
    let out = Command::new(sbcd_bin()).args(["--check-config", "--config", &good]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn bad_listen_argument_is_refused() {
    let out = Command::new(sbcd_bin()).args(["--listen", "sctp:127.0.0.1:5060", "--check-config"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown transport"));
}

#[test]
fn ipv6_loopback_call() {
    // Skip quietly where the machine has no ::1 (some containers).
    if UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    }
    let port = free_port();
    let sbcd = Sbcd::start(&["--listen", &format!("udp:[::1]:{port}")]);
    let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
    let pong = sbc_e2e::options_ping(v6, Duration::from_secs(10)).expect("answer over IPv6");
    assert!(pong.starts_with("SIP/2.0 200"), "{pong}");
    drop(sbcd);
}

/// A SIPp call through `sbcd`, answered and then held for `hold_ms`: (caller, callee).
fn held_call(sbcd: &Sbcd, hold_ms: u32, transport: Transport) -> (SippBg, SippBg) {
    let uas_port = free_port();
    let uas = sipp_uas("uas_basic.xml", uas_port, transport, 1);
    let dest = SocketAddr::from(([127, 0, 0, 1], uas_port));
    let hold = ["-d".to_string(), hold_ms.to_string(), "-timeout".into(), "90s".into()];
    let uac = sipp_uac_bg_over(transport, "uac_held.xml", dest, sbcd.addr(), &hold);
    let answered = || sbc_e2e::http(sbcd, "GET", "/stats", None, None).1.contains("\"calls_answered\":1");
    assert!(eventually(Duration::from_secs(10), answered), "the held call was not answered: {}", sbcd.log_text());
    (uac, uas)
}

/// SIGTERM, then until the signal is handled: new requests are refused (the health check says
/// draining).
fn sigterm_until_draining(sbcd: &Sbcd) {
    let _ = Command::new("kill").arg("-TERM").arg(sbcd.pid().to_string()).status();
    let mut pong = String::new();
    let draining = eventually(Duration::from_secs(4), || {
        pong = ping_retrying(sbcd).unwrap_or_default();
        pong.starts_with("SIP/2.0 503")
    });
    assert!(draining, "health check says draining: {pong}");
}

/// SIGTERM during a call: sbcd refuses new requests, keeps the call until its BYE, relays the
/// last 200 (over TCP too, where it goes through a writer task) and exits 0 by itself.
fn sigterm_drains_a_live_call_then_exits_zero(transport: Transport) {
    let mut sbcd = Sbcd::start(&[]);
    let (uac, uas) = held_call(&sbcd, 5000, transport);
    sigterm_until_draining(&sbcd);
    assert!(sbcd.is_running(), "sbcd must wait for the live call");
    let status = uac.wait(Duration::from_secs(30)).status;
    assert!(status.success(), "the held call completed through the drain, the BYE answered");
    let uas_out = uas.wait(Duration::from_secs(10));
    assert!(uas_out.status.success());
    assert!(
        eventually(Duration::from_secs(10), || !sbcd.is_running()),
        "sbcd did not exit once idle:\n{}",
        sbcd.log_text()
    );
    let exit = sbcd.terminate(Duration::from_secs(1)).expect("exit status");
    assert!(exit.success(), "exit status {exit:?}; log:\n{}", sbcd.log_text());
}

#[test]
fn sigterm_drains_a_live_udp_call_then_exits_zero() {
    sigterm_drains_a_live_call_then_exits_zero(Transport::Udp);
}

#[test]
fn sigterm_drains_a_live_tcp_call_then_exits_zero() {
    sigterm_drains_a_live_call_then_exits_zero(Transport::Tcp);
}

/// An operator who will not wait for the drain sends the signal again: sbcd exits at once,
/// with the call (held for a minute) still up.
#[test]
fn a_second_sigterm_ends_the_drain() {
    let mut sbcd = Sbcd::start(&[]);
    let (uac, _uas) = held_call(&sbcd, 60_000, Transport::Udp);
    sigterm_until_draining(&sbcd);
    let exit = sbcd.terminate(Duration::from_secs(20)).expect("the second SIGTERM ends sbcd");
    drop(uac); // killed: its call is gone with sbcd
    assert!(exit.success(), "exit status {exit:?}");
    assert!(sbcd.log_text().contains("second stop signal, exiting with calls up calls=1"), "{}", sbcd.log_text());
}

/// Two named interfaces on different loopback addresses: the caller reaches `intern`, the
/// callee must see the call coming from `extern` (and only `extern`'s address in Via/Contact).
#[test]
fn b_leg_leaves_from_the_configured_interface() {
    let (intern_port, extern_port, callee_port) = (free_port(), free_port(), free_port());
    let dir = scratch_dir("ifaces");
    let cfg = config_with(
        &dir,
        &format!(
            "interfaces:\n  - name: intern\n    listen: [udp:127.0.0.1:{intern_port}]\n  - name: extern\n    listen: [udp:127.0.0.2:{extern_port}]\nrouting:\n  outbound_interface: extern\n"
        ),
    );
    let mut child = spawn_sbcd_on(&cfg, SocketAddr::from(([127, 0, 0, 1], intern_port)));
    let callee = UdpSocket::bind(("127.0.0.1", callee_port)).unwrap();
    callee.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let caller = UdpSocket::bind("127.0.0.1:0").unwrap();
    let me = caller.local_addr().unwrap();
    let invite = format!(
        "INVITE sip:bob@127.0.0.1:{callee_port} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKif1;rport\r\nFrom: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>\r\nCall-ID: ifaces-1\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@{me}>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    caller.send_to(invite.as_bytes(), ("127.0.0.1", intern_port)).unwrap();
    let mut buf = [0u8; 4096];
    let (n, from) = callee.recv_from(&mut buf).expect("the INVITE reaches the callee");
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(from, SocketAddr::from(([127, 0, 0, 2], extern_port)), "sent from the extern socket");
    assert!(text.contains(&format!("Via: SIP/2.0/UDP 127.0.0.2:{extern_port};")), "{text}");
    assert!(text.contains(&format!("Contact: <sip:127.0.0.2:{extern_port}>")), "{text}");
    assert!(!text.contains(&me.to_string()), "nothing of the caller's address: {text}");
}

/// A second sbcd started on a UDP address the first one serves exits with "address in use"
/// instead of joining its reuse-port group and taking part of its traffic; the first keeps
/// answering.
#[test]
fn a_second_sbcd_on_a_used_address_refuses_to_start() {
    let first = Sbcd::start(&[]);
    let out = Command::new(sbcd_bin())
        .args(["--listen", &format!("udp:127.0.0.1:{}", first.port), "--admin-listen", "off"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("Address already in use"), "{err}");
    assert!(ping_retrying(&first).is_some_and(|r| r.starts_with("SIP/2.0 200")), "{}", first.log_text());
}
