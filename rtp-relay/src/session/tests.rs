//! The control plane with the real userspace forwarder over loopback sockets.

use std::net::UdpSocket;
use std::time::Duration;

use super::*;

/// A relay on ports below the kernel's ephemeral range (32768-), so no test peer bound to
/// port 0 can sit on one of the relay's own ports (which the relay refuses as a destination).
fn relay(port_min: u16, port_max: u16) -> Arc<Relay> {
    let iface = |name: &str, ip: &str| MediaInterface {
        name: name.into(),
        bind: ip.parse().expect("ip"),
        advertise: None,
        port_min,
        port_max,
    };
    let cfg = RelayConfig {
        interfaces: vec![iface("v4", "127.0.0.1"), iface("v6", "::1")],
        latch_window: Duration::from_millis(2000),
        workers: 2,
        max_packet_rate: 1000,
        max_streams: DEFAULT_MAX_STREAMS,
        policy: None,
    };
    Relay::start(&cfg).expect("relay starts")
}

fn sides(a: &str, b: &str, symmetric_a: bool) -> [SideOptions; 2] {
    [
        SideOptions { interface: a.into(), symmetric: symmetric_a, dtmf_filtering: false, signalling: None },
        SideOptions { interface: b.into(), symmetric: false, dtmf_filtering: false, signalling: None },
    ]
}

fn offered(sock: &UdpSocket) -> Offered {
    Offered {
        relayable: true,
        rejected: false,
        rtp: Some(sock.local_addr().expect("addr")),
        rtcp: None,
        held: false,
        dtmf_payload_type: None,
        sends_first: false,
    }
}

fn peer(ip: &str) -> UdpSocket {
    let s = UdpSocket::bind((ip, 0)).expect("bind peer");
    s.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    s
}

/// Ports come back when the worker has closed the sockets, just after the session drops.
fn wait_ports_free(r: &Relay) {
    for _ in 0..200 {
        if r.stats().ports_in_use == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("ports still in use: {:?}", r.stats());
}

fn rtp(seq: u8) -> [u8; 12] {
    [0x80, 0, 0, seq, 0, 0, 0, 0, 0, 0, 0, 1]
}

fn recv(s: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = [0u8; 64];
    let (n, from) = s.recv_from(&mut buf).expect("a relayed packet");
    (buf[..n].to_vec(), from)
}

#[test]
fn media_flows_both_ways_through_the_advertised_ports() {
    let r = relay(22000, 22099);
    let (caller, callee) = (peer("127.0.0.1"), peer("127.0.0.1"));
    let caller_rtcp = peer("127.0.0.1");
    let mut s = r.session(sides("v4", "v4", false)).expect("session");
    let mut offer = offered(&caller);
    offer.rtcp = Some(caller_rtcp.local_addr().expect("addr"));
    let to_b = s.update(0, &[offer]).adverts[0].expect("relayed");
    let to_a = s.update(1, &[offered(&callee)]).adverts[0].expect("relayed");
    assert_ne!(to_a.port, to_b.port);
    caller.send_to(&rtp(1), (to_a.addr, to_a.port)).expect("send");
    let (data, from) = recv(&callee);
    assert_eq!(data, rtp(1));
    assert_eq!(from, SocketAddr::new(to_b.addr, to_b.port), "the callee sees only the relay");
    callee.send_to(&rtp(2), (to_b.addr, to_b.port)).expect("send");
    let (data, from) = recv(&caller);
    assert_eq!(data, rtp(2));
    assert_eq!(from, SocketAddr::new(to_a.addr, to_a.port));
    // RTCP rides the port after RTP, and goes where the caller's SDP says (`a=rtcp`).
    callee.send_to(&rtp(3), (to_b.addr, to_b.port + 1)).expect("send rtcp");
    assert_eq!(recv(&caller_rtcp).0, rtp(3));
    assert!(s.last_activity().is_some());
    let st = r.stats();
    assert!(st.forwarded >= 2, "{st:?}");
    assert_eq!(st.ports_in_use, 2);
    drop(s);
    wait_ports_free(&r);
}

#[test]
fn ipv4_caller_bridged_to_ipv6_callee() {
    let r = relay(22100, 22199);
    let (caller, callee) = (peer("127.0.0.1"), peer("::1"));
    let mut s = r.session(sides("v4", "v6", false)).expect("session");
    let to_b = s.update(0, &[offered(&caller)]).adverts[0].expect("relayed");
    assert!(to_b.addr.is_ipv6());
    let to_a = s.update(1, &[offered(&callee)]).adverts[0].expect("relayed");
    assert!(to_a.addr.is_ipv4());
    caller.send_to(&rtp(7), (to_a.addr, to_a.port)).expect("send");
    assert_eq!(recv(&callee).0, rtp(7));
    callee.send_to(&rtp(8), (to_b.addr, to_b.port)).expect("send");
    assert_eq!(recv(&caller).0, rtp(8));
}

/// An IPv6 source read after IPv4 datagrams by the same worker is reported whole: a symmetric
/// IPv6 side latches onto its real address and gets the answer's audio (recvmmsg keeps each
/// header's address length from the datagram before; `userspace/worker.rs`).
#[test]
fn a_symmetric_ipv6_side_latches_its_real_address_after_ipv4_packets() {
    let r = relay(22300, 22399);
    let (caller, callee) = (peer("::1"), peer("127.0.0.1"));
    let mut s = r.session(sides("v6", "v4", true)).expect("session");
    let to_b = s.update(0, &[offered(&caller)]).adverts[0].expect("relayed");
    let to_a = s.update(1, &[offered(&callee)]).adverts[0].expect("relayed");
    // IPv4 first, through the same worker; A is not latched yet: to its SDP address.
    callee.send_to(&rtp(1), (to_b.addr, to_b.port)).expect("send");
    assert_eq!(recv(&caller).0, rtp(1));
    caller.send_to(&rtp(2), (to_a.addr, to_a.port)).expect("send");
    assert_eq!(recv(&callee).0, rtp(2));
    callee.send_to(&rtp(3), (to_b.addr, to_b.port)).expect("send");
    let (pkt, from) = recv(&caller);
    assert_eq!(pkt, rtp(3), "the latched IPv6 address is the caller's");
    assert!(from.is_ipv6());
}

#[test]
fn symmetric_caller_behind_nat_gets_audio_and_a_new_answer_retargets() {
    let r = relay(22200, 22299);
    let (nat, callee, callee2) = (peer("127.0.0.1"), peer("127.0.0.1"), peer("127.0.0.1"));
    let mut s = r.session(sides("v4", "v4", true)).expect("session");
    // The caller's SDP names a port nobody listens on; it really sends from `nat`.
    let mut sdp = offered(&nat);
    sdp.rtp = Some("127.0.0.1:9".parse().expect("addr"));
    let to_b = s.update(0, &[sdp]).adverts[0].expect("relayed");
    let to_a = s.update(1, &[offered(&callee)]).adverts[0].expect("relayed");
    nat.send_to(&rtp(1), (to_a.addr, to_a.port)).expect("send");
    assert_eq!(recv(&callee).0, rtp(1));
    callee.send_to(&rtp(2), (to_b.addr, to_b.port)).expect("send");
    assert_eq!(recv(&nat).0, rtp(2), "symmetric RTP: back to where the caller sends from");
    // A re-INVITE answer moves the callee to another port.
    s.update(1, &[offered(&callee2)]);
    nat.send_to(&rtp(3), (to_a.addr, to_a.port)).expect("send");
    assert_eq!(recv(&callee2).0, rtp(3));
    assert_eq!(r.stats().latches, 1);
}

#[test]
fn a_rejected_stream_releases_its_ports_and_a_small_pool_never_leaks() {
    // Two pairs per interface: one call with one stream fits, per side.
    let r = relay(22300, 22303);
    let caller = peer("127.0.0.1");
    for _ in 0..50 {
        let mut s = r.session(sides("v4", "v4", false)).expect("session");
        assert!(s.update(0, &[offered(&caller)]).failure.is_none(), "ports are free again");
        let mut rejected = offered(&caller);
        rejected.rejected = true;
        assert_eq!(s.update(1, &[rejected]).adverts, vec![None]);
        assert_eq!(s.open_streams(), 0);
        wait_ports_free(&r);
    }
    let mut a = r.session(sides("v4", "v4", false)).expect("session");
    assert!(a.update(0, &[offered(&caller)]).failure.is_none());
    let mut b = r.session(sides("v4", "v4", false)).expect("session");
    let none_left = b.update(0, &[offered(&caller)]);
    assert!(none_left.nothing_anchored());
    assert!(matches!(none_left.failure, Some(RelayError::NoPorts { .. })));
    assert_eq!(r.stats().allocation_failures, 1);
}

#[test]
fn unknown_interface_is_refused() {
    let r = relay(22400, 22409);
    assert!(matches!(r.session(sides("v4", "nope", false)), Err(RelayError::UnknownInterface(_))));
}

#[test]
fn a_side_announcing_direction_active_is_latched_without_forced_symmetry() {
    let r = relay(22500, 22599);
    let (nat, callee) = (peer("127.0.0.1"), peer("127.0.0.1"));
    let mut s = r.session(sides("v4", "v4", false)).expect("session");
    let mut sdp = offered(&nat);
    sdp.rtp = Some("127.0.0.1:9".parse().expect("addr"));
    sdp.sends_first = true;
    let to_b = s.update(0, &[sdp]).adverts[0].expect("relayed");
    let to_a = s.update(1, &[offered(&callee)]).adverts[0].expect("relayed");
    nat.send_to(&rtp(1), (to_a.addr, to_a.port)).expect("send");
    assert_eq!(recv(&callee).0, rtp(1));
    callee.send_to(&rtp(2), (to_b.addr, to_b.port)).expect("send");
    assert_eq!(recv(&nat).0, rtp(2));
}

#[test]
fn one_sdp_cannot_take_more_than_the_stream_cap() {
    let r = relay(22600, 22799);
    let caller = peer("127.0.0.1");
    let mut s = r.session(sides("v4", "v4", false)).expect("session");
    let many = vec![offered(&caller); DEFAULT_MAX_STREAMS + 5];
    let result = s.update(0, &many);
    assert_eq!(result.adverts.iter().filter(|a| a.is_some()).count(), DEFAULT_MAX_STREAMS);
    assert!(result.adverts[DEFAULT_MAX_STREAMS..].iter().all(Option::is_none));
    assert_eq!(r.stats().ports_in_use, 2 * DEFAULT_MAX_STREAMS as u64);
}

#[test]
fn dtmf_filtering_drops_the_receivers_event_number() {
    let mut spec = StreamSpec::default();
    set_dtmf_drops(&mut spec, [Some(101), Some(96)], [true, false]);
    // A sends with B's numbering (96); B is not filtered.
    assert_eq!(spec.remotes[0].drop_payload_type, Some(96));
    assert_eq!(spec.remotes[1].drop_payload_type, None);
    set_dtmf_drops(&mut spec, [Some(101), None], [true, true]);
    assert_eq!(spec.remotes[0].drop_payload_type, Some(101), "until B's SDP is known");
}

/// An SDP whose RTP port is just below a port it must not reach (no `a=rtcp`) is refused for
/// the RTCP it would aim there.
#[test]
fn the_implied_rtcp_port_is_checked_too() {
    let r = relay(22900, 22999);
    let mut s = r.session(sides("v4", "v4", false)).expect("session");
    let mut aimed = offered(&peer("127.0.0.1"));
    // 22899 + 1 = 22900: the relay's own first port.
    aimed.rtp = Some("127.0.0.1:22899".parse().expect("addr"));
    let result = s.update(0, &[aimed]);
    assert_eq!(result.adverts, vec![None]);
    assert_eq!(result.refused.first().map(|(_, why, _)| *why), Some("own_socket"));
}
