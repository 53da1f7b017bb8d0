//! Admission control against a running sbcd: a source calling faster than its rate gets 503s
//! for the excess while its admitted calls complete, and a trusted trunk at the same rate is
//! not throttled.

use std::net::SocketAddr;
use std::time::Duration;

use sbc_e2e::*;

fn stat(sbcd: &Sbcd, key: &str) -> u64 {
    let (_, body) = http(sbcd, "GET", "/stats", None, None);
    let v: serde_json::Value = serde_json::from_str(&body).expect("stats json");
    v[key].as_u64().unwrap_or_else(|| panic!("{key} in {body}"))
}

#[test]
fn a_source_over_its_rate_gets_503_and_a_trusted_trunk_does_not() {
    let sbcd = Sbcd::with_config(
        "limits:\n  admission:\n    per_source_cps: 5\n    per_source_burst: 5\n    trusted: [127.0.0.3/32]\n    drop_after: 0\n",
        &[],
    );
    let uas_port = free_port();
    let _uas = sipp_uas("uas_basic.xml", uas_port, Transport::Udp, 1000);
    let uas = SocketAddr::from(([127, 0, 0, 1], uas_port));

    // 60 calls at 40 per second from 127.0.0.2: the burst (5) and 5 per second get through,
    // however fast SIPp really managed to send them.
    let t0 = std::time::Instant::now();
    let (out, _) = UacRun {
        local_ip: "127.0.0.2",
        scenario_file: "uac_basic.xml",
        dest: uas,
        rsa: Some(sbcd.addr()),
        transport: Transport::Udp,
        calls: 60,
        rate: 40,
        extra: &[],
    }
    .run();
    let allowed = 5 + (5.0 * t0.elapsed().as_secs_f64()).ceil() as u64;
    let refused = stat(&sbcd, "admission_refused");
    let answered = stat(&sbcd, "calls_answered");
    assert!(
        refused > 0 && answered + refused >= 60,
        "refused {refused}, answered {answered}\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!((5..=allowed).contains(&answered), "answered {answered}, at most {allowed}");

    // The trusted trunk, same rate: every call completes.
    let (out, _) = UacRun {
        local_ip: "127.0.0.3",
        scenario_file: "uac_basic.xml",
        dest: uas,
        rsa: Some(sbcd.addr()),
        transport: Transport::Udp,
        calls: 40,
        rate: 40,
        extra: &[],
    }
    .run();
    assert!(
        out.status.success(),
        "trusted trunk throttled:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        sbcd.log_text()
    );
    assert_eq!(stat(&sbcd, "calls_answered"), answered + 40);
    assert_eq!(stat(&sbcd, "admission_refused"), refused);
}

#[test]
fn an_unreachable_tcp_next_hop_is_answered_503_at_once() {
    let closed = free_port(); // nothing listens there
    let sbcd =
        Sbcd::with_config(&format!("active_profile: p\nprofiles:\n  p:\n    next_hop: 127.0.0.1:{closed}/tcp\n"), &[]);
    let mut ua = ua::TestUa::new(sbcd.addr());
    let t0 = std::time::Instant::now();
    let r = ua.invite(&format!("sip:bob@127.0.0.1:{closed}"), &ua::sdp("127.0.0.1", 7030, ""));
    assert_eq!(r.status(), Some(503), "{}", r.0);
    assert!(t0.elapsed() < Duration::from_secs(3), "took {:?}", t0.elapsed());
    assert_eq!(stat(&sbcd, "calls_active"), 0);
}

#[test]
fn one_address_cannot_hold_more_tcp_connections_than_its_share() {
    use std::io::Read;
    let sbcd = Sbcd::with_config("limits:\n  tcp_max_connections_per_source: 3\n", &[]);
    // From 127.0.0.2 (the readiness probe's connection came from 127.0.0.1).
    let connect = |ip: [u8; 4]| {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
        sock.bind(&SocketAddr::from((ip, 0)).into()).expect("bind");
        sock.connect(&sbcd.addr().into()).expect("connect");
        let s: std::net::TcpStream = sock.into();
        s.set_read_timeout(Some(Duration::from_millis(300))).expect("timeout");
        s
    };
    let mut conns: Vec<std::net::TcpStream> = (0..5).map(|_| connect([127, 0, 0, 2])).collect();
    // A connection the SBC closed reads end-of-stream; an open one times out (300 ms a read).
    let closed = |c: &mut std::net::TcpStream| matches!(c.read(&mut [0u8; 16]), Ok(0));
    let closed_within = |c: &mut std::net::TcpStream, within: Duration| {
        let deadline = std::time::Instant::now() + within;
        loop {
            if closed(c) {
                return true;
            }
            if std::time::Instant::now() > deadline {
                return false;
            }
        }
    };
    // Accepted in the order they were made: the 4th and 5th are the ones over the cap.
    assert!(closed_within(&mut conns[3], Duration::from_secs(5)), "the 4th connection is closed at accept");
    assert!(closed_within(&mut conns[4], Duration::from_secs(5)), "the 5th connection is closed at accept");
    assert_eq!(conns[..3].iter_mut().map(closed).filter(|c| *c).count(), 0, "the first three stay open");
    // Another address is served.
    let mut other = connect([127, 0, 0, 3]);
    assert!(!closed(&mut other), "127.0.0.3 has its own share");
}
